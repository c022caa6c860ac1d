//! Shared e2e plumbing: the control planes (one per test that needs a quiet cluster, see
//! [`PlaneId`]), server-side apply of YAML files, one-time installation of the CRDs and the
//! example per plane, the operator process, and waiting on observable conditions.

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

impl Plane {
    /// Installs the CRDs from `crds/` (the files users apply) once per plane and waits until
    /// each is Established. Returns their names.
    pub async fn install_crds(&self) -> &[String] {
        self.crds
            .get_or_init(|| async {
                let client = self.client().await;
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
                    let established =
                        await_condition(api.clone(), name, conditions::is_crd_established());
                    tokio::time::timeout(PATIENCE, established)
                        .await
                        .unwrap_or_else(|_| panic!("CRD {name} never became Established"))
                        .unwrap_or_else(|e| panic!("watching CRD {name}: {e}"));
                }
                names
            })
            .await
    }

    /// Applies every document of `deploy/examples/eu-india/` once per plane (namespaces
    /// first) and returns how many there were. Panics naming the file of any refused document.
    pub async fn install_example(&self) -> usize {
        self.install_crds().await;
        *self
            .example
            .get_or_init(|| async {
                let client = self.client().await;
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

    /// The example plus what a real cluster would already have: in-region storage classes
    /// with volumes, and (placeholder) Secrets the example's backends refer to.
    pub async fn install_example_with_fixtures(&self) {
        self.install_example().await;
        self.fixtures
            .get_or_init(|| async {
                let client = self.client().await;
                for (file, document) in yaml_documents(&repo_path("e2e/fixtures")) {
                    apply(&client, &document)
                        .await
                        .unwrap_or_else(|e| panic!("cannot apply {}: {e}", file.display()));
                }
            })
            .await;
    }

    /// Runs `kubectl` (from PATH, as `controlplane.sh env` sets it) against this plane and
    /// returns its stdout.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_with_input(args, None).0
    }

    /// Runs `kubectl` with `input` on stdin; returns stdout and stderr. Panics when it fails.
    pub fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> (String, String) {
        let kubeconfig = self.kubeconfig();
        let mut full = vec!["--kubeconfig", kubeconfig.to_str().expect("UTF-8 path")];
        full.extend_from_slice(args);
        kubectl_with_input(&full, input)
    }
}
/// Runs `kubectl` with `input` on stdin; returns stdout and stderr. Panics when it fails. Pass
/// `--kubeconfig` ([`Plane::kubectl`] does), or kubectl reads no plane's.
fn kubectl_with_input(args: &[&str], input: Option<&str>) -> (String, String) {
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

impl Plane {
    /// A kubeconfig that authenticates as the chart's ServiceAccount: the chart's ServiceAccount,
    /// ClusterRole, Role and bindings (rendered by `helm template`) are applied, and a token is
    /// requested for the account. Every [`Operator`] runs with it, so any API call the chart's
    /// RBAC does not allow fails a test (and logs "forbidden"). Once per plane.
    pub fn operator_kubeconfig(&self) -> PathBuf {
        self.operator_kubeconfig
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
                self.kubectl_with_input(
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
                let token = self.kubectl(&[
                    "create",
                    "token",
                    RELEASE,
                    "--namespace",
                    RELEASE_NAMESPACE,
                    "--duration",
                    "6h",
                ]);
                let server = self.kubectl(&[
                    "config",
                    "view",
                    "--raw",
                    "--minify",
                    "-o",
                    "jsonpath={.clusters[0].cluster.server}",
                ]);
                let ca = self.kubectl(&[
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
                    "sovereign-e2e-operator-{}-{}.kubeconfig",
                    std::process::id(),
                    self.name
                ));
                std::fs::write(&path, config.to_string()).expect("write the operator's kubeconfig");
                path
            })
            .clone()
    }
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
    /// Starts `sovereign-operator run` with `args` against `plane`, which must be one of the
    /// test's own ([`exclusive`]): an operator on the shared plane would act on every other
    /// test's objects.
    pub fn start(plane: &Exclusive, args: &[&str]) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let metrics_address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::env::temp_dir().join(format!("sovereign-operator-e2e-{port}.log"));
        let file = std::fs::File::create(&log).expect("log file");
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_sovereign-operator"));
        command.env(
            "KUBECONFIG",
            if std::env::var("SOVEREIGN_E2E_OPERATOR_ADMIN").is_err() {
                plane.operator_kubeconfig()
            } else {
                plane.kubeconfig()
            },
        );
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

    /// Waits until the operator has settled: each controller of `expected` has finished at
    /// least that many reconciles, none is in flight (`sovereign_reconciles_in_flight`), and no
    /// reconcile finished between two consecutive looks. A condition the operator reports,
    /// not a guess of how long its follow-up work takes.
    pub async fn settled(&self, expected: &[(&str, f64)]) {
        let mut previous: Option<f64> = None;
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let text = self.metrics().await.unwrap_or_default();
            let finished = |controller: &str| -> f64 {
                samples(&text, "sovereign_reconciliations_total")
                    .filter(|(labels, _)| labels.contains(&format!("controller=\"{controller}\"")))
                    .map(|(_, v)| v)
                    .sum()
            };
            let in_flight: f64 = samples(&text, "sovereign_reconciles_in_flight")
                .map(|(_, v)| v)
                .sum();
            let total: f64 = samples(&text, "sovereign_reconciliations_total")
                .map(|(_, v)| v)
                .sum();
            let short: Vec<String> = expected
                .iter()
                .filter(|(controller, at_least)| finished(controller) < *at_least)
                .map(|(controller, at_least)| {
                    format!("{controller} {}/{at_least}", finished(controller))
                })
                .collect();
            if short.is_empty() && in_flight == 0.0 && previous == Some(total) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the operator did not settle within {PATIENCE:?}: short {short:?}, \
                 {in_flight} in flight; log: {}",
                self.log.display()
            );
            previous = (short.is_empty() && in_flight == 0.0).then_some(total);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Reconciles `controller` has finished (any result).
    pub async fn reconciles(&self, controller: &str) -> f64 {
        let text = self.metrics().await.unwrap_or_default();
        samples(&text, "sovereign_reconciliations_total")
            .filter(|(labels, _)| labels.contains(&format!("controller=\"{controller}\"")))
            .map(|(_, v)| v)
            .sum()
    }

    /// Waits until `controller` has finished `at_least` reconciles.
    pub async fn wait_reconciles(&self, controller: &str, at_least: f64) {
        eventually(
            &format!("{controller} reconciled {at_least} times"),
            || async {
                let seen = self.reconciles(controller).await;
                if seen >= at_least {
                    Ok(())
                } else {
                    Err(format!("{seen}"))
                }
            },
        )
        .await;
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

/// The (labels, value) samples of `metric` in a Prometheus text exposition.
fn samples<'t>(text: &'t str, metric: &'t str) -> impl Iterator<Item = (&'t str, f64)> + 't {
    text.lines().filter_map(move |line| {
        let rest = line.strip_prefix(metric)?;
        let (labels, value) = rest.rsplit_once(' ')?;
        if !(labels.is_empty() || labels.starts_with('{')) {
            return None; // another metric that starts with the same name
        }
        Some((labels, value.parse().ok()?))
    })
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Control planes: one per isolated test, one shared by the rest.

/// The control planes of the suite. A test that runs an operator, installs residency admission
/// policies or asserts anything about the whole cluster (zero writes after a restart, exact
/// audit counts, leader take-over, exact token totals) gets a plane of its own: nothing else
/// writes there, so no assertion can see another test's objects. The rest share
/// [`PlaneId::Shared`], where no operator runs and no admission policy exists; they create
/// only objects named after themselves, in namespaces of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PlaneId {
    /// CRD installation, the validation corpus, kubectl columns, scheduling, chart dry runs.
    Shared,
    /// The operator provisioning the example and writing nothing after a restart.
    Provisioning,
    /// Two operators sharing a Lease; the standby writes nothing before it leads.
    Leader,
    /// The operator counting tokens to the last decimal and firing each threshold once.
    FinOps,
    /// The compiled admission policies judging the whole corpus.
    AdmissionParity,
    /// Admission ratcheting of UPDATEs.
    AdmissionRatchet,
    /// The operator's pods run as real processes (e2e/dataplane/podrun.py), exact ledger.
    DataPlane,
    /// The residency audit reporting every audited kind of the kinds table.
    Audit,
    /// Live `evidence --context` against an operator running the example.
    Evidence,
    /// The operator run from its own OCI image (scripts/image.sh), as uid 65532.
    Image,
    /// A budget's overshoot under load, Blocks through the gateway guard's own API watch.
    Overshoot,
    /// The `eu` cluster of the two-cluster test (only EU nodes), with its own operator.
    ClusterEu,
    /// The `in` cluster of the two-cluster test (only India nodes), with its own operator.
    ClusterIn,
    /// The usage collector counting 200,000 series into the sharded ledger.
    Ledger,
}

/// One row per plane: the id, its name (state directory, log lines) and why it exists. The
/// index in this table decides the plane's ports, so two planes never share one.
const PLANES: [(PlaneId, &str, &str); 14] = [
    (
        PlaneId::Shared,
        "shared",
        "tests that run no operator and install no admission policy",
    ),
    (
        PlaneId::Provisioning,
        "provisioning",
        "zero API writes after a restart",
    ),
    (
        PlaneId::Leader,
        "leader",
        "take-over with exactly one writer",
    ),
    (
        PlaneId::FinOps,
        "finops",
        "exact token totals and one Event per threshold",
    ),
    (
        PlaneId::AdmissionParity,
        "admission-parity",
        "admission policies judge every write",
    ),
    (
        PlaneId::AdmissionRatchet,
        "admission-ratchet",
        "admission policies judge every write",
    ),
    (
        PlaneId::DataPlane,
        "dataplane",
        "an operator whose pods run for real; exact token totals",
    ),
    (
        PlaneId::Audit,
        "audit",
        "an operator auditing third-party kinds (csi-addons CRDs)",
    ),
    (
        PlaneId::Evidence,
        "evidence",
        "an operator whose rendered objects the live evidence reads",
    ),
    (
        PlaneId::Image,
        "image",
        "an operator run from its OCI image holding the leader Lease",
    ),
    (
        PlaneId::Overshoot,
        "overshoot",
        "a budget under steady load, measured to the request",
    ),
    (
        PlaneId::ClusterEu,
        "cluster-eu",
        "one cluster per jurisdiction: the eu cluster",
    ),
    (
        PlaneId::ClusterIn,
        "cluster-in",
        "one cluster per jurisdiction: the in cluster",
    ),
    (
        PlaneId::Ledger,
        "ledger",
        "200,000 series counted exactly; bytes written from the API server's own metrics",
    ),
];

/// A running control plane of the suite (see [`PlaneId`]).
pub struct Plane {
    name: &'static str,
    state: PathBuf,
    apiserver_port: u16,
    port_base: u16,
    crds: OnceCell<Vec<String>>,
    example: OnceCell<usize>,
    fixtures: OnceCell<()>,
    operator_kubeconfig: std::sync::OnceLock<PathBuf>,
}

/// Where the planes keep their state (`e2e/run.sh` sets it and removes every plane in it at
/// the end of the run).
fn planes_root() -> PathBuf {
    std::env::var_os("SOVEREIGN_E2E_PLANES")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let cache = std::env::var_os("SOVEREIGN_CACHE")
                .map(PathBuf::from)
                .unwrap_or_else(|| {
                    PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                        .join(".cache/sovereign-operator")
                });
            cache.join("e2e-planes")
        })
}

/// First port of the block the planes use (`SOVEREIGN_E2E_PORT_ROOT`, default 17400); plane
/// `i` takes ten ports from `root + 10 * i`.
fn port_root() -> u16 {
    std::env::var("SOVEREIGN_E2E_PORT_ROOT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(17400)
}

static SHARED: OnceCell<Plane> = OnceCell::const_new();
/// Exclusive planes claimed by this test process: each may be claimed once.
static CLAIMED: std::sync::Mutex<Vec<PlaneId>> = std::sync::Mutex::new(Vec::new());

/// The shared plane, started on first use.
pub async fn shared() -> &'static Plane {
    SHARED
        .get_or_init(|| async { Plane::start(PlaneId::Shared).await })
        .await
}

/// A plane for one test alone, started now and stopped when the returned value is dropped
/// (left running after a failure, for its logs; `e2e/run.sh` removes it). Claiming the same
/// plane twice in one run panics: give the second test a row of its own in [`PLANES`].
pub async fn exclusive(id: PlaneId) -> Exclusive {
    assert_ne!(id, PlaneId::Shared, "the shared plane is not exclusive");
    {
        let mut claimed = CLAIMED.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            !claimed.contains(&id),
            "plane {id:?} is already used by another test of this run: add a row to PLANES"
        );
        claimed.push(id);
    }
    Exclusive(Plane::start(id).await)
}

/// A plane owned by one test; see [`exclusive`].
pub struct Exclusive(Plane);

impl std::ops::Deref for Exclusive {
    type Target = Plane;
    fn deref(&self) -> &Plane {
        &self.0
    }
}

impl Drop for Exclusive {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("SOVEREIGN_E2E_KEEP_PLANES").is_some() {
            eprintln!(
                "plane {} left running for its logs: {}",
                self.0.name,
                self.0.state.join("logs").display()
            );
            return;
        }
        self.0.controlplane("down");
    }
}

impl Plane {
    async fn start(id: PlaneId) -> Plane {
        let index = PLANES
            .iter()
            .position(|(row, _, _)| *row == id)
            .expect("every PlaneId has a row in PLANES");
        let name = PLANES[index].1;
        let root = port_root() + 10 * u16::try_from(index).expect("few planes");
        let plane = Plane {
            name,
            state: planes_root().join(name),
            apiserver_port: root,
            port_base: root + 1,
            crds: OnceCell::const_new(),
            example: OnceCell::const_new(),
            fixtures: OnceCell::const_new(),
            operator_kubeconfig: std::sync::OnceLock::new(),
        };
        // An exclusive plane starts empty, whatever an earlier run left (a failed test keeps
        // its plane for the logs); the shared one is reused when healthy (`up` is
        // idempotent), which `e2e/run.sh` prevents by removing every plane first. Starting
        // blocks for a while, so not on this runtime's thread.
        if id != PlaneId::Shared {
            plane.controlplane("down");
        }
        let starting = plane.command("up");
        let started = std::time::Instant::now();
        let output = tokio::task::spawn_blocking(move || {
            let mut starting = starting;
            starting.output()
        })
        .await
        .expect("controlplane.sh up runs")
        .unwrap_or_else(|e| panic!("cannot run e2e/controlplane.sh: {e}"));
        assert!(
            output.status.success(),
            "plane {name} did not start: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        eprintln!("plane {name} up in {:.1?}", started.elapsed());
        let client = plane.client().await;
        client
            .apiserver_version()
            .await
            .unwrap_or_else(|e| panic!("plane {name} is unreachable: {e}"));
        plane
    }

    /// `e2e/controlplane.sh <verb>` for this plane's state directory and ports.
    fn command(&self, verb: &str) -> std::process::Command {
        let mut command = std::process::Command::new("bash");
        command
            .arg(repo_path("e2e/controlplane.sh"))
            .arg(verb)
            .env("SOVEREIGN_E2E_STATE", &self.state)
            .env("SOVEREIGN_APISERVER_PORT", self.apiserver_port.to_string())
            .env("SOVEREIGN_PORT_BASE", self.port_base.to_string());
        if let Some(regions) = node_regions(self.name) {
            command.env("SOVEREIGN_E2E_NODE_REGIONS", regions);
        }
        command
    }

    fn controlplane(&self, verb: &str) {
        match self.command(verb).output() {
            Ok(output) if output.status.success() => {}
            Ok(output) => eprintln!(
                "controlplane.sh {verb} of plane {}: {}",
                self.name,
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => eprintln!("cannot run controlplane.sh {verb}: {e}"),
        }
    }

    /// The admin kubeconfig (`O=system:masters`).
    pub fn kubeconfig(&self) -> PathBuf {
        self.state.join("kubeconfig")
    }

    /// An admin client of this plane.
    pub async fn client(&self) -> Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(self.kubeconfig())
            .unwrap_or_else(|e| panic!("plane {}: {e}", self.name));
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap_or_else(|e| panic!("plane {}: {e}", self.name));
        Client::try_from(config).unwrap_or_else(|e| panic!("plane {}: {e}", self.name))
    }
}

/// The topology regions whose nodes a plane gets (`controlplane.sh`'s
/// `SOVEREIGN_E2E_NODE_REGIONS`): a cluster per jurisdiction has only its own; None is every
/// node of `e2e/nodes.yaml`.
fn node_regions(plane: &str) -> Option<&'static str> {
    match plane {
        "cluster-eu" => Some("europe-west9 eu-central-1"),
        "cluster-in" => Some("ap-south-1"),
        _ => None,
    }
}

impl Plane {
    /// Stops this plane's API server alone (etcd and the controllers stay): a partition.
    pub fn stop_apiserver(&self) {
        self.controlplane("apiserver-stop");
    }

    /// Starts this plane's API server again and waits until it is ready.
    pub fn start_apiserver(&self) {
        self.controlplane("apiserver-start");
    }

    /// `https://127.0.0.1:<port>`: this plane's API server.
    pub fn server(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }
}

impl Operator {
    /// Whether the process has exited (e.g. after losing its Lease), as kubelet would notice.
    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}
