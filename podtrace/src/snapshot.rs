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
    Scanner::new(cgroup2_root).read(pid)
}

/// The fields of /proc/PID/stat podtrace uses: (comm, ppid, flags, starttime in ticks).
fn parse_stat(text: &str) -> Option<(String, u32, u64, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // Fields after the comm, numbered as in proc(5): state is field 3.
    let rest: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some((comm, field(4)? as u32, field(9)?, field(22)?))
}

/// (real uid, real gid, pid in its own namespace) from /proc/PID/status.
fn parse_status(text: &str) -> (u32, u32, Option<u32>) {
    let mut uid = 0;
    let mut gid = 0;
    let mut nspid = None;
    for line in text.lines() {
        let first = |l: &str| {
            l.split_ascii_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
        };
        if let Some(v) = line.strip_prefix("Uid:") {
            uid = first(v).unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("Gid:") {
            gid = first(v).unwrap_or(0);
        } else if let Some(v) = line.strip_prefix("NSpid:") {
            nspid = v
                .split_ascii_whitespace()
                .last()
                .and_then(|n| n.parse().ok());
        }
    }
    (uid, gid, nspid)
}

/// Reads processes from /proc with what many share cached (cgroup inodes, our own cgroup).
/// Hand-parsed: a general /proc parser (procfs) spent most of a 10,000-process start-up
/// parsing fields podtrace does not use.
struct Scanner<'a> {
    root: Option<&'a Path>,
    tick_ns: u64,
    own_real: Option<Option<String>>,
    cgroup_inodes: std::collections::HashMap<String, u64>,
}

impl<'a> Scanner<'a> {
    fn new(root: Option<&'a Path>) -> Self {
        Self {
            root,
            tick_ns: 1_000_000_000 / procfs::ticks_per_second().max(1),
            own_real: None,
            cgroup_inodes: std::collections::HashMap::new(),
        }
    }

    fn cgroup_inode(&mut self, path: &str) -> u64 {
        let Some(root) = self.root else { return 0 };
        if let Some(&ino) = self.cgroup_inodes.get(path) {
            return ino;
        }
        let ino = std::fs::metadata(root.join(path.trim_start_matches('/')))
            .map(|m| m.ino())
            .unwrap_or(0);
        self.cgroup_inodes.insert(path.to_string(), ino);
        ino
    }

    fn read(&mut self, pid: u32) -> Option<ProcInfo> {
        let dir = Path::new("/proc").join(pid.to_string());
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let (comm, ppid, flags, start_ticks) = parse_stat(&stat)?;
        // Kernel threads (PF_KTHREAD) never exec/fork in user space: not part of any container.
        if flags & 0x0020_0000 != 0 {
            return None;
        }
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        let (uid, gid, nspid) = parse_status(&status);
        let mut cgroup = std::fs::read_to_string(dir.join("cgroup"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("0::").map(str::to_string))
            });
        if let (Some(path), Some(root)) = (&cgroup, self.root) {
            if path.starts_with("/..") {
                let own = self.own_real.get_or_insert_with(|| own_real_cgroup(root));
                cgroup = own.as_deref().map(|o| resolve_cgroup_path(path, o));
            }
        }
        let cgroup_id = cgroup.as_deref().map(|p| self.cgroup_inode(p)).unwrap_or(0);
        let argv = std::fs::read(dir.join("cmdline"))
            .map(|b| {
                let b = b.strip_suffix(&[0]).unwrap_or(&b);
                if b.is_empty() {
                    Vec::new()
                } else {
                    b.split(|&c| c == 0)
                        .map(|a| String::from_utf8_lossy(a).into_owned())
                        .collect()
                }
            })
            .unwrap_or_default();
        Some(ProcInfo {
            pid,
            ppid,
            start_ns: start_ticks * self.tick_ns,
            nspid: nspid.unwrap_or(pid),
            pidns: ns_inode(&dir.join("ns/pid")).unwrap_or(0),
            uid,
            gid,
            comm,
            exe: std::fs::read_link(dir.join("exe"))
                .ok()
                .map(|e| e.display().to_string()),
            argv,
            cgroup,
            cgroup_id,
        })
    }
}

/// All user-space processes, sorted by pid. Read on as many threads as there are CPUs (up to
/// four): each process costs a handful of small file reads, and a node has thousands.
pub fn scan(cgroup2_root: Option<&Path>, skip_pid: u32) -> anyhow::Result<Vec<ProcInfo>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").map_err(|e| anyhow::anyhow!("reading /proc: {e}"))? {
        let Ok(entry) = entry else { continue };
        if let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        {
            if pid != skip_pid {
                pids.push(pid);
            }
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4);
    let chunk = pids.len().div_ceil(threads).max(1);
    let mut out: Vec<ProcInfo> = std::thread::scope(|s| {
        let workers: Vec<_> = pids
            .chunks(chunk)
            .map(|part| {
                s.spawn(move || {
                    let mut scanner = Scanner::new(cgroup2_root);
                    part.iter()
                        .filter_map(|&pid| scanner.read(pid))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().unwrap_or_default())
            .collect()
    });
    out.sort_by_key(|p| p.pid);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_parse_like_proc5_says() {
        let stat = "4242 (my (odd) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        assert_eq!(
            parse_stat(stat),
            Some(("my (odd) name".to_string(), 17, 4194560, 987654))
        );
        assert_eq!(parse_stat("garbage"), None);
        let status =
            "Name:\tsleep\nUid:\t1000\t1000\t1000\t1000\nGid:\t5\t5\t5\t5\nNSpid:\t4242\t1\n";
        assert_eq!(parse_status(status), (1000, 5, Some(1)));
        assert_eq!(parse_status(""), (0, 0, None));
    }

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
