//! The marker protocol on the serial console, read by `xtask/src/kernels/boot.rs`.
//!
//! Boot output is noisy (kernel messages, podtrace's log, busybox), so every message for the
//! host is one line `KLAB <json object>`, written with a single `write` and flushed:
//!
//! - `{"kind":"start","kernel":"<uname -r>","mode":"v2"}`
//! - `{"kind":"plan","checks":["cgroups", ...]}`: every check this boot will report, in order
//! - `{"kind":"result","check":"exit_code","pass":true,"detail":"..."}`: one per planned check
//! - `{"kind":"done"}`: all results are out (the host fails a boot that never says this)
//! - `{"kind":"probe"}`: answer to `klab_mode=probe` (the host's "does KVM boot?" test)
//!
//! Anything else on the console (prefixed `podtrace| `, `event| `, or not at all) is for the log.
use std::io::Write;

use serde_json::{json, Value};

pub const PREFIX: &str = "KLAB ";

fn emit(v: &Value) {
    let line = format!("{PREFIX}{v}\n");
    let mut out = std::io::stdout().lock();
    // The console is all we have: if writing to it fails there is nobody to tell.
    let _ = out.write_all(line.as_bytes());
    let _ = out.flush();
}

pub fn start(kernel: &str, mode: &str) {
    emit(&json!({"kind": "start", "kernel": kernel, "mode": mode}));
}

pub fn plan(checks: &[&str]) {
    emit(&json!({"kind": "plan", "checks": checks}));
}

pub fn result(check: &str, pass: bool, detail: &str) {
    emit(&json!({"kind": "result", "check": check, "pass": pass, "detail": detail}));
}

pub fn done() {
    emit(&json!({"kind": "done"}));
}

pub fn probe() {
    emit(&json!({"kind": "probe"}));
}

/// A line for the log only (not parsed by the host), e.g. `event| {...}`.
pub fn log(prefix: &str, text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{prefix}| {text}");
    let _ = out.flush();
}
