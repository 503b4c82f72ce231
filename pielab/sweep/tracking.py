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
The key itself is never read here beyond "is there one", and never written anywhere. An ``online`` run
whose server (``WANDB_BASE_URL``, default https://api.wandb.ai) does not take a connection within 3 s is
kept offline instead, with one warning line (:func:`unreachable`): W&B's own client would wait 90 s at
each ``wandb.init`` and then drop the run.

Names: W&B refuses a run id with ``:;,#?/'`` or surrounding whitespace, a tag outside 1-64 characters,
a project with ``/\\#?%:`` or over 128 characters. Everything pielab derives (run id, group, run
name, tags) goes through :func:`run_id`, :func:`group_name` and :func:`clean_tags`, so any sweep
folder or spec name gives valid ones; the run id comes from the sweep's *study* name (fixed when the
sweep is created) and the trial id, so it is the same after a resume and after the folder is moved.
The project and entity are the user's and are passed as given: if W&B refuses them (or anything else
fails), :attr:`WandbTracker.error` holds one line and tracking is off for the rest of the run.
"""

from __future__ import annotations

import hashlib
import logging
import math
import netrc
import os
import queue
import re
import threading
from pathlib import Path
from typing import Any, Callable

logger = logging.getLogger(__name__)

WANDB_HOST = "api.wandb.ai"

_UNSAFE = re.compile(r"[^A-Za-z0-9._]+")  # "-" too: runs of separators collapse to one "-"
MAX_RUN_ID = 64  # W&B's server caps ids well above this; short ids keep folder names readable
MAX_GROUP = 128
MAX_TAG = 64


def name_hash(text: str) -> str:
    """8 hex digits of the SHA-1 of ``text``: keeps two names apart when their slugs are equal."""
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]


def slug(text: str, limit: int = 40) -> str:
    """``text`` in ``[A-Za-z0-9._-]`` (runs of anything else become one ``-``), at most ``limit`` characters,
    never starting or ending with ``-`` or ``.``; may be empty."""
    return _UNSAFE.sub("-", text)[:limit].strip("-.")


def sweep_key(study: str) -> str:
    """A sweep's short safe key, ``<slug of the study name>-<hash of it>`` (such as ``cifar-3f2a9c01``):
    valid in W&B ids and file names, the same for the life of the sweep (the study name is fixed when
    the sweep is created; a moved or renamed folder keeps it)."""
    return f"{slug(study) or 'sweep'}-{name_hash(study)}"


def trial_slug(trial_id: str) -> str:
    """A trial id in ``[A-Za-z0-9._]`` (Tune's ids, ``1a2b3_00001``, already are): no ``-``, so it can
    end a ``-``-separated name unambiguously."""
    safe = re.sub(r"[^A-Za-z0-9._]+", "_", trial_id).strip("_.")
    return safe if safe == trial_id else f"{safe[:24]}_{name_hash(trial_id)}"


def run_id(study: str, trial_id: str) -> str:
    """The W&B run id of a trial: ``<sweep_key(study)>-<trial id>``, at most 64 characters, always valid."""
    return f"{sweep_key(study)}-{trial_slug(trial_id)}"[-MAX_RUN_ID:].lstrip("-.")


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else f"{text[:limit - 9].rstrip()}-{name_hash(text)}"


def group_name(name: str) -> str:
    """The W&B group of a sweep (the spec's name), clipped to 128 characters (a hash keeps clips apart)."""
    return _clip(name, MAX_GROUP) or "pielab"


def clean_tags(tags: list[Any] | None) -> list[str]:
    """Tags W&B accepts (1 to 64 characters each, no duplicates); empty ones are dropped."""
    out: list[str] = []
    for tag in tags or []:
        tag = _clip(str(tag), MAX_TAG)
        if tag and tag not in out:
            out.append(tag)
    return out


def error_line(exc: BaseException) -> str:
    """One line for a W&B failure: the exception's first non-empty line (its type name if none)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


def api_key_configured() -> bool:
    """Whether W&B could log in online: ``WANDB_API_KEY`` or a netrc entry (the value is not kept)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    path = os.environ.get("NETRC") or os.path.join(os.path.expanduser("~"), ".netrc")
    try:
        return netrc.netrc(path).authenticators(WANDB_HOST) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def server_url() -> str:
    """The W&B server online runs go to: ``WANDB_BASE_URL``, else W&B's cloud."""
    return os.environ.get("WANDB_BASE_URL") or f"https://{WANDB_HOST}"


def unreachable(timeout: float = 3.0) -> str | None:
    """Why the W&B server (:func:`server_url`) does not take a TCP connection within ``timeout`` seconds
    (``connection refused``, ``no answer within 3 s``, a name that does not resolve), or None when it does."""
    from urllib.parse import urlsplit

    from pielab.sweep.session import tcp_problem

    url = urlsplit(server_url())
    try:
        port = url.port or (80 if url.scheme == "http" else 443)
    except ValueError as exc:  # a port that is not a number
        return str(exc).lower()
    why = tcp_problem(url.hostname or "", port, timeout)
    return why.lower() if why else None


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
    summary, failed)``, ``release()`` (begin the work), ``close()``. A W&B problem turns tracking off
    and leaves one line in :attr:`error` (the recorder shows it and records it in status.json); it
    never ends the sweep. ``group`` and ``tags`` are made valid here; ``project`` is passed as given.
    """

    def __init__(self, *, sweep_dir: str | Path, group: str, project: str, entity: str | None, mode: str,
                 tags: list[str] | None = None) -> None:
        self.sweep_dir = str(sweep_dir)
        self.group = group_name(group)
        self.project = project
        self.entity = entity
        self.mode = mode
        self.tags = clean_tags(tags)
        self.error: str | None = None  # the first failure, one line; set by the worker thread
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

    def update_config(self, trial_id: str, values: dict[str, Any]) -> None:
        """Add ``values`` (such as the trial's ``provenance.*`` keys, known after its first epoch) to its run's config."""
        self._submit(lambda: self._update_config(trial_id, values))

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
                self.error = error_line(exc)
                self._broken = True
                logger.debug("W&B tracking turned off", exc_info=True)
                self._abandon()

    def _start(self, trial_id: str, config_flat: dict[str, Any], run_id: str) -> None:
        if trial_id in self._runs:
            return  # a retried trial keeps its run
        import wandb

        settings = wandb.Settings(console="off", silent=True, x_disable_stats=True, x_disable_meta=True)
        run = wandb.init(
            project=self.project, entity=self.entity, group=self.group, name=_clip(trial_id, 128), id=run_id,
            job_type="trial", tags=self.tags, config=config_flat, dir=self.sweep_dir, mode=self.mode,
            reinit="create_new", resume="allow", settings=settings,
        )
        self._runs[trial_id] = run

    def _update_config(self, trial_id: str, values: dict[str, Any]) -> None:
        run = self._runs.get(trial_id)
        if run is not None:
            run.config.update(values, allow_val_change=True)  # a restarted trial may report another device

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

    def _abandon(self) -> None:
        """After a failure: close the runs already open (best effort), so their files end cleanly."""
        for run in self._runs.values():
            try:
                run.finish(exit_code=1)
            except Exception:  # noqa: BLE001 - already broken; nothing more to report
                pass
        self._runs.clear()

    def _finish_all(self) -> None:
        for trial_id in list(self._runs):
            self._finish(trial_id, {}, failed=False)
