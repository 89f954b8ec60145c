//! `cargo xtask bench`: podtrace side by side with no tracer and its peers (owned by the bench work).
use anyhow::Result;

/// Runs the benchmark; `quick` is the CI smoke (small storm, one repetition, nothing asserted).
pub fn run(quick: bool) -> Result<()> {
    let _ = quick;
    anyhow::bail!("cargo xtask bench is not written yet")
}
