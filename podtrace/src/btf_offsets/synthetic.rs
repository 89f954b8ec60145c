//! The kernels podtrace cannot boot here (RHEL 8's 4.18, 5.4), given as BTF: a small BTF
//! writer builds the structs `resolve` reads, with the names and shapes those kernels have
//! (from their headers: `real_start_time`, `pids[PIDTYPE_PID].pid`, `union kernfs_node_id`,
//! no `btf_trace_` typedefs), and the resolver must find every field under its old name.
use super::*;

const INT: u32 = 1;
const PTR: u32 = 2;
const ARRAY: u32 = 3;
const STRUCT: u32 = 4;
const UNION: u32 = 5;
const ENUM: u32 = 6;
const TYPEDEF: u32 = 8;
const FUNC: u32 = 12;
const FUNC_PROTO: u32 = 13;

/// Raw BTF, written the way the kernel's `struct btf_header` / `struct btf_type` lay it out.
#[derive(Default)]
struct Writer {
    types: Vec<u8>,
    strings: Vec<u8>,
    next_id: u32,
}

impl Writer {
    fn new() -> Self {
        Self {
            types: Vec::new(),
            strings: vec![0],
            next_id: 1,
        }
    }

    fn name(&mut self, s: &str) -> u32 {
        if s.is_empty() {
            return 0;
        }
        let at = self.strings.len() as u32;
        self.strings.extend_from_slice(s.as_bytes());
        self.strings.push(0);
        at
    }

    fn words(&mut self, w: &[u32]) {
        for v in w {
            self.types.extend_from_slice(&v.to_ne_bytes());
        }
    }

    fn ty(&mut self, name: &str, kind: u32, vlen: u32, size_or_type: u32) -> u32 {
        let n = self.name(name);
        self.words(&[n, (kind << 24) | vlen, size_or_type]);
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    fn int(&mut self, name: &str, bytes: u32) -> u32 {
        let id = self.ty(name, INT, 0, bytes);
        self.words(&[bytes * 8]);
        id
    }

    fn ptr(&mut self, to: u32) -> u32 {
        self.ty("", PTR, 0, to)
    }

    fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
        let id = self.ty("", ARRAY, 0, 0);
        self.words(&[elem, index, n]);
        id
    }

    /// A struct or union; members as (name, type, byte offset).
    fn record(&mut self, kind: u32, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        let id = self.ty(name, kind, members.len() as u32, size);
        for &(m, t, off) in members {
            let n = self.name(m);
            self.words(&[n, t, off * 8]);
        }
        id
    }

    fn strukt(&mut self, name: &str, size: u32, members: &[(&str, u32, u32)]) -> u32 {
        self.record(STRUCT, name, size, members)
    }

    fn enumeration(&mut self, name: &str, values: &[(&str, u32)]) -> u32 {
        let id = self.ty(name, ENUM, values.len() as u32, 4);
        for &(v, val) in values {
            let n = self.name(v);
            self.words(&[n, val]);
        }
        id
    }

    fn func_proto(&mut self, params: &[u32]) -> u32 {
        let id = self.ty("", FUNC_PROTO, params.len() as u32, 0);
        for &p in params {
            self.words(&[0, p]);
        }
        id
    }

    fn bytes(&self) -> Vec<u8> {
        let mut raw = Vec::new();
        raw.extend_from_slice(&0xeb9fu16.to_ne_bytes());
        raw.extend_from_slice(&[1, 0]);
        for w in [
            24,
            0,
            self.types.len() as u32,
            self.types.len() as u32,
            self.strings.len() as u32,
        ] {
            raw.extend_from_slice(&w.to_ne_bytes());
        }
        raw.extend_from_slice(&self.types);
        raw.extend_from_slice(&self.strings);
        raw
    }
}

/// What differs between the kernels modelled.
struct Era {
    start_name: &'static str,
    /// `thread_pid` (4.19+) or `pids[]` of `struct pid_link` (before).
    thread_pid: bool,
    /// `u64 id` (5.5+) or `union kernfs_node_id`.
    kernfs_u64: bool,
    /// The `btf_trace_<tp>` typedefs (5.5+).
    typedefs: bool,
    /// `sched_process_exit(p, group_dead)` (6.16+).
    group_dead: bool,
}

/// Offsets this BTF puts fields at (what `resolve` must report).
const START_AT: u32 = 1200;
const PIDS_AT: u32 = 1000;
const PID_IN_LINK: u32 = 16;
const FLAGS_AT: u32 = 20;
const KN_ID_AT: u32 = 96;

fn kernel(era: &Era) -> Btf {
    let mut w = Writer::new();
    let int = w.int("int", 4);
    let u32_ = w.int("unsigned int", 4);
    let u64_ = w.int("long long unsigned int", 8);
    let ch = w.int("char", 1);
    let void_ptr = w.ptr(0);
    let comm = w.array(ch, int, 16);
    let atomic = w.strukt("atomic_t", 4, &[("counter", int, 0)]);
    let kuid = w.strukt("kuid_t", 4, &[("val", u32_, 0)]);
    let hlist = w.strukt(
        "hlist_node",
        16,
        &[("next", void_ptr, 0), ("pprev", void_ptr, 8)],
    );
    let pid_link = w.strukt(
        "pid_link",
        24,
        &[("node", hlist, 0), ("pid", void_ptr, PID_IN_LINK)],
    );
    let pids = w.array(pid_link, int, 3);
    let mut task = vec![
        ("flags", u32_, FLAGS_AT),
        ("pid", int, 1300),
        ("tgid", int, 1304),
        ("real_parent", void_ptr, 1312),
        ("group_leader", void_ptr, 1320),
        ("cred", void_ptr, 1400),
        ("mm", void_ptr, 900),
        ("comm", comm, 1410),
        (era.start_name, u64_, START_AT),
        ("exit_code", int, 1180),
        ("signal", void_ptr, 1500),
        ("cgroups", void_ptr, 1600),
    ];
    if era.thread_pid {
        task.push(("thread_pid", void_ptr, PIDS_AT));
    } else {
        task.push(("pids", pids, PIDS_AT));
    }
    let task_struct = w.strukt("task_struct", 2000, &task);
    w.strukt(
        "signal_struct",
        600,
        &[
            ("live", atomic, 4),
            ("flags", u32_, 120),
            ("group_exit_code", int, 124),
        ],
    );
    w.strukt("cred", 160, &[("uid", kuid, 4), ("gid", kuid, 8)]);
    let upid = w.strukt("upid", 16, &[("nr", int, 0), ("ns", void_ptr, 8)]);
    let numbers = w.array(upid, int, 1);
    w.strukt("pid", 80, &[("level", u32_, 4), ("numbers", numbers, 64)]);
    let ns_common = w.strukt(
        "ns_common",
        24,
        &[("stashed", void_ptr, 0), ("inum", u32_, 16)],
    );
    w.strukt("pid_namespace", 200, &[("ns", ns_common, 128)]);
    w.strukt(
        "mm_struct",
        900,
        &[("arg_start", u64_, 300), ("arg_end", u64_, 308)],
    );
    let subsys = w.array(void_ptr, int, 13);
    w.strukt(
        "css_set",
        300,
        &[("subsys", subsys, 0), ("dfl_cgrp", void_ptr, 112)],
    );
    w.strukt("cgroup_subsys_state", 200, &[("cgroup", void_ptr, 0)]);
    w.strukt("cgroup", 2000, &[("kn", void_ptr, 280)]);
    let id = if era.kernfs_u64 {
        u64_
    } else {
        let inner = w.strukt("", 8, &[("ino", u32_, 0), ("generation", u32_, 4)]);
        w.record(
            UNION,
            "kernfs_node_id",
            8,
            &[("", inner, 0), ("id", u64_, 0)],
        )
    };
    w.strukt("kernfs_node", 128, &[("id", id, KN_ID_AT)]);
    w.strukt("linux_binprm", 400, &[("filename", void_ptr, 96)]);
    w.enumeration(
        "cgroup_subsys_id",
        &[
            ("cpuset_cgrp_id", 0),
            ("memory_cgrp_id", 4),
            ("pids_cgrp_id", 11),
        ],
    );
    let task_ptr = w.ptr(task_struct);
    let bool_ = w.int("_Bool", 1);
    let exit_params: Vec<u32> = if era.group_dead {
        vec![void_ptr, task_ptr, bool_]
    } else {
        vec![void_ptr, task_ptr]
    };
    let exit_proto = w.func_proto(&exit_params);
    w.ty("__bpf_trace_sched_process_exit", FUNC, 0, exit_proto);
    if era.typedefs {
        for tp in [
            "sched_process_exec",
            "sched_process_fork",
            "sched_process_exit",
            "sched_process_free",
        ] {
            let params = if tp == "sched_process_exit" {
                exit_params.clone()
            } else {
                vec![void_ptr, task_ptr]
            };
            let proto = w.func_proto(&params);
            let p = w.ptr(proto);
            w.ty(&format!("btf_trace_{tp}"), TYPEDEF, 0, p);
        }
    }
    Btf::from_bytes(&w.bytes()).expect("the synthetic BTF parses")
}

/// RHEL 8 / OpenShift 4.12 (4.18.0-372): every field under its old name; no tp_btf.
#[test]
fn rhel8_fields_are_found_under_their_old_names() {
    let btf = kernel(&Era {
        start_name: "real_start_time",
        thread_pid: false,
        kernfs_u64: false,
        typedefs: false,
        group_dead: false,
    });
    let k = resolve(&btf, Some("pids")).expect("a 4.18 layout resolves");
    assert_eq!(k.offsets.task_start_boottime, START_AT);
    assert_eq!(
        k.offsets.task_thread_pid,
        PIDS_AT + PID_IN_LINK,
        "pids[PIDTYPE_PID].pid"
    );
    assert_eq!(k.offsets.kernfs_node_id, KN_ID_AT);
    assert!(k.kernfs_id_ino32, "the union's low 32 bits are the inode");
    assert_eq!(k.offsets.task_flags, FLAGS_AT);
    assert_eq!(
        k.offsets.css_set_v1_subsys,
        8 * 11,
        "pids is subsystem 11 here"
    );
    assert_eq!(k.offsets.pidns_inum, 128 + 16);
    assert!(
        k.tracepoints
            .as_ref()
            .is_err_and(|e| e.contains("btf_trace_")),
        "no tp_btf without the typedefs: {:?}",
        k.tracepoints
    );
    assert!(!k.exit_has_group_dead);
    let names = k.older_names.join("; ");
    assert!(names.contains("task_struct.real_start_time"), "{names}");
    assert!(names.contains("task_struct.pids.pid"), "{names}");
    assert!(names.contains("union kernfs_node_id"), "{names}");
}

/// 5.4 (Ubuntu 20.04, Amazon Linux 2's older kernels): thread_pid, but still the old start
/// time name and the kernfs union.
#[test]
fn linux_5_4_has_thread_pid_but_the_old_start_time() {
    let btf = kernel(&Era {
        start_name: "real_start_time",
        thread_pid: true,
        kernfs_u64: false,
        typedefs: false,
        group_dead: false,
    });
    let k = resolve(&btf, None).expect("a 5.4 layout resolves");
    assert_eq!(k.offsets.task_thread_pid, PIDS_AT);
    assert_eq!(k.offsets.task_start_boottime, START_AT);
    assert!(k.kernfs_id_ino32);
    assert_eq!(k.older_names.len(), 2, "{:?}", k.older_names);
}

/// A current kernel: current names only, tp_btf ids, group_dead from the typedef.
#[test]
fn current_names_are_taken_first() {
    let btf = kernel(&Era {
        start_name: "start_boottime",
        thread_pid: true,
        kernfs_u64: true,
        typedefs: true,
        group_dead: true,
    });
    let k = resolve(&btf, Some("memory")).expect("a current layout resolves");
    assert!(k.older_names.is_empty(), "{:?}", k.older_names);
    assert!(!k.kernfs_id_ino32);
    assert!(k.tracepoints.is_ok(), "{:?}", k.tracepoints);
    assert!(k.exit_has_group_dead);
    assert_eq!(k.offsets.css_set_v1_subsys, 8 * 4);
}

/// Without the typedefs, group_dead comes from the raw tracepoint's own prototype.
#[test]
fn group_dead_without_typedefs_comes_from_the_prototype() {
    let btf = kernel(&Era {
        start_name: "start_boottime",
        thread_pid: true,
        kernfs_u64: true,
        typedefs: false,
        group_dead: true,
    });
    let k = resolve(&btf, None).expect("resolves");
    assert!(k.tracepoints.is_err());
    assert!(k.exit_has_group_dead);
}

/// A field under no known name is an error naming all of them.
#[test]
fn a_field_under_no_known_name_is_named_in_the_error() {
    let btf = kernel(&Era {
        start_name: "start_time_ns",
        thread_pid: true,
        kernfs_u64: true,
        typedefs: true,
        group_dead: false,
    });
    let e = resolve(&btf, None).expect_err("no start time field");
    let text = format!("{e:#}");
    assert!(
        text.contains("start_boottime") && text.contains("real_start_time"),
        "{text}"
    );
}
