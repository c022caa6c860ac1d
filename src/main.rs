//! The `sovereign-operator` command line: one binary for the controllers and the offline tools.
//! This file only parses the arguments and dispatches; each command lives in
//! `sovereign_operator::cli::<command>` (see that module for the pattern).

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sovereign_operator::cli::{self, check, crds, evidence, render, report, run, version};

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
    Crds(crds::Args),
    /// Run the controllers against the cluster of the current kubeconfig (or in-cluster).
    Run(run::Args),
    /// Print, as multi-document YAML, every object the operator would create for the custom
    /// resources in the given files or directories — no cluster needed.
    Render(render::Args),
    /// Check manifests against the residency policies, offline (for CI and GitOps pipelines),
    /// reading them as `kubectl apply -R -f` would. Exit 0 when compliant, 1 with violations,
    /// 2 when the input cannot be read, conflicts, or cannot be judged.
    Check(check::Args),
    /// Finance report from the TokenBudgets of one or more clusters (kube contexts, one per
    /// regional cluster) or files. Exit 0 on success, 1 when a budget's figures are
    /// inconsistent, 2 when a context or file cannot be read.
    Report(report::Args),
    /// Every data path of each region, where it goes and what guards it (JSON, Markdown or
    /// HTML), from files or a cluster; `--diff OLD.json` exits 1 on a breaking change.
    Evidence(evidence::Args),
    /// Print the operator version and the API it serves.
    Version,
}

fn main() -> ExitCode {
    cli::finish(match Cli::parse().command {
        Command::Crds(args) => crds::run(args),
        Command::Run(args) => run::run(args),
        Command::Render(args) => render::run(args),
        Command::Check(args) => check::run(args),
        Command::Report(args) => report::run(args),
        Command::Evidence(args) => evidence::run(args),
        Command::Version => version::run(),
    })
}
