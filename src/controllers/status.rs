//! The one status writer of the controllers: a server-side apply of the whole status under
//! the controller's field manager, skipped when nothing changed, followed by an Event when
//! the `Ready` condition flipped.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Api, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Context, Error};
use crate::api::backend::InferenceBackendStatus;
use crate::api::budget::TokenBudgetStatus;
use crate::api::conditions;
use crate::api::policy::ResidencyPolicyStatus;
use crate::api::region::SovereignRegionStatus;

/// A status with conditions.
pub trait Conditioned: Serialize + PartialEq {
    /// The conditions of the status.
    fn conditions(&self) -> &[Condition];
}

macro_rules! conditioned {
    ($($status:ty),*) => {$(
        impl Conditioned for $status {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
        }
    )*};
}
conditioned!(
    SovereignRegionStatus,
    InferenceBackendStatus,
    TokenBudgetStatus,
    ResidencyPolicyStatus
);

/// The Event announcing a change of the `Ready` condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadyEvent {
    /// Warning when the object stopped being ready, Normal otherwise.
    pub warning: bool,
    /// The condition's reason.
    pub reason: String,
    /// The condition's message.
    pub note: String,
}

/// The Event to publish when `Ready` differs between `old` and `new` (a first `Ready` counts
/// as a change); None when it did not change or `new` has none.
pub fn ready_transition(old: &[Condition], new: &[Condition]) -> Option<ReadyEvent> {
    let ready = conditions::find(new, conditions::READY)?;
    let was = conditions::find(old, conditions::READY).map(|c| c.status.as_str());
    (was != Some(ready.status.as_str())).then(|| ReadyEvent {
        warning: ready.status == "False",
        reason: ready.reason.clone(),
        note: ready.message.clone(),
    })
}

/// Writes `new` as the status of `object` under `manager` unless it equals `old`; returns
/// whether it wrote. The whole status is applied, so a field the controller stopped setting
/// goes away. A change of `Ready` is announced as an Event (failures to publish are logged).
pub async fn write<K, S>(
    ctx: &Context,
    manager: &'static str,
    object: &K,
    old: &S,
    new: &S,
) -> Result<bool, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    K::Scope: ScopedApi,
    S: Conditioned,
{
    if new == old {
        return Ok(false);
    }
    let kind = K::kind(&());
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": kind,
        "status": new,
    });
    let api: Api<K> = K::Scope::api(ctx.client.clone(), object.namespace().as_deref());
    api.patch_status(
        &object.name_any(),
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(|source| Error::WriteStatus {
        object: super::ObjectKey::of(object),
        source,
    })?;
    ctx.metrics.wrote(manager, &kind, "status");
    if let Some(event) = ready_transition(old.conditions(), new.conditions()) {
        let type_ = if event.warning {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.event(object, type_, &event.reason, event.note).await;
    }
    Ok(true)
}

/// How to address a kind of the given scope.
pub trait ScopedApi {
    /// The Api for an object in `namespace` (ignored for cluster-scoped kinds).
    fn api<K>(client: kube::Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = Self>;
}

impl ScopedApi for k8s_openapi::ClusterResourceScope {
    fn api<K>(client: kube::Client, _namespace: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = Self>,
    {
        Api::all(client)
    }
}

impl ScopedApi for k8s_openapi::NamespaceResourceScope {
    fn api<K>(client: kube::Client, namespace: Option<&str>) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = Self>,
    {
        Api::namespaced(client, namespace.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: &str, reason: &str) -> Vec<Condition> {
        let mut list = Vec::new();
        conditions::upsert(
            &mut list,
            conditions::DesiredCondition {
                type_: conditions::READY,
                status: match status {
                    "True" => conditions::Status::True,
                    "False" => conditions::Status::False,
                    _ => conditions::Status::Unknown,
                },
                reason,
                message: format!("{reason} message"),
            },
            Some(1),
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        );
        list
    }

    #[test]
    fn a_flip_of_ready_is_announced_once() {
        let event = ready_transition(&ready("True", "Ready"), &ready("False", "NotReady"))
            .expect("True → False is announced");
        assert!(event.warning);
        assert_eq!(event.reason, "NotReady");
        assert_eq!(event.note, "NotReady message");

        let first = ready_transition(&[], &ready("True", "Ready")).expect("a first Ready");
        assert!(!first.warning);
        // Same status, another reason or message: no Event.
        assert_eq!(
            ready_transition(&ready("False", "Progressing"), &ready("False", "NotReady")),
            None
        );
        // A status without Ready (a TokenBudget's): no Event.
        assert_eq!(ready_transition(&ready("True", "Ready"), &[]), None);
        // Unknown (managed elsewhere) is a change, and not a warning.
        let elsewhere = ready_transition(&ready("True", "Ready"), &ready("Unknown", "X"))
            .expect("True → Unknown");
        assert!(!elsewhere.warning);
    }
}
