#!/usr/bin/env bash
# Creates, once, the Python venv with the real LiteLLM proxy the gateway config is proven on
# (e2e/tests/litellm.rs), and prints the path of its python. Pinned: requirements.txt names
# what is wanted, constraints.txt pins every package of the resolved set. A second run finds
# the venv complete and returns at once; a half-built venv (interrupted run) is rebuilt.
#
# Cache: ${SOVEREIGN_CACHE:-$HOME/.cache/sovereign-operator}/litellm-venv-1.108.7
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
venv="${cache}/litellm-venv-1.108.7"
python="${PYTHON:-python3}"
# The stamp names the exact pin set, so changing a pin rebuilds the venv.
stamp_wanted="$(cat "${here}/requirements.txt" "${here}/constraints.txt" | sha256sum | cut -c1-16)"

mkdir -p "${cache}"
# Two test processes may start at once: one builds, the other waits for it.
exec 9>"${cache}/litellm-venv.lock"
flock 9

if [[ -x "${venv}/bin/litellm" && "$(cat "${venv}/.sovereign-complete" 2>/dev/null)" == "${stamp_wanted}" ]]; then
    echo "${venv}/bin/python"
    exit 0
fi

echo "setup.sh: creating ${venv} (litellm[proxy]==1.108.7, a few minutes)" >&2
rm -rf "${venv}"
"${python}" -m venv "${venv}"
"${venv}/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "${here}/requirements.txt" -c "${here}/constraints.txt" >&2
LITELLM_LOCAL_MODEL_COST_MAP=True "${venv}/bin/litellm" --version >&2
echo "${stamp_wanted}" >"${venv}/.sovereign-complete"
echo "${venv}/bin/python"
