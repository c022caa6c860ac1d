//! Server-side apply of desired children, skipping objects that already match, and deletion of
//! children the owner no longer wants (by label and owner UID).

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

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
    versions: Arc<Versions>,
}

/// How the API resource of a child kind is built.
type ResourceOf = fn() -> ApiResource;

/// The kinds the operator creates: their API resource (`prune` lists these), and whether the
/// applier watches their resourceVersions ([`Versions`]). The admission policies are applied
/// once per policy change and the operator may not list them, so they are read before each
/// apply as before.
const CHILD_KINDS: [(&str, ResourceOf, bool); 14] = [
    ("Namespace", || ApiResource::erase::<Namespace>(&()), true),
    (
        "NetworkPolicy",
        || ApiResource::erase::<NetworkPolicy>(&()),
        true,
    ),
    ("ConfigMap", || ApiResource::erase::<ConfigMap>(&()), true),
    ("Deployment", || ApiResource::erase::<Deployment>(&()), true),
    (
        "StatefulSet",
        || ApiResource::erase::<StatefulSet>(&()),
        true,
    ),
    ("Service", || ApiResource::erase::<Service>(&()), true),
    (
        "PodDisruptionBudget",
        || ApiResource::erase::<PodDisruptionBudget>(&()),
        true,
    ),
    (
        "ServiceAccount",
        || ApiResource::erase::<ServiceAccount>(&()),
        true,
    ),
    ("Role", || ApiResource::erase::<Role>(&()), true),
    (
        "RoleBinding",
        || ApiResource::erase::<RoleBinding>(&()),
        true,
    ),
    (
        "HorizontalPodAutoscaler",
        || ApiResource::erase::<HorizontalPodAutoscaler>(&()),
        true,
    ),
    (
        "ValidatingAdmissionPolicy",
        || ApiResource::erase::<ValidatingAdmissionPolicy>(&()),
        false,
    ),
    (
        "ValidatingAdmissionPolicyBinding",
        || ApiResource::erase::<ValidatingAdmissionPolicyBinding>(&()),
        false,
    ),
    // The Prometheus Operator's CRD (k8s-openapi has no type for it); rendered only when a
    // region asks for it (`monitoring.podMonitor`). Its watch stops where it is not served.
    (
        "PodMonitor",
        || {
            ApiResource::from_gvk(&kube::core::GroupVersionKind::gvk(
                "monitoring.coreos.com",
                "v1",
                "PodMonitor",
            ))
        },
        true,
    ),
];

/// The API resource of a child kind; None for a kind the operator does not create.
pub fn api_resource(kind: &str) -> Option<ApiResource> {
    CHILD_KINDS
        .iter()
        .find(|(k, _, _)| *k == kind)
        .map(|(_, resource, _)| resource())
}

/// The child kinds whose resourceVersions are watched (see [`Versions`]).
pub fn watched_kinds() -> impl Iterator<Item = &'static str> {
    CHILD_KINDS
        .iter()
        .filter(|(_, _, watched)| *watched)
        .map(|(kind, _, _)| *kind)
}

/// A child: kind, namespace (empty when cluster-scoped), name.
pub type ChildKey = (String, String, String);

/// What the applier last verified of a child: the live object carried everything the
/// desired state of `hash` asks for, at `resource_version`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The content hash of the desired state ([`APPLIED_HASH_ANNOTATION`]).
    pub hash: String,
    /// The object's resourceVersion when it was verified.
    pub resource_version: String,
}

/// Whether [`Applier::apply`] must read the live object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The desired state is the one verified, and the object has not changed since: no
    /// request at all.
    Unchanged,
    /// Read the object and write it if it differs, as without a memo.
    Check(Why),
}

/// Why a child is read before it is (maybe) written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Why {
    /// Never verified by this process (a new object, or the first reconcile after a start).
    NotVerified,
    /// The desired state changed.
    DesiredChanged,
    /// The object changed since it was verified (another writer, its status, a rollout).
    Moved,
    /// The watch does not know the object: deleted, not seen yet, or its kind not watched.
    NotSeen,
}

/// The decision of [`Applier::apply`] before any request: skip only when the desired hash is
/// the one last verified and the watched resourceVersion is the one it was verified at. Any
/// write by anyone changes the resourceVersion, so a child changed by someone else is read
/// and corrected as without the memo.
pub fn verdict(verified: Option<&Verified>, desired_hash: &str, live: Option<&str>) -> Verdict {
    let Some(verified) = verified else {
        return Verdict::Check(Why::NotVerified);
    };
    if verified.hash != desired_hash {
        return Verdict::Check(Why::DesiredChanged);
    }
    match live {
        None => Verdict::Check(Why::NotSeen),
        Some(live) if live != verified.resource_version => Verdict::Check(Why::Moved),
        Some(_) => Verdict::Unchanged,
    }
}

/// What a child's watch and the applier know of it.
#[derive(Debug, Default)]
struct Known {
    /// The resourceVersion the watch last saw; None until it has seen the object (or while
    /// its kind is being listed again).
    live: Option<String>,
    /// What the applier last verified.
    verified: Option<Verified>,
}

/// The resourceVersions of the operator's children as one metadata watch per kind sees them
/// (`controllers::feeds`), beside what the applier last verified of each: process memory,
/// empty after a start, so the first apply of each child after a restart reads it.
#[derive(Debug, Default)]
pub struct Versions(Mutex<HashMap<ChildKey, Known>>);

impl Versions {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<ChildKey, Known>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The watch saw `key` at `resource_version`.
    pub fn seen(&self, key: ChildKey, resource_version: String) {
        self.entries().entry(key).or_default().live = Some(resource_version);
    }

    /// The watch saw `key` deleted: nothing of it is known any more.
    pub fn gone(&self, key: &ChildKey) {
        self.entries().remove(key);
    }

    /// The watch of `kind` lists again (it lost track): until the list has seen an object,
    /// its resourceVersion is unknown, so it is read before the next apply.
    pub fn relisting(&self, kind: &str) {
        for (key, known) in self.entries().iter_mut() {
            if key.0 == kind {
                known.live = None;
            }
        }
    }

    /// The applier verified that `key` carries the desired state of `hash` at
    /// `resource_version`.
    pub fn verified(&self, key: ChildKey, hash: String, resource_version: String) {
        self.entries().entry(key).or_default().verified = Some(Verified {
            hash,
            resource_version,
        });
    }

    /// [`verdict`] for `key` and the desired state of `hash`.
    pub fn verdict(&self, key: &ChildKey, hash: &str) -> Verdict {
        let entries = self.entries();
        let known = entries.get(key);
        verdict(
            known.and_then(|k| k.verified.as_ref()),
            hash,
            known.and_then(|k| k.live.as_deref()),
        )
    }
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
    /// An applier writing as `manager`, skipping the children `versions` knows unchanged.
    pub fn new(
        client: Client,
        manager: &'static str,
        metrics: SharedMetrics,
        versions: Arc<Versions>,
    ) -> Self {
        Self {
            client,
            manager,
            metrics,
            versions,
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
    /// Sends no request at all when the desired state is the one last verified and the
    /// object's watched resourceVersion has not moved since ([`verdict`]).
    pub async fn apply(&self, child: &Child) -> Result<bool, ApplyError> {
        let (kind, meta) = child.kind_and_meta();
        let name = meta.name.clone().unwrap_or_default();
        let object = child.describe();
        let Some(api) = self.api(kind, meta.namespace.as_deref()) else {
            return Ok(false);
        };
        let mut desired = child.to_json()?;
        let hash = content_hash(&desired.to_string());
        let key: ChildKey = (
            kind.to_owned(),
            meta.namespace.clone().unwrap_or_default(),
            name.clone(),
        );
        if self.versions.verdict(&key, &hash) == Verdict::Unchanged {
            return Ok(false);
        }
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
            let version = live.metadata.resource_version.clone();
            let live = serde_json::to_value(&live).unwrap_or(Value::Null);
            if is_subset(&desired, &live) {
                if let Some(version) = version {
                    self.versions.verified(key, hash, version);
                }
                return Ok(false);
            }
        }
        let applied = api
            .patch(
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
        // Remembered only when the response carries the desired state: were a webhook to
        // change a field back, the object is read and written again each time, as before.
        let version = applied.metadata.resource_version.clone();
        if let Some(version) = version
            && is_subset(
                &desired,
                &serde_json::to_value(&applied).unwrap_or(Value::Null),
            )
        {
            self.versions.verified(key, hash, version);
        }
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

    fn verified(hash: &str, version: &str) -> Verified {
        Verified {
            hash: hash.to_owned(),
            resource_version: version.to_owned(),
        }
    }

    #[test]
    fn a_child_is_skipped_only_when_verified_at_the_version_the_watch_sees() {
        let memo = verified("h1", "41");
        // After a restart, or for a new child: read it.
        assert_eq!(
            verdict(None, "h1", Some("41")),
            Verdict::Check(Why::NotVerified)
        );
        // The spec changed: read (and most likely write) it.
        assert_eq!(
            verdict(Some(&memo), "h2", Some("41")),
            Verdict::Check(Why::DesiredChanged)
        );
        // Someone else (or the status) changed it: read and correct it.
        assert_eq!(
            verdict(Some(&memo), "h1", Some("57")),
            Verdict::Check(Why::Moved)
        );
        // Deleted, or not seen by the watch yet: read (and recreate) it.
        assert_eq!(
            verdict(Some(&memo), "h1", None),
            Verdict::Check(Why::NotSeen)
        );
        assert_eq!(verdict(Some(&memo), "h1", Some("41")), Verdict::Unchanged);
    }

    #[test]
    fn the_watch_forgets_deleted_children_and_what_it_lists_again() {
        let versions = Versions::default();
        let key = |kind: &str| (kind.to_owned(), "ns".to_owned(), "gateway".to_owned());
        versions.verified(key("Deployment"), "h".into(), "7".into());
        assert_eq!(
            versions.verdict(&key("Deployment"), "h"),
            Verdict::Check(Why::NotSeen),
            "the watch has not seen the write yet"
        );
        versions.seen(key("Deployment"), "7".into());
        versions.seen(key("Service"), "9".into());
        versions.verified(key("Service"), "s".into(), "9".into());
        assert_eq!(
            versions.verdict(&key("Deployment"), "h"),
            Verdict::Unchanged
        );
        // A relist of Deployments: unknown until listed, other kinds untouched.
        versions.relisting("Deployment");
        assert_eq!(
            versions.verdict(&key("Deployment"), "h"),
            Verdict::Check(Why::NotSeen)
        );
        assert_eq!(versions.verdict(&key("Service"), "s"), Verdict::Unchanged);
        versions.seen(key("Deployment"), "7".into());
        assert_eq!(
            versions.verdict(&key("Deployment"), "h"),
            Verdict::Unchanged
        );
        // Deleted (and maybe recreated by someone else with the same content): read again.
        versions.gone(&key("Deployment"));
        versions.seen(key("Deployment"), "12".into());
        assert_eq!(
            versions.verdict(&key("Deployment"), "h"),
            Verdict::Check(Why::NotVerified)
        );
    }

    #[test]
    fn every_child_kind_has_an_api_resource_of_its_name() {
        for (kind, resource, _) in CHILD_KINDS {
            assert_eq!(resource().kind, kind);
            assert!(api_resource(kind).is_some());
        }
        assert!(api_resource("Pod").is_none());
        assert!(watched_kinds().any(|k| k == "Deployment"));
        assert!(!watched_kinds().any(|k| k == "ValidatingAdmissionPolicy"));
    }

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
