"""One parameter of a search space: its YAML form (a pydantic union on ``type``) and :class:`Param`.

Each entry of a space's ``parameters`` is one of :data:`ParamSpec`, chosen by its ``type``::

    train.lr:         {type: float, low: 1.0e-4, high: 1.0e-2, log: true}   # also step
    train.batch_size: {type: int, low: 64, high: 256, step: 64}            # also log
    train.optimizer:  {type: categorical, choices: [adam, sgd]}
    model.residual:   {type: bool}
    train.schedule:   {type: fixed, value: cosine}

and any of them may carry ``when: {earlier.key: value or [values]}``. pydantic checks each field's
type; :meth:`_SpecBase.problems` what one field cannot say alone (``low > high``); ``when`` is
checked against the parameters declared before it (:func:`parse_param`). Every problem goes to the
space's :class:`~pielab.yamlfile.Problems` at its field's line.

:class:`Param` is what a parsed parameter becomes: plain frozen data (a space pickles by value) that
samples itself from an Optuna trial and enumerates its values for a grid.
"""

from __future__ import annotations

import copy
import math
import typing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from pielab.config import Bool, Float, Int
from pielab.errors import ConfigError
from pielab.yamlfile import Problems, describe, dump_yaml

if TYPE_CHECKING:  # optuna is only needed by whoever passes the trial in
    import optuna

TYPES = ("float", "int", "categorical", "bool", "fixed")

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


def _at(key: str, field_: str | None = None) -> str:
    """The key of ``load_yaml``'s line map where a parameter's problem sits: its field's line, else its own."""
    return f"parameters.{key}" + (f".{field_}" if field_ is not None else "")


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




# --------------------------------------------------------------------------- the YAML form


class _SpecBase(BaseModel):
    """What every type takes besides its own fields. Every field defaults to None: a required one left
    out (``low``, ``value``) is a :meth:`problems` check, located at the parameter's own line."""

    model_config = ConfigDict(extra="forbid")

    when: Any = None  # {earlier.key: value or [values]}: checked against the earlier parameters

    def problems(self, given: dict[str, Any]) -> list[tuple[str | None, str]]:
        """What the fields' types cannot say: ``[(field whose line shows it, or None for the parameter's
        own line, message)]``. ``given`` is the entry as written, fields of the wrong type included
        (they are None here, and already reported)."""
        return []

    def values(self) -> dict[str, Any]:
        """The fields :class:`Param` takes from this entry."""
        return {}


class _RangeSpec(_SpecBase):
    """What ``float`` and ``int`` share: ``low`` and ``high`` (required), ``log``, ``step``."""

    def problems(self, given: dict[str, Any]) -> list[tuple[str | None, str]]:
        out: list[tuple[str | None, str]] = [(None, f"{self.type} needs {f}")
                                             for f in ("low", "high") if f not in given]
        low, high, log, step = self.low, self.high, bool(self.log), self.step
        if low is not None and high is not None and low > high:
            out.append(("low", f"low {_fmt(low)} > high {_fmt(high)}"))
        if log and low is not None and low <= 0:
            out.append(("log", f"log needs low > 0, got low {_fmt(low)}"))
        if step is not None and step <= 0:
            out.append(("step", f"step must be positive, got {_fmt(step)}"))
        if log and step is not None and (self.type == "float" or step != 1):
            out.append(("step", "log and step cannot be combined (Optuna samples one or the other)"))
        return out

    def values(self) -> dict[str, Any]:
        return dict(low=self.low, high=self.high, log=bool(self.log), step=self.step)


class FloatSpec(_RangeSpec):
    """A float in ``[low, high]``: uniform, log-uniform with ``log``, or on multiples of ``step`` from ``low``."""

    type: Literal["float"]
    low: Float = None
    high: Float = None
    log: Bool = None
    step: Float | None = None  # None: continuous


class IntSpec(_RangeSpec):
    """An int in ``[low, high]`` on multiples of ``step`` (1) from ``low``; log-uniform with ``log`` (step 1 only)."""

    type: Literal["int"]
    low: Int = None
    high: Int = None
    step: Int | None = None  # None: 1
    log: Bool = None


class CategoricalSpec(_SpecBase):
    """One of ``choices``: any YAML values, each distinct (``1`` and ``true`` count as equal for Optuna)."""

    type: Literal["categorical"]
    choices: list = None

    def problems(self, given: dict[str, Any]) -> list[tuple[str | None, str]]:
        if self.choices is None and "choices" not in given or self.choices == []:
            return [("choices", f"choices must be a non-empty list, got {_fmt(self.choices)}")]
        labels = [_encode(c) for c in self.choices or ()]
        for i, label in enumerate(labels):
            if any(label == other for other in labels[:i]):
                return [("choices", f"duplicate choice {_fmt(self.choices[i])} "
                                    "(Optuna cannot tell equal choices apart, and 1 equals true)")]
        return []

    def values(self) -> dict[str, Any]:
        return {"choices": tuple(copy.deepcopy(self.choices))} if self.choices is not None else {}


class BoolSpec(_SpecBase):
    """``false`` or ``true``."""

    type: Literal["bool"]


class FixedSpec(_SpecBase):
    """Always ``value`` (any YAML value), never sampled; with ``when``, only where the condition holds."""

    type: Literal["fixed"]
    value: Any = None

    def problems(self, given: dict[str, Any]) -> list[tuple[str | None, str]]:
        return [] if "value" in given else [(None, "fixed needs value")]

    def values(self) -> dict[str, Any]:
        return {"value": copy.deepcopy(self.value)}


# One entry of a space's ``parameters``, told apart by its ``type``.
ParamSpec = Annotated[Union[FloatSpec, IntSpec, CategoricalSpec, BoolSpec, FixedSpec], Field(discriminator="type")]
_PARAM_ADAPTER: TypeAdapter = TypeAdapter(ParamSpec)
_SCHEMAS: dict[str, type[_SpecBase]] = {
    "float": FloatSpec, "int": IntSpec, "categorical": CategoricalSpec, "bool": BoolSpec, "fixed": FixedSpec,
}


def parse_param(key: Any, spec: Any, earlier: list[Param], problems: Problems) -> Param | None:
    """One ``key: {type: ..., ...}`` entry as a :class:`Param`, or None when it has a problem (each
    one added to ``problems``, whose lines are keyed as in the space file: ``parameters.KEY.FIELD``).
    ``earlier``: the parameters declared before it, the only ones its ``when`` may name."""
    key = str(key)
    before = len(problems.items)
    add = problems.add
    if key.count(".") != 1 or not all(key.split(".")):
        add(key, "keys are dotted config keys such as train.lr, model.depth, data.max_len", at=_at(key))
    if any(p.key == key for p in earlier):
        add(key, "declared twice", at=_at(key))
    if not isinstance(spec, dict):
        add(key, f"expected a mapping such as {{type: float, low: 0.0, high: 0.5}}, got {_fmt(spec)}", at=_at(key))
        return None
    kind = spec.get("type")
    try:
        fields = _PARAM_ADAPTER.validate_python(spec)
    except ValidationError as exc:
        if any(err["type"].startswith("union_tag") for err in exc.errors()):
            what = "needs a type" if kind is None else f"unknown type {_fmt(kind)!r}"
            add(key, f"{what}; types: {', '.join(TYPES)}", at=_at(key, "type"))
            return None
        fields = _field_problems(key, spec, exc, problems)
    for field_, message in fields.problems(spec):
        add(key, message, at=_at(key, field_))
    when = _parse_when(key, fields.when, earlier, problems) if "when" in fields.model_fields_set else ()
    if len(problems.items) > before:
        return None
    return Param(key=key, type=kind, when=when, line=problems.lines.get(_at(key)), **fields.values())


def _field_problems(key: str, spec: dict[str, Any], exc: ValidationError, problems: Problems) -> _SpecBase:
    """Report an entry's unknown fields, then its fields of the wrong type; the entry without them."""
    schema = _SCHEMAS[spec["type"]]
    hints = typing.get_type_hints(schema, include_extras=True)
    errors = sorted(exc.errors(), key=lambda err: err["type"] != "extra_forbidden")  # stable: unknown fields first
    takes = ", ".join(("type", *(f for f in schema.model_fields if f not in ("type", "when")), "when"))
    for err in errors:
        field_ = str(err["loc"][1])
        if err["type"] == "extra_forbidden":
            message = f"unknown field {field_!r} for type {spec['type']} (it takes: {takes})"
        else:
            message = f"{field_}: {describe(err, hints[field_])}"
        problems.add(key, message, at=_at(key, field_))
    bad = {str(err["loc"][1]) for err in errors}
    return schema.model_validate({f: v for f, v in spec.items() if f not in bad})


def _parse_when(
    key: str, raw: Any, earlier: list[Param], problems: Problems
) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """``when: {earlier.key: value or [values]}``; a list always means "one of these values"."""
    def add(message: str) -> None:
        problems.add(key, message, at=_at(key, "when"))

    if not isinstance(raw, dict) or not raw:
        add(f"when must be a mapping {{earlier.key: value or [values]}}, got {_fmt(raw)}")
        return ()
    out = []
    for ref, vals in raw.items():
        ref = str(ref)
        target = next((p for p in earlier if p.key == ref), None)
        if target is None:
            what = "itself" if ref == key else f"{ref!r}, which is not declared before it"
            add(f"when refers to {what} (conditions may only use earlier parameters)")
            continue
        vals = tuple(vals) if isinstance(vals, list) else (vals,)
        if not vals:
            add(f"when {ref}: needs at least one value")
            continue
        possible = _possible_values(target)
        if possible is None:
            add(f"when {ref}: conditions need a discrete parameter, and {ref} is a continuous float")
            continue
        for v in vals:
            if not any(_same(v, c) for c in possible):
                add(f"when {ref}: {_fmt(v)} is never sampled (it takes: {', '.join(_fmt(c) for c in possible)})")
        out.append((ref, tuple(copy.deepcopy(vals))))
    return tuple(out)


def _possible_values(p: Param) -> list[Any] | None:
    """Values a condition on ``p`` can match, or None for a continuous float."""
    if p.type == "float" and p.step is None:
        return None
    try:
        return p.grid_values()
    except ConfigError:  # a huge int range: conditions on it are checked only by type
        return None
