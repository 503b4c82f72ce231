"""Several objectives: the spec's ``objectives``, the multi-objective Optuna study, the folder's Pareto front,
and what status, report and export show of it, through the console script."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml

from pielab.folder import END_COMPLETED, END_EARLY, TrialRecord, pareto_records

OBJECTIVES = [("val/acc", "max"), ("model/params", "min")]


def rec(tid: str, acc: float, params: float, state: str = END_COMPLETED) -> TrialRecord:
    return TrialRecord(trial_id=tid, params={}, state=state, best_value=acc,
                       objectives={"val/acc": acc, "model/params": params})


def test_pareto_front_rule() -> None:
    records = {r.trial_id: r for r in [
        rec("a", 0.50, 1000), rec("b", 0.40, 500), rec("c", 0.40, 800),  # c: dominated by b
        rec("d", 0.50, 1000),  # equal to a: neither dominates the other, both on the front
        rec("e", 0.60, 100, state=END_EARLY),  # would dominate all, but stopped early: never on the front
        rec("f", 0.30, 400),
    ]}
    assert [r.trial_id for r in pareto_records(records, OBJECTIVES)] == ["a", "d", "b", "f"]
    assert pareto_records(records, OBJECTIVES[:1]) == []  # one objective: a best trial, no front


def test_objective_value_is_taken_at_the_best_epoch_of_the_first_objective() -> None:
    r = TrialRecord(trial_id="t", params={})
    metrics = ["val/acc", "time/epoch_s", "model/params"]
    for epoch, acc, secs in ((1, 0.3, 9.0), (2, 0.5, 7.0), (3, 0.5, 1.0), (4, 0.4, 0.5)):
        r.add_result({"epoch": epoch, "val/acc": acc, "time/epoch_s": secs, "model/params": 1234}, "val/acc", "max",
                     metrics)
    assert r.best_epoch == 2
    assert r.objectives == {"val/acc": 0.5, "time/epoch_s": 7.0, "model/params": 1234.0}
    # read back from metrics.csv rows (which have no model/params column), the rule gives the same values
    r.rows = {e: {"epoch": e, "val/acc": a, "time/epoch_s": s} for e, a, s in ((1, .3, 9.), (2, .5, 7.), (3, .5, 1.))}
    r.refold("val/acc", "max", metrics)
    assert r.objectives == {"val/acc": 0.5, "time/epoch_s": 7.0, "model/params": 1234.0}


def run(pielab_exe: list[str], *args: str, home: Path, ok: bool = True, timeout: int = 600):
    env = {**os.environ, "HOME": str(home)}  # PYTHONPATH stays: this worktree's code
    proc = subprocess.run([*pielab_exe, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


SPEC = """\
name: pareto_tiny
base:
  model: {{name: myresnet34, width: 4}}
  data: {{path: {data}, train_size: 200, val_size: 100, test_size: 100}}
  train: {{epochs: 2, batch_size: 64, device: cpu}}
space:
  parameters:
    model.depth: {{type: categorical, choices: [10, 18]}}
    model.residual: {{type: bool}}
search: {{algorithm: nsga2, seed: 0, population_size: 2}}
scheduler: {{name: fifo}}
objectives:
  - {{metric: val/acc, mode: max}}
  - {{metric: params, mode: min}}
num_trials: 4
max_concurrent: 2
resources: {{cpu: 1}}
tracking: {{wandb: false}}
"""


def test_spec_errors_point_at_their_lines(pielab_exe: list[str], tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(SPEC.format(data="x.npz").replace("num_trials: 4", "metric: val/acc\nnum_trials: 4")
                    .replace("{metric: params, mode: min}", "{metric: params, mode: max}")
                    .replace("algorithm: nsga2", "algorithm: cmaes"))
    proc = run(pielab_exe, "sweep", str(spec), home=tmp_path, ok=False, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    err = proc.stderr
    assert f"{spec}:15: metric: give either metric/mode or objectives" in err
    assert re.search(rf"{re.escape(str(spec))}:\d+: objectives.1.mode: max would select the worst model/params", err)
    assert f"{spec}:10: search.algorithm: cmaes optimises one objective" in err


@pytest.fixture(scope="module")
def pareto_sweep(pielab_exe: list[str], cifar_path: str, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pareto")
    spec = root / "pareto_tiny.yaml"
    spec.write_text(SPEC.format(data=cifar_path))
    out = root / "sweep"
    run(pielab_exe, "sweep", str(spec), "--out", str(out), home=root)
    return out


@pytest.mark.slow
def test_front_equals_optuna_best_trials(pareto_sweep: Path) -> None:
    from pielab.folder import SweepFolder

    folder = SweepFolder.open(pareto_sweep)
    assert folder.objectives == OBJECTIVES
    records = folder.records()
    assert sum(r.state == END_COMPLETED for r in records.values()) == 4
    front = folder.pareto(records)
    assert front
    status = json.loads((pareto_sweep / "status.json").read_text())
    study = optuna.load_study(study_name=status["study"], storage=f"sqlite:///{pareto_sweep / 'optuna.db'}")
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    best = {t.user_attrs["trial_id"]: t.values for t in study.best_trials}
    assert set(best) == {r.trial_id for r in front}
    for r in front:  # the same values: val/acc at the best epoch, the parameter count
        assert best[r.trial_id] == [r.objectives["val/acc"], r.objectives["model/params"]]
    assert status["pareto"] == [r.trial_id for r in front]


@pytest.mark.slow
def test_status_report_and_export_show_the_front(pielab_exe: list[str], pareto_sweep: Path, tmp_path: Path) -> None:
    from pielab.folder import SweepFolder

    front = [r.trial_id for r in SweepFolder.open(pareto_sweep).pareto()]
    status = run(pielab_exe, "status", str(pareto_sweep), home=tmp_path).stdout
    assert f"Pareto front: {len(front)} of 4 completed trials (val/acc max, model/params min)" in status

    run(pielab_exe, "report", str(pareto_sweep), "--out", str(tmp_path / "report"), home=tmp_path)
    report = tmp_path / "report"
    assert (report / "fig_pareto.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # dtype: a trial id of eight hex digits is all decimal digits one time in 43, and pandas then reads a number
    assert list(pd.read_csv(report / "pareto.csv", dtype={"trial_id": str})["trial_id"]) == front
    for name in ("pareto.md", "pareto.tex", "report.html"):
        text = (report / name).read_text()
        assert all(tid.replace("_", r"\_") in text or tid in text for tid in front), name
    page = (report / "report.html").read_text()
    assert "<h2>Pareto front</h2>" in page and 'id="fig_pareto.png"' in page

    out = tmp_path / "front.yaml"
    printed = run(pielab_exe, "export", str(pareto_sweep), "--pareto", "--out", str(out), home=tmp_path).stdout
    files = [out] if len(front) == 1 else [tmp_path / f"front_{i}.yaml" for i in range(1, len(front) + 1)]
    assert sorted(tmp_path.glob("front*.yaml")) == sorted(files), printed
    assert [re.search(r"# trial: (\S+) ", f.read_text()).group(1) for f in files] == front

    # retraining an exported Pareto trial reproduces its val/acc epoch for epoch, bit for bit
    trial = front[0]
    rerun = tmp_path / "rerun"
    run(pielab_exe, "train", str(files[0]), "--set", "train.threads=1", "--out", str(rerun), home=tmp_path)
    original = pd.read_csv(pareto_sweep / "trials" / trial / "metrics.csv")
    again = pd.read_csv(rerun / "metrics.csv")
    assert list(again["val/acc"]) == list(original["val/acc"])


@pytest.mark.slow
def test_export_pareto_refuses_a_single_objective_sweep(pielab_exe: list[str], pareto_sweep: Path,
                                                        tmp_path: Path) -> None:
    # the same folder, its spec rewritten to one objective: no front to export, one clear line
    copy = tmp_path / "single"
    subprocess.run(["cp", "-r", str(pareto_sweep), str(copy)], check=True)
    spec = yaml.safe_load((copy / "sweep.yaml").read_text())
    spec.pop("objectives")
    spec.update(metric="val/acc", mode="max")
    (copy / "sweep.yaml").write_text(yaml.safe_dump(spec))
    (copy / "status.json").write_text(json.dumps({k: v for k, v in json.loads(
        (copy / "status.json").read_text()).items() if k != "objectives"}))
    proc = run(pielab_exe, "export", str(copy), "--pareto", home=tmp_path, ok=False)
    assert proc.returncode == 2
    assert "has one objective (val/acc), so no Pareto front" in proc.stderr
    assert "Pareto" not in run(pielab_exe, "status", str(copy), home=tmp_path).stdout


def _spec_file(root: Path, cifar_path: str, name: str, **changes) -> Path:
    spec = yaml.safe_load(SPEC.format(data=cifar_path).replace("pareto_tiny", name))
    for key, value in changes.items():
        if value is None:
            spec.pop(key, None)
        else:
            spec[key] = value
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


@pytest.mark.slow
@pytest.mark.parametrize("objectives", [2, 1])
def test_warm_start_from_a_two_objective_sweep(pielab_exe: list[str], pareto_sweep: Path, cifar_path: str,
                                               tmp_path: Path, objectives: int) -> None:
    """--from a two-objective sweep into one with the same two objectives, or with its first alone: the old
    COMPLETE trials arrive with the new study's values, taken by metric (once this read FrozenTrial.value,
    which a multi-objective trial refuses, and the command crashed)."""
    changes = {"num_trials": 1, "max_concurrent": 1}
    if objectives == 1:
        changes.update(objectives=None, metric="val/acc", mode="max", search={"algorithm": "tpe", "seed": 0})
    spec = _spec_file(tmp_path, cifar_path, f"warm{objectives}", **changes)
    out = tmp_path / "sweep"
    proc = run(pielab_exe, "sweep", str(spec), "--out", str(out), "--from", str(pareto_sweep), home=tmp_path)
    assert "warm start: 4 trials of study sweep go into the new study first (skipped: 0 outside this space)" \
        in proc.stdout, proc.stdout
    old = {t.number: t for t in optuna.load_study(study_name="sweep", storage=f"sqlite:///{pareto_sweep / 'optuna.db'}").trials}
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{out / 'optuna.db'}")
    assert len(study.directions) == objectives
    copied = [t for t in study.trials if t.user_attrs.get("warm_start_from")]
    assert len(copied) == 4
    for t in copied:
        source = old[int(t.user_attrs["warm_start_from"].split("#")[1])]
        assert t.params == source.params and t.values == source.values[:objectives]
    assert [t.state.name for t in study.trials if not t.user_attrs.get("warm_start_from")] == ["COMPLETE"]


@pytest.mark.parametrize("old_changes,new_changes,message", [
    ({"objectives": None, "metric": "val/acc", "mode": "max"}, {},
     "that sweep's trials have values for val/acc (max) only, this one also optimises model/params (min)"),
    ({}, {"objectives": [{"metric": "val/acc", "mode": "max"}, {"metric": "val/loss", "mode": "min"}]},
     "this one also optimises val/loss (min)"),
    ({"base": {"model": {"name": "lstm4"}}}, {},
     "that sweep trained lstm4 on imdb, this one myresnet34 on cifar10"),
], ids=["one objective into two", "another second objective", "another task"])
def test_warm_start_that_cannot_work_is_one_line(pielab_exe: list[str], cifar_path: str, tmp_path: Path,
                                                  old_changes: dict, new_changes: dict, message: str) -> None:
    """--from a sweep whose trials cannot be values of the new study is refused before anything is made."""
    from pielab.spec.sweep_spec import load_spec

    old = tmp_path / "old"
    old.mkdir()
    spec = load_spec(_spec_file(tmp_path, cifar_path, "old"), []).to_dict()  # sweep.yaml as pielab writes it
    for key, value in old_changes.items():
        if value is None:
            spec.pop(key)
        elif key == "base":
            spec["base"].update(task="imdb", model=value["model"])
        else:
            spec[key] = value
    (old / "sweep.yaml").write_text(yaml.safe_dump(spec))
    new = _spec_file(tmp_path, cifar_path, "new", **new_changes)
    proc = run(pielab_exe, "sweep", str(new), "--out", str(tmp_path / "new"), "--from", str(old), home=tmp_path,
               ok=False, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], proc.stderr
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_killed_nsga2_sweep_resumes_and_continues_its_study(pielab_exe: list[str], cifar_path: str,
                                                            tmp_path: Path) -> None:
    """kill -9 of a two-objective NSGA-II sweep after its first trials, then `pielab resume`: the same study
    goes on (the same trials under the same numbers, then the rest), with NSGA-II rebuilt from the spec
    (Optuna 5.1's NSGA-II holds a lock no pickle takes, so the searcher pickles the sampler's recipe)."""
    import signal

    from helpers import results, wait_for

    spec = _spec_file(tmp_path, cifar_path, "nsga_kill", num_trials=6)
    out = tmp_path / "sweep"
    env = {**os.environ, "HOME": str(tmp_path)}
    proc = subprocess.Popen([*pielab_exe, "sweep", str(spec), "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    wait_for(lambda: sum(r["state"] == "completed" for r in results(out).values()) >= 2, proc,
             what="two completed trials")
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    url = f"sqlite:///{out / 'optuna.db'}"
    before = {t.number: (t.user_attrs.get("trial_id"), t.params) for t in optuna.load_study(
        study_name="sweep", storage=url).trials if t.state.name == "COMPLETE"}
    assert len(before) >= 2
    run(pielab_exe, "resume", str(out), home=tmp_path)
    study = optuna.load_study(study_name="sweep", storage=url)
    assert [d.name for d in study.directions] == ["MAXIMIZE", "MINIMIZE"]
    after = {t.number: (t.user_attrs.get("trial_id"), t.params) for t in study.trials}
    for number, trial in before.items():
        assert after[number] == trial, number  # the same trials under the same numbers
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) >= 6 and not [t for t in study.trials if t.state.name == "RUNNING"]
    assert len({t.user_attrs["trial_id"] for t in complete}) == len(complete)
    status = json.loads((out / "status.json").read_text())
    assert status["finished"] is True and len(status["resumes"]) == 1
    assert len(status["pareto"]) >= 1
