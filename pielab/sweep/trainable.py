"""The Ray Tune trainable: a thin adapter around :func:`pielab.train.fit` (DESIGN convention 6).

One trial = build the Config from the base config plus the sampled dotted parameters, resume from
``tune.get_checkpoint()`` if Tune restarts the trial, call ``fit`` and forward every epoch's metrics
with ``tune.report(metrics, checkpoint=...)``. Nothing about the model or the data lives here.

Cost per trial: this module (torch, pielab.train, the models) is imported once per worker process;
with ``reuse_actors=True`` the next trial in the same process pays nothing again. The data is
prepared once per machine by :func:`pielab.data.prepare` (an on-disk memory-mapped cache that the
driver builds before the first trial) and memoised per process here, so a reused worker does not
even reopen it.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from ray import tune

from pielab.errors import Diverged, PielabError
from pielab.folder import PARAMS_KEY, PROVENANCE_KEY  # reported with every epoch: the model's parameter count

STATE_FILE = "state.pt"

# Per-process memo of prepared data: a cache of file-backed tensors, not configuration.
_PREPARED: "OrderedDict[str, Any]" = OrderedDict()
_PREPARED_MAX = 2


def _prepared_for(config) -> Any:
    from pielab.data import prepare

    key = json.dumps([config.task, config.to_dict()["data"]], sort_keys=True, default=str)
    if key not in _PREPARED:
        _PREPARED[key] = prepare(config.task, config.data)
        while len(_PREPARED) > _PREPARED_MAX:
            _PREPARED.popitem(last=False)
    _PREPARED.move_to_end(key)
    return _PREPARED[key]


def _plain(value: Any) -> Any:
    """Metrics as plain Python numbers (Tune refuses tensors; numpy scalars become floats)."""
    if isinstance(value, torch.Tensor):
        return value.item()
    if hasattr(value, "item") and not isinstance(value, (int, float, str, bool)):
        try:
            return value.item()
        except (TypeError, ValueError):
            return value
    return value


def _surviving(checkpoint: tune.Checkpoint) -> tune.Checkpoint | None:
    """``checkpoint``, or when its state file is gone, the trial's nearest whole checkpoint: the oldest
    later one that holds a state file, else the newest earlier one, else None (train from scratch).
    ``checkpoint`` itself when its state file is there (a corrupt one then fails with its one line) or
    the storage cannot be listed. The trial's journal names the missing one on its start line
    (``missing_checkpoint=checkpoint_000001``).

    After a ``kill -9`` of the driver Tune restores an experiment snapshot that can name a checkpoint it
    had already deleted (``num_to_keep``) once newer ones were saved (RELIABILITY.md 9b: seen on S3, where
    Tune uploads its snapshot in the background). A deletion cut short leaves the folder without its state
    file, which reaches this code; a folder gone entirely does not: Tune's own ``Trainable.restore``
    refuses it first (9b, not fixed). Failing the trial would lose all of its work; the nearest whole
    checkpoint loses the least.
    """
    import pyarrow.fs

    from pielab.sweep.compat import checkpoint_dir_index

    fs, path = checkpoint.filesystem, checkpoint.path.rstrip("/")
    try:
        if fs.get_file_info(f"{path}/{STATE_FILE}").type != pyarrow.fs.FileType.NotFound:
            return checkpoint
        parent, name = path.rsplit("/", 1)
        index = checkpoint_dir_index(name)
        if index is None:
            return checkpoint
        found = sorted((i, info.path) for info in fs.get_file_info(pyarrow.fs.FileSelector(parent))
                       if info.type == pyarrow.fs.FileType.Directory
                       and (i := checkpoint_dir_index(info.base_name)) is not None)
        later = [folder for i, folder in found if i > index]
        earlier = [folder for i, folder in reversed(found) if i < index]
        for folder in later + earlier:
            if fs.get_file_info(f"{folder}/{STATE_FILE}").type == pyarrow.fs.FileType.File:
                return tune.Checkpoint(path=folder, filesystem=fs)
        return None
    except Exception:  # noqa: BLE001 - storage unreadable here: loading the original says why
        return checkpoint


def _load_state(checkpoint: tune.Checkpoint | None) -> dict[str, Any] | None:
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        # The training-loop state holds only tensors and primitives: no pickled code is loaded.
        try:
            return torch.load(os.path.join(folder, STATE_FILE), map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - truncated, corrupt or foreign (code-carrying) pickle
            # Every retry would get the same checkpoint: end the trial as failed, with one clear reason.
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
            raise PielabError(f"checkpoint {checkpoint.path} is not a readable pielab trial state "
                              f"({type(exc).__name__}: {first})") from None


# --------------------------------------------------------------------------- checkpoint staging

STAGING_PREFIX = "pielab-ckpt-"


def staging_prefix(study: str | None, trial_id: str | None = None, pid: int | None = None) -> str:
    """The name prefix of a trial's checkpoint staging folders in the temp directory.

    ``pielab-ckpt-<sweep key>-<trial>-<pid>-`` (``tempfile`` appends 8 characters without ``-``): the
    sweep key (:func:`pielab.sweep.tracking.sweep_key` of the study name) says which sweep, the pid
    which process, so a SIGKILLed trial's leftovers can be found and removed without touching another
    sweep's or a live process's. Without ``trial_id`` and ``pid``: the sweep's common prefix.
    ``study`` None (no sweep folder): the bare ``pielab-ckpt-``, never cleaned up by name.
    """
    if not study:
        return STAGING_PREFIX
    from pielab.sweep.tracking import sweep_key, trial_slug

    prefix = f"{STAGING_PREFIX}{sweep_key(study)}-"
    if trial_id is None:
        return prefix
    return f"{prefix}{trial_slug(trial_id)}-{os.getpid() if pid is None else pid}-"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # not a process we can judge: keep its folders
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: someone else's live process
        return True
    return True


def remove_stale_staging(study: str | None, root: str | Path | None = None) -> list[Path]:
    """Remove this sweep's checkpoint staging folders whose creating process is dead; returns them.

    A trial stages each epoch's checkpoint in a temporary folder that its ``with`` block removes; a
    SIGKILL (the kernel's OOM killer, a lost node, a killed driver) skips that. Only folders named by
    :func:`staging_prefix` for ``study`` on this machine are candidates, and only those whose pid no
    longer runs: another sweep's, or a running trial's, are kept. ``root``: the temp directory
    (default :func:`tempfile.gettempdir`, which trial workers on this machine share). Never raises.
    """
    if not study:
        return []
    prefix = staging_prefix(study)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root or tempfile.gettempdir()))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        parts = entry.name[len(prefix):].split("-")
        # <trial>-<pid>-<tempfile's suffix>: exactly three parts, so a sweep whose key merely starts
        # with this one (its rest holds more '-') never matches.
        if len(parts) != 3 or not parts[1].isdigit():
            continue
        try:
            if not entry.is_dir(follow_symlinks=False) or _pid_alive(int(parts[1])):
                continue
        except OSError:
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        if not os.path.exists(entry.path):
            removed.append(Path(entry.path))
    return removed


def _sweep_study(sweep_dir: str | None) -> str | None:
    """The study name of the sweep this trial belongs to (status.json's, as the driver recorded it)."""
    if sweep_dir is None:
        return None
    from pielab.folder import study_name

    try:
        return study_name(sweep_dir)
    except Exception:  # noqa: BLE001 - an unreadable folder: stage under the bare prefix
        return None


JOURNAL_FILE = "epochs.log"


class _Journal:
    """``tune/<trial>/epochs.log`` of one run of a trial: every start (with the checkpoint it resumed
    from) and every epoch trained, written as the epoch goes to Tune's report (the first epoch of a run
    also says when its first training batch started: ``first_batch_at=<time.time()>``), so a retry or a
    resume that redoes work shows it. A run killed inside that report may have saved no checkpoint of
    the last epoch it lists: its restart then resumes one epoch earlier and lists it twice. Best effort,
    on a local (or shared) folder or on object storage. Object stores cannot append: the journal is
    read once when the run starts and then written whole, one PUT a line (no GET per epoch)."""

    def __init__(self) -> None:
        self.text: bytes | None = None  # object storage: what the journal holds, once read

    def __call__(self, line: str) -> None:
        try:
            storage = tune.get_context().get_storage()
            folder = storage.trial_fs_path
            if storage.custom_fs_provided:  # object storage (pielab.folder.storage)
                fs, path = storage.storage_filesystem, f"{folder}/{JOURNAL_FILE}"
                if self.text is None:
                    try:
                        with fs.open_input_stream(path) as f:
                            self.text = f.read()
                    except FileNotFoundError:
                        self.text = b""
                text = self.text + line.encode() + b"\n"
                with fs.open_output_stream(path) as f:
                    f.write(text)
                self.text = text
            elif os.path.isdir(storage.experiment_fs_path):
                os.makedirs(folder, exist_ok=True)
                with open(os.path.join(folder, JOURNAL_FILE), "a") as f:
                    f.write(line + "\n")
        except Exception:  # noqa: BLE001 - a journal must never fail a trial
            pass


def _node_ip() -> str:
    try:
        import ray

        return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001
        return "?"


def _gpu_ids() -> str:
    """The GPUs Ray gave this trial ("0,1"; "-" for none). With a fractional ``resources.gpu`` several
    trials show the same id: they share that GPU."""
    try:
        import ray

        return ",".join(str(i) for i in ray.get_gpu_ids()) or "-"
    except Exception:  # noqa: BLE001
        return "?"


def _faults() -> list:
    """Fault injection for the reliability tests: nothing unless ``PIELAB_FAULTS`` is set."""
    if not os.environ.get("PIELAB_FAULTS"):
        return []
    from pielab.sweep.faults import parse

    return parse(os.environ["PIELAB_FAULTS"])


def _recorded_end(sweep_dir: Any) -> dict[str, Any] | None:
    """Whether the sweep folder records this trial as ended.

    After a driver crash, Tune restores from a snapshot that can predate a trial's end; it would then
    restart the finished trial from an older checkpoint and train its last epoch again. The sweep
    folder's ``result.json`` is written when the trial ends, so it is the authority here.
    """
    if sweep_dir is None:
        return None
    from pielab.folder import ENDED_STATES, RESULT_FILE, TRIALS_DIR, location, read_json

    try:  # sweep_dir: a local path, or an ObjectPath (object storage)
        result = read_json(location(sweep_dir) / TRIALS_DIR / tune.get_context().get_trial_id() / RESULT_FILE)
    except Exception:  # noqa: BLE001 - unreadable or absent (e.g. another node without the folder): train
        return None
    ended = bool(result) and bool(result.get("ended")) and result.get("state") in ENDED_STATES
    return result if ended else None


def run_trial(params: dict[str, Any], *, base: dict[str, Any], metric: str | list[str],
              sweep_dir: Any = None) -> None:
    """Tune function trainable. ``params`` is the searcher's suggestion: ``{dotted key: value}``;
    ``metric``: the sweep's metric, or every objective's for a multi-objective sweep (closing results
    carry each, as NaN when unmeasured: Tune requires the searcher's metrics in every result);
    ``sweep_dir``: a local folder as text, or one on object storage as its ObjectPath."""
    last: dict[str, Any] = {"epoch": 0}
    # Every result must carry these (Tune's scheduler and searcher check them), the closing ones too.
    # One name, one meaning: a diverging first epoch once met this list rebound to a dict here.
    objectives = (metric,) if isinstance(metric, str) else tuple(metric)

    def end(flag: str, exc: Exception, default_reason: str) -> None:
        # One flagged result, then return: Tune records the trial as ended, not errored, so it is
        # not retried. The epoch stays the last reported one, so the scheduler records no new rung.
        final = dict(last)
        for key in objectives:
            final.setdefault(key, math.nan)
        final.update({flag: True, "reason": str(exc) or default_reason})
        tune.report(final)

    ended = _recorded_end(sweep_dir)
    if ended is not None:
        # One closing result that repeats the recorded end (the scheduler requires the metric in every
        # result); the driver's recorder ignores results of trials it already holds as ended.
        value = ended.get("best_value")
        closing = {key: math.nan for key in objectives}
        closing[objectives[0]] = math.nan if value is None else value
        tune.report({"epoch": int(ended.get("epochs") or 0), **closing})
        return
    try:
        from pielab.config import apply_params

        # The one merge rule (the driver's recorder applies it to the same base); base.train.threads is
        # the trial's CPU share (tuner.trial_base).
        config = apply_params(base, params)
        prepared = _prepared_for(config)
        restored = tune.get_checkpoint()
        checkpoint = None if restored is None else _surviving(restored)
        state = _load_state(checkpoint)
        if state is not None:
            last["epoch"] = int(state.get("epoch", 0))
            if last["epoch"] >= config.train.epochs:
                return  # restarted after its last epoch was reported and saved: nothing left to train

        faults = _faults()
        study = _sweep_study(sweep_dir)
        remove_stale_staging(study)  # this node's leftovers of killed trials (the driver sees only its own)
        staging = staging_prefix(study, tune.get_context().get_trial_id())
        _journal = _Journal()
        missing = ""
        if checkpoint is not restored:  # Tune restored a checkpoint that is gone: _surviving chose another
            missing = f" missing_checkpoint={restored.path.rstrip('/').rsplit('/', 1)[-1]}"
        _journal(f"start after_epoch={last['epoch']} pid={os.getpid()} node={_node_ip()} gpus={_gpu_ids()} "
                 f"at={time.time():.3f}{missing}")

        provenance_sent = False  # the device line goes with the first epoch a run reports
        # When this run's first training batch reached the model (time.time()): written once, on the
        # first epoch's journal line (``epoch N first_batch_at=T``), so measuring it costs no extra write.
        first_batch: list[float] = []

        def on_epoch(metrics: dict[str, Any], epoch_state: dict[str, Any]) -> None:
            nonlocal provenance_sent
            if faults:  # tests only: PIELAB_FAULTS (pielab.sweep.faults); fires before the epoch is saved
                from pielab.sweep.faults import maybe_fault

                maybe_fault(faults, tune.get_context().get_trial_id(), int(metrics["epoch"]))
            metrics = {k: _plain(v) for k, v in metrics.items()}
            if "params" in epoch_state:
                metrics[PARAMS_KEY] = int(epoch_state["params"])
            last.clear()
            last.update(metrics)
            if not provenance_sent and epoch_state.get("provenance"):
                # The device this trial trains on (a restarted trial may land on another node: it says so again).
                metrics[PROVENANCE_KEY] = json.dumps(epoch_state["provenance"], sort_keys=True)
                provenance_sent = True
            with tempfile.TemporaryDirectory(prefix=staging) as tmp:
                torch.save(epoch_state, os.path.join(tmp, STATE_FILE))
                at = f" first_batch_at={first_batch.pop():.3f}" if first_batch else ""
                # Before the report: when a scheduler or the budget stops the trial at this report, Tune
                # ends this thread inside ``report`` (SystemExit), and a line after it was never written.
                _journal(f"epoch {metrics.get('epoch')}{at}")
                # Tune copies the folder into the trial's storage before report returns.
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(tmp))

        from pielab.train import fit

        fit(config, on_epoch=on_epoch, resume=state, prepared=prepared, log=None, on_first_batch=first_batch.append)
    except Diverged as exc:
        # A NaN/inf loss is a property of the configuration: retrying cannot help.
        end("diverged", exc, "non-finite loss")
    except PielabError as exc:
        # Bad config or missing data: the same input fails the same way on every retry.
        end("failed", exc, type(exc).__name__)
