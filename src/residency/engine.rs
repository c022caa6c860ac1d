//! The rule engine: given the SovereignRegions, the ResidencyPolicies and any set of Kubernetes
//! objects (as `serde_json::Value`), every way those objects let governed data out of its
//! borders. Pure: the offline `check`, the audit and the tests all call [`Engine::evaluate`].
//!
//! # What is governed
//! An object is *governed* by a policy when its `sovereign.ai/data-class` label — or, for a
//! workload, its pod template's — is one of the policy's `dataClasses`. Kinds the engine knows:
//! Secret, ConfigMap, PersistentVolumeClaim, Pod, ReplicationController, Deployment,
//! StatefulSet, DaemonSet, ReplicaSet, Job, CronJob, everything in `sovereign.ai`, and the
//! replication kinds below. Other kinds are ignored unless a policy declares them as `sinks`.
//!
//! # Home region
//! The `sovereign.ai/region` label of the object (for workloads, else of the pod template),
//! else its namespace's region: the `sovereign.ai/region` label of a Namespace object in the
//! input, else the SovereignRegion whose stack namespace it is. A governed object with no
//! resolvable home region is a violation ("label it"): data nobody can place is data nobody
//! can keep in place. A namespaced object without `metadata.namespace` (a GitOps manifest whose
//! namespace is set at apply time) is judged by its own label alone.
//!
//! # Rules (each switchable in the policy's `rules`)
//! - `dataLocation`: a governed object sits in a namespace of its home region (HomeRegion), or
//!   of a region whose jurisdiction is allowed (AllowedJurisdictions).
//! - `pinWorkloads`: governed Pods and pod templates are pinned to the scope's locations (see
//!   [`super::placement`]).
//! - `pinStorage`: governed PVCs and the `volumeClaimTemplates` of governed StatefulSets use one
//!   of the scope's storage classes; no class (the cluster default) is a violation.
//! - `forbidCrossBorderReplication`: Velero BackupStorageLocations, Backups and Schedules,
//!   CloudNativePG Clusters, VolumeReplications and the policy's declared `sinks` send data
//!   only to the scope's locations (see [`super::replication`] and [`super::sinks`]). They are
//!   checked when they carry a governed data class, *or* when they have a home region (they
//!   sit in a region's namespace or are labelled with one): a region's backups and replicas
//!   carry that region's data whatever their own labels say. A Velero Backup or Schedule also
//!   takes the regions of the namespaces it includes (all regions of the input's Namespaces
//!   when it includes `*` or names none). A sink with neither is not attributable and is left
//!   alone — label the namespace of a cluster-wide Velero with its region.
//! - `inferenceHosting`: [`hosting_violations`] for every InferenceBackend.
//! - `observabilityInRegion`: [`out_of_region_endpoints`] for every SovereignRegion.
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
//! the input but not on one object (namespace → region, BSLs by name) once per evaluation in an
//! [`Inventory`]. Objects are read in place, never cloned; strings are allocated only for
//! findings.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::backend::InferenceBackend;
use crate::api::labels::{DATA_CLASS, REGION};
use crate::api::policy::{PolicyRules, ResidencyKind, ResidencyPolicy, Violation};
use crate::api::region::SovereignRegion;

use super::inference::hosting_violations;
use super::jurisdiction::is_within;
use super::observability::out_of_region_endpoints;
use super::placement::{storage_reason, unpinned_reason};
use super::replication::{
    Destination, bsl_destination, cnpg_destinations, volume_replication_destination,
};
use super::sinks::{SinkProgram, functions};

/// A residency rule, as named in policies and violations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Rule {
    /// Governed objects sit in a namespace of their home region (or an allowed one).
    DataLocation,
    /// Governed pods are pinned to the scope's locations.
    PinWorkloads,
    /// Governed volumes use the scope's storage classes.
    PinStorage,
    /// Backup and replication sinks point inside.
    ForbidCrossBorderReplication,
    /// Backends that process governed data are hosted where the policy allows.
    InferenceHosting,
    /// Regions observe into in-region endpoints.
    ObservabilityInRegion,
}

impl Rule {
    /// Every rule, in the order of the policy's `rules`.
    pub const ALL: [Rule; 6] = [
        Rule::DataLocation,
        Rule::PinWorkloads,
        Rule::PinStorage,
        Rule::ForbidCrossBorderReplication,
        Rule::InferenceHosting,
        Rule::ObservabilityInRegion,
    ];

    /// The camelCase name used in policies and violations.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::DataLocation => "dataLocation",
            Rule::PinWorkloads => "pinWorkloads",
            Rule::PinStorage => "pinStorage",
            Rule::ForbidCrossBorderReplication => "forbidCrossBorderReplication",
            Rule::InferenceHosting => "inferenceHosting",
            Rule::ObservabilityInRegion => "observabilityInRegion",
        }
    }

    /// The rule called `name`, if any.
    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
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
struct Scope {
    /// `region eu` or `jurisdictions EU, CH`, for messages.
    description: String,
    locations: Vec<String>,
    /// `locations` joined, for messages.
    locations_text: String,
    storage_classes: Vec<String>,
    /// Indices of the regions inside.
    regions: Vec<usize>,
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

#[derive(Debug)]
struct RegionInfo {
    name: String,
    jurisdiction: String,
    namespace: String,
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
enum RegionRef<'a> {
    /// A declared region (index into the region table).
    Known(usize),
    /// A label naming no declared region.
    Unknown(&'a str),
    /// No label at all.
    Missing,
}

/// Kinds with rules of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Known {
    /// Governed only by `dataLocation` (Secret, ConfigMap, most of `sovereign.ai`).
    Plain,
    Pod,
    /// Pod template at `spec.template`.
    Workload,
    /// A workload with `volumeClaimTemplates` too.
    StatefulSet,
    /// Pod template at `spec.jobTemplate.spec.template`.
    CronJob,
    Claim,
    Region,
    Backend,
    BackupLocation,
    VeleroBackup,
    VeleroSchedule,
    PostgresCluster,
    VolumeReplication,
}

impl Known {
    fn of(group: &str, kind: &str) -> Option<Self> {
        Some(match (group, kind) {
            ("", "Secret" | "ConfigMap") => Known::Plain,
            ("", "Pod") => Known::Pod,
            ("", "ReplicationController") => Known::Workload,
            ("", "PersistentVolumeClaim") => Known::Claim,
            ("apps", "Deployment" | "DaemonSet" | "ReplicaSet") => Known::Workload,
            ("apps", "StatefulSet") => Known::StatefulSet,
            ("batch", "Job") => Known::Workload,
            ("batch", "CronJob") => Known::CronJob,
            ("sovereign.ai", "SovereignRegion") => Known::Region,
            ("sovereign.ai", "InferenceBackend") => Known::Backend,
            ("sovereign.ai", _) => Known::Plain,
            ("velero.io", "BackupStorageLocation") => Known::BackupLocation,
            ("velero.io", "Backup") => Known::VeleroBackup,
            ("velero.io", "Schedule") => Known::VeleroSchedule,
            ("postgresql.cnpg.io", "Cluster") => Known::PostgresCluster,
            ("replication.storage.openshift.io", "VolumeReplication") => Known::VolumeReplication,
            _ => return None,
        })
    }

    /// The pod template (an object with `metadata` and `spec`), for kinds that run pods.
    fn pod_template(self, object: &Value) -> Option<&Value> {
        match self {
            Known::Pod => Some(object),
            Known::Workload | Known::StatefulSet => Some(&object["spec"]["template"]),
            Known::CronJob => Some(&object["spec"]["jobTemplate"]["spec"]["template"]),
            _ => None,
        }
    }

    fn replicates(self) -> bool {
        matches!(
            self,
            Known::BackupLocation
                | Known::VeleroBackup
                | Known::VeleroSchedule
                | Known::PostgresCluster
                | Known::VolumeReplication
        )
    }
}

/// What the input says beyond single objects: which namespace belongs to which region, and the
/// objects replication sinks refer to by name. Built once per evaluation; borrows the objects.
#[derive(Debug, Default)]
pub struct Inventory<'a> {
    /// Namespace name → its `sovereign.ai/region` label (None when unlabelled).
    namespaces: HashMap<&'a str, Option<&'a str>>,
    /// (namespace, name) → Velero BackupStorageLocation.
    backup_locations: HashMap<(&'a str, &'a str), &'a Value>,
    /// name → VolumeReplicationClass.
    replication_classes: HashMap<&'a str, &'a Value>,
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

    /// Records `object` if it is a Namespace, a BackupStorageLocation or a
    /// VolumeReplicationClass; ignores it otherwise.
    pub fn add(&mut self, object: &'a Value) {
        let metadata = &object["metadata"];
        let Some(name) = metadata["name"].as_str() else {
            return;
        };
        let api_version = object["apiVersion"].as_str().unwrap_or_default();
        match (api_group(api_version), object["kind"].as_str()) {
            ("", Some("Namespace")) => {
                self.namespaces
                    .insert(name, metadata["labels"][REGION].as_str());
            }
            ("velero.io", Some("BackupStorageLocation")) => {
                let namespace = metadata["namespace"].as_str().unwrap_or_default();
                self.backup_locations.insert((namespace, name), object);
            }
            ("replication.storage.openshift.io", Some("VolumeReplicationClass")) => {
                self.replication_classes.insert(name, object);
            }
            _ => {}
        }
    }
}

/// `apps` of `apps/v1`, empty for the core group (`v1`).
fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(group, _)| group)
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

/// Regions and policies, compiled for evaluating many objects.
#[derive(Debug)]
pub struct Engine {
    regions: Vec<RegionInfo>,
    /// Scope of each region (HomeRegion policies), same index as `regions`.
    region_scopes: Vec<Scope>,
    region_index: HashMap<String, usize>,
    /// Stack namespace → region: the fallback when no Namespace object labels it.
    stack_namespaces: HashMap<String, usize>,
    policies: Vec<CompiledPolicy>,
    /// Data class → indices of the policies that govern it.
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
    /// Compiles `regions` and `policies`. A sink whose expression does not compile is recorded
    /// in [`Engine::errors`] (and every evaluation's errors); the policy's other rules still
    /// apply.
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
                let governing = classes.entry(class.clone()).or_default();
                if !governing.contains(&p) {
                    governing.push(p);
                }
            }
            for (index, sink) in policy.spec.sinks.iter().enumerate() {
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

    fn region_ref<'v>(&self, name: &'v str) -> RegionRef<'v> {
        match self.region_index.get(name) {
            Some(&i) => RegionRef::Known(i),
            None => RegionRef::Unknown(name),
        }
    }

    fn namespace_region<'v>(&self, inventory: &Inventory<'v>, namespace: &str) -> RegionRef<'v> {
        if let Some(Some(label)) = inventory.namespaces.get(namespace) {
            return self.region_ref(label);
        }
        match self.stack_namespaces.get(namespace) {
            Some(&i) => RegionRef::Known(i),
            None => RegionRef::Missing,
        }
    }

    /// Regions of the namespaces a Velero Backup or Schedule spec includes.
    fn included_regions(&self, inventory: &Inventory<'_>, spec: &Value, homes: &mut Vec<usize>) {
        let included: Vec<&str> = spec["includedNamespaces"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let mut add = |r: RegionRef<'_>| {
            if let RegionRef::Known(i) = r
                && !homes.contains(&i)
            {
                homes.push(i);
            }
        };
        if included.is_empty() || included.contains(&"*") {
            for namespace in inventory.namespaces.keys() {
                add(self.namespace_region(inventory, namespace));
            }
        } else {
            for namespace in included {
                add(self.namespace_region(inventory, namespace));
            }
        }
    }

    fn check(&self, inventory: &Inventory<'_>, object: &Value, out: &mut Sink<'_>) {
        let Some(kind) = object["kind"].as_str() else {
            return;
        };
        let group = api_group(object["apiVersion"].as_str().unwrap_or_default());
        let known = Known::of(group, kind);
        let sinks = self
            .sinks
            .get(group)
            .and_then(|kinds| kinds.get(kind))
            .map(Vec::as_slice)
            .unwrap_or_default();
        if known.is_none() && sinks.is_empty() {
            return;
        }
        let metadata = &object["metadata"];
        let subject = Subject {
            kind,
            namespace: metadata["namespace"].as_str().filter(|n| !n.is_empty()),
            name: metadata["name"].as_str().unwrap_or_default(),
        };
        let labels = &metadata["labels"];
        let template = known.and_then(|k| k.pod_template(object));
        let template_labels = template.map(|t| &t["metadata"]["labels"]);

        // Which policies govern the object's data classes.
        let mut governing: Vec<usize> = Vec::new();
        for class in [
            labels[DATA_CLASS].as_str(),
            template_labels.and_then(|l| l[DATA_CLASS].as_str()),
        ]
        .into_iter()
        .flatten()
        {
            for &p in self.classes.get(class).into_iter().flatten() {
                if !governing.contains(&p) {
                    governing.push(p);
                }
            }
        }
        let exempt = |p: usize| {
            subject
                .namespace
                .is_some_and(|ns| self.policies[p].exempt.contains(ns))
        };
        governing.retain(|&p| !exempt(p));

        let own_label = labels[REGION]
            .as_str()
            .or_else(|| template_labels.and_then(|l| l[REGION].as_str()));
        let namespace_region = subject.namespace.map_or(RegionRef::Missing, |ns| {
            self.namespace_region(inventory, ns)
        });
        let home = own_label.map_or(namespace_region, |r| self.region_ref(r));

        for &p in &governing {
            self.check_governed(
                &subject,
                known,
                object,
                template,
                p,
                home,
                namespace_region,
                out,
            );
        }

        if known.is_some_and(Known::replicates) || !sinks.is_empty() {
            let mut homes: Vec<usize> = match home {
                RegionRef::Known(i) => vec![i],
                _ => Vec::new(),
            };
            match known {
                Some(Known::VeleroBackup) => {
                    self.included_regions(inventory, &object["spec"], &mut homes)
                }
                Some(Known::VeleroSchedule) => {
                    self.included_regions(inventory, &object["spec"]["template"], &mut homes)
                }
                _ => {}
            }
            self.check_replication(
                &subject, known, sinks, object, inventory, &governing, &homes, home, out,
            );
        }

        match known {
            Some(Known::Backend) => self.check_backend(&subject, object, out),
            Some(Known::Region) => self.check_region(&subject, object, out),
            _ => {}
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

    /// Why a governed object is not where its policy wants it, if it is not.
    fn location_problem(
        &self,
        p: usize,
        namespace: Option<&str>,
        home: RegionRef<'_>,
        namespace_region: RegionRef<'_>,
    ) -> Option<String> {
        let policy = &self.policies[p];
        let region = |i: usize| &self.regions[i];
        let home = match home {
            RegionRef::Known(i) => i,
            // An AllowedJurisdictions policy can place an unlabelled object by its namespace
            // alone; that namespace is then its home, so Missing here means both are unknown.
            other => return Some(self.no_home_message(other)),
        };
        match &policy.allowed {
            None => {
                let namespace = namespace?;
                match namespace_region {
                    RegionRef::Known(n) if n == home => None,
                    RegionRef::Known(n) => Some(format!(
                        "its home region is {} but namespace {namespace} belongs to region {}; \
                         move it to {}",
                        region(home).name,
                        region(n).name,
                        region(home).namespace
                    )),
                    _ => Some(format!(
                        "its home region is {} but namespace {namespace} belongs to no region; \
                         move it to {} or label namespace {namespace} {REGION}={}",
                        region(home).name,
                        region(home).namespace,
                        region(home).name
                    )),
                }
            }
            Some(scope) => {
                let outside = |i: usize| {
                    format!(
                        "region {} (jurisdiction {}) is outside {}",
                        region(i).name,
                        region(i).jurisdiction,
                        scope.description
                    )
                };
                if !scope.regions.contains(&home) {
                    return Some(format!(
                        "its home {}; keep it in a region of those jurisdictions",
                        outside(home)
                    ));
                }
                let namespace = namespace?;
                match namespace_region {
                    RegionRef::Known(n) if scope.regions.contains(&n) => None,
                    RegionRef::Known(n) => Some(format!(
                        "namespace {namespace} belongs to {}; move it to a namespace of {}",
                        outside(n),
                        scope.description
                    )),
                    _ => Some(format!(
                        "namespace {namespace} belongs to no region; move it to {} or label \
                         namespace {namespace} {REGION}={}",
                        region(home).namespace,
                        region(home).name
                    )),
                }
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_governed(
        &self,
        subject: &Subject<'_>,
        known: Option<Known>,
        object: &Value,
        template: Option<&Value>,
        p: usize,
        home: RegionRef<'_>,
        namespace_region: RegionRef<'_>,
        out: &mut Sink<'_>,
    ) {
        let policy = &self.policies[p];
        let rules = &policy.rules;
        let name = Some(policy.name.as_str());
        if rules.data_location
            && let Some(message) =
                self.location_problem(p, subject.namespace, home, namespace_region)
        {
            out.push(subject, Rule::DataLocation, name, message);
        }
        let pins_pods = rules.pin_workloads && template.is_some();
        let pins_storage =
            rules.pin_storage && matches!(known, Some(Known::Claim | Known::StatefulSet));
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
                        out.push(subject, rule, name, message.clone());
                    }
                }
            }
            return;
        };
        if pins_pods
            && let Some(template) = template
            && let Some(reason) =
                unpinned_reason(&template["spec"], &scope.locations, &scope.locations_text)
        {
            let field = match known {
                Some(Known::Pod) => "spec",
                Some(Known::CronJob) => "spec.jobTemplate.spec.template.spec",
                _ => "spec.template.spec",
            };
            out.push(
                subject,
                Rule::PinWorkloads,
                name,
                format!("{field}: {reason} ({})", scope.description),
            );
        }
        if pins_storage {
            if known == Some(Known::Claim) {
                if let Some(reason) =
                    storage_reason(&object["spec"], &scope.storage_classes, &scope.description)
                {
                    out.push(subject, Rule::PinStorage, name, reason);
                }
            } else {
                for claim in object["spec"]["volumeClaimTemplates"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    if let Some(reason) =
                        storage_reason(&claim["spec"], &scope.storage_classes, &scope.description)
                    {
                        let claim_name = claim["metadata"]["name"].as_str().unwrap_or_default();
                        out.push(
                            subject,
                            Rule::PinStorage,
                            name,
                            format!("volumeClaimTemplates[{claim_name}]: {reason}"),
                        );
                    }
                }
            }
        }
    }

    /// The destinations of a known replication kind.
    fn destinations(
        &self,
        known: Option<Known>,
        object: &Value,
        namespace: Option<&str>,
        inventory: &Inventory<'_>,
    ) -> Vec<Destination> {
        let via_location = |name: Option<&str>| {
            let name = name.filter(|n| !n.is_empty()).unwrap_or("default");
            inventory
                .backup_locations
                .get(&(namespace.unwrap_or_default(), name))
                .map(|bsl| {
                    let mut destination = bsl_destination(bsl);
                    destination.field = format!("storageLocation {name} ({})", destination.field);
                    destination
                })
        };
        match known {
            Some(Known::BackupLocation) => vec![bsl_destination(object)],
            Some(Known::VeleroBackup) => via_location(object["spec"]["storageLocation"].as_str())
                .into_iter()
                .collect(),
            Some(Known::VeleroSchedule) => {
                via_location(object["spec"]["template"]["storageLocation"].as_str())
                    .into_iter()
                    .collect()
            }
            Some(Known::PostgresCluster) => cnpg_destinations(object),
            Some(Known::VolumeReplication) => {
                let class = object["spec"]["volumeReplicationClass"]
                    .as_str()
                    .and_then(|c| inventory.replication_classes.get(c).copied());
                vec![volume_replication_destination(object, class)]
            }
            _ => Vec::new(),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn check_replication(
        &self,
        subject: &Subject<'_>,
        known: Option<Known>,
        sinks: &[CompiledSink],
        object: &Value,
        inventory: &Inventory<'_>,
        governing: &[usize],
        homes: &[usize],
        home: RegionRef<'_>,
        out: &mut Sink<'_>,
    ) {
        // Governed sinks answer to the policies that govern them. Ungoverned sinks with a home
        // region carry that region's data, so every policy under which governed data may live
        // in that region applies: all HomeRegion policies, and the AllowedJurisdictions ones
        // that allow one of the sink's regions (a region outside them holds none of their data).
        let applicable: Vec<usize> = if !governing.is_empty() {
            governing.to_vec()
        } else if !homes.is_empty() {
            (0..self.policies.len())
                .filter(|&p| {
                    let policy = &self.policies[p];
                    !subject
                        .namespace
                        .is_some_and(|ns| policy.exempt.contains(ns))
                        && policy
                            .allowed
                            .as_ref()
                            .is_none_or(|scope| homes.iter().any(|h| scope.regions.contains(h)))
                })
                .collect()
        } else {
            return;
        };
        let applicable: Vec<usize> = applicable
            .into_iter()
            .filter(|&p| self.policies[p].rules.forbid_cross_border_replication)
            .collect();
        if applicable.is_empty() {
            return;
        }
        let built_in = if known.is_some_and(Known::replicates) {
            self.destinations(known, object, subject.namespace, inventory)
        } else {
            Vec::new()
        };
        for p in applicable {
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
