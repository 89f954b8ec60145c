//! The processes each boot runs while podtrace traces, and the ground truth about them, read
//! from the kernel (wait status, gettid, stat, readlink of /proc/PID/ns/pid, /proc/PID/cgroup),
//! never from podtrace. A scenario whose own ground truth is off fails as a scenario error.
use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::cgroups::{self, Hierarchy};

pub const PIDNS_MARKER: &str = "klab-pidns";
pub const CGROUP_PATH: &str = "/klab-cgroup";
pub const CGROUP_MARKER: &str = "klab-cgroup";
pub const CONTAINER_MARKER: &str = "klab-container";
/// A pod uid and a cri-o container id, as the kubelet and cri-o name them.
pub const POD_UID: &str = "5c0e7a1d-3b9f-4e2a-8d6c-0f1e2d3c4b5a";
pub const CONTAINER_ID: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
pub const THREADS: usize = 4;

/// The cri-o / kubelet (systemd driver) cgroup of a best-effort container.
pub fn container_path() -> String {
    format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/crio-{CONTAINER_ID}.scope",
        POD_UID.replace('-', "_")
    )
}

/// A process that ran in a cgroup created for it, in every mounted hierarchy.
#[derive(Clone, Debug)]
pub struct InCgroup {
    pub pid: u32,
    pub path: String,
    /// Directory inode by hierarchy name (`v2`, `v1:pids`, ...).
    pub inodes: BTreeMap<String, u64>,
}

#[derive(Clone, Debug)]
pub struct Threads {
    pub pid: u32,
    pub tids: Vec<u32>,
}

/// What the scenarios did; an `Err` says why a scenario's own ground truth is missing.
pub struct Facts {
    pub exit7: Result<u32, String>,
    pub sigkill: Result<u32, String>,
    /// The inode of the new pid namespace (readlink /proc/self/ns/pid inside it).
    pub pidns: Result<u64, String>,
    pub threads: Result<Threads, String>,
    /// (pid, the exit code waitpid gave) of a process whose leader exited first.
    pub leader_exit: Result<(u32, i32), String>,
    pub cgroup: Result<InCgroup, String>,
    pub container: Result<InCgroup, String>,
    /// Kernel threads that kthreadd started while podtrace ran.
    pub kthreads: Result<Vec<u32>, String>,
}

fn s<T>(r: Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("scenario error: {e:#}"))
}

pub fn run_all(hs: &[Hierarchy]) -> Facts {
    Facts {
        exit7: s(exit7()),
        sigkill: s(sigkill()),
        pidns: s(pidns()),
        threads: s(threads()),
        leader_exit: s(leader_exit()),
        cgroup: s(in_cgroup(hs, CGROUP_PATH, CGROUP_MARKER)),
        container: s(in_cgroup(hs, &container_path(), CONTAINER_MARKER)),
        kthreads: s(kthreads()),
    }
}

/// The pids of kthreadd's (pid 2) children that are kernel threads (PF_KTHREAD in
/// /proc/PID/stat's flags).
fn kernel_threads() -> Result<std::collections::BTreeSet<u32>> {
    let mut out = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let Some(pid) = entry?
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(after) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let f: Vec<&str> = after.split_whitespace().collect();
        // state(0) ppid(1) ... flags(6)
        let ppid = f.get(1).and_then(|v| v.parse::<u32>().ok());
        let flags = f.get(6).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        if ppid == Some(2) && flags & 0x0020_0000 != 0 {
            out.insert(pid);
        }
    }
    Ok(out)
}

/// Makes the kernel start kernel threads: a nice value the writeback workqueue has not had
/// yet makes the workqueue code create a worker pool and a kworker for it (each run another
/// value, so the pool is new). The new kernel threads are the ground truth.
fn kthreads() -> Result<Vec<u32>> {
    use std::sync::atomic::{AtomicI32, Ordering};
    static NEXT: AtomicI32 = AtomicI32::new(10);
    const NICE: &str = "/sys/devices/virtual/workqueue/writeback/nice";
    let before = kernel_threads()?;
    let old = std::fs::read_to_string(NICE).with_context(|| format!("reading {NICE}"))?;
    let nice = NEXT.fetch_add(1, Ordering::SeqCst);
    std::fs::write(NICE, nice.to_string()).with_context(|| format!("writing {nice} to {NICE}"))?;
    std::thread::sleep(Duration::from_millis(300));
    let after = kernel_threads()?;
    std::fs::write(NICE, old.trim()).with_context(|| format!("restoring {NICE}"))?;
    let new: Vec<u32> = after.difference(&before).copied().collect();
    ensure!(
        !new.is_empty(),
        "no new kernel thread after setting {NICE} to {nice}"
    );
    Ok(new)
}

/// `sh -c 'exit 7'`: the wait status says 7.
fn exit7() -> Result<u32> {
    let mut child = Command::new("/bin/sh")
        .args(["-c", "exit 7"])
        .spawn()
        .context("spawn sh")?;
    let pid = child.id();
    let status = child.wait()?;
    ensure!(
        status.code() == Some(7),
        "sh -c 'exit 7' ended with {status}"
    );
    Ok(pid)
}

/// `sleep 30`, SIGKILL once it has exec'd: the wait status says signal 9.
fn sigkill() -> Result<u32> {
    let mut child = Command::new("/bin/sleep")
        .arg("30")
        .spawn()
        .context("spawn sleep")?;
    let pid = child.id();
    let t0 = Instant::now();
    // Busybox applets keep comm "sleep" after exec; before it the child is still us.
    while std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim() != "sleep")
        .unwrap_or(true)
    {
        if t0.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            bail!("sleep did not exec within 20 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().context("SIGKILL sleep")?;
    let status = child.wait()?;
    ensure!(
        status.signal() == Some(libc::SIGKILL),
        "sleep ended with {status}"
    );
    Ok(pid)
}

/// `unshare --pid --fork sh -c 'readlink /proc/self/ns/pid; : klab-pidns'`.
fn pidns() -> Result<u64> {
    let out = Command::new("/bin/unshare")
        .args([
            "--pid",
            "--fork",
            "/bin/sh",
            "-c",
            &format!("readlink /proc/self/ns/pid; : {PIDNS_MARKER}"),
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("unshare")?;
    ensure!(out.status.success(), "unshare ended with {}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let ino = text
        .trim()
        .strip_prefix("pid:[")
        .and_then(|t| t.strip_suffix(']'))
        .and_then(|n| n.parse::<u64>().ok())
        .with_context(|| format!("readlink /proc/self/ns/pid printed {text:?}"))?;
    let own = std::fs::read_link("/proc/self/ns/pid")?;
    ensure!(
        own.display().to_string() != text.trim(),
        "unshare --pid did not make a new pid namespace ({})",
        own.display()
    );
    Ok(ino)
}

/// Re-runs this binary as `kernel-scenario leader-exit 3 7`: the leader thread exits first
/// with 3, another thread later with 7; waitpid says which the process ended with.
fn leader_exit() -> Result<(u32, i32)> {
    let mut child = Command::new("/proc/self/exe")
        .args(["leader-exit", "3", "7"])
        .spawn()
        .context("spawn the leader-exit program")?;
    let pid = child.id();
    let status = child.wait()?;
    let code = status
        .code()
        .with_context(|| format!("leader-exit program ended with {status}"))?;
    ensure!(
        code == 3 || code == 7,
        "leader-exit program ended with {status}"
    );
    Ok((pid, code))
}

/// The `leader-exit A B` child: a thread that exits with B after 200 ms, the leader with A
/// at once (the exit syscall ends one thread, not the process).
pub fn leader_exit_child(leader: i64, last: i64) -> ! {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: the exit syscall ends this thread only.
        unsafe { libc::syscall(libc::SYS_exit, last) };
    });
    // SAFETY: the exit syscall ends the leader thread only.
    unsafe { libc::syscall(libc::SYS_exit, leader) };
    std::process::exit(99)
}

/// Re-runs this binary as `kernel-scenario threads N`: it prints its pid and its threads' tids.
fn threads() -> Result<Threads> {
    let child = Command::new("/proc/self/exe")
        .args(["threads", &THREADS.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .context("spawn the thread program")?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "thread program ended with {}",
        out.status
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("thread program printed {:?}", out.stdout))?;
    let tids: Vec<u32> = v["tids"]
        .as_array()
        .context("no tids")?
        .iter()
        .filter_map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()))
        .collect();
    ensure!(
        v["pid"] == pid,
        "thread program says pid {} (spawned {pid})",
        v["pid"]
    );
    ensure!(
        tids.len() == THREADS && tids.iter().all(|t| *t != pid),
        "thread program's tids: {tids:?} (pid {pid})"
    );
    Ok(Threads { pid, tids })
}

/// The `threads N` child: N threads alive at once, each reports gettid(); prints
/// `{"pid":P,"tids":[...]}` after joining them.
pub fn thread_child(n: usize) -> Result<()> {
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(n + 1));
    let (tx, rx) = std::sync::mpsc::channel();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let b = std::sync::Arc::clone(&barrier);
            let tx = tx.clone();
            std::thread::spawn(move || {
                // SAFETY: gettid has no preconditions.
                let tid = unsafe { libc::syscall(libc::SYS_gettid) };
                let _ = tx.send(tid);
                b.wait();
            })
        })
        .collect();
    drop(tx);
    barrier.wait();
    let tids: Vec<i64> = rx.iter().collect();
    for h in handles {
        if h.join().is_err() {
            bail!("a thread panicked");
        }
    }
    println!(
        "{}",
        serde_json::json!({"pid": std::process::id(), "tids": tids})
    );
    Ok(())
}

/// Creates `path` in every hierarchy and runs `sh` that joins it everywhere, prints its
/// /proc/PID/cgroup, and execs `true <marker>`.
fn in_cgroup(hs: &[Hierarchy], path: &str, marker: &str) -> Result<InCgroup> {
    let inodes = cgroups::create(hs, path)?;
    let script = format!(
        "for f; do echo $$ > \"$f\" || {{ echo \"cannot join $f\" >&2; exit 3; }}; done; cat /proc/$$/cgroup; exec /bin/true {marker}"
    );
    let child = Command::new("/bin/sh")
        .arg("-c")
        .arg(&script)
        .arg("sh")
        .args(cgroups::procs_files(hs, path))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawn sh")?;
    let pid = child.id();
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "joining {path} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    // Ground truth that the process was in `path` in every hierarchy before it exec'd.
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen = 0;
    for line in text.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctl, p) = (f.next(), f.next().unwrap_or(""), f.next().unwrap_or(""));
        let name = if ctl.is_empty() {
            "v2".to_string()
        } else {
            format!("v1:{ctl}")
        };
        if inodes.contains_key(&name) {
            ensure!(p == path, "/proc/{pid}/cgroup says {line:?}, not {path}");
            seen += 1;
        }
    }
    ensure!(
        seen == inodes.len(),
        "/proc/{pid}/cgroup lists {seen} of {} hierarchies: {text:?}",
        inodes.len()
    );
    Ok(InCgroup {
        pid,
        path: path.to_string(),
        inodes,
    })
}
