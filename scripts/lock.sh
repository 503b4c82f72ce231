#!/usr/bin/env bash
# Regenerates requirements.lock: every package (direct and transitive) that pielab and its extras
# (test, dashboard, cluster) install, each at one exact version. scripts/setup.sh installs from it,
# so the README's two commands get the versions the tests last passed with on every day.
#
#   bash scripts/lock.sh            re-resolve everything to the newest releases pyproject.toml allows
#   bash scripts/lock.sh -P optuna  move one package (pip-compile's --upgrade-package), keep the rest
#
# When: after a change to the dependencies in pyproject.toml, and when scripts/check_latest.sh shows that
# the newest releases pass (then commit the new lock together with whatever made them pass).
# scripts/lock.in holds what the lock adds to pyproject.toml (the torch release, pip itself).
# pip-compile (pip-tools) runs from its own venv under .venv-tools, never from .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if [[ ! -x .venv-tools/bin/pip-compile ]]; then
    "$python" -m venv .venv-tools
    .venv-tools/bin/python -m pip install --quiet --upgrade pip "pip-tools>=7.4"
fi
upgrade=(--upgrade)
if [[ "${1:-}" == "-P" ]]; then
    upgrade=(--upgrade-package "${2:?-P takes a package name}")
fi
CUSTOM_COMPILE_COMMAND="bash scripts/lock.sh" .venv-tools/bin/pip-compile --quiet "${upgrade[@]}" \
    --strip-extras --allow-unsafe --no-emit-index-url --no-emit-find-links \
    --extra test --extra dashboard --extra cluster \
    --output-file requirements.lock pyproject.toml scripts/lock.in
echo "lock: requirements.lock holds $(grep -c '==' requirements.lock) pinned packages"
