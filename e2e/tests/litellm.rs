//! The gateway config proven on a real LiteLLM proxy (`litellm[proxy]==1.108.7` from PyPI, in
//! the venv `e2e/litellm/setup.sh` creates once), not on a reading of LiteLLM's docs.
//!
//! No Kubernetes needed: the example region `eu` and the EU/India backends are read from
//! `deploy/examples/eu-india`, the config is rendered by `litellm_config`, and the proxy runs
//! on 127.0.0.1 against `e2e/litellm/stub_backend.py`, which stands in for every upstream
//! (vLLM, Mistral, OVHcloud, Azure OpenAI) and for Langfuse. Run alone with
//! `cargo test --features e2e --test e2e litellm`.
//!
//! These tests fail, never skip, when the venv cannot be built or LiteLLM does not start. They
//! wait with generous deadlines and assert nothing about speed.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sovereign_operator::api::{InferenceBackend, SovereignRegion};
use sovereign_operator::render::gateway_config::{
    GUARD_FILE, GUARD_MODULE, GatewayConfig, litellm_config,
};

use crate::harness::{repo_path, yaml_documents};

/// Master key the test gives the proxy (through LITELLM_MASTER_KEY, as in the cluster).
pub(crate) const MASTER_KEY: &str = "sk-e2e-master";
/// Upper bound for LiteLLM to start (about 6 s on a quiet machine; builds run beside it).
const STARTUP: Duration = Duration::from_secs(240);
/// Upper bound for asynchronous effects (metrics, Langfuse export) to show.
const PATIENCE: Duration = Duration::from_secs(90);

#[test]
fn litellm_serves_exactly_the_eu_models_of_the_example() {
    let (eu, backends) = example("eu");
    let refs: Vec<&InferenceBackend> = backends.iter().collect();
    // All seven example backends go in; the renderer itself must keep India's out.
    let config = litellm_config(&eu, &refs).expect("the EU config renders");
    assert_eq!(
        config.models,
        [
            "gpt-4o",
            "llama-3-70b",
            "mistral-large",
            "ovh-llama-3.3-70b"
        ]
    );

    let work = WorkDir::new("eu");
    let stub = Stub::start(&work);
    let proxy = Proxy::start(&work, &config, &stub);

    // Every EU model answers, through the upstream model (or Azure deployment) it maps to,
    // with the API key taken from the environment variable the config names.
    let expected = [
        (
            "gpt-4o",
            "gpt-4o-eu-datazone",
            "BACKEND_AZURE_GPT_4O_EU_API_KEY",
        ),
        ("llama-3-70b", "llama-3-70b", ""),
        (
            "mistral-large",
            "mistral-large-latest",
            "BACKEND_MISTRAL_LARGE_API_KEY",
        ),
        (
            "ovh-llama-3.3-70b",
            "Meta-Llama-3_3-70B-Instruct",
            "BACKEND_OVH_LLAMA_3_3_70B_API_KEY",
        ),
    ];
    for (model, upstream, key_env) in expected {
        let (status, body) = proxy.chat(model, &[]);
        assert_eq!(status, 200, "{model}: {body}");
        let answer: serde_json::Value = serde_json::from_str(&body).expect("JSON answer");
        assert!(
            answer["usage"]["prompt_tokens"]
                .as_u64()
                .is_some_and(|n| n > 0)
        );
        let calls = stub.chat_calls();
        let call = calls
            .iter()
            .find(|c| c["model"] == upstream)
            .unwrap_or_else(|| panic!("{model}: the stub saw no call for {upstream}: {calls:?}"));
        if !key_env.is_empty() {
            let auth = call["authorization"].as_str().unwrap_or_default();
            assert!(auth.ends_with(&dummy_secret(key_env)), "{model}: {auth}");
        }
        if model == "gpt-4o" {
            // The Azure path, and the api_version as written (not a YAML 1.1 date).
            assert_eq!(
                call["path"],
                "/openai/deployments/gpt-4o-eu-datazone/chat/completions"
            );
            assert!(
                call["query"]
                    .as_str()
                    .is_some_and(|q| q.contains("api-version=2024-10-21")),
                "{call}"
            );
        }
    }

    // India's model is not in the EU gateway: refused, and nothing reached an upstream.
    let before = stub.chat_calls().len();
    let (status, body) = proxy.chat("sarvam-2b", &[]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("Invalid model name"), "{body}");
    assert!(body.contains("sarvam-2b"), "{body}");
    // Naming a provider model directly does not reach the provider either.
    let (status, body) = proxy.chat("openai/gpt-4o", &[]);
    assert_eq!(status, 400, "{body}");
    assert_eq!(
        stub.chat_calls().len(),
        before,
        "a refused model reached an upstream"
    );

    // Clients choose neither tags nor endpoints.
    let (status, body) = proxy.chat("llama-3-70b", &[("metadata", r#"{"tags": ["in"]}"#)]);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("metadata.tags"), "{body}");
    let (status, body) = proxy.chat(
        "llama-3-70b",
        &[("api_base", &format!(r#""{}/abroad/v1""#, stub.url()))],
    );
    assert!(
        !(200..300).contains(&status),
        "api_base override accepted: {body}"
    );
    assert!(
        !stub.log().contains("/abroad"),
        "a client-side api_base was followed"
    );
    assert_eq!(stub.chat_calls().len(), before);

    // /metrics is served (behind the master key) and counts the tokens of the requests.
    let (status, _, headers) = proxy.get("/metrics");
    assert!(
        status == 200 || (status == 307 && headers.contains("/metrics/")),
        "/metrics: {status} {headers}"
    );
    let metrics = wait_for("token metrics on /metrics/", || {
        let (status, body, _) = proxy.get("/metrics/");
        (status == 200
            && body.lines().any(|l| {
                l.starts_with("litellm_input_tokens_metric_total{")
                    && l.contains(r#"requested_model="mistral-large""#)
            })
            && body.contains("litellm_output_tokens_metric_total{"))
        .then_some(body)
    });
    for model in &config.models {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("litellm_total_tokens_metric_total{")
                    && l.contains(&format!(r#"requested_model="{model}""#))),
            "no token metric for {model}"
        );
    }

    // The Langfuse callback exports to the region's Langfuse (here the stub, see `Proxy::start`).
    wait_for("a Langfuse export", || {
        stub.log().contains(r#""kind": "langfuse""#).then_some(())
    });
    drop(proxy);
}

#[test]
fn litellm_with_no_backend_starts_and_refuses_every_model() {
    let (eu, _) = example("eu");
    let config = litellm_config(&eu, &[]).expect("the empty config renders");
    assert!(config.models.is_empty());

    let work = WorkDir::new("empty");
    let stub = Stub::start(&work);
    let proxy = Proxy::start(&work, &config, &stub);
    for model in ["llama-3-70b", "gpt-4o", "sarvam-2b"] {
        let (status, body) = proxy.chat(model, &[]);
        assert_eq!(status, 400, "{model}: {body}");
        assert!(body.contains("Invalid model name"), "{model}: {body}");
    }
    assert!(stub.chat_calls().is_empty());
}

/// The example region `name` and every InferenceBackend of `deploy/examples/eu-india`.
fn example(name: &str) -> (SovereignRegion, Vec<InferenceBackend>) {
    let mut region = None;
    let mut backends = Vec::new();
    for (file, document) in yaml_documents(&repo_path("deploy/examples/eu-india")) {
        let at = || file.display().to_string();
        match document["kind"].as_str() {
            Some("SovereignRegion") if document["metadata"]["name"] == name => {
                region = Some(
                    serde_json::from_value(document).unwrap_or_else(|e| panic!("{}: {e}", at())),
                );
            }
            Some("InferenceBackend") => {
                backends.push(
                    serde_json::from_value(document).unwrap_or_else(|e| panic!("{}: {e}", at())),
                );
            }
            _ => {}
        }
    }
    (region.expect("the example has the region"), backends)
}

/// The value the test puts in secret-backed variable `name`.
pub(crate) fn dummy_secret(name: &str) -> String {
    format!("dummy-{}", name.to_ascii_lowercase())
}

/// The gateway as the operator rendered it in a namespace: its ConfigMap's files and its
/// Deployment, read as the pod would mount and run them.
pub(crate) struct RenderedGateway {
    /// The ConfigMap's files (`config.yaml`, `sovereign_guard.py`, ...).
    pub(crate) files: std::collections::BTreeMap<String, String>,
    /// The gateway Deployment.
    pub(crate) deployment: k8s_openapi::api::apps::v1::Deployment,
}

impl RenderedGateway {
    /// Waits until the gateway ConfigMap in `namespace` has a `config.yaml` containing every
    /// one of `needles`, then for the Deployment: it is applied in the same reconcile as the
    /// ConfigMap, not necessarily before this read.
    pub(crate) async fn wait(client: &kube::Client, namespace: &str, needles: &[&str]) -> Self {
        use k8s_openapi::api::apps::v1::Deployment;
        use k8s_openapi::api::core::v1::ConfigMap;
        let config_maps = kube::Api::<ConfigMap>::namespaced(client.clone(), namespace);
        let files = crate::harness::eventually(
            &format!("{namespace}: the gateway config holds {needles:?}"),
            || async {
                let cm = config_maps
                    .get("gateway")
                    .await
                    .map_err(|e| e.to_string())?;
                let data = cm.data.unwrap_or_default();
                let yaml = data.get("config.yaml").cloned().unwrap_or_default();
                if needles.iter().all(|n| yaml.contains(n)) {
                    Ok(data)
                } else {
                    Err(yaml)
                }
            },
        )
        .await;
        let deployments = kube::Api::<Deployment>::namespaced(client.clone(), namespace);
        let deployment = crate::harness::eventually(
            &format!("{namespace}: the gateway Deployment exists"),
            || async { deployments.get("gateway").await.map_err(|e| e.to_string()) },
        )
        .await;
        Self { files, deployment }
    }

    /// `config.yaml`.
    pub(crate) fn config(&self) -> String {
        self.files.get("config.yaml").cloned().unwrap_or_default()
    }

    /// The guard module mounted next to it.
    pub(crate) fn guard(&self) -> String {
        self.files
            .get("sovereign_guard.py")
            .cloned()
            .expect("the guard module is in the ConfigMap")
    }

    /// The pod template's spec.
    pub(crate) fn pod(&self) -> k8s_openapi::api::core::v1::PodSpec {
        self.deployment
            .spec
            .clone()
            .and_then(|s| s.template.spec)
            .expect("a pod template")
    }

    /// The gateway container's environment as the test runs it: the master key, the value of
    /// `overrides` where named, literal values as rendered, and a dummy for each secret.
    pub(crate) fn env(&self, overrides: &[(&str, String)]) -> Vec<(String, String)> {
        self.pod().containers[0]
            .env
            .clone()
            .unwrap_or_default()
            .iter()
            .map(|var| {
                let overridden = overrides.iter().find(|(n, _)| *n == var.name);
                let value = match (var.name.as_str(), overridden, &var.value) {
                    ("LITELLM_MASTER_KEY", _, _) => MASTER_KEY.to_owned(),
                    (_, Some((_, value)), _) => value.clone(),
                    (_, None, Some(value)) => value.clone(),
                    (name, None, None) => dummy_secret(name),
                };
                (var.name.clone(), value)
            })
            .collect()
    }
}

/// Polls `check` until it yields, panicking after [`PATIENCE`].
pub(crate) fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// A fresh directory for one test's files (config, logs), kept after the run for diagnosis.
pub(crate) struct WorkDir(pub(crate) PathBuf);

impl WorkDir {
    pub(crate) fn new(name: &str) -> Self {
        let dir = repo_path("target/e2e-litellm").join(format!("{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("work dir");
        Self(dir)
    }

    pub(crate) fn path(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

/// A child process killed (and reaped) when the guard goes, also when the test panics.
pub(crate) struct Guard(pub(crate) Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The stub upstream (`e2e/litellm/stub_backend.py`).
pub(crate) struct Stub {
    port: u16,
    log: PathBuf,
    _process: Guard,
}

impl Stub {
    pub(crate) fn start(work: &WorkDir) -> Self {
        let port = free_port();
        let log = work.path("stub-requests.jsonl");
        fs::write(&log, "").expect("stub log");
        let output = fs::File::create(work.path("stub.log")).expect("stub output");
        let process = Command::new("python3")
            .arg(repo_path("e2e/litellm/stub_backend.py"))
            .arg(port.to_string())
            .arg(&log)
            .stdout(output.try_clone().expect("fd"))
            .stderr(output)
            .spawn()
            .expect("python3 starts the stub");
        let stub = Self {
            port,
            log,
            _process: Guard(process),
        };
        wait_for("the stub", || {
            (http(port, "GET", "/health", &[], None).0 == 200).then_some(())
        });
        stub
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn chat_calls(&self) -> Vec<serde_json::Value> {
        self.log()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("stub log line"))
            .filter(|v| v["kind"] == "chat")
            .collect()
    }
}

/// A real LiteLLM proxy on a rendered config.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    _process: Guard,
}

impl Proxy {
    fn start(work: &WorkDir, config: &GatewayConfig, stub: &Stub) -> Self {
        // The variables the Deployment would get: secrets get dummy values; TEST PLUMBING: the
        // Langfuse host (an https host of the example) is the stub too.
        let env: Vec<(String, String)> = config
            .env
            .iter()
            .map(|var| {
                let value = match var.name.as_str() {
                    "LITELLM_MASTER_KEY" => MASTER_KEY.to_owned(),
                    "LANGFUSE_HOST" => stub.url(),
                    name => var.value.clone().unwrap_or_else(|| dummy_secret(name)),
                };
                (var.name.clone(), value)
            })
            .collect();
        let files = [(GUARD_FILE, GUARD_MODULE)];
        Self::launch(work, &config.config_yaml, &files, &env, stub, free_port())
    }

    /// Starts LiteLLM on `port` with config `yaml`, the other files of the gateway ConfigMap
    /// beside it (the budget guard module) and `env`; waits until it is live.
    pub(crate) fn launch(
        work: &WorkDir,
        yaml: &str,
        files: &[(&str, &str)],
        env: &[(String, String)],
        stub: &Stub,
        port: u16,
    ) -> Self {
        let litellm = litellm_binary();
        // TEST PLUMBING: every upstream of the rendered config points at the local stub. Only
        // the scheme and host of each `api_base` change, the path stays (`/v1`, or none for
        // Azure), and the text is edited line by line so that the YAML is otherwise exactly
        // what the operator renders.
        let yaml = point_api_bases_at(yaml, &stub.url());
        let config_file = work.path("config.yaml");
        fs::write(&config_file, &yaml).expect("config file");
        for (name, content) in files {
            fs::write(work.path(name), content).expect("gateway file");
        }

        let output = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(work.path("litellm.log"))
            .expect("proxy log");
        let mut command = Command::new(&litellm);
        command
            .arg("--config")
            .arg(&config_file)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .current_dir(&work.0)
            .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
            // TEST PLUMBING: where the pod would mount the budget actions ConfigMap.
            .env("SOVEREIGN_BUDGET_ACTIONS", work.path("actions.json"))
            .stdin(Stdio::null())
            .stdout(output.try_clone().expect("fd"))
            .stderr(output);
        for (name, value) in env {
            if name != "SOVEREIGN_BUDGET_ACTIONS" {
                command.env(name, value);
            }
        }
        let process = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", litellm.display()));
        let mut proxy = Self {
            port,
            _process: Guard(process),
        };
        let deadline = Instant::now() + STARTUP;
        loop {
            if let Ok(Some(exit)) = proxy._process.0.try_wait() {
                panic!(
                    "LiteLLM exited ({exit}) before it was ready; log:\n{}",
                    tail(&work.path("litellm.log"))
                );
            }
            if proxy.get("/health/liveliness").0 == 200 {
                return proxy;
            }
            assert!(
                Instant::now() < deadline,
                "LiteLLM was not ready after {STARTUP:?}; log:\n{}",
                tail(&work.path("litellm.log"))
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Stops the proxy the way Kubernetes does (SIGTERM), and waits for it to exit.
    pub(crate) fn stop(mut self) {
        let pid = self._process.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self._process.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let _ = self._process.0.kill();
    }

    /// POST a one-message chat completion for `model`, with extra top-level JSON fields.
    pub(crate) fn chat(&self, model: &str, extra: &[(&str, &str)]) -> (u16, String) {
        let messages =
            r#"[{"role": "user", "content": "Bonjour, what is the capital of France?"}]"#;
        self.chat_with(model, messages, extra)
    }

    /// POST a chat completion for `model` with `messages` (JSON) and extra top-level fields.
    pub(crate) fn chat_with(
        &self,
        model: &str,
        messages: &str,
        extra: &[(&str, &str)],
    ) -> (u16, String) {
        let mut body = format!(r#"{{"model": "{model}", "messages": {messages}"#);
        for (key, json) in extra {
            body.push_str(&format!(r#", "{key}": {json}"#));
        }
        body.push('}');
        let (status, body, _) = http(
            self.port,
            "POST",
            "/v1/chat/completions",
            &[("Authorization", &format!("Bearer {MASTER_KEY}"))],
            Some(&body),
        );
        (status, body)
    }

    pub(crate) fn get(&self, path: &str) -> (u16, String, String) {
        http(
            self.port,
            "GET",
            path,
            &[("Authorization", &format!("Bearer {MASTER_KEY}"))],
            None,
        )
    }
}

/// The venv's `litellm`, creating the venv first if needed (`e2e/litellm/setup.sh`).
pub(crate) fn litellm_binary() -> PathBuf {
    let output = Command::new("bash")
        .arg(repo_path("e2e/litellm/setup.sh"))
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs e2e/litellm/setup.sh");
    assert!(
        output.status.success(),
        "e2e/litellm/setup.sh failed ({}): the LiteLLM venv could not be created",
        output.status
    );
    let python = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let litellm = python.with_file_name("litellm");
    assert!(litellm.is_file(), "no {}", litellm.display());
    litellm
}

/// `yaml` with the scheme and host of every `api_base:` replaced by `base`.
pub(crate) fn point_api_bases_at(yaml: &str, base: &str) -> String {
    let mut out = String::new();
    for line in yaml.lines() {
        match line.split_once("api_base: ") {
            Some((indent, url)) if indent.trim().is_empty() => {
                let path = url
                    .split_once("://")
                    .and_then(|(_, rest)| rest.find('/').map(|i| &rest[i..]))
                    .unwrap_or("");
                out.push_str(&format!("{indent}api_base: {base}{path}\n"));
            }
            _ => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The last lines of a log file.
pub(crate) fn tail(file: &Path) -> String {
    let text = fs::read_to_string(file).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(60)..].join("\n")
}

/// A minimal HTTP/1.0 exchange on 127.0.0.1 (the server closes the connection, so the answer is
/// read to its end): status (0 when nothing answered), body and raw headers.
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> (u16, String, String) {
    let attempt = || -> std::io::Result<(u16, String, String)> {
        let mut stream = TcpStream::connect(("127.0.0.1", port))?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        let mut request = format!("{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n");
        for (name, value) in headers {
            request.push_str(&format!("{name}: {value}\r\n"));
        }
        if let Some(body) = body {
            request.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n",
                body.len()
            ));
        }
        request.push_str("\r\n");
        request.push_str(body.unwrap_or(""));
        stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Ok((status, body.to_owned(), head.to_owned()))
    };
    attempt().unwrap_or((0, String::new(), String::new()))
}
