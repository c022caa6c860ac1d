//! Global budgets, pure: what a cluster publishes of a TokenBudget for its peers (period
//! totals only), how it judges what a peer published (trusted regions, same budget, same
//! period, sane numbers, never decreasing), staleness, the fail-closed rule and who announces.
//! The rules are written down in docs/decisions.md ("Global budgets on metadata only").

use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::api::budget::{
    BudgetPeriod, BudgetScope, GlobalBudgetStatus, PeerTotals, Spend, TokenBudget, TokenBudgetSpec,
    WhenStale,
};

/// The ConfigMap, in the operator's namespace, holding what this cluster publishes for its
/// peers; the only object a peer's credential can read.
pub const TOTALS_NAME: &str = "sovereign-global-totals";
/// Its data key.
pub const TOTALS_KEY: &str = "totals.json";
/// Label of the Secrets (in the operator's namespace) that grant access to a peer cluster;
/// its value names the peer.
pub const PEER_LABEL: &str = "sovereign.ai/peer";
/// Key of such a Secret holding a kubeconfig for the peer's API server (a read-only token).
pub const PEER_KUBECONFIG_KEY: &str = "kubeconfig";
/// Key of such a Secret listing, comma-separated, the regions the peer is trusted for.
pub const PEER_REGIONS_KEY: &str = "regions";
/// Staleness bound when a budget sets none, in usage intervals.
pub const STALE_INTERVALS: u32 = 3;
/// Largest total a peer may report: beyond it the number is refused as malformed (no budget
/// has a trillion of anything in a period; an i64 sum would overflow long before).
const SANE_MAX: i64 = 1_000_000_000_000;

/// What one cluster publishes: the regions it counts and each budget's period totals there.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Published {
    /// Regions the publishing cluster counts.
    #[serde(default)]
    pub regions: Vec<String>,
    /// One entry per budget counted there.
    #[serde(default)]
    pub budgets: Vec<PublishedBudget>,
}

/// The period totals of one budget in the publishing cluster's regions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedBudget {
    /// `namespace/name`: the GitOps copies of a budget share it in every cluster.
    pub budget: String,
    /// The budget's scope as this cluster's copy says (to recognise a drifted copy).
    #[serde(default)]
    pub scope: BudgetScope,
    /// Its period.
    #[serde(default)]
    pub period: BudgetPeriod,
    /// Its time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// The regions the totals cover.
    #[serde(default)]
    pub regions: Vec<String>,
    /// First instant of the period the totals belong to.
    pub period_start: Time,
    /// Period-to-date totals: money, tokens, requests. Nothing finer ever leaves a cluster.
    pub spent: Spend,
}

/// The publication of this cluster: every budget that has been evaluated here over at least
/// one local region. `local` gives the regions of a budget this cluster counts.
pub fn publication(
    regions: &[String],
    budgets: &[TokenBudget],
    local: impl Fn(&TokenBudget) -> Vec<String>,
) -> Published {
    use kube::ResourceExt;
    let mut out = Published {
        regions: regions.to_vec(),
        budgets: Vec::new(),
    };
    for budget in budgets {
        let Some(status) = &budget.status else {
            continue;
        };
        let (Some(period_start), Some(spent)) = (&status.period_start, &status.spent) else {
            continue;
        };
        let covered = local(budget);
        if covered.is_empty() {
            continue;
        }
        out.budgets.push(PublishedBudget {
            budget: format!(
                "{}/{}",
                budget.namespace().unwrap_or_default(),
                budget.name_any()
            ),
            scope: budget.spec.scope.clone(),
            period: budget.spec.period,
            time_zone: budget.spec.time_zone.clone(),
            regions: covered,
            period_start: period_start.clone(),
            spent: spent.clone(),
        });
    }
    out.budgets.sort_by(|a, b| a.budget.cmp(&b.budget));
    out
}

/// The last read of one peer, as the peer poller keeps it in memory.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PeerRead {
    /// The peer (its credential Secret's name).
    pub peer: String,
    /// The regions the platform team trusts this peer for (the Secret's `regions`).
    pub regions: Vec<String>,
    /// The last successful read: when, and what it said.
    pub last: Option<(Timestamp, Published)>,
    /// Why the latest attempt failed, if it did.
    pub error: Option<String>,
}

/// Everything [`combine`] judges for one budget.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    /// `namespace/name` of the budget.
    pub key: &'a str,
    /// Its spec.
    pub spec: &'a TokenBudgetSpec,
    /// The regions of its scope (its `scope.regions`, or every known region when empty).
    pub scope_regions: &'a [String],
    /// Those this cluster counts itself.
    pub local_regions: &'a [String],
    /// The budget's currency here (empty when unknown yet).
    pub currency: &'a str,
    /// First instant of the current period.
    pub period_start: Timestamp,
    /// The global status written last (the last known totals survive restarts there).
    pub previous: Option<&'a GlobalBudgetStatus>,
    /// The peers' last reads.
    pub peers: &'a [PeerRead],
    /// Age from which a peer's totals are stale.
    pub stale_after: Duration,
    /// Now.
    pub now: Timestamp,
}

/// The peers' share of a budget.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Combined {
    /// One entry per peer that counts regions of the scope.
    pub peers: Vec<PeerTotals>,
    /// The sum of their accepted totals.
    pub others: Spend,
    /// Regions of the scope no peer is trusted for: their spend is not counted anywhere here.
    pub unaccounted: Vec<String>,
}

impl Combined {
    /// Peers whose totals are stale.
    pub fn stale(&self) -> impl Iterator<Item = &PeerTotals> {
        self.peers.iter().filter(|p| p.stale)
    }
}

/// The announcer of a budget: the first region of its scope in sorted order. Every cluster
/// computes the same one from the same GitOps objects, so exactly one cluster announces.
pub fn announcer(scope_regions: &[String]) -> String {
    scope_regions.iter().min().cloned().unwrap_or_default()
}

/// The staleness bound of a budget: its own, else [`STALE_INTERVALS`] usage intervals.
pub fn stale_after(spec: &TokenBudgetSpec, interval: Duration) -> Duration {
    spec.global
        .as_ref()
        .and_then(|g| g.stale_after_seconds)
        .and_then(|s| u64::try_from(s).ok())
        .map(Duration::from_secs)
        .unwrap_or(interval * STALE_INTERVALS)
}

/// Judges every peer's totals for one budget: a peer counts only the regions it is trusted for
/// that this cluster does not count itself (never double-counted), only for the same budget
/// and period, only sane numbers, and never less than it said before in the period (a token
/// once counted is not lost). A peer that cannot be read keeps its last known totals.
pub fn combine(input: &Input<'_>) -> Combined {
    let local: BTreeSet<&String> = input.local_regions.iter().collect();
    let mut wanted: BTreeSet<&String> = input
        .scope_regions
        .iter()
        .filter(|r| !local.contains(r))
        .collect();
    let mut peers: Vec<&PeerRead> = input.peers.iter().collect();
    peers.sort_by(|a, b| a.peer.cmp(&b.peer));
    let mut out = Combined {
        others: zero(input.currency),
        ..Combined::default()
    };
    for peer in peers {
        // The regions this peer answers for here; a region two peers claim goes to the first.
        let trusted: Vec<String> = peer
            .regions
            .iter()
            .filter(|r| wanted.contains(r))
            .cloned()
            .collect();
        if trusted.is_empty() {
            continue;
        }
        for region in &trusted {
            wanted.remove(region);
        }
        let totals = judge(input, peer, &trusted);
        add(&mut out.others, &totals.spent);
        out.peers.push(totals);
    }
    out.unaccounted = wanted.into_iter().cloned().collect();
    out
}

/// The totals of one peer for the budget.
fn judge(input: &Input<'_>, peer: &PeerRead, trusted: &[String]) -> PeerTotals {
    let start = Time(input.period_start);
    // What this cluster knew of the peer in the current period.
    let known = input
        .previous
        .and_then(|g| g.peers.iter().find(|p| p.peer == peer.peer))
        .filter(|p| p.period_start.as_ref() == Some(&start));
    let mut totals = PeerTotals {
        peer: peer.peer.clone(),
        regions: trusted.to_vec(),
        period_start: Some(start.clone()),
        spent: known.map_or_else(|| zero(input.currency), |k| k.spent.clone()),
        observed_at: known.and_then(|k| k.observed_at.clone()),
        stale: false,
        message: String::new(),
    };
    let mut problem = peer
        .error
        .as_ref()
        .map(|e| format!("cannot read the peer's totals: {e}"));
    if let Some((read_at, published)) = &peer.last {
        match accept(input, published, trusted) {
            Ok(Some(spent)) => {
                let before = totals.spent.clone();
                totals.spent = at_least(&spent, &before);
                if totals.spent != spent {
                    problem.get_or_insert_with(|| {
                        "the peer reported less than before in this period; the larger totals are kept".to_owned()
                    });
                }
                totals.observed_at = Some(Time(*read_at));
            }
            // Not counted there yet (the peer has not evaluated the budget in this period):
            // nothing spent, as far as the peer knows.
            Ok(None) => {
                if known.is_none() {
                    totals.observed_at = Some(Time(*read_at));
                }
                problem.get_or_insert_with(|| {
                    "the peer publishes no totals of this budget for the current period".to_owned()
                });
            }
            Err(refused) => problem = Some(refused),
        }
    }
    let age = totals
        .observed_at
        .as_ref()
        .map(|t| input.now.duration_since(t.0).unsigned_abs());
    totals.stale = age.is_none_or(|age| age > input.stale_after);
    if totals.stale {
        let since = totals
            .observed_at
            .as_ref()
            .map_or("never read".to_owned(), |t| format!("last read at {}", t.0));
        let why = problem.unwrap_or_else(|| "no fresh read".to_owned());
        totals.message = format!(
            "stale ({since}, bound {}s): {why}; counting the last known totals",
            input.stale_after.as_secs()
        );
    } else if let Some(problem) = problem {
        totals.message = problem;
    }
    totals
}

/// The peer's totals for the budget in `published`, if it publishes any for the current
/// period; an error naming what is refused otherwise.
fn accept(
    input: &Input<'_>,
    published: &Published,
    trusted: &[String],
) -> Result<Option<Spend>, String> {
    let Some(entry) = published.budgets.iter().find(|b| b.budget == input.key) else {
        return Ok(None);
    };
    let foreign: Vec<&String> = entry
        .regions
        .iter()
        .filter(|r| !trusted.contains(r))
        .collect();
    if !foreign.is_empty() {
        return Err(format!(
            "refused: the peer reports regions it is not trusted for here: {foreign:?}"
        ));
    }
    let spec = input.spec;
    if entry.scope != spec.scope || entry.period != spec.period || entry.time_zone != spec.time_zone
    {
        return Err(
            "refused: the peer's copy of the budget has another scope, period or time zone"
                .to_owned(),
        );
    }
    if entry.period_start.0 != input.period_start {
        return Err(format!(
            "the peer counts the period starting {}, this cluster the one starting {}: not counted (clock skew or a period just rolled over)",
            entry.period_start.0, input.period_start
        ));
    }
    let spent = &entry.spent;
    let amount = Decimal::from_str(&spent.amount).ok();
    let numbers = [spent.input_tokens, spent.output_tokens, spent.requests];
    let sane = amount.is_some_and(|a| !a.is_sign_negative() && a < Decimal::from(SANE_MAX))
        && numbers.iter().all(|n| (0..SANE_MAX).contains(n));
    if !sane {
        return Err("refused: the peer reports negative or malformed totals".to_owned());
    }
    let nothing = amount.is_some_and(|a| a.is_zero());
    let mut spent = spent.clone();
    if !input.currency.is_empty() && spent.currency != input.currency && !nothing {
        if input.spec.limit.amount.is_some() {
            return Err(format!(
                "refused: the peer counts in {:?}, this budget in {:?}",
                spent.currency, input.currency
            ));
        }
        // A token budget over regions priced in different currencies: tokens and requests
        // add up, money is never converted.
        spent.amount = "0".to_owned();
    }
    if !input.currency.is_empty() {
        spent.currency = input.currency.to_owned();
    }
    Ok(Some(spent))
}

/// `new`, field by field never below `floor`.
fn at_least(new: &Spend, floor: &Spend) -> Spend {
    let amount = decimal(&new.amount).max(decimal(&floor.amount));
    Spend {
        amount: crate::finops::budget::money(amount),
        currency: new.currency.clone(),
        input_tokens: new.input_tokens.max(floor.input_tokens),
        output_tokens: new.output_tokens.max(floor.output_tokens),
        requests: new.requests.max(floor.requests),
    }
}

fn decimal(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap_or_default()
}

fn zero(currency: &str) -> Spend {
    Spend {
        amount: "0".to_owned(),
        currency: currency.to_owned(),
        ..Spend::default()
    }
}

/// `total += part`.
pub fn add(total: &mut Spend, part: &Spend) {
    total.amount = crate::finops::budget::money(decimal(&total.amount) + decimal(&part.amount));
    total.input_tokens = total.input_tokens.saturating_add(part.input_tokens);
    total.output_tokens = total.output_tokens.saturating_add(part.output_tokens);
    total.requests = total.requests.saturating_add(part.requests);
    if total.currency.is_empty() {
        total.currency = part.currency.clone();
    }
}

/// Whether `spent` reaches the budget's limit (money or tokens).
fn at_limit(spec: &TokenBudgetSpec, spent: &Spend) -> bool {
    let money = spec
        .limit
        .amount
        .as_deref()
        .and_then(|l| Decimal::from_str(l).ok())
        .is_some_and(|limit| decimal(&spent.amount) >= limit);
    let tokens = spec
        .limit
        .tokens
        .is_some_and(|limit| spent.input_tokens.saturating_add(spent.output_tokens) >= limit);
    money || tokens
}

/// `whenStale: FailClosed`: whether the scope is blocked here because stale peers, assumed to
/// have spent their whole share of the limit (the limit split evenly over the scope's
/// regions), would put the budget at its limit. A cluster under its own share is never
/// blocked by this rule alone: the assumption only fills the stale peers' shares.
pub fn fail_closed(
    spec: &TokenBudgetSpec,
    scope_regions: usize,
    local: &Spend,
    combined: &Combined,
) -> bool {
    let closed = spec
        .global
        .as_ref()
        .is_some_and(|g| g.when_stale == WhenStale::FailClosed);
    let stale_regions: usize =
        combined.stale().map(|p| p.regions.len()).sum::<usize>() + combined.unaccounted.len();
    if !closed || stale_regions == 0 || scope_regions == 0 {
        return false;
    }
    let mut assumed = local.clone();
    let regions = Decimal::from(scope_regions as u64);
    for peer in &combined.peers {
        if !peer.stale {
            add(&mut assumed, &peer.spent);
            continue;
        }
        let share = Decimal::from(peer.regions.len() as u64) / regions;
        add(&mut assumed, &at_least(&peer.spent, &share_of(spec, share)));
    }
    let unaccounted = Decimal::from(combined.unaccounted.len() as u64) / regions;
    add(&mut assumed, &share_of(spec, unaccounted));
    at_limit(spec, &assumed)
}

/// `fraction` of the budget's limit as a spend (tokens as input tokens).
fn share_of(spec: &TokenBudgetSpec, fraction: Decimal) -> Spend {
    let amount = spec
        .limit
        .amount
        .as_deref()
        .and_then(|l| Decimal::from_str(l).ok())
        .map(|l| l * fraction)
        .unwrap_or_default();
    let tokens = spec
        .limit
        .tokens
        .map(|t| {
            use rust_decimal::prelude::ToPrimitive;
            (Decimal::from(t) * fraction)
                .ceil()
                .to_i64()
                .unwrap_or(i64::MAX)
        })
        .unwrap_or(0);
    Spend {
        amount: crate::finops::budget::money(amount),
        currency: spec.limit.currency.clone().unwrap_or_default(),
        input_tokens: tokens,
        ..Spend::default()
    }
}

/// The global status of a budget from this cluster's `local` spend and the peers'.
pub fn status(
    scope_regions: &[String],
    local_regions: &[String],
    local: &Spend,
    combined: &Combined,
    fail_closed: bool,
) -> GlobalBudgetStatus {
    let mut spent = local.clone();
    add(&mut spent, &combined.others);
    GlobalBudgetStatus {
        announcer: announcer(scope_regions),
        local_regions: local_regions.to_vec(),
        spent,
        peers: combined.peers.clone(),
        fail_closed,
    }
}

/// One line saying where the global figure comes from, for the conditions and Events.
pub fn summary(local_regions: &[String], local: &Spend, combined: &Combined) -> String {
    let mut parts = vec![format!(
        "{} {} counted here ({})",
        local.amount,
        local.currency,
        local_regions.join(", ")
    )];
    for peer in &combined.peers {
        parts.push(format!(
            "{} {} from peer {} ({}){}",
            peer.spent.amount,
            peer.spent.currency,
            peer.peer,
            peer.regions.join(", "),
            if peer.stale { ", stale" } else { "" }
        ));
    }
    if !combined.unaccounted.is_empty() {
        parts.push(format!(
            "regions {} not counted: no peer is trusted for them",
            combined.unaccounted.join(", ")
        ));
    }
    format!("whole scope: {}", parts.join(" + "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::budget::{BudgetLimit, GlobalBudgetSpec};

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    const NOV: &str = "2026-11-01T00:00:00Z";
    const KEY: &str = "finance/global";

    fn spec() -> TokenBudgetSpec {
        TokenBudgetSpec {
            scope: BudgetScope {
                teams: vec!["search".into()],
                regions: vec!["eu".into(), "in".into()],
                ..BudgetScope::default()
            },
            limit: BudgetLimit {
                amount: Some("100".into()),
                currency: Some("EUR".into()),
                tokens: None,
            },
            ..TokenBudgetSpec::default()
        }
    }

    fn spend(amount: &str, tokens: i64) -> Spend {
        Spend {
            amount: amount.into(),
            currency: "EUR".into(),
            input_tokens: tokens,
            output_tokens: tokens / 2,
            requests: 1,
        }
    }

    fn published(regions: &[&str], start: &str, spent: Spend) -> Published {
        let spec = spec();
        Published {
            regions: regions.iter().map(|r| (*r).to_owned()).collect(),
            budgets: vec![PublishedBudget {
                budget: KEY.into(),
                scope: spec.scope,
                period: spec.period,
                time_zone: spec.time_zone,
                regions: regions.iter().map(|r| (*r).to_owned()).collect(),
                period_start: Time(at(start)),
                spent,
            }],
        }
    }

    fn read(peer: &str, trusted: &[&str], when: &str, what: Option<Published>) -> PeerRead {
        PeerRead {
            peer: peer.into(),
            regions: trusted.iter().map(|r| (*r).to_owned()).collect(),
            last: what.map(|p| (at(when), p)),
            error: None,
        }
    }

    fn regions(list: &[&str]) -> Vec<String> {
        list.iter().map(|r| (*r).to_owned()).collect()
    }

    fn combined(
        spec: &TokenBudgetSpec,
        previous: Option<&GlobalBudgetStatus>,
        peers: &[PeerRead],
        now: &str,
    ) -> Combined {
        let scope = regions(&["eu", "in"]);
        let local = regions(&["eu"]);
        combine(&Input {
            key: KEY,
            spec,
            scope_regions: &scope,
            local_regions: &local,
            currency: "EUR",
            period_start: at(NOV),
            previous,
            peers,
            stale_after: Duration::from_secs(90),
            now: at(now),
        })
    }

    fn with(previous: &Combined) -> GlobalBudgetStatus {
        status(
            &regions(&["eu", "in"]),
            &regions(&["eu"]),
            &spend("0", 0),
            previous,
            false,
        )
    }

    #[test]
    fn a_current_peer_is_added_once_and_the_sum_is_exact() {
        let spec = spec();
        let peers = [read(
            "in",
            &["in"],
            "2026-11-15T12:00:00Z",
            Some(published(&["in"], NOV, spend("40.5", 1000))),
        )];
        let c = combined(&spec, None, &peers, "2026-11-15T12:00:30Z");
        assert_eq!(c.others, spend("40.5", 1000));
        assert!(c.unaccounted.is_empty());
        assert_eq!(c.peers.len(), 1);
        assert!(!c.peers[0].stale && c.peers[0].message.is_empty());
        let global = status(
            &regions(&["eu", "in"]),
            &regions(&["eu"]),
            &spend("9.5", 10),
            &c,
            false,
        );
        assert_eq!(global.spent.amount, "50");
        assert_eq!(global.spent.input_tokens, 1010);
        assert_eq!(global.announcer, "eu");
    }

    #[test]
    fn a_peer_claiming_this_clusters_region_or_one_it_is_not_trusted_for_is_refused() {
        let spec = spec();
        // Trusted for `in` only, it reports `eu` as well: refused whole, nothing counted.
        let peers = [read(
            "in",
            &["in"],
            "2026-11-15T12:00:00Z",
            Some(published(&["in", "eu"], NOV, spend("40", 100))),
        )];
        let c = combined(&spec, None, &peers, "2026-11-15T12:00:10Z");
        assert_eq!(c.others.amount, "0");
        assert!(c.peers[0].message.contains("not trusted"), "{c:?}");
        // A peer trusted (by mistake) for this cluster's own region never counts it twice.
        let peers = [read(
            "in",
            &["in", "eu"],
            "2026-11-15T12:00:00Z",
            Some(published(&["in"], NOV, spend("40", 100))),
        )];
        let c = combined(&spec, None, &peers, "2026-11-15T12:00:10Z");
        assert_eq!(c.peers[0].regions, ["in"]);
        assert_eq!(c.others.amount, "40");
    }

    #[test]
    fn negative_malformed_or_inflated_beyond_sense_totals_are_refused() {
        let spec = spec();
        for bad in [
            spend("-5", 10),
            spend("5", -10),
            spend("five", 10),
            spend("5", SANE_MAX),
        ] {
            let peers = [read(
                "in",
                &["in"],
                "2026-11-15T12:00:00Z",
                Some(published(&["in"], NOV, bad.clone())),
            )];
            let c = combined(&spec, None, &peers, "2026-11-15T12:00:10Z");
            assert_eq!(c.others.amount, "0", "{bad:?}");
            assert!(c.peers[0].message.contains("malformed"), "{c:?}");
        }
    }

    #[test]
    fn totals_of_another_budget_or_a_drifted_copy_are_not_counted() {
        let spec = spec();
        let mut other = published(&["in"], NOV, spend("40", 100));
        other.budgets[0].budget = "finance/other".into();
        let peers = [read("in", &["in"], "2026-11-15T12:00:00Z", Some(other))];
        let c = combined(&spec, None, &peers, "2026-11-15T12:00:10Z");
        assert_eq!(c.others.amount, "0");
        let mut drifted = published(&["in"], NOV, spend("40", 100));
        drifted.budgets[0].scope.teams = vec!["everyone".into()];
        let peers = [read("in", &["in"], "2026-11-15T12:00:00Z", Some(drifted))];
        let c = combined(&spec, None, &peers, "2026-11-15T12:00:10Z");
        assert_eq!(c.others.amount, "0");
        assert!(c.peers[0].message.contains("another scope"), "{c:?}");
    }

    #[test]
    fn a_peer_in_another_period_by_clock_skew_is_not_counted_in_this_one() {
        let spec = spec();
        // The peer already counts December (its clock is ahead) or still October.
        for start in ["2026-12-01T00:00:00Z", "2026-10-01T00:00:00Z"] {
            let peers = [read(
                "in",
                &["in"],
                "2026-11-30T23:59:50Z",
                Some(published(&["in"], start, spend("70", 100))),
            )];
            let c = combined(&spec, None, &peers, "2026-11-30T23:59:55Z");
            assert_eq!(c.others.amount, "0", "{start}");
            assert!(c.peers[0].message.contains("clock skew"), "{c:?}");
        }
        // Last known November totals are kept while the peer is ahead.
        let fresh = [read(
            "in",
            &["in"],
            "2026-11-30T23:59:00Z",
            Some(published(&["in"], NOV, spend("30", 100))),
        )];
        let known = with(&combined(&spec, None, &fresh, "2026-11-30T23:59:00Z"));
        let ahead = [read(
            "in",
            &["in"],
            "2026-11-30T23:59:50Z",
            Some(published(&["in"], "2026-12-01T00:00:00Z", spend("1", 1))),
        )];
        let c = combined(&spec, Some(&known), &ahead, "2026-11-30T23:59:55Z");
        assert_eq!(c.others.amount, "30");
    }

    #[test]
    fn an_unreachable_peer_keeps_its_last_known_totals_and_turns_stale() {
        let spec = spec();
        let fresh = [read(
            "in",
            &["in"],
            "2026-11-15T12:00:00Z",
            Some(published(&["in"], NOV, spend("30", 100))),
        )];
        let known = with(&combined(&spec, None, &fresh, "2026-11-15T12:00:00Z"));
        // The operator restarted (no read in memory) and the peer is down.
        let down = [PeerRead {
            peer: "in".into(),
            regions: regions(&["in"]),
            last: None,
            error: Some("connection refused".into()),
        }];
        let soon = combined(&spec, Some(&known), &down, "2026-11-15T12:01:00Z");
        assert_eq!(soon.others.amount, "30", "never loses a token");
        assert!(!soon.peers[0].stale, "within the bound");
        assert!(soon.peers[0].message.contains("connection refused"));
        let later = combined(&spec, Some(&known), &down, "2026-11-15T12:02:00Z");
        assert_eq!(later.others.amount, "30");
        assert!(later.peers[0].stale);
        assert!(
            later.peers[0].message.contains("stale (last read at"),
            "{}",
            later.peers[0].message
        );
        // Back: the fresh totals replace the last known ones.
        let back = [read(
            "in",
            &["in"],
            "2026-11-15T12:03:00Z",
            Some(published(&["in"], NOV, spend("45", 200))),
        )];
        let c = combined(&spec, Some(&with(&later)), &back, "2026-11-15T12:03:00Z");
        assert_eq!(c.others.amount, "45");
        assert!(!c.peers[0].stale);
    }

    #[test]
    fn a_peer_reporting_less_than_before_keeps_the_larger_totals() {
        let spec = spec();
        let first = [read(
            "in",
            &["in"],
            "2026-11-15T12:00:00Z",
            Some(published(&["in"], NOV, spend("30", 100))),
        )];
        let known = with(&combined(&spec, None, &first, "2026-11-15T12:00:00Z"));
        let lower = [read(
            "in",
            &["in"],
            "2026-11-15T12:00:30Z",
            Some(published(&["in"], NOV, spend("10", 300))),
        )];
        let c = combined(&spec, Some(&known), &lower, "2026-11-15T12:00:30Z");
        assert_eq!(c.others.amount, "30");
        assert_eq!(c.others.input_tokens, 300);
        assert!(c.peers[0].message.contains("less than before"));
    }

    #[test]
    fn a_region_no_peer_is_trusted_for_is_named_and_counts_as_unknown() {
        let spec = spec();
        let c = combined(&spec, None, &[], "2026-11-15T12:00:00Z");
        assert_eq!(c.unaccounted, ["in"]);
        assert!(summary(&regions(&["eu"]), &spend("1", 1), &c).contains("not counted"));
    }

    #[test]
    fn fail_closed_blocks_only_when_this_cluster_is_over_its_own_share() {
        let mut spec = spec();
        spec.global = Some(GlobalBudgetSpec {
            stale_after_seconds: None,
            when_stale: WhenStale::FailClosed,
        });
        let down = [PeerRead {
            peer: "in".into(),
            regions: regions(&["in"]),
            last: None,
            error: Some("timeout".into()),
        }];
        let c = combined(&spec, None, &down, "2026-11-15T12:00:00Z");
        assert!(c.peers[0].stale);
        // Two regions, a limit of 100: a share of 50 each. Under it, not blocked.
        assert!(!fail_closed(&spec, 2, &spend("49", 1), &c));
        assert!(fail_closed(&spec, 2, &spend("50", 1), &c));
        // UseLastKnown never blocks for staleness.
        spec.global = None;
        assert!(!fail_closed(&spec, 2, &spend("99", 1), &c));
    }

    #[test]
    fn a_token_budget_adds_tokens_across_currencies_and_never_converts_money() {
        let mut spec = spec();
        spec.limit = BudgetLimit {
            amount: None,
            currency: None,
            tokens: Some(10_000),
        };
        let mut rupees = spend("420", 1000);
        rupees.currency = "INR".into();
        let peers = [read(
            "in",
            &["in"],
            "2026-11-15T12:00:00Z",
            Some(published(&["in"], NOV, rupees.clone())),
        )];
        let c = combined(&spec, None, &peers, "2026-11-15T12:00:10Z");
        assert_eq!(c.others.input_tokens, 1000);
        assert_eq!(c.others.amount, "0");
        // A money budget refuses the other currency outright.
        let c = combined(&self::spec(), None, &peers, "2026-11-15T12:00:10Z");
        assert_eq!(c.others.input_tokens, 0);
        assert!(c.peers[0].message.contains("INR"), "{c:?}");
    }

    #[test]
    fn the_first_region_in_sorted_order_announces() {
        assert_eq!(announcer(&regions(&["in", "eu", "us"])), "eu");
        assert_eq!(announcer(&[]), "");
    }

    #[test]
    fn the_publication_carries_totals_only() {
        let mut budget = TokenBudget::new("global", spec());
        budget.metadata.namespace = Some("finance".into());
        budget.status = Some(crate::api::budget::TokenBudgetStatus {
            period_start: Some(Time(at(NOV))),
            spent: Some(spend("12", 34)),
            usage: vec![crate::api::budget::UsageLine {
                team: "search".into(),
                cost_center: "CC-SECRET".into(),
                model: "m".into(),
                region: "in".into(),
                ..Default::default()
            }],
            ..Default::default()
        });
        let out = publication(&regions(&["in"]), &[budget], |_| regions(&["in"]));
        let text = serde_json::to_string(&out).expect("json");
        assert!(!text.contains("CC-SECRET"), "{text}");
        assert_eq!(out.budgets[0].budget, KEY);
        assert_eq!(out.budgets[0].spent, spend("12", 34));
        let none = publication(&regions(&["in"]), &[], |_| Vec::new());
        assert!(none.budgets.is_empty());
    }
}
