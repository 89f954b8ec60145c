//! What changed between two refreshes of `top`, per container and for the host: the exec
//! rate, and the processes that came and went in between (never on screen, so counted).
//!
//! Read from the engine's state alone: its exec counts (`Container::execs`,
//! `Stats::host_execs`) and the processes that left the table (`Table::gone`, kept 10 s of
//! event time), against the engine's time at each refresh. The same records and refresh
//! times give the same figures, live or from a trace.
use std::collections::{HashMap, VecDeque};

use crate::engine::Engine;

/// Refresh times kept (enough for any process `top` still shows as exited).
const REFRESHES_KEPT: usize = 256;

/// One container's (or the host's) figures over the last refresh interval.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rate {
    /// Execs per second of event time; None at the first refresh (nothing to compare with).
    pub execs_per_s: Option<f64>,
    /// Processes that started after the previous refresh and left the table before this one.
    pub short_lived: u64,
}

#[derive(Debug, Default)]
pub struct Activity {
    /// The engine's time at each refresh (ns since boot), oldest first.
    refreshes: VecDeque<u64>,
    /// The display clock at the last refresh (ns since boot).
    last_clock_ns: Option<u64>,
    /// The refresh interval: refreshes before the first are taken to have been this far
    /// apart (a process that had lived that long by the first one had been shown).
    interval_ns: u64,
    /// Exec counts at the last refresh, by container id.
    execs: HashMap<String, u64>,
    host_execs: u64,
    /// By container id, over the last interval.
    rates: HashMap<String, Rate>,
    host: Rate,
}

impl Activity {
    pub fn new(interval_ns: u64) -> Self {
        Self {
            interval_ns: interval_ns.max(1),
            ..Self::default()
        }
    }

    /// A refresh at display time `clock_ns` (ns since boot; live: now, from a trace: the
    /// playback position): the figures since the previous one.
    pub fn refresh(&mut self, engine: &Engine, clock_ns: u64) {
        let boundary = engine.now_ns();
        let first = self.last_clock_ns.is_none();
        let dt_s = self
            .last_clock_ns
            .map(|t| clock_ns.saturating_sub(t) as f64 / 1e9)
            .filter(|&s| s > 0.0);
        let rate = |delta: u64| match (first, dt_s) {
            (true, _) => None,
            (false, Some(s)) => Some(delta as f64 / s),
            (false, None) => Some(0.0),
        };
        let mut rates: HashMap<String, Rate> = HashMap::new();
        let mut execs = HashMap::new();
        for c in engine.containers().all() {
            let before = self.execs.get(&*c.id).copied().unwrap_or(0);
            execs.insert(c.id.to_string(), c.execs);
            rates.insert(
                c.id.to_string(),
                Rate {
                    execs_per_s: rate(c.execs.saturating_sub(before)),
                    short_lived: 0,
                },
            );
        }
        let host_execs = engine.stats.host_execs;
        let mut host = Rate {
            execs_per_s: rate(host_execs.saturating_sub(self.host_execs)),
            short_lived: 0,
        };
        if let Some(&prev) = self.refreshes.back() {
            for p in engine.table().gone() {
                let Some(exited) = p.exited_ns else { continue };
                if exited <= prev || exited > boundary || p.start_ns <= prev {
                    continue;
                }
                match p.container.as_deref() {
                    Some(id) => {
                        if let Some(r) = rates.get_mut(id) {
                            r.short_lived += 1;
                        }
                    }
                    None => host.short_lived += 1,
                }
            }
        }
        self.rates = rates;
        self.host = host;
        self.execs = execs;
        self.host_execs = host_execs;
        self.last_clock_ns = Some(clock_ns);
        if self.refreshes.back().is_none_or(|&b| boundary >= b) {
            self.refreshes.push_back(boundary);
        }
        while self.refreshes.len() > REFRESHES_KEPT {
            self.refreshes.pop_front();
        }
    }

    /// The figures of container `id` over the last interval.
    pub fn container(&self, id: &str) -> Rate {
        self.rates.get(id).copied().unwrap_or_default()
    }

    pub fn host(&self) -> Rate {
        self.host
    }

    /// Execs per second over the last interval, all containers and the host.
    pub fn total_execs_per_s(&self) -> Option<f64> {
        let host = self.host.execs_per_s?;
        Some(
            host + self
                .rates
                .values()
                .filter_map(|r| r.execs_per_s)
                .sum::<f64>(),
        )
    }

    /// Whether a process that started at `start_ns` and exited at `exited_ns` was in the
    /// table at some refresh (so it was on screen, and is shown exited for a moment); the
    /// others came and went between two refreshes and are only counted.
    pub fn was_shown(&self, start_ns: u64, exited_ns: u64) -> bool {
        let Some(&oldest) = self.refreshes.front() else {
            // No refresh yet: taken to be `interval` apart before now.
            return exited_ns.saturating_sub(start_ns) >= self.interval_ns;
        };
        if start_ns > oldest {
            // The first refresh at or after its start came before its exit.
            let i = self.refreshes.partition_point(|&b| b < start_ns);
            return self.refreshes.get(i).is_some_and(|&b| b < exited_ns);
        }
        if oldest < exited_ns {
            return true;
        }
        // Before the refreshes kept: at `interval` apart, back from the oldest.
        let back = (oldest - start_ns) / self.interval_ns * self.interval_ns;
        oldest - back < exited_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_refreshes(interval: u64, at: &[u64]) -> Activity {
        let mut a = Activity::new(interval);
        a.refreshes.extend(at.iter().copied());
        a
    }

    #[test]
    fn a_process_is_shown_when_a_refresh_fell_within_its_life() {
        let a = with_refreshes(100, &[1000, 1100, 1200]);
        assert!(a.was_shown(1050, 1150), "alive at 1100");
        assert!(!a.was_shown(1110, 1190), "between 1100 and 1200");
        assert!(
            a.was_shown(1100, 1101),
            "started at the refresh: in the table then"
        );
        assert!(!a.was_shown(1201, 5000), "no refresh after its start yet");
        assert!(a.was_shown(900, 1001), "alive at the oldest refresh");
        assert!(
            a.was_shown(850, 950),
            "alive at the refresh before the oldest (900)"
        );
        assert!(!a.was_shown(910, 990), "between 900 and 1000");
        let none = Activity::new(100);
        assert!(none.was_shown(0, 100) && !none.was_shown(0, 99));
    }
}
