//! Pieces every pod of a region shares: the required node affinity to the region's
//! locations, the region's extra placement, and the restricted security context.

use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm,
    PodSecurityContext, SeccompProfile, SecurityContext, Toleration,
};

use crate::api::labels::TOPOLOGY_REGION;
use crate::api::region::SovereignRegion;

/// Required node affinity: only nodes whose `topology.kubernetes.io/region` is one of the
/// region's locations, plus `extra` requirements (e.g. the GPU type). Required, never
/// preferred: a pod that cannot be placed in-region stays Pending instead of running abroad.
pub fn region_affinity(region: &SovereignRegion, extra: Vec<NodeSelectorRequirement>) -> Affinity {
    let mut requirements = vec![NodeSelectorRequirement {
        key: TOPOLOGY_REGION.to_owned(),
        operator: "In".to_owned(),
        values: Some(region.spec.locations.clone()),
    }];
    requirements.extend(extra);
    Affinity {
        node_affinity: Some(NodeAffinity {
            required_during_scheduling_ignored_during_execution: Some(NodeSelector {
                node_selector_terms: vec![NodeSelectorTerm {
                    match_expressions: Some(requirements),
                    match_fields: None,
                }],
            }),
            preferred_during_scheduling_ignored_during_execution: None,
        }),
        ..Affinity::default()
    }
}

/// The region's extra nodeSelector (never containing the region key, which the schema forbids).
pub fn region_node_selector(
    region: &SovereignRegion,
) -> Option<std::collections::BTreeMap<String, String>> {
    region
        .spec
        .placement
        .as_ref()
        .map(|p| p.node_selector.clone())
        .filter(|s| !s.is_empty())
}

/// The region's tolerations followed by `extra`.
pub fn region_tolerations(
    region: &SovereignRegion,
    extra: Vec<Toleration>,
) -> Option<Vec<Toleration>> {
    let mut tolerations: Vec<Toleration> = region
        .spec
        .placement
        .as_ref()
        .map(|p| p.tolerations.clone())
        .unwrap_or_default();
    tolerations.extend(extra);
    (!tolerations.is_empty()).then_some(tolerations)
}

/// Pod-level security context for Pod Security `restricted`.
pub fn restricted_pod_security(run_as_user: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(run_as_user),
        run_as_group: Some(run_as_user),
        fs_group: Some(run_as_user),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..PodSecurityContext::default()
    }
}

/// Container-level security context for Pod Security `restricted`.
pub fn restricted_container_security(read_only_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(read_only_root),
        run_as_non_root: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            add: None,
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            localhost_profile: None,
        }),
        ..SecurityContext::default()
    }
}
