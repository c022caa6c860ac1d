//! The ResidencyPolicy controller: compiles each policy into a ValidatingAdmissionPolicy on
//! every policy or region change and reports it (the Enforcing condition). The audit of what
//! already exists is `controllers::audit`.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, ResourceExt};
use tracing::{Instrument, info_span};

use super::{Context, Error, updated_conditions};
use crate::api::conditions::{self, DesiredCondition, Status};
use crate::api::policy::{PolicyMode, ResidencyPolicy};
use crate::api::region::SovereignRegion;
use crate::render::Child;
use crate::residency::admission;

/// Field manager of the status this controller writes.
pub const MANAGER: &str = "sovereign-operator-policy";

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let controller = Controller::new(
        Api::<ResidencyPolicy>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .with_config(controller::Config::default().concurrency(2));
    let store = controller.store();
    controller
        // Regions define where data may be: a change re-audits every policy.
        .watches(
            Api::<SovereignRegion>::all(client),
            watcher::Config::default(),
            move |_region: SovereignRegion| {
                store
                    .state()
                    .into_iter()
                    .map(|p| ObjectRef::from_obj(&*p))
                    .collect::<Vec<_>>()
            },
        )
        .graceful_shutdown_on(shutdown)
        .run(reconcile, super::error_policy, ctx)
        .for_each(|_| futures::future::ready(()))
        .await;
}

async fn reconcile(policy: Arc<ResidencyPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", controller = "policy", policy = %policy.name_any());
    super::measured(
        "policy",
        &*policy,
        &ctx,
        admit(&policy, &ctx).instrument(span),
    )
    .await
}

/// Compiles the policy for the API server and reports it: the Enforcing condition and the
/// generated policies' names. The audit of what exists (violations, Ready) is
/// `controllers::audit`, with its own field manager.
async fn admit(policy: &ResidencyPolicy, ctx: &Context) -> Result<Action, Error> {
    let name = policy.name_any();
    let regions = Api::<SovereignRegion>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("list SovereignRegions", e))?
        .items;
    let current = policy.status.clone().unwrap_or_default();
    // Admission: the same policy compiled for the API server, regenerated on every policy or
    // region change, applied only when it changed.
    let (enforcing, admission_policies) = match install_admission(policy, &regions, ctx).await? {
        Ok(installed) => {
            let condition = match policy.spec.mode {
                PolicyMode::Enforce => DesiredCondition {
                    type_: conditions::ENFORCING,
                    status: Status::True,
                    reason: "AdmissionInstalled",
                    message: format!(
                        "the API server denies violating objects ({})",
                        installed.join(", ")
                    ),
                },
                PolicyMode::Audit => DesiredCondition {
                    type_: conditions::ENFORCING,
                    status: Status::False,
                    reason: "AuditMode",
                    message: format!(
                        "the API server warns about violating objects and audits them ({})",
                        installed.join(", ")
                    ),
                },
            };
            (condition, installed)
        }
        Err(message) => (
            DesiredCondition {
                type_: conditions::ENFORCING,
                status: Status::False,
                reason: "AdmissionNotCompiled",
                message,
            },
            Vec::new(),
        ),
    };
    let generation = policy.metadata.generation;
    let enforcing: Vec<_> = updated_conditions(&current.conditions, vec![enforcing], generation)
        .into_iter()
        .filter(|c| c.type_ == conditions::ENFORCING)
        .collect();
    let before: Vec<_> = current
        .conditions
        .iter()
        .filter(|c| c.type_ == conditions::ENFORCING)
        .cloned()
        .collect();
    if current.observed_generation != generation
        || current.admission_policies != admission_policies
        || enforcing != before
    {
        // Only the fields this controller owns: the audit's (violations, Ready) are another
        // field manager's and stay.
        let mut status = serde_json::json!({"conditions": enforcing});
        if let Some(generation) = generation {
            status["observedGeneration"] = generation.into();
        }
        if !admission_policies.is_empty() {
            status["admissionPolicies"] = serde_json::json!(admission_policies);
        }
        let patch = serde_json::json!({
            "apiVersion": "sovereign.ai/v1alpha1",
            "kind": "ResidencyPolicy",
            "status": status,
        });
        Api::<ResidencyPolicy>::all(ctx.client.clone())
            .patch_status(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|e| Error::kube("patch ResidencyPolicy status", e))?;
        ctx.metrics.wrote(MANAGER, "ResidencyPolicy", "status");
    }
    // Nothing to do until the policy or a region changes (both watched).
    Ok(Action::await_change())
}

/// Compiles the policy into its ValidatingAdmissionPolicy and binding and applies them. The
/// outer error is a failed request (retried); the inner one a policy that cannot be compiled
/// (reported in the Enforcing condition).
async fn install_admission(
    policy: &ResidencyPolicy,
    regions: &[SovereignRegion],
    ctx: &Context,
) -> Result<Result<Vec<String>, String>, Error> {
    let objects = match admission::compile(policy, regions) {
        Ok(objects) => objects,
        Err(error) => return Ok(Err(error.to_string())),
    };
    let name = objects.policy.metadata.name.clone().unwrap_or_default();
    let applier = ctx.applier(MANAGER);
    // The policy first, so the binding never points at nothing.
    applier.apply(&Child::from(objects.policy)).await?;
    applier.apply(&Child::from(objects.binding)).await?;
    Ok(Ok(vec![name]))
}
