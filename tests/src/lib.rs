//! Helpers for the root integration tests.
// Test support: every helper panics with a message saying what failed (see lab.rs); the
// workspace's no-unwrap rule is for the code under test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod fuse_hang;
pub mod lab;
pub mod tmux;
pub mod tracer;
