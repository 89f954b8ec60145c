//! Replay throughput on one core: a realistic synthetic trace (exec with argv, fork, exit;
//! 70% of processes in cri-o containers) through `podtrace::replay` into NDJSON (discarded).
//! `cargo run --release -p podtrace --example replay_throughput -- [EVENTS] [CONTAINERS]`
//! Prints one JSON line: events, seconds, events_per_sec, trace bytes per 1000 events.
use std::io::Write;
use std::time::Instant;

use podtrace::filter::EventFilter;
use podtrace::pipeline::{FnSink, Pipeline};
use podtrace::replay::{replay, Until};
use podtrace::trace::synth;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let events: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let containers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("synthetic.trace");
    let text = synth::to_ndjson(&synth::trace(events, containers, 42));
    std::fs::write(&path, &text)?;
    // Where the time goes: reading and parsing alone, then the engine without output.
    let start = Instant::now();
    let mut reader = podtrace::trace::reader::TraceReader::open(&path, false)?;
    let mut parsed = 0u64;
    while reader.next_record()?.is_some() {
        parsed += 1;
    }
    let parse_secs = start.elapsed().as_secs_f64();
    let start = Instant::now();
    let (_, s) = replay(
        &path,
        false,
        Until::End,
        Pipeline::new(EventFilter::default()),
    )?;
    let no_output_secs = start.elapsed().as_secs_f64();
    let _ = (parsed, s);
    let mut sink = std::io::BufWriter::with_capacity(1 << 16, std::io::sink());
    let mut printed_bytes = 0usize;
    let start = Instant::now();
    let pipe =
        Pipeline::new(EventFilter::default()).sink(FnSink(|ev: &podtrace::output::Event| {
            let line = serde_json::to_vec(ev)?;
            printed_bytes += line.len() + 1;
            sink.write_all(&line)?;
            sink.write_all(b"\n")?;
            Ok(())
        }));
    let (_, summary) = replay(&path, false, Until::End, pipe)?;
    sink.flush()?;
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "events": summary.events,
            "seconds": secs,
            "events_per_sec": summary.events as f64 / secs,
            "read_and_parse_only_events_per_sec": summary.events as f64 / parse_secs,
            "without_output_events_per_sec": summary.events as f64 / no_output_secs,
            "trace_bytes_per_1000_events": text.len() as f64 * 1000.0 / summary.events as f64,
            "zstd_trace_bytes_per_1000_events": zstd::encode_all(text.as_bytes(), 3)?.len() as f64 * 1000.0 / summary.events as f64,
            "output_bytes_per_event": printed_bytes as f64 / summary.events.max(1) as f64,
        })
    );
    Ok(())
}
