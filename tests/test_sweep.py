"""Sweeps: Optuna accounting of early-stopped trials, seeds, W&B mode, and real sweeps end to end.

The real sweeps run ``pielab sweep`` in a subprocess on tiny configs (two at a time, one core each)
and check the sweep folder: every trial's per-epoch metrics, the Optuna study (ASHA-stopped trials
PRUNED with their intermediate values), one W&B offline run per trial read back with wandb's own
reader, the seeded suggestion sequence, and that no Ray socket listens off 127.0.0.1 meanwhile.
Each sweep runs once per module and is shared by the assertions about it (Ray starts in ~6-10 s).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
import yaml
from ray.tune.search.optuna import OptunaSearch

from helpers import epochs_trained, journal, process_tree
from pielab.config import load_config
from pielab.errors import PielabError
from pielab.sweep import tracking
from pielab.sweep.compat import searcher_study, searcher_trials
from pielab.cli.sweep import dashboard_command, resume_command, status_command
from pielab.folder import METRIC_KEYS, STATES, load_records
from pielab.sweep.runner import start_ray
from pielab.sweep.search import PielabOptunaSearch, make_sampler, optuna_grid
from pielab.spec.space import SearchSpace
from pielab.spec.sweep_spec import SweepSpec

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = SearchSpace.from_dict({"parameters": {
    "model.depth": {"type": "categorical", "choices": [10, 18]},
    "model.residual": {"type": "bool"},
    "train.lr": {"type": "float", "low": 3.0e-4, "high": 1.0e-2, "log": True},
}})
SECRET = "pielab-test-key-0123456789abcdef0123456789abcdef"  # a fake W&B key that must never be written


# --------------------------------------------------------------------------- the searcher, without Ray running


def searcher(cls=PielabOptunaSearch, seed=0, algorithm="tpe", space=SPACE, **kwargs):
    sampler = make_sampler(algorithm, seed, {}, space)
    if cls is OptunaSearch:
        return OptunaSearch(space=space, metric="val/acc", mode="max", sampler=sampler, study_name="s")
    kwargs = {"base_epochs": 4, "max_t": 4, **kwargs}
    return cls(space, metric="val/acc", mode="max", sampler=sampler, storage=None, study_name="s", **kwargs)


def play(s, trial_id: str, values: list[float], *, total: int | None = None) -> None:
    """Feed per-epoch results as Tune does; the last one (the scheduler's STOP) goes only to on_trial_complete."""
    results = [{"val/acc": v, "epoch": e, "training_iteration": e} for e, v in enumerate(values, 1)]
    for r in results[:-1]:
        s.on_trial_result(trial_id, r)
    s.on_trial_complete(trial_id, result=results[-1])


def frozen(s, number: int) -> optuna.trial.FrozenTrial:
    return searcher_study(s).get_trials()[number]


def test_asha_stopped_trial_is_pruned_where_rays_searcher_says_complete():
    theirs, ours = searcher(OptunaSearch), searcher()
    for s in (theirs, ours):
        s.suggest("t1")
        play(s, "t1", [0.30, 0.35])  # stopped by the scheduler after 2 of 4 epochs
    ray_trial, our_trial = frozen(theirs, 0), frozen(ours, 0)
    assert ray_trial.state == optuna.trial.TrialState.COMPLETE and ray_trial.value == 0.35  # the misleading record
    assert our_trial.state == optuna.trial.TrialState.PRUNED
    assert our_trial.intermediate_values == {1: 0.30, 2: 0.35}
    assert our_trial.value == 0.35 and our_trial.user_attrs["end"] == "early_stopped"


def test_full_length_trial_is_complete_with_its_best_epoch():
    s = searcher()
    s.suggest("t1")
    play(s, "t1", [0.30, 0.50, 0.45, 0.48])
    t = frozen(s, 0)
    assert t.state == optuna.trial.TrialState.COMPLETE and t.value == 0.50
    assert t.intermediate_values == {1: 0.30, 2: 0.50, 3: 0.45, 4: 0.48}


def test_diverged_and_errored_trials_fail():
    s = searcher()
    s.suggest("t1"), s.suggest("t2")
    s.on_trial_result("t1", {"val/acc": 0.2, "epoch": 1})
    s.on_trial_complete("t1", result={"val/acc": math.nan, "epoch": 1, "diverged": True, "reason": "loss is nan"})
    s.on_trial_complete("t2", error=True)
    t1, t2 = frozen(s, 0), frozen(s, 1)
    assert t1.state == t2.state == optuna.trial.TrialState.FAIL
    assert t1.user_attrs["end"] == "diverged" and t1.user_attrs["reason"] == "loss is nan"
    assert t2.user_attrs["end"] == "failed"


def test_searched_epochs_and_max_t_set_the_full_length():
    s = searcher(max_t=3)
    s.suggest("t1")
    play(s, "t1", [0.1, 0.2, 0.3])  # max_t 3 < train.epochs 4: three epochs is the full length
    assert frozen(s, 0).state == optuna.trial.TrialState.COMPLETE


def test_seed_repeats_run_the_same_configuration_once_per_seed():
    s = searcher(seeds=[0, 1, 2])
    configs = [s.suggest(f"t{i}") for i in range(6)]
    assert [c["train.seed"] for c in configs] == [0, 1, 2, 0, 1, 2]
    strip = [{k: v for k, v in c.items() if k != "train.seed"} for c in configs]
    assert strip[0] == strip[1] == strip[2] and strip[3] == strip[4] == strip[5] and strip[0] != strip[3]
    assert [t.user_attrs["group"] for t in searcher_study(s).get_trials()] == [0, 0, 0, 1, 1, 1]


def test_grid_runs_every_configuration_once_per_seed():
    grid = SearchSpace.from_dict({"parameters": {"model.depth": {"type": "categorical", "choices": [10, 18, 34]},
                                                 "model.residual": {"type": "bool"},
                                                 "model.layers": {"type": "fixed", "value": [1, 1]}}})
    assert optuna_grid(grid) == {"model.depth": [10, 18, 34], "model.residual": [False, True]}
    s = searcher(algorithm="grid", space=grid, seeds=[0, 1])
    seen = [s.suggest(f"t{i}") for i in range(12)]
    pairs = sorted((c["model.depth"], c["model.residual"], c["train.seed"]) for c in seen)
    assert pairs == sorted((d, r, sd) for d in (10, 18, 34) for r in (False, True) for sd in (0, 1))
    assert all(c["model.layers"] == [1, 1] for c in seen)


def _sequence(seed: int) -> list[dict]:
    """TPE past its random start-up phase: a deterministic trial order gets the same suggestions."""
    s = searcher(seed=seed)
    out = []
    for i in range(14):
        config = s.suggest(f"t{i}")
        out.append(config)
        score = 0.5 - abs(math.log10(config["train.lr"]) + 2.5) / 4 + (0.05 if config["model.residual"] else 0)
        play(s, f"t{i}", [score * 0.8, score, score, score])
    return out


def test_same_seed_same_suggestions():
    first, again, other = _sequence(0), _sequence(0), _sequence(1)
    assert first == again
    assert first != other


# --------------------------------------------------------------------------- W&B mode and the API key


def test_wandb_mode_auto_is_offline_without_a_key(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert tracking.resolve_mode(True, "auto") == "offline"
    assert tracking.resolve_mode(True, "online") == "online"
    assert tracking.resolve_mode(False, "online") == "disabled"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password secret\n")
    assert tracking.resolve_mode(True, "auto") == "online"
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_API_KEY", SECRET)
    assert tracking.resolve_mode(True, "auto") == "online"


# --------------------------------------------------------------------------- bad input: one clear line, fast


def test_unreachable_address_fails_within_seconds():
    start = time.monotonic()
    with pytest.raises(PielabError, match="cannot reach a Ray cluster at 127.0.0.1:1"):
        start_ray("127.0.0.1:1")
    with pytest.raises(PielabError, match="expected HOST:PORT"):
        start_ray("not-an-address")
    assert time.monotonic() - start < 10


def test_dashboard_without_optuna_dashboard_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "sweep.yaml").write_text("name: x\n")
    (tmp_path / "optuna.db").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)
    with pytest.raises(PielabError, match="pip install optuna-dashboard"):
        dashboard_command(str(tmp_path), "127.0.0.1", 8080)


def test_status_of_a_folder_that_is_not_a_sweep(tmp_path):
    with pytest.raises(PielabError, match="not a sweep folder"):
        status_command(str(tmp_path))
    with pytest.raises(PielabError, match="no such sweep folder"):
        resume_command(str(tmp_path / "missing"))


# --------------------------------------------------------------------------- real sweeps


def cifar_spec(cifar_path: str, **over) -> dict:
    spec = {
        "name": "cifar-test",
        "base": {
            "model": {"name": "myresnet34", "width": 8},
            "data": {"path": cifar_path, "train_size": 400, "val_size": 200, "test_size": 200},
            "train": {"epochs": 3, "batch_size": 32, "device": "cpu"},
        },
        "space": SPACE.to_dict(),
        "search": {"algorithm": "tpe", "seed": 0},
        "scheduler": {"name": "asha", "grace_period": 1, "reduction_factor": 3},
        "num_trials": 6,
        "max_concurrent": 2,
        "resources": {"cpu": 1, "gpu": 0},
        "tracking": {"wandb": True, "mode": "offline", "project": "pielab-tests"},
    }
    spec.update(over)
    return spec


def imdb_spec(imdb_path: str) -> dict:
    return {
        "name": "imdb-test",
        "base": {
            "model": {"name": "lstm4", "embed_dim": 16, "hidden": 16, "depth": 1},
            "data": {"path": imdb_path, "train_size": 300, "val_size": 100, "test_size": 100, "max_len": 50,
                     "vocab_size": 2000},
            "train": {"epochs": 2, "batch_size": 32, "device": "cpu"},
        },
        "space": {"parameters": {"model.depth": {"type": "categorical", "choices": [1, 2]},
                                 "model.residual": {"type": "bool"}}},
        "search": {"algorithm": "grid", "seed": 0},
        "scheduler": {"name": "fifo"},
        "max_concurrent": 2,
        "resources": {"cpu": 1, "gpu": 0},
        "tracking": {"wandb": True, "mode": "offline", "project": "pielab-tests"},
    }


def subprocess_env(root: Path) -> dict[str, str]:
    env = dict(os.environ)
    # A shell has no RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER: importing pielab.sweep in this process set it here.
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    env["HOME"] = str(root / "home")  # Ray's auth token and anything else written under HOME
    env["WANDB_API_KEY"] = SECRET  # tracking.mode is offline: the key must not be needed, used or written
    Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
    return env


def ray_sockets(root_pid: int) -> set[tuple[str, str]]:
    """(address, process) for every socket of a process under ``root_pid``: TCP/UDP listeners (local
    address) and open TCP connections (both ends)."""
    pids = process_tree(root_pid)
    out = set()
    for flags in ("-tlnpH", "-ulnpH", "-tnpH"):
        text = subprocess.run(["ss", flags], capture_output=True, text=True).stdout
        for line in text.splitlines():
            parts = line.split()
            owners = {int(p) for p in re.findall(r"pid=(\d+)", line)}
            if owners & pids:
                name = re.search(r'\(\("([^"]+)"', line)
                for address in (parts[3], parts[4]) if flags == "-tnpH" else (parts[3],):
                    out.add((address, name.group(1) if name else "?"))
    return out


def run_sweep_subprocess(cmd: list[str], spec: dict, root: Path, *, watch_sockets: bool = False):
    root.mkdir(parents=True, exist_ok=True)
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    out = root / "sweep"
    proc = subprocess.Popen([*cmd, "sweep", str(spec_path), "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=subprocess_env(root))
    sockets: set[tuple[str, str]] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            sockets.update(ray_sockets(proc.pid))
            stop.wait(0.5)

    watcher = threading.Thread(target=watch, daemon=True)
    if watch_sockets:
        watcher.start()
    stdout, stderr = proc.communicate(timeout=900)
    stop.set()
    if watch_sockets:
        watcher.join()
    return SimpleNamespace(dir=out, rc=proc.returncode, stdout=stdout, stderr=stderr, sockets=sockets, spec=spec,
                           root=root)


@pytest.fixture(scope="module")
def cifar_sweep(tmp_path_factory, cifar_path, pielab_exe):
    return run_sweep_subprocess(pielab_exe, cifar_spec(cifar_path), tmp_path_factory.mktemp("cifar"),
                                watch_sockets=True)


@pytest.fixture(scope="module")
def imdb_sweep(tmp_path_factory, imdb_path, pielab_exe):
    return run_sweep_subprocess(pielab_exe, imdb_spec(imdb_path), tmp_path_factory.mktemp("imdb"))


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def study_of(sweep_dir: Path) -> optuna.Study:
    return optuna.load_study(study_name=sweep_dir.name, storage=f"sqlite:///{sweep_dir / 'optuna.db'}")


def wandb_records(run_file: Path) -> list[dict]:
    """The records of a W&B transaction log, read back by wandb's own reader (``wandb leet inspect --json``)."""
    exe = Path(sys.executable).with_name("wandb")
    proc = subprocess.run([str(exe), "leet", "inspect", "--json", str(run_file)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def check_sweep_folder(sweep) -> dict:
    assert sweep.rc == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    d = sweep.dir
    for name in ("sweep.yaml", "optuna.db", "tune", "wandb", "trials", "status.json", "results.csv"):
        assert (d / name).exists(), name
    saved = SweepSpec.from_dict(yaml.safe_load((d / "sweep.yaml").read_text()))
    assert saved.space.to_dict()["parameters"]  # the space is inlined
    records = load_records(d)
    num_trials = saved.num_trials
    assert len(records) == num_trials
    for tid, rec in records.items():
        folder = d / "trials" / tid
        config = load_config(folder / "config.yaml")  # the resolved config `pielab train` accepts
        resolved = config.to_dict()
        for key, value in rec.params.items():
            section, _, name = key.partition(".")
            assert resolved[section][name] == value, key
        assert rec.state in STATES and rec.state != "running"
        rows = read_csv(folder / "metrics.csv")
        assert list(rows[0]) == list(METRIC_KEYS)
        assert [int(r["epoch"]) for r in rows] == list(range(1, rec.epochs + 1))
        assert all(r[k] != "" for r in rows for k in ("train/loss", "val/acc", "time/epoch_s"))
        assert rec.best_val_acc == max(float(r["val/acc"]) for r in rows)
        assert rec.num_params and rec.train_time_s > 0 and rec.test_acc is not None
    status = json.loads((d / "status.json").read_text())
    assert status["finished"] is True and sum(status["counts"].values()) == num_trials
    assert len(read_csv(d / "results.csv")) == num_trials
    return records


def check_study(sweep, records) -> optuna.Study:
    study = study_of(sweep.dir)
    trials = study.get_trials()
    assert len(trials) == len(records)
    expected = {"completed": "COMPLETE", "early_stopped": "PRUNED", "failed": "FAIL", "diverged": "FAIL"}
    by_attrs = {}
    for t in trials:
        by_attrs.setdefault(t.user_attrs["end"], []).append(t)
        assert t.state.name == expected[t.user_attrs["end"]]
    # Each trial's intermediate values are its per-epoch val/acc; match them to the trials/ folders.
    curves = sorted(tuple(round(v, 6) for _, v in sorted(t.intermediate_values.items())) for t in trials)
    ours = sorted(tuple(round(float(r["val/acc"]), 6) for r in read_csv(sweep.dir / "trials" / tid / "metrics.csv"))
                  for tid in records)
    assert curves == ours
    assert sorted(t.user_attrs["end"] for t in trials) == sorted(r.state for r in records.values())
    return study


def check_wandb(sweep, records) -> None:
    runs = sorted((sweep.dir / "wandb").glob("offline-run-*"))
    assert len(runs) == len(records)
    by_trial = {run.name.rsplit("-", 1)[1]: run for run in runs}
    assert set(by_trial) == set(records)
    for tid, run in by_trial.items():
        assert len(list(run.glob("run-*.wandb"))) == 1
    tid, rec = max(records.items(), key=lambda kv: kv[1].epochs)  # the longest trial, read back in full
    log = wandb_records(next(by_trial[tid].glob("run-*.wandb")))
    history = [r["history"] for r in log if r["type"] == "history"]
    rows = read_csv(sweep.dir / "trials" / tid / "metrics.csv")
    assert [h["step"]["num"] for h in history] == [int(r["epoch"]) for r in rows]
    assert [round(h["item"]["val/acc"], 6) for h in history] == [round(float(r["val/acc"]), 6) for r in rows]
    run = next(r["run"] for r in log if r["type"] == "run")
    config = run["config"]["update"]
    assert run["display_name"] == tid and run["run_group"] == sweep.spec["name"]
    assert config["model.name"] == sweep.spec["base"]["model"]["name"] and "train.lr" in config
    summary = {}
    for r in log:
        if r["type"] == "summary":
            summary.update(r["summary"]["update"])
    assert summary["state"] == rec.state and summary["test/acc"] == pytest.approx(rec.test_acc)
    assert any(r["type"] == "exit" for r in log)


def check_no_secret(sweep) -> None:
    for path in sweep.dir.rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert SECRET.encode() not in path.read_bytes(), path
    assert SECRET not in sweep.stdout + sweep.stderr


@pytest.mark.slow
def test_cifar_sweep_folder(cifar_sweep):
    records = check_sweep_folder(cifar_sweep)
    assert {"model.depth", "model.residual", "train.lr"} <= set(next(iter(records.values())).params)


@pytest.mark.slow
def test_cifar_sweep_optuna_prunes_what_asha_stopped(cifar_sweep):
    records = check_sweep_folder(cifar_sweep)
    check_study(cifar_sweep, records)
    states = [r.state for r in records.values()]
    assert "early_stopped" in states and "completed" in states, states
    for tid, rec in records.items():
        assert (rec.epochs < 3) == (rec.state == "early_stopped")
        # The journal lists the epoch at which ASHA stopped the trial too (Tune ends the trial's thread
        # inside that report: a line written after it was lost).
        assert epochs_trained(journal(cifar_sweep.dir, tid)) == list(range(1, rec.epochs + 1)), tid


@pytest.mark.slow
def test_cifar_sweep_wandb_offline_runs(cifar_sweep):
    records = check_sweep_folder(cifar_sweep)
    check_wandb(cifar_sweep, records)
    check_no_secret(cifar_sweep)
    assert "wandb sync" in cifar_sweep.stdout


@pytest.mark.slow
def test_cifar_sweep_suggestions_follow_the_seed(cifar_sweep):
    """The sweep's study asked the same configurations, in order, as a fresh searcher with the same seed."""
    saved = SweepSpec.from_dict(yaml.safe_load((cifar_sweep.dir / "sweep.yaml").read_text()))
    replay = searcher(seed=saved.search.seed, space=saved.space, seeds=saved.seeds)
    expected = []
    for i in range(saved.num_trials):
        replay.suggest(f"r{i}")
        expected.append(searcher_trials(replay)[f"r{i}"].params)
    got = [t.params for t in sorted(study_of(cifar_sweep.dir).get_trials(), key=lambda t: t.number)]
    assert got == expected


@pytest.mark.slow
def test_cifar_sweep_ray_stays_on_loopback(cifar_sweep):
    names = {name for _, name in cifar_sweep.sockets}
    assert "gcs_server" in names and "raylet" in names, cifar_sweep.sockets  # the watch saw Ray running
    off = sorted(s for s in cifar_sweep.sockets if not re.match(r"^(127\.|\[::1\]|\[::ffff:127\.)", s[0]))
    assert not off, f"Ray used an address off loopback: {off}"


@pytest.mark.slow
def test_status_and_resume_of_a_finished_sweep(cifar_sweep, capsys):
    assert status_command(str(cifar_sweep.dir)) == 0
    out = capsys.readouterr().out
    assert "finished" in out and "best so far: val/acc" in out and "6 trials" in out
    assert resume_command(str(cifar_sweep.dir)) == 0
    assert "already finished" in capsys.readouterr().out


@pytest.mark.slow
def test_imdb_grid_sweep(imdb_sweep):
    records = check_sweep_folder(imdb_sweep)
    assert sorted((r.params["model.depth"], r.params["model.residual"]) for r in records.values()) == [
        (1, False), (1, True), (2, False), (2, True)]
    assert all(r.state == "completed" and r.epochs == 2 for r in records.values())  # fifo: no early stopping
    study = check_study(imdb_sweep, records)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    check_wandb(imdb_sweep, records)


@pytest.mark.slow
def test_dashboard_serves_the_study(cifar_sweep, pielab_exe):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([*pielab_exe, "dashboard", str(cifar_sweep.dir), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        body = None
        while time.monotonic() < deadline and body is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies", timeout=2) as resp:
                    body = json.loads(resp.read())
            except OSError:
                assert proc.poll() is None, proc.stderr.read()
                time.sleep(0.5)
        assert body is not None
        assert [s["study_name"] for s in body["study_summaries"]] == [cifar_sweep.dir.name]
    finally:
        proc.terminate()
        proc.wait(timeout=30)


GPU_DRIVER = """
import sys
from pielab.sweep import runner  # first: it keeps Ray on loopback, which only works before `import ray`
import ray
from pielab.cli.sweep import sweep_command

runner.set_quiet_env()
# One logical GPU on this CPU machine: Ray schedules by the number, CUDA is never touched.
ray.init(num_cpus=2, num_gpus=1, _node_ip_address="127.0.0.1", include_dashboard=False, log_to_driver=False)
try:
    code = sweep_command(sys.argv[1], [], sys.argv[2], None)
finally:
    ray.shutdown()
sys.exit(code)
"""


@pytest.mark.slow
def test_fractional_gpu_trials_share_one_gpu(tmp_path, cifar_path):
    """resources.gpu: 0.5 packs two trials onto one GPU: on a Ray node with one (logical) GPU both run
    at the same time, each told GPU 0; a third waits for a free half."""
    spec = cifar_spec(cifar_path, name="half-gpu", num_trials=3, resources={"cpu": 1, "gpu": 0.5},
                      scheduler={"name": "fifo"}, tracking={"wandb": False})
    spec["base"]["train"].update(epochs=2, threads=1)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    (tmp_path / "driver.py").write_text(GPU_DRIVER)
    out = tmp_path / "sweep"
    proc = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(spec_path), str(out)],
                          capture_output=True, text=True, env=subprocess_env(tmp_path), timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = load_records(out)
    assert len(records) == 3 and all(r.state == "completed" for r in records.values()), records
    starts = {}
    for tid in records:
        lines = (out / "tune" / tid / "epochs.log").read_text().splitlines()
        first = next(line for line in lines if line.startswith("start "))
        assert "gpus=0" in first.split(), first  # Ray gave the trial GPU 0
        starts[tid] = first
    spans = sorted((r.started, r.ended) for r in records.values())
    assert spans[1][0] < spans[0][1], spans  # the first two ran at the same time on the one GPU
    assert spans[2][0] >= min(spans[0][1], spans[1][1]), spans  # the third waited for a free half


@pytest.mark.parametrize("state", ["completed", "early_stopped", "failed", "diverged"])
def test_a_resume_never_rewrites_an_ended_trial(tmp_path, state):
    """Tune's snapshot can predate a trial's end (or restart an errored one with resume_errored): the
    trainable then returns at once, and the recorder must keep the recorded end, failed ones too."""
    from pielab.folder import TrialRecord
    from pielab.sweep.recorder import SweepRecorder

    recorder = SweepRecorder(tmp_path, name="s", base={}, metric="val/acc", mode="max", max_t=None, num_trials=1,
                             slots=1, time_budget_s=None, scheduler="fifo", tracking=None, address=None)
    rec = TrialRecord(trial_id="t1", params={"train.lr": 0.1}, state=state, reason="why",
                      ended="2026-11-28T10:00:00+00:00")
    recorder.records["t1"] = rec
    trial = SimpleNamespace(trial_id="t1", config={"train.lr": 0.1}, last_result={"epoch": 1, "val/acc": 0.5})
    recorder.on_trial_start(0, [trial], trial)
    recorder.on_trial_result(0, [trial], trial, {"epoch": 1, "val/acc": 0.5})
    recorder.on_trial_complete(0, [trial], trial)
    assert (rec.state, rec.reason, rec.ended) == (state, "why", "2026-11-28T10:00:00+00:00")
    assert not (tmp_path / "trials" / "t1").exists()  # nothing rewritten
