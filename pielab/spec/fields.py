"""The types and ranges of a sweep spec's own keys (``search``, ``scheduler``, ``resources``, ...).

Each section is a dataclass whose field annotations pydantic checks (strict types, ranges), so a
section's defaults, its checks and the messages about it are one definition. :func:`check_fields`
checks a spec's own keys together; what keys say about each other is :mod:`pielab.spec.checks`,
and the spec as a whole is :mod:`pielab.spec.sweep_spec`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, TypeAdapter, ValidationError, with_config

from pielab.config import Bool, Int, NonNegativeFloat, Str, TrackingConfig
from pielab.folder import METRIC_KEYS, PARAMS_KEY
from pielab.yamlfile import Problems

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
    # object storage, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX (pielab.folder.storage)
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
    each trial's ``resources`` times the wall time it held them (:mod:`pielab.folder`), summed over
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


class SpecFields(BaseModel):
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


_SPEC_ADAPTER = TypeAdapter(SpecFields)


def check_fields(raw: dict[str, Any], problems: Problems) -> tuple[SpecFields, set[str]]:
    """A spec's own keys checked by pydantic: ``(fields, the top-level keys with problems)``; each
    problem is added to ``problems``, and the keys with problems are left at their defaults."""
    given = {k: v for k, v in raw.items() if not (k in _SUBSECTIONS and v is None)}
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
                problems.add(str(err["loc"][0]), f"unknown key; a sweep spec takes: {', '.join(TOP_KEYS)}")
            else:
                problems.add_error(err, SpecFields)
        bad = {str(err["loc"][0]) for err in exc.errors()}
    clean = {k: v for k, v in given.items() if k not in bad}
    return _SPEC_ADAPTER.validate_python(clean), bad


def resolved_objectives(f: SpecFields) -> list[tuple[str, str]]:
    """``objectives`` as (metric, mode) pairs, aliases resolved, modes defaulted (checked by spec_checks)."""
    metrics = [OBJECTIVE_ALIASES.get(o.metric, o.metric) for o in f.objectives or []]
    return [(m, o.mode or goal(m)) for m, o in zip(metrics, f.objectives or [])]


def hyperband_brackets(grace_period: int, reduction_factor: float, max_t: int) -> int:
    """Hyperband's bracket count ``s_max + 1``, ``s_max = floor(log_rf(max_t / grace_period))``: the
    last bracket starts its trials at (about) ``max_t``, so it runs them all to the end."""
    return max(1, int(math.floor(math.log(max_t / grace_period) / math.log(reduction_factor) + 1e-9)) + 1)


def goal(metric: str) -> str:
    """The mode that selects the best value of ``metric``: accuracies up, losses down."""
    return "max" if metric.endswith("acc") else "min"
