//! Trace files: what `run --record` writes and `replay` / `tree --from` read.
//!
//! NDJSON, one record per line, externally tagged: a `header` first, then the start-up
//! snapshot (`proc` lines, closed by `snapshot_end`), then in arrival order the raw kernel
//! `event`s, the `cgroup` answers the engine consulted (each before the event that asked), and
//! `lost` counts; a clean stop ends with `end`. A name ending in `.zst` is zstd-compressed.
//! See docs/trace-format.md.
pub mod reader;
pub mod synth;
pub mod writer;

use serde::{Deserialize, Serialize};

use crate::kernel_event::KernelEvent;
use crate::snapshot::ProcInfo;

/// The trace format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Header {
    /// Format version (see `FORMAT_VERSION`).
    pub format: u32,
    pub podtrace_version: String,
    pub kernel_release: String,
    pub hostname: String,
    /// Unix time of boot in ns: CLOCK_REALTIME - CLOCK_BOOTTIME when recording started.
    pub boot_offset_ns: i64,
    /// Pid namespace of the host's PID 1.
    pub host_pidns: u32,
    /// `--node` / NODE_NAME when recording.
    #[serde(default)]
    pub node: Option<String>,
    /// Unix ns when recording started.
    pub started_unix_ns: i64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupFact {
    pub id: u64,
    pub path: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LostRecord {
    pub ts_ns: u64,
    pub count: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndRecord {
    pub events: u64,
    pub lost: u64,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    Header(Header),
    Proc(ProcInfo),
    SnapshotEnd {},
    Cgroup(CgroupFact),
    Event(KernelEvent),
    Lost(LostRecord),
    End(EndRecord),
}
