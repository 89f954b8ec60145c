//! The engine from event sequences alone (no root, no kernel): what a cri-o, podman and
//! containerd node's kernel reports, in the order it reports it.
use super::tree::{self, Filter};
use super::*;
use crate::facts::KnownFacts;
use crate::kernel_event::{ExecPayload, ExitPayload};

const HOST_NS: u32 = 4026531836;
const CTR_NS: u32 = 4026532500;
const ROOT_CG: u64 = 1;
const CRIO_CG: u64 = 5000;
const ID: &str = "1961af83ec2bf15ae89371edd5ebb534886c9db6bfaa385ac4fb53b4232df966";
const UID: &str = "18617999-d875-40e2-b29f-c40743f8314b";

fn crio_path() -> String {
    format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/crio-{ID}.scope",
        UID.replace('-', "_")
    )
}

struct Node {
    engine: Engine,
    facts: KnownFacts,
    ts: u64,
    out: Vec<Event>,
}

fn ev(kind: Kind, pid: u32, ppid: u32, comm: &str) -> KernelEvent {
    let mut e = crate::trace::synth::event(kind, 0, pid, ppid, comm, ROOT_CG);
    e.start_ns = u64::from(pid) * 1_000_000_000;
    e
}

impl Node {
    fn new() -> Self {
        let mut facts = KnownFacts::default();
        facts.cgroups.insert(ROOT_CG, Some("/".into()));
        facts.cgroups.insert(CRIO_CG, Some(crio_path()));
        Self {
            engine: Engine::new(BootClock { offset_ns: 0 }, HOST_NS, None),
            facts,
            ts: 1_000_000_000_000,
            out: Vec::new(),
        }
    }

    fn feed(&mut self, mut e: KernelEvent) -> Event {
        self.ts += 1000;
        e.ts_ns = self.ts;
        let before = self.out.len();
        self.engine.ingest(&e, &mut self.facts, &mut self.out);
        assert_eq!(
            self.out.len(),
            before + 1,
            "one output event per kernel event"
        );
        self.out.last().cloned().expect("an event")
    }

    fn fork(&mut self, pid: u32, ppid: u32, comm: &str) -> Event {
        self.feed(ev(Kind::Fork, pid, ppid, comm))
    }

    fn exec(&mut self, mut e: KernelEvent, argv: &[&str]) -> Event {
        e.kind = Kind::Exec;
        e.exec = Some(ExecPayload {
            filename: argv.first().copied().unwrap_or("").to_string(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            argv_truncated: false,
        });
        self.feed(e)
    }

    fn exit(&mut self, mut e: KernelEvent, status: u32) -> Event {
        e.kind = Kind::Exit;
        e.exit = Some(ExitPayload {
            status,
            duration_ns: 1,
        });
        self.feed(e)
    }
}

fn conmon_argv() -> Vec<String> {
    let name = format!(
        "k8s_prometheus-adapter_prometheus-adapter-b87c6d546-7jlzw_openshift-monitoring_{UID}_0"
    );
    let log = format!(
        "/var/log/pods/openshift-monitoring_prometheus-adapter-b87c6d546-7jlzw_{UID}/prometheus-adapter/0.log"
    );
    [
        "/usr/bin/conmon",
        "-b",
        "/run/x",
        "-c",
        ID,
        "--exit-dir",
        "/var/run/crio/exits",
        "-l",
        &log,
        "-n",
        &name,
        "-r",
        "/usr/bin/runc",
        "-u",
        ID,
        "-s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// cri-o starting a container: conmon (root cgroup2 on hybrid hosts) -> runc create ->
/// runc init (PID 1 of a new pid namespace, in the container cgroup) -> the workload.
fn start_crio_container(n: &mut Node) -> (u32, u32) {
    let argv = conmon_argv();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    n.fork(100, 50, "crio");
    let e = n.exec(ev(Kind::Exec, 100, 50, "conmon"), &argv);
    assert_eq!(e.process().and_then(|p| p.role), Some(Role::Conmon));
    // conmon daemonizes: the forked copy is the monitor, the exec'd one exits.
    n.fork(101, 100, "conmon");
    n.exit(ev(Kind::Exit, 100, 50, "conmon"), 0);
    n.fork(102, 101, "conmon");
    let e = n.exec(
        ev(Kind::Exec, 102, 101, "runc"),
        &[
            "/usr/bin/runc",
            "--root=/run/runc",
            "create",
            "--bundle",
            "/run/b",
            "--pid-file",
            "/run/b/pidfile",
            ID,
        ],
    );
    assert_eq!(e.process().and_then(|p| p.role), Some(Role::Runtime));
    let mut init = ev(Kind::Fork, 110, 102, "runc:[2:INIT]");
    init.nspid = 1;
    init.pidns = CTR_NS;
    init.cgroup_id = CRIO_CG;
    n.feed(init.clone());
    n.exit(ev(Kind::Exit, 102, 101, "runc"), 0);
    init.ppid = 101;
    init.comm = "adapter".into();
    let e = n.exec(
        init,
        &["/usr/bin/adapter", "--config=/etc/adapter/config.yaml"],
    );
    (
        101,
        match &e {
            Event::Exec { process, .. } => process.pid,
            _ => 0,
        },
    )
}

#[test]
fn first_exec_of_a_crio_container_carries_container_and_pod() {
    let mut n = Node::new();
    let (conmon, init) = start_crio_container(&mut n);
    let Some(Event::Exec { process, .. }) = n.out.last() else {
        panic!("last event is the workload's exec")
    };
    assert_eq!(process.role, Some(Role::ContainerInit));
    let c = process.container.as_ref().expect("container");
    assert_eq!(c.id, ID);
    assert_eq!(c.name.as_deref(), Some("prometheus-adapter"));
    assert_eq!(c.runtime, Some(crate::attribution::Runtime::Crio));
    let pod = process.pod.as_ref().expect("pod");
    assert_eq!(
        pod.name.as_deref(),
        Some("prometheus-adapter-b87c6d546-7jlzw")
    );
    assert_eq!(pod.namespace.as_deref(), Some("openshift-monitoring"));
    assert_eq!(pod.uid.as_deref(), Some(UID));
    assert_eq!(process.cgroup.as_deref(), Some(crio_path().as_str()));
    let rec = n.engine.containers().get(ID).expect("container record");
    assert_eq!((rec.helper_pid, rec.init_pid), (Some(conmon), Some(init)));
    assert_eq!(rec.qos.as_deref(), Some("besteffort"));
}

#[test]
fn children_of_the_init_belong_to_the_container_but_are_not_init() {
    let mut n = Node::new();
    let (_, init) = start_crio_container(&mut n);
    let mut child = ev(Kind::Fork, 120, init, "adapter");
    child.nspid = 7;
    child.pidns = CTR_NS;
    child.cgroup_id = CRIO_CG;
    let e = n.feed(child.clone());
    let p = e.process().expect("process");
    assert_eq!(p.container.as_ref().map(|c| c.id.as_str()), Some(ID));
    assert_eq!(p.role, None);
    child.comm = "sh".into();
    let e = n.exec(child, &["/bin/sh"]);
    assert_eq!(
        e.process()
            .and_then(|p| p.pod.as_ref())
            .and_then(|p| p.namespace.as_deref()),
        Some("openshift-monitoring")
    );
}

#[test]
fn tree_groups_pod_container_conmon_init_children() {
    let mut n = Node::new();
    let (conmon, init) = start_crio_container(&mut n);
    let mut child = ev(Kind::Fork, 120, init, "adapter");
    child.nspid = 7;
    child.pidns = CTR_NS;
    child.cgroup_id = CRIO_CG;
    n.feed(child);
    let view = tree::build(&n.engine, &Filter::default());
    assert_eq!(view.pods.len(), 1, "{view:#?}");
    let pod = &view.pods[0];
    assert_eq!(
        pod.name.as_deref(),
        Some("prometheus-adapter-b87c6d546-7jlzw")
    );
    let c = &pod.containers[0];
    assert_eq!(c.processes.len(), 1, "conmon is the only root: {c:#?}");
    let root = &c.processes[0];
    assert_eq!((root.pid, root.role), (conmon, Some(Role::Conmon)));
    let init_node = &root.children[0];
    assert_eq!(
        (init_node.pid, init_node.nspid, init_node.role),
        (init, 1, Some(Role::ContainerInit))
    );
    assert_eq!(
        (init_node.children[0].pid, init_node.children[0].nspid),
        (120, 7)
    );
    let text = tree::render_text(&view);
    assert!(
        text.contains("pod openshift-monitoring/prometheus-adapter-b87c6d546-7jlzw"),
        "{text}"
    );
    // Filters.
    let none = tree::build(
        &n.engine,
        &Filter {
            namespace: Some("default".into()),
            ..Filter::default()
        },
    );
    assert!(none.pods.is_empty());
    let by_prefix = tree::build(
        &n.engine,
        &Filter {
            container: Some(ID[..12].into()),
            ..Filter::default()
        },
    );
    assert_eq!(by_prefix.pods.len(), 1);
}

#[test]
fn exit_of_the_helper_copy_is_handed_over_and_exit_command_is_not_init() {
    let mut n = Node::new();
    let (conmon, init) = start_crio_container(&mut n);
    let mut e = ev(Kind::Exit, init, conmon, "adapter");
    e.nspid = 1;
    e.pidns = CTR_NS;
    e.cgroup_id = CRIO_CG;
    let out = n.exit(e, 9);
    let Event::Exit {
        exit_code,
        signal,
        process,
        ..
    } = out
    else {
        panic!("exit")
    };
    assert_eq!((exit_code, signal), (None, Some(9)));
    assert_eq!(process.role, Some(Role::ContainerInit));
    // conmon runs its exit command (e.g. `podman container cleanup`) after the init died.
    n.fork(130, conmon, "conmon");
    let e = n.exec(
        ev(Kind::Exec, 130, conmon, "podman"),
        &["/usr/bin/podman", "container", "cleanup", ID],
    );
    assert_ne!(e.process().and_then(|p| p.role), Some(Role::ContainerInit));
    assert_eq!(n.engine.containers().get(ID).and_then(|c| c.init_pid), None);
}

#[test]
fn host_processes_stay_host_processes() {
    let mut n = Node::new();
    start_crio_container(&mut n);
    let e = n.fork(200, 1, "bash");
    assert!(e.process().and_then(|p| p.container.as_ref()).is_none());
    let e = n.exec(ev(Kind::Exec, 200, 1, "ls"), &["ls"]);
    assert!(e.process().and_then(|p| p.container.as_ref()).is_none());
    assert_eq!(e.process().and_then(|p| p.role), None);
}

/// A container sharing the host pid namespace (`--pid=host`) while the host's namespace is
/// unknown (PID 1's /proc/1/ns/pid unreadable): nobody else may be attributed through it.
#[test]
fn unknown_host_pid_namespace_attributes_no_one_by_namespace() {
    let mut n = Node::new();
    n.engine.host_pidns = 0;
    let argv = conmon_argv();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    n.exec(ev(Kind::Exec, 100, 50, "conmon"), &argv);
    let mut init = ev(Kind::Fork, 110, 100, "conmon");
    init.cgroup_id = CRIO_CG;
    let e = n.exec(init, &["/podtrace", "run"]);
    assert_eq!(e.process().and_then(|p| p.role), Some(Role::ContainerInit));
    let e = n.fork(200, 1, "bash");
    assert!(
        e.process().and_then(|p| p.container.as_ref()).is_none(),
        "{e:?}"
    );
}

#[test]
fn pid_reuse_is_a_new_process() {
    let mut n = Node::new();
    let (_, init) = start_crio_container(&mut n);
    let mut gone = ev(Kind::Exit, init, 101, "adapter");
    gone.pidns = CTR_NS;
    gone.nspid = 1;
    gone.cgroup_id = CRIO_CG;
    n.exit(gone, 0);
    // Same pid, later start, on the host.
    let mut again = ev(Kind::Fork, init, 1, "bash");
    again.start_ns += 60_000_000_000;
    let e = n.feed(again);
    assert!(
        e.process().and_then(|p| p.container.as_ref()).is_none(),
        "{e:?}"
    );
}

#[test]
fn podman_exec_session_joins_the_container_without_replacing_its_monitor() {
    let mut n = Node::new();
    let (conmon, _) = start_crio_container(&mut n);
    let mut argv = conmon_argv();
    argv.push("--exec".into());
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    n.fork(300, 50, "crio");
    let e = n.exec(ev(Kind::Exec, 300, 50, "conmon"), &argv);
    assert_eq!(
        e.process()
            .and_then(|p| p.container.as_ref())
            .map(|c| c.id.as_str()),
        Some(ID)
    );
    assert_eq!(
        n.engine.containers().get(ID).and_then(|c| c.helper_pid),
        Some(conmon)
    );
    let mut sh = ev(Kind::Fork, 310, 300, "runc:[2:INIT]");
    sh.pidns = CTR_NS;
    sh.nspid = 9;
    sh.cgroup_id = CRIO_CG;
    let e = n.exec(sh, &["sh", "-c", "ps"]);
    let p = e.process().expect("process");
    assert_eq!(p.container.as_ref().map(|c| c.id.as_str()), Some(ID));
    assert_eq!(p.role, None);
}

#[test]
fn containerd_ctr_container_found_through_its_shim() {
    let mut n = Node::new();
    n.facts.cgroups.insert(7000, Some("/lab/c1".into()));
    n.fork(400, 1, "containerd");
    let e = n.exec(
        ev(Kind::Exec, 400, 1, "containerd-shim"),
        &[
            "/usr/bin/containerd-shim-runc-v2",
            "-namespace",
            "lab",
            "-id",
            "c1",
            "-address",
            "/run/containerd/containerd.sock",
        ],
    );
    assert_eq!(e.process().and_then(|p| p.role), Some(Role::Shim));
    let mut init = ev(Kind::Fork, 410, 400, "runc:[2:INIT]");
    init.nspid = 1;
    init.pidns = CTR_NS;
    init.cgroup_id = 7000;
    let e = n.exec(init, &["/bin/sleep", "1000"]);
    let p = e.process().expect("process");
    let c = p
        .container
        .as_ref()
        .expect("container from the shim's namespace and id");
    assert_eq!(
        (c.id.as_str(), c.runtime),
        ("c1", Some(crate::attribution::Runtime::Containerd))
    );
    assert_eq!(p.role, Some(Role::ContainerInit));
}

#[test]
fn snapshot_finds_running_containers() {
    let argv = conmon_argv();
    let procs = vec![
        ProcInfo {
            pid: 101,
            ppid: 1,
            start_ns: 10_000_000,
            nspid: 101,
            pidns: HOST_NS,
            uid: 0,
            gid: 0,
            comm: "conmon".into(),
            exe: Some("/usr/bin/conmon".into()),
            argv,
            cgroup: Some("/".into()),
            cgroup_id: ROOT_CG,
        },
        ProcInfo {
            pid: 110,
            ppid: 101,
            start_ns: 20_000_000,
            nspid: 1,
            pidns: CTR_NS,
            uid: 1000,
            gid: 0,
            comm: "adapter".into(),
            exe: None,
            argv: vec!["/usr/bin/adapter".into()],
            cgroup: Some(crio_path()),
            cgroup_id: CRIO_CG,
        },
        ProcInfo {
            pid: 120,
            ppid: 110,
            start_ns: 30_000_000,
            nspid: 5,
            pidns: CTR_NS,
            uid: 1000,
            gid: 0,
            comm: "sh".into(),
            exe: None,
            argv: vec!["sh".into()],
            cgroup: Some(crio_path()),
            cgroup_id: CRIO_CG,
        },
        ProcInfo {
            pid: 200,
            ppid: 1,
            start_ns: 30_000_000,
            nspid: 200,
            pidns: HOST_NS,
            uid: 0,
            gid: 0,
            comm: "bash".into(),
            exe: None,
            argv: vec!["bash".into()],
            cgroup: Some("/".into()),
            cgroup_id: ROOT_CG,
        },
    ];
    let mut n = Node::new();
    n.engine.load_snapshot(&procs, &mut n.facts);
    let c = n
        .engine
        .containers()
        .get(ID)
        .expect("container from the snapshot");
    assert_eq!((c.helper_pid, c.init_pid), (Some(101), Some(110)));
    assert_eq!(
        c.pod_name.as_deref(),
        Some("prometheus-adapter-b87c6d546-7jlzw")
    );
    assert_eq!(
        n.engine
            .table()
            .get(120)
            .and_then(|p| p.container.as_deref()),
        Some(ID)
    );
    assert_eq!(
        n.engine
            .table()
            .get(200)
            .and_then(|p| p.container.as_deref()),
        None
    );
    // An event from a process the snapshot knew keeps its identity.
    let mut e = ev(Kind::Exit, 120, 110, "sh");
    e.start_ns = 30_123_456;
    e.pidns = CTR_NS;
    e.cgroup_id = CRIO_CG;
    let out = n.exit(e, 0);
    assert_eq!(
        out.process()
            .and_then(|p| p.container.as_ref())
            .map(|c| c.id.as_str()),
        Some(ID)
    );
}

#[test]
fn lost_is_reported_with_its_count() {
    let mut n = Node::new();
    let mut out = Vec::new();
    n.engine.lost(5_000_000_000, 42, &mut out);
    assert_eq!(out.len(), 1);
    let line = serde_json::to_string(&out[0]).expect("json");
    assert_eq!(
        line,
        r#"{"type":"lost","ts":"1970-01-01T00:00:05.000000000Z","count":42}"#
    );
    assert_eq!(n.engine.stats.lost, 42);
}

#[test]
fn exited_processes_are_evicted_after_the_grace_period() {
    let mut n = Node::new();
    n.fork(500, 1, "sh");
    n.exit(ev(Kind::Exit, 500, 1, "sh"), 0);
    assert_eq!(n.engine.table().exited_len(), 1);
    n.ts += process::EXITED_GRACE_NS + 1;
    n.fork(501, 1, "sh");
    assert_eq!(n.engine.table().exited_len(), 0);
    assert!(n.engine.table().get(500).is_none());
}
