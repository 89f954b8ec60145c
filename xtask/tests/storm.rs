//! The storm workload against the real kernel: the pids it records are the processes it ran,
//! failures are counted, and sleepers are really started and really reaped.
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const STORM: &str = env!("CARGO_BIN_EXE_storm");

fn result(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("storm wrote its result file");
    serde_json::from_str(&text).expect("storm result is JSON")
}

#[test]
fn run_records_every_pid_it_started() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("r.json");
    // Each child prints its own pid: the ground truth for the pids storm records.
    let pids_file = dir.path().join("pids");
    let script = format!("echo $$ >> {}", pids_file.display());
    let status = Command::new(STORM)
        .args(["run", "--count", "40", "--workers", "3", "--out"])
        .arg(&out)
        .args(["--", "/bin/busybox", "sh", "-c", &script])
        .status()
        .expect("run storm");
    assert!(status.success(), "storm run failed: {status}");
    let r = result(&out);
    assert_eq!(r["started"], 40, "{r}");
    assert_eq!(r["failed"], 0, "{r}");
    assert!(r["wall_ns"].as_u64().expect("wall_ns") > 0, "{r}");
    let mut recorded: Vec<i64> = r["pids"]
        .as_array()
        .expect("pids array")
        .iter()
        .map(|p| p.as_i64().expect("pid is a number"))
        .collect();
    let mut printed: Vec<i64> = std::fs::read_to_string(&pids_file)
        .expect("children wrote their pids")
        .lines()
        .map(|l| l.trim().parse().expect("a pid per line"))
        .collect();
    recorded.sort_unstable();
    printed.sort_unstable();
    assert_eq!(recorded, printed, "storm's pids are the children that ran");
}

#[test]
fn run_counts_children_that_fail() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("r.json");
    let status = Command::new(STORM)
        .args(["run", "--count", "5", "--workers", "1", "--out"])
        .arg(&out)
        .args(["--", "/bin/busybox", "false"])
        .status()
        .expect("run storm");
    assert!(!status.success(), "failing children must fail storm");
    let r = result(&out);
    assert_eq!(
        (r["started"].as_u64(), r["failed"].as_u64()),
        (Some(5), Some(5)),
        "{r}"
    );
}

#[test]
fn run_at_a_set_rate_takes_the_time_it_should() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("r.json");
    let t0 = Instant::now();
    let status = Command::new(STORM)
        .args([
            "run",
            "--count",
            "20",
            "--workers",
            "2",
            "--rate",
            "50",
            "--out",
        ])
        .arg(&out)
        .status()
        .expect("run storm");
    assert!(status.success(), "storm run failed: {status}");
    // The last of 20 starts at 50/s is due at 19/50 = 0.38 s.
    assert!(
        t0.elapsed() >= Duration::from_millis(380),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(result(&out)["started"], 20);
}

fn children_of(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .expect("read children list")
        .split_whitespace()
        .map(|p| p.parse().expect("pid"))
        .collect()
}

#[test]
fn sleepers_exist_until_stdin_closes_then_are_reaped() {
    let mut holder = Command::new(STORM)
        .args(["sleepers", "--count", "25"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start storm sleepers");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("stdout pipe"))
        .read_line(&mut line)
        .expect("ready line");
    assert_eq!(line.trim(), "ready 25");
    let kids = children_of(holder.id());
    assert_eq!(kids.len(), 25, "25 sleepers: {kids:?}");
    for k in &kids {
        let status = std::fs::read_to_string(format!("/proc/{k}/status")).expect("sleeper status");
        assert!(
            status.contains("Name:\tbusybox"),
            "sleeper {k} runs busybox:\n{status}"
        );
    }
    drop(holder.stdin.take());
    let status = holder.wait().expect("holder exits");
    assert!(status.success(), "holder: {status}");
    for k in &kids {
        // Reaped by the holder: no zombie left behind (barring pid reuse, gone entirely).
        let state = std::fs::read_to_string(format!("/proc/{k}/stat")).unwrap_or_default();
        assert!(
            !state.contains(") Z "),
            "sleeper {k} left a zombie: {state}"
        );
    }
}
