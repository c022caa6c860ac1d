//! `sovereign-operator evidence` on the EU/India example as a GitOps pipeline runs it: the built
//! binary, real files, `--diff` exit codes. The example (with its data protection,
//! `tests/evidence/data-protection.yaml`) yields every flow for both regions, all `ok`; each
//! change of the issue turns exactly its path into a violation and `--diff` exits 1 naming it;
//! red-team cases hide paths the way an attacker would, and legitimate setups stay `ok`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const FLOWS: [&str; 11] = [
    "inference",
    "embeddings",
    "vectors",
    "traces",
    "logs",
    "metrics",
    "model-weights",
    "backup",
    "replication",
    "usage",
    "metadata",
];

/// Edits of the example's files: (file name, from, to).
type Edits<'a> = Vec<(&'a str, &'a str, &'a str)>;
/// Files added to the example: (file name, content).
type Extra<'a> = Vec<(&'a str, &'a str)>;

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn evidence(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sovereign-operator"))
        .arg("evidence")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited, not killed")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A fresh directory under the system temp dir, unique per test.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("sovereign-evidence-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A copy of the example and its data protection in a scratch directory, with `edits`
/// (file name, from, to) applied and `extra` files (name, text) added.
fn example(name: &str, edits: &[(&str, &str, &str)], extra: &[(&str, &str)]) -> PathBuf {
    let dir = scratch(name);
    let mut files: Vec<(String, PathBuf)> = std::fs::read_dir(repo("deploy/examples/eu-india"))
        .expect("example dir")
        .map(|e| {
            let path = e.expect("entry").path();
            (
                path.file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned(),
                path,
            )
        })
        .collect();
    files.push((
        "90-data-protection.yaml".to_owned(),
        repo("tests/evidence/data-protection.yaml"),
    ));
    for (file, source) in files {
        let mut content = std::fs::read_to_string(&source).expect("read");
        for (target, from, to) in edits {
            if *target == file {
                assert!(content.contains(from), "{file} has no {from:?}");
                content = content.replace(from, to);
            }
        }
        std::fs::write(dir.join(&file), content).expect("write");
    }
    for (file, content) in extra {
        std::fs::write(dir.join(file), content).expect("write");
    }
    dir
}

fn json_of(dir: &Path) -> Value {
    let output = evidence(&["-f", dir.to_str().expect("utf-8")]);
    assert_eq!(code(&output), 0, "{}", text(&output.stderr));
    serde_json::from_slice(&output.stdout).expect("json")
}

fn paths(report: &Value) -> Vec<(String, Value)> {
    report["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .flat_map(|r| {
            let name = r["name"].as_str().expect("name").to_owned();
            r["paths"]
                .as_array()
                .expect("paths")
                .iter()
                .map(move |p| (name.clone(), p.clone()))
        })
        .collect()
}

fn key(region: &str, path: &Value) -> String {
    format!(
        "{region} {} {} -> {}",
        path["flow"].as_str().unwrap_or_default(),
        path["from"].as_str().unwrap_or_default(),
        path["to"].as_str().unwrap_or_default()
    )
}

/// Paths of `after` that are not identical in `before`.
fn changed(before: &Value, after: &Value) -> Vec<(String, Value)> {
    let old = paths(before);
    paths(after)
        .into_iter()
        .filter(|(region, path)| !old.iter().any(|(r, p)| r == region && p == path))
        .collect()
}

/// `--diff baseline.json` of `dir`: (exit code, stdout).
fn diff_against(baseline: &Value, dir: &Path, format: &str) -> (i32, String) {
    let old = dir.with_extension("old.json");
    std::fs::write(&old, serde_json::to_string(baseline).expect("json")).expect("write");
    let output = evidence(&[
        "-f",
        dir.to_str().expect("utf-8"),
        "--diff",
        old.to_str().expect("utf-8"),
        "--format",
        format,
    ]);
    (code(&output), text(&output.stdout))
}

#[test]
fn the_example_yields_every_flow_for_both_regions_all_ok() {
    let dir = example("baseline", &[], &[]);
    let report = json_of(&dir);
    let regions: Vec<&str> = report["regions"]
        .as_array()
        .expect("regions")
        .iter()
        .map(|r| r["name"].as_str().expect("name"))
        .collect();
    assert_eq!(regions, ["eu", "in"]);
    for region in report["regions"].as_array().expect("regions") {
        let name = region["name"].as_str().expect("name");
        let flows: Vec<&str> = region["paths"]
            .as_array()
            .expect("paths")
            .iter()
            .map(|p| p["flow"].as_str().expect("flow"))
            .collect();
        for flow in FLOWS {
            assert!(flows.contains(&flow), "region {name} has no {flow} path");
        }
        for path in region["paths"].as_array().expect("paths") {
            assert_eq!(path["status"], "ok", "{}: {path}", key(name, path));
            assert!(
                !path["guards"].as_array().expect("guards").is_empty(),
                "{}",
                key(name, path)
            );
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
                assert!(!path[field].is_null(), "{} lacks {field}", key(name, path));
            }
        }
        assert_eq!(region["summary"]["violations"], 0);
        assert_eq!(region["summary"]["unknown"], 0);
    }
    // The fallbacks are paths of their own.
    let eu = paths(&report);
    assert!(eu.iter().any(|(r, p)| r == "eu"
        && p["from"] == "gateway: azure-gpt-4o-eu falls back to mistral-large"
        && p["to"] == "api.mistral.ai"
        && p["jurisdiction"] == "FR"));
    // Sorted and stable: the same input gives the same bytes, and diffing with itself is empty.
    let first = evidence(&["-f", dir.to_str().expect("utf-8")]);
    let again = evidence(&["-f", dir.to_str().expect("utf-8")]);
    assert_eq!(text(&first.stdout), text(&again.stdout));
    let (exit, out) = diff_against(&report, &dir, "json");
    assert_eq!(exit, 0, "{out}");
    let diff: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(diff["changes"], serde_json::json!([]));
}

const US_BACKEND: &str = r#"
apiVersion: sovereign.ai/v1alpha1
kind: InferenceBackend
metadata: {name: openai-us, namespace: sovereign-eu}
spec:
  region: eu
  modelName: gpt-4.1
  external:
    provider: OpenAICompatible
    endpoint: https://api.openai.com/v1
    hostingJurisdiction: US
    hostingLocation: us-east-1
    upstreamModel: gpt-4.1
    apiKeySecret: {name: openai, key: api-key}
  pricing: {currency: EUR, inputPer1MTokens: "2", outputPer1MTokens: "8"}
  dataClasses: [public, pii]
"#;

#[test]
fn an_external_backend_hosted_in_the_us_is_exactly_one_violation_and_breaks_the_diff() {
    let baseline = json_of(&example("us-base", &[], &[]));
    let dir = example("us-backend", &[], &[("25-openai-us.yaml", US_BACKEND)]);
    let report = json_of(&dir);
    let changes = changed(&baseline, &report);
    assert_eq!(changes.len(), 1, "{changes:#?}");
    let (region, path) = &changes[0];
    assert_eq!(region, "eu");
    assert_eq!(path["flow"], "inference");
    assert_eq!(path["to"], "api.openai.com");
    assert_eq!(path["jurisdiction"], "US");
    assert_eq!(path["inJurisdiction"], false);
    assert_eq!(path["status"], "violation");
    let reason = path["reason"].as_str().expect("reason");
    assert!(
        reason.contains("outside region eu's jurisdiction EU"),
        "{reason}"
    );
    assert!(reason.contains("does not route to it"), "{reason}");
    let (exit, out) = diff_against(&baseline, &dir, "markdown");
    assert_eq!(exit, 1, "{out}");
    assert!(
        out.contains("adds an inference path of region `eu` to `api.openai.com` (US)"),
        "{out}"
    );
}

#[test]
fn a_velero_location_abroad_is_exactly_one_violation_and_breaks_the_diff() {
    let baseline = json_of(&example("velero-base", &[], &[]));
    let dir = example(
        "velero-abroad",
        &[(
            "90-data-protection.yaml",
            "config: {region: eu-central-1, s3Url: \"https://s3.eu-central-1.amazonaws.com\"}",
            "config: {region: us-east-1, s3Url: \"https://s3.us-east-1.amazonaws.com\"}",
        )],
        &[],
    );
    let report = json_of(&dir);
    let changes = changed(&baseline, &report);
    assert_eq!(changes.len(), 1, "{changes:#?}");
    let (region, path) = &changes[0];
    assert_eq!(region, "eu");
    assert_eq!(path["flow"], "backup");
    assert_eq!(path["from"], "Schedule velero/eu-nightly");
    assert_eq!(path["location"], "us-east-1");
    assert_eq!(path["status"], "violation");
    let (exit, out) = diff_against(&baseline, &dir, "json");
    assert_eq!(exit, 1, "{out}");
    let diff: Value = serde_json::from_str(&out).expect("json");
    assert_eq!(diff["breaking"], true);
    // The destination names the endpoint, so the old path is removed and the new one added.
    let changes = diff["changes"].as_array().expect("changes");
    assert_eq!(changes.len(), 2, "{out}");
    let added: Vec<&Value> = changes.iter().filter(|c| c["change"] == "added").collect();
    assert_eq!(added.len(), 1, "{out}");
    let to = added[0]["new"]["to"].as_str().expect("to");
    assert!(to.contains("eu-backups"), "{out}");
    assert!(
        !added[0]["breaking"]
            .as_array()
            .expect("breaking")
            .is_empty(),
        "{out}"
    );
}

#[test]
fn an_otlp_endpoint_outside_the_region_turns_its_paths_into_violations() {
    let baseline = json_of(&example("otlp-base", &[], &[]));
    let dir = example(
        "otlp-abroad",
        &[(
            "10-region-eu.yaml",
            "otlpEndpoint: https://otel.eu.observability.example.com:4317",
            "otlpEndpoint: https://otel.us-east.example.com:4317",
        )],
        &[],
    );
    let report = json_of(&dir);
    let changes = changed(&baseline, &report);
    assert!(!changes.is_empty());
    for (region, path) in &changes {
        assert_eq!(region, "eu");
        assert_eq!(path["to"], "otel.us-east.example.com", "{path}");
        assert_eq!(path["status"], "violation", "{path}");
        assert!(
            path["reason"]
                .as_str()
                .expect("reason")
                .contains("observability.otlpEndpoint")
        );
    }
    // The collector's three pipelines export there, nothing else changed.
    let flows: Vec<&str> = changes
        .iter()
        .map(|(_, p)| p["flow"].as_str().expect("flow"))
        .collect();
    assert_eq!(flows, ["traces", "logs", "metrics"]);
    let (exit, out) = diff_against(&baseline, &dir, "markdown");
    assert_eq!(exit, 1, "{out}");
    assert!(out.contains("otel.us-east.example.com"), "{out}");
}

#[test]
fn losing_a_guard_breaks_the_diff() {
    let baseline = json_of(&example("guard-base", &[], &[]));
    // Without the proxy the gateway has no egress allowance to the external APIs' proxy.
    let dir = example(
        "guard-lost",
        &[(
            "10-region-eu.yaml",
            "    proxy:\n      url: http://egress-proxy.egress-eu.svc:3128\n      namespace: egress-eu\n      podLabels: {app.kubernetes.io/name: egress-proxy}\n      port: 3128\n",
            "",
        )],
        &[],
    );
    let (exit, out) = diff_against(&baseline, &dir, "json");
    assert_eq!(exit, 1, "{out}");
    assert!(
        out.contains("loses guard network-policy NetworkPolicy sovereign-eu/allow-egress-proxy"),
        "{out}"
    );
}

#[test]
fn unreadable_input_and_old_reports_exit_2_naming_the_path() {
    let missing = evidence(&["-f", "/nonexistent/evidence-input"]);
    assert_eq!(code(&missing), 2);
    assert!(text(&missing.stderr).contains("/nonexistent/evidence-input"));
    let dir = example("bad-old", &[], &[]);
    let old = evidence(&[
        "-f",
        dir.to_str().expect("utf-8"),
        "--diff",
        "/nonexistent/old.json",
    ]);
    assert_eq!(code(&old), 2);
    assert!(
        text(&old.stderr).contains("/nonexistent/old.json"),
        "{}",
        text(&old.stderr)
    );
    let garbage = dir.with_extension("garbage.json");
    std::fs::write(&garbage, "{\"regions\": 3}").expect("write");
    let bad = evidence(&[
        "-f",
        dir.to_str().expect("utf-8"),
        "--diff",
        garbage.to_str().expect("utf-8"),
    ]);
    assert_eq!(code(&bad), 2);
    assert!(
        text(&bad.stderr).contains("not an evidence report"),
        "{}",
        text(&bad.stderr)
    );
    let none = evidence(&[]);
    assert_eq!(code(&none), 2);
}

/// Red team: what an attacker would do to hide a path, each of which must show as a violation
/// or an unknown path, never as nothing.
#[test]
fn red_team_hidden_paths_are_listed() {
    let baseline = json_of(&example("red-base", &[], &[]));
    let cases: Vec<(&str, Edits, Extra, &str, &str)> = vec![
        (
            // A backend that claims an EU hosting but points at a host the region never vouched for.
            "claims-eu-host-abroad",
            vec![],
            vec![(
                "25-x.yaml",
                r#"
apiVersion: sovereign.ai/v1alpha1
kind: InferenceBackend
metadata: {name: cheap-eu, namespace: sovereign-eu}
spec:
  region: eu
  modelName: cheap
  external: {provider: OpenAICompatible, endpoint: "https://llm.example.us/v1", hostingJurisdiction: FR, upstreamModel: x, apiKeySecret: {name: k, key: k}}
  pricing: {currency: EUR, inputPer1MTokens: "1", outputPer1MTokens: "1"}
  dataClasses: [public]
"#,
            )],
            "llm.example.us",
            "violation",
        ),
        (
            // A Langfuse host that merely starts like an in-region one.
            "langfuse-lookalike",
            vec![(
                "10-region-eu.yaml",
                "langfuseHost: https://langfuse.eu.observability.example.com",
                "langfuseHost: https://langfuse.eu.observability.example.com.attacker.io",
            )],
            vec![],
            "langfuse.eu.observability.example.com.attacker.io",
            "violation",
        ),
        (
            // A wildcard Velero backup from a namespace nobody labelled, to a bucket abroad.
            "wildcard-backup-abroad",
            vec![],
            vec![(
                "91-x.yaml",
                r#"
apiVersion: velero.io/v1
kind: BackupStorageLocation
metadata: {name: offsite, namespace: tools}
spec: {provider: aws, objectStorage: {bucket: b}, config: {region: us-west-2}}
---
apiVersion: velero.io/v1
kind: Backup
metadata: {name: everything, namespace: tools}
spec: {includedNamespaces: ["*"], storageLocation: offsite, snapshotVolumes: false}
"#,
            )],
            "storageLocation offsite (spec.config.region)",
            "violation",
        ),
        (
            // A BSL whose annotation claims Frankfurt while its endpoint spells Virginia.
            "lying-annotation",
            vec![],
            vec![(
                "91-x.yaml",
                r#"
apiVersion: velero.io/v1
kind: BackupStorageLocation
metadata: {name: liar, namespace: tools, annotations: {topology.kubernetes.io/region: eu-central-1}}
spec: {provider: aws, objectStorage: {bucket: b}, config: {region: eu-central-1, s3Url: "https://s3.us-east-1.amazonaws.com"}}
---
apiVersion: velero.io/v1
kind: Schedule
metadata: {name: weekly, namespace: tools}
spec: {schedule: "@weekly", template: {includedNamespaces: [sovereign-eu], storageLocation: liar, snapshotVolumes: false}}
"#,
            )],
            "storageLocation liar (spec.config.s3Url (s3.us-east-1.amazonaws.com))",
            "violation",
        ),
        (
            // A MinIO endpoint that spells no region and declares none: unknown, not omitted.
            "unplaceable-minio",
            vec![],
            vec![(
                "91-x.yaml",
                r#"
apiVersion: velero.io/v1
kind: BackupStorageLocation
metadata: {name: minio, namespace: tools}
spec: {provider: aws, objectStorage: {bucket: b}, config: {region: minio, s3Url: "https://minio.backup.example.net"}}
---
apiVersion: velero.io/v1
kind: Schedule
metadata: {name: hourly, namespace: tools}
spec: {schedule: "@hourly", template: {includedNamespaces: ["sovereign-*"], storageLocation: minio, snapshotVolumes: false}}
"#,
            )],
            "storageLocation minio (spec.config.s3Url (minio.backup.example.net))",
            "unknown",
        ),
        (
            // extraConfig: a webhook the reserved paths do not cover, and a model list injection.
            "extra-config-webhook",
            vec![(
                "10-region-eu.yaml",
                "    masterKeySecret: {name: litellm-master-key, key: master-key}\n",
                "    masterKeySecret: {name: litellm-master-key, key: master-key}\n    extraConfig:\n      general_settings: {alerting: [webhook], alerting_args: {webhook_url: \"https://hooks.example.us/T0\"}}\n      model_list: [{model_name: x, litellm_params: {model: openai/gpt-4o, api_base: \"https://api.openai.com\"}}]\n",
            )],
            vec![],
            "hooks.example.us",
            "unknown",
        ),
        (
            // Spend logs to a database whose URL nobody can read.
            "gateway-database",
            vec![(
                "10-region-eu.yaml",
                "    masterKeySecret: {name: litellm-master-key, key: master-key}\n",
                "    masterKeySecret: {name: litellm-master-key, key: master-key}\n    databaseSecret: {name: litellm-db, key: url}\n",
            )],
            vec![],
            "DATABASE_URL of Secret sovereign-eu/litellm-db",
            "unknown",
        ),
    ];
    for (name, edits, extra, to, status) in cases {
        let report = json_of(&example(name, &edits, &extra));
        let changes = changed(&baseline, &report);
        let hit = changes.iter().find(|(_, p)| p["to"] == to);
        let Some((_, path)) = hit else {
            panic!("{name}: no path to {to}; changes: {changes:#?}");
        };
        assert_eq!(path["status"], status, "{name}: {path}");
        for (region, other) in &changes {
            assert_ne!(
                other["status"],
                "ok",
                "{name}: a change left {} ok",
                key(region, other)
            );
        }
        // The injected model list never routes: the operator owns model_list.
        if name == "extra-config-webhook" {
            assert!(
                !paths(&report)
                    .iter()
                    .any(|(_, p)| p["to"] == "api.openai.com"),
                "{name}: the injected model list must not be rendered"
            );
        }
    }
}

/// Legitimate setups that must not be flagged.
#[test]
fn legitimate_setups_stay_ok() {
    let cases: Vec<(&str, Edits, Extra)> = vec![
        (
            // MinIO in Paris, declared by its owner: no host spells a region, the annotation does.
            "minio-declared-in-region",
            vec![],
            vec![(
                "91-x.yaml",
                r#"
apiVersion: velero.io/v1
kind: BackupStorageLocation
metadata: {name: minio-paris, namespace: tools, annotations: {topology.kubernetes.io/region: fr-par}}
spec: {provider: aws, objectStorage: {bucket: b}, config: {region: minio, s3Url: "https://minio.par.example.eu"}}
---
apiVersion: velero.io/v1
kind: Schedule
metadata: {name: paris, namespace: tools}
spec: {schedule: "@daily", template: {includedNamespaces: [sovereign-eu], storageLocation: minio-paris, snapshotVolumes: false}}
"#,
            )],
        ),
        (
            // A backup abroad of a namespace that is no region's: not the regions' data.
            "unrelated-backup-abroad",
            vec![],
            vec![(
                "91-x.yaml",
                r#"
apiVersion: velero.io/v1
kind: BackupStorageLocation
metadata: {name: offsite, namespace: tools}
spec: {provider: aws, objectStorage: {bucket: b}, config: {region: us-west-2}}
---
apiVersion: velero.io/v1
kind: Backup
metadata: {name: ci, namespace: tools}
spec: {includedNamespaces: [ci-runners], excludedNamespaces: [sovereign-eu, sovereign-in], storageLocation: offsite}
"#,
            )],
        ),
        (
            // Host names are case-insensitive.
            "upper-case-host",
            vec![(
                "10-region-eu.yaml",
                "langfuseHost: https://langfuse.eu.observability.example.com",
                "langfuseHost: https://LANGFUSE.eu.observability.example.com",
            )],
            vec![],
        ),
    ];
    for (name, edits, extra) in cases {
        let report = json_of(&example(name, &edits, &extra));
        for (region, path) in paths(&report) {
            assert_eq!(
                path["status"],
                "ok",
                "{name}: {}: {path}",
                key(&region, &path)
            );
        }
    }
}

#[test]
fn markdown_and_html_carry_every_path() {
    let dir = example("formats", &[], &[]);
    let report = json_of(&dir);
    let markdown = evidence(&["-f", dir.to_str().expect("utf-8"), "--format", "markdown"]);
    assert_eq!(code(&markdown), 0);
    let markdown = text(&markdown.stdout);
    let html = evidence(&["-f", dir.to_str().expect("utf-8"), "--format", "html"]);
    assert_eq!(code(&html), 0);
    let html = text(&html.stdout);
    assert!(
        !html.contains("http://") || !html.contains("src="),
        "no external resource"
    );
    for (region, path) in paths(&report) {
        let to = path["to"].as_str().expect("to");
        assert!(
            markdown.contains(&to.replace('|', "\\|")),
            "markdown lacks {}",
            key(&region, &path)
        );
        let escaped = to
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;");
        assert!(
            html.contains(&format!("data-to=\"{escaped}\"")),
            "html lacks {}",
            key(&region, &path)
        );
    }
}
