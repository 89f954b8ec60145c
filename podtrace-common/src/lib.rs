//! Wire types shared by the kernel programs (`podtrace-ebpf`) and the daemon (`podtrace`).
//!
//! Everything here is `#[repr(C)]` and defined once: the kernel writes these bytes into the
//! ring buffer and the daemon's size-checked decoder reads them back.
#![no_std]

/// Kernel `TASK_COMM_LEN`.
pub const COMM_LEN: usize = 16;
/// Bytes reserved for the exec filename (including its NUL).
pub const FILENAME_MAX: usize = 256;
/// Bytes of the exec argv area (NUL-separated, as in `/proc/PID/cmdline`).
pub const ARGV_MAX: usize = 4096;

/// `EventHeader::kind` values.
pub mod kind {
    pub const EXEC: u32 = 1;
    pub const FORK: u32 = 2;
    pub const EXIT: u32 = 3;
    /// A new thread in an existing process; sent only when `Config::flags` has `config::THREADS`.
    pub const THREAD: u32 = 4;
}

/// `EventHeader::flags` bits.
pub mod flags {
    /// The argv area was filled and more arguments followed.
    pub const ARGV_TRUNCATED: u32 = 1;
    /// The filename did not fit in `FILENAME_MAX`.
    pub const FILENAME_TRUNCATED: u32 = 2;
    /// A field could not be read from the kernel (the event is still sent, the field is 0).
    pub const PARTIAL: u32 = 4;
}

/// Fixed part of every ring-buffer record. An exec record is followed by `FILENAME_MAX`
/// bytes of filename area (of which `filename_len` are used) and `argv_len` bytes of argv.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    pub kind: u32,
    pub flags: u32,
    /// `bpf_ktime_get_boot_ns()` when the event happened.
    pub ts_ns: u64,
    /// The process's start time (`group_leader->start_boottime`, ns since boot).
    pub start_ns: u64,
    /// cgroup v2 id (inode of the cgroup2 directory).
    pub cgroup_id: u64,
    /// Exit only: ts_ns - start_ns.
    pub duration_ns: u64,
    /// Host thread-group id (the "pid" users see).
    pub pid: u32,
    /// Host thread id of the task that produced the event.
    pub tid: u32,
    /// Thread-group id of the real parent.
    pub ppid: u32,
    /// The pid in the process's own pid namespace.
    pub nspid: u32,
    /// Inode number of that pid namespace.
    pub pidns: u32,
    pub uid: u32,
    pub gid: u32,
    /// Exit only: raw wait status (`task->exit_code`): `code << 8`, or the signal | 0x80 on core dump.
    pub exit_status: u32,
    /// Exec only: bytes used in the filename area.
    pub filename_len: u16,
    /// Exec only: bytes of argv after the filename area.
    pub argv_len: u16,
    pub _pad: u32,
    pub comm: [u8; COMM_LEN],
}

pub const HEADER_LEN: usize = core::mem::size_of::<EventHeader>();
/// Largest record the kernel sends: an exec with full filename and argv areas.
pub const EXEC_RECORD_MAX: usize = HEADER_LEN + FILENAME_MAX + ARGV_MAX;

/// Indices into the per-CPU `COUNTERS` array.
pub mod counter {
    /// Records the ring buffer had no room for (each one is an event lost).
    pub const RINGBUF_DROPS: u32 = 0;
    /// New threads (clone with CLONE_THREAD): counted, not reported as processes.
    pub const THREADS: u32 = 1;
    /// Events sent with `flags::PARTIAL` because a kernel read failed.
    pub const READ_ERRORS: u32 = 2;
    /// Records handed to the ring buffer.
    pub const SENT: u32 = 3;
    /// Records offered to the ring buffer (sent + dropped); paces the reader's wakeups.
    pub const OFFERED: u32 = 4;
    pub const COUNT: u32 = 5;
}

/// `bpf_ringbuf_output` flags (uapi/linux/bpf.h).
pub mod ringbuf {
    pub const NO_WAKEUP: u64 = 1;
    pub const FORCE_WAKEUP: u64 = 2;
}

/// `Config::flags` bits.
pub mod config {
    /// Also send `kind::THREAD` records.
    pub const THREADS: u32 = 1;
}

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
    pub cgroup_kn: u32,
    pub kernfs_node_id: u32,
    pub binprm_filename: u32,
    pub _pad: u32,
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
    /// program, and most when the reader has fallen behind.
    pub wakeup_every: u32,
    pub _pad: u32,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain `#[repr(C)]` integers and byte arrays, no padding holes, any bit pattern is valid.
    unsafe impl aya::Pod for super::Config {}
    unsafe impl aya::Pod for super::EventHeader {}
}

#[cfg(test)]
mod tests {
    #[test]
    fn header_layout_is_stable() {
        // Both sides compile this type, but tools that read raw records rely on the layout
        // too: change it on purpose only.
        assert_eq!(super::HEADER_LEN, 96, "EventHeader size changed");
        assert_eq!(core::mem::offset_of!(super::EventHeader, pid), 40);
        assert_eq!(core::mem::offset_of!(super::EventHeader, filename_len), 72);
        assert_eq!(core::mem::offset_of!(super::EventHeader, comm), 80);
        assert_eq!(core::mem::align_of::<super::EventHeader>(), 8);
    }
}
