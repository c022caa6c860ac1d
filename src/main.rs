//! The `sovereign-operator` command line: one binary for the controllers and the offline tools.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Parser, Subcommand};
use futures::FutureExt;
use sovereign_operator::cli::check;
use sovereign_operator::controllers::{self, Context, RegionScope};
use sovereign_operator::finops::report;
use sovereign_operator::leader::{self, ElectionConfig, Elector};
use sovereign_operator::metrics::Metrics;
use sovereign_operator::render::region::offline_children;
use sovereign_operator::server::{ServerState, serve};
use sovereign_operator::telemetry::{self, LogFormat};
use sovereign_operator::{api, manifest};

/// Kubernetes operator for multi-region sovereign AI stacks.
#[derive(Debug, Parser)]
#[command(name = "sovereign-operator", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as multi-document YAML (what `crds/` holds).
    Crds {
        /// Write one file per kind into this directory instead of printing.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
    /// Run the controllers against the cluster of the current kubeconfig (or in-cluster).
    Run {
        /// Act only on this SovereignRegion (repeatable); every region when absent. Objects of
        /// other regions get `reason: ManagedElsewhere` and are otherwise left alone.
        #[arg(long = "region", value_name = "NAME")]
        regions: Vec<String>,
        /// Address of /metrics, /healthz and /readyz.
        #[arg(
            long,
            default_value = "0.0.0.0:8080",
            env = "SOVEREIGN_METRICS_ADDRESS"
        )]
        metrics_address: SocketAddr,
        /// Log format.
        #[arg(long, value_enum, default_value = "json")]
        log_format: LogFormat,
        /// Seconds between two scrapes of the gateways' usage counters (and budget
        /// evaluations).
        #[arg(long, default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600), env = "SOVEREIGN_USAGE_INTERVAL")]
        usage_interval: u64,
        /// Elect a leader among replicas with a coordination.k8s.io Lease: only the leader
        /// reconciles, every replica serves /metrics and the health endpoints. On in the Helm
        /// chart; off for a single local process.
        #[arg(long)]
        leader_election: bool,
        /// Namespace of the Lease; defaults to $POD_NAMESPACE, else the kubeconfig's namespace.
        #[arg(long, env = "POD_NAMESPACE", value_name = "NAMESPACE")]
        leader_election_namespace: Option<String>,
        /// Name of the Lease. Operator instances that share it elect one leader among them.
        #[arg(long, default_value = "sovereign-operator", value_name = "NAME")]
        leader_election_id: String,
    },
    /// Print, as multi-document YAML, every object the operator would create for the custom
    /// resources in the given files or directories — no cluster needed.
    Render {
        /// Files or directories (recursively) of manifests; `-` reads stdin.
        #[arg(short = 'f', long = "filename", required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Check manifests against the residency policies, offline (for CI and GitOps pipelines),
    /// reading them as `kubectl apply -R -f` would. Exit 0 when compliant, 1 with violations,
    /// 2 when the input cannot be read, conflicts, or cannot be judged.
    Check {
        /// Files or directories (recursively) of manifests to check; `-` reads stdin. Without
        /// --policies, the SovereignRegions, ResidencyPolicies and Namespaces among them are
        /// the context too.
        #[arg(short = 'f', long = "filename", required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Files or directories with the authoritative SovereignRegions, ResidencyPolicies,
        /// Namespaces and backup locations (repeatable): context, not checked themselves. With
        /// it, a region or policy in -f, or any object defined in both, is refused (exit 2).
        #[arg(long = "policies", value_name = "PATH")]
        policies: Vec<PathBuf>,
        /// Output format: one line per violation, or a JSON object.
        #[arg(short = 'o', long, value_enum, default_value = "text")]
        output: check::Format,
    },
    /// Finance report from the TokenBudgets of one or more clusters (kube contexts, one per
    /// regional cluster) or files. Exit 0 on success, 1 when a budget's figures are
    /// inconsistent, 2 when a context or file cannot be read.
    Report {
        /// Kube context to read budgets from (repeatable); the current context when neither
        /// this nor `-f` is given.
        #[arg(long = "context", value_name = "NAME")]
        contexts: Vec<String>,
        /// Files or directories of TokenBudgets with status (e.g. `kubectl get tb -A -o
        /// yaml`), instead of or besides clusters; `-` reads stdin.
        #[arg(short = 'f', long = "filename", value_name = "PATH")]
        paths: Vec<PathBuf>,
        /// Only budgets in this namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// The period: `2026-11` (Monthly budgets), `2026-Q4`, `2026-W48`, `2026-11-28`; each
        /// budget's current period when absent.
        #[arg(long)]
        period: Option<String>,
        /// Dimensions to group by, comma-separated.
        #[arg(
            long,
            value_enum,
            value_delimiter = ',',
            default_value = "cost-center,team,model,region"
        )]
        by: Vec<report::Dimension>,
        /// Output format.
        #[arg(long, value_enum, default_value = "csv")]
        format: report::Format,
    },
    /// Every data path of each region, where it goes and what guards it (JSON, Markdown or
    /// HTML), from files or a cluster; `--diff OLD.json` exits 1 on a breaking change.
    Evidence(sovereign_operator::cli::evidence::Args),
    /// Print the operator version and the API it serves.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { out_dir } => print_crds(out_dir),
        Command::Run {
            regions,
            metrics_address,
            log_format,
            usage_interval,
            leader_election,
            leader_election_namespace,
            leader_election_id,
        } => {
            telemetry::init(log_format);
            let election = leader_election.then_some(Election {
                namespace: leader_election_namespace,
                id: leader_election_id,
            });
            match tokio::runtime::Runtime::new() {
                Ok(runtime) => {
                    runtime.block_on(run(regions, metrics_address, election, usage_interval))
                }
                Err(err) => {
                    eprintln!("error: cannot start the async runtime: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Render { paths } => render(&paths),
        Command::Check {
            paths,
            policies,
            output,
        } => check(&paths, &policies, output),
        Command::Report {
            contexts,
            paths,
            namespace,
            period,
            by,
            format,
        } => match tokio::runtime::Runtime::new() {
            Ok(runtime) => runtime.block_on(finance_report(
                contexts, paths, namespace, period, by, format,
            )),
            Err(err) => {
                eprintln!("error: cannot start the async runtime: {err}");
                ExitCode::FAILURE
            }
        },
        Command::Evidence(args) => sovereign_operator::cli::evidence::main(&args),
        Command::Version => {
            println!(
                "sovereign-operator {} (API {}/{}, Kubernetes >= 1.33)",
                env!("CARGO_PKG_VERSION"),
                api::GROUP,
                api::VERSION
            );
            ExitCode::SUCCESS
        }
    }
}

fn print_crds(out_dir: Option<PathBuf>) -> ExitCode {
    let mut documents = Vec::new();
    for crd in api::all_crds() {
        let yaml = match api::crd_yaml(&crd) {
            Ok(yaml) => yaml,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(dir) = &out_dir {
            let path = dir.join(api::crd_file_name(&crd));
            if let Err(err) = std::fs::write(&path, &yaml) {
                eprintln!("error: cannot write {}: {err}", path.display());
                return ExitCode::from(2);
            }
        } else {
            documents.push(yaml);
        }
    }
    if out_dir.is_none() {
        print!("{}", documents.join("---\n"));
    }
    ExitCode::SUCCESS
}

/// Reads the budgets of every context and file, and prints the report.
async fn finance_report(
    mut contexts: Vec<String>,
    paths: Vec<PathBuf>,
    namespace: Option<String>,
    period: Option<String>,
    by: Vec<report::Dimension>,
    format: report::Format,
) -> ExitCode {
    let mut budgets: Vec<(String, api::TokenBudget)> = Vec::new();
    if !paths.is_empty() {
        let documents = match manifest::read_paths(&paths).and_then(manifest::classify) {
            Ok(resources) => resources.budgets,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::from(2);
            }
        };
        budgets.extend(documents.into_iter().map(|b| ("file".to_owned(), b)));
    }
    let use_current = contexts.is_empty() && paths.is_empty();
    if use_current {
        contexts.push(String::new());
    }
    for context in contexts {
        let options = kube::config::KubeConfigOptions {
            context: (!context.is_empty()).then(|| context.clone()),
            ..Default::default()
        };
        let shown = if context.is_empty() {
            "current context".to_owned()
        } else {
            context.clone()
        };
        let config = match kube::Config::from_kubeconfig(&options).await {
            Ok(config) => config,
            Err(err) => {
                eprintln!("error: kube context {shown}: {err}");
                return ExitCode::from(2);
            }
        };
        let source = if context.is_empty() {
            config.cluster_url.to_string()
        } else {
            context.clone()
        };
        let client = match kube::Client::try_from(config) {
            Ok(client) => client,
            Err(err) => {
                eprintln!("error: kube context {shown}: {err}");
                return ExitCode::from(2);
            }
        };
        let api: kube::Api<api::TokenBudget> = match &namespace {
            Some(ns) => kube::Api::namespaced(client, ns),
            None => kube::Api::all(client),
        };
        match api.list(&Default::default()).await {
            Ok(list) => budgets.extend(list.items.into_iter().map(|b| (source.clone(), b))),
            Err(err) => {
                eprintln!("error: kube context {shown}: cannot list TokenBudgets: {err}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(ns) = &namespace {
        budgets.retain(|(_, b)| b.metadata.namespace.as_deref() == Some(ns.as_str()));
    }
    let built = report::build(&budgets, period.as_deref(), &by).and_then(|r| r.render(format));
    match built {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(1)
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

/// Leader election settings of `run` (present when `--leader-election` is given).
struct Election {
    namespace: Option<String>,
    id: String,
}

async fn run(
    regions: Vec<String>,
    metrics_address: SocketAddr,
    election: Option<Election>,
    usage_interval: u64,
) -> ExitCode {
    let client = match kube::Client::try_default().await {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(%err, "no Kubernetes client");
            return ExitCode::FAILURE;
        }
    };
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
    let ctx = Arc::new(
        Context::new(client, RegionScope::new(regions), metrics.clone())
            .with_usage_interval(std::time::Duration::from_secs(usage_interval)),
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
async fn finish(server: tokio::task::JoinHandle<std::io::Result<()>>) -> ExitCode {
    match server.await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(err)) => {
            tracing::error!(%err, "metrics server failed");
            ExitCode::FAILURE
        }
        Err(err) => {
            tracing::error!(%err, "metrics server panicked");
            ExitCode::FAILURE
        }
    }
}

fn render(paths: &[PathBuf]) -> ExitCode {
    let read = manifest::read_paths(paths).and_then(|documents| {
        // Two definitions of one region or backend would render two sets of children.
        manifest::ensure_unique(&documents)?;
        manifest::classify(documents)
    });
    let resources = match read {
        Ok(resources) => resources,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    let children =
        match offline_children(&resources.regions, &resources.backends, &resources.policies) {
            Ok(children) => children,
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::from(2);
            }
        };
    let mut documents = Vec::new();
    for child in &children {
        let yaml = child
            .to_json()
            .map_err(|e| e.to_string())
            .and_then(|json| serde_yaml_ng::to_string(&json).map_err(|e| e.to_string()));
        match yaml {
            Ok(yaml) => documents.push(yaml),
            Err(err) => {
                eprintln!("error: {err}");
                return ExitCode::FAILURE;
            }
        }
    }
    print!("{}", documents.join("---\n"));
    ExitCode::SUCCESS
}

/// `check` (logic in `sovereign_operator::cli::check`): 0 compliant, 1 violations, 2 input
/// that cannot be judged.
fn check(paths: &[PathBuf], policy_paths: &[PathBuf], output: check::Format) -> ExitCode {
    let verdict = match check::check(paths, policy_paths) {
        Ok(verdict) => verdict,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(err.exit_code());
        }
    };
    match verdict.render(output) {
        Ok(text) => print!("{text}"),
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    }
    eprint!("{}", verdict.summary());
    ExitCode::from(verdict.exit_code())
}
