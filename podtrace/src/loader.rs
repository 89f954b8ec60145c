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
    pub counters: CounterMap,
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

/// A program the kernel did not load: refused by the verifier (its log says why, and what
/// the kernel returned then, often EACCES, is no privilege matter), or else as `explain`.
fn load_error(e: aya::programs::ProgramError) -> anyhow::Error {
    if let aya::programs::ProgramError::LoadError {
        io_error,
        verifier_log,
    } = &e
    {
        let log = verifier_log.to_string();
        if !log.trim().is_empty() {
            return anyhow::anyhow!("the verifier refused it ({io_error}):\n{log}");
        }
    }
    explain(&e)
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
    load_object(OBJECT, opts)
}

/// Loads and attaches the programs of `object` (the embedded one, or another build of it:
/// experiments and tests).
pub fn load_object(object: &[u8], opts: &LoadOptions) -> Result<Loaded> {
    check_layout(object)?;
    // aya's loader parses all of the kernel's BTF when it is made (for CO-RE relocations,
    // which these programs do not have: the offsets come from `btf_offsets`). Made first, and
    // its parse dropped at once, so that this start-up peak comes before anything else is in
    // memory (the ring buffer mapping, the /proc snapshot) rather than on top of it.
    // The offsets come from the mapped BTF (btf-rs) meanwhile, on another thread: the two
    // take about as long. (aya's parse stays on this one: its heap is this thread's, which
    // `release_startup_heap` hands back best.)
    let (mut loader, layout) = std::thread::scope(|s| {
        let offsets = s.spawn(|| {
            btf_offsets::open_system()
                .and_then(|btf| btf_offsets::resolve(&btf, opts.v1_controller.as_deref()))
                .map_err(|e| anyhow::Error::from(Failure::Unsupported(format!("{e:#}"))))
        });
        let mut loader = EbpfLoader::new();
        loader.btf(None);
        (loader, offsets.join())
    });
    release_startup_heap();
    let layout = layout
        .map_err(|_| anyhow::anyhow!("reading the kernel's BTF for the field offsets failed"))??;
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
        wakeup_every: wakeup_every(opts.ring_buffer_bytes),
        _pad: 0,
    };
    let log_level: u8 = if opts.kernel_debug { 0xff } else { 0 };
    let exit = if layout.exit_has_group_dead {
        EXIT
    } else {
        EXIT_LEGACY
    };
    loader
        .override_global("CONFIG", &cfg, true)
        .override_global("AYA_LOG_LEVEL", &log_level, false)
        .map_max_entries("EVENTS", opts.ring_buffer_bytes);
    if layout.exit_has_group_dead {
        // Only the legacy exit program uses the dedup map.
        loader.map_max_entries("EXITED", 1);
    }
    let mut ebpf = loader
        .load(object)
        .map_err(|e| explain(&e))
        .context("loading the eBPF programs")?;
    let logger = if opts.kernel_debug {
        Some(aya_log::EbpfLogger::init(&mut ebpf).context("starting the kernel debug log")?)
    } else {
        None
    };
    // A BTF tracepoint program is loaded against its tracepoint's `btf_trace_<name>` typedef
    // id, which aya finds by name in the Btf it is given: a stand-in with those typedefs at
    // their kernel ids (from btf_offsets) instead of a second parse of all of vmlinux.
    let btf = attach_btf(&layout.tracepoints)
        .map_err(|e| anyhow::anyhow!("building the tracepoints' BTF for aya: {e}"))?;
    for (name, tracepoint) in [EXEC, FORK, exit, FREE] {
        let prog: &mut BtfTracePoint = ebpf
            .program_mut(name)
            .with_context(|| format!("program {name} missing from the eBPF object"))?
            .try_into()
            .with_context(|| format!("program {name} is not a BTF tracepoint"))?;
        prog.load(tracepoint, &btf)
            .map_err(load_error)
            .with_context(|| format!("verifying {name}"))?;
        prog.attach()
            .map_err(|e| explain(&e))
            .with_context(|| format!("attaching BTF tracepoint {tracepoint}"))?;
    }
    let events = RingBuf::try_from(ebpf.take_map("EVENTS").context("map EVENTS missing")?)
        .context("map EVENTS is not a ring buffer")?;
    let counters = CounterMap(
        PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("map COUNTERS missing")?)
            .context("map COUNTERS is not a per-CPU array of the counters")?,
    );
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

/// What aya needs of the kernel's BTF to load the BTF tracepoint programs: for each
/// tracepoint, a typedef named `btf_trace_<name>` at the type id it has in the kernel. Every
/// other id up to the largest is a placeholder (a pointer to void) that aya never looks at
/// by name; nothing of this BTF goes to the kernel.
pub fn attach_btf(ids: &btf_offsets::TracepointIds) -> Result<Btf, aya::BtfError> {
    Btf::parse(&attach_btf_raw(ids), aya::Endianness::default())
}

fn attach_btf_raw(ids: &btf_offsets::TracepointIds) -> Vec<u8> {
    const KIND_PTR: u32 = 2;
    const KIND_TYPEDEF: u32 = 8;
    let named = [
        (ids.exec, "sched_process_exec"),
        (ids.fork, "sched_process_fork"),
        (ids.exit, "sched_process_exit"),
        (ids.free, "sched_process_free"),
    ];
    let mut strings = vec![0u8];
    let mut name_at = std::collections::HashMap::new();
    for (id, tp) in named {
        name_at.insert(id, strings.len() as u32);
        strings.extend_from_slice(b"btf_trace_");
        strings.extend_from_slice(tp.as_bytes());
        strings.push(0);
    }
    let last = named.iter().map(|(id, _)| *id).max().unwrap_or(0);
    let mut types = Vec::with_capacity(12 * last as usize);
    for id in 1..=last {
        let (name, kind) = match name_at.get(&id) {
            Some(&off) => (off, KIND_TYPEDEF),
            None => (0, KIND_PTR),
        };
        // struct btf_type { name_off, info (kind << 24), type }: the target type is void.
        for word in [name, kind << 24, 0] {
            types.extend_from_slice(&word.to_ne_bytes());
        }
    }
    let mut raw = Vec::with_capacity(24 + types.len() + strings.len());
    // struct btf_header: magic, version, flags, hdr_len, type_off, type_len, str_off, str_len.
    raw.extend_from_slice(&0xeb9fu16.to_ne_bytes());
    raw.extend_from_slice(&[1, 0]);
    for word in [
        24,
        0,
        types.len() as u32,
        types.len() as u32,
        strings.len() as u32,
    ] {
        raw.extend_from_slice(&word.to_ne_bytes());
    }
    raw.extend_from_slice(&types);
    raw.extend_from_slice(&strings);
    raw
}

/// Hands the heap that parsing the kernel's BTF (aya, for loading) used back to the system:
/// glibc keeps freed memory otherwise, ~25 MiB of resident set for the daemon's whole life.
pub fn release_startup_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim has no preconditions.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Wake the reader every N records per CPU: N the largest power of two (at most 256) such
/// that N records (about 130 bytes each) stay within a quarter of the ring; the live loop
/// also drains on its timer, so quiet periods are not held back.
fn wakeup_every(ring_buffer_bytes: u32) -> u32 {
    let n = (ring_buffer_bytes / 4 / 130).clamp(1, 256);
    1 << n.ilog2()
}

/// The kernel programs' per-CPU counters (`podtrace_common::counter`).
pub struct CounterMap(PerCpuArray<MapData, [u64; counter::COUNT as usize]>);

/// Sum over CPUs of one kernel counter.
pub fn counter_sum(counters: &CounterMap, index: u32) -> u64 {
    counters
        .0
        .get(&0, 0)
        .map(|cpus| {
            cpus.iter()
                .map(|c| c.get(index as usize).copied().unwrap_or(0))
                .sum()
        })
        .unwrap_or(0)
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
pub fn read_drops(counters: &CounterMap) -> LostKinds {
    let d = |k: u16| counter_sum(counters, counter::DROPS + u32::from(k));
    LostKinds {
        exec: d(kind::EXEC),
        fork: d(kind::FORK),
        exit: d(kind::EXIT),
        reap: d(kind::REAP),
        thread: d(kind::THREAD),
    }
}

pub fn read_counters(counters: &CounterMap) -> KernelCounters {
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
    fn wakeups_are_a_power_of_two_within_a_quarter_of_the_ring() {
        assert_eq!(wakeup_every(1 << 22), 256);
        assert_eq!(wakeup_every(1 << 16), 64, "65536 / 4 / 130 = 126 -> 64");
        assert_eq!(wakeup_every(4096), 4, "4096 / 4 / 130 = 7 -> 4");
        assert_eq!(wakeup_every(0), 1);
        for ring in [4096u32, 1 << 14, 1 << 20, 1 << 22, 1 << 30] {
            let n = wakeup_every(ring);
            assert!(
                n.is_power_of_two() && n * 130 <= (ring / 4).max(130),
                "{ring}: {n}"
            );
        }
    }

    /// (kind, name) of every type of raw BTF, by id (index 0: void), read independently of
    /// btf-rs and aya.
    fn btf_names(raw: &[u8]) -> Vec<(u32, String)> {
        let u32_at = |at: usize| u32::from_ne_bytes(raw[at..at + 4].try_into().expect("4 bytes"));
        assert_eq!(&raw[..2], 0xeb9fu16.to_ne_bytes(), "BTF magic");
        let hdr = u32_at(4) as usize;
        let (types, type_len) = (hdr + u32_at(8) as usize, u32_at(12) as usize);
        let strings = hdr + u32_at(16) as usize;
        let mut out = vec![(0, String::new())];
        let mut at = types;
        while at < types + type_len {
            let (name, info) = (u32_at(at) as usize, u32_at(at + 4));
            let (kind, vlen) = ((info >> 24) & 0x1f, (info & 0xffff) as usize);
            let s = &raw[strings + name..];
            let end = s.iter().position(|&c| c == 0).expect("NUL");
            out.push((kind, String::from_utf8_lossy(&s[..end]).into_owned()));
            at += 12
                + match kind {
                    1 | 14 | 17 => 4,
                    3 => 12,
                    4 | 5 | 15 | 19 => 12 * vlen,
                    6 | 13 => 8 * vlen,
                    _ => 0,
                };
        }
        out
    }

    /// The tracepoint typedef ids btf_offsets found are those of the kernel's BTF (read here
    /// by a walker of its own), and the stand-in given to aya has them at the same ids.
    #[test]
    fn the_stand_in_btf_has_the_tracepoints_at_their_kernel_ids() {
        let layout = btf_offsets::from_system(None).expect("offsets from the kernel's BTF");
        let kernel = btf_names(&std::fs::read(btf_offsets::VMLINUX).expect("kernel BTF"));
        let raw = attach_btf_raw(&layout.tracepoints);
        let stand_in = btf_names(&raw);
        attach_btf(&layout.tracepoints).expect("aya parses the stand-in");
        for tp in [
            "sched_process_exec",
            "sched_process_fork",
            "sched_process_exit",
            "sched_process_free",
        ] {
            let want = (8, format!("btf_trace_{tp}"));
            let id = layout.tracepoints.get(tp).expect("a tracepoint") as usize;
            assert_eq!(kernel.get(id), Some(&want), "{tp} in the kernel's BTF");
            assert_eq!(stand_in.get(id), Some(&want), "{tp} in the stand-in");
            assert_eq!(
                kernel.iter().filter(|t| **t == want).count(),
                1,
                "{tp}: one typedef of that name"
            );
        }
        let max = [
            layout.tracepoints.exec,
            layout.tracepoints.fork,
            layout.tracepoints.exit,
            layout.tracepoints.free,
        ]
        .into_iter()
        .max()
        .expect("four ids") as usize;
        assert_eq!(stand_in.len(), max + 1, "nothing after the last typedef");
        assert!(
            stand_in.iter().filter(|(k, _)| *k == 8).count() == 4,
            "only the four typedefs are named"
        );
    }

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
