"""pielab.folder: the one definition of the sweep folder's record, per-epoch rule, ranking and study name."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from pielab import files, text
from pielab.errors import PielabError
from pielab.sweep import folder as f
from pielab.folder import SweepFolder, TrialRecord, rank_records, study_name


def fit_rows(val_loss: list[float], val_acc: list[float]) -> list[dict]:
    """Epoch rows as pielab.train.fit reports them: test accuracy measured only at a new best val/acc epoch."""
    rows, best = [], (-1.0, 0, math.nan)
    for epoch, (loss, acc) in enumerate(zip(val_loss, val_acc), 1):
        if acc > best[0]:
            best = (acc, epoch, acc - 0.01)
        rows.append({"epoch": epoch, "val/loss": loss, "val/acc": acc, "best/val_acc": best[0], "best/epoch": best[1],
                     "test/acc": best[2], "time/total_s": 10.0 * epoch})
    return rows


def test_add_result_follows_the_sweep_metric_and_mode() -> None:
    rec = TrialRecord("t", {})
    # lowest val/loss at epoch 3; best val/acc at epoch 4; at epoch 3 fit's best val/acc epoch is still 2
    rows = fit_rows([0.9, 0.6, 0.4, 0.5], [0.5, 0.7, 0.65, 0.8])
    improved = [rec.add_result(row, "val/loss", "min") for row in rows]
    assert improved == [True, True, True, False]
    assert (rec.best_value, rec.best_epoch) == (0.4, 3)
    assert (rec.test_acc, rec.test_epoch) == (pytest.approx(0.69), 2)  # fit's test/acc at epoch 3, measured at 2
    assert rec.best_val_acc == 0.8 and rec.epochs == 4 and rec.train_time_s == 40.0
    assert f.test_acc_note(rec.best_epoch, rec.test_epoch) == "at epoch 2, the best val/acc epoch up to epoch 3"

    by_acc = TrialRecord("t", {})
    for row in rows:
        by_acc.add_result(row, "val/acc", "max")
    assert (by_acc.best_value, by_acc.best_epoch, by_acc.test_epoch) == (0.8, 4, 4)
    assert f.test_acc_note(by_acc.best_epoch, by_acc.test_epoch) == "at the best epoch"


def test_add_result_keeps_the_first_of_equal_epochs_and_ignores_missing_values() -> None:
    rec = TrialRecord("t", {})
    for row in fit_rows([0.5, 0.5, 0.7], [0.6, 0.6, 0.5]):
        rec.add_result(row, "val/loss", "min")
    assert rec.best_epoch == 1
    assert not rec.add_result({"epoch": 4, "val/loss": math.nan, "model/params": 123}, "val/loss", "min")
    assert rec.best_epoch == 1 and rec.epochs == 4 and rec.num_params == 123


def test_ranking_takes_finished_trials_only_best_first_ties_by_epochs_then_id() -> None:
    def rec(tid: str, state: str, value: float | None, epochs: int = 3) -> TrialRecord:
        return TrialRecord(tid, {}, state=state, best_value=value, epochs=epochs)

    records = {r.trial_id: r for r in [
        rec("a", "completed", 0.50), rec("b", "early_stopped", 0.40, epochs=1), rec("c", "running", 0.10),
        rec("d", "failed", 0.05), rec("e", "diverged", 0.01), rec("f", "completed", None),
        rec("g", "completed", 0.40, epochs=3), rec("h", "completed", 0.40, epochs=3),
    ]}
    assert [r.trial_id for r in rank_records(records, "min")] == ["g", "h", "b", "a"]
    assert [r.trial_id for r in rank_records(records, "max")] == ["a", "g", "h", "b"]
    assert f.best_record(records, "min").trial_id == "g"
    summary = f.summarize_records(records, "min")
    assert summary["best"]["trial_id"] == "g" and summary["counts"]["running"] == 1
    columns, rows = f.results_rows(records, "min")
    assert [r["trial_id"] for r in rows[:4]] == ["g", "h", "b", "a"] and rows[4]["rank"] is None


def write_trial(root: Path, tid: str, rows: list[dict], result: dict | None) -> None:
    trial = root / "trials" / tid
    trial.mkdir(parents=True)
    (trial / "config.yaml").write_text("task: cifar10\n")
    columns = list(f.METRIC_KEYS)
    files.write_atomic(trial / "metrics.csv", f.csv_text(columns, rows))
    if result is not None:
        files.write_json(trial / "result.json", result)


def test_sweep_folder_reads_every_trial_by_the_rule(tmp_path: Path) -> None:
    root = tmp_path / "s"
    root.mkdir()
    (root / "sweep.yaml").write_text("name: s\nmetric: val/loss\nmode: min\n")
    rows = fit_rows([0.9, 0.4, 0.6], [0.5, 0.6, 0.7])
    # written by the rule of earlier versions: best_epoch and test_acc at the best val/acc epoch
    write_trial(root, "old", rows, TrialRecord("old", {"train.lr": 0.1}, state="completed", best_value=0.4,
                                               best_epoch=3, test_acc=0.69, epochs=3).to_json())
    write_trial(root, "live", rows[:1], None)  # started, result.json not written yet
    sweep = SweepFolder.open(root)
    assert (sweep.name, sweep.metric, sweep.mode) == ("s", "val/loss", "min")
    records = sweep.records()
    assert (records["old"].best_epoch, records["old"].test_epoch, records["old"].test_acc) == (2, 2, pytest.approx(0.59))
    assert records["live"].state == "running" and records["live"].best_value == 0.9
    assert sweep.best().trial_id == "old"
    assert f.load_records(root).keys() == {"old"}  # the recorder's restore: result.json as written
    assert f.load_records(root)["old"].best_epoch == 3


def test_sweep_folder_open_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(PielabError, match="no such sweep folder"):
        SweepFolder.open(tmp_path / "missing")
    (tmp_path / "file").write_text("x")
    with pytest.raises(PielabError, match="is a file, not a sweep folder"):
        SweepFolder.open(tmp_path / "file")
    with pytest.raises(PielabError, match=r"is not a sweep folder \(no sweep.yaml\)"):
        SweepFolder.open(tmp_path)


def test_metric_mode_defaults_like_the_spec() -> None:
    assert f.metric_mode({}) == ("val/acc", "max")
    assert f.metric_mode({"metric": "val/loss"}) == ("val/loss", "min")
    assert f.metric_mode({}, {"metric": "val/loss", "mode": "max"}) == ("val/loss", "max")


def test_study_name_is_the_recorded_one_and_survives_a_rename(tmp_path: Path) -> None:
    old = tmp_path / "sweep-20261128"
    old.mkdir()
    assert study_name(old) == "sweep-20261128"  # folders from before the field: the folder's name
    files.write_json(old / f.STATUS_FILE, {f.STUDY_KEY: "sweep-20261128"})
    moved = old.rename(tmp_path / "copied-off-the-cluster")
    assert study_name(moved) == "sweep-20261128"
    assert SweepFolder(path=moved, spec={}, status={}).study == "sweep-20261128"


def test_shared_helpers_are_re_exported_not_copied(tmp_path: Path, monkeypatch) -> None:
    from pielab.sweep import storage

    # the folder's file helpers are pielab.folder.storage's (local folder or object storage) ...
    assert f.write_atomic is storage.write_atomic and f.write_json is storage.write_json
    assert f.read_json is storage.read_json and f.one_line is text.one_line
    # ... which hand a local path to pielab.files' one atomic writer
    calls = []
    monkeypatch.setattr(files, "write_atomic", lambda path, data: calls.append((path, data)))
    f.write_json(tmp_path / "x.json", {"a": 1})
    assert calls == [(tmp_path / "x.json", files.json_text({"a": 1}))]
