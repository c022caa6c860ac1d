//! The usage collector: on an interval, inside each managed region, scrapes the gateways'
//! `/metrics`, adds what is new to the region's ledger (a ConfigMap in the region namespace,
//! written with a resourceVersion precondition so that a delta and its cursor are committed
//! together), charges self-hosted GPU time, exports the totals as metrics, and writes the
//! budget actions in force for the gateways' guard.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, PostParams};
use kube::{Api, ResourceExt};
use tracing::{Instrument, info_span};

use super::{Context, Error};
use crate::api::backend::InferenceBackend;
use crate::api::budget::TokenBudget;
use crate::api::common::SecretKeyReference;
use crate::api::region::SovereignRegion;
use crate::finops::budget::{ledger_lines, region_actions};
use crate::finops::ledger::{Ledger, LedgerError, RunningGpus};
use crate::finops::pricing::{PriceBook, deployment_id};
use crate::finops::usage::{Counters, SeriesKey, read_scrape, read_served};
use crate::metrics::{SpendLabels, TokenLabels};
use crate::render::{Child, Owner, gateway};

/// Field manager of the budget actions ConfigMap.
pub const MANAGER: &str = "sovereign-operator-usage";
/// Name of a region's ledger ConfigMap, in the region namespace.
pub const LEDGER_NAME: &str = "sovereign-usage-ledger";
/// Key of the ledger in that ConfigMap's `binaryData`: gzip-compressed JSON (read it with
/// `kubectl get cm … -o jsonpath='{.binaryData.ledger\.json\.gz}' | base64 -d | gunzip`).
pub const LEDGER_KEY: &str = "ledger.json.gz";
/// `app.kubernetes.io/component` of the ledger and the actions.
pub const COMPONENT: &str = "finops";
/// Upper bound of a scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `/metrics` response read; LiteLLM's grows with label cardinality.
const MAX_SCRAPE_BYTES: usize = 64 << 20;
/// Largest ledger written: a ConfigMap's data is limited to 1 MiB, minus room for metadata.
const MAX_LEDGER_BYTES: usize = 1_000_000;
/// Pause between a wake-up and the tick it triggers.
const WAKEUP_DEBOUNCE: Duration = Duration::from_secs(1);
/// Pause after a tick that failed.
const RETRY: Duration = Duration::from_secs(3);
/// Attempts to commit a tick when another writer changed the ledger in between.
const COMMIT_ATTEMPTS: usize = 3;

/// Why a region's usage could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// A request to the API server failed.
    #[error(transparent)]
    Kube(#[from] Error),
    /// The stored ledger is not valid JSON of the expected shape.
    #[error("ConfigMap {namespace}/{LEDGER_NAME}: {message}")]
    CorruptLedger {
        /// Region namespace.
        namespace: String,
        /// serde's message.
        message: String,
    },
    /// The ledger outgrew what one ConfigMap can hold.
    #[error(
        "the usage ledger of region {region} would be {bytes} bytes ({series} series), more than a ConfigMap holds; nothing was counted this round (split the region, or reduce label cardinality such as key aliases)"
    )]
    LedgerTooLarge {
        /// The region.
        region: String,
        /// Serialized size.
        bytes: usize,
        /// Series in it.
        series: usize,
    },
    /// Another writer kept changing the ledger.
    #[error("the ledger of {0} kept changing under this writer; retried next tick")]
    Contention(String),
}

/// One place to scrape.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Source {
    /// Ledger key: `pod/<uid>` or `url/<url>`.
    id: String,
    url: String,
}

/// Runs the collector every `interval` until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let http = match reqwest::Client::builder()
        .timeout(SCRAPE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(2))
        .build()
    {
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
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(pause) => {}
            () = ctx.usage_wakeup.notified() => {
                // Let the burst of reconciles that woke us settle into one tick.
                tokio::time::sleep(WAKEUP_DEBOUNCE).await;
            }
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
            tracing::warn!(%error, "cannot list SovereignRegions; usage collection skipped");
            return false;
        }
    };
    let budgets = match Api::<TokenBudget>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(list) => list.items,
        Err(error) => {
            tracing::warn!(%error, "cannot list TokenBudgets; budget actions not refreshed");
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
                tracing::warn!(parent: &span, %error, "usage collection failed");
                healthy = false;
                continue;
            }
        };
        if let Err(error) = collect_region(ctx, http, region, &backends)
            .instrument(span.clone())
            .await
        {
            tracing::warn!(parent: &span, %error, "usage collection failed");
            healthy = false;
        }
        if let Err(error) = write_actions(ctx, region, &backends, &budgets)
            .instrument(span.clone())
            .await
        {
            tracing::warn!(parent: &span, %error, "cannot write the budget actions");
            healthy = false;
        }
    }
    healthy
}

/// Where the gateways of `region` serve `/metrics`: its `metricsUrls`, else every endpoint of
/// the gateway Service, ready or not (a pod that is not ready still holds counters).
async fn sources(ctx: &Context, region: &SovereignRegion) -> Result<Vec<Source>, Error> {
    if !region.spec.gateway.metrics_urls.is_empty() {
        return Ok(region
            .spec
            .gateway
            .metrics_urls
            .iter()
            .map(|url| Source {
                id: format!("url/{url}"),
                url: url.clone(),
            })
            .collect());
    }
    endpoint_sources(
        ctx,
        &region.stack_namespace(),
        gateway::NAME,
        gateway::PORT,
        "pod",
        "/metrics/",
    )
    .await
}

/// Every endpoint (ready or not) of Service `service` as a scrape source `<kind>/<pod uid>`.
async fn endpoint_sources(
    ctx: &Context,
    namespace: &str,
    service: &str,
    port: i32,
    kind: &str,
    path: &str,
) -> Result<Vec<Source>, Error> {
    let slices = Api::<EndpointSlice>::namespaced(ctx.client.clone(), namespace)
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={service}")))
        .await
        .map_err(|e| Error::kube(format!("list EndpointSlices of {namespace}/{service}"), e))?;
    let mut sources = Vec::new();
    for slice in slices.items {
        for endpoint in slice.endpoints {
            let Some(uid) = endpoint.target_ref.as_ref().and_then(|r| r.uid.clone()) else {
                continue;
            };
            let Some(address) = endpoint.addresses.first() else {
                continue;
            };
            let host = if address.contains(':') {
                format!("[{address}]")
            } else {
                address.clone()
            };
            sources.push(Source {
                id: format!("{kind}/{uid}"),
                url: format!("http://{host}:{port}{path}"),
            });
        }
    }
    sources.sort_by(|a, b| a.id.cmp(&b.id));
    sources.dedup_by(|a, b| a.id == b.id);
    Ok(sources)
}

/// The value of a Secret key, for the scrape's bearer token.
async fn secret_value(
    ctx: &Context,
    namespace: &str,
    reference: &SecretKeyReference,
) -> Result<Option<String>, Error> {
    let secret = Api::<Secret>::namespaced(ctx.client.clone(), namespace)
        .get_opt(&reference.name)
        .await
        .map_err(|e| Error::kube(format!("get Secret {namespace}/{}", reference.name), e))?;
    Ok(secret
        .and_then(|s| s.data)
        .and_then(|data| data.get(&reference.key).cloned())
        .and_then(|bytes| String::from_utf8(bytes.0).ok())
        .map(|value| value.trim().to_owned()))
}

async fn scrape(
    http: &reqwest::Client,
    source: &Source,
    token: Option<&str>,
) -> Result<String, String> {
    let mut request = http.get(&source.url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let mut response = request
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("read failed: {e}"))?
    {
        if body.len() + chunk.len() > MAX_SCRAPE_BYTES {
            return Err(format!("response larger than {MAX_SCRAPE_BYTES} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| "response is not UTF-8".to_owned())
}

async fn collect_region(
    ctx: &Context,
    http: &reqwest::Client,
    region: &SovereignRegion,
    backends: &[InferenceBackend],
) -> Result<(), UsageError> {
    let name = region.name_any();
    let namespace = region.stack_namespace();

    // fetch: sources, the bearer token, the region's backends
    let sources = sources(ctx, region).await?;
    let token = match &region.spec.gateway.master_key_secret {
        Some(reference) => secret_value(ctx, &namespace, reference).await?,
        None => None,
    };
    let scrapes = futures::future::join_all(
        sources
            .iter()
            .map(|source| scrape(http, source, token.as_deref())),
    )
    .await;
    let mut parsed = Vec::new();
    for (source, result) in sources.iter().zip(scrapes) {
        let outcome = result.and_then(|text| read_scrape(&text).map_err(|e| e.to_string()));
        match outcome {
            Ok(scrape) => {
                ctx.metrics.scraped(&name, "ok");
                parsed.push((source.id.clone(), scrape));
            }
            Err(error) => {
                // A failed scrape adds nothing and moves no cursor: the next one that works
                // counts what this one missed.
                ctx.metrics.scraped(&name, "error");
                tracing::info!(source = %source.url, %error, "scrape failed");
            }
        }
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
    // The vLLM servers' own counters: every token the GPUs served, through the gateway or not.
    let mut served_sources = Vec::new();
    for backend in backends.iter().filter(|b| b.spec.vllm.is_some()) {
        let service = crate::render::vllm::workload_name(&backend.name_any());
        for source in endpoint_sources(
            ctx,
            &namespace,
            &service,
            crate::render::vllm::PORT,
            "vllm",
            "/metrics",
        )
        .await?
        {
            served_sources.push((deployment_id(backend), source));
        }
    }
    let served_scrapes = futures::future::join_all(
        served_sources
            .iter()
            .map(|(_, source)| scrape(http, source, None)),
    )
    .await;
    let mut served = Vec::new();
    for ((deployment, source), result) in served_sources.iter().zip(served_scrapes) {
        match result.and_then(|text| read_served(&text).map_err(|e| e.to_string())) {
            Ok(counters) => {
                ctx.metrics.scraped(&name, "ok");
                served.push((source.id.clone(), deployment.clone(), counters));
            }
            Err(error) => {
                ctx.metrics.scraped(&name, "error");
                tracing::info!(source = %source.url, %error, "scrape failed");
            }
        }
    }
    let live: BTreeSet<String> = sources
        .iter()
        .chain(served_sources.iter().map(|(_, s)| s))
        .map(|s| s.id.clone())
        .collect();

    // build + apply, retried when another writer got in between
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), &namespace);
    for _ in 0..COMMIT_ATTEMPTS {
        let stored = api
            .get_opt(LEDGER_NAME)
            .await
            .map_err(|e| Error::kube(format!("get ConfigMap {namespace}/{LEDGER_NAME}"), e))?;
        let mut ledger = stored_ledger(stored.as_ref()).map_err(|e| UsageError::CorruptLedger {
            namespace: namespace.clone(),
            message: e.to_string(),
        })?;
        let before = without_clock(&ledger);
        let now = Timestamp::now().as_second();
        let mut interval: BTreeMap<SeriesKey, Counters> = BTreeMap::new();
        for (source, scrape) in &parsed {
            for (key, delta) in ledger.record(source, scrape, now, &prices) {
                interval.entry(key).or_default().add(&delta);
            }
        }
        let mut served_interval: BTreeMap<String, Counters> = BTreeMap::new();
        for (source, deployment, counters) in &served {
            let delta = ledger.record_served(source, deployment, counters, now);
            served_interval
                .entry(deployment.clone())
                .or_default()
                .add(&delta);
        }
        ledger.charge_gpus(now, &running, &interval, &served_interval, &prices);
        ledger.forget_gone_pods(&live, now);
        export(ctx, &name, &ledger);
        if without_clock(&ledger) == before && stored.is_some() {
            // Nothing counted, nothing charged: no write.
            return Ok(());
        }
        let stored_bytes = ledger.to_gzip().map_err(|e| UsageError::CorruptLedger {
            namespace: namespace.clone(),
            message: e.to_string(),
        })?;
        // A ConfigMap holds at most 1 MiB: say so plainly instead of the API server's refusal.
        if stored_bytes.len() > MAX_LEDGER_BYTES {
            return Err(UsageError::LedgerTooLarge {
                region: name,
                bytes: stored_bytes.len(),
                series: ledger.usage.len(),
            });
        }
        match commit(ctx, &api, region, stored, stored_bytes).await {
            Ok(()) => return Ok(()),
            Err(kube::Error::Api(status)) if status.code == 409 => continue,
            Err(e) => {
                return Err(
                    Error::kube(format!("write ConfigMap {namespace}/{LEDGER_NAME}"), e).into(),
                );
            }
        }
    }
    Err(UsageError::Contention(name))
}

/// The ledger stored in `config_map`; empty when there is none yet.
pub fn stored_ledger(config_map: Option<&ConfigMap>) -> Result<Ledger, LedgerError> {
    match config_map
        .and_then(|cm| cm.binary_data.as_ref())
        .and_then(|d| d.get(LEDGER_KEY))
    {
        Some(bytes) => Ledger::from_gzip(&bytes.0),
        None => Ok(Ledger::default()),
    }
}

/// The ledger with the clocks of its cursors and meters zeroed: what must change for a
/// write to be worth it.
fn without_clock(ledger: &Ledger) -> Ledger {
    let mut copy = ledger.clone();
    for cursor in copy.sources.values_mut() {
        cursor.last_seen = 0;
    }
    for meter in copy.gpu.values_mut() {
        meter.charged_until = 0;
    }
    copy
}

/// Creates the ledger, or replaces it if it is still at the resourceVersion it was read at.
async fn commit(
    ctx: &Context,
    api: &Api<ConfigMap>,
    region: &SovereignRegion,
    stored: Option<ConfigMap>,
    ledger: Vec<u8>,
) -> Result<(), kube::Error> {
    let owner = Owner {
        region: region.name_any(),
        instance: region.name_any(),
        // No owner reference: the ledger lives in the region namespace, which goes with the
        // region, and a reference would wake the region controller on every write.
        reference: None,
    };
    let mut config_map = ConfigMap {
        metadata: owner.meta(COMPONENT, LEDGER_NAME, Some(&region.stack_namespace())),
        binary_data: Some(BTreeMap::from([(
            LEDGER_KEY.to_owned(),
            k8s_openapi::ByteString(ledger),
        )])),
        ..ConfigMap::default()
    };
    match stored {
        Some(stored) => {
            config_map.metadata.resource_version = stored.metadata.resource_version;
            api.replace(LEDGER_NAME, &PostParams::default(), &config_map)
                .await?;
        }
        None => {
            api.create(&PostParams::default(), &config_map).await?;
        }
    }
    // Counted apart from `sovereign_api_writes_total`: a ledger commit records usage and GPU
    // time, which accrue while every object stays as it is.
    ctx.metrics.ledger_written(&region.name_any());
    Ok(())
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
) -> Result<(), Error> {
    let name = region.name_any();
    // The models the region's gateway serves: its Ready and Compliant backends'.
    let served: BTreeSet<String> = backends
        .iter()
        .filter(|b| b.may_serve())
        .map(|b| b.spec.model_name.clone())
        .collect();
    let file = region_actions(budgets, &name, &served);
    let json = serde_json::to_string_pretty(&file)
        .map_err(|e| Error::kube("serialize budget actions", kube::Error::SerdeError(e)))?;
    let owner = Owner {
        region: name.clone(),
        instance: name.clone(),
        reference: None,
    };
    let config_map = ConfigMap {
        metadata: owner.meta(
            COMPONENT,
            gateway::ACTIONS_CONFIG_MAP,
            Some(&region.stack_namespace()),
        ),
        data: Some(BTreeMap::from([(gateway::ACTIONS_KEY.to_owned(), json)])),
        ..ConfigMap::default()
    };
    ctx.applier(MANAGER).apply(&Child::from(config_map)).await?;
    Ok(())
}
