//! Where a region's usage ledger lives: a ConfigMap in the region namespace holding the
//! gzip-compressed JSON of [`Ledger`]. Pure: the usage collector (the only writer) and the
//! budget controller (a reader) both go through here, so neither imports the other.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;

use super::ledger::{Ledger, LedgerError};
use crate::render::Owner;

/// Name of a region's ledger ConfigMap, in the region namespace.
pub const LEDGER_NAME: &str = "sovereign-usage-ledger";
/// Key of the ledger in that ConfigMap's `binaryData`: gzip-compressed JSON (read it with
/// `kubectl get cm … -o jsonpath='{.binaryData.ledger\.json\.gz}' | base64 -d | gunzip`).
pub const LEDGER_KEY: &str = "ledger.json.gz";
/// `app.kubernetes.io/component` of the ledger and of the budget actions.
pub const COMPONENT: &str = "finops";
/// Largest ledger written: a ConfigMap's data is limited to 1 MiB, minus room for metadata.
pub const MAX_LEDGER_BYTES: usize = 1_000_000;

/// Why a ledger cannot be stored.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// Encoding failed.
    #[error(transparent)]
    Encode(#[from] LedgerError),
    /// The ledger outgrew what one ConfigMap can hold.
    #[error(
        "the usage ledger would be {bytes} bytes ({series} series), more than a ConfigMap holds; nothing was counted this round (split the region, or reduce label cardinality such as key aliases)"
    )]
    TooLarge {
        /// Serialized size.
        bytes: usize,
        /// Series in it.
        series: usize,
    },
}

/// The ledger stored in `config_map`; empty when there is none yet.
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
    for cursor in copy.sources.values_mut() {
        cursor.last_seen = 0;
    }
    for meter in copy.gpu.values_mut() {
        meter.charged_until = 0;
    }
    copy
}

/// The ConfigMap that stores `ledger` for `region` in `namespace`, refused when it would not
/// fit (a plain error instead of the API server's refusal). `resource_version` is the
/// version it replaces (None: it is created), so that a delta and its cursor are committed
/// together or not at all.
pub fn ledger_config_map(
    region: &str,
    namespace: &str,
    ledger: &Ledger,
    resource_version: Option<String>,
) -> Result<ConfigMap, StorageError> {
    let bytes = ledger.to_gzip()?;
    if bytes.len() > MAX_LEDGER_BYTES {
        return Err(StorageError::TooLarge {
            bytes: bytes.len(),
            series: ledger.usage.len(),
        });
    }
    let owner = Owner {
        region: region.to_owned(),
        instance: region.to_owned(),
        // No owner reference: the ledger lives in the region namespace, which goes with the
        // region, and a reference would wake the region controller on every write.
        reference: None,
    };
    let mut metadata = owner.meta(COMPONENT, LEDGER_NAME, Some(namespace));
    metadata.resource_version = resource_version;
    Ok(ConfigMap {
        metadata,
        binary_data: Some(BTreeMap::from([(
            LEDGER_KEY.to_owned(),
            k8s_openapi::ByteString(bytes),
        )])),
        ..ConfigMap::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_ledger_reads_back_and_none_is_empty() {
        assert_eq!(
            stored_ledger(None).expect("no ConfigMap is an empty ledger"),
            Ledger::default()
        );
        let mut ledger = Ledger::default();
        ledger.record(
            "pod/a",
            &crate::finops::fixture_scrape("metrics-before-restart.txt"),
            100,
            &crate::finops::pricing::PriceBook::default(),
        );
        let stored = ledger_config_map("eu", "sovereign-eu", &ledger, Some("7".into()))
            .expect("a small ledger fits");
        assert_eq!(stored.metadata.name.as_deref(), Some(LEDGER_NAME));
        assert_eq!(stored.metadata.resource_version.as_deref(), Some("7"));
        assert!(stored.metadata.owner_references.is_none());
        let read = stored_ledger(Some(&stored)).expect("reads back");
        // The totals are decimal and exact (the cursors' float counters may differ in the
        // last bit after a JSON round trip).
        assert_eq!(read.usage, ledger.usage);
        assert_eq!(
            read.sources.keys().collect::<Vec<_>>(),
            ledger.sources.keys().collect::<Vec<_>>()
        );
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
