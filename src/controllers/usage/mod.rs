//! The usage collector: on an interval, inside each managed region, [`observe`] (scrape the
//! gateways' and vLLM servers' `/metrics`, read the region's ledger) → [`decide`] (pure: add
//! what is new to the ledger, charge self-hosted GPU time, the budget actions in force) →
//! apply (commit the ledger — a ConfigMap in the region namespace, see `finops::storage` —
//! with a resourceVersion precondition so that a delta and its cursor are committed
//! together; write the actions the gateways' guard reads) and export the totals as metrics.

mod decide;
mod observe;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use tracing::{Instrument, info_span};

use super::apply::ApplyError;
use super::{Context, Error, Read};
use crate::api::backend::InferenceBackend;
use crate::api::budget::TokenBudget;
use crate::api::region::SovereignRegion;
use crate::finops::budget::ledger_lines;
use crate::finops::ledger::{Ledger, LedgerError};
use crate::finops::storage::{self, StorageError};
use crate::metrics::{SpendLabels, TokenLabels};
use crate::render::Child;
pub use decide::{actions_config_map, advance};
pub use observe::{Scrapes, observe};
/// Where the ledger lives, for the readers that used to find it here.
pub use storage::{LEDGER_KEY, LEDGER_NAME, stored_ledger};

/// Field manager of the budget actions ConfigMap.
pub const MANAGER: &str = "sovereign-operator-usage";
/// Pause between a wake-up and the tick it triggers.
const WAKEUP_DEBOUNCE: Duration = Duration::from_secs(1);
/// Pause after a tick that failed.
const RETRY: Duration = Duration::from_secs(3);
/// Attempts to commit a tick when another writer changed the ledger in between.
const COMMIT_ATTEMPTS: usize = 3;

/// Why a region's usage could not be collected, by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// Observe: a request to the API server failed.
    #[error(transparent)]
    Observe(#[from] Error),
    /// Observe: the stored ledger is not valid JSON of the expected shape.
    #[error("observe: ConfigMap {namespace}/{LEDGER_NAME}: {source}")]
    CorruptLedger {
        /// Region namespace.
        namespace: String,
        /// What is wrong.
        source: LedgerError,
    },
    /// Decide: the ledger cannot be stored (too large for a ConfigMap).
    #[error("decide: region {region}: {source}")]
    Store {
        /// The region.
        region: String,
        /// What is wrong.
        source: StorageError,
    },
    /// Apply: writing the ledger failed.
    #[error("apply: write ConfigMap {namespace}/{LEDGER_NAME}: {source}")]
    Commit {
        /// Region namespace.
        namespace: String,
        /// The client error.
        source: kube::Error,
    },
    /// Apply: another writer kept changing the ledger.
    #[error("apply: the ledger of {0} kept changing under this writer; retried next tick")]
    Contention(String),
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
            UsageError::Commit { .. } | UsageError::Contention(_) => "commit_error",
            UsageError::Actions(_) => "apply_error",
        }
    }
}

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
    loop {
        // After a failure, try again sooner than a full interval: a region created a moment
        // ago gets its ledger and actions ConfigMap as soon as its namespace exists.
        let pause = if tick(&ctx, &http).await {
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
    let regions = Api::<SovereignRegion>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await;
    let budgets = Api::<TokenBudget>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await;
    let (regions, budgets) = match (regions, budgets) {
        (Ok(regions), Ok(budgets)) => (regions.items, budgets.items),
        (Err(error), _) => {
            let error = Read::list::<SovereignRegion>(None).failed(error);
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
async fn tick(ctx: &Context, http: &reqwest::Client) -> bool {
    let regions = match Api::<SovereignRegion>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(error) => {
            let error = Read::list::<SovereignRegion>(None).failed(error);
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
        if let Err(error) = collect_region(ctx, http, region, &backends)
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

/// observe → decide → commit for one region, retried when another writer got in between.
async fn collect_region(
    ctx: &Context,
    http: &reqwest::Client,
    region: &SovereignRegion,
    backends: &[InferenceBackend],
) -> Result<(), UsageError> {
    let name = region.name_any();
    let namespace = region.stack_namespace();
    let scrapes = observe(ctx, http, region, backends).await?;
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), &namespace);
    for _ in 0..COMMIT_ATTEMPTS {
        let stored = api
            .get_opt(LEDGER_NAME)
            .await
            .map_err(|e| Read::get::<ConfigMap>(Some(&namespace), LEDGER_NAME).failed(e))?;
        let ledger =
            stored_ledger(stored.as_ref()).map_err(|source| UsageError::CorruptLedger {
                namespace: namespace.clone(),
                source,
            })?;
        let next = advance(
            &ledger,
            stored.is_some(),
            &scrapes,
            backends,
            Timestamp::now().as_second(),
        );
        export(ctx, &name, next.as_ref().unwrap_or(&ledger));
        // Nothing counted, nothing charged: no write.
        let Some(next) = next else { return Ok(()) };
        let version = stored.and_then(|s| s.metadata.resource_version);
        let create = version.is_none();
        let config_map =
            storage::ledger_config_map(&name, &namespace, &next, version).map_err(|source| {
                UsageError::Store {
                    region: name.clone(),
                    source,
                }
            })?;
        let written = if create {
            api.create(&PostParams::default(), &config_map)
                .await
                .map(drop)
        } else {
            api.replace(LEDGER_NAME, &PostParams::default(), &config_map)
                .await
                .map(drop)
        };
        match written {
            // Counted apart from `sovereign_api_writes_total`: a ledger commit records usage
            // and GPU time, which accrue while every object stays as it is.
            Ok(()) => {
                ctx.metrics.ledger_written(&name);
                // New usage: the budgets look at it now rather than at their next requeue.
                ctx.budget_wakeup.notify_one();
                return Ok(());
            }
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(source) => {
                return Err(UsageError::Commit { namespace, source });
            }
        }
    }
    Err(UsageError::Contention(name))
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
