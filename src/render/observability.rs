//! The region's observability pipeline: an OpenTelemetry collector inside the region namespace
//! that receives the stack's traces, metrics and logs and exports them to the region's own OTLP
//! endpoint, and nowhere else.
//!
//! The collector is the single exit for telemetry: the gateway and other components send to it
//! ([`otlp_collector_endpoint`]), it stamps every resource with the region and jurisdiction, and
//! its configuration has exactly one exporter — the in-region endpoint the SovereignRegion names
//! (which the schema requires to be HTTPS and the residency rules require to be an in-region
//! host). There is deliberately no `debug` / `logging` exporter: telemetry can carry prompts and
//! user data, and a second exporter is a second place it could land. With
//! `observability.caBundle` the exporter trusts that CA bundle (mounted from the region's
//! ConfigMap) instead of the image's public roots.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, KeyToPath, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::{Value, json};

use super::{Child, Owner, RenderError, content_hash, k8s, pod};
use crate::api::common::ConfigMapKeyReference;
use crate::api::region::{LogLevel, SovereignRegion};

/// `app.kubernetes.io/component` of the collector's objects.
pub const COMPONENT: &str = "observability";
/// Name of the collector's ConfigMap, Deployment and Service.
pub const COLLECTOR: &str = "otel-collector";
/// The collector image: the contrib distribution (which has the `resource` processor) at the
/// version the e2e suite builds and runs (`versions.env`).
pub fn collector_image() -> String {
    crate::api::versions::collector_image()
}
/// OTLP over gRPC.
pub const OTLP_GRPC_PORT: i32 = 4317;
/// OTLP over HTTP.
pub const OTLP_HTTP_PORT: i32 = 4318;
/// Port of the collector's `health_check` extension.
pub const HEALTH_PORT: i32 = 13133;
/// Key of the configuration file in the ConfigMap.
pub const CONFIG_KEY: &str = "config.yaml";
/// Pod-template annotation carrying the hash of the configuration, so that the Deployment rolls
/// exactly when the configuration changes (a mounted ConfigMap alone would not restart it).
pub const CONFIG_HASH_ANNOTATION: &str = "sovereign.ai/config-hash";
/// Resource attribute naming the SovereignRegion the telemetry came from.
pub const REGION_ATTRIBUTE: &str = "sovereign.region";
/// Resource attribute naming the jurisdiction the telemetry came from.
pub const JURISDICTION_ATTRIBUTE: &str = "sovereign.jurisdiction";

/// The collector's user: the non-root uid of the upstream collector images.
const COLLECTOR_UID: i64 = 10001;
/// Where the configuration is mounted (the image's default config directory).
const CONFIG_DIR: &str = "/etc/otelcol-contrib";
/// Volume of the OTLP endpoint's CA bundle.
const CA_VOLUME: &str = "otlp-ca";
/// Where the CA bundle is mounted: a directory of its own, not under the configuration's mount
/// (a mount point inside a read-only ConfigMap volume cannot be created).
const CA_DIR: &str = "/etc/otelcol-tls";
/// File name of the CA bundle in [`CA_DIR`], whatever the ConfigMap's key is called.
const CA_FILE: &str = "ca.crt";

/// The region's CA bundle for its OTLP endpoint, when it names one.
fn ca_bundle(region: &SovereignRegion) -> Option<&ConfigMapKeyReference> {
    region
        .spec
        .observability
        .as_ref()
        .and_then(|o| o.ca_bundle.as_ref())
}

/// The region's OTLP endpoint, when observability is configured.
fn otlp_endpoint(region: &SovereignRegion) -> Option<&str> {
    region
        .spec
        .observability
        .as_ref()
        .and_then(|o| o.otlp_endpoint.as_deref())
        .filter(|e| !e.is_empty())
}

/// The collector's ConfigMap, Deployment and Service, or nothing when the region names no OTLP
/// endpoint (then there is nowhere in-region to send telemetry, and the stack sends none).
///
/// Fails only if the configuration cannot be serialised, which would be a bug; it is reported
/// rather than panicking.
pub fn observability(region: &SovereignRegion, owner: &Owner) -> Result<Vec<Child>, RenderError> {
    let Some(endpoint) = otlp_endpoint(region) else {
        return Ok(Vec::new());
    };
    let ns = region.stack_namespace();
    let config = collector_config(region, owner, endpoint)?;
    let hash = content_hash(&config);

    let config_map = ConfigMap {
        metadata: owner.meta(COMPONENT, COLLECTOR, Some(&ns)),
        data: Some(BTreeMap::from([(CONFIG_KEY.to_owned(), config)])),
        ..ConfigMap::default()
    };
    Ok(vec![
        Child::from(config_map),
        Child::from(deployment(region, owner, &ns, &hash)),
        Child::from(service(owner, &ns)),
    ])
}

/// In-cluster OTLP/gRPC URL of the region's collector, for the gateway's OTEL settings; None when
/// the region has no collector. OTLP/HTTP is served on port 4318 of the same Service.
pub fn otlp_collector_endpoint(region: &SovereignRegion) -> Option<String> {
    otlp_endpoint(region)?;
    Some(format!(
        "http://{COLLECTOR}.{}.svc:{OTLP_GRPC_PORT}",
        region.stack_namespace()
    ))
}

/// In-cluster OTLP/HTTP base URL of the region's collector (port 4318; signal paths such as
/// `/v1/traces` go after it), or None when the region has no collector. The gateway and vLLM
/// send over HTTP: their OTLP/HTTP exporters need no gRPC runtime in the image.
pub fn otlp_http_collector_endpoint(region: &SovereignRegion) -> Option<String> {
    otlp_endpoint(region)?;
    Some(format!(
        "http://{COLLECTOR}.{}.svc:{OTLP_HTTP_PORT}",
        region.stack_namespace()
    ))
}

/// The exporter for `endpoint`: `otlp_http` when it is the conventional OTLP/HTTP port 4318,
/// `otlp_grpc` otherwise, which is the default transport of OTLP. Either way exactly one. These
/// are the component names of collector 0.165 (`otlp` / `otlphttp` are deprecated aliases).
fn exporter_kind(endpoint: &str) -> &'static str {
    let authority = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest)
        .split('/')
        .next()
        .unwrap_or_default();
    if authority.ends_with(&format!(":{OTLP_HTTP_PORT}")) {
        "otlp_http"
    } else {
        "otlp_grpc"
    }
}

/// The exporter's settings: the endpoint, and with a CA bundle the file the collector reads its
/// trusted roots from (`tls.ca_file` replaces the system roots, it does not add to them: only
/// the region's CA can vouch for the endpoint).
fn exporter_config(region: &SovereignRegion, endpoint: &str) -> Value {
    match ca_bundle(region) {
        Some(_) => json!({
            "endpoint": endpoint,
            "tls": { "ca_file": format!("{CA_DIR}/{CA_FILE}") },
        }),
        None => json!({ "endpoint": endpoint }),
    }
}

/// The collector's own log level, from the region's.
fn log_level(region: &SovereignRegion) -> &'static str {
    match region
        .spec
        .observability
        .as_ref()
        .map(|o| o.log_level)
        .unwrap_or_default()
    {
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

/// The collector configuration as YAML. Keys are emitted in sorted order (serde_json's map is
/// ordered), so the same region always gives the same bytes and the same hash.
pub fn collector_config(
    region: &SovereignRegion,
    owner: &Owner,
    endpoint: &str,
) -> Result<String, RenderError> {
    let exporter = exporter_kind(endpoint);
    let home = region.metadata.name.as_deref().unwrap_or(&owner.region);
    let pipeline = json!({
        "receivers": ["otlp"],
        // memory_limiter first so that back-pressure happens before anything is buffered;
        // batch last, as the collector documentation recommends.
        "processors": ["memory_limiter", "resource/sovereign", "batch"],
        "exporters": [exporter],
    });
    let config: Value = json!({
        "extensions": {
            "health_check": { "endpoint": format!("0.0.0.0:{HEALTH_PORT}") },
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": { "endpoint": format!("0.0.0.0:{OTLP_GRPC_PORT}") },
                    "http": { "endpoint": format!("0.0.0.0:{OTLP_HTTP_PORT}") },
                },
            },
        },
        "processors": {
            // Percentages of the container memory limit the Deployment sets.
            "memory_limiter": {
                "check_interval": "1s",
                "limit_percentage": 80,
                "spike_limit_percentage": 20,
            },
            "batch": {},
            // `upsert`: the collector knows where it runs; a client claiming another region or
            // jurisdiction is overwritten, not believed.
            "resource/sovereign": {
                "attributes": [
                    { "key": REGION_ATTRIBUTE, "value": home, "action": "upsert" },
                    { "key": JURISDICTION_ATTRIBUTE, "value": region.spec.jurisdiction, "action": "upsert" },
                ],
            },
        },
        "exporters": {
            (exporter): exporter_config(region, endpoint),
        },
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "traces": pipeline,
                "metrics": pipeline,
                "logs": pipeline,
            },
            "telemetry": {
                "logs": { "level": log_level(region) },
            },
        },
    });
    serde_yaml_ng::to_string(&config).map_err(|e| RenderError::Serialize {
        what: format!("{COLLECTOR} configuration"),
        message: e.to_string(),
    })
}

/// A probe of the collector's `health_check` extension.
fn health_probe(period: i32, failures: i32) -> Probe {
    k8s::http_probe("/", HEALTH_PORT, period, failures, Some(5))
}

/// The collector Deployment: one replica (it is stateless and only buffers briefly), pinned to
/// the region, restricted, read-only root, rolling when its configuration hash changes.
fn deployment(region: &SovereignRegion, owner: &Owner, ns: &str, hash: &str) -> Deployment {
    let selector = owner.selector(COMPONENT);
    let container = Container {
        name: COLLECTOR.to_owned(),
        image: Some(collector_image()),
        args: Some(vec![format!("--config={CONFIG_DIR}/{CONFIG_KEY}")]),
        ports: Some(vec![
            k8s::container_port("otlp-grpc", OTLP_GRPC_PORT, Some("TCP")),
            k8s::container_port("otlp-http", OTLP_HTTP_PORT, Some("TCP")),
            k8s::container_port("health", HEALTH_PORT, Some("TCP")),
        ]),
        readiness_probe: Some(health_probe(5, 3)),
        liveness_probe: Some(health_probe(10, 6)),
        // A memory limit, because memory_limiter works in percentages of it.
        resources: Some(ResourceRequirements {
            requests: Some(BTreeMap::from([
                ("cpu".to_owned(), Quantity("100m".to_owned())),
                ("memory".to_owned(), Quantity("256Mi".to_owned())),
            ])),
            limits: Some(BTreeMap::from([(
                "memory".to_owned(),
                Quantity("512Mi".to_owned()),
            )])),
            ..ResourceRequirements::default()
        }),
        security_context: Some(pod::restricted_container_security(true)),
        volume_mounts: Some(volume_mounts(region)),
        ..Container::default()
    };
    Deployment {
        metadata: owner.meta(COMPONENT, COLLECTOR, Some(ns)),
        spec: Some(DeploymentSpec {
            replicas: Some(1),
            selector: k8s::match_labels(&selector),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.to_owned(),
                        hash.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    affinity: Some(pod::region_affinity(region, Vec::new())),
                    node_selector: pod::region_node_selector(region),
                    tolerations: pod::region_tolerations(region, Vec::new()),
                    security_context: Some(pod::restricted_pod_security(COLLECTOR_UID)),
                    // The collector needs no Kubernetes API access (no k8sattributes processor).
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    volumes: Some(volumes(region)),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The configuration, and the CA bundle when the region names one.
fn volume_mounts(region: &SovereignRegion) -> Vec<k8s_openapi::api::core::v1::VolumeMount> {
    let mut mounts = vec![k8s::mount("config", CONFIG_DIR, true)];
    if ca_bundle(region).is_some() {
        mounts.push(k8s::mount(CA_VOLUME, CA_DIR, true));
    }
    mounts
}

/// The configuration's ConfigMap, and the key of the CA bundle's ConfigMap as [`CA_FILE`]. Not
/// optional: without its CA the exporter could not verify the endpoint, so the pod waits for the
/// ConfigMap rather than starting with an exporter that fails every export.
fn volumes(region: &SovereignRegion) -> Vec<k8s_openapi::api::core::v1::Volume> {
    let mut volumes = vec![k8s::config_map_volume("config", COLLECTOR)];
    if let Some(bundle) = ca_bundle(region) {
        let mut volume = k8s::config_map_volume(CA_VOLUME, &bundle.name);
        if let Some(source) = volume.config_map.as_mut() {
            source.items = Some(vec![KeyToPath {
                key: bundle.key.clone(),
                path: CA_FILE.to_owned(),
                mode: None,
            }]);
        }
        volumes.push(volume);
    }
    volumes
}

/// The collector's Service: OTLP gRPC and HTTP, for the stack's components.
fn service(owner: &Owner, ns: &str) -> Service {
    // Each port targets the container port of the same name.
    let port = |name: &str, number: i32| {
        k8s::service_port(
            name,
            number,
            IntOrString::String(name.to_owned()),
            Some("TCP"),
        )
    };
    k8s::service(
        owner.meta(COMPONENT, COLLECTOR, Some(ns)),
        &owner.selector(COMPONENT),
        vec![
            port("otlp-grpc", OTLP_GRPC_PORT),
            port("otlp-http", OTLP_HTTP_PORT),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::{
        deployment as deployment_of, example_region, owner, required_region_requirements,
    };

    fn config_of(children: &[Child]) -> (String, Value) {
        let text = children
            .iter()
            .find_map(|c| match c {
                Child::ConfigMap(m) => m.data.as_ref().map(|d| d[CONFIG_KEY].clone()),
                _ => None,
            })
            .expect("collector config");
        let value = serde_yaml_ng::from_str(&text).expect("config is YAML");
        (text, value)
    }

    #[test]
    fn collector_objects_for_the_eu_example() {
        let children = observability(&example_region("eu"), &owner("eu")).expect("renders");
        let names: Vec<String> = children.iter().map(Child::describe).collect();
        assert_eq!(
            names,
            [
                "ConfigMap/sovereign-eu/otel-collector",
                "Deployment/sovereign-eu/otel-collector",
                "Service/sovereign-eu/otel-collector",
            ]
        );
        for child in &children {
            let labels = child.kind_and_meta().1.labels.as_ref().expect("labels");
            assert_eq!(labels["app.kubernetes.io/component"], "observability");
        }
    }

    #[test]
    fn the_only_exporter_is_the_region_endpoint() {
        let children = observability(&example_region("eu"), &owner("eu")).expect("renders");
        let (text, config) = config_of(&children);
        let exporters = config["exporters"].as_object().expect("exporters");
        assert_eq!(exporters.len(), 1, "exactly one exporter: {exporters:?}");
        assert_eq!(
            config["exporters"]["otlp_grpc"]["endpoint"],
            "https://otel.eu.observability.example.com:4317"
        );
        assert!(!text.contains("debug") && !text.contains("logging:"));
        for signal in ["traces", "metrics", "logs"] {
            let pipeline = &config["service"]["pipelines"][signal];
            assert_eq!(pipeline["receivers"], json!(["otlp"]));
            assert_eq!(pipeline["exporters"], json!(["otlp_grpc"]));
            assert_eq!(
                pipeline["processors"],
                json!(["memory_limiter", "resource/sovereign", "batch"])
            );
        }
        assert_eq!(
            config["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"],
            "0.0.0.0:4317"
        );
        assert_eq!(
            config["receivers"]["otlp"]["protocols"]["http"]["endpoint"],
            "0.0.0.0:4318"
        );
        assert_eq!(
            config["extensions"]["health_check"]["endpoint"],
            "0.0.0.0:13133"
        );
    }

    #[test]
    fn resources_are_stamped_with_region_and_jurisdiction() {
        let children = observability(&example_region("in"), &owner("in")).expect("renders");
        let (_, config) = config_of(&children);
        assert_eq!(
            config["processors"]["resource/sovereign"]["attributes"],
            json!([
                { "key": "sovereign.region", "value": "in", "action": "upsert" },
                { "key": "sovereign.jurisdiction", "value": "IN", "action": "upsert" },
            ])
        );
        assert_eq!(
            config["exporters"]["otlp_grpc"]["endpoint"],
            "https://otel.in.observability.example.com:4317"
        );
    }

    #[test]
    fn an_http_endpoint_gets_the_http_exporter_still_alone() {
        let mut r = example_region("eu");
        if let Some(o) = r.spec.observability.as_mut() {
            o.otlp_endpoint = Some("https://otel.eu.observability.example.com:4318".into());
        }
        let (_, config) = config_of(&observability(&r, &owner("eu")).expect("renders"));
        let exporters = config["exporters"].as_object().expect("exporters");
        assert_eq!(exporters.keys().collect::<Vec<_>>(), ["otlp_http"]);
        assert_eq!(
            config["service"]["pipelines"]["traces"]["exporters"],
            json!(["otlp_http"])
        );
    }

    #[test]
    fn deployment_is_pinned_restricted_and_rolls_with_its_config() {
        let r = example_region("eu");
        let children = observability(&r, &owner("eu")).expect("renders");
        let (text, _) = config_of(&children);
        let deployment = deployment_of(&children);
        let spec = deployment.spec.as_ref().expect("spec");
        assert_eq!(
            spec.selector.match_labels,
            Some(owner("eu").selector("observability"))
        );
        let template_meta = spec.template.metadata.as_ref().expect("template metadata");
        assert_eq!(
            template_meta.labels,
            Some(owner("eu").selector("observability"))
        );
        assert_eq!(
            template_meta
                .annotations
                .as_ref()
                .map(|a| a[CONFIG_HASH_ANNOTATION].clone()),
            Some(content_hash(&text))
        );
        let pod = spec.template.spec.as_ref().expect("pod spec");
        let requirements = required_region_requirements(pod);
        assert_eq!(requirements[0].values.as_ref(), Some(&r.spec.locations));
        let container = &pod.containers[0];
        assert_eq!(container.image, Some(collector_image()));
        assert_eq!(
            container.image.as_deref(),
            Some(&*format!(
                "otel/opentelemetry-collector-contrib:{}",
                crate::api::versions::version("OTELCOL_CONTRIB_VERSION").expect("in versions.env")
            )),
            "the default collector image is the version the e2e builds"
        );
        let security = container.security_context.as_ref().expect("security");
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(
            pod.security_context
                .as_ref()
                .and_then(|s| s.run_as_non_root),
            Some(true)
        );
        let probe_port = container
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .map(|h| h.port.clone());
        assert_eq!(probe_port, Some(IntOrString::Int(13133)));
    }

    #[test]
    fn a_config_change_changes_the_hash() {
        let hash = |r: &SovereignRegion| {
            let children = observability(r, &owner("eu")).expect("renders");
            deployment_of(&children)
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .map(|a| a[CONFIG_HASH_ANNOTATION].clone())
                .expect("hash")
        };
        let before = example_region("eu");
        let mut after = example_region("eu");
        if let Some(o) = after.spec.observability.as_mut() {
            o.otlp_endpoint = Some("https://otel2.eu.observability.example.com:4317".into());
        }
        assert_ne!(hash(&before), hash(&after));
        assert_eq!(hash(&before), hash(&example_region("eu")));
    }

    #[test]
    fn service_serves_both_otlp_ports() {
        let children = observability(&example_region("eu"), &owner("eu")).expect("renders");
        let spec = children
            .iter()
            .find_map(|c| match c {
                Child::Service(s) => s.spec.clone(),
                _ => None,
            })
            .expect("service");
        let ports: Vec<i32> = spec.ports.iter().flatten().map(|p| p.port).collect();
        assert_eq!(ports, [4317, 4318]);
        assert_eq!(spec.selector, Some(owner("eu").selector("observability")));
    }

    fn with_ca_bundle(mut r: SovereignRegion) -> SovereignRegion {
        if let Some(o) = r.spec.observability.as_mut() {
            o.ca_bundle = Some(ConfigMapKeyReference {
                name: "otlp-ca".into(),
                key: "bundle.pem".into(),
            });
        }
        r
    }

    #[test]
    fn a_ca_bundle_is_what_the_exporter_trusts() {
        let r = with_ca_bundle(example_region("eu"));
        let children = observability(&r, &owner("eu")).expect("renders");
        let (_, config) = config_of(&children);
        assert_eq!(
            config["exporters"]["otlp_grpc"],
            json!({"endpoint": "https://otel.eu.observability.example.com:4317",
                   "tls": {"ca_file": "/etc/otelcol-tls/ca.crt"}})
        );
        let pod = deployment_of(&children)
            .spec
            .clone()
            .and_then(|s| s.template.spec)
            .expect("pod spec");
        let volume = pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "otlp-ca")
            .and_then(|v| v.config_map.clone())
            .expect("a volume of the CA bundle");
        assert_eq!(volume.name, "otlp-ca");
        assert_eq!(volume.optional, None, "the pod waits for its CA");
        assert_eq!(
            volume.items,
            Some(vec![KeyToPath {
                key: "bundle.pem".into(),
                path: "ca.crt".into(),
                mode: None
            }])
        );
        let mount = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "otlp-ca")
            .expect("the CA bundle is mounted");
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            ("/etc/otelcol-tls", Some(true))
        );
    }

    #[test]
    fn the_http_exporter_trusts_the_ca_bundle_too() {
        let mut r = with_ca_bundle(example_region("eu"));
        if let Some(o) = r.spec.observability.as_mut() {
            o.otlp_endpoint = Some("https://otel.eu.observability.example.com:4318".into());
        }
        let (_, config) = config_of(&observability(&r, &owner("eu")).expect("renders"));
        assert_eq!(
            config["exporters"]["otlp_http"]["tls"]["ca_file"],
            "/etc/otelcol-tls/ca.crt"
        );
    }

    #[test]
    fn without_a_ca_bundle_the_exporter_uses_the_image_roots() {
        let children = observability(&example_region("eu"), &owner("eu")).expect("renders");
        let (_, config) = config_of(&children);
        assert_eq!(config["exporters"]["otlp_grpc"].get("tls"), None);
        let pod = deployment_of(&children)
            .spec
            .clone()
            .and_then(|s| s.template.spec)
            .expect("pod spec");
        let volumes: Vec<&str> = pod
            .volumes
            .iter()
            .flatten()
            .map(|v| v.name.as_str())
            .collect();
        assert_eq!(volumes, ["config"]);
    }

    #[test]
    fn a_new_ca_bundle_rolls_the_collector() {
        let hash = |r: &SovereignRegion| {
            let children = observability(r, &owner("eu")).expect("renders");
            deployment_of(&children)
                .spec
                .as_ref()
                .and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref())
                .map(|a| a[CONFIG_HASH_ANNOTATION].clone())
                .expect("hash")
        };
        assert_ne!(
            hash(&example_region("eu")),
            hash(&with_ca_bundle(example_region("eu")))
        );
    }

    #[test]
    fn no_endpoint_means_no_collector() {
        let mut r = example_region("eu");
        if let Some(o) = r.spec.observability.as_mut() {
            o.otlp_endpoint = None;
        }
        assert_eq!(observability(&r, &owner("eu")), Ok(Vec::new()));
        assert_eq!(otlp_collector_endpoint(&r), None);
        r.spec.observability = None;
        assert_eq!(observability(&r, &owner("eu")), Ok(Vec::new()));
        assert_eq!(otlp_collector_endpoint(&r), None);
    }

    #[test]
    fn collector_endpoint_is_in_the_region_namespace() {
        assert_eq!(
            otlp_collector_endpoint(&example_region("eu")).as_deref(),
            Some("http://otel-collector.sovereign-eu.svc:4317")
        );
    }

    #[test]
    fn rendering_is_deterministic() {
        let a = observability(&example_region("eu"), &owner("eu")).expect("renders");
        let b = observability(&example_region("eu"), &owner("eu")).expect("renders");
        assert_eq!(config_of(&a).0, config_of(&b).0);
        assert_eq!(
            serde_json::to_string(&a).expect("json"),
            serde_json::to_string(&b).expect("json")
        );
    }
}
