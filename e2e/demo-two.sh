#!/usr/bin/env bash
# `make demo CLUSTERS=2` (e2e/demo.sh up two): one cluster per jurisdiction on this machine.
# Two control planes, eu (EU nodes only) and in (India nodes only); in each the operator with
# the --region of its kustomize overlay and leader election; the example's files routed as
# deploy/argocd/applicationset.yaml routes them (global objects to both, each region's backends
# to its own cluster); a global TokenBudget over eu and in; and the read-only peering of
# docs/deployment.md ("Global budgets across clusters") in both directions. Writes a kubeconfig
# with the contexts eu and in.
#
#   e2e/demo-two.sh up | down
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "${here}/.."
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
kubeconfig="${cache}/demo-two.kubeconfig"
regions=(eu in)

# Ports away from the single-cluster demo (16443/16380) and the e2e blocks.
declare -A apiserver_port=([eu]=16453 [in]=16463)
declare -A port_base=([eu]=16400 [in]=16410)
declare -A metrics=([eu]=127.0.0.1:18081 [in]=127.0.0.1:18082)
declare -A node_regions=([eu]="europe-west9 eu-central-1" [in]="ap-south-1")
# What of e2e/fixtures belongs to the other region's cluster.
declare -A foreign=([eu]='sovereign-in|in-regional-ssd|ap-south' [in]='sovereign-eu|eu-regional-ssd|europe-west9|eu-central')

plane() {
  local r=$1
  shift
  SOVEREIGN_E2E_STATE="${cache}/demo-${r}" SOVEREIGN_APISERVER_PORT="${apiserver_port[$r]}" \
    SOVEREIGN_PORT_BASE="${port_base[$r]}" SOVEREIGN_E2E_NODE_REGIONS="${node_regions[$r]}" \
    bash e2e/controlplane.sh "$@"
}
kc() {
  local r=$1
  shift
  kubectl --kubeconfig "${cache}/demo-${r}/kubeconfig" "$@"
}
stop_operator() {
  local pid_file="${cache}/demo-operator-$1.pid" pid
  if [ -f "${pid_file}" ]; then
    pid="$(cat "${pid_file}")"
    if [ -r "/proc/${pid}/cmdline" ] && tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -q 'sovereign-operator run'; then
      kill -TERM "${pid}" && while kill -0 "${pid}" 2>/dev/null; do sleep 0.2; done
    fi
    rm -f "${pid_file}"
  fi
}
apply() { kubectl "$@" apply --server-side --force-conflicts --field-manager=sovereign-demo -f - >/dev/null; }

case "${1:-up}" in
  down)
    for r in "${regions[@]}"; do
      stop_operator "${r}"
      plane "${r}" down
    done
    rm -f "${kubeconfig}"
    exit 0
    ;;
  up) ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac

bash e2e/controlplane.sh build
eval "$(bash e2e/controlplane.sh env)"
cargo build --quiet --bin sovereign-operator
operator="${CARGO_TARGET_DIR:-target}/debug/sovereign-operator"

for r in "${regions[@]}"; do
  echo "== cluster ${r}: control plane with the nodes of ${node_regions[$r]}"
  plane "${r}" up
  kc "${r}" apply --server-side --force-conflicts --field-manager=sovereign-demo -f crds/ >/dev/null
  kc "${r}" wait --for condition=Established --timeout=60s -f crds/ >/dev/null
  kc "${r}" create namespace sovereign-system --dry-run=client -o yaml | apply --kubeconfig "${cache}/demo-${r}/kubeconfig"
  kc "${r}" create namespace finance --dry-run=client -o yaml | apply --kubeconfig "${cache}/demo-${r}/kubeconfig"
done

echo "== GitOps: the global objects to both clusters, each region's backends to its own"
for r in "${regions[@]}"; do
  for f in deploy/examples/eu-india/{00-namespaces,10-region-eu,10-region-in,30-policies,40-budgets}.yaml \
    "deploy/examples/eu-india/20-backends-${r}.yaml"; do
    apply --kubeconfig "${cache}/demo-${r}/kubeconfig" <"${f}"
  done
  # The fixtures (storage, placeholder Secrets) of this cluster's region only.
  cat e2e/fixtures/*.yaml | awk -v foreign="${foreign[$r]}" '
    function flush() { if (doc != "" && doc !~ foreign) printf "---\n%s", doc; doc = "" }
    /^---$/ { flush(); next }
    { doc = doc $0 "\n" }
    END { flush() }' | apply --kubeconfig "${cache}/demo-${r}/kubeconfig"
  apply --kubeconfig "${cache}/demo-${r}/kubeconfig" <<'YAML'
# A global budget: the search team's tokens in both jurisdictions together.
apiVersion: sovereign.ai/v1alpha1
kind: TokenBudget
metadata: {name: global-search, namespace: finance}
spec:
  scope: {teams: [search], regions: [eu, in]}
  period: Monthly
  timeZone: UTC
  limit: {tokens: 1000000}
  thresholds:
    - {percent: 80, action: Notify}
    - {percent: 100, action: Block}
YAML
done

echo "== peering: each cluster grants the other a token that can only get its published totals"
for pair in "eu in" "in eu"; do
  read -r reader granter <<<"${pair}"
  account="sovereign-peer-${reader}"
  apply --kubeconfig "${cache}/demo-${granter}/kubeconfig" <<YAML
apiVersion: v1
kind: ServiceAccount
metadata: {name: ${account}, namespace: sovereign-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: ${account}, namespace: sovereign-system}
rules:
  - {apiGroups: [""], resources: [configmaps], resourceNames: [sovereign-global-totals], verbs: [get]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: ${account}, namespace: sovereign-system}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: ${account}}
subjects: [{kind: ServiceAccount, name: ${account}, namespace: sovereign-system}]
YAML
  token="$(kc "${granter}" create token "${account}" -n sovereign-system --duration 24h)"
  ca="$(kc "${granter}" config view --raw --minify --flatten -o 'jsonpath={.clusters[0].cluster.certificate-authority-data}')"
  peer_config="apiVersion: v1
kind: Config
clusters: [{name: peer, cluster: {server: 'https://127.0.0.1:${apiserver_port[$granter]}', certificate-authority-data: ${ca}}}]
users: [{name: reader, user: {token: ${token}}}]
contexts: [{name: peer, context: {cluster: peer, user: reader, namespace: sovereign-system}}]
current-context: peer"
  kc "${reader}" -n sovereign-system create secret generic "peer-${granter}" \
    --from-literal=kubeconfig="${peer_config}" --from-literal=regions="${granter}" \
    --dry-run=client -o yaml | kubectl label --local -f - "sovereign.ai/peer=${granter}" -o yaml |
    apply --kubeconfig "${cache}/demo-${reader}/kubeconfig"
done

for r in "${regions[@]}"; do
  # The --region of the cluster's overlay, exactly as Argo CD would deploy it.
  region_flag="$(kubectl kustomize "deploy/kustomize/overlays/${r}" | grep -o -- "--region=[a-z]*" | head -1)"
  echo "== cluster ${r}: the operator (${region_flag}, leader election; log: ${cache}/demo-operator-${r}.log)"
  stop_operator "${r}"
  KUBECONFIG="${cache}/demo-${r}/kubeconfig" POD_NAMESPACE=sovereign-system nohup "${operator}" run \
    "${region_flag}" --leader-election --metrics-address "${metrics[$r]}" --log-format text \
    >"${cache}/demo-operator-${r}.log" 2>&1 &
  echo $! >"${cache}/demo-operator-${r}.pid"
done

# One kubeconfig with both contexts (what `report --context eu --context in` reads).
{
  echo "apiVersion: v1"
  echo "kind: Config"
  echo "current-context: eu"
  for section in clusters users contexts; do
    echo "${section}:"
    for r in "${regions[@]}"; do
      case "${section}" in
        clusters) echo "- {name: ${r}, cluster: {server: 'https://127.0.0.1:${apiserver_port[$r]}', certificate-authority-data: $(kc "${r}" config view --raw --minify --flatten -o 'jsonpath={.clusters[0].cluster.certificate-authority-data}')}}" ;;
        users) echo "- {name: ${r}, user: {client-certificate-data: $(kc "${r}" config view --raw --minify --flatten -o 'jsonpath={.users[0].user.client-certificate-data}'), client-key-data: $(kc "${r}" config view --raw --minify --flatten -o 'jsonpath={.users[0].user.client-key-data}')}}" ;;
        contexts) echo "- {name: ${r}, context: {cluster: ${r}, user: ${r}}}" ;;
      esac
    done
  done
} >"${kubeconfig}"
chmod 600 "${kubeconfig}"

echo "== waiting for each cluster's own region to become Ready"
kubectl --kubeconfig "${kubeconfig}" --context eu wait --for condition=Ready --timeout=180s sovereignregion/eu >/dev/null || true
kubectl --kubeconfig "${kubeconfig}" --context in wait --for condition=Ready --timeout=180s sovereignregion/in >/dev/null || true
for r in "${regions[@]}"; do
  echo
  echo "== kubectl --context ${r} get sovereign -A"
  kubectl --kubeconfig "${kubeconfig}" --context "${r}" get sovereign -A
done

cat <<TXT

Two clusters are running (eu: ${cache}/demo-eu, in: ${cache}/demo-in). To look around:
  export KUBECONFIG=${kubeconfig}
  kubectl --context eu get nodes; kubectl --context in get nodes    # each its own region's
  kubectl --context eu get tb -n finance global-search -o jsonpath='{.status.global}'
  ${operator} report --context eu --context in --format json
To stop them:
  make demo-down CLUSTERS=2
TXT
