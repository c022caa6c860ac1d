#!/usr/bin/env bash
# Scale run (not a test): N regions × M backends on the local KWOK plane, RUNS times.
#
#   e2e/bench/scale.sh 10 10
#   e2e/bench/scale.sh 50 20 3
#   e2e/bench/scale.sh 100 50 3
#
# Reports, for each run on a fresh plane of its own (and, with RUNS > 1, the median and the
# spread, min–max, of each figure over the runs; the ratio is per run, floor and converge
# measured in the same run):
#   floor      seconds to server-side-apply the same objects the operator would create
#              (from `sovereign-operator render`), with kubectl, into look-alike namespaces,
#              until every gateway Deployment is Available
#   converge   seconds from starting the operator until every region is Ready with all its
#              non-parked backends ready
#   writes     API write requests the operator sent (sovereign_api_writes_total)
#   resync     writes by a restarted operator once it has reconciled everything (goal: 0)
#   peak RSS   of the operator process (VmHWM)
#   reconciles region and backend reconciles to converge, with their mean duration
#              (sovereign_reconcile_duration_seconds)
#   requests   API requests during converge by verb, from the API server's own
#              apiserver_request_total (every client: the converge poll's LIST of regions
#              every 0.5 s and the control plane's own controllers are in it too)
# Backends: every 4th is a parked vLLM model (Deployment, Service, no pods, no GPU), the rest
# external APIs; regions have no vector store and no collector, so the load is the operator's
# own objects, not KWOK pods.
set -euo pipefail

regions="${1:-10}"
backends="${2:-10}"
runs="${3:-${RUNS:-1}}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="${here}/../.."
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
export SOVEREIGN_E2E_STATE="${cache}/bench-state"
export SOVEREIGN_APISERVER_PORT=18443
export SOVEREIGN_PORT_BASE=18380
work="$(mktemp -d)"
results="${work}/results"
: > "${results}"
say() { echo "[scale $(date +%T)] $*" >&2; }
calc() { python3 -c "print($1)"; }
operator_pid=""
wrapper_pid=""
# PROFILE=<dir>: run each instance under heaptrack (<dir>/first-runN, <dir>/restart-runN, and
# heaptrack_print's peak report beside each as .txt): a heap profile of the first converge and
# of the restart, for the RSS figures. Slower; not for the timings.
start_operator() { # LOG PROFILE_NAME
  if [[ -n "${PROFILE:-}" ]]; then
    mkdir -p "${PROFILE}"
    heaptrack -o "${PROFILE}/${2}" "${operator}" run --metrics-address "127.0.0.1:${metrics_port}" > "${1}" 2>&1 &
    wrapper_pid=$!
    operator_pid=""
    until [[ -n "${operator_pid}" ]]; do
      sleep 0.2
      operator_pid=$(pgrep -P "${wrapper_pid}" -f "^${operator} run" | head -1 || true)
    done
  else
    "${operator}" run --metrics-address "127.0.0.1:${metrics_port}" > "${1}" 2>&1 &
    operator_pid=$!
    wrapper_pid=""
  fi
}
stop_operator() { # PROFILE_NAME
  kill -TERM "${operator_pid}"
  wait "${wrapper_pid:-${operator_pid}}" || true
  if [[ -n "${PROFILE:-}" ]]; then
    local file
    file=$( (ls -t "${PROFILE}/${1}".*zst "${PROFILE}/${1}".*gz 2>/dev/null || true) | head -1)
    [[ -n "${file}" ]] && heaptrack_print --print-peaks 1 --print-allocators 0 --print-temporary 0 \
      --print-leaks 0 --peak-limit 25 --sub-peak-limit 8 "${file}" > "${PROFILE}/${1}.txt" || true
  fi
}
cleanup() {
  [ -n "${operator_pid}" ] && kill "${operator_pid}" 2>/dev/null || true
  bash "${repo}/e2e/controlplane.sh" down >/dev/null 2>&1 || true
  rm -rf "${work}"
}
trap cleanup EXIT

# OPERATOR: a sovereign-operator binary (default: build this checkout with --release).
if [[ -n "${OPERATOR:-}" ]]; then
  operator="${OPERATOR}"
else
  cargo build --release --quiet --bin sovereign-operator --manifest-path "${repo}/Cargo.toml"
  operator="${CARGO_TARGET_DIR:-${repo}/target}/release/sovereign-operator"
fi
bash "${repo}/e2e/controlplane.sh" build >/dev/null

one_run() {
bash "${repo}/e2e/controlplane.sh" down >/dev/null 2>&1 || true
bash "${repo}/e2e/controlplane.sh" up >/dev/null 2>&1
eval "$(bash "${repo}/e2e/controlplane.sh" env)"
kubectl apply --server-side -f "${repo}/crds/" >/dev/null
kubectl wait --for condition=Established --timeout=60s -f "${repo}/crds/" >/dev/null

# The custom resources.
python3 - "${regions}" "${backends}" > "${work}/resources.yaml" <<'PY'
import sys
n, m = int(sys.argv[1]), int(sys.argv[2])
locations = ["europe-west9", "eu-central-1", "ap-south-1"]
docs = []
for r in range(n):
    region = f"bench-{r:03d}"
    ns = f"sovereign-{region}"
    docs.append(f"""apiVersion: sovereign.ai/v1alpha1
kind: SovereignRegion
metadata: {{name: {region}}}
spec:
  jurisdiction: EU
  locations: [{locations[r % 3]}]
  huggingFaceMirror: https://hf-mirror.eu.example.com
  # The mirror is an in-region host, and the region vouches for its providers' hosts.
  inRegionHosts: ["*.eu.example.com"]
  egress: {{hosts: ["*.eu.example.com"]}}
  gateway: {{replicas: 1}}
  vectorStore: {{engine: None}}""")
    for b in range(m):
        name = f"model-{b:03d}"
        if b % 4 == 0:
            body = """  vllm:
    model: org/model
    gpus: {count: 1}
    replicas: {min: 0, max: 1}"""
        else:
            body = f"""  external:
    provider: OpenAICompatible
    endpoint: https://llm-{b}.eu.example.com/v1
    hostingJurisdiction: FR
    upstreamModel: {name}
  pricing: {{currency: EUR, inputPer1MTokens: "1", outputPer1MTokens: "2"}}"""
        docs.append(f"""apiVersion: sovereign.ai/v1alpha1
kind: InferenceBackend
metadata: {{name: {name}, namespace: {ns}}}
spec:
  region: {region}
  modelName: {name}
{body}""")
print("\n---\n".join(docs))
PY

say "run ${1}/${runs}: ${regions} x ${backends}, floor"
# Floor: the rendered objects applied directly, into look-alike namespaces.
"${operator}" render -f "${work}/resources.yaml" | sed 's/sovereign-bench-/floor-bench-/g' > "${work}/floor.yaml"
floor_objects=$(grep -c '^kind:' "${work}/floor.yaml")
# Converged means the same for both: every gateway Deployment available.
start=$(date +%s.%N)
kubectl apply --server-side --field-manager=floor -f "${work}/floor.yaml" >/dev/null
for r in $(seq 0 $((regions - 1))); do
  kubectl wait --for=condition=Available --timeout=600s -n "$(printf 'floor-bench-%03d' "$r")" deployment/gateway >/dev/null
done
floor=$(calc "$(date +%s.%N) - ${start}")

# The operator: create the namespaces and resources, then time convergence.
for r in $(seq 0 $((regions - 1))); do printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: sovereign-bench-%03d}\n---\n' "$r"; done \
  | kubectl apply --server-side -f - >/dev/null
kubectl apply --server-side -f "${work}/resources.yaml" >/dev/null

metrics_port=18090
# apiserver_request_total as "VERB resource count" lines.
requests() {
  kubectl get --raw /metrics | awk '/^apiserver_request_total\{/ {
      v = ""; r = ""
      if (match($0, /verb="[A-Z]+"/)) v = substr($0, RSTART + 6, RLENGTH - 7)
      if (match($0, /[{,]resource="[^"]*"/)) r = substr($0, RSTART + 11, RLENGTH - 12)
      s[v " " r] += $NF }
    END { for (k in s) print k, s[k] }' | sort
}
requests > "${work}/requests-before"
say "run ${1}/${runs}: floor ${floor} s; operator (load: $(cut -d' ' -f1-3 /proc/loadavg))"
start=$(date +%s.%N)
start_operator "${work}/operator.log" "first-run${1}"
# Parked models (every 4th) are never Ready: a region has M - ceil(M/4) ready backends.
ready_backends=$((backends - (backends + 3) / 4))
converged() {
  kubectl get sreg -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status} {.status.backends.summary}{"\n"}{end}' \
    | awk -v want="${ready_backends}/${backends}" -v n="${regions}" '$1=="True" && $2==want {ok++} END {exit !(ok==n)}'
}
until converged; do
  sleep 0.5
  if ! kill -0 "${operator_pid}" 2>/dev/null; then echo "operator died; log: ${work}/operator.log" >&2; cat "${work}/operator.log" >&2; exit 1; fi
done
converge=$(calc "$(date +%s.%N) - ${start}")
requests > "${work}/requests-after"
writes() { curl -s "127.0.0.1:${metrics_port}/metrics" | awk '/^sovereign_api_writes_total/ {s+=$2} END {print s+0}'; }
reconciles() { curl -s "127.0.0.1:${metrics_port}/metrics" | awk '/^sovereign_reconciliations_total/ {s+=$2} END {print s+0}'; }
sleep 5
total_writes=$(writes)
# Reconciles and their mean duration by controller, to converge.
curl -s "127.0.0.1:${metrics_port}/metrics" > "${work}/operator-metrics"
profile=$(python3 - "${work}/operator-metrics" <<'PY'
import re, sys
sums, counts = {}, {}
for line in open(sys.argv[1]):
    m = re.match(r'sovereign_reconcile_duration_seconds_(sum|count)\{controller="([a-z]+)"\} (\S+)', line)
    if m:
        (sums if m.group(1) == "sum" else counts)[m.group(2)] = float(m.group(3))
print(" ".join(f"{c}={int(counts[c])}x{sums[c] / counts[c]:.2f}s" for c in ("region", "backend") if counts.get(c)))
PY
)
by_verb=$(python3 - "${work}/requests-before" "${work}/requests-after" <<'PY'
import collections, sys
def read(p):
    out = {}
    for line in open(p):
        f = line.split()
        if len(f) == 3:
            out[(f[0], f[1])] = float(f[2])
    return out
a, b = read(sys.argv[1]), read(sys.argv[2])
verbs = collections.Counter()
lists = collections.Counter()
for k in set(a) | set(b):
    d = b.get(k, 0) - a.get(k, 0)
    verbs[k[0]] += d
    if k[0] == "LIST":
        lists[k[1]] += d
print(" ".join(f"{v}={int(n)}" for v, n in sorted(verbs.items()) if n)
      + " | LIST " + " ".join(f"{r}={int(n)}" for r, n in lists.most_common(6) if n))
PY
)
peak_kib=$(awk '/VmHWM/ {print $2}' "/proc/${operator_pid}/status")

# Resync: a restarted operator must find nothing to write.
stop_operator "first-run${1}"
start_operator "${work}/operator2.log" "restart-run${1}"
objects=$((regions + regions * backends))
until [ "$(reconciles)" -ge "${objects}" ] 2>/dev/null; do sleep 0.5; done
sleep 5
resync_writes=$(writes)
peak2_kib=$(awk '/VmHWM/ {print $2}' "/proc/${operator_pid}/status")

stop_operator "restart-run${1}"
operator_pid=""
cp "${work}/operator.log" "${work}/operator-run${1}.log"

printf '%s regions x %s backends (%s custom resources, %s rendered objects), run %s/%s\n' "${regions}" "${backends}" "${objects}" "${floor_objects}" "${1}" "${runs}"
printf '  floor (kubectl server-side apply of the rendered objects): %.1f s\n' "${floor}"
printf '  operator converge: %.1f s (%.2fx the floor)\n' "${converge}" "$(calc "${converge} / ${floor}")"
printf '  operator API writes to converge: %s\n' "${total_writes}"
printf '  writes after a restart (resync): %s\n' "${resync_writes}"
printf '  operator peak RSS: %.1f MiB (restarted instance: %.1f MiB)\n' "$(calc "${peak_kib} / 1024")" "$(calc "${peak2_kib} / 1024")"
printf '  reconciles to converge (count x mean): %s\n' "${profile}"
printf '  API requests during converge, every client: %s\n' "${by_verb}"
printf '  load average at the end: %s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
printf 'floor=%s converge=%s ratio=%s writes=%s resync=%s rss=%s rss2=%s\n' "${floor}" "${converge}" \
  "$(calc "${converge} / ${floor}")" "${total_writes}" "${resync_writes}" \
  "$(calc "${peak_kib} / 1024")" "$(calc "${peak2_kib} / 1024")" >> "${results}"
}

for run in $(seq 1 "${runs}"); do one_run "${run}"; done
bash "${repo}/e2e/controlplane.sh" down >/dev/null 2>&1 || true

if [ "${runs}" -gt 1 ]; then
  python3 - "${results}" "${regions}" "${backends}" <<'PY'
import statistics, sys
rows = [dict(kv.split("=") for kv in line.split()) for line in open(sys.argv[1]) if line.strip()]
print(f"{sys.argv[2]} regions x {sys.argv[3]} backends: median (min-max) over {len(rows)} runs")
for key, label, fmt in [("floor", "floor s", "{:.1f}"), ("converge", "converge s", "{:.1f}"),
                        ("ratio", "converge / floor", "{:.2f}"), ("writes", "writes to converge", "{:.0f}"),
                        ("resync", "writes after restart", "{:.0f}"), ("rss", "peak RSS MiB", "{:.1f}"),
                        ("rss2", "peak RSS MiB, restarted", "{:.1f}")]:
    v = [float(r[key]) for r in rows]
    print(f"  {label:<24} {fmt.format(statistics.median(v))} ({fmt.format(min(v))}-{fmt.format(max(v))})"
          f"  runs: {' '.join(fmt.format(x) for x in v)}")
PY
fi
