"""Sweep specs: one YAML file that says what to search, how, on what, and where results go.

::

    name: quickstart
    base: {model: {name: myresnet34, width: 8}, train: {epochs: 6}}   # what `pielab train` accepts
    space: ../search_spaces/quickstart.yaml     # or inline {parameters: ...}
    search: {algorithm: tpe, seed: 0}
    scheduler: {name: asha, grace_period: 1, reduction_factor: 2}
    metric: val/acc
    mode: max
    num_trials: 16
    max_concurrent: 2
    resources: {cpu: 1, gpu: 0}
    seeds: [0]
    storage: {path: sweep_results, optuna: null}
    tracking: {wandb: true, project: pielab, mode: auto}

``load_spec`` resolves ``base`` with ``pielab.config.build_config`` (the code every trial runs) and
validates the space against it, so a spec that loads cannot launch trials that fail on their
config. ``SweepSpec.to_dict`` inlines the space and the fully resolved base, so the copy saved in a
sweep folder reproduces the sweep without the files it came from (``pielab resume``).
"""

from __future__ import annotations

import copy
import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pielab.config import Config, TrackingConfig, build_config, coerce, load_yaml, parse_set
from pielab.errors import ConfigError
from pielab.sweep.space import SearchSpace, load_space
from pielab.sweep.folder import mask_password, strip_password

ALGORITHMS = ("tpe", "random", "grid", "cmaes")
SCHEDULERS = ("asha", "fifo")
# The per-epoch metrics that `pielab.train.fit` reports and a scheduler can act on.
METRICS = ("val/acc", "val/loss", "train/acc", "train/loss")
MODES = ("max", "min")

_REPO_ROOT = Path(__file__).resolve().parents[2]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


@dataclass
class SearchConfig:
    """Which Optuna sampler proposes configurations; options left null keep the sampler's defaults."""

    algorithm: str = "tpe"  # tpe | random | grid | cmaes (cmaes needs the `cmaes` package)
    seed: int | None = 0  # sampler seed: the same seed proposes the same configurations
    n_startup_trials: int | None = None  # tpe/cmaes: random trials before modelling (Optuna's default 10 / 1)
    multivariate: bool | None = None  # tpe: model the parameters jointly
    group: bool | None = None  # tpe with multivariate: joint models per set of co-occurring (conditional) params
    constant_liar: bool | None = None  # tpe: count running trials as bad guesses, so parallel trials spread out

    def sampler_options(self) -> dict[str, Any]:
        """Keyword arguments for the Optuna sampler's constructor (the options that were given)."""
        return {k: getattr(self, k) for k in _SAMPLER_OPTIONS["tpe"] if getattr(self, k) is not None}


# Which sampler takes which option (the others would be a TypeError in the sampler's constructor).
_SAMPLER_OPTIONS: dict[str, tuple[str, ...]] = {
    "tpe": ("n_startup_trials", "multivariate", "group", "constant_liar"),
    "cmaes": ("n_startup_trials",),
    "random": (),
    "grid": (),
}


@dataclass
class SchedulerConfig:
    """Which Tune scheduler stops trials early."""

    name: str = "asha"  # asha | fifo (no early stopping)
    grace_period: int = 1  # asha: epochs every trial runs before it can be stopped
    reduction_factor: float = 2  # asha: keep the top 1/reduction_factor at each rung
    max_t: int | None = None  # asha: the last rung, in epochs; resolved to base train.epochs


@dataclass
class Resources:
    """What one trial reserves: Tune packs trials onto nodes by these numbers."""

    cpu: float = 1
    gpu: float = 0  # a fraction (0.25) packs several trials on one GPU; above 1, whole GPUs only


@dataclass
class StorageConfig:
    """Where results go."""

    path: str = "sweep_results"  # the parent folder of sweep folders (relative to the working directory)
    optuna: str | None = None  # None: SQLite optuna.db inside the sweep folder; else an RDB URL


_SUBSECTIONS: dict[str, type] = {
    "search": SearchConfig,
    "scheduler": SchedulerConfig,
    "resources": Resources,
    "storage": StorageConfig,
    "tracking": TrackingConfig,
}
_SCALARS = (
    "name", "description", "metric", "mode", "num_trials", "max_concurrent", "time_budget_s", "seeds",
    "max_failures",
)
TOP_KEYS = ("name", "description", "base", "space", *_SUBSECTIONS, *_SCALARS[2:])
_ASHA_ONLY = ("grace_period", "reduction_factor", "max_t")
DEFAULT_NUM_TRIALS = 16


@dataclass
class SweepSpec:
    """A resolved, validated sweep. ``base`` is a full Config; ``space`` is checked against it.

    ``num_trials`` counts Tune trials, seed repeats included: with ``seeds: [0, 1]`` and
    ``num_trials: 16`` the searcher proposes 8 configurations and each runs with both seeds.
    ``tracking`` is also written into ``base.tracking`` so every trial's resolved config records it.
    """

    name: str
    base: Config
    space: SearchSpace
    search: SearchConfig = field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    metric: str = "val/acc"
    mode: str = "max"
    num_trials: int = DEFAULT_NUM_TRIALS
    max_concurrent: int = 1
    resources: Resources = field(default_factory=Resources)
    time_budget_s: float | None = None
    seeds: list[int] = field(default_factory=lambda: [0])
    max_failures: int = 2
    storage: StorageConfig = field(default_factory=StorageConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    description: str | None = None
    source_path: str | None = field(default=None, compare=False)

    @property
    def max_t(self) -> int:
        """ASHA's last rung in epochs (the scheduler's ``max_t``, else the base config's epochs)."""
        return self.scheduler.max_t or self.base.train.epochs

    @property
    def num_configs(self) -> int:
        """Configurations the searcher proposes: ``num_trials`` split across the seed repeats (rounded up)."""
        return -(-self.num_trials // len(self.seeds))

    def trial_config(self, params: dict[str, Any], seed: int | None = None) -> Config:
        """The Config one trial runs: base < sampled ``{dotted key: value}`` < ``train.seed``."""
        raw = self.base.to_dict()
        for key, value in params.items():
            section, _, name = key.partition(".")
            raw[section][name] = copy.deepcopy(value)
        if seed is not None:
            raw["train"]["seed"] = seed
        return build_config(raw)

    # ------------------------------------------------------------------ round trip

    def to_dict(self) -> dict[str, Any]:
        """Self-contained YAML form: the space inlined, the base fully resolved; ``from_dict`` reads it back."""
        scheduler = dataclasses.asdict(self.scheduler)
        if self.scheduler.name == "fifo":
            scheduler = {"name": "fifo"}
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out.update(
            base=self.base.to_dict(),
            space=self.space.to_dict(),
            search={"algorithm": self.search.algorithm, "seed": self.search.seed, **self.search.sampler_options()},
            scheduler=scheduler,
            metric=self.metric,
            mode=self.mode,
            num_trials=self.num_trials,
            max_concurrent=self.max_concurrent,
            resources=dataclasses.asdict(self.resources),
            time_budget_s=self.time_budget_s,
            seeds=list(self.seeds),
            max_failures=self.max_failures,
            # never a database password in sweep.yaml: resume connects with PGPASSWORD or ~/.pgpass
            storage={**dataclasses.asdict(self.storage), "optuna": strip_password(self.storage.optuna)},
            tracking=dataclasses.asdict(self.tracking),
        )
        return out

    def save(self, path: str | Path) -> None:
        """Write ``to_dict()`` as YAML (the runner's ``sweep.yaml``)."""
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))

    def describe(self) -> str:
        """A few lines for the terminal before a sweep starts."""
        sched = (
            f"asha (grace {self.scheduler.grace_period}, factor {self.scheduler.reduction_factor:g}, max_t {self.max_t})"
            if self.scheduler.name == "asha" else "fifo"
        )
        gpu = f", {self.resources.gpu:g} gpu" if self.resources.gpu else ""
        lines = [
            f"sweep {self.name}: {self.base.model_name} on {self.base.task}, {self.metric} ({self.mode})",
            f"  {self.num_trials} trials ({self.num_configs} configs x seeds {self.seeds}), "
            f"{self.max_concurrent} at a time, {self.resources.cpu:g} cpu{gpu} each",
            f"  search {self.search.algorithm} (seed {self.search.seed}), scheduler {sched}"
            + (f", budget {self.time_budget_s:g} s" if self.time_budget_s else ""),
            *self.space.describe().splitlines(),
        ]
        return "\n".join(lines)

    @classmethod
    def from_dict(
        cls,
        d: Any,
        *,
        source: str | None = None,
        lines: dict[str, int] | None = None,
        overrides: dict[str, Any] | list[str] | None = None,
        base_dir: str | Path | None = None,
    ) -> "SweepSpec":
        """Validate a raw mapping (YAML) plus ``--set`` overrides into a SweepSpec.

        ``base_dir`` is where a relative ``space:`` path is looked up first (the spec file's folder).
        Every problem found is reported, one line each, in a single ConfigError.
        """
        return _Builder(d, source, lines, overrides, base_dir).build()


def load_spec(path: str | Path, overrides: dict[str, Any] | list[str] | None = None) -> SweepSpec:
    """Read, resolve and validate a sweep spec file, then apply ``--set`` overrides (strings or a dict)."""
    data, lines = load_yaml(path)
    return SweepSpec.from_dict(data, source=str(path), lines=lines, overrides=overrides, base_dir=Path(path).parent)


# --------------------------------------------------------------------------- building


class _Builder:
    """Collects every problem of one spec, each located at its file line or its ``--set``."""

    def __init__(self, d: Any, source: str | None, lines: dict[str, int] | None,
                 overrides: dict[str, Any] | list[str] | None, base_dir: str | Path | None) -> None:
        if not isinstance(d, dict):
            raise ConfigError(f"{source or 'sweep spec'}: expected a mapping, got {type(d).__name__}")
        self.raw = copy.deepcopy(d)
        self.source = source
        self.lines = dict(lines or {})
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.problems: list[str] = []
        self.set_keys: set[str] = set()
        self.base_overrides: dict[str, Any] = {}
        if isinstance(overrides, (list, tuple)):
            overrides = parse_set(overrides)
        for key, value in (overrides or {}).items():
            self._override(key, value)

    # ------------------------------------------------------------------ locating problems

    def where(self, key: str) -> str:
        if key in self.set_keys:
            return f"--set {key}"
        if self.source is None:
            return key
        line = self.lines.get(key)
        return f"{self.source}:{line}: {key}" if line else f"{self.source}: {key}"

    def _override(self, key: str, value: Any) -> None:
        """Route one dotted ``--set`` key: ``base.*`` (or the shorthand model/data/train/task) or the spec."""
        head, _, rest = key.partition(".")
        if head == "base" and rest:
            self.base_overrides[rest] = value
        elif head in ("task", "model", "data", "train", "tracking") and (rest or head == "task"):
            # tracking.* is the sweep's tracking, which is the base config's tracking section
            self.base_overrides[key] = value
        elif head in _SUBSECTIONS and rest and "." not in rest:
            section = self.raw.get(head)
            if section is None:
                section = self.raw[head] = {}
            if not isinstance(section, dict):
                raise ConfigError(f"--set {key}: {head} is not a mapping in {self.source or 'the spec'}")
            section[rest] = value
            self.set_keys.add(key)
        elif key in _SCALARS or key == "space":
            self.raw[key] = value
            self.set_keys.add(key)
        else:
            raise ConfigError(
                f"--set {key}: unknown key; sweep keys: {', '.join(TOP_KEYS)}, their fields "
                "(scheduler.grace_period), or base.<section>.<key> (train.epochs is short for base.train.epochs)"
            )

    # ------------------------------------------------------------------ the parts

    def build(self) -> SweepSpec:
        raw = self.raw
        for key in raw:
            if key not in TOP_KEYS:
                self.problems.append(f"{self.where(str(key))}: unknown key; a sweep spec takes: {', '.join(TOP_KEYS)}")
        sections = {name: self._section(name, cls) for name, cls in _SUBSECTIONS.items() if name != "tracking"}
        base = self._base()  # raises: nothing else can be checked without it
        space = self._space(base)
        search, scheduler, resources, storage = (sections[k] for k in ("search", "scheduler", "resources", "storage"))

        name = self._scalar("name", str, self._default_name())
        description = self._scalar("description", str | None, None)
        metric = self._scalar("metric", str, "val/acc")
        mode = self._scalar("mode", str | None, None)
        num_trials = self._scalar("num_trials", int | None, None)
        max_concurrent = self._scalar("max_concurrent", int, 1)
        time_budget_s = self._scalar("time_budget_s", float | None, None)
        seeds = self._seeds()
        max_failures = self._scalar("max_failures", int, 2)

        if isinstance(name, str) and not _NAME_RE.match(name):
            self.problems.append(f"{self.where('name')}: {name!r}: use letters, digits, '_', '-' and '.' (it names the sweep folder)")
        if metric is not None and metric not in METRICS:
            self.problems.append(f"{self.where('metric')}: unknown metric {metric!r}; metrics: {', '.join(METRICS)}")
        goal = "max" if str(metric).endswith("acc") else "min"
        if mode is None:
            mode = goal
        elif mode not in MODES:
            self.problems.append(f"{self.where('mode')}: {mode!r} is not max or min")
        elif metric in METRICS and mode != goal:
            self.problems.append(f"{self.where('mode')}: {mode} would select the worst {metric}; use mode: {goal}")
        if max_concurrent is not None and max_concurrent < 1:
            self.problems.append(f"{self.where('max_concurrent')}: must be at least 1, got {max_concurrent}")
        if num_trials is not None and num_trials < 1:
            self.problems.append(f"{self.where('num_trials')}: must be at least 1, got {num_trials}")
        if time_budget_s is not None and time_budget_s <= 0:
            self.problems.append(f"{self.where('time_budget_s')}: must be positive seconds or null, got {time_budget_s:g}")
        if max_failures is not None and max_failures < -1:
            self.problems.append(f"{self.where('max_failures')}: must be >= 0 (or -1 for unlimited), got {max_failures}")
        if space is not None and "train.seed" in space.keys:
            self.problems.append(
                f"{self.where('space')}: train.seed is searched by the space; repeats go in seeds: [0, 1, ...] instead"
            )

        self._check_search(search)
        self._check_scheduler(scheduler, base)
        self._check_resources(resources)
        self._check_storage(storage)

        if search is not None and search.algorithm == "grid" and space is not None:
            try:
                size = space.grid_size()
            except ConfigError as exc:
                for problem in str(exc).splitlines():
                    self.problems.append(f"{self.where('search.algorithm')}: grid: {problem}")
            else:
                if num_trials is None and seeds:
                    num_trials = size * len(seeds)
        if num_trials is None:
            num_trials = DEFAULT_NUM_TRIALS
        if scheduler.name == "asha" and scheduler.max_t is None:
            scheduler.max_t = base.train.epochs  # resolved now, so the saved sweep.yaml keeps it

        if self.problems:
            err = ConfigError("\n".join(self.problems))
            err.problems = list(self.problems)  # type: ignore[attr-defined]
            raise err
        assert space is not None
        return SweepSpec(
            name=name, base=base, space=space, search=search, scheduler=scheduler, metric=metric, mode=mode,
            num_trials=num_trials, max_concurrent=max_concurrent, resources=resources, time_budget_s=time_budget_s,
            seeds=seeds, max_failures=max_failures, storage=storage, tracking=base.tracking,
            description=description, source_path=self.source,
        )

    def _default_name(self) -> str:
        return Path(self.source).stem if self.source else "sweep"

    def _scalar(self, key: str, tp: Any, default: Any) -> Any:
        if key not in self.raw:
            return default
        try:
            return coerce(self.raw[key], tp, self.where(key), from_string=key in self.set_keys)
        except ConfigError as exc:
            self.problems.append(str(exc))
            return None

    def _seeds(self) -> list[int]:
        seeds = self.raw.get("seeds", [0])
        if isinstance(seeds, int) and not isinstance(seeds, bool):
            seeds = [seeds]
        if (not isinstance(seeds, list) or not seeds
                or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds)):
            self.problems.append(f"{self.where('seeds')}: expected a non-empty list of integers such as [0, 1, 2], got {seeds!r}")
            return [0]
        if len(set(seeds)) != len(seeds):
            self.problems.append(f"{self.where('seeds')}: repeated seed in {seeds} (each repeat needs its own seed)")
        return list(seeds)

    def _section(self, name: str, cls: type) -> Any:
        """A sub-mapping checked field by field against its dataclass (unknown keys, types)."""
        given = self.raw.get(name)
        if given is None:
            return cls()
        if not isinstance(given, dict):
            self.problems.append(f"{self.where(name)}: must be a mapping, got {type(given).__name__} {given!r}")
            return cls()
        hints = typing.get_type_hints(cls)
        values: dict[str, Any] = {}
        for key, value in given.items():
            dotted = f"{name}.{key}"
            if key not in hints:
                self.problems.append(f"{self.where(dotted)}: unknown key; {name} takes: {', '.join(hints)}")
                continue
            try:
                values[key] = coerce(value, hints[key], self.where(dotted), from_string=dotted in self.set_keys)
            except ConfigError as exc:
                self.problems.append(str(exc))
        if name == "scheduler" and given.get("name", "asha") == "fifo":
            for key in _ASHA_ONLY:
                if key in given:
                    self.problems.append(f"{self.where(f'scheduler.{key}')}: fifo runs every trial to the end; {key} is for asha")
        return cls(**values)

    def _base(self) -> Config:
        """Resolve ``base`` with build_config; the top-level ``tracking`` is merged into its tracking section."""
        given = self.raw.get("base")
        base_source, base_lines = self.source, {k[5:]: v for k, v in self.lines.items() if k.startswith("base.")}
        if isinstance(given, str):
            if given.endswith((".yaml", ".yml")):
                path = self._find(given)
                if path is None:
                    raise self._fail(f"{self.where('base')}: no such config file {given!r}")
                given, base_lines = load_yaml(path)
                base_source = str(path)
            else:
                given = {"model": {"name": given}}
        if not isinstance(given, dict):
            raise self._fail(
                f"{self.where('base')}: needs a config mapping like `pielab train` takes, "
                "such as base: {model: {name: myresnet34}, train: {epochs: 6}}"
            )
        raw = copy.deepcopy(given)
        top_tracking = self.raw.get("tracking")
        if isinstance(top_tracking, dict):
            merged = dict(raw.get("tracking") or {}) if isinstance(raw.get("tracking"), dict) else {}
            merged.update(top_tracking)
            raw["tracking"] = merged
            for key in top_tracking:
                if f"tracking.{key}" in self.lines:
                    base_lines[f"tracking.{key}"] = self.lines[f"tracking.{key}"]
        elif top_tracking is not None:
            raise self._fail(f"{self.where('tracking')}: must be a mapping such as {{wandb: true, mode: offline}}")
        try:
            return build_config(raw, source=base_source, lines=base_lines, overrides=self.base_overrides)
        except ConfigError as exc:
            raise self._fail(self._locate(str(exc), base_source, base_lines)) from None

    def _locate(self, msg: str, source: str | None, lines: dict[str, int]) -> str:
        """Give build_config's semantic errors (``train.lr: must be positive``) their line or ``--set``."""
        key = msg.split(":", 1)[0].split(" ", 1)[0]
        if key in self.base_overrides:
            return f"--set {msg}"
        if source and not msg.startswith(source) and key in lines:
            return f"{source}:{lines[key]}: {msg}"
        return msg

    def _fail(self, message: str) -> ConfigError:
        problems = [*self.problems, message]
        err = ConfigError("\n".join(problems))
        err.problems = problems  # type: ignore[attr-defined]
        return err

    def _find(self, rel: str) -> Path | None:
        """A relative path: next to the spec first, then the working directory, then the repository."""
        path = Path(rel).expanduser()
        if path.is_absolute():
            return path if path.is_file() else None
        for root in (self.base_dir, None, _REPO_ROOT):
            candidate = path if root is None else root / path  # None: the working directory, shown as given
            if candidate.is_file():
                return candidate
        return None

    def _space(self, base: Config) -> SearchSpace | None:
        given = self.raw.get("space")
        try:
            if isinstance(given, str):
                path = self._find(given)
                if path is None:
                    roots = (self.base_dir, Path.cwd(), _REPO_ROOT)
                    looked = ", ".join(dict.fromkeys(str(p.resolve()) for p in roots if p is not None))
                    self.problems.append(f"{self.where('space')}: no such search space file {given!r} (looked in {looked})")
                    return None
                space = load_space(path)
            elif isinstance(given, dict):
                lines = {k[6:]: v for k, v in self.lines.items() if k.startswith("space.")}
                where_lines = lines if "space" not in self.set_keys else {}
                space = SearchSpace.from_dict(given, source=self.source, lines=where_lines)
            else:
                self.problems.append(
                    f"{self.where('space')}: needs a search space file path or an inline {{parameters: ...}} mapping"
                )
                return None
            space.validate(base)
            return space
        except ConfigError as exc:
            self.problems.extend(str(exc).splitlines())
            return None

    # ------------------------------------------------------------------ semantic checks

    def _check_search(self, search: SearchConfig) -> None:
        if search.algorithm not in ALGORITHMS:
            self.problems.append(f"{self.where('search.algorithm')}: unknown algorithm {search.algorithm!r}; algorithms: {', '.join(ALGORITHMS)}")
            return
        takes = _SAMPLER_OPTIONS[search.algorithm]
        for key in search.sampler_options():
            if key not in takes:
                users = " and ".join(a for a, opts in _SAMPLER_OPTIONS.items() if key in opts)
                self.problems.append(f"{self.where(f'search.{key}')}: applies to {users} only, not {search.algorithm}")
        if search.n_startup_trials is not None and search.n_startup_trials < 0:
            self.problems.append(f"{self.where('search.n_startup_trials')}: must be >= 0, got {search.n_startup_trials}")
        if search.group and not search.multivariate:
            self.problems.append(f"{self.where('search.group')}: group needs multivariate: true")

    def _check_scheduler(self, scheduler: SchedulerConfig, base: Config) -> None:
        if scheduler.name not in SCHEDULERS:
            self.problems.append(f"{self.where('scheduler.name')}: unknown scheduler {scheduler.name!r}; schedulers: {', '.join(SCHEDULERS)}")
            return
        if scheduler.name != "asha":
            return
        max_t = scheduler.max_t if scheduler.max_t is not None else base.train.epochs
        if scheduler.max_t is not None and scheduler.max_t < 1:
            self.problems.append(f"{self.where('scheduler.max_t')}: must be at least 1 epoch, got {scheduler.max_t}")
        if scheduler.grace_period < 1:
            self.problems.append(f"{self.where('scheduler.grace_period')}: must be at least 1 epoch, got {scheduler.grace_period}")
        elif scheduler.grace_period > max_t:
            what = "scheduler.max_t" if scheduler.max_t is not None else "base train.epochs"
            self.problems.append(
                f"{self.where('scheduler.grace_period')}: {scheduler.grace_period} is more than max_t {max_t} ({what}); "
                "no trial could ever be stopped"
            )
        if scheduler.reduction_factor < 2:
            self.problems.append(f"{self.where('scheduler.reduction_factor')}: must be at least 2, got {scheduler.reduction_factor:g}")

    def _check_resources(self, resources: Resources) -> None:
        for key in ("cpu", "gpu"):
            value = getattr(resources, key)
            if value < 0:
                self.problems.append(f"{self.where(f'resources.{key}')}: must be >= 0, got {value:g}")
        if resources.gpu > 1 and resources.gpu != int(resources.gpu):
            self.problems.append(
                f"{self.where('resources.gpu')}: {resources.gpu:g}: a trial takes a fraction of one GPU or whole GPUs, not both"
            )

    def _check_storage(self, storage: StorageConfig) -> None:
        if not storage.path:
            self.problems.append(f"{self.where('storage.path')}: must be a folder path")
        if storage.optuna is not None and not _URL_RE.match(storage.optuna):
            self.problems.append(
                f"{self.where('storage.optuna')}: {mask_password(storage.optuna)!r} is not an RDB URL "
                "(sqlite:////abs/path.db, postgresql://user@host/db); null keeps optuna.db in the sweep folder"
            )

