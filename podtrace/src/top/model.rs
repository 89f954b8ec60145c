//! `top`'s screen model: the view model (`crate::view`) taken at a refresh, with the
//! processes that exited a moment ago and each container's activity, flattened into the rows
//! the screen shows under the user's filter, folds and search. No terminal here: given the
//! same records and refresh times, the same rows.
use std::collections::{HashMap, HashSet};

use crate::clock::BootClock;
use crate::engine::Engine;
use crate::output::Role;
use crate::view::text::{role_tag, runtime_name, short};
use crate::view::{self, Build, ContainerNode, ExitNode, Filter, PodNode, ProcNode, TreeView};

use super::activity::{Activity, Rate};
use super::users::Users;

/// A process that started this recently is marked new.
pub const NEW_NS: u64 = 3_000_000_000;
/// A process that exited (and was reaped) stays on screen this long, with how it ended.
pub const LINGER_NS: u64 = 5_000_000_000;

/// The picture at one refresh: what the screen shows until the next (or while frozen).
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub view: TreeView,
    /// Per container id, and for the host.
    pub rates: HashMap<String, Rate>,
    pub host_rate: Rate,
    pub total_execs_per_s: Option<f64>,
    /// The display clock (ns since boot) and how to turn it into wall time.
    pub clock_ns: u64,
    pub clock: BootClock,
    /// Events the kernel could not deliver, since the start.
    pub lost: u64,
    /// Processes in the engine's table (running and zombies).
    pub processes: usize,
}

/// Drops the reaped processes that were never on screen (they came and went between two
/// refreshes: counted as short-lived instead), and the ones that exited after `clock_ns`.
fn prune_reaped(nodes: &mut Vec<ProcNode>, activity: &Activity, clock_ns: u64) {
    nodes.retain_mut(|n| {
        prune_reaped(&mut n.children, activity, clock_ns);
        match (n.reaped, n.exited_ns) {
            (true, Some(t)) => t <= clock_ns && activity.was_shown(n.start_ns, t),
            _ => true,
        }
    });
}

impl Snapshot {
    /// The engine's picture at display time `clock_ns` (ns since boot), with the host's
    /// processes when `host`.
    pub fn take(engine: &Engine, activity: &Activity, clock_ns: u64, host: bool) -> Self {
        let mut view = view::build(
            engine,
            &Build {
                host,
                reaped_since_ns: Some(clock_ns.saturating_sub(LINGER_NS)),
            },
        );
        let prune = |procs: &mut Vec<ProcNode>| prune_reaped(procs, activity, clock_ns);
        for p in &mut view.pods {
            for c in &mut p.containers {
                prune(&mut c.processes);
            }
            p.containers.retain(|c| !c.processes.is_empty());
        }
        view.pods.retain(|p| !p.containers.is_empty());
        for c in &mut view.containers {
            prune(&mut c.processes);
        }
        view.containers.retain(|c| !c.processes.is_empty());
        prune(&mut view.host);
        let rates = view
            .all_containers()
            .map(|c| (c.id.clone(), activity.container(&c.id)))
            .collect();
        Self {
            view,
            rates,
            host_rate: activity.host(),
            total_execs_per_s: activity.total_execs_per_s(),
            clock_ns,
            clock: engine.clock(),
            lost: engine.stats.lost,
            processes: engine.table().live_len(),
        }
    }
}

/// What a row stands for; the cursor and the folds follow it from refresh to refresh.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RowKey {
    /// namespace/name/uid
    Pod(String),
    Container(String),
    Host,
    /// pid and start time
    Proc(u32, u64),
}

/// What the first column says of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    None,
    /// Started a moment ago.
    New,
    /// Exited, not yet reaped.
    Zombie,
    /// Exited and reaped a moment ago.
    Exited,
}

impl Mark {
    pub fn symbol(self) -> char {
        match self {
            Mark::None => ' ',
            Mark::New => '+',
            Mark::Zombie => 'Z',
            Mark::Exited => 'x',
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fold {
    Leaf,
    Open,
    Closed,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Cells {
    /// `pod namespace/name`; its containers and processes.
    Pod {
        label: String,
        containers: usize,
        processes: usize,
    },
    /// `container name id (runtime) image`; its processes and activity.
    Container {
        label: String,
        processes: usize,
        rate: Rate,
    },
    /// Processes outside containers.
    Host { processes: usize, rate: Rate },
    Proc {
        pid: u32,
        /// Its pid in its own namespace, when that is another (a container's).
        ctr_pid: Option<u32>,
        user: String,
        age: String,
        /// Tree indentation and fold, role, command, and how it ended.
        command: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub key: RowKey,
    /// How deep in the tree (pod 0, its containers 1, their processes 2 and on).
    pub depth: usize,
    pub fold: Fold,
    pub mark: Mark,
    pub cells: Cells,
    /// The search text is in it.
    pub matched: bool,
}

/// What the rows depend on besides the snapshot.
#[derive(Clone, Debug, Default)]
pub struct Shape<'a> {
    pub filter: Filter,
    pub collapsed: Option<&'a HashSet<RowKey>>,
    pub search: Option<&'a str>,
    pub users: Option<&'a Users>,
}

/// `42s`, `12m05`, `3h07`, `4d02`.
pub fn age(ns: u64) -> String {
    let s = ns / 1_000_000_000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}", s / 86_400, (s % 86_400) / 3600),
    }
}

/// The usual name of a signal (Linux numbering), or its number.
pub fn signal_name(sig: u8) -> String {
    let name = match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return format!("signal {sig}"),
    };
    name.to_string()
}

/// `exit 7`, `killed SIGKILL`, `killed SIGSEGV, core dumped`, or `exit ?` when unknown.
pub fn outcome(exit: Option<ExitNode>) -> String {
    match exit {
        Some(ExitNode {
            exit_code: Some(c), ..
        }) => format!("exit {c}"),
        Some(ExitNode {
            signal: Some(s),
            core_dumped,
            ..
        }) => format!(
            "killed {}{}",
            signal_name(s),
            if core_dumped { ", core dumped" } else { "" }
        ),
        _ => "exit ?".to_string(),
    }
}

fn pod_key(p: &PodNode) -> RowKey {
    RowKey::Pod(format!(
        "{}/{}/{}",
        p.namespace.as_deref().unwrap_or(""),
        p.name.as_deref().unwrap_or(""),
        p.uid.as_deref().unwrap_or("")
    ))
}

fn count(nodes: &[ProcNode]) -> usize {
    nodes.iter().map(|n| 1 + count(&n.children)).sum()
}

/// `container NAME ID (RUNTIME) IMAGE`.
pub fn container_label(c: &ContainerNode) -> String {
    let mut s = format!(
        "container {} {} ({})",
        c.name.as_deref().unwrap_or("-"),
        short(&c.id),
        runtime_name(c)
    );
    if let Some(i) = &c.image {
        s.push(' ');
        s.push_str(i);
    }
    s
}

pub fn pod_label(p: &PodNode) -> String {
    let mut s = format!(
        "pod {}/{}",
        p.namespace.as_deref().unwrap_or("?"),
        p.name.as_deref().unwrap_or("?")
    );
    if let Some(q) = &p.qos {
        s.push_str(" qos ");
        s.push_str(q);
    }
    s
}

/// The rows of the screen, top to bottom.
pub fn rows(snap: &Snapshot, shape: &Shape<'_>) -> Vec<Row> {
    let mut view = snap.view.clone();
    view.retain(&shape.filter);
    let mut w = Walker {
        out: Vec::new(),
        snap,
        shape,
        empty: HashSet::new(),
    };
    for p in &view.pods {
        let key = pod_key(p);
        let open = w.push(
            key,
            0,
            true,
            Mark::None,
            Cells::Pod {
                label: pod_label(p),
                containers: p.containers.len(),
                processes: p.containers.iter().map(|c| count(&c.processes)).sum(),
            },
        );
        if open {
            for c in &p.containers {
                w.container(c, 1);
            }
        }
    }
    for c in &view.containers {
        w.container(c, 0);
    }
    if shape.filter.wants_host() {
        let open = w.push(
            RowKey::Host,
            0,
            !view.host.is_empty(),
            Mark::None,
            Cells::Host {
                processes: count(&view.host),
                rate: snap.host_rate,
            },
        );
        if open {
            w.procs(&view.host, 1, 0);
        }
    }
    w.out
}

struct Walker<'a> {
    out: Vec<Row>,
    snap: &'a Snapshot,
    shape: &'a Shape<'a>,
    empty: HashSet<RowKey>,
}

impl Walker<'_> {
    /// Adds a row; returns whether what is under it is shown.
    fn push(
        &mut self,
        key: RowKey,
        depth: usize,
        has_children: bool,
        mark: Mark,
        cells: Cells,
    ) -> bool {
        let collapsed = self.shape.collapsed.unwrap_or(&self.empty).contains(&key);
        let fold = match (has_children, collapsed) {
            (false, _) => Fold::Leaf,
            (true, false) => Fold::Open,
            (true, true) => Fold::Closed,
        };
        let matched = self
            .shape
            .search
            .filter(|s| !s.is_empty())
            .is_some_and(|s| match &cells {
                Cells::Pod { label, .. } | Cells::Container { label, .. } => label.contains(s),
                Cells::Host { .. } => false,
                Cells::Proc { command, .. } => command.contains(s),
            });
        self.out.push(Row {
            key,
            depth,
            fold,
            mark,
            cells,
            matched,
        });
        fold == Fold::Open
    }

    fn container(&mut self, c: &ContainerNode, depth: usize) {
        let rate = self.snap.rates.get(&c.id).copied().unwrap_or_default();
        let open = self.push(
            RowKey::Container(c.id.clone()),
            depth,
            !c.processes.is_empty(),
            Mark::None,
            Cells::Container {
                label: container_label(c),
                processes: count(&c.processes),
                rate,
            },
        );
        if open {
            self.procs(&c.processes, depth + 1, 0);
        }
    }

    fn procs(&mut self, nodes: &[ProcNode], depth: usize, level: usize) {
        for n in nodes {
            let key = RowKey::Proc(n.pid, n.start_ns);
            let collapsed = self.shape.collapsed.is_some_and(|c| c.contains(&key));
            let mark = if n.reaped {
                Mark::Exited
            } else if n.zombie {
                Mark::Zombie
            } else if n.start_ns.saturating_add(NEW_NS) > self.snap.clock_ns {
                Mark::New
            } else {
                Mark::None
            };
            let fold = if n.children.is_empty() {
                ' '
            } else if collapsed {
                '▸'
            } else {
                '▾'
            };
            let mut command = format!("{:indent$}{fold} ", "", indent = level * 2);
            let tag = role_tag(n.role);
            if !tag.is_empty() {
                command.push_str(tag);
                command.push(' ');
            }
            if n.reaped {
                command.push_str(&format!("[{}] ", outcome(n.exit)));
                command.push_str(&n.command());
            } else if n.zombie {
                command.push_str(&format!("[{}] <defunct>", n.comm));
                if n.exit.is_some() {
                    command.push_str(&format!(" {}", outcome(n.exit)));
                }
            } else {
                command.push_str(&n.command());
            }
            let user = match self.shape.users {
                Some(u) => u.name(n.uid),
                None => n.uid.to_string(),
            };
            let end = n.exited_ns.unwrap_or(self.snap.clock_ns);
            let open = self.push(
                key,
                depth + level,
                !n.children.is_empty(),
                mark,
                Cells::Proc {
                    pid: n.pid,
                    ctr_pid: (n.nspid != n.pid).then_some(n.nspid),
                    user,
                    age: age(end.saturating_sub(n.start_ns)),
                    command,
                },
            );
            if open {
                self.procs(&n.children, depth, level + 1);
            }
        }
    }
}

/// A row's role, for styling: the container's monitor and init stand out.
pub fn is_init(row: &Row) -> bool {
    matches!(&row.cells, Cells::Proc { command, .. } if command.contains(role_tag(Some(Role::ContainerInit))))
}
