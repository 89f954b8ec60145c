//! Reading what each tracer wrote: which pids it saw exec and exit, how many events it
//! delivered, and how many it says it lost.
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use anyhow::{Context, Result};

use super::tracers::Config;

/// What a tracer reported over one run.
#[derive(Debug, Default)]
pub struct Seen {
    /// pid -> how many exec events named it.
    pub exec: HashMap<i32, u32>,
    /// pid -> how many (process) exit events named it.
    pub exit: HashMap<i32, u32>,
    /// container id -> how many exec events were attributed to it (podtrace only).
    pub exec_containers: HashMap<String, u32>,
    /// Events the tracer's user space received (podtrace: its "events" count, before filters;
    /// the others: event lines written).
    pub events: u64,
    /// Events the tracer says it lost (forkstat: overflow notices; each may stand for many).
    pub lost: Option<u64>,
    /// podtrace's own kernel figures from --summary: (run_time_ns, run_cnt) over its programs.
    pub summary_kernel: Option<(u64, u64)>,
}

/// How many of the `started` pids (with repeats, as pids can be reused) appear in `seen`.
pub fn matched(started: &[i32], seen: &HashMap<i32, u32>) -> usize {
    let mut want: HashMap<i32, u32> = HashMap::new();
    for &p in started {
        *want.entry(p).or_default() += 1;
    }
    want.iter()
        .map(|(p, &n)| n.min(seen.get(p).copied().unwrap_or(0)) as usize)
        .sum()
}

pub fn parse(
    config: Config,
    out: &Path,
    stderr: &[String],
    summary: Option<&Path>,
) -> Result<Seen> {
    match config {
        Config::NoTracer => Ok(Seen::default()),
        Config::Podtrace
        | Config::PodtraceImage
        | Config::PodtraceContainers
        | Config::PodtraceStalled => podtrace(out, stderr, summary),
        Config::Bpftrace | Config::BpftraceEmpty => bpftrace(out, stderr),
        Config::Forkstat => forkstat(out),
    }
}

fn lines(path: &Path) -> Result<impl Iterator<Item = String>> {
    let f = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    // Lossy: a tracer may print non-UTF-8 command lines.
    Ok(BufReader::new(f)
        .split(b'\n')
        .map_while(|l| l.ok())
        .map(|l| String::from_utf8_lossy(&l).into_owned()))
}

fn podtrace(out: &Path, stderr: &[String], summary: Option<&Path>) -> Result<Seen> {
    let mut seen = Seen::default();
    for (n, line) in lines(out)?.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{} line {}: not JSON", out.display(), n + 1))?;
        let kind = v.get("type").and_then(serde_json::Value::as_str);
        let pid = v
            .get("pid")
            .and_then(serde_json::Value::as_i64)
            .and_then(|p| i32::try_from(p).ok());
        match (kind, pid) {
            (Some("exec"), Some(p)) => *seen.exec.entry(p).or_default() += 1,
            (Some("exit"), Some(p)) => *seen.exit.entry(p).or_default() += 1,
            _ => {}
        }
        if kind == Some("exec") {
            if let Some(id) = v
                .pointer("/container/id")
                .and_then(serde_json::Value::as_str)
            {
                *seen.exec_containers.entry(id.to_string()).or_default() += 1;
            }
        }
    }
    let from_summary = match summary.filter(|p| p.is_file()) {
        Some(p) => Some(podtrace_summary(p)?),
        None => None,
    };
    if let Some(sum) = from_summary {
        seen.events = sum.events;
        seen.lost = Some(sum.lost);
        seen.summary_kernel = sum.kernel;
    } else {
        let stopped = stderr
            .iter()
            .find_map(|l| l.split_once("stopped:").map(|(_, rest)| rest))
            .context("podtrace wrote no summary and no \"stopped:\" line on stderr")?;
        let counts = stopped_counts(stopped);
        seen.events = counts
            .get("events")
            .copied()
            .context("podtrace's stopped line has no event count")?;
        seen.lost = counts.get("lost").copied();
    }
    Ok(seen)
}

/// What podtrace's --summary says.
struct Summary {
    events: u64,
    lost: u64,
    /// (run_time_ns, run_cnt) summed over its programs.
    kernel: Option<(u64, u64)>,
}

fn podtrace_summary(path: &Path) -> Result<Summary> {
    let v = super::read_json(path)?;
    let num = |k: &str| super::json_u64(&v, path, k);
    let kernel = v
        .get("kernel")
        .and_then(serde_json::Value::as_object)
        .filter(|m| !m.is_empty())
        .map(|progs| {
            progs.values().fold((0, 0), |(t, c), p| {
                let get = |k| p.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
                (t + get("run_time_ns"), c + get("run_cnt"))
            })
        });
    Ok(Summary {
        events: num("events")?,
        lost: num("lost")?,
        kernel,
    })
}

/// "159 events, 159 printed, 0 lost, ..." -> {"events": 159, "printed": 159, "lost": 0, ...}
fn stopped_counts(s: &str) -> HashMap<String, u64> {
    s.split(',')
        .filter_map(|part| {
            let mut words = part.split_whitespace();
            let n = words.next()?.parse().ok()?;
            Some((words.next()?.to_string(), n))
        })
        .collect()
}

fn bpftrace(out: &Path, stderr: &[String]) -> Result<Seen> {
    let mut seen = Seen::default();
    let mut lost = 0;
    let mut note_lost = |line: &str| {
        // "Lost 123 events"
        let mut w = line.split_whitespace();
        if w.next() == Some("Lost") {
            if let Some(n) = w.next().and_then(|n| n.parse::<u64>().ok()) {
                lost += n;
            }
        }
    };
    for line in lines(out)? {
        let mut w = line.split_whitespace();
        let kind = w.next();
        let pid = w.next().and_then(|p| p.parse::<i32>().ok());
        match (kind, pid) {
            (Some("exec"), Some(p)) => *seen.exec.entry(p).or_default() += 1,
            (Some("exit"), Some(p)) => *seen.exit.entry(p).or_default() += 1,
            (Some("fork"), Some(_)) => {}
            _ => {
                note_lost(&line);
                continue;
            }
        }
        seen.events += 1;
    }
    for line in stderr {
        note_lost(line);
    }
    seen.lost = Some(lost);
    Ok(seen)
}

fn forkstat(out: &Path) -> Result<Seen> {
    let mut seen = Seen::default();
    let mut overflows = 0;
    for line in lines(out)? {
        // "23:35:48 exec  24463                 /bin/busybox true"
        // "23:35:48 recv ----- nobufs ..." when the proc connector overflowed.
        let mut w = line.split_whitespace();
        let (Some(time), Some(kind)) = (w.next(), w.next()) else {
            continue;
        };
        if !time.contains(':') {
            continue; // header or the statistics table
        }
        if line.contains("nobufs") {
            overflows += 1;
            continue;
        }
        let pid = w.next().and_then(|p| p.parse::<i32>().ok());
        match (kind, pid) {
            (_, None) => continue,
            ("exec", Some(p)) => *seen.exec.entry(p).or_default() += 1,
            ("exit", Some(p)) => *seen.exit.entry(p).or_default() += 1,
            _ => {}
        }
        seen.events += 1;
    }
    seen.lost = Some(overflows);
    Ok(seen)
}

/// Whether forkstat's output already shows an exec of `pid` (readiness probe).
pub fn forkstat_saw_exec(out: &Path, pid: i32) -> Result<bool> {
    Ok(forkstat(out)?.exec.contains_key(&pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.path().join(name);
        std::fs::write(&p, text).expect("write fixture");
        p
    }

    #[test]
    fn matched_counts_reused_pids_at_most_as_often_as_started() {
        let seen = HashMap::from([(5, 1), (6, 3), (9, 1)]);
        assert_eq!(
            matched(&[5, 5, 6, 7], &seen),
            2,
            "5 once of twice, 6 once, 7 never"
        );
    }

    #[test]
    fn podtrace_output_and_stopped_line() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = write(
            &dir,
            "o.ndjson",
            "{\"type\":\"fork\",\"pid\":7,\"ppid\":1}\n{\"type\":\"exec\",\"pid\":7,\"ppid\":1,\"argv\":[\"\\\"pid\\\":9\"],\"container\":null}\n{\"type\":\"exec\",\"pid\":8,\"ppid\":1,\"container\":{\"id\":\"c0ffee\"}}\n{\"type\":\"exit\",\"pid\":7,\"ppid\":1}\n",
        );
        let stderr = vec![
            "2026-11-26T23:35:03Z  INFO stopped: 159 events, 3 printed, 2 lost, 0 malformed".into(),
        ];
        let s = podtrace(&out, &stderr, None).expect("podtrace output parses");
        assert_eq!(s.exec, HashMap::from([(7, 1), (8, 1)]));
        assert_eq!(s.exit, HashMap::from([(7, 1)]));
        assert_eq!(
            s.exec_containers,
            HashMap::from([("c0ffee".to_string(), 1)])
        );
        assert_eq!((s.events, s.lost), (159, Some(2)));
    }

    #[test]
    fn podtrace_summary_wins_over_stderr() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = write(&dir, "o.ndjson", "");
        let sum = write(
            &dir,
            "s.json",
            r#"{"events":10,"printed":9,"lost":1,"decode_errors":0,"threads":0,
                "kernel":{"sched_process_exec":{"run_cnt":4,"run_time_ns":400},
                          "sched_process_exit":{"run_cnt":6,"run_time_ns":600}}}"#,
        );
        let s = podtrace(&out, &[], Some(&sum)).expect("summary parses");
        assert_eq!((s.events, s.lost), (10, Some(1)));
        assert_eq!(s.summary_kernel, Some((1000, 10)));
    }

    #[test]
    fn podtrace_without_counts_is_an_error() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = write(&dir, "o.ndjson", "");
        assert!(podtrace(&out, &["attached".into()], None).is_err());
    }

    #[test]
    fn bpftrace_lines_and_lost_notices() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = write(
            &dir,
            "b.txt",
            "Attaching 3 probes...\nfork 1 7\nexec 7 1 busybox /bin/busybox\nexit 7 0\n\nLost 12 events\n",
        );
        let s = bpftrace(&out, &["Lost 3 events".into()]).expect("bpftrace output parses");
        assert_eq!((s.events, s.lost), (3, Some(15)));
        assert_eq!(s.exec.get(&7), Some(&1));
        assert_eq!(s.exit.get(&7), Some(&1));
    }

    #[test]
    fn forkstat_lines_header_and_overflows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let out = write(
            &dir,
            "f.txt",
            "Time     Event   PID Info   Duration Process\n\
             23:35:48 fork  24458 parent          bash\n\
             23:35:48 fork  24459 child           bash\n\
             23:35:48 exec  24459                 busybox true\n\
             23:35:48 exit  24459      0   0.001s busybox true\n\
             23:35:49 recv ----- nobufs 12345678 (No buffer space available)\n",
        );
        let s = forkstat(&out).expect("forkstat output parses");
        assert_eq!((s.events, s.lost), (4, Some(1)));
        assert_eq!(s.exec.get(&24459), Some(&1));
        assert_eq!(s.exit.get(&24459), Some(&1));
        assert!(forkstat_saw_exec(&out, 24459).expect("readable"));
        assert!(!forkstat_saw_exec(&out, 24458).expect("readable"));
    }
}
