//! The ResidencyPolicy controller: compiles each policy into a ValidatingAdmissionPolicy on
//! every policy or region change and reports it (the Enforcing condition). A pipeline: observe
//! (the regions) → decide ([`admission::plan`], [`admission::enforcing`], pure) → apply →
//! write the fields of status this controller owns. The audit of what already exists is
//! `controllers::audit`, under its own field manager.

use std::sync::Arc;

use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use tracing::{Instrument, info_span};

use super::{Context, Error, ObjectKey, Read, admission, updated_conditions};
use crate::api::conditions;
use crate::api::policy::ResidencyPolicy;
use crate::api::region::SovereignRegion;

/// Field manager of the status this controller writes.
pub const MANAGER: &str = "sovereign-operator-policy";

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let controller = super::controller::<ResidencyPolicy>(&client, 2);
    let store = controller.store();
    let controller = controller
        // Regions are compiled into each policy's CEL (`facts`): a change recompiles every
        // policy.
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
        );
    super::drive("policy", controller, ctx, reconcile, shutdown).await;
}

async fn reconcile(policy: Arc<ResidencyPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", controller = "policy", policy = %policy.name_any());
    admit(&policy, &ctx).instrument(span).await
}

/// Compiles the policy for the API server and reports it: the Enforcing condition and the
/// generated policies' names.
async fn admit(policy: &ResidencyPolicy, ctx: &Context) -> Result<Action, Error> {
    // observe
    let regions = Api::<SovereignRegion>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| Read::list::<SovereignRegion>(None).failed(e))?
        .items;
    // decide
    let plan = admission::plan(policy, &regions);
    let current = policy.status.clone().unwrap_or_default();
    let generation = policy.metadata.generation;
    let desired = admission::enforcing(policy.spec.mode, &plan.outcome);
    let enforcing: Vec<_> = updated_conditions(&current.conditions, vec![desired], generation)
        .into_iter()
        .filter(|c| c.type_ == conditions::ENFORCING)
        .collect();
    let before: Vec<_> = current
        .conditions
        .iter()
        .filter(|c| c.type_ == conditions::ENFORCING)
        .cloned()
        .collect();
    let admission_policies = plan.outcome.clone().unwrap_or_default();
    // apply (only what changed is written)
    admission::install(ctx, MANAGER, &plan).await?;
    // status: only the fields this controller owns; the audit's (violations, Ready) belong
    // to another field manager and stay.
    if current.observed_generation != generation
        || current.admission_policies != admission_policies
        || enforcing != before
    {
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
                &policy.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
            .map_err(|source| Error::WriteStatus {
                object: ObjectKey::of(policy),
                source,
            })?;
        ctx.metrics.wrote(MANAGER, "ResidencyPolicy", "status");
    }
    // Nothing to do until the policy or a region changes (both watched).
    Ok(Action::await_change())
}
