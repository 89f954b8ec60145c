//! Kernel struct field offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The kernel programs read `task_struct` and friends at these offsets; rather than
//! hard-coding offsets (which differ per kernel build) or relying on CO-RE relocations (which the
//! Rust BPF toolchain does not emit), the daemon resolves each field here at load time and passes
//! the numbers in the programs' read-only `CONFIG` global.
use anyhow::{anyhow, bail, Context, Result};
use btf_rs::{Backend, Btf, Type};
use podtrace_common::Offsets;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

/// Opens the running kernel's BTF. A kernel without it (no CONFIG_DEBUG_INFO_BTF) cannot
/// run podtrace: the error says so.
pub fn open_system() -> Result<Btf> {
    // Mapped, not parsed whole: we look up a dozen structs, and parsing all of vmlinux's BTF
    // cost most of the start-up time and ~15 MiB of heap. Kernels that cannot mmap the file
    // get it read into memory once (parsing from the file seeks once per type).
    let btf = match Btf::from_file_with_backend(VMLINUX, Backend::Mmap) {
        Ok(b) => b,
        Err(_) => {
            let bytes = std::fs::read(VMLINUX).with_context(|| {
                format!("reading kernel BTF from {VMLINUX} (is CONFIG_DEBUG_INFO_BTF on?)")
            })?;
            Btf::from_bytes(&bytes).with_context(|| format!("parsing kernel BTF {VMLINUX}"))?
        }
    };
    Ok(btf)
}

pub fn from_system(v1_controller: Option<&str>) -> Result<KernelLayout> {
    resolve(&open_system()?, v1_controller)
}

/// Strips typedefs and qualifiers.
fn concrete(btf: &Btf, mut ty: Type) -> Result<Type> {
    for _ in 0..16 {
        ty = match &ty {
            Type::Typedef(t) => btf.resolve_chained_type(t)?,
            Type::Const(t) | Type::Volatile(t) | Type::Restrict(t) => {
                btf.resolve_chained_type(t)?
            }
            Type::TypeTag(t) => btf.resolve_chained_type(t)?,
            _ => return Ok(ty),
        };
    }
    bail!("type chain too deep")
}

fn named_struct(btf: &Btf, name: &str) -> Result<Type> {
    btf.resolve_types_by_name(name)
        .with_context(|| format!("struct {name} not in kernel BTF"))?
        .into_iter()
        .find(|t| matches!(t, Type::Struct(s) if s.size() > 0))
        .ok_or_else(|| anyhow!("struct {name} not in kernel BTF"))
}

/// Bit offset and type of `member` in a struct or union, looking through anonymous members.
fn member(btf: &Btf, ty: &Type, name: &str) -> Result<Option<(u32, Type)>> {
    let s = match ty {
        Type::Struct(s) | Type::Union(s) => s,
        _ => return Ok(None),
    };
    for m in &s.members {
        let mname = btf.resolve_name(m).unwrap_or_default();
        let mty = concrete(btf, btf.resolve_chained_type(m)?)?;
        if mname == name {
            return Ok(Some((m.bit_offset(), mty)));
        }
        if mname.is_empty() {
            if let Some((off, t)) = member(btf, &mty, name)? {
                return Ok(Some((m.bit_offset() + off, t)));
            }
        }
    }
    Ok(None)
}

/// Byte offset of a dotted field path (`"ns.inum"`) inside `struct_name`.
fn offset(btf: &Btf, struct_name: &str, path: &str) -> Result<u32> {
    let mut ty = named_struct(btf, struct_name)?;
    let mut bits = 0u32;
    for part in path.split('.') {
        let (off, next) = member(btf, &ty, part)?
            .ok_or_else(|| anyhow!("kernel BTF: struct {struct_name} has no field {path}"))?;
        bits += off;
        ty = next;
    }
    if !bits.is_multiple_of(8) {
        bail!("kernel BTF: {struct_name}.{path} is a bitfield");
    }
    Ok(bits / 8)
}

fn size(btf: &Btf, struct_name: &str) -> Result<u32> {
    match named_struct(btf, struct_name)? {
        Type::Struct(s) => Ok(s.size() as u32),
        _ => bail!("{struct_name} is not a struct"),
    }
}

/// What the kernel programs need to know about this kernel, from its BTF.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    pub offsets: Offsets,
    /// `sched_process_exit` passes `group_dead` (kernels since 6.16): the exit program can
    /// tell the process's end from a thread's without a check of its own.
    pub exit_has_group_dead: bool,
}

/// The subsystem index (`enum cgroup_subsys_id`) of a v1 controller (`memory`, `pids`, ...).
pub fn subsys_id(btf: &Btf, controller: &str) -> Result<u32> {
    let want = format!("{controller}_cgrp_id");
    for ty in btf
        .resolve_types_by_name("cgroup_subsys_id")
        .context("enum cgroup_subsys_id not in kernel BTF")?
    {
        if let Type::Enum(e) = ty {
            for m in &e.members {
                if btf.resolve_name(m).unwrap_or_default() == want {
                    return Ok(m.val());
                }
            }
        }
    }
    bail!("kernel BTF: enum cgroup_subsys_id has no {want} (controller {controller} not built in)")
}

/// Parameters of a BTF tracepoint's probe (`btf_trace_<name>`), without the leading context.
fn tracepoint_params(btf: &Btf, name: &str) -> Result<usize> {
    let typedef = format!("btf_trace_{name}");
    let ty = btf
        .resolve_types_by_name(&typedef)
        .with_context(|| format!("{typedef} not in kernel BTF (no BTF tracepoint {name})"))?
        .into_iter()
        .find(|t| matches!(t, Type::Typedef(_)))
        .ok_or_else(|| anyhow!("{typedef} not in kernel BTF (no BTF tracepoint {name})"))?;
    let mut ty = concrete(btf, ty)?;
    if let Type::Ptr(p) = &ty {
        ty = concrete(btf, btf.resolve_chained_type(p)?)?;
    }
    match ty {
        Type::FuncProto(f) => Ok(f.parameters.len().saturating_sub(1)),
        _ => bail!("kernel BTF: {typedef} is not a function pointer"),
    }
}

/// Offsets for the programs; `v1_controller` is the v1 hierarchy's controller whose cgroup
/// the programs read besides the default hierarchy's (None: v2 only).
pub fn resolve(btf: &Btf, v1_controller: Option<&str>) -> Result<KernelLayout> {
    let t = |f: &str| offset(btf, "task_struct", f);
    let css_set_subsys = offset(btf, "css_set", "subsys")?;
    let css_set_v1_subsys = match v1_controller {
        Some(c) => css_set_subsys + 8 * subsys_id(btf, c)?,
        None => 0,
    };
    let offsets = Offsets {
        task_pid: t("pid")?,
        task_tgid: t("tgid")?,
        task_real_parent: t("real_parent")?,
        task_group_leader: t("group_leader")?,
        task_thread_pid: t("thread_pid")?,
        task_cred: t("cred")?,
        task_mm: t("mm")?,
        task_comm: t("comm")?,
        task_start_boottime: t("start_boottime")?,
        task_exit_code: t("exit_code")?,
        task_signal: t("signal")?,
        task_cgroups: t("cgroups")?,
        signal_live: offset(btf, "signal_struct", "live")?,
        signal_flags: offset(btf, "signal_struct", "flags")?,
        signal_group_exit_code: offset(btf, "signal_struct", "group_exit_code")?,
        cred_uid: offset(btf, "cred", "uid")?,
        cred_gid: offset(btf, "cred", "gid")?,
        pid_level: offset(btf, "pid", "level")?,
        pid_numbers: offset(btf, "pid", "numbers")?,
        upid_size: size(btf, "upid")?,
        upid_nr: offset(btf, "upid", "nr")?,
        upid_ns: offset(btf, "upid", "ns")?,
        pidns_inum: offset(btf, "pid_namespace", "ns.inum")?,
        mm_arg_start: offset(btf, "mm_struct", "arg_start")?,
        mm_arg_end: offset(btf, "mm_struct", "arg_end")?,
        css_set_dfl_cgrp: offset(btf, "css_set", "dfl_cgrp")?,
        css_set_v1_subsys,
        css_cgroup: offset(btf, "cgroup_subsys_state", "cgroup")?,
        cgroup_kn: offset(btf, "cgroup", "kn")?,
        kernfs_node_id: offset(btf, "kernfs_node", "id")?,
        binprm_filename: offset(btf, "linux_binprm", "filename")?,
        _pad: 0,
    };
    for tp in [
        "sched_process_exec",
        "sched_process_fork",
        "sched_process_free",
    ] {
        tracepoint_params(btf, tp)?;
    }
    let exit_has_group_dead = tracepoint_params(btf, "sched_process_exit")? >= 2;
    Ok(KernelLayout {
        offsets,
        exit_has_group_dead,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_every_field_on_this_kernel() {
        assert!(
            std::path::Path::new(VMLINUX).exists(),
            "{VMLINUX} is missing: podtrace needs a kernel with BTF"
        );
        let k = from_system(Some("memory")).expect("offsets from the running kernel's BTF");
        let o = k.offsets;
        // Plausibility, independent of this code: pid and tgid are adjacent pid_t fields,
        // comm is 16 bytes inside task_struct, upid is {int nr; struct pid_namespace *ns}.
        assert_eq!(o.task_tgid, o.task_pid + 4, "{o:?}");
        assert_eq!(o.upid_size, 16);
        assert_eq!((o.upid_nr, o.upid_ns), (0, 8));
        assert_eq!(o.mm_arg_end, o.mm_arg_start + 8);
        assert!(o.task_comm > 0 && o.task_real_parent > 0 && o.mm_arg_start > 0);
        // css_set starts with its subsys[] array; memory's index is well inside it.
        assert!(o.css_set_v1_subsys > 0 && o.css_set_v1_subsys < o.css_set_dfl_cgrp);
    }
}
