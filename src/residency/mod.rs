//! The residency rule engine: pure functions that decide whether objects keep their data
//! inside its borders. Used by the controllers, the audit and the offline check.
//!
//! [`engine`] holds the engine itself ([`Engine`]: regions + policies in, [`Finding`]s out);
//! the other modules are the single rules it is built from, also used on their own by the
//! controllers. [`admission`] compiles a policy into the ValidatingAdmissionPolicy the API
//! server enforces, with the engine's semantics for the rules one object can decide.

pub mod admission;
pub mod engine;
pub mod inference;
pub mod jurisdiction;
pub mod observability;
pub mod placement;
pub mod replication;
pub mod sinks;

pub use engine::{Engine, Evaluation, Finding, Inventory, ResidencyError, Rule};
