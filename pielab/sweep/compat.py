"""Every use of a private Ray or Optuna name in pielab, in one place.

Written against ray 2.60.0 and optuna 5.0.0. Each name below has a test in tests/test_compat.py that
fails with the name when an upgrade removes or renames it; nothing here degrades silently. Code
elsewhere in pielab uses Ray's and Optuna's public API only, and these functions for the rest.
"""

from __future__ import annotations

from typing import Any

# ray 2.60.0: loggers that print notices pielab replaces with its own output. Names of private
# modules, so they live here; an unknown logger name is harmless, but the test checks they exist.
QUIET_LOGGERS = (
    "ray.tune.analysis.experiment_analysis",  # public module: "no result.json" for folders without trials
    "ray._private.authentication.authentication_token_setup",  # ray 2.60.0: the token-auth notice
)


# --------------------------------------------------------------------------- Ray's OptunaSearch internals
#
# ray 2.60.0, ray/tune/search/optuna/optuna_search.py: PielabOptunaSearch subclasses OptunaSearch and
# keeps its bookkeeping (asking, save/restore), so it reads the same three attributes Ray's own
# on_trial_result / on_trial_complete use. No public accessor exists.


def searcher_trials(searcher: Any) -> dict[str, Any]:
    """Tune trial id -> the live ``optuna.Trial`` that OptunaSearch asked for it (``_ot_trials``)."""
    return searcher._ot_trials


def searcher_study(searcher: Any):
    """The ``optuna.Study`` OptunaSearch drives (``_ot_study``; None before ``set_search_properties``)."""
    return searcher._ot_study


def searcher_told(searcher: Any) -> set[str]:
    """Tune trial ids OptunaSearch has told Optuna about (``_completed_trials``)."""
    return searcher._completed_trials


# --------------------------------------------------------------------------- Ray's checkpoint deletion


def tolerate_already_deleted_checkpoints() -> None:
    """Make Tune's removal of an old checkpoint a no-op when that checkpoint is already gone.

    ray 2.60.0, ``ray.train._internal.checkpoint_manager._delete_fs_path``: after ``kill -9`` Tune
    restores an experiment snapshot that can predate the deletion of the oldest kept checkpoint; when
    the resumed trial saves its next one Tune deletes that path again, and Ray checks the path
    *outside* its own try block, so the ``FileNotFoundError`` escapes into the controller: an ERROR
    traceback on the terminal, and the controller skips the experiment snapshot that should follow
    the save. A missing path is what the deletion wanted, so it is skipped; every other error still
    goes to Ray's handler. No public hook exists (CheckpointConfig has no deletion callback).

    Raises:
        RuntimeError: Ray no longer has that function (an upgrade: see tests/test_compat.py).
    """
    import pyarrow.fs
    from ray.train._internal import checkpoint_manager

    original = getattr(checkpoint_manager, "_delete_fs_path", None)
    if original is None:
        raise RuntimeError("ray.train._internal.checkpoint_manager._delete_fs_path is gone: "
                           "update pielab.sweep.compat for this Ray version")
    if getattr(original, "_pielab_tolerant", False):
        return

    def delete_unless_gone(fs, fs_path):
        if fs.get_file_info(fs_path).type == pyarrow.fs.FileType.NotFound:
            return
        original(fs=fs, fs_path=fs_path)

    delete_unless_gone._pielab_tolerant = True
    checkpoint_manager._delete_fs_path = delete_unless_gone
