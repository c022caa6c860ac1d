//! Where a region's usage ledger lives: ConfigMaps in the region namespace, one per shard of
//! [`Sharded`] (`sovereign-usage-ledger-000` … `-127` and `-head`), each holding the
//! gzip-compressed JSON of that shard's [`Ledger`]; and, until it is migrated, the previous
//! release's single ConfigMap `sovereign-usage-ledger`. Pure: the usage collector (the only
//! writer) and the budget controller (a reader) both go through here, so neither imports the
//! other.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::ledger::{Ledger, LedgerError};
use super::shards::{Delta, ShardId, Sharded};
use crate::api::labels;
use crate::render::Owner;

/// Name of the previous release's one-object ledger, and the prefix of the shards' names.
pub const LEDGER_NAME: &str = "sovereign-usage-ledger";
/// Key of a ledger in its ConfigMap's `binaryData`: gzip-compressed JSON (read it with
/// `kubectl get cm … -o jsonpath='{.binaryData.ledger\.json\.gz}' | base64 -d | gunzip`).
pub const LEDGER_KEY: &str = "ledger.json.gz";
/// `app.kubernetes.io/component` of the ledger and of the budget actions.
pub const COMPONENT: &str = "finops";
/// Label carrying the UID of the SovereignRegion a shard belongs to: a shard of another UID
/// (a region deleted and created again over a namespace that stayed) is an orphan. A label
/// rather than an owner reference, which would wake the region controller on every write.
pub const OWNER_UID_LABEL: &str = "sovereign.ai/ledger-owner-uid";
/// Largest shard written. A ConfigMap's data is limited to 1 MiB and an etcd request to
/// 1.5 MiB; half the smaller leaves room for metadata, managed fields and base64 growth in
/// the request (`binaryData` travels as base64: 512 KiB becomes 683 KiB of JSON).
pub const MAX_SHARD_BYTES: usize = 512 * 1024;

/// Why a shard cannot be stored.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] LedgerError),
    /// The shard outgrew what it may hold.
    #[error(
        "ConfigMap {name} would be {bytes} bytes ({series} series), more than the {MAX_SHARD_BYTES} a ledger shard may hold; its series are not counted until it fits (the gateways keep counting, nothing is lost while their pods live): reduce label cardinality such as key aliases, or split the region"
    )]
    TooLarge {
        /// The shard's ConfigMap.
        name: String,
        /// Serialized size.
        bytes: usize,
        /// Series in it.
        series: usize,
    },
}

/// The previous release's one-object ledger stored in `config_map`; empty when there is none.
pub fn stored_ledger(config_map: Option<&ConfigMap>) -> Result<Ledger, LedgerError> {
    match config_map
        .and_then(|cm| cm.binary_data.as_ref())
        .and_then(|d| d.get(LEDGER_KEY))
    {
        Some(bytes) => Ledger::from_gzip(&bytes.0),
        None => Ok(Ledger::default()),
    }
}

/// The ledger with the clocks of its cursors and meters zeroed: what must change for a
/// write to be worth it.
pub fn without_clock(ledger: &Ledger) -> Ledger {
    let mut copy = ledger.clone();
    // Where a shard is stored, not what it holds.
    copy.generation = 0;
    for cursor in copy.sources.values_mut() {
        cursor.last_seen = 0;
    }
    for meter in copy.gpu.values_mut() {
        meter.charged_until = 0;
    }
    copy
}

/// Key of a bucket's delta in its ConfigMap's `binaryData`: gzip-compressed JSON of
/// [`Delta`].
pub const DELTA_KEY: &str = "delta.json.gz";
/// A delta is written while it is at most this fraction (1/n) of its base's size; beyond, the
/// whole bucket is written one generation up. 4 balances the growing delta (the cumulative
/// change since the base) against rewriting the base: see the bench `ledger`.
pub const DELTA_DIVISOR: usize = 4;

/// Which object of a shard: every shard has a base; a bucket may have a delta on top.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// The whole shard, `sovereign-usage-ledger-<shard>`.
    Base,
    /// Its changes since the base, `sovereign-usage-ledger-<shard>-delta`.
    Delta,
}

/// Name of the ConfigMap of the base of shard `id`.
pub fn shard_name(id: ShardId) -> String {
    object_name(id, Part::Base)
}

/// Name of the ConfigMap of `part` of shard `id`.
pub fn object_name(id: ShardId, part: Part) -> String {
    match part {
        Part::Base => format!("{LEDGER_NAME}-{}", id.suffix()),
        Part::Delta => format!("{LEDGER_NAME}-{}-delta", id.suffix()),
    }
}

/// The shard and part a ConfigMap name is, if it is one of this layout's.
pub fn shard_of(name: &str) -> Option<(ShardId, Part)> {
    let rest = name.strip_prefix(LEDGER_NAME)?.strip_prefix('-')?;
    let (suffix, part) = match rest.strip_suffix("-delta") {
        Some(suffix) => (suffix, Part::Delta),
        None => (rest, Part::Base),
    };
    let id = ShardId::parse(suffix)?;
    (id != ShardId::Head || part == Part::Base).then_some((id, part))
}

/// Label selector of the shards of `region` (not the legacy ledger, which lacks the name
/// label).
pub fn shard_selector(region: &str) -> String {
    format!("{}={LEDGER_NAME},{}={region}", labels::NAME, labels::REGION)
}

/// Whether `config_map` is a shard object of the region with UID `owner_uid`.
pub fn is_owned_shard(config_map: &ConfigMap, owner_uid: &str) -> bool {
    config_map
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(OWNER_UID_LABEL))
        .is_some_and(|uid| uid == owner_uid)
        && config_map
            .metadata
            .name
            .as_deref()
            .and_then(shard_of)
            .is_some()
}

/// A shard's base as stored, with its stored size (which bounds its delta).
#[derive(Clone, Debug, PartialEq)]
pub struct StoredBase {
    /// The whole shard.
    pub ledger: Ledger,
    /// Bytes of gzip it was stored as.
    pub bytes: usize,
}

/// One stored object of a shard, decoded.
#[derive(Clone, Debug, PartialEq)]
pub enum Object {
    /// A base.
    Base(StoredBase),
    /// A delta.
    Delta(Delta),
}

/// The stored objects of a region's shards and the state they say.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoredShards {
    /// Bases by shard.
    pub bases: BTreeMap<ShardId, StoredBase>,
    /// Deltas by bucket (stale ones included: they apply to no base and are ignored).
    pub deltas: BTreeMap<ShardId, Delta>,
    /// Each shard's state: its base, with its delta applied when the delta names the base's
    /// generation.
    pub ledger: Sharded,
}

impl StoredShards {
    /// Records `object` as stored for shard `id`.
    pub fn set(&mut self, id: ShardId, object: Object) {
        match object {
            Object::Base(base) => {
                self.bases.insert(id, base);
            }
            Object::Delta(delta) => {
                self.deltas.insert(id, delta);
            }
        }
        self.recompute(id);
    }

    /// Forgets `part` of shard `id`.
    pub fn remove(&mut self, id: ShardId, part: Part) {
        match part {
            Part::Base => self.bases.remove(&id).map(drop),
            Part::Delta => self.deltas.remove(&id).map(drop),
        };
        self.recompute(id);
    }

    fn recompute(&mut self, id: ShardId) {
        match self.bases.get(&id) {
            None => {
                self.ledger.shards.remove(&id);
            }
            Some(base) => {
                let state = match self.deltas.get(&id) {
                    Some(delta) => delta.apply(&base.ledger),
                    None => base.ledger.clone(),
                };
                self.ledger.shards.insert(id, state);
            }
        }
    }
}

fn gzip<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, LedgerError> {
    use std::io::Write;
    let json = serde_json::to_vec(value).map_err(|e| LedgerError::Encode(e.to_string()))?;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(&json)
        .and_then(|()| encoder.finish())
        .map_err(|e| LedgerError::Encode(e.to_string()))
}

/// The ConfigMap that stores `bytes` under `key` as object `name` of `region`'s ledger.
fn config_map(
    region: &str,
    namespace: &str,
    owner_uid: &str,
    name: &str,
    key: &str,
    bytes: Vec<u8>,
) -> ConfigMap {
    let owner = Owner {
        region: region.to_owned(),
        instance: region.to_owned(),
        reference: None,
    };
    let mut metadata = owner.meta(COMPONENT, name, Some(namespace));
    let stamped = metadata.labels.get_or_insert_with(BTreeMap::new);
    stamped.insert(labels::NAME.to_owned(), LEDGER_NAME.to_owned());
    stamped.insert(OWNER_UID_LABEL.to_owned(), owner_uid.to_owned());
    ConfigMap {
        metadata,
        binary_data: Some(BTreeMap::from([(
            key.to_owned(),
            k8s_openapi::ByteString(bytes),
        )])),
        ..ConfigMap::default()
    }
}

/// What a tick writes for shard `id` of `region` (UID `owner_uid`) whose state becomes
/// `next`, given its stored `base`: a delta against the base while it is at most
/// 1/`delta_divisor` of the base's size, else the whole shard one generation up (refused
/// when it would not fit: a plain error instead of the API server's refusal). Returns the
/// ConfigMap (its resourceVersion is the caller's to set: the precondition that commits a
/// shard's deltas and cursors together or not at all) and the object as decoded.
pub fn shard_write(
    region: &str,
    namespace: &str,
    owner_uid: &str,
    id: ShardId,
    base: Option<&StoredBase>,
    next: &Ledger,
    delta_divisor: usize,
) -> Result<(ConfigMap, Object), StorageError> {
    if id != ShardId::Head
        && let Some(base) = base
        && let Some(delta) = Delta::between(&base.ledger, next)
    {
        let bytes = gzip(&delta)?;
        if bytes.len().saturating_mul(delta_divisor) <= base.bytes {
            let name = object_name(id, Part::Delta);
            let cm = config_map(region, namespace, owner_uid, &name, DELTA_KEY, bytes);
            return Ok((cm, Object::Delta(delta)));
        }
    }
    let mut whole = next.clone();
    whole.generation = base.map_or(1, |b| b.ledger.generation + 1);
    let name = shard_name(id);
    let bytes = whole.to_gzip()?;
    if bytes.len() > MAX_SHARD_BYTES {
        return Err(StorageError::TooLarge {
            name,
            bytes: bytes.len(),
            series: whole.usage.len(),
        });
    }
    let size = bytes.len();
    let cm = config_map(region, namespace, owner_uid, &name, LEDGER_KEY, bytes);
    Ok((
        cm,
        Object::Base(StoredBase {
            ledger: whole,
            bytes: size,
        }),
    ))
}

/// One stored shard object, decoded: which shard and part, and its content.
pub fn stored_object(config_map: &ConfigMap) -> Result<(ShardId, Object), LedgerError> {
    let name = config_map.metadata.name.as_deref().unwrap_or_default();
    let Some((id, part)) = shard_of(name) else {
        return Err(LedgerError::Decode(format!(
            "ConfigMap {name} is not a ledger shard"
        )));
    };
    let key = match part {
        Part::Base => LEDGER_KEY,
        Part::Delta => DELTA_KEY,
    };
    let Some(bytes) = config_map.binary_data.as_ref().and_then(|d| d.get(key)) else {
        return Err(LedgerError::Decode(format!(
            "ConfigMap {name} has no binaryData key {key}"
        )));
    };
    let context = |e: String| LedgerError::Decode(format!("ConfigMap {name}: {e}"));
    let object = match part {
        Part::Base => Object::Base(StoredBase {
            ledger: Ledger::from_gzip(&bytes.0).map_err(|e| context(e.to_string()))?,
            bytes: bytes.0.len(),
        }),
        Part::Delta => {
            let decoder = flate2::read::GzDecoder::new(bytes.0.as_slice());
            Object::Delta(serde_json::from_reader(decoder).map_err(|e| context(e.to_string()))?)
        }
    };
    Ok((id, object))
}

/// The shards of the region with UID `owner_uid` among `config_maps`.
pub fn stored_shards(
    config_maps: &[ConfigMap],
    owner_uid: &str,
) -> Result<StoredShards, LedgerError> {
    let mut stored = StoredShards::default();
    for config_map in config_maps.iter().filter(|c| is_owned_shard(c, owner_uid)) {
        let (id, object) = stored_object(config_map)?;
        stored.set(id, object);
    }
    Ok(stored)
}

/// What a reader takes as the ledger of the region with UID `owner_uid`: the legacy
/// ConfigMap while the migration has not finished (no head shard: nothing is counted into
/// the shards until it exists), else its shards together.
pub fn region_ledger(
    legacy: Option<&ConfigMap>,
    shards: &[ConfigMap],
    owner_uid: &str,
) -> Result<Ledger, LedgerError> {
    let stored = stored_shards(shards, owner_uid)?;
    match legacy {
        Some(legacy) if !stored.ledger.shards.contains_key(&ShardId::Head) => {
            stored_ledger(Some(legacy))
        }
        _ => Ok(stored.ledger.merged()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::finops::ledger::LEDGER_VERSION;
    use crate::finops::pricing::PriceBook;
    use crate::finops::shards::Observed;
    use crate::finops::usage::{Counters, Scrape, SeriesKey};

    fn legacy_config_map(ledger: &Ledger) -> ConfigMap {
        ConfigMap {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(LEDGER_NAME.to_owned()),
                ..Default::default()
            },
            binary_data: Some(BTreeMap::from([(
                LEDGER_KEY.to_owned(),
                k8s_openapi::ByteString(ledger.to_gzip().expect("gzip")),
            )])),
            ..ConfigMap::default()
        }
    }

    #[test]
    fn shards_read_back_and_the_legacy_ledger_counts_until_the_head_exists() {
        assert_eq!(
            stored_ledger(None).expect("no ConfigMap is an empty ledger"),
            Ledger::default()
        );
        let mut legacy = Ledger::default();
        legacy.record(
            "pod/a",
            &crate::finops::fixture_scrape("metrics-before-restart.txt"),
            100,
            &PriceBook::default(),
        );
        let sharded = Sharded::from_legacy(legacy.clone());
        let config_maps: Vec<ConfigMap> = sharded
            .shards
            .iter()
            .map(|(id, shard)| {
                shard_write(
                    "eu",
                    "sovereign-eu",
                    "uid-1",
                    *id,
                    None,
                    shard,
                    DELTA_DIVISOR,
                )
                .expect("a small shard fits")
                .0
            })
            .collect();
        let head = config_maps.last().expect("the head is last");
        assert_eq!(
            head.metadata.name.as_deref(),
            Some("sovereign-usage-ledger-head")
        );
        assert!(head.metadata.owner_references.is_none());
        for (name, expected) in [
            (
                "sovereign-usage-ledger-head",
                Some((ShardId::Head, Part::Base)),
            ),
            (
                "sovereign-usage-ledger-007",
                Some((ShardId::Bucket(7), Part::Base)),
            ),
            (
                "sovereign-usage-ledger-007-delta",
                Some((ShardId::Bucket(7), Part::Delta)),
            ),
            ("sovereign-usage-ledger-head-delta", None),
            ("sovereign-usage-ledger-128", None),
            ("sovereign-usage-ledger", None),
        ] {
            assert_eq!(shard_of(name), expected, "{name}");
        }
        let selector = shard_selector("eu");
        for (key, value) in selector.split(',').filter_map(|kv| kv.split_once('=')) {
            assert_eq!(head.metadata.labels.as_ref().expect("labels")[key], value);
        }
        let read = stored_shards(&config_maps, "uid-1").expect("reads back");
        // The totals are decimal and exact (the cursors' float counters may differ in the
        // last bit after a JSON round trip).
        assert_eq!(read.ledger.merged().usage, legacy.usage);
        assert!(
            stored_shards(&config_maps, "uid-2")
                .expect("reads")
                .ledger
                .shards
                .is_empty(),
            "another region's UID: orphans, not this ledger"
        );
        // While the head is missing the legacy object is the ledger, however many buckets a
        // torn migration wrote; with the head, the shards are.
        let stale = legacy_config_map(&Ledger {
            version: LEDGER_VERSION,
            ..Ledger::default()
        });
        let buckets = &config_maps[..config_maps.len() - 1];
        assert_eq!(
            region_ledger(Some(&stale), buckets, "uid-1").expect("reads"),
            stored_ledger(Some(&stale)).expect("reads")
        );
        assert_eq!(
            region_ledger(Some(&stale), &config_maps, "uid-1")
                .expect("reads")
                .usage,
            legacy.usage
        );
    }

    #[test]
    fn two_hundred_thousand_series_from_two_gateway_pods_fit_in_shards_with_headroom() {
        // The capacity of the sharded ledger: realistic names and counts, every series seen
        // by both pods. docs/finops.md quotes the sizes printed here.
        let series = 200_000u64;
        let scrape = Scrape {
            process_start: Some(1.0),
            series: (0..series)
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
                            input_tokens: 123_456_789 + i * 7_919,
                            output_tokens: 98_765_432 + i * 104_729,
                            requests: 1_234_567 + i * 13,
                            gateway_spend_usd: 0.0,
                        },
                    )
                })
                .collect(),
        };
        let gateways = [
            (
                "pod/9f0c6d3e-1111-4a5b-9c7d-000000000001".to_owned(),
                scrape.clone(),
            ),
            (
                "pod/9f0c6d3e-1111-4a5b-9c7d-000000000002".to_owned(),
                scrape,
            ),
        ];
        let live = gateways.iter().map(|(s, _)| s.clone()).collect();
        let prices = PriceBook::default();
        let sharded = Sharded::default().advance(&Observed {
            gateways: &gateways,
            served: &[],
            running: &[],
            live: &live,
            prices: &prices,
            now: 1,
        });
        assert_eq!(sharded.series(), 200_000);
        let mut sizes = Vec::new();
        for (id, shard) in &sharded.shards {
            let (config_map, _) =
                shard_write("eu", "sovereign-eu", "uid", *id, None, shard, DELTA_DIVISOR)
                    .expect("every shard fits");
            let body = serde_json::to_vec(&config_map).expect("json").len();
            sizes.push(body);
        }
        let total: usize = sizes.iter().sum();
        let largest = sizes.iter().max().copied().unwrap_or(0);
        eprintln!(
            "200,000 series × 2 pods: {} shards, {total} bytes of ConfigMap JSON in all, largest {largest} (limit {MAX_SHARD_BYTES} of gzip, 1 MiB per ConfigMap)",
            sizes.len()
        );
        assert!(largest < 1_000_000, "{largest} bytes");
    }

    #[test]
    fn a_corrupt_ledger_is_an_error_not_an_empty_ledger() {
        let corrupt = ConfigMap {
            binary_data: Some(BTreeMap::from([(
                LEDGER_KEY.to_owned(),
                k8s_openapi::ByteString(b"not gzip".to_vec()),
            )])),
            ..ConfigMap::default()
        };
        assert!(stored_ledger(Some(&corrupt)).is_err());
    }

    #[test]
    fn the_clock_alone_is_no_change() {
        let mut ledger = Ledger::default();
        ledger.record(
            "pod/a",
            &crate::finops::fixture_scrape("metrics-before-restart.txt"),
            100,
            &crate::finops::pricing::PriceBook::default(),
        );
        let mut later = ledger.clone();
        for cursor in later.sources.values_mut() {
            cursor.last_seen += 60;
        }
        assert_ne!(later, ledger);
        assert_eq!(without_clock(&later), without_clock(&ledger));
    }
}
