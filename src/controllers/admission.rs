//! The admission half of the ResidencyPolicy controller: the policy compiled for the API
//! server (a ValidatingAdmissionPolicy and its binding) and the `Enforcing` condition that
//! reports it. [`plan`] and [`enforcing`] are pure and unit-tested; [`install`] applies.

use super::{Context, Error};
use crate::api::conditions::{self, DesiredCondition, Status};
use crate::api::policy::{PolicyMode, ResidencyPolicy};
use crate::api::region::SovereignRegion;
use crate::render::Child;
use crate::residency::admission;

/// What to install for one ResidencyPolicy.
#[derive(Clone, Debug)]
pub struct Plan {
    /// The objects, in apply order: the policy first, so the binding never points at nothing.
    pub children: Vec<Child>,
    /// The names of the installed ValidatingAdmissionPolicies, or why the policy cannot be
    /// compiled (reported in `Enforcing`, not retried).
    pub outcome: Result<Vec<String>, String>,
}

/// Compiles `policy` against `regions`.
pub fn plan(policy: &ResidencyPolicy, regions: &[SovereignRegion]) -> Plan {
    match admission::compile(policy, regions) {
        Ok(objects) => {
            let name = objects.policy.metadata.name.clone().unwrap_or_default();
            Plan {
                children: vec![Child::from(objects.policy), Child::from(objects.binding)],
                outcome: Ok(vec![name]),
            }
        }
        Err(error) => Plan {
            children: Vec::new(),
            outcome: Err(error.to_string()),
        },
    }
}

/// The `Enforcing` condition of a policy in `mode` after `outcome`.
pub fn enforcing(
    mode: PolicyMode,
    outcome: &Result<Vec<String>, String>,
) -> DesiredCondition<'static> {
    match (outcome, mode) {
        (Ok(installed), PolicyMode::Enforce) => DesiredCondition {
            type_: conditions::ENFORCING,
            status: Status::True,
            reason: "AdmissionInstalled",
            message: format!(
                "the API server denies violating objects ({})",
                installed.join(", ")
            ),
        },
        (Ok(installed), PolicyMode::Audit) => DesiredCondition {
            type_: conditions::ENFORCING,
            status: Status::False,
            reason: "AuditMode",
            message: format!(
                "the API server warns about violating objects and audits them ({})",
                installed.join(", ")
            ),
        },
        (Err(message), _) => DesiredCondition {
            type_: conditions::ENFORCING,
            status: Status::False,
            reason: "AdmissionNotCompiled",
            message: message.clone(),
        },
    }
}

/// Applies the plan's objects as `manager` (only those that changed are written).
pub async fn install(ctx: &Context, manager: &'static str, plan: &Plan) -> Result<(), Error> {
    let applier = ctx.applier(manager);
    for child in &plan.children {
        applier.apply(child).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixture;
    use super::*;

    const POLICY: &str = "
apiVersion: sovereign.ai/v1alpha1
kind: ResidencyPolicy
metadata: {name: pii}
spec:
  dataClasses: [pii]
";

    fn regions() -> Vec<SovereignRegion> {
        vec![fixture(
            "
apiVersion: sovereign.ai/v1alpha1
kind: SovereignRegion
metadata: {name: eu}
spec: {jurisdiction: EU, locations: [europe-west9]}",
        )]
    }

    #[test]
    fn a_policy_compiles_to_its_admission_policy_then_its_binding() {
        let policy: ResidencyPolicy = fixture(POLICY);
        let plan = plan(&policy, &regions());
        let kinds: Vec<&str> = plan.children.iter().map(|c| c.kind_and_meta().0).collect();
        assert_eq!(
            kinds,
            [
                "ValidatingAdmissionPolicy",
                "ValidatingAdmissionPolicyBinding"
            ]
        );
        let installed = plan.outcome.clone().expect("compiles");
        assert_eq!(installed.len(), 1);

        let enforce = enforcing(PolicyMode::Enforce, &plan.outcome);
        assert_eq!(
            (enforce.status, enforce.reason),
            (Status::True, "AdmissionInstalled")
        );
        assert!(enforce.message.contains(&installed[0]));
        let audit = enforcing(PolicyMode::Audit, &plan.outcome);
        assert_eq!((audit.status, audit.reason), (Status::False, "AuditMode"));
    }

    #[test]
    fn a_policy_that_does_not_compile_installs_nothing_and_says_why() {
        let mut policy: ResidencyPolicy = fixture(POLICY);
        // Unnamed: what compile refuses before anything else.
        policy.metadata.name = None;
        let plan = plan(&policy, &regions());
        assert!(plan.children.is_empty());
        let condition = enforcing(PolicyMode::Enforce, &plan.outcome);
        assert_eq!(
            (condition.status, condition.reason),
            (Status::False, "AdmissionNotCompiled")
        );
        assert!(!condition.message.is_empty());
    }
}
