//! `pinWorkloads`: where pods may run. The check works on raw pod specs
//! (`serde_json::Value`, so that any workload kind and any apiVersion can be judged without a
//! typed parse); the admission generator writes the same test in CEL.
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

use super::super::cel::{AdmissionContext, Subject, lit, ratcheted, validation};
use super::Rule;

/// A CloudNativePG Cluster's placement as a pod spec: CNPG copies `spec.affinity.nodeSelector`
/// and `spec.affinity.nodeAffinity` onto every instance pod (its pods do not carry the
/// Cluster's labels, so the Cluster itself is where its placement is judged).
pub fn cnpg_pod_spec(cluster: &Value) -> Value {
    let affinity = &cluster["spec"]["affinity"];
    let mut spec = serde_json::Map::new();
    if affinity["nodeSelector"].is_object() {
        spec.insert("nodeSelector".into(), affinity["nodeSelector"].clone());
    }
    if affinity["nodeAffinity"].is_object() {
        spec.insert(
            "affinity".into(),
            serde_json::json!({"nodeAffinity": affinity["nodeAffinity"]}),
        );
    }
    Value::Object(spec)
}

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

/// CEL: the pod spec of subject `s` is pinned to its locations ([`unpinned_reason`] is None).
fn pinned(s: Subject) -> String {
    let topo = lit(TOPOLOGY_REGION);
    let (spec, locations) = (s.var("podSpec"), s.var("locations"));
    let required =
        format!("{spec}.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution");
    format!(
        "(has({spec}.nodeSelector) && {topo} in {spec}.nodeSelector) ? \
         {spec}.nodeSelector[{topo}] in {locations} : \
         (has({spec}.affinity) && has({spec}.affinity.nodeAffinity) && \
         has({required}) && has({required}.nodeSelectorTerms) && \
         {required}.nodeSelectorTerms.size() > 0 && \
         {required}.nodeSelectorTerms.all(t, has(t.matchExpressions) && \
         t.matchExpressions.exists(e, e.key == {topo} && e.operator == 'In' && has(e.values) && \
         e.values.size() > 0 && e.values.all(v, v in {locations}))))"
    )
}

/// The admission validation of `pinWorkloads` (pod-template kinds only).
pub(crate) fn validations(ctx: &AdmissionContext<'_>) -> Vec<Value> {
    let topo = TOPOLOGY_REGION;
    let cannot = ctx.cannot();
    vec![validation(
        ctx.policy,
        Rule::PinWorkloads.as_str(),
        ratcheted(|s| format!("!variables.hasTemplate || ({})", ctx.guard(s, pinned(s)))),
        format!(
            "({cannot}variables.podSpecPath + ': ' + \
             ((has(variables.podSpec.nodeSelector) && {topo_lit} in variables.podSpec.nodeSelector) ? \
             'nodeSelector {topo}=' + variables.podSpec.nodeSelector[{topo_lit}] + ' is outside the allowed locations; set it to one of ' + variables.locations.join(', ') : \
             ((has(variables.podSpec.affinity) && has(variables.podSpec.affinity.nodeAffinity) && has(variables.podSpec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution) && has(variables.podSpec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms) && variables.podSpec.affinity.nodeAffinity.requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms.size() > 0) ? \
             'a required node affinity nodeSelectorTerm allows a location outside ' + variables.locations.join(', ') + ' or has no {topo} In expression (NotIn and Exists do not pin)' : \
             'pods may run outside ' + variables.locations.join(', ') + ': ' + \
             ((has(variables.podSpec.affinity) && has(variables.podSpec.affinity.nodeAffinity) && has(variables.podSpec.affinity.nodeAffinity.preferredDuringSchedulingIgnoredDuringExecution)) ? 'only a preferred node affinity, which does not pin' : 'no region nodeSelector or required node affinity')) + \
             '; add nodeSelector {topo}: <location> or a required node affinity {topo} In [' + variables.locations.join(', ') + '] to every nodeSelectorTerm') + \
             ' (' + variables.scope + ')')",
            topo_lit = lit(TOPOLOGY_REGION),
        ),
    )]
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
}
