//! Events of a kubelet container whose CRI answer has not come yet, held back in order so
//! that they go out with the container's names and image, from its first event on.
//!
//! Like elastic/quark's aging of events before it emits them, but per container and only as
//! long as needed: a container's queue is released at once, named, when the CRI's answer
//! arrives (a `cri` record); unnamed when the CRI says it has none (`cri_unknown`), when the
//! bound (`--hold-ms`, from the container's first held event, in event time) has passed (on
//! the next record: an event or a `tick`), when too many events are held, or at the end.
//! Everything here is decided from records, so a replay holds and releases exactly where the
//! live run did.
//!
//! While a container has held events, its later events queue behind them (its own order is
//! kept); other processes' events go out meanwhile, so the stream is in order per process and
//! container, not across them.
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use super::containers::Registry;
use crate::output::Event;

/// At most this many events are held in all; past it the queue held longest goes out.
pub const HELD_MAX: usize = 16_384;

/// Upper bounds (ms) of the hold-delay histogram's buckets; one more for longer.
pub const DELAY_BOUNDS_MS: [u64; 12] = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000];

/// Why a queue went out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// The CRI answered: the events carry its names and image.
    Answered,
    /// The CRI has no answer for the container.
    Unknown,
    /// The bound passed before an answer.
    Bound,
    /// Too many events held.
    Full,
    /// The trace (or the run) ended.
    End,
}

/// How many events were held and how each queue went out; hold delays (event time to
/// release, in event time).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HoldStats {
    /// Events held back at all.
    pub held: u64,
    /// Released named: the CRI answered.
    pub released_named: u64,
    /// Released unnamed: the bound passed first.
    pub released_after_bound: u64,
    /// Released unnamed: the CRI had no answer (not found or failed after its retries).
    pub released_unanswered: u64,
    /// Released early because `HELD_MAX` events were held.
    pub released_full: u64,
    /// Released when the trace or run ended.
    pub released_at_end: u64,
    /// Containers whose events were held.
    pub containers: u64,
    /// The most events held at once.
    pub peak: u64,
    /// Events held now.
    pub held_now: u64,
    /// Hold delays: counts per `DELAY_BOUNDS_MS` bucket (and one over the last).
    pub delay_ms_buckets: Vec<u64>,
    pub delay_max_ns: u64,
}

impl HoldStats {
    /// The delay (ms, a bucket's upper bound) at or below which `q` of the held events went
    /// out (None: nothing was held; `u64::MAX` past the last bound).
    pub fn delay_quantile_ms(&self, q: f64) -> Option<u64> {
        let total: u64 = self.delay_ms_buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let want = ((total as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.delay_ms_buckets.iter().enumerate() {
            seen += n;
            if seen >= want {
                return Some(DELAY_BOUNDS_MS.get(i).copied().unwrap_or(u64::MAX));
            }
        }
        Some(u64::MAX)
    }
}

/// What a held event is of: a container, or a pod (a pod-level process such as conmon-rs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Member {
    Container,
    Pod,
}

/// A held event as segment state: its container, the queue's age (first event's time,
/// sequence), the event's time, what it is of, the event.
pub(super) type HeldEntry<'a> = (&'a Arc<str>, (u64, u64), u64, Member, &'a Event);

struct Held {
    /// Boot-clock time of the event.
    ts_ns: u64,
    member: Member,
    event: Event,
}

struct Queue {
    /// Key in `by_age`.
    age: (u64, u64),
    events: VecDeque<Held>,
}

#[derive(Default)]
pub struct Holds {
    queues: HashMap<Arc<str>, Queue>,
    /// (first held event's time, sequence) -> container: the queue held longest first.
    by_age: BTreeMap<(u64, u64), Arc<str>>,
    held: usize,
    seq: u64,
    pub stats: HoldStats,
}

impl Holds {
    /// Whether `id` has events held (its later events must queue behind them).
    pub fn has(&self, id: &str) -> bool {
        self.queues.contains_key(id)
    }

    /// Events held now.
    pub fn len(&self) -> usize {
        self.held
    }

    pub fn is_empty(&self) -> bool {
        self.held == 0
    }

    /// The time the queue held longest started (None: nothing held).
    pub fn oldest_ns(&self) -> Option<u64> {
        self.by_age.keys().next().map(|(t, _)| *t)
    }

    /// Holds `event` (of a process of `id`, made at boot time `ts_ns`) behind what `id` has
    /// held; when that makes too many, the queue held longest goes out.
    pub fn hold(
        &mut self,
        id: &Arc<str>,
        member: Member,
        ts_ns: u64,
        event: Event,
        registry: &mut Registry,
        out: &mut Vec<Event>,
    ) {
        let q = match self.queues.get_mut(id) {
            Some(q) => q,
            None => {
                self.seq += 1;
                let age = (ts_ns, self.seq);
                self.by_age.insert(age, id.clone());
                self.stats.containers += 1;
                self.queues.entry(id.clone()).or_insert(Queue {
                    age,
                    events: VecDeque::new(),
                })
            }
        };
        q.events.push_back(Held {
            ts_ns,
            member,
            event,
        });
        self.held += 1;
        self.stats.held += 1;
        self.stats.held_now = self.held as u64;
        self.stats.peak = self.stats.peak.max(self.held as u64);
        if self.held > HELD_MAX {
            if let Some(oldest) = self.by_age.values().next().cloned() {
                self.release(&oldest, Release::Full, ts_ns, registry, out);
            }
        }
    }

    /// Releases `id`'s held events, in order, with what the registry knows of it now.
    pub fn release(
        &mut self,
        id: &str,
        why: Release,
        now_ns: u64,
        registry: &mut Registry,
        out: &mut Vec<Event>,
    ) {
        let Some(q) = self.queues.remove(id) else {
            return;
        };
        self.by_age.remove(&q.age);
        self.held = self.held.saturating_sub(q.events.len());
        let n = q.events.len() as u64;
        let s = &mut self.stats;
        s.held_now = self.held as u64;
        match why {
            Release::Answered => s.released_named += n,
            Release::Unknown => s.released_unanswered += n,
            Release::Bound => s.released_after_bound += n,
            Release::Full => s.released_full += n,
            Release::End => s.released_at_end += n,
        }
        let (container, pod) = registry.refs(id);
        if s.delay_ms_buckets.len() != DELAY_BOUNDS_MS.len() + 1 {
            s.delay_ms_buckets = vec![0; DELAY_BOUNDS_MS.len() + 1];
        }
        for mut h in q.events {
            let delay = now_ns.saturating_sub(h.ts_ns);
            s.delay_max_ns = s.delay_max_ns.max(delay);
            let ms = delay.div_ceil(1_000_000);
            let i = DELAY_BOUNDS_MS
                .iter()
                .position(|b| ms <= *b)
                .unwrap_or(DELAY_BOUNDS_MS.len());
            if let Some(b) = s.delay_ms_buckets.get_mut(i) {
                *b += 1;
            }
            if let Some(p) = h.event.process_mut() {
                match h.member {
                    Member::Container => {
                        p.container.clone_from(&container);
                        p.pod.clone_from(&pod);
                    }
                    Member::Pod => p.pod.clone_from(&pod),
                }
            }
            out.push(h.event);
        }
    }

    /// Releases the queues whose first event was held at or before `until_ns` (the bound
    /// passed), oldest first.
    pub fn expire(
        &mut self,
        until_ns: u64,
        now_ns: u64,
        registry: &mut Registry,
        out: &mut Vec<Event>,
    ) {
        while let Some((&(t, _), id)) = self.by_age.iter().next() {
            if t > until_ns {
                return;
            }
            let id = id.clone();
            self.release(&id, Release::Bound, now_ns, registry, out);
        }
    }

    /// Every held event, the queue held longest first and each queue in order (segment
    /// state): its container, the queue's age (first event's time, sequence), the event's
    /// time, what it is of, the event; and the last sequence number given.
    pub(super) fn state(&self) -> (Vec<HeldEntry<'_>>, u64) {
        let mut v = Vec::with_capacity(self.held);
        for (age, id) in &self.by_age {
            if let Some(q) = self.queues.get(id) {
                for h in &q.events {
                    v.push((id, *age, h.ts_ns, h.member, &h.event));
                }
            }
        }
        (v, self.seq)
    }

    /// Appends a held event of segment state to its container's queue (made with `age` if
    /// it has none yet).
    pub(super) fn restore(
        &mut self,
        id: Arc<str>,
        age: (u64, u64),
        ts_ns: u64,
        member: Member,
        event: Event,
    ) {
        let q = match self.queues.get_mut(&id) {
            Some(q) => q,
            None => {
                // Ages are unique (a sequence number); a segment that says otherwise still
                // gets one queue per age.
                let mut age = age;
                while self.by_age.contains_key(&age) {
                    age.1 = age.1.wrapping_add(1);
                }
                self.by_age.insert(age, id.clone());
                self.queues.entry(id).or_insert(Queue {
                    age,
                    events: VecDeque::new(),
                })
            }
        };
        q.events.push_back(Held {
            ts_ns,
            member,
            event,
        });
        self.held += 1;
    }

    pub(super) fn restore_seq(&mut self, seq: u64) {
        self.seq = seq;
    }

    /// Releases everything (the end), oldest first.
    pub fn release_all(&mut self, now_ns: u64, registry: &mut Registry, out: &mut Vec<Event>) {
        while let Some(id) = self.by_age.values().next().cloned() {
            self.release(&id, Release::End, now_ns, registry, out);
        }
    }
}
