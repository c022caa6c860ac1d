//! `dataLocation`: a governed object sits in a namespace of its home region (HomeRegion), or of
//! a region whose jurisdiction the policy allows (AllowedJurisdictions), and has a home region
//! at all. Also the conflicts a region label can hide: an owner and its pod template naming
//! different regions, and a region's stack namespace labelled with another region.
//!
//! Trust: a SovereignRegion's `namespace` is authoritative (regions come from `--policies` /
//! the cluster's SovereignRegions, not from the judged input); a Namespace's
//! `sovereign.ai/region` label only places namespaces that are no region's stack namespace.

use crate::api::labels::REGION;

use super::super::cel::{AdmissionContext, Subject, ratcheted, validation};
use super::super::engine::{RegionInfo, RegionRef, Scope};
use super::Rule;

/// Why a governed object is not where its policy wants it, if it is not. `allowed` is the
/// scope of an AllowedJurisdictions policy (None for HomeRegion), `no_home` the message for an
/// unknown home region.
pub(crate) fn location_problem(
    regions: &[RegionInfo],
    allowed: Option<&Scope>,
    namespace: Option<&str>,
    home: RegionRef<'_>,
    namespace_region: RegionRef<'_>,
    no_home: impl FnOnce(RegionRef<'_>) -> String,
) -> Option<String> {
    let region = |i: usize| &regions[i];
    let home = match home {
        RegionRef::Known(i) => i,
        // An AllowedJurisdictions policy can place an unlabelled object by its namespace
        // alone; that namespace is then its home, so Missing here means both are unknown.
        other => return Some(no_home(other)),
    };
    match allowed {
        None => {
            let namespace = namespace?;
            match namespace_region {
                RegionRef::Known(n) if n == home => None,
                RegionRef::Known(n) => Some(format!(
                    "its home region is {} but namespace {namespace} belongs to region {}; \
                     move it to {}",
                    region(home).name,
                    region(n).name,
                    region(home).namespace
                )),
                _ => Some(format!(
                    "its home region is {} but namespace {namespace} belongs to no region; \
                     move it to {} or label namespace {namespace} {REGION}={}",
                    region(home).name,
                    region(home).namespace,
                    region(home).name
                )),
            }
        }
        Some(scope) => {
            let outside = |i: usize| {
                format!(
                    "region {} (jurisdiction {}) is outside {}",
                    region(i).name,
                    region(i).jurisdiction,
                    scope.description
                )
            };
            if !scope.regions.contains(&home) {
                return Some(format!(
                    "its home {}; keep it in a region of those jurisdictions",
                    outside(home)
                ));
            }
            let namespace = namespace?;
            match namespace_region {
                RegionRef::Known(n) if scope.regions.contains(&n) => None,
                RegionRef::Known(n) => Some(format!(
                    "namespace {namespace} belongs to {}; move it to a namespace of {}",
                    outside(n),
                    scope.description
                )),
                _ => Some(format!(
                    "namespace {namespace} belongs to no region; move it to {} or label \
                     namespace {namespace} {REGION}={}",
                    region(home).namespace,
                    region(home).name
                )),
            }
        }
    }
}

/// An object whose own `sovereign.ai/region` label and its pod template's differ: which one
/// is the home region is anybody's guess (the pods carry the template's, the owner the
/// other), so neither is believed.
pub(crate) fn template_conflict(own: Option<&str>, template: Option<&str>) -> Option<String> {
    match (own, template) {
        (Some(own), Some(template)) if own != template => Some(format!(
            "it is labelled {REGION}={own} but its pod template {REGION}={template}; give both \
             the same region"
        )),
        _ => None,
    }
}

/// A region's stack namespace labelled with another region: the label would move every
/// unlabelled object of the stack to that region.
pub(crate) fn stack_namespace_conflict(
    namespace: &str,
    label: &str,
    stack_of: &RegionInfo,
) -> Option<String> {
    (label != stack_of.name).then(|| {
        format!(
            "namespace {namespace} is the stack namespace of region {} but is labelled \
             {REGION}={label}; a region's namespace belongs to that region: set the label to {} \
             or remove it",
            stack_of.name, stack_of.name
        )
    })
}

/// CEL: subject `s`'s own region label and its pod template's do not disagree.
fn no_template_conflict(s: Subject) -> String {
    let region = super::super::cel::lit(REGION);
    let (labels, template) = (s.var("labels"), s.var("templateLabels"));
    format!(
        "!({region} in {labels} && {region} in {template} && {labels}[{region}] != {template}[{region}])"
    )
}

/// The admission validations of `dataLocation`.
pub(crate) fn validations(ctx: &AdmissionContext<'_>) -> Vec<serde_json::Value> {
    let region = REGION;
    let no_home = ctx.no_home();
    let conflict = format!(
        "!({}) ? 'it is labelled {region}=' + variables.labels['{region}'] + ' but its pod template {region}=' + variables.templateLabels['{region}'] + '; give both the same region' : ",
        no_template_conflict(super::super::cel::NEW)
    );
    let (expression, what) = if ctx.allowed {
        (
            ratcheted(|s| {
                format!(
                    "{conflict} && {known} && {home} in variables.scopeRegions && variables.namespaceRegion in variables.scopeRegions",
                    conflict = no_template_conflict(s),
                    known = s.var("homeKnown"),
                    home = s.var("home")
                )
            }),
            format!(
                "({conflict}(!variables.homeKnown ? {no_home} : \
                 (!(variables.home in variables.scopeRegions) ? 'its home region ' + variables.home + ' (jurisdiction ' + variables.facts['region.' + variables.home + '.jurisdiction'] + ') is outside ' + variables.scope + '; keep it in a region of those jurisdictions' : \
                 'namespace ' + request.namespace + ' belongs to ' + (variables.namespaceRegion in variables.regions ? 'region ' + variables.namespaceRegion + ', outside ' + variables.scope : 'no region') + '; move it to ' + variables.facts['region.' + variables.home + '.namespace'] + ' or a namespace of ' + variables.scope)))"
            ),
        )
    } else {
        (
            ratcheted(|s| {
                format!(
                    "{} && {} && variables.namespaceRegion == {}",
                    no_template_conflict(s),
                    s.var("homeKnown"),
                    s.var("home")
                )
            }),
            format!(
                "({conflict}(!variables.homeKnown ? {no_home} : \
                 'its home region is ' + variables.home + ' but namespace ' + request.namespace + \
                 (variables.namespaceRegion in variables.regions ? ' belongs to region ' + variables.namespaceRegion + '; move it to ' + variables.facts['region.' + variables.home + '.namespace'] : \
                 ' belongs to no region; move it to ' + variables.facts['region.' + variables.home + '.namespace'] + ' or label namespace ' + request.namespace + ' {region}=' + variables.home)))"
            ),
        )
    };
    vec![validation(
        ctx.policy,
        Rule::DataLocation.as_str(),
        expression,
        what,
    )]
}
