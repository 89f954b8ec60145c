//! The node's cgroup mounts, from `/proc/self/mountinfo` and `/proc/cgroups`.
use std::path::PathBuf;

/// A mounted cgroup v1 hierarchy that has at least one controller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct V1Mount {
    /// Its controllers as `/proc/PID/cgroup` names the hierarchy (`pids`, `cpu,cpuacct`).
    pub controllers: String,
    /// The controller whose subsystem index the kernel programs use to find the hierarchy.
    pub controller: String,
    /// Where it is mounted.
    pub path: PathBuf,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mounts {
    /// Where cgroup2 is mounted (`/sys/fs/cgroup` or `/sys/fs/cgroup/unified`).
    pub v2: Option<PathBuf>,
    /// v1 hierarchies with controllers, in the order of `/proc/cgroups`' first controller.
    pub v1: Vec<V1Mount>,
}

/// v1 controllers to read, best first: `pids` and `memory` are the ones kubelet and every
/// runtime always join (memory can be disabled at boot: `cgroup_disable=memory`).
const PREFERRED: [&str; 2] = ["pids", "memory"];

impl Mounts {
    pub fn from_system() -> Self {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let cgroups = std::fs::read_to_string("/proc/cgroups").unwrap_or_default();
        Self::parse(&info, &cgroups)
    }

    /// From the texts of `/proc/self/mountinfo` and `/proc/cgroups`.
    pub fn parse(mountinfo: &str, proc_cgroups: &str) -> Self {
        // subsys_name hierarchy num_cgroups enabled; ssid order.
        let known: Vec<&str> = proc_cgroups
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                let name = f.next()?;
                let hierarchy: u32 = f.next()?.parse().ok()?;
                let _count = f.next()?;
                let enabled = f.next()? == "1";
                (hierarchy != 0 && enabled).then_some(name)
            })
            .collect();
        let mut out = Mounts::default();
        // (root is "/", mount) so that a bind mount of a sub-cgroup loses to the real one.
        let mut v1: Vec<(bool, usize, V1Mount)> = Vec::new();
        for line in mountinfo.lines() {
            let Some((pre, post)) = line.split_once(" - ") else {
                continue;
            };
            let pre: Vec<&str> = pre.split_whitespace().collect();
            let post: Vec<&str> = post.split_whitespace().collect();
            let (Some(root), Some(point), Some(fstype)) = (pre.get(3), pre.get(4), post.first())
            else {
                continue;
            };
            let point = PathBuf::from(unescape(point));
            match *fstype {
                "cgroup2" if out.v2.is_none() || *root == "/" => out.v2 = Some(point),
                "cgroup" => {
                    let opts: Vec<&str> = post
                        .get(2)
                        .map(|o| o.split(',').collect())
                        .unwrap_or_default();
                    let ctrls: Vec<&str> =
                        known.iter().copied().filter(|k| opts.contains(k)).collect();
                    let (Some(&first), Some(order)) = (
                        ctrls.first(),
                        known.iter().position(|k| Some(k) == ctrls.first()),
                    ) else {
                        continue; // name=systemd and other named hierarchies: no controller
                    };
                    let m = V1Mount {
                        controllers: ctrls.join(","),
                        controller: first.to_string(),
                        path: point,
                    };
                    match v1
                        .iter_mut()
                        .find(|(_, _, x)| x.controllers == m.controllers)
                    {
                        Some(slot) if !slot.0 && *root == "/" => *slot = (true, order, m),
                        Some(_) => {}
                        None => v1.push((*root == "/", order, m)),
                    }
                }
                _ => {}
            }
        }
        v1.sort_by_key(|(_, order, _)| *order);
        out.v1 = v1.into_iter().map(|(_, _, m)| m).collect();
        out
    }

    /// The v1 hierarchy to read: `pids`, else `memory`, else the first mounted.
    pub fn preferred_v1(&self) -> Option<&V1Mount> {
        PREFERRED
            .iter()
            .find_map(|want| {
                self.v1
                    .iter()
                    .find(|m| m.controllers.split(',').any(|c| c == *want))
                    .map(|m| (m, *want))
            })
            .map(|(m, _)| m)
            .or_else(|| self.v1.first())
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let oct = b
            .get(i + 1..i + 4)
            .filter(|o| o.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], oct) {
            (b'\\', Some(o)) => {
                let v = o.iter().fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                out.push(v as u8);
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This lab machine (hybrid, no systemd).
    const LAB_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const LAB_CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t3\t3\t1
cpu\t1\t3\t1
cpuacct\t2\t3\t1
memory\t4\t46\t1
net_cls\t0\t2\t1
hugetlb\t0\t2\t1
pids\t8\t3\t1
";

    /// A RHEL 8 / OpenShift 4.12 node (systemd, cgroup v1 only).
    const RHEL8_MOUNTINFO: &str = "\
25 21 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:3 - tmpfs tmpfs ro,seclabel,mode=755
26 25 0:23 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:4 - cgroup cgroup rw,seclabel,xattr,release_agent=/usr/lib/systemd/systemd-cgroups-agent,name=systemd
29 25 0:26 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:7 - cgroup cgroup rw,seclabel,cpu,cpuacct
30 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:8 - cgroup cgroup rw,seclabel,memory
35 25 0:32 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:13 - cgroup cgroup rw,seclabel,pids
";
    const RHEL8_CGROUPS: &str = "#subsys_name\thierarchy\tnum_cgroups\tenabled
cpuset\t6\t1\t1
cpu\t3\t95\t1
cpuacct\t3\t95\t1
memory\t4\t153\t1
pids\t9\t95\t1
";

    #[test]
    fn lab_is_hybrid_and_prefers_pids() {
        let m = Mounts::parse(LAB_MOUNTINFO, LAB_CGROUPS);
        assert_eq!(
            m.v2.as_deref(),
            Some(std::path::Path::new("/sys/fs/cgroup/unified"))
        );
        let names: Vec<&str> = m.v1.iter().map(|v| v.controllers.as_str()).collect();
        assert_eq!(
            names,
            ["cpu", "cpuacct", "memory", "pids"],
            "name=systemd has no controller"
        );
        let p = m.preferred_v1().expect("pids");
        assert_eq!(
            (p.controller.as_str(), p.path.to_str()),
            ("pids", Some("/sys/fs/cgroup/pids"))
        );
    }

    #[test]
    fn rhel8_is_v1_only_with_joined_controllers() {
        let m = Mounts::parse(RHEL8_MOUNTINFO, RHEL8_CGROUPS);
        assert!(m.v2.is_none());
        let cpu =
            m.v1.iter()
                .find(|v| v.controller == "cpu")
                .expect("cpu,cpuacct");
        assert_eq!(cpu.controllers, "cpu,cpuacct");
        assert_eq!(cpu.path, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(m.preferred_v1().expect("pids").controllers, "pids");
    }

    #[test]
    fn falls_back_to_memory_then_any_controller() {
        let m = Mounts::parse(
            "1 0 0:1 / /cg/mem rw - cgroup cgroup rw,memory\n2 0 0:2 / /cg/cpu rw - cgroup cgroup rw,cpu\n",
            "#\ncpu\t1\t1\t1\nmemory\t2\t1\t1\n",
        );
        assert_eq!(m.preferred_v1().expect("memory").controller, "memory");
        let m = Mounts::parse(
            "2 0 0:2 / /cg/cpu rw - cgroup cgroup rw,cpu\n",
            "#\ncpu\t1\t1\t1\nmemory\t0\t1\t1\n",
        );
        assert_eq!(m.preferred_v1().expect("cpu").controller, "cpu");
    }

    #[test]
    fn a_bind_mounted_sub_cgroup_loses_to_the_real_mount() {
        let m = Mounts::parse(
            "1 0 0:1 /kubepods /host/pids rw - cgroup cgroup rw,pids\n2 0 0:1 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n",
            "#\npids\t3\t1\t1\n",
        );
        assert_eq!(m.v1.len(), 1);
        assert_eq!(m.v1[0].path, PathBuf::from("/sys/fs/cgroup/pids"));
    }

    #[test]
    fn escaped_mount_points_and_garbage() {
        let m = Mounts::parse(
            "1 0 0:1 / /a\\040b rw - cgroup2 cgroup2 rw\nnot a mountinfo line\n\n",
            "garbage\n",
        );
        assert_eq!(m.v2, Some(PathBuf::from("/a b")));
        assert!(m.v1.is_empty());
        assert_eq!(Mounts::parse("", ""), Mounts::default());
    }
}
