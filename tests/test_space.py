"""Search spaces: the shipped YAML files, validation messages, and the define-by-run function."""

from __future__ import annotations

import pickle
from pathlib import Path

import optuna
import pytest

from helpers import one_line_config_error
from pielab.config import apply_params, default_config
from pielab.errors import ConfigError
from pielab.spec.space import SearchSpace, load_space

REPO = Path(__file__).resolve().parents[1]
SPACES = sorted((REPO / "search_spaces").glob("*.yaml"))

optuna.logging.set_verbosity(optuna.logging.WARNING)


def base_for(path: Path | str):
    """The base configs the shipped spaces are meant for: every model of the space's task."""
    if "imdb" in Path(path).name:
        return [default_config(n) for n in ("my_lstm1", "bilstm2", "lstm8", "res_lstm8")]
    return [default_config(n) for n in ("myresnet34", "mycnn")]


@pytest.fixture(scope="module")
def cifar():
    return default_config("myresnet34")


@pytest.fixture(scope="module")
def imdb():
    return default_config("my_lstm1")


def write(tmp_path: Path, text: str, name: str = "space.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def line_of(text: str, marker: str) -> int:
    """1-based line of the first line containing ``marker``, so tests do not hard-code line numbers."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if marker in line)


def samples(space: SearchSpace, n: int, seed: int = 0, tell: bool = False) -> list[dict]:
    """``n`` configurations from a seeded TPE study (ask, optionally tell a value derived from the config)."""
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=5), direction="maximize")
    out = []
    for i in range(n):
        trial = study.ask()
        params = space(trial)
        out.append(params)
        if tell:
            study.tell(trial, float(params.get("train.lr", 0.0)) + 0.01 * i)
    return out


def resolve(base, params: dict):
    """A trial's config: the sampled dotted keys put into the base, resolved by the same code as every trial."""
    return apply_params(base, params)


# --------------------------------------------------------------------------- shipped spaces


def test_the_shipped_spaces_are_there():
    names = {p.name for p in SPACES}
    assert {"cifar10_resnet.yaml", "imdb_lstm.yaml", "cifar10_depth_residual.yaml", "imdb_depth_residual.yaml",
            "quickstart.yaml"} <= names


@pytest.mark.parametrize("path", SPACES, ids=lambda p: p.name)
def test_shipped_space_loads_validates_and_samples_valid_configs(path: Path):
    space = load_space(path)
    assert space.keys
    for base in base_for(path):
        space.validate(base)
        for params in samples(space, 12, tell=True):
            config = resolve(base, params)
            for key, value in params.items():
                assert config.flat()[key] == value
    assert SearchSpace.from_dict(space.to_dict()) == space
    text = space.describe()
    assert all(key in text for key in space.keys)


def test_every_model_combination_of_the_shipped_spaces_builds():
    """Depth x residual x direction on every base model: each value alone validates, so check the products."""
    import itertools

    import torch

    from pielab.models import get_model

    for path in SPACES:
        space = load_space(path)
        model_params = [p for p in space.params if p.key.startswith("model.") and p.type != "float"]
        for base in base_for(path):
            for combo in itertools.product(*(p.grid_values() for p in model_params)):
                config = resolve(base, {p.key: v for p, v in zip(model_params, combo)})
                with torch.device("meta"):
                    get_model(config.model_name, **config.model_kwargs())


def test_depth_residual_spaces_are_grids():
    cifar = load_space(REPO / "search_spaces/cifar10_depth_residual.yaml")
    assert cifar.grid() == {"model.depth": [10, 18, 34], "model.residual": [False, True]}
    assert cifar.grid_size() == 6
    assert len(cifar.grid_configs()) == 6
    imdb = load_space(REPO / "search_spaces/imdb_depth_residual.yaml")
    assert imdb.grid()["model.depth"] == [1, 2, 4, 8]
    assert imdb.grid_size() == 8


# --------------------------------------------------------------------------- validation messages


STRUCTURE_ERRORS = {
    "unknown distribution": (
        "parameters:\n  train.lr: {type: float, low: 1.0e-4, high: 1.0e-2}\n  model.depth: {type: uniform, low: 1, high: 8}\n",
        "model.depth", "unknown type 'uniform'",
    ),
    "missing type": ("parameters:\n  model.depth: {choices: [10, 18]}\n", "model.depth", "needs a type"),
    "unknown field": ("parameters:\n  train.lr: {type: float, lo: 0.1, low: 0.1, high: 0.2}\n", "train.lr", "unknown field 'lo'"),
    "low > high": ("parameters:\n  model.residual: {type: bool}\n  train.lr: {type: float, low: 0.1, high: 0.01}\n",
                   "train.lr", "low 0.1 > high 0.01"),
    "log with low <= 0": ("parameters:\n  train.weight_decay: {type: float, low: 0.0, high: 0.1, log: true}\n",
                          "train.weight_decay", "log needs low > 0"),
    "empty choices": ("parameters:\n  model.residual: {type: bool}\n  model.depth: {type: categorical, choices: []}\n",
                      "model.depth", "non-empty list"),
    "wrong bound type": ("parameters:\n  train.lr: {type: float, low: small, high: 0.1}\n", "train.lr", "expected float"),
    "float bound for int": ("parameters:\n  model.depth: {type: int, low: 1.5, high: 8}\n", "model.depth", "expected int"),
    "duplicate choice": ("parameters:\n  model.depth: {type: categorical, choices: [10, 18, 10]}\n", "model.depth",
                         "duplicate choice 10"),
    "when on a later key": (
        "parameters:\n  train.momentum: {type: float, low: 0.8, high: 0.99, when: {train.optimizer: sgd}}\n"
        "  train.optimizer: {type: categorical, choices: [adam, sgd]}\n",
        "train.momentum", "not declared before it",
    ),
    "when on an undeclared key": (
        "parameters:\n  train.momentum: {type: float, low: 0.8, high: 0.99, when: {train.optimiser: sgd}}\n",
        "train.momentum", "'train.optimiser', which is not declared before it",
    ),
    "when value never sampled": (
        "parameters:\n  train.optimizer: {type: categorical, choices: [adam, sgd]}\n"
        "  train.momentum: {type: float, low: 0.8, high: 0.99, when: {train.optimizer: sdg}}\n",
        "train.momentum", "sdg is never sampled",
    ),
    "when on a continuous float": (
        "parameters:\n  train.lr: {type: float, low: 1.0e-4, high: 1.0e-2}\n"
        "  train.momentum: {type: float, low: 0.8, high: 0.99, when: {train.lr: 0.001}}\n",
        "train.momentum", "continuous float",
    ),
    "when not a mapping": (
        "parameters:\n  train.optimizer: {type: categorical, choices: [adam, sgd]}\n"
        "  train.momentum: {type: float, low: 0.8, high: 0.99, when: sgd}\n",
        "train.momentum", "when must be a mapping",
    ),
    "not a dotted key": ("parameters:\n  lr: {type: float, low: 0.1, high: 0.2}\n", "lr", "dotted config keys"),
    "fixed without value": ("parameters:\n  train.schedule: {type: fixed}\n", "train.schedule", "fixed needs value"),
}


@pytest.mark.parametrize("case", STRUCTURE_ERRORS, ids=list(STRUCTURE_ERRORS))
def test_structure_errors_name_file_line_and_key(tmp_path: Path, case: str):
    text, key, problem = STRUCTURE_ERRORS[case]
    path = write(tmp_path, text)
    message = one_line_config_error(load_space, path)
    assert f"{path}:{line_of(text, key + ':')}: {key}: " in message
    assert problem in message


BASE_ERRORS = {
    "unknown key": ("parameters:\n  train.lr: {type: float, low: 1.0e-4, high: 1.0e-2}\n  train.lrr: {type: bool}\n",
                    "train.lrr", "unknown key; train takes:"),
    "unknown section": ("parameters:\n  optim.lr: {type: float, low: 1.0e-4, high: 1.0e-2}\n", "optim.lr", "unknown key"),
    "unknown model key": ("parameters:\n  model.widht: {type: categorical, choices: [8, 16]}\n", "model.widht",
                          "unknown key for model 'myresnet34'; it takes: depth, residual, width, dropout"),
    "model of another task": ("parameters:\n  model.name: {type: categorical, choices: [mycnn, bilstm2]}\n",
                              "model.name", "choice bilstm2 is invalid for myresnet34: task: model 'bilstm2' is for task"),
    "model key a chosen model lacks": ("parameters:\n  model.name: {type: categorical, choices: [mycnn, resnet34]}\n"
                                       "  model.depth: {type: categorical, choices: [18, 34]}\n", "model.depth",
                                       "resnet34 take(s) no depth"),
    "data-derived model key": ("parameters:\n  model.num_classes: {type: categorical, choices: [10, 100]}\n",
                               "model.num_classes", "set by the data"),
    "wrong choice type": ("parameters:\n  model.depth: {type: categorical, choices: [10, deep]}\n", "model.depth",
                          "choice deep is invalid for myresnet34: expected int, got str 'deep'"),
    "string for a float": ("parameters:\n  train.lr: {type: categorical, choices: ['1e-3', 0.01]}\n", "train.lr",
                           "expected float, got str '1e-3'"),
    "bool for an int": ("parameters:\n  train.batch_size: {type: bool}\n", "train.batch_size", "expected int, got bool"),
    "fixed value of the wrong type": ("parameters:\n  train.schedule: {type: fixed, value: 3}\n", "train.schedule",
                                      "value 3 is invalid for myresnet34: 3 is not one of constant, cosine, onecycle"),
    "unsupported depth": ("parameters:\n  model.residual: {type: bool}\n  model.depth: {type: categorical, choices: [10, 12]}\n",
                          "model.depth", "choice 12 is invalid for myresnet34: unsupported ResNet depth 12"),
    "depth in an int range": ("parameters:\n  model.depth: {type: int, low: 17, high: 18}\n", "model.depth",
                              "value 17 is invalid"),
    "bound out of range": ("parameters:\n  train.momentum: {type: float, low: 0.5, high: 1.5}\n", "train.momentum",
                           "high 1.5 is invalid"),
    "bad optimizer choice": ("parameters:\n  train.optimizer: {type: categorical, choices: [adam, lion]}\n",
                             "train.optimizer", "'lion' is not one of adam, adamw, sgd"),
}


@pytest.mark.parametrize("case", BASE_ERRORS, ids=list(BASE_ERRORS))
def test_errors_against_the_base_config_name_file_line_and_key(tmp_path: Path, cifar, case: str):
    text, key, problem = BASE_ERRORS[case]
    path = write(tmp_path, text)
    space = load_space(path)  # the structure is fine; the base config decides
    with pytest.raises(ConfigError) as exc:
        space.validate(cifar)
    message = str(exc.value)
    assert f"{path}:{line_of(text, key + ':')}: {key}: " in message
    assert problem in message


def test_lstm_depth_range_is_checked_against_the_model(tmp_path: Path, imdb):
    text = "parameters:\n  model.residual: {type: bool}\n  model.depth: {type: int, low: 1, high: 9}\n"
    space = load_space(write(tmp_path, text))
    with pytest.raises(ConfigError, match=r"space.yaml:3: model.depth: value 9 is invalid for my_lstm1: depth must be in 1..8"):
        space.validate(imdb)


def test_every_problem_is_listed_one_per_line(tmp_path: Path):
    text = ("parameters:\n"
            "  train.lr: {type: float, low: 0.1, high: 0.01}\n"
            "  model.depth: {type: gaussian}\n"
            "  train.weight_decay: {type: float, low: 0.0, high: 0.1, log: true}\n")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_space(path)
    lines = str(exc.value).splitlines()
    assert [ln.split(": ")[0] for ln in lines] == [f"{path}:2", f"{path}:3", f"{path}:4"]
    assert exc.value.problems == lines


def test_block_style_points_at_the_field_line(tmp_path: Path):
    text = "parameters:\n  train.lr:\n    type: float\n    low: 0.5\n    high: 0.1\n"
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=rf"^{path}:4: train.lr: low 0.5 > high 0.1$"):
        load_space(path)


def test_top_level_problems(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"space.yaml:1: params: unknown key"):
        load_space(write(tmp_path, "params:\n  train.lr: {type: bool}\n"))
    with pytest.raises(ConfigError, match="non-empty mapping"):
        load_space(write(tmp_path, "parameters: {}\n"))
    with pytest.raises(ConfigError, match="no such file"):
        load_space(tmp_path / "missing.yaml")


def test_numbers_written_without_a_dot_still_parse(tmp_path: Path, cifar):
    """PyYAML reads 1e-4 as a string; a bound is clearly meant as a number."""
    space = load_space(write(tmp_path, "parameters:\n  train.lr: {type: float, low: 1e-4, high: 1e-2, log: true}\n"))
    space.validate(cifar)
    assert space.param("train.lr").low == 1e-4


# --------------------------------------------------------------------------- grid


def test_grid_needs_discrete_parameters(tmp_path: Path):
    text = ("parameters:\n  model.depth: {type: categorical, choices: [10, 18]}\n"
            "  train.lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}\n")
    path = write(tmp_path, text)
    space = load_space(path)
    assert not space.is_discrete
    with pytest.raises(ConfigError, match=rf"{path}:3: train.lr: grid needs discrete parameters"):
        space.grid()


def test_grid_rejects_conditional_parameters():
    space = SearchSpace.from_dict({"parameters": {
        "train.optimizer": {"type": "categorical", "choices": ["adam", "sgd"]},
        "train.momentum": {"type": "categorical", "choices": [0.9, 0.99], "when": {"train.optimizer": "sgd"}},
    }})
    with pytest.raises(ConfigError, match="train.momentum: grid needs unconditional parameters"):
        space.grid()


def test_grid_of_int_and_stepped_float_and_fixed():
    space = SearchSpace.from_dict({"parameters": {
        "train.batch_size": {"type": "int", "low": 64, "high": 256, "step": 64},
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
        "train.schedule": {"type": "fixed", "value": "cosine"},
        "model.depth": {"type": "int", "low": 1, "high": 3},
    }})
    grid = space.grid()
    assert grid == {"train.batch_size": [64, 128, 192, 256], "model.dropout": [0.0, 0.1, 0.2, 0.3],
                    "train.schedule": ["cosine"], "model.depth": [1, 2, 3]}
    assert space.grid_size() == 48
    assert space.grid_configs()[0] == {"train.batch_size": 64, "model.dropout": 0.0, "train.schedule": "cosine",
                                      "model.depth": 1}


# --------------------------------------------------------------------------- define-by-run


def test_define_by_run_keys_conditions_and_fixed_values():
    space = load_space(REPO / "search_spaces/cifar10_resnet.yaml")
    unconditional = [p.key for p in space.params if not p.when]
    drawn = samples(space, 40)
    for params in drawn:
        assert set(unconditional) <= set(params)
        assert ("train.momentum" in params) == (params["train.optimizer"] == "sgd")
        assert params["train.schedule"] == "cosine"
        assert params["model.depth"] in (10, 18, 20, 34, 56)
        assert isinstance(params["model.residual"], bool)
        assert params["train.batch_size"] in (64, 128, 192, 256)
        assert 1e-4 <= params["train.lr"] <= 1e-2
    optimizers = {p["train.optimizer"] for p in drawn}
    assert "sgd" in optimizers and optimizers - {"sgd"}  # both branches of the condition were exercised


def test_the_fixed_value_is_returned_but_not_suggested():
    space = load_space(REPO / "search_spaces/cifar10_resnet.yaml")
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    params = space(trial)
    assert params["train.schedule"] == "cosine"
    assert "train.schedule" not in trial.params  # Optuna never sees a constant


@pytest.mark.parametrize("tell", [False, True], ids=["ask", "ask-tell"])
def test_same_seed_same_configs_different_seed_different(tell: bool):
    space = load_space(REPO / "search_spaces/cifar10_resnet.yaml")
    first, again, other = samples(space, 10, 0, tell), samples(space, 10, 0, tell), samples(space, 10, 1, tell)
    assert first == again
    assert first != other


def test_non_primitive_choices_are_encoded_for_optuna_and_decoded_for_the_trial():
    space = SearchSpace.from_dict({"parameters": {
        "model.layers": {"type": "categorical", "choices": [[2, 2, 2, 2], [3, 4, 6, 3], {"a": 1}]},
        "model.extra": {"type": "bool", "when": {"model.layers": [[3, 4, 6, 3]]}},
    }})
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []
    for _ in range(30):
        trial = study.ask()
        params = space(trial)
        assert isinstance(trial.params["model.layers"], str)  # what Optuna stores
        assert params["model.layers"] in ([2, 2, 2, 2], [3, 4, 6, 3], {"a": 1})
        assert ("model.extra" in params) == (params["model.layers"] == [3, 4, 6, 3])
        seen.append(params["model.layers"])
        params["model.layers"] = "mutated"  # a trial's dict is its own copy
    assert [3, 4, 6, 3] in seen and [2, 2, 2, 2] in seen
    assert space.param("model.layers").choices[1] == [3, 4, 6, 3]
    assert SearchSpace.from_dict(space.to_dict()) == space


def test_bool_conditions_do_not_match_integers():
    space = SearchSpace.from_dict({"parameters": {
        "model.residual": {"type": "bool"},
        "model.dropout": {"type": "float", "low": 0.0, "high": 0.5, "when": {"model.residual": True}},
    }})
    with pytest.raises(ConfigError, match="1 is never sampled"):
        SearchSpace.from_dict({"parameters": {
            "model.residual": {"type": "bool"},
            "model.dropout": {"type": "float", "low": 0.0, "high": 0.5, "when": {"model.residual": 1}},
        }})
    for params in samples(space, 20):
        assert ("model.dropout" in params) == params["model.residual"]


# --------------------------------------------------------------------------- pickling and Ray


def test_pickle_round_trip_gives_equal_suggestions():
    space = load_space(REPO / "search_spaces/cifar10_resnet.yaml")
    data = pickle.dumps(space)
    assert b"pielab.spec.space" in data and b"SearchSpace" in data  # pickled by reference to an importable class
    clone = pickle.loads(data)
    assert clone == space
    assert samples(clone, 10, tell=True) == samples(space, 10, tell=True)


def test_ray_optuna_search_uses_the_space_and_restores_it(tmp_path: Path):
    """The real consumer: OptunaSearch with the space as define-by-run function, saved and restored."""
    from ray.tune.search.optuna import OptunaSearch  # ray is a hard dependency

    space = load_space(REPO / "search_spaces/cifar10_resnet.yaml")

    def searcher():
        return OptunaSearch(space=space, metric="val/acc", mode="max", sampler=optuna.samplers.TPESampler(seed=0))

    first = searcher()
    config = first.suggest("t1")
    assert config["train.schedule"] == "cosine"  # dotted keys survive Ray's "/"-unflattening
    assert config["model.depth"] in (10, 18, 20, 34, 56)
    first.on_trial_complete("t1", {"val/acc": 0.5, **config})
    first.save(str(tmp_path / "searcher.pkl"))
    restored = searcher()
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert restored._space == space
    nxt = restored.suggest("t2")
    assert set(nxt) >= {"train.lr", "model.depth", "model.residual", "train.schedule"}
