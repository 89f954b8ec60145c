//! `tree`'s text: host pid and container pid side by side, indented by parentage, under
//! pod and container lines.
use std::fmt::Write as _;

use super::{ContainerNode, ProcNode, TreeView};
use crate::output::Role;

/// The first 12 characters of a container id (what `crictl ps` and `podman ps` show).
pub fn short(id: &str) -> &str {
    id.get(..12).unwrap_or(id)
}

/// `[conmon]`, `[shim]`, `[runtime]`, `[init]`, or nothing.
pub fn role_tag(r: Option<Role>) -> &'static str {
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

/// The runtime's name as events print it (`crio`, `containerd`, ...), `?` when unknown.
pub fn runtime_name(c: &ContainerNode) -> String {
    c.runtime
        .and_then(|r| serde_json::to_value(r).ok())
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "?".to_string())
}

fn render_container(out: &mut String, c: &ContainerNode, indent: &str) {
    let runtime = runtime_name(c);
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
