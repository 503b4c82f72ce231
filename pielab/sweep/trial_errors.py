"""What a failed or restarting Tune trial's error says, read on the driver.

Tune keeps a trial's error in three forms (the pickled exception, its text, ``error.txt`` in the trial's
folder), any of which may be missing or fail to load on the driver; these readers try each in turn and
never raise. The verdict on a lost node is :mod:`pielab.sweep.compat`'s.
"""

from __future__ import annotations

from pathlib import Path

from pielab.text import one_line


def error_line(trial) -> str:
    """The trial's error as one line (status.json, ``result.json``'s ``reason``)."""
    try:
        error = trial.get_error()
    except Exception:
        error = None
    if error is None:
        try:
            error = Path(trial.error_file).read_text() if trial.error_file else None
        except (OSError, TypeError):
            error = None
    return one_line(str(error)) if error else "error (see the trial's error.txt under tune/)"


def node_lost(trial) -> bool:
    """Whether the trial restarts because its node was lost (a preemption, not a retry): the verdict
    compat reached where Tune counted (or did not count) the failure, else what the trial's error says."""
    from pielab.sweep.compat import judged_node_lost, node_lost as error_says_node_lost, trial_node_ip

    verdict = judged_node_lost(trial)
    if verdict is not None:
        return verdict
    try:
        error = trial.get_pickled_error()
    except Exception:  # an error that does not unpickle here: the text is still there
        error = None
    if error is None:
        try:
            error = trial.get_error()
        except Exception:
            error = None
    return error_says_node_lost(error, trial_node_ip(trial), wait_s=0.0)
