//! The NDJSON event schema (v1). Field names are a contract: see docs/events.md.
//! `podtrace schema` prints the JSON Schema generated from these types.
use std::sync::Arc;

use schemars::JsonSchema;
use serde::Serialize;

use crate::attribution::Runtime;

/// What a process is to its container.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
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

#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ContainerRef {
    pub id: String,
    /// Kubernetes container name (from conmon's `-n`), podman's container name, or null.
    #[schemars(required)]
    pub name: Option<String>,
    #[schemars(required)]
    pub runtime: Option<Runtime>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PodRef {
    #[schemars(required)]
    pub name: Option<String>,
    #[schemars(required)]
    pub namespace: Option<String>,
    #[schemars(required)]
    pub uid: Option<String>,
}

/// Fields every process event carries.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct ProcessFields {
    /// RFC 3339 UTC with nanoseconds.
    pub ts: String,
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
    pub comm: String,
    /// cgroup v2 id (inode of the cgroup2 directory).
    pub cgroup_id: u64,
    /// Process start, nanoseconds since boot (with pid, the process's identity).
    pub start_ns: u64,
    /// cgroup v2 path, null when it could not be resolved.
    #[schemars(required)]
    pub cgroup: Option<Arc<str>>,
    /// The container the process belongs to, null for host processes.
    #[schemars(required)]
    pub container: Option<Arc<ContainerRef>>,
    /// The pod of that container (from the cgroup path and conmon's argv), null if none.
    #[schemars(required)]
    pub pod: Option<Arc<PodRef>>,
    /// What the process is to its container, null for plain processes.
    #[schemars(required)]
    pub role: Option<Role>,
    /// Node name (`--node` / NODE_NAME), absent when not set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

/// One NDJSON line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    /// A process replaced its program (execve).
    Exec {
        #[serde(flatten)]
        process: ProcessFields,
        filename: String,
        argv: Arc<[String]>,
        /// argv was longer than the 4 KiB the kernel side copies.
        argv_truncated: bool,
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
        /// 0–255, null when killed by a signal.
        #[schemars(required)]
        exit_code: Option<u8>,
        /// Terminating signal number, null when it exited.
        #[schemars(required)]
        signal: Option<u8>,
        core_dumped: bool,
        duration_ns: u64,
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
        #[serde(skip_serializing_if = "Option::is_none")]
        node: Option<String>,
    },
}

impl Event {
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Exec { .. } => "exec",
            Event::Fork { .. } => "fork",
            Event::Exit { .. } => "exit",
            Event::Thread { .. } => "thread",
            Event::Lost { .. } => "lost",
        }
    }

    pub fn process(&self) -> Option<&ProcessFields> {
        match self {
            Event::Exec { process, .. }
            | Event::Fork { process }
            | Event::Exit { process, .. }
            | Event::Thread { process } => Some(process),
            Event::Lost { .. } => None,
        }
    }
}

/// The JSON Schema of one NDJSON line, generated from the types above.
pub fn json_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(Event);
    serde_json::to_value(&schema).unwrap_or(serde_json::Value::Null)
}

#[cfg(test)]
mod tests {
    /// docs/events.schema.json is the generated schema, byte for byte: regenerate it with
    /// `podtrace schema > docs/events.schema.json` when the types change.
    #[test]
    fn shipped_schema_file_is_current() {
        let shipped = include_str!("../../docs/events.schema.json");
        let current = serde_json::to_string_pretty(&super::json_schema()).expect("schema");
        assert_eq!(shipped.trim_end(), current, "docs/events.schema.json is stale");
    }
}
