//! Issue 6, operations: Prometheus metrics during a run, argv redaction in output and records,
//! the chrome-trace export of a recorded run, the error for missing privileges, and the files
//! podtrace writes (no symlinks, 0600) (root).
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openmetrics_parser::{MetricsExposition, OpenMetricsType, OpenMetricsValue};
use podtrace_tests::lab::{CrioLikeContainer, CrioOpts, CrioPod};
use podtrace_tests::tracer::{bin, Tracer};
use serde_json::Value;

/// Tests that start containers run one at a time: the metrics test counts the node's containers.
static CONTAINERS: Mutex<()> = Mutex::new(());

fn containers_lock() -> std::sync::MutexGuard<'static, ()> {
    CONTAINERS.lock().unwrap_or_else(|e| e.into_inner())
}

fn marker(name: &str) -> String {
    format!("podtrace-ops-{name}-{}", std::process::id())
}

fn free_loopback_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
    l.local_addr().expect("local address of the ephemeral port")
}

struct HttpResponse {
    status: u16,
    head: String,
    body: String,
}

/// One HTTP/1.1 request on a plain TCP connection (the daemon closes it after answering).
fn http(addr: SocketAddr, method: &str, path: &str) -> HttpResponse {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect to the metrics endpoint {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("set a read timeout");
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/openmetrics-text\r\n\r\n"
    )
    .expect("send the request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .unwrap_or_else(|e| panic!("read the response from {addr}: {e}"));
    let text = String::from_utf8(raw).expect("the response is UTF-8");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in {text:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Content-Length in {head:?}"));
    assert_eq!(body.len(), length, "Content-Length matches the body");
    HttpResponse {
        status,
        head: head.to_string(),
        body: body.to_string(),
    }
}

type Exposition = MetricsExposition<OpenMetricsType, OpenMetricsValue>;

/// GET /metrics, parsed by a strict OpenMetrics parser.
fn scrape(addr: SocketAddr) -> Exposition {
    let r = http(addr, "GET", "/metrics");
    assert_eq!(r.status, 200, "GET /metrics: {}\n{}", r.head, r.body);
    assert!(
        r.head
            .contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{}",
        r.head
    );
    assert!(r.body.ends_with("# EOF\n"), "{}", r.body);
    openmetrics_parser::openmetrics::parse_openmetrics(&r.body)
        .unwrap_or_else(|e| panic!("not valid OpenMetrics text ({e:?}):\n{}", r.body))
}

/// The value of one sample, by family name and label values.
fn sample(exp: &Exposition, family: &str, labels: &[&str]) -> f64 {
    let f = exp
        .families
        .get(family)
        .unwrap_or_else(|| panic!("no metric family {family}"));
    let values: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
    let s = f
        .get_sample_by_label_values(&values)
        .unwrap_or_else(|| panic!("{family} has no sample {labels:?}"));
    match &s.value {
        OpenMetricsValue::Counter(c) => c.value.as_f64(),
        OpenMetricsValue::Gauge(g) => g.as_f64(),
        other => panic!("{family}: unexpected value {other:?}"),
    }
}

fn family_type(exp: &Exposition, family: &str) -> OpenMetricsType {
    exp.families
        .get(family)
        .unwrap_or_else(|| panic!("no metric family {family}"))
        .family_type
}

/// Pids of user-space processes (kernel threads have no executable).
fn user_pids() -> std::collections::HashSet<u32> {
    std::fs::read_dir("/proc")
        .expect("read /proc")
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()))
        .filter(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok())
        .collect()
}

fn run_sh(script: &str) -> u32 {
    let mut c = Command::new("sh")
        .args(["-c", script])
        .spawn()
        .expect("spawn sh");
    let pid = c.id();
    c.wait().expect("wait for sh");
    pid
}

#[test]
fn metrics_are_served_during_a_run() {
    let _serial = containers_lock();
    let addr = free_loopback_addr();
    let user_pids_before = user_pids();
    let t = Tracer::start(&[
        "--metrics-addr",
        &addr.to_string(),
        "--ring-buffer-bytes",
        "16777216",
    ]);
    let before = scrape(addr);
    for family in [
        "podtrace_events",
        "podtrace_lost_events",
        "podtrace_decode_errors",
        "podtrace_kernel_threads",
    ] {
        assert_eq!(family_type(&before, family), OpenMetricsType::Counter);
    }
    for family in [
        "podtrace_tracked_processes",
        "podtrace_containers",
        "podtrace_pods",
        "podtrace_ring_buffer_size_bytes",
    ] {
        assert_eq!(family_type(&before, family), OpenMetricsType::Gauge);
    }
    assert_eq!(
        sample(&before, "podtrace_ring_buffer_size_bytes", &[]),
        16777216.0
    );
    // Every user-space process alive both before the tracer started and after the scrape was
    // alive all along: the table has at least those (the node may be busy, so no upper bound
    // tighter than "came from /proc or from an event").
    let stable = user_pids_before.intersection(&user_pids()).count() as f64;
    let tracked = sample(&before, "podtrace_tracked_processes", &[]);
    let snapshot: f64 = t
        .stderr
        .iter()
        .find_map(|l| {
            let (head, _) = l.split_once(" processes from /proc")?;
            head.rsplit(' ').next()?.parse().ok()
        })
        .unwrap_or_else(|| panic!("no snapshot size in {:#?}", t.stderr));
    let ceiling = snapshot
        + sample(&before, "podtrace_events", &["fork"])
        + sample(&before, "podtrace_events", &["exec"]);
    assert!(
        tracked >= stable && tracked <= ceiling,
        "tracked processes {tracked}: {stable} were alive throughout, at most {ceiling} were seen \
         ({snapshot} in the snapshot)"
    );

    // Three processes: exec, fork and exit counters move by at least three each.
    let tag = marker("metrics");
    for _ in 0..3 {
        run_sh(&format!(": {tag}"));
    }
    // Two containers of one pod, laid out like cri-o.
    let pod = CrioPod::new();
    let opts = || CrioOpts {
        pod: Some(pod.clone()),
        ..CrioOpts::default()
    };
    let a = CrioLikeContainer::start_with("web", opts(), &["/bin/sleep", "600"]);
    let b = CrioLikeContainer::start_with("sidecar", opts(), &["/bin/sleep", "600"]);
    // Gauges follow the engine on the run loop's 200 ms tick.
    std::thread::sleep(Duration::from_millis(600));
    let during = scrape(addr);
    for (ty, at_least) in [("exec", 3.0), ("fork", 3.0), ("exit", 3.0)] {
        let (x0, x1) = (
            sample(&before, "podtrace_events", &[ty]),
            sample(&during, "podtrace_events", &[ty]),
        );
        assert!(x1 - x0 >= at_least, "{ty} events went from {x0} to {x1}");
    }
    let containers = |e: &Exposition| sample(e, "podtrace_containers", &[]);
    let pods = |e: &Exposition| sample(e, "podtrace_pods", &[]);
    assert!(
        containers(&during) - containers(&before) >= 2.0,
        "containers {} -> {} after starting {} and {}",
        containers(&before),
        containers(&during),
        a.id,
        b.id
    );
    assert!(
        pods(&during) - pods(&before) >= 1.0,
        "pods {} -> {} after starting pod {}",
        pods(&before),
        pods(&during),
        pod.uid
    );
    assert!(pods(&during) <= containers(&during));
    let execs_scraped = sample(&during, "podtrace_events", &["exec"]);

    drop(a);
    drop(b);
    std::thread::sleep(Duration::from_millis(600));
    let after = scrape(addr);
    assert!(
        containers(&during) - containers(&after) >= 2.0,
        "containers {} -> {} after removing both",
        containers(&during),
        containers(&after)
    );
    let lost_scraped = sample(&after, "podtrace_lost_events", &[]);
    assert_eq!(sample(&after, "podtrace_decode_errors", &[]), 0.0);

    let not_found = http(addr, "GET", "/nope");
    assert_eq!(not_found.status, 404, "{}", not_found.head);
    let post = http(addr, "POST", "/metrics");
    assert_eq!(post.status, 405, "{}", post.head);

    let run = t.stop();
    let execs_printed = run.events.iter().filter(|e| e["type"] == "exec").count() as f64;
    assert!(
        execs_scraped <= execs_printed,
        "the exec counter ({execs_scraped}) never runs ahead of the exec lines ({execs_printed})"
    );
    // Loss (a busy node can overrun the ring) is counted as the `lost` lines report it.
    let lost_printed: f64 = run
        .events
        .iter()
        .filter(|e| e["type"] == "lost")
        .filter_map(|e| e["count"].as_f64())
        .sum();
    assert!(
        lost_scraped <= lost_printed,
        "lost counter {lost_scraped}, lost lines {lost_printed}"
    );
    assert_eq!(run.execs_with_arg(&format!(": {tag}")).len(), 3);
}

#[test]
fn metrics_stay_off_without_the_flag() {
    let addr = free_loopback_addr();
    let t = Tracer::start(&[]);
    assert!(
        TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err(),
        "nothing listens on {addr}"
    );
    let run = t.stop();
    assert!(
        !run.stderr.iter().any(|l| l.contains("metrics on")),
        "{:#?}",
        run.stderr
    );
}

fn read_lossy(path: &std::path::Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_else(|e| {
        panic!("read {}: {e}", path.display());
    }))
    .into_owned()
}

#[test]
fn secrets_are_redacted_in_output_records_and_replay() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = dir.path().join("trace.ndjson");
    // Already running when the tracer starts: its argv reaches the trace as a snapshot record.
    // (`read` keeps this very shell waiting, with its argv, until stdin closes.)
    let mut early = Command::new("sh")
        .args(["-c", "read x; :", "sh", "--password=hunter1"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the early process");
    let t = Tracer::start(&[
        "--record",
        trace.to_str().expect("UTF-8 temp path"),
        "--redact-args",
        "^internal-hunter",
    ]);
    let sh = run_sh(": --password=hunter2");
    let env = Command::new("env")
        .args(["AWS_SECRET_ACCESS_KEY=hunter3", "true"])
        .status()
        .expect("run env");
    assert!(env.success());
    let two = run_sh(": x --token hunter4");
    let user = Command::new("true")
        .args(["internal-hunter5"])
        .status()
        .expect("run true");
    assert!(user.success());
    let run = t.stop();
    drop(early.stdin.take());
    let _ = early.wait();

    let out = read_lossy(&run.dir.path().join("events.ndjson"));
    let rec = read_lossy(&trace);
    assert!(
        !out.contains("hunter"),
        "NDJSON output holds a secret:\n{out}"
    );
    assert!(!rec.contains("hunter"), "trace file holds a secret:\n{rec}");

    let exec = run.one("exec", sh);
    assert_eq!(
        exec["argv"],
        serde_json::json!(["sh", "-c", ": --password=<redacted>"])
    );
    assert_eq!(
        run.one("exec", two)["argv"],
        serde_json::json!(["sh", "-c", ": x --token <redacted>"])
    );
    assert_eq!(
        run.execs_with_arg("AWS_SECRET_ACCESS_KEY=<redacted>").len(),
        1
    );
    assert_eq!(
        run.execs_with_arg("<redacted>").len(),
        1,
        "the user pattern"
    );
    assert!(
        rec.contains(r#""--password=<redacted>""#),
        "the snapshot record of pid {} is redacted",
        early.id()
    );

    // Replay prints what run printed: the redacted text.
    let replay = Command::new(bin())
        .arg("replay")
        .arg(&trace)
        .output()
        .expect("run podtrace replay");
    assert!(replay.status.success(), "{replay:?}");
    let text = String::from_utf8_lossy(&replay.stdout);
    assert!(!text.contains("hunter"), "{text}");
    assert!(text.contains(": --password=<redacted>"), "{text}");
}

#[test]
fn without_default_redaction_the_argv_is_verbatim() {
    // The control for the test above: the secret is there when nothing redacts it.
    let t = Tracer::start(&["--no-default-redaction"]);
    let sh = run_sh(": --password=hunter2");
    let run = t.stop();
    assert_eq!(
        run.one("exec", sh)["argv"],
        serde_json::json!(["sh", "-c", ": --password=hunter2"])
    );
}

#[test]
fn bad_redaction_pattern_exits_2() {
    let out = Command::new(bin())
        .args(["run", "--duration", "1", "--redact-args", "("])
        .output()
        .expect("run podtrace");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--redact-args `(`"), "{err}");
}

/// The structure Perfetto's JSON importer and chrome://tracing read.
fn check_trace_event_format(trace: &Value) -> &Vec<Value> {
    let events = trace["traceEvents"]
        .as_array()
        .expect("a traceEvents array");
    for e in events {
        let ph = e["ph"].as_str().unwrap_or_else(|| panic!("no ph: {e}"));
        assert!(["X", "M", "i"].contains(&ph), "unexpected ph {ph}: {e}");
        assert!(
            e["pid"].is_u64() && e["tid"].is_u64(),
            "integer pid/tid: {e}"
        );
        assert!(e["name"].is_string(), "name: {e}");
        match ph {
            "X" => {
                assert!(e["ts"].as_f64().is_some_and(|v| v >= 0.0), "ts: {e}");
                assert!(e["dur"].as_f64().is_some_and(|v| v >= 0.0), "dur: {e}");
            }
            "i" => assert!(e["ts"].is_number(), "ts: {e}"),
            _ => assert!(e["args"].is_object(), "metadata args: {e}"),
        }
    }
    events
}

#[test]
fn replay_exports_a_chrome_trace() {
    let _serial = containers_lock();
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = dir.path().join("trace.ndjson.zst");
    let t = Tracer::start(&["--record", trace.to_str().expect("UTF-8 temp path")]);
    let pod = CrioPod::new();
    let c = CrioLikeContainer::start_with(
        "adapter",
        CrioOpts {
            pod: Some(pod.clone()),
            ..CrioOpts::default()
        },
        &["/bin/sleep", "600"],
    );
    let started = Instant::now();
    let sh = run_sh("sleep 0.3; exit 3");
    let wall = started.elapsed();
    std::thread::sleep(Duration::from_millis(200));
    let run = t.stop();

    let out = Command::new(bin())
        .arg("replay")
        .arg(&trace)
        .args(["--export", "chrome-trace"])
        .output()
        .expect("run podtrace replay --export");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("the export is JSON");
    let events = check_trace_event_format(&json);

    let process_names: Vec<(u64, String)> = events
        .iter()
        .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
        .map(|e| {
            (
                e["pid"].as_u64().unwrap_or(0),
                e["args"]["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let host = process_names
        .iter()
        .find(|(_, n)| n == "host")
        .map(|(p, _)| *p)
        .unwrap_or_else(|| panic!("no host track: {process_names:?}"));
    let want = format!(
        "pod {}/{} \u{2014} adapter ({})",
        pod.namespace,
        pod.name,
        &c.id[..12]
    );
    let track = process_names
        .iter()
        .find(|(_, n)| *n == want)
        .map(|(p, _)| *p)
        .unwrap_or_else(|| panic!("no track named {want:?}: {process_names:?}"));

    let slice_of = |pid: u32| -> &Value {
        events
            .iter()
            .find(|e| e["ph"] == "X" && e["args"]["pid"] == pid)
            .unwrap_or_else(|| panic!("no slice for pid {pid}"))
    };
    let s = slice_of(sh);
    assert_eq!(s["pid"], host, "{s}");
    assert_eq!(s["tid"], sh);
    assert_eq!(s["args"]["exit_code"], 3, "{s}");
    let dur_us = s["dur"].as_f64().expect("dur");
    assert!(
        dur_us >= 300_000.0 && dur_us <= wall.as_micros() as f64 + 1000.0,
        "sh ran {dur_us} us; sleep 0.3 and {wall:?} measured around it"
    );
    let init = slice_of(c.pid);
    assert_eq!(init["pid"], track, "the init is on its container's track");
    assert_eq!(init["args"]["nspid"], 1);
    assert_eq!(init["name"], "sleep");
    let conmon = slice_of(c.conmon_pid);
    assert_eq!(conmon["pid"], track, "conmon is on its container's track");
    // Slices agree with the NDJSON the run printed: the exit line of sh has the same code.
    assert_eq!(run.one("exit", sh)["exit_code"], 3);
}

/// podtrace copied where an unprivileged user can execute it (the checkout may not be).
fn binary_for_everyone() -> (tempfile::TempDir, std::path::PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("podtrace-unpriv")
        .tempdir_in("/tmp")
        .expect("temp dir in /tmp");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the temp dir");
    let path = dir.path().join("podtrace");
    std::fs::copy(bin(), &path).expect("copy the podtrace binary");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the binary");
    (dir, path)
}

fn run_with_setpriv(setpriv_args: &[&str], podtrace: &std::path::Path) -> (Option<i32>, String) {
    let out = Command::new("setpriv")
        .args(setpriv_args)
        .arg(podtrace)
        .args(["run", "--duration", "1"])
        .output()
        .expect("run setpriv (util-linux)");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_privileges_exit_2_naming_the_capability() {
    let (_dir, podtrace) = binary_for_everyone();

    // An unprivileged user: nothing to load eBPF with.
    let (code, err) = run_with_setpriv(
        &["--reuid=65534", "--regid=65534", "--clear-groups"],
        &podtrace,
    );
    assert_eq!(code, Some(2), "exit status as nobody: {err}");
    assert!(err.contains("lacks CAP_BPF and CAP_PERFMON"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.lines().count(), 1, "one error line: {err}");

    // Root without CAP_BPF (and without CAP_SYS_ADMIN, which would stand in for it).
    let (code, err) = run_with_setpriv(
        &["--inh-caps=-all", "--bounding-set=-bpf,-sys_admin"],
        &podtrace,
    );
    assert_eq!(code, Some(2), "exit status without CAP_BPF: {err}");
    assert!(err.contains("lacks CAP_BPF ("), "{err}");

    // Root without CAP_PERFMON: the maps are created, the programs are refused.
    let (code, err) = run_with_setpriv(
        &["--inh-caps=-all", "--bounding-set=-perfmon,-sys_admin"],
        &podtrace,
    );
    assert_eq!(code, Some(2), "exit status without CAP_PERFMON: {err}");
    assert!(err.contains("lacks CAP_PERFMON ("), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Root with only what the DaemonSet grants (CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE).
const DAEMONSET_CAPS: [&str; 2] = [
    "--inh-caps=-all",
    "--bounding-set=-all,+bpf,+perfmon,+sys_ptrace",
];

/// `run --summary F` under the DaemonSet's capabilities: `--summary` alone needs nothing more
/// than tracing (BPF_ENABLE_STATS needs CAP_SYS_ADMIN, so it is only asked for with
/// `--kernel-stats`), and the summary says why the per-program figures are missing.
#[test]
fn summary_works_with_the_daemonset_capabilities_and_kernel_stats_are_asked_for() {
    let (_bin_dir, podtrace) = binary_for_everyone();
    let dir = tempfile::tempdir().expect("tmp");
    let summary_path = dir.path().join("summary.json");
    let run = |setpriv: &[&str], extra: &[&str]| {
        let mut cmd = Command::new("setpriv");
        cmd.args(setpriv)
            .arg(&podtrace)
            .args([
                "run",
                "--duration",
                "1",
                "--no-cri",
                "--output",
                "/dev/null",
                "--summary",
            ])
            .arg(&summary_path)
            .args(extra);
        let out = cmd.output().expect("run setpriv (util-linux)");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let summary = || -> Value {
        serde_json::from_str(&std::fs::read_to_string(&summary_path).expect("summary written"))
            .expect("summary is JSON")
    };

    let (code, err) = run(&DAEMONSET_CAPS, &[]);
    assert_eq!(
        code,
        Some(0),
        "--summary with the DaemonSet's capabilities: {err}"
    );
    let s = summary();
    assert!(s["events"].is_u64(), "{s}");
    assert!(
        s["kernel"].is_null(),
        "no run-time figures were asked for: {s}"
    );
    assert!(
        s["kernel_missing"]
            .as_str()
            .is_some_and(|why| why.contains("--kernel-stats")),
        "says why they are missing: {s}"
    );

    // Asked for without CAP_SYS_ADMIN: exit 2, saying what is missing.
    let (code, err) = run(&DAEMONSET_CAPS, &["--kernel-stats"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("--kernel-stats") && err.contains("CAP_SYS_ADMIN"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");

    // Asked for as root: the figures are there.
    let (code, err) = run(&[], &["--kernel-stats"]);
    assert_eq!(code, Some(0), "{err}");
    let s = summary();
    let progs = s["kernel"].as_object().expect("kernel figures");
    assert!(!progs.is_empty(), "{s}");
    assert!(
        progs
            .values()
            .any(|p| p["run_cnt"].as_u64().unwrap_or(0) > 0),
        "the programs ran: {s}"
    );
    assert!(s["kernel_missing"].is_null(), "{s}");
}

/// A kernel without BTF (no CONFIG_DEBUG_INFO_BTF): in a private mount namespace an empty file
/// hides /sys/kernel/btf/vmlinux from podtrace, which exits 2 naming the file, without a panic.
#[test]
fn a_kernel_without_btf_exits_2_naming_what_is_missing() {
    podtrace_tests::lab::require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let empty = dir.path().join("no-btf");
    std::fs::write(&empty, b"").expect("empty file");
    let vmlinux = "/sys/kernel/btf/vmlinux";
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--"])
        .arg("sh")
        .arg("-c")
        .arg(r#"mount --bind "$1" "$2" && exec "$3" run --duration 1 --output /dev/null"#)
        .arg("sh")
        .arg(&empty)
        .arg(vmlinux)
        .arg(bin())
        .output()
        .expect("unshare");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(vmlinux), "the error names the BTF file: {err}");
    assert!(
        err.contains("CONFIG_DEBUG_INFO_BTF"),
        "says what the kernel lacks: {err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    // The host's BTF is untouched outside that namespace.
    assert!(std::fs::metadata(vmlinux).expect("vmlinux").len() > 0);
}

/// `podtrace tree` (the live picture from /proc) redacts argv with the default rules too.
#[test]
fn tree_redacts_argv_like_run() {
    let mut child = std::process::Command::new("bash")
        .args(["-c", "sleep 5; true", "tree-redact", "--password=hunter2"])
        .spawn()
        .expect("bash");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let view = podtrace_tests::tracer::tree_json(&["--all"]);
    let _ = child.kill();
    let _ = child.wait();
    let text = view.to_string();
    assert!(text.contains("tree-redact"), "the process is in the tree");
    assert!(!text.contains("hunter2"), "the secret is not");
    assert!(text.contains("--password=<redacted>"));
}

/// Root writes where it is told: a symlink planted at `--output`, `--record` or `--summary`
/// (in a directory others can write, say) must not make podtrace write through it. Each is
/// refused with exit 2 naming the path, the file it points at is untouched; files podtrace
/// creates are 0600 (argv may hold secrets), and an existing file it truncates becomes 0600.
#[test]
fn files_podtrace_writes_refuse_a_symlink_and_are_0600() {
    use std::os::unix::fs::PermissionsExt;
    podtrace_tests::lab::require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let victim = dir.path().join("victim");
    std::fs::write(&victim, "precious\n").expect("victim file");
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&victim, &link).expect("plant the symlink");
    let out_file = dir.path().join("out.ndjson");
    for flag in ["--output", "--record", "--summary"] {
        let mut cmd = Command::new(bin());
        cmd.args(["run", "--duration", "1", "--no-cri"]);
        if flag != "--output" {
            cmd.arg("--output").arg(&out_file);
        }
        let out = cmd.arg(flag).arg(&link).output().expect("run podtrace");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{flag} through a symlink: {err}"
        );
        assert!(
            err.contains(&link.display().to_string()) && err.contains("symbolic link"),
            "{flag}: the error names the path and why: {err}"
        );
        assert!(!err.contains("panicked"), "{err}");
        assert_eq!(
            std::fs::read_to_string(&victim).expect("victim"),
            "precious\n",
            "{flag}: the file behind the link is untouched"
        );
    }
    // Created 0600 whatever the umask; an existing 0644 file truncated becomes 0600.
    let (out, rec, sum) = (
        dir.path().join("new.ndjson"),
        dir.path().join("new.trace"),
        dir.path().join("summary.json"),
    );
    std::fs::write(&sum, "old").expect("an old summary");
    std::fs::set_permissions(&sum, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let status = Command::new(bin())
        .args(["run", "--duration", "1", "--no-cri", "--output"])
        .arg(&out)
        .arg("--record")
        .arg(&rec)
        .arg("--summary")
        .arg(&sum)
        .status()
        .expect("run podtrace");
    assert!(status.success());
    for f in [&out, &rec, &sum] {
        let mode = std::fs::metadata(f).expect("written").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600, "{}: {mode:o}", f.display());
    }
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&sum).expect("summary")).expect("JSON");
    assert!(summary["events"].is_u64(), "{summary}");
}

/// SIGTERM (or SIGINT) while podtrace is still starting (loading its programs, reading /proc)
/// is a clean stop: exit 0 with its summary, never death by the signal (the handlers were
/// installed only after `attached` before).
#[test]
fn a_signal_during_start_up_is_a_clean_stop() {
    for (sig, name) in [(libc::SIGTERM, "SIGTERM"), (libc::SIGINT, "SIGINT")] {
        let dir = tempfile::tempdir().expect("tmp");
        let summary = dir.path().join("summary.json");
        let child = Command::new(bin())
            .args(["run", "--no-cri", "--output", "/dev/null", "--summary"])
            .arg(&summary)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start podtrace");
        // Within start-up: loading takes longer than this here.
        std::thread::sleep(Duration::from_millis(60));
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, sig) };
        let out = child.wait_with_output().expect("wait podtrace");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{name} during start-up: {} (stderr: {stderr})",
            out.status
        );
        let s: Value = serde_json::from_str(
            &std::fs::read_to_string(&summary).expect("the summary is written"),
        )
        .expect("summary JSON");
        assert!(s["events"].is_u64(), "{s}");
    }
}
