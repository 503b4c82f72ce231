"""The private Ray and Optuna names pielab uses (all in pielab/sweep/compat.py, written against ray
2.60.0 and optuna 5.0.0) still exist and behave as pielab expects. After an upgrade these tests fail
with the missing name; none of them can pass by skipping."""

from __future__ import annotations

import importlib
import inspect
import pickle
from pathlib import Path

import optuna
import pyarrow.fs
import pytest

from pielab.sweep import compat
from pielab.sweep.search import PielabOptunaSearch, make_sampler
from pielab.spec.space import SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = SearchSpace.from_dict({"parameters": {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}})


def test_quiet_loggers_name_existing_modules():
    for name in compat.QUIET_LOGGERS:
        importlib.import_module(name)  # ModuleNotFoundError names the module that moved


def test_tune_names_checkpoint_folders_as_compat_reads_them():
    """ray 2.60.0: ``checkpoint_000007``; the trainable finds a trial's later checkpoints by it."""
    from ray.train._internal.storage import StorageContext

    for index in (0, 7, 123456):
        assert compat.checkpoint_dir_index(StorageContext._make_checkpoint_dir_name(index)) == index
    assert compat.checkpoint_dir_index("checkpoint_tmp12") is None and compat.checkpoint_dir_index("epochs.log") is None


def test_optuna_search_bookkeeping_attributes():
    """Ray's OptunaSearch keeps asked trials, its study and the told trial ids where compat reads them."""
    searcher = PielabOptunaSearch(SPACE, metric="val/acc", mode="max", sampler=make_sampler("random", 0, {}, SPACE),
                                  storage=None, study_name="compat", base_epochs=2)
    assert isinstance(compat.searcher_study(searcher), optuna.Study)
    assert compat.searcher_trials(searcher) == {} and compat.searcher_told(searcher) == set()
    config = searcher.suggest("t1")
    assert set(config) == {"train.lr"}
    asked = compat.searcher_trials(searcher)
    assert list(asked) == ["t1"] and isinstance(asked["t1"], optuna.Trial)
    assert asked["t1"].study is compat.searcher_study(searcher)
    searcher.on_trial_result("t1", {"val/acc": 0.5, "epoch": 1})
    searcher.on_trial_complete("t1", result={"val/acc": 0.6, "epoch": 2})
    assert compat.searcher_told(searcher) == {"t1"}
    (trial,) = compat.searcher_study(searcher).get_trials()
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == pytest.approx(0.6)


def test_ray_checkpoint_deletion_is_patchable(tmp_path):
    from ray.train._internal import checkpoint_manager

    original = checkpoint_manager._delete_fs_path  # AttributeError: Ray renamed it
    assert list(inspect.signature(original).parameters)[:2] == ["fs", "fs_path"]
    compat.tolerate_already_deleted_checkpoints()
    patched = checkpoint_manager._delete_fs_path
    assert getattr(patched, "_pielab_tolerant", False)
    fs = pyarrow.fs.LocalFileSystem()
    patched(fs=fs, fs_path=str(tmp_path / "gone"))  # already deleted: quiet
    (tmp_path / "there").mkdir()
    patched(fs=fs, fs_path=str(tmp_path / "there"))  # still deleted by Ray's own function
    assert not (tmp_path / "there").exists()


def test_missing_private_name_fails_loudly(monkeypatch):
    from ray.train._internal import checkpoint_manager

    monkeypatch.delattr(checkpoint_manager, "_delete_fs_path")
    with pytest.raises(RuntimeError, match="_delete_fs_path is gone"):
        compat.tolerate_already_deleted_checkpoints()


def test_search_generator_restored_state_follows_a_moved_folder(tmp_path):
    """SearchGenerator still saves its Experiment (``_experiment``, its StorageContext in
    ``spec["storage"]``) with its state; restored while a sweep runs, the movable one points that
    storage at the folder where it is now, where Ray's own keeps the old place."""
    from ray.tune.experiment import Experiment
    from ray.tune.search import ConcurrencyLimiter, SearchGenerator

    from pielab.sweep.active import ActiveSweep, running

    def make(cls):
        searcher = PielabOptunaSearch(SPACE, metric="val/acc", mode="max", storage=None, study_name="gen",
                                      sampler=make_sampler("random", 0, {}, SPACE), base_epochs=2)
        return cls(ConcurrencyLimiter(searcher, max_concurrent=1))

    old, new = tmp_path / "a", tmp_path / "b"
    generator = make(compat.MovableSearchGenerator)
    assert isinstance(generator, SearchGenerator)
    generator.add_configurations([Experiment("tune", run=lambda config: None, storage_path=str(old))])
    state = pickle.loads(pickle.dumps(generator.get_state()))
    assert state["experiment"].spec["storage"].storage_fs_path == old.as_posix()
    for cls, where in ((SearchGenerator, old), (compat.MovableSearchGenerator, new)):
        restored = make(cls)
        with running(ActiveSweep(sweep_dir=new, optuna_url="sqlite://")):
            restored.set_state(pickle.loads(pickle.dumps(state)))
        storage = restored._experiment.spec["storage"]
        assert (storage.storage_fs_path, storage.experiment_dir_name) == (where.as_posix(), "tune"), cls
        assert storage.trial_dir_name is None and restored._counter == state["counter"]


def test_gcs_names_a_lost_node_as_compat_expects():
    """The GCS binary still writes the node-death message that compat.node_lost recognises."""
    import ray

    gcs = Path(ray.__file__).parent / "core" / "src" / "ray" / "gcs" / "gcs_server"
    assert compat.NODE_DIED_MESSAGE.encode() in gcs.read_bytes(), f"{compat.NODE_DIED_MESSAGE!r} not in {gcs}"


def test_lost_node_is_not_counted_as_a_trial_failure():
    """Trial._handle_ray_actor_error still counts failures in run_metadata.num_failures; once patched, a
    lost node's ActorDiedError does not count and the worker-process death of the fault injector does."""
    from ray.exceptions import RayActorError
    from ray.tune.experiment.trial import Trial

    compat.count_lost_nodes_as_preemptions()
    compat.count_lost_nodes_as_preemptions()  # idempotent: patched once
    assert getattr(Trial._handle_ray_actor_error, "_pielab_preemption", False)
    class NoFiles(Trial):
        local_path = None  # handle_error writes error.txt only with a trial folder

    trial = NoFiles("pielab_compat_trainable", stub=True)
    lost = RayActorError(error_msg=f"{compat.NODE_DIED_MESSAGE} Node Id: abc\n\tthe actor's node was terminated "
                                   "unexpectedly: health check failed")
    killed = RayActorError(error_msg="The actor is dead because its worker process has died. "
                                     "Worker exit type: SYSTEM_ERROR")
    assert compat.node_lost(lost) and not compat.node_lost(killed) and not compat.node_lost(None)
    assert compat.node_lost(RayActorError(error_msg="drained", preempted=True))
    assert trial.num_failures == 0
    trial.handle_error(lost)
    assert trial.num_failures == 0 and trial.should_recover()
    trial.handle_error(killed)
    assert trial.num_failures == 1


class FakeNodes:
    """``ray.nodes()`` as Ray 2.60 returns it (the two keys compat reads), for a node that the GCS
    declares dead after ``dies_after`` calls (None: never)."""

    def __init__(self, ip: str, dies_after: int | None) -> None:
        self.ip, self.dies_after, self.calls = ip, dies_after, 0

    def __call__(self):
        self.calls += 1
        alive = self.dies_after is None or self.calls <= self.dies_after
        return [{"NodeManagerAddress": "10.0.0.1", "Alive": True}, {"NodeManagerAddress": self.ip, "Alive": alive}]


def stub_trial(node_ip: str | None):
    from ray.tune.experiment.trial import Trial

    class NoFiles(Trial):
        local_path = None  # handle_error writes error.txt only with a trial folder

    trial = NoFiles("pielab_compat_trainable", stub=True)
    trial.run_metadata.last_result = {"node_ip": node_ip} if node_ip else {}
    return trial


def test_socket_closed_on_a_node_the_gcs_declares_dead_is_a_preemption(monkeypatch):
    """The error a killed node's trial reaches Tune with (tests/test_node_loss.py): ActorUnavailableError,
    "Socket closed". It waits for the GCS's verdict on the trial's node; dead: not a failure, and the
    recorder's verdict says preempted. The same error on a node that stays alive, and an exception raised
    by the trainable itself (a RayTaskError), are failures."""
    import ray
    from ray.exceptions import ActorUnavailableError, RayTaskError

    compat.count_lost_nodes_as_preemptions()
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    unavailable = ActorUnavailableError("Socket closed", None)

    nodes = FakeNodes("10.0.0.2", dies_after=2)  # declared dead on the third look (~1 s)
    monkeypatch.setattr(ray, "nodes", nodes)
    trial = stub_trial("10.0.0.2")
    trial.handle_error(unavailable)
    assert trial.num_failures == 0 and trial.should_recover() and nodes.calls == 3
    assert compat.judged_node_lost(trial) is True and compat.judged_node_lost(trial) is None  # taken once

    monkeypatch.setenv("PIELAB_NODE_LOSS_WAIT_S", "0.6")
    monkeypatch.setattr(ray, "nodes", FakeNodes("10.0.0.2", dies_after=None))
    alive = stub_trial("10.0.0.2")
    alive.handle_error(unavailable)
    assert alive.num_failures == 1 and compat.judged_node_lost(alive) is False
    no_node = stub_trial(None)  # no result yet: nothing says which node, so it stays the trial's error
    no_node.handle_error(unavailable)
    assert no_node.num_failures == 1

    monkeypatch.setattr(ray, "nodes", FakeNodes("10.0.0.2", dies_after=0))
    raised = stub_trial("10.0.0.2")  # the trainable raised on a node that is gone by now: still its own error
    raised.handle_error(RayTaskError("train", "Traceback ...", ValueError("boom")))
    assert raised.num_failures == 1 and compat.judged_node_lost(raised) is None
    assert not compat.node_lost(ValueError("boom"), "10.0.0.2")


def test_ray_node_table_names_live_nodes_as_compat_reads_them(tmp_path):
    """compat.node_dead reads ``ray.nodes()``'s ``Alive`` and ``NodeManagerAddress`` (public API, ray 2.60.0):
    a real local Ray lists its node alive at 127.0.0.1, and no node at an address it never had."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile

    ray_tmp = tempfile.mkdtemp(prefix="plc-")  # short: Ray's socket paths must fit in 107 bytes
    code = ("import ray; from pielab.sweep import compat; ray.init(_node_ip_address='127.0.0.1', num_cpus=1, "
            "include_dashboard=False, _temp_dir=%r); "
            "print(compat.node_dead('127.0.0.1'), compat.node_dead('10.255.255.254'), "
            "sorted({'Alive', 'NodeManagerAddress'} - set(ray.nodes()[0])))" % ray_tmp)
    env = dict(os.environ, RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0", HOME=str(tmp_path), RAY_USAGE_STATS_ENABLED="0")
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=180)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "False True []", proc.stdout[-2000:]


def test_missing_trial_error_handler_fails_loudly(monkeypatch):
    from ray.tune.experiment.trial import Trial

    monkeypatch.delattr(Trial, "_handle_ray_actor_error")
    with pytest.raises(RuntimeError, match="_handle_ray_actor_error is gone"):
        compat.count_lost_nodes_as_preemptions()


def test_search_generator_extends_past_its_restored_num_samples():
    """ray 2.60.0: SearchGenerator restores ``_total_samples`` and ``_finished`` from its saved state and
    decides ``is_finished`` by them; ``extend`` (``pielab resume --set num_trials``) raises the total,
    clears the FINISHED flag and sets the ConcurrencyLimiter's limit through its public setter."""
    from ray.tune.search import ConcurrencyLimiter

    searcher = PielabOptunaSearch(SPACE, metric="val/acc", mode="max", sampler=make_sampler("random", 0, {}, SPACE),
                                  storage=None, study_name="compat", base_epochs=2)
    gen = compat.MovableSearchGenerator(ConcurrencyLimiter(searcher, max_concurrent=1))
    state = gen.get_state()
    assert {"counter", "total_samples", "finished"} <= set(state)
    gen.set_state({**state, "counter": 3, "total_samples": 3, "finished": True})
    assert gen.is_finished() and gen.total_samples == 3
    gen.extend(num_trials=5, max_concurrent=2)
    assert not gen.is_finished() and gen.total_samples == 5 and gen.searcher.max_concurrent == 2


def test_tune_no_longer_copies_aws_credentials_into_trainables(monkeypatch):
    """ray 2.60.0 class_cache: without the fix the trainable's runtime_env carries AWS_SECRET_ACCESS_KEY
    (and Ray's runtime-env agent logs it); with it, nothing of the AWS credentials."""
    from ray.tune.execution import class_cache

    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", set(class_cache.ENV_VARS_TO_PROPAGATE) | set(compat.AWS_SECRETS))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-to-propagate")
    compat.keep_credentials_out_of_runtime_env()
    assert not set(compat.AWS_SECRETS) & class_cache.ENV_VARS_TO_PROPAGATE
    assert "PL_DISABLE_FORK" in class_cache.DEFAULT_ENV_VARS  # the rest of the mechanism is untouched


# --------------------------------------------------------------------------- what goes into Tune's pickles
#
# Tune pickles the searcher twice: into tuner.pkl (with the Tuner, by ray.cloudpickle) and into its
# searcher-state file (PielabOptunaSearch.save, by pickle). Everything the searcher holds must survive
# both under the installed releases: optuna 5.1.0 made NSGAIISampler hold a threading.Lock, and every
# multi-objective sweep died in tuner.pkl. pielab's samplers pickle as their recipe (search.SamplerRecipe).

GRID_SPACE = SearchSpace.from_dict({"parameters": {
    "train.lr": {"type": "categorical", "choices": [1e-3, 1e-2, 1e-1]},
    "model.depth": {"type": "categorical", "choices": [10, 18]},
}})
OBJECTIVES = (("val/acc", "max"), ("model/params", "min"))


def _versions() -> str:
    import ray

    return f"optuna {optuna.__version__}, ray {ray.__version__}"


def _searcher(algorithm: str, n_objectives: int, url: str):
    from pielab.sweep.search import make_storage

    metrics = [m for m, _ in OBJECTIVES[:n_objectives]]
    modes = [m for _, m in OBJECTIVES[:n_objectives]]
    return PielabOptunaSearch(
        GRID_SPACE, metric=metrics if n_objectives > 1 else metrics[0], mode=modes if n_objectives > 1 else modes[0],
        sampler=make_sampler(algorithm, 0, {}, GRID_SPACE), storage=make_storage(url, sweep_local=True),
        study_name="compat", base_epochs=2)


def _finish(searcher, trial_id: str, acc: float) -> None:
    searcher.suggest(trial_id)
    for epoch in (1, 2):
        result = {"epoch": epoch, "val/acc": acc * epoch / 2, "model/params": 1000.0 + acc}
        searcher.on_trial_result(trial_id, result)
    searcher.on_trial_complete(trial_id, result=result)


def _cases():
    from pielab.spec.sweep_spec import ALGORITHMS, MULTI_OBJECTIVE_ALGORITHMS

    return [(a, 1) for a in ALGORITHMS] + [(a, 2) for a in MULTI_OBJECTIVE_ALGORITHMS]


@pytest.mark.parametrize("algorithm,n_objectives", _cases())
def test_searcher_state_pickles_and_restores_for_every_sampler(tmp_path, algorithm, n_objectives):
    """Each search.algorithm pielab accepts, with one objective and (where the sampler takes several)
    two: the searcher pickles as Tune pickles it (tuner.pkl and the searcher state), and a searcher
    restored from that state continues the same study with a sampler of the same kind."""
    from ray import cloudpickle
    from ray.tune.search import ConcurrencyLimiter

    from pielab.sweep.active import ActiveSweep, running

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    what = f"{_versions()}: pielab needs the {algorithm} sampler's searcher ({n_objectives} objective(s))"
    with running(ActiveSweep(sweep_dir=tmp_path, optuna_url=url)):
        searcher = _searcher(algorithm, n_objectives, url)
        for i, acc in enumerate((0.3, 0.5)):
            _finish(searcher, f"t{i}", acc)
        searcher.suggest("t2")  # still running when Tune saves
        generator = compat.MovableSearchGenerator(ConcurrencyLimiter(searcher, max_concurrent=2))
        try:
            cloudpickle.loads(cloudpickle.dumps(generator))
        except Exception as exc:  # noqa: BLE001 - the message says which library broke what
            pytest.fail(f"{what} to pickle into Tune's tuner.pkl: {type(exc).__name__}: {exc}")
        searcher.save(str(tmp_path / "searcher.pkl"))

        restored = _searcher(algorithm, n_objectives, url)
        restored.restore(str(tmp_path / "searcher.pkl"))
    study = compat.searcher_study(restored)
    sampler = study.sampler
    assert type(sampler).__name__ == type(searcher._sampler).__name__, what
    assert sampler.pielab_recipe.algorithm == algorithm and sampler.pielab_recipe.stream == 3, what
    assert restored._sampler is sampler
    assert study.study_name == "compat" and len(study.trials) == 3, what
    _finish(restored, "t2", 0.6)  # the trial that was running continues in the same study
    _finish(restored, "t3", 0.4)
    states = [t.state.name for t in optuna.load_study(study_name="compat", storage=url).trials]
    assert states == ["COMPLETE"] * 4, (what, states)


def test_resumed_sampler_draws_new_numbers_and_the_same_ones_on_every_resume():
    """A sampler rebuilt on a resume is seeded from (seed, trials so far): it does not replay the first
    run's random draws (TPE's and NSGA-II's start-up trials would repeat), and is deterministic."""
    from pielab.sweep.search import build_sampler

    first = make_sampler("random", 7, {}, SPACE).pielab_recipe
    draws = {}
    for recipe in (first, first.continued(4), first.continued(4), first.continued(5)):
        study = optuna.create_study(sampler=build_sampler(recipe))
        draws.setdefault(recipe.stream, []).append(study.ask().suggest_float("x", 0, 1))
    assert draws[4][0] == draws[4][1]
    assert len({draws[0][0], draws[4][0], draws[5][0]}) == 3


def test_searcher_pickled_before_recipes_gets_the_running_sweeps_sampler(tmp_path):
    """A searcher state written before samplers pickled as recipes holds Optuna's own sampler object
    (under optuna 5.1 an NSGAIISampler unpickled from 5.0 lacks its lock); on a resume the sampler is
    rebuilt from the running sweep's recipe."""
    from pielab.sweep.active import ActiveSweep, running

    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    with running(ActiveSweep(sweep_dir=tmp_path, optuna_url=url)):
        searcher = _searcher("random", 1, url)
        _finish(searcher, "t0", 0.5)
        plain = optuna.samplers.RandomSampler(seed=0)  # what an older pielab pickled
        searcher._sampler = compat.searcher_study(searcher).sampler = plain
        searcher.save(str(tmp_path / "searcher.pkl"))
    recipe = make_sampler("nsga2", 0, {}, SPACE).pielab_recipe
    with running(ActiveSweep(sweep_dir=tmp_path, optuna_url=url, sampler=recipe)):
        restored = _searcher("random", 1, url)
        restored.restore(str(tmp_path / "searcher.pkl"))
    sampler = compat.searcher_study(restored).sampler
    assert isinstance(sampler, optuna.samplers.NSGAIISampler) and sampler.pielab_recipe.stream == 1


def test_optuna_apis_pielab_relies_on():
    """Public Optuna behaviour pielab builds on, each named with the version that broke it."""
    v = f"optuna {optuna.__version__}"
    study = optuna.create_study()
    study.sampler = replacement = optuna.samplers.RandomSampler(seed=0)
    assert study.sampler is replacement, f"{v}: pielab needs Study.sampler settable (a resumed sweep's sampler)"
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    assert hasattr(trial, "set_constraint"), f"{v}: pielab needs Trial.set_constraint (outcome constraints)"
    trial.set_constraint("params<=1", 0.5)
    study.tell(trial, 1.0)
    frozen = study.trials[0]
    assert frozen.constraints == {"params<=1": 0.5}, \
        f"{v}: pielab needs FrozenTrial.constraints to read what set_constraint wrote (warm starts copy them)"
    assert frozen.system_attrs.get("constraints:params<=1") == 0.5, \
        f"{v}: pielab needs constraints stored as the 'constraints:<key>' system attributes (warm_start writes them)"
    storage = optuna.storages.RDBStorage("sqlite://")
    state = storage.__getstate__()
    assert "url" in state and "engine" not in state, \
        f"{v}: pielab needs RDBStorage.__getstate__ to keep 'url' and drop the engine (SweepStorage rewrites the url)"


def test_ray_optuna_search_save_restore_is_its_dict():
    """ray's OptunaSearch.save pickles the searcher's __dict__ and restore updates __dict__ from it:
    PielabOptunaSearch.save and restore extend exactly that."""
    import ray
    from ray.tune.search.optuna import OptunaSearch

    source = inspect.getsource(OptunaSearch.save) + inspect.getsource(OptunaSearch.restore)
    assert "self.__dict__.copy()" in source and "self.__dict__.update(" in source, \
        f"ray {ray.__version__}: pielab needs OptunaSearch.save/restore to pickle the searcher's __dict__"


def test_tune_ends_a_failed_loop_inside_its_except_block():
    """ray's tune.run catches an error of its loop with ``except Exception: runner.cleanup(); raise``, and
    cleanup calls the callbacks' on_experiment_end there: compat.loop_error reads the error from
    sys.exc_info, so a crash is not mistaken for the end of the sweep (trials closed as stopped early)."""
    import ray
    from ray.tune import tune as tune_module
    from ray.tune.execution.tune_controller import TuneController

    source = inspect.getsource(tune_module.run)
    assert "except Exception:\n        runner.cleanup()\n        raise" in source, \
        f"ray {ray.__version__}: pielab needs tune.run to call runner.cleanup() inside its except block"
    assert "self.end_experiment_callbacks()" in inspect.getsource(TuneController.cleanup), \
        f"ray {ray.__version__}: pielab needs TuneController.cleanup to call on_experiment_end"
    try:
        raise RuntimeError("the loop failed")
    except RuntimeError:
        assert str(compat.loop_error()) == "the loop failed"
    assert compat.loop_error() is None


def test_tune_reads_the_trial_error_switch_pielab_sets():
    """pielab sets TUNE_PRINT_ALL_TRIAL_ERRORS=0 (session.set_quiet_env): a failed trial is one line, its
    traceback in tune/<trial>/error.txt. Tune must still read that variable."""
    import ray
    from ray.tune import constants
    from ray.tune.execution.tune_controller import TuneController

    assert "TUNE_PRINT_ALL_TRIAL_ERRORS" in constants.TUNE_ENV_VARS, \
        f"ray {ray.__version__}: pielab needs Tune's TUNE_PRINT_ALL_TRIAL_ERRORS (quiet trial tracebacks)"
    assert "TUNE_PRINT_ALL_TRIAL_ERRORS" in inspect.getsource(TuneController.__init__), \
        f"ray {ray.__version__}: pielab needs TuneController to read TUNE_PRINT_ALL_TRIAL_ERRORS"


def test_search_generator_gives_back_places_of_trials_the_restore_lost():
    """ray 2.60.0: SearchGenerator stops creating trials when ``_counter`` reaches ``_total_samples``. A search
    state uploaded after the experiment state (object storage, kill -9 between the two) counts a trial the
    restored experiment lacks; replace_lost_trials lowers the count so a new trial takes its place."""
    from ray.tune.search import ConcurrencyLimiter

    from pielab.sweep.active import ActiveSweep, running

    searcher = PielabOptunaSearch(SPACE, metric="val/acc", mode="max", sampler=make_sampler("random", 0, {}, SPACE),
                                  storage=None, study_name="compat", base_epochs=2)
    gen = compat.MovableSearchGenerator(ConcurrencyLimiter(searcher, max_concurrent=2))
    with running(ActiveSweep(sweep_dir=Path("/nonexistent"), optuna_url="sqlite://")) as active:
        gen.set_state({**gen.get_state(), "counter": 3, "total_samples": 3, "finished": False})
        assert active.generator is gen
    assert gen.is_finished()
    assert gen.replace_lost_trials(known=2) == 1
    assert not gen.is_finished() and gen._counter == 2 and gen.total_samples == 3
    assert gen.replace_lost_trials(known=2) == 0  # nothing lost: nothing changes
