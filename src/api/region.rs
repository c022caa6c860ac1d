//! `SovereignRegion`: one jurisdiction's stack — where its nodes are, where its namespace is, and
//! how its gateway, vector store and observability are set up.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    SecretKeyReference, dns_label_rule, free_form_object, http_url_rule, https_rule,
    immutable_rule, jurisdiction_rule,
};

/// A jurisdiction's sovereign AI stack: the node locations inside its borders and the regional
/// gateway, vector store and observability the operator runs in its namespace.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "sovereign.ai",
    version = "v1alpha1",
    kind = "SovereignRegion",
    plural = "sovereignregions",
    shortname = "sreg",
    category = "sovereign",
    status = "SovereignRegionStatus",
    printcolumn = r#"{"name":"Jurisdiction","type":"string","jsonPath":".spec.jurisdiction"}"#,
    printcolumn = r#"{"name":"Locations","type":"string","jsonPath":".spec.locations"}"#,
    printcolumn = r#"{"name":"Backends","type":"string","jsonPath":".status.backends.summary"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Compliant","type":"string","jsonPath":".status.conditions[?(@.type==\"Compliant\")].status"}"#,
    printcolumn = r#"{"name":"Paths","type":"string","jsonPath":".status.evidence.summary"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new(
    "has(self.__namespace__) == has(oldSelf.__namespace__) && (!has(self.__namespace__) || self.__namespace__ == oldSelf.__namespace__)"
).message("namespace is immutable; delete and re-create the region to move it"))]
#[x_kube(validation = Rule::new(
    "!has(self.huggingFaceMirror) || !isURL(self.huggingFaceMirror) || (has(self.inRegionHosts) && self.inRegionHosts.exists(h, h == url(self.huggingFaceMirror).getHostname() || (h.startsWith('*.') && url(self.huggingFaceMirror).getHostname().endsWith(h.substring(1)))))"
).message("huggingFaceMirror must be served from inside the region: its host must match one of inRegionHosts"))]
#[serde(rename_all = "camelCase")]
pub struct SovereignRegionSpec {
    /// Jurisdiction whose law governs the data of this region: `EU` or an ISO 3166-1 alpha-2
    /// country code (IN, SA, AE, ID, US, …). Immutable.
    #[x_kube(validation = jurisdiction_rule("jurisdiction"))]
    #[x_kube(validation = immutable_rule("jurisdiction"))]
    #[schemars(length(max = 16))]
    pub jurisdiction: String,

    /// Compliance frameworks that apply (GDPR, EU-AI-Act, DPDP, RBI, …). Informational: they
    /// label reports and status, they change no behaviour.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub frameworks: Vec<String>,

    /// Values of the node label `topology.kubernetes.io/region` that lie inside this
    /// jurisdiction. Every pod of the region is pinned to these with a required node affinity.
    /// At least one; no duplicates.
    #[x_kube(validation = Rule::new("self.size() >= 1").message("locations must list at least one topology.kubernetes.io/region value"))]
    #[x_kube(validation = Rule::new("self.all(l, self.exists_one(m, m == l))").message("locations must not contain duplicates"))]
    #[schemars(length(max = 32), inner(length(max = 63)))]
    pub locations: Vec<String>,

    /// Namespace that holds the region's stack and its InferenceBackends. Defaults to
    /// `sovereign-<region name>`. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = dns_label_rule("namespace"))]
    #[schemars(length(max = 63))]
    pub namespace: Option<String>,

    /// Extra scheduling constraints merged into every pod of the region. The affinity to the
    /// region's `locations` is always added and cannot be overridden here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<Placement>,

    /// Storage classes whose volumes are provisioned inside the region; the first is the default
    /// for the region's volumes. Residency policies refuse governed volumes on any other class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub storage_classes: Vec<String>,

    /// Host names served from inside this region (exact names, or `*.suffix` wildcards). The
    /// observability endpoints must be among them; residency audits check against this list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 253)))]
    pub in_region_hosts: Vec<String>,

    /// The region's LiteLLM gateway.
    #[serde(default)]
    pub gateway: GatewaySpec,

    /// The region's vector store.
    #[serde(default)]
    pub vector_store: VectorStoreSpec,

    /// Where the region's traces and LLM observations go; must be in-region hosts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observability: Option<ObservabilitySpec>,

    /// Egress the region namespace's default-deny NetworkPolicy allows besides DNS and traffic
    /// inside the namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<EgressSpec>,

    /// Base URL of an in-region mirror of the Hugging Face hub (the `HF_ENDPOINT` of the vLLM
    /// pods), e.g. https://hf-mirror.eu.example.com. vLLM backends whose weights come from
    /// Hugging Face (a `huggingFace` model source, or none) download from here; the public hub
    /// is never used, so without a mirror such backends are refused (use a `pvc` or
    /// `objectStore` source instead). The mirror must be an in-region host whose addresses
    /// `egress.cidrs` opens; its host must match one of `inRegionHosts`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = http_url_rule("huggingFaceMirror"))]
    #[schemars(length(max = 2048))]
    pub hugging_face_mirror: Option<String>,

    /// Who may scrape the region's metrics, and whether the operator renders Prometheus
    /// Operator scrape objects.
    #[serde(default)]
    pub monitoring: MonitoringSpec,
}

/// Metrics scraping of the region's gateway and vLLM servers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitoringSpec {
    /// Namespaces whose pods may connect to the vLLM servers' port 8000 (where `/metrics`
    /// is served, next to the API: NetworkPolicy cannot tell paths apart) — the operator's own
    /// namespace, whose usage collector scrapes the token counters, and Prometheus'. The
    /// gateway's port is open to every namespace anyway (it is the region's API; `/metrics`
    /// there needs the master key). Defaults to `sovereign-system` (the namespace the Helm chart
    /// is documented to install into) and `monitoring` (kube-prometheus-stack's usual one);
    /// list yours if the operator or Prometheus run elsewhere, or the usage collector's vLLM
    /// scrapes fail and tokens served around the gateway are never attributed.
    #[serde(default = "default_scrape_namespaces")]
    #[x_kube(validation = Rule::new("self.all(n, n.matches('^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$'))").message("monitoring.scrapeNamespaces entries must be namespace names (DNS labels)"))]
    #[schemars(length(max = 16), inner(length(max = 63)))]
    pub scrape_namespaces: Vec<String>,
    /// Render a `monitoring.coreos.com/v1` PodMonitor per vLLM backend (port `http`,
    /// `/metrics`) so that Prometheus — and through a custom-metrics adapter the autoscaler on
    /// `vllm:num_requests_waiting` — gets vLLM's metrics. Needs the Prometheus Operator CRDs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_monitor: Option<PodMonitorSpec>,
}

impl Default for MonitoringSpec {
    fn default() -> Self {
        Self {
            scrape_namespaces: default_scrape_namespaces(),
            pod_monitor: None,
        }
    }
}

fn default_scrape_namespaces() -> Vec<String> {
    vec!["sovereign-system".to_owned(), "monitoring".to_owned()]
}

/// The PodMonitors the operator renders for the region's vLLM backends.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodMonitorSpec {
    /// Labels of the PodMonitors, e.g. `release: kube-prometheus-stack`, which Prometheus'
    /// `podMonitorSelector` usually requires.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Scrape interval, e.g. 30s; Prometheus' default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
}

/// Extra scheduling constraints for every pod of the region.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Node labels every pod of the region must match, e.g. a node pool label. The key
    /// `topology.kubernetes.io/region` is reserved: the operator sets it from `locations`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[x_kube(validation = Rule::new("!('topology.kubernetes.io/region' in self)").message("placement.nodeSelector may not set topology.kubernetes.io/region; it comes from locations"))]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations added to every pod of the region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

/// The region's LiteLLM gateway (an OpenAI-compatible proxy that routes only to this region's
/// compliant backends).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// Container image of the LiteLLM proxy. Defaults to the `non_root` image of the LiteLLM
    /// release the operator's tests run; the rendered config relies on that release's
    /// behaviour (client-side credentials refused, `/metrics` behind the master key).
    #[serde(default = "default_gateway_image")]
    pub image: String,
    /// Number of gateway replicas (a PodDisruptionBudget keeps one up when there are several).
    #[serde(default = "default_gateway_replicas")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 100").message("gateway.replicas must be between 1 and 100"))]
    pub replicas: i32,
    /// CPU and memory for each gateway container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Secret key holding the gateway's master key (LITELLM_MASTER_KEY). Without it the
    /// gateway accepts requests without a key: only for demos.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key_secret: Option<SecretKeyReference>,
    /// Secret key holding a PostgreSQL URL (DATABASE_URL) for virtual keys, teams and spend
    /// logs; the database must be in-region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_secret: Option<SecretKeyReference>,
    /// Extra LiteLLM configuration merged into the generated config.yaml (`litellm_settings`,
    /// `router_settings`, `general_settings`). The model list, the region tags and the
    /// callbacks are the operator's and cannot be overridden.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "free_form_object")]
    pub extra_config: Option<serde_json::Value>,
    /// `/metrics` URLs of gateways that do not run as this region's pods (e.g. a gateway run
    /// by another team inside the region). When set, the usage collector scrapes these
    /// instead of the gateway pods it finds through the gateway Service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(u, u.startsWith('http://') || u.startsWith('https://'))").message("gateway.metricsUrls entries must be absolute http:// or https:// URLs"))]
    #[schemars(length(max = 16))]
    pub metrics_urls: Vec<String>,
}

impl Default for GatewaySpec {
    fn default() -> Self {
        Self {
            image: default_gateway_image(),
            replicas: default_gateway_replicas(),
            resources: None,
            master_key_secret: None,
            database_secret: None,
            extra_config: None,
            metrics_urls: Vec::new(),
        }
    }
}

/// The LiteLLM version the e2e suite runs (`versions.env`); see [`super::versions::gateway_image`].
fn default_gateway_image() -> String {
    super::versions::gateway_image()
}

fn default_gateway_replicas() -> i32 {
    2
}

/// Which vector database the region runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum VectorStoreEngine {
    /// Qdrant as a StatefulSet spread across the region's zones.
    #[default]
    Qdrant,
    /// PostgreSQL with the pgvector extension.
    PgVector,
    /// No vector store.
    None,
}

/// The region's vector store.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct VectorStoreSpec {
    /// Qdrant, PgVector or None.
    #[serde(default)]
    pub engine: VectorStoreEngine,
    /// Container image; defaults to the engine's pinned image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Number of replicas, spread across the zones of the region's locations.
    #[serde(default = "one")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 15").message("vectorStore.replicas must be between 1 and 15"))]
    pub replicas: i32,
    /// Persistent storage of each replica.
    #[serde(default)]
    pub storage: StorageSpec,
    /// CPU and memory of each replica. Without it the operator requests a modest default
    /// (Qdrant 500m / 1Gi, pgvector 250m / 512Mi) so the store is never BestEffort, the first
    /// pod evicted under node pressure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Qdrant only: the Secret key holding its API key (`QDRANT__SERVICE__API_KEY`; clients
    /// send it as the `api-key` header). Defaults to key `api-key` of Secret `qdrant-api-key`,
    /// which the platform team creates: the operator never invents credentials, and Qdrant
    /// never runs without a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret: Option<SecretKeyReference>,
}

impl Default for VectorStoreSpec {
    fn default() -> Self {
        Self {
            engine: VectorStoreEngine::default(),
            image: None,
            replicas: 1,
            storage: StorageSpec::default(),
            resources: None,
            api_key_secret: None,
        }
    }
}

fn one() -> i32 {
    1
}

/// Size and class of a persistent volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Volume size as a Kubernetes quantity, e.g. 50Gi.
    #[serde(default = "default_storage_size")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("storage.size must be a positive quantity such as 50Gi"))]
    #[schemars(length(max = 32))]
    pub size: String,
    /// Storage class; defaults to the first of the region's `storageClasses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self {
            size: default_storage_size(),
            storage_class: None,
        }
    }
}

fn default_storage_size() -> String {
    "10Gi".to_owned()
}

/// Log verbosity of the region's components.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum LogLevel {
    /// Everything, for troubleshooting.
    Debug,
    /// Normal operation.
    #[default]
    Info,
    /// Warnings and errors only.
    Warn,
    /// Errors only.
    Error,
}

/// Regional observability: traces and LLM observations never leave the region.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservabilitySpec {
    /// OTLP endpoint (gRPC or HTTP) of the in-region trace backend, e.g.
    /// https://otel.eu.example.com:4317.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = https_rule("observability.otlpEndpoint"))]
    #[schemars(length(max = 2048))]
    pub otlp_endpoint: Option<String>,
    /// Base URL of the in-region Langfuse the gateway sends LLM observations to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = https_rule("observability.langfuseHost"))]
    #[schemars(length(max = 2048))]
    pub langfuse_host: Option<String>,
    /// Secret holding the Langfuse keys (`LANGFUSE_PUBLIC_KEY` / `LANGFUSE_SECRET_KEY` keys).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub langfuse_secret: Option<String>,
    /// Log level of the region's components.
    #[serde(default)]
    pub log_level: LogLevel,
}

/// Egress allowed out of the region namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressSpec {
    /// CIDR blocks the region's pods may connect to (e.g. in-region API endpoints).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cidrs: Vec<String>,
    /// Host names the region's pods need to reach (the external backends' API hosts). A
    /// Kubernetes NetworkPolicy matches only addresses, never names: these reach the gateway
    /// through `proxy` (which must allow exactly these hosts), or list their address ranges in
    /// `cidrs`. They also document intent for audits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// An egress proxy (e.g. Squid or Envoy with a host allow-list) in the cluster through which
    /// the gateway reaches `hosts`: the gateway gets `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY`,
    /// and a NetworkPolicy lets the gateway pods (only them) connect to the proxy pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<EgressProxy>,
}

/// An in-cluster egress proxy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EgressProxy {
    /// Proxy URL the gateway uses, e.g. http://egress-proxy.egress.svc:3128.
    #[x_kube(validation = http_url_rule("egress.proxy.url"))]
    #[schemars(length(max = 2048))]
    pub url: String,
    /// Namespace of the proxy pods.
    #[x_kube(validation = dns_label_rule("egress.proxy.namespace"))]
    #[schemars(length(max = 63))]
    pub namespace: String,
    /// Labels of the proxy pods (all must match). Empty: every pod of the namespace.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
    /// TCP port the proxy pods listen on (the target port, which NetworkPolicy sees, not the
    /// Service port).
    #[x_kube(validation = Rule::new("self >= 1 && self <= 65535").message("egress.proxy.port must be between 1 and 65535"))]
    pub port: i32,
}

/// Observed state of a SovereignRegion.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SovereignRegionStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready, GatewayReady, VectorStoreReady, ObservabilityReady and Compliant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// How many of the region's InferenceBackends are ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<BackendCount>,
    /// In-cluster URL of the region's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway_endpoint: Option<String>,
    /// In-cluster URL of the region's vector store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vector_store_endpoint: Option<String>,
    /// The namespace that holds the region's stack.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The region's data paths in short (`sovereign-operator evidence` lists them): how many,
    /// how many are guarded, in violation, or go somewhere unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidenceSummary>,
}

/// The counts of a region's data paths, as `sovereign-operator evidence` derives them from what
/// the region controller renders (backup and replication sinks are listed by `evidence` only).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EvidenceSummary {
    /// Data paths of the region.
    pub paths: i32,
    /// Paths held inside the jurisdiction by at least one guard (status `ok`).
    pub guarded: i32,
    /// Paths that leave the jurisdiction or break a residency rule.
    pub violations: i32,
    /// Paths whose destination cannot be determined.
    pub unknown: i32,
    /// `guarded/paths ok, N violations, N unknown`, for `kubectl get`.
    pub summary: String,
}

/// Ready and total InferenceBackends of a region.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendCount {
    /// Backends that are Ready and Compliant (the ones the gateway routes to).
    pub ready: i32,
    /// All backends of the region.
    pub total: i32,
    /// `ready/total`, for `kubectl get`.
    pub summary: String,
}

impl SovereignRegion {
    /// The namespace of the region's stack: `spec.namespace` or `sovereign-<name>`.
    pub fn stack_namespace(&self) -> String {
        match &self.spec.namespace {
            Some(ns) => ns.clone(),
            None => format!(
                "sovereign-{}",
                self.metadata.name.as_deref().unwrap_or_default()
            ),
        }
    }
}
