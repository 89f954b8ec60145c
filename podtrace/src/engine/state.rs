//! The engine's whole state at one moment, as `state` records: what a trace segment starts
//! with, so that it replays on its own and prints what the live run printed from there on,
//! byte for byte (docs/trace-format.md, "Segments").
//!
//! Everything the engine decides or prints from is here, exactly: the live processes and
//! zombies, the processes that left (for late events, in the order they left, so that the
//! same ones are evicted at the same record), the cgroup answers with their counts and ages,
//! the containers with every field (names, helper, init, pid namespace, counts, when they
//! finished), pid namespaces and pod names, the exits waiting to be inferred and the events
//! held for a CRI answer (as they would be printed), the engine's clock and the times of its
//! last sweeps. Only what is derived (indexes, the shared-text cache, the events' cached
//! container and pod) is rebuilt.
//!
//! [`Engine::dump_state`] writes it between two records (never inside the start-up snapshot
//! or a resync: [`Engine::at_boundary`]); `state` records applied to a new engine, closed by
//! `state_end`, put it back.
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::containers::{Container, PidnsOwner, RegistryStats};
use super::hold::{HoldStats, Member};
use super::process::Proc;
use super::{Engine, InferredExit, Pending, Stats};
use crate::attribution::Runtime;
use crate::cgroups::Hierarchy;
use crate::output::{Event, Role};

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}

fn is_v2(h: &Hierarchy) -> bool {
    *h == Hierarchy::V2
}

/// One piece of the engine's state (the content of a `state` record).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum StateRecord {
    Engine(Box<EngineState>),
    Cgroup(CgroupState),
    Container(Box<ContainerState>),
    Pidns(PidnsState),
    Pod(PodState),
    Proc(ProcState),
    Left(LeftState),
    Inferred(Box<InferredState>),
    Held(Box<HeldState>),
}

/// The engine's clock, the times of its last sweeps, and its counters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineState {
    /// Boot-clock time of the latest record applied.
    pub now_ns: u64,
    /// The boot->wall offset now (a `clock` record may have moved it since the header).
    pub offset_ns: i64,
    pub cgroups_swept_ns: u64,
    pub containers_evicted_ns: u64,
    /// The last sequence number given to a queue of held events.
    pub hold_seq: u64,
    pub stats: Stats,
    pub registry: RegistryStats,
    pub hold: HoldStats,
}

/// A cgroup answer: its path (null: the answer was "unknown"), the live processes placed
/// in it, and since when it is idle (or was found unknown).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupState {
    #[serde(default, skip_serializing_if = "is_v2")]
    pub hierarchy: Hierarchy,
    pub id: u64,
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub refs: u32,
    pub since_ns: u64,
}

/// Where a process is placed: (hierarchy, cgroup id).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlaceState {
    #[serde(default, skip_serializing_if = "is_v2")]
    pub hierarchy: Hierarchy,
    pub id: u64,
}

/// A container, every field the engine keeps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerState {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<Runtime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub cri: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub cri_unknown: bool,
    /// The pod uid it is counted under in the pod names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_counted: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_annotations: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ctr_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub helper_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_pid: Option<u32>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub had_init: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pidns: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    #[serde(default, skip_serializing_if = "is_zero_u32")]
    pub processes: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_ns: Option<u64>,
    pub first_seen_ns: u64,
}

/// Who a pid namespace belongs to: a container (`pod` false) or, shared, a pod through its
/// first container.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PidnsState {
    pub ns: u32,
    pub id: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub pod: bool,
}

/// A pod's names kept by uid, and how many tracked containers it has.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PodState {
    pub uid: String,
    pub name: String,
    pub namespace: String,
    pub containers: u32,
}

/// A process table entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcState {
    pub pid: u32,
    pub start_ns: u64,
    pub ppid: u32,
    pub nspid: u32,
    pub pidns: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filename: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub argv: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<PlaceState>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_of: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// A zombie since then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exited_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub exit_seen: bool,
    /// The kernel's wait status of a zombie whose exit was seen (the tree and top show it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<u32>,
}

/// A process that left, in the order they left: when, its identity (pid, start tick), and
/// the process (null: a later departure took its place).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeftState {
    pub at_ns: u64,
    pub pid: u32,
    pub tick: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proc: Option<ProcState>,
}

/// An exit to infer at `due_ns` unless the real one comes first: the event as it will be
/// printed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferredState {
    pub due_ns: u64,
    pub pid: u32,
    pub start_ns: u64,
    pub event: Event,
}

/// An event held for its container's CRI answer, in its queue's order: the queue's age
/// (first event's time and sequence number), the event's time, what it is of, and the event
/// as it was made (its container and pod are filled in at release).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeldState {
    pub id: String,
    pub age_ns: u64,
    pub age_seq: u64,
    pub ts_ns: u64,
    pub member: Member,
    pub event: Event,
}

fn proc_state(p: &Proc) -> ProcState {
    ProcState {
        pid: p.pid,
        start_ns: p.start_ns,
        ppid: p.ppid,
        nspid: p.nspid,
        pidns: p.pidns,
        uid: p.uid,
        gid: p.gid,
        comm: p.comm.to_string(),
        filename: p.filename.as_deref().map(str::to_string),
        argv: p.argv.to_vec(),
        cgroup: p.cgroup.map(|(hierarchy, id)| PlaceState { hierarchy, id }),
        container: p.container.as_deref().map(str::to_string),
        pod_of: p.pod_of.as_deref().map(str::to_string),
        role: p.role,
        exited_ns: p.exited_ns,
        exit_seen: p.exit_seen,
        exit_status: p.exit_status,
    }
}

fn container_state(c: &Container) -> ContainerState {
    ContainerState {
        id: c.id.to_string(),
        name: c.name.clone(),
        runtime: c.runtime,
        pod_name: c.pod_name.clone(),
        namespace: c.namespace.clone(),
        pod_uid: c.pod_uid.clone(),
        qos: c.qos.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        cri: c.cri,
        cri_unknown: c.cri_unknown,
        pod_counted: c.pod_counted().map(str::to_string),
        pod_labels: c.pod_labels.clone(),
        pod_annotations: c.pod_annotations.clone(),
        ctr_namespace: c.ctr_namespace.clone(),
        helper_pid: c.helper_pid,
        init_pid: c.init_pid,
        had_init: c.had_init,
        pidns: c.pidns,
        cgroup: c.cgroup.clone(),
        processes: c.processes,
        finished_ns: c.finished_ns,
        first_seen_ns: c.first_seen_ns,
    }
}

impl Engine {
    /// Between two records a segment may start at: not inside the start-up snapshot, a
    /// resync or a state being restored (their records are collected before they apply).
    pub fn at_boundary(&self) -> bool {
        matches!(self.pending, Pending::None)
    }

    /// Hands the engine's state to `each`, one record at a time (nothing is held but the
    /// record being handed), in a fixed order: the engine's clock and counters, cgroups,
    /// containers, pid namespaces, pod names, live processes (by pid), processes that left (in
    /// the order they left), exits to infer, held events. Call it at a boundary.
    pub fn dump_state<E>(
        &self,
        mut each: impl FnMut(StateRecord) -> Result<(), E>,
    ) -> Result<(), E> {
        let (cgroups, swept) = self.cgroups.state();
        let (containers, pidns, pods, evicted) = self.containers.state();
        let (held, hold_seq) = self.holds.state();
        each(StateRecord::Engine(Box::new(EngineState {
            now_ns: self.now_ns,
            offset_ns: self.clock.offset_ns,
            cgroups_swept_ns: swept,
            containers_evicted_ns: evicted,
            hold_seq,
            stats: self.stats.clone(),
            registry: self.containers.stats,
            hold: self.holds.stats.clone(),
        })))?;
        for ((hierarchy, id), path, refs, since_ns) in cgroups {
            each(StateRecord::Cgroup(CgroupState {
                hierarchy,
                id,
                path: path.map(str::to_string),
                refs,
                since_ns,
            }))?;
        }
        for c in containers {
            each(StateRecord::Container(Box::new(container_state(c))))?;
        }
        for (ns, owner) in pidns {
            let (id, pod) = match owner {
                PidnsOwner::Container(id) => (id, false),
                PidnsOwner::Pod(id) => (id, true),
            };
            each(StateRecord::Pidns(PidnsState {
                ns,
                id: id.to_string(),
                pod,
            }))?;
        }
        for (uid, name, namespace, containers) in pods {
            each(StateRecord::Pod(PodState {
                uid,
                name,
                namespace,
                containers,
            }))?;
        }
        let mut live: Vec<&Proc> = self.table.live().collect();
        live.sort_unstable_by_key(|p| p.pid);
        for p in live {
            each(StateRecord::Proc(proc_state(p)))?;
        }
        for (at_ns, (pid, tick), p) in self.table.left_entries() {
            each(StateRecord::Left(LeftState {
                at_ns,
                pid,
                tick,
                proc: p.map(proc_state),
            }))?;
        }
        for x in &self.inferred_exits {
            each(StateRecord::Inferred(Box::new(InferredState {
                due_ns: x.due_ns,
                pid: x.pid,
                start_ns: x.start_ns,
                event: x.event.clone(),
            })))?;
        }
        for (id, (age_ns, age_seq), ts_ns, member, event) in held {
            each(StateRecord::Held(Box::new(HeldState {
                id: id.to_string(),
                age_ns,
                age_seq,
                ts_ns,
                member,
                event: event.clone(),
            })))?;
        }
        Ok(())
    }

    /// The engine's shared copy of container id `id` (a new one if it has none).
    fn shared_id(&self, id: &str) -> Arc<str> {
        self.containers.id(id).unwrap_or_else(|| Arc::from(id))
    }

    fn proc_from_state(&mut self, p: &ProcState) -> Proc {
        Proc {
            pid: p.pid,
            start_ns: p.start_ns,
            ppid: p.ppid,
            nspid: p.nspid,
            pidns: p.pidns,
            uid: p.uid,
            gid: p.gid,
            comm: self.texts.comm(&p.comm),
            filename: p.filename.as_deref().map(|f| self.texts.filename(f)),
            argv: self.texts.argv(&p.argv),
            cgroup: p.cgroup.map(|c| (c.hierarchy, c.id)),
            container: p.container.as_deref().map(|id| self.shared_id(id)),
            pod_of: p.pod_of.as_deref().map(|id| self.shared_id(id)),
            role: p.role,
            exited_ns: p.exited_ns,
            exit_seen: p.exit_seen,
            exit_status: p.exit_status,
        }
    }

    /// Applies one `state` record: puts that piece back as it was.
    pub(super) fn restore_state(&mut self, s: &StateRecord) {
        // A state replaces the start-up snapshot; `state_end` ends it.
        self.pending = Pending::State;
        match s {
            StateRecord::Engine(e) => {
                self.now_ns = e.now_ns;
                self.clock.offset_ns = e.offset_ns;
                self.cgroups.restore_last_sweep(e.cgroups_swept_ns);
                self.containers.restore_last_evict(e.containers_evicted_ns);
                self.holds.restore_seq(e.hold_seq);
                self.stats = e.stats.clone();
                self.containers.stats = e.registry;
                self.holds.stats = e.hold.clone();
            }
            StateRecord::Cgroup(c) => {
                self.cgroups
                    .restore((c.hierarchy, c.id), c.path.as_deref(), c.refs, c.since_ns);
            }
            StateRecord::Container(c) => {
                let mut k = Container::blank(Arc::from(c.id.as_str()));
                k.name.clone_from(&c.name);
                k.runtime = c.runtime;
                k.pod_name.clone_from(&c.pod_name);
                k.namespace.clone_from(&c.namespace);
                k.pod_uid.clone_from(&c.pod_uid);
                k.qos.clone_from(&c.qos);
                k.image.clone_from(&c.image);
                k.image_id.clone_from(&c.image_id);
                k.cri = c.cri;
                k.cri_unknown = c.cri_unknown;
                k.pod_labels.clone_from(&c.pod_labels);
                k.pod_annotations.clone_from(&c.pod_annotations);
                k.ctr_namespace.clone_from(&c.ctr_namespace);
                k.helper_pid = c.helper_pid;
                k.init_pid = c.init_pid;
                k.had_init = c.had_init;
                k.pidns = c.pidns;
                k.cgroup.clone_from(&c.cgroup);
                k.processes = c.processes;
                k.finished_ns = c.finished_ns;
                k.first_seen_ns = c.first_seen_ns;
                k.set_pod_counted(c.pod_counted.clone());
                self.containers.restore_container(k);
            }
            StateRecord::Pidns(p) => {
                let id = self.shared_id(&p.id);
                let owner = if p.pod {
                    PidnsOwner::Pod(id)
                } else {
                    PidnsOwner::Container(id)
                };
                self.containers.restore_pidns(p.ns, owner);
            }
            StateRecord::Pod(p) => self.containers.restore_pod((
                p.uid.clone(),
                p.name.clone(),
                p.namespace.clone(),
                p.containers,
            )),
            StateRecord::Proc(p) => {
                let p = self.proc_from_state(p);
                if let Some(old) = self.table.take(p.pid) {
                    // Twice the same pid in one state (not what podtrace writes): the later wins.
                    drop(old);
                }
                self.table.insert(p);
            }
            StateRecord::Left(l) => {
                let p = l.proc.as_ref().map(|p| self.proc_from_state(p));
                self.table.restore_left(l.at_ns, (l.pid, l.tick), p);
            }
            StateRecord::Inferred(x) => self.inferred_exits.push_back(InferredExit {
                due_ns: x.due_ns,
                pid: x.pid,
                start_ns: x.start_ns,
                event: x.event.clone(),
            }),
            StateRecord::Held(h) => {
                let id = self.shared_id(&h.id);
                self.holds.restore(
                    id,
                    (h.age_ns, h.age_seq),
                    h.ts_ns,
                    h.member,
                    h.event.clone(),
                );
            }
        }
    }
}
