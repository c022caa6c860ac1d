//! The custom resources validated offline the way the API server validates a create against
//! the CRDs of [`super::all_crds`]: strict decoding (unknown fields), `metadata.name`, the
//! OpenAPI schema (types, enums, required fields, lengths, list sizes, formats) and the CEL
//! `x-kubernetes-validations` rules (kube's `cel` engine), with the API server's own messages.
//!
//! Every offline command reads its custom resources through this (via
//! [`crate::manifest::classify`]), so `render`, `check` and `report -f` refuse what
//! `kubectl apply` would be refused, with the same words, instead of rendering children of an
//! object the cluster would never store.
//!
//! Order of the API server (k8s.io/apiextensions-apiserver `customResourceStrategy.Validate`,
//! checked against kube-apiserver v1.36 with `dryRun=All&fieldValidation=Strict`, see
//! `tests/schema_cli.rs`): decoding fails on unknown fields before anything is validated;
//! then metadata, schema and CEL errors are collected into one list, except that a
//! "blocking" schema error (wrong type, unsupported enum value, missing required field, too
//! long, too many items) skips the CEL rules and adds the API server's note saying so. Field
//! paths are sorted within each group (the API server's order within a group follows Go map
//! iteration and is not stable).
//!
//! Not checked, because the objects of this operator never rely on them: `minLength`,
//! `minItems`, `pattern`, `minimum`/`maximum` (every such bound is a CEL rule, whose message
//! names the field), and UPDATE-only transition rules (`oldSelf`): offline there is only ever
//! a create.

use std::collections::BTreeSet;
use std::sync::OnceLock;

use kube::core::cel::{CompiledSchema, ErrorKind, Validator, compile_schema};
use serde_json::{Map, Value};

use super::{GROUP, all_crds};

/// Why the API server would refuse an object; `Display` is its `Status.message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    /// The group has no such kind, or the CRD does not serve that version.
    #[error("no matches for kind \"{kind}\" in version \"{api_version}\"")]
    NoMatch {
        /// `kind`.
        kind: String,
        /// `apiVersion`.
        api_version: String,
    },
    /// Fields the schema does not declare (kubectl's default `--validate=strict`).
    #[error(
        "{kind} in version \"{version}\" cannot be handled as a {kind}: strict decoding error: {}",
        fields.iter().map(|f| format!("unknown field \"{f}\"")).collect::<Vec<_>>().join(", ")
    )]
    UnknownFields {
        /// `kind`.
        kind: String,
        /// The version of `apiVersion`.
        version: String,
        /// Paths of the undeclared fields.
        fields: Vec<String>,
    },
    /// The object breaks its schema or a CEL rule.
    #[error("{kind}.{GROUP} \"{name}\" is invalid: {}", list(errors))]
    Invalid {
        /// `kind`.
        kind: String,
        /// `metadata.name`.
        name: String,
        /// The API server's field errors (`<path>: <type>: <detail>`).
        errors: Vec<String>,
    },
}

/// The API server's rendering of an error list: one error alone, several in brackets.
fn list(errors: &[String]) -> String {
    match errors {
        [one] => one.clone(),
        many => format!("[{}]", many.join(", ")),
    }
}

/// What the API server adds when a blocking schema error skipped the CEL rules.
const NOT_CHECKED: &str = "<nil>: Invalid value: null: some validation rules were not checked \
                           because the object was invalid; correct the existing errors to \
                           complete validation";

/// Fields of `metadata` (ObjectMeta) that strict decoding knows.
const OBJECT_META: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "selfLink",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "labels",
    "annotations",
    "ownerReferences",
    "finalizers",
    "managedFields",
];

/// A served version of a kind: its openAPIV3Schema and its compiled CEL rules.
struct Served {
    kind: String,
    version: String,
    schema: Value,
    rules: CompiledSchema,
}

/// Every served version of the group, built once: deriving the CRDs and compiling their CEL
/// costs far more than validating an object.
fn served() -> &'static [Served] {
    static SERVED: OnceLock<Vec<Served>> = OnceLock::new();
    SERVED.get_or_init(|| {
        all_crds()
            .into_iter()
            .flat_map(|crd| {
                let kind = crd.spec.names.kind.clone();
                crd.spec.versions.into_iter().filter_map(move |v| {
                    let schema = serde_json::to_value(v.schema?.open_api_v3_schema?).ok()?;
                    v.served.then(|| Served {
                        kind: kind.clone(),
                        version: v.name,
                        rules: compile_schema(&schema),
                        schema,
                    })
                })
            })
            .collect()
    })
}

/// Validates one custom resource of [`GROUP`] as the API server validates its creation.
pub fn validate(object: &Value) -> Result<(), SchemaError> {
    let kind = object["kind"].as_str().unwrap_or_default();
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let version = api_version.rsplit_once('/').map_or("", |(_, v)| v);
    let no_match = || SchemaError::NoMatch {
        kind: kind.to_owned(),
        api_version: api_version.to_owned(),
    };
    let served = served()
        .iter()
        .find(|s| s.kind == kind && s.version == version)
        .ok_or_else(no_match)?;
    let schema = &served.schema;
    // Decoding: nulls of non-nullable fields are dropped (and then defaulted) by the API server
    // before anything else looks at the object.
    let object = pruned(schema, object);
    let mut unknown = Vec::new();
    undeclared(schema, &object, "", &mut unknown);
    if !unknown.is_empty() {
        return Err(SchemaError::UnknownFields {
            kind: kind.to_owned(),
            version: version.to_owned(),
            fields: unknown,
        });
    }
    let defaulted = kube::core::cel::apply_defaults(schema, &object);
    let mut errors = metadata_errors(&defaulted["metadata"]);
    let mut structural = Vec::new();
    let mut blocking = false;
    walk(schema, &defaulted, "", &mut structural, &mut blocking);
    structural.sort();
    errors.extend(structural);
    if blocking {
        errors.push(NOT_CHECKED.to_owned());
    } else {
        let mut cel = cel_errors(&served.rules, &object, &defaulted);
        cel.sort();
        errors.extend(cel);
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(SchemaError::Invalid {
            kind: kind.to_owned(),
            name: defaulted["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            errors,
        })
    }
}

fn nullable(schema: &Value) -> bool {
    schema["nullable"].as_bool() == Some(true)
}

/// `value` without the nulls of fields whose schema is not nullable.
fn pruned(schema: &Value, value: &Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut out = Map::new();
            for (key, item) in map {
                let child = child_schema(schema, key);
                if item.is_null() && child.is_some_and(|s| !nullable(s)) {
                    continue;
                }
                let item = match child {
                    Some(s) => pruned(s, item),
                    None => item.clone(),
                };
                out.insert(key.clone(), item);
            }
            Value::Object(out)
        }
        Value::Array(items) => match schema.get("items") {
            Some(s) => Value::Array(items.iter().map(|i| pruned(s, i)).collect()),
            None => value.clone(),
        },
        other => other.clone(),
    }
}

/// The schema of property `key` of an object schema: a declared property, or the map's
/// value schema.
fn child_schema<'a>(schema: &'a Value, key: &str) -> Option<&'a Value> {
    schema["properties"]
        .get(key)
        .or_else(|| schema.get("additionalProperties").filter(|s| s.is_object()))
}

fn preserves_unknown(schema: &Value) -> bool {
    schema["x-kubernetes-preserve-unknown-fields"].as_bool() == Some(true)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Paths of the fields of `value` that `schema` does not declare.
fn undeclared(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if path == "metadata" {
                out.extend(
                    map.keys()
                        .filter(|k| !OBJECT_META.contains(&k.as_str()))
                        .map(|k| join(path, k)),
                );
                return;
            }
            if preserves_unknown(schema) {
                return;
            }
            for (key, item) in map {
                // Every object has these, whether the CRD's schema lists them or not.
                if path.is_empty() && key == "metadata" {
                    undeclared(&Value::Null, item, "metadata", out);
                    continue;
                }
                if path.is_empty() && (key == "apiVersion" || key == "kind") {
                    continue;
                }
                match child_schema(schema, key) {
                    Some(child) => undeclared(child, item, &join(path, key), out),
                    None if schema["additionalProperties"] == Value::Bool(true) => {}
                    None => out.push(join(path, key)),
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    undeclared(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        _ => {}
    }
}

/// `metadata.name` as the API server requires it of a custom resource: present, and a DNS
/// subdomain.
fn metadata_errors(metadata: &Value) -> Vec<String> {
    match metadata["name"].as_str() {
        None | Some("")
            if metadata["generateName"]
                .as_str()
                .is_some_and(|g| !g.is_empty()) =>
        {
            Vec::new()
        }
        None | Some("") => {
            vec!["metadata.name: Required value: name or generateName is required".to_owned()]
        }
        Some(name) if is_dns_subdomain(name) => Vec::new(),
        Some(name) => vec![format!(
            "metadata.name: Invalid value: {}: a lowercase RFC 1123 subdomain must consist of \
             lower case alphanumeric characters, '-' or '.', and must start and end with an \
             alphanumeric character (e.g. 'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')",
            quoted(name)
        )],
    }
}

/// RFC 1123 subdomain: at most 253 characters, dot-separated labels of lower-case
/// alphanumerics and `-` that start and end with an alphanumeric.
fn is_dns_subdomain(name: &str) -> bool {
    let label = |l: &str| {
        let bytes = l.as_bytes();
        !bytes.is_empty()
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
            && bytes.first().is_some_and(|b| *b != b'-')
            && bytes.last().is_some_and(|b| *b != b'-')
    };
    name.len() <= 253 && name.split('.').all(label)
}

/// A string as Go's `%q` writes it (JSON quoting is the same for the text found here).
fn quoted(text: &str) -> String {
    Value::from(text).to_string()
}

/// The type name kube-openapi reports for a JSON value.
fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Whether `value` has schema type `expected`.
fn has_type(schema: &Value, expected: &str, value: &Value) -> bool {
    if schema["x-kubernetes-int-or-string"].as_bool() == Some(true) {
        return value.is_string() || type_name(value) == "integer";
    }
    match expected {
        "" => true,
        "number" => value.is_number(),
        "integer" => {
            type_name(value) == "integer" || value.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        other => type_name(value) == other,
    }
}

/// The schema errors of `value` at `path`; `blocking` is set when one of them would make the
/// API server skip the CEL rules.
fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>, blocking: &mut bool) {
    let expected = schema["type"].as_str().unwrap_or_default();
    if value.is_null() && nullable(schema) {
        return;
    }
    if !has_type(schema, expected, value) {
        let actual = type_name(value);
        out.push(format!(
            "{path}: Invalid value: \"{actual}\": {path} in body must be of type {expected}: \"{actual}\""
        ));
        *blocking = true;
        return;
    }
    if let Some(allowed) = schema["enum"].as_array()
        && !allowed.contains(value)
    {
        let supported: Vec<String> = allowed.iter().map(Value::to_string).collect();
        out.push(format!(
            "{path}: Unsupported value: {value}: supported values: {}",
            supported.join(", ")
        ));
        *blocking = true;
    }
    match value {
        Value::String(text) => {
            if let Some(max) = schema["maxLength"].as_u64()
                && text.chars().count() as u64 > max
            {
                out.push(format!(
                    "{path}: Too long: may not be more than {max} bytes"
                ));
                *blocking = true;
            }
            if schema["format"] == "date-time" && text.parse::<jiff::Timestamp>().is_err() {
                out.push(format!(
                    "{path}: Invalid value: {}: {path} in body must be of type date-time: {}",
                    quoted(text),
                    quoted(text)
                ));
            }
        }
        Value::Array(items) => {
            if let Some(max) = schema["maxItems"].as_u64()
                && items.len() as u64 > max
            {
                out.push(format!(
                    "{path}: Too many: {}: must have at most {max} items",
                    items.len()
                ));
                *blocking = true;
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), out, blocking);
                }
            }
            duplicate_keys(schema, items, path, out);
        }
        Value::Object(map) => {
            for required in schema["required"].as_array().into_iter().flatten() {
                if let Some(field) = required.as_str()
                    && !map.contains_key(field)
                {
                    out.push(format!("{}: Required value", join(path, field)));
                    *blocking = true;
                }
            }
            if path == "metadata" {
                return;
            }
            for (key, item) in map {
                if let Some(declared) = schema["properties"].get(key) {
                    walk(declared, item, &join(path, key), out, blocking);
                } else if let Some(values) =
                    schema.get("additionalProperties").filter(|s| s.is_object())
                {
                    walk(values, item, &format!("{path}[{key}]"), out, blocking);
                }
            }
        }
        _ => {}
    }
}

/// `x-kubernetes-list-type: map` (status conditions by `type`) and `set`: no two items with
/// the same key.
fn duplicate_keys(schema: &Value, items: &[Value], path: &str, out: &mut Vec<String>) {
    let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let key_of = |item: &Value| -> Option<String> {
        match schema["x-kubernetes-list-type"].as_str() {
            Some("map") => Some(
                keys.iter()
                    .map(|k| format!("{}:{}", quoted(k), item[*k]))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            Some("set") => Some(item.to_string()),
            _ => None,
        }
    };
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        if let Some(key) = key_of(item)
            && !seen.insert(key.clone())
        {
            out.push(format!(
                "{path}[{i}]: Duplicate value: map[string]interface {{}}{{{key}}}"
            ));
        }
    }
}

/// One CEL validator (its function registry) for the process.
fn validator() -> &'static Validator {
    static VALIDATOR: OnceLock<Validator> = OnceLock::new();
    VALIDATOR.get_or_init(Validator::new)
}

/// The CEL rules' errors, as the API server words them: `<path>: Invalid value: <value>:
/// <message>` (the value only for scalars; `<nil>` for a rule on the object itself).
fn cel_errors(rules: &CompiledSchema, object: &Value, defaulted: &Value) -> Vec<String> {
    let Err(errors) = validator().validate_compiled(rules, object, None) else {
        return Vec::new();
    };
    errors
        .iter()
        .map(|error| {
            let path = if error.field_path.is_empty() {
                "<nil>"
            } else {
                error.field_path.as_str()
            };
            match error.kind {
                ErrorKind::ValidationFailure => {
                    let value = match at(defaulted, &error.field_path) {
                        Some(v @ (Value::String(_) | Value::Number(_) | Value::Bool(_))) => {
                            format!("{v}: ")
                        }
                        Some(Value::Null) => "null: ".to_owned(),
                        _ => String::new(),
                    };
                    format!("{path}: Invalid value: {value}{}", error.message)
                }
                // A rule this build cannot evaluate: refuse rather than pass it unchecked.
                _ => format!(
                    "{path}: Internal error: rule {:?} cannot be evaluated offline: {}",
                    error.rule, error.message
                ),
            }
        })
        .collect()
}

/// The value at a field path such as `spec.sinks[0].kinds`.
fn at<'a>(root: &'a Value, path: &str) -> Option<&'a Value> {
    let mut current = root;
    for segment in path.split('.').filter(|s| !s.is_empty()) {
        let (name, indices) = match segment.find('[') {
            Some(at) => (&segment[..at], &segment[at..]),
            None => (segment, ""),
        };
        if !name.is_empty() {
            current = current.get(name)?;
        }
        for index in indices.split(['[', ']']).filter(|s| !s.is_empty()) {
            current = match index.parse::<usize>() {
                Ok(i) => current.get(i)?,
                Err(_) => current.get(index)?,
            };
        }
    }
    Some(current)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn region(spec: Value) -> Value {
        json!({"apiVersion": "sovereign.ai/v1alpha1", "kind": "SovereignRegion",
               "metadata": {"name": "eu"}, "spec": spec})
    }

    fn message(object: &Value) -> String {
        validate(object).expect_err("refused").to_string()
    }

    // Every expected message below is what kube-apiserver v1.36.3 answered to the same object
    // (POST with dryRun=All&fieldValidation=Strict).

    #[test]
    fn a_valid_region_passes() {
        validate(&region(
            json!({"jurisdiction": "EU", "locations": ["europe-west9"]}),
        ))
        .expect("valid");
    }

    #[test]
    fn cel_rules_are_worded_as_the_api_server_words_them() {
        assert_eq!(
            message(&region(json!({"jurisdiction": "Europe", "locations": []}))),
            "SovereignRegion.sovereign.ai \"eu\" is invalid: [spec.jurisdiction: Invalid value: \
             \"Europe\": jurisdiction must be EU or an ISO 3166-1 alpha-2 country code such as IN \
             or FR, spec.locations: Invalid value: locations must list at least one \
             topology.kubernetes.io/region value]"
        );
        assert_eq!(
            message(&region(json!({"jurisdiction": "EU", "locations": ["x"],
                                  "gateway": {"replicas": 0}}))),
            "SovereignRegion.sovereign.ai \"eu\" is invalid: spec.gateway.replicas: Invalid \
             value: 0: gateway.replicas must be between 1 and 100"
        );
        let backend = json!({"apiVersion": "sovereign.ai/v1alpha1", "kind": "InferenceBackend",
                             "metadata": {"name": "b", "namespace": "default"},
                             "spec": {"region": "eu", "modelName": "m"}});
        assert_eq!(
            message(&backend),
            "InferenceBackend.sovereign.ai \"b\" is invalid: spec: Invalid value: exactly one of \
             vllm or external must be set"
        );
    }

    #[test]
    fn schema_errors_block_the_cel_rules_as_on_the_api_server() {
        let not_checked = "<nil>: Invalid value: null: some validation rules were not checked \
                           because the object was invalid; correct the existing errors to \
                           complete validation";
        let cases = [
            (
                json!({"jurisdiction": "EU", "locations": ["x"], "gateway": {"replicas": "two"}}),
                "spec.gateway.replicas: Invalid value: \"string\": spec.gateway.replicas in body \
                 must be of type integer: \"string\"",
            ),
            (
                json!({"jurisdiction": "EUROPEANUNIONXXXXX", "locations": ["x"]}),
                "spec.jurisdiction: Too long: may not be more than 16 bytes",
            ),
            (
                json!({"locations": ["x"]}),
                "spec.jurisdiction: Required value",
            ),
            (
                json!({"jurisdiction": "EU", "locations": ["x"],
                       "observability": {"logLevel": "Loud"}}),
                "spec.observability.logLevel: Unsupported value: \"Loud\": supported values: \
                 \"Debug\", \"Info\", \"Warn\", \"Error\"",
            ),
            (
                json!({"jurisdiction": "EU",
                       "locations": (1..=33).map(|i| format!("l{i}")).collect::<Vec<_>>()}),
                "spec.locations: Too many: 33: must have at most 32 items",
            ),
        ];
        for (spec, first) in cases {
            assert_eq!(
                message(&region(spec)),
                format!("SovereignRegion.sovereign.ai \"eu\" is invalid: [{first}, {not_checked}]")
            );
        }
    }

    #[test]
    fn unknown_fields_fail_decoding_and_nulls_are_dropped() {
        assert_eq!(
            message(&region(json!({"jurisdiction": "EU", "locations": ["x"],
                                  "locaitons": ["y"]}))),
            "SovereignRegion in version \"v1alpha1\" cannot be handled as a SovereignRegion: \
             strict decoding error: unknown field \"spec.locaitons\""
        );
        validate(&region(
            json!({"jurisdiction": "EU", "locations": ["x"], "gateway": null}),
        ))
        .expect("a null gateway is dropped, then defaulted");
        // extraConfig keeps unknown fields by design.
        validate(&region(json!({"jurisdiction": "EU", "locations": ["x"],
                                "gateway": {"extraConfig": {"anything": {"goes": 1}}}})))
        .expect("preserved");
    }

    #[test]
    fn metadata_name_must_be_a_dns_subdomain() {
        let mut object = region(json!({"jurisdiction": "EU", "locations": ["x"]}));
        object["metadata"]["name"] = json!("EU_x");
        assert_eq!(
            message(&object),
            "SovereignRegion.sovereign.ai \"EU_x\" is invalid: metadata.name: Invalid value: \
             \"EU_x\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric \
             characters, '-' or '.', and must start and end with an alphanumeric character \
             (e.g. 'example.com', regex used for validation is \
             '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        );
    }

    #[test]
    fn an_unserved_version_or_kind_matches_nothing() {
        let mut object = region(json!({"jurisdiction": "EU", "locations": ["x"]}));
        object["apiVersion"] = json!("sovereign.ai/v1");
        assert_eq!(
            message(&object),
            "no matches for kind \"SovereignRegion\" in version \"sovereign.ai/v1\""
        );
        object["apiVersion"] = json!("sovereign.ai/v1alpha1");
        object["kind"] = json!("SovereignZone");
        assert!(matches!(
            validate(&object),
            Err(SchemaError::NoMatch { .. })
        ));
    }

    #[test]
    fn paths_reach_into_lists() {
        let value = json!({"spec": {"sinks": [{"kinds": ["a"]}]}});
        assert_eq!(at(&value, "spec.sinks[0].kinds[0]"), Some(&json!("a")));
        assert_eq!(at(&value, "spec.sinks[1]"), None);
    }
}
