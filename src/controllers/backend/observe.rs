//! What the backend controller reads: its region, the residency policies, which of the
//! Secrets it names exist, and for a vLLM backend its Deployment (and pods when none is
//! ready, to say why).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::ListParams;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::super::{Context, Error, Read, all_policies, get_cached, ready};
use super::decide::needs_pods;
use crate::api::backend::InferenceBackend;
use crate::api::labels;
use crate::api::policy::ResidencyPolicy;
use crate::api::region::SovereignRegion;
use crate::render::vllm;

/// The state of the cluster a backend's decision depends on. Past the region, nothing is
/// read for a backend that cannot be provisioned (no region, another instance's region,
/// the wrong namespace).
#[derive(Clone, Debug, Default)]
pub struct Observed {
    /// The backend's SovereignRegion, if it exists.
    pub region: Option<SovereignRegion>,
    /// Every ResidencyPolicy.
    pub policies: Vec<ResidencyPolicy>,
    /// Names of referenced Secrets that do not exist in the backend's namespace.
    pub missing_secrets: Vec<String>,
    /// The vLLM Deployment (vLLM backends whose Secrets all exist).
    pub deployment: Option<Deployment>,
    /// The vLLM pods, listed only when no replica is ready (see [`needs_pods`]).
    pub pods: Vec<Pod>,
}

/// Reads what [`super::decide`] needs.
pub async fn observe(ctx: &Context, backend: &InferenceBackend) -> Result<Observed, Error> {
    let region_name = &backend.spec.region;
    // From the shared store the controller's region trigger fills before it fires.
    let region = ready(&ctx.stores.regions)
        .await?
        .get(&ObjectRef::new(region_name))
        .map(|r| (*r).clone());
    let namespace = backend.namespace().unwrap_or_default();
    let provisionable = region
        .as_ref()
        .is_some_and(|r| ctx.scope.manages(region_name) && r.stack_namespace() == namespace);
    if !provisionable {
        return Ok(Observed {
            region,
            ..Observed::default()
        });
    }
    // From the shared store: a policy change re-triggers every backend through the policy
    // watch, once the store has it.
    let policies = all_policies(ctx).await?;
    let missing_secrets = missing_secrets(ctx, backend, &namespace).await?;
    let mut observed = Observed {
        region,
        policies,
        missing_secrets,
        ..Observed::default()
    };
    if backend.spec.vllm.is_none() || !observed.missing_secrets.is_empty() {
        return Ok(observed);
    }
    let name = vllm::workload_name(&backend.name_any());
    observed.deployment = get_cached(
        &Api::<Deployment>::namespaced(ctx.client.clone(), &namespace),
        &name,
    )
    .await?;
    if needs_pods(backend, observed.deployment.as_ref()) {
        let selector = format!(
            "{}={},{}={}",
            labels::COMPONENT,
            vllm::COMPONENT,
            labels::INSTANCE,
            backend.name_any()
        );
        observed.pods = Api::<Pod>::namespaced(ctx.client.clone(), &namespace)
            .list(&ListParams::default().labels(&selector).match_any())
            .await
            .map_err(|e| Read::list::<Pod>(Some(&namespace)).failed(e))?
            .items;
    }
    Ok(observed)
}

/// Names of referenced Secrets that do not exist in the backend's namespace.
async fn missing_secrets(
    ctx: &Context,
    backend: &InferenceBackend,
    namespace: &str,
) -> Result<Vec<String>, Error> {
    let mut names = Vec::new();
    if let Some(external) = &backend.spec.external
        && let Some(secret) = &external.api_key_secret
    {
        names.push(secret.name.clone());
    }
    if let Some(source) = backend
        .spec
        .vllm
        .as_ref()
        .and_then(|v| v.model_source.as_ref())
    {
        if let Some(token) = source
            .hugging_face
            .as_ref()
            .and_then(|h| h.token_secret.as_ref())
        {
            names.push(token.name.clone());
        }
        if let Some(secret) = source
            .object_store
            .as_ref()
            .and_then(|o| o.credentials_secret.clone())
        {
            names.push(secret);
        }
    }
    let secrets = Api::<Secret>::namespaced(ctx.client.clone(), namespace);
    let mut missing = Vec::new();
    for name in names {
        // Metadata only: the operator never needs to read secret values.
        let found = secrets
            .get_metadata_opt(&name)
            .await
            .map_err(|e| Read::get::<Secret>(Some(namespace), &name).failed(e))?;
        if found.is_none() {
            missing.push(name);
        }
    }
    Ok(missing)
}
