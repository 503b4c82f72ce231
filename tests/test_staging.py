"""Checkpoint staging folders: a trial killed mid-save leaves one in the temp directory; the sweep removes
its own dead processes' folders when it starts, resumes and ends, and never another sweep's or a live one's.

Folders are named ``pielab-ckpt-<sweep key>-<trial>-<pid>-XXXXXXXX`` (pielab.sweep.trainable.staging_prefix).
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest
import yaml

from helpers import tiny_spec, wait_for
from pielab.sweep.trainable import remove_stale_staging, staging_prefix


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def plant(root: Path, study: str, trial: str, pid: int) -> Path:
    folder = Path(tempfile.mkdtemp(prefix=staging_prefix(study, trial, pid), dir=root))
    (folder / "state.pt").write_bytes(b"half-written")
    return folder


def test_only_this_sweeps_dead_processes_folders_are_removed(tmp_path):
    study = "sweep ü #1"
    dead = plant(tmp_path, study, "af80277d", dead_pid())
    live = plant(tmp_path, study, "af80277d", os.getpid())
    other = plant(tmp_path, "another sweep", "af80277d", dead_pid())
    # A study whose key starts with this one's key plus "-": its folders must not match.
    longer = plant(tmp_path, staging_prefix(study)[len("pielab-ckpt-"):] + "x", "t1", dead_pid())
    a_file = tmp_path / (staging_prefix(study, "t2", dead_pid()) + "abcdefgh")
    a_file.write_text("not a folder")
    bare = Path(tempfile.mkdtemp(prefix="pielab-ckpt-", dir=tmp_path))  # no sweep: never cleaned by name

    assert remove_stale_staging(study, tmp_path) == [dead]
    assert not dead.exists()
    assert live.exists() and other.exists() and longer.exists() and a_file.exists() and bare.exists()
    assert remove_stale_staging(None, tmp_path) == []
    assert remove_stale_staging(study, tmp_path / "missing") == []


def command_in(text: str, verb: str) -> list[str]:
    """The words of the ``pielab <verb> ...`` command printed in ``text`` (after ': ' or inside backquotes)."""
    line = next(line for line in text.splitlines() if f"pielab {verb} " in line)
    tail = line[line.index(f"pielab {verb} "):]
    return shlex.split(tail.split("`")[0])


@pytest.mark.slow
def test_sweep_removes_killed_trials_staging_at_end_and_on_resume(tmp_path, cifar_path, pielab_exe):
    tmpdir = tmp_path / "tmp"  # the sweep's (and its trials') temp directory, ours alone
    tmpdir.mkdir()
    (tmp_path / "home").mkdir()
    env = dict(os.environ)  # keeps PYTHONPATH: the worktree's code runs
    env.update(HOME=str(tmp_path / "home"), TMPDIR=str(tmpdir))
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(tiny_spec(cifar_path, name="staging", num_trials=2), sort_keys=False))
    out = tmp_path / "sweep one"  # a space: the printed resume commands must quote it
    study = out.name  # the study is named after the folder it was created in

    before_start = plant(tmpdir, study, "deadbeef", dead_pid())
    live = plant(tmpdir, study, "deadbeef", os.getpid())
    other = plant(tmpdir, "sweep two", "deadbeef", dead_pid())

    proc = subprocess.Popen([*pielab_exe, "sweep", str(spec_path), "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    wait_for(lambda: any((out / "trials").glob("*/metrics.csv")), proc, what="the first epoch")
    assert not before_start.exists()  # removed when the sweep started
    during = plant(tmpdir, study, "cafef00d", dead_pid())
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130, stdout[-3000:] + stderr[-3000:]
    assert not during.exists()  # removed when the (interrupted) sweep ended
    assert live.exists() and other.exists()
    assert command_in(stdout, "resume") == ["pielab", "resume", str(out)]
    status = subprocess.run([*pielab_exe, "status", str(out)], capture_output=True, text=True, env=env, timeout=120)
    assert command_in(status.stdout, "resume") == ["pielab", "resume", str(out)], status.stdout

    moved = tmp_path / "moved sweep #2"  # a moved folder keeps its study, so its staging names too
    out.rename(moved)
    before_resume = plant(tmpdir, study, "cafef00d", dead_pid())
    resumed = subprocess.run([*pielab_exe, "resume", str(moved)], capture_output=True, text=True, env=env,
                             timeout=900)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert not before_resume.exists()
    assert live.exists() and other.exists()
    ours = sorted(p.name for p in tmpdir.glob(staging_prefix(study) + "*"))
    assert ours == [live.name]  # the trials' own staging folders were removed as they went
