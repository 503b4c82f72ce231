"""The registry and both model families: every named system builds, runs forward and backward, rejects bad input."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn as nn

from pielab.errors import ConfigError
from pielab.models import get_model, grad_groups, list_models, model_defaults, model_task, register_model
from pielab.models.lstm import LSTMClassifier
from pielab.models.resnet import RESNET_LAYERS, BasicBlock, ResNet

TINY_IMDB = dict(embed_dim=8, hidden=8, vocab_size=50)


pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(name: str, **overrides: Any) -> nn.Module:
    """The named system at test size: ResNets at width 8, LSTMs with 8-wide embeddings and states."""
    defaults = model_defaults(name)
    small = {"width": 8} if model_task(name) == "cifar10" else TINY_IMDB
    torch.manual_seed(0)
    return get_model(name, **{k: v for k, v in small.items() if k in defaults} | overrides)


def inputs_for(name: str) -> tuple[torch.Tensor, ...]:
    if model_task(name) == "cifar10":
        return (torch.randn(2, 3, 32, 32),)
    lengths = torch.tensor([6, 3, 1])
    tokens = torch.randint(1, TINY_IMDB["vocab_size"], (3, 6))
    tokens[torch.arange(6) >= lengths[:, None]] = 0  # right padding with pad_idx 0
    return tokens, lengths


def test_the_reports_eight_systems_are_registered():
    assert list_models("cifar10") == ["mycnn", "myresnet34", "resnet34"]
    assert list_models("imdb") == ["bilstm2", "lstm4", "lstm8", "my_lstm1", "res_lstm8"]


@pytest.mark.parametrize("name", list_models())
def test_forward_backward_shapes_and_finite_grads(name):
    model = tiny(name).train()
    logits = model(*inputs_for(name))
    n = inputs_for(name)[0].shape[0]
    assert logits.shape == (n, model_defaults(name)["num_classes"])
    logits.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_imdb_defaults_are_the_reports_settings():
    for name, depth, bidirectional, residual, backend in [
        ("bilstm2", 2, True, False, "torch"),
        ("lstm4", 4, False, False, "torch"),
        ("lstm8", 8, False, False, "torch"),
        ("res_lstm8", 8, False, True, "torch"),
        ("my_lstm1", 1, False, False, "custom"),
    ]:
        assert model_defaults(name) == dict(
            embed_dim=200, hidden=256, depth=depth, bidirectional=bidirectional, residual=residual, dropout=0.5,
            backend=backend, vocab_size=20002, pad_idx=0, num_classes=2,
        )


def test_registry_rejects_duplicates_and_unknown_names_and_keywords():
    with pytest.raises(ValueError, match="already registered"):
        register_model("myresnet34", task="cifar10")(lambda *, width=1: nn.Identity())
    with pytest.raises(ConfigError, match="unknown model"):
        get_model("resnet35")
    with pytest.raises(ConfigError, match="no parameter"):
        get_model("resnet34", width=8)  # torchvision's resnet34 has a fixed width
    with pytest.raises(ConfigError, match="depth"):
        get_model("myresnet34", depth=12)


@pytest.mark.parametrize("residual", [True, False], ids=["residual", "plain"])
@pytest.mark.parametrize("depth", sorted(RESNET_LAYERS))
def test_every_resnet_depth_builds(depth, residual):
    model = get_model("myresnet34", depth=depth, residual=residual, width=2)
    blocks = [m for m in model.modules() if isinstance(m, BasicBlock)]
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(blocks) == sum(RESNET_LAYERS[depth])
    assert 2 * len(blocks) + 2 == depth  # two 3x3 convs per block, the stem and the head
    shortcuts = [b for b in blocks if b.downsample is not None]
    if residual:
        assert len(shortcuts) == len(RESNET_LAYERS[depth]) - 1  # one per stage transition
    else:  # a plain net: no shortcut modules, no 1x1 convs, nothing added back
        assert not shortcuts and all(c.kernel_size == (3, 3) for c in convs)
    assert model.eval()(torch.randn(1, 3, 8, 8)).shape == (1, 10)


def test_plain_blocks_have_no_identity_path():
    block = BasicBlock(4, 4, residual=False).eval()
    nn.init.zeros_(block.bn2.weight)
    nn.init.zeros_(block.bn2.bias)
    assert block(torch.randn(1, 4, 5, 5)).abs().max() == 0  # a residual block would return relu(x)


def test_zero_init_residual_only_for_residual_nets():
    residual, plain = get_model("myresnet34", width=2), get_model("mycnn", width=2)
    assert all((b.bn2.weight == 0).all() for b in residual.modules() if isinstance(b, BasicBlock))
    assert all((b.bn2.weight == 1).all() for b in plain.modules() if isinstance(b, BasicBlock))


def test_myresnet34_matches_adapted_torchvision_resnet34():
    with torch.device("meta"):
        ours, library = get_model("myresnet34"), get_model("resnet34")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(library)
    assert 21.2e6 < count(ours) < 21.4e6
    assert ours.state_dict().keys() == library.state_dict().keys()
    assert library.conv1.kernel_size == (3, 3) and library.conv1.stride == (1, 1)
    assert isinstance(library.maxpool, nn.Identity)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(width=0), dict(dropout=1.0), dict(dropout=-0.1), dict(num_classes=0), dict(stem="imagenet"),
        dict(width=True),
    ],
)
def test_bad_resnet_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        ResNet(BasicBlock, [1, 1], **kwargs)


@pytest.mark.parametrize(
    "kwargs", [dict(depth=0), dict(depth=9), dict(backend="cudnn"), dict(dropout=1.0), dict(pad_idx=50), dict(hidden=0)]
)
def test_bad_lstm_classifier_arguments_raise_value_error(kwargs):
    args = dict(TINY_IMDB, depth=2, bidirectional=False, residual=False, dropout=0.0, backend="torch", pad_idx=0,
                num_classes=2) | kwargs
    with pytest.raises(ValueError):
        LSTMClassifier(**args)
    with pytest.raises(ConfigError):
        get_model("lstm4", **(TINY_IMDB | kwargs))


@pytest.mark.parametrize("name", list_models())
def test_grad_groups_are_disjoint_layer_groups_without_head_or_embedding(name):
    model = tiny(name)
    groups = grad_groups(model)
    first, last = ({id(p) for p in groups[k]} for k in ("first", "last"))
    assert first and last
    excluded = {id(p) for n, p in model.named_parameters() if n.startswith(("fc.", "embedding."))}
    assert not (first | last) & excluded
    assert first <= {id(p) for p in model.parameters()}
    if name == "my_lstm1":  # depth 1: the first recurrent layer is the last
        assert first == last
    else:
        assert not first & last


def test_grad_groups_pick_the_first_and_last_recurrent_layer():
    for name in ("lstm4", "res_lstm8", "bilstm2"):
        model = tiny(name)
        depth = model_defaults(name)["depth"]
        names = {id(p): n for n, p in model.named_parameters()}
        groups = grad_groups(model)
        directions = 2 if model_defaults(name)["bidirectional"] else 1
        assert len(groups["first"]) == len(groups["last"]) == 4 * directions
        for key, layer in (("first", 0), ("last", depth - 1)):
            picked = [names[id(p)] for p in groups[key]]
            assert all(f"_l{layer}" in n or f"rnn.layers.{layer}." in n for n in picked), picked


@pytest.mark.parametrize("name", list_models("imdb"))
def test_lstm_prediction_ignores_padding(name):
    """The same review alone, in a batch with a longer one, and with extra padding appended: the same logits."""
    model = tiny(name).eval()
    review = torch.randint(1, TINY_IMDB["vocab_size"], (1, 4))
    longer = torch.randint(1, TINY_IMDB["vocab_size"], (1, 9))
    alone = model(review, torch.tensor([4]))
    batch = torch.zeros(2, 12, dtype=torch.long)  # three columns of padding past the longest review
    batch[0, :4], batch[1, :9] = review, longer
    batched = model(batch, torch.tensor([4, 9]))
    torch.testing.assert_close(batched[:1], alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batched[1:], model(longer, torch.tensor([9])), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_custom_backend_equals_torch_backend_with_the_same_weights(bidirectional):
    """Our LSTM has nn.LSTM's parameter names, so a torch-backend classifier's state_dict loads as is."""
    kwargs = dict(TINY_IMDB, depth=2, bidirectional=bidirectional, residual=False, dropout=0.0)
    torch.manual_seed(0)
    library, ours = get_model("lstm4", **kwargs, backend="torch"), get_model("lstm4", **kwargs, backend="custom")
    ours.load_state_dict(library.state_dict())
    tokens, lengths = inputs_for("lstm4")
    torch.testing.assert_close(ours(tokens, lengths), library(tokens, lengths), atol=1e-5, rtol=1e-5)
