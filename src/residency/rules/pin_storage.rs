//! `pinStorage`: governed volumes are provisioned on one of the scope's storage classes — PVCs,
//! StatefulSet `volumeClaimTemplates`, generic ephemeral volumes of governed pods
//! (`volumes[].ephemeral.volumeClaimTemplate`, a PVC the pod's owner creates), PersistentVolumes
//! (a class of the scope, or a required node affinity that pins them inside), and the
//! volumes of a CloudNativePG Cluster (`spec.storage`, `spec.walStorage`,
//! `spec.tablespaces[].storage`: `storageClass`, else `pvcTemplate.storageClassName`, else the
//! cluster default, as CNPG resolves them).

use serde_json::{Value, json};

use crate::api::labels::TOPOLOGY_REGION;

use super::super::cel::{AdmissionContext, NEW, Subject, ratcheted, validation};
use super::Rule;
use super::pin_workloads::unpinned_reason;

/// Why a claim spec (`PersistentVolumeClaim.spec` or a `volumeClaimTemplates[].spec`) is not on
/// one of `classes`. A missing `storageClassName` means the cluster's default class, whose
/// location the policy cannot know, so it is refused too: say which class to set.
pub fn storage_reason(claim_spec: &Value, classes: &[String], scope: &str) -> Option<String> {
    if classes.is_empty() {
        return Some(format!(
            "{scope} declares no spec.storageClasses, so no volume of governed data can be \
             proven in-region; list the region's in-region storage classes and use one"
        ));
    }
    let wanted = classes.join(", ");
    match claim_spec["storageClassName"].as_str() {
        Some(class) if classes.iter().any(|c| c == class) => None,
        Some("") | None => Some(format!(
            "no storageClassName (the cluster default, whose location is unknown); set \
             storageClassName to one of {wanted}"
        )),
        Some(class) => Some(format!(
            "storageClassName {class} is not an in-region class of {scope}; use one of {wanted}"
        )),
    }
}

/// Why the generic ephemeral volumes of a pod spec are not in-region, one line per volume.
pub fn ephemeral_reasons(pod_spec: &Value, classes: &[String], scope: &str) -> Vec<String> {
    pod_spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["ephemeral"].is_object())
        .filter_map(|v| {
            let spec = &v["ephemeral"]["volumeClaimTemplate"]["spec"];
            storage_reason(spec, classes, scope).map(|reason| {
                format!(
                    "ephemeral volume {}: {reason}",
                    v["name"].as_str().unwrap_or_default()
                )
            })
        })
        .collect()
}

/// Why a PersistentVolume is not in-region: it is when its class is a scope class, or when its
/// required `spec.nodeAffinity` pins it to the scope's locations (local and zonal volumes).
pub fn volume_reason(
    volume: &Value,
    classes: &[String],
    locations: &[String],
    locations_text: &str,
    scope: &str,
) -> Option<String> {
    let spec = &volume["spec"];
    let class = spec["storageClassName"].as_str().unwrap_or_default();
    if classes.iter().any(|c| c == class) {
        return None;
    }
    let pinned = spec["nodeAffinity"]["required"].is_object()
        && unpinned_reason(
            &json!({"affinity": {"nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": spec["nodeAffinity"]["required"]
            }}}),
            locations,
            locations_text,
        )
        .is_none();
    if pinned {
        return None;
    }
    Some(format!(
        "the volume is neither on an in-region class of {scope} (storageClassName {}) nor pinned \
         by a required spec.nodeAffinity {TOPOLOGY_REGION} In [{locations_text}]; use one of {}",
        if class.is_empty() { "unset" } else { class },
        classes.join(", ")
    ))
}

/// Why the volumes of a CloudNativePG Cluster are not in-region, one line per volume.
pub fn cnpg_storage_reasons(cluster: &Value, classes: &[String], scope: &str) -> Vec<String> {
    let spec = &cluster["spec"];
    let mut volumes: Vec<(String, &Value)> = vec![("spec.storage".into(), &spec["storage"])];
    if spec["walStorage"].is_object() {
        volumes.push(("spec.walStorage".into(), &spec["walStorage"]));
    }
    for (index, tablespace) in spec["tablespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        volumes.push((
            format!("spec.tablespaces[{index}].storage"),
            &tablespace["storage"],
        ));
    }
    volumes
        .into_iter()
        .filter_map(|(field, storage)| {
            let class = storage["storageClass"]
                .as_str()
                .filter(|c| !c.is_empty())
                .or_else(|| storage["pvcTemplate"]["storageClassName"].as_str());
            storage_reason(&json!({"storageClassName": class}), classes, scope)
                .map(|reason| format!("{field}: {reason}"))
        })
        .collect()
}

/// CEL: claim spec `spec` uses one of subject `s`'s storage classes.
fn stored(s: Subject, spec: &str) -> String {
    format!(
        "has({spec}) && has({spec}.storageClassName) && {spec}.storageClassName in {}",
        s.var("storageClasses")
    )
}

/// CEL: the generic ephemeral volumes of subject `s`'s pod spec use its storage classes.
fn ephemeral_stored(s: Subject) -> String {
    let spec = s.var("podSpec");
    format!(
        "!has({spec}.volumes) || {spec}.volumes.all(v, !has(v.ephemeral) || (has(v.ephemeral.volumeClaimTemplate) && {}))",
        stored(s, "v.ephemeral.volumeClaimTemplate.spec")
    )
}

/// CEL message for a claim spec `c` that is not on a scope class.
fn claim_message(c: &str) -> String {
    format!(
        "(has({c}.storageClassName) && {c}.storageClassName != '' ? 'storageClassName ' + {c}.storageClassName + ' is not an in-region class of ' + variables.scope + '; use one of ' + variables.storageClasses.join(', ') : 'no storageClassName (the cluster default, whose location is unknown); set storageClassName to one of ' + variables.storageClasses.join(', '))"
    )
}

/// The admission validations of `pinStorage`: PVCs, StatefulSet volumeClaimTemplates and the
/// generic ephemeral volumes of pod-template kinds.
pub(crate) fn validations(ctx: &AdmissionContext<'_>) -> Vec<Value> {
    let cannot = ctx.cannot();
    let claim = ratcheted(|s| {
        format!(
            "request.kind.kind != 'PersistentVolumeClaim' || ({})",
            ctx.guard(s, stored(s, &format!("{}.spec", s.object)))
        )
    });
    let templates = ratcheted(|s| {
        let o = s.object;
        format!(
            "request.kind.kind != 'StatefulSet' || ({})",
            ctx.guard(
                s,
                format!(
                    "!has({o}.spec.volumeClaimTemplates) || {o}.spec.volumeClaimTemplates.all(c, {})",
                    stored(s, "c.spec")
                )
            )
        )
    });
    let ephemeral = ratcheted(|s| {
        let spec = s.var("podSpec");
        format!(
            "!variables.hasTemplate || !(has({spec}.volumes) && {spec}.volumes.exists(v, has(v.ephemeral))) || ({})",
            ctx.guard(s, ephemeral_stored(s))
        )
    });
    let none = format!(
        "{cannot}variables.storageClasses.size() == 0 ? variables.scope + ' declares no spec.storageClasses, so no volume of governed data can be proven in-region; list the region\\'s in-region storage classes and use one' : "
    );
    let claim_what = format!("({none}{})", claim_message("object.spec"));
    let templates_what = format!(
        "({none}object.spec.volumeClaimTemplates.filter(c, !({})).map(c, 'volumeClaimTemplates[' + c.metadata.name + ']: ' + {}).join('; '))",
        stored(NEW, "c.spec"),
        claim_message("c.spec")
    );
    let ephemeral_what = format!(
        "({none}variables.podSpec.volumes.filter(v, has(v.ephemeral) && !(has(v.ephemeral.volumeClaimTemplate) && {})).map(v, 'ephemeral volume ' + v.name + ': ' + (has(v.ephemeral.volumeClaimTemplate) && has(v.ephemeral.volumeClaimTemplate.spec) ? {} : 'no volumeClaimTemplate')).join('; '))",
        stored(NEW, "v.ephemeral.volumeClaimTemplate.spec"),
        claim_message("v.ephemeral.volumeClaimTemplate.spec")
    );
    let rule = Rule::PinStorage.as_str();
    vec![
        validation(ctx.policy, rule, claim, claim_what),
        validation(ctx.policy, rule, templates, templates_what),
        validation(ctx.policy, rule, ephemeral, ephemeral_what),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn storage_class_must_be_listed_and_present() {
        let classes = vec!["eu-regional-ssd".to_owned()];
        assert_eq!(
            storage_reason(
                &json!({"storageClassName": "eu-regional-ssd"}),
                &classes,
                "region eu"
            ),
            None
        );
        let missing = storage_reason(&json!({}), &classes, "region eu").expect("default class");
        assert!(missing.contains("set storageClassName"), "{missing}");
        assert!(
            storage_reason(&json!({"storageClassName": "gp3"}), &classes, "region eu").is_some()
        );
        assert!(storage_reason(&json!({"storageClassName": "x"}), &[], "region eu").is_some());
    }

    #[test]
    fn ephemeral_volumes_and_persistent_volumes() {
        let classes = vec!["eu-regional-ssd".to_owned()];
        let pod = json!({"volumes": [
            {"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {"storageClassName": "gp3"}}}},
            {"name": "ok", "ephemeral": {"volumeClaimTemplate": {"spec": {"storageClassName": "eu-regional-ssd"}}}},
            {"name": "tmp", "emptyDir": {}}
        ]});
        let reasons = ephemeral_reasons(&pod, &classes, "region eu");
        assert_eq!(reasons.len(), 1, "{reasons:?}");
        assert!(
            reasons[0].starts_with("ephemeral volume scratch"),
            "{reasons:?}"
        );
        let locations = vec!["fr-par".to_owned()];
        let local = json!({"spec": {"storageClassName": "local", "nodeAffinity": {"required": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": TOPOLOGY_REGION, "operator": "In", "values": ["fr-par"]}]}]}}}});
        assert_eq!(
            volume_reason(&local, &classes, &locations, "fr-par", "region eu"),
            None
        );
        let abroad = json!({"spec": {"storageClassName": "gp3"}});
        assert!(volume_reason(&abroad, &classes, &locations, "fr-par", "region eu").is_some());
    }
}
