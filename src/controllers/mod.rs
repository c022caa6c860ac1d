//! The controllers: one module per custom resource, each a pipeline observe (GETs and LISTs
//! into a plain struct) → decide (pure, unit-tested: the desired children, the status, the
//! Events) → apply → write status. They share what is defined here: the context, the error
//! type (a variant per step), the retry policy, the wiring ([`drive`]), the status writer
//! ([`status`]) and the applier ([`apply`]).

pub mod admission;
pub mod apply;
pub mod backend;
pub mod budget;
pub mod policy;
pub mod region;
pub mod status;
pub mod usage;

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::controller::{self, Action};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::conditions::{self, DesiredCondition};
use crate::finops::ledger::LedgerError;
use crate::metrics::SharedMetrics;
use crate::render::RenderError;
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

impl AsRef<Context> for Context {
    fn as_ref(&self) -> &Context {
        self
    }
}

/// An object as errors and the back-off name it: kind, namespace (empty for cluster-scoped
/// kinds) and name. Every controller of the process shares one [`Context`], so a
/// SovereignRegion and a ResidencyPolicy both named `eu` must not share a back-off counter.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    kind: Cow<'static, str>,
    namespace: String,
    name: String,
}

/// The key of the back-off counters.
pub type BackoffKey = ObjectKey;

impl ObjectKey {
    /// The key of `object`.
    pub fn of<K: Resource<DynamicType = ()>>(object: &K) -> Self {
        Self {
            kind: K::kind(&()).into_owned().into(),
            namespace: object.namespace().unwrap_or_default(),
            name: object.name_any(),
        }
    }

    /// The key of the object of kind `K` named `name` in `namespace`.
    pub fn named<K: Resource<DynamicType = ()>>(namespace: Option<&str>, name: &str) -> Self {
        Self {
            kind: K::kind(&()).into_owned().into(),
            namespace: namespace.unwrap_or_default().to_owned(),
            name: name.to_owned(),
        }
    }

    /// The key of the object a controller's queue refers to.
    fn of_ref(object: &ObjectRef<kube::api::DynamicObject>) -> Self {
        Self {
            kind: object.dyntype.kind.clone().into(),
            namespace: object.namespace.clone().unwrap_or_default(),
            name: object.name.clone(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
        }
    }
}

/// A read of the observe step, as its error names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Read {
    /// GET of one object.
    Get(ObjectKey),
    /// LIST of a kind, in a namespace (every namespace when empty).
    List {
        /// The kind listed.
        kind: Cow<'static, str>,
        /// The namespace; empty for every namespace.
        namespace: String,
    },
    /// A read described in words.
    Described(String),
}

impl Read {
    /// GET of `name` of kind `K` in `namespace`.
    pub fn get<K: Resource<DynamicType = ()>>(namespace: Option<&str>, name: &str) -> Self {
        Self::Get(ObjectKey::named::<K>(namespace, name))
    }

    /// LIST of kind `K` in `namespace` (None: every namespace).
    pub fn list<K: Resource<DynamicType = ()>>(namespace: Option<&str>) -> Self {
        Self::List {
            kind: K::kind(&()).into_owned().into(),
            namespace: namespace.unwrap_or_default().to_owned(),
        }
    }

    /// The observe error of this read failing with `source`.
    pub fn failed(self, source: kube::Error) -> Error {
        Error::Observe { read: self, source }
    }
}

impl std::fmt::Display for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Read::Get(key) => write!(f, "get {key}"),
            Read::List { kind, namespace } if namespace.is_empty() => write!(f, "list {kind}"),
            Read::List { kind, namespace } => write!(f, "list {kind} in {namespace}"),
            Read::Described(what) => f.write_str(what),
        }
    }
}

/// Why a reconcile failed, by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Observe: a GET or LIST failed (transient, retried with back-off).
    #[error("observe: {read}: {source}")]
    Observe {
        /// What was read.
        read: Read,
        /// The client error.
        source: kube::Error,
    },
    /// Observe: a region's usage ledger cannot be read (retried: the collector reports the
    /// cause).
    #[error("observe: the usage ledger of region {region}: {source}")]
    Ledger {
        /// The region.
        region: String,
        /// What is wrong.
        source: LedgerError,
    },
    /// Decide: the desired children cannot be built from the spec (waits for a change).
    #[error("decide: {0}")]
    Decide(#[from] RenderError),
    /// Apply: creating, updating or pruning a child failed.
    #[error("apply: {0}")]
    Apply(#[from] ApplyError),
    /// Write status: the status patch failed.
    #[error("write status of {object}: {source}")]
    WriteStatus {
        /// The object.
        object: ObjectKey,
        /// The client error.
        source: kube::Error,
    },
}

impl Error {
    /// An observe error of a read described in words: the audit's (`policy.rs`), until it
    /// names its reads with [`Read`] like the other controllers.
    pub fn kube(action: impl Into<String>, source: kube::Error) -> Self {
        Error::Observe {
            read: Read::Described(action.into()),
            source,
        }
    }

    /// Short label for metrics (`sovereign_reconciliations_total{result}`), one per step.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Observe { .. } => "observe_error",
            Error::Ledger { .. } => "ledger_error",
            Error::Decide(_) => "invalid",
            Error::Apply(_) => "apply_error",
            Error::WriteStatus { .. } => "status_error",
        }
    }

    /// Whether retrying can help. Invalid input cannot: the object must change first (and
    /// an object that cannot be serialised is a bug a retry does not fix).
    fn is_transient(&self) -> bool {
        !matches!(self, Error::Decide(_) | Error::Apply(ApplyError::Encode(_)))
    }
}

/// Retry policy: invalid objects wait for a change; transient errors back off exponentially
/// (5 s, 10 s, 20 s, … up to 5 minutes) so a broken dependency causes no hot loop.
pub fn error_policy<K: Resource<DynamicType = ()>, C: AsRef<Context>>(
    object: Arc<K>,
    error: &Error,
    ctx: Arc<C>,
) -> Action {
    let key = BackoffKey::of(&*object);
    tracing::warn!(object = %key, %error, "reconcile failed");
    if !error.is_transient() {
        return Action::await_change();
    }
    Action::requeue(
        (*ctx)
            .as_ref()
            .backoff()
            .failed(key, std::time::Instant::now()),
    )
}

/// Consecutive transient failures per object, for exponential back-off: 5 s, 10 s, 20 s, …
/// up to 5 minutes. A success clears the object's entry, and so does its deletion (see
/// [`drive`]); as a safety net, an entry older than twice the longest back-off is dropped,
/// so the map holds only objects that failed recently.
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

    /// Clears the back-off of `key` after a success or its deletion.
    pub fn forget(&mut self, key: &BackoffKey) {
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
        ctx.backoff().forget(&BackoffKey::of(object));
    }
    result
}

/// What a controller's run yields for each queued object.
type Outcome<K> = Result<(ObjectRef<K>, Action), controller::Error<Error, watcher::Error>>;

/// Forgets the back-off of an object the controller found deleted: a failed object always
/// has a retry queued, and the retry of a deleted one ends as `ObjectNotFound`.
fn forget_deleted<K: Resource<DynamicType = ()>>(backoff: &mut Backoff, outcome: &Outcome<K>) {
    if let Err(controller::Error::ObjectNotFound(object)) = outcome {
        backoff.forget(&ObjectKey::of_ref(object));
    }
}

/// The controller of `K` with the settings every controller shares: the whole kind watched
/// (status changes do not trigger: `any_semantic` only matters for the initial list),
/// reconciles bounded to `concurrency` at once.
pub fn controller<K>(client: &Client, concurrency: u16) -> Controller<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    Controller::new(
        Api::<K>::all(client.clone()),
        watcher::Config::default().any_semantic(),
    )
    .with_config(controller::Config::default().concurrency(concurrency))
}

/// Runs `controller` until `shutdown` resolves: each reconcile counted under `name`
/// ([`measured`]), failures retried by [`error_policy`], and the back-off of deleted objects
/// forgotten.
pub async fn drive<K, C, F>(
    name: &'static str,
    controller: Controller<K>,
    state: Arc<C>,
    reconcile: fn(Arc<K>, Arc<C>) -> F,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    C: AsRef<Context> + Send + Sync + 'static,
    F: std::future::Future<Output = Result<Action, Error>> + Send + 'static,
{
    let results = state.clone();
    controller
        .graceful_shutdown_on(shutdown)
        .run(
            move |object: Arc<K>, state: Arc<C>| async move {
                let work = reconcile(object.clone(), state.clone());
                measured(name, &*object, (*state).as_ref(), work).await
            },
            error_policy::<K, C>,
            state,
        )
        .for_each(move |outcome| {
            forget_deleted(&mut (*results).as_ref().backoff(), &outcome);
            futures::future::ready(())
        })
        .await;
}

/// Applies `desired` to a copy of `current` conditions now; returns the new list.
pub fn updated_conditions(
    current: &[Condition],
    desired: Vec<DesiredCondition<'_>>,
    generation: Option<i64>,
) -> Vec<Condition> {
    conditions_at(current, desired, generation, Timestamp::now())
}

/// Applies `desired` to a copy of `current` conditions at `now`; returns the new list.
pub fn conditions_at(
    current: &[Condition],
    desired: Vec<DesiredCondition<'_>>,
    generation: Option<i64>,
    now: Timestamp,
) -> Vec<Condition> {
    let mut conditions = current.to_vec();
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

/// Applies `children` as `manager`, then deletes the owner's children of `kinds` that are no
/// longer wanted — only after a spec change and once per process (see
/// [`Context::should_prune`]). The apply step of the region and backend controllers.
pub async fn apply_children<K: Resource<DynamicType = ()>>(
    ctx: &Context,
    manager: &'static str,
    owner: &K,
    observed_generation: Option<i64>,
    kinds: &[&str],
    namespace: &str,
    children: &[crate::render::Child],
) -> Result<(), Error> {
    let applier = ctx.applier(manager);
    for child in children {
        applier.apply(child).await?;
    }
    if let Some(uid) = owner.uid()
        && ctx.should_prune(&uid, observed_generation, owner.meta().generation)
    {
        applier
            .prune(kinds, namespace, &owner.name_any(), &uid, children)
            .await?;
        ctx.mark_pruned(&uid);
    }
    Ok(())
}

/// Reads `name` from the API server's watch cache (`resourceVersion=0`), None when absent.
/// For observations of children's status only: a change there arrives as a watch event anyway,
/// so a read a few milliseconds stale costs nothing, while it spares etcd a quorum read.
pub async fn get_cached<K>(api: &Api<K>, name: &str) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    match api.get_with(name, &kube::api::GetParams::any()).await {
        Ok(object) => Ok(Some(object)),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(error) => Err(Read::get::<K>(api.namespace(), name).failed(error)),
    }
}

/// The InferenceBackends of `region`: those in its stack namespace that name it.
pub async fn region_backends(
    ctx: &Context,
    region: &crate::api::region::SovereignRegion,
) -> Result<Vec<crate::api::backend::InferenceBackend>, Error> {
    use crate::api::backend::InferenceBackend;
    let namespace = region.stack_namespace();
    let name = region.name_any();
    Ok(
        Api::<InferenceBackend>::namespaced(ctx.client.clone(), &namespace)
            .list(&kube::api::ListParams::default())
            .await
            .map_err(|e| Read::list::<InferenceBackend>(Some(&namespace)).failed(e))?
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

/// Runs the region, backend, policy and budget controllers and the usage collector until
/// `shutdown` resolves, then returns once all have finished their in-flight reconciles.
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
        usage::run(ctx.clone(), interval, shutdown.clone()),
        budget::run(ctx, interval, shutdown),
    );
}

/// Parses a YAML fixture of a test (panics: a broken fixture is a broken test).
#[cfg(test)]
pub(crate) fn fixture<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml_ng::from_str(yaml).expect("the fixture parses")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ResidencyPolicy, SovereignRegion};

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

    fn region_and_policy() -> (SovereignRegion, ResidencyPolicy) {
        (
            fixture(
                "
metadata: {name: eu}
spec: {jurisdiction: EU, locations: [eu-central-1]}",
            ),
            fixture(
                "
metadata: {name: eu}
spec: {dataClasses: [pii]}",
            ),
        )
    }

    /// A context with a client that never reaches a server: the back-off is process memory.
    fn offline_context() -> Arc<Context> {
        let url = "http://127.0.0.1:9".parse().expect("a URL");
        let client = Client::try_from(kube::Config::new(url)).expect("a client");
        Arc::new(Context::new(
            client,
            RegionScope::default(),
            Arc::new(crate::metrics::Metrics::default()),
        ))
    }

    fn transient() -> Error {
        Read::get::<SovereignRegion>(None, "eu")
            .failed(kube::Error::LinesCodecMaxLineLengthExceeded)
    }

    #[tokio::test]
    async fn a_success_of_another_kind_with_the_same_name_keeps_the_back_off() {
        // Keyed by namespace/name alone (before issue 16), the policy's success reset the
        // region's counter and its third failure waited 5 s again.
        let ctx = offline_context();
        let (region, policy) = region_and_policy();
        let (region, policy) = (Arc::new(region), Arc::new(policy));
        let wait = |ctx: &Arc<Context>| error_policy(region.clone(), &transient(), ctx.clone());
        assert_eq!(wait(&ctx), Action::requeue(Duration::from_secs(5)));
        assert_eq!(wait(&ctx), Action::requeue(Duration::from_secs(10)));
        measured("policy", &*policy, &ctx, async {
            Ok(Action::await_change())
        })
        .await
        .expect("the policy reconciled");
        assert_eq!(wait(&ctx), Action::requeue(Duration::from_secs(20)));
        // Its own success clears it.
        measured("region", &*region, &ctx, async {
            Ok(Action::await_change())
        })
        .await
        .expect("the region reconciled");
        assert_eq!(wait(&ctx), Action::requeue(Duration::from_secs(5)));
    }

    #[tokio::test]
    async fn invalid_input_waits_for_a_change_and_records_no_failure() {
        let ctx = offline_context();
        let (region, _) = region_and_policy();
        let invalid = Error::Decide(RenderError::MissingName { kind: "Deployment" });
        assert_eq!(
            error_policy(Arc::new(region), &invalid, ctx.clone()),
            Action::await_change()
        );
        assert!(ctx.backoff().is_empty());
    }

    #[test]
    fn the_back_off_of_a_deleted_object_is_forgotten() {
        let (region, policy) = region_and_policy();
        let start = std::time::Instant::now();
        let mut backoff = Backoff::default();
        backoff.failed(BackoffKey::of(&region), start);
        backoff.failed(BackoffKey::of(&policy), start);
        // The retry of the deleted region: the controller finds it gone from its store.
        let gone: Outcome<SovereignRegion> = Err(controller::Error::ObjectNotFound(Box::new(
            ObjectRef::from_obj(&region).erase(),
        )));
        forget_deleted(&mut backoff, &gone);
        assert_eq!(backoff.len(), 1, "only the region's entry goes");
        assert_eq!(
            backoff.failed(BackoffKey::of(&policy), start),
            Duration::from_secs(10),
            "the policy of the same name keeps its count"
        );
        // Other outcomes leave the map alone.
        let ok: Outcome<SovereignRegion> =
            Ok((ObjectRef::from_obj(&region), Action::await_change()));
        forget_deleted(&mut backoff, &ok);
        assert_eq!(backoff.len(), 1);
    }

    #[test]
    fn backoff_is_per_kind_and_forgets_objects_that_stopped_failing() {
        let (region, policy) = region_and_policy();
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
        backoff.forget(&policy_key);
        assert_eq!(
            backoff.failed(region_key.clone(), start),
            Duration::from_secs(20)
        );
        for _ in 0..10 {
            backoff.failed(region_key.clone(), start);
        }
        assert_eq!(backoff.failed(region_key.clone(), start), Backoff::MAX);
        backoff.forget(&region_key);
        assert!(backoff.is_empty());

        // An entry nothing cleared is dropped once it is old.
        backoff.failed(region_key, start);
        let later = start + 2 * Backoff::MAX + Duration::from_secs(1);
        backoff.failed(policy_key, later);
        assert_eq!(backoff.len(), 1, "only the recent failure is kept");
    }

    #[test]
    fn errors_name_their_step_and_object() {
        let error = Read::get::<k8s_openapi::api::apps::v1::Deployment>(Some("ns"), "gateway")
            .failed(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert!(
            error
                .to_string()
                .starts_with("observe: get Deployment ns/gateway: "),
            "{error}"
        );
        assert_eq!(error.metric_label(), "observe_error");
        let list = Read::list::<SovereignRegion>(None);
        assert_eq!(list.to_string(), "list SovereignRegion");
        let invalid = Error::Decide(RenderError::MissingName { kind: "Deployment" });
        assert_eq!(invalid.metric_label(), "invalid");
        assert!(invalid.to_string().starts_with("decide: "));
    }

    #[test]
    fn scope_of_no_region_is_every_region() {
        assert!(RegionScope::default().manages("eu"));
        let scope = RegionScope::new(["eu".to_owned()]);
        assert!(scope.manages("eu") && !scope.manages("in"));
    }
}
