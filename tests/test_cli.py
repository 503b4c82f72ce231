"""`pielab` end to end: the commands a user types, their output, and one clear line on bad input."""

from __future__ import annotations

import json
import subprocess

import pytest

from pielab.models import list_models

EIGHT_SYSTEMS = ("mycnn", "resnet34", "myresnet34", "bilstm2", "lstm4", "lstm8", "res_lstm8", "my_lstm1")


def run(cmd, *args, cwd=None, env=None):
    return subprocess.run([*cmd, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=900)


def assert_one_line_error(proc, fragment):
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("pielab: error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def test_models_lists_the_eight_systems(pielab_exe):
    proc = run(pielab_exe, "models")
    assert proc.returncode == 0, proc.stderr
    names = {line.split()[0] for line in proc.stdout.splitlines()[1:]}
    assert set(EIGHT_SYSTEMS) <= names
    assert names == set(list_models())
    assert "21," in next(line for line in proc.stdout.splitlines() if line.startswith("myresnet34 "))


@pytest.mark.slow
def test_train_cifar_end_to_end(pielab_exe, cifar_path, tmp_path):
    out = tmp_path / "run"
    proc = run(pielab_exe, "train", "myresnet34", "--set", "model.width=8", "--set", "model.depth=10",
               "--set", "data.train_size=1000", "--set", "data.test_size=500", "--set", "train.epochs=2",
               "--set", "train.threads=1", "--set", f"data.path={cifar_path}", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("Epoch 1/2 | Train Loss: ")
    assert any(line.startswith("Training completed in ") for line in lines)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs_run"] == 2 and summary["best_val_acc"] > 0.1


@pytest.mark.slow
def test_train_imdb_end_to_end_and_resume_refusal(pielab_exe, imdb_path, tmp_path):
    out = tmp_path / "run"
    args = ["train", "res_lstm8", "--set", "model.hidden=16", "--set", "model.embed_dim=16", "--set",
            "model.depth=2", "--set", "data.max_len=40", "--set", "data.vocab_size=2000", "--set",
            "data.train_size=300", "--set", "data.test_size=200", "--set", "train.epochs=1", "--set",
            "train.threads=1", "--set", f"data.path={imdb_path}", "--out", str(out)]
    proc = run(pielab_exe, *args)
    assert proc.returncode == 0, proc.stderr
    assert (out / "metrics.csv").is_file() and (out / "accuracy.png").is_file()
    assert_one_line_error(run(pielab_exe, *args), "already holds a run")


def test_bad_input_one_line_and_nothing_written(pielab_exe, tmp_path, cifar_path):
    out = tmp_path / "never"
    cases = [
        (["train", "resnet999", "--out", str(out)], "unknown model 'resnet999'"),
        (["train", "myresnet34", "--set", "train.epochs=zero", "--out", str(out)], "train.epochs: expected int"),
        (["train", "myresnet34", "--set", "data.path=/nonexistent/c.npz", "--out", str(out)], "/nonexistent/c.npz"),
        (["train", "myresnet34", "--set", "model.depth=35", "--out", str(out)], "depth"),
        (["train", str(tmp_path / "missing.yaml"), "--out", str(out)], "no such file"),
        (["train", "--resume", str(tmp_path)], "no checkpoint"),
    ]
    for args, fragment in cases:
        assert_one_line_error(run(pielab_exe, *args), fragment)
        assert not out.exists()

    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model: {name: myresnet34}\ntrain:\n  epochs: [1\n")
    assert_one_line_error(run(pielab_exe, "train", str(bad_yaml), "--out", str(out)), f"{bad_yaml}:")

    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert_one_line_error(run(pielab_exe, "train", "--resume", str(corrupt)), "not a readable pielab checkpoint")


def test_unwritable_output(pielab_exe):
    # /proc refuses new files even to root, so this holds in CI (which runs as root) too.
    assert_one_line_error(run(pielab_exe, "train", "myresnet34", "--out", "/proc/pielab-run"), "not writable")


def test_output_under_a_file_is_refused(pielab_exe, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert_one_line_error(run(pielab_exe, "train", "myresnet34", "--out", str(afile / "run")), "is a file")
