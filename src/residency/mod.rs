//! The residency rule engine: pure functions that decide whether objects keep their data
//! inside its borders. Used by the controllers, the audit and the offline check.
//!
//! [`engine`] holds the engine itself ([`Engine`]: regions + policies in, [`Finding`]s out);
//! [`rules`] the rules it applies, one module each (check, CEL generator, messages) with the
//! table of where each is enforced; [`kinds`] the one table of kinds every list comes from.
//! [`admission`] compiles a policy into the ValidatingAdmissionPolicy the API server enforces,
//! with the engine's semantics for the rules one object can decide. Reference: docs/residency.md.

pub mod admission;
pub(crate) mod cel;
pub mod engine;
pub mod jurisdiction;
pub mod kinds;
pub mod rules;
pub mod s3;
pub mod sinks;

// The rules' historical paths, used by the controllers.
pub use rules::inference_hosting as inference;
pub use rules::observability_in_region as observability;

pub use engine::{Engine, Evaluation, Finding, Inventory, ResidencyError, Rule};
