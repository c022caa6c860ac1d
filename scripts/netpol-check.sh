#!/usr/bin/env bash
# Runs scripts/netpol-check (a small Go program over cyclonus' NetworkPolicy engine) on
# POLICIES.json CASES.json and prints its verdicts. Builds it the first time, from the Go module
# proxy, into the cache (a few minutes on 2 cores; later runs reuse it). Fails — never skips —
# when Go is missing or the build fails. `netpol-check.sh path` prints the binary's path.
#
# Cache: ${SOVEREIGN_CACHE:-$HOME/.cache/sovereign-operator}/bin/netpol-check-<source hash>/
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
src="${here}/netpol-check"
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
# The directory names the exact source, so editing main.go or the pins rebuilds.
stamp="$(cat "${src}/main.go" "${src}/go.mod" "${src}/go.sum" | sha256sum | cut -c1-16)"
dir="${cache}/bin/netpol-check-${stamp}"
bin="${dir}/netpol-check"

if [ ! -x "${bin}" ]; then
  go="$(command -v go || echo /usr/local/go/bin/go)"
  [ -x "${go}" ] || { echo "netpol-check.sh: Go is required to build the policy checker" >&2; exit 1; }
  mkdir -p "${cache}/bin"
  exec 9>"${cache}/bin/netpol-check.lock"
  flock 9
  if [ ! -x "${bin}" ]; then
    echo "netpol-check.sh: building the NetworkPolicy checker into ${dir} (once)" >&2
    mkdir -p "${dir}"
    (cd "${src}" && GOMODCACHE="${cache}/go/mod" GOCACHE="${cache}/go/cache" \
      GOPATH="${cache}/go/path" GOSUMDB=off GOTOOLCHAIN=local \
      GOFLAGS="-mod=readonly -buildvcs=false -p=2" CGO_ENABLED=0 \
      "${go}" build -o "${bin}.tmp" . && mv "${bin}.tmp" "${bin}")
  fi
fi

if [ "${1:-}" = "path" ]; then
  printf '%s\n' "${bin}"
  exit 0
fi
exec "${bin}" "$@"
