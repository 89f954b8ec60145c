//! The checks: podtrace's NDJSON against the scenarios' ground truth. Pure functions, so the
//! rules themselves have unit tests below.
use std::collections::BTreeMap;

use serde_json::Value;

use crate::cgroups::Mode;
use crate::scenario::{self, Facts, InCgroup, Threads};

/// What is NEW in the interface contract is required when this is true: `cgroup_hierarchy` ("v2"
/// in v2 mode), `partial` (false), `filename_truncated` (false), `container.image` / `image_id`
/// (null: the guest has no CRI) and the `cgroup mode:` log line. Until that work lands they are
/// tolerated when ABSENT (never when present and wrong); `cgroup_hierarchy` and the log line are
/// required in v1 mode regardless, where they are the point. The lead sets this to `true` when
/// merging the contract's changes.
pub const REQUIRE_NEW_FIELDS: bool = true;

/// A check's outcome: pass or fail, and a line saying what was seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub pass: bool,
    pub detail: String,
}

pub fn pass(detail: impl Into<String>) -> Outcome {
    Outcome {
        pass: true,
        detail: detail.into(),
    }
}

pub fn fail(detail: impl Into<String>) -> Outcome {
    Outcome {
        pass: false,
        detail: detail.into(),
    }
}

/// The checks each configuration of a boot reports, in order (the host builds its table from
/// the plan: `<configuration>: <check>`).
pub const PER_CONFIG: &[&str] = &[
    "attach",
    "path",
    "stop",
    "schema",
    "replay",
    "lost",
    "exit_code",
    "sigkill",
    "pidns",
    "threads",
    "leader_exit",
    "kthreads",
    "cgroup",
    "container",
    "cgroup_mode",
];

/// Checks made once a boot, before the configurations (then `preflight::CHECKS`).
pub const PER_BOOT: &[&str] = &["cgroups", "memlock"];

/// Every check of a boot, in the order reported.
pub fn plan(configs: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = PER_BOOT
        .iter()
        .chain(crate::preflight::CHECKS)
        .map(|s| s.to_string())
        .collect();
    for c in configs {
        for check in PER_CONFIG {
            v.push(format!("{c}: {check}"));
        }
    }
    v
}

/// Everything podtrace left in the guest.
pub struct Output {
    pub events: Vec<Value>,
    pub summary: Option<Value>,
    pub stderr: Vec<String>,
}

/// The outcome of every check that looks at podtrace's output, in PLAN order.
pub fn all(mode: Mode, out: &Output, facts: &Facts) -> Vec<(&'static str, Outcome)> {
    let ev = &out.events;
    vec![
        ("lost", lost(ev, out.summary.as_ref())),
        ("exit_code", with(&facts.exit7, |p| exit_code(ev, *p))),
        ("sigkill", with(&facts.sigkill, |p| sigkill(ev, *p))),
        ("pidns", with(&facts.pidns, |ns| pidns(ev, *ns))),
        ("threads", with(&facts.threads, |t| threads(ev, t))),
        (
            "leader_exit",
            with(&facts.leader_exit, |(p, c)| leader_exit(ev, *p, *c)),
        ),
        ("cgroup", with(&facts.cgroup, |c| cgroup(ev, mode, c))),
        (
            "container",
            with(&facts.container, |c| container(ev, mode, c)),
        ),
        (
            "kthreads",
            with(&facts.kthreads, |k| kthreads(ev, out.summary.as_ref(), k)),
        ),
        ("cgroup_mode", cgroup_mode(mode, &out.stderr)),
    ]
}

fn with<T>(fact: &Result<T, String>, f: impl FnOnce(&T) -> Outcome) -> Outcome {
    match fact {
        Ok(t) => f(t),
        Err(e) => fail(e.clone()),
    }
}

fn of<'a>(ev: &'a [Value], kind: &str, pid: u32) -> Vec<&'a Value> {
    ev.iter()
        .filter(|e| e["type"] == kind && e["pid"] == pid)
        .collect()
}

/// The fields a reader needs to see why a check failed, not the whole line.
pub fn brief(e: &Value) -> String {
    let keys = [
        "type",
        "pid",
        "tid",
        "comm",
        "nspid",
        "cgroup_id",
        "cgroup",
        "cgroup_hierarchy",
        "container",
        "pod",
        "exit_code",
        "signal",
        "partial",
    ];
    let m: serde_json::Map<String, Value> = keys
        .iter()
        .filter_map(|k| e.get(*k).map(|v| ((*k).to_string(), v.clone())))
        .collect();
    Value::Object(m).to_string()
}

fn exactly_one<'a>(ev: &'a [Value], kind: &str, pid: u32) -> Result<&'a Value, String> {
    match of(ev, kind, pid).as_slice() {
        [one] => Ok(one),
        many => Err(format!(
            "{} {kind} events for pid {pid}, want 1: [{}]",
            many.len(),
            many.iter().map(|e| brief(e)).collect::<Vec<_>>().join(", ")
        )),
    }
}

/// NEW `partial`: false when present; absent only tolerated before the contract lands.
fn not_partial(e: &Value) -> Result<(), String> {
    match e.get("partial") {
        Some(Value::Bool(false)) => Ok(()),
        None if !REQUIRE_NEW_FIELDS => Ok(()),
        other => Err(format!("partial is {other:?}, want false: {}", brief(e))),
    }
}

/// A NEW field that must be `want` when present; absent only tolerated before the contract lands.
fn new_field(obj: &Value, key: &str, want: &Value, what: &Value) -> Result<(), String> {
    match obj.get(key) {
        Some(v) if v == want => Ok(()),
        None if !REQUIRE_NEW_FIELDS => Ok(()),
        other => Err(format!("{key} is {other:?}, want {want}: {}", brief(what))),
    }
}

pub fn lost(ev: &[Value], summary: Option<&Value>) -> Outcome {
    let lines = ev.iter().filter(|e| e["type"] == "lost").count();
    let Some(s) = summary else {
        return fail("no --summary file");
    };
    match (s["lost"].as_u64(), lines) {
        (Some(0), 0) => pass(format!("summary lost 0, no lost line, {} events", ev.len())),
        (n, l) => fail(format!("summary lost {n:?}, {l} lost lines")),
    }
}

pub fn exit_code(ev: &[Value], pid: u32) -> Outcome {
    let r = (|| {
        let exec = exactly_one(ev, "exec", pid)?;
        if exec["argv"] != serde_json::json!(["/bin/sh", "-c", "exit 7"]) {
            return Err(format!("exec argv {}", exec["argv"]));
        }
        not_partial(exec)?;
        new_field(exec, "filename_truncated", &Value::Bool(false), exec)?;
        let e = exactly_one(ev, "exit", pid)?;
        not_partial(e)?;
        if e["exit_code"] == 7 && e["signal"].is_null() && e["core_dumped"] == false {
            Ok(format!("pid {pid}: exit_code 7, signal null"))
        } else {
            Err(format!("want exit_code 7, signal null: {}", brief(e)))
        }
    })();
    r.map_or_else(fail, pass)
}

pub fn sigkill(ev: &[Value], pid: u32) -> Outcome {
    let r = exactly_one(ev, "exit", pid).and_then(|e| {
        not_partial(e)?;
        if e["signal"] == 9 && e["exit_code"].is_null() {
            Ok(format!("pid {pid}: signal 9, exit_code null"))
        } else {
            Err(format!("want signal 9, exit_code null: {}", brief(e)))
        }
    });
    r.map_or_else(fail, pass)
}

pub fn pidns(ev: &[Value], ns: u64) -> Outcome {
    let execs: Vec<&Value> = ev
        .iter()
        .filter(|e| {
            e["type"] == "exec"
                && e["comm"] == "sh"
                && e["argv"].as_array().is_some_and(|a| {
                    a.iter().any(|x| {
                        x.as_str()
                            .is_some_and(|s| s.contains(scenario::PIDNS_MARKER))
                    })
                })
        })
        .collect();
    let [e] = execs.as_slice() else {
        return fail(format!(
            "{} exec events of the sh in the new pid namespace, want 1",
            execs.len()
        ));
    };
    if let Err(m) = not_partial(e) {
        return fail(m);
    }
    if e["nspid"] == 1 && e["pidns"] == ns && e["pid"] != 1 {
        pass(format!("pid {} has nspid 1 in pidns {ns}", e["pid"]))
    } else {
        fail(format!(
            "want nspid 1, pidns {ns}: nspid {}, pidns {}, pid {}",
            e["nspid"], e["pidns"], e["pid"]
        ))
    }
}

/// One exit, with the code waitpid gave (the leader exited first, another thread last).
pub fn leader_exit(ev: &[Value], pid: u32, code: i32) -> Outcome {
    match exactly_one(ev, "exit", pid) {
        Err(m) => fail(m),
        Ok(e) if e["exit_code"] == code => pass(format!("pid {pid}: exit_code {code}, as waitpid")),
        Ok(e) => fail(format!(
            "pid {pid}: exit_code {}, waitpid said {code}",
            e["exit_code"]
        )),
    }
}

pub fn threads(ev: &[Value], t: &Threads) -> Outcome {
    let mut errs = Vec::new();
    for kind in ["fork", "exec", "exit"] {
        if let Err(m) = exactly_one(ev, kind, t.pid) {
            errs.push(m);
        }
    }
    let as_process: Vec<String> = ev
        .iter()
        .filter(|e| {
            e["pid"]
                .as_u64()
                .is_some_and(|p| t.tids.iter().any(|x| u64::from(*x) == p))
        })
        .map(brief)
        .collect();
    if !as_process.is_empty() {
        errs.push(format!("thread ids as pid: {}", as_process.join(", ")));
    }
    if errs.is_empty() {
        pass(format!(
            "pid {}: 1 fork, 1 exec, 1 exit; threads {:?} never a pid",
            t.pid, t.tids
        ))
    } else {
        fail(errs.join("; "))
    }
}

/// `cgroup_hierarchy`, `cgroup` and `cgroup_id` of `e` against the directory the process was in.
fn cgroup_fields(e: &Value, mode: Mode, c: &InCgroup) -> Result<String, String> {
    let inodes = &c.inodes;
    let hierarchy = match (mode, e.get("cgroup_hierarchy")) {
        (_, Some(Value::String(h))) => h.clone(),
        // Before the contract's cgroup v1 work, v2 is the only hierarchy podtrace reads.
        (Mode::V2, None) if !REQUIRE_NEW_FIELDS => "v2".to_string(),
        (_, h) => {
            return Err(format!(
                "cgroup_hierarchy {}, want {}; cgroup {}, cgroup_id {} (want {} with its inode)",
                h.map_or("absent".to_string(), Value::to_string),
                want_hierarchy(mode, inodes),
                e["cgroup"],
                e["cgroup_id"],
                c.path
            ))
        }
    };
    let ok_name = match mode {
        Mode::V2 => hierarchy == "v2",
        Mode::V1 => hierarchy.starts_with("v1:"),
    };
    let Some(ino) = inodes.get(&hierarchy).filter(|_| ok_name) else {
        return Err(format!(
            "cgroup_hierarchy {hierarchy:?}, want {}",
            want_hierarchy(mode, inodes)
        ));
    };
    if e["cgroup_id"] == *ino && e["cgroup"] == c.path.as_str() {
        Ok(format!("{hierarchy} {} ino {ino}", c.path))
    } else {
        Err(format!(
            "want cgroup {} cgroup_id {ino} ({hierarchy}): cgroup {}, cgroup_id {}",
            c.path, e["cgroup"], e["cgroup_id"]
        ))
    }
}

fn want_hierarchy(mode: Mode, inodes: &BTreeMap<String, u64>) -> String {
    match mode {
        Mode::V2 => "\"v2\"".to_string(),
        Mode::V1 => format!(
            "v1:{{{}}}",
            inodes
                .keys()
                .map(|k| k.trim_start_matches("v1:"))
                .collect::<Vec<_>>()
                .join("|")
        ),
    }
}

/// The exec of `true <marker>` by the process that joined the cgroup (its `sh` exec'd first,
/// in the parent's cgroup).
fn exec_in(ev: &[Value], c: &InCgroup) -> Result<Value, String> {
    let all = of(ev, "exec", c.pid);
    let execs: Vec<&&Value> = all.iter().filter(|e| e["comm"] == "true").collect();
    let [e] = execs.as_slice() else {
        return Err(format!(
            "{} exec events of `true` for pid {}, want 1: [{}]",
            execs.len(),
            c.pid,
            all.iter().map(|e| brief(e)).collect::<Vec<_>>().join(", ")
        ));
    };
    not_partial(e)?;
    Ok((**e).clone())
}

pub fn cgroup(ev: &[Value], mode: Mode, c: &InCgroup) -> Outcome {
    exec_in(ev, c)
        .and_then(|e| cgroup_fields(&e, mode, c))
        .map_or_else(fail, |d| pass(format!("pid {}: {d}", c.pid)))
}

pub fn container(ev: &[Value], mode: Mode, c: &InCgroup) -> Outcome {
    let r = (|| {
        let exec = exec_in(ev, c)?;
        let exit = exactly_one(ev, "exit", c.pid)?.clone();
        let errs_of = |e: &Value| {
            let mut errs = Vec::new();
            let ctr = &e["container"];
            if ctr["id"] != scenario::CONTAINER_ID
                || ctr["runtime"] != "crio"
                || e["pod"]["uid"] != scenario::POD_UID
            {
                errs.push(format!(
                    "not attributed to crio {}… pod {}: container {}, pod {}",
                    &scenario::CONTAINER_ID[..12],
                    scenario::POD_UID,
                    e["container"],
                    e["pod"]
                ));
            }
            if let Err(m) = cgroup_fields(e, mode, c) {
                errs.push(m);
            }
            // NEW image / image_id come from the CRI; the guest has none.
            for key in ["image", "image_id"] {
                if let Err(m) = new_field(ctr, key, &Value::Null, e) {
                    errs.push(format!("container.{m}"));
                }
            }
            errs.join("; ")
        };
        let (a, b) = (errs_of(&exec), errs_of(&exit));
        let errs: Vec<String> = if a == b {
            [a].into_iter()
                .filter(|x| !x.is_empty())
                .map(|x| format!("exec and exit: {x}"))
                .collect()
        } else {
            [("exec", a), ("exit", b)]
                .into_iter()
                .filter(|(_, x)| !x.is_empty())
                .map(|(k, x)| format!("{k}: {x}"))
                .collect()
        };
        if errs.is_empty() {
            Ok(format!(
                "pid {}: crio {}… pod {} from {}",
                c.pid,
                &scenario::CONTAINER_ID[..12],
                scenario::POD_UID,
                exec["cgroup_hierarchy"]
                    .as_str()
                    .unwrap_or("v2 (field absent)")
            ))
        } else {
            Err(errs.join("; "))
        }
    })();
    r.map_or_else(fail, pass)
}

/// No event of a kernel thread (they are skipped in the kernel, as the /proc snapshot skips
/// them), and the kernel counted the ones it skipped.
pub fn kthreads(ev: &[Value], summary: Option<&Value>, pids: &[u32]) -> Outcome {
    let reported: Vec<String> = ev
        .iter()
        .filter(|e| {
            e["pid"]
                .as_u64()
                .is_some_and(|p| pids.contains(&(p as u32)))
        })
        .map(brief)
        .collect();
    if !reported.is_empty() {
        return fail(format!(
            "events of kernel threads {pids:?}: {}",
            reported.join(", ")
        ));
    }
    let skipped = summary.and_then(|s| s["kernel_counters"]["kernel_threads"].as_u64());
    match skipped {
        Some(n) if n >= 1 => pass(format!(
            "kernel threads {pids:?} started: no event; {n} kernel-thread records skipped in the kernel"
        )),
        other => fail(format!(
            "kernel threads {pids:?} started but the summary's kernel_counters.kernel_threads is {other:?}"
        )),
    }
}

/// The kernel path podtrace logged is the one this configuration must take.
pub fn path(want: &str, stderr: &[String], summary: Option<&Value>) -> Outcome {
    let logged = stderr
        .iter()
        .find(|l| l.contains("attached") && l.contains(&format!("({want};")));
    let in_summary = summary.map(|s| {
        format!(
            "{} + {}",
            s["kernel_path"]["attach"].as_str().unwrap_or("?"),
            s["kernel_path"]["transport"].as_str().unwrap_or("?")
        )
    });
    match (logged, in_summary.as_deref()) {
        (Some(_), Some(s)) if s == want => pass(format!("attached with {want}")),
        (l, s) => fail(format!(
            "want {want}: attach line {l:?}, summary kernel_path {s:?}"
        )),
    }
}

/// The contract's start-up log line `cgroup mode: ...` names the mode of this boot.
pub fn cgroup_mode(mode: Mode, stderr: &[String]) -> Outcome {
    let lines: Vec<&String> = stderr
        .iter()
        .filter(|l| l.contains("cgroup mode:"))
        .collect();
    match lines.as_slice() {
        [one] => {
            let after = one.split("cgroup mode:").nth(1).unwrap_or("");
            // The first `v1` / `v2` word names the mode ("v1 (no cgroup2 mount)", "auto -> v1").
            let named = after
                .split(|c: char| !c.is_ascii_alphanumeric())
                .find(|w| *w == "v1" || *w == "v2");
            if named == Some(mode.as_str()) {
                pass(format!("logged `cgroup mode:{after}`"))
            } else {
                fail(format!("want {}: {one}", mode.as_str()))
            }
        }
        [] if mode == Mode::V2 && !REQUIRE_NEW_FIELDS => {
            pass("no `cgroup mode:` line (NEW in the contract; tolerated in v2 for now)")
        }
        [] => fail("no `cgroup mode:` line on stderr"),
        many => fail(format!("{} `cgroup mode:` lines, want 1", many.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(kind: &str, pid: u32, extra: Value) -> Value {
        let mut e = json!({"type": kind, "pid": pid, "tid": pid, "comm": "true",
            "cgroup_id": 1, "cgroup": "/", "container": null, "pod": null, "partial": false});
        if let (Some(m), Value::Object(x)) = (e.as_object_mut(), extra) {
            m.extend(x);
        }
        e
    }

    fn v1_cgroup() -> InCgroup {
        InCgroup {
            pid: 10,
            path: "/klab-cgroup".into(),
            inodes: [
                ("v1:pids".to_string(), 7),
                ("v1:cpu,cpuacct".to_string(), 9),
            ]
            .into(),
        }
    }

    #[test]
    fn v1_needs_the_hierarchy_and_its_inode() {
        let c = v1_cgroup();
        let good = ev(
            "exec",
            10,
            json!({"cgroup_hierarchy": "v1:cpu,cpuacct", "cgroup_id": 9, "cgroup": "/klab-cgroup"}),
        );
        assert!(cgroup(&[good], Mode::V1, &c).pass);
        // What podtrace reports on a v1-only host before the v1 work: id 1, no path.
        let today = ev("exec", 10, json!({"cgroup_id": 1, "cgroup": null}));
        let o = cgroup(&[today], Mode::V1, &c);
        assert!(
            !o.pass && o.detail.contains("cgroup_hierarchy absent"),
            "{o:?}"
        );
        let wrong_ino = ev(
            "exec",
            10,
            json!({"cgroup_hierarchy": "v1:pids", "cgroup_id": 9, "cgroup": "/klab-cgroup"}),
        );
        assert!(!cgroup(&[wrong_ino], Mode::V1, &c).pass);
        let v2_in_v1 = ev(
            "exec",
            10,
            json!({"cgroup_hierarchy": "v2", "cgroup_id": 7, "cgroup": "/klab-cgroup"}),
        );
        assert!(!cgroup(&[v2_in_v1], Mode::V1, &c).pass);
    }

    #[test]
    fn v2_tolerates_only_an_absent_hierarchy_field() {
        let c = InCgroup {
            pid: 10,
            path: "/klab-cgroup".into(),
            inodes: [("v2".to_string(), 5)].into(),
        };
        let absent = ev(
            "exec",
            10,
            json!({"cgroup_id": 5, "cgroup": "/klab-cgroup"}),
        );
        assert_eq!(cgroup(&[absent], Mode::V2, &c).pass, !REQUIRE_NEW_FIELDS);
        let wrong = ev(
            "exec",
            10,
            json!({"cgroup_hierarchy": "v1:pids", "cgroup_id": 5, "cgroup": "/klab-cgroup"}),
        );
        assert!(!cgroup(&[wrong], Mode::V2, &c).pass);
        let bad_ino = ev(
            "exec",
            10,
            json!({"cgroup_id": 6, "cgroup": "/klab-cgroup"}),
        );
        assert!(!cgroup(&[bad_ino], Mode::V2, &c).pass);
    }

    #[test]
    fn threads_fail_on_a_thread_reported_as_a_process() {
        let t = Threads {
            pid: 20,
            tids: vec![21, 22],
        };
        let mut evs = vec![
            ev("fork", 20, json!({})),
            ev("exec", 20, json!({})),
            ev("exit", 20, json!({})),
        ];
        assert!(threads(&evs, &t).pass);
        evs.push(ev("exit", 22, json!({})));
        assert!(!threads(&evs, &t).pass);
        evs.pop();
        evs.push(ev("exit", 20, json!({})));
        assert!(!threads(&evs, &t).pass, "two exits for one process");
    }

    #[test]
    fn exit_and_signal() {
        let argv = json!({"argv": ["/bin/sh", "-c", "exit 7"], "filename_truncated": false});
        let evs = vec![
            ev("exec", 3, argv.clone()),
            ev(
                "exit",
                3,
                json!({"exit_code": 7, "signal": null, "core_dumped": false}),
            ),
        ];
        assert!(exit_code(&evs, 3).pass);
        let evs = vec![
            ev("exec", 3, argv),
            ev(
                "exit",
                3,
                json!({"exit_code": 0, "signal": null, "core_dumped": false}),
            ),
        ];
        assert!(!exit_code(&evs, 3).pass);
        let killed = vec![ev("exit", 4, json!({"exit_code": null, "signal": 9}))];
        assert!(sigkill(&killed, 4).pass);
        assert!(!sigkill(&killed, 5).pass, "no exit for that pid");
    }

    #[test]
    fn lost_needs_a_summary_and_no_lost_line() {
        assert!(lost(&[], Some(&json!({"lost": 0}))).pass);
        assert!(!lost(&[], None).pass);
        assert!(!lost(&[], Some(&json!({"lost": 2}))).pass);
        assert!(
            !lost(
                &[json!({"type": "lost", "count": 1})],
                Some(&json!({"lost": 0}))
            )
            .pass
        );
    }

    #[test]
    fn cgroup_mode_line() {
        let v1 = vec!["INFO cgroup mode: v1 (no cgroup2 mount)".to_string()];
        assert!(cgroup_mode(Mode::V1, &v1).pass);
        let v2 =
            vec!["INFO cgroup mode: v2 (cgroup2 on /sys/fs/cgroup, no v1 hierarchy)".to_string()];
        assert!(cgroup_mode(Mode::V2, &v2).pass);
        assert!(
            !cgroup_mode(Mode::V1, &v2).pass,
            "a v1 mention is not the mode"
        );
        let auto = vec!["INFO cgroup mode: auto -> v1".to_string()];
        assert!(cgroup_mode(Mode::V1, &auto).pass);
        assert!(!cgroup_mode(Mode::V2, &v1).pass);
        assert!(!cgroup_mode(Mode::V1, &[]).pass);
        assert_eq!(cgroup_mode(Mode::V2, &[]).pass, !REQUIRE_NEW_FIELDS);
    }

    #[test]
    fn container_attribution() {
        let c = InCgroup {
            pid: 30,
            path: scenario::container_path(),
            inodes: [("v2".to_string(), 11)].into(),
        };
        let attributed = json!({"cgroup_id": 11, "cgroup": scenario::container_path(),
            "container": {"id": scenario::CONTAINER_ID, "name": null, "runtime": "crio",
                "image": null, "image_id": null},
            "pod": {"name": null, "namespace": null, "uid": scenario::POD_UID}});
        let evs = vec![
            ev("exec", 30, attributed.clone()),
            ev("exit", 30, attributed),
        ];
        assert_eq!(container(&evs, Mode::V2, &c).pass, !REQUIRE_NEW_FIELDS);
        let plain = vec![
            ev(
                "exec",
                30,
                json!({"cgroup_id": 11, "cgroup": scenario::container_path()}),
            ),
            ev(
                "exit",
                30,
                json!({"cgroup_id": 11, "cgroup": scenario::container_path()}),
            ),
        ];
        assert!(!container(&plain, Mode::V2, &c).pass);
    }
}
