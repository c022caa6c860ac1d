//! Server-side apply of desired children, skipping objects that already match, and deletion of
//! children the owner no longer wants (by label and owner UID).

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, ListParams, PartialObjectMeta, Patch, PatchParams,
};
use kube::{Api, Client, Resource};
use serde_json::Value;

use crate::api::labels;
use crate::metrics::SharedMetrics;
use crate::render::{Child, RenderError, content_hash};

/// Annotation holding the hash of what the operator last applied; a change of the desired
/// state changes it, so removed fields are removed, not left behind.
pub const APPLIED_HASH_ANNOTATION: &str = "sovereign.ai/applied-hash";

/// Errors applying or pruning children.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The API server refused or failed a request.
    #[error("{verb} {object}: {source}")]
    Kube {
        /// What was attempted.
        verb: &'static str,
        /// The object.
        object: String,
        /// The client error.
        source: kube::Error,
    },
    /// The desired object could not be serialised (a bug, reported rather than panicking).
    #[error(transparent)]
    Encode(#[from] RenderError),
}

/// Applies children under one field manager and counts its writes.
#[derive(Clone)]
pub struct Applier {
    client: Client,
    manager: &'static str,
    metrics: SharedMetrics,
}

/// The kinds the operator creates, with their API resource; `prune` lists these.
fn api_resource(kind: &str) -> Option<ApiResource> {
    Some(match kind {
        "Namespace" => ApiResource::erase::<Namespace>(&()),
        "NetworkPolicy" => ApiResource::erase::<NetworkPolicy>(&()),
        "ConfigMap" => ApiResource::erase::<ConfigMap>(&()),
        "Deployment" => ApiResource::erase::<Deployment>(&()),
        "StatefulSet" => ApiResource::erase::<StatefulSet>(&()),
        "Service" => ApiResource::erase::<Service>(&()),
        "PodDisruptionBudget" => ApiResource::erase::<PodDisruptionBudget>(&()),
        "ServiceAccount" => ApiResource::erase::<ServiceAccount>(&()),
        "Role" => ApiResource::erase::<Role>(&()),
        "RoleBinding" => ApiResource::erase::<RoleBinding>(&()),
        "HorizontalPodAutoscaler" => ApiResource::erase::<HorizontalPodAutoscaler>(&()),
        "ValidatingAdmissionPolicy" => ApiResource::erase::<ValidatingAdmissionPolicy>(&()),
        "ValidatingAdmissionPolicyBinding" => {
            ApiResource::erase::<ValidatingAdmissionPolicyBinding>(&())
        }
        // The Prometheus Operator's CRD (k8s-openapi has no type for it); rendered only when a
        // region asks for it (`monitoring.podMonitor`).
        "PodMonitor" => ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
            "monitoring.coreos.com",
            "v1",
            "PodMonitor",
        )),
        _ => return None,
    })
}

/// Whether every field of `desired` has the same value in `live` (lists element by element).
/// Extra fields in `live` (defaults, status, other managers) do not matter, and an empty
/// desired value (`{}`, `[]`, null) matches an absent one: the API server serialises its Go
/// types with `omitempty`, so `podSelector: {matchLabels: {}}` comes back as `podSelector: {}`.
/// Without this, such an object is rewritten on every reconcile (and after every restart).
pub fn is_subset(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d.iter().all(|(k, v)| match l.get(k) {
            Some(lv) => is_subset(v, lv),
            None => is_empty(v),
        }),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len() && d.iter().zip(l).all(|(a, b)| is_subset(a, b))
        }
        (d, l) => d == l,
    }
}

/// A value the API server leaves out when it serialises an object.
fn is_empty(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::Object(map) => map.is_empty(),
        Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

impl Applier {
    /// An applier writing as `manager`.
    pub fn new(client: Client, manager: &'static str, metrics: SharedMetrics) -> Self {
        Self {
            client,
            manager,
            metrics,
        }
    }

    fn api(&self, kind: &str, namespace: Option<&str>) -> Option<Api<DynamicObject>> {
        let resource = api_resource(kind)?;
        Some(match namespace {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        })
    }

    /// Applies `child` unless the live object already carries it; returns whether it wrote.
    pub async fn apply(&self, child: &Child) -> Result<bool, ApplyError> {
        let (kind, meta) = child.kind_and_meta();
        let name = meta.name.clone().unwrap_or_default();
        let object = child.describe();
        let Some(api) = self.api(kind, meta.namespace.as_deref()) else {
            return Ok(false);
        };
        let mut desired = child.to_json()?;
        let hash = content_hash(&desired.to_string());
        desired["metadata"]["annotations"][APPLIED_HASH_ANNOTATION] = Value::from(hash.clone());

        let live = api
            .get_opt(&name)
            .await
            .map_err(|source| ApplyError::Kube {
                verb: "get",
                object: object.clone(),
                source,
            })?;
        if let Some(live) = live {
            let live = serde_json::to_value(&live).unwrap_or(Value::Null);
            if is_subset(&desired, &live) {
                return Ok(false);
            }
        }
        api.patch(
            &name,
            &PatchParams::apply(self.manager).force(),
            &Patch::Apply(&desired),
        )
        .await
        .map_err(|source| ApplyError::Kube {
            verb: "apply",
            object,
            source,
        })?;
        self.metrics.wrote(self.manager, kind, "apply");
        Ok(true)
    }

    /// Deletes the objects of `kinds` in `namespace` that carry the managed-by label and
    /// `app.kubernetes.io/instance=<instance>`, are controlled by `owner_uid`, and are not in
    /// `desired`. Returns what it deleted.
    pub async fn prune(
        &self,
        kinds: &[&str],
        namespace: &str,
        instance: &str,
        owner_uid: &str,
        desired: &[Child],
    ) -> Result<Vec<String>, ApplyError> {
        let wanted: BTreeSet<(String, String)> = desired
            .iter()
            .map(|c| {
                let (kind, meta) = c.kind_and_meta();
                (kind.to_owned(), meta.name.clone().unwrap_or_default())
            })
            .collect();
        let selector = format!(
            "{},{}={instance}",
            labels::managed_selector(),
            labels::INSTANCE
        );
        let mut deleted = Vec::new();
        for kind in kinds {
            let Some(api) = self.api(kind, Some(namespace)) else {
                continue;
            };
            let listed = match api
                .list_metadata(&ListParams::default().labels(&selector))
                .await
            {
                Ok(listed) => listed,
                // A kind the cluster does not serve (PodMonitor without the Prometheus
                // Operator) holds no orphans.
                Err(kube::Error::Api(status)) if status.code == 404 => continue,
                Err(source) => {
                    return Err(ApplyError::Kube {
                        verb: "list",
                        object: format!("{kind} in {namespace}"),
                        source,
                    });
                }
            };
            for item in listed.items {
                if !controlled_by(&item, owner_uid) {
                    continue;
                }
                let name = item.metadata.name.clone().unwrap_or_default();
                if wanted.contains(&((*kind).to_owned(), name.clone())) {
                    continue;
                }
                let object = format!("{kind}/{namespace}/{name}");
                match api.delete(&name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    // Already gone: what we wanted.
                    Err(kube::Error::Api(status)) if status.code == 404 => continue,
                    Err(source) => {
                        return Err(ApplyError::Kube {
                            verb: "delete",
                            object,
                            source,
                        });
                    }
                }
                self.metrics.wrote(self.manager, kind, "delete");
                deleted.push(object);
            }
        }
        Ok(deleted)
    }
}

fn controlled_by(item: &PartialObjectMeta<DynamicObject>, owner_uid: &str) -> bool {
    item.meta().owner_references.as_ref().is_some_and(|refs| {
        refs.iter()
            .any(|r| r.uid == owner_uid && r.controller == Some(true))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn subset_ignores_extra_live_fields_but_not_changed_values() {
        let desired = json!({"spec": {"replicas": 2, "ports": [{"port": 80}]}});
        let live = json!({"spec": {"replicas": 2, "ports": [{"port": 80, "protocol": "TCP"}]},
                          "status": {"ready": 1}});
        assert!(is_subset(&desired, &live));
        assert!(!is_subset(&json!({"spec": {"replicas": 3}}), &live));
        assert!(!is_subset(
            &json!({"spec": {"ports": [{"port": 80}, {"port": 81}]}}),
            &live
        ));
    }

    #[test]
    fn an_empty_desired_value_matches_what_the_api_server_leaves_out() {
        // As rendered and as a 1.36 API server returns it.
        let desired = json!({"spec": {"ingress": [{"from": [
            {"podSelector": {"matchLabels": {}}, "namespaceSelector": {"matchLabels": {"a": "b"}}}
        ]}]}});
        let live = json!({"spec": {"ingress": [{"from": [
            {"podSelector": {}, "namespaceSelector": {"matchLabels": {"a": "b"}}}
        ]}]}});
        assert!(is_subset(&desired, &live));
        // A value that is not empty must still be there.
        let desired = json!({"spec": {"ingress": [{"from": [{"podSelector": {"matchLabels": {"x": "y"}}}]}]}});
        assert!(!is_subset(&desired, &live));
        // An empty list where the live object has items is a change.
        assert!(!is_subset(&json!({"spec": {"ingress": []}}), &live));
    }
}
