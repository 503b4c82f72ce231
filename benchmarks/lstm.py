"""Our LSTM vs torch.nn.LSTM, forward + backward, side by side in one process.

The report's own LSTM ran 2x slower than an 8-layer library LSTM; this measures ours against the library
on the IMDB shapes (batch 64, 300 steps, input 200, hidden 256) for 1 layer, 4 layers and 2 bidirectional
layers. Both get the same weights and inputs; repeats are interleaved (library, ours, library, ours, ...) so
load from other processes hits both alike, and medians are reported. Denormals are flushed, as the
training loop does. The last line is the worst-case ratio, ours / library (below 1: ours is faster).

    python benchmarks/lstm.py [--repeats 5] [--threads N] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pielab.models.lstm import LSTM

CONFIGS = {  # name -> (num_layers, bidirectional)
    "1 layer": (1, False),
    "4 layers": (4, False),
    "2 bidirectional layers": (2, True),
}


def fwd_bwd_seconds(model: torch.nn.Module, x: torch.Tensor) -> float:
    """One forward + backward through the output sequence, synchronised on GPU."""
    model.zero_grad(set_to_none=True)
    if x.is_cuda:
        torch.cuda.synchronize()
    start = time.perf_counter()
    out, _ = model(x)
    out.sum().backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--input", type=int, default=200)
    parser.add_argument("--hidden", type=int, default=256)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    device = torch.device(args.device)
    x = torch.randn(args.steps, args.batch, args.input, device=device)

    pairs = {}
    for name, (layers, bidirectional) in CONFIGS.items():
        library = torch.nn.LSTM(args.input, args.hidden, layers, bidirectional=bidirectional).to(device)
        ours = LSTM(args.input, args.hidden, layers, bidirectional=bidirectional).to(device)
        ours.load_state_dict(library.state_dict())
        pairs[name] = (library, ours)
        fwd_bwd_seconds(library, x)  # warm-up: allocator, oneDNN primitives
        fwd_bwd_seconds(ours, x)

    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in CONFIGS}
    for _ in range(args.repeats):
        for name, (library, ours) in pairs.items():
            times[name][0].append(fwd_bwd_seconds(library, x))
            times[name][1].append(fwd_bwd_seconds(ours, x))

    print(
        f"forward+backward, batch {args.batch}, {args.steps} steps, input {args.input}, hidden {args.hidden}, "
        f"{device}, {torch.get_num_threads()} threads, median of {args.repeats} (torch {torch.__version__})"
    )
    print(f"{'config':<24} {'torch.nn.LSTM s':>16} {'ours s':>8} {'ours/torch':>11}")
    ratios = []
    for name, (library_s, ours_s) in times.items():
        lib, own = statistics.median(library_s), statistics.median(ours_s)
        ratios.append(own / lib)
        print(f"{name:<24} {lib:>16.3f} {own:>8.3f} {own / lib:>11.2f}")
    print(f"ratio (ours / torch.nn.LSTM, worst case): {max(ratios):.2f}")


if __name__ == "__main__":
    main()
