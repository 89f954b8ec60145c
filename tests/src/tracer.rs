//! Running the real podtrace binary as a test would: start, wait until attached, stop with
//! SIGINT, read and schema-check every line it printed.
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// The binary under test: $PODTRACE_BIN (set by `cargo xtask test`) or target/release/podtrace.
pub fn bin() -> PathBuf {
    match std::env::var_os("PODTRACE_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/release/podtrace"),
    }
}

pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The JSON Schema that `podtrace schema` prints.
pub fn schema() -> Value {
    let out = Command::new(bin())
        .arg("schema")
        .output()
        .expect("run podtrace schema");
    assert!(out.status.success(), "podtrace schema failed: {out:?}");
    serde_json::from_slice(&out.stdout).expect("podtrace schema prints JSON")
}

/// Asserts every line is valid JSON that matches the published schema.
pub fn parse_and_validate(text: &str, what: &str) -> Vec<Value> {
    let schema = schema();
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    text.lines()
        .enumerate()
        .map(|(i, line)| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{what}:{}: not JSON ({e}): {line}", i + 1));
            if let Err(e) = validator.validate(&v) {
                panic!("{what}:{}: does not match the schema: {e}\n{line}", i + 1);
            }
            v
        })
        .collect()
}

pub struct Tracer {
    child: Child,
    pub dir: tempfile::TempDir,
    pub output: PathBuf,
    stderr_lines: mpsc::Receiver<String>,
    pub stderr: Vec<String>,
}

/// What a stopped tracer left.
pub struct Run {
    pub events: Vec<Value>,
    pub stderr: Vec<String>,
    pub summary: Option<Value>,
    pub dir: tempfile::TempDir,
}

impl Tracer {
    /// `podtrace run --output <tmp> --summary <tmp> <extra>`; returns once it has attached.
    pub fn start(extra: &[&str]) -> Self {
        assert!(
            is_root(),
            "integration tests need root (run them with `cargo xtask test`)"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        let output = dir.path().join("events.ndjson");
        let summary = dir.path().join("summary.json");
        let mut child = Command::new(bin())
            .arg("run")
            .arg("--output")
            .arg(&output)
            .arg("--summary")
            .arg(&summary)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin().display()));
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut t = Tracer {
            child,
            dir,
            output,
            stderr_lines: rx,
            stderr: Vec::new(),
        };
        t.wait_for_stderr("attached", Duration::from_secs(30));
        t
    }

    /// Waits until podtrace logs a line containing `needle`; panics after `limit`.
    pub fn wait_for_stderr(&mut self, needle: &str, limit: Duration) {
        let end = Instant::now() + limit;
        while Instant::now() < end {
            match self.stderr_lines.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.stderr.push(line);
                    if found {
                        return;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Ok(Some(status)) = self.child.try_wait() {
                        panic!("podtrace exited early ({status}): {:#?}", self.stderr);
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        panic!(
            "podtrace did not log `{needle}` within {limit:?}: {:#?}",
            self.stderr
        );
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no drain, no flush, no end record (a crash).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGSTOP: the daemon stops draining the ring buffer (the kernel side keeps running).
    pub fn pause(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGSTOP) };
    }

    pub fn resume(&self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGCONT) };
    }

    /// SIGINT, wait for a clean exit (status 0), then read and validate the output.
    pub fn stop(self) -> Run {
        self.stop_with(libc::SIGINT, Duration::from_secs(30))
    }

    /// `signal`, wait (at most `limit`) for a clean exit (status 0), then read and validate the
    /// output.
    pub fn stop_with(mut self, signal: i32, limit: Duration) -> Run {
        // Let the kernel events of the test's last actions reach the ring buffer.
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let end = Instant::now() + limit;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait for podtrace") {
                break s;
            }
            assert!(
                Instant::now() < end,
                "podtrace did not stop within {limit:?} of signal {signal}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        while let Ok(l) = self.stderr_lines.recv_timeout(Duration::from_millis(200)) {
            self.stderr.push(l);
        }
        assert!(
            status.success(),
            "podtrace exited with {status}: {:#?}",
            self.stderr
        );
        let text = std::fs::read_to_string(&self.output).expect("read the NDJSON output");
        let events = parse_and_validate(&text, &self.output.display().to_string());
        let summary = std::fs::read_to_string(self.dir.path().join("summary.json"))
            .ok()
            .map(|s| serde_json::from_str(&s).expect("summary is JSON"));
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
        Run {
            events,
            stderr: std::mem::take(&mut self.stderr),
            summary,
            dir,
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            // Bounded: a thread of podtrace stuck in an uninterruptible wait (a test's hung
            // file system) keeps it from being reaped until that test's cleanup ends the wait.
            let end = Instant::now() + Duration::from_secs(10);
            while let Ok(None) = self.child.try_wait() {
                if Instant::now() > end {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

impl Run {
    /// Events of one type for one host pid.
    pub fn of(&self, kind: &str, pid: u32) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["type"] == kind && e["pid"] == pid)
            .collect()
    }

    /// The one event of this type for this pid (panics with the whole stream otherwise).
    pub fn one(&self, kind: &str, pid: u32) -> &Value {
        let v = self.of(kind, pid);
        assert_eq!(
            v.len(),
            1,
            "expected exactly one {kind} event for pid {pid}, got {}: {v:#?}",
            v.len()
        );
        v[0]
    }

    pub fn execs_with_arg(&self, arg: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| {
                e["type"] == "exec"
                    && e["argv"]
                        .as_array()
                        .map(|a| a.iter().any(|x| x == arg))
                        .unwrap_or(false)
            })
            .collect()
    }
}

/// `podtrace tree --json <args>` (the live picture from /proc, or `--from` a trace).
pub fn tree_json(args: &[&str]) -> Value {
    let out = Command::new(bin())
        .arg("tree")
        .arg("--json")
        .args(args)
        .output()
        .expect("run podtrace tree");
    assert!(
        out.status.success(),
        "podtrace tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("podtrace tree --json prints JSON")
}

/// Every container node of a tree view (in pods or not).
pub fn tree_containers(view: &Value) -> Vec<&Value> {
    let mut out: Vec<&Value> = view["containers"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    for pod in view["pods"].as_array().into_iter().flatten() {
        out.extend(pod["containers"].as_array().into_iter().flatten());
    }
    out
}

/// All process nodes under a tree node, depth first.
pub fn tree_processes(nodes: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for n in nodes.as_array().into_iter().flatten() {
        out.push(n);
        out.extend(tree_processes(&n["children"]));
    }
    out
}

/// What a command that ran to its end left.
pub struct Finished {
    pub what: String,
    pub status: std::process::ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Finished {
    /// Everything it printed, for a failure message.
    pub fn describe(&self) -> String {
        format!(
            "`{}`: {} after {:?}\nstdout:\n{}\nstderr:\n{}",
            self.what, self.status, self.took, self.stdout, self.stderr
        )
    }
}

/// Runs `program args` to its end; kills it and panics when it takes longer than `limit`.
pub fn run_for(program: &Path, args: &[&str], limit: Duration) -> Finished {
    let what = format!("{} {}", program.display(), args.join(" "));
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    let read_all = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = pipe.read_to_end(&mut buf);
            String::from_utf8_lossy(&buf).into_owned()
        })
    };
    let out = read_all(Box::new(child.stdout.take().expect("piped stdout")));
    let err = read_all(Box::new(child.stderr.take().expect("piped stderr")));
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the child") {
            break s;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{what}` did not finish within {limit:?}; stderr so far:\n{}",
                err.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        what,
        status,
        stdout: out.join().expect("stdout reader"),
        stderr: err.join().expect("stderr reader"),
        took: start.elapsed(),
    }
}

/// An event's `ts` (RFC 3339 with nanoseconds, UTC) as nanoseconds since that day's midnight:
/// only differences between events of one run matter to the tests.
pub fn event_ns(e: &Value) -> u64 {
    let s = e["ts"]
        .as_str()
        .unwrap_or_else(|| panic!("event without ts: {e}"));
    let (hms, frac) = s
        .split_once('T')
        .and_then(|(_, t)| t.strip_suffix('Z'))
        .and_then(|t| t.split_once('.'))
        .unwrap_or_else(|| panic!("ts {s:?} is not RFC 3339 with a fraction"));
    let secs: u64 = hms
        .split(':')
        .map(|p| p.parse::<u64>().unwrap_or_else(|e| panic!("ts {s:?}: {e}")))
        .fold(0, |a, v| a * 60 + v);
    secs * 1_000_000_000
        + frac
            .parse::<u64>()
            .unwrap_or_else(|e| panic!("ts {s:?}: {e}"))
}
