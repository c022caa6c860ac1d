//! The generated ValidatingAdmissionPolicies, evaluated offline with kube's CEL engine, give the
//! offline rule engine's verdict on every corpus object admission judges (see
//! `tests/support/admission.rs` for which and why). The e2e `admission` test holds a real API
//! server to the same answers.

#[path = "support/admission.rs"]
mod admission;

use std::collections::BTreeSet;

use admission::{ParitySet, describe, mismatch_table};
use sovereign_operator::api::policy::{ResidencyKind, ResidencyPolicy};
use sovereign_operator::residency::admission::{compile, evaluate_offline};

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
