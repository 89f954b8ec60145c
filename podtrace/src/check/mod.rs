//! `podtrace check`: whether and how podtrace will run on this node, one line per item
//! (ok / warn / fail, what was found, the fix), leaving nothing loaded.
//!
//! - `facts`: what the node has (the only part that looks at the system: it loads and
//!   attaches the programs as `run` would, then drops them, which unloads them);
//! - `verdict`: the lines, made from the facts alone (pure, unit-tested);
//! - `render`: text and JSON from the report.
//!
//! Exit status: 0 when no line fails, 1 otherwise (bad arguments stay 2).
pub mod facts;
pub mod render;
pub mod verdict;

use serde::Serialize;

pub use facts::{CheckOptions, Facts};
pub use verdict::{Line, Verdict};

/// The lines, their worst verdict and the facts they were made from.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub verdict: Verdict,
    pub lines: Vec<Line>,
    pub facts: Facts,
}

impl Report {
    pub fn from_facts(facts: Facts) -> Self {
        let lines = verdict::lines(&facts);
        Self {
            verdict: verdict::overall(&lines),
            lines,
            facts,
        }
    }
}

/// Looks at the node and judges it.
pub fn check(opts: &CheckOptions) -> Report {
    Report::from_facts(facts::gather(opts))
}

/// Facts of a node where everything is fine, for the tests of the verdicts and renderers.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::facts::*;
    use crate::cgroups::CgroupSetup;
    use crate::loader::{Attach, KernelPath};
    use crate::privileges::{
        CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE, CAP_SYS_RESOURCE, HOST_PIDNS_INO,
    };
    use crate::transport::Transport;

    /// The capabilities the DaemonSet granted before SYS_RESOURCE, and since.
    pub const DAEMONSET: u64 = (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_SYS_PTRACE);
    pub const DAEMONSET_NEW: u64 = DAEMONSET | (1 << CAP_SYS_RESOURCE);

    pub fn loaded() -> Load {
        Load::Loaded {
            path: KernelPath {
                attach: Attach::TpBtf,
                transport: Transport::RingBuffer,
            },
            fallbacks: Vec::new(),
            exit_program: "sched_process_exit".into(),
            forced_attach: None,
            forced_transport: None,
            programs: vec![ProgramId {
                name: "sched_process_exec".into(),
                id: 7,
            }],
            maps: Some(vec![3]),
            fds_left: Some(0),
        }
    }

    /// A 6.1 node as the DaemonSet runs podtrace, everything fine.
    pub fn facts() -> Facts {
        Facts {
            kernel: Kernel {
                release: Some("6.1.0-57-cloud-amd64".into()),
                arch: Some("x86_64".into()),
            },
            btf: Btf::Parsed {
                path: "/sys/kernel/btf/vmlinux".into(),
                older_names: Vec::new(),
                no_tp_btf: None,
            },
            capabilities: Capabilities {
                effective: Some(DAEMONSET_NEW),
                last_cap: Some(40),
            },
            memlock: Memlock {
                charged: false,
                limit: Some(Limit {
                    soft: Some(8 << 20),
                    hard: Some(8 << 20),
                }),
                need: 5 << 20,
                transport: Transport::RingBuffer,
            },
            load: loaded(),
            cgroups: Cgroups::Chosen {
                mode: "auto".into(),
                setup: CgroupSetup::v2_only(),
                v2_mount: Some("/sys/fs/cgroup".into()),
                v1_mount: None,
            },
            cri: Cri::Answered {
                endpoint: "/run/containerd/containerd.sock".into(),
                runtime: "containerd v1.7.0 (CRI v1)".into(),
            },
            pid_namespace: PidNamespace {
                inode: Some(HOST_PIDNS_INO),
                proc_is_own: Some(true),
            },
        }
    }
}
