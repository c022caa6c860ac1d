//! Self-hosted inference: the vLLM Deployment, Service, PodDisruptionBudget and autoscaler of
//! one `InferenceBackend`, pinned to GPU nodes inside its region.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec,
    MetricIdentifier, MetricSpec, MetricTarget, PodsMetricSource,
};
use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, NodeSelectorRequirement, PersistentVolumeClaimVolumeSource, PodSpec,
    PodTemplateSpec, SecretEnvSource, Toleration, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::k8s::{self, Disruption};
use super::pod::{
    region_affinity, region_node_selector, region_tolerations, restricted_container_security,
    restricted_pod_security,
};
use super::{Child, Owner, PodMonitor, RenderError, observability};
use crate::api::backend::{InferenceBackend, VllmSpec};
use crate::api::region::SovereignRegion;

/// `app.kubernetes.io/component` of everything rendered here.
pub const COMPONENT: &str = "inference";
/// Port of the vLLM OpenAI-compatible server.
pub const PORT: i32 = 8000;
/// Where model weights are cached inside the pod.
const CACHE_DIR: &str = "/models-cache";
/// Where a PVC model source is mounted.
const PVC_DIR: &str = "/models";
/// Pods need a non-root user for Pod Security `restricted`; vLLM runs fine as any uid when its
/// caches point at writable volumes.
const VLLM_UID: i64 = 1000;
/// The user name given to that uid through `USER` / `LOGNAME`: the image has no passwd entry
/// for it, and `getpass.getuser()` (PyTorch's compile cache, Triton) reads these first and
/// raises `KeyError` without them.
const VLLM_USER: &str = "vllm";
/// Default CPU and memory requested per GPU when the spec sets no resources.
const CPU_PER_GPU: i32 = 2;
const MEMORY_GI_PER_GPU: i32 = 16;

/// Name of the Deployment and Service of a vLLM backend. The gateway config points at
/// `http://vllm-<backend>.<namespace>.svc:8000/v1`.
pub fn workload_name(backend_name: &str) -> String {
    format!("vllm-{backend_name}")
}

/// In-cluster URL of a vLLM backend's OpenAI-compatible API.
pub fn endpoint(backend_name: &str, namespace: &str) -> String {
    format!(
        "http://{}.{namespace}.svc:{PORT}/v1",
        workload_name(backend_name)
    )
}

/// The children of a self-hosted backend; empty for an external one.
pub fn vllm_children(
    backend: &InferenceBackend,
    region: &SovereignRegion,
    owner: &Owner,
) -> Result<Vec<Child>, RenderError> {
    let Some(vllm) = &backend.spec.vllm else {
        return Ok(Vec::new());
    };
    let backend_name = backend
        .metadata
        .name
        .as_deref()
        .ok_or(RenderError::MissingName {
            kind: "InferenceBackend",
        })?;
    let namespace = region.stack_namespace();
    let name = workload_name(backend_name);
    let selector = owner.selector(COMPONENT);
    let meta = |n: &str| owner.meta(COMPONENT, n, Some(&namespace));

    let replicas = &vllm.replicas;
    // Parked (min 0) and fixed-size models get a replica count; a range gets an autoscaler, and
    // then the Deployment must not carry replicas or every apply would undo its scaling.
    let autoscaled = replicas.min >= 1 && replicas.min < replicas.max;
    let deployment = Deployment {
        metadata: meta(&name),
        spec: Some(DeploymentSpec {
            replicas: (!autoscaled).then_some(replicas.min),
            selector: k8s::match_labels(&selector),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(selector.clone()),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(backend, vllm, region)?),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    };

    let service = k8s::http_service(meta(&name), &selector, PORT);

    let mut children = vec![Child::from(deployment), Child::from(service)];
    if replicas.max > 1 {
        children.push(Child::from(k8s::pod_disruption_budget(
            meta(&name),
            &selector,
            Disruption::MaxUnavailable(1),
        )));
    }
    if autoscaled {
        children.push(Child::from(autoscaler(&name, meta(&name), vllm)));
    }
    if let Some(monitor) = &region.spec.monitoring.pod_monitor {
        let mut metadata = meta(&name);
        metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .extend(monitor.labels.clone());
        let mut endpoint = serde_json::json!({"port": "http", "path": "/metrics"});
        if let Some(interval) = &monitor.interval {
            endpoint["interval"] = serde_json::Value::from(interval.clone());
        }
        children.push(Child::from(PodMonitor {
            api_version: "monitoring.coreos.com/v1",
            kind: "PodMonitor",
            metadata,
            spec: serde_json::json!({
                "selector": {"matchLabels": selector},
                "podMetricsEndpoints": [endpoint],
            }),
        }));
    }
    Ok(children)
}

/// Scales on vLLM's queue length (`vllm:num_requests_waiting`, averaged over pods). GPU
/// utilisation and CPU say little about an LLM server's load; the queue does. The metric
/// reaches the HPA through a custom-metrics adapter (e.g. prometheus-adapter).
fn autoscaler(name: &str, metadata: ObjectMeta, vllm: &VllmSpec) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata,
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: name.to_owned(),
            },
            min_replicas: Some(vllm.replicas.min),
            max_replicas: vllm.replicas.max,
            metrics: Some(vec![MetricSpec {
                type_: "Pods".into(),
                pods: Some(PodsMetricSource {
                    metric: MetricIdentifier {
                        name: "vllm:num_requests_waiting".into(),
                        selector: None,
                    },
                    target: MetricTarget {
                        type_: "AverageValue".into(),
                        average_value: Some(Quantity("5".into())),
                        ..MetricTarget::default()
                    },
                }),
                ..MetricSpec::default()
            }]),
            behavior: None,
        }),
        status: None,
    }
}

/// The vLLM server arguments: model, served name and the tuning fields, then `extraArgs`.
pub fn server_args(backend: &InferenceBackend, vllm: &VllmSpec) -> Vec<String> {
    let source = vllm.model_source.as_ref();
    let model = match source {
        Some(s) if s.pvc.is_some() => {
            let path = s.pvc.as_ref().and_then(|p| p.path.as_deref()).unwrap_or("");
            format!("{PVC_DIR}/{}", path.trim_start_matches('/'))
                .trim_end_matches('/')
                .to_owned()
        }
        Some(s) if s.object_store.is_some() => s
            .object_store
            .as_ref()
            .map(|o| o.uri.clone())
            .unwrap_or_default(),
        Some(s) if s.hugging_face.is_some() => s
            .hugging_face
            .as_ref()
            .map(|h| h.repo.clone())
            .unwrap_or_default(),
        _ => vllm.model.clone(),
    };
    let mut args = vec![
        model,
        "--served-model-name".into(),
        backend.spec.model_name.clone(),
        "--host".into(),
        "0.0.0.0".into(),
        "--port".into(),
        PORT.to_string(),
        "--download-dir".into(),
        CACHE_DIR.into(),
    ];
    if let Some(revision) = source
        .and_then(|s| s.hugging_face.as_ref())
        .and_then(|h| h.revision.clone())
    {
        args.extend(["--revision".into(), revision]);
    }
    if source.is_some_and(|s| s.object_store.is_some()) {
        // vLLM streams s3:// and gs:// weights with the Run:ai model streamer.
        args.extend(["--load-format".into(), "runai_streamer".into()]);
    }
    if let Some(tp) = vllm.tensor_parallel_size {
        args.extend(["--tensor-parallel-size".into(), tp.to_string()]);
    }
    if let Some(q) = &vllm.quantization {
        args.extend(["--quantization".into(), q.clone()]);
    }
    if let Some(len) = vllm.max_model_len {
        args.extend(["--max-model-len".into(), len.to_string()]);
    }
    args.extend(vllm.extra_args.iter().cloned());
    args
}

/// The OTLP/HTTP traces URL of the region's collector for vLLM's `--otlp-traces-endpoint`
/// (with `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=http/protobuf` the exporter posts to exactly
/// this URL, so it carries the `/v1/traces` path), or None without a collector.
fn traces_endpoint(region: &SovereignRegion) -> Option<String> {
    observability::otlp_http_collector_endpoint(region).map(|base| format!("{base}/v1/traces"))
}

fn pod_spec(
    backend: &InferenceBackend,
    vllm: &VllmSpec,
    region: &SovereignRegion,
) -> Result<PodSpec, RenderError> {
    let gpus = &vllm.gpus;
    let mut extra_requirements = Vec::new();
    if let Some(gpu_type) = &gpus.gpu_type {
        extra_requirements.push(NodeSelectorRequirement {
            key: gpus.type_label.clone(),
            operator: "In".into(),
            values: Some(vec![gpu_type.clone()]),
        });
    }
    // GPU nodes are usually tainted with the GPU resource name; tolerate exactly that.
    let gpu_toleration = Toleration {
        key: Some(gpus.resource_name.clone()),
        operator: Some("Exists".into()),
        effect: Some("NoSchedule".into()),
        ..Toleration::default()
    };
    let gpu_quantity = Quantity(gpus.count.to_string());
    let per_gpu = gpus.count.max(1);
    let mut resources = k8s::with_default_requests(
        vllm.resources.as_ref(),
        &(CPU_PER_GPU * per_gpu).to_string(),
        &format!("{}Gi", MEMORY_GI_PER_GPU * per_gpu),
    );
    // The GPUs are the backend's `gpus`, whatever `resources` says.
    resources
        .limits
        .get_or_insert_with(BTreeMap::new)
        .insert(gpus.resource_name.clone(), gpu_quantity.clone());
    resources
        .requests
        .get_or_insert_with(BTreeMap::new)
        .insert(gpus.resource_name.clone(), gpu_quantity);

    let mut env = vec![
        k8s::env("HF_HOME", CACHE_DIR),
        // Writable home for vLLM's and Triton's caches under a read-only image user.
        k8s::env("HOME", CACHE_DIR),
        k8s::env("USER", VLLM_USER),
        k8s::env("LOGNAME", VLLM_USER),
        // No usage reports to vLLM's stats server (abroad, and denied by the egress policy
        // anyway): vllm/usage/usage_lib.py checks both.
        k8s::env("VLLM_NO_USAGE_STATS", "1"),
        k8s::env("DO_NOT_TRACK", "1"),
        k8s::env("HF_HUB_DISABLE_TELEMETRY", "1"),
    ];
    // Weights never come from the public hub: a Hugging Face source (or none) goes to the
    // region's in-region mirror; a PVC or object store needs no hub at all, so the hub client
    // is switched offline and cannot reach out for a tokenizer or config either.
    let from_hub = vllm
        .model_source
        .as_ref()
        .is_none_or(|s| s.hugging_face.is_some());
    if from_hub {
        let Some(mirror) = region.spec.hugging_face_mirror.as_deref() else {
            return Err(RenderError::NoInRegionModelSource {
                backend: format!(
                    "{}/{}",
                    backend.metadata.namespace.as_deref().unwrap_or_default(),
                    backend.metadata.name.as_deref().unwrap_or_default()
                ),
                region: region.metadata.name.clone().unwrap_or_default(),
            });
        };
        env.push(k8s::env("HF_ENDPOINT", mirror.trim_end_matches('/')));
    } else {
        env.push(k8s::env("HF_HUB_OFFLINE", "1"));
    }
    let mut args = server_args(backend, vllm);
    if let Some(traces) = traces_endpoint(region) {
        args.extend(["--otlp-traces-endpoint".into(), traces]);
        env.push(k8s::env(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "http/protobuf",
        ));
        env.push(k8s::env(
            "OTEL_SERVICE_NAME",
            &workload_name(backend.metadata.name.as_deref().unwrap_or_default()),
        ));
    }
    let mut env_from = Vec::new();
    let mut volumes = vec![
        k8s::sized_empty_dir("model-cache", None, &vllm.cache_size),
        // NCCL needs a large /dev/shm for tensor parallelism; memory-backed, so it is bounded
        // (it counts against the container's memory).
        k8s::sized_empty_dir("shm", Some("Memory"), &vllm.shm_size),
    ];
    let mut mounts = vec![
        k8s::mount("model-cache", CACHE_DIR, false),
        k8s::mount("shm", "/dev/shm", false),
    ];
    if let Some(source) = &vllm.model_source {
        if let Some(hf) = &source.hugging_face
            && let Some(token) = &hf.token_secret
        {
            env.push(k8s::secret_env(
                "HF_TOKEN",
                &token.name,
                &token.key,
                Some(false),
            ));
        }
        if let Some(store) = &source.object_store
            && let Some(secret) = &store.credentials_secret
        {
            env_from.push(EnvFromSource {
                secret_ref: Some(SecretEnvSource {
                    name: secret.clone(),
                    optional: Some(false),
                }),
                ..EnvFromSource::default()
            });
        }
        if let Some(pvc) = &source.pvc {
            volumes.push(Volume {
                name: "weights".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: pvc.claim_name.clone(),
                    read_only: Some(true),
                }),
                ..Volume::default()
            });
            mounts.push(k8s::mount("weights", PVC_DIR, true));
        }
    }

    Ok(PodSpec {
        affinity: Some(region_affinity(region, extra_requirements)),
        node_selector: region_node_selector(region),
        tolerations: region_tolerations(region, vec![gpu_toleration]),
        security_context: Some(restricted_pod_security(VLLM_UID)),
        automount_service_account_token: Some(false),
        containers: vec![Container {
            name: "vllm".into(),
            image: Some(vllm.image.clone()),
            command: Some(vec!["vllm".into(), "serve".into()]),
            args: Some(args),
            ports: Some(vec![k8s::container_port("http", PORT, None)]),
            env: Some(env),
            env_from: (!env_from.is_empty()).then_some(env_from),
            resources: Some(resources),
            volume_mounts: Some(mounts),
            // Loading 70B weights takes minutes: a startup probe holds the others off.
            startup_probe: Some(k8s::http_probe("/health", PORT, 10, 180, None)),
            readiness_probe: Some(k8s::http_probe("/health", PORT, 10, 3, None)),
            liveness_probe: Some(k8s::http_probe("/health", PORT, 20, 6, None)),
            security_context: Some(restricted_container_security(false)),
            ..Container::default()
        }],
        volumes: Some(volumes),
        ..PodSpec::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::test_support::{
        deployment, example_backends, example_region, required_region_requirements,
    };
    use k8s_openapi::api::core::v1::ResourceRequirements;

    fn render(region: &str, backend: &str) -> Vec<Child> {
        let region = example_region(region);
        let backend = example_backends(&region)
            .into_iter()
            .find(|b| b.metadata.name.as_deref() == Some(backend))
            .expect("backend in example");
        let owner = Owner {
            region: backend.spec.region.clone(),
            instance: backend.metadata.name.clone().unwrap_or_default(),
            reference: None,
        };
        vllm_children(&backend, &region, &owner).expect("renders")
    }

    #[test]
    fn pinned_to_region_locations_and_gpu_type_with_a_required_affinity() {
        let children = render("eu", "llama-3-70b");
        let pod = deployment(&children)
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec");
        let requirements = required_region_requirements(pod);
        assert_eq!(requirements[0].key, "topology.kubernetes.io/region");
        assert_eq!(
            requirements[0].values.as_deref(),
            Some(
                &[
                    "europe-west9".to_owned(),
                    "eu-central-1".to_owned(),
                    "fr-par".to_owned()
                ][..]
            )
        );
        assert_eq!(requirements[1].key, "nvidia.com/gpu.product");
        assert_eq!(
            requirements[1].values.as_deref(),
            Some(&["NVIDIA-H100-80GB-HBM3".to_owned()][..])
        );
        let container = &pod.containers[0];
        let limits = container
            .resources
            .as_ref()
            .and_then(|r| r.limits.as_ref())
            .expect("limits");
        assert_eq!(limits["nvidia.com/gpu"], Quantity("4".into()));
        let security = container.security_context.as_ref().expect("security");
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert!(
            pod.tolerations
                .as_ref()
                .is_some_and(|t| t.iter().any(|t| t.key.as_deref() == Some("nvidia.com/gpu")))
        );
    }

    #[test]
    fn server_arguments_follow_the_spec() {
        let children = render("eu", "llama-3-70b");
        let args = deployment(&children)
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .and_then(|p| p.containers[0].args.clone())
            .expect("args");
        let joined = args.join(" ");
        assert!(
            joined.starts_with(
                "meta-llama/Meta-Llama-3-70B-Instruct --served-model-name llama-3-70b"
            ),
            "{joined}"
        );
        assert!(joined.contains("--tensor-parallel-size 4"), "{joined}");
        assert!(joined.contains("--max-model-len 8192"), "{joined}");
        assert!(
            joined.contains("--revision 7129260dd854a80eb10ace5f61c20324b472b31c"),
            "{joined}"
        );
    }

    #[test]
    fn a_replica_range_gets_an_autoscaler_and_no_fixed_replicas() {
        let children = render("in", "sarvam-2b");
        assert!(
            deployment(&children)
                .spec
                .as_ref()
                .is_some_and(|s| s.replicas.is_none())
        );
        let hpa = children
            .iter()
            .find_map(|c| match c {
                Child::HorizontalPodAutoscaler(h) => Some(h),
                _ => None,
            })
            .expect("an autoscaler");
        let spec = hpa.spec.as_ref().expect("spec");
        assert_eq!((spec.min_replicas, spec.max_replicas), (Some(1), 4));
        assert!(
            children
                .iter()
                .any(|c| matches!(c, Child::PodDisruptionBudget(_)))
        );
        assert!(children.iter().any(|c| matches!(c, Child::Service(_))));
    }

    #[test]
    fn external_backends_have_no_workload() {
        let region = example_region("eu");
        let backend = example_backends(&region)
            .into_iter()
            .find(|b| b.spec.external.is_some())
            .expect("external");
        let owner = Owner {
            region: "eu".into(),
            instance: "x".into(),
            reference: None,
        };
        assert!(
            vllm_children(&backend, &region, &owner)
                .expect("renders")
                .is_empty()
        );
    }

    fn pod_of(children: &[Child]) -> PodSpec {
        deployment(children)
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.clone())
            .expect("pod spec")
    }

    fn env_value(pod: &PodSpec, name: &str) -> Option<String> {
        pod.containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == name)
            .and_then(|e| e.value.clone())
    }

    fn render_with(
        region: &SovereignRegion,
        backend: &InferenceBackend,
    ) -> Result<Vec<Child>, RenderError> {
        let owner = Owner {
            region: backend.spec.region.clone(),
            instance: backend.metadata.name.clone().unwrap_or_default(),
            reference: None,
        };
        vllm_children(backend, region, &owner)
    }

    fn example_backend(region: &SovereignRegion, name: &str) -> InferenceBackend {
        example_backends(region)
            .into_iter()
            .find(|b| b.metadata.name.as_deref() == Some(name))
            .expect("backend in example")
    }

    /// Defect: weights came from the public Hugging Face hub, which the region's egress denies.
    #[test]
    fn weights_come_from_the_regions_mirror_never_the_public_hub() {
        let region = example_region("eu");
        let pod = pod_of(&render("eu", "llama-3-70b"));
        assert_eq!(
            env_value(&pod, "HF_ENDPOINT").as_deref(),
            Some("https://hf-mirror.eu.example.com")
        );
        assert_eq!(env_value(&pod, "HF_HUB_OFFLINE"), None);

        // No mirror: refused with a message naming the fix, not rendered to crash-loop.
        let mut no_mirror = region.clone();
        no_mirror.spec.hugging_face_mirror = None;
        let backend = example_backend(&region, "llama-3-70b");
        let error = render_with(&no_mirror, &backend).expect_err("refused");
        assert!(
            matches!(&error, RenderError::NoInRegionModelSource { backend, region }
                if backend == "sovereign-eu/llama-3-70b" && region == "eu"),
            "{error}"
        );
        assert!(error.to_string().contains("huggingFaceMirror"), "{error}");

        // A PVC needs no hub: the hub client is offline, and no mirror is needed.
        let mut pvc = backend.clone();
        if let Some(v) = pvc.spec.vllm.as_mut() {
            v.model_source = Some(crate::api::backend::ModelSource {
                pvc: Some(crate::api::backend::PvcSource {
                    claim_name: "weights-llama".into(),
                    path: Some("llama-3-70b".into()),
                }),
                ..Default::default()
            });
        }
        let pod = pod_of(&render_with(&no_mirror, &pvc).expect("renders"));
        assert_eq!(env_value(&pod, "HF_HUB_OFFLINE").as_deref(), Some("1"));
        assert_eq!(env_value(&pod, "HF_ENDPOINT"), None);
        // India's llama streams from an in-region bucket: offline too.
        let pod = pod_of(&render("in", "llama-3-70b"));
        assert_eq!(env_value(&pod, "HF_HUB_OFFLINE").as_deref(), Some("1"));
        assert!(
            pod.containers[0]
                .args
                .as_ref()
                .is_some_and(|a| a[0] == "s3://models-in-mumbai/meta-llama-3-70b-instruct")
        );
    }

    /// Defects: the model cache and /dev/shm were emptyDirs without a size limit.
    #[test]
    fn cache_and_shm_have_size_limits() {
        let pod = pod_of(&render("eu", "llama-3-70b"));
        let limit = |name: &str| {
            pod.volumes
                .iter()
                .flatten()
                .find(|v| v.name == name)
                .and_then(|v| v.empty_dir.as_ref())
                .map(|d| (d.medium.clone(), d.size_limit.clone()))
        };
        assert_eq!(
            limit("model-cache"),
            Some((None, Some(Quantity("200Gi".into()))))
        );
        assert_eq!(
            limit("shm"),
            Some((Some("Memory".into()), Some(Quantity("8Gi".into()))))
        );
    }

    /// Defect: as uid 1000 with no passwd entry and no USER / LOGNAME, `getpass.getuser()`
    /// (PyTorch, Triton) raises KeyError.
    #[test]
    fn the_uid_without_a_passwd_entry_has_a_user_name_and_home() {
        let pod = pod_of(&render("eu", "llama-3-70b"));
        assert_eq!(env_value(&pod, "USER").as_deref(), Some("vllm"));
        assert_eq!(env_value(&pod, "LOGNAME").as_deref(), Some("vllm"));
        assert_eq!(env_value(&pod, "HOME").as_deref(), Some(CACHE_DIR));
        let home_is_writable = pod.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.mount_path == CACHE_DIR && m.read_only != Some(true));
        assert!(home_is_writable);
    }

    /// Defect: vLLM was BestEffort (GPU only, no CPU / memory requests).
    #[test]
    fn cpu_and_memory_are_requested_per_gpu_unless_given() {
        let pod = pod_of(&render("eu", "llama-3-70b"));
        let requests = pod.containers[0]
            .resources
            .as_ref()
            .and_then(|r| r.requests.clone())
            .expect("requests");
        assert_eq!(requests["cpu"], Quantity("8".into()), "2 per GPU x 4");
        assert_eq!(requests["memory"], Quantity("64Gi".into()));
        assert_eq!(requests["nvidia.com/gpu"], Quantity("4".into()));

        let region = example_region("in");
        let mut backend = example_backend(&region, "sarvam-2b");
        if let Some(v) = backend.spec.vllm.as_mut() {
            v.resources = Some(ResourceRequirements {
                requests: Some(BTreeMap::from([("memory".into(), Quantity("24Gi".into()))])),
                limits: Some(BTreeMap::from([(
                    "nvidia.com/gpu".into(),
                    Quantity("7".into()),
                )])),
                ..ResourceRequirements::default()
            });
        }
        let pod = pod_of(&render_with(&region, &backend).expect("renders"));
        let resources = pod.containers[0].resources.clone().expect("resources");
        let requests = resources.requests.expect("requests");
        assert_eq!(requests["memory"], Quantity("24Gi".into()), "the spec wins");
        assert_eq!(requests["cpu"], Quantity("2".into()));
        assert_eq!(
            resources.limits.expect("limits")["nvidia.com/gpu"],
            Quantity("1".into()),
            "GPUs come from gpus.count, not from resources"
        );
    }

    /// Defect: vLLM reported usage stats abroad.
    #[test]
    fn usage_stats_and_hub_telemetry_are_off() {
        let pod = pod_of(&render("in", "sarvam-2b"));
        assert_eq!(env_value(&pod, "VLLM_NO_USAGE_STATS").as_deref(), Some("1"));
        assert_eq!(env_value(&pod, "DO_NOT_TRACK").as_deref(), Some("1"));
        assert_eq!(
            env_value(&pod, "HF_HUB_DISABLE_TELEMETRY").as_deref(),
            Some("1")
        );
    }

    /// Defect: vLLM got no OTLP endpoint, so the regional collector saw none of its traces.
    #[test]
    fn traces_go_to_the_regional_collector() {
        let pod = pod_of(&render("eu", "llama-3-70b"));
        let args = pod.containers[0].args.clone().expect("args");
        let at = args
            .iter()
            .position(|a| a == "--otlp-traces-endpoint")
            .expect("--otlp-traces-endpoint");
        assert_eq!(
            args[at + 1],
            "http://otel-collector.sovereign-eu.svc:4318/v1/traces"
        );
        assert_eq!(
            env_value(&pod, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").as_deref(),
            Some("http/protobuf")
        );
        assert!(
            !args.iter().any(|a| a == "--disable-log-requests"),
            "gone in 0.32"
        );

        let mut region = example_region("eu");
        region.spec.observability = None;
        let backend = example_backend(&region, "llama-3-70b");
        let pod = pod_of(&render_with(&region, &backend).expect("renders"));
        assert!(
            !pod.containers[0]
                .args
                .iter()
                .flatten()
                .any(|a| a.starts_with("--otlp"))
        );
    }

    #[test]
    fn the_default_image_is_the_release_the_e2e_runs() {
        let pod = pod_of(&render("eu", "llama-3-70b"));
        assert_eq!(
            pod.containers[0].image.as_deref(),
            Some(&*format!(
                "vllm/vllm-openai:v{}",
                crate::api::versions::version("VLLM_VERSION").expect("in versions.env")
            ))
        );
    }

    /// Defect: no PodMonitor was rendered, so Prometheus (and the HPA's metric) had no data.
    #[test]
    fn a_pod_monitor_is_rendered_when_asked_for() {
        assert!(
            !render("eu", "llama-3-70b")
                .iter()
                .any(|c| matches!(c, Child::PodMonitor(_)))
        );
        let mut region = example_region("eu");
        region.spec.monitoring.pod_monitor = Some(crate::api::region::PodMonitorSpec {
            labels: BTreeMap::from([("release".into(), "kube-prometheus-stack".into())]),
            interval: Some("15s".into()),
        });
        let backend = example_backend(&region, "llama-3-70b");
        let children = render_with(&region, &backend).expect("renders");
        let monitor = children
            .iter()
            .find_map(|c| match c {
                Child::PodMonitor(m) => Some(m),
                _ => None,
            })
            .expect("a PodMonitor");
        let json = Child::PodMonitor(monitor.clone()).to_json().expect("json");
        assert_eq!(json["apiVersion"], "monitoring.coreos.com/v1");
        assert_eq!(json["kind"], "PodMonitor");
        assert_eq!(json["metadata"]["namespace"], "sovereign-eu");
        assert_eq!(
            json["metadata"]["labels"]["release"],
            "kube-prometheus-stack"
        );
        assert_eq!(
            json["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
            "llama-3-70b"
        );
        assert_eq!(
            json["spec"]["podMetricsEndpoints"],
            serde_json::json!([{"port": "http", "path": "/metrics", "interval": "15s"}])
        );
    }

    #[test]
    fn endpoint_matches_the_service() {
        assert_eq!(
            endpoint("llama-3-70b", "sovereign-eu"),
            "http://vllm-llama-3-70b.sovereign-eu.svc:8000/v1"
        );
    }
}
