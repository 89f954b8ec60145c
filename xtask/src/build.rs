//! Building the kernel object (pinned nightly, bpf target) and the daemon (stable, release).
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::{setup, util};

/// Where the eBPF object lands; podtrace's build.rs embeds it from here.
pub fn ebpf_object() -> PathBuf {
    util::workspace_root().join("target/ebpf/bpfel-unknown-none/release/podtrace")
}

/// `cargo <args>` in podtrace-ebpf with the pinned nightly.
fn nightly_cargo(args: &[&str]) -> Command {
    let root = util::workspace_root();
    let mut cmd = Command::new("rustup");
    cmd.args(["run", setup::NIGHTLY, "cargo"])
        .args(args)
        .current_dir(root.join("podtrace-ebpf"))
        .env("CARGO_TARGET_DIR", root.join("target/ebpf"));
    // Do not leak the outer (stable) cargo's settings into the nightly build.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
        "RUSTFLAGS",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

pub fn ebpf() -> Result<PathBuf> {
    util::step("build podtrace-ebpf (bpfel-unknown-none, release)")?;
    util::run(&mut nightly_cargo(&["build", "--release"])).context("building the eBPF programs")?;
    Ok(ebpf_object())
}

/// fmt and clippy on the kernel programs (their own workspace and toolchain).
pub fn lint_ebpf() -> Result<()> {
    util::step("podtrace-ebpf: cargo fmt --check, cargo clippy -D warnings")?;
    util::run(&mut nightly_cargo(&["fmt", "--", "--check"]))
        .context("podtrace-ebpf is not formatted")?;
    util::run(&mut nightly_cargo(&[
        "clippy",
        "--release",
        "--",
        "-D",
        "warnings",
    ]))
    .context("clippy on podtrace-ebpf")
}

/// Builds both and returns the daemon binary.
pub fn all() -> Result<PathBuf> {
    let obj = ebpf()?;
    util::step("build podtrace (release)")?;
    let root = util::workspace_root();
    // podtrace's build.rs embeds the object from this default path.
    anyhow::ensure!(obj.is_file(), "{} was not built", obj.display());
    util::cargo(&root, &["build", "--release", "-p", "podtrace"], &[])?;
    Ok(root.join("target/release/podtrace"))
}
