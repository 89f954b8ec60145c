//! Child processes the bench owns: reaped with wait4 (exit status and rusage), stopped by
//! signal with a grace period, and killed and reaped on drop so none outlives an error.
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How a child ended, with its own resource usage.
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    /// Raw wait status.
    pub status: libc::c_int,
    /// Peak resident set size in KiB (ru_maxrss).
    pub maxrss_kb: u64,
    /// User + system CPU time over the whole life of the child, in nanoseconds.
    pub cpu_ns: u64,
}

impl Exit {
    /// Exited 0, or was ended by `expected_signal` (the one we sent it).
    pub fn is_clean(&self, expected_signal: libc::c_int) -> bool {
        (libc::WIFEXITED(self.status) && libc::WEXITSTATUS(self.status) == 0)
            || (libc::WIFSIGNALED(self.status) && libc::WTERMSIG(self.status) == expected_signal)
    }

    pub fn describe(&self) -> String {
        if libc::WIFEXITED(self.status) {
            format!("exit status {}", libc::WEXITSTATUS(self.status))
        } else if libc::WIFSIGNALED(self.status) {
            format!("killed by signal {}", libc::WTERMSIG(self.status))
        } else {
            format!("wait status {:#x}", self.status)
        }
    }
}

/// A running child of the bench.
pub struct Proc {
    pub name: String,
    pid: libc::pid_t,
    /// Kept for its stdio handles; never waited through (wait4 reaps the pid).
    child: Child,
    exit: Option<Exit>,
}

impl Proc {
    /// Spawns `cmd`; the child gets `deathsig` if the bench dies first.
    pub fn spawn(name: &str, cmd: &mut Command, deathsig: libc::c_int) -> Result<Self> {
        // SAFETY: prctl is async-signal-safe and touches no memory of the parent.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, deathsig) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        let pid = libc::pid_t::try_from(child.id())
            .with_context(|| format!("{name}: pid {} out of range", child.id()))?;
        Ok(Self {
            name: name.to_string(),
            pid,
            child,
            exit: None,
        })
    }

    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Reaps the child if it has ended (`block`: wait until it does).
    pub fn poll(&mut self, block: bool) -> Result<Option<Exit>> {
        if self.exit.is_some() {
            return Ok(self.exit);
        }
        let mut status: libc::c_int = 0;
        // SAFETY: rusage is plain old data; zeroed is a valid value.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let flags = if block { 0 } else { libc::WNOHANG };
        loop {
            // SAFETY: wait4 on our own child with valid out pointers.
            let r = unsafe { libc::wait4(self.pid, &mut status, flags, &mut usage) };
            if r == self.pid {
                let tv = |t: libc::timeval| {
                    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000
                        + u64::try_from(t.tv_usec).unwrap_or(0) * 1_000
                };
                let exit = Exit {
                    status,
                    maxrss_kb: u64::try_from(usage.ru_maxrss).unwrap_or(0),
                    cpu_ns: tv(usage.ru_utime) + tv(usage.ru_stime),
                };
                self.exit = Some(exit);
                return Ok(Some(exit));
            }
            if r == 0 {
                return Ok(None);
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                return Err(err).with_context(|| format!("wait4 on {} ({})", self.name, self.pid));
            }
        }
    }

    /// Waits up to `limit` for the child to end.
    pub fn wait_timeout(&mut self, limit: Duration) -> Result<Option<Exit>> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(e) = self.poll(false)? {
                return Ok(Some(e));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends `sig` unless the child has already been reaped (its pid may be reused then).
    pub fn signal(&mut self, sig: libc::c_int) -> Result<()> {
        if self.poll(false)?.is_some() {
            return Ok(());
        }
        // SAFETY: plain syscall on our own unreaped child.
        if unsafe { libc::kill(self.pid, sig) } != 0 {
            return Err(std::io::Error::last_os_error())
                .with_context(|| format!("kill({}, {sig}) on {}", self.pid, self.name));
        }
        Ok(())
    }

    /// Sends `sig`, waits `grace`, then kills; fails if the child had to be killed.
    pub fn stop(&mut self, sig: libc::c_int, grace: Duration) -> Result<Exit> {
        self.signal(sig)?;
        if let Some(e) = self.wait_timeout(grace)? {
            return Ok(e);
        }
        self.signal(libc::SIGKILL)?;
        self.poll(true)?;
        bail!(
            "{} (pid {}) did not stop within {:?} of signal {sig}; killed it",
            self.name,
            self.pid,
            grace
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.exit.is_none() {
            // SAFETY: plain syscalls on our own unreaped child.
            unsafe {
                libc::kill(self.pid, libc::SIGKILL);
            }
            let _ = self.poll(true);
        }
    }
}

/// Lines a child writes to a pipe, each stamped with when the bench read it.
#[derive(Clone, Default)]
pub struct Lines(Arc<Mutex<Vec<(Instant, String)>>>);

impl Lines {
    /// Reads `from` on a thread until EOF (the child closed it or ended); join the thread
    /// after the child ended to have every line.
    pub fn capture(from: impl Read + Send + 'static) -> (Self, std::thread::JoinHandle<()>) {
        let lines = Self::default();
        let sink = lines.clone();
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(from);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match reader.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = strip_ansi(&String::from_utf8_lossy(&buf));
                        if let Ok(mut v) = sink.0.lock() {
                            v.push((Instant::now(), text.trim_end().to_string()));
                        }
                    }
                }
            }
        });
        (lines, reader)
    }

    /// The first line containing `needle`, with when it was read.
    pub fn find(&self, needle: &str) -> Option<(Instant, String)> {
        let v = self.0.lock().ok()?;
        v.iter().find(|(_, l)| l.contains(needle)).cloned()
    }

    /// The last line read so far.
    pub fn last(&self) -> Option<String> {
        let v = self.0.lock().ok()?;
        v.last().map(|(_, l)| l.clone())
    }

    pub fn all(&self) -> Vec<String> {
        match self.0.lock() {
            Ok(v) => v.iter().map(|(_, l)| l.clone()).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// The last `n` lines joined, for error messages.
    pub fn tail(&self, n: usize) -> String {
        let all = self.all();
        let start = all.len().saturating_sub(n);
        all[start..].join("\n")
    }
}

/// Removes terminal colour escapes (ESC [ ... letter).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for d in chars.by_ref() {
                if d.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_ansi_removes_colour_codes_only() {
        let s = "\u{1b}[2m2026-11-26T23:35:00Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m attached 3";
        assert_eq!(strip_ansi(s), "2026-11-26T23:35:00Z  INFO attached 3");
    }

    #[test]
    fn stop_reaps_a_child_and_reports_its_signal() {
        let mut cmd = Command::new("/bin/busybox");
        cmd.args(["sleep", "30"]);
        let mut p = Proc::spawn("sleep", &mut cmd, libc::SIGKILL).expect("spawn busybox sleep");
        let exit = p
            .stop(libc::SIGTERM, Duration::from_secs(5))
            .expect("sleep stops on SIGTERM");
        assert!(exit.is_clean(libc::SIGTERM), "{}", exit.describe());
        assert!(!exit.is_clean(libc::SIGINT), "{}", exit.describe());
    }

    #[test]
    fn drop_kills_and_reaps_a_running_child() {
        let mut cmd = Command::new("/bin/busybox");
        cmd.args(["sleep", "30"]);
        let p = Proc::spawn("sleep", &mut cmd, libc::SIGKILL).expect("spawn busybox sleep");
        let pid = p.pid();
        drop(p);
        // Reaped: the pid is no longer our child (and, barring reuse, gone).
        // SAFETY: plain syscall; status pointer may be null.
        let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(r, -1, "pid {pid} should have been reaped by drop");
    }
}
