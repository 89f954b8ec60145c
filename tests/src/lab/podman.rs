//! podman containers: real conmon parent, runc, cgroupfs manager.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

use super::cgroup::{self, TreeLock};
use super::cmd::{self, Teardown};
use super::process::{self, ProcessRef};
use super::rootfs;

/// Options for [`PodmanContainer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct PodmanOpts {
    /// `--cgroup-parent` (a cgroupfs path such as `/kubepods/pod<uid>`): the container's cgroup
    /// becomes `<parent>/libpod-<id>`. Ancestors left empty are removed on drop.
    pub cgroup_parent: Option<String>,
    /// More `podman run` options, placed before `--rootfs` (e.g. `["--env", "A=1"]`).
    pub extra_args: Vec<String>,
    /// Name prefix (default `podtrace-lab`); a unique suffix is always added.
    pub name_prefix: Option<String>,
}

/// A running podman container (`podman run -d --network none --rootfs <private busybox copy>`).
/// Dropping it runs `podman rm -f -t 0` and checks the init, its cgroup and mounts are gone.
#[derive(Debug)]
pub struct PodmanContainer {
    /// Full container id (`podman inspect` .Id).
    pub id: String,
    /// Unique container name.
    pub name: String,
    /// Host pid of the container's init (`podman inspect` .State.Pid).
    pub pid: u32,
    /// Host pid of its conmon (`podman inspect` .State.ConmonPid).
    pub conmon_pid: u32,
    /// cgroup v2 path of the init, from the `0::` line of /proc/PID/cgroup
    /// (`/libpod_parent/libpod-<id>` by default).
    pub cgroup: String,
    /// Inode of that cgroup2 directory (= `bpf_get_current_cgroup_id()` in the container).
    pub cgroup_id: u64,
    /// podman's own report of the cgroup (`.State.CgroupPath`), for cross-checks.
    pub inspect_cgroup_path: String,
    init: ProcessRef,
    conmon: ProcessRef,
    prune_cgroup_parent: bool,
    dir: TempDir,
}

fn str_at<'a>(v: &'a Value, path: &[&str], name: &str) -> &'a str {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_str)
        .unwrap_or_else(|| {
            panic!(
                "podman inspect {name}: no string at {}: {v}",
                path.join(".")
            )
        })
}

fn u32_at(v: &Value, path: &[&str], name: &str) -> u32 {
    path.iter()
        .try_fold(v, |v, k| v.get(k))
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or_else(|| panic!("podman inspect {name}: no pid at {}: {v}", path.join(".")))
}

impl PodmanContainer {
    /// `podman run -d` the command `args` (e.g. `["/bin/sleep", "600"]`) with default options.
    /// The command must keep running until the container is dropped.
    pub fn start(args: &[&str]) -> Self {
        Self::start_with(PodmanOpts::default(), args)
    }

    /// Like [`PodmanContainer::start`], with options.
    pub fn start_with(opts: PodmanOpts, args: &[&str]) -> Self {
        assert!(!args.is_empty(), "PodmanContainer::start: empty command");
        let dir = tempfile::Builder::new()
            .prefix("podtrace-lab-podman-")
            .tempdir()
            .expect("create a temp dir for a podman rootfs");
        let root = dir.path().join("rootfs");
        rootfs::copy_rootfs(&root);
        let name = cmd::unique_name(opts.name_prefix.as_deref().unwrap_or("podtrace-lab"));
        let root_s = root.to_string_lossy().into_owned();
        let mut argv: Vec<&str> = vec!["run", "-d", "--name", &name, "--network", "none"];
        let parent_arg;
        if let Some(parent) = &opts.cgroup_parent {
            parent_arg = format!("--cgroup-parent={parent}");
            argv.push(&parent_arg);
        }
        argv.extend(opts.extra_args.iter().map(String::as_str));
        argv.extend(["--rootfs", &root_s]);
        argv.extend(args);
        let out = cmd::run("podman", &argv);
        if !out.status.success() {
            // It may exist in the "created" state: do not leave it behind.
            let _ = cmd::run("podman", &["rm", "-f", "-t", "0", &name]);
            panic!(
                "`{}` failed ({}): {}",
                cmd::show("podman", &argv),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let json = cmd::run_ok("podman", &["inspect", "--type", "container", &name]);
        let v: Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("podman inspect {name}: bad JSON: {e}\n{json}"));
        let v = v
            .get(0)
            .unwrap_or_else(|| panic!("podman inspect {name}: empty array"));
        let id = str_at(v, &["Id"], &name).to_string();
        let status = str_at(v, &["State", "Status"], &name).to_string();
        let pid = u32_at(v, &["State", "Pid"], &name);
        let conmon_pid = u32_at(v, &["State", "ConmonPid"], &name);
        let inspect_cgroup_path = str_at(v, &["State", "CgroupPath"], &name).to_string();
        if status != "running" || pid == 0 {
            let logs = cmd::run("podman", &["logs", &name]);
            let _ = cmd::run("podman", &["rm", "-f", "-t", "0", &name]);
            panic!(
                "podman container {name} is {status} (pid {pid}) right after `podman run -d`; logs: {}{}",
                String::from_utf8_lossy(&logs.stdout),
                String::from_utf8_lossy(&logs.stderr)
            );
        }
        let (Some(init), Some(conmon)) = (ProcessRef::try_of(pid), ProcessRef::try_of(conmon_pid))
        else {
            let _ = cmd::run("podman", &["rm", "-f", "-t", "0", &name]);
            panic!("podman container {name}: init {pid} or conmon {conmon_pid} vanished right after start");
        };
        let mut c = Self {
            id,
            name,
            pid,
            conmon_pid,
            cgroup: String::new(),
            cgroup_id: 0,
            inspect_cgroup_path,
            init,
            conmon,
            prune_cgroup_parent: opts.cgroup_parent.is_some(),
            dir,
        };
        // From here on, Drop cleans up whatever happens.
        process::wait_exec(&c.init, "runc");
        c.cgroup = process::proc_cgroup(pid);
        c.cgroup_id = cgroup::cgroup_inode(&cgroup::cgroup_dir(&c.cgroup));
        c
    }

    /// `podman restart -t 0`: the same id, a new conmon and a new init (in a new pid
    /// namespace); `pid`, `conmon_pid` and the cgroup are read again from `podman inspect`.
    pub fn restart(&mut self) {
        let (old_init, old_conmon) = (self.init, self.conmon);
        cmd::run_ok("podman", &["restart", "-t", "0", &self.name]);
        for (what, p) in [("init", old_init), ("conmon", old_conmon)] {
            assert!(
                cmd::poll_until(cmd::TIMEOUT, || !p.is_alive()),
                "{what} {} of {} alive after podman restart",
                p.pid,
                self.name
            );
        }
        let json = cmd::run_ok("podman", &["inspect", "--type", "container", &self.name]);
        let v: Value = serde_json::from_str(&json)
            .unwrap_or_else(|e| panic!("podman inspect {}: bad JSON: {e}", self.name));
        let v = v.get(0).expect("podman inspect: one container");
        assert_eq!(str_at(v, &["Id"], &self.name), self.id, "the same id");
        self.pid = u32_at(v, &["State", "Pid"], &self.name);
        self.conmon_pid = u32_at(v, &["State", "ConmonPid"], &self.name);
        self.init = ProcessRef::try_of(self.pid)
            .unwrap_or_else(|| panic!("new init {} vanished", self.pid));
        self.conmon = ProcessRef::try_of(self.conmon_pid)
            .unwrap_or_else(|| panic!("new conmon {} vanished", self.conmon_pid));
        process::wait_exec(&self.init, "runc");
        self.cgroup = process::proc_cgroup(self.pid);
        self.cgroup_id = cgroup::cgroup_inode(&cgroup::cgroup_dir(&self.cgroup));
    }

    /// A `podman exec <name> args...` command, to spawn or run as the test likes.
    pub fn exec_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("podman");
        c.arg("exec").arg(&self.name).args(args);
        c
    }

    /// Runs `podman exec <name> args...` to completion (the status is the command's).
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_cmd(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot start `podman exec {}`: {e}", self.name))
    }

    /// What the container printed so far (`podman logs`: stdout then stderr).
    pub fn logs(&self) -> String {
        let out = cmd::run("podman", &["logs", &self.name]);
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

impl Drop for PodmanContainer {
    fn drop(&mut self) {
        let mut t = Teardown::new(format!("podman container {}", self.name));
        t.check(cmd::try_run_ok("podman", &["rm", "-f", "-t", "0", &self.name]).map(drop));
        if !cmd::poll_until(cmd::TIMEOUT, || !self.init.is_alive()) {
            t.fail(format!("init {} still alive after podman rm", self.pid));
            self.init.kill();
        }
        if !cmd::poll_until(cmd::TIMEOUT, || !self.conmon.is_alive()) {
            t.fail(format!(
                "conmon {} still alive after podman rm",
                self.conmon_pid
            ));
            self.conmon.kill();
        }
        if !self.cgroup.is_empty() {
            let dir = cgroup::cgroup_dir(&self.cgroup);
            if !cmd::poll_until(Duration::from_secs(5), || !dir.exists()) {
                t.fail(format!("podman rm left {}", dir.display()));
                t.check(cgroup::remove_everywhere(&self.cgroup));
            }
            if self.prune_cgroup_parent {
                let _lock = TreeLock::acquire();
                // With --cgroup-parent, podman puts conmon in `<parent>/conmon` of the v1
                // hierarchies; it is busy while another container's conmon lives there.
                if let Some((parent, _)) = self.cgroup.rsplit_once('/') {
                    let _ = cgroup::remove_everywhere(&format!("{parent}/conmon"));
                }
                cgroup::prune_ancestors(&self.cgroup);
            }
        }
        match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(m) => {
                let dir = self.dir.path().to_string_lossy().into_owned();
                for line in m
                    .lines()
                    .filter(|l| l.contains(&self.id) || l.contains(&dir))
                {
                    t.fail(format!("mount left behind: {line}"));
                }
            }
            Err(e) => t.fail(format!("read /proc/self/mountinfo: {e}")),
        }
        t.finish();
    }
}
