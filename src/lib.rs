//! sovereign-operator: a Kubernetes operator for multi-region sovereign AI stacks.
//!
//! `api` holds the custom resources, `render` the pure builders of the objects the operator
//! wants. Neither touches the cluster. The layers and where a change goes: docs/ARCHITECTURE.md.

pub mod api;
pub mod cli;
pub mod controllers;
pub mod evidence;
pub mod finops;
pub mod leader;
pub mod manifest;
pub mod metrics;
pub mod render;
pub mod residency;
pub mod server;
pub mod telemetry;
