//! `InferenceBackend`: one model served to a region's gateway, either self-hosted on vLLM on the
//! region's GPUs or an external API whose hosting jurisdiction is declared.

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{
    Money, SecretKeyReference, currency_rule, decimal_rule, dns_label_rule, https_rule,
    immutable_rule, jurisdiction_rule,
};

/// A model a region's gateway can route to: self-hosted on vLLM (`vllm`) or an external API
/// (`external`) — exactly one of the two.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "sovereign.ai",
    version = "v1alpha1",
    kind = "InferenceBackend",
    plural = "inferencebackends",
    shortname = "ib",
    category = "sovereign",
    namespaced,
    status = "InferenceBackendStatus",
    printcolumn = r#"{"name":"Region","type":"string","jsonPath":".spec.region"}"#,
    printcolumn = r#"{"name":"Model","type":"string","jsonPath":".spec.modelName"}"#,
    printcolumn = r#"{"name":"Kind","type":"string","jsonPath":".status.kind"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Compliant","type":"string","jsonPath":".status.conditions[?(@.type==\"Compliant\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[x_kube(validation = Rule::new("has(self.vllm) != has(self.external)").message("exactly one of vllm or external must be set"))]
#[serde(rename_all = "camelCase")]
pub struct InferenceBackendSpec {
    /// Name of the SovereignRegion this backend serves; the object must live in that region's
    /// namespace. Immutable.
    #[x_kube(validation = dns_label_rule("region"))]
    #[x_kube(validation = immutable_rule("region"))]
    #[schemars(length(max = 63))]
    pub region: String,

    /// The model name clients ask the gateway for (the OpenAI `model` field).
    #[x_kube(validation = Rule::new("self.size() >= 1").message("modelName must not be empty"))]
    #[schemars(length(max = 253))]
    pub model_name: String,

    /// Self-hosted inference with vLLM on the region's GPU nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vllm: Option<VllmSpec>,

    /// An external inference API, hosted in a declared jurisdiction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSpec>,

    /// Token prices. Required to cost an external API; for vLLM it overrides the default
    /// cost, which is GPU-hours × `vllm.gpuHourlyCost`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pricing: Option<TokenPricing>,

    /// Data classes (values of `sovereign.ai/data-class`) this backend may process. Residency
    /// policies check these against where the backend is hosted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub data_classes: Vec<String>,

    /// How the gateway balances and falls back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routing: Option<RoutingSpec>,
}

/// Self-hosted vLLM serving.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("!has(self.tensorParallelSize) || self.tensorParallelSize <= self.gpus.count").message("vllm.tensorParallelSize must not exceed vllm.gpus.count"))]
#[serde(rename_all = "camelCase")]
pub struct VllmSpec {
    /// The model to load: a Hugging Face id (e.g. meta-llama/Meta-Llama-3-70B-Instruct) or a
    /// path inside the model cache volume.
    #[x_kube(validation = Rule::new("self.size() >= 1").message("vllm.model must not be empty"))]
    pub model: String,
    /// Container image of the vLLM OpenAI-compatible server. Defaults to the CUDA image of the
    /// vLLM release whose CPU build the operator's tests run (the flags rendered are that
    /// release's).
    #[serde(default = "default_vllm_image")]
    pub image: String,
    /// GPUs per replica.
    pub gpus: GpuSpec,
    /// Replica range for autoscaling.
    #[serde(default)]
    pub replicas: ReplicaRange,
    /// Tensor parallel degree (`--tensor-parallel-size`); at most `gpus.count`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("vllm.tensorParallelSize must be at least 1"))]
    pub tensor_parallel_size: Option<i32>,
    /// Quantization method (`--quantization`), e.g. awq, gptq, fp8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantization: Option<String>,
    /// Maximum context length (`--max-model-len`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("vllm.maxModelLen must be at least 1"))]
    pub max_model_len: Option<i64>,
    /// Extra command-line arguments passed to the vLLM server as given. `--disable-log-requests`
    /// is refused: vLLM 0.32 removed it and exits on it ("unrecognized arguments"); request
    /// logging is off unless `--enable-log-requests` is given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 128), inner(length(max = 4096)))]
    #[x_kube(validation = Rule::new("!self.exists(a, a == '--disable-log-requests' || a.startsWith('--disable-log-requests='))").message("vllm.extraArgs: --disable-log-requests was removed in vLLM 0.32 and makes the server exit; request logging is off by default (--enable-log-requests turns it on)"))]
    pub extra_args: Vec<String>,
    /// Where the weights come from. Without it `model` is a Hugging Face id downloaded from
    /// the region's `huggingFaceMirror` (never from the public hub; a region without a mirror
    /// refuses such a backend).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_source: Option<ModelSource>,
    /// CPU and memory of each replica (GPUs come from `gpus`). Without it the operator
    /// requests 2 CPUs and 16Gi of memory per GPU, so the server is never BestEffort; weights
    /// pass through host memory while loading.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Size limit of the model cache (an `emptyDir` on the node's disk holding downloaded
    /// weights and compile caches): a pod that writes more is evicted rather than filling the
    /// node. Size it above the weights when they are downloaded (huggingFace / objectStore).
    #[serde(default = "default_cache_size")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("vllm.cacheSize must be a positive quantity such as 200Gi"))]
    #[schemars(length(max = 32))]
    pub cache_size: String,
    /// Size limit of `/dev/shm` (a memory-backed `emptyDir`, counted against the container's
    /// memory): PyTorch and NCCL exchange tensors through it with tensor parallelism.
    #[serde(default = "default_shm_size")]
    #[x_kube(validation = Rule::new("isQuantity(self) && quantity(self).isGreaterThan(quantity('0'))").message("vllm.shmSize must be a positive quantity such as 8Gi"))]
    #[schemars(length(max = 32))]
    pub shm_size: String,
    /// Cost of one GPU for one hour; self-hosted spend is GPU-hours × this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu_hourly_cost: Option<Money>,
}

impl Default for VllmSpec {
    fn default() -> Self {
        Self {
            model: String::new(),
            image: default_vllm_image(),
            gpus: GpuSpec::default(),
            replicas: ReplicaRange::default(),
            tensor_parallel_size: None,
            quantization: None,
            max_model_len: None,
            extra_args: Vec::new(),
            model_source: None,
            resources: None,
            cache_size: default_cache_size(),
            shm_size: default_shm_size(),
            gpu_hourly_cost: None,
        }
    }
}

/// The GPU image of the vLLM release the e2e suite runs on CPU (`versions.env`).
fn default_vllm_image() -> String {
    super::versions::vllm_image()
}

fn default_cache_size() -> String {
    "200Gi".to_owned()
}

fn default_shm_size() -> String {
    "8Gi".to_owned()
}

/// GPUs per vLLM replica and which nodes provide them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GpuSpec {
    /// GPUs per replica; at least 1.
    #[x_kube(validation = Rule::new("self >= 1").message("vllm.gpus.count must be at least 1"))]
    pub count: i32,
    /// Extended resource name of the GPU.
    #[serde(default = "default_gpu_resource")]
    pub resource_name: String,
    /// Required value of the node label `typeLabel`, e.g. NVIDIA-H100-80GB-HBM3 (what NVIDIA GPU feature discovery writes); any GPU node when unset.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub gpu_type: Option<String>,
    /// Node label that carries the GPU type.
    #[serde(default = "default_gpu_type_label")]
    pub type_label: String,
}

impl Default for GpuSpec {
    fn default() -> Self {
        Self {
            count: 1,
            resource_name: default_gpu_resource(),
            gpu_type: None,
            type_label: default_gpu_type_label(),
        }
    }
}

fn default_gpu_resource() -> String {
    "nvidia.com/gpu".to_owned()
}

fn default_gpu_type_label() -> String {
    "nvidia.com/gpu.product".to_owned()
}

/// Minimum and maximum number of replicas.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("self.min <= self.max").message("replicas.min must not exceed replicas.max"))]
#[serde(rename_all = "camelCase")]
pub struct ReplicaRange {
    /// Fewest replicas (0 scales the model to zero).
    #[serde(default = "one")]
    #[x_kube(validation = Rule::new("self >= 0").message("replicas.min must not be negative"))]
    pub min: i32,
    /// Most replicas.
    #[serde(default = "one")]
    #[x_kube(validation = Rule::new("self >= 1").message("replicas.max must be at least 1"))]
    pub max: i32,
}

impl Default for ReplicaRange {
    fn default() -> Self {
        Self { min: 1, max: 1 }
    }
}

fn one() -> i32 {
    1
}

/// Where vLLM loads weights from — exactly one source.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("(has(self.pvc) ? 1 : 0) + (has(self.objectStore) ? 1 : 0) + (has(self.huggingFace) ? 1 : 0) == 1").message("modelSource must set exactly one of pvc, objectStore or huggingFace"))]
#[serde(rename_all = "camelCase")]
pub struct ModelSource {
    /// A PersistentVolumeClaim in the region namespace that already holds the weights.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc: Option<PvcSource>,
    /// An in-region object store URI (s3://…, gs://…) the weights are copied from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object_store: Option<ObjectStoreSource>,
    /// A Hugging Face repository pinned to a revision, downloaded from the region's
    /// `huggingFaceMirror` (never the public hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hugging_face: Option<HuggingFaceSource>,
}

/// Weights on a PersistentVolumeClaim.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PvcSource {
    /// Name of the claim.
    pub claim_name: String,
    /// Directory inside the volume that holds the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// Weights in an in-region object store.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreSource {
    /// URI of the model directory, e.g. s3://models-eu/llama-3-70b.
    #[x_kube(validation = Rule::new("self.matches('^(s3|gs|az|https)://.+')").message("modelSource.objectStore.uri must start with s3://, gs://, az:// or https://"))]
    #[schemars(length(max = 2048))]
    pub uri: String,
    /// Secret with the object store credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// Weights from Hugging Face.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HuggingFaceSource {
    /// Repository id, e.g. sarvamai/sarvam-2b-v0.5.
    pub repo: String,
    /// Git revision (commit, tag or branch) to pin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Secret key holding the Hugging Face token (HF_TOKEN) for gated models.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret: Option<SecretKeyReference>,
}

/// Who runs an external inference API; selects LiteLLM's provider adapter.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Provider {
    /// Mistral AI La Plateforme.
    Mistral,
    /// Azure OpenAI Service (deployment per region).
    AzureOpenAI,
    /// OVHcloud AI Endpoints.
    #[serde(rename = "OVH")]
    Ovh,
    /// Sarvam AI.
    Sarvam,
    /// Amazon Bedrock.
    Bedrock,
    /// Google Vertex AI.
    VertexAI,
    /// Any OpenAI-compatible endpoint.
    #[default]
    OpenAICompatible,
}

/// An external inference API.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSpec {
    /// The provider (Mistral, AzureOpenAI, OVH, Sarvam, Bedrock, VertexAI, OpenAICompatible).
    pub provider: Provider,
    /// Base URL of the API; https only.
    #[x_kube(validation = https_rule("external.endpoint"))]
    #[schemars(length(max = 2048))]
    pub endpoint: String,
    /// Jurisdiction where the provider processes the data (EU or an ISO 3166-1 alpha-2 code),
    /// as stated by its contract / data residency commitment.
    #[x_kube(validation = jurisdiction_rule("external.hostingJurisdiction"))]
    #[schemars(length(max = 16))]
    pub hosting_jurisdiction: String,
    /// Provider region or data centre, e.g. francecentral or fr-par.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hosting_location: Option<String>,
    /// The provider's model (or Azure deployment) name.
    pub upstream_model: String,
    /// API version, for providers that need one (AzureOpenAI).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Secret key holding the API key; the gateway reads it from its environment, never from
    /// its config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret: Option<SecretKeyReference>,
}

/// Token prices of a backend, per million tokens.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenPricing {
    /// ISO 4217 currency of the prices.
    #[x_kube(validation = currency_rule("pricing.currency"))]
    #[schemars(length(max = 16))]
    pub currency: String,
    /// Price of one million input (prompt) tokens, a non-negative decimal.
    #[serde(rename = "inputPer1MTokens")]
    #[x_kube(validation = decimal_rule("pricing.inputPer1MTokens"))]
    #[schemars(length(max = 32))]
    pub input_per_1m_tokens: String,
    /// Price of one million output (completion) tokens, a non-negative decimal.
    #[serde(rename = "outputPer1MTokens")]
    #[x_kube(validation = decimal_rule("pricing.outputPer1MTokens"))]
    #[schemars(length(max = 32))]
    pub output_per_1m_tokens: String,
}

/// Load balancing and fallbacks at the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RoutingSpec {
    /// Relative share of traffic among backends with the same `modelName`.
    #[serde(default = "one")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("routing.weight must be between 1 and 1000"))]
    pub weight: i32,
    /// Model names to try, in order, when this one fails. Each must be served by a backend of
    /// a region in the same jurisdiction; others are dropped and reported.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub fallbacks: Vec<String>,
}

impl Default for RoutingSpec {
    fn default() -> Self {
        Self {
            weight: 1,
            fallbacks: Vec::new(),
        }
    }
}

/// Self-hosted or external, for printing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BackendKind {
    /// Served by vLLM in the region.
    #[serde(rename = "vLLM")]
    Vllm,
    /// An external API.
    External,
}

impl InferenceBackend {
    /// Whether the gateway may route to this backend: `Ready` and `Compliant`. The gateway
    /// config and the budget downgrade targets use only these.
    pub fn may_serve(&self) -> bool {
        let conditions = self
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        super::conditions::is_true(conditions, super::conditions::READY)
            && super::conditions::is_true(conditions, super::conditions::COMPLIANT)
    }
}

/// Observed state of an InferenceBackend.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct InferenceBackendStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready and Compliant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// vLLM or External.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<BackendKind>,
    /// URL the gateway calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Desired and ready vLLM replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicaStatus>,
    /// GPUs held by the backend's ready replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpus: Option<i32>,
    /// Current cost per hour of the backend's GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hourly_cost: Option<Money>,
}

/// Desired and ready replicas.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaStatus {
    /// Replicas wanted.
    pub desired: i32,
    /// Replicas ready.
    pub ready: i32,
}

impl InferenceBackendSpec {
    /// Self-hosted or external.
    pub fn kind(&self) -> BackendKind {
        if self.vllm.is_some() {
            BackendKind::Vllm
        } else {
            BackendKind::External
        }
    }
}
