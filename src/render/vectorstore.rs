//! The region's vector store: Qdrant (a StatefulSet spread across the zones *of the region*) or
//! PostgreSQL with pgvector, or nothing.
//!
//! Vectors are derived from the region's documents, so they are governed data: every pod is
//! pinned to the region's locations with a required node affinity, and every volume is claimed
//! from an in-region storage class. Volumes outlive the StatefulSet (claim retention `Retain`):
//! deleting or shrinking the store never deletes the data with it.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ExecAction, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec,
    PodTemplateSpec, Probe, Service, ServicePort, TopologySpreadConstraint, Volume,
    VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::k8s::{self, Disruption};
use super::{Child, Owner, pod};
use crate::api::common::SecretKeyReference;
use crate::api::labels::TOPOLOGY_ZONE;
use crate::api::region::{SovereignRegion, VectorStoreEngine};

/// `app.kubernetes.io/component` of everything the vector store consists of.
pub const COMPONENT: &str = "vector-store";

/// Name of the Qdrant StatefulSet and of its client Service.
pub const QDRANT: &str = "qdrant";
/// Name of the headless Service that gives each Qdrant pod its stable DNS name.
pub const QDRANT_HEADLESS: &str = "qdrant-headless";
/// Qdrant image when the spec names none. UNPROVEN: no Qdrant server binary can be installed
/// on the test machines (no container runtime, and Qdrant is on none of the package
/// registries they reach), so unlike every other default image this version is not run by
/// the e2e suite; only the rendered spec is checked.
pub const QDRANT_IMAGE: &str = "qdrant/qdrant:v1.15.4";
/// Secret and key of the Qdrant API key when `vectorStore.apiKeySecret` is unset.
pub const QDRANT_API_KEY_SECRET: &str = "qdrant-api-key";
/// Key of the API key in [`QDRANT_API_KEY_SECRET`].
pub const QDRANT_API_KEY_KEY: &str = "api-key";
/// Qdrant REST API (also serves the health endpoints).
pub const QDRANT_HTTP_PORT: i32 = 6333;
/// Qdrant gRPC API.
pub const QDRANT_GRPC_PORT: i32 = 6334;
/// Qdrant peer-to-peer (Raft consensus and shard transfer) port.
pub const QDRANT_P2P_PORT: i32 = 6335;
/// The uid Qdrant runs as: the uid of Qdrant's unprivileged image and of its Helm chart's
/// default security context; every path Qdrant writes is a volume, so the standard image works
/// under it too.
pub const QDRANT_UID: i64 = 1000;

/// Name of the pgvector StatefulSet and of its Service.
pub const PGVECTOR: &str = "pgvector";
/// PostgreSQL + pgvector image when the spec names none: the pgvector and PostgreSQL major the
/// e2e suite runs (`versions.env`).
pub fn pgvector_image() -> String {
    crate::api::versions::pgvector_image()
}
/// ConfigMap with the SQL the PostgreSQL image runs once, when it initialises an empty data
/// directory (`/docker-entrypoint-initdb.d`, the official image's entrypoint).
pub const PGVECTOR_INIT: &str = "pgvector-init";
/// File of the init ConfigMap: creates the extension in the default database and in
/// `template1`, so that databases created later have it too.
pub const PGVECTOR_INIT_FILE: &str = "10-create-extension-vector.sql";
/// Its content. `IF NOT EXISTS`: harmless when run again by hand on an existing database.
pub const PGVECTOR_INIT_SQL: &str = "CREATE EXTENSION IF NOT EXISTS vector;\n\\connect template1\nCREATE EXTENSION IF NOT EXISTS vector;\n";
/// Where the official image's entrypoint looks for init scripts.
const INITDB_DIR: &str = "/docker-entrypoint-initdb.d";
/// PostgreSQL port.
pub const PGVECTOR_PORT: i32 = 5432;
/// The `postgres` user of the Debian-based PostgreSQL images.
pub const PGVECTOR_UID: i64 = 999;
/// Secret holding the PostgreSQL superuser password (key [`PGVECTOR_PASSWORD_KEY`]). The platform
/// team creates it (from their secret store); the operator never invents credentials, so the
/// pod waits in `CreateContainerConfigError` until it exists.
pub const PGVECTOR_SECRET: &str = "pgvector-credentials";
/// Key of the password in [`PGVECTOR_SECRET`].
pub const PGVECTOR_PASSWORD_KEY: &str = "password";

/// Name of the volume claim template (and so the prefix of the PVC names).
const DATA_VOLUME: &str = "data";

/// The vector store's objects: for Qdrant the StatefulSet, its headless and client Services and,
/// with several replicas, a PodDisruptionBudget; for PgVector the StatefulSet and its Service;
/// for `None` nothing (so orphan clean-up removes a store that was switched off, but never its
/// volumes).
pub fn vector_store(region: &SovereignRegion, owner: &Owner) -> Vec<Child> {
    let ns = region.stack_namespace();
    match region.spec.vector_store.engine {
        VectorStoreEngine::Qdrant => qdrant(region, owner, &ns),
        VectorStoreEngine::PgVector => pgvector(region, owner, &ns),
        VectorStoreEngine::None => Vec::new(),
    }
}

/// In-cluster URL of the vector store (for status and the gateway), or None without one.
pub fn vector_store_endpoint(region: &SovereignRegion) -> Option<String> {
    let ns = region.stack_namespace();
    match region.spec.vector_store.engine {
        VectorStoreEngine::Qdrant => Some(format!("http://{QDRANT}.{ns}.svc:{QDRANT_HTTP_PORT}")),
        VectorStoreEngine::PgVector => {
            Some(format!("postgresql://{PGVECTOR}.{ns}.svc:{PGVECTOR_PORT}"))
        }
        VectorStoreEngine::None => None,
    }
}

/// The storage class of the store's volumes: the spec's, else the region's default (the first
/// of `storageClasses`), else none, which leaves the choice to the cluster default class (and to
/// the residency policy's `pinStorage` rule to refuse it if it is not in-region).
fn storage_class(region: &SovereignRegion) -> Option<String> {
    region
        .spec
        .vector_store
        .storage
        .storage_class
        .clone()
        .or_else(|| region.spec.storage_classes.first().cloned())
}

/// The one volume claim template of the store. The claims carry the managed labels (so residency
/// audits see their home region) but no owner reference: they must outlive the StatefulSet.
///
/// Kubernetes forbids changing `volumeClaimTemplates` of an existing StatefulSet, so a later
/// change of size or class is refused by the API server on apply (and reported by the
/// controller); growing a volume means resizing the existing claims.
fn data_claim(region: &SovereignRegion, owner: &Owner) -> PersistentVolumeClaim {
    let managed = owner.meta(COMPONENT, DATA_VOLUME, None);
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: managed.name,
            labels: managed.labels,
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: storage_class(region),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(region.spec.vector_store.storage.size.clone()),
                )])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

/// Keep the volumes when the StatefulSet is deleted or scaled down: they hold the region's data,
/// and losing it must take a human decision.
fn retain_claims() -> StatefulSetPersistentVolumeClaimRetentionPolicy {
    StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_deleted: Some("Retain".to_owned()),
        when_scaled: Some("Retain".to_owned()),
    }
}

/// Spread replicas evenly over the zones. `nodeAffinityPolicy: Honor` counts only zones of nodes
/// that pass the region affinity, so the spread is over the region's own zones and can never
/// push a replica outside the locations; `DoNotSchedule` makes an uneven placement wait rather
/// than stack replicas in one zone.
fn zone_spread(selector: &BTreeMap<String, String>) -> TopologySpreadConstraint {
    TopologySpreadConstraint {
        max_skew: 1,
        topology_key: TOPOLOGY_ZONE.to_owned(),
        when_unsatisfiable: "DoNotSchedule".to_owned(),
        node_affinity_policy: Some("Honor".to_owned()),
        label_selector: Some(k8s::match_labels(selector)),
        ..TopologySpreadConstraint::default()
    }
}

/// A pod template for the store with the region's placement and the restricted pod security.
fn pod_template(
    region: &SovereignRegion,
    selector: &BTreeMap<String, String>,
    run_as_user: i64,
    container: Container,
    volumes: Vec<Volume>,
    spread: Option<Vec<TopologySpreadConstraint>>,
) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(selector.clone()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            affinity: Some(pod::region_affinity(region, Vec::new())),
            node_selector: pod::region_node_selector(region),
            tolerations: pod::region_tolerations(region, Vec::new()),
            topology_spread_constraints: spread,
            security_context: Some(pod::restricted_pod_security(run_as_user)),
            // Neither database talks to the Kubernetes API, and service-link variables only add
            // noise to the environment both read their configuration from.
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            volumes: Some(volumes),
            ..PodSpec::default()
        }),
    }
}

/// A TCP port of the store's Services, forwarding to the container port of the same name.
fn service_port(name: &str, port: i32) -> ServicePort {
    k8s::service_port(
        name,
        port,
        IntOrString::String(name.to_owned()),
        Some("TCP"),
    )
}

/// A Service `name` of the store in `ns` for the pods `selector` matches.
fn service(
    owner: &Owner,
    ns: &str,
    name: &str,
    selector: &BTreeMap<String, String>,
    ports: Vec<ServicePort>,
) -> Service {
    k8s::service(owner.meta(COMPONENT, name, Some(ns)), selector, ports)
}

/// Qdrant: StatefulSet, headless Service, client Service, and a PDB when clustered.
fn qdrant(region: &SovereignRegion, owner: &Owner, ns: &str) -> Vec<Child> {
    let spec = &region.spec.vector_store;
    let selector = owner.selector(COMPONENT);
    let clustered = spec.replicas > 1;
    let image = spec.image.as_deref().unwrap_or(QDRANT_IMAGE);

    let api_key = spec.api_key_secret.clone().unwrap_or(SecretKeyReference {
        name: QDRANT_API_KEY_SECRET.to_owned(),
        key: QDRANT_API_KEY_KEY.to_owned(),
    });
    let mut env_vars = vec![
        // Qdrant writes this marker file in its working directory, which is on the read-only
        // root filesystem; put it on a scratch volume instead.
        k8s::env("QDRANT_INIT_FILE_PATH", "/qdrant/init/.qdrant-initialized"),
        // Qdrant reports anonymous usage to telemetry.qdrant.io unless told not to
        // (config `telemetry_disabled`): nothing about the region's store leaves it.
        k8s::env("QDRANT__TELEMETRY_DISABLED", "true"),
        // Every request needs the key (`api-key` header); the health endpoints stay open for
        // the probes. The pod waits in CreateContainerConfigError until the Secret exists.
        k8s::secret_env(
            "QDRANT__SERVICE__API_KEY",
            &api_key.name,
            &api_key.key,
            Some(false),
        ),
    ];
    let mut command = None;
    let mut args = None;
    if clustered {
        env_vars.push(k8s::env("QDRANT__CLUSTER__ENABLED", "true"));
        env_vars.push(k8s::env(
            "QDRANT__CLUSTER__P2P__PORT",
            &QDRANT_P2P_PORT.to_string(),
        ));
        // Peer identity comes from the pod's stable DNS name under the headless Service: pod 0
        // founds the cluster, every other pod bootstraps from pod 0. The ordinal is the suffix
        // of the pod's hostname (`qdrant-N`). The script holds no user input except the
        // namespace, a DNS label the schema validates.
        let peer =
            |host: &str| format!("http://{host}.{QDRANT_HEADLESS}.{ns}.svc:{QDRANT_P2P_PORT}");
        let script = format!(
            "set -e\n\
             ordinal=\"${{HOSTNAME##*-}}\"\n\
             uri=\"{self_uri}\"\n\
             if [ \"$ordinal\" = \"0\" ]; then\n\
             \x20 exec ./entrypoint.sh --uri \"$uri\"\n\
             fi\n\
             exec ./entrypoint.sh --bootstrap \"{bootstrap}\" --uri \"$uri\"\n",
            self_uri = peer("${HOSTNAME}"),
            bootstrap = peer(&format!("{QDRANT}-0")),
        );
        command = Some(vec!["/bin/sh".to_owned(), "-c".to_owned()]);
        args = Some(vec![script]);
    }

    let container = Container {
        name: QDRANT.to_owned(),
        image: Some(image.to_owned()),
        command,
        args,
        env: Some(env_vars),
        ports: Some(vec![
            k8s::container_port("http", QDRANT_HTTP_PORT, Some("TCP")),
            k8s::container_port("grpc", QDRANT_GRPC_PORT, Some("TCP")),
            k8s::container_port("p2p", QDRANT_P2P_PORT, Some("TCP")),
        ]),
        // Loading large collections can take minutes; the startup probe holds liveness off until
        // the process answers, so a slow start is not mistaken for a hang.
        startup_probe: Some(k8s::http_probe("/livez", QDRANT_HTTP_PORT, 10, 60, Some(5))),
        liveness_probe: Some(k8s::http_probe("/livez", QDRANT_HTTP_PORT, 10, 6, Some(5))),
        readiness_probe: Some(k8s::http_probe("/readyz", QDRANT_HTTP_PORT, 5, 3, Some(5))),
        security_context: Some(pod::restricted_container_security(true)),
        resources: Some(k8s::with_default_requests(
            spec.resources.as_ref(),
            "500m",
            "1Gi",
        )),
        volume_mounts: Some(vec![
            k8s::mount(DATA_VOLUME, "/qdrant/storage", false),
            k8s::mount("snapshots", "/qdrant/snapshots", false),
            k8s::mount("init", "/qdrant/init", false),
            k8s::mount("tmp", "/tmp", false),
        ]),
        ..Container::default()
    };

    // A second, soft spread over nodes: two replicas on one node would fall together.
    let spread = vec![
        zone_spread(&selector),
        TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            node_affinity_policy: Some("Honor".to_owned()),
            label_selector: Some(k8s::match_labels(&selector)),
            ..TopologySpreadConstraint::default()
        },
    ];

    let statefulset = StatefulSet {
        metadata: owner.meta(COMPONENT, QDRANT, Some(ns)),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(QDRANT_HEADLESS.to_owned()),
            selector: k8s::match_labels(&selector),
            // Parallel, as Qdrant's own chart does: after a full restart peer 0 may not turn
            // ready before a quorum of peers is back, and OrderedReady would never start them.
            pod_management_policy: Some("Parallel".to_owned()),
            persistent_volume_claim_retention_policy: Some(retain_claims()),
            volume_claim_templates: Some(vec![data_claim(region, owner)]),
            template: pod_template(
                region,
                &selector,
                QDRANT_UID,
                container,
                vec![
                    k8s::empty_dir("snapshots", None),
                    k8s::empty_dir("init", None),
                    k8s::empty_dir("tmp", None),
                ],
                Some(spread),
            ),
            ..StatefulSetSpec::default()
        }),
        status: None,
    };

    let mut headless = service(
        owner,
        ns,
        QDRANT_HEADLESS,
        &selector,
        vec![
            service_port("http", QDRANT_HTTP_PORT),
            service_port("grpc", QDRANT_GRPC_PORT),
            service_port("p2p", QDRANT_P2P_PORT),
        ],
    );
    if let Some(s) = headless.spec.as_mut() {
        s.cluster_ip = Some("None".to_owned());
        // Peers must resolve each other before they are ready: readiness waits on consensus.
        s.publish_not_ready_addresses = Some(true);
    }
    let client = service(
        owner,
        ns,
        QDRANT,
        &selector,
        vec![
            service_port("http", QDRANT_HTTP_PORT),
            service_port("grpc", QDRANT_GRPC_PORT),
        ],
    );

    let mut children = vec![
        Child::from(statefulset),
        Child::from(headless),
        Child::from(client),
    ];
    if clustered {
        children.push(Child::from(k8s::pod_disruption_budget(
            owner.meta(COMPONENT, QDRANT, Some(ns)),
            &selector,
            Disruption::MaxUnavailable(1),
        )));
    }
    children
}

/// PostgreSQL + pgvector: one StatefulSet replica and its Service.
///
/// Always one replica, whatever `vectorStore.replicas` says: several plain PostgreSQL pods would
/// be independent databases, not replicas. A replicated PostgreSQL belongs to a dedicated
/// operator (e.g. CloudNativePG), which the residency rules already cover.
fn pgvector(region: &SovereignRegion, owner: &Owner, ns: &str) -> Vec<Child> {
    let spec = &region.spec.vector_store;
    let selector = owner.selector(COMPONENT);
    let image = spec.image.clone().unwrap_or_else(pgvector_image);

    let pg_isready = || Probe {
        exec: Some(ExecAction {
            command: Some(
                [
                    "pg_isready",
                    "-U",
                    "postgres",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    "5432",
                ]
                .map(str::to_owned)
                .to_vec(),
            ),
        }),
        period_seconds: Some(10),
        timeout_seconds: Some(5),
        failure_threshold: Some(6),
        ..Probe::default()
    };

    let container = Container {
        name: PGVECTOR.to_owned(),
        image: Some(image.to_owned()),
        env: Some(vec![
            // A subdirectory, because the volume's root may hold `lost+found`, which initdb
            // refuses.
            k8s::env("PGDATA", "/var/lib/postgresql/data/pgdata"),
            k8s::secret_env(
                "POSTGRES_PASSWORD",
                PGVECTOR_SECRET,
                PGVECTOR_PASSWORD_KEY,
                Some(false),
            ),
        ]),
        ports: Some(vec![k8s::container_port(
            "postgres",
            PGVECTOR_PORT,
            Some("TCP"),
        )]),
        startup_probe: Some(Probe {
            failure_threshold: Some(60),
            ..pg_isready()
        }),
        liveness_probe: Some(pg_isready()),
        readiness_probe: Some(pg_isready()),
        security_context: Some(pod::restricted_container_security(true)),
        resources: Some(k8s::with_default_requests(
            spec.resources.as_ref(),
            "250m",
            "512Mi",
        )),
        volume_mounts: Some(vec![
            k8s::mount(DATA_VOLUME, "/var/lib/postgresql/data", false),
            // The socket directory and temp files: the only places outside PGDATA PostgreSQL
            // writes, so the root filesystem can stay read-only.
            k8s::mount("run", "/var/run/postgresql", false),
            k8s::mount("tmp", "/tmp", false),
            // `CREATE EXTENSION vector` at first initialisation: pgvector ships the extension,
            // but a database has it only once it is created.
            k8s::mount("init", INITDB_DIR, true),
        ]),
        ..Container::default()
    };

    let statefulset = StatefulSet {
        metadata: owner.meta(COMPONENT, PGVECTOR, Some(ns)),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(PGVECTOR.to_owned()),
            selector: k8s::match_labels(&selector),
            persistent_volume_claim_retention_policy: Some(retain_claims()),
            volume_claim_templates: Some(vec![data_claim(region, owner)]),
            template: pod_template(
                region,
                &selector,
                PGVECTOR_UID,
                container,
                vec![
                    k8s::empty_dir("run", None),
                    k8s::empty_dir("tmp", None),
                    k8s::config_map_volume("init", PGVECTOR_INIT),
                ],
                None,
            ),
            ..StatefulSetSpec::default()
        }),
        status: None,
    };
    let service = service(
        owner,
        ns,
        PGVECTOR,
        &selector,
        vec![service_port("postgres", PGVECTOR_PORT)],
    );
    let init = ConfigMap {
        metadata: owner.meta(COMPONENT, PGVECTOR_INIT, Some(ns)),
        data: Some(BTreeMap::from([(
            PGVECTOR_INIT_FILE.to_owned(),
            PGVECTOR_INIT_SQL.to_owned(),
        )])),
        ..ConfigMap::default()
    };
    vec![
        Child::from(init),
        Child::from(statefulset),
        Child::from(service),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::region::Placement;
    use crate::render::test_support::{example_region, owner, required_region_requirements};
    use k8s_openapi::api::core::v1::{EnvVar, Toleration};

    fn statefulset(children: &[Child]) -> &StatefulSet {
        children
            .iter()
            .find_map(|c| match c {
                Child::StatefulSet(s) => Some(s.as_ref()),
                _ => None,
            })
            .expect("a StatefulSet")
    }

    fn pod_spec(set: &StatefulSet) -> &PodSpec {
        set.spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref())
            .expect("pod spec")
    }

    fn env_of(container: &Container) -> BTreeMap<String, EnvVar> {
        container
            .env
            .iter()
            .flatten()
            .map(|e| (e.name.clone(), e.clone()))
            .collect()
    }

    fn claim_class(set: &StatefulSet) -> Option<String> {
        set.spec
            .as_ref()
            .expect("spec")
            .volume_claim_templates
            .as_ref()
            .expect("claims")[0]
            .spec
            .as_ref()
            .expect("claim spec")
            .storage_class_name
            .clone()
    }

    #[test]
    fn qdrant_objects_for_the_eu_example() {
        let children = vector_store(&example_region("eu"), &owner("eu"));
        let names: Vec<String> = children.iter().map(Child::describe).collect();
        assert_eq!(
            names,
            [
                "StatefulSet/sovereign-eu/qdrant",
                "Service/sovereign-eu/qdrant-headless",
                "Service/sovereign-eu/qdrant",
                "PodDisruptionBudget/sovereign-eu/qdrant",
            ]
        );
        for child in &children {
            let labels = child.kind_and_meta().1.labels.as_ref().expect("labels");
            assert_eq!(labels["app.kubernetes.io/component"], "vector-store");
            assert_eq!(labels["sovereign.ai/region"], "eu");
        }
    }

    #[test]
    fn qdrant_is_pinned_to_the_region_locations_with_a_required_affinity() {
        let r = example_region("eu");
        let children = vector_store(&r, &owner("eu"));
        let requirement = &required_region_requirements(pod_spec(statefulset(&children)))[0];
        assert_eq!(requirement.key, "topology.kubernetes.io/region");
        assert_eq!(requirement.operator, "In");
        assert_eq!(
            requirement.values.as_deref(),
            Some(
                &[
                    "europe-west9".to_owned(),
                    "eu-central-1".into(),
                    "fr-par".into()
                ][..]
            )
        );
        assert_eq!(requirement.values.as_ref(), Some(&r.spec.locations));
    }

    #[test]
    fn qdrant_spreads_over_zones_of_the_region_only() {
        let children = vector_store(&example_region("eu"), &owner("eu"));
        let spec = pod_spec(statefulset(&children));
        let zone = spec
            .topology_spread_constraints
            .iter()
            .flatten()
            .find(|c| c.topology_key == "topology.kubernetes.io/zone")
            .expect("zone spread");
        assert_eq!(zone.max_skew, 1);
        assert_eq!(zone.when_unsatisfiable, "DoNotSchedule");
        assert_eq!(zone.node_affinity_policy.as_deref(), Some("Honor"));
        assert_eq!(
            zone.label_selector
                .as_ref()
                .and_then(|s| s.match_labels.clone()),
            Some(owner("eu").selector("vector-store"))
        );
    }

    #[test]
    fn qdrant_clusters_with_several_replicas() {
        let children = vector_store(&example_region("eu"), &owner("eu"));
        let set = statefulset(&children);
        let spec = set.spec.as_ref().expect("spec");
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("qdrant-headless"));
        assert_eq!(
            spec.selector.match_labels,
            Some(owner("eu").selector("vector-store"))
        );
        assert_eq!(
            spec.template
                .metadata
                .as_ref()
                .and_then(|m| m.labels.clone()),
            Some(owner("eu").selector("vector-store"))
        );
        let container = &pod_spec(set).containers[0];
        assert_eq!(container.image.as_deref(), Some(QDRANT_IMAGE));
        let env = env_of(container);
        assert_eq!(
            env["QDRANT__CLUSTER__ENABLED"].value.as_deref(),
            Some("true")
        );
        let script = &container.args.as_ref().expect("bootstrap script")[0];
        assert!(
            script
                .contains("--bootstrap \"http://qdrant-0.qdrant-headless.sovereign-eu.svc:6335\"")
        );
        let ports: Vec<i32> = container
            .ports
            .iter()
            .flatten()
            .map(|p| p.container_port)
            .collect();
        assert_eq!(ports, [6333, 6334, 6335]);

        let headless = children
            .iter()
            .find_map(|c| match c {
                Child::Service(s) if s.metadata.name.as_deref() == Some(QDRANT_HEADLESS) => {
                    s.spec.clone()
                }
                _ => None,
            })
            .expect("headless service");
        assert_eq!(headless.cluster_ip.as_deref(), Some("None"));
        assert_eq!(headless.publish_not_ready_addresses, Some(true));

        let pdb = children
            .iter()
            .find_map(|c| match c {
                Child::PodDisruptionBudget(p) => p.spec.clone(),
                _ => None,
            })
            .expect("pdb");
        assert_eq!(pdb.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(
            pdb.selector.and_then(|s| s.match_labels),
            Some(owner("eu").selector("vector-store"))
        );
    }

    #[test]
    fn a_single_qdrant_is_not_clustered_and_has_no_pdb() {
        let mut r = example_region("eu");
        r.spec.vector_store.replicas = 1;
        r.spec.vector_store.image = Some("registry.eu.example.com/qdrant:v1.15.4".into());
        let children = vector_store(&r, &owner("eu"));
        assert!(
            !children
                .iter()
                .any(|c| matches!(c, Child::PodDisruptionBudget(_)))
        );
        let container = &pod_spec(statefulset(&children)).containers[0];
        assert_eq!(
            container.image.as_deref(),
            Some("registry.eu.example.com/qdrant:v1.15.4")
        );
        assert!(!env_of(container).contains_key("QDRANT__CLUSTER__ENABLED"));
        assert!(container.args.is_none() && container.command.is_none());
    }

    #[test]
    fn qdrant_probes_and_security() {
        let children = vector_store(&example_region("eu"), &owner("eu"));
        let spec = pod_spec(statefulset(&children));
        let container = &spec.containers[0];
        let path = |p: &Option<Probe>| {
            p.as_ref()
                .and_then(|p| p.http_get.as_ref())
                .map(|h| (h.path.clone().unwrap_or_default(), h.port.clone()))
        };
        assert_eq!(
            path(&container.readiness_probe),
            Some(("/readyz".into(), IntOrString::Int(6333)))
        );
        assert_eq!(
            path(&container.liveness_probe),
            Some(("/livez".into(), IntOrString::Int(6333)))
        );
        let pod_security = spec.security_context.as_ref().expect("pod security");
        assert_eq!(pod_security.run_as_user, Some(1000));
        assert_eq!(pod_security.run_as_non_root, Some(true));
        let security = container.security_context.as_ref().expect("security");
        assert_eq!(security.allow_privilege_escalation, Some(false));
        assert_eq!(security.read_only_root_filesystem, Some(true));
        let mounts: Vec<&str> = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(mounts.contains(&"/qdrant/storage"));
    }

    #[test]
    fn volumes_use_the_spec_class_then_the_region_default_then_none() {
        let mut r = example_region("eu");
        r.spec.vector_store.storage.storage_class = Some("eu-zonal-ssd".into());
        let children = vector_store(&r, &owner("eu"));
        assert_eq!(
            claim_class(statefulset(&children)).as_deref(),
            Some("eu-zonal-ssd")
        );

        r.spec.vector_store.storage.storage_class = None;
        r.spec.storage_classes = vec!["eu-default".into(), "eu-other".into()];
        let children = vector_store(&r, &owner("eu"));
        let set = statefulset(&children);
        assert_eq!(claim_class(set).as_deref(), Some("eu-default"));
        let claim = &set
            .spec
            .as_ref()
            .expect("spec")
            .volume_claim_templates
            .as_ref()
            .expect("claims")[0];
        assert_eq!(
            claim
                .spec
                .as_ref()
                .and_then(|s| s.resources.as_ref())
                .and_then(|r| r.requests.as_ref())
                .map(|r| r["storage"].clone()),
            Some(Quantity("50Gi".into()))
        );
        assert_eq!(
            set.spec
                .as_ref()
                .and_then(|s| s.persistent_volume_claim_retention_policy.clone()),
            Some(retain_claims())
        );

        let claim_labels = claim.metadata.labels.as_ref().expect("claim labels");
        assert_eq!(claim_labels["sovereign.ai/region"], "eu");
        assert!(
            claim.metadata.owner_references.is_none(),
            "claims outlive the set"
        );

        r.spec.storage_classes.clear();
        let children = vector_store(&r, &owner("eu"));
        assert_eq!(claim_class(statefulset(&children)), None);
    }

    #[test]
    fn region_placement_is_merged_into_the_pods() {
        let mut r = example_region("eu");
        r.spec.placement = Some(Placement {
            node_selector: BTreeMap::from([("pool".into(), "sovereign".into())]),
            tolerations: vec![Toleration {
                key: Some("sovereign".into()),
                operator: Some("Exists".into()),
                ..Toleration::default()
            }],
        });
        for engine in [VectorStoreEngine::Qdrant, VectorStoreEngine::PgVector] {
            r.spec.vector_store.engine = engine;
            let children = vector_store(&r, &owner("eu"));
            let spec = pod_spec(statefulset(&children));
            assert_eq!(
                spec.node_selector.as_ref().map(|s| s["pool"].as_str()),
                Some("sovereign")
            );
            assert_eq!(spec.tolerations.as_ref().map(Vec::len), Some(1));
        }
    }

    #[test]
    fn pgvector_for_the_india_example() {
        let r = example_region("in");
        let children = vector_store(&r, &owner("in"));
        let names: Vec<String> = children.iter().map(Child::describe).collect();
        assert_eq!(
            names,
            [
                "ConfigMap/sovereign-in/pgvector-init",
                "StatefulSet/sovereign-in/pgvector",
                "Service/sovereign-in/pgvector"
            ]
        );
        let set = statefulset(&children);
        assert_eq!(set.spec.as_ref().and_then(|s| s.replicas), Some(1));
        assert_eq!(claim_class(set).as_deref(), Some("in-regional-ssd"));
        let spec = pod_spec(set);
        let values = required_region_requirements(spec)[0].values.clone();
        assert_eq!(
            values,
            Some(vec!["ap-south-1".into(), "asia-south1".into()])
        );
        assert_eq!(
            spec.security_context.as_ref().and_then(|s| s.run_as_user),
            Some(999)
        );
        let container = &spec.containers[0];
        assert_eq!(container.image, Some(pgvector_image()));
        let env = env_of(container);
        assert!(
            env["PGDATA"]
                .value
                .as_deref()
                .is_some_and(|p| p.starts_with("/var/lib/postgresql/data/"))
        );
        let secret = env["POSTGRES_PASSWORD"]
            .value_from
            .as_ref()
            .and_then(|v| v.secret_key_ref.as_ref())
            .expect("password from a secret");
        assert_eq!(
            (secret.name.as_str(), secret.key.as_str()),
            ("pgvector-credentials", "password")
        );
        assert!(env["POSTGRES_PASSWORD"].value.is_none(), "never inline");
        assert_eq!(
            container.ports.as_ref().map(|p| p[0].container_port),
            Some(5432)
        );
    }

    #[test]
    fn pgvector_runs_one_instance_whatever_the_replicas() {
        let mut r = example_region("in");
        r.spec.vector_store.replicas = 3;
        let children = vector_store(&r, &owner("in"));
        assert_eq!(
            statefulset(&children)
                .spec
                .as_ref()
                .and_then(|s| s.replicas),
            Some(1)
        );
        assert!(
            !children
                .iter()
                .any(|c| matches!(c, Child::PodDisruptionBudget(_)))
        );
    }

    #[test]
    fn no_engine_means_no_children_and_no_endpoint() {
        let mut r = example_region("eu");
        r.spec.vector_store.engine = VectorStoreEngine::None;
        assert!(vector_store(&r, &owner("eu")).is_empty());
        assert_eq!(vector_store_endpoint(&r), None);
    }

    #[test]
    fn endpoints_name_the_region_namespace() {
        assert_eq!(
            vector_store_endpoint(&example_region("eu")).as_deref(),
            Some("http://qdrant.sovereign-eu.svc:6333")
        );
        assert_eq!(
            vector_store_endpoint(&example_region("in")).as_deref(),
            Some("postgresql://pgvector.sovereign-in.svc:5432")
        );
    }

    /// Defects: Qdrant ran without an API key and reported telemetry to qdrant.io.
    #[test]
    fn qdrant_needs_a_key_and_sends_no_telemetry() {
        let mut r = example_region("eu");
        let env = env_of(&pod_spec(statefulset(&vector_store(&r, &owner("eu")))).containers[0]);
        assert_eq!(
            env["QDRANT__TELEMETRY_DISABLED"].value.as_deref(),
            Some("true")
        );
        let key = |env: &BTreeMap<String, EnvVar>| {
            let var = &env["QDRANT__SERVICE__API_KEY"];
            assert!(var.value.is_none(), "never inline");
            var.value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref())
                .map(|s| (s.name.clone(), s.key.clone(), s.optional))
        };
        assert_eq!(
            key(&env),
            Some(("qdrant-api-key".into(), "api-key".into(), Some(false)))
        );
        r.spec.vector_store.api_key_secret = Some(SecretKeyReference {
            name: "vectors".into(),
            key: "key".into(),
        });
        let env = env_of(&pod_spec(statefulset(&vector_store(&r, &owner("eu")))).containers[0]);
        assert_eq!(
            key(&env),
            Some(("vectors".into(), "key".into(), Some(false)))
        );
    }

    /// Defect: Qdrant and pgvector were BestEffort (no CPU / memory requests).
    #[test]
    fn both_stores_request_cpu_and_memory() {
        let requests = |r: &SovereignRegion| {
            pod_spec(statefulset(&vector_store(r, &owner("x")))).containers[0]
                .resources
                .as_ref()
                .and_then(|r| r.requests.clone())
                .expect("requests")
        };
        let eu = requests(&example_region("eu"));
        assert_eq!(
            (eu["cpu"].clone(), eu["memory"].clone()),
            (Quantity("500m".into()), Quantity("1Gi".into()))
        );
        let mut india = example_region("in");
        let defaults = requests(&india);
        assert_eq!(
            (defaults["cpu"].clone(), defaults["memory"].clone()),
            (Quantity("250m".into()), Quantity("512Mi".into()))
        );
        india.spec.vector_store.resources =
            Some(k8s_openapi::api::core::v1::ResourceRequirements {
                requests: Some(BTreeMap::from([("memory".into(), Quantity("8Gi".into()))])),
                ..Default::default()
            });
        let given = requests(&india);
        assert_eq!(given["memory"], Quantity("8Gi".into()), "the spec wins");
        assert_eq!(given["cpu"], Quantity("250m".into()));
    }

    /// Defect: pgvector never ran `CREATE EXTENSION vector`.
    #[test]
    fn pgvector_creates_the_extension_at_first_init() {
        let children = vector_store(&example_region("in"), &owner("in"));
        let init = children
            .iter()
            .find_map(|c| match c {
                Child::ConfigMap(m) if m.metadata.name.as_deref() == Some(PGVECTOR_INIT) => {
                    m.data.clone()
                }
                _ => None,
            })
            .expect("init ConfigMap");
        assert_eq!(
            init[PGVECTOR_INIT_FILE]
                .matches("CREATE EXTENSION IF NOT EXISTS vector;")
                .count(),
            2,
            "in the default database and in template1"
        );
        let spec = pod_spec(statefulset(&children));
        let mount = spec.containers[0]
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.name == "init")
            .expect("init mount");
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            ("/docker-entrypoint-initdb.d", Some(true))
        );
        let volume = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "init")
            .and_then(|v| v.config_map.as_ref())
            .expect("init volume");
        assert_eq!(volume.name, PGVECTOR_INIT);
        assert_eq!(
            spec.containers[0].image.as_deref(),
            Some(&*format!(
                "pgvector/pgvector:{}-pg17",
                crate::api::versions::version("PGVECTOR_VERSION").expect("in versions.env")
            ))
        );
    }

    #[test]
    fn rendering_is_deterministic() {
        for r in [example_region("eu"), example_region("in")] {
            let a = serde_json::to_string(&vector_store(&r, &owner("x"))).expect("json");
            let b = serde_json::to_string(&vector_store(&r, &owner("x"))).expect("json");
            assert_eq!(a, b);
        }
    }
}
