use super::*;
use crate::attribution::test_fixtures::{lab_records, layout_records, Rng};

/// A container id (from the seed node).
const ID: &str = "2b0aa6f218f552f0d1009b07a80d23d9d47c8b63c23777fb51dcb1aa648d0316";
/// A pod sandbox id.
const SB: &str = "76140a26677b1512e18864b5c1bfb31a2847d581721a64cd7f7633fb2a62ab66";
/// The container of a kind / k3d / dind node.
const NODE: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
const UID: &str = "0a15cd78-757d-4322-9f35-94f7c42860b4";
const UID_: &str = "0a15cd78_757d_4322_9f35_94f7c42860b4";
/// A BuildKit step id (base32, not hex).
const BK: &str = "q1w2e3r4t5y6u7i8o9p0asdfg";

const CRIO: Option<Runtime> = Some(Runtime::Crio);
const CTRD: Option<Runtime> = Some(Runtime::Containerd);
const DOCKER: Option<Runtime> = Some(Runtime::Docker);
const PODMAN: Option<Runtime> = Some(Runtime::Podman);
const NONE: Option<Runtime> = None;
const MON: bool = true;
const CTR: bool = false;
const BE: Option<&str> = Some("besteffort");
const BU: Option<&str> = Some("burstable");
const GU: Option<&str> = Some("guaranteed");
const NOQ: Option<&str> = None;

/// One row: path, then runtime, container id, pod uid, qos, monitor, sandbox id.
type Row = (
    String,
    Option<Runtime>,
    Option<&'static str>,
    Option<&'static str>,
    Option<&'static str>,
    bool,
    Option<&'static str>,
);

fn check_rows(rows: Vec<Row>) {
    for (path, runtime, id, pod, qos, conmon, sandbox) in rows {
        let want = CgroupInfo {
            runtime,
            container_id: id.map(str::to_owned),
            pod_uid: pod.map(str::to_owned),
            qos: qos.map(str::to_owned),
            conmon,
            sandbox_id: sandbox.map(str::to_owned),
        };
        assert_eq!(parse_cgroup_path(&path), want, "{path}");
    }
}

/// The kubelet's pod cgroups, systemd driver.
fn be_pod() -> String {
    format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice")
}
fn bu_pod() -> String {
    format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice")
}
fn gu_pod() -> String {
    format!("/kubepods.slice/kubepods-pod{UID_}.slice")
}

#[test]
fn kubelet_systemd_driver() {
    let (be, bu, gu) = (be_pod(), bu_pod(), gu_pod());
    let u = Some(UID);
    check_rows(vec![
        // OpenShift / RHEL: cri-o scopes, in cgroup2 and in every v1 hierarchy.
        (format!("{be}/crio-{ID}.scope"), CRIO, Some(ID), u, BE, CTR, None),
        (format!("0::{be}/crio-{ID}.scope"), CRIO, Some(ID), u, BE, CTR, None),
        (format!("1:name=systemd:{be}/crio-{ID}.scope"), CRIO, Some(ID), u, BE, CTR, None),
        (format!("11:memory:{be}/crio-{ID}.scope"), CRIO, Some(ID), u, BE, CTR, None),
        (format!("3:cpu,cpuacct:{be}/crio-{ID}.scope\n"), CRIO, Some(ID), u, BE, CTR, None),
        (format!("{gu}/crio-{ID}.scope"), CRIO, Some(ID), u, GU, CTR, None),
        (format!("{bu}/crio-{ID}.scope/container"), CRIO, Some(ID), u, BU, CTR, None),
        (format!("{bu}/crio-conmon-{ID}.scope"), CRIO, Some(ID), u, BU, MON, None),
        // conmon-rs (runtime_type = "pod") lives in the infra container's monitor scope.
        (format!("{be}/crio-conmon-{SB}.scope"), CRIO, Some(SB), u, BE, MON, None),
        // conmon_cgroup = "system.slice".
        (format!("/system.slice/crio-conmon-{ID}.scope"), CRIO, Some(ID), None, NOQ, MON, None),
        // containerd (GKE, EKS, AKS, kind, k3s with the systemd driver).
        (format!("{bu}/cri-containerd-{ID}.scope"), CTRD, Some(ID), u, BU, CTR, None),
        (format!("{gu}/cri-containerd-{SB}.scope"), CTRD, Some(SB), u, GU, CTR, None),
        // cri-dockerd with docker's systemd driver.
        (format!("{be}/docker-{ID}.scope"), DOCKER, Some(ID), u, BE, CTR, None),
        // kind: custom --cgroup-root inside the node's docker scope.
        (
            format!("/system.slice/docker-{NODE}.scope/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice/cri-containerd-{ID}.scope"),
            CTRD, Some(ID), u, BE, CTR, None,
        ),
        // The pod and QoS slices themselves.
        (be.clone(), NONE, None, u, BE, CTR, None),
        (gu.clone(), NONE, None, u, GU, CTR, None),
        ("/kubepods.slice/kubepods-burstable.slice".into(), NONE, None, None, BU, CTR, None),
        ("/kubepods.slice".into(), NONE, None, None, NOQ, CTR, None),
    ]);
}

#[test]
fn literal_systemd_cgroups_path_under_a_cgroupfs_manager() {
    // containerd with SystemdCgroup = false and a systemd kubelet: runc's fs manager takes
    // "<pod slice>:cri-containerd:<id>" as one directory, under its own cgroup (v1) or its
    // parent (v2).
    let u = Some(UID);
    check_rows(vec![
        (format!("/kubepods-besteffort-pod{UID_}.slice:cri-containerd:{ID}"), CTRD, Some(ID), u, BE, CTR, None),
        (format!("/sys/fs/cgroup//kubepods-besteffort-pod{UID_}.slice:cri-containerd:{ID}"), CTRD, Some(ID), u, BE, CTR, None),
        (format!("/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}"), CTRD, Some(ID), u, BU, CTR, None),
        (format!("4:memory:/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{ID}"), CTRD, Some(ID), u, BU, CTR, None),
        (format!("/system.slice/kubepods-pod{UID_}.slice:cri-containerd:{ID}"), CTRD, Some(ID), u, GU, CTR, None),
        (format!("/kubelet-kubepods-besteffort-pod{UID_}.slice:cri-containerd:{ID}"), CTRD, Some(ID), u, BE, CTR, None),
        (format!("/kubepods-burstable-pod{UID_}.slice:crio:{ID}"), CRIO, Some(ID), u, BU, CTR, None),
        (format!("/system.slice/docker.service/system.slice:docker:{ID}"), DOCKER, Some(ID), None, NOQ, CTR, None),
        (format!("/system.slice/system.slice:nerdctl:{ID}"), CTRD, Some(ID), None, NOQ, CTR, None),
        // A prefix no row knows: still a container, runtime unknown.
        (format!("/kubepods-besteffort-pod{UID_}.slice:someengine:{ID}"), NONE, Some(ID), u, BE, CTR, None),
        // A pod slice that is not a kubepods one gives no pod.
        (format!("/machine.slice:libpod:{ID}"), PODMAN, Some(ID), None, NOQ, CTR, None),
    ]);
}

#[test]
fn lab_runc_makes_the_literal_directory() {
    // Real runc 1.1 (fs manager) given "<pod slice>:<prefix>:<id>": every hierarchy, cgroup2
    // included, shows the string verbatim as one directory.
    let recs = layout_records();
    assert_eq!(recs.len(), 2, "lab-layouts.jsonl records");
    for r in recs {
        assert_eq!(r.file, "runc-fs");
        let prefix = r.cgroups_path.split(':').nth(1).expect("slice:prefix:id");
        let runtime = match prefix {
            "cri-containerd" => CTRD,
            "crio" => CRIO,
            other => panic!("fixture prefix {other}"),
        };
        assert_eq!(
            r.cgroup.len(),
            10,
            "pid {}: 9 v1 hierarchies and cgroup2",
            r.pid
        );
        for line in &r.cgroup {
            let path = line.splitn(3, ':').nth(2).expect("N:controllers:path");
            assert_eq!(
                path, r.cgroups_path,
                "pid {}: runc keeps the string as is",
                r.pid
            );
            let want = CgroupInfo {
                runtime,
                container_id: Some(r.truth.container_id.clone()),
                pod_uid: Some(r.truth.pod_uid.clone()),
                qos: Some(r.truth.qos.clone()),
                conmon: false,
                sandbox_id: None,
            };
            assert_eq!(parse_cgroup_path(line), want, "{line}");
        }
    }
}

#[test]
fn kubelet_cgroupfs_driver() {
    let u = Some(UID);
    check_rows(vec![
        // containerd's CRI (GKE COS, k3s) and cri-dockerd: the path does not say which.
        (
            format!("/kubepods/besteffort/pod{UID}/{ID}"),
            NONE,
            Some(ID),
            u,
            BE,
            CTR,
            None,
        ),
        (
            format!("4:memory:/kubepods/besteffort/pod{UID}/{ID}"),
            NONE,
            Some(ID),
            u,
            BE,
            CTR,
            None,
        ),
        (
            format!("/kubepods/pod{UID}/{ID}"),
            NONE,
            Some(ID),
            u,
            GU,
            CTR,
            None,
        ),
        (
            format!("/kubepods/burstable/pod{UID}/crio-{ID}"),
            CRIO,
            Some(ID),
            u,
            BU,
            CTR,
            None,
        ),
        (
            format!("/kubepods/burstable/pod{UID}/crio-conmon-{ID}"),
            CRIO,
            Some(ID),
            u,
            BU,
            MON,
            None,
        ),
        (format!("/kubepods/pod{UID}"), NONE, None, u, GU, CTR, None),
        (
            "/kubepods/besteffort".into(),
            NONE,
            None,
            None,
            BE,
            CTR,
            None,
        ),
        // kind with the cgroupfs driver (--cgroup-root=/kubelet), k3d (k3s in docker).
        (
            format!("/kubelet/kubepods/besteffort/pod{UID}/{ID}"),
            NONE,
            Some(ID),
            u,
            BE,
            CTR,
            None,
        ),
        (
            format!("/system.slice/docker-{NODE}.scope/kubepods/besteffort/pod{UID}/{ID}"),
            NONE,
            Some(ID),
            u,
            BE,
            CTR,
            None,
        ),
        (
            format!("/docker/{NODE}/kubepods/burstable/pod{UID}/{ID}"),
            NONE,
            Some(ID),
            u,
            BU,
            CTR,
            None,
        ),
        // podman with --cgroup-parent=/kubepods/pod1234 (the lab's form).
        (
            format!("/kubepods/pod1234/libpod-{ID}"),
            PODMAN,
            Some(ID),
            Some("1234"),
            GU,
            CTR,
            None,
        ),
        (
            "/kubepods/pod1234/conmon".into(),
            PODMAN,
            None,
            Some("1234"),
            GU,
            MON,
            None,
        ),
        // A non-uid "pod..." directory is not a pod.
        ("/kubepods/podman".into(), NONE, None, None, NOQ, CTR, None),
        (
            "/kubepods/besteffort/notapod/x".into(),
            NONE,
            None,
            None,
            BE,
            CTR,
            None,
        ),
    ]);
}

#[test]
fn engines_outside_kubernetes() {
    let rootless = "/user.slice/user-1000.slice/user@1000.service";
    check_rows(vec![
        // docker: systemd driver (rootful, rootless), cgroupfs driver, BuildKit steps.
        (
            format!("/system.slice/docker-{ID}.scope"),
            DOCKER,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            format!("{rootless}/user.slice/docker-{ID}.scope"),
            DOCKER,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            format!("/docker/{ID}"),
            DOCKER,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            format!("/docker/{ID}.scope"),
            DOCKER,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            format!("/docker/buildkit/{BK}"),
            DOCKER,
            Some(BK),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            format!("/system.slice/docker-{BK}.scope"),
            DOCKER,
            Some(BK),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            format!("/docker/{NODE}/docker/{ID}"),
            DOCKER,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            format!("/moby/{ID}"),
            DOCKER,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        // docker --cgroup-parent=/actions_job: the path does not say docker.
        (
            format!("/actions_job/{ID}"),
            NONE,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        // podman: systemd (rootful, rootless, pods), cgroupfs, --cgroups=split.
        (
            format!("/machine.slice/libpod-{ID}.scope"),
            PODMAN,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            format!("/machine.slice/libpod-conmon-{ID}.scope"),
            PODMAN,
            Some(ID),
            None,
            NOQ,
            MON,
            None,
        ),
        (
            format!("/machine.slice/libpod-{ID}.scope/container"),
            PODMAN,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            format!("{rootless}/user.slice/libpod-{ID}.scope"),
            PODMAN,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            format!("{rootless}/user.slice/libpod-conmon-{ID}.scope"),
            PODMAN,
            Some(ID),
            None,
            NOQ,
            MON,
            None,
        ),
        (
            format!("/machine.slice/machine-libpod_pod_{SB}.slice/libpod-{ID}.scope"),
            PODMAN,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            format!("/libpod_parent/libpod-{ID}"),
            PODMAN,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            format!("/libpod_parent/libpod_pod_{SB}/libpod-{ID}"),
            PODMAN,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            "/libpod_parent/conmon".into(),
            PODMAN,
            None,
            None,
            NOQ,
            MON,
            None,
        ),
        (
            format!("/libpod_parent/libpod_pod_{SB}/conmon"),
            PODMAN,
            None,
            None,
            NOQ,
            MON,
            None,
        ),
        (
            format!("/system.slice/web.service/libpod-payload-{ID}"),
            PODMAN,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            "/system.slice/web.service/runtime".into(),
            PODMAN,
            None,
            None,
            NOQ,
            MON,
            None,
        ),
        (
            format!("{rootless}/app.slice/web.service/libpod-payload-{ID}"),
            PODMAN,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            format!("{rootless}/app.slice/web.service/runtime"),
            PODMAN,
            None,
            None,
            NOQ,
            MON,
            None,
        ),
        (
            format!("/user.slice/user-1000.slice/session-3.scope/runtime/libpod-payload-{ID}"),
            PODMAN,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        // nerdctl: systemd driver (rootful, rootless), cgroupfs (containerd's /default/<id>).
        (
            format!("/system.slice/nerdctl-{ID}.scope"),
            CTRD,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            format!("{rootless}/user.slice/nerdctl-{ID}.scope"),
            CTRD,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            format!("/default/{ID}"),
            CTRD,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        // containerd namespaces.
        (
            format!("/k8s.io/{ID}"),
            CTRD,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        ("/k8s.io/c1".into(), CTRD, Some("c1"), None, NOQ, CTR, None),
        (
            "/default/web_1.x-2".into(),
            CTRD,
            Some("web_1.x-2"),
            None,
            NOQ,
            CTR,
            None,
        ),
        // An unknown namespace does not say containerd (docker --cgroup-parent=/test looks the same).
        (format!("/test/{ID}"), NONE, Some(ID), None, NOQ, CTR, None),
        // runc without a cgroupsPath: fs manager <own cgroup>/<id>; systemd ":runc:<id>".
        (
            format!("/system.slice/containerd.service/{ID}"),
            NONE,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        (format!("/{ID}"), NONE, Some(ID), None, NOQ, CTR, None),
        (
            format!("/system.slice/runc-{ID}.scope"),
            NONE,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
        (
            "/system.slice/runsc-abc123.scope".into(),
            NONE,
            Some("abc123"),
            None,
            NOQ,
            CTR,
            None,
        ),
        // cri-o outside a pod.
        (
            format!("/system.slice/crio-{ID}.scope"),
            CRIO,
            Some(ID),
            None,
            NOQ,
            CTR,
            None,
        ),
    ]);
}

#[test]
fn kata_sandboxes_are_not_containers() {
    let u = Some(UID);
    check_rows(vec![
        // Go runtime, cgroupfs: the sandbox's cgroup renamed kata_<name> in the pod cgroup.
        (
            format!("/kubepods/besteffort/pod{UID}/kata_{SB}"),
            NONE,
            None,
            u,
            BE,
            CTR,
            Some(SB),
        ),
        (
            format!("/kubepods/burstable/pod{UID}/kata_crio-{SB}"),
            CRIO,
            None,
            u,
            BU,
            CTR,
            Some(SB),
        ),
        (
            format!("/docker/kata_{ID}"),
            DOCKER,
            None,
            None,
            NOQ,
            CTR,
            Some(ID),
        ),
        // sandbox_cgroup_only = false: everything but the vCPU threads.
        (
            format!("/kata_overhead/{SB}"),
            NONE,
            None,
            None,
            NOQ,
            CTR,
            Some(SB),
        ),
        (
            format!("4:memory:/kata_overhead/{SB}"),
            NONE,
            None,
            None,
            NOQ,
            CTR,
            Some(SB),
        ),
        // runtime-rs: overhead under systemd, and the fallback path without an OCI spec.
        (
            format!("/kata.slice/kata-overhead.slice/runtime-rs-{SB}.scope"),
            NONE,
            None,
            None,
            NOQ,
            CTR,
            Some(SB),
        ),
        (
            format!("/kata_sandboxed_pod/{SB}"),
            NONE,
            None,
            None,
            NOQ,
            CTR,
            Some(SB),
        ),
        // With the systemd driver kata keeps the sandbox container's scope: indistinguishable
        // from the pause container's (the CRI says it is a sandbox).
        (
            format!("{}/cri-containerd-{SB}.scope", be_pod()),
            CTRD,
            Some(SB),
            u,
            BE,
            CTR,
            None,
        ),
        ("/kata_overhead".into(), NONE, None, None, NOQ, CTR, None),
        (
            "/kubepods/besteffort/kata_x".into(),
            NONE,
            None,
            None,
            BE,
            CTR,
            None,
        ),
    ]);
}

#[test]
fn unresolved_cgroup_namespace_prefixes_do_not_matter() {
    // Paths from inside a cgroup namespace ("/../..") are resolved before the parser sees
    // them; if one slips through, the ".." components match nothing.
    check_rows(vec![
        (
            format!("0::/../../kubepods/besteffort/pod{UID}/crio-{ID}"),
            CRIO,
            Some(ID),
            Some(UID),
            BE,
            CTR,
            None,
        ),
        (format!("/../{ID}"), NONE, Some(ID), None, NOQ, CTR, None),
    ]);
}

#[test]
fn proc_cgroup_lines_mounts_and_deleted() {
    let want = parse_cgroup_path(&format!("/system.slice/crio-{ID}.scope"));
    assert_eq!(want.container_id.as_deref(), Some(ID));
    for path in [
        format!("0::/system.slice/crio-{ID}.scope"),
        format!("0::/system.slice/crio-{ID}.scope\n"),
        format!("4:memory,cpu:/system.slice/crio-{ID}.scope"),
        format!("1:name=systemd:/system.slice/crio-{ID}.scope"),
        format!("/sys/fs/cgroup/unified/system.slice/crio-{ID}.scope"),
        format!("/system.slice/crio-{ID}.scope (deleted)"),
        format!("/system.slice//crio-{ID}.scope/"),
    ] {
        assert_eq!(parse_cgroup_path(&path), want, "{path}");
    }
}

#[test]
fn host_paths_are_nothing() {
    for path in [
        "/",
        "0::/",
        "1:name=systemd:/",
        "/init.scope",
        "/system.slice",
        "/system.slice/sshd.service",
        "/system.slice/containerd.service",
        "/system.slice/crio.service",
        "/system.slice/docker.service",
        "/system.slice/podman.service",
        "/system.slice/kubelet.service",
        "/system.slice/runtime",
        "/podruntime/runtime",
        "/podruntime/kubelet",
        "/runtime.slice",
        "/k3s",
        "/user.slice",
        "/user.slice/user-1000.slice/session-3.scope",
        "/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.socket",
        "/user.slice/user-1000.slice/user@1000.service/app.slice/app-gnome-x.scope",
        "/machine.slice",
        "/machine.slice/machine-libpod_pod_abc.slice",
        "/machine.slice/machine-qemu\\x2d1\\x2dvm.scope",
        "/libpod_parent",
        "/docker",
        "/docker/buildkit",
        "/docker/notanid",
        "/moby/c1",
        "/kata_overhead",
        "/fake/ctr-abc",
        "/some_agent/5b8f4550e708801d19ad2a580ac26cb1",
        "/crio-test",
        "/libpod-abc",
        "/system.slice/foo-0123.scope",
    ] {
        check_rows(vec![(path.into(), NONE, None, None, NOQ, CTR, None)]);
    }
}

#[test]
fn malformed_paths_are_nothing_and_do_not_panic() {
    let long = "a".repeat(200);
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
        "/docker-a-b.scope",
        &format!("/docker-{long}.scope"),
        "/kubepods.slice/kubepods-besteffort-pod.slice",
        "/kubepods.slice/kubepods-besteffort-podxyz.slice",
        "/kubepods.slice/kubepods-weird.slice",
        "/kubepods.slice/kubepods-a-b-c-d.slice",
        "/kubepods-.slice",
        "/k8s.io/",
        "/k8s.io/-bad",
        "/k8s.io/bad-",
        "/k8s.io/a..b",
        "/x.slice:cri-containerd:",
        "/x.slice::abc",
        "/x.slice:cri-containerd:a-b",
        "/x.slice:cri-containerd:abc:extra",
        ":cri-containerd:abc",
        "/x.scope:cri-containerd:abc",
        "/docker/abc.scope",
        "/kata_",
        "/kata_overhead/",
        "/kata_overhead/-x",
        "/\u{fffd}/\u{fffd}",
        "/ü/ü/ü",
        "k8s_",
        "////",
        "(deleted)",
    ] {
        let got = parse_cgroup_path(path);
        assert_eq!(got.container_id, None, "{path:?}: {got:?}");
        assert_eq!(got.sandbox_id, None, "{path:?}: {got:?}");
        assert_eq!(got.runtime, None, "{path:?}: {got:?}");
        assert_eq!(got.pod_uid, None, "{path:?}: {got:?}");
        assert!(!got.conmon, "{path:?}: {got:?}");
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

/// Whether `path` contains a word that names `runtime` (the test's own list, not the table's):
/// a path may only claim a runtime it names.
fn path_names(path: &str, runtime: Runtime) -> bool {
    let words: &[&str] = match runtime {
        Runtime::Crio => &["crio"],
        Runtime::Containerd => &["cri-containerd", "k8s.io", "default", "nerdctl"],
        Runtime::Docker => &["docker", "moby"],
        Runtime::Podman => &["libpod", "conmon", "runtime"],
    };
    words.iter().any(|w| path.contains(w))
}

/// Invariants every answer keeps, whatever the input.
fn check_invariants(path: &str, got: &CgroupInfo) {
    for id in [&got.container_id, &got.sandbox_id].into_iter().flatten() {
        assert!(
            !id.is_empty() && path.contains(id.as_str()),
            "{path:?}: {got:?}"
        );
        assert!(!id.contains('/') && !id.contains(':'), "{path:?}: {got:?}");
    }
    assert!(
        got.container_id.is_none() || got.sandbox_id.is_none(),
        "{path:?}: a container or a sandbox, not both: {got:?}"
    );
    if got.sandbox_id.is_some() {
        assert!(
            path.contains("kata") || path.contains("runtime-rs-"),
            "{path:?}: {got:?}"
        );
        assert!(!got.conmon, "{path:?}: {got:?}");
    }
    if let Some(rt) = got.runtime {
        assert!(path_names(path, rt), "{path:?} does not name {rt}: {got:?}");
    }
    if got.conmon {
        assert!(got.runtime.is_some(), "{path:?}: {got:?}");
    }
    if let Some(uid) = &got.pod_uid {
        assert!(!uid.is_empty() && !uid.contains('_'), "{path:?}: {got:?}");
        assert!(
            path.contains(&uid.replace('-', "_")) || path.contains(uid.as_str()),
            "{path:?}: {got:?}"
        );
        assert!(got.qos.is_some(), "{path:?}: a pod always has a qos class");
    }
    if let Some(q) = &got.qos {
        assert!(
            ["guaranteed", "burstable", "besteffort"].contains(&q.as_str()),
            "{path:?}: {got:?}"
        );
    }
}

#[test]
fn fuzz_random_paths_never_panic_and_stay_consistent() {
    // Components are built as <prefix><id><suffix> from pieces of every recognised form,
    // valid and broken, plus junk; paths are 1-8 of them, sometimes with a /proc prefix.
    const PREFIXES: &[&str] = &[
        "",
        "",
        "",
        "crio-",
        "crio-conmon-",
        "libpod-",
        "libpod-conmon-",
        "libpod-payload-",
        "docker-",
        "cri-containerd-",
        "nerdctl-",
        "runc-",
        "runtime-rs-",
        "kata_",
        "kata_crio-",
        "pod",
        "kubepods-",
        "kubepods-besteffort-",
        "kubepods-burstable-pod",
        "kubelet-kubepods-pod",
        "kubepods-besteffort-pod0a1b_2c.slice:cri-containerd:",
        "system.slice:docker:",
        "x.slice:crio:",
        "x.slice:other:",
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
        "runtime",
        "k8s.io",
        "docker",
        "buildkit",
        "moby",
        "default",
        "kata_overhead",
        "kata_sandboxed_pod",
        "container",
        "web_1.x-2",
        "a..b",
        "\u{0}",
        "\u{fffd}",
        ":",
        "..",
        " (deleted)",
        "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90",
        "A1B2C3D4E5F60718293A4B5C6D7E8F90A1B2C3D4E5F60718293A4B5C6D7E8F9",
    ];
    const SUFFIXES: &[&str] = &["", "", "", ".scope", ".slice", ".service", "\n", "/", ":"];
    const LEADS: &[&str] = &[
        "",
        "",
        "/",
        "0::/",
        "4:memory:/",
        "1:name=systemd:/",
        "x:y:",
        ":",
        "/sys/fs/cgroup/unified/",
    ];
    let mut rng = Rng::new(0xc6_0a7b);
    let (mut containers, mut sandboxes, mut monitors, mut pods, mut unknown) = (0, 0, 0, 0, 0);
    for _ in 0..60_000 {
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
        check_invariants(&path, &got);
        containers += usize::from(got.container_id.is_some());
        sandboxes += usize::from(got.sandbox_id.is_some());
        monitors += usize::from(got.conmon);
        pods += usize::from(got.pod_uid.is_some());
        unknown += usize::from(got.container_id.is_some() && got.runtime.is_none());
    }
    // The generator must reach every kind of answer, or the invariants prove nothing.
    for (what, n, min) in [
        ("containers", containers, 5_000),
        ("sandboxes", sandboxes, 200),
        ("monitors", monitors, 500),
        ("pods", pods, 500),
        ("containers of unknown runtime", unknown, 500),
    ] {
        assert!(n > min, "the generator should hit {what}: got {n}");
    }
}

#[test]
fn fuzz_arbitrary_strings_never_panic() {
    // Unstructured input: any mix of path syntax, hex, letters and non-ASCII.
    const ALPHABET: &[&str] = &[
        "/", "/", ":", "-", "_", ".", "a", "f", "0", "9", "k", "z", "é", "\u{0}", "\n", " ", "(",
        "\u{fffd}", "slice", "scope", "pod", "kata_", "crio", "docker",
    ];
    let mut rng = Rng::new(0x0bad_5eed);
    for _ in 0..30_000 {
        let path: String = (0..rng.below(40)).map(|_| rng.pick(ALPHABET)).collect();
        let got = parse_cgroup_path(&path);
        check_invariants(&path, &got);
    }
}
