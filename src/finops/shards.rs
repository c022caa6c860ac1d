//! A region's ledger in self-contained shards, so that 200,000 series and more are counted
//! exactly while no object comes near the API server's size limits.
//!
//! **Layout.** Shard `Bucket(n)` holds exactly the series whose key hashes (FNV-1a, stable
//! across builds and platforms) to bucket `n` of [`BUCKETS`]: for those series only, each
//! source's cursor (process start time and last values) and the running totals. Shard
//! `Head` holds what is not one series': the vLLM servers' cursors and served counters, the
//! GPU meters, idle GPU cost, and the GPU cost charged to each line (team × key alias cleared
//! × cost centre × model × deployment — the key alias is dropped so that the head grows with
//! lines, not with keys).
//!
//! **Objects.** A shard is stored as a base (the whole shard, with a generation) and, for a
//! bucket, a [`Delta`] object on top: the records that changed since the base. A tick writes
//! the delta while it is small and the whole bucket one generation up when it is not, so
//! the bytes a tick writes follow what changed, not the ledger's size. The shard's state is
//! the base, with the delta applied when the delta names the base's generation; either
//! write replaces one object, so the state moves by a whole step or not at all.
//!
//! **Invariant.** Every shard is a complete [`Ledger`] for the series it holds: the delta of
//! a series and the cursor that prevents counting it twice are in the same shard, so they are
//! committed by the same write or not at all. Shards never read each other's state to move
//! their own (the tick's token deltas are an *input* to the head's GPU charge, never state).
//! A tick that commits some shards and not others is therefore, for each shard, either a
//! whole step or no step: the shards left behind count what they missed on the next tick that
//! commits them, from their own cursors. Torn writes, conflicts, restarts between two shard
//! writes and writes that succeeded although the client saw an error are each "some shards
//! stepped, others did not", which can neither double count nor drop a token. The property
//! test below injects all of them.
//!
//! One thing a torn tick can move, and says so: GPU cost is shared by the series that used a
//! deployment in the interval. If a bucket's write fails while the head's succeeds, the
//! head has charged the interval's GPU time by this tick's token shares, and the bucket
//! counts those tokens again at its next commit (its cursor did not move), so the next
//! interval's shares lean towards it. Money and tokens stay exact; only the split of one
//! interval's GPU cost between teams can shift to the next interval.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::ledger::{Cursor, LEDGER_VERSION, Ledger, RunningGpus, Totals, entries};
use super::pricing::PriceBook;
use super::storage::without_clock;
use super::usage::{Counters, Scrape, SeriesKey, Served};

/// Buckets of series. 200,000 series are about 1,560 a bucket (≈ 112 KB of gzip with two
/// gateway pods, 149 KB as ConfigMap JSON); a bucket is refused at
/// [`super::storage::MAX_SHARD_BYTES`] of gzip, so the ceiling is about 900,000 series with
/// two pods (the capacity test in `storage` prints the sizes). Changing it moves series
/// between buckets: that is a migration, not a constant to tune.
pub const BUCKETS: u16 = 128;

/// Prefix of the vLLM servers' sources: their cursors live in the head.
const SERVED_SOURCE_PREFIX: &str = "vllm/";

/// Which shard of a region's ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ShardId {
    /// Bucket `n` of the series.
    Bucket(u16),
    /// GPU meters, served counters, GPU cost lines. Ordered last: it is written last, and its
    /// existence marks a ledger that is sharded (the legacy one-object ledger is migrated
    /// until it exists).
    Head,
}

impl ShardId {
    /// The bucket of `key`.
    pub fn of(key: &SeriesKey) -> ShardId {
        const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
        const PRIME: u64 = 0x0000_0100_0000_01b3;
        let mut hash = OFFSET;
        for field in [
            &key.team,
            &key.key_alias,
            &key.cost_center,
            &key.model,
            &key.deployment,
        ] {
            // 0xff never occurs in UTF-8: field boundaries cannot be confused.
            for byte in field.bytes().chain(std::iter::once(0xff)) {
                hash ^= u64::from(byte);
                hash = hash.wrapping_mul(PRIME);
            }
        }
        // FNV's low bits mix poorly (keys differing in their last digit would share a
        // bucket): a splitmix64 finish spreads every bit before the modulo.
        hash ^= hash >> 30;
        hash = hash.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        hash ^= hash >> 27;
        hash = hash.wrapping_mul(0x94d0_49bb_1331_11eb);
        hash ^= hash >> 31;
        let bucket = hash % u64::from(BUCKETS);
        ShardId::Bucket(u16::try_from(bucket).unwrap_or(0))
    }

    /// The shard's suffix in its object name: `head` or the bucket as three digits.
    pub fn suffix(self) -> String {
        match self {
            ShardId::Head => "head".to_owned(),
            ShardId::Bucket(n) => format!("{n:03}"),
        }
    }

    /// The shard a suffix names, if it is one of this layout's.
    pub fn parse(suffix: &str) -> Option<ShardId> {
        if suffix == "head" {
            return Some(ShardId::Head);
        }
        if suffix.len() != 3 || !suffix.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u16 = suffix.parse().ok()?;
        (n < BUCKETS).then_some(ShardId::Bucket(n))
    }
}

/// The line a series' GPU cost is charged to: its key without the key alias.
fn line_key(key: &SeriesKey) -> SeriesKey {
    SeriesKey {
        key_alias: String::new(),
        ..key.clone()
    }
}

/// What one tick observed, for [`Sharded::advance`].
#[derive(Clone, Copy, Debug)]
pub struct Observed<'a> {
    /// (source, scrape) of each gateway scraped.
    pub gateways: &'a [(String, Scrape)],
    /// (source, deployment, counters) of each vLLM server scraped.
    pub served: &'a [(String, String, Served)],
    /// The self-hosted deployments running.
    pub running: &'a [RunningGpus],
    /// Every source that exists now.
    pub live: &'a BTreeSet<String>,
    /// Prices by deployment.
    pub prices: &'a PriceBook,
    /// Unix time of the tick.
    pub now: i64,
}

/// A region's ledger as its shards.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sharded {
    /// The shards that exist.
    pub shards: BTreeMap<ShardId, Ledger>,
}

impl Sharded {
    /// The previous release's one-object ledger, split into this layout: each series'
    /// totals and every source's cursor values of it go to its bucket; GPU meters, served
    /// counters and the vLLM cursors to the head. Nothing is added or dropped.
    pub fn from_legacy(legacy: Ledger) -> Sharded {
        let mut shards: BTreeMap<ShardId, Ledger> = BTreeMap::new();
        let mut head = Ledger {
            version: LEDGER_VERSION,
            gpu: legacy.gpu,
            served: legacy.served,
            ..Ledger::default()
        };
        for (source, cursor) in legacy.sources {
            if source.starts_with(SERVED_SOURCE_PREFIX) {
                head.sources.insert(source, cursor);
                continue;
            }
            // A source with no series has nothing to remember: a bucket that first sees it
            // later counts its series from zero, as the one-object ledger did for a series it
            // had no value of.
            for (key, counters) in cursor.series {
                shard_mut(&mut shards, ShardId::of(&key))
                    .sources
                    .entry(source.clone())
                    .or_insert_with(|| Cursor {
                        process_start: cursor.process_start,
                        last_seen: cursor.last_seen,
                        series: BTreeMap::new(),
                    })
                    .series
                    .insert(key, counters);
            }
        }
        for (key, totals) in legacy.usage {
            shard_mut(&mut shards, ShardId::of(&key))
                .usage
                .insert(key, totals);
        }
        shards.insert(ShardId::Head, head);
        Sharded { shards }
    }

    /// The whole ledger in one value, for readers (budget lines, metrics): totals of a key
    /// held by several shards (a bucket's tokens, the head's GPU cost) are added.
    pub fn merged(&self) -> Ledger {
        let mut all = Ledger {
            version: LEDGER_VERSION,
            ..Ledger::default()
        };
        for shard in self.shards.values() {
            for (key, totals) in &shard.usage {
                all.usage.entry(key.clone()).or_default().add(totals);
            }
            for (source, cursor) in &shard.sources {
                let merged = all.sources.entry(source.clone()).or_insert_with(|| Cursor {
                    process_start: cursor.process_start,
                    last_seen: cursor.last_seen,
                    series: BTreeMap::new(),
                });
                merged.last_seen = merged.last_seen.max(cursor.last_seen);
                merged
                    .series
                    .extend(cursor.series.iter().map(|(k, c)| (k.clone(), *c)));
            }
            all.gpu
                .extend(shard.gpu.iter().map(|(k, m)| (k.clone(), m.clone())));
            for (deployment, counters) in &shard.served {
                all.served
                    .entry(deployment.clone())
                    .or_default()
                    .add(counters);
            }
        }
        all
    }

    /// Series held, over all buckets.
    pub fn series(&self) -> usize {
        self.shards
            .iter()
            .filter(|(id, _)| **id != ShardId::Head)
            .map(|(_, shard)| shard.usage.len())
            .sum()
    }

    /// The shards after one tick: each bucket records the part of each scrape that is its
    /// series (a bucket with no series in a scrape is left as it is, which is also what
    /// keeps unchanged buckets unwritten); the head records the vLLM servers and charges GPU
    /// time by this tick's token shares; gone pods are forgotten everywhere.
    pub fn advance(&self, observed: &Observed<'_>) -> Sharded {
        let Observed {
            gateways,
            served,
            running,
            live,
            prices,
            now,
        } = *observed;
        let mut next = self.clone();
        let mut interval: BTreeMap<SeriesKey, Counters> = BTreeMap::new();
        for (source, scrape) in gateways {
            let mut parts: BTreeMap<ShardId, Scrape> = BTreeMap::new();
            for (key, counters) in &scrape.series {
                parts
                    .entry(ShardId::of(key))
                    .or_insert_with(|| Scrape {
                        process_start: scrape.process_start,
                        series: BTreeMap::new(),
                    })
                    .series
                    .insert(key.clone(), *counters);
            }
            for (id, part) in parts {
                let shard = shard_mut(&mut next.shards, id);
                for (key, delta) in shard.record(source, &part, now, prices) {
                    interval.entry(line_key(&key)).or_default().add(&delta);
                }
            }
        }
        let head = shard_mut(&mut next.shards, ShardId::Head);
        let mut served_interval: BTreeMap<String, Counters> = BTreeMap::new();
        for (source, deployment, counters) in served {
            let delta = head.record_served(source, deployment, counters, now);
            served_interval
                .entry(deployment.clone())
                .or_default()
                .add(&delta);
        }
        head.charge_gpus(now, running, &interval, &served_interval, prices);
        for shard in next.shards.values_mut() {
            shard.forget_gone_pods(live, now);
        }
        next
    }

    /// The shards of `next` that differ from `self` by more than their clocks, buckets
    /// first and the head last: what a tick must write.
    pub fn changed(&self, next: &Sharded) -> Vec<ShardId> {
        next.shards
            .iter()
            .filter(|(id, shard)| match self.shards.get(id) {
                None => true,
                Some(stored) => without_clock(stored) != without_clock(shard),
            })
            .map(|(id, _)| *id)
            .collect()
    }
}

/// The changes of a bucket since its stored base, record by record: what a tick writes
/// instead of the whole bucket while they are small (`storage::shard_write` decides). It is
/// the *cumulative* change since the base, replacing the previous delta in one write, so the
/// bucket's state — base, or base ⊕ delta when the delta names the base's generation — moves
/// by a whole step with any single successful write: a delta lands or not; a new base (one
/// generation up) lands or not, and the delta it supersedes then names an older generation
/// and is ignored.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delta {
    /// Generation of the base this applies to.
    pub base: u64,
    /// Cursors that changed, by source.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sources: BTreeMap<String, SourceDelta>,
    /// Sources the base has and the bucket forgot.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub forgotten: BTreeSet<String>,
    /// Totals that changed (totals are never removed).
    #[serde(default, with = "entries")]
    pub usage: BTreeMap<SeriesKey, Totals>,
}

/// How one source's cursor differs from the base's.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SourceDelta {
    /// The cursor's process start time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_start: Option<f64>,
    /// The cursor's last scrape.
    pub last_seen: i64,
    /// `series` replaces the base's series (a restart, a new source) instead of updating them.
    #[serde(default)]
    pub replace: bool,
    /// Series values: all of them when `replace`, else those that changed.
    #[serde(with = "entries")]
    pub series: BTreeMap<SeriesKey, Counters>,
}

impl Delta {
    /// The changes from `base` to `next`, or None when a delta cannot say them (a total that
    /// went away, GPU or served state: those buckets are written whole).
    pub fn between(base: &Ledger, next: &Ledger) -> Option<Delta> {
        if base.gpu != next.gpu
            || base.served != next.served
            || base.usage.keys().any(|k| !next.usage.contains_key(k))
        {
            return None;
        }
        let mut delta = Delta {
            base: base.generation,
            ..Delta::default()
        };
        for (source, cursor) in &next.sources {
            let old = base.sources.get(source);
            if old == Some(cursor) {
                continue;
            }
            let replace = old.is_none_or(|old| {
                old.process_start != cursor.process_start
                    || old.series.keys().any(|k| !cursor.series.contains_key(k))
            });
            let series = match old {
                Some(old) if !replace => cursor
                    .series
                    .iter()
                    .filter(|(k, c)| old.series.get(*k) != Some(*c))
                    .map(|(k, c)| (k.clone(), *c))
                    .collect(),
                _ => cursor.series.clone(),
            };
            delta.sources.insert(
                source.clone(),
                SourceDelta {
                    process_start: cursor.process_start,
                    last_seen: cursor.last_seen,
                    replace,
                    series,
                },
            );
        }
        delta.forgotten = base
            .sources
            .keys()
            .filter(|s| !next.sources.contains_key(*s))
            .cloned()
            .collect();
        delta.usage = next
            .usage
            .iter()
            .filter(|(k, t)| base.usage.get(*k) != Some(*t))
            .map(|(k, t)| (k.clone(), t.clone()))
            .collect();
        Some(delta)
    }

    /// `base` with this delta applied, when it applies to `base`'s generation; else `base`
    /// (a stale delta, whose changes the base already holds).
    pub fn apply(&self, base: &Ledger) -> Ledger {
        let mut next = base.clone();
        if self.base != base.generation {
            return next;
        }
        for source in &self.forgotten {
            next.sources.remove(source);
        }
        for (source, change) in &self.sources {
            let cursor = next.sources.entry(source.clone()).or_default();
            cursor.process_start = change.process_start;
            cursor.last_seen = change.last_seen;
            if change.replace {
                cursor.series = change.series.clone();
            } else {
                cursor
                    .series
                    .extend(change.series.iter().map(|(k, c)| (k.clone(), *c)));
            }
        }
        for (key, totals) in &self.usage {
            next.usage.insert(key.clone(), totals.clone());
        }
        next
    }
}

fn shard_mut(shards: &mut BTreeMap<ShardId, Ledger>, id: ShardId) -> &mut Ledger {
    shards.entry(id).or_insert_with(|| Ledger {
        version: LEDGER_VERSION,
        ..Ledger::default()
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use rust_decimal::Decimal;

    use super::*;
    use crate::finops::pricing::Price;

    fn key(i: usize) -> SeriesKey {
        SeriesKey {
            team: format!("team-{}", i % 7),
            key_alias: format!("key-{i}"),
            model: "m".into(),
            deployment: "d".into(),
            ..SeriesKey::default()
        }
    }

    fn observe<'a>(
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

    #[test]
    fn the_bucket_of_a_key_is_stable_and_names_round_trip() {
        // Pinned: a different bucket for the same key after an upgrade would count its
        // series again from zero in the new bucket.
        assert_eq!(ShardId::of(&key(0)), ShardId::Bucket(47));
        assert_eq!(ShardId::of(&key(1)), ShardId::Bucket(1));
        for id in [
            ShardId::Head,
            ShardId::Bucket(0),
            ShardId::Bucket(BUCKETS - 1),
        ] {
            assert_eq!(ShardId::parse(&id.suffix()), Some(id));
        }
        assert_eq!(ShardId::parse("128"), None);
        assert_eq!(ShardId::parse("01"), None);
        assert_eq!(ShardId::parse("x01"), None);
    }

    #[test]
    fn series_spread_over_buckets_and_only_the_buckets_that_moved_are_written() {
        let prices = PriceBook::default();
        let live = BTreeSet::from(["url/gw".to_owned()]);
        let counters = |n| Counters {
            input_tokens: n,
            ..Counters::default()
        };
        let scrape = |bump: usize| Scrape {
            process_start: Some(1.0),
            series: (0..1000)
                .map(|i| (key(i), counters(10 + u64::from(i == bump))))
                .collect(),
        };
        let first = [("url/gw".to_owned(), scrape(usize::MAX))];
        let ledger = Sharded::default().advance(&observe(&first, &live, &prices, 1));
        assert_eq!(ledger.series(), 1000);
        assert_eq!(ledger.shards.len(), usize::from(BUCKETS) + 1, "all used");
        assert_eq!(ledger.merged().grand_total().input_tokens, 10_000);
        // One series moves: its bucket alone is written (the head has nothing new).
        let second = [("url/gw".to_owned(), scrape(7))];
        let next = ledger.advance(&observe(&second, &live, &prices, 2));
        assert_eq!(ledger.changed(&next), [ShardId::of(&key(7))]);
        assert_eq!(next.merged().grand_total().input_tokens, 10_001);
        // The same scrape again changes nothing but clocks.
        let again = next.advance(&observe(&second, &live, &prices, 3));
        assert!(next.changed(&again).is_empty());
    }

    #[test]
    fn gpu_cost_goes_to_the_head_by_line_and_adds_up_with_the_buckets() {
        let mut prices = PriceBook::default();
        prices.insert(
            "d",
            Price::GpuHours {
                currency: "EUR".into(),
                per_gpu_hour: Decimal::from_str("3.6").expect("decimal"),
                gpus_per_replica: 1,
            },
        );
        let running = [RunningGpus {
            deployment: "d".into(),
            model: "m".into(),
            replicas: 1,
        }];
        let live = BTreeSet::from(["url/gw".to_owned()]);
        let scrape = |n| Scrape {
            process_start: Some(1.0),
            series: (0..20)
                .map(|i| {
                    (
                        key(i),
                        Counters {
                            input_tokens: n,
                            ..Counters::default()
                        },
                    )
                })
                .collect(),
        };
        let tick = |ledger: &Sharded, gateways: &[(String, Scrape)], now| {
            ledger.advance(&Observed {
                gateways,
                served: &[],
                running: &running,
                live: &live,
                prices: &prices,
                now,
            })
        };
        let ledger = tick(&Sharded::default(), &[("url/gw".into(), scrape(0))], 0);
        let ledger = tick(&ledger, &[("url/gw".into(), scrape(5))], 1000);
        // 1000 s of one GPU at 3.6 EUR/h = 1 EUR, charged to the lines in the head.
        let head = &ledger.shards[&ShardId::Head];
        assert!(head.usage.keys().all(|k| k.key_alias.is_empty()));
        assert_eq!(head.usage.len(), 7, "one line per team");
        let total = ledger.merged().grand_total();
        assert_eq!(total.cost["EUR"], Decimal::ONE);
        assert_eq!(total.input_tokens, 100);
    }

    /// The previous release's stored ledger, as it wrote it (`ledger.json.gz` of
    /// `sovereign-usage-ledger`, version 1), with a gateway pod, a vLLM server, a GPU meter
    /// and GPU cost already charged to a series.
    const LEGACY_JSON: &str = r#"{"version":1,
      "sources":{
        "pod/aaaa":{"processStart":1700000000.5,"lastSeen":1000,"series":[
          {"key":{"team":"search","keyAlias":"k1","model":"llama","deployment":"eu.llama"},
           "value":{"inputTokens":100,"outputTokens":50,"requests":3,"gatewaySpendUsd":0.0}},
          {"key":{"team":"support","model":"mistral","deployment":"eu.mistral"},
           "value":{"inputTokens":7,"outputTokens":9,"requests":1,"gatewaySpendUsd":0.0}}]},
        "vllm/bbbb":{"processStart":1700000001.0,"lastSeen":1000,"series":[
          {"key":{"model":"","deployment":"eu.llama"},
           "value":{"inputTokens":120,"outputTokens":60,"requests":0,"gatewaySpendUsd":0.0}}]}},
      "usage":[
        {"key":{"team":"search","keyAlias":"k1","model":"llama","deployment":"eu.llama"},
         "value":{"inputTokens":100,"outputTokens":50,"requests":3,"cost":{"EUR":"0.5"}}},
        {"key":{"team":"support","model":"mistral","deployment":"eu.mistral"},
         "value":{"inputTokens":7,"outputTokens":9,"requests":1,"cost":{"EUR":"0.0000069"}}}],
      "gpu":{"eu.llama":{"model":"llama","chargedUntil":1000,"gpuSeconds":600,
                         "idleCost":{"EUR":"0.1"}}},
      "served":{"eu.llama":{"inputTokens":120,"outputTokens":60,"requests":0,"gatewaySpendUsd":0.0}}}"#;

    #[test]
    fn the_previous_releases_ledger_is_carried_over_without_loss_or_double_counting() {
        let legacy: Ledger = serde_json::from_str(LEGACY_JSON).expect("the old format reads");
        let before = legacy.grand_total();
        let sharded = Sharded::from_legacy(legacy.clone());
        assert_eq!(sharded.merged().grand_total(), before);
        assert_eq!(sharded.merged().usage, legacy.usage);
        assert_eq!(sharded.merged().gpu, legacy.gpu);
        assert_eq!(sharded.merged().served, legacy.served);
        assert!(
            sharded.shards[&ShardId::Head]
                .sources
                .contains_key("vllm/bbbb")
        );
        // The same counters scraped again after the migration add nothing; new tokens are
        // added once.
        let mut scrape = Scrape {
            process_start: Some(1_700_000_000.5),
            series: legacy.sources["pod/aaaa"].series.clone(),
        };
        let prices = PriceBook::default();
        let live = BTreeSet::from(["pod/aaaa".to_owned()]);
        let gateways = [("pod/aaaa".to_owned(), scrape.clone())];
        let next = sharded.advance(&observe(&gateways, &live, &prices, 1030));
        assert_eq!(
            next.merged().grand_total().input_tokens,
            before.input_tokens
        );
        if let Some(c) = scrape.series.values_mut().next() {
            c.input_tokens += 11;
        }
        let gateways = [("pod/aaaa".to_owned(), scrape)];
        let next = next.advance(&observe(&gateways, &live, &prices, 1060));
        assert_eq!(
            next.merged().grand_total().input_tokens,
            before.input_tokens + 11
        );
    }

    #[test]
    fn a_delta_says_exactly_the_changes_and_a_stale_one_changes_nothing() {
        let prices = PriceBook::default();
        let live = BTreeSet::from(["url/a".to_owned(), "url/b".to_owned()]);
        let scrape = |start: f64, bump: u64, range: std::ops::Range<usize>| Scrape {
            process_start: Some(start),
            series: range
                .map(|i| {
                    (
                        key(i),
                        Counters {
                            input_tokens: 10 + bump * u64::from(i.is_multiple_of(3)),
                            ..Counters::default()
                        },
                    )
                })
                .collect(),
        };
        let first = [
            ("url/a".to_owned(), scrape(1.0, 0, 0..300)),
            ("url/b".to_owned(), scrape(1.0, 0, 0..300)),
        ];
        let base = Sharded::default().advance(&observe(&first, &live, &prices, 1));
        // Source a moves some series, b restarts and lost half of them.
        let second = [
            ("url/a".to_owned(), scrape(1.0, 5, 0..300)),
            ("url/b".to_owned(), scrape(2.0, 0, 0..150)),
        ];
        let next = base.advance(&observe(&second, &live, &prices, 2));
        for (id, shard) in &next.shards {
            let Some(old) = base.shards.get(id) else {
                continue;
            };
            let delta = Delta::between(old, shard).expect("a bucket's change is a delta");
            assert_eq!(&delta.apply(old), shard, "{id:?}");
            let stale = Ledger {
                generation: old.generation + 1,
                ..old.clone()
            };
            assert_eq!(delta.apply(&stale), stale, "a stale delta is ignored");
        }
    }

    mod properties {
        use k8s_openapi::api::core::v1::ConfigMap;
        use proptest::prelude::*;

        use super::*;
        use crate::finops::storage::{DELTA_DIVISOR, StoredShards, shard_write, stored_shards};

        /// What a shard write does.
        #[derive(Clone, Copy, Debug)]
        enum Write {
            /// Committed and acknowledged.
            Ok,
            /// Refused (a conflict, a timeout before the server got it, a full etcd).
            Fails,
            /// Committed, but the client saw an error (a timeout after the server applied it).
            Unacknowledged,
        }

        /// What can happen between two ticks of the collector.
        #[derive(Clone, Debug)]
        enum Step {
            Request {
                gw: usize,
                series: usize,
                input: u64,
                output: u64,
            },
            /// A tick scraping `gw`: the changed shards are written in order with `writes`
            /// (cycled); `crash_after` shards the operator dies (no later shard is written).
            Scrape {
                gw: usize,
                writes: Vec<Write>,
                crash_after: Option<usize>,
                /// `DELTA_DIVISOR` of this tick: 0 writes every bucket as a delta it can,
                /// `usize::MAX` none.
                divisor: usize,
            },
            Restart {
                gw: usize,
            },
            Replace {
                gw: usize,
            },
        }

        fn write() -> impl Strategy<Value = Write> {
            prop_oneof![6 => Just(Write::Ok), 2 => Just(Write::Fails), 1 => Just(Write::Unacknowledged)]
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                5 => (0..2usize, 0..24usize, 0..500u64, 0..500u64).prop_map(|(gw, series, input, output)| Step::Request { gw, series, input, output }),
                3 => (0..2usize, proptest::collection::vec(write(), 1..6), proptest::option::weighted(0.2, 0..6usize),
                      prop_oneof![Just(0usize), Just(1), Just(4), Just(usize::MAX)])
                    .prop_map(|(gw, writes, crash_after, divisor)| Step::Scrape { gw, writes, crash_after, divisor }),
                1 => (0..2usize).prop_map(|gw| Step::Restart { gw }),
                1 => (0..2usize).prop_map(|gw| Step::Replace { gw }),
            ]
        }

        struct Gateway {
            source: String,
            start: f64,
            series: BTreeMap<SeriesKey, Counters>,
            /// Tokens counted by the gateway per series since its shard last committed.
            pending: BTreeMap<SeriesKey, u64>,
        }

        /// The API server: the shards' ConfigMaps by name.
        type Store = BTreeMap<String, ConfigMap>;

        fn read(store: &Store) -> StoredShards {
            let objects: Vec<ConfigMap> = store.values().cloned().collect();
            stored_shards(&objects, "uid").expect("stored shards")
        }

        /// One tick as the controller runs it: read every shard object, advance, write the
        /// changed shards (a delta or a new base) one by one with the given outcomes, stop
        /// at a crash. Returns the shards the server holds new versions of.
        fn tick(
            store: &mut Store,
            gw: &Gateway,
            now: i64,
            writes: &[Write],
            crash_after: Option<usize>,
            divisor: usize,
        ) -> BTreeSet<ShardId> {
            let stored = read(store);
            let gateways = [(
                gw.source.clone(),
                Scrape {
                    process_start: Some(gw.start),
                    series: gw.series.clone(),
                },
            )];
            let live = BTreeSet::from([gw.source.clone()]);
            let prices = PriceBook::default();
            let next = stored
                .ledger
                .advance(&observe(&gateways, &live, &prices, now));
            let mut committed = BTreeSet::new();
            for (i, id) in stored.ledger.changed(&next).into_iter().enumerate() {
                if crash_after == Some(i) {
                    break;
                }
                let (config_map, _) = shard_write(
                    "r",
                    "ns",
                    "uid",
                    id,
                    stored.bases.get(&id),
                    &next.shards[&id],
                    divisor,
                )
                .expect("fits");
                match writes[i % writes.len()] {
                    Write::Ok | Write::Unacknowledged => {
                        store.insert(
                            config_map.metadata.name.clone().unwrap_or_default(),
                            config_map,
                        );
                        committed.insert(id);
                    }
                    Write::Fails => {}
                }
            }
            committed
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            /// Whatever subset of a tick's shard writes lands, the ledger counts every token
            /// exactly once, except the tokens a gateway counted after the last commit of
            /// their series' shard and before it restarted or went away.
            #[test]
            fn every_token_is_counted_once_whatever_shards_land(
                steps in proptest::collection::vec(step(), 0..80)
            ) {
                let mut gateways: Vec<Gateway> = (0..2).map(|i| Gateway {
                    source: format!("pod/{i}-0"),
                    start: 1.0,
                    series: BTreeMap::new(),
                    pending: BTreeMap::new(),
                }).collect();
                let mut store = Store::new();
                let (mut made, mut lost, mut now, mut pods) = (0u64, 0u64, 0i64, 0usize);
                for step in steps {
                    now += 1;
                    match step {
                        Step::Request { gw, series, input, output } => {
                            let c = gateways[gw].series.entry(key(series)).or_default();
                            c.input_tokens += input;
                            c.output_tokens += output;
                            c.requests += 1;
                            *gateways[gw].pending.entry(key(series)).or_default() += input + output;
                            made += input + output;
                        }
                        Step::Scrape { gw, writes, crash_after, divisor } => {
                            let committed = tick(&mut store, &gateways[gw], now, &writes, crash_after, divisor);
                            gateways[gw].pending.retain(|k, _| !committed.contains(&ShardId::of(k)));
                        }
                        Step::Restart { gw } => {
                            let g = &mut gateways[gw];
                            lost += std::mem::take(&mut g.pending).values().sum::<u64>();
                            g.series.clear();
                            g.start += 1.0;
                        }
                        Step::Replace { gw } => {
                            pods += 1;
                            let g = &mut gateways[gw];
                            lost += std::mem::take(&mut g.pending).values().sum::<u64>();
                            g.series.clear();
                            g.source = format!("pod/{gw}-{pods}");
                        }
                    }
                }
                for gw in &gateways {
                    now += 1;
                    tick(&mut store, gw, now, &[Write::Ok], None, DELTA_DIVISOR);
                }
                let total = read(&store).ledger.merged().grand_total();
                prop_assert_eq!(total.input_tokens + total.output_tokens, made - lost);
            }

            /// A migration torn anywhere (some buckets written, the head not) is finished by
            /// the next tick from the legacy object, and counts nothing twice.
            #[test]
            fn a_torn_migration_is_redone_from_the_legacy_ledger(written in proptest::collection::vec(any::<bool>(), 8)) {
                let legacy: Ledger = serde_json::from_str(LEGACY_JSON).expect("legacy");
                let split = Sharded::from_legacy(legacy.clone());
                // Whatever buckets landed, the next tick (head still absent) takes the split
                // of the legacy ledger again and writes what differs.
                let mut stored = Sharded::default();
                for ((id, shard), landed) in split.shards.iter().zip(written.iter().cycle()) {
                    if *landed && *id != ShardId::Head {
                        stored.shards.insert(*id, shard.clone());
                    }
                }
                let redone = Sharded::from_legacy(legacy.clone());
                for id in stored.changed(&redone) {
                    stored.shards.insert(id, redone.shards[&id].clone());
                }
                prop_assert_eq!(stored.merged().grand_total(), legacy.grand_total());
            }
        }
    }
}
