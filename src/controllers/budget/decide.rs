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
use crate::api::conditions::{AT_RISK, DesiredCondition, EXCEEDED, Status, WITHIN_BUDGET};
use crate::finops::budget::{BurnHistory, evaluate_ahead};

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
    let evaluation = match evaluate_ahead(
        &budget.spec,
        budget.metadata.generation,
        budget.status.as_ref(),
        &observed.lines,
        now,
        &observed.burn,
        interval.as_secs_f64(),
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
    let uid = budget.uid().unwrap_or_default();
    let announcements = evaluation
        .fired
        .iter()
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
    }
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

    #[test]
    fn a_budget_over_every_region_is_evaluated_even_with_no_usage() {
        let budget: TokenBudget = fixture(BUDGET);
        let decision = decided(&budget, &Observed::default(), "2026-11-15T12:00:00Z");
        let status = decision.status.expect("a first status");
        let within = find(&status.conditions, WITHIN_BUDGET).expect("set");
        assert_eq!(within.status, "True");
        assert!(decision.announcements.is_empty());
    }
}
