#!/usr/bin/env bash
# Runs the Argo CD health checks (deploy/argocd/argocd-cm-health.yaml, what argocd-cm gets)
# against deploy/argocd/health/cases.json in gopher-lua, the Lua 5.1 interpreter Argo CD
# embeds, at the version Argo CD pins (deploy/argocd/health/gopher/; its main.go says how it
# follows Argo CD's util/lua). The runner is built once by scripts/go-tool.sh (seconds).
# `argocd-health.sh CONFIGMAP CASES` runs other inputs (deploy-check's controls).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bin="$(bash scripts/go-tool.sh build argocd-health deploy/argocd/health/gopher)"
if [ "$#" -eq 0 ]; then
  set -- deploy/argocd/argocd-cm-health.yaml deploy/argocd/health/cases.json
fi
exec "${bin}" "$@"
