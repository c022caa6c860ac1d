//! The residency rule engine: pure functions that decide whether objects keep their data
//! inside its borders. Used by the controllers, the audit and the offline check.

pub mod inference;
pub mod jurisdiction;
pub mod observability;
