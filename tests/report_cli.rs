//! `sovereign-operator report` on files, as finance runs it on a `kubectl get tb -A -o yaml`
//! export: totals equal the statuses, FOCUS columns, closed periods from the history, and the
//! exit codes (2 for unreadable input, 1 for a status whose lines do not add up).

use std::path::{Path, PathBuf};
use std::process::Output;

fn report(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sovereign-operator"))
        .arg("report")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/report/budgets.yaml")
}

#[test]
fn csv_totals_equal_the_statuses_per_currency() {
    let path = fixture();
    let output = report(&["-f", path.to_str().expect("utf-8"), "--period", "2026-11"]);
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut reader = csv::Reader::from_reader(output.stdout.as_slice());
    let headers = reader.headers().expect("headers").clone();
    let column = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("no {name}"))
    };
    let (cost, currency, region) = (
        column("BilledCost"),
        column("BillingCurrency"),
        column("RegionId"),
    );
    let mut totals = std::collections::BTreeMap::<String, rust_decimal::Decimal>::new();
    let mut regions = Vec::new();
    for record in reader.records() {
        let record = record.expect("record");
        *totals.entry(record[currency].to_owned()).or_default() += record[cost]
            .parse::<rust_decimal::Decimal>()
            .expect("decimal");
        regions.push(record[region].to_owned());
    }
    assert_eq!(totals["EUR"].to_string(), "1234.567891");
    assert_eq!(totals["INR"].to_string(), "5000.25");
    assert!(regions.contains(&"eu".to_owned()) && regions.contains(&"in".to_owned()));
}

/// The line whose status carries the input/output split becomes two FOCUS rows (SkuMeter
/// Input Tokens, Output Tokens); lines without it (an earlier release) one `Tokens` row.
#[test]
fn csv_meters_the_token_directions() {
    let path = fixture();
    let output = report(&[
        "-f",
        path.to_str().expect("utf-8"),
        "--period",
        "2026-11",
        "--by",
        "cost-center,model",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let mut reader = csv::Reader::from_reader(output.stdout.as_slice());
    let headers = reader.headers().expect("headers").clone();
    let column = |name: &str| headers.iter().position(|h| h == name).expect(name);
    let rows: Vec<(String, String, String, String)> = reader
        .records()
        .map(|r| r.expect("record"))
        .map(|r| {
            (
                r[column("SkuPriceId")].to_owned(),
                r[column("SkuMeter")].to_owned(),
                r[column("ConsumedQuantity")].to_owned(),
                r[column("BilledCost")].to_owned(),
            )
        })
        .collect();
    let expected = [
        (
            "llm-tokens/llama-3-70b/input",
            "Input Tokens",
            "2000",
            "400.5",
        ),
        (
            "llm-tokens/llama-3-70b/output",
            "Output Tokens",
            "1000",
            "600",
        ),
        (
            "llm-tokens/mistral-large/tokens",
            "Tokens",
            "1500",
            "234.067891",
        ),
        ("llm-tokens/sarvam-2b/tokens", "Tokens", "1000", "5000.25"),
    ];
    let expected: Vec<(String, String, String, String)> = expected
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect();
    assert_eq!(rows, expected);
}

#[test]
fn a_closed_period_and_markdown() {
    let path = fixture();
    let output = report(&[
        "-f",
        path.to_str().expect("utf-8"),
        "--period",
        "2026-10",
        "--by",
        "team",
        "--format",
        "markdown",
    ]);
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(
            "| file | sovereign-eu/search-team-eu | 2026-10 | search | 10 | 5 | 1 | 99 | EUR |"
        ),
        "{text}"
    );
    assert!(
        !text.contains("support-bot"),
        "the INR budget has no October: {text}"
    );
}

#[test]
fn unreadable_input_exits_2_with_the_path() {
    let output = report(&["-f", "/nonexistent/budgets.yaml"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/budgets.yaml"));
}

#[test]
fn a_status_that_does_not_add_up_exits_1() {
    let text = std::fs::read_to_string(fixture())
        .expect("fixture")
        .replace("amount: \"1000.5\"", "amount: \"1000.4\"");
    let dir = std::env::temp_dir().join(format!("sovereign-report-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("budgets.yaml");
    std::fs::write(&path, text).expect("write");
    let output = report(&["-f", path.to_str().expect("utf-8")]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("sovereign-eu/search-team-eu"));
}
