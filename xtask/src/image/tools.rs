//! What the image build and the manifest check install: the musl targets, the C compilers and
//! strip of each architecture, and kubernetes-validate in a private Python virtual environment.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::arch::Arch;
use crate::setup::CannotInstall;
use crate::{debs, util};

fn have(cmd: &str) -> bool {
    util::output("sh", &["-c", &format!("command -v {cmd}")]).is_some()
}

/// `rustup target add <arch's musl target>` for the stable toolchain that runs xtask.
pub fn ensure_musl_target(arch: Arch) -> Result<()> {
    let target = arch.musl_target();
    let installed = util::output("rustup", &["target", "list", "--installed"])
        .map(|s| s.lines().any(|l| l.trim() == target))
        .unwrap_or(false);
    if installed {
        eprintln!("    ok: rust target {target}");
        return Ok(());
    }
    let cmd = format!("rustup target add {target}");
    if !have("rustup") {
        return Err(CannotInstall(cmd).into());
    }
    eprintln!("    installing: {cmd}");
    util::run(Command::new("rustup").args(["target", "add", target]))
}

/// How to build static binaries for one architecture (`strip_tool` strips them).
#[derive(Clone, Debug)]
pub struct Toolchain {
    pub arch: Arch,
    /// Environment for `cargo build --target <musl target>`: the C compiler cc-rs uses for
    /// zstd-sys, and for a cross target the archiver and the linker.
    pub env: Vec<(String, String)>,
}

/// The `strip` for `arch`'s ELF files (installed by `ensure_toolchain`).
pub fn strip_tool(arch: Arch) -> String {
    if arch == Arch::host() {
        "strip".to_string()
    } else {
        format!("{}-strip", arch.gnu_triplet())
    }
}

/// `CC_aarch64_unknown_linux_musl` and the like: the per-target variables of cc-rs and cargo.
fn target_var(prefix: &str, arch: Arch) -> String {
    format!("{prefix}{}", arch.musl_target().replace('-', "_"))
}

/// The rustup target, a C compiler with the musl headers, and strip, for `arch`; installs what
/// is missing (or fails with `CannotInstall` and the commands).
///
/// - amd64 (the host): Debian's `musl-tools` (`musl-gcc`) and `binutils`.
/// - arm64: Debian's cross compiler `gcc-aarch64-linux-gnu` (its binutils have
///   `aarch64-linux-gnu-ar` and `-strip`), and Debian's `musl-dev:arm64` unpacked (never
///   installed: no `dpkg --add-architecture` on the machine) into `target/tools/musl-dev-arm64`,
///   used through a copy of its `musl-gcc.specs` that points at that directory, the way
///   Debian's own `aarch64-linux-musl-gcc` wrapper uses the installed one. cc-rs compiles
///   zstd-sys with that wrapper; rustc links with `aarch64-linux-gnu-gcc` and the musl C
///   library of the rustup target (self-contained), so the result is static.
pub fn ensure_toolchain(arch: Arch) -> Result<Toolchain> {
    util::step(&format!(
        "{arch} static toolchain check ({}, C compiler with musl headers, strip)",
        arch.musl_target()
    ))?;
    ensure_musl_target(arch)?;
    match arch {
        Arch::Amd64 => {
            ensure_apt_tool("musl-gcc", "musl-tools")?;
            ensure_apt_tool("strip", "binutils")?;
            Ok(Toolchain {
                arch,
                // cc-rs looks for x86_64-linux-musl-gcc; Debian's musl-tools names it musl-gcc.
                env: vec![(target_var("CC_", arch), "musl-gcc".to_string())],
            })
        }
        Arch::Arm64 => {
            let t = arch.gnu_triplet();
            let gcc = format!("{t}-gcc");
            ensure_apt_tool(&gcc, "gcc-aarch64-linux-gnu")?;
            ensure_apt_tool(&format!("{t}-strip"), "binutils-aarch64-linux-gnu")?;
            let tools = util::workspace_root().join("target/tools");
            let musl = debs::unpacked(
                &debs::qualified("musl-dev", arch),
                &tools.join("musl-dev-arm64"),
            )?;
            let wrapper = musl_gcc_wrapper(&musl, &tools.join("aarch64-linux-musl"), &gcc)?;
            Ok(Toolchain {
                arch,
                env: vec![
                    (target_var("CC_", arch), wrapper.display().to_string()),
                    (target_var("AR_", arch), format!("{t}-ar")),
                    (
                        target_var("CARGO_TARGET_", arch).to_uppercase() + "_LINKER",
                        gcc,
                    ),
                ],
            })
        }
    }
}

/// The musl triplet directory name in Debian's musl-dev (`aarch64-linux-musl`).
const ARM64_MUSL: &str = "aarch64-linux-musl";

/// Debian's `musl-gcc.specs` with its absolute `/usr/...` paths moved to `root` (where the
/// package was unpacked).
fn relocate_specs(specs: &str, root: &Path) -> String {
    let r = root.display();
    specs
        .replace(
            &format!("/usr/lib/{ARM64_MUSL}"),
            &format!("{r}/usr/lib/{ARM64_MUSL}"),
        )
        .replace(
            &format!("/usr/include/{ARM64_MUSL}"),
            &format!("{r}/usr/include/{ARM64_MUSL}"),
        )
}

/// Writes `dir/musl-gcc.specs` (relocated) and `dir/aarch64-linux-musl-gcc` (`exec gcc "$@"
/// -specs ...`, as Debian's wrapper); rewritten on every build (cheap, and follows a moved
/// checkout). Returns the wrapper.
fn musl_gcc_wrapper(musl: &Path, dir: &Path, gcc: &str) -> Result<PathBuf> {
    let src = musl.join(format!("usr/lib/{ARM64_MUSL}/musl-gcc.specs"));
    let specs = std::fs::read_to_string(&src)
        .with_context(|| format!("reading {} (musl-dev:arm64)", src.display()))?;
    let header = musl.join(format!("usr/include/{ARM64_MUSL}/stdlib.h"));
    anyhow::ensure!(
        header.is_file(),
        "{} missing: remove {} and build again",
        header.display(),
        musl.display()
    );
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let specs_out = dir.join("musl-gcc.specs");
    std::fs::write(&specs_out, relocate_specs(&specs, musl))
        .with_context(|| format!("writing {}", specs_out.display()))?;
    let wrapper = dir.join(format!("{ARM64_MUSL}-gcc"));
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\n# written by cargo xtask (podtrace): Debian's {ARM64_MUSL}-gcc, with the specs of an unpacked musl-dev:arm64\nexec {gcc} \"$@\" -specs \"{}\"\n",
            specs_out.display()
        ),
    )
    .with_context(|| format!("writing {}", wrapper.display()))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .with_context(|| format!("chmod {}", wrapper.display()))?;
    Ok(wrapper)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_point_at_the_unpacked_package() {
        let specs = "*cc1:\n%(cc1_cpu) -nostdinc -isystem /usr/include/aarch64-linux-musl -isystem include%s\n\n*link_libgcc:\n-L/usr/lib/aarch64-linux-musl -L .%s\n";
        let out = relocate_specs(specs, Path::new("/w/target/tools/musl-dev-arm64"));
        assert!(
            out.contains("-isystem /w/target/tools/musl-dev-arm64/usr/include/aarch64-linux-musl ")
        );
        assert!(out.contains("-L/w/target/tools/musl-dev-arm64/usr/lib/aarch64-linux-musl "));
        assert!(!out.contains(" /usr/"), "{out}");
    }

    #[test]
    fn per_target_variables() {
        assert_eq!(
            target_var("CC_", Arch::Arm64),
            "CC_aarch64_unknown_linux_musl"
        );
        assert_eq!(
            target_var("CARGO_TARGET_", Arch::Arm64).to_uppercase() + "_LINKER",
            "CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER"
        );
    }
}
