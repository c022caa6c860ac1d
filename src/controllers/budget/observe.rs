//! What the budget controller reads: the regions a budget covers and their usage ledgers,
//! decoded once per ledger version.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::super::{Context, Error, Read, all_regions};
use crate::api::budget::TokenBudget;
use crate::api::region::SovereignRegion;
use crate::finops::budget::{BurnHistory, LineKey, LineUsage, ledger_lines};
use crate::finops::storage::{LEDGER_NAME, region_ledger, shard_selector};

/// The usage lines of a ledger.
pub type Lines = BTreeMap<LineKey, LineUsage>;

/// The lines of each region's ledger, by the resourceVersion they were read at: every budget
/// reads every ledger each interval, and a large ledger is megabytes of JSON to decompress
/// and sum.
#[derive(Default)]
pub struct LedgerCache(Mutex<HashMap<String, (String, Arc<Lines>)>>);

/// The state of the cluster a budget's decision depends on.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The regions this instance manages that the budget covers.
    pub covered: Vec<String>,
    /// The usage lines of their ledgers together.
    pub lines: Lines,
    /// The budget's burn history in this process (for `predictive`), set by the reconcile
    /// from its memory.
    pub burn: BurnHistory,
    /// Every SovereignRegion of the cluster (the GitOps global objects: the same in every
    /// cluster), sorted: the scope of a budget that names no region.
    pub all_regions: Vec<String>,
    /// The last reads of the peer clusters; empty when this cluster has no peers.
    pub peers: Vec<crate::finops::global::PeerRead>,
}

/// Reads what [`super::decide`] needs.
pub async fn observe(
    ctx: &Context,
    cache: &LedgerCache,
    budget: &TokenBudget,
) -> Result<Observed, Error> {
    let regions = all_regions(ctx).await?;
    let scope = &budget.spec.scope;
    let covered: Vec<&SovereignRegion> = regions
        .iter()
        .filter(|r| ctx.scope.manages(&r.name_any()))
        .filter(|r| scope.regions.is_empty() || scope.regions.contains(&r.name_any()))
        .collect();
    let mut lines = Lines::new();
    for region in &covered {
        let region_lines = region_lines(ctx, cache, region).await?;
        lines.extend(region_lines.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    let mut all_regions: Vec<String> = regions.iter().map(|r| r.name_any()).collect();
    all_regions.sort();
    Ok(Observed {
        covered: covered.iter().map(|r| r.name_any()).collect(),
        lines,
        burn: BurnHistory::default(),
        all_regions,
        peers: ctx.peer_reads(),
    })
}

/// The usage lines of `region`'s ledger (its shards, or the previous release's one object
/// until it is migrated), decoded once per set of resourceVersions.
async fn region_lines(
    ctx: &Context,
    cache: &LedgerCache,
    region: &SovereignRegion,
) -> Result<Arc<Lines>, Error> {
    let namespace = region.stack_namespace();
    let name = region.name_any();
    let owner_uid = region.uid().unwrap_or_default();
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), &namespace);
    let read_legacy = || Read::get::<ConfigMap>(Some(&namespace), LEDGER_NAME);
    let list_shards = || Read::list::<ConfigMap>(Some(&namespace));
    let selector = ListParams::default().labels(&shard_selector(&name));
    // The metadata first: when the ledger has not changed, its megabytes stay where they are.
    let legacy = api
        .get_metadata_opt(LEDGER_NAME)
        .await
        .map_err(|e| read_legacy().failed(e))?;
    let shards = api
        .list_metadata(&selector)
        .await
        .map_err(|e| list_shards().failed(e))?;
    if legacy.is_none() && shards.items.is_empty() {
        return Ok(Arc::new(Lines::new()));
    }
    let versions = |legacy: Option<&str>, shards: &mut dyn Iterator<Item = (String, String)>| {
        let mut key = format!("{LEDGER_NAME}={};", legacy.unwrap_or_default());
        for (name, version) in shards {
            key.push_str(&format!("{name}={version};"));
        }
        key
    };
    let version = versions(
        legacy
            .as_ref()
            .and_then(|m| m.metadata.resource_version.as_deref()),
        &mut shards.items.iter().map(|m| {
            (
                m.name_any(),
                m.metadata.resource_version.clone().unwrap_or_default(),
            )
        }),
    );
    {
        let cached = cache.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, lines)) = cached.get(&name)
            && *cached == version
        {
            return Ok(lines.clone());
        }
    }
    let legacy = match legacy {
        Some(_) => api
            .get_opt(LEDGER_NAME)
            .await
            .map_err(|e| read_legacy().failed(e))?,
        None => None,
    };
    let shards = api
        .list(&selector)
        .await
        .map_err(|e| list_shards().failed(e))?
        .items;
    // The key of what was read (it may be newer than the metadata listed above).
    let version = versions(
        legacy
            .as_ref()
            .and_then(|cm| cm.metadata.resource_version.as_deref()),
        &mut shards.iter().map(|cm| {
            (
                cm.name_any(),
                cm.metadata.resource_version.clone().unwrap_or_default(),
            )
        }),
    );
    // A ledger this version cannot read is reported by the collector; counting it as empty
    // here would reopen the period at zero, so the reconcile fails and retries instead.
    let ledger =
        region_ledger(legacy.as_ref(), &shards, &owner_uid).map_err(|source| Error::Ledger {
            region: name.clone(),
            source,
        })?;
    let lines = Arc::new(ledger_lines(&ledger, &name));
    let mut cached = cache.0.lock().unwrap_or_else(|e| e.into_inner());
    cached.insert(name, (version, lines.clone()));
    Ok(lines)
}
