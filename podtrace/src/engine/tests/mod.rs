//! The engine from record sequences alone (no root, no kernel): what a cri-o, podman and
//! containerd node's kernel reports, in the order it reports it, with the facts answered the
//! way the live loop answers them (before each event, as records).
use std::collections::HashMap;

use super::*;
use crate::cgroups::CgroupSetup;
use crate::cri::{CriFact, CriPod};
use crate::kernel_event::{ExecPayload, ExitPayload};
use crate::trace::{CgroupFact, ClockRecord, LostKinds, ResyncStart};
use crate::view::{self as tree, Filter};

const HOST_NS: u32 = 4026531836;
const CTR_NS: u32 = 4026532500;
const ROOT_CG: u64 = 1;
const CRIO_CG: u64 = 5000;
const ID: &str = "1961af83ec2bf15ae89371edd5ebb534886c9db6bfaa385ac4fb53b4232df966";
const UID: &str = "18617999-d875-40e2-b29f-c40743f8314b";
const S: u64 = 1_000_000_000;

fn crio_path() -> String {
    format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/crio-{ID}.scope",
        UID.replace('-', "_")
    )
}

fn header(setup: CgroupSetup) -> Header {
    header_holding(setup, 0)
}

fn header_holding(setup: CgroupSetup, hold_ns: u64) -> Header {
    Header {
        format: crate::trace::FORMAT_VERSION,
        podtrace_version: "test".into(),
        kernel_release: "test".into(),
        hostname: "test".into(),
        boot_offset_ns: 0,
        host_pidns: HOST_NS,
        node: None,
        started_unix_ns: 0,
        cgroups: setup,
        hold_ns,
        segment: None,
    }
}

struct Node {
    engine: Engine,
    /// The header the engine was made from (segment state is checked against a new engine
    /// made from it).
    header: Header,
    /// Records applied so far.
    applied: u64,
    /// What the "live system" answers, per (hierarchy, id).
    facts: HashMap<(Hierarchy, u64), Option<String>>,
    /// Questions the engine asked, in order.
    asked: Vec<Question>,
    ts: u64,
    out: Vec<Event>,
}

fn ev(kind: Kind, pid: u32, ppid: u32, comm: &str) -> KernelEvent {
    let mut e = crate::trace::synth::event(kind, 0, pid, ppid, comm, ROOT_CG);
    e.start_ns = u64::from(pid) * S;
    e
}

fn in_ctr(mut e: KernelEvent, nspid: u32) -> KernelEvent {
    e.nspid = nspid;
    e.pidns = CTR_NS;
    e.cgroup_id = CRIO_CG;
    e
}

impl Node {
    fn with(setup: CgroupSetup, procs: &[ProcInfo]) -> Self {
        Self::from_header(header(setup), procs)
    }

    /// A node whose kubelet containers' events wait up to `hold_ns` for the CRI.
    fn holding(hold_ns: u64) -> Self {
        Self::from_header(header_holding(CgroupSetup::v2_only(), hold_ns), &[])
    }

    fn from_header(h: Header, procs: &[ProcInfo]) -> Self {
        let mut n = Self {
            engine: Engine::new(&h),
            header: h.clone(),
            applied: 0,
            facts: HashMap::new(),
            asked: Vec::new(),
            ts: 1_000 * S,
            out: Vec::new(),
        };
        n.facts.insert((Hierarchy::V2, ROOT_CG), Some("/".into()));
        n.facts.insert((Hierarchy::V2, CRIO_CG), Some(crio_path()));
        n.apply(Record::Header(h));
        for p in procs {
            n.apply(Record::Proc(p.clone()));
        }
        n.apply(Record::SnapshotEnd {});
        n
    }

    fn new() -> Self {
        Self::with(CgroupSetup::v2_only(), &[])
    }

    fn apply(&mut self, rec: Record) -> Vec<Event> {
        self.applied += 1;
        // Every test is also a test of segment state: at (almost) every boundary, the engine's
        // state, written as records and read back into a new engine, is the same engine.
        let copy = (self.engine.at_boundary()
            && (self.applied < 3000 || self.applied.is_multiple_of(997)))
        .then(|| restored(&self.header, &self.engine));
        let before = self.out.len();
        self.engine.apply(&rec, &mut self.out);
        if let Some(mut copy) = copy {
            let mut out = Vec::new();
            copy.apply(&rec, &mut out);
            assert_eq!(
                out,
                self.out[before..],
                "an engine put back from its state prints the same for {rec:?}"
            );
            if self.engine.at_boundary() {
                assert!(
                    state_of(&copy) == state_of(&self.engine),
                    "an engine put back from its state is the same engine after {rec:?}"
                );
            }
        }
        self.out[before..].to_vec()
    }

    /// As the live loop does: answer the engine's questions, then the event.
    fn push(&mut self, mut e: KernelEvent) -> Vec<Event> {
        self.ts += 1000;
        e.ts_ns = self.ts;
        while let Some(q) = self.engine.next_question(&e) {
            self.asked.push(q);
            let Question::CgroupPath { hierarchy, id, .. } = q;
            let path = self.facts.get(&(hierarchy, id)).cloned().flatten();
            self.apply(Record::Cgroup(CgroupFact {
                hierarchy,
                id,
                path,
            }));
            assert!(self.asked.len() < 10_000_000, "the engine keeps asking");
        }
        self.apply(Record::Event(e))
    }

    fn feed(&mut self, e: KernelEvent) -> Event {
        let out = self.push(e);
        assert_eq!(out.len(), 1, "one output event per kernel event: {out:#?}");
        out[0].clone()
    }

    fn fork(&mut self, pid: u32, ppid: u32, comm: &str) -> Event {
        self.feed(ev(Kind::Fork, pid, ppid, comm))
    }

    fn exec(&mut self, e: KernelEvent, argv: &[&str]) -> Event {
        self.feed(exec_of(e, argv))
    }

    fn exit_event(mut e: KernelEvent, status: u32) -> KernelEvent {
        e.kind = Kind::Exit;
        e.exit = Some(ExitPayload {
            status,
            duration_ns: 1,
        });
        e
    }

    fn exit(&mut self, e: KernelEvent, status: u32) -> Event {
        self.feed(Self::exit_event(e, status))
    }

    fn reap(&mut self, pid: u32, start_ns: u64) {
        let out = self.reap_out(pid, start_ns);
        assert!(
            out.is_empty(),
            "a reap of a process whose exit was seen prints nothing"
        );
    }

    fn reap_out(&mut self, pid: u32, start_ns: u64) -> Vec<Event> {
        self.ts += 1000;
        self.apply(Record::Reap(ReapEvent {
            ts_ns: self.ts,
            pid,
            start_ns,
        }))
    }

    fn lost_exit(&mut self) -> Vec<Event> {
        self.apply(Record::Lost(LostRecord {
            ts_ns: self.ts,
            count: 1,
            kinds: LostKinds {
                exit: 1,
                ..LostKinds::default()
            },
        }))
    }

    /// A resync that finds these processes (pid, ppid, nspid, pidns, argv, cgroup).
    fn resync(&mut self, procs: Vec<ProcInfo>) -> Vec<Event> {
        self.ts += 1000;
        let mut out = self.apply(Record::ResyncStart(ResyncStart { ts_ns: self.ts }));
        for p in procs {
            out.extend(self.apply(Record::Proc(p)));
        }
        out.extend(self.apply(Record::ResyncEnd(Default::default())));
        out
    }
}

/// The engine's state as records.
fn state_of(e: &Engine) -> Vec<state::StateRecord> {
    let mut v = Vec::new();
    e.dump_state(|r| {
        v.push(r);
        Ok::<(), ()>(())
    })
    .expect("collecting state");
    v
}

/// A new engine from `engine`'s state, as a segment carries it: each record written as a
/// trace line and read back.
fn restored(header: &Header, engine: &Engine) -> Engine {
    let mut h = header.clone();
    h.segment = Some(crate::trace::SegmentInfo {
        seq: 2,
        recording_started_unix_ns: 0,
    });
    let mut e = Engine::new(&h);
    let mut out = Vec::new();
    for s in state_of(engine) {
        let line = serde_json::to_string(&Record::State(s)).expect("state encodes");
        let back: Record = serde_json::from_str(&line).expect("state decodes");
        e.apply(&back, &mut out);
    }
    e.apply(&Record::StateEnd {}, &mut out);
    assert!(out.is_empty(), "putting state back prints nothing: {out:?}");
    assert!(e.at_boundary());
    e
}

/// `e` as an exec of `argv`.
fn exec_of(mut e: KernelEvent, argv: &[&str]) -> KernelEvent {
    e.kind = Kind::Exec;
    e.exec = Some(ExecPayload {
        filename: argv.first().copied().unwrap_or("").to_string(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        argv_truncated: false,
        filename_truncated: false,
        trimmed: false,
    });
    e
}

fn container_id(e: &Event) -> Option<&str> {
    e.process()
        .and_then(|p| p.container.as_ref())
        .map(|c| c.id.as_str())
}

fn role(e: &Event) -> Option<Role> {
    e.process().and_then(|p| p.role)
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
    assert_eq!(role(&e), Some(Role::Conmon));
    // conmon daemonizes: the forked copy is the monitor, the exec'd one exits.
    n.fork(101, 100, "conmon");
    n.exit(ev(Kind::Exit, 100, 50, "conmon"), 0);
    n.reap(100, 100 * S);
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
    assert_eq!(role(&e), Some(Role::Runtime));
    let mut init = in_ctr(ev(Kind::Fork, 110, 102, "runc:[2:INIT]"), 1);
    n.feed(init.clone());
    n.exit(ev(Kind::Exit, 102, 101, "runc"), 0);
    n.reap(102, 102 * S);
    init.ppid = 101;
    init.comm = "adapter".into();
    let e = n.exec(
        init,
        &["/usr/bin/adapter", "--config=/etc/adapter/config.yaml"],
    );
    (101, e.process().map(|p| p.pid).unwrap_or(0))
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
    assert_eq!(process.cgroup_hierarchy.as_deref(), Some("v2"));
    let rec = n.engine.containers().get(ID).expect("container record");
    assert_eq!((rec.helper_pid, rec.init_pid), (Some(conmon), Some(init)));
    assert_eq!(rec.qos.as_deref(), Some("besteffort"));
}

#[test]
fn children_of_the_init_belong_to_the_container_but_are_not_init() {
    let mut n = Node::new();
    let (_, init) = start_crio_container(&mut n);
    let child = in_ctr(ev(Kind::Fork, 120, init, "adapter"), 7);
    let e = n.feed(child.clone());
    assert_eq!(container_id(&e), Some(ID));
    assert_eq!(role(&e), None);
    let mut child = child;
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
fn tree_groups_pod_container_conmon_init_children_and_shows_zombies() {
    let mut n = Node::new();
    let (conmon, init) = start_crio_container(&mut n);
    n.feed(in_ctr(ev(Kind::Fork, 120, init, "adapter"), 7));
    let view = tree::tree(&n.engine, &Filter::default());
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
    let text = tree::text::render_text(&view);
    assert!(
        text.contains("pod openshift-monitoring/prometheus-adapter-b87c6d546-7jlzw"),
        "{text}"
    );
    // The child exits and its parent (the init) does not reap it: a zombie, as ps shows it.
    n.exit(in_ctr(ev(Kind::Exit, 120, init, "adapter"), 7), 0);
    let view = tree::tree(&n.engine, &Filter::default());
    let zombie = &view.pods[0].containers[0].processes[0].children[0].children[0];
    assert!(zombie.zombie, "{zombie:#?}");
    let text = tree::text::render_text(&view);
    assert!(text.contains("[adapter] <defunct>"), "{text}");
    n.reap(120, 120 * S);
    let view = tree::tree(&n.engine, &Filter::default());
    assert!(
        view.pods[0].containers[0].processes[0].children[0]
            .children
            .is_empty(),
        "reaped: gone from the tree"
    );
    // Filters.
    let none = tree::tree(
        &n.engine,
        &Filter {
            namespace: Some("default".into()),
            ..Filter::default()
        },
    );
    assert!(none.pods.is_empty());
    let by_prefix = tree::tree(
        &n.engine,
        &Filter {
            container: Some(ID[..12].into()),
            ..Filter::default()
        },
    );
    assert_eq!(by_prefix.pods.len(), 1);
}

#[test]
fn exit_of_the_init_and_the_exit_command_is_not_init() {
    let mut n = Node::new();
    let (conmon, init) = start_crio_container(&mut n);
    let out = n.exit(in_ctr(ev(Kind::Exit, init, conmon, "adapter"), 1), 9);
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
    n.reap(init, u64::from(init) * S);
    // conmon runs its exit command (e.g. `podman container cleanup`) after the init died.
    n.fork(130, conmon, "conmon");
    let e = n.exec(
        ev(Kind::Exec, 130, conmon, "podman"),
        &["/usr/bin/podman", "container", "cleanup", ID],
    );
    assert_ne!(role(&e), Some(Role::ContainerInit));
    assert_eq!(n.engine.containers().get(ID).and_then(|c| c.init_pid), None);
}

#[test]
fn host_processes_stay_host_processes() {
    let mut n = Node::new();
    start_crio_container(&mut n);
    let e = n.fork(200, 1, "bash");
    assert!(container_id(&e).is_none());
    let e = n.exec(ev(Kind::Exec, 200, 1, "ls"), &["ls"]);
    assert!(container_id(&e).is_none());
    assert_eq!(role(&e), None);
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
    assert_eq!(role(&e), Some(Role::ContainerInit));
    let e = n.fork(200, 1, "bash");
    assert!(container_id(&e).is_none(), "{e:?}");
}

#[test]
fn pid_reuse_is_a_new_process() {
    let mut n = Node::new();
    let (_, init) = start_crio_container(&mut n);
    n.exit(in_ctr(ev(Kind::Exit, init, 101, "adapter"), 1), 0);
    n.reap(init, u64::from(init) * S);
    // Same pid, later start, on the host.
    let mut again = ev(Kind::Fork, init, 1, "bash");
    again.start_ns += 60 * S;
    let e = n.feed(again);
    assert!(container_id(&e).is_none(), "{e:?}");
}

#[test]
fn a_stale_exit_of_an_older_process_leaves_the_newer_one_alone() {
    let mut n = Node::new();
    let (_, init) = start_crio_container(&mut n);
    // pid 300 in the container, whose exit was queued while the newer 300 was already read.
    let mut newer = ev(Kind::Fork, 300, 1, "bash");
    newer.start_ns = 500 * S;
    n.feed(newer.clone());
    let mut stale = in_ctr(ev(Kind::Exit, 300, init, "sh"), 9);
    stale.start_ns = 400 * S;
    let out = n.exit(stale, 0);
    assert_eq!(
        out.process().map(|p| p.start_ns),
        Some(400 * S),
        "printed as the older process"
    );
    assert_eq!(container_id(&out), Some(ID), "attributed by its own cgroup");
    let p = n.engine.table().get(300).expect("the newer process stays");
    assert_eq!(p.start_ns, 500 * S);
    assert!(!p.is_zombie(), "the stale exit did not end it");
    assert_eq!(n.engine.stats.stale_events, 1);
    // The newer process's own exit is printed as usual.
    let mut exit = newer;
    exit.kind = Kind::Exit;
    let out = n.exit(exit, 0);
    assert_eq!(out.process().map(|p| p.start_ns), Some(500 * S));
}

#[test]
fn one_exit_per_process_a_second_is_dropped() {
    let mut n = Node::new();
    n.fork(400, 1, "sh");
    n.exit(ev(Kind::Exit, 400, 1, "sh"), 3 << 8);
    let again = n.push(Node::exit_event(ev(Kind::Exit, 400, 1, "sh"), 3 << 8));
    assert!(again.is_empty(), "duplicate exit printed: {again:?}");
    n.reap(400, 400 * S);
    let late = n.push(Node::exit_event(ev(Kind::Exit, 400, 1, "sh"), 3 << 8));
    assert!(late.is_empty(), "an exit after the reap: {late:?}");
    assert_eq!(n.engine.stats.duplicate_exits, 2);
}

#[test]
fn exec_from_a_non_leader_thread_is_the_same_process() {
    let mut n = Node::new();
    n.fork(410, 1, "app");
    let mut e = ev(Kind::Exec, 410, 1, "app");
    e.tid = 415;
    let out = n.exec(e, &["/bin/true"]);
    assert_eq!(out.process().map(|p| (p.pid, p.tid)), Some((410, 415)));
    assert_eq!(n.engine.table().live_len(), 1);
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
    assert_eq!(container_id(&e), Some(ID));
    assert_eq!(
        n.engine.containers().get(ID).and_then(|c| c.helper_pid),
        Some(conmon)
    );
    let sh = in_ctr(ev(Kind::Fork, 310, 300, "runc:[2:INIT]"), 9);
    let e = n.exec(sh, &["sh", "-c", "ps"]);
    assert_eq!(container_id(&e), Some(ID));
    assert_eq!(role(&e), None);
}

#[test]
fn containerd_ctr_container_found_through_its_shim() {
    let mut n = Node::new();
    n.facts
        .insert((Hierarchy::V2, 7000), Some("/lab/c1".into()));
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
    assert_eq!(role(&e), Some(Role::Shim));
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

fn info(
    pid: u32,
    ppid: u32,
    nspid: u32,
    pidns: u32,
    argv: &[&str],
    cgroup: (&str, u64),
) -> ProcInfo {
    ProcInfo {
        pid,
        ppid,
        start_ns: u64::from(pid) * 10_000_000,
        nspid,
        pidns,
        uid: 0,
        gid: 0,
        comm: argv[0]
            .rsplit('/')
            .next()
            .unwrap_or("x")
            .chars()
            .take(15)
            .collect(),
        exe: argv.first().map(|a| a.to_string()),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        argv_truncated: false,
        zombie: false,
        cgroup: Some(cgroup.0.to_string()),
        cgroup_id: cgroup.1,
        cgroup_v1: None,
        cgroup_v1_id: 0,
    }
}

#[test]
fn snapshot_finds_running_containers() {
    let argv = conmon_argv();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let crio = crio_path();
    let procs = vec![
        info(101, 1, 101, HOST_NS, &argv, ("/", ROOT_CG)),
        info(110, 101, 1, CTR_NS, &["/usr/bin/adapter"], (&crio, CRIO_CG)),
        info(120, 110, 5, CTR_NS, &["sh"], (&crio, CRIO_CG)),
        info(200, 1, 200, HOST_NS, &["bash"], ("/", ROOT_CG)),
    ];
    let mut n = Node::with(CgroupSetup::v2_only(), &procs);
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
    let table = n.engine.table();
    assert_eq!(
        table.get(120).and_then(|p| p.container.as_deref()),
        Some(ID)
    );
    assert_eq!(table.get(200).and_then(|p| p.container.as_deref()), None);
    assert!(n.asked.is_empty(), "the snapshot brought its own cgroups");
    // An event from a process the snapshot knew keeps its identity.
    let mut e = in_ctr(ev(Kind::Exit, 120, 110, "sh"), 5);
    e.start_ns = 1_200_123_456;
    let out = n.exit(e, 0);
    assert_eq!(container_id(&out), Some(ID));
}

#[test]
fn a_pid_namespace_made_inside_a_container_is_nested_not_a_new_init() {
    let mut n = Node::new();
    let (_, init) = start_crio_container(&mut n);
    // `unshare --pid --fork` in the container: the shell forks unshare, which forks the
    // PID 1 of a new namespace.
    let sh = in_ctr(ev(Kind::Fork, 500, init, "sh"), 20);
    n.feed(sh);
    let mut nested = in_ctr(ev(Kind::Fork, 501, 500, "unshare"), 1);
    nested.pidns = CTR_NS + 1;
    let e = n.feed(nested.clone());
    assert_eq!(container_id(&e), Some(ID), "still in the container");
    assert_eq!(
        role(&e),
        None,
        "a nested namespace's PID 1 is not the container's init"
    );
    let mut inner = in_ctr(ev(Kind::Fork, 502, 501, "sleep"), 2);
    inner.pidns = CTR_NS + 1;
    inner.cgroup_id = 9999; // a cgroup the engine cannot resolve: attributed by its parent
    let e = n.feed(inner);
    assert_eq!(container_id(&e), Some(ID));
    let c = n.engine.containers().get(ID).expect("container");
    assert_eq!((c.init_pid, c.pidns), (Some(init), Some(CTR_NS)));
    // The nested PID 1 ends: the container does not.
    let mut gone = nested;
    gone.kind = Kind::Exit;
    n.exit(gone, 0);
    let c = n.engine.containers().get(ID).expect("container");
    assert_eq!(c.init_pid, Some(init));
    assert!(c.finished_ns.is_none());
}

#[test]
fn a_shared_pid_namespace_belongs_to_the_pod() {
    // containerd CRI pod with shareProcessNamespace: one shim (the sandbox's), pause is PID 1
    // of the pod's namespace, the containers' inits are ordinary pids in it.
    let sandbox = "a".repeat(64);
    let work = "b".repeat(64);
    let pod = format!("/kubepods/besteffort/pod{UID}");
    let mut n = Node::new();
    n.facts
        .insert((Hierarchy::V2, 8001), Some(format!("{pod}/{sandbox}")));
    n.facts
        .insert((Hierarchy::V2, 8002), Some(format!("{pod}/{work}")));
    n.fork(600, 1, "containerd-shim");
    n.exec(
        ev(Kind::Exec, 600, 1, "containerd-shim"),
        &[
            "/usr/bin/containerd-shim-runc-v2",
            "-namespace",
            "k8s.io",
            "-id",
            &sandbox,
        ],
    );
    let mut pause = ev(Kind::Fork, 610, 600, "pause");
    (pause.nspid, pause.pidns, pause.cgroup_id) = (1, CTR_NS, 8001);
    let e = n.exec(pause, &["/pause"]);
    assert_eq!(role(&e), Some(Role::ContainerInit));
    let mut w = ev(Kind::Fork, 620, 600, "sleep");
    (w.nspid, w.pidns, w.cgroup_id) = (2, CTR_NS, 8002);
    let e = n.exec(w, &["/bin/sleep", "600"]);
    assert_eq!(container_id(&e), Some(work.as_str()));
    assert_eq!(
        role(&e),
        Some(Role::ContainerInit),
        "first child of the pod's shim"
    );
    // A process in the shared namespace whose cgroup says nothing, with no known parent:
    // the pod is known, the container is not.
    let mut stray = ev(Kind::Fork, 630, 9, "sh");
    (stray.nspid, stray.pidns, stray.cgroup_id) = (3, CTR_NS, 0);
    let e = n.feed(stray);
    let p = e.process().expect("process");
    assert!(p.container.is_none(), "{p:?}");
    assert_eq!(
        p.pod.as_ref().and_then(|p| p.uid.as_deref()),
        Some(UID),
        "the pod of the shared namespace"
    );
}

#[test]
fn v1_only_nodes_place_processes_by_their_v1_cgroup() {
    let setup = CgroupSetup {
        v2: false,
        v1: Some("pids".into()),
    };
    let mut n = Node::with(setup, &[]);
    n.facts.insert((Hierarchy::V1, 77), Some(crio_path()));
    let mut e = ev(Kind::Fork, 700, 1, "sh");
    e.cgroup_id = ROOT_CG; // the unmounted default hierarchy's root, as the kernel says
    e.cgroup_v1_id = 77;
    let out = n.feed(e);
    let p = out.process().expect("process");
    assert_eq!(p.cgroup.as_deref(), Some(crio_path().as_str()));
    assert_eq!(p.cgroup_hierarchy.as_deref(), Some("v1:pids"));
    assert_eq!(p.cgroup_id, Some(77));
    assert_eq!(container_id(&out), Some(ID));
    assert_eq!(
        n.asked,
        [Question::CgroupPath {
            hierarchy: Hierarchy::V1,
            id: 77,
            pid: 700
        }],
        "nothing is asked of a hierarchy the node does not use"
    );
}

#[test]
fn hybrid_nodes_prefer_v2_and_use_v1_for_tasks_in_the_v2_root() {
    let setup = CgroupSetup {
        v2: true,
        v1: Some("pids".into()),
    };
    let mut n = Node::with(setup, &[]);
    n.facts
        .insert((Hierarchy::V1, 90), Some("/libpod_parent/conmon".into()));
    n.facts
        .insert((Hierarchy::V1, 91), Some("/elsewhere".into()));
    // conmon: v2 root, v1 in podman's conmon cgroup.
    let mut conmon = ev(Kind::Fork, 800, 1, "conmon");
    conmon.cgroup_v1_id = 90;
    let out = n.feed(conmon);
    let p = out.process().expect("process");
    assert_eq!(
        (p.cgroup.as_deref(), p.cgroup_hierarchy.as_deref()),
        (Some("/libpod_parent/conmon"), Some("v1:pids"))
    );
    assert_eq!(role(&out), Some(Role::Conmon), "podman's conmon cgroup");
    // A container process: its v2 cgroup says; v1 is not even asked.
    n.asked.clear();
    let mut c = ev(Kind::Fork, 801, 1, "app");
    c.cgroup_id = CRIO_CG;
    c.cgroup_v1_id = 91;
    let out = n.feed(c);
    let p = out.process().expect("process");
    assert_eq!(p.cgroup_hierarchy.as_deref(), Some("v2"));
    assert_eq!(container_id(&out), Some(ID));
    assert!(
        n.asked.iter().all(|q| matches!(
            q,
            Question::CgroupPath {
                hierarchy: Hierarchy::V2,
                ..
            }
        )),
        "{:?}",
        n.asked
    );
}

#[test]
fn an_unresolvable_cgroup_is_asked_again_only_after_the_retry_time() {
    let mut n = Node::new();
    n.fork(899, 1, "first"); // the root cgroup, asked once
    let asked_of = |n: &Node| {
        n.asked
            .iter()
            .filter(|q| matches!(q, Question::CgroupPath { id: 12345, .. }))
            .count()
    };
    let mut e = ev(Kind::Fork, 900, 1, "x");
    e.cgroup_id = 12345;
    n.feed(e.clone());
    assert_eq!(asked_of(&n), 1);
    let mut e2 = e.clone();
    e2.pid = 901;
    e2.start_ns = 901 * S;
    n.feed(e2);
    assert_eq!(asked_of(&n), 1, "within the retry time: not asked again");
    // Retry time is judged at the engine's time (the latest record), so the same answer is
    // learnt at the same time live and in replay.
    n.ts += cgroups::RETRY_NS;
    n.fork(903, 1, "tick");
    let mut e3 = e;
    e3.pid = 902;
    e3.start_ns = 902 * S;
    let out = n.feed(e3);
    assert_eq!(asked_of(&n), 2, "{:?}", n.asked);
    let p = out.process().expect("process");
    assert_eq!(
        (p.cgroup.as_deref(), p.cgroup_id),
        (None, None),
        "not placed: no cgroup, and no id of some other hierarchy either"
    );
}

/// `cgroup_id` is the id in `cgroup_hierarchy`'s hierarchy, or null with it: never the id of
/// another hierarchy (on a v1-only node the kernel's v2 id is the unmounted v2 root's, the
/// same for every task).
#[test]
fn cgroup_id_is_of_the_hierarchy_named_or_null() {
    // As printed: (cgroup_hierarchy, cgroup_id).
    let printed = |out: &Event| {
        let v = serde_json::to_value(out).expect("json");
        (v["cgroup_hierarchy"].clone(), v["cgroup_id"].clone())
    };
    let null = serde_json::Value::Null;
    let setup = CgroupSetup {
        v2: false,
        v1: Some("pids".into()),
    };
    let mut n = Node::with(setup, &[]);
    n.facts.insert((Hierarchy::V1, 77), Some(crio_path()));
    // A v1 cgroup nobody can name (it went away): unplaced.
    n.facts.insert((Hierarchy::V1, 78), None);
    let mut e = ev(Kind::Fork, 710, 1, "sh");
    e.cgroup_id = ROOT_CG;
    e.cgroup_v1_id = 78;
    let out = n.feed(e);
    assert_eq!(printed(&out), (null.clone(), null.clone()));
    let mut e = ev(Kind::Fork, 711, 1, "sh");
    e.cgroup_id = ROOT_CG;
    e.cgroup_v1_id = 77;
    let out = n.feed(e);
    assert_eq!(printed(&out), ("v1:pids".into(), 77.into()));

    // Hybrid: a task in the v2 root placed by its v1 cgroup carries the v1 id; one placed by
    // v2, the v2 id; one placed nowhere, null.
    let setup = CgroupSetup {
        v2: true,
        v1: Some("pids".into()),
    };
    let mut n = Node::with(setup, &[]);
    n.facts
        .insert((Hierarchy::V1, 90), Some("/libpod_parent/conmon".into()));
    let mut conmon = ev(Kind::Fork, 800, 1, "conmon");
    conmon.cgroup_v1_id = 90;
    let out = n.feed(conmon);
    assert_eq!(printed(&out), ("v1:pids".into(), 90.into()));
    let mut c = ev(Kind::Fork, 801, 1, "app");
    c.cgroup_id = CRIO_CG;
    let out = n.feed(c);
    assert_eq!(printed(&out), ("v2".into(), CRIO_CG.into()));
    let mut lost = ev(Kind::Fork, 802, 1, "app");
    lost.cgroup_id = 4242; // unknown to the resolver
    let out = n.feed(lost);
    assert_eq!(printed(&out), (null.clone(), null));
}

#[test]
fn a_loss_then_a_resync_drops_the_dead_and_adds_the_unseen() {
    let mut n = Node::new();
    let (_, init) = start_crio_container(&mut n);
    n.fork(1000, 1, "a"); // dies with its exit lost
    n.fork(1001, 1, "b"); // lives
    let out = n.apply(Record::Lost(LostRecord {
        ts_ns: n.ts,
        count: 3,
        kinds: LostKinds {
            exit: 1,
            fork: 2,
            ..LostKinds::default()
        },
    }));
    let line = serde_json::to_string(&out[0]).expect("json");
    assert!(
        line.contains(r#""count":3,"kinds":{"exec":0,"fork":2,"exit":1,"reap":0,"thread":0}"#),
        "{line}"
    );
    // /proc now: b, the container, and c (whose fork was lost), not a.
    let ts = n.ts + 1;
    let crio = crio_path();
    let mut procs = vec![
        info(101, 1, 101, HOST_NS, &["/usr/bin/conmon"], ("/", ROOT_CG)),
        info(
            init,
            101,
            1,
            CTR_NS,
            &["/usr/bin/adapter"],
            (&crio, CRIO_CG),
        ),
        info(1001, 1, 1001, HOST_NS, &["b"], ("/", ROOT_CG)),
        info(1002, init, 9, CTR_NS, &["c"], (&crio, CRIO_CG)),
    ];
    for p in &mut procs {
        p.start_ns = u64::from(p.pid) * S;
    }
    n.apply(Record::ResyncStart(ResyncStart { ts_ns: ts }));
    for p in procs {
        n.apply(Record::Proc(p));
    }
    n.apply(Record::ResyncEnd(Default::default()));
    let t = n.engine.table();
    assert!(t.get(1000).is_none(), "a is gone");
    assert!(t.get(1001).is_some());
    assert_eq!(
        t.get(1002).and_then(|p| p.container.as_deref()),
        Some(ID),
        "c added, attributed"
    );
    assert_eq!(
        (n.engine.stats.vanished, n.engine.stats.resync_added),
        (1, 1)
    );
    // a's exit arrives after all (it was queued): printed once, as a.
    let out = n.push(Node::exit_event(ev(Kind::Exit, 1000, 1, "a"), 0));
    assert_eq!(out.len(), 1);
    let out = n.push(Node::exit_event(ev(Kind::Exit, 1000, 1, "a"), 0));
    assert!(out.is_empty(), "and only once");
}

/// The CRI's answer for the cri-o container `ID` of pod `UID`, named `pod`.
fn crio_answer(pod: &str) -> CriFact {
    CriFact {
        id: ID.into(),
        sandbox: false,
        name: Some("prometheus-adapter".into()),
        attempt: Some(0),
        image: Some("quay.io/openshift/adapter:4.12".into()),
        image_id: Some("sha256:abc".into()),
        pod: Some(CriPod {
            sandbox_id: "f".repeat(64),
            name: pod.into(),
            namespace: "openshift-monitoring".into(),
            uid: UID.into(),
            labels: None,
            annotations: None,
        }),
    }
}

#[test]
fn cri_answers_name_the_container_and_win_over_argv() {
    let mut n = Node::new();
    start_crio_container(&mut n);
    n.apply(Record::Cri(crio_answer("prometheus-adapter-renamed")));
    let e = n.fork(150, 110, "adapter");
    let p = e.process().expect("process");
    let c = p.container.as_ref().expect("container");
    assert_eq!(c.image.as_deref(), Some("quay.io/openshift/adapter:4.12"));
    assert_eq!(c.image_id.as_deref(), Some("sha256:abc"));
    assert_eq!(
        p.pod.as_ref().and_then(|p| p.name.as_deref()),
        Some("prometheus-adapter-renamed")
    );
    assert_eq!(n.engine.containers().stats.cri_disagreements, 1);
}

#[test]
fn a_new_container_is_asked_of_the_cri_once_and_forgotten_when_dropped() {
    let mut n = Node::new();
    start_crio_container(&mut n);
    let asked: Vec<Request> = n.engine.take_requests();
    let lookups = asked
        .iter()
        .filter(|r| matches!(r, Request::CriLookup(id) if &**id == ID))
        .count();
    assert_eq!(lookups, 1, "{asked:?}");
    // Everything in it ends; the container goes after its grace.
    for (pid, ppid) in [(110, 101), (101, 1)] {
        let e = if pid == 110 {
            in_ctr(ev(Kind::Exit, pid, ppid, "x"), 1)
        } else {
            ev(Kind::Exit, pid, ppid, "conmon")
        };
        n.exit(e, 0);
        n.reap(pid, u64::from(pid) * S);
    }
    n.ts += CONTAINER_GRACE_NS + 2 * S;
    n.fork(5000, 1, "later");
    assert!(n.engine.containers().get(ID).is_none());
    assert!(n
        .engine
        .take_requests()
        .iter()
        .any(|r| matches!(r, Request::CriForget(id) if &**id == ID)));
}

#[test]
fn a_clock_step_moves_later_timestamps() {
    let mut n = Node::new();
    let e = n.fork(1100, 1, "x");
    let before = e.process().map(|p| p.ts.to_string()).expect("ts");
    n.apply(Record::Clock(ClockRecord {
        ts_ns: n.ts,
        offset_ns: 3600 * S as i64,
    }));
    let e = n.fork(1101, 1, "y");
    let after = e.process().map(|p| p.ts.to_string()).expect("ts");
    assert!(before.starts_with("1970-01-01T00:"), "{before}");
    assert!(after.starts_with("1970-01-01T01:"), "{after}");
}

#[test]
fn malformed_records_and_loss_are_in_the_stream() {
    let mut n = Node::new();
    let out = n.apply(Record::Malformed(crate::trace::MalformedRecord {
        ts_ns: 5 * S,
        bytes: 7,
        reason: "record of 7 bytes is shorter than its 88-byte header".into(),
    }));
    assert_eq!(
        serde_json::to_string(&out[0]).expect("json"),
        r#"{"type":"malformed","ts":"1970-01-01T00:00:05.000000000Z","bytes":7,"reason":"record of 7 bytes is shorter than its 88-byte header"}"#
    );
    let out = n.apply(Record::Lost(LostRecord {
        ts_ns: 5 * S,
        count: 42,
        kinds: LostKinds {
            exec: 42,
            ..LostKinds::default()
        },
    }));
    assert_eq!(
        serde_json::to_string(&out[0]).expect("json"),
        r#"{"type":"lost","ts":"1970-01-01T00:00:05.000000000Z","count":42,"kinds":{"exec":42,"fork":0,"exit":0,"reap":0,"thread":0}}"#
    );
    assert_eq!((n.engine.stats.lost, n.engine.stats.malformed), (42, 1));
}

#[test]
fn processes_that_left_are_evicted_after_the_grace_period() {
    let mut n = Node::new();
    n.fork(500, 1, "sh");
    n.exit(ev(Kind::Exit, 500, 1, "sh"), 0);
    assert!(n.engine.table().get(500).is_some_and(|p| p.is_zombie()));
    n.reap(500, 500 * S);
    assert!(n.engine.table().get(500).is_none());
    assert_eq!(n.engine.table().gone_len(), 1);
    n.ts += process::GONE_GRACE_NS + 1;
    n.fork(501, 1, "sh");
    assert_eq!(n.engine.table().gone_len(), 0);
}

/// 20,000 short-lived cgroups (one process each, run, exit, reaped): the engine's tables end
/// where they started once the grace periods pass.
#[test]
fn cgroup_churn_leaves_nothing_behind() {
    let mut n = Node::new();
    let base = (
        n.engine.cgroup_cache().len(),
        n.engine.containers().len(),
        n.engine.table().live_len(),
    );
    for i in 0..20_000u32 {
        let id = 100_000 + u64::from(i);
        let ctr = format!("{:064x}", u64::from(i) + 1);
        n.facts.insert(
            (Hierarchy::V2, id),
            Some(format!("/kubepods/besteffort/pod{UID}/{ctr}")),
        );
        let pid = 10_000 + i;
        let mut f = ev(Kind::Fork, pid, 1, "runc");
        f.cgroup_id = id;
        f.start_ns = n.ts;
        n.feed(f.clone());
        n.exit(f.clone(), 0);
        n.reap(pid, f.start_ns);
        n.ts += 5_000_000; // 200 cgroups a second
    }
    n.ts += CONTAINER_GRACE_NS.max(cgroups::IDLE_GRACE_NS) + 2 * S;
    n.fork(9, 1, "tick");
    n.ts += 2 * S;
    n.fork(8, 1, "tick");
    assert!(
        n.engine.cgroup_cache().len() <= base.0 + 2,
        "cgroups: {}",
        n.engine.cgroup_cache().len()
    );
    assert_eq!(n.engine.containers().len(), base.1, "containers");
    assert_eq!(n.engine.table().live_len(), base.2 + 2, "processes");
    assert_eq!(n.engine.containers().pidns_len(), 0);
    assert_eq!(n.engine.table().children_len(), n.engine.table().live_len());
}

#[test]
fn replaying_the_same_records_gives_the_same_events() {
    let run = || {
        let mut n = Node::new();
        start_crio_container(&mut n);
        n.fork(2000, 110, "sh");
        n.out
            .iter()
            .map(|e| serde_json::to_string(e).expect("json"))
            .collect::<Vec<_>>()
    };
    assert_eq!(run(), run());
}

/// As printed: the fields of an exit that say what is known of how it ended.
fn exit_outcome(e: &Event) -> serde_json::Value {
    let v = serde_json::to_value(e).expect("json");
    serde_json::json!({
        "type": v["type"],
        "pid": v["pid"],
        "exit_code": v["exit_code"],
        "signal": v["signal"],
        "core_dumped": v["core_dumped"],
        "duration_ns": v["duration_ns"],
        "inferred": v["inferred"],
    })
}

/// A lost exit, then the process's reap: the process ended all the same, so it gets its
/// exit line, one whose outcome is unknown (null) and which says it was inferred; the reap of
/// a process whose exit was seen still prints nothing, and that exit says it was not inferred.
#[test]
fn a_lost_exit_then_its_reap_prints_an_inferred_exit() {
    let mut n = Node::new();
    let (_, init) = start_crio_container(&mut n);
    n.feed(in_ctr(ev(Kind::Fork, 1200, init, "worker"), 5));
    n.lost_exit();
    let out = n.reap_out(1200, 1200 * S);
    assert_eq!(out.len(), 1, "{out:#?}");
    assert_eq!(
        exit_outcome(&out[0]),
        serde_json::json!({"type": "exit", "pid": 1200, "exit_code": null, "signal": null,
            "core_dumped": null, "duration_ns": null, "inferred": true})
    );
    let p = out[0].process().expect("process");
    assert_eq!(
        container_id(&out[0]),
        Some(ID),
        "attributed as its other events"
    );
    assert_eq!(p.ts, Timestamp(n.ts as i64), "stamped with the reap's time");
    assert!(n.engine.table().get(1200).is_none(), "reaped");
    // Its real exit, should it come after all, is the second exit of the process: dropped.
    let late = n.push(Node::exit_event(
        in_ctr(ev(Kind::Exit, 1200, init, "worker"), 5),
        0,
    ));
    assert!(late.is_empty(), "{late:#?}");
    // An exit that was seen: not inferred, and its reap prints nothing.
    n.fork(1201, 1, "sh");
    let e = n.exit(ev(Kind::Exit, 1201, 1, "sh"), 0);
    assert_eq!(
        exit_outcome(&e),
        serde_json::json!({"type": "exit", "pid": 1201, "exit_code": 0, "signal": null,
            "core_dumped": false, "duration_ns": 1, "inferred": false})
    );
    n.reap(1201, 1201 * S);
}

/// A resync that finds a process gone whose exit was never seen: its exit may still be on its
/// way (queued behind the records read so far), so it is printed when it comes; when it has
/// not come once the records are a second past the resync, an inferred exit is printed,
/// stamped with the resync's time. Once either way.
#[test]
fn a_resync_that_finds_a_process_gone_infers_its_exit_unless_it_comes() {
    let mut n = Node::new();
    n.ts = 5_000 * S; // after every start below: the resync may find them gone
    n.fork(1300, 1, "late"); // its exit comes after the resync
    n.fork(1301, 1, "lost"); // its exit never comes
    n.fork(1302, 1, "lives");
    n.lost_exit();
    let mut alive = info(1302, 1, 1302, HOST_NS, &["lives"], ("/", ROOT_CG));
    alive.start_ns = 1302 * S;
    let out = n.resync(vec![alive]);
    assert!(out.is_empty(), "nothing printed at the resync: {out:#?}");
    let resync_ts = n.ts;
    let out = n.push(Node::exit_event(ev(Kind::Exit, 1300, 1, "late"), 0));
    assert_eq!(
        out.iter().map(exit_outcome).collect::<Vec<_>>(),
        [
            serde_json::json!({"type": "exit", "pid": 1300, "exit_code": 0, "signal": null,
            "core_dumped": false, "duration_ns": 1, "inferred": false})
        ]
    );
    // Within the second: nothing yet.
    n.ts = resync_ts + S / 2;
    let out = n.push(ev(Kind::Fork, 1303, 1, "tick"));
    assert_eq!(out.len(), 1, "{out:#?}");
    // Past it: the inferred exit of 1301, before the event that moved the time on.
    n.ts = resync_ts + S;
    let out = n.push(ev(Kind::Fork, 1304, 1, "tick"));
    assert_eq!(
        out.iter().map(exit_outcome).collect::<Vec<_>>(),
        [
            serde_json::json!({"type": "exit", "pid": 1301, "exit_code": null, "signal": null,
                "core_dumped": null, "duration_ns": null, "inferred": true}),
            serde_json::json!({"type": "fork", "pid": 1304, "exit_code": null, "signal": null,
                "core_dumped": null, "duration_ns": null, "inferred": null}),
        ]
    );
    assert_eq!(
        out[0].process().map(|p| p.ts),
        Some(Timestamp(resync_ts as i64)),
        "stamped with the resync's time"
    );
    // Its real exit, should it come after all: dropped.
    let late = n.push(Node::exit_event(ev(Kind::Exit, 1301, 1, "lost"), 0));
    assert!(late.is_empty(), "{late:#?}");
    n.ts += 2 * S;
    let out = n.push(ev(Kind::Fork, 1305, 1, "tick"));
    assert_eq!(out.len(), 1, "once: {out:#?}");
}

/// An inferred exit still waiting when the trace ends is printed at its end (live and in
/// replay alike: both apply the `end` record).
#[test]
fn inferred_exits_still_waiting_are_printed_at_the_end() {
    let mut n = Node::new();
    n.ts = 5_000 * S; // after every start below: the resync may find them gone
    n.fork(1400, 1, "lost");
    n.lost_exit();
    n.resync(Vec::new());
    let out = n.apply(Record::End(crate::trace::EndRecord { events: 1, lost: 1 }));
    assert_eq!(
        out.iter().map(exit_outcome).collect::<Vec<_>>(),
        [
            serde_json::json!({"type": "exit", "pid": 1400, "exit_code": null, "signal": null,
            "core_dumped": null, "duration_ns": null, "inferred": true})
        ]
    );
}

/// The processes a resync finds gone leave in pid order, whatever order the table's hash map
/// holds them in: what depends on that order (which of them the bound on processes that left
/// drops first) is the same after a change of hasher.
#[test]
fn a_resync_drops_the_gone_in_pid_order() {
    let mut n = Node::new();
    n.ts = 5_000 * S; // after every start below: the resync may find them gone
    let pids: Vec<u32> = (0..200u32).map(|i| 3000 + (i * 7919) % 1000).collect();
    for &pid in &pids {
        n.fork(pid, 1, "x");
    }
    n.lost_exit();
    n.resync(Vec::new());
    let gone: Vec<u32> = n
        .engine
        .table()
        .gone()
        .map(|p| p.pid)
        .filter(|p| (3000..4000).contains(p))
        .collect();
    let mut sorted = pids.clone();
    sorted.sort_unstable();
    assert_eq!(gone, sorted);
}

/// A process found gone whose entry the bound on processes that left dropped before its real
/// exit came: the real exit is printed, the inferred one is not (one exit per process).
#[test]
fn an_inferred_exit_gives_way_to_a_real_one_even_past_the_bound() {
    let mut n = Node::new();
    n.ts = 100_000 * S; // after every start below
    let pids = 2..(process::GONE_MAX as u32 + 4);
    for pid in pids.clone() {
        let mut f = ev(Kind::Fork, pid, 1, "x");
        f.start_ns = u64::from(pid) * 1_000;
        n.feed(f);
    }
    n.lost_exit();
    n.resync(Vec::new());
    n.fork(1, 0, "tick"); // the bound drops the first to leave: pids 2 and 3
    assert_eq!(n.engine.table.slot(2, 2_000), Slot::New, "forgotten");
    let mut x = ev(Kind::Exit, 2, 1, "x");
    x.start_ns = 2_000;
    let real = n.push(Node::exit_event(x, 0));
    assert_eq!(real.len(), 1);
    n.ts += 2 * S;
    let out = n.push(ev(Kind::Fork, 7, 1, "tick"));
    let exits_of = |pid: u32| {
        out.iter()
            .filter(|e| matches!(e, Event::Exit { process, .. } if process.pid == pid))
            .count()
    };
    assert_eq!(exits_of(2), 0, "its real exit was printed");
    assert_eq!(exits_of(3), 1, "inferred: forgotten, and nothing came");
    assert_eq!(
        out.len(),
        pids.len() - 1 + 1,
        "the others' inferred exits, and the fork"
    );
}

mod holds;

/// A pod sharing its pid namespace (cri-o keeps an infra container as its PID 1), a runtime
/// wrapper that conmon runs in its cgroup (cri-o's, with cgroupfs) before runc (as the cri-o lab's
/// `runc-oomclamp`, or nvidia-container-runtime): the container's main process, pid 7 of the
/// shared namespace, is its init; the wrapper and runc are not.
#[test]
fn in_a_shared_pid_namespace_the_main_process_is_the_init_and_a_runtime_wrapper_is_not() {
    const CONMON_CG: u64 = 5001;
    const INFRA_CG: u64 = 5002;
    const INFRA: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    let mut n = Node::new();
    let pod = format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice",
        UID.replace('-', "_")
    );
    // cgroupfs on a hybrid node (the cri-o lab here): conmon's v2 cgroup stays cri-o's.
    n.facts.insert(
        (Hierarchy::V2, CONMON_CG),
        Some("/system.slice/crio.service".into()),
    );
    n.facts.insert(
        (Hierarchy::V2, INFRA_CG),
        Some(format!("{pod}/crio-{INFRA}.scope")),
    );
    // The infra container: PID 1 of the shared namespace.
    let mut infra = in_ctr(ev(Kind::Exec, 90, 80, "pod"), 1);
    infra.cgroup_id = INFRA_CG;
    let e = n.exec(infra, &["/usr/bin/pod"]);
    assert_eq!(role(&e), Some(Role::ContainerInit));
    // conmon of the main container, in its conmon cgroup.
    let argv = conmon_argv();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut conmon = ev(Kind::Exec, 100, 50, "conmon");
    conmon.cgroup_id = CONMON_CG;
    assert_eq!(role(&n.exec(conmon, &argv)), Some(Role::Conmon));
    let mut fork = ev(Kind::Fork, 102, 100, "conmon");
    fork.cgroup_id = CONMON_CG;
    n.feed(fork.clone());
    // The wrapper: a script under conmon, in conmon's cgroup.
    let mut wrapper = fork.clone();
    wrapper.comm = "runc-oomclamp".into();
    let e = n.exec(
        wrapper,
        &["/bin/sh", "/var/lib/runc-oomclamp", "create", ID],
    );
    assert_ne!(
        role(&e),
        Some(Role::ContainerInit),
        "a runtime wrapper is not the init: {e:#?}"
    );
    let mut runc = fork.clone();
    runc.comm = "runc".into();
    let e = n.exec(
        runc,
        &["/usr/sbin/runc", "create", "--bundle", "/run/b", ID],
    );
    assert_eq!(role(&e), Some(Role::Runtime));
    // runc's child joins the shared namespace as pid 7, and the container's cgroup.
    let mut child = in_ctr(ev(Kind::Fork, 110, 102, "runc:[1:CHILD]"), 7);
    child.cgroup_id = CONMON_CG;
    n.feed(child.clone());
    n.exit(ev(Kind::Exit, 102, 100, "runc"), 0);
    let mut main = child;
    main.kind = Kind::Exec;
    main.ppid = 100;
    main.comm = "sleep".into();
    main.cgroup_id = CRIO_CG;
    let e = n.exec(main, &["/bin/sleep", "600"]);
    assert_eq!(container_id(&e), Some(ID));
    assert_eq!(role(&e), Some(Role::ContainerInit), "{e:#?}");
    // Its later events keep the mark; its children are not the init.
    let mut kid = in_ctr(ev(Kind::Fork, 111, 110, "sleep"), 8);
    kid.cgroup_id = CRIO_CG;
    assert_eq!(role(&n.feed(kid)), None);
    let mut exit = in_ctr(ev(Kind::Exit, 110, 100, "sleep"), 7);
    exit.cgroup_id = CRIO_CG;
    assert_eq!(role(&n.exit(exit, 0)), Some(Role::ContainerInit));
}

/// A podman/docker container restarted under the same id: a new conmon, a new init in a new
/// pid namespace. The new init is the container's init, its namespace is the container's (a
/// process entering it without a cgroup of its own is attributed), the old one no longer is.
#[test]
fn a_restart_under_the_same_id_starts_the_init_and_pid_namespace_afresh() {
    const NEW_NS: u32 = CTR_NS + 7;
    let mut n = Node::new();
    n.facts.insert(
        (Hierarchy::V2, CRIO_CG),
        Some(format!("/libpod_parent/libpod-{ID}")),
    );
    let conmon_argv = |n: &mut Node, pid: u32| {
        let e = n.exec(
            ev(Kind::Exec, pid, 50, "conmon"),
            &[
                "/usr/bin/conmon",
                "--api-version",
                "1",
                "-c",
                ID,
                "-u",
                ID,
                "-n",
                "web",
            ],
        );
        assert_eq!(role(&e), Some(Role::Conmon));
    };
    // First run.
    n.fork(100, 50, "podman");
    conmon_argv(&mut n, 100);
    let e = n.exec(
        in_ctr(ev(Kind::Exec, 110, 100, "sleep"), 1),
        &["/bin/sleep", "600"],
    );
    assert_eq!(role(&e), Some(Role::ContainerInit));
    n.exit(in_ctr(ev(Kind::Exit, 110, 100, "sleep"), 1), 9);
    n.exit(ev(Kind::Exit, 100, 50, "conmon"), 0);
    // `podman restart`: another conmon, an init in a new pid namespace.
    n.fork(200, 50, "podman");
    conmon_argv(&mut n, 200);
    let mut init = in_ctr(ev(Kind::Exec, 210, 200, "sleep"), 1);
    init.pidns = NEW_NS;
    let e = n.exec(init, &["/bin/sleep", "600"]);
    assert_eq!(container_id(&e), Some(ID));
    assert_eq!(role(&e), Some(Role::ContainerInit), "{e:#?}");
    let c = n.engine.containers().get(ID).expect("container");
    assert_eq!((c.init_pid, c.pidns), (Some(210), Some(NEW_NS)));
    // `podman exec` via nsenter-like entry: the new namespace names the container.
    let mut entered = ev(Kind::Exec, 220, 1, "sh");
    entered.nspid = 5;
    entered.pidns = NEW_NS;
    let e = n.exec(entered, &["sh"]);
    assert_eq!(container_id(&e), Some(ID), "{e:#?}");
    assert_eq!(role(&e), None);
    // The old namespace no longer names it.
    let mut stale = ev(Kind::Exec, 230, 1, "sh");
    stale.nspid = 5;
    stale.pidns = CTR_NS;
    assert_eq!(container_id(&n.exec(stale, &["sh"])), None);
}

/// What the CRI (or conmon's argv) said of a pod names its other containers at once, by the
/// pod uid their cgroup paths carry: without a hold, a second container's first event has its
/// pod's name and namespace before its own answer; the names go with the pod's last container.
#[test]
fn a_second_container_of_a_pod_is_named_by_its_pod_at_once() {
    const SECOND: &str = "3333333333333333333333333333333333333333333333333333333333333333";
    const SECOND_CG: u64 = 5003;
    let mut n = Node::new();
    let path = |id: &str| format!("/kubepods/besteffort/pod{UID}/{id}");
    n.facts.insert((Hierarchy::V2, CRIO_CG), Some(path(ID)));
    n.facts
        .insert((Hierarchy::V2, SECOND_CG), Some(path(SECOND)));
    n.feed(in_ctr(ev(Kind::Fork, 110, 1, "sleep"), 1));
    n.apply(Record::Cri(CriFact {
        id: ID.into(),
        sandbox: false,
        name: Some("first".into()),
        attempt: Some(0),
        image: None,
        image_id: None,
        pod: Some(CriPod {
            sandbox_id: "f".repeat(64),
            name: "web-0".into(),
            namespace: "shop".into(),
            uid: UID.into(),
            labels: None,
            annotations: None,
        }),
    }));
    let mut second = in_ctr(ev(Kind::Fork, 120, 1, "sh"), 1);
    second.cgroup_id = SECOND_CG;
    second.pidns = CTR_NS + 1;
    let e = n.feed(second);
    let p = e.process().expect("process");
    assert_eq!(container_id(&e), Some(SECOND));
    let pod = p.pod.as_ref().expect("pod");
    assert_eq!(
        (
            pod.name.as_deref(),
            pod.namespace.as_deref(),
            pod.uid.as_deref()
        ),
        (Some("web-0"), Some("shop"), Some(UID))
    );
    assert_eq!(
        p.container.as_ref().and_then(|c| c.name.as_deref()),
        None,
        "its own name is the CRI's to give"
    );
    assert_eq!(n.engine.containers().pods_len(), 1);
}
