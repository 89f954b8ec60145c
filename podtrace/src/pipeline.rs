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
use crate::ndjson::{NdjsonWriter, OutputStats};
use crate::output::Event;
use crate::trace::segments::{Recorder, RecorderStats};
use crate::trace::Record;

/// Where kept events go.
pub trait Sink {
    fn event(&mut self, ev: &Event) -> Result<()>;
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// SIGHUP: a file sink opens its path again (log rotation).
    fn reopen(&mut self) -> Result<()> {
        Ok(())
    }
    /// What a file sink could not write.
    fn output_stats(&self) -> Option<OutputStats> {
        None
    }
}

impl Sink for NdjsonWriter {
    fn event(&mut self, ev: &Event) -> Result<()> {
        self.write(ev)
    }
    fn flush(&mut self) -> Result<()> {
        NdjsonWriter::flush(self)
    }
    fn reopen(&mut self) -> Result<()> {
        NdjsonWriter::reopen(self)
    }
    fn output_stats(&self) -> Option<OutputStats> {
        (!self.stats.path.is_empty()).then(|| self.stats.clone())
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
    recorder: Option<Recorder>,
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

    pub fn record_to(mut self, recorder: Recorder) -> Self {
        self.recorder = Some(recorder);
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
    /// A recorder that cannot write pauses (its `recording` line goes to the sinks, not to
    /// the trace); nothing else stops for it.
    pub fn push(&mut self, rec: &Record) -> Result<()> {
        let note = match &mut self.recorder {
            Some(r) => r.write(rec, self.engine.as_ref().filter(|e| e.at_boundary())),
            None => None,
        };
        self.apply(rec)?;
        match note {
            Some(n) => self.apply(&Record::Recording(n)),
            None => Ok(()),
        }
    }

    /// Applies `rec` and hands the kept events to the sinks, without recording it.
    fn apply(&mut self, rec: &Record) -> Result<()> {
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

    /// The recorder's periodic work, from the live loop's tick (between records): its
    /// flush, a segment's end by time, retention, a new try while paused. A resumed
    /// recorder's `recording` record goes into the new segment, and to the sinks.
    pub fn flush(&mut self) -> Result<()> {
        for s in &mut self.sinks {
            s.flush()?;
        }
        let note = match &mut self.recorder {
            Some(r) => r.tick(self.engine.as_ref().filter(|e| e.at_boundary())),
            None => None,
        };
        match note {
            Some(n) if n.state == crate::output::RecordingState::Resumed => {
                self.push(&Record::Recording(n))
            }
            Some(n) => self.apply(&Record::Recording(n)),
            None => Ok(()),
        }
    }

    /// Pushes everything recorded so far to the file (the snapshot, at start).
    pub fn flush_recorder_now(&mut self) -> Result<()> {
        match self.recorder.as_mut().and_then(Recorder::flush_now) {
            Some(n) => self.apply(&Record::Recording(n)),
            None => Ok(()),
        }
    }

    /// SIGHUP: the file sinks open their paths again.
    pub fn reopen_outputs(&mut self) -> Result<()> {
        for s in &mut self.sinks {
            s.reopen()?;
        }
        Ok(())
    }

    /// What the output file could not write so far (None: no output file).
    pub fn output_stats(&self) -> Option<OutputStats> {
        self.sinks.iter().find_map(|s| s.output_stats())
    }

    /// What the recorder did so far (None: not recording).
    pub fn recorder_stats(&self) -> Option<&RecorderStats> {
        self.recorder.as_ref().map(|r| &r.stats)
    }

    /// Flushes the sinks and closes the recorder.
    pub fn finish(self) -> Result<Option<Engine>> {
        self.finish_recording().map(|(e, _)| e)
    }

    /// Flushes the sinks and closes the recorder: the engine, and what the recorder did.
    pub fn finish_recording(mut self) -> Result<(Option<Engine>, Option<RecorderStats>)> {
        for s in &mut self.sinks {
            s.flush()?;
        }
        let stats = self.recorder.take().map(Recorder::finish);
        Ok((self.engine, stats))
    }
}
