//! A busybox-static root file system, built once per test process (no image can be pulled here).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::cmd;

static ROOTFS: OnceLock<PathBuf> = OnceLock::new();

extern "C" fn remove_rootfs_at_exit() {
    if let Some(dir) = ROOTFS.get() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The template root file system: `/bin/busybox` (static) with every applet it lists as a symlink
/// in /bin (sh, sleep, ps, cat, ls, echo, true, false, kill, ...), the empty /proc /sys /dev /tmp
/// /run /root mount points, and /etc with passwd, group and hostname. Built on first use in a
/// temporary directory that is removed when the test process exits.
///
/// Runtimes write into a rootfs (podman creates /etc/hosts, /run/.containerenv ...): containers
/// get a private copy ([`copy_rootfs`]); do not start containers on this directory directly.
pub fn rootfs() -> PathBuf {
    ROOTFS.get_or_init(build).clone()
}

fn build() -> PathBuf {
    let busybox = cmd::which("busybox");
    let dir = tempfile::Builder::new()
        .prefix("podtrace-lab-rootfs-")
        .tempdir()
        .expect("create a temp dir for the busybox rootfs")
        .keep();
    // SAFETY: registers a plain extern "C" function; it only removes a directory.
    unsafe { libc::atexit(remove_rootfs_at_exit) };
    for d in [
        "bin", "proc", "sys", "dev", "etc", "tmp", "run", "root", "var/log",
    ] {
        std::fs::create_dir_all(dir.join(d))
            .unwrap_or_else(|e| panic!("create {}/{d}: {e}", dir.display()));
    }
    std::fs::copy(&busybox, dir.join("bin/busybox"))
        .unwrap_or_else(|e| panic!("copy {} into the rootfs: {e}", busybox.display()));
    let list = cmd::run_ok(&busybox.to_string_lossy(), &["--list"]);
    for applet in list
        .lines()
        .map(str::trim)
        .filter(|a| !a.is_empty() && *a != "busybox")
    {
        let link = dir.join("bin").join(applet);
        std::os::unix::fs::symlink("busybox", &link)
            .unwrap_or_else(|e| panic!("symlink {}: {e}", link.display()));
    }
    for applet in [
        "sh", "sleep", "ps", "cat", "ls", "echo", "true", "false", "kill",
    ] {
        assert!(
            dir.join("bin").join(applet).exists(),
            "{} has no `{applet}` applet",
            busybox.display()
        );
    }
    for (file, text) in [
        (
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n",
        ),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\n"),
        ("etc/hostname", "podtrace-lab\n"),
    ] {
        std::fs::write(dir.join(file), text)
            .unwrap_or_else(|e| panic!("write {}/{file}: {e}", dir.display()));
    }
    dir
}

/// Copies the template rootfs to `dest` (which must not exist yet), keeping the symlinks.
pub fn copy_rootfs(dest: &Path) {
    let src = rootfs();
    cmd::run_ok(
        "cp",
        &["-a", &src.to_string_lossy(), &dest.to_string_lossy()],
    );
}
