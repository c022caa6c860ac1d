//! The `sovereign-operator` command line: one binary for the controllers and the offline tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use sovereign_operator::api;

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
    /// Print the operator version and the API it serves.
    Version,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Crds { out_dir } => print_crds(out_dir),
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
