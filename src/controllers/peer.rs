//! Peer clusters of global budgets, on an interval: [`observe`] (the peer credential Secrets
//! in the operator's namespace, each peer's published totals over that read-only credential,
//! this cluster's budgets) → decide (pure, `finops::global::publication`: what this cluster
//! publishes) → apply (the `sovereign-global-totals` ConfigMap, only when it changed). The
//! reads are kept in memory ([`Context::peer_reads`]) for the budget controller, which judges
//! them (`finops::global::combine`) and writes the global status.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::Context;
use crate::api::budget::TokenBudget;
use crate::api::region::SovereignRegion;
use crate::finops::global::{
    PEER_KUBECONFIG_KEY, PEER_LABEL, PEER_REGIONS_KEY, PeerRead, Published, TOTALS_KEY,
    TOTALS_NAME, publication,
};

/// Field manager of the published totals.
pub const MANAGER: &str = "sovereign-operator-peer";
/// Bound of one read of a peer: a partitioned peer must not hold up the others.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a peer could not be read (kept as the read's error text) or the totals not published.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// Observe: the credential Secret lacks a key.
    #[error("observe: Secret {secret} has no key {key}")]
    MissingKey {
        /// The Secret.
        secret: String,
        /// The key.
        key: &'static str,
    },
    /// Observe: the kubeconfig of the Secret is not usable.
    #[error("observe: Secret {secret}: kubeconfig: {message}")]
    Kubeconfig {
        /// The Secret.
        secret: String,
        /// What is wrong.
        message: String,
    },
    /// Observe: the peer's API server did not answer in time.
    #[error("observe: the peer's API server did not answer within {0:?}")]
    Timeout(Duration),
    /// Observe: the peer's API server refused or failed the read.
    #[error("observe: get ConfigMap {namespace}/{TOTALS_NAME} from the peer: {source}")]
    Read {
        /// The peer's operator namespace.
        namespace: String,
        /// The client error.
        source: kube::Error,
    },
    /// Observe: what the peer published is not the expected JSON.
    #[error("observe: the peer's {TOTALS_KEY} is not valid: {0}")]
    Decode(String),
    /// Observe: a list of this cluster failed.
    #[error("observe: list {what}: {source}")]
    List {
        /// What was listed.
        what: &'static str,
        /// The client error.
        source: kube::Error,
    },
    /// Apply: the publication could not be written.
    #[error("apply: ConfigMap {namespace}/{TOTALS_NAME}: {source}")]
    Publish {
        /// The operator namespace.
        namespace: String,
        /// The client error.
        source: kube::Error,
    },
}

/// A client of a peer, by its Secret's resourceVersion.
type Clients = HashMap<String, (String, Client, String)>;

/// Runs the peer reads and the publication every `interval` until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    interval: Duration,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut clients = Clients::new();
    let mut published: Option<String> = None;
    loop {
        if let Err(error) = read_peers(&ctx, &mut clients).await {
            tracing::warn!(%error, "peer clusters not read");
        }
        match publish(&ctx, published.as_deref()).await {
            Ok(text) => published = text.or(published),
            Err(error) => tracing::warn!(%error, "global totals not published"),
        }
        tokio::select! {
            () = &mut shutdown => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// Reads every peer named by a credential Secret and records the result in the context.
async fn read_peers(ctx: &Context, clients: &mut Clients) -> Result<(), PeerError> {
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), &ctx.operator_namespace)
        .list(&ListParams::default().labels(PEER_LABEL))
        .await
        .map_err(|source| PeerError::List {
            what: "peer Secrets",
            source,
        })?
        .items;
    let previous = ctx.peer_reads();
    let mut reads = Vec::new();
    for secret in &secrets {
        let name = secret.name_any();
        let regions = value(secret, PEER_REGIONS_KEY)
            .map(|r| {
                r.split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let mut read = previous
            .iter()
            .find(|p| p.peer == name)
            .cloned()
            .unwrap_or_else(|| PeerRead {
                peer: name.clone(),
                ..PeerRead::default()
            });
        read.regions = regions;
        match read_one(secret, clients).await {
            Ok(published) => {
                read.last = Some((Timestamp::now(), published));
                read.error = None;
            }
            Err(error) => {
                tracing::warn!(peer = %name, %error, "cannot read the peer's totals");
                read.error = Some(error.to_string());
            }
        }
        reads.push(read);
    }
    ctx.set_peer_reads(reads);
    Ok(())
}

fn value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
}

/// The published totals of the peer `secret` grants access to.
async fn read_one(secret: &Secret, clients: &mut Clients) -> Result<Published, PeerError> {
    let name = secret.name_any();
    let version = secret.metadata.resource_version.clone().unwrap_or_default();
    let cached = clients
        .get(&name)
        .filter(|(v, _, _)| *v == version)
        .map(|(_, c, n)| (c.clone(), n.clone()));
    let (client, namespace) = match cached {
        Some(cached) => cached,
        None => {
            let text = value(secret, PEER_KUBECONFIG_KEY).ok_or(PeerError::MissingKey {
                secret: name.clone(),
                key: PEER_KUBECONFIG_KEY,
            })?;
            let (client, namespace) = peer_client(&name, &text).await?;
            clients.insert(name, (version, client.clone(), namespace.clone()));
            (client, namespace)
        }
    };
    let api = Api::<ConfigMap>::namespaced(client, &namespace);
    let got = tokio::time::timeout(READ_TIMEOUT, api.get_opt(TOTALS_NAME))
        .await
        .map_err(|_| PeerError::Timeout(READ_TIMEOUT))?
        .map_err(|source| PeerError::Read {
            namespace: namespace.clone(),
            source,
        })?;
    let Some(config_map) = got else {
        // Nothing published yet: the peer counts none of this cluster's budgets.
        return Ok(Published::default());
    };
    let text = config_map
        .data
        .and_then(|mut d| d.remove(TOTALS_KEY))
        .unwrap_or_default();
    serde_json::from_str(&text).map_err(|e| PeerError::Decode(e.to_string()))
}

/// A client of the peer from the kubeconfig of its Secret, and the namespace its context
/// names (where the peer's operator publishes).
async fn peer_client(secret: &str, text: &str) -> Result<(Client, String), PeerError> {
    let invalid = |message: String| PeerError::Kubeconfig {
        secret: secret.to_owned(),
        message,
    };
    let kubeconfig =
        kube::config::Kubeconfig::from_yaml(text).map_err(|e| invalid(e.to_string()))?;
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .map_err(|e| invalid(e.to_string()))?;
    config.connect_timeout = Some(READ_TIMEOUT);
    config.read_timeout = Some(READ_TIMEOUT);
    let namespace = config.default_namespace.clone();
    let client = Client::try_from(config).map_err(|e| invalid(e.to_string()))?;
    Ok((client, namespace))
}

/// Writes this cluster's publication when it changed; returns the text written (or found).
async fn publish(ctx: &Context, last: Option<&str>) -> Result<Option<String>, PeerError> {
    let budgets = Api::<TokenBudget>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|source| PeerError::List {
            what: "TokenBudgets",
            source,
        })?
        .items;
    let regions: Vec<String> = Api::<SovereignRegion>::all(ctx.client.clone())
        .list(&ListParams::default())
        .await
        .map_err(|source| PeerError::List {
            what: "SovereignRegions",
            source,
        })?
        .items
        .iter()
        .map(|r| r.name_any())
        .collect();
    let managed: Vec<String> = regions
        .iter()
        .filter(|r| ctx.scope.manages(r))
        .cloned()
        .collect();
    // Only budgets with regions counted elsewhere: a purely local budget has nothing a peer
    // needs, and a cluster without global budgets writes nothing at all.
    let local = |budget: &TokenBudget| -> Vec<String> {
        let scope = &budget.spec.scope.regions;
        let of_scope: Vec<&String> = if scope.is_empty() {
            regions.iter().collect()
        } else {
            scope.iter().collect()
        };
        if of_scope.iter().all(|r| ctx.scope.manages(r)) {
            return Vec::new();
        }
        let mut mine: Vec<String> = of_scope
            .into_iter()
            .filter(|r| managed.contains(r))
            .cloned()
            .collect();
        mine.sort();
        mine
    };
    let out = publication(&managed, &budgets, local);
    if out.budgets.is_empty() && last.is_none() {
        return Ok(None);
    }
    let text = serde_json::to_string(&out).unwrap_or_default();
    if last == Some(text.as_str()) {
        return Ok(None);
    }
    let namespace = ctx.operator_namespace.clone();
    let api = Api::<ConfigMap>::namespaced(ctx.client.clone(), &namespace);
    let failed = |source| PeerError::Publish {
        namespace: namespace.clone(),
        source,
    };
    // After a restart: the same publication is already there, nothing to write.
    let current = api.get_opt(TOTALS_NAME).await.map_err(failed)?;
    if current
        .as_ref()
        .and_then(|c| c.data.as_ref())
        .and_then(|d| d.get(TOTALS_KEY))
        == Some(&text)
    {
        return Ok(Some(text));
    }
    let config_map = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": TOTALS_NAME, "namespace": namespace,
                     "labels": {"app.kubernetes.io/managed-by": "sovereign-operator"}},
        "data": {TOTALS_KEY: text},
    });
    api.patch(
        TOTALS_NAME,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&config_map),
    )
    .await
    .map_err(failed)?;
    ctx.metrics.wrote("peer", "ConfigMap", "apply");
    Ok(Some(text))
}
