//! `storm cgroups` against the real kernel: each child runs inside a new cgroup in every
//! hierarchy it was given (the kernel's /proc/self/cgroup of the child says so), and every
//! cgroup is gone afterwards. The first test needs root (it creates cgroups); `cargo xtask test`
//! runs it as root.
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const STORM: &str = env!("CARGO_BIN_EXE_storm");

fn result(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).expect("storm wrote its result file");
    serde_json::from_str(&text).expect("storm result is JSON")
}

/// (hierarchy as /proc/self/cgroup names it, directory of this process's cgroup in it), from
/// /proc/self/mounts: cgroup2 ("" in /proc/self/cgroup) and each v1 hierarchy.
fn own_cgroup_dirs() -> Vec<(String, PathBuf)> {
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    let mounts = std::fs::read_to_string("/proc/self/mounts").expect("read /proc/self/mounts");
    let mut out = Vec::new();
    for m in mounts.lines() {
        let f: Vec<&str> = m.split(' ').collect();
        let (dir, fstype, opts) = (f[1], f[2], f[3]);
        let wanted: Option<Vec<&str>> = match fstype {
            "cgroup2" => Some(Vec::new()),
            "cgroup" => Some(
                opts.split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro" | "relatime" | "xattr"))
                    .filter(|o| !o.starts_with("release_agent"))
                    .collect(),
            ),
            _ => None,
        };
        let Some(mut wanted) = wanted else { continue };
        wanted.sort_unstable();
        for line in cgroup.lines() {
            let mut p = line.splitn(3, ':');
            let (_, ctrls, path) = (p.next(), p.next().unwrap_or(""), p.next().unwrap_or(""));
            let mut have: Vec<&str> = ctrls.split(',').filter(|c| !c.is_empty()).collect();
            have.sort_unstable();
            if have == wanted && !out.iter().any(|(c, _): &(String, PathBuf)| c == ctrls) {
                out.push((
                    ctrls.to_string(),
                    Path::new(dir).join(path.trim_start_matches('/')),
                ));
            }
        }
    }
    out
}

/// The directories in `dir`.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect()
}

/// Parent cgroups for the test, removed (with whatever storm left) on drop.
struct Parents(Vec<PathBuf>);

impl Drop for Parents {
    fn drop(&mut self) {
        for p in &self.0 {
            if p.is_dir() {
                for d in subdirs(p) {
                    let _ = std::fs::remove_dir(d);
                }
                let _ = std::fs::remove_dir(p);
            }
        }
    }
}

#[test]
fn children_run_in_a_new_cgroup_of_every_hierarchy_which_is_then_removed() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "creating cgroups needs root (euid {euid}): run `cargo xtask test`"
    );
    let name = format!("podtrace-storm-test-{}", std::process::id());
    let hierarchies = own_cgroup_dirs();
    let listed = std::fs::read_to_string("/proc/self/cgroup").expect("read /proc/self/cgroup");
    assert_eq!(
        hierarchies.len(),
        listed.lines().count(),
        "every hierarchy in /proc/self/cgroup is mounted and found: {hierarchies:?}"
    );
    let parents = Parents(hierarchies.iter().map(|(_, own)| own.join(&name)).collect());
    for ((_, own), p) in hierarchies.iter().zip(&parents.0) {
        std::fs::create_dir(p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if let Ok(v) = std::fs::read_to_string(own.join(f)) {
                if !v.trim().is_empty() {
                    std::fs::write(p.join(f), v.trim())
                        .unwrap_or_else(|e| panic!("write {}: {e}", p.join(f).display()));
                }
            }
        }
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("r.json");
    let seen = dir.path().join("cgroups");
    let script = format!("cat /proc/self/cgroup >> {}", seen.display());
    let mut cmd = Command::new(STORM);
    cmd.args(["cgroups", "--count", "3", "--tag", "7", "--first", "5"])
        .args(["--linger-ms", "300", "--progress-every", "1", "--out"])
        .arg(&out);
    for p in &parents.0 {
        cmd.arg("--parent").arg(p);
    }
    let t0 = Instant::now();
    let run = cmd
        .args(["--", "/bin/busybox", "sh", "-c", &script])
        .output()
        .expect("run storm cgroups");
    let took = t0.elapsed();
    assert!(
        run.status.success(),
        "storm cgroups failed: {}\n{}",
        run.status,
        String::from_utf8_lossy(&run.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&run.stdout),
        "cgroups 1\ncgroups 2\ncgroups 3\n"
    );
    let r = result(&out);
    assert_eq!(
        (r["started"].as_u64(), r["failed"].as_u64()),
        (Some(3), Some(0)),
        "{r}"
    );
    // The last cgroup lingers 300 ms after its child ended before storm removes it.
    assert!(took >= Duration::from_millis(300), "{took:?}");

    // What the kernel said inside each child: one line per hierarchy, naming the new cgroup.
    let text = std::fs::read_to_string(&seen).expect("children wrote /proc/self/cgroup");
    let lines: Vec<&str> = text.lines().collect();
    for (i, id) in (5u64..8).enumerate() {
        let leaf = format!("crio-{:016x}{id:048x}.scope", 7);
        let child: Vec<&str> = lines
            .iter()
            .copied()
            .filter(|l| l.ends_with(&format!("/{name}/{leaf}")))
            .collect();
        assert_eq!(
            child.len(),
            hierarchies.len(),
            "child {i} is in {leaf} in every hierarchy:\n{text}"
        );
        for (ctrls, _) in &hierarchies {
            assert!(
                child
                    .iter()
                    .any(|l| l.split(':').nth(1) == Some(ctrls.as_str())),
                "child {i}: no {ctrls:?} line for {leaf}:\n{text}"
            );
        }
    }
    for p in &parents.0 {
        let left = subdirs(p);
        assert!(left.is_empty(), "cgroups left behind: {left:?}");
    }
}

#[test]
fn children_that_cannot_join_fail_the_run_and_leave_nothing() {
    // A plain directory is no cgroup: the child finds no cgroup.procs to write to.
    let dir = tempfile::tempdir().expect("temp dir");
    let parent = dir.path().join("not-a-cgroup");
    std::fs::create_dir(&parent).expect("mkdir");
    let out = dir.path().join("r.json");
    let status = Command::new(STORM)
        .args(["cgroups", "--count", "2", "--out"])
        .arg(&out)
        .arg("--parent")
        .arg(&parent)
        .status()
        .expect("run storm cgroups");
    assert!(
        !status.success(),
        "children that cannot join must fail storm"
    );
    let r = result(&out);
    assert_eq!(
        (r["started"].as_u64(), r["failed"].as_u64()),
        (Some(2), Some(2)),
        "{r}"
    );
    let left = subdirs(&parent);
    assert!(left.is_empty(), "directories left behind: {left:?}");
}
