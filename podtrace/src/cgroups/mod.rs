//! Which cgroup hierarchies a node has, which one a process's `cgroup` comes from, and (live)
//! resolving cgroup ids to paths.
//!
//! - cgroup v2 only (unified): every task's cgroup is in the default hierarchy.
//! - cgroup v1 only (RHEL 8, OpenShift 4.12 by default): the default hierarchy is not mounted
//!   and every task's default-hierarchy cgroup is its root; the kernel programs also read the
//!   cgroup of one v1 controller hierarchy (`pids`, else `memory`, else the first mounted),
//!   whose paths say what the runtime made.
//! - hybrid (v1 controllers plus cgroup2, e.g. at /sys/fs/cgroup/unified): v2 is preferred;
//!   a task whose v2 cgroup is the root (or cannot be resolved) is placed by its v1 cgroup.
//!
//! [`CgroupMode`] (`--cgroup-mode`) forces one side. The choice, and the v1 hierarchy, go in
//! the trace header, so replay decides as live did.
pub mod mounts;
pub mod resolve;

use serde::{Deserialize, Serialize};

pub use mounts::{Mounts, V1Mount};

/// A cgroup hierarchy as events name it.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Hierarchy {
    /// The default (unified, cgroup2) hierarchy.
    #[default]
    V2,
    /// The v1 hierarchy named in the trace header (`CgroupSetup::v1`).
    V1,
}

/// `--cgroup-mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CgroupMode {
    /// v2 where mounted, v1 where v2 is not in use for a task.
    #[default]
    Auto,
    /// Only the default (v2) hierarchy.
    V2,
    /// Only a v1 controller hierarchy.
    V1,
}

/// What the engine needs to know of the node's hierarchies (recorded in the trace header).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CgroupSetup {
    /// Whether the default (v2) hierarchy is used.
    pub v2: bool,
    /// The v1 hierarchy used, by its controllers as in `/proc/PID/cgroup` (`pids`,
    /// `cpu,cpuacct`), or None.
    #[serde(default)]
    pub v1: Option<String>,
}

impl CgroupSetup {
    /// Traces written before v1 support: the default hierarchy only.
    pub fn v2_only() -> Self {
        Self { v2: true, v1: None }
    }

    /// What events print as `cgroup_hierarchy` for a hierarchy of this setup.
    pub fn label(&self, h: Hierarchy) -> Option<String> {
        match h {
            Hierarchy::V2 => self.v2.then(|| "v2".to_string()),
            Hierarchy::V1 => self.v1.as_ref().map(|c| format!("v1:{c}")),
        }
    }

    /// One line for the log: what podtrace reads.
    pub fn describe(&self) -> String {
        match (self.v2, &self.v1) {
            (true, None) => "v2 (unified hierarchy)".into(),
            (false, Some(c)) => format!("v1 ({c} hierarchy)"),
            (true, Some(c)) => format!(
                "hybrid: v2, and the v1 {c} hierarchy for tasks whose v2 cgroup is the root"
            ),
            (false, None) => "none: no usable cgroup hierarchy, events carry cgroup null".into(),
        }
    }
}

/// The node's setup under `mode`, with the v1 hierarchy the kernel programs should read
/// (its mount, and the controller whose subsystem index they use). `Err` says why a forced
/// mode cannot be honoured.
pub fn choose(mounts: &Mounts, mode: CgroupMode) -> Result<(CgroupSetup, Option<V1Mount>), String> {
    let v1 = mounts.preferred_v1();
    let v2 = mounts.v2.is_some();
    let (use_v2, use_v1) = match mode {
        CgroupMode::Auto => (v2, v1.is_some()),
        CgroupMode::V2 => {
            if !v2 {
                return Err("--cgroup-mode v2: no cgroup2 filesystem is mounted".into());
            }
            (true, false)
        }
        CgroupMode::V1 => {
            if v1.is_none() {
                return Err(
                    "--cgroup-mode v1: no cgroup v1 controller hierarchy is mounted".into(),
                );
            }
            (false, true)
        }
    };
    let v1 = if use_v1 { v1.cloned() } else { None };
    Ok((
        CgroupSetup {
            v2: use_v2,
            v1: v1.as_ref().map(|m| m.controllers.clone()),
        },
        v1,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mounts(v2: bool, v1: &[&str]) -> Mounts {
        Mounts {
            v2: v2.then(|| "/sys/fs/cgroup/unified".into()),
            v1: v1
                .iter()
                .map(|c| V1Mount {
                    controllers: c.to_string(),
                    controller: c.split(',').next().unwrap_or(c).to_string(),
                    path: format!("/sys/fs/cgroup/{c}").into(),
                })
                .collect(),
        }
    }

    #[test]
    fn auto_mode_follows_the_mounts() {
        let (s, m) = choose(&mounts(true, &[]), CgroupMode::Auto).expect("v2 only");
        assert_eq!(s, CgroupSetup::v2_only());
        assert!(m.is_none());
        let (s, m) = choose(&mounts(false, &["memory", "pids"]), CgroupMode::Auto).expect("v1");
        assert_eq!((s.v2, s.v1.as_deref()), (false, Some("pids")));
        assert_eq!(m.expect("a v1 mount").controller, "pids");
        let (s, _) = choose(&mounts(true, &["cpu,cpuacct"]), CgroupMode::Auto).expect("hybrid");
        assert_eq!((s.v2, s.v1.as_deref()), (true, Some("cpu,cpuacct")));
        assert_eq!(s.label(Hierarchy::V1).as_deref(), Some("v1:cpu,cpuacct"));
        let (s, _) = choose(&mounts(false, &[]), CgroupMode::Auto).expect("nothing");
        assert_eq!(
            s,
            CgroupSetup {
                v2: false,
                v1: None
            }
        );
        assert!(s.describe().contains("no usable cgroup hierarchy"));
    }

    #[test]
    fn forced_modes_need_their_hierarchy() {
        let (s, _) = choose(&mounts(true, &["pids"]), CgroupMode::V1).expect("v1 forced");
        assert_eq!((s.v2, s.v1.as_deref()), (false, Some("pids")));
        let (s, m) = choose(&mounts(true, &["pids"]), CgroupMode::V2).expect("v2 forced");
        assert_eq!((s.v2, s.v1), (true, None));
        assert!(m.is_none());
        assert!(choose(&mounts(true, &[]), CgroupMode::V1)
            .expect_err("no v1")
            .contains("no cgroup v1"));
        assert!(choose(&mounts(false, &["pids"]), CgroupMode::V2)
            .expect_err("no v2")
            .contains("no cgroup2"));
    }
}
