//! `podtrace replay` and `tree --from`: a trace file through the same engine as `run`.
use std::path::Path;

use anyhow::Result;

use crate::clock::BootClock;
use crate::engine::Engine;
use crate::facts::KnownFacts;
use crate::filter::EventFilter;
use crate::output::Event;
use crate::snapshot::ProcInfo;
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

/// When to stop: replay everything, or only records up to a boot-clock time.
#[derive(Clone, Copy, Debug)]
pub enum Until {
    End,
    /// Unix ns.
    At(i64),
    /// Offset from the start of recording, ns.
    Offset(i64),
}

/// Replays `path`, handing every kept event to `sink`. Returns the engine as it was at the end
/// (or at `until`), for `tree --from`.
pub fn replay(
    path: &Path,
    lenient: bool,
    filter: &EventFilter,
    until: Until,
    sink: &mut dyn FnMut(&Event) -> Result<()>,
) -> Result<(Engine, ReplaySummary)> {
    let mut reader = TraceReader::open(path, lenient)?;
    let mut summary = ReplaySummary::default();
    let mut facts = KnownFacts::default();
    let mut procs: Vec<ProcInfo> = Vec::new();
    let mut engine: Option<Engine> = None;
    let mut header = None;
    let mut stop_boot_ns = u64::MAX;
    let mut buf = Vec::new();
    while let Some((_line, rec)) = reader.next_record()? {
        summary.records += 1;
        match rec {
            Record::Header(h) => {
                let clock = BootClock {
                    offset_ns: h.boot_offset_ns,
                };
                stop_boot_ns = match until {
                    Until::End => u64::MAX,
                    Until::At(unix) => clock.boot_ns(unix),
                    Until::Offset(off) => clock.boot_ns(h.started_unix_ns.saturating_add(off)),
                };
                header = Some(h);
            }
            Record::Proc(p) => procs.push(p),
            Record::Cgroup(c) => {
                facts.cgroups.insert(c.id, c.path);
            }
            Record::SnapshotEnd {} => {
                let Some(h) = &header else { continue };
                let mut e = Engine::new(
                    BootClock {
                        offset_ns: h.boot_offset_ns,
                    },
                    h.host_pidns,
                    h.node.clone(),
                );
                e.load_snapshot(&procs, &mut facts);
                procs = Vec::new();
                engine = Some(e);
            }
            Record::Event(ev) => {
                let Some(e) = engine.as_mut() else { continue };
                if ev.ts_ns > stop_boot_ns {
                    break;
                }
                summary.events += 1;
                e.ingest(&ev, &mut facts, &mut buf);
            }
            Record::Lost(l) => {
                let Some(e) = engine.as_mut() else { continue };
                if l.ts_ns > stop_boot_ns {
                    break;
                }
                e.lost(l.ts_ns, l.count, &mut buf);
            }
            Record::End(_) => {}
        }
        for ev in buf.drain(..) {
            if filter.keep(&ev) {
                summary.printed += 1;
                sink(&ev)?;
            }
        }
    }
    summary.skipped = reader.skipped;
    summary.cut_short = reader.cut_short.take();
    let engine = match engine {
        Some(e) => e,
        None => anyhow::bail!(
            "{}: trace has no complete snapshot (no snapshot_end record)",
            path.display()
        ),
    };
    Ok((engine, summary))
}
