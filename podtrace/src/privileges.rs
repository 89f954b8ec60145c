//! What the node grants this process, read from the kernel: capabilities (and whether the
//! kernel has CAP_BPF at all), RLIMIT_MEMLOCK (and whether the kernel charges BPF memory to
//! it), and whether this process sees the host's pid namespace.
//!
//! Pure functions over what was read, so that the kernels podtrace cannot boot here (4.18,
//! 5.4) are tested by giving them those kernels' answers.

/// Capability numbers (linux/capability.h).
pub const CAP_IPC_LOCK: u32 = 14;
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// The inode of the initial pid namespace (`PROC_PID_INIT_INO`, include/linux/proc_ns.h):
/// fixed since Linux 3.8, so `/proc/self/ns/pid` says whether this is the host's.
pub const HOST_PIDNS_INO: u64 = 0xEFFF_FFFC;

/// The effective capability set of this process (`CapEff` in /proc/self/status).
pub fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_cap_eff(&status)
}

pub fn parse_cap_eff(status: &str) -> Option<u64> {
    let hex = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    u64::from_str_radix(hex, 16).ok()
}

/// The highest capability the running kernel knows (`/proc/sys/kernel/cap_last_cap`).
pub fn cap_last_cap() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Whether the kernel has CAP_BPF and CAP_PERFMON (Linux 5.8 and later; unknown: assume so).
pub fn kernel_has_cap_bpf(cap_last_cap: Option<u32>) -> bool {
    cap_last_cap.is_none_or(|last| last >= CAP_BPF)
}

/// The name of a capability podtrace talks about.
pub fn cap_name(cap: u32) -> &'static str {
    match cap {
        CAP_IPC_LOCK => "CAP_IPC_LOCK",
        CAP_SYS_PTRACE => "CAP_SYS_PTRACE",
        CAP_SYS_ADMIN => "CAP_SYS_ADMIN",
        CAP_SYS_RESOURCE => "CAP_SYS_RESOURCE",
        CAP_PERFMON => "CAP_PERFMON",
        CAP_BPF => "CAP_BPF",
        _ => "a capability",
    }
}

pub fn has(cap_eff: u64, cap: u32) -> bool {
    cap_eff & (1u64 << cap) != 0
}

/// The capabilities loading and attaching the programs needs that `cap_eff` lacks:
/// CAP_BPF and CAP_PERFMON where the kernel has them, CAP_SYS_ADMIN where it does not
/// (before 5.8 only CAP_SYS_ADMIN covers bpf() and perf); CAP_SYS_ADMIN stands in for both
/// on any kernel.
pub fn missing_capabilities(cap_eff: u64, cap_last_cap: Option<u32>) -> Vec<&'static str> {
    if has(cap_eff, CAP_SYS_ADMIN) {
        return Vec::new();
    }
    if !kernel_has_cap_bpf(cap_last_cap) {
        return vec!["CAP_SYS_ADMIN"];
    }
    let mut missing = Vec::new();
    if !has(cap_eff, CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(cap_eff, CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    missing
}

/// What the kernel needs to load the programs, in words.
pub fn needed_capabilities(cap_last_cap: Option<u32>) -> String {
    if kernel_has_cap_bpf(cap_last_cap) {
        "CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN, or root)".to_string()
    } else {
        format!(
            "CAP_SYS_ADMIN: this kernel predates CAP_BPF and CAP_PERFMON (Linux 5.8; its last \
             capability is {}), so only CAP_SYS_ADMIN allows bpf() and attaching tracepoints",
            cap_last_cap.map_or_else(|| "unknown".to_string(), |c| c.to_string())
        )
    }
}

/// (major, minor) of a kernel release string such as `5.10.0-32-cloud-amd64` or
/// `4.18.0-372.9.1.el8.x86_64`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Whether the kernel charges BPF maps and programs to RLIMIT_MEMLOCK: before 5.11 it does
/// (since then to the memory cgroup). Unknown versions are taken as charging (the careful
/// answer: podtrace then raises the limit, which is harmless).
pub fn kernel_charges_memlock(release: &str) -> bool {
    kernel_version(release).is_none_or(|v| v < (5, 11))
}

/// RLIMIT_MEMLOCK (soft, hard) in bytes; None for unlimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Memlock {
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

fn limit(v: libc::rlim_t) -> Option<u64> {
    (v != libc::RLIM_INFINITY).then_some(v)
}

pub fn memlock() -> Option<Memlock> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid resource and out pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return None;
    }
    Some(Memlock {
        soft: limit(r.rlim_cur),
        hard: limit(r.rlim_max),
    })
}

fn set_memlock(soft: libc::rlim_t, hard: libc::rlim_t) -> bool {
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: valid resource and pointer.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &r) == 0 }
}

/// Raises RLIMIT_MEMLOCK as far as this process may: to unlimited (needs CAP_SYS_RESOURCE
/// when above the hard limit), else the soft limit to the hard one. Returns the limit after.
pub fn raise_memlock() -> Option<Memlock> {
    let now = memlock()?;
    if now.soft.is_none() {
        return Some(now);
    }
    if !set_memlock(libc::RLIM_INFINITY, libc::RLIM_INFINITY) {
        let hard = now.hard.unwrap_or(libc::RLIM_INFINITY);
        set_memlock(hard, hard);
    }
    memlock()
}

/// A size for people: `64 KiB`, `4.1 MiB`.
pub fn human(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else if bytes < 1024 * 1024 {
        format!("{} KiB", bytes / 1024)
    } else {
        format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
    }
}

/// The memlock verdict for a kernel that charges BPF memory to it: None when `soft` (the
/// limit in force, None = unlimited) covers `need`, else the message that says so and how
/// to fix it.
pub fn memlock_shortfall(release: &str, soft: Option<u64>, need: u64) -> Option<String> {
    let have = soft?;
    if !kernel_charges_memlock(release) || have >= need {
        return None;
    }
    Some(format!(
        "RLIMIT_MEMLOCK is {} but podtrace's BPF maps and programs need about {} on this \
         kernel ({release}: before Linux 5.11 the kernel charges BPF memory to RLIMIT_MEMLOCK); \
         grant CAP_SYS_RESOURCE (podtrace then raises the limit itself: the DaemonSet adds it), \
         or raise the limit the container runtime gives containers (LimitMEMLOCK=infinity in \
         the runtime's systemd unit, `ulimit -l unlimited`, `--ulimit memlock=-1`), or use a \
         smaller --ring-buffer-bytes",
        human(have),
        human(need)
    ))
}

/// The pid namespace inode of this process, and whether /proc is that namespace's (a
/// container's own /proc mount in the host namespace, or the reverse, would mislead).
pub fn own_pidns() -> Option<(u64, bool)> {
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata("/proc/self/ns/pid").ok()?.ino();
    let self_pid = std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse::<u32>().ok()));
    Some((ino, self_pid == Some(std::process::id())))
}

/// None when this process is in the host's pid namespace and /proc shows it; else why not,
/// with the fix.
pub fn host_pidns_problem(own: Option<(u64, bool)>) -> Option<String> {
    match own {
        None => Some(
            "/proc/self/ns/pid cannot be read, so podtrace cannot tell whether it sees the \
             host's processes: run it in the host's pid namespace (hostPID: true, podman/docker \
             --pid=host) with the host's /proc"
                .to_string(),
        ),
        Some((ino, _)) if ino != HOST_PIDNS_INO => Some(format!(
            "podtrace runs in a pid namespace of its own (pid:[{ino}], the host's is \
             pid:[{HOST_PIDNS_INO}]): /proc shows only its container's processes, so every pid \
             and name it printed would be wrong; run it in the host's pid namespace \
             (Kubernetes: hostPID: true; podman/docker: --pid=host)"
        )),
        Some((_, false)) => Some(
            "/proc is not this pid namespace's proc (its /proc/self is not this process): \
             mount the host's /proc (or run without a private /proc mount)"
                .to_string(),
        ),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cap_eff() {
        let status = "Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        assert_eq!(parse_cap_eff(status), Some(0x1ff_ffff_ffff));
        assert_eq!(parse_cap_eff("Name: x\n"), None);
        assert_eq!(parse_cap_eff("CapEff:\tzz\n"), None);
    }

    #[test]
    fn names_the_missing_capabilities() {
        let k = Some(40);
        assert_eq!(missing_capabilities(0, k), ["CAP_BPF", "CAP_PERFMON"]);
        assert_eq!(missing_capabilities(1 << CAP_BPF, k), ["CAP_PERFMON"]);
        assert_eq!(missing_capabilities(1 << CAP_PERFMON, k), ["CAP_BPF"]);
        assert!(missing_capabilities((1 << CAP_BPF) | (1 << CAP_PERFMON), k).is_empty());
        assert!(missing_capabilities(1 << CAP_SYS_ADMIN, k).is_empty());
    }

    /// RHEL 8 / OpenShift 4.12 (4.18) and 5.4: cap_last_cap 37, no CAP_BPF; the DaemonSet's
    /// BPF and PERFMON mean nothing there, CAP_SYS_ADMIN is what counts.
    #[test]
    fn before_5_8_only_cap_sys_admin_counts() {
        let rhel8 = Some(37);
        assert!(!kernel_has_cap_bpf(rhel8));
        let daemonset = (1 << CAP_BPF) | (1 << CAP_PERFMON) | (1 << CAP_SYS_PTRACE);
        assert_eq!(missing_capabilities(daemonset, rhel8), ["CAP_SYS_ADMIN"]);
        assert!(missing_capabilities(1 << CAP_SYS_ADMIN, rhel8).is_empty());
        let need = needed_capabilities(rhel8);
        assert!(
            need.starts_with("CAP_SYS_ADMIN") && need.contains("5.8"),
            "{need}"
        );
        assert!(needed_capabilities(Some(40)).starts_with("CAP_BPF and CAP_PERFMON"));
    }

    #[test]
    fn kernel_versions_and_memlock_accounting() {
        assert_eq!(kernel_version("5.10.0-32-cloud-amd64"), Some((5, 10)));
        assert_eq!(kernel_version("4.18.0-372.9.1.el8.x86_64"), Some((4, 18)));
        assert_eq!(kernel_version("6.18.44-fc-v1300"), Some((6, 18)));
        assert_eq!(kernel_version("x"), None);
        assert!(kernel_charges_memlock("4.18.0-372.9.1.el8.x86_64"));
        assert!(kernel_charges_memlock("5.10.223"));
        assert!(!kernel_charges_memlock("5.11.0"));
        assert!(!kernel_charges_memlock("6.1.0-57-cloud-amd64"));
        assert!(kernel_charges_memlock("garbage"));
    }

    #[test]
    fn memlock_shortfall_names_the_limit_the_need_and_the_fix() {
        let m = memlock_shortfall("5.10.0-32-cloud-amd64", Some(64 << 10), 5 << 20)
            .expect("64 KiB is short on 5.10");
        assert!(m.contains("RLIMIT_MEMLOCK is 64 KiB"), "{m}");
        assert!(m.contains("5.0 MiB"), "{m}");
        assert!(
            m.contains("CAP_SYS_RESOURCE") && m.contains("LimitMEMLOCK"),
            "{m}"
        );
        assert!(!m.contains("seccomp"), "{m}");
        assert_eq!(
            memlock_shortfall("5.10.0", None, 5 << 20),
            None,
            "unlimited"
        );
        assert_eq!(memlock_shortfall("6.1.0", Some(64 << 10), 5 << 20), None);
        assert_eq!(memlock_shortfall("5.10.0", Some(8 << 20), 5 << 20), None);
    }

    #[test]
    fn pid_namespace_verdicts() {
        assert_eq!(host_pidns_problem(Some((HOST_PIDNS_INO, true))), None);
        let m = host_pidns_problem(Some((4026532200, true))).expect("a private namespace");
        assert!(
            m.contains("hostPID: true") && m.contains("--pid=host"),
            "{m}"
        );
        assert!(m.contains("4026532200"), "{m}");
        assert!(host_pidns_problem(Some((HOST_PIDNS_INO, false))).is_some());
        assert!(host_pidns_problem(None).is_some());
    }

    #[test]
    fn this_process_reads_its_own_namespace() {
        let (ino, proc_is_ours) = own_pidns().expect("/proc/self/ns/pid");
        assert!(ino > 0);
        assert!(proc_is_ours, "/proc/self is this process");
    }

    #[test]
    fn sizes() {
        assert_eq!(human(100), "100 bytes");
        assert_eq!(human(64 << 10), "64 KiB");
        assert_eq!(human(5 << 20), "5.0 MiB");
    }
}
