//! `podtrace tree` on the live system: the /proc snapshot through the same pipeline as `run`
//! (no eBPF needed).
use anyhow::Result;

use crate::cgroups::resolve::CgroupView;
use crate::cgroups::CgroupMode;
use crate::clock::BootClock;
use crate::engine::Engine;
use crate::filter::EventFilter;
use crate::live::{cgroup_setup, snapshot_records};
use crate::pipeline::Pipeline;
use crate::redact::Redactor;
use crate::trace::Record;

/// The node now; argv goes through `redactor` as in `run`.
pub fn engine_from_proc(redactor: &Redactor, mode: CgroupMode) -> Result<Engine> {
    let (mounts, setup, v1) = cgroup_setup(mode)?;
    let view = CgroupView::new(&mounts, &setup, v1);
    let (records, _) = snapshot_records(BootClock::from_system()?, None, &setup, &view, redactor)?;
    let mut pipe = Pipeline::new(EventFilter::default());
    for rec in records.iter().chain([&Record::SnapshotEnd {}]) {
        pipe.push(rec)?;
    }
    pipe.finish()?
        .ok_or_else(|| anyhow::anyhow!("the snapshot produced no engine"))
}
