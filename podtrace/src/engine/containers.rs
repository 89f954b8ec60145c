//! What the engine knows of each container: names, pod, runtime, its helper and its init.
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use crate::attribution::{CgroupInfo, Helper, HelperKind, Runtime};
use crate::output::{ContainerRef, PodRef};

/// At most this many containers are tracked; the oldest finished ones go first.
pub const CONTAINERS_MAX: usize = 16_384;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Container {
    pub id: Arc<str>,
    pub name: Option<String>,
    pub runtime: Option<Runtime>,
    pub pod_name: Option<String>,
    pub namespace: Option<String>,
    pub pod_uid: Option<String>,
    pub qos: Option<String>,
    /// containerd namespace (shim `-namespace`).
    pub ctr_namespace: Option<String>,
    /// conmon / shim host pid.
    pub helper_pid: Option<u32>,
    /// Host pid of the container's PID 1.
    pub init_pid: Option<u32>,
    /// An init was seen (a later child of the helper, such as conmon's exit command, is not one).
    pub had_init: bool,
    pub pidns: Option<u32>,
    pub cgroup: Option<String>,
    /// Set when both helper and init are gone.
    pub finished_ns: Option<u64>,
    /// What events carry, built once per change (names and pod change rarely).
    refs: Option<(Arc<ContainerRef>, Option<Arc<PodRef>>)>,
}

impl Container {
    pub fn reference(&self) -> ContainerRef {
        ContainerRef {
            id: self.id.to_string(),
            name: self.name.clone(),
            runtime: self.runtime,
        }
    }

    pub fn pod(&self) -> Option<PodRef> {
        if self.pod_name.is_none() && self.namespace.is_none() && self.pod_uid.is_none() {
            return None;
        }
        Some(PodRef {
            name: self.pod_name.clone(),
            namespace: self.namespace.clone(),
            uid: self.pod_uid.clone(),
        })
    }
}

#[derive(Default)]
pub struct Registry {
    by_id: HashMap<Arc<str>, Container>,
    by_pidns: HashMap<u32, Arc<str>>,
    last_evict_ns: u64,
}

impl Registry {
    pub fn get(&self, id: &str) -> Option<&Container> {
        self.by_id.get(id)
    }

    /// The container's shared id (what processes point at).
    pub fn id(&self, id: &str) -> Option<Arc<str>> {
        self.by_id.get(id).map(|c| c.id.clone())
    }

    /// The record to change; changing it rebuilds what events carry.
    pub fn entry(&mut self, id: &str) -> &mut Container {
        if !self.by_id.contains_key(id) && self.by_id.len() >= CONTAINERS_MAX {
            self.evict_one();
        }
        let c = self
            .by_id
            .entry(Arc::from(id))
            .or_insert_with_key(|key| Container {
                id: key.clone(),
                ..Container::default()
            });
        c.refs = None;
        c
    }

    /// Container and pod as events carry them.
    pub fn refs(&mut self, id: &str) -> (Option<Arc<ContainerRef>>, Option<Arc<PodRef>>) {
        let Some(c) = self.by_id.get_mut(id) else {
            return (None, None);
        };
        if c.refs.is_none() {
            c.refs = Some((Arc::new(c.reference()), c.pod().map(Arc::new)));
        }
        match &c.refs {
            Some((cref, pod)) => (Some(cref.clone()), pod.clone()),
            None => (None, None),
        }
    }

    fn evict_one(&mut self) {
        let victim = self
            .by_id
            .values()
            .filter(|c| c.finished_ns.is_some())
            .min_by_key(|c| c.finished_ns)
            .or_else(|| self.by_id.values().next())
            .map(|c| c.id.clone());
        if let Some(id) = victim {
            self.remove(&id);
        }
    }

    pub fn remove(&mut self, id: &str) {
        if let Some(c) = self.by_id.remove(id) {
            if let Some(ns) = c.pidns {
                if self.by_pidns.get(&ns).map(|k| &**k) == Some(id) {
                    self.by_pidns.remove(&ns);
                }
            }
        }
    }

    /// What a runtime helper's argv says about its container.
    pub fn learn_helper(&mut self, h: &Helper, pid: u32) -> Option<Arc<str>> {
        let id = h.container_id.as_deref()?;
        let c = self.entry(id);
        if let Some(k) = &h.k8s {
            c.name = Some(k.container.clone());
            c.pod_name = Some(k.pod.clone());
            c.namespace = Some(k.namespace.clone());
            c.pod_uid = Some(k.pod_uid.clone());
        } else if let Some(n) = &h.name {
            c.name.get_or_insert_with(|| n.clone());
        }
        match h.kind {
            HelperKind::Conmon => {
                c.helper_pid = Some(pid);
                if c.runtime.is_none() {
                    c.runtime = Some(if h.k8s.is_some() {
                        Runtime::Crio
                    } else {
                        Runtime::Podman
                    });
                }
            }
            HelperKind::Shim => {
                c.helper_pid = Some(pid);
                c.runtime = Some(Runtime::Containerd);
                c.ctr_namespace = h.namespace.clone();
                c.name.get_or_insert_with(|| id.to_string());
            }
            HelperKind::Runtime => {}
        }
        Some(c.id.clone())
    }

    /// What a container cgroup path says (runtime, pod uid, QoS).
    pub fn learn_cgroup(&mut self, id: &str, info: &CgroupInfo, path: &str) {
        let c = self.entry(id);
        if info.runtime.is_some() {
            // The path is the runtime's own word; argv-based guesses give way to it.
            c.runtime = info.runtime;
        }
        if info.pod_uid.is_some() {
            c.pod_uid = info.pod_uid.clone();
        }
        if info.qos.is_some() {
            c.qos = info.qos.clone();
        }
        if !info.conmon {
            c.cgroup.get_or_insert_with(|| path.to_string());
        }
    }

    pub fn set_init(&mut self, id: &str, pid: u32, pidns: u32, host_pidns: u32) {
        let c = self.entry(id);
        c.init_pid = Some(pid);
        c.had_init = true;
        c.finished_ns = None;
        if pidns != host_pidns && pidns != 0 && host_pidns != 0 {
            c.pidns = Some(pidns);
            let key = c.id.clone();
            self.by_pidns.insert(pidns, key);
        }
    }

    /// The container whose own pid namespace this is.
    pub fn by_pidns(&self, pidns: u32) -> Option<Arc<str>> {
        self.by_pidns.get(&pidns).cloned()
    }

    /// A container whose containerd shim matches a `/<namespace>/<id>` cgroup path.
    pub fn by_shim_path(&self, path: &str) -> Option<Arc<str>> {
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (ns, id) = (parts.next()?, parts.next()?);
        let c = self.by_id.get(id)?;
        (c.ctr_namespace.as_deref() == Some(ns)).then(|| c.id.clone())
    }

    /// Notes that a helper or init exited; finished containers are dropped later.
    pub fn process_exited(&mut self, id: &str, pid: u32, at_ns: u64) {
        if let Some(c) = self.by_id.get_mut(id) {
            c.refs = None;
            if c.helper_pid == Some(pid) {
                c.helper_pid = None;
            }
            if c.init_pid == Some(pid) {
                c.init_pid = None;
            }
            if c.helper_pid.is_none() && c.init_pid.is_none() {
                c.finished_ns = Some(at_ns);
            }
        }
    }

    /// Drops containers finished for longer than `grace_ns` (looked at once a second).
    pub fn evict(&mut self, now_ns: u64, grace_ns: u64) {
        if now_ns.saturating_sub(self.last_evict_ns) < 1_000_000_000 {
            return;
        }
        self.last_evict_ns = now_ns;
        let old: Vec<Arc<str>> = self
            .by_id
            .values()
            .filter(|c| {
                c.finished_ns
                    .map(|t| now_ns.saturating_sub(t) > grace_ns)
                    .unwrap_or(false)
            })
            .map(|c| c.id.clone())
            .collect();
        for id in old {
            self.remove(&id);
        }
    }

    pub fn all(&self) -> impl Iterator<Item = &Container> {
        self.by_id.values()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}
