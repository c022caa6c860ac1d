//! The reachability matrix of the rendered example, proven by a NetworkPolicy engine rather
//! than assumed: KWOK has no CNI, so nothing enforces the policies in the e2e cluster.
//!
//! The EU/India example is rendered offline (`render::region::offline_children`, exactly what
//! the operator applies); its NetworkPolicies and the pods of its workloads (namespace, the
//! namespace's labels, the pod template's labels) go to `scripts/netpol-check.sh`, which runs
//! cyclonus' NetworkPolicy engine (built from the Go module proxy into the cache the first time;
//! the test fails, never skips, when it cannot). Every path the stack needs must be allowed,
//! a list of paths that must not exist must be denied, and removing any one of the allow
//! policies must deny a needed path — so the matrix cannot pass vacuously.
//!
//! What the engine models: NetworkPolicy semantics (isolation per direction, additive allows,
//! namespace / pod selectors, ipBlocks, ports). What it cannot: a CNI's own behaviour (e.g.
//! host-network pods, Service IPs that are not translated before policy, as with NodeLocal
//! DNSCache answering on the kube-dns Service IP — the README says what to add then).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};
use sovereign_operator::api::{InferenceBackend, ResidencyPolicy, SovereignRegion};
use sovereign_operator::render::region::offline_children;

/// One side of a connection: a pod (namespace, its labels, the pod's labels) or an address.
#[derive(Clone, Debug)]
struct Peer {
    what: String,
    json: Value,
}

/// A pod. Pods get an address from the pod network 10.244.0.0/16, outside every CIDR the
/// example declares, since an ipBlock rule is matched against a pod's IP too (CNIs differ on
/// whether it should be; a pod network outside the declared CIDRs sidesteps the question).
fn pod(what: &str, namespace: &str, ns_labels: &BTreeMap<String, String>, labels: Value) -> Peer {
    let digest = what
        .bytes()
        .fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    let ip = format!("10.244.{}.{}", (digest >> 8) % 250, digest % 250 + 1);
    Peer {
        what: what.to_owned(),
        json: json!({"namespace": namespace, "namespaceLabels": ns_labels, "podLabels": labels, "ip": ip}),
    }
}

fn outside(what: &str, namespace: &str, labels: Value) -> Peer {
    pod(what, namespace, &BTreeMap::new(), labels)
}

fn address(ip: &str) -> Peer {
    Peer {
        what: ip.to_owned(),
        json: json!({"ip": ip}),
    }
}

#[derive(Clone, Debug)]
struct Case {
    name: String,
    query: Value,
    allowed: bool,
}

fn case(allowed: bool, from: &Peer, to: &Peer, port: i32, protocol: &str) -> Case {
    let name = format!("{} -> {} {protocol}/{port}", from.what, to.what);
    Case {
        query: json!({
            "name": name, "source": from.json, "destination": to.json,
            "port": port, "portName": "", "protocol": protocol,
        }),
        name,
        allowed,
    }
}

/// The example's regions, backends and policies, as `render` reads them.
fn example() -> (
    Vec<SovereignRegion>,
    Vec<InferenceBackend>,
    Vec<ResidencyPolicy>,
) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/eu-india");
    let (mut regions, mut backends, mut policies) = (Vec::new(), Vec::new(), Vec::new());
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("example directory")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable");
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value: Value = serde::Deserialize::deserialize(document).expect("YAML");
            match value["kind"].as_str() {
                Some("SovereignRegion") => {
                    regions.push(serde_json::from_value(value).expect("region"))
                }
                Some("InferenceBackend") => {
                    backends.push(serde_json::from_value(value).expect("backend"))
                }
                Some("ResidencyPolicy") => {
                    policies.push(serde_json::from_value(value).expect("policy"))
                }
                _ => {}
            }
        }
    }
    (regions, backends, policies)
}

/// The pods of one region namespace: workload name → (template labels).
struct RegionPods {
    namespace: String,
    ns_labels: BTreeMap<String, String>,
    pods: BTreeMap<String, Value>,
}

impl RegionPods {
    fn get(&self, workload: &str) -> Peer {
        let labels = self
            .pods
            .get(workload)
            .unwrap_or_else(|| panic!("{workload} in {}: {:?}", self.namespace, self.pods.keys()));
        pod(
            &format!("{}/{workload}", self.namespace),
            &self.namespace,
            &self.ns_labels,
            labels.clone(),
        )
    }

    fn all(&self) -> Vec<Peer> {
        self.pods.keys().map(|w| self.get(w)).collect()
    }

    fn vllm(&self) -> Vec<Peer> {
        self.pods
            .keys()
            .filter(|w| w.starts_with("vllm-"))
            .map(|w| self.get(w))
            .collect()
    }
}

fn region_pods(children: &[Value], namespace: &str) -> RegionPods {
    let mut ns_labels = BTreeMap::new();
    let mut pods = BTreeMap::new();
    for child in children {
        let kind = child["kind"].as_str().unwrap_or_default();
        if kind == "Namespace" && child["metadata"]["name"] == namespace {
            ns_labels =
                serde_json::from_value(child["metadata"]["labels"].clone()).expect("labels");
        }
        if (kind == "Deployment" || kind == "StatefulSet")
            && child["metadata"]["namespace"] == namespace
        {
            pods.insert(
                child["metadata"]["name"]
                    .as_str()
                    .expect("named")
                    .to_owned(),
                child["spec"]["template"]["metadata"]["labels"].clone(),
            );
        }
    }
    RegionPods {
        namespace: namespace.to_owned(),
        ns_labels,
        pods,
    }
}

/// The needed paths (allowed) and the forbidden ones (denied) of the example.
fn matrix(children: &[Value]) -> Vec<Case> {
    let eu = region_pods(children, "sovereign-eu");
    let india = region_pods(children, "sovereign-in");
    let operator = outside(
        "operator",
        "sovereign-system",
        json!({"app.kubernetes.io/name": "sovereign-operator"}),
    );
    let prometheus = outside(
        "prometheus",
        "monitoring",
        json!({"app.kubernetes.io/name": "prometheus"}),
    );
    let client = outside("client", "team-search", json!({"app": "search"}));
    let kube_dns = outside("kube-dns", "kube-system", json!({"k8s-app": "kube-dns"}));
    let openshift_dns = outside(
        "openshift-dns",
        "openshift-dns",
        json!({"dns.operator.openshift.io/daemonset-dns": "default"}),
    );
    let metrics_server = outside(
        "metrics-server",
        "kube-system",
        json!({"k8s-app": "metrics-server"}),
    );
    let node_local_dns = address("169.254.20.10");
    let internet = address("1.1.1.1");
    let outside_resolver = address("8.8.8.8");

    let mut cases = Vec::new();
    let allow = |cases: &mut Vec<Case>, f: &Peer, t: &Peer, p: i32, proto: &str| {
        cases.push(case(true, f, t, p, proto));
    };
    let deny = |cases: &mut Vec<Case>, f: &Peer, t: &Peer, p: i32, proto: &str| {
        cases.push(case(false, f, t, p, proto));
    };

    for (region, net, store, store_port) in [
        (&eu, "10.20", "qdrant", 6333),
        (&india, "10.40", "pgvector", 5432),
    ] {
        let gateway = region.get("gateway");
        let collector = region.get("otel-collector");
        let store_pod = region.get(store);
        let proxy = outside(
            &format!("egress-proxy-{}", region.namespace),
            &format!(
                "egress-{}",
                region.namespace.trim_start_matches("sovereign-")
            ),
            json!({"app.kubernetes.io/name": "egress-proxy"}),
        );
        let otlp_endpoint = address(&format!("{net}.1.10"));
        let langfuse = address(&format!("{net}.2.20"));
        let mirror = address(&format!("{net}.5.5"));

        // Needed: the region's API, the scrapes, the stack's own calls, its in-region exits.
        for source in [&client, &operator, &prometheus] {
            allow(&mut cases, source, &gateway, 4000, "TCP");
        }
        for vllm in region.vllm() {
            allow(&mut cases, &operator, &vllm, 8000, "TCP");
            allow(&mut cases, &prometheus, &vllm, 8000, "TCP");
            allow(&mut cases, &gateway, &vllm, 8000, "TCP");
            allow(&mut cases, &vllm, &collector, 4318, "TCP");
            allow(&mut cases, &vllm, &mirror, 443, "TCP");
            // Forbidden: around the gateway from outside, out of the region, to the proxy.
            deny(&mut cases, &client, &vllm, 8000, "TCP");
            deny(&mut cases, &vllm, &proxy, 3128, "TCP");
            deny(&mut cases, &vllm, &internet, 443, "TCP");
        }
        allow(&mut cases, &gateway, &collector, 4318, "TCP");
        allow(&mut cases, &gateway, &proxy, 3128, "TCP");
        allow(&mut cases, &gateway, &langfuse, 443, "TCP");
        allow(&mut cases, &collector, &otlp_endpoint, 4317, "TCP");
        allow(&mut cases, &gateway, &store_pod, store_port, "TCP");
        if store == "qdrant" {
            allow(&mut cases, &store_pod, &store_pod, 6335, "TCP");
        }
        for pod in region.all() {
            allow(&mut cases, &pod, &kube_dns, 53, "UDP");
            allow(&mut cases, &pod, &kube_dns, 53, "TCP");
            allow(&mut cases, &pod, &node_local_dns, 53, "UDP");
            allow(&mut cases, &pod, &openshift_dns, 5353, "UDP");
            deny(&mut cases, &pod, &outside_resolver, 53, "UDP");
            deny(&mut cases, &pod, &internet, 443, "TCP");
            deny(&mut cases, &pod, &client, 80, "TCP");
            deny(&mut cases, &pod, &metrics_server, 443, "TCP");
            deny(&mut cases, &pod, &kube_dns, 8080, "TCP");
        }
        deny(&mut cases, &client, &gateway, 8080, "TCP");
        deny(&mut cases, &client, &store_pod, store_port, "TCP");
        deny(&mut cases, &prometheus, &store_pod, store_port, "TCP");
        deny(&mut cases, &operator, &store_pod, store_port, "TCP");
        for port in [4317, 4318] {
            deny(&mut cases, &client, &collector, port, "TCP");
            deny(&mut cases, &operator, &collector, port, "TCP");
        }
        deny(&mut cases, &collector, &proxy, 3128, "TCP");
        deny(&mut cases, &store_pod, &proxy, 3128, "TCP");
    }
    // Across the border: one region's stack never reaches the other's.
    for (from, to) in [(&eu, &india), (&india, &eu)] {
        for vllm in to.vllm() {
            deny(&mut cases, &from.get("gateway"), &vllm, 8000, "TCP");
        }
        deny(
            &mut cases,
            &from.get("gateway"),
            &to.get("gateway"),
            4000,
            "TCP",
        );
        deny(
            &mut cases,
            &from.get("gateway"),
            &to.get("otel-collector"),
            4318,
            "TCP",
        );
    }
    cases
}

/// The engine's verdict on each case: name → allowed.
fn verdicts(dir: &Path, policies: &[Value], cases: &[Case]) -> BTreeMap<String, bool> {
    let policies_path = dir.join("policies.json");
    let cases_path = dir.join("cases.json");
    std::fs::write(&policies_path, serde_json::to_vec(policies).expect("json")).expect("write");
    let queries: Vec<&Value> = cases.iter().map(|c| &c.query).collect();
    std::fs::write(&cases_path, serde_json::to_vec(&queries).expect("json")).expect("write");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/netpol-check.sh");
    let output = Command::new("bash")
        .arg(script)
        .arg(&policies_path)
        .arg(&cases_path)
        .output()
        .expect("bash runs");
    assert!(
        output.status.success(),
        "scripts/netpol-check.sh failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: Vec<Value> = serde_json::from_slice(&output.stdout).expect("verdicts are JSON");
    answers
        .iter()
        .map(|a| {
            (
                a["name"].as_str().expect("name").to_owned(),
                a["allowed"].as_bool().expect("allowed"),
            )
        })
        .collect()
}

fn wrong(cases: &[Case], verdicts: &BTreeMap<String, bool>) -> Vec<String> {
    cases
        .iter()
        .filter(|c| verdicts.get(&c.name) != Some(&c.allowed))
        .map(|c| {
            format!(
                "{}: expected {}, engine says {:?}",
                c.name,
                if c.allowed { "allowed" } else { "denied" },
                verdicts.get(&c.name)
            )
        })
        .collect()
}

#[test]
fn the_rendered_policies_allow_exactly_the_needed_paths() {
    let (regions, backends, residency) = example();
    let children: Vec<Value> = offline_children(&regions, &backends, &residency)
        .expect("the example renders")
        .iter()
        .map(|c| c.to_json().expect("json"))
        .collect();
    let policies: Vec<Value> = children
        .iter()
        .filter(|c| c["kind"] == "NetworkPolicy")
        .cloned()
        .collect();
    let cases = matrix(&children);
    let allowed = cases.iter().filter(|c| c.allowed).count();
    println!(
        "{} policies, {} cases: {allowed} needed paths, {} forbidden",
        policies.len(),
        cases.len(),
        cases.len() - allowed
    );
    let dir = tempdir();
    let answers = verdicts(&dir, &policies, &cases);
    let failures = wrong(&cases, &answers);
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Each allow policy is needed: without it some needed path is denied.
    let names: std::collections::BTreeSet<String> = policies
        .iter()
        .map(|p| p["metadata"]["name"].as_str().expect("named").to_owned())
        .filter(|n| n.starts_with("allow-"))
        .collect();
    assert_eq!(
        names.iter().map(String::as_str).collect::<Vec<_>>(),
        [
            "allow-dns",
            "allow-egress-cidrs",
            "allow-egress-proxy",
            "allow-gateway-ingress",
            "allow-metrics-scrapes",
            "allow-same-namespace"
        ]
    );
    for name in &names {
        let without: Vec<Value> = policies
            .iter()
            .filter(|p| {
                !(p["metadata"]["name"] == name.as_str()
                    && p["metadata"]["namespace"] == "sovereign-eu")
            })
            .cloned()
            .collect();
        let answers = verdicts(&dir, &without, &cases);
        let broken: Vec<&str> = cases
            .iter()
            .filter(|c| c.allowed && answers.get(&c.name) == Some(&false))
            .map(|c| c.name.as_str())
            .collect();
        println!(
            "without sovereign-eu/{name}: {} needed paths denied, e.g. {:?}",
            broken.len(),
            broken.first()
        );
        assert!(
            !broken.is_empty(),
            "removing sovereign-eu/{name} broke no needed path: the matrix does not test it"
        );
    }
    // And the default deny is what denies: with every policy gone, forbidden paths open.
    let open = verdicts(&dir, &[], &cases);
    assert!(
        cases
            .iter()
            .filter(|c| !c.allowed)
            .all(|c| open.get(&c.name) == Some(&true)),
        "without policies everything is allowed (the engine's baseline)"
    );
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sovereign-netpol-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
