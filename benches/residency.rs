//! Throughput of the residency engine: a realistic mix of objects (governed workloads pinned and
//! unpinned, claims, secrets, ungoverned config, backup locations) judged against the EU/India
//! example. The goal is at least 100,000 objects per second on one core; criterion reports
//! the rate as `thrpt` (elements per second).

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use serde_json::{Value, json};
use sovereign_operator::manifest;
use sovereign_operator::residency::{Engine, Inventory};

/// `count` objects cycling through ten shapes, spread over both regions and a team namespace.
fn objects(count: usize) -> Vec<Value> {
    let namespaces = ["sovereign-eu", "sovereign-in", "team-a"];
    (0..count)
        .map(|i| {
            let namespace = namespaces[i % namespaces.len()];
            let name = format!("object-{i}");
            let class = if i % 3 == 0 { "public" } else { "pii" };
            match i % 10 {
                0..=2 => json!({
                    "apiVersion": "apps/v1", "kind": "Deployment",
                    "metadata": {"name": name, "namespace": namespace,
                                 "labels": {"sovereign.ai/data-class": class, "app": "web"}},
                    "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                            "spec": {"containers": [{"name": "web", "image": "nginx:1.27"}],
                                "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                                    "nodeSelectorTerms": [{"matchExpressions": [{
                                        "key": "topology.kubernetes.io/region", "operator": "In",
                                        "values": ["europe-west9", "eu-central-1"]}]}]}}}}}}
                }),
                3 => json!({
                    "apiVersion": "apps/v1", "kind": "StatefulSet",
                    "metadata": {"name": name, "namespace": namespace,
                                 "labels": {"sovereign.ai/data-class": class}},
                    "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                        "template": {"metadata": {"labels": {"app": "db"}},
                            "spec": {"nodeSelector": {"topology.kubernetes.io/region": "ap-south-1"},
                                "containers": [{"name": "db", "image": "postgres:17"}]}},
                        "volumeClaimTemplates": [{"metadata": {"name": "data"},
                            "spec": {"storageClassName": "in-regional-ssd"}}]}
                }),
                4 => json!({
                    "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                    "metadata": {"name": name, "namespace": namespace,
                                 "labels": {"sovereign.ai/data-class": class}},
                    "spec": {"storageClassName": "eu-regional-ssd", "accessModes": ["ReadWriteOnce"]}
                }),
                5 | 6 => json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name, "namespace": namespace,
                                 "labels": {"sovereign.ai/data-class": class}},
                    "stringData": {"token": "x"}
                }),
                7 => json!({
                    "apiVersion": "velero.io/v1", "kind": "BackupStorageLocation",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"provider": "aws", "config": {"region": "eu-central-1"}}
                }),
                8 => json!({
                    "apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": {"ports": [{"port": 80}]}
                }),
                _ => json!({
                    "apiVersion": "v1", "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": namespace},
                    "data": {"k": "v"}
                }),
            }
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/eu-india");
    let documents = manifest::read_paths(&[example]).expect("example");
    let resources = manifest::classify(documents.clone()).expect("example resources");
    let engine = Engine::new(&resources.regions, &resources.policies);
    let objects = objects(10_000);
    let inventory = Inventory::of(documents.iter().map(|d| &d.value).chain(objects.iter()));

    let mut group = c.benchmark_group("residency");
    group.throughput(Throughput::Elements(objects.len() as u64));
    group.bench_function("evaluate 10k objects", |b| {
        b.iter(|| black_box(engine.evaluate_with(&inventory, black_box(&objects))))
    });
    group.bench_function("inventory + evaluate 10k objects", |b| {
        b.iter(|| black_box(engine.evaluate(black_box(&objects))))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
