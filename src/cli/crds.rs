//! `sovereign-operator crds`: the CustomResourceDefinitions as multi-document YAML, or one file
//! per kind (what `crds/` holds, `make crds`).

use std::path::PathBuf;
use std::process::ExitCode;

use super::CliError;
use crate::api::{self, CrdError};

/// Flags of `crds`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Write one file per kind into this directory instead of printing.
    #[arg(long, value_name = "DIR")]
    pub out_dir: Option<PathBuf>,
}

/// Why `crds` failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A CRD cannot be written as YAML (a bug in a type's schema): exit 1.
    #[error(transparent)]
    Serialize(#[from] CrdError),
    /// The output directory cannot be written: exit 2.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

impl From<Error> for CliError {
    fn from(error: Error) -> Self {
        match error {
            Error::Serialize(_) => CliError::failure(error),
            Error::Write { .. } => CliError::input(error),
        }
    }
}

/// Every CRD as `(file name, YAML)`, in the order of [`api::all_crds`].
pub fn documents() -> Result<Vec<(String, String)>, Error> {
    api::all_crds()
        .iter()
        .map(|crd| Ok((api::crd_file_name(crd), api::crd_yaml(crd)?)))
        .collect()
}

/// Prints the CRDs, or writes them into `--out-dir`.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let documents = documents()?;
    match &args.out_dir {
        Some(dir) => {
            for (name, yaml) in &documents {
                let path = dir.join(name);
                std::fs::write(&path, yaml).map_err(|source| Error::Write {
                    path: path.display().to_string(),
                    source,
                })?;
            }
        }
        None => {
            let yaml: Vec<&str> = documents.iter().map(|(_, yaml)| yaml.as_str()).collect();
            print!("{}", yaml.join("---\n"));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_document_per_kind_named_for_its_crd() {
        let documents = documents().expect("serialises");
        let names: Vec<&str> = documents.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "sovereignregions.sovereign.ai.yaml",
                "inferencebackends.sovereign.ai.yaml",
                "residencypolicies.sovereign.ai.yaml",
                "tokenbudgets.sovereign.ai.yaml",
            ]
        );
        assert!(documents[0].1.contains("kind: CustomResourceDefinition"));
    }

    #[test]
    fn an_unwritable_directory_exits_2_naming_the_file() {
        let error = run(Args {
            out_dir: Some(PathBuf::from("/nonexistent/dir")),
        })
        .expect_err("cannot write");
        assert_eq!(error.code, 2);
        assert!(
            error.message.starts_with("cannot write /nonexistent/dir/"),
            "{error}"
        );
    }
}
