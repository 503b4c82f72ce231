// The step loops of our LSTM (pielab/models/lstm.py, _LayerFunction) in C++, without Python's argument
// parsing and dispatch per call: at hidden 64 a step's kernels take about as long as those per-call costs,
// so in Python the call count, not the arithmetic, was the limit. The math is the Python path's (see
// lstm.py for the derivation): ATen's matmuls and sigmoid, and the cell's elementwise arithmetic written as
// one pass over each step's rows instead of a chain of small ATen kernels. Not oneDNN's RNN kernel and not
// nn.LSTM: the recurrence, the gate layout and the hand-written BPTT are ours.
#include <torch/extension.h>

#include <vector>

using at::Tensor;

namespace {

// Views of one step of a (T, ...) tensor, made once per sequence (select per step costs a view each time).
std::vector<Tensor> steps_of(const Tensor& t) { return t.unbind(0); }

// The cell's arithmetic after the gates' sigmoid, for rows [0, b) of one step, in one pass instead of five
// kernels: c = f c_prev + i (2 s_g - 1) (= i tanh(x_g)), and tc = 2 c, whose sigmoid the caller takes.
// Activated gates are rows of 4H (i, f, s_g, o); c_prev, c_new, tc rows of H, all contiguous.
template <typename T>
void cell_state(const T* gates, const T* c_prev, T* c_new, T* tc, int64_t b, int64_t h) {
  for (int64_t r = 0; r < b; ++r) {
    const T* g = gates + r * 4 * h;
    const T *cp = c_prev + r * h;
    T *cn = c_new + r * h, *t2 = tc + r * h;
    for (int64_t j = 0; j < h; ++j) {
      const T c = g[h + j] * cp[j] + (g[j] * (T(2) * g[2 * h + j]) - g[j]);
      cn[j] = c;
      t2[j] = c + c;
    }
  }
}

// tc = 2 sigmoid(2c) - 1 = tanh(c) in place, and h = o tc, for rows [0, b).
template <typename T>
void cell_output(const T* gates, T* tc, T* h_out, int64_t b, int64_t h) {
  for (int64_t r = 0; r < b; ++r) {
    const T* o = gates + r * 4 * h + 3 * h;
    T *t = tc + r * h, *ho = h_out + r * h;
    for (int64_t j = 0; j < h; ++j) {
      const T v = T(2) * t[j] - T(1);
      t[j] = v;
      ho[j] = o[j] * v;
    }
  }
}

// One backward step's elementwise part for rows [0, b), in one pass instead of four kernels:
// dc += dh q; d(i, f, g) = p(i, f, g) dc; d(o) = p(o) dh; dc *= f. p rows of 4H (in place), f rows of 4H
// (the activated gates, f at offset H), dh, dc, q rows of H.
template <typename T>
void step_derivatives(T* p, const T* gates, const T* q, const T* dh, T* dc, int64_t b, int64_t h) {
  for (int64_t r = 0; r < b; ++r) {
    T* pr = p + r * 4 * h;
    const T *f = gates + r * 4 * h + h, *qr = q + r * h, *dhr = dh + r * h;
    T* dcr = dc + r * h;
    for (int64_t j = 0; j < h; ++j) {
      const T c = dcr[j] + dhr[j] * qr[j];
      pr[j] *= c;
      pr[h + j] *= c;
      pr[2 * h + j] *= c;
      pr[3 * h + j] *= dhr[j];
      dcr[j] = c * f[j];
    }
  }
}

}  // namespace

// Forward of one direction of one layer. x (T, B, I), w_ih (4H, I), bias (4H,) or None, w_hh (4H, H),
// h0/c0 (B, H), sizes: live rows per step (non-increasing), packed: whether any step has fewer than B rows.
// Returns out (T, B, H), h_n, c_n, and for the backward pass the activated gates (T, B, 4H), the cell states
// cs (T + 1, B, H) and tanh(c) (T, B, H).
std::vector<Tensor> lstm_forward(const Tensor& x, const Tensor& w_ih, const c10::optional<Tensor>& bias,
                                 const Tensor& w_hh, const Tensor& h0, const Tensor& c0,
                                 const std::vector<int64_t>& sizes, bool reverse, bool packed) {
  // Autograd is the caller's (an autograd.Function): skip its dispatch layers on every small op.
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const int64_t steps = x.size(0), batch = x.size(1), hidden = h0.size(-1);
  const Tensor x_flat = x.reshape({steps * batch, -1});
  const Tensor w_ih_t = w_ih.t().contiguous();
  const Tensor projection = bias.has_value() && bias->defined() ? at::addmm(*bias, x_flat, w_ih_t) : x_flat.mm(w_ih_t);
  Tensor gates = projection.view({steps, batch, 4 * hidden});
  Tensor out = at::empty({steps, batch, hidden}, gates.options());
  Tensor cs = at::empty({steps + 1, batch, hidden}, gates.options());
  cs.select(0, reverse ? steps : 0).copy_(c0);
  Tensor w_hh_t = w_hh.t().contiguous();
  // tanh(x) = 2 sigmoid(2x) - 1, with the g gate's columns doubled: one sigmoid for all four gates.
  w_hh_t.narrow(1, 2 * hidden, hidden).mul_(2);
  gates.narrow(2, 2 * hidden, hidden).mul_(2);
  Tensor tanh_cs = packed ? at::zeros({steps, batch, hidden}, gates.options())
                          : at::empty({steps, batch, hidden}, gates.options());
  const auto gate_steps = steps_of(gates), out_steps = steps_of(out), c_steps = steps_of(cs),
             tc_steps = steps_of(tanh_cs);
  TORCH_CHECK(gates.device().is_cpu(), "our LSTM's C++ step loops run on the CPU only");
  Tensor h_prev = h0;
  for (int64_t k = 0; k < steps; ++k) {
    const int64_t t = reverse ? steps - 1 - k : k;
    const int64_t b = sizes[t];
    Tensor gates_t = gate_steps[t], h_t = out_steps[t], tc_t = tc_steps[t];
    Tensor c_prev = reverse ? c_steps[t + 1] : c_steps[t], c_new = reverse ? c_steps[t] : c_steps[t + 1];
    Tensor hp = h_prev;
    if (b < batch) {  // rows past their end carry their state; zero gates make their derivatives zero
      h_t.narrow(0, b, batch - b).copy_(hp.narrow(0, b, batch - b));
      c_new.narrow(0, b, batch - b).copy_(c_prev.narrow(0, b, batch - b));
      gates_t.narrow(0, b, batch - b).zero_();
      hp = hp.narrow(0, 0, b);  // the loops below take rows [0, b) of the contiguous step buffers
    }
    Tensor live = b < batch ? gates_t.narrow(0, 0, b) : gates_t;
    live.addmm_(hp, w_hh_t).sigmoid_();
    {  // the cell's arithmetic in two passes around tanh(c)'s sigmoid: three calls where ATen needed eight
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gates.scalar_type(), "lstm_cell", [&] {
        cell_state<scalar_t>(gates_t.const_data_ptr<scalar_t>(), c_prev.const_data_ptr<scalar_t>(),
                             c_new.mutable_data_ptr<scalar_t>(), tc_t.mutable_data_ptr<scalar_t>(), b, hidden);
      });
      (b < batch ? tc_t.narrow(0, 0, b) : tc_t).sigmoid_();
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gates.scalar_type(), "lstm_cell", [&] {
        cell_output<scalar_t>(gates_t.const_data_ptr<scalar_t>(), tc_t.mutable_data_ptr<scalar_t>(),
                              h_t.mutable_data_ptr<scalar_t>(), b, hidden);
      });
    }
    h_prev = out_steps[t];
  }
  gates.narrow(2, 2 * hidden, hidden).mul_(2).sub_(1);  // s_g -> g = tanh(x_g)
  Tensor h_n = out.select(0, reverse ? 0 : steps - 1).clone();
  Tensor c_n = cs.select(0, reverse ? 0 : steps).clone();
  return {out, h_n, c_n, gates, cs, tanh_cs};
}

// Backward (BPTT) of lstm_forward, in blocks of block_steps steps; see _LayerFunction.backward in lstm.py.
// Returns grad_x, grad_w_ih, grad_bias, grad_w_hh, grad_h0, grad_c0 (undefined where needs_* is false).
std::vector<Tensor> lstm_backward(const Tensor& x, const Tensor& w_ih, const Tensor& w_hh, const Tensor& h0,
                                  const Tensor& gates, const Tensor& cs, const Tensor& tanh_cs, const Tensor& out,
                                  const c10::optional<Tensor>& grad_out_opt, const c10::optional<Tensor>& grad_hn,
                                  const c10::optional<Tensor>& grad_cn, const std::vector<int64_t>& sizes,
                                  bool reverse, bool needs_x, bool needs_w_ih, bool needs_bias, bool needs_w_hh,
                                  int64_t block_steps) {
  at::AutoDispatchBelowADInplaceOrView below_autograd;
  const int64_t steps = out.size(0), batch = out.size(1), hidden = out.size(2);
  const Tensor c_prev_all = reverse ? cs.narrow(0, 1, steps) : cs.narrow(0, 0, steps);
  const int64_t first = reverse ? steps - 1 : 0;
  Tensor grad_x = needs_x ? at::empty_like(x) : Tensor();
  Tensor grad_w_ih = needs_w_ih ? at::zeros_like(w_ih) : Tensor();
  Tensor grad_bias = needs_bias ? at::zeros({4 * hidden}, gates.options()) : Tensor();
  Tensor grad_w_hh = needs_w_hh ? at::zeros_like(w_hh) : Tensor();
  const int64_t buf_steps = std::min(block_steps, steps);
  Tensor p_buffer = at::empty({buf_steps, batch, 4 * hidden}, gates.options());
  Tensor q_buffer = at::empty({buf_steps, batch, hidden}, gates.options());
  const Tensor one = at::ones({}, gates.options());

  // The per-step pass reads raw rows: dh and dc fresh and contiguous, gates, p and q this layer's buffers.
  TORCH_CHECK(gates.device().is_cpu() && gates.is_contiguous(), "our LSTM's C++ step loops: CPU, contiguous gates");
  const auto contiguous = at::MemoryFormat::Contiguous;
  Tensor dh = grad_hn.has_value() && grad_hn->defined() ? grad_hn->clone(contiguous) : at::zeros_like(h0, contiguous);
  Tensor dc = grad_cn.has_value() && grad_cn->defined() ? grad_cn->clone(contiguous) : at::zeros_like(h0, contiguous);
  const bool has_grad_out = grad_out_opt.has_value() && grad_out_opt->defined();
  const std::vector<Tensor> grad_out_steps = has_grad_out ? steps_of(*grad_out_opt) : std::vector<Tensor>();
  bool dh_has_grad_out = false;
  std::vector<int64_t> starts;
  for (int64_t s = 0; s < steps; s += block_steps) starts.push_back(s);
  if (!reverse) std::reverse(starts.begin(), starts.end());
  for (const int64_t start : starts) {
    const int64_t n = std::min(start + block_steps, steps) - start;
    Tensor p = p_buffer.narrow(0, 0, n), q = q_buffer.narrow(0, 0, n);
    {  // the gradient-independent derivatives of the block (see _gate_derivatives in lstm.py)
      const Tensor g_blk = gates.narrow(0, start, n), tc_blk = tanh_cs.narrow(0, start, n);
      const auto g4 = g_blk.chunk(4, -1), p4 = p.chunk(4, -1);
      at::addcmul_out(p, g_blk, g_blk, g_blk, -1);
      Tensor(p4[0]).mul_(g4[2]);
      Tensor(p4[1]).mul_(c_prev_all.narrow(0, start, n));
      Tensor(p4[3]).mul_(tc_blk);
      Tensor pg = p4[2];
      at::addcmul_out(pg, one, g4[2], g4[2], -1).mul_(g4[0]);
      at::addcmul_out(q, one, tc_blk, tc_blk, -1).mul_(g4[3]);
    }
    const auto p_steps = steps_of(p);
    const auto q_steps = steps_of(q);
    for (int64_t j = 0; j < n; ++j) {
      const int64_t k = reverse ? j : n - 1 - j;
      const int64_t t = start + k;
      const int64_t b = sizes[t];
      if (has_grad_out && !dh_has_grad_out) dh.narrow(0, 0, b).add_(grad_out_steps[t].narrow(0, 0, b));
      const int64_t nxt = reverse ? t + 1 : t - 1;
      dh_has_grad_out = has_grad_out && 0 <= nxt && nxt < steps && b == sizes[nxt] && b == batch;
      {  // the step's arithmetic in one pass over the live rows; the others carry their gradient
        const Tensor g_t = gates.select(0, t);
        AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, gates.scalar_type(), "lstm_step_bwd", [&] {
          step_derivatives<scalar_t>(p_steps[k].mutable_data_ptr<scalar_t>(), g_t.const_data_ptr<scalar_t>(),
                                     q_steps[k].const_data_ptr<scalar_t>(), dh.const_data_ptr<scalar_t>(),
                                     dc.mutable_data_ptr<scalar_t>(), b, hidden);
        });
        Tensor dh_b = b == batch ? dh : dh.narrow(0, 0, b);
        if (dh_has_grad_out) {
          at::addmm_out(dh, grad_out_steps[nxt], p_steps[k], w_hh);
        } else {
          at::mm_out(dh_b, b == batch ? p_steps[k] : p_steps[k].narrow(0, 0, b), w_hh);
        }
      }
    }
    // The block's share of the input and weight gradients, while its d(gates) is still in cache.
    const Tensor d_flat = p.view({n * batch, 4 * hidden});
    if (needs_x) {
      Tensor gx = grad_x.narrow(0, start, n).view({n * batch, -1});
      at::mm_out(gx, d_flat, w_ih);
    }
    if (needs_w_ih) grad_w_ih.addmm_(d_flat.t(), x.narrow(0, start, n).reshape({n * batch, -1}));
    if (needs_bias) grad_bias.add_(d_flat.sum(0));
    if (needs_w_hh) {  // h_prev is h0 for the first step run, else the neighbour step's output
      int64_t lo = start, hi = start + n;
      if (lo <= first && first < hi) {
        grad_w_hh.addmm_(p.select(0, first - start).t(), h0);
        if (reverse) hi -= 1; else lo += 1;
      }
      const int64_t shift = reverse ? 1 : -1;
      if (hi > lo) {
        grad_w_hh.addmm_(p.narrow(0, lo - start, hi - lo).flatten(0, 1).t(),
                         out.narrow(0, lo + shift, hi - lo).flatten(0, 1));
      }
    }
  }
  return {grad_x, grad_w_ih, grad_bias, grad_w_hh, dh, dc};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &lstm_forward, "our LSTM: one direction of one layer, forward");
  m.def("backward", &lstm_backward, "our LSTM: one direction of one layer, backward through time");
}
