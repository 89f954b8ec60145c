//! Writing one trace file: a single trace (`--record FILE`, created or truncated) or a
//! segment (`--record DIR`, a new file), 0600 (they hold argv), never through a symlink
//! (see [`crate::outfile`]), flushed at least every second. Knows how large its file is, or
//! at most will be once closed (zstd holds some input back until a flush), so that segments
//! keep within their size.
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::Record;

pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Counts the bytes written through it.
pub struct Counting<W> {
    inner: W,
    pub bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

enum Sink {
    Plain(BufWriter<std::fs::File>),
    Zstd(zstd::stream::write::Encoder<'static, Counting<BufWriter<std::fs::File>>>),
}

pub struct TraceWriter {
    sink: Sink,
    path: String,
    last_flush: Instant,
    pub records: u64,
    /// Bytes handed over: to the file (plain), to the compressor (zstd).
    written: u64,
    /// zstd: bytes handed to the compressor since its last flush (it may hold them back).
    unflushed: u64,
    /// The line being written (reused).
    line: Vec<u8>,
}

/// The most zstd can make of `n` bytes of input, with its block headers and the frame's end
/// (ZSTD_COMPRESSBOUND, rounded up).
fn zstd_bound(n: u64) -> u64 {
    n + n / 256 + 128
}

impl TraceWriter {
    /// A single trace at `path` (created or truncated; zstd when it ends in `.zst`).
    pub fn create(path: &Path) -> Result<Self> {
        let file = crate::outfile::open_output_file(path, false).context("the trace file")?;
        let zstd = path.extension().and_then(|e| e.to_str()) == Some("zst");
        Self::new(file, path, zstd)
    }

    /// A new file at `path` (it must not exist), zstd-compressed with `zstd`.
    pub fn create_new(path: &Path, zstd: bool) -> std::io::Result<Self> {
        let file = crate::outfile::create_new(path)?;
        Self::new(file, path, zstd).map_err(std::io::Error::other)
    }

    fn new(file: std::fs::File, path: &Path, zstd: bool) -> Result<Self> {
        let buf = BufWriter::with_capacity(1 << 16, file);
        let sink = if zstd {
            Sink::Zstd(
                zstd::stream::write::Encoder::new(
                    Counting {
                        inner: buf,
                        bytes: 0,
                    },
                    3,
                )
                .context("starting zstd")?,
            )
        } else {
            Sink::Plain(buf)
        };
        Ok(Self {
            sink,
            path: path.display().to_string(),
            last_flush: Instant::now(),
            records: 0,
            written: 0,
            unflushed: 0,
            line: Vec::with_capacity(4096),
        })
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// At most how large the file will be once closed, were nothing more written.
    pub fn size_bound(&self) -> u64 {
        match &self.sink {
            Sink::Plain(_) => self.written,
            Sink::Zstd(e) => e.get_ref().bytes + zstd_bound(self.unflushed),
        }
    }

    /// How much `n` more bytes of records can add to [`Self::size_bound`].
    pub fn growth_bound(&self, n: u64) -> u64 {
        match &self.sink {
            Sink::Plain(_) => n,
            Sink::Zstd(_) => zstd_bound(self.unflushed + n) - zstd_bound(self.unflushed),
        }
    }

    /// `rec` as the line it is written as (with its newline).
    pub fn encode(rec: &Record, line: &mut Vec<u8>) {
        line.clear();
        // Writing to a Vec cannot fail, and every record type serializes.
        let _ = serde_json::to_writer(&mut *line, rec);
        line.push(b'\n');
    }

    fn out(&mut self) -> &mut dyn Write {
        match &mut self.sink {
            Sink::Plain(w) => w,
            Sink::Zstd(w) => w,
        }
    }

    pub fn write(&mut self, rec: &Record) -> Result<()> {
        let mut line = std::mem::take(&mut self.line);
        Self::encode(rec, &mut line);
        let r = self.write_line(&line);
        self.line = line;
        r
    }

    /// Writes one encoded record (with its newline).
    pub fn write_line(&mut self, line: &[u8]) -> Result<()> {
        let path = self.path.clone();
        self.out()
            .write_all(line)
            .with_context(|| format!("writing trace {path}"))?;
        self.written += line.len() as u64;
        self.unflushed += line.len() as u64;
        self.records += 1;
        self.flush()
    }

    /// Flushes when the last flush is `FLUSH_EVERY` ago (so a crash loses at most that much,
    /// and zstd still gets blocks worth compressing); call it from a timer too.
    pub fn flush(&mut self) -> Result<()> {
        if self.last_flush.elapsed() >= FLUSH_EVERY {
            self.flush_now()?;
        }
        Ok(())
    }

    /// Pushes everything written so far to the file (ending the current zstd block), so a
    /// crash after this loses nothing before it.
    pub fn flush_now(&mut self) -> Result<()> {
        self.last_flush = Instant::now();
        let path = self.path.clone();
        match &mut self.sink {
            Sink::Plain(w) => w.flush(),
            Sink::Zstd(w) => w.flush(),
        }
        .with_context(|| format!("flushing trace {path}"))?;
        self.unflushed = 0;
        Ok(())
    }

    /// Ends the zstd frame and flushes.
    pub fn finish(self) -> Result<()> {
        let path = self.path.clone();
        match self.sink {
            Sink::Plain(mut w) => w.flush(),
            Sink::Zstd(w) => w.finish().and_then(|mut b| b.flush()),
        }
        .with_context(|| format!("closing trace {path}"))
    }

    /// Drops the file after a write failed: what reached it stays (a prefix of the trace, as
    /// a crash would leave); what the buffers still hold may follow it, nothing else.
    pub fn abandon(self) {
        drop(self);
    }
}
