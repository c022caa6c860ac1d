//! The schema-validation corpus: for every CEL rule of the CRDs, an accepted and a refused
//! object with the message the refusal must carry. `tests/cel_rules.rs` evaluates it offline
//! with kube's CEL engine; the e2e suite sends the same objects to a real API server, so the two
//! can never drift apart.

#![allow(dead_code)] // each test target uses a different part

use serde_json::{Value, json};

/// Which CRD an object belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    SovereignRegion,
    InferenceBackend,
    ResidencyPolicy,
    TokenBudget,
}

/// One object and what validation must say about it.
#[derive(Clone, Debug)]
pub struct Case {
    /// `<rule>/<n>`, for failure reports.
    pub name: &'static str,
    pub kind: Kind,
    /// The object as it would be created (or updated, when `old` is set).
    pub object: Value,
    /// For transition rules: the stored object `object` replaces.
    pub old: Option<Value>,
    /// None: accepted. Some(text): refused with an error containing `text` (field path and
    /// message).
    pub expect: Option<&'static str>,
}

/// `base` with the value at JSON pointer `pointer` replaced (or removed when `value` is null).
pub fn with(base: &Value, pointer: &str, value: Value) -> Value {
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

pub fn region() -> Value {
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

pub fn vllm_backend() -> Value {
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

pub fn external_backend() -> Value {
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

pub fn policy() -> Value {
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

pub fn budget() -> Value {
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
                {"percent": 95, "action": "Throttle", "requestsPerMinute": 5},
                {"percent": 100, "action": "Block"}
            ]
        }
    })
}

/// Every case, accepted and refused.
pub fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    {
        cases.push(Case {
            name: "base_objects_are_accepted/1",
            kind: Kind::SovereignRegion,
            object: region(),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "base_objects_are_accepted/2",
            kind: Kind::InferenceBackend,
            object: vllm_backend(),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "base_objects_are_accepted/3",
            kind: Kind::InferenceBackend,
            object: external_backend(),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "base_objects_are_accepted/4",
            kind: Kind::ResidencyPolicy,
            object: policy(),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "base_objects_are_accepted/5",
            kind: Kind::TokenBudget,
            object: budget(),
            old: None,
            expect: None,
        });
    }
    {
        cases.push(Case {
            name: "region_jurisdiction_is_a_code/1",
            kind: Kind::SovereignRegion,
            object: with(&region(), "/spec/jurisdiction", json!("IN")),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "region_jurisdiction_is_a_code/2",
            kind: Kind::SovereignRegion,
            object: with(&region(), "/spec/jurisdiction", json!("Europe")),
            old: None,
            expect: Some(
                "spec.jurisdiction: jurisdiction must be EU or an ISO 3166-1 alpha-2 country code",
            ),
        });
    }
    {
        let old = region();
        cases.push(Case {
            name: "region_jurisdiction_is_immutable/1",
            kind: Kind::SovereignRegion,
            object: with(&old, "/spec/frameworks", json!(["GDPR"])),
            old: Some(old.clone()),
            expect: None,
        });
        cases.push(Case {
            name: "region_jurisdiction_is_immutable/2",
            kind: Kind::SovereignRegion,
            object: with(&old, "/spec/jurisdiction", json!("IN")),
            old: Some(old.clone()),
            expect: Some("spec.jurisdiction: jurisdiction is immutable"),
        });
    }
    {
        let old = region();
        cases.push(Case {
            name: "region_namespace_is_immutable_even_when_added_or_removed/1",
            kind: Kind::SovereignRegion,
            object: old.clone(),
            old: Some(old.clone()),
            expect: None,
        });
        cases.push(Case {
            name: "region_namespace_is_immutable_even_when_added_or_removed/2",
            kind: Kind::SovereignRegion,
            object: with(&old, "/spec/namespace", json!("elsewhere")),
            old: Some(old.clone()),
            expect: Some("namespace is immutable"),
        });
        cases.push(Case {
            name: "region_namespace_is_immutable_even_when_added_or_removed/3",
            kind: Kind::SovereignRegion,
            object: with(&old, "/spec/namespace", Value::Null),
            old: Some(old.clone()),
            expect: Some("namespace is immutable"),
        });
    }
    {
        cases.push(Case {
            name: "region_namespace_is_a_dns_label/1",
            kind: Kind::SovereignRegion,
            object: with(&region(), "/spec/namespace", json!("Sovereign_EU")),
            old: None,
            expect: Some("spec.namespace: namespace must be a DNS label"),
        });
    }
    {
        cases.push(Case {
            name: "region_locations_are_non_empty/1",
            kind: Kind::SovereignRegion,
            object: with(&region(), "/spec/locations", json!(["fr-par"])),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "region_locations_are_non_empty/2",
            kind: Kind::SovereignRegion,
            object: with(&region(), "/spec/locations", json!([])),
            old: None,
            expect: Some("spec.locations: locations must list at least one"),
        });
    }
    {
        cases.push(Case {
            name: "region_locations_are_unique/1",
            kind: Kind::SovereignRegion,
            object: with(
                &region(),
                "/spec/locations",
                json!(["fr-par", "eu-central-1", "fr-par"]),
            ),
            old: None,
            expect: Some("spec.locations: locations must not contain duplicates"),
        });
    }
    {
        cases.push(Case { name: "region_placement_cannot_override_the_region_affinity/1", kind: Kind::SovereignRegion, object: with(
            &region(),
            "/spec/placement/nodeSelector",
            json!({"topology.kubernetes.io/region": "us-east-1"}),
        ), old: None, expect: Some("spec.placement.nodeSelector: placement.nodeSelector may not set topology.kubernetes.io/region") });
    }
    {
        cases.push(Case {
            name: "region_gateway_replicas_in_range/1",
            kind: Kind::SovereignRegion,
            object: with(&region(), "/spec/gateway/replicas", json!(0)),
            old: None,
            expect: Some("spec.gateway.replicas: gateway.replicas must be between 1 and 100"),
        });
    }
    {
        cases.push(Case {
            name: "region_gateway_metrics_urls_http/1",
            kind: Kind::SovereignRegion,
            object: with(
                &region(),
                "/spec/gateway/metricsUrls",
                json!([
                    "http://10.0.0.7:4000/metrics/",
                    "https://gw.eu.example/metrics"
                ]),
            ),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "region_gateway_metrics_urls_http/2",
            kind: Kind::SovereignRegion,
            object: with(&region(), "/spec/gateway/metricsUrls", json!(["gw.eu.example:4000/metrics"])),
            old: None,
            expect: Some("spec.gateway.metricsUrls: gateway.metricsUrls entries must be absolute http:// or https:// URLs"),
        });
    }
    {
        cases.push(Case {
            name: "region_vector_store_replicas_in_range/1",
            kind: Kind::SovereignRegion,
            object: with(&region(), "/spec/vectorStore/replicas", json!(0)),
            old: None,
            expect: Some(
                "spec.vectorStore.replicas: vectorStore.replicas must be between 1 and 15",
            ),
        });
    }
    {
        cases.push(Case {
            name: "region_storage_size_is_a_positive_quantity/1",
            kind: Kind::SovereignRegion,
            object: with(&region(), "/spec/vectorStore/storage/size", json!("500M")),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "region_storage_size_is_a_positive_quantity/2",
            kind: Kind::SovereignRegion,
            object: with(&region(), "/spec/vectorStore/storage/size", json!("lots")),
            old: None,
            expect: Some("spec.vectorStore.storage.size: storage.size must be a positive quantity"),
        });
    }
    {
        cases.push(Case { name: "region_observability_endpoints_are_https/1", kind: Kind::SovereignRegion, object: with(
            &region(),
            "/spec/observability/otlpEndpoint",
            json!("http://otel.eu.example.com:4317"),
        ), old: None, expect: Some("spec.observability.otlpEndpoint: observability.otlpEndpoint must be an absolute https:// URL") });
        cases.push(Case { name: "region_observability_endpoints_are_https/2", kind: Kind::SovereignRegion, object: with(
            &region(),
            "/spec/observability/langfuseHost",
            json!("langfuse.eu"),
        ), old: None, expect: Some("spec.observability.langfuseHost: observability.langfuseHost must be an absolute https:// URL") });
    }
    {
        let bundle = json!({"name": "otlp-ca", "key": "ca.crt"});
        let with_bundle = with(&region(), "/spec/observability/caBundle", bundle.clone());
        cases.push(Case {
            name: "region_ca_bundle_needs_an_otlp_endpoint/1",
            kind: Kind::SovereignRegion,
            object: with_bundle.clone(),
            old: None,
            expect: None,
        });
        cases.push(Case { name: "region_ca_bundle_needs_an_otlp_endpoint/2", kind: Kind::SovereignRegion,
            object: with(&with_bundle, "/spec/observability/otlpEndpoint", Value::Null), old: None,
            expect: Some("spec.observability: observability.caBundle is the CA of otlpEndpoint: set otlpEndpoint too") });
        cases.push(Case {
            name: "config_map_key_reference_names/1",
            kind: Kind::SovereignRegion,
            object: with(
                &with_bundle,
                "/spec/observability/caBundle/key",
                json!("ca bundle"),
            ),
            old: None,
            expect: Some("spec.observability.caBundle.key: key must be a ConfigMap key"),
        });
        cases.push(Case {
            name: "config_map_key_reference_names/2",
            kind: Kind::SovereignRegion,
            object: with(
                &with_bundle,
                "/spec/observability/caBundle/name",
                json!("Otlp_CA"),
            ),
            old: None,
            expect: Some("spec.observability.caBundle.name: name must be a ConfigMap name"),
        });
    }
    {
        let both = with(
            &vllm_backend(),
            "/spec/external",
            external_backend()["spec"]["external"].clone(),
        );
        cases.push(Case {
            name: "backend_has_exactly_one_of_vllm_or_external/1",
            kind: Kind::InferenceBackend,
            object: both,
            old: None,
            expect: Some("exactly one of vllm or external must be set"),
        });
        let neither = with(&vllm_backend(), "/spec/vllm", Value::Null);
        cases.push(Case {
            name: "backend_has_exactly_one_of_vllm_or_external/2",
            kind: Kind::InferenceBackend,
            object: neither,
            old: None,
            expect: Some("exactly one of vllm or external must be set"),
        });
    }
    {
        let old = vllm_backend();
        cases.push(Case {
            name: "backend_region_is_immutable/1",
            kind: Kind::InferenceBackend,
            object: with(&old, "/spec/modelName", json!("llama-3")),
            old: Some(old.clone()),
            expect: None,
        });
        cases.push(Case {
            name: "backend_region_is_immutable/2",
            kind: Kind::InferenceBackend,
            object: with(&old, "/spec/region", json!("in")),
            old: Some(old.clone()),
            expect: Some("spec.region: region is immutable"),
        });
    }
    {
        cases.push(Case {
            name: "backend_region_is_a_dns_label/1",
            kind: Kind::InferenceBackend,
            object: with(&vllm_backend(), "/spec/region", json!("EU West")),
            old: None,
            expect: Some("spec.region: region must be a DNS label"),
        });
    }
    {
        cases.push(Case {
            name: "backend_model_name_is_not_empty/1",
            kind: Kind::InferenceBackend,
            object: with(&vllm_backend(), "/spec/modelName", json!("")),
            old: None,
            expect: Some("spec.modelName: modelName must not be empty"),
        });
    }
    {
        cases.push(Case {
            name: "backend_gpu_count_at_least_one/1",
            kind: Kind::InferenceBackend,
            object: with(
                &with(&vllm_backend(), "/spec/vllm/gpus/count", json!(1)),
                "/spec/vllm/tensorParallelSize",
                json!(1),
            ),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "backend_gpu_count_at_least_one/2",
            kind: Kind::InferenceBackend,
            object: with(
                &with(&vllm_backend(), "/spec/vllm/gpus/count", json!(0)),
                "/spec/vllm/tensorParallelSize",
                Value::Null,
            ),
            old: None,
            expect: Some("spec.vllm.gpus.count: vllm.gpus.count must be at least 1"),
        });
    }
    {
        cases.push(Case {
            name: "backend_replicas_min_not_above_max/1",
            kind: Kind::InferenceBackend,
            object: with(
                &vllm_backend(),
                "/spec/vllm/replicas",
                json!({"min": 3, "max": 2}),
            ),
            old: None,
            expect: Some("spec.vllm.replicas: replicas.min must not exceed replicas.max"),
        });
        cases.push(Case {
            name: "backend_replicas_min_not_above_max/2",
            kind: Kind::InferenceBackend,
            object: with(
                &vllm_backend(),
                "/spec/vllm/replicas",
                json!({"min": -1, "max": 2}),
            ),
            old: None,
            expect: Some("spec.vllm.replicas.min: replicas.min must not be negative"),
        });
        cases.push(Case {
            name: "backend_replicas_min_not_above_max/3",
            kind: Kind::InferenceBackend,
            object: with(
                &vllm_backend(),
                "/spec/vllm/replicas",
                json!({"min": 0, "max": 0}),
            ),
            old: None,
            expect: Some("spec.vllm.replicas.max: replicas.max must be at least 1"),
        });
    }
    {
        cases.push(Case {
            name: "backend_tensor_parallel_size_within_gpu_count/1",
            kind: Kind::InferenceBackend,
            object: with(&vllm_backend(), "/spec/vllm/tensorParallelSize", json!(8)),
            old: None,
            expect: Some("spec.vllm: vllm.tensorParallelSize must not exceed vllm.gpus.count"),
        });
        cases.push(Case {
            name: "backend_tensor_parallel_size_within_gpu_count/2",
            kind: Kind::InferenceBackend,
            object: with(&vllm_backend(), "/spec/vllm/tensorParallelSize", json!(0)),
            old: None,
            expect: Some(
                "spec.vllm.tensorParallelSize: vllm.tensorParallelSize must be at least 1",
            ),
        });
    }
    {
        cases.push(Case {
            name: "backend_max_model_len_positive/1",
            kind: Kind::InferenceBackend,
            object: with(&vllm_backend(), "/spec/vllm/maxModelLen", json!(0)),
            old: None,
            expect: Some("spec.vllm.maxModelLen: vllm.maxModelLen must be at least 1"),
        });
    }
    {
        cases.push(Case { name: "backend_model_source_has_exactly_one_source/1", kind: Kind::InferenceBackend, object: with(
            &vllm_backend(),
            "/spec/vllm/modelSource",
            json!({"pvc": {"claimName": "weights"}, "objectStore": {"uri": "s3://m/x"}}),
        ), old: None, expect: Some("spec.vllm.modelSource: modelSource must set exactly one of pvc, objectStore or huggingFace") });
        cases.push(Case { name: "backend_model_source_has_exactly_one_source/2", kind: Kind::InferenceBackend, object: with(
            &vllm_backend(),
            "/spec/vllm/modelSource",
            json!({"objectStore": {"uri": "ftp://m/x"}}),
        ), old: None, expect: Some("spec.vllm.modelSource.objectStore.uri: modelSource.objectStore.uri must start with") });
    }
    {
        cases.push(Case {
            name: "backend_endpoint_is_https/1",
            kind: Kind::InferenceBackend,
            object: with(
                &external_backend(),
                "/spec/external/endpoint",
                json!("http://api.mistral.ai/v1"),
            ),
            old: None,
            expect: Some(
                "spec.external.endpoint: external.endpoint must be an absolute https:// URL",
            ),
        });
    }
    {
        cases.push(Case { name: "backend_hosting_jurisdiction_is_a_code/1", kind: Kind::InferenceBackend, object: with(
            &external_backend(),
            "/spec/external/hostingJurisdiction",
            json!("fr"),
        ), old: None, expect: Some("spec.external.hostingJurisdiction: external.hostingJurisdiction must be EU or an ISO 3166-1 alpha-2") });
    }
    {
        cases.push(Case {
            name: "backend_currency_codes_are_three_capitals/1",
            kind: Kind::InferenceBackend,
            object: with(&external_backend(), "/spec/pricing/currency", json!("eur")),
            old: None,
            expect: Some(
                "spec.pricing.currency: pricing.currency must be an ISO 4217 currency code",
            ),
        });
        cases.push(Case {
            name: "backend_currency_codes_are_three_capitals/2",
            kind: Kind::InferenceBackend,
            object: with(
                &vllm_backend(),
                "/spec/vllm/gpuHourlyCost/currency",
                json!("EURO"),
            ),
            old: None,
            expect: Some(
                "spec.vllm.gpuHourlyCost.currency: currency must be an ISO 4217 currency code",
            ),
        });
    }
    {
        cases.push(Case {
            name: "backend_prices_are_non_negative_decimals/1",
            kind: Kind::InferenceBackend,
            object: with(
                &external_backend(),
                "/spec/pricing/inputPer1MTokens",
                json!("0"),
            ),
            old: None,
            expect: None,
        });
        cases.push(Case { name: "backend_prices_are_non_negative_decimals/2", kind: Kind::InferenceBackend, object: with(
            &external_backend(),
            "/spec/pricing/inputPer1MTokens",
            json!("-1.80"),
        ), old: None, expect: Some("spec.pricing.inputPer1MTokens: pricing.inputPer1MTokens must be a non-negative decimal") });
        cases.push(Case { name: "backend_prices_are_non_negative_decimals/3", kind: Kind::InferenceBackend, object: with(
            &external_backend(),
            "/spec/pricing/outputPer1MTokens",
            json!("5,40"),
        ), old: None, expect: Some("spec.pricing.outputPer1MTokens: pricing.outputPer1MTokens must be a non-negative decimal") });
        cases.push(Case {
            name: "backend_prices_are_non_negative_decimals/4",
            kind: Kind::InferenceBackend,
            object: with(
                &vllm_backend(),
                "/spec/vllm/gpuHourlyCost/amount",
                json!("-2"),
            ),
            old: None,
            expect: Some("spec.vllm.gpuHourlyCost.amount: amount must be a non-negative decimal"),
        });
    }
    {
        cases.push(Case {
            name: "backend_routing_weight_in_range/1",
            kind: Kind::InferenceBackend,
            object: with(&vllm_backend(), "/spec/routing/weight", json!(0)),
            old: None,
            expect: Some("spec.routing.weight: routing.weight must be between 1 and 1000"),
        });
    }
    {
        cases.push(Case {
            name: "policy_data_classes_non_empty/1",
            kind: Kind::ResidencyPolicy,
            object: with(&policy(), "/spec/dataClasses", json!([])),
            old: None,
            expect: Some("spec.dataClasses: dataClasses must list at least one data class"),
        });
    }
    {
        cases.push(Case {
            name: "policy_allowed_jurisdictions_required_and_valid/1",
            kind: Kind::ResidencyPolicy,
            object: with(&policy(), "/spec/residency", json!({"kind": "HomeRegion"})),
            old: None,
            expect: None,
        });
        cases.push(Case { name: "policy_allowed_jurisdictions_required_and_valid/2", kind: Kind::ResidencyPolicy, object: with(&policy(), "/spec/residency/allowedJurisdictions", json!([])), old: None, expect: Some("spec.residency: residency.allowedJurisdictions must list at least one jurisdiction") });
        cases.push(Case { name: "policy_allowed_jurisdictions_required_and_valid/3", kind: Kind::ResidencyPolicy, object: with(
            &policy(),
            "/spec/residency/allowedJurisdictions",
            json!(["EU", "india"]),
        ), old: None, expect: Some("spec.residency.allowedJurisdictions: residency.allowedJurisdictions entries must be EU or ISO 3166-1 alpha-2") });
    }
    {
        cases.push(Case {
            name: "policy_sinks_need_kinds_and_an_expression/1",
            kind: Kind::ResidencyPolicy,
            object: with(&policy(), "/spec/sinks/0/kinds", json!([])),
            old: None,
            expect: Some("spec.sinks[0].kinds: sinks[].kinds must list at least one kind"),
        });
        cases.push(Case {
            name: "policy_sinks_need_kinds_and_an_expression/2",
            kind: Kind::ResidencyPolicy,
            object: with(&policy(), "/spec/sinks/0/locationExpression", json!("")),
            old: None,
            expect: Some(
                "spec.sinks[0].locationExpression: sinks[].locationExpression must not be empty",
            ),
        });
    }
    {
        cases.push(Case {
            name: "budget_limit_needs_amount_or_tokens/1",
            kind: Kind::TokenBudget,
            object: with(&budget(), "/spec/limit", json!({"tokens": 5})),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "budget_limit_needs_amount_or_tokens/2",
            kind: Kind::TokenBudget,
            object: with(
                &budget(),
                "/spec/limit",
                json!({"amount": "1", "currency": "INR"}),
            ),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "budget_limit_needs_amount_or_tokens/3",
            kind: Kind::TokenBudget,
            object: with(&budget(), "/spec/limit", json!({})),
            old: None,
            expect: Some("spec.limit: limit must set amount (with currency) or tokens"),
        });
    }
    {
        cases.push(Case {
            name: "budget_amount_and_currency_go_together/1",
            kind: Kind::TokenBudget,
            object: with(&budget(), "/spec/limit", json!({"amount": "10"})),
            old: None,
            expect: Some("spec.limit: limit.amount and limit.currency must be set together"),
        });
    }
    {
        cases.push(Case {
            name: "budget_amounts_non_negative_and_currency_valid/1",
            kind: Kind::TokenBudget,
            object: with(&budget(), "/spec/limit/amount", json!("-5")),
            old: None,
            expect: Some("spec.limit.amount: limit.amount must be a non-negative decimal"),
        });
        cases.push(Case {
            name: "budget_amounts_non_negative_and_currency_valid/2",
            kind: Kind::TokenBudget,
            object: with(&budget(), "/spec/limit/currency", json!("E1R")),
            old: None,
            expect: Some("spec.limit.currency: limit.currency must be an ISO 4217 currency code"),
        });
        cases.push(Case {
            name: "budget_amounts_non_negative_and_currency_valid/3",
            kind: Kind::TokenBudget,
            object: with(&budget(), "/spec/limit/tokens", json!(-1)),
            old: None,
            expect: Some("spec.limit.tokens: limit.tokens must not be negative"),
        });
    }
    {
        cases.push(Case {
            name: "budget_thresholds_between_1_and_1000_percent/1",
            kind: Kind::TokenBudget,
            object: with(
                &budget(),
                "/spec/thresholds",
                json!([{"percent": 1}, {"percent": 1000}]),
            ),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "budget_thresholds_between_1_and_1000_percent/2",
            kind: Kind::TokenBudget,
            object: with(&budget(), "/spec/thresholds", json!([{"percent": 0}])),
            old: None,
            expect: Some(
                "spec.thresholds[0].percent: thresholds[].percent must be between 1 and 1000",
            ),
        });
        cases.push(Case {
            name: "budget_thresholds_between_1_and_1000_percent/3",
            kind: Kind::TokenBudget,
            object: with(&budget(), "/spec/thresholds", json!([{"percent": 1001}])),
            old: None,
            expect: Some(
                "spec.thresholds[0].percent: thresholds[].percent must be between 1 and 1000",
            ),
        });
    }
    {
        cases.push(Case {
            name: "budget_threshold_requests_per_minute_positive/1",
            kind: Kind::TokenBudget,
            object: with(
                &budget(),
                "/spec/thresholds",
                json!([{"percent": 80, "action": "Throttle", "requestsPerMinute": 0}]),
            ),
            old: None,
            expect: Some("spec.thresholds[0].requestsPerMinute: thresholds[].requestsPerMinute must be at least 1"),
        });
    }
    {
        cases.push(Case {
            name: "budget_thresholds_unique/1",
            kind: Kind::TokenBudget,
            object: with(
                &budget(),
                "/spec/thresholds",
                json!([{"percent": 80}, {"percent": 80, "action": "Block"}]),
            ),
            old: None,
            expect: Some("spec.thresholds: thresholds must not repeat a percent"),
        });
    }
    {
        cases.push(Case {
            name: "budget_thresholds_ascending/1",
            kind: Kind::TokenBudget,
            object: with(
                &budget(),
                "/spec/thresholds",
                json!([{"percent": 80}, {"percent": 50}]),
            ),
            old: None,
            expect: Some("spec.thresholds: thresholds must be in ascending order of percent"),
        });
    }
    {
        cases.push(Case {
            name: "budget_downgrade_needs_a_target/1",
            kind: Kind::TokenBudget,
            object: with(&budget(), "/spec/thresholds/1/downgradeTo", Value::Null),
            old: None,
            expect: Some(
                "spec.thresholds[1]: thresholds[].downgradeTo is required when action is Downgrade",
            ),
        });
    }
    {
        cases.push(Case {
            name: "budget_time_zone_is_an_iana_name/1",
            kind: Kind::TokenBudget,
            object: with(&budget(), "/spec/timeZone", json!("Asia/Kolkata")),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "budget_time_zone_is_an_iana_name/2",
            kind: Kind::TokenBudget,
            object: with(&budget(), "/spec/timeZone", json!("+05:30")),
            old: None,
            expect: Some("spec.timeZone: timeZone must be an IANA time zone name"),
        });
    }
    {
        cases.push(Case {
            name: "backend_extra_args_without_removed_flags/1",
            kind: Kind::InferenceBackend,
            object: with(
                &vllm_backend(),
                "/spec/vllm/extraArgs",
                json!(["--enable-log-requests", "--enable-prefix-caching"]),
            ),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "backend_extra_args_without_removed_flags/2",
            kind: Kind::InferenceBackend,
            object: with(
                &vllm_backend(),
                "/spec/vllm/extraArgs",
                json!(["--enable-prefix-caching", "--disable-log-requests"]),
            ),
            old: None,
            expect: Some(
                "spec.vllm.extraArgs: vllm.extraArgs: --disable-log-requests was removed in vLLM 0.32",
            ),
        });
    }
    {
        cases.push(Case {
            name: "backend_cache_and_shm_sizes_are_positive_quantities/1",
            kind: Kind::InferenceBackend,
            object: with(
                &with(&vllm_backend(), "/spec/vllm/cacheSize", json!("400Gi")),
                "/spec/vllm/shmSize",
                json!("16Gi"),
            ),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "backend_cache_and_shm_sizes_are_positive_quantities/2",
            kind: Kind::InferenceBackend,
            object: with(&vllm_backend(), "/spec/vllm/cacheSize", json!("0")),
            old: None,
            expect: Some("spec.vllm.cacheSize: vllm.cacheSize must be a positive quantity"),
        });
        cases.push(Case {
            name: "backend_cache_and_shm_sizes_are_positive_quantities/3",
            kind: Kind::InferenceBackend,
            object: with(&vllm_backend(), "/spec/vllm/shmSize", json!("lots")),
            old: None,
            expect: Some("spec.vllm.shmSize: vllm.shmSize must be a positive quantity"),
        });
    }
    {
        let hosts = with(
            &region(),
            "/spec/inRegionHosts",
            json!(["*.eu.example.com", "hf-mirror.models.svc"]),
        );
        cases.push(Case {
            name: "region_hugging_face_mirror_is_an_http_url/1",
            kind: Kind::SovereignRegion,
            object: with(
                &hosts,
                "/spec/huggingFaceMirror",
                json!("http://hf-mirror.models.svc:8080"),
            ),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "region_hugging_face_mirror_is_an_in_region_host/1",
            kind: Kind::SovereignRegion,
            object: with(
                &hosts,
                "/spec/huggingFaceMirror",
                json!("https://hub.eu.example.com"),
            ),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "region_hugging_face_mirror_is_an_in_region_host/2",
            kind: Kind::SovereignRegion,
            object: with(
                &hosts,
                "/spec/huggingFaceMirror",
                json!("https://huggingface.co"),
            ),
            old: None,
            expect: Some(
                "huggingFaceMirror must be served from inside the region: its host must match one of inRegionHosts",
            ),
        });
        cases.push(Case {
            name: "region_hugging_face_mirror_is_an_in_region_host/3",
            kind: Kind::SovereignRegion,
            object: with(
                &region(),
                "/spec/huggingFaceMirror",
                json!("https://hub.eu.example.com"),
            ),
            old: None,
            expect: Some(
                "huggingFaceMirror must be served from inside the region: its host must match one of inRegionHosts",
            ),
        });
        cases.push(Case {
            name: "region_hugging_face_mirror_is_an_http_url/2",
            kind: Kind::SovereignRegion,
            object: with(&region(), "/spec/huggingFaceMirror", json!("hf-mirror.eu")),
            old: None,
            expect: Some(
                "spec.huggingFaceMirror: huggingFaceMirror must be an absolute http:// or https:// URL",
            ),
        });
    }
    {
        cases.push(Case {
            name: "region_scrape_namespaces_are_namespace_names/1",
            kind: Kind::SovereignRegion,
            object: with(
                &region(),
                "/spec/monitoring",
                json!({"scrapeNamespaces": ["ops", "kube-prometheus"], "podMonitor": {"labels": {"release": "kps"}}}),
            ),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "region_scrape_namespaces_are_namespace_names/2",
            kind: Kind::SovereignRegion,
            object: with(
                &region(),
                "/spec/monitoring",
                json!({"scrapeNamespaces": ["Monitoring"]}),
            ),
            old: None,
            expect: Some(
                "spec.monitoring.scrapeNamespaces: monitoring.scrapeNamespaces entries must be namespace names",
            ),
        });
    }
    {
        let proxy = json!({"cidrs": ["10.20.0.0/16"], "hosts": ["api.mistral.ai"], "proxy": {
            "url": "http://egress-proxy.egress.svc:3128", "namespace": "egress", "port": 3128
        }});
        cases.push(Case {
            name: "region_egress_proxy_is_well_formed/1",
            kind: Kind::SovereignRegion,
            object: with(&region(), "/spec/egress", proxy.clone()),
            old: None,
            expect: None,
        });
        cases.push(Case {
            name: "region_egress_proxy_is_well_formed/2",
            kind: Kind::SovereignRegion,
            object: with(
                &with(&region(), "/spec/egress", proxy.clone()),
                "/spec/egress/proxy/port",
                json!(0),
            ),
            old: None,
            expect: Some("spec.egress.proxy.port: egress.proxy.port must be between 1 and 65535"),
        });
        cases.push(Case {
            name: "region_egress_proxy_is_well_formed/3",
            kind: Kind::SovereignRegion,
            object: with(
                &with(&region(), "/spec/egress", proxy.clone()),
                "/spec/egress/proxy/url",
                json!("egress-proxy:3128"),
            ),
            old: None,
            expect: Some(
                "spec.egress.proxy.url: egress.proxy.url must be an absolute http:// or https:// URL",
            ),
        });
        cases.push(Case {
            name: "region_egress_proxy_is_well_formed/4",
            kind: Kind::SovereignRegion,
            object: with(
                &with(&region(), "/spec/egress", proxy),
                "/spec/egress/proxy/namespace",
                json!("Egress_NS"),
            ),
            old: None,
            expect: Some("spec.egress.proxy.namespace: egress.proxy.namespace must be a DNS label"),
        });
    }
    cases
}
