//! `sovereign-operator version`: the operator version and the API it serves.

use std::process::ExitCode;

use super::CliError;
use crate::api;

/// `sovereign-operator 0.1.0 (API sovereign.ai/v1alpha1, Kubernetes >= 1.33)`.
pub fn text() -> String {
    format!(
        "sovereign-operator {} (API {}/{}, Kubernetes >= 1.33)",
        env!("CARGO_PKG_VERSION"),
        api::GROUP,
        api::VERSION
    )
}

/// Prints [`text`].
pub fn run() -> Result<ExitCode, CliError> {
    println!("{}", text());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_api() {
        assert!(super::text().contains("(API sovereign.ai/v1alpha1, "));
    }
}
