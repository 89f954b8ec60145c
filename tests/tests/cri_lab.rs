//! The CRI lab (kubelet-style pods through containerd's CRI plugin) checked against /proc, and
//! podtrace's `CriService` against it (root only).
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use podtrace::cri::{no_redaction, CriAnswer, CriConfig, CriFact, CriService};
use podtrace_tests::lab::{
    self, cgroup_dir, cgroup_inode, proc_cgroup, proc_cmdline, proc_status, unified_root,
    ContainerSpec, CriLab, KubeContainer, KubePod, ProcessRef,
};

/// A command that runs until the container is dropped.
const SLEEP: &[&str] = &["/bin/sleep", "600"];

/// The host pid is the init of its own pid namespace, one level below ours.
fn assert_namespace_init(pid: u32) {
    let st = proc_status(pid);
    let ours = proc_status(std::process::id()).nspid.len();
    assert_eq!(st.nspid.len(), ours + 1, "{pid}: {st:?}");
    assert_eq!(
        st.nspid.last(),
        Some(&1),
        "{pid} is not pid 1 inside: {st:?}"
    );
}

fn assert_child_of_shim(pid: u32, pod: &KubePod) {
    let ppid = proc_status(pid).ppid;
    assert_eq!(
        ppid,
        pod.shim_pid(),
        "parent of {pid} is not the pod's shim"
    );
    let shim = proc_cmdline(ppid);
    assert!(
        shim[0].ends_with("containerd-shim-runc-v2"),
        "parent of {pid}: {shim:?}"
    );
    let addr = pod.lab().socket().to_string_lossy().into_owned();
    assert!(
        shim.windows(2).any(|w| w[0] == "-id" && w[1] == pod.id())
            && shim.windows(2).any(|w| w[0] == "-address" && w[1] == addr),
        "shim of pod {}: {shim:?}",
        pod.id()
    );
}

fn assert_cgroup_gone_everywhere(cgroup: &str) {
    let roots = std::fs::read_dir("/sys/fs/cgroup")
        .expect("list /sys/fs/cgroup")
        .flatten()
        .map(|e| e.path())
        .chain([unified_root().to_path_buf()]);
    for root in roots {
        let dir = root.join(cgroup.trim_start_matches('/'));
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn cri_lab_pod_ground_truth_exec_and_teardown() {
    lab::require_root();
    let cri = CriLab::start();
    let daemon = ProcessRef::of(cri.pid());
    let pod = cri.run_pod("smoke");
    let c = pod.run("app", SLEEP);

    // The runtime's own view.
    let st = c.status();
    assert_eq!(st.id, c.id);
    assert_eq!(
        st.state,
        k8s_cri::v1::ContainerState::ContainerRunning as i32
    );
    let md = st.metadata.clone().expect("metadata");
    assert_eq!((md.name.as_str(), md.attempt), ("app", 0));
    assert_eq!(
        st.image.clone().expect("image").image,
        lab::cri::BUSYBOX_IMAGE,
        "ContainerStatus names the image even though CreateContainer got its id"
    );
    assert_eq!(st.image_ref, cri.image_id(lab::cri::BUSYBOX_IMAGE));
    let ps = cri
        .sandbox_status(pod.id())
        .expect("PodSandboxStatus")
        .status
        .expect("sandbox status");
    let pmd = ps.metadata.expect("sandbox metadata");
    assert_eq!(
        (pmd.name.as_str(), pmd.namespace.as_str(), pmd.uid.as_str()),
        (pod.name(), pod.namespace(), pod.uid())
    );

    // /proc agrees: the init's pid, its cgroup, its parent.
    assert_namespace_init(c.pid);
    assert_eq!(
        c.cgroup,
        format!("/kubepods/besteffort/pod{}/{}", pod.uid(), c.id)
    );
    assert_eq!(proc_cgroup(c.pid), c.cgroup);
    assert_eq!(c.cgroup_id, cgroup_inode(&cgroup_dir(&c.cgroup)));
    assert_eq!(proc_cmdline(c.pid), SLEEP);
    assert_child_of_shim(c.pid, &pod);
    assert_child_of_shim(pod.pause_pid(), &pod);
    assert_eq!(
        proc_cgroup(pod.pause_pid()),
        format!("{}/{}", pod.cgroup_parent(), pod.id())
    );
    assert_eq!(proc_status(pod.shim_pid()).ppid, 1, "the shim is an orphan");

    // ExecSync lands in the container's pid namespace and cgroup.
    let (code, out, err) = c.exec_sync(&[
        "sh",
        "-c",
        "cat /proc/self/cgroup; echo; cat /proc/1/cmdline",
    ]);
    assert_eq!(code, 0, "{out} {err}");
    assert!(
        out.lines().any(|l| l == format!("0::{}", c.cgroup)),
        "exec'd process is not in {}:\n{out}",
        c.cgroup
    );
    assert!(
        out.replace('\0', " ").contains("/bin/sleep 600"),
        "pid 1 inside: {out}"
    );
    assert_eq!(c.exec_sync(&["false"]).0, 1, "exit code is the command's");

    // Teardown leaves nothing.
    let (init, pause, shim) = (
        ProcessRef::of(c.pid),
        ProcessRef::of(pod.pause_pid()),
        ProcessRef::of(pod.shim_pid()),
    );
    let parent = pod.cgroup_parent().to_string();
    let socket = cri.socket().to_path_buf();
    drop(c);
    assert!(!init.is_alive(), "init alive after drop");
    drop(pod);
    assert!(!pause.is_alive() && !shim.is_alive(), "pause or shim alive");
    assert_cgroup_gone_everywhere(&parent);
    drop(cri);
    assert!(!daemon.is_alive(), "containerd alive after drop");
    assert!(!socket.exists(), "{} left behind", socket.display());
}

#[test]
fn cri_lab_tears_down_on_panic_with_containerd_stopped() {
    lab::require_root();
    let seen = std::sync::Mutex::new(None);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cri = CriLab::start();
        let pod = cri.run_pod("panic");
        let c = pod.run("app", SLEEP);
        *seen.lock().expect("lock") = Some((
            ProcessRef::of(c.pid),
            ProcessRef::of(pod.pause_pid()),
            ProcessRef::of(pod.shim_pid()),
            cri.socket().parent().expect("lab dir").to_path_buf(),
            pod.cgroup_parent().to_string(),
        ));
        cri.stop_daemon();
        panic!("test panics with a pod alive and containerd stopped");
    }));
    assert!(r.is_err(), "the closure panicked");
    let (init, pause, shim, dir, parent) =
        seen.into_inner().expect("lock").expect("the lab started");
    assert!(!init.is_alive(), "init alive after a panic");
    assert!(
        !pause.is_alive() && !shim.is_alive(),
        "pause or shim alive after a panic"
    );
    // Teardown started containerd again to remove the pod, then stopped it.
    let dir_s = dir.to_string_lossy().into_owned();
    let left: Vec<u32> = std::fs::read_dir("/proc")
        .expect("list /proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&p| lab::is_alive(p) && proc_cmdline_or_empty(p).contains(&dir_s))
        .collect();
    assert!(left.is_empty(), "processes of the lab left: {left:?}");
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert_cgroup_gone_everywhere(&parent);
}

fn proc_cmdline_or_empty(pid: u32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

fn start_service(rt: &tokio::runtime::Runtime, cri: &CriLab) -> CriService {
    let cfg = CriConfig {
        endpoint: Some(cri.endpoint()),
        ..CriConfig::default()
    };
    rt.block_on(CriService::start(cfg, no_redaction()))
        .expect("CriService starts on the lab's containerd")
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// The next fact for `id` (other answers are skipped; the service saying it has none for
/// `id` is None), within `within`.
fn answer_for(
    rt: &tokio::runtime::Runtime,
    s: &mut CriService,
    id: &str,
    within: Duration,
) -> Option<CriFact> {
    let end = tokio::time::Instant::now() + within;
    rt.block_on(async {
        loop {
            match tokio::time::timeout_at(end, s.next_answer()).await {
                Ok(CriAnswer::Fact(f)) if f.id == id => return Some(*f),
                Ok(CriAnswer::Unknown(u)) if u.id == id => return None,
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    })
}

/// What the CRI itself says about a container, as a fact.
fn truth(c: &KubeContainer) -> CriFact {
    let st = c.status();
    let md = st.metadata.expect("metadata");
    CriFact {
        id: c.id.clone(),
        sandbox: false,
        name: Some(md.name),
        attempt: Some(md.attempt),
        image: st.image.map(|i| i.image),
        image_id: Some(st.image_ref),
        pod: Some(pod_truth(&c.pod)),
    }
}

fn pod_truth(pod: &KubePod) -> podtrace::cri::CriPod {
    let st = pod
        .lab()
        .sandbox_status(pod.id())
        .expect("PodSandboxStatus")
        .status
        .expect("status");
    let md = st.metadata.expect("metadata");
    podtrace::cri::CriPod {
        sandbox_id: st.id,
        name: md.name,
        namespace: md.namespace,
        uid: md.uid,
        labels: None,
        annotations: None,
    }
}

#[test]
fn cri_service_names_pods_containers_and_sandboxes() {
    lab::require_root();
    let cri = CriLab::start();
    let pod = cri.run_pod("web");
    let first = pod.run("app", SLEEP);
    let rt = runtime();
    let mut s = start_service(&rt, &cri);
    assert!(
        s.runtime().is_some_and(|r| r.starts_with("containerd ")),
        "{:?}",
        s.runtime()
    );

    // Started before the service: in initial().
    let initial = s.initial();
    let got = initial
        .iter()
        .find(|f| f.id == first.id)
        .unwrap_or_else(|| panic!("initial() lacks {}: {initial:#?}", first.id));
    assert_eq!(*got, truth(&first));
    assert_eq!(got.image.as_deref(), Some(lab::cri::BUSYBOX_IMAGE));
    let sb = initial
        .iter()
        .find(|f| f.id == pod.id())
        .unwrap_or_else(|| panic!("initial() lacks the sandbox: {initial:#?}"));
    assert!(sb.sandbox && sb.name.is_none());
    assert_eq!(sb.pod, Some(pod_truth(&pod)));

    // A second container in the same pod, after the service started: request().
    let second = pod.run("sidecar", SLEEP);
    s.request(&second.id);
    let f = answer_for(&rt, &mut s, &second.id, Duration::from_secs(5)).expect("second");
    assert_eq!(f, truth(&second));

    // A restarted container: attempt 1, same name.
    first.stop();
    let restarted = pod.run_with(ContainerSpec {
        name: "app".into(),
        attempt: 1,
        command: SLEEP.iter().map(|s| s.to_string()).collect(),
    });
    s.request(&restarted.id);
    let f = answer_for(&rt, &mut s, &restarted.id, Duration::from_secs(5)).expect("restarted");
    assert_eq!((f.name.as_deref(), f.attempt), (Some("app"), Some(1)));
    assert_eq!(f, truth(&restarted));

    // A pod started after the service: its sandbox id (pause's cgroup) answered as a sandbox.
    let pod2 = cri.run_pod("db");
    s.request(pod2.id());
    let f = answer_for(&rt, &mut s, pod2.id(), Duration::from_secs(5)).expect("sandbox");
    assert!(f.sandbox, "{f:?}");
    assert_eq!(f.pod, Some(pod_truth(&pod2)));
    assert_eq!(
        proc_cgroup(pod2.pause_pid()).rsplit('/').next(),
        Some(pod2.id()),
        "pause's cgroup is named by the sandbox id"
    );

    // An id the runtime does not know: asked again after each of the default waits, then
    // an answer that there is none, counted.
    let unknown = "0".repeat(64);
    let before = s.stats();
    s.request(&unknown);
    let t0 = Instant::now();
    assert_eq!(
        answer_for(&rt, &mut s, &unknown, Duration::from_secs(10)),
        None
    );
    let waited = t0.elapsed();
    let st = s.stats();
    let retries = podtrace::cri::RETRIES_MS.len() as u64;
    assert_eq!(st.not_found - before.not_found, 1 + retries, "{st:#?}");
    assert_eq!(
        (
            st.retries - before.retries,
            st.unanswered - before.unanswered
        ),
        (retries, 1),
        "{st:#?}"
    );
    let total: u64 = podtrace::cri::RETRIES_MS.iter().sum();
    assert!(
        waited >= Duration::from_millis(total),
        "the retries waited {waited:?}, less than {total} ms"
    );
    assert_eq!((st.failures, st.outages, st.gave_up), (0, 0, 0), "{st:#?}");

    // Lookup latency against the real CRI: N fresh lookups of one container.
    const N: usize = 100;
    let lookups_before = s.stats().lookups;
    let mut took = Vec::with_capacity(N);
    for _ in 0..N {
        s.forget(&second.id);
        let t = Instant::now();
        s.request(&second.id);
        answer_for(&rt, &mut s, &second.id, Duration::from_secs(5)).expect("lookup");
        took.push(t.elapsed());
    }
    assert_eq!(
        s.stats().lookups - lookups_before,
        N as u64,
        "each was a real lookup"
    );
    took.sort();
    eprintln!(
        "CRI lookup latency over {N} lookups (ContainerStatus + ListContainers, pod cached): \
         min {:?} median {:?} p90 {:?} max {:?}",
        took[0],
        took[N / 2],
        took[N * 9 / 10],
        took[N - 1]
    );
    assert!(
        took[N / 2] < Duration::from_millis(100),
        "median {:?}",
        took[N / 2]
    );
    drop(s);
}

#[test]
fn cri_service_survives_containerd_restart() {
    lab::require_root();
    let cri = CriLab::start();
    let pod = cri.run_pod("restart");
    let rt = runtime();
    let mut s = start_service(&rt, &cri);
    let initial = s.initial();
    assert!(initial.iter().any(|f| f.id == pod.id()), "{initial:#?}");
    // Created after the start, not asked yet.
    let c = pod.run("app", SLEEP);
    let before = s.stats();
    assert!(before.up, "{before:#?}");

    cri.stop_daemon();
    s.request(&c.id);
    // Let the worker try and fail: failures counted, no crash, no answer.
    assert_eq!(answer_for(&rt, &mut s, &c.id, Duration::from_secs(2)), None);
    let st = s.stats();
    assert!(!st.up, "{st:#?}");
    assert_eq!(st.outages, 1, "{st:#?}");
    assert!(st.failures > before.failures, "{st:#?}");
    assert_eq!(st.gave_up, 0, "{st:#?}");
    assert_eq!(s.pending(), 1);
    assert!(
        proc_status(c.pid).state != 'Z',
        "the container lives on without containerd"
    );

    // containerd comes back: the lookup that failed is answered.
    let t = Instant::now();
    cri.start_daemon();
    let f = answer_for(&rt, &mut s, &c.id, Duration::from_secs(15))
        .expect("the lookup that failed while containerd was down is answered");
    eprintln!("answered {:?} after containerd answered again", t.elapsed());
    assert_eq!(f, truth(&c));
    let st = s.stats();
    assert!(st.up, "{st:#?}");
    assert_eq!(s.pending(), 0);
    drop(s);
}
