//! What the region controller reads: the region's backends and the status of the children
//! whose readiness its conditions report.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;

use super::super::{Context, Error, all_policies, get_cached, region_backends};
use crate::api::backend::InferenceBackend;
use crate::api::policy::ResidencyPolicy;
use crate::api::region::{SovereignRegion, VectorStoreEngine};
use crate::render::{gateway, observability, vectorstore};

/// The state of the cluster a region's decision depends on.
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The region's InferenceBackends.
    pub backends: Vec<InferenceBackend>,
    /// The gateway Deployment; read only when a backend may serve (else there is no model
    /// to report on).
    pub gateway: Option<Deployment>,
    /// The OpenTelemetry collector Deployment; read only when an OTLP endpoint is declared.
    pub collector: Option<Deployment>,
    /// The vector store StatefulSet; read only when an engine is requested.
    pub vector_store: Option<StatefulSet>,
    /// Every ResidencyPolicy: the evidence summary names the guards and rules that hold the
    /// region's paths.
    pub policies: Vec<ResidencyPolicy>,
    /// Whether `spec.observability.caBundle` can be mounted; None when none is declared (or
    /// no OTLP endpoint uses it).
    pub ca_bundle: Option<CaBundle>,
}

/// What the cluster holds of a declared CA bundle. The collector mounts the ConfigMap key
/// (not optional): without it its pod never starts, and the region must say why.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaBundle {
    /// The ConfigMap exists and has the key.
    Present,
    /// No such ConfigMap in the region namespace.
    NoConfigMap,
    /// The ConfigMap lacks the key.
    NoKey,
}

/// Reads what [`super::decide`] needs. The backends and policies come from the process's
/// shared stores, children's status from the watch cache: a change there triggers another
/// reconcile anyway.
pub async fn observe(ctx: &Context, region: &SovereignRegion) -> Result<Observed, Error> {
    let namespace = region.stack_namespace();
    let backends = region_backends(ctx, region).await?;
    let deployments = Api::<Deployment>::namespaced(ctx.client.clone(), &namespace);
    let gateway = if backends.iter().any(InferenceBackend::may_serve) {
        get_cached(&deployments, gateway::NAME).await?
    } else {
        None
    };
    let collector = if region
        .spec
        .observability
        .as_ref()
        .is_some_and(|o| o.otlp_endpoint.is_some())
    {
        get_cached(&deployments, observability::COLLECTOR).await?
    } else {
        None
    };
    let vector_store = match region.spec.vector_store.engine {
        VectorStoreEngine::None => None,
        VectorStoreEngine::Qdrant => {
            get_cached(
                &Api::<StatefulSet>::namespaced(ctx.client.clone(), &namespace),
                vectorstore::QDRANT,
            )
            .await?
        }
        VectorStoreEngine::PgVector => {
            get_cached(
                &Api::<StatefulSet>::namespaced(ctx.client.clone(), &namespace),
                vectorstore::PGVECTOR,
            )
            .await?
        }
    };
    let ca_bundle = match region
        .spec
        .observability
        .as_ref()
        .filter(|o| o.otlp_endpoint.is_some())
        .and_then(|o| o.ca_bundle.as_ref())
    {
        None => None,
        Some(reference) => {
            let config_maps = Api::<ConfigMap>::namespaced(ctx.client.clone(), &namespace);
            Some(match get_cached(&config_maps, &reference.name).await? {
                None => CaBundle::NoConfigMap,
                Some(found) => {
                    let has = |keys: Option<Vec<&String>>| {
                        keys.is_some_and(|k| k.iter().any(|k| **k == reference.key))
                    };
                    if has(found.data.as_ref().map(|d| d.keys().collect()))
                        || has(found.binary_data.as_ref().map(|d| d.keys().collect()))
                    {
                        CaBundle::Present
                    } else {
                        CaBundle::NoKey
                    }
                }
            })
        }
    };
    let policies = all_policies(ctx).await?;
    Ok(Observed {
        backends,
        gateway,
        collector,
        vector_store,
        policies,
        ca_bundle,
    })
}
