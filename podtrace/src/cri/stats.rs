//! Counters of the CRI service, shared by the handle and its worker (atomics: the worker's
//! lookups are tokio tasks).
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (inclusive, in microseconds) of the lookup latency buckets; a last bucket
/// counts what is slower.
pub const LATENCY_BOUNDS_US: [u64; 11] = [
    500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000,
];

/// How long lookups took (each attempt, whatever its outcome: a timeout shows as the timeout).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LatencyHistogram {
    /// [`LATENCY_BOUNDS_US`].
    pub bounds_us: Vec<u64>,
    /// Lookups per bucket, NOT cumulative: `counts[i]` took at most `bounds_us[i]` and more
    /// than the previous bound; `counts[bounds_us.len()]` took longer than the last bound.
    pub counts: Vec<u64>,
    pub sum_us: u64,
    pub count: u64,
}

/// A snapshot of the service's counters (`CriService::stats`). Counters only grow.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct CriStats {
    /// The runtime answered the last call (false from the first failed one to the next answer).
    pub up: bool,
    /// Times it stopped answering.
    pub outages: u64,
    /// Ids handed to the worker by `request`.
    pub requests: u64,
    /// `request`s answered from the cache.
    pub cache_hits: u64,
    /// `request`s for an id already being looked up.
    pub deduplicated: u64,
    /// `request`s dropped because the queue was full.
    pub queue_drops: u64,
    /// Lookups run (an id retried after an outage counts once per attempt).
    pub lookups: u64,
    /// Lookups that gave a fact.
    pub answered: u64,
    /// Lookups for an id the runtime does not know (neither a container nor a sandbox).
    pub not_found: u64,
    /// Failed lookup attempts: no answer (refused, broken, garbage, timeout) or an error answer.
    pub failures: u64,
    /// Of `failures`, those that timed out.
    pub timeouts: u64,
    /// Ids given up after the last attempt failed while the runtime was down.
    pub gave_up: u64,
    /// Lookups asked again after a wait because the runtime did not know the id yet
    /// (NotFound while it creates the container) or answered with an error.
    pub retries: u64,
    /// Ids that got no fact in the end (not found or failed after every retry, or given up):
    /// the engine is told, and releases what it held for them unnamed.
    pub unanswered: u64,
    /// Facts in the answer cache (containers and sandboxes).
    pub cache_size: u64,
    /// Pods in the sandbox cache.
    pub pod_cache_size: u64,
    pub latency: LatencyHistogram,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub up: AtomicBool,
    pub outages: AtomicU64,
    pub requests: AtomicU64,
    pub cache_hits: AtomicU64,
    pub deduplicated: AtomicU64,
    pub queue_drops: AtomicU64,
    pub lookups: AtomicU64,
    pub answered: AtomicU64,
    pub not_found: AtomicU64,
    pub failures: AtomicU64,
    pub timeouts: AtomicU64,
    pub gave_up: AtomicU64,
    pub retries: AtomicU64,
    pub unanswered: AtomicU64,
    buckets: [AtomicU64; LATENCY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
    count: AtomicU64,
}

pub(crate) fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

impl Counters {
    pub(crate) fn observe(&self, took: Duration) {
        let us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let i = LATENCY_BOUNDS_US
            .iter()
            .position(|b| us <= *b)
            .unwrap_or(LATENCY_BOUNDS_US.len());
        if let Some(b) = self.buckets.get(i) {
            bump(b);
        }
        self.sum_us.fetch_add(us, Relaxed);
        bump(&self.count);
    }

    pub(crate) fn snapshot(&self, cache_size: usize, pod_cache_size: usize) -> CriStats {
        let g = |c: &AtomicU64| c.load(Relaxed);
        CriStats {
            up: self.up.load(Relaxed),
            outages: g(&self.outages),
            requests: g(&self.requests),
            cache_hits: g(&self.cache_hits),
            deduplicated: g(&self.deduplicated),
            queue_drops: g(&self.queue_drops),
            lookups: g(&self.lookups),
            answered: g(&self.answered),
            not_found: g(&self.not_found),
            failures: g(&self.failures),
            timeouts: g(&self.timeouts),
            gave_up: g(&self.gave_up),
            retries: g(&self.retries),
            unanswered: g(&self.unanswered),
            cache_size: cache_size as u64,
            pod_cache_size: pod_cache_size as u64,
            latency: LatencyHistogram {
                bounds_us: LATENCY_BOUNDS_US.to_vec(),
                counts: self.buckets.iter().map(g).collect(),
                sum_us: g(&self.sum_us),
                count: g(&self.count),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_buckets() {
        let c = Counters::default();
        c.observe(Duration::from_micros(500));
        c.observe(Duration::from_micros(501));
        c.observe(Duration::from_secs(3));
        let s = c.snapshot(0, 0).latency;
        assert_eq!(
            s.counts[0], 1,
            "500 us is in the first bucket (bounds are inclusive)"
        );
        assert_eq!(s.counts[1], 1);
        assert_eq!(
            s.counts[LATENCY_BOUNDS_US.len()],
            1,
            "3 s is past the last bound"
        );
        assert_eq!((s.count, s.sum_us), (3, 3_001_001));
    }
}
