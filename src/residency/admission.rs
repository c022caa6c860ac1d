//! The admission compiler: a ResidencyPolicy (plus the SovereignRegions) compiled into a
//! ValidatingAdmissionPolicy and its binding, so that the API server itself
//! refuses (Enforce) or warns about (Audit) what the offline [`Engine`](super::Engine) would
//! report — principle 4 of the design: one policy, the same verdict at every layer. Pure: no
//! client; the controller that applies the objects is separate.
//!
//! # Objects (both named `sovereign-residency-<policy>`, cluster-scoped)
//! - `ValidatingAdmissionPolicy`: the CEL, generated from the policy's spec (data classes,
//!   residency kind, rules, exempt namespaces) and the regions' facts. It must be regenerated
//!   when a SovereignRegion's locations or storage classes change.
//! - `ValidatingAdmissionPolicyBinding`: Enforce → `[Deny]`, Audit → `[Warn, Audit]`.
//!
//! The region facts are the VAP's first variable, `facts`, a CEL map literal with these keys
//! (values are strings, lists comma-joined, so the CEL looks them up with
//! `variables.facts[...]` and `.split(',')`):
//! - `regions`: region names; `namespaces`: the regions' stack namespaces (for messages);
//! - `region.<r>.locations`, `region.<r>.storageClasses`, `region.<r>.jurisdiction`,
//!   `region.<r>.namespace`;
//! - `namespace.<ns>.region`: the region whose stack namespace `<ns>` is — the fallback when
//!   the Namespace has no `sovereign.ai/region` label (the label itself is read from
//!   `namespaceObject`);
//! - AllowedJurisdictions policies only: `scope.regions`, `scope.locations`,
//!   `scope.storageClasses` (union over the regions whose jurisdiction is allowed) and
//!   `scope.description`.
//!
//! Why not a params ConfigMap (`paramKind`)? On kube-apiserver 1.36 the informer of a built-in
//! paramKind stops for good once no binding uses it for a moment (kubernetes/kubernetes#133827,
//! #130887; fix #141015 / backport #142150 not released): after a policy is deleted and
//! re-created, every matched write is denied with "no params found" until the API server
//! restarts — the e2e reproduced it. Facts compiled into the policy cannot go missing.
//!
//! # Admission vs audit
//! Admission sees one object at a time, so it carries the rules that one object (plus its
//! Namespace) decides, with the engine's semantics:
//! - `dataLocation` — home region = the object's `sovereign.ai/region` label, else its pod
//!   template's, else its namespace's (label, else stack namespace); it must be a declared
//!   region, and (HomeRegion) the namespace's region must be it, or (AllowedJurisdictions) both
//!   must be in scope;
//! - `pinWorkloads` — nodeSelector / every required nodeSelectorTerm pins to the scope's
//!   locations (Pod `spec`, workloads `spec.template.spec`, CronJob
//!   `spec.jobTemplate.spec.template.spec`);
//! - `pinStorage` — PVCs and StatefulSet `volumeClaimTemplates` use a scope storage class.
//!
//! Kinds matched: Pods, ReplicationControllers, PVCs, Secrets, ConfigMaps, Deployments,
//! StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs and the namespaced `sovereign.ai`
//! kinds (InferenceBackends, TokenBudgets: `dataLocation` only), on CREATE and UPDATE, only
//! when the object or its pod template carries one of the policy's data classes and is not
//! being deleted (removing a finalizer is never refused).
//!
//! UPDATEs are ratcheted per rule, like CRD validation ratcheting: a validation refuses an
//! UPDATE only if the new object breaks it and the old object (`oldObject`) did not — it was
//! governed by the policy and passed that same rule. An object that violated before its policy
//! existed can still be updated (a controller's annotation, a scale), an UPDATE cannot make a
//! compliant object non-compliant, and CREATE is judged exactly as the engine judges it. The
//! audit and `check` still report such objects: they remain violations. Each validation is
//! generated once per `Subject` (`object` with its variables, `oldObject` with the `old…`
//! copies), so the two verdicts come from the same code.
//!
//! Audit only (the operator's audit and the offline `check`): `forbidCrossBorderReplication`
//! (Velero BackupStorageLocation / Backup / Schedule, CloudNativePG, VolumeReplication and
//! declared `sinks` — Backups and VolumeReplications need another object, and the sink
//! expressions are user CEL best kept out of the API server's hot path), `inferenceHosting`
//! (backend hosting facts) and `observabilityInRegion` (a region's endpoints, not a governed
//! object), and the rules on cluster-scoped objects.

use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::Resource;
use serde_json::{Value, json};

use crate::api::labels::{
    COMPONENT, INSTANCE, MANAGED_BY, MANAGER, PART_OF, PART_OF_VALUE, REGION,
};
use crate::api::policy::{PolicyMode, ResidencyKind, ResidencyPolicy};
use crate::api::region::SovereignRegion;

use super::cel::{AdmissionContext, NEW, OLD, Subject, class_in, list, lit};
use super::engine::normalize_class;
use super::jurisdiction::is_within;
use super::kinds;
use super::rules::{Enforcement, RULES};

/// `app.kubernetes.io/component` of the generated objects.
pub const COMPONENT_VALUE: &str = "admission";

/// The pod template paths of the admitted kinds (from [`kinds::KINDS`]) and the kinds that
/// have each, as CEL list literals; the Pod itself (path `[]`) last.
fn template_paths() -> Vec<(&'static [&'static str], String)> {
    let mut paths = kinds::admitted_template_paths();
    paths.push(&[]);
    paths
        .into_iter()
        .map(|path| {
            let names: Vec<String> = kinds::admitted_with_template(path)
                .into_iter()
                .map(str::to_owned)
                .collect();
            (path, list(&names))
        })
        .collect()
}

/// CEL: `has()` of every prefix of `path` under `root` (`has(o.spec) && has(o.spec.template)`).
fn has_path(root: &str, path: &[&str]) -> String {
    let guards: Vec<String> = (1..=path.len())
        .map(|n| format!("has({root}.{})", path[..n].join(".")))
        .collect();
    if guards.is_empty() {
        "true".to_owned()
    } else {
        guards.join(" && ")
    }
}

/// `root.path` as CEL.
fn at(root: &str, path: &[&str]) -> String {
    if path.is_empty() {
        root.to_owned()
    } else {
        format!("{root}.{}", path.join("."))
    }
}

/// What one ResidencyPolicy compiles into.
#[derive(Clone, Debug, PartialEq)]
pub struct AdmissionObjects {
    /// The CEL rules.
    pub policy: ValidatingAdmissionPolicy,
    /// Where and how they apply.
    pub binding: ValidatingAdmissionPolicyBinding,
}

impl AdmissionObjects {
    /// Both objects as JSON documents, in the order to apply them (the policy first, so the
    /// binding never points at nothing).
    pub fn to_json(&self) -> Result<Vec<Value>, AdmissionError> {
        let json = |v: Result<Value, serde_json::Error>| {
            v.map_err(|e| AdmissionError::Serialize(e.to_string()))
        };
        Ok(vec![
            json(serde_json::to_value(&self.policy))?,
            json(serde_json::to_value(&self.binding))?,
        ])
    }
}

/// Why a policy cannot be compiled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AdmissionError {
    /// The policy has no name.
    #[error("ResidencyPolicy without metadata.name")]
    Unnamed,
    /// A region has no name.
    #[error("SovereignRegion without metadata.name")]
    UnnamedRegion,
    /// The generated object does not fit its type (a bug).
    #[error("generated admission object does not serialize: {0}")]
    Serialize(String),
}

/// `sovereign-residency-<policy>`: the name of both objects.
pub fn object_name(policy: &str) -> String {
    format!("sovereign-residency-{policy}")
}

/// CEL: the subject or its pod template carries a governed data class (for the new object, the
/// matchCondition).
fn governed_condition(s: Subject, classes: &[String]) -> String {
    let o = s.object;
    let classes = list(classes);
    let mut parts = vec![class_in(&format!("{o}.metadata.labels"), &[], &classes)];
    for (path, kinds) in template_paths() {
        if path.is_empty() {
            continue;
        }
        let mut metadata: Vec<&str> = path.to_vec();
        metadata.push("metadata");
        let guards: Vec<String> = (1..=metadata.len())
            .map(|n| at(o, &metadata[..n]))
            .collect();
        parts.push(format!(
            "(request.kind.kind in {kinds} && {})",
            class_in(&format!("{}.labels", at(o, &metadata)), &guards, &classes)
        ));
    }
    parts.join(" || ")
}

/// The per-object variables of subject `s`, in evaluation order: what it carries (labels, pod
/// template, pod spec), its home region and the locations and storage classes allowed to it.
fn subject_variables(s: Subject, allowed: bool) -> Vec<(String, String)> {
    let o = s.object;
    let region = lit(REGION);
    let split = |key: &str| format!("variables.facts[{key}].split(',').filter(x, x != '')");
    let (labels, template, template_labels, home, home_known) = (
        s.var("labels"),
        s.var("template"),
        s.var("templateLabels"),
        s.var("home"),
        s.var("homeKnown"),
    );
    let mut out = vec![
        (
            "labels",
            format!("has({o}.metadata.labels) ? {o}.metadata.labels : {{}}"),
        ),
        ("template", {
            // Innermost: no template.
            let mut expression = "{}".to_owned();
            for (path, kinds) in template_paths().into_iter().rev() {
                expression = format!(
                    "(request.kind.kind in {kinds} && {} ? {} : {expression})",
                    has_path(o, path),
                    at(o, path)
                );
            }
            expression
        }),
        (
            "templateLabels",
            format!(
                "has({template}.metadata) && has({template}.metadata.labels) ? {template}.metadata.labels : {{}}"
            ),
        ),
        (
            "podSpec",
            format!("has({template}.spec) ? {template}.spec : {{}}"),
        ),
        (
            "home",
            format!(
                "{region} in {labels} ? {labels}[{region}] : \
                 ({region} in {template_labels} ? {template_labels}[{region}] : variables.namespaceRegion)"
            ),
        ),
        ("homeKnown", format!("{home} in variables.regions")),
    ];
    if allowed {
        out.extend([
            ("locations", split("'scope.locations'")),
            ("storageClasses", split("'scope.storageClasses'")),
        ]);
    } else {
        out.extend([
            (
                "locations",
                format!(
                    "{home_known} ? {} : []",
                    split(&format!("'region.' + {home} + '.locations'"))
                ),
            ),
            (
                "storageClasses",
                format!(
                    "{home_known} ? {} : []",
                    split(&format!("'region.' + {home} + '.storageClasses'"))
                ),
            ),
        ]);
    }
    out.into_iter().map(|(n, e)| (s.name(n), e)).collect()
}

/// The VAP `variables`, in evaluation order (later ones refer to earlier ones): the facts and
/// what does not depend on the object's content, the new object's variables, then the old
/// object's (`oldGoverned` first: the others are only read when it holds).
fn variables(
    allowed: bool,
    classes: &[String],
    facts: &BTreeMap<String, String>,
) -> Vec<(String, String)> {
    let region = lit(REGION);
    let paths = template_paths();
    let template_kinds: Vec<String> = kinds::admitted()
        .filter(|k| k.template.is_some())
        .map(|k| k.kind.to_owned())
        .collect();
    let mut pod_spec_path = "''".to_owned();
    for (path, kinds) in paths.iter().rev() {
        let mut spec: Vec<&str> = path.to_vec();
        spec.push("spec");
        pod_spec_path = format!(
            "(request.kind.kind in {kinds} ? {} : {pod_spec_path})",
            lit(&spec.join("."))
        );
    }
    let split = |key: &str| format!("variables.facts[{key}].split(',').filter(x, x != '')");
    let facts = format!(
        "{{{}}}",
        facts
            .iter()
            .map(|(k, v)| format!("{}: {}", lit(k), lit(v)))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut out: Vec<(String, String)> = vec![
        ("facts".to_owned(), facts),
        (
            "hasTemplate".to_owned(),
            format!("request.kind.kind in {}", list(&template_kinds)),
        ),
        ("podSpecPath".to_owned(), pod_spec_path),
        ("regions".to_owned(), split("'regions'")),
        (
            // The namespace cannot change on UPDATE: one value serves both subjects. A region's
            // stack namespace is that region's whatever its label says, as in the engine.
            "namespaceRegion".to_owned(),
            format!(
                "'namespace.' + request.namespace + '.region' in variables.facts ? variables.facts['namespace.' + request.namespace + '.region'] : \
                 (namespaceObject != null && has(namespaceObject.metadata.labels) && {region} in namespaceObject.metadata.labels ? namespaceObject.metadata.labels[{region}] : '')"
            ),
        ),
        (
            "name".to_owned(),
            "(has(object.metadata.namespace) ? object.metadata.namespace : request.namespace) + '/' + (has(object.metadata.name) ? object.metadata.name : request.name)".to_owned(),
        ),
    ];
    if allowed {
        out.push(("scopeRegions".to_owned(), split("'scope.regions'")));
    }
    out.extend(subject_variables(NEW, allowed));
    out.push((
        "scope".to_owned(),
        if allowed {
            "variables.facts['scope.description']".to_owned()
        } else {
            "'region ' + variables.home".to_owned()
        },
    ));
    // Whether the object was subject to this policy before the UPDATE: one that only now gets
    // a governed class has no grace.
    out.push((
        OLD.name("governed"),
        format!(
            "request.operation == 'UPDATE' && oldObject != null && ({})",
            governed_condition(OLD, classes)
        ),
    ));
    out.extend(subject_variables(OLD, allowed));
    out
}

/// The metadata of a generated object: managed labels and, when the policy has a uid, an
/// owner reference to it (the API server then deletes the objects with the policy).
fn meta(policy: &ResidencyPolicy, name: &str) -> ObjectMeta {
    let policy_name = policy.metadata.name.clone().unwrap_or_default();
    let labels = BTreeMap::from([
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (PART_OF.to_owned(), PART_OF_VALUE.to_owned()),
        (COMPONENT.to_owned(), COMPONENT_VALUE.to_owned()),
        (INSTANCE.to_owned(), policy_name.clone()),
    ]);
    let owner = policy.metadata.uid.clone().map(|uid| OwnerReference {
        api_version: ResidencyPolicy::api_version(&()).into_owned(),
        kind: ResidencyPolicy::kind(&()).into_owned(),
        name: policy_name,
        uid,
        controller: Some(true),
        block_owner_deletion: Some(true),
    });
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(labels),
        owner_references: owner.map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// The region facts for `policy` and `regions` (the `facts` variable).
pub fn facts(
    policy: &ResidencyPolicy,
    regions: &[SovereignRegion],
) -> Result<BTreeMap<String, String>, AdmissionError> {
    let mut data = BTreeMap::new();
    let mut names = Vec::new();
    let mut namespaces = Vec::new();
    let mut scope_regions = Vec::new();
    let mut scope_locations: Vec<String> = Vec::new();
    let mut scope_classes: Vec<String> = Vec::new();
    let allowed = &policy.spec.residency.allowed_jurisdictions;
    for region in regions {
        let name = region
            .metadata
            .name
            .clone()
            .ok_or(AdmissionError::UnnamedRegion)?;
        let namespace = region.stack_namespace();
        data.insert(
            format!("region.{name}.locations"),
            region.spec.locations.join(","),
        );
        data.insert(
            format!("region.{name}.storageClasses"),
            region.spec.storage_classes.join(","),
        );
        data.insert(
            format!("region.{name}.jurisdiction"),
            region.spec.jurisdiction.clone(),
        );
        data.insert(format!("region.{name}.namespace"), namespace.clone());
        data.insert(format!("namespace.{namespace}.region"), name.clone());
        if allowed
            .iter()
            .any(|j| is_within(&region.spec.jurisdiction, j))
        {
            scope_regions.push(name.clone());
            for l in &region.spec.locations {
                if !scope_locations.contains(l) {
                    scope_locations.push(l.clone());
                }
            }
            for c in &region.spec.storage_classes {
                if !scope_classes.contains(c) {
                    scope_classes.push(c.clone());
                }
            }
        }
        names.push(name);
        namespaces.push(namespace);
    }
    data.insert("regions".to_owned(), names.join(","));
    data.insert("namespaces".to_owned(), namespaces.join(","));
    if policy.spec.residency.kind == ResidencyKind::AllowedJurisdictions {
        data.insert("scope.regions".to_owned(), scope_regions.join(","));
        data.insert("scope.locations".to_owned(), scope_locations.join(","));
        data.insert("scope.storageClasses".to_owned(), scope_classes.join(","));
        data.insert(
            "scope.description".to_owned(),
            format!("jurisdictions {}", allowed.join(", ")),
        );
    }
    Ok(data)
}

/// The validations of `policy`: each admission-enforced rule of [`RULES`] writes its own.
fn validations(policy: &ResidencyPolicy, name: &str) -> Vec<Value> {
    let context = AdmissionContext {
        policy: name,
        rules: &policy.spec.rules,
        allowed: policy.spec.residency.kind == ResidencyKind::AllowedJurisdictions,
    };
    RULES
        .iter()
        .filter(|spec| spec.rule.enabled(&policy.spec.rules))
        .filter_map(|spec| match spec.admission {
            Enforcement::Admission(generate) => Some(generate(&context)),
            Enforcement::AuditOnly(_) => None,
        })
        .flatten()
        .collect()
}

/// Compiles `policy` against `regions` into its admission objects.
pub fn compile(
    policy: &ResidencyPolicy,
    regions: &[SovereignRegion],
) -> Result<AdmissionObjects, AdmissionError> {
    let policy_name = policy
        .metadata
        .name
        .clone()
        .ok_or(AdmissionError::Unnamed)?;
    let name = object_name(&policy_name);
    let allowed = policy.spec.residency.kind == ResidencyKind::AllowedJurisdictions;
    let classes: Vec<String> = policy
        .spec
        .data_classes
        .iter()
        .map(|c| normalize_class(c))
        .collect();
    let ops = json!(["CREATE", "UPDATE"]);
    // One rule per API group, from the kinds table.
    let mut groups: Vec<(&str, &str, Vec<&str>)> = Vec::new();
    for kind in kinds::admitted() {
        match groups.iter_mut().find(|(g, _, _)| *g == kind.group) {
            Some((_, _, resources)) => resources.push(kind.plural),
            None => groups.push((kind.group, kind.version, vec![kind.plural])),
        }
    }
    let resource_rules: Vec<Value> = groups
        .into_iter()
        .map(|(group, version, resources)| {
            // Our own group at any version: a new version must not slip past admission.
            let versions = if group == "sovereign.ai" {
                "*"
            } else {
                version
            };
            json!({"apiGroups": [group], "apiVersions": [versions], "operations": ops,
                   "resources": resources, "scope": "Namespaced"})
        })
        .collect();
    let mut match_resources = json!({
        "resourceRules": resource_rules,
        "matchPolicy": "Equivalent",
    });
    if !policy.spec.exempt_namespaces.is_empty() {
        match_resources["namespaceSelector"] = json!({"matchExpressions": [{
            "key": "kubernetes.io/metadata.name",
            "operator": "NotIn",
            "values": policy.spec.exempt_namespaces,
        }]});
    }
    let vap = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": meta(policy, &name),
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": match_resources,
            "matchConditions": [
                {
                    "name": "governed",
                    "expression": governed_condition(NEW, &classes),
                },
                // An object being deleted only loses finalizers: refusing that update would
                // leave a violating object stuck in deletion rather than gone.
                {
                    "name": "not-being-deleted",
                    "expression": "!has(object.metadata.deletionTimestamp)",
                },
            ],
            "variables": variables(allowed, &classes, &facts(policy, regions)?)
                .into_iter()
                .map(|(name, expression)| json!({"name": name, "expression": expression}))
                .collect::<Vec<_>>(),
            "validations": validations(policy, &policy_name),
        }
    });
    let actions = match policy.spec.mode {
        PolicyMode::Enforce => json!(["Deny"]),
        PolicyMode::Audit => json!(["Warn", "Audit"]),
    };
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": meta(policy, &name),
        "spec": {
            "policyName": name,
            "validationActions": actions,
        }
    });
    Ok(AdmissionObjects {
        policy: typed(vap)?,
        binding: typed(binding)?,
    })
}

fn typed<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, AdmissionError> {
    serde_json::from_value(value).map_err(|e| AdmissionError::Serialize(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest;
    use std::path::PathBuf;

    fn example() -> (Vec<SovereignRegion>, Vec<ResidencyPolicy>) {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy/examples/eu-india");
        let documents = manifest::read_paths(&[path]).expect("example");
        let resources = manifest::classify(documents).expect("typed");
        (resources.regions, resources.policies)
    }

    #[test]
    fn example_policies_compile_to_named_bound_objects() {
        let (regions, policies) = example();
        assert_eq!(policies.len(), 2);
        for policy in &policies {
            let objects = compile(policy, &regions).expect("compiles");
            let name = object_name(policy.metadata.name.as_deref().unwrap());
            assert_eq!(objects.policy.metadata.name.as_deref(), Some(name.as_str()));
            assert_eq!(
                objects.binding.metadata.name.as_deref(),
                Some(name.as_str())
            );
            let binding = objects.binding.spec.as_ref().unwrap();
            assert_eq!(binding.policy_name.as_deref(), Some(name.as_str()));
            assert_eq!(
                binding.validation_actions.as_deref(),
                Some(&["Deny".to_owned()][..])
            );
            assert!(binding.param_ref.is_none());
            let spec = objects.policy.spec.as_ref().unwrap();
            assert_eq!(spec.failure_policy.as_deref(), Some("Fail"));
            let selector = spec
                .match_constraints
                .as_ref()
                .unwrap()
                .namespace_selector
                .as_ref()
                .unwrap();
            let expression = &selector.match_expressions.as_ref().unwrap()[0];
            assert_eq!(expression.operator, "NotIn");
            assert_eq!(
                expression.values.as_deref(),
                Some(&["kube-system".to_owned()][..])
            );
            let rules: Vec<_> = spec
                .validations
                .iter()
                .flatten()
                .map(|v| v.message.clone().unwrap_or_default())
                .collect();
            assert_eq!(
                rules.len(),
                5,
                "dataLocation, pinWorkloads, pinStorage x3 (claims, templates, ephemeral)"
            );
            let labels = objects.policy.metadata.labels.as_ref().unwrap();
            assert_eq!(labels[MANAGED_BY], MANAGER);
            assert_eq!(labels[COMPONENT], COMPONENT_VALUE);
            assert!(spec.param_kind.is_none());
            let variables = spec.variables.as_ref().unwrap();
            assert_eq!(variables[0].name, "facts");
            assert!(variables[0].expression.contains(r#""regions": "eu,in""#));
            let data = facts(policy, &regions).unwrap();
            assert_eq!(data["regions"], "eu,in");
            assert_eq!(
                data["region.eu.locations"],
                "europe-west9,eu-central-1,fr-par"
            );
            assert_eq!(data["region.in.storageClasses"], "in-regional-ssd");
            assert_eq!(data["namespace.sovereign-in.region"], "in");
            assert!(!data.contains_key("scope.regions"));
            assert_eq!(objects.to_json().unwrap().len(), 2);
        }
    }

    #[test]
    fn audit_allowed_jurisdictions_warns_and_carries_its_scope() {
        let (regions, _) = example();
        let policy: ResidencyPolicy = serde_json::from_value(json!({
            "apiVersion": "sovereign.ai/v1alpha1", "kind": "ResidencyPolicy",
            "metadata": {"name": "financial", "uid": "u-1"},
            "spec": {"mode": "Audit", "dataClasses": ["financial"],
                     "residency": {"kind": "AllowedJurisdictions", "allowedJurisdictions": ["EU"]},
                     "rules": {"pinStorage": false}}
        }))
        .unwrap();
        let objects = compile(&policy, &regions).unwrap();
        let binding = objects.binding.spec.as_ref().unwrap();
        assert_eq!(
            binding.validation_actions.as_deref(),
            Some(&["Warn".to_owned(), "Audit".to_owned()][..])
        );
        let data = facts(&policy, &regions).unwrap();
        assert_eq!(data["scope.regions"], "eu");
        assert_eq!(data["scope.storageClasses"], "eu-regional-ssd");
        let spec = objects.policy.spec.as_ref().unwrap();
        assert!(
            spec.match_constraints
                .as_ref()
                .unwrap()
                .namespace_selector
                .is_none()
        );
        assert_eq!(
            spec.validations.as_ref().unwrap().len(),
            2,
            "pinStorage is off: dataLocation and pinWorkloads"
        );
        let owner = &objects.binding.metadata.owner_references.as_ref().unwrap()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str()),
            ("ResidencyPolicy", "u-1")
        );
        assert!(objects.policy.metadata.owner_references.is_some());
    }
}
