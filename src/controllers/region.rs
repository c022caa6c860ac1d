//! The SovereignRegion controller: provisions the region's namespace, network policies,
//! gateway, vector store and observability, and reports their readiness.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{self, Action};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use tracing::{Instrument, info_span};

use super::{Context, Error, PROGRESS_CHECK, RESYNC, managed_elsewhere, updated_conditions};
use crate::api::backend::InferenceBackend;
use crate::api::conditions::{self, DesiredCondition, Status};
use crate::api::labels;
use crate::api::region::{BackendCount, SovereignRegion, SovereignRegionStatus, VectorStoreEngine};
use crate::render::region::region_plan;
use crate::render::{Owner, gateway, observability, vectorstore};
use crate::residency::observability::out_of_region_endpoints;

/// Field manager of everything this controller writes.
pub const MANAGER: &str = "sovereign-operator-region";
/// Kinds a region owns in its namespace; orphans of these are deleted. Never the Namespace.
const OWNED_KINDS: [&str; 6] = [
    "NetworkPolicy",
    "ConfigMap",
    "Deployment",
    "StatefulSet",
    "Service",
    "PodDisruptionBudget",
];

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    // Only objects the operator labelled: the operator stays small when the cluster is big.
    let owned = || watcher::Config::default().labels(&labels::managed_selector());
    Controller::new(
        Api::<SovereignRegion>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    // Backends of a region turn Ready one after another; gathering the triggers of one second
    // renders the gateway once for all of them instead of once per backend.
    // Bounded concurrency keeps memory and API load flat when a thousand objects arrive at once.
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
        Api::<InferenceBackend>::all(client.clone()),
        watcher::Config::default(),
        |backend: InferenceBackend| Some(ObjectRef::<SovereignRegion>::new(&backend.spec.region)),
    )
    .graceful_shutdown_on(shutdown)
    .run(reconcile, super::error_policy, ctx)
    .for_each(|_| futures::future::ready(()))
    .await;
}

async fn reconcile(region: Arc<SovereignRegion>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", controller = "region", region = %region.name_any());
    super::measured(
        "region",
        &*region,
        &ctx,
        reconcile_inner(&region, &ctx).instrument(span),
    )
    .await
}

async fn reconcile_inner(region: &SovereignRegion, ctx: &Context) -> Result<Action, Error> {
    let name = region.name_any();
    let namespace = region.stack_namespace();
    if !ctx.scope.manages(&name) {
        let types = [
            conditions::READY,
            conditions::GATEWAY_READY,
            conditions::VECTOR_STORE_READY,
            conditions::OBSERVABILITY_READY,
            conditions::COMPLIANT,
        ];
        let conditions = managed_elsewhere(&types, &ctx.scope, &name);
        write_status(region, ctx, conditions, None, None).await?;
        return Ok(Action::await_change());
    }

    // fetch: the region's backends, and which of them may serve
    let backends = super::region_backends(ctx, region).await?;
    let serving: Vec<&InferenceBackend> = backends.iter().filter(|b| b.may_serve()).collect();

    // build
    let owner = Owner {
        region: name.clone(),
        instance: name.clone(),
        reference: region.controller_owner_ref(&()),
    };
    let plan = region_plan(region, &owner, &serving).map_err(super::apply::ApplyError::from)?;
    for (model, fallback) in &plan.dropped_fallbacks {
        tracing::info!(
            model,
            fallback,
            "fallback dropped: no backend of this region serves it"
        );
    }

    // apply
    let applier = ctx.applier(MANAGER);
    for child in &plan.children {
        applier.apply(child).await?;
    }
    let observed = region.status.as_ref().and_then(|s| s.observed_generation);
    if let Some(uid) = region.uid()
        && ctx.should_prune(&uid, observed, region.metadata.generation)
    {
        applier
            .prune(&OWNED_KINDS, &namespace, &name, &uid, &plan.children)
            .await?;
        ctx.mark_pruned(&uid);
    }

    // A new region (or a changed one) gets its usage ledger and budget actions now rather
    // than at the collector's next interval.
    if observed != region.metadata.generation {
        ctx.usage_wakeup.notify_one();
    }

    // status
    let (gateway_ready, gateway_settled) = if plan.models.is_empty() {
        (
            condition(
                conditions::GATEWAY_READY,
                Status::False,
                "NoCompliantBackend",
                "no Ready and Compliant backend: the gateway serves no model (it never routes abroad)".into(),
            ),
            true,
        )
    } else {
        let (available, settled) = deployment_available(ctx, &namespace, gateway::NAME).await?;
        (
            condition(
                conditions::GATEWAY_READY,
                Status::from(available),
                if available {
                    "Available"
                } else {
                    "Progressing"
                },
                format!("serving {}", plan.models.join(", ")),
            ),
            settled,
        )
    };
    let (vector_ready, vector_settled) = vector_store_readiness(region, ctx, &namespace).await?;
    let (observability_ready, observability_settled) = if region
        .spec
        .observability
        .as_ref()
        .is_some_and(|o| o.otlp_endpoint.is_some())
    {
        let (available, settled) =
            deployment_available(ctx, &namespace, observability::COLLECTOR).await?;
        (
            condition(
                conditions::OBSERVABILITY_READY,
                Status::from(available),
                if available {
                    "Available"
                } else {
                    "Progressing"
                },
                "OpenTelemetry collector exporting to the region's endpoint".into(),
            ),
            settled,
        )
    } else {
        (
            condition(
                conditions::OBSERVABILITY_READY,
                Status::True,
                "NotConfigured",
                "no OTLP endpoint declared".into(),
            ),
            true,
        )
    };
    let problems = out_of_region_endpoints(region);
    let compliant = if problems.is_empty() {
        condition(
            conditions::COMPLIANT,
            Status::True,
            "InRegion",
            "observability endpoints are in-region hosts".into(),
        )
    } else {
        condition(
            conditions::COMPLIANT,
            Status::False,
            "ObservabilityOutOfRegion",
            problems.join("; "),
        )
    };
    let parts = [
        &gateway_ready,
        &vector_ready,
        &observability_ready,
        &compliant,
    ];
    let not_ready: Vec<&str> = parts
        .iter()
        .filter(|c| c.status != Status::True)
        .map(|c| c.type_)
        .collect();
    let ready = if not_ready.is_empty() {
        condition(
            conditions::READY,
            Status::True,
            "Ready",
            "the region's stack is up".into(),
        )
    } else {
        condition(
            conditions::READY,
            Status::False,
            "NotReady",
            format!("waiting for: {}", not_ready.join(", ")),
        )
    };
    let count = BackendCount {
        ready: i32::try_from(serving.len()).unwrap_or(i32::MAX),
        total: i32::try_from(backends.len()).unwrap_or(i32::MAX),
        summary: format!("{}/{}", serving.len(), backends.len()),
    };
    write_status(
        region,
        ctx,
        vec![
            ready,
            gateway_ready,
            vector_ready,
            observability_ready,
            compliant,
        ],
        Some(count),
        Some(&namespace),
    )
    .await?;
    Ok(
        if gateway_settled && vector_settled && observability_settled {
            Action::requeue(RESYNC)
        } else {
            Action::requeue(PROGRESS_CHECK)
        },
    )
}

fn condition(
    type_: &'static str,
    status: Status,
    reason: &'static str,
    message: String,
) -> DesiredCondition<'static> {
    DesiredCondition {
        type_,
        status,
        reason,
        message,
    }
}

/// (available, fully rolled out) of a Deployment.
async fn deployment_available(
    ctx: &Context,
    namespace: &str,
    name: &str,
) -> Result<(bool, bool), Error> {
    let deployment = super::get_cached(
        &Api::<Deployment>::namespaced(ctx.client.clone(), namespace),
        name,
    )
    .await
    .map_err(|e| Error::kube(format!("get Deployment {namespace}/{name}"), e))?;
    let status = deployment
        .as_ref()
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let wanted = deployment
        .as_ref()
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let available = status.available_replicas.unwrap_or(0);
    Ok((
        available >= 1,
        available >= wanted && status.updated_replicas.unwrap_or(0) >= wanted,
    ))
}

async fn vector_store_readiness(
    region: &SovereignRegion,
    ctx: &Context,
    namespace: &str,
) -> Result<(DesiredCondition<'static>, bool), Error> {
    let name = match region.spec.vector_store.engine {
        VectorStoreEngine::None => {
            return Ok((
                condition(
                    conditions::VECTOR_STORE_READY,
                    Status::True,
                    "Disabled",
                    "no vector store requested".into(),
                ),
                true,
            ));
        }
        VectorStoreEngine::Qdrant => vectorstore::QDRANT,
        VectorStoreEngine::PgVector => vectorstore::PGVECTOR,
    };
    let set = super::get_cached(
        &Api::<StatefulSet>::namespaced(ctx.client.clone(), namespace),
        name,
    )
    .await
    .map_err(|e| Error::kube(format!("get StatefulSet {namespace}/{name}"), e))?;
    let wanted = set
        .as_ref()
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let ready = set
        .as_ref()
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let all = ready >= wanted;
    Ok((
        condition(
            conditions::VECTOR_STORE_READY,
            Status::from(all),
            if all { "Available" } else { "Progressing" },
            format!("{ready}/{wanted} {name} replicas ready"),
        ),
        all,
    ))
}

async fn write_status(
    region: &SovereignRegion,
    ctx: &Context,
    desired: Vec<DesiredCondition<'_>>,
    backends: Option<BackendCount>,
    namespace: Option<&str>,
) -> Result<(), Error> {
    let current = region.status.clone().unwrap_or_default();
    let generation = region.metadata.generation;
    let status = SovereignRegionStatus {
        observed_generation: generation,
        conditions: updated_conditions(&current.conditions, desired, generation),
        backends,
        gateway_endpoint: namespace.map(gateway::endpoint),
        vector_store_endpoint: namespace.and_then(|_| vectorstore::vector_store_endpoint(region)),
        namespace: namespace.map(str::to_owned),
        evidence: current.evidence.clone(),
    };
    if status == current {
        return Ok(());
    }
    let was_ready =
        conditions::find(&current.conditions, conditions::READY).map(|c| c.status.clone());
    let patch = serde_json::json!({
        "apiVersion": "sovereign.ai/v1alpha1",
        "kind": "SovereignRegion",
        "status": status,
    });
    Api::<SovereignRegion>::all(ctx.client.clone())
        .patch_status(
            &region.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::kube("patch SovereignRegion status", e))?;
    ctx.metrics.wrote(MANAGER, "SovereignRegion", "status");
    if let Some(ready) = conditions::find(&status.conditions, conditions::READY)
        && was_ready.as_deref() != Some(ready.status.as_str())
    {
        let type_ = if ready.status == "False" {
            EventType::Warning
        } else {
            EventType::Normal
        };
        ctx.event(region, type_, &ready.reason, ready.message.clone())
            .await;
    }
    Ok(())
}
