"""Dataclass configs, YAML loading, validation and ``--set`` overrides.

One precedence order: dataclass (and task) defaults < YAML < ``--set``. Unknown keys and values
of the wrong type are errors that name the key, and the file and line when the value came from
YAML. The model section is checked against the registered builder's own keyword defaults, so
every resolved config can rebuild its model exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pielab.errors import ConfigError


@dataclass
class DataConfig:
    """Where the data comes from and how it is split and processed."""

    path: str | None = None  # a local file (.npz for CIFAR-10, .parquet for IMDB); else PIELAB_DATA_DIR; else download
    train_size: int | None = None  # stratified subset of the training split (after the validation holdout)
    val_fraction: float = 0.1  # seeded, stratified validation holdout taken from the training split
    val_size: int | None = None  # absolute validation size; overrides val_fraction
    test_size: int | None = None  # stratified subset of the test split (CPU-scale runs)
    split_seed: int = 0  # seeds the holdout and subsets: fixed across trials so they all see the same split
    augment: bool = True  # CIFAR-10: random crop (padding 4) and horizontal flip on the training batches
    max_len: int = 300  # IMDB: tokens kept per review (longer ones are truncated)
    vocab_size: int = 20000  # IMDB: most frequent training words kept, plus pad and unk
    cache_dir: str | None = None  # processed-data cache; default $PIELAB_CACHE_DIR or ~/.cache/pielab


@dataclass
class TrainConfig:
    """The optimisation recipe shared by both tasks."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | adamw | sgd (Nesterov)
    momentum: float = 0.9  # sgd only
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine | onecycle
    label_smoothing: float = 0.0
    grad_clip: float | None = None  # max global gradient norm; None = no clipping
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    precision: str = "auto"  # auto (bf16 autocast on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False  # torch.compile the model
    channels_last: bool = False  # CIFAR-10 on GPU: NHWC memory format
    threads: int | None = None  # torch intra-op threads; None = torch's default
    eval_batch_size: int | None = None  # None = 2 x batch_size


@dataclass
class TrackingConfig:
    """Experiment tracking (used by sweeps; ``pielab train`` writes local files only)."""

    wandb: bool = True
    project: str = "pielab"
    entity: str | None = None
    mode: str = "auto"  # auto (online if an API key is configured, else offline) | online | offline


@dataclass
class Config:
    task: str
    model: dict[str, Any]  # {"name": registered model, **builder keyword arguments}
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "model": dict(self.model),
            "data": dataclasses.asdict(self.data),
            "train": dataclasses.asdict(self.train),
            "tracking": dataclasses.asdict(self.tracking),
        }

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values, for tables, W&B and search spaces."""
        return flatten(self.to_dict())

    @property
    def model_name(self) -> str:
        return self.model["name"]

    def model_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in self.model.items() if k != "name"}


SECTIONS = {"data": DataConfig, "train": TrainConfig, "tracking": TrackingConfig}

# The report's settings: CIFAR-10 batch 128 for 20 epochs, IMDB batch 64 for 10 epochs.
TASK_DEFAULTS: dict[str, dict[str, dict[str, Any]]] = {
    "cifar10": {"train": {"batch_size": 128, "epochs": 20}},
    "imdb": {"train": {"batch_size": 64, "epochs": 10}},
}


# --------------------------------------------------------------------------- helpers


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value and dotted.count(".") < 1:
            out.update(flatten(value, dotted + "."))
        else:
            out[dotted] = value
    return out


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _allowed_types(tp: Any) -> tuple[tuple[type, ...], bool]:
    """(concrete types, allows None) of a field annotation such as ``int | None``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        return tuple(a for a in args if a is not type(None)), type(None) in args
    return (tp,), False


def coerce(value: Any, tp: Any, where: str, *, from_string: bool = False) -> Any:
    """Check ``value`` against annotation ``tp``; ints widen to floats, numeric strings parse for --set."""
    allowed, nullable = _allowed_types(tp)
    if value is None:
        if nullable or tp is Any:
            return None
        raise ConfigError(f"{where}: must be {_type_name(allowed[0])}, not null")
    if tp is Any:
        return value
    for t in allowed:
        if t is bool:
            if isinstance(value, bool):
                return value
            continue
        if t is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if t is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if t is str and isinstance(value, str):
            return value
        if t is list and isinstance(value, list):
            return value
        if t is dict and isinstance(value, dict):
            return value
    if from_string and isinstance(value, str):
        for t in allowed:
            if t is float:
                try:
                    return float(value)
                except ValueError:
                    pass
    names = " or ".join(_type_name(t) for t in allowed) + (" or null" if nullable else "")
    raise ConfigError(f"{where}: expected {names}, got {type(value).__name__} {value!r}")


def _model_field_type(default: Any) -> Any:
    if default is None:
        return Any
    if isinstance(default, bool):
        return bool
    if isinstance(default, float):
        return float
    if isinstance(default, int):
        return int
    if isinstance(default, (list, tuple)):
        return list
    return type(default)


# --------------------------------------------------------------------------- YAML with line numbers


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that records the line of every mapping key as ``dotted.key -> line``."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    mapping = yaml.SafeLoader.construct_mapping(loader, node, deep=deep)
    lines = {}
    for key_node, _ in node.value:
        lines[key_node.value] = key_node.start_mark.line + 1
    mapping = _LinedDict(mapping)
    mapping.lines = lines
    return mapping


class _LinedDict(dict):
    lines: dict[str, int]


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def load_yaml(path: str | Path) -> tuple[dict[str, Any], dict[str, int]]:
    """Read a YAML mapping; returns (data, {dotted key: line}). Errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (IsADirectoryError, PermissionError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc.__class__.__name__})") from None
    try:
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    if data is None:
        data = _LinedDict()
        data.lines = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping at the top level, got {type(data).__name__}")
    return _plain(data), _collect_lines(data)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _collect_lines(data: Any, prefix: str = "") -> dict[str, int]:
    out: dict[str, int] = {}
    if isinstance(data, dict):
        for key, value in data.items():
            dotted = f"{prefix}{key}"
            line = getattr(data, "lines", {}).get(key)
            if line is not None:
                out[dotted] = line
            out.update(_collect_lines(value, dotted + "."))
    return out


# --------------------------------------------------------------------------- overrides


def parse_set(items: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """``["train.lr=3e-3", "model.residual=false"]`` -> ``{"train.lr": "3e-3"-as-float, ...}``."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, for example --set train.epochs=2")
        try:
            out[key] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            out[key] = raw
    return out


def nest(flat: dict[str, Any]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for dotted, value in flat.items():
        node = tree
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{dotted}: {part!r} is not a section")
        node[parts[-1]] = value
    return tree


# --------------------------------------------------------------------------- building a Config


def _where(key: str, source: str | None, lines: dict[str, int]) -> str:
    if source is None:
        return key
    line = lines.get(key)
    return f"{source}:{line}: {key}" if line else f"{source}: {key}"


def build_config(
    raw: dict[str, Any],
    *,
    source: str | None = None,
    lines: dict[str, int] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Resolve a raw nested mapping (YAML) plus dotted ``overrides`` into a validated Config."""
    from pielab.models import model_defaults, model_task, TASKS

    lines = lines or {}
    raw = copy.deepcopy(raw)
    set_keys: set[str] = set()
    for dotted, value in (overrides or {}).items():
        section, _, rest = dotted.partition(".")
        if section in ("task",) and not rest:
            raw["task"] = value
        elif section in ("model", *SECTIONS) and rest and "." not in rest:
            raw.setdefault(section, {})
            if not isinstance(raw[section], dict):
                raise ConfigError(f"{section}: must be a mapping")
            raw[section][rest] = value
        else:
            raise ConfigError(
                f"--set {dotted}: unknown key; keys look like model.depth, data.train_size, train.lr"
            )
        set_keys.add(dotted)

    unknown = sorted(set(raw) - {"task", "model", *SECTIONS})
    if unknown:
        raise ConfigError(f"{_where(unknown[0], source, lines)}: unknown key (sections: task, model, data, train, tracking)")

    model_raw = raw.get("model")
    if isinstance(model_raw, str):
        model_raw = {"name": model_raw}
    if not isinstance(model_raw, dict) or "name" not in model_raw:
        raise ConfigError(f"{_where('model', source, lines)}: needs model.name (see `pielab models`)")
    name = model_raw["name"]
    if not isinstance(name, str):
        raise ConfigError(f"{_where('model.name', source, lines)}: expected a model name, got {name!r}")
    defaults = model_defaults(name)  # raises ConfigError for an unknown model
    task = raw.get("task") or model_task(name)
    if task not in TASKS:
        raise ConfigError(f"{_where('task', source, lines)}: unknown task {task!r}; tasks: {', '.join(TASKS)}")
    if task != model_task(name):
        raise ConfigError(f"{_where('task', source, lines)}: model {name!r} is for task {model_task(name)!r}, not {task!r}")

    model: dict[str, Any] = {"name": name}
    for key, value in model_raw.items():
        if key == "name":
            continue
        dotted = f"model.{key}"
        where = _where(dotted, None if dotted in set_keys else source, lines)
        if key not in defaults:
            raise ConfigError(f"{where}: unknown key for model {name!r}; it takes: {', '.join(sorted(defaults))}")
        value = coerce(value, _model_field_type(defaults[key]), where, from_string=dotted in set_keys)
        model[key] = value
    for key, default in defaults.items():
        model.setdefault(key, list(default) if isinstance(default, tuple) else default)

    sections = {}
    task_defaults = TASK_DEFAULTS.get(task, {})
    for section, cls in SECTIONS.items():
        given = raw.get(section) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"{_where(section, source, lines)}: must be a mapping")
        hints = typing.get_type_hints(cls)
        values = dict(task_defaults.get(section, {}))
        for key, value in given.items():
            dotted = f"{section}.{key}"
            where = _where(dotted, None if dotted in set_keys else source, lines)
            if key not in hints:
                raise ConfigError(f"{where}: unknown key; {section} takes: {', '.join(hints)}")
            values[key] = coerce(value, hints[key], where, from_string=dotted in set_keys)
        sections[section] = cls(**values)

    config = Config(task=task, model=model, **sections)
    validate(config)
    _check_model_builds(config)
    return config


def _check_model_builds(config: Config) -> None:
    """Build the model on PyTorch's meta device, so an unsupported argument (ResNet depth 12, LSTM depth 9)
    fails here, before any data loads, at no memory or compute cost.

    Builders raise ``ValueError`` for such arguments, which ``get_model`` turns into ``ConfigError``.
    Anything else a builder raises on the meta device says nothing about the config: the run checks for real.
    """
    import torch

    from pielab.models import get_model

    try:
        with torch.device("meta"):
            get_model(config.model_name, **config.model_kwargs())
    except ConfigError:
        raise
    except Exception:  # noqa: BLE001
        pass


def validate(config: Config) -> None:
    """Semantic checks that types alone cannot express."""
    t, d = config.train, config.data
    choices = {
        "train.optimizer": (t.optimizer, ("adam", "adamw", "sgd")),
        "train.schedule": (t.schedule, ("constant", "cosine", "onecycle")),
        "train.precision": (t.precision, ("auto", "fp32", "bf16")),
        "tracking.mode": (config.tracking.mode, ("auto", "online", "offline", "disabled")),
    }
    for key, (value, allowed) in choices.items():
        if value not in allowed:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(allowed)}")
    positive = {
        "train.epochs": t.epochs, "train.batch_size": t.batch_size, "data.max_len": d.max_len,
        "data.vocab_size": d.vocab_size,
    }
    for key, value in positive.items():
        if value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value}")
    for key, value in {"data.train_size": d.train_size, "data.val_size": d.val_size, "data.test_size": d.test_size,
                       "train.threads": t.threads, "train.eval_batch_size": t.eval_batch_size}.items():
        if value is not None and value <= 0:
            raise ConfigError(f"{key}: must be positive, got {value}")
    if t.lr <= 0:
        raise ConfigError(f"train.lr: must be positive, got {t.lr}")
    if t.weight_decay < 0 or not 0 <= t.label_smoothing < 1 or not 0 <= t.momentum < 1:
        raise ConfigError("train.weight_decay must be >= 0, train.label_smoothing and train.momentum in [0, 1)")
    if not 0 < d.val_fraction < 1:
        raise ConfigError(f"data.val_fraction: must be in (0, 1), got {d.val_fraction}")
    if t.device not in ("auto", "cpu", "cuda") and not t.device.startswith("cuda:"):
        raise ConfigError(f"train.device: {t.device!r} is not auto, cpu, cuda or cuda:N")


def default_config(model_name: str, overrides: dict[str, Any] | None = None) -> Config:
    return build_config({"model": {"name": model_name}}, overrides=overrides)


def load_config(source: str | Path, overrides: dict[str, Any] | list[str] | None = None) -> Config:
    """A registered model name or a YAML file, then ``--set`` overrides."""
    if isinstance(overrides, (list, tuple)):
        overrides = parse_set(overrides)
    src = str(source)
    if src.endswith((".yaml", ".yml")) or Path(src).is_file():
        raw, lines = load_yaml(src)
        return build_config(raw, source=src, lines=lines, overrides=overrides)
    return default_config(src, overrides)


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Rebuild a Config from its ``to_dict`` form (checkpoints, sweep trials, exports)."""
    return build_config(raw)


def save_config(config: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
