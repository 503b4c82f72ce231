"""Every use of a private Ray or Optuna name in pielab, in one place.

Written against ray 2.60.0 and optuna 5.0.0. Each name below has a test in tests/test_compat.py that
fails with the name when an upgrade removes or renames it; nothing here degrades silently. Code
elsewhere in pielab uses Ray's and Optuna's public API only, and these functions for the rest.
"""

from __future__ import annotations

import copy
import os
import time
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

    def wrap(original):
        def delete_unless_gone(fs, fs_path):
            if fs.get_file_info(fs_path).type == pyarrow.fs.FileType.NotFound:
                return
            original(fs=fs, fs_path=fs_path)
        return delete_unless_gone

    _patch(checkpoint_manager, "_delete_fs_path", "ray.train._internal.checkpoint_manager", "_pielab_tolerant", wrap)


def checkpoint_dir_index(name: str) -> int | None:
    """The index in a trial's checkpoint folder name, or None for any other name.

    ray 2.60.0, ``ray.train._internal.storage.StorageContext._make_checkpoint_dir_name``: Tune names
    a trial's checkpoints ``checkpoint_000007`` (index zero-padded to six digits) inside the trial's
    folder. Read to find a trial's surviving checkpoints when the one Tune restored is gone.
    """
    prefix = "checkpoint_"
    digits = name[len(prefix):]
    return int(digits) if name.startswith(prefix) and digits.isdigit() else None


def _patch(owner: Any, name: str, where: str, marker: str, wrap) -> None:
    """Replace ``owner.name`` by ``wrap(original)`` once (``marker`` set on the wrapper makes it idempotent).

    Raises:
        RuntimeError: ``owner`` has no ``name`` any more (a Ray upgrade: see tests/test_compat.py).
    """
    original = getattr(owner, name, None)
    if original is None:
        raise RuntimeError(f"{where}.{name} is gone: update pielab.sweep.compat for this Ray version")
    if getattr(original, marker, False):
        return
    wrapper = wrap(original)
    setattr(wrapper, marker, True)
    setattr(owner, name, wrapper)


# --------------------------------------------------------------------------- Tune's loop ending on an error


def loop_error() -> BaseException | None:
    """In a Tune callback's ``on_experiment_end``: the exception Tune's loop is ending with, else None.

    ray 2.60.0, ``ray/tune/tune.py`` ``run``: an exception out of ``runner.step()`` is caught by ``except
    Exception: runner.cleanup(); raise``, and ``cleanup`` terminates the running trials and calls
    ``on_experiment_end``, so the callback cannot tell a crash from the end of the sweep by its
    arguments; it runs inside that ``except`` block, where ``sys.exc_info`` holds the error. The test
    in tests/test_compat.py checks that Tune still calls ``cleanup`` there.
    """
    import sys

    error = sys.exc_info()[1]
    return error if isinstance(error, Exception) else None


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
    (:func:`pielab.sweep.active.running`) this one points that storage at the folder where it is now.
    """

    def set_state(self, state: dict) -> None:
        super().set_state(state)
        from pielab.folder import TUNE_DIR
        from pielab.sweep.active import active_sweep

        active, experiment = active_sweep(), self._experiment
        if active is not None:
            active.generator = self  # the recorder gives back the places of trials the restore lost
        if active is not None and active.extend:
            self.extend(**active.extend)
        storage = experiment.spec.get("storage") if experiment is not None else None
        if active is None or storage is None:
            return
        from pielab.folder.storage import tune_storage

        here, filesystem = tune_storage(active.sweep_dir)  # a local path, or bucket/prefix on object storage
        if (storage.storage_fs_path, storage.experiment_dir_name) != (here, TUNE_DIR):
            moved = copy.copy(storage)
            moved.storage_fs_path, moved.experiment_dir_name = here, TUNE_DIR
            if filesystem is not None:
                moved.storage_filesystem = filesystem
            experiment.spec["storage"] = moved

    def replace_lost_trials(self, known: int) -> int:
        """Give back the places of trials this generator created that the restored experiment lacks.

        ray 2.60.0: the generator counts the trials it created (``_counter``) and stops at
        ``_total_samples``. On object storage Tune uploads its experiment state and this generator's state
        file by file in the background, so a ``kill -9`` between the two can restore a counter that
        includes a trial the restored experiment never heard of; that trial is recorded failed
        ("interrupted before Tune saved it") and, without this, nothing takes its place. ``known``: the
        trials Tune restored. Returns how many places were given back.
        """
        lost = max(0, int(self._counter) - int(known))
        self._counter -= lost
        return lost

    def extend(self, num_trials: int, max_concurrent: int | None = None) -> None:
        """Let a restored sweep run to ``num_trials`` Tune trials in all (``pielab resume --set``).

        ray 2.60.0: Tune restores the generator's ``_total_samples`` (the experiment's ``num_samples``)
        and ``_finished`` (set once its searcher said FINISHED: the time budget) from the saved search
        state, and ``Tuner.restore`` takes no new ``num_samples``. The same searcher, with the same
        Optuna study, then suggests the new trials; ``max_concurrent`` goes to the ConcurrencyLimiter
        through its public ``set_max_concurrency``.
        """
        self._total_samples = int(num_trials)
        self._finished = False
        if max_concurrent is not None and hasattr(self.searcher, "set_max_concurrency"):
            self.searcher.set_max_concurrency(int(max_concurrent))

# --------------------------------------------------------------------------- a lost node is not a failure
#
# ray 2.60.0: Tune counts every error of a trial against FailureConfig(max_failures), except a
# RayActorError whose ``preempted`` is true, which Ray sets only for a node the autoscaler drained
# for preemption (``NodeDeathInfo.AUTOSCALER_DRAIN_PREEMPTED``). A node that simply vanished (a
# spot instance reclaimed without notice, a kernel panic, a pulled cable) reaches Tune as either an
# ActorDiedError whose message the GCS writes as below, or, when the driver's connection to the
# actor breaks before the GCS has declared the node dead, an ActorUnavailableError ("Socket
# closed"); Tune counts both as failures. No public option covers it (``FailureConfig`` has
# max_failures and fail_fast only), so the count is made in the one place Tune makes it:
# ``Trial._handle_ray_actor_error`` (called by ``Trial.handle_error``, also for a RayTaskError whose
# cause is a RayActorError), before ``Trial.should_recover`` reads the count.

# ray 2.60.0, gcs_server (gcs_actor_manager): the first line of an actor's death cause when its node died.
NODE_DIED_MESSAGE = "The actor died because its node has died."

# How long an actor error whose node still looks alive waits for the GCS to declare that node dead
# (seconds). The GCS does so after RAY_health_check_failure_threshold missed health checks, each
# RAY_health_check_period_ms apart (Ray's defaults: 5 x 3 s, each check up to 10 s, after a 5 s initial
# delay: about 20 s, more when checks time out); 30 s covers the defaults, so a cluster started without
# tuning them still counts a lost node as a preemption. The wait blocks Tune's controller, and only
# after an ActorUnavailableError; a head started with shorter RAY_health_check_* settings ends it
# sooner (the wait stops as soon as the node is declared dead), PIELAB_NODE_LOSS_WAIT_S changes it.
NODE_LOSS_WAIT_S = 30.0

# Tune trial id -> whether its last actor error was a lost node, decided once where Tune counts the
# failure, read by the recorder's on_trial_recover (same driver process, right after).
_VERDICTS: dict[str, bool] = {}


def node_lost(error: Any, node_ip: str | None = None, *, wait_s: float | None = None) -> bool:
    """Whether a trial's error says the node it ran on was lost (preempted or gone), not the trial.

    ``error``: the exception Tune handed the trial (``Trial.get_pickled_error()``), or its text.
    ``node_ip``: the address of the node the trial ran on (its last result's ``node_ip``). A
    RayActorError that does not itself say why (``ActorUnavailableError``, "Socket closed") counts as
    a lost node when Ray's node table (``ray.nodes()``) lists no live node at ``node_ip``; an
    ``ActorUnavailableError`` waits up to ``wait_s`` seconds (default :data:`NODE_LOSS_WAIT_S`, or
    ``PIELAB_NODE_LOSS_WAIT_S``) for the GCS to declare the node dead. An exception raised by the
    trainable on a live node, and the fault injector's ``kill`` (the trial's own worker process dies,
    its node lives), are not.
    """
    if error is None:
        return False
    if getattr(error, "preempted", False) is True:
        return True
    if NODE_DIED_MESSAGE in str(error):
        return True
    from ray.exceptions import ActorUnavailableError, RayActorError

    if not isinstance(error, RayActorError) or not node_ip:
        return False
    if wait_s is None:
        wait_s = float(os.environ.get("PIELAB_NODE_LOSS_WAIT_S", NODE_LOSS_WAIT_S))
    return node_dead(node_ip, wait_s if isinstance(error, ActorUnavailableError) else 0.0)


def node_dead(node_ip: str, wait_s: float = 0.0, *, poll_s: float = 0.5) -> bool:
    """Whether Ray's node table (public ``ray.nodes()``) lists no live node at ``node_ip``, polled for
    up to ``wait_s`` seconds. False when Ray is not initialised or the table cannot be read (then
    nothing says the node is gone: the error stays the trial's)."""
    import ray

    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        try:
            if not ray.is_initialized():
                return False
            table = ray.nodes()
        except Exception:  # noqa: BLE001 - the GCS itself unreachable: not evidence about one node
            return False
        if not any(n.get("Alive") and n.get("NodeManagerAddress") == node_ip for n in table):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)


def judged_node_lost(trial: Any) -> bool | None:
    """The verdict :func:`count_lost_nodes_as_preemptions` reached for ``trial``'s last actor error
    (taken once: a later error is judged again), or None when it judged none (a plain exception)."""
    return _VERDICTS.pop(getattr(trial, "trial_id", None), None)


def trial_node_ip(trial: Any) -> str | None:
    """The node a trial last ran on: its last result's ``node_ip`` (Tune adds it to every result)."""
    ip = (getattr(trial, "last_result", None) or {}).get("node_ip")
    return ip or getattr(trial, "node_ip", None)


def count_lost_nodes_as_preemptions() -> None:
    """Make Tune restart a trial whose node was lost without counting it against ``max_failures``.

    Patches ``ray.tune.experiment.trial.Trial._handle_ray_actor_error`` (ray 2.60.0) so that an error
    :func:`node_lost` recognises (with the trial's node) leaves ``run_metadata.num_failures`` alone,
    as Ray already does for an autoscaler preemption; the trial is then always recovered from its
    last checkpoint. The driver's :class:`~pielab.sweep.recorder.SweepRecorder` records it as a
    preemption (:func:`judged_node_lost`).

    Raises:
        RuntimeError: Ray no longer has that method (an upgrade: see tests/test_compat.py).
    """
    from ray.tune.experiment.trial import Trial

    def wrap(original):
        def handle_ray_actor_error(self, exc):
            lost = node_lost(exc, trial_node_ip(self))
            _VERDICTS[self.trial_id] = lost
            if lost:
                return  # not the trial's failure: Tune's should_recover() then always restarts it
            original(self, exc)
        return handle_ray_actor_error

    _patch(Trial, "_handle_ray_actor_error", "ray.tune.experiment.trial.Trial", "_pielab_preemption", wrap)
