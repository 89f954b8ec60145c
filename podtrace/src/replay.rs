//! The trace source: `podtrace replay` and `tree --from` push a trace's records through the
//! same pipeline as `run`.
use std::path::Path;

use anyhow::Result;

use crate::clock::BootClock;
use crate::engine::Engine;
use crate::pipeline::Pipeline;
use crate::trace::reader::TraceReader;
use crate::trace::Record;

#[derive(Debug, Default)]
pub struct ReplaySummary {
    pub records: u64,
    pub events: u64,
    pub printed: u64,
    pub skipped: u64,
    pub cut_short: Option<String>,
}

/// When to stop: replay everything, or only records up to a time.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    End,
    /// Unix ns.
    At(i64),
    /// Offset from the start of recording, ns.
    Offset(i64),
}

/// Boot-clock time of a record that happens at a time, if it does.
fn record_ts(rec: &Record) -> Option<u64> {
    match rec {
        Record::Event(e) => Some(e.ts_ns),
        Record::Reap(r) => Some(r.ts_ns),
        Record::Lost(l) => Some(l.ts_ns),
        Record::Clock(c) => Some(c.ts_ns),
        Record::ResyncStart(r) => Some(r.ts_ns),
        Record::Malformed(m) => Some(m.ts_ns),
        _ => None,
    }
}

/// Replays `path` through `pipeline`. Returns the engine as it was at the end (or at
/// `until`), for `tree --from`.
pub fn replay(
    path: &Path,
    lenient: bool,
    until: Until,
    mut pipeline: Pipeline<'_>,
) -> Result<(Engine, ReplaySummary)> {
    let mut reader = TraceReader::open(path, lenient)?;
    let mut summary = ReplaySummary::default();
    let mut stop_boot_ns = u64::MAX;
    let mut snapshot_done = false;
    // One record for the whole trace: the reader reuses its allocations.
    let mut rec = Record::SnapshotEnd {};
    while reader.next_record_into(&mut rec)?.is_some() {
        summary.records += 1;
        if let Record::Header(h) = &rec {
            let clock = BootClock {
                offset_ns: h.boot_offset_ns,
            };
            stop_boot_ns = match until {
                Until::End => u64::MAX,
                Until::At(unix) => clock.boot_ns(unix),
                Until::Offset(off) => clock.boot_ns(h.started_unix_ns.saturating_add(off)),
            };
        }
        if matches!(rec, Record::SnapshotEnd {}) {
            snapshot_done = true;
        }
        if record_ts(&rec).is_some_and(|ts| ts > stop_boot_ns) {
            break;
        }
        pipeline.push(&rec)?;
    }
    summary.events = pipeline.counts.events;
    summary.printed = pipeline.counts.printed;
    summary.skipped = reader.skipped;
    summary.cut_short = reader.cut_short.take();
    let engine = pipeline.finish()?;
    match engine {
        Some(e) if snapshot_done => Ok((e, summary)),
        _ => anyhow::bail!(crate::error::Failure::BadInput(format!(
            "{}: trace has no complete snapshot (no snapshot_end record)",
            path.display()
        ))),
    }
}
