//! The container lab: real containers for the root integration tests.
//!
//! Every helper starts a real container (podman, conmon + runc laid out like cri-o, containerd, or a
//! runtime-free pid namespace in its own cgroup), reads the ground truth back from the runtime or the
//! kernel (`podman inspect`, conmon's pidfiles, `ctr task ls`, `/proc`), and tears everything down in
//! `Drop`, also when the test panics. Names are unique per call, so tests may run in parallel.
//!
//! These are test helpers: every failure panics with a message that says what failed and where.
//! Teardown failures panic too, unless the thread is already panicking (then they are printed).
//!
//! See `docs/testing.md` for the layout each runtime produces.

pub mod cgroup;
pub mod cmd;
pub mod containerd;
pub mod cri;
pub mod crio;
pub mod crio_lab;
pub mod fake;
pub mod podman;
pub mod process;
pub mod rootfs;

pub use cgroup::{cgroup_dir, cgroup_id_of_pid, cgroup_inode, unified_root};
pub use cmd::unique_name;
pub use containerd::{ContainerdLab, CtrContainer, CtrOpts};
pub use cri::{ContainerSpec, CriLab, KubeContainer, KubePod, PodOpts};
pub use crio::{CrioLikeContainer, CrioOpts, CrioPod, Qos};
pub use fake::FakeContainer;
pub use podman::{PodmanContainer, PodmanOpts};
pub use process::{
    is_alive, proc_cgroup, proc_children, proc_cmdline, proc_status, spawn_threads,
    try_proc_status, ProcStatus, ProcessRef,
};
pub use rootfs::{copy_rootfs, rootfs};

/// Panics unless the test runs as root (the lab creates cgroups, namespaces and containers).
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the container lab needs root (euid is {euid}): run `cargo xtask test`"
    );
}
