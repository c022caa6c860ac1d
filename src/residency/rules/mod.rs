//! The residency rules, one module each: its Rust check (called by the
//! [`Engine`](super::Engine)), its CEL generator (called by the [admission
//! compiler](super::admission), for the rules one object decides) and its messages. [`RULES`]
//! is the one table that says which rule is enforced where.

pub mod cross_border_replication;
pub mod data_location;
pub mod inference_hosting;
pub mod observability_in_region;
pub mod pin_storage;
pub mod pin_workloads;

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::policy::{InferenceHosting, PolicyRules};

use super::cel::AdmissionContext;

/// A residency rule, as named in policies and violations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Rule {
    /// Governed objects sit in a namespace of their home region (or an allowed one).
    DataLocation,
    /// Governed pods are pinned to the scope's locations.
    PinWorkloads,
    /// Governed volumes use the scope's storage classes.
    PinStorage,
    /// Backup and replication sinks point inside.
    ForbidCrossBorderReplication,
    /// Backends that process governed data are hosted where the policy allows.
    InferenceHosting,
    /// Regions observe into in-region endpoints.
    ObservabilityInRegion,
}

impl Rule {
    /// Every rule, in the order of the policy's `rules`.
    pub const ALL: [Rule; 6] = [
        Rule::DataLocation,
        Rule::PinWorkloads,
        Rule::PinStorage,
        Rule::ForbidCrossBorderReplication,
        Rule::InferenceHosting,
        Rule::ObservabilityInRegion,
    ];

    /// The camelCase name used in policies and violations.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::DataLocation => "dataLocation",
            Rule::PinWorkloads => "pinWorkloads",
            Rule::PinStorage => "pinStorage",
            Rule::ForbidCrossBorderReplication => "forbidCrossBorderReplication",
            Rule::InferenceHosting => "inferenceHosting",
            Rule::ObservabilityInRegion => "observabilityInRegion",
        }
    }

    /// The rule called `name`, if any.
    pub fn from_name(name: &str) -> Option<Rule> {
        Rule::ALL.into_iter().find(|r| r.as_str() == name)
    }

    /// Whether a policy's `rules` switch this rule on.
    pub fn enabled(self, rules: &PolicyRules) -> bool {
        match self {
            Rule::DataLocation => rules.data_location,
            Rule::PinWorkloads => rules.pin_workloads,
            Rule::PinStorage => rules.pin_storage,
            Rule::ForbidCrossBorderReplication => rules.forbid_cross_border_replication,
            Rule::InferenceHosting => rules.inference_hosting != InferenceHosting::Off,
            Rule::ObservabilityInRegion => rules.observability_in_region,
        }
    }

    /// Where the rule is enforced.
    pub fn spec(self) -> &'static RuleSpec {
        RULES
            .iter()
            .find(|spec| spec.rule == self)
            .unwrap_or(&RULES[0])
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Generates a rule's admission validations for one policy.
pub type Generator = fn(&AdmissionContext<'_>) -> Vec<Value>;

/// Where a rule is enforced besides the audit and `check` (which apply every rule).
#[derive(Clone, Copy)]
pub enum Enforcement {
    /// Also by the API server: the generator writes its validations.
    Admission(Generator),
    /// Only by the audit and `check`, and why admission cannot decide it.
    AuditOnly(&'static str),
}

/// One row of [`RULES`].
pub struct RuleSpec {
    /// The rule.
    pub rule: Rule,
    /// Where it is enforced.
    pub admission: Enforcement,
}

impl RuleSpec {
    /// Whether the generated ValidatingAdmissionPolicy carries the rule.
    pub fn admitted(&self) -> bool {
        matches!(self.admission, Enforcement::Admission(_))
    }
}

/// Every rule and where it is enforced; the README's table is this one.
pub const RULES: [RuleSpec; 6] = [
    RuleSpec {
        rule: Rule::DataLocation,
        admission: Enforcement::Admission(data_location::validations),
    },
    RuleSpec {
        rule: Rule::PinWorkloads,
        admission: Enforcement::Admission(pin_workloads::validations),
    },
    RuleSpec {
        rule: Rule::PinStorage,
        admission: Enforcement::Admission(pin_storage::validations),
    },
    RuleSpec {
        rule: Rule::ForbidCrossBorderReplication,
        admission: Enforcement::AuditOnly(
            "a Backup's, a VolumeReplication's or a Cluster's destination is another object \
             (its BackupStorageLocation, class or ObjectStore), and declared sinks are user \
             CEL best kept out of the API server's hot path",
        ),
    },
    RuleSpec {
        rule: Rule::InferenceHosting,
        admission: Enforcement::AuditOnly(
            "it needs the backend's region and every policy's hosting rule together",
        ),
    },
    RuleSpec {
        rule: Rule::ObservabilityInRegion,
        admission: Enforcement::AuditOnly(
            "it judges a cluster-scoped SovereignRegion, not a governed object",
        ),
    },
];

/// The rules admission carries.
pub fn admitted() -> impl Iterator<Item = Rule> {
    RULES.iter().filter(|s| s.admitted()).map(|s| s.rule)
}
