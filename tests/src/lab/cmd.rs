//! Running commands, unique names, polling with deadlines and teardown bookkeeping.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// How long the lab waits for a runtime to do something before it panics.
pub const TIMEOUT: Duration = Duration::from_secs(20);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// `<prefix>-<test process pid>-<counter>-<4 random hex>`: unique per call and per process, and
/// recognisable (`podtrace-lab-...`) if a killed test run ever leaves something behind.
pub fn unique_name(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}-{}-{n}-{}", std::process::id(), random_hex(2))
}

/// `bytes` random bytes from /dev/urandom as lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .expect("read /dev/urandom for a unique id");
    buf.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// A random RFC 4122 version-4 UUID, the form Kubernetes pod UIDs take.
pub fn random_uuid() -> String {
    let h = random_hex(16);
    // Set the version (4) and variant (10xx) nibbles.
    let variant = ["8", "9", "a", "b"][usize::from(h.as_bytes()[16] % 4)];
    format!(
        "{}-{}-4{}-{}{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        variant,
        &h[17..20],
        &h[20..32]
    )
}

/// Renders a command line for messages.
pub fn show(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `program args` to completion and returns its output; panics only if it cannot be started.
pub fn run<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot start `{program}`: {e} (is it installed? `cargo xtask setup --runtimes`)"
            )
        })
}

/// Runs `program args`, panics with its stdout and stderr unless it exits 0, returns its stdout.
pub fn run_ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "`{}` failed ({}):\nstdout: {}\nstderr: {}",
        show(program, args),
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8(out.stdout)
        .unwrap_or_else(|e| panic!("`{}` printed non-UTF-8: {e}", show(program, args)))
}

/// Same as [`run_ok`] but returns an error message instead of panicking (for teardown).
pub fn try_run_ok(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| format!("cannot start `{}`: {e}", show(program, args)))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "`{}` failed ({}): {}",
            show(program, args),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Polls `done` every 10 ms until it returns true or `timeout` passes; returns whether it did.
pub fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `done` until it returns true; panics with `what` (and `detail()`) after [`TIMEOUT`].
pub fn wait_until(what: &str, done: impl FnMut() -> bool, detail: impl FnOnce() -> String) {
    if !poll_until(TIMEOUT, done) {
        panic!(
            "timed out after {TIMEOUT:?} waiting for {what}\n{}",
            detail()
        );
    }
}

/// Absolute path of `program` found on PATH (conmon wants an absolute runtime path).
pub fn which(program: &str) -> PathBuf {
    std::env::var_os("PATH")
        .as_deref()
        .map(std::env::split_paths)
        .into_iter()
        .flatten()
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{program}` is not on PATH: run `cargo xtask setup --runtimes`"))
}

/// Reads a file to a string for a failure message; never panics.
pub fn read_for_message(path: &Path) -> String {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().is_empty() => format!("{} is empty", path.display()),
        Ok(s) => format!("{}:\n{}", path.display(), s.trim_end()),
        Err(e) => format!("{}: {e}", path.display()),
    }
}

/// Collects teardown failures; [`Teardown::finish`] panics with all of them unless the thread is
/// already panicking, in which case they are printed (a second panic would abort the test binary).
#[derive(Debug, Default)]
pub struct Teardown {
    what: String,
    errors: Vec<String>,
}

impl Teardown {
    pub fn new(what: impl Into<String>) -> Self {
        Self {
            what: what.into(),
            errors: Vec::new(),
        }
    }

    pub fn check(&mut self, r: Result<(), String>) {
        if let Err(e) = r {
            self.errors.push(e);
        }
    }

    pub fn fail(&mut self, e: impl Into<String>) {
        self.errors.push(e.into());
    }

    pub fn finish(self) {
        if self.errors.is_empty() {
            return;
        }
        let msg = format!(
            "teardown of {} left problems:\n  - {}",
            self.what,
            self.errors.join("\n  - ")
        );
        if std::thread::panicking() {
            eprintln!("{msg}");
        } else {
            panic!("{msg}");
        }
    }
}
