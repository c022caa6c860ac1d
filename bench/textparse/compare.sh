#!/usr/bin/env bash
# Manual benchmark (not part of CI or `make test`): our exposition parser
# (src/finops/exposition.rs) against Prometheus' own text parsers — the scraper's
# `model/textparse` PromParser (v0.316.0, with and without materialising labels) and
# `common/expfmt`'s text decoder (v0.72.1) — on the same bytes, in one run: COPIES copies of the
# real LiteLLM /metrics fixture (each with other end users and cost centres, as
# benches/finops.rs builds it), about 16 MB at 10. Every parser must read the same number of
# samples with the same value sum before any speed is printed; then MiB/s of each (best of RUNS,
# parsing from memory, each pinned to one core) and the ratios.
#
# Usage: bench/textparse/compare.sh [COPIES]   (default 10)
# Environment: RUNS (20), BENCH_CPU (the core to pin to; 0), BENCH_OUT (generated files;
# default bench/textparse/out, git-ignored), CARGO_TARGET_DIR, SOVEREIGN_CACHE (the Go build
# cache: $SOVEREIGN_CACHE/go, the binary: $SOVEREIGN_CACHE/bin-textparse).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "${here}/../.." && pwd)"
copies="${1:-10}"
runs="${RUNS:-20}"
cpu="${BENCH_CPU:-0}"
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
out="${BENCH_OUT:-${here}/out}"
target="${CARGO_TARGET_DIR:-${repo}/target}"
fixture="${repo}/../shared/fixtures/litellm/metrics-before-restart.txt"
gobin="${cache}/bin-textparse"

say() { echo "[textparse] $*" >&2; }
[[ -r "${fixture}" ]] || { say "cannot read the fixture ${fixture}"; exit 2; }
[[ "${copies}" =~ ^[1-9][0-9]*$ ]] || { say "COPIES must be a positive integer, not '${copies}'"; exit 2; }

# The Go side is rebuilt when its source changes (go's own cache makes that cheap); the module
# cache is shared with scripts/promtool.sh, so Prometheus is downloaded once.
go="$(command -v go || echo /usr/local/go/bin/go)"
[[ -x "${go}" ]] || { say "Go is required to build the Prometheus side"; exit 1; }
say "go build (Prometheus model/textparse + common/expfmt)"
mkdir -p "${gobin}"
(cd "${here}" && GOMODCACHE="${cache}/go/mod" GOCACHE="${cache}/go/cache" GOPATH="${cache}/go/path" \
    GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false" CGO_ENABLED=0 \
    "${go}" build -trimpath -o "${gobin}/textparse-bench" .)
say "cargo build --release --example exposition_throughput"
(cd "${repo}" && cargo build --release --quiet --example exposition_throughput)

mkdir -p "${out}"
input="${out}/metrics-x${copies}.txt"
python3 - "${fixture}" "${copies}" "${input}" <<'PY'
import sys
fixture, copies, out = open(sys.argv[1], encoding="utf-8").read(), int(sys.argv[2]), sys.argv[3]
with open(out, "w", encoding="utf-8") as f:
    for copy in range(copies):
        f.write(fixture.replace("@example.com", f"@example{copy}.com").replace("CC-1", f"CC-{copy}1"))
PY
say "input: ${input} ($(stat -c %s "${input}") bytes), best of ${runs} runs each, pinned to CPU ${cpu}"

pin=(taskset -c "${cpu}")
{
    "${pin[@]}" "${target}/release/examples/exposition_throughput" "${input}" "${runs}"
    # GOMAXPROCS=1: one thread, like ours (the Go garbage collector still shares the core).
    GOMAXPROCS=1 "${pin[@]}" "${gobin}/textparse-bench" "${input}" "${runs}"
} > "${out}/results.txt"

python3 - "${out}/results.txt" "$(stat -c %s "${input}")" <<'PY'
import sys
rows = {}
for line in open(sys.argv[1]):
    name, *fields = line.split()
    rows[name] = dict(f.split("=", 1) for f in fields)
ours = rows["sovereign"]
for name, row in rows.items():
    if row["samples"] != ours["samples"] or abs(float(row["sum"]) - float(ours["sum"])) > 1e-9 * abs(float(ours["sum"])):
        sys.exit(f"[textparse] {name} read {row['samples']} samples (sum {row['sum']}), "
                 f"ours {ours['samples']} (sum {ours['sum']}): not the same input, no speed compared")
print(f"input: {int(sys.argv[2]) / 2**20:.1f} MiB, {ours['samples']} samples, same samples and value sum in every parser")
label = {
    "sovereign": "sovereign-operator exposition::samples (every label read)",
    "promparse": "Prometheus textparse.PromParser (Series + Labels)",
    "promparse-nolabels": "Prometheus textparse.PromParser (Series only)",
    "expfmt": "Prometheus common/expfmt text decoder",
}
for name, row in rows.items():
    print(f"{label.get(name, name):60} {float(row['mibps']):8.1f} MiB/s  ({float(row['best_s']) * 1000:.1f} ms)")
for name, row in rows.items():
    if name != "sovereign":
        print(f"ratio sovereign / {name}: {float(ours['mibps']) / float(row['mibps']):.2f}")
PY
