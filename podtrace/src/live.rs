//! `podtrace run`: kernel programs -> ring buffer -> engine -> NDJSON (and the trace recorder).
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};

use crate::clock::BootClock;
use crate::engine::Engine;
use crate::facts::{Facts, LiveFacts, Recording};
use crate::filter::EventFilter;
use crate::kernel_event::{decode, KernelEvent};
use crate::loader::{self, LoadOptions};
use crate::metrics::{self, Metrics};
use crate::ndjson::NdjsonWriter;
use crate::output::Event;
use crate::redact::Redactor;
use crate::snapshot;
use crate::trace::writer::TraceWriter;
use crate::trace::{self, CgroupFact, EndRecord, Header, LostRecord, Record};

/// How often the ring buffer is drained without a wakeup, the kernel drop counter read and
/// idle output flushed: the most a quiet event waits before it is printed.
const TICK: Duration = Duration::from_millis(100);

pub struct RunOptions {
    /// None: stdout. `Some(None)`-like "no output" is `quiet`.
    pub output: Option<PathBuf>,
    pub quiet: bool,
    pub duration: Option<Duration>,
    pub ring_buffer_bytes: u32,
    pub threads: bool,
    pub kernel_debug: bool,
    pub filter: EventFilter,
    pub record: Option<PathBuf>,
    pub node: Option<String>,
    /// Write a JSON summary here at exit (enables the kernel's BPF run-time statistics).
    pub summary: Option<PathBuf>,
    /// Serve Prometheus metrics here (`--metrics-addr`).
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Applied to every argv before the engine, the output and the recorder see it.
    pub redactor: Redactor,
}

#[derive(Debug, Default, serde::Serialize)]
pub struct RunSummary {
    pub events: u64,
    pub printed: u64,
    pub lost: u64,
    pub decode_errors: u64,
    pub threads: u64,
    pub read_errors: u64,
    /// Per program: run count and run time from the kernel (with `--summary`).
    pub kernel: std::collections::BTreeMap<String, loader::ProgramStats>,
    /// The kernel's own counters at exit (ring-buffer drops, records sent, threads).
    pub kernel_counters: loader::KernelCounters,
}

/// The engine, its output and the recorder, fed one record at a time.
struct Pipeline {
    engine: Engine,
    facts: Recording<LiveFacts>,
    filter: EventFilter,
    out: Option<NdjsonWriter>,
    trace: Option<TraceWriter>,
    buf: Vec<Event>,
    redactor: Redactor,
    metrics: Option<Arc<Metrics>>,
}

impl Pipeline {
    /// Writes the facts the engine just consulted, so replay can answer the same.
    fn record_facts(&mut self) -> Result<()> {
        let answers = std::mem::take(&mut self.facts.answers);
        if let Some(t) = &mut self.trace {
            for (id, path) in answers {
                t.write(&Record::Cgroup(CgroupFact { id, path }))?;
            }
        }
        Ok(())
    }

    fn emit(&mut self) -> Result<u64> {
        let mut printed = 0;
        for ev in self.buf.drain(..) {
            if self.filter.keep(&ev) {
                if let Some(o) = &mut self.out {
                    o.write(&ev)?;
                }
                printed += 1;
            }
        }
        Ok(printed)
    }

    fn event(&mut self, mut ev: KernelEvent) -> Result<u64> {
        // Redact first: neither the engine, the output nor the trace file sees a secret.
        let redacted = self.redactor.event(&mut ev);
        if let Some(m) = &self.metrics {
            m.event(ev.kind);
            m.redacted(redacted);
        }
        self.engine.ingest(&ev, &mut self.facts, &mut self.buf);
        self.record_facts()?;
        if let Some(t) = &mut self.trace {
            t.write(&Record::Event(ev))?;
        }
        self.emit()
    }

    fn lost(&mut self, ts_ns: u64, count: u64) -> Result<u64> {
        if let Some(m) = &self.metrics {
            m.lost(count);
        }
        self.engine.lost(ts_ns, count, &mut self.buf);
        if let Some(t) = &mut self.trace {
            t.write(&Record::Lost(LostRecord { ts_ns, count }))?;
        }
        self.emit()
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(o) = &mut self.out {
            o.flush()?;
        }
        if let Some(t) = &mut self.trace {
            t.flush()?;
        }
        Ok(())
    }
}

fn boot_now_ns() -> u64 {
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

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Builds the engine from the /proc snapshot (redacted, and recorded when asked).
fn start_engine(
    clock: BootClock,
    node: Option<String>,
    trace: &mut Option<TraceWriter>,
    redactor: &Redactor,
) -> Result<(Engine, Recording<LiveFacts>, u64)> {
    let facts = LiveFacts::new();
    let pidns = host_pidns();
    let mut procs = snapshot::scan(facts.root(), std::process::id())?;
    let redacted = procs.iter_mut().map(|p| redactor.process(p)).sum();
    let mut facts = Recording {
        inner: facts,
        answers: Vec::new(),
    };
    if let Some(t) = trace {
        t.write(&Record::Header(Header {
            format: trace::FORMAT_VERSION,
            podtrace_version: env!("CARGO_PKG_VERSION").to_string(),
            kernel_release: kernel_release(),
            hostname: hostname(),
            boot_offset_ns: clock.offset_ns,
            host_pidns: pidns,
            node: node.clone(),
            started_unix_ns: clock.unix_ns(boot_now_ns()),
        }))?;
        for p in &procs {
            t.write(&Record::Proc(p.clone()))?;
        }
    }
    let mut engine = Engine::new(clock, pidns, node);
    engine.load_snapshot(&procs, &mut facts as &mut dyn Facts);
    if let Some(t) = trace {
        for (id, path) in std::mem::take(&mut facts.answers) {
            t.write(&Record::Cgroup(CgroupFact { id, path }))?;
        }
        t.write(&Record::SnapshotEnd {})?;
        t.flush_now()?;
    }
    facts.answers.clear();
    Ok((engine, facts, redacted))
}

pub async fn run(opts: RunOptions) -> Result<RunSummary> {
    let metrics_listener = match opts.metrics_addr {
        Some(addr) => Some(metrics::bind(addr).await?),
        None => None,
    };
    // Attach first, then read /proc: a process that starts in between is in both, never in neither.
    let mut loaded = loader::load(&LoadOptions {
        ring_buffer_bytes: opts.ring_buffer_bytes,
        threads: opts.threads,
        kernel_debug: opts.kernel_debug,
    })?;
    let _stats_fd = match &opts.summary {
        Some(_) => Some(loader::enable_run_time_stats()?),
        None => None,
    };
    let clock = BootClock::from_system()?;
    let mut trace = match &opts.record {
        Some(p) => Some(TraceWriter::create(p)?),
        None => None,
    };
    let (engine, facts, redacted) =
        start_engine(clock, opts.node.clone(), &mut trace, &opts.redactor)?;
    let metrics = metrics_listener.map(|listener| {
        let m = Arc::new(Metrics::new(opts.ring_buffer_bytes));
        m.redacted(redacted);
        m.observe_engine(&engine);
        if let Ok(addr) = listener.local_addr() {
            tracing::info!("metrics on http://{addr}/metrics");
        }
        tokio::spawn(metrics::serve(listener, Arc::clone(&m)));
        m
    });
    let out = if opts.quiet {
        None
    } else {
        Some(match &opts.output {
            Some(p) => NdjsonWriter::create(p)?,
            None => NdjsonWriter::stdout(),
        })
    };
    let mut pipe = Pipeline {
        engine,
        facts,
        filter: opts.filter.clone(),
        out,
        trace,
        buf: Vec::new(),
        redactor: opts.redactor,
        metrics,
    };
    tracing::info!(
        "attached {} BTF tracepoints; {} processes from /proc; ring buffer {} bytes",
        loader::PROGRAMS.len(),
        pipe.engine.table().live_len(),
        opts.ring_buffer_bytes
    );

    let mut summary = RunSummary::default();
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let deadline = opts.duration.map(|d| tokio::time::Instant::now() + d);
    let mut ticker = tokio::time::interval(TICK);
    let mut reported_drops = 0u64;
    let mut ring = register(loaded.events).context("polling the ring buffer")?;
    let mut logger = match loaded.logger.take() {
        Some(l) => Some(register(l).context("polling the kernel debug log")?),
        None => None,
    };

    loop {
        tokio::select! {
            guard = ring.readable_mut() => {
                let mut guard = guard.context("ring buffer poll")?;
                drain(guard.get_inner_mut(), &mut pipe, &mut summary)?;
                guard.clear_ready();
                pipe.flush()?;
            }
            guard = async {
                match logger.as_mut() {
                    Some(l) => l.readable_mut().await,
                    None => std::future::pending().await,
                }
            } => {
                if let Ok(mut g) = guard {
                    g.get_inner_mut().flush();
                    g.clear_ready();
                }
            }
            _ = ticker.tick() => {
                // The kernel wakes us only when records pile up; quiet periods drain here.
                drain(ring.get_mut(), &mut pipe, &mut summary)?;
                let drops = loader::counter_sum(&loaded.counters, podtrace_common::counter::RINGBUF_DROPS);
                if drops > reported_drops {
                    summary.printed += pipe.lost(boot_now_ns(), drops - reported_drops)?;
                    summary.lost += drops - reported_drops;
                    reported_drops = drops;
                }
                if let Some(m) = &pipe.metrics {
                    m.observe_engine(&pipe.engine);
                    m.observe_kernel(&loader::read_counters(&loaded.counters));
                }
                pipe.flush()?;
            }
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
            _ = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            } => break,
        }
    }

    // Detach, then drain what the kernel already queued, then the final loss count.
    let counters = loaded.counters;
    summary.kernel = loader::program_stats(&loaded.ebpf);
    drop(loaded.ebpf);
    let mut events = ring.into_inner();
    drain(&mut events, &mut pipe, &mut summary)?;
    let k = loader::read_counters(&counters);
    if k.drops > reported_drops {
        summary.printed += pipe.lost(boot_now_ns(), k.drops - reported_drops)?;
        summary.lost += k.drops - reported_drops;
    }
    summary.kernel_counters = k;
    summary.threads = k.threads;
    summary.read_errors = k.read_errors;
    if let Some(mut t) = pipe.trace.take() {
        t.write(&Record::End(EndRecord {
            events: summary.events,
            lost: summary.lost,
        }))?;
        t.finish()?;
    }
    pipe.flush()?;
    if let Some(path) = &opts.summary {
        let text = serde_json::to_string_pretty(&summary).context("encoding the summary")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
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

/// Registers an fd-owning value with the runtime.
fn register<T: std::os::fd::AsRawFd>(inner: T) -> Result<AsyncFd<T>> {
    // SAFETY: `inner` owns its fd and AsyncFd owns `inner`, so the fd stays open and is not
    // reused while it is registered.
    unsafe { AsyncFd::register(inner) }
        .map_err(|e| anyhow::anyhow!("registering with the runtime: {}", e))
}

fn drain(
    ring: &mut aya::maps::RingBuf<aya::maps::MapData>,
    pipe: &mut Pipeline,
    summary: &mut RunSummary,
) -> Result<()> {
    while let Some(item) = ring.next() {
        match decode(&item) {
            Ok(ev) => {
                drop(item);
                summary.events += 1;
                summary.printed += pipe.event(ev)?;
            }
            Err(e) => {
                summary.decode_errors += 1;
                if let Some(m) = &pipe.metrics {
                    m.decode_error();
                }
                if summary.decode_errors <= 10 {
                    tracing::warn!("malformed kernel record ({} bytes): {e}", item.len());
                }
            }
        }
    }
    Ok(())
}
