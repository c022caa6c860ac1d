#!/usr/bin/env bash
# Manual benchmark (not part of CI or `make test`): `sovereign-operator check` against OPA on
# the same N objects and an equivalent rule set (residency.rego: dataLocation, pinWorkloads,
# pinStorage on Pods, Deployments and PVCs). Both run end to end — read and parse the corpus,
# evaluate, print — on one CPU, and must find exactly the same violations before any time is
# reported. Usage: bench/opa/compare.sh [N]   (default 100000)
#
# Environment: OPA (an opa binary; default $SOVEREIGN_CACHE/bin-opa/opa, built from the Go
# module proxy on first use), OPA_VERSION (v1.22.3), BENCH_OUT (generated files; default
# bench/opa/out, git-ignored), BENCH_CPU (the core to pin to; 0), RUNS (5), CARGO_TARGET_DIR.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
n="${1:-100000}"
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
out="${BENCH_OUT:-${here}/out}"
cpu="${BENCH_CPU:-0}"
runs="${RUNS:-5}"
opa_version="${OPA_VERSION:-v1.22.3}"
opa="${OPA:-${cache}/bin-opa/opa}"
target="${CARGO_TARGET_DIR:-${repo}/target}"
bin="${target}/release/sovereign-operator"

say() { echo "[compare] $*" >&2; }

if [[ ! -x "${opa}" ]]; then
    say "building opa ${opa_version} into $(dirname "${opa}")"
    GOBIN="$(dirname "${opa}")" GOFLAGS=-mod=mod go install "github.com/open-policy-agent/opa@${opa_version}"
fi
say "cargo build --release"
(cd "${repo}" && cargo build --release --quiet)

say "generating ${n} objects into ${out}"
python3 "${here}/gen.py" "${n}" "${out}"
corpus="${out}/corpus.json"
rego="${here}/residency.rego"
query='data.sovereign.residency.violation'
# One core each: the engine is single-threaded; GOMAXPROCS keeps OPA's evaluation on one thread
# too (its garbage collector may still use the core the taskset allows).
pin=(taskset -c "${cpu}")
run_check=("${pin[@]}" "${bin}" check -f "${corpus}" --policies "${out}/context.json")
run_opa=(env GOMAXPROCS=1 "${pin[@]}" "${opa}" eval -d "${rego}" -d "${out}/data.json" -i "${corpus}" --format raw "${query}")

# Same verdict first: the violation sets must be identical ("Kind ns/name: rule").
rc=0
"${run_check[@]}" --output json > "${out}/check.json" || rc=$?
if (( rc > 1 )); then
    say "check failed (exit ${rc})"
    exit 2
fi
"${run_opa[@]}" > "${out}/opa.json"
python3 - "${out}/check.json" "${out}/opa.json" <<'PY'
import json, sys
check = json.load(open(sys.argv[1]))
opa = set(json.load(open(sys.argv[2])))
ours = {f"{v['kind']} {v['namespace']}/{v['name']}: {v['rule']}" for v in check["violations"]}
if len(ours) != len(check["violations"]):
    sys.exit("check reported an (object, rule) pair twice")
only_check, only_opa = sorted(ours - opa), sorted(opa - ours)
if only_check or only_opa:
    print(f"verdicts differ: {len(only_check)} only in check, {len(only_opa)} only in OPA", file=sys.stderr)
    for line in only_check[:10]:
        print(f"  check only: {line}", file=sys.stderr)
    for line in only_opa[:10]:
        print(f"  opa only:   {line}", file=sys.stderr)
    sys.exit(1)
print(f"[compare] same verdict: {len(ours)} violations in {check['objects']} objects", file=sys.stderr)
PY

# Time both (output to /dev/null: printing is part of the work, the terminal is not).
quote() { printf '%q ' "$@"; }
if command -v hyperfine > /dev/null; then
    hyperfine --warmup 1 --runs "${runs}" --ignore-failure --style basic \
        --export-json "${out}/times.json" \
        -n check "$(quote "${run_check[@]}") > /dev/null" \
        -n opa "$(quote "${run_opa[@]}") > /dev/null" >&2
    read -r t_check t_opa < <(python3 -c '
import json, sys
r = {x["command"]: x for x in json.load(open(sys.argv[1]))["results"]}
print(r["check"]["mean"], r["opa"]["mean"])' "${out}/times.json")
else
    # Best of RUNS with a plain clock.
    best() {
        local best="" start end t
        for _ in $(seq "${runs}"); do
            start=$(date +%s.%N)
            "$@" > /dev/null || true
            end=$(date +%s.%N)
            t=$(echo "${end} - ${start}" | bc -l)
            if [[ -z "${best}" ]] || (( $(echo "${t} < ${best}" | bc -l) )); then best="${t}"; fi
        done
        echo "${best}"
    }
    t_check=$(best "${run_check[@]}")
    t_opa=$(best "${run_opa[@]}")
fi

# How much of OPA's time is evaluating the query (its own timer; the rest is reading and
# converting the input, compiling and printing).
opa_eval=$(env GOMAXPROCS=1 "${pin[@]}" "${opa}" eval --metrics --format json -d "${rego}" \
    -d "${out}/data.json" -i "${corpus}" "count(${query})" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["metrics"]["timer_rego_query_eval_ns"] / 1e9)')

python3 - "${n}" "${t_check}" "${t_opa}" "${opa_eval}" <<'PY'
import sys
n, t_check, t_opa, opa_eval = int(sys.argv[1]), *map(float, sys.argv[2:])
print(f"objects: {n}")
print(f"sovereign-operator check: {t_check:.3f} s  {n / t_check:,.0f} objects/s")
print(f"opa eval:                 {t_opa:.3f} s  {n / t_opa:,.0f} objects/s"
      f"  (query evaluation alone: {opa_eval:.3f} s, {n / opa_eval:,.0f} objects/s)")
print(f"ratio (check objects/s / opa objects/s, end to end): {t_opa / t_check:.2f}")
PY
