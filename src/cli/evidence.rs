//! `sovereign-operator evidence`: every data path of each region, where it goes and what guards
//! it, from files (`-f`, read as `render` and `check` read them) or from a cluster
//! (`--context`, read-only). The logic is [`crate::evidence`]; this module reads the inputs,
//! prints and compares.
//!
//! Exit codes: 0 the report was printed (and, with `--diff`, no breaking change); 1 `--diff`
//! found a change that adds a path leaving the jurisdiction, worsens a path or loses a guard;
//! 2 input that cannot be read (a file, the old report, a kube context).

use std::path::PathBuf;

use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use serde_json::Value;

use crate::api::labels::{MANAGED_BY, MANAGER};
use crate::api::policy::Violation;
use crate::api::{InferenceBackend, ResidencyPolicy, SovereignRegion, TokenBudget};
use crate::cli::CliError;
use crate::evidence::{self, Evidence, EvidenceError, Inputs, diff, html, markdown};
use crate::manifest::{self, ManifestError};
use crate::render::RenderError;
use crate::render::region::offline_children;
use crate::residency::admission::{self, AdmissionError};
use crate::residency::kinds::{self, Role};
use crate::residency::{Engine, Finding, Inventory, ResidencyError, Rule};

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// The JSON contract.
    Json,
    /// GitHub-flavoured Markdown, for a pull-request comment.
    Markdown,
    /// One self-contained HTML page.
    Html,
}

/// The arguments of `evidence`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// Files or directories (recursively) of manifests; `-` reads stdin. Exclusive with
    /// --context.
    #[arg(
        short = 'f',
        long = "filename",
        value_name = "PATH",
        conflicts_with = "context"
    )]
    pub paths: Vec<PathBuf>,
    /// Read the regions, what the operator rendered, the installed admission policies and the
    /// audit results from this kube context (read-only).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "json")]
    pub format: Format,
    /// A previous JSON report: print what changed instead (json or markdown), exit 1 when a
    /// change adds a path leaving the jurisdiction, worsens one, or loses a guard.
    #[arg(long, value_name = "OLD.json")]
    pub diff: Option<PathBuf>,
}

/// Why `evidence` cannot run: exit code 2 unless said otherwise.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceCliError {
    /// Neither -f nor --context.
    #[error("give -f PATH… (files) or --context NAME (a cluster)")]
    NoInput,
    /// Unreadable, malformed or duplicated input.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// The operator's objects cannot be rendered from the input.
    #[error(transparent)]
    Render(#[from] RenderError),
    /// A policy cannot be compiled into its admission objects.
    #[error(transparent)]
    Admission(#[from] AdmissionError),
    /// The residency engine cannot judge the input.
    #[error("{0}")]
    Engine(ResidencyError),
    /// The evidence cannot be derived or written.
    #[error(transparent)]
    Evidence(#[from] EvidenceError),
    /// The old report cannot be read.
    #[error("{path}: {message}")]
    Old {
        /// The file.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// `--diff` with `--format html`.
    #[error("--diff prints json or markdown, not html")]
    DiffFormat,
    /// A kube context cannot be used or read.
    #[error("kube context {context}: {message}")]
    Kube {
        /// The context.
        context: String,
        /// What failed.
        message: String,
    },
}

impl EvidenceCliError {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        2
    }
}

/// What to print and the exit code.
#[derive(Debug)]
pub struct Outcome {
    /// stdout.
    pub output: String,
    /// 0, or 1 for a breaking diff.
    pub exit_code: u8,
}

/// Evaluates `evidence`: the output and exit code, printing nothing (unit-testable).
pub fn evaluate(args: &Args) -> Result<Outcome, EvidenceCliError> {
    if args.diff.is_some() && args.format == Format::Html {
        return Err(EvidenceCliError::DiffFormat);
    }
    // Read the old report first: a mistyped path must fail before the cluster is asked.
    let old = args.diff.as_ref().map(read_old).transpose()?;
    let inputs = match (&args.context, args.paths.is_empty()) {
        (Some(context), _) => live_inputs(context)?,
        (None, false) => offline_inputs(&args.paths)?,
        (None, true) => return Err(EvidenceCliError::NoInput),
    };
    let evidence = evidence::derive(&inputs)?;
    match old {
        Some(old) => {
            let changes = diff::diff(&old, &evidence);
            let output = match args.format {
                Format::Markdown => changes.to_markdown(),
                _ => changes.to_json()?,
            };
            Ok(Outcome {
                output,
                exit_code: changes.exit_code(),
            })
        }
        None => Ok(Outcome {
            output: render(&evidence, args.format)?,
            exit_code: 0,
        }),
    }
}

/// The report in `format`.
pub fn render(evidence: &Evidence, format: Format) -> Result<String, EvidenceCliError> {
    Ok(match format {
        Format::Json => evidence.to_json()?,
        Format::Markdown => markdown::render(evidence),
        Format::Html => html::render(evidence),
    })
}

fn read_old(path: &PathBuf) -> Result<Evidence, EvidenceCliError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| EvidenceCliError::Old {
        path: shown.clone(),
        message: e.to_string(),
    })?;
    Evidence::from_json(&shown, &text).map_err(|e| EvidenceCliError::Old {
        path: shown,
        message: match e {
            EvidenceError::Parse { message, .. } => format!("not an evidence report: {message}"),
            other => other.to_string(),
        },
    })
}

/// Inputs from files: what `render` renders, what the policy controller would install, and what
/// the residency engine finds.
pub fn offline_inputs(paths: &[PathBuf]) -> Result<Inputs, EvidenceCliError> {
    let documents = manifest::read_paths(paths)?;
    manifest::ensure_unique(&documents)?;
    let values: Vec<Value> = documents.iter().map(|d| d.value.clone()).collect();
    let resources = manifest::classify(documents)?;
    let rendered = offline_children(&resources.regions, &resources.backends, &resources.policies)?
        .iter()
        .map(|c| c.to_json())
        .collect::<Result<Vec<_>, _>>()?;
    let mut admission_objects = Vec::new();
    for policy in &resources.policies {
        admission_objects.extend(admission::compile(policy, &resources.regions)?.to_json()?);
    }
    let engine = Engine::new(&resources.regions, &resources.policies);
    let evaluation = engine.evaluate(values.iter());
    if let Some(error) = evaluation.errors.first() {
        return Err(EvidenceCliError::Engine(error.clone()));
    }
    Ok(Inputs {
        regions: resources.regions,
        backends: resources.backends,
        policies: resources.policies,
        budgets: resources.budgets,
        objects: resources.others.into_iter().map(|d| d.value).collect(),
        rendered,
        admission: admission_objects,
        findings: evaluation.findings,
    })
}

/// The kinds the operator renders into a region namespace (read back in live mode).
const RENDERED_KINDS: [(&str, &str, &str); 5] = [
    ("", "v1", "ConfigMap"),
    ("", "v1", "Service"),
    ("apps", "v1", "Deployment"),
    ("apps", "v1", "StatefulSet"),
    ("networking.k8s.io", "v1", "NetworkPolicy"),
];

/// Inputs from a cluster, read-only: the custom resources, the operator's objects in each
/// region namespace, the admission policies, the sinks the residency engine knows, and the
/// audit's findings (the policies' status, and the engine on what was read).
pub fn live_inputs(context: &str) -> Result<Inputs, EvidenceCliError> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| EvidenceCliError::Kube {
        context: context.to_owned(),
        message: format!("cannot start the async runtime: {e}"),
    })?;
    runtime.block_on(read_cluster(context))
}

async fn read_cluster(context: &str) -> Result<Inputs, EvidenceCliError> {
    let fail = |message: String| EvidenceCliError::Kube {
        context: context.to_owned(),
        message,
    };
    let options = kube::config::KubeConfigOptions {
        context: Some(context.to_owned()),
        ..Default::default()
    };
    let config = kube::Config::from_kubeconfig(&options)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let client = kube::Client::try_from(config).map_err(|e| fail(e.to_string()))?;
    let lp = ListParams::default();
    let regions: Vec<SovereignRegion> = Api::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| fail(format!("cannot list SovereignRegions: {e}")))?
        .items;
    let backends: Vec<InferenceBackend> = Api::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| fail(format!("cannot list InferenceBackends: {e}")))?
        .items;
    let policies: Vec<ResidencyPolicy> = Api::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| fail(format!("cannot list ResidencyPolicies: {e}")))?
        .items;
    let budgets: Vec<TokenBudget> = Api::all(client.clone())
        .list(&lp)
        .await
        .map_err(|e| fail(format!("cannot list TokenBudgets: {e}")))?
        .items;

    let list = |group: &'static str,
                version: &'static str,
                kind: &'static str,
                namespace: Option<String>,
                selector: Option<String>| {
        let client = client.clone();
        async move {
            let gvk = GroupVersionKind::gvk(group, version, kind);
            let resource = match kube::discovery::pinned_kind(&client, &gvk).await {
                Ok((resource, _)) => resource,
                // A third-party kind the cluster does not serve holds nothing.
                Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Vec::new()),
                Err(kube::Error::Discovery(_)) => return Ok(Vec::new()),
                Err(e) => return Err(format!("cannot discover {kind}: {e}")),
            };
            list_kind(
                &client,
                &resource,
                kind,
                namespace.as_deref(),
                selector.as_deref(),
            )
            .await
        }
    };

    let managed = format!("{MANAGED_BY}={MANAGER}");
    let mut rendered = Vec::new();
    for region in &regions {
        let ns = region.stack_namespace();
        for (group, version, kind) in RENDERED_KINDS {
            rendered.extend(
                list(
                    group,
                    version,
                    kind,
                    Some(ns.clone()),
                    Some(managed.clone()),
                )
                .await
                .map_err(fail)?,
            );
        }
    }
    let mut admission_objects = Vec::new();
    for kind in [
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
    ] {
        admission_objects.extend(
            list("admissionregistration.k8s.io", "v1", kind, None, None)
                .await
                .map_err(fail)?,
        );
    }
    let mut objects = Vec::new();
    for spec in kinds::KINDS.iter().filter(|k| {
        k.role == Role::Namespace || k.role.replicates() || k.role == Role::ReplicationClass
    }) {
        objects.extend(
            list(spec.group, spec.version, spec.kind, None, None)
                .await
                .map_err(fail)?,
        );
    }
    // Declared sinks of the policies.
    for policy in &policies {
        for sink in &policy.spec.sinks {
            for kind in &sink.kinds {
                let discovered = kube::discovery::group(&client, &sink.group)
                    .await
                    .ok()
                    .and_then(|g| g.recommended_kind(kind).map(|(r, _)| r));
                if let Some(resource) = discovered {
                    objects.extend(
                        list_kind(&client, &resource, kind, None, None)
                            .await
                            .map_err(fail)?,
                    );
                }
            }
        }
    }

    // The audit's findings: what the policies' status says, and the engine on what was read
    // (the audit runs on an interval; the engine is what it would say now).
    let mut findings = Vec::new();
    for policy in &policies {
        let name = policy.metadata.name.clone();
        for violation in policy
            .status
            .as_ref()
            .map(|s| s.violations.as_slice())
            .unwrap_or_default()
        {
            if let Some(finding) = from_violation(violation, name.clone()) {
                findings.push(finding);
            }
        }
    }
    let mut judged = objects.clone();
    for region in &regions {
        judged.push(serde_json::to_value(region).map_err(|e| fail(e.to_string()))?);
    }
    for backend in &backends {
        judged.push(serde_json::to_value(backend).map_err(|e| fail(e.to_string()))?);
    }
    let engine = Engine::new(&regions, &policies);
    let evaluation = engine.evaluate_with(&Inventory::of(judged.iter()), judged.iter());
    for finding in evaluation.findings {
        if !findings.contains(&finding) {
            findings.push(finding);
        }
    }
    Ok(Inputs {
        regions,
        backends,
        policies,
        budgets,
        objects,
        rendered,
        admission: admission_objects,
        findings,
    })
}

async fn list_kind(
    client: &kube::Client,
    resource: &ApiResource,
    kind: &str,
    namespace: Option<&str>,
    selector: Option<&str>,
) -> Result<Vec<Value>, String> {
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, resource),
        None => Api::all_with(client.clone(), resource),
    };
    let mut lp = ListParams::default();
    if let Some(selector) = selector {
        lp = lp.labels(selector);
    }
    let items = api
        .list(&lp)
        .await
        .map_err(|e| format!("cannot list {kind}: {e}"))?
        .items;
    let mut out = Vec::new();
    for item in items {
        let mut value = serde_json::to_value(item).map_err(|e| e.to_string())?;
        if let Some(map) = value.as_object_mut() {
            // List items do not always carry their type; the derivation needs it.
            map.insert(
                "apiVersion".into(),
                Value::from(resource.api_version.clone()),
            );
            map.insert("kind".into(), Value::from(kind.to_owned()));
            if let Some(metadata) = map.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.remove("managedFields");
            }
        }
        out.push(value);
    }
    Ok(out)
}

/// A policy status violation as an engine finding.
fn from_violation(violation: &Violation, policy: Option<String>) -> Option<Finding> {
    Some(Finding {
        kind: violation.kind.clone(),
        namespace: violation.namespace.clone(),
        name: violation.name.clone(),
        rule: Rule::from_name(&violation.rule)?,
        policy,
        message: violation.message.clone(),
    })
}

/// Runs `evidence`: prints the output; the error's exit code is 2 (input or cluster that cannot
/// be read).
pub fn run(args: Args) -> Result<std::process::ExitCode, CliError> {
    let outcome = evaluate(&args).map_err(|err| CliError {
        code: err.exit_code(),
        message: err.to_string(),
    })?;
    print!("{}", outcome.output);
    Ok(std::process::ExitCode::from(outcome.exit_code))
}
