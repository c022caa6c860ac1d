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
use crate::finops::shards::{Observed, ShardId, Sharded};
use crate::finops::storage::COMPONENT;
use crate::render::{Owner, RenderError, gateway};

/// What a tick does to a region's ledger.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// The previous release's one-object ledger is split into shards. Nothing is counted in
    /// this tick: its scrapes are counted by the next one, from the cursors carried over.
    Migrate(Sharded),
    /// This tick's scrapes and GPU time, recorded shard by shard.
    Count(Sharded),
}

impl Step {
    /// The shards this step leads to.
    pub fn shards(&self) -> &Sharded {
        match self {
            Step::Migrate(shards) | Step::Count(shards) => shards,
        }
    }
}

/// The shards after this tick at `now` (seconds), from the `stored` shards and the
/// previous release's ledger (`legacy`) if it is still there. The legacy ledger is the
/// ledger until the head shard exists (the head is written last); once it does, a leftover
/// legacy object is ignored (and deleted by the caller).
pub fn advance(
    stored: &Sharded,
    legacy: Option<Ledger>,
    scrapes: &Scrapes,
    backends: &[InferenceBackend],
    now: i64,
) -> Step {
    if let Some(legacy) = legacy
        && !stored.shards.contains_key(&ShardId::Head)
    {
        return Step::Migrate(Sharded::from_legacy(legacy));
    }
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
    Step::Count(stored.advance(&Observed {
        gateways: &scrapes.gateways,
        served: &scrapes.served,
        running: &running,
        live: &scrapes.live,
        prices: &prices,
        now,
    }))
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

    fn count(stored: &Sharded, file: Option<&str>, now: i64) -> Sharded {
        let scrapes = file.map(scrapes).unwrap_or_default();
        match advance(stored, None, &scrapes, &[], now) {
            Step::Count(next) => next,
            Step::Migrate(_) => panic!("no legacy ledger: nothing to migrate"),
        }
    }

    #[test]
    fn a_first_tick_creates_the_head_even_with_nothing_counted() {
        let created = count(&Sharded::default(), None, 100);
        assert_eq!(
            Sharded::default().changed(&created),
            [ShardId::Head],
            "no ledger stored yet: its head is created"
        );
        let again = count(&created, None, 160);
        assert!(
            created.changed(&again).is_empty(),
            "a stored empty ledger stays"
        );
    }

    #[test]
    fn counted_usage_is_written_and_a_repeated_scrape_is_not() {
        let first = count(&Sharded::default(), Some("metrics-before-restart.txt"), 100);
        assert!(first.series() > 0);
        // The same counters a minute later: only the cursors' clocks moved.
        let again = count(&first, Some("metrics-before-restart.txt"), 160);
        assert!(first.changed(&again).is_empty());
    }

    #[test]
    fn a_legacy_ledger_is_migrated_until_the_head_exists_and_ignored_after() {
        let legacy = count(&Sharded::default(), Some("metrics-before-restart.txt"), 100).merged();
        let scrapes = scrapes("metrics-after-restart.txt");
        let Step::Migrate(split) = advance(
            &Sharded::default(),
            Some(legacy.clone()),
            &scrapes,
            &[],
            200,
        ) else {
            panic!("a legacy ledger without head is migrated");
        };
        assert_eq!(
            split.merged().grand_total(),
            legacy.grand_total(),
            "nothing counted"
        );
        let Step::Count(next) = advance(&split, Some(legacy.clone()), &scrapes, &[], 260) else {
            panic!("with the head, the shards count");
        };
        assert!(next.merged().grand_total().input_tokens > legacy.grand_total().input_tokens);
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
