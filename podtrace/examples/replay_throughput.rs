//! Replay throughput on one core: a realistic synthetic trace (exec with argv, fork, exit and
//! each process's reap; 70% of processes in cri-o containers) through `podtrace::replay` into
//! the NDJSON writer `podtrace replay` prints with (into `std::io::sink()`).
//!
//! `cargo run --release -p podtrace --example replay_throughput -- [EVENTS] [CONTAINERS] [PHASE]`
//! Prints one JSON line: events, seconds, events_per_sec, the phases alone, trace bytes per
//! 1000 events. PHASE (default `all`) runs one phase only, for profilers
//! (`valgrind --tool=callgrind`): `none` (only make the trace), `parse` (read and parse it),
//! `engine` (replay without output), `full` (replay to NDJSON). The differences between
//! phases split the cost between the trace reader, the engine and the encoder. With
//! `PODTRACE_REPLAY_TRACE=FILE` the trace is written to FILE once and read from it afterwards.
use std::time::Instant;

use podtrace::filter::EventFilter;
use podtrace::ndjson::NdjsonWriter;
use podtrace::pipeline::Pipeline;
use podtrace::replay::{replay, Until};
use podtrace::trace::reader::TraceReader;
use podtrace::trace::synth;

fn put(out: &mut serde_json::Map<String, serde_json::Value>, key: &str, v: f64) {
    out.insert(key.into(), serde_json::json!(v));
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let events: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let containers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let phase = args.next().unwrap_or_else(|| "all".into());
    anyhow::ensure!(
        ["all", "none", "parse", "engine", "full"].contains(&phase.as_str()),
        "PHASE is all, none, parse, engine or full, not {phase}"
    );
    let all = phase == "all";
    let dir = tempfile::tempdir()?;
    // PODTRACE_REPLAY_TRACE=FILE: the trace is kept there and read back by later runs (a
    // profile then shows the replay alone, not the making of the trace).
    let keep = std::env::var_os("PODTRACE_REPLAY_TRACE").map(std::path::PathBuf::from);
    let path = keep
        .clone()
        .unwrap_or_else(|| dir.path().join("synthetic.trace"));
    let text = match keep.as_ref().and_then(|k| std::fs::read_to_string(k).ok()) {
        Some(t) => t,
        None => {
            let t = synth::to_ndjson(&synth::trace(events, containers, 42));
            std::fs::write(&path, &t)?;
            t
        }
    };
    let kernel_events = events_in(&text);
    let mut out = serde_json::Map::new();
    // Where the time goes: reading and parsing alone, then the engine without output.
    if all || phase == "parse" {
        let start = Instant::now();
        let mut reader = TraceReader::open(&path, false)?;
        let mut parsed = 0u64;
        // As replay reads: into one record, reusing its allocations.
        let mut rec = podtrace::trace::Record::SnapshotEnd {};
        while reader.next_record_into(&mut rec)?.is_some() {
            parsed += 1;
        }
        let secs = start.elapsed().as_secs_f64();
        out.insert("records".into(), parsed.into());
        put(
            &mut out,
            "read_and_parse_only_events_per_sec",
            kernel_events as f64 / secs,
        );
    }
    if all || phase == "engine" {
        let start = Instant::now();
        let (_, s) = replay(
            &path,
            false,
            Until::End,
            Pipeline::new(EventFilter::default()),
        )?;
        put(
            &mut out,
            "without_output_events_per_sec",
            s.events as f64 / start.elapsed().as_secs_f64(),
        );
    }
    if all || phase == "full" {
        let start = Instant::now();
        let sink = NdjsonWriter::new(Box::new(std::io::sink()), "sink".into());
        let pipe = Pipeline::new(EventFilter::default()).sink(sink);
        let (_, summary) = replay(&path, false, Until::End, pipe)?;
        let secs = start.elapsed().as_secs_f64();
        out.insert("events".into(), summary.events.into());
        put(&mut out, "seconds", secs);
        put(&mut out, "events_per_sec", summary.events as f64 / secs);
    }
    let n = kernel_events.max(1) as f64;
    put(
        &mut out,
        "trace_bytes_per_1000_events",
        text.len() as f64 * 1000.0 / n,
    );
    if all {
        put(
            &mut out,
            "zstd_trace_bytes_per_1000_events",
            zstd::encode_all(text.as_bytes(), 3)?.len() as f64 * 1000.0 / n,
        );
        put(
            &mut out,
            "output_bytes_per_event",
            output_bytes(&path)? as f64 / n,
        );
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}

/// Kernel events (exec, fork, exit) in the trace text.
fn events_in(text: &str) -> usize {
    text.lines()
        .filter(|l| l.starts_with("{\"event\":"))
        .count()
}

/// Bytes of NDJSON the replay prints (outside the timed runs).
fn output_bytes(path: &std::path::Path) -> anyhow::Result<usize> {
    let mut bytes = 0usize;
    let pipe = Pipeline::new(EventFilter::default()).sink(podtrace::pipeline::FnSink(
        |ev: &podtrace::output::Event| {
            bytes += serde_json::to_vec(ev)?.len() + 1;
            Ok(())
        },
    ));
    replay(path, false, Until::End, pipe)?;
    Ok(bytes)
}
