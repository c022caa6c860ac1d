//! The controllers: one module per custom resource, each a pipeline observe (GETs and LISTs
//! into a plain struct) → decide (pure, unit-tested: the desired children, the status, the
//! Events) → apply → write status. They share what is defined here: the context, the error
//! type (a variant per step, in `error.rs`), the wiring and the retry policy ([`drive`], in
//! `wiring.rs`), the status writer ([`status`]) and the applier ([`apply`]).

pub mod admission;
pub mod apply;
pub mod audit;
pub mod backend;
pub mod budget;
mod error;
mod feeds;
pub mod peer;
pub mod policy;
pub mod region;
pub mod status;
pub mod usage;
mod wiring;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::{Api, Client, Resource, ResourceExt};

use crate::api::backend::InferenceBackend;
use crate::api::conditions::{self, DesiredCondition};
use crate::api::policy::ResidencyPolicy;
use crate::api::region::SovereignRegion;
use crate::metrics::SharedMetrics;
use apply::{Applier, Versions};
pub use error::{BackoffKey, Error, ObjectKey, Read};
pub use wiring::{Backoff, controller, controller_for, drive, error_policy, measured};

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

/// The custom resources of the cluster as the process's one watch of each kind sees them: the
/// observe steps read these instead of listing (a region reconcile listed its backends and
/// every policy, a backend reconcile got its region and listed every policy). The region,
/// and backend controllers run on the same watches ([`feeds`]).
pub struct Stores {
    /// Every InferenceBackend.
    pub backends: Store<InferenceBackend>,
    /// Every SovereignRegion.
    pub regions: Store<SovereignRegion>,
    /// Every ResidencyPolicy.
    pub policies: Store<ResidencyPolicy>,
}

/// The writing halves of [`Stores`], taken once by [`run_all`].
struct Writers {
    backends: Writer<InferenceBackend>,
    regions: Writer<SovereignRegion>,
    policies: Writer<ResidencyPolicy>,
}

/// How long an observe step waits for a store's first list before it fails (and retries).
const STORE_WAIT: Duration = Duration::from_secs(30);

/// `store` once its watch has listed everything; an error (retried) when that takes longer
/// than [`STORE_WAIT`] or the watch has stopped.
pub async fn ready<K>(store: &Store<K>) -> Result<&Store<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    match tokio::time::timeout(STORE_WAIT, store.wait_until_ready()).await {
        Ok(Ok(())) => Ok(store),
        _ => Err(Error::Store {
            kind: K::kind(&()).into_owned(),
        }),
    }
}

impl Stores {
    /// Waits, in this one task, until every store has listed its kind, or `shutdown` resolves
    /// (then false). Why a single waiter: a store's readiness (kube's `DelayedInit`, a oneshot
    /// channel underneath) keeps only the last waker of several concurrent waiters, so when
    /// the 32 first reconciles of the backend controller all waited for the regions store, 31
    /// of them slept until their 30 s timeout (every start of the operator, measured at 20 ×
    /// 10). Once one waiter has seen a store ready, every later wait returns at once.
    pub async fn listed(&self, shutdown: impl std::future::Future<Output = ()>) -> bool {
        use futures::FutureExt as _;
        let all = async {
            let mut waiting = 0u32;
            for (kind, ready) in [
                ("InferenceBackend", self.backends.wait_until_ready().boxed()),
                ("SovereignRegion", self.regions.wait_until_ready().boxed()),
                ("ResidencyPolicy", self.policies.wait_until_ready().boxed()),
            ] {
                let mut ready = ready;
                loop {
                    match tokio::time::timeout(STORE_WAIT, &mut ready).await {
                        Ok(Ok(())) => break,
                        // The watch stopped for good: the controllers would wait forever.
                        Ok(Err(_)) => return false,
                        Err(_) => {
                            waiting += 1;
                            tracing::warn!(
                                kind,
                                seconds = u64::from(waiting) * STORE_WAIT.as_secs(),
                                "the controllers wait for the first list of this kind"
                            );
                        }
                    }
                }
            }
            true
        };
        match futures::future::select(std::pin::pin!(all), std::pin::pin!(shutdown)).await {
            futures::future::Either::Left((listed, _)) => listed,
            futures::future::Either::Right(_) => false,
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
    /// Wakes the budget controller to evaluate every budget (the collector committed usage).
    pub budget_wakeup: tokio::sync::Notify,
    /// Wakes the usage collector to write the budget actions at once, without a collection
    /// (a threshold that acts at the gateway fired, or a period closed).
    pub actions_wakeup: tokio::sync::Notify,
    /// Budget thresholds announced by this process (budget UID, period, percent): a reconcile
    /// that ran on a status older than its own last write must not announce twice.
    announced: Mutex<std::collections::HashSet<String>>,
    /// The operator's own namespace: the peer credential Secrets and the published totals of
    /// global budgets live there.
    pub operator_namespace: String,
    /// The last reads of the peer clusters (`peer`), judged by the budget controller.
    peers: Mutex<Vec<crate::finops::global::PeerRead>>,
    /// The custom resources, watched once for the whole process.
    pub stores: Stores,
    /// Until [`run_all`] starts the watches.
    writers: Mutex<Option<Writers>>,
    /// The children's resourceVersions and what the applier last verified of them.
    versions: Arc<Versions>,
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
        let (backends, backends_writer) = reflector::store();
        let (regions, regions_writer) = reflector::store();
        let (policies, policies_writer) = reflector::store();
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            scope,
            metrics,
            failures: Mutex::new(Backoff::default()),
            pruned: Mutex::new(std::collections::HashSet::new()),
            usage_interval: DEFAULT_USAGE_INTERVAL,
            usage_wakeup: tokio::sync::Notify::new(),
            budget_wakeup: tokio::sync::Notify::new(),
            actions_wakeup: tokio::sync::Notify::new(),
            announced: Mutex::new(std::collections::HashSet::new()),
            operator_namespace: "sovereign-system".to_owned(),
            peers: Mutex::new(Vec::new()),
            stores: Stores {
                backends,
                regions,
                policies,
            },
            writers: Mutex::new(Some(Writers {
                backends: backends_writer,
                regions: regions_writer,
                policies: policies_writer,
            })),
            versions: Arc::new(Versions::default()),
        }
    }

    /// The context with another operator namespace.
    pub fn with_operator_namespace(mut self, namespace: String) -> Self {
        self.operator_namespace = namespace;
        self
    }

    /// The last reads of the peer clusters.
    pub fn peer_reads(&self) -> Vec<crate::finops::global::PeerRead> {
        self.peers.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Records the reads of the peer clusters.
    pub fn set_peer_reads(&self, reads: Vec<crate::finops::global::PeerRead>) {
        *self.peers.lock().unwrap_or_else(|e| e.into_inner()) = reads;
    }

    /// Whether to list and delete unwanted children of `uid` now ([`prune_now`]).
    pub fn should_prune(&self, uid: &str, observed: Option<i64>, generation: Option<i64>) -> bool {
        let pruned = self.pruned.lock().unwrap_or_else(|e| e.into_inner());
        prune_now(observed, generation, pruned.contains(uid))
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
        Applier::new(
            self.client.clone(),
            manager,
            self.metrics.clone(),
            self.versions.clone(),
        )
    }

    pub(crate) fn backoff(&self) -> std::sync::MutexGuard<'_, Backoff> {
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

/// Whether to list and delete unwanted children now: after a spec change ([`needs_prune`]),
/// and once per process for an object some process reconciled to the end (it has an observed
/// generation), so children an older operator version made are cleaned up. An object never
/// reconciled to the end has only children of its first generation, all still wanted: pruning
/// it on its first reconcile cost one LIST per owned kind for every new object (5,000 LISTs
/// for 1,000 new backends, half the LISTs of a converge at 50 x 20).
pub fn prune_now(observed_generation: Option<i64>, generation: Option<i64>, pruned: bool) -> bool {
    needs_prune(observed_generation, generation) || (observed_generation.is_some() && !pruned)
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
    if let Some(uid) = owner.uid() {
        if ctx.should_prune(&uid, observed_generation, owner.meta().generation) {
            applier
                .prune(kinds, namespace, &owner.name_any(), &uid, children)
                .await?;
        }
        // Pruned, or nothing to prune (a new object's children are all its own): either way
        // this process need not look again until the spec changes.
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

/// The InferenceBackends of `region`: those in its stack namespace that name it (from the
/// shared store).
pub async fn region_backends(
    ctx: &Context,
    region: &SovereignRegion,
) -> Result<Vec<InferenceBackend>, Error> {
    let namespace = region.stack_namespace();
    let name = region.name_any();
    let mut backends: Vec<InferenceBackend> = ready(&ctx.stores.backends)
        .await?
        .state_filter(|b| b.spec.region == name && b.namespace().as_deref() == Some(&namespace))
        .iter()
        .map(|b| (**b).clone())
        .collect();
    // A store has no order; a LIST had one (by name), and the rendered gateway config must
    // not change with the order of a hash map.
    backends.sort_by_key(|b| b.name_any());
    Ok(backends)
}

/// Every ResidencyPolicy (from the shared store), by name.
pub async fn all_policies(ctx: &Context) -> Result<Vec<ResidencyPolicy>, Error> {
    let mut policies: Vec<ResidencyPolicy> = ready(&ctx.stores.policies)
        .await?
        .state()
        .iter()
        .map(|p| (**p).clone())
        .collect();
    policies.sort_by_key(|p| p.name_any());
    Ok(policies)
}

/// Every SovereignRegion (from the shared store), by name.
pub async fn all_regions(ctx: &Context) -> Result<Vec<SovereignRegion>, Error> {
    let mut regions: Vec<SovereignRegion> = ready(&ctx.stores.regions)
        .await?
        .state()
        .iter()
        .map(|r| (**r).clone())
        .collect();
    regions.sort_by_key(|r| r.name_any());
    Ok(regions)
}

/// Resync period of healthy objects.
pub const RESYNC: Duration = Duration::from_secs(300);
/// Re-check period while something is still converging (pods starting, rollouts).
pub const PROGRESS_CHECK: Duration = Duration::from_secs(10);

/// Runs the region, backend, policy and budget controllers, the usage collector and the peer
/// reads until
/// `shutdown` resolves, then returns once all have finished their in-flight reconciles.
pub async fn run_all(
    ctx: Arc<Context>,
    shutdown: futures::future::Shared<
        std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + Sync>>,
    >,
) {
    tracing::info!(regions = %ctx.scope.describe(), "starting controllers");
    let interval = ctx.usage_interval;
    let Some(writers) = ctx.writers.lock().unwrap_or_else(|e| e.into_inner()).take() else {
        tracing::error!("the controllers run once per process");
        return;
    };
    // Every subscription is made before any watch starts, so none misses an event.
    let mut backends = feeds::Fanout::default();
    let mut regions = feeds::Fanout::default();
    let mut policies = feeds::Fanout::default();
    let mut children: Vec<(&'static str, feeds::Fanout<feeds::ChildMeta>)> = apply::watched_kinds()
        .map(|kind| (kind, feeds::Fanout::default()))
        .collect();
    let mut owned = |kind: &str| {
        children
            .iter_mut()
            .find(|(k, _)| *k == kind)
            .map(|(_, out)| out.touched())
    };
    let region_feeds = region::Feeds {
        regions: regions.applied(),
        backends: backends.touched(),
        deployments: owned("Deployment"),
        stateful_sets: owned("StatefulSet"),
        config_maps: owned("ConfigMap"),
    };
    let backend_feeds = backend::Feeds {
        backends: backends.applied(),
        // Backends read the spec of regions and policies, not their status, which changes on
        // nearly every region reconcile while it converges (each re-evaluated all 20 backends
        // of a region: 9.5 backend reconciles per backend at 50 x 20).
        regions: regions.spec_changes(),
        policies: policies.spec_changes(),
        deployments: owned("Deployment"),
    };
    let client = &ctx.client;
    use futures::FutureExt;
    let watches =
        futures::future::join_all(children.into_iter().map(|(kind, out)| {
            feeds::watch_versions(client.clone(), kind, ctx.versions.clone(), out)
        }))
        .map(|_| ());
    futures::join!(
        until(
            feeds::reflect(Api::all(client.clone()), writers.backends, backends),
            shutdown.clone()
        ),
        until(
            feeds::reflect(Api::all(client.clone()), writers.regions, regions),
            shutdown.clone()
        ),
        until(
            feeds::reflect(Api::all(client.clone()), writers.policies, policies),
            shutdown.clone()
        ),
        until(watches, shutdown.clone()),
        async {
            // Nothing reads the stores before they are listed (see `Stores::listed`).
            if !ctx.stores.listed(shutdown.clone()).await {
                return;
            }
            futures::join!(
                region::run(ctx.clone(), region_feeds, shutdown.clone()),
                backend::run(ctx.clone(), backend_feeds, shutdown.clone()),
                policy::run(ctx.clone(), shutdown.clone()),
                audit::run(ctx.clone(), shutdown.clone()),
                usage::run(ctx.clone(), interval, shutdown.clone()),
                peer::run(ctx.clone(), interval, shutdown.clone()),
                budget::run(ctx.clone(), interval, shutdown.clone()),
            );
        },
    );
}

/// Runs `work` until it ends or `shutdown` resolves.
async fn until(
    work: impl std::future::Future<Output = ()>,
    shutdown: impl std::future::Future<Output = ()>,
) {
    futures::future::select(std::pin::pin!(work), std::pin::pin!(shutdown)).await;
}

/// Parses a YAML fixture of a test (panics: a broken fixture is a broken test).
#[cfg(test)]
pub(crate) fn fixture<T: serde::de::DeserializeOwned>(yaml: &str) -> T {
    serde_yaml_ng::from_str(yaml).expect("the fixture parses")
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
    fn a_new_object_is_not_pruned_but_a_known_one_once_per_process() {
        assert!(
            !prune_now(None, Some(1), false),
            "a new object: nothing to prune"
        );
        assert!(
            prune_now(None, Some(2), false),
            "edited before its first status"
        );
        assert!(
            prune_now(Some(3), Some(3), false),
            "reconciled before, maybe by an older version: once per process"
        );
        assert!(!prune_now(Some(3), Some(3), true), "already pruned here");
        assert!(prune_now(Some(2), Some(3), true), "the spec changed");
    }

    /// Stores and their writers, as `Context::new` makes them.
    fn stores() -> (Stores, Writers) {
        let (backends, backends_writer) = reflector::store();
        let (regions, regions_writer) = reflector::store();
        let (policies, policies_writer) = reflector::store();
        (
            Stores {
                backends,
                regions,
                policies,
            },
            Writers {
                backends: backends_writer,
                regions: regions_writer,
                policies: policies_writer,
            },
        )
    }

    #[tokio::test]
    async fn the_controllers_start_once_every_store_has_listed() {
        let (stores, mut writers) = stores();
        let listed = tokio::spawn(async move {
            let ok = stores.listed(futures::future::pending()).await;
            (ok, stores)
        });
        use kube::runtime::watcher::Event;
        writers.backends.apply_watcher_event(&Event::Init);
        writers.backends.apply_watcher_event(&Event::InitDone);
        writers.policies.apply_watcher_event(&Event::Init);
        writers.policies.apply_watcher_event(&Event::InitDone);
        tokio::task::yield_now().await;
        assert!(!listed.is_finished(), "the regions have not listed yet");
        writers.regions.apply_watcher_event(&Event::Init);
        writers.regions.apply_watcher_event(&Event::InitDone);
        let (ok, stores) = listed.await.expect("the wait ends");
        assert!(ok);
        // Every later wait, however many at once, returns at once.
        let waits = (0..32).map(|_| ready(&stores.regions));
        let results = futures::future::join_all(waits).await;
        assert!(results.iter().all(Result::is_ok));
    }

    #[tokio::test]
    async fn a_shutdown_ends_the_wait_for_the_stores() {
        let (stores, _writers) = stores();
        assert!(!stores.listed(futures::future::ready(())).await);
    }

    #[test]
    fn scope_of_no_region_is_every_region() {
        assert!(RegionScope::default().manages("eu"));
        let scope = RegionScope::new(["eu".to_owned()]);
        assert!(scope.manages("eu") && !scope.manages("in"));
    }
}
