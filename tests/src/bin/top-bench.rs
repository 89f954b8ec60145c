//! `top-bench PROCESSES`: what `podtrace top` costs beside `podtrace run`, for `cargo xtask
//! bench` (BENCHMARKS.md). Needs root, tmux and the podtrace binary ($PODTRACE_BIN).
//!
//! Both run at once on the same exec storm (PROCESSES × fork+exec+wait of `/bin/true` from
//! one thread per core, flat out): `podtrace run --output /dev/null` (the stream's own cost
//! without a consumer's) and `podtrace top` in a 160x50 tmux pane (its default refresh,
//! 1 s). Side by side, so that the machine's noise falls on both. For each: CPU (user +
//! system, from /proc/PID/stat) from just before the storm until 2 s after it, per storm
//! process; VmHWM and VmRSS at the end (MiB).
//!
//! Prints one JSON object on stdout.
// A bench tool: it stops with a message on any failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use podtrace_tests::tmux::Tmux;
use podtrace_tests::tracer::bin;
use serde_json::{json, Value};

/// utime + stime of `pid`, in ms.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/stat: {e}"));
    // The fields after the command's closing parenthesis: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')').expect("a stat line") + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime");
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks as f64 * 1000.0 / hz
}

/// A `Vm...:` line of /proc/PID/status, in MiB.
fn vm_mib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"));
    kib / 1024.0
}

/// `n` fork+exec+wait of /bin/true from one thread per core; the wall time.
fn storm(n: usize) -> Duration {
    let workers = std::thread::available_parallelism().map_or(2, |c| c.get());
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for w in 0..workers {
            let count = n / workers + usize::from(w < n % workers);
            s.spawn(move || {
                for _ in 0..count {
                    let st = Command::new("/bin/true").status().expect("run /bin/true");
                    assert!(st.success(), "/bin/true: {st}");
                }
            });
        }
    });
    t0.elapsed()
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .expect("usage: top-bench PROCESSES");
    let dir = tempfile::tempdir().expect("temp dir");
    let podtrace = bin();

    // `run`, attached when it says so.
    let err = dir.path().join("run.err");
    let mut run = Command::new(&podtrace)
        .args(["run", "--output", "/dev/null"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&err).expect("run.err"))
        .spawn()
        .expect("start podtrace run");
    let t0 = Instant::now();
    while !std::fs::read_to_string(&err)
        .unwrap_or_default()
        .contains("attached")
    {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "podtrace run did not attach: {}",
            std::fs::read_to_string(&err).unwrap_or_default()
        );
        assert!(
            run.try_wait().expect("wait").is_none(),
            "podtrace run exited"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // `top`, its pid from the shell that execs it.
    let tmux = Tmux::start(160, 50, dir.path());
    tmux.shell(&format!(
        "sh -c 'echo $$ > top.pid; exec {} top 2>top.err'",
        podtrace.display()
    ));
    tmux.wait_for(Duration::from_secs(60), "top's first picture", |s| {
        s.contains("HOST-PID CTR-PID") && !s.contains("starting:")
    });
    let top: u32 = std::fs::read_to_string(dir.path().join("top.pid"))
        .expect("top.pid")
        .trim()
        .parse()
        .expect("a pid in top.pid");
    std::thread::sleep(Duration::from_secs(2));

    let pids = [("run", run.id()), ("top", top)];
    let before: Vec<f64> = pids.iter().map(|&(_, p)| cpu_ms(p)).collect();
    let wall = storm(n);
    // Both catch up (top also draws its next refresh).
    std::thread::sleep(Duration::from_secs(2));
    let mut out = json!({
        "processes": n,
        "storm_s": wall.as_secs_f64(),
        "processes_per_s": n as f64 / wall.as_secs_f64(),
    });
    for (i, &(name, pid)) in pids.iter().enumerate() {
        let cpu = cpu_ms(pid) - before[i];
        out[name] = json!({
            "cpu_ms": cpu,
            "cpu_us_per_process": cpu * 1000.0 / n as f64,
            "cpu_percent_of_a_core": cpu / 10.0 / wall.as_secs_f64(),
            "vm_hwm_mib": vm_mib(pid, "VmHWM:"),
            "vm_rss_mib": vm_mib(pid, "VmRSS:"),
        });
    }
    tmux.key("q");
    // SAFETY: signalling our own child.
    unsafe { libc::kill(run.id() as i32, libc::SIGINT) };
    let _ = run.wait();
    drop(tmux);
    let v: Value = out;
    println!("{v}");
}
