//! Admission parity on a real API server: the ValidatingAdmissionPolicies compiled from the
//! example's and the corpus's ResidencyPolicies (`residency::admission::compile`) give, for
//! every corpus object admission judges, the verdict of the offline engine — denied by the same
//! Enforce policies, warned about by the same Audit policies. Four rounds: the policies as
//! declared, then variants (dataLocation off; no exemptions and pinWorkloads off;
//! AllowedJurisdictions EU + IN) that take the other branches of the generated CEL. Which
//! objects are compared and which are left to the audit is decided in
//! `tests/support/admission.rs`. A second test holds UPDATE ratcheting to the same standard:
//! objects that violated before their policy can still be updated, compliant ones cannot be
//! made to violate, and a CREATE gets no grace.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use sovereign_operator::api::policy::{PolicyMode, ResidencyKind, ResidencyPolicy};
use sovereign_operator::residency::admission::{compile, object_name};

use crate::admission_support::{
    ParitySet, describe, evaluate_offline, evaluate_offline_update, mismatch_table,
};
use crate::harness::{
    Exclusive, PATIENCE, Plane, PlaneId, apply, ensure_namespace, eventually, exclusive,
};

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
fn dry_run(plane: &Plane, object: &Value, policies: &[String]) -> Verdict {
    let file = std::env::temp_dir().join(format!(
        "sovereign-e2e-admission-{}-{}.json",
        std::process::id(),
        file_suffix(object)
    ));
    std::fs::write(&file, serde_json::to_vec(object).expect("json")).expect("writable temp file");
    let cache = std::env::temp_dir().join(format!("sovereign-e2e-kubectl-{}", std::process::id()));
    let output = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(plane.kubeconfig())
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

/// What both admission tests start from: a plane of their own (the policies they install
/// judge every write to it, so no other test may write there), the example installed, and the
/// parity set.
async fn admission_setup(id: PlaneId) -> (Exclusive, kube::Client, ParitySet) {
    let plane = exclusive(id).await;
    plane.install_example().await;
    let client = plane.client().await;
    (plane, client, ParitySet::load())
}

#[tokio::test]
async fn admission_gives_the_engines_verdict_on_the_corpus() {
    let (plane, client, set) = admission_setup(PlaneId::AdmissionParity).await;
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
        let (compared, denied, warned) = parity_round(&plane, &client, &set, label).await;
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
    plane: &Plane,
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
            let verdict = dry_run(plane, probe, &names);
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
        let verdict = dry_run(plane, object, &names);
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
        plane.kubectl(&[
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
            let verdict = dry_run(plane, &probe, &names);
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

/// Namespace of the ratcheting test: labelled as the EU region's, and no other test's.
const RATCHET_NAMESPACE: &str = "residency-ratchet";

/// A governed (pii) PVC in the ratcheting namespace.
fn ratchet_claim(name: &str, class: &str) -> Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": RATCHET_NAMESPACE,
                     "labels": {"sovereign.ai/data-class": "pii"}},
        "spec": {"storageClassName": class, "accessModes": ["ReadWriteOnce"],
                 "resources": {"requests": {"storage": "1Gi"}}},
    })
}

/// A governed (pii) Deployment with no replicas (no Pods to schedule), pinned to `location`
/// or, with None, unpinned.
fn ratchet_deployment(name: &str, location: Option<&str>) -> Value {
    let mut spec = serde_json::json!({
        "containers": [{"name": "app", "image": "registry.example.com/app:1.0"}]
    });
    if let Some(location) = location {
        spec["nodeSelector"] = serde_json::json!({"topology.kubernetes.io/region": location});
    }
    serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": RATCHET_NAMESPACE},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name, "sovereign.ai/data-class": "pii"}},
                "spec": spec,
            },
        },
    })
}

/// UPDATE ratcheting on a real API server: objects that violated before the policy existed can
/// still be updated (an annotation), an UPDATE that makes a compliant object violate is denied,
/// and a CREATE of the violating shape is denied — and kube's CEL engine offline agrees on each.
#[tokio::test]
async fn updates_of_objects_that_violated_before_the_policy_are_ratcheted() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::PersistentVolumeClaim;
    use kube::api::{Api, Patch, PatchParams};

    let (plane, client, set) = admission_setup(PlaneId::AdmissionRatchet).await;
    let mut policy = set
        .policies
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("pii-home-region"))
        .expect("the example's pii policy")
        .clone();
    // Its own name, so that a policy of another test still in the API server's cache cannot
    // be mistaken for this one.
    policy.metadata.name = Some("pii-ratchet".to_owned());
    policy.spec.mode = PolicyMode::Enforce;
    let names = vec!["pii-ratchet".to_owned()];
    let compiled = compile(&policy, &set.regions).expect("the policy compiles");
    let namespace = serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": RATCHET_NAMESPACE, "labels": {"sovereign.ai/region": "eu"}},
    });
    apply(&client, &namespace).await.expect("namespace");
    // A previous run's objects would have been created under the policy: start afresh.
    plane.kubectl(&[
        "delete",
        "--ignore-not-found",
        "--wait=false",
        "-n",
        RATCHET_NAMESPACE,
        "persistentvolumeclaims,deployments",
        "--all",
    ]);
    let claims = Api::<PersistentVolumeClaim>::namespaced(client.clone(), RATCHET_NAMESPACE);
    let deployments = Api::<Deployment>::namespaced(client.clone(), RATCHET_NAMESPACE);
    eventually("the previous run's objects are gone", || async {
        let left = claims
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let more = deployments
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        match left.items.len() + more.items.len() {
            0 => Ok(()),
            n => Err(format!("{n} left")),
        }
    })
    .await;

    // Before the policy: one violating and one compliant object of each kind.
    let legacy_claim = ratchet_claim("legacy", "gp3");
    let fine_claim = ratchet_claim("fine", "eu-regional-ssd");
    let legacy_deployment = ratchet_deployment("legacy", None);
    let fine_deployment = ratchet_deployment("fine", Some("europe-west9"));
    for object in [
        &legacy_claim,
        &fine_claim,
        &legacy_deployment,
        &fine_deployment,
    ] {
        apply(&client, object)
            .await
            .unwrap_or_else(|e| panic!("{} before the policy: {e}", describe(object)));
    }
    for document in compiled.to_json().expect("serializes") {
        apply(&client, &document)
            .await
            .unwrap_or_else(|e| panic!("the API server refused {}: {e}", describe(&document)));
    }

    // (c) CREATE of the violating shape is denied; this also waits for the policy to be live.
    for shape in [
        ratchet_claim("legacy-again", "gp3"),
        ratchet_deployment("legacy-again", None),
    ] {
        let offline = evaluate_offline(&compiled, &shape, Some(&namespace))
            .expect("evaluates")
            .expect("governed");
        assert_eq!(offline.len(), 1, "{offline:?}");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let verdict = dry_run(&plane, &shape, &names);
            if verdict.refused {
                assert!(
                    verdict.output.contains(&offline[0]),
                    "{}: the API server said {:?}, offline {offline:?}",
                    describe(&shape),
                    verdict.output
                );
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the policy never denied a CREATE of {}: {verdict:?}",
                describe(&shape)
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // (a) An UPDATE that only adds an annotation to an object that already violated: allowed,
    // offline and for real (no dry run: the object must really change).
    let annotate = serde_json::json!({"metadata": {"annotations": {"example.com/touched": "yes"}}});
    for legacy in [&legacy_claim, &legacy_deployment] {
        let mut updated = legacy.clone();
        updated["metadata"]["annotations"] = annotate["metadata"]["annotations"].clone();
        let offline = evaluate_offline_update(&compiled, legacy, &updated, Some(&namespace))
            .expect("evaluates");
        assert_eq!(offline, Some(vec![]), "{}", describe(legacy));
    }
    let params = PatchParams::default();
    let claim = claims
        .patch("legacy", &params, &Patch::Merge(&annotate))
        .await
        .unwrap_or_else(|e| panic!("annotating the pre-existing violating PVC was refused: {e}"));
    assert_eq!(
        claim
            .metadata
            .annotations
            .unwrap_or_default()
            .get("example.com/touched"),
        Some(&"yes".to_owned())
    );
    deployments
        .patch("legacy", &params, &Patch::Merge(&annotate))
        .await
        .unwrap_or_else(|e| {
            panic!("annotating the pre-existing violating Deployment was refused: {e}")
        });

    // (b) An UPDATE that makes a compliant object violate: denied, with the offline message.
    let cases = [
        (
            "PVC relabelled to India",
            fine_claim.clone(),
            serde_json::json!({"metadata": {"labels": {"sovereign.ai/region": "in"}}}),
            "dataLocation",
        ),
        (
            "Deployment moved to us-east-1",
            fine_deployment.clone(),
            serde_json::json!({"spec": {"template": {"spec": {"nodeSelector":
                {"topology.kubernetes.io/region": "us-east-1"}}}}}),
            "pinWorkloads",
        ),
    ];
    for (what, old, patch, rule) in cases {
        let mut updated = old.clone();
        json_patch::merge(&mut updated, &patch);
        let offline = evaluate_offline_update(&compiled, &old, &updated, Some(&namespace))
            .expect("evaluates")
            .expect("governed");
        assert!(
            offline.first().is_some_and(|m| m.contains(rule)),
            "{what}: offline {offline:?}"
        );
        let refused = if old["kind"] == "Deployment" {
            deployments
                .patch("fine", &params, &Patch::Merge(&patch))
                .await
                .err()
        } else {
            claims
                .patch("fine", &params, &Patch::Merge(&patch))
                .await
                .err()
        };
        let error = refused.unwrap_or_else(|| panic!("{what}: the API server allowed it"));
        assert!(
            error.to_string().contains(&offline[0]),
            "{what}: the API server said {error}, offline {offline:?}"
        );
    }
}
