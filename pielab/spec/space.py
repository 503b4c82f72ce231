"""Declarative search spaces (YAML) turned into an Optuna define-by-run function.

A space maps dotted config keys to distributions (lightning-hydra-template ``configs/hparams_search/``
style)::

    parameters:
      train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
      model.depth: {type: categorical, choices: [10, 18, 34]}
      model.residual: {type: bool}
      train.optimizer: {type: categorical, choices: [adam, adamw, sgd]}
      train.momentum: {type: float, low: 0.8, high: 0.99, when: {train.optimizer: sgd}}
      train.schedule: {type: fixed, value: cosine}

Each entry's fields, defaults and checks are :data:`pielab.spec.params.ParamSpec` (a pydantic
union on ``type``).

``model.name`` is searchable too, as a categorical over registered models of the base config's task:
each trial then takes its model's own defaults (``mycnn`` is plain, ``res_lstm8`` has 8 residual
layers; :func:`pielab.config.switch_model`) unless the space sets them, and a model key of the space
must be taken by every model it can be sampled with (``when: {model.name: [...]}`` narrows that).
A ``fixed`` parameter may carry a ``when`` in a grid: it adds no grid dimension, only its value where
the condition holds (``train.epochs: {type: fixed, value: 30, when: {model.name: mycnn}}``).

Why a class and not a function: Ray's ``OptunaSearch`` pickles its searcher state, including the
define-by-run function, *by reference*, so the function must be importable from a module on every
node. A :class:`SearchSpace` instance is plain data plus a module-level class, so it pickles and
restores anywhere, and calling it (``space(trial)``) is the define-by-run function. It only calls
``trial.suggest_*``: no computation happens inside it (Ray warns when it is slow and runs it on the
driver for every trial).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pielab.config import SECTIONS, Config, apply_params, load_yaml
from pielab.errors import ConfigError
from pielab.spec.params import TYPES, Param, ParamSpec, _fmt, parse_param
from pielab.yamlfile import Problems

if TYPE_CHECKING:  # optuna is only needed by whoever passes the trial in
    import optuna

# Param lives in space_params; it stays importable from here because searcher state pickled before
# the move (a sweep to resume) names it as pielab.spec.space.Param.
__all__ = ["TYPES", "Param", "ParamSpec", "SearchSpace", "load_space"]


@dataclass
class SearchSpace:
    """An ordered set of parameters; calling it with an Optuna trial samples one configuration.

    Order matters: a parameter's ``when`` may only name parameters declared before it, because the
    define-by-run function samples them in declaration order.
    """

    params: tuple[Param, ...]
    description: str | None = None
    source: str | None = field(default=None, compare=False)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_dict(
        cls, d: Any, source: str | None = None, lines: dict[str, int] | None = None
    ) -> "SearchSpace":
        """Parse ``{parameters: {...}}``; every structural problem is reported, one line each.

        ``lines`` is ``load_yaml``'s map, keyed relative to ``d`` (``parameters.train.lr.low``).
        Whether the keys exist and the values type-check needs the base config: see :meth:`validate`.
        """
        problems = Problems(source, lines, name="space")
        if not isinstance(d, dict):
            problems.add("", f"a search space is a mapping with 'parameters', got {type(d).__name__}", at="parameters")
            raise problems.error()
        for key in d:
            if key not in ("parameters", "description"):
                problems.add("", f"{key}: unknown key (a search space takes: parameters, description)", at=str(key))
        description = d.get("description")
        if description is not None and not isinstance(description, str):
            problems.add("", "description: expected a string", at="parameters")
            description = None
        raw_params = d.get("parameters")
        if not isinstance(raw_params, dict) or not raw_params:
            problems.add("", "parameters: expected a non-empty mapping of dotted config keys to distributions, "
                         "such as train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}", at="parameters")
            raw_params = {}
        params: list[Param] = []
        for key, spec in raw_params.items():
            param = parse_param(key, spec, params, problems)
            if param is not None:
                params.append(param)
        problems.raise_if_any()
        return cls(tuple(params), description=description, source=source)

    # ------------------------------------------------------------------ checks against a base config

    def validate(self, base: Config) -> None:
        """Check every key is a real key of ``base`` and every bound/choice/fixed value resolves into it.

        Each candidate value is put into ``base`` and resolved with ``apply_params``, the same code
        that every trial runs, so a space that validates cannot produce a config a trial rejects
        for its type or range. Values go in as YAML would (not as ``--set`` text), so a string
        ``"1e-3"`` for a float is reported rather than silently parsed.
        """
        problems = _problems(self)
        base_raw = base.to_dict()
        models = self._model_choices(base)
        for p in self.params:
            add = functools.partial(problems.add, p.key)
            problem = _key_problem(p.key, base, models)
            if problem:
                add(problem)
                continue
            seen: set[str] = set()
            # A model key of a sweep over model.name is checked with each model it can be sampled with.
            hosts: list[str | None] = [None]
            if p.key.startswith("model.") and p.key != "model.name" and models:
                allowed = dict(p.when).get("model.name")
                hosts = [m for m in models if allowed is None or m in allowed]
                refusing = [m for m in hosts if p.key[6:] not in _defaults(m)]
                if refusing:
                    add(f"{', '.join(refusing)} take(s) no {p.key[6:]}; add when: {{model.name: [models that do]}}")
                    continue
            for (what, value), host in itertools.product(p.candidates(exhaustive=p.key.startswith("model.")), hosts):
                try:
                    # builds each distinct model once per process
                    apply_params(base_raw, {p.key: value} if host is None else {"model.name": host, p.key: value})
                except ConfigError as exc:
                    for msg in exc.problems:
                        msg = msg.removeprefix(f"{p.key}: ")
                        if msg not in seen:
                            add(f"{what} {_fmt(value)} is invalid for {host or base.model_name}: {msg}")
                            seen.add(msg)
        problems.raise_if_any()

    def _model_choices(self, base: Config) -> list[str] | None:
        """The registered model names a searched ``model.name`` can take (None when it is not searched)."""
        if "model.name" not in self.keys:
            return None
        p = self.param("model.name")
        values = p.choices if p.type == "categorical" else (p.value,) if p.type == "fixed" else ()
        from pielab.models import model_task

        return [v for v in values if isinstance(v, str) and _defaults(v) is not None and model_task(v) == base.task]

    # ------------------------------------------------------------------ the define-by-run function

    def __call__(self, trial: "optuna.Trial") -> dict[str, Any]:
        """Sample one configuration: ``{dotted key: value}``, fixed values included.

        Ray's ``OptunaSearch`` merges the returned dict over the values it captured from the
        ``suggest_*`` calls, so the decoded categorical values and the fixed values reach the trial.
        """
        sampled: dict[str, Any] = {}
        for p in self.params:
            if p.active(sampled):
                sampled[p.key] = p.suggest(trial)
        return sampled

    def match(self, values: dict[str, Any], *, labels: bool = False,
              complete: bool = False) -> tuple[dict[str, Any], dict[str, Any], list[tuple[str, str]]]:
        """Check given ``{dotted key: value}`` against the space, in the order the space samples.

        Returns ``(params, distributions, problems)``: the values as Optuna stores them and their
        distributions (what ``study.enqueue_trial`` / ``optuna.trial.create_trial`` take), and
        ``(key, why)`` for each key the space does not search, each value outside its parameter, each
        value given for a parameter whose ``when`` does not hold and, with ``complete``, each active
        parameter left out. ``labels``: categorical values are Optuna labels (another study's trial).
        """
        params: dict[str, Any] = {}
        dists: dict[str, Any] = {}
        problems: list[tuple[str, str]] = []
        sampled: dict[str, Any] = {}
        for p in self.params:
            if p.type == "fixed":
                sampled[p.key] = p.value
                if p.key in values:
                    problems.append((p.key, p.stored(values[p.key])[1] or ""))
                continue
            if not p.active(sampled):
                if p.key in values:
                    problems.append((p.key, "its 'when' condition does not hold for the other values given"))
                continue
            if p.key not in values:
                if complete:
                    problems.append((p.key, "not given, and the space searches it"))
                continue
            stored, why = p.stored(values[p.key], label=labels)
            if why:
                problems.append((p.key, why))
                continue
            params[p.key], dists[p.key] = stored, p.distribution()
            sampled[p.key] = p.decoded(stored)
        for key in values:
            if key not in self.keys:
                problems.append((key, f"not a parameter of the search space (it searches {', '.join(self.keys)})"))
        return params, dists, problems

    # ------------------------------------------------------------------ grid, display, round trip

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.params]

    def param(self, key: str) -> Param:
        for p in self.params:
            if p.key == key:
                return p
        raise KeyError(key)

    @property
    def is_discrete(self) -> bool:
        """True when :meth:`grid` can enumerate the space."""
        try:
            self.grid()
        except ConfigError:
            return False
        return True

    def grid(self) -> dict[str, list[Any]]:
        """``{key: [values]}`` for a grid search; ConfigError if a parameter is continuous or conditional."""
        problems = _problems(self)
        out: dict[str, list[Any]] = {}
        for p in self.params:
            if p.when and p.type == "fixed":
                continue  # a conditional fixed value adds no grid dimension: grid_configs adds it where it holds
            if p.when:
                problems.add(p.key, "grid needs unconditional parameters; drop its 'when' "
                             "or use search.algorithm tpe/random")
                continue
            try:
                out[p.key] = p.grid_values()
            except ConfigError as exc:
                problems.add(p.key, str(exc).removeprefix(p.key + ": "))
        problems.raise_if_any()
        return out

    def grid_size(self) -> int:
        """The number of configurations in :meth:`grid` (its cartesian product)."""
        return math.prod(len(v) for v in self.grid().values())

    def grid_configs(self) -> list[dict[str, Any]]:
        """Every configuration of the grid, in a stable order (the last key varies fastest)."""
        grid = self.grid()
        configs = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
        for p in self.params:
            if p.when and p.type == "fixed":
                for config in configs:
                    if p.active(config):
                        config[p.key] = copy.deepcopy(p.value)
        return configs

    def describe(self) -> str:
        head = f"search space: {len(self.params)} parameters" + (f" ({self.source})" if self.source else "")
        body = ["  " + p.describe() for p in self.params]
        if self.description:
            body.insert(0, "  " + self.description)
        return "\n".join([head, *body])

    def to_dict(self) -> dict[str, Any]:
        """The YAML form; ``SearchSpace.from_dict(space.to_dict()) == space``."""
        out: dict[str, Any] = {}
        if self.description:
            out["description"] = self.description
        out["parameters"] = {p.key: p.to_dict() for p in self.params}
        return out


def load_space(path: str | Path) -> SearchSpace:
    """Read and check a search space file (structure only; ``validate(base)`` checks it against a config)."""
    data, lines = load_yaml(path)
    return SearchSpace.from_dict(data, source=str(path), lines=lines)


# --------------------------------------------------------------------------- helpers


def _problems(space: SearchSpace) -> Problems:
    """Where ``validate``/``grid`` report: each parameter at the line that ``from_dict`` saw it on."""
    return Problems(space.source, {p.key: p.line for p in space.params if p.line is not None}, name="space")


def _defaults(model: str) -> dict[str, Any] | None:
    """A registered model's builder defaults, or None for an unknown name (validate reports it)."""
    from pielab.models import model_defaults

    try:
        return model_defaults(model)
    except ConfigError:
        return None


def _key_problem(key: str, base: Config, models: list[str] | None = None) -> str | None:
    """Why ``key`` is not a searchable key of ``base`` (None when it is). ``models``: the registered
    choices of a searched ``model.name``; a model key is searchable when one of them takes it."""
    from pielab.models import model_defaults
    from pielab.models.registry import DATA_DERIVED_KWARGS as _DATA_DERIVED  # the training loop overrides these

    section, _, name = key.partition(".")
    if section == "model":
        if name == "name":
            return None  # each choice is checked against the base config's task by validate
        if name in _DATA_DERIVED:
            return f"set by the data, not by the config, for model {base.model_name!r}; it cannot be searched"
        if models and any(name in model_defaults(m) for m in models):
            return None
        if name not in base.model:
            takes = ", ".join(k for k in base.model if k != "name" and k not in _DATA_DERIVED)
            return f"unknown key for model {base.model_name!r}; it takes: {takes}"
        return None
    if section in SECTIONS:
        names = [f.name for f in dataclasses.fields(SECTIONS[section])]
        if name not in names:
            return f"unknown key; {section} takes: {', '.join(names)}"
        return None
    return f"unknown key; keys look like model.depth, train.lr, data.max_len (sections: model, {', '.join(SECTIONS)})"
