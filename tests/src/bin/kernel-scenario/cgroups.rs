//! The guest's cgroup mounts for a boot's mode, and cgroups created in every mounted hierarchy.
//!
//! v2: cgroup2 on /sys/fs/cgroup. v1: a tmpfs on /sys/fs/cgroup and one `cgroup` mount per
//! controller set (`pids`, `memory`, `cpu,cpuacct`, ..., `name=systemd`), never cgroup2, like a
//! RHEL 8 / OpenShift 4.12 node. A controller the kernel does not offer for v1 (6.12 has no
//! `CONFIG_MEMCG_V1`, no `CONFIG_CPUSETS_V1`) is left out and named in the detail line.
use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

pub const ROOT: &str = "/sys/fs/cgroup";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    V2,
    V1,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::V2 => "v2",
            Mode::V1 => "v1",
        }
    }
}

/// One mounted hierarchy.
#[derive(Clone, Debug)]
pub struct Hierarchy {
    /// What the contract's `cgroup_hierarchy` field says for it: `v2`, or `v1:<controllers as in
    /// /proc/PID/cgroup>` (e.g. `v1:cpu,cpuacct`, `v1:name=systemd`).
    pub name: String,
    pub dir: PathBuf,
}

/// v1 mounts: (mount options, directory under /sys/fs/cgroup), as systemd lays them out.
const V1: &[(&str, &str)] = &[
    ("none,name=systemd", "systemd"),
    ("pids", "pids"),
    ("memory", "memory"),
    ("cpu,cpuacct", "cpu,cpuacct"),
    ("devices", "devices"),
    ("freezer", "freezer"),
    ("blkio", "blkio"),
    ("net_cls,net_prio", "net_cls,net_prio"),
    ("perf_event", "perf_event"),
    ("hugetlb", "hugetlb"),
    ("cpuset", "cpuset"),
];

fn mount(source: &str, target: &Path, fstype: &str, data: Option<&str>) -> Result<()> {
    std::fs::create_dir_all(target).with_context(|| format!("mkdir {}", target.display()))?;
    let c = |s: &str| CString::new(s).context("NUL in a mount argument");
    let src = c(source)?;
    let tgt = c(&target.display().to_string())?;
    let fs = c(fstype)?;
    let data = data.map(c).transpose()?;
    let data_ptr = data
        .as_ref()
        .map_or(std::ptr::null(), |d| d.as_ptr().cast::<libc::c_void>());
    // SAFETY: every pointer is a valid NUL-terminated string (or null for data) for the call.
    let rc = unsafe { libc::mount(src.as_ptr(), tgt.as_ptr(), fs.as_ptr(), 0, data_ptr) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        bail!(
            "mount -t {fstype} -o {} {source} {}: {err}",
            data.as_ref()
                .map_or(String::new(), |d| d.to_string_lossy().into_owned()),
            target.display()
        );
    }
    Ok(())
}

/// Mounts the hierarchies of `mode`; returns them and a line saying what was (not) mounted.
pub fn mount_for(mode: Mode) -> Result<(Vec<Hierarchy>, String)> {
    match mode {
        Mode::V2 => {
            mount("cgroup2", Path::new(ROOT), "cgroup2", None)?;
            Ok((
                vec![Hierarchy {
                    name: "v2".to_string(),
                    dir: PathBuf::from(ROOT),
                }],
                format!("cgroup2 on {ROOT}"),
            ))
        }
        Mode::V1 => {
            mount("cgroup", Path::new(ROOT), "tmpfs", Some("mode=755"))?;
            let mut mounted = Vec::new();
            let mut missing = Vec::new();
            for (opts, dir) in V1 {
                let target = Path::new(ROOT).join(dir);
                match mount("cgroup", &target, "cgroup", Some(opts)) {
                    Ok(()) => mounted.push((*opts, target)),
                    Err(e) => {
                        missing.push(format!("{opts} ({e:#})"));
                        let _ = std::fs::remove_dir(&target);
                    }
                }
            }
            let names = v1_names(&std::fs::read_to_string("/proc/self/cgroup")?);
            let mut hs = Vec::new();
            for (opts, dir) in mounted {
                let want = controller_set(opts);
                let name = names
                    .iter()
                    .find(|n| controller_set(n) == want)
                    .with_context(|| format!("{opts} is mounted but not in /proc/self/cgroup"))?;
                hs.push(Hierarchy {
                    name: format!("v1:{name}"),
                    dir,
                });
            }
            if hs.is_empty() {
                bail!("no v1 hierarchy could be mounted: {}", missing.join("; "));
            }
            let mut detail = format!(
                "v1 only: {}",
                hs.iter()
                    .map(|h| h.name.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            );
            if !missing.is_empty() {
                detail.push_str(&format!(
                    "; not offered by this kernel: {}",
                    missing.join(", ")
                ));
            }
            Ok((hs, detail))
        }
    }
}

/// The controller field of every v1 line of /proc/PID/cgroup (`3:cpu,cpuacct:/` -> `cpu,cpuacct`).
pub fn v1_names(proc_cgroup: &str) -> Vec<String> {
    proc_cgroup
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_id, ctl) = (f.next()?, f.next()?);
            (!ctl.is_empty()).then(|| ctl.to_string())
        })
        .collect()
}

fn controller_set(s: &str) -> Vec<&str> {
    let mut v: Vec<&str> = s.split(',').filter(|c| *c != "none").collect();
    v.sort_unstable();
    v
}

/// Checks the mounts are what the mode promises: v2 has a `0::` line and a cgroup2 mount; v1 has
/// neither (no cgroup2 anywhere), only the v1 hierarchies.
pub fn verify(mode: Mode) -> Result<()> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let cgroup2 = mountinfo.lines().any(|l| l.contains(" - cgroup2 "));
    let own = std::fs::read_to_string("/proc/self/cgroup")?;
    let dfl_line = own.lines().any(|l| l.starts_with("0::"));
    match mode {
        Mode::V2 if !(cgroup2 && dfl_line) => {
            bail!("v2 mode without a cgroup2 mount / 0:: line: {own}")
        }
        Mode::V1 if cgroup2 || dfl_line => {
            bail!("v1 mode, but cgroup2 is visible: mounted {cgroup2}, /proc/self/cgroup {own:?}")
        }
        _ => Ok(()),
    }
}

/// `mkdir -p` of the absolute cgroup path `rel` in every hierarchy; returns each directory's
/// inode (what the kernel calls the cgroup id), by hierarchy name.
pub fn create(hs: &[Hierarchy], rel: &str) -> Result<BTreeMap<String, u64>> {
    let mut inodes = BTreeMap::new();
    for h in hs {
        let dir = h.dir.join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(&dir).with_context(|| format!("mkdir -p {}", dir.display()))?;
        if h.name.split([':', ',']).any(|c| c == "cpuset") {
            inherit_cpuset(&h.dir, rel)?;
        }
        let ino = std::fs::metadata(&dir)
            .with_context(|| format!("stat {}", dir.display()))?
            .ino();
        inodes.insert(h.name.clone(), ino);
    }
    Ok(inodes)
}

/// A new v1 cpuset cgroup has empty `cpuset.cpus` / `cpuset.mems`, and a task cannot join it until
/// they are set (runc does the same): copy them down from the parent at every level.
fn inherit_cpuset(root: &Path, rel: &str) -> Result<()> {
    let mut parent = root.to_path_buf();
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        let child = parent.join(part);
        for f in ["cpuset.cpus", "cpuset.mems"] {
            let mine = std::fs::read_to_string(child.join(f)).unwrap_or_default();
            if mine.trim().is_empty() {
                let theirs = std::fs::read_to_string(parent.join(f))
                    .with_context(|| format!("reading {}", parent.join(f).display()))?;
                std::fs::write(child.join(f), theirs.trim())
                    .with_context(|| format!("writing {}", child.join(f).display()))?;
            }
        }
        parent = child;
    }
    Ok(())
}

/// The `cgroup.procs` files of `rel` in every hierarchy.
pub fn procs_files(hs: &[Hierarchy], rel: &str) -> Vec<String> {
    hs.iter()
        .map(|h| {
            h.dir
                .join(rel.trim_start_matches('/'))
                .join("cgroup.procs")
                .display()
                .to_string()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_names_skip_the_unified_line() {
        let text = "12:name=systemd:/\n5:cpu,cpuacct:/a\n3:pids:/\n0::/\n";
        assert_eq!(v1_names(text), ["name=systemd", "cpu,cpuacct", "pids"]);
    }

    #[test]
    fn controller_sets_ignore_order_and_none() {
        assert_eq!(controller_set("none,name=systemd"), ["name=systemd"]);
        assert_eq!(controller_set("cpuacct,cpu"), controller_set("cpu,cpuacct"));
    }
}
