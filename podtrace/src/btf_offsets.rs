//! Kernel struct field offsets from the running kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! The kernel programs read `task_struct` and friends at these offsets; rather than
//! hard-coding offsets (which differ per kernel build) or relying on CO-RE relocations (which the
//! Rust BPF toolchain does not emit), the daemon resolves each field here at load time and passes
//! the numbers in the programs' read-only `CONFIG` global.
use std::path::Path;

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
    let needs = "podtrace needs the running kernel's BTF (CONFIG_DEBUG_INFO_BTF=y)";
    if !Path::new(VMLINUX).exists() {
        bail!("this kernel has no BTF: {VMLINUX} does not exist; {needs}");
    }
    let btf = match Btf::from_file_with_backend(VMLINUX, Backend::Mmap) {
        Ok(b) => b,
        Err(_) => {
            let bytes = std::fs::read(VMLINUX)
                .with_context(|| format!("reading kernel BTF from {VMLINUX}; {needs}"))?;
            Btf::from_bytes(&bytes).with_context(|| {
                format!(
                    "{VMLINUX} is not valid BTF ({} bytes); {needs}",
                    bytes.len()
                )
            })?
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

/// The kernel's BTF with the structs looked up so far: a lookup by name walks every type of
/// the mapped BTF, and `resolve` asks for `task_struct` alone a dozen times.
struct Kernel<'a> {
    btf: &'a Btf,
    structs: std::cell::RefCell<std::collections::HashMap<String, Type>>,
}

impl<'a> Kernel<'a> {
    fn new(btf: &'a Btf) -> Self {
        Self {
            btf,
            structs: Default::default(),
        }
    }

    fn named_struct(&self, name: &str) -> Result<Type> {
        if let Some(t) = self.structs.borrow().get(name) {
            return Ok(t.clone());
        }
        let t = named_struct(self.btf, name)?;
        self.structs
            .borrow_mut()
            .insert(name.to_string(), t.clone());
        Ok(t)
    }
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

/// Byte offset and type of a dotted field path (`"ns.inum"`) inside `struct_name`; a step
/// into an array field takes its first element (`"pids.pid"`: `pids[0].pid`).
fn field(k: &Kernel<'_>, struct_name: &str, path: &str) -> Result<(u32, Type)> {
    let btf = k.btf;
    let mut ty = k.named_struct(struct_name)?;
    let mut bits = 0u32;
    for part in path.split('.') {
        if let Type::Array(a) = &ty {
            ty = concrete(btf, btf.resolve_chained_type(a)?)?;
        }
        let (off, next) = member(btf, &ty, part)?
            .ok_or_else(|| anyhow!("kernel BTF: struct {struct_name} has no field {path}"))?;
        bits += off;
        ty = next;
    }
    if !bits.is_multiple_of(8) {
        bail!("kernel BTF: {struct_name}.{path} is a bitfield");
    }
    Ok((bits / 8, ty))
}

/// Byte offset of a dotted field path inside `struct_name`.
fn offset(k: &Kernel<'_>, struct_name: &str, path: &str) -> Result<u32> {
    field(k, struct_name, path).map(|(off, _)| off)
}

/// The field under the first of its names that this kernel has (fields the kernel renamed
/// or moved: the current name first), and the name found.
fn field_any(
    k: &Kernel<'_>,
    struct_name: &str,
    paths: &[&'static str],
) -> Result<(u32, Type, &'static str)> {
    for &path in paths {
        match field(k, struct_name, path) {
            Ok((off, ty)) => return Ok((off, ty, path)),
            Err(e) if k.named_struct(struct_name).is_err() => return Err(e),
            Err(_) => {}
        }
    }
    bail!(
        "kernel BTF: struct {struct_name} has none of the fields {}",
        paths.join(", ")
    )
}

fn size(k: &Kernel<'_>, struct_name: &str) -> Result<u32> {
    match k.named_struct(struct_name)? {
        Type::Struct(s) => Ok(s.size() as u32),
        _ => bail!("{struct_name} is not a struct"),
    }
}

/// What the kernel programs need to know about this kernel, from its BTF.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KernelLayout {
    pub offsets: Offsets,
    /// `sched_process_exit` passes `group_dead` (kernels since 6.16): the exit program can
    /// tell the process's end from a thread's without a check of its own.
    pub exit_has_group_dead: bool,
    /// BTF type ids of the tracepoints' `btf_trace_<name>` typedefs (what a BTF tracepoint
    /// program is loaded against); the error when the BTF has not all four (raw tracepoints
    /// need none of them).
    pub tracepoints: Result<TracepointIds, String>,
    /// `kernfs_node.id` is the pre-5.5 union: the cgroup inode is its low 32 bits
    /// (`config::KERNFS_ID_INO32`).
    pub kernfs_id_ino32: bool,
    /// The fields found under an older name than the current one (`task_struct.real_start_time`
    /// for `start_boottime`, ...), for the log and `podtrace check`.
    pub older_names: Vec<String>,
}

/// Fields with more than one name across the kernels podtrace runs on: (struct, current
/// name first, then the older ones).
pub const RENAMED: &[(&str, &[&str])] = &[
    // 5.5 renamed real_start_time (it was boot-based already).
    ("task_struct", &["start_boottime", "real_start_time"]),
    // 4.19 gave the leader's struct pid its own field; before, pids[PIDTYPE_PID].pid.
    ("task_struct", &["thread_pid", "pids.pid"]),
];

/// The `btf_trace_<name>` typedef id of each tracepoint the programs attach to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointIds {
    pub exec: u32,
    pub fork: u32,
    pub exit: u32,
    pub free: u32,
}

impl TracepointIds {
    /// The id of `btf_trace_<tracepoint>`, for one of the four.
    pub fn get(&self, tracepoint: &str) -> Option<u32> {
        match tracepoint {
            "sched_process_exec" => Some(self.exec),
            "sched_process_fork" => Some(self.fork),
            "sched_process_exit" => Some(self.exit),
            "sched_process_free" => Some(self.free),
            _ => None,
        }
    }
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

/// The type id of a BTF tracepoint's probe typedef (`btf_trace_<name>`) and its parameters,
/// without the leading context.
fn tracepoint(btf: &Btf, name: &str) -> Result<(u32, usize)> {
    let typedef = format!("btf_trace_{name}");
    let missing = || anyhow!("{typedef} not in kernel BTF (no BTF tracepoint {name})");
    let (id, ty) = btf
        .resolve_ids_by_name(&typedef)
        .with_context(missing)?
        .into_iter()
        .find_map(|id| {
            btf.resolve_type_by_id(id)
                .ok()
                .filter(|t| matches!(t, Type::Typedef(_)))
                .map(|t| (id, t))
        })
        .ok_or_else(missing)?;
    let mut ty = concrete(btf, ty)?;
    if let Type::Ptr(p) = &ty {
        ty = concrete(btf, btf.resolve_chained_type(p)?)?;
    }
    match ty {
        Type::FuncProto(f) => Ok((id, f.parameters.len().saturating_sub(1))),
        _ => bail!("kernel BTF: {typedef} is not a function pointer"),
    }
}

/// What the programs assume of the shapes (not the offsets) of two fields: `task_struct.comm`
/// is 16 bytes (`TASK_COMM_LEN`, read as two words); `struct upid` is 16 bytes holding a
/// 4-byte `nr` and an 8-byte `ns` (copied whole for a nested pid namespace).
fn check_shapes(k: &Kernel<'_>, o: &Offsets) -> Result<()> {
    let task = k.named_struct("task_struct")?;
    let comm_len = match member(k.btf, &task, "comm")? {
        Some((_, Type::Array(a))) => a.len(),
        _ => 0,
    };
    if comm_len != podtrace_common::COMM_LEN {
        bail!(
            "kernel BTF: task_struct.comm is {comm_len} bytes, not {}",
            podtrace_common::COMM_LEN
        );
    }
    let upid_ok = o.upid_size == 16
        && o.upid_nr.is_multiple_of(4)
        && o.upid_nr + 4 <= 16
        && o.upid_ns.is_multiple_of(8)
        && o.upid_ns + 8 <= 16;
    if !upid_ok {
        bail!(
            "kernel BTF: unexpected struct upid (size {}, nr at {}, ns at {})",
            o.upid_size,
            o.upid_nr,
            o.upid_ns
        );
    }
    Ok(())
}

/// The offset of `kernfs_node.id` and whether it is the pre-5.5 `union kernfs_node_id`
/// (`{u32 ino; u32 generation}` / `u64 id`), whose low 32 bits are the inode: since 5.5 the
/// field is a plain u64 that is the inode itself.
fn kernfs_node_id(k: &Kernel<'_>) -> Result<(u32, bool)> {
    let (off, ty) = field(k, "kernfs_node", "id")?;
    match &ty {
        Type::Int(_) | Type::Enum(_) => Ok((off, false)),
        Type::Union(_) => match member(k.btf, &ty, "ino")? {
            Some((0, _)) => Ok((off, true)),
            _ => bail!("kernel BTF: kernfs_node.id is a union without `ino` at its start"),
        },
        _ => bail!("kernel BTF: kernfs_node.id is neither an integer nor the kernfs_node_id union"),
    }
}

/// Offsets for the programs; `v1_controller` is the v1 hierarchy's controller whose cgroup
/// the programs read besides the default hierarchy's (None: v2 only).
pub fn resolve(btf: &Btf, v1_controller: Option<&str>) -> Result<KernelLayout> {
    let k = Kernel::new(btf);
    let k = &k;
    let t = |f: &str| offset(k, "task_struct", f);
    let mut older_names = Vec::new();
    let mut renamed = |s: &'static str, names: &[&'static str]| -> Result<u32> {
        let (off, _, found) = field_any(k, s, names)?;
        if found != names[0] {
            older_names.push(format!("{s}.{found} (for {s}.{})", names[0]));
        }
        Ok(off)
    };
    let task_start_boottime = renamed(RENAMED[0].0, RENAMED[0].1)?;
    let task_thread_pid = renamed(RENAMED[1].0, RENAMED[1].1)?;
    let css_set_subsys = offset(k, "css_set", "subsys")?;
    let css_set_v1_subsys = match v1_controller {
        Some(c) => css_set_subsys + 8 * subsys_id(btf, c)?,
        None => 0,
    };
    let (kernfs_node_id, kernfs_id_ino32) = kernfs_node_id(k)?;
    if kernfs_id_ino32 {
        older_names.push("kernfs_node.id as union kernfs_node_id (for u64 kernfs_node.id)".into());
    }
    let offsets = Offsets {
        task_pid: t("pid")?,
        task_tgid: t("tgid")?,
        task_real_parent: t("real_parent")?,
        task_group_leader: t("group_leader")?,
        task_thread_pid,
        task_cred: t("cred")?,
        task_mm: t("mm")?,
        task_comm: t("comm")?,
        task_start_boottime,
        task_exit_code: t("exit_code")?,
        task_signal: t("signal")?,
        task_cgroups: t("cgroups")?,
        signal_live: offset(k, "signal_struct", "live")?,
        signal_flags: offset(k, "signal_struct", "flags")?,
        signal_group_exit_code: offset(k, "signal_struct", "group_exit_code")?,
        cred_uid: offset(k, "cred", "uid")?,
        cred_gid: offset(k, "cred", "gid")?,
        pid_level: offset(k, "pid", "level")?,
        pid_numbers: offset(k, "pid", "numbers")?,
        upid_size: size(k, "upid")?,
        upid_nr: offset(k, "upid", "nr")?,
        upid_ns: offset(k, "upid", "ns")?,
        pidns_inum: offset(k, "pid_namespace", "ns.inum")?,
        mm_arg_start: offset(k, "mm_struct", "arg_start")?,
        mm_arg_end: offset(k, "mm_struct", "arg_end")?,
        css_set_dfl_cgrp: offset(k, "css_set", "dfl_cgrp")?,
        css_set_v1_subsys,
        css_cgroup: offset(k, "cgroup_subsys_state", "cgroup")?,
        cgroup_kn: offset(k, "cgroup", "kn")?,
        kernfs_node_id,
        binprm_filename: offset(k, "linux_binprm", "filename")?,
        task_flags: t("flags")?,
    };
    check_shapes(k, &offsets)?;
    let ids = || -> Result<(TracepointIds, bool)> {
        let (exit, exit_params) = tracepoint(btf, "sched_process_exit")?;
        Ok((
            TracepointIds {
                exec: tracepoint(btf, "sched_process_exec")?.0,
                fork: tracepoint(btf, "sched_process_fork")?.0,
                exit,
                free: tracepoint(btf, "sched_process_free")?.0,
            },
            exit_params >= 2,
        ))
    };
    let (tracepoints, exit_has_group_dead) = match ids() {
        Ok((ids, group_dead)) => (Ok(ids), group_dead),
        // Without the typedefs, tp_btf cannot load; raw tracepoints can, and they tell
        // group_dead from the kernel's own sched_process_exit prototype below.
        Err(e) => (Err(format!("{e:#}")), exit_prototype_has_group_dead(btf)),
    };
    Ok(KernelLayout {
        offsets,
        exit_has_group_dead,
        tracepoints,
        kernfs_id_ino32,
        older_names,
    })
}

/// Whether `sched_process_exit` passes `group_dead`, from the prototype of the function raw
/// tracepoint programs are called through (`__bpf_trace_sched_process_exit(void *, struct
/// task_struct *[, bool group_dead])`), for kernels whose BTF lacks the `btf_trace_` typedefs.
fn exit_prototype_has_group_dead(btf: &Btf) -> bool {
    let Ok(types) = btf.resolve_types_by_name("__bpf_trace_sched_process_exit") else {
        return false;
    };
    types.into_iter().any(|t| match t {
        Type::Func(f) => match btf.resolve_chained_type(&f) {
            Ok(Type::FuncProto(p)) => p.parameters.len() >= 3,
            _ => false,
        },
        _ => false,
    })
}

#[cfg(test)]
mod synthetic;

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
        // This kernel (6.x) has every field under its current name.
        assert!(k.older_names.is_empty(), "{:?}", k.older_names);
        assert!(!k.kernfs_id_ino32);
        assert!(k.tracepoints.is_ok(), "{:?}", k.tracepoints);
    }
}
