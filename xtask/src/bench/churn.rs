//! Cgroup churn: podtrace's memory while cgroups come and go (issue 10). `storm cgroups`
//! creates cgroups one after the other, in every hierarchy of the host, as `crio-<id>.scope`
//! in one pod slice, runs one `busybox true` in each and removes it; podtrace's resident memory
//! is read after each step of cgroups, once it has caught up. A tracer that keeps anything per
//! cgroup after the cgroup is gone grows with every step.
use std::fmt::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::cgroups::{self, Hierarchy};
use super::guard::check_interrupted;
use super::outputs;
use super::procfs::{self, Usage};
use super::report;
use super::storm::{CgroupSpec, Storm};
use super::tracers::{self, Config, Tools};

/// Flat after warm-up: the least-squares slope of VmRSS over the samples from the end of the
/// first step on stays at or below this many bytes per cgroup removed (docs/benchmarks.md).
pub const FLAT_BYTES_PER_CGROUP: f64 = 64.0;

/// podtrace's memory after `removed` cgroups.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub removed: usize,
    pub usage: Usage,
    /// Of VmRSS: the BPF map mappings (the ring buffer), KiB.
    pub maps_kb: u64,
    /// Wall time of the churn so far.
    pub churn_s: f64,
}

/// One churn run.
#[derive(Clone, Debug)]
pub struct Churn {
    pub total: usize,
    pub step: usize,
    /// The hierarchies each cgroup was created in ("v2", "memory", ...).
    pub hierarchies: Vec<String>,
    pub points: Vec<Point>,
    /// Execs podtrace attributed to the churned containers (their id from the cgroup path).
    pub attributed: usize,
    pub lost: Option<u64>,
}

/// Runs `total` cgroups in steps of `step` against a podtrace started for it.
pub fn measure(
    storm: &Storm,
    tools: &Tools,
    dir: &Path,
    total: usize,
    step: usize,
) -> Result<Churn> {
    anyhow::ensure!(
        step > 0 && total > 0,
        "churn of {total} cgroups in steps of {step}"
    );
    let hierarchies = cgroups::hierarchies()?;
    let tag = u64::from(std::process::id());
    let tree = cgroups::Tree::create(&hierarchies, &cgroups::pod_path(&format!("churn-{tag}")))?;
    eprintln!(
        "bench: cgroup churn: {total} cgroups in {} hierarchies ({}), RSS every {step}",
        hierarchies.len(),
        names(&hierarchies)
    );
    let mut t = tracers::start(Config::Podtrace, tools, dir, "churn")?
        .context("podtrace configuration started no process")?;
    t.wait_ready(Duration::from_secs(60))?;
    t.settle(Duration::from_secs(30))?;
    let mut points = vec![Point {
        removed: 0,
        usage: Usage::read(t.pid())?,
        maps_kb: procfs::mapped_rss_kb(t.pid(), "bpf-map")?,
        churn_s: 0.0,
    }];
    let mut churn_time = Duration::ZERO;
    let mut removed = 0;
    while removed < total {
        check_interrupted()?;
        let n = step.min(total - removed);
        let out = dir.join(format!("churn-{removed}.storm.json"));
        let t0 = Instant::now();
        let spec = CgroupSpec {
            parents: tree.parents(),
            count: n,
            first: removed as u64,
            tag,
            rate: None,
            linger: cgroups::LINGER,
        };
        let r = storm.start_cgroups(&spec, &out)?.wait()?;
        churn_time += t0.elapsed();
        anyhow::ensure!(r.started == n, "storm cgroups ran {} of {n}", r.started);
        removed += n;
        if !t.settle(Duration::from_secs(30))? {
            eprintln!("bench: podtrace still busy 30 s after {removed} cgroups");
        }
        let p = Point {
            removed,
            usage: Usage::read(t.pid())?,
            maps_kb: procfs::mapped_rss_kb(t.pid(), "bpf-map")?,
            churn_s: churn_time.as_secs_f64(),
        };
        eprintln!(
            "bench:   {removed} cgroups in {:.1} s: VmRSS {} KiB, RssAnon {} KiB",
            p.churn_s, p.usage.rss_kb, p.usage.anon_kb
        );
        points.push(p);
    }
    let out = t.out.clone();
    let summary = t.summary.clone();
    let fin = t.finish()?;
    drop(tree);
    let seen = outputs::parse(Config::Podtrace, &out, &fin.stderr, summary.as_deref())?;
    let _ = std::fs::remove_file(&out);
    if let Some(s) = &summary {
        let _ = std::fs::remove_file(s);
    }
    let prefix = format!("{tag:016x}");
    let attributed = seen
        .exec_containers
        .iter()
        .filter(|(id, _)| id.starts_with(&prefix))
        .map(|(_, &n)| n as usize)
        .sum();
    Ok(Churn {
        total,
        step,
        hierarchies: hierarchies.into_iter().map(|h| h.name).collect(),
        points,
        attributed,
        lost: seen.lost,
    })
}

fn names(h: &[Hierarchy]) -> String {
    h.iter()
        .map(|h| h.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The slope of VmRSS in bytes per cgroup over the points from the end of warm-up (the first
/// step) on.
pub fn slope_after_warmup(points: &[Point]) -> Option<f64> {
    let after: Vec<(f64, f64)> = points
        .iter()
        .skip(1)
        .map(|p| (p.removed as f64, p.usage.rss_kb as f64 * 1024.0))
        .collect();
    report::slope(&after)
}

/// The verdict line (printed, never asserted).
pub fn verdict(c: &Churn) -> String {
    let slope = slope_after_warmup(&c.points);
    let warm = c.points.get(1).map(|p| p.removed).unwrap_or(0);
    format!(
        "- RSS flat under cgroup churn after warm-up (least-squares slope of VmRSS from {warm} to {} cgroups ≤ {FLAT_BYTES_PER_CGROUP:.0} bytes per cgroup removed): {} — **{}**\n",
        c.total,
        slope
            .map(|s| format!("{s:.0} bytes per cgroup"))
            .unwrap_or_else(|| "no figure (fewer than two samples after warm-up)".into()),
        report::met(slope.map(|s| s <= FLAT_BYTES_PER_CGROUP))
    )
}

/// The churn section of the report.
pub fn render(c: &Churn) -> String {
    let mut t = String::new();
    let _ = writeln!(t, "\n### Cgroup churn (podtrace)\n");
    let _ = writeln!(
        t,
        "`storm cgroups`: {} cgroups created one after the other as `crio-<id>.scope` in one pod \
         slice (kubelet systemd layout), in every hierarchy of the host ({}), below the bench's own \
         cgroup; a `/bin/busybox true` joins each (all hierarchies) and exits, and the cgroup is \
         removed {} ms later. podtrace: `podtrace run --output OUT --summary SUMMARY --kernel-stats`; memory read once it \
         has caught up after each {} cgroups. It attributed {} of the {} execs to their container; \
         lost {}.\n",
        c.total,
        c.hierarchies.join(", "),
        cgroups::LINGER.as_millis(),
        c.step,
        c.attributed,
        c.total,
        c.lost
            .map(|l| l.to_string())
            .unwrap_or_else(|| "unknown".into()),
    );
    report::header(
        &mut t,
        &[
            "cgroups created and removed",
            "VmRSS MiB",
            "of which anonymous MiB",
            "of which BPF map mappings MiB",
            "VmHWM MiB",
            "VmRSS growth since the row above, bytes per cgroup",
            "churn wall s",
        ],
    );
    let mib = |kb: u64| kb as f64 / 1024.0;
    for (i, p) in c.points.iter().enumerate() {
        let growth = i
            .checked_sub(1)
            .and_then(|j| c.points.get(j))
            .filter(|q| p.removed > q.removed)
            .map(|q| {
                let d = (p.usage.rss_kb as f64 - q.usage.rss_kb as f64) * 1024.0;
                format!("{:.0}", d / (p.removed - q.removed) as f64)
            })
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            t,
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {growth} | {:.1} |",
            p.removed,
            mib(p.usage.rss_kb),
            mib(p.usage.anon_kb),
            mib(p.maps_kb),
            mib(p.usage.hwm_kb),
            p.churn_s
        );
    }
    t.push('\n');
    t.push_str(&verdict(c));
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    fn churn(rss_kb: &[u64]) -> Churn {
        Churn {
            total: 5000 * (rss_kb.len() - 1),
            step: 5000,
            hierarchies: vec!["v2".into(), "memory".into()],
            points: rss_kb
                .iter()
                .enumerate()
                .map(|(i, &rss_kb)| Point {
                    removed: i * 5000,
                    usage: Usage {
                        rss_kb,
                        hwm_kb: rss_kb + 100,
                        anon_kb: rss_kb / 2,
                        cpu_ns: 0,
                    },
                    maps_kb: 8192,
                    churn_s: i as f64 * 10.0,
                })
                .collect(),
            attributed: 20_000,
            lost: Some(0),
        }
    }

    #[test]
    fn warm_up_growth_does_not_count_but_a_leak_after_it_does() {
        // 4 MiB in the first step (tables sized up), then flat within a page or two.
        let flat = churn(&[30_000, 34_096, 34_100, 34_092, 34_104]);
        let s = slope_after_warmup(&flat.points).expect("four points after warm-up");
        assert!(s.abs() < 1.0, "{s}");
        assert!(
            verdict(&flat).ends_with("— **met**\n"),
            "{}",
            verdict(&flat)
        );
        // 2 KiB per cgroup throughout.
        let leak = churn(&[30_000, 40_000, 50_000, 60_000, 70_000]);
        let s = slope_after_warmup(&leak.points).expect("slope");
        assert!((s - 2048.0).abs() < 1e-9, "{s}");
        assert!(verdict(&leak).contains("2048 bytes per cgroup — **NOT MET**"));
    }

    #[test]
    fn the_table_has_a_row_per_sample_and_per_cgroup_growth() {
        let t = render(&churn(&[30_000, 40_000, 50_000]));
        let rows: Vec<&str> = t.lines().filter(|l| l.starts_with("| ")).collect();
        assert_eq!(rows.len(), 4, "header and three samples:\n{t}");
        assert!(rows[1].starts_with("| 0 | 29.3 |"), "{t}");
        assert!(rows[2].contains("| 2048 |"), "{t}");
        report::assert_rectangular(&t);
        assert!(t.contains("(v2, memory)"), "{t}");
    }

    #[test]
    fn one_sample_after_warm_up_is_not_a_figure() {
        let c = churn(&[30_000, 40_000]);
        assert!(verdict(&c).contains("**not measured**"), "{}", verdict(&c));
    }
}
