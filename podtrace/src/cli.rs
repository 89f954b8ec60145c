//! Command line.
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::cgroups::CgroupMode;

#[derive(Parser, Debug)]
#[command(
    name = "podtrace",
    version,
    about = "Process lifecycle of Kubernetes / OpenShift nodes, from the kernel: exec, fork and exit attributed to containers and pods"
)]
pub struct Cli {
    /// Log level for stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info", env = "PODTRACE_LOG")]
    pub log: String,
    #[command(subcommand)]
    pub cmd: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace the node: one JSON object per line for every process exec, fork and exit.
    Run(RunArgs),
    /// Record a trace without printing events (same as `run --record PATH --quiet`).
    Record {
        /// Trace file to write (zstd-compressed when it ends in .zst), or a directory (an
        /// existing one, a path ending in `/`, or with --segment-*/--retain-*) to write
        /// rotated segments into.
        #[arg(short = 'o', long = "output")]
        output: PathBuf,
        #[command(flatten)]
        segments: SegmentArgs,
        #[command(flatten)]
        tracer: TracerArgs,
    },
    /// Replay a recorded trace through the same engine: prints what `run` printed. A
    /// directory of segments replays them in order.
    Replay {
        file: PathBuf,
        #[command(flatten)]
        filters: FilterArgs,
        /// Skip bad records (counted and reported at the end) instead of stopping at the first.
        #[arg(long)]
        lenient: bool,
        /// Write the (filtered) events in this format to stdout instead of NDJSON:
        /// chrome-trace is Trace Event Format JSON for Perfetto and chrome://tracing.
        #[arg(long, value_enum)]
        export: Option<ExportFormat>,
    },
    /// Pods, containers and their process trees: now (from /proc), or from a trace.
    Tree(TreeArgs),
    /// Full screen: the node's pods, containers and process trees as they change (from the
    /// kernel's events, as `run`), or a recorded trace played through the same view.
    Top(TopArgs),
    /// Print the JSON Schema of the event lines.
    Schema,
    /// Whether and how podtrace will run on this node: one line per item (kernel, BTF,
    /// attach path and transport, capabilities, RLIMIT_MEMLOCK, cgroups, CRI, pid namespace),
    /// ok / warn / fail with the fix. Loads the programs as `run` would and unloads them.
    /// Exit 0 when nothing fails, 1 otherwise.
    Check(CheckArgs),
    /// Ask a running `podtrace run --metrics-addr` whether its event loop is making progress
    /// (GET /healthz): exit 0 when it is, 1 otherwise (for exec liveness probes).
    Health(HealthArgs),
}

#[derive(Args, Debug)]
pub struct CheckArgs {
    /// JSON instead of text: the lines, the overall verdict and the facts they come from.
    #[arg(long)]
    pub json: bool,
    /// Kernel ring buffer size in bytes, as for `run` (what RLIMIT_MEMLOCK must cover on
    /// kernels before 5.11).
    #[arg(long, default_value_t = 1 << 22, value_parser = parse_ring_size)]
    pub ring_buffer_bytes: u32,
    /// Which cgroup hierarchy places processes, as for `run`.
    #[arg(long, value_enum, default_value_t = CgroupMode::Auto, env = "PODTRACE_CGROUP_MODE")]
    pub cgroup_mode: CgroupMode,
    #[command(flatten)]
    pub kernel: KernelArgs,
    /// The CRI socket to ask, as for `run` (default: the first that answers of the usual ones).
    #[arg(long, value_name = "ENDPOINT", env = "CONTAINER_RUNTIME_ENDPOINT")]
    pub cri_endpoint: Option<String>,
    /// Do not ask the CRI.
    #[arg(long)]
    pub no_cri: bool,
}

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// Where `podtrace run --metrics-addr` listens.
    #[arg(long, default_value = "127.0.0.1:9464", value_name = "ADDR")]
    pub addr: std::net::SocketAddr,
    /// Give up after this long in all (connect, ask, answer): 2s, 500ms, 1.5 (seconds).
    #[arg(long, default_value = "2s", value_parser = parse_timeout)]
    pub timeout: Duration,
}

/// `replay --export` formats.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExportFormat {
    /// Trace Event Format JSON: a track per container, a slice per process lifetime.
    ChromeTrace,
}

#[derive(Args, Debug, Clone)]
pub struct TracerArgs {
    /// Stop after this many seconds, from 0.001 to 315360000 (3650 days) (default: until
    /// SIGINT/SIGTERM).
    #[arg(long, value_parser = parse_seconds)]
    pub duration: Option<Duration>,
    /// Kernel ring buffer size in bytes (a power of two from 4096 to 2147483648).
    #[arg(long, default_value_t = 1 << 22, value_parser = parse_ring_size)]
    pub ring_buffer_bytes: u32,
    /// With a CRI: hold the events of a kubelet container for up to this many milliseconds
    /// (0 to 60000) until the CRI names it and its image, so they go out named from its first
    /// event; 0 prints them at once, unnamed until the answer (docs/events.md).
    #[arg(long, default_value_t = HOLD_MS_DEFAULT, value_parser = parse_hold_ms)]
    pub hold_ms: u64,
    /// Also report new threads (type "thread"); they are never reported as processes.
    #[arg(long)]
    pub threads: bool,
    /// Forward the kernel programs' debug log (aya-log) to stderr.
    #[arg(long)]
    pub kernel_debug: bool,
    /// Write a JSON summary at exit (event counts, loss, the kernel's counters; run time per
    /// kernel program with --kernel-stats).
    #[arg(long)]
    pub summary: Option<PathBuf>,
    /// Turn on the kernel's BPF run-time statistics while running (for every BPF program on
    /// the node; needs CAP_SYS_ADMIN) and put each podtrace program's run count and run time
    /// in the summary.
    #[arg(long, requires = "summary")]
    pub kernel_stats: bool,
    /// Node name added to every event as "node".
    #[arg(long, env = "NODE_NAME")]
    pub node: Option<String>,
    /// Serve Prometheus metrics on http://ADDR/metrics (off by default; e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Replace argv elements matching this regular expression with `<redacted>` (keeping a
    /// leading `NAME=`), in output and records; repeatable. Adds to the default rules.
    #[arg(long = "redact-args", value_name = "REGEX")]
    pub redact_args: Vec<String>,
    /// Turn off the default redaction rules (--password=..., --token VALUE, AWS_SECRET_*=...,
    /// Authorization: Bearer ..., mysql -pPASSWORD, user:password@ in URLs).
    #[arg(long)]
    pub no_default_redaction: bool,
    /// Which cgroup hierarchy places processes: auto (v2 where mounted, a v1 controller
    /// hierarchy where v2 is not in use for a task), v2, or v1.
    #[arg(long, value_enum, default_value_t = CgroupMode::Auto, env = "PODTRACE_CGROUP_MODE")]
    pub cgroup_mode: CgroupMode,
    #[command(flatten)]
    pub kernel: KernelArgs,
    #[command(flatten)]
    pub cri: CriArgs,
}

/// How the kernel programs attach and send (`run`, `record`, `check`): by default the first
/// of each chain the kernel takes.
#[derive(Args, Debug, Clone, Default)]
pub struct KernelArgs {
    /// Attach as BTF tracepoints (tp-btf) or raw tracepoints (raw-tp); default: tp-btf, and
    /// raw-tp where the kernel refuses tp-btf.
    #[arg(long, value_enum, value_name = "TYPE", env = "PODTRACE_ATTACH")]
    pub attach: Option<crate::loader::Attach>,
    /// Records through the BPF ring buffer (ring-buffer) or per-CPU perf buffers
    /// (perf-buffer); default: ring-buffer, and perf-buffer where the kernel cannot create
    /// a ring buffer.
    #[arg(long, value_enum, value_name = "TRANSPORT", env = "PODTRACE_TRANSPORT")]
    pub transport: Option<crate::transport::Transport>,
}

/// Where names and images come from besides argv and cgroup paths (`run`, `record`, `tree`).
#[derive(Args, Debug, Clone, Default)]
pub struct CriArgs {
    /// The container runtime's CRI socket, for pod, container and image names
    /// (`unix:///path` or a path). Default: the first that answers of containerd's, cri-o's,
    /// cri-dockerd's and k3s's sockets.
    #[arg(long, value_name = "ENDPOINT", env = "CONTAINER_RUNTIME_ENDPOINT")]
    pub cri_endpoint: Option<String>,
    /// Do not ask the CRI (names then come from runtime helpers' argv and cgroup paths only).
    #[arg(long)]
    pub no_cri: bool,
    /// Also keep pod labels and annotations from the CRI (redacted like argv; they can be
    /// large and may hold secrets).
    #[arg(long)]
    pub cri_labels: bool,
}

impl CriArgs {
    /// The CRI configuration, None with `--no-cri`.
    pub fn config(&self) -> Option<crate::cri::CriConfig> {
        (!self.no_cri).then(|| crate::cri::CriConfig {
            endpoint: self.cri_endpoint.clone(),
            labels: self.cri_labels,
            ..crate::cri::CriConfig::default()
        })
    }
}

/// Which pod, namespace or container (`run`, `replay` and `tree` alike).
#[derive(Args, Debug, Clone, Default)]
pub struct Selection {
    /// Only this pod (name).
    #[arg(long)]
    pub pod: Option<String>,
    /// Only pods in this namespace.
    #[arg(long)]
    pub namespace: Option<String>,
    /// Only this container (id prefix or name).
    #[arg(long)]
    pub container: Option<String>,
}

#[derive(Args, Debug, Clone, Default)]
pub struct FilterArgs {
    #[command(flatten)]
    pub select: Selection,
    /// Only events of processes in containers (conmon and shims included).
    #[arg(long)]
    pub containers_only: bool,
    /// Only these event types, comma separated: exec,fork,exit,thread.
    #[arg(long = "event")]
    pub events: Option<String>,
}

/// Segments of a recording into a directory (`run --record DIR`, `record -o DIR`).
#[derive(Args, Debug, Clone, Default)]
pub struct SegmentArgs {
    /// A segment ends before its file takes more than this: bytes, or with K, M, G (1024
    /// based): 64M by default, at least 64K.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub segment_size: Option<u64>,
    /// A segment ends after this long: 90s, 30m, 1h (the default), 1d; at least 1s.
    #[arg(long, value_name = "AGE", value_parser = parse_age)]
    pub segment_time: Option<Duration>,
    /// The directory's segments take at most this much (the oldest go first): 1G by default,
    /// at least twice --segment-size; 0: no bound.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub retain_size: Option<u64>,
    /// Segments that ended longer ago than this go: 7d by default; 0: no bound.
    #[arg(long, value_name = "AGE", value_parser = parse_age_or_zero)]
    pub retain_time: Option<Duration>,
}

impl SegmentArgs {
    /// Whether any was given (the path is then a directory).
    pub fn any(&self) -> bool {
        self.segment_size.is_some()
            || self.segment_time.is_some()
            || self.retain_size.is_some()
            || self.retain_time.is_some()
    }

    /// Where `--record PATH` writes: segments in a directory when PATH is one (or ends in
    /// `/`) or segments were asked for, else one file.
    pub fn target(
        &self,
        path: PathBuf,
    ) -> Result<crate::trace::segments::Target, crate::error::Failure> {
        use crate::trace::segments::{Rotation, Target};
        let slash = path.as_os_str().as_encoded_bytes().ends_with(b"/");
        let is_dir = path.is_dir();
        if !(is_dir || slash || self.any()) {
            return Ok(Target::File(path));
        }
        if path.is_file() {
            return Err(crate::error::Failure::BadInput(format!(
                "{}: is a file; --segment-* and --retain-* record into a directory",
                path.display()
            )));
        }
        let d = Rotation::default();
        let rotation = Rotation {
            segment_bytes: self.segment_size.unwrap_or(d.segment_bytes),
            segment_age: self.segment_time.unwrap_or(d.segment_age),
            retain_bytes: match self.retain_size {
                Some(0) => None,
                Some(n) => Some(n),
                None => d.retain_bytes,
            },
            retain_age: match self.retain_time {
                Some(t) if t.is_zero() => None,
                Some(t) => Some(t),
                None => d.retain_age,
            },
        };
        rotation.check()?;
        Ok(Target::Dir {
            dir: path,
            rotation,
        })
    }
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// Write events here instead of stdout (appended to; reopened on SIGHUP, for log
    /// rotation).
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
    /// Also record a trace for `podtrace replay`: a file (.zst: compressed), or a directory
    /// of rotated segments (an existing directory, a path ending in `/`, or with
    /// --segment-*/--retain-*).
    #[arg(long)]
    pub record: Option<PathBuf>,
    #[command(flatten)]
    pub segments: SegmentArgs,
    /// Print no events (with --record).
    #[arg(long)]
    pub quiet: bool,
    #[command(flatten)]
    pub tracer: TracerArgs,
    #[command(flatten)]
    pub filters: FilterArgs,
}

#[derive(Args, Debug)]
pub struct TreeArgs {
    /// JSON instead of text.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub select: Selection,
    /// Also show processes outside containers.
    #[arg(long)]
    pub all: bool,
    /// Build the tree from a trace instead of the live system.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// With --from: the time to show, RFC 3339 or an offset from the start such as +5s, +250ms
    /// (at most 3650 days).
    #[arg(long, requires = "from", value_parser = parse_at)]
    pub at: Option<At>,
    /// With --from: skip bad records.
    #[arg(long)]
    pub lenient: bool,
    /// Live tree: which cgroup hierarchy places processes (as `run --cgroup-mode`).
    #[arg(long, value_enum, default_value_t = CgroupMode::Auto, env = "PODTRACE_CGROUP_MODE")]
    pub cgroup_mode: CgroupMode,
    /// Live tree: names and images from the CRI (as `run`).
    #[command(flatten)]
    pub cri: CriArgs,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub select: Selection,
    /// Only processes whose command line contains this text (and what they hang under).
    #[arg(long)]
    pub command: Option<String>,
    /// Also show processes outside containers (H shows and hides them).
    #[arg(long)]
    pub all: bool,
    /// Take the picture again this often, in seconds (0.1 to 60): execs per second and
    /// short-lived processes are counted over it.
    #[arg(long, default_value = "1", value_parser = parse_interval)]
    pub interval: Duration,
    /// Play this trace (`run --record`, `record`) through the view instead of tracing the
    /// node.
    #[arg(long)]
    pub from: Option<PathBuf>,
    /// With --from: start at this time, RFC 3339 or an offset from the start such as +5s (as
    /// `tree --at`); default: the end of the trace's start-up snapshot.
    #[arg(long, requires = "from", value_parser = parse_at)]
    pub at: Option<At>,
    /// With --from: play this many times faster than recorded (1/64 to 1024; > and < double
    /// and halve it).
    #[arg(long, requires = "from", default_value = "1", value_parser = parse_speed)]
    pub speed: f64,
    /// With --from: skip bad records.
    #[arg(long, requires = "from")]
    pub lenient: bool,
    /// Start frozen (f unfreezes; with --from: paused at the start time).
    #[arg(long)]
    pub frozen: bool,
    /// Live: also record a trace file for `replay` and `top --from` (.zst: compressed).
    #[arg(long, conflicts_with = "from")]
    pub record: Option<PathBuf>,
    #[command(flatten)]
    pub tracer: TracerArgs,
}

/// `top --interval`: 0.1 to 60 seconds.
fn parse_interval(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("`{s}` is not a number of seconds from 0.1 to 60"))?;
    if !(v.is_finite() && (0.1..=60.0).contains(&v)) {
        return Err(format!(
            "`{s}` is out of range: expected 0.1 to 60 (seconds)"
        ));
    }
    Ok(Duration::from_secs_f64(v))
}

/// `top --speed`: 1/64 to 1024.
fn parse_speed(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_start_matches('x')
        .parse()
        .map_err(|_| format!("`{s}` is not a speed from 0.015625 (1/64) to 1024"))?;
    if !(v.is_finite() && (1.0 / 64.0..=1024.0).contains(&v)) {
        return Err(format!(
            "`{s}` is out of range: expected 0.015625 (1/64) to 1024"
        ));
    }
    Ok(v)
}

/// The longest `--duration`, and the furthest `tree --at +OFFSET`: 3650 days.
pub const DURATION_MAX_S: u64 = 3650 * 86_400;
/// The shortest `--duration`: 1 ms.
pub const DURATION_MIN_NS: u64 = 1_000_000;

fn parse_seconds(s: &str) -> Result<Duration, String> {
    let range = format!("a number of seconds from 0.001 to {DURATION_MAX_S}");
    let v: f64 = s
        .trim_end_matches('s')
        .parse()
        .map_err(|_| format!("`{s}` is not {range}"))?;
    // Compared as floats first: a NaN, an infinity or 1e20 never reaches `Duration`.
    if !(v.is_finite() && v >= DURATION_MIN_NS as f64 / 1e9 && v <= DURATION_MAX_S as f64) {
        return Err(format!("`{s}` is out of range: expected {range}"));
    }
    Ok(Duration::from_secs_f64(v))
}

/// `2s`, `500ms`, `1.5` (seconds): positive, at most an hour.
fn parse_timeout(s: &str) -> Result<Duration, String> {
    let (num, scale) = match s.strip_suffix("ms") {
        Some(n) => (n, 1e-3),
        None => (s.strip_suffix('s').unwrap_or(s), 1.0),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (2s, 500ms)"))?;
    let secs = v * scale;
    if !(secs.is_finite() && secs > 0.0 && secs <= 3600.0) {
        return Err(format!(
            "`{s}`: the timeout must be positive and at most an hour"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The largest `--segment-size` / `--retain-size`: 1 PiB.
pub const SIZE_MAX: u64 = 1 << 50;

/// `64M`, `1G`, `500K`, `123456` (bytes; K, M, G, T are 1024 based; `KiB` and `MB` forms
/// too), at most [`SIZE_MAX`].
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let shift = match unit
        .trim()
        .to_ascii_lowercase()
        .trim_end_matches('b')
        .trim_end_matches('i')
    {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("`{s}` is not a size (bytes, or 64M, 1G, 512K)")),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (bytes, or 64M, 1G, 512K)"))?;
    n.checked_mul(1u64 << shift)
        .filter(|v| *v <= SIZE_MAX)
        .ok_or_else(|| format!("`{s}` is out of range: at most {SIZE_MAX} bytes"))
}

/// `90s`, `30m`, `1h`, `7d`, `500ms`: from 1 s to 3650 days.
fn parse_age(s: &str) -> Result<Duration, String> {
    let d = parse_age_or_zero(s)?;
    if d < Duration::from_secs(1) {
        return Err(format!("`{s}` is out of range: at least 1s"));
    }
    Ok(d)
}

/// As [`parse_age`], and 0 (no bound).
fn parse_age_or_zero(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not an age (90s, 30m, 1h, 7d; at most {DURATION_MAX_S}s)");
    let t = s.trim();
    let digits = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(digits);
    let scale = match unit {
        "ms" => 1e-3,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => return Err(bad()),
    };
    let v: f64 = num.parse().map_err(|_| bad())?;
    let secs = v * scale;
    if !(secs.is_finite() && secs >= 0.0 && secs <= DURATION_MAX_S as f64) {
        return Err(bad());
    }
    Ok(Duration::from_secs_f64(secs))
}

/// `--hold-ms` by default: past what containerd and cri-o take here to answer for a new
/// container (docs/events.md, "When names appear").
pub const HOLD_MS_DEFAULT: u64 = 2000;
/// `--hold-ms` at most: a minute.
pub const HOLD_MS_MAX: u64 = 60_000;

fn parse_hold_ms(s: &str) -> Result<u64, String> {
    let range = format!("from 0 to {HOLD_MS_MAX} (milliseconds)");
    let v: u64 = s
        .trim()
        .parse()
        .map_err(|_| format!("`{s}` is not a number {range}"))?;
    if v > HOLD_MS_MAX {
        return Err(format!("{v} is out of range: expected {range}"));
    }
    Ok(v)
}

fn parse_ring_size(s: &str) -> Result<u32, String> {
    let range = format!("a power of two from 4096 to {}", 1u32 << 31);
    let v: u32 = s
        .parse()
        .map_err(|_| format!("`{s}` is not {range} (bytes)"))?;
    if v < 4096 || !v.is_power_of_two() {
        return Err(format!("{v} is out of range: expected {range} (bytes)"));
    }
    Ok(v)
}

/// `tree --at`: a moment of a trace.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum At {
    /// Nanoseconds after the recording started (`+5s`).
    Offset(i64),
    /// Unix nanoseconds (RFC 3339).
    Unix(i64),
}

fn parse_at(s: &str) -> Result<At, String> {
    if s.starts_with('+') {
        return parse_offset(s).map(At::Offset).ok_or_else(|| {
            format!(
                "`{s}` is not an offset from +0s to +{DURATION_MAX_S}s (units: ns, us, ms, s, m)"
            )
        });
    }
    crate::clock::parse_rfc3339(s)
        .map(At::Unix)
        .map_err(|e| format!("expected RFC 3339 or +OFFSET: {e:#}"))
}

/// `+5s`, `+250ms`, `+2m`, `+1.5s` to nanoseconds; None for anything else, and for offsets
/// beyond [`DURATION_MAX_S`].
pub fn parse_offset(s: &str) -> Option<i64> {
    let s = s.strip_prefix('+')?;
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = s.strip_suffix("us") {
        (n, 1e3)
    } else if let Some(n) = s.strip_suffix("ns") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1e9)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60e9)
    } else {
        (s, 1e9)
    };
    let v: f64 = num.parse().ok()?;
    let ns = v * scale;
    (ns.is_finite() && ns >= 0.0 && ns <= DURATION_MAX_S as f64 * 1e9).then_some(ns as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets() {
        assert_eq!(parse_offset("+5s"), Some(5_000_000_000));
        assert_eq!(parse_offset("+250ms"), Some(250_000_000));
        assert_eq!(parse_offset("+2m"), Some(120_000_000_000));
        assert_eq!(parse_offset("5s"), None);
        assert_eq!(parse_offset("+x"), None);
    }

    #[test]
    fn timeouts() {
        assert_eq!(parse_timeout("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_timeout("1.5"), Ok(Duration::from_millis(1500)));
        for bad in ["0", "-1s", "x", "2h", "1e9", ""] {
            assert!(parse_timeout(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_and_ages() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("123"), Ok(123));
        for bad in ["", "M", "1X", "-1", "1.5M", "99999999999999P", "2000T"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_age("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_age_or_zero("0"), Ok(Duration::ZERO));
        for bad in ["0", "500ms", "x", "1w", "-1h", "inf", "99999d"] {
            assert!(parse_age(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ring_sizes() {
        assert!(parse_ring_size("4096").is_ok());
        assert!(parse_ring_size("5000").is_err());
        assert!(parse_ring_size("1024").is_err());
    }

    /// Text a user might give for a number: every float and integer form, with and without
    /// a unit, and near-numbers.
    fn numberish() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let unit = prop_oneof![
            Just(""),
            Just("s"),
            Just("ms"),
            Just("us"),
            Just("ns"),
            Just("m")
        ];
        let number = prop_oneof![
            any::<f64>().prop_map(|v| format!("{v}")),
            any::<f64>().prop_map(|v| format!("{v:e}")),
            any::<u64>().prop_map(|v| v.to_string()),
            any::<i64>().prop_map(|v| v.to_string()),
            any::<u128>().prop_map(|v| v.to_string()),
            (0u32..64).prop_map(|b| (1u128 << b).to_string()),
            "[-+]?[0-9]{0,25}(\\.[0-9]{0,12})?([eE][-+]?[0-9]{1,4})?",
            "[-+0-9.eEinfaNIF]{0,12}",
        ];
        (proptest::option::of(Just("+")), number, unit)
            .prop_map(|(plus, n, u)| format!("{}{n}{u}", plus.unwrap_or("")))
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("podtrace").chain(args.iter().copied()))
    }

    /// A value refused by its parser: clap's error, naming the argument.
    fn refused(e: &clap::Error, arg: &str) {
        assert_eq!(
            e.kind(),
            clap::error::ErrorKind::ValueValidation,
            "{arg}: {e}"
        );
        assert!(e.to_string().contains(arg), "the error names {arg}: {e}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig { cases: 2000, ..Default::default() })]

        /// `--duration`: no panic; accepted values are positive and a deadline can be made
        /// of them; the rest are refused by clap, naming the argument.
        #[test]
        fn duration_is_bounded_at_parse_time(v in numberish()) {
            match parse(&["run", &format!("--duration={v}")]) {
                Ok(Cli { cmd: Command::Run(r), .. }) => {
                    let d = r.tracer.duration.unwrap_or_else(|| panic!("{v}: no duration"));
                    assert!(
                        d >= Duration::from_nanos(DURATION_MIN_NS)
                            && d <= Duration::from_secs(DURATION_MAX_S),
                        "{v}: {d:?} is out of bounds"
                    );
                    assert!(
                        std::time::Instant::now().checked_add(d).is_some(),
                        "{v}: {d:?} makes no deadline"
                    );
                }
                Ok(other) => panic!("{v}: parsed as {other:?}"),
                Err(e) => refused(&e, "--duration"),
            }
        }

        /// `--ring-buffer-bytes`: a power of two of at least 4096, or clap's error.
        #[test]
        fn ring_buffer_bytes_is_bounded_at_parse_time(v in numberish()) {
            match parse(&["record", "-o", "t", &format!("--ring-buffer-bytes={v}")]) {
                Ok(Cli { cmd: Command::Record { tracer, .. }, .. }) => {
                    let n = tracer.ring_buffer_bytes;
                    assert!(n >= 4096 && n.is_power_of_two(), "{v}: {n}");
                }
                Ok(other) => panic!("{v}: parsed as {other:?}"),
                Err(e) => refused(&e, "--ring-buffer-bytes"),
            }
        }

        /// `--hold-ms`: within 0..=60000, or clap's error.
        #[test]
        fn hold_ms_is_bounded_at_parse_time(v in numberish()) {
            match parse(&["run", &format!("--hold-ms={v}")]) {
                Ok(Cli { cmd: Command::Run(r), .. }) => {
                    assert!(r.tracer.hold_ms <= HOLD_MS_MAX, "{v}: {}", r.tracer.hold_ms);
                }
                Ok(other) => panic!("{v}: parsed as {other:?}"),
                Err(e) => refused(&e, "--hold-ms"),
            }
        }

        /// `tree --at`: an offset within bounds or a time, or clap's error.
        #[test]
        fn tree_at_is_bounded_at_parse_time(v in numberish()) {
            match parse(&["tree", "--from", "t", &format!("--at={v}")]) {
                Ok(Cli { cmd: Command::Tree(t), .. }) => match t.at {
                    Some(At::Offset(ns)) => assert!(
                        (0..=DURATION_MAX_S as i64 * 1_000_000_000).contains(&ns),
                        "{v}: {ns}"
                    ),
                    Some(At::Unix(ns)) => assert!(ns >= 0, "{v}: {ns}"),
                    None => panic!("{v}: no --at"),
                },
                Ok(other) => panic!("{v}: parsed as {other:?}"),
                Err(e) => refused(&e, "--at"),
            }
        }

        /// `--metrics-addr`: the port is a number too.
        #[test]
        fn metrics_port_is_bounded_at_parse_time(v in numberish()) {
            match parse(&["run", &format!("--metrics-addr=127.0.0.1:{v}")]) {
                Ok(Cli { cmd: Command::Run(r), .. }) => {
                    assert!(r.tracer.metrics_addr.is_some(), "{v}");
                }
                Ok(other) => panic!("{v}: parsed as {other:?}"),
                Err(e) => refused(&e, "--metrics-addr"),
            }
        }
    }

    #[test]
    fn out_of_range_values_name_the_argument_and_the_range() {
        let err = |args: &[&str]| match parse(args) {
            Ok(c) => panic!("{args:?} parsed: {c:?}"),
            Err(e) => e.to_string(),
        };
        let e = err(&["run", "--duration", "1e20"]);
        assert!(e.contains("--duration") && e.contains("315360000"), "{e}");
        let e = err(&["run", "--duration=-1"]);
        assert!(e.contains("--duration") && e.contains("0.001"), "{e}");
        let e = err(&["run", "--ring-buffer-bytes", "99999999999"]);
        assert!(
            e.contains("--ring-buffer-bytes") && e.contains("4096") && e.contains("2147483648"),
            "{e}"
        );
        let e = err(&["tree", "--from", "t", "--at", "+1e30s"]);
        assert!(e.contains("--at") && e.contains("315360000"), "{e}");
        assert!(parse(&["run", "--duration", "315360000"]).is_ok());
        assert!(parse(&["run", "--duration", "0.5s"]).is_ok());
        assert!(parse(&["run", "--ring-buffer-bytes", "2147483648"]).is_ok());
    }

    #[test]
    fn clap_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
