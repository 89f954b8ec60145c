//! What `podtrace check` finds on the node: plain data (the verdicts are made from it in
//! `verdict.rs`), and [`gather`], the only part that looks at the system.
//!
//! Unknown stays unknown (`None`, an error text), never a guess.
use std::time::Duration;

use serde::Serialize;

use crate::btf_offsets;
use crate::cgroups::{self, CgroupMode, CgroupSetup, Mounts};
use crate::cri::{CriConfig, CriError, CriService};
use crate::error::Failure;
use crate::loader::{self, Attach, KernelPath, LoadOptions};
use crate::privileges;
use crate::transport::Transport;

/// What `check` tries, as `run` would be started (`--attach`, `--transport`, ...).
#[derive(Clone, Debug)]
pub struct CheckOptions {
    pub ring_buffer_bytes: u32,
    pub cgroup_mode: CgroupMode,
    pub attach: Option<Attach>,
    pub transport: Option<Transport>,
    /// None: `--no-cri`.
    pub cri: Option<CriConfig>,
}

/// Everything the verdicts are made from.
#[derive(Clone, Debug, Serialize)]
pub struct Facts {
    pub kernel: Kernel,
    pub btf: Btf,
    pub capabilities: Capabilities,
    pub memlock: Memlock,
    pub load: Load,
    pub cgroups: Cgroups,
    pub cri: Cri,
    pub pid_namespace: PidNamespace,
}

#[derive(Clone, Debug, Serialize)]
pub struct Kernel {
    /// `uname -r`; None when /proc/sys/kernel/osrelease cannot be read.
    pub release: Option<String>,
    /// `uname -m`.
    pub arch: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Btf {
    /// The kernel's BTF was read and every field the programs need found.
    Parsed {
        path: String,
        /// Fields found under an older name (`KernelLayout::older_names`).
        older_names: Vec<String>,
        /// Why BTF tracepoints cannot be loaded against it (the `btf_trace_` typedefs are
        /// missing), or None when they can.
        no_tp_btf: Option<String>,
    },
    /// Missing, not BTF, or without a field podtrace needs.
    Unusable { path: String, error: String },
}

#[derive(Clone, Debug, Serialize)]
pub struct Capabilities {
    /// `CapEff` of /proc/self/status; None when it cannot be read.
    pub effective: Option<u64>,
    /// /proc/sys/kernel/cap_last_cap; None when it cannot be read.
    pub last_cap: Option<u32>,
}

/// RLIMIT_MEMLOCK in bytes; None is unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Limit {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

impl From<privileges::Memlock> for Limit {
    fn from(m: privileges::Memlock) -> Self {
        Self {
            soft: m.soft,
            hard: m.hard,
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Memlock {
    /// Whether the kernel charges BPF memory to RLIMIT_MEMLOCK (before 5.11).
    pub charged: bool,
    /// The limit podtrace was started with (before it raises it); None: unreadable.
    pub limit: Option<Limit>,
    /// About what the maps and programs take (`loader::memlock_need`) for `transport`.
    pub need: u64,
    pub transport: Transport,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProgramId {
    pub name: String,
    pub id: u32,
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Load {
    /// The programs loaded and attached, then were dropped again.
    Loaded {
        path: KernelPath,
        /// What was tried first and why it did not load.
        fallbacks: Vec<String>,
        exit_program: String,
        /// What was forced (`--attach`, `--transport`).
        forced_attach: Option<Attach>,
        forced_transport: Option<Transport>,
        /// The kernel's ids of the programs and maps that were loaded (gone after `check`);
        /// maps None when the kernel's program info did not list them.
        programs: Vec<ProgramId>,
        maps: Option<Vec<u32>>,
        /// BPF and perf file descriptors this process still held after dropping them
        /// (beyond those it held before); None when /proc/self/fd cannot be listed.
        fds_left: Option<usize>,
    },
    /// The loader's error, and whether it is a refusal (privileges, memlock).
    Failed { error: String, refusal: bool },
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Cgroups {
    Chosen {
        mode: String,
        setup: CgroupSetup,
        v2_mount: Option<String>,
        v1_mount: Option<String>,
    },
    /// The mode cannot be honoured here (`run` would stop).
    Refused { mode: String, error: String },
}

#[derive(Clone, Debug, Serialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Cri {
    /// `--no-cri`.
    Skipped,
    /// No endpoint given and none of the usual sockets exists.
    NoSocket {
        tried: Vec<String>,
    },
    Answered {
        endpoint: String,
        runtime: String,
    },
    NotAnswering {
        endpoint: String,
        error: String,
    },
    /// The endpoint named with `--cri-endpoint` is missing or not a socket (`run` would stop).
    Unusable {
        error: String,
    },
}

#[derive(Clone, Debug, Serialize)]
pub struct PidNamespace {
    /// The inode of /proc/self/ns/pid; None when it cannot be read.
    pub inode: Option<u64>,
    /// Whether /proc/self is this process (/proc is this namespace's).
    pub proc_is_own: Option<bool>,
}

impl PidNamespace {
    pub fn own(&self) -> Option<(u64, bool)> {
        Some((self.inode?, self.proc_is_own?))
    }
}

fn os_release() -> Option<String> {
    Some(privileges::kernel_release()).filter(|r| !r.is_empty())
}

fn machine() -> Option<String> {
    // SAFETY: utsname is plain data; uname fills it.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: a valid out pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return None;
    }
    let bytes: Vec<u8> = u
        .machine
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Some(String::from_utf8_lossy(&bytes).into_owned()).filter(|s| !s.is_empty())
}

/// BPF objects and perf events among this process's file descriptors; None when
/// /proc/self/fd cannot be listed.
pub fn bpf_fds() -> Option<usize> {
    let dir = std::fs::read_dir("/proc/self/fd").ok()?;
    Some(
        dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| {
                let t = target.to_string_lossy();
                t.starts_with("anon_inode:bpf")
                    || t == "anon_inode:btf"
                    || t == "anon_inode:[perf_event]"
            })
            .count(),
    )
}

fn mode_name(mode: CgroupMode) -> String {
    match mode {
        CgroupMode::Auto => "auto",
        CgroupMode::V2 => "v2",
        CgroupMode::V1 => "v1",
    }
    .to_string()
}

/// Loads and attaches the programs as `run` would, then drops them (which detaches and
/// unloads them), keeping what was learnt.
fn try_load(opts: &CheckOptions, v1_controller: Option<String>) -> Load {
    let before = bpf_fds();
    let loaded = match loader::load(&LoadOptions {
        ring_buffer_bytes: opts.ring_buffer_bytes,
        threads: false,
        kernel_debug: false,
        v1_controller,
        attach: opts.attach,
        transport: opts.transport,
    }) {
        Ok(l) => l,
        Err(e) => {
            let refusal = e
                .chain()
                .any(|c| matches!(c.downcast_ref::<Failure>(), Some(Failure::Unsupported(_))));
            return Load::Failed {
                error: format!("{e:#}"),
                refusal,
            };
        }
    };
    let mut programs = Vec::new();
    let mut maps = Vec::new();
    for (name, prog) in loaded.ebpf.programs() {
        let Ok(info) = prog.info() else {
            continue; // not loaded (the other attach type, the other exit program)
        };
        programs.push(ProgramId {
            name: name.to_string(),
            id: info.id(),
        });
        if let Ok(Some(ids)) = info.map_ids() {
            maps.extend(ids);
        }
    }
    programs.sort_by(|a, b| a.name.cmp(&b.name));
    maps.sort_unstable();
    maps.dedup();
    // Every program uses maps (its config at least): none listed is not known, not none.
    let maps = (!maps.is_empty()).then_some(maps);
    let (path, fallbacks, exit_program) = (
        loaded.path,
        loaded.fallbacks.clone(),
        loaded.exit_program.clone(),
    );
    drop(loaded);
    let fds_left = match (before, bpf_fds()) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    Load::Loaded {
        path,
        fallbacks,
        exit_program,
        forced_attach: opts.attach,
        forced_transport: opts.transport,
        programs,
        maps,
        fds_left,
    }
}

/// The CRI endpoint `run` would use and its Version answer (a short timeout per call).
fn probe_cri(cfg: Option<&CriConfig>) -> Cri {
    let Some(cfg) = cfg else {
        return Cri::Skipped;
    };
    let cfg = CriConfig {
        timeout: CRI_TIMEOUT,
        ..cfg.clone()
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            return Cri::NotAnswering {
                endpoint: "unknown".into(),
                error: format!("starting the async runtime: {e}"),
            }
        }
    };
    match rt.block_on(CriService::probe(&cfg)) {
        Ok(p) => {
            let endpoint = p.endpoint.display().to_string();
            match p.runtime {
                Ok(runtime) => Cri::Answered { endpoint, runtime },
                Err(error) => Cri::NotAnswering { endpoint, error },
            }
        }
        Err(CriError::NoEndpoint { tried }) => Cri::NoSocket {
            tried: tried.iter().map(|p| p.display().to_string()).collect(),
        },
        Err(e) => Cri::Unusable {
            error: e.to_string(),
        },
    }
}

/// Per-call timeout of the CRI probe: a node's runtime answers Version in milliseconds.
const CRI_TIMEOUT: Duration = Duration::from_secs(1);

/// Looks at the node. Nothing here stops the check: what cannot be found is recorded as
/// such. The programs are loaded and unloaded again; RLIMIT_MEMLOCK is read before the
/// loader raises it (in this process only).
pub fn gather(opts: &CheckOptions) -> Facts {
    let release = os_release();
    let own = privileges::own_pidns();
    let pid_namespace = PidNamespace {
        inode: own.map(|(ino, _)| ino),
        proc_is_own: own.map(|(_, ours)| ours),
    };
    let capabilities = Capabilities {
        effective: privileges::effective_capabilities(),
        last_cap: privileges::cap_last_cap(),
    };
    let limit = privileges::memlock().map(Limit::from);
    let mounts = Mounts::from_system();
    let (cgroups, v1) = match cgroups::choose(&mounts, opts.cgroup_mode) {
        Ok((setup, v1)) => (
            Cgroups::Chosen {
                mode: mode_name(opts.cgroup_mode),
                v2_mount: if setup.v2 {
                    mounts.v2.as_ref().map(|p| p.display().to_string())
                } else {
                    None
                },
                v1_mount: v1.as_ref().map(|m| m.path.display().to_string()),
                setup,
            },
            v1,
        ),
        Err(error) => (
            Cgroups::Refused {
                mode: mode_name(opts.cgroup_mode),
                error,
            },
            None,
        ),
    };
    let v1_controller = v1.map(|m| m.controller);
    let btf = match btf_offsets::from_system(v1_controller.as_deref()) {
        Ok(layout) => Btf::Parsed {
            path: btf_offsets::VMLINUX.into(),
            older_names: layout.older_names,
            no_tp_btf: layout.tracepoints.err(),
        },
        Err(e) => Btf::Unusable {
            path: btf_offsets::VMLINUX.into(),
            error: format!("{e:#}"),
        },
    };
    let load = try_load(opts, v1_controller);
    let transport = match &load {
        Load::Loaded { path, .. } => path.transport,
        Load::Failed { .. } => opts.transport.unwrap_or(Transport::RingBuffer),
    };
    let cpus = aya::util::nr_cpus().unwrap_or(1);
    let memlock = Memlock {
        charged: release
            .as_deref()
            .is_none_or(privileges::kernel_charges_memlock),
        limit,
        need: loader::memlock_need(opts.ring_buffer_bytes, transport, cpus),
        transport,
    };
    let cri = probe_cri(opts.cri.as_ref());
    Facts {
        kernel: Kernel {
            release,
            arch: machine(),
        },
        btf,
        capabilities,
        memlock,
        load,
        cgroups,
        cri,
        pid_namespace,
    }
}
