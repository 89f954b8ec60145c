//! Wire types shared by the kernel programs (`podtrace-ebpf`) and the daemon (`podtrace`).
//!
//! Everything here is `#[repr(C)]` and defined once: the kernel writes these bytes into the
//! ring buffer and the daemon's size-checked decoder reads them back. [`LAYOUT`] is a hash of
//! the layout; the kernel object carries it and the daemon refuses an object built from
//! another layout.
#![no_std]

/// Kernel `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;
/// Most bytes of the exec filename sent (longer ones are cut and flagged).
pub const FILENAME_MAX: usize = 256;
/// Most bytes of the exec argv area sent (NUL-separated, as in `/proc/PID/cmdline`).
pub const ARGV_MAX: usize = 4096;

/// `EventHeader::kind` / `ReapRecord::kind` values.
pub mod kind {
    pub const EXEC: u16 = 1;
    pub const FORK: u16 = 2;
    pub const EXIT: u16 = 3;
    /// A new thread in an existing process; sent only when `Config::flags` has `config::THREADS`.
    pub const THREAD: u16 = 4;
    /// A process was reaped (its parent's wait, or autoreap): a `ReapRecord`.
    pub const REAP: u16 = 5;
    /// Number of kinds + 1 (index bound for per-kind counters).
    pub const COUNT: u32 = 6;
}

/// `EventHeader::flags` bits.
pub mod flags {
    /// The argv area was filled and more arguments followed.
    pub const ARGV_TRUNCATED: u16 = 1;
    /// The filename did not fit in `FILENAME_MAX`.
    pub const FILENAME_TRUNCATED: u16 = 2;
    /// A field could not be read from the kernel (the event is still sent, the field is 0).
    pub const PARTIAL: u16 = 4;
    /// The ring buffer had no room for the whole exec record: it was sent without its
    /// filename and argv (counted in `counter::EXEC_TRIMMED`).
    pub const EXEC_TRIMMED: u16 = 8;
}

/// Fixed part of every exec, fork, thread and exit record (88 bytes). An exec record is
/// followed by `filename_len` bytes of filename (no NUL) and `argv_len` bytes of argv, with
/// nothing in between: records are as long as their content.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u16,
    pub flags: u16,
    /// Host thread-group id (the "pid" users see).
    pub pid: u32,
    /// `bpf_ktime_get_boot_ns()` when the event happened.
    pub ts_ns: u64,
    /// The process's start time (`group_leader->start_boottime`, ns since boot).
    pub start_ns: u64,
    /// Host thread id of the task that produced the event.
    pub tid: u32,
    /// Thread-group id of the real parent.
    pub ppid: u32,
    /// Kernfs id (= directory inode) of the task's cgroup in the default (v2) hierarchy.
    pub cgroup_id: u64,
    /// Kernfs id of the task's cgroup in the v1 hierarchy chosen at load time (0: none).
    pub cgroup_v1_id: u64,
    /// The pid in the process's own pid namespace.
    pub nspid: u32,
    /// Inode number of that pid namespace.
    pub pidns: u32,
    pub uid: u32,
    pub gid: u32,
    /// Exit only: the wait status `waitpid` reports (`code << 8`, or the signal | 0x80 on
    /// core dump): the group exit code after `exit_group` or a fatal signal, else the exit
    /// code of the last thread to exit or of the leader (`config::EXIT_CODE_OF_LEADER`), as
    /// the running kernel's waitpid does.
    pub exit_status: u32,
    /// Exec only: filename bytes after the header.
    pub filename_len: u16,
    /// Exec only: argv bytes after the filename.
    pub argv_len: u16,
    pub comm: [u8; COMM_LEN],
}

/// A reaped process (24 bytes): its identity and when.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReapRecord {
    pub kind: u16,
    pub flags: u16,
    pub pid: u32,
    pub ts_ns: u64,
    pub start_ns: u64,
}

pub const HEADER_LEN: usize = core::mem::size_of::<EventHeader>();
pub const REAP_LEN: usize = core::mem::size_of::<ReapRecord>();
/// Largest record the kernel sends: an exec with full filename and argv.
pub const EXEC_RECORD_MAX: usize = HEADER_LEN + FILENAME_MAX + ARGV_MAX;

/// Indices into the per-CPU `COUNTERS` value (one array of `COUNT` counters per CPU, so that a
/// program finds all of them with one map lookup).
pub mod counter {
    /// Records the ring buffer had no room for, per kind: `DROPS + kind::*`.
    pub const DROPS: u32 = 0;
    /// New threads (clone with CLONE_THREAD): counted, not reported as processes.
    pub const THREADS: u32 = super::kind::COUNT;
    /// Events sent with `flags::PARTIAL` because a kernel read failed.
    pub const READ_ERRORS: u32 = THREADS + 1;
    /// Records handed to the ring buffer.
    pub const SENT: u32 = THREADS + 2;
    /// Records offered to the ring buffer (sent + dropped); paces the reader's wakeups.
    pub const OFFERED: u32 = THREADS + 3;
    /// Exec records sent without filename and argv because the whole record did not fit.
    pub const EXEC_TRIMMED: u32 = THREADS + 4;
    /// Exits of a thread that saw the group dead after another thread already reported it
    /// (kernels without `group_dead` in the tracepoint: the race-free check caught them).
    pub const EXIT_DUPLICATES: u32 = THREADS + 5;
    /// Exits reported although the race-free claim failed for another reason than "already
    /// claimed" (the claim map could not take the entry): a duplicate is then possible, a
    /// lost exit is not.
    pub const EXIT_CLAIM_ERRORS: u32 = THREADS + 6;
    /// Forks, exits and reaps of kernel threads (`PF_KTHREAD`), skipped in the kernel as the
    /// /proc snapshot skips them.
    pub const KTHREADS: u32 = THREADS + 7;
    pub const COUNT: u32 = THREADS + 8;
}

// The per-kind drop counters end where the others begin.
const _: () = assert!(counter::DROPS + kind::COUNT <= counter::THREADS);

/// `bpf_ringbuf_output` flags (uapi/linux/bpf.h).
pub mod ringbuf {
    pub const NO_WAKEUP: u64 = 1;
    pub const FORCE_WAKEUP: u64 = 2;
}

/// `Config::flags` bits.
pub mod config {
    /// Also send `kind::THREAD` records.
    pub const THREADS: u32 = 1;
    /// Read the cgroup of the v1 hierarchy at `Offsets::css_set_v1_subsys`.
    pub const CGROUP_V1: u32 = 2;
    /// When the process did not end by `exit_group` or a signal, its wait status is the
    /// thread-group leader's exit code (kernels before 6.1 or so), not the last thread's:
    /// the daemon asks the running kernel at start.
    pub const EXIT_CODE_OF_LEADER: u32 = 4;
    /// `kernfs_node.id` is the pre-5.5 `union kernfs_node_id` ({u32 ino; u32 generation} or
    /// u64 id): the cgroup directory's inode is its low 32 bits.
    pub const KERNFS_ID_INO32: u32 = 8;
}

/// `task_struct::flags` bit of kernel threads (include/linux/sched.h, the same value since
/// 2.6): their forks, exits and reaps are not reported.
pub const PF_KTHREAD: u32 = 0x0020_0000;

/// `signal_struct::flags` bit set by `exit_group` and fatal signals (include/linux/sched/signal.h,
/// the same value in every kernel since 2.6): the group exit code is then the process's.
pub const SIGNAL_GROUP_EXIT: u32 = 0x0000_0004;

/// Byte offsets of the kernel struct fields the programs read, taken from the running
/// kernel's BTF at load time (never hard-coded).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offsets {
    pub task_pid: u32,
    pub task_tgid: u32,
    pub task_real_parent: u32,
    pub task_group_leader: u32,
    pub task_thread_pid: u32,
    pub task_cred: u32,
    pub task_mm: u32,
    pub task_comm: u32,
    pub task_start_boottime: u32,
    pub task_exit_code: u32,
    pub task_signal: u32,
    pub task_cgroups: u32,
    pub signal_live: u32,
    pub signal_flags: u32,
    pub signal_group_exit_code: u32,
    pub cred_uid: u32,
    pub cred_gid: u32,
    pub pid_level: u32,
    pub pid_numbers: u32,
    pub upid_size: u32,
    pub upid_nr: u32,
    pub upid_ns: u32,
    /// `offsetof(struct pid_namespace, ns) + offsetof(struct ns_common, inum)`.
    pub pidns_inum: u32,
    pub mm_arg_start: u32,
    pub mm_arg_end: u32,
    pub css_set_dfl_cgrp: u32,
    /// `offsetof(struct css_set, subsys) + 8 * <ssid of the chosen v1 controller>`
    /// (used with `config::CGROUP_V1`).
    pub css_set_v1_subsys: u32,
    /// `offsetof(struct cgroup_subsys_state, cgroup)`.
    pub css_cgroup: u32,
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    pub binprm_filename: u32,
    /// `task_struct.flags` (`PF_KTHREAD`).
    pub task_flags: u32,
}

/// Read-only global the daemon sets before loading the programs.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub offsets: Offsets,
    /// The daemon's own tgid: its events are not reported.
    pub self_tgid: u32,
    /// `config::*` bits.
    pub flags: u32,
    /// Wake the reader once every this many records per CPU (it also drains on a timer):
    /// a wakeup per record (an irq_work, a self-IPI in a VM) costs more than the rest of the
    /// program, and most when the reader has fallen behind. A power of two (the programs
    /// test `offered & (wakeup_every - 1)`).
    pub wakeup_every: u32,
    pub _pad: u32,
}

/// Bumped by hand when a field keeps its place but changes meaning.
/// 3: `COUNTERS` is one per-CPU array of `counter::COUNT` counters (was one entry per counter);
/// `Config::wakeup_every` is a power of two.
/// 4: `Offsets::task_flags` (kernel threads skipped), `config::KERNFS_ID_INO32`, two counters.
const WIRE_VERSION: u64 = 4;

const fn mix(h: u64, v: usize) -> u64 {
    // FNV-1a over the value's 8 bytes.
    let mut h = h;
    let mut i = 0;
    let v = v as u64;
    while i < 8 {
        h ^= (v >> (i * 8)) & 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
        i += 1;
    }
    h
}

macro_rules! layout_of {
    ($h:expr, $t:ty, [$($f:ident),*]) => {{
        let mut h = mix($h, core::mem::size_of::<$t>());
        $( h = mix(h, core::mem::offset_of!($t, $f)); )*
        h
    }};
}

const fn layout_hash() -> u64 {
    let mut h = mix(0xcbf2_9ce4_8422_2325, WIRE_VERSION as usize);
    h = layout_of!(
        h,
        EventHeader,
        [
            kind,
            flags,
            pid,
            ts_ns,
            start_ns,
            tid,
            ppid,
            cgroup_id,
            cgroup_v1_id,
            nspid,
            pidns,
            uid,
            gid,
            exit_status,
            filename_len,
            argv_len,
            comm
        ]
    );
    h = layout_of!(h, ReapRecord, [kind, flags, pid, ts_ns, start_ns]);
    h = layout_of!(h, Config, [offsets, self_tgid, flags, wakeup_every]);
    h = mix(h, core::mem::size_of::<Offsets>());
    h = mix(h, counter::COUNT as usize);
    h = mix(h, FILENAME_MAX);
    mix(h, ARGV_MAX)
}

/// Hash of every wire layout above. The kernel object exports it as `PODTRACE_LAYOUT`.
pub const LAYOUT: u64 = layout_hash();

/// Name of the kernel object's symbol holding its `LAYOUT`.
pub const LAYOUT_SYMBOL: &str = "PODTRACE_LAYOUT";

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays, no padding holes, any bit pattern is valid.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::EventHeader {}
}

#[cfg(test)]
mod tests {
    use core::mem::{align_of, offset_of};

    use super::*;

    #[test]
    fn header_layout_is_stable() {
        // Both sides compile this type, but tools that read raw records rely on the layout
        // too: change it on purpose only.
        assert_eq!(HEADER_LEN, 88, "EventHeader size changed");
        assert_eq!(offset_of!(EventHeader, pid), 4);
        assert_eq!(offset_of!(EventHeader, cgroup_id), 32);
        assert_eq!(offset_of!(EventHeader, cgroup_v1_id), 40);
        assert_eq!(offset_of!(EventHeader, exit_status), 64);
        assert_eq!(offset_of!(EventHeader, filename_len), 68);
        assert_eq!(offset_of!(EventHeader, comm), 72);
        assert_eq!(align_of::<EventHeader>(), 8);
        assert_eq!(REAP_LEN, 24);
        assert_eq!(offset_of!(ReapRecord, pid), offset_of!(EventHeader, pid));
        assert_eq!(
            offset_of!(ReapRecord, ts_ns),
            offset_of!(EventHeader, ts_ns)
        );
        assert_eq!(
            offset_of!(ReapRecord, start_ns),
            offset_of!(EventHeader, start_ns)
        );
    }

    #[test]
    fn layout_hash_depends_on_the_layout() {
        let other = mix(LAYOUT, 1);
        assert_ne!(LAYOUT, other);
        assert_ne!(LAYOUT, 0);
    }
}
