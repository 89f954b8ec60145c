//! Container and pod identity from a cgroup path.
//!
//! The path is split into components and each component is matched first against the kubelet's
//! pod levels (`pod_level`: kubepods root, QoS class, pod, in both the systemd and the cgroupfs
//! layouts), then against the `CONTAINER_PATTERNS` table for the runtime and container id.
//! The deepest container match wins, so a container nested in another (kind nodes, podman in
//! podman) is attributed to the inner one; the pod comes from the kubepods components wherever
//! they are.
//!
//! The table is built from how each runtime turns its OCI `cgroupsPath` into a directory:
//!
//! - systemd cgroup managers (runc's, and gVisor's and kata's, which follow it) read
//!   `cgroupsPath` as `slice:prefix:name` and create the unit `<prefix>-<name>.scope` inside the expanded slice
//!   (`kubepods-besteffort-pod<uid>.slice` is `/kubepods.slice/kubepods-besteffort.slice/...`);
//! - the cgroupfs managers take `cgroupsPath` as a path, so a runtime configured for cgroupfs
//!   while the kubelet uses systemd puts the container in one directory literally named
//!   `<slice>:<prefix>:<name>`, relative to its own cgroup (v1) or to its parent (v2);
//! - engines that pick the path themselves (cri-o, podman, docker, containerd) have their own
//!   cgroupfs names (`crio-<id>`, `libpod-<id>`, `/docker/<id>`, `/<namespace>/<id>`).
//!
//! A `Unit` row therefore covers both the systemd scope and the literal directory of the same
//! `cgroupsPath`. A path that does not say which runtime made it (a bare 64-hex directory)
//! gives the id with `runtime: None`: the engine takes the runtime from the helper processes.
//!
//! Plain containerd ids (`ctr run ... c1` gives `/<namespace>/c1`) cannot be told apart from
//! any other two-level path, so a non-hex id is only accepted under a parent known to name its
//! engine (`k8s.io`, `default`, `docker/buildkit`, `kata_overhead`); the engine attributes other
//! ctr containers through their shim's argv (`-namespace`, `-id`).

use super::k8s_name::is_pod_uid;
use super::Runtime;

/// What a cgroup path says about the process in it. All `None` / `false` for host cgroups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupInfo {
    /// The engine that made the cgroup, when the path names it; `None` when it does not (a
    /// bare id, kata's cgroups, a runc started by hand).
    pub runtime: Option<Runtime>,
    /// Full container id as it appears in the path.
    pub container_id: Option<String>,
    /// Pod UID with dashes (the systemd driver writes underscores).
    pub pod_uid: Option<String>,
    /// `"guaranteed"`, `"burstable"` or `"besteffort"`.
    pub qos: Option<String>,
    /// The path is a runtime monitor's cgroup (`crio-conmon-<id>.scope`,
    /// `libpod-conmon-<id>.scope`, podman's shared `.../conmon` and split-mode `.../runtime`),
    /// not the container's. cri-o's conmon-rs (one per pod) lives in the infra container's
    /// monitor scope, so its `container_id` is the pod sandbox id.
    pub conmon: bool,
    /// The path belongs to a pod sandbox as a whole, not to one container: kata's sandbox
    /// cgroup (`kata_<sandbox cgroup name>`: the VM's vCPU threads, and with
    /// `sandbox_cgroup_only` also the hypervisor, virtiofsd and the shim) and its overhead
    /// cgroup (`kata_overhead/<sandbox id>`: everything but the vCPU threads). The containers
    /// themselves run inside the VM; `container_id` is `None`.
    pub sandbox_id: Option<String>,
}

/// QoS classes that have their own cgroup level; guaranteed pods sit directly under kubepods.
const QOS_LEVELS: &[&str] = &["burstable", "besteffort"];
const QOS_GUARANTEED: &str = "guaranteed";
/// The kubelet's top cgroup: `kubepods` (cgroupfs) or the `kubepods` segment of a slice name
/// (systemd: `kubepods.slice`, or `kubelet-kubepods.slice` under a custom `--cgroup-root`).
const KUBEPODS: &str = "kubepods";
const SLICE_SUFFIX: &str = ".slice";
const SCOPE_SUFFIX: &str = ".scope";
const POD_PREFIX: &str = "pod";

/// What the processes of a matched cgroup are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holds {
    /// A container's own processes.
    Container,
    /// A runtime monitor (conmon, conmon-rs, podman's split-mode `runtime`).
    Monitor,
    /// A pod sandbox's host-side processes (kata's VM), not one container.
    Sandbox,
}

/// How the id part of a component is checked.
#[derive(Clone, Copy, Debug)]
enum IdRule {
    /// 64 hex digits: the ids docker, cri-o, podman and containerd's CRI generate.
    Hex64,
    /// 64 hex digits, optionally followed by `.scope`.
    Hex64OrScope,
    /// containerd's identifier rule (`ctr run ... c1`, kata's sandbox ids).
    Containerd,
}

/// How a component (with its parents) names a container.
#[derive(Clone, Copy, Debug)]
enum Shape {
    /// OCI `cgroupsPath` `slice:prefix:id` as a systemd cgroup manager makes it:
    /// `<prefix>-<id>.scope`; or as a cgroupfs manager takes it, literally one directory
    /// `<slice>:<prefix>:<id>` (whose slice also gives the pod). The id is letters and digits.
    Unit(&'static str),
    /// A cgroupfs directory `<prefix><64 hex>`.
    Dir(&'static str),
    /// A directory with exactly this name and no id; when `parent_suffixes` is not empty, its
    /// parent's name must end with one of them.
    Named {
        name: &'static str,
        parent_suffixes: &'static [&'static str],
    },
    /// `[<grandparent>/]<parent>/<id>`.
    Under {
        parent: &'static str,
        grandparent: Option<&'static str>,
        id: IdRule,
    },
    /// kata's sandbox cgroup: `<prefix>` followed by what the sandbox container's cgroup would
    /// have been named (matched against the `Holds::Container` rows); gives `sandbox_id`.
    Renamed(&'static str),
    /// A literal `<slice>:<prefix>:<id>` whose prefix no `Unit` row knows: a container (the
    /// form is only ever a systemd cgroupsPath) whose runtime the path does not name.
    AnyTriple,
    /// `<any parent or the root>/<64 hex>`: a container whose path does not name its runtime.
    BareHex64,
}

struct ContainerPattern {
    shape: Shape,
    runtime: Option<Runtime>,
    holds: Holds,
}

const fn row(shape: Shape, runtime: Option<Runtime>, holds: Holds) -> ContainerPattern {
    ContainerPattern {
        shape,
        runtime,
        holds,
    }
}

const fn under(parent: &'static str, id: IdRule) -> Shape {
    Shape::Under {
        parent,
        grandparent: None,
        id,
    }
}

const CRIO: Option<Runtime> = Some(Runtime::Crio);
const CONTAINERD: Option<Runtime> = Some(Runtime::Containerd);
const DOCKER: Option<Runtime> = Some(Runtime::Docker);
const PODMAN: Option<Runtime> = Some(Runtime::Podman);
const UNKNOWN: Option<Runtime> = None;
use Holds::{Container, Monitor, Sandbox};

/// Ordered: the first row that matches a component wins. Sources for every row are listed in
/// `docs/attribution.md`.
const CONTAINER_PATTERNS: &[ContainerPattern] = &[
    // systemd units (and their literal cgroupfs twins), by the cgroupsPath prefix each
    // engine passes (or the unit name it asks systemd for).
    row(Shape::Unit("crio-conmon"), CRIO, Monitor),
    row(Shape::Unit("crio"), CRIO, Container),
    row(Shape::Unit("cri-containerd"), CONTAINERD, Container),
    row(Shape::Unit("docker"), DOCKER, Container),
    row(Shape::Unit("libpod-conmon"), PODMAN, Monitor),
    row(Shape::Unit("libpod"), PODMAN, Container),
    row(Shape::Unit("nerdctl"), CONTAINERD, Container),
    // runc / runsc without a cgroupsPath: ":runc:<id>" / ":runsc:<id>" (no engine).
    row(Shape::Unit("runc"), UNKNOWN, Container),
    row(Shape::Unit("runsc"), UNKNOWN, Container),
    // kata runtime-rs overhead cgroup under systemd: "kata-overhead.slice:runtime-rs:<sandbox>".
    row(Shape::Unit("runtime-rs"), UNKNOWN, Sandbox),
    // cgroupfs names chosen by cri-o and podman.
    row(Shape::Dir("crio-conmon-"), CRIO, Monitor),
    row(Shape::Dir("crio-"), CRIO, Container),
    row(Shape::Dir("libpod-payload-"), PODMAN, Container),
    row(Shape::Dir("libpod-"), PODMAN, Container),
    // podman (cgroupfs) puts every conmon in <cgroup parent>/conmon, e.g. /libpod_parent/conmon.
    row(
        Shape::Named {
            name: "conmon",
            parent_suffixes: &[],
        },
        PODMAN,
        Monitor,
    ),
    // podman --cgroups=split moves itself and conmon to <own unit>/runtime.
    row(
        Shape::Named {
            name: "runtime",
            parent_suffixes: &[".service", ".scope"],
        },
        PODMAN,
        Monitor,
    ),
    // kata: the renamed sandbox cgroup and the overhead cgroups.
    row(Shape::Renamed("kata_"), UNKNOWN, Sandbox),
    row(under("kata_overhead", IdRule::Containerd), UNKNOWN, Sandbox),
    row(
        under("kata_sandboxed_pod", IdRule::Containerd),
        UNKNOWN,
        Sandbox,
    ),
    // Engines' cgroupfs parents and containerd namespaces that name their engine.
    row(under("docker", IdRule::Hex64OrScope), DOCKER, Container),
    row(
        Shape::Under {
            parent: "buildkit",
            grandparent: Some("docker"),
            id: IdRule::Containerd,
        },
        DOCKER,
        Container,
    ),
    row(under("moby", IdRule::Hex64), DOCKER, Container),
    row(under("k8s.io", IdRule::Containerd), CONTAINERD, Container),
    row(under("default", IdRule::Containerd), CONTAINERD, Container),
    row(Shape::AnyTriple, UNKNOWN, Container),
    // Anything else with a 64-hex leaf: a container, runtime unknown (containerd's
    // /<namespace>/<id>, the kubelet's cgroupfs /kubepods/<qos>/pod<uid>/<id> for containerd
    // and docker, runc's default <own cgroup>/<id>, docker --cgroup-parent).
    row(Shape::BareHex64, UNKNOWN, Container),
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

/// A matched component.
struct Found<'a> {
    runtime: Option<Runtime>,
    holds: Holds,
    id: Option<&'a str>,
}

/// A component and its surroundings.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    comp: &'a str,
    parent: Option<&'a str>,
    grandparent: Option<&'a str>,
    /// The literal systemd `cgroupsPath` split in three, if the component is one.
    triple: Option<Triple<'a>>,
}

/// `<slice>:<prefix>:<name>`, the systemd cgroupsPath form, as one directory.
#[derive(Clone, Copy, Debug)]
struct Triple<'a> {
    slice: &'a str,
    prefix: &'a str,
    name: &'a str,
}

/// runc splits a systemd cgroupsPath into exactly three parts; kata recognises the form by a
/// slice ending in `.slice` (`resourcecontrol.IsSystemdCgroup`); both are required here.
fn systemd_triple(comp: &str) -> Option<Triple<'_>> {
    let mut parts = comp.split(':');
    let (slice, prefix, name) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || !slice.ends_with(SLICE_SUFFIX) || prefix.is_empty() {
        return None;
    }
    Some(Triple {
        slice,
        prefix,
        name,
    })
}

/// Parses a cgroup path. Accepts a bare path (`/kubepods.slice/...`), a whole
/// `/proc/PID/cgroup` line (`0::/path`, `4:memory:/path`, `1:name=systemd:/path`), a
/// mount-prefixed path (`/sys/fs/cgroup/unified/...`) and the ` (deleted)` suffix of removed
/// cgroups.
pub fn parse_cgroup_path(path: &str) -> CgroupInfo {
    let path = strip_proc_cgroup_prefix(path);
    let path = path.strip_suffix(" (deleted)").unwrap_or(path);
    let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();

    let mut info = CgroupInfo::default();
    let mut in_kubepods = false;
    let mut pod_found = false;
    for (i, &comp) in comps.iter().enumerate() {
        let parent = i.checked_sub(1).and_then(|p| comps.get(p)).copied();
        let grandparent = i.checked_sub(2).and_then(|p| comps.get(p)).copied();
        let triple = systemd_triple(comp);

        // A literal "<pod slice>:<prefix>:<id>" names the pod and the container at once.
        let level_name = triple.map_or(comp, |t| t.slice);
        let level = pod_level(level_name, parent, grandparent, in_kubepods);
        let is_level = level.is_some();
        if let Some(level) = level {
            in_kubepods = true;
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
        }
        if is_level && triple.is_none() {
            continue;
        }

        let ctx = Ctx {
            comp,
            parent,
            grandparent,
            triple,
        };
        if let Some(found) = CONTAINER_PATTERNS
            .iter()
            .find_map(|pat| match_row(pat, ctx))
        {
            let id = found.id.map(str::to_owned);
            info.runtime = found.runtime;
            info.conmon = found.holds == Monitor;
            (info.container_id, info.sandbox_id) = match found.holds {
                Sandbox => (None, id),
                Container | Monitor => (id, None),
            };
        }
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

/// What `pat` says about the component in `ctx`, if it applies.
fn match_row<'a>(pat: &ContainerPattern, ctx: Ctx<'a>) -> Option<Found<'a>> {
    let found = |id: Option<&'a str>| Found {
        runtime: pat.runtime,
        holds: pat.holds,
        id,
    };
    match pat.shape {
        Shape::Unit(prefix) => {
            let id = match ctx.triple {
                Some(t) => (t.prefix == prefix).then_some(t.name)?,
                None => ctx
                    .comp
                    .strip_prefix(prefix)?
                    .strip_prefix('-')?
                    .strip_suffix(SCOPE_SUFFIX)?,
            };
            is_unit_id(id).then(|| found(Some(id)))
        }
        Shape::Dir(prefix) => {
            let id = ctx.comp.strip_prefix(prefix)?;
            is_hex64(id).then(|| found(Some(id)))
        }
        Shape::Named {
            name,
            parent_suffixes,
        } => {
            let parent_ok = parent_suffixes.is_empty()
                || ctx
                    .parent
                    .is_some_and(|p| parent_suffixes.iter().any(|s| p.ends_with(s)));
            (ctx.comp == name && parent_ok).then(|| found(None))
        }
        Shape::Under {
            parent,
            grandparent,
            id: rule,
        } => {
            if ctx.parent != Some(parent) || grandparent.is_some_and(|g| ctx.grandparent != Some(g))
            {
                return None;
            }
            id_by_rule(ctx.comp, rule).map(|id| found(Some(id)))
        }
        Shape::Renamed(prefix) => {
            // The rest is matched as the sandbox container's own cgroup name would be.
            let inner = Ctx {
                comp: ctx.comp.strip_prefix(prefix)?,
                triple: None,
                ..ctx
            };
            let (runtime, id) = CONTAINER_PATTERNS
                .iter()
                .filter(|p| p.holds == Container && !matches!(p.shape, Shape::Renamed(_)))
                .find_map(|p| match_row(p, inner))
                .and_then(|f| Some((f.runtime, f.id?)))?;
            Some(Found {
                runtime,
                holds: pat.holds,
                id: Some(id),
            })
        }
        Shape::AnyTriple => ctx
            .triple
            .filter(|t| is_unit_id(t.name))
            .map(|t| found(Some(t.name))),
        Shape::BareHex64 => is_hex64(ctx.comp).then(|| found(Some(ctx.comp))),
    }
}

fn id_by_rule(s: &str, rule: IdRule) -> Option<&str> {
    match rule {
        IdRule::Hex64 => is_hex64(s).then_some(s),
        IdRule::Hex64OrScope => {
            let id = s.strip_suffix(SCOPE_SUFFIX).unwrap_or(s);
            is_hex64(id).then_some(id)
        }
        IdRule::Containerd => is_containerd_id(s).then_some(s),
    }
}

/// The id part of a systemd unit (or of a literal cgroupsPath): letters and digits (real ones
/// are 64 hex; systemd would escape anything else).
fn is_unit_id(s: &str) -> bool {
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
