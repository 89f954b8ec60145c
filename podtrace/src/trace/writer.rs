//! Writing trace files: created (or truncated) 0600 (they hold argv), never through a
//! symlink (see [`crate::outfile`]), flushed at least every second.
use std::io::{BufWriter, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::Record;

pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

enum Sink {
    Plain(BufWriter<std::fs::File>),
    Zstd(zstd::stream::write::Encoder<'static, BufWriter<std::fs::File>>),
}

pub struct TraceWriter {
    sink: Sink,
    path: String,
    last_flush: Instant,
    pub records: u64,
}

impl TraceWriter {
    pub fn create(path: &Path) -> Result<Self> {
        let file = crate::outfile::open_output_file(path, false).context("the trace file")?;
        let buf = BufWriter::with_capacity(1 << 16, file);
        let sink = if path.extension().and_then(|e| e.to_str()) == Some("zst") {
            Sink::Zstd(zstd::stream::write::Encoder::new(buf, 3).context("starting zstd")?)
        } else {
            Sink::Plain(buf)
        };
        Ok(Self {
            sink,
            path: path.display().to_string(),
            last_flush: Instant::now(),
            records: 0,
        })
    }

    fn out(&mut self) -> &mut dyn Write {
        match &mut self.sink {
            Sink::Plain(w) => w,
            Sink::Zstd(w) => w,
        }
    }

    pub fn write(&mut self, rec: &Record) -> Result<()> {
        let path = self.path.clone();
        let out = self.out();
        serde_json::to_writer(&mut *out, rec).with_context(|| format!("writing trace {path}"))?;
        out.write_all(b"\n")
            .with_context(|| format!("writing trace {path}"))?;
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
        .with_context(|| format!("flushing trace {path}"))
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
}
