//! Reading Kubernetes manifests from files, directories and stdin the way `kubectl apply -f`
//! reads them — what `check` judges must be what kubectl would send — with errors that name the
//! file and line. Shared by `check`, `render` and `report -f`.
//!
//! The reference is kubectl's resource builder (k8s.io/cli-runtime `resource.FileVisitor`,
//! `StreamVisitor`, `FlattenListVisitor`; k8s.io/apimachinery `util/yaml.YAMLOrJSONDecoder`
//! and `unstructured.UnstructuredJSONScheme`; sigs.k8s.io/yaml on go-yaml v2), checked case by
//! case against a program built on cli-runtime v0.37 (`tests/check/kubectl-oracle/`):
//!
//! - **Files.** A directory is walked recursively (as `kubectl apply -R -f`), in name order;
//!   inside it only `.json`, `.yaml` and `.yml` files are read (case-sensitive, hidden files
//!   included, symbolic links to directories not followed); a file named explicitly is read
//!   whatever its name. `-` is stdin. A UTF-8 byte order mark is dropped and UTF-16 with a BOM
//!   decoded, as kubectl's `BOMOverride` does; other bytes must be UTF-8.
//! - **JSON or YAML.** A stream whose first non-space character is `{` is read as JSON values
//!   one after the other; if one fails to decode after at most one success (a YAML flow
//!   mapping, or one JSON object then YAML), the rest is YAML. Anything else is YAML, cut into
//!   documents at every line that starts with `---` (only spaces or a `# comment` may follow
//!   it, otherwise kubectl refuses the file). Empty documents, comment-only documents and
//!   `null` are skipped.
//! - **Lists.** Any object with an `items` key is a list (kubectl decides by the key, not the
//!   kind): `kind: List`, typed lists (`ConfigMapList`, `SecretList`, …) and anything else. An
//!   item with neither `kind` nor `apiVersion` takes the list's `apiVersion` and its kind
//!   without the `List` suffix (a `ConfigMapList` item is a ConfigMap). `items: null` is an
//!   empty list. A list inside a list is refused, as kubectl refuses it.
//! - **Objects** need a `kind` and an `apiVersion`; a document that is not an object (a
//!   sequence, a string) is refused.
//!
//! Where kubectl is permissive in a way two readers could disagree on, this reader refuses the
//! input instead, so that no object can look one way to `check` and another to the cluster:
//!
//! - **Duplicate keys** in a mapping (YAML or JSON): kubectl silently keeps the last, most YAML
//!   libraries refuse or keep the first.
//! - **Merge keys** (`<<: *anchor`, `<<: [*a, *b]`) are applied, but go-yaml v2 (kubectl) lets
//!   whatever comes later in the mapping win — a `<<` written after an explicit key overrides
//!   it — while the YAML merge-key spec (and go-yaml v3, kustomize, Argo CD's kustomize builds)
//!   lets explicit keys win. A mapping where the two rules give different values is refused;
//!   the usual `<<: *common` plus extra or overriding keys below it reads the same either way.
//!   Two `<<` keys in one mapping are a duplicate key.
//! - **Content after `...`** in a document: kubectl reads only the first YAML document of each
//!   `---` section and drops the rest silently.
//!
//! Known divergences, not ways around the gate:
//!
//! - A quoted `"<<"` key is a merge key here (serde_yaml_ng does not tell quoted from plain
//!   keys) but a literal key for kubectl; under labels, annotations or any string map that is a
//!   map where a string belongs, which the API server rejects.
//! - kubectl parses YAML 1.1 scalars, so plain `yes`, `on`, `y`, `012`, `1_000` are booleans
//!   and numbers for it and strings here, both as values and as keys (`on:` becomes `"true"`).
//!   Where the engine reads a value (labels, node selectors, storage classes, Velero and
//!   CloudNativePG string fields) the API server rejects a boolean or number, so such an object
//!   cannot reach the cluster; quote such values. (YAML 1.2 reads no plain scalar as a
//!   non-string that YAML 1.1 reads as a string, so the reverse cannot happen.)

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeOwned, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

use crate::api::{InferenceBackend, ResidencyPolicy, SovereignRegion, TokenBudget};

/// Input that cannot be used. The CLI exits with code 2 on these.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// A file or directory could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A document is not valid YAML / JSON, or is not something kubectl would send.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file (`-` for stdin).
        path: String,
        /// 1-based line of the problem (of the document when the exact line is unknown).
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A document has a known kind but does not fit its schema.
    #[error("{path}: {kind} {name}: {message}")]
    Invalid {
        /// The file.
        path: String,
        /// The kind.
        kind: String,
        /// metadata.name.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// The API server would refuse a custom resource (its CRD's schema or CEL rules); the
    /// message is the API server's.
    #[error("{location}: {source}")]
    Refused {
        /// `file:line`.
        location: String,
        /// What the API server would say.
        source: crate::api::schema::SchemaError,
    },
    /// The same object (group, kind, namespace, name) is defined twice.
    #[error(
        "{kind} {name} is defined twice, at {first} and at {second}: kubectl would apply both \
         and keep the last, so which one counts would depend on file order; keep one"
    )]
    Duplicate {
        /// The kind.
        kind: String,
        /// `namespace/name` or `name`.
        name: String,
        /// `file:line` of the first definition.
        first: String,
        /// `file:line` of the second.
        second: String,
    },
}

/// One object with where it came from.
#[derive(Clone, Debug)]
pub struct Document {
    /// The file it was read from (`-` for stdin).
    pub path: String,
    /// 1-based line where its document starts (a list's line for the list's items).
    pub line: usize,
    /// The object.
    pub value: Value,
}

impl Document {
    /// `file:line`, for messages.
    pub fn location(&self) -> String {
        format!("{}:{}", self.path, self.line)
    }

    /// `kind`.
    pub fn kind(&self) -> &str {
        self.value["kind"].as_str().unwrap_or_default()
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.value["metadata"]["name"].as_str().unwrap_or_default()
    }

    /// `namespace/name`, or `name` when the object has no namespace.
    pub fn display_name(&self) -> String {
        match self.value["metadata"]["namespace"].as_str() {
            Some(ns) if !ns.is_empty() => format!("{ns}/{}", self.name()),
            _ => self.name().to_owned(),
        }
    }
}

/// Where manifests come from: a file or stdin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// `-`.
    Stdin,
    /// A file, as found (explicitly named or met walking a directory).
    File(PathBuf),
}

/// The files `paths` stand for, as kubectl expands them: a directory recursively, in name
/// order, keeping only `.json`, `.yaml` and `.yml` files; a file or `-` as given.
pub fn sources(paths: &[PathBuf]) -> Result<Vec<Source>, ManifestError> {
    let mut out = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            out.push(Source::Stdin);
            continue;
        }
        let metadata = std::fs::metadata(path).map_err(|source| ManifestError::Read {
            path: path.display().to_string(),
            source,
        })?;
        if metadata.is_dir() {
            walk(path, &mut out)?;
        } else {
            out.push(Source::File(path.clone()));
        }
    }
    Ok(out)
}

/// kubectl walks with `filepath.Walk`: entries in name order, symbolic links not followed
/// into (a link is an entry like a file, kept when its name has a manifest extension).
fn walk(dir: &Path, out: &mut Vec<Source>) -> Result<(), ManifestError> {
    let read_error = |source| ManifestError::Read {
        path: dir.display().to_string(),
        source,
    };
    let mut entries: Vec<(PathBuf, std::fs::FileType)> = std::fs::read_dir(dir)
        .map_err(read_error)?
        .map(|entry| entry.and_then(|e| Ok((e.path(), e.file_type()?))))
        .collect::<Result<_, _>>()
        .map_err(read_error)?;
    entries.sort_by(|a, b| a.0.file_name().cmp(&b.0.file_name()));
    for (path, file_type) in entries {
        if file_type.is_dir() {
            walk(&path, out)?;
        } else if path
            .extension()
            .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        {
            out.push(Source::File(path));
        }
    }
    Ok(())
}

/// Reads every object of `paths`: files, directories (see [`sources`]) and `-` for stdin.
pub fn read_paths(paths: &[PathBuf]) -> Result<Vec<Document>, ManifestError> {
    let mut documents = Vec::new();
    for source in sources(paths)? {
        documents.extend(read_source(&source)?);
    }
    Ok(documents)
}

/// Reads the objects of one file or of stdin.
pub fn read_source(source: &Source) -> Result<Vec<Document>, ManifestError> {
    let (display, bytes) = match source {
        Source::Stdin => {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .map_err(|source| ManifestError::Read {
                    path: "-".into(),
                    source,
                })?;
            ("-".to_owned(), bytes)
        }
        Source::File(path) => {
            let display = path.display().to_string();
            let bytes = std::fs::read(path).map_err(|source| ManifestError::Read {
                path: display.clone(),
                source,
            })?;
            (display, bytes)
        }
    };
    let text = decode_text(&display, bytes)?;
    parse(&display, &text)
}

/// UTF-8 without its BOM, or UTF-16 announced by a BOM (kubectl's `unicode.BOMOverride`).
fn decode_text(path: &str, bytes: Vec<u8>) -> Result<String, ManifestError> {
    let utf16 = |bytes: &[u8], from: fn([u8; 2]) -> u16| {
        let units: Vec<u16> = bytes
            .chunks(2)
            .map(|c| from([c[0], c.get(1).copied().unwrap_or(0)]))
            .collect();
        String::from_utf16(&units).map_err(|e| e.to_string())
    };
    let text = match bytes.as_slice() {
        [0xEF, 0xBB, 0xBF, rest @ ..] => {
            String::from_utf8(rest.to_vec()).map_err(|e| e.to_string())
        }
        [0xFF, 0xFE, rest @ ..] => utf16(rest, u16::from_le_bytes),
        [0xFE, 0xFF, rest @ ..] => utf16(rest, u16::from_be_bytes),
        _ => String::from_utf8(bytes).map_err(|e| e.to_string()),
    };
    text.map_err(|message| ManifestError::Parse {
        path: path.to_owned(),
        line: 1,
        message: format!("not text: {message}"),
    })
}

/// The objects of one file's text (see the module documentation for the rules).
pub fn parse(path: &str, text: &str) -> Result<Vec<Document>, ManifestError> {
    let error = |line: usize, message: String| ManifestError::Parse {
        path: path.to_owned(),
        line,
        message,
    };
    let mut documents = Vec::new();
    // kubectl sniffs for a leading `{`: then it decodes JSON values one after the other. When
    // one fails to decode after at most one success (a YAML flow mapping `{a: b}`, or one JSON
    // object followed by YAML), apimachinery's `YAMLOrJSONDecoder` reads the rest as YAML, from
    // after the spaces and first newline that follow the last JSON value; after two JSON
    // values, a failure is an error.
    if text.trim_start().starts_with('{') {
        let mut stream = serde_json::Deserializer::from_str(text).into_iter::<Node<false>>();
        let mut count = 0;
        loop {
            let start = stream.byte_offset();
            let Some(next) = stream.next() else {
                return Ok(documents);
            };
            match next {
                Ok(Node(value)) => {
                    count += 1;
                    let skipped = text[start..].len() - text[start..].trim_start().len();
                    expand(value, path, line_of(text, start + skipped), &mut documents)?;
                }
                Err(json) => {
                    let json_error = error(json.line().max(1), without_position(&json.to_string()));
                    if count > 1 {
                        return Err(json_error);
                    }
                    let mut rest = start;
                    for c in text[start..].chars().take_while(|c| c.is_whitespace()) {
                        rest += c.len_utf8();
                        if c == '\n' {
                            break;
                        }
                    }
                    return match parse_yaml(
                        path,
                        &text[rest..],
                        line_of(text, rest),
                        &mut documents,
                    ) {
                        Ok(()) => Ok(documents),
                        // Neither reads it: the JSON error, as kubectl reports, names what a
                        // JSON file got wrong; the YAML one what a YAML file did.
                        Err(ManifestError::Parse { line, message, .. }) if count == 0 => Err(
                            error(line, format!("{message} (and as JSON: {json_error})")),
                        ),
                        Err(other) => Err(if count == 0 { other } else { json_error }),
                    };
                }
            }
        }
    }
    parse_yaml(path, text, 1, &mut documents)?;
    Ok(documents)
}

/// The YAML documents of `text`, whose first line is line `first` of the file.
fn parse_yaml(
    path: &str,
    text: &str,
    first: usize,
    documents: &mut Vec<Document>,
) -> Result<(), ManifestError> {
    let error = |line: usize, message: String| ManifestError::Parse {
        path: path.to_owned(),
        line,
        message,
    };
    for chunk in yaml_chunks(text) {
        let Chunk {
            first_line,
            text: chunk,
        } = chunk.map_err(|(line, m)| error(first + line - 1, m))?;
        let first_line = first + first_line - 1;
        let mut stream = serde_yaml_ng::Deserializer::from_str(&chunk);
        let Some(document) = stream.next() else {
            continue;
        };
        let line_in = |e: &serde_yaml_ng::Error| {
            first_line + e.location().map(|l| l.line()).unwrap_or(1).max(1) - 1
        };
        let value = match Node::<true>::deserialize(document) {
            Ok(Node(value)) => value,
            Err(e) => return Err(error(line_in(&e), without_position(&e.to_string()))),
        };
        if let Some(extra) = stream.next() {
            // Only `...` (document end) can start a second document inside a `---` section.
            let line = match de::IgnoredAny::deserialize(extra) {
                Ok(_) => first_line,
                Err(e) => line_in(&e),
            };
            return Err(error(
                line,
                "content after a document end marker (`...`): kubectl reads only the first \
                 document of each `---` section and would silently drop the rest; separate \
                 documents with `---`"
                    .into(),
            ));
        }
        let line = first_line + leading_trivia(&chunk);
        expand(value, path, line, documents)?;
    }
    Ok(())
}

/// A parser's message without its ` at line L column C`: relative to the `---` section for
/// YAML, so misleading; the error names the file's line instead.
fn without_position(message: &str) -> String {
    match message.rsplit_once(" at line ") {
        Some((text, position))
            if position
                .split(" column ")
                .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
        {
            text.to_owned()
        }
        _ => message.to_owned(),
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// Blank and comment lines before a document's first line of content.
fn leading_trivia(chunk: &str) -> usize {
    chunk
        .lines()
        .take_while(|l| {
            let l = l.trim();
            l.is_empty() || l.starts_with('#')
        })
        .count()
}

/// One `---` section of a YAML stream.
struct Chunk {
    /// 1-based line of its first line in the file.
    first_line: usize,
    text: String,
}

/// Cuts a YAML stream into sections as apimachinery's `YAMLReader` does: at every line that
/// starts with `---`, which may be followed only by spaces or a comment. Line ends are
/// normalised to `\n` (kubectl's `LineReader` drops `\r\n` too).
fn yaml_chunks(text: &str) -> impl Iterator<Item = Result<Chunk, (usize, String)>> + '_ {
    let mut lines = text.split('\n').enumerate().peekable();
    std::iter::from_fn(move || {
        let mut chunk = String::new();
        let mut first_line = None;
        loop {
            let Some((index, line)) = lines.next() else {
                return first_line.map(|first_line| {
                    Ok(Chunk {
                        first_line,
                        text: chunk,
                    })
                });
            };
            let line = line.strip_suffix('\r').unwrap_or(line);
            if let Some(rest) = line.strip_prefix("---") {
                let rest = rest.trim();
                if !rest.is_empty() && !rest.starts_with('#') {
                    // Drain so that the iterator ends after the error.
                    lines.by_ref().for_each(drop);
                    return Some(Err((
                        index + 1,
                        format!(
                            "invalid document separator `{line}`: kubectl accepts only `---`, \
                             optionally followed by a comment"
                        ),
                    )));
                }
                if let Some(first_line) = first_line {
                    return Some(Ok(Chunk {
                        first_line,
                        text: chunk,
                    }));
                }
                continue;
            }
            // The text after the last `\n` is not a line when empty.
            if line.is_empty() && lines.peek().is_none() {
                continue;
            }
            first_line.get_or_insert(index + 1);
            chunk.push_str(line);
            chunk.push('\n');
        }
    })
}

/// Turns one decoded document into objects: lists flattened, `kind` and `apiVersion` required.
fn expand(
    value: Value,
    path: &str,
    line: usize,
    out: &mut Vec<Document>,
) -> Result<(), ManifestError> {
    let error = |message: String| ManifestError::Parse {
        path: path.to_owned(),
        line,
        message,
    };
    let mut map = match value {
        Value::Null => return Ok(()),
        Value::Object(map) => map,
        other => {
            return Err(error(format!(
                "a document must be an object with kind and apiVersion, not {}",
                json_type(&other)
            )));
        }
    };
    let Some(items) = map.remove("items") else {
        return object(map, path, line, None, out);
    };
    // apimachinery's unstructured decoder: an `items` key makes the document a list, whatever
    // its kind; items without kind and apiVersion inherit the list's.
    let list_kind = map.get("kind").and_then(Value::as_str).unwrap_or_default();
    if list_kind.is_empty() {
        return Err(error(
            "a list (an object with `items`) needs a kind, e.g. `kind: List`".into(),
        ));
    }
    let item_kind = list_kind.strip_suffix("List").unwrap_or(list_kind);
    let list_version = map
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let items = match items {
        Value::Null => return Ok(()),
        Value::Array(items) => items,
        other => {
            return Err(error(format!(
                "{list_kind}: `items` must be a sequence, not {}",
                json_type(&other)
            )));
        }
    };
    for (index, item) in items.into_iter().enumerate() {
        let Value::Object(mut item) = item else {
            return Err(error(format!(
                "{list_kind}: items[{index}] is not an object"
            )));
        };
        let has = |item: &Map<String, Value>, key: &str| {
            item.get(key)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        };
        if !has(&item, "kind") && !has(&item, "apiVersion") {
            item.insert("kind".into(), item_kind.into());
            item.insert("apiVersion".into(), list_version.into());
        }
        if item.get("items").is_some_and(Value::is_array) {
            return Err(error(format!(
                "{list_kind}: items[{index}] is itself a list; kubectl refuses a list inside a \
                 list (\"is not a list: no Items field\"), flatten it"
            )));
        }
        object(item, path, line, Some((list_kind, index)), out)?;
    }
    Ok(())
}

/// Checks and records one object.
fn object(
    map: Map<String, Value>,
    path: &str,
    line: usize,
    item: Option<(&str, usize)>,
    out: &mut Vec<Document>,
) -> Result<(), ManifestError> {
    let within = item
        .map(|(kind, index)| format!("{kind}: items[{index}]: "))
        .unwrap_or_default();
    for key in ["kind", "apiVersion"] {
        if map
            .get(key)
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            return Err(ManifestError::Parse {
                path: path.to_owned(),
                line,
                message: format!(
                    "{within}no `{key}`: kubectl cannot send an object without kind and apiVersion"
                ),
            });
        }
    }
    out.push(Document {
        path: path.to_owned(),
        line,
        value: Value::Object(map),
    });
    Ok(())
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a sequence",
        Value::Object(_) => "an object",
    }
}

/// A JSON value decoded from YAML (`MERGE`: merge keys apply) or JSON, refusing duplicate keys
/// and merges that go-yaml v2 and the YAML spec read differently.
struct Node<const MERGE: bool>(Value);

impl<'de, const MERGE: bool> Deserialize<'de> for Node<MERGE> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(NodeVisitor::<MERGE>).map(Node)
    }
}

struct NodeVisitor<const MERGE: bool>;

/// A mapping key: strings as they are; integers and booleans as sigs.k8s.io/yaml's
/// `YAMLToJSON` writes them (`1` → `"1"`, `true` → `"true"`).
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string, integer or boolean mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Key, E> {
                Ok(Key(v))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

/// One entry of a mapping as written: an explicit key (its value is in the explicit map), or
/// a merge (`<<`) of maps.
enum Entry {
    Pair(String),
    Merge(Vec<Map<String, Value>>),
}

impl<'de, const MERGE: bool> Visitor<'de> for NodeVisitor<MERGE> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // kubectl cannot encode NaN or infinity as JSON either.
        serde_json::Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom(format!("{v} is not a number JSON can carry")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        Node::<MERGE>::deserialize(deserializer).map(|n| n.0)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Value, D::Error> {
        Node::<MERGE>::deserialize(deserializer).map(|n| n.0)
    }
    /// A value with a local tag (`!foo bar`): go-yaml v2 ignores the tag, so does this.
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        use de::VariantAccess as _;
        let (_tag, variant): (de::IgnoredAny, _) = data.variant()?;
        variant.newtype_variant::<Node<MERGE>>().map(|n| n.0)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(Node(item)) = seq.next_element::<Node<MERGE>>()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let mut map = Map::new();
        // Entries in written order, kept only once a merge key shows up.
        let mut entries: Option<Vec<Entry>> = None;
        while let Some(Key(key)) = access.next_key::<Key>()? {
            let Node(value) = access.next_value::<Node<MERGE>>()?;
            if MERGE && key == "<<" {
                if entries
                    .as_ref()
                    .is_some_and(|e| e.iter().any(|e| matches!(e, Entry::Merge(_))))
                {
                    return Err(de::Error::custom(
                        "duplicate key `<<`: merge several maps with `<<: [*a, *b]`",
                    ));
                }
                let not_maps =
                    || de::Error::custom("a merge key `<<` takes a map or a sequence of maps");
                let sources = match value {
                    Value::Object(source) => vec![source],
                    Value::Array(items) => items
                        .into_iter()
                        .map(|item| match item {
                            Value::Object(source) => Ok(source),
                            _ => Err(not_maps()),
                        })
                        .collect::<Result<_, A::Error>>()?,
                    _ => return Err(not_maps()),
                };
                entries
                    .get_or_insert_with(|| map.keys().cloned().map(Entry::Pair).collect())
                    .push(Entry::Merge(sources));
                continue;
            }
            if let Some(entries) = entries.as_mut() {
                entries.push(Entry::Pair(key.clone()));
            }
            match map.entry(key) {
                serde_json::map::Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                serde_json::map::Entry::Occupied(slot) => {
                    return Err(de::Error::custom(format!(
                        "duplicate key `{}`: kubectl keeps the last value silently, other tools \
                         the first or neither; write it once",
                        slot.key()
                    )));
                }
            }
        }
        match entries {
            None => Ok(Value::Object(map)),
            Some(entries) => merged(map, &entries)
                .map(Value::Object)
                .map_err(de::Error::custom),
        }
    }
}

/// A mapping with merge keys, as go-yaml v2 (kubectl) reads it — every entry in written order
/// overwrites, a merged sequence's earlier maps win over later ones — provided the YAML
/// merge-key spec (explicit keys win, then earlier merged maps) gives the same mapping.
fn merged(explicit: Map<String, Value>, entries: &[Entry]) -> Result<Map<String, Value>, String> {
    let mut kubectl = Map::new();
    for entry in entries {
        match entry {
            Entry::Pair(k) => {
                if let Some(v) = explicit.get(k) {
                    kubectl.insert(k.clone(), v.clone());
                }
            }
            Entry::Merge(sources) => {
                for source in sources.iter().rev() {
                    for (k, v) in source {
                        kubectl.insert(k.clone(), v.clone());
                    }
                }
            }
        }
    }
    let mut spec = explicit;
    for entry in entries {
        if let Entry::Merge(sources) = entry {
            for source in sources {
                for (k, v) in source {
                    spec.entry(k.clone()).or_insert_with(|| v.clone());
                }
            }
        }
    }
    if let Some((key, value)) = kubectl.iter().find(|(k, v)| spec.get(*k) != Some(*v)) {
        return Err(format!(
            "merge key `<<`: `{key}` is {value} for kubectl (go-yaml v2: the entry written \
             last wins) but {} for readers that follow the YAML merge spec (explicit keys win), \
             such as kustomize; write `<<` first and overrides after it",
            spec.get(key)
                .map_or_else(|| "absent".to_owned(), Value::to_string)
        ));
    }
    Ok(kubectl)
}

/// What makes two definitions the same object for the API server: group (not version), kind,
/// namespace (none for cluster-scoped kinds) and name.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// API group (`""` for core).
    pub group: String,
    /// Kind.
    pub kind: String,
    /// Namespace as written; empty for cluster-scoped kinds.
    pub namespace: String,
    /// `metadata.name`.
    pub name: String,
}

/// Built-in cluster-scoped kinds whose `metadata.namespace`, if written, the API server
/// ignores (kubectl clears it): two definitions differing only there are one object. The
/// operator's own kinds are taken from their CRDs.
const CLUSTER_SCOPED: &[(&str, &str)] = &[
    ("", "Namespace"),
    ("", "Node"),
    ("", "PersistentVolume"),
    ("storage.k8s.io", "StorageClass"),
    ("storage.k8s.io", "CSIDriver"),
    ("storage.k8s.io", "VolumeAttributesClass"),
    ("snapshot.storage.k8s.io", "VolumeSnapshotClass"),
    ("replication.storage.openshift.io", "VolumeReplicationClass"),
    (
        "replication.storage.openshift.io",
        "VolumeGroupReplicationClass",
    ),
    ("rbac.authorization.k8s.io", "ClusterRole"),
    ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
    ("apiextensions.k8s.io", "CustomResourceDefinition"),
    ("admissionregistration.k8s.io", "ValidatingAdmissionPolicy"),
    (
        "admissionregistration.k8s.io",
        "ValidatingAdmissionPolicyBinding",
    ),
    (
        "admissionregistration.k8s.io",
        "ValidatingWebhookConfiguration",
    ),
    (
        "admissionregistration.k8s.io",
        "MutatingWebhookConfiguration",
    ),
    ("scheduling.k8s.io", "PriorityClass"),
];

fn cluster_scoped(group: &str, kind: &str) -> bool {
    CLUSTER_SCOPED.contains(&(group, kind))
        || (group == crate::api::GROUP
            && crate::api::all_crds()
                .iter()
                .any(|crd| crd.spec.names.kind == kind && crd.spec.scope == "Cluster"))
}

/// The identity of an object; None when it has no name (e.g. only `generateName`).
pub fn identity(document: &Document) -> Option<Identity> {
    let name = document.name();
    if name.is_empty() {
        return None;
    }
    let api_version = document.value["apiVersion"].as_str().unwrap_or_default();
    let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
    let kind = document.kind();
    let namespace = if cluster_scoped(group, kind) {
        ""
    } else {
        document.value["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
    };
    Some(Identity {
        group: group.to_owned(),
        kind: kind.to_owned(),
        namespace: namespace.to_owned(),
        name: name.to_owned(),
    })
}

/// Refuses two definitions of the same object, identical or not, anywhere among `documents`.
pub fn ensure_unique<'a>(
    documents: impl IntoIterator<Item = &'a Document>,
) -> Result<(), ManifestError> {
    let mut seen: HashMap<Identity, &Document> = HashMap::new();
    for document in documents {
        let Some(identity) = identity(document) else {
            continue;
        };
        if let Some(first) = seen.insert(identity, document) {
            return Err(ManifestError::Duplicate {
                kind: document.kind().to_owned(),
                name: document.display_name(),
                first: first.location(),
                second: document.location(),
            });
        }
    }
    Ok(())
}

/// The custom resources among some documents, typed; everything else is kept as is.
#[derive(Debug, Default)]
pub struct Resources {
    /// SovereignRegions.
    pub regions: Vec<SovereignRegion>,
    /// InferenceBackends.
    pub backends: Vec<InferenceBackend>,
    /// ResidencyPolicies.
    pub policies: Vec<ResidencyPolicy>,
    /// TokenBudgets.
    pub budgets: Vec<TokenBudget>,
    /// Every other document.
    pub others: Vec<Document>,
}

fn typed<K: DeserializeOwned>(document: &Document) -> Result<K, ManifestError> {
    serde_json::from_value(document.value.clone()).map_err(|e| ManifestError::Invalid {
        path: document.location(),
        kind: document.kind().to_owned(),
        name: document.name().to_owned(),
        message: e.to_string(),
    })
}

/// Whether a document is one of this operator's custom resources (`sovereign.ai/…`).
pub fn is_ours(document: &Document) -> bool {
    document.value["apiVersion"]
        .as_str()
        .and_then(|v| v.split_once('/'))
        .is_some_and(|(group, _)| group == crate::api::GROUP)
}

/// Sorts documents into the four kinds of `sovereign.ai` and the rest. The one input path of
/// every offline command: each custom resource is first validated as the API server would
/// validate its creation ([`crate::api::schema`]), so what the cluster would refuse is refused
/// here, with its message.
pub fn classify(documents: Vec<Document>) -> Result<Resources, ManifestError> {
    let mut resources = Resources::default();
    for document in documents {
        if !is_ours(&document) {
            resources.others.push(document);
            continue;
        }
        crate::api::schema::validate(&document.value).map_err(|source| ManifestError::Refused {
            location: document.location(),
            source,
        })?;
        match document.kind() {
            "SovereignRegion" => resources.regions.push(typed(&document)?),
            "InferenceBackend" => resources.backends.push(typed(&document)?),
            "ResidencyPolicy" => resources.policies.push(typed(&document)?),
            "TokenBudget" => resources.budgets.push(typed(&document)?),
            _ => resources.others.push(document),
        }
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(documents: &[Document]) -> Vec<String> {
        documents.iter().map(|d| d.name().to_owned()).collect()
    }

    fn parse_err(text: &str) -> String {
        parse("x.yaml", text).expect_err("refused").to_string()
    }

    const CM: &str = "apiVersion: v1\nkind: ConfigMap\n";

    #[test]
    fn multi_document_yaml_json_and_lists() {
        let text = format!(
            "{CM}metadata: {{name: a}}\n---\n{{\"apiVersion\": \"v1\", \"kind\": \"List\", \"items\": [{{\"apiVersion\": \"v1\", \"kind\": \"Secret\", \"metadata\": {{\"name\": \"b\"}}}}]}}\n---\n"
        );
        let documents = parse("x.yaml", &text).expect("parses");
        assert_eq!(names(&documents), ["a", "b"]);
        assert_eq!(documents[1].line, 5);
    }

    #[test]
    fn malformed_yaml_names_file_and_line() {
        let error = parse("bad.yaml", "a: 1\nb: [unclosed\n").expect_err("malformed");
        let text = error.to_string();
        assert!(text.starts_with("bad.yaml:"), "{text}");
        assert!(
            matches!(error, ManifestError::Parse { line, .. } if line >= 2),
            "{text}"
        );
    }

    #[test]
    fn unreadable_path_is_named() {
        let error = read_paths(&[PathBuf::from("/nonexistent/file.yaml")]).expect_err("missing");
        assert!(error.to_string().starts_with("/nonexistent/file.yaml:"));
    }

    #[test]
    fn a_typo_in_a_known_kind_is_invalid_not_ignored() {
        let documents = parse(
            "b.yaml",
            "apiVersion: sovereign.ai/v1alpha1\nkind: TokenBudget\nmetadata: {name: x}\nspec: {limit: {tokens: \"many\"}}\n",
        )
        .expect("parses");
        let error = classify(documents).expect_err("invalid").to_string();
        // The API server's words, naming the object and the field.
        assert!(
            error.starts_with("b.yaml:1: TokenBudget.sovereign.ai \"x\" is invalid: "),
            "{error}"
        );
        assert!(
            error.contains(
                "spec.limit.tokens: Invalid value: \"string\": spec.limit.tokens in body must be of type integer"
            ),
            "{error}"
        );
    }

    #[test]
    fn typed_list_items_inherit_kind_and_version() {
        let documents = parse(
            "x.yaml",
            "apiVersion: v1\nkind: ConfigMapList\nitems:\n- metadata: {name: a}\n- apiVersion: v1\n  kind: Secret\n  metadata: {name: b}\n",
        )
        .expect("parses");
        assert_eq!(documents[0].value["kind"], "ConfigMap");
        assert_eq!(documents[0].value["apiVersion"], "v1");
        assert_eq!(documents[1].value["kind"], "Secret");
    }

    #[test]
    fn any_object_with_items_is_a_list_and_null_items_is_empty() {
        let documents = parse(
            "x.yaml",
            &format!("{CM}metadata: {{name: hidden}}\nitems: null\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: s}}\nitems:\n- {CM_INLINE}\n", CM_INLINE = "{apiVersion: v1, kind: ConfigMap, metadata: {name: c}}"),
        )
        .expect("parses");
        assert_eq!(names(&documents), ["c"]);
    }

    #[test]
    fn a_list_inside_a_list_is_refused() {
        let text = parse_err(
            "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: List\n  items: []\n",
        );
        assert!(text.contains("items[0] is itself a list"), "{text}");
    }

    #[test]
    fn empty_comment_only_and_null_documents_are_skipped() {
        let text = format!(
            "---\n---\n# only a comment\n---\n\n---\nnull\n---\n~\n---\n{CM}metadata: {{name: i}}\n---\n"
        );
        let documents = parse("x.yaml", &text).expect("parses");
        assert_eq!(names(&documents), ["i"]);
        assert_eq!(documents[0].line, 11);
        assert!(parse("x.yaml", "").expect("empty").is_empty());
        assert!(parse("x.yaml", "# nothing\n").expect("comment").is_empty());
    }

    #[test]
    fn separators_follow_kubectl() {
        let ok = parse(
            "x.yaml",
            &format!("{CM}metadata: {{name: a}}\n--- # next\r\n{CM}metadata: {{name: b}}\n"),
        )
        .expect("comment after ---");
        assert_eq!(names(&ok), ["a", "b"]);
        for bad in ["----\n", "--- {a: 1}\n", "---x\n"] {
            let text = parse_err(&format!("{CM}metadata: {{name: a}}\n{bad}{CM}"));
            assert!(
                text.starts_with("x.yaml:4: invalid document separator"),
                "{text}"
            );
        }
        let text = parse_err(&format!(
            "{CM}metadata: {{name: a}}\n...\n{CM}metadata: {{name: b}}\n"
        ));
        assert!(text.contains("document end marker"), "{text}");
        // `...` followed by `---` is an ordinary document end.
        let ok = parse(
            "x.yaml",
            &format!("{CM}metadata: {{name: a}}\n...\n---\n{CM}metadata: {{name: b}}\n"),
        )
        .expect("end marker then separator");
        assert_eq!(names(&ok), ["a", "b"]);
    }

    #[test]
    fn documents_need_kind_and_api_version_and_must_be_objects() {
        assert!(parse_err("kind: ConfigMap\nmetadata: {name: a}\n").contains("no `apiVersion`"));
        assert!(parse_err("apiVersion: v1\nmetadata: {name: a}\n").contains("no `kind`"));
        assert!(parse_err("- a\n").contains("not a sequence"));
        assert!(parse_err("just text\n").contains("not a string"));
        assert!(parse_err("[1]\n").contains("not a sequence"));
        let text = parse_err("apiVersion: v1\nkind: ConfigMapList\nitems:\n- kind: Secret\n");
        assert!(text.contains("items[0]: no `apiVersion`"), "{text}");
    }

    #[test]
    fn duplicate_keys_are_refused_in_yaml_and_json() {
        let text = parse_err(&format!(
            "# a comment\n{CM}metadata:\n  name: a\n  name: b\n"
        ));
        assert!(
            text.starts_with("x.yaml:5: metadata: duplicate key `name`"),
            "{text}"
        );
        assert!(!text.contains("column"), "{text}");
        assert!(text.contains("duplicate key `name`"), "{text}");
        let text = parse(
            "x.json",
            r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "name": "b"}}"#,
        )
        .expect_err("duplicate")
        .to_string();
        assert!(text.contains("duplicate key `name`"), "{text}");
    }

    #[test]
    fn merge_keys_apply_when_every_reader_agrees() {
        let documents = parse(
            "x.yaml",
            "common: &c {team: a, tier: web}\nother: &o {tier: db, zone: z}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels:\n    <<: [*c, *o]\n    team: b\n",
        )
        .expect("parses");
        let labels = &documents[0].value["metadata"]["labels"];
        assert_eq!(labels["team"], "b");
        assert_eq!(labels["tier"], "web");
        assert_eq!(labels["zone"], "z");
        assert!(labels.get("<<").is_none());
    }

    #[test]
    fn a_merge_that_kubectl_and_the_spec_read_differently_is_refused() {
        let text = parse_err(
            "pii: &pii {sovereign.ai/data-class: pii}\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels:\n    sovereign.ai/data-class: public\n    <<: *pii\n",
        );
        assert!(
            text.contains("`sovereign.ai/data-class` is \"pii\" for kubectl"),
            "{text}"
        );
        let text = parse_err(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels:\n    <<: {a: b}\n    <<: {c: d}\n",
        );
        assert!(text.contains("duplicate key `<<`"), "{text}");
        let text = parse_err(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a\n  labels:\n    <<: text\n",
        );
        assert!(text.contains("a map or a sequence of maps"), "{text}");
    }

    #[test]
    fn json_has_no_merge_keys_and_streams_values() {
        let documents = parse(
            "x.json",
            "  {\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"j\"}, \"data\": {\"<<\": \"x\"}}\n{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {\"name\": \"k\"}} null\n",
        )
        .expect("parses");
        assert_eq!(names(&documents), ["j", "k"]);
        assert_eq!(documents[0].value["data"]["<<"], "x");
        assert_eq!(documents[1].line, 2);
        // One JSON object then YAML, or a YAML flow mapping: apimachinery falls back to YAML.
        let documents = parse(
            "x.yaml",
            &format!("{{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"metadata\": {{\"name\": \"j\"}}}}\n---\n{CM}metadata: {{name: y}}\n"),
        )
        .expect("JSON then YAML");
        assert_eq!(names(&documents), ["j", "y"]);
        assert_eq!(documents[1].line, 3);
        let documents = parse(
            "x.yaml",
            "{apiVersion: v1, kind: ConfigMap, metadata: {name: flow}}\n",
        )
        .expect("flow mapping");
        assert_eq!(names(&documents), ["flow"]);
        // After two JSON values the stream is JSON: a third that fails is an error.
        let cm = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}}"#;
        let error = parse(
            "x.json",
            &format!("{cm}\n{}\n{{oops}}\n", cm.replace("\"a\"", "\"b\"")),
        )
        .expect_err("JSON stream");
        assert!(error.to_string().starts_with("x.json:3:"), "{error}");
    }

    #[test]
    fn byte_order_marks_are_handled() {
        let mut bytes = vec![0xEF, 0xBB, 0xBF];
        bytes.extend_from_slice(format!("{CM}metadata: {{name: a}}\n").as_bytes());
        let text = decode_text("x", bytes).expect("utf-8 bom");
        assert_eq!(names(&parse("x", &text).expect("parses")), ["a"]);
        let mut bytes = vec![0xFF, 0xFE];
        for unit in format!("{CM}metadata: {{name: b}}\n").encode_utf16() {
            bytes.extend_from_slice(&unit.to_le_bytes());
        }
        let text = decode_text("x", bytes).expect("utf-16");
        assert_eq!(names(&parse("x", &text).expect("parses")), ["b"]);
        assert!(decode_text("x", vec![0xC3, 0x28]).is_err());
    }

    #[test]
    fn integer_and_boolean_keys_become_strings() {
        let documents = parse(
            "x.yaml",
            &format!("{CM}metadata: {{name: a}}\ndata: {{1: a, true: b}}\n"),
        )
        .expect("parses");
        assert_eq!(documents[0].value["data"]["1"], "a");
        assert_eq!(documents[0].value["data"]["true"], "b");
    }

    #[test]
    fn identity_ignores_version_and_the_namespace_of_cluster_scoped_kinds() {
        let docs = parse(
            "x.yaml",
            "apiVersion: sovereign.ai/v1alpha1\nkind: SovereignRegion\nmetadata: {name: eu}\n---\napiVersion: sovereign.ai/v1\nkind: SovereignRegion\nmetadata: {name: eu, namespace: x}\n",
        )
        .expect("parses");
        let error = ensure_unique(&docs).expect_err("duplicate");
        assert!(
            error
                .to_string()
                .starts_with("SovereignRegion x/eu is defined twice, at x.yaml:1 and at x.yaml:5"),
            "{error}"
        );
        let docs = parse(
            "x.yaml",
            &format!("{CM}metadata: {{name: a, namespace: n1}}\n---\n{CM}metadata: {{name: a, namespace: n2}}\n"),
        )
        .expect("parses");
        ensure_unique(&docs).expect("two namespaces, two objects");
    }
}
