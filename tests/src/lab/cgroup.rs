//! cgroup paths, ids and cleanup, on hybrid (v1 + v2 at `/sys/fs/cgroup/unified`) and pure v2 hosts.

use std::fs::File;
use std::io::ErrorKind;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

struct Mounts {
    unified: PathBuf,
    v1: Vec<PathBuf>,
}

fn mounts() -> &'static Mounts {
    static MOUNTS: OnceLock<Mounts> = OnceLock::new();
    MOUNTS.get_or_init(|| {
        let text = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_else(|e| panic!("read /proc/self/mountinfo: {e}"));
        let mut unified = None;
        let mut v1 = Vec::new();
        for line in text.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split_whitespace().collect();
            let (Some(root), Some(mount_point)) = (pre.get(3), pre.get(4)) else {
                continue;
            };
            if *root != "/" {
                continue;
            }
            match post.split_whitespace().next() {
                Some("cgroup2") => unified = Some(PathBuf::from(mount_point)),
                Some("cgroup") => v1.push(PathBuf::from(mount_point)),
                _ => {}
            }
        }
        let unified = unified.unwrap_or_else(|| {
            panic!("no cgroup2 file system mounted (looked in /proc/self/mountinfo)")
        });
        Mounts { unified, v1 }
    })
}

/// Where cgroup2 is mounted: `/sys/fs/cgroup/unified` on this (hybrid) machine.
pub fn unified_root() -> &'static Path {
    &mounts().unified
}

/// The directory of a cgroup v2 path (as in the `0::` line of /proc/PID/cgroup).
pub fn cgroup_dir(cgroup_path: &str) -> PathBuf {
    unified_root().join(cgroup_path.trim_start_matches('/'))
}

/// Inode number of a cgroup2 directory: what `bpf_get_current_cgroup_id()` returns for its tasks.
pub fn cgroup_inode(dir: &Path) -> u64 {
    std::fs::metadata(dir)
        .unwrap_or_else(|e| panic!("stat cgroup dir {}: {e}", dir.display()))
        .ino()
}

/// The cgroup v2 id of PID's cgroup (inode of the directory named by its `0::` line).
pub fn cgroup_id_of_pid(pid: u32) -> u64 {
    cgroup_inode(&cgroup_dir(&super::proc_cgroup(pid)))
}

/// The directory of a cgroup path in every mounted hierarchy, cgroup2 first.
pub fn dirs_everywhere(cgroup_path: &str) -> Vec<PathBuf> {
    let rel = cgroup_path.trim_start_matches('/');
    std::iter::once(&mounts().unified)
        .chain(&mounts().v1)
        .map(|root| root.join(rel))
        .collect()
}

/// Serialises creating and pruning shared cgroup ancestors (for example `kubepods.slice`) across
/// threads and test processes: otherwise one test may remove an empty parent while a runtime in
/// another is about to create a child in it. It is an flock(2) on the cgroup2 root directory, so it
/// leaves no file behind; it is released when dropped.
pub struct TreeLock {
    _locked: File,
}

impl TreeLock {
    pub fn acquire() -> Self {
        let root = unified_root();
        let f =
            File::open(root).unwrap_or_else(|e| panic!("open {} to lock it: {e}", root.display()));
        // SAFETY: flock on a file descriptor we own; blocks until the lock is ours.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(
            rc,
            0,
            "flock {}: {}",
            root.display(),
            std::io::Error::last_os_error()
        );
        Self { _locked: f }
    }
}

/// Creates a cgroup v2 directory and its parents (cgroup2 only).
pub fn create_v2(cgroup_path: &str) -> PathBuf {
    let dir = cgroup_dir(cgroup_path);
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("create cgroup dir {}: {e}", dir.display()));
    dir
}

/// Removes the (empty) cgroup `cgroup_path` from every hierarchy where it exists.
pub fn remove_everywhere(cgroup_path: &str) -> Result<(), String> {
    let mut errors = Vec::new();
    for dir in dirs_everywhere(cgroup_path) {
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("rmdir {}: {e}", dir.display())),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// Removes the ancestors of `cgroup_path` (not the path itself) that are now empty, deepest first,
/// in every hierarchy; ancestors still in use by others are left alone. Call with [`TreeLock`] held.
pub fn prune_ancestors(cgroup_path: &str) {
    let parts: Vec<&str> = cgroup_path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    for depth in (1..parts.len()).rev() {
        let ancestor = parts[..depth].join("/");
        for dir in dirs_everywhere(&ancestor) {
            // EBUSY / ENOTEMPTY: another container still lives there; ENOENT: never existed here.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Error unless the cgroup directory is gone from every hierarchy.
pub fn assert_gone_everywhere(cgroup_path: &str) -> Result<(), String> {
    let left: Vec<String> = dirs_everywhere(cgroup_path)
        .into_iter()
        .filter(|d| d.exists())
        .map(|d| d.display().to_string())
        .collect();
    if left.is_empty() {
        Ok(())
    } else {
        Err(format!("cgroup dirs left behind: {}", left.join(", ")))
    }
}

/// Writes "1" to cgroup.kill: SIGKILL to every process in the cgroup2 subtree.
pub fn kill_all(dir: &Path) -> Result<(), String> {
    let f = dir.join("cgroup.kill");
    std::fs::write(&f, "1").map_err(|e| format!("write 1 to {}: {e}", f.display()))
}

/// True once cgroup.events says `populated 0` (or the cgroup is gone).
pub fn is_unpopulated(dir: &Path) -> bool {
    match std::fs::read_to_string(dir.join("cgroup.events")) {
        Ok(s) => s.lines().any(|l| l.trim() == "populated 0"),
        Err(_) => true,
    }
}

/// Makes `command` join the cgroup2 directory `dir` between fork and exec (by writing "0" to its
/// `cgroup.procs`), so the program starts, and forks, inside it. Spawning fails if it cannot.
pub fn join_at_exec(command: &mut Command, dir: &Path) {
    let f = dir.join("cgroup.procs");
    let path = std::ffi::CString::new(f.to_string_lossy().as_bytes())
        .unwrap_or_else(|e| panic!("cgroup path {} has a NUL: {e}", f.display()));
    // SAFETY: the closure calls only open(2), write(2) and close(2), which are async-signal-safe;
    // the CString moves into the closure and lives as long as the Command.
    unsafe {
        command.pre_exec(move || {
            let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Writing "0" to cgroup.procs moves the writing process.
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if n == 1 {
                Ok(())
            } else {
                Err(err)
            }
        });
    }
}
