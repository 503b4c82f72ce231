"""Sweep specs: loading, --set overrides, the saved round trip, and one clear line per problem."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pielab.config import Config
from pielab.errors import ConfigError
from pielab.spec.sweep_spec import SweepSpec, load_spec

REPO = Path(__file__).resolve().parents[1]
SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))

SPACE = """\
parameters:
  model.depth: {type: categorical, choices: [10, 18]}
  model.residual: {type: bool}
  train.lr: {type: float, low: 3.0e-4, high: 1.0e-2, log: true}
"""

GRID_SPACE = """\
parameters:
  model.depth: {type: categorical, choices: [10, 18, 34]}
  model.residual: {type: bool}
"""

# One key per line, so each case can replace exactly one line.
SPEC = """\
name: tiny
base:
  model: {name: myresnet34, width: 8}
  data: {train_size: 200, val_size: 100, test_size: 100}
  train: {epochs: 4, batch_size: 32}
space: ../search_spaces/quick.yaml
search: {algorithm: tpe, seed: 0}
scheduler: {name: asha, grace_period: 1, reduction_factor: 2}
metric: val/acc
mode: max
num_trials: 8
max_concurrent: 2
resources: {cpu: 1, gpu: 0}
time_budget_s: null
seeds: [0]
max_failures: 2
storage: {path: sweep_results, optuna: null}
tracking: {wandb: true, project: pielab, entity: null, mode: auto}
"""


def edit(text: str, **lines: str) -> str:
    """Replace the line of top-level key ``k`` with ``v`` (``v`` may hold several lines, or be empty)."""
    out = []
    for line in text.splitlines():
        key = line.split(":", 1)[0]
        out.append(lines.pop(key) if key in lines and not line.startswith(" ") else line)
    out.extend(lines.values())  # keys not in the template are appended
    return "\n".join(x for x in out if x) + "\n"


def line_of(text: str, marker: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """tmp/sweeps/ and tmp/search_spaces/quick.yaml, laid out like the repository."""
    (tmp_path / "sweeps").mkdir()
    (tmp_path / "search_spaces").mkdir()
    (tmp_path / "search_spaces" / "quick.yaml").write_text(SPACE)
    (tmp_path / "search_spaces" / "grid.yaml").write_text(GRID_SPACE)
    return tmp_path


def write_spec(layout: Path, text: str, name: str = "tiny.yaml") -> Path:
    path = layout / "sweeps" / name
    path.write_text(text)
    return path


# --------------------------------------------------------------------------- loading


def test_the_required_sweep_specs_ship():
    names = {p.name for p in SWEEPS}
    assert {"quickstart.yaml", "cifar10_depth_residual.yaml", "imdb_depth_residual.yaml",
            "cifar10_tune.yaml", "imdb_tune.yaml"} <= names


@pytest.mark.parametrize("path", SWEEPS, ids=[p.name for p in SWEEPS])
def test_shipped_sweep_specs_load_and_round_trip(path: Path):
    spec = load_spec(path)
    assert isinstance(spec.base, Config)
    assert SweepSpec.from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict(), sort_keys=False))) == spec


def test_example_spec_resolves_every_field(layout: Path):
    path = write_spec(layout, SPEC)
    spec = load_spec(path)
    assert spec.name == "tiny" and spec.source_path == str(path)
    assert spec.base.model == {"name": "myresnet34", "depth": 34, "residual": True, "width": 8, "dropout": 0.0,
                               "num_classes": 10}
    assert spec.base.train.epochs == 4 and spec.base.data.train_size == 200
    assert spec.space.keys == ["model.depth", "model.residual", "train.lr"]
    assert (spec.search.algorithm, spec.search.seed, spec.search.sampler_options()) == ("tpe", 0, {})
    assert (spec.scheduler.name, spec.scheduler.grace_period, spec.scheduler.reduction_factor) == ("asha", 1, 2)
    assert spec.scheduler.max_t == spec.max_t == 4  # defaults to base train.epochs
    assert (spec.metric, spec.mode, spec.num_trials, spec.max_concurrent) == ("val/acc", "max", 8, 2)
    assert (spec.resources.cpu, spec.resources.gpu, spec.time_budget_s) == (1, 0, None)
    assert (spec.seeds, spec.max_failures, spec.num_configs) == ([0], 2, 8)
    assert (spec.storage.path, spec.storage.optuna) == ("sweep_results", None)
    assert spec.tracking == spec.base.tracking and spec.tracking.mode == "auto"
    assert "tiny" in spec.describe() and "model.depth" in spec.describe()


def test_minimal_spec_takes_the_defaults(layout: Path):
    path = write_spec(layout, "base: {model: {name: lstm4}}\nspace: ../search_spaces/quick.yaml\n", "min.yaml")
    text = "base: {model: {name: my_lstm1}}\nspace: {parameters: {model.depth: {type: int, low: 1, high: 4}}}\n"
    spec = load_spec(write_spec(layout, text, "min.yaml"))
    assert spec.name == "min" and spec.base.task == "imdb" and spec.base.train.epochs == 10
    assert (spec.metric, spec.mode, spec.search.algorithm, spec.scheduler.name) == ("val/acc", "max", "tpe", "asha")
    assert spec.num_trials == 16 and spec.seeds == [0] and spec.max_concurrent == 1
    assert path.exists()


def test_mode_follows_the_metric_when_not_given(layout: Path):
    spec = load_spec(write_spec(layout, edit(SPEC, metric="metric: val/loss", mode="")))
    assert spec.mode == "min"


def test_space_paths_are_found_next_to_the_spec_in_the_cwd_and_in_the_repo(layout: Path, monkeypatch):
    assert load_spec(write_spec(layout, SPEC)).space.keys[0] == "model.depth"
    monkeypatch.chdir(layout)
    spec = load_spec(write_spec(layout, edit(SPEC, space="space: search_spaces/grid.yaml")))
    assert spec.space.grid_size() == 6
    monkeypatch.chdir(layout / "sweeps")
    spec = load_spec(write_spec(layout, edit(SPEC, space="space: search_spaces/cifar10_resnet.yaml")))
    assert "train.momentum" in spec.space.keys  # the repository's own spaces


def test_inline_space_and_base_model_name(layout: Path):
    text = edit(SPEC, base="base: mycnn", space="space:\n  parameters:\n    model.depth: {type: categorical, choices: [10, 18]}")
    text = text.replace("  model: {name: myresnet34, width: 8}\n", "").replace("  data: {train_size: 200, val_size: 100, test_size: 100}\n", "").replace("  train: {epochs: 4, batch_size: 32}\n", "")
    spec = load_spec(write_spec(layout, text))
    assert spec.base.model_name == "mycnn" and spec.space.keys == ["model.depth"]


# --------------------------------------------------------------------------- overrides


def test_set_overrides_spec_and_base(layout: Path):
    path = write_spec(layout, SPEC)
    spec = load_spec(path, [
        "num_trials=4", "max_concurrent=1", "scheduler.grace_period=2", "base.train.epochs=3",
        "base.data.train_size=1000", "model.width=4", "data.val_size=50", "seeds=[0,1]", "search.algorithm=random",
        "resources.gpu=0.25", "tracking.mode=offline", "time_budget_s=600", "name=tiny2",
    ])
    assert (spec.num_trials, spec.max_concurrent, spec.scheduler.grace_period) == (4, 1, 2)
    assert spec.base.train.epochs == 3 and spec.scheduler.max_t == 3  # max_t follows the overridden epochs
    assert (spec.base.data.train_size, spec.base.data.val_size, spec.base.model["width"]) == (1000, 50, 4)
    assert spec.seeds == [0, 1] and spec.num_configs == 2
    assert spec.search.algorithm == "random" and spec.resources.gpu == 0.25
    assert spec.tracking.mode == "offline" and spec.base.tracking.mode == "offline"
    assert spec.time_budget_s == 600.0 and spec.name == "tiny2"


def test_set_shorthand_and_dict_overrides_agree(layout: Path):
    path = write_spec(layout, SPEC)
    assert load_spec(path, ["train.epochs=2"]) == load_spec(path, {"base.train.epochs": 2})


def test_set_a_space_path(layout: Path, monkeypatch):
    monkeypatch.chdir(layout)
    spec = load_spec(write_spec(layout, SPEC), ["space=search_spaces/grid.yaml", "search.algorithm=grid",
                                                "num_trials=4"])
    assert spec.space.grid_size() == 6 and spec.num_trials == 4  # given: a partial grid (above 6 is refused)


@pytest.mark.parametrize("item, message", [
    ("foo=1", "--set foo: unknown key"),
    ("search.foo.bar=1", "--set search.foo.bar: unknown key"),
    ("num_trials=many", "--set num_trials: expected int or null, got str 'many'"),
    ("scheduler.grace_period=0", "--set scheduler.grace_period: must be at least 1"),
    ("train.epochs=abc", "train.epochs: expected int, got str 'abc'"),
    ("train.lr=-1", "--set train.lr: must be positive"),
    ("base.train.epochz=2", "train.epochz: unknown key"),
    ("num_trials", "expected KEY=VALUE"),
])
def test_bad_set_is_one_clear_line(layout: Path, item: str, message: str):
    with pytest.raises(ConfigError) as exc:
        load_spec(write_spec(layout, SPEC), [item])
    assert message in str(exc.value)
    assert "\n" not in str(exc.value)


# --------------------------------------------------------------------------- round trip


def test_to_dict_round_trips_and_is_self_contained(layout: Path, tmp_path_factory):
    spec = load_spec(write_spec(layout, SPEC), ["seeds=[0,1]", "search.n_startup_trials=3", "tracking.project=p"])
    again = SweepSpec.from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict(), sort_keys=False)))
    assert again == spec
    # the copy in a sweep folder reloads with no search_spaces/ beside it (pielab resume)
    folder = tmp_path_factory.mktemp("sweep_folder")
    spec.save(folder / "sweep.yaml")
    shutil.rmtree(layout / "search_spaces")
    reloaded = load_spec(folder / "sweep.yaml")
    assert reloaded == spec and reloaded.source_path == str(folder / "sweep.yaml")
    assert reloaded.space.describe().splitlines()[1:] == spec.space.describe().splitlines()[1:]


def test_fifo_round_trips(layout: Path):
    spec = load_spec(write_spec(layout, edit(SPEC, scheduler="scheduler: {name: fifo}")))
    assert spec.to_dict()["scheduler"] == {"name": "fifo"}
    assert SweepSpec.from_dict(spec.to_dict()) == spec


# --------------------------------------------------------------------------- grid


def test_grid_num_trials_defaults_to_grid_size_times_seeds(layout: Path):
    text = edit(SPEC, space="space: ../search_spaces/grid.yaml", search="search: {algorithm: grid}", num_trials="",
                seeds="seeds: [0, 1]")
    spec = load_spec(write_spec(layout, text))
    assert spec.num_trials == 12 and spec.num_configs == 6
    assert load_spec(write_spec(layout, text), ["num_trials=4"]).num_trials == 4


def test_grid_with_a_continuous_space_names_the_spec_line_and_the_parameter(layout: Path):
    text = edit(SPEC, search="search: {algorithm: grid, seed: 0}")
    path = write_spec(layout, text)
    with pytest.raises(ConfigError) as exc:
        load_spec(path)
    message = str(exc.value)
    assert f"{path}:{line_of(text, 'search:')}: search.algorithm: grid:" in message
    assert "quick.yaml:4: train.lr: grid needs discrete parameters" in message


# --------------------------------------------------------------------------- one line per problem


ERRORS = {
    "unknown key": (dict(num_trial="num_trial: 8"), "num_trial:", "num_trial: unknown key; a sweep spec takes:"),
    "wrong type": (dict(num_trials="num_trials: many"), "num_trials:", "num_trials: expected int or null, got str 'many'"),
    "wrong section type": (dict(resources="resources: 2"), "resources:", "resources: expected mapping, got int 2"),
    "unknown algorithm": (dict(search="search: {algorithm: bayes}"), "search:", "search.algorithm: 'bayes' is not one of tpe, random, grid, cmaes"),
    "unknown search key": (dict(search="search: {algorithm: tpe, sed: 0}"), "search:", "search.sed: unknown key"),
    "option for the wrong sampler": (dict(search="search: {algorithm: random, n_startup_trials: 5}"), "search:",
                                     "search.n_startup_trials: applies to tpe, cmaes and gp only, not random"),
    "group without multivariate": (dict(search="search: {algorithm: tpe, group: true}"), "search:", "group needs multivariate"),
    "unknown scheduler": (dict(scheduler="scheduler: {name: bohb}"), "scheduler:", "scheduler.name: 'bohb' is not one of asha, hyperband, fifo"),
    "fifo with asha keys": (dict(scheduler="scheduler: {name: fifo, grace_period: 2}"), "scheduler:", "grace_period is for asha"),
    "unknown metric": (dict(metric="metric: val/accuracy"), "metric:", "metric: 'val/accuracy' is not one of val/acc, val/loss"),
    "test metric": (dict(metric="metric: test/acc"), "metric:", "metric: 'test/acc' is not one of"),
    "bad mode": (dict(mode="mode: maximize"), "mode:", "'maximize' is not one of max, min"),
    "mode against metric": (dict(metric="metric: val/loss"), "mode:", "max would select the worst val/loss; use mode: min"),
    "num_trials < 1": (dict(num_trials="num_trials: 0"), "num_trials:", "num_trials: must be at least 1, got 0"),
    "max_concurrent < 1": (dict(max_concurrent="max_concurrent: 0"), "max_concurrent:", "max_concurrent: must be at least 1"),
    "negative cpu": (dict(resources="resources: {cpu: -1, gpu: 0}"), "resources:", "resources.cpu: must be >= 0, got -1"),
    "negative gpu": (dict(resources="resources: {cpu: 1, gpu: -0.5}"), "resources:", "resources.gpu: must be >= 0"),
    "fractional gpu above one": (dict(resources="resources: {cpu: 1, gpu: 1.5}"), "resources:",
                                 "resources.gpu: 1.5: a trial takes a fraction of one GPU or whole GPUs"),
    "grace_period > max_t": (dict(scheduler="scheduler: {name: asha, grace_period: 5}"), "scheduler:",
                             "scheduler.grace_period: 5 is more than max_t 4 (base train.epochs)"),
    "grace_period > explicit max_t": (dict(scheduler="scheduler: {name: asha, grace_period: 3, max_t: 2}"), "scheduler:",
                                      "3 is more than max_t 2 (scheduler.max_t)"),
    "reduction_factor < 2": (dict(scheduler="scheduler: {name: asha, reduction_factor: 1}"), "scheduler:",
                             "scheduler.reduction_factor: must be at least 2, got 1"),
    "repeated seeds": (dict(seeds="seeds: [0, 0]"), "seeds:", "repeated seed"),
    "empty seeds": (dict(seeds="seeds: []"), "seeds:", "seeds: must have at least 1 item(s), got []"),
    "negative time budget": (dict(time_budget_s="time_budget_s: -5"), "time_budget_s:", "time_budget_s: must be positive, got -5"),
    "negative max_failures": (dict(max_failures="max_failures: -3"), "max_failures:", "max_failures: must be at least -1, got -3"),
    "optuna storage not a URL": (dict(storage="storage: {path: out, optuna: optuna.db}"), "storage:",
                                 "storage.optuna: 'optuna.db' is not an RDB URL"),
    "database driver not installed": (
        dict(storage="storage: {path: out, optuna: 'mysql+pymysql://u:pw@127.0.0.1/db'}"), "storage:",
        "storage.optuna: the database driver for 'mysql+pymysql' is not installed (no module 'pymysql'): "
        "pip install pymysql"),
    "database SQLAlchemy does not know": (dict(storage="storage: {path: out, optuna: 'nosuchdb://u:pw@h/db'}"),
                                          "storage:", "'nosuchdb://u:***@h/db' names no database"),
    "bad name": (dict(name="name: my/sweep"), "name:", "it names the sweep folder"),
    "missing space file": (dict(space="space: ../search_spaces/nope.yaml"), "space:", "no such search space file"),
    "space is not a path or mapping": (dict(space="space: 3"), "space:", "needs a search space file path"),
    "space searches the seed": (dict(space="space: {parameters: {train.seed: {type: int, low: 0, high: 3}}}"), "space:",
                                "train.seed is searched by the space"),
    "tracking mode": (dict(tracking="tracking: {wandb: true, mode: sometimes}"), "tracking:",
                      "tracking.mode: 'sometimes' is not one of auto, online, offline"),
    "tracking key": (dict(tracking="tracking: {wandb: true, projekt: x}"), "tracking:", "tracking.projekt: unknown key"),
}


@pytest.mark.parametrize("case", ERRORS, ids=list(ERRORS))
def test_each_problem_is_one_line_with_file_and_line(layout: Path, case: str):
    change, marker, problem = ERRORS[case]
    text = edit(SPEC, **change)
    path = write_spec(layout, text)
    with pytest.raises(ConfigError) as exc:
        load_spec(path)
    message = str(exc.value)
    assert message.startswith(f"{path}:{line_of(text, marker)}: "), message
    assert problem in message
    assert "\n" not in message, message


@pytest.mark.parametrize("base_lines, marker, problem", [
    ("  model: {name: myresnet34, width: 8}\n  train: {epochz: 4}", "train:", "train.epochz: unknown key"),
    ("  model: {name: myresnet34, width: 8}\n  train: {epochs: 4, lr: -1}", "train:", "train.lr: must be positive"),
    ("  model: {name: myresnet34, widht: 8}", "model:", "model.widht: unknown key for model 'myresnet34'"),
    ("  model: {name: resnet99}", None, "unknown model 'resnet99'"),
    ("  modle: {name: myresnet34}", "modle:", "modle: unknown key"),
])
def test_base_config_problems_point_into_the_spec(layout: Path, base_lines: str, marker: str | None, problem: str):
    text = SPEC.replace(
        "  model: {name: myresnet34, width: 8}\n  data: {train_size: 200, val_size: 100, test_size: 100}\n"
        "  train: {epochs: 4, batch_size: 32}\n", base_lines + "\n")
    path = write_spec(layout, text)
    with pytest.raises(ConfigError) as exc:
        load_spec(path)
    if marker is not None:  # every problem is listed; this one at its line
        assert any(ln.startswith(f"{path}:{line_of(text, marker)}: ") and problem in ln
                   for ln in str(exc.value).splitlines()), str(exc.value)
    assert problem in str(exc.value)


def test_space_errors_against_the_base_name_the_space_file(layout: Path):
    (layout / "search_spaces" / "quick.yaml").write_text(SPACE + "  model.depth2: {type: bool}\n")
    with pytest.raises(ConfigError, match=r"quick.yaml:5: model.depth2: unknown key for model 'myresnet34'"):
        load_spec(write_spec(layout, SPEC))


def test_inline_space_errors_point_into_the_spec(layout: Path):
    text = edit(SPEC, space="space:\n  parameters:\n    model.depth: {type: categorical, choices: [10, 12]}\n"
                            "    train.lr: {type: float, low: 0.1, high: 0.01}")
    path = write_spec(layout, text)
    with pytest.raises(ConfigError) as exc:
        load_spec(path)
    assert f"{path}:{line_of(text, 'train.lr:')}: train.lr: low 0.1 > high 0.01" in str(exc.value)


def test_every_problem_is_reported(layout: Path):
    text = edit(SPEC, metric="metric: accuracy", num_trials="num_trials: 0", resources="resources: {cpu: -1}",
                search="search: {algorithm: bayes}")
    path = write_spec(layout, text)
    with pytest.raises(ConfigError) as exc:
        load_spec(path)
    lines = str(exc.value).splitlines()
    assert len(lines) == 4 and all(ln.startswith(f"{path}:") for ln in lines)
    assert sorted(int(ln.split(":")[1]) for ln in lines) == sorted(
        line_of(text, m) for m in ("metric:", "num_trials:", "resources:", "search:"))


# --------------------------------------------------------------------------- helpers for the runner


def test_trial_config_puts_sampled_values_and_the_seed_into_the_base(layout: Path):
    spec = load_spec(write_spec(layout, SPEC))
    config = spec.trial_config({"model.depth": 10, "model.residual": False, "train.lr": 3e-3}, seed=7)
    assert (config.model["depth"], config.model["residual"], config.train.lr, config.train.seed) == (10, False, 3e-3, 7)
    assert config.model["width"] == 8 and config.train.epochs == 4


def test_top_level_tracking_is_merged_into_the_base(layout: Path):
    text = SPEC.replace("  train: {epochs: 4, batch_size: 32}\n",
                        "  train: {epochs: 4, batch_size: 32}\n  tracking: {project: from-base, entity: lab}\n")
    text = edit(text, tracking="tracking: {mode: offline}")
    spec = load_spec(write_spec(layout, text))
    assert (spec.tracking.project, spec.tracking.entity, spec.tracking.mode) == ("from-base", "lab", "offline")
    assert spec.base.tracking == spec.tracking
