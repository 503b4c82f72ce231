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
:func:`pielab.folder.pareto_records`. A spec gives either ``metric``/``mode`` or
``objectives``, never both (one error, so no spec reads two ways); ``objectives`` with one entry is the
same as ``metric``/``mode``.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pielab.config import Config, TrackingConfig, apply_params, build_config, load_yaml, parse_set
from pielab.errors import ConfigError
from pielab.folder import strip_password
from pielab.spec.space import SearchSpace, load_space
from pielab.spec.checks import check_spec, storage_problems
# The sections and constants of a spec live in spec_fields; other modules import them from here.
from pielab.spec.fields import (
    _SCALARS, _SUBSECTIONS, ALGORITHMS, CONSTRAINED_ALGORITHMS, CONSTRAINT_METRICS, DEFAULT_NUM_TRIALS, METRICS,
    MODES, MULTI_OBJECTIVE_ALGORITHMS, OBJECTIVE_ALIASES, OBJECTIVE_METRICS, SCHEDULERS, TOP_KEYS, BudgetConfig,
    Constraint, Objective, ReferenceResult, Resources, SchedulerConfig, SearchConfig, StorageConfig,
    check_fields, goal, hyperband_brackets, parse_constraint, resolved_objectives,
)
from pielab.text import fmt_value
from pielab.yamlfile import Problems, dump_yaml

__all__ = [
    "ALGORITHMS", "CONSTRAINED_ALGORITHMS", "CONSTRAINT_METRICS", "DEFAULT_NUM_TRIALS", "METRICS", "MODES",
    "MULTI_OBJECTIVE_ALGORITHMS", "OBJECTIVE_ALIASES", "OBJECTIVE_METRICS", "SCHEDULERS", "TOP_KEYS", "BudgetConfig",
    "Constraint", "Objective", "ReferenceResult", "Resources", "SchedulerConfig", "SearchConfig", "StorageConfig",
    "SweepSpec", "hyperband_brackets", "load_spec", "parse_constraint", "storage_problems",
]

_REPO_ROOT = Path(__file__).resolve().parents[2]


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
    """Read, resolve and validate a sweep spec file, then apply ``--set`` overrides: ``["key=TEXT", ...]``
    as the command line gives them (read by ``parse_set``), or ``{dotted key: value}``."""
    data, lines = load_yaml(path)
    return SweepSpec.from_dict(data, source=str(path), lines=lines, overrides=overrides, base_dir=Path(path).parent)


# --------------------------------------------------------------------------- building


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
            section[rest] = value
            self.problems.set_keys.add(key)
        elif key in _SCALARS or key == "space":
            self.raw[key] = value
            self.problems.set_keys.add(key)
        else:
            self.problems.items.append(
                f"--set {key}: unknown key; sweep keys: {', '.join(TOP_KEYS)}, their fields "
                "(scheduler.grace_period), or base.<section>.<key> (train.epochs is short for base.train.epochs)"
            )

    # ------------------------------------------------------------------ the parts

    def build(self) -> SweepSpec:
        fields, bad = check_fields(self.raw, self.problems)
        base = self._base()
        space = self._space(base) if base is not None else None
        if base is not None:
            check_spec(fields, bad, self.raw, base, space, self.problems)
        self.problems.raise_if_any()
        assert base is not None and space is not None
        objectives = resolved_objectives(fields)
        metric, mode = objectives[0] if objectives else (fields.metric, fields.mode or goal(fields.metric))
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
