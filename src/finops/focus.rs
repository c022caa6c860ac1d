//! The finance report as FOCUS cost-and-usage rows: one table of the columns we emit, each
//! with what the specification requires of it and how we fill it, so the rule, the value and
//! its test live together.
//!
//! Source: the FinOps Open Cost and Usage Specification, `FinOps-Open-Cost-and-Usage-Spec/
//! FOCUS_Spec`, `specification/datasets/cost_and_usage/columns/<column>.md` (the layout of
//! 1.3 and later; the 1.4 release text itself is not stored on this machine, so the column
//! requirements below are those of the newest stored drafts, quoted per column). Token
//! consumption is `ConsumedQuantity` in `ConsumedUnit` "Tokens" (1.0), and the token
//! direction is the `SkuMeter` (1.1): a usage line becomes one row per direction.
//!
//! Not emitted, because a TokenBudget's status does not know them: BillingAccountId/Name,
//! InvoiceIssuerName, ServiceProviderName, HostProviderName, ListCost, ContractedCost,
//! ListUnitPrice, ContractedUnitPrice, ResourceId. A dataset of ours is therefore not a
//! conformant FOCUS dataset on its own; it is meant to be joined to the provider's invoice
//! (which carries them) by `RegionId`, `SkuPriceId` and the period.

use rust_decimal::Decimal;
use std::str::FromStr;

use super::budget::money;
use super::report::{Dimension, Report, ReportError, Row};

/// What a row meters: the token direction, or cost that cannot be split by direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Meter {
    /// Input (prompt) tokens.
    Input,
    /// Output (completion) tokens.
    Output,
    /// Cost in a split line that neither direction carries: spend the gateway reported for a
    /// deployment without a price, and idle GPU time. Its quantity is 0 tokens.
    Unsplit,
    /// Both directions, for a line an earlier release wrote without the split.
    Tokens,
}

impl Meter {
    /// The `SkuMeter` value.
    pub fn name(self) -> &'static str {
        match self {
            Meter::Input => "Input Tokens",
            Meter::Output => "Output Tokens",
            Meter::Unsplit => "Unsplit Spend",
            Meter::Tokens => "Tokens",
        }
    }

    fn id(self) -> &'static str {
        match self {
            Meter::Input => "input",
            Meter::Output => "output",
            Meter::Unsplit => "unsplit",
            Meter::Tokens => "tokens",
        }
    }
}

/// One FOCUS row: a report row's usage of one meter.
#[derive(Clone, Debug, PartialEq)]
pub struct Charge<'a> {
    /// The report row (budget, period, group).
    pub row: &'a Row,
    /// What is metered.
    pub meter: Meter,
    /// Tokens of that meter.
    pub quantity: i64,
    /// Its cost, exact.
    pub cost: Decimal,
    /// The row's requests, on its first charge only so that a sum counts each once.
    pub requests: i64,
}

/// The charges of `row`: input and output (and what cannot be split) when the status carries
/// the split, else one row of both directions. Rows of no tokens and no cost are left out.
pub fn charges(row: &Row) -> Vec<Charge<'_>> {
    let cost = decimal(&row.cost);
    let mut out = Vec::new();
    let mut push = |meter, quantity: i64, cost: Decimal| {
        if quantity != 0 || !cost.is_zero() {
            out.push(Charge {
                row,
                meter,
                quantity,
                cost,
                requests: 0,
            });
        }
    };
    match (&row.input_cost, &row.output_cost) {
        (Some(input), Some(output)) => {
            let (input, output) = (decimal(input), decimal(output));
            push(Meter::Input, row.input_tokens, input);
            push(Meter::Output, row.output_tokens, output);
            push(Meter::Unsplit, 0, cost - input - output);
        }
        _ => push(Meter::Tokens, row.input_tokens + row.output_tokens, cost),
    }
    if out.is_empty() && row.requests != 0 {
        out.push(Charge {
            row,
            meter: Meter::Tokens,
            quantity: 0,
            cost: Decimal::ZERO,
            requests: 0,
        });
    }
    if let Some(first) = out.first_mut() {
        first.requests = row.requests;
    }
    out
}

/// A column: its FOCUS id, the requirement we meet (quoted or summarised from the column's
/// file), and its value for a charge.
pub struct Column {
    /// Column ID (the CSV header).
    pub id: &'static str,
    /// What the specification requires of it, and how we fill it.
    pub rule: &'static str,
    /// The cell.
    pub value: fn(&Charge<'_>) -> String,
}

fn sku_id(charge: &Charge<'_>) -> String {
    match charge.row.group.get(&Dimension::Model) {
        Some(model) => format!("llm-tokens/{model}"),
        None => "llm-tokens".to_owned(),
    }
}

/// The columns, in output order: FOCUS columns, then `x_` custom columns (ColumnNaming:
/// custom columns carry the `x_` prefix).
pub const COLUMNS: [Column; 24] = [
    Column {
        id: "BilledCost",
        rule: "billedcost.md: Decimal, NumericFormat, not null; the charge's cost (no \
               commitments or credits exist here, so billed = effective)",
        value: |c| money(c.cost),
    },
    Column {
        id: "BillingCurrency",
        rule: "billingcurrency.md: ISO 4217 code, not null; the budget's currency",
        value: |c| c.row.currency.clone(),
    },
    Column {
        id: "BillingPeriodEnd",
        rule: "billingperiodend.md: exclusive end, DateTimeFormat; the budget period's end",
        value: |c| c.row.period_end.clone(),
    },
    Column {
        id: "BillingPeriodStart",
        rule: "billingperiodstart.md: inclusive start; the budget period's start",
        value: |c| c.row.period_start.clone(),
    },
    Column {
        id: "ChargeCategory",
        rule: "chargecategory.md: one of Usage, Purchase, Tax, Credit, Adjustment; tokens \
               consumed are Usage",
        value: |_| "Usage".to_owned(),
    },
    Column {
        id: "ChargeClass",
        rule: "chargeclass.md: \"Correction\" or null; we never emit corrections: null",
        value: |_| String::new(),
    },
    Column {
        id: "ChargeDescription",
        rule: "chargedescription.md: a self-contained summary of the charge",
        value: |c| {
            format!(
                "{} of LLM token budget {}/{}{}",
                c.meter.name(),
                c.row.namespace,
                c.row.budget,
                if c.row.open { " (period to date)" } else { "" }
            )
        },
    },
    Column {
        id: "ChargeFrequency",
        rule: "chargefrequency.md: One-Time, Recurring or Usage-Based; metered tokens are \
               Usage-Based",
        value: |_| "Usage-Based".to_owned(),
    },
    Column {
        id: "ChargePeriodEnd",
        rule: "chargeperiodend.md: exclusive end of the charge's period; the budget period's \
               end (a period-to-date row ends with its period)",
        value: |c| c.row.period_end.clone(),
    },
    Column {
        id: "ChargePeriodStart",
        rule: "chargeperiodstart.md: inclusive start of the charge's period",
        value: |c| c.row.period_start.clone(),
    },
    Column {
        id: "ConsumedQuantity",
        rule: "consumedquantity.md: Decimal; null when SkuPriceId is null or ChargeCategory \
               is not Usage, else not null: the tokens of the row's meter",
        value: |c| c.quantity.to_string(),
    },
    Column {
        id: "ConsumedUnit",
        rule: "consumedunit.md: null iff ConsumedQuantity is null; UnitFormat \
               (unit_format.md lists Tokens as a count-based unit): \"Tokens\"",
        value: |_| "Tokens".to_owned(),
    },
    Column {
        id: "EffectiveCost",
        rule: "effectivecost.md: amortized cost after discounts; equal to BilledCost here",
        value: |c| money(c.cost),
    },
    Column {
        id: "PricingCategory",
        rule: "pricingcategory.md: Standard, Dynamic, Committed or Other; InferenceBackend \
               prices are fixed list prices: Standard",
        value: |_| "Standard".to_owned(),
    },
    Column {
        id: "PricingQuantity",
        rule: "pricingquantity.md: not null for Usage; tokens (prices are per token, quoted \
               per million; GPU time is allocated by tokens)",
        value: |c| c.quantity.to_string(),
    },
    Column {
        id: "PricingUnit",
        rule: "pricingunit.md: UnitFormat; \"Tokens\"",
        value: |_| "Tokens".to_owned(),
    },
    Column {
        id: "RegionId",
        rule: "regionid.md: provider-assigned region id; the SovereignRegion when grouping \
               by region, else null",
        value: |c| {
            c.row
                .group
                .get(&Dimension::Region)
                .cloned()
                .unwrap_or_default()
        },
    },
    Column {
        id: "ServiceCategory",
        rule: "servicecategory.md: one of the listed categories; \"AI and Machine Learning\"",
        value: |_| "AI and Machine Learning".to_owned(),
    },
    Column {
        id: "ServiceName",
        rule: "servicename.md: the offering's display name",
        value: |_| "LLM inference".to_owned(),
    },
    Column {
        id: "SkuId",
        rule: "skuid.md: provider id of the SKU, consistent over time; llm-tokens/<model> \
               (llm-tokens when not grouping by model)",
        value: sku_id,
    },
    Column {
        id: "SkuMeter",
        rule: "skumeter.md (1.1): null when SkuId is null, else should not be; the \
               functionality metered: Input Tokens, Output Tokens",
        value: |c| c.meter.name().to_owned(),
    },
    Column {
        id: "SkuPriceId",
        rule: "skupriceid.md: not null for Usage that is not a Correction; one parent SkuId; \
               <SkuId>/<meter> (the InferenceBackend's input or output price)",
        value: |c| format!("{}/{}", sku_id(c), c.meter.id()),
    },
    Column {
        id: "SubAccountId",
        rule: "subaccountid.md: the grouping of resources; the kube context (or file) the \
               budget was read from, one per regional cluster",
        value: |c| c.row.source.clone(),
    },
    Column {
        id: "Tags",
        rule: "tags.md: KeyValueFormat JSON object; the budget, the period and the grouping \
               dimensions",
        value: |c| {
            let mut tags = serde_json::Map::new();
            tags.insert(
                "budget".into(),
                format!("{}/{}", c.row.namespace, c.row.budget).into(),
            );
            tags.insert("period".into(), c.row.period.clone().into());
            for (dimension, value) in &c.row.group {
                tags.insert(dimension.name().into(), value.clone().into());
            }
            serde_json::Value::Object(tags).to_string()
        },
    },
];

/// Custom column: the requests of the row (on its first charge).
pub const X_REQUESTS: &str = "x_Requests";

/// The report as CSV: a header of [`COLUMNS`] and `x_Requests`, one line per charge.
pub fn csv(report: &Report) -> Result<String, ReportError> {
    let mut writer = csv::Writer::from_writer(Vec::new());
    let write_error = |e: csv::Error| ReportError::Write(e.to_string());
    let mut header: Vec<&str> = COLUMNS.iter().map(|c| c.id).collect();
    header.push(X_REQUESTS);
    writer.write_record(&header).map_err(write_error)?;
    for row in &report.rows {
        for charge in charges(row) {
            let mut record: Vec<String> = COLUMNS.iter().map(|c| (c.value)(&charge)).collect();
            record.push(charge.requests.to_string());
            writer.write_record(&record).map_err(write_error)?;
        }
    }
    let bytes = writer
        .into_inner()
        .map_err(|e| ReportError::Write(e.to_string()))?;
    String::from_utf8(bytes).map_err(|e| ReportError::Write(e.to_string()))
}

fn decimal(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn row(input_cost: Option<&str>, output_cost: Option<&str>, cost: &str) -> Row {
        Row {
            source: "eu-cluster".into(),
            namespace: "finance".into(),
            budget: "search".into(),
            period: "2026-11".into(),
            period_start: "2026-11-01T00:00:00Z".into(),
            period_end: "2026-12-01T00:00:00Z".into(),
            open: true,
            currency: "EUR".into(),
            group: BTreeMap::from([
                (Dimension::Model, "llama".to_owned()),
                (Dimension::Region, "eu".to_owned()),
            ]),
            input_tokens: 1000,
            output_tokens: 200,
            requests: 7,
            cost: cost.into(),
            input_cost: input_cost.map(str::to_owned),
            output_cost: output_cost.map(str::to_owned),
        }
    }

    fn cell(charge: &Charge<'_>, id: &str) -> String {
        let column = COLUMNS
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("no column {id}"));
        (column.value)(charge)
    }

    #[test]
    fn a_split_line_is_one_row_per_direction_and_the_rest_unsplit() {
        let row = row(Some("0.5"), Some("0.3"), "1.25");
        let charges = charges(&row);
        let got: Vec<_> = charges
            .iter()
            .map(|c| (c.meter, c.quantity, money(c.cost), c.requests))
            .collect();
        assert_eq!(
            got,
            [
                (Meter::Input, 1000, "0.5".to_owned(), 7),
                (Meter::Output, 200, "0.3".to_owned(), 0),
                (Meter::Unsplit, 0, "0.45".to_owned(), 0),
            ]
        );
        // Nothing counted twice: cost, tokens and requests sum to the row's.
        let cost: Decimal = charges.iter().map(|c| c.cost).sum();
        assert_eq!(money(cost), "1.25");
        assert_eq!(charges.iter().map(|c| c.quantity).sum::<i64>(), 1200);
        assert_eq!(charges.iter().map(|c| c.requests).sum::<i64>(), 7);
    }

    #[test]
    fn an_exact_split_has_no_unsplit_row_and_an_old_line_is_one_tokens_row() {
        let exact = row(Some("1"), Some("0.25"), "1.25");
        assert_eq!(charges(&exact).len(), 2);
        let old = row(None, None, "1.25");
        let charges = charges(&old);
        assert_eq!(charges.len(), 1);
        assert_eq!(
            (charges[0].meter, charges[0].quantity),
            (Meter::Tokens, 1200)
        );
    }

    #[test]
    fn idle_gpu_time_is_an_unsplit_row_of_zero_tokens() {
        let mut idle = row(Some("0"), Some("0"), "6");
        idle.input_tokens = 0;
        idle.output_tokens = 0;
        idle.requests = 0;
        let charges = charges(&idle);
        assert_eq!(charges.len(), 1);
        assert_eq!(
            (
                charges[0].meter,
                charges[0].quantity,
                money(charges[0].cost)
            ),
            (Meter::Unsplit, 0, "6".to_owned())
        );
    }

    /// Every column we emit, its value for an input-token charge, against its rule.
    #[test]
    fn every_column_meets_its_rule() {
        let row = row(Some("0.5"), Some("0.3"), "0.8");
        let charges = charges(&row);
        let input = &charges[0];
        let expected: BTreeMap<&str, &str> = BTreeMap::from([
            ("BilledCost", "0.5"),
            ("BillingCurrency", "EUR"),
            ("BillingPeriodEnd", "2026-12-01T00:00:00Z"),
            ("BillingPeriodStart", "2026-11-01T00:00:00Z"),
            ("ChargeCategory", "Usage"),
            ("ChargeClass", ""),
            (
                "ChargeDescription",
                "Input Tokens of LLM token budget finance/search (period to date)",
            ),
            ("ChargeFrequency", "Usage-Based"),
            ("ChargePeriodEnd", "2026-12-01T00:00:00Z"),
            ("ChargePeriodStart", "2026-11-01T00:00:00Z"),
            ("ConsumedQuantity", "1000"),
            ("ConsumedUnit", "Tokens"),
            ("EffectiveCost", "0.5"),
            ("PricingCategory", "Standard"),
            ("PricingQuantity", "1000"),
            ("PricingUnit", "Tokens"),
            ("RegionId", "eu"),
            ("ServiceCategory", "AI and Machine Learning"),
            ("ServiceName", "LLM inference"),
            ("SkuId", "llm-tokens/llama"),
            ("SkuMeter", "Input Tokens"),
            ("SkuPriceId", "llm-tokens/llama/input"),
            ("SubAccountId", "eu-cluster"),
            (
                "Tags",
                r#"{"budget":"finance/search","model":"llama","period":"2026-11","region":"eu"}"#,
            ),
        ]);
        let ids: Vec<&str> = COLUMNS.iter().map(|c| c.id).collect();
        assert_eq!(ids, expected.keys().copied().collect::<Vec<_>>());
        for column in &COLUMNS {
            assert_eq!((column.value)(input), expected[column.id], "{}", column.id);
            assert!(column.rule.contains(".md"), "{}: cite the spec", column.id);
        }
        // Cross-column rules of the spec, on every charge.
        for charge in &charges {
            assert_eq!(cell(charge, "ChargeCategory"), "Usage");
            // SkuPriceId not null for Usage; ConsumedQuantity then not null; ConsumedUnit
            // null iff ConsumedQuantity is; SkuMeter not null when SkuId is not.
            assert!(!cell(charge, "SkuPriceId").is_empty());
            assert!(cell(charge, "SkuPriceId").starts_with(&cell(charge, "SkuId")));
            assert!(!cell(charge, "ConsumedQuantity").is_empty());
            assert!(!cell(charge, "ConsumedUnit").is_empty());
            assert!(!cell(charge, "SkuMeter").is_empty());
            assert_eq!(cell(charge, "BilledCost"), cell(charge, "EffectiveCost"));
        }
        assert_eq!(cell(&charges[1], "SkuMeter"), "Output Tokens");
        assert_eq!(cell(&charges[1], "ConsumedQuantity"), "200");
        assert_eq!(cell(&charges[1], "SkuPriceId"), "llm-tokens/llama/output");
    }

    #[test]
    fn without_model_or_region_grouping_the_sku_is_generic_and_region_null() {
        let mut row = row(Some("1"), Some("1"), "2");
        row.group.clear();
        let charges = charges(&row);
        assert_eq!(cell(&charges[0], "SkuId"), "llm-tokens");
        assert_eq!(cell(&charges[0], "RegionId"), "");
    }
}
