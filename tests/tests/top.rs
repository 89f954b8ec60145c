//! Issue 19: `podtrace top` in a real terminal (tmux), on this node while real podman
//! containers start, exec and exit, and played from a trace beside `tree --from --at`.
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeSet;
use std::time::Duration;

use podtrace_tests::lab::{
    self, crio_lab, CriLab, CrioLikeContainer, CrioOpts, CrioPod, KubeContainer, PodmanContainer,
};
use podtrace_tests::tmux::{proc_row, proc_rows, require_tool, ProcRow, Tmux};
use podtrace_tests::tracer::{bin, is_root, tree_containers, tree_json, tree_processes};

const WAIT: Duration = Duration::from_secs(15);

/// The process row of `pid` on the screen, if shown.
fn row_of(screen: &str, pid: u32) -> Option<ProcRow> {
    proc_rows(screen).into_iter().find(|r| r.pid == pid)
}

/// The line of the container whose name is `name`.
fn container_line<'a>(screen: &'a str, name: &str) -> Option<&'a str> {
    screen
        .lines()
        .find(|l| l.contains(&format!("container {name} ")))
}

/// The host pid of the process in `init`'s cgroup whose command line is `argv`.
fn pid_in_container(c: &PodmanContainer, argv: &[&str]) -> Option<u32> {
    let procs = std::fs::read_to_string(lab::cgroup_dir(&c.cgroup).join("cgroup.procs")).ok()?;
    procs
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .find(|&p| lab::proc_cmdline(p) == argv)
}

/// The exit status the shell printed as `TAG=N` on a line of its own (the typed command
/// line holds `TAG=$?`, and may wrap so that a line starts with it).
fn printed_status(screen: &str, tag: &str) -> Option<i32> {
    screen
        .lines()
        .find_map(|l| l.strip_prefix(tag)?.strip_prefix('=')?.trim().parse().ok())
}

/// Types `podtrace top ARGS` (stderr to `top.err`, then `echo top-exit=$?`) into the
/// shell and waits for its first live picture, on the alternate screen.
fn start_top(tmux: &Tmux, tmux_dir: &std::path::Path, args: &str) {
    let bin = bin();
    assert!(bin.is_file(), "no podtrace binary at {}", bin.display());
    tmux.shell(&format!(
        "{} top {args} 2>top.err; echo top-exit=$?",
        bin.display()
    ));
    let s = tmux.wait_for(WAIT, "top's first picture (the column header)", |s| {
        printed_status(s, "top-exit").is_some()
            || (s.contains("HOST-PID CTR-PID")
                && s.contains("containers")
                && !s.contains("starting:"))
    });
    assert!(
        printed_status(&s, "top-exit").is_none(),
        "top exited at start:\n{s}\nstderr: {}",
        std::fs::read_to_string(tmux_dir.join("top.err")).unwrap_or_default()
    );
    assert!(tmux.alternate_on(), "top runs on the alternate screen");
}

/// Waits for the row of the init `pid` of container `name`: container pid 1, tagged
/// [init], its command line holding `cmdline`, run by root.
fn assert_init_row(tmux: &Tmux, pid: u32, name: &str, cmdline: &str) {
    // Its command line once it has exec'd: a refresh between runc's fork and the init's exec
    // shows the init with runc's argv (as it then was).
    let s = tmux.wait_for(WAIT, &format!("the init {pid} of {name}"), |s| {
        row_of(s, pid).is_some_and(|r| r.command.contains(cmdline))
    });
    let r = row_of(&s, pid).expect("init row");
    assert_eq!(r.ctr_pid, Some(1), "container pid of the init: {r:?}\n{s}");
    assert!(
        r.command.contains("[init]") && r.command.contains(cmdline),
        "{r:?}\n{s}"
    );
    assert_eq!(r.user, "root", "{r:?}");
}

/// Waits for an exited row (`x`) tagged `[exit CODE]` whose command line holds `cmdline`;
/// returns the screen.
fn wait_exit_row(tmux: &Tmux, code: i32, cmdline: &str) -> String {
    let tag = format!("[exit {code}]");
    tmux.wait_for(
        WAIT,
        &format!("the exec that exited {code}, with its code"),
        |s| {
            s.lines().any(|l| {
                proc_row(l).is_some_and(|r| {
                    r.mark == 'x' && r.command.contains(&tag) && r.command.contains(cmdline)
                })
            })
        },
    )
}

/// q: top exits 0, the alternate screen is left and the shell's prompt comes back.
fn quit_and_check_restored(tmux: &Tmux, dir: &std::path::Path) {
    tmux.key("q");
    let s = tmux.wait_for(WAIT, "the shell after q", |s| {
        printed_status(s, "top-exit").is_some()
    });
    assert!(
        printed_status(&s, "top-exit") == Some(0),
        "top exits 0 on q:\n{s}\nstderr: {}",
        std::fs::read_to_string(dir.join("top.err")).unwrap_or_default()
    );
    assert!(!tmux.alternate_on(), "the alternate screen is left on q");
    assert!(!s.contains("HOST-PID"), "top's screen is gone:\n{s}");
    let after: Vec<&str> = s
        .lines()
        .skip_while(|l| !l.starts_with("top-exit=0"))
        .collect();
    assert!(
        after.get(1).is_some_and(|l| l.starts_with("lab$")),
        "the prompt is back after top's exit status:\n{s}"
    );
}

/// tmux runs `podtrace top` on this node as root. Two podman containers and a pod's
/// container (conmon + runc in cri-o's layout) start after it (so their starts are seen
/// live): the screen shows the pod and each container with its init, whose host pid and
/// container pid are the runtime's (`podman inspect` .State.Pid, conmon's pidfile) and 1; a
/// process exec'd into one after top began, marked new; an exec that exits 7, shown with
/// its exit code. A typed filter (`\` ctr:NAME) leaves one container on the screen; `q`
/// leaves the alternate screen and the shell prints top's exit status.
#[test]
fn top_in_tmux_shows_containers_starting_execing_and_exiting() {
    assert!(
        is_root(),
        "this test runs podtrace top as root (run it with `cargo xtask test`)"
    );
    require_tool("tmux", "-V");
    require_tool("podman", "--version");
    let dir = tempfile::tempdir().expect("temp dir");
    // 160x120: other tests' containers may be on this node too, and every row must fit on
    // the screen; the typed filter below narrows it to one of ours.
    let tmux = Tmux::start(160, 120, dir.path());
    start_top(&tmux, dir.path(), "");

    let a = PodmanContainer::start(&["/bin/sleep", "600"]);
    let b = PodmanContainer::start(&["/bin/sleep", "601"]);
    let pod = CrioPod::new();
    let pod_label = format!("pod {}/{}", pod.namespace, pod.name);
    let web = CrioLikeContainer::start_with(
        &lab::unique_name("web"),
        CrioOpts {
            pod: Some(pod),
            ..CrioOpts::default()
        },
        &["/bin/sleep", "602"],
    );
    // The name, the short id and the runtime on the container's line.
    let s = tmux.wait_for(WAIT, "the three containers and the pod", |s| {
        container_line(s, &a.name).is_some()
            && container_line(s, &b.name).is_some()
            && container_line(s, &web.container_name).is_some()
            && s.contains(&pod_label)
    });
    let line = container_line(&s, &a.name).expect("a's line");
    assert!(line.contains(&a.id[..12]), "short id on {line:?}\n{s}");
    assert!(line.contains("(podman)"), "runtime on {line:?}\n{s}");
    // The inits: podman's host pid, container pid 1, tagged [init].
    let pod_at = s
        .lines()
        .position(|l| l.contains(&pod_label))
        .expect("pod line");
    let web_at = s
        .lines()
        .position(|l| l.contains(&format!("container {} ", web.container_name)))
        .expect("web's line");
    assert!(pod_at < web_at, "the pod's container is under it:\n{s}");
    let inits = [
        (a.pid, a.name.as_str(), "sleep 600"),
        (b.pid, b.name.as_str(), "sleep 601"),
        (web.pid, web.container_name.as_str(), "sleep 602"),
    ];
    for (pid, name, cmdline) in inits {
        assert_init_row(&tmux, pid, name, cmdline);
    }

    // A process started after top began: exec'd into a, new (+) for a moment.
    let mut sleeper = a
        .exec_cmd(&["/bin/sleep", "1234"])
        .spawn()
        .expect("podman exec sleep");
    let mut sleeper_pid = None;
    let s = tmux.wait_for(WAIT, "the exec'd `sleep 1234` with its host pid", |s| {
        sleeper_pid = sleeper_pid.or_else(|| pid_in_container(&a, &["/bin/sleep", "1234"]));
        sleeper_pid.is_some_and(|p| row_of(s, p).is_some())
    });
    let pid = sleeper_pid.expect("found above");
    let r = row_of(&s, pid).expect("sleep row");
    assert!(r.command.contains("sleep 1234"), "{r:?}\n{s}");
    let nspid = lab::proc_status(pid).nspid;
    assert_eq!(
        r.ctr_pid,
        nspid.last().copied(),
        "container pid of {pid} as /proc says ({nspid:?}): {r:?}"
    );
    assert_eq!(
        r.mark, '+',
        "a process that just started is marked new: {r:?}\n{s}"
    );

    // An exit with its code: shown as [exit 7] for a moment. It lives longer than a refresh
    // (1 s): what comes and goes between two is counted as short-lived, not shown.
    let out = a.exec(&["/bin/sh", "-c", "sleep 1.5; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "podman exec sh -c 'exit 7'");
    let before = wait_exit_row(&tmux, 7, "exit 7");

    // A typed filter: only a remains.
    tmux.key("\\");
    tmux.type_text(&format!("ctr:{}", a.name));
    tmux.key("Enter");
    let s = tmux.wait_for(WAIT, "the filter applied", |s| {
        s.contains(&format!("filter: ctr:{}", a.name)) && container_line(s, &b.name).is_none()
    });
    assert!(
        before.contains(&b.name),
        "b was on the screen before the filter:\n{before}"
    );
    assert!(
        container_line(&s, &a.name).is_some() && row_of(&s, a.pid).is_some(),
        "a and its init stay:\n{s}"
    );
    assert!(row_of(&s, b.pid).is_none(), "b's init is gone:\n{s}");
    assert!(!s.contains(&pod_label), "the pod is gone:\n{s}");
    let others = s.lines().filter(|l| l.contains("container ")).count();
    assert_eq!(others, 1, "one container left on the screen:\n{s}");

    quit_and_check_restored(&tmux, dir.path());
    let _ = sleeper.kill();
    let _ = sleeper.wait();
}

/// What `crictl` says of a CRI container and its pod, the oracle: (pod name, namespace,
/// container name, host pid of its init from `crictl inspect`'s info.pid).
fn crictl_truth(c: &KubeContainer) -> (String, String, String, u32) {
    let endpoint = c.pod.lab().endpoint();
    let json = |args: &[&str]| -> serde_json::Value {
        let out = crio_lab::crictl(&endpoint)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run the lab's crictl ({e}): `lab.sh install`"));
        assert!(
            out.status.success(),
            "crictl {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("crictl {}: not JSON: {e}", args.join(" ")))
    };
    let p = json(&["inspectp", "-o", "json", c.pod.id()]);
    let i = json(&["inspect", "-o", "json", &c.id]);
    let text = |v: &serde_json::Value| v.as_str().expect("a string in crictl's JSON").to_string();
    let pid = i["info"]["pid"].as_u64().expect("crictl inspect: info.pid");
    (
        text(&p["status"]["metadata"]["name"]),
        text(&p["status"]["metadata"]["namespace"]),
        text(&i["status"]["metadata"]["name"]),
        u32::try_from(pid).expect("a pid"),
    )
}

/// tmux runs `podtrace top --cri-endpoint E` on this node; a pod and its container are made
/// through the CRI of `cri` after it started. The screen shows the pod as `crictl inspectp`
/// names it, the container under it with its name and short id, its init at the host pid
/// `crictl inspect` reports (info.pid) and container pid 1; an ExecSync that exits 9 is
/// shown `[exit 9]`; `q` gives the terminal back.
fn top_on_a_cri_runtime(cri: CriLab) {
    let dir = tempfile::tempdir().expect("temp dir");
    // Tall: other tests' containers may be on this node too.
    let tmux = Tmux::start(200, 150, dir.path());
    start_top(
        &tmux,
        dir.path(),
        &format!("--cri-endpoint {}", cri.endpoint()),
    );

    let pod = cri.run_pod("top");
    let c = pod.run("work", &["/bin/sleep", "604"]);
    let (pod_name, namespace, name, pid) = crictl_truth(&c);
    assert_eq!(
        pid, c.pid,
        "crictl inspect and ContainerStatus agree on the init"
    );
    let pod_label = format!("pod {namespace}/{pod_name}");
    let s = tmux.wait_for(
        WAIT,
        &format!("{pod_label} and its container {name}"),
        |s| s.contains(&pod_label) && container_line(s, &name).is_some(),
    );
    let line = container_line(&s, &name).expect("the container's line");
    assert!(line.contains(&c.id[..12]), "short id on {line:?}\n{s}");
    let at = |needle: &str| s.lines().position(|l| l.contains(needle));
    assert!(
        at(&pod_label) < at(&format!("container {name} ")),
        "the pod's container is under it:\n{s}"
    );
    assert_init_row(&tmux, pid, &name, "sleep 604");

    // ExecSync lives longer than a refresh (1 s): what comes and goes between two is only
    // counted.
    let (code, _, _) = c.exec_sync(&["/bin/sh", "-c", "sleep 1.5; exit 9"]);
    assert_eq!(code, 9, "ExecSync sh -c 'exit 9'");
    wait_exit_row(&tmux, 9, "exit 9");

    quit_and_check_restored(&tmux, dir.path());
}

#[test]
fn top_in_tmux_shows_a_crio_pod_made_through_the_cri() {
    lab::require_root();
    require_tool("tmux", "-V");
    top_on_a_cri_runtime(CriLab::crio());
}

#[test]
fn top_in_tmux_shows_a_containerd_cri_pod() {
    lab::require_root();
    require_tool("tmux", "-V");
    top_on_a_cri_runtime(CriLab::start());
}

/// The processes, containers and pods `tree --from T --at X --json` prints.
#[derive(Debug, Default, PartialEq, Eq)]
struct Picture {
    pods: BTreeSet<String>,
    containers: BTreeSet<String>,
    procs: BTreeSet<(u32, Option<u32>)>,
}

fn tree_picture(trace: &str, at: &str) -> Picture {
    let v = tree_json(&["--from", trace, "--at", at]);
    let mut p = Picture::default();
    for pod in v["pods"].as_array().into_iter().flatten() {
        p.pods.insert(format!(
            "pod {}/{}",
            pod["namespace"].as_str().unwrap_or("?"),
            pod["name"].as_str().unwrap_or("?")
        ));
    }
    for c in tree_containers(&v) {
        let id = c["id"].as_str().expect("container id");
        p.containers.insert(id[..12.min(id.len())].to_string());
        for n in tree_processes(&c["processes"]) {
            let pid = n["pid"].as_u64().expect("pid") as u32;
            let nspid = n["nspid"].as_u64().map(|x| x as u32);
            p.procs.insert((pid, nspid.filter(|&x| x != pid)));
        }
    }
    p
}

/// `top --from T --at X --frozen` in tmux, tall enough for every row; read off the screen.
fn top_picture(trace: &str, at: &str, dir: &std::path::Path) -> (Picture, String) {
    let tmux = Tmux::start(200, 400, dir);
    tmux.shell(&format!(
        "NO_COLOR=1 {} top --from {trace} --at {at} --frozen; echo top-exit=$?",
        bin().display()
    ));
    let s = tmux.wait_for(WAIT, "top's picture of the trace", |s| {
        s.contains("HOST-PID") && s.contains("PAUSED")
    });
    tmux.key("q");
    tmux.wait_for(WAIT, "top's exit", |s| {
        printed_status(s, "top-exit") == Some(0)
    });
    let mut p = Picture::default();
    for line in s.lines() {
        let t = line.trim_start().trim_start_matches(['▾', '▸', ' ']);
        if let Some(rest) = t.strip_prefix("container ") {
            // `container NAME ID (RUNTIME) IMAGE`
            let id = rest
                .split_whitespace()
                .nth(1)
                .expect("id on a container line");
            p.containers.insert(id.to_string());
        } else if t.starts_with("pod ") {
            let label = t.split("  ").next().unwrap_or(t);
            let label = label.split(" qos ").next().unwrap_or(label);
            p.pods.insert(label.trim().to_string());
        } else if let Some(r) = proc_row(line) {
            // Rows that exited a moment ago stay on top's screen with how they ended; the
            // tree has only what is still there.
            if r.mark != 'x' {
                p.procs.insert((r.pid, r.ctr_pid));
            }
        }
    }
    (p, s)
}

/// `top --from T --at X` shows the pods, containers and processes that `tree --from T --at
/// X --json` prints, at several moments of a synthetic cri-o trace: the rendered screen
/// (read back from a real terminal) against the JSON.
#[test]
fn top_from_a_trace_at_a_moment_shows_what_tree_at_shows() {
    require_tool("tmux", "-V");
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = dir.path().join("crio.trace");
    let records = podtrace::trace::synth::trace(3_000, 4, 11);
    std::fs::write(&trace, podtrace::trace::synth::to_ndjson(&records)).expect("write trace");
    let trace = trace.display().to_string();
    for at in ["+0.1s", "+0.6s", "+2s"] {
        let want = tree_picture(&trace, at);
        assert!(
            !want.procs.is_empty() && !want.containers.is_empty(),
            "tree at {at} has containers and processes: {want:?}"
        );
        let (got, screen) = top_picture(&trace, at, dir.path());
        eprintln!(
            "at {at}: {} pods, {} containers, {} processes on both",
            want.pods.len(),
            want.containers.len(),
            want.procs.len()
        );
        assert_eq!(
            got, want,
            "top --from --at {at} (left) vs tree --at:\n{screen}"
        );
    }
}

/// The pane's tty modes that raw mode turns off, as `stty -F TTY -a` reports them:
/// `icanon echo` when cooked, `-icanon -echo` when raw.
fn tty_modes(tmux: &Tmux) -> String {
    let tty = tmux.pane_tty();
    let out = std::process::Command::new("stty")
        .args(["-F", &tty, "-a"])
        .output()
        .expect("run stty");
    assert!(out.status.success(), "stty -F {tty} -a: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split([' ', ';', '\n'])
        .filter(|w| matches!(*w, "icanon" | "-icanon" | "echo" | "-echo"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// tmux (100x30, in `dir`) running `top --from` a synthetic cri-o trace, frozen, through
/// `sh -c` so that its pid is known (`echo $$` then exec); `after` is typed after that command
/// on the same line. Returns once top shows its picture.
fn frozen_top_in_tmux(dir: &std::path::Path, after: &str) -> (Tmux, i32) {
    require_tool("tmux", "-V");
    let trace = dir.join("crio.trace");
    let records = podtrace::trace::synth::trace(1_000, 2, 5);
    std::fs::write(&trace, podtrace::trace::synth::to_ndjson(&records)).expect("write trace");
    let tmux = Tmux::start(100, 30, dir);
    let before = tty_modes(&tmux);
    assert_eq!(before, "icanon echo", "the shell's tty before top");
    tmux.shell(&format!(
        "sh -c 'echo $$ > top.pid; exec {} top --from {} --frozen'{after}",
        bin().display(),
        trace.display()
    ));
    tmux.wait_for(WAIT, "top's picture", |s| s.contains("PAUSED"));
    let pid = std::fs::read_to_string(dir.join("top.pid"))
        .expect("top.pid")
        .trim()
        .parse()
        .expect("a pid in top.pid");
    (tmux, pid)
}

/// SIGTERM and a panic (`PODTRACE_TOP_PANIC`, which makes the first refresh panic) restore
/// the terminal as `q` does: the alternate screen is left, raw mode is off (`stty`: icanon
/// and echo), and the shell's prompt comes back; SIGTERM exits 0, the panic 101 with its
/// message on the normal screen.
#[test]
fn top_restores_the_terminal_on_sigterm_and_on_a_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    let trace = dir.path().join("crio.trace");
    let (tmux, pid) = frozen_top_in_tmux(dir.path(), "; echo top-exit=$?");
    assert!(tmux.alternate_on(), "top is on the alternate screen");
    assert_eq!(
        tty_modes(&tmux),
        "-icanon -echo",
        "top puts the tty in raw mode"
    );
    // SAFETY: kill(2) with a pid read from the file the shell wrote just before exec.
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGTERM) },
        0,
        "kill -TERM {pid}"
    );
    let s = tmux.wait_for(WAIT, "the shell after SIGTERM", |s| {
        printed_status(s, "top-exit").is_some()
    });
    assert_eq!(
        printed_status(&s, "top-exit"),
        Some(0),
        "SIGTERM: exit 0:\n{s}"
    );
    assert!(
        !tmux.alternate_on(),
        "SIGTERM: the alternate screen is left"
    );
    assert_eq!(tty_modes(&tmux), "icanon echo", "SIGTERM: raw mode off");

    tmux.shell("clear");
    tmux.shell(&format!(
        "RUST_BACKTRACE=0 PODTRACE_TOP_PANIC=1 {} top --from {}; echo panic-exit=$?",
        bin().display(),
        trace.display()
    ));
    // Its own tag: the SIGTERM run's `top-exit=` may be on the screen until `clear` ran.
    let s = tmux.wait_for(WAIT, "the shell after the panic", |s| {
        printed_status(s, "panic-exit").is_some()
    });
    assert_eq!(
        printed_status(&s, "panic-exit"),
        Some(101),
        "a panic exits 101:\n{s}"
    );
    // The message, then the shell's line after it: nothing written over it (a second leave
    // of the alternate screen would put the cursor back where top started).
    let at = |needle: &str| s.lines().position(|l| l.contains(needle));
    let (head, msg, exit) = (
        at("panicked at"),
        at("PODTRACE_TOP_PANIC is set: panicking on purpose"),
        s.lines().position(|l| l == "panic-exit=101"),
    );
    assert!(
        head.is_some() && head < msg && msg < exit,
        "the panic's message on the normal screen, then the shell's output ({head:?} {msg:?} {exit:?}):\n{s}"
    );
    assert!(!tmux.alternate_on(), "panic: the alternate screen is left");
    assert_eq!(tty_modes(&tmux), "icanon echo", "panic: raw mode off");
}

/// The terminal goes away under top (the SSH connection drops, the terminal emulator is
/// closed: here the tmux server is killed, which hangs up the pane's tty): top notices and
/// exits within a few seconds, rather than living on with nobody to see it. (Before, it spun
/// at 70% of a core for as long as one let it: crossterm's read loop sees end of file forever
/// on a hung-up tty.)
#[test]
fn top_exits_when_its_terminal_hangs_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (tmux, pid) = frozen_top_in_tmux(dir.path(), "");
    let pid = u32::try_from(pid).expect("a pid");
    assert!(lab::is_alive(pid), "top {pid} runs before the hang-up");
    drop(tmux); // kill-server: the pane's tty hangs up
    let t0 = std::time::Instant::now();
    while lab::is_alive(pid) && t0.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let left = lab::is_alive(pid);
    if left {
        // SAFETY: kill(2) of the top this test started (its pid from the file it wrote).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
    assert!(
        !left,
        "top {pid} still runs 10 s after its terminal hung up (killed now)"
    );
}
