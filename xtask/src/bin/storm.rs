//! `storm`: the benchmark workload. `storm run` does N fork+exec+wait cycles of a tiny static
//! program from K worker threads (as fast as possible or at a set total rate) and writes every
//! pid it started to a JSON file, so a tracer's output can be checked for completeness.
//! `storm sleepers` keeps N sleeping processes alive until its stdin closes (start-up benchmark).
use std::ffi::CString;
use std::io::{BufRead, Write};
use std::path::PathBuf;
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

    /// fork + execve; returns the child's pid.
    fn spawn(&self, pdeathsig: bool) -> Result<libc::pid_t> {
        // SAFETY: the child calls only async-signal-safe functions (prctl, execve, _exit)
        // on memory prepared before the fork.
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
                libc::execve(self.path.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr());
                libc::_exit(127);
            }
        }
        Ok(pid)
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
    if let Some(r) = rate {
        if !(r.is_finite() && r > 0.0) {
            bail!("--rate must be a positive number, got {r}");
        }
    }
    let program = if program.is_empty() {
        vec!["/bin/busybox".to_string(), "true".to_string()]
    } else {
        program
    };
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
        if let Some(r) = rate {
            let due = start + Duration::from_secs_f64(n as f64 / r);
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let pid = image.spawn(false)?;
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
            pids.push(image.spawn(true)?);
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
