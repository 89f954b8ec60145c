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
};
use aya_log_ebpf::debug;
use podtrace_common::{
    config, counter, flags, kind, ringbuf, Config, EventHeader, Offsets, ReapRecord, ARGV_MAX,
    EXEC_RECORD_MAX, FILENAME_MAX, HEADER_LEN, LAYOUT,
};
use task::{conf, Task};

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
        _pad: 0,
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

/// Events to userspace. The daemon sets the size at load time (`--ring-buffer-bytes`).
#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 22, 0);

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

    /// Counts a record offered to the ring buffer; the submit flag that wakes the reader
    /// once every `wakeup_every` (a power of two) records on this CPU.
    #[inline(always)]
    fn offer(&self) -> u64 {
        let mask = u64::from(conf!(wakeup_every).max(1)) - 1;
        if self.add(counter::OFFERED) & mask == 0 {
            ringbuf::FORCE_WAKEUP
        } else {
            ringbuf::NO_WAKEUP
        }
    }

    /// A record of `kind` did not fit in the ring buffer.
    #[inline(always)]
    fn dropped(&self, kind: u16, ctx: &BtfTracePointContext) {
        self.add(counter::DROPS + u32::from(kind));
        debug!(ctx, "ring buffer full: dropped a record of kind {}", kind);
    }
}

#[inline(always)]
fn now() -> u64 {
    // SAFETY: helper without arguments.
    unsafe { bpf_ktime_get_boot_ns() }
}

/// A header-only record (fork, thread, exit), written in place in the ring buffer.
#[inline(always)]
///
/// The reservation is the only branch before `fill_header`'s loads (see there why that
/// matters); the wakeup is decided after.
fn send_header(
    task: Task,
    kind: u16,
    exit_status: Option<task::ExitStatus>,
    ctx: &BtfTracePointContext,
) {
    let Some(mut entry) = EVENTS.reserve::<EventHeader>(0) else {
        let c = Counters::get();
        c.add(counter::OFFERED);
        c.dropped(kind, ctx);
        return;
    };
    let h = entry.as_mut_ptr();
    // SAFETY: `h` is a reserved, writable EventHeader in the ring buffer; fill_header writes
    // every field but ts_ns, written here.
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
    entry.submit(c.offer());
    c.add(counter::SENT);
    if partial {
        c.add(counter::READ_ERRORS);
    }
}

// sched_process_exec(struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
#[btf_tracepoint(function = "sched_process_exec")]
pub fn sched_process_exec(ctx: BtfTracePointContext) -> i32 {
    match try_exec(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_exec(ctx: &BtfTracePointContext) -> Result<i32, i32> {
    let task = Task(ctx.arg::<u64>(0));
    if task.tgid()? == conf!(self_tgid) {
        return Ok(0);
    }
    let bprm: u64 = ctx.arg(2);
    // Pointers first (see `Task::fill_header`).
    let mm = task.mm();
    let filename_ptr: u64 = task::raw(bprm + u64::from(conf!(offsets.binprm_filename)));
    let buf = SCRATCH.get_ptr_mut(0).ok_or(0)?;
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
        .ok_or(0)?;
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
    let (arg_start, arg_end) = task::args(mm);
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
        if EVENTS.output::<[u8]>(record, wake).is_ok() {
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
        if EVENTS.output::<[u8]>(record, wake).is_ok() {
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
pub fn sched_process_fork(ctx: BtfTracePointContext) -> i32 {
    match try_fork(&ctx) {
        Ok(v) | Err(v) => v,
    }
}

fn try_fork(ctx: &BtfTracePointContext) -> Result<i32, i32> {
    let child = Task(ctx.arg::<u64>(1));
    let pid = child.tgid()?;
    if pid == conf!(self_tgid) {
        return Ok(0);
    }
    let tid: u32 = task::load(child.0 + u64::from(conf!(offsets.task_pid)))?;
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
    report_exit(Task(ctx.arg::<u64>(0)), ctx)
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
    let task = Task(ctx.arg::<u64>(0));
    // signal->live was decremented before the tracepoint: 0 means every thread is exiting.
    // Two threads can both see 0; only the one that claims (tgid, start) first reports.
    if task.live_threads()? != 0 {
        return Ok(0);
    }
    let key = [u64::from(task.tgid()?), task.start_ns()?];
    if EXITED.insert(key, 1u8, u64::from(BPF_NOEXIST)).is_err() {
        Counters::get().add(counter::EXIT_DUPLICATES);
        return Ok(0);
    }
    report_exit(task, ctx)
}

#[inline(always)]
fn report_exit(task: Task, ctx: &BtfTracePointContext) -> Result<i32, i32> {
    if task.tgid()? == conf!(self_tgid) {
        return Ok(0);
    }
    send_header(task, kind::EXIT, Some(task.exit_status()), ctx);
    Ok(0)
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
    let task = Task(ctx.arg::<u64>(0));
    // Threads, and an old leader replaced by an exec from another thread (its group_leader
    // points at the new one), are not the process.
    if !task.is_group_leader()? {
        return Ok(0);
    }
    let pid = task.tgid()?;
    if pid == conf!(self_tgid) {
        return Ok(0);
    }
    // The leader's own start time (it is the leader).
    let start_ns = task.start_boottime()?;
    let c = Counters::get();
    let wake = c.offer();
    let Some(mut entry) = EVENTS.reserve::<ReapRecord>(0) else {
        c.dropped(kind::REAP, ctx);
        return Ok(0);
    };
    entry.write(ReapRecord {
        kind: kind::REAP,
        flags: 0,
        pid,
        ts_ns: now(),
        start_ns,
    });
    entry.submit(wake);
    c.add(counter::SENT);
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
