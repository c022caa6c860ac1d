//! `sovereign-operator render`: every object the operator would create for the custom
//! resources of some files, as multi-document YAML, without a cluster.

use std::path::PathBuf;
use std::process::ExitCode;

use super::CliError;
use crate::manifest::{self, Document, ManifestError};
use crate::render::RenderError;
use crate::render::region::offline_children;

/// Flags of `render`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories (recursively) of manifests; `-` reads stdin.
    #[arg(short = 'f', long = "filename", required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

/// Why `render` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Unreadable, malformed, duplicated or invalid input: exit 2.
    #[error(transparent)]
    Read(#[from] ManifestError),
    /// The custom resources cannot be turned into children: exit 2 (a problem of the input).
    #[error(transparent)]
    Build(#[from] RenderError),
    /// A child cannot be written as YAML: exit 1.
    #[error("cannot write {what} as YAML: {message}")]
    Write {
        /// `Kind name` of the child.
        what: String,
        /// What the serialiser said.
        message: String,
    },
}

impl From<Error> for CliError {
    fn from(error: Error) -> Self {
        match error {
            Error::Read(_) | Error::Build(_) => CliError::input(error),
            Error::Write { .. } => CliError::failure(error),
        }
    }
}

/// The YAML `render` prints for `documents`.
pub fn render(documents: Vec<Document>) -> Result<String, Error> {
    // Two definitions of one region or backend would render two sets of children.
    manifest::ensure_unique(&documents)?;
    let resources = manifest::classify(documents)?;
    let children = offline_children(&resources.regions, &resources.backends, &resources.policies)?;
    let mut out = Vec::with_capacity(children.len());
    for child in &children {
        let write_error = |message: String| Error::Write {
            what: child.describe(),
            message,
        };
        let json = child.to_json().map_err(|e| write_error(e.to_string()))?;
        let yaml = serde_yaml_ng::to_string(&json).map_err(|e| write_error(e.to_string()))?;
        out.push(yaml);
    }
    Ok(out.join("---\n"))
}

/// Reads `--filename` and prints what the operator would create.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let documents = manifest::read_paths(&args.paths).map_err(Error::from)?;
    print!("{}", render(documents)?);
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGION: &str = "apiVersion: sovereign.ai/v1alpha1\nkind: SovereignRegion\nmetadata: {name: eu}\nspec:\n  jurisdiction: EU\n  locations: [europe-west9]\n";

    fn docs(text: &str) -> Vec<Document> {
        manifest::parse("in.yaml", text).expect("parses")
    }

    #[test]
    fn a_region_renders_its_stack_namespace_first() {
        let yaml = render(docs(REGION)).expect("renders");
        assert!(
            yaml.starts_with("apiVersion: v1\nkind: Namespace\n"),
            "{yaml}"
        );
        assert!(yaml.contains("- europe-west9\n"), "{yaml}");
    }

    #[test]
    fn a_region_the_api_server_would_refuse_exits_2_naming_the_field() {
        let text = REGION
            .replace("EU", "Europe")
            .replace("[europe-west9]", "[]");
        let error = CliError::from(render(docs(&text)).expect_err("refused"));
        assert_eq!(error.code, 2);
        assert!(
            error
                .message
                .contains("spec.locations: Invalid value: locations must list at least one"),
            "{error}"
        );
        assert!(error.message.contains("spec.jurisdiction: "), "{error}");
    }

    #[test]
    fn two_definitions_of_a_region_exit_2() {
        let error =
            CliError::from(render(docs(&format!("{REGION}---\n{REGION}"))).expect_err("duplicate"));
        assert_eq!(error.code, 2);
        assert!(error.message.contains("is defined twice"), "{error}");
    }
}
