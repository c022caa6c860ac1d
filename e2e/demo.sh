#!/usr/bin/env bash
# `make demo`: a local multi-region cluster running the operator on the EU/India example.
#
#   e2e/demo.sh up     build what is missing (cached), start the control plane with simulated
#                      GPU nodes in europe-west9, eu-central-1, ap-south-1 and us-east-1,
#                      install the CRDs, start the operator, apply the example, show the result
#   e2e/demo.sh down   stop the operator and the control plane
#
#   e2e/demo.sh up two    one cluster per jurisdiction: two control planes (eu: EU nodes only,
#                         in: India nodes only), an operator each with its overlay's --region
#                         and leader election, the example routed as the ApplicationSets do,
#                         a global TokenBudget over both and the read-only peering between
#                         them; a kubeconfig with the contexts eu and in
#   e2e/demo.sh down two  stop both (`make demo CLUSTERS=2`, `make demo-down CLUSTERS=2`)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "${here}/.."
cache="${SOVEREIGN_CACHE:-${HOME}/.cache/sovereign-operator}"
state="${SOVEREIGN_E2E_STATE:-${cache}/e2e-state}"
pid_file="${cache}/demo-operator.pid"
log_file="${cache}/demo-operator.log"

stop_operator() {
  if [ -f "${pid_file}" ]; then
    pid="$(cat "${pid_file}")"
    # Only our own process: the pid file may be stale after a reboot.
    if [ -r "/proc/${pid}/cmdline" ] && tr '\0' ' ' < "/proc/${pid}/cmdline" | grep -q 'sovereign-operator run'; then
      kill -TERM "${pid}" && while kill -0 "${pid}" 2>/dev/null; do sleep 0.2; done
    fi
    rm -f "${pid_file}"
  fi
}

if [ "${2:-}" = two ]; then
  exec bash "${here}/demo-two.sh" "${1:-up}"
fi

case "${1:-up}" in
  down)
    stop_operator
    bash e2e/controlplane.sh down
    exit 0
    ;;
  up) ;;
  *) echo "usage: $0 up|down" >&2; exit 2 ;;
esac

bash e2e/controlplane.sh build
bash e2e/controlplane.sh up
eval "$(bash e2e/controlplane.sh env)"
cargo build --quiet --bin sovereign-operator
operator="${CARGO_TARGET_DIR:-target}/debug/sovereign-operator"

echo "== installing the CRDs"
kubectl apply --server-side --force-conflicts --field-manager=sovereign-demo -f crds/ >/dev/null
kubectl wait --for condition=Established --timeout=60s -f crds/ >/dev/null

echo "== starting the operator (log: ${log_file})"
stop_operator
mkdir -p "${cache}"
nohup "${operator}" run --metrics-address 127.0.0.1:18080 --log-format text > "${log_file}" 2>&1 &
echo $! > "${pid_file}"

echo "== applying deploy/examples/eu-india/ (+ demo storage and placeholder secrets)"
kubectl apply --server-side --force-conflicts --field-manager=sovereign-demo -f deploy/examples/eu-india/ >/dev/null
kubectl apply --server-side --force-conflicts --field-manager=sovereign-demo -f e2e/fixtures/ >/dev/null

echo "== waiting for the regions and their backends to become Ready"
kubectl wait --for condition=Ready --timeout=180s sovereignregion/eu sovereignregion/in >/dev/null &&
  kubectl wait --for condition=Ready --timeout=180s inferencebackends --all -A >/dev/null ||
  echo "(not Ready yet: see kubectl describe sreg,ib -A)"

echo
echo "== kubectl get sovereign -A"
kubectl get sovereign -A
echo
echo "== nodes by region"
kubectl get nodes -L topology.kubernetes.io/region,topology.kubernetes.io/zone,nvidia.com/gpu.product \
  --sort-by='.metadata.labels.topology\.kubernetes\.io/region'
echo
echo "== pods of the regions' stacks"
kubectl get pods -n sovereign-eu -o wide
kubectl get pods -n sovereign-in -o wide

cat <<TXT

The demo cluster is running (state: ${state}). To look around:
  eval "\$(e2e/controlplane.sh env)"        # point kubectl at it (kubectl is built with it)
  kubectl get sreg,ib,rpol,tb -A             # the four kinds (short names)
  kubectl get cm gateway -n sovereign-eu -o jsonpath='{.data.config\.yaml}'   # EU routes
  kubectl describe ib -n sovereign-in sarvam-2b
  kubectl explain inferencebackends.spec.vllm
  ${operator} render -f deploy/examples/eu-india/   # the same, without a cluster
  curl -s 127.0.0.1:18080/metrics            # the operator's metrics
To stop it:
  make demo-down
TXT
