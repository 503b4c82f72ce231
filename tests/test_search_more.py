"""Continuing and warm-starting sweeps, baselines, GP, Hyperband brackets and outcome constraints.

The fast tests check the parts without Ray (the searcher, the warm start into a study, spec errors
through the console script). One slow test runs what a user does end to end: a sweep with two
baselines, ``pielab resume --set num_trials=4`` on the finished sweep, then ``pielab sweep --from``
that sweep with GP, Hyperband and constraints.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml

from pielab.sweep.compat import searcher_study
from pielab.sweep.search import PielabOptunaSearch, make_sampler, warm_start
from pielab.spec.space import SearchSpace
from pielab.spec.sweep_spec import parse_constraint
from helpers import journal, sweep_env, tiny_spec

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = SearchSpace.from_dict({"parameters": {
    "train.lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
    "model.residual": {"type": "bool"},
    "model.layers": {"type": "categorical", "choices": [[1, 1], [2, 2]]},
}})


def run(cmd, *args, env, timeout=900):
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=timeout)


def text(proc) -> str:
    return (proc.stdout or "")[-4000:] + (proc.stderr or "")[-4000:]


def study_of(sweep_dir: Path) -> optuna.Study:
    name = json.loads((sweep_dir / "status.json").read_text())["study"]
    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


# --------------------------------------------------------------------------- without Ray


def test_match_checks_keys_ranges_choices_and_conditions():
    params, dists, problems = SPACE.match({"train.lr": 1e-3, "model.residual": False, "model.layers": [2, 2]})
    assert problems == [] and params == {"train.lr": 1e-3, "model.residual": False, "model.layers": "[2, 2]"}
    assert set(dists) == set(params)
    _, _, problems = SPACE.match({"train.lr": 0.1, "model.layers": [3, 3], "model.depth": 34})
    assert [k for k, _ in problems] == ["train.lr", "model.layers", "model.depth"]
    assert "outside the space's range 0.001 .. 0.01" in problems[0][1]
    cond = SearchSpace.from_dict({"parameters": {
        "train.optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "train.momentum": {"type": "float", "low": 0.8, "high": 0.99, "when": {"train.optimizer": "sgd"}}}})
    assert cond.match({"train.optimizer": "adam", "train.momentum": 0.9})[2][0][0] == "train.momentum"
    assert cond.match({"train.optimizer": "sgd"}, complete=True)[2] == [("train.momentum",
                                                                       "not given, and the space searches it")]


def test_baselines_run_first_each_with_its_seed_repeats_then_the_sampler():
    baselines = [SPACE.match({"train.lr": 1e-3, "model.residual": r, "model.layers": [1, 1]})[0] for r in (True, False)]
    s = PielabOptunaSearch(SPACE, metric="val/acc", mode="max", sampler=make_sampler("tpe", 0, {}, SPACE),
                           storage=None, study_name="s", base_epochs=2, max_t=2, seeds=[0, 1], baselines=baselines)
    configs = [s.suggest(f"t{i}") for i in range(6)]
    assert [(c["model.residual"], c["train.seed"]) for c in configs[:4]] == [(True, 0), (True, 1), (False, 0), (False, 1)]
    assert all(c["train.lr"] == 1e-3 and c["model.layers"] == [1, 1] for c in configs[:4])
    assert configs[4]["train.seed"] == 0 and configs[5]["train.seed"] == 1
    assert [t.user_attrs.get("baseline") for t in searcher_study(s).trials] == [0, None, 1, None, None, None]


@pytest.mark.parametrize("algorithm", ["tpe", "gp"])
def test_constraints_reach_optuna_and_best_trials_keep_the_feasible_ones(algorithm):
    constraints = [parse_constraint("params <= 1000"), parse_constraint("val/acc >= 0.3")]
    s = PielabOptunaSearch(SPACE, metric="val/acc", mode="max",
                           sampler=make_sampler(algorithm, 0, {"n_startup_trials": 2}, SPACE),
                           storage=None, study_name="s", base_epochs=1, max_t=1, constraints=constraints)
    outcomes = [(0.9, 5000), (0.5, 500), (0.2, 100), (0.4, 900)]  # (val/acc, params)
    for i, (acc, params) in enumerate(outcomes):
        s.suggest(f"t{i}")
        s.on_trial_complete(f"t{i}", result={"val/acc": acc, "model/params": params, "epoch": 1})
    study = searcher_study(s)
    assert study.trials[0].constraints == {"model/params <= 1000": 4000.0, "val/acc >= 0.3": pytest.approx(-0.6)}
    assert all(len(t.constraints) == 2 for t in study.trials)
    assert [t.number for t in study.best_trials] == [1]  # 0 is better but too big; 2 misses the accuracy floor
    s.suggest("t4")  # the sampler models the constrained trials without complaint


def test_warm_start_copies_finished_trials_in_the_new_space_and_counts_the_rest(tmp_path):
    old = optuna.create_study(study_name="old", direction="maximize")
    dist = SPACE.param("train.lr").distribution()
    wide = optuna.distributions.FloatDistribution(1e-4, 1e-1, log=True)
    common = {"model.residual": False, "model.layers": "[1, 1]"}
    cdist = {"model.residual": SPACE.param("model.residual").distribution(),
             "model.layers": SPACE.param("model.layers").distribution()}
    for lr, state, value in ((2e-3, "COMPLETE", 0.5), (5e-2, "COMPLETE", 0.6), (3e-3, "PRUNED", 0.2),
                             (4e-3, "FAIL", None)):
        old.add_trial(optuna.trial.create_trial(
            params={"train.lr": lr, **common}, distributions={"train.lr": wide, **cdist},
            state=getattr(optuna.trial.TrialState, state), value=value,
            intermediate_values={1: 0.1} if state != "FAIL" else {}, user_attrs={"trial_id": f"t{lr}"}))
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 'new.db'}")
    counts = warm_start(storage, "new", "max", SPACE, old)
    assert counts == {"added": 2, "outside": 1, "unconstrained": 0, "not_finished": 1}
    new = optuna.load_study(study_name="new", storage=storage)
    assert [(t.params["train.lr"], t.state.name, t.value) for t in new.trials] == [
        (2e-3, "COMPLETE", 0.5), (3e-3, "PRUNED", 0.2)]
    assert new.trials[0].distributions["train.lr"] == dist and new.trials[1].intermediate_values == {1: 0.1}
    assert new.trials[0].user_attrs["warm_start_from"] == "old#0" and "trial_id" not in new.trials[0].user_attrs


def _spec_file(tmp_path: Path, cifar_path: str, **over) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(tiny_spec(cifar_path, name="bad", **over), sort_keys=False))
    return path


def test_enqueue_outside_the_space_is_exit_2_with_file_and_line(tmp_path, cifar_path, pielab_exe):
    spec = _spec_file(tmp_path, cifar_path, enqueue=[{"train.lr": 2e-3}, {"train.lr": 0.5, "model.depth": 34}])
    proc = run(pielab_exe, "sweep", str(spec), env=sweep_env(tmp_path), timeout=120)
    assert proc.returncode == 2, text(proc)
    lines = proc.stderr.splitlines()
    line_of = {n + 1: t for n, t in enumerate(spec.read_text().splitlines())}
    lr = [x for x in lines if "enqueue.1.train.lr" in x]
    assert lr and "0.5 is outside the space's range 0.001 .. 0.01" in lr[0], proc.stderr
    where = int(lr[0].split(f"{spec}:")[1].split(":")[0])
    assert "0.5" in line_of[where], (where, spec.read_text())
    assert any("enqueue.1.model.depth: not a parameter of the search space" in x for x in lines), proc.stderr
    assert not any("enqueue.0" in x for x in lines) and "Traceback" not in proc.stderr


def test_grid_with_more_trials_than_configurations_is_refused(tmp_path, cifar_path, pielab_exe):
    spec = _spec_file(tmp_path, cifar_path, num_trials=5, seeds=[0, 1], search={"algorithm": "grid"},
                      space={"parameters": {"model.residual": {"type": "bool"}}})
    proc = run(pielab_exe, "sweep", str(spec), env=sweep_env(tmp_path), timeout=120)
    assert proc.returncode == 2, text(proc)
    assert "num_trials: 5 is more than the grid's 2 configurations x 2 seeds = 4 trials" in proc.stderr, proc.stderr


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
def test_baselines_then_resume_set_num_trials_then_warm_start_with_gp_hyperband_constraints(
        tmp_path, cifar_path, pielab_exe):
    env = sweep_env(tmp_path)
    spec = tiny_spec(cifar_path, name="first", num_trials=2, epochs=1,
                     search={"algorithm": "tpe", "seed": 0, "n_startup_trials": 2},
                     space={"parameters": {"train.lr": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True},
                                           "model.residual": {"type": "bool"}}},
                     enqueue=[{"train.lr": 1.0e-3, "model.residual": True},
                              {"train.lr": 1.0e-3, "model.residual": False}])
    (tmp_path / "first.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    first = tmp_path / "first"
    proc = run(pielab_exe, "sweep", str(tmp_path / "first.yaml"), "--out", str(first), env=env)
    assert proc.returncode == 0, text(proc)
    study = study_of(first)
    assert [(t.params, t.user_attrs.get("baseline")) for t in study.trials] == [
        ({"train.lr": 1e-3, "model.residual": True}, 0), ({"train.lr": 1e-3, "model.residual": False}, 1)]
    old_ids = [t.user_attrs["trial_id"] for t in study.trials]

    refused = run(pielab_exe, "resume", str(first), "--set", "train.epochs=2", env=env, timeout=120)
    assert refused.returncode == 2 and "base.train.epochs 1 -> 2" in refused.stderr, text(refused)

    more = run(pielab_exe, "resume", str(first), "--set", "num_trials=4", env=env)
    assert more.returncode == 0, text(more)
    assert "continuing sweep first with num_trials 2 -> 4" in more.stdout, text(more)
    study = study_of(first)
    assert len(study.trials) == 4 and [t.user_attrs["trial_id"] for t in study.trials[:2]] == old_ids
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    for tid in [t.user_attrs["trial_id"] for t in study.trials]:
        starts = [line for line in journal(first, tid) if line.startswith("start ")]
        assert len(starts) == 1, (tid, journal(first, tid))  # the old trials were not rerun
    status = json.loads((first / "status.json").read_text())
    assert status["finished"] and status["num_trials"] == 4 and len(status["resumes"]) == 1, status
    assert yaml.safe_load((first / "sweep.yaml").read_text())["num_trials"] == 4
    again = run(pielab_exe, "resume", str(first), env=env, timeout=120)
    assert again.returncode == 0 and "already finished" in again.stdout, text(again)

    # --from: a narrower space (the baselines' lr 1e-3 falls outside it; TPE's draws after them, near 1e-3
    # but continuous, inside), GP, Hyperband, constraints
    warm = tiny_spec(cifar_path, name="second", num_trials=2, epochs=2,
                     search={"algorithm": "gp", "seed": 0, "n_startup_trials": 1},
                     scheduler={"name": "hyperband", "grace_period": 1, "reduction_factor": 2},
                     space={"parameters": {"train.lr": {"type": "float", "low": 1.0001e-3, "high": 1.0e-2, "log": True},
                                           "model.residual": {"type": "bool"}}},
                     constraints=["params <= 1e9", "val/acc >= 0.9"])
    (tmp_path / "second.yaml").write_text(yaml.safe_dump(warm, sort_keys=False))
    second = tmp_path / "second"
    proc = run(pielab_exe, "sweep", str(tmp_path / "second.yaml"), "--out", str(second), "--from", str(first),
               env=env)
    assert proc.returncode == 0, text(proc)
    assert "hyperband (grace 1, factor 2, max_t 2, 2 brackets)" in proc.stdout, text(proc)
    assert "warm start: 2 trials of study first go into the new study first (skipped: 2 outside this space)" \
        in proc.stdout, text(proc)
    study = study_of(second)
    assert len(study.trials) == 4
    copied = study.trials[:2]
    assert [t.user_attrs["warm_start_from"] for t in copied] == ["first#2", "first#3"]
    assert [t.params for t in copied] == [t.params for t in study_of(first).trials[2:]]
    assert all(t.user_attrs.get("trial_id") for t in study.trials[2:])  # the new sweep's own trials after them
    for t in study.trials:
        assert set(t.constraints) == {"model/params <= 1e+09", "val/acc >= 0.9"}, t.constraints
        assert t.constraints["model/params <= 1e+09"] < 0 < t.constraints["val/acc >= 0.9"]
    assert study.best_trials == []  # every trial misses val/acc >= 0.9: none is feasible
