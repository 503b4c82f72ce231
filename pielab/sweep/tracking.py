"""Weights & Biases: one run per trial, owned by the driver.

Why not Ray's ``WandbLoggerCallback``: it starts one Ray actor (a fresh Python process importing
wandb) per trial, logs Tune's raw results (config = only the sampled values, Tune's bookkeeping keys
in every row) and cannot know how a trial ended (early-stopped, diverged). Trial-side runs
(``setup_wandb``) lose their last rows when Tune stops or reuses the actor. Here the driver owns
every run: wandb's multi-run support (``reinit="create_new"``) keeps all of them in one process and
one wandb service, a worker thread does the W&B calls so Tune's event loop never waits on them, and
every run gets the resolved config (flat dotted keys), one history row per epoch (``step=epoch``)
and a summary with the trial's end state and the test accuracy at its best epoch. Runs are finished
when their trial ends, and all of them when the sweep ends, interrupted or not.

Mode: ``online`` or ``offline`` as given; ``auto`` is online only when an API key is configured
(``WANDB_API_KEY`` or a netrc entry for api.wandb.ai), offline otherwise. Offline runs land in
``<sweep>/wandb/offline-run-*`` and upload later with ``wandb sync <sweep>/wandb/offline-run-*``.
The key itself is never read here beyond "is there one", and never written anywhere.
"""

from __future__ import annotations

import logging
import math
import netrc
import os
import queue
import threading
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)

WANDB_HOST = "api.wandb.ai"


def api_key_configured() -> bool:
    """Whether W&B could log in online: ``WANDB_API_KEY`` or a netrc entry (the value is not kept)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_mode(enabled: bool, mode: str | None) -> str:
    """``disabled`` | ``online`` | ``offline`` from ``tracking.wandb`` and ``tracking.mode``."""
    if not enabled or mode == "disabled":
        return "disabled"
    if mode in ("online", "offline"):
        return mode
    return "online" if api_key_configured() else "offline"


def _loggable(metrics: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and math.isnan(v))
    }


class WandbTracker:
    """Driver-side W&B runs, one per trial; every call returns at once (a worker thread does the work).

    ``start(trial_id, config_flat, run_id)``, ``log(trial_id, metrics, epoch)``, ``finish(trial_id,
    summary, failed)``, ``release()`` (begin the work), ``close()``. A W&B problem is logged once and
    turns tracking off; it never ends the sweep.
    """

    def __init__(self, *, sweep_dir: str | Path, group: str, project: str, entity: str | None, mode: str,
                 tags: list[str] | None = None) -> None:
        self.sweep_dir = str(sweep_dir)
        self.group = group
        self.project = project
        self.entity = entity
        self.mode = mode
        self.tags = tags or []
        self._runs: dict[str, Any] = {}
        self._steps: dict[str, int] = {}
        self._queue: "queue.Queue[Callable[[], None] | None]" = queue.Queue()
        self._thread: threading.Thread | None = None
        self._broken = False

    # ------------------------------------------------------------------ public, non-blocking

    def release(self) -> None:
        """Start working through the queued calls (importing wandb and starting its service first).

        The sweep calls this once the first trial has reported an epoch: until then the two cores
        are busy starting Ray and the trial workers, and W&B's start-up would only delay them.
        Calls made before it wait in the queue, in order.
        """
        if self._thread is None and not self._broken:
            self._thread = threading.Thread(target=self._work, name="pielab-wandb", daemon=True)
            self._thread.start()

    def start(self, trial_id: str, config_flat: dict[str, Any], run_id: str) -> None:
        self._submit(lambda: self._start(trial_id, config_flat, run_id))

    def log(self, trial_id: str, metrics: dict[str, Any], epoch: int) -> None:
        self._submit(lambda: self._log(trial_id, dict(metrics), int(epoch)))

    def finish(self, trial_id: str, summary: dict[str, Any], failed: bool = False) -> None:
        self._submit(lambda: self._finish(trial_id, dict(summary), failed))

    def close(self, timeout: float = 120.0) -> None:
        """Finish every open run and wait for the worker (at most ``timeout`` seconds)."""
        self._submit(self._finish_all)
        self._queue.put(None)
        self.release()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    # ------------------------------------------------------------------ worker thread

    def _submit(self, job: Callable[[], None]) -> None:
        if not self._broken:
            self._queue.put(job)

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if self._broken:
                continue
            try:
                job()
            except Exception as exc:  # W&B trouble must never end a sweep
                self._broken = True
                logger.warning("W&B tracking turned off after an error: %s", str(exc).splitlines()[0] if str(exc) else exc)

    def _start(self, trial_id: str, config_flat: dict[str, Any], run_id: str) -> None:
        if trial_id in self._runs:
            return  # a retried trial keeps its run
        import wandb

        settings = wandb.Settings(console="off", silent=True, x_disable_stats=True, x_disable_meta=True)
        run = wandb.init(
            project=self.project, entity=self.entity, group=self.group, name=trial_id, id=run_id,
            job_type="trial", tags=self.tags, config=config_flat, dir=self.sweep_dir, mode=self.mode,
            reinit="create_new", resume="allow", settings=settings,
        )
        self._runs[trial_id] = run

    def _log(self, trial_id: str, metrics: dict[str, Any], epoch: int) -> None:
        run = self._runs.get(trial_id)
        if run is None or epoch <= self._steps.get(trial_id, 0):
            return  # W&B steps only grow: a retried trial repeats epochs it already logged
        run.log(_loggable(metrics), step=epoch)
        self._steps[trial_id] = epoch

    def _finish(self, trial_id: str, summary: dict[str, Any], failed: bool) -> None:
        run = self._runs.pop(trial_id, None)
        if run is None:
            return
        for key, value in summary.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                run.summary[key] = value
        run.finish(exit_code=1 if failed else 0)

    def _finish_all(self) -> None:
        for trial_id in list(self._runs):
            self._finish(trial_id, {}, failed=False)
