//! What the budget controller wants, from what it observed: pure, so every condition reason
//! it sets (and the announcements) is unit-tested below. The budget arithmetic itself is
//! `finops::budget::evaluate`, tested there.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::controller::Action;
use serde_json::json;

use super::super::{RESYNC, RegionScope, conditions_at, managed_elsewhere};
use super::Observed;
use crate::api::budget::{CrossedThreshold, ThresholdAction, TokenBudget, TokenBudgetStatus};
use crate::api::conditions::{
    AT_RISK, DesiredCondition, EXCEEDED, PEERS_CURRENT, Status, WITHIN_BUDGET,
};
use crate::finops::budget::{Beyond, BurnHistory, evaluate_with, period_bounds, time_zone};
use crate::finops::global;

/// The budget conditions.
pub const CONDITIONS: [&str; 3] = [WITHIN_BUDGET, AT_RISK, EXCEEDED];

/// The outcome of one reconcile of a budget.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// The status to write; None when there is nothing worth a write.
    pub status: Option<TokenBudgetStatus>,
    /// (used, forecast) ratios of the limit, for the metrics; None when not evaluated.
    pub ratios: Option<(f64, f64)>,
    /// Thresholds crossed by this evaluation, to announce once each.
    pub announcements: Vec<Announcement>,
    /// The note of the `PeriodClosed` Event, when this evaluation closed a period.
    pub closed: Option<String>,
    /// When to look again.
    pub requeue: Action,
    /// The burn history to remember for the next evaluation; None leaves it as it was.
    pub burn: Option<BurnHistory>,
    /// Events about the peer clusters of a global budget (a peer turned stale or current).
    pub notices: Vec<Notice>,
    /// Peers of a global budget whose totals are stale (or regions no peer counts), for the
    /// metric; None when the budget is not global here.
    pub stale_peers: Option<i64>,
}

/// An Event about a budget other than a crossed threshold.
#[derive(Clone, Debug, PartialEq)]
pub struct Notice {
    /// Warning, else Normal.
    pub warning: bool,
    /// The Event's reason.
    pub reason: &'static str,
    /// The Event's note.
    pub note: String,
}

/// What a budget counted by several clusters needs from the peers' reads.
struct GlobalView {
    scope_regions: Vec<String>,
    combined: global::Combined,
}

/// The peers' share of `budget`, when other clusters count some of its regions.
fn global_view(
    budget: &TokenBudget,
    observed: &Observed,
    interval: Duration,
    now: Timestamp,
) -> Option<GlobalView> {
    if observed.peers.is_empty() {
        return None;
    }
    let spec = &budget.spec;
    let mut scope_regions = if spec.scope.regions.is_empty() {
        observed.all_regions.clone()
    } else {
        spec.scope.regions.clone()
    };
    scope_regions.sort();
    scope_regions.dedup();
    if scope_regions.iter().all(|r| observed.covered.contains(r)) {
        return None;
    }
    let zone = time_zone(spec).ok()?;
    let (start, _) = period_bounds(spec.period, &zone, now).ok()?;
    let key = format!(
        "{}/{}",
        budget.namespace().unwrap_or_default(),
        budget.name_any()
    );
    let previous = budget.status.as_ref().and_then(|s| s.global.as_ref());
    // The budget's currency here, as `evaluate` finds it: the limit's, else the only one of
    // the in-scope usage.
    let currencies: std::collections::BTreeSet<&String> = observed
        .lines
        .iter()
        .filter(|(key, _)| crate::finops::budget::in_scope(&spec.scope, key))
        .flat_map(|(_, usage)| usage.cost.keys())
        .collect();
    let currency = spec.limit.currency.clone().unwrap_or_else(|| {
        if currencies.len() == 1 {
            currencies
                .iter()
                .next()
                .map(|c| (*c).clone())
                .unwrap_or_default()
        } else {
            String::new()
        }
    });
    let combined = global::combine(&global::Input {
        key: &key,
        spec,
        scope_regions: &scope_regions,
        local_regions: &observed.covered,
        currency: &currency,
        period_start: start,
        previous,
        peers: &observed.peers,
        stale_after: global::stale_after(spec, interval),
        now,
    });
    Some(GlobalView {
        scope_regions,
        combined,
    })
}

/// A crossed threshold as it is announced: an Event and, when configured, a webhook call.
#[derive(Clone, Debug, PartialEq)]
pub struct Announcement {
    /// Budget UID, period and percent: announced once per process.
    pub key: String,
    /// A Warning Event (the threshold acts at the gateway), else Normal.
    pub warning: bool,
    /// The Event's note, also the webhook's `text`.
    pub note: String,
    /// The webhook's JSON body.
    pub webhook: serde_json::Value,
}

/// The decision for `budget` at `now`; `interval` is how often ledgers change.
pub fn decide(
    budget: &TokenBudget,
    observed: &Observed,
    scope: &RegionScope,
    interval: Duration,
    now: Timestamp,
) -> Decision {
    let regions = &budget.spec.scope.regions;
    let leave = |status| Decision {
        status,
        ratios: None,
        announcements: Vec::new(),
        closed: None,
        requeue: Action::requeue(RESYNC),
        burn: None,
        notices: Vec::new(),
        stale_peers: None,
    };
    if observed.covered.is_empty() && !regions.is_empty() {
        // Another instance in this cluster maintains the figures: leave them alone. (In the
        // one-cluster-per-jurisdiction mode each cluster has its own copy of the budget, and
        // this instance is then the only writer.)
        if budget
            .status
            .as_ref()
            .is_some_and(|s| s.period_start.is_some())
        {
            return leave(None);
        }
        let conditions = managed_elsewhere(&CONDITIONS, scope, &regions.join(", "));
        return leave(Some(with_conditions(budget, conditions, now)));
    }
    let view = global_view(budget, observed, interval, now);
    let evaluation = match evaluate_with(
        &budget.spec,
        budget.metadata.generation,
        budget.status.as_ref(),
        &observed.lines,
        now,
        &Beyond {
            others: view.as_ref().map(|v| &v.combined.others),
            burn: observed.burn.clone(),
            interval: interval.as_secs_f64(),
        },
    ) {
        Ok(evaluation) => evaluation,
        Err(error) => {
            let conditions = CONDITIONS
                .iter()
                .map(|t| DesiredCondition {
                    type_: t,
                    status: Status::Unknown,
                    reason: "InvalidSpec",
                    message: error.to_string(),
                })
                .collect();
            return Decision {
                // Only a spec change can fix it.
                requeue: Action::await_change(),
                ..leave(Some(with_conditions(budget, conditions, now)))
            };
        }
    };
    let mut evaluation = evaluation;
    let mut notices = Vec::new();
    let mut stale_peers = None;
    // One announcement per threshold globally: only the cluster of the announcer region
    // announces; the others act on the threshold silently.
    let mut announces = true;
    if let Some(view) = &view {
        let (status_global, peer_notices, stale) =
            with_global(budget, &mut evaluation.status, view, observed, now);
        announces = scope.manages(&status_global.announcer);
        evaluation.status.global = Some(status_global);
        notices = peer_notices;
        stale_peers = Some(stale);
    }
    let uid = budget.uid().unwrap_or_default();
    let announcements = evaluation
        .fired
        .iter()
        .filter(|_| announces)
        .map(|crossed| {
            announcement(
                budget,
                &uid,
                &evaluation.status,
                crossed,
                evaluation.projected_percent,
            )
        })
        .collect();
    let closed = evaluation.closed.as_ref().map(|closed| {
        format!(
            "period {} closed at {} {} ({}% of the limit); actions lifted",
            closed.period_start.0, closed.spent.amount, closed.spent.currency, closed.percent_used
        )
    });
    Decision {
        status: worth_writing(budget.status.as_ref(), &evaluation.status)
            .then(|| evaluation.status.clone()),
        ratios: Some((evaluation.used_ratio, evaluation.forecast_ratio)),
        announcements,
        closed,
        requeue: Action::requeue(interval),
        burn: Some(evaluation.burn),
        notices,
        stale_peers,
    }
}

/// The global status of a budget counted by several clusters, its `PeersCurrent` condition,
/// where the figure comes from in the budget conditions' messages, the Events of a peer that
/// turned stale or current, and how many peers are stale.
fn with_global(
    budget: &TokenBudget,
    status: &mut TokenBudgetStatus,
    view: &GlobalView,
    observed: &Observed,
    now: Timestamp,
) -> (crate::api::budget::GlobalBudgetStatus, Vec<Notice>, i64) {
    let local = status.spent.clone().unwrap_or_default();
    let combined = &view.combined;
    let closed = global::fail_closed(&budget.spec, view.scope_regions.len(), &local, combined);
    let global_status = global::status(
        &view.scope_regions,
        &observed.covered,
        &local,
        combined,
        closed,
    );
    let summary = global::summary(&observed.covered, &local, combined);
    for condition in &mut status.conditions {
        if CONDITIONS.contains(&condition.type_.as_str()) {
            condition.message = format!("{}; {summary}", condition.message);
        }
    }
    let stale: Vec<&crate::api::budget::PeerTotals> = combined.stale().collect();
    let unaccounted = &combined.unaccounted;
    let current = stale.is_empty() && unaccounted.is_empty();
    let mut problems: Vec<String> = stale
        .iter()
        .map(|p| format!("peer {}: {}", p.peer, p.message))
        .collect();
    if !unaccounted.is_empty() {
        problems.push(format!(
            "no peer is trusted for regions {}: their spend is not counted",
            unaccounted.join(", ")
        ));
    }
    if closed {
        problems.push(
            "whenStale is FailClosed: the scope is blocked here until the stale peers are current, as their assumed share puts the budget at its limit"
                .to_owned(),
        );
    }
    let (reason, message) = if current {
        (
            "PeersCurrent",
            format!(
                "totals of {} current; {summary}",
                combined
                    .peers
                    .iter()
                    .map(|p| p.peer.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )
    } else if closed {
        ("FailClosed", problems.join("; "))
    } else {
        ("PeerStale", problems.join("; "))
    };
    let was =
        crate::api::conditions::find(&status.conditions, PEERS_CURRENT).map(|c| c.status == "True");
    crate::api::conditions::upsert(
        &mut status.conditions,
        DesiredCondition {
            type_: PEERS_CURRENT,
            status: Status::from(current),
            reason,
            message: message.clone(),
        },
        budget.metadata.generation,
        now,
    );
    let mut notices = Vec::new();
    match (was, current) {
        (Some(true) | None, false) => notices.push(Notice {
            warning: true,
            reason: "PeerStale",
            note: message,
        }),
        (Some(false), true) => notices.push(Notice {
            warning: false,
            reason: "PeerCurrent",
            note: message,
        }),
        _ => {}
    }
    let count = i64::try_from(stale.len() + unaccounted.len()).unwrap_or(i64::MAX);
    (global_status, notices, count)
}

/// The current status with `desired` conditions for this generation.
fn with_conditions(
    budget: &TokenBudget,
    desired: Vec<DesiredCondition<'_>>,
    now: Timestamp,
) -> TokenBudgetStatus {
    let mut status = budget.status.clone().unwrap_or_default();
    let generation = budget.metadata.generation;
    status.observed_generation = generation;
    status.conditions = conditions_at(&status.conditions, desired, generation, now);
    status
}

/// Whether the new status says something the old one does not. The forecast moves with the
/// clock; alone, a move of under 1% is not worth a write every interval.
fn worth_writing(old: Option<&TokenBudgetStatus>, new: &TokenBudgetStatus) -> bool {
    let Some(old) = old else { return true };
    let strip = |s: &TokenBudgetStatus| {
        let mut s = s.clone();
        s.forecast = None;
        for c in &mut s.conditions {
            c.message.clear();
        }
        s
    };
    if strip(old) != strip(new) {
        return true;
    }
    let amount = |s: &TokenBudgetStatus| {
        s.forecast
            .as_ref()
            .and_then(|f| f.amount.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (before, after) = (amount(old), amount(new));
    (after - before).abs() > before.abs() * 0.01
        || old.forecast.as_ref().map(|f| &f.exhausts_at)
            != new.forecast.as_ref().map(|f| &f.exhausts_at)
}

/// How a crossed threshold is announced.
fn announcement(
    budget: &TokenBudget,
    uid: &str,
    status: &TokenBudgetStatus,
    crossed: &CrossedThreshold,
    projected: Option<f64>,
) -> Announcement {
    let spent = status.spent.clone().unwrap_or_default();
    let limit = &budget.spec.limit;
    let limit_text = match (&limit.amount, &limit.currency, limit.tokens) {
        (Some(amount), Some(currency), _) => format!("{amount} {currency}"),
        (_, _, Some(tokens)) => format!("{tokens} tokens"),
        _ => "the limit".to_owned(),
    };
    let (warning, consequence) = match crossed.action {
        ThresholdAction::Notify => (false, "notify"),
        ThresholdAction::Throttle => (
            true,
            "the scope is throttled at the gateway until the period ends",
        ),
        ThresholdAction::Block => (
            true,
            "the scope is blocked at the gateway until the period ends",
        ),
        ThresholdAction::Downgrade => (
            true,
            "the scope is routed to a cheaper in-jurisdiction model until the period ends",
        ),
    };
    let used = status.percent_used.unwrap_or(0.0);
    // A predictive budget acts before the use reaches the level: say so, with the projection.
    let ahead = match projected {
        Some(projected) if used < f64::from(crossed.percent) => {
            format!(" (acted ahead: {projected:.2}% projected by the next evaluation)")
        }
        _ => String::new(),
    };
    let note = format!(
        "{}% threshold crossed: {} {} spent, {} input + {} output tokens, of {limit_text} ({used:.2}%){ahead}; {consequence}",
        crossed.percent, spent.amount, spent.currency, spent.input_tokens, spent.output_tokens,
    );
    let webhook = json!({
        "budget": format!("{}/{}", budget.namespace().unwrap_or_default(), budget.name_any()),
        "percent": crossed.percent,
        "action": crossed.action,
        "spent": spent,
        "limit": limit,
        "periodStart": status.period_start,
        "periodEnd": status.period_end,
        "text": note,
    });
    Announcement {
        key: format!("{uid}/{:?}/{}", status.period_start, crossed.percent),
        warning,
        note,
        webhook,
    }
}

/// Whether `status` says the budget is left to another operator instance.
#[cfg(test)]
fn managed_elsewhere_status(status: &TokenBudgetStatus) -> bool {
    CONDITIONS.iter().all(|t| {
        crate::api::conditions::find(&status.conditions, t).is_some_and(|c| {
            c.reason == crate::api::conditions::REASON_MANAGED_ELSEWHERE && c.status == "Unknown"
        })
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use rust_decimal::Decimal;

    use super::super::super::fixture;
    use super::*;
    use crate::api::conditions::find;
    use crate::finops::budget::{LineKey, LineUsage};

    const BUDGET: &str = "
apiVersion: sovereign.ai/v1alpha1
kind: TokenBudget
metadata: {name: search, namespace: finance, uid: budget-uid, generation: 1}
spec:
  scope: {teams: [search]}
  period: Monthly
  timeZone: Europe/Paris
  limit: {amount: '100', currency: EUR}
  thresholds:
  - {percent: 50, action: Notify}
  - {percent: 90, action: Block}
";

    const INTERVAL: Duration = Duration::from_secs(30);

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    /// Cumulative usage of 100 input and 50 output tokens per euro.
    fn spent(eur: &str) -> Observed {
        let euros: u64 = eur.parse().expect("whole euros");
        let mut usage = LineUsage {
            input_tokens: 100 * euros,
            output_tokens: 50 * euros,
            requests: euros,
            ..LineUsage::default()
        };
        usage
            .cost
            .insert("EUR".into(), Decimal::from_str(eur).expect("a decimal"));
        Observed {
            covered: vec!["eu".into()],
            lines: [(
                LineKey {
                    team: "search".into(),
                    cost_center: String::new(),
                    model: "mistral".into(),
                    region: "eu".into(),
                },
                usage,
            )]
            .into(),
            ..Observed::default()
        }
    }

    fn decided(budget: &TokenBudget, observed: &Observed, now: &str) -> Decision {
        decide(budget, observed, &RegionScope::default(), INTERVAL, at(now))
    }

    /// The budget after its first evaluation at `now` (with no spend yet: a new budget
    /// counts from its creation), as the API server would return it.
    fn opened(now: &str) -> TokenBudget {
        let mut budget: TokenBudget = fixture(BUDGET);
        let first = decided(&budget, &spent("0"), now);
        assert!(first.announcements.is_empty());
        budget.status = Some(first.status.expect("a first status is written"));
        budget
    }

    #[test]
    fn spend_over_a_threshold_is_written_then_announced_once() {
        let budget = opened("2026-11-01T12:00:00Z");
        let decision = decided(&budget, &spent("60"), "2026-11-15T12:00:00Z");
        let status = decision.status.clone().expect("the spend is written");
        assert_eq!(
            status.period_start.as_ref().map(|t| t.0),
            Some(at("2026-10-31T23:00:00Z")),
            "November in Paris"
        );
        assert_eq!(decision.requeue, Action::requeue(INTERVAL));
        let (used, _) = decision.ratios.expect("evaluated");
        assert!((used - 0.6).abs() < 1e-9, "{used}");
        assert_eq!(
            decision.announcements.len(),
            1,
            "{:?}",
            decision.announcements
        );
        let notify = &decision.announcements[0];
        assert!(!notify.warning, "notify is not a warning");
        assert!(
            notify.note.starts_with(
                "50% threshold crossed: 60 EUR spent, 6000 input + 3000 output tokens, of 100 EUR"
            ),
            "{}",
            notify.note
        );
        assert!(notify.key.starts_with("budget-uid/"));
        assert_eq!(notify.webhook["budget"], "finance/search");
        assert_eq!(notify.webhook["text"], notify.note.as_str());

        // The same evaluation on the written status: nothing to write or announce again.
        let mut written = budget.clone();
        written.status = Some(status);
        let again = decided(&written, &spent("60"), "2026-11-15T12:00:00Z");
        assert_eq!(again.status, None);
        assert!(again.announcements.is_empty());
        // A block threshold crossed later is a warning.
        let blocked = decided(&written, &spent("95"), "2026-11-15T12:01:00Z");
        assert!(blocked.status.is_some());
        let block = blocked.announcements.first().expect("90% crossed");
        assert!(block.warning);
        assert!(
            block
                .note
                .ends_with("the scope is blocked at the gateway until the period ends")
        );
    }

    #[test]
    fn a_period_that_ended_is_closed_with_an_event() {
        let mut budget = opened("2026-11-01T12:00:00Z");
        budget.status = decided(&budget, &spent("60"), "2026-11-30T12:00:00Z").status;
        let december = decided(&budget, &spent("70"), "2026-12-01T12:00:00Z");
        let note = december.closed.expect("November closed");
        // Everything the ledger counted until the first evaluation of December closes
        // November.
        assert!(
            note.contains("closed at 70 EUR (70% of the limit)"),
            "{note}"
        );
        assert!(note.ends_with("actions lifted"));
        let status = december.status.expect("the new period is written");
        assert_eq!(status.history.len(), 1);
        assert!(
            december.announcements.is_empty(),
            "December counts from 70 EUR: nothing spent yet"
        );
    }

    #[test]
    fn an_invalid_spec_is_reported_on_every_condition_and_waits_for_a_change() {
        let mut budget: TokenBudget = fixture(BUDGET);
        budget.spec.time_zone = Some("Mars/Olympus_Mons".into());
        let decision = decided(&budget, &spent("1"), "2026-11-15T12:00:00Z");
        assert_eq!(decision.requeue, Action::await_change());
        assert_eq!(decision.ratios, None);
        let status = decision.status.expect("the conditions are written");
        for type_ in CONDITIONS {
            let condition = find(&status.conditions, type_).expect("set");
            assert_eq!(
                (condition.status.as_str(), condition.reason.as_str()),
                ("Unknown", "InvalidSpec")
            );
            assert!(
                condition.message.contains("Mars/Olympus_Mons"),
                "{}",
                condition.message
            );
        }
        assert_eq!(status.observed_generation, Some(1));
    }

    #[test]
    fn a_budget_of_regions_managed_elsewhere_is_marked_once_then_left_alone() {
        let mut budget: TokenBudget = fixture(BUDGET);
        budget.spec.scope.regions = vec!["in".into()];
        let scope = RegionScope::new(["eu".to_owned()]);
        let none = Observed::default();
        let decision = decide(&budget, &none, &scope, INTERVAL, at("2026-11-15T12:00:00Z"));
        let status = decision.status.expect("marked");
        assert!(managed_elsewhere_status(&status));
        assert_eq!(decision.requeue, Action::requeue(RESYNC));
        assert!(decision.announcements.is_empty() && decision.ratios.is_none());

        // Figures written by the instance that manages the region: not touched.
        let evaluated = decided(&fixture(BUDGET), &spent("10"), "2026-11-15T12:00:00Z");
        budget.status = evaluated.status;
        let decision = decide(&budget, &none, &scope, INTERVAL, at("2026-11-15T12:00:00Z"));
        assert_eq!(decision.status, None);
    }

    /// A budget over eu and in, seen from the cluster of `here`, whose peer (the other
    /// region) published `peer_eur` of spend in the current period at `now`.
    fn global_decision(
        here: &str,
        budget: &TokenBudget,
        local_eur: &str,
        peer_eur: &str,
        now: &str,
    ) -> Decision {
        use crate::api::budget::Spend;
        use crate::finops::global::{PeerRead, Published, PublishedBudget};
        let other = if here == "eu" { "in" } else { "eu" };
        let mut observed = spent(local_eur);
        observed.covered = vec![here.into()];
        for key in observed.lines.keys().cloned().collect::<Vec<_>>() {
            let usage = observed.lines.remove(&key).expect("line");
            observed.lines.insert(
                LineKey {
                    region: here.into(),
                    ..key
                },
                usage,
            );
        }
        let zone = crate::finops::budget::time_zone(&budget.spec).expect("zone");
        let (start, _) = crate::finops::budget::period_bounds(budget.spec.period, &zone, at(now))
            .expect("period");
        observed.peers = vec![PeerRead {
            peer: format!("peer-{other}"),
            regions: vec![other.into()],
            last: Some((
                at(now),
                Published {
                    regions: vec![other.into()],
                    budgets: vec![PublishedBudget {
                        budget: "finance/search".into(),
                        scope: budget.spec.scope.clone(),
                        period: budget.spec.period,
                        time_zone: budget.spec.time_zone.clone(),
                        regions: vec![other.into()],
                        period_start: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(start),
                        spent: Spend {
                            amount: peer_eur.into(),
                            currency: "EUR".into(),
                            input_tokens: 1,
                            output_tokens: 1,
                            requests: 1,
                        },
                    }],
                },
            )),
            error: None,
        }];
        let scope = RegionScope::new([here.to_owned()]);
        decide(budget, &observed, &scope, INTERVAL, at(now))
    }

    #[test]
    fn a_global_threshold_acts_in_every_cluster_and_is_announced_by_the_first_region_only() {
        let mut budget: TokenBudget = fixture(BUDGET);
        budget.spec.scope.regions = vec!["in".into(), "eu".into()];
        // Opened with nothing spent in either cluster.
        for here in ["eu", "in"] {
            let mut copy = budget.clone();
            copy.status = global_decision(here, &copy, "0", "0", "2026-11-01T12:00:00Z").status;
            // 40 EUR here, 20 there: 60% of 100 only when summed; the 50% Notify fires.
            let decision = global_decision(here, &copy, "40", "20", "2026-11-15T12:00:00Z");
            let status = decision.status.expect("written");
            assert_eq!(
                status.spent.as_ref().map(|s| s.amount.as_str()),
                Some("40"),
                "spent stays local"
            );
            let global = status.global.as_ref().expect("global status");
            assert_eq!(global.spent.amount, "60");
            assert_eq!(global.announcer, "eu");
            let crossed: Vec<i32> = status
                .thresholds_crossed
                .iter()
                .map(|t| t.percent)
                .collect();
            assert_eq!(crossed, [50], "{here} acts on the global sum");
            assert_eq!(
                decision.announcements.len(),
                usize::from(here == "eu"),
                "only eu's cluster announces"
            );
            let current = find(&status.conditions, PEERS_CURRENT).expect("PeersCurrent");
            assert_eq!(current.status, "True");
            assert_eq!(decision.stale_peers, Some(0));
        }
    }

    #[test]
    fn a_stale_peer_is_said_in_status_with_an_event_and_its_last_totals_are_kept() {
        let mut budget: TokenBudget = fixture(BUDGET);
        budget.spec.scope.regions = vec!["eu".into(), "in".into()];
        budget.status = global_decision("eu", &budget, "0", "0", "2026-11-01T12:00:00Z").status;
        budget.status = global_decision("eu", &budget, "10", "20", "2026-11-15T12:00:00Z").status;
        // The peer's last read is now five minutes old (it cannot be reached).
        let mut decision = global_decision("eu", &budget, "10", "20", "2026-11-15T12:00:00Z");
        let _ = &mut decision;
        let mut observed = spent("10");
        observed.peers = vec![crate::finops::global::PeerRead {
            peer: "peer-in".into(),
            regions: vec!["in".into()],
            last: None,
            error: Some("connection refused".into()),
        }];
        let decision = decide(
            &budget,
            &observed,
            &RegionScope::new(["eu".to_owned()]),
            INTERVAL,
            at("2026-11-15T12:05:00Z"),
        );
        let status = decision.status.expect("written");
        let global = status.global.as_ref().expect("global");
        assert_eq!(
            global.spent.amount, "30",
            "the last known totals still count"
        );
        assert!(global.peers[0].stale);
        let condition = find(&status.conditions, PEERS_CURRENT).expect("PeersCurrent");
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("False", "PeerStale")
        );
        assert!(
            condition.message.contains("connection refused"),
            "{}",
            condition.message
        );
        assert_eq!(decision.notices.len(), 1);
        assert_eq!(decision.notices[0].reason, "PeerStale");
        assert_eq!(decision.stale_peers, Some(1));
    }

    #[test]
    fn a_budget_over_every_region_is_evaluated_even_with_no_usage() {
        let budget: TokenBudget = fixture(BUDGET);
        let decision = decided(&budget, &Observed::default(), "2026-11-15T12:00:00Z");
        let status = decision.status.expect("a first status");
        let within = find(&status.conditions, WITHIN_BUDGET).expect("set");
        assert_eq!(within.status, "True");
        assert!(decision.announcements.is_empty());
    }

    #[test]
    fn the_argocd_health_cases_hold_what_decide_writes() {
        use crate::api::budget::WhenStale;
        use crate::api::conditions::argocd_cases::assert_matches;
        let kind = "TokenBudget";
        let conditions = |decision: Decision| decision.status.expect("written").conditions;
        let budget = opened("2026-11-01T12:00:00Z");
        let on = |eur: &str, now: &str| conditions(decided(&budget, &spent(eur), now));
        assert_matches(kind, "within budget", &on("10", "2026-11-15T12:00:00Z"));
        // 60 EUR in four days: 100 EUR long before the month ends.
        assert_matches(kind, "at risk", &on("60", "2026-11-05T12:00:00Z"));
        assert_matches(kind, "exceeded", &on("101", "2026-11-15T12:00:00Z"));
        let mut dollars = spent("10");
        for usage in dollars.lines.values_mut() {
            let cost = usage.cost.remove("EUR").expect("EUR");
            usage.cost.insert("USD".into(), cost);
        }
        assert_matches(
            kind,
            "currency mismatch",
            &conditions(decided(&budget, &dollars, "2026-11-15T12:00:00Z")),
        );
        let mut martian: TokenBudget = fixture(BUDGET);
        martian.spec.time_zone = Some("Mars/Olympus_Mons".into());
        assert_matches(kind, "invalid time zone", &on_budget(&martian, "1"));
        let mut abroad: TokenBudget = fixture(BUDGET);
        abroad.spec.scope.regions = vec!["in".into()];
        let elsewhere = decide(
            &abroad,
            &Observed::default(),
            &RegionScope::new(["eu".to_owned()]),
            INTERVAL,
            at("2026-11-15T12:00:00Z"),
        );
        assert_matches(kind, "managed elsewhere", &conditions(elsewhere));

        // A budget over eu and in, from eu's cluster.
        let mut global: TokenBudget = fixture(BUDGET);
        global.spec.scope.regions = vec!["eu".into(), "in".into()];
        global.status = global_decision("eu", &global, "0", "0", "2026-11-01T12:00:00Z").status;
        assert_matches(
            kind,
            "peers current",
            &conditions(global_decision(
                "eu",
                &global,
                "10",
                "20",
                "2026-11-15T12:00:00Z",
            )),
        );
        let unreachable = |budget: &TokenBudget, eur: &str| {
            let mut observed = spent(eur);
            observed.peers = vec![crate::finops::global::PeerRead {
                peer: "peer-in".into(),
                regions: vec!["in".into()],
                last: None,
                error: Some("connection refused".into()),
            }];
            decide(
                budget,
                &observed,
                &RegionScope::new(["eu".to_owned()]),
                INTERVAL,
                at("2026-11-15T12:05:00Z"),
            )
        };
        assert_matches(kind, "peer stale", &conditions(unreachable(&global, "10")));
        let mut closing = global.clone();
        closing.spec.global = Some(crate::api::budget::GlobalBudgetSpec {
            when_stale: WhenStale::FailClosed,
            ..Default::default()
        });
        // 55 EUR here and in's assumed half of the limit: at the limit.
        assert_matches(
            kind,
            "fail closed",
            &conditions(unreachable(&closing, "55")),
        );
    }

    fn on_budget(
        budget: &TokenBudget,
        eur: &str,
    ) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
        decided(budget, &spent(eur), "2026-11-15T12:00:00Z")
            .status
            .expect("written")
            .conditions
    }
}
