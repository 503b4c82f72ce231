"""Our LSTM vs torch.nn.LSTM, forward + backward, side by side in one process.

The report's own LSTM ran 2x slower than an 8-layer library LSTM; this measures ours against the library
on the report's IMDB shapes (batch 64, 300 steps, input 200, hidden 256: 1 layer, 4 layers, 2 bidirectional
layers) and on the CPU-study shapes (batch 64, input 64, hidden 64, 120 and 200 steps: 1, 4 and 8 layers,
2 bidirectional layers). Both get the same weights and inputs; repeats are interleaved (library, ours, library, ours, ...) so
load from other processes hits both alike, and medians are reported. Denormals are flushed, as the
training loop does. The last line is the worst-case ratio over all shapes, ours / library (below 1: ours is faster).
Ours runs its C++ step loops when they are built (the first line says which); ``--python-loops`` adds our
Python loops (PIELAB_LSTM_EXT=0) as a third model in the same interleaving: the before/after of the extension.

    python benchmarks/lstm.py [--repeats 9] [--threads N] [--device cpu] [--shapes report 'cpu T=120' 'cpu T=200']
                              [--python-loops] [--clock cpu]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from contextlib import contextmanager

import torch

from pielab.models import lstm as lstm_module
from pielab.models.lstm import LSTM

CONFIGS = {  # name -> (num_layers, bidirectional)
    "1 layer": (1, False),
    "4 layers": (4, False),
    "2 bidirectional layers": (2, True),
}
CPU_CONFIGS = {**CONFIGS, "8 layers": (8, False)}
# Shape sets -> (batch, steps, input, hidden, configs). "report": the IMDB report's sizes; "cpu": the sizes
# every CPU-scale study and the quickstart-sized IMDB runs use (embedding 64, hidden 64), two lengths.
SHAPES = {
    "report": (64, 300, 200, 256, CONFIGS),
    "cpu T=120": (64, 120, 64, 64, CPU_CONFIGS),
    "cpu T=200": (64, 200, 64, 64, CPU_CONFIGS),
}


# Wall clock by default; --clock cpu: this thread's CPU time, which with --threads 1 leaves out the time the
# process waits for a core on a shared machine (at load 10 on 2 cores that wait is most of the wall time).
CLOCK = time.perf_counter


def fwd_bwd_seconds(model: torch.nn.Module, x: torch.Tensor) -> float:
    """One forward + backward through the output sequence, synchronised on GPU."""
    model.zero_grad(set_to_none=True)
    if x.is_cuda:
        torch.cuda.synchronize()
    start = CLOCK()
    out, _ = model(x)
    out.sum().backward()
    if x.is_cuda:
        torch.cuda.synchronize()
    return CLOCK() - start


@contextmanager
def python_loops():
    """Our LSTM with its Python step loops for the duration (the extension is chosen per forward call)."""
    before = os.environ.get(lstm_module.EXTENSION_ENV)
    os.environ[lstm_module.EXTENSION_ENV] = "0"
    try:
        yield
    finally:
        if before is None:
            del os.environ[lstm_module.EXTENSION_ENV]
        else:
            os.environ[lstm_module.EXTENSION_ENV] = before


def python_loops_seconds(model: torch.nn.Module, x: torch.Tensor) -> float:
    with python_loops():
        return fwd_bwd_seconds(model, x)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="cpu: this thread's CPU time (needs --threads 1 on the CPU)")
    parser.add_argument("--python-loops", action="store_true", help="also time our Python step loops")
    args = parser.parse_args()
    if args.clock == "cpu":
        if args.threads != 1 or args.device != "cpu":
            parser.error("--clock cpu measures one thread: give --threads 1 on the CPU")
        global CLOCK
        CLOCK = time.thread_time
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    device = torch.device(args.device)

    cases = {}  # (shape, config) -> (library, ours, x)
    for shape in args.shapes:
        batch, steps, width, hidden, configs = SHAPES[shape]
        x = torch.randn(steps, batch, width, device=device)
        for name, (layers, bidirectional) in configs.items():
            library = torch.nn.LSTM(width, hidden, layers, bidirectional=bidirectional).to(device)
            ours = LSTM(width, hidden, layers, bidirectional=bidirectional).to(device)
            ours.load_state_dict(library.state_dict())
            cases[shape, name] = (library, ours, x)
            fwd_bwd_seconds(library, x)  # warm-up: allocator, oneDNN primitives
            fwd_bwd_seconds(ours, x)
            if args.python_loops:
                python_loops_seconds(ours, x)

    times: dict[tuple[str, str], tuple[list[float], list[float], list[float]]] = {
        key: ([], [], []) for key in cases
    }
    for _ in range(args.repeats):
        for key, (library, ours, x) in cases.items():
            times[key][0].append(fwd_bwd_seconds(library, x))
            times[key][1].append(fwd_bwd_seconds(ours, x))
            if args.python_loops:
                times[key][2].append(python_loops_seconds(ours, x))

    loops = "C++ step loops" if device.type == "cpu" and lstm_module._extension() else "Python step loops"
    print(f"forward+backward, {device}, {torch.get_num_threads()} threads, median of {args.repeats} "
          f"interleaved repeats, {args.clock} clock (torch {torch.__version__}); ours: {loops}")
    extra = f" {'py loops s':>11} {'py/torch':>9}" if args.python_loops else ""
    print(f"{'shape (batch, steps, input, hidden)':<36} {'config':<24} {'torch.nn.LSTM s':>16} {'ours s':>8} "
          f"{'ours/torch':>11}{extra}")
    ratios = []
    for (shape, name), (library_s, ours_s, python_s) in times.items():
        batch, steps, width, hidden, _ = SHAPES[shape]
        lib, own = statistics.median(library_s), statistics.median(ours_s)
        ratios.append(own / lib)
        label = f"{shape} ({batch}, {steps}, {width}, {hidden})"
        extra = ""
        if python_s:
            py = statistics.median(python_s)
            extra = f" {py:>11.3f} {py / lib:>9.2f}"
        print(f"{label:<36} {name:<24} {lib:>16.3f} {own:>8.3f} {own / lib:>11.2f}{extra}")
    print(f"ratio (ours / torch.nn.LSTM, worst case over all shapes): {max(ratios):.2f}")


if __name__ == "__main__":
    main()
