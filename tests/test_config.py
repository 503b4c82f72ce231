"""Config precedence, validation and error messages (file and line for YAML)."""

from __future__ import annotations

import pytest

from helpers import one_line_config_error
from pielab.config import build_config, config_from_dict, load_config, parse_set, save_config
from pielab.errors import ConfigError


def write(tmp_path, text: str, name: str = "cfg.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_model_name_gives_task_defaults_and_builder_defaults():
    cfg = load_config("myresnet34")
    assert cfg.task == "cifar10"
    assert cfg.train.batch_size == 128 and cfg.train.epochs == 20
    assert cfg.model["depth"] == 34 and cfg.model["residual"] is True and cfg.model["width"] == 64
    lstm = load_config("lstm8")
    assert lstm.task == "imdb" and lstm.train.batch_size == 64 and lstm.train.epochs == 10
    assert lstm.model["depth"] == 8 and lstm.model["residual"] is False


def test_precedence_defaults_then_yaml_then_set(tmp_path):
    path = write(tmp_path, "model: {name: myresnet34, width: 16}\ntrain: {epochs: 5, lr: 0.01}\n")
    cfg = load_config(path, ["train.epochs=2", "model.residual=false", "train.lr=3e-3"])
    assert cfg.model["width"] == 16  # YAML over default
    assert cfg.train.epochs == 2  # --set over YAML
    assert cfg.train.lr == pytest.approx(3e-3)  # "3e-3" is a YAML string; --set parses it as a float
    assert cfg.model["residual"] is False
    assert cfg.train.batch_size == 128  # task default kept


def test_round_trip_through_dict_and_yaml(tmp_path):
    cfg = load_config("bilstm2", ["data.max_len=50", "train.optimizer=sgd"])
    assert config_from_dict(cfg.to_dict()) == cfg
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(tmp_path / "c.yaml") == cfg


@pytest.mark.parametrize(
    "text, line, fragment",
    [
        ("model: {name: myresnet34}\ntrain:\n  epochz: 3\n", 3, "train.epochz: unknown key"),
        ("model: {name: myresnet34}\ntrain:\n  epochs: three\n", 3, "train.epochs: expected int"),
        ("model:\n  name: myresnet34\n  depht: 18\n", 3, "model.depht: unknown key"),
        ("model: {name: myresnet34}\nmodle: 1\n", 2, "modle: unknown key"),
        ("model: {name: myresnet34}\ntrain: {epochs: 2\n", 3, "malformed YAML"),
        ("model: {name: myresnet34}\ndata:\n  train_size: 1.5\n", 3, "data.train_size: expected int"),
        ("model:\n  name: myresnet34\n  residual: 'yes'\n", 3, "model.residual: expected bool"),
    ],
)
def test_yaml_errors_name_file_and_line(tmp_path, text, line, fragment):
    path = write(tmp_path, text)
    message = one_line_config_error(load_config, path)
    assert f"{path}:{line}" in message
    assert fragment in message


def test_unknown_model_and_task_mismatch(tmp_path):
    with pytest.raises(ConfigError, match="unknown model 'resnet999'.*myresnet34"):
        load_config("resnet999")
    with pytest.raises(ConfigError, match="for task 'cifar10', not 'imdb'"):
        build_config({"task": "imdb", "model": {"name": "myresnet34"}})
    with pytest.raises(ConfigError, match="unknown task"):
        build_config({"task": "mnist", "model": {"name": "myresnet34"}})


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("train.optimizer=rmsprop", "train.optimizer"),
        ("train.lr=-1", "train.lr: must be positive"),
        ("train.epochs=0", "train.epochs: must be positive"),
        ("data.val_fraction=1.5", "data.val_fraction"),
        ("train.schedule=step", "train.schedule"),
        ("nonsense.key=1", "unknown key"),
        ("train.lr=fast", "train.lr: expected float"),
    ],
)
def test_bad_overrides(override, fragment):
    with pytest.raises(ConfigError, match=fragment.replace(".", r"\.")):
        load_config("myresnet34", [override])


def test_parse_set_rejects_missing_equals():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_set(["train.epochs"])
    assert parse_set(["model.residual=false", "data.train_size=2000"]) == {
        "model.residual": False,
        "data.train_size": 2000,
    }


def test_int_widens_to_float_but_bool_is_not_an_int():
    cfg = load_config("myresnet34", ["train.lr=1"])
    assert isinstance(cfg.train.lr, float)
    with pytest.raises(ConfigError):
        load_config("myresnet34", ["train.epochs=true"])


def test_text_that_reads_as_a_number_is_quoted_when_written():
    """pielab reads YAML numbers as YAML 1.2 does (1e-3 is a float), PyYAML writes by YAML 1.1's rules, where
    the text 17469e9 (a commit's short hash, as provenance records it) needs no quotes: written bare, it
    came back as the float 1.7469e13 and every replay of that commit warned of other versions."""
    from pielab.yamlfile import dump_yaml, load_text

    values = {"code": "17469e9", "text_lr": "1e-3", "hash": "0731eed", "lr": 1e-3, "n": 3, "word": "yes"}
    assert load_text(dump_yaml(values, sort_keys=False)) == values


def test_checking_a_model_on_the_meta_device_stays_cheap():
    """The spec check builds every model on the meta device; ``normal_`` there would import torch._dynamo
    (about a second of every `pielab sweep` start, found with cProfile). Each model still builds, and an
    unsupported argument is still refused."""
    import subprocess
    import sys

    # resnet34 is torchvision's, whose import brings torch._dynamo anyway: it is checked last
    code = ("import sys\nfrom pielab.config import model_complaint\nfrom pielab.models import list_models\n"
            "for name in list_models():\n    assert name == 'resnet34' or model_complaint(name, {}) is None, name\n"
            "assert model_complaint('myresnet34', {'depth': 12}).startswith('unsupported ResNet depth 12')\n"
            "assert model_complaint('lstm8', {'depth': 9}) == 'depth must be in 1..8, got 9'\n"
            "print('torch._dynamo' in sys.modules)\n"
            "assert model_complaint('resnet34', {}) is None")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False", "checking a model on the meta device imported torch._dynamo"
