//! YAML that Python reads back as written. serde_yaml_ng writes YAML 1.2, but LiteLLM loads
//! its config with PyYAML, a YAML 1.1 reader, which types more plain scalars than YAML 1.2
//! does (`2024-10-21` is a date, `on` a boolean, `0755` an octal), and serde_yaml_ng can
//! neither ask for a quoted style nor write a decimal number other than as an `f64` (`1e-6`,
//! a *string* for PyYAML). [`to_string`] writes a tree with every mapping's keys sorted (so
//! the output, whose hash rolls the gateway, does not depend on insertion order), every
//! string PyYAML would misread single-quoted, and every [`decimal`] as the exact decimal
//! text. Both go through plain-scalar placeholders that are put back after serialisation.

use serde_yaml_ng::Value;
use serde_yaml_ng::value::{Tag, TaggedValue};

/// The exact decimal `text` (digits, one point, digits), written as a YAML float that
/// PyYAML reads as a float: `0.0000018`, never `1.8e-6` or `1e-6`.
pub(crate) fn decimal(text: &str) -> Value {
    Value::Tagged(Box::new(TaggedValue {
        tag: Tag::new(DECIMAL_TAG),
        value: Value::from(text),
    }))
}

/// `value` as YAML for a PyYAML reader (see the module documentation).
pub(crate) fn to_string(value: Value) -> Result<String, serde_yaml_ng::Error> {
    serde_yaml_ng::to_string(&canonical(value)).map(|yaml| restore_markers(&yaml))
}

/// Private tag of a decimal number in the config tree until [`canonical`] writes it.
const DECIMAL_TAG: &str = "sovereign-decimal";

/// Prefix of the placeholder that stands for a decimal number until [`restore_markers`].
pub(crate) const DECIMAL_MARKER: &str = "SOVEREIGN_DECIMAL_";

/// A placeholder for the decimal `text` (digits and one point). serde_yaml_ng can only write an
/// `f64` (in shortest round-trip form, `1e-6`) or a string (quoted when it looks like a
/// number), so the decimal travels as a plain-scalar placeholder and is put back as text.
fn decimal_marker(text: &str) -> Value {
    Value::from(format!("{DECIMAL_MARKER}{}", text.replace('.', "_")))
}

/// `value` ready to be written: every mapping's keys in sorted order (mappings keep insertion
/// order, so this makes the YAML independent of the order extraConfig's keys arrived in), and
/// every string that Python's YAML would not read back as a string replaced by a
/// [`quote_marker`].
fn canonical(value: Value) -> Value {
    match value {
        Value::Mapping(map) => {
            let mut entries: Vec<(Value, Value)> = map.into_iter().collect();
            entries.sort_by_key(|(a, _)| key_text(a));
            Value::Mapping(
                entries
                    .into_iter()
                    .map(|(k, v)| (canonical(k), canonical(v)))
                    .collect(),
            )
        }
        Value::Sequence(items) => Value::Sequence(items.into_iter().map(canonical).collect()),
        Value::Tagged(tagged) => match *tagged {
            TaggedValue {
                tag,
                value: Value::String(decimal),
            } if tag == DECIMAL_TAG => decimal_marker(&decimal),
            TaggedValue { tag, value } => Value::Tagged(Box::new(TaggedValue {
                tag,
                value: canonical(value),
            })),
        },
        // A string that happens to contain a marker is hex-encoded too, so that
        // `restore_markers` only ever sees markers this module wrote.
        Value::String(text)
            if yaml11_ambiguous(&text)
                || text.contains(DECIMAL_MARKER)
                || text.contains(QUOTE_MARKER) =>
        {
            quote_marker(&text)
        }
        other => other,
    }
}

/// Sort key of a mapping key (JSON-born keys are always strings).
fn key_text(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        other => serde_yaml_ng::to_string(other).unwrap_or_default(),
    }
}

/// Whether a plain scalar `text` might not be a string for a YAML 1.1 reader. serde_yaml_ng
/// quotes what YAML 1.2 would type otherwise, but LiteLLM loads its config with PyYAML, whose
/// YAML 1.1 resolver also makes dates (`2024-10-21`, an Azure `api_version`!), `yes`/`no`/
/// `on`/`off`, octals, sexagesimals (`1:20`) and `<<` into non-strings. Deliberately broad:
/// quoting a string that did not need it changes nothing.
fn yaml11_ambiguous(text: &str) -> bool {
    const WORDS: &[&str] = &[
        "y", "n", "yes", "no", "on", "off", "true", "false", "null", "~",
    ];
    let starts_like_a_number = text
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_digit() || matches!(c, '+' | '-' | '.' | '<' | '='));
    text.is_empty() || starts_like_a_number || WORDS.contains(&text.to_ascii_lowercase().as_str())
}

/// Prefix of the placeholder that stands for a single-quoted string until [`restore_markers`].
const QUOTE_MARKER: &str = "SOVEREIGN_QUOTE_";

/// A plain-scalar placeholder for `text` (its UTF-8 bytes in hex), put back as `'text'`.
/// serde_yaml_ng has no way to ask for a quoted style.
fn quote_marker(text: &str) -> Value {
    let hex: String = text.bytes().map(|b| format!("{b:02x}")).collect();
    Value::from(format!("{QUOTE_MARKER}{hex}"))
}

/// `yaml` with every [`decimal_marker`] and [`quote_marker`] placeholder turned back into
/// the decimal, or the single-quoted string, it stands for.
fn restore_markers(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len());
    let mut rest = yaml;
    loop {
        let next = [DECIMAL_MARKER, QUOTE_MARKER]
            .into_iter()
            .filter_map(|marker| rest.find(marker).map(|at| (at, marker)))
            .min();
        let Some((at, marker)) = next else { break };
        out.push_str(&rest[..at]);
        let after = &rest[at + marker.len()..];
        let end = after
            .find(|c: char| !(c.is_ascii_hexdigit() || c == '_'))
            .unwrap_or(after.len());
        let body = &after[..end];
        if marker == DECIMAL_MARKER {
            out.push_str(&body.replacen('_', ".", 1));
        } else {
            let bytes: Vec<u8> = (0..body.len() / 2)
                .filter_map(|i| u8::from_str_radix(body.get(2 * i..2 * i + 2)?, 16).ok())
                .collect();
            let text = String::from_utf8_lossy(&bytes).replace('\'', "''");
            out.push('\'');
            out.push_str(&text);
            out.push('\'');
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Value {
        serde_yaml_ng::from_str(text).expect("yaml")
    }

    #[test]
    fn keys_are_sorted_at_every_level() {
        let written = to_string(yaml("b: 1\na: {d: 1, c: 2}\n")).expect("writes");
        assert_eq!(written, "a:\n  c: 2\n  d: 1\nb: 1\n");
    }

    #[test]
    fn strings_pyyaml_would_type_are_single_quoted() {
        let mut map = serde_yaml_ng::Mapping::new();
        for (key, text) in [
            ("date", "2024-10-21"),
            ("on", "on"),
            ("octal", "0755"),
            ("sexagesimal", "1:20"),
            ("merge", "<<"),
            ("empty", ""),
            ("plain", "plain"),
        ] {
            map.insert(Value::from(key), Value::from(text));
        }
        let written = to_string(Value::Mapping(map)).expect("writes");
        for line in [
            "date: '2024-10-21'\n",
            "'on': 'on'\n",
            "octal: '0755'\n",
            "sexagesimal: '1:20'\n",
            "merge: '<<'\n",
            "empty: ''\n",
            "plain: plain\n",
        ] {
            assert!(written.contains(line), "{line:?} in\n{written}");
        }
        // A quote inside a quoted string is doubled, as YAML single quotes require.
        let quoted = to_string(yaml("a: \"1 it's\"\n")).expect("writes");
        assert_eq!(quoted, "a: '1 it''s'\n");
    }

    #[test]
    fn decimals_are_written_exactly_and_read_as_floats() {
        let mut map = serde_yaml_ng::Mapping::new();
        map.insert(Value::from("cost"), decimal("0.000001"));
        map.insert(Value::from("list"), Value::Sequence(vec![decimal("12.5")]));
        let written = to_string(Value::Mapping(map)).expect("writes");
        assert_eq!(written, "cost: 0.000001\nlist:\n- 12.5\n");
        let back: Value = serde_yaml_ng::from_str(&written).expect("reads");
        assert_eq!(back["cost"].as_f64(), Some(1e-6));
    }

    #[test]
    fn text_that_looks_like_a_placeholder_stays_text() {
        let written = to_string(yaml(
            "a: SOVEREIGN_DECIMAL_1_5\nb: x SOVEREIGN_QUOTE_41 y\n",
        ))
        .expect("writes");
        assert_eq!(
            written,
            "a: 'SOVEREIGN_DECIMAL_1_5'\nb: 'x SOVEREIGN_QUOTE_41 y'\n"
        );
    }
}
