#!/usr/bin/env bash
# Creates .venv in the repo root and installs pielab into it (editable).
#   scripts/setup.sh          the package and its runtime dependencies
#   scripts/setup.sh --test   plus the test extra and the system packages the tests use
# Re-running is cheap: pip skips what is already installed.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[[ "${1:-}" == "--test" ]] && want_test=1

python=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    echo "setup: creating .venv with $($python --version)"
    "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
extras=""
[[ $want_test == 1 ]] && extras="[test]"
echo "setup: installing pielab${extras} into .venv (the first run takes a few minutes: torch is large)"
if ! .venv/bin/python -m pip install --progress-bar off -e ".${extras}" > .venv/pip-install.log 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" .venv/pip-install.log | tail -30 >&2
    echo "setup: pip install failed (full log: .venv/pip-install.log)" >&2
    exit 1
fi
if [[ $want_test == 1 ]]; then
    # System packages the tests drive: a real PostgreSQL server (Optuna storage), headless Chromium
    # (the HTML report), a one-node Slurm with munge (deploy/slurm/pielab.sbatch) and a C++ toolchain.
    # Installed from Debian only when missing.
    missing=()
    compgen -G "/usr/lib/postgresql/*/bin/initdb" > /dev/null || missing+=(postgresql)
    [[ -x /usr/bin/chromium ]] || missing+=(chromium)
    [[ -x /usr/sbin/slurmctld && -x /usr/sbin/slurmd && -x /usr/bin/sbatch ]] || missing+=(slurm-wlm)
    [[ -x /usr/sbin/munged && -x /usr/sbin/mungekey ]] || missing+=(munge)
    # tests/test_lstm.py checks our LSTM's C++ step loops, built below with g++ and ninja
    command -v g++ > /dev/null || missing+=(g++)
    command -v ninja > /dev/null || missing+=(ninja-build)
    if (( ${#missing[@]} )); then
        echo "setup: installing ${missing[*]} with apt-get"
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } > .venv/apt-install.log 2>&1; then
            tail -20 .venv/apt-install.log >&2
            echo "setup: apt-get install ${missing[*]} failed (run as root, or install them yourself)" >&2
            exit 1
        fi
    fi
fi
.venv/bin/python -c "import pielab, torch" || { echo "setup: pielab did not install" >&2; exit 1; }
# Our LSTM's C++ step loops, built once here so no trial pays the ~40 s compile; on failure the LSTM runs its
# Python loops (slower at small sizes), so this step warns and setup goes on.
echo "setup: building our LSTM's C++ step loops (about a minute the first time)"
.venv/bin/python -c "from pielab.models.lstm import build_extension; build_extension()" \
    || echo "setup: warning: the C++ step loops did not build; our LSTM will use its Python loops" >&2
echo "setup: done ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
