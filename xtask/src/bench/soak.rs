//! `cargo xtask bench --soak` (issue 12): one long run against one podtrace. A paced exec storm
//! (one million fork+exec+exit by default) and, interleaved with it over the whole run, cgroup
//! churn (20,000 cgroups created in every hierarchy, one process run in each, removed), while
//! podtrace's memory and CPU time are read every 10 s. Passes when nothing is lost and resident
//! memory is flat after warm-up; both are printed as PASS / FAIL, never asserted. Method and
//! the definition of "flat": docs/benchmarks.md.
use std::fmt::Write as _;
use std::io::{Read, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::cgroups;
use super::guard::check_interrupted;
use super::machine;
use super::outputs;
use super::plot;
use super::procfs::Usage;
use super::report;
use super::storm::{CgroupSpec, Storm};
use super::tracers::{self, Config, Tools};
use crate::util;

/// The full soak: exec+exit pairs of the exec storm, and cgroups.
pub const EXECS: usize = 1_000_000;
pub const CGROUPS: usize = 20_000;
/// Between two readings of podtrace's memory and CPU.
pub const INTERVAL: Duration = Duration::from_secs(10);
/// Processes of the flat-out storm that measures the box's rate before the soak.
const CALIBRATION: usize = 10_000;
/// The soak runs at this share of the flat-out rate (see docs/benchmarks.md).
const RATE_SHARE: f64 = 0.5;
/// Flat: the least-squares slope of VmRSS over the second half, per 100,000 events podtrace
/// received, is at most this many KiB (docs/benchmarks.md says why this figure).
pub const FLAT_KIB_PER_100K_EVENTS: f64 = 32.0;
/// podtrace records the soak into segments of this size, the directory bounded to
/// `RETAIN` (`--segment-size`, `--retain-size`): a full soak writes several times the bound.
pub const SEGMENT: &str = "16M";
pub const RETAIN: &str = "64M";
const RETAIN_BYTES: u64 = 64 << 20;

/// Sizes and pace, from the command line.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Exec+exit pairs of the storm (default 1,000,000).
    pub execs: Option<usize>,
    /// Cgroups created and removed over the run (default 20,000).
    pub cgroups: Option<usize>,
    /// Exec starts per second (default: half the flat-out rate measured just before).
    pub rate: Option<f64>,
}

/// One reading.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sample {
    pub elapsed_s: f64,
    /// Kernel events podtrace received so far, and lost (its metrics); None without them.
    pub events: Option<u64>,
    pub lost: Option<u64>,
    /// Cgroups created and removed so far.
    pub cgroups: usize,
    pub usage: Usage,
}

/// What the soak measured.
#[derive(Clone, Debug)]
pub struct Soak {
    pub execs: usize,
    pub cgroups: usize,
    pub workers: usize,
    pub rate: f64,
    /// How the rate was chosen.
    pub rate_how: String,
    pub hierarchies: Vec<String>,
    pub samples: Vec<Sample>,
    /// Processes the two storms started (exec storm, cgroup churn).
    pub started: usize,
    /// podtrace's own totals (--summary).
    pub summary_events: u64,
    pub summary_lost: Option<u64>,
    pub recording: Recording,
}

/// The soak's recording: the directory's size as the soak went, and podtrace's own counts.
#[derive(Clone, Debug, Default)]
pub struct Recording {
    /// The most bytes the directory held at any look (every 100 ms), and at the end.
    pub max_dir_bytes: u64,
    pub end_dir_bytes: u64,
    /// From --summary's `recording`: segments started, removed by retention, records not
    /// written (a full disk); None when the summary did not say.
    pub segments: Option<u64>,
    pub removed: Option<u64>,
    pub records_lost: Option<u64>,
}

/// Bytes of the files in `dir` (0 when it cannot be read yet).
fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |rd| {
        rd.filter_map(|e| e.ok()?.metadata().ok())
            .filter(|m| m.is_file())
            .map(|m| m.len())
            .sum()
    })
}

/// `--summary`'s `recording` counts.
fn summary_recording(summary: &Path, r: &mut Recording) {
    let Ok(text) = std::fs::read_to_string(summary) else {
        return;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return;
    };
    let rec = &v["recording"];
    r.segments = rec["segments"].as_u64();
    r.removed = rec["removed_segments"].as_u64();
    r.records_lost = rec["records_lost"].as_u64();
}

/// Events and lost events from podtrace's OpenMetrics text.
pub fn parse_metrics(text: &str) -> (Option<u64>, Option<u64>) {
    let mut events: Option<u64> = None;
    let mut lost = None;
    for line in text.lines() {
        let Some((name, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Some(v) = value
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
        else {
            continue;
        };
        let v = v as u64;
        if name.starts_with("podtrace_events_total{") {
            events = Some(events.unwrap_or(0) + v);
        } else if name == "podtrace_lost_events_total" {
            lost = Some(v);
        }
    }
    (events, lost)
}

/// GET http://ADDR/metrics (podtrace's own responder, loopback only).
fn scrape(addr: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut text = String::new();
    s.read_to_string(&mut text)
        .with_context(|| format!("reading http://{addr}/metrics"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("http://{addr}/metrics: no HTTP response"))?;
    anyhow::ensure!(
        head.starts_with("HTTP/1.1 200"),
        "http://{addr}/metrics: {}",
        head.lines().next().unwrap_or("")
    );
    Ok(body.to_string())
}

fn free_loopback_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a loopback port")?;
    Ok(l.local_addr()?.port())
}

/// CPU % of one core between two samples.
pub fn cpu_pct(prev: &Sample, now: &Sample) -> Option<f64> {
    let dt = now.elapsed_s - prev.elapsed_s;
    (dt > 0.0)
        .then(|| now.usage.cpu_ns.saturating_sub(prev.usage.cpu_ns) as f64 / (dt * 1e9) * 100.0)
}

/// The samples judged for flatness: the second half of the run (by time). The first half is
/// the warm-up.
pub fn second_half(samples: &[Sample]) -> (f64, Vec<&Sample>) {
    let end = samples.last().map(|s| s.elapsed_s).unwrap_or(0.0);
    let from = end / 2.0;
    (
        from,
        samples.iter().filter(|s| s.elapsed_s >= from).collect(),
    )
}

/// The least-squares slope of VmRSS over the second half, in KiB per 100,000 events.
pub fn flatness(samples: &[Sample]) -> Option<f64> {
    let (_, half) = second_half(samples);
    let pts: Vec<(f64, f64)> = half
        .iter()
        .filter_map(|s| Some((s.events? as f64, s.usage.rss_kb as f64)))
        .collect();
    report::slope(&pts).map(|kib_per_event| kib_per_event * 100_000.0)
}

/// The criteria, each with PASS or FAIL.
pub fn criteria(s: &Soak) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    let min_events = 3 * s.started as u64;
    let lost = s.summary_lost;
    out.push((
        format!(
            "no event lost: podtrace's summary says {} lost; it received {} events, at least 3 \
             (fork, exec, exit) for each of the {} processes started would be {min_events}",
            lost.map(|l| l.to_string())
                .unwrap_or_else(|| "nothing about".into()),
            s.summary_events,
            s.started
        ),
        lost == Some(0) && s.summary_events >= min_events,
    ));
    let slope = flatness(&s.samples);
    let (from, half) = second_half(&s.samples);
    let growth = match (half.first(), half.last()) {
        (Some(a), Some(b)) => format!(
            "; VmRSS {:.1} MiB at {from:.0} s, {:.1} MiB at the end ({:+.1}%)",
            a.usage.rss_kb as f64 / 1024.0,
            b.usage.rss_kb as f64 / 1024.0,
            (b.usage.rss_kb as f64 / a.usage.rss_kb.max(1) as f64 - 1.0) * 100.0
        ),
        _ => String::new(),
    };
    out.push((
        format!(
            "RSS flat after warm-up: least-squares slope of VmRSS over the second half of the run \
             (from {from:.0} s, {} samples) {} KiB per 100,000 events, at most {FLAT_KIB_PER_100K_EVENTS:.0} allowed{growth}",
            half.len(),
            slope
                .map(|v| format!("{v:.1}"))
                .unwrap_or_else(|| "unknown (no event counts)".into()),
        ),
        slope.is_some_and(|v| v <= FLAT_KIB_PER_100K_EVENTS),
    ));
    let r = &s.recording;
    let o = |v: Option<u64>| v.map_or_else(|| "?".into(), |v| v.to_string());
    out.push((
        format!(
            "recording within its bound: the directory held at most {:.1} MiB ({:.1} MiB at the end) of --retain-size {RETAIN}; {} segments of {SEGMENT} started, {} removed by retention, {} records not written",
            r.max_dir_bytes as f64 / 1048576.0,
            r.end_dir_bytes as f64 / 1048576.0,
            o(r.segments),
            o(r.removed),
            o(r.records_lost),
        ),
        r.max_dir_bytes <= RETAIN_BYTES && r.records_lost == Some(0),
    ));
    out
}

/// The samples table.
pub fn table(samples: &[Sample]) -> String {
    let mut t = String::new();
    report::header(
        &mut t,
        &[
            "elapsed s",
            "events so far",
            "cgroups so far",
            "VmRSS MiB",
            "VmHWM MiB",
            "CPU % of one core (interval)",
            "lost",
        ],
    );
    let o = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    let mut prev: Option<&Sample> = None;
    for s in samples {
        let cpu = prev
            .and_then(|p| cpu_pct(p, s))
            .map(|c| format!("{c:.1}"))
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            t,
            "| {:.0} | {} | {} | {:.1} | {:.1} | {cpu} | {} |",
            s.elapsed_s,
            o(s.events),
            s.cgroups,
            s.usage.rss_kb as f64 / 1024.0,
            s.usage.hwm_kb as f64 / 1024.0,
            o(s.lost)
        );
        prev = Some(s);
    }
    t
}

pub fn plot_points(samples: &[Sample]) -> Vec<plot::Point> {
    let mut prev: Option<&Sample> = None;
    samples
        .iter()
        .map(|s| {
            let p = plot::Point {
                elapsed_s: s.elapsed_s,
                rss_mib: s.usage.rss_kb as f64 / 1024.0,
                hwm_mib: s.usage.hwm_kb as f64 / 1024.0,
                cpu_pct: prev.and_then(|p| cpu_pct(p, s)),
            };
            prev = Some(s);
            p
        })
        .collect()
}

/// The Markdown of one soak; `plot` is the PNG's path relative to BENCHMARKS.md.
pub fn render(s: &Soak, head: &str, plot: &str) -> String {
    let mut t = String::new();
    t.push_str(head);
    let _ = writeln!(
        t,
        "- command: `cargo xtask bench --soak`: {} × fork+exec+wait of `/bin/busybox true` from {} workers at {:.0} starts/s ({}), interleaved over the whole run with {} cgroups created one after the other as `crio-<id>.scope` in one pod slice in every hierarchy ({}), a `busybox true` run in each, then removed; against one `podtrace run --output /dev/null --summary SUMMARY --kernel-stats --metrics-addr 127.0.0.1:PORT --record DIR/ --segment-size {SEGMENT} --retain-size {RETAIN}`; memory (/proc/PID/status) and CPU time (/proc/PID/stat utime+stime) read every {} s, the recording directory's size every 100 ms",
        s.execs,
        s.workers,
        s.rate,
        s.rate_how,
        s.cgroups,
        s.hierarchies.join(", "),
        INTERVAL.as_secs()
    );
    let _ = writeln!(t, "\n### Samples\n");
    t.push_str(&table(&s.samples));
    let _ = writeln!(
        t,
        "\nEvents and lost: podtrace's own counters (`podtrace_events_total`, all types, every process on the box; `podtrace_lost_events_total`) when read. CPU: utime+stime over the interval ending at that row, in % of one core.\n"
    );
    let _ = writeln!(
        t,
        "![podtrace VmRSS, VmHWM and CPU over the soak]({plot})\n"
    );
    let _ = writeln!(t, "### Criteria (printed, never asserted)\n");
    let all = criteria(s);
    for (what, ok) in &all {
        let _ = writeln!(t, "- {what} — **{}**", if *ok { "PASS" } else { "FAIL" });
    }
    let _ = writeln!(
        t,
        "\nsoak: **{}**",
        if all.iter().all(|c| c.1) {
            "PASS"
        } else {
            "FAIL"
        }
    );
    t
}

/// Reads podtrace's memory, CPU and (when served) metrics now.
fn sample(pid: i32, metrics: Option<&str>, t0: Instant, cgroups: usize) -> Result<Sample> {
    let usage = Usage::read(pid)?;
    let (events, lost) = match metrics {
        Some(addr) => match scrape(addr) {
            Ok(text) => parse_metrics(&text),
            Err(e) => {
                eprintln!("bench: soak: metrics not read: {e:#}");
                (None, None)
            }
        },
        None => (None, None),
    };
    Ok(Sample {
        elapsed_s: t0.elapsed().as_secs_f64(),
        events,
        lost,
        cgroups,
        usage,
    })
}

fn progress_line(s: &Sample, prev: Option<&Sample>) -> String {
    format!(
        "bench: soak {:>5.0} s: {} events, {} cgroups, VmRSS {:.1} MiB, VmHWM {:.1} MiB, CPU {}%, lost {}",
        s.elapsed_s,
        s.events.map(|e| e.to_string()).unwrap_or_else(|| "?".into()),
        s.cgroups,
        s.usage.rss_kb as f64 / 1024.0,
        s.usage.hwm_kb as f64 / 1024.0,
        prev.and_then(|p| cpu_pct(p, s))
            .map(|c| format!("{c:.1}"))
            .unwrap_or_else(|| "-".into()),
        s.lost.map(|l| l.to_string()).unwrap_or_else(|| "?".into()),
    )
}

pub fn run(storm: &Storm, tools: &Tools, dir: &Path, opts: &Options) -> Result<()> {
    let execs = opts.execs.unwrap_or(EXECS);
    let ncgroups = opts.cgroups.unwrap_or(CGROUPS);
    anyhow::ensure!(execs > 0, "--soak-execs must be at least 1");
    let full = execs >= EXECS && ncgroups >= CGROUPS;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let (rate, rate_how) = match opts.rate {
        Some(r) => {
            anyhow::ensure!(
                r.is_finite() && r > 0.0,
                "--soak-rate {r}: a positive number"
            );
            (r, "set with --soak-rate".to_string())
        }
        None => {
            util::step(&format!(
                "soak: the box's rate: {CALIBRATION} processes flat out, no tracer"
            ))?;
            let r = storm.run(CALIBRATION, workers, &dir.join("calibration.storm.json"))?;
            let flat = r.started as f64 / (r.wall_ns as f64 / 1e9);
            (
                flat * RATE_SHARE,
                format!(
                    "{:.0}% of the {flat:.0}/s measured flat out without a tracer just before",
                    RATE_SHARE * 100.0
                ),
            )
        }
    };
    let expect_s = execs as f64 / rate;
    util::step(&format!(
        "soak: {execs} execs at {rate:.0}/s and {ncgroups} cgroups: about {:.1} min",
        expect_s / 60.0
    ))?;
    let hierarchies = cgroups::hierarchies()?;
    let tag = u64::from(std::process::id());
    let tree = cgroups::Tree::create(&hierarchies, &cgroups::pod_path(&format!("soak-{tag}")))?;
    let metrics = if tools.metrics {
        Some(format!("127.0.0.1:{}", free_loopback_port()?))
    } else {
        eprintln!(
            "bench: soak: this podtrace has no --metrics-addr: no event counts while it runs"
        );
        None
    };
    let summary = dir.join("soak.summary.json");
    let record = dir.join("soak-record");
    let record_arg = format!("{}/", record.display());
    let mut extra = vec![
        "--record",
        record_arg.as_str(),
        "--segment-size",
        SEGMENT,
        "--retain-size",
        RETAIN,
    ];
    if let Some(addr) = &metrics {
        extra.extend(["--metrics-addr", addr.as_str()]);
    }
    let mut recording = Recording::default();
    let mut t = tracers::start_podtrace(
        tools,
        PathBuf::from("/dev/null"),
        Some(summary.clone()),
        &extra,
    )?;
    t.wait_ready(Duration::from_secs(60))?;
    t.settle(Duration::from_secs(30))?;
    let date = machine::date();
    let load_before = machine::load();
    let t0 = Instant::now();
    let mut execs_job =
        Some(storm.start_run(execs, workers, Some(rate), &dir.join("soak.storm.json"))?);
    let mut cgroup_job = if ncgroups > 0 {
        let spec = CgroupSpec {
            parents: tree.parents(),
            count: ncgroups,
            first: 0,
            tag,
            // Spread over the same time as the execs.
            rate: Some(ncgroups as f64 / expect_s),
            linger: cgroups::LINGER,
        };
        Some(storm.start_cgroups(&spec, &dir.join("soak.cgroups.json"))?)
    } else {
        None
    };
    let mut samples = vec![sample(t.pid(), metrics.as_deref(), t0, 0)?];
    eprintln!("{}", progress_line(&samples[0], None));
    let mut started = 0;
    let mut cgroups_done = 0;
    let mut next = INTERVAL;
    while execs_job.is_some() || cgroup_job.is_some() {
        check_interrupted()?;
        std::thread::sleep(Duration::from_millis(100));
        recording.max_dir_bytes = recording.max_dir_bytes.max(dir_bytes(&record));
        if let Some(j) = execs_job.as_mut() {
            if let Some(r) = j.try_wait()? {
                started += r.started;
                execs_job = None;
            }
        }
        if let Some(j) = cgroup_job.as_mut() {
            cgroups_done = j.progress();
            if let Some(r) = j.try_wait()? {
                started += r.started;
                cgroups_done = r.started;
                cgroup_job = None;
            }
        }
        if t0.elapsed() >= next {
            next += INTERVAL;
            let s = sample(t.pid(), metrics.as_deref(), t0, cgroups_done)?;
            eprintln!("{}", progress_line(&s, samples.last()));
            samples.push(s);
        }
    }
    if !t.settle(Duration::from_secs(60))? {
        eprintln!("bench: soak: podtrace still busy 60 s after the workload ended");
    }
    let last = sample(t.pid(), metrics.as_deref(), t0, cgroups_done)?;
    eprintln!("{}", progress_line(&last, samples.last()));
    samples.push(last);
    let stopped = t.finish()?;
    drop(tree);
    recording.end_dir_bytes = dir_bytes(&record);
    recording.max_dir_bytes = recording.max_dir_bytes.max(recording.end_dir_bytes);
    summary_recording(&summary, &mut recording);
    let seen = outputs::parse(
        Config::Podtrace,
        Path::new("/dev/null"),
        &stopped.stderr,
        Some(&summary),
    )?;
    let took = t0.elapsed();
    let load_after = machine::load();

    let soak = Soak {
        execs,
        cgroups: ncgroups,
        workers,
        rate,
        rate_how,
        hierarchies: hierarchies.into_iter().map(|h| h.name).collect(),
        samples,
        started,
        summary_events: seen.events,
        summary_lost: seen.lost,
        recording,
    };
    let stamp = machine::stamp();
    let root = util::workspace_root();
    let (png, link) = if full {
        let rel = format!("docs/soak/{stamp}.png");
        (root.join(&rel), rel)
    } else {
        let p = root.join(format!("target/soak/{stamp}.png"));
        let shown = p.display().to_string();
        (p, shown)
    };
    let (judged_from, _) = second_half(&soak.samples);
    plot::soak_png(
        &png,
        &format!("podtrace soak {date}: {execs} execs, {ncgroups} cgroups, {rate:.0}/s"),
        &plot_points(&soak.samples),
        judged_from,
    )?;
    let kind = if full { "soak" } else { "soak, reduced sizes" };
    let mut head = format!("## {date} — {kind}\n\n");
    head.push_str(&machine::describe());
    let _ = writeln!(
        head,
        "- load average (1, 5, 15 min) before: {load_before}; after: {load_after}; the soak took {:.0} s (expected {:.0} s at the set rate)",
        took.as_secs_f64(),
        expect_s
    );
    let text = render(&soak, &head, &link);
    println!("{text}");
    eprintln!("bench: soak plot: {}", png.display());
    if full {
        let path = root.join("BENCHMARKS.md");
        super::prepend_run(&path, &text)?;
        eprintln!("bench: wrote this soak at the top of {}", path.display());
    } else {
        eprintln!(
            "bench: reduced sizes ({execs} execs, {ncgroups} cgroups): not written to BENCHMARKS.md"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(rss_kb: u64, cpu_ms: u64) -> Usage {
        Usage {
            rss_kb,
            hwm_kb: rss_kb + 512,
            anon_kb: rss_kb / 2,
            cpu_ns: cpu_ms * 1_000_000,
        }
    }

    /// `n` samples 10 s apart, 30,000 events each; RSS from `rss(i)`.
    fn samples(n: usize, rss: impl Fn(usize) -> u64) -> Vec<Sample> {
        (0..n)
            .map(|i| Sample {
                elapsed_s: i as f64 * 10.0,
                events: Some(i as u64 * 30_000),
                lost: Some(0),
                cgroups: i * 100,
                usage: usage(rss(i), i as u64 * 500),
            })
            .collect()
    }

    fn soak(samples: Vec<Sample>) -> Soak {
        Soak {
            execs: 100_000,
            cgroups: 2000,
            workers: 2,
            rate: 1000.0,
            rate_how: "set".into(),
            hierarchies: vec!["v2".into()],
            started: 102_000,
            summary_events: 310_000,
            summary_lost: Some(0),
            samples,
            recording: Recording {
                max_dir_bytes: 60 << 20,
                end_dir_bytes: 50 << 20,
                segments: Some(9),
                removed: Some(5),
                records_lost: Some(0),
            },
        }
    }

    #[test]
    fn metrics_text_gives_events_of_all_types_and_lost() {
        let text = "# TYPE podtrace_events counter\n\
                    podtrace_events_total{type=\"exec\"} 10\n\
                    podtrace_events_total{type=\"fork\"} 12\n\
                    podtrace_events_total{type=\"exit\"} 11\n\
                    podtrace_events_total{type=\"thread\"} 0\n\
                    podtrace_lost_events_total 3\n\
                    podtrace_tracked_processes 250\n# EOF\n";
        assert_eq!(parse_metrics(text), (Some(33), Some(3)));
        assert_eq!(parse_metrics("# EOF\n"), (None, None));
    }

    #[test]
    fn cpu_percent_is_of_one_core_over_the_interval() {
        let a = Sample {
            elapsed_s: 10.0,
            events: None,
            lost: None,
            cgroups: 0,
            usage: usage(1, 1000),
        };
        let b = Sample {
            elapsed_s: 20.0,
            usage: usage(1, 3500),
            ..a
        };
        let c = cpu_pct(&a, &b).expect("an interval");
        assert!((c - 25.0).abs() < 1e-9, "2.5 s of CPU in 10 s: {c}");
        assert_eq!(cpu_pct(&a, &a), None);
    }

    #[test]
    fn growth_in_the_first_half_is_warm_up_a_leak_in_the_second_is_not() {
        // 8 MiB while warming up, then flat within a few pages.
        let warm = samples(21, |i| {
            if i < 8 {
                30_000 + i as u64 * 1024
            } else {
                38_000 + (i as u64 % 3) * 4
            }
        });
        let slope = flatness(&warm).expect("slope");
        assert!(slope.abs() < 1.0, "{slope}");
        let c = criteria(&soak(warm));
        assert!(c.iter().all(|(_, ok)| *ok), "{c:?}");
        // 2 KiB per 1000 events all along: 200 KiB per 100k.
        let leak = samples(21, |i| 30_000 + i as u64 * 60);
        let slope = flatness(&leak).expect("slope");
        assert!((slope - 200.0).abs() < 1e-6, "{slope}");
        let c = criteria(&soak(leak));
        assert!(!c[1].1, "{c:?}");
        assert!(
            c[1].0.contains("200.0 KiB per 100,000 events"),
            "{}",
            c[1].0
        );
    }

    #[test]
    fn a_loss_or_missing_events_fail_the_first_criterion() {
        let mut s = soak(samples(5, |_| 30_000));
        assert!(criteria(&s)[0].1);
        s.summary_lost = Some(1);
        assert!(!criteria(&s)[0].1);
        s.summary_lost = Some(0);
        s.summary_events = 3 * s.started as u64 - 1;
        assert!(!criteria(&s)[0].1, "fewer events than 3 per process");
    }

    #[test]
    fn the_table_has_every_sample_and_the_report_links_the_plot() {
        let s = soak(samples(4, |i| 30_000 + i as u64 * 1024));
        let t = table(&s.samples);
        let rows: Vec<&str> = t.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), 5, "{t}");
        assert_eq!(rows[1], "| 0 | 0 | 0 | 29.3 | 29.8 | - | 0 |");
        assert_eq!(rows[2], "| 10 | 30000 | 100 | 30.3 | 30.8 | 5.0 | 0 |");
        let md = render(&s, "## head\n", "docs/soak/x.png");
        assert!(md.contains("![podtrace VmRSS, VmHWM and CPU over the soak](docs/soak/x.png)"));
        assert!(md.contains("soak: **FAIL**"), "growing RSS: {md}");
        report::assert_rectangular(&md);
    }

    #[test]
    fn plot_points_carry_cpu_from_the_second_sample_on() {
        let p = plot_points(&samples(3, |_| 2048));
        assert_eq!(p[0].cpu_pct, None);
        assert!((p[1].cpu_pct.expect("cpu") - 5.0).abs() < 1e-9);
        assert!((p[2].rss_mib - 2.0).abs() < 1e-9);
    }

    #[test]
    fn the_recording_passes_within_its_bound_and_fails_past_it_or_with_a_loss() {
        let flat = |_| 20_000;
        let rec = |s: &Soak| {
            criteria(s)
                .into_iter()
                .find(|(w, _)| w.starts_with("recording within its bound"))
                .expect("a recording criterion")
        };
        let s = soak(samples(20, flat));
        let (what, ok) = rec(&s);
        assert!(ok, "{what}");
        assert!(
            what.contains("at most 60.0 MiB (50.0 MiB at the end) of --retain-size 64M")
                && what.contains("9 segments of 16M started, 5 removed by retention, 0 records"),
            "{what}"
        );
        let mut over = soak(samples(20, flat));
        over.recording.max_dir_bytes = (64 << 20) + 1;
        assert!(!rec(&over).1, "past the bound");
        let mut lost = soak(samples(20, flat));
        lost.recording.records_lost = Some(3);
        assert!(!rec(&lost).1, "records not written");
        let mut unknown = soak(samples(20, flat));
        unknown.recording.records_lost = None;
        assert!(!rec(&unknown).1, "no summary: not a pass");
    }
}
