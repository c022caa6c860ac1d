//! What the region controller wants, from what it observed: pure, so every condition
//! reason is unit-tested below.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};

use super::super::{PROGRESS_CHECK, RESYNC, RegionScope, conditions_at, managed_elsewhere};
use super::Observed;
use super::observe::CaBundle;
use crate::api::backend::InferenceBackend;
use crate::api::conditions::{self, DesiredCondition, Status};
use crate::api::region::{BackendCount, SovereignRegion, SovereignRegionStatus, VectorStoreEngine};
use crate::render::region::region_plan;
use crate::render::{Child, Owner, RenderError, gateway, vectorstore};
use crate::residency::observability::out_of_region_endpoints;

/// The outcome of one reconcile of a region.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The children to apply (and whose absence prunes the rest); None when another operator
    /// instance manages the region and nothing of it is touched.
    pub children: Option<Vec<Child>>,
    /// The status to write.
    pub status: SovereignRegionStatus,
    /// When to look again.
    pub requeue: Action,
    /// Whether the usage collector should run now (a new or changed region gets its ledger
    /// and budget actions at once rather than at the next interval).
    pub wake_usage: bool,
    /// Fallbacks dropped because nothing in the region serves them: (model, fallback).
    pub dropped_fallbacks: Vec<(String, String)>,
    /// Why the evidence summary could not be derived (the last one is kept in status).
    pub evidence_error: Option<String>,
    /// New backends not judged yet: nothing is applied until they are (or their grace ends).
    pub awaiting_judgement: Vec<String>,
}

/// The decision for `region`; `observed` is None when `scope` does not manage it.
pub fn decide(
    region: &SovereignRegion,
    observed: Option<&Observed>,
    scope: &RegionScope,
    now: Timestamp,
) -> Result<Decision, RenderError> {
    let name = region.name_any();
    let current = region.status.clone().unwrap_or_default();
    let generation = region.metadata.generation;
    let Some(observed) = observed.filter(|_| scope.manages(&name)) else {
        let types = [
            conditions::READY,
            conditions::GATEWAY_READY,
            conditions::VECTOR_STORE_READY,
            conditions::OBSERVABILITY_READY,
            conditions::COMPLIANT,
        ];
        let conditions = managed_elsewhere(&types, scope, &name);
        return Ok(Decision {
            children: None,
            status: SovereignRegionStatus {
                observed_generation: generation,
                conditions: conditions_at(&current.conditions, conditions, generation, now),
                // Written by the evidence report, kept as it is.
                evidence: current.evidence.clone(),
                ..SovereignRegionStatus::default()
            },
            requeue: Action::await_change(),
            wake_usage: false,
            dropped_fallbacks: Vec::new(),
            evidence_error: None,
            awaiting_judgement: Vec::new(),
        });
    };

    let namespace = region.stack_namespace();
    let serving: Vec<&InferenceBackend> =
        observed.backends.iter().filter(|b| b.may_serve()).collect();
    let owner = Owner {
        region: name.clone(),
        instance: name.clone(),
        reference: region.controller_owner_ref(&()),
    };
    let plan = region_plan(region, &owner, &serving)?;
    // The evidence summary of what this plan deploys, from the same code as the `evidence`
    // command: every backend (a refused one is a violation), every policy. Pure and
    // deterministic, so an unchanged region yields the same status and no write.
    let (evidence, evidence_error) = match crate::evidence::region_summary(
        region,
        &observed.backends,
        &observed.policies,
        &plan.children,
    ) {
        Ok(summary) => (Some(summary), None),
        Err(error) => (current.evidence.clone(), Some(error.to_string())),
    };

    // Backends created moments ago that their controller has not judged yet: rendering now
    // would roll the gateway again as each of them turns Ready (a region declared with 20
    // backends rolled it 8–9 times). Wait for them, never longer than JUDGEMENT_GRACE after
    // their creation, so a stalled backend controller cannot hold a region back.
    let unjudged = awaiting_judgement(&observed.backends, now);
    let (gateway_ready, gateway_settled) = if unjudged.wait.is_some() {
        (
            condition(
                conditions::GATEWAY_READY,
                Status::False,
                PROGRESSING,
                format!(
                    "new backends are being judged; the gateway is rendered once they are (at most {} s after their creation)",
                    JUDGEMENT_GRACE.as_secs()
                ),
            ),
            false,
        )
    } else if plan.models.is_empty() {
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
        let (available, settled) = deployment_available(observed.gateway.as_ref());
        (
            condition(
                conditions::GATEWAY_READY,
                Status::from(available),
                if available { "Available" } else { PROGRESSING },
                format!("serving {}", plan.models.join(", ")),
            ),
            settled,
        )
    };
    let (vector_ready, vector_settled) = vector_store_readiness(region, observed);
    let (observability_ready, observability_settled) = if region
        .spec
        .observability
        .as_ref()
        .is_some_and(|o| o.otlp_endpoint.is_some())
    {
        let (available, settled) = deployment_available(observed.collector.as_ref());
        let bundle = region
            .spec
            .observability
            .as_ref()
            .and_then(|o| o.ca_bundle.as_ref());
        let missing = match (observed.ca_bundle, bundle) {
            (Some(CaBundle::NoConfigMap), Some(b)) => Some(format!(
                "spec.observability.caBundle: ConfigMap {namespace}/{} not found; the collector cannot start without it",
                b.name
            )),
            (Some(CaBundle::NoKey), Some(b)) => Some(format!(
                "spec.observability.caBundle: ConfigMap {namespace}/{} has no key {:?}; the collector cannot start without it",
                b.name, b.key
            )),
            _ => None,
        };
        match missing {
            // Not settled: a region waits for the ConfigMap at the progress-check pace.
            Some(message) => (
                condition(
                    conditions::OBSERVABILITY_READY,
                    Status::False,
                    "CABundleNotFound",
                    message,
                ),
                false,
            ),
            None => (
                condition(
                    conditions::OBSERVABILITY_READY,
                    Status::from(available),
                    if available { "Available" } else { PROGRESSING },
                    "OpenTelemetry collector exporting to the region's endpoint".into(),
                ),
                settled,
            ),
        }
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
    let ready = ready_condition(&[
        &compliant,
        &gateway_ready,
        &vector_ready,
        &observability_ready,
    ]);
    let count = BackendCount {
        ready: i32::try_from(serving.len()).unwrap_or(i32::MAX),
        total: i32::try_from(observed.backends.len()).unwrap_or(i32::MAX),
        summary: format!("{}/{}", serving.len(), observed.backends.len()),
    };
    let desired = vec![
        ready,
        gateway_ready,
        vector_ready,
        observability_ready,
        compliant,
    ];
    let status = SovereignRegionStatus {
        observed_generation: generation,
        conditions: conditions_at(&current.conditions, desired, generation, now),
        backends: Some(count),
        gateway_endpoint: Some(gateway::endpoint(&namespace)),
        vector_store_endpoint: vectorstore::vector_store_endpoint(region),
        namespace: Some(namespace),
        evidence,
    };
    let requeue = match unjudged.wait {
        // Their statuses re-trigger this region; the deadline bounds the wait.
        Some(wait) => Action::requeue(wait),
        None if gateway_settled && vector_settled && observability_settled => {
            Action::requeue(RESYNC)
        }
        None => Action::requeue(PROGRESS_CHECK),
    };
    Ok(Decision {
        // Nothing is applied (nor pruned) while the backends are judged: what runs stays.
        children: unjudged.wait.is_none().then_some(plan.children),
        status,
        requeue,
        awaiting_judgement: unjudged.names,
        wake_usage: current.observed_generation != generation,
        dropped_fallbacks: plan.dropped_fallbacks,
        evidence_error,
    })
}

/// How long a region waits, after a backend's creation, for the backend controller's first
/// verdict on it before rendering without it. The verdict takes milliseconds when the
/// operator keeps up; a new region's stack starting a few seconds later costs less than a
/// gateway rolled once per backend.
pub const JUDGEMENT_GRACE: Duration = Duration::from_secs(GRACE_SECONDS.unsigned_abs());
const GRACE_SECONDS: i64 = 30;

/// Backends with no verdict yet, and how long to wait for them.
#[derive(Debug, Default, PartialEq)]
struct Unjudged {
    /// The backends still inside their grace (for the log), sorted.
    names: Vec<String>,
    /// Until the last of them is past its grace; None when there is nothing to wait for.
    wait: Option<Duration>,
}

/// Backends no verdict has been written for (no conditions in status) and created less than
/// [`JUDGEMENT_GRACE`] before `now`. One without a creation time (never so in a cluster) is
/// not waited for.
fn awaiting_judgement(backends: &[InferenceBackend], now: Timestamp) -> Unjudged {
    let mut names = Vec::new();
    let mut wait = None::<Duration>;
    for backend in backends {
        let judged = backend
            .status
            .as_ref()
            .is_some_and(|s| !s.conditions.is_empty());
        let Some(created) = backend.metadata.creation_timestamp.as_ref() else {
            continue;
        };
        if judged {
            continue;
        }
        let age = match Duration::try_from(now.duration_since(created.0)) {
            Ok(age) => age,
            // Created "after" now: the API server's clock is ahead of ours. Within a grace of
            // skew, count the age as 0 (the wait is then at most twice the grace); beyond it
            // the timestamp says nothing and the backend is not waited for.
            Err(_) if created.0.duration_since(now) <= SignedDuration::from_secs(GRACE_SECONDS) => {
                Duration::ZERO
            }
            Err(_) => continue,
        };
        if let Some(left) = JUDGEMENT_GRACE.checked_sub(age).filter(|l| !l.is_zero()) {
            names.push(backend.name_any());
            wait = Some(wait.map_or(left, |w| w.max(left)));
        }
    }
    names.sort();
    Unjudged { names, wait }
}

/// The region's `Ready` from its parts. True when every part is; else the reason of the first
/// part that is not True for a cause other than rolling out (compliance first), or
/// `Progressing` when every part that is not True is still rolling out. A reader (`kubectl
/// get`, the Ready Event, Argo CD's health check, which reads only `Ready`) can then tell a
/// stack that is coming up from one that needs someone.
fn ready_condition(parts: &[&DesiredCondition<'static>]) -> DesiredCondition<'static> {
    let pending: Vec<&&DesiredCondition<'static>> =
        parts.iter().filter(|c| c.status != Status::True).collect();
    if pending.is_empty() {
        return condition(
            conditions::READY,
            Status::True,
            "Ready",
            "the region's stack is up".into(),
        );
    }
    let waiting = |parts: &[&&DesiredCondition<'static>]| {
        parts.iter().map(|c| c.type_).collect::<Vec<_>>().join(", ")
    };
    match pending.iter().position(|c| c.reason != PROGRESSING) {
        Some(at) => {
            let fault = pending[at];
            let mut others = pending.clone();
            others.remove(at);
            let mut message = format!("{}: {}", fault.type_, fault.message);
            if !others.is_empty() {
                message.push_str(&format!("; also waiting for: {}", waiting(&others)));
            }
            condition(conditions::READY, Status::False, fault.reason, message)
        }
        None => condition(
            conditions::READY,
            Status::False,
            PROGRESSING,
            format!("waiting for: {}", waiting(&pending)),
        ),
    }
}

/// The reason of a part still rolling out (pods starting, replicas becoming available).
const PROGRESSING: &str = "Progressing";

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

/// (available, fully rolled out) of a Deployment; an absent one is neither.
fn deployment_available(deployment: Option<&Deployment>) -> (bool, bool) {
    let status = deployment
        .and_then(|d| d.status.clone())
        .unwrap_or_default();
    let wanted = deployment
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let available = status.available_replicas.unwrap_or(0);
    (
        available >= 1,
        available >= wanted && status.updated_replicas.unwrap_or(0) >= wanted,
    )
}

fn vector_store_readiness(
    region: &SovereignRegion,
    observed: &Observed,
) -> (DesiredCondition<'static>, bool) {
    let name = match region.spec.vector_store.engine {
        VectorStoreEngine::None => {
            return (
                condition(
                    conditions::VECTOR_STORE_READY,
                    Status::True,
                    "Disabled",
                    "no vector store requested".into(),
                ),
                true,
            );
        }
        VectorStoreEngine::Qdrant => vectorstore::QDRANT,
        VectorStoreEngine::PgVector => vectorstore::PGVECTOR,
    };
    let set: Option<&StatefulSet> = observed.vector_store.as_ref();
    let wanted = set
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let ready = set
        .and_then(|s| s.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    let all = ready >= wanted;
    (
        condition(
            conditions::VECTOR_STORE_READY,
            Status::from(all),
            if all { "Available" } else { PROGRESSING },
            format!("{ready}/{wanted} {name} replicas ready"),
        ),
        all,
    )
}

#[cfg(test)]
mod tests {
    use super::super::super::fixture;
    use super::*;
    use crate::api::conditions::find;

    const REGION: &str = "
apiVersion: sovereign.ai/v1alpha1
kind: SovereignRegion
metadata: {name: eu, uid: region-uid, generation: 2}
spec:
  jurisdiction: EU
  locations: [europe-west9]
  huggingFaceMirror: https://hf-mirror.eu.example.com
  gateway: {replicas: 2}
  vectorStore: {engine: None}
status:
  observedGeneration: 2
";

    /// A backend of region `eu` whose own status says Ready and Compliant as given.
    fn backend(name: &str, ready: bool, compliant: bool) -> InferenceBackend {
        let status = |b: bool| if b { "True" } else { "False" };
        fixture(&format!(
            "
apiVersion: sovereign.ai/v1alpha1
kind: InferenceBackend
metadata: {{name: {name}, namespace: sovereign-eu}}
spec:
  region: eu
  modelName: {name}
  external:
    provider: OpenAICompatible
    endpoint: https://llm.eu.example.com/v1
    hostingJurisdiction: FR
    upstreamModel: {name}
status:
  conditions:
  - {{type: Ready, status: '{}', reason: R, message: m, lastTransitionTime: '2026-01-01T00:00:00Z'}}
  - {{type: Compliant, status: '{}', reason: R, message: m, lastTransitionTime: '2026-01-01T00:00:00Z'}}
",
            status(ready),
            status(compliant)
        ))
    }

    fn deployment(replicas: i32, available: i32, updated: i32) -> Deployment {
        fixture(&format!(
            "
metadata: {{name: gateway, namespace: sovereign-eu}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: x}}}}
  template: {{metadata: {{labels: {{app: x}}}}}}
status: {{availableReplicas: {available}, updatedReplicas: {updated}}}
"
        ))
    }

    fn region(edit: &str) -> SovereignRegion {
        let mut value: serde_json::Value = fixture(REGION);
        let edit: serde_json::Value = fixture(edit);
        merge(&mut value, edit);
        serde_json::from_value(value).expect("the edited region parses")
    }

    fn merge(base: &mut serde_json::Value, edit: serde_json::Value) {
        match (base, edit) {
            (serde_json::Value::Object(base), serde_json::Value::Object(edit)) => {
                for (key, value) in edit {
                    merge(base.entry(key).or_insert(serde_json::Value::Null), value);
                }
            }
            (base, edit) => *base = edit,
        }
    }

    fn decided(region: &SovereignRegion, observed: &Observed) -> Decision {
        decide(
            region,
            Some(observed),
            &RegionScope::default(),
            Timestamp::UNIX_EPOCH,
        )
        .expect("the region renders")
    }

    /// (status, reason) of condition `type_`.
    fn reason(decision: &Decision, type_: &str) -> (String, String) {
        let condition = find(&decision.status.conditions, type_).expect("the condition is set");
        (condition.status.clone(), condition.reason.clone())
    }

    fn is(status: &str, reason: &str) -> (String, String) {
        (status.to_owned(), reason.to_owned())
    }

    #[test]
    fn a_served_and_available_region_is_ready_and_resyncs_slowly() {
        let observed = Observed {
            backends: vec![backend("a", true, true), backend("b", false, true)],
            gateway: Some(deployment(2, 2, 2)),
            ..Observed::default()
        };
        let decision = decided(&region("{}"), &observed);
        assert_eq!(reason(&decision, conditions::READY), is("True", "Ready"));
        assert_eq!(
            reason(&decision, conditions::GATEWAY_READY),
            is("True", "Available")
        );
        assert_eq!(
            reason(&decision, conditions::VECTOR_STORE_READY),
            is("True", "Disabled")
        );
        assert_eq!(
            reason(&decision, conditions::OBSERVABILITY_READY),
            is("True", "NotConfigured")
        );
        assert_eq!(
            reason(&decision, conditions::COMPLIANT),
            is("True", "InRegion")
        );
        let gateway = find(&decision.status.conditions, conditions::GATEWAY_READY).expect("set");
        assert_eq!(
            gateway.message, "serving a",
            "only the Ready and Compliant backend"
        );
        assert_eq!(
            decision
                .status
                .backends
                .as_ref()
                .map(|b| b.summary.as_str()),
            Some("1/2")
        );
        assert_eq!(decision.status.namespace.as_deref(), Some("sovereign-eu"));
        assert_eq!(decision.requeue, Action::requeue(RESYNC));
        assert!(!decision.wake_usage, "the generation was already observed");
        let children = decision.children.expect("a managed region has children");
        assert!(
            children
                .iter()
                .any(|c| c.describe().starts_with("Deployment/"))
        );
    }

    /// A backend of region `eu` created at `created`, on which no verdict is written yet.
    fn new_backend(name: &str, created: &str) -> InferenceBackend {
        let mut backend = backend(name, false, false);
        backend.status = None;
        backend.metadata.creation_timestamp = Some(fixture(&format!("'{created}'")));
        backend
    }

    fn at(time: &str) -> Timestamp {
        time.parse().expect("a timestamp")
    }

    fn decided_at(observed: &Observed, now: &str) -> Decision {
        decide(
            &region("{}"),
            Some(observed),
            &RegionScope::default(),
            at(now),
        )
        .expect("the region renders")
    }

    #[test]
    fn a_region_waits_for_its_new_backends_to_be_judged_before_rendering() {
        let observed = Observed {
            backends: vec![
                backend("a", true, true),
                new_backend("c", "2026-12-01T10:00:00Z"),
                new_backend("b", "2026-12-01T10:00:10Z"),
            ],
            gateway: Some(deployment(2, 2, 2)),
            ..Observed::default()
        };
        let decision = decided_at(&observed, "2026-12-01T10:00:15Z");
        assert!(
            decision.children.is_none(),
            "nothing is applied (nor pruned) while b and c are judged"
        );
        assert_eq!(decision.awaiting_judgement, ["b", "c"]);
        assert_eq!(
            reason(&decision, conditions::GATEWAY_READY),
            is("False", PROGRESSING)
        );
        assert_eq!(
            reason(&decision, conditions::READY),
            is("False", PROGRESSING)
        );
        // Until the last grace ends: b was created at :10, so 25 s from :15.
        assert_eq!(decision.requeue, Action::requeue(Duration::from_secs(25)));

        // Past the grace of both, the region renders with what is judged.
        let late = decided_at(&observed, "2026-12-01T10:00:41Z");
        assert!(late.awaiting_judgement.is_empty());
        let children = late.children.expect("rendered once the grace is over");
        assert!(
            children
                .iter()
                .any(|c| c.describe() == "Deployment/sovereign-eu/gateway")
        );
        let gateway = find(&late.status.conditions, conditions::GATEWAY_READY).expect("set");
        assert_eq!(gateway.message, "serving a");

        // One past its grace and one inside it: still waiting, for the one inside.
        let partly = decided_at(&observed, "2026-12-01T10:00:35Z");
        assert_eq!(partly.awaiting_judgement, ["b"]);
        assert!(partly.children.is_none());
        assert_eq!(partly.requeue, Action::requeue(Duration::from_secs(5)));
    }

    #[test]
    fn judged_backends_are_not_waited_for_whatever_their_verdict_or_age() {
        // A verdict of any kind (here not Ready, not Compliant) is a verdict.
        let mut refused = backend("r", false, false);
        refused.metadata.creation_timestamp = Some(fixture("'2026-12-01T10:00:14Z'"));
        let observed = Observed {
            backends: vec![backend("a", true, true), refused],
            gateway: Some(deployment(2, 2, 2)),
            ..Observed::default()
        };
        let decision = decided_at(&observed, "2026-12-01T10:00:15Z");
        assert!(decision.awaiting_judgement.is_empty());
        assert!(decision.children.is_some());
        assert_eq!(reason(&decision, conditions::READY), is("True", "Ready"));
    }

    #[test]
    fn a_backend_created_ahead_of_the_clock_is_waited_for_within_a_grace_of_skew_only() {
        let observed = Observed {
            backends: vec![new_backend("skewed", "2026-12-01T10:00:10Z")],
            ..Observed::default()
        };
        // 10 s ahead: counted as just created.
        let decision = decided_at(&observed, "2026-12-01T10:00:00Z");
        assert_eq!(decision.awaiting_judgement, ["skewed"]);
        assert_eq!(decision.requeue, Action::requeue(JUDGEMENT_GRACE));
        // 5 minutes ahead: the timestamp says nothing; not waited for.
        let far = Observed {
            backends: vec![new_backend("skewed", "2026-12-01T10:05:00Z")],
            ..Observed::default()
        };
        let decision = decided_at(&far, "2026-12-01T10:00:00Z");
        assert!(decision.awaiting_judgement.is_empty());
        assert!(decision.children.is_some());
    }

    #[test]
    fn a_gateway_still_rolling_out_is_available_but_checked_again_soon() {
        let observed = Observed {
            backends: vec![backend("a", true, true)],
            gateway: Some(deployment(2, 1, 1)),
            ..Observed::default()
        };
        let decision = decided(&region("{}"), &observed);
        assert_eq!(
            reason(&decision, conditions::GATEWAY_READY),
            is("True", "Available")
        );
        assert_eq!(decision.requeue, Action::requeue(PROGRESS_CHECK));
    }

    #[test]
    fn a_gateway_without_available_replicas_is_progressing() {
        for gateway in [None, Some(deployment(2, 0, 0))] {
            let observed = Observed {
                backends: vec![backend("a", true, true)],
                gateway,
                ..Observed::default()
            };
            let decision = decided(&region("{}"), &observed);
            assert_eq!(
                reason(&decision, conditions::GATEWAY_READY),
                is("False", "Progressing")
            );
            let ready = find(&decision.status.conditions, conditions::READY).expect("set");
            assert_eq!(ready.reason, "Progressing", "coming up, not a fault");
            assert_eq!(ready.message, "waiting for: GatewayReady");
            assert_eq!(decision.requeue, Action::requeue(PROGRESS_CHECK));
        }
    }

    #[test]
    fn no_compliant_backend_means_a_gateway_without_models() {
        // Ready but not Compliant: never routed to.
        let observed = Observed {
            backends: vec![backend("a", true, false)],
            ..Observed::default()
        };
        let decision = decided(&region("{}"), &observed);
        assert_eq!(
            reason(&decision, conditions::GATEWAY_READY),
            is("False", "NoCompliantBackend")
        );
        // The fault, not a generic "not ready": Argo CD's health check reads only Ready.
        assert_eq!(
            reason(&decision, conditions::READY),
            is("False", "NoCompliantBackend")
        );
        // Nothing to wait for: the backend watch brings the region back.
        assert_eq!(decision.requeue, Action::requeue(RESYNC));
    }

    #[test]
    fn the_vector_store_is_ready_when_every_replica_is() {
        let edited = region("{spec: {vectorStore: {engine: Qdrant}}}");
        let set = |ready: i32| -> StatefulSet {
            fixture(&format!(
                "
metadata: {{name: qdrant}}
spec:
  replicas: 3
  serviceName: qdrant
  selector: {{matchLabels: {{app: x}}}}
  template: {{metadata: {{labels: {{app: x}}}}}}
status: {{replicas: 3, readyReplicas: {ready}}}
"
            ))
        };
        let observed = |vector_store| Observed {
            backends: vec![backend("a", true, true)],
            gateway: Some(deployment(2, 2, 2)),
            vector_store,
            ..Observed::default()
        };
        let partial = decided(&edited, &observed(Some(set(2))));
        assert_eq!(
            reason(&partial, conditions::VECTOR_STORE_READY),
            is("False", "Progressing")
        );
        let message = &find(&partial.status.conditions, conditions::VECTOR_STORE_READY)
            .expect("set")
            .message;
        assert_eq!(message, "2/3 qdrant replicas ready");
        assert_eq!(partial.requeue, Action::requeue(PROGRESS_CHECK));
        assert!(partial.status.vector_store_endpoint.is_some());
        let full = decided(&edited, &observed(Some(set(3))));
        assert_eq!(
            reason(&full, conditions::VECTOR_STORE_READY),
            is("True", "Available")
        );
        assert_eq!(reason(&full, conditions::READY), is("True", "Ready"));
        let absent = decided(&edited, &observed(None));
        assert_eq!(
            reason(&absent, conditions::VECTOR_STORE_READY),
            is("False", "Progressing")
        );
    }

    #[test]
    fn the_collector_reports_observability_and_its_endpoint_compliance() {
        let in_region = region(
            "{spec: {inRegionHosts: [otel.eu.example.com], observability: {otlpEndpoint: 'https://otel.eu.example.com:4317'}}}",
        );
        let observed = |collector| Observed {
            backends: vec![backend("a", true, true)],
            gateway: Some(deployment(2, 2, 2)),
            collector,
            ..Observed::default()
        };
        let starting = decided(&in_region, &observed(None));
        assert_eq!(
            reason(&starting, conditions::OBSERVABILITY_READY),
            is("False", "Progressing")
        );
        assert_eq!(
            reason(&starting, conditions::COMPLIANT),
            is("True", "InRegion")
        );
        let up = decided(&in_region, &observed(Some(deployment(1, 1, 1))));
        assert_eq!(
            reason(&up, conditions::OBSERVABILITY_READY),
            is("True", "Available")
        );
        assert_eq!(reason(&up, conditions::READY), is("True", "Ready"));

        let abroad =
            region("{spec: {observability: {otlpEndpoint: 'https://otel.us.example.com:4317'}}}");
        let decision = decided(&abroad, &observed(Some(deployment(1, 1, 1))));
        assert_eq!(
            reason(&decision, conditions::COMPLIANT),
            is("False", "ObservabilityOutOfRegion")
        );
        let ready = find(&decision.status.conditions, conditions::READY).expect("set");
        assert_eq!(ready.reason, "ObservabilityOutOfRegion");
        assert!(
            ready
                .message
                .starts_with("Compliant: observability.otlpEndpoint host"),
            "{}",
            ready.message
        );
    }

    #[test]
    fn a_missing_ca_bundle_is_named_in_observability_ready() {
        let region = region(
            "{spec: {inRegionHosts: [otel.eu.example.com], observability: {otlpEndpoint: 'https://otel.eu.example.com:4317', caBundle: {name: otel-ca, key: ca.crt}}}}",
        );
        let observed = |ca_bundle| Observed {
            backends: vec![backend("a", true, true)],
            gateway: Some(deployment(2, 2, 2)),
            collector: Some(deployment(1, 1, 1)),
            ca_bundle,
            ..Observed::default()
        };
        for (state, needle) in [
            (
                CaBundle::NoConfigMap,
                "ConfigMap sovereign-eu/otel-ca not found",
            ),
            (CaBundle::NoKey, "has no key \"ca.crt\""),
        ] {
            let decision = decided(&region, &observed(Some(state)));
            assert_eq!(
                reason(&decision, conditions::OBSERVABILITY_READY),
                is("False", "CABundleNotFound")
            );
            let message = &find(&decision.status.conditions, conditions::OBSERVABILITY_READY)
                .expect("set")
                .message;
            assert!(message.contains(needle), "{message}");
            assert!(message.contains("spec.observability.caBundle"), "{message}");
            assert_eq!(
                reason(&decision, conditions::READY),
                is("False", "CABundleNotFound")
            );
            assert_eq!(decision.requeue, Action::requeue(PROGRESS_CHECK));
        }
        let present = decided(&region, &observed(Some(CaBundle::Present)));
        assert_eq!(
            reason(&present, conditions::OBSERVABILITY_READY),
            is("True", "Available")
        );
    }

    #[test]
    fn a_region_managed_elsewhere_is_left_alone() {
        let scope = RegionScope::new(["in".to_owned()]);
        let decision =
            decide(&region("{}"), None, &scope, Timestamp::UNIX_EPOCH).expect("nothing to render");
        assert!(decision.children.is_none(), "no child is applied or pruned");
        assert_eq!(decision.requeue, Action::await_change());
        for type_ in [
            conditions::READY,
            conditions::GATEWAY_READY,
            conditions::VECTOR_STORE_READY,
            conditions::OBSERVABILITY_READY,
            conditions::COMPLIANT,
        ] {
            assert_eq!(reason(&decision, type_), is("Unknown", "ManagedElsewhere"));
        }
        assert_eq!(decision.status.namespace, None);
    }

    #[test]
    fn a_managed_region_reports_its_evidence_and_one_managed_elsewhere_keeps_it() {
        let mut region = region("{}");
        let stale: crate::api::region::EvidenceSummary = fixture(
            "{paths: 3, guarded: 2, violations: 1, unknown: 0, summary: '2/3 ok, 1 violations, 0 unknown'}",
        );
        region.status = Some(SovereignRegionStatus {
            evidence: Some(stale.clone()),
            ..SovereignRegionStatus::default()
        });
        // Managed: derived from what is deployed, whatever the status said.
        let managed = decided(&region, &Observed::default());
        let derived = managed.status.evidence.clone().expect("a summary");
        assert_ne!(derived, stale);
        assert!(derived.paths > 0, "{derived:?}");
        assert_eq!(derived.violations, 0, "{derived:?}");
        assert_eq!(managed.evidence_error, None);
        // The same input gives the same summary: a resync writes nothing.
        assert_eq!(
            decided(&region, &Observed::default()).status,
            managed.status
        );
        // Managed elsewhere: the other instance's summary is kept.
        let scope = RegionScope::new(["in".to_owned()]);
        let elsewhere =
            decide(&region, None, &scope, Timestamp::UNIX_EPOCH).expect("nothing to render");
        assert_eq!(elsewhere.status.evidence, Some(stale));
    }

    #[test]
    fn a_new_generation_wakes_the_usage_collector() {
        let edited = region("{metadata: {generation: 3}}");
        let decision = decided(&edited, &Observed::default());
        assert!(decision.wake_usage);
        assert_eq!(decision.status.observed_generation, Some(3));
    }

    #[test]
    fn an_unchanged_cluster_decides_the_status_it_already_has() {
        // What makes a resync write nothing: the decision fed its own status back.
        let observed = Observed {
            backends: vec![backend("a", true, true)],
            gateway: Some(deployment(2, 2, 2)),
            ..Observed::default()
        };
        let mut region = region("{}");
        let first = decided(&region, &observed);
        region.status = Some(first.status.clone());
        let later = decide(
            &region,
            Some(&observed),
            &RegionScope::default(),
            Timestamp::UNIX_EPOCH + k8s_openapi::jiff::SignedDuration::from_secs(600),
        )
        .expect("renders");
        assert_eq!(later.status, first.status);
    }

    #[test]
    fn the_argocd_health_cases_hold_what_decide_writes() {
        use crate::api::conditions::argocd_cases::assert_matches;
        let kind = "SovereignRegion";
        let serving = |gateway| Observed {
            backends: vec![backend("a", true, true)],
            gateway,
            ..Observed::default()
        };
        let conditions = |decision: Decision| decision.status.conditions;
        assert_matches(
            kind,
            "ready",
            &conditions(decided(&region("{}"), &serving(Some(deployment(2, 2, 2))))),
        );
        assert_matches(
            kind,
            "rolling out",
            &conditions(decided(&region("{}"), &serving(Some(deployment(2, 0, 0))))),
        );
        let unserved = Observed {
            backends: vec![backend("a", true, false)],
            ..Observed::default()
        };
        assert_matches(
            kind,
            "no compliant backend",
            &conditions(decided(&region("{}"), &unserved)),
        );
        let collector = region(
            "{spec: {inRegionHosts: [otel.eu.example.com], observability: {otlpEndpoint: 'https://otel.eu.example.com:4317', caBundle: {name: otel-ca, key: ca.crt}}}}",
        );
        let without_bundle = Observed {
            collector: Some(deployment(1, 1, 1)),
            ca_bundle: Some(CaBundle::NoConfigMap),
            ..serving(Some(deployment(2, 2, 2)))
        };
        assert_matches(
            kind,
            "collector CA bundle missing",
            &conditions(decided(&collector, &without_bundle)),
        );
        let abroad =
            region("{spec: {observability: {otlpEndpoint: 'https://otel.us.example.com:4317'}}}");
        let exporting = Observed {
            collector: Some(deployment(1, 1, 1)),
            ..serving(Some(deployment(2, 2, 2)))
        };
        assert_matches(
            kind,
            "observability abroad",
            &conditions(decided(&abroad, &exporting)),
        );
        let scope = RegionScope::new(["in".to_owned()]);
        let elsewhere =
            decide(&region("{}"), None, &scope, Timestamp::UNIX_EPOCH).expect("nothing to render");
        assert_matches(kind, "managed elsewhere", &elsewhere.status.conditions);
    }
}
