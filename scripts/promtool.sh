#!/usr/bin/env bash
# Runs Prometheus' promtool (v0.316.0, the module version of Prometheus 3.x that the Go module
# proxy serves), building it the first time from the Go module proxy into the cache (about
# 5 minutes on 2 cores; later runs reuse it). Fails — never skips — when Go is missing or the
# build fails. `promtool.sh path` prints the binary's path; anything else is passed to promtool.
#
# Cache: ${SOVEREIGN_CACHE:-$HOME/.cache/sovereign-operator}/bin/promtool-v0.316.0/
set -euo pipefail

PROMETHEUS_VERSION="v0.316.0"
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
dir="${cache}/bin/promtool-${PROMETHEUS_VERSION}"
bin="${dir}/promtool"

if [ ! -x "${bin}" ]; then
  go="$(command -v go || echo /usr/local/go/bin/go)"
  [ -x "${go}" ] || { echo "promtool.sh: Go is required to build promtool" >&2; exit 1; }
  mkdir -p "${cache}/bin"
  exec 9>"${cache}/bin/promtool.lock"
  flock 9
  if [ ! -x "${bin}" ]; then
    echo "promtool.sh: building promtool ${PROMETHEUS_VERSION} into ${dir} (once, ~5 min)" >&2
    mkdir -p "${dir}"
    GOMODCACHE="${cache}/go/mod" GOCACHE="${cache}/go/cache" GOPATH="${cache}/go/path" \
      GOSUMDB=off GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false -p=2" CGO_ENABLED=0 \
      GOBIN="${dir}" "${go}" install \
      "github.com/prometheus/prometheus/cmd/promtool@${PROMETHEUS_VERSION}"
  fi
fi

if [ "${1:-}" = "path" ]; then
  printf '%s\n' "${bin}"
  exit 0
fi
exec "${bin}" "$@"
