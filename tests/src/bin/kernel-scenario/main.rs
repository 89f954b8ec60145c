//! `kernel-scenario`: what `cargo xtask kernels` runs in each QEMU guest (the initramfs's /init
//! starts `kernel-scenario vm`, then powers off). Static (musl), because the initramfs holds only
//! busybox, podtrace and this.
//!
//! `vm`: reads the mode from the kernel command line (`klab_mode=v2|v1|probe`) and the
//! DaemonSet's capabilities (`klab_caps=`), mounts the cgroup hierarchies of that mode, checks
//! RLIMIT_MEMLOCK as deployed (memlock.rs) and `podtrace check` (preflight.rs), then for each
//! configuration (configs.rs: root, as
//! deployed, each forced attach type x transport) starts podtrace, runs the scenarios
//! (scenario.rs), stops podtrace, replays its trace, and checks every line it printed against
//! the scenarios' ground truth (checks.rs). Results go to the serial console in the marker
//! protocol of proto.rs.
//! `threads N`: the thread scenario's child (N threads, prints its pid and their tids).
mod cgroups;
mod checks;
mod configs;
mod daemon;
mod memlock;
mod preflight;
mod proto;
mod scenario;

use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use cgroups::Mode;
use checks::{fail, pass, Outcome};

/// Under TCG podtrace needs several seconds to attach (over 3 s on 6.1).
const ATTACH_LIMIT: Duration = Duration::from_secs(90);
const STOP_LIMIT: Duration = Duration::from_secs(60);
const WORKDIR: &str = "/run/klab";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let code = match args.get(1).map(String::as_str) {
        Some("vm") => {
            vm();
            0
        }
        Some("leader-exit") => {
            let code = |i: usize| args.get(i).and_then(|n| n.parse().ok()).unwrap_or(0);
            scenario::leader_exit_child(code(2), code(3))
        }
        Some(memlock::PROBE_ARG) => memlock::probe_child(),
        Some("threads") => {
            let n = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(4);
            match scenario::thread_child(n) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("kernel-scenario threads: {e:#}");
                    1
                }
            }
        }
        _ => {
            eprintln!("usage: kernel-scenario vm | threads N");
            2
        }
    };
    std::process::exit(code);
}

fn mode_from_cmdline(cmdline: &str) -> Result<Option<Mode>> {
    match cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("klab_mode="))
    {
        Some("v2") => Ok(Some(Mode::V2)),
        Some("v1") => Ok(Some(Mode::V1)),
        Some("probe") => Ok(None),
        other => bail!("kernel command line has klab_mode={other:?}, want v2, v1 or probe"),
    }
}

/// Reports every planned check exactly once, whatever fails on the way, then `done`.
fn vm() {
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let names: Vec<&str> = configs::ALL.iter().map(|c| c.name).collect();
    let plan = checks::plan(&names);
    let plan_refs: Vec<&str> = plan.iter().map(String::as_str).collect();
    let mode = match mode_from_cmdline(&cmdline) {
        Ok(Some(m)) => m,
        Ok(None) => {
            proto::probe();
            return;
        }
        Err(e) => {
            proto::start(&kernel, "?");
            proto::plan(&plan_refs);
            for c in &plan {
                proto::result(c, false, &format!("{e:#}"));
            }
            proto::done();
            return;
        }
    };
    let caps = configs::manifest_caps(&cmdline).map_err(|e| format!("{e:#}"));
    proto::start(&kernel, mode.as_str());
    proto::plan(&plan_refs);
    let mut reported: Vec<String> = Vec::new();
    let mut report = |check: String, o: Outcome| {
        proto::result(&check, o.pass, &o.detail);
        reported.push(check);
    };
    let reason = run(mode, &caps, &mut report);
    // Whatever was not reached fails with the reason the run stopped.
    let why = reason
        .err()
        .map_or_else(|| "not run".to_string(), |e| format!("not run: {e:#}"));
    for c in &plan {
        if !reported.contains(c) {
            proto::result(c, false, &why);
        }
    }
    proto::done();
}

fn run(
    mode: Mode,
    caps: &Result<Vec<(String, u32)>, String>,
    report: &mut impl FnMut(String, Outcome),
) -> Result<()> {
    let hs = match cgroups::mount_for(mode).and_then(|(hs, detail)| {
        cgroups::verify(mode)?;
        Ok((hs, detail))
    }) {
        Ok((hs, detail)) => {
            report("cgroups".into(), pass(detail));
            hs
        }
        Err(e) => {
            report("cgroups".into(), fail(format!("{e:#}")));
            return Err(e.context("cgroup mounts"));
        }
    };
    report(
        "memlock".into(),
        match caps {
            Ok(caps) => memlock::check(caps, WORKDIR),
            Err(e) => fail(e.clone()),
        },
    );
    for (check, o) in preflight::all(caps) {
        report(check.to_string(), o);
    }
    for cfg in configs::ALL {
        let mut each = |check: &str, o: Outcome| report(format!("{}: {check}", cfg.name), o);
        if let Err(e) = run_config(cfg, mode, &hs, caps, &mut each) {
            for check in checks::PER_CONFIG {
                each(check, fail(format!("not run: {e:#}")));
            }
        }
    }
    Ok(())
}

/// One configuration: podtrace started its way, the scenarios, the checks. Checks reported
/// before an error are kept; the caller fails the rest with the error.
fn run_config(
    cfg: &configs::Config,
    mode: Mode,
    hs: &[cgroups::Hierarchy],
    caps: &Result<Vec<(String, u32)>, String>,
    report: &mut impl FnMut(&str, Outcome),
) -> Result<()> {
    let launch = cfg.launch(caps)?;
    let dir = format!("{WORKDIR}/{}", cfg.name);
    let mut d = daemon::Daemon::start(&dir, &launch)?;
    match d.wait_attached(ATTACH_LIMIT) {
        Ok(t) => report(
            "attach",
            pass(format!("attached after {:.1} s", t.as_secs_f64())),
        ),
        Err(e) => {
            report("attach", fail(format!("{e:#}")));
            return Err(e);
        }
    }
    let daemon_pid = d.pid();
    let facts = scenario::run_all(hs);
    // Let the last events reach the kernel's buffers before the drain at exit.
    std::thread::sleep(Duration::from_millis(500));
    let stopped = d.stop(STOP_LIMIT);
    let summary = std::fs::read_to_string(&d.summary)
        .ok()
        .and_then(|s| serde_json::from_str::<Value>(&s).ok());
    report(
        "path",
        checks::path(cfg.path, &d.stderr(), summary.as_ref()),
    );
    match stopped {
        Ok(s) if s.success() => report("stop", pass("SIGINT: exit status 0")),
        Ok(s) => report("stop", fail(format!("SIGINT: {s}"))),
        Err(e) => report("stop", fail(format!("{e:#}"))),
    }
    let text = std::fs::read_to_string(&d.output)
        .with_context(|| format!("reading {}", d.output.display()))?;
    let (events, schema) = validate(&text);
    report("schema", schema);
    report("replay", replay(&d.trace, &text));
    for e in &events {
        proto::log("event", &e.to_string());
    }
    if events.iter().any(|e| e["pid"] == daemon_pid) {
        proto::log("note", "podtrace reported its own pid");
    }
    let out = checks::Output {
        events,
        summary,
        stderr: d.stderr(),
    };
    for (check, o) in checks::all(mode, &out, &facts) {
        report(check, o);
    }
    Ok(())
}

/// `podtrace replay` of the run's trace prints what the run printed, byte for byte.
fn replay(trace: &std::path::Path, live: &str) -> Outcome {
    let out = match Command::new(daemon::PODTRACE)
        .arg("replay")
        .arg(trace)
        .output()
    {
        Ok(o) => o,
        Err(e) => return fail(format!("cannot run podtrace replay: {e}")),
    };
    if !out.status.success() {
        return fail(format!(
            "podtrace replay ended with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    if out.stdout == live.as_bytes() {
        return pass(format!("{} lines, byte-identical", live.lines().count()));
    }
    let first = live
        .lines()
        .zip(String::from_utf8_lossy(&out.stdout).lines())
        .position(|(a, b)| a != b);
    fail(format!(
        "replay differs from the live output ({} vs {} bytes; first differing line {first:?})",
        out.stdout.len(),
        live.len()
    ))
}

/// Every line is JSON and valid against `podtrace schema`; returns the lines that parsed.
fn validate(text: &str) -> (Vec<Value>, Outcome) {
    let schema = match Command::new(daemon::PODTRACE).arg("schema").output() {
        Ok(o) if o.status.success() => serde_json::from_slice::<Value>(&o.stdout).ok(),
        _ => None,
    };
    let Some(schema) = schema else {
        return (
            parse_lines(text).0,
            fail("`podtrace schema` did not print JSON"),
        );
    };
    let validator = match jsonschema::validator_for(&schema) {
        Ok(v) => v,
        Err(e) => {
            return (
                parse_lines(text).0,
                fail(format!("schema does not compile: {e}")),
            )
        }
    };
    let (events, mut errs) = parse_lines(text);
    for (i, e) in events.iter().enumerate() {
        if let Err(err) = validator.validate(e) {
            errs.push(format!("event {}: {err}: {}", i + 1, checks::brief(e)));
        }
    }
    let outcome = if events.is_empty() {
        fail("no events at all")
    } else if errs.is_empty() {
        pass(format!("{} lines, all valid", events.len()))
    } else {
        let n = errs.len();
        errs.truncate(3);
        fail(format!("{n} invalid lines: {}", errs.join("; ")))
    };
    (events, outcome)
}

fn parse_lines(text: &str) -> (Vec<Value>, Vec<String>) {
    let mut events = Vec::new();
    let mut errs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) => events.push(v),
            Err(e) => errs.push(format!("line {}: not JSON ({e})", i + 1)),
        }
    }
    (events, errs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_comes_from_the_command_line() {
        let m = |s: &str| mode_from_cmdline(s).expect("a mode");
        assert_eq!(m("console=ttyS0 klab_mode=v1 quiet"), Some(Mode::V1));
        assert_eq!(m("klab_mode=v2"), Some(Mode::V2));
        assert_eq!(m("klab_mode=probe"), None);
        assert!(mode_from_cmdline("console=ttyS0").is_err());
    }
}
