//! The operator's own image: `scripts/image.sh` builds an OCI image archive from the binary this
//! suite built (no container engine: umoci and skopeo from Debian), skopeo reads it back, and
//! it is what the Helm chart deploys by default (reference, user, port). Then umoci unpacks it
//! and its entrypoint runs from the unpacked root, as the chart's Pod would run it: the chart's
//! args replacing the image's CMD, uid/gid 65532 with no passwd entry, no capabilities, a
//! read-only root, the ServiceAccount token and CA at the in-cluster path, its own network
//! namespace. `run` must reach Ready (`/readyz`) and hold the leader Lease, under the chart's
//! RBAC, against this plane's API server.
//!
//! SIMULATED, said plainly: the container runtime (bubblewrap plays it: mount, PID, IPC, UTS
//! and user namespaces, no cgroups, no seccomp profile), and the in-cluster network: the
//! kubelet's `KUBERNETES_SERVICE_HOST`/`PORT` name the API server through a forwarder on the
//! namespace's loopback (the plane's certificate is valid for 127.0.0.1, not for a Service IP).
//! The image is built from the debug binary (the suite's); `make image` builds the same image
//! from the release binary.
//!
//! Runnable alone: `cargo test --features e2e --test e2e image`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::dataplane::{Supervised, forward, free_port};
use crate::harness::{PlaneId, RELEASE, RELEASE_NAMESPACE, exclusive, helm, repo_path};

/// Where a Pod's ServiceAccount credentials are (kube's in-cluster configuration reads them).
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// The Pod name the downward API would give (the leader election identity).
const POD_NAME: &str = "sovereign-operator-image-0";
/// How long the operator may take to be Ready: a bound, not an assertion on speed.
const READY_PATIENCE: Duration = Duration::from_secs(120);

/// Runs `program args`; panics with its stderr when it fails; returns its stdout.
fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        output.status.success(),
        "{program} {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The chart's operator container and pod security context, as `helm template` renders them
/// with the default values.
fn chart_deployment() -> Value {
    let chart = repo_path("charts/sovereign-operator");
    let rendered = helm(&[
        "template",
        RELEASE,
        &chart.to_string_lossy(),
        "--kube-version",
        "1.33.0",
        "--namespace",
        RELEASE_NAMESPACE,
        "--show-only",
        "templates/deployment.yaml",
    ]);
    serde_yaml_ng::from_str(&rendered).expect("the chart's Deployment is YAML")
}

/// A network namespace of this test (loopback only), deleted when dropped.
struct Netns(String);

impl Netns {
    fn new() -> Self {
        let name = format!("sovimg{}", std::process::id());
        let _ = Command::new("ip")
            .args(["netns", "del", &name])
            .stderr(Stdio::null())
            .status();
        run("ip", &["netns", "add", &name]);
        run("ip", &["-n", &name, "link", "set", "lo", "up"]);
        Self(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// The PID of the process running `comm` among the descendants of `root` (host view).
fn descendant(root: u32, comm: &str) -> Option<u32> {
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse().ok());
        if let Some(ppid) = ppid {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut todo = vec![root];
    while let Some(pid) = todo.pop() {
        let name = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if name.trim() == comm {
            return Some(pid);
        }
        todo.extend(children.get(&pid).into_iter().flatten());
    }
    None
}

/// `GET path` on `port` of the host's loopback; the status code, None when unreachable.
async fn get_status(port: u16, path: &str) -> Option<u16> {
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    Some(response.status().as_u16())
}

/// The `KEY=VALUE` lines of `scripts/image.sh`'s output.
fn key_values(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn unpack(archive: &Path, dir: &Path) -> (PathBuf, Value) {
    let layout = dir.join("layout");
    let bundle = dir.join("bundle");
    let started = Instant::now();
    run(
        "skopeo",
        &[
            "--insecure-policy",
            "copy",
            "--quiet",
            &format!("oci-archive:{}", archive.display()),
            &format!("oci:{}:unpacked", layout.display()),
        ],
    );
    run(
        "umoci",
        &[
            "unpack",
            "--image",
            &format!("{}:unpacked", layout.display()),
            &bundle.to_string_lossy(),
        ],
    );
    eprintln!(
        "image: unpacked with skopeo + umoci in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let config: Value = serde_json::from_str(
        &std::fs::read_to_string(bundle.join("config.json")).expect("umoci's config.json"),
    )
    .expect("config.json is JSON");
    // umoci makes the bundle private to root; uid 65532 must reach the root filesystem in it,
    // as a runtime's would.
    run("chmod", &["0755", &bundle.to_string_lossy()]);
    (bundle.join("rootfs"), config)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_the_operator_image_runs_as_the_chart_says_and_becomes_ready() {
    let work = std::env::temp_dir().join(format!("sovereign-image-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");

    // Build from the binary this suite built.
    let archive = work.join("sovereign-operator.oci.tar");
    let started = Instant::now();
    let output = Command::new("bash")
        .arg(repo_path("scripts/image.sh"))
        .arg(env!("CARGO_BIN_EXE_sovereign-operator"))
        .arg(&archive)
        .stderr(Stdio::inherit())
        .output()
        .expect("bash runs scripts/image.sh");
    assert!(
        output.status.success(),
        "scripts/image.sh failed ({})",
        output.status
    );
    eprintln!(
        "image: scripts/image.sh took {:.1} s, archive {} MiB",
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&archive).map(|m| m.len()).unwrap_or(0) / (1024 * 1024)
    );
    let built = key_values(&String::from_utf8_lossy(&output.stdout));

    // A real OCI tool reads it back; the chart deploys exactly this image, as this user, on
    // this port.
    let archive_ref = format!("oci-archive:{}", archive.display());
    let image: Value = serde_json::from_str(&run("skopeo", &["inspect", "--config", &archive_ref]))
        .expect("skopeo inspect --config is JSON");
    let manifest: Value = serde_json::from_str(&run("skopeo", &["inspect", "--raw", &archive_ref]))
        .expect("skopeo inspect --raw is JSON");
    eprintln!(
        "image: {} layer(s), {} bytes compressed",
        manifest["layers"].as_array().map_or(0, Vec::len),
        manifest["layers"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|l| l["size"].as_u64())
            .sum::<u64>()
    );
    let deployment = chart_deployment();
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"].as_str(),
        built.get("IMAGE_REF").map(String::as_str),
        "the chart's default image is not the one scripts/image.sh builds"
    );
    let user = format!(
        "{}:{}",
        pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
    );
    assert_eq!(
        image["config"]["User"].as_str(),
        Some(user.as_str()),
        "the image's user is not the chart's runAsUser:runAsGroup"
    );
    let port = container["ports"][0]["containerPort"]
        .as_u64()
        .expect("the chart's metrics port");
    assert!(
        image["config"]["ExposedPorts"]
            .get(format!("{port}/tcp"))
            .is_some(),
        "the image does not expose the chart's metrics port {port}: {}",
        image["config"]
    );
    assert_eq!(image["os"], "linux");
    assert_eq!(image["architecture"], "amd64");

    // Unpacked by umoci: the runtime bundle's process is the image's entrypoint as 65532.
    let (rootfs, bundle_config) = unpack(&archive, &work);
    let process = &bundle_config["process"];
    assert_eq!(process["user"]["uid"], 65532);
    assert_eq!(process["user"]["gid"], 65532);
    let image_args: Vec<String> = serde_json::from_value(process["args"].clone()).expect("args");
    let entrypoint: Vec<String> =
        serde_json::from_value(image["config"]["Entrypoint"].clone()).expect("Entrypoint");
    assert!(
        image_args.starts_with(&entrypoint),
        "{image_args:?} / {entrypoint:?}"
    );
    // The image has no accounts at all: the uid has no passwd entry.
    assert!(
        !rootfs.join("etc/passwd").exists(),
        "the image carries /etc/passwd"
    );

    // The plane, the chart's RBAC and a token of its ServiceAccount, at the in-cluster path.
    let plane = exclusive(PlaneId::Image).await;
    plane.install_crds().await;
    let kubeconfig: Value = serde_json::from_str(
        &std::fs::read_to_string(plane.operator_kubeconfig()).expect("operator kubeconfig"),
    )
    .expect("kubeconfig JSON");
    let server = kubeconfig["clusters"][0]["cluster"]["server"]
        .as_str()
        .expect("server")
        .trim_start_matches("https://")
        .to_owned();
    let (api_host, api_port) = server.rsplit_once(':').expect("host:port");
    let service_account = work.join("serviceaccount");
    std::fs::create_dir_all(&service_account).expect("service account dir");
    std::fs::write(
        service_account.join("token"),
        kubeconfig["users"][0]["user"]["token"]
            .as_str()
            .expect("token"),
    )
    .expect("token file");
    let ca = Command::new("base64")
        .arg("-d")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                stdin.write_all(
                    kubeconfig["clusters"][0]["cluster"]["certificate-authority-data"]
                        .as_str()
                        .unwrap_or_default()
                        .as_bytes(),
                )?;
            }
            child.wait_with_output()
        })
        .expect("base64 -d");
    std::fs::write(service_account.join("ca.crt"), ca.stdout).expect("ca.crt");
    std::fs::write(service_account.join("namespace"), RELEASE_NAMESPACE).expect("namespace");
    run("chmod", &["-R", "a+rX", &service_account.to_string_lossy()]);
    // The runtime makes the mount points in the root, as root, before the container starts.
    for dir in ["proc", "dev", SERVICE_ACCOUNT_DIR.trim_start_matches('/')] {
        std::fs::create_dir_all(rootfs.join(dir)).expect("mount point");
    }

    // The Pod's network: its own namespace, the API server at the kubelet's service env.
    let netns = Netns::new();
    let _api = forward(&format!("{}:{server}", netns.0), &server);

    // The kubelet's rules: the chart's args replace the image's CMD; env is the image's, then
    // the chart's (downward API resolved), then the service variables.
    let chart_args: Vec<String> =
        serde_json::from_value(container["args"].clone()).expect("the chart's args");
    let mut env: Vec<(String, String)> = process["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e.as_str()?.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for variable in container["env"].as_array().into_iter().flatten() {
        let name = variable["name"].as_str().expect("env name").to_owned();
        let value = match variable["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => POD_NAME.to_owned(),
            Some("metadata.namespace") => RELEASE_NAMESPACE.to_owned(),
            Some(other) => panic!("the chart's env {name} needs fieldRef {other}"),
            None => variable["value"].as_str().unwrap_or_default().to_owned(),
        };
        env.push((name, value));
    }
    env.push(("HOSTNAME".into(), POD_NAME.into()));
    env.push(("KUBERNETES_SERVICE_HOST".into(), api_host.to_owned()));
    env.push(("KUBERNETES_SERVICE_PORT".into(), api_port.to_owned()));
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], serde_json::json!(["ALL"]));

    let (uid, gid) = (
        pod["securityContext"]["runAsUser"].to_string(),
        pod["securityContext"]["runAsGroup"].to_string(),
    );
    let mut command = Command::new("ip");
    command.args(["netns", "exec", &netns.0]);
    // Down to the Pod's uid with no capabilities first; bubblewrap then builds the container
    // in a user namespace that maps only that uid.
    command.args([
        "setpriv",
        &format!("--reuid={uid}"),
        &format!("--regid={gid}"),
        "--clear-groups",
        "--no-new-privs",
        "--inh-caps=-all",
        "--bounding-set=-all",
    ]);
    command.args([
        "bwrap",
        "--die-with-parent",
        "--unshare-user",
        "--uid",
        &uid,
        "--gid",
        &gid,
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--hostname",
        POD_NAME,
        "--bind",
    ]);
    command.arg(&rootfs).arg("/");
    command.args(["--proc", "/proc", "--dev", "/dev", "--ro-bind"]);
    command.arg(&service_account).arg(SERVICE_ACCOUNT_DIR);
    command.args(["--remount-ro", "/", "--chdir"]);
    command.arg(process["cwd"].as_str().unwrap_or("/"));
    command.arg("--clearenv");
    for (k, v) in &env {
        command.args(["--setenv", k, v]);
    }
    command.arg("--").arg(&entrypoint[0]).args(&chart_args);
    let log_path = work.join("operator.log");
    let log = std::fs::File::create(&log_path).expect("log");
    eprintln!(
        "image: {:?}\nimage: operator log {}",
        command,
        log_path.display()
    );
    let started = Instant::now();
    let mut operator = Supervised {
        what: "operator from its image".into(),
        child: command
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("the operator starts from its image"),
    };

    // The kubelet's readiness probe: GET /readyz on the metrics port, from outside the Pod.
    let probe_port = free_port();
    let _probe = forward(
        &format!("127.0.0.1:{probe_port}"),
        &format!("{}:127.0.0.1:{port}", netns.0),
    );
    loop {
        if let Some(status) = operator.exited() {
            panic!(
                "the operator from its image exited ({status}):\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        if get_status(probe_port, "/readyz").await == Some(200) {
            break;
        }
        assert!(
            started.elapsed() < READY_PATIENCE,
            "the operator from its image is not Ready after {READY_PATIENCE:?}:\n{}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "image: the operator from its image is Ready {:.2} s after its start",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(get_status(probe_port, "/healthz").await, Some(200));

    // It runs as the chart says: uid and gid 65532 on the host too, no capabilities, a
    // read-only root.
    let pid = descendant(operator.child.id(), "sovereign-opera").expect("the operator's pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .unwrap_or_default()
    };
    assert_eq!(field("Uid:"), format!("{uid} {uid} {uid} {uid}"));
    assert_eq!(field("Gid:"), format!("{gid} {gid} {gid} {gid}"));
    assert_eq!(field("CapEff:"), "0000000000000000");
    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("mountinfo");
    let root_options = mountinfo
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .rfind(|f| f.get(4) == Some(&"/"))
        .and_then(|f| f.get(5).map(|o| o.to_string()))
        .unwrap_or_default();
    assert!(
        root_options.split(',').any(|o| o == "ro"),
        "the root is not read-only: {root_options}"
    );

    // It leads: the Lease in the release namespace names this Pod.
    let holder = plane.kubectl(&[
        "get",
        "lease",
        RELEASE,
        "-n",
        RELEASE_NAMESPACE,
        "-o",
        "jsonpath={.spec.holderIdentity}",
    ]);
    assert_eq!(
        holder.trim(),
        POD_NAME,
        "the operator from its image does not lead"
    );
    let text = std::fs::read_to_string(&log_path).unwrap_or_default();
    let forbidden: Vec<&str> = text
        .lines()
        .filter(|l| l.to_ascii_lowercase().contains("forbidden"))
        .take(5)
        .collect();
    assert!(forbidden.is_empty(), "refused API calls: {forbidden:#?}");

    drop(operator);
    let _ = std::fs::remove_dir_all(&work);
}
