//! Outside facts the engine consults: cgroup id -> cgroup path.
//!
//! Live, they come from the cgroup2 filesystem; in replay, from the answers recorded in the
//! trace, so that replay never looks at the live system.
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Answers the engine's questions about the outside world.
pub trait Facts {
    /// The cgroup v2 path (relative to the cgroup2 root, starting with `/`) of a cgroup id;
    /// `pid` is a process that was in it when the event happened (a hint for live lookups).
    fn cgroup_path(&mut self, cgroup_id: u64, pid: u32) -> Option<String>;
}

/// Where cgroup2 is mounted: `/sys/fs/cgroup` on unified hosts, `/sys/fs/cgroup/unified` on
/// hybrid ones (from /proc/self/mountinfo).
pub fn cgroup2_root() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    info.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        pre.split_whitespace().nth(4).map(PathBuf::from)
    })
}

/// Resolves cgroup ids, cached: first from the process's own /proc/PID/cgroup (checked against
/// the directory's inode), else by walking the cgroup2 tree. An id that stays unknown is not
/// looked up again for `negative_ttl`, so a storm of events from a removed cgroup costs one walk.
pub struct LiveFacts {
    root: Option<PathBuf>,
    cache: HashMap<u64, String>,
    misses: HashMap<u64, std::time::Instant>,
    negative_ttl: std::time::Duration,
    pub walks: u64,
}

impl LiveFacts {
    pub fn new() -> Self {
        let mut f = Self {
            root: cgroup2_root(),
            cache: HashMap::new(),
            misses: HashMap::new(),
            negative_ttl: std::time::Duration::from_millis(500),
            walks: 0,
        };
        f.walk();
        f
    }

    pub fn root(&self) -> Option<&Path> {
        self.root.as_deref()
    }

    fn walk(&mut self) {
        let Some(root) = self.root.clone() else {
            return;
        };
        self.walks += 1;
        let mut stack = vec![root.clone()];
        while let Some(dir) = stack.pop() {
            let Ok(meta) = std::fs::metadata(&dir) else {
                continue;
            };
            let rel = dir
                .strip_prefix(&root)
                .map(|r| format!("/{}", r.display()))
                .unwrap_or_else(|_| "/".to_string());
            self.cache.insert(meta.ino(), rel);
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

    /// Records a path learnt elsewhere (e.g. from /proc/PID/cgroup).
    pub fn learn(&mut self, cgroup_id: u64, path: String) {
        self.cache.insert(cgroup_id, path);
    }
}

impl Default for LiveFacts {
    fn default() -> Self {
        Self::new()
    }
}

impl LiveFacts {
    /// The process's cgroup2 path, if that directory is the cgroup id asked about.
    fn lookup_proc(&self, cgroup_id: u64, pid: u32) -> Option<String> {
        let root = self.root.as_ref()?;
        let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
        let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
        let ino = std::fs::metadata(root.join(path.trim_start_matches('/')))
            .ok()?
            .ino();
        (ino == cgroup_id).then(|| path.to_string())
    }
}

impl Facts for LiveFacts {
    fn cgroup_path(&mut self, cgroup_id: u64, pid: u32) -> Option<String> {
        if let Some(p) = self.cache.get(&cgroup_id) {
            return Some(p.clone());
        }
        if let Some(p) = self.lookup_proc(cgroup_id, pid) {
            self.cache.insert(cgroup_id, p.clone());
            return Some(p);
        }
        if let Some(t) = self.misses.get(&cgroup_id) {
            if t.elapsed() < self.negative_ttl {
                return None;
            }
        }
        self.walk();
        match self.cache.get(&cgroup_id) {
            Some(p) => {
                self.misses.remove(&cgroup_id);
                Some(p.clone())
            }
            None => {
                if self.misses.len() > 4096 {
                    self.misses.clear();
                }
                self.misses.insert(cgroup_id, std::time::Instant::now());
                None
            }
        }
    }
}

/// Facts answered from a fixed table (recorded answers in replay; tests).
#[derive(Default)]
pub struct KnownFacts {
    pub cgroups: HashMap<u64, Option<String>>,
}

impl Facts for KnownFacts {
    fn cgroup_path(&mut self, cgroup_id: u64, _pid: u32) -> Option<String> {
        self.cgroups.get(&cgroup_id).cloned().flatten()
    }
}

/// Wraps live facts and keeps every answer given, in order, for the trace recorder.
pub struct Recording<F> {
    pub inner: F,
    pub answers: Vec<(u64, Option<String>)>,
}

impl<F: Facts> Facts for Recording<F> {
    fn cgroup_path(&mut self, cgroup_id: u64, pid: u32) -> Option<String> {
        let a = self.inner.cgroup_path(cgroup_id, pid);
        self.answers.push((cgroup_id, a.clone()));
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_a_new_cgroup_directory_by_inode() {
        let Some(root) = cgroup2_root() else {
            eprintln!("skipped: no cgroup2 mount");
            return;
        };
        let mut facts = LiveFacts::new();
        assert_eq!(
            facts.cgroup_path(std::fs::metadata(&root).expect("cgroup2 root").ino(), 0),
            Some("/".to_string())
        );
        let name = format!("podtrace-facts-test-{}", std::process::id());
        let dir = root.join(&name);
        if std::fs::create_dir(&dir).is_err() {
            eprintln!("skipped: cannot create a cgroup (not root?)");
            return;
        }
        let ino = std::fs::metadata(&dir).expect("new cgroup").ino();
        let got = facts.cgroup_path(ino, 0);
        let _ = std::fs::remove_dir(&dir);
        assert_eq!(
            got,
            Some(format!("/{name}")),
            "a miss must walk the tree again"
        );
    }
}
