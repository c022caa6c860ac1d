//! Where pods may run and where volumes are provisioned: the `pinWorkloads` and `pinStorage`
//! checks on raw pod specs and claim specs (`serde_json::Value`, so that any workload kind and
//! any apiVersion can be judged without a typed parse).
//!
//! A pod is *pinned* to a set of locations when the scheduler cannot place it anywhere else:
//! - its `nodeSelector` sets `topology.kubernetes.io/region` to one of the locations, or
//! - its required node affinity has at least one `nodeSelectorTerms` entry and *every* term
//!   (terms are ORed by the scheduler) holds a `topology.kubernetes.io/region In [...]`
//!   expression whose values are all inside.
//!
//! Preferred affinity is a wish, not a constraint; `NotIn`, `Exists` and `DoesNotExist` leave
//! every other location open; so none of them pins.

use serde_json::Value;

use crate::api::labels::TOPOLOGY_REGION;

/// Why a pod spec is not pinned to the allowed locations: a sentence that says what is wrong and
/// what to change. `allowed` is the human list of locations (e.g. `europe-west9, fr-par`).
pub fn unpinned_reason(pod_spec: &Value, locations: &[String], allowed: &str) -> Option<String> {
    let inside = |value: &str| locations.iter().any(|l| l == value);
    // nodeSelector and node affinity are ANDed by the scheduler: an in-region nodeSelector pins
    // on its own, whatever the affinity says.
    if let Some(selected) = pod_spec["nodeSelector"][TOPOLOGY_REGION].as_str() {
        if inside(selected) {
            return None;
        }
        return Some(format!(
            "nodeSelector {TOPOLOGY_REGION}={selected} is outside the allowed locations; \
             set it to one of {allowed}"
        ));
    }
    let affinity = &pod_spec["affinity"]["nodeAffinity"];
    let required = &affinity["requiredDuringSchedulingIgnoredDuringExecution"];
    let terms = required["nodeSelectorTerms"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let fix = format!(
        "add nodeSelector {TOPOLOGY_REGION}: <location> or a required node affinity \
         {TOPOLOGY_REGION} In [{allowed}] to every nodeSelectorTerm"
    );
    if terms.is_empty() {
        let hint = if affinity
            .get("preferredDuringSchedulingIgnoredDuringExecution")
            .is_some()
        {
            "only a preferred node affinity, which does not pin"
        } else {
            "no region nodeSelector or required node affinity"
        };
        return Some(format!("pods may run outside {allowed}: {hint}; {fix}"));
    }
    for (index, term) in terms.iter().enumerate() {
        let mut outside: Option<&str> = None;
        let pinned = term["matchExpressions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["key"] == TOPOLOGY_REGION && e["operator"] == "In")
            .any(|expression| {
                let values = expression["values"]
                    .as_array()
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                let stray = values
                    .iter()
                    .find(|v| !v.as_str().is_some_and(&inside))
                    .and_then(Value::as_str);
                if stray.is_some() {
                    outside = outside.or(stray);
                }
                !values.is_empty() && stray.is_none()
            });
        if !pinned {
            let detail = match outside {
                Some(value) => format!("allows {value}, outside {allowed}"),
                None => {
                    format!("has no {TOPOLOGY_REGION} In expression (NotIn and Exists do not pin)")
                }
            };
            return Some(format!(
                "required node affinity nodeSelectorTerms[{index}] {detail}; {fix}"
            ));
        }
    }
    None
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn locations() -> Vec<String> {
        vec!["europe-west9".into(), "fr-par".into()]
    }

    fn check(spec: Value) -> Option<String> {
        unpinned_reason(&spec, &locations(), "europe-west9, fr-par")
    }

    fn term(operator: &str, values: &[&str]) -> Value {
        json!({"matchExpressions": [{"key": TOPOLOGY_REGION, "operator": operator, "values": values}]})
    }

    fn required(terms: Vec<Value>) -> Value {
        json!({"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}}}})
    }

    #[test]
    fn node_selector_inside_pins_and_outside_is_named() {
        assert_eq!(
            check(json!({"nodeSelector": {TOPOLOGY_REGION: "fr-par"}})),
            None
        );
        let reason =
            check(json!({"nodeSelector": {TOPOLOGY_REGION: "us-east-1"}})).expect("outside");
        assert!(reason.contains("us-east-1"), "{reason}");
    }

    #[test]
    fn every_term_must_pin() {
        assert_eq!(check(required(vec![term("In", &["fr-par"])])), None);
        assert_eq!(
            check(required(vec![
                term("In", &["fr-par"]),
                term("In", &["europe-west9"])
            ])),
            None
        );
        let reason = check(required(vec![
            term("In", &["fr-par"]),
            term("In", &["us-east-1"]),
        ]))
        .expect("second term escapes");
        assert!(reason.contains("nodeSelectorTerms[1]"), "{reason}");
        assert!(reason.contains("us-east-1"), "{reason}");
    }

    #[test]
    fn in_with_one_outside_value_does_not_pin() {
        let reason = check(required(vec![term("In", &["fr-par", "us-east-1"])])).expect("escapes");
        assert!(reason.contains("allows us-east-1"), "{reason}");
    }

    #[test]
    fn not_in_exists_empty_and_preferred_do_not_pin() {
        assert!(check(required(vec![term("NotIn", &["us-east-1"])])).is_some());
        assert!(check(required(vec![term("Exists", &[])])).is_some());
        assert!(check(required(vec![term("In", &[])])).is_some());
        assert!(check(required(vec![])).is_some());
        let preferred = json!({"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 100, "preference": term("In", &["fr-par"])}
        ]}}});
        let reason = check(preferred).expect("preferred only");
        assert!(reason.contains("preferred"), "{reason}");
        assert!(check(json!({})).is_some());
    }

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
}
