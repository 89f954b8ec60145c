//! Issue 16: each way the kernel programs can attach and send (BTF or raw tracepoints, ring
//! buffer or perf buffers), forced, against the same real processes; and kernel threads
//! started while podtrace runs, which it must not report.
//!
//! Ground truth from the kernel: waitpid's status, the thread program's own tids, and for
//! kernel threads the new children of kthreadd with PF_KTHREAD in /proc/PID/stat.
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeSet;
use std::os::unix::process::ExitStatusExt;
use std::process::Command;
use std::time::Duration;

use podtrace_tests::lab;
use podtrace_tests::tracer::Tracer;

const PATHS: &[(&str, &str)] = &[
    ("tp-btf", "ring-buffer"),
    ("tp-btf", "perf-buffer"),
    ("raw-tp", "ring-buffer"),
    ("raw-tp", "perf-buffer"),
];

fn spawn_threads(n: usize) -> u32 {
    lab::spawn_threads(env!("CARGO_BIN_EXE_spawn-threads"), n)
}

#[test]
fn every_forced_kernel_path_reports_the_same_lifecycle() {
    for &(attach, transport) in PATHS {
        let what = format!("{attach} + {transport}");
        let t = Tracer::start(&["--attach", attach, "--transport", transport]);
        let tag = format!(
            "podtrace-test-path-{attach}-{transport}-{}",
            std::process::id()
        );
        let mut sh = Command::new("sh")
            .args(["-c", &format!("exit 7 # {tag}")])
            .spawn()
            .expect("spawn sh");
        let sh_pid = sh.id();
        assert_eq!(sh.wait().expect("wait sh").code(), Some(7));
        let mut sleep = Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("spawn sleep");
        std::thread::sleep(Duration::from_millis(100));
        sleep.kill().expect("SIGKILL");
        let killed = sleep.wait().expect("reap sleep");
        assert_eq!(killed.signal(), Some(9));
        let threads = spawn_threads(6);
        let run = t.stop();

        let exec = run.one("exec", sh_pid);
        assert_eq!(
            exec["argv"],
            serde_json::json!(["sh", "-c", format!("exit 7 # {tag}")]),
            "{what}"
        );
        assert_eq!(
            run.one("fork", sh_pid)["ppid"],
            std::process::id(),
            "{what}"
        );
        assert_eq!(run.one("exit", sh_pid)["exit_code"], 7, "{what}");
        assert_eq!(run.one("exit", sleep.id())["signal"], 9, "{what}");
        assert_eq!(
            run.of("exit", threads).len(),
            1,
            "{what}: one exit, not per thread"
        );
        assert!(
            run.events
                .iter()
                .all(|e| !(e["pid"] == threads && e["tid"] != threads)),
            "{what}: no event carries a thread's id as a process"
        );
        assert!(
            run.events.iter().all(|e| e["partial"] != true),
            "{what}: a kernel read failed: {:?}",
            run.events.iter().find(|e| e["partial"] == true)
        );
        let s = run.summary.as_ref().expect("summary");
        assert_eq!(s["kernel_path"]["attach"], attach, "{what}: {s}");
        assert_eq!(s["kernel_path"]["transport"], transport, "{what}: {s}");
        assert!(
            run.stderr
                .iter()
                .any(|l| l.contains(&format!("attached 4 programs ({what};"))),
            "{what}: the attach line names the path: {:#?}",
            run.stderr
        );
    }
}

/// Kernel threads (PF_KTHREAD) that kthreadd (pid 2) has now.
fn kernel_threads() -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir("/proc").expect("/proc") {
        let Some(pid) = entry
            .expect("a /proc entry")
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let after = &stat[stat.rfind(')').expect("comm") + 2..];
        let f: Vec<&str> = after.split_whitespace().collect();
        let flags: u64 = f[6].parse().expect("flags");
        if f[1] == "2" && flags & 0x0020_0000 != 0 {
            out.insert(pid);
        }
    }
    out
}

/// A new nice value for the writeback workqueue makes the kernel create a worker pool and a
/// kworker for it: kernel threads start while podtrace runs; none may appear as events (the
/// /proc snapshot leaves kernel threads out too), and the kernel counts what it skipped.
#[test]
fn kernel_threads_started_while_tracing_are_not_reported() {
    const NICE: &str = "/sys/devices/virtual/workqueue/writeback/nice";
    let t = Tracer::start(&[]);
    let before = kernel_threads();
    let old = std::fs::read_to_string(NICE).unwrap_or_else(|e| panic!("reading {NICE}: {e}"));
    // A value no pool has yet (each run of this test adds one; pools go when unused).
    let nice = 13 + (std::process::id() % 6) as i32;
    std::fs::write(NICE, nice.to_string()).unwrap_or_else(|e| panic!("writing {NICE}: {e}"));
    std::thread::sleep(Duration::from_millis(300));
    let after = kernel_threads();
    std::fs::write(NICE, old.trim()).unwrap_or_else(|e| panic!("restoring {NICE}: {e}"));
    let run = t.stop();
    let new: Vec<u32> = after.difference(&before).copied().collect();
    assert!(
        !new.is_empty(),
        "setting {NICE} to {nice} started no kernel thread: the test's ground truth is missing"
    );
    let reported: Vec<_> = run
        .events
        .iter()
        .filter(|e| e["pid"].as_u64().is_some_and(|p| new.contains(&(p as u32))))
        .collect();
    assert!(
        reported.is_empty(),
        "kernel threads {new:?} were reported: {reported:#?}"
    );
    let s = run.summary.as_ref().expect("summary");
    assert!(
        s["kernel_counters"]["kernel_threads"].as_u64().unwrap_or(0) >= 1,
        "the kernel counted no skipped kernel-thread record: {s}"
    );
}
