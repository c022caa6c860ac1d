//! What a gateway scrape says about usage: token, request and spend counters per series,
//! attributed by team, key alias, cost centre, model and deployment, with every end-user
//! identifier dropped on the way in.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use super::exposition::{self, ParseError, Sample};

/// The attribution of a usage series: the only labels kept from a scrape. End users, e-mails,
/// key hashes, client IPs and user agents are never read into it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesKey {
    /// Team alias of the API key, else the `team` request metadata; empty when neither.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub team: String,
    /// Alias of the virtual key; empty for the master key or unnamed keys.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_alias: String,
    /// The `cost_center` request metadata; empty when absent.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cost_center: String,
    /// The model as the client asked for it (LiteLLM `requested_model`).
    pub model: String,
    /// The deployment that served it (LiteLLM `model_id`, which the rendered config sets to
    /// `<namespace>.<InferenceBackend name>`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub deployment: String,
}

/// Counter values of one series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Input (prompt) tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output (completion) tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Successful requests.
    #[serde(default)]
    pub requests: u64,
    /// Spend as the gateway computed it, in USD (LiteLLM's own price table); used only for
    /// deployments the operator has no price for.
    #[serde(default)]
    pub gateway_spend_usd: f64,
}

impl Counters {
    /// Component-wise `self - earlier`, or `None` when any counter went down (a reset).
    pub fn since(&self, earlier: &Counters) -> Option<Counters> {
        Some(Counters {
            input_tokens: self.input_tokens.checked_sub(earlier.input_tokens)?,
            output_tokens: self.output_tokens.checked_sub(earlier.output_tokens)?,
            requests: self.requests.checked_sub(earlier.requests)?,
            gateway_spend_usd: if self.gateway_spend_usd + 1e-12 < earlier.gateway_spend_usd {
                return None;
            } else {
                (self.gateway_spend_usd - earlier.gateway_spend_usd).max(0.0)
            },
        })
    }

    /// Component-wise sum.
    pub fn add(&mut self, other: &Counters) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.requests += other.requests;
        self.gateway_spend_usd += other.gateway_spend_usd;
    }

    /// Whether every counter is zero.
    pub fn is_zero(&self) -> bool {
        self.input_tokens == 0
            && self.output_tokens == 0
            && self.requests == 0
            && self.gateway_spend_usd == 0.0
    }
}

/// The usage counters of one scrape, summed per series key.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scrape {
    /// `process_start_time_seconds`, which changes when the gateway restarts.
    pub process_start: Option<f64>,
    /// Counters per series.
    pub series: BTreeMap<SeriesKey, Counters>,
}

/// Why a scrape could not be read.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// The text is not the Prometheus exposition format.
    #[error("the metrics are not in the Prometheus text format: {0}")]
    Parse(#[from] ParseError),
    /// A counter is negative, fractional where it counts tokens, or not finite.
    #[error("{metric} has the value {value}, which is not a count")]
    BadCount {
        /// The metric.
        metric: String,
        /// Its value.
        value: f64,
    },
}

/// The usage counters LiteLLM exports. LiteLLM renamed them over time (`litellm_input_tokens`
/// → `litellm_input_tokens_metric`, with or without the `_total` suffix that
/// prometheus_client appends), so the family is recognised by its stem.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    InputTokens,
    OutputTokens,
    Requests,
    Spend,
}

fn family(name: &str) -> Option<Family> {
    let stem = name.strip_prefix("litellm_")?;
    if stem.ends_with("_created") {
        return None;
    }
    let stem = stem.strip_suffix("_total").unwrap_or(stem);
    let stem = stem.strip_suffix("_metric").unwrap_or(stem);
    match stem {
        "input_tokens" | "prompt_tokens" => Some(Family::InputTokens),
        "output_tokens" | "completion_tokens" => Some(Family::OutputTokens),
        "requests" => Some(Family::Requests),
        "spend" => Some(Family::Spend),
        _ => None,
    }
}

/// A series key borrowing from the scrape: building one allocates nothing unless a label
/// value had escapes, so summing a million samples costs no million allocations.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct BorrowedKey<'a> {
    team: Cow<'a, str>,
    key_alias: Cow<'a, str>,
    cost_center: Cow<'a, str>,
    model: Cow<'a, str>,
    deployment: Cow<'a, str>,
}

impl BorrowedKey<'_> {
    fn to_owned_key(&self) -> SeriesKey {
        SeriesKey {
            team: self.team.clone().into_owned(),
            key_alias: self.key_alias.clone().into_owned(),
            cost_center: self.cost_center.clone().into_owned(),
            model: self.model.clone().into_owned(),
            deployment: self.deployment.clone().into_owned(),
        }
    }
}

/// LiteLLM writes a missing label value as the string `None`.
fn present_cow(value: Cow<'_, str>) -> Cow<'_, str> {
    if value == "None" {
        Cow::Borrowed("")
    } else {
        value
    }
}

fn series_key<'a>(sample: &Sample<'a>) -> BorrowedKey<'a> {
    let mut key = BorrowedKey::default();
    let (mut team_alias, mut metadata_team, mut team_id) =
        (Cow::Borrowed(""), Cow::Borrowed(""), Cow::Borrowed(""));
    let mut model_label = Cow::Borrowed("");
    for (name, value) in sample.labels() {
        match name {
            "team_alias" => team_alias = present_cow(value),
            "metadata_team" => metadata_team = present_cow(value),
            "team" => team_id = present_cow(value),
            "api_key_alias" => key.key_alias = present_cow(value),
            "metadata_cost_center" => key.cost_center = present_cow(value),
            "requested_model" => key.model = present_cow(value),
            "model" => model_label = present_cow(value),
            "model_id" => key.deployment = present_cow(value),
            // end_user, user, user_email, hashed_api_key, client_ip, user_agent and the rest
            // are dropped here: they never reach the ledger, status, logs or reports.
            _ => {}
        }
    }
    if key.model.is_empty() {
        key.model = model_label;
    }
    key.team = [team_alias, metadata_team, team_id]
        .into_iter()
        .find(|t| !t.is_empty())
        .unwrap_or_default();
    key
}

fn count(sample: &Sample<'_>) -> Result<u64, UsageError> {
    let value = sample.value;
    if !value.is_finite() || value < 0.0 || value.fract() != 0.0 || value > 9.0e15 {
        return Err(UsageError::BadCount {
            metric: sample.name.to_owned(),
            value,
        });
    }
    // Checked above: a non-negative integer below 2^53, exact in both types.
    Ok(value as u64)
}

/// Reads the usage counters out of a LiteLLM `/metrics` response.
pub fn read_scrape(text: &str) -> Result<Scrape, UsageError> {
    let mut process_start = None;
    let mut series: HashMap<BorrowedKey<'_>, Counters> = HashMap::new();
    for sample in exposition::samples(text) {
        let sample = sample?;
        if sample.name == "process_start_time_seconds" {
            process_start = Some(sample.value);
            continue;
        }
        let Some(family) = family(sample.name) else {
            continue;
        };
        let counters = series.entry(series_key(&sample)).or_default();
        match family {
            Family::InputTokens => counters.input_tokens += count(&sample)?,
            Family::OutputTokens => counters.output_tokens += count(&sample)?,
            Family::Requests => counters.requests += count(&sample)?,
            Family::Spend => {
                if !sample.value.is_finite() || sample.value < 0.0 {
                    return Err(UsageError::BadCount {
                        metric: sample.name.to_owned(),
                        value: sample.value,
                    });
                }
                counters.gateway_spend_usd += sample.value;
            }
        }
    }
    let mut scrape = Scrape {
        process_start,
        series: BTreeMap::new(),
    };
    for (key, counters) in series {
        scrape
            .series
            .entry(key.to_owned_key())
            .or_default()
            .add(&counters);
    }
    Ok(scrape)
}

/// Tokens a vLLM server says it processed (`vllm:prompt_tokens_total`,
/// `vllm:generation_tokens_total`, summed over its labels): every token the GPUs served,
/// through the gateway or not.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Served {
    /// `process_start_time_seconds` of the server.
    pub process_start: Option<f64>,
    /// Prompt (input) and generation (output) tokens.
    pub counters: Counters,
}

/// Reads the token counters out of a vLLM `/metrics` response.
pub fn read_served(text: &str) -> Result<Served, UsageError> {
    let mut served = Served::default();
    for sample in exposition::samples(text) {
        let sample = sample?;
        let stem = sample.name.strip_suffix("_total").unwrap_or(sample.name);
        match stem {
            "process_start_time_seconds" => served.process_start = Some(sample.value),
            "vllm:prompt_tokens" => served.counters.input_tokens += count(&sample)?,
            "vllm:generation_tokens" => served.counters.output_tokens += count(&sample)?,
            "vllm:request_success" => served.counters.requests += count(&sample)?,
            _ => {}
        }
    }
    Ok(served)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finops::fixture_scrape as fixture;

    fn total(scrape: &Scrape) -> Counters {
        let mut sum = Counters::default();
        for c in scrape.series.values() {
            sum.add(c);
        }
        sum
    }

    #[test]
    fn recognises_both_spellings_of_the_families() {
        for name in [
            "litellm_input_tokens_metric_total",
            "litellm_input_tokens_total",
            "litellm_input_tokens",
        ] {
            assert_eq!(family(name), Some(Family::InputTokens), "{name}");
        }
        assert_eq!(family("litellm_spend_metric_total"), Some(Family::Spend));
        assert_eq!(
            family("litellm_requests_metric_total"),
            Some(Family::Requests)
        );
        assert_eq!(family("litellm_spend_metric_created"), None);
        assert_eq!(family("litellm_total_tokens_metric_total"), None);
        assert_eq!(family("litellm_proxy_total_requests_metric_total"), None);
    }

    #[test]
    fn fixture_totals_equal_the_ground_truth_before_and_after_the_restart() {
        // README of the fixtures: 29 successful requests, 1474 + 713 tokens, 0.0019124 USD
        // before the restart; 5 requests, 284 + 139 tokens, 0.000352 USD after.
        let before = total(&fixture("metrics-before-restart.txt"));
        assert_eq!(
            (before.input_tokens, before.output_tokens, before.requests),
            (1474, 713, 29)
        );
        assert!((before.gateway_spend_usd - 0.0019124).abs() < 1e-12);
        let after = total(&fixture("metrics-after-restart.txt"));
        assert_eq!(
            (after.input_tokens, after.output_tokens, after.requests),
            (284, 139, 5)
        );
        assert!((after.gateway_spend_usd - 0.000352).abs() < 1e-12);
    }

    #[test]
    fn attributes_by_team_cost_centre_and_model_and_keeps_no_end_user() {
        let scrape = fixture("metrics-before-restart.txt");
        let key = SeriesKey {
            team: "support".into(),
            key_alias: String::new(),
            cost_center: "CC-200".into(),
            model: "llama-3-70b-eu".into(),
            deployment: scrape
                .series
                .keys()
                .find(|k| k.model == "llama-3-70b-eu")
                .map(|k| k.deployment.clone())
                .unwrap_or_default(),
        };
        let support = scrape.series.get(&key).expect("CC-200/support/llama");
        assert_eq!(
            (
                support.requests,
                support.input_tokens,
                support.output_tokens
            ),
            (5, 259, 105)
        );
        let debug = format!("{:?}", scrape.series);
        for secret in [
            "@example.com",
            "litellm_proxy_master_key",
            "default_user_id",
        ] {
            assert!(!debug.contains(secret), "{secret} leaked into the usage");
        }
    }

    #[test]
    fn the_minimal_config_parses_too() {
        let scrape = fixture("metrics-minimal-config.txt");
        assert!(total(&scrape).requests > 0);
        assert!(scrape.process_start.is_some());
    }

    #[test]
    fn a_fractional_token_count_is_refused() {
        let err = read_scrape("litellm_input_tokens_metric_total{model=\"m\"} 1.5\n")
            .expect_err("fractional tokens");
        assert!(err.to_string().contains("not a count"), "{err}");
    }

    #[test]
    fn reads_the_token_counters_of_a_vllm_server() {
        // The shape vLLM serves (docs.vllm.ai "Production Metrics"): counters named with a
        // colon, a `_total` sample, labelled by model (and engine in V1).
        let text = "\
# HELP vllm:prompt_tokens_total Number of prefill tokens processed.
# TYPE vllm:prompt_tokens_total counter
vllm:prompt_tokens_total{engine=\"0\",model_name=\"meta-llama/Llama-3-70B\"} 1234.0
# HELP vllm:generation_tokens_total Number of generation tokens processed.
# TYPE vllm:generation_tokens_total counter
vllm:generation_tokens_total{engine=\"0\",model_name=\"meta-llama/Llama-3-70B\"} 567.0
vllm:request_success_total{engine=\"0\",finished_reason=\"stop\",model_name=\"meta-llama/Llama-3-70B\"} 9.0
vllm:request_success_total{engine=\"0\",finished_reason=\"length\",model_name=\"meta-llama/Llama-3-70B\"} 1.0
vllm:iteration_tokens_total_sum{model_name=\"meta-llama/Llama-3-70B\"} 1801.0
process_start_time_seconds 1.7e9
";
        let served = read_served(text).expect("parses");
        assert_eq!(
            (
                served.counters.input_tokens,
                served.counters.output_tokens,
                served.counters.requests
            ),
            (1234, 567, 10)
        );
        assert_eq!(served.process_start, Some(1.7e9));
    }
}
