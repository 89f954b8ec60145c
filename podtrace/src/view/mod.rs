//! The view model: pods -> containers -> conmon/shim -> init -> children, built from the
//! engine's state (never from /proc), and what narrows it. One model for every view:
//! `tree` prints it as text ([`text`]), `tree --json` serialises it, and `top` draws it
//! (`crate::top`), with the processes that exited a moment ago added.
pub mod text;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;

use crate::attribution::Runtime;
use crate::engine::process::Proc;
use crate::engine::Engine;
use crate::output::Role;
use crate::wait_status;

/// Which part of the picture to show: the same pod, namespace and container selection as
/// `run --pod --namespace --container` (pod and namespace by name, container by id prefix or
/// name), a command, and whether processes outside containers are shown.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// Pod name.
    pub pod: Option<String>,
    pub namespace: Option<String>,
    /// Container id prefix or name.
    pub container: Option<String>,
    /// Only processes whose command line or name contains this text, with their ancestors
    /// (so that the tree still says where they are).
    pub command: Option<String>,
    /// Also show processes outside containers.
    pub all: bool,
}

impl Filter {
    /// Whether a container of this pod, namespace, id and name is selected.
    pub fn matches(
        &self,
        pod: Option<&str>,
        namespace: Option<&str>,
        id: &str,
        name: Option<&str>,
    ) -> bool {
        if let Some(p) = &self.pod {
            if pod != Some(p.as_str()) {
                return false;
            }
        }
        if let Some(n) = &self.namespace {
            if namespace != Some(n.as_str()) {
                return false;
            }
        }
        if let Some(c) = &self.container {
            if !(id.starts_with(c.as_str()) || name == Some(c.as_str())) {
                return false;
            }
        }
        true
    }

    /// Host processes are shown: asked for, and no pod, namespace or container is selected
    /// (they are in none).
    pub fn wants_host(&self) -> bool {
        self.all && self.pod.is_none() && self.namespace.is_none() && self.container.is_none()
    }
}

/// How a process ended (from the raw wait status), as its `exit` event says.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
pub struct ExitNode {
    /// `exit(code)`, null when killed by a signal.
    pub exit_code: Option<u8>,
    /// The signal that killed it, null when it exited.
    pub signal: Option<u8>,
    pub core_dumped: bool,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ProcNode {
    /// Host pid (what `ps -ef` on the node shows).
    pub pid: u32,
    /// Pid inside the process's own pid namespace (what `ps -ef` in the pod shows).
    pub nspid: u32,
    pub ppid: u32,
    /// Real uid (host view).
    pub uid: u32,
    /// Process start, ns since boot (as events' `start_ns`).
    pub start_ns: u64,
    pub comm: Arc<str>,
    /// The program it runs (a forked copy's is its parent's until it execs); null when
    /// unknown.
    pub filename: Option<Arc<str>>,
    pub argv: Arc<[String]>,
    pub role: Option<Role>,
    /// Exited but not yet reaped by its parent (`ps` shows `<defunct>`).
    pub zombie: bool,
    /// When it exited (ns since boot); null while it runs.
    pub exited_ns: Option<u64>,
    /// How it exited; null while it runs, and when that is unknown (its exit record was
    /// lost, or it was a zombie before podtrace looked).
    pub exit: Option<ExitNode>,
    /// It exited and was reaped a moment ago (only in `top`'s view: the tree shows what is in
    /// the process table now).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub reaped: bool,
    pub children: Vec<ProcNode>,
}

impl ProcNode {
    /// The command line; for a process whose exec was not seen (a forked copy), its
    /// program; else `[comm]`.
    pub fn command(&self) -> String {
        match (self.argv.is_empty(), &self.filename) {
            (false, _) => self.argv.join(" "),
            (true, Some(f)) if !f.is_empty() => f.to_string(),
            (true, _) => format!("[{}]", self.comm),
        }
    }

    fn matches_command(&self, needle: &str) -> bool {
        self.comm.contains(needle) || self.argv.iter().any(|a| a.contains(needle)) || {
            // Across arguments too ("sleep 600").
            needle.contains(' ') && self.argv.join(" ").contains(needle)
        }
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ContainerNode {
    pub id: String,
    pub name: Option<String>,
    pub runtime: Option<Runtime>,
    /// Image and image id (from the CRI).
    pub image: Option<String>,
    pub image_id: Option<String>,
    pub cgroup: Option<String>,
    pub helper_pid: Option<u32>,
    pub init_pid: Option<u32>,
    pub processes: Vec<ProcNode>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct PodNode {
    pub name: Option<String>,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    pub qos: Option<String>,
    /// The pod's labels and annotations from the CRI (only with `--cri-labels`, redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    pub containers: Vec<ContainerNode>,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq, Default)]
pub struct TreeView {
    pub pods: Vec<PodNode>,
    /// Containers not in any pod (podman, ctr).
    pub containers: Vec<ContainerNode>,
    /// Processes outside containers (only with `--all`).
    pub host: Vec<ProcNode>,
}

/// What goes into a view besides the live processes and zombies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Build {
    /// Processes outside containers.
    pub host: bool,
    /// Processes that exited and were reaped at or after this time (ns since boot), as
    /// `reaped` leaves of their parent (`top` shows them for a moment); None: none.
    pub reaped_since_ns: Option<u64>,
}

/// A process of the view: from the table (live or zombie), or one that left it.
fn proc_node(p: &Proc, reaped: bool) -> ProcNode {
    ProcNode {
        pid: p.pid,
        nspid: p.nspid,
        ppid: p.ppid,
        uid: p.uid,
        start_ns: p.start_ns,
        comm: p.comm.clone(),
        filename: p.filename.clone(),
        argv: p.argv.clone(),
        role: p.role,
        zombie: p.is_zombie() && !reaped,
        exited_ns: p.exited_ns,
        exit: p.exit_status.map(|s| {
            let o = wait_status::decode(s);
            ExitNode {
                exit_code: o.exit_code,
                signal: o.signal,
                core_dumped: o.core_dumped,
            }
        }),
        reaped,
        children: Vec::new(),
    }
}

/// Forest of one group's processes: a process whose parent is not in the group is a root.
/// Only processes in the table are parents (a reaped process's children were given to
/// another parent when it exited, and its pid may be another process's now).
fn forest(live: &[&Proc], reaped: &[&Proc]) -> Vec<ProcNode> {
    let pids: HashSet<u32> = live.iter().map(|p| p.pid).collect();
    let mut kids: HashMap<u32, Vec<(&Proc, bool)>> = HashMap::new();
    let mut roots = Vec::new();
    let all = live
        .iter()
        .map(|p| (*p, false))
        .chain(reaped.iter().map(|p| (*p, true)));
    for (p, gone) in all {
        if (gone || p.ppid != p.pid) && pids.contains(&p.ppid) {
            kids.entry(p.ppid).or_default().push((p, gone));
        } else {
            roots.push((p, gone));
        }
    }
    fn node(
        p: &Proc,
        gone: bool,
        kids: &HashMap<u32, Vec<(&Proc, bool)>>,
        depth: usize,
    ) -> ProcNode {
        let mut n = proc_node(p, gone);
        if !gone && depth < 256 {
            if let Some(v) = kids.get(&p.pid) {
                n.children = v
                    .iter()
                    .map(|(c, g)| node(c, *g, kids, depth + 1))
                    .collect();
            }
        }
        n.children.sort_by_key(|c| (c.pid, c.start_ns));
        n
    }
    roots.sort_by_key(|(p, _)| (p.pid, p.start_ns));
    roots
        .iter()
        .map(|(p, gone)| node(p, *gone, &kids, 0))
        .collect()
}

/// The picture the engine holds now: every container with a process in the table (live or
/// zombie; with `reaped_since_ns`, or one reaped since), in its pod when it has one.
pub fn build(engine: &Engine, opts: &Build) -> TreeView {
    #[derive(Default)]
    struct Group<'a> {
        live: Vec<&'a Proc>,
        reaped: Vec<&'a Proc>,
    }
    let mut by_container: BTreeMap<&str, Group<'_>> = BTreeMap::new();
    let mut host = Group::default();
    for p in engine.table().live() {
        match p.container.as_deref() {
            Some(id) => by_container.entry(id).or_default().live.push(p),
            None if opts.host => host.live.push(p),
            None => {}
        }
    }
    if let Some(since) = opts.reaped_since_ns {
        for p in engine.table().gone() {
            // Reaped after an exit (real or inferred); not the ones a resync found gone
            // without one, nor the ones whose pid was taken before their exit came.
            if p.exited_ns.is_none_or(|t| t < since) {
                continue;
            }
            match p.container.as_deref() {
                Some(id) => by_container.entry(id).or_default().reaped.push(p),
                None if opts.host => host.reaped.push(p),
                None => {}
            }
        }
    }
    let mut view = TreeView::default();
    let mut pods: BTreeMap<(String, String, String), PodNode> = BTreeMap::new();
    for (id, group) in by_container {
        let c = engine.containers().get(id);
        let node = ContainerNode {
            id: id.to_string(),
            name: c.and_then(|c| c.name.clone()),
            runtime: c.and_then(|c| c.runtime),
            image: c.and_then(|c| c.image.clone()),
            image_id: c.and_then(|c| c.image_id.clone()),
            cgroup: c.and_then(|c| c.cgroup.clone()),
            helper_pid: c.and_then(|c| c.helper_pid),
            init_pid: c.and_then(|c| c.init_pid),
            processes: forest(&group.live, &group.reaped),
        };
        match c.filter(|c| c.pod().is_some()) {
            Some(c) => {
                let key = (
                    c.namespace.clone().unwrap_or_default(),
                    c.pod_name.clone().unwrap_or_default(),
                    c.pod_uid.clone().unwrap_or_default(),
                );
                pods.entry(key)
                    .or_insert_with(|| PodNode {
                        name: c.pod_name.clone(),
                        namespace: c.namespace.clone(),
                        uid: c.pod_uid.clone(),
                        qos: c.qos.clone(),
                        labels: c.pod_labels.clone(),
                        annotations: c.pod_annotations.clone(),
                        containers: Vec::new(),
                    })
                    .containers
                    .push(node);
            }
            None => view.containers.push(node),
        }
    }
    view.pods = pods.into_values().collect();
    view.host = forest(&host.live, &host.reaped);
    view
}

/// Keeps the nodes that are or lead to a process whose command matches `needle`.
fn keep_commands(nodes: &mut Vec<ProcNode>, needle: &str) {
    nodes.retain_mut(|n| {
        keep_commands(&mut n.children, needle);
        !n.children.is_empty() || n.matches_command(needle)
    });
}

impl TreeView {
    /// Narrows the view to what `f` selects: containers by pod, namespace and container;
    /// processes by command (with their ancestors; a container or pod left with none goes);
    /// host processes only when `f` wants them.
    pub fn retain(&mut self, f: &Filter) {
        let cmd = f.command.as_deref().filter(|c| !c.is_empty());
        let keep = |c: &mut ContainerNode, pod: Option<&str>, ns: Option<&str>| {
            if !f.matches(pod, ns, &c.id, c.name.as_deref()) {
                return false;
            }
            match cmd {
                Some(needle) => {
                    keep_commands(&mut c.processes, needle);
                    !c.processes.is_empty()
                }
                None => true,
            }
        };
        self.pods.retain_mut(|p| {
            let (name, ns) = (p.name.clone(), p.namespace.clone());
            p.containers
                .retain_mut(|c| keep(c, name.as_deref(), ns.as_deref()));
            !p.containers.is_empty()
        });
        self.containers.retain_mut(|c| keep(c, None, None));
        if !f.wants_host() {
            self.host.clear();
        } else if let Some(needle) = cmd {
            keep_commands(&mut self.host, needle);
        }
    }

    /// Containers in pods and outside, in the order they are shown.
    pub fn all_containers(&self) -> impl Iterator<Item = &ContainerNode> {
        self.pods
            .iter()
            .flat_map(|p| p.containers.iter())
            .chain(self.containers.iter())
    }
}

/// What `tree` shows: the engine's picture narrowed by `f`.
pub fn tree(engine: &Engine, f: &Filter) -> TreeView {
    let mut view = build(
        engine,
        &Build {
            host: f.wants_host(),
            reaped_since_ns: None,
        },
    );
    view.retain(f);
    view
}
