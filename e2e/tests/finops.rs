//! Token FinOps end to end: a real LiteLLM proxy (the cached venv) serving the gateway config
//! the operator rendered into the cluster, a stub upstream, and the operator on the real
//! control plane scraping the proxy's `/metrics` into the region's ledger.
//!
//! A known request mix for two teams, two cost centres and two models goes through the proxy;
//! the proxy restarts midway and so does the operator; the TokenBudget statuses must equal the
//! ground truth (the usage in the stub's answers × the backends' prices) to the token and to
//! the last decimal. Then the search team's budget crosses 80% (exactly one Event) and 100%
//! with Block: its next request fails at the gateway while the support team's still succeeds.
//!
//! TEST PLUMBING, said plainly: the proxy runs on 127.0.0.1, not in a pod (the plane runs
//! KWOK pods, which execute nothing). So the region lists the proxy in
//! `gateway.metricsUrls`, and a task of this test plays kubelet's part for the two files a
//! gateway pod mounts: it copies `config.yaml` and `sovereign_guard.py` from the gateway
//! ConfigMap at start, and the `sovereign-budget-actions` ConfigMap into `actions.json` as it
//! changes.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use k8s_openapi::api::core::v1::{ConfigMap, Event, Namespace};
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sovereign_operator::api::budget::TokenBudget;

use crate::harness::{MANAGER, Operator, PlaneId, eventually, exclusive};
use crate::litellm::{MASTER_KEY, Proxy, RenderedGateway, Stub, WorkDir, free_port};

const NAMESPACE: &str = "sovereign-fin";
const REGION: &str = "fin";

/// Prices of the two backends, EUR per million tokens (input, output).
const LARGE: (&str, &str, &str) = ("large-eu", "2.50", "7.50");
const SMALL: (&str, &str, &str) = ("small-eu", "0.20", "0.60");

/// What the stub answered, per (team, cost centre, model): the ground truth.
#[derive(Default, Debug, Clone)]
struct Truth {
    lines: BTreeMap<(String, String, String), (i64, i64, i64)>,
}

impl Truth {
    fn add(&mut self, team: &str, cost_center: &str, model: &str, input: i64, output: i64) {
        let line = self
            .lines
            .entry((team.into(), cost_center.into(), model.into()))
            .or_default();
        line.0 += input;
        line.1 += output;
        line.2 += 1;
    }

    /// (input, output, requests, EUR) of the lines `keep` selects.
    fn total(&self, keep: impl Fn(&str) -> bool) -> (i64, i64, i64, Decimal) {
        let mut total = (0, 0, 0, Decimal::ZERO);
        for ((team, _, model), (input, output, requests)) in &self.lines {
            if !keep(team) {
                continue;
            }
            let (_, price_in, price_out) = if model == LARGE.0 { LARGE } else { SMALL };
            total.0 += input;
            total.1 += output;
            total.2 += requests;
            total.3 += (Decimal::from(*input) * Decimal::from_str(price_in).expect("price")
                + Decimal::from(*output) * Decimal::from_str(price_out).expect("price"))
                / Decimal::from(1_000_000);
        }
        total
    }
}

/// One chat request through the proxy with team and cost-centre metadata.
fn send(
    proxy: &Proxy,
    truth: &mut Truth,
    team: &str,
    cost_center: &str,
    model: &str,
    words: usize,
) -> u16 {
    let content = "lorem ipsum ".repeat(words);
    let metadata = format!(r#"{{"team": "{team}", "cost_center": "{cost_center}"}}"#);
    let messages = format!(r#"[{{"role": "user", "content": "{content}"}}]"#);
    let (status, body) = proxy.chat_with(model, &messages, &[("metadata", &metadata)]);
    if status == 200 {
        let answer: Value = serde_json::from_str(&body).expect("JSON answer");
        let usage = &answer["usage"];
        truth.add(
            team,
            cost_center,
            model,
            usage["prompt_tokens"].as_i64().expect("prompt tokens"),
            usage["completion_tokens"]
                .as_i64()
                .expect("completion tokens"),
        );
    }
    status
}

/// A round of requests across both teams, both cost centres and both models.
fn mix(proxy: &Proxy, truth: &mut Truth, round: usize) {
    let teams = [
        ("search", "CC-100"),
        ("support", "CC-200"),
        ("search", "CC-200"),
        ("support", "CC-100"),
    ];
    for (i, (team, cost_center)) in teams.iter().enumerate() {
        for model in [LARGE.0, SMALL.0] {
            let status = send(proxy, truth, team, cost_center, model, 3 + 7 * i + round);
            assert_eq!(status, 200, "{team}/{cost_center}/{model} failed");
        }
    }
}

fn spent(budget: &TokenBudget) -> (i64, i64, i64, String) {
    let spent = budget
        .status
        .as_ref()
        .and_then(|s| s.spent.clone())
        .unwrap_or_default();
    (
        spent.input_tokens,
        spent.output_tokens,
        spent.requests,
        spent.amount,
    )
}

fn money(amount: Decimal) -> String {
    amount.normalize().to_string()
}

/// Waits until budget `name` shows exactly `expected` (input, output, requests, amount).
async fn wait_for_spend(api: &Api<TokenBudget>, name: &str, expected: (i64, i64, i64, Decimal)) {
    let want = (expected.0, expected.1, expected.2, money(expected.3));
    eventually(&format!("budget {name} shows {want:?}"), || async {
        let budget = api.get(name).await.map_err(|e| e.to_string())?;
        let seen = spent(&budget);
        if seen == want {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
}

/// Plays kubelet for the actions ConfigMap: copies it into the proxy's `actions.json`.
fn sync_actions(
    client: Client,
    file: std::path::PathBuf,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let api = Api::<ConfigMap>::namespaced(client, NAMESPACE);
        while !stop.load(Ordering::Relaxed) {
            if let Ok(Some(cm)) = api.get_opt("sovereign-budget-actions").await
                && let Some(json) = cm.data.as_ref().and_then(|d| d.get("actions.json"))
                && std::fs::read_to_string(&file).ok().as_deref() != Some(json.as_str())
            {
                // Write then rename, as kubelet swaps the projected files atomically.
                let tmp = file.with_extension("tmp");
                std::fs::write(&tmp, json).expect("actions file");
                std::fs::rename(&tmp, &file).expect("actions file");
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    })
}

/// (budget, percent) of each webhook call received, in order.
pub(crate) fn posted(hooks: &std::sync::Mutex<Vec<Value>>) -> Vec<(String, i64)> {
    hooks
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|m| {
            (
                m["budget"].as_str().unwrap_or("").to_owned(),
                m["percent"].as_i64().unwrap_or(0),
            )
        })
        .collect()
}

/// A webhook receiver on 127.0.0.1: every POST body it gets, answered 200.
pub(crate) fn webhook() -> (u16, Arc<std::sync::Mutex<Vec<Value>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("webhook port");
    let port = listener.local_addr().expect("address").port();
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let mut length = 0usize;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            if reader.read_exact(&mut body).is_ok()
                && let Ok(json) = serde_json::from_slice(&body)
            {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(json);
            }
            let _ = reader
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        }
    });
    (port, received)
}

pub(crate) async fn apply(client: &Client, document: Value) {
    crate::harness::apply(client, &document)
        .await
        .unwrap_or_else(|e| panic!("cannot apply {}: {e}", document["metadata"]["name"]));
}

/// The namespace, the gateway's master-key Secret and the SovereignRegion of a FinOps test: an
/// EU region whose gateway metrics are the test's LiteLLM at `proxy_port`. The region vouches
/// for the provider's host (`egress.hosts`): an external backend on an undeclared host is
/// refused, whatever jurisdiction it claims.
pub(crate) async fn priced_region(client: &Client, namespace: &str, region: &str, proxy_port: u16) {
    Api::<Namespace>::all(client.clone())
        .patch(
            namespace,
            &PatchParams::apply(MANAGER),
            &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}})),
        )
        .await
        .expect("namespace");
    apply(
        client,
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "gateway-master", "namespace": namespace},
        "stringData": {"key": MASTER_KEY}}),
    )
    .await;
    apply(
        client,
        json!({"apiVersion": "sovereign.ai/v1alpha1", "kind": "SovereignRegion",
        "metadata": {"name": region},
        "spec": {"jurisdiction": "EU", "locations": ["europe-west9"], "namespace": namespace,
                 "egress": {"hosts": ["api.mistral.ai"]},
                 "gateway": {"replicas": 1,
                             "masterKeySecret": {"name": "gateway-master", "key": "key"},
                             "metricsUrls": [format!("http://127.0.0.1:{proxy_port}/metrics/")]},
                 "vectorStore": {"engine": "None"}}}),
    )
    .await;
}

/// Events of threshold `percent` on the budget with `uid` (Events outlive their object: a
/// previous run's are still there).
async fn threshold_events(client: &Client, uid: &str, percent: i32) -> i32 {
    let events = Api::<Event>::namespaced(client.clone(), NAMESPACE)
        .list(&ListParams::default())
        .await
        .expect("events");
    events
        .items
        .iter()
        .filter(|e| e.involved_object.uid.as_deref() == Some(uid))
        .filter(|e| e.reason.as_deref() == Some("ThresholdCrossed"))
        .filter(|e| {
            e.message
                .as_deref()
                .unwrap_or("")
                .starts_with(&format!("{percent}% threshold"))
        })
        .map(|e| {
            e.count
                .unwrap_or(1)
                .max(e.series.as_ref().and_then(|s| s.count).unwrap_or(1))
        })
        .sum()
}

#[tokio::test]
async fn budgets_count_every_token_once_across_restarts_and_block_at_the_gateway() {
    // Its own plane: exact totals and "one Event per threshold" need a cluster where no other
    // operator counts or announces.
    let plane = exclusive(PlaneId::FinOps).await;
    plane.install_crds().await;
    let client = plane.client().await;
    let proxy_port = free_port();
    let work = WorkDir::new("finops");
    let stub = Stub::start(&work);

    let budgets = Api::<TokenBudget>::namespaced(client.clone(), NAMESPACE);

    // The region, its master key, two priced external backends and two budgets.
    priced_region(&client, NAMESPACE, REGION, proxy_port).await;
    for (model, price_in, price_out) in [LARGE, SMALL] {
        apply(
            &client,
            json!({"apiVersion": "sovereign.ai/v1alpha1", "kind": "InferenceBackend",
            "metadata": {"name": model, "namespace": NAMESPACE},
            "spec": {"region": REGION, "modelName": model,
                     "external": {"provider": "Mistral", "endpoint": "https://api.mistral.ai/v1",
                                  "hostingJurisdiction": "FR", "upstreamModel": model},
                     "pricing": {"currency": "EUR", "inputPer1MTokens": price_in,
                                 "outputPer1MTokens": price_out}}}),
        )
        .await;
    }
    for (name, teams) in [("fin-all", json!([])), ("fin-search", json!(["search"]))] {
        apply(
            &client,
            json!({"apiVersion": "sovereign.ai/v1alpha1", "kind": "TokenBudget",
            "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"scope": {"teams": teams, "regions": [REGION]}, "period": "Monthly",
                     "timeZone": "Europe/Paris", "limit": {"amount": "1000", "currency": "EUR"},
                     "thresholds": [{"percent": 80, "action": "Notify"},
                                    {"percent": 100, "action": "Block"}]}}),
        )
        .await;
    }

    let (hook_port, hooks) = webhook();
    apply(
        &client,
        json!({"apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": "budget-webhook", "namespace": NAMESPACE},
        "stringData": {"url": format!("http://127.0.0.1:{hook_port}/budget")}}),
    )
    .await;

    let mut operator = Operator::start(&plane, &["--region", REGION, "--usage-interval", "2"]);

    // The gateway config the operator rendered, as the pod would mount it.
    let rendered = RenderedGateway::wait(&client, NAMESPACE, &[LARGE.0, SMALL.0]).await;
    let env = rendered.env(&[]);
    let yaml = rendered.config();
    let guard = rendered.guard();
    let gateway_files = [("sovereign_guard.py", guard.as_str())];
    let mut proxy = Proxy::launch(&work, &yaml, &gateway_files, &env, &stub, proxy_port);
    let stop_sync = Arc::new(AtomicBool::new(false));
    let sync = sync_actions(client.clone(), work.path("actions.json"), stop_sync.clone());

    for name in ["fin-all", "fin-search"] {
        eventually(&format!("budget {name} opened its period"), || async {
            let budget = budgets.get(name).await.map_err(|e| e.to_string())?;
            budget
                .status
                .and_then(|s| s.period_start)
                .map(|_| ())
                .ok_or_else(|| "no status".to_owned())
        })
        .await;
    }

    let mut truth = Truth::default();
    let search = |team: &str| team == "search";

    // Phase 1, then the proxy restarts: its counters start again from zero.
    mix(&proxy, &mut truth, 0);
    wait_for_spend(&budgets, "fin-all", truth.total(|_| true)).await;
    proxy.stop();
    proxy = Proxy::launch(&work, &yaml, &gateway_files, &env, &stub, proxy_port);

    // Phase 2, then the operator restarts; phase 3 happens while it is down.
    mix(&proxy, &mut truth, 1);
    wait_for_spend(&budgets, "fin-all", truth.total(|_| true)).await;
    operator.stop();
    mix(&proxy, &mut truth, 2);
    operator = Operator::start(&plane, &["--region", REGION, "--usage-interval", "2"]);
    wait_for_spend(&budgets, "fin-all", truth.total(|_| true)).await;
    wait_for_spend(&budgets, "fin-search", truth.total(search)).await;
    eprintln!(
        "ground truth after three phases: {:?}",
        truth.total(|_| true)
    );

    // The search team's limit is set so that its spend is at about 85%: the 80% Notify fires.
    let search_uid = budgets
        .get("fin-search")
        .await
        .expect("budget")
        .metadata
        .uid
        .expect("uid");
    let search_spend = truth.total(search).3;
    let limit = (search_spend * Decimal::from_str("1.18").expect("decimal"))
        .round_dp_with_strategy(6, rust_decimal::RoundingStrategy::AwayFromZero);
    budgets
        .patch("fin-search", &PatchParams::apply(MANAGER), &Patch::Apply(json!({
            "apiVersion": "sovereign.ai/v1alpha1", "kind": "TokenBudget",
            "metadata": {"name": "fin-search", "namespace": NAMESPACE},
            "spec": {"scope": {"teams": ["search"], "regions": [REGION]}, "period": "Monthly",
                     "timeZone": "Europe/Paris", "limit": {"amount": money(limit), "currency": "EUR"},
                     "thresholds": [{"percent": 80, "action": "Notify"},
                                    {"percent": 100, "action": "Block"}],
                     "notify": {"webhookSecret": {"name": "budget-webhook", "key": "url"}}}})))
        .await
        .expect("lower the search limit");
    eventually("the 80% threshold fires", || async {
        match threshold_events(&client, &search_uid, 80).await {
            0 => Err("no event".to_owned()),
            n => Ok(n),
        }
    })
    .await;

    // Search keeps spending until it is over the limit; Block fires and reaches the gateway.
    let mut rounds = 0;
    while truth.total(search).3 < limit {
        assert_eq!(
            send(&proxy, &mut truth, "search", "CC-100", LARGE.0, 40),
            200
        );
        rounds += 1;
        assert!(rounds < 50, "search never reached its limit");
    }
    wait_for_spend(&budgets, "fin-search", truth.total(search)).await;
    let actions = work.path("actions.json");
    eventually("the Block action reaches the gateway", || async {
        let text = std::fs::read_to_string(&actions).unwrap_or_default();
        if text.contains("\"Block\"") {
            Ok(())
        } else {
            Err(text)
        }
    })
    .await;
    let blocked = send(&proxy, &mut truth, "search", "CC-100", SMALL.0, 5);
    assert_eq!(blocked, 429, "the search team is blocked at the gateway");
    let allowed = send(&proxy, &mut truth, "support", "CC-100", SMALL.0, 5);
    assert_eq!(allowed, 200, "the support team is not");

    // Everything still adds up, and each threshold was announced exactly once.
    wait_for_spend(&budgets, "fin-all", truth.total(|_| true)).await;
    let search_budget = budgets.get("fin-search").await.expect("budget");
    let status = search_budget.status.clone().expect("status");
    let crossed: Vec<i32> = status
        .thresholds_crossed
        .iter()
        .map(|t| t.percent)
        .collect();
    assert_eq!(crossed, [80, 100]);
    let exceeded = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Exceeded")
        .expect("Exceeded");
    assert_eq!(exceeded.status, "True");
    // A second announcement would come from a later evaluation: let each budget be evaluated
    // twice more (the operator's own counter) before counting the Events.
    let evaluated = operator.reconciles("budget").await;
    operator.wait_reconciles("budget", evaluated + 4.0).await;
    assert_eq!(
        threshold_events(&client, &search_uid, 80).await,
        1,
        "the 80% Event is published once"
    );
    assert_eq!(
        threshold_events(&client, &search_uid, 100).await,
        1,
        "the 100% Event is published once"
    );
    let posted = posted(&hooks);
    let expected = format!("{NAMESPACE}/fin-search");
    assert_eq!(
        posted,
        [(expected.clone(), 80), (expected, 100)],
        "one webhook call per threshold"
    );

    // The finance report from the cluster equals the statuses.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sovereign-operator"))
        .env("KUBECONFIG", plane.kubeconfig())
        .args([
            "report",
            "-n",
            NAMESPACE,
            "--by",
            "team,cost-center",
            "--format",
            "json",
        ])
        .output()
        .expect("report runs");
    assert!(
        output.status.success(),
        "report failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("report JSON");
    let all = budgets.get("fin-all").await.expect("budget");
    let (_, _, _, amount) = spent(&all);
    let total = report["totals"]
        .as_array()
        .expect("totals")
        .iter()
        .find(|t| t["budget"] == "fin-all")
        .expect("fin-all total");
    assert_eq!(total["cost"], amount);
    let rows_sum: Decimal = report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter(|r| r["budget"] == "fin-all")
        .map(|r| Decimal::from_str(r["cost"].as_str().unwrap_or("0")).expect("decimal"))
        .sum();
    assert_eq!(money(rows_sum), amount);
    let csv = std::process::Command::new(env!("CARGO_BIN_EXE_sovereign-operator"))
        .env("KUBECONFIG", plane.kubeconfig())
        .args(["report", "-n", NAMESPACE, "--format", "csv"])
        .output()
        .expect("report runs");
    let csv = String::from_utf8_lossy(&csv.stdout);
    assert!(csv.starts_with("BilledCost,BillingCurrency,"), "{csv}");
    // FOCUS rows per token direction, from what the real gateway counted: the Input and
    // Output Tokens rows of fin-all hold its tokens and, with any unsplit rest, its cost.
    let mut reader = csv::Reader::from_reader(csv.as_bytes());
    let headers = reader.headers().expect("headers").clone();
    let column = |name: &str| headers.iter().position(|h| h == name).expect(name);
    let (mut billed, mut input, mut output) = (Decimal::ZERO, 0i64, 0i64);
    for record in reader.records() {
        let record = record.expect("record");
        if !record[column("Tags")].contains(&format!("\"budget\":\"{NAMESPACE}/fin-all\"")) {
            continue;
        }
        billed += Decimal::from_str(&record[column("BilledCost")]).expect("decimal");
        let quantity: i64 = record[column("ConsumedQuantity")].parse().expect("integer");
        match &record[column("SkuMeter")] {
            "Input Tokens" => input += quantity,
            "Output Tokens" => output += quantity,
            other => assert_eq!(quantity, 0, "{other} row with tokens: the split is missing"),
        }
    }
    let (all_input, all_output, _, _) = spent(&all);
    assert_eq!((input, output), (all_input, all_output), "{csv}");
    assert_eq!(money(billed), amount, "{csv}");
    let personal = ["@example", "end_user", "hashed_api_key", MASTER_KEY];
    let all_status = serde_json::to_string(&all.status).expect("json");
    for leaked in personal {
        assert!(
            !csv.contains(leaked) && !all_status.contains(leaked),
            "{leaked} leaked"
        );
    }

    stop_sync.store(true, Ordering::Relaxed);
    let _ = sync.await;
    proxy.stop();
    operator.stop();
}

/// The guard module the operator ships in the gateway ConfigMap, run in the LiteLLM venv's
/// Python with LiteLLM's own types: Block, Throttle, Downgrade, scope matching, a missing and a
/// malformed actions file (`e2e/litellm/test_guard.py`). The Block path also runs through the
/// real proxy in the test above.
#[test]
fn the_gateway_guard_blocks_throttles_and_downgrades() {
    use sovereign_operator::render::gateway_config::{GUARD_FILE, GUARD_MODULE};
    let work = WorkDir::new("guard");
    let module = work.path(GUARD_FILE);
    std::fs::write(&module, GUARD_MODULE).expect("guard module");
    let python = crate::litellm::litellm_binary().with_file_name("python");
    let output = std::process::Command::new(&python)
        .arg(crate::harness::repo_path("e2e/litellm/test_guard.py"))
        .arg(&module)
        .arg(&work.0)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("guard ok"),
        "the guard failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}
