//! Issue 10: lifecycles the kernel makes racy (threads ending together, exec from a thread),
//! zombies, nested pid namespaces in a container, and (issue 9) cgroup v1 placement on this
//! hybrid host, each checked against what the kernel or the runtime reports itself.
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use podtrace_tests::lab::{self, CrioLikeContainer, PodmanContainer};
use podtrace_tests::tracer::{tree_containers, tree_json, tree_processes, Tracer};

const LIFECYCLE: &str = env!("CARGO_BIN_EXE_lifecycle");

/// 400 processes whose main thread calls exit_group while 8 threads spin: exactly one exit
/// each (two threads finishing at once on two CPUs must not both report it), with the code
/// waitpid gave the parent.
#[test]
fn exit_group_with_busy_threads_is_one_exit_per_process() {
    let t = Tracer::start(&[]);
    let mut pids = Vec::new();
    for _ in 0..400 {
        let mut child = Command::new(LIFECYCLE)
            .args(["exit-group", "8", "3"])
            .spawn()
            .expect("lifecycle exit-group");
        pids.push(child.id());
        let status = child.wait().expect("wait");
        assert_eq!(status.code(), Some(3), "waitpid's answer");
    }
    let run = t.stop();
    let mut wrong = Vec::new();
    for &pid in &pids {
        let exits = run.of("exit", pid);
        if exits.len() != 1 || exits[0]["exit_code"] != 3 {
            wrong.push((pid, exits.len()));
        }
    }
    let total: usize = pids.iter().map(|&p| run.of("exit", p).len()).sum();
    eprintln!("{} exits for {} processes", total, pids.len());
    assert!(
        wrong.is_empty(),
        "processes without exactly one exit 3: {wrong:?}"
    );
    assert_eq!(
        run.summary.as_ref().expect("summary")["lost"],
        0,
        "nothing lost"
    );
}

#[test]
fn sigkill_of_a_32_thread_process_is_one_exit_with_signal_9() {
    let t = Tracer::start(&[]);
    let mut child = Command::new(LIFECYCLE)
        .args(["threads-sleep", "32"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("lifecycle threads-sleep");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ready line");
    assert_eq!(line.trim(), "ready");
    let threads = std::fs::read_dir(format!("/proc/{}/task", child.id()))
        .expect("tasks")
        .count();
    assert_eq!(threads, 33, "32 threads and main, as /proc says");
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9)
    );
    let run = t.stop();
    let exits = run.of("exit", child.id());
    assert_eq!(exits.len(), 1, "{exits:#?}");
    assert_eq!(exits[0]["signal"], 9);
    assert!(exits[0]["exit_code"].is_null());
}

/// A non-leader thread execs: the kernel keeps the process's pid and start, so it stays one
/// process (no new fork, one exit), with the exec reported from the thread's tid.
#[test]
fn exec_from_a_non_leader_thread_is_the_same_process() {
    let t = Tracer::start(&[]);
    let mut child = Command::new(LIFECYCLE)
        .args(["exec-from-thread", "/bin/sh", "-c", "exit 4"])
        .spawn()
        .expect("lifecycle exec-from-thread");
    let pid = child.id();
    let status = child.wait().expect("wait");
    assert_eq!(status.code(), Some(4));
    let run = t.stop();
    // The kernel gives the exec'ing thread the process's pid and start time (de_thread).
    let execs = run.of("exec", pid);
    let sh = execs
        .iter()
        .find(|e| e["argv"][2] == "exit 4")
        .unwrap_or_else(|| panic!("exec of sh by {pid}: {execs:#?}"));
    assert_eq!(sh["tid"], pid, "after exec the thread is the leader: {sh}");
    assert_eq!(run.of("fork", pid).len(), 1, "one process");
    let exits = run.of("exit", pid);
    assert_eq!(exits.len(), 1);
    assert_eq!(exits[0]["exit_code"], 4);
    assert_eq!(exits[0]["start_ns"], sh["start_ns"], "same identity");
}

/// The leader calls the exit syscall (not exit_group) with 7, another thread exits later
/// with 9: the exit event says what waitpid says (on Linux, the last thread's code).
#[test]
fn exit_code_is_what_waitpid_says_when_the_leader_exits_first() {
    let t = Tracer::start(&[]);
    let mut child = Command::new(LIFECYCLE)
        .args(["leader-exits-first", "7", "9"])
        .spawn()
        .expect("lifecycle leader-exits-first");
    let status = child.wait().expect("wait");
    let code = status.code().expect("an exit code");
    assert!(code == 7 || code == 9, "{status}");
    let run = t.stop();
    let exits = run.of("exit", child.id());
    assert_eq!(exits.len(), 1, "{exits:#?}");
    assert_eq!(
        exits[0]["exit_code"], code,
        "waitpid said {code}: {}",
        exits[0]
    );
}

/// A child that exits while its parent sleeps is a zombie until the parent waits: the tree
/// shows it `<defunct>` (live from /proc, and from a trace at that time), then not at all.
#[test]
fn a_zombie_is_defunct_until_its_parent_reaps_it() {
    let dir = tempfile::tempdir().expect("tmp");
    let trace = dir.path().join("zombie.trace");
    let t = Tracer::start(&["--record", &trace.display().to_string()]);
    let mut parent = Command::new(LIFECYCLE)
        .args(["zombie-parent", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("lifecycle zombie-parent");
    let mut out = BufReader::new(parent.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("child pid");
    let zombie: u32 = line.trim().parse().expect("a pid");
    std::thread::sleep(Duration::from_millis(500));
    // The kernel's word: it is a zombie now.
    assert_eq!(lab::proc_status(zombie).state, 'Z');
    let live = tree_json(&["--all"]);
    let node = tree_processes(&live["host"])
        .into_iter()
        .find(|p| p["pid"] == zombie)
        .unwrap_or_else(|| panic!("zombie {zombie} not in the live tree: {live:#}"));
    assert_eq!(node["zombie"], true, "{node:#}");
    let text = Command::new(podtrace_tests::tracer::bin())
        .args(["tree", "--all"])
        .output()
        .expect("tree");
    assert!(
        String::from_utf8_lossy(&text.stdout)
            .lines()
            .any(|l| l.contains(&format!("{zombie} ")) && l.contains("<defunct>")),
        "{}",
        String::from_utf8_lossy(&text.stdout)
    );
    line.clear();
    out.read_line(&mut line).expect("reaped line");
    assert_eq!(line.trim(), "reaped");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!lab::is_alive(zombie));
    let live = tree_json(&["--all"]);
    assert!(
        tree_processes(&live["host"])
            .iter()
            .all(|p| p["pid"] != zombie),
        "reaped: gone from the live tree"
    );
    assert!(parent.wait().expect("wait").success());
    let run = t.stop();
    // From the trace: defunct between its exit and the reap, gone after.
    let exit = run.one("exit", zombie);
    let at = exit["ts"].as_str().expect("ts");
    let p = trace.display().to_string();
    let then = tree_json(&["--all", "--from", &p, "--at", at]);
    let node = tree_processes(&then["host"])
        .into_iter()
        .find(|n| n["pid"] == zombie)
        .unwrap_or_else(|| panic!("zombie {zombie} at its exit: {then:#}"));
    assert_eq!(node["zombie"], true);
    let end = tree_json(&["--all", "--from", &p]);
    assert!(tree_processes(&end["host"])
        .iter()
        .all(|n| n["pid"] != zombie));
}

/// `unshare --pid --fork` inside a cri-o-layout container: the nested namespace's PID 1 is an
/// ordinary process of the container, the init keeps its role, the container does not end.
#[test]
fn a_pid_namespace_made_inside_a_container_is_nested() {
    let t = Tracer::start(&[]);
    let c = CrioLikeContainer::start("nested", &["/bin/sleep", "600"]);
    // Making a pid namespace takes CAP_SYS_ADMIN, which runc's default spec does not give a
    // container process: enter the container's pid namespace and its cgroups (in every
    // hierarchy) from the host, as a privileged process in a pod would be (with the host's
    // unshare: the container's mount namespace is not needed).
    let mut enter = Command::new("nsenter");
    enter
        .arg("--target")
        .arg(c.pid.to_string())
        .args(["--pid", "--"])
        .args([
            "unshare",
            "--pid",
            "--fork",
            "/bin/sh",
            "-c",
            "sleep 0.3; exit 0",
        ]);
    for dir in lab::cgroup::dirs_everywhere(&c.cgroup_path) {
        if dir.exists() {
            lab::cgroup::join_at_exec(&mut enter, &dir);
        }
    }
    let out = enter.output().expect("nsenter");
    assert!(out.status.success(), "{out:?}");
    std::thread::sleep(Duration::from_millis(200));
    let view = tree_json(&["--container", &c.id[..12]]);
    let node = tree_containers(&view)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("container in the tree: {view:#}"));
    assert_eq!(node["init_pid"], c.pid, "the init keeps its role: {node:#}");
    let run = t.stop();
    let nested = run
        .events
        .iter()
        .find(|e| e["type"] == "exec" && e["argv"][2] == "sleep 0.3; exit 0")
        .expect("the nested shell's exec");
    assert_eq!(nested["nspid"], 1, "PID 1 of the nested namespace");
    let init_ns = std::fs::metadata(format!("/proc/{}/ns/pid", c.pid))
        .expect("init pidns")
        .ino();
    assert_ne!(nested["pidns"].as_u64(), Some(init_ns), "its own namespace");
    assert_eq!(nested["container"]["id"], c.id.as_str(), "{nested}");
    assert!(
        nested["role"].is_null(),
        "not the container's init: {nested}"
    );
    let pid = nested["pid"].as_u64().expect("pid") as u32;
    let exit = run.one("exit", pid);
    assert_eq!(exit["container"]["id"], c.id.as_str());
    assert!(
        run.of("exit", c.pid).is_empty(),
        "the container's init lives on"
    );
    assert!(lab::is_alive(c.pid));
}

/// Forced into v1 mode on this hybrid host, podtrace places a podman container that ran
/// before it by its v1 cgroup alone: the path and inode /proc and stat give for that
/// hierarchy, and the container podman inspect names.
#[test]
fn v1_mode_attributes_a_container_started_before_podtrace() {
    let c = PodmanContainer::start(&["/bin/sh", "-c", "sleep 600 & exec sleep 601"]);
    std::thread::sleep(Duration::from_millis(200));
    let t = Tracer::start(&["--cgroup-mode", "v1"]);
    // The container's background child, killed now: its exit is placed in v1.
    let kid = lab::proc_children(c.pid)
        .into_iter()
        .next()
        .expect("the init's background child");
    // SAFETY: signalling a process of the test's own container.
    unsafe { libc::kill(kid as i32, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(300));
    let view = tree_json(&["--cgroup-mode", "v1", "--container", &c.id[..12]]);
    let run = t.stop();
    assert!(
        run.stderr
            .iter()
            .any(|l| l.contains("cgroup mode: v1 (pids hierarchy)")),
        "{:#?}",
        run.stderr
    );
    let line = std::fs::read_to_string(format!("/proc/{}/cgroup", c.pid))
        .expect("the init's /proc/PID/cgroup")
        .lines()
        .find(|l| l.split(':').nth(1) == Some("pids"))
        .map(|l| l.splitn(3, ':').nth(2).unwrap_or("").to_string())
        .expect("the init's pids line");
    let ino = std::fs::metadata(format!("/sys/fs/cgroup/pids{line}"))
        .expect("pids cgroup dir")
        .ino();
    let exit = run.one("exit", kid);
    assert_eq!(exit["cgroup_hierarchy"], "v1:pids", "{exit}");
    assert_eq!(exit["cgroup"], line.as_str());
    assert_eq!(exit["cgroup_id"], ino);
    assert_eq!(exit["container"]["id"], c.id.as_str(), "{exit}");
    assert_eq!(exit["container"]["runtime"], "podman");
    let node = tree_containers(&view)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("container in the v1 tree: {view:#}"));
    assert_eq!(node["id"], c.id.as_str());
    assert_eq!(node["init_pid"], c.pid);
    assert_eq!(node["cgroup"], line.as_str());
}
