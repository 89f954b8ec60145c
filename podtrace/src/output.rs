//! The NDJSON event schema (v1). Field names are a contract: see docs/events.md.
//! `podtrace schema` prints the JSON Schema generated from these types.
use std::sync::Arc;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::attribution::Runtime;
pub use crate::trace::LostKinds;

/// What a process is to its container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The container's monitor (cri-o / podman).
    Conmon,
    /// containerd's shim.
    Shim,
    /// runc / crun.
    Runtime,
    /// PID 1 of the container.
    ContainerInit,
}

impl Role {
    /// The name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Conmon => "conmon",
            Role::Shim => "shim",
            Role::Runtime => "runtime",
            Role::ContainerInit => "container-init",
        }
    }
}

/// A wall-clock time, unix nanoseconds, printed as RFC 3339 UTC with nanoseconds
/// (`clock::format_rfc3339`). Kept as a number so that making an event allocates no text: the
/// NDJSON encoder formats it, reusing the date while the second does not change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn unix_ns(self) -> i64 {
        self.0
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::clock::format_rfc3339(self.0))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::clock::format_rfc3339(self.0))
    }
}

/// The text [`Serialize`] writes, back to the same number (events held at the start of a
/// trace segment are stored as they would be printed).
impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        crate::clock::parse_printed(&text)
            .map(Timestamp)
            .ok_or_else(|| serde::de::Error::custom(format!("`{text}` is not a timestamp")))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ContainerRef {
    pub id: String,
    /// Kubernetes container name (the CRI's, else conmon's `-n`; `POD` for a pod's sandbox),
    /// podman's container name, or null.
    pub name: Option<String>,
    pub runtime: Option<Runtime>,
    /// Image as the CRI reports it (e.g. `registry.k8s.io/pause:3.9`), null without a CRI answer.
    pub image: Option<String>,
    /// Image id the CRI reports (`sha256:…`), null without a CRI answer.
    pub image_id: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PodRef {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
}

/// Fields every process event carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ProcessFields {
    /// RFC 3339 UTC with nanoseconds.
    #[schemars(with = "String")]
    pub ts: Timestamp,
    /// Host thread-group id.
    pub pid: u32,
    /// Host thread id of the task that produced the event (fork: the child).
    pub tid: u32,
    /// Real parent's host tgid.
    pub ppid: u32,
    /// The pid in the process's own pid namespace (1 for a container's init).
    pub nspid: u32,
    /// Inode of that pid namespace.
    pub pidns: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: Arc<str>,
    /// Id (directory inode) of the cgroup `cgroup` names, in `cgroup_hierarchy`'s hierarchy;
    /// null with them, when the event could not be placed in a known cgroup.
    pub cgroup_id: Option<u64>,
    /// Process start, nanoseconds since boot (with pid, the process's identity).
    pub start_ns: u64,
    /// cgroup path in `cgroup_hierarchy`, null when it could not be resolved.
    pub cgroup: Option<Arc<str>>,
    /// Which hierarchy `cgroup` is from: "v2" (unified), or "v1:<controllers>" (e.g.
    /// "v1:pids") on cgroup v1 and for tasks in the v2 root on hybrid hosts; null with `cgroup`.
    pub cgroup_hierarchy: Option<Arc<str>>,
    /// The container the process belongs to, null for host processes.
    pub container: Option<Arc<ContainerRef>>,
    /// The pod of that container (from the cgroup path and conmon's argv), null if none.
    pub pod: Option<Arc<PodRef>>,
    /// What the process is to its container, null for plain processes.
    pub role: Option<Role>,
    /// A kernel read failed: some fields are 0 (or empty) rather than real.
    pub partial: bool,
    /// Node name (`--node` / NODE_NAME), absent when not set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Arc<str>>,
}

/// Whether the recorder writes (`recording` lines).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RecordingState {
    /// Writing the trace failed (a full disk, say): records are counted, not written.
    Paused,
    /// Writing again, in a new segment.
    Resumed,
}

/// One NDJSON line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    /// A process replaced its program (execve).
    Exec {
        #[serde(flatten)]
        process: ProcessFields,
        filename: Arc<str>,
        argv: Arc<[String]>,
        /// argv was longer than the 4 KiB the kernel side copies.
        argv_truncated: bool,
        /// The filename was longer than the 256 bytes the kernel side copies.
        filename_truncated: bool,
        /// The ring buffer had no room for the whole record: `filename` and `argv` are empty.
        trimmed: bool,
    },
    /// A new process (`pid` is the child, `ppid` the parent).
    Fork {
        #[serde(flatten)]
        process: ProcessFields,
    },
    /// A process ended (its last thread exited).
    Exit {
        #[serde(flatten)]
        process: ProcessFields,
        /// 0–255, null when killed by a signal (or when the exit is inferred).
        exit_code: Option<u8>,
        /// Terminating signal number, null when it exited (or when the exit is inferred).
        signal: Option<u8>,
        /// null when the exit is inferred.
        core_dumped: Option<bool>,
        /// Exit time − start, null when the exit is inferred.
        duration_ns: Option<u64>,
        /// The kernel's record of this exit was lost: the process was found gone (its reap, or
        /// /proc read again after a loss), so how and exactly when it ended are unknown; `ts` is
        /// when it was found gone.
        inferred: bool,
    },
    /// A new thread in an existing process (only with `--threads`).
    Thread {
        #[serde(flatten)]
        process: ProcessFields,
    },
    /// Events the kernel could not deliver (ring buffer full) since the previous `lost` line.
    Lost {
        ts: String,
        count: u64,
        /// The count by kind (an exit lost leaves a process that looks alive; an exec lost,
        /// a program change unseen).
        kinds: LostKinds,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<Arc<str>>,
    },
    /// A kernel record that did not decode (dropped).
    Malformed {
        ts: String,
        /// Its length.
        bytes: u64,
        reason: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<Arc<str>>,
    },
    /// The trace recorder (`--record`) stopped writing (a full disk, any write error) or
    /// wrote again: tracing and this stream went on meanwhile.
    Recording {
        ts: String,
        state: RecordingState,
        /// The file that could not be written (paused), or the new segment (resumed).
        file: String,
        /// Why writing stopped (paused); null when resumed.
        error: Option<String>,
        /// Records not written since writing stopped (0 when paused).
        records_lost: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<Arc<str>>,
    },
    /// The first line written to `--output` after writes to it failed: the lines in between
    /// were not written.
    #[serde(rename = "output_lost")]
    OutputLost {
        ts: String,
        /// Lines not written.
        lines: u64,
        /// Why (the first error).
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        node: Option<Arc<str>>,
    },
}

impl Event {
    /// The process fields of a process event (exec, fork, exit, thread), to change.
    pub fn process_mut(&mut self) -> Option<&mut ProcessFields> {
        match self {
            Event::Exec { process, .. }
            | Event::Fork { process }
            | Event::Exit { process, .. }
            | Event::Thread { process } => Some(process),
            _ => None,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Event::Exec { .. } => "exec",
            Event::Fork { .. } => "fork",
            Event::Exit { .. } => "exit",
            Event::Thread { .. } => "thread",
            Event::Lost { .. } => "lost",
            Event::Malformed { .. } => "malformed",
            Event::Recording { .. } => "recording",
            Event::OutputLost { .. } => "output_lost",
        }
    }

    pub fn process(&self) -> Option<&ProcessFields> {
        let (Event::Exec { process, .. }
        | Event::Fork { process }
        | Event::Exit { process, .. }
        | Event::Thread { process }) = self
        else {
            return None;
        };
        Some(process)
    }
}

/// Fields that are left out when they have no value (everything else nullable is printed as
/// `null`, never left out).
const OMITTED_WHEN_EMPTY: [&str; 1] = ["node"];

fn is_nullable(schema: &serde_json::Value) -> bool {
    let null = |t: &serde_json::Value| t == "null";
    match schema.get("type") {
        Some(serde_json::Value::Array(types)) => types.iter().any(null),
        _ => schema
            .get("anyOf")
            .and_then(|a| a.as_array())
            .map(|a| a.iter().any(|s| s.get("type").map(null).unwrap_or(false)))
            .unwrap_or(false),
    }
}

/// Marks nullable properties as required: podtrace always prints them, as `null` when
/// unknown, and consumers may rely on that.
fn require_nullable(schema: &mut serde_json::Value) {
    match schema {
        serde_json::Value::Object(map) => {
            let nullable: Vec<String> = map
                .get("properties")
                .and_then(|p| p.as_object())
                .map(|props| {
                    props
                        .iter()
                        .filter(|(k, v)| {
                            is_nullable(v) && !OMITTED_WHEN_EMPTY.contains(&k.as_str())
                        })
                        .map(|(k, _)| k.clone())
                        .collect()
                })
                .unwrap_or_default();
            if !nullable.is_empty() {
                let req = map
                    .entry("required")
                    .or_insert_with(|| serde_json::Value::Array(Vec::new()));
                if let Some(req) = req.as_array_mut() {
                    for name in nullable {
                        if !req.iter().any(|r| r == name.as_str()) {
                            req.push(serde_json::Value::String(name));
                        }
                    }
                }
            }
            for v in map.values_mut() {
                require_nullable(v);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(require_nullable),
        _ => {}
    }
}

/// The JSON Schema of one NDJSON line, generated from the types above.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Event);
    let mut v = serde_json::to_value(&schema).unwrap_or(serde_json::Value::Null);
    require_nullable(&mut v);
    v
}

#[cfg(test)]
mod tests {
    /// docs/events.schema.json is the generated schema, byte for byte: regenerate it with
    /// `podtrace schema > docs/events.schema.json` when the types change.
    #[test]
    fn nullable_fields_are_required_and_node_is_optional() {
        let schema = super::json_schema();
        let exec = &schema["oneOf"][0];
        let required: Vec<&str> = exec["required"]
            .as_array()
            .expect("required list")
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        for field in ["cgroup", "container", "pod", "role", "argv", "ts"] {
            assert!(
                required.contains(&field),
                "{field} must be required: {required:?}"
            );
        }
        assert!(!required.contains(&"node"));
        assert!(
            super::is_nullable(&exec["properties"]["cgroup"]),
            "cgroup may be null"
        );
    }

    #[test]
    fn shipped_schema_file_is_current() {
        let shipped = include_str!("../../docs/events.schema.json");
        let current = serde_json::to_string_pretty(&super::json_schema()).expect("schema");
        assert_eq!(
            shipped.trim_end(),
            current,
            "docs/events.schema.json is stale"
        );
    }
}
