//! A realistic synthetic trace (cri-o node: conmon, container inits, shells and short-lived
//! processes in and out of containers) for the replay benchmark and the trace-reader tests.
use super::{CgroupFact, EndRecord, Header, Record, FORMAT_VERSION};
use crate::kernel_event::{ExecPayload, ExitPayload, KernelEvent, Kind, ReapEvent};
use crate::snapshot::ProcInfo;

const HOST_NS: u32 = 4026531836;

/// Small deterministic generator (xorshift), so the same `seed` gives the same trace.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A host process's kernel event with the given identity (tests build on it too).
pub fn event(
    kind: Kind,
    ts_ns: u64,
    pid: u32,
    ppid: u32,
    comm: &str,
    cgroup_id: u64,
) -> KernelEvent {
    KernelEvent {
        kind,
        ts_ns,
        pid,
        tid: pid,
        ppid,
        nspid: pid,
        pidns: HOST_NS,
        uid: 0,
        gid: 0,
        comm: comm.to_string(),
        cgroup_id,
        cgroup_v1_id: 0,
        start_ns: ts_ns,
        partial: false,
        exec: None,
        exit: None,
    }
}

/// About `events` kernel events (fork + exec + exit per process, and each one's reap) over
/// `containers` cri-o containers.
pub fn trace(events: usize, containers: usize, seed: u64) -> Vec<Record> {
    let mut rng = Rng(seed | 1);
    let mut out = vec![Record::Header(Header {
        hold_ns: 0,
        format: FORMAT_VERSION,
        podtrace_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel_release: "6.18.0-synthetic".into(),
        hostname: "synthetic-node".into(),
        boot_offset_ns: 1_795_000_000_000_000_000,
        host_pidns: HOST_NS,
        node: Some("synthetic-node".into()),
        started_unix_ns: 1_795_000_100_000_000_000,
        cgroups: crate::cgroups::CgroupSetup::v2_only(),
        segment: None,
    })];
    out.push(Record::Proc(ProcInfo {
        pid: 1,
        ppid: 0,
        start_ns: 10_000_000,
        nspid: 1,
        pidns: HOST_NS,
        uid: 0,
        gid: 0,
        comm: "systemd".into(),
        exe: Some("/usr/lib/systemd/systemd".into()),
        argv: vec!["/usr/lib/systemd/systemd".into(), "--system".into()],
        argv_truncated: false,
        zombie: false,
        cgroup: Some("/init.scope".into()),
        cgroup_id: 2,
        cgroup_v1: None,
        cgroup_v1_id: 0,
    }));
    let mut inits = Vec::new();
    for i in 0..containers {
        let id = format!(
            "{:016x}{:016x}{:016x}{:016x}",
            rng.next(),
            rng.next(),
            rng.next(),
            i
        );
        let uid = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-{:012x}",
            rng.next() as u32,
            rng.below(0xffff),
            rng.below(0xfff),
            rng.below(0xfff),
            rng.next() & 0xffff_ffff_ffff
        );
        let pod = format!("app-{i}-7d9f8c6b5-x{:04x}", rng.below(0xffff));
        let conmon = 1000 + 10 * i as u32;
        let cg = 1000 + i as u64;
        out.push(Record::Proc(ProcInfo {
            pid: conmon,
            ppid: 1,
            start_ns: 20_000_000,
            nspid: conmon,
            pidns: HOST_NS,
            uid: 0,
            gid: 0,
            comm: "conmon".into(),
            exe: Some("/usr/bin/conmon".into()),
            argv: [
                "/usr/bin/conmon",
                "-b",
                &format!("/run/containers/storage/overlay-containers/{id}/userdata"),
                "-c",
                &id,
                "--exit-dir",
                "/var/run/crio/exits",
                "-l",
                &format!("/var/log/pods/shop_{pod}_{uid}/app/0.log"),
                "--log-level",
                "info",
                "-n",
                &format!("k8s_app_{pod}_shop_{uid}_0"),
                "-r",
                "/usr/bin/runc",
                "-u",
                &id,
                "-s",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            argv_truncated: false,
            zombie: false,
            cgroup: Some("/".into()),
            cgroup_id: 1,
            cgroup_v1: None,
            cgroup_v1_id: 0,
        }));
        out.push(Record::Proc(ProcInfo {
            pid: conmon + 1,
            ppid: conmon,
            start_ns: 30_000_000,
            nspid: 1,
            pidns: 4026532000 + i as u32,
            uid: 1000,
            gid: 0,
            comm: "app".into(),
            exe: Some("/usr/bin/app".into()),
            argv: vec!["/usr/bin/app".into(), "--config=/etc/app/config.yaml".into()],
            argv_truncated: false,
            zombie: false,
            cgroup: Some(format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{}.slice/crio-{id}.scope", uid.replace('-', "_"))),
            cgroup_id: cg,
            cgroup_v1: None,
            cgroup_v1_id: 0,
        }));
        inits.push((conmon + 1, cg, 4026532000 + i as u32));
    }
    out.push(Record::Cgroup(CgroupFact {
        hierarchy: crate::cgroups::Hierarchy::V2,
        id: 1,
        path: Some("/".into()),
    }));
    out.push(Record::SnapshotEnd {});
    let mut ts = 100_000_000_000u64;
    let mut pid = 100_000u32;
    let mut n = 0usize;
    let argvs: [&[&str]; 4] = [
        &[
            "/bin/sh",
            "-c",
            "curl -fsS http://127.0.0.1:8080/healthz || exit 1",
        ],
        &[
            "/usr/bin/python3",
            "-m",
            "app.worker",
            "--queue=orders",
            "--concurrency=4",
            "--log-level=info",
        ],
        &[
            "/usr/local/bin/node",
            "/srv/app/dist/server.js",
            "--port",
            "3000",
        ],
        &["/usr/bin/git", "rev-parse", "--short", "HEAD"],
    ];
    while n < events {
        pid += 1;
        ts += 10_000 + rng.below(50_000);
        let in_ctr = !inits.is_empty() && rng.below(10) < 7;
        let (ppid, cg, ns, nspid) = if in_ctr {
            let (init, cg, ns) = inits[rng.below(inits.len() as u64) as usize];
            (init, cg, ns, 2 + (pid % 30_000))
        } else {
            (1, 2, HOST_NS, pid)
        };
        let argv = argvs[rng.below(argvs.len() as u64) as usize];
        let comm = argv[0].rsplit('/').next().unwrap_or("x");
        let mut f = event(Kind::Fork, ts, pid, ppid, "app", cg);
        f.pidns = ns;
        f.nspid = nspid;
        let start = ts;
        out.push(Record::Event(f.clone()));
        ts += 50_000;
        let mut e = f.clone();
        e.kind = Kind::Exec;
        e.ts_ns = ts;
        e.start_ns = start;
        e.comm = comm.chars().take(15).collect();
        e.exec = Some(ExecPayload {
            filename: argv[0].to_string(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            argv_truncated: false,
            filename_truncated: false,
            trimmed: false,
        });
        out.push(Record::Event(e.clone()));
        ts += 1_000_000;
        let mut x = e;
        x.kind = Kind::Exit;
        x.ts_ns = ts;
        x.exec = None;
        x.exit = Some(ExitPayload {
            status: if rng.below(10) == 0 { 1 << 8 } else { 0 },
            duration_ns: ts - start,
        });
        out.push(Record::Event(x));
        // The parent reaps it right away (an RCU grace period later).
        ts += 20_000;
        out.push(Record::Reap(ReapEvent {
            ts_ns: ts,
            pid,
            start_ns: start,
        }));
        n += 3;
    }
    out.push(Record::End(EndRecord {
        events: n as u64,
        lost: 0,
    }));
    out
}

/// The trace as file text.
pub fn to_ndjson(records: &[Record]) -> String {
    let mut s = String::new();
    for r in records {
        if let Ok(line) = serde_json::to_string(r) {
            s.push_str(&line);
            s.push('\n');
        }
    }
    s
}
