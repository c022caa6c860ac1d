//! Finance reports from TokenBudget statuses: rows per budget and per chosen dimensions
//! (cost centre, team, model, region) for one period, as FOCUS-style CSV, JSON or Markdown.
//! The rows of a budget add up exactly to the `spent` of its status, or the report fails.

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::Serialize;

use super::budget::{money, period_label, split_sum, time_zone};
use crate::api::budget::{TokenBudget, UsageLine};
use kube::ResourceExt;

/// A dimension to group by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Dimension {
    /// The `cost_center` request metadata.
    CostCenter,
    /// The gateway team.
    Team,
    /// The model clients asked for.
    Model,
    /// The SovereignRegion.
    Region,
}

impl Dimension {
    fn of(self, line: &UsageLine) -> &str {
        match self {
            Dimension::CostCenter => &line.cost_center,
            Dimension::Team => &line.team,
            Dimension::Model => &line.model,
            Dimension::Region => &line.region,
        }
    }

    /// The name used in headers and tags.
    pub fn name(self) -> &'static str {
        match self {
            Dimension::CostCenter => "cost-center",
            Dimension::Team => "team",
            Dimension::Model => "model",
            Dimension::Region => "region",
        }
    }
}

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// FOCUS cost-and-usage rows, one per token direction (see `finops::focus`).
    Csv,
    /// Rows and per-budget totals.
    Json,
    /// A table for humans.
    Markdown,
}

/// Why a report cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    /// A budget's usage lines do not add up to its `spent`.
    #[error(
        "TokenBudget {budget} ({origin}): its usage lines add up to {lines}, its status says {spent}; the status was written by an older operator or edited by hand"
    )]
    Inconsistent {
        /// `namespace/name`.
        budget: String,
        /// Context or file it came from.
        origin: String,
        /// Sum of the lines.
        lines: String,
        /// `status.spent.amount`.
        spent: String,
    },
    /// Two sources report the same usage line of a budget: summing both would count it
    /// twice.
    #[error(
        "TokenBudget {budget} ({period}): the usage line of {line} is reported by both {first} and {second}; each cluster must count only its own regions (an operator without --region, or two contexts of one cluster under different budgets' UIDs?)"
    )]
    CountedTwice {
        /// `namespace/name`.
        budget: String,
        /// The period's name.
        period: String,
        /// The line's dimensions.
        line: String,
        /// The first source.
        first: String,
        /// The second source.
        second: String,
    },
    /// The budget's time zone is unknown.
    #[error("TokenBudget {budget}: {message}")]
    Budget {
        /// `namespace/name`.
        budget: String,
        /// What is wrong.
        message: String,
    },
    /// Writing the output failed.
    #[error("cannot write the report: {0}")]
    Write(String),
}

/// One row of the report.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Row {
    /// The kube context (or file) the budget was read from: one per regional cluster.
    pub source: String,
    /// Namespace of the budget.
    pub namespace: String,
    /// Name of the budget.
    pub budget: String,
    /// The period's name (`2026-11`, `2026-Q4`, `2026-W48`, `2026-11-28`).
    pub period: String,
    /// First instant of the period (RFC 3339).
    pub period_start: String,
    /// First instant after the period.
    pub period_end: String,
    /// Whether the period is still open (period-to-date figures).
    pub open: bool,
    /// ISO 4217 currency.
    pub currency: String,
    /// The values of the grouping dimensions.
    pub group: BTreeMap<Dimension, String>,
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
    /// Requests.
    pub requests: i64,
    /// Cost, exact decimal.
    pub cost: String,
    /// The part of `cost` input tokens cost; absent when a line of the row has no split (an
    /// earlier release wrote it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub input_cost: Option<String>,
    /// The part of `cost` output tokens cost; absent likewise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output_cost: Option<String>,
}

/// A report.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The period asked for; the current one of each budget when absent.
    pub period: Option<String>,
    /// Grouping dimensions.
    pub by: Vec<Dimension>,
    /// Rows.
    pub rows: Vec<Row>,
    /// Per-budget totals: one row per budget, with no group, equal to its status' `spent`.
    pub totals: Vec<Row>,
}

/// (input tokens, output tokens, requests, cost) of `lines`.
fn spend_of(lines: &[UsageLine]) -> (i64, i64, i64, Decimal) {
    lines
        .iter()
        .fold((0, 0, 0, Decimal::ZERO), |(i, o, r, c), line| {
            (
                i + line.input_tokens,
                o + line.output_tokens,
                r + line.requests,
                c + decimal(&line.amount),
            )
        })
}

fn decimal(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap_or_default()
}

/// The report of `budgets` (each with the context or file it came from) for `period`
/// grouped by `by`. A budget contributes its current period when its name matches (or no
/// period is asked for), else the closed period of that name from its history.
pub fn build(
    budgets: &[(String, TokenBudget)],
    period: Option<&str>,
    by: &[Dimension],
) -> Result<Report, ReportError> {
    let mut rows = Vec::new();
    let mut totals = Vec::new();
    // Each usage line is counted once: a budget object read twice (the same cluster under
    // two contexts, or a file and its cluster) is skipped, and one line of a budget that two
    // clusters both report is refused — each cluster counts only its own region's usage.
    let mut seen_objects: BTreeMap<String, String> = BTreeMap::new();
    let mut seen_lines: BTreeMap<(String, String, [String; 4]), String> = BTreeMap::new();
    for (source, budget) in budgets {
        let Some(status) = &budget.status else {
            continue;
        };
        let id = format!(
            "{}/{}",
            budget.namespace().unwrap_or_default(),
            budget.name_any()
        );
        if let Some(uid) = &budget.metadata.uid
            && seen_objects
                .insert(format!("{id}/{uid}"), source.clone())
                .is_some()
        {
            continue;
        }
        let zone = time_zone(&budget.spec).map_err(|e| ReportError::Budget {
            budget: id.clone(),
            message: e.to_string(),
        })?;
        let label = |start: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time| {
            period_label(budget.spec.period, &zone, start.0)
        };
        // (name, start, end, open, spent, lines)
        let mut candidates = Vec::new();
        if let (Some(start), Some(end), Some(spent)) =
            (&status.period_start, &status.period_end, &status.spent)
        {
            candidates.push((
                label(start),
                start.clone(),
                end.clone(),
                true,
                spent.clone(),
                status.usage.clone(),
            ));
        }
        for closed in &status.history {
            candidates.push((
                label(&closed.period_start),
                closed.period_start.clone(),
                closed.period_end.clone(),
                false,
                closed.spent.clone(),
                closed.usage.clone(),
            ));
        }
        let chosen = match period {
            None => candidates.into_iter().find(|c| c.3),
            Some(wanted) => candidates.into_iter().find(|c| c.0 == wanted),
        };
        let Some((name, start, end, open, spent, lines)) = chosen else {
            continue;
        };

        for line in &lines {
            let key = [
                line.team.clone(),
                line.cost_center.clone(),
                line.model.clone(),
                line.region.clone(),
            ];
            if let Some(first) = seen_lines.insert((id.clone(), name.clone(), key), source.clone())
            {
                return Err(ReportError::CountedTwice {
                    budget: id,
                    period: name,
                    line: format!(
                        "team {:?}, cost centre {:?}, model {:?}, region {:?}",
                        line.team, line.cost_center, line.model, line.region
                    ),
                    first,
                    second: source.clone(),
                });
            }
        }
        let sum: Decimal = lines.iter().map(|l| decimal(&l.amount)).sum();
        if sum != decimal(&spent.amount) {
            return Err(ReportError::Inconsistent {
                budget: id,
                origin: source.clone(),
                lines: money(sum),
                spent: spent.amount,
            });
        }
        let mut groups: BTreeMap<BTreeMap<Dimension, String>, Vec<UsageLine>> = BTreeMap::new();
        for line in &lines {
            let group: BTreeMap<Dimension, String> =
                by.iter().map(|d| (*d, d.of(line).to_owned())).collect();
            groups.entry(group).or_default().push(line.clone());
        }
        let row =
            |group, input_tokens, output_tokens, requests, cost, split: [Option<String>; 2]| {
                let [input_cost, output_cost] = split;
                Row {
                    source: source.clone(),
                    namespace: budget.namespace().unwrap_or_default(),
                    budget: budget.name_any(),
                    period: name.clone(),
                    period_start: start.0.to_string(),
                    period_end: end.0.to_string(),
                    open,
                    currency: spent.currency.clone(),
                    group,
                    input_tokens,
                    output_tokens,
                    requests,
                    cost,
                    input_cost,
                    output_cost,
                }
            };
        for (group, lines) in groups {
            let split = [
                split_sum(&lines, |l| &l.input_amount),
                split_sum(&lines, |l| &l.output_amount),
            ];
            let spend = spend_of(&lines);
            rows.push(row(group, spend.0, spend.1, spend.2, money(spend.3), split));
        }
        let split = [
            split_sum(&lines, |l| &l.input_amount),
            split_sum(&lines, |l| &l.output_amount),
        ];
        totals.push(row(
            BTreeMap::new(),
            spent.input_tokens,
            spent.output_tokens,
            spent.requests,
            spent.amount.clone(),
            split,
        ));
    }
    Ok(Report {
        period: period.map(str::to_owned),
        by: by.to_vec(),
        rows,
        totals,
    })
}

impl Report {
    /// The report in `format`.
    pub fn render(&self, format: Format) -> Result<String, ReportError> {
        match format {
            Format::Csv => super::focus::csv(self),
            Format::Json => serde_json::to_string_pretty(self)
                .map(|s| s + "\n")
                .map_err(|e| ReportError::Write(e.to_string())),
            Format::Markdown => Ok(self.markdown()),
        }
    }

    fn markdown(&self) -> String {
        let mut out = String::new();
        let dims: Vec<&str> = self.by.iter().map(|d| d.name()).collect();
        let mut header = vec!["source", "budget", "period"];
        header.extend(dims.iter());
        header.extend([
            "input tokens",
            "output tokens",
            "requests",
            "cost",
            "currency",
        ]);
        out.push_str(&format!("| {} |\n", header.join(" | ")));
        out.push_str(&format!("|{}\n", "---|".repeat(header.len())));
        let cell = |s: &str| s.replace('|', "\\|");
        for row in &self.rows {
            let mut cells = vec![
                cell(&row.source),
                cell(&format!("{}/{}", row.namespace, row.budget)),
                cell(&row.period),
            ];
            cells.extend(
                self.by
                    .iter()
                    .map(|d| cell(row.group.get(d).map(String::as_str).unwrap_or(""))),
            );
            cells.extend([
                row.input_tokens.to_string(),
                row.output_tokens.to_string(),
                row.requests.to_string(),
                row.cost.clone(),
                row.currency.clone(),
            ]);
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        for total in &self.totals {
            let mut cells = vec![
                cell(&total.source),
                format!(
                    "**{}/{} total**",
                    cell(&total.namespace),
                    cell(&total.budget)
                ),
                cell(&total.period),
            ];
            cells.extend(self.by.iter().map(|_| String::new()));
            cells.extend([
                total.input_tokens.to_string(),
                total.output_tokens.to_string(),
                total.requests.to_string(),
                format!("**{}**", total.cost),
                total.currency.clone(),
            ]);
            out.push_str(&format!("| {} |\n", cells.join(" | ")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::budget::{ClosedPeriod, Spend, TokenBudgetSpec, TokenBudgetStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn line(team: &str, cc: &str, model: &str, amount: &str, input: i64) -> UsageLine {
        UsageLine {
            team: team.into(),
            cost_center: cc.into(),
            model: model.into(),
            region: "eu".into(),
            input_tokens: input,
            output_tokens: 1,
            requests: 1,
            amount: amount.into(),
            ..UsageLine::default()
        }
    }

    fn budget(lines: Vec<UsageLine>, spent: &str) -> TokenBudget {
        let mut budget = TokenBudget::new("team-budget", TokenBudgetSpec::default());
        budget.metadata.namespace = Some("finance".into());
        let at = |s: &str| Time(s.parse().expect("time"));
        let spend = |amount: &str, lines: &[UsageLine]| Spend {
            amount: amount.into(),
            currency: "EUR".into(),
            input_tokens: lines.iter().map(|l| l.input_tokens).sum(),
            output_tokens: lines.iter().map(|l| l.output_tokens).sum(),
            requests: lines.iter().map(|l| l.requests).sum(),
        };
        let october = vec![line("search", "CC-1", "llama", "5", 10)];
        budget.status = Some(TokenBudgetStatus {
            period_start: Some(at("2026-11-01T00:00:00Z")),
            period_end: Some(at("2026-12-01T00:00:00Z")),
            spent: Some(spend(spent, &lines)),
            usage: lines,
            history: vec![ClosedPeriod {
                period_start: at("2026-10-01T00:00:00Z"),
                period_end: at("2026-11-01T00:00:00Z"),
                spent: spend("5", &october),
                percent_used: 5.0,
                usage: october,
            }],
            ..TokenBudgetStatus::default()
        });
        budget
    }

    fn sample() -> Vec<(String, TokenBudget)> {
        vec![(
            "eu-cluster".to_owned(),
            budget(
                vec![
                    line("search", "CC-1", "llama", "1.25", 100),
                    line("support", "CC-1", "llama", "0.75", 50),
                    line("search", "CC-2", "mistral", "0.000001", 7),
                ],
                "2.000001",
            ),
        )]
    }

    #[test]
    fn groups_by_the_chosen_dimensions_and_totals_equal_the_status() {
        let report = build(&sample(), Some("2026-11"), &[Dimension::CostCenter]).expect("report");
        let by_cc: Vec<_> = report
            .rows
            .iter()
            .map(|r| {
                (
                    r.group[&Dimension::CostCenter].as_str(),
                    r.cost.as_str(),
                    r.input_tokens,
                )
            })
            .collect();
        assert_eq!(by_cc, [("CC-1", "2", 150), ("CC-2", "0.000001", 7)]);
        assert_eq!(report.totals.len(), 1);
        assert_eq!(report.totals[0].cost, "2.000001");
    }

    #[test]
    fn a_closed_period_comes_from_the_history() {
        let report = build(&sample(), Some("2026-10"), &[Dimension::Team]).expect("report");
        assert_eq!(report.rows.len(), 1);
        assert!(!report.rows[0].open);
        assert_eq!(report.totals[0].cost, "5");
        let none = build(&sample(), Some("2026-09"), &[]).expect("report");
        assert!(none.rows.is_empty());
    }

    #[test]
    fn lines_that_do_not_add_up_are_refused() {
        let budgets = vec![(
            "eu".to_owned(),
            budget(vec![line("search", "CC-1", "llama", "1", 1)], "2"),
        )];
        let error = build(&budgets, None, &[]).expect_err("inconsistent");
        assert!(error.to_string().contains("finance/team-budget"), "{error}");
    }

    #[test]
    fn csv_is_one_row_per_direction_and_sums_to_the_status() {
        let mut budgets = sample();
        // One line with the split, the others as an earlier release wrote them.
        if let Some(status) = budgets[0].1.status.as_mut() {
            status.usage[0].input_amount = Some("1".into());
            status.usage[0].output_amount = Some("0.25".into());
        }
        let report = build(&budgets, None, &[Dimension::Team, Dimension::Region]).expect("report");
        let csv = report.render(Format::Csv).expect("csv");
        let mut reader = csv::Reader::from_reader(csv.as_bytes());
        let headers = reader.headers().expect("headers").clone();
        let column = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .unwrap_or_else(|| panic!("no {name}"))
        };
        let records: Vec<csv::StringRecord> =
            reader.records().map(|r| r.expect("record")).collect();
        let meters: Vec<(&str, &str, &str)> = records
            .iter()
            .map(|r| {
                (
                    &r[column("Tags")],
                    &r[column("SkuMeter")],
                    &r[column("ConsumedQuantity")],
                )
            })
            .map(|(tags, meter, quantity)| {
                let team = if tags.contains("\"search\"") {
                    "search"
                } else {
                    "support"
                };
                (team, meter, quantity)
            })
            .collect();
        // search: split only on one of its two lines, so the row as a whole is unsplit.
        assert_eq!(
            meters,
            [("search", "Tokens", "109"), ("support", "Tokens", "51")]
        );
        let billed: Decimal = records
            .iter()
            .map(|r| decimal(&r[column("BilledCost")]))
            .sum();
        assert_eq!(money(billed), "2.000001");
        assert_eq!(&records[0][column("RegionId")], "eu");
        let tags: serde_json::Value =
            serde_json::from_str(&records[0][column("Tags")]).expect("tags are JSON");
        assert_eq!(tags["budget"], "finance/team-budget");

        // Grouped by cost centre and model, the split line is its own row: two meters.
        let report = build(&budgets, None, &[Dimension::Team, Dimension::Model]).expect("report");
        let csv = report.render(Format::Csv).expect("csv");
        let meters: Vec<String> = csv::Reader::from_reader(csv.as_bytes())
            .records()
            .map(|r| r.expect("record")[column("SkuMeter")].to_owned())
            .collect();
        assert_eq!(
            meters,
            ["Input Tokens", "Output Tokens", "Tokens", "Tokens"]
        );
    }

    #[test]
    fn the_same_budget_read_twice_counts_once_and_a_line_of_two_clusters_is_refused() {
        let mut eu = sample();
        eu[0].1.metadata.uid = Some("uid-eu".into());
        let mut twice = eu.clone();
        twice.push(("eu-again".to_owned(), eu[0].1.clone()));
        let once = build(&eu, None, &[]).expect("report");
        assert_eq!(build(&twice, None, &[]).expect("report"), once);

        // The same budget in a second cluster (its own UID) reporting eu's line too.
        let mut other = eu[0].1.clone();
        other.metadata.uid = Some("uid-in".into());
        let mut both = eu.clone();
        both.push(("in-cluster".to_owned(), other.clone()));
        let error = build(&both, None, &[]).expect_err("counted twice");
        assert!(
            matches!(&error, ReportError::CountedTwice { first, second, .. }
                if first == "eu-cluster" && second == "in-cluster"),
            "{error}"
        );

        // The same budget in a second cluster with only its own region's line: both count.
        if let Some(status) = other.status.as_mut() {
            for line in &mut status.usage {
                line.region = "in".into();
            }
        }
        let mut regions = eu.clone();
        regions.push(("in-cluster".to_owned(), other));
        let report = build(&regions, None, &[Dimension::Region]).expect("report");
        let costs: Vec<(&str, &str)> = report
            .rows
            .iter()
            .map(|r| (r.group[&Dimension::Region].as_str(), r.cost.as_str()))
            .collect();
        assert_eq!(costs, [("eu", "2.000001"), ("in", "2.000001")]);
    }

    #[test]
    fn markdown_and_json_render() {
        let report = build(&sample(), None, &[Dimension::Model]).expect("report");
        let markdown = report.render(Format::Markdown).expect("md");
        assert!(
            markdown.contains("| eu-cluster | finance/team-budget | 2026-11 | llama |"),
            "{markdown}"
        );
        assert!(markdown.contains("**2.000001**"), "{markdown}");
        let json: serde_json::Value =
            serde_json::from_str(&report.render(Format::Json).expect("json")).expect("valid");
        assert_eq!(json["totals"][0]["cost"], "2.000001");
    }
}
