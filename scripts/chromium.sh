#!/usr/bin/env bash
# Prints the path of a headless-capable Chromium from Debian (`apt-get install chromium`),
# installing it first when missing. Idempotent: quick when it is present. Used by the evidence
# HTML test (tests/evidence_html.rs), which fails (never skips) when this script fails.
set -euo pipefail

for candidate in "${SOVEREIGN_CHROMIUM:-}" /usr/bin/chromium /usr/bin/chromium-browser; do
  if [ -n "${candidate}" ] && [ -x "${candidate}" ]; then
    printf '%s\n' "${candidate}"
    exit 0
  fi
done

echo "chromium.sh: installing Debian's chromium" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
# A lock held by a concurrent apt run: wait for it rather than failing.
for _ in $(seq 1 60); do
  if $sudo apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq chromium >&2; then
    break
  fi
  sleep 5
done
if [ ! -x /usr/bin/chromium ]; then
  echo "chromium.sh: chromium could not be installed (apt-get install chromium failed)" >&2
  exit 1
fi
printf '%s\n' /usr/bin/chromium
