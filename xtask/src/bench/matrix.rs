//! The side-by-side runs: every configuration against the same storm, repeated and interleaved.
//! Each tracer run follows its own no-tracer run (its pair), so that a ratio compares two
//! storms seconds apart on a shared, noisy box; the order of the tracers rotates each round.
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};

use super::guard::check_interrupted;
use super::outputs;
use super::procfs;
use super::storm::Storm;
use super::tracers::{self, Config, Tools};

/// One storm under one configuration.
#[derive(Clone, Debug)]
pub struct Sample {
    pub config: Config,
    pub round: usize,
    /// The storm's own wall time (tracer start-up excluded).
    pub wall_ns: u64,
    /// CPU of the storm and its children (tracers' BPF programs included).
    pub storm_cpu_ns: u64,
    /// The no-tracer run just before this one: (wall_ns, storm_cpu_ns).
    pub pair: Option<(u64, u64)>,
    pub started: usize,
    pub exec_seen: Option<usize>,
    pub exit_seen: Option<usize>,
    pub lost: Option<u64>,
    pub events: Option<u64>,
    /// Tracer CPU (user + sys) from just before the storm until it had caught up.
    pub cpu_ns: Option<u64>,
    /// Tracer CPU over its whole life (rusage at exit: start-up and shutdown included).
    pub cpu_life_ns: Option<u64>,
    /// Tracer peak RSS in KiB (max of VmHWM before stopping and ru_maxrss).
    pub peak_rss_kb: Option<u64>,
    /// The tracer's BPF programs over the same window: (run_time_ns, run_cnt).
    pub kernel: Option<(u64, u64)>,
    /// The same per program (name, run_time_ns, run_cnt), programs that ran only.
    pub kernel_progs: Vec<(String, u64, u64)>,
    /// podtrace's own --summary kernel figures over its whole life.
    pub summary_kernel: Option<(u64, u64)>,
    /// The tracer went quiet after the storm (else it was still busy when measured).
    pub settled: bool,
}

pub struct Matrix<'a> {
    /// Runs so far (unique file names).
    pub runs: std::cell::Cell<usize>,
    pub storm: &'a Storm,
    pub tools: &'a Tools,
    pub dir: &'a Path,
    pub count: usize,
    pub workers: usize,
    pub rounds: usize,
    /// The tracer configurations to run (each after its own no-tracer run).
    pub configs: &'a [Config],
}

impl Matrix<'_> {
    fn next_tag(&self) -> usize {
        let n = self.runs.get();
        self.runs.set(n + 1);
        n
    }

    /// The runs, or none when the side-by-side part is not wanted.
    pub fn run_if(&self, wanted: bool) -> Result<Vec<Sample>> {
        if wanted {
            self.run()
        } else {
            Ok(Vec::new())
        }
    }

    pub fn run(&self) -> Result<Vec<Sample>> {
        let mut samples: Vec<Sample> = Vec::new();
        let tracers: Vec<Config> = self.configs.to_vec();
        let n = tracers.len();
        for round in 0..self.rounds {
            for i in 0..n {
                let config = tracers[(i + round) % n];
                for c in [Config::NoTracer, config] {
                    check_interrupted()?;
                    eprintln!(
                        "bench: round {}/{}: {} ({} processes, {} workers)",
                        round + 1,
                        self.rounds,
                        c.label(),
                        self.count,
                        self.workers
                    );
                    let mut s = self.one(c, round)?;
                    s.pair = samples
                        .iter()
                        .rev()
                        .find(|p| p.config == Config::NoTracer)
                        .map(|p| (p.wall_ns, p.storm_cpu_ns));
                    eprintln!("bench:   {}", brief(&s));
                    samples.push(s);
                }
            }
        }
        Ok(samples)
    }

    fn one(&self, config: Config, round: usize) -> Result<Sample> {
        let tag = format!("{config:?}-{round}-{}", self.next_tag()).to_lowercase();
        let storm_out = self.dir.join(format!("{tag}.storm.json"));
        let mut tracer = tracers::start(config, self.tools, self.dir, &tag)?;
        let before = match tracer.as_mut() {
            Some(t) => {
                t.wait_ready(Duration::from_secs(60))?;
                // Let the canaries' events drain before the window opens.
                std::thread::sleep(Duration::from_millis(300));
                let snap = t.snapshot()?;
                if config == Config::PodtraceStalled {
                    t.freeze(true)?;
                }
                Some(snap)
            }
            None => None,
        };
        let storm = self.storm.run(self.count, self.workers, &storm_out);
        let _ = std::fs::remove_file(&storm_out);
        // The kernel side of a stopped reader: its programs' statistics before it resumes.
        let frozen = match tracer.as_mut() {
            Some(t) if config == Config::PodtraceStalled => {
                let progs = procfs::bpf_progs(t.pid());
                t.freeze(false)?;
                Some(progs?)
            }
            _ => None,
        };
        let storm = storm?;
        check_interrupted()?;
        let mut sample = Sample {
            config,
            round,
            wall_ns: storm.wall_ns,
            storm_cpu_ns: storm.cpu_ns,
            pair: None,
            started: storm.started,
            exec_seen: None,
            exit_seen: None,
            lost: None,
            events: None,
            cpu_ns: None,
            cpu_life_ns: None,
            peak_rss_kb: None,
            kernel: None,
            kernel_progs: Vec::new(),
            summary_kernel: None,
            settled: true,
        };
        let (Some(mut t), Some(before)) = (tracer, before) else {
            return Ok(sample);
        };
        sample.settled = t.settle(Duration::from_secs(30))?;
        let after = t.snapshot()?;
        let hwm = procfs::status_kb(t.pid(), "VmHWM")?;
        let out = t.out.clone();
        let summary = t.summary.clone();
        let fin = t.finish()?;
        let seen = outputs::parse(config, &out, &fin.stderr, summary.as_deref())?;
        let _ = std::fs::remove_file(&out);
        if let Some(s) = &summary {
            let _ = std::fs::remove_file(s);
        }
        let exec_seen = outputs::matched(&storm.pids, &seen.exec);
        if config.reports_host_processes() && exec_seen == 0 {
            bail!(
                "{} saw none of the {} storm processes exec (stderr:\n{})",
                config.label(),
                storm.started,
                fin.stderr.join("\n")
            );
        }
        sample.exec_seen = Some(exec_seen);
        sample.exit_seen = Some(outputs::matched(&storm.pids, &seen.exit));
        sample.lost = seen.lost;
        sample.events = Some(seen.events);
        sample.cpu_ns = Some(after.cpu_ns.saturating_sub(before.cpu_ns));
        sample.cpu_life_ns = Some(fin.exit.cpu_ns);
        sample.peak_rss_kb = Some(hwm.max(fin.exit.maxrss_kb));
        let kernel_after = frozen.as_ref().unwrap_or(&after.progs);
        let (time, cnt) = procfs::progs_delta(&before.progs, kernel_after);
        sample.kernel = (cnt > 0).then_some((time, cnt));
        sample.kernel_progs = procfs::progs_delta_by_name(&before.progs, kernel_after);
        sample.summary_kernel = seen.summary_kernel;
        Ok(sample)
    }
}

/// One line of progress for stderr.
fn brief(s: &Sample) -> String {
    let mut parts = vec![format!(
        "{} processes in {:.2} s (storm CPU {:.2} s)",
        s.started,
        s.wall_ns as f64 / 1e9,
        s.storm_cpu_ns as f64 / 1e9
    )];
    if let Some((w, _)) = s.pair {
        parts.push(format!("{:.3}× its pair", s.wall_ns as f64 / w as f64));
    }
    if let (Some(e), Some(x)) = (s.exec_seen, s.exit_seen) {
        parts.push(format!("exec seen {e}, exit seen {x}"));
    }
    if let Some(l) = s.lost {
        parts.push(format!("lost {l}"));
    }
    if let (Some(c), Some(ev)) = (s.cpu_ns, s.events) {
        parts.push(format!("cpu {:.0} ms for {ev} events", c as f64 / 1e6));
    }
    if let Some((t, c)) = s.kernel {
        let each: Vec<String> = s
            .kernel_progs
            .iter()
            .map(|(n, t, c)| {
                format!(
                    "{} {:.0}",
                    super::report::short_prog(n),
                    *t as f64 / *c as f64
                )
            })
            .collect();
        parts.push(format!(
            "kernel {:.0} ns/run ({})",
            t as f64 / c as f64,
            each.join(", ")
        ));
    }
    if !s.settled {
        parts.push("still busy when measured".into());
    }
    parts.join(", ")
}
