//! What the image build and the manifest check install: the musl target, Debian tools, and
//! kubernetes-validate in a private Python virtual environment.
use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use crate::setup::CannotInstall;
use crate::util;

use super::MUSL_TARGET;

fn have(cmd: &str) -> bool {
    util::output("sh", &["-c", &format!("command -v {cmd}")]).is_some()
}

/// `rustup target add x86_64-unknown-linux-musl` for the stable toolchain that runs xtask.
pub fn ensure_musl_target() -> Result<()> {
    let installed = util::output("rustup", &["target", "list", "--installed"])
        .map(|s| s.lines().any(|l| l.trim() == MUSL_TARGET))
        .unwrap_or(false);
    if installed {
        eprintln!("    ok: rust target {MUSL_TARGET}");
        return Ok(());
    }
    let cmd = format!("rustup target add {MUSL_TARGET}");
    if !have("rustup") {
        return Err(CannotInstall(cmd).into());
    }
    eprintln!("    installing: {cmd}");
    util::run(Command::new("rustup").args(["target", "add", MUSL_TARGET]))
}

/// Installs Debian `package` unless `tool` is already on PATH.
pub fn ensure_apt_tool(tool: &str, package: &str) -> Result<()> {
    if have(tool) {
        eprintln!("    ok: {tool} ({package})");
        return Ok(());
    }
    let cmd = format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {package}"
    );
    if !util::is_root() || !have("apt-get") {
        return Err(CannotInstall(cmd).into());
    }
    eprintln!("    installing: {package} (for {tool})");
    util::run(Command::new("apt-get").args(["update", "-qq"]))?;
    util::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends", package]),
    )?;
    anyhow::ensure!(
        have(tool),
        "installed {package} but `{tool}` is still not on PATH"
    );
    Ok(())
}

/// The Kubernetes schema validator, pinned (it bundles the API schemas of 1.25 .. 1.37).
pub const KUBERNETES_VALIDATE: &str = "kubernetes-validate";
pub const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// `kubernetes-validate` in `target/tools/kubernetes-validate` (a venv: Debian's Python is
/// externally managed), installed with pip from PyPI. Returns the path of its executable.
pub fn ensure_kubernetes_validate() -> Result<PathBuf> {
    let venv = util::workspace_root().join("target/tools/kubernetes-validate");
    let exe = venv.join("bin/kubernetes-validate");
    let exe_s = exe.display().to_string();
    let version = util::output(&exe_s, &["--version"]).map(|s| s.trim().to_string());
    if version.as_deref() == Some(KUBERNETES_VALIDATE_VERSION) {
        eprintln!("    ok: {KUBERNETES_VALIDATE} {KUBERNETES_VALIDATE_VERSION}");
        return Ok(exe);
    }
    let venv_s = venv.display().to_string();
    let pin = format!("{KUBERNETES_VALIDATE}=={KUBERNETES_VALIDATE_VERSION}");
    let cmd = format!("python3 -m venv {venv_s} && {venv_s}/bin/pip install '{pin}'");
    if !have("python3") {
        return Err(CannotInstall(format!(
            "apt-get update && apt-get install -y python3 python3-venv\n{cmd}"
        ))
        .into());
    }
    eprintln!("    installing: {cmd}");
    util::run(Command::new("python3").args(["-m", "venv", &venv_s])).with_context(|| {
        format!("creating a Python venv in {venv_s} (Debian: apt-get install python3-venv)")
    })?;
    util::run(Command::new(venv.join("bin/pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &pin,
    ]))
    .with_context(|| format!("pip install {pin}"))?;
    let got = util::output(&exe_s, &["--version"]).map(|s| s.trim().to_string());
    anyhow::ensure!(
        got.as_deref() == Some(KUBERNETES_VALIDATE_VERSION),
        "installed {pin} but `{exe_s} --version` says {got:?}"
    );
    Ok(exe)
}
