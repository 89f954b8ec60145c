//! Replay throughput on one core: the podtrace `replay_throughput` example (a synthetic cri-o
//! mix of exec with argv, fork and exit, 70% in containers) pinned to CPU 0.
use std::process::Command;

use anyhow::{Context, Result};

use crate::util;

pub struct ReplayFigures {
    pub events: u64,
    pub events_per_sec: f64,
    pub parse_only_per_sec: f64,
    pub without_output_per_sec: f64,
    pub trace_bytes_per_1000: f64,
    pub zstd_bytes_per_1000: f64,
}

pub fn measure(events: usize) -> Result<ReplayFigures> {
    util::step(&format!("replay throughput ({events} events, one core)"))?;
    let root = util::workspace_root();
    util::cargo(
        &root,
        &[
            "build",
            "--release",
            "-p",
            "podtrace",
            "--example",
            "replay_throughput",
        ],
        &[],
    )?;
    let example = root.join("target/release/examples/replay_throughput");
    let out = Command::new("taskset")
        .args(["-c", "0"])
        .arg(&example)
        .arg(events.to_string())
        .arg("50")
        .output()
        .with_context(|| format!("running {}", example.display()))?;
    anyhow::ensure!(
        out.status.success(),
        "replay_throughput failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).context("replay_throughput prints one JSON object")?;
    let f = |k: &str| v[k].as_f64().unwrap_or(0.0);
    Ok(ReplayFigures {
        events: v["events"].as_u64().unwrap_or(0),
        events_per_sec: f("events_per_sec"),
        parse_only_per_sec: f("read_and_parse_only_events_per_sec"),
        without_output_per_sec: f("without_output_events_per_sec"),
        trace_bytes_per_1000: f("trace_bytes_per_1000_events"),
        zstd_bytes_per_1000: f("zstd_trace_bytes_per_1000_events"),
    })
}

pub fn render(r: &ReplayFigures) -> String {
    let met = if r.events_per_sec >= 1_000_000.0 {
        "met"
    } else {
        "**NOT MET**"
    };
    format!(
        "\n### Replay throughput (one core, `taskset -c 0`)\n\n\
         | events | replay → NDJSON events/s | without output events/s | read + parse only events/s | trace bytes / 1000 events | zstd trace bytes / 1000 events |\n\
         |---|---|---|---|---|---|\n\
         | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n\n\
         - replay ≥ 1,000,000 events/s: {:.0} — {met}. Decoding the JSON trace and encoding the \
         ~600-byte enriched JSON line are most of the time per event (compare the columns).\n",
        r.events,
        r.events_per_sec,
        r.without_output_per_sec,
        r.parse_only_per_sec,
        r.trace_bytes_per_1000,
        r.zstd_bytes_per_1000,
        r.events_per_sec
    )
}
