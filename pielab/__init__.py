"""pielab: distributed hyperparameter sweeps for depth-vs-residual studies.

From Python (each name is imported on first use, so ``import pielab`` stays cheap and loads neither Ray,
Optuna nor torch):

- :func:`load_sweep` ``(path) -> Sweep``: a sweep folder (local, ``s3://`` or ``gs://``; running, interrupted
  or finished) as pandas frames: ``trials_dataframe()``, ``history()``, ``best_trial``, ``top(k)``,
  ``pareto_front()``, ``summary()``, ``config(trial_id)``, ``export()``, ``report()``, ``study()``,
  ``tune_path`` (:mod:`pielab.api.reading`);
- :func:`run_sweep` ``(spec, overrides=None, out=None, address=None) -> Sweep`` and :func:`resume_sweep`
  ``(path, overrides=None) -> Sweep``: what ``pielab sweep`` / ``pielab resume`` do (:mod:`pielab.api.launching`);
- :func:`train` ``(config, out=None) -> dict``: what ``pielab train`` does (``pielab.train`` is also the module
  of the training loop, made callable).

Errors are :class:`pielab.errors.PielabError` subclasses with one clear line; nothing here exits the interpreter.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "Sweep", "load_sweep", "run_sweep", "resume_sweep", "train"]


def __getattr__(name: str):
    """The API's names, imported when first asked for (PEP 562)."""
    if name in ("Sweep", "load_sweep"):
        from pielab.api import reading

        value = getattr(reading, name)
    elif name in ("run_sweep", "resume_sweep"):
        from pielab.api import launching

        value = getattr(launching, name)
    elif name == "errors":
        import pielab.errors as value  # pielab.errors.PielabError and its subclasses, without a separate import
    elif name == "train":
        import pielab.train as value  # the training loop's module, callable as pielab.train(config, out)
    else:
        raise AttributeError(f"module 'pielab' has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
