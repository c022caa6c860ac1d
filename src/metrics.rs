//! Prometheus metrics of the operator (prometheus-client), served on `/metrics`.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of per-reconcile metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReconcileLabels {
    /// `region` or `backend`.
    pub controller: String,
    /// `ok` or the error kind.
    pub result: String,
}

/// Labels of API writes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    /// The controller that wrote.
    pub controller: String,
    /// Kind written.
    pub kind: String,
    /// `apply`, `status` or `delete`.
    pub verb: String,
}

/// Labels that name only the controller.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    /// The controller.
    pub controller: String,
}

/// Labels of residency violations.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ViolationLabels {
    /// The ResidencyPolicy.
    pub policy: String,
    /// The rule broken.
    pub rule: String,
}

/// Labels of token usage and spend: the aggregates that may leave a region. There is no
/// end-user, e-mail or key-hash label, by design.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UsageLabels {
    /// The gateway team (team alias, else the `team` request metadata); empty when unknown.
    pub team: String,
    /// The `cost_center` request metadata; empty when unknown.
    pub cost_center: String,
    /// The model as clients request it.
    pub model: String,
    /// The SovereignRegion.
    pub region: String,
}

/// Labels of spend: usage labels plus the currency.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SpendLabels {
    /// The gateway team.
    pub team: String,
    /// The cost centre.
    pub cost_center: String,
    /// The model.
    pub model: String,
    /// The SovereignRegion.
    pub region: String,
    /// ISO 4217 currency of the amount.
    pub currency: String,
}

/// Labels of token counters: usage labels plus the direction.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TokenLabels {
    /// The gateway team.
    pub team: String,
    /// The cost centre.
    pub cost_center: String,
    /// The model.
    pub model: String,
    /// The SovereignRegion.
    pub region: String,
    /// `input` or `output`.
    pub direction: String,
}

/// Labels of a region's data-path gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DataPathLabels {
    /// The SovereignRegion.
    pub region: String,
    /// `ok`, `violation` or `unknown` (the evidence report's statuses; `unguarded` paths
    /// count as neither ok nor violation and are `paths - ok - violation - unknown`).
    pub status: String,
}

/// Labels of a budget gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BudgetLabels {
    /// Namespace of the TokenBudget.
    pub namespace: String,
    /// Name of the TokenBudget.
    pub budget: String,
}

/// All metrics of the operator, registered in one registry.
pub struct Metrics {
    /// The registry `/metrics` encodes.
    pub registry: Registry,
    /// `sovereign_reconciliations_total{controller,result}`.
    pub reconciliations: Family<ReconcileLabels, Counter>,
    /// `sovereign_reconcile_duration_seconds{controller}`.
    pub reconcile_duration: Family<ControllerLabels, Histogram>,
    /// `sovereign_api_writes_total{controller,kind,verb}`: every write request the operator
    /// sends. A resync of an unchanged cluster must not move it.
    pub api_writes: Family<WriteLabels, Counter>,
    /// `sovereign_residency_violations{policy,rule}`: violations found by the last audit.
    pub residency_violations: Family<ViolationLabels, Gauge>,
    /// `sovereign_token_spend{team,cost_center,model,region,currency}`: money spent since the
    /// region's ledger began (a gauge because it is read from the ledger in the API server,
    /// which outlives this process).
    pub token_spend: Family<SpendLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `sovereign_tokens{team,cost_center,model,region,direction}`: tokens counted by the
    /// ledger.
    pub tokens: Family<TokenLabels, Gauge>,
    /// `sovereign_budget_used_ratio{namespace,budget}`: period-to-date use of a TokenBudget,
    /// 1.0 = the limit.
    pub budget_used_ratio: Family<BudgetLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `sovereign_budget_forecast_ratio{namespace,budget}`: projected use at period end.
    pub budget_forecast_ratio: Family<BudgetLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `sovereign_budget_peers_stale{namespace,budget}`: peer clusters of a global budget
    /// whose totals are stale (or regions no peer counts); 0 while every peer is current.
    pub budget_peers_stale: Family<BudgetLabels, Gauge>,
    /// `sovereign_usage_scrapes_total{region,result}`: gateway scrapes by result.
    pub usage_scrapes: Family<ScrapeLabels, Counter>,
    /// `sovereign_usage_ledger_commits_total{region}`: ledger writes (usage or GPU time
    /// recorded).
    pub ledger_commits: Family<RegionLabels, Counter>,
    /// `sovereign_usage_ledger_written_bytes_total{region}`: bytes of ConfigMap sent by the
    /// ledger's shard writes (the request bodies).
    pub ledger_written_bytes: Family<RegionLabels, Counter>,
    /// `sovereign_usage_ledger_shards_over_capacity{region}`: shards of the ledger too large to
    /// write at the last tick; their series are not counted until they fit (0 normally).
    pub ledger_over_capacity: Family<RegionLabels, Gauge>,
    /// `sovereign_leader`: 1 while this replica holds the leader Lease (or runs without leader
    /// election) and reconciles, 0 while it stands by.
    pub leader: Gauge,
    /// `sovereign_region_data_paths{region,status}`: the region's data paths by evidence
    /// status (`status="all"` is every path), as the region controller last derived them.
    pub region_data_paths: Family<DataPathLabels, Gauge>,
    /// `sovereign_reconciles_in_flight{controller}`: reconciles started and not yet finished.
    /// With `sovereign_reconciliations_total` it tells when the operator has settled (nothing
    /// running, nothing new finishing) without guessing how long that takes.
    pub reconciles_in_flight: Family<ControllerLabels, Gauge>,
}

/// Labels naming a region.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegionLabels {
    /// The SovereignRegion.
    pub region: String,
}

/// Labels of a usage scrape.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScrapeLabels {
    /// The SovereignRegion.
    pub region: String,
    /// `ok` or the error kind.
    pub result: String,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("sovereign");
        let reconciliations = Family::<ReconcileLabels, Counter>::default();
        registry.register(
            "reconciliations",
            "Reconciliations by controller and result",
            reconciliations.clone(),
        );
        let reconcile_duration =
            Family::<ControllerLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.005, 2.0, 12))
            });
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            reconcile_duration.clone(),
        );
        let api_writes = Family::<WriteLabels, Counter>::default();
        registry.register(
            "api_writes",
            "Write requests sent to the API server",
            api_writes.clone(),
        );
        let residency_violations = Family::<ViolationLabels, Gauge>::default();
        registry.register(
            "residency_violations",
            "Objects breaking a residency rule, as of the last audit",
            residency_violations.clone(),
        );
        let token_spend = Family::default();
        registry.register(
            "token_spend",
            "Money spent on tokens, by team, cost centre, model, region and currency",
            token_spend.clone(),
        );
        let tokens = Family::default();
        registry.register(
            "tokens",
            "Tokens counted exactly once, by team, cost centre, model, region and direction",
            tokens.clone(),
        );
        let budget_used_ratio = Family::default();
        registry.register(
            "budget_used_ratio",
            "Period-to-date use of a TokenBudget (1 = the limit)",
            budget_used_ratio.clone(),
        );
        let budget_forecast_ratio = Family::default();
        registry.register(
            "budget_forecast_ratio",
            "Projected use of a TokenBudget at the end of its period (1 = the limit)",
            budget_forecast_ratio.clone(),
        );
        let budget_peers_stale = Family::default();
        registry.register(
            "budget_peers_stale",
            "Peer clusters of a global TokenBudget whose totals are stale (0: all current)",
            budget_peers_stale.clone(),
        );
        let usage_scrapes = Family::default();
        registry.register(
            "usage_scrapes",
            "Gateway metrics scrapes by region and result",
            usage_scrapes.clone(),
        );
        let ledger_commits = Family::default();
        registry.register(
            "usage_ledger_commits",
            "Writes of a region's usage ledger",
            ledger_commits.clone(),
        );
        let ledger_written_bytes = Family::default();
        registry.register(
            "usage_ledger_written_bytes",
            "Bytes of ConfigMap written by a region's usage ledger shard writes",
            ledger_written_bytes.clone(),
        );
        let ledger_over_capacity = Family::default();
        registry.register(
            "usage_ledger_shards_over_capacity",
            "Shards of a region's usage ledger too large to write at the last tick (not counted until they fit)",
            ledger_over_capacity.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica is the leader and reconciles, 0 while it stands by",
            leader.clone(),
        );
        let region_data_paths = Family::<DataPathLabels, Gauge>::default();
        registry.register(
            "region_data_paths",
            "Data paths of a region by evidence status (ok, violation, unknown, all)",
            region_data_paths.clone(),
        );
        let reconciles_in_flight = Family::<ControllerLabels, Gauge>::default();
        registry.register(
            "reconciles_in_flight",
            "Reconciles started and not yet finished, by controller",
            reconciles_in_flight.clone(),
        );
        Self {
            region_data_paths,
            reconciles_in_flight,
            ledger_commits,
            ledger_written_bytes,
            ledger_over_capacity,
            registry,
            reconciliations,
            reconcile_duration,
            api_writes,
            residency_violations,
            token_spend,
            tokens,
            budget_used_ratio,
            budget_forecast_ratio,
            budget_peers_stale,
            usage_scrapes,
            leader,
        }
    }
}

impl Metrics {
    /// Sets a region's data-path gauges from its evidence summary.
    pub fn region_data_paths(&self, region: &str, summary: &crate::api::region::EvidenceSummary) {
        for (status, value) in [
            ("all", summary.paths),
            ("ok", summary.guarded),
            ("violation", summary.violations),
            ("unknown", summary.unknown),
        ] {
            self.region_data_paths
                .get_or_create(&DataPathLabels {
                    region: region.to_owned(),
                    status: status.to_owned(),
                })
                .set(i64::from(value));
        }
    }

    /// Counts one reconcile of `controller` that took `elapsed` and ended with `result`.
    pub fn reconciled(&self, controller: &str, result: &str, elapsed: Duration) {
        self.reconciliations
            .get_or_create(&ReconcileLabels {
                controller: controller.to_owned(),
                result: result.to_owned(),
            })
            .inc();
        self.reconcile_duration
            .get_or_create(&ControllerLabels {
                controller: controller.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Marks one reconcile of `controller` as running until the returned guard is dropped
    /// (also when the reconcile is cancelled or panics).
    pub fn reconcile_started(&self, controller: &str) -> InFlight {
        let gauge = self
            .reconciles_in_flight
            .get_or_create(&ControllerLabels {
                controller: controller.to_owned(),
            })
            .clone();
        gauge.inc();
        InFlight(gauge)
    }

    /// Counts one write request.
    pub fn wrote(&self, controller: &str, kind: &str, verb: &str) {
        self.api_writes
            .get_or_create(&WriteLabels {
                controller: controller.to_owned(),
                kind: kind.to_owned(),
                verb: verb.to_owned(),
            })
            .inc();
    }

    /// Sets the violation gauges of `policy` from the rules of its findings.
    pub fn set_violations<'r>(&self, policy: &str, rules: impl Iterator<Item = &'r str>) {
        let mut counts = std::collections::BTreeMap::<&str, i64>::new();
        for rule in rules {
            *counts.entry(rule).or_default() += 1;
        }
        // Every rule, so one that no longer fails reads 0 instead of keeping its last count.
        for rule in crate::residency::engine::Rule::ALL.map(|r| r.as_str()) {
            self.residency_violations
                .get_or_create(&ViolationLabels {
                    policy: policy.to_owned(),
                    rule: rule.to_owned(),
                })
                .set(counts.get(rule).copied().unwrap_or(0));
        }
    }

    /// Counts one usage scrape of `region`.
    pub fn scraped(&self, region: &str, result: &str) {
        self.usage_scrapes
            .get_or_create(&ScrapeLabels {
                region: region.to_owned(),
                result: result.to_owned(),
            })
            .inc();
    }

    /// Counts one ledger shard commit of `region` that sent `bytes`.
    pub fn ledger_written(&self, region: &str, bytes: usize) {
        let labels = RegionLabels {
            region: region.to_owned(),
        };
        self.ledger_commits.get_or_create(&labels).inc();
        self.ledger_written_bytes
            .get_or_create(&labels)
            .inc_by(u64::try_from(bytes).unwrap_or(u64::MAX));
    }

    /// Sets how many shards of `region`'s ledger were too large to write at the last tick.
    pub fn ledger_over_capacity(&self, region: &str, shards: usize) {
        self.ledger_over_capacity
            .get_or_create(&RegionLabels {
                region: region.to_owned(),
            })
            .set(i64::try_from(shards).unwrap_or(i64::MAX));
    }

    /// Sets the use and forecast ratios of a budget.
    pub fn budget_ratios(&self, namespace: &str, budget: &str, used: f64, forecast: f64) {
        let labels = BudgetLabels {
            namespace: namespace.to_owned(),
            budget: budget.to_owned(),
        };
        self.budget_used_ratio.get_or_create(&labels).set(used);
        self.budget_forecast_ratio
            .get_or_create(&labels)
            .set(forecast);
    }

    /// Sets how many peers of a global budget are stale.
    pub fn budget_peers_stale(&self, namespace: &str, budget: &str, stale: i64) {
        let labels = BudgetLabels {
            namespace: namespace.to_owned(),
            budget: budget.to_owned(),
        };
        self.budget_peers_stale.get_or_create(&labels).set(stale);
    }

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;

/// A running reconcile, counted in `sovereign_reconciles_in_flight` while it lives.
pub struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}
