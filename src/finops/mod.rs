//! Token FinOps, pure: the Prometheus text parser, usage extraction, the exactly-once
//! ledger and where it is stored, pricing, budget evaluation, global budgets across clusters and finance reports. Nothing
//! here talks to the cluster; `controllers::usage`, `controllers::budget` and the `report`
//! command do. Reference: docs/finops.md.

pub mod budget;
pub mod exposition;
pub mod focus;
pub mod global;
pub mod ledger;
pub mod pricing;
pub mod report;
pub mod shards;
pub mod storage;

pub mod usage;

/// Path of a file of the LiteLLM fixtures in `../shared/fixtures/litellm`.
#[cfg(test)]
pub(crate) fn fixture_path(file: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/litellm")
        .join(file)
}

/// The usage read from a fixture file.
#[cfg(test)]
pub(crate) fn fixture_scrape(file: &str) -> usage::Scrape {
    let text = std::fs::read_to_string(fixture_path(file)).expect("fixture is readable");
    usage::read_scrape(&text).expect("fixture parses")
}
