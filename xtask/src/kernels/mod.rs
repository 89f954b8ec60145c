//! `cargo xtask kernels`: podtrace on other kernels than the host's, under QEMU.
//!
//! 1. Tools (setup.rs style, idempotent): qemu-system-x86 (and qemu-system-arm for arm64), cpio,
//!    busybox-static, musl targets.
//! 2. Per architecture: the static (musl) podtrace of `cargo xtask image` and the scenario runner
//!    (`tests/src/bin/kernel-scenario`, also musl), packed with busybox into an initramfs.
//! 3. The newest Debian `cloud-amd64` kernel of the 5.10, 6.1 and 6.12 series and `cloud-arm64`
//!    of 6.1 and 6.12 (fetch.rs; cached under target/kernels; a kernel that cannot be fetched is
//!    a failure). `--arch amd64|arm64` picks the architectures; arm64 guests run under
//!    qemu-system-aarch64 (arch.rs), always TCG on an x86 host.
//! 4. Each kernel boots twice (boot.rs), with cgroup2 only (`v2`) and with cgroup v1 hierarchies
//!    only (`v1`): TCG (KVM only when /dev/kvm boots a stock kernel), one vCPU, at most two guests
//!    at a time, a timeout per boot. The runner checks podtrace's output in the guest and
//!    reports over the serial console.
//! 5. A table of kernel x mode x check (report.rs) on stdout and in target/kernels/report.md;
//!    fails when any cell fails. Serial logs: target/kernels/logs/<series>-<mode>.log.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::arch::Arch;
use crate::{setup, util};

mod arch;
mod boot;
mod fetch;
mod initramfs;
mod report;

use boot::{Accel, Boot};

pub use arch::{qemu, qemu_package};

pub const MODES: &[&str] = &["v2", "v1"];
/// A TCG boot runs podtrace six times (each configuration, and the memlock case): about a
/// minute here, two at a time, longer on a loaded machine; this leaves room.
const BOOT_TIMEOUT: Duration = Duration::from_secs(420);
/// A KVM boot reaches /init in a second or two; a PVM /dev/kvm hangs (or triple-faults).
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// Guests at a time (TCG is one host thread per vCPU: the CI machine has two cores).
const PARALLEL: usize = 2;

pub struct Opts {
    /// Refresh the apt lists even when they are younger than a day.
    pub refresh: bool,
    /// Only these series (default: all).
    pub series: Vec<String>,
    /// Only these modes (default: v2 and v1).
    pub modes: Vec<String>,
    /// Only the series of these architectures (default: all).
    pub archs: Vec<Arch>,
}

pub fn run(opts: &Opts) -> Result<()> {
    let t0 = Instant::now();
    let series = fetch::select(&opts.series, &opts.archs)?;
    let archs = used_archs(&series);
    let modes: Vec<&'static str> = if opts.modes.is_empty() {
        MODES.to_vec()
    } else {
        let mut v = Vec::new();
        for m in &opts.modes {
            v.push(
                *MODES
                    .iter()
                    .find(|x| *x == m)
                    .with_context(|| format!("--mode {m}: want one of {MODES:?}"))?,
            );
        }
        v
    };
    setup::kernel_lab(&archs)?;
    // The DaemonSet's capabilities, read from its manifest, for the runs "as deployed".
    let caps = crate::image::daemonset::capabilities()?;
    let extra_cmdline = format!("klab_caps={}", caps.join(","));
    let initrds = initramfs::build_for(&archs)?;

    util::step("kernels from deb.debian.org (private apt state in target/kernels/apt)")?;
    let fetched = fetch::kernels(&series, opts.refresh);
    let t_fetch = t0.elapsed();
    let logs = fetch::dir().join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    // KVM is probed with a kernel of the host's architecture only (arch.rs: no KVM otherwise).
    let first = fetched
        .iter()
        .find_map(|(_, k)| k.as_ref().ok().filter(|k| k.arch == Arch::host()));
    let host_initrd = initrds.iter().find(|(a, _)| *a == Arch::host());
    let accel = match host_initrd {
        Some((_, initrd)) => choose_accel(first, initrd, &logs),
        None => Accel::Tcg,
    };
    let t_probe = t0.elapsed() - t_fetch;

    let mut legend = Vec::new();
    let mut jobs: Vec<(String, &fetch::Kernel, &'static str)> = Vec::new();
    for (s, k) in &fetched {
        match k {
            Ok(k) => {
                legend.push(format!(
                    "{} = `{}` {} ({}, {})",
                    s.label(),
                    k.release,
                    k.version,
                    s.suites,
                    if k.downloaded { "downloaded" } else { "cached" }
                ));
                for m in &modes {
                    jobs.push((format!("{} {m}", s.label()), k, m));
                }
            }
            Err(e) => legend.push(format!("{} = FAILED to fetch: {e:#}", s.label())),
        }
    }
    util::step(&format!(
        "boot {} guests ({accel:?}, 1 vCPU, {PARALLEL} at a time, {} s timeout each)",
        jobs.len(),
        BOOT_TIMEOUT.as_secs()
    ))?;
    let reports = boot_all(&jobs, &initrds, accel, &logs, &extra_cmdline);

    // Columns in series x mode order, including kernels that could not be fetched.
    let mut cols = Vec::new();
    let mut reports = reports.into_iter();
    for (s, k) in &fetched {
        for m in &modes {
            let title = format!("{} {m}", s.label());
            let report = match k {
                Ok(_) => reports
                    .next()
                    .map(|(_, r)| r)
                    .ok_or_else(|| "no boot result".to_string()),
                Err(e) => Err(format!("kernel not fetched: {e:#}")),
            };
            cols.push(report::Column { title, report });
        }
    }
    let table = report::render(&legend, &cols);
    let support = report::support(&cols);
    let total = t0.elapsed();
    println!(
        "\n{support}\n(every check of every column: {})",
        fetch::dir().join("report.md").display()
    );
    let timing = format!(
        "whole run {:.0} s: tools, builds, initramfs and kernels {:.0} s, KVM probe {:.0} s, {} boots {:.0} s ({accel:?})",
        total.as_secs_f64(),
        t_fetch.as_secs_f64(),
        t_probe.as_secs_f64(),
        jobs.len(),
        (total - t_fetch - t_probe).as_secs_f64()
    );
    println!("{timing}; serial logs in {}", logs.display());
    let report_md = fetch::dir().join("report.md");
    std::fs::write(
        &report_md,
        format!(
            "# cargo xtask kernels\n\nAs deployed: {extra_cmdline}, 64 KiB RLIMIT_MEMLOCK, no_new_privs.\n\n{support}\n{}\n{timing}\n\n# Details\n{}",
            table.markdown,
            report::details(&cols)
        ),
    )
    .with_context(|| format!("writing {}", report_md.display()))?;
    if table.failures > 0 {
        bail!(
            "kernel matrix: {} failed cells (table above; details in {}, logs in {})",
            table.failures,
            report_md.display(),
            logs.display()
        );
    }
    Ok(())
}

/// The architectures of the selected series, the host's first.
fn used_archs(series: &[&fetch::Series]) -> Vec<Arch> {
    let mut v: Vec<Arch> = series.iter().map(|s| s.arch).collect();
    v.sort_by_key(|a| (*a != Arch::host(), *a));
    v.dedup();
    v
}

/// KVM only when /dev/kvm boots a stock kernel (a PVM /dev/kvm does not): a short probe boot
/// that only says `probe`. Otherwise TCG. The answer is kept for the host's boot
/// (target/kernels/kvm-probe, keyed by /proc/sys/kernel/random/boot_id and the kernel).
fn choose_accel(k: Option<&fetch::Kernel>, initrd: &Path, logs: &Path) -> Accel {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    if !usable {
        eprintln!("    no usable /dev/kvm: TCG");
        return Accel::Tcg;
    }
    let Some(k) = k else {
        eprintln!("    no kernel to probe /dev/kvm with: TCG");
        return Accel::Tcg;
    };
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let key = format!("{} {}", boot_id.trim(), k.release);
    let memo = fetch::dir().join("kvm-probe");
    if let Some(answer) = std::fs::read_to_string(&memo)
        .ok()
        .and_then(|m| m.strip_prefix(&format!("{key} ")).map(str::to_string))
    {
        let accel = if answer.starts_with("kvm") {
            Accel::Kvm
        } else {
            Accel::Tcg
        };
        eprintln!(
            "    /dev/kvm probed earlier in this host boot ({}): {accel:?}",
            answer.trim()
        );
        return accel;
    }
    let r = Boot {
        arch: k.arch,
        vmlinuz: &k.vmlinuz,
        initrd,
        mode: "probe",
        accel: Accel::Kvm,
        timeout: KVM_PROBE_TIMEOUT,
        log: logs.join("kvm-probe.log"),
        extra_cmdline: String::new(),
    }
    .run();
    let (accel, answer) = if r.probe {
        (
            Accel::Kvm,
            format!("kvm: booted {} in {:.1} s", k.release, r.secs),
        )
    } else {
        (
            Accel::Tcg,
            format!(
                "tcg: {} did not boot under KVM ({})",
                k.release,
                r.error.as_deref().unwrap_or("no probe answer")
            ),
        )
    };
    eprintln!("    /dev/kvm probe: {answer}");
    let _ = std::fs::write(&memo, format!("{key} {answer}\n"));
    accel
}

/// Boots every job, `PARALLEL` at a time; results in job order.
fn boot_all(
    jobs: &[(String, &fetch::Kernel, &'static str)],
    initrds: &[(Arch, PathBuf)],
    accel: Accel,
    logs: &Path,
    extra_cmdline: &str,
) -> Vec<(String, boot::Report)> {
    let next = AtomicUsize::new(0);
    let out: Mutex<Vec<Option<boot::Report>>> = Mutex::new(jobs.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL.min(jobs.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((title, k, mode)) = jobs.get(i) else {
                    break;
                };
                let log: PathBuf = logs.join(format!("{}-{mode}.log", k.series));
                // The initramfs and accelerator of the kernel's architecture (arch.rs).
                let r = match initrds.iter().find(|(a, _)| *a == k.arch) {
                    Some((_, initrd)) => Boot {
                        arch: k.arch,
                        vmlinuz: &k.vmlinuz,
                        initrd,
                        mode,
                        accel: if arch::accel_possible(k.arch, accel) {
                            accel
                        } else {
                            Accel::Tcg
                        },
                        timeout: BOOT_TIMEOUT,
                        log: log.clone(),
                        extra_cmdline: extra_cmdline.to_string(),
                    }
                    .run_with_retry(),
                    None => boot::Report {
                        error: Some(format!("no initramfs for {}", k.arch)),
                        ..boot::Report::default()
                    },
                };
                let failed = r.results.iter().filter(|(_, ok, _)| !ok).count();
                eprintln!(
                    "    {title} ({}): {} of {} checks pass, {:.0} s{}{}",
                    k.release,
                    r.results.len() - failed,
                    r.plan.len(),
                    r.secs,
                    r.error
                        .as_ref()
                        .map_or(String::new(), |e| format!(", BOOT FAILED: {e}")),
                    r.retried
                        .as_ref()
                        .map_or(String::new(), |e| format!(" (booted again after: {e})"))
                );
                if let Ok(mut o) = out.lock() {
                    o[i] = Some(r);
                }
            });
        }
    });
    let done = out.into_inner().unwrap_or_default();
    jobs.iter()
        .zip(done)
        .map(|((title, _, _), r)| {
            (
                title.clone(),
                r.unwrap_or_else(|| boot::Report {
                    error: Some("the boot thread did not report".to_string()),
                    ..boot::Report::default()
                }),
            )
        })
        .collect()
}
