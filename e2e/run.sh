#!/usr/bin/env bash
# Runs the e2e suite on its own control plane: build (cached) → up → tests → down, and down
# also when a step fails. It uses its own state directory and ports, so a `make demo` plane
# that is running at the same time is left alone.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
export SOVEREIGN_E2E_STATE="${SOVEREIGN_E2E_TEST_STATE:-${cache}/e2e-test-state}"
export SOVEREIGN_APISERVER_PORT="${SOVEREIGN_E2E_TEST_APISERVER_PORT:-17443}"
export SOVEREIGN_PORT_BASE="${SOVEREIGN_E2E_TEST_PORT_BASE:-17380}"

bash "${here}/controlplane.sh" build
trap 'bash "${here}/controlplane.sh" down' EXIT
bash "${here}/controlplane.sh" up
eval "$(bash "${here}/controlplane.sh" env)"
# helm renders the chart's RBAC, under which the e2e runs the operator (scripts/prereqs.sh
# builds it).
HELM="$(bash "${here}/../scripts/prereqs.sh" helm-path)/helm"
export HELM
cd "${here}/.."
cargo test --features e2e --test e2e
