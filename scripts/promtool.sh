#!/usr/bin/env bash
# Runs Prometheus' promtool (v0.316.0, the module version of Prometheus 3.x that the Go module
# proxy serves), built the first time from the Go module proxy into the cache by
# scripts/go-tool.sh (about 5 minutes on 2 cores; later runs reuse it). `promtool.sh path`
# prints the binary's path; anything else is passed to promtool.
set -euo pipefail

PROMETHEUS_VERSION="v0.316.0"
bin="$(bash "$(dirname "${BASH_SOURCE[0]}")/go-tool.sh" install promtool \
  "github.com/prometheus/prometheus/cmd/promtool@${PROMETHEUS_VERSION}")"

if [ "${1:-}" = "path" ]; then
  printf '%s\n' "${bin}"
  exit 0
fi
exec "${bin}" "$@"
