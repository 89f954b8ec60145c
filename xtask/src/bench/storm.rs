//! The workload, driven from the bench: builds the `storm` binary, runs exec storms and cgroup
//! churn (waiting for them, or in the background for the soak), and holds sleeping processes
//! for the start-up measurement.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::process::{Exit, Lines, Proc};
use crate::util;

/// What one `storm run` did.
#[derive(Clone, Debug)]
pub struct StormResult {
    pub started: usize,
    pub wall_ns: u64,
    /// User + system CPU of the storm and its children (rusage): the work the storm cost,
    /// including the tracers' BPF programs, which run in the storm's processes.
    pub cpu_ns: u64,
    pub pids: Vec<i32>,
}

pub struct Storm {
    bin: PathBuf,
}

impl Storm {
    /// Builds `storm` (release) in the workspace target dir.
    pub fn build() -> Result<Self> {
        util::step("build storm (the benchmark workload, release)")?;
        let root = util::workspace_root();
        util::cargo(
            &root,
            &["build", "--release", "-p", "xtask", "--bin", "storm"],
            &[],
        )?;
        let bin = root.join("target/release/storm");
        anyhow::ensure!(bin.is_file(), "{} was not built", bin.display());
        Ok(Self { bin })
    }

    /// `count` fork+exec+wait cycles of /bin/busybox true from `workers` threads, flat out.
    pub fn run(&self, count: usize, workers: usize, out: &Path) -> Result<StormResult> {
        self.start_run(count, workers, None, out)?.wait()
    }

    /// Starts `storm run` (at `rate` starts per second in total, or flat out) and returns
    /// without waiting for it.
    pub fn start_run(
        &self,
        count: usize,
        workers: usize,
        rate: Option<f64>,
        out: &Path,
    ) -> Result<Job> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["run", "--count", &count.to_string()])
            .args(["--workers", &workers.to_string()]);
        if let Some(r) = rate {
            cmd.args(["--rate", &r.to_string()]);
        }
        cmd.arg("--out").arg(out);
        Job::start("storm", cmd, out, false)
    }

    /// Starts `storm cgroups`: `spec.count` cgroups created in every parent directory, one
    /// `busybox true` run in them, and removed, one after the other. Its progress (cycles
    /// done) is read from its stdout as it goes.
    pub fn start_cgroups(&self, spec: &CgroupSpec<'_>, out: &Path) -> Result<Job> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["cgroups", "--count", &spec.count.to_string()])
            .args(["--tag", &spec.tag.to_string()])
            .args(["--first", &spec.first.to_string()])
            .args(["--linger-ms", &spec.linger.as_millis().to_string()])
            .args(["--progress-every", "10"]);
        if let Some(r) = spec.rate {
            cmd.args(["--rate", &r.to_string()]);
        }
        for p in spec.parents {
            cmd.arg("--parent").arg(p);
        }
        cmd.arg("--out").arg(out);
        Job::start("storm cgroups", cmd, out, true)
    }

    /// Starts `count` sleeping processes and waits until all exist.
    pub fn sleepers(&self, count: usize) -> Result<Sleepers> {
        let mut cmd = Command::new(&self.bin);
        cmd.args(["sleepers", "--count", &count.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        let mut proc = Proc::spawn("storm sleepers", &mut cmd, libc::SIGKILL)?;
        let stdin = proc.child_mut().stdin.take();
        let stdout = proc
            .child_mut()
            .stdout
            .take()
            .context("storm sleepers: no stdout pipe")?;
        let mut s = Sleepers { proc, stdin };
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading storm sleepers' ready line")?;
        if line.trim() != format!("ready {count}") {
            let exit = s.proc.wait_timeout(Duration::from_secs(60))?;
            bail!(
                "storm sleepers did not start {count} processes (said {:?}, {})",
                line.trim(),
                exit.map(|e| e.describe())
                    .unwrap_or_else(|| "still running".into())
            );
        }
        Ok(s)
    }
}

fn parse_result(path: &Path) -> Result<StormResult> {
    let v = super::read_json(path)?;
    let num = |k: &str| super::json_u64(&v, path, k);
    let pids = v
        .get("pids")
        .and_then(serde_json::Value::as_array)
        .with_context(|| format!("{}: no pids array", path.display()))?
        .iter()
        .map(|p| {
            p.as_i64()
                .and_then(|p| i32::try_from(p).ok())
                .with_context(|| format!("{}: bad pid {p}", path.display()))
        })
        .collect::<Result<Vec<i32>>>()?;
    let started = usize::try_from(num("started")?).context("started count")?;
    anyhow::ensure!(
        started == pids.len(),
        "{}: started {started} but {} pids",
        path.display(),
        pids.len()
    );
    Ok(StormResult {
        started,
        wall_ns: num("wall_ns")?,
        cpu_ns: 0,
        pids,
    })
}

/// What `storm cgroups` is to do.
pub struct CgroupSpec<'a> {
    /// One directory per hierarchy, where the cgroups are created.
    pub parents: &'a [PathBuf],
    pub count: usize,
    /// Number of the first cycle: container ids are unique over runs with one tag.
    pub first: u64,
    pub tag: u64,
    /// Cycles per second (None: as fast as it can).
    pub rate: Option<f64>,
    /// How long each cgroup stays after its process ended.
    pub linger: Duration,
}

/// A running storm process.
pub struct Job {
    proc: Proc,
    out: PathBuf,
    /// Its stdout, read as it goes ("cgroups N" progress lines).
    stdout: Option<(Lines, std::thread::JoinHandle<()>)>,
}

impl Job {
    fn start(name: &str, mut cmd: Command, out: &Path, progress: bool) -> Result<Self> {
        cmd.stdin(Stdio::null());
        if progress {
            cmd.stdout(Stdio::piped());
        }
        let mut proc = Proc::spawn(name, &mut cmd, libc::SIGKILL)?;
        let stdout = proc.child_mut().stdout.take().map(Lines::capture);
        Ok(Self {
            proc,
            out: out.to_path_buf(),
            stdout,
        })
    }

    /// Cycles done so far, from the last progress line (0 before the first).
    pub fn progress(&self) -> usize {
        self.stdout
            .as_ref()
            .and_then(|(lines, _)| lines.last())
            .and_then(|l| parse_progress(&l))
            .unwrap_or(0)
    }

    /// Waits for the storm to end and reads its result; fails if it did not end cleanly.
    pub fn wait(mut self) -> Result<StormResult> {
        let exit = self.proc.poll(true)?.context("storm was not reaped")?;
        self.result(exit)
    }

    /// The result if the storm has ended, else None.
    pub fn try_wait(&mut self) -> Result<Option<StormResult>> {
        match self.proc.poll(false)? {
            Some(exit) => self.result(exit).map(Some),
            None => Ok(None),
        }
    }

    fn result(&mut self, exit: Exit) -> Result<StormResult> {
        if let Some((_, reader)) = self.stdout.take() {
            let _ = reader.join();
        }
        if !exit.is_clean(0) {
            bail!("{} failed: {}", self.proc.name, exit.describe());
        }
        let mut r = parse_result(&self.out)?;
        let _ = std::fs::remove_file(&self.out);
        r.cpu_ns = exit.cpu_ns;
        Ok(r)
    }
}

/// "cgroups 120" -> 120
fn parse_progress(line: &str) -> Option<usize> {
    line.strip_prefix("cgroups ")?.trim().parse().ok()
}

/// Sleeping processes held by `storm sleepers`; closing its stdin makes it kill and reap them.
pub struct Sleepers {
    proc: Proc,
    stdin: Option<ChildStdin>,
}

impl Sleepers {
    /// Ends and reaps every sleeper; fails if the holder did not finish cleanly.
    pub fn stop(mut self) -> Result<()> {
        self.stdin = None;
        match self.proc.wait_timeout(Duration::from_secs(120))? {
            Some(e) if e.is_clean(0) => Ok(()),
            Some(e) => bail!("storm sleepers ended badly: {}", e.describe()),
            None => bail!("storm sleepers did not finish within 120 s (killed)"),
        }
    }
}

impl Drop for Sleepers {
    fn drop(&mut self) {
        // EOF on stdin: the holder kills and reaps its sleepers itself (Proc's drop would
        // SIGKILL the holder and leave them to their death signal and to init).
        self.stdin = None;
        let _ = self.proc.wait_timeout(Duration::from_secs(120));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_file_must_list_every_started_pid() {
        let dir = tempfile::tempdir().expect("temp dir");
        let p = dir.path().join("r.json");
        std::fs::write(&p, r#"{"started":2,"failed":0,"wall_ns":5,"pids":[10,11]}"#)
            .expect("write result");
        let r = parse_result(&p).expect("valid result parses");
        assert_eq!((r.started, r.wall_ns, r.pids), (2, 5, vec![10, 11]));
        std::fs::write(&p, r#"{"started":3,"failed":0,"wall_ns":5,"pids":[10,11]}"#)
            .expect("write result");
        assert!(parse_result(&p).is_err(), "a missing pid must be an error");
    }

    #[test]
    fn progress_lines_count_cycles() {
        assert_eq!(parse_progress("cgroups 120"), Some(120));
        assert_eq!(parse_progress("ready 3"), None);
    }
}
