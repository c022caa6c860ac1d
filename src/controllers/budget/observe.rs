//! What the budget controller reads: the regions a budget covers and their usage ledgers,
//! decoded once per ledger version.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::super::{Context, Error, Read};
use crate::api::budget::TokenBudget;
use crate::api::region::SovereignRegion;
use crate::finops::budget::{BurnHistory, LineKey, LineUsage, ledger_lines};
use crate::finops::storage::{LEDGER_NAME, stored_ledger};

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
    let regions = Api::<SovereignRegion>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| Read::list::<SovereignRegion>(None).failed(e))?
        .items;
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

/// The usage lines of `region`'s ledger, decoded once per resourceVersion.
async fn region_lines(
    ctx: &Context,
    cache: &LedgerCache,
    region: &SovereignRegion,
) -> Result<Arc<Lines>, Error> {
    let namespace = region.stack_namespace();
    let name = region.name_any();
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), &namespace);
    let read = || Read::get::<ConfigMap>(Some(&namespace), LEDGER_NAME);
    // The metadata first: when the ledger has not changed, its megabyte stays where it is.
    let meta = api
        .get_metadata_opt(LEDGER_NAME)
        .await
        .map_err(|e| read().failed(e))?;
    let Some(version) = meta.and_then(|m| m.metadata.resource_version) else {
        return Ok(Arc::new(Lines::new()));
    };
    {
        let cached = cache.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((cached, lines)) = cached.get(&name)
            && *cached == version
        {
            return Ok(lines.clone());
        }
    }
    let stored = api
        .get_opt(LEDGER_NAME)
        .await
        .map_err(|e| read().failed(e))?;
    let version = stored
        .as_ref()
        .and_then(|cm| cm.metadata.resource_version.clone())
        .unwrap_or_default();
    // A ledger this version cannot read is reported by the collector; counting it as empty
    // here would reopen the period at zero, so the reconcile fails and retries instead.
    let ledger = stored_ledger(stored.as_ref()).map_err(|source| Error::Ledger {
        region: name.clone(),
        source,
    })?;
    let lines = Arc::new(ledger_lines(&ledger, &name));
    let mut cached = cache.0.lock().unwrap_or_else(|e| e.into_inner());
    cached.insert(name, (version, lines.clone()));
    Ok(lines)
}
