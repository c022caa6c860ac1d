//! Status conditions following the Kubernetes API conventions: one entry per `type`,
//! `observedGeneration` on each, and `lastTransitionTime` kept unless the status flips.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Condition type: the object is fully reconciled and serving.
pub const READY: &str = "Ready";
/// Condition type: the object obeys every residency policy that governs it.
pub const COMPLIANT: &str = "Compliant";
/// Condition type (SovereignRegion): the LiteLLM gateway is up with at least one model.
pub const GATEWAY_READY: &str = "GatewayReady";
/// Condition type (SovereignRegion): the regional vector store is up.
pub const VECTOR_STORE_READY: &str = "VectorStoreReady";
/// Condition type (SovereignRegion): the observability pipeline is up.
pub const OBSERVABILITY_READY: &str = "ObservabilityReady";
/// Condition type (ResidencyPolicy): admission policies are installed and enforcing.
pub const ENFORCING: &str = "Enforcing";
/// Condition type (TokenBudget): spend is below every threshold that acts.
pub const WITHIN_BUDGET: &str = "WithinBudget";
/// Condition type (TokenBudget): the forecast exhausts the budget before the period ends.
pub const AT_RISK: &str = "AtRisk";
/// Condition type (TokenBudget): spend reached the limit.
pub const EXCEEDED: &str = "Exceeded";
/// Condition type (TokenBudget counted by several clusters): every peer cluster's totals are
/// current.
pub const PEERS_CURRENT: &str = "PeersCurrent";

/// Reason used on every condition of an object that another operator instance owns
/// (one-cluster-per-jurisdiction mode). Argo CD health checks treat it as healthy.
pub const REASON_MANAGED_ELSEWHERE: &str = "ManagedElsewhere";

/// The three states of a condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The condition holds.
    True,
    /// It does not.
    False,
    /// This controller cannot tell (e.g. another operator instance owns the object).
    Unknown,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(value: bool) -> Self {
        if value { Status::True } else { Status::False }
    }
}

/// What a reconcile wants a condition to say; `upsert` turns it into a `Condition`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DesiredCondition<'a> {
    /// Condition type, e.g. `Ready`.
    pub type_: &'a str,
    /// Whether the condition holds.
    pub status: Status,
    /// One CamelCase word saying why.
    pub reason: &'a str,
    /// A sentence for humans.
    pub message: String,
}

/// Sets `desired` in `conditions` for `generation`. Keeps `lastTransitionTime` unless the status
/// flips, so a reconcile that changes nothing produces an identical list (and no write).
/// Returns whether anything changed.
pub fn upsert(
    conditions: &mut Vec<Condition>,
    desired: DesiredCondition<'_>,
    generation: Option<i64>,
    now: Timestamp,
) -> bool {
    let status = desired.status.as_str();
    match conditions.iter_mut().find(|c| c.type_ == desired.type_) {
        Some(existing) => {
            let flipped = existing.status != status;
            let changed = flipped
                || existing.reason != desired.reason
                || existing.message != desired.message
                || existing.observed_generation != generation;
            if flipped {
                existing.last_transition_time = Time(now);
            }
            existing.status = status.to_owned();
            existing.reason = desired.reason.to_owned();
            existing.message = desired.message;
            existing.observed_generation = generation;
            changed
        }
        None => {
            conditions.push(Condition {
                type_: desired.type_.to_owned(),
                status: status.to_owned(),
                reason: desired.reason.to_owned(),
                message: desired.message,
                observed_generation: generation,
                last_transition_time: Time(now),
            });
            true
        }
    }
}

/// The condition of `type_`, if present.
pub fn find<'c>(conditions: &'c [Condition], type_: &str) -> Option<&'c Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is present and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    find(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(status: bool, reason: &'static str) -> DesiredCondition<'static> {
        DesiredCondition {
            type_: READY,
            status: status.into(),
            reason,
            message: format!("because {reason}"),
        }
    }

    #[test]
    fn transition_time_is_kept_unless_status_flips() {
        let t0: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-11-02T00:00:00Z".parse().unwrap();
        let t2: Timestamp = "2026-11-03T00:00:00Z".parse().unwrap();
        let mut conditions = Vec::new();

        assert!(upsert(
            &mut conditions,
            ready(false, "Pending"),
            Some(1),
            t0
        ));
        // Same status, new reason: changed, but the transition time stays.
        assert!(upsert(
            &mut conditions,
            ready(false, "Waiting"),
            Some(1),
            t1
        ));
        assert_eq!(conditions[0].last_transition_time, Time(t0));
        // Status flips: the transition time moves.
        assert!(upsert(
            &mut conditions,
            ready(true, "Available"),
            Some(2),
            t2
        ));
        assert_eq!(conditions[0].last_transition_time, Time(t2));
        assert_eq!(conditions[0].observed_generation, Some(2));
        // Nothing new: reports no change, so the controller writes nothing.
        assert!(!upsert(
            &mut conditions,
            ready(true, "Available"),
            Some(2),
            t2
        ));
        assert_eq!(conditions.len(), 1);
        assert!(is_true(&conditions, READY));
        assert!(!is_true(&conditions, COMPLIANT));
    }
}

/// The Argo CD health cases (`deploy/argocd/health/cases.json`, run in Argo CD's own Lua
/// engine by `scripts/argocd-health.sh`) hold the conditions each kind's decide step writes:
/// tests of those steps compare what they decide with the case of the same scenario, so a
/// changed reason cannot leave the health checks judging conditions the operator never writes.
#[cfg(test)]
pub mod argocd_cases {
    use std::collections::BTreeSet;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

    /// (type, status, reason) of each condition.
    pub type Triples = BTreeSet<(String, String, String)>;

    /// The triples of `conditions`.
    pub fn of(conditions: &[Condition]) -> Triples {
        conditions
            .iter()
            .map(|c| (c.type_.clone(), c.status.clone(), c.reason.clone()))
            .collect()
    }

    /// The triples of the case `name` of `kind`, and the health it expects.
    pub fn case(kind: &str, name: &str) -> (Triples, String) {
        let cases: serde_json::Value =
            serde_json::from_str(include_str!("../../deploy/argocd/health/cases.json"))
                .expect("cases.json parses");
        let case = cases
            .as_array()
            .expect("a list of cases")
            .iter()
            .find(|c| c["kind"] == kind && c["name"] == name)
            .unwrap_or_else(|| panic!("no Argo CD health case {kind} / {name:?}"));
        let field =
            |c: &serde_json::Value, key: &str| c[key].as_str().unwrap_or_default().to_owned();
        let triples = case["object"]["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|c| (field(c, "type"), field(c, "status"), field(c, "reason")))
            .collect();
        (triples, field(case, "want"))
    }

    /// Asserts that the case `name` of `kind` holds exactly the conditions decided.
    pub fn assert_matches(kind: &str, name: &str, decided: &[Condition]) {
        let (expected, _) = case(kind, name);
        assert_eq!(
            expected,
            of(decided),
            "Argo CD health case {kind} / {name:?} differs from what decide writes; decided: {}",
            serde_json::to_string(decided).unwrap_or_default()
        );
    }
}
