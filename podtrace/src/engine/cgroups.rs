//! cgroup id -> path answers the engine was given, with what each path says, kept while a
//! process is in the cgroup and for a grace period after.
//!
//! Bounded whatever the uptime: an entry no live process is in is dropped `IDLE_GRACE_NS`
//! after the last one left (a node that makes thousands of cgroups a day keeps only the ones
//! in use), an unknown answer after `UNKNOWN_KEEP_NS`, and never more than `CGROUPS_MAX`
//! entries that no process is in. Time is event time, so replay drops exactly what live did.
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use crate::attribution::{parse_cgroup_path, CgroupInfo};
use crate::cgroups::Hierarchy;

/// An unresolvable cgroup id is asked about again after this much event time.
pub const RETRY_NS: u64 = 500_000_000;
/// A cgroup no live process is in is forgotten this long after the last one left (a container restarted in place, or a late event, finds it within that).
pub const IDLE_GRACE_NS: u64 = 10_000_000_000;
/// An "unknown" answer is forgotten after this long without being asked again.
pub const UNKNOWN_KEEP_NS: u64 = 10_000_000_000;
/// At most this many entries that no process is in (the oldest go first).
pub const CGROUPS_MAX: usize = 65_536;

pub type CgroupKey = (Hierarchy, u64);

#[derive(Debug)]
pub struct Cgroup {
    pub path: Arc<str>,
    pub info: CgroupInfo,
}

#[derive(Debug)]
enum Entry {
    Known {
        cgroup: Arc<Cgroup>,
        /// Live processes placed in it.
        refs: u32,
        /// When `refs` last dropped to 0 (or when learnt, if no process came).
        idle_since: u64,
    },
    /// Not resolvable when asked at this event time.
    Unknown(u64),
}

#[derive(Default)]
pub struct CgroupCache {
    entries: HashMap<CgroupKey, Entry>,
    /// Entries some live process is in.
    held: usize,
    last_sweep_ns: u64,
}

/// What the cache knows of a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    Known,
    /// Asked and unresolvable, and not yet worth asking again.
    Unknown,
    /// Never asked, or worth asking again.
    Ask,
}

/// A cached cgroup answer as segment state: key, path (None: unknown), live processes in
/// it, since when it is idle.
pub(super) type CgroupEntryState<'a> = (CgroupKey, Option<&'a str>, u32, u64);

impl CgroupCache {
    pub fn get(&self, key: CgroupKey) -> Option<&Arc<Cgroup>> {
        match self.entries.get(&key) {
            Some(Entry::Known { cgroup, .. }) => Some(cgroup),
            _ => None,
        }
    }

    pub fn lookup(&self, key: CgroupKey, now_ns: u64) -> Lookup {
        match self.entries.get(&key) {
            Some(Entry::Known { .. }) => Lookup::Known,
            Some(Entry::Unknown(at)) if now_ns.saturating_sub(*at) < RETRY_NS => Lookup::Unknown,
            _ => Lookup::Ask,
        }
    }

    /// Records an answer (`None`: unknown). A known entry keeps its processes.
    pub fn learn(&mut self, key: CgroupKey, path: Option<&str>, now_ns: u64) {
        match (path, self.entries.get_mut(&key)) {
            (Some(p), Some(Entry::Known { cgroup, .. })) if &*cgroup.path == p => {}
            (Some(p), Some(Entry::Known { cgroup, .. })) => {
                *cgroup = Arc::new(Cgroup {
                    info: parse_cgroup_path(p),
                    path: Arc::from(p),
                });
            }
            (Some(p), _) => {
                self.entries.insert(
                    key,
                    Entry::Known {
                        cgroup: Arc::new(Cgroup {
                            info: parse_cgroup_path(p),
                            path: Arc::from(p),
                        }),
                        refs: 0,
                        idle_since: now_ns,
                    },
                );
                self.enforce_bound();
            }
            // An id that was known stays known: a later "unknown" means the directory went
            // away while processes may still be placed in it.
            (None, Some(Entry::Known { .. })) => {}
            (None, _) => {
                self.entries.insert(key, Entry::Unknown(now_ns));
                self.enforce_bound();
            }
        }
    }

    /// A live process is placed in `key`.
    pub fn hold(&mut self, key: CgroupKey) {
        if let Some(Entry::Known { refs, .. }) = self.entries.get_mut(&key) {
            if *refs == 0 {
                self.held += 1;
            }
            *refs += 1;
        }
    }

    /// A live process left `key` (moved, exited or was forgotten).
    pub fn release(&mut self, key: CgroupKey, now_ns: u64) {
        if let Some(Entry::Known {
            refs, idle_since, ..
        }) = self.entries.get_mut(&key)
        {
            if *refs > 0 {
                *refs -= 1;
                if *refs == 0 {
                    *idle_since = now_ns;
                    self.held = self.held.saturating_sub(1);
                }
            }
        }
    }

    /// Drops idle and unknown entries past their time (looked at once a second).
    pub fn sweep(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.last_sweep_ns) < 1_000_000_000 {
            return;
        }
        self.last_sweep_ns = now_ns;
        self.entries.retain(|_, e| match e {
            Entry::Known {
                refs: 0,
                idle_since,
                ..
            } => now_ns.saturating_sub(*idle_since) <= IDLE_GRACE_NS,
            Entry::Known { .. } => true,
            Entry::Unknown(at) => now_ns.saturating_sub(*at) <= UNKNOWN_KEEP_NS,
        });
    }

    /// Keeps the entries no process is in within `CGROUPS_MAX` (the oldest go first).
    fn enforce_bound(&mut self) {
        let unheld = self.entries.len().saturating_sub(self.held);
        if unheld <= CGROUPS_MAX {
            return;
        }
        let mut old: Vec<(u64, CgroupKey)> = self
            .entries
            .iter()
            .filter_map(|(k, e)| match e {
                Entry::Known {
                    refs: 0,
                    idle_since: t,
                    ..
                }
                | Entry::Unknown(t) => Some((*t, *k)),
                Entry::Known { .. } => None,
            })
            .collect();
        old.sort_unstable();
        // Down to 7/8 of the bound, so this runs once per CGROUPS_MAX/8 new entries.
        let excess = unheld - CGROUPS_MAX * 7 / 8;
        for (_, k) in old.into_iter().take(excess) {
            self.entries.remove(&k);
        }
    }

    /// Every entry in key order (segment state): its path (None: unknown), the live
    /// processes in it, and since when it is idle (or was found unknown); and when the cache
    /// was last swept.
    pub(super) fn state(&self) -> (Vec<CgroupEntryState<'_>>, u64) {
        let mut v: Vec<CgroupEntryState<'_>> = self
            .entries
            .iter()
            .map(|(k, e)| match e {
                Entry::Known {
                    cgroup,
                    refs,
                    idle_since,
                } => (*k, Some(&*cgroup.path), *refs, *idle_since),
                Entry::Unknown(at) => (*k, None, 0, *at),
            })
            .collect();
        v.sort_unstable_by_key(|(k, ..)| *k);
        (v, self.last_sweep_ns)
    }

    /// Puts back an entry of segment state as it was.
    pub(super) fn restore(&mut self, key: CgroupKey, path: Option<&str>, refs: u32, since: u64) {
        let entry = match path {
            Some(p) => {
                if refs > 0 {
                    self.held += 1;
                }
                Entry::Known {
                    cgroup: Arc::new(Cgroup {
                        info: parse_cgroup_path(p),
                        path: Arc::from(p),
                    }),
                    refs,
                    idle_since: since,
                }
            }
            None => Entry::Unknown(since),
        };
        if let Some(Entry::Known { refs: old, .. }) = self.entries.insert(key, entry) {
            if old > 0 {
                self.held = self.held.saturating_sub(1);
            }
        }
    }

    pub(super) fn restore_last_sweep(&mut self, ns: u64) {
        self.last_sweep_ns = ns;
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn an_unknown_answer_is_asked_again_after_the_retry_time() {
        let mut c = CgroupCache::default();
        let k = (Hierarchy::V2, 7);
        assert_eq!(c.lookup(k, 0), Lookup::Ask);
        c.learn(k, None, S);
        assert_eq!(c.lookup(k, S + RETRY_NS - 1), Lookup::Unknown);
        assert_eq!(c.lookup(k, S + RETRY_NS), Lookup::Ask);
        c.learn(k, Some("/a"), S + RETRY_NS);
        assert_eq!(c.lookup(k, S + RETRY_NS), Lookup::Known);
        c.learn(k, None, S + 2 * RETRY_NS);
        assert_eq!(
            c.lookup(k, S + 2 * RETRY_NS),
            Lookup::Known,
            "known stays known"
        );
    }

    #[test]
    fn a_cgroup_in_use_stays_an_idle_one_goes_after_the_grace() {
        let mut c = CgroupCache::default();
        let (used, idle) = ((Hierarchy::V2, 1), (Hierarchy::V1, 2));
        c.learn(used, Some("/used"), S);
        c.learn(idle, Some("/idle"), S);
        c.hold(used);
        c.sweep(S + IDLE_GRACE_NS + 2 * S);
        assert!(c.get(used).is_some());
        assert!(c.get(idle).is_none(), "idle past its grace");
        c.release(used, 100 * S);
        c.sweep(100 * S + IDLE_GRACE_NS);
        assert!(c.get(used).is_some(), "within the grace");
        c.sweep(100 * S + IDLE_GRACE_NS + 2 * S);
        assert!(c.is_empty());
    }

    #[test]
    fn churn_beyond_the_bound_keeps_the_cache_bounded() {
        let mut c = CgroupCache::default();
        let held = (Hierarchy::V2, u64::MAX);
        c.learn(held, Some("/held"), 0);
        c.hold(held);
        // Far more cgroups than the bound, all learnt within one sweep period.
        for id in 0..(CGROUPS_MAX as u64 * 2) {
            c.learn((Hierarchy::V2, id), Some("/x"), 10);
        }
        assert!(c.len() <= CGROUPS_MAX + 1, "{} entries", c.len());
        assert!(c.get(held).is_some(), "a cgroup in use is never dropped");
        // The newest survive, the oldest went.
        assert!(c.get((Hierarchy::V2, CGROUPS_MAX as u64 * 2 - 1)).is_some());
    }
}
