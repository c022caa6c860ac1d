//! Admission parity on a real API server: the ValidatingAdmissionPolicies compiled from the
//! example's and the corpus's ResidencyPolicies (`residency::admission::compile`) give, for
//! every corpus object admission judges, the verdict of the offline engine — denied by the same
//! Enforce policies, warned about by the same Audit policies. Four rounds: the policies as
//! declared, then variants (dataLocation off; no exemptions and pinWorkloads off;
//! AllowedJurisdictions EU + IN) that take the other branches of the generated CEL. Which
//! objects are compared and which are left to the audit is decided in
//! `tests/support/admission.rs`.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sovereign_operator::api::policy::{PolicyMode, ResidencyKind, ResidencyPolicy};
use sovereign_operator::residency::admission::{compile, evaluate_offline, object_name};

use crate::admission_support::{ParitySet, describe, mismatch_table};
use crate::harness::{PATIENCE, apply, client, ensure_namespace, install_example, kubectl};

/// What the API server said to a server-side dry-run create.
#[derive(Debug)]
struct Verdict {
    /// Policies (ResidencyPolicy names) that denied or warned.
    policies: BTreeSet<String>,
    /// The object was refused.
    refused: bool,
    /// kubectl's stderr (errors and warnings).
    output: String,
}

/// `kubectl create --dry-run=server` of `object`; warnings and errors come back on stderr.
fn dry_run(object: &Value, policies: &[String]) -> Verdict {
    let file = std::env::temp_dir().join(format!(
        "sovereign-e2e-admission-{}-{}.json",
        std::process::id(),
        file_suffix(object)
    ));
    std::fs::write(&file, serde_json::to_vec(object).expect("json")).expect("writable temp file");
    let cache = std::env::temp_dir().join(format!("sovereign-e2e-kubectl-{}", std::process::id()));
    let output = Command::new("kubectl")
        .arg("--cache-dir")
        .arg(&cache)
        .args(["create", "--dry-run=server", "-o", "name", "-f"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("cannot run kubectl (is it on PATH?): {e}"));
    let _ = std::fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let policies = policies
        .iter()
        .filter(|p| stderr.contains(&format!("ValidatingAdmissionPolicy '{}'", object_name(p))))
        .cloned()
        .collect();
    Verdict {
        policies,
        refused: !output.status.success(),
        output: stderr.trim().to_owned(),
    }
}

fn file_suffix(object: &Value) -> String {
    describe(object).replace(['/', ' '], "-")
}

#[tokio::test]
async fn admission_gives_the_engines_verdict_on_the_corpus() {
    let _exclusive = crate::harness::ADMISSION_LOCK.lock().await;
    install_example().await;
    let client = client().await;
    // Policies the operator installed in an earlier test would judge this test's objects too.
    crate::harness::remove_admission_policies(&client).await;
    let set = ParitySet::load();
    // The corpus's namespaces, with their labels, and any other namespace an object names.
    for namespace in set.namespaces.values() {
        apply(&client, namespace)
            .await
            .unwrap_or_else(|e| panic!("namespace {namespace}: {e}"));
    }
    let named: BTreeSet<&str> = set
        .objects
        .iter()
        .filter_map(|o| o["metadata"]["namespace"].as_str())
        .collect();
    for namespace in named {
        if !set.namespaces.contains_key(namespace) {
            ensure_namespace(&client, namespace).await;
        }
    }
    let mut report = Vec::new();
    for (round, (label, variant)) in variants().into_iter().enumerate() {
        // Each round under its own policy names, so that a policy of the previous round still
        // in the API server's cache cannot be mistaken for this one's.
        let mut set = ParitySet::load_with(|policies| {
            for policy in policies.iter_mut() {
                variant(policy);
                let name = policy.metadata.name.clone().expect("named policy");
                policy.metadata.name = Some(format!("{name}-r{round}"));
            }
        });
        set.objects.iter_mut().for_each(restricted);
        let (compared, denied, warned) = parity_round(&client, &set, label).await;
        report.push(format!(
            "{label}: {compared} compared, {denied} denied, {warned} warned"
        ));
        assert!(compared >= 40, "{label}: only {compared} objects compared");
        if round == 0 {
            assert!(
                denied >= 10 && warned >= 1,
                "denied {denied}, warned {warned}"
            );
        }
    }
    eprintln!(
        "admission parity ({} corpus objects skipped as audit-only or cross-object):\n{}",
        set.skipped.len(),
        report.join("\n")
    );
}

/// A Pod made to pass Pod Security `restricted`, which the operator sets on the region
/// namespaces: otherwise, once another test has provisioned the example, the API server
/// refuses the corpus Pods before any ValidatingAdmissionPolicy sees them. Residency rules do
/// not read security contexts, and the engine judges the same hardened object.
fn restricted(object: &mut Value) {
    if object["kind"] != "Pod" {
        return;
    }
    let spec = &mut object["spec"];
    spec["securityContext"] = serde_json::json!({
        "runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}
    });
    if let Some(containers) = spec["containers"].as_array_mut() {
        for container in containers {
            container["securityContext"] = serde_json::json!({
                "allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}
            });
        }
    }
}

/// A change to every policy of a round.
type Variant = fn(&mut ResidencyPolicy);

/// The policies as declared, then variants that take the other branches of the generated CEL.
fn variants() -> Vec<(&'static str, Variant)> {
    vec![
        ("as declared", |_| {}),
        ("dataLocation off", |p| p.spec.rules.data_location = false),
        ("no exemptions, pinWorkloads off", |p| {
            p.spec.exempt_namespaces.clear();
            p.spec.rules.pin_workloads = false;
        }),
        ("allowed EU and IN", |p| {
            p.spec.residency.kind = ResidencyKind::AllowedJurisdictions;
            p.spec.residency.allowed_jurisdictions = vec!["EU".into(), "IN".into()];
        }),
    ]
}

/// Installs the policies of `set`, compares every object, removes the policies again; returns
/// (objects compared, denied, warned). Panics with the table of mismatches.
async fn parity_round(
    client: &kube::Client,
    set: &ParitySet,
    label: &str,
) -> (usize, usize, usize) {
    let names: Vec<String> = set
        .policies
        .iter()
        .map(|p| p.metadata.name.clone().expect("named policy"))
        .collect();
    let mut compiled = Vec::new();
    for policy in &set.policies {
        let objects = compile(policy, &set.regions).expect("the policy compiles");
        compiled.push(objects.clone());
        for document in objects.to_json().expect("serializes") {
            apply(client, &document)
                .await
                .unwrap_or_else(|e| panic!("the API server refused {}: {e}", describe(&document)));
        }
    }

    // Propagation: every policy is live once an object the engine finds against it is caught.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for name in &names {
        let probe = &probe(set, name);
        assert!(
            set.engine_verdict(probe).contains(name),
            "the probe does not break {name}"
        );
        loop {
            let verdict = dry_run(probe, &names);
            if verdict.policies.contains(name) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{label}: policy {name} never became active; last answer to {}: {verdict:?}",
                describe(probe)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    let modes: std::collections::BTreeMap<&str, PolicyMode> = set
        .policies
        .iter()
        .map(|p| (p.metadata.name.as_deref().unwrap(), p.spec.mode))
        .collect();
    let mut mismatches = Vec::new();
    let mut denied = 0;
    let mut warned = 0;
    for object in &set.objects {
        let expected = set.engine_verdict(object);
        let verdict = dry_run(object, &names);
        let must_refuse = expected
            .iter()
            .any(|p| modes[p.as_str()] == PolicyMode::Enforce);
        let mut problem = String::new();
        if verdict.refused != must_refuse {
            problem = format!("refused={} (expected {must_refuse})", verdict.refused);
        }
        if verdict.refused {
            denied += 1;
        }
        if !verdict.refused && !verdict.policies.is_empty() {
            warned += 1;
        }
        // The API server's messages are the ones kube's CEL engine computes offline (a
        // messageExpression the server could not evaluate would show its static fallback).
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .and_then(|ns| set.namespaces.get(ns));
        for objects in &compiled {
            let offline = evaluate_offline(objects, object, namespace)
                .unwrap_or_else(|e| panic!("{}: {e}", describe(object)));
            // A denial reports the first failing validation only.
            for message in offline.into_iter().flatten().take(1) {
                if !verdict.output.contains(&message) {
                    problem.push_str(&format!(" missing message {message:?};"));
                }
            }
        }
        if verdict.policies != expected || !problem.is_empty() {
            mismatches.push((
                describe(object),
                expected,
                verdict.policies,
                format!("{problem} {}", verdict.output),
            ));
        }
    }
    // Leave no cluster-wide admission behind for the next round and the other tests, and wait
    // until the API server has forgotten it.
    for name in &names {
        let object = object_name(name);
        kubectl(&[
            "delete",
            "--ignore-not-found",
            &format!("validatingadmissionpolicybinding/{object}"),
            &format!("validatingadmissionpolicy/{object}"),
        ]);
    }
    let deadline = tokio::time::Instant::now() + PATIENCE;
    for name in &names {
        let probe = probe(set, name);
        loop {
            let verdict = dry_run(&probe, &names);
            if !verdict.refused && verdict.policies.is_empty() {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{label}: policy {name} is still active after deletion: {verdict:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    assert!(
        mismatches.is_empty(),
        "{label}: {} of {} objects differ between the API server and the engine:\n{}",
        mismatches.len(),
        set.objects.len(),
        mismatch_table(&mismatches)
    );
    (set.objects.len(), denied, warned)
}

/// A governed, unpinned Pod in a namespace of no region: every variant denies it (no home
/// region for dataLocation; with dataLocation off, pinWorkloads cannot be checked).
fn probe(set: &ParitySet, name: &str) -> Value {
    let policy = set
        .policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some(name))
        .expect("policy");
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "admission-probe", "namespace": "team-unlabelled",
                     "labels": {"sovereign.ai/data-class": policy.spec.data_classes[0]}},
        "spec": {"containers": [{"name": "app", "image": "registry.example.com/app:1.0"}]},
    })
}
