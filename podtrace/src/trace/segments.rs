//! The recorder (`--record`): the pipeline hands it every record before the engine applies
//! it. Into one file, or into a directory as segments rotated by size and by time, each of
//! which replays on its own: it starts with the run's header and the engine's whole state at
//! that moment (`state` records, see [`crate::engine::state`]), and ends with `segment_end`
//! naming the next. Retention removes the oldest segments of the directory beyond a size or
//! an age. A write that fails (a full disk) stops nothing but the recorder: it pauses,
//! counts the records it could not write, and in a directory tries again every second with
//! a new segment (docs/trace-format.md, docs/operations.md).
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;

use super::writer::TraceWriter;
use super::{Header, Record, RecordingRecord, SegmentEnd, SegmentInfo, FORMAT_VERSION};
use crate::clock;
use crate::engine::Engine;
use crate::error::Failure;
use crate::output::RecordingState;

/// How often a paused recorder tries again (a new segment).
pub const RETRY_EVERY: Duration = Duration::from_secs(1);
/// How often the recorder looks at the time, retention and a paused recorder.
const TICK_EVERY: Duration = Duration::from_millis(100);
/// The smallest `--segment-size`.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;
/// Segment files: `podtrace-<recording start>-<seq>.trace.zst`.
const PREFIX: &str = "podtrace-";
const SUFFIX: &str = ".trace.zst";

/// When segments end and how long the directory keeps them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rotation {
    /// A segment ends before it would grow past this (compressed bytes on disk).
    pub segment_bytes: u64,
    /// A segment ends after this long.
    pub segment_age: Duration,
    /// The directory's segments take at most this many bytes (the oldest go first).
    pub retain_bytes: Option<u64>,
    /// Segments that ended longer ago than this go.
    pub retain_age: Option<Duration>,
}

impl Default for Rotation {
    fn default() -> Self {
        Self {
            segment_bytes: 64 << 20,
            segment_age: Duration::from_secs(3600),
            retain_bytes: Some(1 << 30),
            retain_age: Some(Duration::from_secs(7 * 86_400)),
        }
    }
}

impl Rotation {
    /// Bounds that cannot be kept are bad input (exit 2).
    pub fn check(&self) -> Result<(), Failure> {
        if self.segment_bytes < SEGMENT_BYTES_MIN {
            return Err(Failure::BadInput(format!(
                "--segment-size {}: at least {SEGMENT_BYTES_MIN} bytes",
                self.segment_bytes
            )));
        }
        if let Some(r) = self.retain_bytes {
            if r < 2 * self.segment_bytes {
                return Err(Failure::BadInput(format!(
                    "--retain-size {r} is less than twice --segment-size {}: the directory keeps \
                     the segment being written and at least one whole segment before it",
                    self.segment_bytes
                )));
            }
        }
        Ok(())
    }
}

/// Where records go.
#[derive(Clone, Debug)]
pub enum Target {
    /// One trace file (zstd when the name ends in `.zst`).
    File(PathBuf),
    /// Segments in a directory.
    Dir { dir: PathBuf, rotation: Rotation },
}

/// What the recorder did (`--summary`'s `recording`, and metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct RecorderStats {
    /// Where: the file, or the directory.
    pub path: String,
    /// Segments started (the directory only).
    pub segments: u64,
    /// Segments removed by retention.
    pub removed_segments: u64,
    /// Bytes of the directory's segments now (the one being written at most its bound).
    pub dir_bytes: u64,
    /// Times writing failed and the recorder paused.
    pub pauses: u64,
    /// Records not written while paused.
    pub records_lost: u64,
    /// Paused now.
    pub paused: bool,
    /// The last write error.
    pub last_error: Option<String>,
}

struct Paused {
    last_try: Instant,
    lost: u64,
}

/// A segment that ended, in the directory.
struct Closed {
    path: PathBuf,
    bytes: u64,
    ended: SystemTime,
}

pub struct Recorder {
    target: Target,
    writer: Option<TraceWriter>,
    /// The run's header, for the segments after the first.
    header: Option<Header>,
    recording_started_unix_ns: i64,
    seq: u64,
    opened: Instant,
    last_tick: Instant,
    /// Records written to the current segment after its start.
    since_start: u64,
    /// The segment's size bound when its start (header and snapshot or state) was written.
    start_bytes: u64,
    paused: Option<Paused>,
    closed: VecDeque<Closed>,
    /// The largest resync (records a segment cannot end inside) seen so far, in bytes of the
    /// size bound: segments end that much before their bound.
    largest_group: u64,
    group_from: Option<u64>,
    /// The large-start warning was given.
    warned_start: bool,
    line: Vec<u8>,
    pub stats: RecorderStats,
}

/// `podtrace-20261208T115601.123456789Z-000001.trace.zst`.
fn segment_name(recording_started_unix_ns: i64, seq: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(recording_started_unix_ns))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{PREFIX}{:04}{:02}{:02}T{:02}{:02}{:02}.{:09}Z-{seq:06}{SUFFIX}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.nanosecond()
    )
}

/// Whether `name` is a segment's file name.
pub fn is_segment_name(name: &str) -> bool {
    name.starts_with(PREFIX) && (name.ends_with(SUFFIX) || name.ends_with(".trace"))
}

/// The segments in `dir`, oldest first (by name: the recording's start, then the sequence
/// number).
pub fn list(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_str().is_some_and(is_segment_name))
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.path())
        .collect();
    v.sort();
    Ok(v)
}

fn error_text(e: &anyhow::Error) -> String {
    format!("{e:#}")
}

impl Recorder {
    /// Opens the file, or the directory and its first segment: a path podtrace cannot write
    /// stops it here, before the run (exit 2).
    pub fn open(target: Target) -> Result<Self> {
        let now = clock::unix_now_ns();
        let (writer, path, closed) = match &target {
            Target::File(p) => (TraceWriter::create(p)?, p.display().to_string(), Vec::new()),
            Target::Dir { dir, rotation } => {
                rotation.check()?;
                crate::outfile::ensure_dir(dir)?;
                let mut closed = Vec::new();
                for p in list(dir).map_err(|e| {
                    Failure::BadInput(format!("{}: cannot list: {e}", dir.display()))
                })? {
                    if let Ok(m) = std::fs::metadata(&p) {
                        closed.push(Closed {
                            bytes: m.len(),
                            ended: m.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                            path: p,
                        });
                    }
                }
                let first = dir.join(segment_name(now, 1));
                let w = TraceWriter::create_new(&first, true).map_err(|e| {
                    Failure::BadInput(format!(
                        "{}: cannot create a trace segment: {e}",
                        first.display()
                    ))
                })?;
                (w, dir.display().to_string(), closed)
            }
        };
        let mut r = Self {
            target,
            writer: Some(writer),
            header: None,
            recording_started_unix_ns: now,
            seq: 1,
            opened: Instant::now(),
            last_tick: Instant::now(),
            since_start: 0,
            start_bytes: 0,
            paused: None,
            closed: closed.into(),
            largest_group: 0,
            group_from: None,
            warned_start: false,
            line: Vec::with_capacity(4096),
            stats: RecorderStats {
                path,
                segments: 1,
                ..RecorderStats::default()
            },
        };
        if matches!(r.target, Target::Dir { .. }) {
            r.retain();
        }
        Ok(r)
    }

    fn rotation(&self) -> Option<&Rotation> {
        match &self.target {
            Target::Dir { rotation, .. } => Some(rotation),
            Target::File(_) => None,
        }
    }

    /// The run's header as a segment's: `seq`, started now.
    fn segment_header(&self, h: &Header, seq: u64, offset_ns: i64) -> Header {
        let mut h = h.clone();
        h.format = FORMAT_VERSION;
        if seq > 1 {
            h.started_unix_ns = clock::unix_now_ns();
            h.boot_offset_ns = offset_ns;
        }
        h.segment = Some(SegmentInfo {
            seq,
            recording_started_unix_ns: self.recording_started_unix_ns,
        });
        h
    }

    /// Writes `rec` (before the engine applies it; `engine` is the engine at a boundary, or
    /// None). In a directory, a segment that `rec` would take past its bound ends first.
    /// Returns the `recording` record to show (not to record) when writing just failed.
    pub fn write(&mut self, rec: &Record, engine: Option<&Engine>) -> Option<RecordingRecord> {
        if let Record::Header(h) = rec {
            self.header = Some(h.clone());
        }
        if self.writer.is_none() {
            if let Some(p) = &mut self.paused {
                p.lost += 1;
                self.stats.records_lost += 1;
            }
            return None;
        }
        let mut line = std::mem::take(&mut self.line);
        match (rec, self.rotation()) {
            (Record::Header(h), Some(_)) => {
                let h = self.segment_header(h, self.seq, h.boot_offset_ns);
                TraceWriter::encode(&Record::Header(h), &mut line);
            }
            _ => TraceWriter::encode(rec, &mut line),
        }
        let mut note = None;
        if let (Some(engine), Some(w)) = (engine, &self.writer) {
            if self.since_start > 0 && self.over_bound(w, line.len() as u64) {
                note = self.rotate(engine, "size");
            }
        }
        if note.is_none() {
            note = self.write_line(rec, &line);
        } else if let Some(p) = &mut self.paused {
            // The segment could not end or the next start: this record is not written either.
            p.lost += 1;
            self.stats.records_lost += 1;
        }
        self.line = line;
        note
    }

    /// Whether `n` more bytes would take the segment past where it should end.
    fn over_bound(&self, w: &TraceWriter, n: u64) -> bool {
        let Some(r) = self.rotation() else {
            return false;
        };
        // Progress first: a segment holds at least a quarter of its bound after its start,
        // however much the start (the engine's state) takes. Without this a state larger than
        // the bound left ended every segment at its first record, each starting with the
        // state again, for ever (a start that large is warned about: raise --segment-size).
        let size = w.size_bound();
        if size.saturating_sub(self.start_bytes) < r.segment_bytes / 4 {
            return false;
        }
        // A resync cannot be split: end early enough for the largest seen.
        let end_at = r
            .segment_bytes
            .saturating_sub(self.largest_group)
            .max(r.segment_bytes / 2);
        size + w.growth_bound(n) > end_at
    }

    fn write_line(&mut self, rec: &Record, line: &[u8]) -> Option<RecordingRecord> {
        let w = self.writer.as_mut()?;
        if matches!(rec, Record::ResyncStart(_)) {
            self.group_from = Some(w.size_bound());
        }
        if let Err(e) = w.write_line(line) {
            return self.pause(&e);
        }
        match rec {
            Record::ResyncEnd(_) => {
                let now = w.size_bound();
                if let Some(from) = self.group_from.take() {
                    self.largest_group = self.largest_group.max(now.saturating_sub(from));
                }
                self.since_start += 1;
            }
            Record::SnapshotEnd {} | Record::StateEnd {} => {
                self.group_from = None;
                self.start_bytes = w.size_bound();
                self.warn_if_start_is_large();
            }
            _ => self.since_start += 1,
        }
        None
    }

    /// Once per run: a state this large leaves little room for events in each segment.
    fn warn_if_start_is_large(&mut self) {
        if let Some(bound) = self.rotation().map(|r| r.segment_bytes) {
            if self.start_bytes > bound / 2 && !self.warned_start {
                self.warned_start = true;
                tracing::warn!(
                    "a segment's start (the engine's state) takes {} bytes, more than half of \
                     --segment-size {}: raise it",
                    self.start_bytes,
                    bound
                );
            }
        }
    }

    /// Writing failed: the file is left as it is (a prefix of the trace, as a crash leaves),
    /// and records are counted, not written, until a new segment can be written.
    fn pause(&mut self, e: &anyhow::Error) -> Option<RecordingRecord> {
        let w = self.writer.take()?;
        let file = PathBuf::from(w.path());
        w.abandon();
        self.pause_at(&file, e)
    }

    /// Ends the segment (`segment_end`) and starts the next with the engine's state.
    fn rotate(&mut self, engine: &Engine, why: &str) -> Option<RecordingRecord> {
        let Target::Dir { dir, .. } = &self.target else {
            return None;
        };
        let next = segment_name(self.recording_started_unix_ns, self.seq + 1);
        let next_path = dir.join(&next);
        let w = self.writer.take()?;
        let path = PathBuf::from(w.path());
        let ended = self.close(w, next, &path);
        if let Err(e) = ended {
            // What was written stays; the next segment starts from the state all the same.
            self.writer = None;
            return self.pause_at(&path, &e);
        }
        tracing::debug!("trace segment {} ended ({why})", path.display());
        match self.start_segment(&next_path, engine) {
            Ok(w) => {
                self.writer = Some(w);
                None
            }
            Err(e) => self.pause_at(&next_path, &e),
        }
    }

    fn close(&mut self, mut w: TraceWriter, next: String, path: &Path) -> Result<()> {
        w.write(&Record::SegmentEnd(SegmentEnd { next }))?;
        w.finish()?;
        let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        self.closed.push_back(Closed {
            path: path.to_path_buf(),
            bytes,
            ended: SystemTime::now(),
        });
        Ok(())
    }

    fn pause_at(&mut self, file: &Path, e: &anyhow::Error) -> Option<RecordingRecord> {
        self.writer = None;
        let error = error_text(e);
        tracing::warn!(
            "recording paused: {error}; tracing and the event stream go on{}",
            if self.rotation().is_some() {
                "; trying a new segment every second"
            } else {
                " (a single trace file cannot resume: record into a directory for that)"
            }
        );
        self.stats.pauses += 1;
        self.stats.paused = true;
        self.stats.last_error = Some(error.clone());
        self.paused = Some(Paused {
            last_try: Instant::now(),
            lost: 0,
        });
        Some(RecordingRecord {
            ts_ns: clock::boot_now_ns(),
            state: RecordingState::Paused,
            file: file.display().to_string(),
            error: Some(error),
            records_lost: 0,
        })
    }

    /// A new segment at `path`: the header, the engine's state, `state_end`, flushed. On an
    /// error the file is removed.
    fn start_segment(&mut self, path: &Path, engine: &Engine) -> Result<TraceWriter> {
        let header = match &self.header {
            Some(h) => self.segment_header(h, self.seq + 1, engine.clock().offset_ns),
            None => anyhow::bail!("no header to start a segment with"),
        };
        let mut w = TraceWriter::create_new(path, true)
            .map_err(|e| anyhow::anyhow!("{}: cannot create: {e}", path.display()))?;
        let r = (|| -> Result<()> {
            w.write(&Record::Header(header))?;
            engine.dump_state(|s| w.write(&Record::State(s)))?;
            w.write(&Record::StateEnd {})?;
            w.flush_now()
        })();
        if let Err(e) = r {
            w.abandon();
            let _ = std::fs::remove_file(path);
            return Err(e);
        }
        self.seq += 1;
        self.stats.segments += 1;
        self.opened = Instant::now();
        self.since_start = 0;
        self.start_bytes = w.size_bound();
        self.warn_if_start_is_large();
        self.retain();
        Ok(w)
    }

    /// Every tick of the live loop (between records; `engine` at a boundary): the periodic
    /// flush, a segment's end by time, retention by age, and, while paused, a new try.
    /// Returns a `recording` record: paused (to show only) or resumed (to record and show).
    pub fn tick(&mut self, engine: Option<&Engine>) -> Option<RecordingRecord> {
        if let Some(w) = &mut self.writer {
            if let Err(e) = w.flush() {
                return self.pause(&e);
            }
        }
        // Called after every drain of the ring buffer too: the rest at most every 100 ms.
        if self.last_tick.elapsed() < TICK_EVERY {
            return None;
        }
        self.last_tick = Instant::now();
        let rotation = self.rotation()?.clone();
        let engine = engine?;
        if self.writer.is_some() {
            if self.opened.elapsed() >= rotation.segment_age {
                if let Some(n) = self.rotate(engine, "time") {
                    return Some(n);
                }
            }
            self.retain();
            return None;
        }
        let due = self
            .paused
            .as_ref()
            .is_some_and(|p| p.last_try.elapsed() >= RETRY_EVERY);
        if !due {
            return None;
        }
        self.retain();
        let Target::Dir { dir, .. } = &self.target else {
            return None;
        };
        let path = dir.join(segment_name(self.recording_started_unix_ns, self.seq + 1));
        match self.start_segment(&path, engine) {
            Ok(w) => {
                let lost = self.paused.take().map_or(0, |p| p.lost);
                tracing::info!(
                    "recording resumed in {} ({lost} records were not written)",
                    path.display()
                );
                self.writer = Some(w);
                self.stats.paused = false;
                Some(RecordingRecord {
                    ts_ns: clock::boot_now_ns(),
                    state: RecordingState::Resumed,
                    file: path.display().to_string(),
                    error: None,
                    records_lost: lost,
                })
            }
            Err(e) => {
                if let Some(p) = &mut self.paused {
                    p.last_try = Instant::now();
                }
                tracing::debug!("recording still paused: {e:#}");
                None
            }
        }
    }

    /// Removes the oldest segments beyond the directory's bounds: older than the age, or
    /// while the ended ones and the bound of the one being written take more than the size.
    fn retain(&mut self) {
        let Some(r) = self.rotation().cloned() else {
            return;
        };
        let current = self.writer.as_ref().map_or(0, |w| w.size_bound());
        let reserve = r.segment_bytes.max(current);
        let now = SystemTime::now();
        loop {
            let total: u64 = self.closed.iter().map(|c| c.bytes).sum();
            let Some(oldest) = self.closed.front() else {
                self.stats.dir_bytes = current;
                return;
            };
            let too_old = r
                .retain_age
                .is_some_and(|age| now.duration_since(oldest.ended).is_ok_and(|ago| ago > age));
            let too_big = r.retain_bytes.is_some_and(|max| total + reserve > max);
            if !(too_old || too_big) {
                self.stats.dir_bytes = total + current;
                return;
            }
            if let Some(c) = self.closed.pop_front() {
                match std::fs::remove_file(&c.path) {
                    Ok(()) => {
                        self.stats.removed_segments += 1;
                        tracing::debug!("retention removed {}", c.path.display());
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        tracing::warn!("retention could not remove {}: {e}", c.path.display())
                    }
                }
            }
        }
    }

    /// Flushes now (after the start-up snapshot).
    pub fn flush_now(&mut self) -> Option<RecordingRecord> {
        let w = self.writer.as_mut()?;
        match w.flush_now() {
            Ok(()) => None,
            Err(e) => self.pause(&e),
        }
    }

    /// Closes the file (after the `end` record); what the recorder did.
    pub fn finish(mut self) -> RecorderStats {
        if let Some(w) = self.writer.take() {
            let path = w.path().to_string();
            if let Err(e) = w.finish() {
                self.stats.last_error = Some(error_text(&e));
                tracing::warn!("closing the trace {path}: {e:#}");
            }
        }
        self.stats
    }
}
