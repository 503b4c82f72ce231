#!/usr/bin/env bash
# Creates .venv in the repo root and installs pielab into it (editable), every dependency at the version
# requirements.lock pins (scripts/lock.sh regenerates the lock).
#   scripts/setup.sh            the package and its runtime dependencies
#   scripts/setup.sh --test     plus the test extra and the system packages the tests use
#   scripts/setup.sh --latest   without the lock: the newest releases pyproject.toml allows (with
#                               PIELAB_VENV=.venv-latest, as scripts/check_latest.sh runs it)
# PIELAB_VENV names another venv folder (default .venv). Re-running is cheap: pip skips what is already
# installed at the wanted version.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
latest=0
for arg in "$@"; do
    case "$arg" in
        --test) want_test=1 ;;
        --latest) latest=1 ;;
        *) echo "setup: unknown option $arg (--test, --latest)" >&2; exit 2 ;;
    esac
done
venv=${PIELAB_VENV:-.venv}
py="$venv/bin/python"

python=${PYTHON:-python3}
if [[ ! -x "$py" ]]; then
    echo "setup: creating $venv with $($python --version)"
    "$python" -m venv "$venv"
fi
if [[ $latest == 1 ]]; then
    pins=(--upgrade --upgrade-strategy eager)  # every dependency at its newest allowed release
else
    # The lock as constraints, not requirements: only what pielab (and --test's extra) needs is installed,
    # each at its locked version, so a runtime install stays free of the test tools.
    pins=(--constraint requirements.lock)
fi
"$py" -m pip install --quiet "${pins[@]}" pip setuptools
extras=""
[[ $want_test == 1 ]] && extras="[test]"
echo "setup: installing pielab${extras} into $venv$([[ $latest == 1 ]] && echo ' (newest releases, no lock)' || echo ' from requirements.lock') (the first run takes a few minutes: torch is large)"
# No build isolation: the editable build uses the venv's setuptools instead of fetching one of its own.
# A pielab.egg-info left in the repo root by an older build shadows the installed metadata for anything run
# from here (importlib.metadata finds it first on sys.path): it is build output, so it goes.
rm -rf pielab.egg-info
if ! "$py" -m pip install --progress-bar off --no-build-isolation "${pins[@]}" -e ".${extras}" \
        > "$venv/pip-install.log" 2>&1; then
    grep -v "is ignored: it is neither a file nor a directory" "$venv/pip-install.log" | tail -30 >&2
    echo "setup: pip install failed (full log: $venv/pip-install.log)" >&2
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
        if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } > "$venv/apt-install.log" 2>&1; then
            tail -20 "$venv/apt-install.log" >&2
            echo "setup: apt-get install ${missing[*]} failed (run as root, or install them yourself)" >&2
            exit 1
        fi
    fi
fi
"$py" -c "import pielab, torch" || { echo "setup: pielab did not install" >&2; exit 1; }
# Our LSTM's C++ step loops, built once here so no trial pays the ~40 s compile; on failure the LSTM runs its
# Python loops (slower at small sizes), so this step warns and setup goes on.
echo "setup: building our LSTM's C++ step loops (about a minute the first time)"
"$py" -c "from pielab.models.lstm import build_extension; build_extension()" \
    || echo "setup: warning: the C++ step loops did not build; our LSTM will use its Python loops" >&2
echo "setup: done ($("$py" -c 'import torch, optuna, ray; print("torch", torch.__version__, "· optuna", optuna.__version__, "· ray", ray.__version__)'))"
