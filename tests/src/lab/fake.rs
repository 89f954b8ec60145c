//! A runtime-free "container": a cgroup2 directory and `unshare --pid --fork --mount-proc`, for
//! when no real runtime can run. It has a pid namespace and its own cgroup, nothing else (the
//! host file system, network and so on).

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use super::cgroup::{self, TreeLock};
use super::cmd::{self, Teardown};
use super::process::{self, ProcessRef};

/// A pid-namespace init in its own cgroup2 directory. Dropping it writes `cgroup.kill`, reaps
/// `unshare` and removes the directory (and, for [`FakeContainer::start_in`], empty ancestors).
#[derive(Debug)]
pub struct FakeContainer {
    /// cgroup v2 path (`/podtrace-lab-fake-...` by default).
    pub cgroup_path: String,
    /// Its directory under the cgroup2 mount.
    pub cgroup_dir: PathBuf,
    /// Inode of that directory (= `bpf_get_current_cgroup_id()` inside).
    pub cgroup_id: u64,
    /// Host pid of the namespace's init (pid 1 inside), the child of `unshare`.
    pub pid: u32,
    /// Host pid of the `unshare` process (the init's parent, our child).
    pub unshare_pid: u32,
    init: Option<ProcessRef>,
    child: Option<Child>,
    prune: bool,
}

impl FakeContainer {
    /// Runs host command `args` (e.g. `["sleep", "600"]`) as pid 1 of a new pid namespace in a new
    /// cgroup `/podtrace-lab-fake-<unique>`. The command must keep running until dropped.
    pub fn start(args: &[&str]) -> Self {
        let path = format!("/{}", cmd::unique_name("podtrace-lab-fake"));
        Self::start_at(&path, false, args)
    }

    /// Like [`FakeContainer::start`] in cgroup `cgroup_path` (created with its parents; it must not
    /// exist yet), e.g. a kubepods-style path.
    pub fn start_in(cgroup_path: &str, args: &[&str]) -> Self {
        Self::start_at(cgroup_path, true, args)
    }

    fn start_at(cgroup_path: &str, prune: bool, args: &[&str]) -> Self {
        assert!(!args.is_empty(), "FakeContainer::start: empty command");
        let cgroup_dir = cgroup::cgroup_dir(cgroup_path);
        assert!(
            !cgroup_dir.exists(),
            "cgroup {} already exists: pick a unique path",
            cgroup_dir.display()
        );
        let mut c = Self {
            cgroup_path: cgroup_path.to_string(),
            cgroup_dir,
            cgroup_id: 0,
            pid: 0,
            unshare_pid: 0,
            init: None,
            child: None,
            prune,
        };
        // From here on, Drop cleans up whatever exists.
        {
            let _lock = TreeLock::acquire();
            cgroup::create_v2(cgroup_path);
        }
        c.cgroup_id = cgroup::cgroup_inode(&c.cgroup_dir);
        let mut command = Command::new("unshare");
        command
            .args(["--pid", "--fork", "--mount-proc", "--kill-child", "--"])
            .args(args)
            .stdin(Stdio::null());
        cgroup::join_at_exec(&mut command, &c.cgroup_dir);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start `unshare --pid --fork {}`: {e}", args.join(" ")));
        c.unshare_pid = child.id();
        c.child = Some(child);
        let unshare_pid = c.unshare_pid;
        cmd::wait_until(
            "unshare to fork the namespace init",
            || !process::proc_children(unshare_pid).is_empty() || !process::is_alive(unshare_pid),
            || format!("unshare {unshare_pid} has no child"),
        );
        c.pid = process::proc_children(unshare_pid)
            .first()
            .copied()
            .unwrap_or_else(|| panic!("unshare {unshare_pid} exited without a child"));
        c.init = ProcessRef::try_of(c.pid);
        let init = c
            .init
            .unwrap_or_else(|| panic!("namespace init {} vanished right after start", c.pid));
        process::wait_exec(&init, "unshare");
        c
    }

    /// A command that runs `args` inside the container: `nsenter` into its pid and mount
    /// namespaces, in its cgroup.
    pub fn exec_cmd(&self, args: &[&str]) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg("--target")
            .arg(self.pid.to_string())
            .args(["--pid", "--mount", "--"])
            .args(args);
        cgroup::join_at_exec(&mut command, &self.cgroup_dir);
        command
    }

    /// Runs `args` inside the container to completion.
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_cmd(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot start nsenter into {}: {e}", self.pid))
    }
}

impl Drop for FakeContainer {
    fn drop(&mut self) {
        let mut t = Teardown::new(format!("fake container {}", self.cgroup_path));
        if self.cgroup_dir.exists() {
            t.check(cgroup::kill_all(&self.cgroup_dir));
        }
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            if let Err(e) = child.wait() {
                t.fail(format!("wait for unshare {}: {e}", self.unshare_pid));
            }
        }
        if let Some(init) = self.init {
            if !cmd::poll_until(cmd::TIMEOUT, || !init.is_alive()) {
                t.fail(format!("init {} survived cgroup.kill", init.pid));
                init.kill();
            }
        }
        if !cmd::poll_until(cmd::TIMEOUT, || cgroup::is_unpopulated(&self.cgroup_dir)) {
            t.fail(format!("{} stays populated", self.cgroup_dir.display()));
        }
        {
            let _lock = TreeLock::acquire();
            t.check(cgroup::remove_everywhere(&self.cgroup_path));
            if self.prune {
                cgroup::prune_ancestors(&self.cgroup_path);
            }
        }
        t.check(cgroup::assert_gone_everywhere(&self.cgroup_path));
        t.finish();
    }
}
