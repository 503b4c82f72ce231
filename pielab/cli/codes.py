"""The exit codes of every ``pielab`` command: their one definition.

Exit codes (every command; ``pielab sweep`` and ``pielab resume`` use them all, and their closing
line says which case it was). This table is the one definition: ``EXIT_CODES_HELP`` below is the
``--help`` epilog of both commands.

====  =====================================================================================
code  meaning
====  =====================================================================================
0     finished: every trial ran (``finished``), or the spec's own ``time_budget_s`` ended the
      sweep (``time budget reached``); also a resume of a finished sweep (``already finished``)
1     failed: every trial failed, or the sweep stopped as hopeless (its first trials all
      failed before their first epoch)
2     bad input or refused: a bad spec or flag, a changed ``sweep.yaml`` on resume, another
      driver holds the sweep folder (its lease), or this driver lost the lease to another one
130   interrupted by Ctrl-C (SIGINT); state saved, ``pielab resume`` continues it
138   stopped by SIGUSR1 (Slurm's ``--signal=B:USR1@N`` warning); state saved, resumable
143   terminated by SIGTERM (Kubernetes, Slurm, ``kill``); state saved, resumable
====  =====================================================================================

A signal N that stops a driver gives 128 + N, the shell's convention. A second Ctrl-C skips saving.
"""

from __future__ import annotations

EXIT_FINISHED = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_SIGUSR1 = 138  # 128 + SIGUSR1
EXIT_TERMINATED = 143  # 128 + SIGTERM

EXIT_CODES_HELP = """\
exit codes:
  0    finished: every trial ran, or the spec's time_budget_s ended the sweep (also: already finished)
  1    failed: every trial failed, or the sweep stopped as hopeless
  2    bad input or refused: bad spec or flag, sweep.yaml changed since the sweep started,
       another driver holds the sweep folder, or this driver lost it to another
  130  interrupted by Ctrl-C (SIGINT): state saved, `pielab resume SWEEP_DIR` continues it
  138  stopped by SIGUSR1 (Slurm's --signal=B:USR1@N): state saved, resumable
  143  terminated by SIGTERM (Kubernetes, Slurm, kill): state saved, resumable"""


def exit_code_for_signal(signum: int) -> int:
    """128 + the signal's number: 130 for SIGINT, 138 for SIGUSR1, 143 for SIGTERM."""
    return 128 + int(signum)
