"""The recorder's W&B side: one run per trial, fed from the driver's own records.

:class:`~pielab.sweep.tracking.WandbTracker` does the W&B calls (on its own thread); this hook
decides what goes into them: the trial's resolved config (flat dotted keys) when it starts, its
provenance once its first epoch reports it, one row per epoch, and the summary with how it ended. A
W&B failure turns tracking off for the rest of the run and is shown once (:meth:`TrackingHook.new_error`).
"""

from __future__ import annotations

from typing import Any

from pielab.folder import TrialRecord


class TrackingHook:
    """W&B runs of one run of the driver. ``settings``: the recorder's ``tracking`` (``{"project",
    "entity", "mode", "group", "tags"}``); ``sweep_dir``: the sweep folder (W&B writes its run files in
    it, or beside it for one on object storage); ``study``: the study name, which run ids derive from."""

    def __init__(self, settings: dict[str, Any], sweep_dir, study: str) -> None:
        from pielab.folder.storage import local_dir
        from pielab.sweep.tracking import WandbTracker, server_url, unreachable

        self.study = study
        mode = settings["mode"]
        # Checked by each run of the driver (a resume may find the server back): the first one that
        # cannot reach it keeps the runs offline, with one line, rather than wait at every wandb.init.
        self.offline_because: str | None = None
        if mode == "online":
            why = unreachable()
            if why:
                mode = "offline"
                self.offline_because = (f"W&B at {server_url()} does not answer ({why}): this run's W&B runs are "
                                        "kept offline in the sweep folder, to upload later")
        self.tracker = WandbTracker(sweep_dir=local_dir(sweep_dir), group=settings["group"],
                                    project=settings["project"], entity=settings.get("entity"),
                                    mode=mode, tags=settings.get("tags"))
        self.error: str | None = self.offline_because  # shown and recorded (status.json tracking_error)

    def start(self, trial_id: str, config_flat: dict[str, Any]) -> None:
        """Open (or, after a resume, reopen) the trial's run with its resolved config."""
        from pielab.sweep.tracking import run_id

        self.tracker.start(trial_id, config_flat, run_id=run_id(self.study, trial_id))

    def provenance(self, trial_id: str, provenance: dict[str, Any]) -> None:
        """The trial's code, versions and device (sent with its first result), into its run's config."""
        from pielab.provenance import flat

        self.tracker.update_config(trial_id, flat(provenance))

    def epoch(self, trial_id: str, row: dict[str, Any], epoch: int) -> None:
        """One history row (``step=epoch``)."""
        self.tracker.log(trial_id, row, epoch)
        self.tracker.release()  # the first epoch is in: W&B's start-up no longer delays the trials

    def ended(self, rec: TrialRecord, state: str, failed: bool) -> None:
        """Finish the trial's run with its summary: how it ended and its best epoch."""
        self.tracker.finish(rec.trial_id, {
            "state": state, "reason": rec.reason, "best/val_acc": rec.best_val_acc, "best/epoch": rec.best_epoch,
            "test/acc": rec.test_acc, "epochs": rec.epochs, "train_time_s": rec.train_time_s,
            "model/params": rec.num_params,
        }, failed=failed)

    def close(self) -> None:
        """Finish every open run and wait for W&B (the sweep ends, interrupted or not)."""
        self.tracker.close()

    def new_error(self) -> str | None:
        """A W&B failure not yet reported, once: its one line (the tracker's worker thread only stores it)."""
        if self.tracker.error is None or self.error == self.tracker.error:
            return None
        self.error = self.tracker.error
        return self.error
