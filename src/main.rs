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
use sovereign_operator::controllers::{self, Context, RegionScope};
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
    },
    /// Print, as multi-document YAML, every object the operator would create for the custom
    /// resources in the given files or directories — no cluster needed.
    Render {
        /// Files or directories (recursively) of manifests; `-` reads stdin.
        #[arg(short = 'f', long = "filename", required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
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
        } => {
            telemetry::init(log_format);
            match tokio::runtime::Runtime::new() {
                Ok(runtime) => runtime.block_on(run(regions, metrics_address)),
                Err(err) => {
                    eprintln!("error: cannot start the async runtime: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Render { paths } => render(&paths),
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

async fn run(regions: Vec<String>, metrics_address: SocketAddr) -> ExitCode {
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
    let server = tokio::spawn(serve(metrics_address, state, shutdown.clone()));
    let ctx = Arc::new(Context::new(client, RegionScope::new(regions), metrics));
    ready.store(true, Ordering::Relaxed);
    controllers::run_all(ctx, shutdown).await;
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
    let resources = match manifest::read_paths(paths).and_then(manifest::classify) {
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
