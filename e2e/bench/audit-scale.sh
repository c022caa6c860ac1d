#!/usr/bin/env bash
# Scale run of the residency audit (not a test; figures printed, not asserted), on a plane of
# its own:
#
#   e2e/bench/audit-scale.sh [UNRELATED] [GOVERNED] [NAMESPACES] [RUNS]   (100000 10000 500 3)
#
# Loads UNRELATED objects that no policy governs (Pods, ConfigMaps, Secrets across NAMESPACES
# namespaces; e2e/bench/audit-load.py) and GOVERNED pii ConfigMaps in sovereign-eu, with the
# eu-india example's regions and policies, then RUNS times starts the operator on that loaded
# plane, measures and stops it, and reports per run and as median (min–max) over the runs:
#   first audit   seconds from the start until the pii policy's status has its first audit
#   peak RSS      of the operator (VmHWM) after the first audit; steady RSS (VmRSS) at the end
#   requests/min  apiserver_request_total by verb, and LIST and WATCH by resource, from the API
#                 server's own /metrics, over a steady window (WINDOW s, default 120) with the
#                 operator running, next to the same window before it started (the plane's own
#                 controllers): the difference is the operator's
#   violation     seconds from a violating change (the namespace of a pii ConfigMap relabelled
#                 to an undeclared region; another namespace each run) to the ConfigMap's
#                 ResidencyViolation Event
# Goals (issue 17): no LIST in steady state, RSS < 256 MiB, violation within 5 s.
#
# Environment: OPERATOR (a sovereign-operator binary; default: build this checkout with
# --release), WINDOW, SOVEREIGN_CACHE; the plane's ports AUDIT_SCALE_APISERVER_PORT (22490) and
# AUDIT_SCALE_PORT_BASE (22480), its state $SOVEREIGN_CACHE/bench-audit-state.
# AUDIT_SCALE_KEEP=1 leaves the loaded plane up at the end, and a later run with it set finds it
# (same sizes: the state's `loaded` file) and skips the load, which takes minutes to tens of
# minutes; RUNS=0 only loads. Point kubectl or a profiler at the kept plane with
#   SOVEREIGN_E2E_STATE=$SOVEREIGN_CACHE/bench-audit-state SOVEREIGN_APISERVER_PORT=22490 \
#     SOVEREIGN_PORT_BASE=22480 e2e/controlplane.sh env
# and take it down the same way with `down`.
set -euo pipefail

unrelated="${1:-100000}"
governed="${2:-10000}"
namespaces="${3:-500}"
runs="${4:-${RUNS:-3}}"
window="${WINDOW:-120}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
export SOVEREIGN_E2E_STATE="${cache}/bench-audit-state"
export SOVEREIGN_APISERVER_PORT="${AUDIT_SCALE_APISERVER_PORT:-22490}"
export SOVEREIGN_PORT_BASE="${AUDIT_SCALE_PORT_BASE:-22480}"
metrics_port=$((SOVEREIGN_PORT_BASE + 9))
work="$(mktemp -d)"
say() { echo "[audit-scale $(date +%T)] $*" >&2; }
calc() { python3 -c "print(round($1, 1))"; }
operator_pid=""
keep="${AUDIT_SCALE_KEEP:-0}"
sizes="${unrelated} ${governed} ${namespaces}"
cleanup() {
  [ -n "${operator_pid}" ] && kill "${operator_pid}" 2>/dev/null || true
  if [[ "${keep}" == 1 ]]; then
    say "plane kept (AUDIT_SCALE_KEEP=1): state ${SOVEREIGN_E2E_STATE}"
  else
    bash "${repo}/e2e/controlplane.sh" down >/dev/null 2>&1 || true
  fi
  rm -rf "${work}"
}
trap cleanup EXIT

if [[ -z "${OPERATOR:-}" ]]; then
  cargo build --release --quiet --bin sovereign-operator --manifest-path "${repo}/Cargo.toml"
  OPERATOR="${CARGO_TARGET_DIR:-${repo}/target}/release/sovereign-operator"
fi
bash "${repo}/e2e/controlplane.sh" build >/dev/null
# A kept plane with these sizes loaded (and still answering) is used as it is.
reuse=0
if [[ "${keep}" == 1 && "$(cat "${SOVEREIGN_E2E_STATE}/loaded" 2>/dev/null)" == "${sizes}" ]]; then
  eval "$(bash "${repo}/e2e/controlplane.sh" env)"
  kubectl get --raw /readyz >/dev/null 2>&1 && reuse=1
fi
if [[ "${reuse}" == 1 ]]; then
  say "reusing the kept plane (${sizes} loaded)"
else
bash "${repo}/e2e/controlplane.sh" down >/dev/null 2>&1 || true
bash "${repo}/e2e/controlplane.sh" up >/dev/null 2>&1
eval "$(bash "${repo}/e2e/controlplane.sh" env)"
kubectl apply --server-side -f "${repo}/crds/" >/dev/null
kubectl wait --for condition=Established --timeout=60s -f "${repo}/crds/" >/dev/null
ex="${repo}/deploy/examples/eu-india"
kubectl apply --server-side -f "${ex}/00-namespaces.yaml" -f "${ex}/10-region-eu.yaml" \
  -f "${ex}/10-region-in.yaml" -f "${ex}/30-policies.yaml" >/dev/null

say "loading ${unrelated} unrelated + ${governed} governed objects over ${namespaces} namespaces"
python3 "${here}/audit-load.py" "${SOVEREIGN_E2E_STATE}" "${unrelated}" "${governed}" "${namespaces}"
echo "${sizes}" > "${SOVEREIGN_E2E_STATE}/loaded"
fi
[[ "${runs}" == 0 ]] && exit 0

# apiserver_request_total (every client) as "VERB group/resource count" lines.
requests() {
  kubectl get --raw /metrics | awk '/^apiserver_request_total\{/ {
      v = ""; r = ""; g = ""
      if (match($0, /verb="[A-Z]+"/)) v = substr($0, RSTART + 6, RLENGTH - 7)
      if (match($0, /[{,]resource="[^"]*"/)) r = substr($0, RSTART + 11, RLENGTH - 12)
      if (match($0, /[{,]group="[^"]*"/)) g = substr($0, RSTART + 8, RLENGTH - 9)
      s[v " " g "/" r] += $NF }
    END { for (k in s) print k, s[k] }' | sort
}
# Per minute over a window: "by verb" totals, and LIST and WATCH by resource, as key=value.
per_minute() { # before-file after-file seconds
  python3 - "$1" "$2" "$3" <<'PY'
import collections, sys
def read(p):
    out = {}
    for line in open(p):
        f = line.split()
        if len(f) == 3:
            out[(f[0], f[1])] = float(f[2])
    return out
a, b, s = read(sys.argv[1]), read(sys.argv[2]), float(sys.argv[3])
delta = {k: (b.get(k, 0) - a.get(k, 0)) * 60 / s for k in set(a) | set(b)}
verbs = collections.defaultdict(float)
for (verb, _), v in delta.items():
    verbs[verb] += v
print("  ".join(f"{v}={n:.1f}" for v, n in sorted(verbs.items())))
for verb in ("LIST", "WATCH", "GET"):
    rows = sorted(((n, r) for (v, r), n in delta.items() if v == verb and n > 0.05), reverse=True)
    if rows:
        print(f"    {verb} by resource: " + "  ".join(f"{r.lstrip('/')}={n:.1f}" for n, r in rows))
PY
}
# The LIST rate of a window, every resource, per minute (one number for the summary).
list_rate() { # before-file after-file seconds
  python3 - "$1" "$2" "$3" <<'PY'
import sys
def total(p):
    return sum(float(l.split()[2]) for l in open(p) if l.split()[:1] == ["LIST"])
print(f"{(total(sys.argv[2]) - total(sys.argv[1])) * 60 / float(sys.argv[3]):.1f}")
PY
}

say "baseline window (${window} s) without the operator"
requests > "${work}/base0"; sleep "${window}"; requests > "${work}/base1"

results="${work}/results"
: > "${results}"
base_lists=$(list_rate "${work}/base0" "${work}/base1" "${window}")

one_run() {
local run=$1 ns prior
# Each run's violation is in a namespace no earlier run touched, also across runs on a kept
# plane (an earlier Event would end the wait at once).
prior=$(cat "${SOVEREIGN_E2E_STATE}/runs-done" 2>/dev/null || echo 0)
ns=$(printf 'scale-%03d' "$((prior % namespaces))")
echo "$((prior + 1))" > "${SOVEREIGN_E2E_STATE}/runs-done"
# The previous run's audit time would end the wait below at once: clear it, so that the first
# pass of this run writes it again.
kubectl patch residencypolicy pii-home-region --subresource=status --type=merge \
  -p '{"status":{"lastAuditTime":null}}' >/dev/null
say "run ${run}/${runs}: starting the operator"
start=$(date +%s.%N)
"${OPERATOR}" run --metrics-address "127.0.0.1:${metrics_port}" > "${work}/operator.log" 2>&1 &
operator_pid=$!
until kubectl get residencypolicy pii-home-region -o jsonpath='{.status.lastAuditTime}' 2>/dev/null | grep -q .; do
  kill -0 "${operator_pid}" || { tail -20 "${work}/operator.log" >&2; exit 1; }
  sleep 0.5
done
first=$(python3 -c "import time; print(f'{time.time() - ${start}:.1f}')")
peak_kib=$(awk '/VmHWM/ {print $2}' "/proc/${operator_pid}/status")
say "first audit after ${first} s; settling 30 s"
sleep 30

say "steady window (${window} s) with the operator"
requests > "${work}/op0"; sleep "${window}"; requests > "${work}/op1"
steady_kib=$(awk '/VmRSS/ {print $2}' "/proc/${operator_pid}/status")

# A violation admission cannot see: a pii ConfigMap admitted in a namespace placed in eu, then
# the namespace relabelled to a region nobody declared (Namespaces are not admitted; the audit
# re-judges the namespace's objects).
kubectl label namespace "${ns}" sovereign.ai/region=eu --overwrite >/dev/null
kubectl create configmap leak -n "${ns}" --dry-run=client -o yaml |
  kubectl label --local -f - sovereign.ai/data-class=pii -o yaml | kubectl apply -f - >/dev/null
sleep 5
say "a violating change (namespace ${ns})"
t0=$(date +%s.%N)
kubectl label namespace "${ns}" sovereign.ai/region=nowhere --overwrite >/dev/null
until kubectl get events.events.k8s.io -n "${ns}" -o jsonpath='{range .items[*]}{.reason}/{.regarding.name}{"\n"}{end}' 2>/dev/null | grep -q '^ResidencyViolation/leak$'; do
  sleep 0.1
  if python3 -c "import sys,time; sys.exit(0 if time.time() - ${t0} > 120 else 1)"; then
    say "no Event after 120 s"; break
  fi
done
violation=$(python3 -c "import time; print(f'{time.time() - ${t0}:.2f}')")
peak_end_kib=$(awk '/VmHWM/ {print $2}' "/proc/${operator_pid}/status")
count=$(kubectl get residencypolicy pii-home-region -o jsonpath='{.status.violationCount}')
kill -TERM "${operator_pid}"; wait "${operator_pid}" || true
operator_pid=""
cp "${work}/operator.log" "${work}/operator-run${run}.log"
op_lists=$(list_rate "${work}/op0" "${work}/op1" "${window}")

echo "run ${run}/${runs}"
echo "  objects:           $((unrelated + governed + namespaces)) loaded (${unrelated} unrelated, ${governed} governed, ${namespaces} namespaces)"
echo "  first audit:       ${first} s after start (pii-home-region violationCount now ${count})"
echo "  peak RSS:          $((peak_kib / 1024)) MiB at the first audit, $((peak_end_kib / 1024)) MiB by the end"
echo "  steady RSS:        $((steady_kib / 1024)) MiB (after the steady window)"
echo "  requests/min, every client, without the operator: $(per_minute "${work}/base0" "${work}/base1" "${window}")"
echo "  requests/min, every client, with the operator:    $(per_minute "${work}/op0" "${work}/op1" "${window}")"
echo "  violation → Event: ${violation} s"
printf 'first=%s peak=%s peak_end=%s steady=%s lists=%s violation=%s\n' "${first}" \
  "$((peak_kib / 1024))" "$((peak_end_kib / 1024))" "$((steady_kib / 1024))" \
  "$(calc "${op_lists} - ${base_lists}")" "${violation}" >> "${results}"
}

for run in $(seq 1 "${runs}"); do one_run "${run}"; done

python3 - "${results}" <<'PY'
import statistics, sys
rows = [dict(kv.split("=") for kv in line.split()) for line in open(sys.argv[1]) if line.strip()]
print(f"median (min-max) over {len(rows)} runs")
for key, label, fmt in [("first", "first audit s", "{:.1f}"), ("peak", "peak RSS MiB (first audit)", "{:.0f}"),
                        ("peak_end", "peak RSS MiB (end)", "{:.0f}"), ("steady", "steady RSS MiB", "{:.0f}"),
                        ("lists", "operator LIST/min", "{:.1f}"), ("violation", "violation -> Event s", "{:.2f}")]:
    v = [float(r[key]) for r in rows]
    print(f"  {label:<28} {fmt.format(statistics.median(v))} ({fmt.format(min(v))}-{fmt.format(max(v))})"
          f"  runs: {' '.join(fmt.format(x) for x in v)}")
PY
