//! Reading `task_struct` fields at the BTF-derived offsets of `Config::offsets`.

use aya_ebpf::helpers::{
    bpf_probe_read_kernel, bpf_probe_read_kernel_str_bytes, bpf_probe_read_user_buf,
};
use podtrace_common::{config, flags, Config, EventHeader, Offsets, COMM_LEN, SIGNAL_GROUP_EXIT};

/// Deepest pid namespace nesting the kernel allows (MAX_PID_NS_LEVEL).
const MAX_PID_NS_LEVEL: u32 = 32;

#[inline(always)]
pub fn read<T>(addr: u64) -> Result<T, i32> {
    // SAFETY: bpf_probe_read_kernel copes with any address and reports faults.
    unsafe { bpf_probe_read_kernel(addr as *const T) }
}

/// A field of a BTF-typed kernel pointer (what BTF tracepoints hand us), as a plain load:
/// the verifier checks the offset against the kernel's BTF and the JIT guards the access
/// (a NULL or bad pointer reads 0), so no helper call is needed.
#[inline(always)]
pub fn load<T: Copy + Default>(addr: u64) -> Result<T, i32> {
    if addr < 4096 {
        return Err(-14);
    }
    // SAFETY: `addr` is a BTF pointer plus a BTF-derived field offset; the BPF JIT turns this
    // into a fault-tolerant load.
    Ok(unsafe { core::ptr::read(addr as *const T) })
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

pub struct Task<'a> {
    addr: u64,
    off: &'a Offsets,
}

impl<'a> Task<'a> {
    #[inline(always)]
    pub fn new(addr: u64, off: &'a Offsets) -> Self {
        Self { addr, off }
    }

    #[inline(always)]
    fn field<T: Copy + Default>(&self, off: u32) -> Result<T, i32> {
        load(self.addr + off as u64)
    }

    #[inline(always)]
    fn ptr(&self, off: u32) -> Result<u64, i32> {
        self.field::<u64>(off)
    }

    /// Everything but the kind-specific fields. Failed reads leave 0 and set `PARTIAL`.
    #[inline(always)]
    pub fn header(&self, kind: u16, cfg: &Config) -> EventHeader {
        let o = self.off;
        let mut partial = false;
        let mut h = EventHeader {
            kind,
            ts_ns: crate::now(),
            ..EventHeader::default()
        };
        let mut get_u32 = |r: Result<u32, i32>| match r {
            Ok(v) => v,
            Err(_) => {
                partial = true;
                0
            }
        };
        h.pid = get_u32(self.field(o.task_tgid));
        h.tid = get_u32(self.field(o.task_pid));
        let parent = self.ptr(o.task_real_parent).unwrap_or(0);
        h.ppid = get_u32(load(parent + o.task_tgid as u64));
        let leader = Task::new(self.ptr(o.task_group_leader).unwrap_or(0), o);
        h.start_ns = leader.field(o.task_start_boottime).unwrap_or(0);
        let cred = self.ptr(o.task_cred).unwrap_or(0);
        h.uid = get_u32(load(cred + o.cred_uid as u64));
        h.gid = get_u32(load(cred + o.cred_gid as u64));
        match leader.ns_pid() {
            Ok((nr, inum)) => {
                h.nspid = nr;
                h.pidns = inum;
            }
            Err(_) => partial = true,
        }
        let css_set = self.ptr(o.task_cgroups).unwrap_or(0);
        match cgroup_id(load(css_set + o.css_set_dfl_cgrp as u64), o) {
            Ok(id) => h.cgroup_id = id,
            Err(_) => partial = true,
        }
        if cfg.flags & config::CGROUP_V1 != 0 {
            let css: u64 = load(css_set + o.css_set_v1_subsys as u64).unwrap_or(0);
            match cgroup_id(load(css + o.css_cgroup as u64), o) {
                Ok(id) => h.cgroup_v1_id = id,
                Err(_) => partial = true,
            }
        }
        match read::<[u8; COMM_LEN]>(self.addr + o.task_comm as u64) {
            Ok(c) => h.comm = c,
            Err(_) => partial = true,
        }
        if partial || h.start_ns == 0 {
            h.flags |= flags::PARTIAL;
        }
        h
    }

    #[inline(always)]
    pub fn tgid(&self) -> Result<u32, i32> {
        self.field(self.off.task_tgid)
    }

    /// The process's start: its thread-group leader's `start_boottime`.
    #[inline(always)]
    pub fn start_ns(&self) -> Result<u64, i32> {
        let leader = Task::new(self.ptr(self.off.task_group_leader)?, self.off);
        leader.field(self.off.task_start_boottime)
    }

    #[inline(always)]
    pub fn is_group_leader(&self) -> Result<bool, i32> {
        Ok(self.ptr(self.off.task_group_leader)? == self.addr)
    }

    /// (pid in the task's own pid namespace, that namespace's inode).
    #[inline(always)]
    fn ns_pid(&self) -> Result<(u32, u32), i32> {
        let o = self.off;
        let pid = self.ptr(o.task_thread_pid)?;
        let level: u32 = load(pid + o.pid_level as u64)?;
        if level >= MAX_PID_NS_LEVEL {
            return Err(0);
        }
        let upid = pid + o.pid_numbers as u64 + (level as u64) * (o.upid_size as u64);
        let nr: u32 = read(upid + o.upid_nr as u64)?;
        let ns: u64 = read(upid + o.upid_ns as u64)?;
        let inum: u32 = read(ns + o.pidns_inum as u64)?;
        Ok((nr, inum))
    }

    /// (mm->arg_start, mm->arg_end), (0, 0) for a task without mm.
    #[inline(always)]
    pub fn args(&self) -> (u64, u64) {
        let o = self.off;
        let mm = self.ptr(o.task_mm).unwrap_or(0);
        if mm == 0 {
            return (0, 0);
        }
        let start = load(mm + o.mm_arg_start as u64).unwrap_or(0);
        let end = load(mm + o.mm_arg_end as u64).unwrap_or(0);
        (start, end)
    }

    #[inline(always)]
    pub fn live_threads(&self) -> Result<i32, i32> {
        let signal = self.ptr(self.off.task_signal)?;
        load(signal + self.off.signal_live as u64)
    }

    /// The wait status `waitpid` will report: the group exit code after `exit_group` or a
    /// fatal signal; else, as the running kernel's wait does it, the exit code of the thread
    /// that ended the process (this one) or of the thread-group leader (older kernels,
    /// `config::EXIT_CODE_OF_LEADER`).
    #[inline(always)]
    pub fn exit_status(&self, cfg: &Config) -> Result<u32, i32> {
        let o = self.off;
        let signal = self.ptr(o.task_signal)?;
        let sig_flags: u32 = load(signal + o.signal_flags as u64)?;
        if sig_flags & SIGNAL_GROUP_EXIT != 0 {
            return load::<i32>(signal + o.signal_group_exit_code as u64).map(|c| c as u32);
        }
        if cfg.flags & config::EXIT_CODE_OF_LEADER != 0 {
            let leader = Task::new(self.ptr(o.task_group_leader)?, o);
            return leader.field::<i32>(o.task_exit_code).map(|c| c as u32);
        }
        self.field::<i32>(o.task_exit_code).map(|c| c as u32)
    }
}

/// `cgrp->kn->id`: the kernfs id of a cgroup, which is its directory's inode number (what
/// `bpf_get_current_cgroup_id()` returns for the default hierarchy).
#[inline(always)]
fn cgroup_id(cgrp: Result<u64, i32>, o: &Offsets) -> Result<u64, i32> {
    let kn: u64 = load(cgrp? + o.cgroup_kn as u64)?;
    load(kn + o.kernfs_node_id as u64)
}
