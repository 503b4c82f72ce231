"""Files of a sweep folder that a crash, a full disk or an interrupted copy left damaged: found before anything
trusts them, and said in one line each.

pielab writes its own files atomically, so a half-written one comes from outside (a copy cut short, a disk
fault, an editor); Ray Tune's ``tune/`` files are written in place. Each damaged file has a defined answer:

=========================================  =============================================================
file                                       what pielab does
=========================================  =============================================================
``sweep.yaml``                             readers use ``started_spec.json`` (the same spec); resume
                                           refuses, naming both files
``started_spec.json``                      readers use ``sweep.yaml``; resume refuses (it compares them)
``status.json``, ``results.csv``           readers rebuild what they show from the trials' records; the
                                           next driver rewrites both (``kind="rewritten"``)
``trials/<id>/result.json``,               the trial is left out of every ranking, table and export, and
``metrics.csv``, ``config.yaml``           every reader says so; resume refuses (``kind="trial"``)
``tune/tuner.pkl``, searcher state,        status says the sweep cannot be resumed; resume refuses
``tune/experiment_state-*.json``,          (``kind="engine"``); status, report and export still work,
``optuna.db``                              from pielab's own files
=========================================  =============================================================

How damage is recognised (cheap, no Ray or Optuna import): JSON that does not parse; YAML that does not parse
or is not a mapping; a CSV or YAML file pielab wrote that does not end in a newline (every writer ends its
last line, so a file cut mid-line lacks it) or a CSV row with another field count than its header; a pickle
whose last byte is not pickle's STOP opcode (``.``); an SQLite file whose ``PRAGMA quick_check`` fails.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

import yaml

from pielab.folder.layout import (
    CONFIG_FILE, METRICS_FILE, OPTUNA_DB, RESULT_FILE, RESULTS_FILE, STARTED_SPEC_FILE, STATUS_FILE, SWEEP_FILE,
    TUNE_DIR,
)
from pielab.folder.storage import SweepPath, is_remote, read_text

SPEC, REWRITTEN, TRIAL, ENGINE = "spec", "rewritten", "trial", "engine"


@dataclass(frozen=True)
class Damage:
    """One damaged file: ``path`` (in the folder), ``why`` (what is wrong with it), ``kind`` (:data:`SPEC`,
    :data:`REWRITTEN`, :data:`TRIAL` or :data:`ENGINE`: what it costs, the module docstring's table) and
    ``trial_id`` for a trial's own file."""

    path: SweepPath
    why: str
    kind: str
    trial_id: str | None = None

    def line(self) -> str:
        consequence = {
            SPEC: "the spec is read from its copy",
            REWRITTEN: "rebuilt from the trials' records; the next driver rewrites it",
            TRIAL: f"trial {self.trial_id} is left out of the ranking, the tables and exports",
            ENGINE: "the sweep cannot be resumed; its results still read from pielab's own files",
        }[self.kind]
        return f"damaged: {self.path}: {self.why}; {consequence}"


def _json_problem(text: str | None) -> str | None:
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return "not valid JSON (cut short?)"
    return None if isinstance(data, dict) else "not a JSON object"


_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml_problem(text: str | None) -> str | None:
    if text is None:
        return None
    if text and not text.endswith("\n"):
        return "its last line is cut short"
    try:  # libyaml's parser when present: the pure-Python one took 5 s of a 1,000-trial folder's read
        data = yaml.load(text, Loader=_SAFE_LOADER)
    except yaml.YAMLError:
        return "not valid YAML (cut short?)"
    return None if isinstance(data, dict) else "not a YAML mapping"


def _csv_problem(text: str | None) -> str | None:
    if text is None or text == "":
        return None
    if not text.endswith("\n"):
        return "its last line is cut short"
    rows = list(csv.reader(io.StringIO(text, newline="")))
    header = rows[0] if rows else []
    for number, row in enumerate(rows[1:], 2):
        if len(row) != len(header):
            return f"line {number} has {len(row)} fields, the header {len(header)}"
    return None


def _pickle_problem(path: SweepPath) -> str | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    # every pickle ends with the STOP opcode; one cut short (written in place when the driver died) does not
    return None if not data or data.endswith(b".") else "a pickle cut short (no STOP opcode at its end)"


def _sqlite_problem(path: SweepPath) -> str | None:
    import sqlite3

    try:
        with open(path, "rb") as f:
            if f.read(16) != b"SQLite format 3\x00":
                return "not an SQLite database"
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            answer = conn.execute("PRAGMA quick_check").fetchone()
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        return f"SQLite: {exc}"
    except OSError:
        return None
    return None if answer and answer[0] == "ok" else f"SQLite quick_check: {answer[0] if answer else 'no answer'}"


def top_level_damage(folder: SweepPath) -> list[Damage]:
    """The damaged files among ``sweep.yaml``, ``started_spec.json``, ``status.json`` and ``results.csv``."""
    found = []
    for name, problem, kind in ((SWEEP_FILE, _yaml_problem, SPEC), (STARTED_SPEC_FILE, _json_problem, SPEC),
                                (STATUS_FILE, _json_problem, REWRITTEN), (RESULTS_FILE, _csv_problem, REWRITTEN)):
        why = problem(read_text(folder / name))
        if why:
            found.append(Damage(folder / name, why, kind))
    return found


def trial_damage(trial_dir: SweepPath, texts: dict[str, str | None]) -> list[Damage]:
    """The damaged files of one trial folder, from their texts (``{file name: text or None}``, as the reader
    has them already: ``result.json``, ``metrics.csv``, ``config.yaml``)."""
    checks = {RESULT_FILE: _json_problem, METRICS_FILE: _csv_problem, CONFIG_FILE: _yaml_problem}
    return [Damage(trial_dir / name, why, TRIAL, trial_dir.name) for name, check in checks.items()
            if (why := check(texts.get(name)))]


def engine_damage(folder: SweepPath) -> list[Damage]:
    """The damaged files of Tune's experiment (``tune/``: the Tuner, the searcher's state, the experiment
    state) and of the folder's own ``optuna.db``: what ``pielab resume`` needs. A folder on object storage is
    checked for its Tune pickles only (its study lives in a database)."""
    found = []
    tune = folder / TUNE_DIR
    if not tune.is_dir():
        return found
    for path in sorted(tune.glob("*.pkl"), key=lambda p: p.name):
        why = _pickle_problem(path)
        if why:
            found.append(Damage(path, why, ENGINE))
    for path in sorted(tune.glob("experiment_state-*.json"), key=lambda p: p.name):
        text = read_text(path)
        if text is not None:
            try:
                json.loads(text)
            except ValueError:
                found.append(Damage(path, "not valid JSON (cut short?)", ENGINE))
    if not is_remote(folder) and (folder / OPTUNA_DB).is_file():
        why = _sqlite_problem(folder / OPTUNA_DB)
        if why:
            found.append(Damage(folder / OPTUNA_DB, why, ENGINE))
    return found


def describe(damage: list[Damage], limit: int = 3) -> str:
    """One line for several damaged files: the first ``limit`` paths and how many more."""
    shown = ", ".join(f"{d.path} ({d.why})" for d in damage[:limit])
    return shown + (f" and {len(damage) - limit} more" if len(damage) > limit else "")
