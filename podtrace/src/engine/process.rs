//! The process table: live processes by pid, exited ones kept for a grace period.
use std::collections::VecDeque;

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use crate::output::Role;

/// USER_HZ: /proc reports start times in these ticks, so identities compare at this precision.
pub const TICK_NS: u64 = 10_000_000;

/// How long an exited process stays in the table (tree and late events), in boot-clock ns.
pub const EXITED_GRACE_NS: u64 = 10_000_000_000;
/// At most this many exited processes are kept, whatever their age.
pub const EXITED_MAX: usize = 65_536;

/// One process; its identity is (pid, start tick), so a reused pid is a different process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub start_ns: u64,
    pub ppid: u32,
    pub nspid: u32,
    pub pidns: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    pub filename: Option<Arc<str>>,
    pub argv: Arc<[String]>,
    pub cgroup_id: u64,
    /// Id of the container it belongs to.
    pub container: Option<Arc<str>>,
    pub role: Option<Role>,
    /// Boot-clock ns of its exit, if it exited.
    pub exited_ns: Option<u64>,
}

impl Proc {
    pub fn same_identity(&self, pid: u32, start_ns: u64) -> bool {
        self.pid == pid && self.start_ns / TICK_NS == start_ns / TICK_NS
    }
}

#[derive(Default)]
pub struct Table {
    live: HashMap<u32, Proc>,
    /// Exited processes in exit order, keyed by (pid, start tick).
    exited: HashMap<(u32, u64), Proc>,
    exit_order: VecDeque<(u64, u32, u64)>,
}

impl Table {
    pub fn get(&self, pid: u32) -> Option<&Proc> {
        self.live.get(&pid)
    }

    pub fn get_mut(&mut self, pid: u32) -> Option<&mut Proc> {
        self.live.get_mut(&pid)
    }

    /// Inserts a live process, replacing whatever had the pid (a missed exit or pid reuse).
    pub fn insert(&mut self, p: Proc) {
        self.live.insert(p.pid, p);
    }

    /// The live process with this identity, if the table has it.
    pub fn live_matching(&mut self, pid: u32, start_ns: u64) -> Option<&mut Proc> {
        self.live
            .get_mut(&pid)
            .filter(|p| p.same_identity(pid, start_ns))
    }

    /// Moves a live process to the exited set.
    pub fn retire(&mut self, pid: u32, at_ns: u64) -> Option<Proc> {
        let mut p = self.live.remove(&pid)?;
        p.exited_ns = Some(at_ns);
        let key = (p.pid, p.start_ns / TICK_NS);
        self.exited.insert(key, p.clone());
        self.exit_order.push_back((at_ns, key.0, key.1));
        Some(p)
    }

    /// Drops exited processes older than the grace period or beyond the bound.
    pub fn evict(&mut self, now_ns: u64) {
        while let Some(&(at, pid, tick)) = self.exit_order.front() {
            let old = now_ns.saturating_sub(at) > EXITED_GRACE_NS;
            if !old && self.exit_order.len() <= EXITED_MAX {
                break;
            }
            self.exit_order.pop_front();
            self.exited.remove(&(pid, tick));
        }
    }

    pub fn live(&self) -> impl Iterator<Item = &Proc> {
        self.live.values()
    }

    pub fn live_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
        self.live.values_mut()
    }

    pub fn exited(&self) -> impl Iterator<Item = &Proc> {
        self.exited.values()
    }

    pub fn live_len(&self) -> usize {
        self.live.len()
    }

    pub fn exited_len(&self) -> usize {
        self.exited.len()
    }
}
