//! Events of a kubelet container held for its CRI answer (`hold_ns` in the header): released
//! named when the answer comes, unnamed when the bound passes or the CRI has none, in order,
//! from records alone.
use super::*;
use crate::cri::{CriUnknown, NoAnswer};
use crate::engine::hold::DELAY_BOUNDS_MS;
use crate::trace::TickRecord;

const HOLD: u64 = 2 * S;

fn answer() -> CriFact {
    crio_answer("prometheus-adapter-b87c6d546-7jlzw")
}

/// cri-o starting a container (conmon, runc create, the init's fork and exec), every output
/// event returned.
fn start(n: &mut Node) -> Vec<Event> {
    let argv = conmon_argv();
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let mut out = n.push(ev(Kind::Fork, 100, 50, "crio"));
    out.extend(n.push(exec_of(ev(Kind::Exec, 100, 50, "conmon"), &argv)));
    out.extend(n.push(ev(Kind::Fork, 101, 100, "conmon")));
    out.extend(n.push(Node::exit_event(ev(Kind::Exit, 100, 50, "conmon"), 0)));
    out.extend(n.push(ev(Kind::Fork, 102, 101, "conmon")));
    out.extend(n.push(exec_of(
        ev(Kind::Exec, 102, 101, "runc"),
        &["/usr/bin/runc", "create", "--bundle", "/run/b", ID],
    )));
    out.extend(n.push(in_ctr(ev(Kind::Fork, 110, 102, "runc:[2:INIT]"), 1)));
    let mut init = in_ctr(ev(Kind::Exec, 110, 101, "adapter"), 1);
    init.ppid = 101;
    out.extend(n.push(exec_of(init, &["/usr/bin/adapter"])));
    out
}

fn of_container(out: &[Event]) -> Vec<&Event> {
    out.iter().filter(|e| container_id(e) == Some(ID)).collect()
}

fn image(e: &Event) -> Option<&str> {
    e.process()
        .and_then(|p| p.container.as_ref())
        .and_then(|c| c.image.as_deref())
}

#[test]
fn a_kubelet_container_s_events_wait_for_the_cri_and_go_out_named_in_order() {
    let mut n = Node::holding(HOLD);
    let out = start(&mut n);
    assert!(
        of_container(&out).is_empty(),
        "nothing of the container goes out before the CRI answers: {out:#?}"
    );
    assert!(
        out.iter()
            .any(|e| e.process().is_some_and(|p| p.pid == 100) && container_id(e).is_none()),
        "crio's own fork (no container) is not held: {out:#?}"
    );
    assert!(n.engine.holding());
    let released = n.apply(Record::Cri(answer()));
    let kinds: Vec<(u32, &str)> = released
        .iter()
        .filter_map(|e| e.process().map(|p| (p.pid, e.kind())))
        .collect();
    assert_eq!(
        kinds,
        [
            (100, "exec"),
            (101, "fork"),
            (100, "exit"),
            (102, "fork"),
            (102, "exec"),
            (110, "fork"),
            (110, "exec")
        ],
        "every held event, in the order it happened"
    );
    for e in &released {
        assert_eq!(image(e), Some("quay.io/openshift/adapter:4.12"), "{e:#?}");
        let p = e.process().expect("process");
        assert_eq!(
            p.pod.as_ref().and_then(|p| p.name.as_deref()),
            Some("prometheus-adapter-b87c6d546-7jlzw")
        );
        assert_eq!(
            p.container.as_ref().and_then(|c| c.name.as_deref()),
            Some("prometheus-adapter")
        );
    }
    assert!(!n.engine.holding());
    let s = n.engine.hold_stats();
    assert_eq!(
        (s.held, s.released_named, s.containers),
        (7, 7, 1),
        "{s:#?}"
    );
    // Later events go out at once, named.
    let e = n.fork(111, 110, "adapter");
    assert_eq!(image(&e), Some("quay.io/openshift/adapter:4.12"));
}

#[test]
fn past_the_bound_they_go_out_unnamed_and_counted_also_on_a_quiet_node() {
    let mut n = Node::holding(HOLD);
    start(&mut n);
    let first = n.ts;
    // A tick within the bound releases nothing.
    let out = n.apply(Record::Tick(TickRecord {
        ts_ns: first + HOLD / 2,
    }));
    assert!(out.is_empty(), "{out:#?}");
    // Past the bound (from the container's first event): out, without an image.
    let out = n.apply(Record::Tick(TickRecord {
        ts_ns: first + HOLD,
    }));
    assert_eq!(of_container(&out).len(), 7, "{out:#?}");
    assert!(out.iter().all(|e| image(e).is_none()));
    // cri-o's conmon argv named it meanwhile; only the image was missing.
    assert!(out.iter().all(|e| e
        .process()
        .and_then(|p| p.container.as_ref())
        .and_then(|c| c.name.as_deref())
        == Some("prometheus-adapter")));
    let s = n.engine.hold_stats().clone();
    assert_eq!(s.released_after_bound, 7, "{s:#?}");
    // After the bound the container's events go out at once; the answer names later ones.
    assert_eq!(image(&n.fork(111, 110, "adapter")), None);
    n.apply(Record::Cri(answer()));
    assert_eq!(
        image(&n.fork(112, 110, "adapter")),
        Some("quay.io/openshift/adapter:4.12")
    );
    // The first held event (conmon's exec) waited the bound and a few microseconds.
    assert!(
        (HOLD..HOLD + S / 1000).contains(&s.delay_max_ns),
        "{}",
        s.delay_max_ns
    );
}

#[test]
fn a_cri_without_an_answer_releases_at_once() {
    let mut n = Node::holding(HOLD);
    start(&mut n);
    let out = n.apply(Record::CriUnknown(CriUnknown {
        id: ID.into(),
        why: NoAnswer::NotFound,
    }));
    assert_eq!(of_container(&out).len(), 7);
    assert_eq!(n.engine.hold_stats().released_unanswered, 7);
    // No more holding for it.
    assert_eq!(n.push(ev(Kind::Fork, 111, 110, "adapter")).len(), 1);
}

#[test]
fn hold_0_prints_at_once_as_before() {
    let mut n = Node::holding(0);
    let out = start(&mut n);
    assert_eq!(of_container(&out).len(), 7);
    assert!(!n.engine.holding());
    assert_eq!(n.engine.hold_stats().held, 0);
}

#[test]
fn other_processes_go_out_while_a_container_is_held_and_the_end_releases_it() {
    let mut n = Node::holding(HOLD);
    start(&mut n);
    let host = n.push(ev(Kind::Fork, 300, 1, "bash"));
    assert_eq!(host.len(), 1, "a host process is never held");
    let end = n.apply(Record::End(crate::trace::EndRecord { events: 0, lost: 0 }));
    assert_eq!(of_container(&end).len(), 7);
    assert_eq!(n.engine.hold_stats().released_at_end, 7);
}

/// podman's containers (conmon without a kubelet name, no pod uid) have no CRI to wait for.
#[test]
fn a_container_without_a_pod_is_not_held() {
    let mut n = Node::holding(HOLD);
    n.facts.insert(
        (Hierarchy::V2, CRIO_CG),
        Some(format!("/libpod_parent/libpod-{ID}")),
    );
    let out = n.push(in_ctr(ev(Kind::Fork, 110, 102, "sh"), 1));
    assert_eq!(of_container(&out).len(), 1, "{out:#?}");
}

#[test]
fn the_delay_quantiles_come_from_the_buckets() {
    let mut n = Node::holding(HOLD);
    start(&mut n);
    n.ts += 30_000_000; // 30 ms later
    n.apply(Record::Tick(TickRecord { ts_ns: n.ts }));
    n.apply(Record::Cri(answer()));
    let s = n.engine.hold_stats();
    assert_eq!(s.delay_ms_buckets.len(), DELAY_BOUNDS_MS.len() + 1);
    assert_eq!(s.delay_ms_buckets.iter().sum::<u64>(), 7);
    assert_eq!(s.delay_quantile_ms(0.5), Some(50), "{s:#?}");
}
