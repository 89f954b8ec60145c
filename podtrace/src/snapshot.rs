//! The start-up picture: every process already running, read from /proc.
//!
//! Containers started before podtrace are known from here; kernel events keep it current.
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::cgroups::resolve::CgroupView;
use crate::cgroups::Hierarchy;
use podtrace_common::ARGV_MAX;

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

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
    /// argv was longer than the `ARGV_MAX` bytes read (as the kernel side cuts exec argv).
    #[serde(default, skip_serializing_if = "is_false")]
    pub argv_truncated: bool,
    /// cgroup v2 path from /proc/PID/cgroup ("0::" line).
    #[serde(default)]
    pub cgroup: Option<String>,
    /// Inode of that cgroup2 directory (0 if unknown).
    #[serde(default)]
    pub cgroup_id: u64,
    /// Exited and not yet reaped by its parent (state `Z` in /proc/PID/stat).
    #[serde(default, skip_serializing_if = "is_false")]
    pub zombie: bool,
    /// Path in the v1 hierarchy of the trace header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup_v1: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cgroup_v1_id: u64,
}

/// Inode of a namespace link such as /proc/PID/ns/pid ("pid:[4026531836]").
fn ns_inode(link: &Path) -> Option<u32> {
    std::fs::metadata(link).ok().map(|m| m.ino() as u32)
}

/// Reads one process; None if it vanished or is a kernel thread.
pub fn read_process(pid: u32, view: &CgroupView) -> Option<ProcInfo> {
    Scanner::new(view).read(pid)
}

/// The fields of /proc/PID/stat podtrace uses.
struct Stat {
    comm: String,
    state: char,
    ppid: u32,
    flags: u64,
    start_ticks: u64,
}

fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    // Fields after the comm, numbered as in proc(5): state is field 3.
    let rest: Vec<&str> = text.get(close + 1..)?.split_ascii_whitespace().collect();
    let field = |n: usize| rest.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(Stat {
        comm,
        state: rest.first()?.chars().next()?,
        ppid: field(4)? as u32,
        flags: field(9)?,
        start_ticks: field(22)?,
    })
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

/// Reads processes from /proc with what many share cached (cgroup inodes).
/// Hand-parsed: a general /proc parser (procfs) spent most of a 10,000-process start-up
/// parsing fields podtrace does not use.
struct Scanner<'a> {
    view: &'a CgroupView,
    tick_ns: u64,
    cgroup_inodes: std::collections::HashMap<(Hierarchy, String), u64>,
}

/// argv from /proc/PID/cmdline, cut at `ARGV_MAX` bytes like the kernel side cuts exec argv
/// (a trace line stays far below the reader's limit).
fn split_cmdline(bytes: &[u8]) -> (Vec<String>, bool) {
    let truncated = bytes.len() > ARGV_MAX;
    let bytes = &bytes[..bytes.len().min(ARGV_MAX)];
    (crate::kernel_event::split_argv(bytes), truncated)
}

impl<'a> Scanner<'a> {
    fn new(view: &'a CgroupView) -> Self {
        Self {
            view,
            tick_ns: 1_000_000_000 / procfs::ticks_per_second().max(1),
            cgroup_inodes: std::collections::HashMap::new(),
        }
    }

    /// (path, id) of the process's cgroup in `h`.
    fn cgroup(&mut self, h: Hierarchy, text: &str) -> (Option<String>, u64) {
        let Some(path) = self
            .view
            .proc_line(h, text)
            .and_then(|raw| self.view.absolute(h, raw))
        else {
            return (None, 0);
        };
        let key = (h, path);
        let ino = match self.cgroup_inodes.get(&key) {
            Some(&ino) => ino,
            None => {
                let ino = self.view.inode(h, &key.1);
                self.cgroup_inodes.insert(key.clone(), ino);
                ino
            }
        };
        (Some(key.1), ino)
    }

    fn read(&mut self, pid: u32) -> Option<ProcInfo> {
        let dir = Path::new("/proc").join(pid.to_string());
        let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
        let Stat {
            comm,
            state,
            ppid,
            flags,
            start_ticks,
        } = parse_stat(&stat)?;
        // Kernel threads (PF_KTHREAD) never exec/fork in user space: not part of any container.
        if flags & 0x0020_0000 != 0 {
            return None;
        }
        let status = std::fs::read_to_string(dir.join("status")).ok()?;
        let (uid, gid, nspid) = parse_status(&status);
        let cgroups = std::fs::read_to_string(dir.join("cgroup")).unwrap_or_default();
        let (cgroup, cgroup_id) = self.cgroup(Hierarchy::V2, &cgroups);
        let (cgroup_v1, cgroup_v1_id) = self.cgroup(Hierarchy::V1, &cgroups);
        let (argv, argv_truncated) = std::fs::read(dir.join("cmdline"))
            .map(|b| split_cmdline(&b))
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
            argv_truncated,
            zombie: state == 'Z',
            cgroup,
            cgroup_id,
            cgroup_v1,
            cgroup_v1_id,
        })
    }
}

/// All user-space processes, sorted by pid. Read on as many threads as there are CPUs (up to
/// four): each process costs a handful of small file reads, and a node has thousands.
pub fn scan(view: &CgroupView, skip_pid: u32) -> std::io::Result<Vec<ProcInfo>> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
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
                    let mut scanner = Scanner::new(view);
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
        let s = parse_stat(stat).expect("a stat line");
        assert_eq!(
            (s.comm.as_str(), s.state, s.ppid, s.flags, s.start_ticks),
            ("my (odd) name", 'S', 17, 4194560, 987654)
        );
        assert!(parse_stat("garbage").is_none());
        let status =
            "Name:\tsleep\nUid:\t1000\t1000\t1000\t1000\nGid:\t5\t5\t5\t5\nNSpid:\t4242\t1\n";
        assert_eq!(parse_status(status), (1000, 5, Some(1)));
        assert_eq!(parse_status(""), (0, 0, None));
    }

    #[test]
    fn cmdline_is_cut_like_exec_argv() {
        let (argv, cut) = split_cmdline(b"sleep\x005\x00");
        assert_eq!(
            (argv, cut),
            (vec!["sleep".to_string(), "5".to_string()], false)
        );
        let long = vec![b'a'; ARGV_MAX + 10];
        let (argv, cut) = split_cmdline(&long);
        assert!(cut);
        assert_eq!(argv.concat().len(), ARGV_MAX);
    }

    #[test]
    fn reads_a_child_process_like_ps_does() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("spawn sleep");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let view = CgroupView::default();
        let snap = scan(&view, 0).expect("scan /proc");
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
