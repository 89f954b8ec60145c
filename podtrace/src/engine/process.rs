//! The process table, as the kernel's: one entry per pid for running processes and zombies
//! (a zombie's pid is not reused until it is reaped), children indexed by parent, and the
//! processes that left (reaped, or found gone by a /proc resync) kept for a grace period.
//!
//! A process's identity is (pid, start tick): a reused pid is a different process, and an
//! event whose identity is older than the table's entry for its pid is stale and changes
//! nothing.
use std::collections::VecDeque;
use std::sync::Arc;

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::cgroups::CgroupKey;
use crate::output::Role;

/// USER_HZ: /proc reports start times in these ticks, so identities compare at this precision.
pub const TICK_NS: u64 = 10_000_000;

/// How long a process that left the table stays findable (late events, the tree), in
/// boot-clock ns.
pub const GONE_GRACE_NS: u64 = 10_000_000_000;
/// At most this many processes that left are kept, whatever their age.
pub const GONE_MAX: usize = 65_536;

pub fn tick(start_ns: u64) -> u64 {
    start_ns / TICK_NS
}

/// One process; its identity is (pid, start tick).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Proc {
    pub pid: u32,
    pub start_ns: u64,
    pub ppid: u32,
    pub nspid: u32,
    pub pidns: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: Arc<str>,
    pub filename: Option<Arc<str>>,
    pub argv: Arc<[String]>,
    /// Where it is placed (hierarchy, cgroup id), when the engine knows that cgroup.
    pub cgroup: Option<CgroupKey>,
    /// Id of the container it belongs to.
    pub container: Option<Arc<str>>,
    /// When the container is unknown but the pid namespace is a pod's shared one: a
    /// container of that pod (whose pod the process is in).
    pub pod_of: Option<Arc<str>>,
    pub role: Option<Role>,
    /// Boot-clock ns of its exit: a zombie until it is reaped.
    pub exited_ns: Option<u64>,
    /// The raw wait status of its exit (what its parent's `waitpid` gets); None while it
    /// runs, and when how it ended is unknown (its exit record was lost, or it was a zombie
    /// already in the snapshot).
    pub exit_status: Option<u32>,
    /// Its `exit` was printed (a second one is a duplicate and is dropped).
    pub exit_seen: bool,
}

impl Proc {
    pub fn same_identity(&self, pid: u32, start_ns: u64) -> bool {
        self.pid == pid && tick(self.start_ns) == tick(start_ns)
    }

    pub fn is_zombie(&self) -> bool {
        self.exited_ns.is_some()
    }

    /// The registry entry it keeps alive: its container, else the entry of its pod.
    pub fn member(&self) -> Option<&Arc<str>> {
        self.container.as_ref().or(self.pod_of.as_ref())
    }
}

/// Where an event's (pid, start) stands against the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// The table's entry for the pid is this process.
    Current,
    /// The table holds a newer process with this pid: the event is about an older one.
    Stale,
    /// This process already left the table (reaped, or found gone): a late event.
    Gone,
    /// Not in the table (or only an older process with this pid, which must be gone).
    New,
}

/// A process that left, in the order they left.
struct Left {
    at_ns: u64,
    key: (u32, u64),
    /// None once a later departure of the same identity took its place.
    proc: Option<Proc>,
}

#[derive(Default)]
pub struct Table {
    live: HashMap<u32, Proc>,
    children: HashMap<u32, HashSet<u32>>,
    /// Processes that left, by (pid, start tick): when they left and their place in `left`.
    /// Every process goes through here, so the processes themselves are kept in the order
    /// they left (written at the back, dropped from the front: memory in order), and the
    /// index stays small.
    gone: HashMap<(u32, u64), (u64, u64)>,
    left: VecDeque<Left>,
    /// The place of `left`'s front.
    left_front: u64,
}

impl Table {
    pub fn get(&self, pid: u32) -> Option<&Proc> {
        self.live.get(&pid)
    }

    pub fn get_mut(&mut self, pid: u32) -> Option<&mut Proc> {
        self.live.get_mut(&pid)
    }

    pub fn slot(&self, pid: u32, start_ns: u64) -> Slot {
        match self.live.get(&pid) {
            Some(p) if p.same_identity(pid, start_ns) => Slot::Current,
            _ if self.gone.contains_key(&(pid, tick(start_ns))) => Slot::Gone,
            Some(p) if tick(start_ns) < tick(p.start_ns) => Slot::Stale,
            _ => Slot::New,
        }
    }

    /// A process that left, by identity.
    pub fn gone_mut(&mut self, pid: u32, start_ns: u64) -> Option<&mut Proc> {
        let &(_, place) = self.gone.get(&(pid, tick(start_ns)))?;
        self.left_at(place)?.proc.as_mut()
    }

    fn left_at(&mut self, place: u64) -> Option<&mut Left> {
        let i = usize::try_from(place.checked_sub(self.left_front)?).ok()?;
        self.left.get_mut(i)
    }

    /// Inserts a live process; the pid must be free (see `take`).
    pub fn insert(&mut self, p: Proc) {
        self.children.entry(p.ppid).or_default().insert(p.pid);
        if let Some(old) = self.live.insert(p.pid, p) {
            // Callers take the old entry first; keep the index right if one did not.
            self.unlink(old.pid, old.ppid);
        }
    }

    fn unlink(&mut self, pid: u32, ppid: u32) {
        if let Some(kids) = self.children.get_mut(&ppid) {
            kids.remove(&pid);
            if kids.is_empty() {
                self.children.remove(&ppid);
            }
        }
    }

    /// Removes a process from the live table (the caller decides where it goes).
    pub fn take(&mut self, pid: u32) -> Option<Proc> {
        let p = self.live.remove(&pid)?;
        self.unlink(p.pid, p.ppid);
        Some(p)
    }

    /// Keeps a process that left for the grace period.
    pub fn keep_gone(&mut self, p: Proc, at_ns: u64) {
        let key = (p.pid, tick(p.start_ns));
        let place = self.left_front + self.left.len() as u64;
        if let Some((_, older)) = self.gone.insert(key, (at_ns, place)) {
            // The same identity left again: the newer one is what is found.
            if let Some(l) = self.left_at(older) {
                l.proc = None;
            }
        }
        self.left.push_back(Left {
            at_ns,
            key,
            proc: Some(p),
        });
    }

    pub fn set_ppid(&mut self, pid: u32, ppid: u32) {
        let Some(p) = self.live.get_mut(&pid) else {
            return;
        };
        if p.ppid == ppid {
            return;
        }
        let old = std::mem::replace(&mut p.ppid, ppid);
        self.unlink(pid, old);
        self.children.entry(ppid).or_default().insert(pid);
    }

    pub fn has_children(&self, pid: u32) -> bool {
        // The index keeps no empty sets.
        self.children.contains_key(&pid)
    }

    /// Live children (running or zombie) of `pid`.
    pub fn children_of(&self, pid: u32) -> Vec<u32> {
        let mut v: Vec<u32> = self
            .children
            .get(&pid)
            .map(|s| s.iter().copied().collect())
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// Drops processes that left longer than the grace period ago or beyond the bound.
    pub fn evict(&mut self, now_ns: u64) {
        while let Some(front) = self.left.front() {
            let old = now_ns.saturating_sub(front.at_ns) > GONE_GRACE_NS;
            if !old && self.left.len() <= GONE_MAX {
                break;
            }
            let (at, key) = (front.at_ns, front.key);
            self.left.pop_front();
            self.left_front += 1;
            // The same identity can leave twice (found gone by a resync, then its late exit
            // and reap): only the entry queued for this time goes.
            if let Some(&(t, place)) = self.gone.get(&key) {
                if t == at {
                    self.gone.remove(&key);
                    // A later departure at the same time (still queued) goes with it.
                    if let Some(l) = self.left_at(place) {
                        l.proc = None;
                    }
                }
            }
        }
    }

    /// The processes that left, in the order they left (segment state): when, the identity
    /// (pid, start tick), and the process (None: a later departure of the same identity, or
    /// the eviction of an earlier one at the same time, took its place).
    pub(super) fn left_entries(&self) -> impl Iterator<Item = (u64, (u32, u64), Option<&Proc>)> {
        self.left.iter().map(|l| (l.at_ns, l.key, l.proc.as_ref()))
    }

    /// Appends a process that left, from segment state (in the order they left). The index
    /// finds the entries that hold a process: each is the latest departure of its identity.
    pub(super) fn restore_left(&mut self, at_ns: u64, key: (u32, u64), proc: Option<Proc>) {
        let place = self.left_front + self.left.len() as u64;
        if proc.is_some() {
            self.gone.insert(key, (at_ns, place));
        }
        self.left.push_back(Left { at_ns, key, proc });
    }

    pub fn live(&self) -> impl Iterator<Item = &Proc> {
        self.live.values()
    }

    pub fn gone(&self) -> impl Iterator<Item = &Proc> {
        self.left.iter().filter_map(|l| l.proc.as_ref())
    }

    pub fn live_len(&self) -> usize {
        self.live.len()
    }

    pub fn zombies(&self) -> usize {
        self.live.values().filter(|p| p.is_zombie()).count()
    }

    pub fn gone_len(&self) -> usize {
        self.gone.len()
    }

    /// Entries of the children index (each live process is in exactly one).
    pub fn children_len(&self) -> usize {
        self.children.values().map(HashSet::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, ppid: u32, start_ns: u64) -> Proc {
        Proc {
            pid,
            start_ns,
            ppid,
            nspid: pid,
            pidns: 1,
            uid: 0,
            gid: 0,
            comm: Arc::from("x"),
            filename: None,
            argv: Arc::from([]),
            cgroup: None,
            container: None,
            pod_of: None,
            role: None,
            exited_ns: None,
            exit_status: None,
            exit_seen: false,
        }
    }

    #[test]
    fn identity_decides_current_stale_and_new() {
        let mut t = Table::default();
        t.insert(proc(10, 1, 5 * TICK_NS));
        assert_eq!(t.slot(10, 5 * TICK_NS + 3), Slot::Current, "same tick");
        assert_eq!(
            t.slot(10, 2 * TICK_NS),
            Slot::Stale,
            "older process, same pid"
        );
        assert_eq!(t.slot(10, 9 * TICK_NS), Slot::New, "pid reused");
        assert_eq!(t.slot(11, 0), Slot::New);
    }

    #[test]
    fn children_follow_inserts_moves_and_removals() {
        let mut t = Table::default();
        t.insert(proc(10, 1, 0));
        t.insert(proc(11, 10, 0));
        t.insert(proc(12, 10, 0));
        assert_eq!(t.children_of(10), [11, 12]);
        t.set_ppid(12, 1);
        assert_eq!(t.children_of(10), [11]);
        assert_eq!(t.children_of(1), [10, 12]);
        t.take(11);
        assert!(t.children_of(10).is_empty());
        assert_eq!(t.children_len(), 2);
    }

    #[test]
    fn an_identity_that_leaves_twice_is_found_as_its_latest_until_that_goes() {
        let mut t = Table::default();
        let (mut first, mut second) = (proc(10, 1, 0), proc(10, 1, 0));
        first.uid = 1;
        second.uid = 2;
        t.keep_gone(first, 1);
        t.keep_gone(second, 5);
        assert_eq!(t.gone_mut(10, 0).map(|p| p.uid), Some(2));
        assert_eq!((t.gone_len(), t.gone().count()), (1, 1));
        t.evict(2 + GONE_GRACE_NS);
        assert_eq!(t.gone_mut(10, 0).map(|p| p.uid), Some(2), "the first left");
        t.evict(6 + GONE_GRACE_NS);
        assert_eq!((t.gone_len(), t.gone().count()), (0, 0));
        // Twice at the same time: both go with the first.
        t.keep_gone(proc(11, 1, 0), 7);
        t.keep_gone(proc(11, 1, 0), 7);
        t.evict(8 + GONE_GRACE_NS);
        assert_eq!((t.gone_len(), t.gone().count()), (0, 0));
        assert_eq!(t.slot(11, 0), Slot::New);
    }

    #[test]
    fn gone_processes_are_bounded_by_age_and_count() {
        let mut t = Table::default();
        for pid in 0..(GONE_MAX as u32 + 100) {
            t.keep_gone(proc(pid, 1, 0), 1);
        }
        t.evict(1);
        assert_eq!(t.gone_len(), GONE_MAX);
        t.evict(2 + GONE_GRACE_NS);
        assert_eq!(t.gone_len(), 0);
    }
}
