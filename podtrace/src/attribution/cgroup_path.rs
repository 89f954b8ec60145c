//! Container and pod identity from a cgroup path.
//!
//! The path is split into components and each component is matched first against the kubelet's
//! pod levels (`pod_level`: kubepods root, QoS class, pod, in both the systemd and the cgroupfs
//! layouts), then against the `CONTAINER_PATTERNS` table for the runtime and container id.
//! The deepest container match wins, so a container nested in another (kind nodes, podman in
//! podman) is attributed to the inner one; the pod comes from the kubepods components wherever
//! they are.
//!
//! Plain containerd ids (`ctr run ... c1` gives `/<namespace>/c1`) cannot be told apart from
//! any other two-level path, so a bare id is only accepted under a namespace known to be
//! containerd's or docker's (`k8s.io`, `moby`, `default`, `docker`) or when it is a 64-hex id;
//! the engine attributes other ctr containers through their shim's argv (`-namespace`, `-id`).

use super::k8s_name::is_pod_uid;
use super::Runtime;

/// What a cgroup path says about the process in it. All `None` / `false` for host cgroups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupInfo {
    pub runtime: Option<Runtime>,
    /// Full container id as it appears in the path.
    pub container_id: Option<String>,
    /// Pod UID with dashes (the systemd driver writes underscores).
    pub pod_uid: Option<String>,
    /// `"guaranteed"`, `"burstable"` or `"besteffort"`.
    pub qos: Option<String>,
    /// The path is a runtime monitor's cgroup (`crio-conmon-<id>.scope`,
    /// `libpod-conmon-<id>.scope`, podman's shared `.../conmon`), not the container's.
    pub conmon: bool,
}

/// QoS classes that have their own cgroup level; guaranteed pods sit directly under kubepods.
const QOS_LEVELS: &[&str] = &["burstable", "besteffort"];
const QOS_GUARANTEED: &str = "guaranteed";
/// The kubelet's top cgroup: `kubepods` (cgroupfs) or the `kubepods` segment of a slice name
/// (systemd: `kubepods.slice`, or `kubelet-kubepods.slice` under a custom `--cgroup-root`).
const KUBEPODS: &str = "kubepods";
const SLICE_SUFFIX: &str = ".slice";
const POD_PREFIX: &str = "pod";

/// How a component (with its parent) names a container.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// `<prefix><id><suffix>` in one component; the id is letters and digits for systemd scopes,
    /// 64 hex digits for suffix-less cgroupfs names.
    Affixed {
        prefix: &'static str,
        suffix: &'static str,
    },
    /// A component with exactly this name and no id (podman's shared conmon cgroup).
    Named(&'static str),
    /// `<parent>/<id>`: the id is a containerd-style identifier under a known parent.
    UnderParent(&'static str),
    /// `pod<uid>/<64 hex>`: the kubelet's cgroupfs layout (containerd or docker).
    UnderPod,
    /// `<anything>/<64 hex>`: containerd's default `/<namespace>/<id>`.
    BareHex64,
}

struct ContainerPattern {
    shape: Shape,
    runtime: Option<Runtime>,
    conmon: bool,
}

const fn pattern(shape: Shape, runtime: Option<Runtime>, conmon: bool) -> ContainerPattern {
    ContainerPattern {
        shape,
        runtime,
        conmon,
    }
}

const fn affixed(prefix: &'static str, suffix: &'static str) -> Shape {
    Shape::Affixed { prefix, suffix }
}

const SCOPE: &str = ".scope";

/// Ordered: the first pattern that matches a component wins (monitor scopes before container
/// scopes; ids are letters and digits only, so `crio-conmon-x.scope` cannot be misread anyway).
const CONTAINER_PATTERNS: &[ContainerPattern] = &[
    // systemd cgroup manager: one transient scope per container / monitor.
    pattern(affixed("crio-conmon-", SCOPE), Some(Runtime::Crio), true),
    pattern(affixed("crio-", SCOPE), Some(Runtime::Crio), false),
    pattern(
        affixed("cri-containerd-", SCOPE),
        Some(Runtime::Containerd),
        false,
    ),
    pattern(affixed("docker-", SCOPE), Some(Runtime::Docker), false),
    pattern(
        affixed("libpod-conmon-", SCOPE),
        Some(Runtime::Podman),
        true,
    ),
    pattern(affixed("libpod-", SCOPE), Some(Runtime::Podman), false),
    // cgroupfs manager: the same names without the systemd suffix.
    pattern(affixed("crio-conmon-", ""), Some(Runtime::Crio), true),
    pattern(affixed("crio-", ""), Some(Runtime::Crio), false),
    pattern(affixed("libpod-", ""), Some(Runtime::Podman), false),
    // podman (cgroupfs) puts every conmon in <cgroup parent>/conmon, e.g. /libpod_parent/conmon.
    pattern(Shape::Named("conmon"), Some(Runtime::Podman), true),
    pattern(Shape::UnderParent("docker"), Some(Runtime::Docker), false),
    pattern(
        Shape::UnderParent("k8s.io"),
        Some(Runtime::Containerd),
        false,
    ),
    pattern(Shape::UnderParent("moby"), Some(Runtime::Containerd), false),
    pattern(
        Shape::UnderParent("default"),
        Some(Runtime::Containerd),
        false,
    ),
    pattern(Shape::UnderPod, None, false),
    pattern(Shape::BareHex64, Some(Runtime::Containerd), false),
];

/// What a kubepods component says.
#[derive(Debug, PartialEq, Eq)]
enum PodLevel<'a> {
    Root,
    Qos(&'a str),
    /// A pod, with its QoS class when the component names it (systemd slices do).
    Pod {
        qos: Option<&'a str>,
        uid: String,
    },
}

/// Parses a cgroup path. Accepts a bare path (`/kubepods.slice/...`), a whole
/// `/proc/PID/cgroup` line (`0::/path`, `4:memory:/path`), a mount-prefixed path
/// (`/sys/fs/cgroup/unified/...`) and the ` (deleted)` suffix of removed cgroups.
pub fn parse_cgroup_path(path: &str) -> CgroupInfo {
    let path = strip_proc_cgroup_prefix(path);
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();

    let mut info = CgroupInfo::default();
    let mut in_kubepods = false;
    let mut pod_found = false;
    let mut parent_is_pod = false;
    for (i, comp) in comps.iter().enumerate() {
        let parent = i.checked_sub(1).and_then(|p| comps.get(p)).copied();
        let grandparent = i.checked_sub(2).and_then(|p| comps.get(p)).copied();

        if let Some(level) = pod_level(comp, parent, grandparent, in_kubepods) {
            in_kubepods = true;
            parent_is_pod = matches!(level, PodLevel::Pod { .. });
            match level {
                PodLevel::Root => {}
                PodLevel::Qos(q) => info.qos = Some(q.to_owned()),
                PodLevel::Pod { qos, uid } => {
                    if let Some(q) = qos {
                        info.qos = Some(q.to_owned());
                    }
                    info.pod_uid = Some(uid);
                    pod_found = true;
                }
            }
            continue;
        }

        let found = CONTAINER_PATTERNS
            .iter()
            .find_map(|pat| match_container(pat, comp, parent, parent_is_pod).map(|id| (pat, id)));
        if let Some((pat, id)) = found {
            info.runtime = pat.runtime;
            info.container_id = id.map(str::to_owned);
            info.conmon = pat.conmon;
        }
        parent_is_pod = false;
    }
    if pod_found && info.qos.is_none() {
        info.qos = Some(QOS_GUARANTEED.to_owned());
    }
    info
}

/// `0::/path` or `4:memory,cpu:/path` -> `/path`; anything else is returned unchanged.
fn strip_proc_cgroup_prefix(line: &str) -> &str {
    let line = line.trim_end_matches('\n');
    if line.starts_with('/') {
        return line;
    }
    let mut parts = line.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(id), Some(_controllers), Some(path))
            if !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()) =>
        {
            path
        }
        _ => line,
    }
}

/// Matches one kubepods level, given the component's parent and grandparent (cgroupfs) or the
/// slice name alone (systemd encodes the hierarchy in the name).
fn pod_level<'a>(
    comp: &'a str,
    parent: Option<&str>,
    grandparent: Option<&str>,
    in_kubepods: bool,
) -> Option<PodLevel<'a>> {
    if let Some(name) = comp.strip_suffix(SLICE_SUFFIX) {
        let segs: Vec<&str> = name.split('-').collect();
        let at = segs.iter().position(|s| *s == KUBEPODS)?;
        return match &segs[at + 1..] {
            [] => Some(PodLevel::Root),
            [q] if QOS_LEVELS.contains(q) => Some(PodLevel::Qos(q)),
            [q, pod] if QOS_LEVELS.contains(q) => Some(PodLevel::Pod {
                qos: Some(q),
                uid: pod_uid(pod)?,
            }),
            [pod] => Some(PodLevel::Pod {
                qos: None,
                uid: pod_uid(pod)?,
            }),
            _ => None,
        };
    }
    if comp == KUBEPODS {
        return Some(PodLevel::Root);
    }
    if !in_kubepods {
        return None;
    }
    let parent_is_root = parent == Some(KUBEPODS);
    if parent_is_root && QOS_LEVELS.contains(&comp) {
        return Some(PodLevel::Qos(comp));
    }
    let parent_is_qos =
        parent.is_some_and(|p| QOS_LEVELS.contains(&p)) && grandparent == Some(KUBEPODS);
    if parent_is_root || parent_is_qos {
        return Some(PodLevel::Pod {
            qos: None,
            uid: pod_uid(comp)?,
        });
    }
    None
}

/// `pod<uid>` with the uid's underscores (systemd escaping) turned back into dashes.
fn pod_uid(comp: &str) -> Option<String> {
    let uid = comp.strip_prefix(POD_PREFIX)?.replace('_', "-");
    is_pod_uid(&uid).then_some(uid)
}

/// `Some(Some(id))` for a container match, `Some(None)` for an id-less match (podman's shared
/// conmon cgroup), `None` when the pattern does not apply.
fn match_container<'a>(
    pat: &ContainerPattern,
    comp: &'a str,
    parent: Option<&str>,
    parent_is_pod: bool,
) -> Option<Option<&'a str>> {
    match pat.shape {
        Shape::Affixed { prefix, suffix } => {
            let id = comp.strip_prefix(prefix)?.strip_suffix(suffix)?;
            // A systemd scope's runtime prefix and suffix are distinctive enough for any id;
            // a bare cgroupfs directory name (`crio-x`) must carry a real 64-hex id.
            let valid = if suffix.is_empty() {
                is_hex64(id)
            } else {
                is_alnum_id(id)
            };
            valid.then_some(Some(id))
        }
        Shape::Named(name) => (comp == name).then_some(None),
        Shape::UnderParent(p) => {
            (parent == Some(p) && is_containerd_id(comp)).then_some(Some(comp))
        }
        Shape::UnderPod => (parent_is_pod && is_hex64(comp)).then_some(Some(comp)),
        Shape::BareHex64 => (parent.is_some() && is_hex64(comp)).then_some(Some(comp)),
    }
}

/// Runtime-generated ids in scope names: letters and digits (real ones are 64 hex).
fn is_alnum_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// containerd's identifier rule: alphanumeric runs joined by single `.`, `_` or `-`, at most
/// 76 bytes.
fn is_containerd_id(s: &str) -> bool {
    if s.is_empty() || s.len() > 76 {
        return false;
    }
    let mut prev_sep = true; // must start with an alphanumeric
    for b in s.bytes() {
        let sep = matches!(b, b'.' | b'_' | b'-');
        if sep && prev_sep || !sep && !b.is_ascii_alphanumeric() {
            return false;
        }
        prev_sep = sep;
    }
    !prev_sep
}

#[cfg(test)]
mod tests;
