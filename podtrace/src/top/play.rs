//! `top --from TRACE`: a recorded trace through the same pipeline and engine as `replay`, at
//! the pace it was recorded (times a speed), from a start time.
//!
//! The start (`--at`, else the end of the start-up snapshot) is reached at once, exactly as
//! `tree --from TRACE --at` reaches it: every record stamped at or before it is applied,
//! wherever it comes in the file, and the facts; the records stamped after it (and a resync
//! that started after it, whole) wait, in file order, and are applied as the playback clock
//! passes their time. So the first picture is `tree --at`'s picture.
use std::collections::VecDeque;
use std::path::Path;
use std::time::Instant;

use anyhow::Result;

use crate::cli::At;
use crate::clock::BootClock;
use crate::engine::Engine;
use crate::error::Failure;
use crate::filter::EventFilter;
use crate::pipeline::Pipeline;
use crate::replay::{record_ts, REORDER_NS};
use crate::trace::reader::TraceReader;
use crate::trace::Record;

/// Playing speeds: from a 64th to 1024 times the recorded pace.
pub const SPEED_MIN: f64 = 1.0 / 64.0;
pub const SPEED_MAX: f64 = 1024.0;

pub struct Player {
    reader: TraceReader,
    pipe: Pipeline<'static>,
    /// Read, not applied yet, in file order.
    queue: VecDeque<Record>,
    /// The reader has nothing more.
    read_all: bool,
    pub clock: BootClock,
    /// The recording's start (ns since boot).
    pub started_ns: u64,
    pub hostname: String,
    /// The playback clock (ns since boot): `pos_ns` at `anchor`, moving at `speed` unless
    /// paused.
    pos_ns: u64,
    anchor: Instant,
    speed: f64,
    paused: bool,
    path: String,
}

/// Where the playback is, for the screen.
#[derive(Clone, Debug, PartialEq)]
pub struct Status {
    pub position_ns: u64,
    pub speed: f64,
    pub paused: bool,
    /// Every record was applied.
    pub ended: bool,
}

impl Player {
    /// Opens `path` and applies it up to `at` (else to the end of its start-up snapshot).
    pub fn open(path: &Path, lenient: bool, at: Option<At>, speed: f64) -> Result<Self> {
        let mut reader = TraceReader::open(path, lenient)?;
        let first = reader.next_record()?;
        let Some((_, Record::Header(h))) = first else {
            anyhow::bail!(Failure::BadInput(format!(
                "{}: not a podtrace trace (no header record first)",
                path.display()
            )));
        };
        let clock = BootClock {
            offset_ns: h.boot_offset_ns,
        };
        let started_ns = clock.boot_ns(h.started_unix_ns);
        let stop = match at {
            None => None,
            Some(At::Offset(off)) => Some(clock.boot_ns(h.started_unix_ns.saturating_add(off))),
            Some(At::Unix(ns)) => Some(clock.boot_ns(ns)),
        };
        let mut pipe = Pipeline::new(EventFilter::default());
        let hostname = h.hostname.clone();
        pipe.push(&Record::Header(h))?;
        let mut p = Self {
            reader,
            pipe,
            queue: VecDeque::new(),
            read_all: false,
            clock,
            started_ns,
            hostname,
            pos_ns: 0,
            anchor: Instant::now(),
            speed: speed.clamp(SPEED_MIN, SPEED_MAX),
            paused: false,
            path: path.display().to_string(),
        };
        p.fast_forward(stop)?;
        Ok(p)
    }

    /// Applies what `tree --at stop` applies; the rest waits in the queue. Without `stop`:
    /// up to the end of the snapshot (the first record stamped after it waits).
    fn fast_forward(&mut self, stop: Option<u64>) -> Result<()> {
        let mut snapshot_done = false;
        let mut skipping_resync = false;
        let mut stop_ns = stop.unwrap_or(u64::MAX);
        while let Some((_, rec)) = self.reader.next_record()? {
            if matches!(rec, Record::SnapshotEnd {} | Record::StateEnd {}) {
                snapshot_done = true;
                if stop.is_none() {
                    self.pipe.push(&rec)?;
                    stop_ns = self.pipe.engine().map_or(0, Engine::now_ns);
                    break;
                }
            }
            let ts = record_ts(&rec);
            let defer = match (ts, &rec) {
                (Some(t), _) if t > stop_ns.saturating_add(REORDER_NS) => {
                    self.queue.push_back(rec);
                    break;
                }
                (Some(t), Record::ResyncStart(_)) if t > stop_ns => {
                    skipping_resync = true;
                    true
                }
                (Some(t), _) if t > stop_ns => true,
                (_, Record::ResyncEnd(_)) if skipping_resync => {
                    skipping_resync = false;
                    true
                }
                (_, Record::Proc(_) | Record::Cgroup(_)) if skipping_resync => true,
                // After records that wait, the end waits too (it ends holds and the exits a
                // resync left to infer: not before those records).
                (_, Record::End(_)) => !self.queue.is_empty(),
                _ => false,
            };
            if defer {
                self.queue.push_back(rec);
            } else {
                self.pipe.push(&rec)?;
            }
        }
        if self.queue.is_empty() && !snapshot_done {
            // Read to the end without one (else the loop stopped early).
            self.read_all = true;
            anyhow::bail!(Failure::BadInput(format!(
                "{}: trace has no complete snapshot (no snapshot_end record)",
                self.path
            )));
        }
        self.pos_ns = match stop {
            Some(s) => s,
            None => stop_ns.max(self.started_ns),
        };
        self.anchor = Instant::now();
        Ok(())
    }

    pub fn engine(&self) -> Option<&Engine> {
        self.pipe.engine()
    }

    /// The playback clock now (ns since boot).
    pub fn position_ns(&self) -> u64 {
        if self.paused {
            return self.pos_ns;
        }
        let moved = self.anchor.elapsed().as_nanos() as f64 * self.speed;
        self.pos_ns.saturating_add(moved as u64)
    }

    fn reanchor(&mut self) {
        self.pos_ns = self.position_ns();
        self.anchor = Instant::now();
    }

    pub fn set_paused(&mut self, paused: bool) {
        if paused != self.paused {
            self.reanchor();
            self.paused = paused;
        }
    }

    pub fn set_speed(&mut self, speed: f64) {
        self.reanchor();
        self.speed = speed.clamp(SPEED_MIN, SPEED_MAX);
    }

    pub fn speed(&self) -> f64 {
        self.speed
    }

    pub fn status(&self) -> Status {
        Status {
            position_ns: self.position_ns(),
            speed: self.speed,
            paused: self.paused,
            ended: self.read_all && self.queue.is_empty(),
        }
    }

    /// The next record, read into the queue if need be.
    fn front(&mut self) -> Result<Option<&Record>> {
        if self.queue.is_empty() && !self.read_all {
            match self.reader.next_record()? {
                Some((_, r)) => self.queue.push_back(r),
                None => {
                    self.read_all = true;
                    if let Some(w) = self.reader.cut_short.take() {
                        tracing::warn!("{w}");
                    }
                }
            }
        }
        Ok(self.queue.front())
    }

    /// When the next record is due (None: paused, or nothing more to play).
    pub fn next_due(&mut self) -> Result<Option<tokio::time::Instant>> {
        if self.paused {
            return Ok(None);
        }
        let pos = self.position_ns();
        let speed = self.speed;
        let now = tokio::time::Instant::now();
        Ok(match self.front()?.map(Record::ts_ns) {
            None => None,
            Some(None) => Some(now),
            Some(Some(ts)) if ts <= pos => Some(now),
            Some(Some(ts)) => {
                let wait_ns = (ts - pos) as f64 / speed;
                Some(now + std::time::Duration::from_nanos(wait_ns.min(1e12) as u64))
            }
        })
    }

    /// Applies up to `budget` records that are due; returns how many.
    pub fn advance(&mut self, budget: usize) -> Result<usize> {
        let pos = self.position_ns();
        let mut n = 0;
        while n < budget {
            let due = match self.front()? {
                None => break,
                Some(r) => r.ts_ns().is_none_or(|ts| ts <= pos),
            };
            if !due {
                break;
            }
            if let Some(rec) = self.queue.pop_front() {
                self.pipe.push(&rec)?;
                n += 1;
            }
        }
        Ok(n)
    }
}
