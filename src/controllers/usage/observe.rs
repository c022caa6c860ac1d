//! What the usage collector reads for a region: the `/metrics` of its gateways (its
//! `metricsUrls`, else every endpoint of the gateway Service) and of its vLLM servers.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::super::{Context, Error, Read};
use crate::api::backend::InferenceBackend;
use crate::api::common::SecretKeyReference;
use crate::api::region::SovereignRegion;
use crate::finops::pricing::deployment_id;
use crate::finops::usage::{Scrape, Served, read_scrape, read_served};
use crate::render::{gateway, vllm};

/// Upper bound of a scrape.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest `/metrics` response read; LiteLLM's grows with label cardinality.
const MAX_SCRAPE_BYTES: usize = 64 << 20;

/// The scrapes of one region that worked. A failed scrape adds nothing and moves no cursor:
/// the next one that works counts what this one missed.
#[derive(Clone, Debug, Default)]
pub struct Scrapes {
    /// (source id, scrape) of the gateways.
    pub gateways: Vec<(String, Scrape)>,
    /// (source id, deployment id, counters) of the vLLM servers: every token the GPUs
    /// served, through the gateway or not.
    pub served: Vec<(String, String, Served)>,
    /// Every source that exists now, scraped or not (a cursor of a gone pod is forgotten).
    pub live: BTreeSet<String>,
}

/// One place to scrape.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Source {
    /// Ledger key: `pod/<uid>`, `vllm/<uid>` or `url/<url>`.
    id: String,
    url: String,
}

/// The HTTP client of the scrapes.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(SCRAPE_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(2))
        .build()
}

/// Scrapes every source of `region` (its gateways, and the vLLM servers of `backends`).
pub async fn observe(
    ctx: &Context,
    http: &reqwest::Client,
    region: &SovereignRegion,
    backends: &[InferenceBackend],
) -> Result<Scrapes, Error> {
    let name = region.name_any();
    let namespace = region.stack_namespace();
    let sources = gateway_sources(ctx, region).await?;
    let token = match &region.spec.gateway.master_key_secret {
        Some(reference) => secret_value(ctx, &namespace, reference).await?,
        None => None,
    };
    let results = futures::future::join_all(
        sources
            .iter()
            .map(|source| scrape(http, source, token.as_deref())),
    )
    .await;
    let mut scrapes = Scrapes::default();
    for (source, result) in sources.iter().zip(results) {
        match result.and_then(|text| read_scrape(&text).map_err(|e| e.to_string())) {
            Ok(scrape) => {
                ctx.metrics.scraped(&name, "ok");
                scrapes.gateways.push((source.id.clone(), scrape));
            }
            Err(error) => {
                ctx.metrics.scraped(&name, "error");
                tracing::info!(source = %source.url, %error, "scrape failed");
            }
        }
    }
    let mut served_sources = Vec::new();
    for backend in backends.iter().filter(|b| b.spec.vllm.is_some()) {
        let service = vllm::workload_name(&backend.name_any());
        for source in
            endpoint_sources(ctx, &namespace, &service, vllm::PORT, "vllm", "/metrics").await?
        {
            served_sources.push((deployment_id(backend), source));
        }
    }
    let results = futures::future::join_all(
        served_sources
            .iter()
            .map(|(_, source)| scrape(http, source, None)),
    )
    .await;
    for ((deployment, source), result) in served_sources.iter().zip(results) {
        match result.and_then(|text| read_served(&text).map_err(|e| e.to_string())) {
            Ok(counters) => {
                ctx.metrics.scraped(&name, "ok");
                scrapes
                    .served
                    .push((source.id.clone(), deployment.clone(), counters));
            }
            Err(error) => {
                ctx.metrics.scraped(&name, "error");
                tracing::info!(source = %source.url, %error, "scrape failed");
            }
        }
    }
    scrapes.live = sources
        .iter()
        .chain(served_sources.iter().map(|(_, s)| s))
        .map(|s| s.id.clone())
        .collect();
    Ok(scrapes)
}

/// Where the gateways of `region` serve `/metrics`: its `metricsUrls`, else every endpoint of
/// the gateway Service, ready or not (a pod that is not ready still holds counters).
async fn gateway_sources(ctx: &Context, region: &SovereignRegion) -> Result<Vec<Source>, Error> {
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
        .map_err(|e| Read::list::<EndpointSlice>(Some(namespace)).failed(e))?;
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
        .map_err(|e| Read::get::<Secret>(Some(namespace), &reference.name).failed(e))?;
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
