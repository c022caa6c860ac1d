//! The residency audit, by watch: every kind of the kinds table the audit reads
//! (`residency::kinds::audited`) and every sink kind a policy declares is watched once —
//! metadata only where the rules read only labels (`metadata_only`: Secrets, ConfigMaps,
//! Namespaces, …), whole objects where a rule reads the spec — into an in-memory store. A change
//! re-judges the object that changed and the objects whose verdict reads it
//! (`engine::dependents`: a Namespace's objects, the workloads of a namespace whose governed
//! Secret changed, the replicators when a location changed); a region or policy change rebuilds
//! the engine and re-judges the store, still without a request. The API server sees one LIST per
//! kind at start (and after a watch expires), then WATCHes only.
//!
//! Observe (watch events into [`Store`]) → decide ([`Audit::pass`], pure: which objects to
//! re-judge, the engine's verdicts, each policy's status and new violations) → apply (status
//! patches, Events). The status fields the audit owns (`violations`, `violationCount`,
//! `lastAuditTime`, the Ready condition) are written with their own field manager, [`MANAGER`];
//! the policy controller owns the admission part (`policy.rs`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::core::PartialObjectMeta;
use kube::discovery::pinned_kind;
use kube::runtime::events::{Event, EventType};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::Value;
use tokio::sync::mpsc;

use super::{Context, updated_conditions};
use crate::api::conditions::{self, DesiredCondition, Status};
use crate::api::policy::{ResidencyPolicy, Violation};
use crate::api::region::SovereignRegion;
use crate::residency::engine::{
    self, Dependent, Engine, Evaluation, Finding, Inventory, ResidencyError, dependents,
};
use crate::residency::kinds::{self, Role};

/// Field manager of the status fields the audit writes.
pub const MANAGER: &str = "sovereign-operator-audit";
/// Violations listed in status (the count covers all).
pub const LISTED_VIOLATIONS: usize = 50;
/// Events published per policy and pass at most, so that a new policy over a large cluster
/// cannot flood the event store; the status count is complete regardless.
const EVENTS_PER_PASS: usize = 50;
/// A pass that finds the same as the last one refreshes `lastAuditTime` only this often: a
/// quiet cluster costs one status write per policy per ten minutes.
const AUDIT_TIME_REFRESH: Duration = Duration::from_secs(600);
/// Changes are judged together once the watches are quiet for this long (a Deployment
/// rollout is a burst of events), …
const SETTLE: Duration = Duration::from_millis(100);
/// … but never later than this after the first one, so a violation is reported promptly even
/// under constant churn.
const MAX_BATCH: Duration = Duration::from_secs(1);
/// How often kinds the cluster did not serve are looked up again (a CRD installed later):
/// one discovery GET per missing kind, never a LIST.
const REDISCOVERY: Duration = Duration::from_secs(60);

/// Why the audit cannot go on (the watches themselves retry with back-off).
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// Discovery of a kind failed with something other than "not served".
    #[error("discover {kind}: {source}")]
    Discover {
        /// The kind.
        kind: String,
        /// The client error.
        source: kube::Error,
    },
    /// Writing a policy's status failed.
    #[error("patch the status of ResidencyPolicy {policy}: {source}")]
    Status {
        /// The policy.
        policy: String,
        /// The client error.
        source: kube::Error,
    },
}

/// A kind the audit watches.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Watched {
    /// API group.
    pub group: String,
    /// Version; empty for the group's preferred one (sink kinds named by a policy).
    pub version: String,
    /// Kind.
    pub kind: String,
    /// Whether only metadata is watched.
    pub metadata_only: bool,
}

/// The kinds of the kinds table the audit reads.
pub fn table_kinds() -> Vec<Watched> {
    kinds::audited()
        .map(|k| Watched {
            group: k.group.to_owned(),
            version: k.version.to_owned(),
            kind: k.kind.to_owned(),
            metadata_only: k.metadata_only,
        })
        .collect()
}

/// The sink kinds `policies` declare that the table does not already watch (whole objects:
/// a sink's location expression may read any field).
pub fn sink_kinds<'p>(policies: impl IntoIterator<Item = &'p ResidencyPolicy>) -> Vec<Watched> {
    let mut out: BTreeSet<Watched> = BTreeSet::new();
    for policy in policies {
        for sink in &policy.spec.sinks {
            for kind in &sink.kinds {
                let in_table = kinds::audited().any(|k| k.group == sink.group && k.kind == kind);
                if !in_table && !kind.trim().is_empty() {
                    out.insert(Watched {
                        group: sink.group.clone(),
                        version: String::new(),
                        kind: kind.clone(),
                        metadata_only: false,
                    });
                }
            }
        }
    }
    out.into_iter().collect()
}

/// The kinds of the table that `policies` declare as sinks: stored whole, as their
/// location expressions may read any field.
pub fn table_sinks<'p>(
    policies: impl IntoIterator<Item = &'p ResidencyPolicy>,
) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for policy in policies {
        for sink in &policy.spec.sinks {
            for kind in &sink.kinds {
                if kinds::audited().any(|k| k.group == sink.group && k.kind == kind) {
                    out.insert((sink.group.clone(), kind.clone()));
                }
            }
        }
    }
    out
}

/// An object of the store: its kind's index and its namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key {
    kind: usize,
    namespace: String,
    name: String,
}

/// What changed in one object, as far as re-judging goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    key: Key,
    /// What else reads it, from its old and its new version.
    dependents: Vec<Dependent>,
    /// A SovereignRegion appeared, went or changed its spec: the engine must be rebuilt.
    region: bool,
}

/// One stored object: what the rules read of it ([`engine::project`]) as compact JSON text. A
/// parsed `serde_json::Value` costs several times the bytes of its text (a map node per
/// object level); the few objects a pass reads are parsed when it reads them.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stored(Box<str>);

impl Stored {
    fn of(value: &Value) -> Self {
        Self(value.to_string().into_boxed_str())
    }

    fn value(&self) -> Value {
        // The text is this module's own serialization of a Value: it parses.
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }
}

/// The objects of one watched kind.
#[derive(Debug)]
struct KindStore {
    watched: Watched,
    role: Option<Role>,
    /// Stored whole (but for managed fields) rather than projected: a policy declares the kind
    /// a sink, and a sink's location expression may read any field.
    whole: bool,
    objects: BTreeMap<(String, String), Stored>,
    /// Objects of a re-list in progress (between `Init` and `InitDone`).
    relist: Option<BTreeMap<(String, String), Stored>>,
    /// Listed completely at least once, or not served at all.
    synced: bool,
}

impl KindStore {
    /// What is kept of `object` (the watch tasks cut objects down already; doing it again
    /// costs little, as a projection projects to itself).
    fn keep(&self, object: Value) -> Value {
        kept(object, self.whole)
    }
}

/// What the store keeps of `object`: what the rules read of it, or all of it but managed
/// fields when its kind is stored `whole`.
fn kept(mut object: Value, whole: bool) -> Value {
    if whole {
        strip_managed(&mut object);
        object
    } else {
        engine::project(&object)
    }
}

/// Managed fields and kubectl's last-applied copy: what makes objects large and no expression
/// needs.
fn strip_managed(object: &mut Value) {
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("managedFields");
        if let Some(annotations) = metadata
            .get_mut("annotations")
            .and_then(Value::as_object_mut)
        {
            annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
}

/// Every watched object, as what the rules read of it: the audit's view of the cluster. The
/// objects other objects' verdicts read (namespaces, labelled data, sinks' locations and
/// classes: [`Inventory::is_referenced`]) are also kept parsed, since every pass reads them.
#[derive(Debug, Default)]
pub struct Store {
    kinds: Vec<KindStore>,
    referenced: BTreeMap<Key, Value>,
}

fn object_key(object: &Value) -> (String, String) {
    let metadata = &object["metadata"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    (text(&metadata["namespace"]), text(&metadata["name"]))
}

impl Store {
    /// Adds a kind to watch; returns its index (the same one when already present).
    pub fn add_kind(&mut self, watched: Watched) -> usize {
        if let Some(i) = self.kinds.iter().position(|k| k.watched == watched) {
            return i;
        }
        let role = kinds::lookup(&watched.group, &watched.kind).map(|k| k.role);
        self.kinds.push(KindStore {
            watched,
            role,
            whole: false,
            objects: BTreeMap::new(),
            relist: None,
            synced: false,
        });
        self.kinds.len() - 1
    }

    /// The kind at `index`.
    pub fn watched(&self, index: usize) -> &Watched {
        &self.kinds[index].watched
    }

    /// Whether kind `index` is stored whole.
    fn whole(&self, index: usize) -> bool {
        self.kinds[index].whole
    }

    /// Stores kind `index` whole (or projected again); takes effect for objects that arrive
    /// from now on, so the caller re-lists the kind.
    fn set_whole(&mut self, index: usize, whole: bool) {
        self.kinds[index].whole = whole;
    }

    /// Marks a kind the cluster does not serve: it holds nothing and waits for nothing.
    pub fn unserved(&mut self, index: usize) -> Vec<Change> {
        let store = &mut self.kinds[index];
        store.synced = true;
        store.relist = None;
        let role = store.role;
        let gone = std::mem::take(&mut store.objects);
        let changes: Vec<Change> = gone
            .iter()
            .map(|(k, v)| change(index, role, k, Some(&v.value()), None))
            .collect();
        for c in &changes {
            self.referenced.remove(&c.key);
        }
        changes
    }

    /// Whether every kind was listed once (a pass before that would report objects whose
    /// Namespace has not arrived yet).
    pub fn synced(&self) -> bool {
        self.kinds.iter().all(|k| k.synced)
    }

    /// Keeps the parsed copy of a referenced object in step with the store.
    fn reference(&mut self, key: &Key, new: Option<&Value>) {
        match new.filter(|v| Inventory::is_referenced(v)) {
            Some(value) => {
                self.referenced.insert(key.clone(), value.clone());
            }
            None => {
                self.referenced.remove(key);
            }
        }
    }

    /// Applies one watch event of kind `index` (objects with apiVersion and kind set).
    pub fn apply(&mut self, index: usize, event: watcher::Event<Value>) -> Vec<Change> {
        let store = &mut self.kinds[index];
        let role = store.role;
        match event {
            watcher::Event::Apply(object) => {
                let object = store.keep(object);
                let stored = Stored::of(&object);
                let key = object_key(&object);
                let old = store.objects.get(&key);
                if old == Some(&stored) {
                    return Vec::new();
                }
                let old = old.map(Stored::value);
                let c = change(index, role, &key, old.as_ref(), Some(&object));
                store.objects.insert(key, stored);
                self.reference(&c.key, Some(&object));
                vec![c]
            }
            watcher::Event::Delete(object) => {
                let key = object_key(&object);
                match store.objects.remove(&key) {
                    Some(old) => {
                        let c = change(index, role, &key, Some(&old.value()), None);
                        self.reference(&c.key, None);
                        vec![c]
                    }
                    None => Vec::new(),
                }
            }
            watcher::Event::Init => {
                store.relist = Some(BTreeMap::new());
                Vec::new()
            }
            watcher::Event::InitApply(object) => {
                let object = store.keep(object);
                let stored = Stored::of(&object);
                store
                    .relist
                    .get_or_insert_with(BTreeMap::new)
                    .insert(object_key(&object), stored);
                Vec::new()
            }
            watcher::Event::InitDone => {
                store.synced = true;
                let new = store.relist.take().unwrap_or_default();
                let old = std::mem::replace(&mut store.objects, new);
                let mut changes = Vec::new();
                // Only the referenced objects' parsed copies outlive this loop: a re-list of
                // 33,000 Pods kept parsed at once was most of the operator's peak heap
                // (docs/performance.md, the audit at scale). `reference` of None drops the key.
                let mut updated: Vec<(Key, Option<Value>)> = Vec::new();
                let referenced = |v: Option<Value>| v.filter(Inventory::is_referenced);
                for (key, before) in &old {
                    let after = store.objects.get(key);
                    if after != Some(before) {
                        let after = after.map(Stored::value);
                        let c = change(index, role, key, Some(&before.value()), after.as_ref());
                        updated.push((c.key.clone(), referenced(after)));
                        changes.push(c);
                    }
                }
                for (key, after) in &store.objects {
                    if !old.contains_key(key) {
                        let after = after.value();
                        let c = change(index, role, key, None, Some(&after));
                        updated.push((c.key.clone(), referenced(Some(after))));
                        changes.push(c);
                    }
                }
                for (key, value) in updated {
                    self.reference(&key, value.as_ref());
                }
                changes
            }
        }
    }

    /// The object at `key`, parsed.
    fn get(&self, key: &Key) -> Option<Value> {
        self.kinds
            .get(key.kind)?
            .objects
            .get(&(key.namespace.clone(), key.name.clone()))
            .map(Stored::value)
    }

    fn keys_of(&self, kind: usize) -> impl Iterator<Item = Key> + '_ {
        self.kinds[kind].objects.keys().map(move |(ns, name)| Key {
            kind,
            namespace: ns.clone(),
            name: name.clone(),
        })
    }

    /// Every object's key, in key order.
    fn all_keys(&self) -> impl Iterator<Item = Key> + '_ {
        (0..self.kinds.len()).flat_map(|kind| self.keys_of(kind))
    }

    /// The keys of objects of kind `kind` in `namespace`.
    fn in_namespace<'s>(
        &'s self,
        kind: usize,
        namespace: &'s str,
    ) -> impl Iterator<Item = Key> + 's {
        self.kinds[kind]
            .objects
            .range((namespace.to_owned(), String::new())..)
            .take_while(move |((ns, _), _)| ns == namespace)
            .map(move |((ns, name), _)| Key {
                kind,
                namespace: ns.clone(),
                name: name.clone(),
            })
    }

    /// The objects a rule reads when judging others (what [`Inventory`] records).
    fn referenced(&self) -> impl Iterator<Item = &Value> + '_ {
        self.referenced.values()
    }

    /// The SovereignRegions in the store, typed (unreadable ones are judged as objects and
    /// reported there).
    fn regions(&self) -> Vec<SovereignRegion> {
        self.kinds
            .iter()
            .filter(|k| k.role == Some(Role::Region))
            .flat_map(|k| k.objects.values())
            .filter_map(|v| serde_json::from_value(v.value()).ok())
            .collect()
    }
}

fn change(
    kind: usize,
    role: Option<Role>,
    (namespace, name): &(String, String),
    old: Option<&Value>,
    new: Option<&Value>,
) -> Change {
    let mut all: Vec<Dependent> = old.into_iter().chain(new).flat_map(dependents).collect();
    all.sort();
    all.dedup();
    Change {
        key: Key {
            kind,
            namespace: namespace.clone(),
            name: name.clone(),
        },
        dependents: all,
        region: role == Some(Role::Region)
            && old.map(|v| (&v["spec"], &v["metadata"]["name"]))
                != new.map(|v| (&v["spec"], &v["metadata"]["name"])),
    }
}

/// Which objects a pass re-judges.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Everything (the engine changed, or the first pass).
    pub all: bool,
    /// These objects.
    pub keys: BTreeSet<Key>,
}

/// The plan for `changes`: the changed objects and what [`dependents`] says reads them.
pub fn plan(store: &Store, changes: &[Change], engine_changed: bool) -> Plan {
    if engine_changed || changes.iter().any(|c| c.region) {
        return Plan {
            all: true,
            keys: BTreeSet::new(),
        };
    }
    let mut keys = BTreeSet::new();
    let mut seen: HashSet<&Dependent> = HashSet::new();
    for change in changes {
        keys.insert(change.key.clone());
        for dependent in &change.dependents {
            if !seen.insert(dependent) {
                continue;
            }
            for (kind, k) in store.kinds.iter().enumerate() {
                match dependent {
                    Dependent::ObjectsIn(ns) => keys.extend(store.in_namespace(kind, ns)),
                    Dependent::WorkloadsIn(ns) if k.role == Some(Role::Workload) => {
                        keys.extend(store.in_namespace(kind, ns));
                    }
                    Dependent::Volumes if k.role == Some(Role::Volume) => {
                        keys.extend(store.keys_of(kind));
                    }
                    Dependent::Replicators
                        if k.role.is_some_and(Role::replicates) || k.role.is_none() =>
                    {
                        // Kinds outside the table are the policies' sinks.
                        keys.extend(store.keys_of(kind));
                    }
                    _ => {}
                }
            }
        }
    }
    Plan { all: false, keys }
}

/// (kind, namespace, name, rule) of a violation: what "the same violation" means for Events.
type ViolationKey = (String, String, String, String);

fn violation_key(v: &Violation) -> ViolationKey {
    (
        v.kind.clone(),
        v.namespace.clone(),
        v.name.clone(),
        v.rule.clone(),
    )
}

/// What a pass decided for one policy.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyOutcome {
    /// The policy.
    pub policy: String,
    /// The status patch to apply, when the status differs from the policy's (or is stale).
    pub status: Option<Value>,
    /// Violations not seen before, with the object to put the Event on (at most
    /// [`EVENTS_PER_PASS`]).
    pub new_violations: Vec<(Violation, ObjectReference)>,
    /// The rule of every finding, for the metric.
    pub rules: Vec<String>,
}

/// The audit's state: the store, the engine and the verdicts of the last pass.
#[derive(Default)]
pub struct Audit {
    /// The watched objects.
    pub store: Store,
    policies: BTreeMap<String, ResidencyPolicy>,
    policies_synced: bool,
    /// Rebuilt when regions or policies' specs change.
    engine: Option<Engine>,
    engine_stale: bool,
    /// Verdicts of objects with findings or errors.
    judged: BTreeMap<Key, Evaluation>,
    /// Per policy, the violations reported so far (None before the policy's first pass: then
    /// the ones its status lists are known, so a restart does not announce them again).
    known: HashMap<String, HashSet<ViolationKey>>,
    /// Per policy, the findings' digest of the last pass (to skip unchanged policies).
    last: HashMap<String, Vec<Violation>>,
}

impl Audit {
    /// Applies a policy watch event; returns whether the engine must be rebuilt.
    pub fn apply_policy(&mut self, event: watcher::Event<ResidencyPolicy>) {
        let mut changed = |old: Option<&ResidencyPolicy>, new: Option<&ResidencyPolicy>| {
            if old.map(|p| &p.spec) != new.map(|p| &p.spec) {
                self.engine_stale = true;
            }
        };
        match event {
            watcher::Event::Apply(policy) | watcher::Event::InitApply(policy) => {
                let name = policy.name_any();
                changed(self.policies.get(&name), Some(&policy));
                self.policies.insert(name, policy);
            }
            watcher::Event::Delete(policy) => {
                let name = policy.name_any();
                changed(self.policies.get(&name), None);
                self.policies.remove(&name);
                self.known.remove(&name);
                self.last.remove(&name);
            }
            watcher::Event::Init => {}
            watcher::Event::InitDone => {
                self.policies_synced = true;
                self.engine_stale = true;
            }
        }
    }

    /// The policies, as last seen.
    pub fn policies(&self) -> impl Iterator<Item = &ResidencyPolicy> {
        self.policies.values()
    }

    /// Whether every kind and the policies were listed once.
    pub fn ready(&self) -> bool {
        self.policies_synced && self.store.synced()
    }

    /// Re-judges what `changes` (and a changed engine) call for and decides each policy's
    /// status and new violations. Pure; `now` is the time of the pass.
    pub fn pass(&mut self, changes: &[Change], now: Timestamp) -> Vec<PolicyOutcome> {
        // A region's spec is the engine's input as much as a policy's.
        let rebuild =
            self.engine_stale || self.engine.is_none() || changes.iter().any(|c| c.region);
        if rebuild {
            let policies: Vec<ResidencyPolicy> = self.policies.values().cloned().collect();
            self.engine = Some(Engine::new(&self.store.regions(), &policies));
            self.engine_stale = false;
        }
        let plan = plan(&self.store, changes, rebuild);
        let Some(engine) = &self.engine else {
            return Vec::new();
        };
        let inventory = Inventory::of(self.store.referenced());
        if plan.all {
            self.judged.clear();
            judge(
                engine,
                &inventory,
                &self.store,
                self.store.all_keys(),
                &mut self.judged,
            );
        } else {
            for key in &plan.keys {
                self.judged.remove(key);
            }
            judge(
                engine,
                &inventory,
                &self.store,
                plan.keys.iter().cloned(),
                &mut self.judged,
            );
        }
        self.outcomes(now)
    }

    fn outcomes(&mut self, now: Timestamp) -> Vec<PolicyOutcome> {
        let Some(engine) = &self.engine else {
            return Vec::new();
        };
        let mut findings: HashMap<&str, Vec<(&Key, &Finding)>> = HashMap::new();
        let mut object_errors: Vec<&ResidencyError> = Vec::new();
        for (key, evaluation) in &self.judged {
            for finding in &evaluation.findings {
                if let Some(policy) = finding.policy.as_deref() {
                    findings.entry(policy).or_default().push((key, finding));
                }
            }
            object_errors.extend(&evaluation.errors);
        }
        let mut out = Vec::new();
        for (name, policy) in &self.policies {
            let mine = findings.remove(name.as_str()).unwrap_or_default();
            let violations: Vec<Violation> = mine.iter().map(|(_, f)| f.to_violation()).collect();
            let errors: Vec<String> = engine
                .errors()
                .iter()
                .filter(|e| error_policy(e).is_none_or(|p| p == name))
                .chain(object_errors.iter().copied())
                .map(ToString::to_string)
                .collect();
            let current = policy.status.clone().unwrap_or_default();
            let known = self
                .known
                .entry(name.clone())
                .or_insert_with(|| current.violations.iter().map(violation_key).collect());
            let mut new_violations = Vec::new();
            for ((key, _), violation) in mine.iter().zip(&violations) {
                if new_violations.len() >= EVENTS_PER_PASS {
                    break;
                }
                if known.contains(&violation_key(violation)) {
                    continue;
                }
                if let Some(object) = self.store.get(key) {
                    new_violations.push((violation.clone(), object_reference(&object)));
                }
            }
            // Known from now on: what was known and still holds, and what was just announced;
            // new ones beyond the cap are announced by a later pass.
            let current_keys: HashSet<ViolationKey> =
                violations.iter().map(violation_key).collect();
            known.retain(|k| current_keys.contains(k));
            known.extend(new_violations.iter().map(|(v, _)| violation_key(v)));

            let ready = if errors.is_empty() {
                DesiredCondition {
                    type_: conditions::READY,
                    status: Status::True,
                    reason: "Audited",
                    message: format!("the audit found {} violations", violations.len()),
                }
            } else {
                DesiredCondition {
                    type_: conditions::READY,
                    status: Status::False,
                    reason: "InvalidSink",
                    message: errors.join("; "),
                }
            };
            let generation = policy.metadata.generation;
            let ready_now: Vec<_> =
                updated_conditions(&current.conditions, vec![ready], generation)
                    .into_iter()
                    .filter(|c| c.type_ == conditions::READY)
                    .collect();
            let ready_before: Vec<_> = current
                .conditions
                .iter()
                .filter(|c| c.type_ == conditions::READY)
                .cloned()
                .collect();
            let listed: Vec<Violation> =
                violations.iter().take(LISTED_VIOLATIONS).cloned().collect();
            let count = i64::try_from(violations.len()).unwrap_or(i64::MAX);
            let stale = current.last_audit_time.as_ref().is_none_or(|t| {
                now.duration_since(t.0).as_secs() >= AUDIT_TIME_REFRESH.as_secs() as i64
            });
            let differs = listed != current.violations
                || Some(count) != current.violation_count
                || ready_now != ready_before;
            let status = (differs || stale).then(|| {
                let mut status = serde_json::json!({
                    "conditions": ready_now,
                    "violationCount": count,
                    "lastAuditTime": Time(now),
                });
                if !listed.is_empty() {
                    status["violations"] = serde_json::json!(listed);
                }
                serde_json::json!({
                    "apiVersion": "sovereign.ai/v1alpha1",
                    "kind": "ResidencyPolicy",
                    "status": status,
                })
            });
            self.last.insert(name.clone(), violations.clone());
            out.push(PolicyOutcome {
                policy: name.clone(),
                status,
                new_violations,
                rules: mine
                    .iter()
                    .map(|(_, f)| f.rule.as_str().to_owned())
                    .collect(),
            });
        }
        out
    }

    /// Records that the status of `policy` was written as `patch` at `now` (the watch brings
    /// it back later; until then the next pass must not write it again).
    pub fn wrote(&mut self, policy: &str, patch: &Value) {
        if let Some(p) = self.policies.get_mut(policy)
            && let Ok(status) = serde_json::from_value(patch["status"].clone())
        {
            let mut status: crate::api::policy::ResidencyPolicyStatus = status;
            // The fields the policy controller owns stay as they were.
            if let Some(current) = &p.status {
                status.observed_generation = current.observed_generation;
                status.admission_policies = current.admission_policies.clone();
                let mut conditions: Vec<_> = current
                    .conditions
                    .iter()
                    .filter(|c| c.type_ != conditions::READY)
                    .cloned()
                    .collect();
                conditions.extend(status.conditions);
                status.conditions = conditions;
            }
            p.status = Some(status);
        }
    }
}

/// Objects parsed at once by a pass: a full pass over a big store parses it a slice at a
/// time, never all of it.
const JUDGE_CHUNK: usize = 512;

/// Judges the objects at `keys` and records those with findings or errors in `judged`.
fn judge(
    engine: &Engine,
    inventory: &Inventory<'_>,
    store: &Store,
    keys: impl Iterator<Item = Key>,
    judged: &mut BTreeMap<Key, Evaluation>,
) {
    let mut keys = keys.peekable();
    while keys.peek().is_some() {
        let chunk: Vec<(Key, Value)> = keys
            .by_ref()
            .take(JUDGE_CHUNK)
            .filter_map(|k| store.get(&k).map(|v| (k, v)))
            .collect();
        let objects = chunk.iter().map(|(k, v)| (k.clone(), v));
        for (key, evaluation) in engine.evaluate_each(inventory, objects) {
            if !evaluation.findings.is_empty() || !evaluation.errors.is_empty() {
                judged.insert(key, evaluation);
            }
        }
    }
}

/// The policy an engine error belongs to; None for errors of objects (reported under every
/// policy, as each policy's audit judged every object).
fn error_policy(error: &ResidencyError) -> Option<&str> {
    match error {
        ResidencyError::SinkExpression { policy, .. }
        | ResidencyError::UnjudgeableSink { policy, .. } => Some(policy),
        ResidencyError::InvalidObject { .. } => None,
    }
}

fn object_reference(object: &Value) -> ObjectReference {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    ObjectReference {
        api_version: text(&object["apiVersion"]),
        kind: text(&object["kind"]),
        name: text(&object["metadata"]["name"]),
        namespace: text(&object["metadata"]["namespace"]),
        uid: text(&object["metadata"]["uid"]),
        ..ObjectReference::default()
    }
}

/// What the watch tasks send to the audit loop.
enum Message {
    Object(usize, watcher::Event<Value>),
    Policy(Box<watcher::Event<ResidencyPolicy>>),
}

/// The API resource of a kind, if the cluster serves it (third-party CRDs may be absent).
async fn served(ctx: &Context, watched: &Watched) -> Result<Option<ApiResource>, AuditError> {
    if watched.version.is_empty() {
        let discovery = kube::discovery::group(&ctx.client, &watched.group).await;
        return Ok(discovery.ok().and_then(|g| {
            g.recommended_kind(&watched.kind)
                .map(|(resource, _)| resource)
        }));
    }
    let gvk = GroupVersionKind::gvk(&watched.group, &watched.version, &watched.kind);
    match pinned_kind(&ctx.client, &gvk).await {
        Ok((resource, _)) => Ok(Some(resource)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(kube::Error::Discovery(_)) => Ok(None),
        Err(source) => Err(AuditError::Discover {
            kind: watched.kind.clone(),
            source,
        }),
    }
}

/// Watches one kind until the receiver goes, sending its events with apiVersion and kind set,
/// already cut down to what the store keeps (`whole`: [`KindStore::keep`]): a queue of whole
/// Pods, each a tree of dozens of maps, would cost more than the store.
fn spawn_watch(
    ctx: &Context,
    index: usize,
    watched: &Watched,
    whole: bool,
    resource: ApiResource,
    tx: mpsc::Sender<Message>,
) -> tokio::task::JoinHandle<()> {
    let api_version = resource.api_version.clone();
    let kind = watched.kind.clone();
    let typed = move |mut value: Value| {
        if let Some(map) = value.as_object_mut() {
            map.insert("apiVersion".into(), Value::from(api_version.as_str()));
            map.insert("kind".into(), Value::from(kind.as_str()));
        }
        kept(value, whole)
    };
    let name = watched.kind.clone();
    let forward = move |event: Result<watcher::Event<Value>, watcher::Error>| {
        let tx = tx.clone();
        let name = name.clone();
        async move {
            match event {
                Ok(event) => tx.send(Message::Object(index, event)).await.is_ok(),
                Err(error) => {
                    tracing::warn!(kind = %name, %error, "audit watch failed; retrying");
                    true
                }
            }
        }
    };
    if watched.metadata_only {
        // An `Api` of PartialObjectMeta asks for metadata only (`as=PartialObjectMetadata`):
        // a Secret's data never reaches the operator.
        let api = Api::<PartialObjectMeta<DynamicObject>>::all_with(ctx.client.clone(), &resource);
        let to_value = move |m: PartialObjectMeta<DynamicObject>| {
            typed(serde_json::json!({"metadata": m.metadata}))
        };
        tokio::spawn(run_watch(api, watched.kind.clone(), to_value, forward))
    } else {
        let api = Api::<DynamicObject>::all_with(ctx.client.clone(), &resource);
        let to_value =
            move |o: DynamicObject| typed(serde_json::to_value(o).unwrap_or(Value::Null));
        tokio::spawn(run_watch(api, watched.kind.clone(), to_value, forward))
    }
}

/// How a watch gets the kind's objects at its start (and after its watch expired).
///
/// `Streamed` is a watch with `sendInitialEvents=true` (WatchList; the API server's `WatchList`
/// feature gate is on by default in Kubernetes 1.32 and from 1.34, off in 1.33): the watch
/// cache sends the objects one event at a time, so a watch holds one object while it syncs,
/// not a page of 500 (a page of Pods is about 1 MB of JSON and several times that parsed, in every
/// watch at once; freed at once, it still left the allocator's heap larger: 147 against 123 MiB
/// of RSS in docs/performance.md, the audit at scale). `Paged` is a LIST of 500 objects a page,
/// then a WATCH, for an API server that refuses streamed lists (kube sends no
/// `resourceVersion=0` with a page size: the watch cache would ignore the page size and answer
/// with the whole kind).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialList {
    /// WatchList.
    Streamed,
    /// LIST in pages, then WATCH.
    Paged,
}

impl InitialList {
    /// The watcher's configuration.
    pub fn config(self) -> watcher::Config {
        match self {
            Self::Streamed => watcher::Config::default().streaming_lists(),
            Self::Paged => watcher::Config::default().page_size(500),
        }
    }

    /// The strategy to use after `error`: a streamed list the API server refused (the
    /// `WatchList` feature gate off answers the watch with 422 Invalid, an older server with
    /// 400) falls back to pages; anything else is retried as it is.
    pub fn after(self, error: &watcher::Error) -> Self {
        match error {
            watcher::Error::WatchStartFailed(kube::Error::Api(status))
                if self == Self::Streamed && matches!(status.code, 400 | 422) =>
            {
                Self::Paged
            }
            _ => self,
        }
    }
}

/// Runs the watch of one kind, converting each object with `to_value`, until `forward` says
/// the receiver went. Starts streamed ([`InitialList`]) and falls back to pages once if the
/// API server refuses.
async fn run_watch<K, C, F, Fut>(api: Api<K>, kind: String, to_value: C, forward: F)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
    C: Fn(K) -> Value,
    F: Fn(Result<watcher::Event<Value>, watcher::Error>) -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let mut strategy = InitialList::Streamed;
    loop {
        let stream = watcher(api.clone(), strategy.config()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut fallback = false;
        while let Some(event) = stream.next().await {
            if let Err(error) = &event {
                let next = strategy.after(error);
                if next != strategy {
                    tracing::info!(%kind, %error, "the API server does not stream lists; listing in pages");
                    strategy = next;
                    fallback = true;
                    break;
                }
            }
            if !forward(event.map(|e| map_event(e, &to_value))).await {
                return;
            }
        }
        if !fallback {
            return;
        }
    }
}

fn map_event<A, B>(event: watcher::Event<A>, f: impl Fn(A) -> B) -> watcher::Event<B> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(f(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(f(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(f(o)),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// The watches of the audit's kinds: started once served, stopped when a sink kind is no
/// longer declared.
struct Watches {
    running: HashMap<usize, tokio::task::JoinHandle<()>>,
    /// Kinds the cluster did not serve at the last look.
    missing: BTreeSet<usize>,
    tx: mpsc::Sender<Message>,
}

impl Watches {
    /// Starts the watch of kind `index`, or marks it missing.
    async fn start(&mut self, ctx: &Context, audit: &mut Audit, index: usize) -> Vec<Change> {
        if self.running.contains_key(&index) {
            return Vec::new();
        }
        let watched = audit.store.watched(index).clone();
        match served(ctx, &watched).await {
            Ok(Some(resource)) => {
                self.missing.remove(&index);
                let whole = audit.store.whole(index);
                let task = spawn_watch(ctx, index, &watched, whole, resource, self.tx.clone());
                self.running.insert(index, task);
                Vec::new()
            }
            Ok(None) => {
                self.missing.insert(index);
                audit.store.unserved(index)
            }
            Err(error) => {
                // Unknown whether it is served: try again at the next rediscovery, and do not
                // hold the audit back meanwhile.
                tracing::warn!(%error, "audit cannot discover a kind");
                self.missing.insert(index);
                audit.store.unserved(index)
            }
        }
    }

    /// Makes the sink kinds watched match what the policies declare.
    async fn sync_sinks(
        &mut self,
        ctx: &Context,
        audit: &mut Audit,
        sinks: &mut BTreeMap<Watched, usize>,
    ) -> Vec<Change> {
        let wanted = sink_kinds(audit.policies());
        let mut changes = Vec::new();
        // Table kinds that became (or stopped being) sinks: stored whole (or projected) from
        // a fresh list; the re-list's differences re-judge what changed.
        let whole = table_sinks(audit.policies());
        for index in 0..audit.store.kinds.len() {
            let w = audit.store.watched(index);
            let wants = whole.contains(&(w.group.clone(), w.kind.clone()));
            if wants != audit.store.whole(index) {
                audit.store.set_whole(index, wants);
                if let Some(task) = self.running.remove(&index) {
                    task.abort();
                    changes.extend(self.start(ctx, audit, index).await);
                }
            }
        }
        for watched in &wanted {
            if !sinks.contains_key(watched) {
                let index = audit.store.add_kind(watched.clone());
                sinks.insert(watched.clone(), index);
                changes.extend(self.start(ctx, audit, index).await);
            }
        }
        let gone: Vec<Watched> = sinks
            .keys()
            .filter(|w| !wanted.contains(w))
            .cloned()
            .collect();
        for watched in gone {
            if let Some(index) = sinks.remove(&watched) {
                if let Some(task) = self.running.remove(&index) {
                    task.abort();
                }
                self.missing.remove(&index);
                changes.extend(audit.store.unserved(index));
            }
        }
        changes
    }
}

/// Runs the audit until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl std::future::Future<Output = ()> + Send) {
    // Events are small once projected; the bound only paces the watches behind a slow pass.
    let (tx, mut rx) = mpsc::channel::<Message>(1024);
    let mut audit = Audit::default();
    let mut watches = Watches {
        running: HashMap::new(),
        missing: BTreeSet::new(),
        tx: tx.clone(),
    };
    let policy_tx = tx.clone();
    let policies = tokio::spawn(run_policies(ctx.clone(), policy_tx));
    let mut changes: Vec<Change> = Vec::new();
    for watched in table_kinds() {
        let index = audit.store.add_kind(watched);
        changes.extend(watches.start(&ctx, &mut audit, index).await);
    }
    let mut sinks: BTreeMap<Watched, usize> = BTreeMap::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut rediscovery = tokio::time::interval(REDISCOVERY);
    rediscovery.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        // Wait for something to do.
        tokio::select! {
            () = &mut shutdown => break,
            message = rx.recv() => {
                let Some(message) = message else { break };
                receive(&mut audit, message, &mut changes);
            }
            _ = rediscovery.tick() => {
                let missing: Vec<usize> = watches.missing.iter().copied().collect();
                for index in missing {
                    changes.extend(watches.start(&ctx, &mut audit, index).await);
                }
            }
        }
        // Gather the burst.
        let first = Instant::now();
        while first.elapsed() < MAX_BATCH {
            match tokio::time::timeout(SETTLE, rx.recv()).await {
                Ok(Some(message)) => receive(&mut audit, message, &mut changes),
                Ok(None) | Err(_) => break,
            }
        }
        if audit.policies_synced {
            changes.extend(watches.sync_sinks(&ctx, &mut audit, &mut sinks).await);
        }
        if !audit.ready() {
            continue;
        }
        let started = Instant::now();
        let outcomes = audit.pass(&changes, Timestamp::now());
        let judged = changes.len();
        changes.clear();
        let mut written = 0;
        for outcome in outcomes {
            ctx.metrics
                .set_violations(&outcome.policy, outcome.rules.iter().map(String::as_str));
            publish(&ctx, &outcome).await;
            if let Some(patch) = &outcome.status {
                match write_status(&ctx, &outcome.policy, patch).await {
                    Ok(()) => {
                        audit.wrote(&outcome.policy, patch);
                        written += 1;
                    }
                    Err(error) => {
                        // The next pass computes the same patch again (the status did not
                        // change); force one soon.
                        tracing::warn!(%error, "audit status not written");
                        audit.engine_stale = true;
                    }
                }
            }
        }
        tracing::debug!(
            changes = judged,
            objects_with_findings = audit.judged.len(),
            statuses_written = written,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "audit pass"
        );
    }
    policies.abort();
    for task in watches.running.into_values() {
        task.abort();
    }
}

fn receive(audit: &mut Audit, message: Message, changes: &mut Vec<Change>) {
    match message {
        Message::Object(index, event) => {
            let new = audit.store.apply(index, event);
            // Before the first pass every object is judged anyway (no engine yet: the pass
            // rebuilds it and judges all): the initial sync's changes, one per object, are
            // not kept.
            if audit.engine.is_some() {
                changes.extend(new);
            }
        }
        Message::Policy(event) => audit.apply_policy(*event),
    }
}

async fn run_policies(ctx: Arc<Context>, tx: mpsc::Sender<Message>) {
    let api = Api::<ResidencyPolicy>::all(ctx.client.clone());
    let mut stream = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    while let Some(event) = stream.next().await {
        match event {
            Ok(event) => {
                if tx.send(Message::Policy(Box::new(event))).await.is_err() {
                    return;
                }
            }
            Err(error) => tracing::warn!(%error, "audit: ResidencyPolicy watch failed; retrying"),
        }
    }
}

async fn publish(ctx: &Context, outcome: &PolicyOutcome) {
    for (violation, reference) in &outcome.new_violations {
        let event = Event {
            type_: EventType::Warning,
            reason: "ResidencyViolation".into(),
            note: Some(format!(
                "{} ({}): {}",
                violation.rule, outcome.policy, violation.message
            )),
            action: "Audit".into(),
            secondary: None,
        };
        if let Err(error) = ctx.recorder.publish(&event, reference).await {
            tracing::warn!(%error, "cannot publish a violation event");
        }
    }
}

async fn write_status(ctx: &Context, policy: &str, patch: &Value) -> Result<(), AuditError> {
    Api::<ResidencyPolicy>::all(ctx.client.clone())
        .patch_status(
            policy,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await
        .map_err(|source| AuditError::Status {
            policy: policy.to_owned(),
            source,
        })?;
    ctx.metrics.wrote(MANAGER, "ResidencyPolicy", "status");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::example_documents;
    use serde_json::json;

    /// An audit over the table kinds plus SovereignRegions from the example, with the example's
    /// policies, every kind listed.
    fn example_audit() -> Audit {
        let mut audit = Audit::default();
        for watched in table_kinds() {
            audit.store.add_kind(watched);
        }
        for kind in &mut audit.store.kinds {
            kind.synced = true;
        }
        for region in example_documents("SovereignRegion") {
            let index = kind_index(&audit, "SovereignRegion");
            audit.store.apply(
                index,
                watcher::Event::Apply(typed(region, "SovereignRegion")),
            );
        }
        for policy in example_documents("ResidencyPolicy") {
            let policy: ResidencyPolicy = serde_json::from_value(policy).expect("policy");
            audit.apply_policy(watcher::Event::InitApply(policy));
        }
        audit.apply_policy(watcher::Event::InitDone);
        audit
    }

    #[test]
    fn a_relist_keeps_parsed_only_the_referenced_objects() {
        let mut audit = example_audit();
        let secrets = kind_index(&audit, "Secret");
        audit.store.apply(secrets, watcher::Event::Init);
        for (name, class) in [("db", Some("pii")), ("plain", None)] {
            let object = secret("team-a", name, class);
            audit
                .store
                .apply(secrets, watcher::Event::InitApply(object));
        }
        let changes = audit.store.apply(secrets, watcher::Event::InitDone);
        assert_eq!(changes.len(), 2, "both objects are new: {changes:?}");
        let parsed: Vec<&Key> = audit
            .store
            .referenced
            .keys()
            .filter(|k| k.kind == secrets)
            .collect();
        assert_eq!(parsed.len(), 1, "{parsed:?}");
        assert_eq!(parsed[0].name, "db");
        // A re-list without the labelled Secret drops its parsed copy.
        audit.store.apply(secrets, watcher::Event::Init);
        let plain = secret("team-a", "plain", None);
        audit.store.apply(secrets, watcher::Event::InitApply(plain));
        let changes = audit.store.apply(secrets, watcher::Event::InitDone);
        assert_eq!(changes.len(), 1, "only db went: {changes:?}");
        assert!(audit.store.referenced.keys().all(|k| k.kind != secrets));
    }

    #[test]
    fn the_initial_sync_keeps_no_changes_but_later_events_do() {
        let mut audit = example_audit();
        let secrets = kind_index(&audit, "Secret");
        let event = |name: &str| {
            Message::Object(
                secrets,
                watcher::Event::Apply(secret("team-a", name, Some("pii"))),
            )
        };
        let mut changes = Vec::new();
        receive(&mut audit, event("a"), &mut changes);
        assert!(
            changes.is_empty(),
            "no engine yet: the first pass judges all"
        );
        assert!(
            audit
                .store
                .get(&Key {
                    kind: secrets,
                    namespace: "team-a".into(),
                    name: "a".into(),
                })
                .is_some()
        );
        audit.pass(&changes, Timestamp::UNIX_EPOCH);
        receive(&mut audit, event("b"), &mut changes);
        assert_eq!(changes.len(), 1, "{changes:?}");
    }

    #[test]
    fn a_refused_streamed_list_falls_back_to_pages_once() {
        let refused = |code: u16| {
            watcher::Error::WatchStartFailed(kube::Error::Api(Box::new(
                kube::core::Status::failure("refused", "Invalid").with_code(code),
            )))
        };
        assert_eq!(
            InitialList::Streamed.after(&refused(422)),
            InitialList::Paged
        );
        assert_eq!(
            InitialList::Streamed.after(&refused(400)),
            InitialList::Paged
        );
        // Forbidden or a server error is retried as it is: a LIST would fail the same way.
        assert_eq!(
            InitialList::Streamed.after(&refused(403)),
            InitialList::Streamed
        );
        assert_eq!(
            InitialList::Streamed.after(&refused(500)),
            InitialList::Streamed
        );
        assert_eq!(InitialList::Paged.after(&refused(422)), InitialList::Paged);
        assert_eq!(
            InitialList::Streamed.config().initial_list_strategy,
            watcher::InitialListStrategy::StreamingList
        );
        assert_eq!(
            InitialList::Paged.config().list_semantic,
            watcher::ListSemantic::MostRecent,
            "a list from the watch cache would ignore the page size"
        );
    }

    fn kind_index(audit: &Audit, kind: &str) -> usize {
        audit
            .store
            .kinds
            .iter()
            .position(|k| k.watched.kind == kind)
            .expect("kind")
    }

    fn typed(mut value: Value, kind: &str) -> Value {
        let spec = kinds::KINDS.iter().find(|k| k.kind == kind).expect("kind");
        value["apiVersion"] = spec.api_version().into();
        value["kind"] = kind.into();
        value
    }

    fn namespace(name: &str, region: Option<&str>) -> Value {
        let mut labels = json!({});
        if let Some(region) = region {
            labels["sovereign.ai/region"] = region.into();
        }
        typed(
            json!({"metadata": {"name": name, "labels": labels}}),
            "Namespace",
        )
    }

    fn secret(namespace: &str, name: &str, class: Option<&str>) -> Value {
        let mut labels = json!({});
        if let Some(class) = class {
            labels["sovereign.ai/data-class"] = class.into();
        }
        typed(
            json!({"metadata": {"name": name, "namespace": namespace, "labels": labels}}),
            "Secret",
        )
    }

    /// A Deployment reading Secret `reads`, pinned to `location` when given.
    fn deployment(namespace: &str, name: &str, reads: &str, location: Option<&str>) -> Value {
        let mut spec = json!({"containers": [{"name": "c", "image": "i",
            "envFrom": [{"secretRef": {"name": reads}}]}]});
        if let Some(location) = location {
            spec["nodeSelector"] = json!({"topology.kubernetes.io/region": location});
        }
        typed(
            json!({"metadata": {"name": name, "namespace": namespace},
                   "spec": {"template": {"metadata": {}, "spec": spec}}}),
            "Deployment",
        )
    }

    /// The verdicts a full evaluation of the store gives, per key.
    fn full(audit: &Audit) -> BTreeMap<Key, Evaluation> {
        let policies: Vec<ResidencyPolicy> = audit.policies.values().cloned().collect();
        let engine = Engine::new(&audit.store.regions(), &policies);
        let objects: Vec<(Key, Value)> = audit
            .store
            .all_keys()
            .filter_map(|k| audit.store.get(&k).map(|v| (k, v)))
            .collect();
        let inventory = Inventory::of(objects.iter().map(|(_, v)| v));
        engine
            .evaluate_each(&inventory, objects.iter().map(|(k, v)| (k.clone(), v)))
            .into_iter()
            .filter(|(_, e)| !e.findings.is_empty() || !e.errors.is_empty())
            .collect()
    }

    fn step(audit: &mut Audit, kind: &str, event: watcher::Event<Value>) -> Vec<PolicyOutcome> {
        let index = kind_index(audit, kind);
        let changes = audit.store.apply(index, event);
        let outcomes = audit.pass(&changes, Timestamp::now());
        assert_eq!(
            audit.judged,
            full(audit),
            "incremental ≠ full after a {kind} event"
        );
        outcomes
    }

    /// Every change that moves another object's verdict — a Namespace's region label, a
    /// Secret's data class read by a Deployment, a region's locations — leaves the incremental
    /// verdicts equal to judging the whole store again.
    #[test]
    fn incremental_verdicts_equal_a_full_judgement() {
        let mut audit = example_audit();
        assert!(audit.ready());
        audit.pass(&[], Timestamp::now());
        let apply = watcher::Event::Apply;
        step(
            &mut audit,
            "Namespace",
            apply(namespace("team-a", Some("eu"))),
        );
        step(&mut audit, "Secret", apply(secret("team-a", "db", None)));
        // Pinned to a location of eu: compliant while its namespace is in eu.
        step(
            &mut audit,
            "Deployment",
            apply(deployment("team-a", "web", "db", Some("eu-central-1"))),
        );
        step(
            &mut audit,
            "Deployment",
            apply(deployment("team-a", "other", "none", None)),
        );
        assert!(
            audit.judged.is_empty(),
            "nothing governed yet: {:?}",
            audit.judged
        );
        // The Secret becomes pii: the Deployment reading it is governed now (compliant).
        step(
            &mut audit,
            "Secret",
            apply(secret("team-a", "db", Some("pii"))),
        );
        // The namespace moves to India: the Deployment pinned to eu now violates.
        step(
            &mut audit,
            "Namespace",
            apply(namespace("team-a", Some("in"))),
        );
        assert!(
            audit.judged.keys().any(|k| k.name == "web"),
            "the relabelled namespace's workload is re-judged: {:?}",
            audit.judged
        );
        // The namespace loses its label: no home region.
        step(&mut audit, "Namespace", apply(namespace("team-a", None)));
        step(
            &mut audit,
            "Namespace",
            apply(namespace("team-a", Some("eu"))),
        );
        assert!(audit.judged.is_empty(), "{:?}", audit.judged);
        // The region eu drops the location the Deployment is pinned to.
        let mut eu = example_documents("SovereignRegion")
            .into_iter()
            .find(|r| r["metadata"]["name"] == "eu")
            .expect("eu");
        eu["spec"]["locations"] = json!(["fr-par"]);
        step(
            &mut audit,
            "SovereignRegion",
            apply(typed(eu, "SovereignRegion")),
        );
        assert!(audit.judged.keys().any(|k| k.name == "web"));
        // The Secret goes: the Deployment is no longer governed.
        step(
            &mut audit,
            "Secret",
            watcher::Event::Delete(secret("team-a", "db", Some("pii"))),
        );
        assert!(!audit.judged.keys().any(|k| k.name == "web"));
        // A re-list that no longer holds the Namespace removes it (its workloads lose home).
        let index = kind_index(&audit, "Secret");
        audit.store.apply(
            index,
            watcher::Event::Apply(secret("team-a", "db", Some("pii"))),
        );
        let namespaces = kind_index(&audit, "Namespace");
        audit.store.apply(namespaces, watcher::Event::Init);
        let changes = audit.store.apply(namespaces, watcher::Event::InitDone);
        assert!(
            changes.iter().any(|c| c.key.name == "team-a"),
            "{changes:?}"
        );
        audit.pass(&changes, Timestamp::now());
        assert_eq!(audit.judged, full(&audit));
    }

    #[test]
    fn a_violation_is_announced_once_and_the_status_written_only_when_it_changes() {
        let mut audit = example_audit();
        let now = Timestamp::now();
        let first = audit.pass(&[], now);
        let pii = |o: &[PolicyOutcome]| {
            o.iter()
                .find(|o| o.policy == "pii-home-region")
                .expect("pii policy")
                .clone()
        };
        // A policy never audited gets its first status (lastAuditTime missing).
        let written = pii(&first);
        let patch = written.status.clone().expect("first status");
        assert_eq!(patch["status"]["violationCount"], 0);
        audit.wrote("pii-home-region", &patch);

        let index = kind_index(&audit, "Secret");
        let changes = audit.store.apply(
            index,
            watcher::Event::Apply(secret("nowhere", "leak", Some("pii"))),
        );
        let outcome = pii(&audit.pass(&changes, now));
        assert_eq!(outcome.new_violations.len(), 1, "{outcome:?}");
        assert_eq!(outcome.new_violations[0].1.name.as_deref(), Some("leak"));
        let patch = outcome.status.expect("the count changed");
        assert_eq!(patch["status"]["violationCount"], 1);
        assert_eq!(patch["status"]["violations"][0]["name"], "leak");
        assert_eq!(patch["status"]["conditions"][0]["type"], "Ready");
        audit.wrote("pii-home-region", &patch);

        // Nothing changed: no Event, no write.
        let again = pii(&audit.pass(&[], now));
        assert!(
            again.new_violations.is_empty() && again.status.is_none(),
            "{again:?}"
        );
        // Ten minutes later the same verdict refreshes lastAuditTime, without an Event.
        let later = now + AUDIT_TIME_REFRESH;
        let refresh = pii(&audit.pass(&[], later));
        assert!(refresh.new_violations.is_empty());
        assert!(refresh.status.is_some());

        // A restarted operator knows the violations its status lists: no second Event.
        let mut restarted = example_audit();
        let mut policy = audit.policies["pii-home-region"].clone();
        policy.status = audit.policies["pii-home-region"].status.clone();
        restarted.apply_policy(watcher::Event::Apply(policy));
        restarted.store.apply(
            index,
            watcher::Event::Apply(secret("nowhere", "leak", Some("pii"))),
        );
        let outcome = pii(&restarted.pass(&[], now));
        assert!(outcome.new_violations.is_empty(), "{outcome:?}");
    }

    #[test]
    fn metadata_and_whole_objects_come_from_the_kinds_table() {
        let kinds = table_kinds();
        let find = |kind: &str| kinds.iter().find(|k| k.kind == kind).expect(kind);
        assert!(find("Secret").metadata_only && find("ConfigMap").metadata_only);
        assert!(find("Namespace").metadata_only);
        assert!(!find("Pod").metadata_only && !find("Deployment").metadata_only);
        assert!(!find("SovereignRegion").metadata_only);
        assert!(!find("InferenceBackend").metadata_only);
        assert_eq!(
            kinds.len(),
            kinds::KINDS.iter().filter(|k| k.audited).count()
        );
    }

    #[test]
    fn declared_sinks_outside_the_table_are_watched_whole() {
        let mut policy: ResidencyPolicy = serde_json::from_value(json!({
            "apiVersion": "sovereign.ai/v1alpha1", "kind": "ResidencyPolicy",
            "metadata": {"name": "p"},
            "spec": {"dataClasses": ["pii"], "sinks": [
                {"group": "example.com", "kinds": ["Mirror", "Mirror"],
                 "locationExpression": "object.spec.region"},
                {"group": "velero.io", "kinds": ["Backup"],
                 "locationExpression": "object.spec.region"}]}
        }))
        .expect("policy");
        let sinks = sink_kinds([&policy]);
        assert_eq!(sinks.len(), 1, "{sinks:?}");
        assert_eq!(
            (sinks[0].group.as_str(), sinks[0].kind.as_str()),
            ("example.com", "Mirror")
        );
        assert!(!sinks[0].metadata_only && sinks[0].version.is_empty());
        // The table's Backup is watched already; declared a sink, it is stored whole.
        assert_eq!(
            table_sinks([&policy]).into_iter().collect::<Vec<_>>(),
            vec![("velero.io".to_owned(), "Backup".to_owned())]
        );
        policy.spec.sinks.clear();
        assert!(sink_kinds([&policy]).is_empty());
        assert!(table_sinks([&policy]).is_empty());
    }

    #[test]
    fn the_store_keeps_no_managed_fields_and_ignores_unchanged_objects() {
        let mut store = Store::default();
        let index = store.add_kind(table_kinds().remove(1));
        let mut object = secret("a", "s", None);
        object["metadata"]["managedFields"] = json!([{"manager": "kubectl"}]);
        object["metadata"]["annotations"] =
            json!({"kubectl.kubernetes.io/last-applied-configuration": "{}", "keep": "x"});
        assert_eq!(
            store
                .apply(index, watcher::Event::Apply(object.clone()))
                .len(),
            1
        );
        assert!(store.apply(index, watcher::Event::Apply(object)).is_empty());
        let key = Key {
            kind: index,
            namespace: "a".into(),
            name: "s".into(),
        };
        let kept = store.get(&key).expect("stored");
        assert!(kept["metadata"].get("managedFields").is_none());
        assert_eq!(kept["metadata"]["annotations"], json!({"keep": "x"}));
    }

    /// A Pod is stored as what the rules read: its placement and the data it reads, not its
    /// image, status or resource version; a status-only update is no change. Declared a sink,
    /// the kind is stored whole.
    #[test]
    fn the_store_keeps_what_the_rules_read_and_sinks_whole() {
        let mut store = Store::default();
        let pods = table_kinds()
            .into_iter()
            .find(|k| k.kind == "Pod")
            .expect("Pod");
        let index = store.add_kind(pods);
        let mut pod = typed(
            json!({"metadata": {"name": "p", "namespace": "a", "resourceVersion": "1",
                                "labels": {"app": "x"}, "annotations": {"big": "y"}},
                   "spec": {"nodeName": "n1", "containers": [
                       {"name": "c", "image": "registry.example/app:1",
                        "env": [{"name": "A", "value": "1"},
                                {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]},
                       {"name": "plain", "image": "i"}],
                       "volumes": [{"name": "tmp", "emptyDir": {}},
                                   {"name": "cfg", "configMap": {"name": "c", "items": []}}]},
                   "status": {"phase": "Pending"}}),
            "Pod",
        );
        assert_eq!(
            store.apply(index, watcher::Event::Apply(pod.clone())).len(),
            1
        );
        let key = Key {
            kind: index,
            namespace: "a".into(),
            name: "p".into(),
        };
        let kept = store.get(&key).expect("stored");
        assert_eq!(
            kept,
            typed(
                json!({"metadata": {"name": "p", "namespace": "a", "labels": {"app": "x"}},
                       "spec": {"containers": [{"name": "c", "env": [
                                    {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s"}}}]}],
                                "volumes": [{"name": "cfg", "configMap": {"name": "c"}}]}}),
                "Pod"
            )
        );
        pod["status"]["phase"] = "Running".into();
        pod["metadata"]["resourceVersion"] = "2".into();
        assert!(
            store
                .apply(index, watcher::Event::Apply(pod.clone()))
                .is_empty()
        );
        store.set_whole(index, true);
        store.apply(index, watcher::Event::Apply(pod));
        let whole = store.get(&key).expect("stored");
        assert_eq!(whole["status"]["phase"], "Running");
        assert_eq!(whole["spec"]["nodeName"], "n1");
    }
}

/// The paged fallback against an API server on loopback that refuses streamed lists the way
/// one with the `WatchList` gate off does (422 Invalid), serving one Secret by LIST.
#[cfg(test)]
mod fallback {
    use super::*;
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers each connection's one request; sends every request's target to `seen`.
    async fn serve(listener: tokio::net::TcpListener, seen: mpsc::UnboundedSender<String>) {
        while let Ok((mut socket, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16384];
                let n = socket.read(&mut buf).await.unwrap_or(0);
                let request = String::from_utf8_lossy(&buf[..n]).into_owned();
                let target = request.split_whitespace().nth(1).unwrap_or("").to_owned();
                let _ = seen.send(target.clone());
                let (status, body) = if target.contains("sendInitialEvents=true") {
                    let refused = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "message": "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled",
                        "reason": "Invalid", "code": 422});
                    ("422 Unprocessable Entity", refused.to_string())
                } else if target.contains("watch=true") {
                    // The watch after the list: open, no events, until the test ends.
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n";
                    let _ = socket.write_all(head.as_bytes()).await;
                    tokio::time::sleep(Duration::from_secs(600)).await;
                    return;
                } else {
                    let list = json!({"kind": "SecretList", "apiVersion": "v1",
                        "metadata": {"resourceVersion": "7"},
                        "items": [{"metadata": {"name": "db", "namespace": "team-a",
                            "resourceVersion": "7", "labels": {"sovereign.ai/data-class": "pii"}}}]});
                    ("200 OK", list.to_string())
                };
                let response = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
            });
        }
    }

    #[tokio::test]
    async fn a_refused_streamed_list_is_listed_in_pages() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let (seen_tx, mut seen) = mpsc::unbounded_channel();
        let server = tokio::spawn(serve(listener, seen_tx));
        let config = kube::Config::new(url.parse().expect("url"));
        let client = kube::Client::try_from(config).expect("client");
        let resource = ApiResource::erase::<k8s_openapi::api::core::v1::Secret>(&());
        let api = Api::<DynamicObject>::all_with(client, &resource);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let forward = move |event: Result<watcher::Event<Value>, watcher::Error>| {
            let tx = tx.clone();
            async move { tx.send(event.map_err(|e| e.to_string())).is_ok() }
        };
        let to_value = |o: DynamicObject| serde_json::to_value(o).unwrap_or(Value::Null);
        let watch = tokio::spawn(run_watch(api, "Secret".into(), to_value, forward));
        let mut events = Vec::new();
        while let Some(event) = rx.recv().await {
            // An error forwarded means no fallback (the streamed list is retried forever).
            let done = matches!(event, Ok(watcher::Event::InitDone) | Err(_));
            events.push(event);
            if done {
                break;
            }
        }
        watch.abort();
        server.abort();
        let mut targets = Vec::new();
        while let Ok(target) = seen.try_recv() {
            targets.push(target);
        }
        assert!(
            targets[0].contains("watch=true") && targets[0].contains("sendInitialEvents=true"),
            "a streamed list first: {targets:?}"
        );
        assert!(
            targets
                .iter()
                .any(|t| t.contains("limit=500") && !t.contains("watch=true")),
            "then a LIST in pages: {targets:?}"
        );
        // The refusal is not forwarded: the store sees one clean initial list.
        let names: Vec<String> = events
            .iter()
            .map(|e| match e {
                Ok(watcher::Event::Init) => "Init".to_owned(),
                Ok(watcher::Event::InitApply(o)) => format!("InitApply {}", o["metadata"]["name"]),
                Ok(watcher::Event::InitDone) => "InitDone".to_owned(),
                other => format!("{other:?}"),
            })
            .collect();
        assert_eq!(
            names,
            ["Init", "InitApply \"db\"", "InitDone"],
            "{events:?}"
        );
    }
}

/// A profile of the store, not a test (`cargo test --release --lib -- --ignored
/// store_footprint --nocapture`): fills a store the way e2e/bench/audit-scale.sh fills the
/// cluster (33,334 Pods with the API server's defaults, 33,333 ConfigMaps, 33,333 Secrets over
/// 500 namespaces, 10,000 governed ConfigMaps) and prints the process's RSS before and after,
/// and the bytes of stored text. Figures only.
#[cfg(test)]
mod footprint {
    use super::*;
    use serde_json::json;

    fn rss_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    #[test]
    #[ignore = "a profile: prints figures"]
    fn store_footprint() {
        let mut store = Store::default();
        let index = |store: &mut Store, kind: &str| {
            let watched = table_kinds()
                .into_iter()
                .find(|k| k.kind == kind)
                .expect("kind");
            store.add_kind(watched)
        };
        let (pods, configmaps, secrets) = (
            index(&mut store, "Pod"),
            index(&mut store, "ConfigMap"),
            index(&mut store, "Secret"),
        );
        let before = rss_kib();
        let meta = |i: usize, ns: &str| {
            json!({"name": format!("u-{i}"), "namespace": ns,
                   "uid": format!("{i:08}-0000-4000-8000-000000000000"),
                   "resourceVersion": "12345", "creationTimestamp": "2026-12-01T13:00:00Z",
                   "labels": {"app": format!("app-{}", i % 50)},
                   "managedFields": [{"manager": "python", "operation": "Update",
                                      "fieldsV1": {"f:metadata": {"f:labels": {"f:app": {}}}}}]})
        };
        for i in 0..100_000usize {
            let ns = format!("scale-{:03}", i % 500);
            let (kind, object) = match i % 3 {
                0 => (
                    pods,
                    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta(i, &ns),
                    "spec": {"schedulerName": "bench-none", "restartPolicy": "Always",
                      "serviceAccountName": "default", "dnsPolicy": "ClusterFirst",
                      "terminationGracePeriodSeconds": 30,
                      "containers": [{"name": "c", "image": "registry.example/app:1",
                        "env": [{"name": "MODE", "value": "x"}],
                        "imagePullPolicy": "IfNotPresent", "resources": {},
                        "terminationMessagePath": "/dev/termination-log",
                        "volumeMounts": [{"name": "kube-api-access-abcde", "readOnly": true,
                          "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}]}],
                      "volumes": [{"name": "kube-api-access-abcde", "projected": {
                        "defaultMode": 420, "sources": [
                          {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                          {"configMap": {"name": "kube-root-ca.crt",
                            "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                          {"downwardAPI": {"items": [{"path": "namespace",
                            "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}],
                      "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists",
                        "effect": "NoExecute", "tolerationSeconds": 300}]},
                    "status": {"phase": "Pending", "qosClass": "BestEffort"}}),
                ),
                1 => (
                    configmaps,
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta(i, &ns)}),
                ),
                _ => (
                    secrets,
                    json!({"apiVersion": "v1", "kind": "Secret", "metadata": meta(i, &ns)}),
                ),
            };
            store.apply(kind, watcher::Event::Apply(object));
        }
        for i in 0..10_000usize {
            let mut m = meta(i, "sovereign-eu");
            m["name"] = format!("g-{i}").into();
            m["labels"] = json!({"sovereign.ai/data-class": "pii"});
            store.apply(
                configmaps,
                watcher::Event::Apply(
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": m}),
                ),
            );
        }
        let after = rss_kib();
        let text: usize = store
            .kinds
            .iter()
            .flat_map(|k| k.objects.values())
            .map(|s| s.0.len())
            .sum();
        let objects: usize = store.kinds.iter().map(|k| k.objects.len()).sum();
        eprintln!(
            "store of {objects} objects: RSS {} MiB → {} MiB (+{} MiB); stored text {} MiB \
             ({} B/object); {} parsed referenced objects",
            before / 1024,
            after / 1024,
            (after.saturating_sub(before)) / 1024,
            text / (1024 * 1024),
            text / objects.max(1),
            store.referenced.len()
        );
    }
}
