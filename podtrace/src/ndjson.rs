//! Buffered NDJSON output: one event per line, flushed when idle and on exit.
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

use crate::output::Event;

pub struct NdjsonWriter {
    out: BufWriter<Box<dyn Write + Send>>,
    what: String,
    pub lines: u64,
}

impl NdjsonWriter {
    pub fn stdout() -> Self {
        Self::new(Box::new(std::io::stdout()), "stdout".into())
    }

    pub fn create(path: &Path) -> Result<Self> {
        let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        Ok(Self::new(Box::new(f), path.display().to_string()))
    }

    fn new(w: Box<dyn Write + Send>, what: String) -> Self {
        Self {
            out: BufWriter::with_capacity(1 << 16, w),
            what,
            lines: 0,
        }
    }

    pub fn write(&mut self, ev: &Event) -> Result<()> {
        serde_json::to_writer(&mut self.out, ev)
            .with_context(|| format!("writing to {}", self.what))?;
        self.out
            .write_all(b"\n")
            .with_context(|| format!("writing to {}", self.what))?;
        self.lines += 1;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<()> {
        self.out
            .flush()
            .with_context(|| format!("flushing {}", self.what))
    }
}
