//! RLIMIT_MEMLOCK as deployed, without CAP_SYS_RESOURCE: before 5.11 the kernel charges BPF
//! maps to it, and a container's 64 KiB cannot hold podtrace's ring buffer.
//!
//! Ground truth from the kernel itself: a child with a 64 KiB limit creates a 256 KiB BPF
//! array map by the bare bpf() system call; EPERM means this kernel charges memlock. Then
//! podtrace, with the manifest's capabilities minus CAP_SYS_RESOURCE and the same limit, must
//! refuse (exit 2) naming RLIMIT_MEMLOCK, the need and the fix, and no seccomp hint, where
//! the kernel charges; and run where it does not.
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::checks::{fail, pass, Outcome};
use crate::daemon::{Daemon, Launch, CONTAINER_MEMLOCK};

/// The hidden argument that runs the probe child.
pub const PROBE_ARG: &str = "memlock-probe";
const CHARGED: i32 = 10;
const NOT_CHARGED: i32 = 11;

/// The probe child: BPF_MAP_CREATE of a 64 x 4 KiB array; exits CHARGED on EPERM,
/// NOT_CHARGED on success, 1 on anything else.
pub fn probe_child() -> i32 {
    let mut attr = [0u32; 32];
    attr[0] = 2; // BPF_MAP_TYPE_ARRAY
    attr[1] = 4; // key_size
    attr[2] = 4096; // value_size
    attr[3] = 64; // max_entries
                  // SAFETY: BPF_MAP_CREATE (0) with a zeroed attr of its size; the fd is closed at exit.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0,
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    };
    if fd >= 0 {
        return NOT_CHARGED;
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EPERM) => CHARGED,
        other => {
            eprintln!("memlock probe: bpf(BPF_MAP_CREATE) failed: {other:?}");
            1
        }
    }
}

/// Whether the kernel charges BPF maps to RLIMIT_MEMLOCK (asked of the kernel).
pub fn kernel_charges() -> Result<bool> {
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg(PROBE_ARG);
    Launch {
        memlock: Some(CONTAINER_MEMLOCK),
        ..Launch::default()
    }
    .apply(&mut cmd);
    let status = cmd.status().context("running the memlock probe")?;
    match status.code() {
        Some(CHARGED) => Ok(true),
        Some(NOT_CHARGED) => Ok(false),
        _ => anyhow::bail!("memlock probe ended with {status}"),
    }
}

/// A launch with `caps` (the manifest's) less CAP_SYS_RESOURCE and a container's 64 KiB of
/// memlock: what a pod gets when its manifest leaves CAP_SYS_RESOURCE out.
pub fn short_launch(caps: &[(String, u32)]) -> Launch {
    let keep: Vec<u32> = caps
        .iter()
        .filter(|(name, _)| name.trim_start_matches("CAP_") != "SYS_RESOURCE")
        .map(|(_, n)| *n)
        .collect();
    Launch {
        caps: Some(keep),
        memlock: Some(CONTAINER_MEMLOCK),
        ..Launch::default()
    }
}

/// podtrace with `caps` (the manifest's, less CAP_SYS_RESOURCE) and 64 KiB of memlock.
pub fn check(caps: &[(String, u32)], workdir: &str) -> Outcome {
    let charges = match kernel_charges() {
        Ok(c) => c,
        Err(e) => return fail(format!("ground truth: {e:#}")),
    };
    let mut d = match Daemon::start(&format!("{workdir}/memlock"), &short_launch(caps)) {
        Ok(d) => d,
        Err(e) => return fail(format!("{e:#}")),
    };
    let attached = d.wait_attached(Duration::from_secs(90));
    let verdict = match (charges, attached) {
        (true, Ok(_)) => fail(
            "the kernel charges BPF maps to RLIMIT_MEMLOCK (a 256 KiB map failed with EPERM at \
             64 KiB) but podtrace attached without CAP_SYS_RESOURCE",
        ),
        (true, Err(_)) => match d.wait_exit(Duration::from_secs(10)) {
            Ok(s) if s.code() == Some(2) => {
                let text = d.stderr().join("\n");
                let named = text.contains("RLIMIT_MEMLOCK is 64 KiB")
                    && text.contains("CAP_SYS_RESOURCE")
                    && text.contains("need about");
                if !named {
                    fail(format!("exit 2 but the message does not name the limit, the need and the fix: {text}"))
                } else if text.contains("seccomp") || text.contains("LSM") {
                    fail(format!("a memlock refusal with a seccomp/LSM hint: {text}"))
                } else {
                    pass("kernel charges memlock: podtrace refused with exit 2, naming 64 KiB, the need and CAP_SYS_RESOURCE")
                }
            }
            Ok(s) => fail(format!("want exit 2, got {s}: {}", d.stderr().join(" / "))),
            Err(e) => fail(format!("{e:#}")),
        },
        (false, Ok(t)) => match d.stop(Duration::from_secs(60)) {
            Ok(s) if s.success() => pass(format!(
                "kernel does not charge memlock: podtrace ran without CAP_SYS_RESOURCE (attached after {:.1} s)",
                t.as_secs_f64()
            )),
            Ok(s) => fail(format!("attached, but SIGINT ended it with {s}")),
            Err(e) => fail(format!("{e:#}")),
        },
        (false, Err(e)) => fail(format!(
            "the kernel does not charge memlock, yet podtrace did not attach: {e:#}"
        )),
    };
    verdict
}
