//! `forbidCrossBorderReplication`: where backup and replication sinks send data — the
//! destination *location* (a `topology.kubernetes.io/region` value) of Velero, CloudNativePG,
//! Barman Cloud and csi-addons objects — must be one of the scope's locations.
//!
//! # Where each sink sends data (upstream semantics)
//! - **Velero `BackupStorageLocation`** (velero.io/v1; the AWS object store plugin's
//!   `config`): `spec.config.s3Url` is the endpoint Velero talks to, so the region its host
//!   spells wins ([`super::super::s3`]); with an `s3Url` that spells none (MinIO, Ceph RGW),
//!   `config.region` is only the signing region and the location must be declared by a
//!   `topology.kubernetes.io/region` annotation (or label). Without `s3Url`,
//!   `config.region`, else that annotation.
//! - **Velero `VolumeSnapshotLocation`**: `spec.config.region`, else the annotation.
//! - **Velero `Backup` / `Schedule` (`spec.template`)**: the BSL `storageLocation` names; when
//!   it names none, the BSL of its namespace with `spec.default: true`, else the one named
//!   `default` (Velero's `--default-backup-storage-location`; `pkg/controller/backup_controller.go`).
//!   Volume snapshots go to the VSLs `volumeSnapshotLocations` names, and, for every provider it
//!   names none of, to that provider's VSLs in the namespace (Velero uses the only one, or the
//!   server's default among several, which the input cannot show: all are judged) — unless
//!   `snapshotVolumes: false`. A BSL or VSL not in the input is judged where it is declared.
//!   Whose data: the namespaces the Backup copies, `includedNamespaces` (globs as Velero's
//!   `gobwas/glob` matches them; empty or `*` = all) minus `excludedNamespaces` (which win),
//!   evaluated over the input's Namespaces and every region's stack namespace — and a Backup
//!   in an exempt namespace still copies the governed namespaces it includes.
//! - **CloudNativePG `Cluster`** (postgresql.cnpg.io/v1): the in-tree
//!   `spec.backup.barmanObjectStore`; the Barman Cloud plugin (`spec.plugins[]` named
//!   `barman-cloud.cloudnative-pg.io`, `parameters.barmanObjectName` → an `ObjectStore` of
//!   barmancloud.cnpg.io/v1 in the same namespace, whose `spec.configuration` is the same
//!   `BarmanObjectStoreConfiguration`); every `spec.externalClusters[]` entry (a replication
//!   peer, whichever direction WAL flows: its `barmanObjectStore`, its `plugin`'s ObjectStore,
//!   else an annotation). An object store's location: the region its `endpointURL` spells,
//!   else (in-tree) the Cluster annotation `location.sovereign.ai/backup` /
//!   `location.sovereign.ai/<external cluster name>`, or (ObjectStore) the ObjectStore's
//!   `topology.kubernetes.io/region` annotation.
//! - **csi-addons `VolumeReplication` / `VolumeGroupReplication`**
//!   (replication.storage.openshift.io/v1alpha1): the class decides where the storage system
//!   replicates, so the class's `topology.kubernetes.io/region` annotation (the
//!   VolumeGroupReplicationClass, else the VolumeReplicationClass) outranks the replication's
//!   own; the replication's own annotation is used only when its class is not in the input or
//!   declares nothing.
//!
//! A sink whose destination cannot be determined is a violation that says which field or
//! annotation to set: a location nobody can name is not a location anybody has checked.
//!
//! # Trust
//! A host name that spells a region is verified (it is where the bytes go); an annotation is a
//! claim, believed only where nothing verifiable says otherwise.

use serde_json::Value;

use crate::api::labels::TOPOLOGY_REGION;

use super::super::kinds::Role;
use super::super::s3::{endpoint_host, s3_endpoint_region};

/// Annotation prefix naming where a CloudNativePG object store or external cluster is:
/// `location.sovereign.ai/backup` and `location.sovereign.ai/<external cluster name>`.
pub const LOCATION_ANNOTATION_PREFIX: &str = "location.sovereign.ai/";

/// The Barman Cloud plugin's name in a Cluster's `spec.plugins` / `externalClusters[].plugin`.
pub const BARMAN_CLOUD_PLUGIN: &str = "barman-cloud.cloudnative-pg.io";

/// One place a sink sends data to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The field that declares it, for messages (e.g. `spec.config.region`).
    pub field: String,
    /// The location, or why it is unknown and what to set.
    pub location: Result<String, String>,
}

/// The objects sinks refer to by name (implemented by the engine's inventory).
pub trait Referenced {
    /// Velero BackupStorageLocation `name` in `namespace`.
    fn backup_location(&self, namespace: &str, name: &str) -> Option<&Value>;
    /// The BackupStorageLocation of `namespace` marked `spec.default: true`.
    fn default_backup_location(&self, namespace: &str) -> Option<&Value>;
    /// Every VolumeSnapshotLocation of `namespace`.
    fn snapshot_locations(&self, namespace: &str) -> Vec<&Value>;
    /// Barman Cloud ObjectStore `name` in `namespace`.
    fn object_store(&self, namespace: &str, name: &str) -> Option<&Value>;
    /// VolumeReplicationClass or VolumeGroupReplicationClass `name` (`group` true for the
    /// latter).
    fn replication_class(&self, name: &str, group: bool) -> Option<&Value>;
}

/// `topology.kubernetes.io/region` from an object's annotations, else its labels.
pub fn declared_location(object: &Value) -> Option<&str> {
    let metadata = &object["metadata"];
    metadata["annotations"][TOPOLOGY_REGION]
        .as_str()
        .or_else(|| metadata["labels"][TOPOLOGY_REGION].as_str())
        .map(str::trim)
        .filter(|l| !l.is_empty())
}

fn nonempty(value: &Value) -> Option<&str> {
    value.as_str().map(str::trim).filter(|s| !s.is_empty())
}

/// Where a Velero BackupStorageLocation stores backups.
pub fn bsl_destination(bsl: &Value) -> Destination {
    let config = &bsl["spec"]["config"];
    let declared = declared_location(bsl).map(str::to_owned);
    if let Some(url) = nonempty(&config["s3Url"]) {
        let host = endpoint_host(url).unwrap_or_else(|| url.to_owned());
        return Destination {
            field: format!("spec.config.s3Url ({host})"),
            location: s3_endpoint_region(url).or(declared).ok_or_else(|| {
                format!(
                    "host {host} spells no region, so spec.config.region is only the signing \
                     region; annotate the BackupStorageLocation {TOPOLOGY_REGION}: <location> \
                     with where that endpoint stores data"
                )
            }),
        };
    }
    match nonempty(&config["region"]) {
        Some(region) => Destination {
            field: "spec.config.region".into(),
            location: Ok(region.to_owned()),
        },
        None => Destination {
            field: "spec.config.region".into(),
            location: declared.ok_or_else(|| {
                format!(
                    "set spec.config.region, or annotate the BackupStorageLocation \
                     {TOPOLOGY_REGION}: <location>"
                )
            }),
        },
    }
}

/// Where a Velero VolumeSnapshotLocation stores snapshots.
pub fn vsl_destination(vsl: &Value) -> Destination {
    let location = nonempty(&vsl["spec"]["config"]["region"])
        .or_else(|| declared_location(vsl))
        .map(str::to_owned)
        .ok_or_else(|| {
            format!(
                "set spec.config.region, or annotate the VolumeSnapshotLocation \
                 {TOPOLOGY_REGION}: <location>"
            )
        });
    Destination {
        field: "spec.config.region".into(),
        location,
    }
}

/// Where a Barman object store configuration (`BarmanObjectStoreConfiguration`) writes, when
/// its endpoint spells it.
fn store_region(configuration: &Value) -> Option<String> {
    nonempty(&configuration["endpointURL"]).and_then(s3_endpoint_region)
}

/// Where a Barman Cloud plugin ObjectStore writes.
pub fn object_store_destination(store: &Value) -> Destination {
    let configuration = &store["spec"]["configuration"];
    let location = store_region(configuration)
        .or_else(|| declared_location(store).map(str::to_owned))
        .ok_or_else(|| {
            format!(
                "its location is unknown; use a regional S3 endpointURL in \
                 spec.configuration or annotate the ObjectStore {TOPOLOGY_REGION}: <location>"
            )
        });
    Destination {
        field: "spec.configuration".into(),
        location,
    }
}

/// The ObjectStore a Barman Cloud plugin reference (`{name, parameters.barmanObjectName}`)
/// names, if it is that plugin.
fn plugin_store(plugin: &Value) -> Option<&str> {
    (plugin["name"] == BARMAN_CLOUD_PLUGIN && plugin["enabled"] != false)
        .then(|| nonempty(&plugin["parameters"]["barmanObjectName"]))
        .flatten()
}

/// The destinations of a CloudNativePG `Cluster`: its backup object store, its Barman Cloud
/// plugin ObjectStores and its external clusters.
pub fn cnpg_destinations(
    cluster: &Value,
    namespace: &str,
    referenced: &dyn Referenced,
) -> Vec<Destination> {
    let annotations = &cluster["metadata"]["annotations"];
    let annotated = |key: &str| {
        nonempty(&annotations[format!("{LOCATION_ANNOTATION_PREFIX}{key}")]).map(str::to_owned)
    };
    let via_store = |field: String, name: &str| -> Option<Destination> {
        referenced.object_store(namespace, name).map(|store| {
            let destination = object_store_destination(store);
            Destination {
                field: format!("{field} → ObjectStore {name} ({})", destination.field),
                location: destination.location,
            }
        })
    };
    let mut destinations = Vec::new();
    let store = &cluster["spec"]["backup"]["barmanObjectStore"];
    if store.is_object() {
        destinations.push(Destination {
            field: "spec.backup.barmanObjectStore".into(),
            location: store_region(store)
                .or_else(|| annotated("backup"))
                .ok_or_else(|| {
                    format!(
                        "its location is unknown; use a regional S3 endpointURL or annotate the \
                     Cluster {LOCATION_ANNOTATION_PREFIX}backup: <location>"
                    )
                }),
        });
    }
    for (index, plugin) in cluster["spec"]["plugins"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let Some(name) = plugin_store(plugin) {
            // An ObjectStore not in the input is judged where it is declared.
            destinations.extend(via_store(format!("spec.plugins[{index}]"), name));
        }
    }
    for (index, external) in cluster["spec"]["externalClusters"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let name = external["name"].as_str().unwrap_or_default();
        let field = format!("spec.externalClusters[{index}] ({name})");
        if let Some(region) = store_region(&external["barmanObjectStore"]) {
            destinations.push(Destination {
                field,
                location: Ok(region),
            });
            continue;
        }
        if let Some(store) = plugin_store(&external["plugin"])
            && let Some(destination) = via_store(format!("{field} plugin"), store)
        {
            destinations.push(destination);
            continue;
        }
        destinations.push(Destination {
            field,
            location: annotated(name).ok_or_else(|| {
                format!(
                    "its location is unknown; annotate the Cluster \
                     {LOCATION_ANNOTATION_PREFIX}{name}: <location>"
                )
            }),
        });
    }
    destinations
}

/// The destination of a `VolumeReplication` or `VolumeGroupReplication`: its class's declared
/// location outranks its own.
pub fn volume_replication_destination(
    replication: &Value,
    group: bool,
    referenced: &dyn Referenced,
) -> Destination {
    let spec = &replication["spec"];
    let mut classes: Vec<(&str, &str, bool)> = Vec::new();
    if group {
        if let Some(name) = nonempty(&spec["volumeGroupReplicationClassName"]) {
            classes.push(("spec.volumeGroupReplicationClassName", name, true));
        }
        if let Some(name) = nonempty(&spec["volumeReplicationClassName"]) {
            classes.push(("spec.volumeReplicationClassName", name, false));
        }
    } else if let Some(name) = nonempty(&spec["volumeReplicationClass"]) {
        classes.push(("spec.volumeReplicationClass", name, false));
    }
    for (field, name, is_group) in &classes {
        if let Some(location) = referenced
            .replication_class(name, *is_group)
            .and_then(declared_location)
        {
            return Destination {
                field: format!("{field} ({name})"),
                location: Ok(location.to_owned()),
            };
        }
    }
    let kind = if group {
        "VolumeGroupReplication"
    } else {
        "VolumeReplication"
    };
    let names = classes
        .iter()
        .map(|(_, n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ");
    Destination {
        field: format!("metadata.annotations[{TOPOLOGY_REGION}]"),
        location: declared_location(replication)
            .map(str::to_owned)
            .ok_or_else(|| {
                format!(
                    "the replication target's location is unknown; annotate the class \
                     ({names}) or the {kind} {TOPOLOGY_REGION}: <location>"
                )
            }),
    }
}

/// Whether Velero includes namespace `name` given `includedNamespaces` and
/// `excludedNamespaces` (`IncludesExcludes.ShouldInclude`: an exclusion wins; no inclusion, or
/// `*`, includes everything; otherwise a glob must match).
pub fn velero_includes(included: &[&str], excluded: &[&str], name: &str) -> bool {
    if excluded.iter().any(|pattern| glob_matches(pattern, name)) {
        return false;
    }
    included.is_empty()
        || included.contains(&"*")
        || included.iter().any(|pattern| glob_matches(pattern, name))
}

/// Brace alternatives a pattern may expand to before it is taken as matching everything: a
/// Backup's pattern is user input, and failing closed (every namespace included) is safe.
const MAX_ALTERNATIVES: usize = 256;

/// A `gobwas/glob` match without separators: `*` (any run), `?` (one character), `[abc]` /
/// `[a-z]` / `[!abc]` (a class), `{a,b}` (alternatives, may nest globs), `\` escapes. Braces
/// are expanded first, then each alternative is matched in O(pattern × text), so no pattern
/// can make the check slow.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    match expand_braces(&pattern.chars().collect::<Vec<_>>()) {
        Some(alternatives) => alternatives.iter().any(|p| glob_linear(p, &text)),
        None => true,
    }
}

/// Every brace-free alternative of `pattern`, or None past [`MAX_ALTERNATIVES`].
fn expand_braces(pattern: &[char]) -> Option<Vec<Vec<char>>> {
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            '\\' => i += 2,
            '{' => {
                // The matching brace and the top-level commas inside it.
                let mut depth = 0;
                let mut commas = Vec::new();
                let mut close = None;
                let mut j = i + 1;
                while j < pattern.len() {
                    match pattern[j] {
                        '\\' => j += 1,
                        '{' => depth += 1,
                        '}' if depth == 0 => {
                            close = Some(j);
                            break;
                        }
                        '}' => depth -= 1,
                        ',' if depth == 0 => commas.push(j),
                        _ => {}
                    }
                    j += 1;
                }
                // An unclosed brace is a literal.
                let Some(close) = close else {
                    i += 1;
                    continue;
                };
                let mut bounds = vec![i];
                bounds.extend(&commas);
                bounds.push(close);
                let mut out = Vec::new();
                for pair in bounds.windows(2) {
                    let mut alternative: Vec<char> = pattern[..i].to_vec();
                    alternative.extend_from_slice(&pattern[pair[0] + 1..pair[1]]);
                    alternative.extend_from_slice(&pattern[close + 1..]);
                    out.extend(expand_braces(&alternative)?);
                    if out.len() > MAX_ALTERNATIVES {
                        return None;
                    }
                }
                return Some(out);
            }
            _ => i += 1,
        }
    }
    Some(vec![pattern.to_vec()])
}

/// One token of a brace-free glob.
enum Token {
    Any,
    One,
    Literal(char),
    Class {
        negated: bool,
        items: Vec<(char, char)>,
    },
}

fn tokens(pattern: &[char]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < pattern.len() {
        match pattern[i] {
            '*' => out.push(Token::Any),
            '?' => out.push(Token::One),
            '\\' if i + 1 < pattern.len() => {
                i += 1;
                out.push(Token::Literal(pattern[i]));
            }
            '[' => match pattern[i + 1..].iter().position(|&c| c == ']') {
                Some(length) => {
                    let mut class = &pattern[i + 1..i + 1 + length];
                    let negated = class.first() == Some(&'!');
                    if negated {
                        class = &class[1..];
                    }
                    let mut items = Vec::new();
                    let mut k = 0;
                    while k < class.len() {
                        if k + 2 < class.len() && class[k + 1] == '-' {
                            items.push((class[k], class[k + 2]));
                            k += 3;
                        } else {
                            items.push((class[k], class[k]));
                            k += 1;
                        }
                    }
                    out.push(Token::Class { negated, items });
                    i += length + 1;
                }
                None => out.push(Token::Literal('[')),
            },
            c => out.push(Token::Literal(c)),
        }
        i += 1;
    }
    out
}

/// A brace-free glob against `text`, by dynamic programming over (token, character).
fn glob_linear(pattern: &[char], text: &[char]) -> bool {
    let tokens = tokens(pattern);
    // matched[j]: the tokens so far match text[..j].
    let mut matched = vec![false; text.len() + 1];
    matched[0] = true;
    for token in &tokens {
        let mut next = vec![false; text.len() + 1];
        match token {
            Token::Any => {
                let mut reachable = false;
                for j in 0..=text.len() {
                    reachable |= matched[j];
                    next[j] = reachable;
                }
            }
            _ => {
                for j in 0..text.len() {
                    if !matched[j] {
                        continue;
                    }
                    let c = text[j];
                    let ok = match token {
                        Token::One => true,
                        Token::Literal(l) => *l == c,
                        Token::Class { negated, items } => {
                            items.iter().any(|&(lo, hi)| lo <= c && c <= hi) != *negated
                        }
                        Token::Any => false,
                    };
                    next[j + 1] |= ok;
                }
            }
        }
        matched = next;
    }
    matched[text.len()]
}

/// The destinations of a sink of role `role` in `namespace`.
pub fn destinations(
    role: Role,
    object: &Value,
    namespace: &str,
    referenced: &dyn Referenced,
) -> Vec<Destination> {
    let velero = |spec: &Value| {
        let mut out = Vec::new();
        let named = nonempty(&spec["storageLocation"]);
        let (bsl, name) = match named {
            Some(name) => (referenced.backup_location(namespace, name), name.to_owned()),
            None => match referenced.default_backup_location(namespace) {
                Some(bsl) => (
                    Some(bsl),
                    bsl["metadata"]["name"]
                        .as_str()
                        .unwrap_or("default")
                        .to_owned(),
                ),
                None => (
                    referenced.backup_location(namespace, "default"),
                    "default".to_owned(),
                ),
            },
        };
        if let Some(bsl) = bsl {
            let destination = bsl_destination(bsl);
            let how = if named.is_some() { "" } else { ", the default" };
            out.push(Destination {
                field: format!("storageLocation {name}{how} ({})", destination.field),
                location: destination.location,
            });
        }
        if spec["snapshotVolumes"] != false {
            let named: Vec<&str> = spec["volumeSnapshotLocations"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let all = referenced.snapshot_locations(namespace);
            let provider = |v: &Value| {
                v["spec"]["provider"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            };
            let named_providers: Vec<String> = all
                .iter()
                .filter(|v| named.iter().any(|n| v["metadata"]["name"] == *n))
                .map(|v| provider(v))
                .collect();
            for vsl in all {
                let vsl_name = vsl["metadata"]["name"].as_str().unwrap_or_default();
                let used = named.contains(&vsl_name) || !named_providers.contains(&provider(vsl));
                if used {
                    let destination = vsl_destination(vsl);
                    out.push(Destination {
                        field: format!("volumeSnapshotLocation {vsl_name} ({})", destination.field),
                        location: destination.location,
                    });
                }
            }
        }
        out
    };
    match role {
        Role::BackupLocation => vec![bsl_destination(object)],
        Role::SnapshotLocation => vec![vsl_destination(object)],
        Role::VeleroBackup => velero(&object["spec"]),
        Role::VeleroSchedule => velero(&object["spec"]["template"]),
        Role::PostgresCluster => cnpg_destinations(object, namespace, referenced),
        Role::ObjectStore => vec![object_store_destination(object)],
        Role::VolumeReplication => vec![volume_replication_destination(object, false, referenced)],
        Role::VolumeGroupReplication => {
            vec![volume_replication_destination(object, true, referenced)]
        }
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Nothing referenced.
    struct Nothing;
    impl Referenced for Nothing {
        fn backup_location(&self, _: &str, _: &str) -> Option<&Value> {
            None
        }
        fn default_backup_location(&self, _: &str) -> Option<&Value> {
            None
        }
        fn snapshot_locations(&self, _: &str) -> Vec<&Value> {
            Vec::new()
        }
        fn object_store(&self, _: &str, _: &str) -> Option<&Value> {
            None
        }
        fn replication_class(&self, _: &str, _: bool) -> Option<&Value> {
            None
        }
    }

    #[test]
    fn bsl_s3url_then_config_then_annotation() {
        let bsl = json!({"spec": {"config": {"region": "eu-central-1"}}});
        assert_eq!(bsl_destination(&bsl).location, Ok("eu-central-1".into()));
        let annotated =
            json!({"metadata": {"annotations": {TOPOLOGY_REGION: "fr-par"}}, "spec": {}});
        assert_eq!(bsl_destination(&annotated).location, Ok("fr-par".into()));
        assert!(bsl_destination(&json!({"spec": {}})).location.is_err());
        let lying = json!({"spec": {"config": {"region": "eu-central-1",
            "s3Url": "https://s3.us-east-1.amazonaws.com"}}});
        assert_eq!(bsl_destination(&lying).location, Ok("us-east-1".into()));
        let minio = json!({"spec": {"config": {"region": "eu-central-1",
            "s3Url": "http://minio.example.com:9000"}}});
        assert!(bsl_destination(&minio).location.is_err());
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
        let destinations = cnpg_destinations(&cluster, "ns", &Nothing);
        assert_eq!(destinations.len(), 3);
        assert_eq!(destinations[0].location, Ok("us-east-1".into()));
        assert_eq!(destinations[1].location, Ok("europe-west9".into()));
        assert!(destinations[2].location.is_err());
    }

    #[test]
    fn velero_namespace_globs() {
        assert!(velero_includes(&[], &[], "sovereign-eu"));
        assert!(velero_includes(&["*"], &[], "sovereign-eu"));
        assert!(velero_includes(&["sovereign-*"], &[], "sovereign-eu"));
        assert!(velero_includes(&["sovereign-?u"], &[], "sovereign-eu"));
        assert!(velero_includes(&["sovereign-[a-f]u"], &[], "sovereign-eu"));
        assert!(velero_includes(
            &["{team-a,sovereign-eu}"],
            &[],
            "sovereign-eu"
        ));
        assert!(!velero_includes(&["team-*"], &[], "sovereign-eu"));
        assert!(!velero_includes(&["*"], &["sovereign-*"], "sovereign-eu"));
        assert!(!velero_includes(&["sovereign-[!e]u"], &[], "sovereign-eu"));
        assert!(velero_includes(
            &["{sovereign-{eu,in},x}"],
            &[],
            "sovereign-in"
        ));
        assert!(velero_includes(&["sovereign\\-eu"], &[], "sovereign-eu"));
        assert!(!velero_includes(&["{a,b"], &[], "a"));
        // Adversarial patterns stay cheap (and too many alternatives fail closed).
        let stars = "*a".repeat(40);
        assert!(!glob_matches(&stars, &"b".repeat(63)));
        let braces = "{a,b}".repeat(20);
        assert!(glob_matches(&braces, "sovereign-eu"));
    }
}
