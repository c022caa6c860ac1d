//! Reading Kubernetes manifests from files, directories and stdin: multi-document YAML and JSON,
//! with errors that name the file and line. Shared by `render` (and the offline check).

use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::api::{InferenceBackend, ResidencyPolicy, SovereignRegion, TokenBudget};

/// Input that cannot be used. The CLI exits with code 2 on these.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A document is not valid YAML / JSON.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file (`-` for stdin).
        path: String,
        /// 1-based line of the problem (1 when unknown).
        line: usize,
        /// What the parser said.
        message: String,
    },
    /// A document has a known kind but does not fit its schema.
    #[error("{path}: {kind} {name}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The kind.
        kind: String,
        /// metadata.name.
        name: String,
        /// What is wrong.
        message: String,
    },
}

/// One document with where it came from.
#[derive(Clone, Debug)]
pub struct Document {
    /// The file it was read from (`-` for stdin).
    pub path: String,
    /// The document.
    pub value: serde_json::Value,
}

/// Reads every document of `paths`: files, directories (recursively, `.yaml`, `.yml` and
/// `.json` files in name order) and `-` for stdin.
pub fn read_paths(paths: &[PathBuf]) -> Result<Vec<Document>, ManifestError> {
    let mut documents = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|source| ManifestError::Read {
                    path: "-".into(),
                    source,
                })?;
            documents.extend(parse("-", &text)?);
        } else {
            read_path(path, &mut documents)?;
        }
    }
    Ok(documents)
}

fn read_path(path: &Path, documents: &mut Vec<Document>) -> Result<(), ManifestError> {
    let display = path.display().to_string();
    let metadata = std::fs::metadata(path).map_err(|source| ManifestError::Read {
        path: display.clone(),
        source,
    })?;
    if metadata.is_dir() {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| ManifestError::Read {
                path: display.clone(),
                source,
            })?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()
            .map_err(|source| ManifestError::Read {
                path: display.clone(),
                source,
            })?;
        entries.sort();
        for entry in entries {
            let is_manifest = entry
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json");
            if entry.is_dir() || is_manifest {
                read_path(&entry, documents)?;
            }
        }
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|source| ManifestError::Read {
        path: display.clone(),
        source,
    })?;
    documents.extend(parse(&display, &text)?);
    Ok(())
}

/// The documents of one file. JSON is YAML, so one parser reads both; a JSON `List` (as
/// `kubectl get -o json` prints) is flattened into its items.
pub fn parse(path: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    // JSON is read by serde_json when it parses as such: the YAML parser reads it too, but
    // several times slower (a `kubectl get -o json` dump of 100,000 objects took seconds).
    // Anything else, malformed JSON included, goes through the YAML parser, which names the
    // line of an error.
    let mut values = Vec::new();
    let json = text
        .trim_start()
        .starts_with(['{', '['])
        .then(|| {
            serde_json::Deserializer::from_str(text)
                .into_iter()
                .collect::<Result<Vec<serde_json::Value>, _>>()
                .ok()
        })
        .flatten();
    match json {
        Some(v) => values = v,
        None => {
            for document in serde_yaml_ng::Deserializer::from_str(text) {
                values.push(serde_json::Value::deserialize(document).map_err(|e| {
                    ManifestError::Parse {
                        path: path.to_owned(),
                        line: e.location().map(|l| l.line()).unwrap_or(1),
                        message: e.to_string(),
                    }
                })?);
            }
        }
    }
    let mut documents = Vec::new();
    for value in values {
        match value {
            serde_json::Value::Null => {}
            serde_json::Value::Object(mut map) if map.get("kind").is_some_and(|k| k == "List") => {
                if let Some(serde_json::Value::Array(items)) = map.remove("items") {
                    for value in items {
                        documents.push(Document {
                            path: path.to_owned(),
                            value,
                        });
                    }
                }
            }
            value => documents.push(Document {
                path: path.to_owned(),
                value,
            }),
        }
    }
    Ok(documents)
}

/// The custom resources among some documents, typed; everything else is kept as is.
#[derive(Debug, Default)]
pub struct Resources {
    /// SovereignRegions.
    pub regions: Vec<SovereignRegion>,
    /// InferenceBackends.
    pub backends: Vec<InferenceBackend>,
    /// ResidencyPolicies.
    pub policies: Vec<ResidencyPolicy>,
    /// TokenBudgets.
    pub budgets: Vec<TokenBudget>,
    /// Every other document.
    pub others: Vec<Document>,
}

fn typed<K: DeserializeOwned>(document: &Document) -> Result<K, ManifestError> {
    serde_json::from_value(document.value.clone()).map_err(|e| ManifestError::Invalid {
        path: document.path.clone(),
        kind: document.value["kind"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        name: document.value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        message: e.to_string(),
    })
}

/// Sorts documents into the four kinds of `sovereign.ai` and the rest.
pub fn classify(documents: Vec<Document>) -> Result<Resources, ManifestError> {
    let mut resources = Resources::default();
    for document in documents {
        let ours = document.value["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("sovereign.ai/"));
        match (ours, document.value["kind"].as_str()) {
            (true, Some("SovereignRegion")) => resources.regions.push(typed(&document)?),
            (true, Some("InferenceBackend")) => resources.backends.push(typed(&document)?),
            (true, Some("ResidencyPolicy")) => resources.policies.push(typed(&document)?),
            (true, Some("TokenBudget")) => resources.budgets.push(typed(&document)?),
            _ => resources.others.push(document),
        }
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multi_document_yaml_json_and_lists() {
        let text = "a: 1\n---\n{\"kind\": \"List\", \"items\": [{\"b\": 2}, {\"c\": 3}]}\n---\n";
        let documents = parse("x.yaml", text).expect("parses");
        assert_eq!(documents.len(), 3);
        assert_eq!(documents[2].value["c"], 3);
    }

    #[test]
    fn malformed_yaml_names_file_and_line() {
        let error = parse("bad.yaml", "a: 1\nb: [unclosed\n").expect_err("malformed");
        let text = error.to_string();
        assert!(text.starts_with("bad.yaml:"), "{text}");
        assert!(
            matches!(error, ManifestError::Parse { line, .. } if line >= 2),
            "{text}"
        );
    }

    #[test]
    fn unreadable_path_is_named() {
        let error = read_paths(&[PathBuf::from("/nonexistent/file.yaml")]).expect_err("missing");
        assert!(error.to_string().starts_with("/nonexistent/file.yaml:"));
    }

    #[test]
    fn a_typo_in_a_known_kind_is_invalid_not_ignored() {
        let documents = parse(
            "b.yaml",
            "apiVersion: sovereign.ai/v1alpha1\nkind: TokenBudget\nmetadata: {name: x}\nspec: {limit: {tokens: \"many\"}}\n",
        )
        .expect("parses");
        let error = classify(documents).expect_err("invalid");
        assert!(error.to_string().contains("TokenBudget x"), "{error}");
    }
}
