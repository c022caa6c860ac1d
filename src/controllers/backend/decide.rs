//! What the backend controller wants, from what it observed: pure, so every condition
//! reason is unit-tested below.

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::{Resource, ResourceExt};
use rust_decimal::Decimal;

use super::super::{PROGRESS_CHECK, RESYNC, RegionScope, conditions_at, managed_elsewhere};
use super::Observed;
use crate::api::backend::{InferenceBackend, InferenceBackendStatus, ReplicaStatus};
use crate::api::common::Money;
use crate::api::conditions::{self, DesiredCondition, Status};
use crate::api::region::SovereignRegion;
use crate::render::{Child, Owner, RenderError, vllm};
use crate::residency::inference::hosting_violations;

/// The outcome of one reconcile of a backend.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The children to apply (and whose absence prunes the rest); None when the backend
    /// cannot be provisioned and nothing of it is touched.
    pub children: Option<Vec<Child>>,
    /// The status to write.
    pub status: InferenceBackendStatus,
    /// When to look again.
    pub requeue: Action,
}

/// What the conditions say, before they become a status.
struct Verdict {
    conditions: Vec<DesiredCondition<'static>>,
    replicas: Option<ReplicaStatus>,
    endpoint: Option<String>,
    /// Nothing is converging: the next look is the periodic resync (or a watch event).
    settled: bool,
}

/// The decision for `backend` given what [`super::observe`] found.
pub fn decide(
    backend: &InferenceBackend,
    observed: &Observed,
    scope: &RegionScope,
    now: Timestamp,
) -> Result<Decision, RenderError> {
    let namespace = backend.namespace().unwrap_or_default();
    let region_name = &backend.spec.region;
    let (children, verdict) = match &observed.region {
        None => (
            None,
            not_ready(
                "RegionNotFound",
                format!(
                    "SovereignRegion {region_name} does not exist; create it or fix spec.region"
                ),
            ),
        ),
        Some(_) if !scope.manages(region_name) => (
            None,
            Verdict {
                conditions: managed_elsewhere(
                    &[conditions::READY, conditions::COMPLIANT],
                    scope,
                    region_name,
                ),
                replicas: None,
                endpoint: None,
                settled: true,
            },
        ),
        Some(region) if region.stack_namespace() != namespace => (
            None,
            not_ready(
                "WrongNamespace",
                format!(
                    "backends of region {region_name} must live in namespace {}, not {namespace}",
                    region.stack_namespace()
                ),
            ),
        ),
        Some(region) => provision(backend, region, observed)?,
    };
    let current = backend.status.clone().unwrap_or_default();
    let generation = backend.metadata.generation;
    let (gpus, hourly_cost) = hourly_cost(backend, verdict.replicas.as_ref());
    Ok(Decision {
        children,
        status: InferenceBackendStatus {
            observed_generation: generation,
            conditions: conditions_at(&current.conditions, verdict.conditions, generation, now),
            kind: Some(backend.spec.kind()),
            endpoint: verdict.endpoint,
            replicas: verdict.replicas,
            gpus,
            hourly_cost,
        },
        requeue: Action::requeue(if verdict.settled {
            RESYNC
        } else {
            PROGRESS_CHECK
        }),
    })
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

/// The children and verdict of a backend whose region exists and is managed here.
fn provision(
    backend: &InferenceBackend,
    region: &SovereignRegion,
    observed: &Observed,
) -> Result<(Option<Vec<Child>>, Verdict), RenderError> {
    let namespace = region.stack_namespace();
    let name = backend.name_any();
    let violations = hosting_violations(backend, region, &observed.policies);
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
        Err(error @ RenderError::NoInRegionModelSource { .. }) => {
            return Ok((None, not_ready("NoInRegionModelSource", error.to_string())));
        }
        Err(error) => return Err(error),
    };
    let (ready, replicas, settled) = if let Some(secret) = observed.missing_secrets.first() {
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
        vllm_readiness(backend, observed)
    } else {
        let serves = compliant.status == Status::True;
        (
            DesiredCondition {
                type_: conditions::READY,
                status: Status::from(serves),
                reason: if serves { "Configured" } else { "NotCompliant" },
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
    Ok((
        Some(children),
        Verdict {
            conditions: vec![ready, compliant],
            replicas,
            endpoint,
            settled,
        },
    ))
}

/// (desired, ready) replicas of a vLLM Deployment; desired from the spec, else the status.
fn replica_counts(deployment: Option<&Deployment>) -> (i32, i32) {
    let desired = deployment
        .and_then(|d| d.spec.as_ref())
        .and_then(|s| s.replicas)
        .or_else(|| {
            deployment
                .and_then(|d| d.status.as_ref())
                .and_then(|s| s.replicas)
        })
        .unwrap_or(0);
    let ready = deployment
        .and_then(|d| d.status.as_ref())
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0);
    (desired, ready)
}

/// Whether a parked model: no replica wanted, and the spec allows none.
fn parked(backend: &InferenceBackend, desired: i32) -> bool {
    desired == 0
        && backend
            .spec
            .vllm
            .as_ref()
            .is_some_and(|v| v.replicas.min == 0)
}

/// Whether the pods must be read to say why no replica is ready.
pub fn needs_pods(backend: &InferenceBackend, deployment: Option<&Deployment>) -> bool {
    let (desired, ready) = replica_counts(deployment);
    !parked(backend, desired) && ready < 1
}

/// Readiness of a vLLM backend from its Deployment and, when pods cannot be placed, from the
/// scheduler's verdict on them.
fn vllm_readiness(
    backend: &InferenceBackend,
    observed: &Observed,
) -> (DesiredCondition<'static>, Option<ReplicaStatus>, bool) {
    let (desired, ready) = replica_counts(observed.deployment.as_ref());
    let replicas = Some(ReplicaStatus { desired, ready });
    if parked(backend, desired) {
        return (
            DesiredCondition {
                type_: conditions::READY,
                status: Status::False,
                reason: "Parked",
                message: "replicas.min is 0: no vLLM pods run and the gateway does not route here"
                    .into(),
            },
            replicas,
            true,
        );
    }
    if ready >= 1 {
        return (
            DesiredCondition {
                type_: conditions::READY,
                status: Status::True,
                reason: "Available",
                message: format!("{ready}/{desired} vLLM replicas ready"),
            },
            replicas,
            ready >= desired,
        );
    }
    // Nothing ready: say why, from the pods.
    let unschedulable = observed.pods.iter().find_map(|pod| {
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
    (condition, replicas, false)
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

#[cfg(test)]
mod tests {
    use super::super::super::fixture;
    use super::*;
    use crate::api::conditions::find;
    use k8s_openapi::api::core::v1::Pod;

    const REGION: &str = "
apiVersion: sovereign.ai/v1alpha1
kind: SovereignRegion
metadata: {name: eu, uid: region-uid}
spec:
  jurisdiction: EU
  locations: [europe-west9]
  huggingFaceMirror: https://hf-mirror.eu.example.com
  egress: {hosts: [llm.eu.example.com, llm.us.example.com]}
";

    const EXTERNAL: &str = "
apiVersion: sovereign.ai/v1alpha1
kind: InferenceBackend
metadata: {name: mistral, namespace: sovereign-eu, uid: backend-uid, generation: 1}
spec:
  region: eu
  modelName: mistral
  external:
    provider: OpenAICompatible
    endpoint: https://llm.eu.example.com/v1
    hostingJurisdiction: FR
    upstreamModel: mistral-large
";

    const VLLM: &str = "
apiVersion: sovereign.ai/v1alpha1
kind: InferenceBackend
metadata: {name: llama, namespace: sovereign-eu, uid: backend-uid, generation: 1}
spec:
  region: eu
  modelName: llama
  vllm:
    model: org/llama
    gpus: {count: 2}
    gpuHourlyCost: {amount: '1.5', currency: EUR}
    replicas: {min: 1, max: 2}
";

    fn region() -> SovereignRegion {
        fixture(REGION)
    }

    fn decided(backend: &InferenceBackend, observed: &Observed) -> Decision {
        decide(
            backend,
            observed,
            &RegionScope::default(),
            Timestamp::UNIX_EPOCH,
        )
        .expect("the backend renders")
    }

    fn provisionable() -> Observed {
        Observed {
            region: Some(region()),
            ..Observed::default()
        }
    }

    fn reason(decision: &Decision, type_: &str) -> (String, String) {
        let condition = find(&decision.status.conditions, type_).expect("the condition is set");
        (condition.status.clone(), condition.reason.clone())
    }

    fn is(status: &str, reason: &str) -> (String, String) {
        (status.to_owned(), reason.to_owned())
    }

    fn deployment(replicas: i32, ready: i32) -> Deployment {
        fixture(&format!(
            "
metadata: {{name: vllm-llama, namespace: sovereign-eu}}
spec:
  replicas: {replicas}
  selector: {{matchLabels: {{app: x}}}}
  template: {{metadata: {{labels: {{app: x}}}}}}
status: {{replicas: {replicas}, readyReplicas: {ready}}}
"
        ))
    }

    #[test]
    fn a_compliant_external_backend_is_configured() {
        let backend: InferenceBackend = fixture(EXTERNAL);
        let decision = decided(&backend, &provisionable());
        assert_eq!(
            reason(&decision, conditions::READY),
            is("True", "Configured")
        );
        assert_eq!(
            reason(&decision, conditions::COMPLIANT),
            is("True", "WithinJurisdiction")
        );
        assert_eq!(
            decision.status.endpoint.as_deref(),
            Some("https://llm.eu.example.com/v1")
        );
        assert_eq!(decision.status.gpus, None, "no GPU for an external API");
        assert_eq!(decision.requeue, Action::requeue(RESYNC));
        assert!(decision.children.is_some());
    }

    #[test]
    fn an_external_backend_abroad_is_not_compliant_and_not_served() {
        let mut backend: InferenceBackend = fixture(EXTERNAL);
        if let Some(external) = backend.spec.external.as_mut() {
            external.hosting_jurisdiction = "US".into();
            external.endpoint = "https://llm.us.example.com/v1".into();
        }
        let decision = decided(&backend, &provisionable());
        assert_eq!(
            reason(&decision, conditions::READY),
            is("False", "NotCompliant")
        );
        assert_eq!(
            reason(&decision, conditions::COMPLIANT),
            is("False", "HostedOutsideJurisdiction")
        );
    }

    #[test]
    fn a_host_the_region_does_not_vouch_for_is_refused() {
        let mut backend: InferenceBackend = fixture(EXTERNAL);
        if let Some(external) = backend.spec.external.as_mut() {
            external.endpoint = "https://llm.elsewhere.example.com/v1".into();
        }
        let decision = decided(&backend, &provisionable());
        assert_eq!(
            reason(&decision, conditions::COMPLIANT),
            is("False", "HostNotDeclared")
        );
    }

    #[test]
    fn a_policy_that_wants_self_hosting_refuses_external_apis() {
        let mut backend: InferenceBackend = fixture(EXTERNAL);
        backend.spec.data_classes = vec!["health".into()];
        let policy = fixture(
            "
apiVersion: sovereign.ai/v1alpha1
kind: ResidencyPolicy
metadata: {name: health}
spec:
  dataClasses: [health]
  rules: {inferenceHosting: SelfHostedOnly}
",
        );
        let observed = Observed {
            policies: vec![policy],
            ..provisionable()
        };
        let decision = decided(&backend, &observed);
        assert_eq!(
            reason(&decision, conditions::COMPLIANT),
            is("False", "SelfHostedOnly")
        );
    }

    #[test]
    fn a_missing_secret_is_reported_and_looked_for_again_soon() {
        let backend: InferenceBackend = fixture(EXTERNAL);
        let observed = Observed {
            missing_secrets: vec!["provider-key".into()],
            ..provisionable()
        };
        let decision = decided(&backend, &observed);
        assert_eq!(
            reason(&decision, conditions::READY),
            is("False", "SecretNotFound")
        );
        let ready = find(&decision.status.conditions, conditions::READY).expect("set");
        assert_eq!(
            ready.message,
            "Secret sovereign-eu/provider-key does not exist"
        );
        assert_eq!(decision.requeue, Action::requeue(PROGRESS_CHECK));
        assert!(
            decision.children.is_some(),
            "the children are applied meanwhile"
        );
    }

    #[test]
    fn without_its_region_a_backend_waits_and_touches_nothing() {
        let backend: InferenceBackend = fixture(EXTERNAL);
        let decision = decided(&backend, &Observed::default());
        assert_eq!(
            reason(&decision, conditions::READY),
            is("False", "RegionNotFound")
        );
        assert_eq!(
            reason(&decision, conditions::COMPLIANT),
            is("Unknown", "RegionNotFound")
        );
        assert!(decision.children.is_none());
        assert_eq!(decision.requeue, Action::requeue(RESYNC));
    }

    #[test]
    fn a_backend_outside_its_regions_namespace_is_refused() {
        let mut backend: InferenceBackend = fixture(EXTERNAL);
        backend.metadata.namespace = Some("default".into());
        let decision = decided(&backend, &provisionable());
        assert_eq!(
            reason(&decision, conditions::READY),
            is("False", "WrongNamespace")
        );
        assert!(decision.children.is_none());
    }

    #[test]
    fn a_backend_of_a_region_managed_elsewhere_is_left_alone() {
        let backend: InferenceBackend = fixture(EXTERNAL);
        let scope = RegionScope::new(["in".to_owned()]);
        let decision = decide(&backend, &provisionable(), &scope, Timestamp::UNIX_EPOCH)
            .expect("nothing to render");
        assert_eq!(
            reason(&decision, conditions::READY),
            is("Unknown", "ManagedElsewhere")
        );
        assert_eq!(
            reason(&decision, conditions::COMPLIANT),
            is("Unknown", "ManagedElsewhere")
        );
        assert!(decision.children.is_none());
    }

    #[test]
    fn weights_from_the_public_hub_without_a_mirror_are_refused_in_status() {
        let backend: InferenceBackend = fixture(VLLM);
        let mut region = region();
        region.spec.hugging_face_mirror = None;
        let observed = Observed {
            region: Some(region),
            ..Observed::default()
        };
        let decision = decided(&backend, &observed);
        assert_eq!(
            reason(&decision, conditions::READY),
            is("False", "NoInRegionModelSource")
        );
        assert!(decision.children.is_none(), "nothing that would crash-loop");
    }

    #[test]
    fn a_vllm_backend_with_a_ready_replica_is_available_and_costs_its_gpus() {
        let backend: InferenceBackend = fixture(VLLM);
        let observed = |ready| Observed {
            deployment: Some(deployment(2, ready)),
            ..provisionable()
        };
        let partial = decided(&backend, &observed(1));
        assert_eq!(reason(&partial, conditions::READY), is("True", "Available"));
        assert_eq!(
            reason(&partial, conditions::COMPLIANT),
            is("True", "WithinJurisdiction")
        );
        assert_eq!(partial.requeue, Action::requeue(PROGRESS_CHECK));
        assert_eq!(partial.status.gpus, Some(2));
        assert_eq!(
            partial
                .status
                .hourly_cost
                .as_ref()
                .map(|m| m.amount.as_str()),
            Some("3")
        );
        let full = decided(&backend, &observed(2));
        assert_eq!(full.requeue, Action::requeue(RESYNC));
        assert_eq!(
            full.status.replicas,
            Some(ReplicaStatus {
                desired: 2,
                ready: 2
            })
        );
        assert!(!needs_pods(&backend, Some(&deployment(2, 1))));
    }

    #[test]
    fn a_vllm_backend_without_ready_replicas_says_why_from_its_pods() {
        let backend: InferenceBackend = fixture(VLLM);
        assert!(needs_pods(&backend, Some(&deployment(1, 0))));
        let pending: Pod = fixture(
            "
metadata: {name: vllm-llama-0}
status:
  conditions:
  - {type: PodScheduled, status: 'False', reason: Unschedulable, message: '0/3 nodes have nvidia.com/gpu'}
",
        );
        let observed = |pods| Observed {
            deployment: Some(deployment(1, 0)),
            pods,
            ..provisionable()
        };
        let stuck = decided(&backend, &observed(vec![pending]));
        assert_eq!(
            reason(&stuck, conditions::READY),
            is("False", "Unschedulable")
        );
        let ready = find(&stuck.status.conditions, conditions::READY).expect("set");
        assert!(ready.message.ends_with("0/3 nodes have nvidia.com/gpu"));
        let starting = decided(&backend, &observed(Vec::new()));
        assert_eq!(
            reason(&starting, conditions::READY),
            is("False", "Progressing")
        );
        assert_eq!(starting.requeue, Action::requeue(PROGRESS_CHECK));
    }

    #[test]
    fn a_parked_model_is_not_ready_and_not_waited_for() {
        let mut backend: InferenceBackend = fixture(VLLM);
        if let Some(vllm) = backend.spec.vllm.as_mut() {
            vllm.replicas.min = 0;
        }
        assert!(!needs_pods(&backend, Some(&deployment(0, 0))));
        let observed = Observed {
            deployment: Some(deployment(0, 0)),
            ..provisionable()
        };
        let decision = decided(&backend, &observed);
        assert_eq!(reason(&decision, conditions::READY), is("False", "Parked"));
        assert_eq!(decision.requeue, Action::requeue(RESYNC));
        assert_eq!(decision.status.gpus, Some(0));
    }

    #[test]
    fn the_argocd_health_cases_hold_what_decide_writes() {
        use crate::api::conditions::argocd_cases::assert_matches;
        let kind = "InferenceBackend";
        let vllm: InferenceBackend = fixture(VLLM);
        let external: InferenceBackend = fixture(EXTERNAL);
        let with = |deployment| Observed {
            deployment,
            ..provisionable()
        };
        let conditions = |decision: Decision| decision.status.conditions;
        assert_matches(
            kind,
            "available",
            &conditions(decided(&vllm, &with(Some(deployment(1, 1))))),
        );
        assert_matches(
            kind,
            "pods starting",
            &conditions(decided(&vllm, &with(Some(deployment(1, 0))))),
        );
        let no_secret = Observed {
            missing_secrets: vec!["provider-key".into()],
            ..provisionable()
        };
        assert_matches(
            kind,
            "secret missing",
            &conditions(decided(&external, &no_secret)),
        );
        let mut abroad = external.clone();
        if let Some(api) = abroad.spec.external.as_mut() {
            api.hosting_jurisdiction = "US".into();
            api.endpoint = "https://llm.us.example.com/v1".into();
        }
        assert_matches(
            kind,
            "hosted abroad",
            &conditions(decided(&abroad, &provisionable())),
        );
        let mut parked = vllm.clone();
        if let Some(spec) = parked.spec.vllm.as_mut() {
            spec.replicas.min = 0;
        }
        assert_matches(
            kind,
            "parked",
            &conditions(decided(&parked, &with(Some(deployment(0, 0))))),
        );
        let scope = RegionScope::new(["in".to_owned()]);
        let elsewhere = decide(&external, &provisionable(), &scope, Timestamp::UNIX_EPOCH)
            .expect("nothing to render");
        assert_matches(kind, "managed elsewhere", &conditions(elsewhere));
    }
}
