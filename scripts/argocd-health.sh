#!/usr/bin/env bash
# Runs the Argo CD health checks (deploy/argocd/argocd-cm-health.yaml, what argocd-cm gets)
# against deploy/argocd/health/cases.json in gopher-lua, the Lua 5.1 interpreter Argo CD
# embeds, at the version Argo CD pins (deploy/argocd/health/gopher/, its main.go says how it
# follows Argo CD's util/lua). The runner is built once from the Go module proxy into the cache
# (a few seconds; keyed by its sources, so an edit rebuilds it). Fails — never skips — when Go
# is missing or the build fails.
#
# `argocd-health.sh CONFIGMAP CASES` runs other inputs (deploy-check's controls).
#
# Cache: ${SOVEREIGN_CACHE:-$HOME/.cache/sovereign-operator}/bin/argocd-health-<hash>/
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

src=deploy/argocd/health/gopher
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
hash="$(cat "${src}/go.mod" "${src}/go.sum" "${src}/main.go" | sha256sum | cut -c1-12)"
dir="${cache}/bin/argocd-health-${hash}"
bin="${dir}/argocd-health"

if [ ! -x "${bin}" ]; then
  go="$(command -v go || echo /usr/local/go/bin/go)"
  [ -x "${go}" ] || { echo "argocd-health.sh: Go is required to build the gopher-lua runner" >&2; exit 1; }
  mkdir -p "${dir}"
  echo "argocd-health.sh: building the gopher-lua runner into ${dir} (once)" >&2
  (cd "${src}" && GOMODCACHE="${cache}/go/mod" GOCACHE="${cache}/go/cache" GOPATH="${cache}/go/path" \
    GOSUMDB=off GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false -p=2" CGO_ENABLED=0 \
    "${go}" build -o "${bin}.tmp" . && mv "${bin}.tmp" "${bin}")
fi

if [ "$#" -eq 0 ]; then
  set -- deploy/argocd/argocd-cm-health.yaml deploy/argocd/health/cases.json
fi
exec "${bin}" "$@"
