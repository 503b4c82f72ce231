"""The shared training loop: learning on real data, exact resume, divergence, run-folder outputs."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pielab.config import load_config
from pielab.errors import Diverged
from pielab.train import fit, load_checkpoint, save_checkpoint

TIMING_KEYS = ("time/epoch_s", "time/total_s", "perf/samples_per_s")


def tiny_cifar(cifar_path, *extra):
    return load_config("myresnet34", [
        f"data.path={cifar_path}", "model.width=4", "model.depth=10", "data.train_size=300",
        "data.val_size=200", "data.test_size=200", "train.epochs=3", "train.batch_size=64", "train.threads=1",
        *extra,
    ])


def tiny_imdb(imdb_path, *extra):
    return load_config("my_lstm1", [
        f"data.path={imdb_path}", "model.hidden=16", "model.embed_dim=16", "data.max_len=40",
        "data.vocab_size=2000", "data.train_size=300", "data.val_size=100", "data.test_size=200",
        "train.epochs=3", "train.threads=1", *extra,
    ])


def without_timing(history):
    return [{k: v for k, v in row.items() if k not in TIMING_KEYS} for row in history]


@pytest.mark.parametrize("task", ["cifar10", "imdb"])
def test_tiny_model_overfits_a_small_real_batch(task, cifar_path, imdb_path):
    """A few dozen steps on one real batch must drive training accuracy to (nearly) 100%."""
    from pielab.data import make_loader, prepare
    from pielab.models import get_model

    torch.manual_seed(0)
    if task == "cifar10":
        cfg = tiny_cifar(cifar_path, "data.augment=false")
        steps, lr = 60, 3e-3
    else:
        cfg = tiny_imdb(imdb_path, "model.dropout=0.0")
        steps, lr = 80, 1e-2
    prepared = prepare(cfg.task, cfg.data)
    model = get_model(cfg.model_name, **{**cfg.model_kwargs(), **prepared.model_kwargs})
    loader = make_loader(prepared, "train", batch_size=32, shuffle=False, augment=False,
                         device=torch.device("cpu"), seed=0)
    inputs, targets = next(iter(loader))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    first_loss = None
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(*inputs), targets)
        first_loss = first_loss if first_loss is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        acc = (model(*inputs).argmax(1) == targets).float().mean().item()
    assert loss.item() < 0.25 * first_loss
    assert acc >= 0.95


@pytest.mark.parametrize("task", ["cifar10", "imdb"])
def test_interrupted_run_resumes_to_identical_metrics(task, cifar_path, imdb_path, tmp_path):
    cfg = tiny_cifar(cifar_path) if task == "cifar10" else tiny_imdb(imdb_path)
    full = []
    fit(cfg, on_epoch=lambda m, s: full.append(m), log=None)

    class Interrupt(Exception):
        pass

    def stop_after_first(metrics, state):
        save_checkpoint(state, tmp_path / "ckpt.pt")
        raise Interrupt

    with pytest.raises(Interrupt):
        fit(cfg, on_epoch=stop_after_first, log=None)
    resumed = []
    state = load_checkpoint(tmp_path / "ckpt.pt")  # through the disk, with weights_only loading
    summary = fit(None, resume=state, on_epoch=lambda m, s: resumed.append(m), log=None)
    assert [m["epoch"] for m in resumed] == [2, 3]
    assert without_timing(resumed) == without_timing(full[1:])
    assert summary["best_val_acc"] == max(m["val/acc"] for m in full)


def test_metrics_are_namespaced_and_complete(cifar_path):
    rows = []
    summary = fit(tiny_cifar(cifar_path, "train.epochs=1"), on_epoch=lambda m, s: rows.append(m), log=None)
    (row,) = rows
    for key in ("train/loss", "train/acc", "val/loss", "val/acc", "test/acc", "best/val_acc", "best/epoch",
                "time/epoch_s", "perf/samples_per_s", "grad/first_norm", "grad/last_norm", "grad/first_last_ratio"):
        assert key in row and math.isfinite(row[key]), key
    assert row["grad/first_norm"] > 0 and row["grad/last_norm"] > 0
    assert summary["params"] > 0 and summary["best_epoch"] == 1
    assert 0 <= summary["test_acc"] <= 1


def test_divergence_raises_diverged(cifar_path):
    cfg = tiny_cifar(cifar_path, "train.lr=1e12", "train.optimizer=sgd", "train.momentum=0.0", "train.epochs=2")
    with pytest.raises(Diverged, match="non-finite"):
        fit(cfg, log=None)


@pytest.mark.parametrize("opt, schedule", [("adamw", "cosine"), ("sgd", "onecycle")])
def test_optimizers_and_schedules(cifar_path, opt, schedule):
    rows = []
    fit(tiny_cifar(cifar_path, f"train.optimizer={opt}", f"train.schedule={schedule}", "train.epochs=2",
                   "train.label_smoothing=0.1", "train.grad_clip=1.0", "train.weight_decay=1e-4"),
        on_epoch=lambda m, s: rows.append(m), log=None)
    assert rows[-1]["lr"] < rows[0]["lr"]  # both schedules decay towards the end


def test_run_folder_outputs(cifar_path, tmp_path):
    out = tmp_path / "run"
    lines = []
    fit(tiny_cifar(cifar_path, "train.epochs=2"), out_dir=out, log=lines.append)
    for name in ("config.yaml", "metrics.csv", "summary.json", "checkpoint.pt", "best.pt", "loss.png", "accuracy.png"):
        assert (out / name).is_file(), name
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) >= {"best_val_acc", "best_epoch", "test_acc", "train_time_s", "params"}
    assert lines[0].startswith("Epoch 1/2 | Train Loss: ") and ", Val Acc: " in lines[0]
    assert lines[-1].startswith("Training completed in ") and lines[-1].endswith(" seconds.")
    assert len((out / "metrics.csv").read_text().strip().splitlines()) == 3
    best = torch.load(out / "best.pt", weights_only=True)
    assert best["config"]["model"]["width"] == 4


def test_first_batch_time_is_reported_once_per_call(cifar_path):
    """``on_first_batch`` (a sweep's time to first batch) fires once, with the wall-clock time of the first
    epoch's first batch: after the call began and before that epoch was reported."""
    import time

    firsts, epochs_at = [], []
    began = time.time()
    fit(tiny_cifar(cifar_path, "train.epochs=2"), on_epoch=lambda m, s: epochs_at.append(time.time()),
        on_first_batch=firsts.append, log=None)
    assert len(firsts) == 1 and len(epochs_at) == 2
    assert began <= firsts[0] <= epochs_at[0]
