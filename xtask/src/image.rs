//! `cargo xtask image`: a static (musl) podtrace with the eBPF object embedded, on `scratch`.
//!
//! Steps, each idempotent: the musl target for rustup, musl-gcc (zstd-sys compiles C), strip
//! (binutils) and podman; the eBPF object; `cargo build --target x86_64-unknown-linux-musl`; a
//! check that the result is static; strip into `target/image/podtrace` (the whole build context);
//! `podman build -f deploy/Containerfile`; a smoke run of the image. Where something cannot be
//! installed it prints the commands and fails with `setup::CannotInstall` (exit status 2).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{build, util};

pub mod daemonset;
mod elf;
mod manifests;
mod tools;

pub use manifests::validate as validate_manifests;

/// An ELF executable without an interpreter (PT_INTERP), i.e. statically linked.
pub fn is_static(bytes: &[u8]) -> Result<bool> {
    Ok(!elf::has_interpreter(bytes)?)
}

/// The tag `cargo xtask image` builds and the image test runs.
pub const IMAGE: &str = "localhost/podtrace:dev";
pub const MUSL_TARGET: &str = "x86_64-unknown-linux-musl";

/// Builds the static binary and the image.
pub fn build() -> Result<()> {
    tools::ensure_apt_tool("podman", "podman")?;
    let bin = static_podtrace()?;
    let context = stage(&bin)?;
    podman_build(&context)?;
    smoke()?;
    Ok(())
}

/// The static podtrace with the eBPF object embedded (also what `cargo xtask kernels` boots):
/// installs the musl target, musl-gcc and strip when missing, builds the object, then the binary.
pub fn static_podtrace() -> Result<PathBuf> {
    ensure_musl_tools()?;
    let obj = build::ebpf()?;
    anyhow::ensure!(obj.is_file(), "{} was not built", obj.display());
    musl_binary("podtrace", "podtrace")
}

/// The file the image ships (`target/image/podtrace`: the static binary, stripped, the whole
/// build context), built as `cargo xtask image` builds it, without the podman build.
pub fn image_binary() -> Result<PathBuf> {
    let bin = static_podtrace()?;
    Ok(stage(&bin)?.join("podtrace"))
}

/// The rustup musl target, musl-gcc (zstd-sys compiles C) and strip.
pub fn ensure_musl_tools() -> Result<()> {
    tools::ensure_musl_target()?;
    tools::ensure_apt_tool("musl-gcc", "musl-tools")?;
    tools::ensure_apt_tool("strip", "binutils")
}

/// `cargo build --release -p <package> --bin <bin> --target x86_64-unknown-linux-musl`, checked
/// to be static (no PT_INTERP). Call `ensure_musl_tools` first.
pub fn musl_binary(package: &str, bin: &str) -> Result<PathBuf> {
    util::step(&format!("build {bin} ({MUSL_TARGET}, release, static)"))?;
    let root = util::workspace_root();
    // cc-rs looks for x86_64-linux-musl-gcc; Debian's musl-tools names it musl-gcc.
    let cc_var = format!("CC_{}", MUSL_TARGET.replace('-', "_"));
    util::cargo(
        &root,
        &[
            "build",
            "--release",
            "-p",
            package,
            "--bin",
            bin,
            "--target",
            MUSL_TARGET,
        ],
        &[(cc_var.as_str(), "musl-gcc")],
    )?;
    let path = root
        .join("target")
        .join(MUSL_TARGET)
        .join("release")
        .join(bin);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    if elf::has_interpreter(&bytes).with_context(|| format!("reading {}", path.display()))? {
        bail!(
            "{} is dynamically linked (has PT_INTERP): it cannot run on scratch or in the initramfs",
            path.display()
        );
    }
    Ok(path)
}

/// Strips the binary into `target/image/`, the build context (nothing else is in it).
fn stage(bin: &Path) -> Result<PathBuf> {
    let context = util::workspace_root().join("target/image");
    std::fs::create_dir_all(&context).with_context(|| format!("creating {}", context.display()))?;
    let out = context.join("podtrace");
    util::run(Command::new("strip").arg("-o").arg(&out).arg(bin))
        .context("stripping the static binary")?;
    let size = std::fs::metadata(&out)
        .with_context(|| format!("reading {}", out.display()))?
        .len();
    eprintln!("    {}: {} bytes", out.display(), size);
    Ok(context)
}

fn image_id() -> Option<String> {
    util::output(
        "podman",
        &["image", "inspect", "--format", "{{.Id}}", IMAGE],
    )
    .map(|s| s.trim().to_string())
    .filter(|s| !s.is_empty())
}

fn podman_build(context: &Path) -> Result<()> {
    util::step(&format!("podman build {IMAGE}"))?;
    let containerfile = util::workspace_root().join("deploy/Containerfile");
    let before = image_id();
    util::run(
        Command::new("podman")
            .args(["build", "--layers=false", "--tag", IMAGE, "--file"])
            .arg(&containerfile)
            .arg(context),
    )
    .context("building the image")?;
    let after = image_id().with_context(|| format!("{IMAGE} missing right after podman build"))?;
    // A rebuild leaves the previous image untagged: remove it unless something still uses it.
    if let Some(old) = before.filter(|old| *old != after) {
        if util::output("podman", &["rmi", &old]).is_none() {
            eprintln!("    note: could not remove the previous image {old} (in use?)");
        }
    }
    let size = util::output(
        "podman",
        &["image", "inspect", "--format", "{{.Size}}", IMAGE],
    )
    .map(|s| s.trim().to_string())
    .unwrap_or_default();
    eprintln!("    {IMAGE}: {after}, {size} bytes");
    Ok(())
}

/// The binary starts on scratch (no loader, no libc) and prints its version.
fn smoke() -> Result<()> {
    util::step(&format!("smoke: podman run --rm {IMAGE} --version"))?;
    let out = Command::new("podman")
        .args(["run", "--rm", "--network", "none", IMAGE, "--version"])
        .output()
        .context("cannot start podman")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.starts_with("podtrace ") {
        bail!(
            "`podman run --rm {IMAGE} --version` failed ({}): {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    eprintln!("    {}", stdout.trim());
    Ok(())
}
