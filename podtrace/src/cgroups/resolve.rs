//! Live answers to "which path is cgroup id N of hierarchy H": straight from the kernel by
//! the id (cgroupfs opens a directory by a file handle made of its id), else the process's
//! own `/proc/PID/cgroup` line (checked against the directory's inode), else a walk of the
//! hierarchy's mount. Only `run` uses this; what it answers is recorded in the trace, and the
//! engine keeps the answers it still needs, so nothing here grows with the cgroups a node has
//! ever had: the walk index is replaced by each walk.
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{CgroupSetup, Hierarchy, Mounts, V1Mount};

/// A miss walks the hierarchy at most this often; in between it answers "unknown" and the
/// engine asks again later.
const WALK_EVERY: Duration = Duration::from_millis(100);

/// The hierarchies' mounts and how to read other processes' cgroup paths (immutable, shared
/// by the /proc snapshot's threads and the resolver).
#[derive(Clone, Debug, Default)]
pub struct CgroupView {
    v2_root: Option<PathBuf>,
    v1: Option<V1Mount>,
    /// Our own cgroup's real path per hierarchy, when podtrace runs in a private cgroup
    /// namespace (where /proc shows other processes' cgroups as `/../…`).
    own_real_v2: Option<String>,
    own_real_v1: Option<String>,
}

impl CgroupView {
    pub fn new(mounts: &Mounts, setup: &CgroupSetup, v1: Option<V1Mount>) -> Self {
        let mut view = Self {
            v2_root: if setup.v2 { mounts.v2.clone() } else { None },
            v1,
            own_real_v2: None,
            own_real_v1: None,
        };
        if private_cgroup_namespace() {
            view.own_real_v2 = view.v2_root.as_deref().and_then(own_real_cgroup);
            view.own_real_v1 = view.v1.as_ref().and_then(|m| own_real_cgroup(&m.path));
        }
        view
    }

    pub fn root(&self, h: Hierarchy) -> Option<&Path> {
        match h {
            Hierarchy::V2 => self.v2_root.as_deref(),
            Hierarchy::V1 => self.v1.as_ref().map(|m| m.path.as_path()),
        }
    }

    /// The line of `/proc/PID/cgroup` for `h`: `0::/path` (v2) or `N:<controllers>:/path`.
    pub fn proc_line<'t>(&self, h: Hierarchy, text: &'t str) -> Option<&'t str> {
        self.root(h)?;
        text.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_id, ctrls, path) = (f.next()?, f.next()?, f.next()?);
            let hit = match h {
                Hierarchy::V2 => ctrls.is_empty() && l.starts_with("0::"),
                Hierarchy::V1 => self.v1.as_ref().is_some_and(|m| m.controllers == ctrls),
            };
            hit.then_some(path)
        })
    }

    /// A path as /proc shows it, made absolute in the hierarchy (see `resolve_namespaced`);
    /// None when it is namespaced and our own place is unknown.
    pub fn absolute(&self, h: Hierarchy, path: &str) -> Option<String> {
        if !path.starts_with("/..") {
            return Some(path.to_string());
        }
        let own = match h {
            Hierarchy::V2 => self.own_real_v2.as_deref(),
            Hierarchy::V1 => self.own_real_v1.as_deref(),
        }?;
        Some(resolve_namespaced(path, own))
    }

    /// The inode of a cgroup directory (its id), 0 if it does not exist.
    pub fn inode(&self, h: Hierarchy, path: &str) -> u64 {
        self.root(h)
            .and_then(|r| std::fs::metadata(r.join(path.trim_start_matches('/'))).ok())
            .map(|m| m.ino())
            .unwrap_or(0)
    }
}

/// Whether podtrace's cgroup namespace may not be the host's (PID 1's). Where PID 1's
/// namespace cannot be read, it may be.
fn private_cgroup_namespace() -> bool {
    let ino = |p: &str| std::fs::metadata(p).map(|m| m.ino()).ok();
    match (ino("/proc/self/ns/cgroup"), ino("/proc/1/ns/cgroup")) {
        (Some(a), Some(b)) => a != b,
        _ => true,
    }
}

/// `FILEID_KERNFS` (include/linux/exportfs.h): a kernfs node's file handle is its 64-bit id.
const FILEID_KERNFS: libc::c_int = 0xfe;

/// The path of cgroup `id` under the mount `root` (opened as `root_fd`), from the kernel by
/// the id: None when the cgroup is gone, or the kernel refuses (kernels or mounts without
/// export support, no CAP_DAC_READ_SEARCH).
fn by_handle(root_fd: &OwnedFd, root: &Path, id: u64) -> Option<String> {
    #[repr(C)]
    struct Handle {
        handle_bytes: libc::c_uint,
        handle_type: libc::c_int,
        id: u64,
    }
    let mut h = Handle {
        handle_bytes: 8,
        handle_type: FILEID_KERNFS,
        id,
    };
    // SAFETY: a valid directory fd, a file_handle header followed by its 8 bytes, and flags;
    // the returned fd (if any) is owned below.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            root_fd.as_raw_fd(),
            &mut h as *mut Handle,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    let fd = i32::try_from(fd).ok().filter(|&fd| fd >= 0)?;
    // SAFETY: the kernel just returned this fd to us.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let link = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).ok()?;
    let link = link.to_str()?;
    let link = link.strip_suffix(" (deleted)").unwrap_or(link);
    let rel = Path::new(link).strip_prefix(root).ok()?;
    Some(format!("/{}", rel.display()))
}

pub struct Resolver {
    view: CgroupView,
    /// The hierarchies' mounts, open (v2, v1), for lookups by handle.
    roots: [Option<OwnedFd>; 2],
    index: HashMap<(Hierarchy, u64), String>,
    last_walk: HashMap<Hierarchy, Instant>,
    pub walks: u64,
}

fn slot(h: Hierarchy) -> usize {
    match h {
        Hierarchy::V2 => 0,
        Hierarchy::V1 => 1,
    }
}

impl Resolver {
    pub fn new(view: CgroupView) -> Self {
        let open = |h| {
            view.root(h)
                .and_then(|r| std::fs::File::open(r).ok())
                .map(OwnedFd::from)
        };
        Self {
            roots: [open(Hierarchy::V2), open(Hierarchy::V1)],
            view,
            index: HashMap::new(),
            last_walk: HashMap::new(),
            walks: 0,
        }
    }

    pub fn view(&self) -> &CgroupView {
        &self.view
    }

    /// The path of cgroup `id` in `h`; `pid` is a process that was in it (a hint).
    pub fn path(&mut self, h: Hierarchy, id: u64, pid: u32) -> Option<String> {
        let root = self.view.root(h)?;
        if let Some(p) = self.roots[slot(h)]
            .as_ref()
            .and_then(|fd| by_handle(fd, root, id))
        {
            return Some(p);
        }
        if let Some(p) = self.via_proc(h, id, pid) {
            return Some(p);
        }
        if let Some(p) = self.index.get(&(h, id)) {
            return Some(p.clone());
        }
        let recent = self
            .last_walk
            .get(&h)
            .is_some_and(|t| t.elapsed() < WALK_EVERY);
        if recent {
            return None;
        }
        self.walk(h);
        self.index.get(&(h, id)).cloned()
    }

    fn via_proc(&mut self, h: Hierarchy, id: u64, pid: u32) -> Option<String> {
        if pid == 0 {
            return None;
        }
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let raw = self.view.proc_line(h, &text)?;
        let path = self.view.absolute(h, raw)?;
        (self.view.inode(h, &path) == id).then_some(path)
    }

    /// Indexes every directory of `h` by inode, replacing the previous index of `h`.
    fn walk(&mut self, h: Hierarchy) {
        let Some(root) = self.view.root(h).map(Path::to_path_buf) else {
            return;
        };
        self.walks += 1;
        self.last_walk.insert(h, Instant::now());
        self.index.retain(|(hh, _), _| *hh != h);
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = dir
                .strip_prefix(&root)
                .map(|r| format!("/{}", r.display()))
                .unwrap_or_else(|_| "/".to_string());
            self.index.insert((h, meta.ino()), rel);
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                    stack.push(e.path());
                }
            }
        }
    }

    /// Entries held now (for the memory bound tests and metrics).
    pub fn index_len(&self) -> usize {
        self.index.len()
    }
}

/// Joins a cgroup path relative to our own cgroup namespace (`/../../kubepods…`, what
/// /proc/PID/cgroup shows when podtrace runs in a private cgroup namespace) onto our own
/// cgroup's real path, and removes the `..`s.
pub fn resolve_namespaced(path: &str, own_real: &str) -> String {
    if !path.starts_with("/..") {
        return path.to_string();
    }
    let mut parts: Vec<&str> = own_real.split('/').filter(|p| !p.is_empty()).collect();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        match part {
            ".." => {
                parts.pop();
            }
            "." => {}
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Our own cgroup's path from a hierarchy's root: the directory whose cgroup.procs lists us.
/// Needed only in a private cgroup namespace, where /proc/self/cgroup says "/". The root's
/// own cgroup.procs is never read (it lists every process not in a child cgroup: with
/// 10,000 processes on the node, that one read was most of this walk): when no directory
/// below it lists us, we are in the root.
fn own_real_cgroup(root: &Path) -> Option<String> {
    let me = std::process::id().to_string();
    let subdirs = |dir: &Path| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .map(|e| e.path())
            .collect()
    };
    let mut stack = subdirs(root);
    while let Some(dir) = stack.pop() {
        if let Ok(procs) = std::fs::read_to_string(dir.join("cgroup.procs")) {
            if procs.lines().any(|l| l == me) {
                let rel = dir.strip_prefix(root).ok()?;
                return Some(format!("/{}", rel.display()));
            }
        }
        stack.extend(subdirs(&dir));
    }
    Some("/".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_relative_to_a_private_cgroup_namespace_are_resolved() {
        let own =
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podA.slice/crio-1.scope";
        assert_eq!(
            resolve_namespaced("/../../kubepods-besteffort-podB.slice/crio-2.scope", own),
            "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podB.slice/crio-2.scope"
        );
        assert_eq!(
            resolve_namespaced("/system.slice/x.service", own),
            "/system.slice/x.service"
        );
        assert_eq!(resolve_namespaced("/../../../../../..", own), "/");
    }

    #[test]
    fn picks_the_line_of_each_hierarchy() {
        let mounts = Mounts {
            v2: Some("/y".into()),
            v1: Vec::new(),
        };
        let setup = CgroupSetup {
            v2: true,
            v1: Some("cpu,cpuacct".into()),
        };
        let r = CgroupView::new(
            &mounts,
            &setup,
            Some(V1Mount {
                controllers: "cpu,cpuacct".into(),
                controller: "cpu".into(),
                path: "/x".into(),
            }),
        );
        let text = "12:pids:/p\n3:cpu,cpuacct:/kubepods/pod1/abc\n1:name=systemd:/s\n0::/\n";
        assert_eq!(r.proc_line(Hierarchy::V1, text), Some("/kubepods/pod1/abc"));
        assert_eq!(r.proc_line(Hierarchy::V2, text), Some("/"));
        assert_eq!(r.proc_line(Hierarchy::V1, "0::/only\n"), None);
    }
}
