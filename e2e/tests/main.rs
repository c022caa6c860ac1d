//! End-to-end tests against the real control plane started by `e2e/controlplane.sh up`
//! (kube-apiserver, etcd, controller-manager, scheduler and KWOK nodes). They use the
//! kubeconfig in `KUBECONFIG` and fail — never skip — when the plane is unreachable.

#[path = "../../tests/support/corpus.rs"]
mod corpus;

mod harness;
mod provisioning;
mod scheduling;
mod schema;
