//! The generated ValidatingAdmissionPolicies, evaluated offline with kube's CEL engine, give the
//! offline rule engine's verdict on every corpus object admission judges (see
//! `tests/support/admission.rs` for which and why). The e2e `admission` test holds a real API
//! server to the same answers.

#[path = "support/admission.rs"]
mod admission;

use std::collections::BTreeSet;

use admission::{ParitySet, describe, evaluate_offline, evaluate_offline_update, mismatch_table};
use serde_json::{Value, json};
use sovereign_operator::api::labels::{DATA_CLASS, REGION};
use sovereign_operator::api::policy::{ResidencyKind, ResidencyPolicy};
use sovereign_operator::api::region::SovereignRegion;
use sovereign_operator::manifest;
use sovereign_operator::residency::admission::{AdmissionObjects, compile};

#[test]
fn generated_cel_gives_the_engines_verdict_on_the_corpus() {
    let denied = compare(ParitySet::load());
    assert!(
        denied >= 10,
        "only {denied} objects denied: the corpus lost its teeth"
    );
}

/// A change to a policy.
type Variant = fn(&mut ResidencyPolicy);

/// Every policy with one change, so that each branch of the generated CEL (rules off, the
/// fail-closed path without dataLocation, AllowedJurisdictions, no exemptions) meets the engine.
#[test]
fn policy_variants_keep_parity() {
    let variants: Vec<(&str, Variant)> = vec![
        ("dataLocation off", |p| p.spec.rules.data_location = false),
        ("pinWorkloads off", |p| p.spec.rules.pin_workloads = false),
        ("pinStorage off", |p| p.spec.rules.pin_storage = false),
        ("no exemptions", |p| p.spec.exempt_namespaces.clear()),
        ("allowed EU and IN", |p| {
            p.spec.residency.kind = ResidencyKind::AllowedJurisdictions;
            p.spec.residency.allowed_jurisdictions = vec!["EU".into(), "IN".into()];
        }),
        ("allowed FR only", |p| {
            p.spec.residency.kind = ResidencyKind::AllowedJurisdictions;
            p.spec.residency.allowed_jurisdictions = vec!["FR".into()];
        }),
        ("home region, dataLocation off", |p| {
            p.spec.residency.kind = ResidencyKind::HomeRegion;
            p.spec.rules.data_location = false;
        }),
    ];
    for (name, variant) in variants {
        let set = ParitySet::load_with(|policies| policies.iter_mut().for_each(variant));
        eprintln!("{name}: {} objects denied", compare(set));
    }
}

/// Compares every object of `set`; returns how many admission denies or warns about.
fn compare(set: ParitySet) -> usize {
    let compiled: Vec<_> = set
        .policies
        .iter()
        .map(|p| compile(p, &set.regions).expect("compiles"))
        .collect();
    assert!(
        set.objects.len() >= 40,
        "only {} objects",
        set.objects.len()
    );
    let mut mismatches = Vec::new();
    let mut denied = 0;
    for object in set.objects.iter().chain(&set.offline_only) {
        let expected = set.engine_verdict(object);
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .and_then(|ns| set.namespaces.get(ns));
        let mut got = BTreeSet::new();
        let mut messages = Vec::new();
        for (policy, objects) in set.policies.iter().zip(&compiled) {
            let verdict = evaluate_offline(objects, object, namespace)
                .unwrap_or_else(|e| panic!("{}: {e}", describe(object)));
            if let Some(failures) = verdict
                && !failures.is_empty()
            {
                got.insert(policy.metadata.name.clone().unwrap());
                messages.extend(failures);
            }
        }
        if !got.is_empty() {
            denied += 1;
        }
        if got != expected {
            mismatches.push((describe(object), expected, got, messages.join("; ")));
        }
    }
    assert!(
        !set.offline_only.is_empty(),
        "no Rollouts: the third-party pod-template kinds lost their parity cases"
    );
    assert!(
        mismatches.is_empty(),
        "{} of {} objects differ:\n{}",
        mismatches.len(),
        set.objects.len() + set.offline_only.len(),
        mismatch_table(&mismatches)
    );
    denied
}

// The offline evaluator on single objects: messages, deletion and UPDATE ratcheting.

/// The regions and policies of the example.
fn example() -> (Vec<SovereignRegion>, Vec<ResidencyPolicy>) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/eu-india");
    let documents = manifest::read_paths(&[path]).expect("example");
    let resources = manifest::classify(documents).expect("typed");
    (resources.regions, resources.policies)
}

#[test]
fn objects_being_deleted_are_not_evaluated() {
    let (regions, policies) = example();
    let objects = compile(&policies[0], &regions).unwrap();
    let claim = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "sovereign-eu",
                     "labels": {DATA_CLASS: "pii"},
                     "deletionTimestamp": "2026-01-01T00:00:00Z",
                     "finalizers": ["kubernetes.io/pvc-protection"]},
        "spec": {"storageClassName": "gp3"}
    });
    assert_eq!(evaluate_offline(&objects, &claim, None).unwrap(), None);
}

#[test]
fn offline_messages_name_object_rule_and_fix() {
    let (regions, policies) = example();
    let objects = compile(&policies[0], &regions).unwrap();
    let claim = json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "sovereign-eu",
                     "labels": {DATA_CLASS: "pii"}},
        "spec": {"storageClassName": "gp3"}
    });
    let failures = evaluate_offline(&objects, &claim, None).unwrap().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0]
            .starts_with("PersistentVolumeClaim sovereign-eu/data: pinStorage (pii-home-region): "),
        "{failures:?}"
    );
    assert!(failures[0].contains("eu-regional-ssd"), "{failures:?}");
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "sovereign-eu", "labels": {DATA_CLASS: "pii"}},
        "spec": {"containers": []}
    });
    let failures = evaluate_offline(&objects, &pod, None).unwrap().unwrap();
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains("spec: pods may run outside europe-west9"),
        "{failures:?}"
    );
    let public = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "p", "namespace": "x", "labels": {DATA_CLASS: "public"}}});
    assert_eq!(evaluate_offline(&objects, &public, None).unwrap(), None);
}

/// A governed PVC in the EU stack namespace with storage class `class`.
fn claim(class: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": "data", "namespace": "sovereign-eu",
                     "labels": {DATA_CLASS: "pii"}, "annotations": annotations},
        "spec": {"storageClassName": class}
    })
}

/// Failures of an UPDATE from `old` to `new` under the example's pii policy.
fn update(objects: &AdmissionObjects, old: &Value, new: &Value) -> Vec<String> {
    evaluate_offline_update(objects, old, new, None)
        .unwrap()
        .expect("governed: evaluated")
}

#[test]
fn update_of_an_object_that_already_violated_is_allowed() {
    let (regions, policies) = example();
    let objects = compile(&policies[0], &regions).unwrap();
    let old = claim("gp3", json!({}));
    let annotated = claim("gp3", json!({"controller.example.com/seen": "true"}));
    assert_eq!(update(&objects, &old, &annotated), Vec::<String>::new());
    // CREATE of the same shape gets no grace.
    let created = evaluate_offline(&objects, &annotated, None)
        .unwrap()
        .unwrap();
    assert_eq!(created.len(), 1, "{created:?}");
    assert!(created[0].contains("pinStorage"), "{created:?}");
}

#[test]
fn update_that_makes_a_compliant_object_violate_is_denied() {
    let (regions, policies) = example();
    let objects = compile(&policies[0], &regions).unwrap();
    let failures = update(
        &objects,
        &claim("eu-regional-ssd", json!({})),
        &claim("gp3", json!({})),
    );
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0]
            .starts_with("PersistentVolumeClaim sovereign-eu/data: pinStorage (pii-home-region): "),
        "{failures:?}"
    );
    // Compliant before and after: nothing to say.
    let fine = claim("eu-regional-ssd", json!({}));
    assert_eq!(update(&objects, &fine, &fine), Vec::<String>::new());
}

#[test]
fn an_update_that_adds_the_governed_class_gets_no_grace() {
    let (regions, policies) = example();
    let objects = compile(&policies[0], &regions).unwrap();
    let mut ungoverned = claim("gp3", json!({}));
    ungoverned["metadata"]["labels"] = json!({});
    let failures = update(&objects, &ungoverned, &claim("gp3", json!({})));
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(failures[0].contains("pinStorage"), "{failures:?}");
}

#[test]
fn ratcheting_is_per_rule() {
    let (regions, policies) = example();
    let objects = compile(&policies[0], &regions).unwrap();
    // Unpinned (breaks pinWorkloads) but in its home region's namespace.
    let pod = |region: &str, annotations: Value| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "sovereign-eu",
                         "labels": {DATA_CLASS: "pii", REGION: region},
                         "annotations": annotations},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}
        })
    };
    let old = pod("eu", json!({}));
    assert_eq!(
        update(&objects, &old, &pod("eu", json!({"a": "b"}))),
        Vec::<String>::new()
    );
    // Relabelled to India: pinWorkloads still ratchets, but dataLocation is newly broken.
    let failures = update(&objects, &old, &pod("in", json!({})));
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains(": dataLocation (pii-home-region): "),
        "{failures:?}"
    );
}

#[test]
fn templates_and_allowed_jurisdictions_ratchet_too() {
    let (regions, _) = example();
    let policy: ResidencyPolicy = serde_json::from_value(json!({
        "apiVersion": "sovereign.ai/v1alpha1", "kind": "ResidencyPolicy",
        "metadata": {"name": "financial"},
        "spec": {"mode": "Enforce", "dataClasses": ["financial"],
                 "residency": {"kind": "AllowedJurisdictions", "allowedJurisdictions": ["EU"]}}
    }))
    .unwrap();
    let objects = compile(&policy, &regions).unwrap();
    let set = |replicas: u32, class: &str| {
        json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": "db", "namespace": "sovereign-eu"},
            "spec": {
                "replicas": replicas,
                "template": {"metadata": {"labels": {DATA_CLASS: "financial"}},
                             "spec": {"containers": [{"name": "db", "image": "db:1"}]}},
                "volumeClaimTemplates": [{"metadata": {"name": "data"},
                                          "spec": {"storageClassName": class}}]
            }
        })
    };
    // Unpinned and on gp3: two rules broken, both before and after a scale.
    let created = evaluate_offline(&objects, &set(1, "gp3"), None)
        .unwrap()
        .unwrap();
    assert_eq!(created.len(), 2, "{created:?}");
    assert_eq!(
        update(&objects, &set(1, "gp3"), &set(3, "gp3")),
        Vec::<String>::new()
    );
    // From the in-region class to gp3: pinStorage is new, pinWorkloads is not.
    let failures = update(&objects, &set(1, "eu-regional-ssd"), &set(1, "gp3"));
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert!(
        failures[0].contains("volumeClaimTemplates[data]"),
        "{failures:?}"
    );
}
