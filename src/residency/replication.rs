//! Where backup and replication sinks send data: the destination *location* (a
//! `topology.kubernetes.io/region` value) of Velero, CloudNativePG and VolumeReplication
//! objects, for the `forbidCrossBorderReplication` rule.
//!
//! Conventions, in order, for each sink:
//! - **Velero `BackupStorageLocation`**: `spec.config.region`; else a
//!   `topology.kubernetes.io/region` annotation (or label) on the BSL.
//! - **Velero `Backup` / `Schedule`**: the location of the BSL its `storageLocation` names
//!   (`default` when unset), when that BSL is in the input. A BSL not in the input is judged
//!   where it is declared.
//! - **CloudNativePG `Cluster`**: `spec.backup.barmanObjectStore` and every
//!   `spec.externalClusters[]` entry (an external cluster is a replication peer, whichever
//!   direction WAL flows). Location: the region of an S3 `endpointURL` when its host spells one
//!   (`s3.<region>.amazonaws.com`, `s3-<region>.amazonaws.com`, `s3.<region>.scw.cloud`,
//!   `s3.<region>.io.cloud.ovh.net`); else the annotation `location.sovereign.ai/backup` (for the
//!   backup store) or `location.sovereign.ai/<external cluster name>` on the Cluster.
//! - **`VolumeReplication`**: a `topology.kubernetes.io/region` annotation (or label) on it, else
//!   on the `VolumeReplicationClass` it names when that class is in the input.
//!
//! A sink whose destination cannot be determined is a violation that says which field or
//! annotation to set: a location nobody can name is not a location anybody has checked.

use serde_json::Value;

use crate::api::labels::TOPOLOGY_REGION;

/// Annotation prefix naming where a CloudNativePG object store or external cluster is:
/// `location.sovereign.ai/backup` and `location.sovereign.ai/<external cluster name>`.
pub const LOCATION_ANNOTATION_PREFIX: &str = "location.sovereign.ai/";

/// One place a sink sends data to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The field that declares it, for messages (e.g. `spec.config.region`).
    pub field: String,
    /// The location, or why it is unknown and what to set.
    pub location: Result<String, String>,
}

/// `topology.kubernetes.io/region` from an object's annotations, else its labels.
pub fn declared_location(object: &Value) -> Option<&str> {
    let metadata = &object["metadata"];
    metadata["annotations"][TOPOLOGY_REGION]
        .as_str()
        .or_else(|| metadata["labels"][TOPOLOGY_REGION].as_str())
        .filter(|l| !l.is_empty())
}

/// Where a Velero BackupStorageLocation stores backups.
pub fn bsl_destination(bsl: &Value) -> Destination {
    let from_config = bsl["spec"]["config"]["region"]
        .as_str()
        .filter(|r| !r.is_empty());
    match from_config {
        Some(region) => Destination {
            field: "spec.config.region".into(),
            location: Ok(region.to_owned()),
        },
        None => Destination {
            field: "spec.config.region".into(),
            location: declared_location(bsl).map(str::to_owned).ok_or_else(|| {
                format!(
                    "set spec.config.region, or annotate the BackupStorageLocation \
                     {TOPOLOGY_REGION}: <location>"
                )
            }),
        },
    }
}

/// The region spelt by an S3-compatible endpoint URL, when its host follows a provider's
/// regional naming (AWS, Scaleway, OVHcloud). `s3.amazonaws.com` is AWS's us-east-1.
pub fn s3_endpoint_region(endpoint: &str) -> Option<String> {
    let host = url::Url::parse(endpoint)
        .ok()?
        .host_str()?
        .to_ascii_lowercase();
    if host == "s3.amazonaws.com" {
        return Some("us-east-1".into());
    }
    let labels: Vec<&str> = host.split('.').collect();
    let provider = host.ends_with(".amazonaws.com")
        || host.ends_with(".scw.cloud")
        || host.ends_with(".cloud.ovh.net");
    if !provider {
        return None;
    }
    for (index, label) in labels.iter().enumerate() {
        if let Some(region) = label.strip_prefix("s3-") {
            return Some(region.to_owned());
        }
        if *label == "s3" {
            // s3.<region>.…, s3.dualstack.<region>.…
            let next = labels.get(index + 1).copied()?;
            let region = if next == "dualstack" {
                labels.get(index + 2).copied()?
            } else {
                next
            };
            if region == "amazonaws" {
                return Some("us-east-1".into());
            }
            return Some(region.to_owned());
        }
    }
    None
}

/// The destinations of a CloudNativePG `Cluster`: its backup object store and its external
/// clusters.
pub fn cnpg_destinations(cluster: &Value) -> Vec<Destination> {
    let annotations = &cluster["metadata"]["annotations"];
    let annotated = |key: &str| {
        annotations[format!("{LOCATION_ANNOTATION_PREFIX}{key}")]
            .as_str()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
    };
    let store_location = |store: &Value, key: &str| -> Result<String, String> {
        store["endpointURL"]
            .as_str()
            .and_then(s3_endpoint_region)
            .or_else(|| annotated(key))
            .ok_or_else(|| {
                format!(
                    "its location is unknown; use a regional S3 endpointURL or annotate the \
                     Cluster {LOCATION_ANNOTATION_PREFIX}{key}: <location>"
                )
            })
    };
    let mut destinations = Vec::new();
    let store = &cluster["spec"]["backup"]["barmanObjectStore"];
    if store.is_object() {
        destinations.push(Destination {
            field: "spec.backup.barmanObjectStore".into(),
            location: store_location(store, "backup"),
        });
    }
    for (index, external) in cluster["spec"]["externalClusters"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = external["name"].as_str().unwrap_or_default();
        let field = format!("spec.externalClusters[{index}] ({name})");
        let store = &external["barmanObjectStore"];
        let location = match store["endpointURL"].as_str().and_then(s3_endpoint_region) {
            Some(region) => Ok(region),
            None => annotated(name).ok_or_else(|| {
                format!(
                    "its location is unknown; annotate the Cluster \
                     {LOCATION_ANNOTATION_PREFIX}{name}: <location>"
                )
            }),
        };
        destinations.push(Destination { field, location });
    }
    destinations
}

/// The destination of a `VolumeReplication`, given the `VolumeReplicationClass` it names when
/// that class is known.
pub fn volume_replication_destination(replication: &Value, class: Option<&Value>) -> Destination {
    let class_name = replication["spec"]["volumeReplicationClass"]
        .as_str()
        .unwrap_or_default();
    let location = declared_location(replication)
        .or_else(|| class.and_then(declared_location))
        .map(str::to_owned)
        .ok_or_else(|| {
            format!(
                "the replication target's location is unknown; annotate the VolumeReplication \
                 or its VolumeReplicationClass {class_name} {TOPOLOGY_REGION}: <location>"
            )
        });
    Destination {
        field: "spec.volumeReplicationClass".into(),
        location,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn s3_endpoints_spell_their_region() {
        let cases = [
            ("https://s3.eu-west-3.amazonaws.com", Some("eu-west-3")),
            (
                "https://s3-eu-central-1.amazonaws.com",
                Some("eu-central-1"),
            ),
            (
                "https://bucket.s3.us-east-1.amazonaws.com",
                Some("us-east-1"),
            ),
            (
                "https://s3.dualstack.ap-south-1.amazonaws.com",
                Some("ap-south-1"),
            ),
            ("https://s3.amazonaws.com", Some("us-east-1")),
            ("https://s3.fr-par.scw.cloud", Some("fr-par")),
            ("https://s3.gra.io.cloud.ovh.net", Some("gra")),
            ("https://minio.internal:9000", None),
            ("not a url", None),
        ];
        for (endpoint, expected) in cases {
            assert_eq!(
                s3_endpoint_region(endpoint).as_deref(),
                expected,
                "{endpoint}"
            );
        }
    }

    #[test]
    fn bsl_region_from_config_then_annotation() {
        let bsl = json!({"spec": {"config": {"region": "eu-central-1"}}});
        assert_eq!(bsl_destination(&bsl).location, Ok("eu-central-1".into()));
        let annotated =
            json!({"metadata": {"annotations": {TOPOLOGY_REGION: "fr-par"}}, "spec": {}});
        assert_eq!(bsl_destination(&annotated).location, Ok("fr-par".into()));
        assert!(bsl_destination(&json!({"spec": {}})).location.is_err());
    }

    #[test]
    fn cnpg_store_and_external_clusters() {
        let cluster = json!({
            "metadata": {"annotations": {"location.sovereign.ai/origin": "europe-west9"}},
            "spec": {
                "backup": {"barmanObjectStore": {"destinationPath": "s3://b", "endpointURL": "https://s3.us-east-1.amazonaws.com"}},
                "externalClusters": [{"name": "origin"}, {"name": "dr"}]
            }
        });
        let destinations = cnpg_destinations(&cluster);
        assert_eq!(destinations.len(), 3);
        assert_eq!(destinations[0].location, Ok("us-east-1".into()));
        assert_eq!(destinations[1].location, Ok("europe-west9".into()));
        assert!(destinations[2].location.is_err());
    }
}
