//! Pure builders: custom resources in, the Kubernetes objects the operator wants out.
//!
//! Nothing here talks to the cluster. The controllers apply what these functions return with
//! server-side apply; `sovereign-operator render` prints it. Every child gets its labels and
//! owner reference from [`Owner::meta`], so selectors and orphan clean-up can rely on them.
//! What is rendered and why: docs/provisioning.md.

pub mod gateway;
pub mod gateway_config;
pub mod k8s;
pub mod network;
pub mod observability;
pub mod pod;
mod python_yaml;
pub mod region;
#[cfg(test)]
pub(crate) mod test_support;
pub mod vectorstore;
pub mod vllm;

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use serde::Serialize;

use crate::api::labels;

/// Why a desired state could not be built. These are problems of the input, so a controller
/// reports them in status and waits for a change rather than retrying.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RenderError {
    /// The object has no name (it was never stored).
    #[error("{kind} has no metadata.name")]
    MissingName {
        /// Kind of the object.
        kind: &'static str,
    },
    /// A vLLM backend would download its weights from Hugging Face, but its region names no
    /// in-region mirror: the public hub is abroad (and denied by the region's egress), so the
    /// backend is refused rather than rendered to crash-loop.
    #[error(
        "InferenceBackend {backend}: its weights come from Hugging Face but region {region} sets no huggingFaceMirror; set spec.huggingFaceMirror on the region (an in-region hub mirror) or give the backend a pvc or objectStore modelSource"
    )]
    NoInRegionModelSource {
        /// `namespace/name` of the backend.
        backend: String,
        /// The region.
        region: String,
    },
    /// A value could not be serialised (a bug, reported rather than panicking).
    #[error("cannot serialise {what}: {message}")]
    Serialize {
        /// What was being serialised.
        what: String,
        /// The serialiser's message.
        message: String,
    },
}

/// Who a child belongs to: the home region (for labels and placement) and the owning custom
/// resource (for the owner reference; absent when rendering offline, where no UID exists).
#[derive(Clone, Debug, PartialEq)]
pub struct Owner {
    /// Name of the SovereignRegion the child serves.
    pub region: String,
    /// Name of the owning custom resource; becomes `app.kubernetes.io/instance`.
    pub instance: String,
    /// Controller owner reference to the owning custom resource, when it has a UID.
    pub reference: Option<OwnerReference>,
}

impl Owner {
    /// Metadata for child `name` of `component` in `namespace` (None for cluster-scoped): the
    /// managed labels and the owner reference.
    pub fn meta(&self, component: &str, name: &str, namespace: Option<&str>) -> ObjectMeta {
        let owner = self;
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: namespace.map(str::to_owned),
            labels: Some(labels::managed_labels(
                &owner.region,
                component,
                &owner.instance,
            )),
            owner_references: owner.reference.clone().map(|r| vec![r]),
            ..ObjectMeta::default()
        }
    }

    /// Labels that select the pods of `component` of `owner` (a stable subset of the managed
    /// labels, since selectors of Deployments and StatefulSets are immutable).
    pub fn selector(&self, component: &str) -> BTreeMap<String, String> {
        let owner = self;
        BTreeMap::from([
            (labels::COMPONENT.to_owned(), component.to_owned()),
            (labels::INSTANCE.to_owned(), owner.instance.clone()),
            (labels::REGION.to_owned(), owner.region.clone()),
        ])
    }
}

/// One object the operator wants to exist. A closed set: the controllers know how to apply,
/// list and delete each of these kinds.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Child {
    /// The region namespace.
    Namespace(Box<Namespace>),
    /// Default-deny and allow rules of the region namespace.
    NetworkPolicy(Box<NetworkPolicy>),
    /// Configuration files (gateway config, collector config).
    ConfigMap(Box<ConfigMap>),
    /// Gateway, vLLM servers, collector, pgvector.
    Deployment(Box<Deployment>),
    /// Qdrant.
    StatefulSet(Box<StatefulSet>),
    /// Stable endpoints of the workloads.
    Service(Box<Service>),
    /// Availability of the gateway, vLLM and vector store during voluntary disruptions.
    PodDisruptionBudget(Box<PodDisruptionBudget>),
    /// vLLM autoscaling between `replicas.min` and `replicas.max`.
    HorizontalPodAutoscaler(Box<HorizontalPodAutoscaler>),
    /// A ResidencyPolicy's rules, enforced by the API server.
    ValidatingAdmissionPolicy(Box<ValidatingAdmissionPolicy>),
    /// Where and how those rules apply.
    ValidatingAdmissionPolicyBinding(Box<ValidatingAdmissionPolicyBinding>),
    /// Prometheus Operator scrape config of a vLLM backend (`monitoring.podMonitor`).
    PodMonitor(Box<PodMonitor>),
    /// The gateway's identity towards the API server (its guard watches the budget actions).
    ServiceAccount(Box<ServiceAccount>),
    /// Read access to exactly the budget actions ConfigMap.
    Role(Box<Role>),
    /// That access, for the gateway's ServiceAccount.
    RoleBinding(Box<RoleBinding>),
}

/// A `monitoring.coreos.com/v1` PodMonitor (the Prometheus Operator's CRD, which k8s-openapi
/// does not know): metadata typed, the spec as the JSON the CRD defines.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitor {
    /// Always `monitoring.coreos.com/v1`.
    pub api_version: &'static str,
    /// Always `PodMonitor`.
    pub kind: &'static str,
    /// Name, namespace, labels, owner.
    pub metadata: ObjectMeta,
    /// `selector`, `podMetricsEndpoints`, …
    pub spec: serde_json::Value,
}

impl Child {
    /// `Kind/namespace/name`, for logs and messages.
    pub fn describe(&self) -> String {
        let (kind, meta) = self.kind_and_meta();
        format!(
            "{kind}/{}{}",
            meta.namespace
                .as_deref()
                .map(|n| format!("{n}/"))
                .unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )
    }

    /// The kind and metadata of the object.
    pub fn kind_and_meta(&self) -> (&'static str, &ObjectMeta) {
        match self {
            Child::Namespace(o) => ("Namespace", &o.metadata),
            Child::NetworkPolicy(o) => ("NetworkPolicy", &o.metadata),
            Child::ConfigMap(o) => ("ConfigMap", &o.metadata),
            Child::Deployment(o) => ("Deployment", &o.metadata),
            Child::StatefulSet(o) => ("StatefulSet", &o.metadata),
            Child::Service(o) => ("Service", &o.metadata),
            Child::PodDisruptionBudget(o) => ("PodDisruptionBudget", &o.metadata),
            Child::HorizontalPodAutoscaler(o) => ("HorizontalPodAutoscaler", &o.metadata),
            Child::ValidatingAdmissionPolicy(o) => ("ValidatingAdmissionPolicy", &o.metadata),
            Child::ValidatingAdmissionPolicyBinding(o) => {
                ("ValidatingAdmissionPolicyBinding", &o.metadata)
            }
            Child::PodMonitor(o) => ("PodMonitor", &o.metadata),
            Child::ServiceAccount(o) => ("ServiceAccount", &o.metadata),
            Child::Role(o) => ("Role", &o.metadata),
            Child::RoleBinding(o) => ("RoleBinding", &o.metadata),
        }
    }

    /// The object as JSON with `apiVersion` and `kind` (what server-side apply and `render`
    /// need; k8s-openapi adds both when serialising).
    pub fn to_json(&self) -> Result<serde_json::Value, RenderError> {
        serde_json::to_value(self).map_err(|e| RenderError::Serialize {
            what: self.describe(),
            message: e.to_string(),
        })
    }
}

macro_rules! child_from {
    ($($kind:ident),*) => {$(
        impl From<$kind> for Child {
            fn from(object: $kind) -> Self {
                Child::$kind(Box::new(object))
            }
        }
    )*};
}
child_from!(
    Namespace,
    NetworkPolicy,
    ConfigMap,
    Deployment,
    StatefulSet,
    Service,
    PodDisruptionBudget,
    HorizontalPodAutoscaler,
    ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding,
    PodMonitor,
    ServiceAccount,
    Role,
    RoleBinding
);

/// A short, stable digest of `content` (the first 16 hex digits of its SHA-256), used as a
/// pod-template annotation so that a Deployment rolls exactly when its configuration changes.
pub fn content_hash(content: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(content.as_bytes());
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::owner;

    #[test]
    fn child_meta_carries_the_managed_labels() {
        let meta = owner("eu").meta("gateway", "gateway", Some("sovereign-eu"));
        let labels = meta.labels.expect("labels");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "sovereign-operator");
        assert_eq!(labels["app.kubernetes.io/component"], "gateway");
        assert_eq!(labels["sovereign.ai/region"], "eu");
        assert!(
            meta.owner_references.is_none(),
            "no UID offline, no owner reference"
        );
    }

    #[test]
    fn children_serialise_with_api_version_and_kind() {
        let ns = Namespace {
            metadata: owner("eu").meta("namespace", "sovereign-eu", None),
            ..Namespace::default()
        };
        let json = Child::from(ns).to_json().expect("json");
        assert_eq!(json["apiVersion"], "v1");
        assert_eq!(json["kind"], "Namespace");
    }

    #[test]
    fn content_hash_changes_with_content() {
        assert_eq!(content_hash("a"), content_hash("a"));
        assert_ne!(content_hash("a"), content_hash("b"));
        assert_eq!(content_hash("").len(), 16);
    }
}
