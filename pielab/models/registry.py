"""One registry for every model family (after torchvision ``models/_api.py`` and timm ``_registry.py``).

A builder is a function whose parameters are all keyword arguments with defaults; those
defaults *are* the model section of a config, so a config is validated against the builder's
own signature and the best model can always be rebuilt from its config.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

from pielab.errors import ConfigError

# Keyword arguments that come from the data, not from the config (vocabulary size, classes).
DATA_DERIVED_KWARGS = ("vocab_size", "pad_idx", "num_classes")


@dataclass(frozen=True)
class ModelEntry:
    name: str
    task: str
    builder: Callable[..., nn.Module]
    description: str

    def defaults(self) -> dict[str, Any]:
        params = inspect.signature(self.builder).parameters
        return {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, task: str, description: str = "") -> Callable:
    """Decorator: register ``builder`` under ``name`` for ``task``; a duplicate name raises."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        params = inspect.signature(builder).parameters.values()
        missing = [p.name for p in params if p.default is inspect.Parameter.empty]
        if missing:
            raise TypeError(f"builder for {name!r} needs defaults for {missing}")
        doc = description or (inspect.getdoc(builder) or "").split("\n")[0]
        _REGISTRY[name] = ModelEntry(name, task, builder, doc)
        return builder

    return wrap


def _entry(name: str) -> ModelEntry:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ConfigError(f"unknown model {name!r}; known models: {known}") from None


def get_model_entry(name: str) -> ModelEntry:
    return _entry(name)


def model_defaults(name: str) -> dict[str, Any]:
    return _entry(name).defaults()


def model_task(name: str) -> str:
    return _entry(name).task


def get_model(name: str, **overrides: Any) -> nn.Module:
    """Build a registered model; unknown keyword arguments are a ``ConfigError``."""
    entry = _entry(name)
    unknown = sorted(set(overrides) - set(entry.defaults()))
    if unknown:
        raise ConfigError(
            f"model {name!r} has no parameter(s) {', '.join(unknown)}; "
            f"it takes: {', '.join(sorted(entry.defaults()))}"
        )
    try:
        return entry.builder(**overrides)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"model {name!r}: {exc}") from exc


def list_models(task: str | None = None) -> list[str]:
    return sorted(n for n, e in _REGISTRY.items() if task is None or e.task == task)
