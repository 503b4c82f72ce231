"""Dataclass configs, YAML loading, validation and ``--set`` overrides.

One precedence order: dataclass (and task) defaults < YAML < ``--set``. Types and ranges are
declared on the dataclass fields (``Annotated`` pydantic constraints) and checked by pydantic in
one pass; every problem is reported, one line each, as ``FILE:LINE: key: message`` (or
``--set key: message``) in one ``ConfigError`` (:class:`pielab.yamlfile.Problems`). The model
section is checked against the registered builder's own keyword defaults, so every resolved config
can rebuild its model exactly.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, AllowInfNan, BaseModel, ConfigDict, Field, Strict, TypeAdapter, ValidationError, create_model, with_config

from pielab.errors import ConfigError
from pielab.yamlfile import Problems, dump_yaml, load_yaml, parse_value

__all__ = [
    "Config", "DataConfig", "TrainConfig", "TrackingConfig", "SECTIONS", "TASK_DEFAULTS", "apply_params",
    "build_config", "config_from_dict", "default_config", "flatten", "load_config", "load_yaml", "nest",
    "parse_set", "save_config",
]

# Field types: strict (YAML `true` is not an int, "1e-3" is not a float), ints widen to floats.
# Every number has a range (README's configuration table): floats are finite (nan and inf are
# refused, in files and on the command line); sizes are positive and fit a C int, which torch and
# numpy take; seeds are 0 .. 2**32-1 (numpy's SeedSequence and torch take any such seed, and what
# config.yaml records is exactly what seeded the run). An error names the key and the valid range.
Finite = AllowInfNan(False)
MAX_SIZE = 2**31 - 1
MAX_SEED = 2**32 - 1
Int = Annotated[int, Strict()]
Float = Annotated[float, Strict(), Finite]
Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
PositiveInt = Annotated[int, Strict(), Field(gt=0, le=MAX_SIZE)]
OptPositiveInt = Annotated[int | None, Strict(), Field(gt=0, le=MAX_SIZE)]
Seed = Annotated[int, Strict(), Field(ge=0, le=MAX_SEED)]
# A model's int keywords (depth, width, hidden, vocab_size, ...) are sizes; the builder checks its own
# lower bounds, this keeps a typo like width=99999999999 from reaching a real allocation.
ModelInt = Annotated[int, Strict(), Field(ge=0, le=MAX_SIZE)]
PositiveFloat = Annotated[float, Strict(), Finite, Field(gt=0)]
NonNegativeFloat = Annotated[float, Strict(), Finite, Field(ge=0)]
Probability = Annotated[float, Strict(), Finite, Field(ge=0, lt=1)]  # [0, 1)
Fraction = Annotated[float, Strict(), Finite, Field(gt=0, lt=1)]  # (0, 1)


def _device(value: str) -> str:
    if value not in ("auto", "cpu", "cuda") and not (value.startswith("cuda:") and value[5:].isdigit()):
        raise ValueError(f"{value!r} is not auto, cpu, cuda or cuda:N")
    return value


Device = Annotated[str, Strict(), AfterValidator(_device)]
_FORBID = ConfigDict(extra="forbid")


@with_config(_FORBID)
@dataclass
class DataConfig:
    """Where the data comes from and how it is split and processed."""

    path: Str | None = None  # a local file (.npz for CIFAR-10, .parquet for IMDB); else PIELAB_DATA_DIR; else download
    train_size: OptPositiveInt = None  # stratified subset of the training split (after the validation holdout)
    val_fraction: Fraction = 0.1  # seeded, stratified validation holdout taken from the training split
    val_size: OptPositiveInt = None  # absolute validation size; overrides val_fraction
    test_size: OptPositiveInt = None  # stratified subset of the test split (CPU-scale runs)
    split_seed: Seed = 0  # seeds the holdout and subsets: fixed across trials so they all see the same split
    augment: Bool = True  # CIFAR-10: random crop (padding 4) and horizontal flip on the training batches
    max_len: PositiveInt = 300  # IMDB: tokens kept per review (longer ones are truncated)
    vocab_size: PositiveInt = 20000  # IMDB: most frequent training words kept, plus pad and unk
    cache_dir: Str | None = None  # processed-data cache; default $PIELAB_CACHE_DIR or ~/.cache/pielab


@with_config(_FORBID)
@dataclass
class TrainConfig:
    """The optimisation recipe shared by both tasks."""

    epochs: PositiveInt = 20
    batch_size: PositiveInt = 128
    lr: PositiveFloat = 1e-3
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"  # sgd is Nesterov
    momentum: Probability = 0.9  # sgd only
    weight_decay: NonNegativeFloat = 0.0
    schedule: Literal["constant", "cosine", "onecycle"] = "constant"
    label_smoothing: Probability = 0.0
    # max global gradient norm, > 0; null (or absent) = no clipping. 0 or a negative norm is refused:
    # clip_grad_norm_ would zero the step (0) or flip the gradient and train uphill (< 0).
    grad_clip: Annotated[float | None, Strict(), Finite, Field(gt=0)] = None
    seed: Seed = 0  # initialisation, dropout, shuffling, augmentation
    device: Device = "auto"  # auto | cpu | cuda | cuda:N
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    compile: Bool = False  # torch.compile the model
    channels_last: Bool = False  # CIFAR-10 on GPU: NHWC memory format
    threads: OptPositiveInt = None  # torch intra-op threads; None = torch's default
    eval_batch_size: OptPositiveInt = None  # None = 2 x batch_size


@with_config(_FORBID)
@dataclass
class TrackingConfig:
    """Experiment tracking (used by sweeps; ``pielab train`` writes local files only)."""

    wandb: Bool = True
    project: Str = "pielab"
    entity: Str | None = None
    mode: Literal["auto", "online", "offline", "disabled"] = "auto"  # auto: online if an API key is configured


@dataclass
class Config:
    task: str
    model: dict[str, Any]  # {"name": registered model, **builder keyword arguments}
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    # Where a saved or exported config was recorded (pielab.provenance.collect's dict): not part of the
    # config's identity, so it is left out of to_dict, flat and equality; save_config writes it.
    provenance: dict[str, Any] | None = field(default=None, compare=False)

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


# --------------------------------------------------------------------------- overrides


def parse_set(items: list[str] | tuple[str, ...] | None) -> dict[str, Any]:
    """``["train.lr=3e-3", "model.residual=false"]`` -> ``{"train.lr": "3e-3"-as-float, ...}``."""
    out: dict[str, Any] = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, for example --set train.epochs=2")
        out[key] = parse_value(raw) if raw.strip() else None
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


class _Sections(BaseModel):
    """The top level of a config file: ``task`` and ``model`` are checked by hand (they depend on the registry)."""

    model_config = _FORBID

    task: Any = None
    model: Any = None
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    provenance: dict[str, Any] | None = None  # pielab.provenance: accepted, never part of the training config


_SECTIONS_ADAPTER = TypeAdapter(_Sections)
_MODEL_SCHEMAS: dict[str, type[BaseModel]] = {}


def _model_field_type(default: Any) -> Any:
    """The type a builder keyword takes, told by its default (the builder's signature is the schema)."""
    if default is None:
        return Any
    for tp, strict in ((bool, Bool), (int, ModelInt), (float, Float), (str, Str)):
        if type(default) is tp:
            return strict
    if isinstance(default, (list, tuple)):
        return list
    return type(default)


def _model_schema(name: str, defaults: dict[str, Any]) -> type[BaseModel]:
    """A pydantic model of one builder's keywords, built once per model name."""
    if name not in _MODEL_SCHEMAS:
        fields = {k: (_model_field_type(v), None) for k, v in defaults.items()}
        _MODEL_SCHEMAS[name] = create_model(f"model_{name}", __config__=_FORBID, **fields)
    return _MODEL_SCHEMAS[name]


def build_config(
    raw: dict[str, Any],
    *,
    source: str | None = None,
    lines: dict[str, int] | None = None,
    overrides: dict[str, Any] | None = None,
) -> Config:
    """Resolve a raw nested mapping (YAML) plus dotted ``overrides`` into a validated Config.

    ``overrides`` are values as a YAML file holds them (``parse_set`` turns ``--set`` text into such
    values): a string ``"1e-3"`` for a float is reported, as it is in a file.

    ``source``/``lines`` (``load_yaml``'s map, keyed relative to ``raw``) locate problems at their
    file line. Raises one ``ConfigError`` listing every problem found, one ``FILE:LINE: key: message``
    line each.
    """
    from pielab.models import TASKS, model_defaults, model_task

    problems = Problems(source, lines)
    if not isinstance(raw, dict):
        problems.add("", f"a config is a mapping with model, data, train, tracking; got {type(raw).__name__}")
        problems.raise_if_any()
    raw = copy.deepcopy(raw)
    if isinstance(raw.get("model"), str):
        raw["model"] = {"name": raw["model"]}
    for dotted, value in (overrides or {}).items():
        section, _, rest = dotted.partition(".")
        if section == "task" and not rest:
            raw["task"] = value
        elif section in ("model", *SECTIONS) and rest and "." not in rest:
            if raw.get(section) is None:
                raw[section] = {}
            if not isinstance(raw[section], dict):
                problems.add(section, "must be a mapping")
                continue
            raw[section][rest] = value
        else:
            problems.items.append(
                f"--set {dotted}: unknown key; keys look like model.depth, data.train_size, train.lr"
            )
            continue
        problems.set_keys.add(dotted)

    # the model section: its name decides the task and the keywords it takes
    model: dict[str, Any] | None = None
    task = raw.get("task")
    model_raw = raw.get("model")
    if not isinstance(model_raw, dict) or "name" not in model_raw:
        problems.add("model", "needs model.name (see `pielab models`)")
    elif not isinstance(model_raw["name"], str):
        problems.add("model.name", f"expected a model name, got {model_raw['name']!r}")
    else:
        name = model_raw["name"]
        try:
            defaults = model_defaults(name)
        except ConfigError as exc:  # an unknown model: nothing else of the section can be checked
            problems.add("model.name", str(exc))
        else:
            task = task if task is not None else model_task(name)
            if task not in TASKS:
                problems.add("task", f"unknown task {task!r}; tasks: {', '.join(TASKS)}")
            elif task != model_task(name):
                problems.add("task", f"model {name!r} is for task {model_task(name)!r}, not {task!r}")
            model = _check_model_section(name, model_raw, defaults, problems)

    # data, train, tracking (and unknown top-level keys), all in one pass
    sections = {k: v for k, v in raw.items() if not (k in SECTIONS and v is None)}
    for section in SECTIONS:
        given = sections.get(section)
        if given is not None and not isinstance(given, dict):
            continue  # pydantic reports it
        values = dict(TASK_DEFAULTS.get(task, {}).get(section, {})) if isinstance(task, str) else {}
        values.update(given or {})
        sections[section] = values
    try:
        parsed = _SECTIONS_ADAPTER.validate_python(sections)
    except ValidationError as exc:
        problems.add_validation_error(exc, _Sections)
        parsed = None
    if model is not None:
        complaint = model_complaint(model["name"], {k: v for k, v in model.items() if k != "name"})
        if complaint is not None:
            named = [k for k in model if k != "name" and re.search(rf"\b{k}\b", complaint)]
            problems.add(f"model.{named[0]}" if named else "model", complaint)
    problems.raise_if_any()
    assert parsed is not None and model is not None and isinstance(task, str)
    return Config(task=task, model=model, data=parsed.data, train=parsed.train, tracking=parsed.tracking,
                  provenance=parsed.provenance)


def _check_model_section(
    name: str, given: dict[str, Any], defaults: dict[str, Any], problems: Problems
) -> dict[str, Any] | None:
    """The model section with every builder default filled in; problems go to ``problems``."""
    schema = _model_schema(name, defaults)
    values: dict[str, Any] = {}
    before = len(problems.items)
    for key, value in given.items():
        if key == "name":
            continue
        if key not in defaults:
            problems.add(f"model.{key}", f"unknown key for model {name!r}; it takes: {', '.join(sorted(defaults))}")
            continue
        values[key] = value
    try:
        checked = schema.model_validate(values)
    except ValidationError as exc:
        problems.add_validation_error(exc, schema, prefix="model.")
        return None
    if len(problems.items) > before:
        return None
    model: dict[str, Any] = {"name": name}
    model.update({k: getattr(checked, k) for k in values})
    for key, default in defaults.items():
        model.setdefault(key, list(default) if isinstance(default, tuple) else default)
    return model


# (model name, keyword arguments as JSON) -> the builder's complaint, or None when it builds.
_BUILT: dict[str, str | None] = {}


def _shapes_only():
    """A torch function mode that skips ``normal_`` on meta tensors, which hold no values anyway (built here,
    on first use: torch is imported lazily).

    On the meta device ``normal_`` (``nn.Embedding``'s init, ResNets' He init) runs a Python decomposition
    that imports torch._dynamo: about a second of every command that checks a spec, measured with cProfile
    on ``pielab sweep`` (torch 2.14). Every other call goes through unchanged."""
    import torch
    from torch.overrides import TorchFunctionMode

    class ShapesOnly(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in (torch.Tensor.normal_, torch.nn.init.normal_):
                tensor = args[0] if args else kwargs.get("tensor")
                if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                    return tensor
            return func(*args, **kwargs)

    return ShapesOnly()


def model_complaint(name: str, kwargs: dict[str, Any]) -> str | None:
    """Why the builder refuses ``kwargs`` (``unsupported ResNet depth 12``), or None when it builds.

    The model is built on PyTorch's meta device, so an unsupported argument (ResNet depth 12, LSTM
    depth 9) fails here, before any data loads, at no memory or compute cost. Builders raise
    ``ValueError`` for such arguments, which ``get_model`` turns into ``ConfigError``; anything else
    a builder raises on the meta device says nothing about the config (the run checks for real).
    The outcome is remembered per model name and keywords, so a search space validated against a
    base config, and every trial config resolved from it, builds each distinct model once per process.
    """
    key = json.dumps([name, kwargs], sort_keys=True, default=repr)
    if key not in _BUILT:
        import torch

        from pielab.models import get_model

        complaint = None
        try:
            with torch.device("meta"), _shapes_only():
                get_model(name, **kwargs)
        except ConfigError as exc:
            complaint = str(exc).removeprefix(f"model {name!r}: ")
        except Exception:  # noqa: BLE001
            pass
        _BUILT[key] = complaint
    return _BUILT[key]


def switch_model(model: Any, name: Any) -> Any:
    """The model section when a trial searches ``model.name``: the new model's own defaults (``mycnn``
    keeps ``residual: false``, ``res_lstm8`` its ``depth: 8``), plus the keys of the base model section
    that the base set away from its own model's defaults and that the new model takes too (a CPU-scale
    ``--set model.width=8`` shrinks every ResNet of the sweep). Keys the data decides are left out.
    An unknown name (or a base without a model section) is returned for ``build_config`` to report.
    """
    from pielab.models import model_defaults
    from pielab.models.registry import DATA_DERIVED_KWARGS

    if isinstance(model, dict) and model.get("name") == name:
        return model
    if not isinstance(model, dict) or not isinstance(name, str):
        return {"name": name}
    try:
        new = model_defaults(name)
        old = model_defaults(model["name"]) if isinstance(model.get("name"), str) else {}
    except ConfigError:
        return {"name": name}
    kept = {k: copy.deepcopy(v) for k, v in model.items()
            if k != "name" and k in new and k not in DATA_DERIVED_KWARGS and k in old and v != _plain(old[k])}
    return {"name": name, **kept}


def _plain(default: Any) -> Any:
    return list(default) if isinstance(default, tuple) else default


def apply_params(base: Config | dict[str, Any], params: dict[str, Any], *, seed: int | None = None) -> Config:
    """The Config one trial runs: ``base`` < sampled ``{dotted key: value}`` < ``train.seed``.

    A sampled ``model.name`` replaces the base model section by that model's own (see
    :func:`switch_model`); the other sampled ``model.*`` keys then go on top of it.

    Values go in as YAML would (not as ``--set`` text), so a string ``"1e-3"`` for a float is an
    error, not a number. The one rule every sweep trial's config follows (``SweepSpec.trial_config``,
    the trainable, and ``SearchSpace.validate`` for each candidate value).
    """
    raw = base.to_dict() if isinstance(base, Config) else copy.deepcopy(base)
    if "model.name" in params:
        raw["model"] = switch_model(raw.get("model"), params["model.name"])
    for key, value in params.items():
        section, _, name = key.partition(".")
        node = raw.get(section)
        if not isinstance(node, dict):
            node = raw[section] = {}
        node[name] = copy.deepcopy(value)
    if seed is not None:
        raw.setdefault("train", {})["seed"] = seed
    return build_config(raw)


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
    """Write ``config.to_dict()`` as YAML, with its ``provenance`` section last when it has one."""
    raw = config.to_dict()
    if config.provenance is not None:
        raw["provenance"] = config.provenance
    Path(path).write_text(dump_yaml(raw, sort_keys=False))
