//! Issue 2: the live tracer against real processes on the real kernel (root).
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::os::unix::fs::MetadataExt;
use std::process::Command;

use podtrace_tests::lab;
use podtrace_tests::tracer::{Run, Tracer};

fn marker(name: &str) -> String {
    format!("podtrace-test-{name}-{}", std::process::id())
}

#[test]
fn exit_code_and_exec_argv_of_a_shell() {
    let t = Tracer::start(&[]);
    let tag = marker("exit7");
    let mut child = Command::new("sh")
        .args(["-c", &format!("exit 7 # {tag}")])
        .spawn()
        .expect("spawn sh");
    let pid = child.id();
    let status = child.wait().expect("wait sh");
    assert_eq!(status.code(), Some(7));
    let run = t.stop();

    let exec = run.one("exec", pid);
    assert!(
        exec["filename"].as_str().unwrap_or("").ends_with("/sh"),
        "filename: {exec}"
    );
    assert_eq!(
        exec["argv"],
        serde_json::json!(["sh", "-c", format!("exit 7 # {tag}")])
    );
    assert_eq!(exec["argv_truncated"], false);
    assert_eq!(exec["ppid"], std::process::id());
    assert_eq!(exec["uid"], 0);
    let fork = run.one("fork", pid);
    assert_eq!(
        fork["ppid"],
        std::process::id(),
        "fork names the parent: {fork}"
    );
    let exit = run.one("exit", pid);
    assert_eq!(exit["exit_code"], 7);
    assert!(exit["signal"].is_null());
    assert_eq!(exit["core_dumped"], false);
    assert_eq!(exit["inferred"], false, "the kernel's own exit record");
    assert_eq!(exit["start_ns"], exec["start_ns"], "same process identity");
    assert!(exit["duration_ns"].as_u64().unwrap_or(0) > 0);
    // Timestamps agree with the wall clock (`date`).
    let ts = exit["ts"].as_str().expect("ts");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    let out = Command::new("date")
        .args(["-u", "-d", ts, "+%s"])
        .output()
        .expect("date -d");
    let secs: i64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("date parses ts");
    assert!((now - secs).abs() < 30, "ts {ts} is far from now");
}

#[test]
fn killed_by_sigkill_reports_the_signal() {
    let t = Tracer::start(&[]);
    let mut child = Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("spawn sleep");
    std::thread::sleep(std::time::Duration::from_millis(100));
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let pid = child.id();
    let run = t.stop();
    let exit = run.one("exit", pid);
    assert_eq!(exit["signal"], 9, "{exit}");
    assert!(exit["exit_code"].is_null(), "{exit}");
}

/// Runs a program that starts `n` threads; returns its pid.
fn spawn_threads(n: usize) -> u32 {
    lab::spawn_threads(env!("CARGO_BIN_EXE_spawn-threads"), n)
}

#[test]
fn threads_are_never_processes() {
    let t = Tracer::start(&[]);
    let pid = spawn_threads(8);
    let run = t.stop();
    assert_eq!(run.of("exec", pid).len(), 1);
    assert_eq!(
        run.of("exit", pid).len(),
        1,
        "one exit per process, not per thread"
    );
    assert_eq!(run.of("fork", pid).len(), 1, "only the process's own fork");
    assert!(
        run.of("thread", pid).is_empty(),
        "threads only with --threads"
    );
    assert!(
        run.events
            .iter()
            .all(|e| !(e["pid"] == pid && e["tid"] != pid && e["type"] != "thread")),
        "no process event carries a thread id"
    );
    let summary = run.summary.as_ref().expect("summary");
    assert!(
        summary["threads"].as_u64().unwrap_or(0) >= 8,
        "threads are counted: {summary}"
    );
}

#[test]
fn threads_are_reported_with_the_flag() {
    let t = Tracer::start(&["--threads"]);
    let pid = spawn_threads(5);
    let run = t.stop();
    let threads = run.of("thread", pid);
    assert_eq!(threads.len(), 5, "{threads:#?}");
    assert!(threads.iter().all(|e| e["tid"] != pid));
    assert_eq!(run.of("exit", pid).len(), 1);
}

#[test]
fn pid_namespace_init_has_nspid_1() {
    let t = Tracer::start(&[]);
    let tag = marker("pidns");
    let status = Command::new("unshare")
        .args(["--pid", "--fork", "sh", "-c", &format!(": {tag}")])
        .status()
        .expect("unshare");
    assert!(status.success());
    let run = t.stop();
    let my_ns = std::fs::metadata("/proc/self/ns/pid")
        .expect("own pidns")
        .ino();
    let execs: Vec<_> = run
        .execs_with_arg(&format!(": {tag}"))
        .into_iter()
        .filter(|e| e["comm"] == "sh")
        .collect();
    assert_eq!(execs.len(), 1, "{execs:#?}");
    let e = execs[0];
    assert_eq!(e["nspid"], 1, "{e}");
    assert_ne!(e["pidns"].as_u64(), Some(my_ns), "a new pid namespace");
    assert_ne!(e["pid"], 1, "host pid differs");
}

#[test]
fn cgroup_id_is_the_cgroup2_directory_inode() {
    let root = std::fs::read_to_string("/proc/self/mountinfo")
        .expect("mountinfo")
        .lines()
        .find(|l| l.contains(" - cgroup2 "))
        .and_then(|l| l.split_whitespace().nth(4).map(str::to_string))
        .expect("a cgroup2 mount");
    let name = marker("cgroup");
    let dir = std::path::Path::new(&root).join(&name);
    std::fs::create_dir(&dir).expect("create cgroup");
    let ino = std::fs::metadata(&dir).expect("stat cgroup").ino();
    let t = Tracer::start(&[]);
    let procs = dir.join("cgroup.procs");
    let status = Command::new("sh")
        .args([
            "-c",
            &format!("echo $$ > {} && exec /bin/true {name}", procs.display()),
        ])
        .status()
        .expect("sh");
    let run = t.stop();
    let _ = std::fs::remove_dir(&dir);
    assert!(status.success());
    let execs: Vec<_> = run.execs_with_arg(&name);
    let sleep = execs
        .iter()
        .find(|e| e["comm"] == "true")
        .unwrap_or_else(|| panic!("exec of true: {execs:#?}"));
    assert_eq!(sleep["cgroup_id"], ino, "{sleep}");
    assert_eq!(sleep["cgroup"], format!("/{name}"), "{sleep}");
}

#[test]
fn daemon_does_not_report_itself() {
    let t = Tracer::start(&["--threads"]);
    let me = t.pid();
    Command::new("true").status().expect("true");
    let run = t.stop();
    assert!(!run.events.is_empty());
    assert!(
        run.events.iter().all(|e| e["pid"] != me),
        "podtrace reported its own pid {me}"
    );
}

/// A storm against a tiny ring buffer while the daemon is stopped (SIGSTOP), so the kernel
/// side must drop: the loss is reported, exactly as much as the kernel counted.
#[test]
fn lost_events_are_counted_and_reported() {
    let t = Tracer::start(&["--ring-buffer-bytes", "4096"]);
    t.pause();
    let status = Command::new("sh")
        .args([
            "-c",
            "i=0; while [ $i -lt 200 ]; do /bin/true; i=$((i+1)); done",
        ])
        .status()
        .expect("storm");
    t.resume();
    assert!(status.success());
    let run: Run = t.stop();
    let lost: u64 = run
        .events
        .iter()
        .filter(|e| e["type"] == "lost")
        .map(|e| e["count"].as_u64().expect("count"))
        .sum();
    let summary = run.summary.as_ref().expect("summary");
    let drops: u64 = ["exec", "fork", "exit", "reap", "thread"]
        .iter()
        .map(|k| {
            summary["kernel_counters"]["drops"][k]
                .as_u64()
                .expect("kernel drops by kind")
        })
        .sum();
    let by_kind: u64 = run
        .events
        .iter()
        .filter(|e| e["type"] == "lost")
        .map(|e| {
            ["exec", "fork", "exit", "reap", "thread"]
                .iter()
                .map(|k| e["kinds"][k].as_u64().expect("lost kinds"))
                .sum::<u64>()
        })
        .sum();
    assert_eq!(
        by_kind, lost,
        "the kinds of each lost line add up to its count"
    );
    let sent = summary["kernel_counters"]["sent"]
        .as_u64()
        .expect("kernel sent");
    // 200 forks, execs, exits and reaps cannot fit in 4 KiB (about 330 bytes a process).
    assert!(lost >= 400, "the storm overflows a 4 KiB ring: {lost} lost");
    assert_eq!(
        lost, drops,
        "every dropped record is reported, exactly once"
    );
    // Exits inferred after a loss (the process found gone: at its reap, or by the resync)
    // are podtrace's lines, not kernel records; at most one per lost exit.
    let inferred = run
        .events
        .iter()
        .filter(|e| e["type"] == "exit" && e["inferred"] == true)
        .count() as u64;
    let lost_exits: u64 = run
        .events
        .iter()
        .filter(|e| e["type"] == "lost")
        .map(|e| e["kinds"]["exit"].as_u64().expect("lost exits"))
        .sum();
    assert!(
        inferred <= lost_exits,
        "{inferred} inferred exits, {lost_exits} exits lost"
    );
    let delivered = run.events.iter().filter(|e| e["type"] != "lost").count() as u64 - inferred;
    let reaps = summary["reaps"].as_u64().expect("reaps");
    assert_eq!(
        delivered + reaps,
        sent,
        "every record the kernel sent was printed (reaps are not printed)"
    );
}

/// `--kernel-debug` forwards the kernel programs' aya-log messages (here: the drops).
#[test]
fn kernel_debug_log_reaches_stderr() {
    let t = Tracer::start(&[
        "--kernel-debug",
        "--log",
        "debug",
        "--ring-buffer-bytes",
        "4096",
    ]);
    t.pause();
    for _ in 0..30 {
        Command::new("true").status().expect("true");
    }
    t.resume();
    let run = t.stop();
    assert!(
        run.stderr
            .iter()
            .any(|l| l.contains("ring buffer full: dropped a record of kind")),
        "{:#?}",
        run.stderr
    );
}

/// A node where no cgroup hierarchy is mounted (here: podtrace in a mount namespace where
/// /sys/fs/cgroup is unmounted): podtrace traces all the same, with `cgroup` null, and says
/// once on stderr why.
#[test]
fn without_any_cgroup_mount_podtrace_traces_with_cgroup_null() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = dir.path().join("events.ndjson");
    let script = format!(
        "umount -l /sys/fs/cgroup; grep -c ' - cgroup' /proc/self/mountinfo; \
         exec {} run --duration 4 --output {}",
        podtrace_tests::tracer::bin().display(),
        out.display()
    );
    let child = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("unshare");
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let status = Command::new("sh")
        .args(["-c", "exit 7"])
        .status()
        .expect("sh");
    assert_eq!(status.code(), Some(7));
    let done = child.wait_with_output().expect("podtrace");
    let err = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{err}");
    assert_eq!(
        String::from_utf8_lossy(&done.stdout).trim(),
        "0",
        "no cgroup mount left in podtrace's namespace"
    );
    assert_eq!(
        err.lines()
            .filter(|l| l.contains("no usable cgroup hierarchy") || l.contains("no cgroup2 mount"))
            .count(),
        2,
        "the warning, once, and the mode in the attached line: {err}"
    );
    let text = std::fs::read_to_string(&out).expect("events");
    let events = podtrace_tests::tracer::parse_and_validate(&text, "no-cgroup run");
    let exit = events
        .iter()
        .find(|e| e["type"] == "exit" && e["exit_code"] == 7)
        .expect("the exit 7, traced");
    assert!(
        exit["cgroup"].is_null()
            && exit["cgroup_hierarchy"].is_null()
            && exit["cgroup_id"].is_null(),
        "{exit}"
    );
    assert!(exit["container"].is_null());
}
