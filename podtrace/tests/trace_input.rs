//! Trace files as input: the bad-input corpus, crash-cut files, lenient mode, huge lines,
//! replay of a good trace, `tree --from --at`. Runs the real binary; no root needed.
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/traces")
}

fn podtrace(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_podtrace"))
        .args(args)
        .output()
        .expect("run podtrace")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn every_bad_trace_names_file_and_line_and_exits_2() {
    let dir = corpus().join("bad");
    let expected = std::fs::read_to_string(dir.join("EXPECTED")).expect("EXPECTED list");
    let mut checked = 0;
    for line in expected
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let mut f = line.split('\t');
        let (name, lineno, reason) = (
            f.next().expect("file"),
            f.next().expect("line"),
            f.next().expect("reason"),
        );
        let path = dir.join(name);
        let path_s = path.display().to_string();
        for cmd in [
            vec!["replay", path_s.as_str()],
            vec!["tree", "--from", path_s.as_str()],
        ] {
            let out = podtrace(&cmd);
            let err = stderr(&out);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{name} ({cmd:?}): exit status, stderr: {err}"
            );
            let want = format!("{path_s}:{lineno}: ");
            assert!(
                err.contains(&want),
                "{name}: error must start with {want}: {err}"
            );
            assert!(
                err.contains(reason),
                "{name}: error must say `{reason}`: {err}"
            );
            assert!(!err.contains("panicked"), "{name}: panic: {err}");
        }
        checked += 1;
    }
    let files = std::fs::read_dir(&dir).expect("corpus").count() - 1;
    assert_eq!(checked, files, "every corpus file has an expectation");
    assert!(checked >= 15);
}

#[test]
fn good_trace_replays_to_the_expected_events() {
    let path = corpus().join("good/minimal.trace");
    let out = podtrace(&["replay", &path.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8(out.stdout.clone()).expect("UTF-8 output");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let kinds: Vec<&str> = lines
        .iter()
        .map(|e| e["type"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(kinds, ["fork", "exec", "exit", "lost"]);
    assert_eq!(lines[1]["argv"], serde_json::json!(["sh", "-c", "exit 7"]));
    assert_eq!(lines[2]["exit_code"], 7);
    assert_eq!(lines[3]["count"], 5);
    // boot offset 1795000000 s + boot 100.0001 s
    assert_eq!(lines[1]["ts"], "2026-11-18T11:08:20.000100000Z");
    assert!(stderr(&out).is_empty(), "no warnings: {}", stderr(&out));
}

#[test]
fn trace_cut_short_by_a_crash_replays_what_is_complete_with_a_warning() {
    let path = corpus().join("good/cut-short.trace");
    let out = podtrace(&["replay", &path.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let n = String::from_utf8_lossy(&out.stdout).lines().count();
    assert_eq!(n, 2, "fork and exec replayed, the cut exit is not");
    let err = stderr(&out);
    assert!(
        err.contains("WARN") && err.contains("incomplete"),
        "warning expected: {err}"
    );
    assert!(
        err.contains(&format!("{}:7:", path.display())),
        "names the cut line: {err}"
    );
}

#[test]
fn lenient_skips_counts_and_says_so() {
    let path = corpus().join("bad/unknown-event-type.trace");
    let out = podtrace(&["replay", "--lenient", &path.display().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("skipped 1 bad record"), "{err}");
    assert!(err.contains(":3:"), "the skipped record is named: {err}");
    // Missing headers are not skippable: there is nothing to replay against.
    let path = corpus().join("bad/missing-header.trace");
    let out = podtrace(&["replay", "--lenient", &path.display().to_string()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_100_mb_line_is_an_error_not_an_allocation() {
    let dir = tempfile::tempdir().expect("tmp");
    let path = dir.path().join("huge.trace");
    let good = std::fs::read_to_string(corpus().join("good/minimal.trace")).expect("good trace");
    let header = good.lines().next().expect("header line");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
    use std::io::Write;
    writeln!(f, "{header}").expect("write");
    writeln!(f, "{{\"snapshot_end\":{{}}}}").expect("write");
    let chunk = vec![b'x'; 1 << 20];
    f.write_all(b"{\"event\":\"").expect("write");
    for _ in 0..100 {
        f.write_all(&chunk).expect("write");
    }
    f.write_all(b"\"}\n").expect("write");
    drop(f);
    let start = std::time::Instant::now();
    let out = podtrace(&["replay", &path.display().to_string()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("{}:3: line longer than", path.display())),
        "{}",
        stderr(&out)
    );
    assert!(start.elapsed().as_secs() < 20);
}

#[test]
fn compressed_trace_reads_like_a_plain_one() {
    let dir = tempfile::tempdir().expect("tmp");
    let plain = corpus().join("good/minimal.trace");
    let zst = dir.path().join("minimal.trace.zst");
    let data = std::fs::read(&plain).expect("read");
    std::fs::write(&zst, zstd::encode_all(&data[..], 3).expect("compress")).expect("write");
    let a = podtrace(&["replay", &plain.display().to_string()]);
    let b = podtrace(&["replay", &zst.display().to_string()]);
    assert!(a.status.success() && b.status.success(), "{}", stderr(&b));
    assert_eq!(a.stdout, b.stdout);
}

#[test]
fn tree_at_a_past_time_shows_what_was_alive_then() {
    let path = corpus().join("good/minimal.trace");
    let p = path.display().to_string();
    // Recording started at unix 1795000100 s = boot 100 s; the shell (pid 42) lives from
    // boot 100.0000 s to 100.0002 s: +150us is inside its life, +1s after it.
    let during = podtrace(&["tree", "--json", "--all", "--from", &p, "--at", "+150us"]);
    assert!(during.status.success(), "{}", stderr(&during));
    let v: serde_json::Value = serde_json::from_slice(&during.stdout).expect("json");
    assert!(
        v.to_string().contains("\"pid\":42"),
        "pid 42 alive at +150us: {v}"
    );
    let after = podtrace(&["tree", "--json", "--all", "--from", &p, "--at", "+1s"]);
    let v: serde_json::Value = serde_json::from_slice(&after.stdout).expect("json");
    assert!(
        !v.to_string().contains("\"pid\":42"),
        "pid 42 gone at +1s: {v}"
    );
    let rfc = podtrace(&[
        "tree",
        "--json",
        "--all",
        "--from",
        &p,
        "--at",
        "2026-11-18T11:08:20.000150000Z",
    ]);
    assert_eq!(
        rfc.stdout, during.stdout,
        "RFC 3339 and offset name the same moment"
    );
    let bad = podtrace(&["tree", "--from", &p, "--at", "yesterday"]);
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
}

/// Corrupt bytes in the middle of a compressed trace are an error naming the file and line,
/// exit 2; a compressed trace cut short (a crash) replays what is complete, exit 0.
#[test]
fn corruption_inside_a_zstd_trace_is_an_error_a_cut_one_is_a_warning() {
    let dir = tempfile::tempdir().expect("tmp");
    let records = podtrace::trace::synth::trace(3000, 3, 9);
    let text = podtrace::trace::synth::to_ndjson(&records);
    // Several frames, so the damage is followed by more data.
    let mut zst = Vec::new();
    for chunk in text.as_bytes().chunks(64 * 1024) {
        zst.extend(zstd::encode_all(chunk, 3).expect("compress"));
    }
    let mut bad = zst.clone();
    let at = bad.len() / 2;
    for b in &mut bad[at..at + 64] {
        *b ^= 0x5a;
    }
    let path = dir.path().join("corrupt.trace.zst");
    std::fs::write(&path, &bad).expect("write");
    let out = podtrace(&["replay", &path.display().to_string()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("{}:", path.display())), "{err}");
    assert!(!err.contains("panicked"), "{err}");

    let cut = dir.path().join("cut.trace.zst");
    std::fs::write(&cut, &zst[..zst.len() - 100]).expect("write");
    let out = podtrace(&["replay", &cut.display().to_string()]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("WARN"), "cut short is a warning: {err}");
    assert!(!out.stdout.is_empty());
}
