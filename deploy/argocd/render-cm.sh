#!/usr/bin/env bash
# Writes argocd-cm-health.yaml from health/*.lua (run by `make deploy-manifests`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
{
  cat <<'HEADER'
# Argo CD health checks for the four sovereign.ai kinds: merge these keys into the argocd-cm
# ConfigMap (e.g. `kubectl -n argocd patch cm argocd-cm --patch-file
# deploy/argocd/argocd-cm-health.yaml`, or the Argo CD Helm chart's `configs.cm`).
# Generated from health/common.lua + health/<Kind>.lua by render-cm.sh (tests/deploy.rs fails when they differ);
# scripts/argocd-health.sh runs them on health/cases.json in gopher-lua, as Argo CD does.
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/part-of: argocd
data:
HEADER
  for kind in SovereignRegion InferenceBackend ResidencyPolicy TokenBudget; do
    printf '  resource.customizations.health.sovereign.ai_%s: |\n' "${kind}"
    cat health/common.lua "health/${kind}.lua" | sed -e 's/^\(.\)/    \1/'
  done
} > argocd-cm-health.yaml
