//! The InferenceBackend controller: checks the backend against its region and the residency
//! policies, runs self-hosted models on the region's GPU nodes, and reports readiness. A
//! pipeline: [`observe`] (the region, the policies, the Secrets it names, its vLLM
//! Deployment and pods) → [`decide`] (pure) → apply → write status.

mod decide;
mod observe;

use std::sync::Arc;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::{Instrument, info_span};

use super::{Context, Error};
use crate::api::backend::InferenceBackend;
use crate::api::labels;
use crate::api::policy::ResidencyPolicy;
use crate::api::region::SovereignRegion;
use crate::render::vllm;
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

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let owned = watcher::Config::default().labels(&format!(
        "{},{}={}",
        labels::managed_selector(),
        labels::COMPONENT,
        vllm::COMPONENT
    ));
    let controller = super::controller::<InferenceBackend>(&client, super::CONCURRENCY);
    let store = controller.store();
    let policy_store = store.clone();
    let controller = controller
        .owns(Api::<Deployment>::all(client.clone()), owned)
        // A region that appears, changes or disappears re-evaluates its backends.
        .watches(
            Api::<SovereignRegion>::all(client.clone()),
            watcher::Config::default(),
            move |region: SovereignRegion| {
                let name = region.name_any();
                store
                    .state()
                    .into_iter()
                    .filter(|b| b.spec.region == name)
                    .map(|b| ObjectRef::from_obj(&*b))
                    .collect::<Vec<_>>()
            },
        )
        // A policy change can make any backend (non-)compliant.
        .watches(
            Api::<ResidencyPolicy>::all(client),
            watcher::Config::default(),
            move |_policy: ResidencyPolicy| {
                policy_store
                    .state()
                    .into_iter()
                    .map(|b| ObjectRef::from_obj(&*b))
                    .collect::<Vec<_>>()
            },
        );
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
