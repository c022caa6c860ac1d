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
        Self {
            registry,
            reconciliations,
            reconcile_duration,
            api_writes,
            residency_violations,
        }
    }
}

impl Metrics {
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

    /// The registry in the Prometheus text format.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;
