//! The SovereignRegion controller: provisions the region's namespace, network policies,
//! gateway, vector store and observability, and reports their readiness. A pipeline:
//! [`observe`] (the region's backends and its children's status) → [`decide`] (pure: the
//! children, the status, when to look again) → apply → write status.

mod decide;
mod observe;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::{Instrument, info_span};

use super::{Context, Error};
use crate::api::backend::InferenceBackend;
use crate::api::labels;
use crate::api::region::SovereignRegion;
pub use decide::{Decision, decide};
pub use observe::{Observed, observe};

/// Field manager of everything this controller writes.
pub const MANAGER: &str = "sovereign-operator-region";
/// Kinds a region owns in its namespace; orphans of these are deleted. Never the Namespace.
const OWNED_KINDS: [&str; 9] = [
    "NetworkPolicy",
    "ConfigMap",
    "Deployment",
    "StatefulSet",
    "Service",
    "PodDisruptionBudget",
    "ServiceAccount",
    "Role",
    "RoleBinding",
];

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    // Only objects the operator labelled: the operator stays small when the cluster is big.
    let owned = || watcher::Config::default().labels(&labels::managed_selector());
    let controller = super::controller::<SovereignRegion>(&client, super::CONCURRENCY)
        // Backends of a region turn Ready one after another; gathering the triggers of one
        // second renders the gateway once for all of them instead of once per backend.
        .with_config(
            controller::Config::default()
                .debounce(Duration::from_secs(1))
                .concurrency(super::CONCURRENCY),
        )
        .owns(Api::<Deployment>::all(client.clone()), owned())
        .owns(Api::<StatefulSet>::all(client.clone()), owned())
        .owns(Api::<ConfigMap>::all(client.clone()), owned())
        // A backend that changes (spec or readiness) re-renders its region's gateway.
        .watches(
            Api::<InferenceBackend>::all(client),
            watcher::Config::default(),
            |backend: InferenceBackend| {
                Some(ObjectRef::<SovereignRegion>::new(&backend.spec.region))
            },
        );
    super::drive("region", controller, ctx, reconcile, shutdown).await;
}

async fn reconcile(region: Arc<SovereignRegion>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", controller = "region", region = %region.name_any());
    reconcile_inner(&region, &ctx).instrument(span).await
}

async fn reconcile_inner(region: &SovereignRegion, ctx: &Context) -> Result<Action, Error> {
    // observe (nothing for a region another instance manages)
    let observed = if ctx.scope.manages(&region.name_any()) {
        Some(observe(ctx, region).await?)
    } else {
        None
    };
    // decide
    let decision = decide(region, observed.as_ref(), &ctx.scope, Timestamp::now())?;
    if let Some(error) = &decision.evidence_error {
        tracing::warn!(%error, "evidence summary not derived; the last one is kept");
    }
    if let Some(summary) = &decision.status.evidence {
        ctx.metrics.region_data_paths(&region.name_any(), summary);
    }
    for (model, fallback) in &decision.dropped_fallbacks {
        tracing::info!(
            model,
            fallback,
            "fallback dropped: no backend of this region serves it"
        );
    }
    // apply
    let current = region.status.clone().unwrap_or_default();
    if let Some(children) = &decision.children {
        super::apply_children(
            ctx,
            MANAGER,
            region,
            current.observed_generation,
            &OWNED_KINDS,
            &region.stack_namespace(),
            children,
        )
        .await?;
    }
    if decision.wake_usage {
        ctx.usage_wakeup.notify_one();
    }
    // status
    super::status::write(ctx, MANAGER, region, &current, &decision.status).await?;
    Ok(decision.requeue)
}
