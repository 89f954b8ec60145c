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

/// Reads one process; None if it vanished or is a kernel thread.
pub fn read_process(pid: u32, cgroup2_root: Option<&Path>) -> Option<ProcInfo> {
    let p = procfs::process::Process::new(pid as i32).ok()?;
    let stat = p.stat().ok()?;
    // Kernel threads (PF_KTHREAD) never exec/fork in user space: not part of any container.
    if stat.flags & 0x0020_0000 != 0 {
        return None;
    }
    let status = p.status().ok()?;
    let tick_ns = 1_000_000_000 / procfs::ticks_per_second().max(1);
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        });
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
        if let Some(p) = read_process(pid, cgroup2_root) {
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
