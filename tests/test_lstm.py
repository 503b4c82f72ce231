"""Our LSTM against torch.nn.LSTM with copied weights: outputs, final states and every gradient must agree."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
import torch
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from pielab.models import lstm as lstm_module
from pielab.models.lstm import LSTM

# More steps than one backward block (_BLOCK = 8), and not a multiple of it.
INPUT, HIDDEN, STEPS, BATCH = 5, 4, 19, 3
LENGTHS = torch.tensor([11, 19, 2])  # unsorted on purpose: packing must sort and restore the order
TOL = dict(atol=1e-5, rtol=1e-5)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(params=["cxx", "python"], ids=["cxx-loops", "python-loops"])
def loops(request, monkeypatch):
    """Run the test once with the C++ step loops and once with the Python ones (PIELAB_LSTM_EXT=0)."""
    if request.param == "python":
        monkeypatch.setenv(lstm_module.EXTENSION_ENV, "0")
        assert lstm_module._extension() is None
    else:
        monkeypatch.delenv(lstm_module.EXTENSION_ENV, raising=False)
        assert lstm_module._extension() is not None, "the C++ step loops did not build or load"
    return request.param


def _run(model: torch.nn.Module, x: torch.Tensor, hx: tuple[torch.Tensor, ...] | None, packed: bool, batch_first: bool):
    """Forward, then gradients of a loss that weighs every output position and both final states differently."""
    x = x.clone().requires_grad_()
    hx = None if hx is None else tuple(s.clone().requires_grad_() for s in hx)
    inp = pack_padded_sequence(x, LENGTHS, batch_first=batch_first, enforce_sorted=False) if packed else x
    out, (h_n, c_n) = model(inp, hx)
    seq = out.data if isinstance(out, PackedSequence) else out
    weight = torch.linspace(-1, 1, seq.numel()).view_as(seq)
    loss = (seq * weight).sum() + (h_n * 0.5).sum() + (c_n**2).sum()
    leaves = [x, *(hx or ()), *model.parameters()]
    return [seq, h_n, c_n, *torch.autograd.grad(loss, leaves)]


def _ours_and_library(**kwargs: Any) -> tuple[LSTM, torch.nn.LSTM]:
    torch.manual_seed(0)
    library = torch.nn.LSTM(INPUT, HIDDEN, **kwargs)
    ours = LSTM(INPUT, HIDDEN, **kwargs)
    ours.load_state_dict(library.state_dict())  # the same keys, so no renaming
    return ours, library


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("with_state", [False, True], ids=["zero-state", "h0c0"])
@pytest.mark.parametrize("batch_first", [False, True], ids=["time-major", "batch-first"])
@pytest.mark.parametrize(
    "kwargs",
    [dict(num_layers=1), dict(num_layers=3), dict(num_layers=2, bidirectional=True), dict(num_layers=2, bias=False)],
    ids=["1-layer", "3-layers", "2-bidirectional", "no-bias"],
)
def test_matches_torch_lstm(kwargs, batch_first, with_state, packed, loops):
    ours, library = _ours_and_library(batch_first=batch_first, **kwargs)
    x = torch.randn(BATCH, STEPS, INPUT) if batch_first else torch.randn(STEPS, BATCH, INPUT)
    directions = 2 if kwargs.get("bidirectional") else 1
    state_shape = (kwargs["num_layers"] * directions, BATCH, HIDDEN)
    hx = (torch.randn(state_shape), torch.randn(state_shape)) if with_state else None
    expected = _run(library, x, hx, packed, batch_first)
    for got, want in zip(_run(ours, x, hx, packed, batch_first), expected, strict=True):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
def test_single_step_sequences_match_torch(bidirectional, loops):
    ours, library = _ours_and_library(num_layers=2, bidirectional=bidirectional)
    x = torch.randn(1, BATCH, INPUT)
    for got, want in zip(_run(ours, x, None, False, False), _run(library, x, None, False, False), strict=True):
        torch.testing.assert_close(got, want, **TOL)


def test_packed_output_is_packed_like_torch():
    ours, library = _ours_and_library(num_layers=2, bidirectional=True)
    packed = pack_padded_sequence(torch.randn(STEPS, BATCH, INPUT), LENGTHS, enforce_sorted=False)
    got, want = ours(packed)[0], library(packed)[0]
    assert isinstance(got, PackedSequence)
    torch.testing.assert_close(got.batch_sizes, want.batch_sizes)
    torch.testing.assert_close(got.unsorted_indices, want.unsorted_indices)


def test_unbatched_input_matches_torch(loops):
    ours, library = _ours_and_library(num_layers=2)
    x = torch.randn(STEPS, INPUT)
    for got, want in zip(_run(ours, x, None, False, False), _run(library, x, None, False, False), strict=True):
        torch.testing.assert_close(got, want, **TOL)


def test_state_dict_and_parameter_order_match_torch():
    ours, library = _ours_and_library(num_layers=2, bidirectional=True)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in library.named_parameters()]


def test_initialisation_range_matches_torch():
    ours = LSTM(INPUT, 16, num_layers=2)
    bound = 1 / 16**0.5
    assert all(p.abs().max() <= bound for p in ours.parameters())


def test_dropout_only_in_training_and_between_layers():
    ours = LSTM(INPUT, HIDDEN, num_layers=2, dropout=0.5)
    reference, _ = _ours_and_library(num_layers=2)
    ours.load_state_dict(reference.state_dict())
    x = torch.randn(STEPS, BATCH, INPUT)
    ours.eval()
    torch.testing.assert_close(ours(x)[0], reference(x)[0])
    ours.train()
    assert not torch.allclose(ours(x)[0], reference(x)[0])
    single = LSTM(INPUT, HIDDEN, dropout=0.5)  # one layer: nothing between layers, so no dropout at all
    torch.testing.assert_close(single.train()(x)[0], single.eval()(x)[0])


@pytest.mark.parametrize("first_width", ["matching", "different"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
def test_residual_matches_per_layer_torch_lstms_with_adds(bidirectional, packed, first_width, loops):
    """Residual adds between LSTM layers only: never the stack's input to layer 0, even when its width matches."""
    width = HIDDEN * (2 if bidirectional else 1)
    input_size = width if first_width == "matching" else INPUT
    torch.manual_seed(0)
    ours = LSTM(input_size, HIDDEN, num_layers=3, bidirectional=bidirectional, residual=True)
    layers = torch.nn.ModuleList(
        torch.nn.LSTM(input_size if k == 0 else width, HIDDEN, bidirectional=bidirectional) for k in range(3)
    )
    state = ours.state_dict()
    for k, layer in enumerate(layers):
        layer.load_state_dict({name: state[name.replace("_l0", f"_l{k}")] for name in layer.state_dict()})

    class Manual(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.layers = layers

        def forward(self, x, hx=None):
            states = []
            for k, layer in enumerate(self.layers):
                out, state = layer(x)
                states.append(state)
                if isinstance(x, PackedSequence):
                    data = out.data + x.data if k > 0 else out.data
                    x = PackedSequence(data, *x[1:])
                else:
                    x = out + x if k > 0 else out
            return x, tuple(torch.cat(s) for s in zip(*states))

    x = torch.randn(STEPS, BATCH, input_size)
    for got, want in zip(_run(ours, x, None, packed, False), _run(Manual(), x, None, packed, False), strict=True):
        torch.testing.assert_close(got, want, **TOL)


@pytest.mark.parametrize(
    "kwargs",
    [dict(hidden_size=0), dict(num_layers=0), dict(dropout=1.0), dict(dropout=-0.1), dict(input_size=2.5)],
)
def test_bad_arguments_raise_value_error(kwargs):
    args = dict(input_size=INPUT, hidden_size=HIDDEN) | kwargs
    with pytest.raises(ValueError):
        LSTM(**args)


def test_wrong_input_width_and_state_shape_raise():
    ours = LSTM(INPUT, HIDDEN)
    with pytest.raises(ValueError, match="input_size"):
        ours(torch.randn(STEPS, BATCH, INPUT + 1))
    with pytest.raises(ValueError, match="hidden states"):
        ours(torch.randn(STEPS, BATCH, INPUT), (torch.zeros(1, BATCH + 1, HIDDEN), torch.zeros(1, BATCH + 1, HIDDEN)))


def test_double_precision_gradcheck(loops):
    """The hand-written backward against finite differences, packed and bidirectional."""
    torch.manual_seed(0)
    ours = LSTM(3, 2, num_layers=2, bidirectional=True).double()
    x = torch.randn(10, 2, 3, dtype=torch.float64, requires_grad=True)  # two backward blocks
    lengths = torch.tensor([4, 10])

    def fn(x, *params):
        state = dict(zip([n for n, _ in ours.named_parameters()], params))
        packed = pack_padded_sequence(x, lengths, enforce_sorted=False)
        out, (h, c) = torch.func.functional_call(ours, state, (packed,))
        return out.data, h, c

    assert torch.autograd.gradcheck(fn, (x, *[p.detach().requires_grad_() for p in ours.parameters()]))


@pytest.mark.parametrize("backend", ["torch", "custom"])
def test_residual_classifier_never_adds_the_embedding(backend):
    """The report's residual LSTM: embed_dim == hidden gives the same network as embed_dim != hidden.

    With equal widths the embedding could be added to the first layer's output; it must not be. Checked by
    building both classifiers with embed_dim == hidden and copying the weights of the first into a plain
    per-layer reference whose only residual adds are between layers 1->2 and 2->3.
    """
    from pielab.models import get_model

    torch.manual_seed(0)
    kwargs = dict(vocab_size=50, pad_idx=0, num_classes=2, hidden=HIDDEN, depth=3, bidirectional=False,
                  dropout=0.0, backend=backend)
    model = get_model("res_lstm8", embed_dim=HIDDEN, residual=True, **kwargs).eval()
    stack = model.rnn
    x = torch.randn(BATCH, STEPS, HIDDEN)
    layers = [torch.nn.LSTM(HIDDEN, HIDDEN, batch_first=True) for _ in range(3)]
    state = stack.state_dict()
    for k, layer in enumerate(layers):
        if isinstance(stack, LSTM):
            layer.load_state_dict({name: state[name.replace("_l0", f"_l{k}")] for name in layer.state_dict()})
        else:
            layer.load_state_dict({name: state[f"layers.{k}.{name}"] for name in layer.state_dict()})
    want = layers[0](x)[0]  # layer 0: no add, although the widths match
    for layer in layers[1:]:
        want = want + layer(want)[0]
    got = stack(x)[0]  # both stacks are batch-first inside the classifier
    torch.testing.assert_close(got, want, **TOL)
    # and a different embedding width builds the same stack shape after layer 0
    other = get_model("res_lstm8", embed_dim=HIDDEN + 3, residual=True, **kwargs)
    shapes = lambda m: [tuple(p.shape) for n, p in m.named_parameters() if "embed" not in n and "l0" not in n
                        and "layers.0." not in n]
    assert shapes(other) == shapes(model)


def test_extension_failure_falls_back_to_python_loops_with_one_warning(tmp_path):
    """No working compiler: the Python loops run, the results are right, and the process warns once."""
    script = (
        "import torch\n"
        "from pielab.models.lstm import LSTM\n"
        "torch.manual_seed(0)\n"
        "library = torch.nn.LSTM(5, 4, 2)\n"
        "ours = LSTM(5, 4, 2)\n"
        "ours.load_state_dict(library.state_dict())\n"
        "x = torch.randn(7, 3, 5)\n"
        "for _ in range(2):\n"
        "    ours(x)[0].sum().backward()\n"
        "torch.testing.assert_close(ours(x)[0], library(x)[0], atol=1e-5, rtol=1e-5)\n"
        "print('ok')\n"
    )
    env = dict(os.environ, CXX="/bin/false", TORCH_EXTENSIONS_DIR=str(tmp_path))
    env.pop(lstm_module.EXTENSION_ENV, None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"
    warnings = [line for line in result.stderr.splitlines() if "C++ step loops could not be built" in line]
    assert len(warnings) == 1, result.stderr


def test_extension_env_zero_never_builds(tmp_path):
    """PIELAB_LSTM_EXT=0: the Python loops, no build attempt, no warning."""
    script = (
        "import sys, torch\n"
        "from pielab.models.lstm import LSTM\n"
        "LSTM(5, 4)(torch.randn(7, 3, 5))[0].sum().backward()\n"
        "assert 'torch.utils.cpp_extension' not in sys.modules\n"
    )
    env = dict(os.environ, TORCH_EXTENSIONS_DIR=str(tmp_path), **{lstm_module.EXTENSION_ENV: "0"})
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "C++ step loops" not in result.stderr
    assert list(tmp_path.iterdir()) == []
