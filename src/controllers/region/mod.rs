//! The SovereignRegion controller: provisions the region's namespace, network policies,
//! gateway, vector store and observability, and reports their readiness. A pipeline:
//! [`observe`] (the region's backends and its children's status) → [`decide`] (pure: the
//! children, the status, when to look again) → apply → write status.

mod decide;
mod observe;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::ObjectRef;
use tracing::{Instrument, info_span};

use super::feeds::{ChildMeta, Triggers};
use super::{Context, Error};
use crate::api::backend::InferenceBackend;
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

/// The shared watches the controller runs on (`controllers::feeds`).
pub struct Feeds {
    /// The regions (the store is `Context::stores.regions`).
    pub regions: Triggers<SovereignRegion>,
    /// The backends: a backend that changes (spec or readiness) re-renders its region.
    pub backends: Triggers<InferenceBackend>,
    /// The operator's Deployments, StatefulSets and ConfigMaps (metadata): a region's own
    /// re-trigger it. None where the kind is not watched.
    pub deployments: Option<Triggers<ChildMeta>>,
    /// See `deployments`.
    pub stateful_sets: Option<Triggers<ChildMeta>>,
    /// See `deployments`.
    pub config_maps: Option<Triggers<ChildMeta>>,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    feeds: Feeds,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let mut controller = super::controller_for(
        feeds.regions,
        ctx.stores.regions.clone(),
        super::CONCURRENCY,
    )
    // Backends of a region turn Ready one after another; gathering the triggers of one
    // second renders the gateway once for all of them instead of once per backend.
    .with_config(
        controller::Config::default()
            .debounce(Duration::from_secs(1))
            .concurrency(super::CONCURRENCY),
    )
    // A backend that changes (spec or readiness) re-renders its region's gateway.
    .watches_stream(feeds.backends, |backend: InferenceBackend| {
        Some(ObjectRef::<SovereignRegion>::new(&backend.spec.region))
    });
    // Only objects the operator labelled (the feeds' selector): the operator stays small when
    // the cluster is big.
    for (kind, owned) in [
        ("Deployment", feeds.deployments),
        ("StatefulSet", feeds.stateful_sets),
        ("ConfigMap", feeds.config_maps),
    ] {
        if let (Some(owned), Some(resource)) = (owned, super::apply::api_resource(kind)) {
            controller = controller.owns_stream_with(owned, resource);
        }
    }
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
    if !decision.awaiting_judgement.is_empty() {
        tracing::debug!(
            backends = ?decision.awaiting_judgement,
            "not rendered yet: new backends are being judged"
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
