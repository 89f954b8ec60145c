//! podtrace inside the guest: started with `--output` and `--summary`, ready once it logs
//! `attached`, stopped with SIGINT. Its stderr is copied to the console (`podtrace| ...`).
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::proto;

pub const PODTRACE: &str = "/bin/podtrace";

pub struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<Vec<String>>>,
    pub output: PathBuf,
    pub summary: PathBuf,
}

impl Daemon {
    pub fn start(dir: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir {dir}"))?;
        let output = PathBuf::from(dir).join("events.ndjson");
        let summary = PathBuf::from(dir).join("summary.json");
        let mut child = Command::new(PODTRACE)
            .arg("run")
            .arg("--output")
            .arg(&output)
            .arg("--summary")
            .arg(&summary)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
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
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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
        let t0 = Instant::now();
        loop {
            if let Some(s) = self.child.try_wait()? {
                // Let the stderr thread copy the last lines.
                std::thread::sleep(Duration::from_millis(100));
                return Ok(s);
            }
            if t0.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("podtrace did not exit within {limit:?} of SIGINT (killed)");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
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
