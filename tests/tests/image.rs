//! Issue 6: the container image (`cargo xtask image`, localhost/podtrace:dev) as an operator runs
//! it: `podman run --pid=host --read-only`, the host's cgroup2 tree and BTF mounted read-only,
//! `--cap-drop=all` plus only the capabilities the DaemonSet grants.
//!
//! Ground truth: the pid and argv of processes this test starts on the host, and `podman
//! inspect` for containers (lab::PodmanContainer). The capability set of
//! deploy/kubernetes/daemonset.yaml is established here by dropping each capability in turn:
//! - CAP_BPF and CAP_PERFMON: without either the programs do not load (exit 2, named);
//! - CAP_SYS_PTRACE: without it /proc/PID/ns/pid of processes holding more capabilities than
//!   podtrace cannot be read, so the pid namespace of a container started before podtrace is
//!   unknown (a process that enters only that namespace is not known to be in the container);
//! - CAP_SYS_RESOURCE and CAP_DAC_READ_SEARCH: not needed (the working set has neither).
//!
//! The image is built once by `cargo xtask image` and kept; everything else the tests create
//! (tracer and lab containers) is removed, also on panic.
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use podtrace_tests::lab::{self, cmd, PodmanContainer};
use serde_json::{json, Value};

/// The least set on this kernel (5.11 and later), podman's spelling: what
/// deploy/kubernetes/daemonset.yaml adds but SYS_RESOURCE, which only kernels before 5.11 need
/// (RLIMIT_MEMLOCK); tests/tests/check.rs runs the manifest's own set.
const LEAST: &[&str] = &["CAP_BPF", "CAP_PERFMON", "CAP_SYS_PTRACE"];
const NODE: &str = "podtrace-image-test-node";
const START_TIMEOUT: Duration = Duration::from_secs(30);
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);

/// $PODTRACE_IMAGE or the tag `cargo xtask image` builds.
fn image() -> String {
    std::env::var("PODTRACE_IMAGE").unwrap_or_else(|_| "localhost/podtrace:dev".to_string())
}

fn require_image() {
    lab::require_root();
    let image = image();
    let out = cmd::run("podman", &["image", "exists", &image]);
    assert!(
        out.status.success(),
        "image {image} does not exist: build it with `cargo xtask image`"
    );
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Seccomp {
    /// `--security-opt seccomp=unconfined`, as the DaemonSet's `seccompProfile: Unconfined`.
    Unconfined,
    /// podman's default profile (containers/common, as CRI-O uses).
    RuntimeDefault,
}

/// One `podman run --rm ... IMAGE <args>`; stdout and stderr are collected by threads.
struct ImageRun {
    name: String,
    what: String,
    child: Option<Child>,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

impl ImageRun {
    fn start(caps: &[&str], seccomp: Seccomp, args: &[&str]) -> Self {
        let name = cmd::unique_name("podtrace-image");
        let cgroup2 = lab::unified_root().display().to_string();
        let mut argv: Vec<String> = [
            "run",
            "--rm",
            "--name",
            &name,
            "--pid=host",
            "--network=none",
            "--read-only",
            "--cap-drop=all",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        argv.extend(caps.iter().map(|c| format!("--cap-add={c}")));
        if seccomp == Seccomp::Unconfined {
            argv.extend(["--security-opt".into(), "seccomp=unconfined".into()]);
        }
        argv.extend([
            "--volume".into(),
            format!("{cgroup2}:{cgroup2}:ro"),
            "--volume".into(),
            "/sys/kernel/btf:/sys/kernel/btf:ro".into(),
            "--env".into(),
            format!("NODE_NAME={NODE}"),
            image(),
        ]);
        argv.extend(args.iter().map(|s| s.to_string()));
        let what = format!("podman {}", argv.join(" "));
        let mut child = Command::new("podman")
            .args(&argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let out_pipe = child.stdout.take().expect("stdout is piped");
        let err_pipe = child.stderr.take().expect("stderr is piped");
        let lines = Arc::clone(&stdout);
        let text = Arc::clone(&stderr);
        let readers = vec![
            std::thread::spawn(move || {
                for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
                    lines.lock().expect("stdout lock").push(line);
                }
            }),
            std::thread::spawn(move || {
                let mut pipe = err_pipe;
                let mut chunk = [0u8; 4096];
                while let Ok(n) = pipe.read(&mut chunk) {
                    if n == 0 {
                        break;
                    }
                    let part = String::from_utf8_lossy(&chunk[..n]);
                    text.lock().expect("stderr lock").push_str(&part);
                }
            }),
        ];
        Self {
            name,
            what,
            child: Some(child),
            stdout,
            stderr,
            readers,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    /// Every line printed so far, parsed (each must be JSON).
    fn events(&self) -> Vec<Value> {
        let lines = self.stdout.lock().expect("stdout lock").clone();
        lines
            .iter()
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("{}: a line is not JSON ({e}): {l}", self.name))
            })
            .collect()
    }

    fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().expect("wait for podman run"))
    }

    fn find(&self, pred: &dyn Fn(&Value) -> bool) -> Option<Value> {
        self.events().into_iter().find(|e| pred(e))
    }

    /// The first event matching `pred`, waiting up to [`EVENT_TIMEOUT`].
    fn wait_event(&mut self, what: &str, pred: &dyn Fn(&Value) -> bool) -> Value {
        let end = Instant::now() + EVENT_TIMEOUT;
        loop {
            if let Some(e) = self.find(pred) {
                return e;
            }
            if let Some(status) = self.exited() {
                panic!(
                    "{}: exited ({status}) before printing {what}\nstderr:\n{}",
                    self.what,
                    self.stderr()
                );
            }
            if Instant::now() >= end {
                let events = self.events();
                let tail: Vec<String> = events.iter().rev().take(5).map(Value::to_string).collect();
                panic!(
                    "{}: no {what} within {EVENT_TIMEOUT:?} ({} events; last: {tail:#?})\nstderr:\n{}",
                    self.name,
                    events.len(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Streams: a process started on the host after this call shows up as an exec event.
    fn wait_streaming(&mut self) {
        let end = Instant::now() + START_TIMEOUT;
        let tag = format!("podtrace-image-ready-{}", cmd::random_hex(4));
        loop {
            let status = Command::new("/bin/true")
                .arg(&tag)
                .status()
                .expect("run /bin/true");
            assert!(status.success(), "/bin/true failed: {status}");
            let seen = cmd::poll_until(Duration::from_millis(300), || {
                self.find(&|e| e["type"] == "exec" && e["argv"][1] == tag.as_str())
                    .is_some()
            });
            if seen {
                return;
            }
            if let Some(status) = self.exited() {
                panic!(
                    "{}: exited ({status}) before streaming\nstderr:\n{}",
                    self.what,
                    self.stderr()
                );
            }
            assert!(
                Instant::now() < end,
                "{}: no exec event of a host process within {START_TIMEOUT:?}\nstderr:\n{}",
                self.what,
                self.stderr()
            );
        }
    }

    /// Waits for the container to end by itself (for runs that must fail).
    fn wait_exit(mut self) -> (ExitStatus, String) {
        let end = Instant::now() + START_TIMEOUT;
        let status = loop {
            if let Some(s) = self.exited() {
                break s;
            }
            assert!(
                Instant::now() < end,
                "{}: still running after {START_TIMEOUT:?}\nstderr:\n{}",
                self.what,
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.child = None;
        self.join_readers();
        (status, self.stderr())
    }

    /// SIGINT through podman, then a clean exit (status 0) is required.
    fn stop(mut self) -> (Vec<Value>, String) {
        // Let the kernel events of the test's last actions reach the ring buffer.
        std::thread::sleep(Duration::from_millis(300));
        let out = cmd::run("podman", &["kill", "--signal", "INT", &self.name]);
        assert!(
            out.status.success() || self.exited().is_some(),
            "podman kill --signal INT {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let (status, stderr) = {
            let end = Instant::now() + START_TIMEOUT;
            let status = loop {
                if let Some(s) = self.exited() {
                    break s;
                }
                assert!(
                    Instant::now() < end,
                    "{}: did not stop within {START_TIMEOUT:?} of SIGINT",
                    self.name
                );
                std::thread::sleep(Duration::from_millis(20));
            };
            self.child = None;
            self.join_readers();
            (status, self.stderr())
        };
        assert!(
            status.success(),
            "{}: exited with {status} after SIGINT\nstderr:\n{stderr}",
            self.what
        );
        assert!(
            !stderr.contains("panicked"),
            "{}: panicked\n{stderr}",
            self.name
        );
        (self.events(), stderr)
    }

    fn join_readers(&mut self) {
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
    }
}

impl Drop for ImageRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = cmd::run("podman", &["rm", "--force", "--time", "0", &self.name]);
            let _ = child.kill();
            let _ = child.wait();
        }
        self.join_readers();
    }
}

fn is_exec_of(e: &Value, pid: u32) -> bool {
    e["type"] == "exec" && e["pid"] == pid
}

#[test]
fn image_streams_host_execs_and_attributes_podman_containers() {
    require_image();
    // Started before the tracers: known to them from /proc only.
    let before = PodmanContainer::start(&["/bin/sleep", "600"]);
    let (before_id, before_pid) = (before.id.clone(), before.pid);

    let mut least = ImageRun::start(LEAST, Seccomp::Unconfined, &["run"]);
    let no_ptrace_caps: Vec<&str> = LEAST
        .iter()
        .copied()
        .filter(|c| *c != "CAP_SYS_PTRACE")
        .collect();
    let mut no_ptrace = ImageRun::start(&no_ptrace_caps, Seccomp::Unconfined, &["run"]);
    least.wait_streaming();
    no_ptrace.wait_streaming();

    // A process on the host: its pid and argv.
    let tag = format!("podtrace-image-host-{}", cmd::random_hex(4));
    let mut child = Command::new("/bin/echo")
        .arg(&tag)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn /bin/echo");
    let host_pid = child.id();
    assert!(child.wait().expect("wait /bin/echo").success());
    for t in [&mut least, &mut no_ptrace] {
        let e = t.wait_event("the host /bin/echo", &|e| is_exec_of(e, host_pid));
        assert_eq!(e["argv"], json!(["/bin/echo", tag]), "{}: {e}", t.name);
        assert_eq!(e["node"], NODE, "{}: NODE_NAME becomes node: {e}", t.name);
        assert_eq!(
            e["container"],
            Value::Null,
            "{}: a host process: {e}",
            t.name
        );
    }

    // A container started while tracing: its init's exec carries the podman id.
    let during = PodmanContainer::start(&["/bin/sleep", "601"]);
    for t in [&mut least, &mut no_ptrace] {
        let e = t.wait_event("the new container's init exec", &|e| {
            is_exec_of(e, during.pid) && e["argv"][0] == "/bin/sleep"
        });
        assert_eq!(e["argv"], json!(["/bin/sleep", "601"]), "{}: {e}", t.name);
        assert_eq!(
            e["container"]["id"], during.id,
            "{}: container.id must be `podman inspect` .Id: {e}",
            t.name
        );
        assert_eq!(e["container"]["runtime"], "podman", "{}: {e}", t.name);
        assert_eq!(e["nspid"], 1, "{}: the init is pid 1 inside: {e}", t.name);
    }

    // `podman exec` into the container that predates the tracers.
    let tag2 = format!("podtrace-image-exec-{}", cmd::random_hex(4));
    let out = before.exec(&["/bin/echo", &tag2]);
    assert!(out.status.success(), "podman exec failed: {out:?}");
    for t in [&mut least, &mut no_ptrace] {
        let e = t.wait_event("the exec inside the older container", &|e| {
            e["type"] == "exec" && e["argv"] == json!(["/bin/echo", tag2])
        });
        assert_eq!(e["container"]["id"], before_id, "{}: {e}", t.name);
        assert_ne!(e["pid"], before_pid, "{}: not the init: {e}", t.name);
    }

    // A process that enters only the older container's pid namespace (nsenter -p, no
    // cgroup): only with CAP_SYS_PTRACE did podtrace read that namespace from /proc (the init
    // holds capabilities podtrace lacks), so only then is the process known to be in the
    // container; without it the container is unknown (null, never a guess).
    let tag3 = format!("podtrace-image-nsenter-{}", cmd::random_hex(4));
    let status = Command::new("nsenter")
        .args([
            "--target",
            &before_pid.to_string(),
            "--pid",
            "--",
            "/bin/echo",
            &tag3,
        ])
        .stdout(Stdio::null())
        .status()
        .expect("nsenter");
    assert!(status.success());
    let is_it = |e: &Value| e["type"] == "exec" && e["argv"] == json!(["/bin/echo", tag3]);
    let e = least.wait_event("the process in the older container's pid namespace", &is_it);
    assert_eq!(
        e["container"]["id"], before_id,
        "with CAP_SYS_PTRACE the older container's pid namespace is known: {e}"
    );
    let e = no_ptrace.wait_event("the process in the older container's pid namespace", &is_it);
    assert_eq!(
        e["container"],
        Value::Null,
        "without CAP_SYS_PTRACE the pid namespace of an init started before podtrace was \
         expected to be unknown (that is why the DaemonSet adds SYS_PTRACE); if podtrace no \
         longer needs it, drop SYS_PTRACE from deploy/ and docs/kubernetes.md: {e}"
    );
    // The older container's init ends: it is the init either way (the first child of its
    // monitor, conmon).
    drop(before);
    let is_init_exit = |e: &Value| e["type"] == "exit" && e["pid"] == before_pid;
    for t in [&mut least, &mut no_ptrace] {
        let e = t.wait_event("the older init's exit", &is_init_exit);
        assert_eq!(e["container"]["id"], before_id, "{}: {e}", t.name);
        assert_eq!(e["role"], "container-init", "{}: {e}", t.name);
    }
    drop(during);

    for t in [least, no_ptrace] {
        let name = t.name.clone();
        let (events, _) = t.stop();
        assert!(!events.is_empty(), "{name}: no events");
        let text: Vec<String> = events.iter().map(Value::to_string).collect();
        podtrace_tests::tracer::parse_and_validate(&text.join("\n"), &name);
    }
}

#[test]
fn without_a_needed_privilege_the_image_exits_2_and_names_it() {
    require_image();
    let without =
        |cap: &str| -> Vec<&str> { LEAST.iter().copied().filter(|c| *c != cap).collect() };
    // (what is missing, capabilities, seccomp, what stderr must name)
    let cases: Vec<(&str, Vec<&str>, Seccomp, &str)> = vec![
        (
            "CAP_BPF",
            without("CAP_BPF"),
            Seccomp::Unconfined,
            "CAP_BPF",
        ),
        (
            "CAP_PERFMON",
            without("CAP_PERFMON"),
            Seccomp::Unconfined,
            "CAP_PERFMON",
        ),
        (
            "every capability",
            Vec::new(),
            Seccomp::Unconfined,
            "CAP_BPF",
        ),
        (
            "a seccomp profile that allows bpf()",
            LEAST.to_vec(),
            Seccomp::RuntimeDefault,
            "seccomp",
        ),
    ];
    let mut failures = Vec::new();
    let mut seen = Vec::new();
    for (missing, caps, seccomp, needle) in &cases {
        let run = ImageRun::start(caps, *seccomp, &["run", "--duration", "10"]);
        let what = run.what.clone();
        let (status, stderr) = run.wait_exit();
        let last = stderr.lines().last().unwrap_or_default().to_string();
        seen.push(format!("without {missing}: {status}: {last}\n    ({what})"));
        if stderr.contains("panicked") {
            failures.push(format!("without {missing}: panicked: {stderr}"));
        }
        if status.code() != Some(2) {
            failures.push(format!("without {missing}: exit {status}, expected 2"));
        }
        if !stderr.contains(needle) {
            failures.push(format!(
                "without {missing}: the error does not name `{needle}`: {last}"
            ));
        }
    }
    eprintln!("observed:\n  {}", seen.join("\n  "));
    assert!(
        failures.is_empty(),
        "privilege errors are not clear:\n  {}\nobserved:\n  {}",
        failures.join("\n  "),
        seen.join("\n  ")
    );
}
