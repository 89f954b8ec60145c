//! The trace source: `podtrace replay` and `tree --from` push a trace's records through the
//! same pipeline as `run`.
use std::path::{Path, PathBuf};

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
    /// A warning per file that ended early (a crash, a full disk): it replayed up to there.
    pub cut_short: Vec<String>,
    /// The files replayed, in order.
    pub files: Vec<PathBuf>,
}

/// How far out of time order records of a trace can be: records come in the order they
/// reached podtrace, and records of different CPUs are not strictly in time order (the ring
/// buffer: by microseconds; perf buffers: by at most one drain). [`Until`] reads on this far
/// past its time for records stamped before it.
pub const REORDER_NS: u64 = 1_000_000_000;

/// When to stop: replay everything, or only records up to a time. Stopping at a time applies
/// every record stamped at or before it (and the facts, which carry no time), and none
/// stamped after it, up to the first record stamped more than [`REORDER_NS`] after it.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    End,
    /// Unix ns.
    At(i64),
    /// Offset from the start of recording, ns.
    Offset(i64),
}

/// Boot-clock time of a record that happens at a time, if it does.
pub fn record_ts(rec: &Record) -> Option<u64> {
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

/// `started_unix_ns` of a trace's header, read from its first line.
pub fn trace_start(file: &Path) -> Result<i64> {
    let mut reader = TraceReader::open(file, false)?;
    match reader.next_record()? {
        Some((_, Record::Header(h))) => Ok(h.started_unix_ns),
        _ => Err(crate::error::Failure::BadInput(format!("{}: no header", file.display())).into()),
    }
}

/// The files `path` names: itself, or a directory's segments, oldest first.
pub fn files(path: &Path) -> Result<Vec<PathBuf>> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let v = crate::trace::segments::list(path).map_err(|e| {
        crate::error::Failure::BadInput(format!("{}: cannot list: {e}", path.display()))
    })?;
    if v.is_empty() {
        return Err(crate::error::Failure::BadInput(format!(
            "{}: no trace segments (podtrace-*.trace.zst) in this directory",
            path.display()
        ))
        .into());
    }
    Ok(v)
}

/// Replays `path` through `pipeline`: a trace file, or a directory of segments, in order
/// (each starts from its own snapshot or state: one cut short by a crash or a full disk
/// does not stop the next). At a time (`until`) in a directory, only the segment that time
/// falls in is read (the last one started at or before it). Returns the engine as it was
/// at the end (or at `until`), for `tree --from`.
pub fn replay(
    path: &Path,
    lenient: bool,
    until: Until,
    mut pipeline: Pipeline<'_>,
) -> Result<(Engine, ReplaySummary)> {
    let mut files = files(path)?;
    let mut until = until;
    if path.is_dir() && !matches!(until, Until::End) {
        let (file, at) = segment_at(&files, until)?;
        files = vec![file];
        until = Until::At(at);
    }
    let mut summary = ReplaySummary::default();
    let mut complete = false;
    for file in &files {
        complete = replay_file(file, lenient, until, &mut pipeline, &mut summary)?;
    }
    summary.events = pipeline.counts.events;
    summary.printed = pipeline.counts.printed;
    summary.files = files;
    let engine = pipeline.finish()?;
    match engine {
        Some(e) if complete => Ok((e, summary)),
        _ => anyhow::bail!(crate::error::Failure::BadInput(format!(
            "{}: trace has no complete snapshot (no snapshot_end or state_end record)",
            summary
                .files
                .last()
                .map_or_else(|| path.display().to_string(), |f| f.display().to_string())
        ))),
    }
}

/// The segment a time falls in (the last started at or before it) and the time as unix ns.
fn segment_at(files: &[PathBuf], until: Until) -> Result<(PathBuf, i64)> {
    let mut starts = Vec::with_capacity(files.len());
    for f in files {
        starts.push((trace_start(f)?, f));
    }
    let first = starts.first().map_or(0, |(t, _)| *t);
    let at = match until {
        Until::At(t) => t,
        Until::Offset(off) => first.saturating_add(off),
        Until::End => i64::MAX,
    };
    starts
        .iter()
        .rev()
        .find(|(t, _)| *t <= at)
        .map(|(_, f)| ((*f).clone(), at))
        .ok_or_else(|| {
            crate::error::Failure::BadInput(format!(
                "{} is before the oldest segment, which starts at {} ({})",
                crate::clock::format_rfc3339(at),
                crate::clock::format_rfc3339(first),
                files
                    .first()
                    .map_or_else(String::new, |f| f.display().to_string())
            ))
            .into()
        })
}

/// One file through `pipeline`; whether its snapshot or state was complete.
fn replay_file(
    path: &Path,
    lenient: bool,
    until: Until,
    pipeline: &mut Pipeline<'_>,
    summary: &mut ReplaySummary,
) -> Result<bool> {
    let mut reader = TraceReader::open(path, lenient)?;
    let mut stop_boot_ns = u64::MAX;
    let mut snapshot_done = false;
    // Inside a resync that started after the stop time: its /proc picture is of later.
    let mut skipping_resync = false;
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
        if matches!(rec, Record::SnapshotEnd {} | Record::StateEnd {}) {
            snapshot_done = true;
        }
        match (record_ts(&rec), &rec) {
            (Some(ts), _) if ts > stop_boot_ns.saturating_add(REORDER_NS) => break,
            (Some(ts), Record::ResyncStart(_)) if ts > stop_boot_ns => {
                skipping_resync = true;
                continue;
            }
            (Some(ts), _) if ts > stop_boot_ns => continue,
            (_, Record::ResyncEnd(_)) if skipping_resync => {
                skipping_resync = false;
                continue;
            }
            (_, Record::Proc(_) | Record::Cgroup(_)) if skipping_resync => continue,
            _ => {}
        }
        pipeline.push(&rec)?;
    }
    summary.skipped += reader.skipped;
    summary.cut_short.extend(reader.cut_short.take());
    Ok(snapshot_done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::EventFilter;
    use crate::kernel_event::Kind;
    use crate::trace::synth;
    use crate::trace::{EndRecord, Header, FORMAT_VERSION};

    const MS: u64 = 1_000_000;
    /// The moment asked for (boot ns; the header's offset is 0, so also unix ns).
    const T: u64 = 1_000_000 * MS;

    fn header() -> Record {
        Record::Header(Header {
            format: FORMAT_VERSION,
            podtrace_version: "test".into(),
            kernel_release: "test".into(),
            hostname: "test".into(),
            boot_offset_ns: 0,
            host_pidns: 4026531836,
            node: None,
            started_unix_ns: (T - 1_000 * MS) as i64,
            cgroups: crate::cgroups::CgroupSetup::v2_only(),
            hold_ns: 0,
            segment: None,
        })
    }

    fn fork(pid: u32, ts_ns: u64) -> Record {
        Record::Event(synth::event(Kind::Fork, ts_ns, pid, 1, "sh", 0))
    }

    /// /proc as a resync reads it.
    fn proc(pid: u32, start_ns: u64) -> Record {
        Record::Proc(crate::snapshot::ProcInfo {
            pid,
            ppid: 1,
            start_ns,
            nspid: pid,
            pidns: 4026531836,
            uid: 0,
            gid: 0,
            comm: "sh".into(),
            exe: None,
            argv: Vec::new(),
            argv_truncated: false,
            zombie: false,
            cgroup: None,
            cgroup_id: 0,
            cgroup_v1: None,
            cgroup_v1_id: 0,
        })
    }

    fn engine_at(records: &[Record], until: Until) -> Engine {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.trace");
        std::fs::write(&path, synth::to_ndjson(records)).expect("write the trace");
        let (engine, _) =
            replay(&path, false, until, Pipeline::new(EventFilter::default())).expect("replay");
        engine
    }

    /// Records from different CPUs are not strictly in time order: a fork stamped just before
    /// T that arrives after one stamped just after T happened before T, and is in the picture.
    #[test]
    fn tree_at_a_time_takes_every_record_stamped_before_it() {
        let records = [
            header(),
            Record::SnapshotEnd {},
            fork(10, T - 10 * MS),
            fork(11, T + 5 * MS), // another CPU, a little ahead
            fork(12, T - MS),     // stamped before T, arrives after 11
            fork(13, T),          // at T: in
            // A resync after T (it lists a process 20 not seen before): not applied.
            Record::ResyncStart(crate::trace::ResyncStart { ts_ns: T + 10 * MS }),
            proc(10, T - 10 * MS),
            proc(11, T + 5 * MS),
            proc(12, T - MS),
            proc(13, T),
            proc(20, T - 500 * MS),
            Record::ResyncEnd(Default::default()),
            fork(14, T + 3_000 * MS),
            fork(15, T - 2 * MS), // before T, but long after later records: the window is shut
            Record::End(EndRecord { events: 6, lost: 0 }),
        ];
        let e = engine_at(&records, Until::At(T as i64));
        let live = |pid| e.table().get(pid).is_some();
        assert!(live(10) && live(12) && live(13), "before or at T");
        assert!(!live(11) && !live(14), "after T");
        assert!(!live(15), "read up to a second past T, not to the end");
        assert!(!live(20), "the resync after T is not applied");
        assert!(
            e.now_ns() <= T,
            "the engine's clock stops at T: {}",
            e.now_ns()
        );
        let e = engine_at(&records, Until::Offset(1_000 * MS as i64));
        assert!(e.table().get(12).is_some() && e.table().get(11).is_none());
        let e = engine_at(&records, Until::End);
        assert!([10, 11, 12, 13, 14, 15, 20]
            .iter()
            .all(|&pid| e.table().get(pid).is_some()));
    }
}
