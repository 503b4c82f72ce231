"""Sweep specs: one YAML file that says what to search, how, on what, and where results go.

::

    name: quickstart
    base: {model: {name: myresnet34, width: 8}, train: {epochs: 6}}   # what `pielab train` accepts
    space: ../search_spaces/quickstart.yaml     # or inline {parameters: ...}
    search: {algorithm: tpe, seed: 0}
    scheduler: {name: asha, grace_period: 1, reduction_factor: 2}
    metric: val/acc
    mode: max
    # or, instead of metric/mode, several objectives (a multi-objective study; see below):
    # objectives: [{metric: val/acc, mode: max}, {metric: params, mode: min}]
    num_trials: 16
    max_concurrent: 2
    resources: {cpu: 1, gpu: 0}
    seeds: [0]
    storage: {path: sweep_results, optuna: null}
    tracking: {wandb: true, project: pielab, mode: auto}
    budget: {cpu_hours: null, gpu_hours: null}  # stop once the trials used this much (like time_budget_s)

``load_spec`` resolves ``base`` with ``pielab.config.build_config`` (the code every trial runs) and
validates the space against it, so a spec that loads cannot launch trials that fail on their
config. ``SweepSpec.to_dict`` inlines the space and the fully resolved base, so the copy saved in a
sweep folder reproduces the sweep without the files it came from (``pielab resume``).

**Several objectives.** ``objectives`` lists two or more ``{metric, mode}`` pairs (any of
:data:`OBJECTIVE_METRICS`; ``params`` is short for ``model/params``, the model's parameter count;
``mode`` defaults as for ``metric``). Optuna then runs a multi-objective study (``directions=[...]``;
``search.algorithm`` defaults to ``nsga2``, and ``tpe``, ``random`` and ``grid`` also take several
objectives, ``cmaes`` does not). The *first* objective is the sweep's ``metric``/``mode``: ASHA stops
trials on it, and the folder's ranking and best trial use it; the Pareto front over all of them is
:func:`pielab.sweep.folder.pareto_records`. A spec gives either ``metric``/``mode`` or
``objectives``, never both (one error, so no spec reads two ways); ``objectives`` with one entry is the
same as ``metric``/``mode``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter, ValidationError, with_config

from pielab.config import (
    Bool, Config, Int, NonNegativeFloat, Str, TrackingConfig, apply_params, build_config, load_yaml, parse_set,
)
from pielab.errors import ConfigError
from pielab.text import fmt_value
from pielab.yamlfile import Problems, dump_yaml
from pielab.sweep.space import SearchSpace, load_space
from pielab.sweep.folder import METRIC_KEYS, PARAMS_KEY, mask_password, strip_password

ALGORITHMS = ("tpe", "random", "grid", "cmaes", "gp", "nsga2")
# The samplers that take several objectives (Optuna's multi-objective samplers; GPSampler too in Optuna 5).
MULTI_OBJECTIVE_ALGORITHMS = ("nsga2", "tpe", "random", "grid", "gp")
SCHEDULERS = ("asha", "hyperband", "fifo")
# The per-epoch metrics that `pielab.train.fit` reports and a scheduler can act on.
METRICS = ("val/acc", "val/loss", "train/acc", "train/loss")
MODES = ("max", "min")
# What an objective may be: a per-epoch metric above, or what every epoch also reports about the trial.
OBJECTIVE_METRICS = (*METRICS, "model/params", "time/epoch_s")
OBJECTIVE_ALIASES = {"params": "model/params"}

_REPO_ROOT = Path(__file__).resolve().parents[2]
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


_FORBID = ConfigDict(extra="forbid")

# Samplers that take Optuna's ``constraints_func`` (outcome constraints).
CONSTRAINED_ALGORITHMS = ("tpe", "gp", "nsga2")
# What a constraint may bound: every number a trial reports (its last report's value), ``params``
# short for ``model/params``.
CONSTRAINT_METRICS = (*METRIC_KEYS[1:], PARAMS_KEY)
_CONSTRAINT_RE = re.compile(r"^\s*(\S+?)\s*(<=|>=)\s*(\S+)\s*$")


@dataclass(frozen=True)
class Constraint:
    """An outcome constraint ``metric <= bound`` (or ``>=``): a trial whose last reported ``metric``
    breaks it is infeasible. Optuna's convention: :meth:`violation` <= 0 means satisfied."""

    metric: str
    op: str
    bound: float

    def violation(self, value: float | None) -> float:
        """How far ``value`` is past the bound (<= 0: satisfied). A trial that never reported the
        metric is infeasible, by ``|bound| + 1`` (finite: GP fits a model to these numbers)."""
        if value is None:
            return abs(self.bound) + 1.0
        return float(value) - self.bound if self.op == "<=" else self.bound - float(value)

    def __str__(self) -> str:
        return f"{self.metric} {self.op} {self.bound:g}"


def parse_constraint(text: Any) -> Constraint:
    """``"model/params <= 2e6"`` -> :class:`Constraint`; ValueError (one line) when it is not one."""
    m = _CONSTRAINT_RE.match(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r}: write METRIC <= NUMBER or METRIC >= NUMBER, such as 'model/params <= 2e6'")
    metric, op, bound = m.groups()
    metric = PARAMS_KEY if metric == "params" else metric
    if metric not in CONSTRAINT_METRICS:
        raise ValueError(f"{metric!r} is not a metric trials report; one of: params, {', '.join(CONSTRAINT_METRICS)}")
    try:
        number = float(bound)
    except ValueError:
        raise ValueError(f"{bound!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{bound!r} is not a finite number")
    return Constraint(metric, op, number)


@with_config(_FORBID)
@dataclass
class SearchConfig:
    """Which Optuna sampler proposes configurations; options left null keep the sampler's defaults."""

    algorithm: Literal[ALGORITHMS] = "tpe"  # cmaes needs the `cmaes` package
    seed: Int | None = 0  # sampler seed: the same seed proposes the same configurations
    # tpe/cmaes: random trials before modelling (Optuna's default 10 / 1)
    n_startup_trials: Annotated[int | None, Strict(), Field(ge=0)] = None
    multivariate: Bool | None = None  # tpe: model the parameters jointly
    group: Bool | None = None  # tpe with multivariate: joint models per set of co-occurring (conditional) params
    constant_liar: Bool | None = None  # tpe: count running trials as bad guesses, so parallel trials spread out
    # nsga2: trials per generation (Optuna's default 50; a small sweep needs a small one to evolve at all)
    population_size: Annotated[int | None, Strict(), Field(ge=2)] = None

    def sampler_options(self) -> dict[str, Any]:
        """Keyword arguments for the Optuna sampler's constructor (the options that were given)."""
        keys = dict.fromkeys(k for opts in _SAMPLER_OPTIONS.values() for k in opts)
        return {k: getattr(self, k) for k in keys if getattr(self, k) is not None}


# Which sampler takes which option (the others would be a TypeError in the sampler's constructor).
_SAMPLER_OPTIONS: dict[str, tuple[str, ...]] = {
    "tpe": ("n_startup_trials", "multivariate", "group", "constant_liar"),
    "cmaes": ("n_startup_trials",),
    "gp": ("n_startup_trials",),
    "random": (),
    "grid": (),
    "nsga2": ("population_size",),
}


@with_config(_FORBID)
@dataclass
class SchedulerConfig:
    """Which Tune scheduler stops trials early."""

    # asha: asynchronous successive halving; hyperband: asynchronous Hyperband (ASHA over several
    # brackets, each with its own grace period); fifo: no early stopping
    name: Literal[SCHEDULERS] = "asha"
    grace_period: Annotated[int, Strict(), Field(ge=1)] = 1  # asha: epochs every trial runs before it can be stopped
    reduction_factor: Annotated[float, Strict(), Field(ge=2)] = 2  # asha: keep the top 1/reduction_factor at each rung
    max_t: Annotated[int | None, Strict(), Field(ge=1)] = None  # asha: the last rung, in epochs; default base train.epochs
    # asha/hyperband: Hyperband brackets (bracket k starts at grace_period * reduction_factor**k);
    # asha defaults to 1, hyperband to every bracket that fits below max_t
    brackets: Annotated[int | None, Strict(), Field(ge=1)] = None


@with_config(_FORBID)
@dataclass
class Resources:
    """What one trial reserves: Tune packs trials onto nodes by these numbers."""

    cpu: NonNegativeFloat = 1
    gpu: NonNegativeFloat = 0  # a fraction (0.25) packs several trials on one GPU; above 1, whole GPUs only


@with_config(_FORBID)
@dataclass
class StorageConfig:
    """Where results go."""

    # the parent folder of sweep folders: a local or NFS path (relative to the working directory), or
    # object storage, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX (pielab.sweep.storage)
    path: Annotated[str, Strict(), Field(min_length=1)] = "sweep_results"
    optuna: Str | None = None  # None: SQLite optuna.db inside the sweep folder; else an RDB URL
    # an S3-compatible server for s3:// paths (http://127.0.0.1:9000); None: $AWS_ENDPOINT_URL, else AWS
    endpoint: Str | None = None


@with_config(_FORBID)
@dataclass
class ReferenceResult:
    """One system's published result, shown beside pielab's in the report (``reference:`` in a spec)."""

    val_acc: Annotated[float, Strict(), Field(ge=0, le=1)]  # accuracy as a fraction (0.8442)
    best_val_acc: Annotated[float | None, Strict(), Field(ge=0, le=1)] = None  # its best epoch's, when stated
    epochs: Annotated[int | None, Strict(), Field(ge=1)] = None
    time_s: Annotated[float | None, Strict(), Field(ge=0)] = None  # training time in seconds
    hardware: Str | None = None  # where it was measured (RTX 3090)


@with_config(_FORBID)
@dataclass
class BudgetConfig:
    """Resource budgets: the sweep stops as with ``time_budget_s`` (running trials at their next epoch
    boundary, no new trials; exit 0, "budget reached") once its trials have used this much. Usage is
    each trial's ``resources`` times the wall time it held them (:mod:`pielab.sweep.folder`), summed over
    the sweep's trials, every run and resume together."""

    cpu_hours: Annotated[float | None, Strict(), Field(gt=0)] = None
    gpu_hours: Annotated[float | None, Strict(), Field(gt=0)] = None


@with_config(_FORBID)
@dataclass
class Objective:
    """One objective of a multi-objective sweep: a metric every epoch reports, and its direction."""

    metric: Annotated[str, Strict(), Field(min_length=1)]
    mode: Literal[MODES] | None = None  # default: max for accuracies, min for the rest


_SUBSECTIONS: dict[str, type] = {
    "search": SearchConfig,
    "scheduler": SchedulerConfig,
    "resources": Resources,
    "storage": StorageConfig,
    "tracking": TrackingConfig,
    "budget": BudgetConfig,
}
_SCALARS = (
    "name", "description", "metric", "mode", "num_trials", "max_concurrent", "time_budget_s", "seeds",
    "max_failures", "objectives", "enqueue", "constraints",
)
TOP_KEYS = ("name", "description", "base", "space", *_SUBSECTIONS, *_SCALARS[2:], "reference")
_ASHA_ONLY = ("grace_period", "reduction_factor", "max_t", "brackets")
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
    # model name -> its published result (the report's own numbers), shown by `pielab report` in a column
    reference: dict[str, ReferenceResult] | None = None
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    # baselines: configurations ({dotted key: value}) that run first, in this order, each with every seed
    enqueue: list[dict[str, Any]] = field(default_factory=list)
    constraints: list[Constraint] = field(default_factory=list)
    source_path: str | None = field(default=None, compare=False)
    # Two or more (metric, mode) pairs for a multi-objective sweep, the first equal to (metric, mode);
    # empty for a single-objective sweep.
    objectives: list[tuple[str, str]] = field(default_factory=list)

    @property
    def multi_objective(self) -> bool:
        return len(self.objectives) > 1

    @property
    def objective_metrics(self) -> list[str]:
        """The metrics the study optimises: every objective's, or ``[metric]``."""
        return [m for m, _ in self.objectives] if self.multi_objective else [self.metric]

    @property
    def objective_modes(self) -> list[str]:
        return [m for _, m in self.objectives] if self.multi_objective else [self.mode]

    @property
    def max_t(self) -> int:
        """ASHA's last rung in epochs (the scheduler's ``max_t``, else the base config's epochs)."""
        return self.scheduler.max_t or self.base.train.epochs

    @property
    def num_configs(self) -> int:
        """Configurations the searcher proposes: ``num_trials`` split across the seed repeats (rounded up)."""
        return -(-self.num_trials // len(self.seeds))

    def trial_config(self, params: dict[str, Any], seed: int | None = None) -> Config:
        """The Config one trial runs: base < sampled ``{dotted key: value}`` < ``train.seed`` (``apply_params``)."""
        return apply_params(self.base, params, seed=seed)

    # ------------------------------------------------------------------ round trip

    def to_dict(self) -> dict[str, Any]:
        """Self-contained YAML form: the space inlined, the base fully resolved; ``from_dict`` reads it back."""
        scheduler = dataclasses.asdict(self.scheduler)
        if self.scheduler.name == "fifo":
            scheduler = {"name": "fifo"}
        elif scheduler.get("brackets") is None:
            scheduler.pop("brackets", None)  # asha's default: sweep.yaml as it was before brackets existed
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        out.update(
            base=self.base.to_dict(),
            space=self.space.to_dict(),
            search={"algorithm": self.search.algorithm, "seed": self.search.seed, **self.search.sampler_options()},
            scheduler=scheduler,
            **({"objectives": [{"metric": m, "mode": d} for m, d in self.objectives]} if self.multi_objective
               else {"metric": self.metric, "mode": self.mode}),
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
        if self.reference:
            out["reference"] = {name: {k: v for k, v in dataclasses.asdict(r).items() if v is not None}
                                for name, r in self.reference.items()}
        if self.budget != BudgetConfig():  # absent when unset: folders from before it read the same
            out["budget"] = dataclasses.asdict(self.budget)
        if self.enqueue:  # only when given: the sweeps started before these keys existed compare unchanged
            out["enqueue"] = copy.deepcopy(self.enqueue)
        if self.constraints:
            out["constraints"] = [str(c) for c in self.constraints]
        return out

    def save(self, path: str | Path) -> None:
        """Write ``to_dict()`` as YAML (the runner's ``sweep.yaml``)."""
        Path(path).write_text(dump_yaml(self.to_dict(), sort_keys=False))

    def describe(self) -> str:
        """A few lines for the terminal before a sweep starts."""
        s = self.scheduler
        sched = (
            f"{s.name} (grace {s.grace_period}, factor {s.reduction_factor:g}, max_t {self.max_t}"
            + (f", {s.brackets} brackets" if s.brackets else "") + ")"
            if s.name != "fifo" else "fifo"
        )
        gpu = f", {self.resources.gpu:g} gpu" if self.resources.gpu else ""
        lines = [
            f"sweep {self.name}: {self.base.model_name} on {self.base.task}, "
            + ", ".join(f"{m} ({d})" for m, d in zip(self.objective_metrics, self.objective_modes)),
            f"  {self.num_trials} trials ({self.num_configs} configs x seeds {self.seeds}), "
            f"{self.max_concurrent} at a time, {self.resources.cpu:g} cpu{gpu} each",
            f"  search {self.search.algorithm} (seed {self.search.seed}), scheduler {sched}"
            + (f", budget {self.time_budget_s:g} s" if self.time_budget_s else "")
            + "".join(f", budget {v:g} {k.replace('_hours', '').upper()}-hours"
                      for k, v in dataclasses.asdict(self.budget).items() if v is not None),
            *self.space.describe().splitlines(),
        ]
        if self.enqueue:
            lines.append(f"  {len(self.enqueue)} baselines first:")
            lines.extend("    " + ", ".join(f"{k}={fmt_value(v)}" for k, v in b.items()) for b in self.enqueue)
        if self.constraints:
            lines.append("  constraints: " + ", ".join(str(c) for c in self.constraints))
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


class _SpecFields(BaseModel):
    """The types and ranges of a sweep spec's own keys; ``base`` and ``space`` are checked by their own code."""

    model_config = _FORBID

    name: Str | None = None
    description: Str | None = None
    base: Any = None
    space: Any = None
    search: SearchConfig = Field(default_factory=SearchConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    metric: Literal[METRICS] = "val/acc"
    mode: Literal[MODES] | None = None
    objectives: Annotated[list[Objective] | None, Field(min_length=1)] = None
    num_trials: Annotated[int | None, Strict(), Field(ge=1)] = None
    max_concurrent: Annotated[int, Strict(), Field(ge=1)] = 1
    resources: Resources = Field(default_factory=Resources)
    time_budget_s: Annotated[float | None, Strict(), Field(gt=0)] = None
    seeds: Annotated[list[Int], Field(min_length=1)] = Field(default_factory=lambda: [0])
    max_failures: Annotated[int, Strict(), Field(ge=-1)] = 2  # -1: unlimited
    storage: StorageConfig = Field(default_factory=StorageConfig)
    tracking: Any = None  # merged into the base config's tracking section, which checks it
    reference: dict[str, ReferenceResult] | None = None
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    enqueue: list[dict[Str, Any]] = Field(default_factory=list)
    constraints: list[Str] = Field(default_factory=list)


_SPEC_ADAPTER = TypeAdapter(_SpecFields)


class _Builder:
    """Collects every problem of one spec, each located at its file line or its ``--set``."""

    def __init__(self, d: Any, source: str | None, lines: dict[str, int] | None,
                 overrides: dict[str, Any] | list[str] | None, base_dir: str | Path | None) -> None:
        self.problems = Problems(source, lines)
        if not isinstance(d, dict):
            self.problems.add("", f"a sweep spec is a mapping, got {type(d).__name__}")
            self.problems.raise_if_any()
        self.raw = copy.deepcopy(d)
        self.source = source
        self.lines = dict(lines or {})
        self.base_dir = Path(base_dir) if base_dir is not None else None
        self.base_overrides: dict[str, Any] = {}
        if isinstance(overrides, (list, tuple)):
            overrides = parse_set(overrides)
        for key, value in (overrides or {}).items():
            self._override(key, value)

    def where(self, key: str) -> str:
        return self.problems.where(key)

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
                self.problems.items.append(f"--set {key}: {head} is not a mapping in {self.source or 'the spec'}")
                return
            section[rest] = _number(value, head, rest)
            self.problems.set_keys.add(key)
        elif key in _SCALARS or key == "space":
            self.raw[key] = _number(value, key, None)
            self.problems.set_keys.add(key)
        else:
            self.problems.items.append(
                f"--set {key}: unknown key; sweep keys: {', '.join(TOP_KEYS)}, their fields "
                "(scheduler.grace_period), or base.<section>.<key> (train.epochs is short for base.train.epochs)"
            )

    # ------------------------------------------------------------------ the parts

    def build(self) -> SweepSpec:
        fields, bad = self._fields()
        base = self._base()
        space = self._space(base) if base is not None else None
        if base is not None:
            self._check(fields, bad, base, space)
        self.problems.raise_if_any()
        assert base is not None and space is not None
        objectives = self._objectives(fields)
        metric, mode = objectives[0] if objectives else (fields.metric, fields.mode or _goal(fields.metric))
        num_trials = fields.num_trials
        if num_trials is None and fields.search.algorithm == "grid":
            num_trials = space.grid_size() * len(fields.seeds)
        scheduler = fields.scheduler
        if scheduler.name != "fifo" and scheduler.max_t is None:
            scheduler.max_t = base.train.epochs  # resolved now, so the saved sweep.yaml keeps it
        if scheduler.name == "hyperband" and scheduler.brackets is None:
            scheduler.brackets = hyperband_brackets(scheduler.grace_period, scheduler.reduction_factor,
                                                    scheduler.max_t)
        return SweepSpec(
            name=fields.name or self._default_name(), base=base, space=space, search=fields.search,
            scheduler=scheduler, metric=metric, mode=mode, objectives=objectives if len(objectives) > 1 else [],
            num_trials=num_trials or DEFAULT_NUM_TRIALS, max_concurrent=fields.max_concurrent,
            resources=fields.resources, time_budget_s=fields.time_budget_s, seeds=list(fields.seeds),
            max_failures=fields.max_failures, storage=fields.storage, tracking=base.tracking,
            description=fields.description, reference=fields.reference, source_path=self.source,
            budget=fields.budget, enqueue=[dict(b) for b in fields.enqueue],
            constraints=[parse_constraint(c) for c in fields.constraints],
        )

    def _objectives(self, f: _SpecFields) -> list[tuple[str, str]]:
        """``objectives`` as (metric, mode) pairs, aliases resolved, modes defaulted (checked in _check)."""
        return [(OBJECTIVE_ALIASES.get(o.metric, o.metric), o.mode or _goal(OBJECTIVE_ALIASES.get(o.metric, o.metric)))
                for o in (f.objectives or [])]

    def _fields(self) -> tuple[_SpecFields, set[str]]:
        """The spec's own keys checked by pydantic; the keys with problems are left at their defaults."""
        given = {k: v for k, v in self.raw.items() if not (k in _SUBSECTIONS and v is None)}
        search = given.get("search", {})
        objectives = given.get("objectives")
        if isinstance(objectives, list) and len(objectives) > 1 and isinstance(search, dict) and "algorithm" not in search:
            # NSGA-II is Optuna's default multi-objective sampler; TPE stays the single-objective default.
            given["search"] = {**search, "algorithm": "nsga2"}
        if isinstance(given.get("seeds"), int) and not isinstance(given.get("seeds"), bool):
            given["seeds"] = [given["seeds"]]
        try:
            return _SPEC_ADAPTER.validate_python(given), set()
        except ValidationError as exc:
            for err in exc.errors():
                if err["type"] == "extra_forbidden" and len(err["loc"]) == 1:
                    self.problems.add(str(err["loc"][0]), f"unknown key; a sweep spec takes: {', '.join(TOP_KEYS)}")
                else:
                    self.problems.add_error(err, _SpecFields)
            bad = {str(err["loc"][0]) for err in exc.errors()}
        clean = {k: v for k, v in given.items() if k not in bad}
        return _SPEC_ADAPTER.validate_python(clean), bad

    def _default_name(self) -> str:
        return Path(self.source).stem if self.source else "sweep"

    def _base(self) -> Config | None:
        """Resolve ``base`` with build_config; the top-level ``tracking`` is merged into its tracking section."""
        given = self.raw.get("base")
        base_source, base_lines = self.source, {k[5:]: v for k, v in self.lines.items() if k.startswith("base.")}
        if "base" in self.lines:
            base_lines[""] = self.lines["base"]  # keys missing from base are located at base:
        if isinstance(given, str):
            if given.endswith((".yaml", ".yml")):
                path = self._find(given)
                if path is None:
                    self.problems.add("base", f"no such config file {given!r}")
                    return None
                try:
                    given, base_lines = load_yaml(path)
                except ConfigError as exc:
                    self.problems.extend(exc)
                    return None
                base_source = str(path)
            else:
                given = {"model": {"name": given}}
        if not isinstance(given, dict):
            self.problems.add(
                "base", "needs a config mapping like `pielab train` takes, "
                "such as base: {model: {name: myresnet34}, train: {epochs: 6}}",
            )
            return None
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
            self.problems.add("tracking", "must be a mapping such as {wandb: true, mode: offline}")
            return None
        try:
            return build_config(raw, source=base_source, lines=base_lines, overrides=self.base_overrides)
        except ConfigError as exc:
            self.problems.extend(exc)
            return None

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
                    self.problems.add("space", f"no such search space file {given!r} (looked in {looked})")
                    return None
                space = load_space(path)
            elif isinstance(given, dict):
                lines = {k[6:]: v for k, v in self.lines.items() if k.startswith("space.")}
                where_lines = lines if "space" not in self.problems.set_keys else {}
                space = SearchSpace.from_dict(given, source=self.source, lines=where_lines)
            else:
                self.problems.add("space", "needs a search space file path or an inline {parameters: ...} mapping")
                return None
            space.validate(base)
            return space
        except ConfigError as exc:
            self.problems.extend(exc)
            return None

    # ------------------------------------------------------------------ checks across keys

    def _check(self, f: _SpecFields, bad: set[str], base: Config, space: SearchSpace | None) -> None:
        """What types and ranges cannot say: keys that contradict each other or the base config."""
        add = self.problems.add
        if "name" not in bad and f.name is not None and not _NAME_RE.match(f.name):
            add("name", f"{f.name!r}: use letters, digits, '_', '-' and '.' (it names the sweep folder)")
        if not bad & {"metric", "mode"} and f.mode is not None and f.mode != _goal(f.metric):
            add("mode", f"{f.mode} would select the worst {f.metric}; use mode: {_goal(f.metric)}")
        if "objectives" not in bad and f.objectives:
            self._check_objectives(f, bad, space)
        if "seeds" not in bad and len(set(f.seeds)) != len(f.seeds):
            add("seeds", f"repeated seed in {f.seeds} (each repeat needs its own seed)")
        if space is not None and "train.seed" in space.keys:
            add("space", "train.seed is searched by the space; repeats go in seeds: [0, 1, ...] instead")
        if "search" not in bad:
            search = f.search
            takes = _SAMPLER_OPTIONS[search.algorithm]
            for key in search.sampler_options():
                if key not in takes:
                    users = [a for a, opts in _SAMPLER_OPTIONS.items() if key in opts]
                    users = " and ".join(filter(None, (", ".join(users[:-1]), users[-1])))
                    add(f"search.{key}", f"applies to {users} only, not {search.algorithm}")
            if search.group and not search.multivariate:
                add("search.group", "group needs multivariate: true")
            if search.algorithm == "grid" and space is not None:
                try:
                    space.grid_size()
                except ConfigError as exc:
                    for problem in exc.problems:
                        add("search.algorithm", f"grid: {problem}")
        if "scheduler" not in bad:
            sched = f.scheduler
            given = self.raw.get("scheduler") or {}
            if sched.name == "fifo":
                for key in _ASHA_ONLY:
                    if key in given:
                        add(f"scheduler.{key}", f"fifo runs every trial to the end; {key} is for asha and hyperband")
            else:
                max_t = sched.max_t if sched.max_t is not None else base.train.epochs
                if sched.grace_period > max_t:
                    what = "scheduler.max_t" if sched.max_t is not None else "base train.epochs"
                    add("scheduler.grace_period", f"{sched.grace_period} is more than max_t {max_t} ({what}); "
                        "no trial could ever be stopped")
        if "reference" not in bad and f.reference:
            from pielab.models import list_models

            for name in f.reference:
                if name not in list_models(base.task):
                    add(f"reference.{name}", f"not a registered {base.task} model; "
                        f"{base.task} models: {', '.join(list_models(base.task))}")
        if not bad & {"search", "enqueue", "num_trials", "seeds"}:
            self._check_enqueue(f, space)
        if not bad & {"search", "constraints"}:
            for i, text in enumerate(f.constraints):
                try:
                    parse_constraint(text)
                except ValueError as exc:
                    add(f"constraints.{i}", str(exc))
            if f.constraints and f.search.algorithm not in CONSTRAINED_ALGORITHMS:
                add("constraints", f"the {f.search.algorithm} sampler takes no constraints; "
                    f"use search.algorithm {' or '.join(a for a in CONSTRAINED_ALGORITHMS if a in ALGORITHMS)}")
        if (not bad & {"search", "num_trials", "seeds"} and f.search.algorithm == "grid" and space is not None
                and f.num_trials is not None):
            try:
                size = space.grid_size()
            except ConfigError:
                size = None  # reported above
            if size is not None and f.num_trials > size * len(f.seeds):
                add("num_trials", f"{f.num_trials} is more than the grid's {size} configurations x "
                    f"{len(f.seeds)} seeds = {size * len(f.seeds)} trials (a grid runs each once); "
                    "leave num_trials out to run the whole grid")
        if "resources" not in bad and f.resources.gpu > 1 and f.resources.gpu != int(f.resources.gpu):
            add("resources.gpu",
                f"{f.resources.gpu:g}: a trial takes a fraction of one GPU or whole GPUs, not both")
        if "storage" not in bad and f.storage.optuna is not None and not _URL_RE.match(f.storage.optuna):
            add("storage.optuna",
                f"{mask_password(f.storage.optuna)!r} is not an RDB URL "
                "(sqlite:////abs/path.db, postgresql://user@host/db); null keeps optuna.db in the sweep folder")
        if "storage" not in bad:
            for key, problem in storage_problems(f.storage.path, f.storage.optuna, f.storage.endpoint):
                add(key, problem)

    def _check_objectives(self, f: _SpecFields, bad: set[str], space: SearchSpace | None) -> None:
        add = self.problems.add
        for key in ("metric", "mode"):
            if key in self.raw:
                add(key, "give either metric/mode or objectives, not both "
                    "(with objectives, the first one is the metric that ASHA and the ranking use)")
        seen: set[str] = set()
        for i, objective in enumerate(f.objectives or []):
            metric = OBJECTIVE_ALIASES.get(objective.metric, objective.metric)
            if metric not in OBJECTIVE_METRICS:
                add(f"objectives.{i}.metric", f"{objective.metric!r} is not a metric every epoch reports; "
                    f"use one of {', '.join(OBJECTIVE_METRICS)} (params is short for model/params)")
                continue
            if metric in seen:
                add(f"objectives.{i}.metric", f"{metric} is already an objective")
            seen.add(metric)
            if objective.mode is not None and objective.mode != _goal(metric):
                add(f"objectives.{i}.mode", f"{objective.mode} would select the worst {metric}; "
                    f"use mode: {_goal(metric)}")
        if len(f.objectives or []) > 1 and "search" not in bad and f.search.algorithm not in MULTI_OBJECTIVE_ALGORITHMS:
            add("search.algorithm", f"{f.search.algorithm} optimises one objective; with several objectives use "
                f"one of {', '.join(MULTI_OBJECTIVE_ALGORITHMS)}")
    def _check_enqueue(self, f: _SpecFields, space: SearchSpace | None) -> None:
        """Each baseline lies in the space (every key searched, every value in its range or choices)."""
        if not f.enqueue or space is None:
            return
        if f.search.algorithm == "grid":
            self.problems.add("enqueue", "a grid runs every configuration of the space already; "
                              "baselines are for tpe, random, cmaes and gp")
            return
        for i, baseline in enumerate(f.enqueue):
            if not baseline:
                self.problems.add(f"enqueue.{i}", "an empty baseline; give {dotted key: value, ...}")
            for key, why in space.match(baseline)[2]:
                self.problems.add(f"enqueue.{i}.{key}", why)
        num_trials = f.num_trials or DEFAULT_NUM_TRIALS
        if len(f.enqueue) * len(f.seeds) > num_trials:
            self.problems.add("enqueue", f"{len(f.enqueue)} baselines x {len(f.seeds)} seeds need "
                              f"{len(f.enqueue) * len(f.seeds)} trials; num_trials is {num_trials}")


def storage_problems(path: str, optuna: str | None, endpoint: str | None,
                     key: str = "storage.path") -> list[tuple[str, str]]:
    """What is wrong with a sweep's storage: ``[(key, problem)]``, empty when nothing is.

    ``path`` is where the sweep folder goes (``storage.path``, or ``--out`` with ``key="--out"``).
    A folder on object storage keeps its Optuna study in ``storage.optuna`` (an RDB): an SQLite file
    cannot live on object storage, and every driver that resumes the sweep must reach the study.
    """
    from pielab.errors import PielabError
    from pielab.sweep.storage import check_endpoint, is_remote, location, split_uri

    remote = is_remote(path)
    try:
        split_uri(path) if remote else location(path)  # a malformed URI, or another scheme (http://)
    except PielabError as exc:
        return [(key, str(exc))]
    problems: list[tuple[str, str]] = []
    if remote and not optuna:
        problems.append((key, f"{path} is on object storage, so the sweep's Optuna study needs a database: "
                              "set storage.optuna (such as postgresql://USER@HOST/DB)"))
    reason = check_endpoint(endpoint) if endpoint is not None else None
    if reason:
        problems.append(("storage.endpoint", f"{endpoint!r}: {reason}"))
    return problems


def hyperband_brackets(grace_period: int, reduction_factor: float, max_t: int) -> int:
    """Hyperband's bracket count ``s_max + 1``, ``s_max = floor(log_rf(max_t / grace_period))``: the
    last bracket starts its trials at (about) ``max_t``, so it runs them all to the end."""
    return max(1, int(math.floor(math.log(max_t / grace_period) / math.log(reduction_factor) + 1e-9)) + 1)


def _goal(metric: str) -> str:
    """The mode that selects the best value of ``metric``: accuracies up, losses down."""
    return "max" if metric.endswith("acc") else "min"


_FLOAT_KEYS = {("time_budget_s", None), ("budget", "cpu_hours"), ("budget", "gpu_hours"), ("scheduler", "reduction_factor"), ("resources", "cpu"), ("resources", "gpu")}


def _number(value: Any, head: str, rest: str | None) -> Any:
    """``--set time_budget_s=1e3``: YAML reads ``1e3`` (no dot) as text; on the command line it means a number."""
    if isinstance(value, str) and (head, rest) in _FLOAT_KEYS:
        try:
            return float(value)
        except ValueError:
            return value
    return value
