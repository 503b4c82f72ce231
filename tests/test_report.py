"""`pielab report` and `pielab export` on sweep folders: synthetic ones built here file by file in the
runner's format (sweep.yaml from a real SweepSpec, an Optuna SQLite study, trials/<id>/...), and a real
trial trained with `pielab.train.fit` whose exported config must retrain to identical metrics."""

from __future__ import annotations

import json
import math
import re
import os
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml

from pielab.cli import main
from pielab.config import load_config, save_config
from pielab.errors import PielabError
from pielab.report import build_report, export_configs, load_sweep
from pielab.folder import METRIC_KEYS, TrialRecord, write_json
from pielab.spec.sweep_spec import SweepSpec

CHROMIUM = Path("/usr/bin/chromium")
FIGURES = ("fig_curves.png", "fig_depth_accuracy.png", "fig_error_curves.png", "fig_grad_ratio.png", "fig_importance.png",
           "fig_parallel.png")
EPOCHS = 6

SPEC = {
    "name": "depthres",
    "description": "depth x residual on CIFAR-10 (synthetic test sweep)",
    "base": {"model": {"name": "myresnet34", "width": 8}, "train": {"epochs": EPOCHS}},
    "space": {"parameters": {
        "model.depth": {"type": "categorical", "choices": [10, 18, 34]},
        "model.residual": {"type": "bool"},
        "train.lr": {"type": "float", "low": 1.0e-4, "high": 1.0e-2, "log": True},
    }},
    "search": {"algorithm": "tpe", "seed": 0},
    "metric": "val/acc",
    "mode": "max",
    "num_trials": 16,
    "seeds": [0, 1],
}


# --------------------------------------------------------------------------- building sweep folders


def synthetic_metrics(depth: int, residual: bool, lr: float, seed: int, epochs: int) -> list[dict]:
    """Per-epoch metrics with the study's shape: deep plain nets learn less and their gradients vanish."""
    ceiling = 0.80 + (0.001 * depth if residual else -0.012 * (depth - 10)) - 40 * abs(lr - 1e-3) + 0.01 * seed
    ratio = 0.6 if residual else 10 ** (-(depth - 6) / 8)
    rows, best, total = [], (-1.0, 0, math.nan), 0.0
    for epoch in range(1, epochs + 1):
        val = ceiling * (1 - 0.5 ** epoch) + (0.004 * seed if epoch == 3 else 0.0)
        test = val - 0.01
        if val > best[0]:
            best = (val, epoch, test)
        total += 10.0 + depth
        rows.append({
            "epoch": epoch, "train/loss": 2.3 * 0.7 ** epoch, "train/acc": min(0.99, val + 0.05),
            "val/loss": 2.3 * 0.75 ** epoch + 0.02, "val/acc": val, "best/val_acc": best[0], "best/epoch": best[1],
            "test/acc": best[2], "lr": lr, "time/epoch_s": 10.0 + depth, "time/total_s": total,
            "perf/samples_per_s": 500.0, "grad/first_norm": ratio * (1 + 0.1 * epoch), "grad/last_norm": 1 + 0.1 * epoch,
            "grad/first_last_ratio": ratio,
        })
    return rows


def write_trial(sweep: Path, trial_id: str, config, rows: list[dict], record: TrialRecord | None) -> None:
    folder = sweep / "trials" / trial_id
    folder.mkdir(parents=True)
    save_config(config, folder / "config.yaml")
    if rows:
        pd.DataFrame(rows, columns=list(METRIC_KEYS)).to_csv(folder / "metrics.csv", index=False)
    if record is not None:
        write_json(folder / "result.json", record.to_json())


def make_sweep(root: Path, *, trials: list[dict], spec: dict = SPEC, optuna_db: bool = True) -> Path:
    """A sweep folder in the runner's format (pielab.folder's own TrialRecord writes result.json).

    Each trial: depth, residual, lr, seed, state[, epochs, reason, result=False for a trial that has no
    result.json yet]."""
    resolved = SweepSpec.from_dict(spec)
    root.mkdir(parents=True, exist_ok=True)
    resolved.save(root / "sweep.yaml")
    (root / "trials").mkdir()
    study = None
    if optuna_db:
        study = optuna.create_study(storage=f"sqlite:///{root / 'optuna.db'}", study_name=resolved.name,
                                    direction="maximize")
    distributions = {
        "model.depth": optuna.distributions.CategoricalDistribution([10, 18, 34]),
        "model.residual": optuna.distributions.CategoricalDistribution([False, True]),
        "train.lr": optuna.distributions.FloatDistribution(1e-4, 1e-2, log=True),
    }
    for i, t in enumerate(trials):
        params = {"model.depth": t["depth"], "model.residual": t["residual"], "train.lr": t["lr"]}
        config = resolved.trial_config(params, seed=t["seed"])
        epochs = t.get("epochs", EPOCHS)
        rows = synthetic_metrics(t["depth"], t["residual"], t["lr"], t["seed"], epochs)
        last = rows[-1]
        values = [r[resolved.metric] for r in rows]
        record = TrialRecord(
            trial_id=f"trial_{i:03d}", params=params, seed=t["seed"], number=i, state=t["state"],
            reason=t.get("reason"), best_value=max(values) if resolved.mode == "max" else min(values), best_val_acc=last["best/val_acc"],
            best_epoch=last["best/epoch"], test_acc=last["test/acc"], epochs=epochs, planned_epochs=EPOCHS,
            train_time_s=last["time/total_s"], num_params=None if t["state"] == "running" else 1234567,
            started="2026-11-28T10:00:00+00:00",
        )
        write_trial(root, record.trial_id, config, rows, record if t.get("result", True) else None)
        if study is not None and t["state"] in ("completed", "early_stopped"):
            study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions,
                                                      value=last["best/val_acc"]))
    write_json(root / "status.json", {"name": resolved.name, "study": resolved.name, "started": "2026-11-28T10:00:00+00:00",
                                      "updated": "2026-11-28T11:30:00+00:00", "finished": True})
    (root / "tune").mkdir()  # Ray's own files: the report never reads them
    return root


def full_trials() -> list[dict]:
    """depths 10/18/34 x residual on/off x seeds 0/1 at lr 1e-3; a second lr for depth 18 residual; an ASHA-stopped
    trial; one failed, one diverged and one running trial."""
    out = [dict(depth=d, residual=r, lr=1e-3, seed=s, state="completed")
           for d in (10, 18, 34) for r in (True, False) for s in (0, 1)]
    out += [dict(depth=18, residual=True, lr=3e-3, seed=s, state="completed") for s in (0, 1)]
    out += [
        dict(depth=34, residual=True, lr=1e-4, seed=0, state="early_stopped", epochs=2),
        dict(depth=34, residual=False, lr=5e-3, seed=0, state="failed", epochs=1,
             reason="CUDA out of memory. Tried to allocate 2.00 GiB"),
        dict(depth=34, residual=False, lr=9e-3, seed=1, state="diverged", epochs=2, reason="non-finite loss at epoch 2"),
        dict(depth=10, residual=True, lr=2e-3, seed=0, state="running", epochs=3),
    ]
    return out


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory) -> Path:
    return make_sweep(tmp_path_factory.mktemp("sweep") / "depthres-20261128", trials=full_trials())


@pytest.fixture(scope="module")
def report_dir(sweep_dir: Path) -> Path:
    assert main(["report", str(sweep_dir)]) == 0
    return sweep_dir / "report"


# --------------------------------------------------------------------------- report: files and tables


def test_every_output_exists(report_dir: Path) -> None:
    expected = ["report.html", "summary.md", "summary.csv", "summary.tex", "trials.csv", "failed.csv", "failed.md",
                *FIGURES]
    for name in expected:
        assert (report_dir / name).is_file() and (report_dir / name).stat().st_size > 0, name
    assert not list(report_dir.glob(".*tmp*")), "temporary files left behind"


def test_summary_groups_repeats_with_mean_and_sd(report_dir: Path, sweep_dir: Path) -> None:
    summary = pd.read_csv(report_dir / "summary.csv")
    # 6 (depth, residual) at lr 1e-3 + depth 18 residual at lr 3e-3 + the ASHA-stopped trial = 8 configurations
    assert len(summary) == 8
    for column in ("model", "depth", "residual", "train.lr", "val_acc_mean", "val_acc_sd", "best_epoch",
                   "test_acc_mean", "test_acc_sd", "epochs", "train_time_s", "params", "n_seeds", "best", "trials"):
        assert column in summary.columns, column
    assert "model.depth" not in summary.columns and "train.seed" not in summary.columns
    assert summary["val_acc_mean"].is_monotonic_decreasing  # mode max: best first

    row = summary[(summary["depth"] == 34) & (~summary["residual"]) & (summary["train.lr"] == 1e-3)].iloc[0]
    expected = [max(r["val/acc"] for r in synthetic_metrics(34, False, 1e-3, s, EPOCHS)) for s in (0, 1)]
    assert row["n_seeds"] == 2
    assert row["val_acc_mean"] == pytest.approx(sum(expected) / 2)
    assert row["val_acc_sd"] == pytest.approx(pd.Series(expected).std(ddof=1))
    single = summary[summary["n_seeds"] == 1].iloc[0]
    assert math.isnan(single["val_acc_sd"])  # no sd for a single run

    # the best of each (model, depth, residual): exactly one per family, and the better lr at depth 18 residual
    assert summary["best"].sum() == 6
    d18 = summary[(summary["depth"] == 18) & summary["residual"]].sort_values("val_acc_mean", ascending=False)
    assert list(d18["best"]) == [True, False]

    markdown = (report_dir / "summary.md").read_text()
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    assert len(lines) == 2 + 8 and "±" in markdown and "**" in markdown and "★" in markdown
    assert len({line.count("|") for line in lines}) == 1  # every row has the header's column count


def test_failed_trials_are_listed_and_never_ranked(report_dir: Path, sweep_dir: Path) -> None:
    failed = pd.read_csv(report_dir / "failed.csv")
    assert sorted(failed["state"]) == ["diverged", "failed"]
    assert "CUDA out of memory" in " ".join(failed["reason"]) and "non-finite loss" in " ".join(failed["reason"])
    summary = pd.read_csv(report_dir / "summary.csv")
    grouped = " ".join(summary["trials"])
    for trial_id in failed["trial_id"]:
        assert trial_id not in grouped
    trials = pd.read_csv(report_dir / "trials.csv")
    assert len(trials) == len(full_trials())
    running = trials[trials["state"] == "running"].iloc[0]
    assert running["epochs"] == 3 and running["best_val_acc"] > 0  # partial metrics from metrics.csv
    assert running["trial_id"] not in grouped
    assert "CUDA out of memory" in (report_dir / "failed.md").read_text()


def test_latex_table_is_well_formed(report_dir: Path) -> None:
    tex = (report_dir / "summary.tex").read_text()
    for env in ("table", "tabular"):
        assert tex.count(f"\\begin{{{env}}}") == tex.count(f"\\end{{{env}}}") == 1
    spec = re.search(r"\\begin\{tabular\}\{([a-z|]+)\}", tex).group(1)
    body = tex.split("\\midrule", 1)[1].split("\\bottomrule", 1)[0]
    rows = [r for r in body.strip().split("\\\\") if r.strip()]
    assert len(rows) == 8
    header = tex.split("\\toprule", 1)[1].split("\\midrule", 1)[0]
    for row in [header, *rows]:
        assert row.count("&") - row.count("\\&") == len(spec) - 1
    assert r"$\pm$" in tex and r"\textbf{" in tex and "\\%" in tex
    assert tex.count("{") == tex.count("}")
    assert "±" not in tex.split("\n", 1)[1] and "★" not in tex  # pdflatex-safe


def test_html_is_self_contained(report_dir: Path) -> None:
    page = (report_dir / "report.html").read_text()
    assert not re.search(r"https?://", page), "the page must not reference the network"
    assert not re.search(r"<(script|link)\b", page)
    images = re.findall(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(images) == len(FIGURES) == len(re.findall(r"<img\b", page))
    for name in ("depthres", "cifar10", "completed: 14", "early_stopped: 1", "running: 1", "failed: 1", "diverged: 1",
                 "2026-11-28 10:00", "CUDA out of memory"):
        assert name in page, name


def test_html_renders_every_figure_in_chromium(report_dir: Path, tmp_path: Path) -> None:
    """Headless Chromium loads the page from a file (no server, no network) and decodes every image."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: install it with `bash scripts/setup.sh --test` (apt-get install chromium)")
    probe = tmp_path / "probe.html"
    script = ("<script>window.addEventListener('load', () => { const out = document.createElement('pre');"
              "out.id = 'probe'; out.textContent = JSON.stringify([...document.images].map(i => [i.naturalWidth,"
              " i.naturalHeight, i.complete])); document.body.appendChild(out); });</script>")
    probe.write_text((report_dir / "report.html").read_text().replace("</body>", script + "</body>"))
    proc = subprocess.run(
        [str(CHROMIUM), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--disable-extensions",
         f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000", "--dump-dom", probe.as_uri()],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)},
    )
    match = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout)
    assert match, f"chromium did not run the probe (rc {proc.returncode}): {proc.stderr[-800:]}"
    sizes = json.loads(match.group(1))
    assert len(sizes) == len(FIGURES)
    assert all(w > 0 and h > 0 and complete for w, h, complete in sizes), sizes


def test_figures_are_real_pngs(report_dir: Path) -> None:
    from PIL import Image

    for name in FIGURES:
        with Image.open(report_dir / name) as image:
            assert image.format == "PNG" and image.width > 400 and image.height > 250, name
            assert len(np.unique(np.asarray(image.convert("L")))) > 20, f"{name} looks blank"


# --------------------------------------------------------------------------- report: edge cases


def test_error_curves_are_he_et_al_figure_6(sweep_dir: Path) -> None:
    """One panel per residual setting, plain first; one line per depth: the mean over seeds of the best config."""
    from pielab.report.figures import error_curves
    from pielab.report.tables import group_table

    sweep = load_sweep(sweep_dir)
    panels = error_curves(sweep, group_table(sweep))
    assert list(panels) == [("myresnet34", False), ("myresnet34", True)]
    for (_, residual), lines in panels.items():
        assert sorted(lines) == [10.0, 18.0, 34.0]
        for depth, frame in lines.items():
            # the best config at every depth is lr 1e-3 (depth 18 residual also ran lr 3e-3, which scores lower)
            seeds = [pd.DataFrame(synthetic_metrics(int(depth), residual, 1e-3, s, EPOCHS)) for s in (0, 1)]
            for split in ("train", "val"):
                mean = (seeds[0][f"{split}/acc"] + seeds[1][f"{split}/acc"]).to_numpy() / 2
                np.testing.assert_allclose(frame[f"{split}_error"].to_numpy(), 100 * (1 - mean), rtol=1e-12)
            assert list(frame.index) == list(range(1, EPOCHS + 1))


def test_depth_figure_and_summary_say_each_points_epochs(tmp_path: Path, pielab_exe) -> None:
    """Issue 22: a plain depth-18 configuration that ASHA stopped after 2 of 6 epochs must not stand for its
    depth beside full-length ones without saying so (a reader concludes plain depth 18 is bad)."""
    from pielab.report.figures import depth_figure, depth_points
    from pielab.report.tables import group_table

    trials = [dict(depth=d, residual=True, lr=1e-3, seed=0, state="completed") for d in (10, 18)]
    trials += [dict(depth=10, residual=False, lr=1e-3, seed=0, state="completed"),
               dict(depth=18, residual=False, lr=1e-3, seed=0, state="early_stopped", epochs=2),
               # a better-scoring early-stopped configuration must not displace a full-length one as the best
               dict(depth=10, residual=True, lr=1.0001e-3, seed=3, state="early_stopped", epochs=5)]
    sweep_path = make_sweep(tmp_path / "fidelity", trials=trials)
    sweep = load_sweep(sweep_path)
    groups = group_table(sweep)
    points = depth_points(groups).set_index(["residual", "depth"])
    assert points.loc[(False, 18.0), "epochs"] == 2 and not points.loc[(False, 18.0), "full_length"]
    assert points.loc[(True, 10.0), "epochs"] == EPOCHS and points.loc[(True, 10.0), "full_length"]
    assert points.loc[(True, 10.0), "planned_epochs"] == EPOCHS
    caption = depth_figure(sweep, groups).caption
    assert f"full {EPOCHS} epochs" in caption and "hollow point, labelled E/F ep" in caption, caption

    made = subprocess.run([*pielab_exe, "report", str(sweep_path)], capture_output=True, text=True,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert made.returncode == 0 and "Warning" not in made.stderr, made.stderr  # no library warning leaks
    summary = pd.read_csv(sweep_path / "report" / "summary.csv")
    short = summary[(summary["depth"] == 18) & ~summary["residual"]].iloc[0]
    assert short["epochs"] == 2 and short["planned_epochs"] == EPOCHS and not short["full_length"] and short["best"]
    d10 = summary[(summary["depth"] == 10) & summary["residual"]]
    assert d10.iloc[0]["train.lr"] == pytest.approx(1.0001e-3)  # the early-stopped one scores higher ...
    assert list(d10["best"]) == [False, True] and d10.iloc[1]["full_length"]  # ... the full-length one is the best
    markdown = (sweep_path / "report" / "summary.md").read_text()
    assert f"| 2/{EPOCHS}† |" in markdown and "† stopped early" in markdown, markdown
    page = (sweep_path / "report" / "report.html").read_text()
    assert "† stopped early" in page and "hollow point" in page


def test_error_figure_needs_two_depths(tmp_path: Path) -> None:
    from pielab.report.figures import error_figure
    from pielab.report.tables import group_table

    one = make_sweep(tmp_path / "one", trials=[dict(depth=18, residual=r, lr=1e-3, seed=0, state="completed")
                                               for r in (True, False)])
    sweep = load_sweep(one)
    figure = error_figure(sweep, group_table(sweep))
    assert figure.png is None and "only one depth" in figure.skipped




def test_single_trial_sweep(tmp_path: Path) -> None:
    sweep = make_sweep(tmp_path / "one", trials=[dict(depth=18, residual=True, lr=1e-3, seed=0, state="completed")])
    paths = build_report(sweep)
    summary = pd.read_csv(paths["summary.csv"])
    assert len(summary) == 1 and summary["best"].all() and summary["n_seeds"].iloc[0] == 1
    page = paths["report.html"].read_text()
    assert "Not drawn" in page  # importance and parallel coordinates need 2 trials
    assert "fig_curves.png" in paths and "fig_importance.png" not in paths and "fig_parallel.png" not in paths


def test_sweep_still_running_without_optuna_db(tmp_path: Path) -> None:
    trials = [dict(depth=10, residual=r, lr=1e-3, seed=0, state="running", epochs=2, result=r) for r in (True, False)]
    sweep = make_sweep(tmp_path / "live", trials=trials, optuna_db=False)
    paths = build_report(sweep)
    assert pd.read_csv(paths["summary.csv"]).empty
    assert len(pd.read_csv(paths["trials.csv"])) == 2
    page = paths["report.html"].read_text()
    assert "no finished trials yet" in page and "no optuna.db" in page
    assert not (sweep / "optuna.db").exists()  # reading must not create a study


def test_minimised_metric_ranks_ascending(tmp_path: Path) -> None:
    spec = {**SPEC, "name": "byloss", "metric": "val/loss", "mode": "min"}
    trials = [dict(depth=10, residual=True, lr=1e-3, seed=0, state="completed", epochs=e) for e in (2, 5)]
    sweep = make_sweep(tmp_path / "loss", trials=trials, spec=spec)
    loaded = load_sweep(sweep)
    ranked = loaded.finished()
    assert list(ranked["epochs"]) == [5, 2]  # more epochs, lower val/loss
    assert ranked["score"].is_monotonic_increasing


@pytest.mark.parametrize("layout", ["missing", "no_spec", "no_trials_dir", "empty_trials", "file"])
def test_bad_folders_fail_with_one_line(tmp_path: Path, layout: str, capsys) -> None:
    target = tmp_path / "x"
    if layout == "no_spec":
        (target / "trials" / "t1").mkdir(parents=True)
    elif layout == "no_trials_dir":
        target.mkdir()
        (target / "sweep.yaml").write_text(yaml.safe_dump(SPEC))
    elif layout == "empty_trials":
        (target / "trials").mkdir(parents=True)
        (target / "sweep.yaml").write_text(yaml.safe_dump(SPEC))
    elif layout == "file":
        target.write_text("not a folder")
    message = {"missing": "no such sweep folder", "no_spec": "is not a sweep folder (no sweep.yaml)",
               "no_trials_dir": "is not a sweep folder (no trials/)", "empty_trials": "no trials yet",
               "file": "is a file, not a sweep folder"}[layout]
    with pytest.raises(PielabError, match=re.escape(message)):
        load_sweep(target)
    for argv in (["report", str(target)], ["export", str(target)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("pielab: error: ") and err.count("\n") == 1, err
    assert not (tmp_path / "x" / "report").exists()


# --------------------------------------------------------------------------- export


def _configs_equal(exported: Path, trial_config: Path) -> None:
    assert load_config(exported).to_dict() == load_config(trial_config).to_dict()
    body = yaml.safe_load(exported.read_text())
    assert body == yaml.safe_load(trial_config.read_text())


def test_export_best_config(sweep_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["export", str(sweep_dir)]) == 0
    out = sweep_dir / "best_configs.yaml"
    assert str(out) in capsys.readouterr().out
    best = load_sweep(sweep_dir).finished().iloc[0]
    assert best["depth"] == 34 and best["residual"] and best["seed"] == 1 and best["train.lr"] == 1e-3
    text = out.read_text()
    assert f"# trial: {best['trial_id']}" in text
    assert f"# best_val_acc: {best['best_val_acc']:.4f}" in text and "# best_epoch: " in text and "# test_acc: " in text
    assert "--set train.threads=1" in text  # the thread count the trial ran with (resources.cpu 1)
    _configs_equal(out, sweep_dir / "trials" / best["trial_id"] / "config.yaml")


def test_export_top_k_writes_one_file_per_config(sweep_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "exports" / "best.yaml"
    assert main(["export", str(sweep_dir), "--top", "3", "--out", str(out)]) == 0
    files = sorted((tmp_path / "exports").iterdir())
    assert [f.name for f in files] == ["best_1.yaml", "best_2.yaml", "best_3.yaml"]
    ranked = load_sweep(sweep_dir).finished()
    for rank, path in enumerate(files):
        trial_id = ranked.iloc[rank]["trial_id"]
        assert f"rank {rank + 1} of 3" in path.read_text()
        _configs_equal(path, sweep_dir / "trials" / trial_id / "config.yaml")
    # asking for more than there are exports every finished trial, never a failed or running one
    paths = export_configs(sweep_dir, top=100, out=tmp_path / "all" / "c.yaml")
    assert len(paths) == 15
    exported = {yaml.safe_load(p.read_text())["train"]["lr"] for p in paths}
    assert 5e-3 not in exported and 9e-3 not in exported and 2e-3 not in exported


def test_export_errors_write_nothing(tmp_path: Path, capsys) -> None:
    live = make_sweep(tmp_path / "live", trials=[dict(depth=10, residual=True, lr=1e-3, seed=0, state="running")],
                      optuna_db=False)
    assert main(["export", str(live)]) == 2
    assert "no completed trial to export yet (1 running)" in capsys.readouterr().err
    assert main(["export", str(live), "--top", "0"]) == 2
    assert not (live / "best_configs.yaml").exists()

    # the second-best trial's config no longer validates: the export fails before writing the first one
    sweep = make_sweep(tmp_path / "broken", trials=[dict(depth=d, residual=True, lr=1e-3, seed=0, state="completed")
                                                   for d in (10, 34)])
    second = load_sweep(sweep).finished().iloc[1]["trial_id"]
    config = sweep / "trials" / second / "config.yaml"
    config.write_text(config.read_text().replace("optimizer: adam", "optimizer: lion"))
    out = tmp_path / "out" / "cfg.yaml"
    assert main(["export", str(sweep), "--top", "2", "--out", str(out)]) == 2
    assert second in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


# --------------------------------------------------------------------------- a real trial, retrained


@pytest.mark.slow
def test_exported_config_retrains_to_identical_metrics(cifar_path: str, tmp_path: Path) -> None:
    """A trial folder written by the real training loop; its export, trained again, gives the same val/acc."""
    from pielab.train import fit

    sweep = make_sweep(tmp_path / "real", trials=[], optuna_db=False)
    config = load_config("myresnet34", [
        f"data.path={cifar_path}", "model.width=4", "model.depth=10", "model.residual=false",
        "data.train_size=256", "data.val_size=128", "data.test_size=128", "train.epochs=2", "train.batch_size=64",
        "train.threads=1", "train.device=cpu", "tracking.wandb=false",
    ])
    trial = sweep / "trials" / "real_000"
    summary = fit(config, out_dir=trial, log=None)
    write_json(trial / "result.json", TrialRecord(
        trial_id="real_000", params={}, seed=0, state="completed", best_value=summary["best_val_acc"],
        best_val_acc=summary["best_val_acc"], best_epoch=summary["best_epoch"], test_acc=summary["test_acc"],
        epochs=summary["epochs_run"], train_time_s=summary["train_time_s"], num_params=summary["params"],
    ).to_json())
    for name in ("checkpoint.pt", "best.pt"):
        (trial / name).unlink(missing_ok=True)

    [exported] = export_configs(sweep, top=1)
    rerun: list[dict] = []
    fit(load_config(exported), on_epoch=lambda metrics, state: rerun.append(metrics), log=None)
    original = pd.read_csv(trial / "metrics.csv")
    assert [m["val/acc"] for m in rerun] == list(original["val/acc"])
    assert [m["train/loss"] for m in rerun] == pytest.approx(list(original["train/loss"]), rel=1e-6)
    assert rerun[-1]["best/epoch"] == summary["best_epoch"]

    # the report also reads a real trial folder
    paths = build_report(sweep)
    assert len(pd.read_csv(paths["summary.csv"])) == 1


# --------------------------------------------------------------------------- status, report and export agree


def cli(pielab_exe: list[str], *args: str, home: Path) -> str:
    """Run the console script in a subprocess (this worktree's code: PYTHONPATH is kept); returns stdout."""
    env = {**os.environ, "HOME": str(home)}
    proc = subprocess.run([*pielab_exe, *args], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout


def best_named(pielab_exe: list[str], sweep: Path, tmp_path: Path) -> dict[str, tuple[str, int]]:
    """(best trial id, its epoch) as `pielab status`, `pielab report` and `pielab export` each name them."""
    status = cli(pielab_exe, "status", str(sweep), home=tmp_path)
    found = re.search(r"best so far: \S+ \S+ \(trial (\S+), epoch (\d+), test acc", status)
    assert found, status
    cli(pielab_exe, "report", str(sweep), "--out", str(tmp_path / "report"), home=tmp_path)
    page = (tmp_path / "report" / "report.html").read_text()
    trial = re.search(r"<dt>trial</dt><dd>(\S+) \(", page)
    epoch = re.search(r"<dt>best [^<]+</dt><dd>\S+ at epoch (\d+) of", page)
    assert trial and epoch, page[:3000]
    cli(pielab_exe, "export", str(sweep), "--out", str(tmp_path / "best.yaml"), home=tmp_path)
    exported = (tmp_path / "best.yaml").read_text()
    return {
        "status": (found.group(1), int(found.group(2))),
        "report": (trial.group(1), int(epoch.group(1))),
        "export": (re.search(r"# trial: (\S+) ", exported).group(1),
                   int(re.search(r"# best_epoch: (\d+)", exported).group(1))),
    }


def curve_trial(root: Path, resolved: SweepSpec, tid: str, state: str, val_loss: list[float], val_acc: list[float],
                seed: int = 0) -> None:
    """A trial whose result.json is written the way the recorder wrote it before the sweep metric set the best
    epoch: best_value by the metric, but best_epoch and test_acc from fit's best val/acc epoch."""
    rows, best = [], (-1.0, 0, math.nan)
    for epoch, (loss, acc) in enumerate(zip(val_loss, val_acc), 1):
        if acc > best[0]:
            best = (acc, epoch, acc - 0.01)
        rows.append({"epoch": epoch, "train/loss": loss, "train/acc": acc, "val/loss": loss, "val/acc": acc,
                     "best/val_acc": best[0], "best/epoch": best[1], "test/acc": best[2], "lr": 1e-3,
                     "time/epoch_s": 5.0, "time/total_s": 5.0 * epoch, "perf/samples_per_s": 100.0,
                     "grad/first_norm": 1.0, "grad/last_norm": 1.0, "grad/first_last_ratio": 1.0})
    params = {"model.depth": 10, "model.residual": True, "train.lr": 1e-3 * (1 + len(rows) + seed)}
    record = TrialRecord(trial_id=tid, params=params, seed=seed, state=state, best_value=min(val_loss),
                         best_val_acc=best[0], best_epoch=best[1], test_acc=best[2], epochs=len(rows),
                         planned_epochs=4, train_time_s=5.0 * len(rows), num_params=1000)
    write_trial(root, tid, resolved.trial_config(params, seed=seed), rows, record)


@pytest.fixture(scope="module")
def loss_sweep(tmp_path_factory) -> Path:
    """A sweep on val/loss (min) with traps: the best trial by val/acc is another one; a running and a failed trial
    have lower val/loss than every finished one; the best trial's lowest val/loss epoch (2) is neither its best
    val/acc epoch (4) nor the epoch its result.json names."""
    root = tmp_path_factory.mktemp("loss") / "byloss-20261128"
    resolved = SweepSpec.from_dict({**SPEC, "name": "byloss", "metric": "val/loss", "mode": "min"})
    root.mkdir(parents=True)
    resolved.save(root / "sweep.yaml")
    curve_trial(root, resolved, "t0_best", "completed", [0.9, 0.5, 0.6, 0.7], [0.5, 0.45, 0.7, 0.8])
    curve_trial(root, resolved, "t1_by_acc", "completed", [0.8, 0.7, 0.65, 0.6], [0.6, 0.85, 0.9, 0.91], seed=1)
    curve_trial(root, resolved, "t2_running", "running", [0.3], [0.5])
    curve_trial(root, resolved, "t3_failed", "failed", [0.2, 0.1], [0.5, 0.5])
    curve_trial(root, resolved, "t4_stopped", "early_stopped", [0.95, 0.55], [0.4, 0.5])
    write_json(root / "status.json", {"name": "byloss", "finished": True, "metric": "val/loss", "mode": "min"})
    return root


def test_status_report_and_export_name_the_same_best_trial(sweep_dir: Path, pielab_exe, tmp_path: Path) -> None:
    named = best_named(pielab_exe, sweep_dir, tmp_path)
    best = load_sweep(sweep_dir).finished().iloc[0]
    assert set(named.values()) == {(best["trial_id"], int(best["best_epoch"]))}, named


def test_a_val_loss_sweep_names_its_lowest_val_loss_epoch_everywhere(loss_sweep: Path, pielab_exe,
                                                                       tmp_path: Path) -> None:
    named = best_named(pielab_exe, loss_sweep, tmp_path)
    assert set(named.values()) == {("t0_best", 2)}, named
    status = cli(pielab_exe, "status", str(loss_sweep), home=tmp_path)
    # fit measured test accuracy at epoch 1 (val/acc fell at epoch 2): every output says which one it is
    assert "test acc 0.49 at epoch 1, the best val/acc epoch up to epoch 2" in status
    page = (tmp_path / "report" / "report.html").read_text()
    assert "49.00% (at epoch 1, the best val/acc epoch up to epoch 2)" in page
    assert "# test_acc: 0.4900  (at epoch 1, the best val/acc epoch up to epoch 2)" in (tmp_path / "best.yaml").read_text()
    ranked = load_sweep(loss_sweep).finished()
    assert list(ranked["trial_id"]) == ["t0_best", "t4_stopped", "t1_by_acc"]


def test_booleans_read_yes_and_no_in_status_and_report(sweep_dir: Path, pielab_exe, tmp_path: Path) -> None:
    status = cli(pielab_exe, "status", str(sweep_dir), home=tmp_path)
    assert "model.residual=yes" in status
    assert not re.search(r"=(True|False|true|false)\b", status), status
    cli(pielab_exe, "report", str(sweep_dir), "--out", str(tmp_path / "r"), home=tmp_path)
    summary = (tmp_path / "r" / "summary.md").read_text()
    assert "| yes |" in summary and "| no |" in summary and "True" not in summary and "False" not in summary


@pytest.mark.slow
def test_a_real_val_loss_sweep_names_the_same_best_trial(imdb_path: str, pielab_exe, tmp_path: Path) -> None:
    """A real two-trial sweep through the console script, selected on val/loss (min)."""
    spec = {
        "name": "real-loss",
        "base": {
            "model": {"name": "lstm4", "embed_dim": 8, "hidden": 8, "depth": 1},
            "data": {"path": imdb_path, "train_size": 200, "val_size": 100, "test_size": 100, "max_len": 30,
                     "vocab_size": 1000},
            "train": {"epochs": 3, "batch_size": 50, "device": "cpu", "threads": 1},
        },
        "space": {"parameters": {"model.residual": {"type": "bool"}}},
        "search": {"algorithm": "grid", "seed": 0},
        "scheduler": {"name": "fifo"},
        "metric": "val/loss",
        "mode": "min",
        "max_concurrent": 2,
        "resources": {"cpu": 1, "gpu": 0},
        "tracking": {"wandb": False},
    }
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    sweep = tmp_path / "sweep"
    env = {**os.environ, "HOME": str(tmp_path / "home")}
    (tmp_path / "home").mkdir()
    proc = subprocess.run([*pielab_exe, "sweep", str(spec_path), "--out", str(sweep)], capture_output=True,
                          text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    named = best_named(pielab_exe, sweep, tmp_path)
    best_id = named["status"][0]
    losses = pd.read_csv(sweep / "trials" / best_id / "metrics.csv")
    lowest_epoch = int(losses.loc[losses["val/loss"].idxmin(), "epoch"])
    assert set(named.values()) == {(best_id, lowest_epoch)}, named
    others = [pd.read_csv(p)["val/loss"].min() for p in (sweep / "trials").glob("*/metrics.csv")]
    assert losses["val/loss"].min() == min(others)
