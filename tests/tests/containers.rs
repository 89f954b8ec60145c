//! Issue 3: real containers (podman + conmon + runc, conmon + runc in the cri-o layout,
//! containerd + ctr) seen by the live tracer and by `podtrace tree`, checked against what
//! the runtimes and /proc report.
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::process::Command;

use podtrace_tests::lab::{
    self, CrioLikeContainer, CrioOpts, CrioPod, CtrContainer, PodmanContainer,
};
use podtrace_tests::tracer::{tree_containers, tree_json, tree_processes, Run, Tracer};
use serde_json::Value;

fn events_of(run: &Run, pid: u32) -> Vec<&Value> {
    run.events.iter().filter(|e| e["pid"] == pid).collect()
}

/// The first exec of the container's init carries container, pod and role.
fn first_exec(run: &Run, pid: u32) -> &Value {
    run.events
        .iter()
        .find(|e| e["type"] == "exec" && e["pid"] == pid)
        .unwrap_or_else(|| {
            let near: Vec<String> = run
                .events
                .iter()
                .filter(|e| {
                    e["pid"]
                        .as_u64()
                        .map(|p| p.abs_diff(u64::from(pid)) < 30)
                        .unwrap_or(false)
                })
                .map(|e| {
                    format!(
                        "{} pid={} ppid={} nspid={} comm={} role={} argv={}",
                        e["type"], e["pid"], e["ppid"], e["nspid"], e["comm"], e["role"], e["argv"]
                    )
                })
                .collect();
            panic!("no exec event for the container init {pid}: {near:#?}")
        })
}

/// The tree's container node agrees with the runtime, and each process's parent and
/// container pid agree with /proc (`ps -ef` on the node and in the container).
fn check_tree_against_proc(id: &str, helper_pid: u32, init_pid: u32) -> Value {
    check_tree_against_proc_in(&[], id, helper_pid, init_pid)
}

/// The same, with `tree` given `mode` (e.g. `--cgroup-mode v1`).
fn check_tree_against_proc_in(mode: &[&str], id: &str, helper_pid: u32, init_pid: u32) -> Value {
    let mut args = mode.to_vec();
    args.extend(["--container", &id[..12]]);
    let view = tree_json(&args);
    let containers = tree_containers(&view);
    assert_eq!(containers.len(), 1, "{view:#}");
    let c = containers[0].clone();
    assert_eq!(c["id"], id);
    assert_eq!(c["helper_pid"], helper_pid, "{c:#}");
    assert_eq!(c["init_pid"], init_pid, "{c:#}");
    let procs = tree_processes(&c["processes"]);
    assert!(procs
        .iter()
        .any(|p| p["pid"] == helper_pid && p["role"].is_string()));
    let init = procs
        .iter()
        .find(|p| p["pid"] == init_pid)
        .unwrap_or_else(|| panic!("init {init_pid} in the tree: {c:#}"));
    assert_eq!(init["nspid"], 1);
    assert_eq!(init["role"], "container-init");
    for p in procs {
        let pid = p["pid"].as_u64().expect("pid") as u32;
        let Some(st) = lab::try_proc_status(pid) else {
            continue;
        };
        assert_eq!(
            p["ppid"], st.ppid,
            "ppid of {pid} differs from /proc: {p:#}"
        );
        assert_eq!(
            p["nspid"],
            *st.nspid.last().expect("NSpid"),
            "nspid of {pid}: {p:#}"
        );
    }
    c
}

#[test]
fn podman_container_matches_podman_inspect() {
    let t = Tracer::start(&[]);
    let c = PodmanContainer::start(&["/bin/sh", "-c", "sleep 600 & exec sleep 601"]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    check_tree_against_proc(&c.id, c.conmon_pid, c.pid);
    let run = t.stop();

    let init = first_exec(&run, c.pid);
    assert_eq!(init["container"]["id"], c.id.as_str(), "{init}");
    assert_eq!(init["container"]["name"], c.name.as_str());
    assert_eq!(init["container"]["runtime"], "podman");
    assert_eq!(init["role"], "container-init");
    assert_eq!(init["nspid"], 1);
    assert_eq!(init["cgroup"], c.cgroup.as_str());
    assert_eq!(init["cgroup_id"], c.cgroup_id);
    // conmon (the daemonized copy podman reports) is the container's monitor.
    let conmon: Vec<_> = events_of(&run, c.conmon_pid);
    assert!(!conmon.is_empty(), "events of conmon {}", c.conmon_pid);
    assert!(
        conmon
            .iter()
            .all(|e| e["role"] == "conmon" && e["container"]["id"] == c.id.as_str()),
        "{conmon:#?}"
    );
    // The init's child (the background sleep) is in the container, not its init.
    let child = run
        .events
        .iter()
        .find(|e| e["type"] == "fork" && e["ppid"] == c.pid)
        .expect("the init forked the background sleep");
    assert_eq!(child["container"]["id"], c.id.as_str());
    assert!(child["role"].is_null());
    assert_ne!(child["nspid"], 1);
}

/// `podman restart`: the same id, a new conmon, a new init in a new pid namespace. The new
/// init is the container's init again, and a process that enters the new pid namespace from
/// the host (nsenter: no cgroup of the container) is in the container.
#[test]
fn a_podman_restart_under_the_same_id_gets_a_new_init_and_pid_namespace() {
    let t = Tracer::start(&[]);
    let mut c = PodmanContainer::start(&["/bin/sleep", "600"]);
    let first = c.pid;
    c.restart();
    assert_ne!(c.pid, first, "a new init");
    let ns_of = |pid: u32| {
        std::fs::read_link(format!("/proc/{pid}/ns/pid"))
            .map(|l| l.display().to_string())
            .unwrap_or_default()
    };
    let tag = format!("podtrace-test-restart-{}", std::process::id());
    let out = Command::new("nsenter")
        .args(["-t", &c.pid.to_string(), "-p", "--", "/bin/sh", "-c"])
        .arg(format!("exec /bin/true {tag}"))
        .output()
        .expect("nsenter");
    assert!(out.status.success(), "nsenter: {out:?}");
    let run = t.stop();
    let init = first_exec(&run, c.pid);
    assert_eq!(init["container"]["id"], c.id.as_str(), "{init}");
    assert_eq!(init["role"], "container-init", "the new init: {init}");
    assert_eq!(init["nspid"], 1);
    let entered = run
        .execs_with_arg(&tag)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no exec of `true {tag}`"));
    assert_eq!(
        entered["container"]["id"],
        c.id.as_str(),
        "a process in the new pid namespace ({}) is in the container: {entered}",
        ns_of(c.pid)
    );
    assert!(entered["role"].is_null(), "{entered}");
}

#[test]
fn crio_layout_names_pod_namespace_and_uid() {
    crio_layout(&[]);
}

/// The same with podtrace forced onto the v1 hierarchies (RHEL 8 / OpenShift 4.12 nodes):
/// runc puts the container in every hierarchy, and its v1 path names it as well.
#[test]
fn crio_layout_names_pod_namespace_and_uid_in_v1_mode() {
    crio_layout(&["--cgroup-mode", "v1"]);
}

fn crio_layout(mode: &[&str]) {
    let t = Tracer::start(mode);
    let pod = CrioPod::new();
    let c = CrioLikeContainer::start_with(
        "adapter",
        CrioOpts {
            pod: Some(pod.clone()),
            ..CrioOpts::default()
        },
        &["/bin/sleep", "600"],
    );
    std::thread::sleep(std::time::Duration::from_millis(200));
    let node = check_tree_against_proc_in(mode, &c.id, c.conmon_pid, c.pid);
    assert_eq!(node["name"], "adapter");
    assert_eq!(node["runtime"], "crio");
    let mut args = mode.to_vec();
    args.extend(["--namespace", &pod.namespace, "--pod", &pod.name]);
    let view = tree_json(&args);
    let pods = view["pods"].as_array().expect("pods");
    assert_eq!(pods.len(), 1, "{view:#}");
    assert_eq!(pods[0]["uid"], pod.uid.as_str());
    assert_eq!(pods[0]["qos"], "besteffort");
    let run = t.stop();

    let init = first_exec(&run, c.pid);
    assert_eq!(init["container"]["id"], c.id.as_str(), "{init}");
    assert_eq!(init["container"]["name"], c.container_name.as_str());
    assert_eq!(init["container"]["runtime"], "crio");
    assert_eq!(init["pod"]["name"], c.pod_name.as_str());
    assert_eq!(init["pod"]["namespace"], c.namespace.as_str());
    assert_eq!(init["pod"]["uid"], c.pod_uid.as_str());
    assert_eq!(init["role"], "container-init");
    assert_eq!(init["cgroup"], c.cgroup_path.as_str());
    let want = if mode.is_empty() { "v2" } else { "v1:pids" };
    assert_eq!(init["cgroup_hierarchy"], want, "{init}");
    assert!(
        run.events.iter().any(|e| e["pid"] == c.conmon_pid
            && e["role"] == "conmon"
            && e["pod"]["uid"] == c.pod_uid.as_str()),
        "conmon {} is tagged with its pod",
        c.conmon_pid
    );
    // runc, including its re-exec as `runc init` inside conmon's scope, is the runtime.
    let runc: Vec<_> = run
        .events
        .iter()
        .filter(|e| {
            e["container"]["id"] == c.id.as_str()
                && e["comm"].as_str().unwrap_or("").starts_with("runc")
                && e["nspid"] != 1
        })
        .collect();
    assert!(!runc.is_empty());
    assert!(runc.iter().all(|e| e["role"] == "runtime"), "{runc:#?}");
    // Only this container's processes carry this pod's uid.
    assert!(run
        .events
        .iter()
        .filter(|e| e["pod"]["uid"] == c.pod_uid.as_str())
        .all(|e| e["container"]["id"] == c.id.as_str()));
}

#[test]
fn containerd_task_is_attributed_through_its_shim() {
    let t = Tracer::start(&[]);
    let c = CtrContainer::start(&["/bin/sleep", "600"]);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let run = t.stop();
    let init = first_exec(&run, c.pid);
    assert_eq!(init["container"]["id"], c.id.as_str(), "{init}");
    assert_eq!(init["container"]["runtime"], "containerd");
    assert_eq!(init["role"], "container-init");
    assert_eq!(init["cgroup"], c.cgroup.as_str());
    assert!(
        events_of(&run, c.shim_pid)
            .iter()
            .any(|e| e["role"] == "shim" && e["container"]["id"] == c.id.as_str()),
        "shim {} has role shim",
        c.shim_pid
    );
}

#[test]
fn container_started_before_podtrace_is_found_and_exec_joins_it() {
    let c = PodmanContainer::start(&["/bin/sleep", "600"]);
    // From /proc alone.
    check_tree_against_proc(&c.id, c.conmon_pid, c.pid);
    let t = Tracer::start(&[]);
    let out = c.exec(&["sh", "-c", "echo podtrace-exec-marker; exit 4"]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let run = t.stop();
    let sh = run
        .events
        .iter()
        .find(|e| {
            e["type"] == "exec"
                && e["argv"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .any(|x| x.as_str().unwrap_or("").contains("podtrace-exec-marker"))
                    })
                    .unwrap_or(false)
                && e["comm"] == "sh"
        })
        .expect("exec of the podman exec'd shell");
    assert_eq!(sh["container"]["id"], c.id.as_str(), "{sh}");
    assert!(
        sh["role"].is_null(),
        "an exec'd process is not the init: {sh}"
    );
    assert_ne!(sh["nspid"], 1);
    let pid = sh["pid"].as_u64().expect("pid") as u32;
    let exit = run.one("exit", pid);
    assert_eq!(exit["exit_code"], 4);
    assert_eq!(exit["container"]["id"], c.id.as_str());
}

#[test]
fn main_process_that_forks_children_and_exits() {
    let t = Tracer::start(&[]);
    let c = PodmanContainer::start(&["/bin/sh", "-c", "sleep 0.3 & sleep 0.4 & wait; exit 3"]);
    let init = c.pid;
    // Wait for the container to finish by itself.
    let end = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while lab::try_proc_status(init).is_some() && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let run = t.stop();
    let kids: Vec<_> = run
        .events
        .iter()
        .filter(|e| e["type"] == "fork" && e["ppid"] == init)
        .collect();
    assert_eq!(kids.len(), 2, "two background sleeps: {kids:#?}");
    for k in &kids {
        assert_eq!(k["container"]["id"], c.id.as_str());
        let pid = k["pid"].as_u64().expect("pid") as u32;
        let exit = run.one("exit", pid);
        assert_eq!(exit["exit_code"], 0);
        assert_eq!(exit["container"]["id"], c.id.as_str());
    }
    let exit = run.one("exit", init);
    assert_eq!(exit["exit_code"], 3);
    assert_eq!(exit["role"], "container-init");
    assert_eq!(exit["container"]["id"], c.id.as_str());
}

#[test]
fn run_filters_keep_only_the_container_asked_for() {
    let t = Tracer::start(&["--containers-only", "--event", "exec,exit"]);
    let a = PodmanContainer::start(&["/bin/sleep", "600"]);
    let pod = CrioPod::new();
    let b = CrioLikeContainer::start_with(
        "filtered",
        CrioOpts {
            pod: Some(pod.clone()),
            ..CrioOpts::default()
        },
        &["/bin/sleep", "600"],
    );
    std::process::Command::new("true")
        .status()
        .expect("a host process");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let run = t.stop();
    assert!(!run.events.is_empty());
    for e in &run.events {
        assert!(
            e["type"] == "exec" || e["type"] == "exit" || e["type"] == "lost",
            "{e}"
        );
        assert!(
            e["type"] == "lost" || e["container"].is_object(),
            "host event leaked: {e}"
        );
    }
    assert!(run
        .events
        .iter()
        .any(|e| e["container"]["id"] == a.id.as_str()));
    assert!(run
        .events
        .iter()
        .any(|e| e["container"]["id"] == b.id.as_str()));

    let t = Tracer::start(&["--namespace", &pod.namespace, "--pod", &pod.name]);
    let out = b.exec(&["sh", "-c", "exit 0"]);
    assert!(out.status.success());
    let other = PodmanContainer::start(&["/bin/sleep", "600"]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let run = t.stop();
    assert!(
        run.events
            .iter()
            .any(|e| e["type"] == "exec" && e["comm"] == "sh"),
        "the exec into the pod is kept"
    );
    assert!(
        run.events
            .iter()
            .all(|e| e["pod"]["name"] == pod.name.as_str()),
        "only the pod asked for"
    );
    assert!(run
        .events
        .iter()
        .all(|e| e["container"]["id"] != other.id.as_str()));
}

/// podtrace in a private cgroup namespace (what containerd and cri-o give pods on cgroup v2)
/// sees other processes' cgroups as `/../…`; the tree must still find the container.
#[test]
fn tree_from_a_private_cgroup_namespace() {
    let c = PodmanContainer::start(&["/bin/sleep", "600"]);
    let root = lab::unified_root();
    let name = lab::unique_name("podtrace-cgns");
    let dir = root.join(&name);
    std::fs::create_dir(&dir).expect("create cgroup");
    let script = format!(
        "echo $$ > {}/cgroup.procs && exec unshare --cgroup {} tree --json --container {}",
        dir.display(),
        podtrace_tests::tracer::bin().display(),
        &c.id[..12]
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh");
    let _ = std::fs::remove_dir(&dir);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let view: Value = serde_json::from_slice(&out.stdout).expect("json");
    let containers = tree_containers(&view);
    assert_eq!(containers.len(), 1, "{view:#}");
    assert_eq!(containers[0]["cgroup"], c.cgroup.as_str());
    assert_eq!(containers[0]["init_pid"], c.pid);
}
