//! Which container a process belongs to and what it is to it, in named steps, in order of
//! trust:
//!
//! 1. [`helper`]: a runtime helper's own argv (conmon, a containerd shim, runc/crun);
//! 2. [`cgroup_step`]: the cgroup it is placed in (the runtime's own path);
//! 3. [`pid_namespace`]: the pid namespace a container's init made (or a pod's shared one);
//! 4. [`inherited`]: its container before exec, or its parent's at fork;
//! 5. [`helper_copy`]: a forked copy of a helper stays that helper until it execs;
//! 6. [`init`]: whether it is the container's init.
//!
//! Each step sees what the earlier ones decided and may only fill what is still unknown
//! (except the init step, which decides the role).
use std::sync::Arc;

use super::cgroups::CgroupKey;
use super::process::Proc;
use super::Engine;
use crate::attribution::{parse_helper, CgroupInfo, Helper, HelperKind};
use crate::engine::containers::{PidnsOwner, Registry};
use crate::output::Role;

/// What the steps decide.
#[derive(Default)]
struct Decision {
    container: Option<Arc<str>>,
    pod_of: Option<Arc<str>>,
    role: Option<Role>,
}

/// What the steps read of the process (copied out of the table).
struct Facts {
    pid: u32,
    ppid: u32,
    nspid: u32,
    pidns: u32,
    no_argv: bool,
    prev_role: Option<Role>,
    helper: Option<Helper>,
    cgroup: Option<CgroupKey>,
}

pub fn is_helper(role: Option<Role>) -> bool {
    matches!(role, Some(Role::Conmon) | Some(Role::Shim))
}

fn exe_of(p: &Proc) -> &str {
    p.filename.as_deref().unwrap_or(&p.comm)
}

/// conmon started for `podman exec` / `crictl exec` (not the container's own monitor).
pub fn is_exec_session(p: &Proc) -> bool {
    parse_helper(exe_of(p), &p.argv)
        .map(|h| h.exec)
        .unwrap_or(false)
}

fn helper_role(kind: HelperKind) -> Role {
    match kind {
        HelperKind::Conmon => Role::Conmon,
        HelperKind::Shim => Role::Shim,
        HelperKind::Runtime => Role::Runtime,
    }
}

impl Engine {
    /// Works out container and role of a table entry; `inherited` is the container it had
    /// before exec, or its parent's at fork.
    pub(super) fn attribute(&mut self, pid: u32, inherited: Option<Arc<str>>) {
        let Some(p) = self.table.get(pid) else { return };
        let facts = Facts {
            pid,
            ppid: p.ppid,
            nspid: p.nspid,
            pidns: p.pidns,
            no_argv: p.argv.is_empty(),
            prev_role: p.role,
            helper: parse_helper(exe_of(p), &p.argv),
            cgroup: p.cgroup,
        };
        let key = p.cgroup;

        // This runs for most events: what is shared is borrowed, not cloned (an Arc's count
        // going up and down is a locked instruction each time).
        let mut d = Decision::default();
        self.helper(&facts, &mut d);
        if let Some(c) = key.and_then(|k| self.cgroups.get(k)) {
            cgroup_step(
                &mut self.containers,
                self.now_ns,
                &facts,
                &c.path,
                &c.info,
                &mut d,
            );
        }
        self.pid_namespace(&facts, &mut d);
        inherited_step(inherited, &mut d);
        helper_copy(&facts, &mut d);
        self.init(&facts, &mut d);

        // The steps change the registry, not the entry: what it was a member of is still there.
        let Some(p) = self.table.get_mut(pid) else {
            return;
        };
        let new_member = d.container.as_ref().or(d.pod_of.as_ref());
        // A zombie keeps nothing alive (it left its cgroup and container at exit).
        if !p.is_zombie() && new_member != p.member() {
            if let Some(old) = p.member() {
                self.containers.detach(old, self.now_ns);
            }
            if let Some(new) = new_member {
                self.containers.attach(new);
            }
        }
        p.container = d.container;
        p.pod_of = d.pod_of;
        p.role = d.role;
    }

    /// Step 1: a runtime helper says which container it works for.
    fn helper(&mut self, f: &Facts, d: &mut Decision) {
        let Some(h) = &f.helper else { return };
        d.role = Some(helper_role(h.kind));
        if h.pod_level {
            // A pod's monitor (cri-o's conmon-rs): in the pod, not in one of its containers.
            d.pod_of = h
                .sandbox_id
                .as_deref()
                .map(|id| self.containers.entry(id, self.now_ns).id.clone());
            return;
        }
        d.container = if h.kind == HelperKind::Conmon && h.exec {
            // An exec session's conmon joins the container without becoming its monitor.
            h.container_id
                .as_deref()
                .map(|id| self.containers.entry(id, self.now_ns).id.clone())
        } else {
            self.containers.learn_helper(h, f.pid, self.now_ns)
        };
    }

    /// Step 3: a process in a container's own pid namespace is in that container; in a
    /// pod's shared one, in that pod.
    fn pid_namespace(&self, f: &Facts, d: &mut Decision) {
        if d.container.is_some() || d.pod_of.is_some() || f.pidns == self.host_pidns || f.pidns == 0
        {
            return;
        }
        match self.containers.by_pidns(f.pidns) {
            Some(PidnsOwner::Container(id)) => d.container = Some(id.clone()),
            Some(PidnsOwner::Pod(id)) => d.pod_of = Some(id.clone()),
            None => {}
        }
    }

    /// Step 6, the container's init: PID 1 of the first pid namespace made under the container's
    /// monitor or runtime (a pid namespace that a container process makes for itself, such
    /// as `unshare -p`, bubblewrap or a browser sandbox, is nested: its PID 1 is an ordinary
    /// process of the container); in containers without a pid namespace of their own (a pod
    /// sharing one, where PID 1 is the infra container), the first process under a monitor
    /// to exec something other than a runtime in the container's own cgroup (not the
    /// monitor's: a runtime wrapper that conmon or the shim runs there first, such as a
    /// script that execs runc, is not the init). The runtime itself never is.
    fn init(&mut self, f: &Facts, d: &mut Decision) {
        let Some(id) = d.container.clone() else {
            if d.role == Some(Role::ContainerInit) {
                d.role = None;
            }
            return;
        };
        if !matches!(
            d.role,
            None | Some(Role::Runtime) | Some(Role::ContainerInit)
        ) {
            return;
        }
        let (c_pidns, c_init, had_init) = match self.containers.get(&id) {
            Some(c) => (c.pidns, c.init_pid, c.had_init),
            None => (None, None, false),
        };
        let parent = self.table.get(f.ppid);
        // An ordinary process of this container (not its monitor or runtime).
        let parent_is_member = parent.is_some_and(|p| {
            p.container.as_deref() == Some(&*id)
                && matches!(p.role, None | Some(Role::ContainerInit))
        });
        let parent_is_monitor = parent.is_some_and(|p| is_helper(p.role));
        let parent_is_runtime =
            parent.is_some_and(|p| is_helper(p.role) || p.role == Some(Role::Runtime));
        // Placed in the container's own cgroup (None: placement unknown).
        let in_container_cgroup = f
            .cgroup
            .and_then(|k| self.cgroups.get(k))
            .map(|c| c.info.container_id.as_deref() == Some(&*id) && !c.info.conmon);
        let own_ns_init =
            f.nspid == 1 && f.pidns != self.host_pidns && f.pidns != 0 && self.host_pidns != 0;
        let is_init = if own_ns_init {
            match c_pidns {
                // Or, once the container's init has gone, a new one made by its monitor or
                // runtime: a restart under the same id, in a new pid namespace.
                Some(ns) => ns == f.pidns || (c_init.is_none() && parent_is_runtime),
                None => !parent_is_member,
            }
        } else {
            (c_init == Some(f.pid) && d.role != Some(Role::Runtime))
                || (d.role.is_none()
                    && f.helper.is_none()
                    && parent_is_monitor
                    && !had_init
                    && in_container_cgroup != Some(false))
        };
        if is_init {
            d.role = Some(Role::ContainerInit);
            let ns = (f.pidns != self.host_pidns && f.pidns != 0 && self.host_pidns != 0)
                .then_some(f.pidns);
            self.containers.set_init(&id, f.pid, ns, self.now_ns);
        } else if d.role == Some(Role::ContainerInit) {
            d.role = None;
        }
    }
}

/// Step 2: the cgroup path names the container (and pod), or the monitor's cgroup. (A
/// function of the registry alone, so that the cgroup entry is borrowed while it runs.)
fn cgroup_step(
    containers: &mut Registry,
    now: u64,
    f: &Facts,
    path: &str,
    info: &CgroupInfo,
    d: &mut Decision,
) {
    match (&d.container, &info.container_id) {
        (None, Some(id)) => {
            let shared = containers.learn_cgroup(id, info, path, now);
            if info.conmon && d.role.is_none() && f.prev_role != Some(Role::Runtime) {
                d.role = Some(Role::Conmon);
                containers.entry(id, now).helper_pid.get_or_insert(f.pid);
            }
            d.container = Some(shared);
        }
        (None, None) if info.sandbox_id.is_some() => {
            // A pod sandbox's own cgroup (kata: the VM, its hypervisor and shim): in the
            // pod, not in a container.
            if let Some(sid) = &info.sandbox_id {
                d.pod_of = Some(containers.learn_cgroup(sid, info, path, now));
            }
        }
        (None, None) => {
            if let Some(id) = containers.by_shim_path(path) {
                containers.learn_cgroup(&id, &CgroupInfo::default(), path, now);
                d.container = Some(id);
            }
        }
        (Some(have), Some(id)) if **have == **id => {
            containers.learn_cgroup(id, info, path, now);
        }
        _ => {}
    }
}

/// Step 4: the container it had before exec, or its parent's.
fn inherited_step(inherited: Option<Arc<str>>, d: &mut Decision) {
    if d.container.is_none() {
        d.container = inherited;
    }
    if d.container.is_some() {
        d.pod_of = None;
    }
}

/// Step 5: a forked copy of a helper stays that helper until it execs something else.
fn helper_copy(f: &Facts, d: &mut Decision) {
    if d.role.is_none()
        && f.helper.is_none()
        && f.no_argv
        && matches!(
            f.prev_role,
            Some(Role::Conmon) | Some(Role::Shim) | Some(Role::Runtime)
        )
    {
        d.role = f.prev_role;
    }
}
