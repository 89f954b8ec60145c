//! The guest's initramfs: busybox-static with a link for each applet, the static podtrace, the
//! static scenario runner and `/init`, as an uncompressed newc cpio (TCG decompresses slowly;
//! QEMU loads 30 MB in no time).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};

use crate::util;

/// /init: mounts what every boot needs, runs the scenario runner, powers off whatever happens.
/// `printk` 1: only emergencies on the console, which carries the results.
const INIT: &str = r#"#!/bin/sh
# /init of the `cargo xtask kernels` initramfs (podtrace): see xtask/src/kernels/mod.rs.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
echo 1 > /proc/sys/kernel/printk
/bin/kernel-scenario vm
echo "klab-init: kernel-scenario exited $?"
poweroff -f
"#;

pub const BUSYBOX: &str = "/bin/busybox";

/// Builds `target/kernels/initramfs.cpio` from the image's podtrace and the static runner;
/// returns its path.
pub fn build(podtrace: &Path, runner: &Path) -> Result<PathBuf> {
    util::step("initramfs (busybox-static, podtrace, kernel-scenario, /init)")?;
    let base = super::fetch::dir();
    let root = base.join("initramfs");
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    for d in ["bin", "dev", "proc", "sys", "run", "tmp"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let bin = root.join("bin");
    std::fs::copy(BUSYBOX, bin.join("busybox")).context("copying /bin/busybox")?;
    let list = util::output(BUSYBOX, &["--list"]).context("busybox --list")?;
    let mut applets = 0;
    for a in list.lines().map(str::trim) {
        if a.is_empty() || a == "busybox" || a.contains('/') {
            continue;
        }
        std::os::unix::fs::symlink("busybox", bin.join(a))
            .with_context(|| format!("linking applet {a}"))?;
        applets += 1;
    }
    // podtrace is the image's own file, byte for byte (already stripped); the runner is ours.
    std::fs::copy(podtrace, bin.join("podtrace"))
        .with_context(|| format!("copying {}", podtrace.display()))?;
    util::run(
        Command::new("strip")
            .arg("-o")
            .arg(bin.join("kernel-scenario"))
            .arg(runner),
    )
    .with_context(|| format!("stripping {}", runner.display()))?;
    let init = root.join("init");
    std::fs::write(&init, INIT)?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;

    // find . | cpio -o -H newc -R 0:0 > initramfs.cpio
    let out = base.join("initramfs.cpio");
    let file =
        std::fs::File::create(&out).with_context(|| format!("creating {}", out.display()))?;
    let mut find = Command::new("find")
        .arg(".")
        .current_dir(&root)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run find")?;
    let names = find.stdout.take().context("find stdout")?;
    let cpio = Command::new("cpio")
        .args(["--quiet", "-o", "-H", "newc", "-R", "0:0"])
        .current_dir(&root)
        .stdin(names)
        .stdout(file)
        .status()
        .context("cannot run cpio")?;
    let find_status = find.wait()?;
    ensure!(
        find_status.success() && cpio.success(),
        "building {}: find {find_status}, cpio {cpio}",
        out.display()
    );
    let size = std::fs::metadata(&out)?.len();
    eprintln!(
        "    {}: {} MB, busybox with {applets} applets",
        out.display(),
        size / 1_000_000
    );
    Ok(out)
}
