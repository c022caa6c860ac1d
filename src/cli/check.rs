//! `sovereign-operator check`: judge manifests against the residency policies, offline.
//!
//! Trust model of the input. With `--policies`, what those files provide is authoritative: the
//! SovereignRegions and ResidencyPolicies come from there only, and so do the Namespaces,
//! BackupStorageLocations and VolumeReplicationClasses they define. The judged manifests (`-f`)
//! may bring new context of their own — a new Namespace with its region label, a new
//! BackupStorageLocation a Backup of theirs names — because that is what a deploy adds, and it
//! is judged like everything else they bring. They may not switch the gate off:
//!
//! - a SovereignRegion or ResidencyPolicy in `-f` is refused: redefining one of `--policies`
//!   (an `eu` region with a US location, a `pii-home-region` that exempts a namespace) would
//!   change what compliant means, and adding a new one (a region of its own for its data) would
//!   too — kubectl would apply it to the cluster along with the rest;
//! - a Namespace in `-f` that is the stack namespace of a `--policies` region may not label
//!   itself with another region (that would move the stack's governance);
//! - the same object (group, kind, namespace, name) defined twice anywhere — in `-f` and
//!   `--policies`, in two files, in one — is refused, identical or not: "first wins" would
//!   make the verdict depend on file order, and an identical copy today is a drifted copy
//!   tomorrow. A file that `-f` and `--policies` both reach (e.g. `-f . --policies policies/`)
//!   is one definition, read as `--policies`.
//!
//! Without `--policies` the input is both context and judged (a repository that holds its own
//! policies); the duplicate rule still holds.
//!
//! Exit codes: 0 compliant, 1 violations, 2 input that cannot be judged (unreadable,
//! malformed, conflicting, no policy, or an error of the engine such as a policy that cannot be
//! applied or a kind it cannot judge).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::CliError;
use crate::api::labels::REGION;
use crate::manifest::{self, Document, Identity, ManifestError, Source};
use crate::residency::{Engine, Evaluation, Finding, Inventory};

/// Flags of `check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files or directories (recursively) of manifests to check; `-` reads stdin. Without
    /// --policies, the SovereignRegions, ResidencyPolicies and Namespaces among them are
    /// the context too.
    #[arg(short = 'f', long = "filename", required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Files or directories with the authoritative SovereignRegions, ResidencyPolicies,
    /// Namespaces and backup locations (repeatable): context, not checked themselves. With
    /// it, a region or policy in -f, or any object defined in both, is refused (exit 2).
    #[arg(long = "policies", value_name = "PATH")]
    pub policies: Vec<PathBuf>,
    /// Output format: one line per violation, or a JSON object.
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: Format,
}

/// Judges the manifests and prints the verdict (stdout) and its summary (stderr): exit 0
/// compliant, 1 violations, 2 input that cannot be judged.
pub fn run(args: Args) -> Result<ExitCode, CliError> {
    let verdict = check(&args.paths, &args.policies)?;
    let text = verdict.render(args.output).map_err(CliError::failure)?;
    print!("{text}");
    eprint!("{}", verdict.summary());
    Ok(ExitCode::from(verdict.exit_code()))
}

/// How `check` prints its verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `Kind namespace/name: rule (policy): message`, one line per violation.
    Text,
    /// `{"compliant", "objects", "violations": [...], "errors": [...]}`.
    Json,
}

/// Input that cannot be judged: exit code 2.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Unreadable, malformed or duplicated input.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A judged manifest redefines a region or policy of `--policies`.
    #[error(
        "{kind} {name} at {judged} redefines the one of --policies at {policies}: what \
         --policies provides governs, a judged manifest cannot replace it"
    )]
    Redefined {
        /// SovereignRegion or ResidencyPolicy.
        kind: String,
        /// Its name.
        name: String,
        /// `file:line` in `-f`.
        judged: String,
        /// `file:line` in `--policies`.
        policies: String,
    },
    /// A judged manifest brings a region or policy of its own while `--policies` is given.
    #[error(
        "{kind} {name} at {judged}: with --policies, regions and residency policies come from \
         --policies only; a judged manifest cannot add one (add it to the policies instead)"
    )]
    Governance {
        /// SovereignRegion or ResidencyPolicy.
        kind: String,
        /// Its name.
        name: String,
        /// `file:line` in `-f`.
        judged: String,
    },
    /// A judged Namespace relabels the stack namespace of a `--policies` region.
    #[error(
        "Namespace {name} at {judged} is the stack namespace of SovereignRegion {region} \
         (--policies, {policies}) but labels itself {REGION}={label}: a judged manifest cannot \
         move a region's stack to another region"
    )]
    StackNamespace {
        /// The namespace.
        name: String,
        /// `file:line` in `-f`.
        judged: String,
        /// The region whose stack namespace it is.
        region: String,
        /// `file:line` of the region.
        policies: String,
        /// The region label it carries.
        label: String,
    },
    /// Nothing to judge against.
    #[error(
        "no ResidencyPolicy in {where_}; nothing to check against (a mistyped path must not \
         turn CI green)"
    )]
    NoPolicy {
        /// `the input` or `--policies`.
        where_: &'static str,
    },
}

impl CheckError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        super::EXIT_INPUT
    }
}

impl From<CheckError> for CliError {
    fn from(error: CheckError) -> Self {
        CliError {
            code: error.exit_code(),
            message: error.to_string(),
        }
    }
}

/// The verdict on the judged objects.
#[derive(Debug)]
pub struct Verdict {
    /// Findings and the engine's errors.
    pub evaluation: Evaluation,
    /// Objects judged.
    pub objects: usize,
    /// ResidencyPolicies applied.
    pub policies: usize,
}

impl Verdict {
    /// 0 compliant, 1 violations, 2 when the engine could not judge something.
    pub fn exit_code(&self) -> u8 {
        if !self.evaluation.errors.is_empty() {
            2
        } else if !self.evaluation.findings.is_empty() {
            1
        } else {
            0
        }
    }

    /// What goes to stdout.
    pub fn render(&self, format: Format) -> Result<String, serde_json::Error> {
        match format {
            Format::Text => Ok(text_lines(&self.evaluation.findings)),
            Format::Json => {
                let report = serde_json::json!({
                    "compliant": self.evaluation.is_compliant(),
                    "objects": self.objects,
                    "violations": self.evaluation.findings,
                    "errors": self.evaluation.errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
                });
                serde_json::to_string_pretty(&report).map(|mut text| {
                    text.push('\n');
                    text
                })
            }
        }
    }

    /// What goes to stderr: the engine's errors, then a one-line summary.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        for error in &self.evaluation.errors {
            out.push_str(&format!("error: {error}\n"));
        }
        if self.evaluation.errors.is_empty() {
            if self.evaluation.findings.is_empty() {
                out.push_str(&format!(
                    "compliant: {} objects checked against {} residency policies\n",
                    self.objects, self.policies
                ));
            } else {
                out.push_str(&format!(
                    "{} residency violations in {} objects\n",
                    self.evaluation.findings.len(),
                    self.objects
                ));
            }
        }
        out
    }
}

/// Several policies often forbid the same thing with the same words (a BSL abroad breaks every
/// HomeRegion policy): one line naming them all reads better than one line each. JSON keeps
/// one entry per policy.
fn text_lines(findings: &[Finding]) -> String {
    let mut lines: Vec<(&Finding, Vec<&str>)> = Vec::new();
    let mut index: HashMap<_, usize> = HashMap::new();
    for finding in findings {
        let policy = finding.policy.as_deref().unwrap_or("region rule");
        let key = (
            &finding.kind,
            &finding.namespace,
            &finding.name,
            finding.rule,
            &finding.message,
        );
        match index.get(&key) {
            Some(&i) => lines[i].1.push(policy),
            None => {
                index.insert(key, lines.len());
                lines.push((finding, vec![policy]));
            }
        }
    }
    let mut out = String::new();
    for (finding, policies) in lines {
        let object = if finding.namespace.is_empty() {
            finding.name.clone()
        } else {
            format!("{}/{}", finding.namespace, finding.name)
        };
        out.push_str(&format!(
            "{} {object}: {} ({}): {}\n",
            finding.kind,
            finding.rule,
            policies.join(", "),
            finding.message
        ));
    }
    out
}

/// Reads `paths` (judged) and `policy_paths` (authoritative context) and judges.
pub fn check(paths: &[PathBuf], policy_paths: &[PathBuf]) -> Result<Verdict, CheckError> {
    let policy_sources = if policy_paths.is_empty() {
        Vec::new()
    } else {
        manifest::sources(policy_paths)?
    };
    let judged_sources = manifest::sources(paths)?;
    let policy_files: HashSet<PathBuf> = policy_sources.iter().filter_map(canonical).collect();
    let judged_files: HashSet<PathBuf> = judged_sources.iter().filter_map(canonical).collect();
    let mut context = Vec::new();
    let mut shared = Vec::new();
    for source in &policy_sources {
        let documents = manifest::read_source(source)?;
        if canonical(source).is_some_and(|p| judged_files.contains(&p)) {
            shared.extend(documents.iter().cloned());
        }
        context.extend(documents);
    }
    let mut judged = Vec::new();
    for source in judged_sources {
        // A file reached by both -f and --policies is one definition: read once, as context,
        // and judged too (`shared`).
        if canonical(&source).is_some_and(|p| policy_files.contains(&p)) {
            continue;
        }
        judged.extend(manifest::read_source(&source)?);
    }
    let policies = (!policy_paths.is_empty()).then_some(context.as_slice());
    judge(&judged, policies, &shared)
}

fn canonical(source: &Source) -> Option<PathBuf> {
    match source {
        Source::Stdin => None,
        Source::File(path) => std::fs::canonicalize(Path::new(path)).ok(),
    }
}

/// Judges `judged` against `policies` (the documents of `--policies`, when given) under the
/// trust model of the module documentation. `shared` are documents of `policies` that `-f`
/// named too: judged, but authoritative like the rest of `policies`.
pub fn judge(
    judged: &[Document],
    policies: Option<&[Document]>,
    shared: &[Document],
) -> Result<Verdict, CheckError> {
    let context = policies.unwrap_or_default();
    if policies.is_some() {
        let given: HashMap<Identity, &Document> = context
            .iter()
            .filter_map(|d| manifest::identity(d).map(|i| (i, d)))
            .collect();
        if let Some(document) = judged.iter().find(|d| is_governance(d)) {
            let found = manifest::identity(document).and_then(|i| given.get(&i));
            return Err(match found {
                Some(original) => CheckError::Redefined {
                    kind: document.kind().to_owned(),
                    name: document.name().to_owned(),
                    judged: document.location(),
                    policies: original.location(),
                },
                None => CheckError::Governance {
                    kind: document.kind().to_owned(),
                    name: document.name().to_owned(),
                    judged: document.location(),
                },
            });
        }
    }
    // --policies first, so that a clash names the authoritative definition first.
    manifest::ensure_unique(context.iter().chain(judged))?;
    // Only our custom resources are typed (which validates every one of them, judged or
    // not); cloning every other document would cost more than judging it.
    let ours: Vec<Document> = context
        .iter()
        .chain(judged)
        .filter(|d| manifest::is_ours(d))
        .cloned()
        .collect();
    let region_locations: HashMap<String, String> = ours
        .iter()
        .filter(|d| d.kind() == "SovereignRegion")
        .map(|d| (d.name().to_owned(), d.location()))
        .collect();
    let resources = manifest::classify(ours)?;
    if resources.policies.is_empty() {
        return Err(CheckError::NoPolicy {
            where_: if policies.is_some() {
                "--policies"
            } else {
                "the input"
            },
        });
    }
    if policies.is_some() {
        for document in judged.iter().filter(|d| is_namespace(d)) {
            let label = document.value["metadata"]["labels"][REGION].as_str();
            let region = resources
                .regions
                .iter()
                .find(|r| r.stack_namespace() == document.name());
            if let (Some(region), Some(label)) = (region, label) {
                let region_name = region.metadata.name.as_deref().unwrap_or_default();
                if label != region_name {
                    return Err(CheckError::StackNamespace {
                        name: document.name().to_owned(),
                        judged: document.location(),
                        region: region_name.to_owned(),
                        policies: region_locations
                            .get(region_name)
                            .cloned()
                            .unwrap_or_default(),
                        label: label.to_owned(),
                    });
                }
            }
        }
    }
    let engine = Engine::new(&resources.regions, &resources.policies);
    let inventory = Inventory::of(context.iter().chain(judged).map(|d| &d.value));
    let objects = judged.iter().chain(shared).map(|d| &d.value);
    let evaluation = engine.evaluate_with(&inventory, objects);
    Ok(Verdict {
        evaluation,
        objects: judged.len() + shared.len(),
        policies: resources.policies.len(),
    })
}

/// A SovereignRegion or ResidencyPolicy: what defines compliance.
fn is_governance(document: &Document) -> bool {
    manifest::is_ours(document) && matches!(document.kind(), "SovereignRegion" | "ResidencyPolicy")
}

fn is_namespace(document: &Document) -> bool {
    document.kind() == "Namespace" && document.value["apiVersion"] == "v1"
}

#[cfg(test)]
mod tests {
    use super::*;

    const REGION_EU: &str = "apiVersion: sovereign.ai/v1alpha1\nkind: SovereignRegion\nmetadata: {name: eu}\nspec:\n  jurisdiction: EU\n  locations: [europe-west9]\n";
    const POLICY: &str = "apiVersion: sovereign.ai/v1alpha1\nkind: ResidencyPolicy\nmetadata: {name: pii-home-region}\nspec:\n  dataClasses: [pii]\n";

    fn docs(path: &str, text: &str) -> Vec<Document> {
        manifest::parse(path, text).expect("parses")
    }

    fn policies() -> Vec<Document> {
        docs("policies.yaml", &format!("{REGION_EU}---\n{POLICY}"))
    }

    #[test]
    fn a_judged_region_is_refused_naming_both_files() {
        let judged = docs("repo.yaml", REGION_EU);
        let error = judge(&judged, Some(&policies()), &[]).expect_err("refused");
        assert_eq!(error.exit_code(), 2);
        let text = error.to_string();
        assert!(
            text.starts_with("SovereignRegion eu at repo.yaml:1 redefines the one of --policies at policies.yaml:1"),
            "{text}"
        );
    }

    #[test]
    fn a_new_judged_policy_is_refused_with_policies_but_used_without() {
        let judged = docs("repo.yaml", &POLICY.replace("pii-home-region", "mine"));
        let error = judge(&judged, Some(&policies()), &[]).expect_err("refused");
        assert!(matches!(error, CheckError::Governance { .. }), "{error}");
        let mut own = docs("repo.yaml", REGION_EU);
        own.extend(judged);
        let verdict = judge(&own, None, &[]).expect("judged");
        assert_eq!(verdict.policies, 1);
        assert_eq!(verdict.exit_code(), 0, "{:?}", verdict.evaluation);
    }

    #[test]
    fn relabelling_a_stack_namespace_is_refused_and_keeping_its_region_is_not() {
        let ns = |region: &str| {
            docs(
                "repo.yaml",
                &format!(
                    "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: sovereign-eu\n  labels: {{sovereign.ai/region: {region}}}\n"
                ),
            )
        };
        let error = judge(&ns("us"), Some(&policies()), &[]).expect_err("refused");
        assert!(
            matches!(error, CheckError::StackNamespace { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("policies.yaml:1"), "{error}");
        let verdict = judge(&ns("eu"), Some(&policies()), &[]).expect("same region");
        assert_eq!(verdict.exit_code(), 0);
    }

    #[test]
    fn a_clash_with_policies_names_the_policies_first_and_shared_documents_are_judged() {
        let ns = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n  labels: {sovereign.ai/region: eu}\n";
        let mut context = policies();
        context.extend(docs("policies-ns.yaml", ns));
        let error = judge(&docs("repo.yaml", ns), Some(&context), &[]).expect_err("duplicate");
        assert!(
            error.to_string().starts_with(
                "Namespace team is defined twice, at policies-ns.yaml:1 and at repo.yaml:1"
            ),
            "{error}"
        );
        // The same file named by -f and --policies: no duplicate, and its objects are judged.
        let shared = docs("policies-ns.yaml", ns);
        let verdict = judge(&[], Some(&context), &shared).expect("judged");
        assert_eq!(verdict.objects, 1);
        assert_eq!(verdict.exit_code(), 0);
    }

    #[test]
    fn no_policy_is_an_error() {
        let error = judge(&docs("repo.yaml", REGION_EU), None, &[]).expect_err("no policy");
        assert!(matches!(error, CheckError::NoPolicy { .. }));
    }

    #[test]
    fn the_verdict_carries_the_exit_code_and_groups_text_lines() {
        let judged = docs(
            "repo.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: leaked\n  namespace: default\n  labels: {sovereign.ai/data-class: pii}\n",
        );
        let verdict = judge(&judged, Some(&policies()), &[]).expect("judged");
        assert_eq!(verdict.exit_code(), 1);
        let text = verdict.render(Format::Text).expect("text");
        assert!(
            text.starts_with("ConfigMap default/leaked: dataLocation (pii-home-region): "),
            "{text}"
        );
        assert!(
            verdict
                .summary()
                .contains("residency violations in 1 objects")
        );
        let json: serde_json::Value =
            serde_json::from_str(&verdict.render(Format::Json).expect("json")).expect("JSON");
        assert_eq!(json["compliant"], false);
        assert_eq!(json["objects"], 1);
    }

    #[test]
    fn text_names_every_policy_of_one_finding_once_and_json_keeps_them_apart() {
        let mut context = policies();
        context.extend(docs(
            "more.yaml",
            &POLICY.replace("pii-home-region", "pii-second"),
        ));
        let judged = docs(
            "repo.yaml",
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: leaked\n  namespace: default\n  labels: {sovereign.ai/data-class: pii}\n",
        );
        let verdict = judge(&judged, Some(&context), &[]).expect("judged");
        assert_eq!(verdict.evaluation.findings.len(), 2, "one per policy");
        let text = verdict.render(Format::Text).expect("text");
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            text.starts_with(
                "ConfigMap default/leaked: dataLocation (pii-home-region, pii-second): "
            ),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&verdict.render(Format::Json).expect("json")).expect("JSON");
        assert_eq!(json["violations"].as_array().map(Vec::len), Some(2));
    }
}
