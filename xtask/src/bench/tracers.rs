//! The configurations compared, how each tracer is started, known to be attached, measured
//! over the storm window and stopped.
use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use super::guard::check_interrupted;
use super::outputs;
use super::process::{Exit, Lines, Proc};
use super::procfs::{self, ProgStat};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Config {
    NoTracer,
    Podtrace,
    /// The same as `Podtrace`, with the binary the image ships (static musl) instead of the
    /// glibc build.
    PodtraceImage,
    PodtraceContainers,
    /// podtrace with its reader stopped (SIGSTOP) during the storm: a starved daemon.
    PodtraceStalled,
    Bpftrace,
    /// bpftrace with empty probes on the same tracepoints: the floor of the kernel figure.
    BpftraceEmpty,
    Forkstat,
}

impl Config {
    pub const ALL: [Config; 8] = [
        Config::NoTracer,
        Config::Podtrace,
        Config::PodtraceImage,
        Config::PodtraceContainers,
        Config::PodtraceStalled,
        Config::Bpftrace,
        Config::BpftraceEmpty,
        Config::Forkstat,
    ];

    /// Every configuration with a tracer.
    pub fn tracers() -> impl Iterator<Item = Config> {
        Self::ALL.into_iter().filter(|&c| c != Config::NoTracer)
    }

    /// Its name in `PODTRACE_BENCH_CONFIGS`.
    pub fn key(self) -> &'static str {
        match self {
            Config::NoTracer => "none",
            Config::Podtrace => "podtrace",
            Config::PodtraceImage => "image",
            Config::PodtraceContainers => "containers-only",
            Config::PodtraceStalled => "stalled",
            Config::Bpftrace => "bpftrace",
            Config::BpftraceEmpty => "bpftrace-empty",
            Config::Forkstat => "forkstat",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Config::NoTracer => "no tracer",
            Config::Podtrace => "podtrace",
            Config::PodtraceImage => "podtrace, the image's binary (static musl)",
            Config::PodtraceContainers => "podtrace --containers-only",
            Config::PodtraceStalled => "podtrace, reader stopped during the storm",
            Config::Bpftrace => "bpftrace (exec+fork+exit)",
            Config::BpftraceEmpty => "bpftrace, empty probes (floor of the kernel figure)",
            Config::Forkstat => "forkstat (proc connector)",
        }
    }

    /// Whether the tracer's user space should see every storm process (the filtered
    /// configuration should see none of them: they run on the host).
    pub fn reports_host_processes(self) -> bool {
        !matches!(
            self,
            Config::NoTracer | Config::PodtraceContainers | Config::BpftraceEmpty
        )
    }

    /// The command line, as documented in BENCHMARKS.md.
    pub fn shown(self, summary: bool, kernel_stats: bool) -> String {
        let sum = match (summary, kernel_stats) {
            (true, true) => " --summary SUMMARY --kernel-stats",
            (true, false) => " --summary SUMMARY",
            (false, _) => "",
        };
        match self {
            Config::NoTracer => "-".into(),
            Config::Podtrace => format!("podtrace run --output OUT{sum}"),
            Config::PodtraceImage => {
                format!("target/image/podtrace run --output OUT{sum} (the image's file)")
            }
            Config::PodtraceContainers => {
                format!("podtrace run --containers-only --output OUT{sum}")
            }
            Config::PodtraceStalled => format!(
                "podtrace run --output OUT{sum}; SIGSTOP before the storm, SIGCONT after it"
            ),
            Config::Bpftrace => "bpftrace -o OUT exec_fork_exit.bt".into(),
            Config::BpftraceEmpty => "bpftrace -o OUT empty.bt".into(),
            Config::Forkstat => "forkstat -l -e fork,exec,exit > OUT".into(),
        }
    }
}

/// What the tracers need from the bench.
pub struct Tools {
    pub podtrace: PathBuf,
    /// The binary the image ships (`target/image/podtrace`: static musl, stripped).
    pub podtrace_image: PathBuf,
    /// podtrace knows `run --summary FILE`.
    pub summary: bool,
    /// podtrace knows `run --kernel-stats` (before it, `--summary` alone turned the kernel's
    /// run-time statistics on and reported them).
    pub kernel_stats: bool,
    /// podtrace knows `run --metrics-addr ADDR`.
    pub metrics: bool,
    pub bpftrace_script: PathBuf,
    pub bpftrace_empty: PathBuf,
}

impl Tools {
    pub fn new(podtrace: PathBuf, podtrace_image: PathBuf, dir: &Path) -> Result<Self> {
        anyhow::ensure!(podtrace.is_file(), "{} is not built", podtrace.display());
        anyhow::ensure!(
            podtrace_image.is_file(),
            "{} is not built (cargo xtask image)",
            podtrace_image.display()
        );
        let help = Command::new(&podtrace)
            .args(["run", "--help"])
            .output()
            .with_context(|| format!("running {} run --help", podtrace.display()))?;
        let help = String::from_utf8_lossy(&help.stdout);
        let summary = help.contains("--summary");
        let kernel_stats = help.contains("--kernel-stats");
        let metrics = help.contains("--metrics-addr");
        let bpftrace_script = dir.join("exec_fork_exit.bt");
        std::fs::write(&bpftrace_script, include_str!("exec_fork_exit.bt"))
            .with_context(|| format!("writing {}", bpftrace_script.display()))?;
        let bpftrace_empty = dir.join("empty.bt");
        std::fs::write(&bpftrace_empty, include_str!("empty.bt"))
            .with_context(|| format!("writing {}", bpftrace_empty.display()))?;
        for tool in ["bpftrace", "forkstat"] {
            let found = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
                .unwrap_or(false);
            anyhow::ensure!(
                found,
                "{tool} is not installed (cargo xtask setup --runtimes)"
            );
        }
        Ok(Self {
            podtrace,
            podtrace_image,
            summary,
            kernel_stats,
            metrics,
            bpftrace_script,
            bpftrace_empty,
        })
    }
}

/// CPU time and BPF program statistics at one instant.
pub struct Snapshot {
    pub cpu_ns: u64,
    pub progs: BTreeMap<u32, ProgStat>,
}

/// A tracer that was started for one storm.
pub struct Running {
    pub config: Config,
    proc: Proc,
    stderr: Lines,
    reader: Option<std::thread::JoinHandle<()>>,
    pub out: PathBuf,
    pub summary: Option<PathBuf>,
}

/// What a stopped tracer left behind.
pub struct Finished {
    pub exit: Exit,
    pub stderr: Vec<String>,
}

/// Starts the tracer of `config` (None for the no-tracer baseline), writing under `dir`.
pub fn start(config: Config, tools: &Tools, dir: &Path, tag: &str) -> Result<Option<Running>> {
    let out = dir.join(format!("{tag}.out"));
    let mut summary = None;
    let cmd = match config {
        Config::NoTracer => return Ok(None),
        Config::Podtrace
        | Config::PodtraceImage
        | Config::PodtraceContainers
        | Config::PodtraceStalled => {
            if tools.summary {
                summary = Some(dir.join(format!("{tag}.summary.json")));
            }
            let extra: &[&str] = if config == Config::PodtraceContainers {
                &["--containers-only"]
            } else {
                &[]
            };
            let bin = if config == Config::PodtraceImage {
                &tools.podtrace_image
            } else {
                &tools.podtrace
            };
            podtrace_command(bin, tools, &out, summary.as_deref(), extra)
        }
        Config::Bpftrace | Config::BpftraceEmpty => {
            let script = if config == Config::Bpftrace {
                &tools.bpftrace_script
            } else {
                &tools.bpftrace_empty
            };
            let mut c = Command::new("bpftrace");
            c.arg("-o").arg(&out).arg(script);
            c.stdout(Stdio::null());
            c
        }
        Config::Forkstat => {
            let mut c = Command::new("forkstat");
            c.args(["-l", "-e", "fork,exec,exit"]);
            let f = File::create(&out).with_context(|| format!("creating {}", out.display()))?;
            c.stdout(f);
            c
        }
    };
    spawn(config, cmd, out, summary).map(Some)
}

/// `podtrace run --output OUT [--summary SUMMARY [--kernel-stats]] EXTRA...`, logging at info
/// without colours. With a summary, its own kernel figures are asked for (a cross-check of the
/// bench's; a podtrace without `--kernel-stats` gave them with `--summary` alone).
fn podtrace_command(
    bin: &Path,
    tools: &Tools,
    out: &Path,
    summary: Option<&Path>,
    extra: &[&str],
) -> Command {
    let mut c = Command::new(bin);
    c.args(["run", "--output"]).arg(out);
    if let Some(s) = summary {
        c.arg("--summary").arg(s);
        if tools.kernel_stats {
            c.arg("--kernel-stats");
        }
    }
    c.args(extra);
    c.env("NO_COLOR", "1").env("PODTRACE_LOG", "info");
    c.stdout(Stdio::null());
    c
}

/// Starts `podtrace run --output OUT [--summary SUMMARY [--kernel-stats]] EXTRA...` outside the side-by-side
/// configurations (the churn and soak runs: their own output and options).
pub fn start_podtrace(
    tools: &Tools,
    out: PathBuf,
    summary: Option<PathBuf>,
    extra: &[&str],
) -> Result<Running> {
    let cmd = podtrace_command(&tools.podtrace, tools, &out, summary.as_deref(), extra);
    spawn(Config::Podtrace, cmd, out, summary)
}

fn spawn(
    config: Config,
    mut cmd: Command,
    out: PathBuf,
    summary: Option<PathBuf>,
) -> Result<Running> {
    cmd.stdin(Stdio::null()).stderr(Stdio::piped());
    // SIGTERM if the bench dies: each of them then detaches and exits.
    let mut proc = Proc::spawn(config.label(), &mut cmd, libc::SIGTERM)?;
    let pipe = proc
        .child_mut()
        .stderr
        .take()
        .with_context(|| format!("{}: no stderr pipe", config.label()))?;
    let (stderr, reader) = Lines::capture(pipe);
    Ok(Running {
        config,
        proc,
        stderr,
        reader: Some(reader),
        out,
        summary,
    })
}

/// Runs /bin/busybox true once (fork, exec, exit: every probe fires) and returns its pid.
fn canary() -> Result<i32> {
    let mut child = Command::new("/bin/busybox")
        .arg("true")
        .stdin(Stdio::null())
        .spawn()
        .context("running /bin/busybox true (canary)")?;
    let pid = i32::try_from(child.id()).context("canary pid")?;
    child.wait().context("waiting for the canary")?;
    Ok(pid)
}

impl Running {
    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    pub fn stderr(&self) -> &Lines {
        &self.stderr
    }

    /// Waits until the tracer demonstrably sees events: every one of its tracepoint programs
    /// has run (BPF tracers), or a canary exec is in its output (forkstat).
    pub fn wait_ready(&mut self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            check_interrupted()?;
            if let Some(e) = self.proc.poll(false)? {
                bail!(
                    "{} exited before it was ready ({}); stderr:\n{}",
                    self.config.label(),
                    e.describe(),
                    self.stderr.tail(20)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{} was not ready within {limit:?}; stderr:\n{}",
                    self.config.label(),
                    self.stderr.tail(20)
                );
            }
            let pid = canary()?;
            if self.is_ready(pid)? {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn is_ready(&self, canary: i32) -> Result<bool> {
        match self.config {
            Config::NoTracer => Ok(true),
            Config::Forkstat => outputs::forkstat_saw_exec(&self.out, canary),
            Config::Podtrace
            | Config::PodtraceImage
            | Config::PodtraceContainers
            | Config::PodtraceStalled
            | Config::Bpftrace
            | Config::BpftraceEmpty => {
                let is_podtrace = !matches!(self.config, Config::Bpftrace | Config::BpftraceEmpty);
                if is_podtrace && self.stderr.find("attached").is_none() {
                    return Ok(false);
                }
                let progs = procfs::bpf_progs(self.pid())?;
                let mut tps = progs
                    .values()
                    .filter(|p| procfs::is_tracepoint_type(p.prog_type))
                    .peekable();
                Ok(tps.peek().is_some() && tps.all(|p| p.run_cnt > 0))
            }
        }
    }

    pub fn snapshot(&self) -> Result<Snapshot> {
        Ok(Snapshot {
            cpu_ns: procfs::cpu_ns(self.pid())?,
            progs: procfs::bpf_progs(self.pid())?,
        })
    }

    /// Waits until the tracer has caught up: its CPU time and output size stop changing for
    /// 300 ms (at most `limit`). Returns false if it was still busy at the limit.
    pub fn settle(&mut self, limit: Duration) -> Result<bool> {
        let deadline = Instant::now() + limit;
        let probe = |r: &Self| -> Result<(u64, u64)> {
            let len = std::fs::metadata(&r.out).map(|m| m.len()).unwrap_or(0);
            Ok((procfs::cpu_ns(r.pid())?, len))
        };
        let mut last = probe(self)?;
        let mut quiet = 0;
        while Instant::now() < deadline {
            check_interrupted()?;
            std::thread::sleep(Duration::from_millis(100));
            if let Some(e) = self.proc.poll(false)? {
                bail!(
                    "{} ended during the storm ({}); stderr:\n{}",
                    self.config.label(),
                    e.describe(),
                    self.stderr.tail(20)
                );
            }
            let now = probe(self)?;
            if now == last {
                quiet += 1;
                if quiet >= 3 {
                    return Ok(true);
                }
            } else {
                quiet = 0;
                last = now;
            }
        }
        Ok(false)
    }

    /// SIGSTOP (`stop`) or SIGCONT: the whole daemon, reader included, stops or goes on.
    pub fn freeze(&mut self, stop: bool) -> Result<()> {
        self.proc
            .signal(if stop { libc::SIGSTOP } else { libc::SIGCONT })
    }

    /// SIGINT, as a user stopping it would; fails if it had to be killed or exited badly.
    pub fn finish(mut self) -> Result<Finished> {
        let exit = self.proc.stop(libc::SIGINT, Duration::from_secs(30));
        // EOF follows the exit: the reader then has every line.
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        let exit = exit.with_context(|| format!("stderr:\n{}", self.stderr.tail(20)))?;
        if !exit.is_clean(libc::SIGINT) {
            bail!(
                "{} stopped with {}; stderr:\n{}",
                self.config.label(),
                exit.describe(),
                self.stderr.tail(20)
            );
        }
        Ok(Finished {
            exit,
            stderr: self.stderr.all(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tools_with(podtrace: &str, dir: &Path) -> Tools {
        Tools {
            podtrace: PathBuf::from(podtrace),
            podtrace_image: PathBuf::from(podtrace),
            summary: false,
            kernel_stats: false,
            metrics: false,
            bpftrace_script: dir.join("unused.bt"),
            bpftrace_empty: dir.join("unused-empty.bt"),
        }
    }

    #[test]
    fn a_tracer_that_dies_at_start_fails_the_run() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Stands in for a podtrace that cannot start: exits 1 at once, whatever its arguments.
        let tools = tools_with("/bin/false", dir.path());
        let mut t = start(Config::Podtrace, &tools, dir.path(), "t")
            .expect("spawning works")
            .expect("a tracer configuration starts a process");
        let err = t
            .wait_ready(Duration::from_secs(10))
            .expect_err("a tracer that exited is never ready");
        assert!(
            format!("{err:#}").contains("exited before it was ready"),
            "{err:#}"
        );
    }

    #[test]
    fn a_tracer_that_never_attaches_times_out() {
        let dir = tempfile::tempdir().expect("temp dir");
        // Runs, but never logs "attached" nor loads any BPF program.
        let script = dir.path().join("fake-podtrace");
        std::fs::write(&script, "#!/bin/sh\nexec /bin/busybox sleep 30\n").expect("write script");
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        let tools = tools_with(&script.display().to_string(), dir.path());
        let mut t = start(Config::Podtrace, &tools, dir.path(), "t")
            .expect("spawning works")
            .expect("a tracer configuration starts a process");
        let err = t
            .wait_ready(Duration::from_millis(500))
            .expect_err("never ready");
        assert!(format!("{err:#}").contains("was not ready"), "{err:#}");
        // Dropping the tracer kills and reaps it.
        let pid = t.pid();
        drop(t);
        // SAFETY: plain syscall; null status pointer is allowed.
        let r = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(r, -1, "the fake tracer {pid} was reaped on drop");
    }
}
