//! Every document of `deploy/examples/eu-india/` parses into the Rust types and serialises back
//! without losing or inventing anything the file says: an unknown or misspelt field fails here.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sovereign_operator::api::{InferenceBackend, ResidencyPolicy, SovereignRegion, TokenBudget};

fn example_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/eu-india");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every path in `input` is present in `output` with the same value; returns the ones that are
/// not. `output` may add defaults the file left out.
fn missing(path: &str, input: &Value, output: &Value, out: &mut Vec<String>) {
    match (input, output) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, value) in a {
                match b.get(key) {
                    Some(other) => missing(&format!("{path}.{key}"), value, other, out),
                    None => out.push(format!("{path}.{key} was dropped")),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                missing(&format!("{path}[{i}]"), x, y, out);
            }
        }
        (a, b) if a == b => {}
        (a, b) => out.push(format!("{path}: {a} became {b}")),
    }
}

fn round_trip<K: Serialize + DeserializeOwned>(document: &Value) -> Vec<String> {
    let typed: K = serde_json::from_value(document.clone()).expect("document parses");
    let back = serde_json::to_value(&typed).expect("object serialises");
    let mut problems = Vec::new();
    missing("", document, &back, &mut problems);
    problems
}

#[test]
fn every_example_document_round_trips() {
    let mut kinds = Vec::new();
    for file in example_files() {
        let text = std::fs::read_to_string(&file).expect("readable example");
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = Value::deserialize_from(document, &file);
            let kind = value["kind"].as_str().unwrap_or_default().to_owned();
            let problems = match kind.as_str() {
                "SovereignRegion" => round_trip::<SovereignRegion>(&value),
                "InferenceBackend" => round_trip::<InferenceBackend>(&value),
                "ResidencyPolicy" => round_trip::<ResidencyPolicy>(&value),
                "TokenBudget" => round_trip::<TokenBudget>(&value),
                "Namespace" => Vec::new(),
                other => panic!("{}: unexpected kind {other:?}", file.display()),
            };
            assert!(
                problems.is_empty(),
                "{}: {kind}: {problems:#?}",
                file.display()
            );
            kinds.push(kind);
        }
    }
    let count = |k: &str| kinds.iter().filter(|x| *x == k).count();
    assert_eq!(count("SovereignRegion"), 2, "regions eu and in");
    assert_eq!(count("InferenceBackend"), 7, "4 EU + 3 India backends");
    assert_eq!(count("ResidencyPolicy"), 2);
    assert_eq!(count("TokenBudget"), 2);
}

#[test]
fn round_trip_catches_unknown_fields() {
    let document = serde_json::json!({
        "apiVersion": "sovereign.ai/v1alpha1", "kind": "TokenBudget",
        "metadata": {"name": "x", "namespace": "y"},
        "spec": {"limit": {"tokens": 10}, "perod": "Daily"}
    });
    let problems = round_trip::<TokenBudget>(&document);
    assert_eq!(problems, vec![".spec.perod was dropped".to_owned()]);
}

/// Deserialises one YAML document into JSON, naming the file on error.
trait FromYamlDocument {
    fn deserialize_from(document: serde_yaml_ng::Deserializer<'_>, file: &Path) -> Value;
}

impl FromYamlDocument for Value {
    fn deserialize_from(document: serde_yaml_ng::Deserializer<'_>, file: &Path) -> Value {
        use serde::Deserialize;
        Value::deserialize(document).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
    }
}
