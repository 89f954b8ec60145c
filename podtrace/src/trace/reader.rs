//! Reading trace files with exact errors: every problem is `FILE:LINE: reason`.
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::fast;
use super::{Record, READS_VERSIONS};
use crate::kernel_event::{ExecPayload, KernelEvent};

/// Longest line accepted; longer ones are an error, not an allocation.
pub const MAX_LINE: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
#[error("{file}:{line}: {reason}")]
pub struct TraceError {
    pub file: String,
    pub line: u64,
    pub reason: String,
}

/// Where in the file's structure the reader is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Start,
    /// Right after the header: a snapshot or a segment's state comes next.
    Head,
    Snapshot,
    State,
    Events,
    Resync,
    Ended,
}

pub struct TraceReader {
    input: Box<dyn BufRead>,
    file: String,
    line: u64,
    phase: Phase,
    lenient: bool,
    /// Records skipped in lenient mode.
    pub skipped: u64,
    /// Set when the file ended without its `end` record (a crash or a kill).
    pub cut_short: Option<String>,
    /// The input itself failed (not a bad record): nothing after it can be read.
    corrupt: bool,
    buf: Vec<u8>,
    /// Allocations kept for the next event records (see `next_record_into`).
    spare_event: Option<KernelEvent>,
    spare_exec: Option<ExecPayload>,
}

/// Where `read_line` left a line.
enum Line {
    /// The first `n` bytes of the input's buffer, its newline right after (not consumed).
    InInput(usize),
    /// In `buf`; false: the input ended without the line's newline.
    Copied(bool),
}

/// Parses one line into `rec`; the error is the reason, without FILE:LINE. Event and reap
/// lines in the writer's form take the fast path (`fast`), reusing `rec`'s strings and the
/// spare allocations; everything else, and every error, is serde_json's.
fn parse_line(
    line: &[u8],
    rec: &mut Record,
    spare_event: &mut Option<KernelEvent>,
    spare_exec: &mut Option<ExecPayload>,
) -> Result<(), String> {
    if fast::is_event(line) {
        if let Record::Event(ev) = rec {
            if fast::event(line, ev, spare_exec) {
                return Ok(());
            }
        } else {
            let mut ev = spare_event.take().unwrap_or_else(fast::blank_event);
            if fast::event(line, &mut ev, spare_exec) {
                stash(spare_event, std::mem::replace(rec, Record::Event(ev)));
                return Ok(());
            }
            *spare_event = Some(ev);
        }
    } else if fast::is_reap(line) {
        if let Some(r) = fast::reap(line) {
            stash(spare_event, std::mem::replace(rec, Record::Reap(r)));
            return Ok(());
        }
    }
    // What the fast path takes is UTF-8: a line that is not was not taken, and is reported
    // here as before.
    let text =
        std::str::from_utf8(line).map_err(|e| format!("not UTF-8 (byte {})", e.valid_up_to()))?;
    if text.trim().is_empty() {
        return Err("empty line".into());
    }
    let r = serde_json::from_str::<Record>(text).map_err(|e| format!("invalid record: {e}"))?;
    stash(spare_event, std::mem::replace(rec, r));
    Ok(())
}

/// Keeps what a replaced record had allocated for the next event.
fn stash(spare: &mut Option<KernelEvent>, old: Record) {
    if let Record::Event(e) = old {
        *spare = Some(e);
    }
}

impl TraceReader {
    pub fn open(path: &Path, lenient: bool) -> Result<Self, TraceError> {
        let file = path.display().to_string();
        let err = |reason: String| TraceError {
            file: file.clone(),
            line: 0,
            reason,
        };
        let mut f = BufReader::with_capacity(
            1 << 16,
            File::open(path).map_err(|e| err(format!("cannot open: {e}")))?,
        );
        let magic = f.fill_buf().map_err(|e| err(format!("cannot read: {e}")))?;
        let zstd = magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
        let input: Box<dyn BufRead> = if zstd {
            let d = zstd::stream::read::Decoder::with_buffer(f)
                .map_err(|e| err(format!("not a zstd stream: {e}")))?;
            Box::new(BufReader::with_capacity(1 << 16, d))
        } else {
            Box::new(f)
        };
        Ok(Self::from_reader(input, file, lenient))
    }

    pub fn from_reader(input: Box<dyn BufRead>, file: String, lenient: bool) -> Self {
        Self {
            input,
            file,
            line: 0,
            phase: Phase::Start,
            lenient,
            skipped: 0,
            cut_short: None,
            corrupt: false,
            buf: Vec::with_capacity(4096),
            spare_event: None,
            spare_exec: None,
        }
    }

    fn error(&self, reason: impl Into<String>) -> TraceError {
        TraceError {
            file: self.file.clone(),
            line: self.line,
            reason: reason.into(),
        }
    }

    /// Finds the next raw line: where it is in the input's buffer when it is all there (the
    /// common case: parsed where it is), else copied into `self.buf`. Ok(None) at the end of
    /// the input.
    fn read_line(&mut self) -> Result<Option<Line>, TraceError> {
        self.buf.clear();
        loop {
            let chunk = match self.input.fill_buf() {
                Ok(c) => c,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    // A zstd stream cut mid-frame (a crash while recording): like a file cut
                    // short.
                    self.line += 1;
                    self.cut_short = Some(format!(
                        "{}:{}: input ends early: {e}",
                        self.file, self.line
                    ));
                    return Ok(None);
                }
                Err(e) => {
                    // Corrupt compressed data in the middle of the file is not a crash.
                    self.line += 1;
                    let e = self.error(format!("cannot read (corrupt input?): {e}"));
                    self.corrupt = true;
                    return Err(e);
                }
            };
            if chunk.is_empty() {
                return Ok(if self.buf.is_empty() {
                    None
                } else {
                    Some(Line::Copied(false))
                });
            }
            let (take, done) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (i + 1, true),
                None => (chunk.len(), false),
            };
            if self.buf.len() + take > MAX_LINE + 1 {
                self.line += 1;
                let e = self.error(format!("line longer than {MAX_LINE} bytes"));
                // Skip the rest of the line so lenient mode can go on.
                self.skip_rest_of_line();
                return Err(e);
            }
            if done && self.buf.is_empty() {
                return Ok(Some(Line::InInput(take - 1)));
            }
            self.buf.extend_from_slice(&chunk[..take]);
            self.input.consume(take);
            if done {
                self.buf.pop();
                return Ok(Some(Line::Copied(true)));
            }
        }
    }

    fn skip_rest_of_line(&mut self) {
        loop {
            let Ok(chunk) = self.input.fill_buf() else {
                return;
            };
            if chunk.is_empty() {
                return;
            }
            match memchr::memchr(b'\n', chunk) {
                Some(i) => {
                    self.input.consume(i + 1);
                    return;
                }
                None => {
                    let n = chunk.len();
                    self.input.consume(n);
                }
            }
        }
    }

    /// Checks the record fits where it stands: header, then (proc|cgroup|cri|clock)*
    /// snapshot_end or (a segment's start) state* state_end, then events and facts, with
    /// `resync_start (proc|cgroup)* resync_end` groups among them, and `end` or
    /// `segment_end`.
    fn check_order(&mut self, rec: &Record) -> Result<(), TraceError> {
        use Phase::*;
        let next = match (self.phase, rec) {
            (Start, Record::Header(h)) => {
                if !READS_VERSIONS.contains(&h.format) {
                    return Err(self.error(format!(
                        "unsupported trace format version {} (this podtrace reads {READS_VERSIONS:?})",
                        h.format
                    )));
                }
                Head
            }
            (Start, _) => {
                return Err(self.error("missing header: a trace starts with a header record"))
            }
            (_, Record::Header(_)) => return Err(self.error("second header record")),
            (Ended, _) => return Err(self.error("record after the end record")),
            (Head, Record::State(_)) | (State, Record::State(_)) => State,
            (State, Record::StateEnd {}) => Events,
            (State, _) => {
                return Err(self.error("out of order: only state records before state_end"))
            }
            (
                Head | Snapshot,
                Record::Proc(_) | Record::Cgroup(_) | Record::Cri(_) | Record::Clock(_),
            ) => Snapshot,
            (Head | Snapshot, Record::SnapshotEnd {}) => Events,
            (Snapshot, Record::State(_)) => {
                return Err(self.error("out of order: state record in a start-up snapshot"))
            }
            (Head | Snapshot, _) => {
                return Err(self.error("out of order: event before snapshot_end"))
            }
            (Resync, Record::Proc(_) | Record::Cgroup(_)) => Resync,
            (Resync, Record::ResyncEnd(_)) => Events,
            (Resync, _) => {
                return Err(self.error("out of order: only proc and cgroup records in a resync"))
            }
            (
                Events,
                Record::Event(_)
                | Record::Reap(_)
                | Record::Cgroup(_)
                | Record::Cri(_)
                | Record::CriUnknown(_)
                | Record::Clock(_)
                | Record::Tick(_)
                | Record::Lost(_)
                | Record::Malformed(_)
                | Record::Recording(_),
            ) => Events,
            (Events, Record::ResyncStart(_)) => Resync,
            (Events, Record::End(_) | Record::SegmentEnd(_)) => Ended,
            (Events, Record::ResyncEnd(_)) => {
                return Err(self.error("out of order: resync_end without resync_start"))
            }
            (Events, Record::State(_) | Record::StateEnd {}) => {
                return Err(self.error("out of order: state record after the start"))
            }
            (Events, _) => {
                return Err(self.error("out of order: snapshot record after snapshot_end"))
            }
        };
        self.phase = next;
        Ok(())
    }

    /// The next record, or None at the end (see `next_record_into`).
    pub fn next_record(&mut self) -> Result<Option<(u64, Record)>, TraceError> {
        let mut rec = Record::SnapshotEnd {};
        Ok(self.next_record_into(&mut rec)?.map(|line| (line, rec)))
    }

    /// Reads the next record into `rec` and returns its line number, or None at the end
    /// (`rec` is then unspecified). Lenient mode skips (and counts) bad records but not a
    /// missing header or an unknown version. Reusing one `rec` for a whole trace reuses the
    /// allocations of its event records.
    pub fn next_record_into(&mut self, rec: &mut Record) -> Result<Option<u64>, TraceError> {
        loop {
            let line = match self.read_line() {
                Ok(None) => {
                    if self.phase != Phase::Ended && self.cut_short.is_none() {
                        if self.phase == Phase::Start {
                            return Err(self.error("empty trace: no header"));
                        }
                        self.cut_short = Some(format!(
                            "{}:{}: trace ends without its end record (recording was interrupted)",
                            self.file, self.line
                        ));
                    }
                    return Ok(None);
                }
                Ok(Some(l)) => l,
                Err(e) if self.lenient && self.phase != Phase::Start && !self.corrupt => {
                    self.skipped += 1;
                    tracing::warn!("skipped: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.line += 1;
            let (parsed, complete) = match line {
                Line::InInput(n) => {
                    let parsed = match self.input.fill_buf() {
                        // The buffer `read_line` looked at (no read happens in between).
                        Ok(chunk) if chunk.len() > n => Some(parse_line(
                            &chunk[..n],
                            rec,
                            &mut self.spare_event,
                            &mut self.spare_exec,
                        )),
                        _ => None,
                    };
                    if parsed.is_some() {
                        self.input.consume(n + 1);
                    }
                    let parsed = parsed
                        .unwrap_or_else(|| Err("cannot read: the input changed under us".into()));
                    (parsed, true)
                }
                Line::Copied(complete) => (
                    parse_line(&self.buf, rec, &mut self.spare_event, &mut self.spare_exec),
                    complete,
                ),
            };
            let parsed = parsed.map_err(|reason| self.error(reason));
            if !complete {
                // The last line has no newline: cut short by a crash if it does not parse.
                if parsed.is_err() {
                    self.cut_short = Some(format!(
                        "{}:{}: last line is incomplete (recording was interrupted); replayed up to line {}",
                        self.file,
                        self.line,
                        self.line - 1
                    ));
                    return Ok(None);
                }
            }
            match parsed.and_then(|()| self.check_order(rec)) {
                Ok(()) => {}
                Err(e) if self.lenient && self.phase != Phase::Start => {
                    self.skipped += 1;
                    tracing::warn!("skipped: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            return Ok(Some(self.line));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use proptest::prelude::*;

    use super::*;
    use crate::kernel_event::ReapEvent;
    use crate::trace::fast::tests::kernel_event;
    use crate::trace::{synth, CgroupFact, LostRecord};

    /// A record of the event part of a trace.
    fn event_part() -> impl Strategy<Value = Record> {
        prop_oneof![
            6 => kernel_event().prop_map(Record::Event),
            2 => any::<(u64, u32, u64)>().prop_map(|(ts_ns, pid, start_ns)| Record::Reap(ReapEvent { ts_ns, pid, start_ns })),
            1 => (any::<u64>(), proptest::option::of("[a-z/]{0,12}")).prop_map(|(id, path)| Record::Cgroup(CgroupFact { hierarchy: crate::cgroups::Hierarchy::V2, id, path })),
            1 => any::<(u64, u64)>().prop_map(|(ts_ns, count)| Record::Lost(LostRecord { ts_ns, count, kinds: Default::default() })),
        ]
    }

    /// The same records written differently: white space, escapes that need not be, keys
    /// in another order (so that some lines go to serde_json).
    fn rewrite(line: &str, how: u8) -> String {
        match how % 8 {
            0..=4 => line.to_string(),
            5 => line.replacen(':', ": ", 2),
            6 => line.replace("\"pid\"", "\"p\\u0069d\""),
            _ => match serde_json::from_str::<serde_json::Value>(line) {
                // serde_json's map is sorted: the keys come out in another order.
                Ok(v) => v.to_string(),
                Err(_) => line.to_string(),
            },
        }
    }

    fn trace_lines(body: &[Record], hows: &[u8]) -> Vec<String> {
        let mut recs = synth::trace(3, 1, 5);
        let end = recs.pop();
        recs.extend_from_slice(body);
        recs.extend(end);
        recs.iter()
            .enumerate()
            .map(|(i, r)| {
                let line = serde_json::to_string(r).expect("encodes");
                rewrite(&line, hows.get(i).copied().unwrap_or(0))
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

        /// Reading into one reused record gives, line for line, what serde_json reads.
        #[test]
        fn reused_record_reads_what_serde_json_reads(body in proptest::collection::vec(event_part(), 0..30), hows in proptest::collection::vec(any::<u8>(), 60), chunk in prop_oneof![Just(1usize << 16), 1usize..400]) {
            let lines = trace_lines(&body, &hows);
            let text = lines.join("\n") + "\n";
            // Small buffers: lines across the end of the input's buffer are copied, the others
            // parsed where they are.
            let input = std::io::BufReader::with_capacity(chunk, Cursor::new(text.into_bytes()));
            let mut r = TraceReader::from_reader(Box::new(input), "t".into(), false);
            let mut rec = Record::SnapshotEnd {};
            for (i, line) in lines.iter().enumerate() {
                let want: Record = serde_json::from_str(line).expect("valid line");
                let n = r.next_record_into(&mut rec).expect("valid trace");
                prop_assert_eq!(n, Some(i as u64 + 1));
                prop_assert_eq!(&rec, &want, "line {}: {}", i + 1, line);
            }
            prop_assert_eq!(r.next_record_into(&mut rec).expect("end"), None);
            prop_assert!(r.cut_short.is_none());
        }
    }
}
