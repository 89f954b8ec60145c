//! Helpers for the root integration tests.

pub mod lab;
pub mod tracer;
