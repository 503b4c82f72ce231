"""The project installs from requirements.lock: every package that pielab and its test extra need, direct
and transitive, is pinned there, and the venv running the tests holds exactly the pinned versions.

A range in pyproject.toml alone let optuna 5.1.0 in on the day a user installed pielab, and it broke every
multi-objective sweep; the lock is what scripts/setup.sh installs, scripts/check_latest.sh tries the newest.
"""

from __future__ import annotations

import re
import tomllib
from importlib.metadata import PackageNotFoundError, distribution

from packaging.requirements import Requirement

from helpers import REPO

LOCK = REPO / "requirements.lock"


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
        if m:
            pins[norm(m.group(1))] = m.group(2)
    return pins


def needed(root: str, extras: tuple[str, ...]) -> dict[str, set[str]]:
    """Every distribution that ``root[extras]`` needs here (markers evaluated), with who needs it."""
    seen: dict[str, set[str]] = {}
    todo = [(root, extras, "")]
    while todo:
        name, want, parent = todo.pop()
        key = norm(name)
        first = key not in seen
        seen.setdefault(key, set()).add(parent)
        if not first and not want:
            continue
        for text in distribution(name).requires or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in want] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            todo.append((req.name, tuple(sorted(req.extras)), key))
    return seen


def test_the_lock_pins_everything_pielab_and_its_tests_need_at_the_installed_version():
    pins = locked()
    assert len(pins) > 100, "requirements.lock looks empty: regenerate it with bash scripts/lock.sh"
    problems = []
    for name, parents in sorted(needed("pielab", ("test",)).items()):
        if name == "pielab":
            continue
        try:
            version = distribution(name).version
        except PackageNotFoundError:
            problems.append(f"{name} (needed by {', '.join(sorted(parents))}) is not installed")
            continue
        if name not in pins:
            problems.append(f"{name} {version} (needed by {', '.join(sorted(parents))}) is not in requirements.lock")
        elif pins[name] != version:
            problems.append(f"{name}: installed {version}, locked {pins[name]}")
    assert not problems, ("the venv is not the lock (bash scripts/setup.sh --test installs it; bash scripts/lock.sh "
                          "regenerates it after a change to pyproject.toml):\n  " + "\n  ".join(problems))


def test_pyproject_keeps_ranges_and_the_lock_says_how_it_is_made():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    deps = project["dependencies"] + [d for ds in project["optional-dependencies"].values() for d in ds]
    pinned = [d for d in deps if "==" in d]
    assert not pinned, f"pyproject.toml pins {pinned}: keep ranges there (users resolve them), pins in the lock"
    head = LOCK.read_text().split("\n\n", 1)[0]
    assert "bash scripts/lock.sh" in head, "requirements.lock must name the command that regenerates it"
    for dep in deps:  # every direct dependency is in the lock
        assert norm(Requirement(dep).name) in locked(), f"{dep} is not in requirements.lock (bash scripts/lock.sh)"


def test_the_first_command_installs_what_pielab_dashboard_needs():
    """`bash scripts/setup.sh` alone (no extra) installs optuna-dashboard: the README shows `pielab dashboard`
    beside `status` and `resume`, and it once said "optuna-dashboard is not installed" after that command."""
    assert "optuna-dashboard" in needed("pielab", ()), "optuna-dashboard must be a main dependency of pielab"
