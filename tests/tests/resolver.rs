//! The live cgroup resolver (podtrace::cgroups::resolve) against real cgroup directories in
//! both hierarchies of this hybrid host: an id names the directory `stat` says has that inode.
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;

use podtrace::cgroups::resolve::{CgroupView, Resolver};
use podtrace::cgroups::{choose, CgroupMode, Hierarchy, Mounts};
use podtrace_tests::lab;

#[test]
fn a_new_cgroup_is_named_by_its_id_in_each_hierarchy_and_forgotten_when_removed() {
    lab::require_root();
    let mounts = Mounts::from_system();
    let (setup, v1) = choose(&mounts, CgroupMode::Auto).expect("this host has cgroups");
    let v1 = v1.expect("this hybrid host has a v1 controller hierarchy");
    let v2_root = mounts.v2.clone().expect("this hybrid host has cgroup2");
    let mut r = Resolver::new(CgroupView::new(&mounts, &setup, Some(v1.clone())));
    let name = lab::unique_name("podtrace-resolver");
    for (h, root) in [(Hierarchy::V2, v2_root), (Hierarchy::V1, v1.path.clone())] {
        let dir = root.join(&name).join("child");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let id = std::fs::metadata(&dir).expect("stat").ino();
        let got = r.path(h, id, 0);
        std::fs::remove_dir(&dir).expect("rmdir child");
        std::fs::remove_dir(root.join(&name)).expect("rmdir parent");
        assert_eq!(got, Some(format!("/{name}/child")), "{h:?} id {id}");
        assert_eq!(
            r.path(h, id, 0),
            None,
            "{h:?}: a removed cgroup is not named"
        );
    }
}
