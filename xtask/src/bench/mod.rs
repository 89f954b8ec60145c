//! `cargo xtask bench`: the same exec storm with no tracer, podtrace (all events, and
//! --containers-only), bpftrace and forkstat, side by side; plus podtrace start-up and memory
//! with many processes on the box, and its memory under cgroup churn. Prints Markdown; the full
//! run also prepends it to BENCHMARKS.md. Targets are printed as met / not met, never asserted.
//! `--soak` is a separate, long run (soak.rs). Method: docs/benchmarks.md.
mod bpfinfo;
mod cgroups;
mod churn;
mod guard;
mod machine;
mod matrix;
mod names;
mod outputs;
mod plot;
mod process;
mod procfs;
mod replay;
mod report;
mod soak;
mod startup;
mod storm;
mod top;
mod tracers;

use std::fmt::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::util;
pub use soak::Options as SoakOptions;
use tracers::Config;

/// How big a run is.
#[derive(Clone, Debug)]
struct Plan {
    quick: bool,
    /// Storm processes per run.
    processes: usize,
    /// Storm worker threads (fork+exec+wait loops).
    workers: usize,
    /// Rounds over all configurations.
    rounds: usize,
    /// Extra sleeping processes for the start-up measurement.
    sleepers: usize,
    /// Start-ups measured with and without the sleepers.
    startups: usize,
    /// Cgroups created and removed in the churn run, and how many between memory readings.
    churn: usize,
    churn_step: usize,
    /// The tracer configurations of the side-by-side runs (`PODTRACE_BENCH_CONFIGS`).
    configs: Vec<Config>,
    /// The parts that run (`PODTRACE_BENCH_PARTS`).
    parts: Vec<Part>,
}

/// A part of the full benchmark.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Part {
    Matrix,
    Startup,
    Churn,
    Replay,
    /// Names of new containers on real runtimes, without and with the hold.
    Names,
    /// `podtrace top` beside `podtrace run` on one storm.
    Top,
}

impl Part {
    const ALL: [Part; 6] = [
        Part::Matrix,
        Part::Startup,
        Part::Churn,
        Part::Replay,
        Part::Names,
        Part::Top,
    ];

    fn key(self) -> &'static str {
        match self {
            Part::Matrix => "matrix",
            Part::Startup => "startup",
            Part::Churn => "churn",
            Part::Replay => "replay",
            Part::Names => "names",
            Part::Top => "top",
        }
    }
}

/// A comma-separated subset of `all` named by `key`, from the environment (default: all).
fn env_subset<T: Copy + PartialEq>(
    name: &str,
    all: &[T],
    key: impl Fn(T) -> &'static str,
) -> Result<Vec<T>> {
    let Ok(v) = std::env::var(name) else {
        return Ok(all.to_vec());
    };
    let mut out = Vec::new();
    for word in v.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        let found = all
            .iter()
            .copied()
            .find(|&x| key(x) == word)
            .with_context(|| {
                let names: Vec<&str> = all.iter().map(|&x| key(x)).collect();
                format!("{name}: {word:?} is none of {}", names.join(", "))
            })?;
        if !out.contains(&found) {
            out.push(found);
        }
    }
    anyhow::ensure!(!out.is_empty(), "{name}={v:?} names nothing");
    Ok(out)
}

impl Plan {
    fn new(quick: bool) -> Result<Self> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let plan = if quick {
            Plan {
                quick,
                processes: 300,
                workers: cores,
                rounds: 1,
                sleepers: 500,
                startups: 1,
                churn: 1_000,
                churn_step: 250,
                configs: Vec::new(),
                parts: Vec::new(),
            }
        } else {
            Plan {
                quick,
                processes: 10_000,
                workers: cores,
                rounds: 5,
                sleepers: 10_000,
                startups: 5,
                churn: 20_000,
                churn_step: 5_000,
                configs: Vec::new(),
                parts: Vec::new(),
            }
        };
        Ok(Plan {
            processes: env_usize("PODTRACE_BENCH_PROCESSES", plan.processes)?,
            workers: env_usize("PODTRACE_BENCH_WORKERS", plan.workers)?,
            rounds: env_usize("PODTRACE_BENCH_ROUNDS", plan.rounds)?,
            sleepers: env_usize("PODTRACE_BENCH_SLEEPERS", plan.sleepers)?,
            configs: env_subset(
                "PODTRACE_BENCH_CONFIGS",
                &Config::tracers().collect::<Vec<_>>(),
                Config::key,
            )?,
            parts: env_subset("PODTRACE_BENCH_PARTS", &Part::ALL, Part::key)?,
            ..plan
        })
    }
}

impl Plan {
    fn has(&self, part: Part) -> bool {
        self.parts.contains(&part)
    }

    /// Only some parts or configurations run: the result is printed, not kept.
    fn partial(&self) -> bool {
        self.parts.len() < Part::ALL.len() || self.configs.len() < Config::tracers().count()
    }
}

/// A JSON file written by a tool of the bench (storm results, podtrace's summary).
fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not JSON", path.display()))
}

/// A whole-number field of such a file.
fn json_u64(v: &serde_json::Value, path: &Path, key: &str) -> Result<u64> {
    v.get(key)
        .and_then(serde_json::Value::as_u64)
        .with_context(|| format!("{}: no number {key:?}", path.display()))
}

fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|&n| n > 0)
            .with_context(|| format!("{name}={v:?} is not a positive whole number")),
        Err(_) => Ok(default),
    }
}

/// What `cargo xtask bench` was asked to do.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// The CI smoke (small sizes, one round; nothing asserted about speed, but any
    /// configuration that fails to run fails it).
    pub quick: bool,
    /// Only the cgroup churn section (printed, not written to BENCHMARKS.md).
    pub churn_only: bool,
    /// Cgroups for the churn (memory read at each quarter); default 20,000 (--quick: 1,000).
    pub churn_cgroups: Option<usize>,
    /// The soak instead of the side-by-side benchmark.
    pub soak: Option<soak::Options>,
}

/// What every part of the bench needs: the workload, a directory for outputs, the tracers.
struct Bench {
    storm: storm::Storm,
    dir: tempfile::TempDir,
    tools: tracers::Tools,
}

impl Bench {
    fn prepare() -> Result<Self> {
        util::require_root("the benchmark loads eBPF programs and reads other processes' /proc")?;
        let storm = storm::Storm::build()?;
        let dir = tempfile::Builder::new()
            .prefix("podtrace-bench-")
            .tempdir()
            .context("creating a temporary directory for tracer outputs")?;
        // The binary the image ships, beside the glibc build: what users run.
        let image = crate::image::image_binary(&crate::image::ensure_musl_tools(
            crate::arch::Arch::host(),
        )?)?;
        let tools = tracers::Tools::new(
            util::workspace_root().join("target/release/podtrace"),
            image,
            dir.path(),
        )?;
        Ok(Self { storm, dir, tools })
    }
}

/// Runs the benchmark (or only its churn section, or the soak).
pub fn run(opts: &Options) -> Result<()> {
    let mut plan = Plan::new(opts.quick)?;
    if let Some(n) = opts.churn_cgroups {
        anyhow::ensure!(
            n >= 4,
            "--churn-cgroups {n}: at least 4 (memory is read at each quarter)"
        );
        plan.churn = n;
        plan.churn_step = n.div_ceil(4);
    }
    if let Some(soak) = &opts.soak {
        let b = Bench::prepare()?;
        let _interrupts = guard::Interrupts::catch();
        return soak::run(&b.storm, &b.tools, b.dir.path(), soak);
    }
    if opts.churn_only {
        let b = Bench::prepare()?;
        let _interrupts = guard::Interrupts::catch();
        util::step(&format!(
            "cgroup churn: {} cgroups, memory every {}",
            plan.churn, plan.churn_step
        ))?;
        let c = churn::measure(
            &b.storm,
            &b.tools,
            b.dir.path(),
            plan.churn,
            plan.churn_step,
        )?;
        println!("{}", churn::render(&c));
        return Ok(());
    }
    let quick = opts.quick;
    let Bench { storm, dir, tools } = Bench::prepare()?;
    util::step(&format!(
        "benchmark{}: {} storm processes × {} rounds from {} workers; start-up with {} sleepers; churn of {} cgroups",
        if quick { " smoke (--quick)" } else { "" },
        plan.processes,
        plan.rounds,
        plan.workers,
        plan.sleepers,
        plan.churn
    ))?;
    // Guards: dropped (state restored, children reaped) on every path out of here.
    let interrupts = guard::Interrupts::catch();
    let stats = guard::BpfStats::enable()?;
    let tracefs = guard::Tracefs::ensure()?;
    let date = machine::date();
    let load_before = machine::load();
    let t0 = Instant::now();
    let samples = matrix::Matrix {
        runs: std::cell::Cell::new(0),
        storm: &storm,
        tools: &tools,
        dir: dir.path(),
        count: plan.processes,
        workers: plan.workers,
        rounds: plan.rounds,
        configs: &plan.configs,
    }
    .run_if(plan.has(Part::Matrix))?;
    let startups = if plan.has(Part::Startup) {
        startup::measure(&storm, &tools, dir.path(), plan.sleepers, plan.startups)?
    } else {
        Vec::new()
    };
    // Replay before the churn: removing 20,000 cgroups leaves the kernel's workers offlining
    // them for a while after, on the core the replay is pinned to (seen: 898k events/s right
    // after the churn, 1,150k on the settled box).
    let replayed = if plan.has(Part::Replay) {
        Some(replay::measure(if quick { 30_000 } else { 1_000_000 })?)
    } else {
        None
    };
    let churned = if plan.has(Part::Churn) {
        Some(churn::measure(
            &storm,
            &tools,
            dir.path(),
            plan.churn,
            plan.churn_step,
        )?)
    } else {
        None
    };
    // Not in the CI smoke: it brings up a real cri-o and a containerd.
    let named = if plan.has(Part::Names) && !quick {
        Some(names::measure(&tools.podtrace, names::pods(quick))?)
    } else {
        None
    };
    // Not in the CI smoke either: it needs a terminal (tmux) and a storm of its own.
    let topped = if plan.has(Part::Top) && !quick {
        Some(top::measure(&tools.podtrace, top::processes(quick))?)
    } else {
        None
    };
    let took = t0.elapsed();
    let load_after = machine::load();
    drop(tracefs);
    drop(stats);
    drop(interrupts);

    let mut text = render(
        &plan,
        &tools,
        &Measured {
            samples: &samples,
            startups: &startups,
            churn: churned.as_ref(),
        },
        &date,
        &load_before,
        &load_after,
        took,
    );
    if let Some(r) = &replayed {
        text.push_str(&replay::render(r));
    }
    if let Some(n) = &named {
        text.push_str(&names::render(n));
    }
    if let Some(t) = &topped {
        text.push_str(&top::render(t));
    }
    println!("{text}");
    if plan.partial() {
        eprintln!(
            "bench: a partial run (PODTRACE_BENCH_CONFIGS / PODTRACE_BENCH_PARTS): printed only, \
             not written to BENCHMARKS.md"
        );
    } else if !quick {
        let path = util::workspace_root().join("BENCHMARKS.md");
        prepend_run(&path, &text)?;
        eprintln!("bench: wrote this run at the top of {}", path.display());
    }
    Ok(())
}

/// Everything the side-by-side benchmark measured.
struct Measured<'a> {
    samples: &'a [matrix::Sample],
    startups: &'a [startup::StartRun],
    churn: Option<&'a churn::Churn>,
}

#[allow(clippy::too_many_arguments)]
fn render(
    plan: &Plan,
    tools: &tracers::Tools,
    m: &Measured<'_>,
    date: &str,
    load_before: &str,
    load_after: &str,
    took: std::time::Duration,
) -> String {
    let (samples, startups) = (m.samples, m.startups);
    let rows = report::rows(samples);
    let mut t = String::new();
    let kind = if plan.quick {
        "quick smoke (figures not meaningful)"
    } else {
        "full run"
    };
    let _ = writeln!(t, "## {date} — {kind}\n");
    t.push_str(&machine::describe());
    let _ = writeln!(
        t,
        "- load average (1, 5, 15 min) before: {load_before}; after: {load_after}; the bench took {:.0} s",
        took.as_secs_f64()
    );
    let _ = writeln!(
        t,
        "- command: `cargo xtask bench{}`: storm of {} × fork+exec+wait of `/bin/busybox true` from {} workers, flat out; {} rounds; each tracer run follows its own no-tracer run, tracer order rotated each round; kernel.bpf_stats_enabled=1 throughout",
        if plan.quick { " --quick" } else { "" },
        plan.processes,
        plan.workers,
        plan.rounds
    );
    if plan.partial() {
        let parts: Vec<&str> = plan.parts.iter().map(|p| p.key()).collect();
        let configs: Vec<&str> = plan.configs.iter().map(|&c| c.key()).collect();
        let _ = writeln!(
            t,
            "- partial run: parts {}; configurations {}",
            parts.join(", "),
            configs.join(", ")
        );
    }
    let _ = writeln!(t, "- configurations:");
    for c in Config::ALL
        .into_iter()
        .filter(|c| *c == Config::NoTracer || plan.configs.contains(c))
    {
        let _ = writeln!(
            t,
            "  - {}: `{}`",
            c.label(),
            c.shown(tools.summary, tools.kernel_stats)
        );
    }
    if !samples.is_empty() {
        let _ = writeln!(
            t,
            "\n### Side by side (median [min–max] over {} rounds)\n",
            plan.rounds
        );
        t.push_str(&report::side_by_side(&rows));
        let _ = writeln!(
            t,
            "\nWall ratio: storm wall time over that of the no-tracer run just before it (for \"no tracer\": \
             over the previous no-tracer run, i.e. the noise floor of this box). Workload CPU ratio: the same \
             for user+sys CPU of the storm and its children (the tracers' BPF programs run in them). Seen/started: \
             storm pids found in the tracer's exec / exit events, over all rounds. Events: what the tracer's user \
             space received (podtrace: its own count, before filters; the others: lines written). Tracer CPU: \
             user+sys of the tracer from just before the storm until it had caught up. Kernel: the tracer's BPF \
             programs' run_time_ns / run_cnt over the storm (bpftrace's too; forkstat's proc connector has no such \
             figure: its cost shows in the workload CPU ratio only). Reader stopped: podtrace was SIGSTOPped after \
             attaching and SIGCONTed after the storm, as a daemon starved of CPU would be. Empty probes: \
             bpftrace with empty actions on the same tracepoints, the floor of the kernel figure here \
             (bpftrace's probes are perf-event tracepoints; podtrace's are BTF tracepoints)."
        );
        let _ = writeln!(
            t,
            "\n### Kernel cost per program (run_time_ns / run_cnt over the storm)\n"
        );
        t.push_str(&report::kernel_programs(&rows));
    }
    if !startups.is_empty() {
        let _ = writeln!(t, "\n### Start-up and memory (podtrace)\n");
        t.push_str(&report::startup_table(startups));
    }
    if let Some(c) = m.churn {
        t.push_str(&churn::render(c));
    }
    let _ = writeln!(t, "\n### Targets (printed, never asserted)\n");
    t.push_str(&report::targets(&rows, startups, plan.sleepers));
    if let Some(c) = m.churn {
        t.push_str(&churn::verdict(c));
    }
    if !samples.is_empty() {
        let _ = writeln!(t, "\n### Raw runs\n");
        t.push_str(&report::raw(samples));
    }
    t
}

const MARKER: &str =
    "<!-- bench runs: newest first; `cargo xtask bench` inserts below this line -->";

/// Inserts `run` below the marker of BENCHMARKS.md (creating the file), keeping older runs.
fn prepend_run(path: &Path, run: &str) -> Result<()> {
    let old = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    std::fs::write(path, with_run(&old, run)).with_context(|| format!("writing {}", path.display()))
}

fn with_run(old: &str, run: &str) -> String {
    match old.split_once(MARKER) {
        Some((head, rest)) => {
            let rest = rest.trim_start_matches('\n');
            let sep = if rest.is_empty() { "" } else { "\n" };
            format!("{head}{MARKER}\n\n{run}{sep}{rest}")
        }
        None => format!(
            "# podtrace benchmarks\n\n`cargo xtask bench` runs the same exec storm with no tracer, podtrace, \
             podtrace --containers-only, bpftrace and forkstat, and measures podtrace's start-up and memory \
             with many processes on the box and under cgroup churn; `cargo xtask bench --soak` runs a million \
             execs and 20,000 cgroups against one podtrace and plots its memory and CPU (plots in \
             [docs/soak/](docs/soak/)). How and why: [docs/benchmarks.md](docs/benchmarks.md).\n\n\
             {MARKER}\n\n{run}{}{old}",
            if old.is_empty() { "" } else { "\n" }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_go_newest_first_below_the_marker_and_old_ones_stay() {
        let first = with_run("", "## run 1\n");
        assert!(first.starts_with("# podtrace benchmarks"), "{first}");
        let second = with_run(&first, "## run 2\n");
        let (head, runs) = second.split_once(MARKER).expect("marker kept");
        assert!(head.contains("docs/benchmarks.md"), "{head}");
        let i2 = runs.find("## run 2").expect("new run present");
        let i1 = runs.find("## run 1").expect("old run kept");
        assert!(i2 < i1, "newest first:\n{runs}");
        assert_eq!(second.matches(MARKER).count(), 1);
    }

    #[test]
    fn env_overrides_must_be_positive_numbers() {
        assert_eq!(
            env_usize("PODTRACE_BENCH_TEST_UNSET_VARIABLE", 7).expect("default"),
            7
        );
    }
}
