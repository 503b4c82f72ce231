"""pielab: distributed hyperparameter sweeps for depth-vs-residual studies."""

__version__ = "0.1.0"
