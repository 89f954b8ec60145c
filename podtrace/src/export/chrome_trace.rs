//! Process lifetimes as a Trace Event Format timeline (what Perfetto and chrome://tracing open).
//!
//! - One trace "process" (track group) per container, named `pod NS/NAME — CONTAINER (ID12)`,
//!   and one named `host` for processes outside containers.
//! - One thread track per host process inside it (tid = host pid), holding one complete event
//!   (`"ph":"X"`) for the process's lifetime, named after argv[0] of its last exec (else comm),
//!   with args pid, nspid, ppid, argv, exit_code, signal.
//! - `ts` and `dur` are microseconds from the start of the trace (the recording's start when
//!   given with [`ChromeTrace::with_origin`], else the first event). A process forked before
//!   that starts at its exit minus its run time, clamped to 0; one still running at the end
//!   lasts until the last event.
//! - Lost-event lines become global instant events (`"ph":"i"`).
//!
//! The Trace Event Format: "Trace Event Format" document of the Chromium project (JSON object
//! form, `traceEvents` array, `ph` `X` / `M` / `i`).
use std::collections::HashMap;

use serde_json::{json, Value};

use crate::clock::{format_rfc3339, parse_rfc3339};
use crate::output::{ContainerRef, Event, PodRef, ProcessFields, Role};

/// Trace pid of the host track; containers count up from the next.
const HOST_TRACK: u32 = 1;

#[derive(Debug)]
struct Slice {
    pid: u32,
    nspid: u32,
    ppid: u32,
    comm: std::sync::Arc<str>,
    filename: Option<String>,
    argv: Option<Vec<String>>,
    execs: u32,
    role: Option<Role>,
    /// Unix ns of the fork, when seen.
    forked: Option<i64>,
    /// Unix ns of the first event seen of it.
    first: i64,
    exited: Option<i64>,
    run_ns: Option<u64>,
    exit_code: Option<u8>,
    signal: Option<u8>,
    core_dumped: bool,
    /// Its exit was inferred (the kernel's record of it was lost).
    exit_inferred: bool,
    container: Option<String>,
}

#[derive(Debug)]
struct Track {
    pid: u32,
    container: ContainerRef,
    pod: Option<PodRef>,
}

/// Collects events; [`ChromeTrace::finish`] builds the trace.
#[derive(Debug, Default)]
pub struct ChromeTrace {
    /// Slices by (host pid, start_ns), in the order first seen.
    slices: Vec<Slice>,
    index: HashMap<(u32, u64), usize>,
    tracks: HashMap<String, Track>,
    lost: Vec<(i64, u64)>,
    /// Unix ns of time 0: given, else the earliest event.
    origin_ns: Option<i64>,
    first_ns: Option<i64>,
    last_ns: i64,
    /// Events whose `ts` did not parse (not from podtrace's own output).
    pub skipped: u64,
}

fn track_name(c: &ContainerRef, pod: Option<&PodRef>) -> String {
    let id12: String = c.id.chars().take(12).collect();
    let container = match &c.name {
        Some(n) => format!("{n} ({id12})"),
        None => format!("container {id12}"),
    };
    match pod {
        Some(p) => format!(
            "pod {}/{} \u{2014} {container}",
            p.namespace.as_deref().unwrap_or("?"),
            p.name.as_deref().unwrap_or("?")
        ),
        None => container,
    }
}

fn us(ns: i64) -> f64 {
    ns as f64 / 1000.0
}

impl ChromeTrace {
    pub fn new() -> Self {
        Self::default()
    }

    /// Time 0 at this unix time (a trace header's `started_unix_ns`) instead of the first event.
    pub fn with_origin(origin_unix_ns: i64) -> Self {
        Self {
            origin_ns: Some(origin_unix_ns),
            ..Self::default()
        }
    }

    /// Takes one event (any order of types; the stream order of `run` / `replay`).
    pub fn push(&mut self, ev: &Event) {
        let ts_ns = match ev {
            Event::Lost { ts, .. } | Event::Malformed { ts, .. } => parse_rfc3339(ts),
            _ => match ev.process() {
                Some(p) => Ok(p.ts.unix_ns()),
                None => return,
            },
        };
        let Ok(ts_ns) = ts_ns else {
            self.skipped += 1;
            return;
        };
        self.first_ns = Some(self.first_ns.map_or(ts_ns, |f| f.min(ts_ns)));
        self.last_ns = self.last_ns.max(ts_ns);
        match ev {
            Event::Lost { count, .. } => self.lost.push((ts_ns, *count)),
            Event::Thread { .. }
            | Event::Malformed { .. }
            | Event::Recording { .. }
            | Event::OutputLost { .. } => {}
            Event::Fork { process } => {
                let s = self.slice(process, ts_ns);
                s.forked = Some(s.forked.map_or(ts_ns, |f| f.min(ts_ns)));
            }
            Event::Exec {
                process,
                filename,
                argv,
                ..
            } => {
                let s = self.slice(process, ts_ns);
                s.filename = Some(filename.to_string());
                s.argv = Some(argv.to_vec());
                s.execs += 1;
            }
            Event::Exit {
                process,
                exit_code,
                signal,
                core_dumped,
                duration_ns,
                inferred,
            } => {
                let s = self.slice(process, ts_ns);
                s.exited = Some(ts_ns);
                s.run_ns = *duration_ns;
                s.exit_code = *exit_code;
                s.signal = *signal;
                s.core_dumped = core_dumped.unwrap_or(false);
                s.exit_inferred = *inferred;
            }
        }
    }

    /// The slice of this process (created on first sight), updated with the event's fields.
    fn slice(&mut self, p: &ProcessFields, ts_ns: i64) -> &mut Slice {
        if let Some(c) = &p.container {
            let next = HOST_TRACK + 1 + self.tracks.len() as u32;
            let t = self.tracks.entry(c.id.clone()).or_insert_with(|| Track {
                pid: next,
                container: ContainerRef::clone(c),
                pod: None,
            });
            // Names and pods are learnt as the run goes: keep the latest known.
            if c.name.is_some() || t.container.name.is_none() {
                t.container = ContainerRef::clone(c);
            }
            if let Some(pod) = &p.pod {
                t.pod = Some(PodRef::clone(pod));
            }
        }
        let key = (p.pid, p.start_ns);
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                self.slices.push(Slice {
                    pid: p.pid,
                    nspid: p.nspid,
                    ppid: p.ppid,
                    comm: p.comm.clone(),
                    filename: None,
                    argv: None,
                    execs: 0,
                    role: p.role,
                    forked: None,
                    first: ts_ns,
                    exited: None,
                    run_ns: None,
                    exit_code: None,
                    signal: None,
                    core_dumped: false,
                    exit_inferred: false,
                    container: None,
                });
                self.index.insert(key, self.slices.len() - 1);
                self.slices.len() - 1
            }
        };
        let s = &mut self.slices[i];
        s.first = s.first.min(ts_ns);
        s.nspid = p.nspid;
        s.ppid = p.ppid;
        s.comm.clone_from(&p.comm);
        if p.role.is_some() {
            s.role = p.role;
        }
        if let Some(c) = &p.container {
            s.container = Some(c.id.clone());
        }
        s
    }

    /// The trace: a JSON object with `traceEvents` (metadata first, then slices by start).
    pub fn finish(&self) -> Value {
        let origin = match (self.origin_ns, self.first_ns) {
            (Some(o), Some(f)) => o.min(f),
            (Some(o), None) => o,
            (None, f) => f.unwrap_or(0),
        };
        let end = self.last_ns.max(origin);
        let mut meta = vec![
            json!({"ph": "M", "name": "process_name", "pid": HOST_TRACK, "tid": 0,
                   "args": {"name": "host"}}),
            json!({"ph": "M", "name": "process_sort_index", "pid": HOST_TRACK, "tid": 0,
                   "args": {"sort_index": 0}}),
        ];
        let mut tracks: Vec<&Track> = self.tracks.values().collect();
        tracks.sort_by_key(|t| t.pid);
        for t in &tracks {
            meta.push(
                json!({"ph": "M", "name": "process_name", "pid": t.pid, "tid": 0,
                             "args": {"name": track_name(&t.container, t.pod.as_ref())}}),
            );
            meta.push(
                json!({"ph": "M", "name": "process_sort_index", "pid": t.pid, "tid": 0,
                             "args": {"sort_index": t.pid}}),
            );
            let mut labels = vec![format!("container {}", t.container.id)];
            if let Some(rt) = t.container.runtime {
                labels.push(format!("runtime {rt}"));
            }
            if let Some(uid) = t.pod.as_ref().and_then(|p| p.uid.as_deref()) {
                labels.push(format!("pod uid {uid}"));
            }
            meta.push(
                json!({"ph": "M", "name": "process_labels", "pid": t.pid, "tid": 0,
                             "args": {"labels": labels.join(", ")}}),
            );
        }
        let mut slices: Vec<(i64, u32, Value)> = Vec::with_capacity(self.slices.len());
        let mut named_threads: HashMap<(u32, u32), ()> = HashMap::new();
        for s in &self.slices {
            let track = s
                .container
                .as_ref()
                .and_then(|id| self.tracks.get(id))
                .map_or(HOST_TRACK, |t| t.pid);
            let started_before = s.forked.is_none();
            let start = match (s.forked, s.exited, s.run_ns) {
                (Some(f), _, _) => f,
                (None, Some(x), Some(run)) if run > 0 => {
                    x.saturating_sub(i64::try_from(run).unwrap_or(i64::MAX))
                }
                _ => origin,
            }
            .max(origin);
            let stop = s.exited.unwrap_or(end).max(start);
            let name = s
                .argv
                .as_ref()
                .and_then(|a| a.first())
                .filter(|a0| !a0.is_empty())
                .map(|a0| a0.rsplit('/').next().unwrap_or(a0).to_string())
                .unwrap_or_else(|| s.comm.to_string());
            let mut args = json!({
                "pid": s.pid,
                "nspid": s.nspid,
                "ppid": s.ppid,
                "comm": s.comm,
                "argv": s.argv,
                "exit_code": s.exit_code,
                "signal": s.signal,
            });
            if let Some(obj) = args.as_object_mut() {
                if let Some(f) = &s.filename {
                    obj.insert("filename".into(), json!(f));
                }
                if s.execs > 1 {
                    obj.insert("execs".into(), json!(s.execs));
                }
                if s.core_dumped {
                    obj.insert("core_dumped".into(), json!(true));
                }
                if s.exit_inferred {
                    // The slice ends when the process was found gone, not when it exited.
                    obj.insert("exit_inferred".into(), json!(true));
                }
                if let Some(r) = s.role {
                    obj.insert("role".into(), json!(r));
                }
                if let Some(id) = &s.container {
                    obj.insert("container".into(), json!(id));
                }
                if started_before {
                    obj.insert("started_before_trace".into(), json!(true));
                }
                if s.exited.is_none() {
                    obj.insert("still_running".into(), json!(true));
                }
            }
            if named_threads.insert((track, s.pid), ()).is_none() {
                meta.push(
                    json!({"ph": "M", "name": "thread_name", "pid": track, "tid": s.pid,
                                 "args": {"name": format!("{name} {}", s.pid)}}),
                );
            }
            slices.push((
                start,
                track,
                json!({
                    "ph": "X",
                    "cat": "process",
                    "name": name,
                    "pid": track,
                    "tid": s.pid,
                    "ts": us(start - origin),
                    "dur": us(stop - start),
                    "args": args,
                }),
            ));
        }
        for &(ts, count) in &self.lost {
            slices.push((
                ts,
                HOST_TRACK,
                json!({
                    "ph": "i",
                    "s": "g",
                    "cat": "loss",
                    "name": format!("lost {count} events"),
                    "pid": HOST_TRACK,
                    "tid": 0,
                    "ts": us(ts - origin),
                    "args": {"count": count},
                }),
            ));
        }
        slices.sort_by_key(|(ts, track, _)| (*ts, *track));
        let mut events = meta;
        events.extend(slices.into_iter().map(|(_, _, v)| v));
        json!({
            "traceEvents": events,
            "displayTimeUnit": "ms",
            "otherData": {
                "generator": concat!("podtrace ", env!("CARGO_PKG_VERSION")),
                "origin": format_rfc3339(origin),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::Runtime;
    use crate::output::Timestamp;

    const T0: i64 = 1_700_000_000_000_000_000;

    fn fields(pid: u32, ppid: u32, at_us: i64, container: Option<(&str, &str)>) -> ProcessFields {
        ProcessFields {
            ts: Timestamp(T0 + at_us * 1000),
            pid,
            tid: pid,
            ppid,
            nspid: if container.is_some() { pid - 999 } else { pid },
            pidns: 1,
            uid: 0,
            gid: 0,
            comm: "sh".into(),
            cgroup_id: None,
            start_ns: u64::from(pid) * 1000,
            cgroup: None,
            cgroup_hierarchy: None,
            container: container.map(|(id, name)| {
                ContainerRef {
                    id: id.into(),
                    name: Some(name.into()),
                    runtime: Some(Runtime::Crio),
                    image: None,
                    image_id: None,
                }
                .into()
            }),
            pod: container.map(|_| {
                PodRef {
                    name: Some("web-0".into()),
                    namespace: Some("shop".into()),
                    uid: Some("uid-1".into()),
                }
                .into()
            }),
            role: None,
            partial: false,
            node: None,
        }
    }

    fn exec(p: ProcessFields, argv: &[&str]) -> Event {
        Event::Exec {
            process: p,
            filename: format!("/bin/{}", argv[0]).into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            argv_truncated: false,
            filename_truncated: false,
            trimmed: false,
        }
    }

    fn exit(p: ProcessFields, code: Option<u8>, signal: Option<u8>, run_us: u64) -> Event {
        Event::Exit {
            process: p,
            exit_code: code,
            signal,
            core_dumped: Some(false),
            duration_ns: Some(run_us * 1000),
            inferred: false,
        }
    }

    fn by_tid(trace: &Value, ph: &str, tid: u32) -> Vec<Value> {
        trace["traceEvents"]
            .as_array()
            .expect("traceEvents array")
            .iter()
            .filter(|e| e["ph"] == ph && e["tid"] == tid)
            .cloned()
            .collect()
    }

    fn synthetic() -> Value {
        let c = Some(("0123456789abcdef0123", "nginx"));
        let mut t = ChromeTrace::new();
        // Host shell 500: forks at 0, execs, exits 7 at 100 us.
        t.push(&Event::Fork {
            process: fields(500, 1, 0, None),
        });
        t.push(&exec(
            fields(500, 1, 10, None),
            &["/usr/bin/sh", "-c", "exit 7"],
        ));
        // A process that existed before the trace exits at 50 us after running 1 s.
        t.push(&exit(fields(400, 1, 50, None), None, Some(9), 1_000_000));
        t.push(&exit(fields(500, 1, 100, None), Some(7), None, 100));
        // Container process 1001: forked at 20 us, still running at the end.
        t.push(&Event::Fork {
            process: fields(1001, 900, 20, c),
        });
        t.push(&exec(
            fields(1001, 900, 30, c),
            &["nginx", "-g", "daemon off;"],
        ));
        t.push(&Event::Lost {
            ts: format_rfc3339(T0 + 150_000),
            count: 3,
            kinds: crate::trace::LostKinds {
                exit: 3,
                ..Default::default()
            },
            node: None,
        });
        t.push(&Event::Fork {
            process: fields(1002, 1001, 200, c),
        });
        t.finish()
    }

    #[test]
    fn host_and_container_tracks_with_process_slices() {
        let trace = synthetic();
        let sh = by_tid(&trace, "X", 500);
        assert_eq!(sh.len(), 1, "{sh:?}");
        let sh = &sh[0];
        assert_eq!(sh["name"], "sh", "argv[0] basename");
        assert_eq!(sh["pid"], HOST_TRACK);
        assert_eq!(sh["ts"], 0.0);
        assert_eq!(sh["dur"], 100.0);
        assert_eq!(sh["args"]["exit_code"], 7);
        assert!(sh["args"]["signal"].is_null());
        assert_eq!(sh["args"]["argv"], json!(["/usr/bin/sh", "-c", "exit 7"]));
        assert_eq!(sh["args"]["nspid"], 500);

        let old = &by_tid(&trace, "X", 400)[0];
        assert_eq!(old["ts"], 0.0, "clamped to the trace start");
        assert_eq!(old["dur"], 50.0);
        assert_eq!(old["args"]["signal"], 9);
        assert_eq!(old["args"]["started_before_trace"], true);
        assert_eq!(old["name"], "sh", "no exec seen: comm");

        let nginx = &by_tid(&trace, "X", 1001)[0];
        assert_eq!(nginx["pid"], HOST_TRACK + 1, "the container's track");
        assert_eq!(nginx["name"], "nginx");
        assert_eq!(nginx["ts"], 20.0);
        assert_eq!(nginx["dur"], 180.0, "still running: until the last event");
        assert_eq!(nginx["args"]["still_running"], true);
        assert_eq!(nginx["args"]["nspid"], 2);

        let child = &by_tid(&trace, "X", 1002)[0];
        assert_eq!(child["pid"], HOST_TRACK + 1);
        assert_eq!(child["dur"], 0.0);

        let names: Vec<(Value, Value)> = trace["traceEvents"]
            .as_array()
            .expect("array")
            .iter()
            .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
            .map(|e| (e["pid"].clone(), e["args"]["name"].clone()))
            .collect();
        assert_eq!(
            names,
            [
                (json!(1), json!("host")),
                (
                    json!(2),
                    json!("pod shop/web-0 \u{2014} nginx (0123456789ab)")
                )
            ]
        );
        let thread = by_tid(&trace, "M", 1001);
        assert_eq!(thread[0]["args"]["name"], "nginx 1001");

        let lost: Vec<&Value> = trace["traceEvents"]
            .as_array()
            .expect("array")
            .iter()
            .filter(|e| e["ph"] == "i")
            .collect();
        assert_eq!(lost.len(), 1);
        assert_eq!(lost[0]["ts"], 150.0);
        assert_eq!(lost[0]["args"]["count"], 3);
    }

    /// The structure Perfetto's JSON importer and chrome://tracing need.
    fn assert_trace_event_format(trace: &Value) {
        let events = trace["traceEvents"]
            .as_array()
            .expect("a traceEvents array");
        assert!(!events.is_empty());
        let mut seen_x = false;
        for e in events {
            let ph = e["ph"].as_str().expect("ph is a string");
            assert!(["X", "M", "i"].contains(&ph), "unexpected ph {ph}: {e}");
            assert!(
                e["pid"].is_u64() && e["tid"].is_u64(),
                "integer pid/tid: {e}"
            );
            assert!(e["name"].is_string(), "name: {e}");
            match ph {
                "X" => {
                    seen_x = true;
                    assert!(e["ts"].as_f64().is_some_and(|t| t >= 0.0), "ts: {e}");
                    assert!(e["dur"].as_f64().is_some_and(|d| d >= 0.0), "dur: {e}");
                }
                "i" => assert!(e["ts"].is_number() && e["s"] == "g", "{e}"),
                _ => assert!(e["args"].is_object(), "metadata args: {e}"),
            }
        }
        assert!(seen_x, "at least one slice");
        // Metadata precede the events they name.
        let first_non_meta = events.iter().position(|e| e["ph"] != "M").unwrap_or(0);
        assert!(events[first_non_meta..].iter().all(|e| e["ph"] != "M"));
    }

    #[test]
    fn output_is_json_in_trace_event_format() {
        let trace = synthetic();
        let text = serde_json::to_string(&trace).expect("serialises");
        let back: Value = serde_json::from_str(&text).expect("valid JSON");
        assert_trace_event_format(&back);
    }

    #[test]
    fn origin_at_the_recording_start() {
        let mut t = ChromeTrace::with_origin(T0 - 1_000_000);
        // Ran for 1 s before its exit at 50 us: starts at the origin, 1 ms before the stream.
        t.push(&exit(fields(400, 1, 50, None), Some(0), None, 1_000_000));
        t.push(&Event::Fork {
            process: fields(500, 1, 60, None),
        });
        let trace = t.finish();
        let old = &by_tid(&trace, "X", 400)[0];
        assert_eq!(old["ts"], 0.0);
        assert_eq!(old["dur"], 1050.0);
        assert_eq!(by_tid(&trace, "X", 500)[0]["ts"], 1060.0);
        assert_eq!(
            trace["otherData"]["origin"],
            format_rfc3339(T0 - 1_000_000).as_str()
        );
    }

    #[test]
    fn slices_on_one_thread_never_overlap() {
        // Perfetto drops X events on a thread that are not nested: a reused pid gets a new
        // slice after the old one ended.
        let mut t = ChromeTrace::new();
        t.push(&Event::Fork {
            process: fields(700, 1, 0, None),
        });
        t.push(&exit(fields(700, 1, 10, None), Some(0), None, 10));
        let mut again = fields(700, 1, 20, None);
        again.start_ns += 20_000;
        t.push(&Event::Fork {
            process: again.clone(),
        });
        again.ts = Timestamp(T0 + 30_000);
        t.push(&exit(again, Some(1), None, 10));
        let trace = t.finish();
        let mut s = by_tid(&trace, "X", 700);
        s.sort_by(|a, b| {
            a["ts"]
                .as_f64()
                .partial_cmp(&b["ts"].as_f64())
                .expect("numbers")
        });
        assert_eq!(s.len(), 2);
        let end0 = s[0]["ts"].as_f64().expect("ts") + s[0]["dur"].as_f64().expect("dur");
        assert!(end0 <= s[1]["ts"].as_f64().expect("ts"), "{s:?}");
    }

    #[test]
    fn empty_stream_and_bad_timestamps() {
        let mut t = ChromeTrace::new();
        t.push(&Event::Lost {
            ts: "not a time".into(),
            count: 1,
            kinds: crate::trace::LostKinds::default(),
            node: None,
        });
        assert_eq!(t.skipped, 1);
        let trace = t.finish();
        assert_eq!(
            trace["traceEvents"].as_array().map(Vec::len),
            Some(2),
            "only the host track's metadata: {trace}"
        );
    }
}
