//! The subcommands of `sovereign-operator`, one module each, with their logic in the library so
//! that it is unit-tested without spawning the binary. `src/main.rs` only parses the command
//! line (clap) and dispatches here.
//!
//! # The pattern every command follows
//!
//! A command is a module `src/cli/<command>.rs` with:
//!
//! - `#[derive(clap::Args)] pub struct Args` — its flags, documented (the doc comments are the
//!   `--help` text). `main.rs` holds one `Command::<Name>(<command>::Args)` variant whose doc
//!   comment is the one-line description, and one dispatch arm.
//! - `pub fn run(args: Args) -> Result<ExitCode, CliError>` — does the work and prints the
//!   command's *output* (stdout, and for `check` its summary on stderr). `Ok` carries the exit
//!   code of an outcome that is not an error (`check`'s 1 for violations).
//! - its own `thiserror` enum, a variant per step, with `impl From<ThatError> for CliError`
//!   choosing the exit code per variant (2 for input that cannot be read, conflicts or does
//!   not validate; 1 for everything else).
//! - pure helpers (`fn render_text(...) -> Result<String, _>`, …) with `#[cfg(test)]` tests.
//!
//! Errors are printed in one place, [`finish`] (`error: <message>` on stderr, then the exit
//! code), so no command prints an error itself.
//!
//! Every offline command reads its input with [`crate::manifest`] and types the custom
//! resources with [`crate::manifest::classify`], which validates each against its CRD's
//! schema and CEL rules offline ([`crate::api::schema`]): an object the API server would refuse
//! is refused by every command with the API server's message, and exit code 2.

use std::process::ExitCode;

pub mod check;
pub mod crds;
pub mod evidence;
pub mod render;
pub mod report;
pub mod run;
pub mod version;

/// Input that cannot be used: unreadable, malformed, conflicting, or refused by the CRD
/// schema.
pub const EXIT_INPUT: u8 = 2;

/// Anything else that went wrong.
pub const EXIT_FAILURE: u8 = 1;

/// A command's failure with the exit code it stands for.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// The process exit code.
    pub code: u8,
    /// What went wrong (printed after `error: `).
    pub message: String,
}

impl CliError {
    /// Input that cannot be used: exit code 2.
    pub fn input(error: impl std::fmt::Display) -> Self {
        Self {
            code: EXIT_INPUT,
            message: error.to_string(),
        }
    }

    /// Any other failure: exit code 1.
    pub fn failure(error: impl std::fmt::Display) -> Self {
        Self {
            code: EXIT_FAILURE,
            message: error.to_string(),
        }
    }
}

/// Impossible to run at all: the async runtime of a command that talks to a cluster.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the async runtime: {0}")]
pub struct RuntimeError(#[from] std::io::Error);

impl From<RuntimeError> for CliError {
    fn from(error: RuntimeError) -> Self {
        Self::failure(error)
    }
}

/// A multi-threaded tokio runtime for the commands that talk to a cluster.
pub fn runtime() -> Result<tokio::runtime::Runtime, RuntimeError> {
    Ok(tokio::runtime::Runtime::new()?)
}

/// The one place a command's error is printed: `error: <message>` on stderr, and its exit
/// code.
pub fn finish(result: Result<ExitCode, CliError>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::from(error.code)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_errors_exit_2_and_others_1() {
        assert_eq!(CliError::input("bad").code, 2);
        assert_eq!(CliError::failure("broken").code, 1);
        assert_eq!(
            CliError::input("x.yaml:3: bad").to_string(),
            "x.yaml:3: bad"
        );
    }
}
