//! Kernel struct field offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The kernel programs read `task_struct` and friends with `bpf_probe_read_kernel`; rather than
//! hard-coding offsets (which differ per kernel build) or relying on CO-RE relocations (which the
//! Rust BPF toolchain does not emit), the daemon resolves each field here at load time and passes
//! the numbers in the programs' read-only `CONFIG` global.
use anyhow::{anyhow, bail, Context, Result};
use btf_rs::{Backend, Btf, Type};
use podtrace_common::Offsets;

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

pub fn from_system() -> Result<Offsets> {
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
    resolve(&btf)
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

pub fn resolve(btf: &Btf) -> Result<Offsets> {
    let t = |f: &str| offset(btf, "task_struct", f);
    Ok(Offsets {
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
        cgroup_kn: offset(btf, "cgroup", "kn")?,
        kernfs_node_id: offset(btf, "kernfs_node", "id")?,
        binprm_filename: offset(btf, "linux_binprm", "filename")?,
        _pad: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_every_field_on_this_kernel() {
        if !std::path::Path::new(VMLINUX).exists() {
            eprintln!("skipped: no {VMLINUX}");
            return;
        }
        let o = from_system().expect("offsets from the running kernel's BTF");
        // Plausibility, independent of this code: pid and tgid are adjacent pid_t fields,
        // comm is 16 bytes inside task_struct, upid is {int nr; struct pid_namespace *ns}.
        assert_eq!(o.task_tgid, o.task_pid + 4, "{o:?}");
        assert_eq!(o.upid_size, 16);
        assert_eq!((o.upid_nr, o.upid_ns), (0, 8));
        assert_eq!(o.mm_arg_end, o.mm_arg_start + 8);
        assert!(o.task_comm > 0 && o.task_real_parent > 0 && o.mm_arg_start > 0);
    }
}
