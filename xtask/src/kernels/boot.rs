//! One QEMU boot: the kernel, the initramfs, `klab_mode=<mode>` on the command line; the serial
//! console is copied to a log file and parsed for the scenario runner's `KLAB {json}` lines
//! (tests/src/bin/kernel-scenario/proto.rs). QEMU is killed when the boot runs out of time.
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::arch::Arch;

const PREFIX: &str = "KLAB ";
const POWEROFF_LIMIT: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Tcg,
    Kvm,
}

/// What one boot reported.
#[derive(Debug, Default)]
pub struct Report {
    pub plan: Vec<String>,
    /// (check, pass, detail) in the order reported.
    pub results: Vec<(String, bool, String)>,
    /// The guest kernel's `uname -r`, as the runner read it.
    pub kernel: Option<String>,
    /// Set when the boot itself failed: no `done` (timeout, panic, crash), QEMU error.
    pub error: Option<String>,
    pub probe: bool,
    pub secs: f64,
    /// Why the first boot was not taken (the guest died before the runner started: a lab
    /// failure of TCG, not a podtrace result), when it was booted again.
    pub retried: Option<String>,
}

pub struct Boot<'a> {
    /// The guest's architecture (QEMU binary, board, CPU, console: arch.rs).
    pub arch: Arch,
    pub vmlinuz: &'a Path,
    pub initrd: &'a Path,
    pub mode: &'a str,
    pub accel: Accel,
    pub timeout: Duration,
    pub log: PathBuf,
    /// More kernel command line (`klab_caps=...`).
    pub extra_cmdline: String,
}

impl Boot<'_> {
    fn command(&self) -> Command {
        let mut c = Command::new(super::arch::qemu(self.arch));
        c.args(super::arch::machine_args(self.arch, self.accel));
        // 6.12 under TCG with -smp 2 crashed early in two of two boots; -smp 1 everywhere.
        c.args([
            "-m",
            "768",
            "-smp",
            "1",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
            "-serial",
            "stdio",
            "-kernel",
        ])
        .arg(self.vmlinuz)
        .arg("-initrd")
        .arg(self.initrd)
        .arg("-append")
        .arg(format!(
            "console={} panic=-1 quiet loglevel=1 klab_mode={} {}",
            super::arch::console(self.arch),
            self.mode,
            self.extra_cmdline
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        c
    }

    /// Boots; a guest that died before the scenario runner said anything (TCG occasionally
    /// crashes a 6.12 guest in its first seconds, more under load) is booted once more.
    pub fn run_with_retry(&self) -> Report {
        let first = self.run();
        if first.kernel.is_some() || first.probe || first.error.is_none() {
            return first;
        }
        let why = first.error.clone().unwrap_or_default();
        let mut again = self.run();
        again.retried = Some(why);
        again
    }

    pub fn run(&self) -> Report {
        let t0 = Instant::now();
        let mut r = Report::default();
        let mut log = match std::fs::File::create(&self.log) {
            Ok(f) => f,
            Err(e) => {
                r.error = Some(format!("cannot create {}: {e}", self.log.display()));
                return r;
            }
        };
        let mut child = match self.command().spawn() {
            Ok(c) => c,
            Err(e) => {
                r.error = Some(format!(
                    "cannot start {}: {e}",
                    super::arch::qemu(self.arch)
                ));
                return r;
            }
        };
        let (tx, rx) = mpsc::channel::<String>();
        let readers: Vec<_> = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        .enumerate()
        .map(|(i, s)| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut rd = BufReader::new(s);
                let mut buf = Vec::new();
                while rd
                    .read_until(b'\n', &mut buf)
                    .map(|n| n > 0)
                    .unwrap_or(false)
                {
                    let line = String::from_utf8_lossy(&buf)
                        .trim_end_matches(['\r', '\n'])
                        .to_string();
                    let line = if i == 1 {
                        format!("qemu stderr: {line}")
                    } else {
                        line
                    };
                    if tx.send(line).is_err() {
                        break;
                    }
                    buf.clear();
                }
            })
        })
        .collect();
        drop(tx);
        let mut done = false;
        let mut tail: Vec<String> = Vec::new();
        let mut timed_out = false;
        let mut deadline = t0 + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                timed_out = true;
                break;
            }
            match rx.recv_timeout(left.min(Duration::from_millis(500))) {
                Ok(line) => {
                    let _ = writeln!(log, "{line}");
                    if let Some(at) = line.find(PREFIX) {
                        if let Ok(v) = serde_json::from_str::<Value>(&line[at + PREFIX.len()..]) {
                            if absorb(&mut r, &v) && !done {
                                done = true;
                                // `poweroff -f` follows at once; do not wait the whole timeout.
                                deadline = deadline.min(Instant::now() + POWEROFF_LIMIT);
                            }
                        }
                    }
                    if !line.contains("TCG doesn't support requested feature") {
                        tail.push(line);
                    }
                    if tail.len() > 8 {
                        tail.remove(0);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        if timed_out {
            let _ = child.kill();
        }
        let status = child.wait();
        for h in readers {
            let _ = h.join();
        }
        r.secs = t0.elapsed().as_secs_f64();
        let last = tail
            .iter()
            .filter(|l| !l.trim().is_empty())
            .map(|l| l.chars().take(160).collect::<String>())
            .collect::<Vec<_>>()
            .join(" | ");
        if timed_out && done {
            r.error = Some(format!(
                "all results in, but the guest did not power off within {} s (QEMU killed)",
                POWEROFF_LIMIT.as_secs()
            ));
        } else if timed_out {
            r.error = Some(format!(
                "timed out after {} s (QEMU killed); last lines: {last}",
                self.timeout.as_secs()
            ));
        } else if !(done || r.probe) {
            r.error = Some(format!(
                "guest stopped without `done` (QEMU {}); last lines: {last}",
                status.map_or_else(|e| e.to_string(), |s| s.to_string())
            ));
        }
        r
    }
}

/// Takes one protocol message; returns true on `done`.
fn absorb(r: &mut Report, v: &Value) -> bool {
    match v["kind"].as_str() {
        Some("start") => r.kernel = v["kernel"].as_str().map(str::to_string),
        Some("plan") => {
            r.plan = v["checks"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|c| c.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        }
        Some("result") => r.results.push((
            v["check"].as_str().unwrap_or("?").to_string(),
            v["pass"] == true,
            v["detail"].as_str().unwrap_or("").to_string(),
        )),
        Some("probe") => r.probe = true,
        Some("done") => return true,
        _ => {}
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn protocol_messages() {
        let mut r = Report::default();
        assert!(!absorb(
            &mut r,
            &json!({"kind": "plan", "checks": ["a", "b"]})
        ));
        assert!(!absorb(
            &mut r,
            &json!({"kind": "result", "check": "a", "pass": true, "detail": "x"})
        ));
        assert!(absorb(&mut r, &json!({"kind": "done"})));
        assert_eq!(r.plan, ["a", "b"]);
        assert_eq!(r.results, [("a".to_string(), true, "x".to_string())]);
    }
}
