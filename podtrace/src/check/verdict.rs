//! The verdicts of `podtrace check`: one line per item, made from [`Facts`] alone (pure, so
//! that kernels and grants this machine does not have are tested by giving their facts).
//!
//! The load attempt decides: where a prediction (capabilities, RLIMIT_MEMLOCK, the kernel's
//! version) says podtrace cannot run but the programs did load, the line is a warning, not a
//! failure. A failure means `podtrace run` would stop on this node as it was started.
use serde::Serialize;

use super::facts::{Btf, Capabilities, Cgroups, Cri, Facts, Load, Memlock};
use crate::privileges::{self, has, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_RESOURCE};
use crate::privileges::{CAP_BPF, HOST_PIDNS_INO};

/// The oldest upstream kernel with everything the programs use: `bpf_ktime_get_boot_ns`
/// (5.8), `bpf_probe_read_kernel` (5.5), the kernel's BTF in /sys/kernel/btf (5.4). Vendor
/// kernels with these backported (RHEL 8's 4.18) may run podtrace: the load attempt says.
pub const MIN_KERNEL: (u32, u32) = (5, 8);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "fail",
        }
    }
}

/// What a line is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Item {
    Kernel,
    Btf,
    /// How the programs attach and how records come back (the load attempt).
    Attach,
    Capabilities,
    Memlock,
    Cgroups,
    Cri,
    PidNamespace,
}

impl Item {
    pub fn as_str(self) -> &'static str {
        match self {
            Item::Kernel => "kernel",
            Item::Btf => "btf",
            Item::Attach => "attach",
            Item::Capabilities => "capabilities",
            Item::Memlock => "memlock",
            Item::Cgroups => "cgroups",
            Item::Cri => "cri",
            Item::PidNamespace => "pid-namespace",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Line {
    pub item: Item,
    pub verdict: Verdict,
    /// What was found.
    pub what: String,
    /// What to do about it (None when ok, or when `what` already says it: the messages of
    /// memlock and of the pid namespace carry their fix).
    pub fix: Option<String>,
}

fn line(item: Item, verdict: Verdict, what: impl Into<String>, fix: Option<&str>) -> Line {
    Line {
        item,
        verdict,
        what: what.into(),
        fix: fix.map(str::to_string),
    }
}

/// Every line, in a fixed order.
pub fn lines(f: &Facts) -> Vec<Line> {
    let loaded = matches!(f.load, Load::Loaded { .. });
    vec![
        kernel(f, loaded),
        btf(&f.btf),
        attach(&f.load),
        capabilities(&f.capabilities, f.memlock.charged, loaded),
        memlock(f, loaded),
        cgroups(&f.cgroups),
        cri(&f.cri),
        pid_namespace(f),
    ]
}

/// The worst verdict of the lines.
pub fn overall(lines: &[Line]) -> Verdict {
    lines.iter().map(|l| l.verdict).max().unwrap_or(Verdict::Ok)
}

fn kernel(f: &Facts, loaded: bool) -> Line {
    let arch = f.kernel.arch.as_deref().unwrap_or("unknown arch");
    let (min_major, min_minor) = MIN_KERNEL;
    let Some(release) = f.kernel.release.as_deref() else {
        return line(
            Item::Kernel,
            Verdict::Warn,
            format!(
                "release unknown (/proc/sys/kernel/osrelease cannot be read), {arch}; the \
                 attach line says whether the programs load"
            ),
            None,
        );
    };
    match privileges::kernel_version(release) {
        Some(v) if v >= MIN_KERNEL => line(
            Item::Kernel,
            Verdict::Ok,
            format!("{release} {arch} (minimum {min_major}.{min_minor})"),
            None,
        ),
        Some(_) if loaded => line(
            Item::Kernel,
            Verdict::Ok,
            format!(
                "{release} {arch}: older than {min_major}.{min_minor}, but with what podtrace \
                 uses backported (the programs loaded)"
            ),
            None,
        ),
        Some(_) => line(
            Item::Kernel,
            Verdict::Warn,
            format!(
                "{release} {arch}: older than Linux {min_major}.{min_minor}, the oldest upstream \
                 kernel with everything podtrace's programs use (bpf_ktime_get_boot_ns, \
                 bpf_probe_read_kernel, BTF); vendor kernels with those backported (RHEL 8's \
                 4.18) can run it"
            ),
            Some("a kernel of 5.8 or later, or a vendor kernel with BPF backports (RHEL 8.6 or later)"),
        ),
        None => line(
            Item::Kernel,
            Verdict::Warn,
            format!(
                "{release} {arch}: the version cannot be read from the release; the attach \
                 line says whether the programs load"
            ),
            None,
        ),
    }
}

fn btf(b: &Btf) -> Line {
    match b {
        Btf::Parsed {
            path,
            older_names,
            no_tp_btf,
        } => {
            let names = if older_names.is_empty() {
                "every field under its current name".to_string()
            } else {
                format!("fields under older names: {}", older_names.join(", "))
            };
            let tp = match no_tp_btf {
                None => "BTF tracepoints possible".to_string(),
                Some(why) => format!("no BTF tracepoints ({why}): raw tracepoints only"),
            };
            line(
                Item::Btf,
                Verdict::Ok,
                format!("{path}: {names}; {tp}"),
                None,
            )
        }
        Btf::Unusable { error, .. } => line(
            Item::Btf,
            Verdict::Fail,
            error.clone(),
            Some(
                "a kernel built with CONFIG_DEBUG_INFO_BTF=y; in a container, mount the host's \
                 /sys/kernel/btf read-only (the DaemonSet does)",
            ),
        ),
    }
}

fn attach(l: &Load) -> Line {
    match l {
        Load::Loaded {
            path,
            fallbacks,
            exit_program,
            forced_attach,
            forced_transport,
            fds_left,
            ..
        } => {
            let mut what = format!("{path}");
            let forced: Vec<&str> = [
                forced_attach.map(|_| "--attach"),
                forced_transport.map(|_| "--transport"),
            ]
            .into_iter()
            .flatten()
            .collect();
            if !forced.is_empty() {
                what.push_str(&format!(" (forced by {})", forced.join(" and ")));
            }
            what.push_str(&format!(
                "; exit program {exit_program}; loaded, attached and unloaded again"
            ));
            if !fallbacks.is_empty() {
                what.push_str(&format!("; fell back from {}", fallbacks.join("; ")));
            }
            match fds_left {
                Some(n) if *n > 0 => line(
                    Item::Attach,
                    Verdict::Warn,
                    format!(
                        "{what}; but {n} BPF or perf file descriptors stayed open after unloading"
                    ),
                    Some("report it: nothing should stay loaded after `podtrace check`"),
                ),
                _ => line(Item::Attach, Verdict::Ok, what, None),
            }
        }
        Load::Failed { error, refusal } => line(
            Item::Attach,
            Verdict::Fail,
            format!("the programs do not load: {error}"),
            Some(if *refusal {
                "grant what the message names (see the capabilities and memlock lines)"
            } else {
                "this kernel refused every attach path and transport podtrace has; \
                 `--attach` and `--transport` show each one's error"
            }),
        ),
    }
}

/// The capabilities podtrace talks about that `eff` holds.
fn held(eff: u64, last_cap: Option<u32>) -> String {
    let names: Vec<&str> = [
        CAP_BPF,
        CAP_PERFMON,
        CAP_SYS_ADMIN,
        CAP_SYS_PTRACE,
        CAP_SYS_RESOURCE,
    ]
    .into_iter()
    .filter(|&c| last_cap.is_none_or(|last| c <= last) && has(eff, c))
    .map(privileges::cap_name)
    .collect();
    let list = if names.is_empty() {
        "none of CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_SYS_RESOURCE".to_string()
    } else {
        names.join(", ")
    };
    format!("holds {list} (CapEff {eff:016x})")
}

fn capabilities(c: &Capabilities, memlock_charged: bool, loaded: bool) -> Line {
    let Some(eff) = c.effective else {
        return line(
            Item::Capabilities,
            Verdict::Warn,
            "unknown: /proc/self/status cannot be read; the attach line says whether the \
             programs load",
            None,
        );
    };
    let mut what = held(eff, c.last_cap);
    if !privileges::kernel_has_cap_bpf(c.last_cap) {
        what.push_str(&format!(
            "; this kernel has no CAP_BPF or CAP_PERFMON (cap_last_cap {})",
            c.last_cap
                .map_or_else(|| "unknown".into(), |l| l.to_string())
        ));
    }
    if memlock_charged && !has(eff, CAP_SYS_RESOURCE) && !has(eff, CAP_SYS_ADMIN) {
        what.push_str(
            "; no CAP_SYS_RESOURCE, so podtrace cannot raise RLIMIT_MEMLOCK, which this \
             kernel charges BPF memory to (see memlock)",
        );
    }
    let missing = privileges::missing_capabilities(eff, c.last_cap);
    if !missing.is_empty() {
        let what = format!(
            "{what}; lacks {}: podtrace needs {}",
            missing.join(" and "),
            privileges::needed_capabilities(c.last_cap)
        );
        if loaded {
            return line(
                Item::Capabilities,
                Verdict::Warn,
                format!("{what} (yet the programs loaded here)"),
                None,
            );
        }
        let fix = if privileges::kernel_has_cap_bpf(c.last_cap) {
            "add BPF and PERFMON (Kubernetes: securityContext.capabilities.add; podman: \
             --cap-add=CAP_BPF,CAP_PERFMON)"
        } else {
            "add SYS_ADMIN: before Linux 5.8 only CAP_SYS_ADMIN allows bpf() (OpenShift 4.12 / \
             RHEL 8: deploy/openshift-4.12)"
        };
        return line(Item::Capabilities, Verdict::Fail, what, Some(fix));
    }
    if !has(eff, CAP_SYS_PTRACE) {
        return line(
            Item::Capabilities,
            Verdict::Warn,
            format!(
                "{what}; lacks CAP_SYS_PTRACE: /proc/PID/ns/pid and /proc/PID/exe of processes \
                 holding capabilities podtrace lacks (container inits started before it) cannot \
                 be read, so a process that only enters such a container's pid namespace is \
                 reported with container null"
            ),
            Some("add SYS_PTRACE (the DaemonSet does)"),
        );
    }
    line(Item::Capabilities, Verdict::Ok, what, None)
}

fn bytes(v: Option<u64>) -> String {
    v.map_or_else(|| "unlimited".to_string(), privileges::human)
}

fn memlock(f: &Facts, loaded: bool) -> Line {
    let m: &Memlock = &f.memlock;
    let release = f.kernel.release.as_deref().unwrap_or("release unknown");
    let Some(limit) = m.limit else {
        return line(
            Item::Memlock,
            if m.charged {
                Verdict::Warn
            } else {
                Verdict::Ok
            },
            "RLIMIT_MEMLOCK cannot be read",
            None,
        );
    };
    let now = format!(
        "RLIMIT_MEMLOCK {} (hard {})",
        bytes(limit.soft),
        bytes(limit.hard)
    );
    if !m.charged {
        return line(
            Item::Memlock,
            Verdict::Ok,
            format!(
                "{now}: not used for BPF memory by this kernel ({release}: since Linux 5.11 it \
                 is charged to the memory cgroup)"
            ),
            None,
        );
    }
    let need = privileges::human(m.need);
    let ok = |how: String| {
        line(
            Item::Memlock,
            Verdict::Ok,
            format!("{now}; this kernel charges BPF memory to it and podtrace needs about {need} ({}): {how}", m.transport.as_str()),
            None,
        )
    };
    let Some(soft) = limit.soft else {
        return ok("unlimited".into());
    };
    if soft >= m.need {
        return ok("enough".into());
    }
    let eff = f.capabilities.effective.unwrap_or(0);
    if has(eff, CAP_SYS_RESOURCE) {
        return ok("podtrace raises it at start (CAP_SYS_RESOURCE)".into());
    }
    match limit.hard {
        None => return ok("podtrace raises it to the hard limit (unlimited) at start".into()),
        Some(h) if h >= m.need => {
            return ok(format!(
                "podtrace raises it to the hard limit ({}) at start",
                privileges::human(h)
            ))
        }
        Some(_) => {}
    }
    let best = limit.hard.map_or(soft, |h| h.max(soft));
    let Some(short) = privileges::memlock_shortfall(release, Some(best), m.need) else {
        return ok("enough".into());
    };
    if loaded {
        return line(
            Item::Memlock,
            Verdict::Warn,
            format!("{short} (yet the programs loaded here: the need is an estimate)"),
            None,
        );
    }
    line(Item::Memlock, Verdict::Fail, short, None)
}

fn cgroups(c: &Cgroups) -> Line {
    match c {
        Cgroups::Chosen {
            mode,
            setup,
            v2_mount,
            v1_mount,
        } => {
            let mounts: Vec<String> = [
                v2_mount.as_ref().map(|p| format!("cgroup2 at {p}")),
                v1_mount.as_ref().map(|p| format!("v1 at {p}")),
            ]
            .into_iter()
            .flatten()
            .collect();
            let what = format!("--cgroup-mode {mode}: {}", setup.describe());
            if !setup.v2 && setup.v1.is_none() {
                return line(
                    Item::Cgroups,
                    Verdict::Warn,
                    format!(
                        "{what}: no cgroup2 mount and no v1 controller hierarchy in \
                         /proc/self/mountinfo, so events carry cgroup null and containers are \
                         found by runtime helpers only"
                    ),
                    Some("mount the host's /sys/fs/cgroup read-only (the DaemonSet does)"),
                );
            }
            line(
                Item::Cgroups,
                Verdict::Ok,
                format!("{what} ({})", mounts.join(", ")),
                None,
            )
        }
        Cgroups::Refused { error, .. } => line(
            Item::Cgroups,
            Verdict::Fail,
            error.clone(),
            Some("--cgroup-mode auto, or mount the hierarchy it names"),
        ),
    }
}

fn cri(c: &Cri) -> Line {
    match c {
        Cri::Skipped => line(Item::Cri, Verdict::Ok, "not asked (--no-cri)", None),
        Cri::Answered { endpoint, runtime } => line(
            Item::Cri,
            Verdict::Ok,
            format!("{runtime} at {endpoint}"),
            None,
        ),
        Cri::NoSocket { tried } => line(
            Item::Cri,
            Verdict::Warn,
            format!(
                "no CRI socket found (tried {}): pod, container and image names come from \
                 runtime helpers' argv and cgroup paths only",
                tried.join(", ")
            ),
            Some(
                "mount the runtime's socket directory (/run/containerd, /run/crio: the DaemonSet \
                 does) or name the socket with --cri-endpoint",
            ),
        ),
        Cri::NotAnswering { endpoint, error } => line(
            Item::Cri,
            Verdict::Warn,
            format!(
                "{endpoint} does not answer ({error}): podtrace would run and ask again with \
                 backoff; names from the CRI wait until it answers"
            ),
            Some("check that the container runtime is running and that this is its socket"),
        ),
        Cri::Unusable { error } => line(
            Item::Cri,
            Verdict::Fail,
            format!("--cri-endpoint: {error}: `podtrace run` would stop"),
            Some("name the runtime's socket, or leave --cri-endpoint out to find it"),
        ),
    }
}

fn pid_namespace(f: &Facts) -> Line {
    let own = f.pid_namespace.own();
    match privileges::host_pidns_problem(own) {
        None => line(
            Item::PidNamespace,
            Verdict::Ok,
            format!("the host's (pid:[{HOST_PIDNS_INO}]), with its /proc"),
            None,
        ),
        Some(why) => line(Item::PidNamespace, Verdict::Fail, why, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroups::CgroupSetup;
    use crate::check::facts::{Limit, PidNamespace};
    use crate::check::tests_support::{self, DAEMONSET, DAEMONSET_NEW};
    use crate::loader::{Attach, KernelPath};
    use crate::transport::Transport;

    const ROOT: u64 = (1 << 41) - 1;

    fn loaded() -> Load {
        tests_support::loaded()
    }

    fn good() -> Facts {
        tests_support::facts()
    }

    fn get(f: &Facts, item: Item) -> Line {
        lines(f)
            .into_iter()
            .find(|l| l.item == item)
            .unwrap_or_else(|| panic!("no {item:?} line"))
    }

    fn assert_line(f: &Facts, item: Item, verdict: Verdict, needles: &[&str]) -> Line {
        let l = get(f, item);
        assert_eq!(l.verdict, verdict, "{item:?}: {l:#?}");
        let text = format!("{} {}", l.what, l.fix.clone().unwrap_or_default());
        for n in needles {
            assert!(text.contains(n), "{item:?} does not say `{n}`: {text}");
        }
        l
    }

    #[test]
    fn a_good_node_is_ok_on_every_line_in_order() {
        let f = good();
        let ls = lines(&f);
        let items: Vec<Item> = ls.iter().map(|l| l.item).collect();
        assert_eq!(
            items,
            [
                Item::Kernel,
                Item::Btf,
                Item::Attach,
                Item::Capabilities,
                Item::Memlock,
                Item::Cgroups,
                Item::Cri,
                Item::PidNamespace
            ]
        );
        for l in &ls {
            assert_eq!(l.verdict, Verdict::Ok, "{l:#?}");
            assert!(l.fix.is_none(), "{l:#?}");
        }
        assert_eq!(overall(&ls), Verdict::Ok);
        assert_line(
            &f,
            Item::Kernel,
            Verdict::Ok,
            &["6.1.0-57", "x86_64", "minimum 5.8"],
        );
        assert_line(
            &f,
            Item::Attach,
            Verdict::Ok,
            &["tp-btf + ring-buffer", "unloaded"],
        );
        assert_line(
            &f,
            Item::Cri,
            Verdict::Ok,
            &["containerd v1.7.0", "containerd.sock"],
        );
        assert_line(&f, Item::PidNamespace, Verdict::Ok, &["4026531836"]);
    }

    #[test]
    fn kernel_lines() {
        let mut f = good();
        f.kernel.release = Some("4.18.0-372.9.1.el8.x86_64".into());
        assert_line(&f, Item::Kernel, Verdict::Ok, &["backported", "loaded"]);
        f.load = Load::Failed {
            error: "x".into(),
            refusal: false,
        };
        assert_line(
            &f,
            Item::Kernel,
            Verdict::Warn,
            &["older than Linux 5.8", "RHEL 8"],
        );
        f.kernel.release = None;
        assert_line(&f, Item::Kernel, Verdict::Warn, &["unknown"]);
        f.kernel.release = Some("weird".into());
        assert_line(&f, Item::Kernel, Verdict::Warn, &["cannot be read"]);
    }

    #[test]
    fn btf_lines() {
        let mut f = good();
        f.btf = Btf::Parsed {
            path: "/sys/kernel/btf/vmlinux".into(),
            older_names: vec![
                "task_struct.real_start_time (for task_struct.start_boottime)".into(),
            ],
            no_tp_btf: Some("no btf_trace_sched_process_exec".into()),
        };
        assert_line(
            &f,
            Item::Btf,
            Verdict::Ok,
            &["real_start_time", "raw tracepoints only"],
        );
        f.btf = Btf::Unusable {
            path: "/sys/kernel/btf/vmlinux".into(),
            error: "this kernel has no BTF: /sys/kernel/btf/vmlinux does not exist".into(),
        };
        assert_line(
            &f,
            Item::Btf,
            Verdict::Fail,
            &["does not exist", "CONFIG_DEBUG_INFO_BTF", "/sys/kernel/btf"],
        );
    }

    #[test]
    fn attach_lines() {
        let mut f = good();
        f.load = Load::Loaded {
            path: KernelPath {
                attach: Attach::RawTp,
                transport: Transport::PerfBuffer,
            },
            fallbacks: vec![
                "ring-buffer: map error: invalid argument".into(),
                "tp-btf: verifying sched_process_exec: ...".into(),
            ],
            exit_program: "sched_process_exit_legacy_raw".into(),
            forced_attach: None,
            forced_transport: Some(Transport::PerfBuffer),
            programs: Vec::new(),
            maps: None,
            fds_left: Some(0),
        };
        assert_line(
            &f,
            Item::Attach,
            Verdict::Ok,
            &[
                "raw-tp + perf-buffer",
                "fell back from ring-buffer: map error",
                "--transport",
            ],
        );
        if let Load::Loaded { fds_left, .. } = &mut f.load {
            *fds_left = Some(2);
        }
        assert_line(&f, Item::Attach, Verdict::Warn, &["2 BPF"]);
        f.load = Load::Failed {
            error: "loading the eBPF programs: ...: this process lacks CAP_BPF".into(),
            refusal: true,
        };
        assert_line(&f, Item::Attach, Verdict::Fail, &["lacks CAP_BPF", "grant"]);
        f.load = Load::Failed {
            error: "the verifier refused it".into(),
            refusal: false,
        };
        assert_line(&f, Item::Attach, Verdict::Fail, &["verifier", "--attach"]);
        assert_eq!(overall(&lines(&f)), Verdict::Fail);
    }

    #[test]
    fn capability_lines() {
        let mut f = good();
        f.capabilities.effective = Some(ROOT);
        assert_line(
            &f,
            Item::Capabilities,
            Verdict::Ok,
            &["CAP_BPF", "CAP_SYS_ADMIN"],
        );
        // Without CAP_BPF and CAP_PERFMON the load fails, and the line names them.
        f.capabilities.effective = Some(1 << CAP_SYS_PTRACE);
        f.load = Load::Failed {
            error: "x".into(),
            refusal: true,
        };
        assert_line(
            &f,
            Item::Capabilities,
            Verdict::Fail,
            &[
                "lacks CAP_BPF and CAP_PERFMON",
                "--cap-add=CAP_BPF,CAP_PERFMON",
            ],
        );
        f.capabilities.effective = None;
        assert_line(&f, Item::Capabilities, Verdict::Warn, &["unknown"]);
        // SYS_PTRACE missing: a warning saying what degrades.
        f.capabilities.effective = Some((1 << CAP_BPF) | (1 << CAP_PERFMON));
        f.load = loaded();
        assert_line(
            &f,
            Item::Capabilities,
            Verdict::Warn,
            &["lacks CAP_SYS_PTRACE", "container null", "SYS_PTRACE"],
        );
        // The rule says missing but the programs loaded: the attempt wins, a warning.
        f.capabilities.effective = Some(1 << CAP_SYS_PTRACE);
        assert_line(&f, Item::Capabilities, Verdict::Warn, &["lacks", "loaded"]);
    }

    /// RHEL 8 / OpenShift 4.12: cap_last_cap 37, the DaemonSet's BPF and PERFMON mean
    /// nothing; CAP_SYS_ADMIN is named, with the overlay that grants it.
    #[test]
    fn a_kernel_without_cap_bpf_needs_cap_sys_admin() {
        let mut f = good();
        f.kernel.release = Some("4.18.0-372.9.1.el8.x86_64".into());
        f.capabilities = Capabilities {
            // What the kernel keeps of BPF/PERFMON/SYS_PTRACE: bits above 37 do not exist.
            effective: Some(1 << CAP_SYS_PTRACE),
            last_cap: Some(37),
        };
        f.load = Load::Failed {
            error: "Operation not permitted".into(),
            refusal: true,
        };
        let l = assert_line(
            &f,
            Item::Capabilities,
            Verdict::Fail,
            &[
                "lacks CAP_SYS_ADMIN",
                "no CAP_BPF",
                "cap_last_cap 37",
                "deploy/openshift-4.12",
            ],
        );
        assert!(!l.what.contains("lacks CAP_BPF"), "{l:#?}");
        f.capabilities.effective = Some((1 << CAP_SYS_ADMIN) | (1 << CAP_SYS_PTRACE));
        f.load = loaded();
        assert_line(&f, Item::Capabilities, Verdict::Ok, &["CAP_SYS_ADMIN"]);
    }

    /// 5.10 with the 64 KiB RLIMIT_MEMLOCK older runtimes give containers.
    #[test]
    fn memlock_lines() {
        let mut f = good();
        assert_line(&f, Item::Memlock, Verdict::Ok, &["not used", "5.11"]);
        f.kernel.release = Some("5.10.0-32-cloud-amd64".into());
        f.memlock.charged = true;
        f.memlock.limit = Some(Limit {
            soft: Some(64 << 10),
            hard: Some(64 << 10),
        });
        // With CAP_SYS_RESOURCE podtrace raises it.
        f.capabilities.effective = Some(DAEMONSET_NEW);
        assert_line(
            &f,
            Item::Memlock,
            Verdict::Ok,
            &["64 KiB", "raises", "CAP_SYS_RESOURCE"],
        );
        // Without it, and a hard limit too low: podtrace cannot run.
        f.capabilities.effective = Some(DAEMONSET);
        f.load = Load::Failed {
            error: "RLIMIT_MEMLOCK is 64 KiB".into(),
            refusal: true,
        };
        let l = assert_line(
            &f,
            Item::Memlock,
            Verdict::Fail,
            &[
                "RLIMIT_MEMLOCK is 64 KiB",
                "5.0 MiB",
                "CAP_SYS_RESOURCE",
                "LimitMEMLOCK",
            ],
        );
        assert!(!l.what.contains("seccomp"), "{l:#?}");
        assert_line(
            &f,
            Item::Capabilities,
            Verdict::Ok,
            &["no CAP_SYS_RESOURCE", "memlock"],
        );
        // A hard limit above the need: the soft limit is raised to it.
        f.memlock.limit = Some(Limit {
            soft: Some(64 << 10),
            hard: None,
        });
        assert_line(&f, Item::Memlock, Verdict::Ok, &["hard limit (unlimited)"]);
        f.memlock.limit = Some(Limit {
            soft: None,
            hard: None,
        });
        assert_line(&f, Item::Memlock, Verdict::Ok, &["unlimited"]);
        f.memlock.limit = Some(Limit {
            soft: Some(8 << 20),
            hard: Some(8 << 20),
        });
        assert_line(&f, Item::Memlock, Verdict::Ok, &["enough"]);
        // Too low by the estimate, but the programs loaded: a warning.
        f.memlock.limit = Some(Limit {
            soft: Some(64 << 10),
            hard: Some(64 << 10),
        });
        f.load = loaded();
        assert_line(&f, Item::Memlock, Verdict::Warn, &["estimate"]);
        f.memlock.limit = None;
        assert_line(&f, Item::Memlock, Verdict::Warn, &["cannot be read"]);
    }

    #[test]
    fn cgroup_lines() {
        let mut f = good();
        assert_line(&f, Item::Cgroups, Verdict::Ok, &["v2", "/sys/fs/cgroup"]);
        f.cgroups = Cgroups::Chosen {
            mode: "auto".into(),
            setup: CgroupSetup {
                v2: false,
                v1: Some("pids".into()),
            },
            v2_mount: None,
            v1_mount: Some("/sys/fs/cgroup/pids".into()),
        };
        assert_line(
            &f,
            Item::Cgroups,
            Verdict::Ok,
            &["v1 (pids", "/sys/fs/cgroup/pids"],
        );
        f.cgroups = Cgroups::Chosen {
            mode: "auto".into(),
            setup: CgroupSetup {
                v2: false,
                v1: None,
            },
            v2_mount: None,
            v1_mount: None,
        };
        assert_line(
            &f,
            Item::Cgroups,
            Verdict::Warn,
            &["cgroup null", "/sys/fs/cgroup"],
        );
        f.cgroups = Cgroups::Refused {
            mode: "v1".into(),
            error: "--cgroup-mode v1: no cgroup v1 controller hierarchy is mounted".into(),
        };
        assert_line(
            &f,
            Item::Cgroups,
            Verdict::Fail,
            &["--cgroup-mode v1", "auto"],
        );
    }

    #[test]
    fn cri_lines() {
        let mut f = good();
        f.cri = Cri::Skipped;
        assert_line(&f, Item::Cri, Verdict::Ok, &["--no-cri"]);
        f.cri = Cri::NoSocket {
            tried: vec![
                "/run/containerd/containerd.sock".into(),
                "/run/crio/crio.sock".into(),
            ],
        };
        assert_line(
            &f,
            Item::Cri,
            Verdict::Warn,
            &["no CRI socket", "/run/crio/crio.sock", "--cri-endpoint"],
        );
        f.cri = Cri::NotAnswering {
            endpoint: "/run/crio/crio.sock".into(),
            error: "timed out".into(),
        };
        assert_line(
            &f,
            Item::Cri,
            Verdict::Warn,
            &["does not answer", "timed out"],
        );
        f.cri = Cri::Unusable {
            error: "CRI endpoint /x.sock: no such file".into(),
        };
        assert_line(&f, Item::Cri, Verdict::Fail, &["/x.sock", "would stop"]);
        assert_eq!(overall(&lines(&f)), Verdict::Fail);
    }

    #[test]
    fn not_in_the_host_pid_namespace_fails_naming_the_fix() {
        let mut f = good();
        f.pid_namespace = PidNamespace {
            inode: Some(4026532200),
            proc_is_own: Some(true),
        };
        assert_line(
            &f,
            Item::PidNamespace,
            Verdict::Fail,
            &["hostPID: true", "--pid=host", "4026532200"],
        );
        assert_eq!(overall(&lines(&f)), Verdict::Fail);
        f.pid_namespace.inode = None;
        assert_line(&f, Item::PidNamespace, Verdict::Fail, &["cannot be read"]);
        f.pid_namespace = PidNamespace {
            inode: Some(HOST_PIDNS_INO),
            proc_is_own: Some(false),
        };
        assert_line(&f, Item::PidNamespace, Verdict::Fail, &["/proc"]);
    }

    #[test]
    fn warnings_alone_do_not_fail() {
        let mut f = good();
        f.cri = Cri::NoSocket { tried: Vec::new() };
        f.capabilities.effective = Some((1 << CAP_BPF) | (1 << CAP_PERFMON));
        let ls = lines(&f);
        assert_eq!(overall(&ls), Verdict::Warn);
    }
}
