//! One pipeline for `run`, `replay` and `tree`: records from a source (the kernel's ring
//! buffer with the facts resolved for it, or a trace file) go to the recorder, then through
//! the engine; the events it makes go through the filter to the sinks (NDJSON, an export,
//! a test's closure).
//!
//! Whatever the source, the engine sees the same records in the same order, which is why a
//! replay prints what `run` printed, byte for byte.
use anyhow::Result;

use crate::engine::{Engine, Request};
use crate::filter::EventFilter;
use crate::ndjson::NdjsonWriter;
use crate::output::Event;
use crate::trace::writer::TraceWriter;
use crate::trace::Record;

/// Where kept events go.
pub trait Sink {
    fn event(&mut self, ev: &Event) -> Result<()>;
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
}

impl Sink for NdjsonWriter {
    fn event(&mut self, ev: &Event) -> Result<()> {
        self.write(ev)
    }
    fn flush(&mut self) -> Result<()> {
        NdjsonWriter::flush(self)
    }
}

/// A closure as a sink (tests, exports).
pub struct FnSink<F>(pub F);

impl<F: FnMut(&Event) -> Result<()>> Sink for FnSink<F> {
    fn event(&mut self, ev: &Event) -> Result<()> {
        (self.0)(ev)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub records: u64,
    /// Kernel events (event records).
    pub events: u64,
    /// Events handed to the sinks.
    pub printed: u64,
}

pub struct Pipeline<'a> {
    engine: Option<Engine>,
    filter: EventFilter,
    /// The filter keeps everything (no need to ask it).
    keep_all: bool,
    recorder: Option<TraceWriter>,
    sinks: Vec<Box<dyn Sink + 'a>>,
    buf: Vec<Event>,
    /// Keep the engine's requests for the caller (live, with a CRI); dropped otherwise.
    keep_requests: bool,
    requests: Vec<Request>,
    pub counts: Counts,
}

impl<'a> Pipeline<'a> {
    pub fn new(filter: EventFilter) -> Self {
        Self {
            engine: None,
            keep_all: filter.is_noop(),
            filter,
            recorder: None,
            sinks: Vec::new(),
            buf: Vec::new(),
            keep_requests: false,
            requests: Vec::new(),
            counts: Counts::default(),
        }
    }

    pub fn record_to(mut self, writer: TraceWriter) -> Self {
        self.recorder = Some(writer);
        self
    }

    pub fn sink(mut self, sink: impl Sink + 'a) -> Self {
        self.sinks.push(Box::new(sink));
        self
    }

    pub fn keep_requests(mut self) -> Self {
        self.keep_requests = true;
        self
    }

    /// The engine, once the header went through.
    pub fn engine(&self) -> Option<&Engine> {
        self.engine.as_ref()
    }

    pub fn into_engine(self) -> Option<Engine> {
        self.engine
    }

    /// Records `rec` (when recording), applies it, and hands the kept events to the sinks.
    pub fn push(&mut self, rec: &Record) -> Result<()> {
        if let Some(t) = &mut self.recorder {
            t.write(rec)?;
        }
        self.counts.records += 1;
        if let Record::Header(h) = rec {
            self.engine = Some(Engine::new(h));
        }
        let Some(engine) = self.engine.as_mut() else {
            return Ok(());
        };
        if let Record::Event(_) = rec {
            self.counts.events += 1;
        }
        engine.apply(rec, &mut self.buf);
        let requests = engine.take_requests();
        if self.keep_requests {
            self.requests.extend(requests);
        }
        // By reference, then cleared: an event is not moved out to be looked at.
        let r = self.hand_out();
        self.buf.clear();
        r
    }

    fn hand_out(&mut self) -> Result<()> {
        for ev in &self.buf {
            if self.keep_all || self.filter.keep(ev) {
                self.counts.printed += 1;
                for s in &mut self.sinks {
                    s.event(ev)?;
                }
            }
        }
        Ok(())
    }

    /// What the engine asked for since the last call (with `keep_requests`).
    pub fn take_requests(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.requests)
    }

    /// Flushes the sinks, and the recorder when its period is due.
    pub fn flush(&mut self) -> Result<()> {
        for s in &mut self.sinks {
            s.flush()?;
        }
        if let Some(t) = &mut self.recorder {
            t.flush()?;
        }
        Ok(())
    }

    /// Pushes everything recorded so far to the file (the snapshot, at start).
    pub fn flush_recorder_now(&mut self) -> Result<()> {
        match &mut self.recorder {
            Some(t) => t.flush_now(),
            None => Ok(()),
        }
    }

    /// Flushes the sinks and closes the recorder.
    pub fn finish(mut self) -> Result<Option<Engine>> {
        for s in &mut self.sinks {
            s.flush()?;
        }
        if let Some(t) = self.recorder.take() {
            t.finish()?;
        }
        Ok(self.engine)
    }
}
