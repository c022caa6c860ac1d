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

use serde_json::{Value, json};
use sovereign_operator::api::{ResidencyPolicy, SovereignRegion};
use sovereign_operator::manifest::{self, Document};
use sovereign_operator::residency::admission::AdmissionObjects;
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

/// Offline evaluation of a compiled policy with kube's CEL engine (the functions the API server
/// has): whether `object` passes, and the messages of the validations it fails, so that the
/// tests hold the generated CEL to the engine without an API server (the e2e holds both to a
/// real one). Test code: it lives here, not in the library. `namespace` is the object's
/// Namespace (None: an unlabelled one).
pub fn evaluate_offline(
    objects: &AdmissionObjects,
    object: &Value,
    namespace: Option<&Value>,
) -> Result<Option<Vec<String>>, String> {
    evaluate_request(objects, None, object, namespace)
}

/// [`evaluate_offline`] for an UPDATE of `old` to `object` (ratcheting: a rule that `old`
/// already broke does not refuse the update).
pub fn evaluate_offline_update(
    objects: &AdmissionObjects,
    old: &Value,
    object: &Value,
    namespace: Option<&Value>,
) -> Result<Option<Vec<String>>, String> {
    evaluate_request(objects, Some(old), object, namespace)
}

/// A CREATE (`old` is None) or an UPDATE, evaluated as the API server would.
fn evaluate_request(
    objects: &AdmissionObjects,
    old: Option<&Value>,
    object: &Value,
    namespace: Option<&Value>,
) -> Result<Option<Vec<String>>, String> {
    use kube::core::cel::cel::objects::{Key, Map};
    use kube::core::cel::cel::{Program, Value as CelValue};
    use std::collections::HashMap;
    use std::sync::Arc;

    use sovereign_operator::residency::sinks::{functions, json_to_cel};

    let spec = objects
        .policy
        .spec
        .as_ref()
        .ok_or("the policy has no spec")?;
    let (group, version) = object["apiVersion"]
        .as_str()
        .unwrap_or_default()
        .rsplit_once('/')
        .unwrap_or(("", object["apiVersion"].as_str().unwrap_or_default()));
    let kind = object["kind"].as_str().unwrap_or_default();
    let ns = object["metadata"]["namespace"].as_str().unwrap_or_default();
    let request = json!({
        "operation": if old.is_some() { "UPDATE" } else { "CREATE" },
        "kind": {"group": group, "version": version, "kind": kind},
        "namespace": ns,
        "name": object["metadata"]["name"],
    });
    let namespace_object = namespace.cloned().unwrap_or_else(
        || json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
    );
    if !namespace_selected(spec, &namespace_object) {
        return Ok(None);
    }
    let mut ctx = functions();
    ctx.add_variable_from_value("object", json_to_cel(object));
    ctx.add_variable_from_value("oldObject", old.map_or(CelValue::Null, json_to_cel));
    ctx.add_variable_from_value("request", json_to_cel(&request));
    ctx.add_variable_from_value("namespaceObject", json_to_cel(&namespace_object));
    let run = |ctx: &kube::core::cel::cel::Context<'_>, expression: &str| {
        Program::compile(expression)
            .map_err(|e| format!("{expression}: {e}"))?
            .execute(ctx)
            .map_err(|e| format!("{expression}: {e}"))
    };
    for condition in spec.match_conditions.iter().flatten() {
        match run(&ctx, &condition.expression)? {
            CelValue::Bool(true) => {}
            CelValue::Bool(false) => return Ok(None),
            other => return Err(format!("matchCondition yielded {other:?}")),
        }
    }
    let mut values: HashMap<Key, CelValue> = HashMap::new();
    for variable in spec.variables.iter().flatten() {
        ctx.add_variable_from_value(
            "variables",
            CelValue::Map(Map {
                map: Arc::new(values.clone()),
            }),
        );
        // An error leaves the variable unbound; expressions that use it then fail, which the
        // API server (failurePolicy Fail) treats as a denial too.
        if let Ok(value) = run(&ctx, &variable.expression) {
            values.insert(Key::String(Arc::new(variable.name.clone())), value);
        }
    }
    ctx.add_variable_from_value(
        "variables",
        CelValue::Map(Map {
            map: Arc::new(values),
        }),
    );
    let mut failures = Vec::new();
    for validation in spec.validations.iter().flatten() {
        let passed = matches!(run(&ctx, &validation.expression), Ok(CelValue::Bool(true)));
        if !passed {
            let message = validation
                .message_expression
                .as_deref()
                .and_then(|m| match run(&ctx, m) {
                    Ok(CelValue::String(s)) => Some((*s).clone()),
                    _ => None,
                })
                .or_else(|| validation.message.clone())
                .unwrap_or_default();
            failures.push(message);
        }
    }
    Ok(Some(failures))
}

/// Whether the policy's `matchConstraints.namespaceSelector` selects `namespace` (with the
/// `kubernetes.io/metadata.name` label the API server sets on every Namespace).
fn namespace_selected(
    spec: &k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicySpec,
    namespace: &Value,
) -> bool {
    let Some(selector) = spec
        .match_constraints
        .as_ref()
        .and_then(|m| m.namespace_selector.as_ref())
    else {
        return true;
    };
    let mut labels: BTreeMap<String, String> =
        serde_json::from_value(namespace["metadata"]["labels"].clone()).unwrap_or_default();
    if let Some(name) = namespace["metadata"]["name"].as_str() {
        labels.insert("kubernetes.io/metadata.name".to_owned(), name.to_owned());
    }
    let by_labels = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = selector.match_expressions.iter().flatten().all(|e| {
        let value = labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => !value.is_some_and(|v| values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}
