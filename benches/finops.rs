//! Throughput of the usage path: parsing LiteLLM `/metrics` text (bytes and samples per
//! second, on a large scrape built from the real fixture), and reading + aggregating one
//! million usage samples into series. Prometheus' Go text parser reaches about 236 MiB/s;
//! criterion reports ours as `thrpt`.

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sovereign_operator::finops::exposition::samples;
use sovereign_operator::finops::ledger::Ledger;
use sovereign_operator::finops::pricing::PriceBook;
use sovereign_operator::finops::usage::read_scrape;

/// The real 1.6 MB fixture, `copies` times, each copy with other end users and cost centres so
/// that the series differ.
fn large_scrape(copies: usize) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/litellm/metrics-before-restart.txt");
    let fixture =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut out = String::with_capacity(fixture.len() * copies);
    for copy in 0..copies {
        out.push_str(
            &fixture
                .replace("@example.com", &format!("@example{copy}.com"))
                .replace("CC-1", &format!("CC-{copy}1")),
        );
    }
    out
}

/// `count` usage samples over 1,000 (team, cost centre, model) lines and many end users.
fn usage_samples(count: usize) -> String {
    let mut out = String::with_capacity(count * 330);
    for i in 0..count {
        let family = [
            "litellm_input_tokens_metric_total",
            "litellm_output_tokens_metric_total",
            "litellm_requests_metric_total",
        ][i % 3];
        out.push_str(&format!(
            "{family}{{api_key_alias=\"None\",end_user=\"user-{i}@example.com\",hashed_api_key=\"h{}\",metadata_cost_center=\"CC-{}\",metadata_team=\"team-{}\",model=\"m\",model_id=\"ns.backend-{}\",requested_model=\"model-{}\",team=\"None\",team_alias=\"None\",user=\"default_user_id\"}} {}.0\n",
            i % 97,
            i % 10,
            i % 20,
            i % 5,
            i % 5,
            i % 1000,
        ));
    }
    out
}

fn parse(c: &mut Criterion) {
    let text = large_scrape(10);
    let lines = samples(&text).count() as u64;
    let mut group = c.benchmark_group("exposition");
    group.throughput(Throughput::Bytes(text.len() as u64));
    group.bench_function(
        format!("parse every sample, {} MB", text.len() / 1_000_000),
        |b| {
            b.iter(|| {
                let mut sum = 0.0;
                for sample in samples(black_box(&text)) {
                    let sample = sample.expect("valid");
                    sum += sample.value + sample.labels().count() as f64;
                }
                black_box(sum)
            })
        },
    );
    group.bench_function("read usage from the scrape", |b| {
        b.iter(|| black_box(read_scrape(black_box(&text)).expect("valid")))
    });
    group.finish();

    let mut group = c.benchmark_group("exposition-samples");
    group.throughput(Throughput::Elements(lines));
    group.bench_function(format!("parse {lines} samples"), |b| {
        b.iter(|| samples(black_box(&text)).filter(|s| s.is_ok()).count())
    });
    group.finish();
}

fn aggregate(c: &mut Criterion) {
    let text = usage_samples(1_000_000);
    let mut group = c.benchmark_group("usage");
    group.sample_size(10);
    group.throughput(Throughput::Elements(1_000_000));
    group.bench_function("read and aggregate 1M usage samples", |b| {
        b.iter(|| black_box(read_scrape(black_box(&text)).expect("valid")))
    });
    let scrape = read_scrape(&text).expect("valid");
    let prices = PriceBook::default();
    group.bench_function(
        "record the 1,000 series of 1M samples into the ledger",
        |b| {
            b.iter(|| {
                let mut ledger = Ledger::default();
                black_box(ledger.record("pod/a", black_box(&scrape), 1, &prices));
                ledger
            })
        },
    );
    group.finish();
}

criterion_group!(benches, parse, aggregate);
criterion_main!(benches);
