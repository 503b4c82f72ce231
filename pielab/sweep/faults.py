"""Fault injection for reliability tests: OFF unless ``PIELAB_FAULTS`` is set in the trial's environment.

``PIELAB_FAULTS="KIND@epoch=N[,times=K][,trial=first|all][;...]"``, KIND one of

- ``raise``: a RuntimeError, as a bug in the training code would;
- ``oom``: ``torch.OutOfMemoryError``, as an accelerator out of memory would;
- ``kill``: SIGKILL of the trial's own worker process (the process dies, no clean-up);
- ``nan``: the loss turned non-finite (``Diverged``, as ``fit`` raises it);
- ``driver``: a RuntimeError in the *driver*, in the Tune callback that records epoch N of a trial (as a
  bug in the driver would): Tune's loop ends with it. It fires once per driver process; trials ignore it.
- ``budget``: the sweep's budget runs out in the *driver* when the first result of epoch N reaches the
  stopper (as ``budget.cpu_hours`` would), so that trial stops at epoch N and every other running trial at
  its next result. Once per driver process; trials ignore it.
- ``slow``: the trial sleeps ``seconds=S`` (default 5) before reporting epoch N, so that other trials run
  ahead of it (with ``budget``: one trial stopped at its last epoch, another at its first).

The fault fires in epoch N's ``on_epoch`` *before* that epoch is reported and checkpointed, so a retry
resumes from epoch N-1's checkpoint and redoes epoch N only. ``times`` (default 1) counts how often a
trial faults, in a marker file, so a retried trial does not fault again (``times=99`` exhausts
``max_failures``). ``trial=first`` (default) faults only the first trial to reach epoch N that holds no other fault
(claimed with an exclusive file create, so exactly one trial, whichever order Ray runs them in);
``trial=all`` faults each.
Markers live in ``PIELAB_FAULTS_DIR`` (default: the Tune experiment folder, shared by every node that
shares the sweep's storage).
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

ENV = "PIELAB_FAULTS"
KINDS = ("raise", "oom", "kill", "nan", "driver", "budget", "slow")
DRIVER_KINDS = ("driver", "budget")
_DRIVER_FIRED: list[str] = []  # each driver fault fires once per process


@dataclass
class Fault:
    kind: str
    epoch: int
    times: int = 1
    trial: str = "first"
    seconds: float = 5.0


def parse(text: str | None) -> list[Fault]:
    faults = []
    for part in (text or "").split(";"):
        part = part.strip()
        if not part:
            continue
        kind, _, rest = part.partition("@")
        opts = dict(kv.split("=", 1) for kv in rest.split(",") if "=" in kv)
        if kind not in KINDS or "epoch" not in opts:
            raise ValueError(f"{ENV}: cannot read {part!r} (expected KIND@epoch=N[,times=K][,trial=first|all], "
                             f"KIND one of {', '.join(KINDS)})")
        faults.append(Fault(kind, int(opts["epoch"]), int(opts.get("times", 1)), opts.get("trial", "first"),
                            float(opts.get("seconds", 5.0))))
    return faults


def _state_dir() -> Path:
    folder = os.environ.get("PIELAB_FAULTS_DIR")
    if not folder:
        from ray import tune

        folder = tune.get_context().get_storage().experiment_fs_path
    path = Path(folder) / "faults"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _claimed(path: Path, trial_id: str) -> bool:
    """Whether ``trial_id`` owns the claim file (creating it if nobody does yet). A trial holds at most
    one ``trial=first`` fault, so several faults in one sweep hit several trials."""
    if path.exists():
        return path.read_text().strip() == trial_id
    if any(p.read_text().strip() == trial_id for p in path.parent.glob("*.claim")):
        return False
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return path.read_text().strip() == trial_id
    with os.fdopen(fd, "w") as f:
        f.write(trial_id)
    return True


def maybe_fault(faults: list[Fault], trial_id: str, epoch: int) -> None:
    """Fire the fault planned for this trial at this epoch, if any (and if it has fired < times)."""
    for i, fault in enumerate(faults):
        if fault.epoch != epoch or fault.kind in DRIVER_KINDS:
            continue
        state = _state_dir()
        if fault.trial != "all" and not _claimed(state / f"{i}-{fault.kind}.claim", trial_id):
            continue
        marker = state / f"{i}-{fault.kind}-{trial_id}.count"
        count = int(marker.read_text()) if marker.exists() else 0
        if count >= fault.times:
            continue
        marker.write_text(str(count + 1))  # written before the fault: a killed process counts too
        message = f"injected {fault.kind} fault at epoch {epoch} ({count + 1} of {fault.times})"
        if fault.kind == "raise":
            raise RuntimeError(message)
        if fault.kind == "oom":
            import torch

            raise torch.OutOfMemoryError(f"CUDA out of memory: {message}")
        if fault.kind == "nan":
            from pielab.errors import Diverged

            raise Diverged(f"loss is nan at epoch {epoch} ({message})")
        if fault.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if fault.kind == "slow":
            import time

            time.sleep(fault.seconds)


def _driver_fault(kind: str, epoch: int) -> bool:
    """Whether the driver fault ``kind`` of ``PIELAB_FAULTS`` fires at ``epoch`` now (once per process)."""
    if not os.environ.get(ENV) or kind in _DRIVER_FIRED:
        return False
    if any(f.kind == kind and f.epoch == epoch for f in parse(os.environ[ENV])):
        _DRIVER_FIRED.append(kind)
        return True
    return False


def maybe_driver_fault(epoch: int) -> None:
    """In the driver: raise the ``driver`` fault of ``PIELAB_FAULTS`` when a trial's epoch ``epoch`` is
    recorded (once per process). Nothing unless the variable is set."""
    if _driver_fault("driver", epoch):
        raise RuntimeError(f"injected driver fault at epoch {epoch}")


def budget_fault(epoch: int) -> str | None:
    """In the driver's stopper: the reason to end the sweep's budget now, when ``PIELAB_FAULTS`` holds
    ``budget@epoch=N`` and this is the first result of epoch N (once per process); else None."""
    return f"injected budget fault at epoch {epoch}" if _driver_fault("budget", epoch) else None
