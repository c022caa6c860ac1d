//! Sovereignty evidence: for each region, every data path — where each kind of data goes, in
//! which jurisdiction, and what holds it there — derived from the same code that provisions
//! and enforces (the renderers' objects, the residency rules, the admission compiler).
//!
//! Pure: [`derive`] takes an [`Inputs`] (read from files by `sovereign-operator evidence -f`,
//! or from a cluster with `--context`) and returns [`Evidence`], whose JSON is the contract
//! ([`Evidence::to_json`]); [`diff`] compares two of them, [`markdown`] and [`html`] render
//! them for people, and [`region_summary`] is the short form a SovereignRegion's status shows.

mod derive;
pub mod diff;
pub mod html;
pub mod markdown;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::{InferenceBackend, ResidencyPolicy, SovereignRegion, TokenBudget};
use crate::render::Child;
use crate::residency::Finding;

pub use derive::derive;

/// The kind of data a path carries, in the order the report lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flow {
    /// Prompts and completions: clients → gateway → backends, fallbacks included.
    Inference,
    /// Embeddings written into the region's vector store.
    Embeddings,
    /// The vector store's data at rest, and its snapshots.
    Vectors,
    /// Traces and LLM observations (collector, Langfuse).
    Traces,
    /// Logs the collector ships, and anything else the gateway config sends out.
    Logs,
    /// Metrics: the collector's pipeline and Prometheus scrapes.
    Metrics,
    /// Where the model weights are pulled from.
    ModelWeights,
    /// Backups (Velero, CloudNativePG object stores).
    Backup,
    /// Replication (volume replication, Postgres replicas, declared sinks).
    Replication,
    /// The usage ledger (token counters scraped by the operator).
    Usage,
    /// Metadata that leaves the region (budget totals).
    Metadata,
}

impl Flow {
    /// Every flow, in report order.
    pub const ALL: [Flow; 11] = [
        Flow::Inference,
        Flow::Embeddings,
        Flow::Vectors,
        Flow::Traces,
        Flow::Logs,
        Flow::Metrics,
        Flow::ModelWeights,
        Flow::Backup,
        Flow::Replication,
        Flow::Usage,
        Flow::Metadata,
    ];

    /// The name used in JSON (`model-weights`).
    pub fn as_str(self) -> &'static str {
        match self {
            Flow::Inference => "inference",
            Flow::Embeddings => "embeddings",
            Flow::Vectors => "vectors",
            Flow::Traces => "traces",
            Flow::Logs => "logs",
            Flow::Metrics => "metrics",
            Flow::ModelWeights => "model-weights",
            Flow::Backup => "backup",
            Flow::Replication => "replication",
            Flow::Usage => "usage",
            Flow::Metadata => "metadata",
        }
    }
}

/// The verdict on one path.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Status {
    /// Stays where it may, and something enforces that.
    Ok,
    /// Leaves the jurisdiction, or a rule says it may not go there.
    Violation,
    /// Stays today, but nothing enforces it.
    Unguarded,
    /// The destination cannot be determined.
    Unknown,
}

impl Status {
    /// The name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Violation => "violation",
            Status::Unguarded => "unguarded",
            Status::Unknown => "unknown",
        }
    }
}

/// What holds a path in place, by name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Guard {
    /// `gateway-config`, `network-policy`, `validating-admission-policy`, `audit`,
    /// `pod-affinity`, `storage-class`, `chart-setting`, `crd-validation` or `region-setting`.
    pub kind: String,
    /// The object or setting, e.g. `NetworkPolicy sovereign-eu/default-deny` or
    /// `ResidencyPolicy pii-home-region: forbidCrossBorderReplication`.
    pub name: String,
}

impl Guard {
    pub(crate) fn new(kind: &str, name: impl Into<String>) -> Self {
        Self {
            kind: kind.to_owned(),
            name: name.into(),
        }
    }
}

/// One data path of a region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Path {
    /// What travels.
    pub flow: Flow,
    /// Where it starts (a component of the region, e.g. `gateway`).
    pub from: String,
    /// Where it goes: a host, `namespace/object`, or a location.
    pub to: String,
    /// The destination's jurisdiction (`EU`, `FR`, …), `cluster` for in-cluster readers the
    /// operator does not place, or `unknown`.
    pub jurisdiction: String,
    /// The destination's location (a `topology.kubernetes.io/region` value, a provider region),
    /// when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Whether the destination is inside the region's jurisdiction.
    pub in_jurisdiction: bool,
    /// The data classes that may travel on it (values of `sovereign.ai/data-class`, or
    /// `operational`, `usage`, `budget-totals`, `model-weights` for data that is none of them).
    pub data_classes: Vec<String>,
    /// What holds it there, sorted.
    pub guards: Vec<Guard>,
    /// The verdict.
    pub status: Status,
    /// Why.
    pub reason: String,
}

impl Path {
    /// The identity of a path across two reports: flow, from and to.
    pub fn key(&self) -> (Flow, &str, &str) {
        (self.flow, &self.from, &self.to)
    }
}

/// An admission policy that enforces residency for the region's data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Admission {
    /// The ValidatingAdmissionPolicy (`sovereign-residency-<policy>`).
    pub name: String,
    /// The ResidencyPolicy it is compiled from.
    pub policy: String,
    /// The data classes it governs.
    pub data_classes: Vec<String>,
    /// The rules its validations carry.
    pub rules: Vec<String>,
    /// The binding's validation actions (Deny, or Warn and Audit); empty without a binding.
    pub actions: Vec<String>,
}

/// The counts a SovereignRegion's status shows.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Paths.
    pub paths: i32,
    /// Paths with status `ok` (held in place by at least one guard).
    pub guarded: i32,
    /// Paths with status `violation`.
    pub violations: i32,
    /// Paths with status `unknown`.
    pub unknown: i32,
}

impl Summary {
    /// The form a SovereignRegion's status shows.
    pub fn to_status(&self) -> crate::api::region::EvidenceSummary {
        crate::api::region::EvidenceSummary {
            paths: self.paths,
            guarded: self.guarded,
            violations: self.violations,
            unknown: self.unknown,
            summary: format!(
                "{}/{} ok, {} violations, {} unknown",
                self.guarded, self.paths, self.violations, self.unknown
            ),
        }
    }

    /// The counts of `paths`.
    pub fn of(paths: &[Path]) -> Self {
        let count = |s: Status| paths.iter().filter(|p| p.status == s).count() as i32;
        Self {
            paths: paths.len() as i32,
            guarded: count(Status::Ok),
            violations: count(Status::Violation),
            unknown: count(Status::Unknown),
        }
    }
}

/// Every path of one region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegionEvidence {
    /// The SovereignRegion.
    pub name: String,
    /// Its jurisdiction.
    pub jurisdiction: String,
    /// The frameworks it declares.
    #[serde(default)]
    pub frameworks: Vec<String>,
    /// Its stack namespace.
    pub namespace: String,
    /// Its locations.
    pub locations: Vec<String>,
    /// The counts of `paths`.
    pub summary: Summary,
    /// The admission policies enforcing residency for its data.
    #[serde(default)]
    pub admission: Vec<Admission>,
    /// Its paths, sorted by flow, from and to.
    pub paths: Vec<Path>,
}

/// The evidence of every region, sorted by name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evidence {
    /// The regions.
    pub regions: Vec<RegionEvidence>,
}

impl Evidence {
    /// The JSON contract, pretty-printed with a final newline; byte-identical for the same input.
    pub fn to_json(&self) -> Result<String, EvidenceError> {
        serde_json::to_string_pretty(self)
            .map(|mut text| {
                text.push('\n');
                text
            })
            .map_err(|e| EvidenceError::Serialize(e.to_string()))
    }

    /// Reads a report written by [`Evidence::to_json`]; `origin` names it in the error.
    pub fn from_json(origin: &str, text: &str) -> Result<Self, EvidenceError> {
        serde_json::from_str(text).map_err(|e| EvidenceError::Parse {
            origin: origin.to_owned(),
            message: e.to_string(),
        })
    }

    /// Whether any path of any region is not `ok`.
    pub fn has_findings(&self) -> bool {
        self.regions
            .iter()
            .flat_map(|r| &r.paths)
            .any(|p| p.status != Status::Ok)
    }
}

/// Everything the evidence is derived from. Offline, from files: the custom resources and the
/// other manifests as read, `rendered` from [`crate::render::region::offline_children`],
/// `admission` from [`crate::residency::admission::compile`] and `findings` from the
/// residency engine. Live, the same kinds read from the cluster (the audit's findings from the
/// policies' status).
#[derive(Debug, Default)]
pub struct Inputs {
    /// SovereignRegions.
    pub regions: Vec<SovereignRegion>,
    /// InferenceBackends.
    pub backends: Vec<InferenceBackend>,
    /// ResidencyPolicies.
    pub policies: Vec<ResidencyPolicy>,
    /// TokenBudgets.
    pub budgets: Vec<TokenBudget>,
    /// Every other object (Namespaces, Velero, CloudNativePG, csi-addons, declared sinks, …).
    pub objects: Vec<Value>,
    /// What the operator renders (or rendered) for the regions, as JSON.
    pub rendered: Vec<Value>,
    /// ValidatingAdmissionPolicies and their bindings, as JSON.
    pub admission: Vec<Value>,
    /// The residency audit's findings.
    pub findings: Vec<Finding>,
}

/// Why evidence cannot be produced.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    /// A region has no name.
    #[error("SovereignRegion without metadata.name")]
    UnnamedRegion,
    /// A rendered config could not be read (a bug or a hand-edited object).
    #[error("{object}: {message}")]
    Rendered {
        /// `Kind namespace/name`.
        object: String,
        /// What is wrong.
        message: String,
    },
    /// A report could not be read.
    #[error("{origin}: not an evidence report: {message}")]
    Parse {
        /// The file.
        origin: String,
        /// What the parser said.
        message: String,
    },
    /// A report could not be written (a bug).
    #[error("cannot serialise the evidence: {0}")]
    Serialize(String),
}

/// `status.evidence` of `region` from what its controller has: the region, its backends (all
/// of them, not only the serving ones: a refused backend is a violation to count), the
/// ResidencyPolicies and the children it has just rendered (`RegionPlan::children`). Pure and
/// deterministic, so writing it on every reconcile changes nothing when nothing changed. Backup
/// and replication sinks are not listed by the region controller, so they are not counted
/// here; `sovereign-operator evidence --context` shows them.
pub fn region_summary(
    region: &SovereignRegion,
    backends: &[InferenceBackend],
    policies: &[ResidencyPolicy],
    children: &[Child],
) -> Result<crate::api::region::EvidenceSummary, EvidenceError> {
    let rendered = children
        .iter()
        .map(|c| {
            c.to_json().map_err(|e| EvidenceError::Rendered {
                object: c.describe(),
                message: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let inputs = Inputs {
        regions: vec![region.clone()],
        backends: backends.to_vec(),
        policies: policies.to_vec(),
        rendered,
        ..Inputs::default()
    };
    let evidence = derive(&inputs)?;
    Ok(evidence
        .regions
        .into_iter()
        .next()
        .map(|r| r.summary)
        .unwrap_or_default()
        .to_status())
}

#[cfg(test)]
mod tests;
