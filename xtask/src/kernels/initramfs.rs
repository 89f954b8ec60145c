//! The guest's initramfs: busybox-static with a link for each applet, the static podtrace, the
//! static scenario runner and `/init`, as an uncompressed newc cpio (TCG decompresses slowly;
//! QEMU loads 30 MB in no time).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};

use crate::arch::Arch;
use crate::{debs, image, util};

/// /init: mounts what every boot needs, runs the scenario runner, powers off whatever happens.
/// `printk` 1: only emergencies on the console, which carries the results.
/// `@APPLETS@` becomes the applet links' set-up for a busybox that cannot run on the host.
const INIT: &str = r#"#!/bin/sh
# /init of the `cargo xtask kernels` initramfs (podtrace): see xtask/src/kernels/mod.rs.
@APPLETS@export PATH=/bin
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

/// The static busybox for `arch`'s guests: the host's busybox-static (setup::kernel_lab), or
/// Debian's `busybox-static:<arch>` unpacked under target/tools (never installed).
pub fn busybox(arch: Arch) -> Result<PathBuf> {
    if arch == Arch::host() {
        return Ok(PathBuf::from(BUSYBOX));
    }
    let dir = util::workspace_root()
        .join("target/tools")
        .join(format!("busybox-static-{arch}"));
    let dir = debs::unpacked(&debs::qualified("busybox-static", arch), &dir)?;
    let bb = dir.join("bin/busybox");
    let bytes = std::fs::read(&bb).with_context(|| format!("reading {}", bb.display()))?;
    image::check_static_for(&bytes, arch).with_context(|| bb.display().to_string())?;
    Ok(bb)
}

/// For each architecture: the static podtrace and scenario runner (`cargo xtask image`'s
/// builds) and the initramfs made of them.
pub fn build_for(archs: &[Arch]) -> Result<Vec<(Arch, PathBuf)>> {
    let mut out = Vec::new();
    for arch in archs {
        let tc = image::ensure_musl_tools(*arch)?;
        // The binary the image ships, run in the guests as the DaemonSet runs it.
        let podtrace = image::image_binary(&tc)?;
        let runner = image::musl_binary("podtrace-tests", "kernel-scenario", &tc)?;
        out.push((*arch, build(&podtrace, &runner, *arch)?));
    }
    Ok(out)
}

/// `/init` for `arch`: a foreign busybox cannot list its applets on the host, so the guest
/// links them itself (`busybox --install -s`, before anything else runs).
fn init_script(arch: Arch) -> String {
    let applets = if arch == Arch::host() {
        ""
    } else {
        "/bin/busybox --install -s /bin\n"
    };
    INIT.replace("@APPLETS@", applets)
}

/// Builds `target/kernels/initramfs.cpio` (`initramfs-arm64.cpio` for a foreign `arch`) from
/// `arch`'s image's podtrace and static runner; returns its path.
pub fn build(podtrace: &Path, runner: &Path, arch: Arch) -> Result<PathBuf> {
    util::step(&format!(
        "initramfs for {arch} (busybox-static, podtrace, kernel-scenario, /init)"
    ))?;
    let busybox = busybox(arch)?;
    let base = super::fetch::dir();
    let name = if arch == Arch::host() {
        "initramfs".to_string()
    } else {
        format!("initramfs-{arch}")
    };
    let root = base.join(&name);
    if root.exists() {
        std::fs::remove_dir_all(&root).with_context(|| format!("removing {}", root.display()))?;
    }
    for d in ["bin", "dev", "proc", "sys", "run", "tmp"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    let bin = root.join("bin");
    std::fs::copy(&busybox, bin.join("busybox"))
        .with_context(|| format!("copying {}", busybox.display()))?;
    let mut applets = 0;
    if arch == Arch::host() {
        let list = util::output(BUSYBOX, &["--list"]).context("busybox --list")?;
        for a in list.lines().map(str::trim) {
            if a.is_empty() || a == "busybox" || a.contains('/') {
                continue;
            }
            std::os::unix::fs::symlink("busybox", bin.join(a))
                .with_context(|| format!("linking applet {a}"))?;
            applets += 1;
        }
    } else {
        // Only what /init needs before `busybox --install -s` has made the rest.
        std::os::unix::fs::symlink("busybox", bin.join("sh")).context("linking sh")?;
    }
    // podtrace is the image's own file, byte for byte (already stripped); the runner is ours.
    std::fs::copy(podtrace, bin.join("podtrace"))
        .with_context(|| format!("copying {}", podtrace.display()))?;
    util::run(
        Command::new(image::strip_tool(arch))
            .arg("-o")
            .arg(bin.join("kernel-scenario"))
            .arg(runner),
    )
    .with_context(|| format!("stripping {}", runner.display()))?;
    let init = root.join("init");
    std::fs::write(&init, init_script(arch))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))?;

    // find . | cpio -o -H newc -R 0:0 > initramfs.cpio
    let out = base.join(format!("{name}.cpio"));
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
    let applets = if applets > 0 {
        format!("busybox with {applets} applets")
    } else {
        "busybox (applets linked at boot)".to_string()
    };
    eprintln!("    {}: {} MB, {applets}", out.display(), size / 1_000_000);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_foreign_busybox_links_its_applets_at_boot() {
        let foreign = if Arch::host() == Arch::Amd64 {
            Arch::Arm64
        } else {
            Arch::Amd64
        };
        let own = init_script(Arch::host());
        assert!(!own.contains("@APPLETS@") && !own.contains("--install"));
        let other = init_script(foreign);
        let install = other
            .find("busybox --install -s /bin")
            .expect("install line");
        let first_use = other.find("mount -t proc").expect("mount line");
        assert!(install < first_use, "{other}");
        assert!(other.starts_with("#!/bin/sh\n"));
    }
}
