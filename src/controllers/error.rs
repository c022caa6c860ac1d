//! The error of a reconcile, by the step that failed, and how errors and the back-off name
//! objects and reads.

use std::borrow::Cow;

use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::apply::ApplyError;
use crate::finops::ledger::LedgerError;
use crate::render::RenderError;

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
    pub(super) fn of_ref(object: &ObjectRef<kube::api::DynamicObject>) -> Self {
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
    /// Observe: a shared store has not finished its first list in time, or its watch stopped
    /// (transient, retried with back-off).
    #[error("observe: the watch of {kind} has not listed them yet")]
    Store {
        /// The kind of the store.
        kind: String,
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
    /// Short label for metrics (`sovereign_reconciliations_total{result}`), one per step.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Observe { .. } | Error::Store { .. } => "observe_error",
            Error::Ledger { .. } => "ledger_error",
            Error::Decide(_) => "invalid",
            Error::Apply(_) => "apply_error",
            Error::WriteStatus { .. } => "status_error",
        }
    }

    /// Whether retrying can help. Invalid input cannot: the object must change first (and
    /// an object that cannot be serialised is a bug a retry does not fix).
    pub(super) fn is_transient(&self) -> bool {
        !matches!(self, Error::Decide(_) | Error::Apply(ApplyError::Encode(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::SovereignRegion;

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
}
