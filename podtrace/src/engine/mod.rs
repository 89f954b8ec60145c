//! The engine: kernel events and recorded facts in, enriched events out.
//!
//! Pure and deterministic: it never looks at the system itself. Live and replay feed it the
//! same way; outside facts (cgroup paths) come through the `Facts` trait.
pub mod containers;
pub mod process;
pub mod tree;

use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use crate::attribution::{parse_cgroup_path, parse_helper, CgroupInfo, HelperKind};
use crate::clock::{BootClock, TsFormatter};
use crate::facts::Facts;
use crate::kernel_event::{KernelEvent, Kind};
use crate::output::{Event, ProcessFields, Role};
use crate::snapshot::ProcInfo;
use crate::wait_status;
use containers::Registry;
use process::{Proc, Table};

/// An unresolvable cgroup id is asked about again after this much event time.
const CGROUP_RETRY_NS: u64 = 500_000_000;
/// Finished containers stay this long (for late events and the tree).
const CONTAINER_GRACE_NS: u64 = 30_000_000_000;

#[derive(Debug)]
struct Cgroup {
    path: Arc<str>,
    info: CgroupInfo,
}

#[derive(Clone, Debug)]
enum CgroupEntry {
    Known(Arc<Cgroup>),
    /// Not resolvable when asked at this event time.
    Unknown(u64),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub events: u64,
    pub lost: u64,
}

pub struct Engine {
    clock: BootClock,
    node: Option<String>,
    host_pidns: u32,
    table: Table,
    containers: Registry,
    cgroups: HashMap<u64, CgroupEntry>,
    now_ns: u64,
    ts: TsFormatter,
    pub stats: Stats,
}

fn helper_role(kind: HelperKind) -> Role {
    match kind {
        HelperKind::Conmon => Role::Conmon,
        HelperKind::Shim => Role::Shim,
        HelperKind::Runtime => Role::Runtime,
    }
}

fn exe_of(p: &Proc) -> &str {
    p.filename.as_deref().unwrap_or(&p.comm)
}

/// conmon started for `podman exec` / `crictl exec` (not the container's own monitor).
fn is_exec_session(p: &Proc) -> bool {
    parse_helper(exe_of(p), &p.argv)
        .map(|h| h.exec)
        .unwrap_or(false)
}

fn is_helper(role: Option<Role>) -> bool {
    matches!(role, Some(Role::Conmon) | Some(Role::Shim))
}

impl Engine {
    /// `host_pidns` is the pid namespace of the host's PID 1: a process whose own pid
    /// namespace differs and whose pid there is 1 is a container's init.
    pub fn new(clock: BootClock, host_pidns: u32, node: Option<String>) -> Self {
        Self {
            clock,
            node,
            host_pidns,
            table: Table::default(),
            containers: Registry::default(),
            cgroups: HashMap::default(),
            now_ns: 0,
            ts: TsFormatter::default(),
            stats: Stats::default(),
        }
    }

    pub fn clock(&self) -> BootClock {
        self.clock
    }

    pub fn table(&self) -> &Table {
        &self.table
    }

    pub fn containers(&self) -> &Registry {
        &self.containers
    }

    /// Boot-clock time of the latest event seen.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// Loads the start-up /proc picture. Produces no events.
    pub fn load_snapshot(&mut self, procs: &[ProcInfo], facts: &mut dyn Facts) {
        for p in procs {
            if let (Some(path), true) = (&p.cgroup, p.cgroup_id != 0) {
                self.cgroups.insert(
                    p.cgroup_id,
                    CgroupEntry::Known(Arc::new(Cgroup {
                        info: parse_cgroup_path(path),
                        path: Arc::from(path.as_str()),
                    })),
                );
            }
            self.table.insert(Proc {
                pid: p.pid,
                start_ns: p.start_ns,
                ppid: p.ppid,
                nspid: p.nspid,
                pidns: p.pidns,
                uid: p.uid,
                gid: p.gid,
                comm: p.comm.clone(),
                filename: p.exe.as_deref().map(Arc::from),
                argv: p.argv.clone().into(),
                cgroup_id: p.cgroup_id,
                container: None,
                role: None,
                exited_ns: None,
            });
            self.now_ns = self.now_ns.max(p.start_ns);
        }
        // In pid order, twice, so that children see what their parents were given.
        let mut pids: Vec<u32> = procs.iter().map(|p| p.pid).collect();
        pids.sort_unstable();
        for _ in 0..2 {
            for &pid in &pids {
                let inherited = self.parent_attribution(pid);
                self.attribute(pid, facts, inherited);
            }
        }
    }

    /// The container a process inherits from its parent (not from a helper: conmon's and the
    /// shim's children are the runtime and the init, which say for themselves).
    fn parent_attribution(&self, pid: u32) -> Option<Arc<str>> {
        let ppid = self.table.get(pid)?.ppid;
        let parent = self.table.get(ppid)?;
        if is_helper(parent.role) {
            None
        } else {
            parent.container.clone()
        }
    }

    fn cgroup(&mut self, id: u64, pid: u32, facts: &mut dyn Facts) -> Option<Arc<Cgroup>> {
        if id == 0 {
            return None;
        }
        match self.cgroups.get(&id) {
            Some(CgroupEntry::Known(c)) => return Some(c.clone()),
            Some(CgroupEntry::Unknown(at)) if self.now_ns.saturating_sub(*at) < CGROUP_RETRY_NS => {
                return None
            }
            _ => {}
        }
        match facts.cgroup_path(id, pid) {
            Some(path) => {
                let c = Arc::new(Cgroup {
                    info: parse_cgroup_path(&path),
                    path: Arc::from(path),
                });
                self.cgroups.insert(id, CgroupEntry::Known(c.clone()));
                Some(c)
            }
            None => {
                self.cgroups.insert(id, CgroupEntry::Unknown(self.now_ns));
                None
            }
        }
    }

    /// Works out container and role of a table entry, in order of trust: a runtime helper's
    /// argv, the cgroup path, the container's pid namespace, then `inherited` (the container
    /// the process had before exec, or its parent's at fork).
    fn attribute(&mut self, pid: u32, facts: &mut dyn Facts, inherited: Option<Arc<str>>) {
        let Some(p) = self.table.get(pid) else { return };
        let (cgroup_id, nspid, pidns, ppid, prev_role) =
            (p.cgroup_id, p.nspid, p.pidns, p.ppid, p.role);
        let no_argv = p.argv.is_empty();
        let helper = parse_helper(exe_of(p), &p.argv);

        let mut role = None;
        let mut container: Option<Arc<str>> = None;
        if let Some(h) = &helper {
            role = Some(helper_role(h.kind));
            container = if h.kind == HelperKind::Conmon && h.exec {
                // An exec session's conmon joins the container without becoming its monitor.
                h.container_id
                    .as_deref()
                    .map(|id| self.containers.entry(id).id.clone())
            } else {
                self.containers.learn_helper(h, pid)
            };
        }
        let cg = self.cgroup(cgroup_id, pid, facts);
        if let Some(cg) = &cg {
            match (&container, &cg.info.container_id) {
                (None, Some(id)) => {
                    self.containers.learn_cgroup(id, &cg.info, &cg.path);
                    if cg.info.conmon && role.is_none() && prev_role != Some(Role::Runtime) {
                        role = Some(Role::Conmon);
                        self.containers.entry(id).helper_pid.get_or_insert(pid);
                    }
                    container = self.containers.id(id);
                }
                (None, None) => {
                    if let Some(id) = self.containers.by_shim_path(&cg.path) {
                        self.containers
                            .learn_cgroup(&id, &CgroupInfo::default(), &cg.path);
                        container = Some(id);
                    }
                }
                (Some(have), Some(id)) if **have == **id => {
                    self.containers.learn_cgroup(id, &cg.info, &cg.path);
                }
                _ => {}
            }
        }
        if container.is_none() {
            container = self.containers.by_pidns(pidns);
        }
        if container.is_none() {
            container = inherited;
        }
        // A forked copy of a helper stays that helper until it execs something else.
        if role.is_none()
            && helper.is_none()
            && no_argv
            && matches!(
                prev_role,
                Some(Role::Conmon) | Some(Role::Shim) | Some(Role::Runtime)
            )
        {
            role = prev_role;
        }
        if let Some(id) = &container {
            let own_ns_init =
                nspid == 1 && pidns != self.host_pidns && pidns != 0 && self.host_pidns != 0;
            let child_of_helper = self
                .containers
                .get(id)
                .map(|c| c.helper_pid == Some(ppid) && !c.had_init)
                .unwrap_or(false);
            if matches!(role, None | Some(Role::Runtime) | Some(Role::ContainerInit)) {
                if own_ns_init || (role.is_none() && child_of_helper && helper.is_none()) {
                    role = Some(Role::ContainerInit);
                    self.containers.set_init(id, pid, pidns, self.host_pidns);
                } else if role == Some(Role::ContainerInit) {
                    role = None;
                }
            }
        }
        if let Some(p) = self.table.get_mut(pid) {
            p.container = container;
            p.role = role;
        }
    }

    /// Feeds one kernel event; appends the events to print to `out`.
    pub fn ingest(&mut self, ev: &KernelEvent, facts: &mut dyn Facts, out: &mut Vec<Event>) {
        self.now_ns = self.now_ns.max(ev.ts_ns);
        self.stats.events += 1;
        match ev.kind {
            Kind::Exec => self.on_exec(ev, facts, out),
            Kind::Fork => self.on_fork(ev, facts, out),
            Kind::Exit => self.on_exit(ev, facts, out),
            Kind::Thread => {
                if self.table.get(ev.pid).is_none() {
                    self.track_unknown(ev, facts);
                }
                let process = self.fields(ev, facts);
                out.push(Event::Thread { process });
            }
        }
        self.table.evict(self.now_ns);
        self.containers.evict(self.now_ns, CONTAINER_GRACE_NS);
    }

    /// Reports events the kernel could not deliver.
    pub fn lost(&mut self, ts_ns: u64, count: u64, out: &mut Vec<Event>) {
        self.now_ns = self.now_ns.max(ts_ns);
        self.stats.lost += count;
        out.push(Event::Lost {
            ts: self.ts.format(self.clock.unix_ns(ts_ns)),
            count,
            node: self.node.clone(),
        });
    }

    fn new_proc(ev: &KernelEvent) -> Proc {
        Proc {
            pid: ev.pid,
            start_ns: ev.start_ns,
            ppid: ev.ppid,
            nspid: ev.nspid,
            pidns: ev.pidns,
            uid: ev.uid,
            gid: ev.gid,
            comm: ev.comm.clone(),
            filename: None,
            argv: Arc::from([]),
            cgroup_id: ev.cgroup_id,
            container: None,
            role: None,
            exited_ns: None,
        }
    }

    /// Adds a process first seen now (started between the snapshot and attach, or its fork
    /// was lost).
    fn track_unknown(&mut self, ev: &KernelEvent, facts: &mut dyn Facts) {
        self.table.insert(Self::new_proc(ev));
        let inherited = self.parent_attribution(ev.pid);
        self.attribute(ev.pid, facts, inherited);
    }

    fn update_from_event(p: &mut Proc, ev: &KernelEvent) {
        p.ppid = ev.ppid;
        p.nspid = ev.nspid;
        p.pidns = ev.pidns;
        p.uid = ev.uid;
        p.gid = ev.gid;
        if p.comm != ev.comm {
            p.comm.clone_from(&ev.comm);
        }
        p.cgroup_id = ev.cgroup_id;
        if p.start_ns / process::TICK_NS == ev.start_ns / process::TICK_NS {
            p.start_ns = ev.start_ns;
        }
    }

    fn on_exec(&mut self, ev: &KernelEvent, facts: &mut dyn Facts, out: &mut Vec<Event>) {
        let (filename, argv, argv_truncated) = match &ev.exec {
            Some(x) => (
                x.filename.clone(),
                Arc::<[String]>::from(x.argv.as_slice()),
                x.argv_truncated,
            ),
            None => (String::new(), Arc::from([]), false),
        };
        let inherited = match self.table.live_matching(ev.pid, ev.start_ns) {
            Some(p) => {
                Self::update_from_event(p, ev);
                p.container.clone()
            }
            None => {
                self.table.insert(Self::new_proc(ev));
                self.parent_attribution(ev.pid)
            }
        };
        if let Some(p) = self.table.get_mut(ev.pid) {
            p.filename = Some(Arc::from(filename.as_str()));
            p.argv = argv.clone();
        }
        self.attribute(ev.pid, facts, inherited);
        let process = self.fields(ev, facts);
        out.push(Event::Exec {
            process,
            filename,
            argv,
            argv_truncated,
        });
    }

    fn on_fork(&mut self, ev: &KernelEvent, facts: &mut dyn Facts, out: &mut Vec<Event>) {
        let mut child = Self::new_proc(ev);
        let mut inherited = None;
        if let Some(parent) = self.table.get(ev.ppid) {
            child.filename.clone_from(&parent.filename);
            // A copy of a helper or runtime is one until it execs; a child of the init is not
            // the init.
            child.role = match parent.role {
                Some(Role::ContainerInit) => None,
                r => r,
            };
            inherited = if is_helper(parent.role) && child.role.is_none() {
                None
            } else {
                parent.container.clone()
            };
        }
        self.table.insert(child);
        self.attribute(ev.pid, facts, inherited);
        let process = self.fields(ev, facts);
        out.push(Event::Fork { process });
    }

    fn on_exit(&mut self, ev: &KernelEvent, facts: &mut dyn Facts, out: &mut Vec<Event>) {
        match self.table.live_matching(ev.pid, ev.start_ns) {
            Some(p) => Self::update_from_event(p, ev),
            None => self.track_unknown(ev, facts),
        }
        let process = self.fields(ev, facts);
        let (status, duration_ns) = ev.exit.map(|x| (x.status, x.duration_ns)).unwrap_or((0, 0));
        let o = wait_status::decode(status);
        out.push(Event::Exit {
            process,
            exit_code: o.exit_code,
            signal: o.signal,
            core_dumped: o.core_dumped,
            duration_ns,
        });
        if let Some(p) = self.table.retire(ev.pid, ev.ts_ns) {
            self.reparent_children(&p);
            if let Some(id) = &p.container {
                let was_helper = self.containers.get(id).and_then(|c| c.helper_pid) == Some(p.pid);
                self.containers.process_exited(id, p.pid, ev.ts_ns);
                if was_helper {
                    self.promote_helper(id, p.role);
                }
            }
        }
    }

    /// conmon and the containerd shim daemonize: the process that exec'd exits and its forked
    /// copy carries on as the container's helper.
    fn promote_helper(&mut self, id: &str, role: Option<Role>) {
        let Some(role) = role else { return };
        let next = self
            .table
            .live()
            .filter(|p| p.container.as_deref() == Some(id) && p.role == Some(role))
            .filter(|p| !is_exec_session(p))
            .map(|p| p.pid)
            .min();
        if let Some(pid) = next {
            let c = self.containers.entry(id);
            c.helper_pid = Some(pid);
            c.finished_ns = None;
        }
    }

    /// Orphans go to the init of their pid namespace when it lives on (inside a container),
    /// else to the nearest subreaper the engine knows (conmon, shim), else to PID 1. The
    /// next event of each child carries the kernel's own answer.
    fn reparent_children(&mut self, dead: &Proc) {
        let ns_init = dead
            .container
            .as_deref()
            .and_then(|id| self.containers.get(id))
            .and_then(|c| c.init_pid)
            .filter(|&init| init != dead.pid);
        let mut reaper = 1;
        let mut cur = dead.ppid;
        for _ in 0..64 {
            let Some(p) = self.table.get(cur) else { break };
            if is_helper(p.role) {
                reaper = p.pid;
                break;
            }
            if p.ppid == cur || p.ppid == 0 {
                break;
            }
            cur = p.ppid;
        }
        let host_pidns = self.host_pidns;
        for p in self.table.live_mut() {
            if p.ppid == dead.pid {
                p.ppid = match ns_init {
                    Some(init) if p.pidns == dead.pidns && p.pidns != host_pidns => init,
                    _ => reaper,
                };
            }
        }
    }

    fn fields(&mut self, ev: &KernelEvent, facts: &mut dyn Facts) -> ProcessFields {
        let cgroup = self
            .cgroup(ev.cgroup_id, ev.pid, facts)
            .map(|c| c.path.clone());
        let (container, role) = match self.table.get(ev.pid) {
            Some(p) => (p.container.clone(), p.role),
            None => (None, None),
        };
        let (container, pod) = match container.as_deref() {
            Some(id) => self.containers.refs(id),
            None => (None, None),
        };
        ProcessFields {
            ts: self.ts.format(self.clock.unix_ns(ev.ts_ns)),
            pid: ev.pid,
            tid: ev.tid,
            ppid: ev.ppid,
            nspid: ev.nspid,
            pidns: ev.pidns,
            uid: ev.uid,
            gid: ev.gid,
            comm: ev.comm.clone(),
            cgroup_id: ev.cgroup_id,
            start_ns: ev.start_ns,
            cgroup,
            container,
            pod,
            role,
            node: self.node.clone(),
        }
    }
}

#[cfg(test)]
mod tests;
