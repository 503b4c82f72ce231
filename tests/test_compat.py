"""The private Ray and Optuna names pielab uses (all in pielab/sweep/compat.py, written against ray
2.60.0 and optuna 5.0.0) still exist and behave as pielab expects. After an upgrade these tests fail
with the missing name; none of them can pass by skipping."""

from __future__ import annotations

import importlib
import inspect
import pickle

import optuna
import pyarrow.fs
import pytest

from pielab.sweep import compat
from pielab.sweep.search import PielabOptunaSearch, make_sampler
from pielab.sweep.space import SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = SearchSpace.from_dict({"parameters": {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-1, "log": True}}})


def test_quiet_loggers_name_existing_modules():
    for name in compat.QUIET_LOGGERS:
        importlib.import_module(name)  # ModuleNotFoundError names the module that moved


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

    from pielab.sweep.session import ActiveSweep, running

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


def test_tune_no_longer_copies_aws_credentials_into_trainables(monkeypatch):
    """ray 2.60.0 class_cache: without the fix the trainable's runtime_env carries AWS_SECRET_ACCESS_KEY
    (and Ray's runtime-env agent logs it); with it, nothing of the AWS credentials."""
    from ray.tune.execution import class_cache

    monkeypatch.setattr(class_cache, "ENV_VARS_TO_PROPAGATE", set(class_cache.ENV_VARS_TO_PROPAGATE) | set(compat.AWS_SECRETS))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-to-propagate")
    compat.keep_credentials_out_of_runtime_env()
    assert not set(compat.AWS_SECRETS) & class_cache.ENV_VARS_TO_PROPAGATE
    assert "PL_DISABLE_FORK" in class_cache.DEFAULT_ENV_VARS  # the rest of the mechanism is untouched
