//! Everything a region needs, assembled: namespace and network policies, the gateway (config
//! from the backends that may serve), the vector store and the observability pipeline.

use super::{
    Child, Owner, RenderError, gateway, gateway_config, network, observability, vectorstore,
};
use crate::api::backend::InferenceBackend;
use crate::api::region::SovereignRegion;

/// The desired state of one region.
#[derive(Debug)]
pub struct RegionPlan {
    /// Every child object, in apply order (namespace first).
    pub children: Vec<Child>,
    /// Model names the gateway serves.
    pub models: Vec<String>,
    /// Fallbacks dropped because nothing in the region serves them: (model, fallback).
    pub dropped_fallbacks: Vec<(String, String)>,
}

/// The children of `region`, with a gateway that routes only to `serving` — the backends the
/// caller found Ready and Compliant. The namespace carries no owner reference: deleting a
/// region must never delete the data that lives in its namespace.
pub fn region_plan(
    region: &SovereignRegion,
    owner: &Owner,
    serving: &[&InferenceBackend],
) -> Result<RegionPlan, RenderError> {
    let mut children = network::namespace_and_policies(region, owner);
    for child in &mut children {
        if let Child::Namespace(namespace) = child {
            namespace.metadata.owner_references = None;
        }
    }
    let config = gateway_config::litellm_config(region, serving)?;
    children.extend(gateway::gateway_children(
        region,
        owner,
        &config.config_yaml,
        config.env,
    ));
    children.extend(vectorstore::vector_store(region, owner));
    children.extend(observability::observability(region, owner)?);
    Ok(RegionPlan {
        children,
        models: config.models,
        dropped_fallbacks: config.dropped_fallbacks,
    })
}

/// Everything the operator would create for these custom resources, without a cluster
/// (`sovereign-operator render`). Offline there is no readiness, so a backend serves when it
/// is in its region's namespace and breaks no residency rule — what a healthy cluster
/// converges to. No owner references: there are no UIDs to point at.
pub fn offline_children(
    regions: &[SovereignRegion],
    backends: &[InferenceBackend],
    policies: &[crate::api::ResidencyPolicy],
) -> Result<Vec<Child>, RenderError> {
    let mut children = Vec::new();
    for region in regions {
        let name = region
            .metadata
            .name
            .clone()
            .ok_or(RenderError::MissingName {
                kind: "SovereignRegion",
            })?;
        let namespace = region.stack_namespace();
        let own: Vec<&InferenceBackend> = backends
            .iter()
            .filter(|b| {
                b.spec.region == name && b.metadata.namespace.as_deref() == Some(&namespace)
            })
            .collect();
        let serving: Vec<&InferenceBackend> = own
            .iter()
            .copied()
            .filter(|b| {
                crate::residency::inference::hosting_violations(b, region, policies).is_empty()
            })
            .collect();
        let owner = Owner {
            region: name.clone(),
            instance: name.clone(),
            reference: None,
        };
        children.extend(region_plan(region, &owner, &serving)?.children);
        for backend in own {
            let owner = Owner {
                region: name.clone(),
                instance: backend.metadata.name.clone().unwrap_or_default(),
                reference: None,
            };
            children.extend(super::vllm::vllm_children(backend, region, &owner)?);
        }
    }
    Ok(children)
}
