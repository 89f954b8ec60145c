//! Helpers for the root integration tests.
