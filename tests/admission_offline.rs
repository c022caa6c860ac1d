//! The generated ValidatingAdmissionPolicies, evaluated offline with kube's CEL engine, give the
//! offline rule engine's verdict on every corpus object admission judges (see
//! `tests/support/admission.rs` for which and why). The e2e `admission` test holds a real API
//! server to the same answers.

#[path = "support/admission.rs"]
mod admission;

use std::collections::BTreeSet;

use admission::{ParitySet, describe, mismatch_table};
use sovereign_operator::residency::admission::{compile, evaluate_offline};

#[test]
fn generated_cel_gives_the_engines_verdict_on_the_corpus() {
    let set = ParitySet::load();
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
    for object in &set.objects {
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
        mismatches.is_empty(),
        "{} of {} objects differ:\n{}",
        mismatches.len(),
        set.objects.len(),
        mismatch_table(&mismatches)
    );
    assert!(
        denied >= 10,
        "only {denied} objects denied: the corpus lost its teeth"
    );
}
