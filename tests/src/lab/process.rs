//! Ground truth about processes from /proc.

use std::path::PathBuf;

/// The fields of `/proc/PID/status` the tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStatus {
    /// `Name:` (the comm, at most 15 bytes).
    pub name: String,
    /// First letter of `State:` (`R`, `S`, `Z`, ...).
    pub state: char,
    pub tgid: u32,
    pub pid: u32,
    pub ppid: u32,
    /// `NSpid:`: the pid in each nested pid namespace, host first; a container init ends with 1.
    pub nspid: Vec<u32>,
    /// `NStgid:`, same order as `nspid`.
    pub nstgid: Vec<u32>,
    /// Real uid (first value of `Uid:`).
    pub uid: u32,
}

fn parse_ids(v: &str, what: &str, pid: u32) -> Vec<u32> {
    v.split_whitespace()
        .map(|x| {
            x.parse()
                .unwrap_or_else(|e| panic!("/proc/{pid}/status {what}: bad number {x:?}: {e}"))
        })
        .collect()
}

/// Parses `/proc/PID/status` text (exposed for tests of the parser itself).
pub fn parse_status(pid: u32, text: &str) -> ProcStatus {
    let field = |key: &str| -> &str {
        text.lines()
            .find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(':')))
            .map(str::trim)
            .unwrap_or_else(|| panic!("/proc/{pid}/status has no {key}: line:\n{text}"))
    };
    let one = |key: &str| -> u32 {
        parse_ids(field(key), key, pid)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("/proc/{pid}/status {key}: is empty"))
    };
    ProcStatus {
        name: field("Name").to_string(),
        state: field("State").chars().next().unwrap_or('?'),
        tgid: one("Tgid"),
        pid: one("Pid"),
        ppid: one("PPid"),
        nspid: parse_ids(field("NSpid"), "NSpid", pid),
        nstgid: parse_ids(field("NStgid"), "NStgid", pid),
        uid: one("Uid"),
    }
}

/// `/proc/PID/status` parsed, or None if the process does not exist (any more).
pub fn try_proc_status(pid: u32) -> Option<ProcStatus> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(parse_status(pid, &text))
}

/// `/proc/PID/status` parsed; panics if the process does not exist.
pub fn proc_status(pid: u32) -> ProcStatus {
    try_proc_status(pid)
        .unwrap_or_else(|| panic!("process {pid} does not exist (/proc/{pid}/status)"))
}

/// `/proc/PID/cmdline` split at NULs (empty for a zombie or a kernel thread).
pub fn proc_cmdline(pid: u32) -> Vec<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/cmdline: {e}"));
    raw.split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The cgroup v2 path of PID (the `0::` line of `/proc/PID/cgroup`), e.g. `/libpod_parent/libpod-<id>`.
pub fn proc_cgroup(pid: u32) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/cgroup: {e}"));
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("/proc/{pid}/cgroup has no cgroup v2 (0::) line:\n{text}"))
}

/// Direct children of PID (all its threads), from `/proc/PID/task/*/children`.
pub fn proc_children(pid: u32) -> Vec<u32> {
    let dir = PathBuf::from(format!("/proc/{pid}/task"));
    let Ok(tasks) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut kids: Vec<u32> = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect();
    kids.sort_unstable();
    kids.dedup();
    kids
}

/// (state, start time in clock ticks since boot) from `/proc/PID/stat`.
fn stat_state_and_start(pid: u32) -> Option<(char, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm is in parentheses and may contain spaces: fields restart after the last ')'.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); starttime is field 22.
    let state = fields.first()?.chars().next()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// True if PID exists and is neither a zombie nor dead. Orphaned runtime processes (conmon, the
/// containerd shim) are reaped by PID 1, which on this machine can take a few seconds: a zombie
/// counts as gone.
pub fn is_alive(pid: u32) -> bool {
    matches!(stat_state_and_start(pid), Some((s, _)) if s != 'Z' && s != 'X')
}

/// A process identified by pid and start time, so a recycled pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessRef {
    pub pid: u32,
    pub start_time: u64,
}

impl ProcessRef {
    /// Refers to the process currently running as PID; panics if there is none.
    pub fn of(pid: u32) -> Self {
        Self::try_of(pid)
            .unwrap_or_else(|| panic!("process {pid} does not exist (/proc/{pid}/stat)"))
    }

    /// Refers to the process currently running as PID, if there is one.
    pub fn try_of(pid: u32) -> Option<Self> {
        let (_, start_time) = stat_state_and_start(pid)?;
        Some(Self { pid, start_time })
    }

    /// True while this very process exists and is not a zombie.
    pub fn is_alive(&self) -> bool {
        matches!(stat_state_and_start(self.pid),
            Some((s, start)) if start == self.start_time && s != 'Z' && s != 'X')
    }

    /// Sends SIGKILL if the process is still this one and alive.
    pub fn kill(&self) {
        if self.is_alive() {
            let pid = libc::pid_t::try_from(self.pid).unwrap_or(libc::pid_t::MAX);
            // SAFETY: kill(2) with a valid signal number; a vanished pid only yields ESRCH.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Waits until the runtime's init process PID has exec'd the container command, i.e. its
/// /proc/PID/exe no longer contains `runtime` (`runc` for `runc init`, `unshare` for the fake), or
/// until it has exited. Panics after the lab timeout.
pub fn wait_exec(proc_ref: &ProcessRef, runtime: &str) {
    let exe = || std::fs::read_link(format!("/proc/{}/exe", proc_ref.pid));
    super::cmd::wait_until(
        &format!("process {} to exec the container command", proc_ref.pid),
        || !proc_ref.is_alive() || exe().is_ok_and(|p| !p.to_string_lossy().contains(runtime)),
        || format!("/proc/{}/exe is {:?}", proc_ref.pid, exe()),
    );
}

/// The live `containerd-shim-runc-v2` serving `id` in containerd namespace `namespace` of the
/// containerd at `address`, found by its command line.
pub fn find_containerd_shim(address: &str, namespace: &str, id: &str) -> Option<u32> {
    let want = ["-namespace", namespace, "-id", id, "-address", address];
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|&pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let argv: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            argv.first()
                .is_some_and(|a| a.ends_with("containerd-shim-runc-v2"))
                && argv.windows(want.len()).any(|w| w == want)
                && is_alive(pid)
        })
}

/// Runs `bin` (the tests' spawn-threads program, `env!("CARGO_BIN_EXE_spawn-threads")` in an
/// integration test) so that it starts `n` threads; returns its pid once it has exited 0.
pub fn spawn_threads(bin: &str, n: usize) -> u32 {
    let mut child = std::process::Command::new(bin)
        .arg(n.to_string())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    let pid = child.id();
    let status = child
        .wait()
        .unwrap_or_else(|e| panic!("wait for {bin}: {e}"));
    assert!(status.success(), "{bin} {n}: {status}");
    pid
}
