"""The one reader of a sweep folder (:class:`SweepFolder`): its spec, status and trials by the rules of
:mod:`pielab.folder.records`; ``pielab status``, ``report``, ``export`` and the Python API read through it."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Sequence

from pielab.errors import PielabError
from pielab.folder.layout import (
    CONFIG_FILE, METRICS_FILE, OPTUNA_DB, RESULT_FILE, STARTED_SPEC_FILE, STATUS_FILE, STUDY_KEY, SWEEP_FILE,
    TRIALS_DIR, study_url,
)
from pielab.folder.damage import Damage, top_level_damage, trial_damage
from pielab.folder.records import (
    TrialRecord, best_record, pareto_records, parse_metrics_csv, rank_records, resource_usage, trial_resources,
)
from pielab.folder.storage import SweepPath, location, read_json, read_text
from pielab.text import one_line


def _read_trials(sweep_dir: SweepPath, metric: str | None, mode: str | None,
                 objectives: Sequence[str] = (), damage: list[Damage] | None = None) -> dict[str, TrialRecord]:
    """The trials' records; a trial with a damaged file (:mod:`pielab.folder.damage`) is left out, and its
    :class:`Damage` appended to ``damage``."""
    out: dict[str, TrialRecord] = {}
    for folder in sorted((location(sweep_dir) / TRIALS_DIR).glob("*"), key=lambda p: p.name):
        if not folder.is_dir():
            continue
        texts = {name: read_text(folder / name) for name in (METRICS_FILE, RESULT_FILE, CONFIG_FILE)}
        broken = trial_damage(folder, texts)
        if broken:
            if damage is not None:
                damage.extend(broken)
            continue
        rows = parse_metrics_csv(texts[METRICS_FILE])
        data = json.loads(texts[RESULT_FILE]) if texts[RESULT_FILE] is not None else None
        if data and "trial_id" in data:
            rec = TrialRecord.from_json(data, rows)
        elif metric is not None and (rows or texts[CONFIG_FILE] is not None):
            rec = TrialRecord(trial_id=folder.name, params={}, rows=rows)  # started, no result.json yet
        else:
            continue
        if metric is not None and mode is not None:
            rec.refold(metric, mode, objectives)
        out[rec.trial_id] = rec
    return out


def load_records(sweep_dir: SweepPath, damage: list[Damage] | None = None) -> dict[str, TrialRecord]:
    """Every trial of a sweep folder, from ``trials/*/result.json`` and ``metrics.csv``, as written
    (the recorder's restore). Readers use :meth:`SweepFolder.records`, which also applies the rules.
    ``damage`` receives the damaged trial files, whose trials are left out (``pielab resume`` refuses them)."""
    return _read_trials(sweep_dir, None, None, damage=damage)


# --------------------------------------------------------------------------- the sweep as a whole


def metric_mode(spec: dict[str, Any], status: dict[str, Any] | None = None) -> tuple[str, str]:
    """The sweep's metric and mode: sweep.yaml's, else status.json's, else ``val/acc``; a missing mode
    is ``max`` for a metric that ends in ``acc`` and ``min`` otherwise (as the spec defaults it)."""
    status = status or {}
    objectives = objectives_of(spec, status)
    if objectives:
        return objectives[0]
    metric = str(spec.get("metric") or status.get("metric") or "val/acc")
    mode = spec.get("mode") or status.get("mode")
    return metric, mode if mode in ("max", "min") else ("max" if metric.endswith("acc") else "min")


def objectives_of(spec: dict[str, Any], status: dict[str, Any] | None = None) -> list[tuple[str, str]]:
    """A multi-objective sweep's (metric, mode) pairs from sweep.yaml's ``objectives`` (else status.json's);
    empty for a single-objective sweep."""
    given = spec.get("objectives") or (status or {}).get("objectives") or []
    out = []
    for item in given if isinstance(given, list) else []:
        if isinstance(item, dict) and item.get("metric"):
            metric = str(item["metric"])
            mode = item.get("mode") if item.get("mode") in ("max", "min") else (
                "max" if metric.endswith("acc") else "min")
            out.append((metric, mode))
    return out if len(out) > 1 else []


def study_name(sweep_dir: str | SweepPath) -> str:
    """The name of the sweep's Optuna study: status.json's ``study`` field (the runner records the name
    it created the study under), else the folder's name (what the runner used before it recorded it)."""
    folder = location(sweep_dir)
    recorded = (read_json(folder / STATUS_FILE) or {}).get(STUDY_KEY)
    return str(recorded) if isinstance(recorded, str) and recorded else folder.name


# SweepFolder.state()'s answers
SWEEP_STATES = ("finished", "running", "interrupted", "not started")


@dataclass
class SweepFolder:
    """A sweep folder opened for reading: its spec, its status and its trials, by this module's rules.

    ``pielab status``, ``pielab report`` and ``pielab export`` all read through it.
    """

    path: SweepPath  # a local Path, or an ObjectPath (str() is its s3:// or gs:// URI)
    spec: dict[str, Any]  # sweep.yaml as written (the resolved spec)
    status: dict[str, Any]  # status.json, or {} before the runner first wrote it (or when it is damaged)
    # damaged files found so far (pielab.folder.damage): the top level at open, each trial's by records()
    damage: list[Damage] = field(default_factory=list)

    @classmethod
    def open(cls, sweep_dir: str | SweepPath) -> "SweepFolder":
        """Open ``sweep_dir`` (a path, or an ``s3://`` / ``gs://`` URI); raises :class:`PielabError`
        (one line) for a missing folder, a file, a folder without ``sweep.yaml``, a ``sweep.yaml`` that
        is not a YAML mapping, or object storage that cannot be reached."""
        from pielab.yamlfile import load_yaml

        path = location(sweep_dir)
        try:
            if not path.is_dir():
                raise PielabError(f"{path} is a file, not a sweep folder" if path.exists()
                                  else f"{path}: no such sweep folder")
            if not (path / SWEEP_FILE).is_file():
                raise PielabError(f"{path} is not a sweep folder (no {SWEEP_FILE}); "
                                  "`pielab sweep SPEC --out DIR` makes one")
        except OSError as exc:  # object storage: no such bucket, refused credentials, no connection
            raise PielabError(f"{path}: cannot read it: {one_line(str(exc), 300)}") from None
        damage = top_level_damage(path)
        if any(d.path.name == SWEEP_FILE for d in damage):
            # sweep.yaml and started_spec.json hold the same spec (the runner writes both at the start)
            spec = read_json(path / STARTED_SPEC_FILE)
            if spec is None:
                raise PielabError(f"{path / SWEEP_FILE} is damaged "
                                  f"({next(d.why for d in damage if d.path.name == SWEEP_FILE)}) and "
                                  f"{STARTED_SPEC_FILE}, its copy, is missing or damaged too: restore one of them")
        else:
            spec, _ = load_yaml(path / SWEEP_FILE)
        return cls(path=path, spec=spec, status=read_json(path / STATUS_FILE) or {}, damage=damage)

    @property
    def name(self) -> str:
        return str(self.spec.get("name") or self.status.get("name") or self.path.name)

    @property
    def metric(self) -> str:
        return metric_mode(self.spec, self.status)[0]

    @property
    def mode(self) -> str:
        return metric_mode(self.spec, self.status)[1]

    @property
    def objectives(self) -> list[tuple[str, str]]:
        """(metric, mode) of each objective of a multi-objective sweep; empty for a single-objective one."""
        return objectives_of(self.spec, self.status)

    @property
    def study(self) -> str:
        return study_name(self.path)

    @property
    def optuna_storage(self) -> str | None:
        """sweep.yaml's ``storage.optuna`` (an RDB URL without its password), or None for the folder's own
        ``optuna.db``."""
        storage = self.spec.get("storage")
        url = storage.get("optuna") if isinstance(storage, dict) else None
        return str(url) if url else None

    def study_url(self, *, must_exist: bool = False) -> str:
        """The study's storage URL (:func:`pielab.folder.layout.study_url`). ``must_exist``: raise
        :class:`PielabError` when the folder keeps its study in ``optuna.db`` and that file is not there yet
        (the sweep never asked Optuna for a trial)."""
        url = study_url(self.path, self.optuna_storage)
        if must_exist and self.optuna_storage is None and not (self.path / OPTUNA_DB).is_file():
            raise PielabError(f"{self.path}: no {OPTUNA_DB} yet (the sweep has not asked Optuna for a trial)")
        return url

    def damage_lines(self) -> list[str]:
        """One line per damaged file found so far (:meth:`Damage.line`); call after :meth:`records`."""
        return [d.line() for d in self.damage]

    def trial_dir(self, trial_id: str) -> SweepPath:
        return self.path / TRIALS_DIR / trial_id

    def records(self) -> dict[str, TrialRecord]:
        """Every trial, by trial id: result.json and metrics.csv with the metric fields derived by
        :meth:`TrialRecord.refold`; a trial folder with a config or metrics but no result.json yet
        reads as a running trial."""
        found: list[Damage] = []
        records = _read_trials(self.path, self.metric, self.mode, [m for m, _ in self.objectives], found)
        known = {str(d.path) for d in self.damage}
        self.damage.extend(d for d in found if str(d.path) not in known)
        return records

    def ranked(self, records: dict[str, TrialRecord] | None = None) -> list[TrialRecord]:
        return rank_records(self.records() if records is None else records, self.mode)

    def best(self, records: dict[str, TrialRecord] | None = None) -> TrialRecord | None:
        return best_record(self.records() if records is None else records, self.mode)

    def usage(self, records: dict[str, TrialRecord] | None = None) -> dict[str, float]:
        """CPU-hours and GPU-hours used so far (:func:`resource_usage` with the spec's resources)."""
        return resource_usage(self.records() if records is None else records, trial_resources(self.spec))

    def driver(self):
        """The lease record of the driver that holds (or last held) the folder, or None: a lease file, or on object
        storage a row in the study's database (:func:`pielab.folder.dblease.read_lease_for`)."""
        from pielab.folder.dblease import read_lease_for

        return read_lease_for(self.path, self.optuna_storage)

    def state(self, records: dict[str, TrialRecord] | None = None, holder=None) -> str:
        """What the sweep is doing, in one word of :data:`SWEEP_STATES`: ``finished`` (status.json says so),
        ``running`` (a driver holds a live lease, on any host), ``interrupted`` (it has trials or a status.json
        but no live driver: ``pielab resume`` continues it) or ``not started``. ``holder``: :meth:`driver`'s
        answer when the caller already has it."""
        if self.status.get("finished"):
            return "finished"
        holder = self.driver() if holder is None else holder
        if holder is not None and not holder.stale():
            return "running"
        return "interrupted" if (self.records() if records is None else records) or self.status else "not started"

    def pareto(self, records: dict[str, TrialRecord] | None = None) -> list[TrialRecord]:
        """The Pareto front (:func:`pareto_records`); empty for a single-objective sweep."""
        return pareto_records(self.records() if records is None else records, self.objectives)
