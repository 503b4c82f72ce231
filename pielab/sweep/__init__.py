"""Sweeps: search spaces, sweep specs, and the Ray Tune + Optuna + W&B runner.

This is the only package that imports ray, optuna and wandb, and it imports them inside the modules
that need them, never here: ``pielab.cli`` imports this package lazily and ``pielab train`` must run on
machines that have none of the three.
"""
