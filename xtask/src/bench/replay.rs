//! Replay throughput on one core: the podtrace `replay_throughput` example (a synthetic cri-o
//! mix of exec with argv, fork, exit and reap, 70% in containers) pinned to CPU 0, through the
//! NDJSON writer `podtrace replay` prints with; the stages' costs follow from its three runs.
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

/// Nanoseconds per event of each stage, from the rates of the runs that add one stage each
/// (read + parse; + engine; + NDJSON encoder and writer).
pub fn stage_ns(r: &ReplayFigures) -> (f64, f64, f64) {
    let ns = |rate: f64| if rate > 0.0 { 1e9 / rate } else { 0.0 };
    let reader = ns(r.parse_only_per_sec);
    let engine = ns(r.without_output_per_sec) - reader;
    let encoder = ns(r.events_per_sec) - ns(r.without_output_per_sec);
    (reader, engine, encoder)
}

/// Budget of each stage for 1,000,000 events/s with room to spare.
const STAGE_BUDGET_NS: f64 = 300.0;

pub fn render(r: &ReplayFigures) -> String {
    let met = |ok: bool| if ok { "met" } else { "**NOT MET**" };
    let (reader, engine, encoder) = stage_ns(r);
    let stage = |name: &str, ns: f64| {
        format!(
            "{name} {ns:.0} ns ({})",
            met(ns <= STAGE_BUDGET_NS).trim_matches('*')
        )
    };
    format!(
        "\n### Replay throughput (one core, `taskset -c 0`)\n\n\
         | events | replay → NDJSON events/s | without output events/s | read + parse only events/s | trace bytes / 1000 events | zstd trace bytes / 1000 events |\n\
         |---|---|---|---|---|---|\n\
         | {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} |\n\n\
         - replay ≥ 1,000,000 events/s: {:.0} — {}.\n\
         - per event, from the columns (budget {STAGE_BUDGET_NS:.0} ns each): {}; {}; {}.\n",
        r.events,
        r.events_per_sec,
        r.without_output_per_sec,
        r.parse_only_per_sec,
        r.trace_bytes_per_1000,
        r.zstd_bytes_per_1000,
        r.events_per_sec,
        met(r.events_per_sec >= 1_000_000.0),
        stage("trace reader", reader),
        stage("engine and pipeline", engine),
        stage("NDJSON encoder", encoder),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_add_up_to_the_whole() {
        let r = ReplayFigures {
            events: 1_000_000,
            events_per_sec: 1e9 / 900.0,
            parse_only_per_sec: 1e9 / 250.0,
            without_output_per_sec: 1e9 / 650.0,
            trace_bytes_per_1000: 0.0,
            zstd_bytes_per_1000: 0.0,
        };
        let (a, b, c) = stage_ns(&r);
        assert!((a - 250.0).abs() < 1e-6 && (b - 400.0).abs() < 1e-6 && (c - 250.0).abs() < 1e-6);
        let text = render(&r);
        assert!(text.contains("NOT MET"), "{text}");
        assert!(
            text.contains("engine and pipeline 400 ns (NOT MET)"),
            "{text}"
        );
        assert!(text.contains("trace reader 250 ns (met)"), "{text}");
    }
}
