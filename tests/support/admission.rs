//! The admission parity set, shared by the offline parity test (`tests/admission_offline.rs`)
//! and the e2e (`e2e/tests/admission.rs`): the residency corpus objects that admission judges,
//! and the offline engine's verdict on each, restricted to the rules admission carries.
//!
//! Compared: every corpus object of a kind the generated ValidatingAdmissionPolicies match
//! (`residency::kinds::admitted()`, the same table the compiler reads) that has a namespace and
//! no `sovereign.ai/expect-context: input`, on the rules admission carries
//! (`residency::rules::admitted()`). Skipped: Namespaces, ResidencyPolicies, SovereignRegions
//! (cluster-scoped; `observabilityInRegion` is audit-only), PersistentVolumes (cluster-scoped,
//! home from their claim), the replication kinds (`forbidCrossBorderReplication` is
//! audit-only) and pod-template kinds outside the table. For InferenceBackends only
//! `dataLocation` is compared (`inferenceHosting` is audit-only). Objects of admitted kinds
//! from third-party CRDs (Argo Rollouts) are in [`ParitySet::offline_only`]: the e2e API
//! server does not serve them, the offline parity test compares them too.

#![allow(dead_code)] // each test target uses a different part

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_json::Value;
use sovereign_operator::api::{ResidencyPolicy, SovereignRegion};
use sovereign_operator::manifest::{self, Document};
use sovereign_operator::residency::{Engine, Inventory, Rule, kinds, rules};

/// Whether the generated policies match (`group`, `kind`).
pub fn admitted(group: &str, kind: &str) -> bool {
    kinds::admitted().any(|k| k.group == group && k.kind == kind)
}

/// Whether the e2e API server serves the group (built-in or ours, no third-party CRDs).
fn served_by_e2e(group: &str) -> bool {
    matches!(group, "" | "apps" | "batch" | "sovereign.ai")
}

/// Rules admission carries.
pub fn admission_rules() -> Vec<Rule> {
    rules::admitted().collect()
}

fn read(relative: &str) -> Vec<Document> {
    let path: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    manifest::read_paths(&[path]).expect("readable manifests")
}

fn group(value: &Value) -> &str {
    value["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .rsplit_once('/')
        .map_or("", |(g, _)| g)
}

/// `Kind ns/name`.
pub fn describe(value: &Value) -> String {
    format!(
        "{} {}/{}",
        value["kind"].as_str().unwrap_or_default(),
        value["metadata"]["namespace"].as_str().unwrap_or_default(),
        value["metadata"]["name"].as_str().unwrap_or_default()
    )
}

/// The example and corpus, compiled for parity.
pub struct ParitySet {
    pub regions: Vec<SovereignRegion>,
    pub policies: Vec<ResidencyPolicy>,
    /// Every Namespace of the example and corpus, by name.
    pub namespaces: BTreeMap<String, Value>,
    /// The objects compared (offline and by the e2e).
    pub objects: Vec<Value>,
    /// Objects compared offline only: admitted kinds of CRDs the e2e API server lacks.
    pub offline_only: Vec<Value>,
    /// The corpus objects left out, with why.
    pub skipped: Vec<(String, &'static str)>,
    engine: Engine,
    context: Vec<Value>,
}

impl ParitySet {
    pub fn load() -> Self {
        Self::load_with(|_| {})
    }

    /// The set with the example's and corpus's policies changed by `adjust` (for variants:
    /// rules switched off, other residency kinds).
    pub fn load_with(adjust: impl FnOnce(&mut Vec<ResidencyPolicy>)) -> Self {
        let example = read("deploy/examples/eu-india");
        let corpus = read("tests/residency");
        let mut resources = manifest::classify(example.iter().chain(&corpus).cloned().collect())
            .expect("valid custom resources");
        adjust(&mut resources.policies);
        let engine = Engine::new(&resources.regions, &resources.policies);
        let namespaces: BTreeMap<String, Value> = example
            .iter()
            .chain(&corpus)
            .filter(|d| d.value["kind"] == "Namespace")
            .map(|d| {
                (
                    d.value["metadata"]["name"].as_str().unwrap().to_owned(),
                    d.value.clone(),
                )
            })
            .collect();
        let mut objects = Vec::new();
        let mut offline_only = Vec::new();
        let mut skipped = Vec::new();
        for document in &corpus {
            let value = &document.value;
            let kind = value["kind"].as_str().unwrap_or_default();
            let reason =
                if value["metadata"]["annotations"]["sovereign.ai/expect-context"] == "input" {
                    Some("its verdict needs another object (expect-context: input)")
                } else if !admitted(group(value), kind) {
                    Some("no admission rule for its kind (audit-only or cluster-scoped)")
                } else if value["metadata"]["namespace"].as_str().is_none() {
                    Some("no namespace")
                } else {
                    None
                };
            match reason {
                Some(reason) => skipped.push((describe(value), reason)),
                None if served_by_e2e(group(value)) => objects.push(value.clone()),
                None => offline_only.push(value.clone()),
            }
        }
        Self {
            regions: resources.regions,
            policies: resources.policies,
            context: namespaces.values().cloned().collect(),
            namespaces,
            objects,
            offline_only,
            skipped,
            engine,
        }
    }

    /// The policies whose admission rules the offline engine finds broken by `object`.
    pub fn engine_verdict(&self, object: &Value) -> BTreeSet<String> {
        let inventory = Inventory::of(self.context.iter());
        let evaluation = self.engine.evaluate_with(&inventory, [object]);
        assert!(evaluation.errors.is_empty(), "{:?}", evaluation.errors);
        evaluation
            .findings
            .into_iter()
            .filter(|f| f.rule.spec().admitted())
            .filter_map(|f| f.policy)
            .collect()
    }
}

/// A table of mismatches: object, engine verdict, admission verdict.
pub fn mismatch_table(rows: &[(String, BTreeSet<String>, BTreeSet<String>, String)]) -> String {
    let mut out = String::from("object | engine denies by | admission denies by | detail\n");
    for (object, engine, admission, detail) in rows {
        out.push_str(&format!(
            "{object} | {engine:?} | {admission:?} | {detail}\n"
        ));
    }
    out
}
