//! The InferenceBackend controller: checks the backend against its region and the residency
//! policies, runs self-hosted models on the region's GPU nodes, and reports readiness. A
//! pipeline: [`observe`] (the region, the policies, the Secrets it names, its vLLM
//! Deployment and pods) → [`decide`] (pure) → apply → write status.

mod decide;
mod observe;

use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use tracing::{Instrument, info_span};

use super::feeds::{ChildMeta, Triggers};
use super::{Context, Error};
use crate::api::backend::InferenceBackend;
use crate::api::policy::ResidencyPolicy;
use crate::api::region::SovereignRegion;
pub use decide::{Decision, decide};
pub use observe::{Observed, observe};

/// Field manager of everything this controller writes.
pub const MANAGER: &str = "sovereign-operator-backend";
/// Kinds a backend owns; orphans of these are deleted.
const OWNED_KINDS: [&str; 5] = [
    "Deployment",
    "Service",
    "PodDisruptionBudget",
    "HorizontalPodAutoscaler",
    "PodMonitor",
];

/// The shared watches the controller runs on (`controllers::feeds`).
pub struct Feeds {
    /// The backends (the store is `Context::stores.backends`).
    pub backends: Triggers<InferenceBackend>,
    /// A region that appears, changes or disappears re-evaluates its backends.
    pub regions: Triggers<SovereignRegion>,
    /// A policy change can make any backend (non-)compliant.
    pub policies: Triggers<ResidencyPolicy>,
    /// The operator's Deployments (metadata): a backend's vLLM Deployment re-triggers it.
    /// None where Deployments are not watched.
    pub deployments: Option<Triggers<ChildMeta>>,
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    feeds: Feeds,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let store = ctx.stores.backends.clone();
    let policy_store = store.clone();
    let mut controller = super::controller_for(feeds.backends, store.clone(), super::CONCURRENCY)
        .watches_stream(feeds.regions, move |region: SovereignRegion| {
            let name = region.name_any();
            store
                .state()
                .into_iter()
                .filter(|b| b.spec.region == name)
                .map(|b| ObjectRef::from_obj(&*b))
                .collect::<Vec<_>>()
        })
        .watches_stream(feeds.policies, move |_policy: ResidencyPolicy| {
            policy_store
                .state()
                .into_iter()
                .map(|b| ObjectRef::from_obj(&*b))
                .collect::<Vec<_>>()
        });
    // Owner references name the backend, so the region's gateway Deployment triggers nothing
    // here.
    if let (Some(owned), Some(resource)) =
        (feeds.deployments, super::apply::api_resource("Deployment"))
    {
        controller = controller.owns_stream_with(owned, resource);
    }
    super::drive("backend", controller, ctx, reconcile, shutdown).await;
}

async fn reconcile(backend: Arc<InferenceBackend>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!(
        "reconcile",
        controller = "backend",
        backend = %backend.name_any(),
        namespace = %backend.namespace().unwrap_or_default(),
        region = %backend.spec.region
    );
    reconcile_inner(&backend, &ctx).instrument(span).await
}

async fn reconcile_inner(backend: &InferenceBackend, ctx: &Context) -> Result<Action, Error> {
    let observed = observe(ctx, backend).await?;
    let decision = decide(backend, &observed, &ctx.scope, Timestamp::now())?;
    let current = backend.status.clone().unwrap_or_default();
    if let Some(children) = &decision.children {
        super::apply_children(
            ctx,
            MANAGER,
            backend,
            current.observed_generation,
            &OWNED_KINDS,
            &backend.namespace().unwrap_or_default(),
            children,
        )
        .await?;
    }
    super::status::write(ctx, MANAGER, backend, &current, &decision.status).await?;
    Ok(decision.requeue)
}
