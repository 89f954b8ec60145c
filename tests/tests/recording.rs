//! Issue 18, recording for weeks: segments rotated by size that each replay alone and, in
//! order, print what the live run printed; retention; a full file system that stops nothing
//! but the recorder; `--output` rotated by copytruncate and by rename + SIGHUP (root).
//!
//! The ground truth is the processes this test spawns itself (their pids and a marker in
//! their argv), never what podtrace says about them.
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use podtrace_tests::tracer::{bin, is_root, parse_and_validate, Tracer};
use serde_json::Value;

/// One storm at a time: every podtrace sees every process of the node, so another test's
/// storm would add to what this one's records (and to the engine state each segment begins
/// with), which these tests size their bounds by.
static STORMS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// This test's turn (a test that failed while holding it does not stop the others).
fn one_storm_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    STORMS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn marker(name: &str) -> String {
    format!("podtrace-rec-{name}-{}", std::process::id())
}

/// Spawns `n` short processes `/bin/true MARKER-i`, one after another; their pids, in order.
fn storm(marker: &str, from: usize, n: usize) -> Vec<(u32, String)> {
    (from..from + n)
        .map(|i| {
            let arg = format!("{marker}-{i:06}");
            let mut c = Command::new("/bin/true")
                .arg(&arg)
                .spawn()
                .expect("spawn /bin/true");
            let pid = c.id();
            c.wait().expect("wait for /bin/true");
            (pid, arg)
        })
        .collect()
}

/// Exec lines per (pid, the test's marker argument) in `lines`.
fn execs_by_marker<'a>(
    lines: impl Iterator<Item = &'a str>,
    marker: &str,
) -> BTreeMap<(u32, String), usize> {
    let mut m = BTreeMap::new();
    for line in lines {
        if !line.contains(marker) {
            continue;
        }
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a whole JSON line ({e}): {line:?}"));
        if v["type"] != "exec" {
            continue;
        }
        let pid = v["pid"].as_u64().expect("pid") as u32;
        for a in v["argv"].as_array().expect("argv") {
            if let Some(s) = a.as_str().filter(|s| s.starts_with(marker)) {
                *m.entry((pid, s.to_string())).or_insert(0) += 1;
            }
        }
    }
    m
}

/// Every spawned process has exactly one exec line: what is missing or doubled, else Ok.
fn check_each_once(spawned: &[(u32, String)], seen: &BTreeMap<(u32, String), usize>, what: &str) {
    let missing: Vec<_> = spawned
        .iter()
        .filter(|p| !seen.contains_key(*p))
        .take(10)
        .collect();
    let doubled: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).take(10).collect();
    let n_missing = spawned.iter().filter(|p| !seen.contains_key(*p)).count();
    assert!(
        missing.is_empty() && doubled.is_empty(),
        "{what}: of {} processes spawned, {n_missing} have no exec line (first: {missing:?}), \
         and these have more than one: {doubled:?}",
        spawned.len()
    );
}

/// `podtrace replay PATH`: exit 0, its stdout.
fn replay(path: &Path) -> String {
    let out = Command::new(bin())
        .arg("replay")
        .arg(path)
        .output()
        .expect("run podtrace replay");
    assert!(
        out.status.success(),
        "podtrace replay {} exited {}: {}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("replay prints UTF-8")
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("list {}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("podtrace-") && n.ends_with(".trace.zst"))
        })
        .collect();
    v.sort();
    v
}

fn dir_bytes(dir: &Path) -> u64 {
    segments(dir)
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()).unwrap_or(0))
        .sum()
}

#[test]
fn segments_rotated_by_size_each_replay_alone_and_in_order_print_the_live_output() {
    let _turn = one_storm_at_a_time();
    let keep = tempfile::tempdir().expect("tmp");
    let dir = keep.path().join("rec");
    let m = marker("rotate");
    // 128 KiB segments, the directory bounded to 512 KiB: a storm makes many more than fit.
    // (A segment starts with the engine's state, which holds the processes that left in the
    // last 10 s: in a storm that is most of a 128K segment.)
    let t = Tracer::start(&[
        "--record",
        &format!("{}/", dir.display()),
        "--segment-size",
        "128K",
        "--retain-size",
        "512K",
    ]);
    let mut spawned = Vec::new();
    let mut max_dir = 0;
    for round in 0..10 {
        spawned.extend(storm(&m, round * 400, 400));
        max_dir = max_dir.max(dir_bytes(&dir));
    }
    let run = t.stop();
    let summary = run.summary.clone().expect("--summary was written");
    let rec = &summary["recording"];
    let removed = rec["removed_segments"].as_u64().expect("removed_segments");
    let started = rec["segments"].as_u64().expect("segments");
    assert!(
        removed > 0 && started > 4,
        "a 4,000-process storm rotates 128K segments past a 512K bound: {rec}"
    );
    assert_eq!(rec["records_lost"], 0, "nothing lost: {rec}");
    let end_bytes = dir_bytes(&dir);
    assert!(
        end_bytes <= 512 * 1024 && max_dir <= 512 * 1024,
        "retention bound 512K: {end_bytes} bytes at the end, {max_dir} at most while running"
    );
    let live = std::fs::read_to_string(run.dir.path().join("events.ndjson")).expect("live");
    check_each_once(&spawned, &execs_by_marker(live.lines(), &m), "live output");
    let segs = segments(&dir);
    assert_eq!(
        segs.len() as u64,
        started - removed,
        "the directory holds the segments started and not removed: {segs:?}"
    );
    // Each replays alone; in order they print the end of the live output, byte for byte.
    let mut joined = String::new();
    for s in &segs {
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(s).expect("segment").permissions(),
        ) & 0o777;
        assert_eq!(mode, 0o600, "{}: segments hold argv", s.display());
        joined.push_str(&replay(s));
    }
    assert!(!joined.is_empty(), "the kept segments print events");
    assert!(
        live.ends_with(&joined),
        "the kept segments, replayed one by one in order, print the end of the live output \
         ({} of {} lines)",
        joined.lines().count(),
        live.lines().count()
    );
    assert!(
        replay(&dir) == joined,
        "replay DIR prints what its segments print one by one"
    );
    // The kept segments hold the storm's last processes, each once, with no gap (how many
    // depends on how much of each 128K segment the engine's state takes).
    let seen = execs_by_marker(joined.lines(), &m);
    assert!(!seen.is_empty(), "the kept segments hold some of the storm");
    let tail = &spawned[spawned.len() - seen.len().min(spawned.len())..];
    check_each_once(
        tail,
        &seen,
        "replay of the kept segments (the storm's last processes)",
    );
}

#[test]
fn every_segment_of_a_recording_without_retention_replays_to_the_whole_live_output() {
    let _turn = one_storm_at_a_time();
    let keep = tempfile::tempdir().expect("tmp");
    let dir = keep.path().join("rec");
    let m = marker("whole");
    let t = Tracer::start(&[
        "--record",
        &dir.display().to_string(),
        "--segment-size",
        "64K",
        "--retain-size",
        "0",
    ]);
    let spawned = storm(&m, 0, 2000);
    let run = t.stop();
    let live = std::fs::read_to_string(run.dir.path().join("events.ndjson")).expect("live");
    let segs = segments(&dir);
    assert!(
        segs.len() > 2,
        "2,000 processes fill several 64K segments: {segs:?}"
    );
    let mut joined = String::new();
    for s in &segs {
        joined.push_str(&replay(s));
    }
    assert_eq!(live.lines().count(), joined.lines().count());
    assert!(
        live == joined,
        "all segments, replayed one by one in order, print the live output byte for byte"
    );
    check_each_once(&spawned, &execs_by_marker(joined.lines(), &m), "replay");
}

/// A tmpfs of `size` mounted on a new directory; unmounted on drop.
struct Tmpfs {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        assert!(is_root(), "mounting a tmpfs needs root (cargo xtask test)");
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("small");
        std::fs::create_dir(&path).expect("mount point");
        let st = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(&path)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -t tmpfs -o size={size}: {st}");
        Self { path, _dir: dir }
    }

    /// Gives it room: `size` from now on (the files on it stay).
    fn grow(&self, size: &str) {
        let st = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.path)
            .status()
            .expect("run mount");
        assert!(st.success(), "mount -o remount,size={size}: {st}");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.path).status();
    }
}

fn stream_lines<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

#[test]
fn a_full_file_system_pauses_the_recorder_and_nothing_else_and_it_resumes() {
    let _turn = one_storm_at_a_time();
    let fs = Tmpfs::mount("300k");
    let dir = fs.path.join("rec");
    let m = marker("full");
    let t = Tracer::start(&[
        "--record",
        &dir.display().to_string(),
        "--segment-size",
        "128K",
        "--retain-size",
        "0",
    ]);
    let pid = t.pid();
    let mut spawned = Vec::new();
    // Fill it: the storm goes on until the recorder says it paused (at most 20,000).
    let paused_by = Instant::now() + Duration::from_secs(120);
    let mut filled = false;
    while spawned.len() < 20_000 && Instant::now() < paused_by {
        let n = spawned.len();
        spawned.extend(storm(&m, n, 500));
        let text = std::fs::read_to_string(&t.output).expect("live output");
        if text.contains("\"type\":\"recording\"") {
            filled = true;
            break;
        }
    }
    assert!(
        filled,
        "after {} processes the 300k tmpfs is not full, or no `recording` line said so",
        spawned.len()
    );
    // Still running, and the storm goes on while paused.
    spawned.extend(storm(&m, spawned.len(), 500));
    assert!(
        podtrace_tests::lab::is_alive(pid),
        "podtrace is still running with the disk full"
    );
    // Space comes back: the file system grows (removing the old segments freed too little:
    // the storm below filled it again once in a while, and the run ended paused).
    fs.grow("64m");
    // It tries every second.
    std::thread::sleep(Duration::from_millis(2500));
    let after_from = spawned.len();
    spawned.extend(storm(&m, after_from, 50));
    let run = t.stop();
    let live = std::fs::read_to_string(run.dir.path().join("events.ndjson")).expect("live");
    check_each_once(
        &spawned,
        &execs_by_marker(live.lines(), &m),
        "live output with the disk full",
    );
    let rec_lines = stream_lines(&run.events, "recording");
    let paused = rec_lines
        .iter()
        .find(|e| e["state"] == "paused")
        .unwrap_or_else(|| panic!("no paused `recording` line: {rec_lines:?}"));
    assert!(
        paused["error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left")),
        "the paused line says why: {paused}"
    );
    let resumed = rec_lines
        .iter()
        .find(|e| e["state"] == "resumed")
        .unwrap_or_else(|| panic!("no resumed `recording` line: {rec_lines:?}"));
    let lost = resumed["records_lost"].as_u64().expect("records_lost");
    assert!(
        lost > 0,
        "the resumed line counts what was not written: {resumed}"
    );
    let summary = run.summary.clone().expect("summary");
    let rec = &summary["recording"];
    assert!(
        rec["pauses"].as_u64() >= Some(1)
            && rec["records_lost"].as_u64() >= Some(lost)
            && rec["paused"] == false,
        "--summary counts the pause and the loss, and it is not paused at the end: {rec}\n{rec_lines:#?}"
    );
    // The segment the last resume started (the stream names it; a resume can come and go
    // before the space is freed, while the tmpfs has a little room) and those after it
    // replay alone and hold the processes spawned after the space came back.
    let last_resumed = rec_lines
        .iter()
        .rev()
        .find(|e| e["state"] == "resumed")
        .and_then(|e| e["file"].as_str())
        .map(PathBuf::from)
        .expect("a resumed line names its segment");
    let new: Vec<PathBuf> = segments(&dir)
        .into_iter()
        .filter(|p| *p >= last_resumed)
        .collect();
    assert!(
        new.first() == Some(&last_resumed),
        "the resumed segment {} is in the directory: {new:?}",
        last_resumed.display()
    );
    let mut replayed = String::new();
    for s in &new {
        replayed.push_str(&replay(s));
    }
    check_each_once(
        &spawned[after_from..],
        &execs_by_marker(replayed.lines(), &m),
        "the segment(s) written after the space came back",
    );
    assert!(
        live.ends_with(&replayed),
        "the segments written after the resume replay to the end of the live output"
    );
}

/// Every line of `path` is a whole JSON object (no NULs from a sparse file, no cut lines).
fn whole_lines(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    assert!(
        !bytes.contains(&0),
        "{}: NUL bytes (a sparse file after a truncate)",
        path.display()
    );
    let text = String::from_utf8(bytes).expect("UTF-8");
    parse_and_validate(&text, &path.display().to_string());
    text
}

#[test]
fn output_rotated_by_copytruncate_and_by_rename_and_sighup_loses_and_doubles_nothing() {
    let _turn = one_storm_at_a_time();
    let m = marker("logrotate");
    let t = Tracer::start(&[]);
    let out = t.output.clone();
    let pid = t.pid();
    let mut spawned = storm(&m, 0, 300);
    // copytruncate, at a quiet moment (what is written between logrotate's copy and its
    // truncate is lost by design of copytruncate): the next lines go to the start.
    std::thread::sleep(Duration::from_millis(1500));
    let copied = out.with_extension("1");
    std::fs::copy(&out, &copied).expect("copy");
    std::fs::OpenOptions::new()
        .write(true)
        .open(&out)
        .expect("open the output")
        .set_len(0)
        .expect("truncate");
    spawned.extend(storm(&m, 300, 300));
    std::thread::sleep(Duration::from_millis(1500));
    // rename + SIGHUP (logrotate's create), in the middle of a storm.
    let renamed = out.with_extension("2");
    let storm_thread = {
        let m = m.clone();
        std::thread::spawn(move || storm(&m, 600, 600))
    };
    std::thread::sleep(Duration::from_millis(200));
    std::fs::rename(&out, &renamed).expect("rename");
    std::thread::sleep(Duration::from_millis(200));
    // SAFETY: signalling the child this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0, "SIGHUP");
    spawned.extend(storm_thread.join().expect("storm thread"));
    spawned.extend(storm(&m, 1200, 300));
    let run = t.stop();
    assert!(
        run.stderr.iter().any(|l| l.contains("reopened")),
        "podtrace said it reopened the output: {:#?}",
        run.stderr
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&out)
            .expect("a new output file after SIGHUP")
            .permissions(),
    ) & 0o777;
    assert_eq!(mode, 0o600, "the reopened output is owner-only");
    let mut all = String::new();
    for f in [&copied, &renamed, &out] {
        all.push_str(&whole_lines(f));
    }
    let new_text = std::fs::read_to_string(&out).expect("new output");
    assert!(
        new_text.contains(&format!("{m}-001")),
        "lines after the SIGHUP went to the new file"
    );
    check_each_once(
        &spawned,
        &execs_by_marker(all.lines(), &m),
        "the output's three files together",
    );
}

#[test]
fn segments_rotated_by_time_replay_in_order_to_the_live_output() {
    let _turn = one_storm_at_a_time();
    let keep = tempfile::tempdir().expect("tmp");
    let dir = keep.path().join("rec");
    let m = marker("time");
    let t = Tracer::start(&[
        "--record",
        &dir.display().to_string(),
        "--segment-time",
        "2s",
    ]);
    let mut spawned = Vec::new();
    let end = Instant::now() + Duration::from_secs(7);
    while Instant::now() < end {
        let n = spawned.len();
        spawned.extend(storm(&m, n, 20));
        std::thread::sleep(Duration::from_millis(200));
    }
    let run = t.stop();
    let live = std::fs::read_to_string(run.dir.path().join("events.ndjson")).expect("live");
    let segs = segments(&dir);
    assert!(
        segs.len() >= 3,
        "7 s with --segment-time 2s makes at least 3 segments: {segs:?}"
    );
    let mut joined = String::new();
    for s in &segs {
        joined.push_str(&replay(s));
    }
    assert!(
        live == joined,
        "the segments, replayed one by one in order, print the live output byte for byte \
         ({} lines live, {} replayed)",
        live.lines().count(),
        joined.lines().count()
    );
    check_each_once(&spawned, &execs_by_marker(joined.lines(), &m), "replay");
}
