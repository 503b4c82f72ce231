#!/usr/bin/env bash
# Tries pielab on the newest releases that pyproject.toml allows, in a venv of its own (.venv-latest), so a
# breaking release is found here before a user who installs pielab today finds it.
#   bash scripts/check_latest.sh                  set up .venv-latest, list what differs from the lock, run the tests
#   bash scripts/check_latest.sh tests/test_pareto.py -x    the same, with these pytest arguments
# Exit status: pytest's. When it passes, `bash scripts/lock.sh` moves the lock to these versions.
# Where pip is capped (this workplace's /etc/xdg/pip holds torch at the release on its disk) the cap
# still applies: the list below shows what was really installed.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${PIELAB_VENV:-.venv-latest}
PIELAB_VENV="$venv" bash scripts/setup.sh --test --latest
echo "check_latest: releases that differ from requirements.lock (locked -> installed):"
"$venv/bin/python" - <<'PY'
import re
from importlib.metadata import distributions

def norm(name):
    return re.sub(r"[-_.]+", "-", name).lower()

locked = {}
for line in open("requirements.lock"):
    m = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
    if m:
        locked[norm(m.group(1))] = m.group(2)
installed = {norm(d.metadata["Name"]): d.version for d in distributions()}
moved = [(n, locked[n], v) for n, v in sorted(installed.items()) if n in locked and locked[n] != v]
new = [(n, v) for n, v in sorted(installed.items()) if n not in locked and n != "pielab"]
for n, old, v in moved:
    print(f"  {n} {old} -> {v}")
for n, v in new:
    print(f"  {n} (not in the lock) {v}")
if not moved and not new:
    print("  none: the lock is at the newest releases")
PY
args=("$@")
(( ${#args[@]} )) || args=(-q)
# The one test that holds the venv to the lock is the lock's own check: here the venv is newer on purpose.
args+=(--deselect tests/test_lock.py::test_the_lock_pins_everything_pielab_and_its_tests_need_at_the_installed_version)
echo "check_latest: $venv/bin/python -m pytest ${args[*]}"
exec "$venv/bin/python" -m pytest "${args[@]}"
