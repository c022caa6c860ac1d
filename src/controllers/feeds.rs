//! The shared watches of the process: one reflector per custom resource kind, whose stores
//! every observe step reads instead of listing ([`super::Stores`]), and one metadata watch per
//! child kind, which keeps the resourceVersions the applier compares with what it last
//! verified ([`super::apply::Versions`]). Each passes what it saw on to the controllers that
//! trigger on it only after its store or map has taken it in: a reconcile started by an event
//! never reads a state older than that event.

use std::collections::HashMap;

use futures::channel::mpsc;
use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use kube::api::{DynamicObject, PartialObjectMeta};
use kube::runtime::reflector::store::Writer;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};

use super::apply::{ChildKey, Versions, api_resource};
use crate::api::labels;

/// What a subscriber of a fan-out wants.
enum Wants {
    /// Objects applied (the main stream of a controller, whose store tells it about
    /// deletions).
    Applied,
    /// Objects applied or deleted.
    Touched,
    /// Objects whose spec changed (a new generation), new objects and deletions: the
    /// generation passed on last, by UID. A region's status changes on
    /// nearly every reconcile while it converges, and the backends read nothing of it.
    SpecChanges(HashMap<String, i64>),
}

impl Wants {
    /// Whether to pass `object` on (and remember that it was).
    fn pass<T: Resource>(&mut self, object: &T, deleted: bool) -> bool {
        match self {
            Wants::Applied => !deleted,
            Wants::Touched => true,
            Wants::SpecChanges(passed) => {
                let meta = object.meta();
                let (Some(uid), Some(generation)) = (&meta.uid, meta.generation) else {
                    return true;
                };
                if deleted {
                    passed.remove(uid);
                    true
                } else {
                    passed.insert(uid.clone(), generation) != Some(generation)
                }
            }
        }
    }
}

/// The subscribers of one watch. Unbounded: a controller at its concurrency limit stops
/// polling its triggers for a while, and the watch (hence every store a reconcile waits
/// for) must not wait for it.
pub struct Fanout<T> {
    subscribers: Vec<(mpsc::UnboundedSender<T>, Wants)>,
}

impl<T> Default for Fanout<T> {
    fn default() -> Self {
        Self {
            subscribers: Vec::new(),
        }
    }
}

/// A trigger stream of a controller.
pub type Triggers<T> = BoxStream<'static, Result<T, watcher::Error>>;

impl<T: Resource + Clone + Send + 'static> Fanout<T> {
    /// Every object the watch saw applied or deleted (the triggers of an owner or a related
    /// object: a deletion matters to them).
    pub fn touched(&mut self) -> Triggers<T> {
        self.subscribe(Wants::Touched)
    }

    /// New objects, spec changes and deletions: not status or metadata changes.
    pub fn spec_changes(&mut self) -> Triggers<T> {
        self.subscribe(Wants::SpecChanges(HashMap::new()))
    }

    /// Every object the watch saw applied (the main stream of a controller). Its own status
    /// writes retrigger it, on purpose: the reconcile after a status write reads the
    /// children's status again, from the watch cache, which may have been a moment behind
    /// the event that triggered the first (a restarted instance found such regions stale).
    pub fn applied(&mut self) -> Triggers<T> {
        self.subscribe(Wants::Applied)
    }

    fn subscribe(&mut self, wants: Wants) -> Triggers<T> {
        let (sender, receiver) = mpsc::unbounded();
        self.subscribers.push((sender, wants));
        receiver.map(Ok).boxed()
    }

    fn send(&mut self, object: &T, deleted: bool) {
        // A subscriber that ended (its controller stopped) is dropped.
        self.subscribers.retain_mut(|(sender, wants)| {
            !wants.pass(object, deleted) || sender.unbounded_send(object.clone()).is_ok()
        });
    }
}

/// Runs the watch of `api` into `writer` (the store the controllers and observe steps
/// read), passing each object on to `out`, until the stream ends.
pub async fn reflect<K>(api: Api<K>, writer: Writer<K>, mut out: Fanout<K>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let kind = K::kind(&()).into_owned();
    let events = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .modify(drop_managed_fields)
        .reflect(writer);
    forward(events, &mut out, |error| {
        tracing::warn!(%kind, %error, "watch failed; retrying");
    })
    .await;
}

/// Drops an object's managedFields as its watch yields it: nothing here reads them, and they
/// are most of an object's metadata (a server-side-applied Deployment's are several KB). A
/// heap profile of a restart at 100 × 50 found 300 MiB of children's metadata, copies on their
/// way to the controllers, most of it these fields.
fn drop_managed_fields<K: Resource>(object: &mut K) {
    object.meta_mut().managed_fields = None;
}

/// Passes the objects of watcher `events` on to `out`.
async fn forward<K: Resource + Clone + Send + 'static>(
    events: impl Stream<Item = Result<watcher::Event<K>, watcher::Error>>,
    out: &mut Fanout<K>,
    mut failed: impl FnMut(&watcher::Error),
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Apply(object) | watcher::Event::InitApply(object)) => {
                out.send(&object, false);
            }
            Ok(watcher::Event::Delete(object)) => out.send(&object, true),
            Ok(watcher::Event::Init | watcher::Event::InitDone) => {}
            Err(error) => failed(&error),
        }
    }
}

/// The metadata of a child as its watch yields it.
pub type ChildMeta = PartialObjectMeta<DynamicObject>;

/// The key of a child in [`Versions`].
fn child_key(kind: &str, meta: &ChildMeta) -> ChildKey {
    (
        kind.to_owned(),
        meta.namespace().unwrap_or_default(),
        meta.name_any(),
    )
}

/// Whether a watch error says the kind cannot be watched at all here: not served (a CRD that
/// is not installed, e.g. PodMonitor without the Prometheus Operator) or not allowed (RBAC of
/// an older chart). Its children are then read before each apply, as without the watch.
fn unwatchable(error: &watcher::Error) -> bool {
    let status = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => status.code,
        watcher::Error::WatchError(status) => status.code,
        _ => return false,
    };
    matches!(status, 403 | 404)
}

/// Watches the metadata of the operator's children of `kind` (by the managed-by label) into
/// `versions`, passing each on to `out`, until the stream ends or the kind turns out not to
/// be watchable.
pub async fn watch_versions(
    client: Client,
    kind: &'static str,
    versions: std::sync::Arc<Versions>,
    mut out: Fanout<ChildMeta>,
) {
    let Some(resource) = api_resource(kind) else {
        return;
    };
    // Metadata only: the applier needs the resourceVersion, nothing of the spec.
    let api = Api::<ChildMeta>::all_with(client, &resource);
    let config = watcher::Config::default()
        .labels(&labels::managed_selector())
        .any_semantic();
    let mut events = std::pin::pin!(
        watcher(api, config)
            .default_backoff()
            .modify(drop_managed_fields)
    );
    while let Some(event) = events.next().await {
        match event {
            Ok(watcher::Event::Init) => versions.relisting(kind),
            Ok(watcher::Event::InitDone) => {}
            Ok(watcher::Event::Apply(meta) | watcher::Event::InitApply(meta)) => {
                if let Some(version) = meta.metadata.resource_version.clone() {
                    versions.seen(child_key(kind, &meta), version);
                }
                out.send(&meta, false);
            }
            Ok(watcher::Event::Delete(meta)) => {
                versions.gone(&child_key(kind, &meta));
                out.send(&meta, true);
            }
            Err(error) if unwatchable(&error) => {
                tracing::info!(kind, %error, "children of this kind are not watched; they are read before each apply");
                versions.relisting(kind);
                return;
            }
            Err(error) => tracing::warn!(kind, %error, "watch of children failed; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn object(uid: &str, generation: i64, version: &str) -> ConfigMap {
        let mut object = ConfigMap::default();
        object.metadata.uid = Some(uid.to_owned());
        object.metadata.generation = Some(generation);
        object.metadata.resource_version = Some(version.to_owned());
        object
    }

    #[test]
    fn watched_objects_keep_no_managed_fields() {
        let mut with = object("a", 1, "1");
        with.metadata.managed_fields = Some(vec![Default::default()]);
        let events = futures::stream::iter([Ok::<_, watcher::Error>(watcher::Event::Apply(with))])
            .modify(drop_managed_fields)
            .collect::<Vec<_>>()
            .now_or_never()
            .expect("a ready stream");
        match events.as_slice() {
            [Ok(watcher::Event::Apply(kept))] => {
                assert_eq!(kept.metadata.managed_fields, None);
                assert_eq!(kept.metadata.resource_version.as_deref(), Some("1"));
            }
            other => panic!("unexpected events: {other:?}"),
        }
    }

    #[test]
    fn each_subscriber_gets_what_it_asked_for() {
        let mut out = Fanout::<ConfigMap>::default();
        let mut touched = out.touched();
        let mut specs = out.spec_changes();
        let mut applied = out.applied();
        let events = futures::stream::iter([
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(object("a", 1, "1"))),
            Ok(watcher::Event::InitDone),
            // A status change of a: same generation.
            Ok(watcher::Event::Apply(object("a", 1, "2"))),
            Ok(watcher::Event::Apply(object("b", 1, "3"))),
            // A spec change of a.
            Ok(watcher::Event::Apply(object("a", 2, "4"))),
            Ok(watcher::Event::Delete(object("b", 1, "5"))),
            // b recreated under the same name: a new UID.
            Ok(watcher::Event::Apply(object("c", 1, "6"))),
        ]);
        forward(events, &mut out, |_| {})
            .now_or_never()
            .expect("a finite stream");
        drop(out);
        let versions = |s: &mut Triggers<ConfigMap>| {
            s.by_ref()
                .map(|r| {
                    r.expect("no error")
                        .metadata
                        .resource_version
                        .unwrap_or_default()
                })
                .collect::<Vec<_>>()
                .now_or_never()
                .expect("the senders are gone")
        };
        assert_eq!(versions(&mut touched), ["1", "2", "3", "4", "5", "6"]);
        assert_eq!(versions(&mut specs), ["1", "3", "4", "5", "6"]);
        assert_eq!(versions(&mut applied), ["1", "2", "3", "4", "6"]);
    }

    #[test]
    fn a_kind_not_served_or_not_allowed_is_not_watched() {
        let status = |code| {
            kube::Error::Api(
                kube::core::Status::failure("no", "NotFound")
                    .with_code(code)
                    .boxed(),
            )
        };
        assert!(unwatchable(&watcher::Error::InitialListFailed(status(404))));
        assert!(unwatchable(&watcher::Error::WatchStartFailed(status(403))));
        assert!(!unwatchable(&watcher::Error::InitialListFailed(status(
            500
        ))));
    }
}
