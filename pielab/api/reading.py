"""Reading a sweep folder from Python: :func:`load_sweep` and :class:`Sweep`, data frames over the folder.

The frames are built from the one reader (:class:`pielab.folder.SweepFolder`, its records and ranking
rule) through the report's own data (:func:`pielab.report.tables.load_sweep`), so the best trial, the
ranking, the Pareto front and the summary table are the ones ``pielab status``, ``report`` and ``export``
show. Neither Ray nor Optuna is imported here (:meth:`Sweep.study` imports Optuna when called); the
folder may be local or on object storage (``s3://``, ``gs://``), and running, interrupted or finished.

Units everywhere: accuracies are fractions in [0, 1], times are seconds, epochs count from 1.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from pielab.errors import PielabError, UnknownTrial
from pielab.folder import TUNE_DIR, SweepFolder, held_seconds, trial_resources
from pielab.report import tables

__all__ = ["Sweep", "load_sweep", "TRIAL_COLUMNS"]

# The columns of Sweep.trials_dataframe() around the parameter columns, in order (see its docstring).
_LEADING = ["trial_id", "number", "state", "reason"]
_TRAILING = ["seed", "best_epoch", "best_val_acc", "test_acc", "test_epoch", "epochs", "planned_epochs", "rank",
             "train_time_s", "wall_s", "num_params", "cpu", "gpu", "retries", "preemptions", "started", "ended"]
TRIAL_COLUMNS = (*_LEADING, *_TRAILING)
_EPOCH_COLUMNS = ("best_epoch", "test_epoch", "epochs", "planned_epochs", "rank")
# config keys the frame always shows as parameters when the trials' configs have them
_MODEL_KEYS = ("model.name", "model.depth", "model.residual")


def load_sweep(path: str | Path) -> "Sweep":
    """Open a sweep folder for reading, as ``pielab status`` / ``report`` / ``export`` do.

    Args:
        path: the sweep folder: a local (or NFS) path, or an ``s3://bucket/key`` / ``gs://bucket/key`` URI
            (read through ``pyarrow.fs`` with the usual credentials). It may be running, interrupted or
            finished, and may come from an earlier pielab release.

    Returns:
        A :class:`Sweep`. Its trials are read on first use and kept; :meth:`Sweep.refresh` reads them again
        (a running sweep writes every trial's files at every epoch).

    Raises:
        PielabError: no such folder, a file, a folder that is not a sweep folder (no ``sweep.yaml``), a
            damaged ``sweep.yaml`` without its copy, or object storage that cannot be reached (one line).
    """
    return Sweep(SweepFolder.open(path))


class Sweep:
    """A sweep folder opened by :func:`load_sweep` (``pielab.load_sweep``): its spec, its state and its trials
    as pandas data frames.

    Attributes:
        path: the folder (a ``pathlib.Path``, or an object-storage path whose ``str()`` is its URI).
        name: the sweep's name (``sweep.yaml`` ``name``).
        metric, mode: the metric trials are ranked by (e.g. ``"val/acc"``) and ``"max"`` or ``"min"``.
        objectives: ``[(metric, mode), ...]`` of a multi-objective sweep; empty for a single-objective one.
        spec: the resolved spec as a dict (``sweep.yaml`` as the sweep wrote it).
        status: ``"finished"``, ``"running"`` (a driver holds the folder's lease), ``"interrupted"``
            (resumable: ``pielab.resume_sweep(path)``) or ``"not started"``; read when asked.
        tune_path: Tune's experiment folder (``str``), for Ray's own tools:
            ``ray.tune.ExperimentAnalysis(sweep.tune_path)``.
    """

    def __init__(self, folder: SweepFolder) -> None:
        self._folder = folder
        self._data: tables.Sweep | None = None
        self._frame: pd.DataFrame | None = None

    # ------------------------------------------------------------------ the sweep as a whole

    @property
    def path(self):
        return self._folder.path

    @property
    def name(self) -> str:
        return self._folder.name

    @property
    def metric(self) -> str:
        return self._folder.metric

    @property
    def mode(self) -> str:
        return self._folder.mode

    @property
    def objectives(self) -> list[tuple[str, str]]:
        return self._folder.objectives

    @property
    def spec(self) -> dict[str, Any]:
        return self._folder.spec

    @property
    def status(self) -> str:
        return SweepFolder.open(self.path).state()

    @property
    def tune_path(self) -> str:
        return str(self.path / TUNE_DIR)

    def refresh(self) -> "Sweep":
        """Read the folder again (a running sweep's new epochs and trials); returns ``self``."""
        self._folder = SweepFolder.open(self.path)
        self._data = self._frame = None
        return self

    def __repr__(self) -> str:
        return f"<pielab.Sweep {self.name!r} at {self.path} ({self.metric}, {self.mode})>"

    def _tables(self) -> tables.Sweep:
        if self._data is None:
            self._data = tables.load_sweep(self._folder, allow_empty=True)
            for line in self._data.folder.damage_lines():  # a trial left out may have been the best
                warnings.warn(line, stacklevel=3)
        return self._data

    def _check(self, trial_id: str) -> str:
        if trial_id not in self._tables().records:
            raise UnknownTrial(trial_id, self.path)
        return trial_id

    # ------------------------------------------------------------------ trials

    def trials_dataframe(self) -> pd.DataFrame:
        """One row per trial (every trial with a ``config.yaml``, running ones included), in the folder's order.

        Columns:
            ``trial_id`` (str), ``number`` (creation order, 0, 1, ...), ``state`` (``completed``,
            ``early_stopped``, ``running``, ``failed``, ``diverged``, ...), ``reason`` (why it ended, "" if none);
            then the parameters by dotted config key (``model.name``, ``model.depth``, ``model.residual``, every
            key of the search space such as ``train.lr``, and any other key that varies across trials), with the
            values the trial ran (its resolved config);
            ``seed`` (``train.seed``); the best value of the sweep's metric under the metric's own name
            (e.g. ``val/acc``); ``best_epoch`` (the epoch it was reached at); ``best_val_acc`` (fraction);
            ``test_acc`` (test accuracy, a fraction, of the model of ``test_epoch``: the best epoch's for a
            sweep on val/acc); ``epochs`` (epochs run), ``planned_epochs`` (its full length); ``rank`` (1 is the
            best; empty for trials the ranking rule leaves out: not finished or no value); ``train_time_s``
            (seconds of training), ``wall_s`` (wall seconds it held its resources); ``num_params`` (model
            parameters); ``cpu``, ``gpu`` (the resources reserved for each trial); ``retries``,
            ``preemptions``; ``started``, ``ended`` (ISO 8601 times, or None).
            A multi-objective sweep adds each further objective's value at the best epoch (by metric name) and
            ``pareto`` (bool: on the Pareto front).

        Epoch and rank columns are pandas nullable integers; missing numbers are NaN.
        """
        if self._frame is None:
            self._frame = self._build_frame()
        return self._frame.copy()

    def _param_keys(self, data: tables.Sweep) -> list[str]:
        space = self.spec.get("space") if isinstance(self.spec.get("space"), dict) else {}
        keys = [k for k in (space.get("parameters") or {}) if isinstance(k, str)] if isinstance(space, dict) else []
        for key in (*_MODEL_KEYS, *data.hparams):
            if key not in keys and any(key in flat for flat in data.flats.values()):
                keys.append(key)
        return keys

    def _build_frame(self) -> pd.DataFrame:
        data = self._tables()
        keys = self._param_keys(data)
        extra = [m for m, _ in self.objectives if m != self.metric]
        columns = [*_LEADING, *keys, self.metric, *_TRAILING, *extra, *(["pareto"] if self.objectives else [])]
        trials = data.trials
        if trials.empty:
            return pd.DataFrame(columns=columns)
        resources = trial_resources(self.spec)
        records = [data.records[t] for t in trials["trial_id"]]
        frame = pd.DataFrame({
            "trial_id": trials["trial_id"],
            "number": pd.array([r.number for r in records], dtype="Int64"),
            "state": trials["state"], "reason": trials["reason"],
            **{key: [data.flats[t].get(key) for t in trials["trial_id"]] for key in keys},
            self.metric: trials["score"],
            "seed": trials["seed"],
            **{c: trials[c] for c in ("best_epoch", "best_val_acc", "test_acc", "test_epoch", "epochs",
                                      "planned_epochs", "rank", "train_time_s")},
            "wall_s": [held_seconds(r) for r in records],
            "num_params": trials["params"],
            "cpu": resources["cpu"], "gpu": resources["gpu"],
            "retries": [r.retries for r in records], "preemptions": [r.preemptions for r in records],
            "started": [r.started for r in records], "ended": [r.ended for r in records],
            **{m: trials[m] for m in extra},
            **({"pareto": trials["pareto"]} if self.objectives else {}),
        }, columns=columns)
        for column in _EPOCH_COLUMNS:
            frame[column] = pd.array(pd.to_numeric(frame[column]).round(), dtype="Int64")
        return frame.reset_index(drop=True)

    def history(self, trial_id: str | None = None) -> pd.DataFrame:
        """Per-epoch metrics as a long frame: one row per (trial, epoch), columns ``trial_id``, ``epoch``, then
        every metric the trial's ``metrics.csv`` holds (``train/loss``, ``train/acc``, ``val/loss``,
        ``val/acc``, ``best/val_acc``, ``best/epoch``, ``test/acc``, ``lr``, ``time/epoch_s``, ``time/total_s``
        (seconds), ``perf/samples_per_s``, ``grad/first_norm``, ``grad/last_norm``, ``grad/first_last_ratio``).

        Args:
            trial_id: one trial's id; None (default) for every trial.

        Raises:
            UnknownTrial: (a :class:`PielabError` and a ``KeyError``) no trial ``trial_id`` in this sweep.
        """
        data = self._tables()
        ids = [self._check(trial_id)] if trial_id is not None else list(data.metrics)
        parts = [data.metrics[t].assign(trial_id=t) for t in ids if not data.metrics[t].empty]
        if not parts:
            return pd.DataFrame(columns=["trial_id", "epoch"])
        long = pd.concat(parts, ignore_index=True)
        return long[["trial_id", "epoch", *[c for c in long.columns if c not in ("trial_id", "epoch")]]]

    def top(self, k: int = 5) -> pd.DataFrame:
        """The ``k`` best ranked trials, best first: rows of :meth:`trials_dataframe` (the ranking of
        ``pielab status``: finished trials by the sweep's metric and mode). Fewer rows when fewer are ranked.

        Raises:
            PielabError: ``k`` < 1.
        """
        if int(k) < 1:
            raise PielabError(f"top(k): k must be at least 1, got {k}")
        frame = self.trials_dataframe()
        ranked = frame[frame["rank"].notna()].sort_values("rank", kind="stable")
        return ranked.head(int(k)).reset_index(drop=True)

    @property
    def best_trial(self) -> pd.Series:
        """The best trial's row of :meth:`trials_dataframe` (``best_trial["trial_id"]``, its parameters, its
        value under the metric's name, ...): the trial ``pielab status`` and ``pielab export`` name.

        Raises:
            PielabError: no trial is ranked yet (none has finished with a value of the metric).
        """
        best = self.top(1)
        if best.empty:
            counts = self.trials_dataframe()["state"].value_counts()
            raise PielabError(f"{self.path}: no finished trial yet"
                              + (f" ({', '.join(f'{n} {s}' for s, n in counts.items())})" if len(counts) else ""))
        return best.iloc[0]

    def pareto_front(self) -> pd.DataFrame:
        """The Pareto-optimal trials of a multi-objective sweep (completed trials only), best first by the first
        objective: rows of :meth:`trials_dataframe`, which holds each objective's value. Empty (with the same
        columns) for a single-objective sweep, which has a best trial instead."""
        frame = self.trials_dataframe()
        ids = self._tables().pareto_ids
        if not ids:
            return frame.iloc[0:0]
        return frame.set_index("trial_id", drop=False).loc[ids].reset_index(drop=True)

    def summary(self) -> pd.DataFrame:
        """The report's configuration table (``summary.csv`` of ``pielab report``): one row per configuration
        (finished trials that differ only in ``train.seed``), best first, with the mean and the sample standard
        deviation over seeds: ``val_acc_mean``, ``val_acc_sd``, ``test_acc_mean``, ``test_acc_sd`` (fractions),
        ``epochs``, ``train_time_s`` (seconds), ``n_seeds``, ``score_mean`` (the metric), ``best`` (the best of
        its model/depth/residual family at equal fidelity), ``trials`` (their ids)."""
        data = self._tables()
        if data.trials.empty:
            return pd.DataFrame()
        return tables.group_table(data)

    # ------------------------------------------------------------------ one trial, and the commands' files

    def config(self, trial_id: str) -> dict[str, Any]:
        """The trial's resolved config as a nested dict: what ``pielab train`` (``pielab.train``) accepts.

        Raises:
            UnknownTrial: no trial ``trial_id`` in this sweep; PielabError: its config no longer validates.
        """
        from pielab.config import config_from_dict

        raw = self._tables().configs[self._check(trial_id)]
        try:
            return config_from_dict(raw).to_dict()
        except PielabError as exc:
            raise PielabError(f"trial {trial_id}: its config.yaml no longer validates: {exc}") from None

    def export(self, path: str | Path | None = None, top: int = 1, *, pareto: bool = False) -> list[Path]:
        """``pielab export``: write the best ``top`` trials' configs as YAML that ``pielab train`` accepts.

        Args:
            path: the file (default ``SWEEP_DIR/best_configs.yaml``); with ``top`` > 1, ``STEM_1.yaml`` ..
                ``STEM_K.yaml`` beside it. pareto: every Pareto-optimal trial instead (multi-objective sweeps).

        Returns:
            The files written, best first.

        Raises:
            PielabError: ``top`` < 1, no finished trial yet, or as ``pielab export`` refuses.
        """
        from pielab.report import export_configs

        damage: list[str] = []
        paths = export_configs(self.path, top, path, pareto=pareto, damage=damage)
        for line in damage:
            warnings.warn(line, stacklevel=2)
        return paths

    def report(self, out: str | Path | None = None) -> dict[str, Path]:
        """``pielab report``: tables (md, csv, tex), figures (png) and ``report.html`` in ``out`` (default
        ``SWEEP_DIR/report``). Returns ``{file name: path}``.

        Raises:
            PielabError: the sweep has no trial yet.
        """
        from pielab.report import build_report

        damage: list[str] = []
        paths = build_report(self.path, out, damage=damage)
        for line in damage:
            warnings.warn(line, stacklevel=2)
        return paths

    def study(self):
        """The sweep's Optuna study (``optuna.Study``), for Optuna's own tools such as
        ``optuna.visualization.matplotlib.plot_optimization_history(sweep.study())``. Imports Optuna.

        Raises:
            PielabError: the folder has no study yet (no ``optuna.db``), or it cannot be opened.
        """
        study, why = tables.load_study(self._folder)
        if study is None:
            raise PielabError(f"{self.path}: no Optuna study: {why}")
        return study
