//! Label keys and values the whole system speaks, and the one helper that stamps them.

use std::collections::BTreeMap;

/// Home region of an object or namespace: the name of a `SovereignRegion`.
pub const REGION: &str = "sovereign.ai/region";
/// Data class carried by an object, e.g. `pii`, `special-category`, `financial`, `public`.
pub const DATA_CLASS: &str = "sovereign.ai/data-class";
/// Standard Kubernetes label naming the node location (cloud region) of a node.
pub const TOPOLOGY_REGION: &str = "topology.kubernetes.io/region";
/// Standard Kubernetes label naming the zone of a node.
pub const TOPOLOGY_ZONE: &str = "topology.kubernetes.io/zone";

/// `app.kubernetes.io/managed-by`.
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// `app.kubernetes.io/part-of`.
pub const PART_OF: &str = "app.kubernetes.io/part-of";
/// `app.kubernetes.io/component`.
pub const COMPONENT: &str = "app.kubernetes.io/component";
/// `app.kubernetes.io/name`.
pub const NAME: &str = "app.kubernetes.io/name";
/// `app.kubernetes.io/instance`.
pub const INSTANCE: &str = "app.kubernetes.io/instance";

/// Value of `app.kubernetes.io/managed-by` on everything the operator creates; also the
/// selector its watches and orphan clean-up use.
pub const MANAGER: &str = "sovereign-operator";
/// Value of `app.kubernetes.io/part-of` on everything the operator creates.
pub const PART_OF_VALUE: &str = "sovereign-ai-stack";

/// The labels every child object carries: managed-by, part-of, component, instance and the home
/// region. One helper so that selectors and clean-up can never drift from what was stamped.
pub fn managed_labels(region: &str, component: &str, instance: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_owned(), MANAGER.to_owned()),
        (PART_OF.to_owned(), PART_OF_VALUE.to_owned()),
        (COMPONENT.to_owned(), component.to_owned()),
        (INSTANCE.to_owned(), instance.to_owned()),
        (REGION.to_owned(), region.to_owned()),
    ])
}

/// Label selector (`key=value,…`) matching everything the operator manages.
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={MANAGER}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managed_labels_carry_region_and_component() {
        let labels = managed_labels("eu", "gateway", "eu-gateway");
        assert_eq!(labels[MANAGED_BY], "sovereign-operator");
        assert_eq!(labels[COMPONENT], "gateway");
        assert_eq!(labels[REGION], "eu");
        assert_eq!(
            managed_selector(),
            "app.kubernetes.io/managed-by=sovereign-operator"
        );
    }
}
