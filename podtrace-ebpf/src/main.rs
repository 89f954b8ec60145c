//! podtrace kernel programs: BTF tracepoints (tp_btf) on sched_process_exec / fork / exit /
//! free.
//!
//! They hand us the tracepoints' `task_struct` (and `linux_binprm`) pointers, which the
//! classic tracepoints do not (fork only gives pids, so threads could not be told from
//! processes), and need no tracefs. The pointers are BTF-typed: fields at the offsets the
//! daemon derives from the running kernel's BTF (the read-only `CONFIG` global) are read with
//! plain loads that the verifier checks and the JIT guards, instead of a
//! `bpf_probe_read_kernel` call each.
//!
//! Records are as long as their content (an exec carries its filename and argv back to back),
//! so a stalled reader's ring holds as many as possible; an exec that does not fit whole is
//! sent without filename and argv (flagged) before anything is dropped, and every drop is
//! counted per kind.
#![no_std]
#![no_main]

mod task;

use aya_ebpf::{
    bindings::BPF_NOEXIST,
    helpers::generated::bpf_ktime_get_boot_ns,
    macros::{btf_tracepoint, map},
    maps::{LruHashMap, PerCpuArray, RingBuf},
    programs::BtfTracePointContext,
    Global,
};
use aya_log_ebpf::debug;
use podtrace_common::{
    config, counter, flags, kind, ringbuf, Config, EventHeader, ReapRecord, ARGV_MAX,
    EXEC_RECORD_MAX, FILENAME_MAX, HEADER_LEN, LAYOUT,
};
use task::Task;

/// Set by the daemon at load time (offsets from BTF, own tgid, flags).
#[unsafe(no_mangle)]
static CONFIG: Global<Config> = Global::new(Config {
    offsets: podtrace_common::Offsets {
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
        _pad: 0,
    },
    self_tgid: 0,
    flags: 0,
    wakeup_every: 1,
    _pad: 0,
});

/// The wire layout this object was built with; the daemon refuses an object whose layout is
/// not its own (a stale build).
#[unsafe(no_mangle)]
#[used]
static PODTRACE_LAYOUT: u64 = LAYOUT;

/// Events to userspace. The daemon sets the size at load time (`--ring-buffer-bytes`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

/// Per-CPU counters, indexed by `podtrace_common::counter::*`.
#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(counter::COUNT, 0);

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

#[inline(always)]
fn count(index: u32) -> u64 {
    match COUNTERS.get_ptr_mut(index) {
        Some(c) => {
            // SAFETY: per-CPU slot, this program cannot be preempted by itself on this CPU.
            unsafe {
                *c += 1;
                *c
            }
        }
        None => 0,
    }
}

/// Wake the reader once every `wakeup_every` records offered on this CPU.
#[inline(always)]
fn wakeup_flag(cfg: &Config) -> u64 {
    let every = u64::from(cfg.wakeup_every.max(1));
    if count(counter::OFFERED).is_multiple_of(every) {
        ringbuf::FORCE_WAKEUP
    } else {
        ringbuf::NO_WAKEUP
    }
}

/// Hands `bytes` to the ring buffer; counts it sent, or dropped for `kind`.
#[inline(always)]
fn send(bytes: &[u8], kind: u16, wake: u64, ctx: &BtfTracePointContext) -> bool {
    match EVENTS.output::<[u8]>(bytes, wake) {
        Ok(()) => {
            count(counter::SENT);
            true
        }
        Err(_) => {
            count(counter::DROPS + u32::from(kind));
            debug!(ctx, "ring buffer full: dropped a record of kind {}", kind);
            false
        }
    }
}

#[inline(always)]
fn send_header(hdr: &EventHeader, cfg: &Config, ctx: &BtfTracePointContext) {
    if hdr.flags & flags::PARTIAL != 0 {
        count(counter::READ_ERRORS);
    }
    send(header_bytes(hdr), hdr.kind, wakeup_flag(cfg), ctx);
}

#[inline(always)]
fn header_bytes(hdr: &EventHeader) -> &[u8] {
    // SAFETY: EventHeader is repr(C) plain data of HEADER_LEN bytes.
    unsafe { core::slice::from_raw_parts((hdr as *const EventHeader).cast::<u8>(), HEADER_LEN) }
}

// sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    match try_exec(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_exec(ctx: &BtfTracePointContext) -> Result<i32, i32> {
    let cfg = CONFIG.load();
    let task = Task::new(ctx.arg::<u64>(0), &cfg.offsets);
    let bprm: u64 = ctx.arg(2);
    let mut hdr = task.header(kind::EXEC, &cfg);
    if hdr.pid == cfg.self_tgid {
        return Ok(0);
    }
    let buf = SCRATCH.get_ptr_mut(0).ok_or(0)?;
    // SAFETY: the map value is EXEC_RECORD_MAX bytes and only this CPU uses it now.
    let buf = unsafe { &mut *buf };

    // The filename right after the header, without its NUL.
    let mut name_len = 0usize;
    let filename_ptr: u64 = task::load(bprm + cfg.offsets.binprm_filename as u64).unwrap_or(0);
    let name_area = buf
        .get_mut(HEADER_LEN..HEADER_LEN + FILENAME_MAX)
        .ok_or(0)?;
    match task::read_kernel_str(filename_ptr, name_area) {
        Some(n) => {
            name_len = n & (FILENAME_MAX - 1);
            if n >= FILENAME_MAX - 1 {
                hdr.flags |= flags::FILENAME_TRUNCATED;
            }
        }
        None => hdr.flags |= flags::PARTIAL,
    }
    hdr.filename_len = name_len as u16;

    // argv right after the filename.
    let (arg_start, arg_end) = task.args();
    let mut argv_len = 0usize;
    if arg_end > arg_start {
        let mut want = (arg_end - arg_start) as usize;
        if want > ARGV_MAX {
            want = ARGV_MAX;
            hdr.flags |= flags::ARGV_TRUNCATED;
        }
        let off = HEADER_LEN + name_len;
        if let Some(dst) = buf.get_mut(off..off + want) {
            if task::read_user(arg_start, dst) {
                argv_len = want;
            } else {
                hdr.flags |= flags::PARTIAL;
            }
        }
    }
    hdr.argv_len = argv_len as u16;
    if hdr.flags & flags::PARTIAL != 0 {
        count(counter::READ_ERRORS);
    }

    let wake = wakeup_flag(&cfg);
    if let Some(h) = buf.get_mut(..HEADER_LEN) {
        h.copy_from_slice(header_bytes(&hdr));
    }
    let total = HEADER_LEN + name_len + argv_len;
    if let Some(record) = buf.get(..total) {
        if EVENTS.output::<[u8]>(record, wake).is_ok() {
            count(counter::SENT);
            return Ok(0);
        }
    }
    // No room for the whole record: the exec itself (who, when, where) matters more than its
    // argv, and a header fits where a full record did not.
    hdr.flags |= flags::EXEC_TRIMMED;
    hdr.filename_len = 0;
    hdr.argv_len = 0;
    if send(header_bytes(&hdr), kind::EXEC, wake, ctx) {
        count(counter::EXEC_TRIMMED);
    }
    Ok(0)
}

// sched_process_fork(struct task_struct *parent, struct task_struct *child)
#[btf_tracepoint(function = "sched_process_fork")]
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    match try_fork(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_fork(ctx: &BtfTracePointContext) -> Result<i32, i32> {
    let cfg = CONFIG.load();
    let child = Task::new(ctx.arg::<u64>(1), &cfg.offsets);
    let mut hdr = child.header(kind::FORK, &cfg);
    if hdr.pid == cfg.self_tgid {
        return Ok(0);
    }
    if hdr.pid != hdr.tid {
        // A new thread of an existing process: never a process event.
        count(counter::THREADS);
        if cfg.flags & config::THREADS == 0 {
            return Ok(0);
        }
        hdr.kind = kind::THREAD;
    }
    send_header(&hdr, &cfg, ctx);
    Ok(0)
}

// sched_process_exit(struct task_struct *p, bool group_dead): fires once per exiting thread;
// `group_dead` (kernels since 6.16) is true for the thread whose exit ended the process.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit(ctx: BtfTracePointContext) -> i32 {
    match try_exit_group_dead(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_exit_group_dead(ctx: &BtfTracePointContext) -> Result<i32, i32> {
    let group_dead: u64 = ctx.arg(1);
    if group_dead & 0xff == 0 {
        return Ok(0);
    }
    let cfg = CONFIG.load();
    report_exit(&Task::new(ctx.arg::<u64>(0), &cfg.offsets), &cfg, ctx);
    Ok(0)
}

// sched_process_exit(struct task_struct *p) on kernels without `group_dead`: the daemon loads
// this one instead of the above.
#[btf_tracepoint(function = "sched_process_exit")]
pub fn sched_process_exit_legacy(ctx: BtfTracePointContext) -> i32 {
    match try_exit_legacy(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_exit_legacy(ctx: &BtfTracePointContext) -> Result<i32, i32> {
    let cfg = CONFIG.load();
    let task = Task::new(ctx.arg::<u64>(0), &cfg.offsets);
    // signal->live was decremented before the tracepoint: 0 means every thread is exiting.
    // Two threads can both see 0; only the one that claims (tgid, start) first reports.
    if task.live_threads()? != 0 {
        return Ok(0);
    }
    let key = [u64::from(task.tgid()?), task.start_ns()?];
    if EXITED.insert(key, 1u8, u64::from(BPF_NOEXIST)).is_err() {
        count(counter::EXIT_DUPLICATES);
        return Ok(0);
    }
    report_exit(&task, &cfg, ctx);
    Ok(0)
}

#[inline(always)]
fn report_exit(task: &Task, cfg: &Config, ctx: &BtfTracePointContext) {
    let mut hdr = task.header(kind::EXIT, cfg);
    if hdr.pid == cfg.self_tgid {
        return;
    }
    match task.exit_status(cfg) {
        Ok(s) => hdr.exit_status = s,
        Err(_) => hdr.flags |= flags::PARTIAL,
    }
    send_header(&hdr, cfg, ctx);
}

// sched_process_free(struct task_struct *p): the task struct is released (after the reap);
// for a thread-group leader that is the process leaving the process table.
#[btf_tracepoint(function = "sched_process_free")]
pub fn sched_process_free(ctx: BtfTracePointContext) -> i32 {
    match try_free(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_free(ctx: &BtfTracePointContext) -> Result<i32, i32> {
    let cfg = CONFIG.load();
    let task = Task::new(ctx.arg::<u64>(0), &cfg.offsets);
    // Threads, and an old leader replaced by an exec from another thread (its group_leader
    // points at the new one), are not the process.
    if !task.is_group_leader()? {
        return Ok(0);
    }
    let rec = ReapRecord {
        kind: kind::REAP,
        flags: 0,
        pid: task.tgid()?,
        ts_ns: now(),
        start_ns: task.start_ns()?,
    };
    if rec.pid == cfg.self_tgid {
        return Ok(0);
    }
    // SAFETY: ReapRecord is repr(C) plain data.
    let bytes = unsafe {
        core::slice::from_raw_parts(
            (&rec as *const ReapRecord).cast::<u8>(),
            core::mem::size_of::<ReapRecord>(),
        )
    };
    send(bytes, kind::REAP, wakeup_flag(&cfg), ctx);
    Ok(0)
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
