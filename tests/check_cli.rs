//! `sovereign-operator check` as a CI pipeline runs it: the built binary, real files, exit
//! codes 0 (compliant), 1 (violations) and 2 (unusable input).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sovereign-operator"))
}

fn repo(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn check(args: &[&str]) -> Output {
    binary()
        .arg("check")
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
    let dir = std::env::temp_dir().join(format!("sovereign-check-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The compliant addition with `from` replaced by `to`, written to a scratch directory.
fn altered(name: &str, from: &str, to: &str) -> PathBuf {
    let original = std::fs::read_to_string(repo("tests/check/eu-stateful.yaml")).expect("fixture");
    assert!(original.contains(from), "fixture lacks {from:?}");
    let dir = scratch(name);
    let path = dir.join("eu-stateful.yaml");
    std::fs::write(&path, original.replacen(from, to, 1)).expect("write");
    path
}

#[test]
fn the_example_is_compliant() {
    let example = repo("deploy/examples/eu-india");
    let example = example.to_str().expect("utf-8 path");
    let output = check(&["-f", example]);
    assert_eq!(
        code(&output),
        0,
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
    assert!(output.stdout.is_empty(), "{}", text(&output.stdout));

    let addition = repo("tests/check/eu-stateful.yaml");
    let output = check(&["-f", example, "-f", addition.to_str().expect("utf-8")]);
    assert_eq!(
        code(&output),
        0,
        "{}{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}

#[test]
fn a_statefulset_pinned_abroad_fails_naming_object_and_rule() {
    let path = altered(
        "sts",
        "topology.kubernetes.io/region: europe-west9",
        "topology.kubernetes.io/region: us-east-1",
    );
    let output = check(&[
        "-f",
        path.to_str().expect("utf-8"),
        "--policies",
        repo("deploy/examples/eu-india").to_str().expect("utf-8"),
    ]);
    let stdout = text(&output.stdout);
    assert_eq!(code(&output), 1, "{stdout}{}", text(&output.stderr));
    assert!(
        stdout.contains(
            "StatefulSet sovereign-eu/qdrant-customers: pinWorkloads (pii-home-region): "
        ) && stdout.contains("us-east-1"),
        "{stdout}"
    );
    assert_eq!(
        stdout.lines().count(),
        1,
        "one violation, one line: {stdout}"
    );
}

#[test]
fn a_backup_location_abroad_fails_in_text_and_json() {
    let path = altered("bsl", "region: eu-central-1", "region: us-east-1");
    let path = path.to_str().expect("utf-8");
    let policies = repo("deploy/examples/eu-india");
    let policies = policies.to_str().expect("utf-8");
    let output = check(&["-f", path, "--policies", policies]);
    let stdout = text(&output.stdout);
    assert_eq!(code(&output), 1, "{stdout}{}", text(&output.stderr));
    assert!(
        stdout
            .contains("BackupStorageLocation velero-eu/eu-backups: forbidCrossBorderReplication (")
            && stdout.contains("us-east-1"),
        "{stdout}"
    );

    let output = check(&["-f", path, "--policies", policies, "--output", "json"]);
    assert_eq!(code(&output), 1);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON on stdout");
    assert_eq!(report["compliant"], false);
    let violations = report["violations"].as_array().expect("violations array");
    assert!(!violations.is_empty());
    assert!(violations.iter().all(|v| {
        v["kind"] == "BackupStorageLocation"
            && v["namespace"] == "velero-eu"
            && v["name"] == "eu-backups"
            && v["rule"] == "forbidCrossBorderReplication"
            && v["policy"].is_string()
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("us-east-1"))
    }));
}

#[test]
fn stdin_is_read_with_a_dash() {
    let mut child = binary()
        .args(["check", "-f", "-", "--policies"])
        .arg(repo("deploy/examples/eu-india"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: leaked\n  namespace: default\n  labels: {sovereign.ai/data-class: pii}\n";
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(manifest.as_bytes()).expect("write");
    }
    let output = child.wait_with_output().expect("wait");
    let stdout = text(&output.stdout);
    assert_eq!(code(&output), 1, "{stdout}{}", text(&output.stderr));
    assert!(
        stdout.contains("ConfigMap default/leaked: dataLocation (pii-home-region): "),
        "{stdout}"
    );
}

#[test]
fn malformed_yaml_exits_2_with_file_and_line() {
    let dir = scratch("malformed");
    let path = dir.join("broken.yaml");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata: [unclosed\n",
    )
    .expect("write");
    let output = check(&["-f", dir.to_str().expect("utf-8")]);
    let stderr = text(&output.stderr);
    assert_eq!(code(&output), 2, "{stderr}");
    let location = format!("{}:", path.display());
    assert!(stderr.contains(&location), "{stderr}");
    let line: usize = stderr
        .split(&location)
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no line number in {stderr}"));
    assert!(line >= 5, "{stderr}");
}

#[test]
fn unusable_input_exits_2() {
    let output = check(&["-f", "/nonexistent/manifests.yaml"]);
    assert_eq!(code(&output), 2);
    assert!(text(&output.stderr).contains("/nonexistent/manifests.yaml"));

    // Without any policy the check could only pass vacuously: refuse.
    let output = check(&["-f", repo("tests/check").to_str().expect("utf-8")]);
    assert_eq!(code(&output), 2);
    assert!(text(&output.stderr).contains("no ResidencyPolicy"));

    // A policy whose sink expression is not CEL cannot be applied.
    let dir = scratch("bad-sink");
    std::fs::write(
        dir.join("policy.yaml"),
        "apiVersion: sovereign.ai/v1alpha1\nkind: ResidencyPolicy\nmetadata: {name: broken}\nspec:\n  dataClasses: [pii]\n  sinks:\n    - {group: example.com, kinds: [Mirror], locationExpression: \"object.spec.(\"}\n",
    )
    .expect("write");
    let output = check(&["-f", dir.to_str().expect("utf-8")]);
    assert_eq!(code(&output), 2, "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("ResidencyPolicy broken: sinks[0]"),
        "{}",
        text(&output.stderr)
    );
}
