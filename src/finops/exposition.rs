//! A zero-copy parser for the Prometheus text exposition format (0.0.4), the format LiteLLM
//! and vLLM serve on `/metrics`.
//!
//! Why our own parser: the usage collector reads a handful of counter families out of
//! scrapes that are mostly histogram buckets (1.6 MB for 30 requests in the LiteLLM fixture),
//! so it must skip lines fast and allocate nothing for the lines it skips. Samples borrow the
//! input; label values are unescaped only when read. Throughput is measured by
//! `cargo bench --bench exposition` (figures in the README).

use std::borrow::Cow;

/// A line that is not a valid sample.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {message}")]
pub struct ParseError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: &'static str,
}

/// One sample: a metric name, its labels (still escaped) and its value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample<'a> {
    /// The metric name, e.g. `litellm_input_tokens_metric_total`.
    pub name: &'a str,
    /// The text between `{` and `}`, validated, escapes untouched.
    raw_labels: &'a str,
    /// The value.
    pub value: f64,
}

impl<'a> Sample<'a> {
    /// The labels, in the order of the line, with their values unescaped.
    pub fn labels(&self) -> Labels<'a> {
        Labels {
            rest: self.raw_labels,
        }
    }

    /// The value of label `name`, if present.
    pub fn label(&self, name: &str) -> Option<Cow<'a, str>> {
        self.labels().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

/// Iterator over the labels of a sample.
#[derive(Debug, Clone)]
pub struct Labels<'a> {
    rest: &'a str,
}

impl<'a> Iterator for Labels<'a> {
    type Item = (&'a str, Cow<'a, str>);

    fn next(&mut self) -> Option<Self::Item> {
        // The text was validated by `scan_labels`, so the shapes below hold.
        let rest = self.rest.trim_start_matches([' ', ',']);
        let eq = rest.find('=')?;
        let name = rest[..eq].trim_end();
        let after = rest[eq + 1..].trim_start();
        let body = after.strip_prefix('"')?;
        let bytes = body.as_bytes();
        let mut i = 0;
        let mut escaped = false;
        while i < bytes.len() {
            match bytes[i] {
                b'\\' => {
                    escaped = true;
                    i += 2;
                }
                b'"' => break,
                _ => i += 1,
            }
        }
        let raw = &body[..i.min(body.len())];
        self.rest = body.get(i + 1..).unwrap_or("");
        let value = if escaped {
            Cow::Owned(unescape(raw))
        } else {
            Cow::Borrowed(raw)
        };
        Some((name, value))
    }
}

/// Undoes the three escapes of the text format: `\\`, `\"` and `\n`.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The samples of `text`, in order; comments and blank lines are skipped.
pub fn samples(text: &str) -> Samples<'_> {
    Samples {
        rest: text,
        line: 0,
    }
}

/// Iterator over the samples of an exposition.
#[derive(Debug, Clone)]
pub struct Samples<'a> {
    rest: &'a str,
    line: usize,
}

impl<'a> Iterator for Samples<'a> {
    type Item = Result<Sample<'a>, ParseError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if self.rest.is_empty() {
                return None;
            }
            let (line, rest) = match memchr_newline(self.rest) {
                Some(at) => (&self.rest[..at], &self.rest[at + 1..]),
                None => (self.rest, ""),
            };
            self.rest = rest;
            self.line += 1;
            let line = line.strip_suffix('\r').unwrap_or(line);
            let first = line
                .as_bytes()
                .iter()
                .position(|b| *b != b' ' && *b != b'\t');
            let Some(first) = first else { continue };
            if line.as_bytes()[first] == b'#' {
                continue;
            }
            return Some(parse_sample(&line[first..]).map_err(|message| ParseError {
                line: self.line,
                message,
            }));
        }
    }
}

fn memchr_newline(text: &str) -> Option<usize> {
    text.as_bytes().iter().position(|b| *b == b'\n')
}

fn is_name_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b == b':'
}

fn is_name_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b':'
}

fn parse_sample(line: &str) -> Result<Sample<'_>, &'static str> {
    let bytes = line.as_bytes();
    if !is_name_start(bytes[0]) {
        return Err("a sample must start with a metric name");
    }
    let mut i = 1;
    while i < bytes.len() && is_name_char(bytes[i]) {
        i += 1;
    }
    let name = &line[..i];
    let mut raw_labels = "";
    if bytes.get(i) == Some(&b'{') {
        let end = scan_labels(&bytes[i + 1..])?;
        raw_labels = &line[i + 1..i + 1 + end];
        i += end + 2;
    }
    let rest = line[i..].trim_start_matches([' ', '\t']);
    if rest.len() == line.len() - i && !rest.is_empty() {
        return Err("the metric name must be followed by labels or a space");
    }
    let value_text = rest.split([' ', '\t']).next().unwrap_or("");
    if value_text.is_empty() {
        return Err("a sample needs a value");
    }
    let value = parse_value(value_text).ok_or("the value is not a number")?;
    Ok(Sample {
        name,
        raw_labels,
        value,
    })
}

/// Validates `name="value",…}` and returns the index of the closing brace.
fn scan_labels(bytes: &[u8]) -> Result<usize, &'static str> {
    let mut i = 0;
    loop {
        while i < bytes.len() && (bytes[i] == b' ' || bytes[i] == b',') {
            i += 1;
        }
        match bytes.get(i) {
            None => return Err("unterminated label set"),
            Some(b'}') => return Ok(i),
            Some(b) if is_name_start(*b) => {}
            Some(_) => return Err("a label name must start with a letter or '_'"),
        }
        while i < bytes.len() && is_name_char(bytes[i]) {
            i += 1;
        }
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if bytes.get(i) != Some(&b'=') {
            return Err("a label name must be followed by '='");
        }
        i += 1;
        while i < bytes.len() && bytes[i] == b' ' {
            i += 1;
        }
        if bytes.get(i) != Some(&b'"') {
            return Err("a label value must be quoted");
        }
        i += 1;
        // The quoted value: only `"` and `\` matter, so jump between them.
        loop {
            match bytes[i..].iter().position(|b| *b == b'"' || *b == b'\\') {
                None => return Err("unterminated label value"),
                Some(at) if bytes[i + at] == b'\\' => {
                    if i + at + 1 >= bytes.len() {
                        return Err("unterminated label value");
                    }
                    i += at + 2;
                }
                Some(at) => {
                    i += at + 1;
                    break;
                }
            }
        }
        match bytes.get(i) {
            Some(b',') | Some(b'}') | Some(b' ') => {}
            None => return Err("unterminated label set"),
            Some(_) => return Err("label values must be separated by ','"),
        }
    }
}

/// Parses a sample value: a float, `+Inf`, `-Inf` or `NaN`.
fn parse_value(text: &str) -> Option<f64> {
    match text {
        "+Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        "NaN" => Some(f64::NAN),
        _ => text.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(text: &str) -> Vec<Sample<'_>> {
        samples(text).collect::<Result<_, _>>().expect("parses")
    }

    #[test]
    fn reads_names_labels_and_values() {
        let text = "# HELP x help\n# TYPE x counter\nx_total{a=\"1\",b=\"two\"} 3.5\nup 1\n\n";
        let got = all(text);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].name, "x_total");
        assert_eq!(got[0].value, 3.5);
        let labels: Vec<_> = got[0].labels().map(|(n, v)| (n, v.into_owned())).collect();
        assert_eq!(labels, [("a", "1".to_owned()), ("b", "two".to_owned())]);
        assert_eq!(got[1].name, "up");
        assert_eq!(got[1].labels().count(), 0);
    }

    #[test]
    fn unescapes_quotes_backslashes_and_newlines() {
        let text = r#"m{user="a\"b\\c\nd",z="ok"} 1"#;
        let got = all(text);
        assert_eq!(got[0].label("user").as_deref(), Some("a\"b\\c\nd"));
        assert_eq!(got[0].label("z").as_deref(), Some("ok"));
    }

    #[test]
    fn a_brace_or_comma_inside_a_value_is_data() {
        let got = all(r#"m{a="x},y=\"z",b="2"} 7 1700000000000"#);
        assert_eq!(got[0].label("a").as_deref(), Some("x},y=\"z"));
        assert_eq!(got[0].label("b").as_deref(), Some("2"));
        assert_eq!(got[0].value, 7.0);
    }

    #[test]
    fn reads_special_and_exponent_values() {
        let got = all("a +Inf\nb -Inf\nc NaN\nd 9.223372036854776e+18\ne 9.4e-05\n");
        assert_eq!(got[0].value, f64::INFINITY);
        assert_eq!(got[1].value, f64::NEG_INFINITY);
        assert!(got[2].value.is_nan());
        assert_eq!(got[3].value, 9.223372036854776e18);
        assert_eq!(got[4].value, 9.4e-5);
    }

    #[test]
    fn names_the_line_of_a_bad_sample() {
        for (text, message) in [
            ("ok 1\nbad{a=1} 2\n", "a label value must be quoted"),
            (
                "ok 1\nbad{a=\"1\"x} 2\n",
                "label values must be separated by ','",
            ),
            ("ok 1\nbad{a=\"1\n", "unterminated label value"),
            ("ok 1\nbad 12abc\n", "the value is not a number"),
            ("ok 1\nbad\n", "a sample needs a value"),
            ("ok 1\n1bad 2\n", "a sample must start with a metric name"),
        ] {
            let err = samples(text)
                .find_map(Result::err)
                .unwrap_or_else(|| panic!("{text:?} must fail"));
            assert_eq!(err, ParseError { line: 2, message }, "{text:?}");
        }
    }

    #[test]
    fn parses_every_line_of_the_real_litellm_fixtures() {
        for file in [
            "metrics-before-restart.txt",
            "metrics-after-restart.txt",
            "metrics-minimal-config.txt",
        ] {
            let path = crate::finops::fixture_path(file);
            let text = std::fs::read_to_string(&path).expect("fixture is readable");
            let parsed: Vec<_> = samples(&text).collect::<Result<_, _>>().expect(file);
            let expected = text
                .lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .count();
            assert_eq!(parsed.len(), expected, "{file}");
            // seq 20's end user carries `"` and `\`: it must come back unescaped.
            if file == "metrics-before-restart.txt" {
                let odd = parsed
                    .iter()
                    .filter_map(|s| s.label("end_user"))
                    .find(|u| u.contains('"'))
                    .expect("the escaped end user is present");
                assert!(odd.contains('\\') && !odd.contains("\\\""), "{odd}");
            }
        }
    }
}
