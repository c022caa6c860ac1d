//! The region gateway's LiteLLM `config.yaml`, rendered from the region and the backends it may
//! route to.
//!
//! Pure: no I/O. The region controller passes the region's Ready and Compliant
//! [`InferenceBackend`]s; [`litellm_config`] turns them into a LiteLLM proxy config whose model
//! list holds *only* those backends, so that the gateway has no way to send a request anywhere
//! else ("fail closed": with no compliant backend, the model list is empty and LiteLLM refuses
//! every model).
//!
//! The config was written against — and is proven by `e2e/tests/litellm.rs` on — LiteLLM
//! `1.108.7` (`litellm[proxy]`, see `e2e/litellm/requirements.txt`). Every LiteLLM setting used
//! below says in a comment what it does and where in LiteLLM's source it was checked.
//!
//! Secrets never appear in the file: API keys, the master key, the database URL and the Langfuse
//! keys are `os.environ/NAME` references, and [`GatewayConfig::env`] holds the matching
//! `EnvVar`s with `valueFrom.secretKeyRef`, for the gateway Deployment.
//!
//! The output is deterministic (maps sorted by key, model entries sorted by model name and
//! backend), because its [`content_hash`](super::content_hash) rolls the gateway Deployment.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::EnvVar;
use serde_yaml_ng::{Mapping, Value};

use super::{RenderError, k8s, observability, python_yaml};
use crate::api::backend::{ExternalSpec, InferenceBackend, Provider, TokenPricing};
use crate::api::common::SecretKeyReference;
use crate::api::region::SovereignRegion;

/// Port of the vLLM OpenAI-compatible server behind `Service vllm-<backend>` (the contract with
/// the vLLM renderer).
pub const VLLM_PORT: u16 = 8000;
/// Environment variable holding the gateway's master key.
pub const MASTER_KEY_ENV: &str = "LITELLM_MASTER_KEY";
/// Environment variable holding the PostgreSQL URL of the gateway (LiteLLM reads it directly).
pub const DATABASE_URL_ENV: &str = "DATABASE_URL";
/// Environment variable LiteLLM's Langfuse callback reads the Langfuse base URL from.
pub const LANGFUSE_HOST_ENV: &str = "LANGFUSE_HOST";
/// Environment variable (and key in the region's Langfuse Secret) of the Langfuse public key.
pub const LANGFUSE_PUBLIC_KEY_ENV: &str = "LANGFUSE_PUBLIC_KEY";
/// Environment variable (and key in the region's Langfuse Secret) of the Langfuse secret key.
pub const LANGFUSE_SECRET_KEY_ENV: &str = "LANGFUSE_SECRET_KEY";
/// LiteLLM's OpenTelemetry callback, rendered when the region has a collector.
pub const OTEL_CALLBACK: &str = "otel";
/// The OTLP transport LiteLLM's OpenTelemetry logger uses (`http/protobuf`).
pub const OTEL_PROTOCOL_ENV: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
/// The collector URL LiteLLM's OpenTelemetry logger exports to.
pub const OTEL_ENDPOINT_ENV: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
/// The service name on the gateway's spans.
pub const OTEL_SERVICE_NAME_ENV: &str = "OTEL_SERVICE_NAME";
/// `service.name` of the gateway's spans.
pub const OTEL_SERVICE_NAME: &str = "sovereign-gateway";
/// Environment that keeps LiteLLM's Prisma toolchain offline when the gateway has a database
/// (see `litellm_config`): the CLI baked into the image is used, npm prefers its cache, and no
/// update check or post-install generate runs.
pub const PRISMA_OFFLINE_ENV: [(&str, &str); 4] = [
    ("PRISMA_OFFLINE_MODE", "true"),
    ("NPM_CONFIG_PREFER_OFFLINE", "true"),
    ("PRISMA_HIDE_UPDATE_MESSAGE", "1"),
    ("PRISMA_SKIP_POSTINSTALL_GENERATE", "1"),
];
/// File name of the budget guard module, next to `config.yaml` in the gateway ConfigMap.
pub const GUARD_FILE: &str = "sovereign_guard.py";
/// The budget guard: a LiteLLM pre-call hook that enforces the Block, Throttle and Downgrade
/// actions of crossed TokenBudget thresholds (see the module's docstring).
pub const GUARD_MODULE: &str = include_str!("sovereign_guard.py");
/// How the config names the guard: `<module>.<instance>`, which LiteLLM imports from the
/// directory of the config file (litellm/proxy/types_utils/utils.py `get_instance_fn`).
pub const GUARD_CALLBACK: &str = "sovereign_guard.guard";
/// Request metadata LiteLLM turns into `metadata_<key>` labels of its usage counters, which
/// the usage collector attributes by (team and cost centre).
pub const USAGE_METADATA_LABELS: [&str; 2] = ["metadata.cost_center", "metadata.team"];

/// The rendered gateway configuration and what the gateway Deployment needs with it.
#[derive(Clone, Debug, PartialEq)]
pub struct GatewayConfig {
    /// LiteLLM's `config.yaml`; byte-identical for the same input.
    pub config_yaml: String,
    /// Environment of the gateway container: every `os.environ/NAME` the config refers to, from
    /// Secrets (or, for `LANGFUSE_HOST`, the plain value). Sorted by name.
    pub env: Vec<EnvVar>,
    /// Model names the gateway serves (what clients may ask for), sorted, without duplicates.
    pub models: Vec<String>,
    /// `(model, fallback)` pairs dropped because no backend in this config serves the fallback:
    /// a fallback never leaves the region, so the controller reports these instead.
    pub dropped_fallbacks: Vec<(String, String)>,
    /// Backends that were passed in but left out of the config, with the reason (wrong region,
    /// wrong namespace, neither `vllm` nor `external`, a clashing env var name). The caller
    /// should only pass the region's own valid backends; this is the defensive second line.
    pub skipped_backends: Vec<SkippedBackend>,
    /// Dotted paths of `gateway.extraConfig` that were ignored because the operator owns them
    /// (see [`RESERVED_PATHS`]), sorted.
    pub ignored_extra_config: Vec<String>,
}

/// A backend [`litellm_config`] refused to put into the config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedBackend {
    /// `namespace/name` of the backend.
    pub backend: String,
    /// Why it was left out.
    pub reason: String,
}

/// Paths of the config that belong to the operator: `gateway.extraConfig` cannot set them, even
/// where the operator itself sets nothing (an absent master key stays absent). Each one either
/// decides where a request or its observations can go, or how the region pinning works:
///
/// - `model_list`, `include` (LiteLLM appends the model lists of included files),
///   `environment_variables` (LiteLLM exports them at start, e.g. a foreign `LANGFUSE_HOST`),
///   `router_settings.model_list` (passed to `Router(...)` as-is, it would replace the list);
/// - the tag pinning: `router_settings.enable_tag_filtering` / `tag_filtering_match_any` /
///   `tag_routing_prefix`, `general_settings.reject_clientside_metadata_tags`;
/// - client-side overrides: `general_settings.allow_client_side_credentials`;
/// - `general_settings.store_model_in_db` (models added through the admin API would bypass
///   this list), `general_settings.pass_through_endpoints` (forward to arbitrary URLs),
///   `general_settings.database_url` (DATABASE_URL comes from `gateway.databaseSecret`);
/// - fallbacks (both the `router_settings` and the `litellm_settings` spelling);
/// - callbacks (`callbacks`, `success_callback`, `failure_callback`): observations go to the
///   in-region Langfuse or nowhere;
/// - `general_settings.master_key`;
/// - `router_settings.router_general_settings` (`pass_through_all_models` would send unknown
///   model names straight to the public provider APIs).
pub const RESERVED_PATHS: &[&str] = &[
    "model_list",
    "include",
    "environment_variables",
    "router_settings.model_list",
    "router_settings.enable_tag_filtering",
    "router_settings.tag_filtering_match_any",
    "router_settings.tag_routing_prefix",
    "router_settings.fallbacks",
    "router_settings.default_fallbacks",
    "router_settings.context_window_fallbacks",
    "router_settings.content_policy_fallbacks",
    "router_settings.router_general_settings",
    "litellm_settings.callbacks",
    "litellm_settings.custom_prometheus_metadata_labels",
    "litellm_settings.success_callback",
    "litellm_settings.failure_callback",
    "litellm_settings.fallbacks",
    "litellm_settings.default_fallbacks",
    "litellm_settings.context_window_fallbacks",
    "litellm_settings.content_policy_fallbacks",
    "general_settings.master_key",
    "general_settings.allow_client_side_credentials",
    "general_settings.reject_clientside_metadata_tags",
    "general_settings.store_model_in_db",
    "general_settings.pass_through_endpoints",
    "general_settings.database_url",
];

/// Renders the LiteLLM config of `region`'s gateway from `backends` (the caller passes the
/// region's Ready and Compliant backends only).
///
/// Backends of another region or namespace are skipped and reported in
/// [`GatewayConfig::skipped_backends`], never routed to. Fails only when the region has no
/// name or the config cannot be serialised.
pub fn litellm_config(
    region: &SovereignRegion,
    backends: &[&InferenceBackend],
) -> Result<GatewayConfig, RenderError> {
    let region_name = region
        .metadata
        .name
        .as_deref()
        .ok_or(RenderError::MissingName {
            kind: "SovereignRegion",
        })?;
    let namespace = region.stack_namespace();

    let mut skipped = Vec::new();
    let accepted = accept_backends(region_name, &namespace, backends, &mut skipped);

    let mut env = BTreeMap::<String, EnvVar>::new();
    let mut model_list = Vec::new();
    let mut models = BTreeSet::new();
    for backend in &accepted {
        if let Some(key_ref) = backend.api_key_secret {
            env.insert(
                backend.key_env.clone(),
                secret_env(&backend.key_env, key_ref),
            );
        }
        models.insert(backend.model_name.to_owned());
        model_list.push(model_entry(backend, region_name, &namespace));
    }

    let (fallbacks, dropped_fallbacks) = fallbacks(&accepted, &models);

    let mut router_settings = Mapping::new();
    // Tag pinning. Every deployment carries the region's name in `litellm_params.tags`;
    // `enable_tag_filtering` makes the Router filter deployments by the request's tags
    // (litellm/router.py `Router.__init__(enable_tag_filtering=…)`, applied in
    // litellm/router_strategy/tag_based_routing.py `get_deployments_for_tag`), so a key or team
    // whose metadata carries `tags: [<region>]` is served only by this region's deployments. A
    // request-level `enable_tag_filtering: false` cannot turn it off (same function: "A
    // request-level False never disables either of those"). The model list itself holds only
    // this region's backends, so the tags are defence in depth and label the metrics
    // (`tag_<region>` with `custom_prometheus_tags`).
    router_settings.insert("enable_tag_filtering".into(), Value::Bool(true));
    if !fallbacks.is_empty() {
        // `router_settings.fallbacks: [{model: [fallback, …]}]` is a `Router.__init__` argument
        // (litellm/router.py, `fallbacks: list = []`; the proxy passes every key of
        // `router_settings` that `Router.get_valid_args()` knows, litellm/proxy/proxy_server.py
        // `load_config`, "## ROUTER SETTINGS").
        router_settings.insert("fallbacks".into(), Value::Sequence(fallbacks));
    }

    let mut callbacks = vec![Value::from("prometheus"), Value::from(GUARD_CALLBACK)];
    let observability = region.spec.observability.as_ref();
    if let Some(host) = observability.and_then(|o| o.langfuse_host.as_deref()) {
        // LiteLLM's Langfuse logger reads LANGFUSE_HOST / LANGFUSE_PUBLIC_KEY /
        // LANGFUSE_SECRET_KEY from its environment (litellm/integrations/langfuse/langfuse.py,
        // `resolve_langfuse_host`, `resolve_langfuse_credentials`).
        callbacks.push(Value::from("langfuse"));
        env.insert(
            LANGFUSE_HOST_ENV.to_owned(),
            k8s::env(LANGFUSE_HOST_ENV, host),
        );
        if let Some(secret) = observability.and_then(|o| o.langfuse_secret.as_deref()) {
            for key in [LANGFUSE_PUBLIC_KEY_ENV, LANGFUSE_SECRET_KEY_ENV] {
                let reference = SecretKeyReference {
                    name: secret.to_owned(),
                    key: key.to_owned(),
                };
                env.insert(key.to_owned(), secret_env(key, &reference));
            }
        }
    }
    if let Some(collector) = observability::otlp_http_collector_endpoint(region) {
        // Traces go to the region's collector, and only there. LiteLLM's OpenTelemetry logger
        // exists only with the `otel` callback; it reads its exporter from
        // OTEL_EXPORTER_OTLP_PROTOCOL (else OTEL_EXPORTER, else "console": without it nothing
        // leaves the pod) and its endpoint from OTEL_EXPORTER_OTLP_ENDPOINT, to which it appends
        // `/v1/traces` (litellm/integrations/opentelemetry.py `OpenTelemetryConfig.from_env`,
        // `_get_span_processor`, `_normalize_otel_endpoint`). OTLP/HTTP needs only
        // opentelemetry-exporter-otlp-proto-http, which the image's proxy-runtime extra has.
        callbacks.push(Value::from(OTEL_CALLBACK));
        for (name, value) in [
            (OTEL_PROTOCOL_ENV, "http/protobuf"),
            (OTEL_ENDPOINT_ENV, collector.as_str()),
            (OTEL_SERVICE_NAME_ENV, OTEL_SERVICE_NAME),
        ] {
            env.insert(name.to_owned(), k8s::env(name, value));
        }
    }
    let mut litellm_settings = Mapping::new();
    // `litellm_settings.callbacks: ["prometheus"]` registers the PrometheusLogger and mounts
    // `/metrics` (litellm/proxy/common_utils/callback_utils.py `initialize_callbacks_on_proxy`:
    // `if "prometheus" in value: PrometheusLogger._mount_metrics_endpoint()`). It needs the
    // `prometheus_client` package in the image. "langfuse" is one of the custom-logger
    // compatible callback names (litellm/__init__.py `_custom_logger_compatible_callbacks_literal`).
    litellm_settings.insert("callbacks".into(), Value::Sequence(callbacks));
    // Usage is attributed to teams and cost centres through these labels; the collector drops
    // every end-user label (end_user, user, user_email, hashed_api_key) when it reads them.
    litellm_settings.insert(
        "custom_prometheus_metadata_labels".into(),
        Value::Sequence(
            USAGE_METADATA_LABELS
                .iter()
                .map(|l| Value::from(*l))
                .collect(),
        ),
    );

    let mut general_settings = Mapping::new();
    if let Some(master) = &region.spec.gateway.master_key_secret {
        general_settings.insert(
            "master_key".into(),
            Value::from(format!("os.environ/{MASTER_KEY_ENV}")),
        );
        env.insert(
            MASTER_KEY_ENV.to_owned(),
            secret_env(MASTER_KEY_ENV, master),
        );
    }
    if let Some(database) = &region.spec.gateway.database_secret {
        // The proxy reads DATABASE_URL from its environment (litellm/proxy/proxy_server.py).
        env.insert(
            DATABASE_URL_ENV.to_owned(),
            secret_env(DATABASE_URL_ENV, database),
        );
        // With a database the proxy runs `prisma migrate deploy` at start. The Prisma CLI is a
        // Node program whose first run installs a Node runtime and npm-installs the CLI and its
        // engines — downloads abroad, which the egress policy denies, so the pod would hang
        // then fail. These make it use what the image baked in (litellm_proxy_extras/utils.py
        // `_get_prisma_env` / `_get_prisma_command`: PRISMA_OFFLINE_MODE runs the cached CLI
        // and sets npm to prefer its offline cache; the non_root image bakes the client,
        // engines and CLI under /app/.cache, docker/Dockerfile.non_root).
        for (name, value) in PRISMA_OFFLINE_ENV {
            env.insert(name.to_owned(), k8s::env(name, value));
        }
    }
    // Clients may not bring their own endpoint or credentials: a request body (or its
    // `metadata`, or a fallback object in it) carrying `api_base`, `base_url`, `user_config`,
    // AWS/Vertex/Azure identity fields, … is refused with 400 unless
    // `allow_client_side_credentials: true` or a deployment lists
    // `configurable_clientside_auth_params` (litellm/proxy/auth/auth_utils.py
    // `_BANNED_REQUEST_BODY_PARAMS`, `_check_banned_params`, `is_request_body_safe`). `false` is
    // LiteLLM's default; it is written out so that nobody can flip it through extraConfig, and
    // the operator never sets `configurable_clientside_auth_params`.
    general_settings.insert("allow_client_side_credentials".into(), Value::Bool(false));
    // Refuses requests whose `metadata.tags` (or `x-litellm-tags` header, which the proxy merges
    // into `metadata.tags` before the check) are set by the client: tags may only come from the
    // key / team metadata (litellm/proxy/auth/auth_checks.py
    // `_reject_clientside_metadata_tags_check`, field documented in litellm/proxy/_types.py
    // `ConfigGeneralSettings.reject_clientside_metadata_tags`; the header merge is
    // litellm/proxy/auth/user_api_key_auth.py → `apply_client_tag_policy_pre_auth`).
    // Not covered in 1.108.7: tags in the body's top-level `tags` field, merged after the
    // auth checks (litellm/proxy/litellm_pre_call_utils.py, "Merge caller-supplied tags").
    // With tag filtering on they can only narrow the choice among this region's deployments or
    // fail the request (seen on the real proxy: 401 "Not allowed to access model due to tags
    // configuration"), never widen it: every deployment in the list is in-region.
    general_settings.insert("reject_clientside_metadata_tags".into(), Value::Bool(true));
    // Models added through the admin API and stored in the database would not go through this
    // list (litellm/proxy/_types.py `ConfigGeneralSettings.store_model_in_db`).
    general_settings.insert("store_model_in_db".into(), Value::Bool(false));

    let mut operator = Mapping::new();
    operator.insert("model_list".into(), Value::Sequence(model_list));
    operator.insert("router_settings".into(), Value::Mapping(router_settings));
    operator.insert("litellm_settings".into(), Value::Mapping(litellm_settings));
    operator.insert("general_settings".into(), Value::Mapping(general_settings));

    let mut ignored_extra_config = Vec::new();
    let config = match &region.spec.gateway.extra_config {
        Some(extra) => {
            let extra = serde_yaml_ng::to_value(extra).map_err(|e| RenderError::Serialize {
                what: "gateway.extraConfig".to_owned(),
                message: e.to_string(),
            })?;
            match extra {
                Value::Mapping(mut extra) => {
                    for path in RESERVED_PATHS {
                        if remove_path(&mut extra, path) {
                            ignored_extra_config.push((*path).to_owned());
                        }
                    }
                    ignored_extra_config.sort();
                    merge_under(Value::Mapping(extra), Value::Mapping(operator))
                }
                // The schema only admits objects; anything else is ignored whole.
                Value::Null => Value::Mapping(operator),
                _ => {
                    ignored_extra_config.push("(not an object)".to_owned());
                    Value::Mapping(operator)
                }
            }
        }
        None => Value::Mapping(operator),
    };

    let config_yaml = python_yaml::to_string(config).map_err(|e| RenderError::Serialize {
        what: format!("LiteLLM config of region {region_name}"),
        message: e.to_string(),
    })?;

    Ok(GatewayConfig {
        config_yaml,
        env: env.into_values().collect(),
        models: models.into_iter().collect(),
        dropped_fallbacks,
        skipped_backends: skipped,
        ignored_extra_config,
    })
}

/// In-cluster base URL of a vLLM backend: `Service vllm-<backend>` on port [`VLLM_PORT`], with
/// vLLM's OpenAI routes under `/v1`.
pub fn vllm_api_base(backend_name: &str, namespace: &str) -> String {
    format!("http://vllm-{backend_name}.{namespace}.svc:{VLLM_PORT}/v1")
}

/// Name of the environment variable that carries a backend's API key:
/// `BACKEND_<NAME>_API_KEY`, the name upper-cased with every other character than a letter or
/// digit turned into `_`.
pub fn api_key_env(backend_name: &str) -> String {
    let name: String = backend_name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("BACKEND_{name}_API_KEY")
}

/// A backend that passed the defensive checks, with what the config needs of it.
struct Accepted<'a> {
    name: &'a str,
    namespace: String,
    model_name: &'a str,
    target: Target<'a>,
    pricing: Option<&'a TokenPricing>,
    weight: i32,
    fallbacks: &'a [String],
    api_key_secret: Option<&'a SecretKeyReference>,
    key_env: String,
}

/// Where a backend's requests go.
enum Target<'a> {
    Vllm,
    External(&'a ExternalSpec),
}

/// The backends that belong in the config, sorted by (model name, backend name); the others go
/// to `skipped` with the reason.
fn accept_backends<'a>(
    region_name: &str,
    region_namespace: &str,
    backends: &[&'a InferenceBackend],
    skipped: &mut Vec<SkippedBackend>,
) -> Vec<Accepted<'a>> {
    let mut sorted: Vec<&InferenceBackend> = backends.to_vec();
    // Sorting first makes both the output and the choice made on a clash independent of the
    // order the caller listed the backends in.
    sorted.sort_by(|a, b| {
        (&a.spec.model_name, &a.metadata.namespace, &a.metadata.name).cmp(&(
            &b.spec.model_name,
            &b.metadata.namespace,
            &b.metadata.name,
        ))
    });
    let mut accepted = Vec::new();
    let mut names = BTreeSet::new();
    let mut key_envs = BTreeSet::new();
    for backend in sorted {
        let name = backend.metadata.name.as_deref().unwrap_or_default();
        // Offline (`render -f`) objects may omit the namespace: they belong to the region's.
        let namespace = backend
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| region_namespace.to_owned());
        let id = format!("{namespace}/{name}");
        let mut skip = |reason: String| {
            skipped.push(SkippedBackend {
                backend: id.clone(),
                reason,
            })
        };
        let spec = &backend.spec;
        if name.is_empty() {
            skip("it has no metadata.name".to_owned());
            continue;
        }
        if spec.region != region_name {
            skip(format!(
                "it serves region {:?}, not {region_name:?}",
                spec.region
            ));
            continue;
        }
        if namespace != region_namespace {
            skip(format!(
                "it lives in namespace {namespace:?}, not in the region's namespace {region_namespace:?}"
            ));
            continue;
        }
        let target = match (&spec.vllm, &spec.external) {
            (Some(_), None) => Target::Vllm,
            (None, Some(external)) => Target::External(external),
            _ => {
                skip("it must set exactly one of vllm and external".to_owned());
                continue;
            }
        };
        if !names.insert(name.to_owned()) {
            skip("another backend of the same name was already rendered".to_owned());
            continue;
        }
        let api_key_secret = match &target {
            Target::External(external) => external.api_key_secret.as_ref(),
            Target::Vllm => None,
        };
        let key_env = api_key_env(name);
        if api_key_secret.is_some() && !key_envs.insert(key_env.clone()) {
            skip(format!(
                "its API key variable {key_env} clashes with another backend's (names that differ only in '.' and '-')"
            ));
            continue;
        }
        let routing = spec.routing.clone().unwrap_or_default();
        accepted.push(Accepted {
            name,
            namespace,
            model_name: &spec.model_name,
            target,
            pricing: spec.pricing.as_ref(),
            weight: routing.weight,
            fallbacks: spec
                .routing
                .as_ref()
                .map(|r| r.fallbacks.as_slice())
                .unwrap_or_default(),
            api_key_secret,
            key_env,
        });
    }
    accepted
}

/// One `model_list` entry.
fn model_entry(backend: &Accepted<'_>, region_name: &str, region_namespace: &str) -> Value {
    let mut params = Mapping::new();
    match backend.target {
        Target::Vllm => {
            // vLLM is started with `--served-model-name <modelName>`, and `hosted_vllm/` is
            // LiteLLM's provider for an OpenAI-compatible vLLM server at `api_base`.
            params.insert(
                "model".into(),
                Value::from(format!("hosted_vllm/{}", backend.model_name)),
            );
            params.insert(
                "api_base".into(),
                Value::from(vllm_api_base(backend.name, &backend.namespace)),
            );
        }
        Target::External(external) => external_params(external, &mut params),
    }
    if backend.api_key_secret.is_some() {
        // Resolved by the proxy from its environment at start; the file holds no secret.
        params.insert(
            "api_key".into(),
            Value::from(format!("os.environ/{}", backend.key_env)),
        );
    }
    // LiteLLM load-balances the deployments of one `model_name` in proportion to `weight`
    // (litellm/router.py, simple-shuffle over `litellm_params.weight`).
    params.insert("weight".into(), Value::from(i64::from(backend.weight)));
    params.insert(
        "tags".into(),
        Value::Sequence(vec![Value::from(region_name)]),
    );

    let mut info = Mapping::new();
    // A stable id: the Prometheus `model_id` label and LiteLLM's deployment key.
    info.insert(
        "id".into(),
        Value::from(format!("{region_namespace}.{}", backend.name)),
    );
    if let Some(pricing) = backend.pricing {
        // Custom prices per token (litellm/types/router.py `ModelInfo`, from
        // `MirroredPricingParams`); without them a self-hosted model has no token price, its
        // cost is computed from GPU-hours.
        if let Some(price) = per_token(&pricing.input_per_1m_tokens) {
            info.insert("input_cost_per_token".into(), price);
        }
        if let Some(price) = per_token(&pricing.output_per_1m_tokens) {
            info.insert("output_cost_per_token".into(), price);
        }
    }

    let mut entry = Mapping::new();
    entry.insert("model_name".into(), Value::from(backend.model_name));
    entry.insert("litellm_params".into(), Value::Mapping(params));
    entry.insert("model_info".into(), Value::Mapping(info));
    Value::Mapping(entry)
}

/// LiteLLM `model` and endpoint parameters of an external API.
fn external_params(external: &ExternalSpec, params: &mut Mapping) {
    let upstream = &external.upstream_model;
    let endpoint = Value::from(external.endpoint.clone());
    let (prefix, endpoint_key) = match external.provider {
        Provider::Mistral => ("mistral", "api_base"),
        // `azure/<deployment>` with `api_base` = the resource endpoint and `api_version`.
        Provider::AzureOpenAI => ("azure", "api_base"),
        // LiteLLM 1.108.7 has an OVHcloud AI Endpoints provider: `ovhcloud/<model>`
        // (litellm/litellm_core_utils/get_llm_provider_logic.py; it honours `api_base`,
        // litellm/llms/ovhcloud/chat/transformation.py `get_complete_url`).
        Provider::Ovh => ("ovhcloud", "api_base"),
        Provider::Sarvam | Provider::OpenAICompatible => ("openai", "api_base"),
        // Bedrock's endpoint parameter is `aws_bedrock_runtime_endpoint`; the API key, when
        // given, is a Bedrock bearer token (litellm/llms/bedrock/base_aws_llm.py).
        Provider::Bedrock => ("bedrock", "aws_bedrock_runtime_endpoint"),
        Provider::VertexAI => ("vertex_ai", "api_base"),
    };
    params.insert("model".into(), Value::from(format!("{prefix}/{upstream}")));
    params.insert(endpoint_key.into(), endpoint);
    if let Some(version) = &external.api_version {
        params.insert("api_version".into(), Value::from(version.clone()));
    }
    // Pin the provider's own region where LiteLLM needs it to build the URL or sign requests.
    if let Some(location) = &external.hosting_location {
        match external.provider {
            Provider::Bedrock => {
                params.insert("aws_region_name".into(), Value::from(location.clone()));
            }
            Provider::VertexAI => {
                params.insert("vertex_location".into(), Value::from(location.clone()));
            }
            _ => {}
        }
    }
}

/// `router_settings.fallbacks` (one `{model: [fallbacks]}` per model, sorted by model) and the
/// fallbacks dropped because nothing in this config serves them.
fn fallbacks(
    accepted: &[Accepted<'_>],
    models: &BTreeSet<String>,
) -> (Vec<Value>, Vec<(String, String)>) {
    // Several backends of one model may list fallbacks: the model's list is their union, in
    // backend order (which is sorted), without repeats.
    let mut wanted = BTreeMap::<&str, Vec<&str>>::new();
    for backend in accepted {
        let list = wanted.entry(backend.model_name).or_default();
        for fallback in backend.fallbacks {
            if fallback != backend.model_name && !list.contains(&fallback.as_str()) {
                list.push(fallback);
            }
        }
    }
    let mut kept = Vec::new();
    let mut dropped = Vec::new();
    for (model, list) in wanted {
        let mut served = Vec::new();
        for fallback in list {
            if models.contains(fallback) {
                served.push(Value::from(fallback));
            } else {
                dropped.push((model.to_owned(), fallback.to_owned()));
            }
        }
        if !served.is_empty() {
            let mut entry = Mapping::new();
            entry.insert(model.into(), Value::Sequence(served));
            kept.push(Value::Mapping(entry));
        }
    }
    (kept, dropped)
}

/// A per-million-tokens decimal string as the per-token price, a YAML float, or None when it
/// is not a non-negative decimal (the schema refuses those; this is the second line).
///
/// The division is exact: the decimal point moves six places on the digits, so `"1.80"`
/// becomes `0.0000018` in the file, exactly. Python's float parser then rounds it once,
/// correctly. Going through `f64` here instead would print `1.8e-6` (fine) but `1e-6` for
/// `"1"`, which Python's YAML (PyYAML, YAML 1.1, what LiteLLM loads the config with) reads as
/// the *string* "1e-6"; a decimal with a point is a float for every YAML reader.
fn per_token(per_million: &str) -> Option<Value> {
    let text = per_million.trim();
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    // Like the schema's rule: digits, optionally a point followed by digits.
    let (whole, fraction) = match text.split_once('.') {
        Some((whole, fraction)) if digits(whole) && digits(fraction) => (whole, fraction),
        None if digits(text) => (text, ""),
        _ => return None,
    };
    // All digits, and where the point goes once divided by 10^6.
    let all = format!("{whole}{fraction}");
    let point = whole.len() as isize - 6;
    let (int_part, frac_part) = if point > 0 {
        let point = point.unsigned_abs();
        (all[..point].to_owned(), all[point..].to_owned())
    } else {
        (
            "0".to_owned(),
            format!("{}{all}", "0".repeat(point.unsigned_abs())),
        )
    };
    let int_part = match int_part.trim_start_matches('0') {
        "" => "0",
        trimmed => trimmed,
    };
    let frac_part = match frac_part.trim_end_matches('0') {
        "" => "0",
        trimmed => trimmed,
    };
    Some(python_yaml::decimal(&format!("{int_part}.{frac_part}")))
}

/// `EnvVar` `name` from key `reference.key` of Secret `reference.name` (`optional` unset).
fn secret_env(name: &str, reference: &SecretKeyReference) -> EnvVar {
    k8s::secret_env(name, &reference.name, &reference.key, None)
}

/// Removes the dotted `path` from `map`; true when something was there.
fn remove_path(map: &mut Mapping, path: &str) -> bool {
    match path.split_once('.') {
        None => map.remove(path).is_some(),
        Some((head, rest)) => match map.get_mut(head) {
            Some(Value::Mapping(inner)) => remove_path(inner, rest),
            _ => false,
        },
    }
}

/// `base` with `top` deep-merged over it: mappings merge key by key, anything else in `top`
/// replaces what `base` has.
fn merge_under(base: Value, top: Value) -> Value {
    match (base, top) {
        (Value::Mapping(mut base), Value::Mapping(top)) => {
            for (key, value) in top {
                let merged = match base.remove(&key) {
                    Some(old) => merge_under(old, value),
                    None => value,
                };
                base.insert(key, merged);
            }
            Value::Mapping(base)
        }
        (_, top) => top,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::backend::InferenceBackendSpec;
    use crate::render::test_support::{example_all_backends, example_backends, example_region};

    fn render(region: &SovereignRegion, backends: &[InferenceBackend]) -> GatewayConfig {
        let refs: Vec<&InferenceBackend> = backends.iter().collect();
        litellm_config(region, &refs).expect("renders")
    }

    fn parsed(config: &GatewayConfig) -> serde_json::Value {
        serde_yaml_ng::from_str(&config.config_yaml).expect("the YAML parses back")
    }

    fn entries<'a>(config: &'a serde_json::Value, model: &str) -> Vec<&'a serde_json::Value> {
        config["model_list"]
            .as_array()
            .expect("model_list")
            .iter()
            .filter(|e| e["model_name"] == model)
            .collect()
    }

    fn backend(name: &str, model: &str, spec_yaml: &str) -> InferenceBackend {
        let mut spec: InferenceBackendSpec = serde_yaml_ng::from_str(spec_yaml).expect("spec");
        spec.model_name = model.to_owned();
        let mut backend = InferenceBackend::new(name, spec);
        backend.metadata.namespace = Some("sovereign-eu".to_owned());
        backend
    }

    const EXTERNAL_OPENAI: &str = "region: eu\nmodelName: x\nexternal: {provider: OpenAICompatible, endpoint: 'https://llm.example.eu/v1', hostingJurisdiction: FR, upstreamModel: up, apiKeySecret: {name: s, key: k}}";

    #[test]
    fn eu_example_serves_only_eu_models() {
        let config = render(&example_region("eu"), &example_all_backends());
        assert_eq!(
            config.models,
            [
                "gpt-4o",
                "llama-3-70b",
                "mistral-large",
                "ovh-llama-3.3-70b"
            ]
        );
        let skipped: Vec<&str> = config
            .skipped_backends
            .iter()
            .map(|s| s.backend.as_str())
            .collect();
        assert_eq!(
            skipped,
            [
                "sovereign-in/azure-gpt-4o-in",
                "sovereign-in/llama-3-70b",
                "sovereign-in/sarvam-2b"
            ]
        );
        assert!(config.skipped_backends[0].reason.contains("region \"in\""));
        assert!(!config.config_yaml.contains("sarvam"));
        assert!(!config.config_yaml.contains("contoso-in"));
        assert!(!config.config_yaml.contains("sovereign-in"));

        let yaml = parsed(&config);
        let llama = entries(&yaml, "llama-3-70b");
        assert_eq!(llama.len(), 1);
        assert_eq!(
            llama[0]["litellm_params"]["model"],
            "hosted_vllm/llama-3-70b"
        );
        assert_eq!(
            llama[0]["litellm_params"]["api_base"],
            "http://vllm-llama-3-70b.sovereign-eu.svc:8000/v1"
        );
        assert_eq!(llama[0]["model_info"]["id"], "sovereign-eu.llama-3-70b");
        // Self-hosted without pricing: no token price (GPU-hours cost it).
        assert!(llama[0]["model_info"].get("input_cost_per_token").is_none());
        assert!(llama[0]["litellm_params"].get("api_key").is_none());

        let mistral = &entries(&yaml, "mistral-large")[0]["litellm_params"];
        assert_eq!(mistral["model"], "mistral/mistral-large-latest");
        assert_eq!(mistral["api_base"], "https://api.mistral.ai/v1");
        let ovh = &entries(&yaml, "ovh-llama-3.3-70b")[0]["litellm_params"];
        assert_eq!(ovh["model"], "ovhcloud/Meta-Llama-3_3-70B-Instruct");
        let azure = &entries(&yaml, "gpt-4o")[0]["litellm_params"];
        assert_eq!(azure["model"], "azure/gpt-4o-eu-datazone");
        assert_eq!(azure["api_base"], "https://contoso-eu.openai.azure.com");
        assert_eq!(azure["api_version"], "2024-10-21");
        for entry in yaml["model_list"].as_array().expect("list") {
            assert_eq!(entry["litellm_params"]["tags"], serde_json::json!(["eu"]));
            assert_eq!(entry["litellm_params"]["weight"], 1);
        }

        assert_eq!(yaml["router_settings"]["enable_tag_filtering"], true);
        assert_eq!(
            yaml["general_settings"]["reject_clientside_metadata_tags"],
            true
        );
        assert_eq!(
            yaml["general_settings"]["allow_client_side_credentials"],
            false
        );
        assert_eq!(yaml["general_settings"]["store_model_in_db"], false);
        assert_eq!(
            yaml["litellm_settings"]["callbacks"],
            serde_json::json!(["prometheus", GUARD_CALLBACK, "langfuse", "otel"])
        );
    }

    #[test]
    fn india_example_serves_only_india_models() {
        let config = render(&example_region("in"), &example_all_backends());
        assert_eq!(config.models, ["gpt-4o", "llama-3-70b", "sarvam-2b"]);
        assert!(!config.config_yaml.contains("mistral"));
        assert!(!config.config_yaml.contains("contoso-eu"));
        assert_eq!(config.skipped_backends.len(), 4);
    }

    #[test]
    fn api_keys_are_env_references_and_no_secret_value_is_written() {
        let config = render(&example_region("eu"), &example_all_backends());
        let yaml = parsed(&config);
        for entry in yaml["model_list"].as_array().expect("list") {
            if let Some(key) = entry["litellm_params"].get("api_key") {
                assert!(
                    key.as_str().is_some_and(|k| k.starts_with("os.environ/")),
                    "{key}"
                );
            }
        }
        assert_eq!(
            entries(&yaml, "mistral-large")[0]["litellm_params"]["api_key"],
            "os.environ/BACKEND_MISTRAL_LARGE_API_KEY"
        );
        assert_eq!(
            entries(&yaml, "ovh-llama-3.3-70b")[0]["litellm_params"]["api_key"],
            "os.environ/BACKEND_OVH_LLAMA_3_3_70B_API_KEY"
        );
        assert_eq!(
            yaml["general_settings"]["master_key"],
            "os.environ/LITELLM_MASTER_KEY"
        );

        let names: Vec<&str> = config.env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "BACKEND_AZURE_GPT_4O_EU_API_KEY",
                "BACKEND_MISTRAL_LARGE_API_KEY",
                "BACKEND_OVH_LLAMA_3_3_70B_API_KEY",
                "LANGFUSE_HOST",
                "LANGFUSE_PUBLIC_KEY",
                "LANGFUSE_SECRET_KEY",
                "LITELLM_MASTER_KEY",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "OTEL_SERVICE_NAME",
            ]
        );
        let secret_of = |name: &str| {
            let env = config.env.iter().find(|e| e.name == name).expect("env");
            assert!(env.value.is_none(), "{name} must come from a Secret");
            let selector = env
                .value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .expect("secretKeyRef");
            (selector.name.clone(), selector.key.clone())
        };
        assert_eq!(
            secret_of("BACKEND_MISTRAL_LARGE_API_KEY"),
            ("mistral-api-key".into(), "api-key".into())
        );
        assert_eq!(
            secret_of("LITELLM_MASTER_KEY"),
            ("litellm-master-key".into(), "master-key".into())
        );
        assert_eq!(
            secret_of("LANGFUSE_SECRET_KEY"),
            ("langfuse-keys".into(), "LANGFUSE_SECRET_KEY".into())
        );
        let host = config
            .env
            .iter()
            .find(|e| e.name == "LANGFUSE_HOST")
            .expect("host");
        assert_eq!(
            host.value.as_deref(),
            Some("https://langfuse.eu.observability.example.com")
        );
        // No secret *names* leak into the file either: only env references.
        assert!(!config.config_yaml.contains("mistral-api-key"));
        assert!(!config.config_yaml.contains("langfuse-keys"));
    }

    #[test]
    fn database_secret_becomes_database_url() {
        let mut eu = example_region("eu");
        eu.spec.gateway.database_secret = Some(SecretKeyReference {
            name: "gateway-db".into(),
            key: "url".into(),
        });
        eu.spec.gateway.master_key_secret = None;
        eu.spec.observability = None;
        let config = render(&eu, &[]);
        let names: Vec<&str> = config.env.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names[0], "DATABASE_URL");
        let yaml = parsed(&config);
        assert!(yaml["general_settings"].get("master_key").is_none());
        assert_eq!(
            yaml["litellm_settings"]["callbacks"],
            serde_json::json!(["prometheus", GUARD_CALLBACK])
        );
    }

    /// Defect: with a database, the non-root gateway ran `prisma migrate deploy`, whose first
    /// run downloads a Node runtime, the Prisma CLI and its engines (denied egress).
    #[test]
    fn a_database_keeps_prismas_toolchain_offline() {
        let mut eu = example_region("eu");
        let value = |config: &GatewayConfig, name: &str| {
            config
                .env
                .iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        let without = render(&eu, &[]);
        assert_eq!(
            value(&without, "PRISMA_OFFLINE_MODE"),
            None,
            "no database, no Prisma"
        );
        eu.spec.gateway.database_secret = Some(SecretKeyReference {
            name: "gateway-db".into(),
            key: "url".into(),
        });
        let config = render(&eu, &[]);
        assert_eq!(
            value(&config, "PRISMA_OFFLINE_MODE").as_deref(),
            Some("true")
        );
        assert_eq!(
            value(&config, "NPM_CONFIG_PREFER_OFFLINE").as_deref(),
            Some("true")
        );
        assert_eq!(
            value(&config, "PRISMA_SKIP_POSTINSTALL_GENERATE").as_deref(),
            Some("1")
        );
    }

    /// Defect: the collector was fed by nothing — LiteLLM exports traces only with its `otel`
    /// callback, and without OTEL_EXPORTER_OTLP_PROTOCOL it exports to the console.
    #[test]
    fn traces_go_to_the_regional_collector_over_otlp_http() {
        let eu = example_region("eu");
        let config = render(&eu, &[]);
        let callbacks = parsed(&config)["litellm_settings"]["callbacks"].clone();
        assert!(
            callbacks
                .as_array()
                .is_some_and(|c| c.contains(&serde_json::json!("otel"))),
            "{callbacks}"
        );
        let value = |name: &str| {
            config
                .env
                .iter()
                .find(|e| e.name == name)
                .and_then(|e| e.value.clone())
        };
        assert_eq!(
            value("OTEL_EXPORTER_OTLP_ENDPOINT").as_deref(),
            Some("http://otel-collector.sovereign-eu.svc:4318")
        );
        assert_eq!(
            value("OTEL_EXPORTER_OTLP_PROTOCOL").as_deref(),
            Some("http/protobuf")
        );
        // No collector (no in-region OTLP endpoint): no callback, nowhere to send.
        let mut none = example_region("eu");
        if let Some(o) = none.spec.observability.as_mut() {
            o.otlp_endpoint = None;
        }
        let config = render(&none, &[]);
        assert!(!config.config_yaml.contains("otel"));
        assert!(!config.env.iter().any(|e| e.name.starts_with("OTEL_")));
    }

    #[test]
    fn fallbacks_stay_in_the_config_and_the_others_are_dropped() {
        let eu = example_region("eu");
        let config = render(&eu, &example_all_backends());
        assert!(config.dropped_fallbacks.is_empty());
        let yaml = parsed(&config);
        assert_eq!(
            yaml["router_settings"]["fallbacks"],
            serde_json::json!([
                {"gpt-4o": ["mistral-large", "llama-3-70b"]},
                {"mistral-large": ["llama-3-70b"]}
            ])
        );

        // Without the self-hosted llama, its name is no longer served here: dropped.
        let backends: Vec<InferenceBackend> = example_all_backends()
            .into_iter()
            .filter(|b| b.metadata.name.as_deref() != Some("llama-3-70b"))
            .collect();
        let config = render(&eu, &backends);
        assert_eq!(
            config.dropped_fallbacks,
            [
                ("gpt-4o".to_owned(), "llama-3-70b".to_owned()),
                ("mistral-large".to_owned(), "llama-3-70b".to_owned())
            ]
        );
        let yaml = parsed(&config);
        assert_eq!(
            yaml["router_settings"]["fallbacks"],
            serde_json::json!([{"gpt-4o": ["mistral-large"]}])
        );

        // India's sarvam falls back to India's llama, never to anything of the EU.
        let india = render(&example_region("in"), &example_all_backends());
        let yaml = parsed(&india);
        assert_eq!(
            yaml["router_settings"]["fallbacks"],
            serde_json::json!([{"gpt-4o": ["llama-3-70b"]}, {"sarvam-2b": ["llama-3-70b"]}])
        );
    }

    #[test]
    fn no_backend_gives_an_empty_model_list_that_still_configures_the_gateway() {
        let config = render(&example_region("eu"), &[]);
        assert!(config.models.is_empty());
        let yaml = parsed(&config);
        assert_eq!(yaml["model_list"], serde_json::json!([]));
        assert!(yaml["router_settings"].get("fallbacks").is_none());
        assert_eq!(yaml["router_settings"]["enable_tag_filtering"], true);
        assert_eq!(
            yaml["general_settings"]["master_key"],
            "os.environ/LITELLM_MASTER_KEY"
        );
        // Only India's backends: all skipped, still empty.
        let india_only: Vec<InferenceBackend> = example_backends(&example_region("in"));
        let config = render(&example_region("eu"), &india_only);
        assert!(config.models.is_empty());
        assert_eq!(config.skipped_backends.len(), 3);
    }

    #[test]
    fn extra_config_merges_but_cannot_override_the_operators_keys() {
        let mut eu = example_region("eu");
        eu.spec.gateway.extra_config = Some(serde_json::json!({
            "model_list": [{"model_name": "gpt-4o", "litellm_params": {"model": "openai/gpt-4o", "api_base": "https://api.openai.com/v1"}}],
            "include": ["more-models.yaml"],
            "environment_variables": {"LANGFUSE_HOST": "https://cloud.langfuse.com"},
            "router_settings": {
                "enable_tag_filtering": false,
                "model_list": [],
                "num_retries": 3,
                "fallbacks": [{"gpt-4o": ["gpt-4o-us"]}]
            },
            "litellm_settings": {
                "callbacks": ["datadog"],
                "success_callback": ["langfuse"],
                "drop_params": true,
                "custom_prometheus_metadata_labels": ["metadata.cost_center", "metadata.team"]
            },
            "general_settings": {
                "master_key": "sk-plain-text",
                "allow_client_side_credentials": true,
                "store_model_in_db": true,
                "alerting": ["slack"]
            }
        }));
        let config = render(&eu, &example_all_backends());
        assert_eq!(
            config.ignored_extra_config,
            [
                "environment_variables",
                "general_settings.allow_client_side_credentials",
                "general_settings.master_key",
                "general_settings.store_model_in_db",
                "include",
                "litellm_settings.callbacks",
                "litellm_settings.custom_prometheus_metadata_labels",
                "litellm_settings.success_callback",
                "model_list",
                "router_settings.enable_tag_filtering",
                "router_settings.fallbacks",
                "router_settings.model_list",
            ]
        );
        let yaml = parsed(&config);
        // The operator's model list, nothing of the extra one.
        assert_eq!(yaml["model_list"].as_array().expect("list").len(), 4);
        assert!(!config.config_yaml.contains("api.openai.com"));
        assert!(!config.config_yaml.contains("sk-plain-text"));
        assert!(yaml.get("include").is_none());
        assert!(yaml.get("environment_variables").is_none());
        assert_eq!(yaml["router_settings"]["enable_tag_filtering"], true);
        assert!(yaml["router_settings"].get("model_list").is_none());
        assert_eq!(
            yaml["litellm_settings"]["callbacks"],
            serde_json::json!(["prometheus", GUARD_CALLBACK, "langfuse", "otel"])
        );
        assert!(yaml["litellm_settings"].get("success_callback").is_none());
        assert_eq!(
            yaml["general_settings"]["master_key"],
            "os.environ/LITELLM_MASTER_KEY"
        );
        assert_eq!(
            yaml["general_settings"]["allow_client_side_credentials"],
            false
        );
        assert_eq!(yaml["general_settings"]["store_model_in_db"], false);
        // Everything else is merged in.
        assert_eq!(yaml["router_settings"]["num_retries"], 3);
        assert_eq!(yaml["litellm_settings"]["drop_params"], true);
        assert_eq!(
            yaml["litellm_settings"]["custom_prometheus_metadata_labels"],
            serde_json::json!(["metadata.cost_center", "metadata.team"])
        );
        assert_eq!(
            yaml["general_settings"]["alerting"],
            serde_json::json!(["slack"])
        );
    }

    #[test]
    fn pricing_is_the_exact_decimal_per_token() {
        let text = |s: &str| match per_token(s) {
            Some(Value::Tagged(tagged)) => match tagged.value {
                Value::String(decimal) => decimal,
                other => panic!("{s}: {other:?}"),
            },
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(text("1.80"), "0.0000018");
        assert_eq!(text("0.67"), "0.00000067");
        assert_eq!(text("2.30"), "0.0000023");
        assert_eq!(text("9.20"), "0.0000092");
        assert_eq!(text("1"), "0.000001");
        assert_eq!(text("12"), "0.000012");
        assert_eq!(text("0"), "0.0");
        assert_eq!(text("0.000001"), "0.000000000001");
        assert_eq!(text("1500000"), "1.5");
        assert_eq!(text("12345678.5"), "12.3456785");
        assert_eq!(text("840"), "0.00084");
        for bad in ["", "-1", "1e3", "1.", ".5", "1.2.3", "abc", "1,5"] {
            assert!(per_token(bad).is_none(), "{bad:?} must be refused");
        }

        let config = render(&example_region("eu"), &example_all_backends());
        // Written as decimals with a point, which PyYAML reads as floats (never `1e-6`).
        assert!(
            config
                .config_yaml
                .contains("input_cost_per_token: 0.0000018\n"),
            "{}",
            config.config_yaml
        );
        assert!(!config.config_yaml.contains(python_yaml::DECIMAL_MARKER));
        let yaml = parsed(&config);
        let info = &entries(&yaml, "mistral-large")[0]["model_info"];
        assert_eq!(info["input_cost_per_token"].as_f64(), Some(1.8e-6));
        assert_eq!(info["output_cost_per_token"].as_f64(), Some(5.4e-6));
        let ovh = &entries(&yaml, "ovh-llama-3.3-70b")[0]["model_info"];
        assert_eq!(ovh["input_cost_per_token"].as_f64(), Some(0.67 / 1e6));
    }

    #[test]
    fn output_is_deterministic() {
        let eu = example_region("eu");
        let mut backends = example_all_backends();
        let first = render(&eu, &backends);
        backends.reverse();
        let second = render(&eu, &backends);
        assert_eq!(first, second);
        assert_eq!(
            super::super::content_hash(&first.config_yaml),
            super::super::content_hash(&second.config_yaml)
        );

        // extraConfig's key order does not matter either.
        let mut a = eu.clone();
        a.spec.gateway.extra_config = Some(
            serde_json::from_str(r#"{"router_settings":{"b":1,"a":2},"z":1,"c":{"y":1,"x":2}}"#)
                .expect("json"),
        );
        let mut b = eu.clone();
        b.spec.gateway.extra_config = Some(
            serde_json::from_str(r#"{"c":{"x":2,"y":1},"z":1,"router_settings":{"a":2,"b":1}}"#)
                .expect("json"),
        );
        assert_eq!(
            render(&a, &backends).config_yaml,
            render(&b, &backends).config_yaml
        );
    }

    #[test]
    fn backends_of_one_model_are_load_balanced_by_weight() {
        let mut primary = backend("gw-a", "chat", EXTERNAL_OPENAI);
        primary.spec.routing = Some(crate::api::backend::RoutingSpec {
            weight: 3,
            fallbacks: vec!["chat".into()],
        });
        let secondary = backend("gw-b", "chat", EXTERNAL_OPENAI);
        let config = render(&example_region("eu"), &[secondary, primary]);
        assert_eq!(config.models, ["chat"]);
        let yaml = parsed(&config);
        let chat = entries(&yaml, "chat");
        assert_eq!(chat.len(), 2);
        assert_eq!(chat[0]["model_info"]["id"], "sovereign-eu.gw-a");
        assert_eq!(chat[0]["litellm_params"]["weight"], 3);
        assert_eq!(chat[1]["model_info"]["id"], "sovereign-eu.gw-b");
        assert_eq!(chat[1]["litellm_params"]["weight"], 1);
        assert_eq!(
            chat[1]["litellm_params"]["api_key"],
            "os.environ/BACKEND_GW_B_API_KEY"
        );
        // A model falling back to itself is no fallback.
        assert!(yaml["router_settings"].get("fallbacks").is_none());
        assert!(config.dropped_fallbacks.is_empty());
    }

    #[test]
    fn every_provider_gets_its_litellm_prefix() {
        let cases = [
            ("Mistral", "mistral/up", "api_base"),
            ("AzureOpenAI", "azure/up", "api_base"),
            ("OVH", "ovhcloud/up", "api_base"),
            ("Sarvam", "openai/up", "api_base"),
            ("OpenAICompatible", "openai/up", "api_base"),
            ("Bedrock", "bedrock/up", "aws_bedrock_runtime_endpoint"),
            ("VertexAI", "vertex_ai/up", "api_base"),
        ];
        for (provider, model, endpoint_key) in cases {
            let spec = EXTERNAL_OPENAI
                .replace("OpenAICompatible", provider)
                .replace(
                    "hostingJurisdiction: FR",
                    "hostingJurisdiction: FR, hostingLocation: eu-west-3",
                );
            let config = render(&example_region("eu"), &[backend("b", "m", &spec)]);
            let yaml = parsed(&config);
            let params = &entries(&yaml, "m")[0]["litellm_params"];
            assert_eq!(params["model"], model, "{provider}");
            assert_eq!(
                params[endpoint_key], "https://llm.example.eu/v1",
                "{provider}"
            );
            match provider {
                "Bedrock" => assert_eq!(params["aws_region_name"], "eu-west-3"),
                "VertexAI" => assert_eq!(params["vertex_location"], "eu-west-3"),
                _ => assert!(params.get("aws_region_name").is_none()),
            }
        }
    }

    #[test]
    fn invalid_or_foreign_backends_are_skipped_and_reported() {
        let mut wrong_namespace = backend("elsewhere", "m1", EXTERNAL_OPENAI);
        wrong_namespace.metadata.namespace = Some("team-a".into());
        let mut both = backend("both", "m2", EXTERNAL_OPENAI);
        both.spec.vllm = Some(Default::default());
        let dotted = backend("a.b", "m3", EXTERNAL_OPENAI);
        let dashed = backend("a-b", "m4", EXTERNAL_OPENAI);
        let mut no_namespace = backend("offline", "m5", EXTERNAL_OPENAI);
        no_namespace.metadata.namespace = None;
        let config = render(
            &example_region("eu"),
            &[wrong_namespace, both, dotted, dashed, no_namespace],
        );
        // "a-b" sorts first (by model name m3 < m4: "a.b" is m3), so "a-b" (m4) clashes.
        assert_eq!(config.models, ["m3", "m5"]);
        let reasons: Vec<(&str, &str)> = config
            .skipped_backends
            .iter()
            .map(|s| (s.backend.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(reasons.len(), 3, "{reasons:?}");
        assert!(
            reasons
                .iter()
                .any(|(b, r)| *b == "team-a/elsewhere" && r.contains("namespace"))
        );
        assert!(
            reasons
                .iter()
                .any(|(b, r)| *b == "sovereign-eu/both" && r.contains("exactly one"))
        );
        assert!(
            reasons
                .iter()
                .any(|(b, r)| *b == "sovereign-eu/a-b" && r.contains("clashes"))
        );
    }

    #[test]
    fn strings_python_yaml_would_misread_are_quoted() {
        let config = render(&example_region("eu"), &example_all_backends());
        // PyYAML reads a bare 2024-10-21 as a date.
        assert!(config.config_yaml.contains("api_version: '2024-10-21'\n"));
        let mut eu = example_region("eu");
        eu.spec.gateway.extra_config = Some(serde_json::json!({
            "litellm_settings": {"a": "on", "b": "1:20", "c": "0755", "d": "it's", "e": "plain",
                                 "f": "x SOVEREIGN_QUOTE_41 y", "g": "SOVEREIGN_DECIMAL_1_5",
                                 "h": "", "2024-01-01": "key"}
        }));
        let config = render(&eu, &[]);
        for line in [
            "  a: 'on'\n",
            "  b: '1:20'\n",
            "  c: '0755'\n",
            "  e: plain\n",
            "  f: 'x SOVEREIGN_QUOTE_41 y'\n",
            "  g: 'SOVEREIGN_DECIMAL_1_5'\n",
            "  h: ''\n",
            "  '2024-01-01': key\n",
        ] {
            assert!(
                config.config_yaml.contains(line),
                "{line:?} in\n{}",
                config.config_yaml
            );
        }
        let yaml = parsed(&config);
        assert_eq!(yaml["litellm_settings"]["d"], "it's");
        assert_eq!(yaml["litellm_settings"]["f"], "x SOVEREIGN_QUOTE_41 y");
    }

    #[test]
    fn a_region_without_a_name_is_an_error() {
        let mut eu = example_region("eu");
        eu.metadata.name = None;
        assert_eq!(
            litellm_config(&eu, &[]),
            Err(RenderError::MissingName {
                kind: "SovereignRegion"
            })
        );
    }
}
