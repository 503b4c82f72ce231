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
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ConfigDict, ValidationError, create_model

from pielab.config import SECTIONS, Bool, Config, Float, Int, apply_params, load_yaml
from pielab.errors import ConfigError
from pielab.yamlfile import Problems, describe, dump_yaml

if TYPE_CHECKING:  # optuna is only needed by whoever passes the trial in
    import optuna

TYPES = ("float", "int", "categorical", "bool", "fixed")

# Fields each type takes besides ``type`` and ``when``.
_TYPE_FIELDS: dict[str, tuple[str, ...]] = {
    "float": ("low", "high", "log", "step"),
    "int": ("low", "high", "step", "log"),
    "categorical": ("choices",),
    "bool": (),
    "fixed": ("value",),
}

# Optuna stores categorical choices in its storage and only accepts these types.
_PRIMITIVE = (type(None), bool, int, float, str)

# A single parameter may not expand into more grid points than this (an int range typed by mistake).
_MAX_GRID_VALUES = 10_000
# Int ranges of model keys up to this many values are checked value by value by building the model.
_MAX_EXHAUSTIVE = 64

def _same(a: Any, b: Any) -> bool:
    """Equality that does not confuse ``True`` with ``1`` (YAML ``true`` and ``1`` are different values)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def _fmt(value: Any) -> str:
    """A value as the user would type it in YAML (``true``, ``null``, ``1e-04``, ``[3, 4, 6, 3]``)."""
    if isinstance(value, float):
        text = f"{value:g}"
        return text if any(c in text for c in ".ein") else text + ".0"  # 1.0 stays a float to the eye
    if isinstance(value, str):
        return value
    return dump_yaml(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def _encode(value: Any) -> Any:
    """The label Optuna sees for a categorical choice: the value itself if Optuna can store it, else text."""
    return value if isinstance(value, _PRIMITIVE) else _fmt(value)


class _Where(Problems):
    """``file:line: key`` prefixes for parameters: the line is the field's (``low``), else the parameter's."""

    def __call__(self, key: str, field_: str | None = None) -> str:
        at = f"parameters.{key}.{field_}" if field_ is not None else f"parameters.{key}" if key else "parameters"
        if self.source is None:
            return key or "space"
        return self.where(key, at=at)


# The fields of each type (besides ``type`` and ``when``), checked by pydantic.
_FIELD_TYPES: dict[str, dict[str, Any]] = {
    "float": {"low": Float, "high": Float, "log": Bool, "step": Float | None},
    "int": {"low": Int, "high": Int, "step": Int | None, "log": Bool},
    "categorical": {"choices": list},
    "bool": {},
    "fixed": {"value": Any},
}
_FIELD_SCHEMAS = {
    kind: create_model(f"{kind}_param", __config__=ConfigDict(extra="ignore"),
                       **{f: (tp, None) for f, tp in fields.items()})
    for kind, fields in _FIELD_TYPES.items()
}


@dataclass(frozen=True)
class Param:
    """One searched (or fixed) config key. Immutable plain data, so a space pickles by value."""

    key: str
    type: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Any, ...] = ()
    value: Any = None
    when: tuple[tuple[str, tuple[Any, ...]], ...] = ()  # (earlier key, allowed values): all must hold
    line: int | None = field(default=None, compare=False)

    # ------------------------------------------------------------------ sampling

    @property
    def labels(self) -> tuple[Any, ...]:
        """Categorical choices as Optuna stores them (non-primitive values become their YAML text)."""
        return tuple(_encode(c) for c in self.choices)

    def active(self, sampled: dict[str, Any]) -> bool:
        """Whether the ``when`` condition holds for the values sampled so far (define-by-run)."""
        return all(k in sampled and any(_same(sampled[k], v) for v in vals) for k, vals in self.when)

    def suggest(self, trial: "optuna.Trial") -> Any:
        """Ask ``trial`` for this parameter's value; only ``suggest_*`` calls, nothing else."""
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)
        if self.type == "int":
            return trial.suggest_int(self.key, self.low, self.high, step=self.step or 1, log=self.log)
        if self.type == "bool":
            return trial.suggest_categorical(self.key, (False, True))
        if self.type == "categorical":
            labels = self.labels
            label = trial.suggest_categorical(self.key, labels)
            return copy.deepcopy(self.choices[labels.index(label)])
        return copy.deepcopy(self.value)  # fixed

    # ------------------------------------------------------------------ given values (baselines, warm start)

    def distribution(self) -> "optuna.distributions.BaseDistribution":
        """The Optuna distribution that :meth:`suggest` samples from (``fixed`` has none: ValueError)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

        if self.type == "float":
            return FloatDistribution(self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return IntDistribution(self.low, self.high, log=self.log, step=self.step or 1)
        if self.type == "bool":
            return CategoricalDistribution((False, True))
        if self.type == "categorical":
            return CategoricalDistribution(self.labels)
        raise ValueError(f"{self.key}: a fixed parameter is never sampled")

    def stored(self, value: Any, *, label: bool = False) -> tuple[Any, str | None]:
        """``(value as Optuna stores it, None)`` when ``value`` lies in this parameter's range or
        choices, else ``(None, why)``. ``label``: a categorical value is given as Optuna's label (a
        trial of another study), not as the choice itself (a spec's ``enqueue``)."""
        if self.type == "fixed":
            return None, f"is fixed at {_fmt(self.value)} by the space (not searched)"
        if self.type in ("float", "int"):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (
                    self.type == "int" and not float(value).is_integer()):
                return None, f"{_fmt(value)} is not {'an int' if self.type == 'int' else 'a number'}"
            if not self.low <= value <= self.high:
                return None, f"{_fmt(value)} is outside the space's range {_fmt(self.low)} .. {_fmt(self.high)}"
            step = self.step or (1 if self.type == "int" else None)
            if step is not None:
                k = (value - self.low) / step
                if abs(k - round(k)) > 1e-8:
                    return None, f"{_fmt(value)} is not on the space's step {_fmt(step)} from {_fmt(self.low)}"
            return (int(value) if self.type == "int" else float(value)), None
        options = (False, True) if self.type == "bool" else (self.labels if label else self.choices)
        for i, option in enumerate(options):
            if _same(option, value):
                return (option if self.type == "bool" else self.labels[i]), None
        shown = "false, true" if self.type == "bool" else ", ".join(_fmt(c) for c in self.choices)
        return None, f"{_fmt(value)} is not one of the space's choices ({shown})"

    def decoded(self, stored: Any) -> Any:
        """The config value for a value as Optuna stores it (a categorical label back to its choice)."""
        if self.type == "categorical":
            return copy.deepcopy(self.choices[self.labels.index(stored)])
        return stored

    # ------------------------------------------------------------------ enumeration

    def candidates(self, exhaustive: bool = False) -> list[tuple[str, Any]]:
        """(what, value) pairs that bound every value this parameter can take, for type-checking.

        ``exhaustive``: for a short int range, every value (a model may accept depth 10 and 34 but not 12).
        """
        if self.type == "int" and exhaustive and (self.high - self.low) // (self.step or 1) < _MAX_EXHAUSTIVE:
            return [("value", v) for v in self._discrete_values()]
        if self.type in ("float", "int"):
            return [("low", self.low), ("high", self.high)]
        if self.type == "categorical":
            return [("choice", c) for c in self.choices]
        if self.type == "bool":
            return [("value", False), ("value", True)]
        return [("value", self.value)]

    def _discrete_values(self) -> list[Any]:
        step = self.step or 1
        count = int(math.floor((self.high - self.low) / step + 1e-9)) + 1
        if count > _MAX_GRID_VALUES:
            raise ConfigError(f"{self.key}: {count} values, too many for a grid (at most {_MAX_GRID_VALUES})")
        if self.type == "int":
            return [int(self.low + i * step) for i in range(count)]
        return [round(self.low + i * step, 12) for i in range(count)]

    def grid_values(self) -> list[Any]:
        """Every value of a discrete parameter; a continuous float raises ``ConfigError``."""
        if self.type == "float" and self.step is None:
            raise ConfigError(
                f"{self.key}: grid needs discrete parameters; this is a continuous float "
                "(give it a step, make it categorical, or use search.algorithm tpe/random)"
            )
        if self.type in ("float", "int"):
            return self._discrete_values()
        if self.type == "categorical":
            return [copy.deepcopy(c) for c in self.choices]
        if self.type == "bool":
            return [False, True]
        return [copy.deepcopy(self.value)]

    # ------------------------------------------------------------------ round trip and display

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": self.type}
        if self.type in ("float", "int"):
            out.update(low=self.low, high=self.high)
            if self.log:
                out["log"] = True
            if self.step is not None:
                out["step"] = self.step
        elif self.type == "categorical":
            out["choices"] = copy.deepcopy(list(self.choices))
        elif self.type == "fixed":
            out["value"] = copy.deepcopy(self.value)
        if self.when:
            out["when"] = {
                k: (copy.deepcopy(v[0]) if len(v) == 1 and not isinstance(v[0], list) else copy.deepcopy(list(v)))
                for k, v in self.when
            }
        return out

    def describe(self) -> str:
        if self.type in ("float", "int"):
            text = f"{_fmt(self.low)} .. {_fmt(self.high)}"
            text += " log" if self.log else ""
            text += f" step {_fmt(self.step)}" if self.step is not None else ""
        elif self.type == "categorical":
            text = ", ".join(_fmt(c) for c in self.choices)
        elif self.type == "bool":
            text = "false, true"
        else:
            text = _fmt(self.value)
        if self.when:
            text += "   when " + " and ".join(
                f"{k} = {_fmt(v[0])}" if len(v) == 1 else f"{k} in {{{', '.join(_fmt(x) for x in v)}}}"
                for k, v in self.when
            )
        return f"{self.key:<22} {self.type:<12} {text}"


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
        where = _Where(source, lines)
        if not isinstance(d, dict):
            raise ConfigError(f"{where('')}: a search space is a mapping with 'parameters', got {type(d).__name__}")
        problems: list[str] = []
        for key in d:
            if key not in ("parameters", "description"):
                line = (lines or {}).get(str(key))
                head = f"{source}:{line}" if source and line else (source or "space")
                problems.append(f"{head}: {key}: unknown key (a search space takes: parameters, description)")
        description = d.get("description")
        if description is not None and not isinstance(description, str):
            problems.append(f"{where('')}: description: expected a string")
            description = None
        raw_params = d.get("parameters")
        if not isinstance(raw_params, dict) or not raw_params:
            problems.append(
                f"{where('')}: parameters: expected a non-empty mapping of dotted config keys to distributions, "
                "such as train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}"
            )
            raw_params = {}
        params: list[Param] = []
        for key, spec in raw_params.items():
            param = _parse_param(key, spec, params, where, problems)
            if param is not None:
                params.append(param)
        if problems:
            raise _problems(problems)
        return cls(tuple(params), description=description, source=source)

    # ------------------------------------------------------------------ checks against a base config

    def validate(self, base: Config) -> None:
        """Check every key is a real key of ``base`` and every bound/choice/fixed value resolves into it.

        Each candidate value is put into ``base`` and resolved with ``apply_params``, the same code
        that every trial runs, so a space that validates cannot produce a config a trial rejects
        for its type or range. Values go in as YAML would (not as ``--set`` text), so a string
        ``"1e-3"`` for a float is reported rather than silently parsed.
        """
        where = _Where(self.source, _lines_of(self))
        problems: list[str] = []
        base_raw = base.to_dict()
        models = self._model_choices(base)
        for p in self.params:
            loc = where(p.key)
            problem = _key_problem(p.key, base, models)
            if problem:
                problems.append(f"{loc}: {problem}")
                continue
            seen: set[str] = set()
            # A model key of a sweep over model.name is checked with each model it can be sampled with.
            hosts: list[str | None] = [None]
            if p.key.startswith("model.") and p.key != "model.name" and models:
                allowed = dict(p.when).get("model.name")
                hosts = [m for m in models if allowed is None or m in allowed]
                refusing = [m for m in hosts if p.key[6:] not in _defaults(m)]
                if refusing:
                    problems.append(f"{loc}: {', '.join(refusing)} take(s) no {p.key[6:]}; "
                                    f"add when: {{model.name: [models that do]}}")
                    continue
            for (what, value), host in itertools.product(p.candidates(exhaustive=p.key.startswith("model.")), hosts):
                try:
                    # builds each distinct model once per process
                    apply_params(base_raw, {p.key: value} if host is None else {"model.name": host, p.key: value})
                except ConfigError as exc:
                    for msg in exc.problems:
                        msg = msg.removeprefix(f"{p.key}: ")
                        if msg not in seen:
                            problems.append(f"{loc}: {what} {_fmt(value)} is invalid for {host or base.model_name}: {msg}")
                            seen.add(msg)
        if problems:
            raise _problems(problems)

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
        where = _Where(self.source, _lines_of(self))
        problems: list[str] = []
        out: dict[str, list[Any]] = {}
        for p in self.params:
            if p.when and p.type == "fixed":
                continue  # a conditional fixed value adds no grid dimension: grid_configs adds it where it holds
            if p.when:
                problems.append(
                    f"{where(p.key, 'when')}: grid needs unconditional parameters; drop its 'when' "
                    "or use search.algorithm tpe/random"
                )
                continue
            try:
                out[p.key] = p.grid_values()
            except ConfigError as exc:
                problems.append(f"{where(p.key)}: {str(exc).removeprefix(p.key + ': ')}")
        if problems:
            raise _problems(problems)
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
    space = SearchSpace.from_dict(data, source=str(path), lines=lines)
    return space


# --------------------------------------------------------------------------- parsing helpers


def _problems(problems: list[str]) -> ConfigError:
    """One ConfigError whose message lists every problem, one per line, the first one first."""
    err = ConfigError("\n".join(problems))
    err.problems = list(problems)  # type: ignore[attr-defined]
    return err


def _lines_of(space: SearchSpace) -> dict[str, int]:
    """The per-key lines that ``from_dict`` saw, rebuilt from the params (``validate``/``grid`` run later)."""
    return {f"parameters.{p.key}": p.line for p in space.params if p.line is not None}


def _parse_param(
    key: Any, spec: Any, earlier: list[Param], where: _Where, problems: list[str]
) -> Param | None:
    """Check one ``key: {type: ..., ...}`` entry; append every problem found and return None on any."""
    key = str(key)
    loc = where(key)
    before = len(problems)
    if key.count(".") != 1 or not all(key.split(".")):
        problems.append(f"{loc}: keys are dotted config keys such as train.lr, model.depth, data.max_len")
    if any(p.key == key for p in earlier):
        problems.append(f"{loc}: declared twice")
    if not isinstance(spec, dict):
        problems.append(f"{loc}: expected a mapping such as {{type: float, low: 0.0, high: 0.5}}, got {_fmt(spec)}")
        return None
    kind = spec.get("type")
    if kind not in TYPES:
        what = "needs a type" if kind is None else f"unknown type {_fmt(kind)!r}"
        problems.append(f"{where(key, 'type')}: {what}; types: {', '.join(TYPES)}")
        return None
    allowed = _TYPE_FIELDS[kind]
    for f in spec:
        if f not in ("type", "when", *allowed):
            takes = ", ".join(("type", *allowed, "when"))
            problems.append(f"{where(key, f)}: unknown field {f!r} for type {kind} (it takes: {takes})")

    given = {f: spec[f] for f in allowed if f in spec}
    if kind == "float":  # PyYAML reads 1e-4 (no dot) as a string; a bound is clearly meant as a number
        given = {f: _float_text(v) if f in ("low", "high", "step") else v for f, v in given.items()}
    fields: dict[str, Any] = {}
    try:
        fields = _FIELD_SCHEMAS[kind].model_validate(given).model_dump()
    except ValidationError as exc:
        for err in exc.errors():
            f = str(err["loc"][0])
            problems.append(f"{where(key, f)}: {f}: {describe(err, _FIELD_TYPES[kind][f])}")
            given.pop(f, None)
        fields = _FIELD_SCHEMAS[kind].model_validate(given).model_dump()

    values: dict[str, Any] = {}
    if kind in ("float", "int"):
        for f in ("low", "high"):
            if f not in spec:
                problems.append(f"{where(key)}: {kind} needs {f}")
        low, high, log, step = fields["low"], fields["high"], bool(fields["log"]), fields["step"]
        values.update(low=low, high=high, log=log, step=step)
        if low is not None and high is not None and low > high:
            problems.append(f"{where(key, 'low')}: low {_fmt(low)} > high {_fmt(high)}")
        if log and low is not None and low <= 0:
            problems.append(f"{where(key, 'log')}: log needs low > 0, got low {_fmt(low)}")
        if step is not None and step <= 0:
            problems.append(f"{where(key, 'step')}: step must be positive, got {_fmt(step)}")
        if log and step is not None and (kind == "float" or step != 1):
            problems.append(f"{where(key, 'step')}: log and step cannot be combined (Optuna samples one or the other)")
    elif kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            if "choices" not in spec or fields.get("choices") is not None or choices == []:
                problems.append(f"{where(key, 'choices')}: choices must be a non-empty list, got {_fmt(choices)}")
        else:
            labels = [_encode(c) for c in choices]
            for i, label in enumerate(labels):
                if any(label == other for other in labels[:i]):
                    problems.append(
                        f"{where(key, 'choices')}: duplicate choice {_fmt(choices[i])} "
                        "(Optuna cannot tell equal choices apart, and 1 equals true)"
                    )
                    break
            values["choices"] = tuple(copy.deepcopy(choices))
    elif kind == "fixed":
        if "value" not in spec:
            problems.append(f"{where(key)}: fixed needs value")
        values["value"] = copy.deepcopy(spec.get("value"))

    when = _parse_when(key, spec.get("when"), earlier, where, problems) if "when" in spec else ()
    if len(problems) > before:
        return None
    line = where.lines.get(f"parameters.{key}")
    return Param(key=key, type=kind, when=when, line=line, **values)


def _parse_when(
    key: str, raw: Any, earlier: list[Param], where: _Where, problems: list[str]
) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """``when: {earlier.key: value or [values]}``; a list always means "one of these values"."""
    loc = where(key, "when")
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{loc}: when must be a mapping {{earlier.key: value or [values]}}, got {_fmt(raw)}")
        return ()
    out = []
    for ref, vals in raw.items():
        ref = str(ref)
        target = next((p for p in earlier if p.key == ref), None)
        if target is None:
            what = "itself" if ref == key else f"{ref!r}, which is not declared before it"
            problems.append(f"{loc}: when refers to {what} (conditions may only use earlier parameters)")
            continue
        vals = tuple(vals) if isinstance(vals, list) else (vals,)
        if not vals:
            problems.append(f"{loc}: when {ref}: needs at least one value")
            continue
        possible = _possible_values(target)
        if possible is None:
            problems.append(f"{loc}: when {ref}: conditions need a discrete parameter, and {ref} is a continuous float")
            continue
        for v in vals:
            if not any(_same(v, c) for c in possible):
                problems.append(
                    f"{loc}: when {ref}: {_fmt(v)} is never sampled (it takes: {', '.join(_fmt(c) for c in possible)})"
                )
        out.append((ref, tuple(copy.deepcopy(vals))))
    return tuple(out)


def _defaults(model: str) -> dict[str, Any] | None:
    """A registered model's builder defaults, or None for an unknown name (validate reports it)."""
    from pielab.models import model_defaults

    try:
        return model_defaults(model)
    except ConfigError:
        return None


def _float_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _possible_values(p: Param) -> list[Any] | None:
    """Values a condition on ``p`` can match, or None for a continuous float."""
    if p.type == "float" and p.step is None:
        return None
    try:
        return p.grid_values()
    except ConfigError:  # a huge int range: conditions on it are checked only by type
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
