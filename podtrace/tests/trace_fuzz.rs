//! Property tests (fuzzing) of the trace reader and the engine: arbitrary and mutated input
//! never panics, every error names `FILE:LINE`, and the engine answers every event.
use std::io::Cursor;

use std::collections::HashSet;

use podtrace::cgroups::{CgroupSetup, Hierarchy};
use podtrace::engine::Engine;
use podtrace::kernel_event::{ExecPayload, ExitPayload, KernelEvent, Kind, ReapEvent};
use podtrace::output::Event;
use podtrace::trace::reader::TraceReader;
use podtrace::trace::{synth, CgroupFact, Header, Record, ResyncStart};
use proptest::prelude::*;

/// Reads everything; returns (records, error text).
fn read_all(bytes: Vec<u8>, lenient: bool) -> (usize, Option<String>) {
    let mut r =
        TraceReader::from_reader(Box::new(Cursor::new(bytes)), "fuzz.trace".into(), lenient);
    let mut n = 0;
    loop {
        match r.next_record() {
            Ok(Some(_)) => n += 1,
            Ok(None) => return (n, None),
            Err(e) => return (n, Some(e.to_string())),
        }
    }
}

fn base() -> Vec<u8> {
    synth::to_ndjson(&synth::trace(60, 2, 7)).into_bytes()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048), lenient in any::<bool>()) {
        let (_, err) = read_all(bytes, lenient);
        if let Some(e) = err {
            prop_assert!(e.starts_with("fuzz.trace:"), "{}", e);
        }
    }

    #[test]
    fn mutated_traces_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8), cut in any::<prop::sample::Index>(), lenient in any::<bool>()) {
        let mut bytes = base();
        for (i, b) in flips {
            let i = i.index(bytes.len());
            bytes[i] = b;
        }
        let keep = cut.index(bytes.len() + 1);
        bytes.truncate(keep.max(1));
        let (_, err) = read_all(bytes, lenient);
        if let Some(e) = err {
            let mut parts = e.splitn(3, ':');
            prop_assert_eq!(parts.next(), Some("fuzz.trace"));
            prop_assert!(parts.next().map(|l| l.parse::<u64>().is_ok()).unwrap_or(false), "{}", e);
        }
    }

    #[test]
    fn engine_takes_any_sequence_with_one_exit_per_process(recs in proptest::collection::vec(record(), 1..200)) {
        let mut engine = Engine::new(&Header {
            format: podtrace::trace::FORMAT_VERSION,
            podtrace_version: "fuzz".into(),
            kernel_release: "fuzz".into(),
            hostname: "fuzz".into(),
            boot_offset_ns: 0,
            host_pidns: 4026531836,
            node: None,
            started_unix_ns: 0,
            cgroups: CgroupSetup { v2: true, v1: Some("pids".into()) },
            hold_ns: 0,
            segment: None,
        });
        let mut out = Vec::new();
        engine.apply(&Record::SnapshotEnd {}, &mut out);
        let mut exits = HashSet::new();
        let end = Record::End(podtrace::trace::EndRecord { events: 0, lost: 0 });
        for rec in recs.iter().chain([&end]) {
            let before = out.len();
            engine.apply(rec, &mut out);
            let made = out.len() - before;
            // Exits inferred after a loss come before the record's own line (or at a reap,
            // or at the end); each record makes at most its own one besides.
            let inferred = out[before..]
                .iter()
                .filter(|e| matches!(e, Event::Exit { inferred: true, .. }))
                .count();
            let own = made - inferred;
            match rec {
                Record::Event(_) => prop_assert!(own <= 1),
                Record::Lost(_) => prop_assert_eq!(own, 1),
                Record::Reap(_) | Record::Malformed(_) | Record::End(_) => prop_assert!(own <= usize::from(matches!(rec, Record::Malformed(_)))),
                _ => prop_assert_eq!(made, 0),
            }
            for e in &out[before..] {
                if let Event::Exit { process, .. } = e {
                    prop_assert!(
                        exits.insert((process.pid, process.start_ns / 10_000_000)),
                        "second exit of {} {}", process.pid, process.start_ns
                    );
                }
            }
            prop_assert_eq!(engine.table().children_len(), engine.table().live_len());
        }
        let _ = podtrace::view::tree(&engine, &podtrace::view::Filter { all: true, ..Default::default() });
    }
}

fn record() -> impl Strategy<Value = Record> {
    prop_oneof![
        6 => event().prop_map(Record::Event),
        1 => (1u32..40, 0u64..3).prop_map(|(pid, s)| Record::Reap(ReapEvent {
            ts_ns: u64::from(pid) * 1000 + 1,
            pid,
            start_ns: (u64::from(pid) + s) * 10_000_000,
        })),
        1 => (0u64..4, prop::sample::select(vec![
            None,
            Some("/".to_string()),
            Some("/kubepods/besteffort/pod123/0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".to_string()),
            Some("/kubepods.slice/kubepods-pod0a1b_2c3d.slice/crio-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope".to_string()),
        ]), any::<bool>()).prop_map(|(id, path, v1)| Record::Cgroup(CgroupFact {
            hierarchy: if v1 { Hierarchy::V1 } else { Hierarchy::V2 },
            id: [0, 1, 7, 99][id as usize],
            path,
        })),
        1 => Just(Record::Lost(podtrace::trace::LostRecord { ts_ns: 5, count: 1, kinds: Default::default() })),
        1 => (1u64..100).prop_map(|ts| Record::ResyncStart(ResyncStart { ts_ns: ts * 1000 })),
        1 => Just(Record::ResyncEnd(Default::default())),
    ]
}

fn event() -> impl Strategy<Value = KernelEvent> {
    (
        0u8..4,
        1u32..40,
        0u32..40,
        0u32..3,
        prop::sample::select(vec![0u64, 1, 7, 99]),
        prop::collection::vec(
            prop::sample::select(vec![
                "/usr/bin/conmon",
                "-c",
                "abc",
                "-n",
                "k8s_a_b_c_d_0",
                "runc",
                "create",
                "-namespace",
                "k8s.io",
                "-id",
                "x",
                "--exec",
                "sh",
            ]),
            0..6,
        ),
        any::<u32>(),
    )
        .prop_map(|(k, pid, ppid, ns, cg, argv, status)| {
            let kind = [Kind::Fork, Kind::Exec, Kind::Exit, Kind::Thread][usize::from(k)];
            KernelEvent {
                kind,
                ts_ns: u64::from(pid) * 1000,
                pid,
                tid: pid,
                ppid,
                nspid: if ns == 0 { pid } else { 1 },
                pidns: 4026531836 + ns,
                uid: 0,
                gid: 0,
                comm: argv.first().map(|s| s.to_string()).unwrap_or_default(),
                cgroup_id: cg,
                cgroup_v1_id: cg ^ 1,
                start_ns: (u64::from(pid) + u64::from(status % 3)) * 10_000_000,
                partial: false,
                exec: (kind == Kind::Exec).then(|| ExecPayload {
                    filename: argv.first().map(|s| s.to_string()).unwrap_or_default(),
                    argv: argv.iter().map(|s| s.to_string()).collect(),
                    argv_truncated: false,
                    filename_truncated: false,
                    trimmed: false,
                }),
                exit: (kind == Kind::Exit).then_some(ExitPayload {
                    status,
                    duration_ns: 1,
                }),
            }
        })
}

#[test]
fn synthetic_trace_reads_back_record_for_record() {
    let records = synth::trace(300, 3, 1);
    let text = synth::to_ndjson(&records);
    let mut r = TraceReader::from_reader(
        Box::new(Cursor::new(text.into_bytes())),
        "synth".into(),
        false,
    );
    let mut back: Vec<Record> = Vec::new();
    while let Some((_, rec)) = r.next_record().expect("valid trace") {
        back.push(rec);
    }
    assert_eq!(back, records);
    assert!(r.cut_short.is_none());
}
