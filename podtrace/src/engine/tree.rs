//! The live picture: pod -> container -> conmon/shim -> init -> children.
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;

use serde::Serialize;

use super::process::Proc;
use super::Engine;
use crate::attribution::Runtime;
use crate::output::Role;

/// Which part of the picture to show.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Pod name.
    pub pod: Option<String>,
    pub namespace: Option<String>,
    /// Container id prefix or name.
    pub container: Option<String>,
    /// Also show processes outside containers.
    pub all: bool,
}

impl Filter {
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

    fn wants_host(&self) -> bool {
        self.all && self.pod.is_none() && self.namespace.is_none() && self.container.is_none()
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ProcNode {
    /// Host pid (what `ps -ef` on the node shows).
    pub pid: u32,
    /// Pid inside the process's own pid namespace (what `ps -ef` in the pod shows).
    pub nspid: u32,
    pub ppid: u32,
    pub comm: String,
    pub argv: Vec<String>,
    pub role: Option<Role>,
    /// Exited but not yet reaped by its parent (`ps` shows `<defunct>`).
    pub zombie: bool,
    pub children: Vec<ProcNode>,
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
    pub labels: Option<std::collections::BTreeMap<String, String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::BTreeMap<String, String>>,
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

/// Forest of the given processes: a process whose parent is not in the set is a root.
fn forest(procs: &[&Proc]) -> Vec<ProcNode> {
    let pids: HashSet<u32> = procs.iter().map(|p| p.pid).collect();
    let mut kids: HashMap<u32, Vec<&Proc>> = HashMap::new();
    let mut roots = Vec::new();
    for p in procs {
        if p.ppid != p.pid && pids.contains(&p.ppid) {
            kids.entry(p.ppid).or_default().push(p);
        } else {
            roots.push(*p);
        }
    }
    fn node(p: &Proc, kids: &HashMap<u32, Vec<&Proc>>, depth: usize) -> ProcNode {
        let mut children: Vec<ProcNode> = if depth < 256 {
            kids.get(&p.pid)
                .map(|v| v.iter().map(|c| node(c, kids, depth + 1)).collect())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        children.sort_by_key(|c| c.pid);
        ProcNode {
            pid: p.pid,
            nspid: p.nspid,
            ppid: p.ppid,
            comm: p.comm.to_string(),
            argv: p.argv.to_vec(),
            role: p.role,
            zombie: p.is_zombie(),
            children,
        }
    }
    roots.sort_by_key(|p| p.pid);
    roots.iter().map(|p| node(p, &kids, 0)).collect()
}

pub fn build(engine: &Engine, filter: &Filter) -> TreeView {
    let mut by_container: BTreeMap<&str, Vec<&Proc>> = BTreeMap::new();
    let mut host = Vec::new();
    for p in engine.table().live() {
        match p.container.as_deref() {
            Some(id) => by_container.entry(id).or_default().push(p),
            None => host.push(p),
        }
    }
    let mut view = TreeView::default();
    let mut pods: BTreeMap<(String, String, String), PodNode> = BTreeMap::new();
    for (id, procs) in by_container {
        let c = engine.containers().get(id);
        let name = c.and_then(|c| c.name.clone());
        let (pod, ns) = (
            c.and_then(|c| c.pod_name.clone()),
            c.and_then(|c| c.namespace.clone()),
        );
        if !filter.matches(pod.as_deref(), ns.as_deref(), id, name.as_deref()) {
            continue;
        }
        let node = ContainerNode {
            id: id.to_string(),
            name,
            runtime: c.and_then(|c| c.runtime),
            image: c.and_then(|c| c.image.clone()),
            image_id: c.and_then(|c| c.image_id.clone()),
            cgroup: c.and_then(|c| c.cgroup.clone()),
            helper_pid: c.and_then(|c| c.helper_pid),
            init_pid: c.and_then(|c| c.init_pid),
            processes: forest(&procs),
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
    if filter.wants_host() {
        view.host = forest(&host);
    }
    view
}

fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

fn role_tag(r: Option<Role>) -> &'static str {
    match r {
        Some(Role::Conmon) => "[conmon]",
        Some(Role::Shim) => "[shim]",
        Some(Role::Runtime) => "[runtime]",
        Some(Role::ContainerInit) => "[init]",
        None => "",
    }
}

fn render_procs(out: &mut String, nodes: &[ProcNode], depth: usize) {
    for n in nodes {
        let ns = if n.nspid != n.pid {
            format!("{:>7}", n.nspid)
        } else {
            format!("{:>7}", "-")
        };
        let mut cmd = n.argv.join(" ");
        if cmd.is_empty() || n.zombie {
            cmd = format!("[{}]", n.comm);
        }
        if n.zombie {
            cmd.push_str(" <defunct>");
        }
        if cmd.len() > 160 {
            let mut cut = 157;
            while !cmd.is_char_boundary(cut) {
                cut -= 1;
            }
            cmd.truncate(cut);
            cmd.push_str("...");
        }
        let _ = writeln!(
            out,
            "{:>8} {ns}  {:indent$}{} {:<9} {cmd}",
            n.pid,
            "",
            n.comm,
            role_tag(n.role),
            indent = depth * 2
        );
        render_procs(out, &n.children, depth + 1);
    }
}

fn render_container(out: &mut String, c: &ContainerNode, indent: &str) {
    let runtime = c
        .runtime
        .and_then(|r| serde_json::to_value(r).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "?".to_string());
    let image = c
        .image
        .as_deref()
        .map(|i| format!(" image {i}"))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "{indent}container {} {} ({runtime}){image} conmon/shim {} init {}",
        c.name.as_deref().unwrap_or("-"),
        short(&c.id),
        c.helper_pid
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into()),
        c.init_pid
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into()),
    );
    render_procs(out, &c.processes, 1);
}

/// Text form: host pid and container pid side by side, indented by parentage.
pub fn render_text(view: &TreeView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{:>8} {:>7}  COMMAND", "HOST-PID", "CTR-PID");
    for pod in &view.pods {
        let _ = writeln!(
            out,
            "pod {}/{} uid {}{}",
            pod.namespace.as_deref().unwrap_or("?"),
            pod.name.as_deref().unwrap_or("?"),
            pod.uid.as_deref().unwrap_or("?"),
            pod.qos
                .as_deref()
                .map(|q| format!(" qos {q}"))
                .unwrap_or_default()
        );
        for c in &pod.containers {
            render_container(&mut out, c, "  ");
        }
    }
    for c in &view.containers {
        render_container(&mut out, c, "");
    }
    if !view.host.is_empty() {
        let _ = writeln!(out, "host processes");
        render_procs(&mut out, &view.host, 1);
    }
    out
}
