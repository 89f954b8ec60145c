//! /proc read again after a loss, off the live loop.
//!
//! Reading `/proc/PID/cmdline` takes the process's mmap lock, and a process stuck with that
//! lock held or wanted (a page fault on a hung network or FUSE file system, a thread waiting
//! for the lock behind it) makes the read wait as long as it does: in the loop, that would
//! stop the ring buffer's drain, metrics, /healthz and SIGTERM with it. So a resync reads on
//! a thread of its own, process after process, and the loop looks at it on each tick: when it
//! is done, its records go through the pipeline as before (`resync_start`, `proc`s,
//! `resync_end`: replay applies them at the same place). A process whose read passes
//! [`PROC_DEADLINE`] is left out (`resync_end`'s `unread`: alive, not read, not gone) and
//! counted; the thread stuck on it is left to return when it can, and a new one reads the
//! rest. One resync at a time, and none while [`STUCK_MAX`] threads are stuck: a process that
//! never returns costs one thread, not one per resync (later resyncs leave it out unread
//! without trying).
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::cgroups::resolve::CgroupView;
use crate::redact::Redactor;
use crate::snapshot::{self, ProcInfo};

/// A process whose read takes longer is left out of the resync.
pub const PROC_DEADLINE: Duration = Duration::from_secs(1);
/// At most this many reading threads stuck at once; no resync starts while there are.
pub const STUCK_MAX: usize = 4;

/// What one thread reads and has read.
struct Worker {
    pids: Arc<[u32]>,
    /// Index in `pids` being read now (`pids.len()` when finished).
    pos: AtomicUsize,
    /// When that read started, ms after the resync started.
    since_ms: AtomicU64,
    /// Read so far; `None` once the loop took them (the thread then publishes nothing more).
    out: Mutex<Option<Vec<ProcInfo>>>,
    finished: AtomicBool,
}

/// A thread left stuck on a process.
struct Stuck {
    pid: u32,
    thread: std::thread::JoinHandle<()>,
}

/// A resync in flight.
struct Running {
    ts_ns: u64,
    started: Instant,
    worker: Arc<Worker>,
    thread: std::thread::JoinHandle<()>,
    procs: Vec<ProcInfo>,
    unread: Vec<u32>,
}

/// A finished resync: what /proc listed (by pid), and the processes not read.
pub struct Done {
    pub ts_ns: u64,
    pub procs: Vec<ProcInfo>,
    pub unread: Vec<u32>,
}

/// Runs resyncs off the loop.
pub struct Resyncer {
    view: CgroupView,
    redactor: Arc<Redactor>,
    running: Option<Running>,
    stuck: Vec<Stuck>,
    /// Processes left out of resyncs so far.
    pub unread_total: u64,
    warned_full: bool,
}

fn elapsed_ms(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// Reads `w.pids` from `from` on, publishing each as it is read, until the end or until the
/// loop takes the results.
fn work(w: Arc<Worker>, from: usize, started: Instant, view: CgroupView, redactor: Arc<Redactor>) {
    let Ok(mut reader) = snapshot::Reader::new(&view) else {
        w.pos.store(w.pids.len(), Ordering::SeqCst);
        w.finished.store(true, Ordering::SeqCst);
        return;
    };
    for (i, &pid) in w.pids.iter().enumerate().skip(from) {
        w.since_ms.store(elapsed_ms(started), Ordering::SeqCst);
        w.pos.store(i, Ordering::SeqCst);
        let p = reader.read(pid).map(|mut p| {
            redactor.process(&mut p);
            p
        });
        let Ok(mut out) = w.out.lock() else { return };
        let Some(out) = out.as_mut() else {
            // Abandoned: the loop went on without this thread.
            return;
        };
        out.extend(p);
    }
    w.pos.store(w.pids.len(), Ordering::SeqCst);
    w.finished.store(true, Ordering::SeqCst);
}

impl Resyncer {
    pub fn new(view: CgroupView, redactor: Arc<Redactor>) -> Self {
        Self {
            view,
            redactor,
            running: None,
            stuck: Vec::new(),
            unread_total: 0,
            warned_full: false,
        }
    }

    /// Reading threads stuck now.
    pub fn stuck(&self) -> usize {
        self.stuck.len()
    }

    /// Whether a resync is being read now.
    pub fn running(&self) -> bool {
        self.running.is_some()
    }

    fn spawn(
        &self,
        pids: Arc<[u32]>,
        from: usize,
        started: Instant,
    ) -> Option<(Arc<Worker>, std::thread::JoinHandle<()>)> {
        let w = Arc::new(Worker {
            pids,
            pos: AtomicUsize::new(from),
            since_ms: AtomicU64::new(elapsed_ms(started)),
            out: Mutex::new(Some(Vec::new())),
            finished: AtomicBool::new(false),
        });
        let (view, redactor, mine) = (
            self.view.clone(),
            Arc::clone(&self.redactor),
            Arc::clone(&w),
        );
        let thread = std::thread::Builder::new()
            .name("podtrace-resync".into())
            .spawn(move || work(mine, from, started, view, redactor))
            .ok()?;
        Some((w, thread))
    }

    /// Starts reading /proc (stamped `ts_ns`); false when it cannot now (one is running, or
    /// too many threads are stuck).
    pub fn start(&mut self, ts_ns: u64) -> bool {
        self.reap_stuck();
        if self.running.is_some() {
            return false;
        }
        if self.stuck.len() >= STUCK_MAX {
            if !self.warned_full {
                self.warned_full = true;
                tracing::warn!(
                    "{} reads of /proc are stuck (processes {}): no resync until one returns",
                    self.stuck.len(),
                    self.stuck_pids()
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
            return false;
        }
        self.warned_full = false;
        let all = match snapshot::pids(std::process::id()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("cannot list /proc for a resync: {e}");
                return false;
            }
        };
        // Processes a thread is still stuck on are not tried again: alive, not read.
        let stuck = self.stuck_pids();
        let (unread, pids): (Vec<u32>, Vec<u32>) = all.into_iter().partition(|p| stuck.contains(p));
        let started = Instant::now();
        let pids: Arc<[u32]> = pids.into();
        let Some((worker, thread)) = self.spawn(pids, 0, started) else {
            tracing::warn!("cannot start a thread to read /proc");
            return false;
        };
        self.running = Some(Running {
            ts_ns,
            started,
            worker,
            thread,
            procs: Vec::new(),
            unread,
        });
        true
    }

    fn stuck_pids(&self) -> Vec<u32> {
        self.stuck.iter().map(|s| s.pid).collect()
    }

    /// Forgets the stuck threads that returned (they found their results taken and ended).
    fn reap_stuck(&mut self) {
        self.stuck.retain(|s| !s.thread.is_finished());
    }

    /// Called on each tick: the finished resync, if there is one. A read past its deadline is
    /// left out here, and the rest handed to a new thread.
    pub fn poll(&mut self) -> Option<Done> {
        self.reap_stuck();
        let run = self.running.as_mut()?;
        let w = Arc::clone(&run.worker);
        if w.finished.load(Ordering::SeqCst) {
            if let Ok(mut out) = w.out.lock() {
                run.procs.extend(out.take().unwrap_or_default());
            }
            return self.finish();
        }
        let since = w.since_ms.load(Ordering::SeqCst);
        let now = elapsed_ms(run.started);
        if now.saturating_sub(since) < u64::try_from(PROC_DEADLINE.as_millis()).unwrap_or(u64::MAX)
        {
            return None;
        }
        // Stuck: take what it read, leave it the process it is on.
        let pos = {
            let Ok(mut out) = w.out.lock() else {
                return None;
            };
            if w.finished.load(Ordering::SeqCst) {
                run.procs.extend(out.take().unwrap_or_default());
                return self.finish();
            }
            run.procs.extend(out.take().unwrap_or_default());
            w.pos.load(Ordering::SeqCst)
        };
        let Some(&pid) = w.pids.get(pos) else {
            return self.finish();
        };
        run.unread.push(pid);
        self.unread_total += 1;
        tracing::warn!(
            "reading /proc/{pid} took more than {} s: left out of this resync (alive, not read)",
            PROC_DEADLINE.as_secs_f64()
        );
        let started = run.started;
        let pids = Arc::clone(&w.pids);
        let rest = pids.get(pos + 1..).unwrap_or_default().to_vec();
        let next = if self.stuck.len() + 1 >= STUCK_MAX {
            None
        } else {
            self.spawn(Arc::clone(&pids), pos + 1, started)
        };
        let run = self.running.as_mut()?;
        match next {
            Some((worker, thread)) => {
                let old = std::mem::replace(&mut run.thread, thread);
                run.worker = worker;
                self.stuck.push(Stuck { pid, thread: old });
                None
            }
            None => {
                // No more threads for it: the rest is left out unread too.
                self.unread_total += rest.len() as u64;
                run.unread.extend_from_slice(&rest);
                let run = self.running.take()?;
                self.stuck.push(Stuck {
                    pid,
                    thread: run.thread,
                });
                Some(Self::done(run.ts_ns, run.procs, run.unread))
            }
        }
    }

    fn finish(&mut self) -> Option<Done> {
        let run = self.running.take()?;
        Some(Self::done(run.ts_ns, run.procs, run.unread))
    }

    fn done(ts_ns: u64, mut procs: Vec<ProcInfo>, mut unread: Vec<u32>) -> Done {
        procs.sort_unstable_by_key(|p| p.pid);
        unread.sort_unstable();
        unread.dedup();
        Done {
            ts_ns,
            procs,
            unread,
        }
    }
}
