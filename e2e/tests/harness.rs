//! Shared e2e plumbing: the client, server-side apply of YAML files, one-time installation of
//! the CRDs and the example, and waiting with a deadline.

use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, ResourceExt};
use serde::Deserialize;
use tokio::sync::OnceCell;

/// Field manager of everything the tests apply.
pub const MANAGER: &str = "sovereign-e2e";

/// Generous upper bound for the plane to do something; a bound, not an assertion on speed.
pub const PATIENCE: Duration = Duration::from_secs(120);

/// A client from `KUBECONFIG`; panics with a clear message when the plane is not there.
pub async fn client() -> Client {
    let client = Client::try_default().await.unwrap_or_else(|e| {
        panic!(
            "no Kubernetes client (is `e2e/controlplane.sh up` running and KUBECONFIG set?): {e}"
        )
    });
    client
        .apiserver_version()
        .await
        .unwrap_or_else(|e| panic!("the e2e control plane is unreachable: {e}"));
    client
}

/// Path inside the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Every YAML document of every `.yaml` file in `dir`, in file-name order, with its file.
pub fn yaml_documents(dir: &Path) -> Vec<(PathBuf, serde_json::Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut documents = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("readable file");
        for document in serde_yaml_ng::Deserializer::from_str(&text) {
            let value = serde_json::Value::deserialize(document)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            if !value.is_null() {
                documents.push((file.clone(), value));
            }
        }
    }
    documents
}

/// The API resource and scope of a document's apiVersion/kind, through discovery.
pub async fn resolve(
    client: &Client,
    document: &serde_json::Value,
) -> (ApiResource, ApiCapabilities) {
    let api_version = document["apiVersion"].as_str().expect("apiVersion");
    let kind = document["kind"].as_str().expect("kind");
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    kube::discovery::pinned_kind(client, &gvk)
        .await
        .unwrap_or_else(|e| panic!("{api_version} {kind} is not served: {e}"))
}

/// The dynamic API for a document (namespaced or cluster-wide).
pub async fn dynamic_api(client: &Client, document: &serde_json::Value) -> Api<DynamicObject> {
    let (resource, capabilities) = resolve(client, document).await;
    match capabilities.scope {
        Scope::Namespaced => {
            let namespace = document["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default");
            Api::namespaced_with(client.clone(), namespace, &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    }
}

/// Server-side applies one document.
pub async fn apply(
    client: &Client,
    document: &serde_json::Value,
) -> Result<DynamicObject, kube::Error> {
    let api = dynamic_api(client, document).await;
    let name = document["metadata"]["name"]
        .as_str()
        .expect("metadata.name");
    api.patch(
        name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(document),
    )
    .await
}

/// Creates `name` if it does not exist.
pub async fn ensure_namespace(client: &Client, name: &str) {
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .expect("namespace");
    Api::<Namespace>::all(client.clone())
        .patch(
            name,
            &PatchParams::apply(MANAGER),
            &Patch::Apply(&namespace),
        )
        .await
        .unwrap_or_else(|e| panic!("cannot create namespace {name}: {e}"));
}

static CRDS: OnceCell<Vec<String>> = OnceCell::const_new();

/// Installs the CRDs from `crds/` (the files users apply) once per test run and waits until
/// each is Established. Returns their names.
pub async fn install_crds() -> &'static [String] {
    CRDS.get_or_init(|| async {
        let client = client().await;
        let api = Api::<CustomResourceDefinition>::all(client.clone());
        let mut names = Vec::new();
        for (file, document) in yaml_documents(&repo_path("crds")) {
            let crd: CustomResourceDefinition = serde_json::from_value(document)
                .unwrap_or_else(|e| panic!("{}: not a CRD: {e}", file.display()));
            let name = crd.name_any();
            api.patch(
                &name,
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&crd),
            )
            .await
            .unwrap_or_else(|e| panic!("the API server refused {}: {e}", file.display()));
            names.push(name);
        }
        for name in &names {
            let established = await_condition(api.clone(), name, conditions::is_crd_established());
            tokio::time::timeout(PATIENCE, established)
                .await
                .unwrap_or_else(|_| panic!("CRD {name} never became Established"))
                .unwrap_or_else(|e| panic!("watching CRD {name}: {e}"));
        }
        names
    })
    .await
}

static EXAMPLE: OnceCell<usize> = OnceCell::const_new();

/// Applies every document of `deploy/examples/eu-india/` once per test run (namespaces first)
/// and returns how many there were. Panics naming the file of any refused document.
pub async fn install_example() -> usize {
    install_crds().await;
    *EXAMPLE
        .get_or_init(|| async {
            let client = client().await;
            let mut documents = yaml_documents(&repo_path("deploy/examples/eu-india"));
            documents.sort_by_key(|(_, d)| d["kind"] != "Namespace");
            for (file, document) in &documents {
                apply(&client, document).await.unwrap_or_else(|e| {
                    panic!(
                        "the API server refused a document of {}: {e}",
                        file.display()
                    )
                });
            }
            documents.len()
        })
        .await
}

/// Runs `kubectl` (from PATH, as `controlplane.sh env` sets it) and returns its stdout.
pub fn kubectl(args: &[&str]) -> String {
    kubectl_with_input(args, None).0
}

/// Runs `kubectl` with `input` on stdin; returns stdout and stderr. Panics when it fails.
pub fn kubectl_with_input(args: &[&str], input: Option<&str>) -> (String, String) {
    use std::io::Write;
    // A private discovery cache: kubectl's shared one may predate the CRDs and then not know
    // the `sovereign` category.
    let cache = std::env::temp_dir().join(format!("sovereign-e2e-kubectl-{}", std::process::id()));
    let mut child = std::process::Command::new("kubectl")
        .arg("--cache-dir")
        .arg(&cache)
        .args(args)
        .stdin(if input.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run kubectl (is it on PATH?): {e}"));
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(input.as_bytes())
            .expect("write kubectl's stdin");
    }
    let output = child.wait_with_output().expect("kubectl runs");
    assert!(
        output.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `helm` (`$HELM`, else from PATH; `e2e/run.sh` puts the one `scripts/prereqs.sh`
/// builds there) and returns its stdout. Panics when it fails: the chart is under test.
pub fn helm(args: &[&str]) -> String {
    let helm = std::env::var("HELM").unwrap_or_else(|_| "helm".to_owned());
    let output = std::process::Command::new(&helm)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {helm} (run scripts/prereqs.sh and put helm on PATH): {e}")
        });
    assert!(
        output.status.success(),
        "helm {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The chart's release namespace and name in the e2e: where its ServiceAccount and the leader
/// Lease live.
pub const RELEASE_NAMESPACE: &str = "sovereign-system";
/// Release name (the chart's resources are named after it).
pub const RELEASE: &str = "sovereign-operator";

static OPERATOR_KUBECONFIG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// A kubeconfig that authenticates as the chart's ServiceAccount: the chart's ServiceAccount,
/// ClusterRole, Role and bindings (rendered by `helm template`) are applied, and a token is
/// requested for the account. Every [`Operator`] runs with it, so any API call the chart's
/// RBAC does not allow fails a test (and logs "forbidden"). Once per test process.
pub fn operator_kubeconfig() -> PathBuf {
    OPERATOR_KUBECONFIG
        .get_or_init(|| {
            let chart = repo_path("charts/sovereign-operator");
            let chart = chart.to_string_lossy();
            let rbac = helm(&[
                "template",
                RELEASE,
                &chart,
                // The chart requires Kubernetes >= 1.33; helm assumes an old version offline.
                "--kube-version",
                "1.33.0",
                "--namespace",
                RELEASE_NAMESPACE,
                "--show-only",
                "templates/serviceaccount.yaml",
                "--show-only",
                "templates/rbac.yaml",
            ]);
            let namespace = format!(
                "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {RELEASE_NAMESPACE}\n---\n"
            );
            kubectl_with_input(
                &[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--field-manager",
                    MANAGER,
                    "-f",
                    "-",
                ],
                Some(&format!("{namespace}{rbac}")),
            );
            let token = kubectl(&[
                "create",
                "token",
                RELEASE,
                "--namespace",
                RELEASE_NAMESPACE,
                "--duration",
                "6h",
            ]);
            let server = kubectl(&[
                "config",
                "view",
                "--raw",
                "--minify",
                "-o",
                "jsonpath={.clusters[0].cluster.server}",
            ]);
            let ca = kubectl(&[
                "config",
                "view",
                "--raw",
                "--minify",
                "--flatten",
                "-o",
                "jsonpath={.clusters[0].cluster.certificate-authority-data}",
            ]);
            let config = serde_json::json!({
                "apiVersion": "v1", "kind": "Config",
                "clusters": [{"name": "e2e", "cluster": {
                    "server": server.trim(), "certificate-authority-data": ca.trim()}}],
                "users": [{"name": RELEASE, "user": {"token": token.trim()}}],
                "contexts": [{"name": "operator", "context": {
                    "cluster": "e2e", "user": RELEASE, "namespace": RELEASE_NAMESPACE}}],
                "current-context": "operator",
            });
            let path = std::env::temp_dir().join(format!(
                "sovereign-e2e-operator-{}.kubeconfig",
                std::process::id()
            ));
            std::fs::write(&path, config.to_string()).expect("write the operator's kubeconfig");
            path
        })
        .clone()
}

static FIXTURES: OnceCell<()> = OnceCell::const_new();

/// The example plus what a real cluster would already have: in-region storage classes with
/// volumes, and (placeholder) Secrets the example's backends refer to.
pub async fn install_example_with_fixtures() {
    install_example().await;
    FIXTURES
        .get_or_init(|| async {
            let client = client().await;
            for (file, document) in yaml_documents(&repo_path("e2e/fixtures")) {
                apply(&client, &document)
                    .await
                    .unwrap_or_else(|e| panic!("cannot apply {}: {e}", file.display()));
            }
        })
        .await;
}

/// Polls `check` every second until it returns Some or `PATIENCE` runs out; panics with
/// `what` and the last observation.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if tokio::time::Instant::now() >= deadline => {
                panic!("{what} did not happen within {PATIENCE:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(1)).await,
        }
    }
}

/// The operator binary of this build, running `run` against the e2e plane with its own
/// metrics port, under the chart's RBAC (see [`operator_kubeconfig`]; set
/// `SOVEREIGN_E2E_OPERATOR_ADMIN=1` to run it as cluster admin instead, e.g. to tell an RBAC
/// gap from a bug); killed when dropped.
pub struct Operator {
    child: std::process::Child,
    /// `http://127.0.0.1:<port>/metrics`.
    pub metrics_address: std::net::SocketAddr,
    /// Where its log goes.
    pub log: PathBuf,
}

impl Operator {
    /// Starts `sovereign-operator run` with `args`.
    pub fn start(args: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let metrics_address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::env::temp_dir().join(format!("sovereign-operator-e2e-{port}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sovereign-operator"));
        if std::env::var("SOVEREIGN_E2E_OPERATOR_ADMIN").is_err() {
            command.env("KUBECONFIG", operator_kubeconfig());
        }
        // As the chart's downward API sets it: the namespace of the leader Lease.
        command.env("POD_NAMESPACE", RELEASE_NAMESPACE);
        let child = command
            .arg("run")
            .arg("--metrics-address")
            .arg(metrics_address.to_string())
            .args(args)
            .stdout(file.try_clone().expect("log file"))
            .stderr(file)
            .spawn()
            .expect("the operator starts");
        eprintln!("operator started, log: {}", log.display());
        Self {
            child,
            metrics_address,
            log,
        }
    }

    /// SIGKILL: the process dies without releasing anything.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Panics when the operator's log shows a request the API server refused for lack of
    /// permission: the chart's RBAC must cover every call.
    pub fn assert_no_forbidden(&self) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let forbidden: Vec<&str> = text
            .lines()
            .filter(|l| l.to_ascii_lowercase().contains("forbidden"))
            .take(10)
            .collect();
        assert!(
            forbidden.is_empty(),
            "the operator was refused API calls (chart RBAC, templates/_helpers.tpl): {forbidden:#?}\nlog: {}",
            self.log.display()
        );
    }

    /// The value of the unlabelled gauge `metric`, None when unreadable.
    pub async fn gauge(&self, metric: &str) -> Option<f64> {
        let text = self.metrics().await.ok()?;
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(metric))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
    }

    /// Sends SIGTERM (a graceful shutdown) and waits for the process to exit.
    pub fn stop(mut self) {
        let _ = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }

    /// The operator's `/metrics` text.
    pub async fn metrics(&self) -> Result<String, String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(self.metrics_address)
            .await
            .map_err(|e| format!("metrics endpoint: {e}"))?;
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .await
            .map_err(|e| e.to_string())?;
        Ok(response)
    }

    /// Sum of every sample of `metric` (all label sets).
    pub async fn metric_sum(&self, metric: &str, label_filter: &str) -> Result<f64, String> {
        let text = self.metrics().await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with(metric) && l.contains(label_filter))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Held by the tests that put residency admission policies in place (the admission parity test
/// and the operator's provisioning test): both name them `sovereign-residency-<policy>`, and
/// one's policies would judge the other's objects.
pub static ADMISSION_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Deletes every residency admission policy and binding the operator generates (by label) and
/// waits until they are gone.
pub async fn remove_admission_policies(client: &Client) {
    use k8s_openapi::api::admissionregistration::v1::{
        ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
    };
    let selector = format!(
        "{},app.kubernetes.io/component={}",
        sovereign_operator::api::labels::managed_selector(),
        sovereign_operator::residency::admission::COMPONENT_VALUE
    );
    let list = kube::api::ListParams::default().labels(&selector);
    let delete = kube::api::DeleteParams::default();
    let bindings = Api::<ValidatingAdmissionPolicyBinding>::all(client.clone());
    let policies = Api::<ValidatingAdmissionPolicy>::all(client.clone());
    bindings
        .delete_collection(&delete, &list)
        .await
        .expect("delete bindings");
    policies
        .delete_collection(&delete, &list)
        .await
        .expect("delete policies");
    eventually("the generated admission policies are gone", || async {
        let left = policies
            .list(&list)
            .await
            .map_err(|e| e.to_string())?
            .items
            .len()
            + bindings
                .list(&list)
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
        if left == 0 {
            Ok(())
        } else {
            Err(format!("{left} left"))
        }
    })
    .await;
}
