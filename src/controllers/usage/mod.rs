//! The usage collector: on an interval, inside each managed region, [`observe`] (scrape the
//! gateways' and vLLM servers' `/metrics`, read the region's ledger) → [`decide`] (pure: add
//! what is new to the ledger, charge self-hosted GPU time, the budget actions in force) →
//! apply (commit the ledger's changed shards — ConfigMaps in the region namespace, see
//! `finops::shards` and `finops::storage` — each by server-side apply with a resourceVersion
//! precondition, so that a shard's deltas and its cursors are committed together; write the
//! actions the gateways' guard reads) and export the totals as metrics.

mod decide;
mod observe;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::{Instrument, info_span};

use super::apply::ApplyError;
use super::{Context, Error, Read};
use crate::api::backend::InferenceBackend;
use crate::api::budget::TokenBudget;
use crate::api::region::SovereignRegion;
use crate::finops::budget::ledger_lines;
use crate::finops::ledger::{Ledger, LedgerError};
use crate::finops::shards::ShardId;
use crate::finops::storage::{self, StorageError, StoredShards};
use crate::metrics::{SpendLabels, TokenLabels};
use crate::render::Child;
pub use decide::{Step, actions_config_map, advance};
pub use observe::{Scrapes, observe};
/// Where the ledger lives, for the readers that used to find it here.
pub use storage::{LEDGER_KEY, LEDGER_NAME, region_ledger, shard_selector, stored_ledger};

/// Field manager of the ledger shards and the budget actions ConfigMap.
pub const MANAGER: &str = "sovereign-operator-usage";
/// Pause between a wake-up and the tick it triggers.
const WAKEUP_DEBOUNCE: Duration = Duration::from_secs(1);
/// Pause after a tick that failed.
const RETRY: Duration = Duration::from_secs(3);

/// Why a region's usage could not be collected, by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// Observe: a request to the API server failed.
    #[error(transparent)]
    Observe(#[from] Error),
    /// Observe: a stored ledger object is not valid JSON of the expected shape.
    #[error("observe: the usage ledger in {namespace}: {source}")]
    CorruptLedger {
        /// Region namespace.
        namespace: String,
        /// What is wrong.
        source: LedgerError,
    },
    /// Decide: a shard cannot be stored (too large for a ConfigMap).
    #[error("decide: region {region}: {source}")]
    Store {
        /// The region.
        region: String,
        /// What is wrong.
        source: StorageError,
    },
    /// Apply: writing a shard failed.
    #[error("apply: write ConfigMap {namespace}/{name}: {source}")]
    Commit {
        /// Region namespace.
        namespace: String,
        /// The shard's ConfigMap.
        name: String,
        /// The client error.
        source: kube::Error,
    },
    /// Apply: another writer changed a shard since it was read.
    #[error(
        "apply: ConfigMap {namespace}/{name} changed under this writer; its series are counted at the next tick"
    )]
    Contention {
        /// Region namespace.
        namespace: String,
        /// The shard's ConfigMap.
        name: String,
    },
    /// Apply: writing the budget actions failed.
    #[error("apply: the budget actions: {0}")]
    Actions(#[from] ApplyError),
}

impl UsageError {
    /// Short label of the step that failed (logged as `step`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            UsageError::Observe(error) => error.metric_label(),
            UsageError::CorruptLedger { .. } => "ledger_error",
            UsageError::Store { .. } => "ledger_too_large",
            UsageError::Commit { .. } | UsageError::Contention { .. } => "commit_error",
            UsageError::Actions(_) => "apply_error",
        }
    }
}

/// The shards of a region's ledger as this process last read or wrote them, with their
/// resourceVersions: the collector is the only writer, so in steady state a tick lists the
/// shards' metadata and reads none of them back.
#[derive(Default)]
struct RegionShards {
    /// resourceVersion of each object in `stored`, by name.
    versions: BTreeMap<String, String>,
    /// The shards' objects and state.
    stored: StoredShards,
    /// Whether the previous release's ConfigMap is known to be gone.
    legacy_gone: bool,
}

/// [`RegionShards`] by region namespace.
type ShardCache = HashMap<String, RegionShards>;

/// Runs the collector every `interval` until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let http = match observe::http_client() {
        Ok(http) => http,
        Err(error) => {
            tracing::error!(%error, "cannot build the HTTP client: usage collection is off");
            return;
        }
    };
    let mut shutdown = std::pin::pin!(shutdown);
    let mut cache = ShardCache::new();
    loop {
        // After a failure, try again sooner than a full interval: a region created a moment
        // ago gets its ledger and actions ConfigMap as soon as its namespace exists.
        let pause = if tick(&ctx, &http, &mut cache).await {
            interval
        } else {
            interval.min(RETRY)
        };
        // The next collection stays on its beat when only the actions are written between.
        let next = tokio::time::Instant::now() + pause;
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep_until(next) => break,
                () = ctx.usage_wakeup.notified() => {
                    // Let the burst of reconciles that woke us settle into one tick.
                    tokio::time::sleep(WAKEUP_DEBOUNCE).await;
                    break;
                }
                // A threshold that acts fired: its action goes out now (seconds, not the
                // rest of the interval), see docs/finops.md "Overshoot".
                () = ctx.actions_wakeup.notified() => {
                    write_all_actions(&ctx).await;
                }
            }
        }
    }
}

/// Writes the actions of every managed region (after a threshold fired), without collecting.
async fn write_all_actions(ctx: &Context) {
    let regions = super::all_regions(ctx).await;
    // Listed, not read from a store: the threshold that woke this was written a moment ago,
    // and a watch may not have delivered it yet.
    let budgets = Api::<TokenBudget>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await;
    let (regions, budgets) = match (regions, budgets) {
        (Ok(regions), Ok(budgets)) => (regions, budgets.items),
        (Err(error), _) => {
            tracing::warn!(%error, "budget actions not refreshed");
            return;
        }
        (_, Err(error)) => {
            let error = Read::list::<TokenBudget>(None).failed(error);
            tracing::warn!(%error, "budget actions not refreshed");
            return;
        }
    };
    for region in regions.iter().filter(|r| ctx.scope.manages(&r.name_any())) {
        let span = info_span!("actions", region = %region.name_any());
        let result = match super::region_backends(ctx, region).await {
            Ok(backends) => {
                write_actions(ctx, region, &backends, &budgets)
                    .instrument(span.clone())
                    .await
            }
            Err(error) => Err(UsageError::Observe(error)),
        };
        if let Err(error) = result {
            tracing::warn!(parent: &span, %error, step = error.metric_label(), "cannot write the budget actions");
        }
    }
}

/// One round over the managed regions; false when something failed and is worth retrying
/// soon (typically: a new region's namespace did not exist yet).
async fn tick(ctx: &Context, http: &reqwest::Client, cache: &mut ShardCache) -> bool {
    let regions = match super::all_regions(ctx).await {
        Ok(regions) => regions,
        Err(error) => {
            tracing::warn!(%error, "usage collection skipped");
            return false;
        }
    };
    let budgets = match Api::<TokenBudget>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(error) => {
            let error = Read::list::<TokenBudget>(None).failed(error);
            tracing::warn!(%error, "budget actions not refreshed");
            return false;
        }
    };
    let mut healthy = true;
    for region in regions.iter().filter(|r| ctx.scope.manages(&r.name_any())) {
        let span = info_span!("collect", region = %region.name_any());
        // One listing of the region's backends serves both the prices and the actions.
        let backends = match super::region_backends(ctx, region).await {
            Ok(backends) => backends,
            Err(error) => {
                tracing::warn!(parent: &span, %error, step = error.metric_label(), "usage collection failed");
                healthy = false;
                continue;
            }
        };
        if let Err(error) = collect_region(ctx, http, region, &backends, cache)
            .instrument(span.clone())
            .await
        {
            tracing::warn!(parent: &span, %error, step = error.metric_label(), "usage collection failed");
            healthy = false;
        }
        if let Err(error) = write_actions(ctx, region, &backends, &budgets)
            .instrument(span.clone())
            .await
        {
            tracing::warn!(parent: &span, %error, step = error.metric_label(), "cannot write the budget actions");
            healthy = false;
        }
    }
    healthy
}

/// observe → decide → commit for one region: every changed shard is written, whatever
/// happened to the others (each is self-contained, see `finops::shards`); the first failure
/// is returned once all were tried.
async fn collect_region(
    ctx: &Context,
    http: &reqwest::Client,
    region: &SovereignRegion,
    backends: &[InferenceBackend],
    cache: &mut ShardCache,
) -> Result<(), UsageError> {
    let name = region.name_any();
    let namespace = region.stack_namespace();
    let owner_uid = region.uid().unwrap_or_default();
    let scrapes = observe(ctx, http, region, backends).await?;
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), &namespace);
    let cached = cache.entry(namespace.clone()).or_default();
    refresh(ctx, &api, &namespace, &name, &owner_uid, cached).await?;
    let corrupt = |source| UsageError::CorruptLedger {
        namespace: namespace.clone(),
        source,
    };
    let legacy = if cached.legacy_gone {
        None
    } else {
        api.get_opt(LEDGER_NAME)
            .await
            .map_err(|e| Read::get::<ConfigMap>(Some(&namespace), LEDGER_NAME).failed(e))?
    };
    cached.legacy_gone = legacy.is_none();
    let legacy_ledger = legacy
        .as_ref()
        .map(|cm| stored_ledger(Some(cm)))
        .transpose()
        .map_err(corrupt)?;
    let step = advance(
        &cached.stored.ledger,
        legacy_ledger,
        &scrapes,
        backends,
        Timestamp::now().as_second(),
    );
    let next = step.shards();
    export(ctx, &name, &next.merged());
    let mut first_error: Option<UsageError> = None;
    let mut over_capacity = Vec::new();
    let mut wrote_any = false;
    for id in cached.stored.ledger.changed(next) {
        let written = storage::shard_write(
            &name,
            &namespace,
            &owner_uid,
            id,
            cached.stored.bases.get(&id),
            &next.shards[&id],
            storage::DELTA_DIVISOR,
        );
        let (mut config_map, object) = match written {
            Ok(written) => written,
            Err(source) => {
                if matches!(source, StorageError::TooLarge { .. }) {
                    over_capacity.push(source.to_string());
                }
                first_error.get_or_insert(UsageError::Store {
                    region: name.clone(),
                    source,
                });
                continue;
            }
        };
        let object_name = config_map.name_any();
        let version = cached.versions.get(&object_name).cloned();
        config_map.metadata.resource_version.clone_from(&version);
        let bytes = serde_json::to_vec(&config_map).map_or(0, |body| body.len());
        let written = match version {
            // Created, never overwritten: a shard another writer created in between is a
            // conflict, not something to replace.
            None => {
                let params = PostParams {
                    field_manager: Some(MANAGER.to_owned()),
                    ..PostParams::default()
                };
                api.create(&params, &config_map).await
            }
            Some(_) => {
                api.patch(
                    &object_name,
                    &PatchParams::apply(MANAGER).force(),
                    &Patch::Apply(&config_map),
                )
                .await
            }
        };
        match written {
            // Counted apart from `sovereign_api_writes_total`: a ledger commit records usage
            // and GPU time, which accrue while every object stays as it is.
            Ok(written) => {
                ctx.metrics.ledger_written(&name, bytes);
                cached.versions.insert(
                    object_name,
                    written.metadata.resource_version.unwrap_or_default(),
                );
                cached.stored.set(id, object);
                wrote_any = true;
            }
            // Read again at the next tick; the shard's series are counted then.
            Err(kube::Error::Api(status)) if status.code == 409 => {
                if let Some((_, part)) = storage::shard_of(&object_name) {
                    cached.stored.remove(id, part);
                }
                cached.versions.remove(&object_name);
                first_error.get_or_insert(UsageError::Contention {
                    namespace: namespace.clone(),
                    name: object_name,
                });
            }
            // Not known to have landed: the next tick's listing says whether it did.
            Err(source) => {
                first_error.get_or_insert(UsageError::Commit {
                    namespace: namespace.clone(),
                    name: object_name,
                    source,
                });
            }
        }
    }
    if wrote_any {
        // New usage: the budgets look at it now rather than at their next requeue (a shard
        // not written this tick is counted at the next, and so is its budget's share).
        ctx.budget_wakeup.notify_one();
    }
    ctx.metrics.ledger_over_capacity(&name, over_capacity.len());
    if let Some(first) = over_capacity.first() {
        ctx.event(
            region,
            EventType::Warning,
            "LedgerOverCapacity",
            format!(
                "{} shard(s) of the usage ledger are too large to write; their series are not counted until they fit: {first}",
                over_capacity.len()
            ),
        )
        .await;
    }
    // The legacy object goes once the head that supersedes it is stored.
    if let Some(legacy) = legacy
        && cached.stored.bases.contains_key(&ShardId::Head)
        && first_error.is_none()
    {
        delete_exact(ctx, &api, &namespace, &legacy).await?;
        cached.legacy_gone = true;
    }
    first_error.map_or(Ok(()), Err)
}

/// Brings `cached` up to the shards stored (their metadata listed, only those whose
/// resourceVersion moved read back) and deletes the orphans: shards labelled for this
/// region that carry another region UID.
async fn refresh(
    ctx: &Context,
    api: &Api<ConfigMap>,
    namespace: &str,
    region: &str,
    owner_uid: &str,
    cached: &mut RegionShards,
) -> Result<(), UsageError> {
    let listed = api
        .list_metadata(&ListParams::default().labels(&storage::shard_selector(region)))
        .await
        .map_err(|e| Read::list::<ConfigMap>(Some(namespace)).failed(e))?;
    let mut present = BTreeSet::new();
    for item in listed.items {
        let shard_name = item.name_any();
        let owner = item
            .labels()
            .get(storage::OWNER_UID_LABEL)
            .map(String::as_str);
        // Never without a UID to compare: every shard would look like an orphan.
        if owner != Some(owner_uid) && !owner_uid.is_empty() {
            let orphan = ConfigMap {
                metadata: item.metadata.clone(),
                ..ConfigMap::default()
            };
            delete_exact(ctx, api, namespace, &orphan).await?;
            continue;
        }
        if storage::shard_of(&shard_name).is_none() {
            // Not this layout's: its series would be lost if it were deleted.
            tracing::warn!(%namespace, name = %shard_name, "a ledger ConfigMap this version does not read is left alone");
            continue;
        }
        present.insert(shard_name.clone());
        if cached.versions.get(&shard_name) == item.metadata.resource_version.as_ref() {
            continue;
        }
        let config_map = api
            .get(&shard_name)
            .await
            .map_err(|e| Read::get::<ConfigMap>(Some(namespace), &shard_name).failed(e))?;
        let (id, object) =
            storage::stored_object(&config_map).map_err(|source| UsageError::CorruptLedger {
                namespace: namespace.to_owned(),
                source,
            })?;
        cached.versions.insert(
            shard_name,
            config_map.metadata.resource_version.unwrap_or_default(),
        );
        cached.stored.set(id, object);
    }
    let gone: Vec<String> = cached
        .versions
        .keys()
        .filter(|name| !present.contains(*name))
        .cloned()
        .collect();
    for name in gone {
        cached.versions.remove(&name);
        if let Some((id, part)) = storage::shard_of(&name) {
            cached.stored.remove(id, part);
        }
    }
    Ok(())
}

/// Deletes `config_map` if it is still the object that was read (its UID and
/// resourceVersion), so that nothing written since is lost.
async fn delete_exact(
    ctx: &Context,
    api: &Api<ConfigMap>,
    namespace: &str,
    config_map: &ConfigMap,
) -> Result<(), UsageError> {
    let name = config_map.name_any();
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: config_map.metadata.uid.clone(),
            resource_version: config_map.metadata.resource_version.clone(),
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => {
            ctx.metrics.wrote(MANAGER, "ConfigMap", "delete");
            Ok(())
        }
        // Gone already, or changed since it was read: the next tick looks again.
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(source) => Err(UsageError::Commit {
            namespace: namespace.to_owned(),
            name,
            source,
        }),
    }
}

/// Sets the token and spend gauges of `region` from its ledger.
fn export(ctx: &Context, region: &str, ledger: &Ledger) {
    for (line, usage) in ledger_lines(ledger, region) {
        // Idle GPU time has a cost and no tokens.
        let token_lines = if line.team == crate::finops::budget::UNALLOCATED {
            Vec::new()
        } else {
            vec![
                ("input", usage.input_tokens),
                ("output", usage.output_tokens),
            ]
        };
        for (direction, tokens) in token_lines {
            ctx.metrics
                .tokens
                .get_or_create(&TokenLabels {
                    team: line.team.clone(),
                    cost_center: line.cost_center.clone(),
                    model: line.model.clone(),
                    region: line.region.clone(),
                    direction: direction.to_owned(),
                })
                .set(i64::try_from(tokens).unwrap_or(i64::MAX));
        }
        for (currency, amount) in &usage.cost {
            use rust_decimal::prelude::ToPrimitive;
            ctx.metrics
                .token_spend
                .get_or_create(&SpendLabels {
                    team: line.team.clone(),
                    cost_center: line.cost_center.clone(),
                    model: line.model.clone(),
                    region: line.region.clone(),
                    currency: currency.clone(),
                })
                .set(amount.to_f64().unwrap_or(0.0));
        }
    }
}

/// Writes the actions in force in `region` (from the budgets' statuses) into the ConfigMap
/// its gateways mount; unchanged content is not written again.
async fn write_actions(
    ctx: &Context,
    region: &SovereignRegion,
    backends: &[InferenceBackend],
    budgets: &[TokenBudget],
) -> Result<(), UsageError> {
    let config_map = actions_config_map(region, backends, budgets).map_err(ApplyError::from)?;
    ctx.applier(MANAGER).apply(&Child::from(config_map)).await?;
    Ok(())
}
