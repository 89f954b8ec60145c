//! Who a process belongs to, from its cgroup path and from runtime helpers' argv.
//!
//! Everything here is pure: strings in, plain data out, no I/O, no panics on any input.
//! The recognised forms and their limits are listed in `docs/attribution.md`.
//!
//! - [`parse_cgroup_path`] reads a cgroup path (as in `/proc/PID/cgroup`, with or without the
//!   `N:controllers:` prefix) and says which runtime, container and pod it names.
//! - [`parse_helper`] reads the exec'd filename and argv of a runtime helper (conmon,
//!   conmon-rs, a containerd shim, runc or crun) and says which container and pod it works for.

mod argv_scan;
pub mod cgroup_path;
pub mod helper_argv;
mod k8s_name;
#[cfg(test)]
mod test_fixtures;

pub use cgroup_path::{parse_cgroup_path, CgroupInfo};
pub use helper_argv::{parse_helper, Helper, HelperKind, K8sName};

/// The container runtime (or engine) that created a container.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Runtime {
    Crio,
    Containerd,
    Docker,
    Podman,
}

impl Runtime {
    /// The lowercase name, as serialised.
    pub fn as_str(self) -> &'static str {
        match self {
            Runtime::Crio => "crio",
            Runtime::Containerd => "containerd",
            Runtime::Docker => "docker",
            Runtime::Podman => "podman",
        }
    }
}

impl std::fmt::Display for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Runtime;

    #[test]
    fn runtime_serialises_as_its_lowercase_name() {
        for rt in [
            Runtime::Crio,
            Runtime::Containerd,
            Runtime::Docker,
            Runtime::Podman,
        ] {
            let json = serde_json::to_string(&rt).expect("a unit enum serialises");
            assert_eq!(json, format!("\"{}\"", rt.as_str()), "serde name of {rt:?}");
            let back: Runtime = serde_json::from_str(&json).expect("round trip");
            assert_eq!(back, rt);
        }
    }
}
