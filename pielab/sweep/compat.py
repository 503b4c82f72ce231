"""Every use of a private Ray or Optuna name in pielab, in one place.

Written against ray 2.60.0 and optuna 5.0.0. Each name below has a test in tests/test_compat.py that
fails with the name when an upgrade removes or renames it; nothing here degrades silently. Code
elsewhere in pielab uses Ray's and Optuna's public API only, and these functions for the rest.
"""

from __future__ import annotations

import copy
from typing import Any

from ray.tune.search import SearchGenerator

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


# ray 2.60.0, ray/tune/execution/class_cache.py: the AWS variables Tune copies into every trainable
# actor's runtime_env, from the driver's environment.
AWS_SECRETS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN", "AWS_SESSION_TOKEN")


def keep_credentials_out_of_runtime_env() -> None:
    """Stop Tune from putting the driver's AWS credentials into the trainables' ``runtime_env``.

    ray 2.60.0, ``ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE``: Tune adds
    ``AWS_SECRET_ACCESS_KEY`` (and the key id and session tokens) to the ``runtime_env`` of every
    trainable actor, and Ray's runtime-env agent logs that runtime_env in full, so the secret ends up
    in the session's log files. Trial workers on this machine inherit the driver's environment
    anyway (the raylet that starts them was started by the driver); on a cluster each node reads its
    own credentials (an instance role, or the variables given to ``ray start``).

    Raises:
        RuntimeError: Ray no longer has that set (an upgrade: see tests/test_compat.py).
    """
    from ray.tune.execution import class_cache

    propagated = getattr(class_cache, "ENV_VARS_TO_PROPAGATE", None)
    if not isinstance(propagated, set):
        raise RuntimeError("ray.tune.execution.class_cache.ENV_VARS_TO_PROPAGATE is gone: "
                           "update pielab.sweep.compat for this Ray version")
    propagated.difference_update(AWS_SECRETS)


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


# --------------------------------------------------------------------------- Ray's search generator state


class MovableSearchGenerator(SearchGenerator):
    """Tune's ``SearchGenerator``, for a sweep folder that may move between a crash and its resume.

    ray 2.60.0, ``ray/tune/search/search_generator.py``: ``set_state`` restores the ``Experiment``
    saved with the search state (``_experiment``), and on a resume Tune gives the generator no new
    one (``tune.run`` calls ``add_configurations`` only for a fresh run). That experiment's spec
    holds a ``StorageContext`` (``spec["storage"]``) naming the folder's place when it was saved:
    trials restored from the experiment state move with the folder (Tune rewrites their storage),
    but every *new* trial the restored generator created would write to the old place ("Unable to
    set up cluster storage" after ``mv A B; pielab resume B``). While a sweep runs
    (:func:`pielab.sweep.session.running`) this one points that storage at the folder where it is now.
    """

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        from pielab.sweep.folder import TUNE_DIR
        from pielab.sweep.session import active_sweep

        active, experiment = active_sweep(), self._experiment
        storage = experiment.spec.get("storage") if experiment is not None else None
        if active is None or storage is None:
            return
        from pielab.sweep.storage import tune_storage

        here, filesystem = tune_storage(active.sweep_dir)  # a local path, or bucket/prefix on object storage
        if (storage.storage_fs_path, storage.experiment_dir_name) != (here, TUNE_DIR):
            moved = copy.copy(storage)
            moved.storage_fs_path, moved.experiment_dir_name = here, TUNE_DIR
            if filesystem is not None:
                moved.storage_filesystem = filesystem
            experiment.spec["storage"] = moved
