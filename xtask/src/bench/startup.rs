//! podtrace start-up (attach + /proc scan) and resident memory, on a quiet box and with many
//! extra sleeping processes to find in /proc and keep in the process table.
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::guard::check_interrupted;
use super::procfs;
use super::storm::Storm;
use super::tracers::{self, Config, Tools};

#[derive(Clone, Debug)]
pub struct StartRun {
    /// Which binary: the glibc build (`podtrace`) or the image's static musl one (`image`).
    pub binary: Config,
    /// Extra sleeping processes on the box during this start.
    pub sleepers: usize,
    /// Spawn until podtrace logged "attached" (after attaching and reading /proc).
    pub attach_ms: f64,
    /// Processes podtrace says it read from /proc.
    pub procs: Option<u64>,
    /// VmRSS and VmHWM one second after attaching, KiB.
    pub rss_kb: u64,
    pub hwm_kb: u64,
    /// Of VmRSS: anonymous memory (heap), and the BPF map mappings (the ring buffer).
    pub anon_kb: u64,
    pub maps_kb: u64,
}

pub fn measure(
    storm: &Storm,
    tools: &Tools,
    dir: &Path,
    sleepers: usize,
    reps: usize,
) -> Result<Vec<StartRun>> {
    // The glibc build and the image's binary, one after the other: side by side on one box.
    let mut runs = Vec::new();
    for i in 0..reps {
        for binary in BINARIES {
            runs.push(one(binary, tools, dir, 0, i)?);
        }
    }
    eprintln!("bench: starting {sleepers} sleeping processes");
    let held = storm.sleepers(sleepers)?;
    for i in 0..reps {
        for binary in BINARIES {
            runs.push(one(binary, tools, dir, sleepers, i)?);
        }
    }
    held.stop()?;
    Ok(runs)
}

/// The binaries whose start-up is measured.
pub const BINARIES: [Config; 2] = [Config::Podtrace, Config::PodtraceImage];

fn one(binary: Config, tools: &Tools, dir: &Path, sleepers: usize, i: usize) -> Result<StartRun> {
    check_interrupted()?;
    let tag = format!("startup-{}-{sleepers}-{i}", binary.key());
    let t0 = Instant::now();
    let t = tracers::start(binary, tools, dir, &tag)?
        .context("podtrace configuration started no process")?;
    let deadline = t0 + Duration::from_secs(60);
    let (at, line) = loop {
        if let Some(found) = t.stderr().find("attached") {
            break found;
        }
        check_interrupted()?;
        anyhow::ensure!(
            Instant::now() < deadline,
            "podtrace did not log \"attached\" within 60 s; stderr:\n{}",
            t.stderr().tail(20)
        );
        std::thread::sleep(Duration::from_millis(1));
    };
    std::thread::sleep(Duration::from_secs(1));
    let procfs::Usage {
        rss_kb,
        hwm_kb,
        anon_kb,
        ..
    } = procfs::Usage::read(t.pid())?;
    let maps_kb = procfs::mapped_rss_kb(t.pid(), "bpf-map")?;
    let out = t.out.clone();
    let summary = t.summary.clone();
    t.finish()?;
    let _ = std::fs::remove_file(out);
    if let Some(s) = summary {
        let _ = std::fs::remove_file(s);
    }
    let run = StartRun {
        binary,
        sleepers,
        attach_ms: at.duration_since(t0).as_secs_f64() * 1e3,
        procs: procs_scanned(&line),
        rss_kb,
        hwm_kb,
        anon_kb,
        maps_kb,
    };
    eprintln!(
        "bench: start-up of {} with {sleepers} sleepers: attached after {:.0} ms, {} processes from /proc, RSS {} KiB",
        binary.key(),
        run.attach_ms,
        run.procs.map(|p| p.to_string()).unwrap_or_else(|| "?".into()),
        run.rss_kb
    );
    Ok(run)
}

/// "attached 3 raw tracepoints; 34 processes from /proc; ..." -> 34
fn procs_scanned(line: &str) -> Option<u64> {
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .find(|w| w[1].starts_with("processes"))
        .and_then(|w| w[0].parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn procs_scanned_reads_the_attached_line() {
        let l = "2026-11-26T23:35:00Z  INFO attached 3 raw tracepoints; 10034 processes from /proc; ring buffer 8388608 bytes";
        assert_eq!(procs_scanned(l), Some(10034));
        assert_eq!(procs_scanned("attached"), None);
    }
}
