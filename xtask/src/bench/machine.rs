//! What the figures were measured on: date, machine, kernel, load, peer and podtrace versions.
use std::fmt::Write;

use crate::util;

fn read(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn first_line(program: &str, args: &[&str]) -> String {
    // forkstat -h exits non-zero: take stdout whatever the status.
    std::process::Command::new(program)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .find(|l| !l.trim().is_empty())
                .map(|l| l.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

pub fn date() -> String {
    util::output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown date".into())
}

/// The date for file names: 2026-11-27-0054 (UTC).
pub fn stamp() -> String {
    util::output("date", &["-u", "+%Y-%m-%d-%H%M"])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "undated".into())
}

pub fn load() -> String {
    read("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// Markdown bullet lines describing the machine and the software compared.
pub fn describe() -> String {
    let cpu = read("/proc/cpuinfo")
        .and_then(|c| {
            c.lines().find_map(|l| {
                l.strip_prefix("model name")
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).to_string())
            })
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let mem = read("/proc/meminfo")
        .and_then(|m| {
            m.lines().find_map(|l| {
                let kb: u64 = l
                    .strip_prefix("MemTotal:")?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()?;
                Some(format!("{:.1} GiB", kb as f64 / 1024.0 / 1024.0))
            })
        })
        .unwrap_or_else(|| "?".into());
    let root = util::workspace_root();
    let root_s = root.display().to_string();
    let commit = util::output("git", &["-C", &root_s, "rev-parse", "--short", "HEAD"])
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let dirty = util::output(
        "git",
        &[
            "-C",
            &root_s,
            "status",
            "--porcelain",
            "--",
            "podtrace",
            "podtrace-ebpf",
            "podtrace-common",
        ],
    )
    .map(|s| !s.trim().is_empty())
    .unwrap_or(false);
    let mut t = String::new();
    let _ = writeln!(
        t,
        "- machine: {} — {cpu}, {cores} CPUs, {mem}",
        read("/proc/sys/kernel/hostname").unwrap_or_else(|| "?".into())
    );
    let _ = writeln!(
        t,
        "- kernel: {}",
        read("/proc/sys/kernel/osrelease").unwrap_or_else(|| "?".into())
    );
    let _ = writeln!(
        t,
        "- podtrace: commit {commit}{}",
        if dirty {
            " with uncommitted changes to podtrace/"
        } else {
            ""
        }
    );
    let _ = writeln!(
        t,
        "- peers: {}, {}",
        first_line("bpftrace", &["--version"]),
        first_line("forkstat", &["-h"])
    );
    t
}
