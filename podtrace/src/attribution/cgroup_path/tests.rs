use super::*;
use crate::attribution::test_fixtures::{lab_records, Rng};

const ID: &str = "2b0aa6f218f552f0d1009b07a80d23d9d47c8b63c23777fb51dcb1aa648d0316";
const UID: &str = "0a15cd78-757d-4322-9f35-94f7c42860b4";
const UID_: &str = "0a15cd78_757d_4322_9f35_94f7c42860b4";

fn info(
    runtime: Option<Runtime>,
    id: Option<&str>,
    pod: Option<&str>,
    qos: Option<&str>,
    conmon: bool,
) -> CgroupInfo {
    CgroupInfo {
        runtime,
        container_id: id.map(str::to_owned),
        pod_uid: pod.map(str::to_owned),
        qos: qos.map(str::to_owned),
        conmon,
    }
}

fn check(path: &str, want: CgroupInfo) {
    assert_eq!(parse_cgroup_path(path), want, "{path}");
}

#[test]
fn kubelet_systemd_driver() {
    use Runtime::*;
    let besteffort =
        format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice");
    let burstable =
        format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice");
    let guaranteed = format!("/kubepods.slice/kubepods-pod{UID_}.slice");
    let pod = Some(UID);
    for (path, want) in [
        (format!("{besteffort}/crio-{ID}.scope"), info(Some(Crio), Some(ID), pod, Some("besteffort"), false)),
        (format!("{burstable}/crio-conmon-{ID}.scope"), info(Some(Crio), Some(ID), pod, Some("burstable"), true)),
        (format!("{guaranteed}/crio-{ID}.scope"), info(Some(Crio), Some(ID), pod, Some("guaranteed"), false)),
        (format!("{burstable}/cri-containerd-{ID}.scope"), info(Some(Containerd), Some(ID), pod, Some("burstable"), false)),
        (format!("{besteffort}/docker-{ID}.scope"), info(Some(Docker), Some(ID), pod, Some("besteffort"), false)),
        // cri-o with systemd puts some containers one level down; the id is the scope's.
        (format!("{burstable}/crio-{ID}.scope/container"), info(Some(Crio), Some(ID), pod, Some("burstable"), false)),
        // The pod slice itself (pause-less pods' shared processes), and the qos slice.
        (besteffort.clone(), info(None, None, pod, Some("besteffort"), false)),
        ("/kubepods.slice/kubepods-burstable.slice".to_owned(), info(None, None, None, Some("burstable"), false)),
        ("/kubepods.slice".to_owned(), CgroupInfo::default()),
        // kind and other custom --cgroup-root: "kubelet-kubepods-...".
        (
            format!("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"),
            info(Some(Containerd), Some(ID), pod, Some("besteffort"), false),
        ),
    ] {
        check(&path, want);
    }
}

#[test]
fn kubelet_cgroupfs_driver() {
    use Runtime::*;
    for (path, want) in [
        (
            format!("/kubepods/besteffort/pod{UID}/{ID}"),
            info(None, Some(ID), Some(UID), Some("besteffort"), false),
        ),
        (
            format!("/kubepods/burstable/pod{UID}/crio-{ID}"),
            info(Some(Crio), Some(ID), Some(UID), Some("burstable"), false),
        ),
        (
            format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}"),
            info(Some(Crio), Some(ID), Some(UID), Some("burstable"), true),
        ),
        (
            format!("/kubepods/pod{UID}/{ID}"),
            info(None, Some(ID), Some(UID), Some("guaranteed"), false),
        ),
        (
            format!("/kubepods/pod{UID}"),
            info(None, None, Some(UID), Some("guaranteed"), false),
        ),
        // podman with --cgroup-parent=/kubepods/pod1234 (the lab's form).
        (
            format!("/kubepods/pod1234/libpod-{ID}"),
            info(
                Some(Podman),
                Some(ID),
                Some("1234"),
                Some("guaranteed"),
                false,
            ),
        ),
        (
            "/kubepods/pod1234/conmon".to_owned(),
            info(Some(Podman), None, Some("1234"), Some("guaranteed"), true),
        ),
        // A non-uid "pod..." directory is not a pod.
        ("/kubepods/podman".to_owned(), CgroupInfo::default()),
        (
            "/kubepods/besteffort/notapod/x".to_owned(),
            info(None, None, None, Some("besteffort"), false),
        ),
    ] {
        check(&path, want);
    }
}

#[test]
fn runtimes_outside_kubernetes() {
    use Runtime::*;
    for (path, want) in [
        (
            format!("/system.slice/docker-{ID}.scope"),
            info(Some(Docker), Some(ID), None, None, false),
        ),
        (
            format!("/docker/{ID}"),
            info(Some(Docker), Some(ID), None, None, false),
        ),
        (
            format!("/machine.slice/libpod-{ID}.scope"),
            info(Some(Podman), Some(ID), None, None, false),
        ),
        (
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            info(Some(Podman), Some(ID), None, None, true),
        ),
        (
            format!("/machine.slice/libpod-{ID}.scope/container"),
            info(Some(Podman), Some(ID), None, None, false),
        ),
        (
            format!("/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{ID}.scope"),
            info(Some(Podman), Some(ID), None, None, false),
        ),
        (
            format!("/libpod_parent/libpod-{ID}"),
            info(Some(Podman), Some(ID), None, None, false),
        ),
        (
            "/libpod_parent/conmon".to_owned(),
            info(Some(Podman), None, None, None, true),
        ),
        (
            format!("/system.slice/crio-conmon-{ID}.scope"),
            info(Some(Crio), Some(ID), None, None, true),
        ),
        (
            format!("/k8s.io/{ID}"),
            info(Some(Containerd), Some(ID), None, None, false),
        ),
        (
            "/k8s.io/c1".to_owned(),
            info(Some(Containerd), Some("c1"), None, None, false),
        ),
        (
            "/moby/web_1.x-2".to_owned(),
            info(Some(Containerd), Some("web_1.x-2"), None, None, false),
        ),
        (
            "/default/c1".to_owned(),
            info(Some(Containerd), Some("c1"), None, None, false),
        ),
        (
            format!("/test/{ID}"),
            info(Some(Containerd), Some(ID), None, None, false),
        ),
        // Plain ctr ids under an unknown namespace are not recognisable (see the module docs).
        ("/test/c1".to_owned(), CgroupInfo::default()),
        ("/attrfx/c1".to_owned(), CgroupInfo::default()),
        // Nested: a kind node (docker) running a pod; the innermost container wins.
        (
            format!(
                "/system.slice/docker-{}.scope/kubepods/besteffort/pod{UID}/{ID}",
                "f".repeat(64)
            ),
            info(None, Some(ID), Some(UID), Some("besteffort"), false),
        ),
    ] {
        check(&path, want);
    }
}

#[test]
fn proc_cgroup_lines_mounts_and_deleted() {
    let want = info(Some(Runtime::Crio), Some(ID), None, None, false);
    for path in [
        format!("0::/system.slice/crio-{ID}.scope"),
        format!("0::/system.slice/crio-{ID}.scope\n"),
        format!("4:memory,cpu:/system.slice/crio-{ID}.scope"),
        format!("1:name=systemd:/system.slice/crio-{ID}.scope"),
        format!("/sys/fs/cgroup/unified/system.slice/crio-{ID}.scope"),
        format!("/system.slice/crio-{ID}.scope (deleted)"),
        format!("/system.slice//crio-{ID}.scope/"),
    ] {
        check(&path, want.clone());
    }
}

#[test]
fn host_paths_are_nothing() {
    for path in [
        "/",
        "0::/",
        "/init.scope",
        "/system.slice",
        "/system.slice/sshd.service",
        "/system.slice/containerd.service",
        "/system.slice/crio.service",
        "/system.slice/docker.service",
        "/user.slice",
        "/user.slice/user-1000.slice/session-3.scope",
        "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.socket",
        "/machine.slice",
        "/libpod_parent",
        "/fake/ctr-abc",
        "/some_agent/5b8f4550e708801d19ad2a580ac26cb1",
        "/crio-test",
        "/libpod-abc",
    ] {
        check(path, CgroupInfo::default());
    }
}

#[test]
fn malformed_paths_are_nothing_and_do_not_panic() {
    for path in [
        "",
        " ",
        ":",
        "::",
        "0::",
        "x::/crio-",
        "/crio-.scope",
        "/crio-conmon-.scope",
        "/crio-a/b.scope",
        "/libpod-.scope",
        "/docker-é.scope",
        "/docker-\u{0}.scope",
        "/kubepods.slice/kubepods-besteffort-pod.slice",
        "/kubepods.slice/kubepods-besteffort-podxyz.slice",
        "/kubepods.slice/kubepods-weird.slice",
        "/kubepods.slice/kubepods-a-b-c-d.slice",
        "/kubepods-.slice",
        "/k8s.io/",
        "/k8s.io/-bad",
        "/k8s.io/bad-",
        "/k8s.io/a..b",
        "/\u{fffd}/\u{fffd}",
        "/ü/ü/ü",
        "k8s_",
        "////",
        "(deleted)",
    ] {
        let got = parse_cgroup_path(path);
        assert_eq!(got.container_id, None, "{path:?}: {got:?}");
        assert_eq!(got.runtime, None, "{path:?}: {got:?}");
        assert_eq!(got.pod_uid, None, "{path:?}: {got:?}");
    }
}

#[test]
fn lab_cgroups_match_the_runtimes() {
    let mut checked = 0;
    for r in lab_records() {
        let v2 = r.cgroup.iter().find(|l| l.starts_with("0::"));
        match r.role.as_str() {
            "container" => {
                let line = v2.expect("container has a cgroup2 line");
                let got = parse_cgroup_path(line);
                let want_runtime = if r.file == "podman" {
                    Runtime::Podman
                } else {
                    Runtime::Containerd
                };
                let plain_ctr_id = r.truth.namespace.as_deref() == Some("attrfx");
                if plain_ctr_id {
                    // /attrfx/c1: not recognisable from the path (attributed via the shim).
                    assert_eq!(got, CgroupInfo::default(), "{line}");
                } else {
                    assert_eq!(got.runtime, Some(want_runtime), "{line}");
                    assert_eq!(
                        got.container_id.as_deref(),
                        Some(r.truth.container_id.as_str()),
                        "{line}"
                    );
                    assert!(!got.conmon);
                }
                let in_pod = r.truth.cgroup_parent.as_deref() == Some("/kubepods/pod1234");
                assert_eq!(got.pod_uid.as_deref(), in_pod.then_some("1234"), "{line}");
                // v1 hierarchies name the same cgroup.
                for l in &r.cgroup {
                    assert_eq!(parse_cgroup_path(l), got, "{l} vs {line}");
                }
                checked += 1;
            }
            "conmon" | "shim" if r.pid.is_some() => {
                // Hybrid host: the helpers stay in the root cgroup2.
                let line = v2.expect("cgroup2 line");
                assert_eq!(parse_cgroup_path(line), CgroupInfo::default(), "{line}");
                if r.role == "conmon" {
                    let mem = r
                        .cgroup
                        .iter()
                        .find(|l| l.starts_with("4:memory:"))
                        .expect("v1 memory line");
                    let got = parse_cgroup_path(mem);
                    assert!(
                        got.conmon && got.runtime == Some(Runtime::Podman),
                        "{mem}: {got:?}"
                    );
                    assert_eq!(got.container_id, None, "podman's conmon cgroup is shared");
                }
                checked += 1;
            }
            _ => {}
        }
    }
    assert_eq!(checked, 9, "4 containers, 3 conmons, 2 shims");
}

#[test]
fn fuzz_random_paths_never_panic_and_stay_consistent() {
    // Components are built as <prefix><id><suffix> from pieces of every recognised form,
    // valid and broken, plus junk; paths are 1-8 of them, sometimes with a /proc prefix.
    const PREFIXES: &[&str] = &[
        "",
        "",
        "crio-",
        "crio-conmon-",
        "libpod-",
        "libpod-conmon-",
        "docker-",
        "cri-containerd-",
        "pod",
        "kubepods-",
        "kubepods-besteffort-",
        "kubepods-burstable-pod",
        "kubelet-kubepods-pod",
        "é",
        "-",
        "_",
    ];
    const IDS: &[&str] = &[
        "",
        "abc123",
        "c1",
        "0a1b_2c",
        "0a1b-2c",
        "1234",
        "kubepods",
        "besteffort",
        "burstable",
        "conmon",
        "k8s.io",
        "docker",
        "moby",
        "default",
        "container",
        "web_1.x-2",
        "a..b",
        "\u{0}",
        "\u{fffd}",
        ":",
        " (deleted)",
        "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
        "A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F9",
    ];
    const SUFFIXES: &[&str] = &["", "", ".scope", ".slice", ".service", "\n", "/"];
    const LEADS: &[&str] = &[
        "",
        "",
        "/",
        "0::/",
        "4:memory:/",
        "x:y:",
        ":",
        "/sys/fs/cgroup/unified/",
    ];
    let mut rng = Rng::new(0xc6_0a7b);
    let mut recognised = 0;
    let mut pods = 0;
    for _ in 0..50_000 {
        let mut path = rng.pick(LEADS).to_owned();
        for i in 0..1 + rng.below(8) {
            if i > 0 {
                path.push('/');
            }
            path.push_str(rng.pick(PREFIXES));
            path.push_str(rng.pick(IDS));
            path.push_str(rng.pick(SUFFIXES));
        }
        let got = parse_cgroup_path(&path);
        if let Some(id) = &got.container_id {
            assert!(
                !id.is_empty() && path.contains(id.as_str()),
                "{path:?}: {got:?}"
            );
            recognised += 1;
        }
        if let Some(uid) = &got.pod_uid {
            assert!(!uid.is_empty() && !uid.contains('_'), "{path:?}: {got:?}");
            assert!(
                path.contains(&uid.replace('-', "_")) || path.contains(uid.as_str()),
                "{path:?}: {got:?}"
            );
            assert!(got.qos.is_some(), "{path:?}: a pod always has a qos class");
            pods += 1;
        }
        if let Some(q) = &got.qos {
            assert!(
                ["guaranteed", "burstable", "besteffort"].contains(&q.as_str()),
                "{path:?}: {got:?}"
            );
        }
        if got.conmon {
            assert!(got.runtime.is_some(), "{path:?}: {got:?}");
        }
    }
    assert!(
        recognised > 5_000,
        "the generator should hit container forms, got {recognised}"
    );
    assert!(pods > 500, "the generator should hit pod forms, got {pods}");
}
