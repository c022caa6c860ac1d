#!/usr/bin/env bash
# Runs the e2e suite: build the control plane (cached), run the tests, and remove every plane
# they started, also when a step fails.
#
# The tests start their own planes (e2e/tests/harness.rs, `PLANES`): one for each test that
# needs a quiet cluster (an operator, admission policies, exact counts), one shared by the
# rest. Each has its own state directory under $SOVEREIGN_E2E_PLANES and its own ports from
# $SOVEREIGN_E2E_PORT_ROOT, so a `make demo` plane running at the same time is left alone.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
export SOVEREIGN_E2E_PLANES="${SOVEREIGN_E2E_PLANES:-${cache}/e2e-planes}"
export SOVEREIGN_E2E_PORT_ROOT="${SOVEREIGN_E2E_PORT_ROOT:-17400}"

# Every plane under the root: `controlplane.sh down` stops one and deletes its directory
# (only a directory it created). A plane a failed test kept for its logs is shown first.
down_all() {
  local state
  for state in "${SOVEREIGN_E2E_PLANES}"/*/; do
    [[ -d "${state}" ]] || continue
    if [[ "${1:-}" == report && -d "${state}/logs" ]]; then
      # A test failed and kept its plane: keep the logs, the plane goes.
      local kept="${cache}/e2e-failed-logs/$(basename "${state}")"
      rm -rf "${kept}" && mkdir -p "${kept}" && cp -r "${state}/logs/." "${kept}/"
      echo "e2e: plane $(basename "${state}") was kept by a failed test; its logs: ${kept}" >&2
    fi
    SOVEREIGN_E2E_STATE="${state%/}" bash "${here}/controlplane.sh" down || true
  done
}

bash "${here}/controlplane.sh" build
# A run starts from nothing: a plane an earlier run left would carry its objects.
down_all
if [[ -z "${SOVEREIGN_E2E_KEEP_PLANES:-}" ]]; then
  trap 'down_all report' EXIT
fi
# kubectl of the built version on PATH (the state directory does not matter for `env`).
eval "$(bash "${here}/controlplane.sh" env 2>/dev/null)"
unset KUBECONFIG # the tests name their plane's kubeconfig; none is implied
# helm renders the chart's RBAC, under which the e2e runs the operator (scripts/prereqs.sh
# builds it).
HELM="$(bash "${here}/../scripts/prereqs.sh" helm-path)/helm"
export HELM
cd "${here}/.."
cargo test --features e2e --test e2e "$@"
