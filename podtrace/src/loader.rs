//! Loading and attaching the kernel programs, along a fallback chain chosen by trying:
//!
//! - transport: the BPF ring buffer, else (the kernel cannot create one: before 5.8) the
//!   per-CPU perf buffers, each from an object of its own (an object's maps are all created);
//! - attach: BTF tracepoints (tp_btf), else (the kernel refuses them) raw tracepoints, whose
//!   programs read fields with `bpf_probe_read_kernel`;
//! - field names: the current ones, else their older names (btf_offsets::RENAMED).
//!
//! Either step can be forced (`--attach`, `--transport`). A refusal for lack of privileges
//! (EPERM / EACCES) never falls back: it is reported with what is missing, RLIMIT_MEMLOCK
//! included on kernels that charge BPF memory to it.
use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuArray, PerfEventArray, RingBuf};
use aya::programs::{BtfTracePoint, RawTracePoint};
use aya::Btf;
use aya::{Ebpf, EbpfLoader};
use podtrace_common::{config, counter, kind, Config, EXEC_RECORD_MAX, LAYOUT, LAYOUT_SYMBOL};

use crate::btf_offsets::{self, KernelLayout};
use crate::error::Failure;
use crate::exit_probe::{self, ExitCodeOf};
use crate::privileges::{self, Memlock};
use crate::trace::LostKinds;
use crate::transport::{Source, Transport};

/// How the programs attach to the tracepoints.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Attach {
    /// BTF tracepoints (tp_btf, Linux 5.5 and later): typed pointers, plain loads.
    TpBtf,
    /// Raw tracepoints (Linux 4.17 and later): fields read with bpf_probe_read_kernel.
    RawTp,
}

impl Attach {
    pub fn as_str(self) -> &'static str {
        match self {
            Attach::TpBtf => "tp-btf",
            Attach::RawTp => "raw-tp",
        }
    }

    /// The program name's suffix in the object for this attach type.
    fn suffix(self) -> &'static str {
        match self {
            Attach::TpBtf => "",
            Attach::RawTp => "_raw",
        }
    }
}

/// The path the programs took: how they attach, how records come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct KernelPath {
    pub attach: Attach,
    pub transport: Transport,
}

impl std::fmt::Display for KernelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} + {}", self.attach.as_str(), self.transport.as_str())
    }
}

/// The tracepoints, each with the base name of its program (the exit tracepoint has two
/// programs per attach type: with `group_dead` and without).
const TRACEPOINTS: [&str; 4] = [
    "sched_process_exec",
    "sched_process_fork",
    "sched_process_exit",
    "sched_process_free",
];
const EXIT_LEGACY: &str = "sched_process_exit_legacy";

/// Every program name in the objects.
pub fn program_names() -> Vec<String> {
    let mut names = Vec::new();
    for a in [Attach::TpBtf, Attach::RawTp] {
        for base in TRACEPOINTS.iter().copied().chain([EXIT_LEGACY]) {
            names.push(format!("{base}{}", a.suffix()));
        }
    }
    names
}

/// How many programs are attached (one exit program of the two).
pub const ATTACHED: usize = 4;

#[cfg(podtrace_ebpf)]
static OBJECT: &[u8] = aya::include_bytes_aligned!(env!("PODTRACE_EBPF_OBJECT"));
#[cfg(not(podtrace_ebpf))]
static OBJECT: &[u8] = &[];
#[cfg(podtrace_ebpf)]
static OBJECT_PERF: &[u8] = aya::include_bytes_aligned!(env!("PODTRACE_EBPF_OBJECT_PERF"));
#[cfg(not(podtrace_ebpf))]
static OBJECT_PERF: &[u8] = &[];

pub struct LoadOptions {
    pub ring_buffer_bytes: u32,
    pub threads: bool,
    pub kernel_debug: bool,
    /// The v1 controller whose hierarchy the programs also read (None: v2 only).
    pub v1_controller: Option<String>,
    /// Forced attach type (None: tp_btf, then raw tracepoints).
    pub attach: Option<Attach>,
    /// Forced transport (None: ring buffer, then perf buffers).
    pub transport: Option<Transport>,
}

/// The loaded, attached programs and the maps the daemon reads.
pub struct Loaded {
    pub path: KernelPath,
    /// What was tried before `path` and why it did not load (empty: the first choice).
    pub fallbacks: Vec<String>,
    /// Fields found under older names (btf_offsets::RENAMED).
    pub older_names: Vec<String>,
    /// The exit program attached: `group_dead` from the tracepoint, or the race-free check.
    pub exit_program: String,
    /// Dropping this detaches the programs.
    pub ebpf: Ebpf,
    pub events: Source,
    pub counters: CounterMap,
    pub logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    /// RLIMIT_MEMLOCK after podtrace raised it, where the kernel charges BPF memory to it.
    pub memlock: Option<Memlock>,
}

/// What the kernel charges to RLIMIT_MEMLOCK (before 5.11) for the maps and programs, about:
/// the record buffer, the per-CPU scratch and counters, the exit-claim map and the programs.
pub fn memlock_need(ring_buffer_bytes: u32, transport: Transport, cpus: usize) -> u64 {
    let cpus = cpus.max(1) as u64;
    let events = match transport {
        Transport::RingBuffer => u64::from(ring_buffer_bytes) + 2 * 4096,
        // The perf buffers' pages count against perf_event_mlock_kb first; the map is small.
        Transport::PerfBuffer => 4096,
    };
    let per_cpu = cpus * (EXEC_RECORD_MAX as u64 + 8 * u64::from(counter::COUNT) + 128);
    // The exit-claim LRU map: ~100 bytes an entry, plus per-CPU free lists.
    let exited = 8192 * 100 + cpus * 4096;
    // Programs (a few pages each), .rodata and the log buffer.
    let programs = 64 * 4096;
    events + per_cpu + exited + programs
}

/// What the node gave this process, for the messages of a refusal.
struct Grants {
    release: String,
    memlock: Option<Memlock>,
    need: u64,
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

/// The message for a refusal, naming what is missing: RLIMIT_MEMLOCK where the kernel
/// charges BPF memory to it and the limit is below the need, else the capabilities.
fn privilege_message(
    cap_eff: Option<u64>,
    cap_last_cap: Option<u32>,
    g: Option<&Grants>,
) -> String {
    if let Some(m) = g.and_then(|g| {
        privileges::memlock_shortfall(&g.release, g.memlock.and_then(|m| m.soft), g.need)
    }) {
        return m;
    }
    let need = format!(
        "podtrace needs {} to load and attach its kernel programs",
        privileges::needed_capabilities(cap_last_cap)
    );
    match cap_eff {
        Some(eff) => {
            let missing = privileges::missing_capabilities(eff, cap_last_cap);
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

/// The error's text with its whole cause chain (aya's messages name the map or program, the
/// io error the errno).
fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
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
    msg
}

/// Explains the usual reasons a load fails; a refusal for lack of privileges (or of
/// RLIMIT_MEMLOCK) is a `Failure::Unsupported` naming what is missing.
fn explain(e: &(dyn std::error::Error + 'static), g: Option<&Grants>) -> anyhow::Error {
    let msg = chain_text(e);
    if permission_denied(e) {
        Failure::Unsupported(format!(
            "{msg}: {}",
            privilege_message(
                privileges::effective_capabilities(),
                privileges::cap_last_cap(),
                g
            )
        ))
        .into()
    } else {
        anyhow::anyhow!(msg)
    }
}

/// A program the kernel did not load: refused by the verifier (its log says why, and what
/// the kernel returned then, often EACCES, is no privilege matter), or else as `explain`.
fn load_error(e: aya::programs::ProgramError, g: &Grants) -> anyhow::Error {
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
    explain(&e, Some(g))
}

/// Whether an error is a refusal for privileges (never a reason to fall back).
fn is_refusal(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| matches!(c.downcast_ref::<Failure>(), Some(Failure::Unsupported(_))))
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

/// The embedded objects: (ring buffer, perf buffers).
pub fn objects() -> Result<(&'static [u8], &'static [u8])> {
    if OBJECT.is_empty() || OBJECT_PERF.is_empty() {
        return Err(Failure::StaleObject(
            "this podtrace binary was built without its eBPF objects: build with \
             `cargo xtask build` (or `cargo xtask run`)"
                .into(),
        )
        .into());
    }
    Ok((OBJECT, OBJECT_PERF))
}

pub fn load(opts: &LoadOptions) -> Result<Loaded> {
    let (ring, perf) = objects()?;
    load_objects(ring, perf, opts)
}

/// The offsets for this kernel and aya's loader set up with the programs' config (its parse
/// of the kernel's BTF done and dropped: see inside). One loader for either object: their
/// record maps have different names (`EVENTS`, `PERF_EVENTS`), so each setting reaches only
/// its own.
fn prepare(opts: &LoadOptions) -> Result<(KernelLayout, Config, EbpfLoader<'static>)> {
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
    if layout.kernfs_id_ino32 {
        flags |= config::KERNFS_ID_INO32;
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
    loader.map_max_entries(RING_MAP, opts.ring_buffer_bytes);
    if !opts.kernel_debug {
        // The log's own ring buffer, unused: one page (its memory counts on old kernels).
        loader.map_max_entries("AYA_LOGS", 4096);
    }
    if layout.exit_has_group_dead {
        // Only the legacy exit programs use the claim map.
        loader.map_max_entries("EXITED", 1);
    }
    Ok((layout, cfg, loader))
}

/// The record map of each object.
const RING_MAP: &str = "EVENTS";
const PERF_MAP: &str = "PERF_EVENTS";

/// Loads and attaches the programs of one attach type; on failure the ones already loaded
/// are unloaded again.
fn attach_all(
    ebpf: &mut Ebpf,
    attach: Attach,
    layout: &KernelLayout,
    g: &Grants,
) -> Result<String> {
    let exit_base = if layout.exit_has_group_dead {
        "sched_process_exit"
    } else {
        EXIT_LEGACY
    };
    let names: Vec<(String, &str)> = TRACEPOINTS
        .iter()
        .map(|&tp| {
            let base = if tp == "sched_process_exit" {
                exit_base
            } else {
                tp
            };
            (format!("{base}{}", attach.suffix()), tp)
        })
        .collect();
    let result = (|| -> Result<()> {
        let btf =
            match attach {
                Attach::TpBtf => {
                    let ids = layout
                        .tracepoints
                        .as_ref()
                        .map_err(|e| anyhow::anyhow!("{e}"))?;
                    // A BTF tracepoint program is loaded against its tracepoint's
                    // `btf_trace_<name>` typedef id, which aya finds by name in the Btf it is
                    // given: a stand-in with those typedefs at their kernel ids instead of a
                    // second parse of all of vmlinux.
                    Some(attach_btf(ids).map_err(|e| {
                        anyhow::anyhow!("building the tracepoints' BTF for aya: {e}")
                    })?)
                }
                Attach::RawTp => None,
            };
        for (name, tracepoint) in &names {
            let prog = ebpf
                .program_mut(name)
                .with_context(|| format!("program {name} missing from the eBPF object"))?;
            match &btf {
                Some(btf) => {
                    let prog: &mut BtfTracePoint = prog
                        .try_into()
                        .with_context(|| format!("program {name} is not a BTF tracepoint"))?;
                    prog.load(tracepoint, btf)
                        .map_err(|e| load_error(e, g))
                        .with_context(|| format!("verifying {name}"))?;
                    prog.attach()
                        .map_err(|e| explain(&e, Some(g)))
                        .with_context(|| format!("attaching BTF tracepoint {tracepoint}"))?;
                }
                None => {
                    let prog: &mut RawTracePoint = prog
                        .try_into()
                        .with_context(|| format!("program {name} is not a raw tracepoint"))?;
                    prog.load()
                        .map_err(|e| load_error(e, g))
                        .with_context(|| format!("verifying {name}"))?;
                    prog.attach(tracepoint)
                        .map_err(|e| explain(&e, Some(g)))
                        .with_context(|| format!("attaching raw tracepoint {tracepoint}"))?;
                }
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        for (name, _) in &names {
            if let Some(prog) = ebpf.program_mut(name) {
                let _ = match attach {
                    Attach::TpBtf => <&mut BtfTracePoint>::try_from(prog).map(|p| p.unload()),
                    Attach::RawTp => <&mut RawTracePoint>::try_from(prog).map(|p| p.unload()),
                };
            }
        }
        return Err(e);
    }
    Ok(format!("{exit_base}{}", attach.suffix()))
}

/// Loads and attaches the programs of `ring` (ring-buffer object) or `perf` (perf-buffer
/// object), along the fallback chain (experiments and tests may pass other builds).
pub fn load_objects(ring: &[u8], perf: &[u8], opts: &LoadOptions) -> Result<Loaded> {
    check_layout(ring)?;
    check_layout(perf)?;
    let (layout, cfg, mut loader) = prepare(opts)?;
    let log_level: u8 = if opts.kernel_debug { 0xff } else { 0 };
    loader
        .override_global("CONFIG", &cfg, true)
        .override_global("AYA_LOG_LEVEL", &log_level, false);
    let release = privileges::kernel_release();
    let cpus = aya::util::nr_cpus().unwrap_or(1);
    let memlock = if privileges::kernel_charges_memlock(&release) {
        privileges::raise_memlock()
    } else {
        None
    };
    let transports: Vec<Transport> = match opts.transport {
        Some(t) => vec![t],
        None => vec![Transport::RingBuffer, Transport::PerfBuffer],
    };
    let attaches: Vec<Attach> = match opts.attach {
        Some(a) => vec![a],
        None => vec![Attach::TpBtf, Attach::RawTp],
    };
    if opts.kernel_debug && transports == [Transport::PerfBuffer] {
        return Err(Failure::BadInput(
            "--kernel-debug needs the ring-buffer transport (the kernel log goes through a \
             BPF ring buffer of its own)"
                .into(),
        )
        .into());
    }
    let mut fallbacks = Vec::new();
    let mut last_err = None;
    for (ti, &transport) in transports.iter().enumerate() {
        let g = Grants {
            release: release.clone(),
            memlock,
            need: memlock_need(opts.ring_buffer_bytes, transport, cpus),
        };
        let object = match transport {
            Transport::RingBuffer => ring,
            Transport::PerfBuffer => perf,
        };
        let mut ebpf = match loader.load(object).map_err(|e| explain(&e, Some(&g))) {
            Ok(e) => e,
            Err(e) if ti + 1 < transports.len() && !is_refusal(&e) => {
                fallbacks.push(format!("{}: {e:#}", transport.as_str()));
                last_err = Some(e);
                continue;
            }
            Err(e) => return Err(e.context("loading the eBPF programs")),
        };
        let mut attached = None;
        for (ai, &attach) in attaches.iter().enumerate() {
            match attach_all(&mut ebpf, attach, &layout, &g) {
                Ok(exit) => {
                    attached = Some((attach, exit));
                    break;
                }
                Err(e) if ai + 1 < attaches.len() && !is_refusal(&e) => {
                    fallbacks.push(format!("{}: {e:#}", attach.as_str()));
                }
                Err(e) => return Err(e),
            }
        }
        let Some((attach, exit_program)) = attached else {
            last_err = Some(anyhow::anyhow!("no attach type loaded"));
            continue;
        };
        return finish(
            ebpf,
            transport,
            attach,
            exit_program,
            fallbacks,
            &layout,
            opts,
            memlock,
        );
    }
    Err(last_err.unwrap_or_else(|| anyhow::anyhow!("no transport to try")))
}

#[allow(clippy::too_many_arguments)]
fn finish(
    mut ebpf: Ebpf,
    transport: Transport,
    attach: Attach,
    exit_program: String,
    fallbacks: Vec<String>,
    layout: &KernelLayout,
    opts: &LoadOptions,
    memlock: Option<Memlock>,
) -> Result<Loaded> {
    let logger = if opts.kernel_debug {
        Some(aya_log::EbpfLogger::init(&mut ebpf).context("starting the kernel debug log")?)
    } else {
        None
    };
    let events = match transport {
        Transport::RingBuffer => Source::Ring(
            RingBuf::try_from(ebpf.take_map(RING_MAP).context("map EVENTS missing")?)
                .context("map EVENTS is not a ring buffer")?,
        ),
        Transport::PerfBuffer => Source::perf(
            PerfEventArray::try_from(ebpf.take_map(PERF_MAP).context("map PERF_EVENTS missing")?)
                .context("map PERF_EVENTS is not a perf event array")?,
            opts.ring_buffer_bytes,
        )?,
    };
    let counters = CounterMap(
        PerCpuArray::try_from(ebpf.take_map("COUNTERS").context("map COUNTERS missing")?)
            .context("map COUNTERS is not a per-CPU array of the counters")?,
    );
    release_startup_heap();
    Ok(Loaded {
        path: KernelPath { attach, transport },
        fallbacks,
        older_names: layout.older_names.clone(),
        exit_program,
        ebpf,
        events,
        counters,
        logger,
        memlock,
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

/// Every kernel counter, summed over CPUs; None when the map could not be read (unknown,
/// not zero).
fn counter_sums(counters: &CounterMap) -> Option<[u64; counter::COUNT as usize]> {
    let cpus = counters.0.get(&0, 0).ok()?;
    let mut sums = [0u64; counter::COUNT as usize];
    for c in cpus.iter() {
        for (s, v) in sums.iter_mut().zip(c.iter()) {
            *s += v;
        }
    }
    Some(sums)
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
    /// Exits reported though the race-free claim failed (a duplicate possible, not a loss).
    pub exit_claim_errors: u64,
    /// Forks, exits and reaps of kernel threads, not reported.
    pub kernel_threads: u64,
}

/// The kernel's counters from their per-CPU sums.
fn from_sums(s: &[u64; counter::COUNT as usize]) -> KernelCounters {
    let at = |i: u32| s.get(i as usize).copied().unwrap_or(0);
    let d = |k: u16| at(counter::DROPS + u32::from(k));
    KernelCounters {
        drops: LostKinds {
            exec: d(kind::EXEC),
            fork: d(kind::FORK),
            exit: d(kind::EXIT),
            reap: d(kind::REAP),
            thread: d(kind::THREAD),
        },
        threads: at(counter::THREADS),
        read_errors: at(counter::READ_ERRORS),
        sent: at(counter::SENT),
        exec_trimmed: at(counter::EXEC_TRIMMED),
        exit_duplicates: at(counter::EXIT_DUPLICATES),
        exit_claim_errors: at(counter::EXIT_CLAIM_ERRORS),
        kernel_threads: at(counter::KTHREADS),
    }
}

/// The kernel's counters (drops by kind, records sent, ...); None when the counter map could
/// not be read: unknown, never zero.
pub fn read_counters(counters: &CounterMap) -> Option<KernelCounters> {
    counter_sums(counters).map(|s| from_sums(&s))
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
        let ids = layout
            .tracepoints
            .expect("this kernel has the btf_trace_ typedefs");
        let kernel = btf_names(&std::fs::read(btf_offsets::VMLINUX).expect("kernel BTF"));
        let raw = attach_btf_raw(&ids);
        let stand_in = btf_names(&raw);
        attach_btf(&ids).expect("aya parses the stand-in");
        for tp in [
            "sched_process_exec",
            "sched_process_fork",
            "sched_process_exit",
            "sched_process_free",
        ] {
            let want = (8, format!("btf_trace_{tp}"));
            let id = ids.get(tp).expect("a tracepoint") as usize;
            assert_eq!(kernel.get(id), Some(&want), "{tp} in the kernel's BTF");
            assert_eq!(stand_in.get(id), Some(&want), "{tp} in the stand-in");
            assert_eq!(
                kernel.iter().filter(|t| **t == want).count(),
                1,
                "{tp}: one typedef of that name"
            );
        }
        let max = [ids.exec, ids.fork, ids.exit, ids.free]
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
        let err = explain(&e, None);
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
        let err = explain(&other, None);
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
        check_layout(OBJECT_PERF).expect("the embedded perf-buffer object is current");
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
        let m = privilege_message(Some(0), Some(40), None);
        assert!(m.contains("lacks CAP_BPF and CAP_PERFMON"), "{m}");
        let m = privilege_message(Some(u64::MAX), Some(40), None);
        assert!(m.contains("seccomp"), "{m}");
    }

    /// Before 5.8 (RHEL 8's 4.18): the DaemonSet's CAP_BPF and CAP_PERFMON are unknown to the
    /// kernel; the message asks for CAP_SYS_ADMIN.
    #[test]
    fn without_cap_bpf_in_the_kernel_the_message_names_cap_sys_admin() {
        let daemonset = (1 << privileges::CAP_BPF)
            | (1 << privileges::CAP_PERFMON)
            | (1 << privileges::CAP_SYS_PTRACE);
        let m = privilege_message(Some(daemonset), Some(37), None);
        assert!(m.contains("needs CAP_SYS_ADMIN"), "{m}");
        assert!(m.contains("lacks CAP_SYS_ADMIN"), "{m}");
        assert!(!m.contains("seccomp"), "{m}");
    }

    /// EPERM on a kernel that charges BPF memory to RLIMIT_MEMLOCK, with the limit below the
    /// need: the message is about memlock, never a seccomp or LSM hint.
    #[test]
    fn a_memlock_refusal_says_memlock() {
        let g = Grants {
            release: "5.10.0-32-cloud-amd64".into(),
            memlock: Some(Memlock {
                soft: Some(64 << 10),
                hard: Some(64 << 10),
            }),
            need: memlock_need(1 << 22, Transport::RingBuffer, 2),
        };
        let daemonset = (1 << privileges::CAP_BPF)
            | (1 << privileges::CAP_PERFMON)
            | (1 << privileges::CAP_SYS_PTRACE);
        let m = privilege_message(Some(daemonset), Some(40), Some(&g));
        assert!(m.contains("RLIMIT_MEMLOCK is 64 KiB"), "{m}");
        assert!(m.contains("CAP_SYS_RESOURCE"), "{m}");
        assert!(!m.contains("seccomp") && !m.contains("LSM"), "{m}");
        // The same limit on 6.1 (memory cgroup accounting): not memlock's fault.
        let g = Grants {
            release: "6.1.0-57-cloud-amd64".into(),
            ..g
        };
        let m = privilege_message(Some(daemonset), Some(40), Some(&g));
        assert!(m.contains("seccomp"), "{m}");
    }

    #[test]
    fn the_need_covers_the_ring_buffer_and_grows_with_cpus() {
        let two = memlock_need(1 << 22, Transport::RingBuffer, 2);
        assert!(two > 1 << 22 && two < 6 << 20, "{two}");
        assert!(memlock_need(1 << 22, Transport::RingBuffer, 64) > two);
        assert!(memlock_need(1 << 22, Transport::PerfBuffer, 2) < two);
    }

    #[test]
    fn every_program_name_once() {
        let names = program_names();
        assert_eq!(names.len(), 10);
        let unique: std::collections::BTreeSet<_> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        assert!(names.contains(&"sched_process_exit_legacy_raw".to_string()));
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
    for name in program_names() {
        let Some(info) = ebpf.program(&name).and_then(|p| p.info().ok()) else {
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
