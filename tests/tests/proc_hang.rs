//! A /proc read that hangs during a resync does not hold podtrace up (issue 18: the event loop
//! never waits on /proc).
//!
//! The hang is real, the way a process stuck with its mmap lock makes one: `argv-hang` maps a
//! page of a FUSE file system that never answers READ over a page of its own argument
//! strings; a reader of its /proc/PID/mem faults that page in and waits for the READ, holding
//! the lock for reading; argv-hang then asks for the lock for writing, and every later reader
//! of its mm (/proc/PID/cmdline: podtrace's resync) queues behind it. podtrace, started
//! before, is made to lose events (a 4 KiB ring while it is stopped) and reads /proc again.
// Test support panics with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use podtrace_tests::fuse_hang::HangFs;
use podtrace_tests::tracer::Tracer;
use serde_json::Value;

const ARGV_HANG: &str = env!("CARGO_BIN_EXE_argv-hang");

/// Children killed (and reaped) at the end, even on failure: after the file system's abort,
/// so none is still waiting on it.
#[derive(Default)]
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
        }
        for c in &mut self.0 {
            let end = Instant::now() + Duration::from_secs(10);
            while let Ok(None) = c.try_wait() {
                if Instant::now() > end {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// Starts `sh -c script` and asserts it is still running after `wait`; returns its pid.
fn hanging(procs: &mut Procs, script: &str, wait: Duration) -> u32 {
    let child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start sh");
    let pid = child.id();
    procs.0.push(child);
    std::thread::sleep(wait);
    let c = procs.0.last_mut().expect("the child just pushed");
    let status = c.try_wait().expect("wait for sh");
    assert!(
        status.is_none(),
        "`{script}` ended ({status:?}) within {wait:?}: it does not hang"
    );
    pid
}

/// The kernel stack of a task (root), for failure messages.
fn stack(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_else(|e| format!("({e})"))
}

/// The complete lines of an NDJSON file written so far.
fn lines_so_far(path: &std::path::Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn exec_with_arg(events: &[Value], arg: &str) -> Option<u32> {
    events
        .iter()
        .find(|e| {
            e["type"] == "exec"
                && e["argv"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == arg))
        })
        .and_then(|e| e["pid"].as_u64())
        .and_then(|p| u32::try_from(p).ok())
}

/// Runs `/bin/true MARKER` and waits until the live stream has its exec.
fn marker_printed(t: &Tracer, hung: u32, round: u32) {
    let marker = format!("podtrace-proc-hang-{}-{round}", std::process::id());
    let started = Instant::now();
    let st = Command::new("/bin/true")
        .arg(&marker)
        .status()
        .expect("run /bin/true");
    assert!(st.success(), "/bin/true {marker}: {st}");
    let limit = Duration::from_secs(5);
    let pid = loop {
        if let Some(pid) = exec_with_arg(&lines_so_far(&t.output), &marker) {
            break pid;
        }
        assert!(
            started.elapsed() < limit,
            "the exec of `/bin/true {marker}` was not printed within {limit:?} while \
             /proc/{hung} hangs: the loop is held up"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "exec of pid {pid} ({marker}) printed {:?} after it started",
        started.elapsed()
    );
}

#[test]
fn a_hung_proc_read_during_a_resync_holds_up_neither_the_stream_nor_sigterm() {
    let keep = tempfile::tempdir().expect("temp dir");
    let trace = keep.path().join("trace.ndjson");
    // Started before the hang exists: its first picture of /proc reads every process.
    let mut t = Tracer::start(&[
        "--ring-buffer-bytes",
        "4096",
        "--record",
        trace.to_str().expect("a UTF-8 temp path"),
    ]);
    // Dropped in reverse order: the file system's abort first, then the children, then podtrace.
    let mut procs = Procs::default();
    let fs = HangFs::mount();

    // Three pages of argument bytes: at least one page holds nothing else.
    let filler = "x".repeat(3 * 4096);
    let mut helper = Command::new(ARGV_HANG)
        .arg(fs.file())
        .arg(&filler)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start argv-hang");
    let hung = helper.id();
    let mut helper_in: ChildStdin = helper.stdin.take().expect("piped stdin");
    let mut helper_out = BufReader::new(helper.stdout.take().expect("piped stdout"));
    procs.0.push(helper);
    let mut ready = String::new();
    helper_out
        .read_line(&mut ready)
        .expect("read argv-hang's stdout");
    assert!(
        ready.starts_with("ready "),
        "argv-hang did not map the FUSE page: {ready:?}"
    );

    let addr = ready
        .trim()
        .strip_prefix("ready 0x")
        .and_then(|a| u64::from_str_radix(a, 16).ok())
        .unwrap_or_else(|| panic!("argv-hang printed no address: {ready:?}"));

    // Since Linux 4.18 /proc/PID/cmdline reads anonymous memory only (CVE-2018-1120), so the
    // hang is made as a process stuck holding the mmap lock makes it: a reader of
    // /proc/PID/mem faults the FUSE page in and waits for the READ, holding the lock for
    // reading; argv-hang then asks for it for writing, and every later reader queues.
    let first = hanging(
        &mut procs,
        &format!("exec {ARGV_HANG} --read-mem {hung} {addr:#x}"),
        Duration::from_secs(2),
    );
    assert!(
        fs.reads() >= 1,
        "the FUSE server got no READ while /proc/{hung}/mem was read: stack of the reader:\n{}",
        stack(first)
    );
    helper_in
        .write_all(b"lock\n")
        .and_then(|()| helper_in.flush())
        .expect("tell argv-hang to take its mmap lock");
    std::thread::sleep(Duration::from_millis(300));
    // Ground truth: reading its cmdline hangs.
    let second = hanging(
        &mut procs,
        &format!("exec cat /proc/{hung}/cmdline"),
        Duration::from_secs(2),
    );
    eprintln!(
        "hung pid {hung}; /proc/PID/mem reader {first}:\n{}cmdline reader {second}:\n{}",
        stack(first),
        stack(second)
    );

    // A loss: podtrace stopped while a storm overflows its 4 KiB ring.
    t.pause();
    let storm = Command::new("sh")
        .args([
            "-c",
            "i=0; while [ $i -lt 200 ]; do /bin/true; i=$((i+1)); done",
        ])
        .status()
        .expect("storm");
    t.resume();
    assert!(storm.success(), "the storm failed: {storm}");

    // The stream goes on while the resync's read of the hung process waits (its deadline is
    // 1 s) and after: processes started now are printed within a few seconds.
    let resync_began = Instant::now();
    for round in 0..3 {
        marker_printed(&t, hung, round);
        std::thread::sleep(Duration::from_millis(300));
    }
    // The resync reached the hung process and left it out after its deadline.
    t.wait_for_stderr(
        &format!("reading /proc/{hung} took more than"),
        Duration::from_secs(20),
    );
    eprintln!(
        "podtrace had left /proc/{hung} out (seen {:?} after the storm)",
        resync_began.elapsed()
    );
    // A thread of podtrace still waits on it; the stream goes on.
    for round in 3..6 {
        marker_printed(&t, hung, round);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(
        procs.0[1].try_wait().expect("wait for cat").is_none(),
        "the first reader of /proc/{hung}/cmdline ended: the hang is over too early"
    );

    // SIGTERM ends it within its grace period, the read still hanging.
    let stopping = Instant::now();
    let run = t.stop_with(libc::SIGTERM, Duration::from_secs(10));
    eprintln!("podtrace exited {:?} after SIGTERM", stopping.elapsed());
    assert!(
        procs.0[1].try_wait().expect("wait for cat").is_none(),
        "the first reader of /proc/{hung}/cmdline ended before podtrace did"
    );

    let summary = run.summary.as_ref().expect("--summary was written");
    assert!(
        summary["resync_unread"].as_u64() >= Some(1),
        "the summary counts the process left unread: {summary}"
    );
    let records = lines_so_far(&trace);
    let unread: Vec<&Value> = records.iter().filter_map(|r| r.get("resync_end")).collect();
    assert!(
        unread.iter().any(|r| r["unread"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p == hung))),
        "no resync_end record of {} lists {hung} as unread: {unread:?}",
        trace.display()
    );
    drop(fs);
}
