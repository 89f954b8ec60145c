//! Containers laid out exactly like cri-o's (cri-o itself is not packaged here): a real conmon
//! started with cri-o's arguments, real runc, the kubelet's systemd-style cgroup names under
//! cgroupfs, and a `/var/log/pods/...` style log path.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};
use tempfile::TempDir;

use super::cgroup::{self, TreeLock};
use super::cmd::{self, Teardown};
use super::process::{self, ProcessRef};
use super::rootfs;

/// The pod's Kubernetes QoS class, which picks its cgroup slice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Qos {
    #[default]
    BestEffort,
    Burstable,
    Guaranteed,
}

/// A pod: its containers share the pod slice. Clone it into several [`CrioOpts`] to put several
/// containers in one pod.
#[derive(Debug, Clone)]
pub struct CrioPod {
    /// Pod name (unique by default; no `_`, which separates fields in conmon's `-n`).
    pub name: String,
    /// Pod namespace (default `podtrace-lab`).
    pub namespace: String,
    /// Pod UID, a random v4 UUID by default.
    pub uid: String,
    pub qos: Qos,
}

impl Default for CrioPod {
    fn default() -> Self {
        Self::new()
    }
}

impl CrioPod {
    /// A best-effort pod with a unique name and UID in namespace `podtrace-lab`.
    pub fn new() -> Self {
        Self {
            name: cmd::unique_name("lab-pod"),
            namespace: "podtrace-lab".to_string(),
            uid: cmd::random_uuid(),
            qos: Qos::BestEffort,
        }
    }

    /// The pod's cgroup, as the kubelet names it with the systemd driver, e.g.
    /// `/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod<uid with _>.slice`.
    pub fn slice(&self) -> String {
        let uid = self.uid.replace('-', "_");
        match self.qos {
            Qos::Guaranteed => format!("/kubepods.slice/kubepods-pod{uid}.slice"),
            Qos::Burstable => format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice"
            ),
            Qos::BestEffort => format!(
                "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{uid}.slice"
            ),
        }
    }
}

/// Options for [`CrioLikeContainer::start_with`].
#[derive(Debug, Clone, Default)]
pub struct CrioOpts {
    /// The pod (a new unique best-effort pod if None).
    pub pod: Option<CrioPod>,
    /// Restart count, the last field of conmon's `-n` and the log file name (`<attempt>.log`).
    pub attempt: u32,
    /// Leave conmon in the test's own cgroup instead of `<pod slice>/crio-conmon-<id>.scope`
    /// (cri-o's `conmon_cgroup = "pod"`, OpenShift's default).
    pub conmon_in_test_cgroup: bool,
}

/// A running container with cri-o's layout. Dropping it kills the init (SIGKILL), waits for conmon
/// to exit, runs `runc delete --force` and removes the scopes and now-empty slices in every
/// hierarchy.
#[derive(Debug)]
pub struct CrioLikeContainer {
    /// 64-hex container id (conmon `-c` and `-u`, runc id).
    pub id: String,
    pub pod_uid: String,
    pub pod_name: String,
    pub namespace: String,
    pub container_name: String,
    pub attempt: u32,
    /// conmon's pid, from the file it wrote for `-P/--conmon-pidfile`.
    pub conmon_pid: u32,
    /// Host pid of the container init, from the pidfile conmon passed to `runc create` (`-p`).
    pub pid: u32,
    /// cgroup v2 path of the init (its `0::` line):
    /// `<pod slice>/crio-<id>.scope`.
    pub cgroup_path: String,
    /// Inode of that cgroup2 directory.
    pub cgroup_id: u64,
    /// conmon's cgroup v2 path: `<pod slice>/crio-conmon-<id>.scope` (or the test's own cgroup).
    pub conmon_cgroup: String,
    /// The OCI bundle (config.json, rootfs/): conmon's `-b`.
    pub bundle: PathBuf,
    /// conmon's `-l`: `<tmp>/var/log/pods/<ns>_<pod>_<uid>/<container>/<attempt>.log` (k8s-file).
    pub log_path: PathBuf,
    /// The argv conmon was started with (argv[0] is conmon's absolute path).
    pub conmon_argv: Vec<String>,
    /// runc's state directory (`runc --root`) for this container.
    pub runc_root: PathBuf,
    expected_cgroup: String,
    expected_conmon_cgroup: Option<String>,
    init: Option<ProcessRef>,
    conmon: Option<ProcessRef>,
    dir: TempDir,
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

impl CrioLikeContainer {
    /// Starts `args` (e.g. `["/bin/sleep", "600"]`) as container `container_name` of a new pod.
    /// The command must keep running until the container is dropped.
    pub fn start(container_name: &str, args: &[&str]) -> Self {
        Self::start_with(container_name, CrioOpts::default(), args)
    }

    /// Like [`CrioLikeContainer::start`], with a given pod, attempt or conmon cgroup.
    pub fn start_with(container_name: &str, opts: CrioOpts, args: &[&str]) -> Self {
        assert!(!args.is_empty(), "CrioLikeContainer::start: empty command");
        assert!(
            !container_name.is_empty() && !container_name.contains('_'),
            "container name {container_name:?} must be non-empty without `_`"
        );
        let pod = opts.pod.unwrap_or_default();
        let id = cmd::random_hex(32);
        let dir = tempfile::Builder::new()
            .prefix("podtrace-lab-crio-")
            .tempdir()
            .expect("create a temp dir for a cri-o-like container");
        let bundle = dir.path().join("userdata");
        let runc_root = dir.path().join("runc");
        let log_path = dir
            .path()
            .join("var/log/pods")
            .join(format!("{}_{}_{}", pod.namespace, pod.name, pod.uid))
            .join(container_name)
            .join(format!("{}.log", opts.attempt));
        let exits = dir.path().join("exits");
        let sock = dir.path().join("sock");
        let persist = dir.path().join("persist");
        let log_dir = log_path.parent().unwrap_or(dir.path()).to_path_buf();
        for d in [&bundle, &runc_root, &exits, &sock, &persist, &log_dir] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("create {}: {e}", d.display()));
        }
        rootfs::copy_rootfs(&bundle.join("rootfs"));
        let expected_cgroup = format!("{}/crio-{id}.scope", pod.slice());
        write_config(&bundle, &pod.name, &expected_cgroup, args);

        let conmon_pidfile = bundle.join("conmon-pidfile");
        let pidfile = bundle.join("pidfile");
        let p = |p: &Path| p.to_string_lossy().into_owned();
        let conmon_argv: Vec<String> = vec![
            p(&cmd::which("conmon")),
            "-b".into(),
            p(&bundle),
            "-c".into(),
            id.clone(),
            "--exit-dir".into(),
            p(&exits),
            "-l".into(),
            p(&log_path),
            "--log-level".into(),
            "info".into(),
            "-n".into(),
            format!(
                "k8s_{container_name}_{}_{}_{}_{}",
                pod.name, pod.namespace, pod.uid, opts.attempt
            ),
            "-P".into(),
            p(&conmon_pidfile),
            "-p".into(),
            p(&pidfile),
            "--persist-dir".into(),
            p(&persist),
            "-r".into(),
            p(&cmd::which("runc")),
            "--runtime-arg".into(),
            format!("--root={}", p(&runc_root)),
            "--socket-dir-path".into(),
            p(&sock),
            "-u".into(),
            id.clone(),
        ];
        let expected_conmon_cgroup = (!opts.conmon_in_test_cgroup)
            .then(|| format!("{}/crio-conmon-{id}.scope", pod.slice()));

        let mut c = Self {
            id,
            pod_uid: pod.uid.clone(),
            pod_name: pod.name.clone(),
            namespace: pod.namespace.clone(),
            container_name: container_name.to_string(),
            attempt: opts.attempt,
            conmon_pid: 0,
            pid: 0,
            cgroup_path: String::new(),
            cgroup_id: 0,
            conmon_cgroup: String::new(),
            bundle,
            log_path,
            conmon_argv,
            runc_root,
            expected_cgroup,
            expected_conmon_cgroup,
            init: None,
            conmon: None,
            dir,
        };
        // From here on, Drop cleans up whatever exists.
        {
            // Creating the slices races with other tests pruning them: hold the lock until runc
            // has created the container's cgroup.
            let _lock = TreeLock::acquire();
            c.spawn_conmon();
            c.wait_created(&conmon_pidfile, &pidfile);
        }
        c.runc_ok(&["start", &c.id.clone()]);
        let init = c
            .init
            .unwrap_or_else(|| panic!("no init recorded for {}", c.id));
        process::wait_exec(&init, "runc");
        c.cgroup_path = process::proc_cgroup(c.pid);
        c.cgroup_id = cgroup::cgroup_inode(&cgroup::cgroup_dir(&c.cgroup_path));
        c.conmon_cgroup = process::proc_cgroup(c.conmon_pid);
        c
    }

    fn spawn_conmon(&mut self) {
        let stdio_path = self.dir.path().join("conmon.stdio");
        let stdio = File::create(&stdio_path)
            .unwrap_or_else(|e| panic!("create {}: {e}", stdio_path.display()));
        let stdio2 = stdio
            .try_clone()
            .unwrap_or_else(|e| panic!("dup {}: {e}", stdio_path.display()));
        let mut command = Command::new(&self.conmon_argv[0]);
        command
            .args(&self.conmon_argv[1..])
            .stdin(Stdio::null())
            .stdout(stdio)
            .stderr(stdio2);
        // cri-o moves conmon into `<pod slice>/crio-conmon-<id>.scope`; here conmon joins it
        // between fork and exec, so conmon, its daemon and `runc create` all start there.
        if let Some(cg) = self.expected_conmon_cgroup.as_deref() {
            cgroup::join_at_exec(&mut command, &cgroup::create_v2(cg));
        }
        let status = command
            .status()
            .unwrap_or_else(|e| panic!("start `{}`: {e}", self.conmon_argv.join(" ")));
        assert!(
            status.success(),
            "`{}` failed ({status})\n{}",
            self.conmon_argv.join(" "),
            cmd::read_for_message(&stdio_path)
        );
    }

    /// conmon daemonises and runs `runc create` in the background: wait for both pidfiles.
    fn wait_created(&mut self, conmon_pidfile: &Path, pidfile: &Path) {
        let detail = || {
            format!(
                "conmon: {}\n{}\n{}\nexit dir: {:?}",
                self.conmon_argv.join(" "),
                cmd::read_for_message(&self.dir.path().join("conmon.stdio")),
                cmd::read_for_message(&self.log_path),
                std::fs::read_dir(self.dir.path().join("exits"))
                    .map(|d| d.flatten().map(|e| e.file_name()).collect::<Vec<_>>())
            )
        };
        cmd::wait_until(
            "conmon's --conmon-pidfile",
            || read_pid(conmon_pidfile).is_some(),
            detail,
        );
        let conmon_pid = read_pid(conmon_pidfile).unwrap_or(0);
        self.conmon_pid = conmon_pid;
        self.conmon = ProcessRef::try_of(conmon_pid);
        let conmon = self.conmon;
        cmd::wait_until(
            "runc create's pidfile (conmon -p)",
            || read_pid(pidfile).is_some() || !conmon.is_some_and(|c| c.is_alive()),
            detail,
        );
        let pid = read_pid(pidfile).unwrap_or_else(|| {
            panic!(
                "conmon {conmon_pid} exited without the container being created\n{}",
                detail()
            )
        });
        self.pid = pid;
        self.init = ProcessRef::try_of(pid);
        assert!(
            self.init.is_some(),
            "container init {pid} (from {}) does not exist",
            pidfile.display()
        );
    }

    fn runc_args<'a>(&'a self, root: &'a str, args: &[&'a str]) -> Vec<&'a str> {
        let mut v = vec!["--root", root];
        v.extend(args);
        v
    }

    fn runc_ok(&self, args: &[&str]) -> String {
        let root = self.runc_root.to_string_lossy();
        cmd::run_ok("runc", &self.runc_args(&root, args))
    }

    /// A `runc --root <private> exec <id> args...` command, to spawn or run as the test likes.
    pub fn exec_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("runc");
        c.arg("--root")
            .arg(&self.runc_root)
            .arg("exec")
            .arg(&self.id)
            .args(args);
        c
    }

    /// Runs `runc exec` to completion (the status is the command's).
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_cmd(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot start `runc exec {}`: {e}", self.id))
    }

    /// `runc state` as JSON (status, pid, bundle ...), or None once the container is gone.
    pub fn runc_state(&self) -> Option<Value> {
        let root = self.runc_root.to_string_lossy();
        let out = cmd::run("runc", &self.runc_args(&root, &["state", &self.id]));
        if !out.status.success() {
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "runc state {}: bad JSON: {e}: {}",
                self.id,
                String::from_utf8_lossy(&out.stdout)
            )
        }))
    }

    /// The container's log so far, in conmon's k8s-file format (`<time> stdout F <line>`).
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// `runc spec`'s default config with cri-o-like settings.
fn write_config(bundle: &Path, hostname: &str, cgroup_path: &str, args: &[&str]) {
    cmd::run_ok("runc", &["spec", "--bundle", &bundle.to_string_lossy()]);
    let path = bundle.join("config.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let mut cfg: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{} from `runc spec`: bad JSON: {e}", path.display()));
    cfg["process"]["terminal"] = json!(false);
    cfg["process"]["args"] = json!(args);
    cfg["process"]["rlimits"] = json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]);
    cfg["root"] = json!({"path": "rootfs", "readonly": false});
    cfg["hostname"] = json!(hostname);
    cfg["linux"]["cgroupsPath"] = json!(cgroup_path);
    let text = serde_json::to_string_pretty(&cfg).expect("serialise an OCI config");
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl Drop for CrioLikeContainer {
    fn drop(&mut self) {
        let mut t = Teardown::new(format!("cri-o-like container {}", self.id));
        let root = self.runc_root.to_string_lossy().into_owned();
        // May fail if the container already stopped or was never created.
        let _ = cmd::run("runc", &["--root", &root, "kill", &self.id, "KILL"]);
        if let Some(init) = self.init {
            if !cmd::poll_until(cmd::TIMEOUT, || !init.is_alive()) {
                t.fail(format!(
                    "init {} still alive after runc kill KILL",
                    init.pid
                ));
                init.kill();
            }
        }
        if let Some(conmon) = self.conmon {
            if !cmd::poll_until(cmd::TIMEOUT, || !conmon.is_alive()) {
                t.fail(format!(
                    "conmon {} did not exit after its container",
                    conmon.pid
                ));
                conmon.kill();
            }
        }
        let out = cmd::run("runc", &["--root", &root, "delete", "--force", &self.id]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if !out.status.success() && !stderr.contains("does not exist") {
            t.fail(format!(
                "runc delete --force {}: {}",
                self.id,
                stderr.trim()
            ));
        }
        {
            let _lock = TreeLock::acquire();
            t.check(cgroup::remove_everywhere(&self.expected_cgroup));
            if let Some(cg) = &self.expected_conmon_cgroup {
                t.check(cgroup::remove_everywhere(cg));
            }
            cgroup::prune_ancestors(&self.expected_cgroup);
        }
        t.check(cgroup::assert_gone_everywhere(&self.expected_cgroup));
        if let Some(cg) = &self.expected_conmon_cgroup {
            t.check(cgroup::assert_gone_everywhere(cg));
        }
        t.finish();
    }
}
