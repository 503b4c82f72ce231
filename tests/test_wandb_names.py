"""W&B names from any sweep folder or spec name, and a W&B failure that shows instead of hiding.

The sweeps run through the console script in a subprocess, with W&B offline; runs are read back from
``<sweep>/wandb/offline-run-*`` (one folder per run, named ``offline-run-<time>-<run id>``).
"""

from __future__ import annotations

import glob
import json
import os
import shlex
import subprocess
from pathlib import Path

import pytest
import yaml
from wandb.errors import UsageError
from wandb.sdk.wandb_settings import Settings

from helpers import closed_port, tiny_spec
from pielab.sweep.tracking import clean_tags, group_name, run_id, sweep_key

NASTY = ["sweep ü #1", " lead and trail ", "a:b;c,d#e?f/g'h", "x" * 300, "", "-", "日本語",
         "sweep-ü-#1", "sweep-ü-?1"]


def valid_run_id(value: str) -> bool:
    try:
        Settings(run_id=value)
    except UsageError:
        return False
    return True


def test_wandb_refuses_what_the_old_run_id_was_built_from():
    # The old id was "<folder name>-<trial id>": W&B refuses it, and the old code then turned tracking off.
    assert not valid_run_id("sweep ü #1-af80277d")
    assert not valid_run_id(" x-af80277d")


@pytest.mark.parametrize("study", NASTY)
def test_run_ids_are_valid_short_and_end_with_the_trial_id(study):
    rid = run_id(study, "af80277d")
    assert valid_run_id(rid), rid
    assert len(rid) <= 64 and rid.rsplit("-", 1)[1] == "af80277d"
    assert rid == run_id(study, "af80277d")  # a function of the study name only: stable across resume and moves


def test_names_that_slug_alike_stay_distinct():
    keys = {sweep_key(s) for s in NASTY}
    assert len(keys) == len(NASTY)
    assert run_id("sweep-ü-#1", "t1") != run_id("sweep-ü-?1", "t1")
    assert run_id("a", "t1") != run_id("a", "t2")


def test_group_and_tags_fit_wandb_limits():
    assert group_name("spec") == "spec"
    long = group_name("g" * 300)
    assert len(long) == 128 and long != group_name("g" * 299)
    tags = clean_tags(["cifar10", "t" * 100, "", " ", "cifar10", "myresnet34"])
    assert tags[0] == "cifar10" and tags[2] == "myresnet34" and len(tags) == 3
    Settings(run_tags=tuple(tags), run_group=long)  # W&B's own validators accept them


# --------------------------------------------------------------------------- through the console script


def wandb_spec(cifar_path: str) -> dict:
    return tiny_spec(cifar_path, name="wandb-names", num_trials=2, epochs=1,
                     tracking={"wandb": True, "mode": "offline", "project": "pielab-tests"})


def run_sweep(exe: list[str], root: Path, spec: dict, out: Path, *sets: str,
              env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    root.mkdir(parents=True, exist_ok=True)
    (root / "home").mkdir(exist_ok=True)
    spec_path = root / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    env = {**os.environ, **(env or {})}  # keeps PYTHONPATH: the worktree's code runs
    env["HOME"] = str(root / "home")
    args = [a for s in sets for a in ("--set", s)]
    return subprocess.run([*exe, "sweep", str(spec_path), "--out", str(out), *args], capture_output=True, text=True,
                          env=env, timeout=900)


def printed(proc: subprocess.CompletedProcess) -> str:
    return proc.stdout + proc.stderr



@pytest.mark.slow
def test_an_unreachable_server_and_a_folder_w_and_b_rejects_as_a_name_still_track(tmp_path, cifar_path,
                                                                                  pielab_exe):
    """Two W&B troubles in one sweep: ``tracking.mode: online`` with a server that refuses connections
    (W&B's client would wait 90 s at each run's start, then drop it) gives one warning line naming the
    server, and the runs are kept offline; the folder's name, which W&B refuses in a run id, still gives
    one valid offline run per trial and a `wandb sync` line that names exactly them."""
    out = tmp_path / "sweep ü #1"
    server = f"http://127.0.0.1:{closed_port()}"
    proc = run_sweep(pielab_exe, tmp_path, wandb_spec(cifar_path), out, "tracking.mode=online",
                     env={"WANDB_BASE_URL": server, "WANDB_API_KEY": "k" * 40})
    text = printed(proc)
    assert proc.returncode == 0, text[-3000:]
    warnings = [line for line in text.splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1 and f"W&B at {server} does not answer (connection refused)" in warnings[0], text
    assert "kept offline" in warnings[0]
    trials = {p.name for p in (out / "trials").iterdir()}
    assert len(trials) == 2
    runs = sorted((out / "wandb").glob("offline-run-*"))
    assert len(runs) == 2, text[-3000:]
    study = json.loads((out / "status.json").read_text())["study"]
    assert study == "sweep ü #1"
    ids = {run.name.split("-", 3)[3] for run in runs}  # offline-run-<date>_<time>-<run id>
    assert ids == {run_id(study, tid) for tid in trials}
    assert all(valid_run_id(i) for i in ids)
    assert all(len(list(run.glob("run-*.wandb"))) == 1 for run in runs)
    assert f"W&B at {server} does not answer" in json.loads((out / "status.json").read_text())["tracking_error"]
    assert "k" * 40 not in text

    # The printed `wandb sync` line pastes into a shell: its words name the runs' folders.
    [line] = [line for line in proc.stdout.splitlines() if "wandb sync" in line]
    words = shlex.split(line.split(": ", 1)[1])
    assert words[:2] == ["wandb", "sync"] and len(words) == 3, words
    assert sorted(glob.glob(glob.escape(str(Path(words[2]).parent)) + "/" + Path(words[2]).name)) == \
        [str(r) for r in runs]
    shell = subprocess.run(["bash", "-c", "printf '%s\\n' " + line.split("wandb sync ", 1)[1]], capture_output=True,
                           text=True)
    assert shell.stdout.splitlines() == [str(r) for r in runs]  # the shell expands it to exactly the runs


@pytest.mark.slow
def test_a_wandb_failure_is_one_warning_line_and_recorded(tmp_path, cifar_path, pielab_exe):
    # W&B itself refuses the project name (wandb.init raises UsageError): tracking stops, the sweep goes on.
    out = tmp_path / "sweep"
    proc = run_sweep(pielab_exe, tmp_path, wandb_spec(cifar_path), out, "tracking.project=bad/project")
    text = printed(proc)
    assert proc.returncode == 0, text[-3000:]
    warnings = [line for line in text.splitlines() if "W&B" in line and "warning" in line.lower()]
    assert len(warnings) == 1, text[-3000:]
    assert "bad/project" in warnings[0]
    status = json.loads((out / "status.json").read_text())
    assert "bad/project" in status["tracking_error"] and status["finished"] is True
    assert status["counts"].get("completed") == 2
    assert not list((out / "wandb").glob("offline-run-*"))
    assert "wandb sync" not in text  # no offline runs, no hint to upload them
