#!/usr/bin/env bash
# Heap profile of the operator on the plane e2e/bench/audit-scale.sh keeps (not a test):
#
#   AUDIT_SCALE_KEEP=1 RUNS=0 e2e/bench/audit-scale.sh     # load once, keep the plane
#   OPERATOR=<binary> e2e/bench/audit-profile.sh OUT [STEADY]
#
# Runs OPERATOR under heaptrack (`heaptrack -o OUT`) against the kept plane until the pii
# policy's first audit, then STEADY seconds more (default 60), stops it with SIGTERM and
# prints heaptrack_print's summary (peak heap, top peak consumers) to OUT.txt. The figures
# are the allocator's view (live heap by call site), not RSS: RSS adds what the allocator
# keeps of freed memory.
set -euo pipefail
out="${1:?usage: audit-profile.sh OUT [STEADY]}"
steady="${2:-60}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
export SOVEREIGN_E2E_STATE="${cache}/bench-audit-state"
export SOVEREIGN_APISERVER_PORT="${AUDIT_SCALE_APISERVER_PORT:-22490}"
export SOVEREIGN_PORT_BASE="${AUDIT_SCALE_PORT_BASE:-22480}"
: "${OPERATOR:?set OPERATOR to a sovereign-operator binary (built with debug symbols for call sites)}"
eval "$(bash "${repo}/e2e/controlplane.sh" env)"
kubectl get --raw /readyz >/dev/null || { echo "no kept plane: run audit-scale.sh with AUDIT_SCALE_KEEP=1" >&2; exit 2; }
kubectl patch residencypolicy pii-home-region --subresource=status --type=merge \
  -p '{"status":{"lastAuditTime":null}}' >/dev/null
start=$(date +%s)
heaptrack -o "${out}" "${OPERATOR}" run --metrics-address "127.0.0.1:$((SOVEREIGN_PORT_BASE + 9))" \
  > "${out}.log" 2>&1 &
wrapper=$!
until kubectl get residencypolicy pii-home-region -o jsonpath='{.status.lastAuditTime}' 2>/dev/null | grep -q .; do
  kill -0 "${wrapper}" 2>/dev/null || { tail -20 "${out}.log" >&2; exit 1; }
  sleep 1
done
echo "first audit after $(($(date +%s) - start)) s under heaptrack; ${steady} s more" >&2
sleep "${steady}"
# heaptrack's script runs the operator as its child: signal the operator itself.
child=$(pgrep -P "${wrapper}" -f "^${OPERATOR} run" | head -1 || true)
[[ -n "${child}" ]] && kill -TERM "${child}"
wait "${wrapper}" || true
file=$( (ls -t "${out}".*zst "${out}".*gz "${out}" 2>/dev/null || true) | head -1)
heaptrack_print --print-peaks 1 --print-allocators 0 --print-temporary 0 --print-leaks 0 \
  --peak-limit 25 --sub-peak-limit 8 "${file}" > "${out}.txt"
grep -E "^(peak heap memory consumption|peak RSS|total memory leaked|calls to allocation)" "${out}.txt" >&2 || true
echo "report: ${out}.txt" >&2
