//! `storm`: the benchmark workload. `storm run` does N fork+exec+wait cycles of a tiny static
//! program from K worker threads (as fast as possible or at a set total rate) and writes every
//! pid it started to a JSON file, so a tracer's output can be checked for completeness.
//! `storm sleepers` keeps N sleeping processes alive until its stdin closes (start-up benchmark).
//! `storm cgroups` creates N cgroups one after the other, in every hierarchy it is given (the
//! cgroup2 one and, on hybrid or v1 hosts, the v1 controller hierarchies, as container runtimes
//! do), runs one process in each and removes them again (cgroup churn benchmark, soak).
use std::ffi::CString;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "storm", about = "exec storm workload for `cargo xtask bench`")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// N fork+exec+wait cycles from K workers; writes {"started","failed","wall_ns","pids"} JSON.
    Run {
        /// Processes to start in total.
        #[arg(long, default_value_t = 10_000)]
        count: usize,
        /// Worker threads, each forking, exec-ing and waiting for one child at a time.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// Total starts per second across all workers (default: as fast as possible).
        #[arg(long)]
        rate: Option<f64>,
        /// Where to write the JSON result (pids included).
        #[arg(long)]
        out: PathBuf,
        /// Program and arguments to exec (default: /bin/busybox true).
        #[arg(trailing_var_arg = true)]
        program: Vec<String>,
    },
    /// Starts N `/bin/busybox sleep` processes, prints "ready N" and keeps them until stdin closes.
    Sleepers {
        #[arg(long, default_value_t = 10_000)]
        count: usize,
    },
    /// N cycles of: mkdir `crio-<id>.scope` under every --parent, fork a child that writes "0"
    /// to each new cgroup.procs (joining them all) and execs the program, wait for it, rmdir
    /// the cgroups (after --linger-ms). Writes {"started","failed","wall_ns","pids"} JSON.
    Cgroups(CgroupPlan),
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run {
            count,
            workers,
            rate,
            out,
            program,
        } => run(count, workers, rate, &out, program),
        Cmd::Sleepers { count } => sleepers(count),
        Cmd::Cgroups(plan) => cgroups(&plan),
    };
    if let Err(e) = result {
        eprintln!("storm: error: {e:#}");
        std::process::exit(1);
    }
}

/// A program and its argv prepared before fork (the child may only call execve and _exit).
struct ExecImage {
    path: CString,
    // Owns the strings that `argv` points into.
    _args: Vec<CString>,
    argv: Vec<*const libc::c_char>,
    envp: Vec<*const libc::c_char>,
}

// SAFETY: the pointers point into `_args` (owned, never mutated) or are null; the image is
// only read after construction.
unsafe impl Sync for ExecImage {}

impl ExecImage {
    fn new(program: &[String]) -> Result<Self> {
        let Some(first) = program.first() else {
            bail!("no program to exec");
        };
        let path = CString::new(first.as_str())
            .with_context(|| format!("program path {first:?} has a NUL byte"))?;
        let args = program
            .iter()
            .map(|a| CString::new(a.as_str()).with_context(|| format!("argument {a:?} has a NUL")))
            .collect::<Result<Vec<_>>>()?;
        let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        Ok(Self {
            path,
            _args: args,
            argv,
            envp: vec![std::ptr::null()],
        })
    }

    /// fork + execve; returns the child's pid. Before it execs, the child writes "0" to each
    /// of the `join` files (cgroup.procs files: it moves itself into those cgroups); it exits
    /// 126 if it cannot.
    fn spawn(&self, pdeathsig: bool, join: &[CString]) -> Result<libc::pid_t> {
        // SAFETY: the child calls only async-signal-safe functions (prctl, open, write, close,
        // execve, _exit) on memory prepared before the fork.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            return Err(std::io::Error::last_os_error()).context("fork");
        }
        if pid == 0 {
            // SAFETY: see above; _exit never returns.
            unsafe {
                if pdeathsig {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                }
                for f in join {
                    let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        libc::_exit(126);
                    }
                    libc::close(fd);
                }
                libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
                libc::_exit(127);
            }
        }
        Ok(pid)
    }
}

/// `program`, or /bin/busybox true when it is empty.
fn program_or_true(program: Vec<String>) -> Vec<String> {
    if program.is_empty() {
        vec!["/bin/busybox".to_string(), "true".to_string()]
    } else {
        program
    }
}

/// Sleeps until start number `n` is due at `rate` starts per second (no-op without a rate, or
/// when late: a late run catches up as fast as it can).
fn pace(start: Instant, n: usize, rate: Option<f64>) {
    if let Some(r) = rate {
        let due = start + Duration::from_secs_f64(n as f64 / r);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
    }
}

fn check_rate(rate: Option<f64>) -> Result<()> {
    match rate {
        Some(r) if !(r.is_finite() && r > 0.0) => {
            bail!("--rate must be a positive number, got {r}")
        }
        _ => Ok(()),
    }
}

/// Waits for one child; returns its raw wait status.
fn wait_child(pid: libc::pid_t) -> Result<libc::c_int> {
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: plain syscall on our own child with a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        if r == pid {
            return Ok(status);
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err).with_context(|| format!("waitpid({pid})"));
        }
    }
}

#[derive(Default)]
struct WorkerResult {
    pids: Vec<i32>,
    failed: usize,
}

fn run(
    count: usize,
    workers: usize,
    rate: Option<f64>,
    out: &std::path::Path,
    program: Vec<String>,
) -> Result<()> {
    if workers == 0 {
        bail!("--workers must be at least 1");
    }
    check_rate(rate)?;
    let program = program_or_true(program);
    let image = ExecImage::new(&program)?;
    let start = Instant::now();
    let results: Vec<Result<WorkerResult>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..workers)
            .map(|w| {
                let image = &image;
                s.spawn(move || worker(image, w, workers, count, rate, start))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("storm worker panicked")))
            })
            .collect()
    });
    let wall = start.elapsed();
    let mut pids = Vec::with_capacity(count);
    let mut failed = 0;
    for r in results {
        let r = r?;
        pids.extend(r.pids);
        failed += r.failed;
    }
    let doc = serde_json::json!({
        "started": pids.len(),
        "failed": failed,
        "wall_ns": u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX),
        "workers": workers,
        "rate": rate,
        "program": program,
        "pids": pids,
    });
    let text = serde_json::to_string(&doc).context("encoding the storm result")?;
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
    if failed > 0 {
        bail!("{failed} of {count} children of {program:?} did not exit 0");
    }
    Ok(())
}

/// Worker `w` of `workers` starts children number w, w+K, w+2K, ... below `count`.
fn worker(
    image: &ExecImage,
    w: usize,
    workers: usize,
    count: usize,
    rate: Option<f64>,
    start: Instant,
) -> Result<WorkerResult> {
    let mut res = WorkerResult::default();
    let mut n = w;
    while n < count {
        pace(start, n, rate);
        let pid = image.spawn(false, &[])?;
        res.pids.push(pid);
        let status = wait_child(pid)?;
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            res.failed += 1;
        }
        n += workers;
    }
    Ok(res)
}

/// Waits until child `pid` runs a program named `comm` (it has exec'd).
fn wait_until_exec(pid: libc::pid_t, comm: &str) -> Result<()> {
    let path = format!("/proc/{pid}/comm");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        if now.trim_end() == comm {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "child {pid} still runs {:?}, not {comm:?}, after 30 s",
                now.trim_end()
            );
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Holds `count` sleeping processes until stdin reaches EOF, then kills and reaps them all.
fn sleepers(count: usize) -> Result<()> {
    // Ctrl-C reaches the whole process group: the bench closes our stdin instead, so that the
    // sleepers are always reaped here rather than left to init.
    // SAFETY: setting a signal disposition to ignore.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let image = ExecImage::new(&[
        "/bin/busybox".to_string(),
        "sleep".to_string(),
        "86400".to_string(),
    ])?;
    let mut pids = Vec::with_capacity(count);
    let spawned = (|| -> Result<()> {
        for _ in 0..count {
            pids.push(image.spawn(true, &[])?);
        }
        Ok(())
    })();
    // "ready" means every sleeper is sleeping in busybox, not somewhere between fork and exec.
    let spawned = spawned.and_then(|()| {
        for &pid in &pids {
            wait_until_exec(pid, "busybox")?;
        }
        Ok(())
    });
    if spawned.is_ok() {
        let mut stdout = std::io::stdout().lock();
        // The bench waits for this line; a failure to write means it is gone: clean up.
        let _ = writeln!(stdout, "ready {}", pids.len()).and_then(|()| stdout.flush());
        drop(stdout);
        let mut line = String::new();
        let stdin = std::io::stdin();
        let mut lock = stdin.lock();
        while matches!(lock.read_line(&mut line), Ok(n) if n > 0) {
            line.clear();
        }
    }
    for &pid in &pids {
        // SAFETY: plain syscall on our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let mut reap_err = None;
    for &pid in &pids {
        if let Err(e) = wait_child(pid) {
            reap_err.get_or_insert(e);
        }
    }
    spawned.with_context(|| format!("starting {count} sleepers ({} started)", pids.len()))?;
    if let Some(e) = reap_err {
        return Err(e);
    }
    Ok(())
}

#[derive(clap::Args)]
struct CgroupPlan {
    /// Cgroups to create and remove, one after the other.
    #[arg(long, default_value_t = 1_000)]
    count: usize,
    /// Cycles per second (default: as fast as possible).
    #[arg(long)]
    rate: Option<f64>,
    /// The directory to create the cgroups in, one per hierarchy (repeat the option).
    #[arg(long = "parent", required = true)]
    parents: Vec<PathBuf>,
    /// Container ids are 64 hex digits: this tag (16) then the cycle number (48).
    #[arg(long, default_value_t = 0)]
    tag: u64,
    /// Number of the first cycle (ids stay unique over several runs with one tag).
    #[arg(long, default_value_t = 0)]
    first: u64,
    /// Keep each cgroup this long after its process ended before removing it (runtimes
    /// remove a container's cgroup after it ends; a tracer must see it exist to resolve it).
    #[arg(long, default_value_t = 0)]
    linger_ms: u64,
    /// Print "cgroups N" on stdout after every this many cycles (0: never).
    #[arg(long, default_value_t = 0)]
    progress_every: usize,
    /// Where to write the JSON result.
    #[arg(long)]
    out: PathBuf,
    /// Program and arguments to exec in each cgroup (default: /bin/busybox true).
    #[arg(trailing_var_arg = true)]
    program: Vec<String>,
}

/// A v1 cpuset parent's cpus and mems, which a new cpuset cgroup must be given before a task
/// may join it (runtimes copy them the same way).
fn cpuset_of(parent: &Path) -> Result<Option<(String, String)>> {
    let cpus = parent.join("cpuset.cpus");
    if !cpus.is_file() {
        return Ok(None);
    }
    let read = |name: &str| {
        let f = parent.join(name);
        std::fs::read_to_string(&f)
            .map(|s| s.trim().to_string())
            .with_context(|| format!("reading {}", f.display()))
    };
    let (cpus, mems) = (read("cpuset.cpus")?, read("cpuset.mems")?);
    // cgroup2's cpuset files are empty unless set: an empty value is inherited anyway.
    Ok((!cpus.is_empty() && !mems.is_empty()).then_some((cpus, mems)))
}

/// rmdir, retried while the kernel still counts the reaped child as a member (EBUSY).
fn remove_cgroup(dir: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => return Err(e).with_context(|| format!("rmdir {}", dir.display())),
        }
    }
}

/// Creates the cgroup `name` under every parent; removes what it made if one fails.
fn create_cgroups(
    parents: &[PathBuf],
    cpusets: &[Option<(String, String)>],
    name: &str,
) -> Result<Vec<PathBuf>> {
    let mut made: Vec<PathBuf> = Vec::with_capacity(parents.len());
    let result = (|| -> Result<()> {
        for (parent, cpuset) in parents.iter().zip(cpusets) {
            let dir = parent.join(name);
            std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
            made.push(dir.clone());
            if let Some((cpus, mems)) = cpuset {
                for (file, value) in [("cpuset.cpus", cpus), ("cpuset.mems", mems)] {
                    let f = dir.join(file);
                    std::fs::write(&f, value)
                        .with_context(|| format!("writing {value:?} to {}", f.display()))?;
                }
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(made),
        Err(e) => {
            for d in made.iter().rev() {
                let _ = std::fs::remove_dir(d);
            }
            Err(e)
        }
    }
}

/// Cgroups whose process has ended, each removed once its time is up (or on drop).
#[derive(Default)]
struct Lingering(std::collections::VecDeque<(Instant, Vec<PathBuf>)>);

impl Lingering {
    fn push(&mut self, dirs: Vec<PathBuf>, due: Instant) {
        self.0.push_back((due, dirs));
    }

    /// Removes every cgroup due by `now` (they are queued in the order they fall due).
    fn remove_due(&mut self, now: Instant) -> Result<()> {
        while self.0.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, dirs)) = self.0.pop_front() {
                dirs.iter().try_for_each(|d| remove_cgroup(d))?;
            }
        }
        Ok(())
    }

    /// Waits until the last one is due, removing each as it falls due.
    fn remove_all(&mut self, linger: Duration) -> Result<()> {
        while let Some(&(due, _)) = self.0.front() {
            let now = Instant::now();
            if due > now {
                std::thread::sleep((due - now).min(linger));
            }
            self.remove_due(Instant::now())?;
        }
        Ok(())
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        for (_, dirs) in self.0.drain(..) {
            for d in dirs {
                let _ = remove_cgroup(&d);
            }
        }
    }
}

fn cgroups(plan: &CgroupPlan) -> Result<()> {
    check_rate(plan.rate)?;
    let program = program_or_true(plan.program.clone());
    let image = ExecImage::new(&program)?;
    let cpusets = plan
        .parents
        .iter()
        .map(|p| cpuset_of(p))
        .collect::<Result<Vec<_>>>()?;
    let mut pids = Vec::with_capacity(plan.count);
    let mut failed = 0;
    let linger = Duration::from_millis(plan.linger_ms);
    let mut lingering = Lingering::default();
    let start = Instant::now();
    let mut stdout = std::io::stdout().lock();
    for n in 0..plan.count {
        pace(start, n, plan.rate);
        let id = plan.first + n as u64;
        let name = format!("crio-{:016x}{id:048x}.scope", plan.tag);
        let dirs = create_cgroups(&plan.parents, &cpusets, &name)?;
        let join = dirs
            .iter()
            .map(|d| {
                CString::new(d.join("cgroup.procs").as_os_str().as_encoded_bytes())
                    .with_context(|| format!("{} has a NUL byte", d.display()))
            })
            .collect::<Result<Vec<_>>>()?;
        let ran = image.spawn(false, &join).and_then(|pid| {
            pids.push(pid);
            wait_child(pid)
        });
        // Removed after the linger time whatever happened to the child (it has been reaped,
        // or was not started); the guard removes them on every way out.
        lingering.push(dirs, Instant::now() + linger);
        let status = ran?;
        lingering.remove_due(Instant::now())?;
        if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            failed += 1;
        }
        if plan.progress_every > 0 && (n + 1) % plan.progress_every == 0 {
            // The bench reads these as they come; it may have gone (then go on regardless).
            let _ = writeln!(stdout, "cgroups {}", n + 1).and_then(|()| stdout.flush());
        }
    }
    lingering.remove_all(linger)?;
    let wall = start.elapsed();
    let doc = serde_json::json!({
        "started": pids.len(),
        "failed": failed,
        "wall_ns": u64::try_from(wall.as_nanos()).unwrap_or(u64::MAX),
        "linger_ms": plan.linger_ms,
        "hierarchies": plan.parents,
        "program": program,
        "pids": pids,
    });
    let text = serde_json::to_string(&doc).context("encoding the cgroups result")?;
    std::fs::write(&plan.out, text).with_context(|| format!("writing {}", plan.out.display()))?;
    if failed > 0 {
        bail!(
            "{failed} of {} children did not join their cgroups and exit 0",
            plan.count
        );
    }
    Ok(())
}
