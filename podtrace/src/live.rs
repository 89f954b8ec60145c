//! The live source: `podtrace run` and `record`. The kernel programs' ring buffer, with the
//! facts the engine asks for resolved before each event, and the facts of the node's own
//! (clock steps, /proc re-read after a loss, the CRI's answers), pushed through the pipeline
//! as records, in the order the engine must see them; the recorder writes exactly those.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};

use crate::cgroups::resolve::{CgroupView, Resolver};
use crate::cgroups::{self, CgroupMode, CgroupSetup, Mounts};
use crate::clock::BootClock;
use crate::cri::{self, CriAnswer, CriConfig, CriError, CriService, CriStats};
use crate::engine::{Question, Request};
use crate::error::Failure;
use crate::filter::EventFilter;
use crate::kernel_event::{decode, record_kind, Decoded};
use crate::loader::{self, Attach, LoadOptions};
use crate::metrics::{self, Metrics};
use crate::ndjson::NdjsonWriter;
use crate::pipeline::Pipeline;
use crate::privileges;
use crate::redact::Redactor;
use crate::resync::Resyncer;
use crate::snapshot;
use crate::trace::segments::{Recorder, RecorderStats};
use crate::trace::{
    self, CgroupFact, ClockRecord, EndRecord, Header, LostKinds, LostRecord, MalformedRecord,
    Record, ResyncEnd, ResyncStart, TickRecord,
};
use crate::transport::{Source, Transport};

/// How often the ring buffer is drained without a wakeup, the kernel drop counters read,
/// the clock checked and idle output flushed: the most a quiet event waits to be printed.
const TICK: Duration = Duration::from_millis(100);
/// Records taken from the ring buffer per wakeup before signals, ticks and the metrics
/// endpoint get their turn (the rest are taken at once after).
const DRAIN_BUDGET: usize = 4096;
/// A boot->wall offset change smaller than this is the jitter of reading two clocks, not a
/// step of the wall clock.
const CLOCK_STEP_NS: i64 = 1_000_000;
/// After a loss /proc is read again, at most this often (a node losing events all the time
/// should not also scan /proc all the time).
const RESYNC_EVERY: Duration = Duration::from_secs(5);

pub struct RunOptions {
    /// None: stdout.
    pub output: Option<PathBuf>,
    pub quiet: bool,
    pub duration: Option<Duration>,
    pub ring_buffer_bytes: u32,
    pub threads: bool,
    pub kernel_debug: bool,
    pub filter: EventFilter,
    pub record: Option<crate::trace::segments::Target>,
    pub node: Option<String>,
    /// Write a JSON summary here at exit.
    pub summary: Option<PathBuf>,
    /// Turn on the kernel's BPF run-time statistics while running, for the summary
    /// (`--kernel-stats`).
    pub kernel_stats: bool,
    /// Serve Prometheus metrics here (`--metrics-addr`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Applied to every argv before the engine, the output and the recorder see it.
    pub redactor: Redactor,
    pub cgroup_mode: CgroupMode,
    /// Ask the CRI for names (None: `--no-cri`).
    pub cri: Option<CriConfig>,
    /// How long a kubelet container's events may wait for its CRI answer (with a CRI).
    pub hold: Duration,
    /// Forced attach type / transport (None: the fallback chain).
    pub attach: Option<Attach>,
    pub transport: Option<Transport>,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RunSummary {
    /// Exec, fork, exit and thread records received.
    pub events: u64,
    /// Reap records received (not printed: they end zombies in the table).
    pub reaps: u64,
    pub printed: u64,
    pub lost: u64,
    pub lost_kinds: LostKinds,
    pub decode_errors: u64,
    pub threads: u64,
    pub read_errors: u64,
    pub resyncs: u64,
    /// Processes left out of resyncs because reading them passed its deadline (alive, not
    /// read).
    pub resync_unread: u64,
    /// Reads of /proc stuck at exit (past their deadline, not returned).
    pub resync_stuck_reads: usize,
    /// The CRI used (endpoint and runtime), if any, and its counters at exit.
    pub cri: Option<CriSummary>,
    /// The exit program attached (`sched_process_exit`: group_dead from the tracepoint;
    /// `sched_process_exit_legacy`: the race-free check; `_raw`: as a raw tracepoint).
    pub exit_program: String,
    /// How the programs attached and how records came back.
    pub kernel_path: Option<loader::KernelPath>,
    /// What was tried first and why it did not load.
    pub fallbacks: Vec<String>,
    /// The cgroup hierarchies events are placed by.
    pub cgroups: CgroupSetup,
    /// Per program: run count and run time from the kernel (with `--kernel-stats`); null
    /// without them, and `kernel_missing` says why.
    pub kernel: Option<std::collections::BTreeMap<String, loader::ProgramStats>>,
    /// Why `kernel` is null.
    pub kernel_missing: Option<String>,
    /// The kernel's own counters at exit (ring-buffer drops, records sent, threads); null
    /// when the counter map could not be read.
    pub kernel_counters: Option<loader::KernelCounters>,
    /// Times the kernel's counters could not be read (the loss then is unknown, not zero).
    pub counter_read_errors: u64,
    /// Events held for kubelet containers' CRI answers, and how they went out.
    pub hold: Option<HoldSummary>,
    /// What the recorder did (`--record`): segments, retention, pauses and the records it
    /// could not write.
    pub recording: Option<RecorderStats>,
    /// Lines `--output` could not write (a full disk, any write error).
    pub output: Option<crate::ndjson::OutputStats>,
}

/// `--summary`'s account of the hold for CRI answers.
#[derive(Debug, Default, serde::Serialize)]
pub struct HoldSummary {
    /// The bound (`--hold-ms`; 0: nothing is held, as without a CRI).
    pub bound_ms: u64,
    #[serde(flatten)]
    pub stats: crate::engine::hold::HoldStats,
    /// Delay quantiles (the upper bound of the histogram bucket, ms; null: nothing held).
    pub delay_p50_ms: Option<u64>,
    pub delay_p99_ms: Option<u64>,
}

impl HoldSummary {
    pub fn of(bound_ns: u64, s: &crate::engine::hold::HoldStats) -> Self {
        Self {
            bound_ms: bound_ns / 1_000_000,
            stats: s.clone(),
            delay_p50_ms: s.delay_quantile_ms(0.5),
            delay_p99_ms: s.delay_quantile_ms(0.99),
        }
    }
}

/// Now on the kernel's boot clock (the clock of every record's `ts_ns`).
pub fn boot_now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// The host's pid namespace: PID 1's, or our own where PID 1's cannot be read (podtrace runs
/// in the host pid namespace: `hostPID: true` / `--pid=host`).
pub fn host_pidns() -> u32 {
    use std::os::unix::fs::MetadataExt;
    ["/proc/1/ns/pid", "/proc/self/ns/pid"]
        .iter()
        .find_map(|p| std::fs::metadata(p).ok())
        .map(|m| m.ino() as u32)
        .unwrap_or(0)
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The node's cgroup hierarchies under `mode` (a warning when there is none).
pub fn cgroup_setup(mode: CgroupMode) -> Result<(Mounts, CgroupSetup, Option<cgroups::V1Mount>)> {
    let mounts = Mounts::from_system();
    let (setup, v1) = cgroups::choose(&mounts, mode).map_err(Failure::Unsupported)?;
    if !setup.v2 && setup.v1.is_none() {
        tracing::warn!(
            "no cgroup2 mount and no cgroup v1 controller hierarchy in /proc/self/mountinfo: \
             events will carry cgroup null and containers are found by runtime helpers only"
        );
    }
    Ok((mounts, setup, v1))
}

/// The start of a trace into `pipe`: the header, then one `proc` per process (redacted),
/// each pushed as /proc is read (nothing of the snapshot is held here: with 10,000 processes
/// a second copy was ~4 MiB of peak memory). `snapshot_end` is left to the caller (CRI
/// answers may come first). `hold_ns` goes in the header: how long the engine holds a
/// kubelet container's events for its CRI answer (0 without a CRI). Returns the processes
/// pushed and the argv elements redacted.
pub fn push_snapshot(
    pipe: &mut Pipeline<'_>,
    clock: BootClock,
    node: Option<String>,
    setup: &CgroupSetup,
    view: &CgroupView,
    redactor: &Redactor,
    hold_ns: u64,
) -> Result<(usize, u64)> {
    pipe.push(&Record::Header(Header {
        format: trace::FORMAT_VERSION,
        podtrace_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel_release: read_trimmed("/proc/sys/kernel/osrelease"),
        hostname: read_trimmed("/proc/sys/kernel/hostname"),
        boot_offset_ns: clock.offset_ns,
        host_pidns: host_pidns(),
        node,
        started_unix_ns: clock.unix_ns(boot_now_ns()),
        cgroups: setup.clone(),
        hold_ns,
        segment: None,
    }))?;
    let mut redacted = 0;
    let processes = snapshot::scan_each(view, std::process::id(), |mut p| {
        redacted += redactor.process(&mut p);
        pipe.push(&Record::Proc(p))
    })
    .context("reading /proc")?;
    Ok((processes, redacted))
}

#[derive(Debug, Default, serde::Serialize)]
pub struct CriSummary {
    pub endpoint: String,
    pub runtime: Option<String>,
    pub stats: CriStats,
    /// CRI answers that changed a name the argv had given.
    pub disagreements: u64,
}

/// Connects to the CRI: None with a warning when no socket is there (unless it was named).
pub async fn start_cri(cfg: &CriConfig, redactor: Arc<Redactor>) -> Result<Option<CriService>> {
    match CriService::start(cfg.clone(), cri::redact_with(redactor)).await {
        Ok(s) => {
            tracing::info!(
                "CRI: {} at {}",
                s.runtime().unwrap_or("a runtime that did not say which"),
                s.endpoint().display()
            );
            Ok(Some(s))
        }
        Err(CriError::NoEndpoint { tried }) => {
            tracing::info!(
                "no CRI socket found ({}): pod and container names come from runtime helpers' \
                 argv and cgroup paths only (--cri-endpoint names a socket)",
                tried
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(None)
        }
        Err(e) => Err(Failure::BadInput(format!("--cri-endpoint: {e}")).into()),
    }
}

/// The next CRI answer, or never without a CRI.
async fn cri_answer(cri: &mut Option<CriService>) -> CriAnswer {
    match cri {
        Some(s) => s.next_answer().await,
        None => std::future::pending().await,
    }
}

/// Hands the engine's requests to the CRI.
fn serve_requests(pipe: &mut Pipeline<'_>, cri: &mut Option<CriService>) {
    let Some(s) = cri else { return };
    for r in pipe.take_requests() {
        match r {
            Request::CriLookup(id) => s.request(&id),
            Request::CriForget(id) => s.forget(&id),
        }
    }
}

/// Whether the live loop goes on after a frontend woke.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Stop,
}

/// Something the live loop serves besides the pipeline's sinks: `top`'s terminal. `wait` is
/// one more branch of the loop (its input, its frame timer); `wake` handles what it waited
/// for with the engine as it is then, and must not wait on anything itself (the loop drains
/// the ring buffer meanwhile).
pub trait Frontend {
    type Wake;
    fn wait(&mut self) -> impl std::future::Future<Output = Self::Wake>;
    fn wake(&mut self, wake: Self::Wake, engine: Option<&crate::engine::Engine>) -> Result<Flow>;
}

/// No frontend (`run`, `record`): a branch that never wakes.
pub struct Headless;

impl Frontend for Headless {
    type Wake = std::convert::Infallible;
    fn wait(&mut self) -> impl std::future::Future<Output = Self::Wake> {
        std::future::pending()
    }
    fn wake(&mut self, wake: Self::Wake, _: Option<&crate::engine::Engine>) -> Result<Flow> {
        match wake {}
    }
}

/// Everything the live loop keeps besides the pipeline.
struct Live {
    resolver: Resolver,
    redactor: Arc<Redactor>,
    metrics: Option<Arc<Metrics>>,
    summary: RunSummary,
    reported_drops: LostKinds,
    clock_offset: i64,
    last_resync: Option<Instant>,
    resync_due: bool,
    /// Reads /proc off the loop.
    resyncer: Resyncer,
}

impl Live {
    /// One ring-buffer record: the facts it needs, then itself.
    fn record(&mut self, bytes: &[u8], pipe: &mut Pipeline<'_>) -> Result<()> {
        match decode(bytes) {
            Ok(Decoded::Event(mut ev)) => {
                self.summary.events += 1;
                let redacted = self.redactor.event(&mut ev);
                if let Some(m) = &self.metrics {
                    m.event(ev.kind);
                    m.redacted(redacted);
                }
                while let Some(Question::CgroupPath { hierarchy, id, pid }) =
                    pipe.engine().and_then(|e| e.next_question(&ev))
                {
                    let path = self.resolver.path(hierarchy, id, pid);
                    pipe.push(&Record::Cgroup(CgroupFact {
                        hierarchy,
                        id,
                        path,
                    }))?;
                }
                pipe.push(&Record::Event(ev))
            }
            Ok(Decoded::Reap(r)) => {
                self.summary.reaps += 1;
                pipe.push(&Record::Reap(r))
            }
            Err(e) => {
                self.summary.decode_errors += 1;
                if let Some(m) = &self.metrics {
                    m.decode_error();
                }
                if self.summary.decode_errors <= 10 {
                    tracing::warn!(
                        "malformed kernel record ({} bytes, kind {}): {e}",
                        bytes.len(),
                        record_kind(bytes)
                    );
                }
                pipe.push(&Record::Malformed(MalformedRecord {
                    ts_ns: boot_now_ns(),
                    bytes: bytes.len() as u64,
                    reason: e.to_string(),
                }))
            }
        }
    }

    /// Takes up to `budget` records; returns whether the buffers may hold more.
    fn drain(
        &mut self,
        source: &mut Source,
        pipe: &mut Pipeline<'_>,
        budget: usize,
    ) -> Result<bool> {
        source.drain(budget, |bytes| self.record(bytes, pipe))
    }

    /// A `lost` record for what the kernel dropped since the last one.
    fn report_drops(&mut self, drops: LostKinds, pipe: &mut Pipeline<'_>) -> Result<()> {
        let r = &self.reported_drops;
        let new = LostKinds {
            exec: drops.exec.saturating_sub(r.exec),
            fork: drops.fork.saturating_sub(r.fork),
            exit: drops.exit.saturating_sub(r.exit),
            reap: drops.reap.saturating_sub(r.reap),
            thread: drops.thread.saturating_sub(r.thread),
        };
        let count = new.total();
        if count == 0 {
            return Ok(());
        }
        self.reported_drops = drops;
        self.summary.lost += count;
        let k = &mut self.summary.lost_kinds;
        k.exec += new.exec;
        k.fork += new.fork;
        k.exit += new.exit;
        k.reap += new.reap;
        k.thread += new.thread;
        if let Some(m) = &self.metrics {
            m.lost(count);
        }
        pipe.push(&Record::Lost(LostRecord {
            ts_ns: boot_now_ns(),
            count,
            kinds: new,
        }))?;
        // What was lost may have been exits and forks: read /proc again to drop the dead
        // and add the unseen.
        self.resync_due = true;
        Ok(())
    }

    /// /proc again (after a loss), at most every `RESYNC_EVERY`: started here, read off the
    /// loop, and pushed as `resync` records on the tick it is done.
    fn resync(&mut self, pipe: &mut Pipeline<'_>) -> Result<()> {
        if let Some(done) = self.resyncer.poll() {
            self.summary.resyncs += 1;
            self.summary.resync_unread = self.resyncer.unread_total;
            tracing::info!(
                "events were lost: read /proc again ({} processes{})",
                done.procs.len(),
                if done.unread.is_empty() {
                    String::new()
                } else {
                    format!(", {} not read in time", done.unread.len())
                }
            );
            pipe.push(&Record::ResyncStart(ResyncStart { ts_ns: done.ts_ns }))?;
            for p in done.procs {
                pipe.push(&Record::Proc(p))?;
            }
            pipe.push(&Record::ResyncEnd(ResyncEnd {
                unread: done.unread,
            }))?;
        }
        if !self.resync_due || self.last_resync.is_some_and(|t| t.elapsed() < RESYNC_EVERY) {
            return Ok(());
        }
        if self.resyncer.start(boot_now_ns()) {
            self.resync_due = false;
            self.last_resync = Some(Instant::now());
        }
        Ok(())
    }

    /// The kernel's counters; None (counted, and said once) when the map cannot be read.
    fn read_counters(&mut self, counters: &loader::CounterMap) -> Option<loader::KernelCounters> {
        let k = loader::read_counters(counters);
        if k.is_none() {
            self.summary.counter_read_errors += 1;
            if self.summary.counter_read_errors == 1 {
                tracing::warn!(
                    "the kernel's counters could not be read: losses are unknown until they can"
                );
            }
        }
        k
    }

    /// A `clock` record when the wall clock was stepped.
    fn check_clock(&mut self, pipe: &mut Pipeline<'_>) -> Result<()> {
        let Ok(now) = BootClock::from_system() else {
            return Ok(());
        };
        if (now.offset_ns - self.clock_offset).abs() < CLOCK_STEP_NS {
            return Ok(());
        }
        tracing::info!(
            "the wall clock moved by {} ms: timestamps follow it from now on",
            (now.offset_ns - self.clock_offset) / 1_000_000
        );
        self.clock_offset = now.offset_ns;
        pipe.push(&Record::Clock(ClockRecord {
            ts_ns: boot_now_ns(),
            offset_ns: now.offset_ns,
        }))
    }
}

/// The pipeline `run` feeds: the recorder, the NDJSON sink, the filter.
fn build_pipeline(opts: &RunOptions, with_cri: bool) -> Result<Pipeline<'static>> {
    let mut pipe = Pipeline::new(opts.filter.clone());
    if with_cri {
        pipe = pipe.keep_requests();
    }
    if let Some(t) = &opts.record {
        pipe = pipe.record_to(Recorder::open(t.clone())?);
    }
    if !opts.quiet {
        pipe = pipe.sink(match &opts.output {
            Some(p) => NdjsonWriter::create(p, opts.node.as_deref().map(Arc::from))?,
            None => NdjsonWriter::stdout(),
        });
    }
    Ok(pipe)
}

/// The rest of the start-up records after the snapshot: what the CRI listed (before the
/// snapshot is attributed, so containers that ran before podtrace are named from their first
/// line on), then `snapshot_end`.
fn finish_start(pipe: &mut Pipeline<'_>, cri: &mut Option<CriService>) -> Result<()> {
    if let Some(s) = cri {
        for f in s.initial() {
            pipe.push(&Record::Cri(f))?;
        }
    }
    pipe.push(&Record::SnapshotEnd {})?;
    serve_requests(pipe, cri);
    pipe.flush_recorder_now()?;
    Ok(())
}

/// The metrics endpoint, serving from now on.
fn start_metrics(
    listener: tokio::net::TcpListener,
    ring_buffer_bytes: u32,
    redacted: u64,
    pipe: &Pipeline<'_>,
) -> Arc<Metrics> {
    let m = Arc::new(Metrics::new(ring_buffer_bytes));
    m.redacted(redacted);
    if let Some(e) = pipe.engine() {
        m.observe_engine(e);
    }
    if let Ok(addr) = listener.local_addr() {
        tracing::info!("metrics on http://{addr}/metrics");
    }
    tokio::spawn(metrics::serve(listener, Arc::clone(&m)));
    m
}

/// What the loop polls besides the ring buffer.
struct Waits {
    sigint: tokio::signal::unix::Signal,
    sigterm: tokio::signal::unix::Signal,
    /// Reopens `--output` (log rotation).
    sighup: tokio::signal::unix::Signal,
    deadline: Option<tokio::time::Instant>,
    ticker: tokio::time::Interval,
    logger: Option<AsyncFd<aya_log::EbpfLogger<&'static dyn log::Log>>>,
}

/// Refuses to trace from outside the host's pid namespace: /proc would show another set of
/// processes than the kernel reports, and every pid and name printed would be wrong.
pub fn require_host_pidns() -> Result<()> {
    match privileges::host_pidns_problem(privileges::own_pidns()) {
        None => Ok(()),
        Some(why) => Err(Failure::Unsupported(why).into()),
    }
}

pub async fn run(opts: RunOptions) -> Result<RunSummary> {
    run_with(opts, &mut Headless).await
}

/// `run` with a frontend served by the same loop (`top`).
pub async fn run_with<F: Frontend>(mut opts: RunOptions, ui: &mut F) -> Result<RunSummary> {
    require_host_pidns()?;
    // First: a SIGINT or SIGTERM during start-up (loading, the /proc snapshot, the CRI
    // listing) is kept for the loop, which then stops at once with a clean drain and exit 0,
    // instead of killing the process (it did when it came right after `attached`).
    let sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    // SIGHUP reopens --output (log rotation); it no longer ends podtrace.
    let sighup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    let metrics_listener = match opts.metrics_addr {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    let (mounts, setup, v1) = cgroup_setup(opts.cgroup_mode)?;
    let redactor = Arc::new(std::mem::replace(&mut opts.redactor, Redactor::disabled()));
    // Only when asked: it times every BPF program on the node while held, and needs
    // CAP_SYS_ADMIN (the DaemonSet does not have it).
    let stats_fd = if opts.kernel_stats {
        Some(loader::enable_run_time_stats().map_err(|e| {
            Failure::Unsupported(format!(
                "--kernel-stats: {e:#} (turning on BPF run-time statistics needs CAP_SYS_ADMIN; \
                 --summary without --kernel-stats needs no more than tracing does)"
            ))
        })?)
    } else {
        None
    };
    // Attach first, then read /proc: a process that starts in between is in both, never in
    // neither.
    let mut loaded = loader::load(&LoadOptions {
        ring_buffer_bytes: opts.ring_buffer_bytes,
        threads: opts.threads,
        kernel_debug: opts.kernel_debug,
        v1_controller: v1.as_ref().map(|m| m.controller.clone()),
        attach: opts.attach,
        transport: opts.transport,
    })?;
    let mut cri = match &opts.cri {
        Some(cfg) => start_cri(cfg, Arc::clone(&redactor)).await?,
        None => None,
    };
    let clock = BootClock::from_system()?;
    let view = CgroupView::new(&mounts, &setup, v1);
    // Opened now, so that a path podtrace cannot write (or a symlink) stops it before the run,
    // not after it.
    let summary_file = match &opts.summary {
        Some(p) => Some(crate::outfile::open_output_file(p, false).context("the summary")?),
        None => None,
    };
    let mut pipe = build_pipeline(&opts, cri.is_some())?;
    // Held for a CRI answer only where there is a CRI to answer.
    let hold_ns = if cri.is_some() {
        u64::try_from(opts.hold.as_nanos()).unwrap_or(u64::MAX)
    } else {
        0
    };
    let (processes, redacted) = push_snapshot(
        &mut pipe,
        clock,
        opts.node.clone(),
        &setup,
        &view,
        &redactor,
        hold_ns,
    )?;
    finish_start(&mut pipe, &mut cri)?;
    // The snapshot's reading buffers and the engine's pending list are freed by now.
    loader::release_startup_heap();
    let metrics =
        metrics_listener.map(|l| start_metrics(l, opts.ring_buffer_bytes, redacted, &pipe));
    let resyncer = Resyncer::new(view.clone(), Arc::clone(&redactor));
    let mut live = Live {
        resolver: Resolver::new(view),
        redactor,
        metrics,
        summary: RunSummary {
            exit_program: loaded.exit_program.clone(),
            kernel_path: Some(loaded.path),
            fallbacks: loaded.fallbacks.clone(),
            cgroups: setup,
            ..RunSummary::default()
        },
        reported_drops: LostKinds::default(),
        clock_offset: clock.offset_ns,
        last_resync: None,
        resync_due: false,
        resyncer,
    };
    log_kernel_path(&loaded);
    tracing::info!(
        "attached {} programs ({}; exit: {}); cgroup mode: {}; {processes} processes from /proc; {} {} bytes",
        loader::ATTACHED,
        loaded.path,
        loaded.exit_program,
        live.summary.cgroups.describe(),
        match loaded.path.transport {
            Transport::RingBuffer => "ring buffer",
            Transport::PerfBuffer => "perf buffers, from",
        },
        opts.ring_buffer_bytes
    );
    let mut waits = Waits {
        sigint,
        sigterm,
        sighup,
        deadline: opts.duration.map(|d| tokio::time::Instant::now() + d),
        ticker: tokio::time::interval(TICK),
        logger: match loaded.logger.take() {
            Some(l) => Some(register(l).context("polling the kernel debug log")?),
            None => None,
        },
    };
    let mut ring = register(loaded.events).context("polling the kernel's records")?;
    live.event_loop(
        &mut ring,
        &loaded.counters,
        &mut pipe,
        &mut cri,
        &mut waits,
        ui,
    )
    .await?;

    // Detach, then drain what the kernel already queued, then the final loss count.
    if stats_fd.is_some() {
        live.summary.kernel = Some(loader::program_stats(&loaded.ebpf));
    } else {
        live.summary.kernel_missing = Some(
            "the kernel's BPF run-time statistics were not turned on: --kernel-stats turns them \
             on (for every BPF program on the node; needs CAP_SYS_ADMIN)"
                .to_string(),
        );
    }
    drop(stats_fd);
    drop(loaded.ebpf);
    let mut events = ring.into_inner();
    while live.drain(&mut events, &mut pipe, usize::MAX)? {}
    let summary_file = summary_file.zip(opts.summary.as_deref());
    live.finish(&loaded.counters, pipe, &cri, summary_file)
}

/// The kernel path once: what loaded, and what was tried first and why not.
fn log_kernel_path(loaded: &loader::Loaded) {
    if !loaded.fallbacks.is_empty() {
        tracing::warn!(
            "kernel programs: {} (fell back: {})",
            loaded.path,
            loaded.fallbacks.join("; ")
        );
    }
    if !loaded.older_names.is_empty() {
        tracing::info!(
            "kernel fields under older names: {}",
            loaded.older_names.join(", ")
        );
    }
    if let Some(m) = loaded.memlock {
        tracing::info!(
            "this kernel charges BPF memory to RLIMIT_MEMLOCK: the limit is {}",
            m.soft
                .map_or_else(|| "unlimited".to_string(), privileges::human)
        );
    }
}

impl Live {
    /// Until SIGINT, SIGTERM or `--duration`: drain the ring buffer (within the budget),
    /// take CRI answers, and every tick the clock, the kernel's drop counters, a resync when
    /// due, and the metrics; and the frontend, if any.
    async fn event_loop<F: Frontend>(
        &mut self,
        ring: &mut AsyncFd<Source>,
        counters: &loader::CounterMap,
        pipe: &mut Pipeline<'_>,
        cri: &mut Option<CriService>,
        w: &mut Waits,
        ui: &mut F,
    ) -> Result<()> {
        loop {
            tokio::select! {
                guard = ring.readable_mut() => {
                    let mut guard = guard.context("ring buffer poll")?;
                    // Within the budget: the rest waits for the next turn, which comes at once
                    // (readiness is kept) after the other branches had theirs.
                    if !self.drain(guard.get_inner_mut(), pipe, DRAIN_BUDGET)? {
                        guard.clear_ready();
                    }
                    serve_requests(pipe, cri);
                    pipe.flush()?;
                }
                answer = cri_answer(cri) => {
                    pipe.push(&match answer {
                        CriAnswer::Fact(f) => Record::Cri(*f),
                        CriAnswer::Unknown(u) => Record::CriUnknown(u),
                    })?;
                    serve_requests(pipe, cri);
                }
                guard = async {
                    match w.logger.as_mut() {
                        Some(l) => l.readable_mut().await,
                        None => std::future::pending().await,
                    }
                } => {
                    if let Ok(mut g) = guard {
                        g.get_inner_mut().flush();
                        g.clear_ready();
                    }
                }
                _ = w.ticker.tick() => self.tick(ring.get_mut(), counters, pipe, cri)?,
                wake = ui.wait() => {
                    if ui.wake(wake, pipe.engine())? == Flow::Stop {
                        return Ok(());
                    }
                }
                _ = w.sighup.recv() => pipe.reopen_outputs()?,
                _ = w.sigint.recv() => return Ok(()),
                _ = w.sigterm.recv() => return Ok(()),
                _ = async {
                    match w.deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => return Ok(()),
            }
        }
    }

    /// The kernel wakes the reader only when records pile up: quiet periods drain here; and
    /// the clock, loss, resync and metrics.
    fn tick(
        &mut self,
        ring: &mut Source,
        counters: &loader::CounterMap,
        pipe: &mut Pipeline<'_>,
        cri: &mut Option<CriService>,
    ) -> Result<()> {
        self.drain(ring, pipe, DRAIN_BUDGET)?;
        self.check_clock(pipe)?;
        // Events held for a CRI answer go out when the bound passes, also on a quiet node:
        // the clock reaches the engine as a record (replay releases them at the same place).
        if pipe.engine().is_some_and(|e| e.holding()) {
            pipe.push(&Record::Tick(TickRecord {
                ts_ns: boot_now_ns(),
            }))?;
        }
        let k = self.read_counters(counters);
        if let Some(k) = &k {
            self.report_drops(k.drops, pipe)?;
        }
        self.resync(pipe)?;
        serve_requests(pipe, cri);
        if let Some(m) = &self.metrics {
            // The loop made progress: what /healthz reports.
            m.beat();
            if let Some(e) = pipe.engine() {
                m.observe_engine(e);
            }
            m.observe_kernel(k.as_ref());
            if let Some(s) = cri {
                m.observe_cri(&s.stats());
            }
            m.observe_writes(pipe.recorder_stats(), pipe.output_stats().as_ref());
            m.observe_resync(self.resyncer.unread_total, self.resyncer.stuck());
        }
        pipe.flush()
    }

    /// The final loss count, the `end` record, the summary.
    fn finish(
        mut self,
        counters: &loader::CounterMap,
        mut pipe: Pipeline<'_>,
        cri: &Option<CriService>,
        summary_file: Option<(std::fs::File, &std::path::Path)>,
    ) -> Result<RunSummary> {
        let k = self.read_counters(counters);
        if let Some(k) = &k {
            self.report_drops(k.drops, &mut pipe)?;
        }
        let mut summary = self.summary;
        summary.cri = cri.as_ref().map(|s| CriSummary {
            endpoint: s.endpoint().display().to_string(),
            runtime: s.runtime().map(str::to_string),
            stats: s.stats(),
            disagreements: pipe
                .engine()
                .map_or(0, |e| e.containers().stats.cri_disagreements),
        });
        summary.kernel_counters = k;
        summary.threads = k.map_or(0, |k| k.threads);
        summary.read_errors = k.map_or(0, |k| k.read_errors);
        pipe.push(&Record::End(EndRecord {
            events: summary.events,
            lost: summary.lost,
        }))?;
        // After the end record: it releases what was still held.
        summary.printed = pipe.counts.printed;
        summary.hold = pipe
            .engine()
            .map(|e| HoldSummary::of(e.hold_ns(), e.hold_stats()));
        summary.output = pipe.output_stats();
        summary.resync_unread = self.resyncer.unread_total;
        summary.resync_stuck_reads = self.resyncer.stuck();
        let (_, recording) = pipe.finish_recording()?;
        summary.recording = recording;
        if let Some((mut file, path)) = summary_file {
            let text = serde_json::to_string_pretty(&summary).context("encoding the summary")?;
            std::io::Write::write_all(&mut file, (text + "\n").as_bytes())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        tracing::info!(
            "stopped: {} events, {} printed, {} lost, {} malformed, {} threads created (not reported as processes), {} partial reads",
            summary.events,
            summary.printed,
            summary.lost,
            summary.decode_errors,
            summary.threads,
            summary.read_errors
        );
        Ok(summary)
    }
}

/// Registers an fd-owning value with the runtime.
fn register<T: std::os::fd::AsRawFd>(inner: T) -> Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its fd and AsyncFd owns `inner`, so the fd stays open and is not
    // reused while it is registered.
    unsafe { AsyncFd::register(inner) }
        .map_err(|e| anyhow::anyhow!("registering with the runtime: {}", e))
}
