//! End-to-end tests against the real control plane started by `e2e/controlplane.sh up`
//! (kube-apiserver, etcd, controller-manager, scheduler and KWOK nodes). They use the
//! kubeconfig in `KUBECONFIG` and fail — never skip — when the plane is unreachable.
//! `litellm` needs no plane: it proves the gateway config on a real LiteLLM proxy
//! (`cargo test --features e2e --test e2e litellm` runs it alone).

#[path = "../../tests/support/corpus.rs"]
mod corpus;

#[path = "../../tests/support/admission.rs"]
mod admission_support;

mod admission;
mod audit;
mod chart;
mod finops;
mod harness;
mod leader;
mod litellm;
mod provisioning;
mod scheduling;
mod schema;
