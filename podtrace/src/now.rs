//! The engine built from /proc alone: `podtrace tree` on the live system, no eBPF needed.
use anyhow::Result;

use crate::clock::BootClock;
use crate::engine::Engine;
use crate::facts::LiveFacts;
use crate::redact::Redactor;
use crate::snapshot;

/// The node now; argv goes through `redactor` as in `run`.
pub fn engine_from_proc(redactor: &Redactor) -> Result<Engine> {
    let mut facts = LiveFacts::new();
    let mut procs = snapshot::scan(facts.root(), std::process::id())?;
    for p in &mut procs {
        redactor.process(p);
    }
    let mut engine = Engine::new(BootClock::from_system()?, crate::live::host_pidns(), None);
    engine.load_snapshot(&procs, &mut facts);
    Ok(engine)
}
