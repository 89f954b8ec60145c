//! `cargo xtask image`: a static (musl) podtrace with the eBPF objects embedded, on `scratch`,
//! for amd64 and arm64, and a manifest list of the two.
//!
//! Steps, each idempotent: per architecture the musl target for rustup, a C compiler with musl
//! headers (zstd-sys compiles C: tools.rs) and strip; podman; the eBPF objects (bpfel, the same
//! for both architectures); `cargo build --target <arch>-unknown-linux-musl`; a check that the
//! result is static and for that architecture; strip into `target/image/podtrace` (amd64) or
//! `target/image-arm64/podtrace` (each the whole build context); `podman build
//! --platform linux/<arch> -f deploy/Containerfile` (nothing is RUN, so no emulation); a smoke
//! run of the host's image; `podman manifest create/add` for the list. Where something cannot be
//! installed it prints the commands and fails with `setup::CannotInstall` (exit status 2).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::arch::{self, Arch};
use crate::{build, util};

pub mod daemonset;
mod elf;
mod manifests;
mod tools;

pub use manifests::validate as validate_manifests;

pub use elf::check_static_for;
pub use tools::{strip_tool, Toolchain};

/// An ELF executable without an interpreter (PT_INTERP), i.e. statically linked.
pub fn is_static(bytes: &[u8]) -> Result<bool> {
    Ok(!elf::has_interpreter(bytes)?)
}

/// The tag `cargo xtask image` builds for the host's architecture and the image test runs;
/// `$PODTRACE_IMAGE` (which the image test also reads) replaces it.
pub const IMAGE: &str = "localhost/podtrace:dev";

/// The host architecture's image: `$PODTRACE_IMAGE` or `IMAGE`.
pub fn image_tag() -> String {
    std::env::var("PODTRACE_IMAGE")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| IMAGE.to_string())
}

/// The tag of `arch`'s image: the host's is `base` (what the tests run), another's
/// `base-<arch>` (`localhost/podtrace:dev-arm64`).
pub fn arch_tag(base: &str, arch: Arch) -> String {
    if arch == Arch::host() {
        base.to_string()
    } else {
        format!("{base}-{arch}")
    }
}

/// The manifest list of every architecture's image: `localhost/podtrace:dev-multiarch`.
pub fn list_tag(base: &str) -> String {
    format!("{base}-multiarch")
}

/// Builds the static binaries and the images of `archs` (all when empty; the host's first), and
/// the manifest list when every architecture was built.
pub fn build(archs: &[Arch]) -> Result<()> {
    tools::ensure_apt_tool("podman", "podman")?;
    let host = Arch::host();
    let mut todo: Vec<Arch> = if archs.is_empty() {
        arch::ALL.to_vec()
    } else {
        archs.to_vec()
    };
    todo.sort_by_key(|a| *a != host);
    todo.dedup();
    let base = image_tag();
    for arch in &todo {
        let tag = arch_tag(&base, *arch);
        let bin = static_podtrace(&ensure_musl_tools(*arch)?)?;
        let context = stage(&bin, *arch)?;
        podman_build(&context, &tag, *arch)?;
        if *arch == host {
            smoke(&tag)?;
        }
    }
    if arch::ALL.iter().all(|a| todo.contains(a)) {
        manifest_list(&base)?;
    }
    Ok(())
}

/// The static podtrace for `tc`'s architecture with the eBPF objects embedded (also what `cargo
/// xtask kernels` boots): builds the objects, then the binary.
pub fn static_podtrace(tc: &Toolchain) -> Result<PathBuf> {
    let obj = build::ebpf()?;
    anyhow::ensure!(obj.is_file(), "{} was not built", obj.display());
    musl_binary("podtrace", "podtrace", tc)
}

/// The file `arch`'s image ships (`target/image*/podtrace`: the static binary, stripped, the
/// whole build context), built as `cargo xtask image` builds it, without the podman build.
pub fn image_binary(tc: &Toolchain) -> Result<PathBuf> {
    let bin = static_podtrace(tc)?;
    Ok(stage(&bin, tc.arch)?.join("podtrace"))
}

/// The rustup musl target, a C compiler with musl headers (zstd-sys compiles C) and strip.
pub fn ensure_musl_tools(arch: Arch) -> Result<Toolchain> {
    tools::ensure_toolchain(arch)
}

/// `cargo build --release -p <package> --bin <bin> --target <arch>-unknown-linux-musl`, checked
/// to be static (no PT_INTERP) and for the architecture (ELF machine). `tc` from
/// `ensure_musl_tools`.
pub fn musl_binary(package: &str, bin: &str, tc: &Toolchain) -> Result<PathBuf> {
    let target = tc.arch.musl_target();
    util::step(&format!("build {bin} ({target}, release, static)"))?;
    let root = util::workspace_root();
    let env: Vec<(&str, &str)> = tc
        .env
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
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
            target,
        ],
        &env,
    )?;
    let path = root.join("target").join(target).join("release").join(bin);
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    elf::check_static_for(&bytes, tc.arch).with_context(|| format!("{}", path.display()))?;
    Ok(path)
}

/// The build context of `arch`'s image: `target/image` (the host's), `target/image-arm64`.
fn context_dir(arch: Arch) -> PathBuf {
    let root = util::workspace_root().join("target");
    if arch == Arch::host() {
        root.join("image")
    } else {
        root.join(format!("image-{arch}"))
    }
}

/// Strips the binary into the build context (nothing else is in it).
fn stage(bin: &Path, arch: Arch) -> Result<PathBuf> {
    let context = context_dir(arch);
    std::fs::create_dir_all(&context).with_context(|| format!("creating {}", context.display()))?;
    let out = context.join("podtrace");
    util::run(
        Command::new(tools::strip_tool(arch))
            .arg("-o")
            .arg(&out)
            .arg(bin),
    )
    .context("stripping the static binary")?;
    let size = std::fs::metadata(&out)
        .with_context(|| format!("reading {}", out.display()))?
        .len();
    eprintln!("    {}: {} bytes", out.display(), size);
    Ok(context)
}

fn inspect(tag: &str, format: &str) -> Option<String> {
    util::output("podman", &["image", "inspect", "--format", format, tag])
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

fn podman_build(context: &Path, tag: &str, arch: Arch) -> Result<()> {
    let platform = format!("linux/{arch}");
    util::step(&format!("podman build {tag} ({platform})"))?;
    let containerfile = util::workspace_root().join("deploy/Containerfile");
    let before = inspect(tag, "{{.Id}}");
    util::run(
        Command::new("podman")
            .args(["build", "--layers=false", "--platform", &platform])
            .args(["--tag", tag, "--file"])
            .arg(&containerfile)
            .arg(context),
    )
    .context("building the image")?;
    let after = inspect(tag, "{{.Id}}")
        .with_context(|| format!("{tag} missing right after podman build"))?;
    let got = inspect(tag, "{{.Os}}/{{.Architecture}}").unwrap_or_default();
    if got != platform {
        bail!("{tag} was built for {got:?}, not {platform}");
    }
    // A rebuild leaves the previous image untagged: remove it unless something still uses it.
    if let Some(old) = before.filter(|old| *old != after) {
        if util::output("podman", &["rmi", &old]).is_none() {
            eprintln!("    note: could not remove the previous image {old} (in use?)");
        }
    }
    let size = inspect(tag, "{{.Size}}").unwrap_or_default();
    eprintln!("    {tag}: {platform}, {after}, {size} bytes");
    Ok(())
}

/// `list`: a manifest list of every architecture's image (made anew: `podman manifest add` of
/// a rebuilt image would otherwise keep the old entry beside the new one).
fn manifest_list(base: &str) -> Result<()> {
    let list = list_tag(base);
    util::step(&format!("podman manifest {list} ({})", arch::ALL.len()))?;
    if Command::new("podman")
        .args(["manifest", "exists", &list])
        .status()
        .is_ok_and(|s| s.success())
    {
        util::run(Command::new("podman").args(["manifest", "rm", &list]))
            .with_context(|| format!("removing the previous manifest list {list}"))?;
    }
    util::run(Command::new("podman").args(["manifest", "create", &list]))
        .with_context(|| format!("creating the manifest list {list}"))?;
    for arch in arch::ALL {
        let image = format!("containers-storage:{}", arch_tag(base, *arch));
        util::run(Command::new("podman").args(["manifest", "add", &list, &image]))
            .with_context(|| format!("adding {image} to {list}"))?;
    }
    let text = util::output("podman", &["manifest", "inspect", &list])
        .with_context(|| format!("podman manifest inspect {list}"))?;
    let platforms = list_platforms(&text)?;
    let want: Vec<String> = arch::ALL.iter().map(|a| format!("linux/{a}")).collect();
    if platforms != want {
        bail!("{list} lists {platforms:?}, want {want:?}");
    }
    // Written out as an OCI image layout and taken out of containers-storage again: the
    // storage is shared with cri-o, and cri-o 1.25 fails ListImages (`crictl images`, what
    // kubelet calls) on a manifest list there ("reading manifest for image instance ...: file
    // does not exist"), which broke the cri-o lab.
    let layout = util::workspace_root().join("target/image-multiarch");
    if layout.exists() {
        std::fs::remove_dir_all(&layout)
            .with_context(|| format!("removing {}", layout.display()))?;
    }
    let dest = format!("oci:{}", layout.display());
    util::run(Command::new("podman").args(["manifest", "push", "--all", &list, &dest]))
        .with_context(|| format!("writing {list} to {dest}"))?;
    util::run(Command::new("podman").args(["manifest", "rm", &list]))
        .with_context(|| format!("removing {list} from containers-storage"))?;
    eprintln!(
        "    {list}: {} (OCI layout {}; not kept in containers-storage)",
        platforms.join(", "),
        layout.display()
    );
    Ok(())
}

/// `os/architecture` of each entry of `podman manifest inspect`.
fn list_platforms(inspect: &str) -> Result<Vec<String>> {
    let v: serde_json::Value =
        serde_json::from_str(inspect).context("podman manifest inspect: not JSON")?;
    let entries = v["manifests"]
        .as_array()
        .context("podman manifest inspect: no `manifests`")?;
    Ok(entries
        .iter()
        .map(|m| {
            format!(
                "{}/{}",
                m["platform"]["os"].as_str().unwrap_or("?"),
                m["platform"]["architecture"].as_str().unwrap_or("?")
            )
        })
        .collect())
}

/// The binary starts on scratch (no loader, no libc) and prints its version.
fn smoke(tag: &str) -> Result<()> {
    util::step(&format!("smoke: podman run --rm {tag} --version"))?;
    let out = Command::new("podman")
        .args(["run", "--rm", "--network", "none", tag, "--version"])
        .output()
        .context("cannot start podman")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.starts_with("podtrace ") {
        bail!(
            "`podman run --rm {tag} --version` failed ({}): {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    eprintln!("    {}", stdout.trim());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_per_arch_and_the_list() {
        let other = if Arch::host() == Arch::Amd64 {
            Arch::Arm64
        } else {
            Arch::Amd64
        };
        assert_eq!(arch_tag(IMAGE, Arch::host()), IMAGE);
        assert_eq!(
            arch_tag(IMAGE, other),
            format!("localhost/podtrace:dev-{other}")
        );
        assert_eq!(list_tag(IMAGE), "localhost/podtrace:dev-multiarch");
    }

    #[test]
    fn platforms_of_a_manifest_list() {
        let inspect = r#"{"schemaVersion":2,"manifests":[
            {"digest":"sha256:1","platform":{"architecture":"amd64","os":"linux"}},
            {"digest":"sha256:2","platform":{"architecture":"arm64","os":"linux"}}]}"#;
        assert_eq!(
            list_platforms(inspect).expect("parse"),
            ["linux/amd64", "linux/arm64"]
        );
        assert!(list_platforms("{}").is_err());
    }
}
