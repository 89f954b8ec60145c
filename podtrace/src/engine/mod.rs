//! The engine: trace records in (kernel events and the facts recorded before them), enriched
//! events out.
//!
//! Pure and deterministic: it never looks at the system, and its clock is the events' own
//! time. Live, replay and tree push the same [`Record`]s through [`Engine::apply`]; what the
//! engine needs from outside (cgroup paths) it asks *before* an event through
//! [`Engine::next_question`], and the answer arrives as a record of its own, which the
//! recorder writes, so replay gets the same answers at the same place.
pub mod attribute;
pub mod cgroups;
pub mod containers;
pub mod hold;
mod intern;
pub mod process;
pub mod state;

use std::sync::Arc;

use crate::cgroups::{CgroupSetup, Hierarchy};
use crate::clock::{BootClock, TsFormatter};
use crate::kernel_event::{KernelEvent, Kind, ReapEvent};
use crate::output::{Event, ProcessFields, Role, Timestamp};
use crate::snapshot::ProcInfo;
use crate::trace::{Header, LostRecord, MalformedRecord, Record};
use crate::wait_status;
use cgroups::{CgroupCache, CgroupKey, Lookup};
use containers::Registry;
pub use containers::Request;
use hold::{Holds, Member, Release};
use intern::Interner;
use process::{Proc, Slot, Table};

/// Finished containers stay this long (for late events and the tree).
pub const CONTAINER_GRACE_NS: u64 = 10_000_000_000;
/// A process a resync found gone without its exit gets an inferred exit when its real one has
/// not come this long (event time) after the resync: records queued before the resync come
/// well within it (they are at most `replay::REORDER_NS` out of order).
pub const INFER_EXIT_AFTER_NS: u64 = 1_000_000_000;

/// What the engine wants to know before it takes an event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Question {
    /// The path of cgroup `id` in `hierarchy`; `pid` was in it (a hint for the lookup).
    CgroupPath {
        hierarchy: Hierarchy,
        id: u64,
        pid: u32,
    },
}

#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stats {
    pub events: u64,
    pub lost: u64,
    /// Second exits of a process (dropped: one exit per process).
    pub duplicate_exits: u64,
    /// Events about an older process than the table's for their pid (changed nothing).
    pub stale_events: u64,
    pub reaps: u64,
    /// Processes found gone without their exit (at their reap, or by a resync).
    pub vanished: u64,
    /// Exits printed as inferred (their kernel record was lost).
    pub inferred_exits: u64,
    /// Processes a resync found that the table did not have.
    pub resync_added: u64,
    pub resyncs: u64,
    pub malformed: u64,
    /// Execs of processes in no container (a container counts its own: `Container::execs`).
    pub host_execs: u64,
}

/// The exit of a process a resync found gone, printed unless its real exit comes first.
struct InferredExit {
    due_ns: u64,
    pid: u32,
    start_ns: u64,
    /// Made when it was found gone (attributed as it was then).
    event: Event,
}

/// Records collected before they are applied: the start-up snapshot, or a resync's /proc;
/// or a segment's state being put back (applied as it comes, until `state_end`).
enum Pending {
    Snapshot(Vec<ProcInfo>),
    Resync { ts_ns: u64, procs: Vec<ProcInfo> },
    State,
    None,
}

pub struct Engine {
    clock: BootClock,
    node: Option<Arc<str>>,
    host_pidns: u32,
    setup: CgroupSetup,
    /// `cgroup_hierarchy` values, v2 and v1.
    labels: [Option<Arc<str>>; 2],
    table: Table,
    containers: Registry,
    cgroups: CgroupCache,
    texts: Interner,
    pending: Pending,
    /// Exits to infer, in the order they were found gone (so also by `due_ns`).
    inferred_exits: std::collections::VecDeque<InferredExit>,
    /// How long events of a kubelet container may wait for its CRI answer (the header's
    /// `hold_ns`; 0: never held).
    hold_ns: u64,
    /// Events held for their container's CRI answer.
    holds: Holds,
    /// The kernel side reports reaps (trace format 2 on): an exited process is a zombie until
    /// its reap. Format 1 traces have none: there the exit removes it.
    reaps: bool,
    /// Resyncs read /proc off the live loop (format 4 on): see `resync`.
    late_resyncs: bool,
    now_ns: u64,
    ts: TsFormatter,
    pub stats: Stats,
}

/// What `process_fields` reads of the engine, borrowed field by field (so that a process
/// borrowed from `table` can be read at the same time).
macro_rules! sources {
    ($engine:expr) => {
        Sources {
            cgroups: &$engine.cgroups,
            containers: &mut $engine.containers,
            labels: &$engine.labels,
            clock: $engine.clock,
            node: &$engine.node,
        }
    };
}

impl Engine {
    /// The engine for a trace with this header (live: the header `run` writes).
    pub fn new(h: &Header) -> Self {
        let setup = h.cgroups.clone();
        let labels = [
            setup.label(Hierarchy::V2).map(Arc::from),
            setup.label(Hierarchy::V1).map(Arc::from),
        ];
        Self {
            clock: BootClock {
                offset_ns: h.boot_offset_ns,
            },
            node: h.node.as_deref().map(Arc::from),
            host_pidns: h.host_pidns,
            setup,
            labels,
            table: Table::default(),
            containers: Registry::default(),
            cgroups: CgroupCache::default(),
            texts: Interner::default(),
            pending: Pending::Snapshot(Vec::new()),
            inferred_exits: std::collections::VecDeque::new(),
            hold_ns: h.hold_ns,
            holds: Holds::default(),
            reaps: h.format >= 2,
            late_resyncs: h.format >= 4,
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

    pub fn cgroup_cache(&self) -> &CgroupCache {
        &self.cgroups
    }

    pub fn cgroup_setup(&self) -> &CgroupSetup {
        &self.setup
    }

    /// Boot-clock time of the latest record seen.
    pub fn now_ns(&self) -> u64 {
        self.now_ns
    }

    /// What the engine asks of the outside world since the last call.
    pub fn take_requests(&mut self) -> Vec<Request> {
        self.containers.take_requests()
    }

    /// Events are held for a CRI answer now (the live loop then sends `tick`s, so that the
    /// bound is kept on a quiet node too).
    pub fn holding(&self) -> bool {
        !self.holds.is_empty()
    }

    /// The hold's bound (the header's `hold_ns`).
    pub fn hold_ns(&self) -> u64 {
        self.hold_ns
    }

    /// How many events were held and how they went out.
    pub fn hold_stats(&self) -> &hold::HoldStats {
        &self.holds.stats
    }

    /// Applies one record; appends the events to print to `out`.
    pub fn apply(&mut self, rec: &Record, out: &mut Vec<Event>) {
        // A record's time first releases what waited past the bound: those events are older
        // than whatever the record itself prints.
        if let Some(ts) = rec.ts_ns() {
            self.advance(ts);
            self.expire_holds(out);
        }
        let start = out.len();
        self.apply_record(rec, out);
        self.route(start, out);
        match rec {
            Record::Cri(f) => self.release(&f.id, Release::Answered, out),
            Record::CriUnknown(u) => self.release(&u.id, Release::Unknown, out),
            Record::End(_) => {
                let now = self.now_ns;
                self.holds.release_all(now, &mut self.containers, out);
            }
            _ => {}
        }
    }

    fn release(&mut self, id: &str, why: Release, out: &mut Vec<Event>) {
        let now = self.now_ns;
        self.holds.release(id, why, now, &mut self.containers, out);
    }

    /// Releases the queues held for longer than the bound.
    fn expire_holds(&mut self, out: &mut Vec<Event>) {
        if self.holds.is_empty() {
            return;
        }
        let now = self.now_ns;
        self.holds.expire(
            now.saturating_sub(self.hold_ns),
            now,
            &mut self.containers,
            out,
        );
    }

    /// Holds the events from `start` on whose container waits for its CRI answer, or has
    /// events held already (its order is kept); the others stay in `out`.
    fn route(&mut self, start: usize, out: &mut Vec<Event>) {
        if out.len() == start || (self.hold_ns == 0 && self.holds.is_empty()) {
            return;
        }
        let made: Vec<Event> = out.drain(start..).collect();
        for ev in made {
            let key = ev
                .process()
                .and_then(|p| p.container.as_ref())
                .and_then(|c| self.hold_key(&c.id));
            match key {
                Some(key) => {
                    let now = self.now_ns;
                    self.holds
                        .hold(&key, Member::Container, now, ev, &mut self.containers, out);
                }
                None => out.push(ev),
            }
        }
    }

    /// The container's shared id when its events are to be held.
    fn hold_key(&self, id: &str) -> Option<Arc<str>> {
        let c = self.containers.get(id)?;
        let waits = self.hold_ns > 0
            && c.awaits_cri()
            && self.now_ns < c.first_seen_ns.saturating_add(self.hold_ns);
        (waits || self.holds.has(id)).then(|| c.id.clone())
    }

    fn apply_record(&mut self, rec: &Record, out: &mut Vec<Event>) {
        match rec {
            Record::Tick(_) | Record::Header(_) => {}
            // The trace ends: exits still waiting for their real one will not get it.
            Record::End(_) => self.infer_exits(u64::MAX, out),
            Record::Proc(p) => match &mut self.pending {
                Pending::Snapshot(v) | Pending::Resync { procs: v, .. } => v.push(p.clone()),
                // The reader keeps proc records inside a snapshot or a resync.
                Pending::State | Pending::None => {}
            },
            Record::State(s) => self.restore_state(s),
            Record::StateEnd {} => {
                if matches!(self.pending, Pending::State) {
                    self.pending = Pending::None;
                }
            }
            // A segment ends here and the next goes on: nothing ends for the engine.
            Record::SegmentEnd(_) => {}
            Record::Recording(r) => out.push(Event::Recording {
                ts: self.ts.format(self.clock.unix_ns(r.ts_ns)),
                state: r.state,
                file: r.file.clone(),
                error: r.error.clone(),
                records_lost: r.records_lost,
                node: self.node.clone(),
            }),
            Record::SnapshotEnd {} => {
                if let Pending::Snapshot(procs) =
                    std::mem::replace(&mut self.pending, Pending::None)
                {
                    self.load_snapshot(&procs);
                }
            }
            Record::Cgroup(f) => {
                self.cgroups
                    .learn((f.hierarchy, f.id), f.path.as_deref(), self.now_ns);
            }
            Record::Cri(f) => self.containers.learn_cri(f, self.now_ns),
            Record::CriUnknown(u) => self.containers.learn_cri_unknown(&u.id),
            Record::Clock(c) => {
                self.advance(c.ts_ns);
                self.clock.offset_ns = c.offset_ns;
            }
            Record::ResyncStart(r) => {
                self.pending = Pending::Resync {
                    ts_ns: r.ts_ns,
                    procs: Vec::new(),
                };
            }
            Record::ResyncEnd(end) => {
                if let Pending::Resync { ts_ns, procs } =
                    std::mem::replace(&mut self.pending, Pending::None)
                {
                    self.resync(ts_ns, &procs, &end.unread);
                }
            }
            Record::Event(ev) => self.ingest(ev, out),
            Record::Reap(r) => self.reap(r, out),
            Record::Lost(l) => self.lost(l, out),
            Record::Malformed(m) => self.malformed(m, out),
        }
    }

    fn advance(&mut self, ts_ns: u64) {
        self.now_ns = self.now_ns.max(ts_ns);
    }

    /// Advances to `ts_ns` and prints the inferred exits then due (before what the record
    /// itself prints).
    fn advance_printing(&mut self, ts_ns: u64, out: &mut Vec<Event>) {
        self.advance(ts_ns);
        self.infer_exits(self.now_ns, out);
    }

    /// Prints the inferred exits due at `now_ns` whose real exit did not come.
    fn infer_exits(&mut self, now_ns: u64, out: &mut Vec<Event>) {
        while self
            .inferred_exits
            .front()
            .is_some_and(|x| x.due_ns <= now_ns)
        {
            let Some(x) = self.inferred_exits.pop_front() else {
                break;
            };
            let exit_seen = match self.table.gone_mut(x.pid, x.start_ns) {
                Some(p) => std::mem::replace(&mut p.exit_seen, true),
                // Forgotten already (the bound on processes that left): its real exit, had it
                // come since, made it a table entry again.
                None => self
                    .table
                    .get(x.pid)
                    .is_some_and(|p| p.same_identity(x.pid, x.start_ns) && p.exit_seen),
            };
            if exit_seen {
                // Its real exit came (and was printed) meanwhile.
                continue;
            }
            self.stats.inferred_exits += 1;
            out.push(x.event);
        }
    }

    /// The exit of a process whose kernel record was lost: how it ended is unknown.
    fn inferred_exit(process: ProcessFields) -> Event {
        Event::Exit {
            process,
            exit_code: None,
            signal: None,
            core_dumped: None,
            duration_ns: None,
            inferred: true,
        }
    }

    /// What a kernel exit record of `p` would have said of its process, at `ts_ns`.
    fn exit_of(p: &Proc, ts_ns: u64, start_ns: u64) -> KernelEvent {
        KernelEvent {
            kind: Kind::Exit,
            ts_ns,
            pid: p.pid,
            tid: p.pid,
            ppid: p.ppid,
            nspid: p.nspid,
            pidns: p.pidns,
            uid: p.uid,
            gid: p.gid,
            comm: p.comm.to_string(),
            cgroup_id: 0,
            cgroup_v1_id: 0,
            start_ns,
            partial: false,
            exec: None,
            exit: None,
        }
    }

    // ------------------------------------------------------------------------------------
    // cgroups

    fn v2_key(&self, id: u64) -> Option<CgroupKey> {
        (self.setup.v2 && id != 0).then_some((Hierarchy::V2, id))
    }

    fn v1_key(&self, id: u64) -> Option<CgroupKey> {
        (self.setup.v1.is_some() && id != 0).then_some((Hierarchy::V1, id))
    }

    /// Where a task with these cgroup ids is placed: its v2 cgroup, unless that is the root
    /// or unknown and its v1 cgroup is known (v1-only hosts, and tasks in the v2 root of a
    /// hybrid host such as podman's conmon).
    fn placement(&self, v2: u64, v1: u64) -> Option<CgroupKey> {
        let known = |k: Option<CgroupKey>| k.and_then(|k| self.cgroups.get(k).map(|c| (k, c)));
        let v2 = known(self.v2_key(v2));
        let v1 = known(self.v1_key(v1));
        match (v2, v1) {
            (Some((k, c)), _) if &*c.path != "/" => Some(k),
            (Some((k2, _)), Some((k1, c1))) => Some(if &*c1.path != "/" { k1 } else { k2 }),
            (None, Some((k1, _))) => Some(k1),
            (Some((k2, _)), None) => Some(k2),
            (None, None) => None,
        }
    }

    /// The next thing to look up before `ev` is applied (call until None, applying each
    /// answer as a `cgroup` record).
    pub fn next_question(&self, ev: &KernelEvent) -> Option<Question> {
        // Answers are learnt at the engine's time, so they are looked up at it too: an
        // answer just given is never asked again for the same event.
        let ask = |k: Option<CgroupKey>| {
            k.filter(|&k| self.cgroups.lookup(k, self.now_ns) == Lookup::Ask)
        };
        let q = ask(self.v2_key(ev.cgroup_id)).or_else(|| {
            // v1 only matters where v2 does not place the task.
            let v2_placed = self
                .v2_key(ev.cgroup_id)
                .and_then(|k| self.cgroups.get(k))
                .is_some_and(|c| &*c.path != "/");
            if v2_placed {
                None
            } else {
                ask(self.v1_key(ev.cgroup_v1_id))
            }
        });
        q.map(|(hierarchy, id)| Question::CgroupPath {
            hierarchy,
            id,
            pid: ev.pid,
        })
    }

    /// Places a table entry in `key`, keeping the cache's and containers' counts.
    fn place(&mut self, pid: u32, key: Option<CgroupKey>) {
        let Some(p) = self.table.get_mut(pid) else {
            return;
        };
        if p.cgroup == key || p.is_zombie() {
            return;
        }
        let old = std::mem::replace(&mut p.cgroup, key);
        if let Some(k) = old {
            self.cgroups.release(k, self.now_ns);
        }
        if let Some(k) = key {
            self.cgroups.hold(k);
        }
    }

    // ------------------------------------------------------------------------------------
    // the table

    fn new_proc(&mut self, ev: &KernelEvent) -> Proc {
        Proc {
            pid: ev.pid,
            start_ns: ev.start_ns,
            ppid: ev.ppid,
            nspid: ev.nspid,
            pidns: ev.pidns,
            uid: ev.uid,
            gid: ev.gid,
            comm: self.texts.comm(&ev.comm),
            filename: None,
            argv: self.texts.argv(&[]),
            cgroup: None,
            container: None,
            pod_of: None,
            role: None,
            exited_ns: None,
            exit_status: None,
            exit_seen: false,
        }
    }

    fn proc_from_info(p: &ProcInfo) -> Proc {
        Proc {
            pid: p.pid,
            start_ns: p.start_ns,
            ppid: p.ppid,
            nspid: p.nspid,
            pidns: p.pidns,
            uid: p.uid,
            gid: p.gid,
            comm: Arc::from(p.comm.as_str()),
            filename: p.exe.as_deref().map(Arc::from),
            argv: p.argv.clone().into(),
            cgroup: None,
            container: None,
            pod_of: None,
            role: None,
            // A zombie already: its exit happened before podtrace looked (no event comes).
            exited_ns: p.zombie.then_some(p.start_ns),
            exit_status: None,
            exit_seen: p.zombie,
        }
    }

    /// Takes a process out of the live table for good: its cgroup and container counts
    /// drop, and it is kept findable for the grace period.
    fn remove(&mut self, pid: u32) -> Option<()> {
        let mut p = self.table.take(pid)?;
        if let Some(k) = p.cgroup.take() {
            if !p.is_zombie() {
                self.cgroups.release(k, self.now_ns);
            }
        }
        if !p.is_zombie() {
            if let Some(id) = p.member().cloned() {
                self.containers.detach(&id, self.now_ns);
                self.containers.process_exited(&id, p.pid);
            }
        }
        self.table.keep_gone(p, self.now_ns);
        Some(())
    }

    /// The pid is free for a new process: whatever older process the table holds for it is
    /// gone (its exit or reap was lost).
    fn free_pid(&mut self, pid: u32) {
        if self.table.get(pid).is_some() {
            self.remove(pid);
        }
    }

    /// Inserts a process and attributes it; `inherited` is its parent's container (fork) or
    /// its own before exec.
    fn add(&mut self, p: Proc, key: Option<CgroupKey>, inherited: Option<Arc<str>>) {
        let pid = p.pid;
        self.table.insert(p);
        self.place(pid, key);
        self.attribute(pid, inherited);
    }

    /// Loads the start-up /proc picture. Produces no events.
    fn load_snapshot(&mut self, procs: &[ProcInfo]) {
        for p in procs {
            self.advance(p.start_ns);
        }
        let pids = self.insert_infos(procs);
        // In pid order, twice, so that children see what their parents were given.
        for _ in 0..2 {
            for &pid in &pids {
                let inherited = self.parent_container(pid);
                self.attribute(pid, inherited);
            }
        }
    }

    /// Learns the cgroups of /proc entries and inserts them (without attributing); returns
    /// their pids, sorted.
    fn insert_infos(&mut self, procs: &[ProcInfo]) -> Vec<u32> {
        let mut pids = Vec::with_capacity(procs.len());
        for p in procs {
            for (h, path, id) in [
                (Hierarchy::V2, &p.cgroup, p.cgroup_id),
                (Hierarchy::V1, &p.cgroup_v1, p.cgroup_v1_id),
            ] {
                if let (Some(path), true) = (path, id != 0) {
                    self.cgroups.learn((h, id), Some(path), self.now_ns);
                }
            }
            let key = self.placement(p.cgroup_id, p.cgroup_v1_id);
            self.free_pid(p.pid);
            self.table.insert(Self::proc_from_info(p));
            self.place(p.pid, key);
            pids.push(p.pid);
        }
        pids.sort_unstable();
        pids
    }

    /// The container a process inherits from its parent (not from a helper: conmon's and the
    /// shim's children are the runtime and the init, which say for themselves).
    fn parent_container(&self, pid: u32) -> Option<Arc<str>> {
        let ppid = self.table.get(pid)?.ppid;
        let parent = self.table.get(ppid)?;
        if attribute::is_helper(parent.role) {
            None
        } else {
            parent.container.clone()
        }
    }

    /// /proc read again after a loss: processes it does not list (and that started before
    /// it) are gone, unless their read did not finish (`unread`); the ones the table lacks
    /// are added. Produces no events.
    ///
    /// From format 4 on /proc is read off the live loop, so records that came meanwhile were
    /// applied before the resync's: a process it lists that the table has as gone or as an
    /// older process of a pid now reused (it left while /proc was read) is not added again.
    fn resync(&mut self, ts_ns: u64, procs: &[ProcInfo], unread: &[u32]) {
        self.advance(ts_ns);
        self.stats.resyncs += 1;
        let alive: rustc_hash::FxHashSet<(u32, u64)> = procs
            .iter()
            .map(|p| (p.pid, process::tick(p.start_ns)))
            .collect();
        let unread: rustc_hash::FxHashSet<u32> = unread.iter().copied().collect();
        let mut dead: Vec<u32> = self
            .table
            .live()
            .filter(|p| {
                p.start_ns < ts_ns
                    && !alive.contains(&(p.pid, process::tick(p.start_ns)))
                    && !unread.contains(&p.pid)
            })
            .map(|p| p.pid)
            .collect();
        // In pid order, not the hash map's: the order they leave in is kept (it decides which
        // of them the bound on processes that left drops first).
        dead.sort_unstable();
        for pid in dead {
            if let Some(p) = self.table.get(pid).filter(|p| !p.exit_seen) {
                // Its exit was lost, or is still on its way: inferred unless it comes.
                self.stats.vanished += 1;
                let ev = Self::exit_of(p, ts_ns, p.start_ns);
                let event = Self::inferred_exit(self.fields(&ev));
                self.inferred_exits.push_back(InferredExit {
                    due_ns: ts_ns.saturating_add(INFER_EXIT_AFTER_NS),
                    pid,
                    start_ns: ev.start_ns,
                    event,
                });
            }
            self.remove(pid);
        }
        let late = self.late_resyncs;
        let new: Vec<ProcInfo> = procs
            .iter()
            .filter(|p| match self.table.slot(p.pid, p.start_ns) {
                Slot::Current => false,
                Slot::New => true,
                Slot::Gone | Slot::Stale => !late,
            })
            .cloned()
            .collect();
        self.stats.resync_added += new.len() as u64;
        for p in procs {
            if self.table.slot(p.pid, p.start_ns) == Slot::Current {
                self.table.set_ppid(p.pid, p.ppid);
            }
        }
        let pids = self.insert_infos(&new);
        for _ in 0..2 {
            for &pid in &pids {
                let inherited = self.parent_container(pid);
                self.attribute(pid, inherited);
            }
        }
    }

    // ------------------------------------------------------------------------------------
    // events

    fn ingest(&mut self, ev: &KernelEvent, out: &mut Vec<Event>) {
        self.advance_printing(ev.ts_ns, out);
        self.stats.events += 1;
        match ev.kind {
            Kind::Exec => self.on_exec(ev, out),
            Kind::Fork => self.on_fork(ev, out),
            Kind::Exit => self.on_exit(ev, out),
            Kind::Thread => {
                match self.table.slot(ev.pid, ev.start_ns) {
                    Slot::New => self.track_unknown(ev),
                    Slot::Stale | Slot::Gone => self.stats.stale_events += 1,
                    Slot::Current => {}
                }
                let process = self.fields(ev);
                out.push(Event::Thread { process });
            }
        }
        self.housekeeping();
    }

    fn housekeeping(&mut self) {
        self.table.evict(self.now_ns);
        self.containers.evict(self.now_ns, CONTAINER_GRACE_NS);
        self.cgroups.sweep(self.now_ns);
    }

    /// Adds a process first seen now (started between the snapshot and attach, or its fork
    /// was lost).
    fn track_unknown(&mut self, ev: &KernelEvent) {
        self.free_pid(ev.pid);
        let key = self.placement(ev.cgroup_id, ev.cgroup_v1_id);
        let ppid = ev.ppid;
        let inherited = self
            .table
            .get(ppid)
            .filter(|p| !attribute::is_helper(p.role))
            .and_then(|p| p.container.clone());
        let p = self.new_proc(ev);
        self.add(p, key, inherited);
    }

    /// What an event of the current process says about it now.
    fn update_from_event(&mut self, ev: &KernelEvent) {
        let key = self.placement(ev.cgroup_id, ev.cgroup_v1_id);
        if let Some(p) = self.table.get_mut(ev.pid) {
            p.nspid = ev.nspid;
            p.pidns = ev.pidns;
            p.uid = ev.uid;
            p.gid = ev.gid;
            if *p.comm != *ev.comm {
                p.comm = self.texts.comm(&ev.comm);
            }
            if process::tick(p.start_ns) == process::tick(ev.start_ns) {
                p.start_ns = ev.start_ns;
            }
        }
        self.table.set_ppid(ev.pid, ev.ppid);
        if key.is_some() {
            self.place(ev.pid, key);
        }
    }

    fn on_exec(&mut self, ev: &KernelEvent, out: &mut Vec<Event>) {
        let (filename, argv, argv_truncated, filename_truncated, trimmed) = match &ev.exec {
            Some(x) => (
                self.texts.filename(&x.filename),
                self.texts.argv(&x.argv),
                x.argv_truncated,
                x.filename_truncated,
                x.trimmed,
            ),
            None => (
                self.texts.filename(""),
                self.texts.argv(&[]),
                false,
                false,
                false,
            ),
        };
        match self.table.slot(ev.pid, ev.start_ns) {
            Slot::Stale | Slot::Gone => {
                self.stats.stale_events += 1;
            }
            slot => {
                let inherited = if slot == Slot::Current {
                    self.update_from_event(ev);
                    self.table.get(ev.pid).and_then(|p| p.container.clone())
                } else {
                    self.free_pid(ev.pid);
                    let key = self.placement(ev.cgroup_id, ev.cgroup_v1_id);
                    let p = self.new_proc(ev);
                    self.table.insert(p);
                    self.place(ev.pid, key);
                    self.parent_container(ev.pid)
                };
                if let Some(p) = self.table.get_mut(ev.pid) {
                    if !trimmed {
                        p.filename = Some(filename.clone());
                        p.argv = argv.clone();
                    }
                }
                self.attribute(ev.pid, inherited);
                self.count_exec(ev.pid);
            }
        }
        let process = self.fields(ev);
        out.push(Event::Exec {
            process,
            filename,
            argv,
            argv_truncated,
            filename_truncated,
            trimmed,
        });
    }

    /// Counts an exec of a current process: for its container, else for the host (a view's
    /// exec rates are differences of these counts).
    fn count_exec(&mut self, pid: u32) {
        match self.table.get(pid).and_then(|p| p.container.as_deref()) {
            Some(id) => self.containers.count_exec(id),
            None => self.stats.host_execs += 1,
        }
    }

    fn on_fork(&mut self, ev: &KernelEvent, out: &mut Vec<Event>) {
        match self.table.slot(ev.pid, ev.start_ns) {
            Slot::Stale | Slot::Gone => self.stats.stale_events += 1,
            Slot::Current => self.update_from_event(ev),
            Slot::New => {
                self.free_pid(ev.pid);
                let mut child = self.new_proc(ev);
                let mut inherited = None;
                if let Some(parent) = self.table.get(ev.ppid) {
                    child.filename.clone_from(&parent.filename);
                    // A copy of a helper or runtime is one until it execs; a child of the
                    // init is not the init.
                    child.role = match parent.role {
                        Some(Role::ContainerInit) => None,
                        r => r,
                    };
                    inherited = if attribute::is_helper(parent.role) && child.role.is_none() {
                        None
                    } else {
                        parent.container.clone()
                    };
                }
                let key = self.placement(ev.cgroup_id, ev.cgroup_v1_id);
                self.add(child, key, inherited);
            }
        }
        let process = self.fields(ev);
        out.push(Event::Fork { process });
    }

    fn on_exit(&mut self, ev: &KernelEvent, out: &mut Vec<Event>) {
        match self.table.slot(ev.pid, ev.start_ns) {
            Slot::Current => {
                if self.table.get(ev.pid).is_some_and(|p| p.exit_seen) {
                    self.stats.duplicate_exits += 1;
                    return;
                }
                self.update_from_event(ev);
            }
            slot => {
                // An identity that already left: its exit was printed (a duplicate), or a
                // resync found it gone before its exit arrived (print it now, attributed).
                if let Some(p) = self.table.gone_mut(ev.pid, ev.start_ns) {
                    if p.exit_seen {
                        self.stats.duplicate_exits += 1;
                        return;
                    }
                    p.exit_seen = true;
                    p.exit_status = ev.exit.map(|x| x.status);
                    let p = p.clone();
                    let process = self.fields_of(ev, &p);
                    out.push(Self::exit_event(ev, process));
                    return;
                }
                if slot == Slot::Stale {
                    // An older process with this pid, never in the table: printed from what
                    // the event says, and remembered so that its exit is printed once.
                    self.stats.stale_events += 1;
                    let process = self.fields(ev);
                    out.push(Self::exit_event(ev, process));
                    let mut p = self.new_proc(ev);
                    p.exited_ns = Some(ev.ts_ns);
                    p.exit_status = ev.exit.map(|x| x.status);
                    p.exit_seen = true;
                    self.table.keep_gone(p, self.now_ns);
                    return;
                }
                self.track_unknown(ev);
            }
        }
        let process = self.fields(ev);
        out.push(Self::exit_event(ev, process));
        self.process_exited(ev);
        if !self.reaps {
            self.remove(ev.pid);
        }
    }

    fn exit_event(ev: &KernelEvent, process: ProcessFields) -> Event {
        let (status, duration_ns) = ev.exit.map(|x| (x.status, x.duration_ns)).unwrap_or((0, 0));
        let o = wait_status::decode(status);
        Event::Exit {
            process,
            exit_code: o.exit_code,
            signal: o.signal,
            core_dumped: Some(o.core_dumped),
            duration_ns: Some(duration_ns),
            inferred: false,
        }
    }

    /// The process is a zombie now: it leaves its cgroup and container, its children are
    /// reparented; it stays in the table until it is reaped.
    fn process_exited(&mut self, ev: &KernelEvent) {
        if self.table.slot(ev.pid, ev.start_ns) != Slot::Current {
            return;
        }
        let Some(p) = self.table.get_mut(ev.pid) else {
            return;
        };
        p.exited_ns = Some(ev.ts_ns);
        p.exit_status = ev.exit.map(|x| x.status);
        p.exit_seen = true;
        let (pid, key, container, role) = (p.pid, p.cgroup, p.member().cloned(), p.role);
        if let Some(k) = key {
            self.cgroups.release(k, self.now_ns);
        }
        // Most processes leave no children: no copy of the entry for them.
        if self.table.has_children(pid) {
            if let Some(dead) = self.table.get(pid).cloned() {
                self.reparent_children(&dead);
            }
        }
        if let Some(id) = &container {
            if self.containers.member_exited(id, pid, self.now_ns) {
                self.promote_helper(id, role);
            }
        }
    }

    fn reap(&mut self, r: &ReapEvent, out: &mut Vec<Event>) {
        self.advance_printing(r.ts_ns, out);
        if self.table.slot(r.pid, r.start_ns) != Slot::Current {
            return;
        }
        self.stats.reaps += 1;
        if let Some(p) = self.table.get(r.pid).filter(|p| !p.is_zombie()) {
            // Its exit was lost: it ended all the same, at the latest now. Its exit is printed,
            // inferred (how it ended is unknown), and the process exits as at an exit record.
            self.stats.vanished += 1;
            self.stats.inferred_exits += 1;
            let ev = Self::exit_of(p, r.ts_ns, r.start_ns);
            let process = self.fields(&ev);
            out.push(Self::inferred_exit(process));
            self.process_exited(&ev);
        }
        self.remove(r.pid);
        self.housekeeping();
    }

    /// conmon and the containerd shim daemonize: the process that exec'd exits and its forked
    /// copy carries on as the container's helper.
    fn promote_helper(&mut self, id: &str, role: Option<Role>) {
        let Some(role) = role else { return };
        let next = self
            .table
            .live()
            .filter(|p| !p.is_zombie())
            .filter(|p| p.container.as_deref() == Some(id) && p.role == Some(role))
            .filter(|p| !attribute::is_exec_session(p))
            .map(|p| p.pid)
            .min();
        if let Some(pid) = next {
            let c = self.containers.entry(id, self.now_ns);
            c.helper_pid = Some(pid);
        }
    }

    /// Orphans go to the init of their pid namespace when it lives on (inside a container),
    /// else to the nearest subreaper the engine knows (conmon, shim), else to PID 1. The
    /// next event of each child carries the kernel's own answer.
    fn reparent_children(&mut self, dead: &Proc) {
        let kids = self.table.children_of(dead.pid);
        if kids.is_empty() {
            return;
        }
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
            if attribute::is_helper(p.role) && !p.is_zombie() {
                reaper = p.pid;
                break;
            }
            if p.ppid == cur || p.ppid == 0 {
                break;
            }
            cur = p.ppid;
        }
        for kid in kids {
            let same_ns = self
                .table
                .get(kid)
                .is_some_and(|p| p.pidns == dead.pidns && p.pidns != self.host_pidns);
            let to = match ns_init {
                Some(init) if same_ns => init,
                _ => reaper,
            };
            self.table.set_ppid(kid, to);
        }
    }

    /// Reports events the kernel could not deliver.
    fn lost(&mut self, l: &LostRecord, out: &mut Vec<Event>) {
        self.advance_printing(l.ts_ns, out);
        self.stats.lost += l.count;
        out.push(Event::Lost {
            ts: self.ts.format(self.clock.unix_ns(l.ts_ns)),
            count: l.count,
            kinds: l.kinds,
            node: self.node.clone(),
        });
    }

    fn malformed(&mut self, m: &MalformedRecord, out: &mut Vec<Event>) {
        self.advance_printing(m.ts_ns, out);
        self.stats.malformed += 1;
        out.push(Event::Malformed {
            ts: self.ts.format(self.clock.unix_ns(m.ts_ns)),
            bytes: m.bytes,
            reason: m.reason.clone(),
            node: self.node.clone(),
        });
    }

    // ------------------------------------------------------------------------------------
    // output

    fn fields(&mut self, ev: &KernelEvent) -> ProcessFields {
        match self.table.get(ev.pid) {
            // Fields borrowed from the table entry (no copy of it): `table` and `containers`
            // are different fields.
            Some(p) if p.same_identity(ev.pid, ev.start_ns) => {
                process_fields(sources!(self), ev, p)
            }
            // Stale: what the event itself says, nothing from the table.
            _ => {
                let mut p = self.new_proc(ev);
                p.cgroup = self.placement(ev.cgroup_id, ev.cgroup_v1_id);
                p.container = p
                    .cgroup
                    .and_then(|k| self.cgroups.get(k))
                    .and_then(|c| c.info.container_id.as_deref())
                    .and_then(|id| self.containers.id(id));
                self.fields_of(ev, &p)
            }
        }
    }

    fn fields_of(&mut self, ev: &KernelEvent, p: &Proc) -> ProcessFields {
        process_fields(sources!(self), ev, p)
    }
}

/// What an event's fields are made from besides the event and its process.
struct Sources<'a> {
    cgroups: &'a CgroupCache,
    containers: &'a mut Registry,
    labels: &'a [Option<Arc<str>>; 2],
    clock: BootClock,
    node: &'a Option<Arc<str>>,
}

/// The fields of an event of process `p` (shared values are shared, not copied).
fn process_fields(s: Sources<'_>, ev: &KernelEvent, p: &Proc) -> ProcessFields {
    let (cgroup, cgroup_hierarchy, cgroup_id) =
        match p.cgroup.and_then(|k| s.cgroups.get(k).map(|c| (k, c))) {
            Some(((h, id), c)) => (
                Some(c.path.clone()),
                s.labels[match h {
                    Hierarchy::V2 => 0,
                    Hierarchy::V1 => 1,
                }]
                .clone(),
                Some(id),
            ),
            // Not placed: no id either (the kernel's v2 id would be of another hierarchy than
            // a v1 placement's, and on a v1-only node the v2 root's, the same for all).
            None => (None, None, None),
        };
    let (container, pod) = match (p.container.as_deref(), p.pod_of.as_deref()) {
        (Some(id), _) => s.containers.refs(id),
        (None, Some(id)) => (None, s.containers.refs(id).1),
        (None, None) => (None, None),
    };
    ProcessFields {
        ts: Timestamp(s.clock.unix_ns(ev.ts_ns)),
        pid: ev.pid,
        tid: ev.tid,
        ppid: ev.ppid,
        nspid: ev.nspid,
        pidns: ev.pidns,
        uid: ev.uid,
        gid: ev.gid,
        // The event's comm (a thread's may differ from its process's), shared with the table
        // when they agree.
        comm: if *p.comm == *ev.comm {
            p.comm.clone()
        } else {
            Arc::from(ev.comm.as_str())
        },
        cgroup_id,
        start_ns: ev.start_ns,
        cgroup,
        cgroup_hierarchy,
        container,
        pod,
        role: p.role,
        partial: ev.partial,
        node: s.node.clone(),
    }
}

#[cfg(test)]
mod tests;
