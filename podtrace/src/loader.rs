//! Loading and attaching the kernel programs.
use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuArray, RingBuf};
use aya::programs::BtfTracePoint;
use aya::Btf;
use aya::{Ebpf, EbpfLoader};
use podtrace_common::{config, counter, kind, Config, LAYOUT, LAYOUT_SYMBOL};

use crate::btf_offsets;
use crate::error::Failure;
use crate::exit_probe::{self, ExitCodeOf};
use crate::trace::LostKinds;

/// (program, tracepoint) pairs; the exit tracepoint has two programs, one is loaded.
const EXEC: (&str, &str) = ("sched_process_exec", "sched_process_exec");
const FORK: (&str, &str) = ("sched_process_fork", "sched_process_fork");
const EXIT: (&str, &str) = ("sched_process_exit", "sched_process_exit");
const EXIT_LEGACY: (&str, &str) = ("sched_process_exit_legacy", "sched_process_exit");
const FREE: (&str, &str) = ("sched_process_free", "sched_process_free");

/// Every program in the object.
pub const PROGRAMS: [&str; 5] = [EXEC.0, FORK.0, EXIT.0, EXIT_LEGACY.0, FREE.0];
/// How many programs are attached (one exit program of the two).
pub const ATTACHED: usize = 4;

#[cfg(podtrace_ebpf)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("PODTRACE_EBPF_OBJECT"));
#[cfg(not(podtrace_ebpf))]
static OBJECT: &[u8] = &[];

pub struct LoadOptions {
    pub ring_buffer_bytes: u32,
    pub threads: bool,
    pub kernel_debug: bool,
    /// The v1 controller whose hierarchy the programs also read (None: v2 only).
    pub v1_controller: Option<String>,
}

/// The loaded, attached programs and the maps the daemon reads.
pub struct Loaded {
    /// The exit program attached: `group_dead` from the tracepoint, or the race-free check.
    pub exit_program: &'static str,
    /// Dropping this detaches the programs.
    pub ebpf: Ebpf,
    pub events: RingBuf<MapData>,
    pub counters: PerCpuArray<MapData, u64>,
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

/// Capability numbers (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

/// The effective capability set of this process (`CapEff` in /proc/self/status).
pub fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// The capabilities loading and attaching the programs needs that `cap_eff` lacks
/// (CAP_SYS_ADMIN stands in for both on any kernel).
pub fn missing_capabilities(cap_eff: u64) -> Vec<&'static str> {
    let has = |cap: u32| cap_eff & (1u64 << cap) != 0;
    let mut missing = Vec::new();
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !has(CAP_PERFMON) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// Whether the kernel refused with EPERM / EACCES somewhere in this error's chain.
fn permission_denied(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::PermissionDenied
                || matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES))
            {
                return true;
            }
        }
        let text = err.to_string();
        if text.contains("Operation not permitted") || text.contains("Permission denied") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The message for a refusal, naming what is missing.
fn privilege_message(cap_eff: Option<u64>) -> String {
    let need = "podtrace needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN, or root) to load and \
                attach its kernel programs";
    match cap_eff {
        Some(eff) => {
            let missing = missing_capabilities(eff);
            if missing.is_empty() {
                format!(
                    "{need}; this process has them (CapEff {eff:016x}), so something else refused \
                     the bpf() call: a seccomp profile (run unconfined), a non-initial user \
                     namespace, an LSM policy or kernel lockdown"
                )
            } else {
                format!(
                    "{need}; this process lacks {} (CapEff {eff:016x})",
                    missing.join(" and ")
                )
            }
        }
        None => format!("{need}; /proc/self/status could not be read to tell which are missing"),
    }
}

/// Explains the usual reasons a load fails, naming the capability. Keeps the whole cause
/// chain in the text (aya's messages name the map or program, the io error the errno); a
/// refusal for lack of privileges is a `Failure::Unsupported`.
fn explain(e: &(dyn std::error::Error + 'static)) -> anyhow::Error {
    let mut msg = e.to_string();
    // aya's program load error ends with an empty verifier log when the kernel refused early.
    if let Some(head) = msg.trim_end().strip_suffix("Verifier output:") {
        msg = head.trim_end().trim_end_matches('.').to_string();
    }
    let mut cur = e.source();
    while let Some(s) = cur {
        // Some errors already print their source ("map error: {0}").
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cur = s.source();
    }
    if permission_denied(e) {
        Failure::Unsupported(format!(
            "{msg}: {}",
            privilege_message(effective_capabilities())
        ))
        .into()
    } else {
        anyhow::anyhow!(msg)
    }
}

/// The `PODTRACE_LAYOUT` value an ELF object carries, if it has the symbol.
pub fn object_layout(elf: &[u8]) -> Option<u64> {
    use object::{Object, ObjectSection, ObjectSymbol};
    let file = object::File::parse(elf).ok()?;
    let sym = file.symbols().find(|s| s.name() == Ok(LAYOUT_SYMBOL))?;
    let section = file.section_by_index(sym.section_index()?).ok()?;
    let data = section.data().ok()?;
    let start = usize::try_from(sym.address().checked_sub(section.address())?).ok()?;
    let bytes: [u8; 8] = data.get(start..start + 8)?.try_into().ok()?;
    Some(u64::from_le_bytes(bytes))
}

/// Refuses an object built from another wire layout than this daemon's.
fn check_layout(elf: &[u8]) -> Result<()> {
    match object_layout(elf) {
        Some(l) if l == LAYOUT => Ok(()),
        found => Err(Failure::StaleObject(format!(
            "the embedded eBPF object was built from another version of the wire types \
             (object layout {}, daemon {LAYOUT:#018x}): rebuild both with `cargo xtask build`",
            found.map_or_else(|| "missing".to_string(), |l| format!("{l:#018x}"))
        ))
        .into()),
    }
}

pub fn load(opts: &LoadOptions) -> Result<Loaded> {
    if OBJECT.is_empty() {
        return Err(Failure::StaleObject(
            "this podtrace binary was built without its eBPF object: build with \
             `cargo xtask build` (or `cargo xtask run`)"
                .into(),
        )
        .into());
    }
    check_layout(OBJECT)?;
    let btf_rs = btf_offsets::open_system().map_err(|e| Failure::Unsupported(format!("{e:#}")))?;
    let layout = btf_offsets::resolve(&btf_rs, opts.v1_controller.as_deref())
        .map_err(|e| Failure::Unsupported(format!("{e:#}")))?;
    drop(btf_rs);
    let mut flags = if opts.threads { config::THREADS } else { 0 };
    if opts.v1_controller.is_some() {
        flags |= config::CGROUP_V1;
    }
    match exit_probe::probe() {
        Some(ExitCodeOf::Leader) => flags |= config::EXIT_CODE_OF_LEADER,
        Some(ExitCodeOf::LastThread) => {}
        None => tracing::warn!(
            "could not ask the kernel whose exit code a process ends with when its leader \
             exits first: reporting the last thread's (as Linux 6.1 and later do)"
        ),
    }
    let cfg = Config {
        offsets: layout.offsets,
        self_tgid: std::process::id(),
        flags,
        // Wake the reader every N records per CPU, N sized so that a quarter of the ring
        // (records average ~130 bytes) is never exceeded, at most 256; the live loop also
        // drains on its timer, so quiet periods are not held back.
        wakeup_every: (opts.ring_buffer_bytes / 4 / 130).clamp(1, 256),
        _pad: 0,
    };
    let log_level: u8 = if opts.kernel_debug { 0xff } else { 0 };
    let exit = if layout.exit_has_group_dead {
        EXIT
    } else {
        EXIT_LEGACY
    };
    let mut loader = EbpfLoader::new();
    loader
        .override_global("CONFIG", &cfg, true)
        .override_global("AYA_LOG_LEVEL", &log_level, false)
        .map_max_entries("EVENTS", opts.ring_buffer_bytes);
    if layout.exit_has_group_dead {
        // Only the legacy exit program uses the dedup map.
        loader.map_max_entries("EXITED", 1);
    }
    let mut ebpf = loader
        .load(OBJECT)
        .map_err(|e| explain(&e))
        .context("loading the eBPF programs")?;
    let logger = if opts.kernel_debug {
        Some(aya_log::EbpfLogger::init(&mut ebpf).context("starting the kernel debug log")?)
    } else {
        None
    };
    let btf = Btf::from_sys_fs().map_err(|e| {
        Failure::Unsupported(format!(
            "reading the kernel's BTF ({}): {e} (podtrace needs a kernel built with \
             CONFIG_DEBUG_INFO_BTF)",
            btf_offsets::VMLINUX
        ))
    })?;
    for (name, tracepoint) in [EXEC, FORK, exit, FREE] {
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the eBPF object"))?
            .try_into()
            .with_context(|| format!("program {name} is not a BTF tracepoint"))?;
        prog.load(tracepoint, &btf)
            .map_err(|e| {
                let why = explain(&e);
                // The verifier's log is in the Debug form only; worth having when it refused.
                if why.downcast_ref::<Failure>().is_some() {
                    why
                } else {
                    anyhow::anyhow!("{why}\n{e:?}")
                }
            })
            .with_context(|| format!("verifying {name}"))?;
        prog.attach()
            .map_err(|e| explain(&e))
            .with_context(|| format!("attaching BTF tracepoint {tracepoint}"))?;
    }
    let events = RingBuf::try_from(ebpf.take_map("EVENTS").context("map EVENTS missing")?)
        .context("map EVENTS is not a ring buffer")?;
    let counters =
        PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("map COUNTERS missing")?)
            .context("map COUNTERS is not a per-CPU array")?;
    drop(btf);
    release_startup_heap();
    Ok(Loaded {
        exit_program: exit.0,
        ebpf,
        events,
        counters,
        logger,
    })
}

/// Hands the heap that parsing the kernel's BTF (aya, for loading) used back to the system:
/// glibc keeps freed memory otherwise, ~25 MiB of resident set for the daemon's whole life.
fn release_startup_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Sum over CPUs of one kernel counter.
pub fn counter_sum(counters: &PerCpuArray<MapData, u64>, index: u32) -> u64 {
    counters.get(&index, 0).map(|v| v.iter().sum()).unwrap_or(0)
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelCounters {
    /// Records the ring buffer had no room for, by kind.
    pub drops: LostKinds,
    pub threads: u64,
    pub read_errors: u64,
    pub sent: u64,
    /// Exec records sent without filename and argv (no room for the whole record).
    pub exec_trimmed: u64,
    /// Exits the race-free check kept from being reported twice (kernels without group_dead).
    pub exit_duplicates: u64,
}

/// Ring-buffer drops by kind (the kernel's own counters).
pub fn read_drops(counters: &PerCpuArray<MapData, u64>) -> LostKinds {
    let d = |k: u16| counter_sum(counters, counter::DROPS + u32::from(k));
    LostKinds {
        exec: d(kind::EXEC),
        fork: d(kind::FORK),
        exit: d(kind::EXIT),
        reap: d(kind::REAP),
        thread: d(kind::THREAD),
    }
}

pub fn read_counters(counters: &PerCpuArray<MapData, u64>) -> KernelCounters {
    KernelCounters {
        drops: read_drops(counters),
        threads: counter_sum(counters, counter::THREADS),
        read_errors: counter_sum(counters, counter::READ_ERRORS),
        sent: counter_sum(counters, counter::SENT),
        exec_trimmed: counter_sum(counters, counter::EXEC_TRIMMED),
        exit_duplicates: counter_sum(counters, counter::EXIT_DUPLICATES),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cap_eff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }

    #[test]
    fn names_the_missing_capabilities() {
        assert_eq!(missing_capabilities(0), ["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_capabilities(1 << CAP_BPF), ["CAP_PERFMON"]);
        assert_eq!(missing_capabilities(1 << CAP_PERFMON), ["CAP_BPF"]);
        assert!(missing_capabilities((1 << CAP_BPF) | (1 << CAP_PERFMON)).is_empty());
        assert!(missing_capabilities(1 << CAP_SYS_ADMIN).is_empty());
    }

    #[test]
    fn eperm_anywhere_in_the_chain_is_a_privilege_error() {
        #[derive(Debug)]
        struct Outer(std::io::Error);
        impl std::fmt::Display for Outer {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("failed to create map `EVENTS`")
            }
        }
        impl std::error::Error for Outer {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let e = Outer(std::io::Error::from_raw_os_error(libc::EPERM));
        let err = explain(&e);
        let text = err.to_string();
        assert!(
            text.starts_with("failed to create map `EVENTS`: Operation not permitted"),
            "{text}"
        );
        assert!(text.contains("needs CAP_BPF"), "{text}");
        let err = err.context("loading the eBPF programs");
        assert_eq!(
            crate::error::exit_code(&err),
            2,
            "a privilege error is exit 2"
        );

        let other = Outer(std::io::Error::from_raw_os_error(libc::EINVAL));
        let err = explain(&other);
        assert!(!err.to_string().contains("CAP_"), "{err}");
        assert_eq!(crate::error::exit_code(&err), 1);
    }

    /// The object this binary embeds carries this daemon's layout; the same object with the
    /// value changed is refused as stale.
    #[cfg(podtrace_ebpf)]
    #[test]
    fn a_stale_kernel_object_is_refused() {
        use object::{Object, ObjectSection, ObjectSymbol};
        assert_eq!(object_layout(OBJECT), Some(LAYOUT));
        check_layout(OBJECT).expect("the embedded object is current");
        let file = object::File::parse(OBJECT).expect("ELF");
        let sym = file
            .symbols()
            .find(|s| s.name() == Ok(LAYOUT_SYMBOL))
            .expect("layout symbol");
        let section = file
            .section_by_index(sym.section_index().expect("section"))
            .expect("section");
        let (start, _) = section.file_range().expect("file range");
        let at = usize::try_from(start + sym.address() - section.address()).expect("offset");
        let mut stale = OBJECT.to_vec();
        stale[at] ^= 0xff;
        let err = check_layout(&stale).expect_err("stale layout");
        assert!(err.to_string().contains("cargo xtask build"), "{err}");
        assert_eq!(crate::error::exit_code(&err), 1);
        assert!(check_layout(b"not an ELF").is_err());
    }

    #[test]
    fn message_for_a_process_lacking_both() {
        let m = privilege_message(Some(0));
        assert!(m.contains("lacks CAP_BPF and CAP_PERFMON"), "{m}");
        let m = privilege_message(Some(u64::MAX));
        assert!(m.contains("seccomp"), "{m}");
    }
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
