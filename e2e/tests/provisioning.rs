//! The operator on the real control plane: the EU/India example converges (regions and backends
//! Ready, vLLM pods on nodes of their region, gateways routing only in-jurisdiction), children
//! follow edits and deletions, bad input is reported, and a restart writes nothing.

use std::collections::BTreeSet;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::json;
use sovereign_operator::api::{InferenceBackend, ResidencyPolicy, SovereignRegion};

use crate::harness::{MANAGER, Operator, PlaneId, ensure_namespace, eventually, exclusive};

pub(crate) const EXAMPLE_BACKENDS: [(&str, &str); 7] = [
    ("sovereign-eu", "llama-3-70b"),
    ("sovereign-eu", "mistral-large"),
    ("sovereign-eu", "ovh-llama-3-3-70b"),
    ("sovereign-eu", "azure-gpt-4o-eu"),
    ("sovereign-in", "llama-3-70b"),
    ("sovereign-in", "sarvam-2b"),
    ("sovereign-in", "azure-gpt-4o-in"),
];

fn condition(
    conditions: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    type_: &str,
) -> String {
    conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| format!("{}/{}: {}", c.status, c.reason, c.message))
        .unwrap_or_else(|| "absent".into())
}

async fn backend_condition(client: &Client, namespace: &str, name: &str) -> Result<String, String> {
    let backend = Api::<InferenceBackend>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(|e| e.to_string())?;
    Ok(condition(
        &backend.status.unwrap_or_default().conditions,
        "Ready",
    ))
}

/// Model names in a region's rendered gateway config, and the api_bases they point at.
async fn gateway_routes(
    client: &Client,
    namespace: &str,
) -> Result<(BTreeSet<String>, Vec<String>), String> {
    let config_map = Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .get("gateway")
        .await
        .map_err(|e| e.to_string())?;
    let text = config_map
        .data
        .and_then(|d| d.get("config.yaml").cloned())
        .ok_or("no config.yaml")?;
    let config: serde_json::Value = serde_yaml_ng::from_str(&text).map_err(|e| e.to_string())?;
    let entries = config["model_list"].as_array().cloned().unwrap_or_default();
    let models = entries
        .iter()
        .filter_map(|m| m["model_name"].as_str().map(str::to_owned))
        .collect();
    let bases = entries
        .iter()
        .filter_map(|m| m["litellm_params"]["api_base"].as_str().map(str::to_owned))
        .collect();
    Ok((models, bases))
}

/// Whether the namespaced object `name` of kind `K` exists.
async fn exists<K>(client: &Client, namespace: &str, name: &str) -> Result<bool, String>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), namespace)
        .get_opt(name)
        .await
        .map(|found| found.is_some())
        .map_err(|e| e.to_string())
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

async fn apply_backend(client: &Client, namespace: &str, name: &str, spec: serde_json::Value) {
    let backend = json!({
        "apiVersion": "sovereign.ai/v1alpha1", "kind": "InferenceBackend",
        "metadata": {"name": name, "namespace": namespace}, "spec": spec
    });
    Api::<InferenceBackend>::namespaced(client.clone(), namespace)
        .patch(
            name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&backend),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot apply backend {namespace}/{name}: {e}"));
}

async fn wait_backend_reason(client: &Client, namespace: &str, name: &str, reason: &str) -> String {
    eventually(
        &format!("{namespace}/{name} Ready reason {reason}"),
        || async {
            let seen = backend_condition(client, namespace, name).await?;
            if seen.contains(&format!("/{reason}:")) {
                Ok(seen)
            } else {
                Err(seen)
            }
        },
    )
    .await
}

#[tokio::test]
async fn the_operator_provisions_the_example_and_follows_changes() {
    // Its own plane: "zero writes after a restart" must not see another test's objects.
    let plane = exclusive(PlaneId::Provisioning).await;
    plane.install_example_with_fixtures().await;
    let client = plane.client().await;
    let operator = Operator::start(
        &plane,
        &["--region", "eu", "--region", "in", "--region", "nowhere"],
    );

    // Every region and backend of the example becomes Ready.
    for region in ["eu", "in"] {
        eventually(&format!("region {region} Ready"), || async {
            let region = Api::<SovereignRegion>::all(client.clone())
                .get(region)
                .await
                .map_err(|e| e.to_string())?;
            let seen = condition(&region.status.unwrap_or_default().conditions, "Ready");
            if seen.starts_with("True/") {
                Ok(())
            } else {
                Err(seen)
            }
        })
        .await;
    }
    for (namespace, name) in EXAMPLE_BACKENDS {
        wait_backend_reason(
            &client,
            namespace,
            name,
            if name.contains("llama-3-70b") || name == "sarvam-2b" {
                "Available"
            } else {
                "Configured"
            },
        )
        .await;
    }

    // Every vLLM pod runs on a node of its region's locations.
    for (namespace, locations) in [
        (
            "sovereign-eu",
            vec!["europe-west9", "eu-central-1", "fr-par"],
        ),
        ("sovereign-in", vec!["ap-south-1", "asia-south1"]),
    ] {
        let pods = Api::<Pod>::namespaced(client.clone(), namespace)
            .list(&ListParams::default().labels("app.kubernetes.io/component=inference"))
            .await
            .expect("list vLLM pods");
        assert!(!pods.items.is_empty(), "no vLLM pods in {namespace}");
        for pod in pods.items {
            let node_name = pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .expect("scheduled");
            let node = Api::<Node>::all(client.clone())
                .get(&node_name)
                .await
                .expect("node");
            let region = node
                .metadata
                .labels
                .unwrap_or_default()
                .get("topology.kubernetes.io/region")
                .cloned()
                .unwrap_or_default();
            assert!(
                locations.contains(&region.as_str()),
                "{namespace} pod {:?} runs on {node_name} in {region}",
                pod.metadata.name
            );
        }
    }

    // Each gateway routes only to its own jurisdiction's backends.
    for (namespace, expected, foreign) in [
        (
            "sovereign-eu",
            set(&[
                "llama-3-70b",
                "mistral-large",
                "ovh-llama-3.3-70b",
                "gpt-4o",
            ]),
            ["sovereign-in", "contoso-in"],
        ),
        (
            "sovereign-in",
            set(&["llama-3-70b", "sarvam-2b", "gpt-4o"]),
            ["sovereign-eu", "contoso-eu"],
        ),
    ] {
        let bases = eventually(
            &format!("the {namespace} gateway routes exactly {expected:?}"),
            || async {
                let (models, bases) = gateway_routes(&client, namespace).await?;
                if models == expected {
                    Ok(bases)
                } else {
                    Err(format!("{models:?}"))
                }
            },
        )
        .await;
        assert!(
            bases.iter().all(|b| foreign.iter().all(|f| !b.contains(f))),
            "{namespace}: {bases:?}"
        );
    }

    // A new self-hosted backend gets its workload and route; deleting it removes both.
    apply_backend(&client, "sovereign-in", "scratch", json!({
        "region": "in", "modelName": "scratch-model",
        "vllm": {"model": "sarvamai/sarvam-2b-v0.5", "gpus": {"count": 1}, "replicas": {"min": 1, "max": 2}}
    })).await;
    wait_backend_reason(&client, "sovereign-in", "scratch", "Available").await;
    eventually("scratch-model routed by the India gateway", || async {
        let (models, _) = gateway_routes(&client, "sovereign-in").await?;
        if models.contains("scratch-model") {
            Ok(())
        } else {
            Err(format!("{models:?}"))
        }
    })
    .await;
    Api::<InferenceBackend>::namespaced(client.clone(), "sovereign-in")
        .delete("scratch", &DeleteParams::default())
        .await
        .expect("delete scratch");
    eventually("scratch's children and route are gone", || async {
        let gone = |found: bool, what: &str| {
            if found {
                Err(format!("{what} still there"))
            } else {
                Ok(())
            }
        };
        gone(
            exists::<Deployment>(&client, "sovereign-in", "vllm-scratch").await?,
            "Deployment",
        )?;
        gone(
            exists::<Service>(&client, "sovereign-in", "vllm-scratch").await?,
            "Service",
        )?;
        gone(
            exists::<PodDisruptionBudget>(&client, "sovereign-in", "vllm-scratch").await?,
            "PDB",
        )?;
        gone(
            exists::<HorizontalPodAutoscaler>(&client, "sovereign-in", "vllm-scratch").await?,
            "HPA",
        )?;
        let (models, _) = gateway_routes(&client, "sovereign-in").await?;
        gone(models.contains("scratch-model"), "route")
    })
    .await;

    // Someone else's change to a child is corrected: the applier skips a child only while
    // its resourceVersion is the one it verified (docs/decisions.md, the applied-RV memo),
    // and this write moves it.
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), "sovereign-eu");
    let (routed, _) = gateway_routes(&client, "sovereign-eu")
        .await
        .expect("the EU gateway config");
    config_maps
        .patch(
            "gateway",
            &PatchParams::default(),
            &Patch::Merge(json!({"data": {"config.yaml": "model_list: []\n"}})),
        )
        .await
        .expect("overwrite the EU gateway config");
    eventually("the EU gateway config is restored", || async {
        let (models, _) = gateway_routes(&client, "sovereign-eu").await?;
        if models == routed {
            Ok(())
        } else {
            Err(format!("{models:?}, want {routed:?}"))
        }
    })
    .await;

    // Editing a backend rolls its Deployment (toggling, so a re-run changes it again).
    let deployments = Api::<Deployment>::namespaced(client.clone(), "sovereign-eu");
    let before = deployments
        .get("vllm-llama-3-70b")
        .await
        .expect("EU llama deployment");
    let backends_eu = Api::<InferenceBackend>::namespaced(client.clone(), "sovereign-eu");
    let current = backends_eu
        .get("llama-3-70b")
        .await
        .expect("EU llama")
        .spec
        .vllm
        .and_then(|v| v.max_model_len);
    let new_len: i64 = if current == Some(4096) { 6144 } else { 4096 };
    let new_text = new_len.to_string();
    backends_eu
        .patch(
            "llama-3-70b",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"vllm": {"maxModelLen": new_len}}})),
        )
        .await
        .expect("edit maxModelLen");
    eventually(
        &format!("the EU llama Deployment rolls with --max-model-len {new_len}"),
        || async {
            let after = deployments
                .get("vllm-llama-3-70b")
                .await
                .map_err(|e| e.to_string())?;
            let args = after
                .spec
                .as_ref()
                .and_then(|s| s.template.spec.as_ref())
                .and_then(|p| p.containers[0].args.clone())
                .unwrap_or_default();
            let rolled = after.metadata.generation > before.metadata.generation;
            let has_new = args
                .windows(2)
                .any(|w| w[0] == "--max-model-len" && w[1] == new_text);
            if rolled && has_new {
                Ok(())
            } else {
                Err(format!("{args:?}"))
            }
        },
    )
    .await;

    // Bad input: a missing region, then the region appears and the backend recovers.
    ensure_namespace(&client, "sovereign-nowhere").await;
    apply_backend(
        &client,
        "sovereign-nowhere",
        "orphan",
        json!({
            "region": "nowhere", "modelName": "orphan-model",
            "vllm": {"model": "x/y", "gpus": {"count": 1}}
        }),
    )
    .await;
    wait_backend_reason(&client, "sovereign-nowhere", "orphan", "RegionNotFound").await;
    let events = Api::<Event>::namespaced(client.clone(), "sovereign-nowhere");
    eventually("an Event says RegionNotFound", || async {
        let list = events
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let reasons: Vec<String> = list.items.iter().filter_map(|e| e.reason.clone()).collect();
        if reasons.iter().any(|r| r == "RegionNotFound") {
            Ok(())
        } else {
            Err(format!("{reasons:?}"))
        }
    })
    .await;
    // The region appears without an in-region hub mirror: the backend's weights would come
    // from the public hub abroad, so it is refused in status, not rendered to crash-loop.
    let mut region = json!({
        "apiVersion": "sovereign.ai/v1alpha1", "kind": "SovereignRegion",
        "metadata": {"name": "nowhere"},
        "spec": {"jurisdiction": "EU", "locations": ["eu-central-1"], "vectorStore": {"engine": "None"},
                 "inRegionHosts": ["hf-mirror.eu.example.com"]}
    });
    crate::harness::apply(&client, &region)
        .await
        .expect("create region nowhere");
    let seen = wait_backend_reason(
        &client,
        "sovereign-nowhere",
        "orphan",
        "NoInRegionModelSource",
    )
    .await;
    assert!(seen.contains("huggingFaceMirror"), "{seen}");
    // With the mirror, the backend recovers.
    region["spec"]["huggingFaceMirror"] = json!("https://hf-mirror.eu.example.com");
    crate::harness::apply(&client, &region)
        .await
        .expect("give region nowhere a mirror");
    wait_backend_reason(&client, "sovereign-nowhere", "orphan", "Available").await;

    // A GPU request no node can satisfy is reported from the scheduler's verdict.
    apply_backend(
        &client,
        "sovereign-in",
        "too-big",
        json!({
            "region": "in", "modelName": "too-big",
            "vllm": {"model": "x/huge", "gpus": {"count": 16}}
        }),
    )
    .await;
    let seen = wait_backend_reason(&client, "sovereign-in", "too-big", "Unschedulable").await;
    assert!(seen.contains("nvidia.com/gpu"), "{seen}");
    // A missing Secret is named.
    apply_backend(
        &client,
        "sovereign-in",
        "no-key",
        json!({
            "region": "in", "modelName": "no-key",
            "external": {"provider": "OpenAICompatible", "endpoint": "https://llm.example.in/v1",
                         "hostingJurisdiction": "IN", "upstreamModel": "m",
                         "apiKeySecret": {"name": "absent-key", "key": "k"}}
        }),
    )
    .await;
    let seen = wait_backend_reason(&client, "sovereign-in", "no-key", "SecretNotFound").await;
    assert!(seen.contains("sovereign-in/absent-key"), "{seen}");
    // A region this instance does not manage is left to its own operator.
    let elsewhere = json!({
        "apiVersion": "sovereign.ai/v1alpha1", "kind": "SovereignRegion",
        "metadata": {"name": "elsewhere"},
        "spec": {"jurisdiction": "SA", "locations": ["me-central-1"]}
    });
    Api::<SovereignRegion>::all(client.clone())
        .patch(
            "elsewhere",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&elsewhere),
        )
        .await
        .expect("create region elsewhere");
    eventually("region elsewhere says ManagedElsewhere", || async {
        let region = Api::<SovereignRegion>::all(client.clone())
            .get("elsewhere")
            .await
            .map_err(|e| e.to_string())?;
        let seen = condition(&region.status.unwrap_or_default().conditions, "Ready");
        if seen.starts_with("Unknown/ManagedElsewhere") {
            Ok(())
        } else {
            Err(seen)
        }
    })
    .await;
    assert!(
        Api::<Namespace>::all(client.clone())
            .get_opt("sovereign-elsewhere")
            .await
            .expect("get")
            .is_none(),
        "nothing provisioned for a region managed elsewhere"
    );
    for name in ["too-big", "no-key"] {
        Api::<InferenceBackend>::namespaced(client.clone(), "sovereign-in")
            .delete(name, &DeleteParams::default())
            .await
            .expect("clean up");
    }
    // Let the India region settle again after the clean-up.
    wait_backend_reason(&client, "sovereign-in", "sarvam-2b", "Available").await;
    eventually(
        "the India gateway no longer has the removed models",
        || async {
            let (models, _) = gateway_routes(&client, "sovereign-in").await?;
            if models == set(&["llama-3-70b", "sarvam-2b", "gpt-4o"]) {
                Ok(())
            } else {
                Err(format!("{models:?}"))
            }
        },
    )
    .await;

    // Enforcement: the operator compiled the PII policy into admission rules, and the API
    // server itself refuses a PII pod pinned abroad.
    eventually("pii-home-region says Enforcing", || async {
        let policy = Api::<ResidencyPolicy>::all(client.clone())
            .get("pii-home-region")
            .await
            .map_err(|e| e.to_string())?;
        let status = policy.status.unwrap_or_default();
        let seen = condition(&status.conditions, "Enforcing");
        let installed = status.admission_policies == ["sovereign-residency-pii-home-region"];
        if seen.starts_with("True/") && installed {
            Ok(())
        } else {
            Err(format!("{seen} {:?}", status.admission_policies))
        }
    })
    .await;
    let abroad: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "pii-abroad", "namespace": "sovereign-eu",
                     "labels": {"sovereign.ai/data-class": "pii"}},
        "spec": {
            "nodeSelector": {"topology.kubernetes.io/region": "us-east-1"},
            "securityContext": {"runAsNonRoot": true, "runAsUser": 1000,
                                "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "app", "image": "busybox",
                            "securityContext": {"allowPrivilegeEscalation": false,
                                                "capabilities": {"drop": ["ALL"]}}}]
        }
    }))
    .expect("pod");
    let pods_eu = Api::<Pod>::namespaced(client.clone(), "sovereign-eu");
    let dry_run = kube::api::PostParams {
        dry_run: true,
        ..Default::default()
    };
    // Admission policies take effect a moment after they are created: retry until denied.
    let refusal = eventually(
        "the API server denies a PII pod pinned to us-east-1",
        || async {
            match pods_eu.create(&dry_run, &abroad).await {
                Err(kube::Error::Api(status)) if status.message.contains("pinWorkloads") => {
                    Ok(status.message)
                }
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await;
    assert!(refusal.contains("pii-home-region"), "{refusal}");

    // The audit: an object that existed before its policy shows up in the policy's status and
    // as an Event on the object.
    let violating = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "ledger-export", "namespace": "sovereign-eu",
                     "labels": {"sovereign.ai/data-class": "financial-e2e"}},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": "ledger-export"}},
            "template": {
                "metadata": {"labels": {"app": "ledger-export"}},
                "spec": {"containers": [{"name": "export", "image": "busybox"}]}
            }
        }
    });
    Api::<Deployment>::namespaced(client.clone(), "sovereign-eu")
        .patch(
            "ledger-export",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&violating),
        )
        .await
        .expect("create the violating Deployment");
    let policy = json!({
        "apiVersion": "sovereign.ai/v1alpha1", "kind": "ResidencyPolicy",
        "metadata": {"name": "e2e-financial-audit"},
        "spec": {"mode": "Audit", "dataClasses": ["financial-e2e"]}
    });
    Api::<ResidencyPolicy>::all(client.clone())
        .patch(
            "e2e-financial-audit",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&policy),
        )
        .await
        .expect("create the audit policy");
    eventually("the audit lists the unpinned Deployment", || async {
        let policy = Api::<ResidencyPolicy>::all(client.clone())
            .get("e2e-financial-audit")
            .await
            .map_err(|e| e.to_string())?;
        let status = policy.status.unwrap_or_default();
        let found = status.violations.iter().any(|v| {
            v.name == "ledger-export" && v.kind == "Deployment" && v.rule == "pinWorkloads"
        });
        if found {
            Ok(())
        } else {
            Err(format!("{:?}", status.violations))
        }
    })
    .await;
    let eu_events = Api::<Event>::namespaced(client.clone(), "sovereign-eu");
    eventually(
        "an Event on the Deployment reports the violation",
        || async {
            let list = eu_events
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let found = list.items.iter().any(|e| {
                e.reason.as_deref() == Some("ResidencyViolation")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("ledger-export")
            });
            if found {
                Ok(())
            } else {
                Err("no ResidencyViolation event".into())
            }
        },
    )
    .await;
    let gauge = operator
        .metric_sum(
            "sovereign_residency_violations",
            "policy=\"e2e-financial-audit\"",
        )
        .await
        .expect("metrics");
    assert!(
        gauge >= 1.0,
        "sovereign_residency_violations for the audit policy: {gauge}"
    );

    // A declared sink whose expression is not CEL: the policy says so instead of guessing.
    let broken = json!({
        "apiVersion": "sovereign.ai/v1alpha1", "kind": "ResidencyPolicy",
        "metadata": {"name": "e2e-broken-sink"},
        "spec": {"mode": "Audit", "dataClasses": ["e2e-mirrored"],
                 "sinks": [{"group": "storage.example.com", "kinds": ["Mirror"],
                            "locationExpression": "object.spec.(target"}]}
    });
    Api::<ResidencyPolicy>::all(client.clone())
        .patch(
            "e2e-broken-sink",
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&broken),
        )
        .await
        .expect("create the policy with a broken sink");
    let seen = eventually("the broken sink makes its policy Ready=False", || async {
        let policy = Api::<ResidencyPolicy>::all(client.clone())
            .get("e2e-broken-sink")
            .await
            .map_err(|e| e.to_string())?;
        let seen = condition(&policy.status.unwrap_or_default().conditions, "Ready");
        if seen.starts_with("False/InvalidSink") {
            Ok(seen)
        } else {
            Err(seen)
        }
    })
    .await;
    assert!(seen.contains("locationExpression"), "{seen}");

    // A restart writes nothing: the new process finds everything as it wants it. First the
    // running operator must have finished its own work: every object in its final state, then
    // nothing running and nothing finishing.
    converged(&client).await;
    let reconciled = [
        ("region", 4.0),
        ("backend", (EXAMPLE_BACKENDS.len() + 1) as f64), // + orphan
        ("policy", 4.0),
        ("budget", 2.0),
    ];
    operator.settled(&reconciled).await;
    // It ran under the chart's RBAC (harness::operator_kubeconfig): nothing was refused.
    operator.assert_no_forbidden();
    operator.stop();
    let operator = Operator::start(
        &plane,
        &["--region", "eu", "--region", "in", "--region", "nowhere"],
    );
    // Every object reconciled at least once by the new process, and all follow-ups (the
    // region watch re-auditing every policy) done.
    operator.settled(&reconciled).await;
    let writes = operator.metrics().await.expect("metrics");
    let write_lines: Vec<&str> = writes
        .lines()
        .filter(|l| l.starts_with("sovereign_api_writes_total"))
        .collect();
    assert!(
        write_lines.is_empty(),
        "the restarted operator wrote: {write_lines:#?}\nlog: {}",
        operator.log.display()
    );
    operator.assert_no_forbidden();
    operator.stop();
}

/// Every object of the test in its final state, observed for its current generation: regions
/// Ready (elsewhere left to its own operator), backends as the test left them, policies audited.
async fn converged(client: &Client) {
    eventually("every object in its final state", || async {
        for (name, expected) in [
            ("eu", "True/"),
            ("in", "True/"),
            ("nowhere", "True/"),
            ("elsewhere", "Unknown/ManagedElsewhere"),
        ] {
            let region = Api::<SovereignRegion>::all(client.clone())
                .get(name)
                .await
                .map_err(|e| e.to_string())?;
            let status = region.status.unwrap_or_default();
            let seen = condition(&status.conditions, "Ready");
            if !seen.starts_with(expected)
                || status.observed_generation != region.metadata.generation
            {
                return Err(format!("region {name}: {seen}"));
            }
        }
        let mut backends = EXAMPLE_BACKENDS.to_vec();
        backends.push(("sovereign-nowhere", "orphan"));
        for (namespace, name) in backends {
            let backend = Api::<InferenceBackend>::namespaced(client.clone(), namespace)
                .get(name)
                .await
                .map_err(|e| e.to_string())?;
            let status = backend.status.unwrap_or_default();
            let seen = condition(&status.conditions, "Ready");
            if !seen.starts_with("True/")
                || status.observed_generation != backend.metadata.generation
            {
                return Err(format!("backend {namespace}/{name}: {seen}"));
            }
        }
        for policy in Api::<ResidencyPolicy>::all(client.clone())
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
        {
            let status = policy.status.clone().unwrap_or_default();
            if status.observed_generation != policy.metadata.generation {
                return Err(format!(
                    "policy {} not audited yet",
                    policy.metadata.name.unwrap_or_default()
                ));
            }
        }
        Ok(())
    })
    .await;
}
