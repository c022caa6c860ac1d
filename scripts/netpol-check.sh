#!/usr/bin/env bash
# Runs scripts/netpol-check (a small Go program over cyclonus' NetworkPolicy engine) on
# POLICIES.json CASES.json and prints its verdicts, built the first time from the Go module
# proxy into the cache by scripts/go-tool.sh (a few minutes on 2 cores; later runs reuse it).
# `netpol-check.sh path` prints the binary's path.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
bin="$(bash "${here}/go-tool.sh" build netpol-check "${here}/netpol-check")"

if [ "${1:-}" = "path" ]; then
  printf '%s\n' "${bin}"
  exit 0
fi
exec "${bin}" "$@"
