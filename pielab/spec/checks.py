"""The checks of a sweep spec across keys: what no one key's type or range can say.

A mode that selects the worst value, sampler options the chosen sampler does not take, a grace period
past the last rung, baselines outside the space, storage that cannot hold the study: each problem is
added to the spec's :class:`~pielab.yamlfile.Problems`, so it reads ``FILE:LINE: key: message`` at the
line of the key it names.
"""

from __future__ import annotations

import re
from typing import Any

from pielab.config import Config
from pielab.errors import ConfigError
from pielab.folder import mask_password
from pielab.spec.space import SearchSpace
from pielab.spec.fields import (
    _ASHA_ONLY, _SAMPLER_OPTIONS, ALGORITHMS, CONSTRAINED_ALGORITHMS, DEFAULT_NUM_TRIALS, MULTI_OBJECTIVE_ALGORITHMS,
    OBJECTIVE_ALIASES, OBJECTIVE_METRICS, SpecFields, goal, parse_constraint,
)
from pielab.yamlfile import Problems

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_URL_RE = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def check_spec(f: SpecFields, bad: set[str], raw: dict[str, Any], base: Config, space: SearchSpace | None,
               problems: Problems) -> None:
    """What types and ranges cannot say: keys that contradict each other or the base config.

    ``f`` and ``bad`` are :func:`~pielab.spec.fields.check_fields`' answer for ``raw`` (the spec
    as written, ``--set`` included); a key in ``bad`` was reported already and is not checked again.
    ``space`` is None when it had problems of its own. Each problem is added to ``problems``.
    """
    add = problems.add
    if "name" not in bad and f.name is not None and not _NAME_RE.match(f.name):
        add("name", f"{f.name!r}: use letters, digits, '_', '-' and '.' (it names the sweep folder)")
    if not bad & {"metric", "mode"} and f.mode is not None and f.mode != goal(f.metric):
        add("mode", f"{f.mode} would select the worst {f.metric}; use mode: {goal(f.metric)}")
    if "objectives" not in bad and f.objectives:
        _check_objectives(f, bad, raw, problems)
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
        given = raw.get("scheduler") or {}
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
        _check_enqueue(f, space, problems)
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
    elif "storage" not in bad and f.storage.optuna is not None:
        missing = _missing_driver(f.storage.optuna)
        if missing:
            add("storage.optuna", missing)
    if "storage" not in bad:
        for key, problem in storage_problems(f.storage.path, f.storage.optuna, f.storage.endpoint):
            add(key, problem)


# pip names of the database drivers whose module name differs
_DRIVER_PACKAGES = {"MySQLdb": "mysqlclient", "psycopg2": "psycopg2-binary"}


def _missing_driver(url: str) -> str | None:
    """Why the database driver that ``url`` needs cannot be loaded here (not installed, or a database
    SQLAlchemy does not know), else None: found with the spec, not after Ray has started."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
        parsed.get_dialect().import_dbapi()
    except ImportError as exc:
        module = (exc.name or "").split(".")[0] or "its driver"
        return (f"the database driver for {parsed.drivername!r} is not installed (no module {module!r}): "
                f"pip install {_DRIVER_PACKAGES.get(module, module)}")
    except (NoSuchModuleError, ArgumentError):
        return f"{mask_password(url)!r} names no database that SQLAlchemy knows"
    return None

def _check_objectives(f: SpecFields, bad: set[str], raw: dict[str, Any], problems: Problems) -> None:
    add = problems.add
    for key in ("metric", "mode"):
        if key in raw:
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
        if objective.mode is not None and objective.mode != goal(metric):
            add(f"objectives.{i}.mode", f"{objective.mode} would select the worst {metric}; "
                f"use mode: {goal(metric)}")
    if len(f.objectives or []) > 1 and "search" not in bad and f.search.algorithm not in MULTI_OBJECTIVE_ALGORITHMS:
        add("search.algorithm", f"{f.search.algorithm} optimises one objective; with several objectives use "
            f"one of {', '.join(MULTI_OBJECTIVE_ALGORITHMS)}")
def _check_enqueue(f: SpecFields, space: SearchSpace | None, problems: Problems) -> None:
    """Each baseline lies in the space (every key searched, every value in its range or choices)."""
    if not f.enqueue or space is None:
        return
    if f.search.algorithm == "grid":
        problems.add("enqueue", "a grid runs every configuration of the space already; "
                          "baselines are for tpe, random, cmaes and gp")
        return
    for i, baseline in enumerate(f.enqueue):
        if not baseline:
            problems.add(f"enqueue.{i}", "an empty baseline; give {dotted key: value, ...}")
        for key, why in space.match(baseline)[2]:
            problems.add(f"enqueue.{i}.{key}", why)
    num_trials = f.num_trials or DEFAULT_NUM_TRIALS
    if len(f.enqueue) * len(f.seeds) > num_trials:
        problems.add("enqueue", f"{len(f.enqueue)} baselines x {len(f.seeds)} seeds need "
                          f"{len(f.enqueue) * len(f.seeds)} trials; num_trials is {num_trials}")


def storage_problems(path: str, optuna: str | None, endpoint: str | None,
                     key: str = "storage.path") -> list[tuple[str, str]]:
    """What is wrong with a sweep's storage: ``[(key, problem)]``, empty when nothing is.

    ``path`` is where the sweep folder goes (``storage.path``, or ``--out`` with ``key="--out"``).
    A folder on object storage keeps its Optuna study in ``storage.optuna`` (an RDB): an SQLite file
    cannot live on object storage, and every driver that resumes the sweep must reach the study.
    """
    from pielab.errors import PielabError
    from pielab.folder.storage import check_endpoint, is_remote, location, split_uri

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
