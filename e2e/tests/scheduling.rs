//! The simulated regions are real to the scheduler: a GPU pod pinned to a location lands on a
//! GPU node of that location and runs.

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};

use crate::harness::{PATIENCE, ensure_namespace, shared};

const NAMESPACE: &str = "e2e-scheduling";

fn gpu_pod(name: &str, location: &str, gpu_product: Option<&str>) -> Pod {
    let mut terms = vec![serde_json::json!({
        "key": "topology.kubernetes.io/region", "operator": "In", "values": [location]
    })];
    if let Some(product) = gpu_product {
        terms.push(serde_json::json!({
            "key": "nvidia.com/gpu.product", "operator": "In", "values": [product]
        }));
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "automountServiceAccountToken": false,
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": terms}]
            }}},
            "containers": [{
                "name": "vllm", "image": "vllm/vllm-openai:v0.11.0",
                "resources": {"limits": {"nvidia.com/gpu": "2"}}
            }]
        }
    }))
    .expect("pod")
}

/// Creates the pod (retrying while the namespace's default ServiceAccount is being created),
/// waits until it runs, and returns the node it runs on.
async fn run_and_locate(pod: Pod) -> Node {
    let client = shared().await.client().await;
    ensure_namespace(&client, NAMESPACE).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NAMESPACE);
    let name = pod.metadata.name.clone().expect("name");
    let _ = pods
        .delete(&name, &DeleteParams::default().grace_period(0))
        .await;
    let deleted = await_condition(pods.clone(), &name, conditions::is_deleted(""));
    let _ = tokio::time::timeout(PATIENCE, deleted).await;

    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match pods.create(&PostParams::default(), &pod).await {
            Ok(_) => break,
            Err(e) if tokio::time::Instant::now() < deadline => {
                eprintln!("pod {name} not created yet: {e}");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
            Err(e) => panic!("cannot create pod {name}: {e}"),
        }
    }
    let running = await_condition(pods.clone(), &name, conditions::is_pod_running());
    tokio::time::timeout(PATIENCE, running)
        .await
        .unwrap_or_else(|_| panic!("pod {name} never ran"))
        .expect("watch pod");
    let pod = pods.get(&name).await.expect("pod");
    let node_name = pod.spec.and_then(|s| s.node_name).expect("scheduled");
    Api::<Node>::all(client)
        .get(&node_name)
        .await
        .expect("node")
}

fn label<'n>(node: &'n Node, key: &str) -> &'n str {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(key))
        .map(String::as_str)
        .unwrap_or_default()
}

#[tokio::test]
async fn a_gpu_pod_pinned_to_ap_south_1_runs_on_an_ap_south_1_gpu_node() {
    let node = run_and_locate(gpu_pod("gpu-ap-south-1", "ap-south-1", None)).await;
    assert_eq!(label(&node, "topology.kubernetes.io/region"), "ap-south-1");
    let gpus = node
        .status
        .and_then(|s| s.allocatable)
        .and_then(|a| a.get("nvidia.com/gpu").cloned())
        .expect("node offers GPUs");
    assert_eq!(gpus.0, "8");
}

#[tokio::test]
async fn the_gpu_type_is_honoured_within_the_region() {
    let node = run_and_locate(gpu_pod("l4-ap-south-1", "ap-south-1", Some("NVIDIA-L4"))).await;
    assert_eq!(label(&node, "topology.kubernetes.io/region"), "ap-south-1");
    assert_eq!(label(&node, "topology.kubernetes.io/zone"), "ap-south-1b");
    assert_eq!(label(&node, "nvidia.com/gpu.product"), "NVIDIA-L4");
}
