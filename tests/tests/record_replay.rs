//! Issue 4: a live run with real containers, recorded, then replayed through the same engine:
//! byte-identical output, no root needed to replay, trees at past times.
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use podtrace_tests::lab::{CrioLikeContainer, CrioOpts, CrioPod, PodmanContainer};
use podtrace_tests::tracer::{bin, tree_containers, tree_json, Tracer};

fn record_with_containers(
    trace_name: &str,
) -> (
    String,
    std::path::PathBuf,
    tempfile::TempDir,
    String,
    String,
) {
    let keep = tempfile::tempdir().expect("tmp");
    let trace = keep.path().join(trace_name);
    let t = Tracer::start(&["--record", &trace.display().to_string()]);
    let a = PodmanContainer::start(&["/bin/sh", "-c", "sleep 0.2 & exec sleep 600"]);
    let pod = CrioPod::new();
    let b = CrioLikeContainer::start_with(
        "web",
        CrioOpts {
            pod: Some(pod),
            ..CrioOpts::default()
        },
        &["/bin/sleep", "600"],
    );
    let out = b.exec(&["sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    Command::new("sh")
        .args(["-c", "exit 7"])
        .status()
        .expect("host process");
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (a_id, b_id) = (a.id.clone(), b.id.clone());
    drop(a);
    drop(b);
    let run = t.stop();
    let live = std::fs::read_to_string(run.dir.path().join("events.ndjson")).expect("live output");
    assert!(
        live.contains(&a_id) && live.contains(&b_id),
        "both containers were seen live"
    );
    (live, trace, keep, a_id, b_id)
}

fn replay(trace: &std::path::Path, extra: &[&str]) -> String {
    let out = Command::new(bin())
        .arg("replay")
        .arg(trace)
        .args(extra)
        .output()
        .expect("podtrace replay");
    assert!(
        out.status.success(),
        "replay failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stderr.is_empty(),
        "a clean trace replays without warnings: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn replay_prints_byte_for_byte_what_run_printed() {
    let (live, trace, _keep, a_id, _) = record_with_containers("run.trace");
    let mode = std::fs::metadata(&trace)
        .expect("trace")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "trace files hold argv: owner-only");
    let replayed = replay(&trace, &[]);
    assert_eq!(live.lines().count(), replayed.lines().count());
    assert!(live == replayed, "replay differs from the live output");
    // Filters in replay keep exactly the live lines that match.
    let only_a = replay(&trace, &["--container", &a_id[..12]]);
    let expect: Vec<&str> = live
        .lines()
        .filter(|l| l.contains(&format!("\"id\":\"{a_id}\"")))
        .collect();
    assert_eq!(only_a.lines().collect::<Vec<_>>(), expect);
}

#[test]
fn compressed_trace_replays_identically() {
    let (live, trace, keep, _, _) = record_with_containers("run.trace.zst");
    let replayed = replay(&trace, &[]);
    assert!(
        live == replayed,
        "replay of the .zst trace differs from the live output"
    );
    let mut magic = [0u8; 4];
    use std::io::Read;
    std::fs::File::open(&trace)
        .expect("open")
        .read_exact(&mut magic)
        .expect("read");
    assert_eq!(magic, [0x28, 0xb5, 0x2f, 0xfd], "zstd frame");
    drop(keep);
}

#[test]
fn replay_needs_no_root_and_tree_shows_a_past_moment() {
    let (_, trace, keep, a_id, b_id) = record_with_containers("run.trace");
    std::fs::set_permissions(keep.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod dir");
    std::fs::set_permissions(&trace, std::fs::Permissions::from_mode(0o644)).expect("chmod trace");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin())
        .arg("replay")
        .arg(&trace)
        .output()
        .expect("setpriv");
    assert!(
        out.status.success(),
        "replay as nobody: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&a_id));
    // A moment when both containers were alive, taken from the trace itself: the exec of
    // the cri-o container's init.
    let live = replay(&trace, &[]);
    let ts = live
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
        .find(|e| {
            e["type"] == "exec"
                && e["container"]["id"] == b_id.as_str()
                && e["role"] == "container-init"
        })
        .map(|e| e["ts"].as_str().expect("ts").to_string())
        .expect("init exec of the cri-o container");
    let t = trace.display().to_string();
    let then = tree_json(&["--from", &t, "--at", &ts]);
    let ids: Vec<String> = tree_containers(&then)
        .iter()
        .map(|c| c["id"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(
        ids.contains(&a_id) && ids.contains(&b_id),
        "both alive at {ts}: {ids:?}"
    );
    let web = tree_containers(&then)
        .into_iter()
        .find(|c| c["id"] == b_id.as_str())
        .expect("the cri-o container in the tree");
    assert_eq!(web["name"], "web");
    let end = tree_json(&["--from", &t]);
    assert!(
        tree_containers(&end)
            .iter()
            .all(|c| c["init_pid"].is_null()),
        "both inits gone at the end: {end:#}"
    );
}

/// A recorder killed outright (SIGKILL: no drain, no end record) leaves a trace that replays
/// up to its last complete record, with a warning; plain and zstd alike.
#[test]
fn trace_of_a_killed_recorder_replays_up_to_the_last_complete_record() {
    for name in ["killed.trace", "killed.trace.zst"] {
        let dir = tempfile::tempdir().expect("tmp");
        let trace = dir.path().join(name);
        let t = Tracer::start(&["--quiet", "--record", &trace.display().to_string()]);
        for _ in 0..20 {
            Command::new("true").status().expect("true");
        }
        // More than the 1 s flush interval, then a crash.
        std::thread::sleep(std::time::Duration::from_millis(1500));
        t.kill();
        let out = Command::new(bin())
            .arg("replay")
            .arg(&trace)
            .output()
            .expect("replay");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {err}");
        assert!(
            err.contains("WARN"),
            "{name}: a cut trace is reported: {err}"
        );
        let n = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.contains("\"comm\":\"true\"") && l.contains("\"type\":\"exec\""))
            .count();
        assert!(
            n >= 20,
            "{name}: the execs before the last flush were kept ({n})"
        );
    }
}
