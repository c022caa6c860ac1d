//! Every CEL rule of the CRD schemas, evaluated without a cluster (kube's `cel` feature): one
//! accepted and one refused case each, asserting the message that names the field.

use kube::CustomResourceExt;
use kube::core::cel::Validator;
use serde_json::{Value, json};
use sovereign_operator::api::{InferenceBackend, ResidencyPolicy, SovereignRegion, TokenBudget};

/// The CRD's openAPIV3Schema as JSON.
fn schema<K: CustomResourceExt>() -> Value {
    let crd = K::crd();
    let schema = crd.spec.versions[0]
        .schema
        .as_ref()
        .and_then(|s| s.open_api_v3_schema.as_ref())
        .expect("derived CRD has a schema");
    serde_json::to_value(schema).expect("schema is JSON")
}

/// The messages of every rule `object` breaks (with `old` for transition rules).
fn errors<K: CustomResourceExt>(object: &Value, old: Option<&Value>) -> Vec<String> {
    match Validator::new().validate(&schema::<K>(), object, old) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

/// Asserts `object` passes every rule.
fn accepted<K: CustomResourceExt>(object: &Value, old: Option<&Value>) {
    let errors = errors::<K>(object, old);
    assert!(errors.is_empty(), "expected no errors, got {errors:#?}");
}

/// Asserts `object` is refused with exactly one error containing `message`.
fn refused<K: CustomResourceExt>(object: &Value, old: Option<&Value>, message: &str) {
    let errors = errors::<K>(object, old);
    assert!(
        errors.iter().any(|e| e.contains(message)),
        "expected an error containing {message:?}, got {errors:#?}"
    );
    assert_eq!(
        errors.len(),
        1,
        "expected exactly one error, got {errors:#?}"
    );
}

/// `base` with the value at JSON pointer `pointer` replaced (or removed when `value` is null).
fn with(base: &Value, pointer: &str, value: Value) -> Value {
    let mut out = base.clone();
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a parent");
    let target = out.pointer_mut(parent).expect("parent exists");
    match target {
        Value::Object(map) if value.is_null() => {
            map.remove(key);
        }
        Value::Object(map) => {
            map.insert(key.to_owned(), value);
        }
        Value::Array(items) => {
            let index: usize = key.parse().expect("array index");
            items[index] = value;
        }
        _ => panic!("{parent} is not a container"),
    }
    out
}

fn region() -> Value {
    json!({
        "apiVersion": "sovereign.ai/v1alpha1", "kind": "SovereignRegion",
        "metadata": {"name": "eu"},
        "spec": {
            "jurisdiction": "EU",
            "locations": ["europe-west9", "eu-central-1"],
            "namespace": "sovereign-eu",
            "gateway": {"replicas": 2},
            "vectorStore": {"engine": "Qdrant", "replicas": 3, "storage": {"size": "50Gi"}},
            "observability": {
                "otlpEndpoint": "https://otel.eu.example.com:4317",
                "langfuseHost": "https://langfuse.eu.example.com"
            },
            "placement": {"nodeSelector": {"pool": "gpu"}}
        }
    })
}

fn vllm_backend() -> Value {
    json!({
        "apiVersion": "sovereign.ai/v1alpha1", "kind": "InferenceBackend",
        "metadata": {"name": "llama", "namespace": "sovereign-eu"},
        "spec": {
            "region": "eu",
            "modelName": "llama-3-70b",
            "vllm": {
                "model": "meta-llama/Meta-Llama-3-70B-Instruct",
                "gpus": {"count": 4, "type": "H100"},
                "replicas": {"min": 1, "max": 2},
                "tensorParallelSize": 4,
                "maxModelLen": 8192,
                "modelSource": {"objectStore": {"uri": "s3://models-eu/llama"}},
                "gpuHourlyCost": {"amount": "2.90", "currency": "EUR"}
            },
            "routing": {"weight": 10}
        }
    })
}

fn external_backend() -> Value {
    json!({
        "apiVersion": "sovereign.ai/v1alpha1", "kind": "InferenceBackend",
        "metadata": {"name": "mistral", "namespace": "sovereign-eu"},
        "spec": {
            "region": "eu",
            "modelName": "mistral-large",
            "external": {
                "provider": "Mistral",
                "endpoint": "https://api.mistral.ai/v1",
                "hostingJurisdiction": "FR",
                "upstreamModel": "mistral-large-latest"
            },
            "pricing": {"currency": "EUR", "inputPer1MTokens": "1.80", "outputPer1MTokens": "5.40"}
        }
    })
}

fn policy() -> Value {
    json!({
        "apiVersion": "sovereign.ai/v1alpha1", "kind": "ResidencyPolicy",
        "metadata": {"name": "pii"},
        "spec": {
            "mode": "Enforce",
            "dataClasses": ["pii"],
            "residency": {"kind": "AllowedJurisdictions", "allowedJurisdictions": ["EU", "CH"]},
            "sinks": [{"group": "x.example.com", "kinds": ["Mirror"], "locationExpression": "object.spec.region"}]
        }
    })
}

fn budget() -> Value {
    json!({
        "apiVersion": "sovereign.ai/v1alpha1", "kind": "TokenBudget",
        "metadata": {"name": "search", "namespace": "sovereign-eu"},
        "spec": {
            "scope": {"teams": ["search"]},
            "period": "Monthly",
            "timeZone": "Europe/Paris",
            "limit": {"amount": "5000", "currency": "EUR", "tokens": 1000000},
            "thresholds": [
                {"percent": 50, "action": "Notify"},
                {"percent": 90, "action": "Downgrade", "downgradeTo": "small"},
                {"percent": 100, "action": "Block"}
            ]
        }
    })
}

#[test]
fn base_objects_are_accepted() {
    accepted::<SovereignRegion>(&region(), None);
    accepted::<InferenceBackend>(&vllm_backend(), None);
    accepted::<InferenceBackend>(&external_backend(), None);
    accepted::<ResidencyPolicy>(&policy(), None);
    accepted::<TokenBudget>(&budget(), None);
}

// --- SovereignRegion ---

#[test]
fn region_jurisdiction_is_a_code() {
    accepted::<SovereignRegion>(&with(&region(), "/spec/jurisdiction", json!("IN")), None);
    refused::<SovereignRegion>(
        &with(&region(), "/spec/jurisdiction", json!("Europe")),
        None,
        "spec.jurisdiction: jurisdiction must be EU or an ISO 3166-1 alpha-2 country code",
    );
}

#[test]
fn region_jurisdiction_is_immutable() {
    let old = region();
    accepted::<SovereignRegion>(&with(&old, "/spec/frameworks", json!(["GDPR"])), Some(&old));
    refused::<SovereignRegion>(
        &with(&old, "/spec/jurisdiction", json!("IN")),
        Some(&old),
        "spec.jurisdiction: jurisdiction is immutable",
    );
}

#[test]
fn region_namespace_is_immutable_even_when_added_or_removed() {
    let old = region();
    accepted::<SovereignRegion>(&old, Some(&old));
    refused::<SovereignRegion>(
        &with(&old, "/spec/namespace", json!("elsewhere")),
        Some(&old),
        "namespace is immutable",
    );
    refused::<SovereignRegion>(
        &with(&old, "/spec/namespace", Value::Null),
        Some(&old),
        "namespace is immutable",
    );
}

#[test]
fn region_namespace_is_a_dns_label() {
    refused::<SovereignRegion>(
        &with(&region(), "/spec/namespace", json!("Sovereign_EU")),
        None,
        "spec.namespace: namespace must be a DNS label",
    );
}

#[test]
fn region_locations_are_non_empty() {
    accepted::<SovereignRegion>(&with(&region(), "/spec/locations", json!(["fr-par"])), None);
    refused::<SovereignRegion>(
        &with(&region(), "/spec/locations", json!([])),
        None,
        "spec.locations: locations must list at least one",
    );
}

#[test]
fn region_locations_are_unique() {
    refused::<SovereignRegion>(
        &with(
            &region(),
            "/spec/locations",
            json!(["fr-par", "eu-central-1", "fr-par"]),
        ),
        None,
        "spec.locations: locations must not contain duplicates",
    );
}

#[test]
fn region_placement_cannot_override_the_region_affinity() {
    refused::<SovereignRegion>(
        &with(
            &region(),
            "/spec/placement/nodeSelector",
            json!({"topology.kubernetes.io/region": "us-east-1"}),
        ),
        None,
        "spec.placement.nodeSelector: placement.nodeSelector may not set topology.kubernetes.io/region",
    );
}

#[test]
fn region_gateway_replicas_in_range() {
    refused::<SovereignRegion>(
        &with(&region(), "/spec/gateway/replicas", json!(0)),
        None,
        "spec.gateway.replicas: gateway.replicas must be between 1 and 100",
    );
}

#[test]
fn region_vector_store_replicas_in_range() {
    refused::<SovereignRegion>(
        &with(&region(), "/spec/vectorStore/replicas", json!(0)),
        None,
        "spec.vectorStore.replicas: vectorStore.replicas must be between 1 and 15",
    );
}

#[test]
fn region_storage_size_is_a_positive_quantity() {
    accepted::<SovereignRegion>(
        &with(&region(), "/spec/vectorStore/storage/size", json!("500M")),
        None,
    );
    refused::<SovereignRegion>(
        &with(&region(), "/spec/vectorStore/storage/size", json!("lots")),
        None,
        "spec.vectorStore.storage.size: storage.size must be a positive quantity",
    );
}

#[test]
fn region_observability_endpoints_are_https() {
    refused::<SovereignRegion>(
        &with(
            &region(),
            "/spec/observability/otlpEndpoint",
            json!("http://otel.eu.example.com:4317"),
        ),
        None,
        "spec.observability.otlpEndpoint: observability.otlpEndpoint must be an absolute https:// URL",
    );
    refused::<SovereignRegion>(
        &with(
            &region(),
            "/spec/observability/langfuseHost",
            json!("langfuse.eu"),
        ),
        None,
        "spec.observability.langfuseHost: observability.langfuseHost must be an absolute https:// URL",
    );
}

// --- InferenceBackend ---

#[test]
fn backend_has_exactly_one_of_vllm_or_external() {
    let both = with(
        &vllm_backend(),
        "/spec/external",
        external_backend()["spec"]["external"].clone(),
    );
    refused::<InferenceBackend>(&both, None, "exactly one of vllm or external must be set");
    let neither = with(&vllm_backend(), "/spec/vllm", Value::Null);
    refused::<InferenceBackend>(
        &neither,
        None,
        "exactly one of vllm or external must be set",
    );
}

#[test]
fn backend_region_is_immutable() {
    let old = vllm_backend();
    accepted::<InferenceBackend>(&with(&old, "/spec/modelName", json!("llama-3")), Some(&old));
    refused::<InferenceBackend>(
        &with(&old, "/spec/region", json!("in")),
        Some(&old),
        "spec.region: region is immutable",
    );
}

#[test]
fn backend_region_is_a_dns_label() {
    refused::<InferenceBackend>(
        &with(&vllm_backend(), "/spec/region", json!("EU West")),
        None,
        "spec.region: region must be a DNS label",
    );
}

#[test]
fn backend_model_name_is_not_empty() {
    refused::<InferenceBackend>(
        &with(&vllm_backend(), "/spec/modelName", json!("")),
        None,
        "spec.modelName: modelName must not be empty",
    );
}

#[test]
fn backend_gpu_count_at_least_one() {
    accepted::<InferenceBackend>(
        &with(
            &with(&vllm_backend(), "/spec/vllm/gpus/count", json!(1)),
            "/spec/vllm/tensorParallelSize",
            json!(1),
        ),
        None,
    );
    refused::<InferenceBackend>(
        &with(
            &with(&vllm_backend(), "/spec/vllm/gpus/count", json!(0)),
            "/spec/vllm/tensorParallelSize",
            Value::Null,
        ),
        None,
        "spec.vllm.gpus.count: vllm.gpus.count must be at least 1",
    );
}

#[test]
fn backend_replicas_min_not_above_max() {
    refused::<InferenceBackend>(
        &with(
            &vllm_backend(),
            "/spec/vllm/replicas",
            json!({"min": 3, "max": 2}),
        ),
        None,
        "spec.vllm.replicas: replicas.min must not exceed replicas.max",
    );
    refused::<InferenceBackend>(
        &with(
            &vllm_backend(),
            "/spec/vllm/replicas",
            json!({"min": -1, "max": 2}),
        ),
        None,
        "spec.vllm.replicas.min: replicas.min must not be negative",
    );
    refused::<InferenceBackend>(
        &with(
            &vllm_backend(),
            "/spec/vllm/replicas",
            json!({"min": 0, "max": 0}),
        ),
        None,
        "spec.vllm.replicas.max: replicas.max must be at least 1",
    );
}

#[test]
fn backend_tensor_parallel_size_within_gpu_count() {
    refused::<InferenceBackend>(
        &with(&vllm_backend(), "/spec/vllm/tensorParallelSize", json!(8)),
        None,
        "spec.vllm: vllm.tensorParallelSize must not exceed vllm.gpus.count",
    );
    refused::<InferenceBackend>(
        &with(&vllm_backend(), "/spec/vllm/tensorParallelSize", json!(0)),
        None,
        "spec.vllm.tensorParallelSize: vllm.tensorParallelSize must be at least 1",
    );
}

#[test]
fn backend_max_model_len_positive() {
    refused::<InferenceBackend>(
        &with(&vllm_backend(), "/spec/vllm/maxModelLen", json!(0)),
        None,
        "spec.vllm.maxModelLen: vllm.maxModelLen must be at least 1",
    );
}

#[test]
fn backend_model_source_has_exactly_one_source() {
    refused::<InferenceBackend>(
        &with(
            &vllm_backend(),
            "/spec/vllm/modelSource",
            json!({"pvc": {"claimName": "weights"}, "objectStore": {"uri": "s3://m/x"}}),
        ),
        None,
        "spec.vllm.modelSource: modelSource must set exactly one of pvc, objectStore or huggingFace",
    );
    refused::<InferenceBackend>(
        &with(
            &vllm_backend(),
            "/spec/vllm/modelSource",
            json!({"objectStore": {"uri": "ftp://m/x"}}),
        ),
        None,
        "spec.vllm.modelSource.objectStore.uri: modelSource.objectStore.uri must start with",
    );
}

#[test]
fn backend_endpoint_is_https() {
    refused::<InferenceBackend>(
        &with(
            &external_backend(),
            "/spec/external/endpoint",
            json!("http://api.mistral.ai/v1"),
        ),
        None,
        "spec.external.endpoint: external.endpoint must be an absolute https:// URL",
    );
}

#[test]
fn backend_hosting_jurisdiction_is_a_code() {
    refused::<InferenceBackend>(
        &with(
            &external_backend(),
            "/spec/external/hostingJurisdiction",
            json!("fr"),
        ),
        None,
        "spec.external.hostingJurisdiction: external.hostingJurisdiction must be EU or an ISO 3166-1 alpha-2",
    );
}

#[test]
fn backend_currency_codes_are_three_capitals() {
    refused::<InferenceBackend>(
        &with(&external_backend(), "/spec/pricing/currency", json!("eur")),
        None,
        "spec.pricing.currency: pricing.currency must be an ISO 4217 currency code",
    );
    refused::<InferenceBackend>(
        &with(
            &vllm_backend(),
            "/spec/vllm/gpuHourlyCost/currency",
            json!("EURO"),
        ),
        None,
        "spec.vllm.gpuHourlyCost.currency: currency must be an ISO 4217 currency code",
    );
}

#[test]
fn backend_prices_are_non_negative_decimals() {
    accepted::<InferenceBackend>(
        &with(
            &external_backend(),
            "/spec/pricing/inputPer1MTokens",
            json!("0"),
        ),
        None,
    );
    refused::<InferenceBackend>(
        &with(
            &external_backend(),
            "/spec/pricing/inputPer1MTokens",
            json!("-1.80"),
        ),
        None,
        "spec.pricing.inputPer1MTokens: pricing.inputPer1MTokens must be a non-negative decimal",
    );
    refused::<InferenceBackend>(
        &with(
            &external_backend(),
            "/spec/pricing/outputPer1MTokens",
            json!("5,40"),
        ),
        None,
        "spec.pricing.outputPer1MTokens: pricing.outputPer1MTokens must be a non-negative decimal",
    );
    refused::<InferenceBackend>(
        &with(
            &vllm_backend(),
            "/spec/vllm/gpuHourlyCost/amount",
            json!("-2"),
        ),
        None,
        "spec.vllm.gpuHourlyCost.amount: amount must be a non-negative decimal",
    );
}

#[test]
fn backend_routing_weight_in_range() {
    refused::<InferenceBackend>(
        &with(&vllm_backend(), "/spec/routing/weight", json!(0)),
        None,
        "spec.routing.weight: routing.weight must be between 1 and 1000",
    );
}

// --- ResidencyPolicy ---

#[test]
fn policy_data_classes_non_empty() {
    refused::<ResidencyPolicy>(
        &with(&policy(), "/spec/dataClasses", json!([])),
        None,
        "spec.dataClasses: dataClasses must list at least one data class",
    );
}

#[test]
fn policy_allowed_jurisdictions_required_and_valid() {
    accepted::<ResidencyPolicy>(
        &with(&policy(), "/spec/residency", json!({"kind": "HomeRegion"})),
        None,
    );
    refused::<ResidencyPolicy>(
        &with(&policy(), "/spec/residency/allowedJurisdictions", json!([])),
        None,
        "spec.residency: residency.allowedJurisdictions must list at least one jurisdiction",
    );
    refused::<ResidencyPolicy>(
        &with(
            &policy(),
            "/spec/residency/allowedJurisdictions",
            json!(["EU", "india"]),
        ),
        None,
        "spec.residency.allowedJurisdictions: residency.allowedJurisdictions entries must be EU or ISO 3166-1 alpha-2",
    );
}

#[test]
fn policy_sinks_need_kinds_and_an_expression() {
    refused::<ResidencyPolicy>(
        &with(&policy(), "/spec/sinks/0/kinds", json!([])),
        None,
        "spec.sinks[0].kinds: sinks[].kinds must list at least one kind",
    );
    refused::<ResidencyPolicy>(
        &with(&policy(), "/spec/sinks/0/locationExpression", json!("")),
        None,
        "spec.sinks[0].locationExpression: sinks[].locationExpression must not be empty",
    );
}

// --- TokenBudget ---

#[test]
fn budget_limit_needs_amount_or_tokens() {
    accepted::<TokenBudget>(&with(&budget(), "/spec/limit", json!({"tokens": 5})), None);
    accepted::<TokenBudget>(
        &with(
            &budget(),
            "/spec/limit",
            json!({"amount": "1", "currency": "INR"}),
        ),
        None,
    );
    refused::<TokenBudget>(
        &with(&budget(), "/spec/limit", json!({})),
        None,
        "spec.limit: limit must set amount (with currency) or tokens",
    );
}

#[test]
fn budget_amount_and_currency_go_together() {
    refused::<TokenBudget>(
        &with(&budget(), "/spec/limit", json!({"amount": "10"})),
        None,
        "spec.limit: limit.amount and limit.currency must be set together",
    );
}

#[test]
fn budget_amounts_non_negative_and_currency_valid() {
    refused::<TokenBudget>(
        &with(&budget(), "/spec/limit/amount", json!("-5")),
        None,
        "spec.limit.amount: limit.amount must be a non-negative decimal",
    );
    refused::<TokenBudget>(
        &with(&budget(), "/spec/limit/currency", json!("E1R")),
        None,
        "spec.limit.currency: limit.currency must be an ISO 4217 currency code",
    );
    refused::<TokenBudget>(
        &with(&budget(), "/spec/limit/tokens", json!(-1)),
        None,
        "spec.limit.tokens: limit.tokens must not be negative",
    );
}

#[test]
fn budget_thresholds_between_1_and_1000_percent() {
    accepted::<TokenBudget>(
        &with(
            &budget(),
            "/spec/thresholds",
            json!([{"percent": 1}, {"percent": 1000}]),
        ),
        None,
    );
    refused::<TokenBudget>(
        &with(&budget(), "/spec/thresholds", json!([{"percent": 0}])),
        None,
        "spec.thresholds[0].percent: thresholds[].percent must be between 1 and 1000",
    );
    refused::<TokenBudget>(
        &with(&budget(), "/spec/thresholds", json!([{"percent": 1001}])),
        None,
        "spec.thresholds[0].percent: thresholds[].percent must be between 1 and 1000",
    );
}

#[test]
fn budget_thresholds_unique() {
    refused::<TokenBudget>(
        &with(
            &budget(),
            "/spec/thresholds",
            json!([{"percent": 80}, {"percent": 80, "action": "Block"}]),
        ),
        None,
        "spec.thresholds: thresholds must not repeat a percent",
    );
}

#[test]
fn budget_thresholds_ascending() {
    refused::<TokenBudget>(
        &with(
            &budget(),
            "/spec/thresholds",
            json!([{"percent": 80}, {"percent": 50}]),
        ),
        None,
        "spec.thresholds: thresholds must be in ascending order of percent",
    );
}

#[test]
fn budget_downgrade_needs_a_target() {
    refused::<TokenBudget>(
        &with(&budget(), "/spec/thresholds/1/downgradeTo", Value::Null),
        None,
        "spec.thresholds[1]: thresholds[].downgradeTo is required when action is Downgrade",
    );
}

#[test]
fn budget_time_zone_is_an_iana_name() {
    accepted::<TokenBudget>(
        &with(&budget(), "/spec/timeZone", json!("Asia/Kolkata")),
        None,
    );
    refused::<TokenBudget>(
        &with(&budget(), "/spec/timeZone", json!("+05:30")),
        None,
        "spec.timeZone: timeZone must be an IANA time zone name",
    );
}
