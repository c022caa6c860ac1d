//! `sovereign-operator render`: the objects for the example, offline; unreadable input exits 2
//! naming the path.

use std::process::Command;

fn render(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sovereign-operator"))
        .arg("render")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("the binary runs")
}

#[test]
fn renders_every_child_of_the_example() {
    let output = render(&["-f", "deploy/examples/eu-india/"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("utf-8");
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    for line in text.lines().filter(|l| l.starts_with("kind: ")) {
        *kinds
            .entry(line.trim_start_matches("kind: ").to_owned())
            .or_default() += 1;
    }
    // Per region: namespace, gateway config + collector config, gateway + collector (+ pgvector
    // in India: a StatefulSet) ...; per vLLM backend a Deployment and a Service.
    assert_eq!(kinds.get("Namespace"), Some(&2), "{kinds:?}");
    assert_eq!(
        kinds.get("StatefulSet"),
        Some(&2),
        "qdrant (EU) and pgvector (India): {kinds:?}"
    );
    let deployments = kinds.get("Deployment").copied().unwrap_or_default();
    assert_eq!(
        deployments,
        2 + 2 + 3,
        "gateways, collectors, 3 vLLM backends: {kinds:?}"
    );
    assert!(
        text.contains("name: vllm-sarvam-2b"),
        "sarvam's workload is rendered"
    );
    assert!(
        text.contains("hosted_vllm/sarvam-2b"),
        "and routed by the India gateway"
    );
    // Offline there are no UIDs, hence no owner references.
    assert!(!text.contains("ownerReferences"));
}

#[test]
fn reads_stdin() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sovereign-operator"))
        .args(["render", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("runs");
    let region = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/examples/eu-india/10-region-in.yaml"
    ))
    .expect("example");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&region)
        .expect("write");
    let output = child.wait_with_output().expect("exits");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("name: sovereign-in"), "{text}");
    assert!(
        text.contains("model_list: []"),
        "no backends given: the gateway serves nothing"
    );
}

#[test]
fn unreadable_input_exits_2_naming_the_path() {
    let output = render(&["-f", "does/not/exist.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("does/not/exist.yaml"), "{stderr}");

    let dir = std::env::temp_dir().join(format!("render-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let file = dir.join("bad.yaml");
    std::fs::write(&file, "kind: SovereignRegion\nspec: [unclosed\n").expect("write");
    let output = render(&["-f", file.to_str().expect("utf-8 path")]);
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("bad.yaml:"), "file:line in {stderr}");
    let _ = std::fs::remove_dir_all(dir);
}
