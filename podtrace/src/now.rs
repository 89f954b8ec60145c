//! The engine built from /proc alone: `podtrace tree` on the live system, no eBPF needed.
use anyhow::Result;

use crate::clock::BootClock;
use crate::engine::Engine;
use crate::facts::LiveFacts;
use crate::snapshot;

pub fn engine_from_proc() -> Result<Engine> {
    let mut facts = LiveFacts::new();
    let procs = snapshot::scan(facts.root(), std::process::id())?;
    let mut engine = Engine::new(BootClock::from_system()?, crate::live::host_pidns(), None);
    engine.load_snapshot(&procs, &mut facts);
    Ok(engine)
}
