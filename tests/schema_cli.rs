//! One input path for every offline command: `render`, `check` and `report -f` refuse a custom
//! resource the API server would refuse, with the API server's message and exit code 2, and
//! accept what it accepts. The messages are the ones kube-apiserver v1.36 gives (the e2e test
//! `offline_validation_says_what_the_api_server_says` compares them on a real API server for
//! every case of the schema corpus).

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sovereign_operator::api::schema;
use support::corpus::cases;

fn run(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sovereign-operator"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin.as_bytes())
        .expect("write");
    child.wait_with_output().expect("exits")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The region of issue 16: `render` printed a gateway whose node affinity was `In []`.
const BAD_REGION: &str = "apiVersion: sovereign.ai/v1alpha1\nkind: SovereignRegion\nmetadata: {name: eu}\nspec:\n  jurisdiction: Europe\n  locations: []\n";

/// What kube-apiserver v1.36.3 says to BAD_REGION (`kubectl create --dry-run=server`).
const BAD_REGION_MESSAGE: &str = "error: -:1: SovereignRegion.sovereign.ai \"eu\" is invalid: [spec.jurisdiction: Invalid value: \"Europe\": jurisdiction must be EU or an ISO 3166-1 alpha-2 country code such as IN or FR, spec.locations: Invalid value: locations must list at least one topology.kubernetes.io/region value]\n";

fn policy() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/eu-india")
}

#[test]
fn render_refuses_a_region_the_api_server_refuses() {
    let output = run(&["render", "-f", "-"], BAD_REGION);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(output.stdout.is_empty(), "nothing rendered");
    assert_eq!(stderr(&output), BAD_REGION_MESSAGE);
}

#[test]
fn check_refuses_it_with_the_same_message() {
    let output = run(&["check", "-f", "-"], BAD_REGION);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_eq!(stderr(&output), BAD_REGION_MESSAGE);
    // As context (--policies) too: a refused region cannot govern.
    let output = run(
        &[
            "check",
            "-f",
            policy().join("40-budgets.yaml").to_str().expect("utf-8"),
            "--policies",
            "-",
        ],
        BAD_REGION,
    );
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_eq!(stderr(&output), BAD_REGION_MESSAGE);
}

#[test]
fn report_refuses_a_budget_the_api_server_refuses() {
    let budget = "apiVersion: sovereign.ai/v1alpha1\nkind: TokenBudget\nmetadata: {name: t, namespace: team}\nspec:\n  period: Monthly\n  limit: {tokens: -5}\n";
    let output = run(&["report", "-f", "-"], budget);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        "error: -:1: TokenBudget.sovereign.ai \"t\" is invalid: spec.limit.tokens: Invalid value: -5: limit.tokens must not be negative\n"
    );
}

#[test]
fn a_mistyped_field_is_refused_not_dropped() {
    let region = BAD_REGION
        .replace("Europe", "EU")
        .replace("[]", "[europe-west9]")
        + "  gateway: {replicas: 2, replica: 3}\n";
    for command in ["render", "check"] {
        let output = run(&[command, "-f", "-"], &region);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{command}: {}",
            stderr(&output)
        );
        assert_eq!(
            stderr(&output),
            "error: -:1: SovereignRegion in version \"v1alpha1\" cannot be handled as a SovereignRegion: strict decoding error: unknown field \"spec.gateway.replica\"\n",
            "{command}"
        );
    }
}

#[test]
fn valid_input_is_unchanged() {
    let example = policy();
    let output = run(&["render", "-f", example.to_str().expect("utf-8")], "");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let output = run(&["check", "-f", example.to_str().expect("utf-8")], "");
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
}

/// Every create case of the schema corpus (the one the e2e suite sends to a real API server)
/// through the shared path: accepted cases pass, refused ones carry the corpus's field and
/// message.
#[test]
fn the_shared_path_accepts_and_refuses_as_the_corpus_says() {
    let mut failures = Vec::new();
    let mut refused = 0;
    for case in cases().iter().filter(|c| c.old.is_none()) {
        match (case.expect, schema::validate(&case.object)) {
            (None, Ok(())) => {}
            (None, Err(error)) => failures.push(format!("{}: refused: {error}", case.name)),
            (Some(expected), Ok(())) => {
                failures.push(format!("{}: accepted, expected {expected:?}", case.name));
            }
            (Some(expected), Err(error)) => {
                refused += 1;
                let (field, text) = match expected.split_once(": ") {
                    Some((field, text)) if field.starts_with("spec") => (Some(field), text),
                    _ => (None, expected),
                };
                let message = error.to_string();
                let names_field = field.is_none_or(|f| message.contains(&format!("{f}: ")));
                if !names_field || !message.contains(text) {
                    failures.push(format!(
                        "{}: expected {expected:?}, got {message:?}",
                        case.name
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        refused >= 40,
        "the corpus shrank: {refused} refused create cases"
    );
}
