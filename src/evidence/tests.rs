//! Unit tests of the evidence.
