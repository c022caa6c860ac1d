//! What the usage collector writes, from what it observed: pure, unit-tested below.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;

use super::Scrapes;
use crate::api::backend::InferenceBackend;
use crate::api::budget::TokenBudget;
use crate::api::region::SovereignRegion;
use crate::finops::budget::region_actions;
use crate::finops::ledger::{Ledger, RunningGpus};
use crate::finops::pricing::{PriceBook, deployment_id};
use crate::finops::storage::{COMPONENT, without_clock};
use crate::finops::usage::{Counters, SeriesKey};
use crate::render::{Owner, RenderError, gateway};

/// The ledger after this tick's scrapes and GPU time at `now` (seconds), or None when there
/// is nothing worth a write: nothing counted and nothing charged, and a ledger is already
/// stored (`stored`).
pub fn advance(
    ledger: &Ledger,
    stored: bool,
    scrapes: &Scrapes,
    backends: &[InferenceBackend],
    now: i64,
) -> Option<Ledger> {
    let prices = PriceBook::from_backends(backends);
    let running: Vec<RunningGpus> = backends
        .iter()
        .filter(|b| b.spec.vllm.is_some())
        .map(|b| RunningGpus {
            deployment: deployment_id(b),
            model: b.spec.model_name.clone(),
            replicas: b
                .status
                .as_ref()
                .and_then(|s| s.replicas.as_ref())
                .map(|r| u32::try_from(r.ready).unwrap_or(0))
                .unwrap_or(0),
        })
        .collect();
    let mut next = ledger.clone();
    let mut interval: BTreeMap<SeriesKey, Counters> = BTreeMap::new();
    for (source, scrape) in &scrapes.gateways {
        for (key, delta) in next.record(source, scrape, now, &prices) {
            interval.entry(key).or_default().add(&delta);
        }
    }
    let mut served_interval: BTreeMap<String, Counters> = BTreeMap::new();
    for (source, deployment, counters) in &scrapes.served {
        let delta = next.record_served(source, deployment, counters, now);
        served_interval
            .entry(deployment.clone())
            .or_default()
            .add(&delta);
    }
    next.charge_gpus(now, &running, &interval, &served_interval, &prices);
    next.forget_gone_pods(&scrapes.live, now);
    (!stored || without_clock(&next) != without_clock(ledger)).then_some(next)
}

/// The ConfigMap of the budget actions in force in `region` (from the budgets' statuses),
/// which its gateways mount.
pub fn actions_config_map(
    region: &SovereignRegion,
    backends: &[InferenceBackend],
    budgets: &[TokenBudget],
) -> Result<ConfigMap, RenderError> {
    let name = region.name_any();
    // The models the region's gateway serves: its Ready and Compliant backends'.
    let served: BTreeSet<String> = backends
        .iter()
        .filter(|b| b.may_serve())
        .map(|b| b.spec.model_name.clone())
        .collect();
    let file = region_actions(budgets, &name, &served);
    let json = serde_json::to_string_pretty(&file).map_err(|e| RenderError::Serialize {
        what: "the budget actions".into(),
        message: e.to_string(),
    })?;
    let owner = Owner {
        region: name.clone(),
        instance: name,
        reference: None,
    };
    Ok(ConfigMap {
        metadata: owner.meta(
            COMPONENT,
            gateway::ACTIONS_CONFIG_MAP,
            Some(&region.stack_namespace()),
        ),
        data: Some(BTreeMap::from([(gateway::ACTIONS_KEY.to_owned(), json)])),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    use super::super::super::fixture;
    use super::*;

    fn scrapes(file: &str) -> Scrapes {
        Scrapes {
            gateways: vec![("pod/a".into(), crate::finops::fixture_scrape(file))],
            served: Vec::new(),
            live: BTreeSet::from(["pod/a".to_owned()]),
        }
    }

    #[test]
    fn a_first_tick_creates_the_ledger_even_with_nothing_counted() {
        let empty = Scrapes::default();
        let created = advance(&Ledger::default(), false, &empty, &[], 100)
            .expect("no ledger stored yet: it is created");
        assert!(created.usage.is_empty());
        assert!(
            advance(&created, true, &empty, &[], 160).is_none(),
            "a stored empty ledger stays as it is"
        );
    }

    #[test]
    fn counted_usage_is_written_and_a_repeated_scrape_is_not() {
        let first = advance(
            &Ledger::default(),
            true,
            &scrapes("metrics-before-restart.txt"),
            &[],
            100,
        )
        .expect("new usage is written");
        assert!(!first.usage.is_empty());
        // The same counters a minute later: only the cursors' clocks moved.
        assert!(
            advance(
                &first,
                true,
                &scrapes("metrics-before-restart.txt"),
                &[],
                160
            )
            .is_none()
        );
    }

    #[test]
    fn the_actions_name_their_region_and_are_mounted_by_its_gateway() {
        let region: SovereignRegion = fixture(
            "
metadata: {name: eu}
spec: {jurisdiction: EU, locations: [europe-west9]}",
        );
        let config_map = actions_config_map(&region, &[], &[]).expect("serialises");
        assert_eq!(
            config_map.metadata.name.as_deref(),
            Some(gateway::ACTIONS_CONFIG_MAP)
        );
        assert_eq!(
            config_map.metadata.namespace.as_deref(),
            Some("sovereign-eu")
        );
        let json = config_map
            .data
            .as_ref()
            .and_then(|d| d.get(gateway::ACTIONS_KEY))
            .expect("the actions file");
        let parsed: serde_json::Value = serde_json::from_str(json).expect("JSON");
        assert!(parsed.is_object(), "{json}");
    }
}
