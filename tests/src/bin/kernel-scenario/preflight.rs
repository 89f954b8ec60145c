//! `podtrace check` in the guest, where it must pass and where it must fail:
//!
//! - as deployed (the manifest's capabilities, no_new_privs, 64 KiB memlock): exit 0, the
//!   programs loaded on the first path (tp-btf + ring-buffer);
//! - without CAP_SYS_RESOURCE at 64 KiB: exit 1 with the memlock line failing where the kernel
//!   charges BPF memory to RLIMIT_MEMLOCK (asked of the kernel, memlock.rs), exit 0 elsewhere;
//! - in a pid namespace of its own (`unshare --pid --fork --mount-proc`): exit 1 with the pid
//!   namespace line failing and naming hostPID.
use std::process::Command;

use serde_json::Value;

use crate::checks::{fail, pass, Outcome};
use crate::daemon::{Launch, CONTAINER_MEMLOCK, PODTRACE};
use crate::memlock;

/// The checks, in the order reported.
pub const CHECKS: &[&str] = &["check: deployed", "check: memlock", "check: pidns"];

/// (exit code, the JSON report) of `podtrace check --json --no-cri` started by `cmd`.
fn run(mut cmd: Command) -> Result<(i32, Value), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run podtrace check: {e}"))?;
    let code = out.status.code().unwrap_or(-1);
    let report = serde_json::from_slice::<Value>(&out.stdout).map_err(|e| {
        format!(
            "exit {code}, not a JSON report ({e}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    Ok((code, report))
}

fn check_cmd(launch: &Launch) -> Command {
    let mut c = Command::new(PODTRACE);
    c.args(["check", "--json", "--no-cri"]);
    launch.apply(&mut c);
    c
}

/// The line about `item` (verdict, what).
fn item<'a>(report: &'a Value, item: &str) -> Option<(&'a str, &'a str)> {
    report["lines"]
        .as_array()?
        .iter()
        .find(|l| l["item"] == item)
        .map(|l| {
            (
                l["verdict"].as_str().unwrap_or("?"),
                l["what"].as_str().unwrap_or(""),
            )
        })
}

fn deployed(caps: &[u32]) -> Outcome {
    let launch = Launch {
        caps: Some(caps.to_vec()),
        memlock: Some(CONTAINER_MEMLOCK),
        ..Launch::default()
    };
    match run(check_cmd(&launch)) {
        Ok((0, r)) => match item(&r, "attach") {
            Some(("ok", what)) if what.contains("tp-btf + ring-buffer") => {
                pass(format!("exit 0; attach: {what}"))
            }
            other => fail(format!("exit 0 but the attach line is {other:?}")),
        },
        Ok((code, r)) => fail(format!("exit {code}: {}", r["lines"])),
        Err(e) => fail(e),
    }
}

fn memlock_short(caps: &[(String, u32)]) -> Outcome {
    let charges = match memlock::kernel_charges() {
        Ok(c) => c,
        Err(e) => return fail(format!("ground truth: {e:#}")),
    };
    let (code, r) = match run(check_cmd(&memlock::short_launch(caps))) {
        Ok(x) => x,
        Err(e) => return fail(e),
    };
    let line = item(&r, "memlock");
    match (charges, code, line) {
        (true, 1, Some(("fail", what))) if what.contains("RLIMIT_MEMLOCK is 64 KiB") => pass(
            format!("the kernel charges memlock: exit 1, memlock fails: {what}"),
        ),
        (false, 0, Some((v, what))) if v != "fail" => pass(format!(
            "the kernel does not charge memlock: exit 0, memlock {v}: {what}"
        )),
        _ => fail(format!(
            "kernel charges memlock: {charges}; exit {code}, memlock line {line:?}"
        )),
    }
}

fn own_pidns() -> Outcome {
    let mut c = Command::new("/bin/unshare");
    c.args([
        "--pid",
        "--fork",
        "--mount-proc",
        PODTRACE,
        "check",
        "--json",
        "--no-cri",
    ]);
    match run(c) {
        Ok((1, r)) => match item(&r, "pid-namespace") {
            Some(("fail", what)) if what.contains("hostPID") => pass(format!("exit 1: {what}")),
            other => fail(format!("exit 1 but the pid-namespace line is {other:?}")),
        },
        Ok((code, r)) => fail(format!("want exit 1, got {code}: {}", r["lines"])),
        Err(e) => fail(e),
    }
}

/// Every check, in `CHECKS` order.
pub fn all(caps: &Result<Vec<(String, u32)>, String>) -> Vec<(&'static str, Outcome)> {
    let (d, m) = match caps {
        Ok(c) => (
            deployed(&c.iter().map(|(_, n)| *n).collect::<Vec<_>>()),
            memlock_short(c),
        ),
        Err(e) => (fail(e.clone()), fail(e.clone())),
    };
    vec![(CHECKS[0], d), (CHECKS[1], m), (CHECKS[2], own_pidns())]
}
