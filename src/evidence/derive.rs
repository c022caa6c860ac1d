//! From [`Inputs`] to [`Evidence`]: one function per flow, each reading what the renderers
//! produced (the gateway's LiteLLM config, the collector's config, the Deployments' env and
//! affinity, the NetworkPolicies) and judging it with the residency rules' own functions
//! (`hosting_violations`, `out_of_region_endpoints`, the sinks' `destinations`,
//! `unpinned_reason`, `storage_reason`), so that the evidence cannot say something the
//! enforcement does not do.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{
    Admission, Evidence, EvidenceError, Flow, Guard, Inputs, Path, RegionEvidence, Status, Summary,
};
use crate::api::backend::InferenceBackend;
use crate::api::labels::{DATA_CLASS, REGION};
use crate::api::policy::{PolicyRules, ResidencyKind, ResidencyPolicy};
use crate::api::region::{SovereignRegion, VectorStoreEngine};
use crate::render::{gateway, gateway_config, network, observability, vectorstore};
use crate::residency::admission::object_name;
use crate::residency::engine::normalize_class;
use crate::residency::jurisdiction::is_within;
use crate::residency::kinds::{self, Role};
use crate::residency::rules::cross_border_replication::{
    Destination, Referenced, destinations, velero_includes,
};
use crate::residency::rules::inference_hosting::hosting_violations;
use crate::residency::rules::observability_in_region::{host_matches, out_of_region_endpoints};
use crate::residency::rules::pin_storage::storage_reason;
use crate::residency::rules::pin_workloads::unpinned_reason;
use crate::residency::s3::endpoint_host;
use crate::residency::sinks::{SinkProgram, functions};
use crate::residency::{Finding, Inventory, Rule};

/// Jurisdiction of in-cluster readers (the operator, Prometheus) whose nodes the operator does
/// not place: the evidence cannot say where they run.
pub const CLUSTER: &str = "cluster";
/// Jurisdiction of a destination that cannot be placed.
pub const UNKNOWN: &str = "unknown";

/// Data that is none of the residency classes.
const OPERATIONAL: &str = "operational";
const USAGE: &str = "usage";
const BUDGET_TOTALS: &str = "budget-totals";
const MODEL_WEIGHTS: &str = "model-weights";

/// A path being built, with what the audit's findings are matched against.
struct Draft {
    path: Path,
    /// (kind, namespace, name, rule) of the objects whose findings concern this path.
    subjects: Vec<(String, String, String, Rule)>,
    /// For findings on the region itself: the field the finding must name.
    field: Option<String>,
}

impl Draft {
    #[allow(clippy::too_many_arguments)]
    fn new(
        flow: Flow,
        from: impl Into<String>,
        to: impl Into<String>,
        jurisdiction: impl Into<String>,
        location: Option<String>,
        in_jurisdiction: bool,
        data_classes: &[String],
        guards: Vec<Guard>,
        status: Status,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            path: Path {
                flow,
                from: from.into(),
                to: to.into(),
                jurisdiction: jurisdiction.into(),
                location,
                in_jurisdiction,
                data_classes: data_classes.to_vec(),
                guards,
                status,
                reason: reason.into(),
            },
            subjects: Vec::new(),
            field: None,
        }
    }

    fn subject(mut self, kind: &str, namespace: &str, name: &str, rule: Rule) -> Self {
        self.subjects
            .push((kind.into(), namespace.into(), name.into(), rule));
        self
    }

    fn field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }
}

/// What one region's derivation reads.
struct Region<'a> {
    region: &'a SovereignRegion,
    name: String,
    namespace: String,
    jurisdiction: String,
    /// Every region, to place locations.
    all: &'a [SovereignRegion],
    policies: Vec<&'a ResidencyPolicy>,
    backends: Vec<&'a InferenceBackend>,
    /// Rendered objects of the stack namespace: (kind, name) → object.
    rendered: BTreeMap<(String, String), &'a Value>,
    /// Union of the data classes the region's backends process.
    classes: Vec<String>,
    /// The installed admission policies governing the region's data.
    admission: Vec<Admission>,
}

fn sorted_unique(items: impl IntoIterator<Item = String>) -> Vec<String> {
    items
        .into_iter()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

fn text(value: &Value) -> &str {
    value.as_str().unwrap_or_default()
}

impl<'a> Region<'a> {
    fn object(&self, kind: &str, name: &str) -> Option<&'a Value> {
        self.rendered
            .get(&(kind.to_owned(), name.to_owned()))
            .copied()
    }

    fn netpol(&self, name: &str) -> Option<Guard> {
        self.object("NetworkPolicy", name).map(|_| {
            Guard::new(
                "network-policy",
                format!("NetworkPolicy {}/{name}", self.namespace),
            )
        })
    }

    /// The policies that apply to this region's data: every HomeRegion one, and the
    /// AllowedJurisdictions ones that allow its jurisdiction.
    fn applies(&self, policy: &ResidencyPolicy) -> bool {
        match policy.spec.residency.kind {
            ResidencyKind::HomeRegion => true,
            ResidencyKind::AllowedJurisdictions => policy
                .spec
                .residency
                .allowed_jurisdictions
                .iter()
                .any(|j| is_within(&self.jurisdiction, j)),
        }
    }

    /// Audit guards: the policies applying to the region whose `rule` is on, restricted to those
    /// governing one of `classes` when given.
    fn audit(&self, rule: Rule, classes: Option<&[String]>) -> Vec<Guard> {
        self.policies
            .iter()
            .filter(|p| rule.enabled(&p.spec.rules))
            .filter(|p| {
                classes.is_none_or(|classes| {
                    p.spec.data_classes.iter().any(|c| {
                        classes
                            .iter()
                            .any(|d| normalize_class(d) == normalize_class(c))
                    })
                })
            })
            .map(|p| {
                Guard::new(
                    "audit",
                    format!(
                        "ResidencyPolicy {}: {rule}",
                        p.metadata.name.as_deref().unwrap_or_default()
                    ),
                )
            })
            .collect()
    }

    /// Where `location` is: this region's jurisdiction, another region's, or unknown.
    fn place(&self, location: &str) -> (String, bool) {
        if self.region.spec.locations.iter().any(|l| l == location) {
            return (self.jurisdiction.clone(), true);
        }
        for other in self.all {
            if other.spec.locations.iter().any(|l| l == location) {
                let within = is_within(&other.spec.jurisdiction, &self.jurisdiction);
                return (other.spec.jurisdiction.clone(), within);
            }
        }
        (UNKNOWN.to_owned(), false)
    }

    fn locations(&self) -> Option<String> {
        Some(self.region.spec.locations.join(", ")).filter(|l| !l.is_empty())
    }

    /// `pod-affinity` when the rendered workload's pod template is pinned to the region's
    /// locations (judged by the pinWorkloads rule's own function), else the reason it is not.
    fn pinned(&self, kind: &str, name: &str) -> Result<Guard, String> {
        let Some(object) = self.object(kind, name) else {
            return Err(format!("{kind} {}/{name} is not rendered", self.namespace));
        };
        let locations = &self.region.spec.locations;
        match unpinned_reason(
            &object["spec"]["template"]["spec"],
            locations,
            &locations.join(", "),
        ) {
            None => Ok(Guard::new(
                "pod-affinity",
                format!(
                    "{kind} {}/{name}: topology.kubernetes.io/region in ({})",
                    self.namespace,
                    locations.join(", ")
                ),
            )),
            Some(reason) => Err(format!("{kind} {}/{name}: {reason}", self.namespace)),
        }
    }

    /// The environment of the first container of a rendered Deployment: name → value.
    fn env(&self, deployment: &str) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(object) = self.object("Deployment", deployment) {
            for container in object["spec"]["template"]["spec"]["containers"]
                .as_array()
                .into_iter()
                .flatten()
            {
                for env in container["env"].as_array().into_iter().flatten() {
                    if let Some(value) = env["value"].as_str() {
                        out.insert(text(&env["name"]).to_owned(), value.to_owned());
                    }
                }
            }
        }
        out
    }

    /// A rendered ConfigMap's YAML file, parsed.
    fn config(&self, name: &str, key: &str) -> Result<Option<Value>, EvidenceError> {
        let Some(object) = self.object("ConfigMap", name) else {
            return Ok(None);
        };
        let Some(yaml) = object["data"][key].as_str() else {
            return Ok(None);
        };
        serde_yaml_ng::from_str(yaml)
            .map(Some)
            .map_err(|e| EvidenceError::Rendered {
                object: format!("ConfigMap {}/{name} {key}", self.namespace),
                message: e.to_string(),
            })
    }

    /// Whether `host` is one the region declares as its own.
    fn in_region_host(&self, host: &str) -> bool {
        host_matches(host, &self.region.spec.in_region_hosts)
    }

    /// Egress guards of a pod that reaches `host` outside the cluster: the default deny and the
    /// CIDR allowance (the only addresses open).
    fn egress_fence(&self) -> Vec<Guard> {
        [
            self.netpol(network::DEFAULT_DENY),
            self.netpol(network::ALLOW_EGRESS_CIDRS),
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// Derives the evidence of every region in `inputs`, sorted by region name.
pub fn derive(inputs: &Inputs) -> Result<Evidence, EvidenceError> {
    let inventory = Inventory::of(inputs.objects.iter());
    let mut names: Vec<(&str, &SovereignRegion)> = Vec::new();
    for region in &inputs.regions {
        let name = region
            .metadata
            .name
            .as_deref()
            .ok_or(EvidenceError::UnnamedRegion)?;
        names.push((name, region));
    }
    names.sort_by_key(|(name, _)| *name);
    let mut regions = Vec::new();
    for (name, region) in names {
        let namespace = region.stack_namespace();
        let mut backends: Vec<&InferenceBackend> = inputs
            .backends
            .iter()
            .filter(|b| {
                b.spec.region == name && b.metadata.namespace.as_deref() == Some(&namespace)
            })
            .collect();
        backends.sort_by_key(|b| b.metadata.name.clone());
        let rendered = inputs
            .rendered
            .iter()
            .filter(|o| text(&o["metadata"]["namespace"]) == namespace)
            .map(|o| {
                (
                    (
                        text(&o["kind"]).to_owned(),
                        text(&o["metadata"]["name"]).to_owned(),
                    ),
                    o,
                )
            })
            .collect();
        let classes = sorted_unique(
            backends
                .iter()
                .flat_map(|b| b.spec.data_classes.iter().map(|c| normalize_class(c))),
        );
        let ctx = Region {
            region,
            name: name.to_owned(),
            namespace: namespace.clone(),
            jurisdiction: region.spec.jurisdiction.clone(),
            all: &inputs.regions,
            policies: Vec::new(),
            backends,
            rendered,
            classes,
            admission: Vec::new(),
        };
        let policies = inputs.policies.iter().filter(|p| ctx.applies(p)).collect();
        let ctx = Region { policies, ..ctx };
        let admission = admission(&ctx, &inputs.admission);
        let ctx = Region { admission, ..ctx };

        let mut drafts = Vec::new();
        inference(&ctx, &mut drafts)?;
        vector_store(&ctx, &mut drafts);
        telemetry(&ctx, &mut drafts)?;
        metrics(&ctx, &mut drafts);
        model_weights(&ctx, &mut drafts);
        sinks(&ctx, inputs, &inventory, &mut drafts);
        usage_and_metadata(&ctx, inputs, &mut drafts);
        apply_findings(&ctx, &inputs.findings, &mut drafts);

        let mut paths: Vec<Path> = drafts.into_iter().map(|d| finish(d.path)).collect();
        paths.sort_by(|a, b| a.key().cmp(&b.key()));
        // Two drafts for one key would make the report ambiguous: keep the worse one.
        paths.dedup_by(|later, earlier| {
            if later.key() == earlier.key() {
                if later.status > earlier.status {
                    std::mem::swap(later, earlier);
                }
                true
            } else {
                false
            }
        });
        regions.push(RegionEvidence {
            name: name.to_owned(),
            jurisdiction: region.spec.jurisdiction.clone(),
            frameworks: region.spec.frameworks.clone(),
            namespace,
            locations: region.spec.locations.clone(),
            summary: Summary::of(&paths),
            admission: ctx.admission.clone(),
            paths,
        });
    }
    Ok(Evidence { regions })
}

/// Sorted guards and classes; an `ok` path without any guard is `unguarded`.
fn finish(mut path: Path) -> Path {
    path.guards.sort();
    path.guards.dedup();
    path.data_classes = sorted_unique(path.data_classes);
    if path.status == Status::Ok && path.guards.is_empty() {
        path.status = Status::Unguarded;
        path.reason = format!("{}; but nothing enforces it", path.reason);
    }
    path
}

/// The installed admission policies of the policies applying to the region.
fn admission(ctx: &Region<'_>, objects: &[Value]) -> Vec<Admission> {
    let find = |kind: &str, name: &str| {
        objects
            .iter()
            .find(|o| text(&o["kind"]) == kind && text(&o["metadata"]["name"]) == name)
    };
    let mut out = Vec::new();
    for policy in &ctx.policies {
        let policy_name = policy.metadata.name.clone().unwrap_or_default();
        let name = object_name(&policy_name);
        if find("ValidatingAdmissionPolicy", &name).is_none() {
            continue;
        }
        let actions = find("ValidatingAdmissionPolicyBinding", &name)
            .and_then(|b| b["spec"]["validationActions"].as_array())
            .map(|a| a.iter().map(|v| text(v).to_owned()).collect())
            .unwrap_or_default();
        out.push(Admission {
            name,
            policy: policy_name,
            data_classes: sorted_unique(
                policy.spec.data_classes.iter().map(|c| normalize_class(c)),
            ),
            rules: crate::residency::rules::admitted()
                .filter(|r| r.enabled(&policy.spec.rules))
                .map(|r| r.as_str().to_owned())
                .collect(),
            actions,
        });
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Admission guards of an object the operator renders or the input holds: the installed
/// policies governing its data-class label (on it or its pod template) whose admitted rules
/// apply to its kind.
fn admission_guards(ctx: &Region<'_>, object: &Value) -> Vec<Guard> {
    let class = object["metadata"]["labels"][DATA_CLASS]
        .as_str()
        .or_else(|| object["spec"]["template"]["metadata"]["labels"][DATA_CLASS].as_str());
    let (Some(class), Some((group, _))) = (
        class,
        text(&object["apiVersion"])
            .rsplit_once('/')
            .or(Some(("", ""))),
    ) else {
        return Vec::new();
    };
    let admitted = kinds::lookup(group, text(&object["kind"])).is_some_and(|k| k.admission);
    if !admitted {
        return Vec::new();
    }
    ctx.admission
        .iter()
        .filter(|a| a.data_classes.contains(&normalize_class(class)))
        .map(|a| {
            Guard::new(
                "validating-admission-policy",
                format!("{}: {}", a.name, a.rules.join(", ")),
            )
        })
        .collect()
}

/// The host an inference backend sends to, and whether it is the region's own vLLM.
fn backend_destination(backend: &InferenceBackend, namespace: &str) -> String {
    let name = backend.metadata.name.as_deref().unwrap_or_default();
    match &backend.spec.external {
        Some(external) => {
            endpoint_host(&external.endpoint).unwrap_or_else(|| external.endpoint.clone())
        }
        None => {
            let base = gateway_config::vllm_api_base(name, namespace);
            endpoint_host(&base).unwrap_or(base)
        }
    }
}

/// Prompts: clients → gateway, gateway → every backend, every fallback, and anything else the
/// rendered model list routes to.
fn inference(ctx: &Region<'_>, out: &mut Vec<Draft>) -> Result<(), EvidenceError> {
    let ns = &ctx.namespace;
    let config = ctx.config(gateway::NAME, "config.yaml")?;
    let config_guard = config.as_ref().map(|_| {
        Guard::new(
            "gateway-config",
            format!("ConfigMap {ns}/{}: model_list", gateway::NAME),
        )
    });
    let gateway_env = ctx.env(gateway::NAME);

    if ctx.object("Service", gateway::NAME).is_some() {
        let mut guards: Vec<Guard> = ctx
            .netpol(network::ALLOW_GATEWAY_INGRESS)
            .into_iter()
            .collect();
        if let Some(master) = &ctx.region.spec.gateway.master_key_secret {
            guards.push(Guard::new(
                "chart-setting",
                format!("gateway master key (Secret {ns}/{})", master.name),
            ));
        }
        let pinned = ctx.pinned("Deployment", gateway::NAME);
        let (status, reason) = match &pinned {
            Ok(_) => (
                Status::Ok,
                format!(
                    "the region's API: the gateway runs only on nodes in {}",
                    ctx.region.spec.locations.join(", ")
                ),
            ),
            Err(why) => (Status::Violation, why.clone()),
        };
        guards.extend(pinned.ok());
        out.push(
            Draft::new(
                Flow::Inference,
                "clients",
                format!("Service {ns}/{}:{}", gateway::NAME, gateway::PORT),
                ctx.jurisdiction.clone(),
                ctx.locations(),
                true,
                &ctx.classes,
                guards,
                status,
                reason,
            )
            .subject("Deployment", ns, gateway::NAME, Rule::PinWorkloads),
        );
    }

    // What the rendered config routes to, by deployment id (`<namespace>.<backend>`).
    let routed: BTreeMap<String, String> = config
        .as_ref()
        .and_then(|c| c["model_list"].as_array())
        .into_iter()
        .flatten()
        .map(|entry| {
            (
                text(&entry["model_info"]["id"]).to_owned(),
                text(&entry["litellm_params"]["api_base"]).to_owned(),
            )
        })
        .collect();

    let judge = |backend: &InferenceBackend| -> (Status, String, Vec<Guard>) {
        let name = backend.metadata.name.as_deref().unwrap_or_default();
        let violations = hosting_violations(backend, ctx.region, &inputs_policies(ctx));
        let routed_here = routed.contains_key(&format!("{ns}.{name}"));
        let mut guards: Vec<Guard> = config_guard.iter().cloned().collect();
        let classes = &backend.spec.data_classes;
        guards.extend(ctx.audit(Rule::InferenceHosting, Some(classes)));
        let (status, mut reason) = match &backend.spec.external {
            Some(external) => {
                guards.push(Guard::new(
                    "audit",
                    format!(
                        "SovereignRegion {}: inferenceHosting (jurisdiction {})",
                        ctx.name, ctx.jurisdiction
                    ),
                ));
                guards.extend(ctx.netpol(network::DEFAULT_DENY));
                let host = endpoint_host(&external.endpoint).unwrap_or_default();
                let egress = ctx.region.spec.egress.as_ref();
                if egress.is_some_and(|e| host_matches(&host, &e.hosts)) {
                    guards.push(Guard::new(
                        "region-setting",
                        format!("SovereignRegion {}: spec.egress.hosts {host}", ctx.name),
                    ));
                }
                if let Some(proxy) = egress.and_then(|e| e.proxy.as_ref()) {
                    guards.extend(ctx.netpol(network::ALLOW_EGRESS_PROXY));
                    if gateway_env.contains_key("HTTPS_PROXY") {
                        guards.push(Guard::new(
                            "chart-setting",
                            format!(
                                "Deployment {ns}/{}: HTTPS_PROXY {} (allows spec.egress.hosts only)",
                                gateway::NAME,
                                proxy.url
                            ),
                        ));
                    }
                }
                if violations.is_empty() {
                    (
                        Status::Ok,
                        format!(
                            "{:?} hosts it in {}{}, within {}",
                            external.provider,
                            external.hosting_jurisdiction,
                            external
                                .hosting_location
                                .as_deref()
                                .map(|l| format!(" ({l})"))
                                .unwrap_or_default(),
                            ctx.jurisdiction
                        ),
                    )
                } else {
                    (
                        Status::Violation,
                        violations
                            .iter()
                            .map(|v| v.message.clone())
                            .collect::<Vec<_>>()
                            .join("; "),
                    )
                }
            }
            None => {
                guards.extend(ctx.netpol(network::ALLOW_SAME_NAMESPACE));
                match ctx.pinned("Deployment", &format!("vllm-{name}")) {
                    Ok(pinned) => {
                        guards.push(pinned);
                        (
                            Status::Ok,
                            format!(
                                "self-hosted on vLLM in {ns}, on nodes in {}",
                                ctx.region.spec.locations.join(", ")
                            ),
                        )
                    }
                    Err(why) if why.ends_with("is not rendered") => (
                        Status::Ok,
                        format!("self-hosted on vLLM in {ns} ({why} yet)"),
                    ),
                    Err(why) => (Status::Violation, why),
                }
            }
        };
        if status == Status::Violation {
            reason.push_str(if routed_here {
                "; and the gateway routes to it"
            } else {
                "; the gateway does not route to it (not in its model list)"
            });
        }
        (status, reason, guards)
    };

    let place = |backend: &InferenceBackend| -> (String, Option<String>, bool) {
        match &backend.spec.external {
            Some(external) => (
                external.hosting_jurisdiction.clone(),
                external.hosting_location.clone(),
                is_within(&external.hosting_jurisdiction, &ctx.jurisdiction),
            ),
            None => (ctx.jurisdiction.clone(), ctx.locations(), true),
        }
    };

    let mut accounted: BTreeSet<String> = BTreeSet::new();
    for backend in &ctx.backends {
        let name = backend.metadata.name.as_deref().unwrap_or_default();
        accounted.insert(format!("{ns}.{name}"));
        let (status, reason, guards) = judge(backend);
        let (jurisdiction, location, within) = place(backend);
        out.push(
            Draft::new(
                Flow::Inference,
                format!("gateway: {name}"),
                backend_destination(backend, ns),
                jurisdiction.clone(),
                location.clone(),
                within,
                &backend.spec.data_classes,
                guards,
                status,
                reason,
            )
            .subject("InferenceBackend", ns, name, Rule::InferenceHosting),
        );
        // Fallbacks: a request for this model may go on to every backend of each fallback.
        for fallback in backend
            .spec
            .routing
            .as_ref()
            .map(|r| r.fallbacks.as_slice())
            .unwrap_or_default()
        {
            let from = format!("gateway: {name} falls back to {fallback}");
            let targets: Vec<&&InferenceBackend> = ctx
                .backends
                .iter()
                .filter(|b| &b.spec.model_name == fallback)
                .collect();
            if targets.is_empty() {
                out.push(Draft::new(
                    Flow::Inference,
                    from,
                    format!(
                        "model {fallback} (served by no backend of region {})",
                        ctx.name
                    ),
                    ctx.jurisdiction.clone(),
                    None,
                    true,
                    &backend.spec.data_classes,
                    config_guard.iter().cloned().collect(),
                    Status::Ok,
                    "the gateway drops this fallback: a fallback never leaves the region",
                ));
                continue;
            }
            for target in targets {
                let target_name = target.metadata.name.as_deref().unwrap_or_default();
                let (status, reason, guards) = judge(target);
                let (jurisdiction, location, within) = place(target);
                out.push(
                    Draft::new(
                        Flow::Inference,
                        from.clone(),
                        backend_destination(target, ns),
                        jurisdiction,
                        location,
                        within,
                        &backend.spec.data_classes,
                        guards,
                        status,
                        format!("fallback to {target_name}: {reason}"),
                    )
                    .subject(
                        "InferenceBackend",
                        ns,
                        target_name,
                        Rule::InferenceHosting,
                    ),
                );
            }
        }
    }
    // Anything the rendered config routes to that no backend declares (a hand-edited config).
    for (id, api_base) in &routed {
        if accounted.contains(id) {
            continue;
        }
        out.push(Draft::new(
            Flow::Inference,
            format!("gateway: model_list entry {id}"),
            endpoint_host(api_base).unwrap_or_else(|| api_base.clone()),
            UNKNOWN,
            None,
            false,
            &ctx.classes,
            Vec::new(),
            Status::Unknown,
            format!(
                "ConfigMap {ns}/{} routes to {api_base}, but no InferenceBackend of region {} declares it",
                gateway::NAME,
                ctx.name
            ),
        ));
    }
    // Any other URL in the rendered config (what `gateway.extraConfig` may add: alerting
    // webhooks, caches, …) is somewhere data may go that nobody placed.
    if let Some(config) = &config {
        let mut urls = Vec::new();
        collect_urls(config, String::new(), &mut urls);
        for (field, url) in urls {
            if field.starts_with("model_list") {
                continue;
            }
            let host = endpoint_host(&url).unwrap_or_else(|| url.clone());
            let in_region = ctx.in_region_host(&host);
            out.push(Draft::new(
                Flow::Logs,
                format!("gateway: {field}"),
                host,
                if in_region { ctx.jurisdiction.as_str() } else { UNKNOWN },
                None,
                in_region,
                &ctx.classes,
                Vec::new(),
                if in_region { Status::Unguarded } else { Status::Unknown },
                format!(
                    "ConfigMap {ns}/{} sets {field} to {url} (gateway.extraConfig); where it sends data is not checked by any rule",
                    gateway::NAME
                ),
            ));
        }
    }
    Ok(())
}

fn inputs_policies(ctx: &Region<'_>) -> Vec<ResidencyPolicy> {
    ctx.policies.iter().map(|p| (*p).clone()).collect()
}

/// Every string value of `value` that is a URL, with its dotted path.
fn collect_urls(value: &Value, path: String, out: &mut Vec<(String, String)>) {
    match value {
        Value::String(s) if s.contains("://") => out.push((path, s.clone())),
        Value::Object(map) => {
            for (key, item) in map {
                let child = if path.is_empty() {
                    key.clone()
                } else {
                    format!("{path}.{key}")
                };
                collect_urls(item, child, out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                collect_urls(item, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Embeddings into the vector store, and the vectors at rest on its volumes.
fn vector_store(ctx: &Region<'_>, out: &mut Vec<Draft>) {
    let ns = &ctx.namespace;
    let spec = &ctx.region.spec.vector_store;
    let name = match spec.engine {
        VectorStoreEngine::Qdrant => vectorstore::QDRANT,
        VectorStoreEngine::PgVector => vectorstore::PGVECTOR,
        VectorStoreEngine::None => return,
    };
    let mut guards: Vec<Guard> = [
        ctx.netpol(network::DEFAULT_DENY),
        ctx.netpol(network::ALLOW_SAME_NAMESPACE),
    ]
    .into_iter()
    .flatten()
    .collect();
    if spec.engine == VectorStoreEngine::Qdrant {
        let secret = spec
            .api_key_secret
            .as_ref()
            .map_or(vectorstore::QDRANT_API_KEY_SECRET, |s| s.name.as_str());
        guards.push(Guard::new(
            "chart-setting",
            format!("Qdrant API key (Secret {ns}/{secret})"),
        ));
    }
    out.push(Draft::new(
        Flow::Embeddings,
        format!("clients in {ns}"),
        format!("Service {ns}/{name}"),
        ctx.jurisdiction.clone(),
        ctx.locations(),
        true,
        &ctx.classes,
        guards,
        Status::Ok,
        format!(
            "only pods of {ns} may connect to the vector store (default deny, same-namespace allowance)"
        ),
    ));

    let classes = ctx.region.spec.storage_classes.clone();
    let mut guards = Vec::new();
    let mut problems = Vec::new();
    match ctx.pinned("StatefulSet", name) {
        Ok(guard) => guards.push(guard),
        Err(why) => problems.push(why),
    }
    let statefulset = ctx.object("StatefulSet", name);
    let mut storage_classes = Vec::new();
    for claim in statefulset
        .and_then(|s| s["spec"]["volumeClaimTemplates"].as_array())
        .into_iter()
        .flatten()
    {
        let class = text(&claim["spec"]["storageClassName"]).to_owned();
        match storage_reason(&claim["spec"], &classes, &format!("region {}", ctx.name)) {
            None => guards.push(Guard::new(
                "storage-class",
                format!("StatefulSet {ns}/{name}: storageClassName {class}"),
            )),
            Some(reason) => problems.push(format!(
                "volumeClaimTemplates[{}]: {reason}",
                text(&claim["metadata"]["name"])
            )),
        }
        storage_classes.push(class);
    }
    let (status, reason) = if statefulset.is_none() {
        (
            Status::Unknown,
            format!("StatefulSet {ns}/{name} is not rendered"),
        )
    } else if problems.is_empty() {
        (
            Status::Ok,
            format!(
                "volumes of class {} on nodes in {}",
                storage_classes.join(", "),
                ctx.region.spec.locations.join(", ")
            ),
        )
    } else if problems
        .iter()
        .any(|p| p.contains("location is unknown") || p.contains("declares no"))
    {
        (Status::Unknown, problems.join("; "))
    } else {
        (Status::Violation, problems.join("; "))
    };
    if let Some(statefulset) = statefulset {
        guards.extend(admission_guards(ctx, statefulset));
    }
    out.push(
        Draft::new(
            Flow::Vectors,
            format!("vector store {name}"),
            format!("PersistentVolumeClaims {ns}/data-{name}-*"),
            ctx.jurisdiction.clone(),
            ctx.locations(),
            status == Status::Ok,
            &ctx.classes,
            guards,
            status,
            reason,
        )
        .subject("StatefulSet", ns, name, Rule::PinStorage)
        .subject("StatefulSet", ns, name, Rule::PinWorkloads),
    );
}

/// Traces and logs: the gateway and vLLM to the collector, the collector's exporters, and
/// Langfuse.
fn telemetry(ctx: &Region<'_>, out: &mut Vec<Draft>) -> Result<(), EvidenceError> {
    let ns = &ctx.namespace;
    let collector_host = format!("{}.{ns}.svc", observability::COLLECTOR);
    let same_namespace: Vec<Guard> = ctx
        .netpol(network::ALLOW_SAME_NAMESPACE)
        .into_iter()
        .collect();
    let in_namespace = |from: String, url: &str, setting: String| -> Draft {
        let host = endpoint_host(url).unwrap_or_else(|| url.to_owned());
        let mut guards = same_namespace.clone();
        guards.push(Guard::new("chart-setting", setting));
        let ours = host == collector_host;
        Draft::new(
            Flow::Traces,
            from,
            host.clone(),
            if ours {
                ctx.jurisdiction.as_str()
            } else {
                UNKNOWN
            },
            ours.then(|| ctx.locations()).flatten(),
            ours,
            &ctx.classes,
            guards,
            if ours { Status::Ok } else { Status::Unknown },
            if ours {
                format!("to the region's collector in {ns}")
            } else {
                format!("{url} is not the region's collector")
            },
        )
    };
    let gateway_env = ctx.env(gateway::NAME);
    if let Some(url) = gateway_env.get(gateway_config::OTEL_ENDPOINT_ENV) {
        out.push(in_namespace(
            "gateway".to_owned(),
            url,
            format!(
                "Deployment {ns}/{}: {}",
                gateway::NAME,
                gateway_config::OTEL_ENDPOINT_ENV
            ),
        ));
    }
    for backend in &ctx.backends {
        if backend.spec.vllm.is_none() {
            continue;
        }
        let name = format!(
            "vllm-{}",
            backend.metadata.name.as_deref().unwrap_or_default()
        );
        let Some(deployment) = ctx.object("Deployment", &name) else {
            continue;
        };
        let args: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if let Some(i) = args.iter().position(|a| *a == "--otlp-traces-endpoint")
            && let Some(url) = args.get(i + 1)
        {
            out.push(in_namespace(
                name.clone(),
                url,
                format!("Deployment {ns}/{name}: --otlp-traces-endpoint"),
            ));
        }
    }

    let observing = ctx.audit(Rule::ObservabilityInRegion, None);
    let problems = out_of_region_endpoints(ctx.region);
    let judged = |field: &'static str, url: &str| -> (String, String, bool, Status, String) {
        let host = endpoint_host(url).unwrap_or_else(|| url.to_owned());
        let problem = problems.iter().find(|p| p.starts_with(field));
        if let Some(problem) = problem {
            (
                host,
                UNKNOWN.to_owned(),
                false,
                Status::Violation,
                problem.clone(),
            )
        } else if ctx.in_region_host(&host) {
            let reason = format!("{host} is one of the region's spec.inRegionHosts");
            (host, ctx.jurisdiction.clone(), true, Status::Ok, reason)
        } else {
            (
                host.clone(),
                UNKNOWN.to_owned(),
                false,
                Status::Violation,
                format!("{host} is not in spec.inRegionHosts"),
            )
        }
    };

    // The collector: every pipeline's exporters, as rendered.
    if let Some(config) = ctx.config(observability::COLLECTOR, observability::CONFIG_KEY)? {
        let pipelines = config["service"]["pipelines"]
            .as_object()
            .cloned()
            .unwrap_or_default();
        for (pipeline, spec) in pipelines {
            let flow = match pipeline.split('/').next().unwrap_or_default() {
                "traces" => Flow::Traces,
                "logs" => Flow::Logs,
                "metrics" => Flow::Metrics,
                _ => Flow::Logs,
            };
            for exporter in spec["exporters"].as_array().into_iter().flatten() {
                let exporter = text(exporter);
                let endpoint = text(&config["exporters"][exporter]["endpoint"]);
                let classes = if flow == Flow::Metrics {
                    vec![OPERATIONAL.to_owned()]
                } else {
                    ctx.classes.clone()
                };
                let from = format!("{} ({pipeline} pipeline)", observability::COLLECTOR);
                if endpoint.is_empty() {
                    out.push(Draft::new(
                        flow,
                        from,
                        format!("exporter {exporter}"),
                        UNKNOWN,
                        None,
                        false,
                        &classes,
                        Vec::new(),
                        Status::Unknown,
                        format!("exporter {exporter} names no endpoint"),
                    ));
                    continue;
                }
                let (host, jurisdiction, within, status, reason) =
                    judged("observability.otlpEndpoint", endpoint);
                let mut guards = observing.clone();
                guards.extend(ctx.egress_fence());
                guards.push(Guard::new(
                    "chart-setting",
                    format!(
                        "ConfigMap {ns}/{}: exporters.{exporter}",
                        observability::COLLECTOR
                    ),
                ));
                out.push(
                    Draft::new(
                        flow,
                        from,
                        host,
                        jurisdiction,
                        None,
                        within,
                        &classes,
                        guards,
                        status,
                        reason,
                    )
                    .subject(
                        "SovereignRegion",
                        "",
                        &ctx.name,
                        Rule::ObservabilityInRegion,
                    )
                    .field("observability.otlpEndpoint"),
                );
            }
        }
    }
    // Langfuse: the gateway's LLM observations (prompts and completions).
    if let Some(url) = gateway_env.get(gateway_config::LANGFUSE_HOST_ENV) {
        let (host, jurisdiction, within, status, reason) =
            judged("observability.langfuseHost", url);
        let mut guards = observing.clone();
        guards.extend(ctx.egress_fence());
        guards.push(Guard::new(
            "chart-setting",
            format!(
                "Deployment {ns}/{}: {}",
                gateway::NAME,
                gateway_config::LANGFUSE_HOST_ENV
            ),
        ));
        out.push(
            Draft::new(
                Flow::Traces,
                "gateway (langfuse callback)",
                host,
                jurisdiction,
                None,
                within,
                &ctx.classes,
                guards,
                status,
                reason,
            )
            .subject(
                "SovereignRegion",
                "",
                &ctx.name,
                Rule::ObservabilityInRegion,
            )
            .field("observability.langfuseHost"),
        );
    }
    // The gateway's spend logs: a database whose URL is in a Secret nobody can place.
    if let Some(database) = &ctx.region.spec.gateway.database_secret {
        out.push(Draft::new(
            Flow::Usage,
            "gateway (spend logs)",
            format!("DATABASE_URL of Secret {ns}/{}", database.name),
            UNKNOWN,
            None,
            false,
            &ctx.classes,
            ctx.egress_fence(),
            Status::Unknown,
            "the database URL is in a Secret: where the database runs cannot be read; keep it in-region and inside spec.egress.cidrs",
        ));
    }
    Ok(())
}

/// Prometheus and operator scrapes of the vLLM servers (the NetworkPolicy's namespaces), and
/// PodMonitors.
fn metrics(ctx: &Region<'_>, out: &mut Vec<Draft>) {
    let Some(policy) = ctx.object("NetworkPolicy", network::ALLOW_METRICS_SCRAPES) else {
        return;
    };
    let guard = ctx.netpol(network::ALLOW_METRICS_SCRAPES);
    for rule in policy["spec"]["ingress"].as_array().into_iter().flatten() {
        for peer in rule["from"].as_array().into_iter().flatten() {
            let scraper =
                text(&peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]);
            if scraper.is_empty() {
                continue;
            }
            out.push(Draft::new(
                Flow::Metrics,
                "vLLM servers /metrics (port 8000)",
                format!("namespace {scraper}"),
                CLUSTER,
                None,
                false,
                &[OPERATIONAL.to_owned()],
                guard.iter().cloned().collect(),
                Status::Ok,
                format!(
                    "operational metrics only (request and token counters per model); the scrapers in {scraper} run where the cluster places them, which the operator does not pin"
                ),
            ));
        }
    }
}

/// Where each vLLM backend's weights come from.
fn model_weights(ctx: &Region<'_>, out: &mut Vec<Draft>) {
    let ns = &ctx.namespace;
    let classes = [MODEL_WEIGHTS.to_owned()];
    for backend in &ctx.backends {
        let Some(vllm) = &backend.spec.vllm else {
            continue;
        };
        let name = backend.metadata.name.as_deref().unwrap_or_default();
        let deployment = format!("vllm-{name}");
        let env = ctx.env(&deployment);
        let source = vllm.model_source.as_ref();
        let from_hub = source.is_none_or(|s| s.hugging_face.is_some());
        let mut guards = ctx.egress_fence();
        let draft = if from_hub {
            let mirror = ctx
                .region
                .spec
                .hugging_face_mirror
                .clone()
                .unwrap_or_default();
            let host = endpoint_host(&mirror).unwrap_or_else(|| mirror.clone());
            if env.get("HF_ENDPOINT").map(|e| e.trim_end_matches('/'))
                == Some(mirror.trim_end_matches('/'))
            {
                guards.push(Guard::new(
                    "chart-setting",
                    format!("Deployment {ns}/{deployment}: HF_ENDPOINT {mirror}"),
                ));
            }
            guards.push(Guard::new(
                "crd-validation",
                "SovereignRegion: huggingFaceMirror host must match spec.inRegionHosts",
            ));
            let ok = !host.is_empty() && ctx.in_region_host(&host);
            Draft::new(
                Flow::ModelWeights,
                deployment.clone(),
                if host.is_empty() {
                    "Hugging Face (no mirror)".to_owned()
                } else {
                    host.clone()
                },
                if ok {
                    ctx.jurisdiction.as_str()
                } else {
                    UNKNOWN
                },
                None,
                ok,
                &classes,
                guards,
                if ok { Status::Ok } else { Status::Violation },
                if ok {
                    format!("the region's Hugging Face mirror {host}; the public hub is never used")
                } else {
                    format!("huggingFaceMirror {mirror} is not an in-region host")
                },
            )
        } else if let Some(pvc) = source.and_then(|s| s.pvc.as_ref()) {
            Draft::new(
                Flow::ModelWeights,
                deployment.clone(),
                format!("PersistentVolumeClaim {ns}/{}", pvc.claim_name),
                ctx.jurisdiction.clone(),
                ctx.locations(),
                true,
                &classes,
                ctx.pinned("Deployment", &deployment).into_iter().collect(),
                Status::Ok,
                format!("a claim in {ns}, mounted read-only; HF_HUB_OFFLINE=1"),
            )
        } else {
            let uri = source
                .and_then(|s| s.object_store.as_ref())
                .map(|o| o.uri.clone())
                .unwrap_or_default();
            let cidrs = ctx
                .region
                .spec
                .egress
                .as_ref()
                .map(|e| e.cidrs.clone())
                .unwrap_or_default();
            let https_host = uri
                .starts_with("https://")
                .then(|| endpoint_host(&uri))
                .flatten();
            let (status, jurisdiction, reason) = match &https_host {
                Some(host) if ctx.in_region_host(host) => (
                    Status::Ok,
                    ctx.jurisdiction.clone(),
                    format!("{host} is one of the region's spec.inRegionHosts"),
                ),
                Some(host) => (
                    Status::Violation,
                    UNKNOWN.to_owned(),
                    format!("{host} is not in spec.inRegionHosts"),
                ),
                None if !cidrs.is_empty() && guards.len() == 2 => (
                    Status::Ok,
                    ctx.jurisdiction.clone(),
                    format!(
                        "the bucket is reachable only through the region's egress.cidrs ({}): the default-deny NetworkPolicy blocks every other address",
                        cidrs.join(", ")
                    ),
                ),
                None => (
                    Status::Unknown,
                    UNKNOWN.to_owned(),
                    format!("{uri}: the URI spells no location and no egress CIDR fences it"),
                ),
            };
            if status != Status::Ok {
                guards.clear();
            }
            Draft::new(
                Flow::ModelWeights,
                deployment.clone(),
                uri,
                jurisdiction,
                None,
                status == Status::Ok,
                &classes,
                guards,
                status,
                reason,
            )
        };
        out.push(draft);
    }
}

/// The namespaces of the input and the stack namespaces, with their regions.
fn namespace_regions(inputs: &Inputs) -> BTreeMap<String, Option<String>> {
    let mut out: BTreeMap<String, Option<String>> = BTreeMap::new();
    for object in &inputs.objects {
        if text(&object["kind"]) == "Namespace" && text(&object["apiVersion"]) == "v1" {
            let label = object["metadata"]["labels"][REGION]
                .as_str()
                .map(str::to_owned);
            out.insert(text(&object["metadata"]["name"]).to_owned(), label);
        }
    }
    // A region's declaration outranks any label.
    for region in &inputs.regions {
        out.insert(region.stack_namespace(), region.metadata.name.clone());
    }
    out
}

/// Backups and replication: every sink of the input the region's data goes to, with the
/// destinations the residency engine reads.
fn sinks(ctx: &Region<'_>, inputs: &Inputs, inventory: &Inventory<'_>, out: &mut Vec<Draft>) {
    let namespaces = namespace_regions(inputs);
    let region_of = |ns: &str| namespaces.get(ns).cloned().flatten();
    let guards_for = |rules: &PolicyRules| rules.forbid_cross_border_replication;
    let audit = ctx.audit(Rule::ForbidCrossBorderReplication, None);
    let cel = functions();
    for object in &inputs.objects {
        let kind = text(&object["kind"]);
        let group = text(&object["apiVersion"])
            .rsplit_once('/')
            .map_or("", |(g, _)| g);
        let namespace = text(&object["metadata"]["namespace"]);
        let name = text(&object["metadata"]["name"]);
        let role = kinds::lookup(group, kind)
            .map(|k| k.role)
            .filter(|r| r.replicates());
        let declared: Vec<(String, &str)> = ctx
            .policies
            .iter()
            .filter(|p| guards_for(&p.spec.rules))
            .flat_map(|p| p.spec.sinks.iter())
            .filter(|s| s.group == group && s.kinds.iter().any(|k| k == kind))
            .map(|s| {
                (
                    format!("sinks {} locationExpression", s.group),
                    s.location_expression.as_str(),
                )
            })
            .collect();
        if role.is_none() && declared.is_empty() {
            continue;
        }
        // Whose data: its own label, its namespace's region, and for Velero the namespaces
        // it copies.
        let own = object["metadata"]["labels"][REGION]
            .as_str()
            .map(str::to_owned)
            .or_else(|| region_of(namespace));
        let spec = match role {
            Some(Role::VeleroBackup) => Some(&object["spec"]),
            Some(Role::VeleroSchedule) => Some(&object["spec"]["template"]),
            _ => None,
        };
        let copies = spec.is_some_and(|spec| {
            let strings = |field: &str| -> Vec<&str> {
                spec[field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect()
            };
            let (included, excluded) =
                (strings("includedNamespaces"), strings("excludedNamespaces"));
            namespaces.iter().any(|(ns, region)| {
                region.as_deref() == Some(ctx.name.as_str())
                    && velero_includes(&included, &excluded, ns)
            })
        });
        if own.as_deref() != Some(ctx.name.as_str()) && !copies {
            continue;
        }
        let mut found: Vec<Destination> = match role {
            Some(role) => destinations(role, object, namespace, inventory as &dyn Referenced),
            None => Vec::new(),
        };
        for (field, expression) in declared {
            let located = SinkProgram::compile(expression)
                .and_then(|program| program.locations(&cel, object));
            match located {
                Ok(locations) => found.extend(locations.into_iter().map(|l| Destination {
                    field: field.clone(),
                    location: Ok(l),
                })),
                Err(why) => found.push(Destination {
                    field,
                    location: Err(format!("the destination is unknown: {why}")),
                }),
            }
        }
        let object_name = if namespace.is_empty() {
            format!("{kind} {name}")
        } else {
            format!("{kind} {namespace}/{name}")
        };
        if found.is_empty() {
            // A sink of the region's data that names nowhere: listed, never omitted.
            found.push(Destination {
                field: "destination".to_owned(),
                location: Err("no destination found in the input (the location it names is not among the files or the cluster's objects)".to_owned()),
            });
        }
        for destination in found {
            let flow = if destination.field.starts_with("volumeSnapshotLocation")
                || role == Some(Role::SnapshotLocation)
            {
                Flow::Vectors
            } else if destination.field.contains("externalClusters")
                || matches!(
                    role,
                    Some(Role::VolumeReplication | Role::VolumeGroupReplication) | None
                )
            {
                Flow::Replication
            } else {
                Flow::Backup
            };
            let (jurisdiction, location, within, status, reason) = match &destination.location {
                Ok(location) => {
                    let (jurisdiction, within) = ctx.place(location);
                    let home = ctx.region.spec.locations.iter().any(|l| l == location);
                    let reason = if home {
                        format!(
                            "{} stores in {location}, a location of region {}",
                            destination.field, ctx.name
                        )
                    } else {
                        format!(
                            "{} sends data to {location}, outside region {} ({})",
                            destination.field,
                            ctx.name,
                            ctx.region.spec.locations.join(", ")
                        )
                    };
                    (
                        jurisdiction,
                        Some(location.clone()),
                        within,
                        if home { Status::Ok } else { Status::Violation },
                        reason,
                    )
                }
                Err(why) => (
                    UNKNOWN.to_owned(),
                    None,
                    false,
                    Status::Unknown,
                    format!("{}: {why}", destination.field),
                ),
            };
            let mut guards = audit.clone();
            guards.extend(admission_guards(ctx, object));
            out.push(
                Draft::new(
                    flow,
                    object_name.clone(),
                    destination.field.clone(),
                    jurisdiction,
                    location,
                    within,
                    &ctx.classes,
                    guards,
                    status,
                    reason,
                )
                .subject(kind, namespace, name, Rule::ForbidCrossBorderReplication)
                .field(destination.field.clone()),
            );
        }
    }
}

/// The usage ledger (the operator scrapes token counters) and the budget totals that leave the
/// region in TokenBudget status.
fn usage_and_metadata(ctx: &Region<'_>, inputs: &Inputs, out: &mut Vec<Draft>) {
    let ns = &ctx.namespace;
    if ctx.object("Service", gateway::NAME).is_some() {
        let mut guards: Vec<Guard> = ctx
            .netpol(network::ALLOW_METRICS_SCRAPES)
            .into_iter()
            .collect();
        guards.push(Guard::new(
            "gateway-config",
            format!(
                "ConfigMap {ns}/{}: custom_prometheus_metadata_labels {}",
                gateway::NAME,
                gateway_config::USAGE_METADATA_LABELS.join(", ")
            ),
        ));
        out.push(Draft::new(
            Flow::Usage,
            "gateway and vLLM /metrics",
            "sovereign-operator usage ledger",
            CLUSTER,
            None,
            false,
            &[USAGE.to_owned()],
            guards,
            Status::Ok,
            "token counters per model, team and cost centre; the collector drops every end-user label",
        ));
    }
    let mut budgets: Vec<_> = inputs
        .budgets
        .iter()
        .filter(|b| {
            b.metadata.namespace.as_deref() == Some(ns.as_str())
                || b.spec.scope.regions.iter().any(|r| r == &ctx.name)
        })
        .collect();
    budgets.sort_by_key(|b| (b.metadata.namespace.clone(), b.metadata.name.clone()));
    for budget in budgets {
        out.push(Draft::new(
            Flow::Metadata,
            format!(
                "TokenBudget {}/{} status",
                budget.metadata.namespace.as_deref().unwrap_or_default(),
                budget.metadata.name.as_deref().unwrap_or_default()
            ),
            "finance report (sovereign-operator report, any kube context)",
            CLUSTER,
            None,
            false,
            &[BUDGET_TOTALS.to_owned()],
            vec![Guard::new(
                "chart-setting",
                "TokenBudget status: totals per team, cost centre and model only",
            )],
            Status::Ok,
            "aggregates only (spend and tokens): no prompt, completion or end-user leaves with them",
        ));
    }
}

/// The audit's findings on a path's objects make it a violation, with the finding's message.
fn apply_findings(ctx: &Region<'_>, findings: &[Finding], drafts: &mut [Draft]) {
    for draft in drafts.iter_mut() {
        for finding in findings {
            let hit = draft.subjects.iter().any(|(kind, ns, name, rule)| {
                *kind == finding.kind
                    && *ns == finding.namespace
                    && *name == finding.name
                    && *rule == finding.rule
            });
            let field_ok = draft
                .field
                .as_ref()
                .is_none_or(|f| finding.message.starts_with(f.as_str()));
            if !hit || !field_ok || finding.kind == "SovereignRegion" && finding.name != ctx.name {
                continue;
            }
            let policy = finding.policy.as_deref().unwrap_or("region rule");
            let note = format!("audit ({policy}): {}", finding.message);
            if draft.path.reason.contains(&finding.message) {
                continue;
            }
            if matches!(draft.path.status, Status::Ok | Status::Unguarded) {
                draft.path.status = Status::Violation;
                draft.path.reason = note;
            } else {
                draft.path.reason = format!("{}; {note}", draft.path.reason);
            }
        }
    }
}
