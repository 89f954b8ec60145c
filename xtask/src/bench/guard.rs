//! Machine state the bench changes for its run and puts back on drop: the kernel's BPF
//! run-time statistics switch and a tracefs mount for bpftrace; plus Ctrl-C handling so the
//! guards run instead of the process dying mid-change.
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};

const STATS_SYSCTL: &str = "/proc/sys/kernel/bpf_stats_enabled";
const TRACEFS: &str = "/sys/kernel/tracing";

/// kernel.bpf_stats_enabled = 1 while held; the old value is written back on drop.
pub struct BpfStats {
    old: String,
}

impl BpfStats {
    pub fn enable() -> Result<Self> {
        let old = std::fs::read_to_string(STATS_SYSCTL)
            .with_context(|| format!("reading {STATS_SYSCTL}"))?
            .trim()
            .to_string();
        std::fs::write(STATS_SYSCTL, "1")
            .with_context(|| format!("writing 1 to {STATS_SYSCTL}"))?;
        Ok(Self { old })
    }
}

impl Drop for BpfStats {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(STATS_SYSCTL, &self.old) {
            eprintln!("bench: cannot restore {STATS_SYSCTL} to {}: {e}", self.old);
        }
    }
}

/// tracefs at /sys/kernel/tracing (bpftrace's tracepoint probes read their formats there);
/// mounted by the bench only if it was not, and unmounted on drop only then.
pub struct Tracefs {
    mounted_here: bool,
}

impl Tracefs {
    pub fn ensure() -> Result<Self> {
        if Path::new(TRACEFS).join("events").is_dir() {
            return Ok(Self {
                mounted_here: false,
            });
        }
        crate::util::run(
            std::process::Command::new("mount").args(["-t", "tracefs", "tracefs", TRACEFS]),
        )
        .with_context(|| format!("mounting tracefs at {TRACEFS} for bpftrace"))?;
        if !Path::new(TRACEFS)
            .join("events/sched/sched_process_exec")
            .is_dir()
        {
            let _ = crate::util::run(std::process::Command::new("umount").arg(TRACEFS));
            bail!("tracefs mounted at {TRACEFS} has no events/sched/sched_process_exec");
        }
        Ok(Self { mounted_here: true })
    }
}

impl Drop for Tracefs {
    fn drop(&mut self) {
        if self.mounted_here {
            if let Err(e) = crate::util::run(std::process::Command::new("umount").arg(TRACEFS)) {
                eprintln!("bench: cannot unmount {TRACEFS}: {e:#}");
            }
        }
    }
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT/SIGTERM set a flag the bench checks between steps (children in the same process
/// group get the signal too and end); the default handlers come back on drop.
pub struct Interrupts;

impl Interrupts {
    pub fn catch() -> Self {
        INTERRUPTED.store(false, Ordering::SeqCst);
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: the handler only stores to an atomic (async-signal-safe).
            unsafe {
                libc::signal(
                    sig,
                    on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
                )
            };
        }
        Self
    }
}

impl Drop for Interrupts {
    fn drop(&mut self) {
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: restoring the default disposition.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
    }
}

/// Fails once SIGINT or SIGTERM arrived.
pub fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}
