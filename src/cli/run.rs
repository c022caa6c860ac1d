//! `sovereign-operator run`: the controllers against the cluster of the current kubeconfig (or
//! in-cluster), with /metrics and the health endpoints, and optional leader election.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::FutureExt;

use super::CliError;
use crate::controllers::{self, Context, RegionScope};
use crate::leader::{self, ElectionConfig, Elector};
use crate::metrics::Metrics;
use crate::server::{ServerState, serve};
use crate::telemetry::{self, LogFormat};

/// Flags of `run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Act only on this SovereignRegion (repeatable); every region when absent. Objects of
    /// other regions get `reason: ManagedElsewhere` and are otherwise left alone.
    #[arg(long = "region", value_name = "NAME")]
    pub regions: Vec<String>,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        default_value = "0.0.0.0:8080",
        env = "SOVEREIGN_METRICS_ADDRESS"
    )]
    pub metrics_address: SocketAddr,
    /// Log format.
    #[arg(long, value_enum, default_value = "json")]
    pub log_format: LogFormat,
    /// Seconds between two scrapes of the gateways' usage counters (and budget
    /// evaluations).
    #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600), env = "SOVEREIGN_USAGE_INTERVAL")]
    pub usage_interval: u64,
    /// Elect a leader among replicas with a coordination.k8s.io Lease: only the leader
    /// reconciles, every replica serves /metrics and the health endpoints. On in the Helm
    /// chart; off for a single local process.
    #[arg(long)]
    pub leader_election: bool,
    /// Namespace of the Lease; defaults to $POD_NAMESPACE, else the kubeconfig's namespace.
    #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// Name of the Lease. Operator instances that share it elect one leader among them.
    #[arg(long, default_value = "sovereign-operator", value_name = "NAME")]
    pub leader_election_id: String,
}

/// Why `run` stopped with an error (exit 1).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No Kubernetes client could be built from the kubeconfig or the in-cluster config.
    #[error("no Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// The metrics server failed.
    #[error("metrics server failed: {0}")]
    Server(#[source] std::io::Error),
    /// The metrics server's task panicked.
    #[error("metrics server panicked: {0}")]
    ServerPanicked(#[source] tokio::task::JoinError),
}

impl From<Error> for CliError {
    fn from(error: Error) -> Self {
        CliError::failure(error)
    }
}

/// Leader election settings (present when `--leader-election` is given).
struct Election {
    namespace: Option<String>,
    id: String,
}

/// Starts logging and the runtime, and runs the controllers until SIGTERM or Ctrl-C.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    limit_malloc_arenas();
    telemetry::init(args.log_format);
    let election = args.leader_election.then_some(Election {
        namespace: args.leader_election_namespace,
        id: args.leader_election_id,
    });
    let runtime = super::runtime()?;
    runtime.block_on(serve_and_reconcile(
        args.regions,
        args.metrics_address,
        election,
        args.usage_interval,
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// At most two glibc malloc arenas. glibc gives each thread that allocates under contention an
/// arena of its own (up to 8 per core) and keeps what they grew to: a restarted operator, whose
/// first reconciles all run at once, peaked at 132–134 MiB against 120 MiB with two arenas at
/// 50 × 20 (docs/performance.md); the controllers are bound by the API server, not by malloc.
/// Called before the runtime starts any thread. An arena limit set by the user
/// (`MALLOC_ARENA_MAX`, or `arena_max` in `GLIBC_TUNABLES`) wins.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none()
        && !std::env::var("GLIBC_TUNABLES").is_ok_and(|t| t.contains("arena_max"))
    {
        // SAFETY: mallopt only sets a parameter of the allocator; no thread but this one
        // exists yet, and M_ARENA_MAX takes any positive value.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

/// Resolves on SIGTERM (what Kubernetes sends) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested: finishing in-flight reconciles");
}

async fn serve_and_reconcile(
    regions: Vec<String>,
    metrics_address: SocketAddr,
    election: Option<Election>,
    usage_interval: u64,
) -> Result<(), Error> {
    let client = kube::Client::try_default().await.map_err(Error::Client)?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let signal: Pin<Box<dyn Future<Output = ()> + Send + Sync>> = Box::pin(shutdown_signal());
    let shutdown = signal.shared();
    let state = ServerState {
        metrics: metrics.clone(),
        ready: ready.clone(),
    };
    // Every replica serves metrics and health, the standby too.
    let server = tokio::spawn(serve(metrics_address, state, shutdown.clone()));

    let mut elector = None;
    if let Some(election) = election {
        let namespace = election
            .namespace
            .filter(|n| !n.is_empty())
            .unwrap_or_else(|| client.default_namespace().to_owned());
        let config = ElectionConfig::new(namespace, election.id, leader::default_identity());
        tracing::info!(
            identity = %config.identity,
            lease = %format!("{}/{}", config.namespace, config.name),
            "leader election: waiting for the lease"
        );
        let mut candidate = Elector::new(client.clone(), config);
        // A standby that can read the Lease is ready: it can take over. Readiness gating on
        // leadership would keep the standby out of the metrics Service and stall rolling
        // updates (the new Pod could never become ready while the old one leads).
        let contact = {
            let ready = ready.clone();
            move || ready.store(true, Ordering::Relaxed)
        };
        let acquired = tokio::select! {
            () = candidate.acquire(contact) => true,
            () = shutdown.clone() => false,
        };
        if !acquired {
            return finish(server).await;
        }
        elector = Some(candidate);
    }

    metrics.leader.set(1);
    // Where the peer credentials and the published global totals live: the Pod's namespace
    // (the chart's downward API), else the kubeconfig's.
    let operator_namespace = std::env::var("POD_NAMESPACE")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| client.default_namespace().to_owned());
    let ctx = Arc::new(
        Context::new(client, RegionScope::new(regions), metrics.clone())
            .with_usage_interval(std::time::Duration::from_secs(usage_interval))
            .with_operator_namespace(operator_namespace),
    );
    ready.store(true, Ordering::Relaxed);
    let controllers = bounded_shutdown(controllers::run_all(ctx, shutdown.clone()), shutdown);
    match elector {
        None => controllers.await,
        Some(mut elector) => {
            let lost = tokio::select! {
                () = controllers => None,
                lost = elector.hold() => Some(lost),
            };
            match lost {
                // Graceful shutdown: the controllers have finished their in-flight
                // reconciles, so hand the Lease over now rather than after it expires.
                None => elector.release().await,
                Some(lost) => {
                    // Another replica may already be reconciling: stop at once, without
                    // finishing in-flight work, and let Kubernetes restart the process as a
                    // standby. Exiting is simpler and more robust than tearing the controllers
                    // down and rebuilding them in-process.
                    tracing::error!(%lost, "lost leadership; exiting");
                    std::process::exit(1);
                }
            }
        }
    }
    metrics.leader.set(0);
    finish(server).await
}

/// How long in-flight reconciles may take after the shutdown signal. Bounded because
/// kube-runtime's graceful shutdown waits for the watch caches to be ready, which never happens
/// when the signal arrives while they are still listing (the e2e hit it: SIGTERM right after
/// a take-over hung). Well under the chart's 30 s termination grace period, so the Lease is
/// still released before the kubelet kills the process.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs `controllers` until they finish, or until `SHUTDOWN_GRACE` after `shutdown`; dropping
/// them then aborts their reconcile tasks, so nothing writes after this returns.
async fn bounded_shutdown(
    controllers: impl Future<Output = ()>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::select! {
        () = controllers => {}
        () = async {
            shutdown.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!(grace = ?SHUTDOWN_GRACE, "controllers did not stop in time; stopping anyway");
        }
    }
}

/// Waits for the metrics server (which stops on the shutdown signal).
async fn finish(server: tokio::task::JoinHandle<std::io::Result<()>>) -> Result<(), Error> {
    match server.await {
        Ok(result) => result.map_err(Error::Server),
        Err(panicked) => Err(Error::ServerPanicked(panicked)),
    }
}
