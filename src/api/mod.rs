//! The four custom resources of `sovereign.ai/v1alpha1` and the pieces they share.
//!
//! Pure data: no I/O lives here. Every field carries a doc comment because it becomes the
//! `kubectl explain` text, and every rule the API server can check is written into the schema
//! as a CEL `x-kubernetes-validations` rule whose message names the field. Reference:
//! docs/resources.md and docs/decisions.md.

pub mod backend;
pub mod budget;
pub mod common;
pub mod conditions;
pub mod labels;
pub mod policy;
pub mod region;
pub mod schema;
pub mod versions;

pub use backend::{InferenceBackend, InferenceBackendSpec, InferenceBackendStatus};
pub use budget::{TokenBudget, TokenBudgetSpec, TokenBudgetStatus};
pub use policy::{ResidencyPolicy, ResidencyPolicySpec, ResidencyPolicyStatus};
pub use region::{SovereignRegion, SovereignRegionSpec, SovereignRegionStatus};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every custom resource of the operator.
pub const GROUP: &str = "sovereign.ai";
/// The one served and stored version.
pub const VERSION: &str = "v1alpha1";

/// The CRDs of the four kinds, in a stable order; `sovereign-operator crds` prints these and
/// `crds/` holds them, one file per kind.
pub fn all_crds() -> Vec<CustomResourceDefinition> {
    vec![
        SovereignRegion::crd(),
        InferenceBackend::crd(),
        ResidencyPolicy::crd(),
        TokenBudget::crd(),
    ]
}

/// Errors turning the CRDs into YAML.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    /// A CRD could not be serialised (a bug in a type's schema).
    #[error("cannot serialise CRD {name} to YAML: {source}")]
    Serialize {
        /// The CRD's name.
        name: String,
        /// What the YAML writer said.
        source: serde_yaml_ng::Error,
    },
}

/// One CRD rendered as the YAML file `crds/<name>.yaml` holds.
pub fn crd_yaml(crd: &CustomResourceDefinition) -> Result<String, CrdError> {
    let name = crd.metadata.name.clone().unwrap_or_default();
    serde_yaml_ng::to_string(crd).map_err(|source| CrdError::Serialize { name, source })
}

/// File name of a CRD inside `crds/`: `<plural>.<group>.yaml`.
pub fn crd_file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}
