//! The container lab itself, checked against the runtimes and the kernel (root only).
//!
//! Each test starts real containers, checks what the lab reports against an independent source
//! (/proc, cgroupfs, the runtime's CLI), execs into the container, drops it and checks nothing is
//! left behind.
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::MetadataExt;
use std::panic::AssertUnwindSafe;

use podtrace_tests::lab::{
    self, cgroup_dir, cgroup_inode, proc_cgroup, proc_cmdline, proc_status, try_proc_status,
    unified_root, ContainerdLab, CrioLikeContainer, CrioOpts, CrioPod, CtrOpts, FakeContainer,
    PodmanContainer, PodmanOpts, ProcessRef, Qos,
};

/// The host pid is the init of its own pid namespace, one level below ours.
fn assert_namespace_init(pid: u32) {
    let st = proc_status(pid);
    let ours = proc_status(std::process::id()).nspid.len();
    assert_eq!(
        st.nspid.len(),
        ours + 1,
        "{pid} should be one pid namespace below the test: {st:?}"
    );
    assert_eq!(
        st.nspid.first(),
        Some(&pid),
        "NSpid starts with the host pid: {st:?}"
    );
    assert_eq!(
        st.nspid.last(),
        Some(&1),
        "{pid} is not pid 1 in its namespace: {st:?}"
    );
}

/// The process really lives in that cgroup2 directory: its inode is the id, and cgroup.procs
/// lists the pid.
fn assert_in_cgroup(pid: u32, cgroup: &str, cgroup_id: u64) {
    let dir = unified_root().join(cgroup.trim_start_matches('/'));
    let ino = std::fs::metadata(&dir)
        .unwrap_or_else(|e| panic!("stat {}: {e}", dir.display()))
        .ino();
    assert_eq!(
        cgroup_id,
        ino,
        "cgroup_id is not the inode of {}",
        dir.display()
    );
    let procs = std::fs::read_to_string(dir.join("cgroup.procs")).expect("read cgroup.procs");
    assert!(
        procs.lines().any(|l| l.trim() == pid.to_string()),
        "{} does not list {pid}: {procs}",
        dir.display()
    );
}

/// `sh -c` inside prints its own cgroup and pid 1's command line: proves the exec entered the
/// container's pid namespace and cgroup.
const PROBE: &[&str] = &[
    "sh",
    "-c",
    "cat /proc/self/cgroup; echo; cat /proc/1/cmdline",
];

fn assert_exec_probe(out: &std::process::Output, cgroup: &str, init_cmdline: &str) {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "exec failed ({}): {stdout} {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Inside a cgroup namespace the path would be `/`; none of these runtimes creates one here.
    assert!(
        stdout.lines().any(|l| l == format!("0::{cgroup}")),
        "exec'd process is not in {cgroup}:\n{stdout}"
    );
    assert!(
        stdout.replace('\0', " ").contains(init_cmdline),
        "pid 1 inside is not `{init_cmdline}`:\n{stdout}"
    );
}

fn assert_gone(what: &str, p: ProcessRef) {
    assert!(!p.is_alive(), "{what} {} still alive after teardown", p.pid);
}

fn assert_cgroup_gone_everywhere(cgroup: &str) {
    for root in std::fs::read_dir("/sys/fs/cgroup")
        .expect("list /sys/fs/cgroup")
        .flatten()
        .map(|e| e.path())
        .chain([unified_root().to_path_buf()])
    {
        let dir = root.join(cgroup.trim_start_matches('/'));
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

#[test]
fn proc_status_reads_this_process() {
    let me = std::process::id();
    let st = proc_status(me);
    assert_eq!((st.pid, st.tgid), (me, me));
    // SAFETY: getppid cannot fail.
    let ppid = u32::try_from(unsafe { libc::getppid() }).expect("ppid fits u32");
    assert_eq!(st.ppid, ppid);
    assert_eq!(st.nspid.first(), Some(&me));
    assert!(
        try_proc_status(u32::MAX).is_none(),
        "pid u32::MAX cannot exist"
    );
    let nested = "Name:\tsleep\nState:\tS (sleeping)\nTgid:\t42\nNgid:\t0\nPid:\t42\nPPid:\t41\n\
                  Uid:\t0\t0\t0\t0\nNStgid:\t42\t7\t1\nNSpid:\t42\t7\t1\n";
    let st = lab::process::parse_status(42, nested);
    assert_eq!(st.nspid, vec![42, 7, 1]);
    assert_eq!((st.name.as_str(), st.state, st.ppid), ("sleep", 'S', 41));
}

#[test]
fn podman_container_ground_truth_exec_and_teardown() {
    lab::require_root();
    let c = PodmanContainer::start(&["/bin/sleep", "600"]);
    assert_eq!(c.id.len(), 64, "podman id {:?}", c.id);
    assert_namespace_init(c.pid);
    assert_eq!(
        proc_status(c.pid).ppid,
        c.conmon_pid,
        "init's parent is not conmon"
    );
    let conmon = proc_cmdline(c.conmon_pid);
    assert!(conmon[0].ends_with("conmon"), "conmon argv {conmon:?}");
    assert!(
        conmon.windows(2).any(|w| w[0] == "-c" && w[1] == c.id),
        "{conmon:?}"
    );
    assert_eq!(c.cgroup, format!("/libpod_parent/libpod-{}", c.id));
    assert_eq!(
        c.cgroup, c.inspect_cgroup_path,
        "/proc and podman inspect disagree"
    );
    assert_in_cgroup(c.pid, &c.cgroup, c.cgroup_id);
    assert_exec_probe(&c.exec(PROBE), &c.cgroup, "/bin/sleep 600");
    assert_eq!(
        c.exec(&["false"]).status.code(),
        Some(1),
        "exec status is the command's"
    );

    let (init, conmon, cgroup, name) = (
        ProcessRef::of(c.pid),
        ProcessRef::of(c.conmon_pid),
        c.cgroup.clone(),
        c.name.clone(),
    );
    drop(c);
    assert_gone("init", init);
    assert_gone("conmon", conmon);
    assert!(!cgroup_dir(&cgroup).exists(), "{cgroup} left behind");
    let ps = lab::cmd::run_ok(
        "podman",
        &["ps", "-a", "-q", "--filter", &format!("name=^{name}$")],
    );
    assert!(ps.trim().is_empty(), "podman still lists {name}: {ps}");
}

#[test]
fn podman_cgroup_parent_is_used_and_pruned() {
    lab::require_root();
    let parent = format!("/{}/pod-a", lab::unique_name("podtrace-lab-kubepods"));
    let c = PodmanContainer::start_with(
        PodmanOpts {
            cgroup_parent: Some(parent.clone()),
            ..PodmanOpts::default()
        },
        &["/bin/sleep", "600"],
    );
    assert_eq!(c.cgroup, format!("{parent}/libpod-{}", c.id));
    assert_in_cgroup(c.pid, &c.cgroup, c.cgroup_id);
    let top = parent
        .rsplit_once('/')
        .map(|(t, _)| t.to_string())
        .expect("two levels");
    drop(c);
    assert_cgroup_gone_everywhere(&top);
}

#[test]
fn crio_like_container_ground_truth_exec_and_teardown() {
    lab::require_root();
    let c = CrioLikeContainer::start(
        "app",
        &["/bin/sh", "-c", "echo hello-from-init; exec sleep 600"],
    );
    let uid_ = c.pod_uid.replace('-', "_");
    let slice =
        format!("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid_}.slice");
    assert_eq!(c.cgroup_path, format!("{slice}/crio-{}.scope", c.id));
    assert_eq!(
        c.conmon_cgroup,
        format!("{slice}/crio-conmon-{}.scope", c.id)
    );
    assert_in_cgroup(c.pid, &c.cgroup_path, c.cgroup_id);
    assert_namespace_init(c.pid);
    assert_eq!(
        proc_status(c.pid).ppid,
        c.conmon_pid,
        "init's parent is not conmon"
    );
    let state = c.runc_state().expect("runc state while running");
    assert_eq!(
        state["pid"].as_u64(),
        Some(u64::from(c.pid)),
        "runc state: {state}"
    );
    assert_eq!(
        state["status"].as_str(),
        Some("running"),
        "runc state: {state}"
    );

    // conmon's argv is what cri-o passes, and what the real process shows.
    let argv = proc_cmdline(c.conmon_pid);
    assert_eq!(argv, c.conmon_argv, "conmon's /proc cmdline");
    let arg = |flag: &str| {
        argv.windows(2)
            .find(|w| w[0] == flag)
            .map(|w| w[1].clone())
            .unwrap_or_else(|| panic!("conmon has no {flag}: {argv:?}"))
    };
    assert_eq!(arg("-c"), c.id);
    assert_eq!(arg("-u"), c.id);
    assert_eq!(
        arg("-n"),
        format!("k8s_app_{}_{}_{}_0", c.pod_name, c.namespace, c.pod_uid)
    );
    let log = arg("-l");
    assert!(
        log.ends_with(&format!(
            "/var/log/pods/{}_{}_{}/app/0.log",
            c.namespace, c.pod_name, c.pod_uid
        )),
        "conmon -l {log}"
    );
    assert_eq!(std::path::Path::new(&log), c.log_path);
    assert_eq!(std::path::Path::new(&arg("-b")), c.bundle);

    assert_exec_probe(&c.exec(PROBE), &c.cgroup_path, "sleep 600");
    assert_eq!(
        c.exec(&["false"]).status.code(),
        Some(1),
        "exec status is the command's"
    );
    assert!(
        lab::cmd::poll_until(std::time::Duration::from_secs(5), || c
            .logs()
            .contains("stdout F hello-from-init")),
        "conmon's k8s-file log lacks the init's output: {:?}",
        c.logs()
    );

    let (init, conmon, bundle) = (
        ProcessRef::of(c.pid),
        ProcessRef::of(c.conmon_pid),
        c.bundle.clone(),
    );
    drop(c);
    assert_gone("init", init);
    assert_gone("conmon", conmon);
    assert_cgroup_gone_everywhere(&slice);
    assert!(!bundle.exists(), "bundle {} left behind", bundle.display());
}

#[test]
fn crio_like_containers_share_a_pod_slice() {
    lab::require_root();
    let pod = CrioPod {
        qos: Qos::Burstable,
        ..CrioPod::new()
    };
    let opts = |attempt| CrioOpts {
        pod: Some(pod.clone()),
        attempt,
        conmon_in_test_cgroup: true,
    };
    let a = CrioLikeContainer::start_with("first", opts(0), &["/bin/sleep", "600"]);
    let b = CrioLikeContainer::start_with("second", opts(3), &["/bin/sleep", "600"]);
    let slice = pod.slice();
    assert!(slice.starts_with("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"));
    assert_eq!(a.cgroup_path, format!("{slice}/crio-{}.scope", a.id));
    assert_eq!(b.cgroup_path, format!("{slice}/crio-{}.scope", b.id));
    assert_eq!(
        b.log_path.file_name().and_then(|n| n.to_str()),
        Some("3.log")
    );
    assert!(
        proc_cmdline(b.conmon_pid)
            .iter()
            .any(|a| a.ends_with("_3") && a.starts_with("k8s_second_")),
        "attempt 3 in conmon -n"
    );
    // conmon stays in the test's cgroup when asked to.
    assert_eq!(a.conmon_cgroup, proc_cgroup(std::process::id()));
    let (a_cgroup, a_init) = (a.cgroup_path.clone(), ProcessRef::of(a.pid));
    drop(a);
    assert_gone("first init", a_init);
    assert!(!cgroup_dir(&a_cgroup).exists(), "{a_cgroup} left behind");
    assert!(
        cgroup_dir(&slice).exists(),
        "pod slice removed while `second` still runs"
    );
    assert!(
        b.exec(&["true"]).status.success(),
        "second container still works"
    );
    drop(b);
    assert_cgroup_gone_everywhere(&slice);
}

#[test]
fn containerd_container_ground_truth_exec_and_teardown() {
    lab::require_root();
    let lab = ContainerdLab::start();
    let daemon = ProcessRef::of(lab.pid());
    let c = lab.run(&["/bin/sh", "-c", "echo hello-from-task; exec sleep 600"]);
    assert_eq!(c.cgroup, format!("/{}/{}", c.namespace, c.id));
    assert_in_cgroup(c.pid, &c.cgroup, c.cgroup_id);
    assert_namespace_init(c.pid);
    assert_eq!(
        proc_status(c.pid).ppid,
        c.shim_pid,
        "init's parent is not the shim"
    );
    let shim = proc_cmdline(c.shim_pid);
    assert!(
        shim[0].ends_with("containerd-shim-runc-v2"),
        "shim argv {shim:?}"
    );
    assert_exec_probe(&c.exec(PROBE), &c.cgroup, "sleep 600");
    assert_eq!(
        c.exec(&["false"]).status.code(),
        Some(1),
        "exec status is the command's"
    );
    assert!(
        lab::cmd::poll_until(std::time::Duration::from_secs(5), || c
            .logs()
            .contains("hello-from-task")),
        "task log: {:?}",
        c.logs()
    );
    // A second container with a kubepods-like cgroup parent in the same daemon.
    let parent = format!(
        "/{}/besteffort/pod1",
        lab::unique_name("podtrace-lab-kubepods")
    );
    let k = lab.run_with(
        CtrOpts {
            cgroup_parent: Some(parent.clone()),
            ..CtrOpts::default()
        },
        &["/bin/sleep", "600"],
    );
    assert_eq!(k.cgroup, format!("{parent}/{}", k.id));
    assert_in_cgroup(k.pid, &k.cgroup, k.cgroup_id);

    let (init, shim_ref, cgroup, ns) = (
        ProcessRef::of(c.pid),
        ProcessRef::of(c.shim_pid),
        c.cgroup.clone(),
        c.namespace.clone(),
    );
    drop(c);
    drop(k);
    assert_gone("init", init);
    assert_gone("shim", shim_ref);
    assert!(!cgroup_dir(&cgroup).exists(), "{cgroup} left behind");
    let top = parent.split('/').nth(1).expect("top of parent").to_string();
    assert_cgroup_gone_everywhere(&top);
    assert!(
        daemon.is_alive(),
        "containerd stopped while the lab is still held"
    );
    drop(lab);
    assert_gone("containerd", daemon);
    assert_cgroup_gone_everywhere(&ns);
}

#[test]
fn fake_container_ground_truth_exec_and_teardown() {
    lab::require_root();
    let c = FakeContainer::start(&["sleep", "600"]);
    assert_namespace_init(c.pid);
    assert_eq!(proc_status(c.pid).ppid, c.unshare_pid);
    assert_eq!(proc_cgroup(c.pid), c.cgroup_path);
    assert_eq!(c.cgroup_id, cgroup_inode(&c.cgroup_dir));
    assert_in_cgroup(c.pid, &c.cgroup_path, c.cgroup_id);
    assert_exec_probe(&c.exec(PROBE), &c.cgroup_path, "sleep 600");

    let nested = format!("/{}/pod/ctr", lab::unique_name("podtrace-lab-fake"));
    let n = FakeContainer::start_in(&nested, &["sleep", "600"]);
    assert_eq!(proc_cgroup(n.pid), nested);

    let (init, dir) = (ProcessRef::of(c.pid), c.cgroup_dir.clone());
    drop(c);
    drop(n);
    assert_gone("init", init);
    assert!(!dir.exists(), "{} left behind", dir.display());
    assert_cgroup_gone_everywhere(nested.split('/').nth(1).expect("top"));
}

/// Teardown also runs when the test panics with containers alive.
#[test]
fn teardown_runs_when_a_test_panics() {
    lab::require_root();
    let mut seen = Vec::new();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let c = CrioLikeContainer::start("doomed", &["/bin/sleep", "600"]);
        seen.push((ProcessRef::of(c.pid), c.cgroup_path.clone()));
        let f = FakeContainer::start(&["sleep", "600"]);
        seen.push((ProcessRef::of(f.pid), f.cgroup_path.clone()));
        panic!("deliberate panic with two containers alive");
    }));
    assert!(result.is_err(), "the closure panics");
    assert_eq!(seen.len(), 2);
    for (p, cgroup) in seen {
        assert_gone("init", p);
        assert_cgroup_gone_everywhere(&cgroup);
    }
}
