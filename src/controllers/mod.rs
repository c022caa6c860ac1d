//! The controllers: one module per custom resource, each a short pipeline
//! fetch → validate → build → apply → status. They share the context, the error policy and the
//! applier defined here.

pub mod apply;
pub mod audit;
pub mod backend;
pub mod budget;
pub mod policy;
pub mod region;
pub mod usage;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource, ResourceExt};

use crate::api::conditions::{self, DesiredCondition};
use crate::metrics::SharedMetrics;
use apply::{Applier, ApplyError};

/// Which regions this operator instance acts on (`--region`, repeatable); all when empty.
#[derive(Clone, Debug, Default)]
pub struct RegionScope(BTreeSet<String>);

impl RegionScope {
    /// A scope of the given region names; empty means every region.
    pub fn new(regions: impl IntoIterator<Item = String>) -> Self {
        Self(regions.into_iter().collect())
    }

    /// Whether this instance manages `region`.
    pub fn manages(&self, region: &str) -> bool {
        self.0.is_empty() || self.0.contains(region)
    }

    /// Human list of the managed regions.
    pub fn describe(&self) -> String {
        if self.0.is_empty() {
            "all regions".to_owned()
        } else {
            self.0.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    }
}

/// What every reconcile gets.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// The regions this instance manages.
    pub scope: RegionScope,
    /// Metrics.
    pub metrics: SharedMetrics,
    /// Publishes Events on the custom resources.
    pub recorder: Recorder,
    /// Consecutive transient failures per object (see [`Backoff`]).
    failures: Mutex<Backoff>,
    /// UIDs pruned at least once by this process: the first reconcile after a start prunes
    /// whatever the spec says, so children an older operator version made are cleaned up.
    pruned: Mutex<std::collections::HashSet<String>>,
    /// How often gateways are scraped and budgets re-evaluated.
    pub usage_interval: Duration,
    /// Wakes the usage collector before its interval ends (a region was created or changed).
    pub usage_wakeup: tokio::sync::Notify,
    /// Budget thresholds announced by this process (budget UID, period, percent): a reconcile
    /// that ran on a status older than its own last write must not announce twice.
    announced: Mutex<std::collections::HashSet<String>>,
}

/// Default of `--usage-interval`.
pub const DEFAULT_USAGE_INTERVAL: Duration = Duration::from_secs(30);

impl Context {
    /// A context for `client`.
    pub fn new(client: Client, scope: RegionScope, metrics: SharedMetrics) -> Self {
        let reporter = Reporter {
            controller: "sovereign-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            scope,
            metrics,
            failures: Mutex::new(Backoff::default()),
            pruned: Mutex::new(std::collections::HashSet::new()),
            usage_interval: DEFAULT_USAGE_INTERVAL,
            usage_wakeup: tokio::sync::Notify::new(),
            announced: Mutex::new(std::collections::HashSet::new()),
        }
    }

    /// Whether to list and delete unwanted children of `uid` now (see [`needs_prune`]), and
    /// always once per object and process.
    pub fn should_prune(&self, uid: &str, observed: Option<i64>, generation: Option<i64>) -> bool {
        let pruned = self.pruned.lock().unwrap_or_else(|e| e.into_inner());
        needs_prune(observed, generation) || !pruned.contains(uid)
    }

    /// Records that `uid` was pruned.
    pub fn mark_pruned(&self, uid: &str) {
        let mut pruned = self.pruned.lock().unwrap_or_else(|e| e.into_inner());
        pruned.insert(uid.to_owned());
    }

    /// The context with another usage interval.
    pub fn with_usage_interval(mut self, interval: Duration) -> Self {
        self.usage_interval = interval;
        self
    }

    /// Whether `key` is announced for the first time by this process (and records it).
    pub fn first_announcement(&self, key: &str) -> bool {
        let mut announced = self.announced.lock().unwrap_or_else(|e| e.into_inner());
        announced.insert(key.to_owned())
    }

    /// An applier writing as `manager`.
    pub fn applier(&self, manager: &'static str) -> Applier {
        Applier::new(self.client.clone(), manager, self.metrics.clone())
    }

    fn backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
        self.failures.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publishes an Event on `object`; failures to publish are logged, never fatal.
    pub async fn event<K>(&self, object: &K, type_: EventType, reason: &str, note: String)
    where
        K: Resource<DynamicType = ()>,
    {
        let event = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &object.object_ref(&())).await {
            tracing::warn!(%error, reason, "cannot publish event");
        }
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A request to the API server failed: transient, retried with back-off.
    #[error("{action}: {source}")]
    Kube {
        /// What was being done.
        action: String,
        /// The client error.
        source: kube::Error,
    },
    /// Applying or pruning children failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// A region's usage ledger cannot be read (retried: the collector reports the cause).
    #[error("the usage ledger of region {region}: {message}")]
    Ledger {
        /// The region.
        region: String,
        /// What is wrong.
        message: String,
    },
}

impl Error {
    /// Wraps a client error with what was being done.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Self::Kube {
            action: action.into(),
            source,
        }
    }

    /// Short label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube { .. } => "kube_error",
            Error::Apply(ApplyError::Render(_)) => "invalid",
            Error::Apply(ApplyError::Kube { .. }) => "apply_error",
            Error::Ledger { .. } => "ledger_error",
        }
    }

    /// Whether retrying can help. Invalid input cannot: the object must change first.
    fn is_transient(&self) -> bool {
        !matches!(self, Error::Apply(ApplyError::Render(_)))
    }
}

/// Retry policy: invalid objects wait for a change; transient errors back off exponentially
/// (5 s, 10 s, 20 s, … up to 5 minutes) so a broken dependency causes no hot loop.
pub fn error_policy<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    ctx: Arc<Context>,
) -> Action {
    let key = BackoffKey::of(&*object);
    tracing::warn!(object = %key, %error, "reconcile failed");
    if !error.is_transient() {
        return Action::await_change();
    }
    Action::requeue(ctx.backoff().failed(key, std::time::Instant::now()))
}

/// Identifies an object across every controller of the process: they share one [`Context`],
/// so a SovereignRegion and a ResidencyPolicy both named `eu` must not share a counter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackoffKey {
    kind: String,
    namespace: String,
    name: String,
}

impl BackoffKey {
    /// The key of `object`.
    pub fn of<K: Resource<DynamicType = ()>>(object: &K) -> Self {
        Self {
            kind: K::kind(&()).into_owned(),
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
        }
    }
}

impl std::fmt::Display for BackoffKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// Consecutive transient failures per object, for exponential back-off: 5 s, 10 s, 20 s, …
/// up to 5 minutes. A success clears the object's entry; an entry whose object stopped
/// failing without a success (it was deleted) is dropped once it is older than twice the
/// longest back-off, so the map holds only objects that failed recently.
#[derive(Debug, Default)]
pub struct Backoff {
    entries: HashMap<BackoffKey, (u32, std::time::Instant)>,
}

impl Backoff {
    /// The longest wait between retries.
    pub const MAX: Duration = Duration::from_secs(300);

    /// Records a failure of `key` at `now`; returns how long to wait before the retry.
    pub fn failed(&mut self, key: BackoffKey, now: std::time::Instant) -> Duration {
        self.entries
            .retain(|_, (_, last)| now.saturating_duration_since(*last) <= 2 * Self::MAX);
        let entry = self.entries.entry(key).or_insert((0, now));
        entry.0 = entry.0.saturating_add(1);
        entry.1 = now;
        let seconds = 5u64.saturating_mul(1u64 << entry.0.saturating_sub(1).min(6));
        Duration::from_secs(seconds).min(Self::MAX)
    }

    /// Clears the back-off of `key` after a success.
    pub fn succeeded(&mut self, key: &BackoffKey) {
        self.entries.remove(key);
    }

    /// Objects with a recorded failure.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no object has a recorded failure.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Runs one reconcile of `object` by `controller`: counts it and its duration by result, and
/// clears the object's back-off when it succeeded.
pub async fn measured<K: Resource<DynamicType = ()>>(
    controller: &'static str,
    object: &K,
    ctx: &Context,
    work: impl std::future::Future<Output = Result<Action, Error>>,
) -> Result<Action, Error> {
    let started = std::time::Instant::now();
    let in_flight = ctx.metrics.reconcile_started(controller);
    let result = work.await;
    drop(in_flight);
    let label = match &result {
        Ok(_) => "ok",
        Err(e) => e.metric_label(),
    };
    ctx.metrics.reconciled(controller, label, started.elapsed());
    if result.is_ok() {
        reset_backoff(ctx, object);
    }
    result
}

/// Clears the back-off of an object after a successful reconcile.
pub fn reset_backoff<K: Resource<DynamicType = ()>>(ctx: &Context, object: &K) {
    ctx.backoff().succeeded(&BackoffKey::of(object));
}

/// Applies `desired` to a copy of `current` conditions; returns the new list.
pub fn updated_conditions(
    current: &[Condition],
    desired: Vec<DesiredCondition<'_>>,
    generation: Option<i64>,
) -> Vec<Condition> {
    let mut conditions = current.to_vec();
    let now = Timestamp::now();
    for condition in desired {
        conditions::upsert(&mut conditions, condition, generation, now);
    }
    conditions
}

/// The conditions of an object another operator instance manages.
pub fn managed_elsewhere<'a>(
    types: &[&'a str],
    scope: &RegionScope,
    region: &str,
) -> Vec<DesiredCondition<'a>> {
    types
        .iter()
        .map(|t| DesiredCondition {
            type_: t,
            status: conditions::Status::Unknown,
            reason: conditions::REASON_MANAGED_ELSEWHERE,
            message: format!(
                "region {region} is managed by another operator instance; this one manages {}",
                scope.describe()
            ),
        })
        .collect()
}

/// Reconciles of one controller that run at once. Unbounded, a cold start over a thousand
/// backends holds a thousand requests and responses in memory at the same time.
pub const CONCURRENCY: u16 = 32;

/// Whether children may have become unwanted since the last reconcile that wrote status: only
/// a spec change (a new generation) changes what an object wants, and children are only ever
/// created for the object's own UID. Skipping the listing otherwise saves one LIST per owned
/// kind on every resync.
pub fn needs_prune(observed_generation: Option<i64>, generation: Option<i64>) -> bool {
    match observed_generation {
        Some(observed) => Some(observed) != generation,
        // Never reconciled to the end: anything created by an earlier attempt of the first
        // generation is still wanted.
        None => generation.is_some_and(|g| g > 1),
    }
}

/// Reads `name` from the API server's watch cache (`resourceVersion=0`), None when absent.
/// For observations of children's status only: a change there arrives as a watch event anyway,
/// so a read a few milliseconds stale costs nothing, while it spares etcd a quorum read.
pub async fn get_cached<K>(api: &kube::Api<K>, name: &str) -> Result<Option<K>, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_with(name, &kube::api::GetParams::any()).await {
        Ok(object) => Ok(Some(object)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(error) => Err(error),
    }
}

/// The InferenceBackends of `region`: those in its stack namespace that name it.
pub async fn region_backends(
    ctx: &Context,
    region: &crate::api::region::SovereignRegion,
) -> Result<Vec<crate::api::backend::InferenceBackend>, Error> {
    let namespace = region.stack_namespace();
    let name = region.name_any();
    Ok(
        kube::Api::<crate::api::backend::InferenceBackend>::namespaced(
            ctx.client.clone(),
            &namespace,
        )
        .list(&kube::api::ListParams::default())
        .await
        .map_err(|e| Error::kube(format!("list InferenceBackends in {namespace}"), e))?
        .items
        .into_iter()
        .filter(|b| b.spec.region == name)
        .collect(),
    )
}

/// Resync period of healthy objects.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Re-check period while something is still converging (pods starting, rollouts).
pub const PROGRESS_CHECK: Duration = Duration::from_secs(10);

/// Runs the region, backend, policy and budget controllers and the usage collector until `shutdown` resolves, then returns once both
/// have finished their in-flight reconciles.
pub async fn run_all(
    ctx: Arc<Context>,
    shutdown: futures::future::Shared<
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>,
    >,
) {
    tracing::info!(regions = %ctx.scope.describe(), "starting controllers");
    let interval = ctx.usage_interval;
    futures::join!(
        region::run(ctx.clone(), shutdown.clone()),
        backend::run(ctx.clone(), shutdown.clone()),
        policy::run(ctx.clone(), shutdown.clone()),
        audit::run(ctx.clone(), shutdown.clone()),
        usage::run(ctx.clone(), interval, shutdown.clone()),
        budget::run(ctx, interval, shutdown),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prune_only_after_a_spec_change() {
        assert!(
            !needs_prune(Some(3), Some(3)),
            "resync of an unchanged object"
        );
        assert!(needs_prune(Some(2), Some(3)), "the spec changed");
        assert!(
            !needs_prune(None, Some(1)),
            "first reconcile of a new object"
        );
        assert!(needs_prune(None, Some(2)), "edited before its first status");
    }

    #[test]
    fn backoff_is_per_kind_and_forgets_objects_that_stopped_failing() {
        use crate::api::{ResidencyPolicy, SovereignRegion};
        let named = |name: &str| kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            ..Default::default()
        };
        let region = SovereignRegion {
            metadata: named("eu"),
            spec: serde_json::from_value(serde_json::json!({
                "jurisdiction": "EU", "locations": ["eu-central-1"]}))
            .expect("region spec"),
            status: None,
        };
        let policy = ResidencyPolicy {
            metadata: named("eu"),
            spec: serde_json::from_value(serde_json::json!({"dataClasses": ["pii"]}))
                .expect("policy spec"),
            status: None,
        };
        let (region_key, policy_key) = (BackoffKey::of(&region), BackoffKey::of(&policy));
        assert_ne!(region_key, policy_key, "same name, different kinds");

        let start = std::time::Instant::now();
        let mut backoff = Backoff::default();
        assert_eq!(
            backoff.failed(region_key.clone(), start),
            Duration::from_secs(5)
        );
        assert_eq!(
            backoff.failed(region_key.clone(), start),
            Duration::from_secs(10)
        );
        // A success of the policy named `eu` does not reset the region's counter.
        backoff.succeeded(&policy_key);
        assert_eq!(
            backoff.failed(region_key.clone(), start),
            Duration::from_secs(20)
        );
        for _ in 0..10 {
            backoff.failed(region_key.clone(), start);
        }
        assert_eq!(backoff.failed(region_key.clone(), start), Backoff::MAX);
        backoff.succeeded(&region_key);
        assert!(backoff.is_empty());

        // An object that failed and was then deleted (no success ever comes) is forgotten.
        backoff.failed(region_key, start);
        let later = start + 2 * Backoff::MAX + Duration::from_secs(1);
        backoff.failed(policy_key, later);
        assert_eq!(backoff.len(), 1, "only the recent failure is kept");
    }

    #[test]
    fn scope_of_no_region_is_every_region() {
        assert!(RegionScope::default().manages("eu"));
        let scope = RegionScope::new(["eu".to_owned()]);
        assert!(scope.manages("eu") && !scope.manages("in"));
    }
}
