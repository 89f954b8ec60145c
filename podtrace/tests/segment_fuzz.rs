//! Property tests (fuzzing) of trace segments: a segment begins with the engine's state
//! (`state` ... `state_end`) instead of a /proc snapshot. Cut, byte-flipped or with a number
//! of its state changed, replaying it never panics; a failure is an error naming `FILE:LINE`
//! (or a whole-file error naming the file), as for single-file traces (trace_fuzz.rs).
// Test code: helpers panic with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::path::Path;

use podtrace::engine::Engine;
use podtrace::filter::EventFilter;
use podtrace::pipeline::Pipeline;
use podtrace::replay::{replay, Until};
use podtrace::trace::{synth, Record, SegmentInfo};
use proptest::prelude::*;
use serde_json::Value;

/// A synthetic trace cut at a boundary after its middle, written as the second segment of a
/// recording: header (with `segment`), the engine's state at the cut, `state_end`, the rest.
fn segment_lines() -> Vec<String> {
    let recs = synth::trace(120, 2, 5);
    let Some(Record::Header(h)) = recs.first() else {
        panic!("a synthetic trace starts with its header");
    };
    let mut engine = Engine::new(h);
    let mut out = Vec::new();
    let mut cut = None;
    for (i, r) in recs.iter().enumerate().skip(1) {
        engine.apply(r, &mut out);
        if i >= recs.len() / 2 && engine.at_boundary() {
            cut = Some(i + 1);
            break;
        }
    }
    let cut = cut.expect("a boundary after the middle of the synthetic trace");
    let mut header = h.clone();
    header.segment = Some(SegmentInfo {
        seq: 2,
        recording_started_unix_ns: h.started_unix_ns,
    });
    let mut seg = vec![Record::Header(header)];
    engine
        .dump_state(|s| {
            seg.push(Record::State(s));
            Ok::<(), ()>(())
        })
        .expect("collecting the state");
    seg.push(Record::StateEnd {});
    seg.extend(recs[cut..].iter().cloned());
    synth::to_ndjson(&seg).lines().map(str::to_string).collect()
}

/// Replays `bytes` as the segment file `path`; the error text when it fails.
fn replay_bytes(path: &Path, bytes: &[u8], lenient: bool) -> Option<String> {
    std::fs::write(path, bytes).expect("writing the segment");
    match replay(
        path,
        lenient,
        Until::End,
        Pipeline::new(EventFilter::default()),
    ) {
        Ok(_) => None,
        Err(e) => Some(format!("{e:#}")),
    }
}

/// A failure starts with the file's name, then its line when it is about one
/// (`FILE:LINE: ...`), or what is wrong with the whole file (`FILE: ...`).
fn names_where(e: &str, path: &Path) -> bool {
    let file = path.display().to_string();
    let Some(rest) = e.strip_prefix(&format!("{file}:")) else {
        return false;
    };
    rest.starts_with(' ')
        || rest
            .split(':')
            .next()
            .is_some_and(|l| l.parse::<u64>().is_ok())
}

/// Every number in `v`, as a path of keys and indices, to change one.
fn numbers(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        Value::Number(_) => out.push(at.clone()),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                at.push(i.to_string());
                numbers(x, at, out);
                at.pop();
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                at.push(k.clone());
                numbers(x, at, out);
                at.pop();
            }
        }
        _ => {}
    }
}

fn at_path<'a>(v: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, k| match v {
        Value::Array(a) => a.get_mut(k.parse::<usize>().ok()?),
        Value::Object(o) => o.get_mut(k),
        _ => None,
    })
}

#[test]
fn the_segment_replays_alone() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("seg.trace");
    let text = segment_lines().join("\n") + "\n";
    let states = text
        .lines()
        .filter(|l| l.starts_with("{\"state\":"))
        .count();
    // The engine's own record, cgroups, containers, pods, processes: what the fuzz changes.
    assert!(
        states > 10,
        "the segment's state has {states} records:\n{text}"
    );
    let err = replay_bytes(&path, text.as_bytes(), false);
    assert_eq!(err, None, "the unchanged segment replays");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// Bytes flipped anywhere and the file cut anywhere.
    #[test]
    fn flipped_and_cut_segments_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
        lenient in any::<bool>(),
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("seg.trace");
        let mut bytes = (segment_lines().join("\n") + "\n").into_bytes();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        bytes.truncate(cut.index(bytes.len() + 1).max(1));
        if let Some(e) = replay_bytes(&path, &bytes, lenient) {
            prop_assert!(names_where(&e, &path), "{}", e);
        }
    }

    /// Well-formed JSON with one number of one state record changed: counts, pids, ids, times
    /// that do not fit together. The engine takes what it is given without panicking.
    #[test]
    fn a_state_with_a_changed_number_never_panics(
        line in any::<prop::sample::Index>(),
        which in any::<prop::sample::Index>(),
        value in prop_oneof![Just(0u64), Just(1), Just(u64::MAX), Just(u64::from(u32::MAX)), any::<u64>()],
    ) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("seg.trace");
        let mut lines = segment_lines();
        let states: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.starts_with("{\"state\":"))
            .map(|(i, _)| i)
            .collect();
        prop_assume!(!states.is_empty());
        let i = states[line.index(states.len())];
        let mut v: Value = serde_json::from_str(&lines[i]).expect("a state line is JSON");
        let mut paths = Vec::new();
        numbers(&v, &mut Vec::new(), &mut paths);
        prop_assume!(!paths.is_empty());
        let p = &paths[which.index(paths.len())];
        if let Some(n) = at_path(&mut v, p) {
            *n = Value::from(value);
        }
        lines[i] = v.to_string();
        let bytes = (lines.join("\n") + "\n").into_bytes();
        for lenient in [false, true] {
            if let Some(e) = replay_bytes(&path, &bytes, lenient) {
                prop_assert!(names_where(&e, &path), "{}", e);
            }
        }
    }
}
