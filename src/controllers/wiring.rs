//! The wiring every controller shares: the controller of a kind with the common settings
//! ([`controller`]), its run loop ([`drive`]: counted reconciles, the retry policy, the
//! back-off of deleted objects forgotten) and the back-off itself.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::{self, Action};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource};

use super::{BackoffKey, Context, Error, ObjectKey};

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

/// The controller of `K` on a shared watch (`controllers::feeds`): `objects` are the objects
/// its watch saw applied, `store` the store that watch fills; reconciles bounded to
/// `concurrency` at once. It waits for the store's first list before it reconciles.
pub fn controller_for<K>(
    objects: impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static,
    store: kube::runtime::reflector::Store<K>,
    concurrency: u16,
) -> Controller<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    Controller::for_stream(objects, store)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ResidencyPolicy, SovereignRegion};
    use crate::controllers::{Read, RegionScope, fixture};
    use crate::render::RenderError;

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
}
