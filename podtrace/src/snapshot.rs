//! The start-up picture: every process already running, read from /proc.
//!
//! Containers started before podtrace are known from here; kernel events keep it current.
use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

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

/// Reads one process; None if it vanished or is a kernel thread.
pub fn read_process(pid: u32, view: &CgroupView) -> Option<ProcInfo> {
    Scanner::new(view).ok()?.read(pid)
}

/// The fields of /proc/PID/stat podtrace uses.
struct Stat {
    comm: String,
    state: u8,
    ppid: u32,
    flags: u64,
    start_ticks: u64,
}

fn parse_stat(text: &[u8]) -> Option<Stat> {
    let open = memchr::memchr(b'(', text)?;
    let close = memchr::memrchr(b')', text)?;
    let comm = String::from_utf8_lossy(text.get(open + 1..close)?).into_owned();
    // Fields after the comm, numbered as in proc(5): state is field 3.
    let mut fields = text
        .get(close + 1..)?
        .split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty());
    let state = *fields.next()?.first()?;
    let mut field = |skip: usize| {
        let f = fields.nth(skip)?;
        std::str::from_utf8(f).ok()?.parse::<u64>().ok()
    };
    // ppid (4) ... flags (9) ... starttime (22)
    let ppid = field(0)?;
    let flags = field(4)?;
    let start_ticks = field(12)?;
    Some(Stat {
        comm,
        state,
        ppid: ppid as u32,
        flags,
        start_ticks,
    })
}

/// (real uid, real gid, pid in its own namespace, how many pid namespaces deep from ours)
/// from /proc/PID/status.
fn parse_status(text: &[u8]) -> (u32, u32, Option<u32>, usize) {
    let mut uid = 0;
    let mut gid = 0;
    let mut nspid = None;
    let mut levels = 0;
    let words = |v: &[u8]| -> Vec<u32> {
        v.split(|b| b.is_ascii_whitespace())
            .filter(|w| !w.is_empty())
            .filter_map(|w| std::str::from_utf8(w).ok()?.parse().ok())
            .collect()
    };
    for line in text.split(|&b| b == b'\n') {
        if let Some(v) = line.strip_prefix(b"Uid:") {
            uid = words(v).first().copied().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix(b"Gid:") {
            gid = words(v).first().copied().unwrap_or(0);
        } else if let Some(v) = line.strip_prefix(b"NSpid:") {
            let w = words(v);
            nspid = w.last().copied();
            levels = w.len();
        }
    }
    (uid, gid, nspid, levels)
}

/// Reads processes from /proc with what many share cached (cgroup inodes) and one buffer
/// for every file. Each process's directory is opened once and its files read relative to
/// it, each with one `read` (a short read is the end of a /proc file): about 15 system calls
/// a process where `std::fs::read_to_string` per path took 35 (a `statx` for a size hint
/// /proc does not give, then reads from 32 bytes up, and a path walk each).
/// Hand-parsed: a general /proc parser (procfs) spent most of a 10,000-process start-up
/// parsing fields podtrace does not use.
struct Scanner<'a> {
    view: &'a CgroupView,
    tick_ns: u64,
    cgroup_inodes: std::collections::HashMap<(Hierarchy, String), u64>,
    proc_dir: OwnedFd,
    /// The inode of our own pid namespace.
    own_pidns: Option<u32>,
    buf: Vec<u8>,
}

/// argv from /proc/PID/cmdline, cut at `ARGV_MAX` bytes like the kernel side cuts exec argv
/// (a trace line stays far below the reader's limit).
fn split_cmdline(bytes: &[u8]) -> (Vec<String>, bool) {
    let truncated = bytes.len() > ARGV_MAX;
    let bytes = &bytes[..bytes.len().min(ARGV_MAX)];
    (crate::kernel_event::split_argv(bytes), truncated)
}

/// `openat(dir, name)` read-only.
fn open_at(dir: &OwnedFd, name: &CStr, flags: libc::c_int) -> Option<OwnedFd> {
    // SAFETY: a valid directory fd and a NUL-terminated name; the fd returned is owned below.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC | flags,
        )
    };
    // SAFETY: a new descriptor the kernel just returned.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd) })
}

impl<'a> Scanner<'a> {
    fn new(view: &'a CgroupView) -> std::io::Result<Self> {
        let proc_dir: OwnedFd = std::fs::File::open("/proc")?.into();
        Ok(Self {
            own_pidns: ino_at(&proc_dir, c"self/ns/pid"),
            view,
            tick_ns: 1_000_000_000 / procfs::ticks_per_second().max(1),
            cgroup_inodes: std::collections::HashMap::new(),
            proc_dir,
            buf: Vec::with_capacity(8192),
        })
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

    /// File `name` of directory `dir` into `self.buf` (at most `limit` bytes); false if it
    /// cannot be opened or read.
    fn read_at(&mut self, dir: &OwnedFd, name: &CStr, limit: usize) -> bool {
        self.buf.clear();
        let Some(fd) = open_at(dir, name, 0) else {
            return false;
        };
        loop {
            if self.buf.len() == self.buf.capacity() {
                self.buf.reserve(self.buf.capacity().max(4096));
            }
            let room = (self.buf.capacity() - self.buf.len()).min(limit - self.buf.len());
            let spare = &mut self.buf.spare_capacity_mut()[..room];
            // SAFETY: reading into `room` bytes of spare capacity of the buffer.
            let n = unsafe { libc::read(fd.as_raw_fd(), spare.as_mut_ptr().cast(), room) };
            if n < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return false;
            }
            let n = n as usize;
            // SAFETY: the kernel wrote `n` bytes there.
            unsafe { self.buf.set_len(self.buf.len() + n) };
            // A /proc file gives as much as fits in one read: a short read is its end.
            if n < room || self.buf.len() >= limit {
                return true;
            }
        }
    }

    fn read(&mut self, pid: u32) -> Option<ProcInfo> {
        let name = CString::new(pid.to_string()).ok()?;
        let dir = open_at(&self.proc_dir, &name, libc::O_DIRECTORY)?;
        if !self.read_at(&dir, c"stat", 64 * 1024) {
            return None;
        }
        let Stat {
            comm,
            state,
            ppid,
            flags,
            start_ticks,
        } = parse_stat(&self.buf)?;
        // Kernel threads (PF_KTHREAD) never exec/fork in user space: not part of any container.
        if flags & 0x0020_0000 != 0 {
            return None;
        }
        if !self.read_at(&dir, c"status", 64 * 1024) {
            return None;
        }
        let (uid, gid, nspid, levels) = parse_status(&self.buf);
        let cgroups = if self.read_at(&dir, c"cgroup", 64 * 1024) {
            String::from_utf8_lossy(&self.buf).into_owned()
        } else {
            String::new()
        };
        let (cgroup, cgroup_id) = self.cgroup(Hierarchy::V2, &cgroups);
        let (cgroup_v1, cgroup_v1_id) = self.cgroup(Hierarchy::V1, &cgroups);
        // One byte more than is kept tells a longer argv.
        let (argv, argv_truncated) = if self.read_at(&dir, c"cmdline", ARGV_MAX + 1) {
            split_cmdline(&self.buf)
        } else {
            (Vec::new(), false)
        };
        let exe = read_link_at(&dir, c"exe");
        Some(ProcInfo {
            pid,
            ppid,
            start_ns: start_ticks * self.tick_ns,
            nspid: nspid.unwrap_or(pid),
            // One pid in NSpid: the process is in our own pid namespace (no need for the
            // namespace link, a tenth of the time a process costs).
            pidns: match (levels, self.own_pidns) {
                (1, Some(own)) => own,
                _ => ino_at(&dir, c"ns/pid").unwrap_or(0),
            },
            uid,
            gid,
            comm,
            exe,
            argv,
            argv_truncated,
            zombie: state == b'Z',
            cgroup,
            cgroup_id,
            cgroup_v1,
            cgroup_v1_id,
        })
    }
}

/// The target of symlink `name` in `dir` (lossy UTF-8).
fn read_link_at(dir: &OwnedFd, name: &CStr) -> Option<String> {
    let mut buf = [0u8; libc::PATH_MAX as usize];
    // SAFETY: a valid directory fd, a NUL-terminated name and a buffer of the size given.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).ok()?;
    Some(String::from_utf8_lossy(buf.get(..n)?).into_owned())
}

/// Inode of `name` in `dir`, following links: for `ns/pid` ("pid:[4026531836]") the
/// namespace's inode.
fn ino_at(dir: &OwnedFd, name: &CStr) -> Option<u32> {
    // SAFETY: zeroed stat is a valid out value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: a valid directory fd, a NUL-terminated name and an out pointer.
    let r = unsafe { libc::fstatat(dir.as_raw_fd(), name.as_ptr(), &mut st, 0) };
    (r == 0).then_some(st.st_ino as u32)
}

/// Reads processes from /proc one at a time, each as [`read_process`] does, sharing what
/// many share (the resync's worker thread).
pub struct Reader<'a>(Scanner<'a>);

impl<'a> Reader<'a> {
    pub fn new(view: &'a CgroupView) -> std::io::Result<Self> {
        Scanner::new(view).map(Self)
    }

    /// One process; None if it vanished or is a kernel thread.
    pub fn read(&mut self, pid: u32) -> Option<ProcInfo> {
        self.0.read(pid)
    }
}

/// The pids in /proc but `skip_pid`, ascending.
pub fn pids(skip_pid: u32) -> std::io::Result<Vec<u32>> {
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
    pids.sort_unstable();
    Ok(pids)
}

/// All user-space processes, sorted by pid.
pub fn scan(view: &CgroupView, skip_pid: u32) -> std::io::Result<Vec<ProcInfo>> {
    let mut out = Vec::new();
    scan_each(view, skip_pid, |p| {
        out.push(p);
        Ok::<(), std::io::Error>(())
    })?;
    out.shrink_to_fit();
    Ok(out)
}

/// Hands every user-space process to `each`, in pid order, on the calling thread, as soon as
/// it is read: nothing of the snapshot is held but what `each` keeps. Read on as many threads
/// as there are CPUs (up to four; each process costs a handful of small file reads and a node
/// has thousands), each a few hundred processes ahead at most. Stops at the first error of
/// `each` and returns it.
pub fn scan_each<E: From<std::io::Error>>(
    view: &CgroupView,
    skip_pid: u32,
    mut each: impl FnMut(ProcInfo) -> Result<(), E>,
) -> Result<usize, E> {
    /// Processes a reading thread hands over at a time, and how many such blocks it may be
    /// ahead of `each`.
    const BLOCK: usize = 64;
    const AHEAD: usize = 4;
    let pids = pids(skip_pid)?;
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, 4)
        .min(pids.len() / 64 + 1);
    let mut handed = 0;
    if threads <= 1 {
        let mut scanner = Scanner::new(view)?;
        for &pid in &pids {
            if let Some(p) = scanner.read(pid) {
                each(p)?;
                handed += 1;
            }
        }
        return Ok(handed);
    }
    std::thread::scope(|s| {
        // Blocks of BLOCK pids, block b read by thread b % threads, each thread's in order:
        // taking the blocks in turn gives every process in pid order.
        let blocks: Vec<&[u32]> = pids.chunks(BLOCK).collect();
        let mut results = Vec::with_capacity(threads);
        for t in 0..threads {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Option<ProcInfo>>>(AHEAD);
            let mine: Vec<&[u32]> = blocks.iter().copied().skip(t).step_by(threads).collect();
            s.spawn(move || {
                let Ok(mut scanner) = Scanner::new(view) else {
                    return;
                };
                for block in mine {
                    let read = block.iter().map(|&pid| scanner.read(pid)).collect();
                    // A closed channel: the caller stopped.
                    if tx.send(read).is_err() {
                        return;
                    }
                }
            });
            results.push(rx);
        }
        for (b, block) in blocks.iter().enumerate() {
            let read = match results[b % threads].recv() {
                Ok(read) => read,
                // A reader could not open /proc: read its block here.
                Err(_) => block.iter().map(|&pid| read_process(pid, view)).collect(),
            };
            for p in read.into_iter().flatten() {
                each(p)?;
                handed += 1;
            }
        }
        Ok(handed)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_and_status_parse_like_proc5_says() {
        let stat = "4242 (my (odd) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615";
        let s = parse_stat(stat.as_bytes()).expect("a stat line");
        assert_eq!(
            (s.comm.as_str(), s.state, s.ppid, s.flags, s.start_ticks),
            ("my (odd) name", b'S', 17, 4194560, 987654)
        );
        assert!(parse_stat(b"garbage").is_none());
        let status =
            "Name:\tsleep\nUid:\t1000\t1000\t1000\t1000\nGid:\t5\t5\t5\t5\nNSpid:\t4242\t1\n";
        assert_eq!(parse_status(status.as_bytes()), (1000, 5, Some(1), 2));
        assert_eq!(parse_status(b""), (0, 0, None, 0));
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

    /// What the scanner reads of a process, against other readers of the same files
    /// (procfs, std).
    #[test]
    fn reads_each_field_as_procfs_and_std_do() {
        let long = "x".repeat(ARGV_MAX + 100);
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sleep 5; :", "named", &long])
            .spawn()
            .expect("spawn sh");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let pid = child.id();
        let view = CgroupView::default();
        let me = read_process(pid, &view).expect("the child is read");
        let oracle = procfs::process::Process::new(pid as i32).expect("procfs");
        let stat = oracle.stat().expect("procfs stat");
        let status = oracle.status().expect("procfs status");
        let ns = std::fs::metadata(format!("/proc/{pid}/ns/pid")).expect("ns/pid");
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(me.ppid, stat.ppid as u32);
        assert_eq!(me.comm, stat.comm);
        assert_eq!(
            me.start_ns,
            stat.starttime * (1_000_000_000 / procfs::ticks_per_second())
        );
        assert_eq!((me.uid, me.gid), (status.ruid, status.rgid));
        assert_eq!(
            me.nspid,
            *status.nspid.expect("NSpid").last().expect("one") as u32
        );
        assert_eq!(me.pidns, std::os::unix::fs::MetadataExt::ino(&ns) as u32);
        assert_eq!(me.exe.as_deref(), Some(exe.display().to_string().as_str()));
        assert!(me.argv_truncated, "an argv of more than {ARGV_MAX} bytes");
        assert_eq!(
            me.argv.concat().len() + me.argv.len() - 1,
            ARGV_MAX,
            "cut mid-argument"
        );
        assert_eq!(&me.argv[..3], ["sh", "-c", "sleep 5; :"]);
        assert!(
            read_process(u32::MAX - 1, &view).is_none(),
            "no such process"
        );
        let kthread = std::fs::read_to_string("/proc/2/stat").expect("kthreadd");
        assert!(kthread.contains("(kthreadd)"), "{kthread}");
        assert!(
            read_process(2, &view).is_none(),
            "kernel threads are left out"
        );
    }

    /// A process in a nested pid namespace: its pid there and that namespace's inode (the
    /// scanner reads the namespace link only for such processes).
    #[test]
    fn a_nested_pid_namespace_is_read_from_its_link() {
        let mut child = std::process::Command::new("unshare")
            .args(["--user", "--map-root-user", "--pid", "--fork", "sleep", "5"])
            .spawn()
            .expect("unshare (util-linux) with user namespaces");
        let sleeper = (0..100)
            .find_map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                let kids = std::fs::read_to_string(format!(
                    "/proc/{}/task/{}/children",
                    child.id(),
                    child.id()
                ))
                .ok()?;
                kids.split_whitespace().next()?.parse::<u32>().ok()
            })
            .expect("unshare forked its child");
        let view = CgroupView::default();
        let me = read_process(sleeper, &view).expect("the sleeper is read");
        let ns = std::fs::metadata(format!("/proc/{sleeper}/ns/pid")).expect("ns/pid");
        let own = std::fs::metadata("/proc/self/ns/pid").expect("own ns/pid");
        // SAFETY: plain syscall on a pid this test started (through unshare).
        unsafe { libc::kill(sleeper as i32, libc::SIGKILL) };
        let _ = child.kill();
        let _ = child.wait();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(me.pidns, ns.ino() as u32);
        assert_ne!(me.pidns, own.ino() as u32, "another pid namespace");
        assert_eq!(me.nspid, 1, "the init of its namespace");
        assert_ne!(me.pid, 1);
    }

    #[test]
    fn scan_each_hands_out_every_process_in_pid_order() {
        let view = CgroupView::default();
        let mut seen = Vec::new();
        let n = scan_each(&view, 0, |p| {
            seen.push(p.pid);
            Ok::<(), std::io::Error>(())
        })
        .expect("scan");
        assert_eq!(n, seen.len());
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "ascending: {seen:?}");
        assert!(seen.contains(&std::process::id()), "this test is a process");
        // An error from the callback stops the scan and comes back.
        let mut calls = 0;
        let err = scan_each(&view, 0, |_| {
            calls += 1;
            Err(std::io::Error::other("enough"))
        })
        .expect_err("the callback's error");
        assert_eq!((calls, err.to_string().as_str()), (1, "enough"));
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
