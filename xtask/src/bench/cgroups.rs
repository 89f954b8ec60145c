//! The cgroup hierarchies of this host and a tree of cgroups the bench owns in each of them,
//! for the churn workload (`storm cgroups`). Runtimes create a container's cgroup in the
//! cgroup2 hierarchy and, on hybrid or v1 hosts, in every v1 controller hierarchy: so does the
//! bench. Its tree sits below the bench's own cgroup in each hierarchy (so the workload stays
//! inside whatever limits and accounting the bench itself is under), in a kubelet systemd
//! layout, so that podtrace attributes each churned cgroup to a cri-o container of one pod.
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How long a churned cgroup stays after its process ended. A tracer can only resolve a
/// cgroup id to its path while the cgroup exists, and podtrace reads its ring buffer at least
/// every 100 ms; runtimes, too, remove a container's cgroup only after its processes ended.
pub const LINGER: Duration = Duration::from_secs(1);

/// One mounted cgroup hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    /// "v2", or the v1 controllers as /proc/PID/cgroup names them ("memory", "cpu,cpuacct",
    /// "name=systemd").
    pub name: String,
    /// Where it is mounted.
    pub mount: PathBuf,
    /// This process's cgroup in it, relative to the mount ("/" for the root).
    pub own: String,
}

impl Hierarchy {
    /// The directory of this process's cgroup.
    pub fn own_dir(&self) -> PathBuf {
        self.mount.join(self.own.trim_start_matches('/'))
    }
}

/// Every cgroup hierarchy mounted here that this process is in, cgroup2 first.
pub fn hierarchies() -> Result<Vec<Hierarchy>> {
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let cgroup =
        std::fs::read_to_string("/proc/self/cgroup").context("reading /proc/self/cgroup")?;
    let found = parse_hierarchies(&mountinfo, &cgroup);
    if found.is_empty() {
        bail!(
            "no cgroup hierarchy is mounted (in /proc/self/mountinfo) that /proc/self/cgroup names"
        );
    }
    Ok(found)
}

/// Options a v1 cgroup mount may carry that are not controllers.
const NOT_CONTROLLERS: &[&str] = &[
    "rw",
    "ro",
    "relatime",
    "noatime",
    "nosuid",
    "nodev",
    "noexec",
    "clone_children",
    "xattr",
    "noprefix",
    "cpuset_v2_mode",
    "favordynmods",
];

/// Mounts of cgroup file systems (each hierarchy once, mounted at its root) matched with the
/// lines of /proc/self/cgroup; cgroup2 first.
fn parse_hierarchies(mountinfo: &str, proc_cgroup: &str) -> Vec<Hierarchy> {
    // /proc/self/cgroup: "ID:CONTROLLERS:PATH"; cgroup2 is "0::PATH".
    let lines: Vec<(&str, &str)> = proc_cgroup
        .lines()
        .filter_map(|l| {
            let mut p = l.splitn(3, ':');
            let (_id, ctrls, path) = (p.next()?, p.next()?, p.next()?);
            Some((ctrls, path))
        })
        .collect();
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split_whitespace().collect();
        let (Some(&root), Some(&mount)) = (pre.get(3), pre.get(4)) else {
            continue;
        };
        if root != "/" {
            continue; // a bind mount of a subtree: not where our own path is relative to
        }
        let mut post = post.split_whitespace();
        let (fstype, _source, options) = (post.next(), post.next(), post.next().unwrap_or(""));
        let name = match fstype {
            Some("cgroup2") => lines
                .iter()
                .find(|(c, _)| c.is_empty())
                .map(|&(_, path)| ("v2".to_string(), path)),
            Some("cgroup") => {
                let opts: Vec<&str> = options
                    .split(',')
                    .filter(|o| !NOT_CONTROLLERS.contains(o))
                    .filter(|o| !o.contains('=') || o.starts_with("name="))
                    .collect();
                lines
                    .iter()
                    .find(|(c, _)| {
                        !c.is_empty()
                            && c.split(',').all(|x| opts.contains(&x))
                            && opts.iter().all(|o| c.split(',').any(|x| x == *o))
                    })
                    .map(|&(c, path)| (c.to_string(), path))
            }
            _ => None,
        };
        let Some((name, own)) = name else {
            continue;
        };
        if out.iter().any(|h| h.name == name) {
            continue; // mounted twice
        }
        out.push(Hierarchy {
            name,
            mount: PathBuf::from(mount),
            own: own.to_string(),
        });
    }
    out.sort_by_key(|h| h.name != "v2");
    out
}

/// A pod uid in the kubelet's systemd spelling (underscores), fixed: the bench's one pod.
const POD_UID: &str = "5eed5eed_0000_4000_8000_000000000001";

/// Below the bench's own cgroup in each hierarchy: the kubelet's systemd layout of one
/// best-effort pod, whose container scopes `storm cgroups` creates and removes.
pub fn pod_path(tag: &str) -> String {
    format!(
        "podtrace-bench-{tag}.slice/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{POD_UID}.slice"
    )
}

/// The bench's cgroups in every hierarchy, removed (with anything left below them) on drop.
pub struct Tree {
    /// The pod directory in each hierarchy (where the churned cgroups go).
    parents: Vec<PathBuf>,
    /// Every directory created, in creation order.
    created: Vec<PathBuf>,
}

impl Tree {
    /// Creates `rel` below this process's cgroup in each hierarchy (v1 cpuset levels get their
    /// parent's cpus and mems, without which no task may join them).
    pub fn create(hierarchies: &[Hierarchy], rel: &str) -> Result<Self> {
        let mut tree = Self {
            parents: Vec::new(),
            created: Vec::new(),
        };
        for h in hierarchies {
            let mut dir = h.own_dir();
            for part in rel.split('/').filter(|p| !p.is_empty()) {
                let parent = dir.clone();
                dir.push(part);
                std::fs::create_dir(&dir).with_context(|| format!("mkdir {}", dir.display()))?;
                tree.created.push(dir.clone());
                copy_cpuset(&parent, &dir)?;
            }
            tree.parents.push(dir);
        }
        Ok(tree)
    }

    pub fn parents(&self) -> &[PathBuf] {
        &self.parents
    }
}

fn copy_cpuset(parent: &Path, dir: &Path) -> Result<()> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let Ok(value) = std::fs::read_to_string(parent.join(file)) else {
            return Ok(()); // not a cpuset hierarchy
        };
        if value.trim().is_empty() {
            return Ok(()); // cgroup2: inherited
        }
        let f = dir.join(file);
        std::fs::write(&f, value.trim())
            .with_context(|| format!("writing {:?} to {}", value.trim(), f.display()))?;
    }
    Ok(())
}

impl Drop for Tree {
    fn drop(&mut self) {
        // Cgroups a killed workload left behind (empty once its child is gone).
        for p in &self.parents {
            if let Ok(entries) = std::fs::read_dir(p) {
                for e in entries.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        if let Err(err) = std::fs::remove_dir(e.path()) {
                            eprintln!("bench: cannot remove {}: {err}", e.path().display());
                        }
                    }
                }
            }
        }
        for d in self.created.iter().rev() {
            if let Err(err) = std::fs::remove_dir(d) {
                eprintln!("bench: cannot remove {}: {err}", d.display());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
27 26 0:25 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
28 26 0:26 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
29 26 0:27 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,release_agent=/x,name=systemd
30 26 0:28 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate
31 26 0:28 /sub /mnt/elsewhere rw,relatime - cgroup2 cgroup2 rw
32 26 0:26 / /mnt/memory-again rw,relatime - cgroup cgroup rw,memory
";
    const HYBRID_CGROUP: &str = "\
3:name=systemd:/
2:memory:/process_api/abc
1:cpu,cpuacct:/
0::/
";

    #[test]
    fn hybrid_hosts_have_cgroup2_first_then_each_v1_hierarchy_once() {
        let h = parse_hierarchies(HYBRID_MOUNTINFO, HYBRID_CGROUP);
        let names: Vec<&str> = h.iter().map(|h| h.name.as_str()).collect();
        assert_eq!(names, ["v2", "cpu,cpuacct", "memory", "name=systemd"]);
        assert_eq!(h[0].mount, Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(h[2].own, "/process_api/abc");
        assert_eq!(
            h[2].own_dir(),
            Path::new("/sys/fs/cgroup/memory/process_api/abc")
        );
        assert_eq!(h[0].own_dir(), Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn a_controller_mount_must_match_the_whole_controller_list() {
        // cpu alone is not the cpu,cpuacct hierarchy.
        let m = "27 26 0:25 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert!(parse_hierarchies(m, HYBRID_CGROUP).is_empty());
    }

    #[test]
    fn unified_hosts_have_only_cgroup2() {
        let m = "30 26 0:28 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw\n";
        let h = parse_hierarchies(m, "0::/user.slice/session-1.scope\n");
        assert_eq!(
            h,
            [Hierarchy {
                name: "v2".into(),
                mount: "/sys/fs/cgroup".into(),
                own: "/user.slice/session-1.scope".into()
            }]
        );
    }

    #[test]
    fn this_hosts_hierarchies_include_the_one_of_this_process() {
        let h = hierarchies().expect("a Linux host has a cgroup hierarchy");
        for x in &h {
            assert!(x.own_dir().is_dir(), "{x:?}: own cgroup is a directory");
        }
    }

    #[test]
    fn the_pod_path_is_a_kubelet_systemd_pod() {
        let p = pod_path("7");
        assert!(
            p.ends_with("kubepods-besteffort-pod5eed5eed_0000_4000_8000_000000000001.slice"),
            "{p}"
        );
        assert!(
            p.starts_with("podtrace-bench-7.slice/kubepods.slice/"),
            "{p}"
        );
    }
}
