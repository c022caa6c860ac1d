//! `ResidencyPolicy`: which data classes must stay where, compiled into admission rules, an
//! audit of what exists and an offline check.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::yes;

/// A data residency rule set: objects carrying one of `dataClasses` stay inside their borders.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "sovereign.ai",
    version = "v1alpha1",
    kind = "ResidencyPolicy",
    plural = "residencypolicies",
    shortname = "rpol",
    category = "sovereign",
    status = "ResidencyPolicyStatus",
    printcolumn = r#"{"name":"Mode","type":"string","jsonPath":".spec.mode"}"#,
    printcolumn = r#"{"name":"Classes","type":"string","jsonPath":".spec.dataClasses"}"#,
    printcolumn = r#"{"name":"Violations","type":"integer","jsonPath":".status.violationCount"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ResidencyPolicySpec {
    /// Enforce: the API server denies violating objects. Audit: it only warns and the operator
    /// reports violations in status. Defaults to Enforce: residency is a legal duty, so a
    /// policy without a mode protects rather than observes.
    #[serde(default)]
    pub mode: PolicyMode,

    /// Data classes (values of the `sovereign.ai/data-class` label) this policy governs.
    #[x_kube(validation = Rule::new("self.size() >= 1").message("dataClasses must list at least one data class"))]
    #[schemars(length(max = 32))]
    pub data_classes: Vec<String>,

    /// Where governed data may be.
    #[serde(default)]
    pub residency: ResidencyScope,

    /// Which checks apply; each is on unless switched off.
    #[serde(default)]
    pub rules: PolicyRules,

    /// Replication or backup sinks of other CRDs, and how to find where they send data.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub sinks: Vec<SinkSpec>,

    /// Namespaces the policy never checks (e.g. kube-system).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub exempt_namespaces: Vec<String>,
}

/// Whether violations are denied or reported.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum PolicyMode {
    /// Denied at admission by the API server.
    #[default]
    Enforce,
    /// Allowed with a warning and an audit annotation; reported in status.
    Audit,
}

/// How the allowed place of governed data is determined.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ResidencyKind {
    /// Data stays in the region its `sovereign.ai/region` label (or its namespace's) names.
    #[default]
    HomeRegion,
    /// Data may be in any region whose jurisdiction is in `allowedJurisdictions`.
    AllowedJurisdictions,
}

/// Where governed data may be.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("self.kind != 'AllowedJurisdictions' || self.allowedJurisdictions.size() >= 1").message("residency.allowedJurisdictions must list at least one jurisdiction when residency.kind is AllowedJurisdictions"))]
#[serde(rename_all = "camelCase")]
pub struct ResidencyScope {
    /// HomeRegion or AllowedJurisdictions.
    #[serde(default)]
    pub kind: ResidencyKind,
    /// Jurisdictions (EU or ISO 3166-1 alpha-2) allowed when `kind` is AllowedJurisdictions.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self.all(j, j.matches('^(EU|[A-Z]{2})$'))").message("residency.allowedJurisdictions entries must be EU or ISO 3166-1 alpha-2 codes"))]
    #[schemars(length(max = 64), inner(length(max = 16)))]
    pub allowed_jurisdictions: Vec<String>,
}

/// Which backends may process governed data.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum InferenceHosting {
    /// Self-hosted backends in the region, and external APIs hosted in an allowed
    /// jurisdiction.
    #[default]
    InJurisdiction,
    /// Only self-hosted (vLLM) backends in the region — the EU AI Act high-risk default.
    SelfHostedOnly,
    /// Do not check inference hosting.
    Off,
}

/// The checks of a policy; each is on unless switched off.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRules {
    /// Objects carrying governed data sit in a namespace of their home region (or, with
    /// AllowedJurisdictions, of a region whose jurisdiction is allowed), and have a home
    /// region at all: a `sovereign.ai/region` label on the object or its namespace.
    #[serde(default = "yes")]
    pub data_location: bool,
    /// Pods and pod templates carrying governed data need a required node affinity or
    /// nodeSelector that allows only the region's locations.
    #[serde(default = "yes")]
    pub pin_workloads: bool,
    /// Governed PersistentVolumeClaims use one of the region's storage classes.
    #[serde(default = "yes")]
    pub pin_storage: bool,
    /// Backup and replication sinks (Velero, CloudNativePG, VolumeReplication, declared
    /// `sinks`) of governed data point inside.
    #[serde(default = "yes")]
    pub forbid_cross_border_replication: bool,
    /// Which backends may process governed data classes.
    #[serde(default)]
    pub inference_hosting: InferenceHosting,
    /// The region's trace and Langfuse endpoints are in-region hosts.
    #[serde(default = "yes")]
    pub observability_in_region: bool,
}

impl Default for PolicyRules {
    fn default() -> Self {
        Self {
            data_location: true,
            pin_workloads: true,
            pin_storage: true,
            forbid_cross_border_replication: true,
            inference_hosting: InferenceHosting::default(),
            observability_in_region: true,
        }
    }
}

/// A user-declared replication or backup sink.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SinkSpec {
    /// API group of the sink kinds, e.g. storage.example.com.
    pub group: String,
    /// Kinds in that group that are sinks.
    #[x_kube(validation = Rule::new("self.size() >= 1").message("sinks[].kinds must list at least one kind"))]
    #[schemars(length(max = 16))]
    pub kinds: Vec<String>,
    /// CEL expression over `object` that yields the destination location (a
    /// `topology.kubernetes.io/region` value), e.g. `object.spec.target.region`.
    #[x_kube(validation = Rule::new("self.size() >= 1").message("sinks[].locationExpression must not be empty"))]
    #[schemars(length(max = 1024))]
    pub location_expression: String,
}

/// One object that breaks a rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Violation {
    /// Kind of the object.
    pub kind: String,
    /// Namespace of the object (empty when cluster-scoped).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// Name of the object.
    pub name: String,
    /// Rule broken: dataLocation, pinWorkloads, pinStorage, forbidCrossBorderReplication,
    /// inferenceHosting or observabilityInRegion.
    pub rule: String,
    /// What is wrong and what to change.
    pub message: String,
}

/// Observed state of a ResidencyPolicy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResidencyPolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready and Enforcing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Number of objects that break the policy, as of the last audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violation_count: Option<i64>,
    /// The first violations found by the last audit (at most 50).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub violations: Vec<Violation>,
    /// Names of the ValidatingAdmissionPolicies generated from this policy.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admission_policies: Vec<String>,
    /// When the last audit finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_audit_time: Option<Time>,
}
