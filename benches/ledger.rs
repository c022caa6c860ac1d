//! Write cost and CPU time of one usage-collector tick on a sharded ledger of 200,000 series
//! seen by two gateway pods: bytes of shard ConfigMaps a tick writes when 1 % of the series
//! changed and when all did (printed before the timings), and the time to advance the
//! ledger, find the changed shards and encode them (criterion's `time`).
//! `cargo bench --bench ledger`.

use std::collections::BTreeSet;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sovereign_operator::finops::pricing::PriceBook;
use sovereign_operator::finops::shards::{Observed, Sharded};
use sovereign_operator::finops::storage::shard_config_map;
use sovereign_operator::finops::usage::{Counters, Scrape, SeriesKey};

const SERIES: u64 = 200_000;
const PODS: [&str; 2] = [
    "pod/9f0c6d3e-1111-4a5b-9c7d-000000000001",
    "pod/9f0c6d3e-1111-4a5b-9c7d-000000000002",
];

/// The scrape of one pod: every series, `bump` added to the input tokens of those `moved`
/// selects.
fn scrape(bump: u64, moved: impl Fn(u64) -> bool) -> Scrape {
    Scrape {
        process_start: Some(1.0),
        series: (0..SERIES)
            .map(|i| {
                (
                    SeriesKey {
                        team: format!("team-{:03}", i % 50),
                        key_alias: format!("key-{i:06}"),
                        cost_center: format!("CC-{:04}", i % 20),
                        model: format!("llama-3-70b-eu-{}", i % 5),
                        deployment: format!("sovereign-eu.backend-{}", i % 5),
                    },
                    Counters {
                        input_tokens: 123_456_789 + i * 7_919 + if moved(i) { bump } else { 0 },
                        output_tokens: 98_765_432 + i * 104_729,
                        requests: 1_234_567 + i * 13,
                        gateway_spend_usd: 0.0,
                    },
                )
            })
            .collect(),
    }
}

fn gateways(scrape: &Scrape) -> Vec<(String, Scrape)> {
    PODS.iter().map(|p| ((*p).to_owned(), scrape.clone())).collect()
}

/// One tick: advance, the changed shards, their ConfigMaps; returns (shards, bytes).
fn tick(stored: &Sharded, gateways: &[(String, Scrape)], live: &BTreeSet<String>) -> (usize, usize) {
    let prices = PriceBook::default();
    let next = stored.advance(&Observed {
        gateways,
        served: &[],
        running: &[],
        live,
        prices: &prices,
        now: 2,
    });
    let changed = stored.changed(&next);
    let mut bytes = 0;
    for id in &changed {
        let config_map = shard_config_map("eu", "sovereign-eu", "uid", *id, &next.shards[id], None)
            .expect("fits");
        bytes += serde_json::to_vec(&config_map).expect("json").len();
    }
    (changed.len(), bytes)
}

fn write_cost(c: &mut Criterion) {
    let live: BTreeSet<String> = PODS.iter().map(|p| (*p).to_owned()).collect();
    let prices = PriceBook::default();
    let base = gateways(&scrape(0, |_| false));
    let stored = Sharded::default().advance(&Observed {
        gateways: &base,
        served: &[],
        running: &[],
        live: &live,
        prices: &prices,
        now: 1,
    });
    let (shards, all_bytes) = tick(&Sharded::default(), &base, &live);
    eprintln!("ledger of {SERIES} series × 2 pods: {shards} shards, {all_bytes} bytes to write in full");
    let one_percent = gateways(&scrape(5, |i| i % 100 == 0));
    let every = gateways(&scrape(5, |_| true));
    let unchanged = tick(&stored, &base, &live);
    let one = tick(&stored, &one_percent, &live);
    let all = tick(&stored, &every, &live);
    eprintln!(
        "a tick writes: nothing changed {unchanged:?}, 1 % changed {one:?}, all changed {all:?} (shards, bytes)"
    );
    let mut group = c.benchmark_group("ledger tick, 200k series × 2 pods");
    group.sample_size(10);
    group.bench_function("nothing changed", |b| {
        b.iter(|| black_box(tick(&stored, &base, &live)))
    });
    group.bench_function("1 % changed", |b| {
        b.iter(|| black_box(tick(&stored, &one_percent, &live)))
    });
    group.bench_function("all changed", |b| {
        b.iter(|| black_box(tick(&stored, &every, &live)))
    });
    group.finish();
}

criterion_group!(benches, write_cost);
criterion_main!(benches);
