//! The real cri-o 1.25.5 (OpenShift 4.12's) of `../shared/crio` (or `$PODTRACE_CRIO_LAB`), for
//! [`super::CriLab::crio`]: `lab.sh up` starts it (one per box, on fixed paths: the socket
//! /var/run/crio/crio.sock, storage, /kubepods), `lab.sh down` stops it and removes what it
//! made, and `lab.sh leftovers` must then print nothing. Pods and containers are made through
//! the CRI by the lab's own client, as for containerd.
//!
//! One cri-o per box, and it shares /kubepods (whose leftovers `lab.sh down` checks) with the
//! containerd CRI lab: a [`KubeLock`] (an flock on a file in /var/tmp) serialises every
//! kubelet-style lab, cri-o's and containerd's, across threads and test processes, for as
//! long as the lab lives.
use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::cmd;

/// The socket `lab.sh up` starts cri-o on.
pub const SOCKET: &str = "/var/run/crio/crio.sock";
/// cri-o's state dir (`$CRIO_LAB` of lab.sh, its default).
pub const STATE: &str = "/var/tmp/podtrace-crio/lab";
/// Where lab.sh unpacks crio, pinns and crictl (`$CRIO_LAB_BIN`, its default).
pub const BIN: &str = "/var/tmp/podtrace-crio/bin";
/// The handler cri-o's config maps to a runc wrapper that clamps negative oom_score_adj
/// (root here lacks CAP_SYS_RESOURCE): needed for a pod with an infra container.
pub const OOM_CLAMP_HANDLER: &str = "runc-oomclamp";
const LOCK: &str = "/var/tmp/podtrace-kubelet-labs.lock";

/// The lab's directory: `$PODTRACE_CRIO_LAB`, or `../shared/crio` beside the workspace.
/// Panics naming what is missing (the tests that need cri-o fail, never skip).
pub fn dir() -> PathBuf {
    let d = match std::env::var_os("PODTRACE_CRIO_LAB") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/crio"),
    };
    let lab = d.join("lab.sh");
    assert!(
        lab.is_file(),
        "the cri-o lab is missing: no {} (the tests of a real cri-o need ../shared/crio beside \
         the workspace, or PODTRACE_CRIO_LAB naming a directory with lab.sh and its tarball)",
        lab.display()
    );
    d
}

/// `lab.sh <args>`, its output kept; panics with it when it fails.
pub fn lab_sh(args: &[&str]) -> String {
    let d = dir();
    let out = Command::new("bash")
        .arg(d.join("lab.sh"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}/lab.sh: {e}", d.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "lab.sh {} failed ({}):\n{text}",
        args.join(" "),
        out.status
    );
    text
}

/// The exclusive use of the box's kubelet-style labs (the flock is released when the file
/// closes).
pub struct KubeLock {
    _locked: File,
}

impl KubeLock {
    pub fn acquire() -> Self {
        let f = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK)
            .unwrap_or_else(|e| panic!("open {LOCK}: {e}"));
        // SAFETY: flock on a descriptor we own; blocks until the lock is ours.
        let rc = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(rc, 0, "flock {LOCK}: {}", std::io::Error::last_os_error());
        Self { _locked: f }
    }
}

/// `lab.sh up` (a `down` first, for what an earlier run left).
pub fn up() {
    lab_sh(&["down"]);
    lab_sh(&["up"]);
}

/// `lab.sh down`, then what `lab.sh leftovers` lists (empty when clean).
pub fn down() -> Result<(), String> {
    let d = dir();
    let out = Command::new("bash")
        .arg(d.join("lab.sh"))
        .arg("down")
        .output()
        .map_err(|e| format!("cannot run lab.sh down: {e}"))?;
    let left = Command::new("bash")
        .arg(d.join("lab.sh"))
        .arg("leftovers")
        .output()
        .map_err(|e| format!("cannot run lab.sh leftovers: {e}"))?;
    let left = String::from_utf8_lossy(&left.stdout).trim().to_string();
    if !out.status.success() || !left.is_empty() {
        return Err(format!(
            "lab.sh down ({}): {}{}\nleft behind: {left}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(())
}

/// cri-o's pid, from lab.sh's state.
pub fn crio_pid() -> u32 {
    std::fs::read_to_string(Path::new(STATE).join("crio.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// cri-o's log, for messages.
pub fn log() -> PathBuf {
    Path::new(STATE).join("crio.log")
}

/// conmon's pid of container `id`: the pidfile cri-o passes it (`-P`), the ground truth.
pub fn conmon_pid(id: &str) -> Option<u32> {
    std::fs::read_to_string(format!(
        "/run/containers/storage/overlay-containers/{id}/userdata/conmon-pidfile"
    ))
    .ok()?
    .trim()
    .parse()
    .ok()
}

/// The lab's crictl, talking to `endpoint`.
pub fn crictl(endpoint: &str) -> Command {
    let mut c = Command::new(Path::new(BIN).join("crictl"));
    c.args(["--runtime-endpoint", endpoint, "--timeout", "30s"]);
    c
}

/// A streaming exec (`crictl exec` without `--sync`: kubectl exec's path, no ExecSync): cri-o
/// runs `runc exec` itself, containerd's shim does. (exit code, stdout).
pub fn exec_streaming(endpoint: &str, id: &str, argv: &[&str]) -> (i32, String) {
    let out = crictl(endpoint)
        .arg("exec")
        .arg(id)
        .args(argv)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {BIN}/crictl: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// kubelet's pod log directory, which conmon needs to exist.
pub fn pod_log_dir(namespace: &str, name: &str, uid: &str) -> PathBuf {
    PathBuf::from(format!("/var/log/pods/{namespace}_{name}_{uid}"))
}

/// Creates the pod cgroup in every hierarchy (kubelet's QoS and pod managers do this before
/// RunPodSandbox with the cgroupfs driver).
pub fn make_pod_cgroup(path: &str) {
    for dir in super::cgroup::dirs_everywhere(path) {
        let mut cur = PathBuf::new();
        for part in dir.components() {
            let parent = cur.clone();
            cur.push(part);
            if cur.exists() {
                continue;
            }
            std::fs::create_dir(&cur)
                .unwrap_or_else(|e| panic!("create cgroup dir {}: {e}", cur.display()));
            // A v1 cpuset child starts with no cpus/mems: copy them down.
            for f in ["cpuset.cpus", "cpuset.mems"] {
                if cur.join(f).exists() {
                    if let Ok(v) = std::fs::read_to_string(parent.join(f)) {
                        let _ = std::fs::write(cur.join(f), v.trim());
                    }
                }
            }
        }
    }
}

/// Removes a pod cgroup and what cri-o leaves in it (`crio-conmon-<id>` with cgroupfs, the
/// dropped infra's `crio-<sandbox id>`), deepest first, in every hierarchy.
pub fn remove_pod_cgroup(path: &str) -> Result<(), String> {
    let mut errors = Vec::new();
    for dir in super::cgroup::dirs_everywhere(path) {
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    if let Err(err) = std::fs::remove_dir(e.path()) {
                        errors.push(format!("rmdir {}: {err}", e.path().display()));
                    }
                }
            }
        }
        match std::fs::remove_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => errors.push(format!("rmdir {}: {e}", dir.display())),
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// For messages: cri-o's log.
pub fn log_for_message() -> String {
    cmd::read_for_message(&log())
}
