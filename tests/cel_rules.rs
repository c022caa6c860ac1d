//! Every CEL rule of the CRD schemas, evaluated without a cluster (kube's `cel` feature): the
//! corpus in `support/corpus.rs` has an accepted and a refused case per rule, and a refusal
//! must carry the message that names the field.

mod support;

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::Value;
use sovereign_operator::api::{InferenceBackend, ResidencyPolicy, SovereignRegion, TokenBudget};
use support::corpus::{Kind, cases};

/// The CRD's openAPIV3Schema as JSON.
fn schema(kind: Kind) -> Value {
    let crd = match kind {
        Kind::SovereignRegion => SovereignRegion::crd(),
        Kind::InferenceBackend => InferenceBackend::crd(),
        Kind::ResidencyPolicy => ResidencyPolicy::crd(),
        Kind::TokenBudget => TokenBudget::crd(),
    };
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("derived CRD has a schema");
    serde_json::to_value(schema).expect("schema is JSON")
}

#[test]
fn every_rule_accepts_and_refuses_as_the_corpus_says() {
    let validator = Validator::new();
    let mut failures = Vec::new();
    let cases = cases();
    for case in &cases {
        let errors: Vec<String> =
            match validator.validate(&schema(case.kind), &case.object, case.old.as_ref()) {
                Ok(()) => Vec::new(),
                Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
            };
        match case.expect {
            None if !errors.is_empty() => {
                failures.push(format!(
                    "{}: expected acceptance, got {errors:?}",
                    case.name
                ));
            }
            Some(expected) if !(errors.len() == 1 && errors[0].contains(expected)) => {
                failures.push(format!(
                    "{}: expected exactly one error containing {expected:?}, got {errors:?}",
                    case.name
                ));
            }
            _ => {}
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    let refused = cases.iter().filter(|c| c.expect.is_some()).count();
    assert!(refused >= 40, "the corpus shrank: {refused} refused cases");
}

#[test]
fn the_corpus_can_fail() {
    // A validator that accepted everything would pass the test above only if every case were
    // an acceptance; make sure a refused case really is refused.
    let case = cases()
        .into_iter()
        .find(|c| c.name.starts_with("budget_thresholds_ascending"))
        .expect("case exists");
    let result = Validator::new().validate(&schema(case.kind), &case.object, None);
    assert!(result.is_err());
}
