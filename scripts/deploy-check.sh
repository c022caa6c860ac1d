#!/usr/bin/env bash
# Checks the deployment artefacts without a cluster (run by `make test`, via `make deploy-check`):
#   - helm lint (strict) and helm template of the chart, with default and per-jurisdiction values;
#     values.schema.json refuses bad values; the RBAC has no wildcard;
#   - deploy/kustomize/base/operator.yaml is the chart's current output (`make deploy-manifests`);
#   - the kustomize overlays build (kubectl kustomize) and add their --region;
#   - the Argo CD health checks pass their cases in gopher-lua, set up as Argo CD runs them
#     (scripts/argocd-health.sh);
#   - the alert rules pass their promtool unit tests (deploy/monitoring/alerts_test.yaml), as
#     written and as the chart's PrometheusRule renders them (promtool built by
#     scripts/promtool.sh into the cache), and a rule with a changed threshold fails them.
# The API server's verdict on the same manifests is in the e2e suite (e2e/tests/chart.rs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

HELM="${HELM:-$(bash scripts/prereqs.sh helm-path)/helm}"
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
KUBECTL="${KUBECTL:-$(command -v kubectl || echo "${cache}/bin/kubectl-v1.36.3/kubectl")}"
chart=charts/sovereign-operator
# The chart requires Kubernetes >= 1.33; offline, helm assumes an older version.
KUBE_VERSION=1.33.0
work="$(mktemp -d)"
trap 'rm -rf "${work}"' EXIT
fail() { echo "deploy-check: $*" >&2; exit 1; }

"${HELM}" version --short
"${HELM}" lint --strict "${chart}"
"${HELM}" lint --strict "${chart}" --set 'regions={eu}' \
  --set serviceMonitor.enabled=true --set prometheusRule.enabled=true
"${HELM}" template --kube-version "${KUBE_VERSION}" sovereign-operator "${chart}" --namespace sovereign-system --include-crds \
  --set 'regions={eu,in}' --set serviceMonitor.enabled=true --set prometheusRule.enabled=true \
  --set 'peerReaders={in}' >"${work}/all.yaml"
grep -q -- '--region=eu' "${work}/all.yaml" || fail "regions do not become --region flags"
grep -q -- '--leader-election$' "${work}/all.yaml" || fail "leader election is not on by default"
grep -q 'alert: SovereignResidencyViolation' "${work}/all.yaml" || fail "PrometheusRule without the alerts"
grep -q 'kind: CustomResourceDefinition' "${work}/all.yaml" || fail "no CRDs"
grep -q 'name: sovereign-peer-in' "${work}/all.yaml" || fail "peerReaders do not become peer ServiceAccounts"
# No wildcard anywhere in the RBAC.
if grep -nE "^\s*-?\s*(verbs|resources|apiGroups):.*['\"]?\*" "${work}/all.yaml"; then
  fail "wildcard in the RBAC"
fi
# The schema refuses nonsense.
if "${HELM}" template --kube-version "${KUBE_VERSION}" x "${chart}" --set replicaCount=0 >/dev/null 2>&1; then
  fail "values.schema.json accepted replicaCount=0"
fi
if "${HELM}" template --kube-version "${KUBE_VERSION}" x "${chart}" --set 'regions={EU!}' >/dev/null 2>&1; then
  fail "values.schema.json accepted an invalid region name"
fi
if "${HELM}" template --kube-version "${KUBE_VERSION}" x "${chart}" --set 'peerReaders={EU!}' >/dev/null 2>&1; then
  fail "values.schema.json accepted an invalid peer name"
fi

# The kustomize base is the chart's output.
"${HELM}" template --kube-version "${KUBE_VERSION}" sovereign-operator "${chart}" --namespace sovereign-system >"${work}/operator.yaml"
if ! diff -u deploy/kustomize/base/operator.yaml "${work}/operator.yaml"; then
  fail "deploy/kustomize/base/operator.yaml is stale: run make deploy-manifests"
fi
for region in eu in; do
  "${KUBECTL}" kustomize "deploy/kustomize/overlays/${region}" >"${work}/${region}.yaml"
  grep -q -- "--region=${region}" "${work}/${region}.yaml" || fail "overlay ${region} lacks --region"
done
echo "deploy-check: kustomize overlays eu, in build"

bash scripts/argocd-health.sh
# Controls: the runner must fail a wrong verdict, and a script using a library Argo CD does not
# open for a customization (string) must fail as it would in Argo CD.
sed -e '0,/"want": "Healthy"/s//"want": "Degraded"/' deploy/argocd/health/cases.json >"${work}/cases-flipped.json"
if bash scripts/argocd-health.sh deploy/argocd/argocd-cm-health.yaml "${work}/cases-flipped.json" >/dev/null; then
  fail "the Argo CD health runner passed a case with a wrong expected verdict"
fi
sed -e 's/^    local hs = common_health(obj)$/    local hs = common_health(obj); local _ = string.format("%s", "x")/' \
  deploy/argocd/argocd-cm-health.yaml >"${work}/cm-string.yaml"
if bash scripts/argocd-health.sh "${work}/cm-string.yaml" deploy/argocd/health/cases.json >/dev/null; then
  fail "the Argo CD health runner allowed the string library, which Argo CD does not open"
fi
echo "deploy-check: the health runner fails a wrong verdict and a script using string"

# Alert rules, tested by Prometheus itself.
PROMTOOL="$(bash scripts/promtool.sh path)"
"${PROMTOOL}" --version | head -1
"${PROMTOOL}" check rules deploy/monitoring/alerts.yaml
"${PROMTOOL}" test rules deploy/monitoring/alerts_test.yaml
mkdir -p "${work}/chart-rules" "${work}/mutated-rules"
# The chart's PrometheusRule: its spec is a rule file (groups), indented under `spec:`.
"${HELM}" template --kube-version "${KUBE_VERSION}" sovereign-operator "${chart}" --namespace sovereign-system \
  --show-only templates/prometheusrule.yaml --set prometheusRule.enabled=true |
  sed -n '/^spec:/,$p' | tail -n +2 | sed 's/^  //' >"${work}/chart-rules/alerts.yaml"
grep -q 'alert: SovereignNoLeader' "${work}/chart-rules/alerts.yaml" || fail "no rules extracted from the PrometheusRule"
cp deploy/monitoring/alerts_test.yaml "${work}/chart-rules/"
"${PROMTOOL}" test rules "${work}/chart-rules/alerts_test.yaml"
# The tests can fail: a budget alert at 99 % instead of 90 % must break them.
sed 's/(sovereign_budget_used_ratio) > 0.9/(sovereign_budget_used_ratio) > 0.99/' \
  deploy/monitoring/alerts.yaml >"${work}/mutated-rules/alerts.yaml"
cp deploy/monitoring/alerts_test.yaml "${work}/mutated-rules/"
if "${PROMTOOL}" test rules "${work}/mutated-rules/alerts_test.yaml" >/dev/null 2>&1; then
  fail "promtool tests passed on a rule with a changed threshold"
fi
echo "deploy-check: alert rules pass promtool test rules (file and chart), and a changed rule fails"
echo "deploy-check: ok"
