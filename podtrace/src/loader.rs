//! Loading and attaching the kernel programs.
use anyhow::{bail, Context, Result};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::BtfTracePoint;
use aya::Btf;
use aya::{Ebpf, EbpfLoader};
use podtrace_common::{config, counter, Config};

use crate::btf_offsets;

/// The three BTF tracepoints, named as both the programs and the kernel tracepoints.
pub const PROGRAMS: [&str; 3] = [
    "sched_process_exec",
    "sched_process_fork",
    "sched_process_exit",
];

#[cfg(podtrace_ebpf)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("PODTRACE_EBPF_OBJECT"));
#[cfg(not(podtrace_ebpf))]
static OBJECT: &[u8] = &[];

pub struct LoadOptions {
    pub ring_buffer_bytes: u32,
    pub threads: bool,
    pub kernel_debug: bool,
}

/// The loaded, attached programs and the maps the daemon reads.
pub struct Loaded {
    /// Dropping this detaches the programs.
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

/// Explains the usual reasons a load fails, naming the capability.
fn explain(e: impl std::fmt::Display) -> String {
    let msg = e.to_string();
    if msg.contains("Operation not permitted")
        || msg.contains("EPERM")
        || msg.contains("permission")
    {
        format!(
            "{msg}: loading eBPF needs CAP_BPF and CAP_PERFMON (or root); the ring buffer may also need \
             CAP_SYS_RESOURCE on kernels that charge memlock"
        )
    } else {
        msg
    }
}

pub fn load(opts: &LoadOptions) -> Result<Loaded> {
    if OBJECT.is_empty() {
        bail!(
            "this podtrace binary was built without its eBPF object: build with `cargo xtask build` \
             (or `cargo xtask run`)"
        );
    }
    let offsets = btf_offsets::from_system()?;
    let cfg = Config {
        offsets,
        self_tgid: std::process::id(),
        flags: if opts.threads { config::THREADS } else { 0 },
        // Wake the reader when a quarter of the ring (at most 256 KiB) waits; the live loop
        // also drains on its timer, so quiet periods are not held back.
        wakeup_bytes: (opts.ring_buffer_bytes / 4).min(1 << 18),
        _pad: 0,
    };
    let log_level: u8 = if opts.kernel_debug { 0xff } else { 0 };
    let mut ebpf = EbpfLoader::new()
        .override_global("CONFIG", &cfg, true)
        .override_global("AYA_LOG_LEVEL", &log_level, false)
        .map_max_entries("EVENTS", opts.ring_buffer_bytes)
        .load(OBJECT)
        .map_err(|e| anyhow::anyhow!(explain(&e)))
        .context("loading the eBPF programs")?;
    let logger = if opts.kernel_debug {
        Some(aya_log::EbpfLogger::init(&mut ebpf).context("starting the kernel debug log")?)
    } else {
        None
    };
    let btf = Btf::from_sys_fs().context("reading the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
    for name in PROGRAMS {
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the eBPF object"))?
            .try_into()
            .with_context(|| format!("program {name} is not a BTF tracepoint"))?;
        prog.load(name, &btf)
            .map_err(|e| anyhow::anyhow!("{}", explain(format!("{e:?}"))))
            .with_context(|| format!("verifying {name}"))?;
        prog.attach()
            .map_err(|e| anyhow::anyhow!(explain(&e)))
            .with_context(|| format!("attaching BTF tracepoint {name}"))?;
    }
    let events = RingBuf::try_from(ebpf.take_map("EVENTS").context("map EVENTS missing")?)
        .context("map EVENTS is not a ring buffer")?;
    let counters =
        PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("map COUNTERS missing")?)
            .context("map COUNTERS is not a per-CPU array")?;
    Ok(Loaded {
        ebpf,
        events,
        counters,
        logger,
    })
}

/// Sum over CPUs of one kernel counter.
pub fn counter_sum(counters: &PerCpuArray<MapData, u64>, index: u32) -> u64 {
    counters.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelCounters {
    pub drops: u64,
    pub threads: u64,
    pub read_errors: u64,
    pub sent: u64,
}

pub fn read_counters(counters: &PerCpuArray<MapData, u64>) -> KernelCounters {
    KernelCounters {
        drops: counter_sum(counters, counter::RINGBUF_DROPS),
        threads: counter_sum(counters, counter::THREADS),
        read_errors: counter_sum(counters, counter::READ_ERRORS),
        sent: counter_sum(counters, counter::SENT),
    }
}

/// Whether an error is the kernel refusing for lack of privileges.
pub fn is_privilege_error(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.to_string().contains("needs CAP_BPF"))
}

/// Run count and total run time of one kernel program (BPF run-time statistics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct ProgramStats {
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

/// Turns on the kernel's BPF run-time statistics for as long as the returned fd lives.
pub fn enable_run_time_stats() -> Result<std::os::fd::OwnedFd> {
    aya::sys::enable_stats(aya::sys::Stats::RunTime)
        .context("enabling BPF run-time statistics (BPF_ENABLE_STATS)")
}

/// The kernel's statistics of our programs (zero unless statistics are enabled).
pub fn program_stats(ebpf: &Ebpf) -> std::collections::BTreeMap<String, ProgramStats> {
    let mut out = std::collections::BTreeMap::new();
    for name in PROGRAMS {
        let Some(info) = ebpf.program(name).and_then(|p| p.info().ok()) else {
            continue;
        };
        out.insert(
            name.to_string(),
            ProgramStats {
                run_cnt: info.run_count(),
                run_time_ns: info.run_time().as_nanos() as u64,
            },
        );
    }
    out
}
