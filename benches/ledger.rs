//! Write cost and CPU time of one usage-collector tick on a sharded ledger of 200,000 series
//! seen by two gateway pods: bytes of shard ConfigMaps a tick writes when 1 % of the series
//! changed and when all did, and on average over 60 ticks in each of which another 1 %
//! changed (printed before the timings); and the time to advance the ledger, find the
//! changed shards and encode what is written (criterion's `time`).
//! `cargo bench --bench ledger`; the byte figures do not depend on the build, so
//! `cargo test --bench ledger -- --nocapture` prints them too (with debug-build timings).

use std::collections::BTreeSet;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use sovereign_operator::finops::pricing::PriceBook;
use sovereign_operator::finops::shards::{Observed, ShardId};
use sovereign_operator::finops::storage::{DELTA_DIVISOR, Object, StoredShards, shard_write};
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
    PODS.iter()
        .map(|p| ((*p).to_owned(), scrape.clone()))
        .collect()
}

fn observed<'a>(
    gateways: &'a [(String, Scrape)],
    live: &'a BTreeSet<String>,
    prices: &'a PriceBook,
    now: i64,
) -> Observed<'a> {
    Observed {
        gateways,
        served: &[],
        running: &[],
        live,
        prices,
        now,
    }
}

/// One tick: advance, the changed shards, what is written for each (a delta or a new base);
/// returns the objects written with (shards written, bytes, bases among them).
fn tick(
    stored: &StoredShards,
    gateways: &[(String, Scrape)],
    live: &BTreeSet<String>,
    now: i64,
) -> (Vec<(ShardId, Object)>, (usize, usize, usize)) {
    let prices = PriceBook::default();
    let next = stored
        .ledger
        .advance(&observed(gateways, live, &prices, now));
    let mut written = Vec::new();
    let (mut bytes, mut bases) = (0, 0);
    for id in stored.ledger.changed(&next) {
        let (config_map, object) = shard_write(
            "eu",
            "sovereign-eu",
            "uid",
            id,
            stored.bases.get(&id),
            &next.shards[&id],
            DELTA_DIVISOR,
        )
        .expect("fits");
        bytes += serde_json::to_vec(&config_map).expect("json").len();
        bases += usize::from(matches!(object, Object::Base(_)));
        written.push((id, object));
    }
    let count = written.len();
    (written, (count, bytes, bases))
}

fn write_cost(c: &mut Criterion) {
    let live: BTreeSet<String> = PODS.iter().map(|p| (*p).to_owned()).collect();
    let base = gateways(&scrape(0, |_| false));
    let mut stored = StoredShards::default();
    let (first, (shards, all_bytes, _)) = tick(&stored, &base, &live, 1);
    for (id, object) in first {
        stored.set(id, object);
    }
    eprintln!(
        "ledger of {SERIES} series × 2 pods: {shards} shards, {all_bytes} bytes to write in full"
    );
    let one_percent = gateways(&scrape(5, |i| i.is_multiple_of(100)));
    let every = gateways(&scrape(5, |_| true));
    let unchanged = tick(&stored, &base, &live, 2).1;
    let one = tick(&stored, &one_percent, &live, 2).1;
    let all = tick(&stored, &every, &live, 2).1;
    eprintln!(
        "one tick after a full write writes (shards, bytes, of which whole bases): nothing changed {unchanged:?}, 1 % changed {one:?}, all changed {all:?}"
    );
    // Steady state: a different 1 % of the series moves every tick, deltas grow until their
    // bucket is rewritten whole.
    let mut simulated = stored.clone();
    // `SOVEREIGN_LEDGER_BENCH_TICKS` shortens it (e.g. for a debug run, `cargo test --bench ledger`).
    let ticks: u64 = std::env::var("SOVEREIGN_LEDGER_BENCH_TICKS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(60);
    let (mut total, mut bases_written) = (0usize, 0usize);
    for t in 0..ticks {
        let scrapes = gateways(&scrape(5, |i| i % 100 <= t));
        let (written, (_, bytes, bases)) = tick(
            &simulated,
            &scrapes,
            &live,
            3 + i64::try_from(t).unwrap_or(0),
        );
        for (id, object) in written {
            simulated.set(id, object);
        }
        total += bytes;
        bases_written += bases;
    }
    eprintln!(
        "{ticks} ticks, a different 1 % changed in each: {} bytes a tick on average, {bases_written} whole bases rewritten in all",
        total / usize::try_from(ticks).unwrap_or(1)
    );
    let mut group = c.benchmark_group("ledger tick, 200k series × 2 pods");
    group.sample_size(10);
    group.bench_function("nothing changed", |b| {
        b.iter(|| black_box(tick(&stored, &base, &live, 2).1))
    });
    group.bench_function("1 % changed", |b| {
        b.iter(|| black_box(tick(&stored, &one_percent, &live, 2).1))
    });
    group.bench_function("all changed", |b| {
        b.iter(|| black_box(tick(&stored, &every, &live, 2).1))
    });
    group.finish();
}

criterion_group!(benches, write_cost);
criterion_main!(benches);
