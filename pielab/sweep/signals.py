"""Every signal a sweep driver handles, in one place: what stops it, how, and what it records.

Two regimes, one after the other in a driver command:

* Outside Tune's loop (loading the spec, starting Ray, writing the folder): :func:`stop_signals_caught`
  makes SIGTERM and SIGUSR1 raise :class:`Stopped` (a ``KeyboardInterrupt``), so they unwind as Ctrl-C
  does and the CLI exits ``128 + N``. ``ray.init`` replaces the SIGTERM handler (exit with a native
  stack dump): :func:`restore_stop_signals` puts ours back.
* Inside Tune's loop: Tune installs its own SIGINT (and SIGUSR1) handler when ``fit()`` starts, before
  it calls the callbacks' ``setup``; there :class:`Interrupts` puts a handler in front of Tune's, which
  records the signal and then calls Tune's, and routes SIGTERM to Tune's SIGINT handler the same way
  (Tune has none for it). So a Kubernetes or Slurm SIGTERM saves and stops exactly as Ctrl-C does, and
  status.json says which signal it was. A second SIGTERM/SIGUSR1 raises :class:`Stopped` (stop now, no
  saving), as a second Ctrl-C does in Tune.

A driver that must stop for a reason of its own (it lost its lease) sends itself SIGINT
(:func:`interrupt_when`): the main thread then takes Tune's graceful stop like any Ctrl-C.

No Ray, Optuna or W&B here: ``pielab.cli`` and ``pielab train`` may import it.
"""

from __future__ import annotations

import os
import signal
import threading
from contextlib import contextmanager
from typing import Any, Iterator

# Raised as Stopped outside Tune's loop (SIGINT is Python's own KeyboardInterrupt already).
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR1") if hasattr(signal, name))
# The signals Tune itself handles inside its loop; SIGTERM is routed to its SIGINT handler.
INTERRUPT_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGUSR1") if hasattr(signal, name))


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()  # only there can Python install handlers


class Stopped(KeyboardInterrupt):
    """A stop signal (SIGTERM, SIGUSR1) outside Tune's graceful stop. ``signum``: the signal; the CLI
    exits ``128 + signum`` (143 for SIGTERM, 138 for SIGUSR1) and prints ``pielab: <what>``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = int(signum)
        name = signal.Signals(self.signum).name
        self.what = f"terminated ({name})" if self.signum == getattr(signal, "SIGTERM", -1) else f"stopped ({name})"


def _raise_stopped(signum, frame) -> None:
    raise Stopped(signum)


_CATCHING: list[dict[int, Any]] = []  # the handlers each active stop_signals_caught() replaced


def catch_stop_signals() -> None:
    """SIGTERM and SIGUSR1 raise :class:`Stopped` in this (main) thread from now on; a no-op elsewhere."""
    if not _main_thread():
        return
    for sig in STOP_SIGNALS:
        signal.signal(sig, _raise_stopped)


@contextmanager
def stop_signals_caught() -> Iterator[None]:
    """:func:`catch_stop_signals` for the block (a driver command); the previous handlers come back after."""
    if not _main_thread():
        yield
        return
    _CATCHING.append({sig: signal.getsignal(sig) for sig in STOP_SIGNALS})
    catch_stop_signals()
    try:
        yield
    finally:
        for sig, handler in _CATCHING.pop().items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)


def restore_stop_signals() -> None:
    """After ``ray.init`` (which replaces the SIGTERM handler): ours again, inside :func:`stop_signals_caught`."""
    if _CATCHING:
        catch_stop_signals()


@contextmanager
def interrupt_when(event: threading.Event, poll_s: float = 0.5) -> Iterator[None]:
    """For the block: once ``event`` is set (from any thread), send this process SIGINT, which the main
    thread handles as Ctrl-C (inside Tune's loop: its graceful stop)."""
    done = threading.Event()

    def watch() -> None:
        while not done.wait(poll_s):
            if event.is_set():
                os.kill(os.getpid(), signal.SIGINT)
                return

    threading.Thread(target=watch, name="pielab-lease-watch", daemon=True).start()
    try:
        yield
    finally:
        done.set()


class Interrupts:
    """The signals that stopped Tune's loop gracefully in this run of the driver.

    :meth:`install` (inside ``fit``, after Tune installed its handlers: the recorder's ``setup``) puts a
    recording handler in front of Tune's SIGINT/SIGUSR1 handlers, and SIGTERM in front of its SIGINT
    handler; :meth:`uninstall` puts back those it replaced where ours is still installed. Off the main
    thread both are no-ops (Python cannot install handlers there, and Tune installs none either).
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.signum: int | None = None  # the first signal
        self._replaced: dict[int, Any] = {}

    def stopped(self) -> bool:
        """Whether a signal stopped this run (Ctrl-C, SIGTERM, SIGUSR1): nothing running has ended."""
        return self.event.is_set()

    def signal_name(self) -> str | None:
        """``SIGINT``, ``SIGTERM`` or ``SIGUSR1``: the signal that stopped this run, else None."""
        if not self.event.is_set():
            return None
        try:
            return signal.Signals(self.signum if self.signum is not None else signal.SIGINT).name
        except ValueError:
            return "SIGINT"

    def install(self) -> None:
        if not _main_thread():
            return
        tune_sigint = signal.getsignal(signal.SIGINT)
        plan = [(sig, signal.getsignal(sig)) for sig in INTERRUPT_SIGNALS]
        if hasattr(signal, "SIGTERM"):
            plan.append((signal.SIGTERM, tune_sigint))
        for sig, following in plan:
            if not callable(following):
                continue  # SIG_IGN / SIG_DFL: nothing catches it, so there is no graceful stop to record
            self._replaced[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handler(following))

    def _handler(self, following):
        def handler(signum, frame):
            if self.event.is_set() and signum != signal.SIGINT:
                raise Stopped(signum)  # asked twice: stop without saving (Tune's own second Ctrl-C does so)
            if not self.event.is_set():
                self.signum = signum
            self.event.set()
            following(signal.SIGINT, frame)

        handler.pielab_flags = self.event
        return handler

    def uninstall(self) -> None:
        replaced, self._replaced = self._replaced, {}
        if not _main_thread():
            return
        for sig, following in replaced.items():
            if getattr(signal.getsignal(sig), "pielab_flags", None) is not None:
                signal.signal(sig, following)
