#!/usr/bin/env bash
# `make demo`: a local multi-region cluster with the EU/India example applied.
# Builds what is missing (cached), starts the control plane with simulated GPU nodes in
# europe-west9, eu-central-1, ap-south-1 and us-east-1, installs the CRDs, applies the example
# and shows what is there. It keeps running; `make demo-down` stops it.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "${here}/.."

bash e2e/controlplane.sh build
bash e2e/controlplane.sh up
eval "$(bash e2e/controlplane.sh env)"

# The operator's controllers arrive with the regions/backends issue; until then the demo shows
# the API itself: the CRDs, their validation and the example resources.
cargo build --quiet --bin sovereign-operator
echo "== installing the CRDs"
kubectl apply --server-side --field-manager=sovereign-demo -f crds/
kubectl wait --for condition=Established --timeout=60s -f crds/ >/dev/null
echo "== applying deploy/examples/eu-india/"
kubectl apply --server-side --field-manager=sovereign-demo -f deploy/examples/eu-india/

echo
echo "== kubectl get sovereign -A"
kubectl get sovereign -A
echo
echo "== nodes by region"
kubectl get nodes -L topology.kubernetes.io/region,topology.kubernetes.io/zone,nvidia.com/gpu.product \
  --sort-by='.metadata.labels.topology\.kubernetes\.io/region'

cat <<TXT

The demo cluster is running. To look around:
  eval "\$(e2e/controlplane.sh env)"      # point kubectl at it (kubectl is built with it)
  kubectl get sreg,ib,rpol,tb -A           # the four kinds (short names)
  kubectl explain inferencebackends.spec.vllm
  kubectl apply -f deploy/examples/eu-india/20-backends-eu.yaml   # edit and re-apply
  target/debug/sovereign-operator crds     # the CRDs, as generated
No controllers run yet: the operator's 'run' command comes with the regions/backends work.
To stop it:
  make demo-down
TXT
