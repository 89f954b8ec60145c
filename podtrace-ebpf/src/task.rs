//! Reading `task_struct` fields at the BTF-derived offsets of `CONFIG.offsets`.
//!
//! Fields are read the way `A: Access` says: in tp_btf programs a plain load through a
//! BTF-typed pointer where the verifier allows one (a constant offset, which the frozen
//! read-only `CONFIG` makes the offsets): the JIT turns each into a fault-tolerant load, no
//! helper call; in raw tracepoint programs a `bpf_probe_read_kernel` each. Helpers remain in
//! both where a plain load cannot go: strings and user memory, and the upid of a nested pid
//! namespace (indexed by the namespace level, a variable offset).

use core::marker::PhantomData;

use aya_ebpf::helpers::{
    bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_buf,
};
use podtrace_common::{config, flags, EventHeader, COMM_LEN, PF_KTHREAD, SIGNAL_GROUP_EXIT};

use crate::access::Access;

/// Deepest pid namespace nesting the kernel allows (MAX_PID_NS_LEVEL).
const MAX_PID_NS_LEVEL: u32 = 32;

/// One field of the read-only `CONFIG` global, read as such (a volatile load: the compiler
/// would otherwise fold the build-time zeroes in).
macro_rules! conf {
    ($($f:ident).+) => {
        // SAFETY: reading a field of an initialised static.
        unsafe { core::ptr::read_volatile(&raw const crate::CONFIG.$($f).+) }
    };
}
pub(crate) use conf;

/// A field offset from `CONFIG.offsets`, as an address increment.
macro_rules! off {
    ($f:ident) => {
        $crate::task::conf!(offsets.$f) as u64
    };
}

/// What a failed read returns (EFAULT); the programs' return values are not looked at.
pub const EFAULT: u32 = 14;

#[inline(always)]
pub fn read<T>(addr: u64) -> Result<T, u32> {
    // SAFETY: bpf_probe_read_kernel copes with any address and reports faults.
    unsafe { bpf_probe_read_kernel(addr as *const T) }.map_err(|_| EFAULT)
}

/// A field of a kernel pointer, read as `A` says; an address in the first page (a NULL
/// pointer plus an offset) is an error.
#[inline(always)]
pub fn load<A: Access, T: Copy + Default>(addr: u64) -> Result<T, u32> {
    if addr < 4096 {
        return Err(EFAULT);
    }
    Ok(A::read(addr))
}

/// A pointer that is there (not NULL).
#[inline(always)]
fn nz(p: u64) -> bool {
    p != 0
}

/// `load` without the NULL test, for values whose failure the caller detects otherwise (a
/// failed read is 0).
#[inline(always)]
pub fn raw<A: Access, T: Copy + Default>(addr: u64) -> T {
    A::read(addr)
}

/// Copies a NUL-terminated kernel string into `dst`; returns its length without the NUL.
#[inline(always)]
pub fn read_kernel_str(addr: u64, dst: &mut [u8]) -> Option<usize> {
    if addr == 0 {
        return None;
    }
    // SAFETY: as `read`.
    unsafe { bpf_probe_read_kernel_str_bytes(addr as *const u8, dst) }
        .ok()
        .map(|s| s.len())
}

#[inline(always)]
pub fn read_user(addr: u64, dst: &mut [u8]) -> bool {
    // SAFETY: bpf_probe_read_user copes with any address and reports faults.
    unsafe { bpf_probe_read_user_buf(addr as *const u8, dst) }.is_ok()
}

/// What `Task::exit_status` loaded, decided on later (after the header's loads).
pub struct ExitStatus {
    ok: [u64; 2],
    sig_flags: u32,
    group_code: i32,
    own_code: i32,
    leader_code: i32,
}

impl ExitStatus {
    #[inline(always)]
    pub fn status(&self) -> Result<u32, u32> {
        if !nz(self.ok[0]) || !nz(self.ok[1]) {
            return Err(EFAULT);
        }
        Ok(if self.sig_flags & SIGNAL_GROUP_EXIT != 0 {
            self.group_code as u32
        } else if conf!(flags) & config::EXIT_CODE_OF_LEADER != 0 {
            self.leader_code as u32
        } else {
            self.own_code as u32
        })
    }
}

/// (mm->arg_start, mm->arg_end), (0, 0) without an mm.
#[inline(always)]
pub fn args<A: Access>(mm: u64) -> (u64, u64) {
    if mm == 0 {
        return (0, 0);
    }
    (
        raw::<A, _>(mm + off!(mm_arg_start)),
        raw::<A, _>(mm + off!(mm_arg_end)),
    )
}

/// A `task_struct` pointer from a tracepoint argument (or a pointer field of one), read the
/// way `A` says.
pub struct Task<A>(pub u64, PhantomData<A>);

impl<A> Clone for Task<A> {
    #[inline(always)]
    fn clone(&self) -> Self {
        *self
    }
}

impl<A> Copy for Task<A> {}

impl<A: Access> Task<A> {
    #[inline(always)]
    pub fn new(ptr: u64) -> Self {
        Self(ptr, PhantomData)
    }

    #[inline(always)]
    fn ptr(self, off: u64) -> Result<u64, u32> {
        load::<A, u64>(self.0 + off)
    }

    #[inline(always)]
    pub fn tgid(self) -> Result<u32, u32> {
        load::<A, _>(self.0 + off!(task_tgid))
    }

    /// The thread id.
    #[inline(always)]
    pub fn tid(self) -> Result<u32, u32> {
        load::<A, _>(self.0 + off!(task_pid))
    }

    /// A kernel thread (`PF_KTHREAD`): not a process podtrace reports.
    #[inline(always)]
    pub fn is_kthread(self) -> Result<bool, u32> {
        Ok(load::<A, u32>(self.0 + off!(task_flags))? & PF_KTHREAD != 0)
    }

    #[inline(always)]
    pub fn group_leader(self) -> Result<Self, u32> {
        self.ptr(off!(task_group_leader)).map(Self::new)
    }

    #[inline(always)]
    pub fn start_boottime(self) -> Result<u64, u32> {
        load::<A, _>(self.0 + off!(task_start_boottime))
    }

    /// `bprm->filename` of an exec's `struct linux_binprm *`.
    #[inline(always)]
    pub fn binprm_filename(bprm: u64) -> u64 {
        raw::<A, _>(bprm + off!(binprm_filename))
    }

    /// The process's start: its thread-group leader's `start_boottime`.
    #[inline(always)]
    pub fn start_ns(self) -> Result<u64, u32> {
        self.group_leader()?.start_boottime()
    }

    #[inline(always)]
    pub fn is_group_leader(self) -> Result<bool, u32> {
        Ok(self.group_leader()?.0 == self.0)
    }

    /// Fills every field of `h` but `ts_ns` and the kind-specific ones (which it zeroes);
    /// returns whether some read failed (the field is then 0).
    ///
    /// Straight-line plain loads: a NULL or bad pointer reads as 0 (the JIT's exception
    /// table), and whether any pointer on the way was NULL is tested once, at the end.
    /// Every pointer is loaded before the first branch: on recent kernels the verifier looks
    /// up each pointer load's trust annotations by name in all of vmlinux's BTF (a linear
    /// search, ~0.5 ms), once per verifier path through it; before any branch there is one
    /// path. (`Task::pointers` gives the callers the others.)
    ///
    /// # Safety
    /// `h` must be valid for writes of an `EventHeader`.
    #[inline(always)]
    pub unsafe fn fill_header(self, kind: u16, h: *mut EventHeader) -> bool {
        let t = self.0;
        let parent: u64 = raw::<A, _>(t + off!(task_real_parent));
        let leader: u64 = raw::<A, _>(t + off!(task_group_leader));
        let cred: u64 = raw::<A, _>(t + off!(task_cred));
        let thread_pid: u64 = raw::<A, _>(leader + off!(task_thread_pid));
        let upid0 = thread_pid + off!(pid_numbers);
        let ns0: u64 = raw::<A, _>(upid0 + off!(upid_ns));
        let css_set: u64 = raw::<A, _>(t + off!(task_cgroups));
        let cgrp: u64 = raw::<A, _>(css_set + off!(css_set_dfl_cgrp));
        let kn: u64 = raw::<A, _>(cgrp + off!(cgroup_kn));
        // The v1 hierarchy's flag is a constant to the verifier: one path either way.
        let kn1: u64 = if conf!(flags) & config::CGROUP_V1 != 0 {
            let css: u64 = raw::<A, _>(css_set + off!(css_set_v1_subsys));
            let cgrp1: u64 = raw::<A, _>(css + off!(css_cgroup));
            raw::<A, _>(cgrp1 + off!(cgroup_kn))
        } else {
            0
        };
        let pid: u32 = raw::<A, _>(t + off!(task_tgid));
        let tid: u32 = raw::<A, _>(t + off!(task_pid));
        let ppid: u32 = raw::<A, _>(parent + off!(task_tgid));
        let start_ns: u64 = raw::<A, _>(leader + off!(task_start_boottime));
        let uid: u32 = raw::<A, _>(cred + off!(cred_uid));
        let gid: u32 = raw::<A, _>(cred + off!(cred_gid));
        let mut cgroup: u64 = raw::<A, _>(kn + off!(kernfs_node_id));
        let level: u32 = raw::<A, _>(thread_pid + off!(pid_level));
        let nr0: u32 = raw::<A, _>(upid0 + off!(upid_nr));
        let inum0: u32 = raw::<A, _>(ns0 + off!(pidns_inum));
        // Two plain loads: the verifier lets a char array be read as wider words within it.
        let comm_at = t + off!(task_comm);
        let comm: [u64; 2] = [raw::<A, _>(comm_at), raw::<A, _>(comm_at + 8)];
        let mut cgroup_v1_id: u64 = if conf!(flags) & config::CGROUP_V1 != 0 {
            raw::<A, _>(kn1 + off!(kernfs_node_id))
        } else {
            0
        };
        if conf!(flags) & config::KERNFS_ID_INO32 != 0 {
            // The pre-5.5 union: {u32 ino; u32 generation}; the inode is the cgroup's id.
            cgroup &= 0xffff_ffff;
            cgroup_v1_id &= 0xffff_ffff;
        }
        // Branches from here on.
        let (nspid, pidns, ns_ok) = if level == 0 {
            // The initial pid namespace: numbers[0], loaded above.
            (nr0, inum0, nz(ns0))
        } else {
            nested_ns_pid(upid0, level)
        };
        // A NULL pointer reads as 0 and so does everything loaded through it: the last
        // pointer of each chain tells for the whole chain.
        let mut ok = nz(parent) & nz(cred) & ns_ok & nz(kn);
        if conf!(flags) & config::CGROUP_V1 != 0 {
            ok &= nz(kn1);
        }
        let failed = !ok || start_ns == 0;
        // SAFETY: the caller's promise; each field written once, no reads.
        unsafe {
            (*h).kind = kind;
            (*h).flags = if failed { flags::PARTIAL } else { 0 };
            (*h).pid = pid;
            (*h).start_ns = start_ns;
            (*h).tid = tid;
            (*h).ppid = ppid;
            (*h).cgroup_id = cgroup;
            (*h).cgroup_v1_id = cgroup_v1_id;
            (*h).nspid = nspid;
            (*h).pidns = pidns;
            (*h).uid = uid;
            (*h).gid = gid;
            (*h).exit_status = 0;
            (*h).filename_len = 0;
            (*h).argv_len = 0;
            (*h).comm = core::mem::transmute::<[u64; 2], [u8; COMM_LEN]>(comm);
        }
        failed
    }

    /// `task->mm` (0 for a kernel thread).
    #[inline(always)]
    pub fn mm(self) -> u64 {
        raw::<A, _>(self.0 + off!(task_mm))
    }

    #[inline(always)]
    pub fn live_threads(self) -> Result<i32, u32> {
        let signal = self.ptr(off!(task_signal))?;
        load::<A, _>(signal + off!(signal_live))
    }

    /// The wait status `waitpid` will report: the group exit code after `exit_group` or a
    /// fatal signal; else, as the running kernel's wait does it, the exit code of the thread
    /// that ended the process (this one) or of the thread-group leader (older kernels,
    /// `config::EXIT_CODE_OF_LEADER`). Every load before the choice (see `fill_header`).
    #[inline(always)]
    pub fn exit_status(self) -> ExitStatus {
        let signal: u64 = raw::<A, _>(self.0 + off!(task_signal));
        let leader: u64 = raw::<A, _>(self.0 + off!(task_group_leader));
        ExitStatus {
            ok: [signal, leader],
            sig_flags: raw::<A, _>(signal + off!(signal_flags)),
            group_code: raw::<A, _>(signal + off!(signal_group_exit_code)),
            own_code: raw::<A, _>(self.0 + off!(task_exit_code)),
            leader_code: raw::<A, _>(leader + off!(task_exit_code)),
        }
    }
}

/// (pid in a nested pid namespace, that namespace's inode, whether both reads worked):
/// `pid->numbers[level]` is at a variable offset, which plain loads cannot take, so a copy of
/// the whole upid ({nr, ns}, 16 bytes on every kernel, the loader checks; `upid_nr` /
/// `upid_ns` say where) in one helper call, and the inode in another.
#[inline(always)]
fn nested_ns_pid(upid0: u64, level: u32) -> (u32, u32, bool) {
    if level >= MAX_PID_NS_LEVEL {
        return (0, 0, false);
    }
    // The mask keeps the offset provably small for verifiers that lose the bounds of a
    // product (5.10, 6.1): 31 levels of 16 bytes are below 1024.
    let upid = upid0 + ((u64::from(level) * off!(upid_size)) & 0x3ff);
    let Ok(both) = read::<[u64; 2]>(upid) else {
        return (0, 0, false);
    };
    let word = |o: u64| both[((o >> 3) & 1) as usize];
    let nr = (word(off!(upid_nr)) >> ((off!(upid_nr) & 4) * 8)) as u32;
    let ns = word(off!(upid_ns));
    match read::<u32>(ns + off!(pidns_inum)) {
        Ok(inum) => (nr, inum, true),
        Err(_) => (nr, 0, false),
    }
}
