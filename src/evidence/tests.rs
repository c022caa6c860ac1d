//! Unit tests of the evidence: the region status summary, what a tampered rendered object
//! shows, the diff's breaking rules and the renderers' escaping.

use serde_json::{Value, json};

use super::*;
use crate::api::ResidencyPolicy;
use crate::render::region::{offline_children, region_plan};
use crate::render::test_support::{example_all_backends, example_documents, example_region, owner};

fn policies() -> Vec<ResidencyPolicy> {
    example_documents("ResidencyPolicy")
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("policy"))
        .collect()
}

fn example_inputs() -> Inputs {
    let regions = vec![example_region("eu"), example_region("in")];
    let backends = example_all_backends();
    let policies = policies();
    let rendered = offline_children(&regions, &backends, &policies)
        .expect("renders")
        .iter()
        .map(|c| c.to_json().expect("json"))
        .collect();
    Inputs {
        regions,
        backends,
        policies,
        rendered,
        ..Inputs::default()
    }
}

fn path<'a>(evidence: &'a Evidence, region: &str, from: &str) -> &'a Path {
    evidence
        .regions
        .iter()
        .find(|r| r.name == region)
        .and_then(|r| r.paths.iter().find(|p| p.from == from))
        .unwrap_or_else(|| panic!("no path from {from} in {region}"))
}

#[test]
fn the_region_summary_counts_what_the_controller_renders() {
    let region = example_region("eu");
    let backends = example_all_backends();
    let serving: Vec<_> = backends.iter().filter(|b| b.spec.region == "eu").collect();
    let plan = region_plan(&region, &owner("eu"), &serving).expect("plan");
    let mut children = plan.children;
    for backend in &serving {
        children.extend(
            crate::render::vllm::vllm_children(backend, &region, &owner("eu")).expect("vllm"),
        );
    }
    let summary = region_summary(&region, &backends, &policies(), &children).expect("summary");
    assert!(summary.paths >= 15, "{summary:?}");
    assert_eq!(summary.guarded, summary.paths, "{summary:?}");
    assert_eq!((summary.violations, summary.unknown), (0, 0));
    assert_eq!(
        summary.summary,
        format!("{0}/{0} ok, 0 violations, 0 unknown", summary.paths)
    );

    // A backend abroad is counted as a violation, though the gateway never routes to it.
    let mut abroad = backends.clone();
    let mut us = abroad
        .iter()
        .find(|b| b.metadata.name.as_deref() == Some("mistral-large"))
        .expect("mistral")
        .clone();
    us.metadata.name = Some("us-model".into());
    // Its own model name: as a second `mistral-large` it would also be a fallback target of
    // azure-gpt-4o-eu (a second violation, rightly).
    us.spec.model_name = "us-model".into();
    us.spec.routing = None;
    if let Some(external) = us.spec.external.as_mut() {
        external.hosting_jurisdiction = "US".into();
    }
    abroad.push(us);
    let summary = region_summary(&region, &abroad, &policies(), &children).expect("summary");
    assert_eq!(summary.violations, 1, "{summary:?}");
}

#[test]
fn a_tampered_gateway_config_shows_an_unknown_route() {
    let mut inputs = example_inputs();
    let before = derive(&inputs).expect("evidence");
    assert!(!before.has_findings());
    // What a hand-edited ConfigMap in the cluster would route to.
    for object in &mut inputs.rendered {
        if object["kind"] == "ConfigMap"
            && object["metadata"]["name"] == "gateway"
            && object["metadata"]["namespace"] == "sovereign-eu"
        {
            let yaml = object["data"]["config.yaml"].as_str().expect("config");
            let mut config: Value = serde_yaml_ng::from_str(yaml).expect("yaml");
            config["model_list"]
                .as_array_mut()
                .expect("list")
                .push(json!({"model_name": "x", "litellm_params": {"model": "openai/gpt-4o", "api_base": "https://api.openai.com/v1"}, "model_info": {"id": "injected"}}));
            object["data"]["config.yaml"] = json!(serde_yaml_ng::to_string(&config).expect("yaml"));
        }
    }
    let after = derive(&inputs).expect("evidence");
    let injected = path(&after, "eu", "gateway: model_list entry injected");
    assert_eq!(injected.to, "api.openai.com");
    assert_eq!(injected.status, Status::Unknown);
    let changes = diff::diff(&before, &after);
    assert_eq!(changes.changes.len(), 1, "{changes:?}");
    assert!(changes.is_breaking());
}

#[test]
fn an_audit_finding_on_a_path_makes_it_a_violation() {
    let mut inputs = example_inputs();
    inputs.findings.push(crate::residency::Finding {
        kind: "InferenceBackend".into(),
        namespace: "sovereign-eu".into(),
        name: "mistral-large".into(),
        rule: crate::residency::Rule::InferenceHosting,
        policy: Some("pii-home-region".into()),
        message: "seen by the audit".into(),
    });
    let evidence = derive(&inputs).expect("evidence");
    let mistral = path(&evidence, "eu", "gateway: mistral-large");
    assert_eq!(mistral.status, Status::Violation);
    assert!(
        mistral.reason.contains("seen by the audit"),
        "{}",
        mistral.reason
    );
    // Other paths are not touched by a finding on another object.
    assert_eq!(
        path(&evidence, "eu", "gateway: llama-3-70b").status,
        Status::Ok
    );
}

#[test]
fn a_path_without_guards_is_unguarded() {
    let mut inputs = example_inputs();
    // Without policies and without the rendered NetworkPolicies, a backup sink has no guard.
    inputs.policies.clear();
    inputs.objects = vec![
        json!({"apiVersion": "velero.io/v1", "kind": "BackupStorageLocation", "metadata": {"name": "b", "namespace": "velero"}, "spec": {"provider": "aws", "config": {"region": "eu-central-1"}}}),
        json!({"apiVersion": "velero.io/v1", "kind": "Backup", "metadata": {"name": "x", "namespace": "velero"}, "spec": {"includedNamespaces": ["sovereign-eu"], "storageLocation": "b", "snapshotVolumes": false}}),
    ];
    let evidence = derive(&inputs).expect("evidence");
    let backup = path(&evidence, "eu", "Backup velero/x");
    assert_eq!(backup.status, Status::Unguarded, "{backup:?}");
    assert!(backup.in_jurisdiction);
}

#[test]
fn the_json_contract_round_trips_and_is_sorted() {
    let evidence = derive(&example_inputs()).expect("evidence");
    let text = evidence.to_json().expect("json");
    assert_eq!(Evidence::from_json("x", &text).expect("parses"), evidence);
    for region in &evidence.regions {
        let keys: Vec<_> = region.paths.iter().map(Path::key).collect();
        let mut sorted = keys.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(keys, sorted, "sorted and unique");
    }
    let value: Value = serde_json::from_str(&text).expect("json");
    let first = &value["regions"][0]["paths"][0];
    for field in [
        "flow",
        "from",
        "to",
        "jurisdiction",
        "inJurisdiction",
        "dataClasses",
        "guards",
        "status",
        "reason",
    ] {
        assert!(!first[field].is_null(), "{field}");
    }
    assert!(!first["guards"][0]["kind"].is_null() && !first["guards"][0]["name"].is_null());
}

#[test]
fn diff_breaks_on_leaving_worsening_and_losing_guards_only() {
    let old = derive(&example_inputs()).expect("evidence");
    let mut new = old.clone();
    // A removed path is not breaking.
    new.regions[0].paths.pop();
    assert!(!diff::diff(&old, &new).is_breaking());
    // A better status is not breaking; a worse one is.
    let mut worse = old.clone();
    worse.regions[0].paths[0].status = Status::Unknown;
    assert!(diff::diff(&old, &worse).is_breaking());
    assert!(!diff::diff(&worse, &old).is_breaking());
    // A lost guard is; a gained one is not.
    let mut fewer = old.clone();
    let guard = fewer.regions[0].paths[0].guards.pop().expect("guard");
    let lost = diff::diff(&old, &fewer);
    assert!(lost.is_breaking());
    assert!(
        lost.changes[0].breaking[0].contains(&guard.name),
        "{:?}",
        lost.changes[0]
    );
    assert!(!diff::diff(&fewer, &old).is_breaking());
}

#[test]
fn renderers_escape_what_users_write() {
    let mut evidence = derive(&example_inputs()).expect("evidence");
    evidence.regions[0].paths[0].to = "<script>alert(1)</script>|x".into();
    let page = html::render(&evidence);
    assert!(!page.contains("<script>alert"));
    assert!(page.contains("&lt;script&gt;"));
    let markdown = markdown::render(&evidence);
    assert!(markdown.contains("</script>\\|x"));
}
