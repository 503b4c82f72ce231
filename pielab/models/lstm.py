"""The LSTM family for IMDB: our own LSTM, the classifier around any LSTM stack, and the report's named systems.

Our ``LSTM`` is a drop-in for ``torch.nn.LSTM`` (same constructor, parameter names, gate order i, f, g, o,
initialisation, return values, PackedSequence support) built the fastrnns way: a layer
(``lstm_layer``), a bidirectional layer (``bidirectional_lstm_layer``) and the stack (``LSTM``).

Where the speed comes from (the report's own LSTM was 2x slower than an 8-layer library LSTM):

- the input projection of every time step is one large matmul, hoisted out of the time loop;
- each step does one fused 4H-wide gate matmul, writing into preallocated buffers, and one sigmoid over
  all four gates; tanh is computed as 2 sigmoid(2x) - 1 (torch's CPU tanh kernel is ~7x slower than its
  sigmoid), and every per-step view is made once per sequence, so a step is 10 kernel calls and no other
  Python-level torch call (at hidden 64 each call costs about as much as its kernel);
- a layer is one ``torch.autograd.Function`` (``_LayerFunction``) whose backward runs BPTT by hand in
  blocks of steps: the gradient-independent gate derivatives of a block at once, five kernels per step, and
  the block's input and weight gradients as matmuls over all its steps. Autograd would otherwise record and
  replay ~10 small nodes per step.

The step loops of the forward and backward passes also exist in C++ (``csrc/lstm.cpp``, the same ATen calls
in the same order, loaded by ``torch.utils.cpp_extension``): at hidden 64 each Python-level torch call costs
about as much as its kernel, so the Python loops are call-bound there. ``scripts/setup.sh`` builds it once;
the Python loops below run when it cannot be built or loaded (one warning line per process) and when
``PIELAB_LSTM_EXT=0``.

Variable lengths (PackedSequence) run on the padded, length-sorted batch: at step ``t`` only the first
``batch_sizes[t]`` rows are live and the others carry their state, which is exactly what packing means for
both directions.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from pielab.models._checks import check_dropout, check_positive_int
from pielab.models.registry import register_model

Tensor = torch.Tensor
# One direction of one layer: weight_ih, weight_hh, bias_ih, bias_hh (biases None when bias=False).
LayerWeights = tuple[Tensor, Tensor, Optional[Tensor], Optional[Tensor]]

BACKENDS = ("torch", "custom")
_BLOCK = 8  # least time steps per backward block
# Bytes of gate derivatives per backward block: they stay in cache together (hidden 256, batch 64: 8 steps),
# and smaller steps make longer blocks, so the weight-gradient matmuls are fewer and larger.
_BLOCK_BYTES = 2 << 20
MAX_DEPTH = 8

# The step loops in C++ (csrc/lstm.cpp): the same ATen calls as the Python loops below, without Python's
# per-call cost, which at hidden 64 is about a kernel's time. Built once (scripts/setup.sh, else on first
# use) into torch's extension folder ($TORCH_EXTENSIONS_DIR, default ~/.cache/torch_extensions), where
# cpp_extension's lock file serialises concurrent builders; later processes only load the built library.
# PIELAB_LSTM_EXT=0 forces the Python loops; so does any failure to build or load, with one warning.
EXTENSION_ENV = "PIELAB_LSTM_EXT"
_EXTENSION_SOURCE = Path(__file__).parent / "csrc" / "lstm.cpp"
_extension_module: Optional[ModuleType] = None
_extension_failed = False


def build_extension(verbose: bool = False) -> ModuleType:
    """Build (once; later calls only load) and return the C++ step loops.

    Raises:
        RuntimeError, OSError, ImportError: no compiler, a compile error, an unwritable build folder.
    """
    global _extension_module
    if _extension_module is None:
        # Importing cpp_extension logs a warning about CUDA_HOME on machines without CUDA; not ours to show.
        logger = logging.getLogger("torch.utils.cpp_extension")
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            from torch.utils import cpp_extension

            # The source's hash in the name: checkouts with different sources never rebuild over each other.
            digest = hashlib.sha256(_EXTENSION_SOURCE.read_bytes()).hexdigest()[:12]
            _extension_module = cpp_extension.load(
                f"pielab_lstm_{digest}", [str(_EXTENSION_SOURCE)], extra_cflags=["-O3"], verbose=verbose
            )
        finally:
            logger.setLevel(level)
    return _extension_module


def _extension() -> Optional[ModuleType]:
    """The C++ step loops, or None for the Python loops (forced off, or they failed once in this process)."""
    global _extension_failed
    if _extension_module is not None and os.environ.get(EXTENSION_ENV, "1") != "0":
        return _extension_module
    if _extension_failed or os.environ.get(EXTENSION_ENV, "1") == "0":
        return None
    try:
        return build_extension()
    except Exception as error:  # noqa: BLE001 - any failure means the Python loops, never a crash
        _extension_failed = True
        reason = " ".join(str(error).split())[:300]
        # One line on stderr, once per process (a trial worker's log), not a warning with a source line.
        print(
            f"pielab: warning: our LSTM's C++ step loops could not be built or loaded, using the slower Python "
            f"loops ({type(error).__name__}: {reason}); set {EXTENSION_ENV}=0 to skip trying",
            file=sys.stderr,
        )
        return None


def _gate_derivatives(gates: Tensor, c_prev: Tensor, tanh_c: Tensor, p: Tensor, q: Tensor) -> None:
    """The parts of the step derivatives that do not depend on the incoming gradient, for a block of steps.

    With activated gates i, f, g, o and tanh_c = tanh(c_new): d(pre-activations) = [dc*pi, dc*pf, dc*pg, dh*po]
    with pi = g i (1-i), pf = c_prev f (1-f), pg = i (1-g^2), po = tanh_c o (1-o); and dc += dh*q with
    q = o (1-tanh_c^2), where tanh_c = tanh(c_new) as the forward pass kept it. Written into ``p`` (like
    ``gates``) and ``q`` (like ``tanh_c``), in eight kernels.
    """
    one = gates.new_ones(())
    i, f, g, o = gates.chunk(4, -1)
    pi, pf, pg, po = p.chunk(4, -1)
    torch.addcmul(gates, gates, gates, value=-1, out=p)  # s (1-s): right for the sigmoid gates i, f, o
    pi.mul_(g)
    pf.mul_(c_prev)
    po.mul_(tanh_c)
    torch.addcmul(one, g, g, value=-1, out=pg).mul_(i)
    torch.addcmul(one, tanh_c, tanh_c, value=-1, out=q).mul_(o)


class _LayerFunction(torch.autograd.Function):
    """One direction of one layer, with a hand-written backward (BPTT).

    Inputs: time-major ``x`` (T, B, I), ``w_ih`` (4H, I), ``bias`` (4H,) or None (b_ih + b_hh), ``w_hh``
    (4H, H), ``h0``/``c0`` (B, H), ``batch_sizes`` (live rows per step, non-increasing; None = all rows)
    and ``reverse``. Returns ``out`` (T, B, H), ``h_n``, ``c_n``. Where a row is not live, ``out`` holds
    that row's carried state; callers pack those positions away.

    The input projection of all steps is one matmul written straight into the gate buffer, which each step
    then completes in place with its recurrent matmul. Backward works through time in blocks of
    at least ``_BLOCK`` steps (``_BLOCK_BYTES`` of derivatives), in one cache-sized buffer: the gradient-independent derivatives of the block at
    once, then five small kernels per step, then the block's share of the input, weight and bias gradients
    as matmuls over all its steps. No (T, B, 4H) gradient tensor is ever allocated.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: FunctionCtx,
        x: Tensor,
        w_ih: Tensor,
        bias: Optional[Tensor],
        w_hh: Tensor,
        h0: Tensor,
        c0: Tensor,
        batch_sizes: Optional[list[int]],
        reverse: bool,
    ) -> tuple[Tensor, Tensor, Tensor]:
        steps, batch, hidden = x.shape[0], x.shape[1], h0.shape[-1]
        sizes = batch_sizes or [batch] * steps
        ext = _extension() if x.device.type == "cpu" else None
        ctx.ext = ext
        if ext is not None:
            out, h_n, c_n, gates, cs, tanh_cs = ext.forward(
                x, w_ih, bias, w_hh, h0, c0, sizes, reverse, bool(batch_sizes)
            )
            ctx.save_for_backward(x, w_ih, w_hh, h0, gates, cs, tanh_cs, out)
            ctx.sizes, ctx.reverse, ctx.has_bias = sizes, reverse, bias is not None
            ctx.set_materialize_grads(False)
            return out, h_n, c_n
        x_flat = x.reshape(steps * batch, -1)
        w_ih_t = w_ih.t().contiguous()  # BLAS runs measurably faster on a row-major right operand here
        projection = x_flat.mm(w_ih_t) if bias is None else torch.addmm(bias, x_flat, w_ih_t)
        gates = projection.view(steps, batch, 4 * hidden)
        out = torch.empty(steps, batch, hidden, dtype=gates.dtype, device=gates.device)
        # Cell states with c0 at one end: time t writes cs[t + 1] forwards, cs[t] in reverse.
        cs = torch.empty(steps + 1, batch, hidden, dtype=gates.dtype, device=gates.device)
        cs[steps if reverse else 0] = c0
        w_hh_t = w_hh.t().contiguous()
        # tanh(x) = 2 sigmoid(2x) - 1: on CPU torch's tanh kernel runs ~7x slower than its sigmoid (hidden 64:
        # ~18 us against ~2.5 us a step), so the step computes no tanh. The g gate's weight columns are
        # doubled (exact in floating point) so one sigmoid covers all four gates; i * g = 2 i s_g - i.
        g_cols = slice(2 * hidden, 3 * hidden)
        w_hh_t[:, g_cols] *= 2
        gates[..., g_cols] *= 2
        # tanh(c) of every step, kept for the backward pass (which would otherwise recompute it). Zeroed
        # when packed: rows past their end must hold finite values (their gates are zero).
        tanh_cs = (x.new_zeros if batch_sizes else x.new_empty)(steps, batch, hidden)
        # Per-step views made once, not per step: at small hidden sizes (64) each Python-level torch call
        # costs about as much as its kernel.
        gate_steps, out_steps, c_steps, tc_steps = gates.unbind(0), out.unbind(0), cs.unbind(0), tanh_cs.unbind(0)
        parts = gates.view(steps, batch, 4, hidden)
        i_steps, f_steps = parts[:, :, 0].unbind(0), parts[:, :, 1].unbind(0)
        g_steps, o_steps = parts[:, :, 2].unbind(0), parts[:, :, 3].unbind(0)
        h_prev = h0
        for t in reversed(range(steps)) if reverse else range(steps):
            b = sizes[t]
            gates_t, h_t, i_t, f_t, s_g, o_t, tc_t = (
                gate_steps[t], out_steps[t], i_steps[t], f_steps[t], g_steps[t], o_steps[t], tc_steps[t]
            )
            c_prev, c_new = (c_steps[t + 1], c_steps[t]) if reverse else (c_steps[t], c_steps[t + 1])
            if b < batch:  # rows past their end carry their state; zero gates make their derivatives zero
                h_t[b:], c_new[b:], gates_t[b:] = h_prev[b:], c_prev[b:], 0
                gates_t, h_t, i_t, f_t, s_g, o_t, tc_t, c_prev, c_new, h_prev = (
                    v[:b] for v in (gates_t, h_t, i_t, f_t, s_g, o_t, tc_t, c_prev, c_new, h_prev)
                )
            gates_t.addmm_(h_prev, w_hh_t).sigmoid_()  # i, f, o activated; s_g = sigmoid(2 x_g)
            torch.mul(f_t, c_prev, out=c_new)
            c_new.addcmul_(i_t, s_g, value=2).sub_(i_t)  # + i * (2 s_g - 1) = + i * tanh(x_g)
            torch.mul(c_new, 2, out=tc_t).sigmoid_().mul_(2).sub_(1)  # tanh(c_new)
            torch.mul(o_t, tc_t, out=h_t)
            h_prev = out_steps[t]
        gates[..., g_cols].mul_(2).sub_(1)  # s_g -> g = tanh(x_g), the activated gate backward expects
        ctx.save_for_backward(x, w_ih, w_hh, h0, gates, cs, tanh_cs, out)
        ctx.sizes, ctx.reverse, ctx.has_bias = sizes, reverse, bias is not None
        ctx.set_materialize_grads(False)
        return out, out[0 if reverse else -1].clone(), cs[0 if reverse else -1].clone()

    @staticmethod
    @once_differentiable
    def backward(  # type: ignore[override]
        ctx: FunctionCtx, grad_out: Optional[Tensor], grad_hn: Optional[Tensor], grad_cn: Optional[Tensor]
    ) -> tuple[Optional[Tensor], ...]:
        x, w_ih, w_hh, h0, gates, cs, tanh_cs, out = ctx.saved_tensors
        sizes, reverse = ctx.sizes, ctx.reverse
        steps, batch, hidden = out.shape
        needs = ctx.needs_input_grad
        # One block's worth of p (which becomes d(gate pre-activations) step by step) and q, reused.
        block_steps = max(_BLOCK, _BLOCK_BYTES // (batch * 4 * hidden * gates.element_size()))
        if ctx.ext is not None:  # the same blocks and kernels in C++
            return (*ctx.ext.backward(
                x, w_ih, w_hh, h0, gates, cs, tanh_cs, out, grad_out, grad_hn, grad_cn, sizes, reverse,
                needs[0], needs[1], ctx.has_bias and needs[2], needs[3], block_steps,
            ), None, None)
        c_prev_all = cs[1:] if reverse else cs[:-1]
        first = steps - 1 if reverse else 0  # the step that started from h0
        grad_x = x.new_empty(x.shape) if needs[0] else None
        grad_w_ih = torch.zeros_like(w_ih) if needs[1] else None
        grad_bias = gates.new_zeros(4 * hidden) if ctx.has_bias and needs[2] else None
        grad_w_hh = torch.zeros_like(w_hh) if needs[3] else None
        p_buffer = gates.new_empty(min(block_steps, steps), batch, 4 * hidden)
        q_buffer = gates.new_empty(min(block_steps, steps), batch, hidden)

        dh = grad_hn.clone() if grad_hn is not None else torch.zeros_like(h0)
        dc = grad_cn.clone() if grad_cn is not None else torch.zeros_like(h0)
        dc_col = dc.unsqueeze(1)  # a view of dc that broadcasts over the i, f, g gates
        grad_out_steps = grad_out.unbind(0) if grad_out is not None else None
        dh_has_grad_out = False  # whether dh already holds the output gradient of the step run next
        starts = range(0, steps, block_steps) if reverse else reversed(range(0, steps, block_steps))
        for start in starts:
            block = slice(start, min(start + block_steps, steps))
            n = block.stop - block.start
            p, q = p_buffer[:n], q_buffer[:n]
            _gate_derivatives(gates[block], c_prev_all[block], tanh_cs[block], p, q)
            # Per-step views made once per block: p, its i/f/g part (scaled by dc), its o part (scaled by dh), q, f.
            p_steps = p.unbind(0)
            p_ifg_steps = p.view(n, batch, 4, hidden)[:, :, :3].unbind(0)
            p_o_steps = p[..., 3 * hidden :].unbind(0)
            q_steps, f_steps = q.unbind(0), gates[block, :, hidden : 2 * hidden].unbind(0)
            for k in range(n) if reverse else reversed(range(n)):
                t = block.start + k
                b = sizes[t]
                if grad_out_steps is not None and not dh_has_grad_out:
                    dh[:b].add_(grad_out_steps[t][:b])
                nxt = t + 1 if reverse else t - 1  # the step the backward pass runs next
                # Fold the next step's output gradient into this step's recurrent matmul (one kernel fewer).
                dh_has_grad_out = grad_out_steps is not None and 0 <= nxt < steps and b == sizes[nxt] == batch
                if b == batch:  # the common case, without per-step slicing: 5 kernels
                    dc.addcmul_(dh, q_steps[k])
                    p_ifg_steps[k].mul_(dc_col)
                    p_o_steps[k].mul_(dh)
                    dc.mul_(f_steps[k])
                    if dh_has_grad_out:
                        torch.addmm(grad_out_steps[nxt], p_steps[k], w_hh, out=dh)
                    else:
                        torch.mm(p_steps[k], w_hh, out=dh)
                    continue
                # only live rows move; the others carry their gradient to earlier steps
                dh_b, dc_b, p_t, p_ifg, p_o, q_t, f_t = (
                    v[:b] for v in (dh, dc, p_steps[k], p_ifg_steps[k], p_o_steps[k], q_steps[k], f_steps[k])
                )
                dc_b.addcmul_(dh_b, q_t)
                p_ifg.mul_(dc_b.unsqueeze(1))
                p_o.mul_(dh_b)
                dc_b.mul_(f_t)
                torch.mm(p_t, w_hh, out=dh_b)

            # The block's share of the input and weight gradients, while its d(gates) is still in cache.
            d_flat = p.view(n * batch, 4 * hidden)
            if grad_x is not None:
                torch.mm(d_flat, w_ih, out=grad_x[block].view(n * batch, -1))
            if grad_w_ih is not None:
                grad_w_ih.addmm_(d_flat.t(), x[block].reshape(n * batch, -1))
            if grad_bias is not None:
                grad_bias.add_(d_flat.sum(0))
            if grad_w_hh is not None:  # h_prev is h0 for the first step run, else the neighbour step's output
                lo, hi = block.start, block.stop
                if lo <= first < hi:
                    grad_w_hh.addmm_(p[first - lo].t(), h0)
                    lo, hi = (lo, hi - 1) if reverse else (lo + 1, hi)
                shift = 1 if reverse else -1
                if hi > lo:
                    grad_w_hh.addmm_(
                        p[lo - block.start : hi - block.start].flatten(0, 1).t(),
                        out[lo + shift : hi + shift].flatten(0, 1),
                    )
        return grad_x, grad_w_ih, grad_bias, grad_w_hh, dh, dc, None, None


def lstm_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weights: LayerWeights,
    batch_sizes: Optional[list[int]] = None,
    reverse: bool = False,
) -> tuple[Tensor, Tensor, Tensor]:
    """One direction of one layer over time-major ``x`` (T, B, I) -> ``out`` (T, B, H), ``h_n``, ``c_n``.

    Under autocast everything runs in the autocast dtype, as a fused library LSTM would.
    """
    w_ih, w_hh, b_ih, b_hh = weights
    bias = None if b_ih is None or b_hh is None else b_ih + b_hh
    device = x.device.type
    dtype = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
    cast = [None if t is None else t.to(dtype) for t in (x, w_ih, bias, w_hh, h0, c0)]
    return _LayerFunction.apply(*cast, batch_sizes, reverse)


def bidirectional_lstm_layer(
    x: Tensor,
    h0: Tensor,
    c0: Tensor,
    weights: tuple[LayerWeights, LayerWeights],
    batch_sizes: Optional[list[int]] = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Both directions of one layer; ``h0``/``c0`` are (2, B, H); outputs concatenated on features."""
    fwd, h_f, c_f = lstm_layer(x, h0[0], c0[0], weights[0], batch_sizes)
    bwd, h_b, c_b = lstm_layer(x, h0[1], c0[1], weights[1], batch_sizes, reverse=True)
    return torch.cat([fwd, bwd], 2), torch.stack([h_f, h_b]), torch.stack([c_f, c_b])


def between_layers(
    out: Tensor, layer_in: Tensor, *, residual: bool, dropout: float, training: bool, last: bool
) -> Tensor:
    """The glue after a layer of a stack: dropout except after the last, and the residual add if asked.

    ``residual`` is True only between two LSTM layers (the caller passes ``layer > 0``): the stack's own
    input, the embedding in a classifier, never joins the residual stream, whatever its width (see
    :class:`LSTM`). With a residual, dropout falls on the layer's branch only: ``x + dropout(f(x))``.
    Dropping the running sum instead rescales the whole residual stream by 1/(1-p) at every layer, so its
    variance compounds with depth (an 8-layer stack with dropout 0.5 then starts at a loss far above ln 2
    and never learns). Shared by our LSTM and the layer-wise ``torch.nn.LSTM`` stack so both backends mean
    the same network.

    Raises:
        ValueError: a residual add between tensors of different widths (a stack's layers all have width
            ``hidden * directions``, so this is a caller's bug).
    """
    branch = out if last else F.dropout(out, dropout, training)
    if not residual:
        return branch
    if out.shape[-1] != layer_in.shape[-1]:
        raise ValueError(f"residual add between widths {layer_in.shape[-1]} and {out.shape[-1]}")
    return layer_in + branch


class LSTM(nn.Module):
    """Our own multi-layer LSTM, a drop-in for ``torch.nn.LSTM`` plus ``residual``.

    With ``residual=True`` every layer after the first adds its input (the previous layer's output) to its
    output: residual connections join LSTM layers only, never the stack's input to the first layer, even
    when ``input_size == hidden_size * num_directions``. That is the report's network (the lab's training
    report, ``res_lstm8``: embedding 200, hidden 256, "a residual connection after each layer" of the
    stack), where the embedding cannot be added to the first layer's output; an embedding carried to the
    classifier along the residual stream would let it bypass the recurrence. The between-layer dropout
    falls on the layer's output before the add. ``h_n``/``c_n`` are the recurrent states, without the
    residual sums.
    No ``proj_size``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        bias: bool = True,
        batch_first: bool = False,
        dropout: float = 0.0,
        bidirectional: bool = False,
        residual: bool = False,
    ) -> None:
        super().__init__()
        check_positive_int("input_size", input_size)
        check_positive_int("hidden_size", hidden_size)
        check_positive_int("num_layers", num_layers)
        check_dropout("dropout", dropout)
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout = bias, batch_first, float(dropout)
        self.bidirectional, self.residual = bidirectional, residual
        self.num_directions = 2 if bidirectional else 1
        self._weight_names: list[list[list[str]]] = []  # [layer][direction] -> parameter names
        for layer in range(num_layers):
            in_width = input_size if layer == 0 else hidden_size * self.num_directions
            names_by_direction = []
            for direction in range(self.num_directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                shapes = {"weight_ih": (4 * hidden_size, in_width), "weight_hh": (4 * hidden_size, hidden_size)}
                if bias:
                    shapes |= {"bias_ih": (4 * hidden_size,), "bias_hh": (4 * hidden_size,)}
                for stem, shape in shapes.items():
                    self.register_parameter(stem + suffix, nn.Parameter(torch.empty(shape)))
                names_by_direction.append([stem + suffix for stem in shapes])
            self._weight_names.append(names_by_direction)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """``torch.nn.LSTM``'s initialisation: every parameter uniform in +-1/sqrt(hidden_size)."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in self.parameters():
            nn.init.uniform_(weight, -bound, bound)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, bias={self.bias}, "
            f"batch_first={self.batch_first}, dropout={self.dropout}, bidirectional={self.bidirectional}, "
            f"residual={self.residual}"
        )

    def _layer_weights(self, layer: int, direction: int) -> LayerWeights:
        names = self._weight_names[layer][direction]
        w_ih, w_hh = getattr(self, names[0]), getattr(self, names[1])
        if not self.bias:
            return w_ih, w_hh, None, None
        return w_ih, w_hh, getattr(self, names[2]), getattr(self, names[3])

    def forward(
        self, input: Tensor | PackedSequence, hx: Optional[tuple[Tensor, Tensor]] = None
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]]:
        """Same contract as ``torch.nn.LSTM.forward``: ``(output, (h_n, c_n))``; batched, unbatched or packed."""
        batch_sizes: Optional[list[int]] = None
        if isinstance(input, PackedSequence):
            x, lengths = pad_packed_sequence(PackedSequence(input.data, input.batch_sizes))  # length-sorted
            batch_sizes = input.batch_sizes.tolist()
            unbatched = False
        else:
            unbatched = input.dim() == 2
            x = input.unsqueeze(1) if unbatched else input.transpose(0, 1) if self.batch_first else input
            x = x.contiguous()
        if x.shape[-1] != self.input_size:
            raise ValueError(f"input has {x.shape[-1]} features, expected input_size={self.input_size}")

        state_shape = (self.num_layers * self.num_directions, x.shape[1], self.hidden_size)
        if hx is None:
            h0 = c0 = x.new_zeros(state_shape)
        else:
            h0, c0 = (s.unsqueeze(1) for s in hx) if unbatched else hx
            if isinstance(input, PackedSequence) and input.sorted_indices is not None:
                h0, c0 = h0.index_select(1, input.sorted_indices), c0.index_select(1, input.sorted_indices)
            if h0.shape != state_shape or c0.shape != state_shape:
                shapes = f"{tuple(h0.shape)} and {tuple(c0.shape)}"
                raise ValueError(f"expected hidden states of shape {tuple(state_shape)}, got {shapes}")

        h_n, c_n = [], []
        for layer in range(self.num_layers):
            rows = slice(layer * self.num_directions, (layer + 1) * self.num_directions)
            if self.bidirectional:
                weights = (self._layer_weights(layer, 0), self._layer_weights(layer, 1))
                out, h, c = bidirectional_lstm_layer(x, h0[rows], c0[rows], weights, batch_sizes)
            else:
                out, h, c = lstm_layer(x, h0[layer], c0[layer], self._layer_weights(layer, 0), batch_sizes)
                h, c = h[None], c[None]
            h_n.append(h)
            c_n.append(c)
            last = layer == self.num_layers - 1
            x = between_layers(out, x, residual=self.residual and layer > 0, dropout=self.dropout,
                               training=self.training, last=last)
        h_n_t, c_n_t = torch.cat(h_n), torch.cat(c_n)

        if isinstance(input, PackedSequence):
            data = pack_padded_sequence(x, lengths).data
            if input.unsorted_indices is not None:
                h_n_t = h_n_t.index_select(1, input.unsorted_indices)
                c_n_t = c_n_t.index_select(1, input.unsorted_indices)
            return PackedSequence(data, input.batch_sizes, input.sorted_indices, input.unsorted_indices), (h_n_t, c_n_t)
        if unbatched:
            return x.squeeze(1), (h_n_t.squeeze(1), c_n_t.squeeze(1))
        return (x.transpose(0, 1) if self.batch_first else x), (h_n_t, c_n_t)


class LayerwiseLSTM(nn.Module):
    """A stack of single-layer ``torch.nn.LSTM``s with ``between_layers`` glue: the library LSTM with residuals.

    A fused ``nn.LSTM(num_layers=d)`` cannot add a layer's input to its output, so the residual variant of
    the library backend runs one module per layer. Takes batch-first tensors or PackedSequences.
    """

    def __init__(
        self, input_size: int, hidden_size: int, num_layers: int, *, dropout: float, bidirectional: bool, residual: bool
    ) -> None:
        super().__init__()
        width = hidden_size * (2 if bidirectional else 1)
        self.layers = nn.ModuleList(
            nn.LSTM(input_size if k == 0 else width, hidden_size, batch_first=True, bidirectional=bidirectional)
            for k in range(num_layers)
        )
        self.dropout, self.residual = dropout, residual

    def forward(self, x: Tensor | PackedSequence) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]]:
        h_n, c_n = [], []
        for k, layer in enumerate(self.layers):
            out, (h, c) = layer(x)
            h_n.append(h)
            c_n.append(c)
            last = k == len(self.layers) - 1
            glue = dict(residual=self.residual and k > 0, dropout=self.dropout, training=self.training, last=last)
            if isinstance(x, PackedSequence):
                x = PackedSequence(between_layers(out.data, x.data, **glue), *out[1:])
            else:
                x = between_layers(out, x, **glue)
        return x, (torch.cat(h_n), torch.cat(c_n))


class LSTMClassifier(nn.Module):
    """Embedding -> dropout -> LSTM stack -> the last real step of each sequence -> dropout -> linear head.

    Tokens are right-padded; only ``lengths`` decide where a sequence ends, so padding never reaches the
    prediction. A unidirectional stack runs on the padded batch (the recurrence is causal, so the output at
    step ``length-1`` is exact, and it avoids the very slow packed backward of ``nn.LSTM`` on CPU); a
    bidirectional one runs packed, so its backward direction starts at each sequence's real end.
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        embed_dim: int,
        hidden: int,
        depth: int,
        bidirectional: bool,
        residual: bool,
        dropout: float,
        backend: str,
        pad_idx: int,
        num_classes: int,
    ) -> None:
        super().__init__()
        sizes = dict(vocab_size=vocab_size, embed_dim=embed_dim, hidden=hidden, depth=depth, num_classes=num_classes)
        for name, value in sizes.items():
            check_positive_int(name, value)
        if depth > MAX_DEPTH:
            raise ValueError(f"depth must be in 1..{MAX_DEPTH}, got {depth}")
        check_dropout("dropout", dropout)
        if backend not in BACKENDS:
            raise ValueError(f"unknown LSTM backend {backend!r}; choose one of: {', '.join(BACKENDS)}")
        if isinstance(pad_idx, bool) or not isinstance(pad_idx, int) or not 0 <= pad_idx < vocab_size:
            raise ValueError(f"pad_idx must be a token id in [0, vocab_size={vocab_size}), got {pad_idx!r}")
        self.hidden, self.bidirectional = hidden, bidirectional
        self.embedding = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_idx)
        self.dropout = nn.Dropout(dropout)
        self.rnn: nn.Module
        if backend == "custom":
            self.rnn = LSTM(
                embed_dim, hidden, depth,
                batch_first=True, dropout=dropout, bidirectional=bidirectional, residual=residual,
            )
        elif residual:
            self.rnn = LayerwiseLSTM(
                embed_dim, hidden, depth, dropout=dropout, bidirectional=bidirectional, residual=True
            )
        else:  # one fused module, so cuDNN runs the whole stack (nn.LSTM warns about dropout with one layer)
            between = dropout if depth > 1 else 0.0
            self.rnn = nn.LSTM(embed_dim, hidden, depth, batch_first=True, dropout=between, bidirectional=bidirectional)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), num_classes)

    def forward(self, tokens: Tensor, lengths: Tensor) -> Tensor:
        """``tokens`` int64 (N, T) right-padded, ``lengths`` int64 (N,) each >= 1 -> logits (N, num_classes)."""
        tokens = tokens[:, : int(lengths.max())]  # columns of padding only: no sequence reads them
        x = self.dropout(self.embedding(tokens))
        if self.bidirectional:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            out, _ = pad_packed_sequence(self.rnn(packed)[0], batch_first=True, total_length=tokens.shape[1])
        else:
            out = self.rnn(x)[0]
        rows = torch.arange(out.shape[0], device=out.device)
        features = out[rows, lengths.to(out.device) - 1]  # each sequence's last real step
        if self.bidirectional:  # the backward direction ends at step 0
            features = torch.cat([features[:, : self.hidden], out[:, 0, self.hidden :]], 1)
        return self.fc(self.dropout(features))


def _lstm_classifier(
    name: str, description: str, *, depth: int, bidirectional: bool, residual: bool, backend: str
) -> Callable[..., LSTMClassifier]:
    """Register one named IMDB system: the report's settings as keyword defaults, its own architecture defaults.

    Every builder takes every keyword (the sweep varies depth, residual and backend on any of them); only
    the defaults differ, and the defaults are the config's model section.
    """

    def build(
        *,
        embed_dim: int = 200,
        hidden: int = 256,
        depth: int = depth,
        bidirectional: bool = bidirectional,
        residual: bool = residual,
        dropout: float = 0.5,
        backend: str = backend,
        vocab_size: int = 20002,
        pad_idx: int = 0,
        num_classes: int = 2,
    ) -> LSTMClassifier:
        return LSTMClassifier(
            vocab_size=vocab_size, embed_dim=embed_dim, hidden=hidden, depth=depth, bidirectional=bidirectional,
            residual=residual, dropout=dropout, backend=backend, pad_idx=pad_idx, num_classes=num_classes,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = description
    return register_model(name, task="imdb", description=description)(build)


bilstm2 = _lstm_classifier(
    "bilstm2", "2-layer bidirectional torch.nn.LSTM", depth=2, bidirectional=True, residual=False, backend="torch"
)
lstm4 = _lstm_classifier(
    "lstm4", "4-layer torch.nn.LSTM", depth=4, bidirectional=False, residual=False, backend="torch"
)
lstm8 = _lstm_classifier(
    "lstm8", "8-layer torch.nn.LSTM (never learned in the report)",
    depth=8, bidirectional=False, residual=False, backend="torch",
)
res_lstm8 = _lstm_classifier(
    "res_lstm8", "8-layer torch.nn.LSTM with a residual connection after each layer",
    depth=8, bidirectional=False, residual=True, backend="torch",
)
my_lstm1 = _lstm_classifier(
    "my_lstm1", "our own 1-layer LSTM", depth=1, bidirectional=False, residual=False, backend="custom"
)
