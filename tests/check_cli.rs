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
    let output = check(&[
        "-f",
        repo("tests/check/eu-stateful.yaml")
            .to_str()
            .expect("utf-8"),
    ]);
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

// ---------------------------------------------------------------------------------------------
// Cases on fixture directories under tests/check/cases/: what kubectl would send (issue 13,
// class 4), a gate its input cannot switch off (class 2), honest exit codes, and the legitimate
// manifests that must keep passing. Every case says why in one line.

const EXAMPLE: &str = "deploy/examples/eu-india";

/// One run of `check` and what it must give.
struct Case {
    /// `-f` paths, relative to the repository.
    files: &'static [&'static str],
    /// `--policies` paths, relative to the repository.
    policies: &'static [&'static str],
    /// Extra arguments.
    args: &'static [&'static str],
    /// Expected exit code.
    code: i32,
    /// Substrings stdout must contain.
    stdout: &'static [&'static str],
    /// Substrings stderr must contain.
    stderr: &'static [&'static str],
    /// Why this is the right verdict.
    reason: &'static str,
}

impl Case {
    const fn new(files: &'static [&'static str], code: i32, reason: &'static str) -> Self {
        Case {
            files,
            policies: &[EXAMPLE],
            args: &[],
            code,
            stdout: &[],
            stderr: &[],
            reason,
        }
    }
    const fn policies(mut self, policies: &'static [&'static str]) -> Self {
        self.policies = policies;
        self
    }
    const fn args(mut self, args: &'static [&'static str]) -> Self {
        self.args = args;
        self
    }
    const fn stdout(mut self, stdout: &'static [&'static str]) -> Self {
        self.stdout = stdout;
        self
    }
    const fn stderr(mut self, stderr: &'static [&'static str]) -> Self {
        self.stderr = stderr;
        self
    }

    fn run(&self) {
        let mut command = binary();
        command.arg("check").args(self.args);
        for file in self.files {
            command.arg("-f").arg(repo(file));
        }
        for policies in self.policies {
            command.arg("--policies").arg(repo(policies));
        }
        let output = command.output().expect("the binary runs");
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        let context = format!("{}\n--- stdout\n{stdout}--- stderr\n{stderr}", self.reason);
        assert_eq!(code(&output), self.code, "{context}");
        for expected in self.stdout {
            assert!(
                stdout.contains(expected),
                "stdout lacks {expected:?}: {context}"
            );
        }
        for expected in self.stderr {
            assert!(
                stderr.contains(expected),
                "stderr lacks {expected:?}: {context}"
            );
        }
    }
}

macro_rules! cases {
    ($($name:ident: $case:expr;)*) => {
        $(
            #[test]
            fn $name() {
                $case.run();
            }
        )*
    };
}

const C: &str = "tests/check/cases";

cases! {
    // --- class 4: check reads what kubectl would send -------------------------------------
    typed_configmaplist_items_are_judged: Case::new(&["tests/check/cases/typed-configmaplist"], 1,
        "items of a ConfigMapList without kind are ConfigMaps for kubectl, and this one leaks")
        .stdout(&["ConfigMap default/customer-export: "]);
    typed_secretlist_items_are_judged: Case::new(&["tests/check/cases/typed-secretlist"], 1,
        "a SecretList item is a Secret for kubectl; personal data in an unlabelled namespace")
        .stdout(&["Secret default/crm-dump: "]);
    list_inside_a_list_is_refused: Case::new(&["tests/check/cases/nested-list"], 2,
        "kubectl refuses a List inside a List; check must not pass what it cannot judge")
        .stderr(&["nested-list/list.yaml:2: List: items[1] is itself a list"]);
    items_key_makes_any_object_a_list: Case::new(&["tests/check/cases/items-on-any-kind"], 1,
        "kubectl treats any object with `items` as a list and sends the items, not the object")
        .stdout(&["ConfigMap default/smuggled: "]);
    merge_key_brings_the_data_class_label: Case::new(&["tests/check/cases/merge-key-label"], 1,
        "`<<: *governed` puts the data-class label on the ConfigMap kubectl sends")
        .stdout(&["ConfigMap default/merged-pii: "]);
    merge_of_a_list_of_maps_governs_the_pod_template: Case::new(&["tests/check/cases/merge-key-list"], 1,
        "`<<: [*common, *governed]` labels the pod template pii, pinned to us-east-1")
        .stdout(&["Deployment sovereign-eu/crm-worker: "]);
    merge_that_readers_disagree_on_is_refused: Case::new(&["tests/check/cases/merge-order-conflict"], 2,
        "kubectl sends pii, a YAML-spec reader public: one file, two objects, so refuse it")
        .stderr(&["merge-order-conflict/cm.yaml:", "`sovereign.ai/data-class` is \"pii\" for kubectl"]);
    anchors_and_aliases_are_expanded: Case::new(&["tests/check/cases/anchor-alias"], 1,
        "an aliased nodeSelector still pins the pii StatefulSet to us-east-1")
        .stdout(&["StatefulSet sovereign-eu/profiles: "]);
    duplicate_mapping_key_is_refused: Case::new(&["tests/check/cases/duplicate-key"], 2,
        "kubectl keeps the last of two data-class labels, other readers the first: ambiguous")
        .stderr(&["duplicate-key/cm.yaml:", "duplicate key `sovereign.ai/data-class`"]);
    content_after_document_end_marker_is_refused: Case::new(&["tests/check/cases/document-end-marker"], 2,
        "kubectl silently drops what follows `...` in a section; the reader must not guess")
        .stderr(&["document end marker"]);
    separator_followed_by_content_is_refused: Case::new(&["tests/check/cases/bad-separator"], 2,
        "kubectl refuses `--- {…}` (\"invalid Yaml document separator\")")
        .stderr(&["bad-separator/cm.yaml:8: invalid document separator"]);
    json_array_file_is_refused: Case::new(&["tests/check/cases/json-array"], 2,
        "kubectl cannot decode a top-level JSON array; before, its objects were silently skipped")
        .stderr(&["objects.json:1: a document must be an object", "not a sequence"]);
    object_without_api_version_is_refused: Case::new(&["tests/check/cases/no-api-version"], 2,
        "kubectl cannot map an object without apiVersion; a typo must not pass unjudged")
        .stderr(&["no-api-version/cm.yaml:1: no `apiVersion`"]);
    scalar_document_is_refused: Case::new(&["tests/check/cases/scalar-document"], 2,
        "a document that is a bare string is an error for kubectl")
        .stderr(&["scalar-document/cm.yaml:9: a document must be an object", "not a string"]);
    every_object_of_a_json_stream_is_judged: Case::new(&["tests/check/cases/json-stream"], 1,
        "kubectl reads concatenated JSON objects; the second one leaks")
        .stdout(&["ConfigMap default/second-in-stream: "])
        .stderr(&["2 objects"]);
    yaml_after_one_json_object_is_judged: Case::new(&["tests/check/cases/json-then-yaml"], 1,
        "after one JSON object kubectl reads the rest of the file as YAML; that part leaks")
        .stdout(&["ConfigMap default/yaml-after-json: "])
        .stderr(&["2 objects"]);
    files_kubectl_ignores_are_not_judged: Case::new(&["tests/check/cases/ignored-extensions"], 0,
        "kubectl -f DIR reads only .json/.yaml/.yml (case-sensitive): notes.txt, UPPER.YAML are not sent")
        .stderr(&["compliant: 1 objects"]);
    subdirectories_are_read: Case::new(&["tests/check/cases/subdirectory"], 1,
        "a directory is read recursively, as `kubectl apply -R -f`; the leak is two levels down")
        .stdout(&["ConfigMap default/deep-yml: "]);
    utf16_with_byte_order_mark_is_read: Case::new(&["tests/check/cases/utf16"], 1,
        "kubectl decodes UTF-16 with a BOM; before, check refused the file as not UTF-8")
        .stdout(&["ConfigMap default/utf16-leak: "]);
    crlf_line_endings_are_read: Case::new(&["tests/check/cases/crlf"], 1,
        "`---\\r\\n` separates documents for kubectl; the second document leaks")
        .stdout(&["ConfigMap default/crlf-leak: "]);
    empty_and_comment_only_documents_are_skipped: Case::new(&["tests/check/cases/empty-documents"], 0,
        "kubectl skips empty and comment-only documents; they are not objects")
        .stderr(&["compliant: 1 objects"]);
    null_items_send_nothing: Case::new(&["tests/check/cases/items-null"], 0,
        "`items: null` is an empty list for kubectl: the ConfigMap never reaches the cluster")
        .stderr(&["compliant: 0 objects"]);

    // --- class 2: the gate cannot be switched off by the input it judges ------------------
    own_region_eu_with_a_us_location_is_refused: Case::new(&["tests/check/cases/own-region-eu"], 2,
        "a repo shipping its own region eu (US location) would make US placement compliant")
        .stderr(&["SovereignRegion eu at", "own-region-eu/region.yaml:1",
                  "redefines the one of --policies at", "eu-india/10-region-eu.yaml:2"]);
    own_policy_exempting_a_namespace_is_refused: Case::new(&["tests/check/cases/own-policy-exempt"], 2,
        "a repo shipping its own pii-home-region that exempts `default` would hide its leak")
        .stderr(&["ResidencyPolicy pii-home-region at", "own-policy-exempt/policy.yaml:1",
                  "eu-india/30-policies.yaml:3"]);
    new_region_in_judged_input_is_refused: Case::new(&["tests/check/cases/new-region"], 2,
        "a region of its own (us-free) would make its data's home the US; kubectl would apply it")
        .stderr(&["SovereignRegion us-free at", "new-region/all.yaml:1", "cannot add one"]);
    new_policy_in_judged_input_is_refused: Case::new(&["tests/check/cases/new-policy"], 2,
        "with --policies, policies come from there only; a judged repo cannot add one")
        .stderr(&["ResidencyPolicy team-extra at"]);
    namespace_of_policies_redefined_is_refused: Case::new(&["tests/check/cases/relabel-namespace"], 2,
        "relabelling the --policies Namespace sovereign-eu to `in` would move the EU stack")
        .stderr(&["Namespace sovereign-eu is defined twice", "eu-india/00-namespaces.yaml:5",
                  "relabel-namespace/ns.yaml:1"]);
    stack_namespace_relabelled_is_refused: Case::new(&["tests/check/cases/relabel-namespace"], 2,
        "the region's stack namespace, not declared in --policies, still cannot be moved")
        .policies(&["deploy/examples/eu-india/10-region-eu.yaml", "deploy/examples/eu-india/30-policies.yaml"])
        .stderr(&["Namespace sovereign-eu at", "stack namespace of SovereignRegion eu",
                  "10-region-eu.yaml:2", "sovereign.ai/region=in"]);
    identical_copy_of_a_policies_namespace_is_refused: Case::new(&["tests/check/cases/identical-namespace"], 2,
        "decision: a copy of a governance object is refused even when identical; copies drift")
        .stderr(&["Namespace sovereign-eu is defined twice", "identical-namespace/ns.yaml:2"]);
    duplicate_object_across_files_is_refused: Case::new(&["tests/check/cases/duplicate-across-files"], 2,
        "two ConfigMaps settings (pii, public): kubectl keeps the last applied, order decides")
        .stderr(&["ConfigMap sovereign-eu/settings is defined twice", "duplicate-across-files/a.yaml:1",
                  "duplicate-across-files/b.yaml:1"]);
    duplicate_object_in_one_file_is_refused: Case::new(&["tests/check/cases/duplicate-in-one-file"], 2,
        "identical twice in one file is still two definitions")
        .stderr(&["duplicate-in-one-file/cm.yaml:1 and at", "duplicate-in-one-file/cm.yaml:9"]);
    duplicate_region_without_policies_is_refused: Case::new(&["tests/check/cases/own-policies-duplicate-region"], 2,
        "without --policies the second eu (US location) must not lose or win by file order")
        .policies(&[])
        .stderr(&["SovereignRegion eu is defined twice", "regions.yaml:1", "regions.yaml:8"]);
    own_policies_without_the_flag_still_work: Case::new(&["tests/check/cases/own-policies"], 0,
        "a repository holding its own regions and policies is context and judged, as before")
        .policies(&[])
        .stderr(&["compliant: 3 objects checked against 1 residency policies"]);
    same_files_as_input_and_policies_count_once: Case::new(&[EXAMPLE], 0,
        "one file reached by -f and --policies is one definition, not a duplicate, and judged")
        .stderr(&["compliant: 15 objects"]);
    policies_inside_the_judged_tree_count_once: Case::new(&["tests/check/cases/policies-inside-tree"], 0,
        "`-f . --policies policies/`: the policies are context (not a judged region), all is judged")
        .policies(&["tests/check/cases/policies-inside-tree/policies"])
        .stderr(&["compliant: 3 objects"]);
    new_namespace_is_context: Case::new(&["tests/check/cases/new-namespace"], 0,
        "a new team namespace labelled eu is what a deploy adds; its pii ConfigMap is at home")
        .stderr(&["compliant: 2 objects"]);
    new_namespace_region_is_honoured: Case::new(&["tests/check/cases/new-namespace-other-region"], 1,
        "EU personal data in a new namespace labelled `in` is out of its home region")
        .stdout(&["ConfigMap team-india/eu-customers: "]);

    // --- legitimate manifests -----------------------------------------------------------
    compliant_list_passes: Case::new(&["tests/check/cases/compliant-list"], 0,
        "a List of compliant objects is three compliant objects")
        .stderr(&["compliant: 3 objects"]);
    compliant_configmaplist_json_passes: Case::new(&["tests/check/cases/compliant-configmaplist"], 0,
        "a JSON ConfigMapList of two at-home ConfigMaps: two objects, both compliant")
        .stderr(&["compliant: 2 objects"]);
    merge_keys_for_common_labels_pass: Case::new(&["tests/check/cases/compliant-merge-keys"], 0,
        "common labels merged with `<<` and overridden after it read the same everywhere")
        .stderr(&["compliant: 1 objects"]);

    // --- exit codes -----------------------------------------------------------------------
    a_policy_the_engine_cannot_apply_exits_2: Case::new(&["tests/check/cases/compliant-list"], 2,
        "an engine error is not a pass: a sink that is not CEL cannot be checked")
        .policies(&[EXAMPLE, "tests/check/cases/bad-policy"])
        .stderr(&["error: ResidencyPolicy broken-sink: sinks[0]"]);
    engine_errors_exit_2_in_json_too: Case::new(&["tests/check/cases/compliant-list"], 2,
        "the JSON report lists the engine's errors and the exit code stays 2")
        .policies(&[EXAMPLE, "tests/check/cases/bad-policy"])
        .args(&["--output", "json"])
        .stdout(&["\"compliant\": false", "broken-sink: sinks[0]"]);
    policies_without_a_residency_policy_exit_2: Case::new(&["tests/check/cases/compliant-list"], 2,
        "--policies pointing at the wrong directory must not pass vacuously")
        .policies(&["tests/check/cases/new-namespace"])
        .stderr(&["no ResidencyPolicy in --policies"]);
}

#[test]
fn a_typed_list_on_stdin_is_judged() {
    let mut child = binary()
        .args(["check", "-f", "-", "--policies"])
        .arg(repo(EXAMPLE))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let manifest =
        std::fs::read(repo(&format!("{C}/typed-configmaplist/list.yaml"))).expect("fixture");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(&manifest).expect("write");
    }
    let output = child.wait_with_output().expect("wait");
    let stdout = text(&output.stdout);
    // Reason: `kubectl apply -f -` flattens the typed list read from stdin the same way.
    assert_eq!(code(&output), 1, "{stdout}{}", text(&output.stderr));
    assert!(
        stdout.contains("ConfigMap default/customer-export: "),
        "{stdout}"
    );
}
