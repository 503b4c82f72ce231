"""Each file of a sweep folder cut to half its size (what a copy cut short or a disk fault leaves) gives a defined
answer in `pielab status`, `report`, `export` and `resume`: one line naming the file, never a traceback, and
never a silent change of the best trial (the table in pielab/folder/damage.py; RELIABILITY.md lists it).

The folder is tests/data's sweep killed mid-run (2 trials completed, a432b515 the best). Commands run in this
process through `pielab.cli.main` (the console script's own entry point) to keep 40 runs fast; one case runs
through the console script itself.
"""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from pielab.cli import main
from pielab.folder import LEASE_FILE

OLD_FOLDER = Path(__file__).parent / "data" / "sweep_855f3eb_killed.tar.gz"
BEST = "a432b515"

# file (a glob in the folder) -> (what the readers say, whether resume refuses)
CASES = {
    "sweep.yaml": ("the spec is read from its copy", True),
    "started_spec.json": ("the spec is read from its copy", True),
    "status.json": ("rebuilt from the trials' records", False),
    "results.csv": ("rebuilt from the trials' records", False),
    f"trials/{BEST}/result.json": (f"trial {BEST} is left out", True),
    f"trials/{BEST}/metrics.csv": (f"trial {BEST} is left out", True),
    f"trials/{BEST}/config.yaml": (f"trial {BEST} is left out", True),
    "tune/tuner.pkl": ("cannot be resumed", True),
    "tune/searcher-state-*.pkl": ("cannot be resumed", True),
    "tune/experiment_state-*.json": ("cannot be resumed", True),
    "optuna.db": ("cannot be resumed", True),
}


def _cut(folder: Path, pattern: str) -> Path:
    path = next(folder.glob(pattern))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture
def damaged(request, tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    with tarfile.open(OLD_FOLDER) as tar:
        tar.extractall(tmp_path, filter="data")
    monkeypatch.setenv("HOME", str(tmp_path))
    folder = tmp_path / "sweep"
    return folder, _cut(folder, request.param)


def _run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        rc = main(list(args))
    except SystemExit as exc:  # argparse
        rc = int(exc.code or 0)
    out = capsys.readouterr()
    return rc, out.out, out.err


@pytest.mark.parametrize("damaged", list(CASES), indirect=True, ids=list(CASES))
def test_a_file_cut_in_half_gets_one_defined_answer_from_every_command(damaged, capsys):
    folder, cut = damaged
    said, resume_refuses = CASES[next(k for k in CASES if cut.match(k) or cut.name == k)]

    rc, out, err = _run(capsys, "status", str(folder))
    assert rc == 0 and "Traceback" not in err, err
    assert str(cut) in out and said in out, out  # the damaged file, named, with what it costs
    best_line = next(line for line in out.splitlines() if line.startswith("best so far"))
    if BEST not in best_line:  # the best trial changed: only because its own record is the damaged file, and said
        assert f"trials/{BEST}/" in str(cut) and f"{BEST} left out" in best_line, out

    rc, out, err = _run(capsys, "export", str(folder))
    assert rc == 0 and "Traceback" not in err, err
    if f"trials/{BEST}/" in str(cut):
        assert f"pielab: warning: damaged: {cut}" in err, err  # the best trial is left out, and that is said

    if resume_refuses:  # status.json and results.csv are rewritten by a resume (tests/test_old_folder.py resumes such a folder)
        rc, out, err = _run(capsys, "resume", str(folder))
        assert rc == 2, (out, err)
        error_lines = [line for line in err.splitlines() if line.startswith("pielab: error:")]
        assert len(error_lines) == 1 and "cannot resume: damaged:" in error_lines[0], err
        assert str(cut) in error_lines[0], err
        assert not (folder / LEASE_FILE).exists()  # the refusing driver let go of the folder


@pytest.mark.parametrize("damaged", [f"trials/{BEST}/result.json", "optuna.db"], indirect=True)
def test_the_report_of_a_damaged_folder_says_what_it_left_out(damaged, capsys):
    folder, cut = damaged
    rc, out, err = _run(capsys, "report", str(folder))
    assert rc == 0 and "Traceback" not in err, err
    page = (folder / "report" / "report.html").read_text()
    if cut.name == "result.json":
        assert f"pielab: warning: damaged: {cut}" in err, err
        assert f"trial {BEST} is left out" in page
        assert BEST not in (folder / "report" / "summary.csv").read_text()
    else:  # the study is only needed for the importance figure, which says why it is missing
        assert "Parameter importance" in page


@pytest.mark.parametrize("damaged", ["tune/tuner.pkl"], indirect=True)
def test_a_damaged_tuner_pickle_through_the_console_script(damaged, pielab_exe, tmp_path):
    """The case of issue 22: `pielab resume` ended in `UnpicklingError: pickle data was truncated` while
    `pielab status` said to run it."""
    folder, cut = damaged
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    shown = subprocess.run([*pielab_exe, "status", str(folder)], capture_output=True, text=True, env=env)
    assert shown.returncode == 0 and "cannot be resumed" in shown.stdout and "pielab resume" not in shown.stdout
    resumed = subprocess.run([*pielab_exe, "resume", str(folder)], capture_output=True, text=True, env=env)
    assert resumed.returncode == 2 and resumed.stderr.count("\n") == 1, resumed.stderr
    assert f"pielab: error: {folder}: cannot resume: damaged: {cut}" in resumed.stderr
    assert "pielab sweep SPEC --from" in resumed.stderr
