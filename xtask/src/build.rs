//! Building the kernel object (pinned nightly, bpf target) and the daemon (stable, release).
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::{setup, util};

/// Where the ring-buffer eBPF object lands; podtrace's build.rs embeds it from here.
pub fn ebpf_object() -> PathBuf {
    util::workspace_root().join("target/ebpf/bpfel-unknown-none/release/podtrace")
}

/// The perf-buffer object (kernels without the BPF ring buffer), copied next to the other.
pub fn ebpf_object_perf() -> PathBuf {
    util::workspace_root().join("target/ebpf/bpfel-unknown-none/release/podtrace-perf")
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

/// Builds both objects: the perf-buffer one first (same crate, other features; cargo keeps
/// both builds, so switching costs a copy), copied aside, then the ring-buffer one.
pub fn ebpf() -> Result<PathBuf> {
    util::step("build podtrace-ebpf (bpfel-unknown-none, release; ring buffer and perf buffer)")?;
    util::run(&mut nightly_cargo(&[
        "build",
        "--release",
        "--no-default-features",
        "--features",
        "perf-buffer",
    ]))
    .context("building the eBPF programs (perf-buffer object)")?;
    let perf = ebpf_object_perf();
    copy_if_changed(&ebpf_object(), &perf)
        .with_context(|| format!("copying the perf-buffer object to {}", perf.display()))?;
    util::run(&mut nightly_cargo(&["build", "--release"])).context("building the eBPF programs")?;
    Ok(ebpf_object())
}

/// Copies only when the content differs: podtrace's build.rs embeds `to` with
/// `rerun-if-changed`, so a fresh mtime on every copy rebuilt the podtrace crate on every
/// `cargo xtask` build (about 2 minutes per target here), even with nothing changed.
fn copy_if_changed(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    let new = std::fs::read(from).with_context(|| format!("reading {}", from.display()))?;
    if std::fs::read(to).is_ok_and(|old| old == new) {
        return Ok(());
    }
    std::fs::write(to, &new).with_context(|| format!("writing {}", to.display()))
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
    .context("clippy on podtrace-ebpf")?;
    util::run(&mut nightly_cargo(&[
        "clippy",
        "--release",
        "--no-default-features",
        "--features",
        "perf-buffer",
        "--",
        "-D",
        "warnings",
    ]))
    .context("clippy on podtrace-ebpf (perf-buffer)")
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
