//! Small constructors for Kubernetes objects the builders share.
//!
//! Each fills in exactly the fields its parameters name and leaves every other field unset, so
//! the rendered objects carry no defaults the API server would add anyway.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, Probe, ResourceRequirements, SecretKeySelector, Service, ServicePort,
    ServiceSpec, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// A selector on exact label values (no expressions).
pub fn match_labels(labels: &BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: Some(labels.clone()),
        match_expressions: None,
    }
}

/// An `emptyDir` volume `name`; `medium` `Some("Memory")` puts it in RAM (tmpfs), None on the
/// node's disk.
pub fn empty_dir(name: &str, medium: Option<&str>) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            medium: medium.map(str::to_owned),
            size_limit: None,
        }),
        ..Volume::default()
    }
}

/// An `emptyDir` volume `name` that may hold at most `size_limit` (a quantity): the kubelet
/// evicts a pod that writes more, instead of letting it fill the node's disk (or, for
/// `medium` Memory, its RAM).
pub fn sized_empty_dir(name: &str, medium: Option<&str>, size_limit: &str) -> Volume {
    let mut volume = empty_dir(name, medium);
    if let Some(dir) = volume.empty_dir.as_mut() {
        dir.size_limit = Some(Quantity(size_limit.to_owned()));
    }
    volume
}

/// CPU and memory requests (no limits): a pod with requests is at least Burstable, never the
/// BestEffort pod evicted first under node pressure. `resources` from the spec win where they
/// name the same resource.
pub fn with_default_requests(
    resources: Option<&ResourceRequirements>,
    cpu: &str,
    memory: &str,
) -> ResourceRequirements {
    let mut out = resources.cloned().unwrap_or_default();
    let requests = out.requests.get_or_insert_with(BTreeMap::new);
    requests
        .entry("cpu".to_owned())
        .or_insert_with(|| Quantity(cpu.to_owned()));
    requests
        .entry("memory".to_owned())
        .or_insert_with(|| Quantity(memory.to_owned()));
    out
}

/// A volume `name` holding the files of ConfigMap `config_map`.
pub fn config_map_volume(name: &str, config_map: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: config_map.to_owned(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// Volume `name` holding the keys of ConfigMap `config_map`, which need not exist.
pub fn optional_config_map_volume(name: &str, config_map: &str) -> Volume {
    let mut volume = config_map_volume(name, config_map);
    if let Some(source) = volume.config_map.as_mut() {
        source.optional = Some(true);
    }
    volume
}

/// Mounts volume `name` at `path`. A read-only mount says `readOnly: true`; a writable one leaves
/// the field unset (the API default, false).
pub fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// An environment variable with a literal value.
pub fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        value_from: None,
    }
}

/// An environment variable read from key `key` of Secret `secret`. `optional` `Some(false)`
/// states that the pod must not start without it; None leaves the field unset (which the API
/// treats the same way).
pub fn secret_env(name: &str, secret: &str, key: &str, optional: Option<bool>) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: None,
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.to_owned(),
                key: key.to_owned(),
                optional,
            }),
            ..EnvVarSource::default()
        }),
    }
}

/// Container port `port`, named `name` (so Services can target it by name). `protocol` None
/// leaves the field unset (the API default, TCP).
pub fn container_port(name: &str, port: i32, protocol: Option<&str>) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: protocol.map(str::to_owned),
        ..ContainerPort::default()
    }
}

/// Service port `port`, named `name`, forwarding to `target_port` of the pods (a number, or
/// the name of a container port). `protocol` None leaves the field unset (the API default, TCP).
pub fn service_port(
    name: &str,
    port: i32,
    target_port: IntOrString,
    protocol: Option<&str>,
) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port,
        target_port: Some(target_port),
        protocol: protocol.map(str::to_owned),
        ..ServicePort::default()
    }
}

/// A Service with `metadata` that sends `ports` to the pods `selector` matches.
pub fn service(
    metadata: ObjectMeta,
    selector: &BTreeMap<String, String>,
    ports: Vec<ServicePort>,
) -> Service {
    Service {
        metadata,
        spec: Some(ServiceSpec {
            selector: Some(selector.clone()),
            ports: Some(ports),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// A Service with `metadata` and one port, `http`, that forwards `port` to the same port number
/// of the pods `selector` matches.
pub fn http_service(
    metadata: ObjectMeta,
    selector: &BTreeMap<String, String>,
    port: i32,
) -> Service {
    service(
        metadata,
        selector,
        vec![service_port("http", port, IntOrString::Int(port), None)],
    )
}

/// How many pods a PodDisruptionBudget keeps, or lets go, during voluntary disruptions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disruption {
    /// At least this many pods stay available (`minAvailable`).
    MinAvailable(i32),
    /// At most this many pods are unavailable at once (`maxUnavailable`).
    MaxUnavailable(i32),
}

/// A PodDisruptionBudget with `metadata` for the pods `selector` matches.
pub fn pod_disruption_budget(
    metadata: ObjectMeta,
    selector: &BTreeMap<String, String>,
    disruption: Disruption,
) -> PodDisruptionBudget {
    let (min_available, max_unavailable) = match disruption {
        Disruption::MinAvailable(n) => (Some(IntOrString::Int(n)), None),
        Disruption::MaxUnavailable(n) => (None, Some(IntOrString::Int(n))),
    };
    PodDisruptionBudget {
        metadata,
        spec: Some(PodDisruptionBudgetSpec {
            min_available,
            max_unavailable,
            selector: Some(match_labels(selector)),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}

/// An HTTP GET probe of `path` on port `port`, every `period` seconds, failing after `failures`
/// misses in a row; `timeout` None leaves the API default (one second).
pub fn http_probe(
    path: &str,
    port: i32,
    period: i32,
    failures: i32,
    timeout: Option<i32>,
) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::Int(port),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: timeout,
        ..Probe::default()
    }
}
