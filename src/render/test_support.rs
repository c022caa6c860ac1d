//! Loading the EU/India example for unit tests of the builders, and the checks they share.

use std::path::Path;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{NodeSelectorRequirement, PodSpec};
use serde::Deserialize;

use super::{Child, Owner};
use crate::api::backend::InferenceBackend;
use crate::api::region::SovereignRegion;

/// Every document of the example whose `kind` is `kind`.
pub fn example_documents(kind: &str) -> Vec<serde_json::Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/eu-india");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("example directory")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(document).expect("valid YAML");
            if value["kind"] == kind {
                documents.push(value);
            }
        }
    }
    documents
}

/// The example region `name`.
pub fn example_region(name: &str) -> SovereignRegion {
    example_documents("SovereignRegion")
        .into_iter()
        .map(|v| serde_json::from_value::<SovereignRegion>(v).expect("region"))
        .find(|r| r.metadata.name.as_deref() == Some(name))
        .expect("region in example")
}

/// Every example backend, of every region, in file order.
pub fn example_all_backends() -> Vec<InferenceBackend> {
    example_documents("InferenceBackend")
        .into_iter()
        .map(|v| serde_json::from_value::<InferenceBackend>(v).expect("backend"))
        .collect()
}

/// The example backends of `region`.
pub fn example_backends(region: &SovereignRegion) -> Vec<InferenceBackend> {
    example_all_backends()
        .into_iter()
        .filter(|b| Some(&b.spec.region) == region.metadata.name.as_ref())
        .collect()
}

/// The offline owner of region `name`'s own children: region and instance `name`, no owner
/// reference.
pub fn owner(name: &str) -> Owner {
    Owner {
        region: name.into(),
        instance: name.into(),
        reference: None,
    }
}

/// The requirements of the pod's required node affinity, after checking that it has no
/// preferred terms (placement is never a preference) and exactly one required term (the
/// requirements of one term are ANDed; several terms would be ORed).
pub fn required_region_requirements(pod: &PodSpec) -> Vec<NodeSelectorRequirement> {
    let affinity = pod
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .expect("node affinity");
    assert!(
        affinity
            .preferred_during_scheduling_ignored_during_execution
            .is_none()
    );
    let terms = &affinity
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .expect("required")
        .node_selector_terms;
    assert_eq!(terms.len(), 1, "one term: requirements are ANDed");
    terms[0].match_expressions.clone().expect("expressions")
}

/// The first Deployment among `children`.
pub fn deployment(children: &[Child]) -> &Deployment {
    children
        .iter()
        .find_map(|c| match c {
            Child::Deployment(d) => Some(d.as_ref()),
            _ => None,
        })
        .expect("a deployment")
}
