//! `crds/` must be exactly what `sovereign-operator crds` generates: a stale file fails here
//! (regenerate with `make crds`). The Helm chart and the kustomize base carry copies (neither
//! tool reads files outside its own directory); they must be identical too.

use std::collections::BTreeSet;
use std::path::Path;

use sovereign_operator::api::{all_crds, crd_file_name, crd_yaml};

/// Where the CRDs live: the source of truth and its copies.
const CRD_DIRS: [&str; 3] = [
    "crds",
    "charts/sovereign-operator/crds",
    "deploy/kustomize/base/crds",
];

#[test]
fn crds_directory_matches_generated_output() {
    for dir in CRD_DIRS {
        check_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join(dir));
    }
}

fn check_dir(dir: &Path) {
    let mut expected_files = BTreeSet::new();
    for crd in all_crds() {
        let file = crd_file_name(&crd);
        let generated = crd_yaml(&crd).expect("CRD serialises");
        let path = dir.join(&file);
        let committed = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        assert!(
            committed == generated,
            "{} is stale: run `make crds`",
            path.display()
        );
        expected_files.insert(file);
    }
    let present: BTreeSet<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("readable entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(
        present,
        expected_files,
        "{} holds files no kind generates",
        dir.display()
    );
}

#[test]
fn schemas_are_structural() {
    // The API server refuses schemas with untyped nodes or schema combinators at the top of a
    // property; check every node of every schema carries a type (or preserves unknown fields).
    fn walk(path: &str, node: &serde_json::Value, problems: &mut Vec<String>) {
        let Some(map) = node.as_object() else { return };
        let typed = map.contains_key("type")
            || map.get("x-kubernetes-preserve-unknown-fields")
                == Some(&serde_json::Value::Bool(true))
            || map.get("x-kubernetes-int-or-string") == Some(&serde_json::Value::Bool(true));
        if !typed {
            problems.push(format!("{path}: no type"));
        }
        for forbidden in ["$ref", "additionalItems", "definitions", "$defs"] {
            if map.contains_key(forbidden) {
                problems.push(format!("{path}: {forbidden} is not allowed"));
            }
        }
        if let Some(props) = map.get("properties").and_then(|p| p.as_object()) {
            for (name, child) in props {
                walk(&format!("{path}.{name}"), child, problems);
            }
        }
        if let Some(items) = map.get("items") {
            walk(&format!("{path}[]"), items, problems);
        }
        if let Some(values) = map.get("additionalProperties").filter(|v| v.is_object()) {
            walk(&format!("{path}{{}}"), values, problems);
        }
    }
    let mut problems = Vec::new();
    for crd in all_crds() {
        for version in &crd.spec.versions {
            let schema = version
                .schema
                .as_ref()
                .and_then(|s| s.open_api_v3_schema.as_ref())
                .expect("schema present");
            let json = serde_json::to_value(schema).expect("schema is JSON");
            walk(&crd.spec.names.kind, &json, &mut problems);
        }
    }
    assert!(
        problems.is_empty(),
        "non-structural schema nodes: {problems:#?}"
    );
}
