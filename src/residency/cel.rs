//! Pieces of CEL shared by the rules' admission generators: literals, the subject (new or old
//! object) a validation is written for, UPDATE ratcheting and the validation object. Each
//! rule's own CEL lives with its Rust check in [`super::rules`].

use serde_json::{Value, json};

use crate::api::labels::DATA_CLASS;

/// A CEL string literal.
pub(crate) fn lit(text: &str) -> String {
    serde_json::to_string(text).expect("a string serializes")
}

/// A CEL list literal of strings.
pub(crate) fn list(items: &[String]) -> String {
    format!(
        "[{}]",
        items.iter().map(|i| lit(i)).collect::<Vec<_>>().join(", ")
    )
}

/// Whose verdict a CEL expression computes: the object being admitted, or — for UPDATE
/// ratcheting — the object as it was before the request (`oldObject`). Each subject has its
/// own copy of the per-object variables (`home` and `oldHome`, …), so that one generator
/// writes both verdicts and they cannot drift apart.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Subject {
    /// The CEL root: `object` or `oldObject`.
    pub(crate) object: &'static str,
    /// Prefix of its variables (`""` or `"old"`, camel-cased onto the name).
    prefix: &'static str,
}

/// The object being created or updated.
pub(crate) const NEW: Subject = Subject {
    object: "object",
    prefix: "",
};

/// The object as stored before an UPDATE.
pub(crate) const OLD: Subject = Subject {
    object: "oldObject",
    prefix: "old",
};

impl Subject {
    /// The name of per-object variable `name` for this subject (`home` → `oldHome`).
    pub(crate) fn name(self, name: &str) -> String {
        let mut chars = name.chars();
        match (self.prefix, chars.next()) {
            ("", _) | (_, None) => name.to_owned(),
            (prefix, Some(first)) => {
                format!("{prefix}{}{}", first.to_ascii_uppercase(), chars.as_str())
            }
        }
    }

    /// `variables.<name>` for this subject.
    pub(crate) fn var(self, name: &str) -> String {
        format!("variables.{}", self.name(name))
    }
}

/// CEL: `labels` (a map expression, possibly absent) has `DATA_CLASS` in `classes` (a CEL list
/// of normalized classes, see [`super::engine::normalize_class`]).
pub(crate) fn class_in(labels_path: &str, guards: &[String], classes: &str) -> String {
    let mut parts: Vec<String> = guards.iter().map(|g| format!("has({g})")).collect();
    parts.push(format!("has({labels_path})"));
    parts.push(format!("{} in {labels_path}", lit(DATA_CLASS)));
    // Data classes compare trimmed and case-insensitively, as the engine compares them.
    parts.push(format!(
        "{labels_path}[{}].trim().lowerAscii() in {classes}",
        lit(DATA_CLASS)
    ));
    format!("({})", parts.join(" && "))
}

/// CEL: rule `check` (written for a subject) with UPDATE ratcheting, as CRD validation
/// ratcheting does: the new object passes, or the request is an UPDATE of an object that was
/// governed by the policy and already broke this same rule. Objects that violated before their
/// policy existed can then still be updated (a controller's annotation, a scale), but an
/// UPDATE cannot make a compliant object non-compliant, and a CREATE gets no grace. An error
/// in the old object's verdict fails closed: `!(error)` is an error, which denies.
pub(crate) fn ratcheted(check: impl Fn(Subject) -> String) -> String {
    format!(
        "({}) || (request.operation == 'UPDATE' && {} && !({}))",
        check(NEW),
        OLD.var("governed"),
        check(OLD)
    )
}

/// One validation: expression, static message, messageExpression (`<what>` appended after
/// `Kind ns/name: rule (policy): `).
pub(crate) fn validation(policy: &str, rule: &str, expression: String, what: String) -> Value {
    json!({
        "expression": expression,
        "message": format!("{rule} ({policy}): the object breaks ResidencyPolicy {policy}"),
        "messageExpression": format!(
            "object.kind + ' ' + variables.name + ': {rule} ({policy}): ' + {what}"
        ),
        "reason": "Forbidden",
    })
}

/// What a rule's admission generator needs to know about the policy it compiles.
pub struct AdmissionContext<'a> {
    /// The policy's name (in messages).
    pub policy: &'a str,
    /// Its rules (which other rules are on decides the fail-closed paths).
    pub rules: &'a crate::api::policy::PolicyRules,
    /// AllowedJurisdictions (true) or HomeRegion.
    pub allowed: bool,
}

impl AdmissionContext<'_> {
    /// CEL message: why the object has no usable home region.
    pub(crate) fn no_home(&self) -> String {
        let region = crate::api::labels::REGION;
        format!(
            "(variables.home == '' ? 'it carries governed data but has no home region: label it {region}=<region> or put it in a region\\'s namespace (' + variables.facts['namespaces'] + ')' : \
             '{region}=' + variables.home + ' (on the object or its namespace) names no SovereignRegion; use one of ' + variables.facts['regions'])"
        )
    }

    /// `check` of subject `s`, guarded by its home region: with dataLocation on, an unknown
    /// home region is its finding alone; with it off, the other rules fail closed (the engine
    /// reports "cannot be checked").
    pub(crate) fn guard(&self, s: Subject, check: String) -> String {
        let known = s.var("homeKnown");
        if self.allowed {
            check
        } else if self.rules.data_location {
            format!("!{known} || ({check})")
        } else {
            format!("{known} && ({check})")
        }
    }

    /// CEL message prefix for the fail-closed path (`!homeKnown ? <no home> : `).
    pub(crate) fn cannot(&self) -> String {
        if self.allowed {
            String::new()
        } else {
            format!("!variables.homeKnown ? {} : ", self.no_home())
        }
    }
}
