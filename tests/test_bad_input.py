"""Bad input, the whole class: every file pielab reads is checked before any work, through the `pielab` command.

Each case runs `pielab sweep SPEC` (or `pielab train CONFIG.yaml`) in a subprocess and expects exit code 2,
one `pielab: error: FILE:LINE: ...` line per problem on stderr, no traceback, and no sweep or run folder.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

SPACE = """\
parameters:
  model.depth: {type: categorical, choices: [10, 18]}
  train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
"""

# One key per line, so a case can swap a single line.
SPEC = """\
name: bad
base:
  model: {name: myresnet34, width: 8}
  train: {epochs: 2, batch_size: 32}
space: space.yaml
search: {algorithm: tpe, seed: 0}
scheduler: {name: asha, grace_period: 1}
num_trials: 2
max_concurrent: 1
seeds: [0]
tracking: {wandb: false}
"""


def replace(text: str, key: str, new: str) -> str:
    """Swap the line of top-level ``key`` (``new`` may be several lines, or empty to drop it)."""
    out = [new if line.startswith(f"{key}:") else line for line in text.splitlines()]
    return "\n".join(x for x in out if x) + "\n"


def line_of(text: str, marker: str, nth: int = 1) -> int:
    hits = [i for i, line in enumerate(text.splitlines(), 1) if marker in line]
    return hits[nth - 1]


def run(pielab_exe, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*pielab_exe, *args], capture_output=True, text=True, timeout=600)


def assert_problems(proc: subprocess.CompletedProcess, expected: list[tuple[Path, int, str]]) -> None:
    """Exit 2, exactly one stderr line per expected ``(file, line, fragment)``, no traceback."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == len(expected), proc.stderr
    for path, line, fragment in expected:
        head = f"pielab: error: {path}:{line}: "
        assert any(ln.startswith(head) and fragment in ln for ln in lines), (head, fragment, proc.stderr)


# (spec text, space text or None for no space file) -> [(file: "spec" | "space", line marker, fragment)]
SWEEP_CASES = {
    "duplicate spec key": (
        SPEC + "num_trials: 3\n", SPACE,
        [("spec", ("num_trials:", 2), "duplicate key, also at line 8")],
    ),
    "duplicate space key": (
        SPEC, SPACE + "  model.depth: {type: categorical, choices: [10]}\n",
        [("space", ("model.depth:", 2), "duplicate key, also at line 2")],
    ),
    "duplicate key inside the base config": (
        SPEC.replace("  train: {epochs: 2, batch_size: 32}\n", "  train: {epochs: 2, batch_size: 32, epochs: 3}\n"),
        SPACE, [("spec", ("train:", 1), "base.train.epochs: duplicate key")],
    ),
    "depth the ResNet builder refuses": (
        SPEC, SPACE.replace("[10, 18]", "[10, 12]"),
        [("space", ("model.depth:", 1), "choice 12 is invalid for myresnet34: unsupported ResNet depth 12")],
    ),
    "dropout of 1.5": (
        SPEC, SPACE + "  model.dropout: {type: float, low: 0.0, high: 1.5}\n",
        [("space", ("model.dropout:", 1), "high 1.5 is invalid for myresnet34: dropout must be a probability")],
    ),
    "negative lr": (
        SPEC, SPACE.replace("low: 1.0e-4, high: 1.0e-2, log: true", "low: -0.1, high: 0.1"),
        [("space", ("train.lr:", 1), "low -0.1 is invalid for myresnet34: must be positive, got -0.1")],
    ),
    "choice of the wrong type": (
        SPEC, SPACE + "  model.residual: {type: categorical, choices: [yes_please, false]}\n",
        [("space", ("model.residual:", 1), "choice yes_please is invalid for myresnet34: expected bool")],
    ),
    "int range outside the model's depths": (
        SPEC, SPACE.replace("{type: categorical, choices: [10, 18]}", "{type: int, low: 17, high: 18}"),
        [("space", ("model.depth:", 1), "value 17 is invalid for myresnet34")],
    ),
    "spec that is not a mapping": (
        "- name: bad\n- base: mycnn\n", SPACE, [("spec", ("- name", 1), "expected a mapping at the top level")],
    ),
    "tab-indented spec": (
        SPEC.replace("  train: {epochs", "\ttrain: {epochs"), SPACE, [("spec", ("\ttrain", 1), "malformed YAML")],
    ),
    "unknown top-level key": (
        SPEC + "num_trails: 4\n", SPACE, [("spec", ("num_trails:", 1), "num_trails: unknown key")],
    ),
    "num_trials 0": (
        replace(SPEC, "num_trials", "num_trials: 0"), SPACE,
        [("spec", ("num_trials:", 1), "num_trials: must be at least 1, got 0")],
    ),
    "max_concurrent -1": (
        replace(SPEC, "max_concurrent", "max_concurrent: -1"), SPACE,
        [("spec", ("max_concurrent:", 1), "max_concurrent: must be at least 1, got -1")],
    ),
    "no seeds": (
        replace(SPEC, "seeds", "seeds: []"), SPACE, [("spec", ("seeds:", 1), "seeds: must have at least 1 item")],
    ),
    "empty space file": (SPEC, "", [("space", None, "empty file")]),
    "space file missing": (SPEC, None, [("spec", ("space:", 1), "no such search space file 'space.yaml'")]),
    "bad base value": (
        SPEC.replace("{epochs: 2, batch_size: 32}", "{epochs: 2, batch_size: 0}"), SPACE,
        [("spec", ("train:", 1), "train.batch_size: must be positive, got 0")],
    ),
    "every problem at once": (
        replace(replace(SPEC, "num_trials", "num_trials: 0"), "max_concurrent", "max_concurrent: -1")
        .replace("{algorithm: tpe", "{algorithm: bayes"),
        SPACE.replace("[10, 18]", "[10, 12]"),
        [("spec", ("num_trials:", 1), "num_trials"), ("spec", ("max_concurrent:", 1), "max_concurrent"),
         ("spec", ("search:", 1), "'bayes' is not one of"), ("space", ("model.depth:", 1), "depth 12")],
    ),
}


@pytest.mark.parametrize("case", SWEEP_CASES, ids=list(SWEEP_CASES))
def test_bad_sweep_input_is_one_line_per_problem_and_leaves_no_folder(pielab_exe, tmp_path: Path, case: str):
    spec_text, space_text, expected = SWEEP_CASES[case]
    spec = tmp_path / "spec.yaml"
    spec.write_text(spec_text)
    space = tmp_path / "space.yaml"
    if space_text is not None:
        space.write_text(space_text)
    out = tmp_path / "out"
    proc = run(pielab_exe, "sweep", str(spec), "--out", str(out))
    files = {"spec": (spec, spec_text), "space": (space, space_text or "")}
    assert_problems(proc, [
        (files[which][0], line_of(files[which][1], *marker) if marker else 1, fragment)
        for which, marker, fragment in expected
    ])
    assert not out.exists()


CONFIG = """\
model:
  name: myresnet34
  width: 8
train:
  epochs: 2
  lr: 0.001
"""

TRAIN_CASES = {
    "duplicate key": (CONFIG + "  epochs: 3\n", [(("epochs:", 2), "train.epochs: duplicate key, also at line 5")]),
    "negative lr": (CONFIG.replace("lr: 0.001", "lr: -1"), [(("lr:", 1), "train.lr: must be positive, got -1")]),
    "unknown top-level key": (CONFIG + "model_extra: 1\n", [(("model_extra:", 1), "model_extra: unknown key")]),
    "depth the builder refuses": (CONFIG.replace("  width: 8\n", "  width: 8\n  depth: 12\n"),
                                  [(("depth:", 1), "model.depth: unsupported ResNet depth 12")]),
    "not a mapping": ("[1, 2]\n", [(("[1", 1), "expected a mapping at the top level, got list")]),
    "tab-indented": (CONFIG.replace("  epochs: 2", "\tepochs: 2"), [(("\tepochs", 1), "malformed YAML")]),
    "empty file": ("", [(None, "empty file")]),
    "every problem at once": (
        CONFIG.replace("lr: 0.001", "lr: -1\n  optimizer: rmsprop\n  epochs: 4") + "data: {val_fraction: 1.5}\n",
        [(("lr:", 1), "train.lr"), (("optimizer:", 1), "train.optimizer: 'rmsprop' is not one of adam, adamw, sgd"),
         (("epochs:", 2), "duplicate key")],  # a duplicate stops the read: the rest is checked once it is fixed
    ),
}


@pytest.mark.parametrize("case", TRAIN_CASES, ids=list(TRAIN_CASES))
def test_bad_config_is_one_line_per_problem_and_leaves_no_run(pielab_exe, tmp_path: Path, case: str):
    text, expected = TRAIN_CASES[case]
    config = tmp_path / "config.yaml"
    config.write_text(text)
    out = tmp_path / "run"
    proc = run(pielab_exe, "train", str(config), "--out", str(out))
    if case == "every problem at once":  # the duplicate key alone is reported; without it, the rest
        assert_problems(proc, [(config, line_of(text, "epochs:", 2), "duplicate key")])
        config.write_text(text.replace("  epochs: 4\n", ""))
        fixed = config.read_text()
        proc = run(pielab_exe, "train", str(config), "--out", str(out))
        assert_problems(proc, [(config, line_of(fixed, "lr:"), "train.lr: must be positive"),
                               (config, line_of(fixed, "optimizer:"), "'rmsprop' is not one of adam, adamw, sgd"),
                               (config, line_of(fixed, "val_fraction"), "data.val_fraction: must be < 1, got 1.5")])
    else:
        assert_problems(proc, [(config, line_of(text, *marker) if marker else 1, fragment)
                               for marker, fragment in expected])
    assert not out.exists()
