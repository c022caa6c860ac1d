//! Command-line subcommands whose logic lives in the library, so that it can be tested without
//! spawning the binary (`main.rs` parses arguments, prints and exits).

pub mod check;
pub mod evidence;
