"""Every result traceable, and the report replayed: through the console script, as a user runs it.

A ``pielab train`` run folder, a sweep trial's record, its W&B offline run's config and an exported config
each carry the code version, the library versions and the device (:mod:`pielab.provenance`);
``pielab train EXPORTED.yaml`` warns in one line when this machine's versions differ. The report's
replay specs (``sweeps/report_*.yaml``) load and run at a tiny scale, and their report puts the
report's own numbers in a Reference column.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pielab import provenance
from pielab.spec.sweep_spec import load_spec

REPO = Path(__file__).resolve().parents[1]

# The tiny replay of each report spec: 2 systems x 1 epoch (mycnn keeps its own epochs rule: 1 more).
TINY = {
    "cifar10": [
        "--set", "model.width=4", "--set", "data.train_size=200", "--set", "data.val_size=100",
        "--set", "data.test_size=100", "--set", "train.epochs=1", "--set", "train.batch_size=50",
        "--set", "space={parameters: {model.name: {type: categorical, choices: [mycnn, myresnet34]}, "
                 "train.epochs: {type: fixed, value: 2, when: {model.name: mycnn}}}}",
    ],
    "imdb": [
        "--set", "model.embed_dim=8", "--set", "model.hidden=8", "--set", "data.train_size=200",
        "--set", "data.val_size=100", "--set", "data.test_size=100", "--set", "data.max_len=30",
        "--set", "data.vocab_size=500", "--set", "train.epochs=1",
        "--set", "space={parameters: {model.name: {type: categorical, choices: [lstm4, res_lstm8]}}}",
    ],
}
COMMON = ["--set", "train.device=cpu", "--set", "resources.gpu=0", "--set", "resources.cpu=1",
          "--set", "max_concurrent=2", "--set", "tracking.mode=offline", "--set", "tracking.project=pielab-tests"]


def env_for(root: Path) -> dict[str, str]:
    env = dict(os.environ)  # PYTHONPATH stays: the worktree's code runs
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)
    env["HOME"] = str(root / "home")
    Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
    return env


def pielab(exe: list[str], *args: str, root: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run([*exe, *args], capture_output=True, text=True, env=env_for(root), timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def check_provenance(prov: dict, device_type: str = "cpu") -> None:
    assert prov["code"] == provenance.code_version()
    versions = prov["versions"]
    for name in ("python", "torch", "torchvision", "ray", "optuna", "wandb"):  # all installed in the test venv
        assert versions[name] == provenance.library_versions()[name], name
    assert prov["device"]["type"] == device_type and prov["device"]["name"] == provenance.cpu_model()


def wandb_config(run_file: Path) -> dict:
    """A W&B offline run's config, every update merged, read back by wandb's own reader."""
    exe = Path(sys.executable).with_name("wandb")
    proc = subprocess.run([str(exe), "leet", "inspect", "--json", str(run_file)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    config: dict = {}
    for line in proc.stdout.splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if record["type"] == "run":
            config.update(record["run"]["config"]["update"])
        elif record["type"] == "config":
            config.update(record["config"]["update"])
    return config


# --------------------------------------------------------------------------- pielab train


def test_a_train_run_folder_records_its_provenance(tmp_path, cifar_path, pielab_exe):
    out = tmp_path / "run"
    pielab(pielab_exe, "train", "mycnn", "--set", f"data.path={cifar_path}", "--set", "model.width=4",
           "--set", "data.train_size=100", "--set", "data.val_size=50", "--set", "data.test_size=50",
           "--set", "train.epochs=1", "--set", "train.device=cpu", "--out", str(out), root=tmp_path)
    check_provenance(json.loads((out / "summary.json").read_text())["provenance"])
    saved = yaml.safe_load((out / "config.yaml").read_text())
    check_provenance(saved["provenance"])
    # the saved config trains as is: the provenance section is accepted and is not part of the config
    from pielab.config import load_config

    config = load_config(out / "config.yaml")
    assert config.provenance == saved["provenance"] and "provenance" not in config.to_dict()


def test_the_config_loader_rejects_a_provenance_that_is_not_a_mapping(tmp_path):
    from pielab.config import load_config
    from pielab.errors import ConfigError

    path = tmp_path / "c.yaml"
    path.write_text("model: {name: mycnn}\nprovenance: 3\n")
    with pytest.raises(ConfigError, match=rf"{path}:2: provenance"):
        load_config(path)


def test_differences_compare_code_and_shared_libraries_only():
    here = {"code": "abc", "versions": {"python": "3.12.3", "torch": "2.14.1"}}
    assert provenance.differences({"code": "abc", "versions": {"torch": "2.14.1", "ray": "2.60.0"}}, here) == []
    assert provenance.differences({"code": "abd", "versions": {"torch": "2.13.0"}}, here) == [
        "code abd -> abc", "torch 2.13.0 -> 2.14.1"]


# --------------------------------------------------------------------------- the report's replay specs


@pytest.mark.parametrize("task", ["cifar10", "imdb"])
def test_report_specs_load_with_the_reports_settings(task):
    spec = load_spec(REPO / "sweeps" / f"report_{task}.yaml")
    configs = {c["model.name"]: spec.trial_config(c) for c in spec.space.grid_configs()}
    if task == "cifar10":
        assert set(configs) == {"mycnn", "resnet34", "myresnet34"}
        assert {n: c.train.epochs for n, c in configs.items()} == {"mycnn": 30, "resnet34": 20, "myresnet34": 20}
        assert configs["mycnn"].model["residual"] is False and configs["myresnet34"].model["residual"] is True
        assert all(c.train.batch_size == 128 for c in configs.values())
    else:
        assert set(configs) == {"bilstm2", "lstm4", "lstm8", "res_lstm8", "my_lstm1"}
        assert configs["res_lstm8"].model["depth"] == 8 and configs["res_lstm8"].model["residual"] is True
        assert configs["bilstm2"].model["bidirectional"] is True and configs["my_lstm1"].model["backend"] == "custom"
        for c in configs.values():
            assert (c.train.epochs, c.train.batch_size, c.data.max_len, c.data.vocab_size) == (10, 64, 300, 20000)
            assert (c.model["embed_dim"], c.model["hidden"], c.model["dropout"]) == (200, 256, 0.5)
    assert all(c.train.lr == 1e-3 and c.train.optimizer == "adam" for c in configs.values())
    assert set(spec.reference) == set(configs) and spec.metric == "val/acc"


def test_a_reference_for_a_model_of_another_task_is_refused(tmp_path, pielab_exe):
    spec = yaml.safe_load((REPO / "sweeps" / "report_cifar10.yaml").read_text())
    spec["space"] = str(REPO / "search_spaces" / "report_cifar10.yaml")
    spec["reference"]["bilstm2"] = {"val_acc": 0.5}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    proc = subprocess.run([*pielab_exe, "sweep", str(path), "--out", str(tmp_path / "s")], capture_output=True,
                          text=True, env=env_for(tmp_path), timeout=300)
    assert proc.returncode == 2 and "reference.bilstm2: not a registered cifar10 model" in proc.stderr


@pytest.mark.parametrize("task", ["cifar10", "imdb"])
def test_report_replay_tiny_sweep_is_traceable(task, tmp_path, cifar_path, imdb_path, pielab_exe):
    data = cifar_path if task == "cifar10" else imdb_path
    sweep = tmp_path / "sweep"
    pielab(pielab_exe, "sweep", str(REPO / "sweeps" / f"report_{task}.yaml"), *TINY[task], *COMMON,
           "--set", f"data.path={data}", "--out", str(sweep), root=tmp_path)

    # every trial's record carries its provenance, and its W&B run's config too
    results = {p.parent.name: json.loads(p.read_text()) for p in (sweep / "trials").glob("*/result.json")}
    assert len(results) == 2 and all(r["state"] == "completed" for r in results.values())
    for result in results.values():
        check_provenance(result["provenance"])
    runs = sorted((sweep / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 2
    config = wandb_config(runs[0])
    assert config["provenance.code"] == provenance.code_version()
    assert config["provenance.torch"] == provenance.library_versions()["torch"]
    assert config["provenance.device"].startswith("CPU ")
    if task == "cifar10":  # the conditional fixed value: mycnn keeps its own (longer) epochs
        epochs = {yaml.safe_load((sweep / "trials" / t / "config.yaml").read_text())["model"]["name"]: r["epochs"]
                  for t, r in results.items()}
        assert epochs == {"mycnn": 2, "myresnet34": 1}

    # the report: the report's numbers in a Reference column, the versions stated once
    pielab(pielab_exe, "report", str(sweep), root=tmp_path)
    summary = (sweep / "report" / "summary.md").read_text()
    header = summary.splitlines()[0]
    assert "| Reference |" in header + " "
    reference = load_spec(REPO / "sweeps" / f"report_{task}.yaml").reference
    for row in summary.splitlines()[2:4]:
        model = row.split("|")[1].strip()
        assert f"{100 * reference[model].val_acc:.2f}" in row.split("|")[-2]
    assert summary.count(f"torch {provenance.library_versions()['torch']}") == 1
    page = (sweep / "report" / "report.html").read_text()
    assert page.count("Provenance: code ") == 1 and "Reference" in page

    # the exported config carries the trial's provenance; `pielab train` warns only when versions differ
    exported = tmp_path / "best.yaml"
    pielab(pielab_exe, "export", str(sweep), "--out", str(exported), root=tmp_path)
    raw = yaml.safe_load(exported.read_text())
    check_provenance(raw["provenance"])
    same = pielab(pielab_exe, "train", str(exported), "--set", "train.epochs=1", "--out", str(tmp_path / "same"),
                  root=tmp_path)
    assert "warning" not in same.stderr.lower() + same.stdout.lower()
    if task == "imdb":
        return  # one warning check is enough; the CIFAR replay does it
    raw["provenance"]["versions"]["torch"] = "0.0.1"
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(raw, sort_keys=False))
    other = pielab(pielab_exe, "train", str(edited), "--set", "train.epochs=1", "--out", str(tmp_path / "other"),
                   root=tmp_path)
    warnings = [line for line in (other.stderr + other.stdout).splitlines() if "warning" in line.lower()]
    assert len(warnings) == 1, warnings
    assert f"torch 0.0.1 -> {provenance.library_versions()['torch']}" in warnings[0]
    assert (tmp_path / "other" / "summary.json").is_file()  # and it trained anyway
