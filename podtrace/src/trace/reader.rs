//! Reading trace files with exact errors: every problem is `FILE:LINE: reason`.
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use super::{Record, READS_VERSIONS};

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
    Snapshot,
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
        }
    }

    fn error(&self, reason: impl Into<String>) -> TraceError {
        TraceError {
            file: self.file.clone(),
            line: self.line,
            reason: reason.into(),
        }
    }

    /// Reads one raw line into `self.buf`. Ok(false) at end of input; a last line without its
    /// newline is reported through `complete = false`.
    fn read_line(&mut self) -> Result<Option<bool>, TraceError> {
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
                    Some(false)
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
            self.buf.extend_from_slice(&chunk[..take]);
            self.input.consume(take);
            if done {
                self.buf.pop();
                return Ok(Some(true));
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

    /// Checks the record fits where it stands: header, (proc|cgroup|cri|clock)*,
    /// snapshot_end, then events and facts, with `resync_start (proc|cgroup)* resync_end`
    /// groups among them, and `end`.
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
                Snapshot
            }
            (Start, _) => {
                return Err(self.error("missing header: a trace starts with a header record"))
            }
            (_, Record::Header(_)) => return Err(self.error("second header record")),
            (Ended, _) => return Err(self.error("record after the end record")),
            (Snapshot, Record::Proc(_) | Record::Cgroup(_) | Record::Cri(_) | Record::Clock(_)) => {
                Snapshot
            }
            (Snapshot, Record::SnapshotEnd {}) => Events,
            (Snapshot, _) => return Err(self.error("out of order: event before snapshot_end")),
            (Resync, Record::Proc(_) | Record::Cgroup(_)) => Resync,
            (Resync, Record::ResyncEnd {}) => Events,
            (Resync, _) => {
                return Err(self.error("out of order: only proc and cgroup records in a resync"))
            }
            (
                Events,
                Record::Event(_)
                | Record::Reap(_)
                | Record::Cgroup(_)
                | Record::Cri(_)
                | Record::Clock(_)
                | Record::Lost(_)
                | Record::Malformed(_),
            ) => Events,
            (Events, Record::ResyncStart(_)) => Resync,
            (Events, Record::End(_)) => Ended,
            (Events, Record::ResyncEnd {}) => {
                return Err(self.error("out of order: resync_end without resync_start"))
            }
            (Events, _) => {
                return Err(self.error("out of order: snapshot record after snapshot_end"))
            }
        };
        self.phase = next;
        Ok(())
    }

    fn parse(&mut self) -> Result<Record, TraceError> {
        let text = std::str::from_utf8(&self.buf)
            .map_err(|e| self.error(format!("not UTF-8 (byte {})", e.valid_up_to())))?;
        if text.trim().is_empty() {
            return Err(self.error("empty line"));
        }
        serde_json::from_str::<Record>(text).map_err(|e| self.error(format!("invalid record: {e}")))
    }

    /// The next record, or None at the end. Lenient mode skips (and counts) bad records but
    /// not a missing header or an unknown version.
    pub fn next_record(&mut self) -> Result<Option<(u64, Record)>, TraceError> {
        loop {
            let complete = match self.read_line() {
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
                Ok(Some(c)) => c,
                Err(e) if self.lenient && self.phase != Phase::Start && !self.corrupt => {
                    self.skipped += 1;
                    tracing::warn!("skipped: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            self.line += 1;
            let parsed = self.parse();
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
            let rec = match parsed.and_then(|r| self.check_order(&r).map(|()| r)) {
                Ok(r) => r,
                Err(e) if self.lenient && self.phase != Phase::Start => {
                    self.skipped += 1;
                    tracing::warn!("skipped: {e}");
                    continue;
                }
                Err(e) => return Err(e),
            };
            return Ok(Some((self.line, rec)));
        }
    }
}
