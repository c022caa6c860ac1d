//! End-to-end tests against real control planes (kube-apiserver, etcd, controller-manager,
//! scheduler and KWOK nodes) that the harness starts with `e2e/controlplane.sh up`: one for each
//! test that needs a quiet cluster, one shared by the rest (`harness::PLANES` says which and
//! why). They fail — never skip — when a plane cannot be started or reached.
//! `litellm` needs no plane: it proves the gateway config on a real LiteLLM proxy
//! (`cargo test --features e2e --test e2e litellm` runs it alone).

#[path = "../../tests/support/corpus.rs"]
mod corpus;

#[path = "../../tests/support/admission.rs"]
mod admission_support;

mod admission;
mod audit;
mod chart;
mod dataplane;
mod evidence;
mod finops;
mod harness;
mod image;
mod leader;
mod ledger;
mod litellm;
mod multicluster;
mod overshoot;
mod provisioning;
mod scheduling;
mod schema;
