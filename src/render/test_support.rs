//! Loading the EU/India example for unit tests of the builders.

use std::path::Path;

use serde::Deserialize;

use crate::api::backend::InferenceBackend;
use crate::api::region::SovereignRegion;

/// Every document of the example whose `kind` is `kind`.
pub fn example_documents(kind: &str) -> Vec<serde_json::Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/eu-india");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("example directory")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(document).expect("valid YAML");
            if value["kind"] == kind {
                documents.push(value);
            }
        }
    }
    documents
}

/// The example region `name`.
pub fn example_region(name: &str) -> SovereignRegion {
    example_documents("SovereignRegion")
        .into_iter()
        .map(|v| serde_json::from_value::<SovereignRegion>(v).expect("region"))
        .find(|r| r.metadata.name.as_deref() == Some(name))
        .expect("region in example")
}

/// The example backends of `region`.
pub fn example_backends(region: &SovereignRegion) -> Vec<InferenceBackend> {
    example_documents("InferenceBackend")
        .into_iter()
        .map(|v| serde_json::from_value::<InferenceBackend>(v).expect("backend"))
        .filter(|b| Some(&b.spec.region) == region.metadata.name.as_ref())
        .collect()
}
