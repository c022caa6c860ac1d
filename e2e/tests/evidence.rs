//! `sovereign-operator evidence --context` against a real control plane running the operator on
//! the EU/India example agrees with `evidence -f` on the same files: what the operator rendered,
//! the admission policies it installed and the audit's results say what the offline derivation
//! says, path for path.

use kube::Api;
use sovereign_operator::api::{InferenceBackend, SovereignRegion};

use crate::harness::{Operator, PlaneId, eventually, exclusive, repo_path};

/// The context of the plane's admin kubeconfig (`e2e/controlplane.sh` writes it).
const CONTEXT: &str = "sovereign-e2e";

fn evidence(args: &[&str], kubeconfig: Option<&std::path::Path>) -> Result<String, String> {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sovereign-operator"));
    if let Some(kubeconfig) = kubeconfig {
        command.env("KUBECONFIG", kubeconfig);
    }
    let output = command
        .arg("evidence")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(format!(
            "exit {:?}: {}",
            output.status.code(),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[tokio::test]
async fn live_and_offline_evidence_agree_on_the_example() {
    // Its own plane: an operator runs, and the live report must see only the example.
    let plane = exclusive(PlaneId::Evidence).await;
    plane.install_example_with_fixtures().await;
    let client = plane.client().await;
    let _operator = Operator::start(&plane, &[]);

    let example = repo_path("deploy/examples/eu-india");
    let offline = evidence(&["-f", example.to_str().expect("utf-8")], None)
        .expect("offline evidence of the example");
    let offline: serde_json::Value = serde_json::from_str(&offline).expect("json");
    for region in offline["regions"].as_array().expect("regions") {
        assert_eq!(region["summary"]["violations"], 0, "{region}");
        assert_eq!(region["summary"]["unknown"], 0, "{region}");
    }

    // The operator converges: every backend in its gateway's model list, the admission
    // policies installed. Until then the live report differs; once it has, they agree.
    for region in ["eu", "in"] {
        eventually(&format!("region {region} Ready"), || async {
            let region = Api::<SovereignRegion>::all(client.clone())
                .get(region)
                .await
                .map_err(|e| e.to_string())?;
            let ready = region
                .status
                .unwrap_or_default()
                .conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready {
                Ok(())
            } else {
                Err("not Ready".to_owned())
            }
        })
        .await;
    }
    let kubeconfig = plane.kubeconfig();
    let live = eventually("live evidence equal to the offline one", || async {
        let backends = Api::<InferenceBackend>::all(client.clone())
            .list(&Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let not_ready: Vec<String> = backends
            .items
            .iter()
            .filter(|b| !b.may_serve())
            .filter_map(|b| b.metadata.name.clone())
            .collect();
        if !not_ready.is_empty() {
            return Err(format!("backends not serving yet: {not_ready:?}"));
        }
        let live = evidence(&["--context", CONTEXT], Some(&kubeconfig))?;
        let live: serde_json::Value = serde_json::from_str(&live).map_err(|e| e.to_string())?;
        if live == offline {
            Ok(live)
        } else {
            Err(first_difference(&offline, &live))
        }
    })
    .await;
    let paths: usize = live["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .map(|r| r["paths"].as_array().map_or(0, Vec::len))
        .sum();
    println!("live and offline evidence agree: {paths} paths in 2 regions");

    // The same in Markdown, and `--diff` of the offline report against the cluster is empty.
    let old = std::env::temp_dir().join(format!(
        "sovereign-evidence-e2e-{}.json",
        std::process::id()
    ));
    std::fs::write(&old, serde_json::to_string(&offline).expect("json")).expect("write");
    let diff = evidence(
        &["--context", CONTEXT, "--diff", old.to_str().expect("utf-8")],
        Some(&kubeconfig),
    )
    .expect("no breaking change between the files and the cluster");
    let diff: serde_json::Value = serde_json::from_str(&diff).expect("json");
    assert_eq!(diff["changes"], serde_json::json!([]), "{diff}");

    // A context that does not exist is unreadable input: exit 2, named.
    let missing = evidence(&["--context", "no-such-context"], Some(&kubeconfig))
        .expect_err("an unknown context fails");
    assert!(
        missing.contains("exit Some(2)") && missing.contains("no-such-context"),
        "{missing}"
    );
}

/// The first path (or region field) that differs, for the failure message.
fn first_difference(offline: &serde_json::Value, live: &serde_json::Value) -> String {
    let regions = |v: &serde_json::Value| v["regions"].as_array().cloned().unwrap_or_default();
    let (a, b) = (regions(offline), regions(live));
    if a.len() != b.len() {
        return format!("{} regions offline, {} live", a.len(), b.len());
    }
    for (o, l) in a.iter().zip(&b) {
        let paths = |v: &serde_json::Value| v["paths"].as_array().cloned().unwrap_or_default();
        for path in paths(o) {
            if !paths(l).contains(&path) {
                return format!("region {}: offline path not live: {path}", o["name"]);
            }
        }
        for path in paths(l) {
            if !paths(o).contains(&path) {
                return format!("region {}: live path not offline: {path}", l["name"]);
            }
        }
        for field in [
            "name",
            "jurisdiction",
            "admission",
            "summary",
            "namespace",
            "locations",
        ] {
            if o[field] != l[field] {
                return format!(
                    "region {}: {field}: offline {} live {}",
                    o["name"], o[field], l[field]
                );
            }
        }
    }
    "equal".to_owned()
}
