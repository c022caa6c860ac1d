//! The one table of kinds the residency rules know: which group/version/kind/plural, where its
//! pod template is, what role it plays, and whether it is governed, matched by admission,
//! listed by the audit and listed as metadata only. The engine ([`super::Engine`]), the
//! admission compiler ([`super::admission`]), the audit (`controllers::audit`, which watches them)
//! and the tests take their lists from here, so that they cannot disagree.

/// What the rules do with a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A Namespace: places the objects in it (its `sovereign.ai/region` label).
    Namespace,
    /// Governed data at rest that only `dataLocation` judges (Secret, ConfigMap, most
    /// `sovereign.ai` kinds). Also the source of governance for the workloads that mount it.
    Data,
    /// Runs pods from the pod template at [`KindSpec::template`].
    Workload,
    /// A PersistentVolumeClaim: `pinStorage` on `spec.storageClassName`.
    Claim,
    /// A PersistentVolume (cluster-scoped): `pinStorage` on its class or node affinity; home
    /// region from its label or the namespace of its `claimRef`.
    Volume,
    /// SovereignRegion: `observabilityInRegion`.
    Region,
    /// InferenceBackend: `inferenceHosting` (and `dataLocation`).
    Backend,
    /// Velero BackupStorageLocation: a sink.
    BackupLocation,
    /// Velero VolumeSnapshotLocation: a sink.
    SnapshotLocation,
    /// Velero Backup: copies the namespaces it includes to a BackupStorageLocation.
    VeleroBackup,
    /// Velero Schedule: a Backup template at `spec.template`.
    VeleroSchedule,
    /// CloudNativePG Cluster: runs Postgres (placement, storage) and ships WAL and backups.
    PostgresCluster,
    /// Barman Cloud plugin ObjectStore: a sink.
    ObjectStore,
    /// csi-addons VolumeReplication: a sink (target from its class, else its annotation).
    VolumeReplication,
    /// csi-addons VolumeGroupReplication: a sink, like VolumeReplication for a PVC group.
    VolumeGroupReplication,
    /// VolumeReplicationClass / VolumeGroupReplicationClass: where replicas go (read by the
    /// replications that name them; not judged on their own).
    ReplicationClass,
}

impl Role {
    /// Whether objects of this role send data somewhere (`forbidCrossBorderReplication`).
    pub fn replicates(self) -> bool {
        matches!(
            self,
            Role::BackupLocation
                | Role::SnapshotLocation
                | Role::VeleroBackup
                | Role::VeleroSchedule
                | Role::PostgresCluster
                | Role::ObjectStore
                | Role::VolumeReplication
                | Role::VolumeGroupReplication
        )
    }
}

/// One kind the rules know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindSpec {
    /// API group (`""` for the core group).
    pub group: &'static str,
    /// The version the audit lists and admission matches.
    pub version: &'static str,
    /// Kind.
    pub kind: &'static str,
    /// Resource name (for admission `resourceRules`).
    pub plural: &'static str,
    /// Whether objects of the kind live in a namespace.
    pub namespaced: bool,
    /// Path of the pod template (an object with `metadata` and `spec`): `Some(&[])` for a Pod
    /// itself, `None` for kinds that run no pods.
    pub template: Option<&'static [&'static str]>,
    /// What the rules do with it.
    pub role: Role,
    /// Whether a `sovereign.ai/data-class` label on it (or its template) makes it subject to
    /// the governed rules.
    pub governed: bool,
    /// Whether the generated ValidatingAdmissionPolicy matches it.
    pub admission: bool,
    /// Whether the in-cluster audit watches it.
    pub audited: bool,
    /// Whether the audit watches metadata only (the rules read only labels and annotations;
    /// the operator never needs Secret values).
    pub metadata_only: bool,
}

const SPEC_TEMPLATE: &[&str] = &["spec", "template"];

/// A row of [`KINDS`] with defaults for the flags.
const fn kind(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    role: Role,
) -> KindSpec {
    KindSpec {
        group,
        version,
        kind,
        plural,
        namespaced: true,
        template: None,
        role,
        governed: true,
        admission: false,
        audited: true,
        metadata_only: false,
    }
}

impl KindSpec {
    const fn cluster_scoped(mut self) -> Self {
        self.namespaced = false;
        self
    }
    const fn template(mut self, path: &'static [&'static str]) -> Self {
        self.template = Some(path);
        self
    }
    /// Matched by admission.
    const fn admitted(mut self) -> Self {
        self.admission = true;
        self
    }
    /// A data-class label on it means nothing (it holds no data of its own).
    const fn ungoverned(mut self) -> Self {
        self.governed = false;
        self
    }
    const fn metadata_only(mut self) -> Self {
        self.metadata_only = true;
        self
    }

    /// The pod template of `object`, for kinds that run pods.
    pub fn pod_template<'v>(&self, object: &'v serde_json::Value) -> Option<&'v serde_json::Value> {
        let path = self.template?;
        Some(path.iter().fold(object, |value, key| &value[*key]))
    }

    /// `apps/v1`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

/// Any other `sovereign.ai` kind: data at rest, `dataLocation` only.
const SOVEREIGN_DATA: KindSpec = kind("sovereign.ai", "v1alpha1", "", "", Role::Data);

/// Every kind the residency rules know. Sources for the third-party kinds: Velero
/// `velero.io/v1` (BackupStorageLocation, VolumeSnapshotLocation, Backup, Schedule),
/// CloudNativePG `postgresql.cnpg.io/v1` Cluster, the Barman Cloud plugin
/// `barmancloud.cnpg.io/v1` ObjectStore, csi-addons `replication.storage.openshift.io/v1alpha1`
/// (VolumeReplication[Class], VolumeGroupReplication[Class], the classes cluster-scoped) and
/// Argo Rollouts `argoproj.io/v1alpha1` Rollout (pod template at `spec.template`).
pub const KINDS: &[KindSpec] = &[
    kind("", "v1", "Namespace", "namespaces", Role::Namespace)
        .cluster_scoped()
        .ungoverned()
        .metadata_only(),
    kind("", "v1", "Secret", "secrets", Role::Data)
        .admitted()
        .metadata_only(),
    kind("", "v1", "ConfigMap", "configmaps", Role::Data)
        .admitted()
        .metadata_only(),
    kind("", "v1", "Pod", "pods", Role::Workload)
        .template(&[])
        .admitted(),
    kind(
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        Role::Workload,
    )
    .template(SPEC_TEMPLATE)
    .admitted(),
    kind(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        Role::Claim,
    )
    .admitted(),
    // Cluster-scoped: its home region is the namespace of the claim it is bound to, another
    // object, so admission cannot judge it.
    kind(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        Role::Volume,
    )
    .cluster_scoped(),
    kind("apps", "v1", "Deployment", "deployments", Role::Workload)
        .template(SPEC_TEMPLATE)
        .admitted(),
    kind("apps", "v1", "StatefulSet", "statefulsets", Role::Workload)
        .template(SPEC_TEMPLATE)
        .admitted(),
    kind("apps", "v1", "DaemonSet", "daemonsets", Role::Workload)
        .template(SPEC_TEMPLATE)
        .admitted(),
    kind("apps", "v1", "ReplicaSet", "replicasets", Role::Workload)
        .template(SPEC_TEMPLATE)
        .admitted(),
    kind("batch", "v1", "Job", "jobs", Role::Workload)
        .template(SPEC_TEMPLATE)
        .admitted(),
    kind("batch", "v1", "CronJob", "cronjobs", Role::Workload)
        .template(&["spec", "jobTemplate", "spec", "template"])
        .admitted(),
    kind(
        "argoproj.io",
        "v1alpha1",
        "Rollout",
        "rollouts",
        Role::Workload,
    )
    .template(SPEC_TEMPLATE)
    .admitted(),
    kind(
        "sovereign.ai",
        "v1alpha1",
        "SovereignRegion",
        "sovereignregions",
        Role::Region,
    )
    .cluster_scoped(),
    kind(
        "sovereign.ai",
        "v1alpha1",
        "InferenceBackend",
        "inferencebackends",
        Role::Backend,
    )
    .admitted(),
    kind(
        "sovereign.ai",
        "v1alpha1",
        "TokenBudget",
        "tokenbudgets",
        Role::Data,
    )
    .admitted()
    .metadata_only(),
    kind(
        "velero.io",
        "v1",
        "BackupStorageLocation",
        "backupstoragelocations",
        Role::BackupLocation,
    ),
    kind(
        "velero.io",
        "v1",
        "VolumeSnapshotLocation",
        "volumesnapshotlocations",
        Role::SnapshotLocation,
    ),
    kind("velero.io", "v1", "Backup", "backups", Role::VeleroBackup),
    kind(
        "velero.io",
        "v1",
        "Schedule",
        "schedules",
        Role::VeleroSchedule,
    ),
    kind(
        "postgresql.cnpg.io",
        "v1",
        "Cluster",
        "clusters",
        Role::PostgresCluster,
    ),
    kind(
        "barmancloud.cnpg.io",
        "v1",
        "ObjectStore",
        "objectstores",
        Role::ObjectStore,
    ),
    kind(
        "replication.storage.openshift.io",
        "v1alpha1",
        "VolumeReplication",
        "volumereplications",
        Role::VolumeReplication,
    ),
    kind(
        "replication.storage.openshift.io",
        "v1alpha1",
        "VolumeGroupReplication",
        "volumegroupreplications",
        Role::VolumeGroupReplication,
    ),
    kind(
        "replication.storage.openshift.io",
        "v1alpha1",
        "VolumeReplicationClass",
        "volumereplicationclasses",
        Role::ReplicationClass,
    )
    .cluster_scoped()
    .ungoverned(),
    kind(
        "replication.storage.openshift.io",
        "v1alpha1",
        "VolumeGroupReplicationClass",
        "volumegroupreplicationclasses",
        Role::ReplicationClass,
    )
    .cluster_scoped()
    .ungoverned(),
];

/// The row for (`group`, `kind`); other `sovereign.ai` kinds (ResidencyPolicy, future ones)
/// are governed data at rest judged by `dataLocation` only.
pub fn lookup(group: &str, kind: &str) -> Option<&'static KindSpec> {
    // Hashed once: the engine looks up every object it reads.
    static INDEX: std::sync::LazyLock<
        std::collections::HashMap<(&'static str, &'static str), &'static KindSpec>,
    > = std::sync::LazyLock::new(|| KINDS.iter().map(|k| ((k.group, k.kind), k)).collect());
    INDEX
        .get(&(group, kind))
        .copied()
        .or_else(|| (group == "sovereign.ai").then_some(&SOVEREIGN_DATA))
}

/// The kinds the in-cluster audit lists.
pub fn audited() -> impl Iterator<Item = &'static KindSpec> {
    KINDS.iter().filter(|k| k.audited)
}

/// The kinds the generated admission policies match.
pub fn admitted() -> impl Iterator<Item = &'static KindSpec> {
    KINDS.iter().filter(|k| k.admission)
}

/// The admitted kinds whose pod template is at `path` (for the generated CEL).
pub fn admitted_with_template(path: &[&str]) -> Vec<&'static str> {
    admitted()
        .filter(|k| k.template == Some(path))
        .map(|k| k.kind)
        .collect()
}

/// The distinct pod template paths of admitted kinds other than the Pod itself.
pub fn admitted_template_paths() -> Vec<&'static [&'static str]> {
    let mut paths: Vec<&'static [&'static str]> = Vec::new();
    for path in admitted().filter_map(|k| k.template) {
        if !path.is_empty() && !paths.contains(&path) {
            paths.push(path);
        }
    }
    paths
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_unique_and_consistent() {
        for (i, a) in KINDS.iter().enumerate() {
            assert!(
                KINDS[i + 1..]
                    .iter()
                    .all(|b| (a.group, a.kind) != (b.group, b.kind)),
                "{} twice",
                a.kind
            );
            assert!(
                !a.admission || (a.governed && a.namespaced),
                "{}: admission judges governed namespaced kinds only",
                a.kind
            );
            assert_eq!(a.template.is_some(), a.role == Role::Workload, "{}", a.kind);
        }
    }

    /// The chart's ClusterRole lets the audit list and watch every audited kind: a kind the
    /// cluster serves but the operator may not watch would never be audited.
    #[test]
    fn the_chart_lets_the_audit_list_every_audited_kind() {
        let rules = include_str!("../../charts/sovereign-operator/templates/_helpers.tpl");
        let mut granted: Vec<(String, String)> = Vec::new();
        let lines: Vec<&str> = rules.lines().map(str::trim).collect();
        for window in lines.windows(3) {
            let list = |line: &str, key: &str| -> Option<Vec<String>> {
                let inner = line
                    .strip_prefix(key)?
                    .trim()
                    .strip_prefix('[')?
                    .strip_suffix(']')?;
                Some(
                    inner
                        .split(',')
                        .map(|s| s.trim().trim_matches('"').to_owned())
                        .collect(),
                )
            };
            if let (Some(groups), Some(resources), Some(verbs)) = (
                list(window[0], "- apiGroups:"),
                list(window[1], "resources:"),
                list(window[2], "verbs:"),
            ) && verbs.iter().any(|v| v == "list")
                && verbs.iter().any(|v| v == "watch")
            {
                for group in &groups {
                    for resource in &resources {
                        granted.push((group.clone(), resource.clone()));
                    }
                }
            }
        }
        for kind in audited() {
            assert!(
                granted.contains(&(kind.group.to_owned(), kind.plural.to_owned())),
                "the chart does not let the audit list and watch {} ({}/{})",
                kind.kind,
                kind.group,
                kind.plural
            );
        }
    }

    #[test]
    fn the_audit_lists_what_the_engine_needs() {
        let audited: Vec<&str> = audited().map(|k| k.kind).collect();
        for needed in [
            "ReplicationController",
            "VolumeReplicationClass",
            "VolumeReplication",
            "PersistentVolume",
            "ObjectStore",
            "VolumeSnapshotLocation",
            "Rollout",
        ] {
            assert!(audited.contains(&needed), "{needed}");
        }
        assert!(lookup("", "Secret").is_some_and(|k| k.metadata_only));
        assert!(lookup("sovereign.ai", "ResidencyPolicy").is_some());
        assert!(lookup("example.com", "Mirror").is_none());
    }
}
