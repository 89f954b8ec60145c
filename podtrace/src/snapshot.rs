//! The start-up picture: every process already running, read from /proc.
//!
//! Containers started before podtrace are known from here; kernel events keep it current.
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// One process as /proc shows it (also stored in trace files).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcInfo {
    pub pid: u32,
    pub ppid: u32,
    /// Start time since boot, in ns (from /proc's clock ticks, so a multiple of the tick).
    pub start_ns: u64,
    pub nspid: u32,
    pub pidns: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    #[serde(default)]
    pub exe: Option<String>,
    #[serde(default)]
    pub argv: Vec<String>,
    /// cgroup v2 path from /proc/PID/cgroup ("0::" line).
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Inode of that cgroup2 directory (0 if unknown).
    #[serde(default)]
    pub cgroup_id: u64,
}

/// Inode of a namespace link such as /proc/PID/ns/pid ("pid:[4026531836]").
fn ns_inode(link: &Path) -> Option<u32> {
    std::fs::metadata(link).ok().map(|m| m.ino() as u32)
}

/// Joins a cgroup path relative to our own cgroup namespace (`/../../kubepods…`, what
/// /proc/PID/cgroup shows when podtrace runs in a private cgroup namespace) onto our own
/// cgroup's real path, and removes the `..`s.
pub fn resolve_cgroup_path(path: &str, own_real: &str) -> String {
    if !path.starts_with("/..") {
        return path.to_string();
    }
    let mut parts: Vec<&str> = own_real.split('/').filter(|p| !p.is_empty()).collect();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        match part {
            ".." => {
                parts.pop();
            }
            "." => {}
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Our own cgroup's path from the cgroup2 root: the directory whose cgroup.procs lists us.
/// Needed only in a private cgroup namespace, where /proc/self/cgroup says "/".
fn own_real_cgroup(root: &Path) -> Option<String> {
    let me = std::process::id().to_string();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            if procs.lines().any(|l| l == me) {
                let rel = dir.strip_prefix(root).ok()?;
                return Some(format!("/{}", rel.display()));
            }
        }
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                stack.push(e.path());
            }
        }
    }
    None
}

/// Reads one process; None if it vanished or is a kernel thread.
pub fn read_process(pid: u32, cgroup2_root: Option<&Path>) -> Option<ProcInfo> {
    read_process_in(pid, cgroup2_root, &mut None)
}

fn read_process_in(
    pid: u32,
    cgroup2_root: Option<&Path>,
    own_real: &mut Option<Option<String>>,
) -> Option<ProcInfo> {
    let p = procfs::process::Process::new(pid as i32).ok()?;
    let stat = p.stat().ok()?;
    // Kernel threads (PF_KTHREAD) never exec/fork in user space: not part of any container.
    if stat.flags & 0x0020_0000 != 0 {
        return None;
    }
    let status = p.status().ok()?;
    let tick_ns = 1_000_000_000 / procfs::ticks_per_second().max(1);
    let mut cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        });
    if let (Some(path), Some(root)) = (&cgroup, cgroup2_root) {
        if path.starts_with("/..") {
            let own = own_real.get_or_insert_with(|| own_real_cgroup(root));
            cgroup = own.as_deref().map(|o| resolve_cgroup_path(path, o));
        }
    }
    let cgroup_id = match (cgroup2_root, &cgroup) {
        (Some(root), Some(path)) => std::fs::metadata(root.join(path.trim_start_matches('/')))
            .map(|m| m.ino())
            .unwrap_or(0),
        _ => 0,
    };
    Some(ProcInfo {
        pid,
        ppid: stat.ppid.max(0) as u32,
        start_ns: stat.starttime * tick_ns,
        nspid: status
            .nspid
            .as_ref()
            .and_then(|v| v.last().copied())
            .unwrap_or(pid as i32)
            .max(0) as u32,
        pidns: ns_inode(&Path::new("/proc").join(pid.to_string()).join("ns/pid")).unwrap_or(0),
        uid: status.ruid,
        gid: status.rgid,
        comm: stat.comm,
        exe: p.exe().ok().map(|e| e.display().to_string()),
        argv: p.cmdline().unwrap_or_default(),
        cgroup,
        cgroup_id,
    })
}

/// All user-space processes, sorted by pid.
pub fn scan(cgroup2_root: Option<&Path>, skip_pid: u32) -> anyhow::Result<Vec<ProcInfo>> {
    let mut out = Vec::new();
    let mut own_real = None;
    for entry in std::fs::read_dir("/proc").map_err(|e| anyhow::anyhow!("reading /proc: {e}"))? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == skip_pid {
            continue;
        }
        if let Some(p) = read_process_in(pid, cgroup2_root, &mut own_real) {
            out.push(p);
        }
    }
    out.sort_by_key(|p| p.pid);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_relative_to_a_private_cgroup_namespace_are_resolved() {
        let own =
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podA.slice/crio-1.scope";
        assert_eq!(
            resolve_cgroup_path("/../../kubepods-besteffort-podB.slice/crio-2.scope", own),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podB.slice/crio-2.scope"
        );
        assert_eq!(
            resolve_cgroup_path("/system.slice/x.service", own),
            "/system.slice/x.service"
        );
        assert_eq!(resolve_cgroup_path("/../../../../../..", own), "/");
    }

    #[test]
    fn reads_a_child_process_like_ps_does() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let root = crate::facts::cgroup2_root();
        let snap = scan(root.as_deref(), 0).expect("scan /proc");
        let _ = child.kill();
        let _ = child.wait();
        let me = snap
            .iter()
            .find(|p| p.pid == child.id())
            .expect("the child is in the snapshot");
        assert_eq!(me.ppid, std::process::id());
        assert_eq!(me.comm, "sleep");
        assert_eq!(me.argv, ["sleep", "5"]);
        assert_eq!(me.nspid, me.pid, "same pid namespace as the test");
        assert!(me.start_ns > 0);
    }
}
