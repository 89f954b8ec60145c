//! `top` without a terminal: records through the pipeline, refreshes at chosen times, and
//! the screen ratatui draws (TestBackend) — given these events, the screen shows this.
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::activity::Activity;
use super::model::{self, Cells, Mark, Row, RowKey, Shape, Snapshot};
use super::render::{self, Screen};
use super::ui::{self, Ui};
use crate::cgroups::{CgroupSetup, Hierarchy};
use crate::engine::Engine;
use crate::filter::EventFilter;
use crate::kernel_event::{ExecPayload, ExitPayload, KernelEvent, Kind, ReapEvent};
use crate::pipeline::Pipeline;
use crate::trace::{synth, CgroupFact, Header, Record, FORMAT_VERSION};
use crate::view::Filter;

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
const HOST_NS: u32 = 4026531836;
const CTR_NS: u32 = 4026532500;
const CRIO_CG: u64 = 5000;
const ID: &str = "1961af83ec2bf15ae89371edd5ebb534886c9db6bfaa385ac4fb53b4232df966";
const UID: &str = "18617999-d875-40e2-b29f-c40743f8314b";
const POD: &str = "adapter-b87c6d546-7jlzw";
const NS: &str = "openshift-monitoring";
/// The boot clock's time of the first event (the header's offset is 0: also unix time).
const T0: u64 = 1_000 * S;

fn crio_path() -> String {
    format!(
        "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{}.slice/crio-{ID}.scope",
        UID.replace('-', "_")
    )
}

/// A node as the live loop feeds the engine: records through the pipeline.
struct Node {
    pipe: Pipeline<'static>,
}

impl Node {
    fn new() -> Self {
        let mut pipe = Pipeline::new(EventFilter::default());
        for r in [
            Record::Header(Header {
                format: FORMAT_VERSION,
                podtrace_version: "test".into(),
                kernel_release: "test".into(),
                hostname: "node-a".into(),
                boot_offset_ns: 0,
                host_pidns: HOST_NS,
                node: None,
                started_unix_ns: (T0 - S) as i64,
                cgroups: CgroupSetup::v2_only(),
                hold_ns: 0,
                segment: None,
            }),
            Record::SnapshotEnd {},
            Record::Cgroup(CgroupFact {
                hierarchy: Hierarchy::V2,
                id: 1,
                path: Some("/".into()),
            }),
            Record::Cgroup(CgroupFact {
                hierarchy: Hierarchy::V2,
                id: CRIO_CG,
                path: Some(crio_path()),
            }),
        ] {
            pipe.push(&r).expect("push");
        }
        Self { pipe }
    }

    fn engine(&self) -> &Engine {
        self.pipe.engine().expect("the header went through")
    }

    fn push(&mut self, e: KernelEvent) {
        self.pipe.push(&Record::Event(e)).expect("push");
    }

    /// fork of `pid` by `ppid` at `ts` (in the container when `nspid` is given).
    fn fork(&mut self, ts: u64, pid: u32, ppid: u32, comm: &str, nspid: Option<u32>) {
        self.push(ev(Kind::Fork, ts, pid, ppid, comm, nspid, ts));
    }

    /// The parent the table has for `pid` (what the kernel's event would say).
    fn ppid(&self, pid: u32) -> u32 {
        self.engine().table().get(pid).map_or(1, |p| p.ppid)
    }

    fn exec(&mut self, ts: u64, pid: u32, start: u64, nspid: Option<u32>, argv: &[&str]) {
        let mut e = ev(Kind::Exec, ts, pid, self.ppid(pid), argv[0], nspid, start);
        e.exec = Some(ExecPayload {
            filename: argv[0].into(),
            argv: argv.iter().map(|s| s.to_string()).collect(),
            argv_truncated: false,
            filename_truncated: false,
            trimmed: false,
        });
        self.push(e);
    }

    fn exit(&mut self, ts: u64, pid: u32, start: u64, nspid: Option<u32>, status: u32) {
        let comm = self
            .engine()
            .table()
            .get(pid)
            .map_or_else(|| "x".to_string(), |p| p.comm.to_string());
        let mut e = ev(Kind::Exit, ts, pid, self.ppid(pid), &comm, nspid, start);
        e.exit = Some(ExitPayload {
            status,
            duration_ns: ts - start,
        });
        self.push(e);
        self.pipe
            .push(&Record::Reap(ReapEvent {
                ts_ns: ts + MS,
                pid,
                start_ns: start,
            }))
            .expect("reap");
    }
}

/// A kernel event of a host process, or of one in the container when `nspid` is given.
fn ev(
    kind: Kind,
    ts: u64,
    pid: u32,
    ppid: u32,
    comm: &str,
    nspid: Option<u32>,
    start: u64,
) -> KernelEvent {
    let mut e = synth::event(kind, ts, pid, ppid, comm, 1);
    e.start_ns = start;
    if let Some(n) = nspid {
        e.nspid = n;
        e.pidns = CTR_NS;
        e.cgroup_id = CRIO_CG;
    }
    e
}

/// cri-o starting a container at T0: conmon (daemonized), runc, the init (PID 1 of its
/// namespace) running the workload. Returns (conmon, init).
fn start_container(n: &mut Node) -> (u32, u32) {
    let name = format!("k8s_adapter_{POD}_{NS}_{UID}_0");
    let conmon_argv = [
        "/usr/bin/conmon",
        "-b",
        "/run/x",
        "-c",
        ID,
        "-n",
        &name,
        "-r",
        "/usr/bin/runc",
        "-u",
        ID,
    ];
    n.fork(T0, 100, 1, "crio", None);
    exec_with_ppid(n, T0 + MS, 100, T0, None, &conmon_argv, 1);
    n.fork(T0 + 2 * MS, 101, 100, "conmon", None);
    n.exit(T0 + 3 * MS, 100, T0, None, 0);
    n.fork(T0 + 4 * MS, 102, 101, "conmon", None);
    exec_with_ppid(
        n,
        T0 + 5 * MS,
        102,
        T0 + 4 * MS,
        None,
        &["/usr/bin/runc", "create", "--bundle", "/run/b", ID],
        101,
    );
    n.fork(T0 + 6 * MS, 110, 102, "runc:[2:INIT]", Some(1));
    n.exit(T0 + 7 * MS, 102, T0 + 4 * MS, None, 0);
    let mut e = ev(
        Kind::Exec,
        T0 + 8 * MS,
        110,
        101,
        "adapter",
        Some(1),
        T0 + 6 * MS,
    );
    e.exec = Some(ExecPayload {
        filename: "/usr/bin/adapter".into(),
        argv: vec!["/usr/bin/adapter".into(), "--config=/etc/a.yaml".into()],
        argv_truncated: false,
        filename_truncated: false,
        trimmed: false,
    });
    n.push(e);
    (101, 110)
}

fn exec_with_ppid(
    n: &mut Node,
    ts: u64,
    pid: u32,
    start: u64,
    nspid: Option<u32>,
    argv: &[&str],
    ppid: u32,
) {
    let mut e = ev(Kind::Exec, ts, pid, ppid, argv[0], nspid, start);
    e.exec = Some(ExecPayload {
        filename: argv[0].into(),
        argv: argv.iter().map(|s| s.to_string()).collect(),
        argv_truncated: false,
        filename_truncated: false,
        trimmed: false,
    });
    n.push(e);
}

/// The screen ratatui draws for `rows`, as text lines.
fn screen(snap: &Snapshot, u: &mut Ui, width: u16, height: u16, color: bool) -> Vec<String> {
    let rows = rows_of(snap, u);
    u.place_cursor(&rows, usize::from(height).saturating_sub(render::CHROME));
    let s = Screen {
        title: "podtrace top · test".into(),
        status: ui::filter_text(&u.filter),
        rows: &rows,
        ui: u,
        bottom: String::new(),
        color,
    };
    let mut t = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
    t.draw(|f| render::draw(f, &s)).expect("draw");
    let buf = t.backend().buffer();
    (0..height)
        .map(|y| {
            (0..width)
                .map(|x| buf[(x, y)].symbol().to_string())
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect()
}

fn rows_of(snap: &Snapshot, u: &Ui) -> Vec<Row> {
    model::rows(
        snap,
        &Shape {
            filter: u.filter.clone(),
            collapsed: Some(&u.collapsed),
            search: u.search.as_deref(),
            users: None,
        },
    )
}

fn line_with<'a>(lines: &'a [String], needle: &str) -> &'a str {
    lines
        .iter()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with `{needle}`:\n{}", lines.join("\n")))
}

/// The refreshes a user would see, one a second.
struct Top {
    activity: Activity,
    ui: Ui,
}

impl Top {
    fn new() -> Self {
        Self {
            activity: Activity::new(S),
            ui: Ui::new(Filter::default()),
        }
    }

    fn refresh(&mut self, n: &Node, clock: u64) -> Snapshot {
        self.activity.refresh(n.engine(), clock);
        Snapshot::take(n.engine(), &self.activity, clock, self.ui.filter.all)
    }
}

#[test]
fn the_screen_shows_pod_container_monitor_init_a_new_process_and_an_exit_with_its_code() {
    let mut n = Node::new();
    let mut top = Top::new();
    let (conmon, init) = start_container(&mut n);
    let snap = top.refresh(&n, T0 + 500 * MS);
    let lines = screen(&snap, &mut top.ui, 80, 24, false);
    let pod = line_with(&lines, "pod openshift-monitoring/adapter-b87c6d546-7jlzw");
    assert!(pod.contains("1 container"), "{pod}");
    let ctr = line_with(&lines, "container adapter 1961af83ec2b (crio)");
    assert!(ctr.contains("2 procs"), "{ctr}");
    let monitor = line_with(&lines, "[conmon]");
    assert!(monitor.contains(&format!(" {conmon} ")), "{monitor}");
    let init_line = line_with(&lines, "[init] /usr/bin/adapter --config");
    // Host pid beside the container pid, started half a second ago: new.
    assert!(
        init_line.starts_with(&format!("+ {init:>8} {:>7} ", 1)),
        "{init_line}"
    );
    assert!(line_with(&lines, "HOST-PID CTR-PID").contains("COMMAND"));

    // A process started after top began, in the container, that lives 2.5 s and exits 7.
    let t1 = T0 + 1_200 * MS;
    n.fork(t1, 120, init, "adapter", Some(7));
    n.exec(
        t1 + MS,
        120,
        t1,
        Some(7),
        &["/bin/sh", "-c", "sleep 2; exit 7"],
    );
    let snap = top.refresh(&n, T0 + 1_500 * MS);
    let lines = screen(&snap, &mut top.ui, 80, 24, false);
    let child = line_with(&lines, "/bin/sh -c sleep 2; exit 7");
    assert!(
        child.starts_with(&format!("+ {:>8} {:>7} ", 120, 7)),
        "{child}"
    );
    assert!(child.contains("0s"), "age: {child}");

    // Five processes that live 5 ms each between two refreshes: counted, not listed.
    for i in 0..5u32 {
        let t = T0 + 1_600 * MS + u64::from(i) * 50 * MS;
        n.fork(t, 130 + i, init, "adapter", Some(20 + i));
        n.exec(t + MS, 130 + i, t, Some(20 + i), &["/bin/true"]);
        n.exit(t + 5 * MS, 130 + i, t, Some(20 + i), 0);
    }
    let snap = top.refresh(&n, T0 + 2_500 * MS);
    let lines = screen(&snap, &mut top.ui, 80, 24, false);
    let ctr = line_with(&lines, "container adapter");
    assert!(ctr.contains("5 short-lived"), "{ctr}");
    assert!(ctr.contains("5.0 exec/s"), "5 execs in 1 s: {ctr}");
    assert!(!lines.iter().any(|l| l.contains("/bin/true")), "{lines:#?}");

    // The child exits 7: shown with its code for a moment, then gone.
    n.exit(t1 + 2_500 * MS, 120, t1, Some(7), 7 << 8);
    let snap = top.refresh(&n, T0 + 3_900 * MS);
    let lines = screen(&snap, &mut top.ui, 80, 24, false);
    let gone = line_with(&lines, "/bin/sh -c sleep 2; exit 7");
    assert!(gone.starts_with("x      120       7 "), "{gone}");
    assert!(gone.contains("[exit 7]"), "{gone}");
    let ctr = line_with(&lines, "container adapter");
    assert!(
        ctr.contains("0 short-lived"),
        "shown before, so not short-lived: {ctr}"
    );
    let snap = top.refresh(&n, t1 + 2_500 * MS + model::LINGER_NS + S);
    let lines = screen(&snap, &mut top.ui, 80, 24, false);
    assert!(!lines.iter().any(|l| l.contains("exit 7")), "{lines:#?}");
    assert!(lines.iter().any(|l| l.contains("[init]")));
}

#[test]
fn a_killed_process_and_a_zombie_say_how_they_ended() {
    let mut n = Node::new();
    let mut top = Top::new();
    let (_, init) = start_container(&mut n);
    n.fork(T0 + 10 * MS, 140, init, "sleep", Some(8));
    n.fork(T0 + 11 * MS, 141, init, "sleep", Some(9));
    top.refresh(&n, T0 + S);
    // SIGKILL, reaped; and an exit nobody reaps yet.
    n.exit(T0 + 1_100 * MS, 140, T0 + 10 * MS, Some(8), 9);
    let mut e = ev(
        Kind::Exit,
        T0 + 1_200 * MS,
        141,
        init,
        "sleep",
        Some(9),
        T0 + 11 * MS,
    );
    e.exit = Some(ExitPayload {
        status: 3 << 8,
        duration_ns: 0,
    });
    n.push(e);
    let snap = top.refresh(&n, T0 + 2 * S);
    let lines = screen(&snap, &mut top.ui, 80, 24, true);
    assert!(
        line_with(&lines, "  140 ").contains("[killed SIGKILL]"),
        "{lines:#?}"
    );
    let z = line_with(&lines, "  141 ");
    assert!(z.starts_with('Z') && z.contains("<defunct> exit 3"), "{z}");
}

#[test]
fn filters_narrow_the_rows_and_host_processes_come_and_go() {
    let mut n = Node::new();
    let mut top = Top::new();
    start_container(&mut n);
    n.fork(T0 + 10 * MS, 200, 1, "bash", None);
    n.exec(T0 + 11 * MS, 200, T0 + 10 * MS, None, &["/bin/bash", "-l"]);
    top.ui.filter.all = true;
    let snap = top.refresh(&n, T0 + S);
    let rows = rows_of(&snap, &top.ui);
    assert!(rows.iter().any(|r| r.key == RowKey::Host));
    assert!(rows
        .iter()
        .any(|r| r.key == RowKey::Proc(200, T0 + 10 * MS)));
    // The same filters as `run`: by namespace, pod, container (id prefix or name)...
    for typed in [
        format!("ns:{NS}"),
        format!("pod:{POD}"),
        "ctr:1961af".to_string(),
        "ctr:adapter".to_string(),
    ] {
        top.ui.filter = ui::parse_filter(&typed, true).expect("filter");
        let rows = rows_of(&snap, &top.ui);
        assert!(!rows.iter().any(|r| r.key == RowKey::Host), "{typed}");
        assert!(
            rows.iter()
                .any(|r| matches!(&r.key, RowKey::Container(id) if id == ID)),
            "{typed}"
        );
    }
    for typed in ["ns:other", "pod:other", "ctr:other"] {
        top.ui.filter = ui::parse_filter(typed, true).expect("filter");
        assert!(rows_of(&snap, &top.ui).is_empty(), "{typed}");
    }
    // ...and by command: the process and what it hangs under.
    top.ui.filter = ui::parse_filter("cmd:bash", true).expect("filter");
    let rows = rows_of(&snap, &top.ui);
    assert_eq!(
        rows.iter().map(|r| r.key.clone()).collect::<Vec<_>>(),
        [RowKey::Host, RowKey::Proc(200, T0 + 10 * MS)],
        "{rows:#?}"
    );
    top.ui.filter = ui::parse_filter("--config", false).expect("filter");
    let rows = rows_of(&snap, &top.ui);
    assert!(rows
        .iter()
        .any(|r| matches!(&r.cells, Cells::Proc { command, .. } if command.contains("[init]"))));
    assert!(!rows.iter().any(|r| r.key == RowKey::Host));
}

#[test]
fn keys_move_fold_search_and_freeze() {
    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
    let key = |c: KeyCode| KeyEvent::new(c, KeyModifiers::NONE);
    let mut n = Node::new();
    let mut top = Top::new();
    let (conmon, init) = start_container(&mut n);
    let snap = top.refresh(&n, T0 + S);
    let rows = rows_of(&snap, &top.ui);
    top.ui.place_cursor(&rows, 20);
    assert_eq!(top.ui.cursor_index, 0);
    // Down to the container, fold it: its processes go.
    assert_eq!(top.ui.key(key(KeyCode::Down), &rows), ui::Action::Redraw);
    assert_eq!(top.ui.cursor, Some(RowKey::Container(ID.into())));
    top.ui.key(key(KeyCode::Left), &rows);
    let folded = rows_of(&snap, &top.ui);
    assert_eq!(folded.len(), 2, "{folded:#?}");
    top.ui.key(key(KeyCode::Right), &folded);
    assert_eq!(rows_of(&snap, &top.ui).len(), rows.len());
    // Search for the init, n goes to it.
    top.ui.key(key(KeyCode::Char('/')), &rows);
    for c in "adapter --config".chars() {
        top.ui.key(key(KeyCode::Char(c)), &rows);
    }
    top.ui.key(key(KeyCode::Enter), &rows);
    let rows = rows_of(&snap, &top.ui);
    assert!(rows.iter().filter(|r| r.matched).count() == 1);
    top.ui.key(key(KeyCode::Char('n')), &rows);
    assert_eq!(top.ui.cursor, Some(RowKey::Proc(init, T0 + 6 * MS)));
    // Left on a leaf goes to the row it hangs under (conmon).
    top.ui.key(key(KeyCode::Left), &rows);
    assert_eq!(top.ui.cursor, Some(RowKey::Proc(conmon, T0 + 2 * MS)));
    assert_eq!(
        top.ui.key(key(KeyCode::Char('f')), &rows),
        ui::Action::Freeze
    );
    assert!(top.ui.frozen);
    assert_eq!(
        top.ui.key(key(KeyCode::Char('H')), &rows),
        ui::Action::Refresh
    );
    assert!(top.ui.filter.all);
    // A filter typed at the prompt.
    top.ui.key(key(KeyCode::Char('\\')), &rows);
    for c in "ctr:nothing".chars() {
        top.ui.key(key(KeyCode::Char(c)), &rows);
    }
    top.ui.key(key(KeyCode::Enter), &rows);
    assert_eq!(top.ui.filter.container.as_deref(), Some("nothing"));
    assert!(rows_of(&snap, &top.ui).is_empty());
    assert_eq!(
        top.ui.key(
            KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
            &rows
        ),
        ui::Action::Quit
    );
    assert_eq!(top.ui.key(key(KeyCode::Char('q')), &rows), ui::Action::Quit);
}

#[test]
fn the_help_and_a_small_terminal_fit() {
    let mut n = Node::new();
    let mut top = Top::new();
    start_container(&mut n);
    let snap = top.refresh(&n, T0 + S);
    top.ui.help = true;
    let lines = screen(&snap, &mut top.ui, 80, 24, false);
    assert!(line_with(&lines, "help").contains('┌'));
    assert!(
        lines.iter().any(|l| l.contains("any key closes this help")),
        "{lines:#?}"
    );
    top.ui.help = false;
    let lines = screen(&snap, &mut top.ui, 40, 10, false);
    assert!(lines.iter().all(|l| l.chars().count() <= 40));
    assert!(line_with(&lines, "container adapter").chars().count() <= 40);
    let lines = screen(&snap, &mut top.ui, 10, 3, false);
    assert!(lines[0].contains("podtrace"), "{lines:?}");
}

#[test]
fn marks_say_new_zombie_and_exited() {
    assert_eq!(Mark::New.symbol(), '+');
    assert_eq!(model::age(59 * S), "59s");
    assert_eq!(model::age(61 * S), "1m01");
    assert_eq!(model::age(3 * 3600 * S + 7 * 60 * S), "3h07");
    assert_eq!(model::age(2 * 86_400 * S + 3 * 3600 * S), "2d03");
    assert_eq!(model::signal_name(9), "SIGKILL");
    assert_eq!(model::signal_name(40), "signal 40");
}

/// `top --from T --at X` starts from `tree --from T --at X`'s picture: the same pods,
/// containers and processes, at several moments of a synthetic cri-o trace.
#[test]
fn playing_from_a_time_starts_with_the_picture_of_tree_at_that_time() {
    use crate::cli::At;
    use crate::replay::{replay, Until};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("t.trace");
    let records = synth::trace(4_000, 6, 7);
    std::fs::write(&path, synth::to_ndjson(&records)).expect("write the trace");
    let all = Filter {
        all: true,
        ..Filter::default()
    };
    for off_ms in [0i64, 150, 700, 2_500] {
        let off = off_ms * MS as i64;
        let (engine, _) = replay(
            &path,
            false,
            Until::Offset(off),
            Pipeline::new(EventFilter::default()),
        )
        .expect("replay");
        let want = crate::view::tree(&engine, &all);
        let player =
            super::play::Player::open(&path, false, Some(At::Offset(off)), 1.0).expect("player");
        let got = crate::view::tree(player.engine().expect("engine"), &all);
        assert_eq!(got, want, "at +{off_ms} ms");
        assert!(
            !want.pods.is_empty() || off_ms == 0,
            "the trace has pods at +{off_ms} ms"
        );
    }
}

/// Played on, the trace reaches its end with every record applied: what `replay` ends with.
#[test]
fn playing_to_the_end_ends_where_replay_ends() {
    use crate::replay::{replay, Until};
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("t.trace");
    std::fs::write(&path, synth::to_ndjson(&synth::trace(3_000, 4, 3))).expect("write");
    let (engine, _) = replay(
        &path,
        false,
        Until::End,
        Pipeline::new(EventFilter::default()),
    )
    .expect("replay");
    let mut player = super::play::Player::open(&path, false, None, 1024.0).expect("player");
    let mut guard = 0;
    while !player.status().ended {
        std::thread::sleep(std::time::Duration::from_millis(5));
        player.advance(usize::MAX).expect("advance");
        guard += 1;
        assert!(
            guard < 10_000,
            "the playback never ended: {:?}",
            player.status()
        );
    }
    let all = Filter {
        all: true,
        ..Filter::default()
    };
    assert_eq!(
        crate::view::tree(player.engine().expect("engine"), &all),
        crate::view::tree(&engine, &all)
    );
}
