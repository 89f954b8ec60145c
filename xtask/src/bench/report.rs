//! Turning samples into the side-by-side table, the start-up table, the target verdicts and
//! the raw per-run rows (Markdown: printed and written to BENCHMARKS.md alike).
use std::fmt::Write;

use super::matrix::Sample;
use super::startup::StartRun;
use super::tracers::Config;

/// Median and range of a set of figures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Self> {
        let mut v: Vec<f64> = values.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Self {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    fn show(&self, digits: usize) -> String {
        if self.min == self.max {
            format!("{:.digits$}", self.median)
        } else {
            format!(
                "{:.digits$} [{:.digits$}–{:.digits$}]",
                self.median, self.min, self.max
            )
        }
    }
}

/// The least-squares slope of y over x (None with fewer than two distinct x).
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx) * (p.0 - mx)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// "met" / "NOT MET" / "not measured", as every target line says it.
pub fn met(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "met",
        Some(false) => "NOT MET",
        None => "not measured",
    }
}

fn show(s: Option<Spread>, digits: usize) -> String {
    s.map(|s| s.show(digits)).unwrap_or_else(|| "-".into())
}

/// The figures of one configuration over all its rounds.
pub struct Row {
    pub config: Config,
    pub ratio: Option<Spread>,
    pub cpu_ratio: Option<Spread>,
    pub wall_s: Option<Spread>,
    pub started: usize,
    pub exec_seen: Option<usize>,
    pub exit_seen: Option<usize>,
    pub lost_total: Option<u64>,
    pub events: Option<Spread>,
    pub cpu_us_per_event: Option<Spread>,
    pub cpu_us_per_proc: Option<Spread>,
    pub rss_mib: Option<Spread>,
    pub kernel_ns_per_event: Option<Spread>,
    /// Per program (by name, in name order): runs per storm process and ns per run.
    pub kernel_progs: Vec<ProgRow>,
    pub unsettled: usize,
}

/// One BPF program of one configuration over its rounds.
pub struct ProgRow {
    pub name: String,
    pub runs_per_proc: Option<Spread>,
    pub ns_per_run: Option<Spread>,
}

/// "sched_process_exec" -> "exec" (bpftrace's "tracepoint__sched__sched_process_exec" too).
pub fn short_prog(name: &str) -> &str {
    name.rsplit("sched_process_").next().unwrap_or(name)
}

fn prog_rows(mine: &[&Sample]) -> Vec<ProgRow> {
    let mut names: Vec<&str> = mine
        .iter()
        .flat_map(|s| s.kernel_progs.iter().map(|(n, _, _)| n.as_str()))
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let of = |s: &&Sample| s.kernel_progs.iter().find(|(n, _, _)| n == name).cloned();
            ProgRow {
                name: name.to_string(),
                runs_per_proc: Spread::of(mine.iter().filter_map(|s| {
                    let (_, _, c) = of(s)?;
                    (s.started > 0).then(|| c as f64 / s.started as f64)
                })),
                ns_per_run: Spread::of(mine.iter().filter_map(|s| {
                    let (_, t, c) = of(s)?;
                    (c > 0).then(|| t as f64 / c as f64)
                })),
            }
        })
        .collect()
}

pub fn rows(samples: &[Sample]) -> Vec<Row> {
    Config::ALL
        .iter()
        .filter(|&&c| samples.iter().any(|s| s.config == c))
        .map(|&config| {
            let mine: Vec<&Sample> = samples.iter().filter(|s| s.config == config).collect();
            let sum_opt = |f: &dyn Fn(&Sample) -> Option<usize>| -> Option<usize> {
                mine.iter().map(|s| f(s)).sum::<Option<usize>>()
            };
            Row {
                config,
                ratio: Spread::of(
                    mine.iter()
                        .filter_map(|s| s.pair.map(|(w, _)| s.wall_ns as f64 / w as f64)),
                ),
                cpu_ratio: Spread::of(
                    mine.iter()
                        .filter_map(|s| s.pair.map(|(_, c)| s.storm_cpu_ns as f64 / c as f64)),
                ),
                wall_s: Spread::of(mine.iter().map(|s| s.wall_ns as f64 / 1e9)),
                started: mine.iter().map(|s| s.started).sum(),
                exec_seen: sum_opt(&|s| s.exec_seen),
                exit_seen: sum_opt(&|s| s.exit_seen),
                lost_total: mine.iter().map(|s| s.lost).sum::<Option<u64>>(),
                events: Spread::of(mine.iter().filter_map(|s| s.events.map(|e| e as f64))),
                cpu_us_per_event: Spread::of(mine.iter().filter_map(|s| {
                    let (c, e) = (s.cpu_ns?, s.events?);
                    (e > 0).then(|| c as f64 / 1e3 / e as f64)
                })),
                cpu_us_per_proc: Spread::of(mine.iter().filter_map(|s| {
                    let c = s.cpu_ns?;
                    (s.started > 0).then(|| c as f64 / 1e3 / s.started as f64)
                })),
                rss_mib: Spread::of(
                    mine.iter()
                        .filter_map(|s| s.peak_rss_kb.map(|k| k as f64 / 1024.0)),
                ),
                kernel_ns_per_event: Spread::of(mine.iter().filter_map(|s| {
                    let (t, c) = s.kernel?;
                    (c > 0).then(|| t as f64 / c as f64)
                })),
                kernel_progs: prog_rows(&mine),
                unsettled: mine.iter().filter(|s| !s.settled).count(),
            }
        })
        .collect()
}

fn seen(seen: Option<usize>, started: usize) -> String {
    match seen {
        Some(n) => format!("{n}/{started}"),
        None => "-".into(),
    }
}

/// A Markdown table header and its separator row, with as many columns as `cols`.
pub fn header(t: &mut String, cols: &[&str]) {
    let _ = writeln!(t, "| {} |", cols.join(" | "));
    let _ = writeln!(t, "|{}", "---|".repeat(cols.len()));
}

/// The side-by-side table.
pub fn side_by_side(rows: &[Row]) -> String {
    let mut t = String::new();
    header(
        &mut t,
        &[
            "configuration",
            "wall ratio to its no-tracer pair",
            "workload CPU ratio",
            "storm wall s",
            "exec seen/started",
            "exit seen/started",
            "lost",
            "events/run",
            "tracer CPU µs/event",
            "tracer CPU µs/storm process",
            "tracer peak RSS MiB",
            "kernel ns/event",
        ],
    );
    for r in rows {
        let mut label = r.config.label().to_string();
        if r.unsettled > 0 {
            let _ = write!(label, " ({} runs still busy when measured)", r.unsettled);
        }
        let _ = writeln!(
            t,
            "| {label} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            show(r.ratio, 3),
            show(r.cpu_ratio, 3),
            show(r.wall_s, 2),
            seen(r.exec_seen, r.started),
            seen(r.exit_seen, r.started),
            r.lost_total
                .map(|l| l.to_string())
                .unwrap_or_else(|| "-".into()),
            show(r.events, 0),
            show(r.cpu_us_per_event, 2),
            show(r.cpu_us_per_proc, 2),
            show(r.rss_mib, 1),
            show(r.kernel_ns_per_event, 0),
        );
    }
    t
}

/// The kernel figure of each BPF program, per configuration that has them.
pub fn kernel_programs(rows: &[Row]) -> String {
    let mut t = String::new();
    header(
        &mut t,
        &[
            "configuration",
            "program",
            "runs per storm process",
            "kernel ns/run",
        ],
    );
    for r in rows {
        for p in &r.kernel_progs {
            let _ = writeln!(
                t,
                "| {} | {} | {} | {} |",
                r.config.label(),
                p.name,
                show(p.runs_per_proc, 2),
                show(p.ns_per_run, 0)
            );
        }
    }
    t
}

/// Start-up figures, grouped by binary and by how many sleepers were on the box.
pub fn startup_table(runs: &[StartRun]) -> String {
    let mut groups: Vec<(usize, &'static str)> =
        runs.iter().map(|r| (r.sleepers, r.binary.key())).collect();
    groups.sort_unstable();
    groups.dedup();
    let mut t = String::new();
    header(
        &mut t,
        &[
            "binary",
            "extra sleeping processes",
            "processes read from /proc",
            "start-up ms (spawn to \"attached\")",
            "RSS MiB 1 s after attach",
            "of which anonymous",
            "of which BPF map mappings",
            "peak RSS (VmHWM) MiB",
        ],
    );
    for (g, binary) in groups {
        let mine: Vec<&StartRun> = runs
            .iter()
            .filter(|r| r.sleepers == g && r.binary.key() == binary)
            .collect();
        let procs = Spread::of(mine.iter().filter_map(|r| r.procs.map(|p| p as f64)));
        let name = if binary == Config::PodtraceImage.key() {
            "image (static musl)"
        } else {
            "glibc build"
        };
        let _ = writeln!(
            t,
            "| {name} | {g} | {} | {} | {} | {} | {} | {} |",
            show(procs, 0),
            show(Spread::of(mine.iter().map(|r| r.attach_ms)), 0),
            show(Spread::of(mine.iter().map(|r| r.rss_kb as f64 / 1024.0)), 1),
            show(
                Spread::of(mine.iter().map(|r| r.anon_kb as f64 / 1024.0)),
                1
            ),
            show(
                Spread::of(mine.iter().map(|r| r.maps_kb as f64 / 1024.0)),
                1
            ),
            show(Spread::of(mine.iter().map(|r| r.hwm_kb as f64 / 1024.0)), 1),
        );
    }
    t
}

/// One verdict line per target (printed, never asserted).
pub fn targets(rows: &[Row], startup: &[StartRun], sleepers: usize) -> String {
    let row = |c: Config| rows.iter().find(|r| r.config == c);
    let mut t = String::new();
    let mut verdict = |name: &str, figure: String, v: Option<bool>| {
        let _ = writeln!(t, "- {name}: {figure} — **{}**", met(v));
    };
    let p = row(Config::Podtrace);
    let lost = p.and_then(|r| r.lost_total);
    verdict(
        "zero lost events at the highest exec rate, default ring buffer",
        match (p, lost) {
            (Some(r), Some(l)) => format!(
                "{l} lost over all rounds; exec seen {}, exit seen {}",
                seen(r.exec_seen, r.started),
                seen(r.exit_seen, r.started)
            ),
            _ => "no figure".into(),
        },
        lost.map(|l| l == 0),
    );
    let ratio = p.and_then(|r| r.ratio);
    verdict(
        "workload slowdown ≤ 1.05×",
        format!("median {}×", show(ratio, 3)),
        ratio.map(|s| s.median <= 1.05),
    );
    let kernel = p.and_then(|r| r.kernel_ns_per_event);
    let each: Vec<String> = p
        .map(|r| {
            r.kernel_progs
                .iter()
                .map(|k| format!("{} {}", short_prog(&k.name), show(k.ns_per_run, 0)))
                .collect()
        })
        .unwrap_or_default();
    verdict(
        "kernel cost ≤ 400 ns per event",
        if each.is_empty() {
            format!("median {} ns", show(kernel, 0))
        } else {
            format!("median {} ns ({})", show(kernel, 0), each.join("; "))
        },
        kernel.map(|s| s.median <= 400.0),
    );
    let user = p.and_then(|r| r.cpu_us_per_event);
    verdict(
        "userspace ≤ 5 µs per event",
        format!("median {} µs", show(user, 2)),
        user.map(|s| s.median <= 5.0),
    );
    let loaded: Vec<&StartRun> = startup
        .iter()
        .filter(|r| r.sleepers == sleepers && r.binary == Config::Podtrace)
        .collect();
    let rss = Spread::of(loaded.iter().map(|r| r.hwm_kb as f64 / 1024.0));
    let steady = Spread::of(loaded.iter().map(|r| r.rss_kb as f64 / 1024.0));
    verdict(
        &format!("RSS ≤ 30 MiB with {sleepers} extra processes (peak, VmHWM)"),
        format!(
            "median {} MiB peak; {} MiB resident 1 s after attaching",
            show(rss, 1),
            show(steady, 1)
        ),
        rss.map(|s| s.median <= 30.0),
    );
    let start = Spread::of(loaded.iter().map(|r| r.attach_ms));
    verdict(
        &format!("start-up ≤ 300 ms with {sleepers} extra processes"),
        format!("median {} ms", show(start, 0)),
        start.map(|s| s.median <= 300.0),
    );
    t
}

/// Every run, in the order it ran.
pub fn raw(samples: &[Sample]) -> String {
    let mut t = String::new();
    header(
        &mut t,
        &[
            "round",
            "configuration",
            "storm wall ms",
            "pair wall ms",
            "storm CPU ms",
            "pair CPU ms",
            "started",
            "exec seen",
            "exit seen",
            "lost",
            "events",
            "tracer CPU ms (window)",
            "tracer CPU ms (life)",
            "peak RSS KiB",
            "kernel runs",
            "kernel ns (window)",
            "summary kernel ns/run",
        ],
    );
    let o = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
    for s in samples {
        let _ = writeln!(
            t,
            "| {} | {}{} | {:.1} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.round + 1,
            s.config.label(),
            if s.settled { "" } else { " (still busy)" },
            s.wall_ns as f64 / 1e6,
            s.pair
                .map(|(w, _)| format!("{:.1}", w as f64 / 1e6))
                .unwrap_or_else(|| "-".into()),
            s.storm_cpu_ns as f64 / 1e6,
            s.pair
                .map(|(_, c)| format!("{:.0}", c as f64 / 1e6))
                .unwrap_or_else(|| "-".into()),
            s.started,
            o(s.exec_seen.map(|v| v as u64)),
            o(s.exit_seen.map(|v| v as u64)),
            o(s.lost),
            o(s.events),
            s.cpu_ns
                .map(|c| format!("{:.0}", c as f64 / 1e6))
                .unwrap_or_else(|| "-".into()),
            s.cpu_life_ns
                .map(|c| format!("{:.0}", c as f64 / 1e6))
                .unwrap_or_else(|| "-".into()),
            o(s.peak_rss_kb),
            o(s.kernel.map(|k| k.1)),
            o(s.kernel.map(|k| k.0)),
            s.summary_kernel
                .filter(|k| k.1 > 0)
                .map(|(t, c)| format!("{:.0}", t as f64 / c as f64))
                .unwrap_or_else(|| "-".into()),
        );
    }
    t
}

/// Panics unless every table row of `text` has as many cells as the others (tests of every
/// table the bench prints).
#[cfg(test)]
pub fn assert_rectangular(text: &str) {
    let widths: Vec<usize> = text
        .lines()
        .filter(|l| l.starts_with('|'))
        .map(|l| l.matches('|').count())
        .collect();
    assert!(
        widths.windows(2).all(|w| w[0] == w[1]),
        "rows differ in cell count {widths:?}:\n{text}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(config: Config, round: usize, wall_ns: u64, pair: Option<u64>) -> Sample {
        Sample {
            config,
            round,
            wall_ns,
            storm_cpu_ns: wall_ns * 2,
            pair: pair.map(|w| (w, w * 4)),
            started: 100,
            exec_seen: Some(100),
            exit_seen: Some(99),
            lost: Some(1),
            events: Some(300),
            cpu_ns: Some(3_000_000),
            cpu_life_ns: Some(9_000_000),
            peak_rss_kb: Some(20 * 1024),
            kernel: Some((60_000, 300)),
            kernel_progs: vec![
                ("sched_process_exec".into(), 40_000, 100),
                ("sched_process_fork".into(), 20_000, 200),
            ],
            summary_kernel: None,
            settled: true,
        }
    }

    #[test]
    fn every_table_has_as_many_cells_per_row_as_its_header() {
        let mut busy = sample(Config::Podtrace, 0, 1100, Some(1000));
        busy.settled = false;
        let samples = vec![sample(Config::NoTracer, 0, 1000, None), busy];
        assert_rectangular(&side_by_side(&rows(&samples)));
        assert_rectangular(&raw(&samples));
        assert_rectangular(&kernel_programs(&rows(&samples)));
        let start = StartRun {
            binary: Config::Podtrace,
            sleepers: 0,
            attach_ms: 200.0,
            procs: Some(11),
            rss_kb: 1024,
            hwm_kb: 2048,
            anon_kb: 512,
            maps_kb: 256,
        };
        assert_rectangular(&startup_table(&[start]));
    }

    #[test]
    fn slope_is_the_least_squares_fit() {
        let line: Vec<(f64, f64)> = (0..5).map(|x| (x as f64, 3.0 * x as f64 + 7.0)).collect();
        assert!((slope(&line).expect("five points") - 3.0).abs() < 1e-12);
        // Noise around a flat line: the fit, not the end points, decides.
        let flat = [
            (0.0, 10.0),
            (1.0, 12.0),
            (2.0, 8.0),
            (3.0, 12.0),
            (4.0, 8.0),
        ];
        assert!((slope(&flat).expect("five points") - (-0.4)).abs() < 1e-12);
        assert_eq!(slope(&[(1.0, 2.0)]), None);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 3.0)]), None, "no spread in x");
    }

    #[test]
    fn spread_median_of_even_and_odd_counts() {
        let s = Spread::of([3.0, 1.0, 2.0]).expect("three values");
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        let s = Spread::of([4.0, 1.0, 2.0, 3.0]).expect("four values");
        assert_eq!(s.median, 2.5);
        assert!(Spread::of([]).is_none());
    }

    #[test]
    fn ratios_are_against_each_runs_own_pair() {
        let samples = vec![
            sample(Config::NoTracer, 0, 1000, None),
            sample(Config::Podtrace, 0, 1100, Some(1000)),
            sample(Config::NoTracer, 1, 2000, Some(1000)),
            sample(Config::Podtrace, 1, 2000, Some(2000)),
        ];
        let rows = rows(&samples);
        let p = rows
            .iter()
            .find(|r| r.config == Config::Podtrace)
            .expect("podtrace row");
        let r = p.ratio.expect("ratios");
        assert!(
            (r.min - 1.0).abs() < 1e-9 && (r.max - 1.1).abs() < 1e-9,
            "{r:?}"
        );
        assert_eq!(
            (p.started, p.exec_seen, p.lost_total),
            (200, Some(200), Some(2))
        );
        let per_event = p.cpu_us_per_event.expect("cpu per event");
        assert!(
            (per_event.median - 10.0).abs() < 1e-9,
            "3 ms / 300 events = 10 µs"
        );
        let k = p.kernel_ns_per_event.expect("kernel per event");
        assert!((k.median - 200.0).abs() < 1e-9);
        let exec = &p.kernel_progs[0];
        assert_eq!(exec.name, "sched_process_exec");
        assert_eq!(exec.ns_per_run.map(|s| s.median), Some(400.0));
        assert_eq!(exec.runs_per_proc.map(|s| s.median), Some(1.0));
        let targets = targets(&rows, &[], 10_000);
        assert!(
            targets.contains("per event: median 200 ns (exec 400; fork 100) — **met**"),
            "{targets}"
        );
        assert!(
            targets.contains("slowdown ≤ 1.05×: median 1.050 [1.000–1.100]× — **met**"),
            "{targets}"
        );
        assert!(
            targets.contains("userspace ≤ 5 µs per event: median 10.00 µs — **NOT MET**"),
            "{targets}"
        );
        assert!(
            targets.contains(
                "start-up ≤ 300 ms with 10000 extra processes: median - ms — **not measured**"
            ),
            "{targets}"
        );
    }
}
