//! User-declared replication sinks: a policy's `sinks[].locationExpression` is CEL over
//! `object` that yields where the sink sends data. Evaluated with kube's CEL engine (the
//! `kube-cel` crate, with the Kubernetes extension functions) so that the expression means the
//! same here as in the admission policies the API server evaluates.
//!
//! The expression may yield a string (one location), a list of strings (several), or `null` /
//! `''` (no replication configured: nothing to check). Anything else, or an evaluation error
//! (e.g. a field the object lacks), leaves the destination unknown, which the engine reports as
//! a violation: write `has(object.spec.x) ? object.spec.x.region : null` for optional fields.

use std::collections::HashMap;
use std::sync::Arc;

use kube::core::cel::KubeCelExt;
use kube::core::cel::cel::objects::{Key, Map};
use kube::core::cel::cel::{Context, Program, Value as CelValue};
use serde_json::Value;

/// A compiled `locationExpression`.
pub struct SinkProgram {
    program: Program,
}

impl std::fmt::Debug for SinkProgram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SinkProgram").finish_non_exhaustive()
    }
}

impl SinkProgram {
    /// Compiles `expression`; the error is the parser's message.
    pub fn compile(expression: &str) -> Result<Self, String> {
        Program::compile(expression)
            .map(|program| Self { program })
            .map_err(|e| e.to_string().trim().to_owned())
    }

    /// The locations `object` sends data to. `root` is a context with the CEL functions
    /// registered (see [`functions`]); building it once per evaluation rather than once per
    /// object is what keeps sinks cheap.
    pub fn locations(&self, root: &Context<'_>, object: &Value) -> Result<Vec<String>, String> {
        let mut ctx = root.new_inner_scope();
        ctx.add_variable_from_value("object", json_to_cel(object));
        match self.program.execute(&ctx) {
            Ok(CelValue::Null) => Ok(Vec::new()),
            Ok(CelValue::String(s)) if s.is_empty() => Ok(Vec::new()),
            Ok(CelValue::String(s)) => Ok(vec![(*s).clone()]),
            Ok(CelValue::List(items)) => items
                .iter()
                .map(|item| match item {
                    CelValue::String(s) => Ok((**s).clone()),
                    other => Err(format!("a list item is {other:?}, not a location string")),
                })
                .collect(),
            Ok(other) => Err(format!(
                "it yielded {other:?}, not a location string, a list of them or null"
            )),
            Err(e) => Err(format!("evaluation failed: {e}")),
        }
    }
}

/// A CEL context with the standard and Kubernetes extension functions, to evaluate
/// [`SinkProgram`]s in.
pub fn functions() -> Context<'static> {
    Context::default().with_all()
}

/// Kubernetes' escaping of property names that are not CEL identifiers (`a-b` is
/// `a__dash__b`), or None when the name needs none.
fn escaped(name: &str) -> Option<String> {
    if !name.contains(['.', '-', '/']) && !name.contains("__") {
        return None;
    }
    Some(
        name.replace("__", "__underscores__")
            .replace('.', "__dot__")
            .replace('-', "__dash__")
            .replace('/', "__slash__"),
    )
}

/// A JSON document as a CEL value. Map keys are kept as they are, so that
/// `object.metadata.labels['sovereign.ai/region']` works as it does on the API server; a key
/// that the API server would escape as a property name is also reachable under its escaped
/// name (`object.spec.target__dash__region`), so both spellings of an expression agree.
pub fn json_to_cel(value: &Value) -> CelValue {
    match value {
        Value::Null => CelValue::Null,
        Value::Bool(b) => CelValue::Bool(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => CelValue::Int(i),
            (None, Some(u)) => CelValue::UInt(u),
            _ => CelValue::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        Value::String(s) => CelValue::String(Arc::new(s.clone())),
        Value::Array(items) => CelValue::List(Arc::new(items.iter().map(json_to_cel).collect())),
        Value::Object(map) => {
            let mut out = HashMap::with_capacity(map.len());
            for (key, item) in map {
                let converted = json_to_cel(item);
                if let Some(alias) = escaped(key) {
                    out.insert(Key::String(Arc::new(alias)), converted.clone());
                }
                out.insert(Key::String(Arc::new(key.clone())), converted);
            }
            CelValue::Map(Map { map: Arc::new(out) })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn eval(expression: &str, object: Value) -> Result<Vec<String>, String> {
        SinkProgram::compile(expression)?.locations(&functions(), &object)
    }

    #[test]
    fn strings_lists_and_null() {
        let object = json!({"spec": {"target": {"region": "us-east-1"}, "peers": ["a", "b"]}});
        assert_eq!(
            eval("object.spec.target.region", object.clone()),
            Ok(vec!["us-east-1".to_owned()])
        );
        assert_eq!(
            eval("object.spec.peers", object.clone()),
            Ok(vec!["a".to_owned(), "b".to_owned()])
        );
        assert_eq!(
            eval(
                "has(object.spec.mirror) ? object.spec.mirror : null",
                object
            ),
            Ok(vec![])
        );
    }

    #[test]
    fn labels_escaped_names_and_extension_functions() {
        let object = json!({
            "metadata": {"labels": {"topology.kubernetes.io/region": "fr-par"}},
            "spec": {"target-region": "EU-CENTRAL-1"}
        });
        assert_eq!(
            eval(
                "object.metadata.labels['topology.kubernetes.io/region']",
                object.clone()
            ),
            Ok(vec!["fr-par".to_owned()])
        );
        assert_eq!(
            eval("object.spec.target__dash__region.lowerAscii()", object),
            Ok(vec!["eu-central-1".to_owned()])
        );
    }

    #[test]
    fn errors_are_messages_not_panics() {
        assert!(SinkProgram::compile("object.spec.(").is_err());
        let missing = eval("object.spec.nothing.region", json!({"spec": {}}));
        assert!(missing.is_err(), "{missing:?}");
        assert!(eval("1 + 1", json!({})).is_err());
    }
}
