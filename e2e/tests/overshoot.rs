//! How far a budget overshoots before Block bites, measured with the real LiteLLM proxy under
//! a steady concurrent load, without and with `predictive` — and the guard's propagation path
//! exercised for real: the guard learns its actions only through its own watch of the
//! actions ConfigMap on the plane's API server, authenticated with a TokenRequest token of
//! the ServiceAccount the operator rendered, authorised by the Role the operator rendered
//! (a wrong Role: no 429 ever, and the test fails). Nothing copies the ConfigMap to the
//! mounted file here (the file stays absent).
//!
//! FIGURES ARE PRINTED, NOT ASSERTED (timings on a shared machine): the spend past 100 % at
//! the first 429 and once every request is refused, one interval's spend at the measured
//! rate, and the time from the actions ConfigMap write (as a watch of the test sees it) to
//! the first 429 at the gateway. docs/finops.md "Overshoot" has a run's figures.
//!
//! TEST PLUMBING, said plainly: as in `finops.rs`, the proxy runs on 127.0.0.1 with the
//! config, guard module and environment the operator rendered, the region lists it in
//! `gateway.metricsUrls`, and the upstream is the stub. The pod's projected volume is played
//! by two files (the token from `kubectl create token`, the plane's CA) and
//! `KUBERNETES_SERVICE_HOST` by `SOVEREIGN_API_SERVER`.

use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::ListParams;
use kube::runtime::watcher;
use kube::{Api, Client};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde_json::{Value, json};
use sovereign_operator::api::budget::TokenBudget;

use crate::finops::apply;
use crate::harness::{Operator, PlaneId, eventually, exclusive};
use crate::litellm::{MASTER_KEY, Proxy, RenderedGateway, Stub, WorkDir, free_port, http};

const NAMESPACE: &str = "sovereign-over";
const REGION: &str = "over";
const MODEL: &str = "steady-eu";
/// EUR per million tokens (input, output).
const PRICES: (&str, &str) = ("2.50", "7.50");
/// `--usage-interval`: how often the gateway is scraped and budgets evaluated.
const INTERVAL_SECONDS: u64 = 5;
/// The load: clients, and requests per second all together.
const CLIENTS: usize = 8;
const RATE: f64 = 20.0;
/// The limit is this many intervals' spend at the nominal rate.
const LIMIT_INTERVALS: u32 = 6;
/// Upper bound of one run (the budget must block long before).
const RUN_LIMIT: Duration = Duration::from_secs(240);
/// After the first 429, how long the load goes on to see every request refused.
const AFTER_BLOCK: Duration = Duration::from_secs(4);

/// One request of the load.
struct Sent {
    done: Instant,
    status: u16,
    cost: Decimal,
}

fn cost_of(answer: &Value) -> Decimal {
    let tokens = |field: &str| Decimal::from(answer["usage"][field].as_i64().unwrap_or(0));
    (tokens("prompt_tokens") * Decimal::from_str(PRICES.0).expect("price")
        + tokens("completion_tokens") * Decimal::from_str(PRICES.1).expect("price"))
        / Decimal::from(1_000_000)
}

/// One chat request of `team` (blocking).
fn request(port: u16, team: &str) -> (u16, Decimal) {
    let content = "lorem ipsum ".repeat(20);
    let body = json!({"model": MODEL, "messages": [{"role": "user", "content": content}],
                      "metadata": {"team": team, "cost_center": "CC-1"}})
    .to_string();
    let (status, body, _) = http(
        port,
        "POST",
        "/v1/chat/completions",
        &[("Authorization", &format!("Bearer {MASTER_KEY}"))],
        Some(&body),
    );
    let cost = if status == 200 {
        serde_json::from_str::<Value>(&body)
            .map(|a| cost_of(&a))
            .unwrap_or_default()
    } else {
        Decimal::ZERO
    };
    (status, cost)
}

/// `CLIENTS` threads sending `RATE` requests per second together for `team` until `stop`;
/// the first to be refused notes when in `refused`.
fn load(
    port: u16,
    team: &str,
    stop: Arc<AtomicBool>,
    refused: Arc<Mutex<Option<Instant>>>,
) -> Vec<std::thread::JoinHandle<Vec<Sent>>> {
    let pace = Duration::from_secs_f64(CLIENTS as f64 / RATE);
    (0..CLIENTS)
        .map(|i| {
            let (team, stop, refused) = (team.to_owned(), stop.clone(), refused.clone());
            std::thread::spawn(move || {
                let mut sent = Vec::new();
                // Spread the clients over one pace so that the load is steady, not in waves.
                let mut next = Instant::now() + pace.mul_f64(i as f64 / CLIENTS as f64);
                while !stop.load(Ordering::Relaxed) {
                    let now = Instant::now();
                    if next > now {
                        std::thread::sleep(next - now);
                    }
                    next += pace;
                    let (status, cost) = request(port, &team);
                    let done = Instant::now();
                    if status == 429 {
                        refused
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .get_or_insert(done);
                    }
                    sent.push(Sent { done, status, cost });
                }
                sent
            })
        })
        .collect()
}

/// The plane's API server URL and CA (base64 of the PEM), from its admin kubeconfig.
fn server_and_ca(plane: &crate::harness::Plane) -> (String, String) {
    let view = |path: &str| {
        plane
            .kubectl(&[
                "config",
                "view",
                "--raw",
                "--minify",
                "--flatten",
                "-o",
                &format!("jsonpath={{.clusters[0].cluster.{path}}}"),
            ])
            .trim()
            .to_owned()
    };
    (view("server"), view("certificate-authority-data"))
}

/// `data` (base64) decoded: k8s-openapi's ByteString reads base64.
fn base64_decoded(data: &str) -> Vec<u8> {
    serde_json::from_value::<k8s_openapi::ByteString>(json!(data))
        .expect("base64")
        .0
}

/// A client that authenticates with `token` only.
async fn token_client(server: &str, ca_base64: &str, token: &str) -> Client {
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server,
            "certificate-authority-data": ca_base64}}],
        "users": [{"name": "gateway", "user": {"token": token}}],
        "contexts": [{"name": "gateway", "context": {"cluster": "e2e", "user": "gateway"}}],
        "current-context": "gateway",
    });
    let kubeconfig: kube::config::Kubeconfig =
        serde_json::from_value(config).expect("a kubeconfig");
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .expect("config");
    Client::try_from(config).expect("client")
}

fn is_forbidden<T>(result: &Result<T, kube::Error>) -> bool {
    matches!(result, Err(kube::Error::Api(status)) if status.code == 403)
}

/// What one run measured.
struct Figures {
    limit: Decimal,
    rate: f64,
    at_first_429: Decimal,
    total: Decimal,
    write_to_429: Option<Duration>,
    seconds_to_block: f64,
}

impl Figures {
    fn print(&self, label: &str) {
        let limit = self.limit.to_f64().unwrap_or(1.0);
        let pct = |d: Decimal| (d - self.limit).to_f64().unwrap_or(0.0) / limit * 100.0;
        let interval_spend = self.rate * INTERVAL_SECONDS as f64;
        eprintln!(
            "overshoot [{label}]: limit {} EUR; measured rate {:.6} EUR/s ({:.1} % of the limit per {INTERVAL_SECONDS} s interval); \
             first 429 after {:.1} s; spend past 100 % at the first 429: {:+.2} % of the limit; \
             once every request is refused: {:+.2} % ({:+.2} intervals' spend); \
             actions ConfigMap write to first 429: {}",
            self.limit,
            self.rate,
            interval_spend / limit * 100.0,
            self.seconds_to_block,
            pct(self.at_first_429),
            pct(self.total),
            (self.total - self.limit).to_f64().unwrap_or(0.0) / interval_spend,
            self.write_to_429
                .map(|d| format!("{} ms", d.as_millis()))
                .unwrap_or_else(|| "not seen".into()),
        );
    }
}

/// Runs the load for `team` against budget `name` (limit `limit`, `predictive`) until the
/// gateway refuses it; returns the figures.
async fn run(
    client: &Client,
    proxy_port: u16,
    name: &str,
    team: &str,
    limit: Decimal,
    predictive: bool,
) -> Figures {
    let budgets = Api::<TokenBudget>::namespaced(client.clone(), NAMESPACE);
    apply(
        client,
        json!({"apiVersion": "sovereign.ai/v1alpha1", "kind": "TokenBudget",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {"scope": {"teams": [team], "regions": [REGION]}, "period": "Monthly",
                 "limit": {"amount": limit.normalize().to_string(), "currency": "EUR"},
                 "predictive": predictive,
                 "thresholds": [{"percent": 100, "action": "Block"}]}}),
    )
    .await;
    eventually(&format!("budget {name} opened its period"), || async {
        let budget = budgets.get(name).await.map_err(|e| e.to_string())?;
        budget
            .status
            .and_then(|s| s.period_start)
            .map(|_| ())
            .ok_or_else(|| "no status".to_owned())
    })
    .await;

    // When the Block of this budget appears in the actions ConfigMap, as a watch sees it.
    let written: Arc<Mutex<Option<Instant>>> = Arc::default();
    let seen = written.clone();
    let budget_ref = format!("{NAMESPACE}/{name}");
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE);
    let watch = tokio::spawn(async move {
        let config = watcher::Config::default().fields("metadata.name=sovereign-budget-actions");
        let mut events = watcher::watcher(config_maps, config).boxed();
        while let Some(event) = events.next().await {
            let object = match event {
                Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => cm,
                _ => continue,
            };
            let text = object
                .data
                .as_ref()
                .and_then(|d| d.get("actions.json"))
                .cloned()
                .unwrap_or_default();
            let file: Value = serde_json::from_str(&text).unwrap_or_default();
            let blocked = file["actions"].as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["budget"] == budget_ref.as_str() && x["action"] == "Block")
            });
            if blocked {
                let mut slot = seen.lock().unwrap_or_else(|e| e.into_inner());
                slot.get_or_insert_with(Instant::now);
                return;
            }
        }
    });

    let stop = Arc::new(AtomicBool::new(false));
    let refused: Arc<Mutex<Option<Instant>>> = Arc::default();
    let started = Instant::now();
    let clients = load(proxy_port, team, stop.clone(), refused.clone());
    // Stop AFTER_BLOCK after the first refusal (or at RUN_LIMIT).
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let first = *refused.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_some_and(|t| t.elapsed() >= AFTER_BLOCK) || started.elapsed() >= RUN_LIMIT {
            stop.store(true, Ordering::Relaxed);
            break;
        }
    }
    let mut sent: Vec<Sent> = Vec::new();
    for handle in clients {
        let handle = tokio::task::spawn_blocking(move || handle.join());
        sent.extend(handle.await.expect("joined").expect("a load client"));
    }
    watch.abort();
    sent.sort_by_key(|s| s.done);
    let total: usize = sent.len();
    let first = sent.iter().position(|s| s.status == 429);
    let Some(first) = first else {
        let statuses: std::collections::BTreeMap<u16, usize> =
            sent.iter().fold(Default::default(), |mut m, s| {
                *m.entry(s.status).or_default() += 1;
                m
            });
        panic!(
            "budget {name}: no request of {team} was refused in {RUN_LIMIT:?} ({total} sent: \
             {statuses:?}); the guard's watch may be refused (Role) — see the proxy's litellm.log"
        );
    };
    let first_at = sent[first].done;
    // Once refused, always refused: nothing the team sends after the last success passes.
    let last_ok = sent.iter().rposition(|s| s.status == 200).unwrap_or(0);
    assert!(
        sent[last_ok + 1..].iter().all(|s| s.status == 429),
        "after the last success every request is refused"
    );
    let refused_after = sent[first..].iter().filter(|s| s.status == 429).count();
    assert!(
        refused_after > CLIENTS,
        "the Block holds: {refused_after} refusals"
    );
    let at_first_429: Decimal = sent[..first].iter().map(|s| s.cost).sum();
    let total_spend: Decimal = sent.iter().map(|s| s.cost).sum();
    let seconds = (first_at - started).as_secs_f64().max(1e-3);
    let rate = at_first_429.to_f64().unwrap_or(0.0) / seconds;
    let write = *written.lock().unwrap_or_else(|e| e.into_inner());
    // How the operator saw it: when the threshold was crossed, and what its Event said.
    let budget = budgets.get(name).await.expect("budget");
    let crossed = budget
        .status
        .as_ref()
        .map(|s| s.thresholds_crossed.clone())
        .unwrap_or_default();
    let first_wall = std::time::SystemTime::now() - first_at.elapsed();
    eprintln!(
        "overshoot [{name}]: first 429 at {:?}; thresholds crossed {:?}",
        jiff::Timestamp::try_from(first_wall).ok(),
        crossed
            .iter()
            .map(|c| (c.percent, c.crossed_at.0.to_string()))
            .collect::<Vec<_>>()
    );
    let events = Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await
        .map(|l| l.items)
        .unwrap_or_default();
    for event in events
        .iter()
        .filter(|e| e.involved_object.name.as_deref() == Some(name))
    {
        eprintln!(
            "overshoot [{name}]: Event {}: {}",
            event.reason.as_deref().unwrap_or_default(),
            event.message.as_deref().unwrap_or_default()
        );
    }
    Figures {
        limit,
        rate,
        at_first_429,
        total: total_spend,
        write_to_429: write.map(|w| first_at.saturating_duration_since(w)),
        seconds_to_block: seconds,
    }
}

#[tokio::test]
async fn overshoot_a_steady_load_is_blocked_by_the_guards_own_api_watch() {
    let plane = exclusive(PlaneId::Overshoot).await;
    plane.install_crds().await;
    let client = plane.client().await;
    let proxy_port = free_port();
    let work = WorkDir::new("overshoot");
    let stub = Stub::start(&work);

    crate::finops::priced_region(&client, NAMESPACE, REGION, proxy_port).await;
    apply(
        &client,
        json!({"apiVersion": "sovereign.ai/v1alpha1", "kind": "InferenceBackend",
        "metadata": {"name": MODEL, "namespace": NAMESPACE},
        "spec": {"region": REGION, "modelName": MODEL,
                 "external": {"provider": "Mistral", "endpoint": "https://api.mistral.ai/v1",
                              "hostingJurisdiction": "FR", "upstreamModel": MODEL},
                 "pricing": {"currency": "EUR", "inputPer1MTokens": PRICES.0,
                             "outputPer1MTokens": PRICES.1}}}),
    )
    .await;

    let interval = INTERVAL_SECONDS.to_string();
    let operator = Operator::start(&plane, &["--region", REGION, "--usage-interval", &interval]);

    // The gateway as rendered: config, guard module, environment, and its ServiceAccount.
    let rendered = RenderedGateway::wait(&client, NAMESPACE, &[MODEL]).await;
    let pod = rendered.pod();
    let account = pod
        .service_account_name
        .clone()
        .expect("the gateway pod names its ServiceAccount");
    // TEST PLUMBING: the projected volume's two files.
    let token = eventually("a token of the rendered ServiceAccount", || async {
        let output = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(plane.kubeconfig())
            .args([
                "create",
                "token",
                &account,
                "-n",
                NAMESPACE,
                "--duration",
                "1h",
            ])
            .output()
            .map_err(|e| e.to_string())?;
        if output.status.success() {
            Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&output.stderr).into_owned())
        }
    })
    .await;
    let (server, ca) = server_and_ca(&plane);
    std::fs::write(work.path("token"), &token).expect("token file");
    std::fs::write(work.path("ca.crt"), base64_decoded(&ca)).expect("CA file");

    // The token reads exactly the actions ConfigMap, by name, and nothing else.
    let as_gateway = token_client(&server, &ca, &token).await;
    let gateway_cms = Api::<ConfigMap>::namespaced(as_gateway.clone(), NAMESPACE);
    eventually(
        "the rendered Role lets the gateway list its actions",
        || async {
            gateway_cms
                .list(&ListParams::default().fields("metadata.name=sovereign-budget-actions"))
                .await
                .map(|_| ())
                .map_err(|e| e.to_string())
        },
    )
    .await;
    assert!(
        is_forbidden(&gateway_cms.get("gateway").await),
        "another ConfigMap"
    );
    assert!(
        is_forbidden(&gateway_cms.list(&ListParams::default()).await),
        "a list without the name"
    );
    assert!(
        is_forbidden(
            &Api::<ConfigMap>::namespaced(as_gateway.clone(), "default")
                .list(&ListParams::default().fields("metadata.name=sovereign-budget-actions"))
                .await
        ),
        "the same name in another namespace"
    );

    let env: Vec<(String, String)> = rendered
        .env(&[
            (
                "SOVEREIGN_API_TOKEN_FILE",
                work.path("token").display().to_string(),
            ),
            (
                "SOVEREIGN_API_CA_FILE",
                work.path("ca.crt").display().to_string(),
            ),
        ])
        .into_iter()
        .chain([("SOVEREIGN_API_SERVER".to_owned(), server.clone())])
        .collect();
    assert!(
        env.iter().any(|(n, v)| n == "SOVEREIGN_ACTIONS_CONFIGMAP"
            && v == &format!("{NAMESPACE}/sovereign-budget-actions")),
        "the Deployment names the actions ConfigMap: {env:?}"
    );
    let yaml = rendered.config();
    let guard = rendered.guard();
    let proxy = Proxy::launch(
        &work,
        &yaml,
        &[("sovereign_guard.py", guard.as_str())],
        &env,
        &stub,
        proxy_port,
    );

    // The cost of one request of the load, from a warm-up request of another team.
    let (status, unit) = request(proxy_port, "warm-up");
    assert_eq!(status, 200, "the proxy serves the model");
    let limit = (unit
        * Decimal::from_f64_retain(RATE * INTERVAL_SECONDS as f64).expect("f64")
        * Decimal::from(LIMIT_INTERVALS))
    .round_dp(6);
    eprintln!(
        "overshoot: one request costs {unit} EUR; limit {limit} EUR = {LIMIT_INTERVALS} intervals \
         of {INTERVAL_SECONDS} s at {RATE} requests/s from {CLIENTS} clients"
    );

    let mut figures = Vec::new();
    for (name, team, predictive) in [
        ("over-plain", "steady-plain", false),
        ("over-predictive", "steady-predictive", true),
    ] {
        let measured = run(&client, proxy_port, name, team, limit, predictive).await;
        measured.print(name);
        figures.push((name, measured));
        // Another team is still served: the Block is the budget's scope only.
        assert_eq!(
            request(proxy_port, "warm-up").0,
            200,
            "another team is served"
        );
    }
    for (name, measured) in &figures {
        measured.print(name);
    }
    assert!(
        !work.path("actions.json").exists(),
        "nothing wrote the mounted file: the Blocks came through the guard's own watch"
    );
    proxy.stop();
    operator.assert_no_forbidden();
    operator.stop();
}
