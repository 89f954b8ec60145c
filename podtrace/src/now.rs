//! `podtrace tree` on the live system: the /proc snapshot (and what the CRI lists) through
//! the same pipeline as `run` (no eBPF needed).
use std::sync::Arc;

use anyhow::{Context, Result};

use crate::cgroups::resolve::CgroupView;
use crate::cgroups::CgroupMode;
use crate::clock::BootClock;
use crate::cri::CriConfig;
use crate::engine::Engine;
use crate::filter::EventFilter;
use crate::live::{cgroup_setup, push_snapshot, require_host_pidns, start_cri};
use crate::pipeline::Pipeline;
use crate::redact::Redactor;
use crate::trace::Record;

/// The node now; argv goes through `redactor` as in `run`. Refuses, as `run` does, from
/// outside the host's pid namespace (its /proc would show another set of processes).
pub fn engine_from_proc(
    redactor: Redactor,
    mode: CgroupMode,
    cri: Option<CriConfig>,
) -> Result<Engine> {
    require_host_pidns()?;
    let redactor = Arc::new(redactor);
    let cri_facts = match cri {
        Some(cfg) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(async {
                Ok::<_, anyhow::Error>(
                    start_cri(&cfg, Arc::clone(&redactor))
                        .await?
                        .map(|mut s| s.initial())
                        .unwrap_or_default(),
                )
            })?
        }
        None => Vec::new(),
    };
    let (mounts, setup, v1) = cgroup_setup(mode)?;
    let view = CgroupView::new(&mounts, &setup, v1);
    let mut pipe = Pipeline::new(EventFilter::default());
    push_snapshot(
        &mut pipe,
        BootClock::from_system()?,
        None,
        &setup,
        &view,
        &redactor,
        0,
    )?;
    for rec in cri_facts
        .into_iter()
        .map(Record::Cri)
        .chain([Record::SnapshotEnd {}])
    {
        pipe.push(&rec)?;
    }
    pipe.finish()?
        .ok_or_else(|| anyhow::anyhow!("the snapshot produced no engine"))
}
