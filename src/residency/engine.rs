//! The rule engine: given the SovereignRegions, the ResidencyPolicies and any set of Kubernetes
//! objects (as `serde_json::Value`), every way those objects let governed data out of its
//! borders. Pure: the offline `check`, the audit and the tests all call [`Engine::evaluate`].
//! The rules themselves live in [`super::rules`], one module each; the kinds in
//! [`super::kinds`]. This module decides *what is governed* and *where home is*, and calls
//! them.
//!
//! # What is governed (propagation)
//! An object is *governed* by a policy when one of its data classes is one of the policy's
//! `dataClasses`, compared trimmed and case-insensitively (`PII ` is `pii`). Its data classes:
//! - its own `sovereign.ai/data-class` label, and its pod template's;
//! - for a CloudNativePG Cluster, `spec.inheritedMetadata.labels` (what CNPG puts on the pods
//!   and PVCs it creates, which carry none of the Cluster's own labels);
//! - for anything that runs pods, the class of every Secret, ConfigMap and
//!   PersistentVolumeClaim of its namespace that the pod spec reads — `volumes[]` (`secret`,
//!   `configMap`, `persistentVolumeClaim`, `projected.sources[]`) and every container's and init
//!   container's `env[].valueFrom` and `envFrom[]`: a pod that reads governed data carries it
//!   wherever it runs, labelled or not (when that object is in the input);
//! - for a PersistentVolume, the class of the claim its `claimRef` names.
//!
//! Kinds: [`super::kinds::KINDS`]. A kind not in the table that has a pod template at
//! `spec.template` (`spec.template.spec.containers`) is judged as a workload too; other
//! unknown kinds are ignored unless a policy declares them as `sinks`.
//!
//! # Home region
//! The `sovereign.ai/region` label of the object (for workloads, else of the pod template),
//! else its namespace's region: the SovereignRegion whose stack namespace it is (a region's
//! declaration outranks any label), else the `sovereign.ai/region` label of a Namespace object
//! in the input. A PersistentVolume's namespace is its `claimRef`'s. A governed object with no
//! resolvable home region is a violation ("label it"): data nobody can place is data nobody
//! can keep in place. A namespaced object without `metadata.namespace` (a GitOps manifest whose
//! namespace is set at apply time) is judged by its own label alone.
//!
//! # Conflicts (`dataLocation`)
//! An owner whose region label differs from its pod template's, and a region's stack namespace
//! labelled with another region, are violations (see [`super::rules::data_location`]).
//!
//! # Replication
//! Sinks ([`super::rules::cross_border_replication`]) are checked when they carry a governed
//! data class, *or* when they have a home region: a region's backups and replicas carry that
//! region's data whatever their own labels say. A Velero Backup or Schedule also takes the
//! regions of the namespaces it copies — even when the Backup itself sits in a namespace a
//! policy exempts, the governed namespaces it copies are not exempt. A sink with neither is not
//! attributable and is left alone — label the namespace of a cluster-wide Velero with its
//! region.
//!
//! The *scope* of a policy is, for HomeRegion, the home region's locations and storage classes;
//! for AllowedJurisdictions, the union over every region whose jurisdiction is allowed. When a
//! HomeRegion policy cannot resolve the home region and `dataLocation` is off, each other
//! applicable rule reports that it cannot be checked (fail closed).
//!
//! Exempt namespaces are skipped. The policy `mode` does not change the verdict; it only
//! decides what admission does with it.
//!
//! # Speed
//! Everything that depends only on regions and policies (location lists, class → policy index,
//! compiled sink expressions) is computed once in [`Engine::new`]; everything that depends on
//! the input but not on one object (namespace → region, sinks' referenced objects, governed
//! Secrets/ConfigMaps/PVCs) once per evaluation in an [`Inventory`]. Objects are read in place,
//! never cloned; strings are allocated only for findings.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::backend::InferenceBackend;
use crate::api::labels::{DATA_CLASS, REGION};
use crate::api::policy::{PolicyRules, ResidencyKind, ResidencyPolicy, Violation};
use crate::api::region::SovereignRegion;

use super::jurisdiction::is_within;
use super::kinds::{self, KindSpec, Role};
use super::rules::cross_border_replication::{
    self as replication, Destination, Referenced, velero_includes,
};
use super::rules::data_location::{location_problem, stack_namespace_conflict, template_conflict};
use super::rules::inference_hosting::hosting_violations;
use super::rules::observability_in_region::out_of_region_endpoints;
use super::rules::pin_storage::{
    cnpg_storage_reasons, ephemeral_reasons, storage_reason, volume_reason,
};
use super::rules::pin_workloads::{cnpg_pod_spec, unpinned_reason};
use super::sinks::{SinkProgram, functions};

pub use super::rules::Rule;

/// A data class as the rules compare it: trimmed and lower-cased, so that `PII` or ` pii` are
/// governed as `pii` (Kubernetes label values are case-sensitive, policies' intent is not).
pub fn normalize_class(class: &str) -> String {
    class.trim().to_ascii_lowercase()
}

/// One object that breaks one rule of one policy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Finding {
    /// Kind of the object.
    pub kind: String,
    /// Namespace of the object (empty when cluster-scoped or not set).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// The rule broken.
    pub rule: Rule,
    /// The policy whose rule it is; None for a region's own jurisdiction rule, which holds
    /// whatever the policies say (a gateway never routes abroad).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// What is wrong and what to change.
    pub message: String,
}

impl Finding {
    /// The violation as a ResidencyPolicy's status lists it.
    pub fn to_violation(&self) -> Violation {
        Violation {
            kind: self.kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            rule: self.rule.as_str().to_owned(),
            message: self.message.clone(),
        }
    }
}

/// `Kind namespace/name: rule (policy): message` — the line `check` prints.
impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ", self.kind)?;
        if !self.namespace.is_empty() {
            write!(f, "{}/", self.namespace)?;
        }
        let policy = self.policy.as_deref().unwrap_or("region rule");
        write!(
            f,
            "{}: {} ({policy}): {}",
            self.name, self.rule, self.message
        )
    }
}

/// What keeps a policy or an object from being judged at all.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ResidencyError {
    /// A declared sink's `locationExpression` is not valid CEL: the policy cannot check that
    /// sink (and the admission compiler cannot compile it), so it is reported, not skipped.
    #[error(
        "ResidencyPolicy {policy}: sinks[{index}] ({group}) locationExpression does not compile: {message}"
    )]
    SinkExpression {
        /// The policy.
        policy: String,
        /// Index in `spec.sinks`.
        index: usize,
        /// The sink's API group.
        group: String,
        /// What the CEL parser said.
        message: String,
    },
    /// A declared sink names kinds the engine cannot judge: no location expression, or no
    /// kind at all. A policy that names a sink it cannot check would pass everything silently.
    #[error("ResidencyPolicy {policy}: sinks[{index}] ({group}): {message}")]
    UnjudgeableSink {
        /// The policy.
        policy: String,
        /// Index in `spec.sinks`.
        index: usize,
        /// The sink's API group.
        group: String,
        /// What is missing.
        message: String,
    },
    /// An object of a kind the engine reads typed (InferenceBackend, SovereignRegion) does not
    /// fit its schema.
    #[error("{kind} {name}: cannot be read: {message}")]
    InvalidObject {
        /// Kind.
        kind: String,
        /// `namespace/name` or `name`.
        name: String,
        /// What the parser said.
        message: String,
    },
}

/// Findings and errors of one evaluation.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    /// Every rule broken, in input order.
    pub findings: Vec<Finding>,
    /// Policies or objects that could not be judged.
    #[serde(serialize_with = "serialize_errors")]
    pub errors: Vec<ResidencyError>,
}

fn serialize_errors<S: serde::Serializer>(
    errors: &[ResidencyError],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_seq(errors.iter().map(ToString::to_string))
}

impl Evaluation {
    /// No finding and nothing that could not be judged.
    pub fn is_compliant(&self) -> bool {
        self.findings.is_empty() && self.errors.is_empty()
    }
}

/// Where governed data may be: locations (node `topology.kubernetes.io/region` values) and
/// storage classes.
#[derive(Debug)]
pub(crate) struct Scope {
    /// `region eu` or `jurisdictions EU, CH`, for messages.
    pub(crate) description: String,
    pub(crate) locations: Vec<String>,
    /// `locations` joined, for messages.
    pub(crate) locations_text: String,
    pub(crate) storage_classes: Vec<String>,
    /// Indices of the regions inside.
    pub(crate) regions: Vec<usize>,
}

impl Scope {
    fn new(description: String, regions: Vec<usize>, table: &[RegionInfo]) -> Self {
        let mut locations: Vec<String> = Vec::new();
        let mut storage_classes: Vec<String> = Vec::new();
        for &index in &regions {
            for location in &table[index].locations {
                if !locations.contains(location) {
                    locations.push(location.clone());
                }
            }
            for class in &table[index].storage_classes {
                if !storage_classes.contains(class) {
                    storage_classes.push(class.clone());
                }
            }
        }
        let locations_text = if locations.is_empty() {
            "no locations".to_owned()
        } else {
            locations.join(", ")
        };
        Self {
            description,
            locations,
            locations_text,
            storage_classes,
            regions,
        }
    }
}

/// What the rules need of a SovereignRegion.
#[derive(Debug)]
pub(crate) struct RegionInfo {
    pub(crate) name: String,
    pub(crate) jurisdiction: String,
    pub(crate) namespace: String,
    locations: Vec<String>,
    storage_classes: Vec<String>,
}

#[derive(Debug)]
struct CompiledPolicy {
    name: String,
    rules: PolicyRules,
    /// The scope of an AllowedJurisdictions policy; None for HomeRegion.
    allowed: Option<Scope>,
    exempt: HashSet<String>,
}

#[derive(Debug)]
struct CompiledSink {
    policy: usize,
    index: usize,
    /// Shared by the sink's kinds.
    program: Arc<SinkProgram>,
}

/// A region reference as resolved from a label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RegionRef<'a> {
    /// A declared region (index into the region table).
    Known(usize),
    /// A label naming no declared region.
    Unknown(&'a str),
    /// No label at all.
    Missing,
}

/// What the input says beyond single objects: which namespace belongs to which region, the
/// objects replication sinks refer to by name, and the governed data workloads can read.
/// Built once per evaluation; borrows the objects.
#[derive(Debug, Default)]
pub struct Inventory<'a> {
    /// Namespace name → its `sovereign.ai/region` label (None when unlabelled).
    namespaces: HashMap<&'a str, Option<&'a str>>,
    /// (namespace, name) → Velero BackupStorageLocation.
    backup_locations: HashMap<(&'a str, &'a str), &'a Value>,
    /// namespace → the BackupStorageLocation marked `spec.default: true`.
    default_backup_locations: HashMap<&'a str, &'a Value>,
    /// namespace → Velero VolumeSnapshotLocations.
    snapshot_locations: HashMap<&'a str, Vec<&'a Value>>,
    /// (namespace, name) → Barman Cloud ObjectStore.
    object_stores: HashMap<(&'a str, &'a str), &'a Value>,
    /// name → VolumeReplicationClass.
    replication_classes: HashMap<&'a str, &'a Value>,
    /// name → VolumeGroupReplicationClass.
    group_replication_classes: HashMap<&'a str, &'a Value>,
    /// (kind, namespace, name) → data-class label of a Secret, ConfigMap or PVC.
    data: HashMap<(&'a str, &'a str, &'a str), &'a str>,
}

impl<'a> Inventory<'a> {
    /// An inventory of `objects`.
    pub fn of(objects: impl IntoIterator<Item = &'a Value>) -> Self {
        let mut inventory = Self::default();
        for object in objects {
            inventory.add(object);
        }
        inventory
    }

    /// Records `object` if it is a kind other objects refer to; ignores it otherwise.
    pub fn add(&mut self, object: &'a Value) {
        let metadata = &object["metadata"];
        let Some(name) = metadata["name"].as_str() else {
            return;
        };
        let namespace = metadata["namespace"].as_str().unwrap_or_default();
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        let Some(kind) = object["kind"].as_str() else {
            return;
        };
        let Some(spec) = kinds::lookup(api_group(api_version), kind) else {
            return;
        };
        match spec.role {
            Role::Namespace => {
                self.namespaces
                    .insert(name, metadata["labels"][REGION].as_str());
            }
            Role::BackupLocation => {
                self.backup_locations.insert((namespace, name), object);
                if object["spec"]["default"] == true {
                    self.default_backup_locations.insert(namespace, object);
                }
            }
            Role::SnapshotLocation => self
                .snapshot_locations
                .entry(namespace)
                .or_default()
                .push(object),
            Role::ObjectStore => {
                self.object_stores.insert((namespace, name), object);
            }
            Role::ReplicationClass if kind == "VolumeGroupReplicationClass" => {
                self.group_replication_classes.insert(name, object);
            }
            Role::ReplicationClass => {
                self.replication_classes.insert(name, object);
            }
            _ => {}
        }
        if matches!(kind, "Secret" | "ConfigMap" | "PersistentVolumeClaim")
            && spec.group.is_empty()
            && let Some(class) = metadata["labels"][DATA_CLASS].as_str()
        {
            self.data.insert((kind, namespace, name), class);
        }
    }
}

impl Inventory<'_> {
    /// Whether [`Inventory::add`] records `object`: the only objects whose presence or labels
    /// change other objects' verdicts (see [`dependents`]). An audit that keeps the cluster in
    /// memory rebuilds its inventory from these alone.
    pub fn is_referenced(object: &Value) -> bool {
        let Some(spec) = object_kind(object) else {
            return false;
        };
        match spec.role {
            Role::Namespace
            | Role::BackupLocation
            | Role::SnapshotLocation
            | Role::ObjectStore
            | Role::ReplicationClass => true,
            _ => is_labelled_data(spec, object),
        }
    }
}

/// The table row of `object`, from its apiVersion and kind.
fn object_kind(object: &Value) -> Option<&'static KindSpec> {
    let kind = object["kind"].as_str()?;
    kinds::lookup(
        api_group(object["apiVersion"].as_str().unwrap_or_default()),
        kind,
    )
}

/// A Secret, ConfigMap or PVC with a data-class label: what a pod that reads it inherits.
fn is_labelled_data(spec: &KindSpec, object: &Value) -> bool {
    matches!(spec.kind, "Secret" | "ConfigMap" | "PersistentVolumeClaim")
        && spec.group.is_empty()
        && object["metadata"]["labels"][DATA_CLASS].is_string()
}

/// Other objects whose verdict may change when an object appears, changes or goes, beyond the
/// object itself: what the inventory records about it is read when judging them.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dependent {
    /// Every object in this namespace (a Namespace's region label places them all).
    ObjectsIn(String),
    /// The objects that run pods in this namespace (they read its governed Secrets,
    /// ConfigMaps and PVCs).
    WorkloadsIn(String),
    /// Every PersistentVolume (placed and governed through the claim and namespace it is bound
    /// to).
    Volumes,
    /// Every object that replicates (sinks read the locations, stores and classes they name,
    /// Velero backups the regions of the namespaces they copy).
    Replicators,
}

/// What else to re-judge when `object` changes: call it on the old and on the new version.
/// Regions and policies are not here — they change the engine itself, so everything is.
pub fn dependents(object: &Value) -> Vec<Dependent> {
    let Some(spec) = object_kind(object) else {
        return Vec::new();
    };
    let metadata = &object["metadata"];
    let name = metadata["name"].as_str().unwrap_or_default();
    let namespace = metadata["namespace"].as_str().unwrap_or_default();
    match spec.role {
        Role::Namespace => vec![
            Dependent::ObjectsIn(name.to_owned()),
            Dependent::Volumes,
            Dependent::Replicators,
        ],
        Role::BackupLocation
        | Role::SnapshotLocation
        | Role::ObjectStore
        | Role::ReplicationClass => vec![Dependent::Replicators],
        _ if is_labelled_data(spec, object) => {
            let mut out = vec![Dependent::WorkloadsIn(namespace.to_owned())];
            if spec.role == Role::Claim {
                out.push(Dependent::Volumes);
            }
            out
        }
        _ => Vec::new(),
    }
}

impl Referenced for Inventory<'_> {
    fn backup_location(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.backup_locations.get(&(namespace, name)).copied()
    }
    fn default_backup_location(&self, namespace: &str) -> Option<&Value> {
        self.default_backup_locations.get(namespace).copied()
    }
    fn snapshot_locations(&self, namespace: &str) -> Vec<&Value> {
        self.snapshot_locations
            .get(namespace)
            .cloned()
            .unwrap_or_default()
    }
    fn object_store(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.object_stores.get(&(namespace, name)).copied()
    }
    fn replication_class(&self, name: &str, group: bool) -> Option<&Value> {
        if group {
            self.group_replication_classes.get(name).copied()
        } else {
            self.replication_classes.get(name).copied()
        }
    }
}

/// `apps` of `apps/v1`, empty for the core group (`v1`).
fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
}

/// How a pod spec reads a Secret, ConfigMap or PVC (formatted only for findings).
#[derive(Clone, Copy)]
enum Read<'v> {
    Volume(&'v str),
    Env(&'v str, &'v str),
    EnvFrom(&'v str),
}

impl fmt::Display for Read<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Read::Volume(volume) => write!(f, "volume {volume}"),
            Read::Env(env, container) => write!(f, "env {env} of container {container}"),
            Read::EnvFrom(container) => write!(f, "envFrom of container {container}"),
        }
    }
}

/// The Secrets, ConfigMaps and PVCs a pod spec reads: (kind, name, how).
fn pod_references<'v>(pod_spec: &'v Value) -> Vec<(&'static str, &'v str, Read<'v>)> {
    let text = |v: &'v Value| v.as_str().unwrap_or_default();
    let mut out = Vec::new();
    let mut push = |kind: &'static str, name: &'v Value, how: Read<'v>| {
        if let Some(name) = name.as_str().filter(|n| !n.is_empty()) {
            out.push((kind, name, how));
        }
    };
    for volume in pod_spec["volumes"].as_array().into_iter().flatten() {
        let how = Read::Volume(text(&volume["name"]));
        push("Secret", &volume["secret"]["secretName"], how);
        push("ConfigMap", &volume["configMap"]["name"], how);
        push(
            "PersistentVolumeClaim",
            &volume["persistentVolumeClaim"]["claimName"],
            how,
        );
        for source in volume["projected"]["sources"]
            .as_array()
            .into_iter()
            .flatten()
        {
            push("Secret", &source["secret"]["name"], how);
            push("ConfigMap", &source["configMap"]["name"], how);
        }
    }
    for field in ["containers", "initContainers", "ephemeralContainers"] {
        for container in pod_spec[field].as_array().into_iter().flatten() {
            let container_name = text(&container["name"]);
            for env in container["env"].as_array().into_iter().flatten() {
                let how = Read::Env(text(&env["name"]), container_name);
                let from = &env["valueFrom"];
                push("Secret", &from["secretKeyRef"]["name"], how);
                push("ConfigMap", &from["configMapKeyRef"]["name"], how);
            }
            for from in container["envFrom"].as_array().into_iter().flatten() {
                let how = Read::EnvFrom(container_name);
                push("Secret", &from["secretRef"]["name"], how);
                push("ConfigMap", &from["configMapRef"]["name"], how);
            }
        }
    }
    out
}

/// What the rules read of `object`: judging the projection gives the verdicts, the
/// inventory entries and the [`dependents`] judging the object gives (the residency corpus test
/// holds it to that), at a fraction of the size — an audit that keeps the cluster in memory
/// stores this. Kept: `apiVersion`, `kind`; `metadata` name, namespace, uid and labels, and
/// annotations (without kubectl's last-applied copy of the object) except on workloads, whose
/// annotations no rule reads; for kinds that run pods, the pod template's labels and of its spec
/// only what places pods and names the data they read ([`project_pod_spec`]), plus a
/// StatefulSet's claim templates' names and classes; for every other kind of the table the
/// whole `spec`. Never `status` or managed fields. Kinds outside the table come back whole but
/// for managed fields and the last-applied annotation: a policy's sink expression may read any
/// field of them.
pub fn project(object: &Value) -> Value {
    let mut out = serde_json::Map::new();
    for field in ["apiVersion", "kind"] {
        if let Some(v) = object.get(field) {
            out.insert(field.into(), v.clone());
        }
    }
    let Some(spec) = object_kind(object) else {
        let mut whole = object.clone();
        if let Some(metadata) = whole.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("managedFields");
            if let Some(annotations) = metadata
                .get_mut("annotations")
                .and_then(Value::as_object_mut)
            {
                annotations.remove(LAST_APPLIED);
            }
        }
        return whole;
    };
    let workload = spec.role == Role::Workload;
    let metadata = &object["metadata"];
    let mut meta = serde_json::Map::new();
    for field in ["name", "namespace", "uid", "labels"] {
        if let Some(v) = metadata.get(field) {
            meta.insert(field.into(), v.clone());
        }
    }
    if !workload && let Some(annotations) = metadata["annotations"].as_object() {
        let kept: serde_json::Map<String, Value> = annotations
            .iter()
            .filter(|(k, _)| k.as_str() != LAST_APPLIED)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if !kept.is_empty() {
            meta.insert("annotations".into(), Value::Object(kept));
        }
    }
    out.insert("metadata".into(), Value::Object(meta));
    let mut projected = Value::Object(out);
    match spec.template {
        Some(path) => {
            let template = spec.pod_template(object).unwrap_or(&Value::Null);
            let pod = project_pod_spec(&template["spec"]);
            if path.is_empty() {
                projected["spec"] = pod;
            } else {
                let mut slot = &mut projected;
                for key in path {
                    slot = &mut slot[*key];
                }
                if let Some(labels) = template["metadata"].get("labels") {
                    slot["metadata"] = serde_json::json!({ "labels": labels });
                }
                slot["spec"] = pod;
            }
            if spec.kind == "StatefulSet"
                && let Some(claims) = object["spec"]["volumeClaimTemplates"].as_array()
            {
                let claims: Vec<Value> = claims
                    .iter()
                    .map(|c| {
                        let mut claim = serde_json::json!({
                            "metadata": {"name": c["metadata"]["name"]},
                            "spec": {}
                        });
                        if let Some(class) = c["spec"].get("storageClassName") {
                            claim["spec"]["storageClassName"] = class.clone();
                        }
                        claim
                    })
                    .collect();
                projected["spec"]["volumeClaimTemplates"] = Value::Array(claims);
            }
        }
        None => {
            if let Some(spec) = object.get("spec") {
                projected["spec"] = spec.clone();
            }
        }
    }
    projected
}

/// kubectl's copy of the whole object in an annotation: never read, often the largest field.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// What the rules read of a pod spec: what [`pod_references`] reads (the data sources of
/// volumes, containers' `env[].valueFrom` and `envFrom[]` references, with the names findings
/// quote), what `pinWorkloads` reads (`nodeSelector`, node affinity) and what `pinStorage`
/// reads (generic ephemeral volumes). Volumes and containers that read nothing are dropped.
fn project_pod_spec(pod_spec: &Value) -> Value {
    let mut out = serde_json::Map::new();
    if let Some(selector) = pod_spec.get("nodeSelector") {
        out.insert("nodeSelector".into(), selector.clone());
    }
    if let Some(node) = pod_spec["affinity"].get("nodeAffinity") {
        out.insert(
            "affinity".into(),
            serde_json::json!({ "nodeAffinity": node }),
        );
    }
    // A field `name` of a nested object, kept only when it is there.
    let pick = |from: &Value, outer: &str, field: &str| -> Option<Value> {
        let v = from[outer].get(field)?;
        Some(serde_json::json!({ outer: { field: v } }))
    };
    let merge = |parts: Vec<Option<Value>>| -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        for part in parts.into_iter().flatten() {
            if let Value::Object(o) = part {
                m.extend(o);
            }
        }
        m
    };
    let volumes: Vec<Value> = pod_spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|volume| {
            let sources: Vec<Value> = volume["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| {
                    merge(vec![
                        pick(s, "secret", "name"),
                        pick(s, "configMap", "name"),
                    ])
                })
                .filter(|m| !m.is_empty())
                .map(Value::Object)
                .collect();
            let mut kept = merge(vec![
                pick(volume, "secret", "secretName"),
                pick(volume, "configMap", "name"),
                pick(volume, "persistentVolumeClaim", "claimName"),
            ]);
            if !sources.is_empty() {
                kept.insert(
                    "projected".into(),
                    serde_json::json!({ "sources": sources }),
                );
            }
            if let Some(ephemeral) = volume.get("ephemeral") {
                kept.insert("ephemeral".into(), ephemeral.clone());
            }
            if kept.is_empty() {
                return None;
            }
            if let Some(name) = volume.get("name") {
                kept.insert("name".into(), name.clone());
            }
            Some(Value::Object(kept))
        })
        .collect();
    if !volumes.is_empty() {
        out.insert("volumes".into(), Value::Array(volumes));
    }
    for field in ["containers", "initContainers", "ephemeralContainers"] {
        let containers: Vec<Value> = pod_spec[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|container| {
                let env: Vec<Value> = container["env"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| {
                        let from = &e["valueFrom"];
                        let refs = merge(vec![
                            pick(from, "secretKeyRef", "name"),
                            pick(from, "configMapKeyRef", "name"),
                        ]);
                        (!refs.is_empty())
                            .then(|| serde_json::json!({"name": e["name"], "valueFrom": refs}))
                    })
                    .collect();
                let env_from: Vec<Value> = container["envFrom"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|f| {
                        merge(vec![
                            pick(f, "secretRef", "name"),
                            pick(f, "configMapRef", "name"),
                        ])
                    })
                    .filter(|m| !m.is_empty())
                    .map(Value::Object)
                    .collect();
                if env.is_empty() && env_from.is_empty() {
                    return None;
                }
                let mut kept = serde_json::json!({ "name": container["name"] });
                if !env.is_empty() {
                    kept["env"] = Value::Array(env);
                }
                if !env_from.is_empty() {
                    kept["envFrom"] = Value::Array(env_from);
                }
                Some(kept)
            })
            .collect();
        if !containers.is_empty() {
            out.insert(field.into(), Value::Array(containers));
        }
    }
    Value::Object(out)
}

/// The object being judged.
struct Subject<'a> {
    kind: &'a str,
    namespace: Option<&'a str>,
    name: &'a str,
}

/// Findings and errors being collected, with the CEL context for sinks.
struct Sink<'c> {
    findings: Vec<Finding>,
    errors: Vec<ResidencyError>,
    cel: Option<kube::core::cel::cel::Context<'c>>,
}

impl Sink<'_> {
    fn push(&mut self, subject: &Subject<'_>, rule: Rule, policy: Option<&str>, message: String) {
        self.findings.push(Finding {
            kind: subject.kind.to_owned(),
            namespace: subject.namespace.unwrap_or_default().to_owned(),
            name: subject.name.to_owned(),
            rule,
            policy: policy.map(str::to_owned),
            message,
        });
    }
}

/// Why a policy governs an object: its own labels, or governed data it reads.
#[derive(Clone, Debug)]
struct Governance {
    policy: usize,
    /// None when the object's own (or its template's) label governs it; else how it reads
    /// governed data, appended to its findings' messages.
    via: Option<String>,
}

/// A kind as judged: from the table, or a generic workload.
const GENERIC_WORKLOAD: KindSpec = KindSpec {
    group: "",
    version: "",
    kind: "",
    plural: "",
    namespaced: true,
    template: Some(&["spec", "template"]),
    role: Role::Workload,
    governed: true,
    admission: false,
    audited: false,
    metadata_only: false,
};

/// Regions and policies, compiled for evaluating many objects.
#[derive(Debug)]
pub struct Engine {
    regions: Vec<RegionInfo>,
    /// Scope of each region (HomeRegion policies), same index as `regions`.
    region_scopes: Vec<Scope>,
    region_index: HashMap<String, usize>,
    /// Stack namespace → region: authoritative over any Namespace label.
    stack_namespaces: HashMap<String, usize>,
    policies: Vec<CompiledPolicy>,
    /// Normalized data class → indices of the policies that govern it.
    classes: HashMap<String, Vec<usize>>,
    /// group → kind → declared sinks.
    sinks: HashMap<String, HashMap<String, Vec<CompiledSink>>>,
    /// The typed originals, for the rules written against typed objects.
    typed_regions: Vec<SovereignRegion>,
    typed_policies: Vec<ResidencyPolicy>,
    /// Problems found while compiling (bad sink expressions).
    errors: Vec<ResidencyError>,
    /// `sovereign-eu, sovereign-in`, for messages.
    namespaces_text: String,
    /// `eu, in`, for messages.
    region_names_text: String,
}

impl Engine {
    /// Compiles `regions` and `policies`. A sink whose expression does not compile, or that
    /// names nothing the engine can judge, is recorded in [`Engine::errors`] (and every
    /// evaluation's errors); the policy's other rules still apply.
    pub fn new(regions: &[SovereignRegion], policies: &[ResidencyPolicy]) -> Self {
        let table: Vec<RegionInfo> = regions
            .iter()
            .map(|r| RegionInfo {
                name: r.metadata.name.clone().unwrap_or_default(),
                jurisdiction: r.spec.jurisdiction.clone(),
                namespace: r.stack_namespace(),
                locations: r.spec.locations.clone(),
                storage_classes: r.spec.storage_classes.clone(),
            })
            .collect();
        let region_scopes = (0..table.len())
            .map(|i| Scope::new(format!("region {}", table[i].name), vec![i], &table))
            .collect();
        let region_index = table
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect();
        let stack_namespaces = table
            .iter()
            .enumerate()
            .map(|(i, r)| (r.namespace.clone(), i))
            .collect();
        let mut classes: HashMap<String, Vec<usize>> = HashMap::new();
        let mut sinks: HashMap<String, HashMap<String, Vec<CompiledSink>>> = HashMap::new();
        let mut errors = Vec::new();
        let mut compiled = Vec::new();
        for (p, policy) in policies.iter().enumerate() {
            let name = policy.metadata.name.clone().unwrap_or_default();
            for class in &policy.spec.data_classes {
                let governing = classes.entry(normalize_class(class)).or_default();
                if !governing.contains(&p) {
                    governing.push(p);
                }
            }
            for (index, sink) in policy.spec.sinks.iter().enumerate() {
                let unjudgeable = |message: &str| ResidencyError::UnjudgeableSink {
                    policy: name.clone(),
                    index,
                    group: sink.group.clone(),
                    message: message.to_owned(),
                };
                if sink.location_expression.trim().is_empty() {
                    errors.push(unjudgeable(
                        "no locationExpression: the engine cannot know where these kinds send \
                         data; write a CEL expression that yields the destination location",
                    ));
                    continue;
                }
                if sink.kinds.is_empty() || sink.kinds.iter().any(|k| k.trim().is_empty()) {
                    errors.push(unjudgeable(
                        "kinds is empty or names an empty kind; list the sink kinds",
                    ));
                    continue;
                }
                match SinkProgram::compile(&sink.location_expression) {
                    Ok(program) => {
                        let program = Arc::new(program);
                        for kind in &sink.kinds {
                            sinks
                                .entry(sink.group.clone())
                                .or_default()
                                .entry(kind.clone())
                                .or_default()
                                .push(CompiledSink {
                                    policy: p,
                                    index,
                                    program: program.clone(),
                                });
                        }
                    }
                    Err(message) => errors.push(ResidencyError::SinkExpression {
                        policy: name.clone(),
                        index,
                        group: sink.group.clone(),
                        message,
                    }),
                }
            }
            let allowed = match policy.spec.residency.kind {
                ResidencyKind::HomeRegion => None,
                ResidencyKind::AllowedJurisdictions => {
                    let allowed = &policy.spec.residency.allowed_jurisdictions;
                    let inside = table
                        .iter()
                        .enumerate()
                        .filter(|(_, r)| allowed.iter().any(|j| is_within(&r.jurisdiction, j)))
                        .map(|(i, _)| i)
                        .collect();
                    Some(Scope::new(
                        format!("jurisdictions {}", allowed.join(", ")),
                        inside,
                        &table,
                    ))
                }
            };
            compiled.push(CompiledPolicy {
                name,
                rules: policy.spec.rules.clone(),
                allowed,
                exempt: policy.spec.exempt_namespaces.iter().cloned().collect(),
            });
        }
        let namespaces_text = table
            .iter()
            .map(|r| r.namespace.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let region_names_text = table
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            regions: table,
            region_scopes,
            region_index,
            stack_namespaces,
            policies: compiled,
            classes,
            sinks,
            typed_regions: regions.to_vec(),
            typed_policies: policies.to_vec(),
            errors,
            namespaces_text,
            region_names_text,
        }
    }

    /// Problems found compiling the policies.
    pub fn errors(&self) -> &[ResidencyError] {
        &self.errors
    }

    /// Judges `objects`, with an [`Inventory`] built from the same objects.
    pub fn evaluate<'a, I>(&self, objects: I) -> Evaluation
    where
        I: IntoIterator<Item = &'a Value> + Clone,
    {
        let inventory = Inventory::of(objects.clone());
        self.evaluate_with(&inventory, objects)
    }

    /// Judges `objects` with a given inventory (e.g. the cluster's Namespaces for an audit, or
    /// the input plus `--policies` files for `check`).
    pub fn evaluate_with<'a>(
        &self,
        inventory: &Inventory<'_>,
        objects: impl IntoIterator<Item = &'a Value>,
    ) -> Evaluation {
        let mut out = Sink {
            findings: Vec::new(),
            errors: self.errors.clone(),
            // Registering the CEL functions costs more than evaluating an expression: once per
            // evaluation, and only when some policy declares sinks.
            cel: (!self.sinks.is_empty()).then(functions),
        };
        for object in objects {
            self.check(inventory, object, &mut out);
        }
        Evaluation {
            findings: out.findings,
            errors: out.errors,
        }
    }

    /// Judges each of `objects` on its own against `inventory`, as [`Engine::evaluate_with`]
    /// does, and returns each one's findings and the errors it caused (not the engine's own,
    /// [`Engine::errors`]), tagged with the caller's key: what an incremental audit caches per
    /// object. Objects with nothing to report are returned too, so that a cache can forget them.
    pub fn evaluate_each<'a, K>(
        &self,
        inventory: &Inventory<'_>,
        objects: impl IntoIterator<Item = (K, &'a Value)>,
    ) -> Vec<(K, Evaluation)> {
        let mut out = Sink {
            findings: Vec::new(),
            errors: Vec::new(),
            cel: (!self.sinks.is_empty()).then(functions),
        };
        let mut judged = Vec::new();
        for (key, object) in objects {
            self.check(inventory, object, &mut out);
            judged.push((
                key,
                Evaluation {
                    findings: std::mem::take(&mut out.findings),
                    errors: std::mem::take(&mut out.errors),
                },
            ));
        }
        judged
    }

    /// The policies that govern data class `class` (normalized without allocating when it
    /// already is, the common case).
    fn governing(&self, class: &str) -> Option<&Vec<usize>> {
        let normal = !class.starts_with(char::is_whitespace)
            && !class.ends_with(char::is_whitespace)
            && !class.bytes().any(|b| b.is_ascii_uppercase());
        if normal {
            self.classes.get(class)
        } else {
            self.classes.get(&normalize_class(class))
        }
    }

    fn region_ref<'v>(&self, name: &'v str) -> RegionRef<'v> {
        match self.region_index.get(name) {
            Some(&i) => RegionRef::Known(i),
            None => RegionRef::Unknown(name),
        }
    }

    /// The region of a namespace: a region's stack namespace is that region's, whatever its
    /// label says (the label is reported as a conflict); else its label.
    fn namespace_region<'v>(&self, inventory: &Inventory<'v>, namespace: &str) -> RegionRef<'v> {
        if let Some(&i) = self.stack_namespaces.get(namespace) {
            return RegionRef::Known(i);
        }
        match inventory.namespaces.get(namespace) {
            Some(Some(label)) => self.region_ref(label),
            _ => RegionRef::Missing,
        }
    }

    /// The namespaces a Velero Backup or Schedule spec copies, with their regions: the
    /// input's Namespaces and the regions' stack namespaces that Velero's include/exclude
    /// rules select.
    fn included_regions<'v>(
        &'v self,
        inventory: &Inventory<'v>,
        spec: &Value,
    ) -> Vec<(usize, &'v str)> {
        let strings = |field: &str| -> Vec<&str> {
            spec[field]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect()
        };
        let (included, excluded) = (strings("includedNamespaces"), strings("excludedNamespaces"));
        let mut candidates: Vec<&'v str> = inventory.namespaces.keys().copied().collect();
        let mut out = Vec::new();
        let mut add = |r: RegionRef<'_>, namespace: &'v str| {
            if let RegionRef::Known(i) = r
                && !out.contains(&(i, namespace))
            {
                out.push((i, namespace));
            }
        };
        candidates.sort_unstable();
        for namespace in candidates {
            if velero_includes(&included, &excluded, namespace) {
                add(self.namespace_region(inventory, namespace), namespace);
            }
        }
        for (i, region) in self.regions.iter().enumerate() {
            if velero_includes(&included, &excluded, &region.namespace) {
                add(RegionRef::Known(i), region.namespace.as_str());
            }
        }
        out
    }

    fn check(&self, inventory: &Inventory<'_>, object: &Value, out: &mut Sink<'_>) {
        let Some(kind) = object["kind"].as_str() else {
            return;
        };
        let group = api_group(object["apiVersion"].as_str().unwrap_or_default());
        let spec = kinds::lookup(group, kind).or_else(|| {
            // A pod template the table does not know (a CRD with `spec.template`) is judged
            // as a workload: the adversary's favourite wrapper must not be a way out.
            object["spec"]["template"]["spec"]["containers"]
                .is_array()
                .then_some(&GENERIC_WORKLOAD)
        });
        let sinks = self
            .sinks
            .get(group)
            .and_then(|kinds| kinds.get(kind))
            .map(Vec::as_slice)
            .unwrap_or_default();
        if spec.is_none() && sinks.is_empty() {
            return;
        }
        let metadata = &object["metadata"];
        let subject = Subject {
            kind,
            namespace: metadata["namespace"].as_str().filter(|n| !n.is_empty()),
            name: metadata["name"].as_str().unwrap_or_default(),
        };
        let role = spec.map(|s| s.role);
        if role == Some(Role::Namespace) {
            self.check_namespace(&subject, object, out);
            return;
        }
        let governed_kind = spec.is_none_or(|s| s.governed);
        let labels = &metadata["labels"];
        let template = spec.and_then(|k| k.pod_template(object));
        let template_labels = template.map(|t| &t["metadata"]["labels"]);
        // A PersistentVolume lives where the claim it is bound to lives.
        let claim_ref = (role == Some(Role::Volume)).then(|| &object["spec"]["claimRef"]);
        let data_namespace = subject
            .namespace
            .or_else(|| claim_ref.and_then(|c| c["namespace"].as_str()));

        // Which policies govern the object, and why.
        let mut governing: Vec<Governance> = Vec::new();
        let govern = |class: &str, via: Option<String>, governing: &mut Vec<Governance>| {
            for &p in self.governing(class).into_iter().flatten() {
                if !governing.iter().any(|g| g.policy == p) {
                    governing.push(Governance {
                        policy: p,
                        via: via.clone(),
                    });
                }
            }
        };
        if governed_kind {
            let inherited = (role == Some(Role::PostgresCluster))
                .then(|| &object["spec"]["inheritedMetadata"]["labels"][DATA_CLASS]);
            for class in [
                labels[DATA_CLASS].as_str(),
                template_labels.and_then(|l| l[DATA_CLASS].as_str()),
                inherited.and_then(Value::as_str),
            ]
            .into_iter()
            .flatten()
            {
                govern(class, None, &mut governing);
            }
            let pod_spec = template.map(|t| &t["spec"]);
            // Only when the input holds governed data to read: most inputs cost nothing here.
            if let (Some(pod_spec), Some(namespace), false) =
                (pod_spec, subject.namespace, inventory.data.is_empty())
            {
                for (data_kind, data_name, how) in pod_references(pod_spec) {
                    if let Some(class) = inventory.data.get(&(data_kind, namespace, data_name)) {
                        let via = format!(
                            "it is governed as {} because its {how} reads {data_kind} {data_name}",
                            normalize_class(class)
                        );
                        govern(class, Some(via), &mut governing);
                    }
                }
            }
            if let Some(claim) = claim_ref
                && let (Some(namespace), Some(name)) =
                    (claim["namespace"].as_str(), claim["name"].as_str())
                && let Some(class) = inventory
                    .data
                    .get(&("PersistentVolumeClaim", namespace, name))
            {
                let via = format!(
                    "it is governed as {} because it is bound to PersistentVolumeClaim \
                     {namespace}/{name}",
                    normalize_class(class)
                );
                govern(class, Some(via), &mut governing);
            }
        }
        governing.retain(|g| {
            !data_namespace.is_some_and(|ns| self.policies[g.policy].exempt.contains(ns))
        });

        let own_region = labels[REGION].as_str();
        let template_region = template_labels.and_then(|l| l[REGION].as_str());
        let own_label = own_region.or(template_region);
        let namespace_region = data_namespace.map_or(RegionRef::Missing, |ns| {
            self.namespace_region(inventory, ns)
        });
        let home = own_label.map_or(namespace_region, |r| self.region_ref(r));

        if let Some(conflict) = template_conflict(own_region, template_region) {
            for g in &governing {
                let policy = &self.policies[g.policy];
                if policy.rules.data_location {
                    out.push(
                        &subject,
                        Rule::DataLocation,
                        Some(&policy.name),
                        conflict.clone(),
                    );
                }
            }
        }

        for g in &governing {
            self.check_governed(
                &subject,
                spec,
                object,
                template,
                g,
                home,
                namespace_region,
                out,
            );
        }

        if role.is_some_and(Role::replicates) || !sinks.is_empty() {
            let included = match role {
                Some(Role::VeleroBackup) => self.included_regions(inventory, &object["spec"]),
                Some(Role::VeleroSchedule) => {
                    self.included_regions(inventory, &object["spec"]["template"])
                }
                _ => Vec::new(),
            };
            self.check_replication(
                &subject, role, sinks, object, inventory, &governing, &included, home, out,
            );
        }

        match role {
            Some(Role::Backend) => self.check_backend(&subject, object, out),
            Some(Role::Region) => self.check_region(&subject, object, out),
            _ => {}
        }
    }

    /// A Namespace: a region's stack namespace labelled with another region is a conflict,
    /// reported under every policy with `dataLocation` that does not exempt it.
    fn check_namespace(&self, subject: &Subject<'_>, object: &Value, out: &mut Sink<'_>) {
        let Some(label) = object["metadata"]["labels"][REGION].as_str() else {
            return;
        };
        let Some(&r) = self.stack_namespaces.get(subject.name) else {
            return;
        };
        let Some(message) = stack_namespace_conflict(subject.name, label, &self.regions[r]) else {
            return;
        };
        for policy in &self.policies {
            if policy.rules.data_location && !policy.exempt.contains(subject.name) {
                out.push(
                    subject,
                    Rule::DataLocation,
                    Some(&policy.name),
                    message.clone(),
                );
            }
        }
    }

    /// The scope a policy allows for an object whose home region is `home`; None when a
    /// HomeRegion policy meets an object without a known home.
    fn scope(&self, p: usize, home: RegionRef<'_>) -> Option<&Scope> {
        match (&self.policies[p].allowed, home) {
            (Some(scope), _) => Some(scope),
            (None, RegionRef::Known(i)) => Some(&self.region_scopes[i]),
            (None, _) => None,
        }
    }

    fn no_home_message(&self, home: RegionRef<'_>) -> String {
        match home {
            RegionRef::Unknown(name) => format!(
                "{REGION}={name} (on the object or its namespace) names no SovereignRegion; \
                 use one of {}",
                self.region_names_text
            ),
            _ => format!(
                "it carries governed data but has no home region: label it {REGION}=<region> \
                 or put it in a region's namespace ({})",
                self.namespaces_text
            ),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_governed(
        &self,
        subject: &Subject<'_>,
        spec: Option<&KindSpec>,
        object: &Value,
        template: Option<&Value>,
        governance: &Governance,
        home: RegionRef<'_>,
        namespace_region: RegionRef<'_>,
        out: &mut Sink<'_>,
    ) {
        let p = governance.policy;
        let policy = &self.policies[p];
        let rules = &policy.rules;
        let name = Some(policy.name.as_str());
        let role = spec.map(|s| s.role);
        let push = |out: &mut Sink<'_>, rule: Rule, message: String| {
            let message = match &governance.via {
                Some(via) => format!("{message} ({via})"),
                None => message,
            };
            out.push(subject, rule, name, message);
        };
        if rules.data_location
            && let Some(message) = location_problem(
                &self.regions,
                policy.allowed.as_ref(),
                subject.namespace,
                home,
                namespace_region,
                |h| self.no_home_message(h),
            )
        {
            push(out, Rule::DataLocation, message);
        }
        let cnpg = role == Some(Role::PostgresCluster);
        let pins_pods = rules.pin_workloads && (template.is_some() || cnpg);
        let ephemeral = template.is_some_and(|t| {
            t["spec"]["volumes"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| v["ephemeral"].is_object()))
        });
        let pins_storage = rules.pin_storage
            && (ephemeral
                || cnpg
                || spec.is_some_and(|s| s.kind == "StatefulSet")
                || matches!(role, Some(Role::Claim | Role::Volume)));
        let Some(scope) = self.scope(p, home) else {
            // The home region is unknown: with dataLocation on, that finding says "label it";
            // with it off, every rule that needs the home region says it cannot be checked.
            if !rules.data_location {
                let message = self.no_home_message(home);
                for (applies, rule) in [
                    (pins_pods, Rule::PinWorkloads),
                    (pins_storage, Rule::PinStorage),
                ] {
                    if applies {
                        push(out, rule, message.clone());
                    }
                }
            }
            return;
        };
        if pins_pods {
            // Read in place; only a CNPG Cluster's placement is assembled.
            let assembled;
            let pod_spec: &Value = match template {
                Some(template) => &template["spec"],
                None => {
                    assembled = cnpg_pod_spec(object);
                    &assembled
                }
            };
            if let Some(reason) = unpinned_reason(pod_spec, &scope.locations, &scope.locations_text)
            {
                let field = match (template, spec.and_then(|s| s.template)) {
                    (Some(_), Some(path)) if !path.is_empty() => format!("{}.spec", path.join(".")),
                    (Some(_), _) => "spec".to_owned(),
                    (None, _) => "spec.affinity".to_owned(),
                };
                push(
                    out,
                    Rule::PinWorkloads,
                    format!("{field}: {reason} ({})", scope.description),
                );
            }
        }
        if pins_storage {
            let classes = &scope.storage_classes;
            let mut reasons: Vec<String> = Vec::new();
            match role {
                Some(Role::Claim) => {
                    reasons.extend(storage_reason(&object["spec"], classes, &scope.description))
                }
                Some(Role::Volume) => reasons.extend(volume_reason(
                    object,
                    classes,
                    &scope.locations,
                    &scope.locations_text,
                    &scope.description,
                )),
                Some(Role::PostgresCluster) => {
                    reasons.extend(cnpg_storage_reasons(object, classes, &scope.description))
                }
                _ => {}
            }
            if spec.is_some_and(|s| s.kind == "StatefulSet") {
                for claim in object["spec"]["volumeClaimTemplates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if let Some(reason) =
                        storage_reason(&claim["spec"], classes, &scope.description)
                    {
                        let claim_name = claim["metadata"]["name"].as_str().unwrap_or_default();
                        reasons.push(format!("volumeClaimTemplates[{claim_name}]: {reason}"));
                    }
                }
            }
            if let Some(template) = template {
                reasons.extend(ephemeral_reasons(
                    &template["spec"],
                    classes,
                    &scope.description,
                ));
            }
            for reason in reasons {
                push(out, Rule::PinStorage, reason);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_replication(
        &self,
        subject: &Subject<'_>,
        role: Option<Role>,
        sinks: &[CompiledSink],
        object: &Value,
        inventory: &Inventory<'_>,
        governing: &[Governance],
        included: &[(usize, &str)],
        home: RegionRef<'_>,
        out: &mut Sink<'_>,
    ) {
        let own_home = match home {
            RegionRef::Known(i) => Some(i),
            _ => None,
        };
        let exempt =
            |p: usize, ns: Option<&str>| ns.is_some_and(|ns| self.policies[p].exempt.contains(ns));
        // The regions whose data the sink carries, under policy p: its own home unless its
        // namespace is exempt, and the included namespaces the policy does not exempt (a
        // Backup in an exempt namespace still copies governed namespaces).
        let homes_for = |p: usize| -> Vec<usize> {
            let mut homes = Vec::new();
            if let Some(i) = own_home
                && !exempt(p, subject.namespace)
            {
                homes.push(i);
            }
            for &(i, ns) in included {
                if !exempt(p, Some(ns)) && !homes.contains(&i) {
                    homes.push(i);
                }
            }
            homes
        };
        // Governed sinks answer to the policies that govern them. Ungoverned sinks with a home
        // region carry that region's data, so every policy under which governed data may live
        // in that region applies: all HomeRegion policies, and the AllowedJurisdictions ones
        // that allow one of the sink's regions (a region outside them holds none of their data).
        let applicable: Vec<(usize, Vec<usize>)> = (0..self.policies.len())
            .filter(|&p| self.policies[p].rules.forbid_cross_border_replication)
            .filter_map(|p| {
                let homes = homes_for(p);
                let governed = governing.iter().any(|g| g.policy == p);
                let attributable = !homes.is_empty()
                    && self.policies[p]
                        .allowed
                        .as_ref()
                        .is_none_or(|scope| homes.iter().any(|h| scope.regions.contains(h)));
                (governed || attributable).then_some((p, homes))
            })
            .collect();
        if applicable.is_empty() {
            return;
        }
        let built_in = match role.filter(|r| r.replicates()) {
            Some(role) => replication::destinations(
                role,
                object,
                subject.namespace.unwrap_or_default(),
                inventory,
            ),
            None => Vec::new(),
        };
        for (p, homes) in applicable {
            let policy = &self.policies[p];
            let name = Some(policy.name.as_str());
            let scopes: Vec<&Scope> = match &policy.allowed {
                Some(scope) => vec![scope],
                None => homes.iter().map(|&i| &self.region_scopes[i]).collect(),
            };
            if scopes.is_empty() {
                // Governed, HomeRegion, no home: dataLocation already says "label it".
                if !policy.rules.data_location {
                    out.push(
                        subject,
                        Rule::ForbidCrossBorderReplication,
                        name,
                        self.no_home_message(home),
                    );
                }
                continue;
            }
            let mut destinations = built_in.clone();
            for sink in sinks.iter().filter(|s| s.policy == p) {
                let field = format!("sinks[{}] locationExpression", sink.index);
                let Some(cel) = out.cel.as_ref() else {
                    continue;
                };
                match sink.program.locations(cel, object) {
                    Ok(locations) => {
                        destinations.extend(locations.into_iter().map(|l| Destination {
                            field: field.clone(),
                            location: Ok(l),
                        }))
                    }
                    Err(why) => destinations.push(Destination {
                        field: field.clone(),
                        location: Err(format!("the destination is unknown: {why}")),
                    }),
                }
            }
            for destination in &destinations {
                match &destination.location {
                    Ok(location) => {
                        for scope in &scopes {
                            if !scope.locations.iter().any(|l| l == location) {
                                out.push(
                                    subject,
                                    Rule::ForbidCrossBorderReplication,
                                    name,
                                    format!(
                                        "{} sends data to {location}, outside {} ({}); point it \
                                         to an in-region location",
                                        destination.field, scope.description, scope.locations_text
                                    ),
                                );
                            }
                        }
                    }
                    Err(why) => out.push(
                        subject,
                        Rule::ForbidCrossBorderReplication,
                        name,
                        format!("{}: {why}", destination.field),
                    ),
                }
            }
        }
    }

    fn check_backend(&self, subject: &Subject<'_>, object: &Value, out: &mut Sink<'_>) {
        let backend = match InferenceBackend::deserialize(object) {
            Ok(backend) => backend,
            Err(e) => {
                out.errors.push(ResidencyError::InvalidObject {
                    kind: subject.kind.to_owned(),
                    name: format!("{}/{}", subject.namespace.unwrap_or_default(), subject.name),
                    message: e.to_string(),
                });
                return;
            }
        };
        let Some(&r) = self.region_index.get(&backend.spec.region) else {
            out.push(
                subject,
                Rule::InferenceHosting,
                None,
                format!(
                    "spec.region {} names no SovereignRegion (known: {}); the backend's hosting \
                     cannot be checked",
                    backend.spec.region, self.region_names_text
                ),
            );
            return;
        };
        let exempting = subject
            .namespace
            .is_some_and(|ns| self.policies.iter().any(|p| p.exempt.contains(ns)));
        let filtered: Vec<ResidencyPolicy>;
        let policies: &[ResidencyPolicy] = if exempting {
            let ns = subject.namespace.unwrap_or_default();
            filtered = self
                .typed_policies
                .iter()
                .zip(&self.policies)
                .filter(|(_, compiled)| !compiled.exempt.contains(ns))
                .map(|(typed, _)| typed.clone())
                .collect();
            &filtered
        } else {
            &self.typed_policies
        };
        for violation in hosting_violations(&backend, &self.typed_regions[r], policies) {
            out.push(
                subject,
                Rule::InferenceHosting,
                violation.policy.as_deref(),
                violation.message,
            );
        }
    }

    fn check_region(&self, subject: &Subject<'_>, object: &Value, out: &mut Sink<'_>) {
        let observing: Vec<&CompiledPolicy> = self
            .policies
            .iter()
            .filter(|p| p.rules.observability_in_region)
            .collect();
        if observing.is_empty() {
            return;
        }
        let region = match SovereignRegion::deserialize(object) {
            Ok(region) => region,
            Err(e) => {
                out.errors.push(ResidencyError::InvalidObject {
                    kind: subject.kind.to_owned(),
                    name: subject.name.to_owned(),
                    message: e.to_string(),
                });
                return;
            }
        };
        let problems = out_of_region_endpoints(&region);
        for policy in observing {
            for message in &problems {
                out.push(
                    subject,
                    Rule::ObservabilityInRegion,
                    Some(&policy.name),
                    message.clone(),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::policy::{PolicyMode, SinkSpec};
    use crate::render::test_support::example_documents;
    use serde_json::json;

    fn regions() -> Vec<SovereignRegion> {
        example_documents("SovereignRegion")
            .into_iter()
            .map(|v| serde_json::from_value(v).expect("region"))
            .collect()
    }

    fn pii_policy() -> ResidencyPolicy {
        example_documents("ResidencyPolicy")
            .into_iter()
            .map(|v| serde_json::from_value::<ResidencyPolicy>(v).expect("policy"))
            .find(|p| p.metadata.name.as_deref() == Some("pii-home-region"))
            .expect("pii policy")
    }

    fn unpinned(namespace: &str) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": namespace,
                         "labels": {"sovereign.ai/data-class": "pii"}},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i"}]}}}
        })
    }

    fn rules_of(evaluation: &Evaluation) -> Vec<Rule> {
        evaluation.findings.iter().map(|f| f.rule).collect()
    }

    /// What the inventory records, what `is_referenced` says and what `dependents` reports
    /// agree: an incremental audit that rebuilt its inventory from the referenced objects, or
    /// re-judged only the dependents, would otherwise miss a change.
    #[test]
    fn referenced_objects_are_exactly_those_with_dependents() {
        let labelled = |kind: &str, api: &str, labels: Value| {
            json!({"apiVersion": api, "kind": kind,
                   "metadata": {"name": "x", "namespace": "ns", "labels": labels}})
        };
        let pii = json!({"sovereign.ai/data-class": "pii"});
        let cases = [
            (labelled("Namespace", "v1", json!({})), true),
            (labelled("Secret", "v1", pii.clone()), true),
            (labelled("Secret", "v1", json!({})), false),
            (labelled("ConfigMap", "v1", pii.clone()), true),
            (labelled("PersistentVolumeClaim", "v1", pii.clone()), true),
            (labelled("Pod", "v1", pii.clone()), false),
            (
                labelled("TokenBudget", "sovereign.ai/v1alpha1", pii.clone()),
                false,
            ),
            (
                labelled("BackupStorageLocation", "velero.io/v1", json!({})),
                true,
            ),
            (
                labelled("VolumeSnapshotLocation", "velero.io/v1", json!({})),
                true,
            ),
            (
                labelled("ObjectStore", "barmancloud.cnpg.io/v1", json!({})),
                true,
            ),
            (
                labelled(
                    "VolumeReplicationClass",
                    "replication.storage.openshift.io/v1alpha1",
                    json!({}),
                ),
                true,
            ),
            (labelled("Deployment", "apps/v1", pii.clone()), false),
            (labelled("Mirror", "example.com/v1", pii), false),
        ];
        for (object, referenced) in cases {
            let what = &object["kind"];
            assert_eq!(Inventory::is_referenced(&object), referenced, "{what}");
            assert_eq!(!dependents(&object).is_empty(), referenced, "{what}");
            let inventory = Inventory::of([&object]);
            let recorded = !(inventory.namespaces.is_empty()
                && inventory.backup_locations.is_empty()
                && inventory.snapshot_locations.is_empty()
                && inventory.object_stores.is_empty()
                && inventory.replication_classes.is_empty()
                && inventory.group_replication_classes.is_empty()
                && inventory.data.is_empty());
            assert_eq!(recorded, referenced, "{what}");
        }
        let claim = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "c", "namespace": "ns", "labels": {"sovereign.ai/data-class": "pii"}}});
        assert_eq!(
            dependents(&claim),
            vec![Dependent::WorkloadsIn("ns".into()), Dependent::Volumes]
        );
    }

    #[test]
    fn audit_and_enforce_give_the_same_verdict() {
        let mut audit = pii_policy();
        audit.spec.mode = PolicyMode::Audit;
        let objects = [unpinned("sovereign-eu")];
        let enforce = Engine::new(&regions(), &[pii_policy()]).evaluate(&objects);
        let audit = Engine::new(&regions(), &[audit]).evaluate(&objects);
        assert_eq!(rules_of(&enforce), vec![Rule::PinWorkloads]);
        assert_eq!(enforce, audit);
    }

    #[test]
    fn without_data_location_an_unplaceable_object_still_fails_closed() {
        let mut policy = pii_policy();
        let objects = [unpinned("team-a")];
        let on = Engine::new(&regions(), std::slice::from_ref(&policy)).evaluate(&objects);
        assert_eq!(rules_of(&on), vec![Rule::DataLocation]);
        assert!(on.findings[0].message.contains("label it"), "{on:?}");

        policy.spec.rules.data_location = false;
        let off = Engine::new(&regions(), &[policy]).evaluate(&objects);
        assert_eq!(rules_of(&off), vec![Rule::PinWorkloads]);
        assert!(
            off.findings[0].message.contains("no home region"),
            "{off:?}"
        );
    }

    #[test]
    fn switched_off_rules_and_exempt_namespaces_are_silent() {
        let mut policy = pii_policy();
        policy.spec.rules.pin_workloads = false;
        let engine = Engine::new(&regions(), &[policy]);
        assert!(engine.evaluate(&[unpinned("sovereign-eu")]).is_compliant());
        let engine = Engine::new(&regions(), &[pii_policy()]);
        assert!(engine.evaluate(&[unpinned("kube-system")]).is_compliant());
    }

    #[test]
    fn a_namespace_object_places_a_team_namespace_in_a_region() {
        let engine = Engine::new(&regions(), &[pii_policy()]);
        let namespace = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": "team-a", "labels": {"sovereign.ai/region": "in"}}});
        let mut workload = unpinned("team-a");
        workload["spec"]["template"]["spec"]["nodeSelector"] =
            json!({"topology.kubernetes.io/region": "ap-south-1"});
        let evaluation = engine.evaluate(&[namespace, workload]);
        assert!(evaluation.is_compliant(), "{evaluation:?}");
    }

    #[test]
    fn unknown_kinds_are_ignored_unless_declared_as_sinks() {
        let mirror = json!({
            "apiVersion": "storage.example.com/v1", "kind": "Mirror",
            "metadata": {"name": "m", "namespace": "sovereign-eu",
                         "labels": {"sovereign.ai/data-class": "pii"}},
            "spec": {"target": "us-east-1"}
        });
        let engine = Engine::new(&regions(), &[pii_policy()]);
        assert!(engine.evaluate([&mirror]).is_compliant());

        let mut policy = pii_policy();
        policy.spec.sinks.push(SinkSpec {
            group: "storage.example.com".into(),
            kinds: vec!["Mirror".into()],
            location_expression: "object.spec.target".into(),
        });
        let evaluation = Engine::new(&regions(), &[policy]).evaluate([&mirror]);
        assert_eq!(
            rules_of(&evaluation),
            vec![Rule::ForbidCrossBorderReplication]
        );
        assert!(evaluation.findings[0].message.contains("us-east-1"));
    }

    #[test]
    fn a_sink_that_does_not_compile_is_reported_and_the_rest_still_applies() {
        let mut policy = pii_policy();
        policy.spec.sinks.push(SinkSpec {
            group: "storage.example.com".into(),
            kinds: vec!["Mirror".into()],
            location_expression: "object.spec.(".into(),
        });
        let engine = Engine::new(&regions(), &[policy]);
        assert_eq!(engine.errors().len(), 1);
        let evaluation = engine.evaluate(&[unpinned("sovereign-eu")]);
        assert!(matches!(
            evaluation.errors.as_slice(),
            [ResidencyError::SinkExpression { policy, index: 0, .. }] if policy == "pii-home-region"
        ));
        assert_eq!(rules_of(&evaluation), vec![Rule::PinWorkloads]);
    }

    #[test]
    fn a_sink_the_engine_cannot_judge_is_an_error_not_a_pass() {
        for (kinds, expression) in [
            (vec!["Mirror".to_owned()], "  "),
            (Vec::new(), "object.spec.target"),
            (vec![String::new()], "object.spec.target"),
        ] {
            let mut policy = pii_policy();
            policy.spec.sinks.push(SinkSpec {
                group: "storage.example.com".into(),
                kinds,
                location_expression: expression.into(),
            });
            let evaluation =
                Engine::new(&regions(), &[policy]).evaluate(&[unpinned("sovereign-eu")]);
            assert!(
                matches!(
                    evaluation.errors.as_slice(),
                    [ResidencyError::UnjudgeableSink { index: 0, .. }]
                ),
                "{evaluation:?}"
            );
            assert!(!evaluation.is_compliant());
        }
    }

    #[test]
    fn governance_follows_the_data_a_pod_reads_and_says_so() {
        let secret = json!({"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "sovereign-eu",
                         "labels": {"sovereign.ai/data-class": " PII"}}});
        let reader = |namespace: &str| {
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "reader", "namespace": namespace},
                "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "i",
                    "envFrom": [{"secretRef": {"name": "db"}}]}]}}}
            })
        };
        let engine = Engine::new(&regions(), &[pii_policy()]);
        let evaluation = engine.evaluate(&[secret.clone(), reader("sovereign-eu")]);
        assert_eq!(rules_of(&evaluation), vec![Rule::PinWorkloads]);
        assert!(
            evaluation.findings[0]
                .message
                .contains("governed as pii because its envFrom of container c reads Secret db"),
            "{evaluation:?}"
        );
        // Another namespace's Secret of the same name is another Secret.
        let evaluation = engine.evaluate(&[secret, reader("analytics-eu")]);
        assert!(evaluation.is_compliant(), "{evaluation:?}");
    }

    #[test]
    fn a_backup_in_an_exempt_namespace_still_copies_governed_data() {
        let objects = [
            json!({"apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
                   "metadata": {"name": "us", "namespace": "kube-system"},
                   "spec": {"provider": "aws", "config": {"region": "us-east-1"}}}),
            json!({"apiVersion": "velero.io/v1", "kind": "Backup",
                   "metadata": {"name": "b", "namespace": "kube-system"},
                   "spec": {"storageLocation": "us", "includedNamespaces": ["sovereign-*"],
                            "excludedNamespaces": ["sovereign-in"]}}),
        ];
        let evaluation = Engine::new(&regions(), &[pii_policy()]).evaluate(&objects);
        assert_eq!(
            rules_of(&evaluation),
            vec![Rule::ForbidCrossBorderReplication],
            "{evaluation:?}"
        );
        assert_eq!(evaluation.findings[0].name, "b");
        assert!(evaluation.findings[0].message.contains("outside region eu"));
    }

    #[test]
    fn the_engine_can_be_shared_by_async_controllers() {
        fn shareable<T: Send + Sync>() {}
        shareable::<Engine>();
    }

    #[test]
    fn findings_print_as_check_lines() {
        let evaluation =
            Engine::new(&regions(), &[pii_policy()]).evaluate(&[unpinned("sovereign-eu")]);
        let line = evaluation.findings[0].to_string();
        assert!(
            line.starts_with("Deployment sovereign-eu/web: pinWorkloads (pii-home-region): "),
            "{line}"
        );
        assert_eq!(evaluation.findings[0].to_violation().rule, "pinWorkloads");
    }
}
