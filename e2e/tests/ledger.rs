//! The sharded usage ledger against a real API server: the usage collector counts a synthetic
//! exposition of 200,000 series (a stub `/metrics` server, as a gateway with that many
//! team × key × model series would serve) exactly, with every shard ConfigMap stored; then 1 %
//! of the series change, then all of them. The bytes each step wrote are printed — from the
//! operator's `sovereign_usage_ledger_written_bytes_total` and the API server's own request
//! size metrics — not asserted.
//!
//! Its own plane: the API server's request-size figures must be this test's alone.

use std::io::{BufRead, BufReader, Write};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use sovereign_operator::api::SovereignRegion;
use sovereign_operator::controllers::usage::{LEDGER_NAME, region_ledger, shard_selector};
use sovereign_operator::finops::ledger::Ledger;

use crate::harness::{MANAGER, Operator, PlaneId, exclusive};

const NAMESPACE: &str = "sovereign-ledger";
const REGION: &str = "ledger";
const SERIES: usize = 200_000;
/// A debug build parses, shards and compresses 200,000 series per tick: slower than the
/// harness's usual patience.
const PATIENCE: Duration = Duration::from_secs(900);

/// The ledger of `region` as the budget controller reads it: its shards, or the previous
/// release's single ConfigMap until it is migrated.
pub async fn stored(client: &Client, region: &str) -> Result<Ledger, String> {
    let object = Api::<SovereignRegion>::all(client.clone())
        .get(region)
        .await
        .map_err(|e| e.to_string())?;
    let api = Api::<ConfigMap>::namespaced(client.clone(), &object.stack_namespace());
    let legacy = api.get_opt(LEDGER_NAME).await.map_err(|e| e.to_string())?;
    let shards = api
        .list(&ListParams::default().labels(&shard_selector(region)))
        .await
        .map_err(|e| e.to_string())?
        .items;
    region_ledger(legacy.as_ref(), &shards, &object.uid().unwrap_or_default())
        .map_err(|e| e.to_string())
}

/// The stub's exposition: `SERIES` series of input and output tokens, values from `value`.
fn exposition(value: impl Fn(usize) -> (u64, u64)) -> String {
    let mut text = String::with_capacity(SERIES * 2 * 90);
    text.push_str("# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds 1.7e9\n");
    for (family, output) in [
        ("litellm_input_tokens_metric_total", false),
        ("litellm_output_tokens_metric_total", true),
    ] {
        text.push_str(&format!("# TYPE {family} counter\n"));
        for i in 0..SERIES {
            let (input, out) = value(i);
            text.push_str(&format!(
                "{family}{{team=\"t{:02}\",api_key_alias=\"k{i:06}\",requested_model=\"m{}\",model_id=\"{NAMESPACE}.d{}\"}} {}\n",
                i % 40,
                i % 4,
                i % 4,
                if output { out } else { input }
            ));
        }
    }
    text
}

/// A `/metrics` server on 127.0.0.1 serving whatever `body` holds at the time of a request.
fn stub(body: Arc<RwLock<Arc<String>>>) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("stub port");
    let port = listener.local_addr().expect("address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let body = body.read().unwrap_or_else(|e| e.into_inner()).clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                }
                let mut stream = reader.into_inner();
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream
                    .write_all(head.as_bytes())
                    .and_then(|()| stream.write_all(body.as_bytes()));
            });
        }
    });
    port
}

/// Polls `check` every two seconds until it returns Ok or `PATIENCE` runs out.
async fn until<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + PATIENCE;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what} did not happen within {PATIENCE:?}; last seen: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_secs(2)).await,
        }
    }
}

/// Sum of the API server's request body sizes for ConfigMap writes, by verb, from its own
/// `/metrics` (`apiserver_request_body_size_bytes`, or the older `apiserver_request_body_sizes`).
fn apiserver_configmap_bytes(plane: &crate::harness::Exclusive) -> Vec<(String, f64)> {
    let text = plane.kubectl(&["get", "--raw", "/metrics"]);
    text.lines()
        .filter(|l| {
            (l.starts_with("apiserver_request_body_size_bytes_sum")
                || l.starts_with("apiserver_request_body_sizes_sum"))
                && l.contains("resource=\"configmaps\"")
        })
        .filter_map(|l| {
            let (labels, value) = l.rsplit_once(' ')?;
            let verb = labels
                .split("verb=\"")
                .nth(1)?
                .split('"')
                .next()?
                .to_owned();
            Some((verb, value.parse().ok()?))
        })
        .collect()
}

/// What one step of the test cost.
struct Cost {
    operator_bytes: f64,
    commits: f64,
    apiserver: Vec<(String, f64)>,
}

async fn cost(operator: &Operator, plane: &crate::harness::Exclusive) -> Cost {
    let filter = format!("region=\"{REGION}\"");
    Cost {
        operator_bytes: operator
            .metric_sum("sovereign_usage_ledger_written_bytes_total", &filter)
            .await
            .unwrap_or(f64::NAN),
        commits: operator
            .metric_sum("sovereign_usage_ledger_commits_total", &filter)
            .await
            .unwrap_or(f64::NAN),
        apiserver: apiserver_configmap_bytes(plane),
    }
}

fn report(step: &str, before: &Cost, after: &Cost, seconds: f64) {
    let apiserver: Vec<String> = after
        .apiserver
        .iter()
        .map(|(verb, bytes)| {
            let was = before
                .apiserver
                .iter()
                .find(|(v, _)| v == verb)
                .map_or(0.0, |(_, b)| *b);
            format!("{verb} {:.0}", bytes - was)
        })
        .collect();
    eprintln!(
        "ledger e2e, {step}: {:.0} shard writes, {:.0} bytes sent by the operator; API server ConfigMap request bodies (bytes, by verb, whole plane): {}; counted within {seconds:.1} s",
        after.commits - before.commits,
        after.operator_bytes - before.operator_bytes,
        if apiserver.is_empty() {
            "no body size metric".to_owned()
        } else {
            apiserver.join(", ")
        }
    );
}

/// Waits until the stored ledger holds exactly `series` series and `tokens` tokens.
async fn counted(client: &Client, tokens: (u64, u64)) {
    until(&format!("the ledger counts {tokens:?}"), || async {
        let ledger = stored(client, REGION).await?;
        let total = ledger.grand_total();
        let seen = (
            ledger.usage.len(),
            (total.input_tokens, total.output_tokens),
        );
        if seen == (SERIES, tokens) {
            Ok(())
        } else {
            Err(format!("{seen:?}"))
        }
    })
    .await;
}

fn totals(value: impl Fn(usize) -> (u64, u64)) -> (u64, u64) {
    (0..SERIES).fold((0, 0), |(a, b), i| {
        let (input, output) = value(i);
        (a + input, b + output)
    })
}

#[tokio::test]
async fn two_hundred_thousand_series_are_counted_exactly_in_shards() {
    let plane = exclusive(PlaneId::Ledger).await;
    plane.install_crds().await;
    let client = plane.client().await;
    Api::<Namespace>::all(client.clone())
        .patch(
            NAMESPACE,
            &PatchParams::apply(MANAGER),
            &Patch::Apply(json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})),
        )
        .await
        .expect("namespace");
    // A previous run's ledger would count this run's counters as resets on top of it.
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), NAMESPACE);
    config_maps
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels(&shard_selector(REGION)),
        )
        .await
        .expect("old shards deleted");

    let base = |i: usize| (1_000 + i as u64, 500 + (i % 97) as u64);
    let body = Arc::new(RwLock::new(Arc::new(exposition(base))));
    let port = stub(body.clone());
    eprintln!(
        "ledger e2e: the stub serves {} bytes of exposition",
        body.read().unwrap_or_else(|e| e.into_inner()).len()
    );
    crate::harness::apply(
        &client,
        &json!({"apiVersion": "sovereign.ai/v1alpha1", "kind": "SovereignRegion",
        "metadata": {"name": REGION},
        "spec": {"jurisdiction": "EU", "locations": ["europe-west9"], "namespace": NAMESPACE,
                 "gateway": {"replicas": 1,
                             "metricsUrls": [format!("http://127.0.0.1:{port}/metrics")]},
                 "vectorStore": {"engine": "None"}}}),
    )
    .await
    .expect("region");

    let operator = Operator::start(&plane, &["--region", REGION, "--usage-interval", "10"]);
    let start = Instant::now();
    // Nothing written yet (the operator may not serve its metrics this early).
    let zero = Cost {
        operator_bytes: 0.0,
        commits: 0.0,
        apiserver: apiserver_configmap_bytes(&plane),
    };
    counted(&client, totals(base)).await;
    let first = cost(&operator, &plane).await;
    report(
        "first count of 200,000 series",
        &zero,
        &first,
        start.elapsed().as_secs_f64(),
    );

    let shards = config_maps
        .list(&ListParams::default().labels(&shard_selector(REGION)))
        .await
        .expect("shards")
        .items;
    let sizes: Vec<usize> = shards
        .iter()
        .map(|cm| serde_json::to_vec(cm).map_or(0, |v| v.len()))
        .collect();
    eprintln!(
        "ledger e2e: {} shard ConfigMaps stored, {} bytes in all, the largest {} bytes",
        shards.len(),
        sizes.iter().sum::<usize>(),
        sizes.iter().max().copied().unwrap_or(0)
    );
    assert!(
        shards
            .iter()
            .any(|cm| cm.name_any() == format!("{LEDGER_NAME}-head")),
        "the head shard is stored"
    );

    // 1 % of the series move (every hundredth gets 7 more input tokens).
    let one_percent = |i: usize| {
        let (input, output) = base(i);
        (input + if i.is_multiple_of(100) { 7 } else { 0 }, output)
    };
    *body.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(exposition(one_percent));
    let start = Instant::now();
    counted(&client, totals(one_percent)).await;
    let second = cost(&operator, &plane).await;
    report(
        "1 % of the series changed",
        &first,
        &second,
        start.elapsed().as_secs_f64(),
    );

    // Every series moves.
    let all = |i: usize| {
        let (input, output) = one_percent(i);
        (input + 1, output + 1)
    };
    *body.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(exposition(all));
    let start = Instant::now();
    counted(&client, totals(all)).await;
    let third = cost(&operator, &plane).await;
    report(
        "every series changed",
        &second,
        &third,
        start.elapsed().as_secs_f64(),
    );

    operator.assert_no_forbidden();
    operator.stop();
}
