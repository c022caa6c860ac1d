//! The ResidencyPolicy controller: audits what already exists in the cluster against each
//! policy — on every policy or region change and periodically — and reports violations in the
//! policy's status, as Events on the offending objects and as
//! `sovereign_residency_violations{policy,rule}`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::pinned_kind;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use serde_json::Value;
use tracing::{Instrument, info_span};

use super::{Context, Error, admission, updated_conditions};
use crate::api::conditions::{self, DesiredCondition, Status};
use crate::api::policy::{PolicyMode, ResidencyPolicy, ResidencyPolicyStatus, Violation};
use crate::api::region::SovereignRegion;
use crate::residency::engine::{Engine, Inventory};

/// Field manager of the status this controller writes.
pub const MANAGER: &str = "sovereign-operator-policy";
/// How often existing objects are audited when nothing triggers it.
pub const AUDIT_PERIOD: Duration = Duration::from_secs(60);
/// Violations listed in status (the count covers all).
pub const LISTED_VIOLATIONS: usize = 50;
/// Events published per audit at most, so a new policy over a large cluster cannot flood the
/// event store; the status count is complete regardless.
const EVENTS_PER_AUDIT: usize = 50;
/// An audit that finds the same as the last one refreshes `lastAuditTime` only this often:
/// a quiet cluster costs one status write per policy per ten minutes, not one a minute.
const AUDIT_TIME_REFRESH: Duration = Duration::from_secs(600);

/// The kinds the audit reads: (group, version, kind, metadata only), from the one kinds table
/// (`residency::kinds::KINDS`) the engine, admission and the tests use too. Metadata suffices
/// where the rules read only labels and location — and the operator never needs Secret values.
static AUDITED_KINDS: std::sync::LazyLock<Vec<(&str, &str, &str, bool)>> =
    std::sync::LazyLock::new(|| {
        crate::residency::kinds::audited()
            .map(|k| (k.group, k.version, k.kind, k.metadata_only))
            .collect()
    });

/// Runs the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    // Two at a time: an audit lists every audited kind of the cluster.
    let controller = super::controller::<ResidencyPolicy>(&client, 2);
    let store = controller.store();
    let controller = controller
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
        );
    super::drive("policy", controller, ctx, reconcile, shutdown).await;
}

async fn reconcile(policy: Arc<ResidencyPolicy>, ctx: Arc<Context>) -> Result<Action, Error> {
    let span = info_span!("reconcile", controller = "policy", policy = %policy.name_any());
    audit(&policy, &ctx).instrument(span).await
}

/// Every object of the audited kinds (and the policy's declared sink kinds) that the cluster
/// serves, as JSON with apiVersion and kind.
async fn cluster_objects(ctx: &Context, policy: &ResidencyPolicy) -> Result<Vec<Value>, Error> {
    let mut kinds: Vec<(String, String, String, bool)> = AUDITED_KINDS
        .iter()
        .map(|(g, v, k, m)| ((*g).to_owned(), (*v).to_owned(), (*k).to_owned(), *m))
        .collect();
    for sink in &policy.spec.sinks {
        for kind in &sink.kinds {
            // The version comes from discovery below; an empty one asks for the preferred.
            kinds.push((sink.group.clone(), String::new(), kind.clone(), false));
        }
    }
    let mut objects = Vec::new();
    for (group, version, kind, metadata_only) in kinds {
        let Some(resource) = served(ctx, &group, &version, &kind).await? else {
            continue;
        };
        let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &resource);
        let api_version = resource.api_version.clone();
        let items: Vec<Value> = if metadata_only {
            api.list_metadata(&ListParams::default())
                .await
                .map_err(|e| Error::kube(format!("list {kind}"), e))?
                .items
                .into_iter()
                .map(|item| serde_json::json!({"metadata": item.metadata}))
                .collect()
        } else {
            api.list(&ListParams::default())
                .await
                .map_err(|e| Error::kube(format!("list {kind}"), e))?
                .items
                .into_iter()
                .map(|item| serde_json::to_value(item).unwrap_or(Value::Null))
                .collect()
        };
        for mut item in items {
            if let Some(map) = item.as_object_mut() {
                // List items do not always carry their type; the engine needs it.
                map.insert("apiVersion".into(), Value::from(api_version.clone()));
                map.insert("kind".into(), Value::from(kind.clone()));
                objects.push(item);
            }
        }
    }
    Ok(objects)
}

/// The API resource of a kind, if the cluster serves it (third-party CRDs may be absent).
async fn served(
    ctx: &Context,
    group: &str,
    version: &str,
    kind: &str,
) -> Result<Option<ApiResource>, Error> {
    if version.is_empty() {
        let discovery = kube::discovery::group(&ctx.client, group).await;
        return Ok(discovery
            .ok()
            .and_then(|g| g.recommended_kind(kind).map(|(resource, _)| resource)));
    }
    let gvk = GroupVersionKind::gvk(group, version, kind);
    match pinned_kind(&ctx.client, &gvk).await {
        Ok((resource, _)) => Ok(Some(resource)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(kube::Error::Discovery(_)) => Ok(None),
        Err(e) => Err(Error::kube(format!("discover {kind}"), e)),
    }
}

async fn audit(policy: &ResidencyPolicy, ctx: &Context) -> Result<Action, Error> {
    let name = policy.name_any();
    let regions = Api::<SovereignRegion>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("list SovereignRegions", e))?
        .items;
    let mut objects = cluster_objects(ctx, policy).await?;
    // Our own resources are objects too (backends' hosting, regions' observability).
    for region in &regions {
        objects.push(serde_json::to_value(region).unwrap_or(Value::Null));
    }
    let backends = Api::<crate::api::InferenceBackend>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| Error::kube("list InferenceBackends", e))?;
    for backend in backends.items {
        objects.push(serde_json::to_value(backend).unwrap_or(Value::Null));
    }

    let engine = Engine::new(&regions, std::slice::from_ref(policy));
    let evaluation = engine.evaluate_with(&Inventory::of(objects.iter()), objects.iter());
    let findings: Vec<_> = evaluation
        .findings
        .iter()
        .filter(|f| f.policy.as_deref() == Some(name.as_str()))
        .collect();
    ctx.metrics
        .set_violations(&name, findings.iter().map(|f| f.rule.as_str()));

    let current = policy.status.clone().unwrap_or_default();
    let violations: Vec<Violation> = findings
        .iter()
        .take(LISTED_VIOLATIONS)
        .map(|f| f.to_violation())
        .collect();

    // Events for what is new since the last audit.
    let known: BTreeSet<(String, String, String, String)> =
        current.violations.iter().map(key).collect();
    let mut published = 0;
    for finding in &findings {
        let violation = finding.to_violation();
        if published >= EVENTS_PER_AUDIT || known.contains(&key(&violation)) {
            continue;
        }
        let reference = objects
            .iter()
            .find(|o| {
                o["kind"] == violation.kind.as_str()
                    && o["metadata"]["name"] == violation.name.as_str()
                    && o["metadata"]["namespace"].as_str().unwrap_or_default()
                        == violation.namespace
            })
            .map(object_reference);
        if let Some(reference) = reference {
            let event = Event {
                type_: EventType::Warning,
                reason: "ResidencyViolation".into(),
                note: Some(format!(
                    "{} ({name}): {}",
                    violation.rule, violation.message
                )),
                action: "Audit".into(),
                secondary: None,
            };
            if let Err(error) = ctx.recorder.publish(&event, &reference).await {
                tracing::warn!(%error, "cannot publish a violation event");
            }
            published += 1;
        }
    }

    tracing::info!(
        objects = objects.len(),
        violations = findings.len(),
        "audited"
    );
    let errors: Vec<String> = evaluation.errors.iter().map(ToString::to_string).collect();
    let ready = if errors.is_empty() {
        DesiredCondition {
            type_: conditions::READY,
            status: Status::True,
            reason: "Audited",
            // No object count here: it changes with every pod, and a status that changed on
            // every audit would be a write a minute for nothing.
            message: format!("the audit found {} violations", findings.len()),
        }
    } else {
        DesiredCondition {
            type_: conditions::READY,
            status: Status::False,
            reason: "InvalidSink",
            message: errors.join("; "),
        }
    };
    // Admission: the same policy compiled for the API server, regenerated on every audit (a
    // region change triggers one), applied only when it changed.
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
    let mut status = ResidencyPolicyStatus {
        observed_generation: generation,
        conditions: updated_conditions(&current.conditions, vec![ready, enforcing], generation),
        violation_count: Some(i64::try_from(findings.len()).unwrap_or(i64::MAX)),
        violations,
        admission_policies,
        last_audit_time: current.last_audit_time.clone(),
    };
    let stale = current.last_audit_time.as_ref().is_none_or(|t| {
        Timestamp::now().duration_since(t.0).as_secs() >= AUDIT_TIME_REFRESH.as_secs() as i64
    });
    if status != current || stale {
        status.last_audit_time = Some(Time(Timestamp::now()));
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
    Ok(Action::requeue(AUDIT_PERIOD))
}

fn key(v: &Violation) -> (String, String, String, String) {
    (
        v.kind.clone(),
        v.namespace.clone(),
        v.name.clone(),
        v.rule.clone(),
    )
}

fn object_reference(object: &Value) -> ObjectReference {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    ObjectReference {
        api_version: text(&object["apiVersion"]),
        kind: text(&object["kind"]),
        name: text(&object["metadata"]["name"]),
        namespace: text(&object["metadata"]["namespace"]),
        uid: text(&object["metadata"]["uid"]),
        ..ObjectReference::default()
    }
}

/// Compiles the policy into its ValidatingAdmissionPolicy and binding and applies them. The
/// outer error is a failed request (retried); the inner one a policy that cannot be compiled
/// (reported in the Enforcing condition, see [`admission::enforcing`]).
async fn install_admission(
    policy: &ResidencyPolicy,
    regions: &[SovereignRegion],
    ctx: &Context,
) -> Result<Result<Vec<String>, String>, Error> {
    let plan = admission::plan(policy, regions);
    admission::install(ctx, MANAGER, &plan).await?;
    Ok(plan.outcome)
}
