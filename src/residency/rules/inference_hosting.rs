//! `inferenceHosting`: which backends may process which data. An external API must be hosted
//! inside its region's jurisdiction, and every residency policy that governs one of the
//! backend's data classes must allow its hosting (self-hosted only, or an allowed jurisdiction).
//!
//! # Trust
//! `external.hostingJurisdiction` is the provider's contractual claim; nothing on the wire can
//! verify it. The engine believes it only for a host the *region* declares
//! (`spec.egress.hosts`, exact names or `*.suffix`, the hosts whose contracts the region's
//! owner has checked): a backend that points at any other host is refused, whatever
//! jurisdiction it claims (`HostNotDeclared`). Regions come from `--policies` or the cluster,
//! not from the judged input, so a manifest cannot vouch for itself.

use crate::api::backend::InferenceBackend;
use crate::api::policy::{InferenceHosting, ResidencyKind, ResidencyPolicy};
use crate::api::region::SovereignRegion;

use super::super::engine::normalize_class;
use super::super::jurisdiction::is_within;
use super::super::s3::endpoint_host;
use super::observability_in_region::host_matches;

/// Why a backend may not serve its region.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostingViolation {
    /// The policy that forbids it, or None for the region's own jurisdiction rule.
    pub policy: Option<String>,
    /// CamelCase reason for the Compliant condition.
    pub reason: &'static str,
    /// What is wrong and what to change.
    pub message: String,
}

/// Every reason `backend` may not process its data for `region` under `policies`; empty when
/// it is compliant. Self-hosted backends run on the region's own nodes (their pods are pinned
/// to its locations), so only external backends can break these rules.
pub fn hosting_violations(
    backend: &InferenceBackend,
    region: &SovereignRegion,
    policies: &[ResidencyPolicy],
) -> Vec<HostingViolation> {
    let Some(external) = &backend.spec.external else {
        return Vec::new();
    };
    let hosting = external.hosting_jurisdiction.as_str();
    let mut violations = Vec::new();
    let region_name = region.metadata.name.as_deref().unwrap_or_default();
    let declared = region
        .spec
        .egress
        .as_ref()
        .map(|e| e.hosts.as_slice())
        .unwrap_or_default();
    match endpoint_host(&external.endpoint) {
        Some(host) if host_matches(&host, declared) => {}
        host => violations.push(HostingViolation {
            policy: None,
            reason: "HostNotDeclared",
            message: format!(
                "external.endpoint host {} is not in region {region_name}'s spec.egress.hosts \
                 ({}); its hostingJurisdiction {hosting} is a claim the region has not vouched \
                 for: add the host to the region after checking the provider's contract",
                host.as_deref().unwrap_or(&external.endpoint),
                if declared.is_empty() {
                    "none declared".to_owned()
                } else {
                    declared.join(", ")
                }
            ),
        }),
    }
    if !is_within(hosting, &region.spec.jurisdiction) {
        violations.push(HostingViolation {
            policy: None,
            reason: "HostedOutsideJurisdiction",
            message: format!(
                "external.hostingJurisdiction {hosting} is outside region {}'s jurisdiction {}; \
                 the gateway never routes abroad",
                region.metadata.name.as_deref().unwrap_or_default(),
                region.spec.jurisdiction
            ),
        });
    }
    for policy in policies {
        let governed: Vec<&str> = backend
            .spec
            .data_classes
            .iter()
            .filter(|class| {
                let class = normalize_class(class);
                policy
                    .spec
                    .data_classes
                    .iter()
                    .any(|c| normalize_class(c) == class)
            })
            .map(String::as_str)
            .collect();
        if governed.is_empty() {
            continue;
        }
        let name = policy.metadata.name.clone().unwrap_or_default();
        match policy.spec.rules.inference_hosting {
            InferenceHosting::Off => {}
            InferenceHosting::SelfHostedOnly => violations.push(HostingViolation {
                policy: Some(name.clone()),
                reason: "SelfHostedOnly",
                message: format!(
                    "policy {name} allows only self-hosted backends for {}; remove {} from \
                     dataClasses or serve the model with vllm",
                    governed.join(", "),
                    governed.join(", ")
                ),
            }),
            InferenceHosting::InJurisdiction => {
                let allowed = match policy.spec.residency.kind {
                    ResidencyKind::HomeRegion => vec![region.spec.jurisdiction.clone()],
                    ResidencyKind::AllowedJurisdictions => {
                        policy.spec.residency.allowed_jurisdictions.clone()
                    }
                };
                if !allowed.iter().any(|outer| is_within(hosting, outer)) {
                    violations.push(HostingViolation {
                        policy: Some(name.clone()),
                        reason: "PolicyForbidsHosting",
                        message: format!(
                            "policy {name} keeps {} in {}; external.hostingJurisdiction is {hosting}",
                            governed.join(", "),
                            allowed.join(", ")
                        ),
                    });
                }
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::{example_backends, example_documents, example_region};

    fn policies() -> Vec<ResidencyPolicy> {
        example_documents("ResidencyPolicy")
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("policy"))
            .collect()
    }

    #[test]
    fn every_example_backend_is_compliant() {
        for name in ["eu", "in"] {
            let region = example_region(name);
            for backend in example_backends(&region) {
                let violations = hosting_violations(&backend, &region, &policies());
                assert!(
                    violations.is_empty(),
                    "{:?}: {violations:?}",
                    backend.metadata.name
                );
            }
        }
    }

    #[test]
    fn an_api_hosted_abroad_is_refused() {
        let region = example_region("eu");
        let mut backend = example_backends(&region)
            .into_iter()
            .find(|b| b.spec.external.is_some())
            .expect("external backend");
        if let Some(external) = backend.spec.external.as_mut() {
            external.hosting_jurisdiction = "US".into();
        }
        let violations = hosting_violations(&backend, &region, &policies());
        assert!(
            violations
                .iter()
                .any(|v| v.reason == "HostedOutsideJurisdiction"),
            "{violations:?}"
        );
        assert!(
            violations
                .iter()
                .any(|v| v.reason == "PolicyForbidsHosting"),
            "pii policy too"
        );
    }

    #[test]
    fn a_host_the_region_does_not_declare_is_not_believed() {
        let region = example_region("eu");
        let mut backend = example_backends(&region)
            .into_iter()
            .find(|b| b.spec.external.is_some())
            .expect("external backend");
        if let Some(external) = backend.spec.external.as_mut() {
            external.endpoint = "https://api.mistral.ai.evil.example/v1".into();
            external.hosting_jurisdiction = "FR".into();
        }
        let violations = hosting_violations(&backend, &region, &policies());
        assert_eq!(violations.len(), 1, "{violations:?}");
        assert_eq!(violations[0].reason, "HostNotDeclared");
    }

    #[test]
    fn special_category_data_needs_a_self_hosted_backend() {
        let region = example_region("eu");
        let mut backend = example_backends(&region)
            .into_iter()
            .find(|b| b.spec.external.is_some())
            .expect("external backend");
        backend.spec.data_classes.push(" Special-Category".into());
        let violations = hosting_violations(&backend, &region, &policies());
        assert_eq!(violations.len(), 1);
        assert_eq!(violations[0].reason, "SelfHostedOnly");
        assert_eq!(
            violations[0].policy.as_deref(),
            Some("special-category-self-hosted")
        );
    }
}
