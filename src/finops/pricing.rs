//! What a token costs: the price book built from the InferenceBackends of a region.

use std::collections::BTreeMap;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::api::InferenceBackend;
use kube::ResourceExt;

/// How a deployment is charged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Price {
    /// An external API, by its token prices.
    Tokens {
        /// ISO 4217 currency.
        currency: String,
        /// Price of one million input tokens.
        input_per_million: Decimal,
        /// Price of one million output tokens.
        output_per_million: Decimal,
    },
    /// A self-hosted vLLM backend, by GPU-hours.
    GpuHours {
        /// ISO 4217 currency.
        currency: String,
        /// Cost of one GPU for one hour.
        per_gpu_hour: Decimal,
        /// GPUs per replica.
        gpus_per_replica: u32,
    },
}

/// Prices by deployment id (`<namespace>.<InferenceBackend name>`, the LiteLLM `model_id` the
/// rendered config sets).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PriceBook {
    prices: BTreeMap<String, Price>,
}

/// The deployment id LiteLLM reports for a backend (`model_info.id` in the rendered config).
pub fn deployment_id(backend: &InferenceBackend) -> String {
    format!(
        "{}.{}",
        backend.namespace().unwrap_or_default(),
        backend.name_any()
    )
}

impl PriceBook {
    /// The prices of `backends`; a backend without a price (or with a malformed one, which
    /// the schema refuses) is absent and is charged what the gateway reports.
    pub fn from_backends<'a>(backends: impl IntoIterator<Item = &'a InferenceBackend>) -> Self {
        let mut prices = BTreeMap::new();
        for backend in backends {
            if let Some(price) = price_of(backend) {
                prices.insert(deployment_id(backend), price);
            }
        }
        Self { prices }
    }

    /// Adds or replaces a price (tests, benchmarks).
    pub fn insert(&mut self, deployment: &str, price: Price) {
        self.prices.insert(deployment.to_owned(), price);
    }

    /// The price of `deployment`.
    pub fn get(&self, deployment: &str) -> Option<&Price> {
        self.prices.get(deployment)
    }
}

fn price_of(backend: &InferenceBackend) -> Option<Price> {
    if let Some(vllm) = &backend.spec.vllm {
        let cost = vllm.gpu_hourly_cost.as_ref()?;
        return Some(Price::GpuHours {
            currency: cost.currency.clone(),
            per_gpu_hour: Decimal::from_str(&cost.amount).ok()?,
            gpus_per_replica: u32::try_from(vllm.gpus.count).ok()?,
        });
    }
    let pricing = backend.spec.pricing.as_ref()?;
    Some(Price::Tokens {
        currency: pricing.currency.clone(),
        input_per_million: Decimal::from_str(&pricing.input_per_1m_tokens).ok()?,
        output_per_million: Decimal::from_str(&pricing.output_per_1m_tokens).ok()?,
    })
}

/// Cost of `input` and `output` tokens at a token price: exact, no rounding.
pub fn token_cost(
    input: u64,
    output: u64,
    per_million_in: Decimal,
    per_million_out: Decimal,
) -> Decimal {
    let million = Decimal::from(1_000_000u32);
    (Decimal::from(input) * per_million_in + Decimal::from(output) * per_million_out) / million
}

/// Cost of `gpus` GPUs running for `seconds` at `per_gpu_hour`.
pub fn gpu_cost(gpus: u32, seconds: u64, per_gpu_hour: Decimal) -> Decimal {
    Decimal::from(gpus) * Decimal::from(seconds) * per_gpu_hour / Decimal::from(3600u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_cost_is_exact() {
        // 0.000362 USD of the fixture: 210 input and 76 output tokens at 1 and 2 per million.
        let cost = token_cost(210, 76, Decimal::ONE, Decimal::TWO);
        assert_eq!(cost.to_string(), "0.000362");
    }

    #[test]
    fn gpu_cost_is_gpus_times_hours_times_rate() {
        let cost = gpu_cost(4, 1800, Decimal::from_str("2.90").expect("decimal"));
        assert_eq!(cost.normalize().to_string(), "5.8");
    }
}
