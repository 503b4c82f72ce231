"""The one YAML loader of pielab, and where each problem in what it read sits (``FILE:LINE: key``).

Every file pielab reads (configs, sweep specs, search spaces, a sweep folder's ``sweep.yaml``) goes
through :func:`load_yaml`, which returns the data and a map ``{dotted key: line}``. Types and ranges
are checked by pydantic (``pielab.config``, ``pielab.spec.sweep_spec``, ``pielab.spec.space``);
:class:`Problems` turns each pydantic error, and each check pydantic cannot express, into one line
``FILE:LINE: key: message``, and raises every problem of one input together in one ``ConfigError``.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any, Iterable

import yaml
from pydantic import ValidationError

from pielab.errors import ConfigError

# --------------------------------------------------------------------------- loading


# libyaml's parser when PyYAML has it (as its wheels do): the pure-Python one made `pielab report` on a
# 1,000-trial sweep spend 9 s reading the trials' config.yaml files. The mapping constructor below runs
# in Python either way, so line numbers and duplicate keys are found the same.
_BaseLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _LineLoader(_BaseLoader):
    """A safe loader that records the line of every mapping key, and every key given twice.

    Numbers are read as a user means them: YAML 1.1 (PyYAML) reads ``1e-3``, ``1E5`` and ``-2e-4`` as
    text, because its float form needs a dot; YAML 1.2 and every command line read them as floats.
    The YAML 1.2 core-schema float form is resolved here too, so ``lr: 1e-3`` in a file and
    ``--set train.lr=1e-3`` mean the same value (:func:`parse_value` reads ``--set`` text with this
    loader). Quoted ``"1e-3"`` stays text.
    """


# YAML 1.2 core schema floats that YAML 1.1 misses: an exponent without a dot (1e-3, 1E5, -2e-4, +3e2)
# and a dot with a signed exponent missing its sign in 1.1 (1.0e5 is 1.1-valid only as 1.0e+5).
_FLOAT_12 = re.compile(r"^[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)[eE][-+]?[0-9]+$")
_LineLoader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+.0123456789"))


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
    """A safe dumper that quotes the text the loader would read as a number: PyYAML's own dumper writes
    the text ``17469e9`` (a git commit's short hash) bare, and the YAML 1.2 loader above reads it back as
    the float 1.7469e13."""


_Dumper.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT_12, list("-+.0123456789"))


def dump_yaml(data: Any, **kwargs: Any) -> str:
    """``yaml.safe_dump`` whose output :func:`load_yaml` reads back as the same values (see ``_Dumper``).
    Keyword arguments as for ``yaml.dump`` (``sort_keys``, ``default_flow_style``, ...)."""
    return yaml.dump(data, Dumper=_Dumper, **kwargs)


class _LinedDict(dict):
    lines: dict[Any, int]
    repeated: list[tuple[Any, int, int]]  # (key, first line, repeated line)


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping = _LinedDict()
    mapping.lines, mapping.repeated = {}, []
    loader.flatten_mapping(node)  # YAML merge keys (<<) as SafeLoader reads them
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None, None, "found an unhashable key", key_node.start_mark) from None
        line = key_node.start_mark.line + 1
        if key in mapping:
            mapping.repeated.append((key, mapping.lines[key], line))
        mapping.lines[key] = line
        mapping[key] = loader.construct_object(value_node, deep=deep)
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


# On a command line, NaN and infinity are written as Python and the shell user spell them (``nan``, ``inf``,
# ``-inf``), not as YAML does (``.nan``, ``.inf``): read as numbers, so that a range check can name them.
_COMMAND_LINE_FLOATS = {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}


def parse_value(text: str) -> Any:
    """One scalar or flow value read as a config file reads it (``--set KEY=TEXT``): ``1e-3`` is a float, and
    so are ``nan``, ``inf`` and ``-inf`` (which YAML spells ``.nan``, ``.inf``).

    Text that is not valid YAML (``[1,``) is returned as it is.
    """
    if text.strip().lower() in _COMMAND_LINE_FLOATS:
        return float(text)
    try:
        return _plain(yaml.load(text, Loader=_LineLoader))
    except yaml.YAMLError:
        return text


def load_text(text: str) -> Any:
    """A whole YAML document read as :func:`load_yaml` reads one (numbers included), without line
    numbers or duplicate-key checks; raises ``yaml.YAMLError`` on malformed text."""
    return _plain(yaml.load(text, Loader=_LineLoader))


def load_yaml(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Read a YAML mapping: ``(data, {dotted key: 1-based line})``.

    Raises ``ConfigError`` naming the file and line for: a missing or unreadable file, malformed YAML
    (tabs, unclosed brackets), an empty file, a top level that is not a mapping, and every key given
    twice in one mapping (YAML would silently keep the last one).
    """
    if not hasattr(path, "read_text"):
        path = Path(path)  # else a path object already (pathlib, or a sweep folder's object-storage path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    except OSError as exc:  # object storage: refused, unreachable
        from pielab.text import one_line

        raise ConfigError(f"{path}: cannot read ({one_line(str(exc) or type(exc).__name__, 200)})") from None
    try:
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else f"{path}:1"
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    if data is None:
        raise ConfigError(f"{path}:1: empty file; expected a mapping of keys to values")
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping at the top level, got {type(data).__name__}")
    lines: dict[str, int] = {}
    repeated: list[str] = []
    _walk(data, "", lines, repeated, path)
    if repeated:
        raise ConfigError(repeated)
    return _plain(data), lines


def _walk(data: Any, prefix: str, lines: dict[str, int], repeated: list[str], path: Path) -> None:
    if isinstance(data, _LinedDict):
        for key, first, again in data.repeated:
            repeated.append(
                f"{path}:{again}: {prefix}{key}: duplicate key, also at line {first} (YAML would keep only the last)"
            )
        for key, value in data.items():
            dotted = f"{prefix}{key}"
            lines[dotted] = data.lines[key]
            _walk(value, dotted + ".", lines, repeated, path)
    elif isinstance(data, list):
        for i, item in enumerate(data):
            _walk(item, prefix, lines, repeated, path)  # lists keep their parent's key
            if isinstance(item, (_LinedDict, list)):
                # and each item has its own too (``enqueue.0.train.lr``), so a problem in the second
                # mapping of a list is located at its line, not the first one's (duplicates reported once)
                _walk(item, f"{prefix}{i}.", lines, [], path)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


# --------------------------------------------------------------------------- locating problems


class Problems:
    """Every problem of one input, each located as ``FILE:LINE: key``, ``--set key`` or just ``key``.

    ``lines`` is :func:`load_yaml`'s map, keyed relative to the input (``train.lr``); a key with no
    line of its own (a default, a flow mapping's missing field) takes its nearest ancestor's line.
    ``set_keys`` came from ``--set`` and are located as such. ``name`` stands for the input itself
    (key ``""``) when it has no file.
    """

    def __init__(self, source: str | None = None, lines: dict[str, int] | None = None,
                 set_keys: Iterable[str] = (), name: str = "input") -> None:
        self.source = source
        self.lines = dict(lines or {})
        self.set_keys = set(set_keys)
        self.name = name
        self.items: list[str] = []

    def line(self, key: str) -> int | None:
        probe = key
        while probe:
            if probe in self.lines:
                return self.lines[probe]
            probe = probe.rpartition(".")[0]
        return self.lines.get("")  # the line of the section this input sits in (a spec's base:), if any

    def where(self, key: str, at: str | None = None) -> str:
        """``FILE:LINE: key``; ``at`` is the key whose line to use when it differs from the one shown."""
        if key in self.set_keys:
            return f"--set {key}"
        if self.source is None:
            return key or self.name
        line = self.line(at if at is not None else key) or 1
        return f"{self.source}:{line}: {key}" if key else f"{self.source}:{line}"

    def add(self, key: str, message: str, at: str | None = None) -> None:
        """One problem, shown at ``key`` (on the line of ``at`` when given, as in :meth:`where`)."""
        self.items.append(f"{self.where(key, at)}: {message}")

    def extend(self, error: ConfigError | Iterable[str]) -> None:
        """Problems already located by another input's own ``Problems`` (a nested file)."""
        self.items.extend(error.problems if isinstance(error, ConfigError) else error)

    def add_validation_error(self, exc: ValidationError, schema: Any, prefix: str = "") -> None:
        """One line per pydantic error; ``schema`` is the validated type (its annotations name the types)."""
        for err in exc.errors():
            self.add_error(err, schema, prefix)

    def add_error(self, err: dict[str, Any], schema: Any, prefix: str = "") -> None:
        """One error of ``ValidationError.errors()``, located at its key."""
        loc = [str(part) for part in err["loc"] if not isinstance(part, int)]
        key = prefix + ".".join(loc)
        self.add(key, describe(err, _annotation(schema, loc), _known_keys(schema, loc[:-1])))

    def __bool__(self) -> bool:
        return bool(self.items)

    def error(self) -> ConfigError:
        """Every problem in one ConfigError, in file order (lines without a line number keep their place last)."""
        return ConfigError(sorted(self.items, key=self._order))

    def _order(self, item: str) -> tuple[int, int]:
        if self.source is not None and item.startswith(f"{self.source}:"):
            number = item[len(self.source) + 1:].split(":", 1)[0]
            if number.isdigit():
                return (0, int(number))
        return (1, 0)

    def raise_if_any(self) -> None:
        if self.items:
            raise self.error()


# --------------------------------------------------------------------------- pydantic errors as messages

_TYPE_WORDS = {
    "int_type": "int", "int_parsing": "int", "int_from_float": "int", "float_type": "float",
    "float_parsing": "float", "bool_type": "bool", "bool_parsing": "bool", "string_type": "str",
    "list_type": "list", "dict_type": "mapping", "dataclass_type": "mapping", "model_type": "mapping",
    "model_attributes_type": "mapping",
}


def _strip(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


def _annotation(schema: Any, loc: list[str]) -> Any:
    """The annotation of the field at ``loc`` inside ``schema`` (None when it cannot be told)."""
    tp = schema
    for part in loc:
        tp = _strip(tp)
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
        try:
            hints = typing.get_type_hints(tp, include_extras=True)
        except TypeError:
            return None
        if part not in hints:
            return None
        tp = hints[part]
    return tp


def _known_keys(schema: Any, loc: list[str]) -> list[str]:
    tp = _strip(_annotation(schema, loc) if loc else schema)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        tp = next((a for a in typing.get_args(tp) if a is not type(None)), tp)
    try:
        return list(typing.get_type_hints(tp))
    except TypeError:
        return []


def type_phrase(tp: Any) -> str:
    """``int | None`` -> ``int or null``; ``Literal['a', 'b']`` -> ``a or b``."""
    tp = _strip(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        names = [type_phrase(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if typing.get_origin(tp) is typing.Literal:
        return " or ".join(str(a) for a in typing.get_args(tp))
    if typing.get_origin(tp) is list or tp is list:
        return "list"
    if typing.get_origin(tp) is dict or tp is dict or isinstance(tp, type) and hasattr(tp, "__dataclass_fields__"):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def valid_range(tp: Any) -> str | None:
    """The values a numeric field takes, in words: ``a finite number > 0, or null``,
    ``an integer 0 .. 4294967295``. None for a field that is not a number.

    Read from the field's own annotation (its ``Field(gt=..)``, ``le=..`` and ``AllowInfNan``
    constraints), so the message, the README's table and the check are one definition.
    """
    nullable = False
    bounds: dict[str, Any] = {}
    finite = False
    base = tp
    while typing.get_origin(base) is typing.Annotated:
        args = typing.get_args(base)
        base = args[0]
        for meta in args[1:]:
            if getattr(meta, "allow_inf_nan", True) is False:
                finite = True
            for item in [meta, *getattr(meta, "metadata", ())]:
                for bound in ("gt", "ge", "lt", "le"):
                    if getattr(item, bound, None) is not None:
                        bounds[bound] = getattr(item, bound)
                if getattr(item, "allow_inf_nan", True) is False:
                    finite = True
    if typing.get_origin(base) in (typing.Union, types.UnionType):
        args = typing.get_args(base)
        nullable = type(None) in args
        rest = [a for a in args if a is not type(None)]
        if len(rest) != 1:
            return None
        base = rest[0]
    if base is int:
        noun = "an integer"
    elif base is float:
        noun = "a finite number" if finite else "a number"
    else:
        return None
    lower = (f">= {_num(bounds['ge'])}" if "ge" in bounds else f"> {_num(bounds['gt'])}" if "gt" in bounds else None)
    upper = (f"<= {_num(bounds['le'])}" if "le" in bounds else f"< {_num(bounds['lt'])}" if "lt" in bounds else None)
    if base is int and "ge" in bounds and "le" in bounds:
        text = f"{noun} {bounds['ge']} .. {bounds['le']}"
    elif base is int and "gt" in bounds and "le" in bounds:
        text = f"{noun} {bounds['gt'] + 1} .. {bounds['le']}"
    else:
        text = " and ".join(x for x in (f"{noun} {lower}" if lower else noun, upper) if x)
    return text + (", or null" if nullable else "")


def describe(err: dict[str, Any], annotation: Any = None, known: list[str] | None = None) -> str:
    """One pydantic error as pielab says it: ``expected int, got str 'x'``, ``must be positive, got 0``."""
    kind, value, ctx = err["type"], err.get("input"), err.get("ctx") or {}
    if kind in _RANGE_KINDS:
        text = _describe(kind, value, ctx, err, annotation, known)
        allowed = valid_range(annotation) if annotation is not None else None
        return f"{text} (valid: {allowed})" if allowed else text
    return _describe(kind, value, ctx, err, annotation, known)


_RANGE_KINDS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal", "finite_number"}


def _describe(kind: str, value: Any, ctx: dict[str, Any], err: dict[str, Any], annotation: Any,
              known: list[str] | None) -> str:
    if kind == "finite_number":
        return f"must be a finite number, got {_num(value)}"
    if kind in _TYPE_WORDS:
        expected = type_phrase(annotation) if annotation is not None else _TYPE_WORDS[kind]
        return f"expected {expected}, got {type(value).__name__} {value!r}"
    if kind == "literal_error":
        tp = _strip(annotation)
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            tp = next((a for a in typing.get_args(tp) if typing.get_origin(a) is typing.Literal), tp)
        choices = typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else ()
        allowed = ", ".join(str(c) for c in choices) if choices else ctx.get("expected", "")
        return f"{value!r} is not one of {allowed}"
    if kind == "greater_than":
        bound = ctx["gt"]
        return f"must be positive, got {_num(value)}" if bound == 0 else f"must be > {_num(bound)}, got {_num(value)}"
    if kind == "greater_than_equal":
        bound = ctx["ge"]
        return f"must be >= 0, got {_num(value)}" if bound == 0 else f"must be at least {_num(bound)}, got {_num(value)}"
    if kind == "less_than":
        return f"must be < {_num(ctx['lt'])}, got {_num(value)}"
    if kind == "less_than_equal":
        return f"must be at most {_num(ctx['le'])}, got {_num(value)}"
    if kind == "too_short":
        return f"must have at least {ctx.get('min_length', 1)} item(s), got {value!r}"
    if kind in ("extra_forbidden", "unexpected_keyword_argument"):
        return f"unknown key; it takes: {', '.join(known)}" if known else "unknown key"
    if kind == "missing":
        return "required"
    if kind == "value_error":
        return str(ctx.get("error", err["msg"]))
    return err["msg"]
