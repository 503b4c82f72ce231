"""This driver's session: starting or joining Ray (the sweep it is running now: :mod:`pielab.sweep.active`).

Ray: a local instance with every socket on 127.0.0.1, or a cluster at ``--address``; the
environment Ray reads when it starts; a resource check; relative data paths made absolute before
trial workers (which run in other folders) see them.

The sweep running now (:class:`ActiveSweep`): ``Tuner.restore`` unpickles the searcher and the
recorder callback from ``<sweep>/tune``, and those pickles deliberately hold neither the database
password nor the sweep folder's place on disk (a folder can be moved between a crash and its
resume). While :func:`running` is active, the unpickled objects take the place and the study URL
from it: the folder where it is now, the URL with the password this process was given.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from pathlib import Path


from pielab.errors import PielabError
from pielab.sweep.signals import restore_stop_signals
from pielab.text import one_line


# --------------------------------------------------------------------------- Ray


def set_quiet_env() -> None:
    """Environment that Ray reads when it starts: loopback only, no usage reporting, quiet Tune."""
    from pielab.sweep.compat import QUIET_LOGGERS

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no reporting to an outside server
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # our own status display instead of Tune's tables
    # Tune's own per-trial loggers (result.json, progress.csv, TensorBoard events under tune/<trial>/)
    # stay on: Ray's ExperimentAnalysis, Tuner.restore(...).get_results() and TensorBoard read them.
    # A checkpoint per epoch with num_to_keep=2 makes Tune snapshot its experiment state often (so a
    # restore never points at a deleted one); that is intended, not worth a warning.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    # A failed trial is one pielab line with its error; Tune's own traceback of it stays in
    # tune/<trial>/error.txt instead of the terminal, where it tore the live view (set it to 1 to see them).
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)


def localize_env() -> None:
    """Make the relative data folders in the environment absolute, before Ray starts.

    Ray starts trial workers in their own folders, so ``PIELAB_DATA_DIR=../shared/data`` would name
    nothing there; local workers inherit the driver's environment when Ray starts, so fixing it here
    fixes it for every trial on this machine.
    """
    for var in ("PIELAB_DATA_DIR", "PIELAB_CACHE_DIR"):
        if os.environ.get(var):
            os.environ[var] = str(Path(os.environ[var]).expanduser().resolve())


def localize_paths(spec) -> None:
    """``localize_env`` plus the base config's own relative ``data.path`` / ``data.cache_dir``."""
    localize_env()
    data = spec.base.data
    for attr in ("path", "cache_dir"):
        value = getattr(data, attr)
        if value and not Path(value).expanduser().is_absolute():
            setattr(data, attr, str(Path(value).expanduser().resolve()))


def check_reachable(address: str, timeout: float = 3.0) -> None:
    """Fail within seconds, with one line, when ``--address`` names nothing that answers.

    Raises:
        PielabError: ``address`` is not HOST:PORT / ray://HOST:PORT / auto, or nothing answers there.
    """
    if address == "auto":
        return
    target = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise PielabError(f"--address {address}: expected HOST:PORT (such as 10.0.0.1:6379), ray://HOST:PORT or auto")
    reason = tcp_problem(host.strip("[]"), int(port), timeout)
    if reason:
        raise PielabError(
            f"cannot reach a Ray cluster at {address} ({reason}); start one with `ray start --head` or fix --address"
        ) from None


def tcp_problem(host: str, port: int, timeout: float) -> str | None:
    """Why nothing at ``host:port`` takes a TCP connection within ``timeout`` seconds (the OS's reason, such
    as ``Connection refused``, or ``no answer within 3 s``), or None when something does."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except socket.timeout:
        return f"no answer within {timeout:g} s"
    except OSError as exc:
        return exc.strerror or type(exc).__name__


def cluster_address(address: str | None) -> str | None:
    """The cluster this driver joins: ``--address``, else ``RAY_ADDRESS`` (set by the Ray job server
    for a ``ray job submit`` driver, or by a user), else None (a local Ray on 127.0.0.1).

    Resolved once, by the command, so that everything downstream treats a ``RAY_ADDRESS`` driver as
    one with ``--address``: no local resource check, no local-only ``ray.init`` options (Ray refuses
    ``include_dashboard`` when it joins a cluster), and status.json records where it ran.
    """
    return address or os.environ.get("RAY_ADDRESS") or None


def start_ray(address: str | None) -> bool:
    """Start a local Ray with every socket on 127.0.0.1, or join ``address`` (HOST:PORT, ray://..., auto).

    Returns True when this call connected (the caller then shuts Ray down), False when Ray was
    already initialised in this process. Must run on the main thread: Ray ties the processes it
    starts to the lifetime of the starting thread.

    Raises:
        PielabError: ``address`` cannot be reached or joined.
    """
    import ray

    set_quiet_env()
    localize_env()
    if ray.is_initialized():
        return False
    common = dict(logging_level=logging.WARNING, log_to_driver=False, configure_logging=True)
    if address:
        check_reachable(address)
        try:
            ray.init(address=address, **common)
        except Exception as exc:  # ConnectionError, auth problems, version mismatch
            raise PielabError(f"cannot join the Ray cluster at {address}: {one_line(str(exc), 200)}") from None
        finally:
            restore_stop_signals()  # ray.init replaced the SIGTERM handler
        return True
    try:
        ray.init(_node_ip_address="127.0.0.1", include_dashboard=False, **common)
    finally:
        restore_stop_signals()
    return True


def check_resources(needs: dict[str, float]) -> None:
    """A local machine that cannot hold one trial is an error now, not a sweep that waits forever.

    ``needs``: ``{"cpu": n, "gpu": m}`` per trial. Raises PielabError naming the fix.
    """
    import ray

    have = ray.cluster_resources()
    for key, ray_key in (("cpu", "CPU"), ("gpu", "GPU")):
        want = needs.get(key, 0) or 0
        if want > have.get(ray_key, 0):
            fix = "--set resources.gpu=0" if key == "gpu" else f"--set resources.cpu={int(have.get(ray_key, 1))}"
            raise PielabError(
                f"each trial asks for {want:g} {key.upper()} but this machine has {have.get(ray_key, 0):g}; "
                f"use {fix} or join a cluster with --address"
            )


# --------------------------------------------------------------------------- leaving the process


def exit_process(code: int) -> None:
    """End this driver process with ``code`` now that its command is done: exit handlers run, output is
    flushed, and the interpreter's own teardown is skipped.

    Once Ray, torch and W&B were loaded, Python's teardown after the exit handlers (module and C++
    extension destructors: Ray's core worker and gRPC, torch) took 2 to 4 s on the 2-core benchmark
    machine (``benchmarks/sweep_overhead.py``, BENCHMARKS.md) with no Python code left to run:
    time a user waits for a sweep that has finished. Everything pielab and its libraries must do at
    exit runs before: threading's join of non-daemon threads (with one alive this falls back to a
    normal exit), then every ``atexit`` handler (W&B's finaliser, logging's flush, Ray's shutdown),
    then stdout and stderr are flushed. Returns only when it falls back.
    """
    if any(t is not threading.main_thread() and t.is_alive() and not t.daemon for t in threading.enumerate()):
        return  # a non-daemon thread still works: let the interpreter wait for it as usual
    import atexit
    import sys

    atexit._run_exitfuncs()  # noqa: SLF001 - CPython's documented-by-tests hook; it prints handler errors
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001 - a closed or broken pipe: nothing more can be said
            pass
    os._exit(code)
