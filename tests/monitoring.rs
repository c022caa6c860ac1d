//! The Grafana dashboard and the Prometheus alert rules (`deploy/monitoring/`) query only
//! metrics the operator exports: every `sovereign_*` name in them must be a sample name of a
//! family registered in `src/metrics.rs` (counters end in `_total`, histograms in `_bucket`,
//! `_sum` or `_count`). A renamed metric fails here instead of silently emptying a panel or
//! disarming an alert. The chart's PrometheusRule reads a copy of the rules, which must be
//! identical.

use std::collections::BTreeSet;
use std::path::Path;

use sovereign_operator::metrics::{BudgetLabels, Metrics, ScrapeLabels, SpendLabels, TokenLabels};

fn read(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Metrics with one sample in every family: the text encoding leaves out families without
/// samples. A family added to src/metrics.rs must be touched here too (the count check in
/// `exported_names` says so).
fn touched() -> Metrics {
    let metrics = Metrics::default();
    metrics.reconciled("region", "ok", std::time::Duration::from_millis(1));
    metrics.wrote("region", "Deployment", "apply");
    metrics.set_violations("policy", std::iter::empty());
    let (team, cost_center, model, region) = ("t", "c", "m", "eu");
    let s = |v: &str| v.to_owned();
    let _ = metrics.token_spend.get_or_create(&SpendLabels {
        team: s(team),
        cost_center: s(cost_center),
        model: s(model),
        region: s(region),
        currency: s("EUR"),
    });
    let _ = metrics.tokens.get_or_create(&TokenLabels {
        team: s(team),
        cost_center: s(cost_center),
        model: s(model),
        region: s(region),
        direction: s("input"),
    });
    let budget = BudgetLabels {
        namespace: s("ns"),
        budget: s("b"),
    };
    let _ = metrics.budget_used_ratio.get_or_create(&budget);
    let _ = metrics.budget_forecast_ratio.get_or_create(&budget);
    let _ = metrics.budget_peers_stale.get_or_create(&budget);
    let _ = metrics.usage_scrapes.get_or_create(&ScrapeLabels {
        region: s(region),
        result: s("ok"),
    });
    metrics.ledger_written(region, 1);
    metrics.ledger_over_capacity(region, 0);
    metrics.region_data_paths(
        region,
        &sovereign_operator::api::region::EvidenceSummary {
            paths: 1,
            guarded: 1,
            violations: 0,
            unknown: 0,
            summary: s("1/1 ok, 0 violations, 0 unknown"),
        },
    );
    metrics.leader.set(1);
    drop(metrics.reconcile_started("region"));
    metrics
}

/// Every sample name the registry can produce, from the `# TYPE` lines of its text encoding.
fn exported_names() -> BTreeSet<String> {
    let text = touched().encode().expect("metrics encode");
    let families = text.lines().filter(|l| l.starts_with("# TYPE ")).count();
    let registered = read("src/metrics.rs").matches("registry.register(").count();
    assert_eq!(
        families, registered,
        "src/metrics.rs registers {registered} families, {families} have samples here: \
         touch the new family in tests/monitoring.rs `touched()`"
    );
    let mut names = BTreeSet::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        let suffixes: &[&str] = match kind {
            "counter" => &["_total", "_created"],
            "histogram" => &["_bucket", "_sum", "_count", "_created"],
            "summary" => &["", "_sum", "_count", "_created"],
            _ => &[""],
        };
        for suffix in suffixes {
            names.insert(format!("{name}{suffix}"));
        }
    }
    names
}

/// Every `sovereign_…` identifier in `text`.
fn referenced_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut start = 0;
    while let Some(offset) = text[start..].find("sovereign_") {
        let begin = start + offset;
        // Part of a longer identifier (e.g. `x_sovereign_y`) is not a metric reference.
        let preceded = begin > 0 && {
            let c = bytes[begin - 1];
            c.is_ascii_alphanumeric() || c == b'_'
        };
        let mut end = begin;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded {
            names.insert(text[begin..end].to_owned());
        }
        start = end;
    }
    names
}

fn check(file: &str, exported: &BTreeSet<String>) -> BTreeSet<String> {
    let used = referenced_names(&read(file));
    let unknown: Vec<&String> = used.difference(exported).collect();
    assert!(
        unknown.is_empty(),
        "{file} uses metrics the operator does not export: {unknown:?}\nexported: {exported:#?}"
    );
    used
}

#[test]
fn dashboard_and_alerts_use_only_exported_metrics() {
    let exported = exported_names();
    assert!(
        exported.contains("sovereign_api_writes_total"),
        "{exported:?}"
    );
    let dashboard = check("deploy/monitoring/grafana-dashboard.json", &exported);
    let alerts = check("deploy/monitoring/alerts.yaml", &exported);
    // What the issue asks the dashboard to show, and the alerts to watch.
    for name in [
        "sovereign_token_spend",
        "sovereign_budget_used_ratio",
        "sovereign_budget_forecast_ratio",
        "sovereign_residency_violations",
        "sovereign_reconciliations_total",
    ] {
        assert!(
            dashboard.contains(name),
            "the dashboard does not show {name}"
        );
    }
    for name in [
        "sovereign_budget_forecast_ratio",
        "sovereign_residency_violations",
        "sovereign_reconciliations_total",
    ] {
        assert!(alerts.contains(name), "no alert on {name}");
    }
}

#[test]
fn the_dashboard_is_valid_json_and_every_alert_has_an_expression() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&read("deploy/monitoring/grafana-dashboard.json")).expect("JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() > 5);
    let rules: serde_json::Value =
        serde_yaml_ng::from_str(&read("deploy/monitoring/alerts.yaml")).expect("YAML");
    let groups = rules["groups"].as_array().expect("groups");
    for rule in groups
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules"))
    {
        assert!(rule["alert"].is_string(), "{rule}");
        assert!(
            rule["expr"].as_str().is_some_and(|e| !e.is_empty()),
            "{rule}"
        );
        assert!(rule["labels"]["severity"].is_string(), "{rule}");
    }
}

#[test]
fn the_charts_prometheus_rule_carries_the_same_alerts() {
    assert!(
        read("charts/sovereign-operator/files/alerts.yaml")
            == read("deploy/monitoring/alerts.yaml"),
        "charts/sovereign-operator/files/alerts.yaml differs from deploy/monitoring/alerts.yaml: \
         copy it over"
    );
}

#[test]
fn names_are_found_whole() {
    let names = referenced_names("rate(sovereign_api_writes_total[5m]) x_sovereign_no");
    assert_eq!(
        names,
        BTreeSet::from(["sovereign_api_writes_total".to_owned()])
    );
}
