//! The usage ledger of a region: exactly-once accounting of gateway counters.
//!
//! Counters reset when a gateway restarts, scrapes fail, pods come and go and the operator
//! itself restarts. The ledger keeps, per source (gateway pod UID or metrics URL), the
//! process start time and the last value of every series, and the running totals those
//! values have added up to. Both live in one object in the API server (a ConfigMap in the
//! region namespace, written with a resourceVersion precondition), so a scrape's delta and
//! the cursor that prevents counting it twice are committed together or not at all. A
//! region's ledger is many such ledgers, one per shard of its series (`finops::shards`):
//! each is complete for the series it holds, which is what keeps a torn multi-shard write
//! exact.
//!
//! What no pull-based collector can recover: tokens a gateway counted after the last
//! successful scrape and before it died. Those are lost, and the README says so.

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::pricing::{Price, PriceBook, gpu_cost, token_cost};
use super::usage::{Counters, Scrape, SeriesKey, Served};

/// Version of the serialized ledger.
pub const LEDGER_VERSION: u32 = 1;

/// Money per currency.
pub type Amounts = BTreeMap<String, Decimal>;

/// Running totals of one series since the ledger began.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Totals {
    /// Input tokens.
    #[serde(default)]
    pub input_tokens: u64,
    /// Output tokens.
    #[serde(default)]
    pub output_tokens: u64,
    /// Successful requests.
    #[serde(default)]
    pub requests: u64,
    /// Cost per currency.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub cost: Amounts,
    /// The part of `cost` that input tokens cost: their token price, or their share of GPU
    /// time (a series' GPU share is split between its input and output tokens in proportion
    /// to their counts). The finance report's `SkuMeter` rows come from it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub input_cost: Amounts,
    /// The part of `cost` that output tokens cost. `cost - input_cost - output_cost` is what
    /// cannot be split: spend the gateway reported for a deployment the operator has no price
    /// of, and everything a ledger of an earlier release counted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub output_cost: Amounts,
}

impl Totals {
    fn add_counters(&mut self, delta: &Counters) {
        self.input_tokens += delta.input_tokens;
        self.output_tokens += delta.output_tokens;
        self.requests += delta.requests;
    }

    /// Adds `other` (tokens, requests and every currency's cost).
    pub fn add(&mut self, other: &Totals) {
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.requests += other.requests;
        for (currency, amount) in &other.cost {
            add_amount(&mut self.cost, currency, *amount);
        }
    }
}

/// Adds `amount` in `currency` to `amounts`.
pub fn add_amount(amounts: &mut Amounts, currency: &str, amount: Decimal) {
    if amount.is_zero() {
        return;
    }
    *amounts.entry(currency.to_owned()).or_default() += amount;
}

/// What the ledger remembers of a source between scrapes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cursor {
    /// `process_start_time_seconds` of the last scrape: a new value means a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_start: Option<f64>,
    /// Unix time of the last successful scrape.
    pub last_seen: i64,
    /// Last value of every series.
    #[serde(with = "entries")]
    pub series: BTreeMap<SeriesKey, Counters>,
}

/// GPU time of a self-hosted deployment.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GpuMeter {
    /// Model name clients use for the deployment.
    pub model: String,
    /// Unix time GPU time was last charged up to.
    pub charged_until: i64,
    /// GPU-seconds charged.
    #[serde(default)]
    pub gpu_seconds: u64,
    /// Cost of intervals in which the deployment served no token: nobody's, reported as
    /// its own line.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub idle_cost: Amounts,
}

/// The ledger of one region.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ledger {
    /// Serialization version.
    #[serde(default)]
    pub version: u32,
    /// Generation of a stored bucket shard, raised by each write of the whole shard: a delta
    /// object applies to exactly one generation (see `finops::shards::Delta`). 0 elsewhere.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub generation: u64,
    /// Cursors by source.
    #[serde(default)]
    pub sources: BTreeMap<String, Cursor>,
    /// Totals by series, since the ledger began.
    #[serde(default, with = "entries")]
    pub usage: BTreeMap<SeriesKey, Totals>,
    /// GPU meters by deployment.
    #[serde(default)]
    pub gpu: BTreeMap<String, GpuMeter>,
    /// Tokens the vLLM servers of each deployment served, through the gateway or not.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub served: BTreeMap<String, Counters>,
}

/// Team of tokens a self-hosted deployment served that did not come through the gateway (a
/// client calling the vLLM Service directly): their GPU share is charged to this line.
pub const DIRECT: &str = "(direct)";

/// A self-hosted deployment running during a collection interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunningGpus {
    /// Deployment id.
    pub deployment: String,
    /// Model name clients use.
    pub model: String,
    /// Ready replicas now.
    pub replicas: u32,
}

/// Pod sources not seen for this long, and no longer listed, are forgotten. A pod UID never
/// comes back, so forgetting it cannot double count.
const FORGET_POD_AFTER_SECONDS: i64 = 3600;

impl Ledger {
    /// Adds what `scrape` of `source` says happened since the last scrape of that source and
    /// returns that delta per series.
    pub fn record(
        &mut self,
        source: &str,
        scrape: &Scrape,
        now: i64,
        prices: &PriceBook,
    ) -> BTreeMap<SeriesKey, Counters> {
        let deltas = self.advance(source, scrape, now);
        self.add_usage(&deltas, prices);
        deltas
    }

    /// Records what a vLLM server of `deployment` served since its last scrape, through the
    /// gateway or not; returns the delta. These tokens are not usage of anyone: the gateway's
    /// series say who used what. What the server served beyond them in an interval came
    /// around the gateway, and `charge_gpus` charges its GPU share to team `(direct)`.
    pub fn record_served(
        &mut self,
        source: &str,
        deployment: &str,
        served: &Served,
        now: i64,
    ) -> Counters {
        let key = SeriesKey {
            deployment: deployment.to_owned(),
            ..SeriesKey::default()
        };
        let scrape = Scrape {
            process_start: served.process_start,
            series: BTreeMap::from([(key.clone(), served.counters)]),
        };
        let delta = self
            .advance(source, &scrape, now)
            .remove(&key)
            .unwrap_or_default();
        let totals = self.served.entry(deployment.to_owned()).or_default();
        totals.input_tokens += delta.input_tokens;
        totals.output_tokens += delta.output_tokens;
        totals.requests += delta.requests;
        delta
    }

    /// Moves the cursor of `source` to `scrape` and returns what is new per series.
    fn advance(
        &mut self,
        source: &str,
        scrape: &Scrape,
        now: i64,
    ) -> BTreeMap<SeriesKey, Counters> {
        self.version = LEDGER_VERSION;
        let known = self.sources.contains_key(source);
        let cursor = self.sources.entry(source.to_owned()).or_default();
        // A new process start time means every counter began again at zero. Without one,
        // each series that went down is taken as reset on its own. A source never seen
        // before has counted everything since its start: all of it is new.
        let same_process = known && cursor.process_start == scrape.process_start;
        let mut deltas = BTreeMap::new();
        for (key, now_counters) in &scrape.series {
            let previous = if same_process {
                cursor.series.get(key)
            } else {
                None
            };
            let delta = match previous {
                None => *now_counters,
                Some(previous) => now_counters.since(previous).unwrap_or(*now_counters),
            };
            if !delta.is_zero() {
                deltas.insert(key.clone(), delta);
            }
        }
        if same_process {
            for (key, counters) in &scrape.series {
                cursor.series.insert(key.clone(), *counters);
            }
        } else {
            cursor.series = scrape.series.clone();
        }
        cursor.process_start = scrape.process_start;
        cursor.last_seen = now;
        deltas
    }

    /// Adds `deltas` to the usage totals, with their cost.
    fn add_usage(&mut self, deltas: &BTreeMap<SeriesKey, Counters>, prices: &PriceBook) {
        for (key, delta) in deltas {
            let totals = self.usage.entry(key.clone()).or_default();
            totals.add_counters(delta);
            match prices.get(&key.deployment) {
                Some(Price::Tokens {
                    currency,
                    input_per_million,
                    output_per_million,
                }) => {
                    let input = token_cost(
                        delta.input_tokens,
                        0,
                        *input_per_million,
                        *output_per_million,
                    );
                    let output = token_cost(
                        0,
                        delta.output_tokens,
                        *input_per_million,
                        *output_per_million,
                    );
                    add_amount(&mut totals.cost, currency, input + output);
                    add_amount(&mut totals.input_cost, currency, input);
                    add_amount(&mut totals.output_cost, currency, output);
                }
                // Charged by GPU time in `charge_gpus`.
                Some(Price::GpuHours { .. }) => {}
                // A deployment the operator did not render (e.g. added through the gateway's
                // admin API): what the gateway itself reports, in USD.
                None => {
                    let reported = Decimal::from_f64_retain(delta.gateway_spend_usd)
                        .unwrap_or_default()
                        .round_dp(10);
                    add_amount(&mut totals.cost, "USD", reported);
                }
            }
        }
    }

    /// Charges the GPU time of `running` deployments since they were last charged, shared by
    /// the series that used them in this interval (`interval` is the sum of the deltas
    /// `record` returned this tick) in proportion to their tokens; tokens the deployment's
    /// servers served beyond those (`served`, from `record_served`) are team `(direct)`'s;
    /// an interval without tokens is idle cost.
    pub fn charge_gpus(
        &mut self,
        now: i64,
        running: &[RunningGpus],
        interval: &BTreeMap<SeriesKey, Counters>,
        served: &BTreeMap<String, Counters>,
        prices: &PriceBook,
    ) {
        self.version = LEDGER_VERSION;
        for deployment in running {
            let Some(Price::GpuHours {
                currency,
                per_gpu_hour,
                gpus_per_replica,
            }) = prices.get(&deployment.deployment)
            else {
                continue;
            };
            let meter = self
                .gpu
                .entry(deployment.deployment.clone())
                .or_insert_with(|| GpuMeter {
                    model: deployment.model.clone(),
                    charged_until: now,
                    ..GpuMeter::default()
                });
            let seconds = u64::try_from(now - meter.charged_until).unwrap_or(0);
            meter.charged_until = meter.charged_until.max(now);
            if seconds == 0 || deployment.replicas == 0 {
                continue;
            }
            let gpus = gpus_per_replica * deployment.replicas;
            meter.gpu_seconds += u64::from(gpus) * seconds;
            // To the nano-unit: a division by 3600 has no end in decimal, and a ledger
            // carrying 28 digits helps nobody. At most 5e-10 per interval is rounded away.
            let cost = gpu_cost(gpus, seconds, *per_gpu_hour).round_dp(9);
            // (series, input tokens, output tokens) of the interval.
            let mut users: Vec<(SeriesKey, u64, u64)> = interval
                .iter()
                .filter(|(key, _)| key.deployment == deployment.deployment)
                .map(|(key, c)| (key.clone(), c.input_tokens, c.output_tokens))
                .filter(|(_, input, output)| input + output > 0)
                .collect();
            let through_gateway: u64 = users.iter().map(|(_, i, o)| i + o).sum();
            let served = served.get(&deployment.deployment);
            let on_gpus = served
                .map(|c| c.input_tokens + c.output_tokens)
                .unwrap_or(0);
            if on_gpus > through_gateway {
                let (gateway_in, gateway_out) = users
                    .iter()
                    .fold((0u64, 0u64), |(i, o), (_, ui, uo)| (i + ui, o + uo));
                let (served_in, served_out) = served
                    .map(|c| (c.input_tokens, c.output_tokens))
                    .unwrap_or_default();
                let (mut direct_in, mut direct_out) = (
                    served_in.saturating_sub(gateway_in),
                    served_out.saturating_sub(gateway_out),
                );
                if direct_in + direct_out == 0 {
                    // Only the sum is larger (a direction the gateway over-reported): the
                    // difference is split as output, the larger part of GPU time.
                    direct_out = on_gpus - through_gateway;
                }
                if direct_in + direct_out > on_gpus - through_gateway {
                    direct_in = direct_in.min(on_gpus - through_gateway);
                    direct_out = on_gpus - through_gateway - direct_in;
                }
                users.push((
                    SeriesKey {
                        team: DIRECT.to_owned(),
                        model: deployment.model.clone(),
                        deployment: deployment.deployment.clone(),
                        ..SeriesKey::default()
                    },
                    direct_in,
                    direct_out,
                ));
            }
            let tokens: u64 = users.iter().map(|(_, i, o)| i + o).sum();
            if tokens == 0 {
                add_amount(&mut meter.idle_cost, currency, cost);
                continue;
            }
            // Shares rounded to 1e-9; the last user gets the remainder, so the shares add up
            // to the interval's cost exactly.
            let mut left = cost;
            for (i, (key, input, output)) in users.iter().enumerate() {
                let used = input + output;
                let share = if i + 1 == users.len() {
                    left
                } else {
                    (cost * Decimal::from(used) / Decimal::from(tokens)).round_dp(9)
                };
                left -= share;
                // The input part rounded the same way; output takes the rest of the share,
                // so the two add up to it exactly.
                let input_share = (share * Decimal::from(*input) / Decimal::from(used)).round_dp(9);
                let totals = self.usage.entry(key.clone()).or_default();
                add_amount(&mut totals.cost, currency, share);
                add_amount(&mut totals.input_cost, currency, input_share);
                add_amount(&mut totals.output_cost, currency, share - input_share);
            }
        }
        // A deployment no longer running stops accruing, and restarts from `now` when back.
        let running: BTreeSet<&str> = running.iter().map(|r| r.deployment.as_str()).collect();
        for (name, meter) in &mut self.gpu {
            if !running.contains(name.as_str()) {
                meter.charged_until = now;
            }
        }
    }

    /// Forgets pod sources (gateway `pod/…` and vLLM `vllm/…`) that are gone: not in `live`
    /// and not seen for an hour. Metrics URLs (`url/…`) are kept.
    pub fn forget_gone_pods(&mut self, live: &BTreeSet<String>, now: i64) {
        self.sources.retain(|source, cursor| {
            source.starts_with("url/")
                || live.contains(source)
                || now - cursor.last_seen < FORGET_POD_AFTER_SECONDS
        });
    }

    /// Totals summed over every series.
    pub fn grand_total(&self) -> Totals {
        let mut sum = Totals::default();
        for totals in self.usage.values() {
            sum.input_tokens += totals.input_tokens;
            sum.output_tokens += totals.output_tokens;
            sum.requests += totals.requests;
            for (currency, amount) in &totals.cost {
                add_amount(&mut sum.cost, currency, *amount);
            }
        }
        for meter in self.gpu.values() {
            for (currency, amount) in &meter.idle_cost {
                add_amount(&mut sum.cost, currency, *amount);
            }
        }
        sum
    }
}

/// Why a stored ledger cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Not gzip, or not the ledger's JSON.
    #[error("cannot read the stored ledger: {0}")]
    Decode(String),
    /// Serialization failed (a bug, reported rather than panicking).
    #[error("cannot encode the ledger: {0}")]
    Encode(String),
}

impl Ledger {
    /// The ledger as stored: gzip-compressed JSON. The JSON repeats label values per source
    /// and series; compressed, ten thousand series fit in a ConfigMap's 1 MiB (see the
    /// capacity test).
    pub fn to_gzip(&self) -> Result<Vec<u8>, LedgerError> {
        use std::io::Write;
        let json = serde_json::to_vec(self).map_err(|e| LedgerError::Encode(e.to_string()))?;
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder
            .write_all(&json)
            .and_then(|()| encoder.finish())
            .map_err(|e| LedgerError::Encode(e.to_string()))
    }

    /// Reads a ledger written by [`Ledger::to_gzip`].
    pub fn from_gzip(bytes: &[u8]) -> Result<Self, LedgerError> {
        let decoder = flate2::read::GzDecoder::new(bytes);
        serde_json::from_reader(decoder).map_err(|e| LedgerError::Decode(e.to_string()))
    }
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Serializes a map with struct keys as a list of `{key, value}` entries (JSON object keys
/// must be strings).
pub(crate) mod entries {
    use std::collections::BTreeMap;

    use serde::de::DeserializeOwned;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Entry<K, V> {
        key: K,
        value: V,
    }

    pub fn serialize<S, K, V>(map: &BTreeMap<K, V>, serializer: S) -> Result<S::Ok, S::Error>
    where
        S: Serializer,
        K: Serialize,
        V: Serialize,
    {
        serializer.collect_seq(map.iter().map(|(key, value)| Entry { key, value }))
    }

    pub fn deserialize<'de, D, K, V>(deserializer: D) -> Result<BTreeMap<K, V>, D::Error>
    where
        D: Deserializer<'de>,
        K: DeserializeOwned + Ord,
        V: DeserializeOwned,
    {
        let entries = Vec::<Entry<K, V>>::deserialize(deserializer)?;
        Ok(entries.into_iter().map(|e| (e.key, e.value)).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;
    use crate::finops::fixture_scrape as fixture;

    fn usd_prices(scrape: &Scrape) -> PriceBook {
        // The fixture config's prices: llama 1/2, mistral 0.2/0.6 USD per million tokens.
        let mut book = PriceBook::default();
        for key in scrape.series.keys() {
            let (input, output) = if key.model.starts_with("llama") {
                ("1", "2")
            } else {
                ("0.2", "0.6")
            };
            book.insert(
                &key.deployment,
                Price::Tokens {
                    currency: "USD".into(),
                    input_per_million: Decimal::from_str(input).expect("decimal"),
                    output_per_million: Decimal::from_str(output).expect("decimal"),
                },
            );
        }
        book
    }

    #[test]
    fn a_restart_between_two_fixture_scrapes_counts_both_exactly_once() {
        let before = fixture("metrics-before-restart.txt");
        let after = fixture("metrics-after-restart.txt");
        let prices = usd_prices(&before);
        let mut ledger = Ledger::default();
        ledger.record("url/gw", &before, 100, &prices);
        // The same scrape again (a retry, or a scrape that raced a failed write) adds nothing.
        assert!(ledger.record("url/gw", &before, 110, &prices).is_empty());
        ledger.record("url/gw", &after, 200, &prices);
        // And an operator restart: the ledger goes through JSON and on.
        let json = serde_json::to_string(&ledger).expect("serializes");
        let mut ledger: Ledger = serde_json::from_str(&json).expect("deserializes");
        assert!(ledger.record("url/gw", &after, 210, &prices).is_empty());
        let total = ledger.grand_total();
        assert_eq!(
            (total.input_tokens, total.output_tokens, total.requests),
            (1474 + 284, 713 + 139, 29 + 5)
        );
        // 0.0019124 + 0.000352 USD, exactly.
        assert_eq!(total.cost["USD"].normalize().to_string(), "0.0022644");
    }

    #[test]
    fn gpu_time_is_shared_by_token_share_and_idle_time_is_its_own_line() {
        let mut prices = PriceBook::default();
        prices.insert(
            "ns.llama",
            Price::GpuHours {
                currency: "EUR".into(),
                per_gpu_hour: Decimal::from_str("3").expect("decimal"),
                gpus_per_replica: 2,
            },
        );
        let running = [RunningGpus {
            deployment: "ns.llama".into(),
            model: "llama".into(),
            replicas: 1,
        }];
        let key = |team: &str| SeriesKey {
            team: team.into(),
            model: "llama".into(),
            deployment: "ns.llama".into(),
            ..SeriesKey::default()
        };
        let mut ledger = Ledger::default();
        ledger.charge_gpus(0, &running, &BTreeMap::new(), &BTreeMap::new(), &prices);
        // An hour with no tokens: 2 GPUs × 1 h × 3 EUR of idle cost.
        ledger.charge_gpus(3600, &running, &BTreeMap::new(), &BTreeMap::new(), &prices);
        assert_eq!(ledger.gpu["ns.llama"].idle_cost["EUR"], Decimal::from(6));
        // An hour in which team a used 1 token and b 2: 6 EUR split 2 : 4.
        let tokens = |n| Counters {
            input_tokens: n,
            ..Counters::default()
        };
        let interval = BTreeMap::from([(key("a"), tokens(1)), (key("b"), tokens(2))]);
        ledger.charge_gpus(7200, &running, &interval, &BTreeMap::new(), &prices);
        assert_eq!(ledger.usage[&key("a")].cost["EUR"], Decimal::from(2));
        assert_eq!(ledger.usage[&key("b")].cost["EUR"], Decimal::from(4));
        assert_eq!(ledger.grand_total().cost["EUR"], Decimal::from(12));
        assert_eq!(ledger.gpu["ns.llama"].gpu_seconds, 2 * 7200);
    }

    #[test]
    fn cost_is_split_by_token_direction_and_the_parts_add_up_to_it() {
        let mut prices = PriceBook::default();
        prices.insert(
            "ns.api",
            Price::Tokens {
                currency: "EUR".into(),
                input_per_million: Decimal::from(3),
                output_per_million: Decimal::from(15),
            },
        );
        prices.insert(
            "ns.llama",
            Price::GpuHours {
                currency: "EUR".into(),
                per_gpu_hour: Decimal::from(7),
                gpus_per_replica: 1,
            },
        );
        let key = |deployment: &str| SeriesKey {
            team: "a".into(),
            model: deployment.into(),
            deployment: deployment.into(),
            ..SeriesKey::default()
        };
        let counters = |input, output| Counters {
            input_tokens: input,
            output_tokens: output,
            ..Counters::default()
        };
        let mut ledger = Ledger::default();
        // Token price: 1,000,000 input at 3 and 200,000 output at 15 per million.
        ledger.add_usage(
            &BTreeMap::from([(key("ns.api"), counters(1_000_000, 200_000))]),
            &prices,
        );
        let api = &ledger.usage[&key("ns.api")];
        assert_eq!(api.input_cost["EUR"], Decimal::from(3));
        assert_eq!(api.output_cost["EUR"], Decimal::from(3));
        assert_eq!(api.cost["EUR"], Decimal::from(6));
        // GPU time: an hour of 7 EUR, shared 1 : 2 by the series' input and output tokens;
        // the parts are rounded to 1e-9 and still add up exactly.
        let running = [RunningGpus {
            deployment: "ns.llama".into(),
            model: "llama".into(),
            replicas: 1,
        }];
        ledger.charge_gpus(0, &running, &BTreeMap::new(), &BTreeMap::new(), &prices);
        let interval = BTreeMap::from([(key("ns.llama"), counters(1, 2))]);
        ledger.charge_gpus(3600, &running, &interval, &BTreeMap::new(), &prices);
        let llama = &ledger.usage[&key("ns.llama")];
        assert_eq!(llama.cost["EUR"], Decimal::from(7));
        assert_eq!(
            llama.input_cost["EUR"],
            Decimal::from_str("2.333333333").expect("d")
        );
        assert_eq!(
            llama.input_cost["EUR"] + llama.output_cost["EUR"],
            llama.cost["EUR"]
        );
    }

    #[test]
    fn tokens_served_around_the_gateway_take_their_gpu_share_as_direct() {
        let mut prices = PriceBook::default();
        prices.insert(
            "ns.llama",
            Price::GpuHours {
                currency: "EUR".into(),
                per_gpu_hour: Decimal::from(10),
                gpus_per_replica: 1,
            },
        );
        let running = [RunningGpus {
            deployment: "ns.llama".into(),
            model: "llama".into(),
            replicas: 1,
        }];
        let team_a = SeriesKey {
            team: "a".into(),
            model: "llama".into(),
            deployment: "ns.llama".into(),
            ..SeriesKey::default()
        };
        let mut ledger = Ledger::default();
        ledger.charge_gpus(0, &running, &BTreeMap::new(), &BTreeMap::new(), &prices);
        // The vLLM server counted 100 tokens; the gateway attributes 60 to team a.
        let served = |input| Served {
            process_start: Some(1.0),
            counters: Counters {
                input_tokens: input,
                ..Counters::default()
            },
        };
        let delta = ledger.record_served("vllm/pod-1", "ns.llama", &served(100), 3600);
        assert_eq!(delta.input_tokens, 100);
        assert_eq!(
            ledger
                .record_served("vllm/pod-1", "ns.llama", &served(100), 3601)
                .input_tokens,
            0
        );
        let interval = BTreeMap::from([(
            team_a.clone(),
            Counters {
                input_tokens: 60,
                ..Counters::default()
            },
        )]);
        let served_interval = BTreeMap::from([("ns.llama".to_owned(), delta)]);
        ledger.charge_gpus(3600, &running, &interval, &served_interval, &prices);
        assert_eq!(ledger.usage[&team_a].cost["EUR"], Decimal::from(6));
        let direct = ledger
            .usage
            .iter()
            .find(|(k, _)| k.team == DIRECT)
            .expect("direct line");
        assert_eq!(direct.1.cost["EUR"], Decimal::from(4));
        assert_eq!(
            direct.1.input_tokens, 0,
            "direct tokens are not usage, only their cost"
        );
        assert_eq!(ledger.served["ns.llama"].input_tokens, 100);
    }

    #[test]
    fn ten_thousand_series_from_two_gateway_pods_fit_in_a_config_map() {
        // Capacity of the ConfigMap-backed ledger (1 MiB): realistic names and counts, every
        // series seen by both pods. The README quotes the sizes printed here.
        let mut scrape = Scrape {
            process_start: Some(1.0),
            series: BTreeMap::new(),
        };
        for i in 0..10_000u64 {
            scrape.series.insert(
                SeriesKey {
                    team: format!("team-{:03}", i % 50),
                    key_alias: format!("key-{i:04}"),
                    cost_center: format!("CC-{:04}", i % 20),
                    model: format!("llama-3-70b-eu-{}", i % 5),
                    deployment: format!("sovereign-eu.backend-{}", i % 5),
                },
                Counters {
                    input_tokens: 123_456_789 + i * 7_919,
                    output_tokens: 98_765_432 + i * 104_729,
                    requests: 1_234_567 + i * 13,
                    gateway_spend_usd: 0.0,
                },
            );
        }
        let mut prices = PriceBook::default();
        for d in 0..5 {
            prices.insert(
                &format!("sovereign-eu.backend-{d}"),
                Price::Tokens {
                    currency: "EUR".into(),
                    input_per_million: Decimal::from_str("2.50").expect("decimal"),
                    output_per_million: Decimal::from_str("7.50").expect("decimal"),
                },
            );
        }
        let mut ledger = Ledger::default();
        ledger.record(
            "pod/9f0c6d3e-1111-4a5b-9c7d-000000000001",
            &scrape,
            1,
            &prices,
        );
        ledger.record(
            "pod/9f0c6d3e-1111-4a5b-9c7d-000000000002",
            &scrape,
            1,
            &prices,
        );
        let json = serde_json::to_vec(&ledger).expect("json").len();
        let stored = ledger.to_gzip().expect("gzip");
        eprintln!(
            "10,000 series × 2 pods: {json} bytes of JSON, {} stored",
            stored.len()
        );
        assert!(stored.len() < 1_000_000, "{} bytes", stored.len());
        assert_eq!(Ledger::from_gzip(&stored).expect("reads back"), ledger);
    }

    #[test]
    fn gone_pods_are_forgotten_but_urls_are_not() {
        let mut ledger = Ledger::default();
        let prices = PriceBook::default();
        ledger.record("pod/old", &Scrape::default(), 0, &prices);
        ledger.record("url/x", &Scrape::default(), 0, &prices);
        ledger.forget_gone_pods(&BTreeSet::new(), 10);
        assert_eq!(ledger.sources.len(), 2);
        ledger.forget_gone_pods(&BTreeSet::new(), 10_000);
        assert_eq!(ledger.sources.keys().collect::<Vec<_>>(), ["url/x"]);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// What can happen between two ticks of the collector.
        #[derive(Clone, Debug)]
        enum Step {
            /// A request through gateway `gw` for series `series`.
            Request {
                gw: usize,
                series: usize,
                input: u64,
                output: u64,
            },
            /// The collector scrapes `gw`; `committed` says whether the ledger write
            /// succeeded (a conflict or a crash before the write loses the whole tick).
            Scrape { gw: usize, committed: bool },
            /// The gateway process restarts: every counter starts again from zero.
            Restart { gw: usize },
            /// The gateway pod is replaced by a new pod (a new source).
            Replace { gw: usize },
        }

        fn step() -> impl Strategy<Value = Step> {
            prop_oneof![
                4 => (0..2usize, 0..3usize, 0..500u64, 0..500u64).prop_map(|(gw, series, input, output)| Step::Request { gw, series, input, output }),
                3 => (0..2usize, proptest::bool::weighted(0.8)).prop_map(|(gw, committed)| Step::Scrape { gw, committed }),
                1 => (0..2usize).prop_map(|gw| Step::Restart { gw }),
                1 => (0..2usize).prop_map(|gw| Step::Replace { gw }),
            ]
        }

        struct Gateway {
            source: String,
            start: f64,
            series: BTreeMap<SeriesKey, Counters>,
            /// Tokens counted by the gateway since the last committed scrape.
            pending: u64,
        }

        fn key(series: usize) -> SeriesKey {
            SeriesKey {
                team: format!("team-{series}"),
                model: "m".into(),
                deployment: "d".into(),
                ..SeriesKey::default()
            }
        }

        /// One collector tick as the controller runs it: read the ledger from the API
        /// server, record, write back only if the write succeeds.
        fn tick(stored: &mut String, gw: &Gateway, now: i64, committed: bool) {
            let mut ledger: Ledger = serde_json::from_str(stored).expect("stored ledger");
            let scrape = Scrape {
                process_start: Some(gw.start),
                series: gw.series.clone(),
            };
            ledger.record(&gw.source, &scrape, now, &PriceBook::default());
            if committed {
                *stored = serde_json::to_string(&ledger).expect("serializes");
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(512))]
            /// Whatever happens, the ledger counts every token exactly once, except the
            /// tokens a gateway counted after its last committed scrape and before it
            /// restarted or went away, which nothing can recover.
            #[test]
            fn every_token_is_counted_once(steps in proptest::collection::vec(step(), 0..80)) {
                let mut gateways: Vec<Gateway> = (0..2).map(|i| Gateway {
                    source: format!("pod/{i}-0"),
                    start: 1.0,
                    series: BTreeMap::new(),
                    pending: 0,
                }).collect();
                let mut stored = serde_json::to_string(&Ledger::default()).expect("json");
                let (mut made, mut lost, mut now, mut pods) = (0u64, 0u64, 0i64, 0usize);
                for step in steps {
                    now += 1;
                    match step {
                        Step::Request { gw, series, input, output } => {
                            let c = gateways[gw].series.entry(key(series)).or_default();
                            c.input_tokens += input;
                            c.output_tokens += output;
                            c.requests += 1;
                            gateways[gw].pending += input + output;
                            made += input + output;
                        }
                        Step::Scrape { gw, committed } => {
                            tick(&mut stored, &gateways[gw], now, committed);
                            if committed {
                                gateways[gw].pending = 0;
                            }
                        }
                        Step::Restart { gw } => {
                            let g = &mut gateways[gw];
                            lost += std::mem::take(&mut g.pending);
                            g.series.clear();
                            g.start += 1.0;
                        }
                        Step::Replace { gw } => {
                            pods += 1;
                            let g = &mut gateways[gw];
                            lost += std::mem::take(&mut g.pending);
                            g.series.clear();
                            g.source = format!("pod/{gw}-{pods}");
                        }
                    }
                }
                for gw in &gateways {
                    now += 1;
                    tick(&mut stored, gw, now, true);
                }
                let ledger: Ledger = serde_json::from_str(&stored).expect("json");
                let total = ledger.grand_total();
                prop_assert_eq!(total.input_tokens + total.output_tokens, made - lost);
            }
        }
    }
}
