//! Kubelet-style pods through containerd's own CRI plugin: a private containerd 1.6 (socket,
//! root, state, config, runc root in a temp dir; `restrict_oom_score_adj`, no CNI: hostNetwork
//! pods), images imported from busybox-static archives (no registry), and the CRI calls kubelet
//! makes: RunPodSandbox, CreateContainer + StartContainer, ExecSync, Stop/Remove.
//!
//! The lab has its own CRI client (this module: it is the oracle for podtrace's), and reads the
//! ground truth back from the runtime (ContainerStatus / PodSandboxStatus, pids from the verbose
//! info JSON) and /proc. Everything is torn down in `Drop`, also on panic: containers, sandboxes,
//! the daemon, its shims and their sockets, the pod cgroups (kubelet's) in every hierarchy, and
//! mounts. The daemon can be stopped and started again while pods live (`stop_daemon`,
//! `start_daemon`): the shims and containers keep running.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as api;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tempfile::TempDir;
use tonic::transport::{Channel, Endpoint, Uri};

use super::cgroup::{self, TreeLock};
use super::cmd::{self, Teardown};
use super::crio_lab::{self, KubeLock};
use super::process::{self, ProcessRef};
use super::rootfs;

/// The image the sandboxes run (`/bin/sleep 2147483647`).
pub const PAUSE_IMAGE: &str = "localhost/pause:1";
/// The image containers run (busybox-static with all applets, `CMD ["/bin/sh"]`).
pub const BUSYBOX_IMAGE: &str = "localhost/busybox:1";
/// The kubernetes namespace of the lab's pods.
pub const POD_NAMESPACE: &str = "podtrace-lab";
/// containerd's CRI namespace.
const CTR_NAMESPACE: &str = "k8s.io";
/// How long a CRI call of the lab may take (RunPodSandbox starts a shim and runc).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Image archives (OCI, named), built once per test process.
struct Images {
    dir: PathBuf,
    pause: PathBuf,
    busybox: PathBuf,
}

static IMAGES: OnceLock<Images> = OnceLock::new();

extern "C" fn remove_images_at_exit() {
    if let Some(i) = IMAGES.get() {
        let _ = std::fs::remove_dir_all(&i.dir);
    }
}

/// `podman import` of the busybox rootfs in a private podman store (vfs, in a temp dir: the
/// machine's store is not touched), `podman save --format oci-archive` (keeps the name).
fn images() -> &'static Images {
    IMAGES.get_or_init(|| {
        let dir = tempfile::Builder::new()
            .prefix("podtrace-lab-cri-images-")
            .tempdir()
            .expect("create a temp dir for the CRI lab images")
            .keep();
        // SAFETY: registers a plain extern "C" function; it only removes a directory.
        unsafe { libc::atexit(remove_images_at_exit) };
        let root = rootfs::rootfs();
        let store = dir.join("store");
        let runroot = dir.join("runroot");
        let podman = |args: &[&str]| -> Vec<String> {
            let mut v: Vec<String> = [
                "--root",
                &store.to_string_lossy(),
                "--runroot",
                &runroot.to_string_lossy(),
                "--storage-driver",
                "vfs",
                "--events-backend",
                "none",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect();
            v.extend(args.iter().map(|s| s.to_string()));
            v
        };
        let mut out = HashMap::new();
        for (name, change, file) in [
            (
                PAUSE_IMAGE,
                r#"ENTRYPOINT ["/bin/sleep","2147483647"]"#,
                "pause.tar",
            ),
            (BUSYBOX_IMAGE, r#"CMD ["/bin/sh"]"#, "busybox.tar"),
        ] {
            let script = format!(
                "tar -C '{}' -c . | podman {} import -q --change '{change}' - {name}",
                root.display(),
                podman(&[]).join(" ")
            );
            cmd::run_ok("sh", &["-c", &script]);
            let archive = dir.join(file);
            let archive_s = archive.to_string_lossy().into_owned();
            let args = podman(&[
                "save",
                "-q",
                "--format",
                "oci-archive",
                "-o",
                &archive_s,
                name,
            ]);
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            cmd::run_ok("podman", &args);
            out.insert(name, archive);
        }
        // The store is not needed any more (vfs: plain directories, no mounts).
        let _ = std::fs::remove_dir_all(&store);
        let _ = std::fs::remove_dir_all(&runroot);
        Images {
            pause: out.remove(PAUSE_IMAGE).expect("pause archive"),
            busybox: out.remove(BUSYBOX_IMAGE).expect("busybox archive"),
            dir,
        }
    })
}

/// A CRI v1 client on a unix socket, with a private current-thread runtime: every call blocks.
/// Do not call it from inside a tokio runtime.
struct Client {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

impl Client {
    fn new(socket: &Path) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime for the CRI lab client");
        let path = socket.to_path_buf();
        let channel = rt.block_on(async move {
            Endpoint::from_static("http://cri-lab.invalid").connect_with_connector_lazy(
                tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        Ok::<_, std::io::Error>(TokioIo::new(
                            tokio::net::UnixStream::connect(path).await?,
                        ))
                    }
                }),
            )
        });
        Self {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        }
    }

    fn call<T, F>(&self, what: &str, f: F) -> Result<T, String>
    where
        F: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        match self
            .rt
            .block_on(async move { tokio::time::timeout(CALL_TIMEOUT, f).await })
        {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => Err(format!("CRI {what}: {:?}: {}", s.code(), s.message())),
            Err(_) => Err(format!("CRI {what}: no answer within {CALL_TIMEOUT:?}")),
        }
    }
}

#[derive(Debug)]
struct DaemonState {
    child: Option<Child>,
    pid: u32,
}

struct Daemon {
    dir: TempDir,
    socket: PathBuf,
    config: PathBuf,
    log: PathBuf,
    state: Mutex<DaemonState>,
    client: Client,
    /// Sandbox ids ever started here (their shim sockets are checked at teardown).
    sandboxes: Mutex<Vec<String>>,
    /// The real cri-o of `../shared/crio` instead of a private containerd.
    crio: bool,
    /// Kubelet-style labs one at a time: they share /kubepods (and cri-o is one per box).
    /// Declared last: released after everything above is torn down.
    _kube: KubeLock,
}

/// How a pod is made: [`CriLab::run_pod_with`].
#[derive(Clone, Copy, Debug, Default)]
pub struct PodOpts {
    /// `shareProcessNamespace: true`: one pid namespace for the pod (cri-o then keeps an infra
    /// container, `/usr/bin/pod`, as PID 1 of it).
    pub share_pid: bool,
}

/// A private containerd with its CRI plugin. Cheap to clone; the daemon stops and everything it
/// left is removed when the last clone, pod and container are dropped.
#[derive(Clone)]
pub struct CriLab(Arc<Daemon>);

impl std::fmt::Debug for CriLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CriLab({})", self.0.socket.display())
    }
}

fn config_text(d: &Path) -> String {
    let p = |s: &str| d.join(s).to_string_lossy().into_owned();
    format!(
        r#"version = 2
root = "{root}"
state = "{state}"
[grpc]
  address = "{sock}"
[ttrpc]
  address = "{sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{opt}"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_apparmor = true
  netns_mounts_under_state_dir = true
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni}"
  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        BinaryName = "/usr/sbin/runc"
        Root = "{runc}"
"#,
        root = p("root"),
        state = p("state"),
        sock = p("containerd.sock"),
        opt = p("opt"),
        cni = p("cni/net.d"),
        runc = p("runc-root"),
    )
}

impl CriLab {
    /// Starts containerd with its CRI plugin on private paths, waits until the CRI answers
    /// Version, and imports the pause and busybox images into its `k8s.io` namespace.
    pub fn start() -> Self {
        let imgs = images();
        let dir = tempfile::Builder::new()
            .prefix("podtrace-lab-cri-")
            .tempdir()
            .expect("create a temp dir for containerd");
        let d = dir.path().to_path_buf();
        std::fs::create_dir_all(d.join("cni/net.d")).expect("create the CNI conf dir");
        std::fs::create_dir_all(d.join("pods")).expect("create the pod log dir");
        let config = d.join("config.toml");
        std::fs::write(&config, config_text(&d))
            .unwrap_or_else(|e| panic!("write {}: {e}", config.display()));
        let socket = d.join("containerd.sock");
        let lab = CriLab(Arc::new(Daemon {
            client: Client::new(&socket),
            log: d.join("containerd.log"),
            socket,
            config,
            dir,
            state: Mutex::new(DaemonState {
                child: None,
                pid: 0,
            }),
            sandboxes: Mutex::new(Vec::new()),
            crio: false,
            _kube: KubeLock::acquire(),
        }));
        lab.start_daemon();
        for archive in [&imgs.pause, &imgs.busybox] {
            let out = lab
                .ctr_cmd(&["images", "import", &archive.to_string_lossy()])
                .output()
                .unwrap_or_else(|e| panic!("cannot start ctr: {e}"));
            assert!(
                out.status.success(),
                "ctr images import {}: {}",
                archive.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for image in [PAUSE_IMAGE, BUSYBOX_IMAGE] {
            let id = lab.image_id(image);
            assert!(id.starts_with("sha256:"), "image {image} has id {id:?}");
        }
        lab
    }

    /// The real cri-o 1.25.5 of `../shared/crio` (`lab.sh up`), through its CRI; one per box,
    /// so this waits while another lab has it. `lab.sh down` when the last clone is dropped,
    /// which must leave nothing behind.
    pub fn crio() -> Self {
        let lock = KubeLock::acquire();
        crio_lab::up();
        let dir = tempfile::Builder::new()
            .prefix("podtrace-lab-crio-")
            .tempdir()
            .expect("create a temp dir for the cri-o lab");
        let socket = PathBuf::from(crio_lab::SOCKET);
        let lab = CriLab(Arc::new(Daemon {
            client: Client::new(&socket),
            log: crio_lab::log(),
            socket,
            config: PathBuf::new(),
            dir,
            state: Mutex::new(DaemonState {
                child: None,
                pid: crio_lab::crio_pid(),
            }),
            sandboxes: Mutex::new(Vec::new()),
            crio: true,
            _kube: lock,
        }));
        let v = lab.version().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.runtime_name, "cri-o", "{v:?}");
        lab
    }

    /// This lab is the real cri-o (else a private containerd).
    pub fn is_crio(&self) -> bool {
        self.0.crio
    }

    /// The runtime's name as the CRI gives it (`containerd`, `cri-o`).
    pub fn runtime_name(&self) -> &'static str {
        if self.is_crio() {
            "cri-o"
        } else {
            "containerd"
        }
    }

    /// The CRI socket.
    pub fn socket(&self) -> &Path {
        &self.0.socket
    }

    /// `unix://<socket>`, the form of `--cri-endpoint`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.0.socket.display())
    }

    /// containerd's (or cri-o's) pid (0 while stopped).
    pub fn pid(&self) -> u32 {
        if self.is_crio() {
            return crio_lab::crio_pid();
        }
        self.state().pid
    }

    fn state(&self) -> std::sync::MutexGuard<'_, DaemonState> {
        self.0.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether containerd (or cri-o) runs.
    pub fn daemon_running(&self) -> bool {
        if self.is_crio() {
            return process::is_alive(crio_lab::crio_pid());
        }
        match self.state().child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Starts containerd (again) with the lab's config; waits until the CRI answers Version.
    /// The CRI plugin finds the pods and containers that lived on.
    pub fn start_daemon(&self) {
        assert!(!self.is_crio(), "the cri-o lab does not restart cri-o");
        assert!(!self.daemon_running(), "containerd already runs");
        let out = File::options()
            .create(true)
            .append(true)
            .open(&self.0.log)
            .unwrap_or_else(|e| panic!("open {}: {e}", self.0.log.display()));
        let err = out.try_clone().expect("dup the containerd log");
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&self.0.config)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start containerd: {e} (`cargo xtask setup --runtimes`)"));
        {
            let mut st = self.state();
            st.pid = child.id();
            st.child = Some(child);
        }
        cmd::wait_until(
            "containerd's CRI to answer Version",
            || self.version().is_ok() || !self.daemon_running(),
            || cmd::read_for_message(&self.0.log),
        );
        assert!(
            self.daemon_running(),
            "containerd exited at start\n{}",
            cmd::read_for_message(&self.0.log)
        );
    }

    /// Stops containerd (SIGTERM, waits): shims, pause and containers keep running.
    pub fn stop_daemon(&self) {
        assert!(!self.is_crio(), "the cri-o lab does not stop cri-o");
        let mut st = self.state();
        let Some(mut child) = st.child.take() else {
            panic!("containerd is not running");
        };
        if let Ok(pid) = libc::pid_t::try_from(child.id()) {
            // SAFETY: signalling our own child, not waited for yet.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        if !cmd::poll_until(Duration::from_secs(10), || {
            matches!(child.try_wait(), Ok(Some(_)))
        }) {
            let _ = child.kill();
            let _ = child.wait();
        }
        st.pid = 0;
    }

    /// A `ctr --address <lab> -n k8s.io args...` command.
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.0.socket)
            .arg("-n")
            .arg(CTR_NAMESPACE)
            .args(args);
        c
    }

    /// The CRI Version call.
    pub fn version(&self) -> Result<api::VersionResponse, String> {
        let mut rt = self.0.client.runtime.clone();
        let req = api::VersionRequest {
            version: "v1".into(),
        };
        self.0.client.call("Version", rt.version(req))
    }

    /// The image id (`sha256:…`) of an image name, from ImageStatus.
    pub fn image_id(&self, image: &str) -> String {
        let mut c = self.0.client.images.clone();
        let req = api::ImageStatusRequest {
            image: Some(api::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            verbose: false,
        };
        self.0
            .client
            .call("ImageStatus", c.image_status(req))
            .unwrap_or_else(|e| panic!("{e}"))
            .image
            .unwrap_or_else(|| panic!("ImageStatus {image}: no such image"))
            .id
    }

    /// ContainerStatus(verbose) of any container id.
    pub fn container_status(&self, id: &str) -> Result<api::ContainerStatusResponse, String> {
        let mut rt = self.0.client.runtime.clone();
        let req = api::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: true,
        };
        self.0
            .client
            .call("ContainerStatus", rt.container_status(req))
    }

    /// PodSandboxStatus(verbose) of any sandbox id.
    pub fn sandbox_status(&self, id: &str) -> Result<api::PodSandboxStatusResponse, String> {
        let mut rt = self.0.client.runtime.clone();
        let req = api::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: true,
        };
        self.0
            .client
            .call("PodSandboxStatus", rt.pod_sandbox_status(req))
    }

    /// Starts a pod like kubelet: RunPodSandbox with metadata {name, namespace
    /// [`POD_NAMESPACE`], a random uid, attempt 0}, a log directory, the kubelet labels,
    /// `linux.cgroup_parent = /kubepods/besteffort/pod<uid>`, hostNetwork (network NODE, pid
    /// CONTAINER, ipc POD) and an empty hostname.
    pub fn run_pod(&self, name: &str) -> KubePod {
        self.run_pod_with(name, PodOpts::default())
    }

    /// [`CriLab::run_pod`] with options. On cri-o as kubelet does with the cgroupfs driver:
    /// the pod cgroup made in every hierarchy first, the log directory under /var/log/pods,
    /// and a pod sharing its pid namespace run by the handler that clamps the infra
    /// container's negative oom_score_adj (root here lacks CAP_SYS_RESOURCE).
    pub fn run_pod_with(&self, name: &str, opts: PodOpts) -> KubePod {
        let uid = cmd::random_uuid();
        let name = format!("{name}-{}", cmd::random_hex(3));
        let cgroup_parent = format!("/kubepods/besteffort/pod{uid}");
        let log_directory = if self.is_crio() {
            crio_lab::pod_log_dir(POD_NAMESPACE, &name, &uid)
        } else {
            self.0
                .dir
                .path()
                .join("pods")
                .join(format!("{POD_NAMESPACE}_{name}_{uid}"))
        };
        std::fs::create_dir_all(&log_directory).expect("create the pod log directory");
        let labels = HashMap::from([
            ("io.kubernetes.pod.name".to_string(), name.clone()),
            (
                "io.kubernetes.pod.namespace".to_string(),
                POD_NAMESPACE.to_string(),
            ),
            ("io.kubernetes.pod.uid".to_string(), uid.clone()),
            ("app".to_string(), "podtrace-lab".to_string()),
        ]);
        let config = api::PodSandboxConfig {
            metadata: Some(api::PodSandboxMetadata {
                name: name.clone(),
                uid: uid.clone(),
                namespace: POD_NAMESPACE.to_string(),
                attempt: 0,
            }),
            hostname: String::new(),
            log_directory: log_directory.to_string_lossy().into_owned(),
            labels,
            annotations: HashMap::from([(
                "kubernetes.io/config.source".to_string(),
                "api".to_string(),
            )]),
            linux: Some(api::LinuxPodSandboxConfig {
                cgroup_parent: cgroup_parent.clone(),
                security_context: Some(api::LinuxSandboxSecurityContext {
                    namespace_options: Some(namespace_options(opts.share_pid)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut pod = KubePodInner {
            lab: self.clone(),
            id: String::new(),
            name,
            uid,
            cgroup_parent,
            log_directory,
            config: config.clone(),
            opts,
            pause_pid: 0,
            shim_pid: 0,
            pause: None,
            shim: None,
        };
        let mut rt = self.0.client.runtime.clone();
        let runtime_handler = if self.is_crio() && opts.share_pid {
            crio_lab::OOM_CLAMP_HANDLER.to_string()
        } else {
            String::new()
        };
        let req = api::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler,
        };
        // Creating the pod's cgroup parents races with pruning them elsewhere.
        let run = {
            let _lock = TreeLock::acquire();
            if self.is_crio() {
                crio_lab::make_pod_cgroup(&pod.cgroup_parent);
            }
            self.0.client.call("RunPodSandbox", rt.run_pod_sandbox(req))
        };
        let id = match run {
            Ok(r) => r.pod_sandbox_id,
            Err(e) => {
                // Nothing to tear down but the cgroup parents.
                let _lock = TreeLock::acquire();
                let _ = crio_lab::remove_pod_cgroup(&pod.cgroup_parent);
                cgroup::prune_ancestors(&pod.cgroup_parent);
                pod.cgroup_parent.clear();
                panic!("{e}\n{}", cmd::read_for_message(&self.0.log));
            }
        };
        pod.id = id.clone();
        self.0
            .sandboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(id.clone());
        let st = self.sandbox_status(&id).unwrap_or_else(|e| panic!("{e}"));
        // cri-o drops the infra container (drop_infra_ctr) unless the pod shares its pid
        // namespace; containerd always runs pause, under the pod's shim.
        if !self.is_crio() || opts.share_pid {
            pod.pause_pid = info_pid(&st.info, &format!("sandbox {id}"));
            pod.pause = ProcessRef::try_of(pod.pause_pid);
        }
        if !self.is_crio() {
            pod.shim_pid = self.find_shim(&id).unwrap_or_else(|| {
                panic!(
                    "no containerd-shim-runc-v2 -namespace k8s.io -id {id} -address {}",
                    self.0.socket.display()
                )
            });
            pod.shim = ProcessRef::try_of(pod.shim_pid);
        }
        KubePod(Arc::new(pod))
    }

    /// The live shim of sandbox `id`, by its command line.
    fn find_shim(&self, id: &str) -> Option<u32> {
        process::find_containerd_shim(&self.0.socket.to_string_lossy(), CTR_NAMESPACE, id)
    }

    /// Where containerd 1.6 puts the shim socket of sandbox `id` (always under
    /// /run/containerd/s, whatever its state dir): sha256 of `<address>/<namespace>/<id>`.
    fn shim_socket(&self, id: &str) -> Option<PathBuf> {
        let key = format!("{}/{CTR_NAMESPACE}/{id}", self.0.socket.display());
        let out = Command::new("sh")
            .args(["-c", "printf %s \"$1\" | sha256sum", "sh", &key])
            .output()
            .ok()?;
        let hex = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()?
            .to_string();
        Some(Path::new("/run/containerd/s").join(hex))
    }
}

fn namespace_options(share_pid: bool) -> api::NamespaceOption {
    api::NamespaceOption {
        network: api::NamespaceMode::Node as i32,
        pid: if share_pid {
            api::NamespaceMode::Pod
        } else {
            api::NamespaceMode::Container
        } as i32,
        ipc: api::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The `pid` of a verbose status's `info` JSON.
fn info_pid(info: &HashMap<String, String>, what: &str) -> u32 {
    let text = info
        .get("info")
        .unwrap_or_else(|| panic!("{what}: verbose status has no info: {info:?}"));
    let v: serde_json::Value =
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: info JSON: {e}: {text}"));
    v.get("pid")
        .and_then(serde_json::Value::as_u64)
        .and_then(|p| u32::try_from(p).ok())
        .filter(|p| *p > 0)
        .unwrap_or_else(|| panic!("{what}: no pid in the info JSON: {text}"))
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.crio {
            let mut t = Teardown::new("the cri-o lab (lab.sh down)".to_string());
            t.check(crio_lab::down());
            t.finish();
            return;
        }
        let mut t = Teardown::new(format!("CRI containerd at {}", self.socket.display()));
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        if let Some(mut child) = st.child.take() {
            if let Ok(pid) = libc::pid_t::try_from(child.id()) {
                // SAFETY: signalling our own child, not waited for yet.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            if !cmd::poll_until(Duration::from_secs(10), || {
                matches!(child.try_wait(), Ok(Some(_)))
            }) {
                t.fail("containerd ignored SIGTERM for 10 s; killed");
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        // Shims of this daemon still alive (a pod whose teardown failed).
        let address = self.socket.to_string_lossy().into_owned();
        for pid in shims_of(&address) {
            t.fail(format!("shim {pid} of {address} still alive; killed"));
            if let Some(p) = ProcessRef::try_of(pid) {
                p.kill();
            }
        }
        let dir = self.dir.path().to_string_lossy().into_owned();
        match std::fs::read_to_string("/proc/self/mountinfo") {
            Ok(m) => {
                let mut left: Vec<String> = m
                    .lines()
                    .filter_map(|l| l.split_whitespace().nth(4))
                    .filter(|mp| mp.starts_with(&dir))
                    .map(str::to_string)
                    .collect();
                // Deepest first.
                left.sort_by_key(|b| std::cmp::Reverse(b.len()));
                for mp in left {
                    t.fail(format!("mount left behind: {mp}; unmounted"));
                    let _ = cmd::run("umount", &["-l", &mp]);
                }
            }
            Err(e) => t.fail(format!("read /proc/self/mountinfo: {e}")),
        }
        t.finish();
    }
}

/// Pids of live `containerd-shim-runc-v2 ... -address <address>` processes.
fn shims_of(address: &str) -> Vec<u32> {
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let argv: Vec<&[u8]> = raw.split(|b| *b == 0).collect();
            argv.first()
                .is_some_and(|a| a.ends_with(b"containerd-shim-runc-v2"))
                && argv
                    .windows(2)
                    .any(|w| w[0] == b"-address" && w[1] == address.as_bytes())
                && process::is_alive(pid)
        })
        .collect()
}

struct KubePodInner {
    lab: CriLab,
    id: String,
    name: String,
    uid: String,
    cgroup_parent: String,
    log_directory: PathBuf,
    config: api::PodSandboxConfig,
    opts: PodOpts,
    pause_pid: u32,
    shim_pid: u32,
    pause: Option<ProcessRef>,
    shim: Option<ProcessRef>,
}

/// A pod sandbox (pause) started through the CRI. Cheap to clone; StopPodSandbox and
/// RemovePodSandbox run when the last clone and its containers are dropped, then the lab checks
/// that pause and the shim exited and removes the pod cgroup (kubelet's job) everywhere.
#[derive(Clone)]
pub struct KubePod(Arc<KubePodInner>);

impl std::fmt::Debug for KubePod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KubePod({} {})", self.0.name, self.0.id)
    }
}

/// What to run in a container: [`KubePod::run`] and [`KubePod::run_with`].
#[derive(Debug, Clone)]
pub struct ContainerSpec {
    /// CRI metadata.name, e.g. `app`.
    pub name: String,
    /// metadata.attempt: kubelet's restart count.
    pub attempt: u32,
    /// The command; must keep running until the container is dropped.
    pub command: Vec<String>,
}

impl KubePod {
    /// The sandbox id (64 hex).
    pub fn id(&self) -> &str {
        &self.0.id
    }
    pub fn name(&self) -> &str {
        &self.0.name
    }
    pub fn namespace(&self) -> &str {
        POD_NAMESPACE
    }
    pub fn uid(&self) -> &str {
        &self.0.uid
    }
    /// `/kubepods/besteffort/pod<uid>`.
    pub fn cgroup_parent(&self) -> &str {
        &self.0.cgroup_parent
    }
    /// Host pid of pause (from PodSandboxStatus verbose info); 0 on cri-o for a pod whose
    /// infra container it dropped (one that does not share its pid namespace).
    pub fn pause_pid(&self) -> u32 {
        self.0.pause_pid
    }
    /// The pod's `containerd-shim-runc-v2 -namespace k8s.io -id <sandbox id>`, found in /proc
    /// (0 on cri-o: a conmon per container instead).
    pub fn shim_pid(&self) -> u32 {
        self.0.shim_pid
    }
    pub fn lab(&self) -> &CriLab {
        &self.0.lab
    }

    /// CreateContainer + StartContainer of `command` as container `name`, attempt 0.
    pub fn run(&self, name: &str, command: &[&str]) -> KubeContainer {
        self.run_with(ContainerSpec {
            name: name.to_string(),
            attempt: 0,
            command: command.iter().map(|s| s.to_string()).collect(),
        })
    }

    /// CreateContainer + StartContainer like kubelet: the image by its id (kubelet resolves it
    /// first), log_path `<name>/<attempt>.log` in the pod's log directory, the kubelet labels,
    /// the sandbox's namespace options, and the same sandbox config.
    pub fn run_with(&self, spec: ContainerSpec) -> KubeContainer {
        assert!(!spec.command.is_empty(), "KubePod::run: empty command");
        let lab = &self.0.lab;
        let image_id = lab.image_id(BUSYBOX_IMAGE);
        if lab.is_crio() {
            // conmon opens the log there; kubelet makes the directory.
            std::fs::create_dir_all(self.0.log_directory.join(&spec.name))
                .expect("create the container log directory");
        }
        let config = api::ContainerConfig {
            metadata: Some(api::ContainerMetadata {
                name: spec.name.clone(),
                attempt: spec.attempt,
            }),
            image: Some(api::ImageSpec {
                image: image_id,
                user_specified_image: BUSYBOX_IMAGE.to_string(),
                ..Default::default()
            }),
            command: spec.command.clone(),
            envs: vec![api::KeyValue {
                key: "PATH".into(),
                value: "/bin:/sbin:/usr/bin:/usr/sbin".into(),
            }],
            labels: HashMap::from([
                (
                    "io.kubernetes.container.name".to_string(),
                    spec.name.clone(),
                ),
                ("io.kubernetes.pod.name".to_string(), self.0.name.clone()),
                (
                    "io.kubernetes.pod.namespace".to_string(),
                    POD_NAMESPACE.to_string(),
                ),
                ("io.kubernetes.pod.uid".to_string(), self.0.uid.clone()),
            ]),
            log_path: format!("{}/{}.log", spec.name, spec.attempt),
            linux: Some(api::LinuxContainerConfig {
                security_context: Some(api::LinuxContainerSecurityContext {
                    namespace_options: Some(namespace_options(self.0.opts.share_pid)),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut rt = lab.0.client.runtime.clone();
        let req = api::CreateContainerRequest {
            pod_sandbox_id: self.0.id.clone(),
            config: Some(config),
            sandbox_config: Some(self.0.config.clone()),
        };
        let id = lab
            .0
            .client
            .call("CreateContainer", rt.create_container(req))
            .unwrap_or_else(|e| panic!("{e}\n{}", cmd::read_for_message(&lab.0.log)))
            .container_id;
        let mut c = KubeContainer {
            pod: self.clone(),
            id: id.clone(),
            name: spec.name,
            attempt: spec.attempt,
            pid: 0,
            cgroup: String::new(),
            cgroup_id: 0,
            init: None,
        };
        // From here on, Drop removes the container.
        let req = api::StartContainerRequest {
            container_id: id.clone(),
        };
        lab.0
            .client
            .call("StartContainer", rt.start_container(req))
            .unwrap_or_else(|e| panic!("{e}\n{}", cmd::read_for_message(&lab.0.log)));
        let st = lab.container_status(&id).unwrap_or_else(|e| panic!("{e}"));
        c.pid = info_pid(&st.info, &format!("container {id}"));
        let init = ProcessRef::try_of(c.pid)
            .unwrap_or_else(|| panic!("container {id}: init {} vanished at start", c.pid));
        c.init = Some(init);
        process::wait_exec(&init, "runc");
        c.cgroup = process::proc_cgroup(c.pid);
        c.cgroup_id = cgroup::cgroup_inode(&cgroup::cgroup_dir(&c.cgroup));
        c
    }
}

impl Drop for KubePodInner {
    fn drop(&mut self) {
        if self.id.is_empty() {
            return;
        }
        let mut t = Teardown::new(format!("CRI pod {} ({})", self.name, self.id));
        if !self.lab.daemon_running() {
            // A test that stopped containerd: teardown needs it.
            self.lab.start_daemon();
        }
        let mut rt = self.lab.0.client.runtime.clone();
        let req = api::StopPodSandboxRequest {
            pod_sandbox_id: self.id.clone(),
        };
        t.check(
            self.lab
                .0
                .client
                .call("StopPodSandbox", rt.stop_pod_sandbox(req))
                .map(drop),
        );
        let req = api::RemovePodSandboxRequest {
            pod_sandbox_id: self.id.clone(),
        };
        t.check(
            self.lab
                .0
                .client
                .call("RemovePodSandbox", rt.remove_pod_sandbox(req))
                .map(drop),
        );
        for (what, p) in [("pause", self.pause), ("shim", self.shim)] {
            if let Some(p) = p {
                if !cmd::poll_until(cmd::TIMEOUT, || !p.is_alive()) {
                    t.fail(format!(
                        "{what} {} still alive after RemovePodSandbox",
                        p.pid
                    ));
                    p.kill();
                }
            }
        }
        if self.lab.is_crio() {
            // The pod cgroup is kubelet's to remove, with what cri-o leaves in it under
            // cgroupfs (conmon's crio-conmon-<id>, the dropped infra's crio-<sandbox id>).
            let _lock = TreeLock::acquire();
            t.check(crio_lab::remove_pod_cgroup(&self.cgroup_parent));
            t.check(cgroup::assert_gone_everywhere(&self.cgroup_parent));
            cgroup::prune_ancestors(&self.cgroup_parent);
            let _ = std::fs::remove_dir_all(&self.log_directory);
            t.finish();
            return;
        }
        let sandbox_cgroup = format!("{}/{}", self.cgroup_parent, self.id);
        if !cmd::poll_until(Duration::from_secs(5), || {
            !cgroup::cgroup_dir(&sandbox_cgroup).exists()
        }) {
            t.fail(format!("containerd left {sandbox_cgroup}"));
            t.check(cgroup::remove_everywhere(&sandbox_cgroup));
        }
        if let Some(sock) = self.lab.shim_socket(&self.id) {
            // A shim that exits cleanly removes it; one killed does not.
            let _ = std::fs::remove_file(sock);
        }
        // The pod cgroup belongs to kubelet: containerd does not remove it.
        {
            let _lock = TreeLock::acquire();
            t.check(cgroup::remove_everywhere(&self.cgroup_parent));
            t.check(cgroup::assert_gone_everywhere(&self.cgroup_parent));
            cgroup::prune_ancestors(&self.cgroup_parent);
        }
        t.finish();
    }
}

/// A container started through the CRI in a [`KubePod`]. Dropping it runs StopContainer
/// (timeout 0: SIGKILL) and RemoveContainer and checks that its init exited.
#[derive(Debug)]
pub struct KubeContainer {
    pub pod: KubePod,
    /// Container id (64 hex).
    pub id: String,
    pub name: String,
    pub attempt: u32,
    /// Host pid of its init, from ContainerStatus verbose info.
    pub pid: u32,
    /// cgroup v2 path of the init (`0::` line of /proc/PID/cgroup).
    pub cgroup: String,
    /// Inode of that cgroup2 directory.
    pub cgroup_id: u64,
    init: Option<ProcessRef>,
}

impl KubeContainer {
    /// ExecSync (like a probe or `kubectl exec`): (exit code, stdout, stderr).
    pub fn exec_sync(&self, command: &[&str]) -> (i32, String, String) {
        let lab = &self.pod.0.lab;
        let mut rt = lab.0.client.runtime.clone();
        let req = api::ExecSyncRequest {
            container_id: self.id.clone(),
            cmd: command.iter().map(|s| s.to_string()).collect(),
            timeout: 30,
        };
        let r = lab
            .0
            .client
            .call("ExecSync", rt.exec_sync(req))
            .unwrap_or_else(|e| panic!("{e}"));
        (
            r.exit_code,
            String::from_utf8_lossy(&r.stdout).into_owned(),
            String::from_utf8_lossy(&r.stderr).into_owned(),
        )
    }

    /// A streaming exec (kubectl exec's path: `crictl exec` without `--sync`): (exit code,
    /// stdout).
    pub fn exec_streaming(&self, command: &[&str]) -> (i32, String) {
        crio_lab::exec_streaming(&self.pod.0.lab.endpoint(), &self.id, command)
    }

    /// conmon's pid from the pidfile cri-o gave it (cri-o only; None elsewhere).
    pub fn conmon_pid(&self) -> Option<u32> {
        if !self.pod.0.lab.is_crio() {
            return None;
        }
        crio_lab::conmon_pid(&self.id)
    }

    /// ContainerStatus(verbose) now.
    pub fn status(&self) -> api::ContainerStatus {
        self.pod
            .0
            .lab
            .container_status(&self.id)
            .unwrap_or_else(|e| panic!("{e}"))
            .status
            .unwrap_or_else(|| panic!("ContainerStatus {}: no status", self.id))
    }

    /// StopContainer with timeout 0 (SIGKILL); waits until the init exited. The container
    /// stays (exited) until dropped, as kubelet keeps the last attempt.
    pub fn stop(&self) {
        let lab = &self.pod.0.lab;
        let mut rt = lab.0.client.runtime.clone();
        let req = api::StopContainerRequest {
            container_id: self.id.clone(),
            timeout: 0,
        };
        lab.0
            .client
            .call("StopContainer", rt.stop_container(req))
            .unwrap_or_else(|e| panic!("{e}"));
        if let Some(init) = self.init {
            cmd::wait_until(
                &format!("init {} of {} to exit", init.pid, self.id),
                || !init.is_alive(),
                String::new,
            );
        }
    }
}

impl Drop for KubeContainer {
    fn drop(&mut self) {
        let mut t = Teardown::new(format!("CRI container {} ({})", self.name, self.id));
        let lab = &self.pod.0.lab;
        if !lab.daemon_running() {
            lab.start_daemon();
        }
        let mut rt = lab.0.client.runtime.clone();
        let req = api::StopContainerRequest {
            container_id: self.id.clone(),
            timeout: 0,
        };
        t.check(
            lab.0
                .client
                .call("StopContainer", rt.stop_container(req))
                .map(drop),
        );
        if let Some(init) = self.init {
            if !cmd::poll_until(cmd::TIMEOUT, || !init.is_alive()) {
                t.fail(format!("init {} alive after StopContainer", init.pid));
                init.kill();
            }
        }
        let req = api::RemoveContainerRequest {
            container_id: self.id.clone(),
        };
        t.check(
            lab.0
                .client
                .call("RemoveContainer", rt.remove_container(req))
                .map(drop),
        );
        let expected = if lab.is_crio() {
            format!("{}/crio-{}", self.pod.0.cgroup_parent, self.id)
        } else {
            format!("{}/{}", self.pod.0.cgroup_parent, self.id)
        };
        if !cmd::poll_until(Duration::from_secs(5), || {
            !cgroup::cgroup_dir(&expected).exists()
        }) {
            t.fail(format!("{} left {expected}", lab.runtime_name()));
            t.check(cgroup::remove_everywhere(&expected));
        }
        t.finish();
    }
}
