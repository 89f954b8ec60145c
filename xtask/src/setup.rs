//! Idempotent installation of what the build, tests and benchmarks need.
//!
//! Every step checks first and prints what it does. Where it cannot install (not root, no
//! apt-get), it prints the exact commands and fails with `CannotInstall` (exit status 2).
use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result};

use crate::util;

/// The nightly that builds the kernel programs: must match podtrace-ebpf/rust-toolchain.toml.
pub const NIGHTLY: &str = "nightly-2026-05-19";
/// That nightly's LLVM major version: bpf-linker must be built against the same one.
pub const LLVM_MAJOR: u32 = 22;
pub const BPF_LINKER_VERSION: &str = "0.13.0";

/// Raised when something is missing and this process cannot install it.
#[derive(Debug)]
pub struct CannotInstall(pub String);

impl std::fmt::Display for CannotInstall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cannot install automatically; run these commands, then retry:\n{}",
            self.0
        )
    }
}

impl std::error::Error for CannotInstall {}

fn llvm_prefix() -> String {
    format!("/usr/lib/llvm-{LLVM_MAJOR}")
}

fn bpf_linker_install_cmd() -> String {
    let p = llvm_prefix();
    format!(
        "LLVM_PREFIX={p} LLVM_SYS_{LLVM_MAJOR}1_PREFIX={p} cargo install bpf-linker --version {BPF_LINKER_VERSION} --locked --no-default-features --features llvm-{LLVM_MAJOR}"
    )
}

/// Nightly with rust-src, llvm-22-dev and a matching bpf-linker, and protoc.
pub fn toolchain() -> Result<()> {
    util::step("toolchain check (nightly + rust-src, llvm-dev, bpf-linker, protoc)")?;
    ensure_nightly()?;
    // The k8s-cri crate compiles the CRI proto in its build script with protoc (prost-build
    // ships none), for the host and the musl build alike.
    ensure_apt(&["protobuf-compiler"], || have("protoc"))?;
    // bpf-linker links against the unversioned libLLVM.so, which only the -dev package ships
    // (llvm-config alone comes with llvm-22 and says nothing about it).
    ensure_apt(&[&format!("llvm-{LLVM_MAJOR}-dev")], || {
        let prefix = llvm_prefix();
        let p = Path::new(&prefix);
        p.join("bin/llvm-config").is_file() && p.join("lib/libLLVM.so").exists()
    })?;
    ensure_bpf_linker()
}

/// What the kernel programs' nightly needs: rust-src (build-std) and the lints
/// (`cargo xtask test` runs fmt and clippy on the eBPF crate too).
const NIGHTLY_COMPONENTS: [&str; 3] = ["rust-src", "clippy", "rustfmt"];

fn ensure_nightly() -> Result<()> {
    let installed = util::output(
        "rustup",
        &["component", "list", "--installed", "--toolchain", NIGHTLY],
    )
    .unwrap_or_default();
    let have = |c: &str| installed.lines().any(|l| l.starts_with(c));
    if NIGHTLY_COMPONENTS.iter().all(|c| have(c)) {
        eprintln!("    ok: {NIGHTLY} with {}", NIGHTLY_COMPONENTS.join(", "));
        return Ok(());
    }
    let mut args = vec!["toolchain", "install", NIGHTLY, "--profile", "minimal"];
    for c in NIGHTLY_COMPONENTS {
        args.extend(["--component", c]);
    }
    let cmd = format!("rustup {}", args.join(" "));
    if util::output("rustup", &["--version"]).is_none() {
        return Err(CannotInstall(cmd).into());
    }
    eprintln!("    installing: {cmd}");
    util::run(Command::new("rustup").args(&args))
}

fn bpf_linker_ok() -> bool {
    let Some(v) = util::output("bpf-linker", &["--version"]) else {
        return false;
    };
    if !v.contains(BPF_LINKER_VERSION) {
        return false;
    }
    // The linker loads libLLVM dynamically: it must be the nightly's major version.
    let Some(path) = util::output("sh", &["-c", "command -v bpf-linker"]) else {
        return false;
    };
    util::output("ldd", &[path.trim()])
        .map(|l| {
            l.contains(&format!("libLLVM.so.{LLVM_MAJOR}"))
                || l.contains(&format!("libLLVM-{LLVM_MAJOR}"))
        })
        .unwrap_or(false)
}

fn ensure_bpf_linker() -> Result<()> {
    if bpf_linker_ok() {
        eprintln!("    ok: bpf-linker {BPF_LINKER_VERSION} (LLVM {LLVM_MAJOR})");
        return Ok(());
    }
    let cmd = bpf_linker_install_cmd();
    eprintln!("    installing (about a minute): {cmd}");
    let p = llvm_prefix();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    util::run(
        Command::new(cargo)
            .env("LLVM_PREFIX", &p)
            .env(format!("LLVM_SYS_{LLVM_MAJOR}1_PREFIX"), &p)
            .args([
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
            ])
            .arg(format!("llvm-{LLVM_MAJOR}")),
    )
    .context("installing bpf-linker")
}

/// Installs Debian packages unless `present()` already holds.
fn ensure_apt(packages: &[&str], present: impl Fn() -> bool) -> Result<()> {
    if present() {
        eprintln!("    ok: {}", packages.join(" "));
        return Ok(());
    }
    let list = packages.join(" ");
    let cmd = format!(
        "apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends {list}"
    );
    if !util::is_root() || util::output("sh", &["-c", "command -v apt-get"]).is_none() {
        return Err(CannotInstall(cmd).into());
    }
    eprintln!("    installing: {list}");
    util::run(Command::new("apt-get").args(["update", "-qq"]))?;
    util::run(
        Command::new("apt-get")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages),
    )?;
    if !present() {
        anyhow::bail!("installed {list} but the check still fails");
    }
    Ok(())
}

fn have(cmd: &str) -> bool {
    util::output("sh", &["-c", &format!("command -v {cmd}")]).is_some()
}

/// Container runtimes for the integration tests and peers for the benchmarks.
pub fn runtimes() -> Result<()> {
    util::step(
        "runtime check (podman, conmon, runc, containerd, busybox-static, bpftrace, forkstat, tmux, fonts)",
    )?;
    let pkgs = [
        "podman",
        "conmon",
        "runc",
        "containerd",
        "busybox-static",
        "bpftrace",
        "forkstat",
        "iproute2",
        "util-linux",
        "procps",
        // `podtrace top` runs in a real terminal in tests/tests/top.rs.
        "tmux",
        // The soak's plot (xtask/src/bench/plot.rs) draws its text with DejaVu Sans.
        "fonts-dejavu-core",
    ];
    ensure_apt(&pkgs, || {
        [
            "podman",
            "conmon",
            "runc",
            "containerd",
            "ctr",
            "bpftrace",
            "forkstat",
            "unshare",
            "ps",
            "tmux",
        ]
        .iter()
        .all(|c| have(c))
            && Path::new("/bin/busybox").is_file()
            && Path::new("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf").is_file()
    })?;
    containers_conf()
}

/// What `cargo xtask kernels` needs besides the static builds: QEMU for each guest
/// architecture, cpio, busybox-static (the host's; another architecture's is unpacked, not
/// installed: kernels/initramfs.rs).
pub fn kernel_lab(archs: &[crate::arch::Arch]) -> Result<()> {
    let qemus: Vec<&str> = archs
        .iter()
        .map(|a| crate::kernels::qemu_package(*a))
        .collect();
    util::step(&format!(
        "kernel lab check ({}, cpio, busybox-static)",
        qemus.join(", ")
    ))?;
    for a in archs {
        let (package, binary) = (crate::kernels::qemu_package(*a), crate::kernels::qemu(*a));
        ensure_apt(&[package], || have(binary))?;
    }
    ensure_apt(&["cpio"], || have("cpio"))?;
    // The guest has no libc: /bin/busybox must be the static build, not Debian's `busybox`.
    ensure_apt(&["busybox-static"], || {
        std::fs::read("/bin/busybox")
            .ok()
            .and_then(|b| crate::image::is_static(&b).ok())
            .unwrap_or(false)
    })
}

/// podman's defaults do not work on this kind of host: nofile=1048576 needs CAP_SYS_RESOURCE,
/// crun refuses hybrid cgroups, and there is no systemd for the cgroup manager or the journal.
fn containers_conf() -> Result<()> {
    const PATH: &str = "/etc/containers/containers.conf";
    const CONF: &str = "# written by `cargo xtask setup --runtimes` (podtrace)\n[containers]\ndefault_ulimits = [\"nofile=1024:1024\", \"nproc=4096:4096\"]\n[engine]\nruntime = \"runc\"\ncgroup_manager = \"cgroupfs\"\nevents_logger = \"file\"\n";
    if std::fs::read_to_string(PATH)
        .map(|s| s == CONF)
        .unwrap_or(false)
    {
        eprintln!("    ok: {PATH}");
        return Ok(());
    }
    if Path::new(PATH).exists()
        && !std::fs::read_to_string(PATH)
            .unwrap_or_default()
            .contains("podtrace")
    {
        eprintln!("    keeping the existing {PATH} (not written by podtrace)");
        return Ok(());
    }
    if !util::is_root() {
        return Err(CannotInstall(format!(
            "mkdir -p /etc/containers && printf '{}' > {PATH}",
            CONF.escape_default()
        ))
        .into());
    }
    eprintln!("    writing {PATH}");
    std::fs::create_dir_all("/etc/containers").context("creating /etc/containers")?;
    std::fs::write(PATH, CONF).with_context(|| format!("writing {PATH}"))
}
