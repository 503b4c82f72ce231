"""The one training loop for both tasks.

It imports neither Ray nor W&B: sweeps call :func:`fit` through a thin adapter in
``pielab.sweep`` and ``pielab train`` calls it directly, so every trial runs exactly this code.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import math
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from pielab.config import Config, config_from_dict, save_config
from pielab.errors import Diverged, PielabError
from pielab.files import write_atomic, write_json
from pielab.folder.layout import CONFIG_FILE, METRIC_KEYS, METRICS_FILE
from pielab import provenance

CHECKPOINT_VERSION = 1
# How often (in steps) the loss is checked for NaN/inf: a host sync per step would stall a GPU.
_FINITE_CHECK_EVERY = 20

EpochCallback = Callable[[dict[str, Any], dict[str, Any]], None]


# --------------------------------------------------------------------------- set-up helpers


# Every file fit writes into its run folder (out_dir), named once here: `pielab train --overwrite` removes
# them before a new run and a failed start removes them, so a run folder never mixes two runs' files.
# A run folder of `fit(out_dir=...)` (`pielab train --out`); its config.yaml and metrics.csv are the same
# files as a sweep's trials/<id>/ holds (pielab.folder.layout).
CHECKPOINT_FILE, BEST_FILE, SUMMARY_FILE = "checkpoint.pt", "best.pt", "summary.json"
RUN_FILES = (CONFIG_FILE, CHECKPOINT_FILE, BEST_FILE, METRICS_FILE, SUMMARY_FILE, "loss.png", "accuracy.png")


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise PielabError(f"train.device={name!r} but CUDA is not available on this machine; use train.device=cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise PielabError(f"train.device={name!r} but this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"cuda:0 .. cuda:{torch.cuda.device_count() - 1}")
    return device


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on CUDA by default; fp32 on CPU, where bf16 matmuls are slow on most cores."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    return torch.bfloat16


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def build_optimizer(model: nn.Module, cfg) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0,
                               weight_decay=cfg.weight_decay)
    raise PielabError(f"unknown optimizer {cfg.optimizer!r}")


def build_scheduler(optimizer: torch.optim.Optimizer, cfg, steps_per_epoch: int):
    """Per-step schedules, so short CPU runs and long GPU runs follow the same curve."""
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "constant":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total)
    raise PielabError(f"unknown schedule {cfg.schedule!r}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _group_norm(params: list[torch.Tensor]) -> torch.Tensor:
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))


# --------------------------------------------------------------------------- one epoch


@dataclass
class EpochStats:
    loss: float
    acc: float
    samples: int
    seconds: float
    grad_first: float = float("nan")
    grad_last: float = float("nan")


@dataclass
class StepContext:
    """What a training step needs besides the model and the batch."""

    optimizer: torch.optim.Optimizer
    scheduler: Any
    loss_fn: nn.Module
    amp_dtype: torch.dtype | None = None
    grad_clip: float | None = None
    channels_last: bool = False
    grad_groups: dict[str, list[torch.Tensor]] = field(default_factory=dict)


def _prepare_inputs(inputs: tuple[torch.Tensor, ...], channels_last: bool) -> tuple[torch.Tensor, ...]:
    if channels_last and inputs[0].dim() == 4:
        return (inputs[0].contiguous(memory_format=torch.channels_last), *inputs[1:])
    return inputs


def _autocast(device: torch.device, dtype: torch.dtype | None):
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def train_one_epoch(
    model: nn.Module,
    batches: Iterable,
    ctx: StepContext,
    device: torch.device,
    *,
    on_step: Callable[[int, float], None] | None = None,
    on_first_batch: Callable[[float], None] | None = None,
) -> EpochStats:
    """One pass over ``batches``; losses and accuracies accumulate on the device (one sync at the end).

    ``on_first_batch(t)``: called once, when the first batch is in hand and before its forward pass,
    with the wall-clock time ``t`` (``time.time()``, seconds since the epoch).
    """
    model.train()
    start = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    grad_first = torch.zeros((), device=device)
    grad_last = torch.zeros((), device=device)
    samples = 0
    steps = 0
    for inputs, targets in batches:
        if on_first_batch is not None and steps == 0:
            on_first_batch(time.time())
        inputs = _prepare_inputs(inputs, ctx.channels_last)
        with _autocast(device, ctx.amp_dtype):
            logits = model(*inputs)
            loss = ctx.loss_fn(logits.float(), targets)
        ctx.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if ctx.grad_groups:
            grad_first += _group_norm(ctx.grad_groups["first"]).to(device)
            grad_last += _group_norm(ctx.grad_groups["last"]).to(device)
        if ctx.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), ctx.grad_clip)
        ctx.optimizer.step()
        ctx.scheduler.step()
        n = targets.shape[0]
        loss_sum += loss.detach() * n
        correct += (logits.argmax(dim=1) == targets).sum()
        samples += n
        steps += 1
        if steps % _FINITE_CHECK_EVERY == 0 or on_step is not None:
            value = loss.item()
            if not math.isfinite(value):
                raise Diverged(f"non-finite training loss ({value}) at step {steps}")
            if on_step is not None:
                on_step(steps, value)
    if samples == 0:
        raise PielabError("the training split is empty; check data.train_size")
    loss_value = (loss_sum / samples).item()
    if not math.isfinite(loss_value):
        raise Diverged(f"non-finite training loss ({loss_value})")
    return EpochStats(
        loss=loss_value,
        acc=correct.item() / samples,
        samples=samples,
        seconds=time.perf_counter() - start,
        grad_first=(grad_first / steps).item() if ctx.grad_groups else float("nan"),
        grad_last=(grad_last / steps).item() if ctx.grad_groups else float("nan"),
    )


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable,
    device: torch.device,
    *,
    amp_dtype: torch.dtype | None = None,
    channels_last: bool = False,
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) over ``batches``; no label smoothing, so losses compare across runs."""
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    samples = 0
    for inputs, targets in batches:
        inputs = _prepare_inputs(inputs, channels_last)
        with _autocast(device, amp_dtype):
            logits = model(*inputs).float()
        loss_sum += nn.functional.cross_entropy(logits, targets, reduction="sum")
        correct += (logits.argmax(dim=1) == targets).sum()
        samples += targets.shape[0]
    if samples == 0:
        return float("nan"), float("nan")
    return (loss_sum / samples).item(), correct.item() / samples


# --------------------------------------------------------------------------- checkpoints


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    # weights_only loading turns tuples into lists; random.setstate needs the tuple shape back.
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` via a temporary file and rename: a crash never leaves a half-written checkpoint."""
    write_atomic(path, lambda tmp: torch.save(state, tmp))


# What a checkpoint needs besides its weights to continue a run exactly (best.pt has only model and config).
RESUME_KEYS = ("epoch", "model", "optimizer", "scheduler", "rng", "config", "history", "best", "elapsed_s")


def check_resumable(state: dict[str, Any], where: str = "the checkpoint") -> None:
    """Raise one line when ``state`` cannot continue a run: weights only (a copied ``best.pt``) or incomplete."""
    missing = [k for k in RESUME_KEYS if k not in state]
    if missing:
        what = "holds weights only (like best.pt)" if set(missing) >= {"optimizer", "scheduler"} else \
            f"lacks {', '.join(missing)}"
        raise PielabError(f"{where} cannot be resumed: it {what}, not the full state of a run "
                          "(checkpoint.pt as pielab train writes it); start a new run instead")


def data_identity(prepared) -> dict[str, Any]:
    """What a run trained on: the cache entry (a hash of the source's content and the processing settings)
    and the subset (a hash of the rows each split selects), plus the source and sizes for messages."""
    meta = prepared.meta
    return {"cache_key": meta.get("cache_key"), "subset": meta.get("subset"), "source": meta.get("source"),
            "sizes": meta.get("sizes")}


def check_same_data(recorded: dict[str, Any] | None, now: dict[str, Any], where: str = "the checkpoint") -> None:
    """Refuse to continue a run on data other than what it trained on (checkpoints before pielab recorded it pass)."""
    if not recorded or now.get("cache_key") is None:  # nothing recorded, or data handed in without an identity
        return
    if (recorded.get("cache_key"), recorded.get("subset")) != (now.get("cache_key"), now.get("subset")):
        def say(d: dict[str, Any]) -> str:
            sizes = d.get("sizes") or {}
            split = "/".join(str(sizes.get(k, "?")) for k in ("train", "val", "test"))
            return f"{d.get('source') or 'unknown source'} (train/val/test {split}, cache {d.get('cache_key')})"

        raise PielabError(f"{where} trained on {say(recorded)}, but the data found now is {say(now)}; resume with "
                          "the same data (data.path or PIELAB_DATA_DIR as when the run started) or start a new run")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint safely (``weights_only``: a malicious pickle never runs)."""
    path = Path(path)
    if not path.is_file():
        raise PielabError(f"{path}: no checkpoint there")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign files
        raise PielabError(f"{path}: not a readable pielab checkpoint ({exc.__class__.__name__})") from None
    if not isinstance(state, dict) or state.get("version") != CHECKPOINT_VERSION or "model" not in state:
        raise PielabError(f"{path}: not a pielab checkpoint (missing version/model)")
    return state


# --------------------------------------------------------------------------- run-folder outputs


def epoch_line(metrics: dict[str, Any], epochs: int) -> str:
    """The report's own per-epoch line."""
    return (
        f"Epoch {metrics['epoch']}/{epochs} | Train Loss: {metrics['train/loss']:.4f}, "
        f"Train Acc: {metrics['train/acc']:.4f} | Val Loss: {metrics['val/loss']:.4f}, "
        f"Val Acc: {metrics['val/acc']:.4f}"
    )


def write_metrics_csv(history: list[dict[str, Any]], path: Path) -> None:
    """One row per epoch, the columns in the sweep folder's order (:data:`pielab.folder.layout.METRIC_KEYS`,
    the same columns as a sweep trial's metrics.csv), then any other key of the rows; rewritten atomically
    each epoch."""
    if not history:
        return
    keys = list(dict.fromkeys([*(k for k in METRIC_KEYS if any(k in row for row in history)),
                               *(k for row in history for k in row)]))
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=keys)
    writer.writeheader()
    writer.writerows(history)
    write_atomic(path, text.getvalue())


def plot_curves(history: list[dict[str, Any]], out_dir: Path, title: str = "") -> list[Path]:
    """Loss and accuracy curves, train and validation, like the report's figures."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [row["epoch"] for row in history]
    paths = []
    for kind, label in (("loss", "Loss"), ("acc", "Accuracy")):
        fig, ax = plt.subplots(figsize=(6, 4))
        ax.plot(epochs, [row[f"train/{kind}"] for row in history], marker="o", label=f"Train {label}")
        ax.plot(epochs, [row[f"val/{kind}"] for row in history], marker="o", label=f"Val {label}")
        ax.set_xlabel("Epoch")
        ax.set_ylabel(label)
        ax.set_title(f"{title} {label}".strip())
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        path = out_dir / ("loss.png" if kind == "loss" else "accuracy.png")
        fig.savefig(path, dpi=120)
        plt.close(fig)
        paths.append(path)
    return paths


def summarize(history: list[dict[str, Any]], params: int) -> dict[str, Any]:
    last = history[-1]
    return {
        "best_val_acc": last["best/val_acc"],
        "best_epoch": last["best/epoch"],
        "test_acc": last["test/acc"],
        "train_time_s": round(last["time/total_s"], 3),
        "params": params,
        "epochs_run": last["epoch"],
        "final_val_acc": last["val/acc"],
    }


# --------------------------------------------------------------------------- fit


class _Progress:
    """A rich progress bar inside each epoch, shown only on a terminal."""

    def __init__(self, enabled: bool):
        self.enabled = enabled and sys.stdout.isatty()
        self._progress = None

    def __enter__(self):
        if self.enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._progress = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), transient=True,
            )
            self._progress.__enter__()
        return self

    def __exit__(self, *exc):
        if self._progress is not None:
            self._progress.__exit__(*exc)

    def epoch(self, epoch: int, epochs: int, steps: int) -> Callable[[int, float], None] | None:
        if self._progress is None:
            return None
        task = self._progress.add_task(f"Epoch {epoch}/{epochs}", total=steps, loss=float("nan"))

        def on_step(step: int, loss: float) -> None:
            self._progress.update(task, completed=step, loss=loss)
            if step == steps:
                self._progress.remove_task(task)

        return on_step


def fit(
    config: Config | None,
    *,
    out_dir: str | Path | None = None,
    on_epoch: EpochCallback | None = None,
    resume: dict[str, Any] | str | Path | None = None,
    prepared=None,
    progress: bool = False,
    log: Callable[[str], None] | None = print,
    on_first_batch: Callable[[float], None] | None = None,
) -> dict[str, Any]:
    """Train ``config`` to the end (or from ``resume``) and return the summary.

    ``on_epoch(metrics, state)`` runs after every epoch with the namespaced metrics and a full
    checkpoint that ``fit(resume=state)`` continues from exactly. With ``resume``, ``config`` may be
    None: the checkpoint's own resolved config is used. ``on_first_batch(t)`` runs once, when this
    call's first training batch is about to go through the model, with the wall-clock time ``t``
    (``time.time()``): how a sweep measures its time to first batch (``benchmarks/sweep_overhead.py``).
    """
    from pielab.data import make_loader, prepare
    from pielab.models import get_model, grad_groups

    log = log or (lambda _line: None)
    where = f"{Path(resume)}" if isinstance(resume, (str, Path)) else "the checkpoint"
    state = load_checkpoint(resume) if isinstance(resume, (str, Path)) else resume
    if state is not None:
        check_resumable(state, where)
        config = config_from_dict(state["config"])
    if config is None:
        raise PielabError("fit needs a config or a checkpoint to resume from")
    tcfg = config.train
    device = resolve_device(tcfg.device)
    if tcfg.threads is not None:
        torch.set_num_threads(tcfg.threads)
    if device.type == "cpu":
        # Gradients through long recurrences decay into float32 denormals, which are ~10x slower on CPU.
        torch.set_flush_denormal(True)

    prepared = prepared if prepared is not None else prepare(config.task, config.data)
    data = data_identity(prepared)
    if state is not None:
        check_same_data(state.get("data"), data, where)
    # The data decides vocabulary size and classes; recording them keeps the config able to rebuild the model.
    # Not revalidated: the config already was, and get_model below checks these values.
    config = dataclasses.replace(config, model={**config.model, **prepared.model_kwargs})

    seed_everything(tcfg.seed)
    try:
        model = get_model(config.model_name, **config.model_kwargs())
    except (MemoryError, RuntimeError) as exc:  # a size the meta-device check let through but memory cannot hold
        if not isinstance(exc, MemoryError) and "allocate" not in str(exc):
            raise
        from pielab.text import one_line

        raise PielabError(f"model {config.model_name!r} with {config.model_kwargs()} does not fit in memory "
                          f"({one_line(exc, 120)}); make it smaller (model.width, model.hidden, ...)") from None
    params = count_params(model)
    model.to(device)
    if tcfg.channels_last:
        model.to(memory_format=torch.channels_last)
    groups = grad_groups(model)
    train_model = torch.compile(model) if tcfg.compile else model

    eval_bs = tcfg.eval_batch_size or 2 * tcfg.batch_size
    train_loader = make_loader(prepared, "train", batch_size=tcfg.batch_size, shuffle=True,
                               augment=config.data.augment, device=device, seed=tcfg.seed)
    val_loader = make_loader(prepared, "val", batch_size=eval_bs, shuffle=False, augment=False,
                             device=device, seed=tcfg.seed)
    test_loader = make_loader(prepared, "test", batch_size=eval_bs, shuffle=False, augment=False,
                              device=device, seed=tcfg.seed)

    optimizer = build_optimizer(model, tcfg)
    scheduler = build_scheduler(optimizer, tcfg, len(train_loader))
    ctx = StepContext(
        optimizer=optimizer, scheduler=scheduler,
        loss_fn=nn.CrossEntropyLoss(label_smoothing=tcfg.label_smoothing),
        amp_dtype=autocast_dtype(tcfg.precision, device), grad_clip=tcfg.grad_clip,
        channels_last=tcfg.channels_last, grad_groups=groups,
    )

    history: list[dict[str, Any]] = []
    best = {"val_acc": -1.0, "epoch": 0, "test_acc": float("nan")}
    elapsed = 0.0
    start_epoch = 1
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            _set_rng_state(state["rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:  # a state from another model or version
            from pielab.text import one_line

            raise PielabError(f"{where} cannot be resumed: its saved state does not fit the model its config "
                              f"builds ({one_line(exc, 160)})") from None
        history = list(state["history"])
        best = dict(state["best"])
        elapsed = float(state["elapsed_s"])
        start_epoch = int(state["epoch"]) + 1

    # The code, library versions and device of this run (pielab.provenance): in the run folder's
    # config.yaml and summary.json, and in every epoch's state, from which a sweep trial reports it.
    run_provenance = provenance.collect(device)
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        save_config(dataclasses.replace(config, provenance=run_provenance), out / CONFIG_FILE)

    with _Progress(progress) as bar:
        for epoch in range(start_epoch, tcfg.epochs + 1):
            epoch_start = time.perf_counter()
            train_loader.set_epoch(epoch)
            stats = train_one_epoch(train_model, train_loader, ctx, device,
                                    on_step=bar.epoch(epoch, tcfg.epochs, len(train_loader)),
                                    on_first_batch=on_first_batch if epoch == start_epoch else None)
            val_loss, val_acc = evaluate(train_model, val_loader, device, amp_dtype=ctx.amp_dtype,
                                         channels_last=tcfg.channels_last)
            if val_acc > best["val_acc"]:
                # Test accuracy is measured only at a new best validation epoch: it is reported, never selected on.
                _, test_acc = evaluate(train_model, test_loader, device, amp_dtype=ctx.amp_dtype,
                                       channels_last=tcfg.channels_last)
                best = {"val_acc": val_acc, "epoch": epoch, "test_acc": test_acc}
            epoch_seconds = time.perf_counter() - epoch_start  # training plus evaluation
            elapsed += epoch_seconds
            metrics = {
                "epoch": epoch,
                "train/loss": stats.loss,
                "train/acc": stats.acc,
                "val/loss": val_loss,
                "val/acc": val_acc,
                "best/val_acc": best["val_acc"],
                "best/epoch": best["epoch"],
                "test/acc": best["test_acc"],
                "lr": optimizer.param_groups[0]["lr"],
                "time/epoch_s": epoch_seconds,
                "time/total_s": elapsed,
                "perf/samples_per_s": stats.samples / max(stats.seconds, 1e-9),
                "grad/first_norm": stats.grad_first,
                "grad/last_norm": stats.grad_last,
                "grad/first_last_ratio": stats.grad_first / stats.grad_last if stats.grad_last > 0 else float("nan"),
            }
            history.append(metrics)
            log(epoch_line(metrics, tcfg.epochs))
            state = {
                "version": CHECKPOINT_VERSION,
                "epoch": epoch,
                "model": model.state_dict(),  # the unwrapped module: no `_orig_mod.` prefixes
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "rng": _rng_state(),
                "config": config.to_dict(),
                "history": history,
                "best": best,
                "elapsed_s": elapsed,
                "params": params,
                "provenance": run_provenance,
                "data": data,  # a resume on other data is refused (check_same_data)
            }
            if out is not None:
                save_checkpoint(state, out / CHECKPOINT_FILE)
                if best["epoch"] == epoch:
                    save_checkpoint({"version": CHECKPOINT_VERSION, "epoch": epoch, "model": state["model"],
                                     "config": state["config"]}, out / BEST_FILE)
                write_metrics_csv(history, out / METRICS_FILE)
            if on_epoch is not None:
                on_epoch(metrics, state)

    if not history:
        raise PielabError(f"nothing to train: the run already finished its {tcfg.epochs} epochs")
    summary = summarize(history, params)
    if out is not None:
        summary["provenance"] = run_provenance
        write_json(out / SUMMARY_FILE, summary)  # strict JSON: a NaN (no test split) is written as null
        plot_curves(history, out, title=config.model_name)
    log(f"Training completed in {elapsed:.2f} seconds.")
    return summary


# --------------------------------------------------------------------------- a run folder: `pielab train` / pielab.train()


def _check_out(out: Path, target: str | None, overwrite: bool) -> None:
    """Refuse an --out folder that holds anything (unless --overwrite), and always one where the run would
    write over the config file being read."""
    import os

    if target and Path(target).is_file() and out.is_dir():
        written = out / CONFIG_FILE
        if written.exists() and os.path.samefile(written, target):
            raise PielabError(f"--out {out}: the run would write its config.yaml over {target}, the config being "
                              "read; pick another --out (--overwrite never replaces the input config)")
    if not out.is_dir():
        return
    try:
        entries = sorted(p.name for p in out.iterdir())
    except OSError as exc:
        raise PielabError(f"--out {out}: cannot list it ({exc.strerror or exc})") from None
    if not entries:
        return
    if (out / CHECKPOINT_FILE).exists() and not overwrite:
        raise PielabError(f"{out} already holds a run; continue it with `pielab train --resume {out}`, "
                          "pick another --out, or pass --overwrite to replace it")
    if not overwrite:
        shown = ", ".join(entries[:4]) + (f" and {len(entries) - 4} more" if len(entries) > 4 else "")
        raise PielabError(f"--out {out} is not empty ({shown}); pick an empty or new folder, "
                          "or pass --overwrite to write the run's files there")


def _clean_failed_start(out: Path, created: bool) -> None:
    """A run that failed before its first checkpoint leaves nothing behind: its files, and the folder if it made it."""
    if (out / CHECKPOINT_FILE).exists():
        return  # a resumable run: keep it
    for name in RUN_FILES:
        try:
            (out / name).unlink(missing_ok=True)
        except OSError:
            pass
    if created:
        try:
            out.rmdir()  # only when empty: never anything but our own files
        except OSError:
            pass


def fit_one_line(func, *args, **kwargs):
    """Run ``fit``; what the machine cannot give (memory) becomes one line instead of a traceback."""
    try:
        return func(*args, **kwargs)
    except (MemoryError, torch.OutOfMemoryError) as exc:
        from pielab.text import one_line

        raise PielabError(f"out of memory ({one_line(exc, 160)}); lower train.batch_size, the model's size "
                          "or data.max_len") from None


def run(config: str | Path | dict[str, Any] | Config, out: str | Path | None = None, *,
        overrides: dict[str, Any] | list[str] | None = None, overwrite: bool = False, progress: bool = False,
        warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train one model into a run folder: what ``pielab train`` does, and ``pielab.train(config, out)``.

    Args:
        config: a registered model name (``"myresnet34"``), a config YAML path (``pielab export``'s files), a
            nested dict in the config's YAML form (``Sweep.config(trial_id)``), or a :class:`Config`.
        out: the run folder (default ``runs/MODEL-TIMESTAMP``); it must be new or empty unless ``overwrite``.
        overrides: ``{"train.epochs": 2}`` or ``["train.epochs=2"]``, as ``--set`` (dict or Config: applied on it).
        overwrite: replace pielab's own run files in a non-empty ``out`` (``--overwrite``).
        progress: show the per-epoch progress lines (the command does); warn: where a provenance mismatch
            warning goes (default :func:`warnings.warn`).

    Returns:
        The run's summary (``summary.json``): ``best_val_acc``, ``test_acc`` (fractions), ``best_epoch``,
        ``epochs_run``, ``train_time_s`` (seconds), ``params``, ``provenance``; plus ``run_dir``, the folder.

    Raises:
        ConfigError: a bad config or override (every problem, one line each); DataError: the data cannot be
        found; PielabError: an unusable ``out``, out of memory; Diverged: a non-finite loss. A run that fails
        before its first checkpoint leaves nothing behind.
    """
    from pielab.config import build_config, load_config, parse_set

    if isinstance(overrides, (list, tuple)):
        overrides = parse_set(overrides)
    source = None
    if isinstance(config, Config):
        config = build_config(config.to_dict(), overrides=overrides) if overrides else config
    elif isinstance(config, dict):
        config = build_config(config, overrides=overrides)
    else:
        source = str(config)
        config = load_config(config, overrides)
    if config.provenance is not None:  # a saved or exported config: say when it was recorded with other versions
        warning = provenance.mismatch_warning(config.provenance, source or "the config")
        if warning:
            if warn is None:
                import warnings

                warnings.warn(warning, stacklevel=2)
            else:
                warn(warning)
    out = Path(out) if out else Path("runs") / f"{config.model_name}-{time.strftime('%Y%m%d-%H%M%S')}"
    from pielab.files import check_writable

    check_writable(out)
    _check_out(out, source, overwrite)
    if overwrite:
        for name in RUN_FILES:  # the previous run's files: the new run writes its own
            try:
                (out / name).unlink(missing_ok=True)
            except OSError as exc:
                raise PielabError(f"--overwrite: cannot remove {out / name} ({exc.strerror or exc})") from None
    created = not out.exists()
    try:
        summary = fit_one_line(fit, config, out_dir=out, progress=progress, log=print if progress else None)
    except BaseException:
        _clean_failed_start(out, created)
        raise
    return {**summary, "run_dir": out}


class _CallableModule(type(sys)):
    """``pielab.train`` is this module (the training loop, which ``import pielab.train`` binds to that name
    anyway) and, called, the public :func:`run`: ``pielab.train(config, out=None) -> dict``."""

    def __call__(self, config, out=None, **kwargs):
        return run(config, out, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
