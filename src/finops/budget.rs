//! Budget evaluation, pure: calendar periods in a time zone, period-to-date spend from the
//! regions' ledgers, forecast, thresholds that fire once per period, conditions, and the
//! gateway actions in force.

use std::collections::BTreeMap;
use std::str::FromStr;

use jiff::civil::{Date, date};
use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;

use super::ledger::{Amounts, Ledger, add_amount};
use crate::api::budget::{
    BreakdownEntry, BudgetPeriod, BudgetScope, ClosedPeriod, CrossedThreshold, Forecast, Spend,
    ThresholdAction, TokenBudgetSpec, TokenBudgetStatus, UsageLine,
};
use crate::api::conditions::{self, DesiredCondition, Status};

/// Team name of idle GPU cost: nobody used the GPUs in those intervals.
pub const UNALLOCATED: &str = "(unallocated)";
/// Usage lines kept in status; the rest are summed into one `(other)` line so that the lines
/// still add up to `spent`.
pub const MAX_USAGE_LINES: usize = 200;
/// Entries per dimension in `breakdown`.
pub const TOP_N: usize = 5;
/// Closed periods kept in `history`.
pub const HISTORY: usize = 12;
/// Percent of the limit from which a budget is AtRisk even if the forecast is below it.
pub const AT_RISK_PERCENT: f64 = 80.0;

/// Why a budget cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The time zone is not in the time zone database.
    #[error("timeZone {zone:?} is not a known IANA time zone: {message}")]
    TimeZone {
        /// The zone.
        zone: String,
        /// jiff's message.
        message: String,
    },
    /// A date computation left the supported range.
    #[error("the period around {0} cannot be computed")]
    Period(String),
    /// `limit.amount` is not a decimal (the schema should have refused it).
    #[error("limit.amount {0:?} is not a decimal number")]
    Amount(String),
}

/// Cumulative usage of one line, as read from a region's ledger.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct LineKey {
    /// Team.
    pub team: String,
    /// Cost centre.
    pub cost_center: String,
    /// Model.
    pub model: String,
    /// Region.
    pub region: String,
}

/// Usage of a line: tokens, requests and cost per currency.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LineUsage {
    /// Input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Requests.
    pub requests: u64,
    /// Cost per currency.
    pub cost: Amounts,
    /// The part of `cost` input tokens cost (see `ledger::Totals::input_cost`).
    pub input_cost: Amounts,
    /// The part of `cost` output tokens cost.
    pub output_cost: Amounts,
}

impl LineUsage {
    fn add(&mut self, other: &LineUsage) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.requests += other.requests;
        for (into, from) in [
            (&mut self.cost, &other.cost),
            (&mut self.input_cost, &other.input_cost),
            (&mut self.output_cost, &other.output_cost),
        ] {
            for (currency, amount) in from {
                add_amount(into, currency, *amount);
            }
        }
    }
}

/// The cumulative usage lines of `ledger`, the ledger of `region`: series summed over key
/// aliases and deployments, idle GPU cost as team `(unallocated)`.
pub fn ledger_lines(ledger: &Ledger, region: &str) -> BTreeMap<LineKey, LineUsage> {
    let mut lines: BTreeMap<LineKey, LineUsage> = BTreeMap::new();
    for (series, totals) in &ledger.usage {
        let line = lines
            .entry(LineKey {
                team: series.team.clone(),
                cost_center: series.cost_center.clone(),
                model: series.model.clone(),
                region: region.to_owned(),
            })
            .or_default();
        line.add(&LineUsage {
            input_tokens: totals.input_tokens,
            output_tokens: totals.output_tokens,
            requests: totals.requests,
            cost: totals.cost.clone(),
            input_cost: totals.input_cost.clone(),
            output_cost: totals.output_cost.clone(),
        });
    }
    for meter in ledger.gpu.values() {
        if meter.idle_cost.is_empty() {
            continue;
        }
        let line = lines
            .entry(LineKey {
                team: UNALLOCATED.to_owned(),
                cost_center: String::new(),
                model: meter.model.clone(),
                region: region.to_owned(),
            })
            .or_default();
        line.add(&LineUsage {
            cost: meter.idle_cost.clone(),
            ..LineUsage::default()
        });
    }
    lines
}

/// Whether a line counts against a budget of `scope`: every list that is set must name the
/// line's value.
pub fn in_scope(scope: &BudgetScope, line: &LineKey) -> bool {
    let matches = |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
    matches(&scope.teams, &line.team)
        && matches(&scope.cost_centers, &line.cost_center)
        && matches(&scope.models, &line.model)
        && matches(&scope.regions, &line.region)
}

/// The period containing `now`: its first instant and the first instant after it, at
/// midnight in `zone`.
pub fn period_bounds(
    period: BudgetPeriod,
    zone: &TimeZone,
    now: Timestamp,
) -> Result<(Timestamp, Timestamp), BudgetError> {
    let today = now.to_zoned(zone.clone()).date();
    let (start, end) =
        period_dates(period, today).ok_or_else(|| BudgetError::Period(now.to_string()))?;
    let at_midnight = |day: Date| {
        day.to_zoned(zone.clone())
            .map(|z| z.timestamp())
            .map_err(|e| BudgetError::Period(e.to_string()))
    };
    Ok((at_midnight(start)?, at_midnight(end)?))
}

fn period_dates(period: BudgetPeriod, today: Date) -> Option<(Date, Date)> {
    let start = match period {
        BudgetPeriod::Daily => today,
        BudgetPeriod::Weekly => today
            .checked_sub(i64::from(today.weekday().to_monday_zero_offset()).days())
            .ok()?,
        BudgetPeriod::Monthly => today.first_of_month(),
        BudgetPeriod::Quarterly => date(today.year(), (today.month() - 1) / 3 * 3 + 1, 1),
    };
    let end = match period {
        BudgetPeriod::Daily => start.checked_add(1.day()),
        BudgetPeriod::Weekly => start.checked_add(1.week()),
        BudgetPeriod::Monthly => start.checked_add(1.month()),
        BudgetPeriod::Quarterly => start.checked_add(3.months()),
    }
    .ok()?;
    Some((start, end))
}

/// The name of the period starting at `start` in `zone`: `2026-11-28` (Daily), `2026-W48`
/// (Weekly), `2026-11` (Monthly), `2026-Q4` (Quarterly). `report --period` takes these.
pub fn period_label(period: BudgetPeriod, zone: &TimeZone, start: Timestamp) -> String {
    let day = start.to_zoned(zone.clone()).date();
    match period {
        BudgetPeriod::Daily => day.to_string(),
        BudgetPeriod::Weekly => {
            let week = day.iso_week_date();
            format!("{:04}-W{:02}", week.year(), week.week())
        }
        BudgetPeriod::Monthly => format!("{:04}-{:02}", day.year(), day.month()),
        BudgetPeriod::Quarterly => format!("{:04}-Q{}", day.year(), (day.month() - 1) / 3 + 1),
    }
}

/// The time zone of a budget (UTC when unset).
pub fn time_zone(spec: &TokenBudgetSpec) -> Result<TimeZone, BudgetError> {
    match &spec.time_zone {
        None => Ok(TimeZone::UTC),
        Some(zone) => TimeZone::get(zone).map_err(|e| BudgetError::TimeZone {
            zone: zone.clone(),
            message: e.to_string(),
        }),
    }
}

/// A gateway action in force for a budget's scope.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayAction {
    /// `namespace/name` of the budget.
    pub budget: String,
    /// `Block`, `Throttle` or `Downgrade`.
    pub action: ThresholdAction,
    /// Teams the action applies to (all when empty).
    pub teams: Vec<String>,
    /// Cost centres the action applies to (all when empty).
    pub cost_centers: Vec<String>,
    /// Models the action applies to (all when empty).
    pub models: Vec<String>,
    /// Throttle: requests per minute per gateway replica.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests_per_minute: Option<i32>,
    /// Downgrade: the model to route to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downgrade_to: Option<String>,
}

/// The result of one evaluation.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// The status to write.
    pub status: TokenBudgetStatus,
    /// Thresholds crossed by this evaluation (each fires once per period).
    pub fired: Vec<CrossedThreshold>,
    /// The period closed by this evaluation, if one was.
    pub closed: Option<ClosedPeriod>,
    /// Money use / limit (or tokens use / limit), for the metric.
    pub used_ratio: f64,
    /// Forecast at period end / limit.
    pub forecast_ratio: f64,
    /// The burn history with this evaluation's use, for the next evaluation.
    pub burn: BurnHistory,
    /// Percent of the limit the use is projected to reach before an action of the next
    /// evaluation could land ([`PREDICTION_HORIZON_INTERVALS`]), when the budget is
    /// `predictive` and the history has a rate.
    pub projected_percent: Option<f64>,
}

/// How far ahead a predictive budget looks, in evaluation intervals: to the next evaluation,
/// and half an interval more for what an action decided there takes to land (the scrape's
/// age, the actions write, the guard's watch; about 2 s measured, e2e/tests/overshoot.rs).
/// Looking exactly one interval ahead acts too late whenever the crossing falls just before
/// the next evaluation: the limit is crossed before that evaluation's Block arrives.
pub const PREDICTION_HORIZON_INTERVALS: f64 = 1.5;
/// Samples the burn history keeps: three give the two interval rates it compares.
const BURN_SAMPLES: usize = 3;
/// A look that saw no new use counts as a sample only this many evaluation intervals after
/// the last one. The use changes only when the collector commits (once per interval that
/// counted something), but a budget is also looked at in between: its requeue, its own
/// status write. Such a look a moment before the commit, taken for a sample, would make a
/// zero rate of a steady burn (measured: prediction never acted, e2e/tests/overshoot.rs).
/// Two intervals without a commit are a real pause.
const BURN_QUIET_INTERVALS: f64 = 2.0;

/// One look at a budget's period-to-date use: when (seconds) and how much (percent of the
/// limit, the larger of money and tokens).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BurnSample {
    /// Unix seconds of the evaluation.
    pub at: f64,
    /// Percent of the limit used then.
    pub percent: f64,
}

/// The last few looks at a budget's use in the current period (process memory of the budget
/// controller: after a restart prediction waits for three fresh looks, which errs on the
/// side of not acting early).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BurnHistory {
    /// Start of the period the samples belong to (Unix seconds).
    period_start: Option<i64>,
    /// Oldest first, at most [`BURN_SAMPLES`].
    samples: Vec<BurnSample>,
}

impl BurnHistory {
    /// The history after a look at `sample` in the period starting at `period_start`;
    /// `interval` is the evaluation interval in seconds. A new period, or use that went down
    /// (a ledger reset), starts the history again.
    pub fn observe(&self, period_start: i64, sample: BurnSample, interval: f64) -> BurnHistory {
        let mut next = self.clone();
        if next.period_start != Some(period_start)
            || next
                .samples
                .last()
                .is_some_and(|last| sample.percent < last.percent || sample.at < last.at)
        {
            next = BurnHistory {
                period_start: Some(period_start),
                samples: Vec::new(),
            };
        }
        if let Some(last) = next.samples.last()
            && sample.percent == last.percent
            && sample.at - last.at < interval * BURN_QUIET_INTERVALS
        {
            return next;
        }
        next.samples.push(sample);
        let excess = next.samples.len().saturating_sub(BURN_SAMPLES);
        next.samples.drain(..excess);
        next
    }

    /// Percent of the limit per second: the slower of the last two intervals, so that one
    /// burst (a fast interval after a slow one) is not taken for a rate; None until the
    /// history has two intervals.
    pub fn rate(&self) -> Option<f64> {
        let [a, b, c] = self.samples.as_slice() else {
            return None;
        };
        let per_second = |from: &BurnSample, to: &BurnSample| {
            let seconds = to.at - from.at;
            (seconds > 0.0).then(|| (to.percent - from.percent) / seconds)
        };
        Some(per_second(a, b)?.min(per_second(b, c)?))
    }

    /// Percent of the limit the use reaches `horizon` seconds after the last look at the
    /// current rate.
    pub fn projected(&self, horizon: f64) -> Option<f64> {
        let last = self.samples.last()?;
        Some(last.percent + self.rate()? * horizon)
    }
}

/// Whether a threshold of `action` fires at `percent` used, or at `projected` (the use by the
/// next evaluation) when the budget is predictive. Notify fires on the use itself: a
/// message that says a level was crossed must be true.
pub fn threshold_fires(
    threshold: i32,
    action: ThresholdAction,
    percent: f64,
    projected: Option<f64>,
) -> bool {
    let level = f64::from(threshold);
    percent >= level || (action != ThresholdAction::Notify && projected.is_some_and(|p| p >= level))
}

/// Evaluates a budget at `now` against the cumulative `lines` of the regions it covers,
/// without a burn history (no prediction).
pub fn evaluate(
    spec: &TokenBudgetSpec,
    generation: Option<i64>,
    previous: Option<&TokenBudgetStatus>,
    lines: &BTreeMap<LineKey, LineUsage>,
    now: Timestamp,
) -> Result<Evaluation, BudgetError> {
    evaluate_with(spec, generation, previous, lines, now, &Beyond::default())
}

/// What an evaluation may know beyond this cluster's lines.
#[derive(Clone, Debug, Default)]
pub struct Beyond<'a> {
    /// For a budget whose other regions are counted by peer clusters, their period-to-date
    /// spend (`finops::global`): `spent`, `usage` and `breakdown` stay this cluster's own;
    /// the percent, forecast, conditions and thresholds are of the sum.
    pub others: Option<&'a Spend>,
    /// The budget's burn history in this process (for `predictive`).
    pub burn: BurnHistory,
    /// The evaluation interval, seconds: a `predictive` budget's acting thresholds fire when
    /// the use projected to the next evaluation reaches them.
    pub interval: f64,
}

/// [`evaluate`] with what is known beyond this cluster's lines: the peers' spend and the
/// burn history.
pub fn evaluate_with(
    spec: &TokenBudgetSpec,
    generation: Option<i64>,
    previous: Option<&TokenBudgetStatus>,
    lines: &BTreeMap<LineKey, LineUsage>,
    now: Timestamp,
    beyond: &Beyond<'_>,
) -> Result<Evaluation, BudgetError> {
    let zone = time_zone(spec)?;
    let (start, end) = period_bounds(spec.period, &zone, now)?;
    let scoped: BTreeMap<&LineKey, &LineUsage> = lines
        .iter()
        .filter(|(key, _)| in_scope(&spec.scope, key))
        .collect();

    // The budget's currency: the limit's, else the only one the usage has.
    let currencies: std::collections::BTreeSet<&String> =
        scoped.values().flat_map(|u| u.cost.keys()).collect();
    let currency = spec
        .limit
        .currency
        .clone()
        .or_else(|| {
            (currencies.len() == 1)
                .then(|| currencies.iter().next().map(|c| (*c).clone()))
                .flatten()
        })
        .unwrap_or_default();
    let foreign: Vec<&String> = currencies.into_iter().filter(|c| **c != currency).collect();

    let now_lines: Vec<UsageLine> = scoped
        .iter()
        .map(|(key, usage)| usage_line(key, usage, &currency))
        .collect();

    let mut history = previous.map(|p| p.history.clone()).unwrap_or_default();
    let mut crossed = Vec::new();
    let mut closed = None;
    let opening: Vec<UsageLine> = match previous {
        Some(p) if p.period_start.as_ref().map(|t| t.0) == Some(start) => {
            crossed = p.thresholds_crossed.clone();
            p.period_opening.clone()
        }
        Some(p) if p.period_start.is_some() => {
            // The period rolled over: everything up to now closes the old one.
            let (old_start, old_end) = (p.period_start.clone(), p.period_end.clone());
            let usage = subtract(&now_lines, &p.period_opening);
            let spent = spend_of(&usage, &currency);
            let period = ClosedPeriod {
                period_start: old_start.unwrap_or(Time(start)),
                period_end: old_end.unwrap_or(Time(start)),
                percent_used: percent_used(spec, &spent)?,
                spent,
                usage: cap_lines(usage),
            };
            history.insert(0, period.clone());
            history.truncate(HISTORY);
            closed = Some(period);
            now_lines.clone()
        }
        // A new budget counts from its creation: the ledger's past is not this budget's.
        _ => now_lines.clone(),
    };

    let usage = subtract(&now_lines, &opening);
    let spent = spend_of(&usage, &currency);
    // What the thresholds act on: this cluster's spend, plus the peers' for a global budget.
    let whole = beyond.others.map(|others| {
        let mut whole = spent.clone();
        super::global::add(&mut whole, others);
        whole
    });
    let acting = whole.as_ref().unwrap_or(&spent);
    let percent = percent_used(spec, acting)?;

    let sample = BurnSample {
        at: now.as_millisecond() as f64 / 1000.0,
        percent,
    };
    let burn = beyond
        .burn
        .observe(start.as_second(), sample, beyond.interval);
    let projected_percent = if spec.predictive == Some(true) {
        burn.projected(beyond.interval * PREDICTION_HORIZON_INTERVALS)
    } else {
        None
    };
    let mut fired = Vec::new();
    for threshold in &spec.thresholds {
        let done = crossed
            .iter()
            .any(|c: &CrossedThreshold| c.percent == threshold.percent);
        if !done
            && threshold_fires(
                threshold.percent,
                threshold.action,
                percent,
                projected_percent,
            )
        {
            let event = CrossedThreshold {
                percent: threshold.percent,
                action: threshold.action,
                crossed_at: Time(now),
            };
            crossed.push(event.clone());
            fired.push(event);
        }
    }

    let forecast = forecast(spec, acting, start, end, now)?;
    let forecast_ratio = forecast_ratio(spec, &forecast.amount, acting, start, end, now);
    let used_ratio = percent / 100.0;
    let conditions = conditions(percent, forecast_ratio, &currency, &foreign);

    let status = TokenBudgetStatus {
        observed_generation: generation,
        period_start: Some(Time(start)),
        period_end: Some(Time(end)),
        spent: Some(spent),
        percent_used: Some(percent),
        forecast: Some(forecast),
        breakdown: breakdown(&usage),
        usage: cap_lines(usage),
        period_opening: opening,
        thresholds_crossed: crossed,
        history,
        conditions: previous.map(|p| p.conditions.clone()).unwrap_or_default(),
        // Written by the budget controller from `finops::global` for a global budget.
        global: None,
    };
    let mut status = status;
    for desired in conditions {
        conditions::upsert(&mut status.conditions, desired, generation, now);
    }
    Ok(Evaluation {
        status,
        fired,
        closed,
        used_ratio,
        forecast_ratio,
        burn,
        projected_percent,
    })
}

/// The gateway actions in force for a budget: Throttle, Block and Downgrade thresholds
/// crossed in the current period (a new period clears them).
pub fn active_actions(
    namespace: &str,
    name: &str,
    spec: &TokenBudgetSpec,
    status: &TokenBudgetStatus,
) -> Vec<GatewayAction> {
    let mut actions = Vec::new();
    for crossed in &status.thresholds_crossed {
        if crossed.action == ThresholdAction::Notify {
            continue;
        }
        let threshold = spec
            .thresholds
            .iter()
            .find(|t| t.percent == crossed.percent);
        actions.push(GatewayAction {
            budget: format!("{namespace}/{name}"),
            action: crossed.action,
            teams: spec.scope.teams.clone(),
            cost_centers: spec.scope.cost_centers.clone(),
            models: spec.scope.models.clone(),
            requests_per_minute: (crossed.action == ThresholdAction::Throttle)
                .then(|| threshold.and_then(|t| t.requests_per_minute).unwrap_or(10)),
            downgrade_to: (crossed.action == ThresholdAction::Downgrade)
                .then(|| threshold.and_then(|t| t.downgrade_to.clone()))
                .flatten(),
        });
    }
    // `whenStale: FailClosed` while a peer is stale (finops::global::fail_closed): blocked
    // until the peer is current again, without recording a crossed threshold.
    let fail_closed = status.global.as_ref().is_some_and(|g| g.fail_closed);
    if fail_closed && !actions.iter().any(|a| a.action == ThresholdAction::Block) {
        actions.push(GatewayAction {
            budget: format!("{namespace}/{name}"),
            action: ThresholdAction::Block,
            teams: spec.scope.teams.clone(),
            cost_centers: spec.scope.cost_centers.clone(),
            models: spec.scope.models.clone(),
            requests_per_minute: None,
            downgrade_to: None,
        });
    }
    actions
}

/// The actions file of one region's gateways (what `sovereign_guard.py` reads).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ActionsFile {
    /// Actions in force.
    pub actions: Vec<GatewayAction>,
    /// Downgrades left out because the region's gateway serves no such model: routing there
    /// would leave the jurisdiction (or fail every request).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<String>,
}

/// The actions in force in `region` from the statuses of `budgets`: those whose scope covers
/// the region, with downgrade targets checked against `served`, the models of the region's
/// own gateway.
pub fn region_actions(
    budgets: &[crate::api::budget::TokenBudget],
    region: &str,
    served: &std::collections::BTreeSet<String>,
) -> ActionsFile {
    use kube::ResourceExt;
    let mut file = ActionsFile::default();
    for budget in budgets {
        let scope = &budget.spec.scope;
        if !scope.regions.is_empty() && !scope.regions.iter().any(|r| r == region) {
            continue;
        }
        let Some(status) = &budget.status else {
            continue;
        };
        let namespace = budget.namespace().unwrap_or_default();
        for action in active_actions(&namespace, &budget.name_any(), &budget.spec, status) {
            if action.action == ThresholdAction::Downgrade {
                let target = action.downgrade_to.clone().unwrap_or_default();
                if !served.contains(&target) {
                    file.refused.push(format!(
                        "{}: downgrade target {target:?} is not served in region {region}",
                        action.budget
                    ));
                    continue;
                }
            }
            file.actions.push(action);
        }
    }
    file
}

fn amount_in(usage: &LineUsage, currency: &str) -> Decimal {
    usage.cost.get(currency).copied().unwrap_or_default()
}

fn usage_line(key: &LineKey, usage: &LineUsage, currency: &str) -> UsageLine {
    UsageLine {
        team: key.team.clone(),
        cost_center: key.cost_center.clone(),
        model: key.model.clone(),
        region: key.region.clone(),
        input_tokens: to_i64(usage.input_tokens),
        output_tokens: to_i64(usage.output_tokens),
        requests: to_i64(usage.requests),
        amount: money(amount_in(usage, currency)),
        input_amount: Some(money(
            usage.input_cost.get(currency).copied().unwrap_or_default(),
        )),
        output_amount: Some(money(
            usage.output_cost.get(currency).copied().unwrap_or_default(),
        )),
    }
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// Money as status shows it: exact, without trailing zeros.
pub fn money(amount: Decimal) -> String {
    amount.normalize().to_string()
}

fn decimal(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap_or_default()
}

fn same_line(a: &UsageLine, b: &UsageLine) -> bool {
    a.team == b.team && a.cost_center == b.cost_center && a.model == b.model && a.region == b.region
}

/// `now - opening`, line by line; a line below its opening (a ledger that was reset) counts
/// as zero rather than negative.
fn subtract(now: &[UsageLine], opening: &[UsageLine]) -> Vec<UsageLine> {
    let mut out = Vec::new();
    for line in now {
        let base = opening.iter().find(|o| same_line(o, line));
        let mut delta = line.clone();
        if let Some(base) = base {
            delta.input_tokens = (line.input_tokens - base.input_tokens).max(0);
            delta.output_tokens = (line.output_tokens - base.output_tokens).max(0);
            delta.requests = (line.requests - base.requests).max(0);
            delta.amount =
                money((decimal(&line.amount) - decimal(&base.amount)).max(Decimal::ZERO));
            // An opening an earlier release wrote has no split: this period's cannot be told.
            let part = |now: &Option<String>, base: &Option<String>| match (now, base) {
                (Some(now), Some(base)) => {
                    Some(money((decimal(now) - decimal(base)).max(Decimal::ZERO)))
                }
                _ => None,
            };
            delta.input_amount = part(&line.input_amount, &base.input_amount);
            delta.output_amount = part(&line.output_amount, &base.output_amount);
        }
        if delta.input_tokens + delta.output_tokens + delta.requests > 0
            || !decimal(&delta.amount).is_zero()
        {
            out.push(delta);
        }
    }
    out
}

fn spend_of(lines: &[UsageLine], currency: &str) -> Spend {
    let mut spend = Spend {
        currency: currency.to_owned(),
        ..Spend::default()
    };
    let mut amount = Decimal::ZERO;
    for line in lines {
        spend.input_tokens += line.input_tokens;
        spend.output_tokens += line.output_tokens;
        spend.requests += line.requests;
        amount += decimal(&line.amount);
    }
    spend.amount = money(amount);
    spend
}

/// Percent of the limit used, rounded to 0.01: the larger of money and tokens when both are
/// limited.
fn percent_used(spec: &TokenBudgetSpec, spent: &Spend) -> Result<f64, BudgetError> {
    let mut percent: f64 = 0.0;
    if let Some(limit) = &spec.limit.amount {
        let limit = Decimal::from_str(limit).map_err(|_| BudgetError::Amount(limit.clone()))?;
        percent = percent.max(ratio(decimal(&spent.amount), limit) * 100.0);
    }
    if let Some(tokens) = spec.limit.tokens {
        let used = spent.input_tokens + spent.output_tokens;
        percent = percent.max(ratio(Decimal::from(used), Decimal::from(tokens)) * 100.0);
    }
    Ok((percent * 100.0).round() / 100.0)
}

fn ratio(used: Decimal, limit: Decimal) -> f64 {
    if limit.is_zero() {
        return if used.is_zero() {
            0.0
        } else {
            f64::INFINITY.min(1e9)
        };
    }
    (used / limit).to_f64().unwrap_or(0.0)
}

fn forecast(
    spec: &TokenBudgetSpec,
    spent: &Spend,
    start: Timestamp,
    end: Timestamp,
    now: Timestamp,
) -> Result<Forecast, BudgetError> {
    let elapsed = Decimal::from(now.as_second() - start.as_second()).max(Decimal::ONE);
    let length = Decimal::from(end.as_second() - start.as_second());
    let amount = decimal(&spent.amount);
    let projected = (amount * length / elapsed).round_dp(2);
    // When the limit is reached at the current burn rate, if inside the period.
    let exhausts_at = match &spec.limit.amount {
        Some(limit) => {
            let limit = Decimal::from_str(limit).map_err(|_| BudgetError::Amount(limit.clone()))?;
            reach_time(amount, limit, elapsed, start, end)
        }
        None => spec.limit.tokens.and_then(|tokens| {
            let used = Decimal::from(spent.input_tokens + spent.output_tokens);
            reach_time(used, Decimal::from(tokens), elapsed, start, end)
        }),
    };
    Ok(Forecast {
        amount: money(projected),
        exhausts_at: exhausts_at.map(Time),
    })
}

fn reach_time(
    used: Decimal,
    limit: Decimal,
    elapsed: Decimal,
    start: Timestamp,
    end: Timestamp,
) -> Option<Timestamp> {
    if used.is_zero() || used >= limit {
        return None;
    }
    let seconds = (limit * elapsed / used).floor().to_i64()?;
    let at = Timestamp::from_second(start.as_second().checked_add(seconds)?).ok()?;
    (at < end).then_some(at)
}

fn forecast_ratio(
    spec: &TokenBudgetSpec,
    forecast_amount: &str,
    spent: &Spend,
    start: Timestamp,
    end: Timestamp,
    now: Timestamp,
) -> f64 {
    let mut r: f64 = 0.0;
    if let Some(limit) = spec.limit.amount.as_deref() {
        r = r.max(ratio(decimal(forecast_amount), decimal(limit)));
    }
    if let Some(tokens) = spec.limit.tokens {
        let elapsed = (now.as_second() - start.as_second()).max(1) as f64;
        let length = (end.as_second() - start.as_second()) as f64;
        let used = (spent.input_tokens + spent.output_tokens) as f64;
        if tokens > 0 {
            r = r.max(used * length / elapsed / tokens as f64);
        }
    }
    r
}

fn conditions(
    percent: f64,
    forecast_ratio: f64,
    currency: &str,
    foreign: &[&String],
) -> Vec<DesiredCondition<'static>> {
    let condition = |type_: &'static str, status: Status, reason: &'static str, message: String| {
        DesiredCondition {
            type_,
            status,
            reason,
            message,
        }
    };
    if !foreign.is_empty() {
        let list = foreign
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let message = format!(
            "usage in {list} cannot be counted against a budget in {currency} without a rates table; narrow the scope to backends priced in {currency} (spend shown covers {currency} only)"
        );
        return ["WithinBudget", "AtRisk", "Exceeded"]
            .into_iter()
            .map(|t| condition(t, Status::Unknown, "CurrencyMismatch", message.clone()))
            .collect();
    }
    let exceeded = percent >= 100.0;
    let at_risk = !exceeded && (percent >= AT_RISK_PERCENT || forecast_ratio >= 1.0);
    let within = !exceeded && !at_risk;
    let used = format!("{percent:.2}% of the limit used");
    let forecast = format!("{:.0}% forecast at period end", forecast_ratio * 100.0);
    vec![
        condition(
            "WithinBudget",
            Status::from(within),
            if within {
                "UnderLimit"
            } else if exceeded {
                "LimitReached"
            } else {
                "AtRisk"
            },
            format!("{used}; {forecast}"),
        ),
        condition(
            "AtRisk",
            Status::from(at_risk),
            if at_risk {
                if percent >= AT_RISK_PERCENT {
                    "HighUse"
                } else {
                    "ForecastOverLimit"
                }
            } else {
                "NotAtRisk"
            },
            format!("{used}; {forecast}"),
        ),
        condition(
            "Exceeded",
            Status::from(exceeded),
            if exceeded {
                "LimitReached"
            } else {
                "UnderLimit"
            },
            used,
        ),
    ]
}

/// The value of breakdown dimension `dimension` of `line`.
fn dimension_value<'a>(dimension: &str, line: &'a UsageLine) -> &'a str {
    match dimension {
        "team" => &line.team,
        "costCenter" => &line.cost_center,
        "model" => &line.model,
        _ => &line.region,
    }
}

/// Top spenders per dimension.
fn breakdown(lines: &[UsageLine]) -> Vec<BreakdownEntry> {
    let mut out = Vec::new();
    for dimension in ["team", "costCenter", "model", "region"] {
        let mut sums: BTreeMap<&str, (Decimal, i64)> = BTreeMap::new();
        for line in lines {
            let sum = sums.entry(dimension_value(dimension, line)).or_default();
            sum.0 += decimal(&line.amount);
            sum.1 += line.input_tokens + line.output_tokens;
        }
        let mut ranked: Vec<_> = sums.into_iter().collect();
        ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        out.extend(
            ranked
                .into_iter()
                .take(TOP_N)
                .map(|(value, (amount, tokens))| BreakdownEntry {
                    dimension: dimension.to_owned(),
                    value: value.to_owned(),
                    amount: money(amount),
                    tokens,
                }),
        );
    }
    out
}

/// The biggest `MAX_USAGE_LINES - 1` lines and one `(other)` line with the rest.
fn cap_lines(mut lines: Vec<UsageLine>) -> Vec<UsageLine> {
    lines.sort_by(|a, b| {
        decimal(&b.amount)
            .cmp(&decimal(&a.amount))
            .then((b.input_tokens + b.output_tokens).cmp(&(a.input_tokens + a.output_tokens)))
            .then(a.team.cmp(&b.team))
            .then(a.cost_center.cmp(&b.cost_center))
            .then(a.model.cmp(&b.model))
            .then(a.region.cmp(&b.region))
    });
    if lines.len() <= MAX_USAGE_LINES {
        return lines;
    }
    let rest_lines = lines.split_off(MAX_USAGE_LINES - 1);
    let rest = spend_of(&rest_lines, "");
    let other = UsageLine {
        team: "(other)".into(),
        cost_center: "(other)".into(),
        model: "(other)".into(),
        region: "(other)".into(),
        input_tokens: rest.input_tokens,
        output_tokens: rest.output_tokens,
        requests: rest.requests,
        amount: rest.amount,
        input_amount: split_sum(&rest_lines, |l| &l.input_amount),
        output_amount: split_sum(&rest_lines, |l| &l.output_amount),
    };
    lines.push(other);
    lines
}

/// The sum of one part (input or output amount) of `lines`; unknown when one line's is.
pub fn split_sum(
    lines: &[UsageLine],
    part: impl Fn(&UsageLine) -> &Option<String>,
) -> Option<String> {
    let mut sum = Decimal::ZERO;
    for line in lines {
        sum += decimal(part(line).as_deref()?);
    }
    Some(money(sum))
}

#[cfg(test)]
mod tests;
