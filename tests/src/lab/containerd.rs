//! A private containerd (own socket, root, state and config in a temp dir) and `ctr` containers:
//! the init's parent is `containerd-shim-runc-v2`, not conmon.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tempfile::TempDir;

use super::cgroup::{self, TreeLock};
use super::cmd::{self, Teardown};
use super::process::{self, ProcessRef};
use super::rootfs;

#[derive(Debug)]
struct Daemon {
    namespace: String,
    address: PathBuf,
    pid: u32,
    child: Mutex<Child>,
    dir: TempDir,
}

/// One private containerd daemon. Cheap to clone (shared); the daemon stops, and its namespace
/// cgroup and files are removed, when the last clone and the last [`CtrContainer`] are dropped.
#[derive(Debug, Clone)]
pub struct ContainerdLab(Arc<Daemon>);

/// Options for [`ContainerdLab::run_with`].
#[derive(Debug, Clone, Default)]
pub struct CtrOpts {
    /// cgroup parent: the container's cgroup becomes `<parent>/<id>` (default `/<namespace>/<id>`,
    /// containerd's own choice). Ancestors left empty are removed on drop.
    pub cgroup_parent: Option<String>,
    /// More `ctr run` options, placed before the rootfs argument.
    pub extra_args: Vec<String>,
}

/// A running `ctr run -d --rootfs` container (no image: the rootfs is a private busybox copy).
/// Dropping it kills the task (SIGKILL), deletes task and container and waits for the shim to exit.
#[derive(Debug)]
pub struct CtrContainer {
    /// containerd namespace (unique per lab).
    pub namespace: String,
    /// Container id (unique).
    pub id: String,
    /// Host pid of the task's init, from `ctr task ls`.
    pub pid: u32,
    /// Pid of its `containerd-shim-runc-v2 -namespace <ns> -id <id> -address <lab socket>`, found
    /// by its command line in /proc (independently of the init's parent).
    pub shim_pid: u32,
    /// cgroup v2 path of the init (`0::` line): `/<namespace>/<id>` by default.
    pub cgroup: String,
    /// Inode of that cgroup2 directory.
    pub cgroup_id: u64,
    /// Where the task's stdout and stderr go (`ctr run --log-uri file://...`).
    pub log_path: PathBuf,
    init: Option<ProcessRef>,
    shim: Option<ProcessRef>,
    expected_cgroup: String,
    prune: bool,
    lab: ContainerdLab,
    _rootfs: TempDir,
}

impl ContainerdLab {
    /// Starts containerd on private paths and waits until it answers `ctr version`.
    pub fn start() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("podtrace-lab-containerd-")
            .tempdir()
            .expect("create a temp dir for containerd");
        let d = dir.path();
        let config = d.join("config.toml");
        // No CRI plugin (it wants CNI and is not used by ctr); the opt plugin would create
        // /opt/containerd otherwise.
        let text = format!(
            "version = 2\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{}\"\n",
            d.join("opt").display()
        );
        std::fs::write(&config, text).unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        let address = d.join("containerd.sock");
        let log = d.join("containerd.log");
        let out = File::create(&log).unwrap_or_else(|e| panic!("create {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("dup {}: {e}", log.display()));
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .arg("--root")
            .arg(d.join("root"))
            .arg("--state")
            .arg(d.join("state"))
            .arg("--address")
            .arg(&address)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start containerd: {e} (`cargo xtask setup --runtimes`)"));
        let lab = Self(Arc::new(Daemon {
            namespace: cmd::unique_name("podtrace-lab"),
            address,
            pid: child.id(),
            child: Mutex::new(child),
            dir,
        }));
        cmd::wait_until(
            "containerd to answer `ctr version`",
            || lab.ctr(&["version"]).status.success() || !lab.daemon_running(),
            || cmd::read_for_message(&log),
        );
        assert!(
            lab.daemon_running(),
            "containerd exited at start\n{}",
            cmd::read_for_message(&log)
        );
        lab
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.0.pid
    }

    /// The daemon's socket (`ctr --address`).
    pub fn address(&self) -> &Path {
        &self.0.address
    }

    /// The containerd namespace the lab's containers live in.
    pub fn namespace(&self) -> &str {
        &self.0.namespace
    }

    fn daemon_running(&self) -> bool {
        match self.0.child.lock() {
            Ok(mut c) => matches!(c.try_wait(), Ok(None)),
            Err(_) => false,
        }
    }

    /// A `ctr --address <lab> -n <namespace> args...` command.
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.0.address)
            .arg("-n")
            .arg(&self.0.namespace)
            .args(args);
        c
    }

    /// Runs `ctr ... args` to completion.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot start ctr: {e} (`cargo xtask setup --runtimes`)"))
    }

    fn ctr_ok(&self, args: &[&str]) -> Result<String, String> {
        let out = self.ctr(args);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(format!(
                "`ctr -n {} {}` failed ({}): {}",
                self.0.namespace,
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Runs `args` (e.g. `["/bin/sleep", "600"]`) in a new container with default options.
    /// The command must keep running until the container is dropped.
    pub fn run(&self, args: &[&str]) -> CtrContainer {
        self.run_with(CtrOpts::default(), args)
    }

    /// Like [`ContainerdLab::run`], with options.
    pub fn run_with(&self, opts: CtrOpts, args: &[&str]) -> CtrContainer {
        assert!(!args.is_empty(), "ContainerdLab::run: empty command");
        let id = cmd::unique_name("lab-ctr");
        let rootfs_dir = tempfile::Builder::new()
            .prefix("podtrace-lab-ctr-")
            .tempdir()
            .expect("create a temp dir for a containerd rootfs");
        let root = rootfs_dir.path().join("rootfs");
        rootfs::copy_rootfs(&root);
        let d = self.0.dir.path();
        let log_path = d.join(format!("{id}.log"));
        let expected_cgroup = match &opts.cgroup_parent {
            Some(p) => format!("{}/{id}", p.trim_end_matches('/')),
            None => format!("/{}/{id}", self.0.namespace),
        };
        let runc_root = d.join("runc").to_string_lossy().into_owned();
        let fifo_dir = d.join("fifo").to_string_lossy().into_owned();
        let log_uri = format!("file://{}", log_path.display());
        let root_s = root.to_string_lossy().into_owned();
        let mut argv: Vec<&str> = vec![
            "run",
            "-d",
            "--rootfs",
            "--runc-root",
            &runc_root,
            "--fifo-dir",
            &fifo_dir,
            "--log-uri",
            &log_uri,
            "--env",
            "PATH=/bin:/sbin:/usr/bin:/usr/sbin",
        ];
        if opts.cgroup_parent.is_some() {
            argv.extend(["--cgroup", &expected_cgroup]);
        }
        argv.extend(opts.extra_args.iter().map(String::as_str));
        argv.extend([root_s.as_str(), id.as_str()]);
        argv.extend(args);
        let mut c = CtrContainer {
            namespace: self.0.namespace.clone(),
            id: id.clone(),
            pid: 0,
            shim_pid: 0,
            cgroup: String::new(),
            cgroup_id: 0,
            log_path,
            init: None,
            shim: None,
            expected_cgroup: expected_cgroup.clone(),
            prune: opts.cgroup_parent.is_some(),
            lab: self.clone(),
            _rootfs: rootfs_dir,
        };
        // From here on, Drop cleans up whatever exists.
        let run = if opts.cgroup_parent.is_some() {
            let _lock = TreeLock::acquire();
            self.ctr_ok(&argv)
        } else {
            self.ctr_ok(&argv)
        };
        if let Err(e) = run {
            panic!("{e}\n{}", cmd::read_for_message(&d.join("containerd.log")));
        }
        let ls = self
            .ctr_ok(&["task", "ls"])
            .unwrap_or_else(|e| panic!("{e}"));
        let row: Vec<&str> = ls
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|f| f.first() == Some(&id.as_str()))
            .unwrap_or_else(|| panic!("`ctr task ls` does not list {id}:\n{ls}"));
        assert_eq!(
            row.get(2),
            Some(&"RUNNING"),
            "task {id} is not running right after `ctr run -d`:\n{ls}"
        );
        c.pid = row
            .get(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("`ctr task ls`: no pid for {id}:\n{ls}"));
        c.init = ProcessRef::try_of(c.pid);
        let init = c
            .init
            .unwrap_or_else(|| panic!("task {id}: init {} vanished right after start", c.pid));
        c.shim_pid = self.find_shim(&id).unwrap_or_else(|| {
            panic!(
                "no containerd-shim-runc-v2 -namespace {} -id {id} -address {} in /proc",
                self.0.namespace,
                self.0.address.display()
            )
        });
        c.shim = ProcessRef::try_of(c.shim_pid);
        process::wait_exec(&init, "runc");
        c.cgroup = process::proc_cgroup(c.pid);
        c.cgroup_id = cgroup::cgroup_inode(&cgroup::cgroup_dir(&c.cgroup));
        c
    }

    /// The live shim serving container `id` of this lab, found by its command line.
    fn find_shim(&self, id: &str) -> Option<u32> {
        process::find_containerd_shim(
            &self.0.address.to_string_lossy(),
            self.0.namespace.as_str(),
            id,
        )
    }
}

impl CtrContainer {
    /// Starts `args` in a container of a new private containerd that lives as long as the
    /// container.
    pub fn start(args: &[&str]) -> Self {
        ContainerdLab::start().run(args)
    }

    /// The lab (daemon) this container runs in.
    pub fn lab(&self) -> &ContainerdLab {
        &self.lab
    }

    /// A `ctr task exec --exec-id <unique> <id> args...` command.
    pub fn exec_cmd(&self, args: &[&str]) -> Command {
        let exec_id = cmd::unique_name("exec");
        // Without --fifo-dir, ctr puts the exec's stdio FIFOs in /run/containerd/fifo.
        let fifo_dir = self.lab.0.dir.path().join("fifo");
        let fifo_dir = fifo_dir.to_string_lossy();
        let mut c = self.lab.ctr_cmd(&[
            "task",
            "exec",
            "--fifo-dir",
            &fifo_dir,
            "--exec-id",
            &exec_id,
            &self.id,
        ]);
        c.args(args);
        c
    }

    /// Runs `ctr task exec` to completion (the status is the command's).
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_cmd(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot start `ctr task exec {}`: {e}", self.id))
    }

    /// What the task printed so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

impl Drop for CtrContainer {
    fn drop(&mut self) {
        let mut t = Teardown::new(format!("containerd container {}", self.id));
        // Fails harmlessly if the task already exited or was never created.
        let _ = self.lab.ctr(&["task", "kill", "-s", "SIGKILL", &self.id]);
        if let Some(init) = self.init {
            if !cmd::poll_until(cmd::TIMEOUT, || !init.is_alive()) {
                t.fail(format!(
                    "init {} still alive after task kill SIGKILL",
                    init.pid
                ));
                init.kill();
            }
        }
        let ls = self.lab.ctr(&["task", "ls", "-q"]);
        if String::from_utf8_lossy(&ls.stdout)
            .lines()
            .any(|l| l.trim() == self.id)
        {
            t.check(self.lab.ctr_ok(&["task", "rm", "-f", &self.id]).map(drop));
        }
        let ls = self.lab.ctr(&["container", "ls", "-q"]);
        if String::from_utf8_lossy(&ls.stdout)
            .lines()
            .any(|l| l.trim() == self.id)
        {
            t.check(self.lab.ctr_ok(&["container", "rm", &self.id]).map(drop));
        }
        if let Some(shim) = self.shim {
            if !cmd::poll_until(cmd::TIMEOUT, || !shim.is_alive()) {
                t.fail(format!(
                    "shim {} still alive after task and container rm",
                    shim.pid
                ));
                shim.kill();
            }
        }
        let dir = cgroup::cgroup_dir(&self.expected_cgroup);
        if !cmd::poll_until(Duration::from_secs(5), || !dir.exists()) {
            t.fail(format!("containerd left {}", dir.display()));
            t.check(cgroup::remove_everywhere(&self.expected_cgroup));
        }
        if self.prune {
            let _lock = TreeLock::acquire();
            cgroup::prune_ancestors(&self.expected_cgroup);
        }
        t.finish();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let mut t = Teardown::new(format!(
            "containerd {} (namespace {})",
            self.pid, self.namespace
        ));
        let mut child = match self.child.lock() {
            Ok(c) => c,
            Err(p) => p.into_inner(),
        };
        if let Ok(pid) = libc::pid_t::try_from(self.pid) {
            // SAFETY: signalling our own child, which has not been waited for yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let exited = cmd::poll_until(Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_)))
        });
        if !exited {
            t.fail("containerd ignored SIGTERM for 10 s; killed");
            let _ = child.kill();
            let _ = child.wait();
        }
        // containerd creates `/<namespace>` in every hierarchy and never removes it.
        let ns_cgroup = format!("/{}", self.namespace);
        t.check(cgroup::remove_everywhere(&ns_cgroup));
        t.check(cgroup::assert_gone_everywhere(&ns_cgroup));
        let dir = self.dir.path().to_string_lossy().into_owned();
        match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(m) => {
                for line in m.lines().filter(|l| l.contains(&dir)) {
                    t.fail(format!("mount left behind: {line}"));
                }
            }
            Err(e) => t.fail(format!("read /proc/self/mountinfo: {e}")),
        }
        t.finish();
    }
}
