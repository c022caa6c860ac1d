//! `TokenBudget`: a spend or token limit for a scope of teams, cost centres, models and regions
//! over a calendar period, with thresholds that act.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{SecretKeyReference, currency_rule, decimal_rule};

/// A token or money budget over calendar periods, with thresholds that notify, throttle,
/// block or downgrade.
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "sovereign.ai",
    version = "v1alpha1",
    kind = "TokenBudget",
    plural = "tokenbudgets",
    shortname = "tb",
    category = "sovereign",
    namespaced,
    status = "TokenBudgetStatus",
    printcolumn = r#"{"name":"Period","type":"string","jsonPath":".spec.period"}"#,
    printcolumn = r#"{"name":"Spent","type":"string","jsonPath":".status.spent.amount"}"#,
    printcolumn = r#"{"name":"Limit","type":"string","jsonPath":".spec.limit.amount"}"#,
    printcolumn = r#"{"name":"Used%","type":"number","jsonPath":".status.percentUsed"}"#,
    printcolumn = r#"{"name":"Forecast","type":"string","jsonPath":".status.forecast.amount"}"#,
    printcolumn = r#"{"name":"Status","type":"string","jsonPath":".status.conditions[?(@.status==\"True\")].type"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct TokenBudgetSpec {
    /// Which usage counts against the budget; an empty list matches everything.
    #[serde(default)]
    pub scope: BudgetScope,
    /// Calendar period the budget resets on.
    #[serde(default)]
    pub period: BudgetPeriod,
    /// IANA time zone the periods are counted in, e.g. Europe/Paris or Asia/Kolkata. UTC when
    /// unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z_]+(/[A-Za-z0-9_+-]+)*$')").message("timeZone must be an IANA time zone name such as Europe/Paris"))]
    #[schemars(length(max = 64))]
    pub time_zone: Option<String>,
    /// The limit per period: an amount of money, a number of tokens, or both.
    pub limit: BudgetLimit,
    /// Spend levels, in percent of the limit, that trigger actions; unique and ascending.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(validation = Rule::new("self.all(t, self.exists_one(u, u.percent == t.percent))").message("thresholds must not repeat a percent"))]
    #[x_kube(validation = Rule::new("self.map(t, t.percent).isSorted()").message("thresholds must be in ascending order of percent"))]
    #[schemars(length(max = 16))]
    pub thresholds: Vec<Threshold>,
    /// Where Notify actions are sent besides a Kubernetes Event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifySpec>,
    /// Act ahead: a Throttle, Block or Downgrade threshold fires when the use plus the burn
    /// rate times 1.5 evaluation intervals (the next evaluation, and the time its action takes
    /// to land) reaches it, not only once the use has. The burn rate is the slower of the
    /// last two intervals', so a single burst does not act early. Notify thresholds fire on
    /// the use itself. Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictive: Option<bool>,
    /// How this budget treats the spend of its regions that other clusters count, when the
    /// operator has peers (one cluster per jurisdiction). Defaults apply when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<GlobalBudgetSpec>,
}

/// Options of a budget whose regions are counted by several clusters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct GlobalBudgetSpec {
    /// Seconds after the last successful read of a peer's totals from which they count as
    /// stale; three usage intervals when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1 && self <= 86400").message("global.staleAfterSeconds must be between 1 and 86400"))]
    pub stale_after_seconds: Option<i64>,
    /// What a stale peer means: UseLastKnown counts its last known totals; FailClosed also
    /// blocks the scope in this cluster while the stale peers, assumed to have spent their
    /// whole share of the limit, would put the budget over it.
    #[serde(default)]
    pub when_stale: WhenStale,
}

/// What a budget does while a peer cluster's totals are stale.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum WhenStale {
    /// Count the peer's last known totals (they only ever grow within a period).
    #[default]
    UseLastKnown,
    /// Assume the stale peer spent its whole share and block when that is over the limit.
    FailClosed,
}

/// Usage a budget covers, matched against the gateway's usage labels.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetScope {
    /// Gateway teams (LiteLLM team alias).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub teams: Vec<String>,
    /// Cost centres (the `cost_center` request metadata).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cost_centers: Vec<String>,
    /// Model names as clients request them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub models: Vec<String>,
    /// SovereignRegion names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
}

/// Calendar period of a budget.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum BudgetPeriod {
    /// From midnight to midnight.
    Daily,
    /// Monday to Sunday (ISO weeks).
    Weekly,
    /// Calendar month.
    #[default]
    Monthly,
    /// Calendar quarter (Jan–Mar, Apr–Jun, Jul–Sep, Oct–Dec).
    Quarterly,
}

/// The limit of a budget per period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("has(self.amount) || has(self.tokens)").message("limit must set amount (with currency) or tokens, or both"))]
#[x_kube(validation = Rule::new("has(self.amount) == has(self.currency)").message("limit.amount and limit.currency must be set together"))]
#[serde(rename_all = "camelCase")]
pub struct BudgetLimit {
    /// Money per period, a non-negative decimal in `currency`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = decimal_rule("limit.amount"))]
    #[schemars(length(max = 32))]
    pub amount: Option<String>,
    /// ISO 4217 currency of `amount`; spend in other currencies is refused, not converted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = currency_rule("limit.currency"))]
    #[schemars(length(max = 16))]
    pub currency: Option<String>,
    /// Tokens (input + output) per period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 0").message("limit.tokens must not be negative"))]
    pub tokens: Option<i64>,
}

/// What happens when spend crosses a threshold.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ThresholdAction {
    /// An Event on the budget, and the webhook if configured.
    #[default]
    Notify,
    /// The scope's teams are rate-limited at the gateway.
    Throttle,
    /// The scope's teams are cut off at the gateway until the period ends.
    Block,
    /// The scope's requests go to `downgradeTo`, a cheaper model in the same jurisdiction.
    Downgrade,
}

/// A spend level and its action; fires once per period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, KubeSchema)]
#[x_kube(validation = Rule::new("self.action != 'Downgrade' || has(self.downgradeTo)").message("thresholds[].downgradeTo is required when action is Downgrade"))]
#[serde(rename_all = "camelCase")]
pub struct Threshold {
    /// Percent of the limit, 1 to 1000.
    #[x_kube(validation = Rule::new("self >= 1 && self <= 1000").message("thresholds[].percent must be between 1 and 1000"))]
    pub percent: i32,
    /// Notify, Throttle, Block or Downgrade.
    #[serde(default)]
    pub action: ThresholdAction,
    /// Model name to route the scope to when action is Downgrade; it must be served in the
    /// same jurisdiction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub downgrade_to: Option<String>,
    /// Requests per minute each gateway replica lets the scope make when action is Throttle;
    /// 10 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self >= 1").message("thresholds[].requestsPerMinute must be at least 1"))]
    pub requests_per_minute: Option<i32>,
}

/// Where notifications go.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotifySpec {
    /// Secret key holding a webhook URL that receives a JSON message per crossed threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<SecretKeyReference>,
}

/// Spend of a period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Spend {
    /// Money spent, a decimal in `currency`.
    pub amount: String,
    /// ISO 4217 currency.
    pub currency: String,
    /// Input (prompt) tokens.
    pub input_tokens: i64,
    /// Output (completion) tokens.
    pub output_tokens: i64,
    /// Requests.
    pub requests: i64,
}

/// Where spend is heading.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Forecast {
    /// Projected spend at the end of the period at the current burn rate.
    pub amount: String,
    /// When the limit is reached at the current burn rate, if within the period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exhausts_at: Option<Time>,
}

/// One line of the spend breakdown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BreakdownEntry {
    /// team, costCenter, model or region.
    pub dimension: String,
    /// The team, cost centre, model or region.
    pub value: String,
    /// Money spent.
    pub amount: String,
    /// Tokens (input + output).
    pub tokens: i64,
}

/// Usage of one team, cost centre, model and region: period-to-date in `usage`, cumulative
/// since the ledger began in `periodOpening`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageLine {
    /// Gateway team; `(unallocated)` for idle GPU time, empty when the request named none.
    #[serde(default)]
    pub team: String,
    /// Cost centre; empty when the request named none.
    #[serde(default)]
    pub cost_center: String,
    /// Model as clients request it.
    #[serde(default)]
    pub model: String,
    /// SovereignRegion.
    #[serde(default)]
    pub region: String,
    /// Input tokens.
    #[serde(default)]
    pub input_tokens: i64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: i64,
    /// Requests.
    #[serde(default)]
    pub requests: i64,
    /// Money, a decimal in the budget's currency.
    #[serde(default)]
    pub amount: String,
    /// The part of `amount` input tokens cost; absent in lines an earlier release wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input_amount: Option<String>,
    /// The part of `amount` output tokens cost; absent in lines an earlier release wrote.
    /// What `amount` holds beyond both cannot be split (gateway-reported spend of a
    /// deployment without a price, usage counted by an earlier release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output_amount: Option<String>,
}

/// A threshold crossed in the current period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CrossedThreshold {
    /// The threshold's percent.
    pub percent: i32,
    /// The action taken.
    pub action: ThresholdAction,
    /// When it was crossed.
    pub crossed_at: Time,
}

/// A closed period.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClosedPeriod {
    /// First instant of the period.
    pub period_start: Time,
    /// First instant after the period.
    pub period_end: Time,
    /// What was spent.
    pub spent: Spend,
    /// Percent of the limit used.
    pub percent_used: f64,
    /// What was spent, by team, cost centre, model and region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage: Vec<UsageLine>,
}

/// Observed state of a TokenBudget.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenBudgetStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// First instant of the current period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_start: Option<Time>,
    /// First instant after the current period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_end: Option<Time>,
    /// Spend and tokens period-to-date.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spent: Option<Spend>,
    /// Percent of the limit used (the larger of money and tokens when both are set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percent_used: Option<f64>,
    /// Projection to the end of the period.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forecast: Option<Forecast>,
    /// Top spenders by team, cost centre, model and region.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub breakdown: Vec<BreakdownEntry>,
    /// Period-to-date usage by team, cost centre, model and region; the lines add up to
    /// `spent` exactly (what `sovereign-operator report` reads).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub usage: Vec<UsageLine>,
    /// Cumulative usage of every in-scope line, as read from the regions' ledgers when the
    /// current period opened (or the budget was created). Period-to-date usage is the
    /// ledger now minus this, which counts each token once however often the operator
    /// restarts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub period_opening: Vec<UsageLine>,
    /// Thresholds crossed in the current period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub thresholds_crossed: Vec<CrossedThreshold>,
    /// Closed periods, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<ClosedPeriod>,
    /// WithinBudget, AtRisk and Exceeded.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// The whole scope when other clusters count some of its regions: their last known period
    /// totals and the global sum the thresholds act on. `spent`, `usage` and `breakdown` stay
    /// this cluster's own, so that a report over every cluster counts each usage line once;
    /// `percentUsed`, `forecast`, the conditions and `thresholdsCrossed` are then global.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global: Option<GlobalBudgetStatus>,
}

/// The global view of a budget counted by several clusters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GlobalBudgetStatus {
    /// The region whose cluster announces thresholds (Event and webhook): the first of the
    /// scope's regions in sorted order. The other clusters act on thresholds silently.
    pub announcer: String,
    /// The regions this cluster counts itself (its `spent`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub local_regions: Vec<String>,
    /// This cluster's `spent` plus every peer's last accepted totals.
    pub spent: Spend,
    /// Each peer cluster's last accepted period totals.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<PeerTotals>,
    /// True while `whenStale: FailClosed` blocks the scope because of a stale peer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_closed: bool,
}

/// The period totals of a budget as one peer cluster published them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PeerTotals {
    /// The peer (the name of its credential Secret).
    pub peer: String,
    /// The regions these totals cover.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub regions: Vec<String>,
    /// The period the totals belong to (the current one, else they are not counted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period_start: Option<Time>,
    /// The totals.
    pub spent: Spend,
    /// When these totals were read from the peer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<Time>,
    /// Older than the budget's staleness bound (or never read).
    #[serde(default)]
    pub stale: bool,
    /// Why the last read was not used, or why the totals are stale; empty when current.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
}
