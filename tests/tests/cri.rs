//! Issues 11 and 17: names and images from the CRI, on pods that containerd's own CRI plugin
//! and a real cri-o 1.25.5 (`../shared/crio`) create the way kubelet does, checked against what
//! the CRI itself reports (ContainerStatus, PodSandboxStatus, the verbose info's pid, conmon's
//! pidfile): on every event of a container from its first (the engine holds them for the
//! answer), live, in `tree`, in a replay with no runtime at all, and with containerd going
//! away while podtrace runs.
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::net::UnixListener;
use std::process::Command;
use std::time::{Duration, Instant};

use podtrace_tests::lab::{self, ContainerSpec, CriLab, FakeContainer, KubeContainer, PodOpts};
use podtrace_tests::tracer::{self, bin, tree_containers, tree_json, Run, Tracer};
use serde_json::Value;

const SLEEP: &[&str] = &["/bin/sleep", "600"];

/// What the CRI says of a container, the oracle: (name, image, image ref, pod name,
/// namespace, uid).
struct Truth {
    name: String,
    image: String,
    image_id: String,
    pod: String,
    namespace: String,
    uid: String,
}

fn truth(c: &KubeContainer) -> Truth {
    let st = c.status();
    let md = st.metadata.expect("container metadata");
    let image = st.image.expect("container image").image;
    let sandbox = c
        .pod
        .lab()
        .sandbox_status(c.pod.id())
        .expect("PodSandboxStatus")
        .status
        .expect("sandbox status");
    let pmd = sandbox.metadata.expect("sandbox metadata");
    Truth {
        name: md.name,
        image,
        image_id: st.image_ref,
        pod: pmd.name,
        namespace: pmd.namespace,
        uid: pmd.uid,
    }
}

fn events_of<'a>(run: &'a Run, id: &str) -> Vec<&'a Value> {
    run.events
        .iter()
        .filter(|e| e["container"]["id"] == id)
        .collect()
}

fn is_named(e: &Value, t: &Truth) -> bool {
    e["container"]["name"] == t.name.as_str()
        && e["container"]["image"] == t.image.as_str()
        && e["container"]["image_id"] == t.image_id.as_str()
        && e["pod"]["name"] == t.pod.as_str()
        && e["pod"]["namespace"] == t.namespace.as_str()
        && e["pod"]["uid"] == t.uid.as_str()
}

/// Every event of the container from the first named one on is named as the CRI says, and
/// at least `min` are; returns how long after the container's first event the names came.
fn assert_named_from_some_point(run: &Run, c: &KubeContainer, min: usize) -> Duration {
    let t = truth(c);
    let evs = events_of(run, &c.id);
    let first = evs
        .iter()
        .position(|e| is_named(e, &t))
        .unwrap_or_else(|| panic!("no event of {} ({}) is named: {evs:#?}", c.name, c.id));
    let late: Vec<_> = evs[first..].iter().filter(|e| !is_named(e, &t)).collect();
    assert!(late.is_empty(), "unnamed after named: {late:#?}");
    assert!(
        evs.len() - first >= min,
        "{} named events of {}, want {min}: {evs:#?}",
        evs.len() - first,
        c.name
    );
    for e in &evs[..first] {
        // Before the answer: the same container, names null (never a guess).
        assert!(e["container"]["name"].is_null(), "{e}");
        assert!(e["container"]["image"].is_null(), "{e}");
    }
    Duration::from_nanos(tracer::event_ns(evs[first]).saturating_sub(tracer::event_ns(evs[0])))
}

/// Every event of the container is named and imaged as the CRI says, from its first; there
/// are at least `min`.
fn assert_named_from_the_first(run: &Run, c: &KubeContainer, min: usize) {
    let t = truth(c);
    let evs = events_of(run, &c.id);
    assert!(
        evs.len() >= min,
        "{} events of {} ({}), want {min}",
        evs.len(),
        c.name,
        c.id
    );
    let unnamed: Vec<_> = evs.iter().filter(|e| !is_named(e, &t)).collect();
    assert!(
        unnamed.is_empty(),
        "{} of {} events of {} ({}) not named as the CRI says ({} / {} / {} {}): first {:#}",
        unnamed.len(),
        evs.len(),
        c.name,
        c.id,
        t.name,
        t.image,
        t.namespace,
        t.pod,
        unnamed[0]
    );
}

/// The init's fork and its exec of the container's command: attributed to the container,
/// named, and the exec marked as the container's init (the process the CRI reports as
/// info.pid, PID 1 of its pid namespace or not).
fn assert_init_named(run: &Run, c: &KubeContainer, argv0: &str) {
    let t = truth(c);
    let fork = run
        .events
        .iter()
        .find(|e| e["type"] == "fork" && e["pid"] == c.pid)
        .unwrap_or_else(|| panic!("no fork of {}'s init {}", c.name, c.pid));
    assert!(is_named(fork, &t), "{}: the init's fork: {fork:#}", c.name);
    let exec = run
        .events
        .iter()
        .find(|e| e["type"] == "exec" && e["pid"] == c.pid && e["argv"][0] == argv0)
        .unwrap_or_else(|| panic!("no exec of {argv0} by {}'s init {}", c.name, c.pid));
    assert!(is_named(exec, &t), "{}: the init's exec: {exec:#}", c.name);
    assert_eq!(exec["role"], "container-init", "{}: {exec:#}", c.name);
}

const LOOP: &[&str] = &["/bin/sh", "-c", "while true; do sleep 1; done"];

/// Pods before and after podtrace, two containers, a restart (attempt 1), ExecSync, a
/// streaming exec and a pod sharing its pid namespace: every event of every container
/// started while tracing is named from its first; `--pod` keeps a container's start; the
/// trace replays byte for byte with no runtime.
fn names_from_the_first_event(cri: CriLab) {
    let before = cri.run_pod("before");
    let a = before.run("work", SLEEP);
    let dir = tempfile::tempdir().expect("tmp");
    let trace = dir.path().join("names.trace");
    let t = Tracer::start(&[
        "--cri-endpoint",
        &cri.endpoint(),
        "--record",
        &trace.display().to_string(),
    ]);
    let after = cri.run_pod("after");
    let work = after.run("work", LOOP);
    let sidecar = after.run("sidecar", SLEEP);
    work.stop();
    let restarted = after.run_with(ContainerSpec {
        name: "work".into(),
        attempt: 1,
        command: SLEEP.iter().map(|s| s.to_string()).collect(),
    });
    let (code, _, _) = sidecar.exec_sync(&["/bin/sh", "-c", "exit 3"]);
    assert_eq!(code, 3, "ExecSync");
    // crictl 1.25 exits 1 for any non-zero code of a streaming exec: this one succeeds.
    let (code, out) = restarted.exec_streaming(&["/bin/sh", "-c", "echo streamed; exit 0"]);
    assert_eq!((code, out.trim()), (0, "streamed"), "streaming exec");
    let (code, _, _) = a.exec_sync(&["/bin/sh", "-c", "exit 5"]);
    assert_eq!(code, 5);
    let shared = cri.run_pod_with("shared", PodOpts { share_pid: true });
    let main = shared.run("main", SLEEP);
    // The main process of a container in a shared pid namespace is not its PID 1.
    let nspid = lab::proc_status(main.pid).nspid;
    assert_ne!(nspid.last(), Some(&1), "shared pid namespace: {nspid:?}");
    std::thread::sleep(Duration::from_millis(1500));
    let run = t.stop();

    for (c, min) in [(&work, 4), (&sidecar, 2), (&restarted, 2), (&main, 2)] {
        assert_named_from_the_first(&run, c, min);
    }
    assert_init_named(&run, &work, "/bin/sh");
    assert_init_named(&run, &sidecar, "/bin/sleep");
    assert_init_named(&run, &restarted, "/bin/sleep");
    assert_init_named(&run, &main, "/bin/sleep");
    if let Some(conmon) = work.conmon_pid() {
        // cri-o: the container's monitor, from the pidfile cri-o gave it.
        let monitor: Vec<_> = run.events.iter().filter(|e| e["pid"] == conmon).collect();
        assert!(!monitor.is_empty(), "no event of conmon {conmon}");
        for e in monitor {
            assert!(is_named(e, &truth(&work)), "conmon: {e:#}");
            assert_eq!(e["role"], "conmon", "{e:#}");
        }
    }
    for (c, argv) in [
        (&sidecar, ["/bin/sh", "-c", "exit 3"]),
        (&restarted, ["/bin/sh", "-c", "echo streamed; exit 0"]),
        (&a, ["/bin/sh", "-c", "exit 5"]),
    ] {
        let e = exec_of(&run, &c.id, &argv);
        assert!(is_named(e, &truth(c)), "{argv:?}: {e:#}");
        let exit = run
            .events
            .iter()
            .find(|x| x["type"] == "exit" && x["pid"] == e["pid"])
            .unwrap_or_else(|| panic!("no exit of {argv:?}"));
        assert!(is_named(exit, &truth(c)), "{exit:#}");
    }
    let s = run.summary.as_ref().expect("summary");
    assert_eq!(
        s["hold"]["released_after_bound"], 0,
        "every hold ended with the CRI's answer: {:#}",
        s["hold"]
    );
    assert!(
        s["hold"]["released_named"].as_u64().unwrap_or(0) > 0,
        "{:#}",
        s["hold"]
    );
    eprintln!(
        "{}: hold delays p50 {} ms, p99 {} ms, max {} ns, {} events held",
        cri.runtime_name(),
        s["hold"]["delay_p50_ms"],
        s["hold"]["delay_p99_ms"],
        s["hold"]["delay_max_ns"],
        s["hold"]["held"]
    );
    let truths: Vec<(String, Truth)> = [&work, &main]
        .iter()
        .map(|c| (c.id.clone(), truth(c)))
        .collect();
    let (work_pid, pod_name) = (work.pid, truths[0].1.pod.clone());

    // No runtime from here on.
    drop((a, work, sidecar, restarted, main, before, after, shared));
    drop(cri);
    let live = std::fs::read(run.dir.path().join("events.ndjson")).expect("live output");
    let replay = Command::new(bin())
        .arg("replay")
        .arg(&trace)
        .output()
        .expect("podtrace replay");
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(replay.stdout == live, "replay differs from the live output");
    // `--pod` keeps the container's start: the init's fork and exec.
    let filtered = Command::new(bin())
        .args(["replay", "--pod", &pod_name])
        .arg(&trace)
        .output()
        .expect("podtrace replay --pod");
    let lines: Vec<Value> = String::from_utf8_lossy(&filtered.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON"))
        .collect();
    for kind in ["fork", "exec"] {
        assert!(
            lines
                .iter()
                .any(|e| e["type"] == kind && e["pid"] == work_pid),
            "--pod {pod_name} lost the init's {kind}"
        );
    }
    assert!(lines.iter().all(|e| e["pod"]["name"] == pod_name.as_str()));
    let _ = truths;
}

#[test]
fn crio_names_every_event_of_a_container_from_its_first() {
    lab::require_root();
    names_from_the_first_event(CriLab::crio());
}

#[test]
fn containerd_names_every_event_of_a_container_from_its_first() {
    lab::require_root();
    names_from_the_first_event(CriLab::start());
}

/// The exec of an ExecSync'd command (argv exactly), in container `id`.
fn exec_of<'a>(run: &'a Run, id: &str, argv: &[&str]) -> &'a Value {
    run.events
        .iter()
        .find(|e| {
            e["type"] == "exec"
                && e["container"]["id"] == id
                && e["argv"].as_array().is_some_and(|a| {
                    a.iter()
                        .map(|v| v.as_str())
                        .eq(argv.iter().map(|s| Some(*s)))
                })
        })
        .unwrap_or_else(|| panic!("no exec of {argv:?} in {id}"))
}

#[test]
fn cri_pods_are_named_live_in_the_tree_and_in_a_replay_without_containerd() {
    lab::require_root();
    let cri = CriLab::start();
    // A pod that runs before podtrace starts.
    let before = cri.run_pod("before");
    let a = before.run("work", SLEEP);
    let dir = tempfile::tempdir().expect("tmp");
    let trace = dir.path().join("cri.trace");
    let t = Tracer::start(&[
        "--cri-endpoint",
        &cri.endpoint(),
        "--record",
        &trace.display().to_string(),
    ]);
    // A pod started after it, with a second container and a restarted one (attempt 1).
    let after = cri.run_pod("after");
    let b = after.run("work", SLEEP);
    let sidecar = after.run("sidecar", SLEEP);
    b.stop();
    let restarted = after.run_with(ContainerSpec {
        name: "work".into(),
        attempt: 1,
        command: SLEEP.iter().map(|s| s.to_string()).collect(),
    });
    // Probes / kubectl exec enter the containers through ExecSync.
    let (code, _, _) = a.exec_sync(&["/bin/sh", "-c", "exit 5"]);
    assert_eq!(code, 5);
    let (code, _, _) = restarted.exec_sync(&["/bin/sh", "-c", "exit 6"]);
    assert_eq!(code, 6);
    let (code, _, _) = sidecar.exec_sync(&["/bin/sh", "-c", "exit 0"]);
    assert_eq!(code, 0);

    // `podtrace tree` names them too, as the CRI does.
    let view = tree_json(&["--cri-endpoint", &cri.endpoint()]);
    for c in [&a, &sidecar, &restarted] {
        let want = truth(c);
        let node = tree_containers(&view)
            .into_iter()
            .find(|n| n["id"] == c.id.as_str())
            .unwrap_or_else(|| panic!("{} not in the tree: {view:#}", c.id));
        assert_eq!(node["name"], want.name.as_str(), "{node:#}");
        assert_eq!(node["image"], want.image.as_str(), "{node:#}");
        assert_eq!(node["image_id"], want.image_id.as_str(), "{node:#}");
        let pod = view["pods"]
            .as_array()
            .expect("pods")
            .iter()
            .find(|p| p["uid"] == want.uid.as_str())
            .unwrap_or_else(|| panic!("pod {} not in the tree", want.uid));
        assert_eq!(
            (&pod["name"], &pod["namespace"]),
            (&Value::from(want.pod), &Value::from(want.namespace))
        );
    }
    // Pod labels only when asked for (they can be large and hold secrets).
    for p in view["pods"].as_array().expect("pods") {
        assert!(
            p.get("labels").is_none(),
            "labels without --cri-labels: {p:#}"
        );
    }
    let labelled = tree_json(&["--cri-endpoint", &cri.endpoint(), "--cri-labels"]);
    let pod = labelled["pods"]
        .as_array()
        .expect("pods")
        .iter()
        .find(|p| p["uid"] == truth(&a).uid.as_str())
        .expect("the pod in the labelled tree");
    assert_eq!(pod["labels"]["app"], "podtrace-lab", "{pod:#}");
    assert_eq!(
        pod["labels"]["io.kubernetes.pod.name"],
        truth(&a).pod.as_str()
    );
    std::thread::sleep(Duration::from_millis(300));
    let run = t.stop();

    // Before podtrace: named from its first event on (looked up at start).
    let first = exec_of(&run, &a.id, &["/bin/sh", "-c", "exit 5"]);
    assert!(is_named(first, &truth(&a)), "{first}");
    let exit = run
        .events
        .iter()
        .find(|e| e["type"] == "exit" && e["pid"] == first["pid"])
        .expect("exit of the ExecSync process");
    assert_eq!(exit["exit_code"], 5);
    assert!(is_named(exit, &truth(&a)), "{exit}");
    // After: named from some point on, every later event too.
    let mut delays = Vec::new();
    for c in [&sidecar, &restarted] {
        delays.push(assert_named_from_some_point(&run, c, 2));
    }
    let e = exec_of(&run, &restarted.id, &["/bin/sh", "-c", "exit 6"]);
    assert!(is_named(e, &truth(&restarted)), "{e}");
    assert_ne!(restarted.id, b.id, "a restart is a new container");
    eprintln!("names came {delays:?} after each container's first event");
    let summary = run.summary.as_ref().expect("summary");
    let stats = &summary["cri"]["stats"];
    assert!(
        stats["answered"].as_u64().expect("answered") >= 3,
        "{stats:#}"
    );
    assert_eq!(summary["cri"]["disagreements"], 0);

    // Replay with no containerd at all: byte for byte.
    drop((a, b, sidecar, restarted, before, after));
    drop(cri);
    let live = std::fs::read(run.dir.path().join("events.ndjson")).expect("live output");
    let replay = Command::new(bin())
        .arg("replay")
        .arg(&trace)
        .output()
        .expect("podtrace replay");
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(replay.stdout == live, "replay differs from the live output");
    let text = std::fs::read_to_string(&trace).expect("trace");
    assert!(
        text.lines().any(|l| l.starts_with("{\"cri\":")),
        "cri facts recorded"
    );
}

#[test]
fn containerd_going_away_does_not_stop_tracing_and_names_come_back() {
    lab::require_root();
    let cri = CriLab::start();
    let t = Tracer::start(&["--cri-endpoint", &cri.endpoint()]);
    cri.stop_daemon();
    // While it is down: host processes are traced, and a container id podtrace has not
    // seen (kubelet's cgroupfs layout) is asked about and fails, without stalling anything.
    let uid = "0a15cd78-757d-4322-9f35-94f7c42860b4";
    let id = format!("{:064x}", std::process::id());
    let fake = FakeContainer::start_in(
        &format!("/kubepods/besteffort/pod{uid}/{id}"),
        &["/bin/sh", "-c", "exec sleep 600"],
    );
    let started = Instant::now();
    let status = Command::new("sh")
        .args(["-c", "exit 4"])
        .status()
        .expect("sh");
    assert_eq!(status.code(), Some(4));
    std::thread::sleep(Duration::from_millis(1500));
    cri.start_daemon();
    // Back: a new pod is named.
    let pod = cri.run_pod("back");
    let c = pod.run("work", SLEEP);
    // podtrace asks again with a backoff of up to 8 s (cri::service::BACKOFF_MAX) after the
    // outage: the container keeps making events for longer than that, and the later ones
    // must carry the names.
    for _ in 0..20 {
        let (code, _, _) = c.exec_sync(&["/bin/sh", "-c", "exit 0"]);
        assert_eq!(code, 0);
        std::thread::sleep(Duration::from_millis(500));
    }
    let run = t.stop();
    assert!(
        run.events
            .iter()
            .any(|e| e["type"] == "exit" && e["exit_code"] == 4),
        "host processes were traced while containerd was down"
    );
    let fake_evs = events_of(&run, &id);
    assert!(!fake_evs.is_empty(), "the fake container was seen");
    assert!(fake_evs.iter().all(|e| e["container"]["name"].is_null()));
    assert_eq!(fake_evs[0]["pod"]["uid"], uid);
    assert_named_from_some_point(&run, &c, 2);
    let stats = &run.summary.as_ref().expect("summary")["cri"]["stats"];
    assert!(
        stats["failures"].as_u64().expect("failures") >= 1,
        "{stats:#}"
    );
    assert!(
        stats["outages"].as_u64().expect("outages") >= 1,
        "{stats:#}"
    );
    assert!(
        run.stderr.iter().any(|l| l.contains("WARN")),
        "the outage is logged: {:#?}",
        run.stderr
    );
    eprintln!("containerd down for {:?}", started.elapsed());
    drop(fake);
}

#[test]
fn a_cri_endpoint_that_does_not_exist_exits_2_naming_it() {
    lab::require_root();
    let missing = "/nonexistent-podtrace/cri.sock";
    let out = Command::new(bin())
        .args(["run", "--duration", "1", "--output", "/dev/null"])
        .args(["--cri-endpoint", &format!("unix://{missing}")])
        .output()
        .expect("podtrace");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(missing), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// A socket that accepts and never answers: podtrace starts, traces, and stops as usual.
#[test]
fn a_cri_endpoint_that_never_answers_does_not_stall_tracing() {
    lab::require_root();
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("hung.sock");
    let listener = UnixListener::bind(&path).expect("bind");
    let held = std::thread::spawn(move || {
        let mut conns = Vec::new();
        for c in listener.incoming().take(64) {
            match c {
                Ok(c) => conns.push(c),
                Err(_) => break,
            }
        }
        conns.len()
    });
    let started = Instant::now();
    let t = Tracer::start(&["--cri-endpoint", &path.display().to_string()]);
    let attach = started.elapsed();
    let uid = "1b26de89-868e-4433-a046-a5f8d53971c5";
    let id = format!("{:064x}", u64::from(std::process::id()) << 8);
    let fake = FakeContainer::start_in(
        &format!("/kubepods/besteffort/pod{uid}/{id}"),
        &["/bin/sh", "-c", "exec sleep 600"],
    );
    let status = Command::new("sh")
        .args(["-c", "exit 7"])
        .status()
        .expect("sh");
    assert_eq!(status.code(), Some(7));
    std::thread::sleep(Duration::from_millis(1200));
    let run = t.stop();
    drop(fake);
    assert!(
        run.events
            .iter()
            .any(|e| e["type"] == "exit" && e["exit_code"] == 7),
        "traced despite the CRI"
    );
    let evs = events_of(&run, &id);
    assert!(!evs.is_empty());
    assert!(evs.iter().all(|e| e["container"]["name"].is_null()));
    let stats = &run.summary.as_ref().expect("summary")["cri"]["stats"];
    assert_eq!(stats["answered"], 0, "{stats:#}");
    eprintln!("attached {attach:?} after start with a hung CRI");
    drop(dir);
    let _ = held;
}
