//! `sovereign-operator report`: the finance report from the TokenBudgets of one or more
//! clusters (kube contexts, one per regional cluster) or files. Exit 0 on success, 1 when a
//! budget's figures are inconsistent, 2 when a context or file cannot be read.

use std::path::PathBuf;
use std::process::ExitCode;

use super::CliError;
use crate::api::TokenBudget;
use crate::finops::report::{self, Dimension, Format, ReportError};
use crate::manifest::{self, Document, ManifestError};

/// Flags of `report`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kube context to read budgets from (repeatable); the current context when neither
    /// this nor `-f` is given.
    #[arg(long = "context", value_name = "NAME")]
    pub contexts: Vec<String>,
    /// Files or directories of TokenBudgets with status (e.g. `kubectl get tb -A -o
    /// yaml`), instead of or besides clusters; `-` reads stdin.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Only budgets in this namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The period: `2026-11` (Monthly budgets), `2026-Q4`, `2026-W48`, `2026-11-28`; each
    /// budget's current period when absent.
    #[arg(long)]
    pub period: Option<String>,
    /// Dimensions to group by, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "cost-center,team,model,region"
    )]
    pub by: Vec<Dimension>,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    pub format: Format,
}

/// Why `report` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file is unreadable, malformed or invalid: exit 2.
    #[error(transparent)]
    Read(#[from] ManifestError),
    /// A kube context cannot be loaded or connected to: exit 2.
    #[error("kube context {context}: {message}")]
    Context {
        /// The context (`current context` for the default).
        context: String,
        /// What kube said.
        message: String,
    },
    /// The budgets of a cluster cannot be listed: exit 2.
    #[error("kube context {context}: cannot list TokenBudgets: {source}")]
    List {
        /// The context.
        context: String,
        /// What the API server said.
        source: kube::Error,
    },
    /// The budgets' figures do not add up, or the report cannot be written: exit 1.
    #[error(transparent)]
    Build(#[from] ReportError),
}

impl From<Error> for CliError {
    fn from(error: Error) -> Self {
        match error {
            Error::Read(_) | Error::Context { .. } | Error::List { .. } => CliError::input(error),
            Error::Build(_) => CliError::failure(error),
        }
    }
}

/// Where a budget was read from (the report's source column): `file`, a context's name, or
/// the current context's cluster URL.
pub type Sourced = (String, TokenBudget);

/// The budgets among the documents of `-f` (validated like every offline input).
pub fn from_files(documents: Vec<Document>) -> Result<Vec<Sourced>, Error> {
    let resources = manifest::classify(documents)?;
    Ok(resources
        .budgets
        .into_iter()
        .map(|b| ("file".to_owned(), b))
        .collect())
}

/// The report text for `budgets`: only those in `namespace` when given.
pub fn text(
    mut budgets: Vec<Sourced>,
    namespace: Option<&str>,
    period: Option<&str>,
    by: &[Dimension],
    format: Format,
) -> Result<String, Error> {
    if let Some(ns) = namespace {
        budgets.retain(|(_, b)| b.metadata.namespace.as_deref() == Some(ns));
    }
    Ok(report::build(&budgets, period, by)?.render(format)?)
}

/// The budgets of one kube context (`""`: the current one).
async fn from_context(context: &str, namespace: Option<&str>) -> Result<Vec<Sourced>, Error> {
    let options = kube::config::KubeConfigOptions {
        context: (!context.is_empty()).then(|| context.to_owned()),
        ..Default::default()
    };
    let shown = if context.is_empty() {
        "current context".to_owned()
    } else {
        context.to_owned()
    };
    let context_error = |message: String| Error::Context {
        context: shown.clone(),
        message,
    };
    let config = kube::Config::from_kubeconfig(&options)
        .await
        .map_err(|e| context_error(e.to_string()))?;
    let source = if context.is_empty() {
        config.cluster_url.to_string()
    } else {
        context.to_owned()
    };
    let client = kube::Client::try_from(config).map_err(|e| context_error(e.to_string()))?;
    let api: kube::Api<TokenBudget> = match namespace {
        Some(ns) => kube::Api::namespaced(client, ns),
        None => kube::Api::all(client),
    };
    let list = api
        .list(&Default::default())
        .await
        .map_err(|source| Error::List {
            context: shown.clone(),
            source,
        })?;
    Ok(list
        .items
        .into_iter()
        .map(|b| (source.clone(), b))
        .collect())
}

/// Reads the budgets of every file and context, and prints the report.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let mut budgets = Vec::new();
    if !args.paths.is_empty() {
        let documents = manifest::read_paths(&args.paths).map_err(Error::from)?;
        budgets.extend(from_files(documents)?);
    }
    let mut contexts = args.contexts.clone();
    if contexts.is_empty() && args.paths.is_empty() {
        contexts.push(String::new());
    }
    if !contexts.is_empty() {
        let runtime = super::runtime()?;
        for context in &contexts {
            budgets.extend(runtime.block_on(from_context(context, args.namespace.as_deref()))?);
        }
    }
    let text = text(
        budgets,
        args.namespace.as_deref(),
        args.period.as_deref(),
        &args.by,
        args.format,
    )?;
    print!("{text}");
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets() -> Vec<Document> {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/report/budgets.yaml");
        manifest::read_paths(&[path]).expect("fixture")
    }

    #[test]
    fn files_are_the_file_source_and_namespace_filters() {
        let all = from_files(budgets()).expect("valid");
        assert!(!all.is_empty());
        assert!(all.iter().all(|(source, _)| source == "file"));
        let namespace = all[0].1.metadata.namespace.clone().expect("namespaced");
        let everything =
            text(all.clone(), None, None, &[Dimension::Team], Format::Json).expect("report");
        let one = text(
            all,
            Some(&namespace),
            None,
            &[Dimension::Team],
            Format::Json,
        )
        .expect("report");
        assert!(one.contains(&namespace), "{one}");
        let other = text(
            from_files(budgets()).expect("valid"),
            Some("no-such-namespace"),
            None,
            &[Dimension::Team],
            Format::Json,
        )
        .expect("report");
        assert_ne!(other, everything);
        assert!(!other.contains(&namespace), "{other}");
    }

    #[test]
    fn a_budget_the_api_server_would_refuse_exits_2_naming_the_field() {
        let documents = manifest::parse(
            "tb.yaml",
            "apiVersion: sovereign.ai/v1alpha1\nkind: TokenBudget\nmetadata: {name: t, namespace: team}\nspec:\n  period: Monthly\n  limit: {tokens: -5}\n",
        )
        .expect("parses");
        let error = CliError::from(from_files(documents).expect_err("refused"));
        assert_eq!(error.code, 2);
        assert!(error.message.contains("spec.limit.tokens: "), "{error}");
    }
}
