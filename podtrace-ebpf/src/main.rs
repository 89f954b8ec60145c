//! podtrace kernel programs on sched_process_exec / fork / exit / free, each twice: as a BTF
//! tracepoint (tp_btf, Linux 5.5 and later) and as a raw tracepoint (Linux 4.17 and later).
//! The daemon loads the BTF ones where the kernel takes them and the raw ones elsewhere.
//!
//! BTF tracepoints hand us the tracepoints' `task_struct` (and `linux_binprm`) pointers as
//! BTF-typed pointers: fields at the offsets the daemon derives from the running kernel's BTF
//! (the read-only `CONFIG` global) are read with plain loads that the verifier checks and the
//! JIT guards, instead of a `bpf_probe_read_kernel` call each. Raw tracepoints hand over the
//! same pointers as plain numbers, read with `bpf_probe_read_kernel` (access.rs). Either way
//! new threads are told from new processes in the kernel (the classic tracepoints' fork only
//! gives pids), and neither needs tracefs.
//!
//! Records are as long as their content (an exec carries its filename and argv back to back),
//! so a stalled reader's buffer holds as many as possible; an exec that does not fit whole is
//! sent without filename and argv (flagged) before anything is dropped, and every drop is
//! counted per kind. They go through the BPF ring buffer, or, in the object built with the
//! `perf-buffer` feature, the per-CPU perf buffers (transport.rs).
#![no_std]
#![no_main]

#[cfg(all(feature = "perf-buffer", feature = "kernel-log"))]
compile_error!("kernel-log sends through a BPF ring buffer: build perf-buffer without it");

mod access;
mod task;
mod transport;

use access::{Access, Probed, Typed};
use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::generated::bpf_ktime_get_boot_ns,
    macros::{btf_tracepoint, map, raw_tracepoint},
    maps::{LruHashMap, PerCpuArray},
    programs::{BtfTracePointContext, RawTracePointContext},
    EbpfContext,
};
use podtrace_common::{
    config, counter, flags, kind, ringbuf, Config, EventHeader, Offsets, ReapRecord, ARGV_MAX,
    EXEC_RECORD_MAX, FILENAME_MAX, HEADER_LEN, LAYOUT,
};
use task::{conf, Task};
use transport::{send_bytes, Slot};

/// Set by the daemon at load time (offsets from BTF, own tgid, flags). In .rodata, which the
/// loader freezes: the verifier then knows every field as a constant (so loads at these
/// offsets are checked against the kernel's BTF), and `cfg!` reads one field at a time.
#[unsafe(no_mangle)]
static CONFIG: Config = Config {
    offsets: Offsets {
        task_pid: 0,
        task_tgid: 0,
        task_real_parent: 0,
        task_group_leader: 0,
        task_thread_pid: 0,
        task_cred: 0,
        task_mm: 0,
        task_comm: 0,
        task_start_boottime: 0,
        task_exit_code: 0,
        task_signal: 0,
        task_cgroups: 0,
        signal_live: 0,
        signal_flags: 0,
        signal_group_exit_code: 0,
        cred_uid: 0,
        cred_gid: 0,
        pid_level: 0,
        pid_numbers: 0,
        upid_size: 0,
        upid_nr: 0,
        upid_ns: 0,
        pidns_inum: 0,
        mm_arg_start: 0,
        mm_arg_end: 0,
        css_set_dfl_cgrp: 0,
        css_set_v1_subsys: 0,
        css_cgroup: 0,
        cgroup_kn: 0,
        kernfs_node_id: 0,
        binprm_filename: 0,
        task_flags: 0,
    },
    self_tgid: 0,
    flags: 0,
    wakeup_every: 1,
    _pad: 0,
};

/// The wire layout this object was built with; the daemon refuses an object whose layout is
/// not its own (a stale build).
#[unsafe(no_mangle)]
#[used]
static PODTRACE_LAYOUT: u64 = LAYOUT;

/// Per-CPU counters, one array indexed by `podtrace_common::counter::*` (one lookup a run).
#[map]
static COUNTERS: PerCpuArray<[u64; counter::COUNT as usize]> = PerCpuArray::with_max_entries(1, 0);

/// Per-CPU scratch space for an exec record (too large for the 512-byte BPF stack).
#[map]
static SCRATCH: PerCpuArray<[u8; EXEC_RECORD_MAX]> = PerCpuArray::with_max_entries(1, 0);

/// Processes whose exit was reported, by (tgid, start): on kernels whose exit tracepoint
/// does not say `group_dead`, two threads finishing at once can both see the group's live
/// count at 0; inserting here with BPF_NOEXIST lets exactly one of them report. Least
/// recently used entries go first (the race lasts microseconds). The daemon shrinks it to one
/// entry where the tracepoint has `group_dead`.
#[map]
static EXITED: LruHashMap<[u64; 2], u8> = LruHashMap::with_max_entries(8192, 0);

/// `-EEXIST`: what a BPF_NOEXIST insert returns when the key is there.
const EEXIST: i32 = -17;

/// This CPU's counters (None only if the map is missing, which the loader rules out).
struct Counters(Option<*mut [u64; counter::COUNT as usize]>);

impl Counters {
    #[inline(always)]
    fn get() -> Self {
        Self(COUNTERS.get_ptr_mut(0))
    }

    #[inline(always)]
    fn add(&self, index: u32) -> u64 {
        match self.0 {
            // SAFETY: per-CPU slot, this program cannot be preempted by itself on this CPU;
            // `index` is one of the constants below COUNT.
            Some(c) => unsafe {
                let slot = &mut (*c)[(index & 31) as usize % counter::COUNT as usize];
                *slot += 1;
                *slot
            },
            None => 0,
        }
    }

    /// Counts a record offered to the daemon; the ring buffer's submit flag that wakes the
    /// reader once every `wakeup_every` (a power of two) records on this CPU.
    #[inline(always)]
    fn offer(&self) -> u64 {
        let mask = u64::from(conf!(wakeup_every).max(1)) - 1;
        if self.add(counter::OFFERED) & mask == 0 {
            ringbuf::FORCE_WAKEUP
        } else {
            ringbuf::NO_WAKEUP
        }
    }

    /// A record of `kind` did not fit.
    #[inline(always)]
    fn dropped<C: EbpfContext>(&self, kind: u16, _ctx: &C) {
        self.add(counter::DROPS + u32::from(kind));
        #[cfg(feature = "kernel-log")]
        aya_log_ebpf::debug!(_ctx, "ring buffer full: dropped a record of kind {}", kind);
    }
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// A header-only record (fork, thread, exit), built in its slot (in place in the ring buffer).
///
/// The reservation is the only branch before `fill_header`'s loads (see there why that
/// matters); the wakeup is decided after.
#[inline(always)]
fn send_header<A: Access, C: EbpfContext>(
    task: Task<A>,
    kind: u16,
    exit_status: Option<task::ExitStatus>,
    ctx: &C,
) {
    let Some(mut slot) = Slot::reserve() else {
        let c = Counters::get();
        c.add(counter::OFFERED);
        c.dropped(kind, ctx);
        return;
    };
    let h = slot.header();
    // SAFETY: `h` is a reserved, writable EventHeader; fill_header writes every field but
    // ts_ns, written here.
    let mut partial = unsafe { task.fill_header(kind, h) };
    unsafe {
        (*h).ts_ns = now();
        if let Some(status) = exit_status {
            match status.status() {
                Ok(s) => (*h).exit_status = s,
                Err(_) => partial = true,
            }
        }
        if partial {
            (*h).flags |= flags::PARTIAL;
        }
    }
    let c = Counters::get();
    if !slot.send(ctx, c.offer()) {
        c.dropped(kind, ctx);
        return;
    }
    c.add(counter::SENT);
    if partial {
        c.add(counter::READ_ERRORS);
    }
}

// sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> u32 {
    match try_exec::<Typed, _>(&ctx, ctx.arg(0), ctx.arg(2)) {
        Ok(v) | Err(v) => v,
    }
}

#[raw_tracepoint(tracepoint = "sched_process_exec")]
pub fn sched_process_exec_raw(ctx: RawTracePointContext) -> u32 {
    match try_exec::<Probed, _>(&ctx, ctx.arg(0), ctx.arg(2)) {
        Ok(v) | Err(v) => v,
    }
}

#[inline(always)]
fn try_exec<A: Access, C: EbpfContext>(ctx: &C, task: u64, bprm: u64) -> Result<u32, u32> {
    let task = Task::<A>::new(task);
    if task.tgid()? == conf!(self_tgid) {
        return Ok(0);
    }
    // Pointers first (see `Task::fill_header`).
    let mm = task.mm();
    let filename_ptr = Task::<A>::binprm_filename(bprm);
    let buf = SCRATCH.get_ptr_mut(0).ok_or(0u32)?;
    // SAFETY: the map value is EXEC_RECORD_MAX bytes and only this CPU uses it now.
    let buf = unsafe { &mut *buf };
    // The header at the start of the scratch record, built in place.
    let h = buf.as_mut_ptr().cast::<EventHeader>();
    // SAFETY: the scratch value is 8-byte aligned and longer than a header.
    let mut partial = unsafe { task.fill_header(kind::EXEC, h) };
    let mut hflags = 0u16;

    // The filename right after the header, without its NUL.
    let mut name_len = 0usize;
    let name_area = buf
        .get_mut(HEADER_LEN..HEADER_LEN + FILENAME_MAX)
        .ok_or(0u32)?;
    match task::read_kernel_str(filename_ptr, name_area) {
        Some(n) => {
            name_len = n & (FILENAME_MAX - 1);
            if n >= FILENAME_MAX - 1 {
                hflags |= flags::FILENAME_TRUNCATED;
            }
        }
        None => partial = true,
    }

    // argv right after the filename.
    let (arg_start, arg_end) = task::args::<A>(mm);
    let mut argv_len = 0usize;
    if arg_end > arg_start {
        let mut want = (arg_end - arg_start) as usize;
        if want > ARGV_MAX {
            want = ARGV_MAX;
            hflags |= flags::ARGV_TRUNCATED;
        }
        let off = HEADER_LEN + name_len;
        if let Some(dst) = buf.get_mut(off..off + want) {
            if task::read_user(arg_start, dst) {
                argv_len = want;
            } else {
                partial = true;
            }
        }
    }
    if partial {
        hflags |= flags::PARTIAL;
    }
    // SAFETY: as above.
    unsafe {
        (*h).ts_ns = now();
        (*h).flags |= hflags;
        (*h).filename_len = name_len as u16;
        (*h).argv_len = argv_len as u16;
    }

    let c = Counters::get();
    if partial {
        c.add(counter::READ_ERRORS);
    }
    let wake = c.offer();
    let total = HEADER_LEN + name_len + argv_len;
    if let Some(record) = buf.get(..total) {
        if send_bytes(ctx, record, wake) {
            c.add(counter::SENT);
            return Ok(0);
        }
    }
    // No room for the whole record: the exec itself (who, when, where) matters more than its
    // argv, and a header fits where a full record did not.
    // SAFETY: as above.
    unsafe {
        (*h).flags |= flags::EXEC_TRIMMED;
        (*h).filename_len = 0;
        (*h).argv_len = 0;
    }
    if let Some(record) = buf.get(..HEADER_LEN) {
        if send_bytes(ctx, record, wake) {
            c.add(counter::SENT);
            c.add(counter::EXEC_TRIMMED);
            return Ok(0);
        }
    }
    c.dropped(kind::EXEC, ctx);
    Ok(0)
}

// sched_process_fork(struct task_struct *parent, struct task_struct *child)
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> u32 {
    match try_fork::<Typed, _>(&ctx, ctx.arg(1)) {
        Ok(v) | Err(v) => v,
    }
}

#[raw_tracepoint(tracepoint = "sched_process_fork")]
pub fn sched_process_fork_raw(ctx: RawTracePointContext) -> u32 {
    match try_fork::<Probed, _>(&ctx, ctx.arg(1)) {
        Ok(v) | Err(v) => v,
    }
}

#[inline(always)]
fn try_fork<A: Access, C: EbpfContext>(ctx: &C, child: u64) -> Result<u32, u32> {
    let child = Task::<A>::new(child);
    let pid = child.tgid()?;
    if pid == conf!(self_tgid) {
        return Ok(0);
    }
    if child.is_kthread()? {
        // Kernel threads are not processes podtrace reports (the /proc snapshot leaves them
        // out too).
        Counters::get().add(counter::KTHREADS);
        return Ok(0);
    }
    let tid = child.tid()?;
    let mut k = kind::FORK;
    if pid != tid {
        // A new thread of an existing process: never a process event.
        Counters::get().add(counter::THREADS);
        if conf!(flags) & config::THREADS == 0 {
            return Ok(0);
        }
        k = kind::THREAD;
    }
    send_header(child, k, None, ctx);
    Ok(0)
}

// sched_process_exit(struct task_struct *p, bool group_dead): fires once per exiting thread;
// `group_dead` (kernels since 6.16) is true for the thread whose exit ended the process.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> u32 {
    match try_exit_group_dead::<Typed, _>(&ctx, ctx.arg(0), ctx.arg(1)) {
        Ok(v) | Err(v) => v,
    }
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit_raw(ctx: RawTracePointContext) -> u32 {
    match try_exit_group_dead::<Probed, _>(&ctx, ctx.arg(0), ctx.arg(1)) {
        Ok(v) | Err(v) => v,
    }
}

#[inline(always)]
fn try_exit_group_dead<A: Access, C: EbpfContext>(
    ctx: &C,
    task: u64,
    group_dead: u64,
) -> Result<u32, u32> {
    if group_dead & 0xff == 0 {
        return Ok(0);
    }
    report_exit(Task::<A>::new(task), ctx)
}

// sched_process_exit(struct task_struct *p) on kernels without `group_dead`: the daemon loads
// these instead of the above.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit_legacy(ctx: BtfTracePointContext) -> u32 {
    match try_exit_legacy::<Typed, _>(&ctx, ctx.arg(0)) {
        Ok(v) | Err(v) => v,
    }
}

#[raw_tracepoint(tracepoint = "sched_process_exit")]
pub fn sched_process_exit_legacy_raw(ctx: RawTracePointContext) -> u32 {
    match try_exit_legacy::<Probed, _>(&ctx, ctx.arg(0)) {
        Ok(v) | Err(v) => v,
    }
}

#[inline(always)]
fn try_exit_legacy<A: Access, C: EbpfContext>(ctx: &C, task: u64) -> Result<u32, u32> {
    let task = Task::<A>::new(task);
    // signal->live was decremented before the tracepoint: 0 means every thread is exiting.
    // Two threads can both see 0; only the one that claims (tgid, start) first reports.
    if task.live_threads()? != 0 {
        return Ok(0);
    }
    let key = [u64::from(task.tgid()?), task.start_ns()?];
    match EXITED.insert(key, 1u8, u64::from(BPF_NOEXIST)) {
        Ok(()) => {}
        Err(EEXIST) => {
            Counters::get().add(counter::EXIT_DUPLICATES);
            return Ok(0);
        }
        // The claim could not be made (no memory for the entry, ...): report all the same;
        // a rare duplicate is better than a lost exit (the daemon drops duplicates).
        Err(_) => {
            Counters::get().add(counter::EXIT_CLAIM_ERRORS);
        }
    }
    report_exit(task, ctx)
}

#[inline(always)]
fn report_exit<A: Access, C: EbpfContext>(task: Task<A>, ctx: &C) -> Result<u32, u32> {
    if task.tgid()? == conf!(self_tgid) {
        return Ok(0);
    }
    if task.is_kthread()? {
        Counters::get().add(counter::KTHREADS);
        return Ok(0);
    }
    send_header(task, kind::EXIT, Some(task.exit_status()), ctx);
    Ok(0)
}

// sched_process_free(struct task_struct *p): the task struct is released (after the reap);
// for a thread-group leader that is the process leaving the process table.
#[btf_tracepoint(function = "sched_process_free")]
pub fn sched_process_free(ctx: BtfTracePointContext) -> u32 {
    match try_free::<Typed, _>(&ctx, ctx.arg(0)) {
        Ok(v) | Err(v) => v,
    }
}

#[raw_tracepoint(tracepoint = "sched_process_free")]
pub fn sched_process_free_raw(ctx: RawTracePointContext) -> u32 {
    match try_free::<Probed, _>(&ctx, ctx.arg(0)) {
        Ok(v) | Err(v) => v,
    }
}

#[inline(always)]
fn try_free<A: Access, C: EbpfContext>(ctx: &C, task: u64) -> Result<u32, u32> {
    let task = Task::<A>::new(task);
    // Threads, and an old leader replaced by an exec from another thread (its group_leader
    // points at the new one), are not the process.
    if !task.is_group_leader()? {
        return Ok(0);
    }
    let pid = task.tgid()?;
    if pid == conf!(self_tgid) || task.is_kthread()? {
        return Ok(0);
    }
    // The leader's own start time (it is the leader).
    let record = ReapRecord {
        kind: kind::REAP,
        flags: 0,
        pid,
        ts_ns: now(),
        start_ns: task.start_boottime()?,
    };
    let c = Counters::get();
    let wake = c.offer();
    // SAFETY: a plain-data record on the stack, read for its size.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            (&raw const record).cast::<u8>(),
            core::mem::size_of::<ReapRecord>(),
        )
    };
    if send_bytes(ctx, bytes, wake) {
        c.add(counter::SENT);
    } else {
        c.dropped(kind::REAP, ctx);
    }
    Ok(0)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
