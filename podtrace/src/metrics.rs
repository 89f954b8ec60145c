//! Prometheus metrics of a running tracer (`--metrics-addr`), served as OpenMetrics text on
//! `GET /metrics` by a minimal HTTP/1.1 responder on the daemon's own runtime, and its
//! liveness on `GET /healthz`.
//!
//! The pipeline counts as it goes (events, loss, decode errors, redactions); the engine's
//! gauges (processes, containers, pods) and the kernel's counters are refreshed on every tick
//! of the run loop. Names and meanings are listed in docs/operations.md.
//!
//! `/healthz` answers 200 while the run loop's last tick (every 100 ms) is recent, 503 with
//! its age once it is older than [`STALL_AFTER`]. The responder runs on the loop's own
//! (single) thread: a loop blocked in a call does not answer at all, which a probe with a
//! timeout (`podtrace health`) counts as unhealthy too; the 503 is for a loop that no longer
//! ticks while the runtime still serves.
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Registry, Unit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::cri::CriStats;
use crate::engine::Engine;
use crate::kernel_event::Kind;
use crate::loader::KernelCounters;

/// The `type` label of `podtrace_events_total`.
type TypeLabel = [(&'static str, &'static str); 1];

/// `podtrace_released_events_total{how}` label values.
const RELEASES: [&str; 5] = ["named", "after_bound", "unanswered", "full", "at_end"];

/// OpenMetrics text, what `prometheus_client::encoding::text` writes.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A request head larger than this is refused.
const MAX_REQUEST: usize = 8192;
/// A client that has not sent its request head by then is dropped.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// `/healthz` fails once the run loop has not ticked for this long (it ticks every 100 ms).
pub const STALL_AFTER: Duration = Duration::from_secs(10);

/// When the run loop last ticked: milliseconds since `start` (monotonic), updated from the
/// loop, read by `/healthz`.
pub struct Heartbeat {
    start: Instant,
    last_ms: AtomicU64,
}

impl Heartbeat {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn beat(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long ago the loop last ticked (since the metrics were made, before the first).
    pub fn age(&self) -> Duration {
        let now = self.start.elapsed();
        now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// The `/healthz` answer for a loop that last ticked `age` ago: (status, body).
fn health_reply(age: Duration, stall_after: Duration) -> (&'static str, String) {
    let secs = age.as_secs_f64();
    if age <= stall_after {
        (
            "200 OK",
            format!("ok: the event loop ticked {secs:.1} s ago\n"),
        )
    } else {
        (
            "503 Service Unavailable",
            format!(
                "stalled: the event loop last ticked {secs:.1} s ago (more than {} s)\n",
                stall_after.as_secs_f64()
            ),
        )
    }
}

fn kind_label(kind: Kind) -> &'static str {
    match kind {
        Kind::Exec => "exec",
        Kind::Fork => "fork",
        Kind::Exit => "exit",
        Kind::Thread => "thread",
    }
}

/// The registry and the handles the pipeline updates.
pub struct Metrics {
    registry: Registry,
    events: Family<TypeLabel, Counter>,
    lost: Counter,
    decode_errors: Counter,
    redacted: Counter,
    processes: Gauge,
    containers: Gauge,
    pods: Gauge,
    ring_buffer_bytes: Gauge,
    kernel_threads: Counter,
    kernel_read_errors: Counter,
    kernel_counters_readable: Gauge,
    held: Gauge,
    released: Family<TypeLabel, Counter>,
    cri: CriMetrics,
    writes: WriteMetrics,
    heartbeat: Heartbeat,
    stall_after: Duration,
}

/// The CRI service's counters, brought up to its totals on each tick.
struct CriMetrics {
    up: Gauge,
    lookups: Counter,
    answered: Counter,
    not_found: Counter,
    failures: Counter,
    timeouts: Counter,
    queue_drops: Counter,
    disagreements: Counter,
    cache_size: Gauge,
    latency_us_sum: Counter,
    latency_count: Counter,
}

impl CriMetrics {
    fn register(registry: &mut Registry) -> Self {
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let lookups = counter(
            "cri_lookups",
            "CRI lookups run (ContainerStatus / PodSandboxStatus)",
        );
        let answered = counter(
            "cri_answered",
            "CRI lookups that named a container or sandbox",
        );
        let not_found = counter(
            "cri_not_found",
            "CRI lookups of ids the runtime does not know",
        );
        let failures = counter(
            "cri_failures",
            "CRI lookups that failed (no answer, an error, a timeout)",
        );
        let timeouts = counter("cri_timeouts", "CRI lookups that timed out");
        let queue_drops = counter(
            "cri_queue_drops",
            "CRI lookups not asked because the queue was full",
        );
        let disagreements = counter(
            "cri_disagreements",
            "CRI answers that changed a pod or container name runtime argv had given",
        );
        let latency_us_sum = counter(
            "cri_lookup_microseconds_sum",
            "Total time of CRI lookups, microseconds (with _count: the mean)",
        );
        let latency_count = counter("cri_lookup_count", "CRI lookups timed");
        let up = Gauge::default();
        registry.register(
            "cri_up",
            "1 while the CRI answers, 0 during an outage (absent without a CRI)",
            up.clone(),
        );
        let cache_size = Gauge::default();
        registry.register(
            "cri_cache_size",
            "Containers and sandboxes whose CRI answer is cached",
            cache_size.clone(),
        );
        Self {
            up,
            lookups,
            answered,
            not_found,
            failures,
            timeouts,
            queue_drops,
            disagreements,
            cache_size,
            latency_us_sum,
            latency_count,
        }
    }
}

/// The recorder's and the output file's account, and the /proc re-reads that did not
/// finish, brought up to their totals on each tick.
struct WriteMetrics {
    recording_paused: Gauge,
    recording_records_lost: Counter,
    recording_segments: Counter,
    recording_removed: Counter,
    recording_dir_bytes: Gauge,
    output_lines_lost: Counter,
    resync_unread: Counter,
    resync_stuck: Gauge,
}

impl WriteMetrics {
    fn register(registry: &mut Registry) -> Self {
        let mut counter = |name: &str, help: &str| {
            let c = Counter::default();
            registry.register(name, help, c.clone());
            c
        };
        let recording_records_lost = counter(
            "recording_records_lost",
            "Trace records the recorder could not write (a full disk, a write error)",
        );
        let recording_segments = counter(
            "recording_segments",
            "Trace segments started (--record DIR)",
        );
        let recording_removed = counter(
            "recording_removed_segments",
            "Trace segments removed by retention (--retain-size, --retain-time)",
        );
        let output_lines_lost = counter(
            "output_lines_lost",
            "Event lines --output could not write (a full disk, a write error)",
        );
        let resync_unread = counter(
            "resync_unread_processes",
            "Processes left out of a /proc re-read because reading them passed its deadline",
        );
        let recording_paused = Gauge::default();
        registry.register(
            "recording_paused",
            "1 while the recorder cannot write (it tries again every second)",
            recording_paused.clone(),
        );
        let recording_dir_bytes = Gauge::default();
        registry.register_with_unit(
            "recording_dir_size",
            "Size of the trace segments in the --record directory",
            Unit::Bytes,
            recording_dir_bytes.clone(),
        );
        let resync_stuck = Gauge::default();
        registry.register(
            "resync_stuck_reads",
            "/proc reads that passed their deadline and have not returned yet",
            resync_stuck.clone(),
        );
        Self {
            recording_paused,
            recording_records_lost,
            recording_segments,
            recording_removed,
            recording_dir_bytes,
            output_lines_lost,
            resync_unread,
            resync_stuck,
        }
    }
}

/// Brings a counter up to a total kept elsewhere.
fn catch_up(counter: &Counter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

impl Metrics {
    pub fn new(ring_buffer_bytes: u32) -> Self {
        let mut registry = Registry::with_prefix("podtrace");
        let events = Family::<TypeLabel, Counter>::default();
        for kind in [Kind::Exec, Kind::Fork, Kind::Exit, Kind::Thread] {
            // Every type is exported from the start, at 0.
            drop(events.get_or_create(&[("type", kind_label(kind))]));
        }
        registry.register(
            "events",
            "Kernel events received, by type (exec, fork, exit, thread)",
            events.clone(),
        );
        let lost = Counter::default();
        registry.register(
            "lost_events",
            "Events the kernel could not deliver (ring buffer full)",
            lost.clone(),
        );
        let decode_errors = Counter::default();
        registry.register(
            "decode_errors",
            "Malformed ring-buffer records (dropped)",
            decode_errors.clone(),
        );
        let redacted = Counter::default();
        registry.register(
            "redacted_args",
            "argv elements changed by redaction (--redact-args and the default rules)",
            redacted.clone(),
        );
        let processes = Gauge::default();
        registry.register(
            "tracked_processes",
            "Live processes in the process table",
            processes.clone(),
        );
        let containers = Gauge::default();
        registry.register(
            "containers",
            "Containers known with a live helper or init",
            containers.clone(),
        );
        let pods = Gauge::default();
        registry.register(
            "pods",
            "Distinct pods (by uid) among those containers",
            pods.clone(),
        );
        let ring = Gauge::default();
        ring.set(i64::from(ring_buffer_bytes));
        registry.register_with_unit(
            "ring_buffer_size",
            "Size of the kernel ring buffer",
            Unit::Bytes,
            ring.clone(),
        );
        let kernel_threads = Counter::default();
        registry.register(
            "kernel_threads",
            "Threads created, counted by the kernel programs (events only with --threads)",
            kernel_threads.clone(),
        );
        let kernel_read_errors = Counter::default();
        registry.register(
            "kernel_read_errors",
            "Kernel reads that failed, leaving some event fields 0",
            kernel_read_errors.clone(),
        );
        let kernel_counters_readable = Gauge::default();
        registry.register(
            "kernel_counters_readable",
            "1 when the kernel programs' counters (drops, threads) could be read at the last \
             tick; 0: losses are unknown, not zero",
            kernel_counters_readable.clone(),
        );
        let held = Gauge::default();
        registry.register(
            "held_events",
            "Events held now for their kubelet container's CRI answer (--hold-ms)",
            held.clone(),
        );
        let released = Family::<TypeLabel, Counter>::default();
        for how in RELEASES {
            drop(released.get_or_create(&[("how", how)]));
        }
        registry.register(
            "released_events",
            "Held events released, by how: named (the CRI answered), after_bound (unnamed), \
             unanswered (the CRI had none), full (too many held), at_end",
            released.clone(),
        );
        let cri = CriMetrics::register(&mut registry);
        let writes = WriteMetrics::register(&mut registry);
        Self {
            writes,
            held,
            released,
            kernel_counters_readable,
            cri,
            heartbeat: Heartbeat::new(),
            stall_after: STALL_AFTER,
            registry,
            events,
            lost,
            decode_errors,
            redacted,
            processes,
            containers,
            pods,
            ring_buffer_bytes: ring,
            kernel_threads,
            kernel_read_errors,
        }
    }

    /// `/healthz` fails after `stall_after` without a tick instead of [`STALL_AFTER`].
    pub fn with_stall_after(mut self, stall_after: Duration) -> Self {
        self.stall_after = stall_after;
        self
    }

    /// The run loop ticked (`/healthz`).
    pub fn beat(&self) {
        self.heartbeat.beat();
    }

    /// The `/healthz` answer now: (status, body).
    fn health(&self) -> (&'static str, String) {
        health_reply(self.heartbeat.age(), self.stall_after)
    }

    pub fn event(&self, kind: Kind) {
        self.events
            .get_or_create(&[("type", kind_label(kind))])
            .inc();
    }

    pub fn lost(&self, count: u64) {
        self.lost.inc_by(count);
    }

    pub fn decode_error(&self) {
        self.decode_errors.inc();
    }

    pub fn redacted(&self, elements: u64) {
        if elements > 0 {
            self.redacted.inc_by(elements);
        }
    }

    /// Refreshes the gauges from the engine.
    pub fn observe_engine(&self, engine: &Engine) {
        self.processes
            .set(i64::try_from(engine.table().live_len()).unwrap_or(i64::MAX));
        let live: Vec<_> = engine
            .containers()
            .all()
            .filter(|c| c.finished_ns.is_none())
            .collect();
        self.containers
            .set(i64::try_from(live.len()).unwrap_or(i64::MAX));
        let pods: std::collections::HashSet<&str> =
            live.iter().filter_map(|c| c.pod_uid.as_deref()).collect();
        self.pods.set(i64::try_from(pods.len()).unwrap_or(i64::MAX));
        catch_up(
            &self.cri.disagreements,
            engine.containers().stats.cri_disagreements,
        );
        let h = engine.hold_stats();
        self.held.set(i64::try_from(h.held_now).unwrap_or(i64::MAX));
        for (how, total) in RELEASES.iter().zip([
            h.released_named,
            h.released_after_bound,
            h.released_unanswered,
            h.released_full,
            h.released_at_end,
        ]) {
            catch_up(&self.released.get_or_create(&[("how", how)]), total);
        }
    }

    /// Brings the kernel-side counters up to the kernel's totals (None: they could not be
    /// read; the gauge says so and the counters stay).
    pub fn observe_kernel(&self, k: Option<&KernelCounters>) {
        self.kernel_counters_readable.set(i64::from(k.is_some()));
        if let Some(k) = k {
            catch_up(&self.kernel_threads, k.threads);
            catch_up(&self.kernel_read_errors, k.read_errors);
        }
    }

    /// Brings the recorder's and the output file's counters up to their totals.
    pub fn observe_writes(
        &self,
        recording: Option<&crate::trace::segments::RecorderStats>,
        output: Option<&crate::ndjson::OutputStats>,
    ) {
        let w = &self.writes;
        if let Some(r) = recording {
            w.recording_paused.set(i64::from(r.paused));
            w.recording_dir_bytes
                .set(i64::try_from(r.dir_bytes).unwrap_or(i64::MAX));
            catch_up(&w.recording_records_lost, r.records_lost);
            catch_up(&w.recording_segments, r.segments);
            catch_up(&w.recording_removed, r.removed_segments);
        }
        if let Some(o) = output {
            catch_up(&w.output_lines_lost, o.lines_lost);
        }
    }

    /// Processes left out of re-reads so far, and reads stuck now.
    pub fn observe_resync(&self, unread_total: u64, stuck_now: usize) {
        catch_up(&self.writes.resync_unread, unread_total);
        self.writes
            .resync_stuck
            .set(i64::try_from(stuck_now).unwrap_or(i64::MAX));
    }

    /// Brings the CRI counters up to the service's totals.
    pub fn observe_cri(&self, s: &CriStats) {
        let c = &self.cri;
        c.up.set(i64::from(s.up));
        for (counter, total) in [
            (&c.lookups, s.lookups),
            (&c.answered, s.answered),
            (&c.not_found, s.not_found),
            (&c.failures, s.failures),
            (&c.timeouts, s.timeouts),
            (&c.queue_drops, s.queue_drops),
            (&c.latency_us_sum, s.latency.sum_us),
            (&c.latency_count, s.latency.count),
        ] {
            catch_up(counter, total);
        }
        c.cache_size
            .set(i64::try_from(s.cache_size).unwrap_or(i64::MAX));
    }

    pub fn ring_buffer_bytes(&self) -> i64 {
        self.ring_buffer_bytes.get()
    }

    /// The exposition text (OpenMetrics, ends with `# EOF`).
    pub fn encode(&self) -> Result<String> {
        let mut text = String::new();
        encode(&mut text, &self.registry).context("encoding the metrics")?;
        Ok(text)
    }
}

/// Binds the metrics listener (before the kernel programs load, so a bad address fails fast).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        crate::error::Failure::BadInput(format!("--metrics-addr {addr}: cannot listen: {e}")).into()
    })
}

/// Accepts connections for as long as the run lasts (the task is dropped with the runtime).
pub async fn serve(listener: TcpListener, metrics: Arc<Metrics>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let m = Arc::clone(&metrics);
                tokio::spawn(async move {
                    if let Err(e) = respond(stream, &m).await {
                        tracing::debug!("metrics request from {peer}: {e:#}");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: wait instead of spinning.
                tracing::warn!("metrics listener: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// What to answer to a request head.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    Metrics { head_only: bool },
    Health { head_only: bool },
    NotFound,
    MethodNotAllowed,
    BadRequest,
}

fn route(head: &str) -> Route {
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return Route::BadRequest;
    };
    if !version.starts_with("HTTP/1.") {
        return Route::BadRequest;
    }
    let path = target.split('?').next().unwrap_or(target);
    match (method, path) {
        ("GET", "/metrics") => Route::Metrics { head_only: false },
        ("HEAD", "/metrics") => Route::Metrics { head_only: true },
        ("GET", "/healthz") => Route::Health { head_only: false },
        ("HEAD", "/healthz") => Route::Health { head_only: true },
        ("GET" | "HEAD", _) => Route::NotFound,
        _ => Route::MethodNotAllowed,
    }
}

fn response(status: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    if status.starts_with("405") {
        out.push_str("Allow: GET, HEAD\r\n");
    }
    out.push_str("\r\n");
    if !head_only {
        out.push_str(body);
    }
    out.into_bytes()
}

/// Reads the request head (bounded in size and time) and answers; one request per connection.
async fn respond(mut stream: TcpStream, metrics: &Metrics) -> Result<()> {
    let mut buf = Vec::with_capacity(512);
    let read_head = async {
        let mut chunk = [0u8; 1024];
        loop {
            let n = stream
                .read(&mut chunk)
                .await
                .context("reading the request")?;
            if n == 0 {
                anyhow::bail!("connection closed before the end of the request head");
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
                return Ok(());
            }
            if buf.len() > MAX_REQUEST {
                anyhow::bail!("request head larger than {MAX_REQUEST} bytes");
            }
        }
    };
    let head_ok = tokio::time::timeout(REQUEST_TIMEOUT, read_head)
        .await
        .map_err(|_| anyhow::anyhow!("no request head within {REQUEST_TIMEOUT:?}"))
        .and_then(|r| r);
    let text_plain = "text/plain; charset=utf-8";
    let reply = match head_ok {
        Err(e) if buf.len() <= MAX_REQUEST => return Err(e),
        Err(_) => response("431 Request Header Fields Too Large", text_plain, "", false),
        Ok(()) => match route(&String::from_utf8_lossy(&buf)) {
            Route::Metrics { head_only } => match metrics.encode() {
                Ok(body) => response("200 OK", CONTENT_TYPE, &body, head_only),
                Err(e) => response(
                    "500 Internal Server Error",
                    text_plain,
                    &format!("{e:#}\n"),
                    head_only,
                ),
            },
            Route::Health { head_only } => {
                let (status, body) = metrics.health();
                response(status, text_plain, &body, head_only)
            }
            Route::NotFound => response(
                "404 Not Found",
                text_plain,
                "not found: metrics are at /metrics, liveness at /healthz\n",
                false,
            ),
            Route::MethodNotAllowed => {
                response("405 Method Not Allowed", text_plain, "use GET\n", false)
            }
            Route::BadRequest => response("400 Bad Request", text_plain, "", false),
        },
    };
    stream
        .write_all(&reply)
        .await
        .context("writing the response")?;
    stream.shutdown().await.context("closing the connection")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert_eq!(
            route("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Metrics { head_only: false }
        );
        assert_eq!(
            route("HEAD /metrics?x=1 HTTP/1.0\r\n\r\n"),
            Route::Metrics { head_only: true }
        );
        assert_eq!(
            route("GET /healthz HTTP/1.0\r\n\r\n"),
            Route::Health { head_only: false }
        );
        assert_eq!(
            route("HEAD /healthz HTTP/1.1\r\n\r\n"),
            Route::Health { head_only: true }
        );
        assert_eq!(route("GET / HTTP/1.1\r\n\r\n"), Route::NotFound);
        assert_eq!(
            route("POST /metrics HTTP/1.1\r\n\r\n"),
            Route::MethodNotAllowed
        );
        assert_eq!(route("garbage\r\n\r\n"), Route::BadRequest);
        assert_eq!(route(""), Route::BadRequest);
        assert_eq!(route("GET /metrics SPDY/3\r\n\r\n"), Route::BadRequest);
    }

    #[test]
    fn health_is_the_age_of_the_last_tick() {
        let limit = Duration::from_secs(10);
        let (status, body) = health_reply(Duration::from_millis(100), limit);
        assert_eq!(status, "200 OK");
        assert!(
            body.starts_with("ok: the event loop ticked 0.1 s ago"),
            "{body}"
        );
        let (status, body) = health_reply(Duration::from_millis(12_300), limit);
        assert!(status.starts_with("503"), "{status}");
        assert!(
            body.contains("12.3 s ago") && body.contains("more than 10 s"),
            "{body}"
        );
        let h = Heartbeat::new();
        std::thread::sleep(Duration::from_millis(30));
        assert!(h.age() >= Duration::from_millis(30));
        h.beat();
        assert!(h.age() < Duration::from_millis(30));
    }

    /// Over a real socket: 200 while ticking, 503 with the reason once the ticks stop.
    #[tokio::test(flavor = "current_thread")]
    async fn healthz_over_http() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let m = Arc::new(Metrics::new(4096).with_stall_after(Duration::from_millis(200)));
        m.beat();
        tokio::spawn(serve(listener, Arc::clone(&m)));
        let get = |path: &'static str| async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                .await
                .expect("write");
            let mut out = String::new();
            s.read_to_string(&mut out).await.expect("read");
            out
        };
        let ok = get("/healthz").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        assert!(ok.contains("ok: the event loop ticked"), "{ok}");
        tokio::time::sleep(Duration::from_millis(300)).await;
        let stalled = get("/healthz").await;
        assert!(stalled.starts_with("HTTP/1.1 503"), "{stalled}");
        assert!(
            stalled.contains("stalled: the event loop last ticked"),
            "{stalled}"
        );
        m.beat();
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200 OK"));
        let nf = get("/nope").await;
        assert!(nf.contains("/healthz"), "{nf}");
    }

    #[test]
    fn exposition_has_every_metric_and_counts() {
        let m = Metrics::new(1 << 23);
        m.event(Kind::Exec);
        m.event(Kind::Exec);
        m.event(Kind::Fork);
        m.lost(5);
        m.decode_error();
        m.redacted(2);
        m.observe_kernel(Some(&KernelCounters {
            threads: 7,
            read_errors: 1,
            sent: 3,
            ..KernelCounters::default()
        }));
        // Totals, not increments: observing the same totals again changes nothing.
        m.observe_kernel(Some(&KernelCounters {
            threads: 7,
            read_errors: 1,
            sent: 3,
            ..KernelCounters::default()
        }));
        let text = m.encode().expect("encodes");
        let unreadable = {
            let m = Metrics::new(1 << 23);
            m.observe_kernel(None);
            m.encode().expect("encodes")
        };
        assert!(
            unreadable
                .lines()
                .any(|l| l == "podtrace_kernel_counters_readable 0"),
            "unknown is not zero: {unreadable}"
        );
        for line in [
            "podtrace_events_total{type=\"exec\"} 2",
            "podtrace_events_total{type=\"fork\"} 1",
            "podtrace_events_total{type=\"exit\"} 0",
            "podtrace_events_total{type=\"thread\"} 0",
            "podtrace_lost_events_total 5",
            "podtrace_decode_errors_total 1",
            "podtrace_redacted_args_total 2",
            "podtrace_tracked_processes 0",
            "podtrace_containers 0",
            "podtrace_pods 0",
            "podtrace_ring_buffer_size_bytes 8388608",
            "podtrace_kernel_threads_total 7",
            "podtrace_kernel_read_errors_total 1",
            "podtrace_kernel_counters_readable 1",
            "podtrace_held_events 0",
            "podtrace_released_events_total{how=\"named\"} 0",
            "podtrace_released_events_total{how=\"after_bound\"} 0",
            "# TYPE podtrace_events counter",
            "# UNIT podtrace_ring_buffer_size_bytes bytes",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing `{line}` in:\n{text}"
            );
        }
    }

    #[test]
    fn gauges_follow_the_engine() {
        use crate::snapshot::ProcInfo;
        use crate::trace::{Header, Record};

        let proc_in = |pid: u32, ppid: u32, argv: &[&str], cgroup: &str, cgroup_id: u64| ProcInfo {
            pid,
            ppid,
            start_ns: 1_000_000_000,
            nspid: pid,
            pidns: 1,
            uid: 0,
            gid: 0,
            comm: argv[0]
                .rsplit('/')
                .next()
                .unwrap_or("x")
                .chars()
                .take(15)
                .collect(),
            exe: Some(argv[0].to_string()),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            argv_truncated: false,
            zombie: false,
            cgroup: Some(cgroup.to_string()),
            cgroup_id,
            cgroup_v1: None,
            cgroup_v1_id: 0,
        };
        let id_a = "a".repeat(64);
        let id_b = "b".repeat(64);
        let conmon = |pid: u32, id: &str, pod: &str, uid: &str| {
            proc_in(
                pid,
                1,
                &[
                    "/usr/bin/conmon",
                    "-c",
                    id,
                    "-n",
                    &format!("k8s_app_{pod}_default_{uid}_0"),
                    "-l",
                    &format!("/var/log/pods/default_{pod}_{uid}/app/0.log"),
                ],
                "/machine.slice/conmon.scope",
                0,
            )
        };
        let procs = vec![
            proc_in(1, 0, &["/sbin/init"], "/", 1),
            conmon(100, &id_a, "web", "11111111-1111-1111-1111-111111111111"),
            conmon(200, &id_b, "web", "11111111-1111-1111-1111-111111111111"),
        ];
        let mut engine = Engine::new(&Header {
            format: crate::trace::FORMAT_VERSION,
            podtrace_version: "test".into(),
            kernel_release: "test".into(),
            hostname: "test".into(),
            boot_offset_ns: 0,
            host_pidns: 1,
            node: None,
            started_unix_ns: 0,
            cgroups: crate::cgroups::CgroupSetup::v2_only(),
            hold_ns: 0,
            segment: None,
        });
        let mut out = Vec::new();
        for p in procs {
            engine.apply(&Record::Proc(p), &mut out);
        }
        engine.apply(&Record::SnapshotEnd {}, &mut out);
        let m = Metrics::new(4096);
        m.observe_engine(&engine);
        assert_eq!(m.processes.get(), 3);
        assert_eq!(m.containers.get(), 2, "two conmons, two containers");
        assert_eq!(m.pods.get(), 1, "both in one pod");
        assert_eq!(m.ring_buffer_bytes(), 4096);
    }
}
