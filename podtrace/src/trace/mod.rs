//! Trace files: what `run --record` writes and `replay` / `tree --from` read.
//!
//! NDJSON, one record per line, externally tagged: a `header` first, then the start-up
//! snapshot (`proc` lines, closed by `snapshot_end`) or, in a segment after the first, the
//! engine's state (`state` lines, closed by `state_end`), then in arrival order the raw kernel
//! `event`s and `reap`s, and the facts the engine was given before the record that needed
//! them: `cgroup` answers, `cri` answers, `clock` changes, `resync` re-reads of /proc after a
//! loss, `lost` counts and `malformed` kernel records. A clean stop ends with `end`, a segment
//! that the next one continues with `segment_end`. A name ending in `.zst` is
//! zstd-compressed. See docs/trace-format.md.
//!
//! [`Record`] is also what the pipeline carries: live and replay push the same records
//! through the same engine.
mod fast;
pub mod reader;
pub mod segments;
pub mod synth;
pub mod writer;

use serde::{Deserialize, Serialize};

use crate::cgroups::{CgroupSetup, Hierarchy};
use crate::cri::{CriFact, CriUnknown};
use crate::engine::state::StateRecord;
use crate::kernel_event::{KernelEvent, ReapEvent};
use crate::output::RecordingState;
use crate::snapshot::ProcInfo;

/// The trace format version this build writes.
pub const FORMAT_VERSION: u32 = 4;
/// Versions this build reads (1: before cgroup v1, reap, CRI and resync records; 2: before
/// the hold for CRI answers: `hold_ns`, `tick` and `cri_unknown`; 3: before segments and
/// /proc read off the live loop: the header's `segment`, `state`, `state_end`,
/// `segment_end`, `recording`, and `resync_end`'s `unread`).
pub const READS_VERSIONS: [u32; 4] = [1, 2, 3, 4];

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
    /// The cgroup hierarchies events are placed by (format 1: v2 only).
    #[serde(default = "CgroupSetup::v2_only")]
    pub cgroups: CgroupSetup,
    /// How long events of a kubelet container may be held for its CRI answer (`--hold-ms`;
    /// 0: never, as without a CRI; absent before format 3).
    #[serde(default)]
    pub hold_ns: u64,
    /// A segment of a recording into a directory (`--record DIR`); absent in a single file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<SegmentInfo>,
}

/// Which segment of which recording a trace file is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentInfo {
    /// 1 for the first segment of a recording, then 2, 3, ...
    pub seq: u64,
    /// Unix ns when the recording (its first segment) started.
    pub recording_started_unix_ns: i64,
}

/// A segment ends and the next (`next`, a file name in the same directory) goes on from
/// here: nothing ends for the engine (held events stay held).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentEnd {
    pub next: String,
}

/// The recorder stopped writing (paused: only in the live stream, never in a trace) or
/// wrote again (resumed: the first record after a new segment's state).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordingRecord {
    /// Boot-clock time (it does not move the engine's clock: a paused record is not in any
    /// trace).
    pub ts_ns: u64,
    pub state: RecordingState,
    pub file: String,
    pub error: Option<String>,
    pub records_lost: u64,
}

/// The end of a resync: `unread` lists the processes whose read did not finish within its
/// deadline (alive, but not read: not gone either).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResyncEnd {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unread: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupFact {
    #[serde(default, skip_serializing_if = "is_v2")]
    pub hierarchy: Hierarchy,
    pub id: u64,
    pub path: Option<String>,
}

fn is_v2(h: &Hierarchy) -> bool {
    *h == Hierarchy::V2
}

/// Kernel records lost, per kind.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(deny_unknown_fields)]
pub struct LostKinds {
    pub exec: u64,
    pub fork: u64,
    pub exit: u64,
    pub reap: u64,
    pub thread: u64,
}

impl LostKinds {
    pub fn total(&self) -> u64 {
        self.exec + self.fork + self.exit + self.reap + self.thread
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LostRecord {
    pub ts_ns: u64,
    pub count: u64,
    #[serde(default)]
    pub kinds: LostKinds,
}

/// The boot->wall offset changed (the wall clock was stepped) at `ts_ns`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClockRecord {
    pub ts_ns: u64,
    pub offset_ns: i64,
}

/// The live loop's clock while events are held for CRI answers: what was held longer than
/// the bound at `ts_ns` goes out here, in replay as it did live.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TickRecord {
    pub ts_ns: u64,
}

/// /proc is read again (after a loss) at `ts_ns`: the `proc` records up to `resync_end` are
/// every process alive then.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResyncStart {
    pub ts_ns: u64,
}

/// A kernel record that did not decode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MalformedRecord {
    pub ts_ns: u64,
    pub bytes: u64,
    pub reason: String,
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
    Cri(CriFact),
    /// The CRI will not answer for an id (not found or failed after its retries).
    CriUnknown(CriUnknown),
    Clock(ClockRecord),
    Tick(TickRecord),
    ResyncStart(ResyncStart),
    ResyncEnd(ResyncEnd),
    Event(KernelEvent),
    Reap(ReapEvent),
    Lost(LostRecord),
    Malformed(MalformedRecord),
    /// A piece of the engine's state at the start of a segment.
    State(StateRecord),
    StateEnd {},
    SegmentEnd(SegmentEnd),
    Recording(RecordingRecord),
    End(EndRecord),
}

impl Record {
    /// The boot-clock time a record carries (what moves the engine's clock).
    pub fn ts_ns(&self) -> Option<u64> {
        match self {
            Record::Event(e) => Some(e.ts_ns),
            Record::Reap(r) => Some(r.ts_ns),
            Record::Lost(l) => Some(l.ts_ns),
            Record::Malformed(m) => Some(m.ts_ns),
            Record::Clock(c) => Some(c.ts_ns),
            Record::Tick(t) => Some(t.ts_ns),
            Record::ResyncStart(r) => Some(r.ts_ns),
            _ => None,
        }
    }
}
