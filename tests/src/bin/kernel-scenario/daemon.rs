//! podtrace inside the guest: started with `--output`, `--summary` and `--record` (plus a
//! configuration's own arguments), ready once it logs `attached`, stopped with SIGINT. Its
//! stderr is copied to the console (`podtrace| ...`).
//!
//! "As deployed" it runs with only the capabilities the DaemonSet grants (every other one
//! dropped from the bounding set before exec, as a container runtime does for a root
//! container), no_new_privs (`allowPrivilegeEscalation: false`) and a 64 KiB RLIMIT_MEMLOCK
//! (what runtimes under older systemd hand their containers).
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::proto;

pub const PODTRACE: &str = "/bin/podtrace";

/// The memlock limit runtimes under older systemd give containers.
pub const CONTAINER_MEMLOCK: u64 = 64 << 10;

/// How podtrace is started: its extra arguments, and the container's limits "as deployed".
#[derive(Clone, Debug, Default)]
pub struct Launch {
    pub args: Vec<String>,
    /// Keep only these capabilities (numbers); None: root with every capability.
    pub caps: Option<Vec<u32>>,
    /// RLIMIT_MEMLOCK, soft and hard (None: unchanged).
    pub memlock: Option<u64>,
}

impl Launch {
    /// Applies the limits to a command (in the child, before exec).
    pub fn apply(&self, cmd: &mut Command) {
        use std::os::unix::process::CommandExt;
        let caps = self.caps.clone();
        let memlock = self.memlock;
        // SAFETY: only async-signal-safe system calls between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if let Some(bytes) = memlock {
                    let r = libc::rlimit {
                        rlim_cur: bytes,
                        rlim_max: bytes,
                    };
                    if libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                if let Some(keep) = &caps {
                    // Root's capabilities after exec are its bounding set.
                    for cap in 0..64u32 {
                        if !keep.contains(&cap)
                            && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0)
                                != 0
                        {
                            let e = std::io::Error::last_os_error();
                            // Past the kernel's last capability.
                            if e.raw_os_error() != Some(libc::EINVAL) {
                                return Err(e);
                            }
                        }
                    }
                    if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
    }
}

pub struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    pub output: PathBuf,
    pub summary: PathBuf,
    pub trace: PathBuf,
}

impl Daemon {
    pub fn start(dir: &str, launch: &Launch) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir {dir}"))?;
        let output = PathBuf::from(dir).join("events.ndjson");
        let summary = PathBuf::from(dir).join("summary.json");
        let trace = PathBuf::from(dir).join("trace.ndjson");
        let mut cmd = Command::new(PODTRACE);
        cmd.arg("run")
            .arg("--output")
            .arg(&output)
            .arg("--summary")
            .arg(&summary)
            .arg("--record")
            .arg(&trace)
            .args(&launch.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        launch.apply(&mut cmd);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot start {PODTRACE}"))?;
        let stderr = child
            .stderr
            .take()
            .context("podtrace stderr is not piped")?;
        let (tx, rx) = mpsc::channel();
        let all = Arc::new(Mutex::new(Vec::new()));
        let keep = Arc::clone(&all);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                proto::log("podtrace", &line);
                if let Ok(mut v) = keep.lock() {
                    v.push(line.clone());
                }
                // The receiver may be gone (after attach): keep copying to the console.
                let _ = tx.send(line);
            }
        });
        Ok(Self {
            child,
            lines: rx,
            stderr: all,
            output,
            summary,
            trace,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits until podtrace exits by itself (a start it must refuse).
    pub fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        match self.exited_within(limit)? {
            Some(s) => Ok(s),
            None => bail!("podtrace still running after {limit:?}"),
        }
    }

    /// Its exit status once it has exited, or None if it is still running after `limit`.
    fn exited_within(&mut self, limit: Duration) -> Result<Option<ExitStatus>> {
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait()? {
                // Let the stderr thread copy the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Ok(Some(s));
            }
            if t0.elapsed() > limit {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for the `attached` line; returns how long it took.
    pub fn wait_attached(&mut self, limit: Duration) -> Result<Duration> {
        let t0 = Instant::now();
        while t0.elapsed() < limit {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) if line.contains("attached") => return Ok(t0.elapsed()),
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = self.child.try_wait()? {
                        bail!(
                            "podtrace exited before attaching ({status}): {}",
                            self.tail()
                        );
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait()?;
                    bail!(
                        "podtrace closed stderr before attaching ({status}): {}",
                        self.tail()
                    );
                }
            }
        }
        bail!(
            "podtrace did not log `attached` within {limit:?}: {}",
            self.tail()
        )
    }

    /// SIGINT, then waits up to `limit` for it to exit (SIGKILL after that).
    pub fn stop(&mut self, limit: Duration) -> Result<ExitStatus> {
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        if let Some(s) = self.exited_within(limit)? {
            return Ok(s);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        bail!("podtrace did not exit within {limit:?} of SIGINT (killed)")
    }

    pub fn stderr(&self) -> Vec<String> {
        self.stderr.lock().map(|v| v.clone()).unwrap_or_default()
    }

    fn tail(&self) -> String {
        let v = self.stderr();
        let n = v.len().saturating_sub(5);
        v[n..].join(" / ")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
