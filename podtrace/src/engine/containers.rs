//! What the engine knows of each container: names, pod, runtime, image, its helper and its
//! init, the pid namespace it owns, and how many live processes are in it.
//!
//! A container with no live process is finished; it is dropped `grace` later (and the
//! oldest finished go first when there are more than `CONTAINERS_MAX`), with its pid
//! namespace and a request to forget its CRI answer.
use std::sync::Arc;

use rustc_hash::FxHashMap as HashMap;

use crate::attribution::{CgroupInfo, Helper, HelperKind, Runtime};
use crate::cri::CriFact;
use crate::output::{ContainerRef, PodRef};

/// At most this many containers are tracked; the oldest finished ones go first.
pub const CONTAINERS_MAX: usize = 16_384;

/// The name the kubelet and cri-o give a pod's sandbox (infra) container.
pub const SANDBOX_NAME: &str = "POD";

/// The containerd namespace dockerd uses.
const DOCKER_NAMESPACE: &str = "moby";
/// The containerd namespace of containerd's CRI plugin (kubelet's containers).
const CRI_NAMESPACE: &str = "k8s.io";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Container {
    pub id: Arc<str>,
    pub name: Option<String>,
    pub runtime: Option<Runtime>,
    pub pod_name: Option<String>,
    pub namespace: Option<String>,
    pub pod_uid: Option<String>,
    pub qos: Option<String>,
    /// From the CRI.
    pub image: Option<String>,
    pub image_id: Option<String>,
    /// The CRI answered for this container.
    pub cri: bool,
    /// The CRI said it has no answer for this container (not found or failed after retries).
    pub cri_unknown: bool,
    /// The pod uid this container is counted under in the registry's pod names.
    pod_counted: Option<String>,
    /// The pod's labels and annotations, from the CRI with `--cri-labels` (for `tree`).
    pub pod_labels: Option<std::collections::BTreeMap<String, String>>,
    pub pod_annotations: Option<std::collections::BTreeMap<String, String>>,
    /// containerd namespace (shim `-namespace`).
    pub ctr_namespace: Option<String>,
    /// conmon / shim host pid.
    pub helper_pid: Option<u32>,
    /// Host pid of the container's init.
    pub init_pid: Option<u32>,
    /// An init was seen (a later child of the helper, such as conmon's exit command, is not one).
    pub had_init: bool,
    /// The pid namespace its init made.
    pub pidns: Option<u32>,
    pub cgroup: Option<String>,
    /// Live processes in it.
    pub processes: u32,
    /// Set when its last live process left.
    pub finished_ns: Option<u64>,
    /// Execs of its processes while it has been tracked (a view's exec rate is the
    /// difference between two looks).
    pub execs: u64,
    /// When the engine first heard of it (its events may be held until then + the bound).
    pub first_seen_ns: u64,
    /// What events carry, built once per change (names and pod change rarely): dropped by
    /// whatever changes a field it is made of.
    refs: Option<(Arc<ContainerRef>, Option<Arc<PodRef>>)>,
}

impl Container {
    /// A kubelet container (a pod uid from its cgroup or its monitor's argv, cri-o's monitor,
    /// or containerd's CRI namespace) whose names and image the CRI has not given yet, nor
    /// said it has none: its events wait for them.
    pub fn awaits_cri(&self) -> bool {
        let kubelet = self.pod_uid.is_some()
            || self.runtime == Some(Runtime::Crio)
            || self.ctr_namespace.as_deref() == Some(CRI_NAMESPACE);
        kubelet && !self.cri && !self.cri_unknown
    }

    pub fn reference(&self) -> ContainerRef {
        ContainerRef {
            id: self.id.to_string(),
            name: self.name.clone(),
            runtime: self.runtime,
            image: self.image.clone(),
            image_id: self.image_id.clone(),
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

/// Who a pid namespace belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PidnsOwner {
    /// The namespace a container's init made.
    Container(Arc<str>),
    /// Shared by the containers of a pod (`shareProcessNamespace`): the first container
    /// seen in it, whose pod every process in it is in.
    Pod(Arc<str>),
}

/// What the engine asks of the outside world (the pipeline hands these to the CRI service
/// when there is one; replay drops them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// A container id seen for the first time.
    CriLookup(Arc<str>),
    /// A container was dropped: its CRI answer is no longer needed.
    CriForget(Arc<str>),
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryStats {
    /// CRI answers that changed a pod or container name the argv had given.
    pub cri_disagreements: u64,
    pub cri_answers: u64,
}

/// A pod's names, kept by its uid for all its containers (a second container is named by
/// its pod at once), while any container of it is tracked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct PodNames {
    name: String,
    namespace: String,
    /// Tracked containers with this pod uid.
    containers: u32,
}

#[derive(Default)]
pub struct Registry {
    by_id: HashMap<Arc<str>, Container>,
    by_pidns: HashMap<u32, PidnsOwner>,
    /// Pod names by pod uid.
    pods: HashMap<String, PodNames>,
    last_evict_ns: u64,
    requests: Vec<Request>,
    pub stats: RegistryStats,
}

/// Counts `c` under its pod uid (once), and fills the pod names it lacks from what another
/// container of the pod said.
fn join_pod(pods: &mut HashMap<String, PodNames>, c: &mut Container) {
    let Some(uid) = c.pod_uid.clone() else { return };
    if c.pod_counted.as_deref() != Some(uid.as_str()) {
        leave_pod(pods, c);
        if let Some(p) = pods.get_mut(&uid) {
            p.containers += 1;
        } else {
            pods.insert(
                uid.clone(),
                PodNames {
                    containers: 1,
                    ..PodNames::default()
                },
            );
        }
        c.pod_counted = Some(uid.clone());
    }
    if c.pod_name.is_none() && c.namespace.is_none() {
        if let Some(p) = pods.get(&uid).filter(|p| !p.name.is_empty()) {
            c.pod_name = Some(p.name.clone());
            c.namespace = Some(p.namespace.clone());
            c.refs = None;
        }
    }
}

/// Uncounts `c` from its pod; the pod's names go with its last container.
fn leave_pod(pods: &mut HashMap<String, PodNames>, c: &mut Container) {
    let Some(uid) = c.pod_counted.take() else {
        return;
    };
    if let Some(p) = pods.get_mut(&uid) {
        p.containers = p.containers.saturating_sub(1);
        if p.containers == 0 {
            pods.remove(&uid);
        }
    }
}

/// What `c` says of its pod's names (the CRI's or conmon's word), for its other containers.
fn teach_pod(pods: &mut HashMap<String, PodNames>, c: &Container) {
    let (Some(uid), Some(name), Some(ns)) = (&c.pod_uid, &c.pod_name, &c.namespace) else {
        return;
    };
    if let Some(p) = pods.get_mut(uid) {
        if p.name != *name || p.namespace != *ns {
            p.name.clone_from(name);
            p.namespace.clone_from(ns);
        }
    }
}

/// Sets `slot` to the CRI's `value`, counting a disagreement with what was there.
fn cri_wins(slot: &mut Option<String>, value: &str, disagreements: &mut u64) {
    if slot.as_deref().is_some_and(|v| v != value) {
        *disagreements += 1;
    }
    if slot.as_deref() != Some(value) {
        *slot = Some(value.to_string());
    }
}

/// A pod's names kept by uid, as segment state has them: (uid, name, namespace, containers).
pub type PodNamesState = (String, String, String, u32);

impl Container {
    /// A container with nothing known but its id (segment state fills in the rest).
    pub(super) fn blank(id: Arc<str>) -> Self {
        Self {
            id,
            ..Self::default()
        }
    }

    /// The pod uid it is counted under in the registry's pod names (segment state).
    pub(super) fn pod_counted(&self) -> Option<&str> {
        self.pod_counted.as_deref()
    }

    pub(super) fn set_pod_counted(&mut self, uid: Option<String>) {
        self.pod_counted = uid;
    }
}

/// The registry as segment state: containers, pid namespace owners, pod names, and when
/// containers were last evicted.
pub(super) type RegistryState<'a> = (
    Vec<&'a Container>,
    Vec<(u32, &'a PidnsOwner)>,
    Vec<PodNamesState>,
    u64,
);

impl Registry {
    /// Everything the registry holds, in a fixed order (segment state): containers by id, pid
    /// namespaces by inode, pod names by uid, and when containers were last evicted.
    pub(super) fn state(&self) -> RegistryState<'_> {
        let mut containers: Vec<&Container> = self.by_id.values().collect();
        containers.sort_unstable_by(|a, b| a.id.cmp(&b.id));
        let mut pidns: Vec<(u32, &PidnsOwner)> =
            self.by_pidns.iter().map(|(k, v)| (*k, v)).collect();
        pidns.sort_unstable_by_key(|(k, _)| *k);
        let mut pods: Vec<PodNamesState> = self
            .pods
            .iter()
            .map(|(uid, p)| {
                (
                    uid.clone(),
                    p.name.clone(),
                    p.namespace.clone(),
                    p.containers,
                )
            })
            .collect();
        pods.sort_unstable();
        (containers, pidns, pods, self.last_evict_ns)
    }

    /// Puts back a container of segment state as it was (nothing asked, nothing counted).
    pub(super) fn restore_container(&mut self, mut c: Container) {
        c.refs = None;
        self.by_id.insert(c.id.clone(), c);
    }

    pub(super) fn restore_pidns(&mut self, ns: u32, owner: PidnsOwner) {
        self.by_pidns.insert(ns, owner);
    }

    pub(super) fn restore_pod(&mut self, (uid, name, namespace, containers): PodNamesState) {
        self.pods.insert(
            uid,
            PodNames {
                name,
                namespace,
                containers,
            },
        );
    }

    pub(super) fn restore_last_evict(&mut self, ns: u64) {
        self.last_evict_ns = ns;
    }

    pub fn get(&self, id: &str) -> Option<&Container> {
        self.by_id.get(id)
    }

    /// The container's shared id (what processes point at).
    pub fn id(&self, id: &str) -> Option<Arc<str>> {
        self.by_id.get(id).map(|c| c.id.clone())
    }

    /// The record to change. A new container starts finished at `now_ns` (no process yet)
    /// and is asked of the CRI. What events carry of it is cached: a change to a field they
    /// carry goes through the `learn_*` methods, which drop the cache (`refs` checks that in
    /// debug builds).
    pub fn entry(&mut self, id: &str, now_ns: u64) -> &mut Container {
        self.entry_asking(id, now_ns, true)
    }

    fn entry_asking(&mut self, id: &str, now_ns: u64, ask_cri: bool) -> &mut Container {
        // Called for most events: a known id is looked up by the key it has (no new `Arc`).
        let key = match self.by_id.get_key_value(id) {
            Some((k, _)) => k.clone(),
            None => {
                if self.by_id.len() >= CONTAINERS_MAX {
                    self.evict_one();
                }
                Arc::from(id)
            }
        };
        let requests = &mut self.requests;
        self.by_id.entry(key).or_insert_with_key(|key| {
            if ask_cri {
                requests.push(Request::CriLookup(key.clone()));
            }
            Container {
                id: key.clone(),
                finished_ns: Some(now_ns),
                first_seen_ns: now_ns,
                ..Container::default()
            }
        })
    }

    /// Container and pod as events carry them, built once per change of what they are made
    /// of (most events of a container carry the same two `Arc`s).
    pub fn refs(&mut self, id: &str) -> (Option<Arc<ContainerRef>>, Option<Arc<PodRef>>) {
        let Some(c) = self.by_id.get_mut(id) else {
            return (None, None);
        };
        #[cfg(debug_assertions)]
        if let Some((cref, pod)) = &c.refs {
            debug_assert!(
                **cref == c.reference() && pod.as_deref() == c.pod().as_ref(),
                "container {id}: a field events carry changed without dropping the cache"
            );
        }
        if c.refs.is_none() {
            c.refs = Some((Arc::new(c.reference()), c.pod().map(Arc::new)));
        }
        match &c.refs {
            Some((cref, pod)) => (Some(cref.clone()), pod.clone()),
            None => (None, None),
        }
    }

    /// One more exec in the container.
    pub fn count_exec(&mut self, id: &str) {
        if let Some(c) = self.by_id.get_mut(id) {
            c.execs += 1;
        }
    }

    /// A live process joined the container.
    pub fn attach(&mut self, id: &str) {
        if let Some(c) = self.by_id.get_mut(id) {
            c.processes += 1;
            c.finished_ns = None;
        }
    }

    /// A live process left the container (moved, exited or was found gone).
    pub fn detach(&mut self, id: &str, now_ns: u64) {
        if let Some(c) = self.by_id.get_mut(id) {
            c.processes = c.processes.saturating_sub(1);
            if c.processes == 0 {
                c.finished_ns = Some(now_ns);
            }
        }
    }

    /// Makes room: the container finished longest ago, else the one with the fewest
    /// processes; a tie goes to the least id (never to the hash map's order, which a new
    /// version of the hasher may change, and a replay with it).
    fn evict_one(&mut self) {
        let victim = self
            .by_id
            .values()
            .filter_map(|c| c.finished_ns.map(|t| (t, &c.id)))
            .min()
            .or_else(|| {
                self.by_id
                    .values()
                    .map(|c| (u64::from(c.processes), &c.id))
                    .min()
            })
            .map(|(_, id)| id.clone());
        if let Some(id) = victim {
            self.remove(&id);
        }
    }

    pub fn remove(&mut self, id: &str) {
        if let Some(mut c) = self.by_id.remove(id) {
            leave_pod(&mut self.pods, &mut c);
            if let Some(ns) = c.pidns {
                let owned = match self.by_pidns.get(&ns) {
                    Some(PidnsOwner::Container(k)) | Some(PidnsOwner::Pod(k)) => **k == *id,
                    None => false,
                };
                if owned {
                    self.by_pidns.remove(&ns);
                }
            }
            self.requests.push(Request::CriForget(c.id));
        }
    }

    /// What a runtime helper's argv says about its container.
    pub fn learn_helper(&mut self, h: &Helper, pid: u32, now_ns: u64) -> Option<Arc<str>> {
        let id = h.container_id.as_deref()?;
        self.entry(id, now_ns);
        // The container and the pod names are different fields: borrowed apart.
        let (by_id, pods) = (&mut self.by_id, &mut self.pods);
        let c = by_id.get_mut(id)?;
        // Names and runtime may change (rare: once per helper exec).
        c.refs = None;
        if let Some(k) = &h.k8s {
            // The CRI, when it answered, has the last word.
            if !c.cri {
                c.name = Some(k.container.clone());
                c.pod_name = Some(k.pod.clone());
                c.namespace = Some(k.namespace.clone());
            }
            c.pod_uid.get_or_insert_with(|| k.pod_uid.clone());
            join_pod(pods, c);
            teach_pod(pods, c);
        } else if let Some(n) = &h.name {
            c.name.get_or_insert_with(|| n.clone());
        }
        // A new monitor for a container whose init has gone: a restart under the same id
        // (podman, docker); its next init is looked for afresh.
        if matches!(h.kind, HelperKind::Conmon | HelperKind::Shim)
            && c.helper_pid != Some(pid)
            && c.init_pid.is_none()
        {
            c.had_init = false;
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
                // dockerd runs its containers through containerd in the `moby` namespace.
                c.runtime = Some(if h.namespace.as_deref() == Some(DOCKER_NAMESPACE) {
                    Runtime::Docker
                } else {
                    Runtime::Containerd
                });
                c.ctr_namespace = h.namespace.clone();
                // `ctr run IMAGE NAME` names a container by its id; in the CRI's namespace
                // the id is generated and the name is the CRI's to say.
                if !c.cri && h.namespace.as_deref() != Some(CRI_NAMESPACE) {
                    c.name.get_or_insert_with(|| id.to_string());
                }
            }
            HelperKind::Runtime => {}
        }
        Some(c.id.clone())
    }

    /// What a container cgroup path says (runtime, pod uid, QoS); returns the container's
    /// shared id.
    pub fn learn_cgroup(
        &mut self,
        id: &str,
        info: &CgroupInfo,
        path: &str,
        now_ns: u64,
    ) -> Arc<str> {
        if !self.by_id.contains_key(id) {
            self.entry(id, now_ns);
        }
        // The container and the pod names are different fields: borrowed apart.
        let (by_id, pods) = (&mut self.by_id, &mut self.pods);
        let Some(c) = by_id.get_mut(id) else {
            return Arc::from(id);
        };
        // Called for each event of a process in a container, and it mostly says again what
        // is known: only a change is written (and drops what events carry).
        if info.runtime.is_some() && c.runtime != info.runtime {
            // The path is the runtime's own word; argv-based guesses give way to it.
            c.runtime = info.runtime;
            c.refs = None;
        }
        if info.pod_uid.is_some() && c.pod_uid != info.pod_uid {
            c.pod_uid.clone_from(&info.pod_uid);
            c.refs = None;
            join_pod(pods, c);
        }
        if info.qos.is_some() && c.qos != info.qos {
            c.qos.clone_from(&info.qos);
        }
        if !info.conmon {
            c.cgroup.get_or_insert_with(|| path.to_string());
        }
        c.id.clone()
    }

    /// What the CRI said: names and image; where argv said otherwise, the CRI wins (counted).
    pub fn learn_cri(&mut self, f: &CriFact, now_ns: u64) {
        let mut disagreements = 0;
        // The answer itself: nothing more to ask.
        self.entry_asking(&f.id, now_ns, false);
        let (by_id, pods) = (&mut self.by_id, &mut self.pods);
        let Some(c) = by_id.get_mut(f.id.as_str()) else {
            return;
        };
        c.refs = None;
        c.cri = true;
        if f.sandbox {
            cri_wins(&mut c.name, SANDBOX_NAME, &mut disagreements);
        } else if let Some(n) = &f.name {
            cri_wins(&mut c.name, n, &mut disagreements);
        }
        if f.image.is_some() {
            c.image.clone_from(&f.image);
        }
        if f.image_id.is_some() {
            c.image_id.clone_from(&f.image_id);
        }
        if let Some(p) = &f.pod {
            c.pod_labels.clone_from(&p.labels);
            c.pod_annotations.clone_from(&p.annotations);
            cri_wins(&mut c.pod_name, &p.name, &mut disagreements);
            cri_wins(&mut c.namespace, &p.namespace, &mut disagreements);
            cri_wins(&mut c.pod_uid, &p.uid, &mut disagreements);
            join_pod(pods, c);
            teach_pod(pods, c);
        }
        self.stats.cri_disagreements += disagreements;
        self.stats.cri_answers += 1;
    }

    /// The CRI has no answer for `id`: nothing more will come for it.
    pub fn learn_cri_unknown(&mut self, id: &str) {
        if let Some(c) = self.by_id.get_mut(id) {
            c.cri_unknown = true;
        }
    }

    /// Makes `pid` the container's init, in pid namespace `pidns` when that is not the host's.
    pub fn set_init(&mut self, id: &str, pid: u32, pidns: Option<u32>, now_ns: u64) {
        let c = self.entry(id, now_ns);
        c.init_pid = Some(pid);
        c.had_init = true;
        let key = c.id.clone();
        let Some(ns) = pidns else { return };
        // A restart under the same id (podman, docker) makes a new pid namespace: it is the
        // container's now, and the old one no longer names it.
        let old = c.pidns.replace(ns).filter(|old| *old != ns);
        if let Some(old) = old {
            if matches!(self.by_pidns.get(&old), Some(PidnsOwner::Container(k)) if **k == *id) {
                self.by_pidns.remove(&old);
            }
        }
        let owner = match self.by_pidns.get(&ns) {
            None => PidnsOwner::Container(key),
            Some(PidnsOwner::Container(other)) if **other != *id => PidnsOwner::Pod(other.clone()),
            Some(o) => o.clone(),
        };
        self.by_pidns.insert(ns, owner);
    }

    /// Who owns this pid namespace.
    pub fn by_pidns(&self, pidns: u32) -> Option<&PidnsOwner> {
        self.by_pidns.get(&pidns)
    }

    /// A container whose containerd shim matches a `/<namespace>/<id>` cgroup path.
    pub fn by_shim_path(&self, path: &str) -> Option<Arc<str>> {
        let mut parts = path.trim_start_matches('/').splitn(2, '/');
        let (ns, id) = (parts.next()?, parts.next()?);
        let c = self.by_id.get(id)?;
        (c.ctr_namespace.as_deref() == Some(ns)).then(|| c.id.clone())
    }

    /// Notes that a helper or init exited.
    pub fn process_exited(&mut self, id: &str, pid: u32) {
        if let Some(c) = self.by_id.get_mut(id) {
            if c.helper_pid == Some(pid) {
                c.helper_pid = None;
            }
            if c.init_pid == Some(pid) {
                c.init_pid = None;
            }
        }
    }

    /// A live process of the container exited (`process_exited` and `detach` in one
    /// lookup); true if it was the container's helper.
    pub fn member_exited(&mut self, id: &str, pid: u32, now_ns: u64) -> bool {
        let Some(c) = self.by_id.get_mut(id) else {
            return false;
        };
        let was_helper = c.helper_pid == Some(pid);
        if was_helper {
            c.helper_pid = None;
        }
        if c.init_pid == Some(pid) {
            c.init_pid = None;
        }
        c.processes = c.processes.saturating_sub(1);
        if c.processes == 0 {
            c.finished_ns = Some(now_ns);
        }
        was_helper
    }

    /// Drops containers finished for longer than `grace_ns` (looked at once a second), in id
    /// order (the CRI service is told to forget them in that order).
    pub fn evict(&mut self, now_ns: u64, grace_ns: u64) {
        if now_ns.saturating_sub(self.last_evict_ns) < 1_000_000_000 {
            return;
        }
        self.last_evict_ns = now_ns;
        let mut old: Vec<Arc<str>> = self
            .by_id
            .values()
            .filter(|c| {
                c.finished_ns
                    .map(|t| now_ns.saturating_sub(t) > grace_ns)
                    .unwrap_or(false)
            })
            .map(|c| c.id.clone())
            .collect();
        old.sort_unstable();
        for id in old {
            self.remove(&id);
        }
    }

    /// What the engine asks of the outside world since the last call.
    pub fn take_requests(&mut self) -> Vec<Request> {
        std::mem::take(&mut self.requests)
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

    pub fn pidns_len(&self) -> usize {
        self.by_pidns.len()
    }

    /// Pods whose names are kept by uid.
    pub fn pods_len(&self) -> usize {
        self.pods.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forgotten(r: &mut Registry) -> Vec<String> {
        r.take_requests()
            .into_iter()
            .filter_map(|q| match q {
                Request::CriForget(id) => Some(id.to_string()),
                Request::CriLookup(_) => None,
            })
            .collect()
    }

    /// At the bound, the container that goes is the oldest finished one, and among those
    /// finished at the same time the least id: not whichever the hash map yields first.
    #[test]
    fn eviction_at_the_bound_breaks_ties_by_id() {
        let mut r = Registry::default();
        // All finished at the same time (none ever had a process), made in descending order.
        for i in (0..CONTAINERS_MAX).rev() {
            r.entry(&format!("{i:08}"), 5);
        }
        r.take_requests();
        r.entry("new", 6);
        assert_eq!(forgotten(&mut r), ["00000000"]);
        assert!(r.get("00000000").is_none() && r.get("00000001").is_some());
        r.entry("newer", 7);
        assert_eq!(forgotten(&mut r), ["00000001"]);
    }

    /// Containers past their grace go in id order (the CRI service is told in that order).
    #[test]
    fn eviction_after_the_grace_is_in_id_order() {
        let mut r = Registry::default();
        let ids: Vec<String> = (0..300u32)
            .map(|i| format!("{:08}", (i * 7919) % 1000))
            .collect();
        for id in &ids {
            r.entry(id, 5);
        }
        r.take_requests();
        r.evict(5 + 20_000_000_000, 10_000_000_000);
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(forgotten(&mut r), sorted);
        assert!(r.is_empty());
    }
}
