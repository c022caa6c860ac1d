//! The InferenceBackend controller: checks the backend against its region and the residency
//! policies, runs self-hosted models on the region's GPU nodes, and reports readiness.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{self, Action};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Resource, ResourceExt};
use rust_decimal::Decimal;
use tracing::{Instrument, info_span};

use super::{Context, Error, PROGRESS_CHECK, RESYNC, managed_elsewhere, updated_conditions};
use crate::api::backend::{InferenceBackend, InferenceBackendStatus, ReplicaStatus};
use crate::api::common::Money;
use crate::api::conditions::{self, DesiredCondition, Status};
use crate::api::labels;
use crate::api::policy::ResidencyPolicy;
use crate::api::region::SovereignRegion;
use crate::render::{Owner, vllm};
use crate::residency::inference::hosting_violations;

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
    let backends = Api::<InferenceBackend>::all(client.clone());
    let owned = watcher::Config::default().labels(&format!(
        "{},{}={}",
        labels::managed_selector(),
        labels::COMPONENT,
        vllm::COMPONENT
    ));
    let controller = Controller::new(backends, watcher::Config::default().any_semantic())
        .with_config(controller::Config::default().concurrency(super::CONCURRENCY));
    let store = controller.store();
    let policy_store = store.clone();
    controller
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
            Api::<ResidencyPolicy>::all(client.clone()),
            watcher::Config::default(),
            move |_policy: ResidencyPolicy| {
                policy_store
                    .state()
                    .into_iter()
                    .map(|b| ObjectRef::from_obj(&*b))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, super::error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(backend: Arc<InferenceBackend>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!(
        "reconcile",
        controller = "backend",
        backend = %backend.name_any(),
        namespace = %backend.namespace().unwrap_or_default(),
        region = %backend.spec.region
    );
    super::measured(
        "backend",
        &*backend,
        &ctx,
        reconcile_inner(&backend, &ctx).instrument(span),
    )
    .await
}

/// What the reconcile found, turned into status at the end.
struct Verdict {
    conditions: Vec<DesiredCondition<'static>>,
    replicas: Option<ReplicaStatus>,
    endpoint: Option<String>,
    settled: bool,
}

async fn reconcile_inner(backend: &InferenceBackend, ctx: &Context) -> Result<Action, Error> {
    let client = &ctx.client;
    let namespace = backend.namespace().unwrap_or_default();
    let region_name = backend.spec.region.clone();

    // fetch
    let region = Api::<SovereignRegion>::all(client.clone())
        .get_opt(&region_name)
        .await
        .map_err(|e| Error::kube(format!("get SovereignRegion {region_name}"), e))?;
    let verdict = match region {
        None => not_ready(
            "RegionNotFound",
            format!("SovereignRegion {region_name} does not exist; create it or fix spec.region"),
        ),
        Some(_) if !ctx.scope.manages(&region_name) => {
            let conditions = managed_elsewhere(
                &[conditions::READY, conditions::COMPLIANT],
                &ctx.scope,
                &region_name,
            );
            return write_status(
                backend,
                ctx,
                Verdict {
                    conditions,
                    replicas: None,
                    endpoint: None,
                    settled: true,
                },
            )
            .await;
        }
        Some(region) if region.stack_namespace() != namespace => not_ready(
            "WrongNamespace",
            format!(
                "backends of region {region_name} must live in namespace {}, not {namespace}",
                region.stack_namespace()
            ),
        ),
        Some(region) => provision(backend, &region, ctx).await?,
    };
    write_status(backend, ctx, verdict).await
}

fn not_ready(reason: &'static str, message: String) -> Verdict {
    Verdict {
        conditions: vec![
            DesiredCondition {
                type_: conditions::READY,
                status: Status::False,
                reason,
                message: message.clone(),
            },
            DesiredCondition {
                type_: conditions::COMPLIANT,
                status: Status::Unknown,
                reason,
                message,
            },
        ],
        replicas: None,
        endpoint: None,
        // Waiting for the region (or a move) is event-driven: the region watch re-triggers.
        settled: true,
    }
}

/// validate → build → apply, for a backend whose region exists and is managed here.
async fn provision(
    backend: &InferenceBackend,
    region: &SovereignRegion,
    ctx: &Context,
) -> Result<Verdict, Error> {
    let client = &ctx.client;
    let namespace = region.stack_namespace();
    let name = backend.name_any();

    // validate: residency and secrets
    // From the watch cache: a policy change re-triggers every backend through the policy watch.
    let policies = Api::<ResidencyPolicy>::all(client.clone())
        .list(&ListParams::default().match_any())
        .await
        .map_err(|e| Error::kube("list ResidencyPolicies", e))?
        .items;
    let violations = hosting_violations(backend, region, &policies);
    let compliant = if let Some(first) = violations.first() {
        DesiredCondition {
            type_: conditions::COMPLIANT,
            status: Status::False,
            reason: first.reason,
            message: violations
                .iter()
                .map(|v| v.message.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        }
    } else {
        DesiredCondition {
            type_: conditions::COMPLIANT,
            status: Status::True,
            reason: "WithinJurisdiction",
            message: match &backend.spec.external {
                Some(e) => format!(
                    "hosted in {}, inside {}",
                    e.hosting_jurisdiction, region.spec.jurisdiction
                ),
                None => format!(
                    "self-hosted on nodes in {}",
                    region.spec.locations.join(", ")
                ),
            },
        }
    };
    let missing = missing_secrets(backend, &namespace, ctx).await?;

    // build + apply
    let owner = Owner {
        region: region.name_any(),
        instance: name.clone(),
        reference: backend.controller_owner_ref(&()),
    };
    let children = match vllm::vllm_children(backend, region, &owner) {
        Ok(children) => children,
        // The spec cannot be provisioned as it stands (weights from the public hub with no
        // in-region mirror): say so in status rather than only in the log. A change of the
        // backend or its region re-triggers the reconcile.
        Err(error @ crate::render::RenderError::NoInRegionModelSource { .. }) => {
            return Ok(not_ready("NoInRegionModelSource", error.to_string()));
        }
        Err(error) => return Err(super::apply::ApplyError::from(error).into()),
    };
    let applier = ctx.applier(MANAGER);
    for child in &children {
        applier.apply(child).await?;
    }
    let observed = backend.status.as_ref().and_then(|s| s.observed_generation);
    if let Some(uid) = backend.uid()
        && ctx.should_prune(&uid, observed, backend.metadata.generation)
    {
        applier
            .prune(&OWNED_KINDS, &namespace, &name, &uid, &children)
            .await?;
        ctx.mark_pruned(&uid);
    }

    // observe
    let (ready, replicas, settled) = if let Some(secret) = missing.first() {
        (
            DesiredCondition {
                type_: conditions::READY,
                status: Status::False,
                reason: "SecretNotFound",
                message: format!("Secret {namespace}/{secret} does not exist"),
            },
            None,
            // Secrets are not watched: look again shortly.
            false,
        )
    } else if backend.spec.vllm.is_some() {
        vllm_readiness(backend, &namespace, ctx).await?
    } else {
        (
            DesiredCondition {
                type_: conditions::READY,
                status: Status::from(compliant.status == Status::True),
                reason: if compliant.status == Status::True {
                    "Configured"
                } else {
                    "NotCompliant"
                },
                message: "external API configured; the gateway routes to it while it is Compliant"
                    .into(),
            },
            None,
            true,
        )
    };
    let endpoint = match &backend.spec.external {
        Some(external) => Some(external.endpoint.clone()),
        None => Some(vllm::endpoint(&name, &namespace)),
    };
    Ok(Verdict {
        conditions: vec![ready, compliant],
        replicas,
        endpoint,
        settled,
    })
}

/// Names of referenced Secrets that do not exist in the backend's namespace.
async fn missing_secrets(
    backend: &InferenceBackend,
    namespace: &str,
    ctx: &Context,
) -> Result<Vec<String>, Error> {
    let mut names = Vec::new();
    if let Some(external) = &backend.spec.external
        && let Some(secret) = &external.api_key_secret
    {
        names.push(secret.name.clone());
    }
    if let Some(source) = backend
        .spec
        .vllm
        .as_ref()
        .and_then(|v| v.model_source.as_ref())
    {
        if let Some(token) = source
            .hugging_face
            .as_ref()
            .and_then(|h| h.token_secret.as_ref())
        {
            names.push(token.name.clone());
        }
        if let Some(secret) = source
            .object_store
            .as_ref()
            .and_then(|o| o.credentials_secret.clone())
        {
            names.push(secret);
        }
    }
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let mut missing = Vec::new();
    for name in names {
        // Metadata only: the operator never needs to read secret values.
        let found = secrets
            .get_metadata_opt(&name)
            .await
            .map_err(|e| Error::kube(format!("get Secret {namespace}/{name}"), e))?;
        if found.is_none() {
            missing.push(name);
        }
    }
    Ok(missing)
}

/// Readiness of a vLLM backend from its Deployment and, when pods cannot be placed, from the
/// scheduler's verdict on them.
async fn vllm_readiness(
    backend: &InferenceBackend,
    namespace: &str,
    ctx: &Context,
) -> Result<(DesiredCondition<'static>, Option<ReplicaStatus>, bool), Error> {
    let name = vllm::workload_name(&backend.name_any());
    let deployment = super::get_cached(
        &Api::<Deployment>::namespaced(ctx.client.clone(), namespace),
        &name,
    )
    .await
    .map_err(|e| Error::kube(format!("get Deployment {namespace}/{name}"), e))?;
    let desired = deployment
        .as_ref()
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas)
        .or_else(|| {
            deployment
                .as_ref()
                .and_then(|d| d.status.as_ref())
                .and_then(|s| s.replicas)
        })
        .unwrap_or(0);
    let ready = deployment
        .as_ref()
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let replicas = Some(ReplicaStatus { desired, ready });
    if desired == 0
        && backend
            .spec
            .vllm
            .as_ref()
            .is_some_and(|v| v.replicas.min == 0)
    {
        return Ok((
            DesiredCondition {
                type_: conditions::READY,
                status: Status::False,
                reason: "Parked",
                message: "replicas.min is 0: no vLLM pods run and the gateway does not route here"
                    .into(),
            },
            replicas,
            true,
        ));
    }
    if ready >= 1 {
        return Ok((
            DesiredCondition {
                type_: conditions::READY,
                status: Status::True,
                reason: "Available",
                message: format!("{ready}/{desired} vLLM replicas ready"),
            },
            replicas,
            ready >= desired,
        ));
    }
    // Nothing ready: say why, from the pods.
    let selector = format!(
        "{}={},{}={}",
        labels::COMPONENT,
        vllm::COMPONENT,
        labels::INSTANCE,
        backend.name_any()
    );
    let pods = Api::<Pod>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default().labels(&selector).match_any())
        .await
        .map_err(|e| Error::kube(format!("list Pods of {namespace}/{name}"), e))?;
    let unschedulable = pods.items.iter().find_map(|pod| {
        pod.status
            .as_ref()?
            .conditions
            .as_ref()?
            .iter()
            .find_map(|c| {
                (c.type_ == "PodScheduled"
                    && c.status == "False"
                    && c.reason.as_deref() == Some("Unschedulable"))
                .then(|| c.message.clone().unwrap_or_default())
            })
    });
    let condition = match unschedulable {
        Some(message) => DesiredCondition {
            type_: conditions::READY,
            status: Status::False,
            reason: "Unschedulable",
            message: format!("no node in the region can run a replica: {message}"),
        },
        None => DesiredCondition {
            type_: conditions::READY,
            status: Status::False,
            reason: "Progressing",
            message: format!("0/{desired} vLLM replicas ready"),
        },
    };
    Ok((condition, replicas, false))
}

/// GPU-hours cost of the ready replicas: ready × GPUs per replica × hourly price.
fn hourly_cost(
    backend: &InferenceBackend,
    replicas: Option<&ReplicaStatus>,
) -> (Option<i32>, Option<Money>) {
    let Some(vllm) = &backend.spec.vllm else {
        return (None, None);
    };
    let ready = replicas.map(|r| r.ready).unwrap_or(0);
    let gpus = ready.saturating_mul(vllm.gpus.count);
    let cost = vllm.gpu_hourly_cost.as_ref().and_then(|price| {
        let amount: Decimal = price.amount.parse().ok()?;
        Some(Money {
            amount: (amount * Decimal::from(gpus)).normalize().to_string(),
            currency: price.currency.clone(),
        })
    });
    (Some(gpus), cost)
}

async fn write_status(
    backend: &InferenceBackend,
    ctx: &Context,
    verdict: Verdict,
) -> Result<Action, Error> {
    let current = backend.status.clone().unwrap_or_default();
    let generation = backend.metadata.generation;
    let (gpus, hourly) = hourly_cost(backend, verdict.replicas.as_ref());
    let status = InferenceBackendStatus {
        observed_generation: generation,
        conditions: updated_conditions(&current.conditions, verdict.conditions, generation),
        kind: Some(backend.spec.kind()),
        endpoint: verdict.endpoint,
        replicas: verdict.replicas,
        gpus,
        hourly_cost: hourly,
    };
    if status != current {
        let was_ready =
            conditions::find(&current.conditions, conditions::READY).map(|c| c.status.clone());
        let ready = conditions::find(&status.conditions, conditions::READY).cloned();
        let api = Api::<InferenceBackend>::namespaced(
            ctx.client.clone(),
            &backend.namespace().unwrap_or_default(),
        );
        let patch = serde_json::json!({
            "apiVersion": "sovereign.ai/v1alpha1",
            "kind": "InferenceBackend",
            "status": status,
        });
        api.patch_status(
            &backend.name_any(),
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
        .map_err(|e| Error::kube("patch InferenceBackend status", e))?;
        ctx.metrics.wrote(MANAGER, "InferenceBackend", "status");
        if let Some(ready) = ready
            && was_ready.as_deref() != Some(ready.status.as_str())
        {
            let type_ = if ready.status == "False" {
                EventType::Warning
            } else {
                EventType::Normal
            };
            ctx.event(backend, type_, &ready.reason, ready.message.clone())
                .await;
        }
    }
    Ok(if verdict.settled {
        Action::requeue(RESYNC)
    } else {
        Action::requeue(PROGRESS_CHECK)
    })
}
