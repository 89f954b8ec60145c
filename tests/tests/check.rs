//! Issue 16: `podtrace check` (the preflight), the refusal outside the host pid namespace, and
//! `podtrace health` against a running tracer's /healthz.
//!
//! Ground truth: the kernel's own list of BPF programs and maps (aya's `loaded_programs` /
//! `loaded_maps`, i.e. BPF_PROG_GET_NEXT_ID) for "nothing left loaded"; the capabilities a run
//! is given (`setpriv`, `podman --cap-add` with exactly the DaemonSet's set read from
//! deploy/kubernetes/daemonset.yaml); the pid namespace it is put in (`unshare --pid`, podman
//! without `--pid=host`); and a tracer this test starts, stops (SIGSTOP) and resumes.
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use podtrace_tests::lab::{self, cmd};
use podtrace_tests::tracer::{bin, run_for, Finished, Tracer};
use serde_json::Value;

const ITEMS: [&str; 8] = [
    "kernel",
    "btf",
    "attach",
    "capabilities",
    "memlock",
    "cgroups",
    "cri",
    "pid-namespace",
];
const LIMIT: Duration = Duration::from_secs(90);

fn podtrace(args: &[&str]) -> Finished {
    run_for(&bin(), args, LIMIT)
}

fn report(f: &Finished) -> Value {
    serde_json::from_str(&f.stdout)
        .unwrap_or_else(|e| panic!("check --json did not print JSON ({e}): {}", f.describe()))
}

/// The line of `item` in a JSON report.
fn line<'a>(r: &'a Value, item: &str) -> &'a Value {
    r["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .find(|l| l["item"] == item)
        .unwrap_or_else(|| panic!("no {item} line in {r:#}"))
}

/// Every item has exactly one line, in order, each with a verdict and a text.
fn assert_every_item(r: &Value, what: &str) {
    let items: Vec<&str> = r["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l["item"].as_str().expect("item"))
        .collect();
    assert_eq!(items, ITEMS, "{what}: {r:#}");
    for l in r["lines"].as_array().expect("lines") {
        assert!(
            ["ok", "warn", "fail"].contains(&l["verdict"].as_str().unwrap_or_default()),
            "{what}: {l}"
        );
        assert!(
            !l["what"].as_str().unwrap_or_default().is_empty(),
            "{what}: {l}"
        );
    }
}

/// The text output: one line per item (verdict, item) and the summary.
fn assert_text(f: &Finished, overall: &str) {
    let lines: Vec<&str> = f.stdout.lines().collect();
    assert_eq!(lines.len(), ITEMS.len() + 1, "{}", f.describe());
    for (l, item) in lines.iter().zip(ITEMS) {
        let mut words = l.split_whitespace();
        let verdict = words.next().unwrap_or_default();
        assert!(
            ["ok", "warn", "fail"].contains(&verdict),
            "`{l}`\n{}",
            f.describe()
        );
        assert_eq!(words.next(), Some(item), "`{l}`\n{}", f.describe());
    }
    let summary = lines[ITEMS.len()];
    assert!(
        summary.starts_with(&format!("podtrace check: {overall} (")),
        "`{summary}`\n{}",
        f.describe()
    );
}

fn kernel_program_ids() -> BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .map(|p| p.id())
        .collect()
}

fn kernel_map_ids() -> BTreeSet<u32> {
    aya::maps::loaded_maps()
        .filter_map(Result::ok)
        .map(|m| m.id())
        .collect()
}

fn bpffs() -> Vec<String> {
    match std::fs::read_dir("/sys/fs/bpf") {
        Ok(d) => {
            let mut v: Vec<String> = d
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            v.sort();
            v
        }
        Err(e) => vec![format!("unreadable: {e}")],
    }
}

/// As root on this host: exit 0, a line per item, the path `run` takes, and afterwards none
/// of the programs and maps it loaded are in the kernel.
#[test]
fn check_as_root_passes_and_leaves_nothing_loaded() {
    lab::require_root();
    let bpffs_before = bpffs();
    let newest_before = kernel_program_ids().last().copied().unwrap_or(0);
    let f = podtrace(&["check", "--json"]);
    assert_eq!(f.status.code(), Some(0), "{}", f.describe());
    let r = report(&f);
    assert_every_item(&r, "root");
    assert_ne!(r["verdict"], "fail", "{r:#}");
    for item in ITEMS.iter().filter(|i| **i != "cri") {
        assert_eq!(
            line(&r, item)["verdict"],
            "ok",
            "as root on this host every line but the CRI's must be ok: {r:#}"
        );
    }
    let load = &r["facts"]["load"];
    assert_eq!(load["state"], "loaded", "{r:#}");
    assert_eq!(
        load["path"]["attach"], "tp-btf",
        "this kernel has tp_btf: {r:#}"
    );
    assert_eq!(load["path"]["transport"], "ring-buffer", "{r:#}");
    assert_eq!(load["fds_left"], 0, "{r:#}");
    let programs: Vec<u32> = load["programs"]
        .as_array()
        .expect("programs")
        .iter()
        .map(|p| p["id"].as_u64().expect("id") as u32)
        .collect();
    let maps: Vec<u32> = load["maps"]
        .as_array()
        .expect("as root the kernel lists each program's maps")
        .iter()
        .map(|m| m.as_u64().expect("id") as u32)
        .collect();
    assert_eq!(programs.len(), 4, "four programs attached: {load:#}");
    assert!(!maps.is_empty(), "{load:#}");
    assert!(
        programs.iter().all(|&id| id > newest_before),
        "the ids check reports were allocated during the check (newest before: {newest_before}): {programs:?}"
    );
    // Freed once their last file descriptor closed (RCU: not always at once).
    let mut left = (Vec::new(), Vec::new());
    let gone = cmd::poll_until(Duration::from_secs(5), || {
        let (p, m) = (kernel_program_ids(), kernel_map_ids());
        left = (
            programs
                .iter()
                .filter(|id| p.contains(id))
                .copied()
                .collect(),
            maps.iter().filter(|id| m.contains(id)).copied().collect(),
        );
        left.0.is_empty() && left.1.is_empty()
    });
    assert!(
        gone,
        "after `podtrace check` the kernel still has its programs {:?} and maps {:?}",
        left.0, left.1
    );
    assert_eq!(bpffs(), bpffs_before, "nothing pinned in /sys/fs/bpf");

    let text = podtrace(&["check"]);
    assert_eq!(text.status.code(), Some(0), "{}", text.describe());
    assert_text(&text, r["verdict"].as_str().unwrap_or_default());
    assert!(
        text.stdout.contains("tp-btf + ring-buffer"),
        "{}",
        text.describe()
    );
}

/// Forced paths are tried as asked (as `run --attach/--transport` would).
#[test]
fn check_tries_the_forced_path() {
    lab::require_root();
    let f = podtrace(&[
        "check",
        "--json",
        "--attach",
        "raw-tp",
        "--transport",
        "perf-buffer",
    ]);
    assert_eq!(f.status.code(), Some(0), "{}", f.describe());
    let r = report(&f);
    let load = &r["facts"]["load"];
    assert_eq!(load["path"]["attach"], "raw-tp", "{r:#}");
    assert_eq!(load["path"]["transport"], "perf-buffer", "{r:#}");
    let attach = line(&r, "attach")["what"].as_str().unwrap_or_default();
    assert!(
        attach.contains("forced by --attach and --transport"),
        "{attach}"
    );
    let bad = podtrace(&["check", "--attach", "kprobe"]);
    assert_eq!(bad.status.code(), Some(2), "{}", bad.describe());
    let bad = podtrace(&["check", "--cri-endpoint", "tcp://127.0.0.1:1"]);
    assert_eq!(bad.status.code(), Some(2), "{}", bad.describe());
    assert!(bad.stderr.contains("--cri-endpoint"), "{}", bad.describe());
}

/// Without CAP_BPF and CAP_PERFMON (and CAP_SYS_ADMIN, which stands in for both): exit 1,
/// the capabilities line fails naming them, the attach line fails with the loader's reason.
#[test]
fn check_without_cap_bpf_fails_naming_it() {
    lab::require_root();
    let setpriv = cmd::which("setpriv");
    let f = run_for(
        &setpriv,
        &[
            "--inh-caps=-all",
            "--bounding-set=-bpf,-perfmon,-sys_admin",
            "--",
            bin().to_str().expect("utf-8 path"),
            "check",
            "--json",
        ],
        LIMIT,
    );
    assert_eq!(f.status.code(), Some(1), "{}", f.describe());
    let r = report(&f);
    assert_every_item(&r, "without CAP_BPF");
    assert_eq!(r["verdict"], "fail");
    let caps = line(&r, "capabilities");
    assert_eq!(caps["verdict"], "fail", "{caps}");
    let what = caps["what"].as_str().unwrap_or_default();
    assert!(what.contains("lacks CAP_BPF and CAP_PERFMON"), "{what}");
    assert!(
        caps["fix"]
            .as_str()
            .unwrap_or_default()
            .contains("CAP_BPF,CAP_PERFMON"),
        "{caps}"
    );
    let attach = line(&r, "attach");
    assert_eq!(attach["verdict"], "fail", "{attach}");
    assert!(
        attach["what"]
            .as_str()
            .unwrap_or_default()
            .contains("CAP_BPF"),
        "{attach}"
    );
    assert_eq!(line(&r, "pid-namespace")["verdict"], "ok");
}

/// In a pid namespace of its own: `check` exits 1 with the pid-namespace line failing and
/// naming hostPID / --pid=host; `run`, `record` and the live `tree` refuse with exit 2 and
/// the same words; `replay` and `tree --from` (no /proc) still work there.
#[test]
fn outside_the_host_pid_namespace() {
    lab::require_root();
    // A trace to replay, recorded on the host.
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = dir.path().join("t.ndjson");
    let trace_s = trace.to_str().expect("utf-8 path");
    let rec = podtrace(&["record", "-o", trace_s, "--duration", "1", "--no-cri"]);
    assert_eq!(rec.status.code(), Some(0), "{}", rec.describe());

    let unshare = cmd::which("unshare");
    let bin = bin();
    let bin_s = bin.to_str().expect("utf-8 path");
    let inside = |args: &[&str]| -> Finished {
        let mut a = vec!["--pid", "--fork", "--mount-proc", "--", bin_s];
        a.extend_from_slice(args);
        run_for(&unshare, &a, LIMIT)
    };
    let names_the_fix = |text: &str| text.contains("hostPID: true") && text.contains("--pid=host");

    let f = inside(&["check", "--json"]);
    assert_eq!(f.status.code(), Some(1), "{}", f.describe());
    let r = report(&f);
    assert_every_item(&r, "private pid namespace");
    let pid = line(&r, "pid-namespace");
    assert_eq!(pid["verdict"], "fail", "{pid}");
    assert!(
        names_the_fix(pid["what"].as_str().unwrap_or_default()),
        "{pid}"
    );
    let text = inside(&["check"]);
    assert_eq!(text.status.code(), Some(1), "{}", text.describe());
    assert_text(&text, "fail");
    assert!(
        text.stdout
            .lines()
            .any(|l| l.starts_with("fail  pid-namespace") && names_the_fix(l)),
        "{}",
        text.describe()
    );

    for args in [
        &["run", "--duration", "2"][..],
        &["record", "-o", "/dev/null", "--duration", "2"],
        &["tree"],
    ] {
        let f = inside(args);
        assert_eq!(f.status.code(), Some(2), "{}", f.describe());
        assert!(names_the_fix(&f.stderr), "{}", f.describe());
        assert!(!f.stderr.contains("panicked"), "{}", f.describe());
    }
    for args in [&["replay", trace_s][..], &["tree", "--from", trace_s]] {
        let f = inside(args);
        assert_eq!(f.status.code(), Some(0), "{}", f.describe());
    }
}

/// The image (`cargo xtask image`), as the DaemonSet runs it.
mod image {
    use super::*;

    fn image() -> String {
        std::env::var("PODTRACE_IMAGE").unwrap_or_else(|_| "localhost/podtrace:dev".to_string())
    }

    /// The capabilities the DaemonSet's podtrace container adds, read from the manifest.
    fn daemonset_capabilities() -> Vec<String> {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes/daemonset.yaml");
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        let container = text
            .split("      containers:\n")
            .nth(1)
            .expect("a containers: list");
        let add = container
            .split("              add:\n")
            .nth(1)
            .expect("capabilities.add in the podtrace container");
        let caps: Vec<String> = add
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with('#'))
            .take_while(|l| l.starts_with("- "))
            .map(|l| format!("CAP_{}", l.trim_start_matches("- ").trim()))
            .collect();
        assert!(
            caps.iter().any(|c| c == "CAP_BPF"),
            "{}: the podtrace container's capabilities were not found: {caps:?}",
            path.display()
        );
        caps
    }

    fn check_in_image(caps: &[String], host_pid: bool) -> Finished {
        lab::require_root();
        let image = image();
        let exists = cmd::run("podman", &["image", "exists", &image]);
        assert!(
            exists.status.success(),
            "image {image} does not exist: build it with `cargo xtask image`"
        );
        let cgroup2 = lab::unified_root().display().to_string();
        let mut args: Vec<String> = [
            "run",
            "--rm",
            "--network=none",
            "--read-only",
            "--cap-drop=all",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        if host_pid {
            args.push("--pid=host".into());
        }
        args.extend(caps.iter().map(|c| format!("--cap-add={c}")));
        args.extend([
            "--security-opt".into(),
            "seccomp=unconfined".into(),
            "--volume".into(),
            format!("{cgroup2}:{cgroup2}:ro"),
            "--volume".into(),
            "/sys/kernel/btf:/sys/kernel/btf:ro".into(),
            image,
            "check".into(),
            "--json".into(),
        ]);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        run_for(&cmd::which("podman"), &refs, LIMIT)
    }

    #[test]
    fn check_with_the_daemonsets_capabilities_passes() {
        let caps = daemonset_capabilities();
        let f = check_in_image(&caps, true);
        assert_eq!(f.status.code(), Some(0), "caps {caps:?}: {}", f.describe());
        let r = report(&f);
        assert_every_item(&r, "DaemonSet capabilities");
        for item in [
            "kernel",
            "btf",
            "attach",
            "capabilities",
            "memlock",
            "pid-namespace",
        ] {
            assert_eq!(line(&r, item)["verdict"], "ok", "{item}: {r:#}");
        }
        // No CRI socket is mounted into this container: a warning, not a failure.
        assert_eq!(line(&r, "cri")["verdict"], "warn", "{r:#}");
        assert_eq!(r["facts"]["load"]["state"], "loaded", "{r:#}");
        // What the container got: every capability asked for that this host can grant (a
        // runtime cannot give what is outside its own bounding set; this machine's root
        // lacks CAP_SYS_RESOURCE). None of the verdicts gets worse with more capabilities,
        // so passing with what was granted holds for the whole set.
        let granted = r["facts"]["capabilities"]["effective"]
            .as_u64()
            .expect("CapEff read in the container");
        let bounding = host_bounding_set();
        let mut not_grantable = Vec::new();
        for c in &caps {
            let bit = cap_number(c);
            if bounding & (1 << bit) == 0 {
                not_grantable.push(c.clone());
                continue;
            }
            assert!(
                granted & (1 << bit) != 0,
                "{c} was asked for and the host has it, but the container lacks it \
                 (CapEff {granted:016x})"
            );
        }
        assert!(
            granted & !caps.iter().fold(0u64, |m, c| m | (1 << cap_number(c))) == 0,
            "the container holds capabilities beyond the DaemonSet's (CapEff {granted:016x})"
        );
        eprintln!(
            "podtrace check in the image with {caps:?} (not grantable on this host: \
             {not_grantable:?}):\n{}",
            f.stdout
        );
    }

    /// CapBnd of this process: what podman (run by it) can grant at most.
    fn host_bounding_set() -> u64 {
        let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
        let hex = status
            .lines()
            .find_map(|l| l.strip_prefix("CapBnd:"))
            .expect("CapBnd")
            .trim();
        u64::from_str_radix(hex, 16).expect("CapBnd is hex")
    }

    fn cap_number(name: &str) -> u32 {
        match name {
            "CAP_SYS_PTRACE" => 19,
            "CAP_SYS_ADMIN" => 21,
            "CAP_SYS_RESOURCE" => 24,
            "CAP_PERFMON" => 38,
            "CAP_BPF" => 39,
            other => panic!("the DaemonSet adds {other}, which this test does not know"),
        }
    }

    #[test]
    fn check_in_the_image_without_host_pid_fails_naming_it() {
        let f = check_in_image(&daemonset_capabilities(), false);
        assert_eq!(f.status.code(), Some(1), "{}", f.describe());
        let r = report(&f);
        let pid = line(&r, "pid-namespace");
        assert_eq!(pid["verdict"], "fail", "{pid}");
        let what = pid["what"].as_str().unwrap_or_default();
        assert!(
            what.contains("hostPID: true") && what.contains("--pid=host"),
            "{what}"
        );
    }
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `podtrace health` against a running tracer: 0 while its loop runs, 1 within its timeout
/// once the tracer is stopped (SIGSTOP: nothing answers), 0 again when resumed; 1 when
/// nothing listens.
#[test]
fn health_follows_the_event_loop() {
    lab::require_root();
    let addr = format!("127.0.0.1:{}", free_port());
    let t = Tracer::start(&["--metrics-addr", &addr, "--no-cri"]);
    let healthy = || podtrace(&["health", "--addr", &addr, "--timeout", "2s"]);
    let f = healthy();
    assert_eq!(f.status.code(), Some(0), "{}", f.describe());
    assert!(
        f.stdout.starts_with("ok: the event loop ticked"),
        "{}",
        f.describe()
    );

    t.pause();
    let f = podtrace(&["health", "--addr", &addr, "--timeout", "1500ms"]);
    t.resume();
    assert_eq!(f.status.code(), Some(1), "{}", f.describe());
    assert!(
        f.took < Duration::from_millis(1500 + 1000),
        "health must give up within its timeout: {}",
        f.describe()
    );
    assert!(f.stderr.contains("no answer"), "{}", f.describe());

    let again = cmd::poll_until(Duration::from_secs(10), || {
        healthy().status.code() == Some(0)
    });
    assert!(
        again,
        "healthy again after SIGCONT: {}",
        healthy().describe()
    );
    let run = t.stop();
    assert!(!run.events.is_empty() || run.summary.is_some());

    let f = podtrace(&["health", "--addr", &addr, "--timeout", "1s"]);
    assert_eq!(f.status.code(), Some(1), "{}", f.describe());
    assert!(f.stderr.contains("cannot connect"), "{}", f.describe());
    // Bad input stays exit 2.
    let f = podtrace(&["health", "--addr", "not-an-address"]);
    assert_eq!(f.status.code(), Some(2), "{}", f.describe());
}
