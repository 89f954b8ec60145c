//! The CRI service against fake runtimes on unix sockets in a temp dir: a tonic server with
//! the few calls podtrace makes (fast, slow, hung, restarted), a socket that accepts and never
//! answers, and one that answers with bytes that are not HTTP/2.
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_cri::v1 as api;
use k8s_cri::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixListener;
use tonic::{Request, Response, Status};

use super::service::MAX_ATTEMPTS;
use super::*;

// ---------------------------------------------------------------------------------------------
// The fake runtime

#[derive(Clone, Debug)]
struct FakeCtr {
    name: String,
    attempt: u32,
    image: String,
    image_ref: String,
    sandbox: String,
}

#[derive(Clone, Debug)]
struct FakeSandbox {
    name: String,
    namespace: String,
    uid: String,
    attempt: u32,
    labels: HashMap<String, String>,
    annotations: HashMap<String, String>,
}

#[derive(Default, Debug)]
struct World {
    containers: HashMap<String, FakeCtr>,
    sandboxes: HashMap<String, FakeSandbox>,
    /// Delay before answering container calls (ContainerStatus, ListContainers).
    container_delay: Duration,
    /// Delay before answering every call.
    delay: Duration,
    /// Calls received, by method.
    calls: HashMap<&'static str, u64>,
}

#[derive(Clone, Default)]
struct Fake(Arc<Mutex<World>>);

impl Fake {
    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.0.lock().expect("fake world lock")
    }

    fn add_sandbox(&self, id: &str, name: &str) {
        self.world().sandboxes.insert(
            id.to_string(),
            FakeSandbox {
                name: name.to_string(),
                namespace: "ns1".to_string(),
                uid: format!("uid-{name}"),
                attempt: 0,
                labels: HashMap::from([("app".to_string(), name.to_string())]),
                annotations: HashMap::from([
                    ("db-password".to_string(), "hunter2".to_string()),
                    ("big".to_string(), "x".repeat(10_000)),
                ]),
            },
        );
    }

    fn add_container(&self, id: &str, sandbox: &str, name: &str, attempt: u32) {
        self.world().containers.insert(
            id.to_string(),
            FakeCtr {
                name: name.to_string(),
                attempt,
                image: "localhost/busybox:1".to_string(),
                image_ref: "sha256:1234".to_string(),
                sandbox: sandbox.to_string(),
            },
        );
    }

    fn calls(&self, method: &str) -> u64 {
        self.world().calls.get(method).copied().unwrap_or(0)
    }

    /// Counts the call and waits the configured delay.
    async fn enter(&self, method: &'static str, container_call: bool) {
        let delay = {
            let mut w = self.world();
            *w.calls.entry(method).or_default() += 1;
            w.delay
                + if container_call {
                    w.container_delay
                } else {
                    Duration::ZERO
                }
        };
        tokio::time::sleep(delay).await;
    }

    fn status_of(&self, id: &str) -> Option<api::ContainerStatus> {
        let w = self.world();
        let c = w.containers.get(id)?;
        Some(api::ContainerStatus {
            id: id.to_string(),
            metadata: Some(api::ContainerMetadata {
                name: c.name.clone(),
                attempt: c.attempt,
            }),
            state: api::ContainerState::ContainerRunning as i32,
            image: Some(api::ImageSpec {
                image: c.image.clone(),
                ..Default::default()
            }),
            image_ref: c.image_ref.clone(),
            ..Default::default()
        })
    }

    fn container(id: &str, c: &FakeCtr) -> api::Container {
        api::Container {
            id: id.to_string(),
            pod_sandbox_id: c.sandbox.clone(),
            metadata: Some(api::ContainerMetadata {
                name: c.name.clone(),
                attempt: c.attempt,
            }),
            // What kubelet passes to CreateContainer: the image id, not the name.
            image: Some(api::ImageSpec {
                image: c.image_ref.clone(),
                ..Default::default()
            }),
            image_ref: c.image_ref.clone(),
            state: api::ContainerState::ContainerRunning as i32,
            ..Default::default()
        }
    }

    fn sandbox_md(id: &str, s: &FakeSandbox) -> (api::PodSandboxMetadata, String) {
        (
            api::PodSandboxMetadata {
                name: s.name.clone(),
                uid: s.uid.clone(),
                namespace: s.namespace.clone(),
                attempt: s.attempt,
            },
            id.to_string(),
        )
    }
}

/// The RuntimeService trait wants every method; the fake answers UNIMPLEMENTED to those it
/// does not need.
macro_rules! fake_runtime_service {
    (
        implemented { $($items:item)* }
        unimplemented { $( $name:ident($req:ident) -> $resp:ident; )* }
    ) => {
        #[tonic::async_trait]
        impl RuntimeService for Fake {
            $($items)*
            $(
                async fn $name(
                    &self,
                    _: Request<api::$req>,
                ) -> Result<Response<api::$resp>, Status> {
                    Err(Status::unimplemented(stringify!($name)))
                }
            )*
        }
    };
}

type EventStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<api::ContainerEventResponse, Status>> + Send>,
>;

fake_runtime_service! {
    implemented {
        async fn version(
            &self,
            _: Request<api::VersionRequest>,
        ) -> Result<Response<api::VersionResponse>, Status> {
            self.enter("Version", false).await;
            Ok(Response::new(api::VersionResponse {
                version: "0.1.0".into(),
                runtime_name: "fake".into(),
                runtime_version: "1.0".into(),
                runtime_api_version: "v1".into(),
            }))
        }

        async fn container_status(
            &self,
            r: Request<api::ContainerStatusRequest>,
        ) -> Result<Response<api::ContainerStatusResponse>, Status> {
            self.enter("ContainerStatus", true).await;
            let id = r.into_inner().container_id;
            match self.status_of(&id) {
                Some(st) => Ok(Response::new(api::ContainerStatusResponse {
                    status: Some(st),
                    ..Default::default()
                })),
                None => Err(Status::not_found(format!("container {id:?} not found"))),
            }
        }

        async fn list_containers(
            &self,
            r: Request<api::ListContainersRequest>,
        ) -> Result<Response<api::ListContainersResponse>, Status> {
            self.enter("ListContainers", true).await;
            let filter = r.into_inner().filter.map(|f| f.id).unwrap_or_default();
            let w = self.world();
            let containers = if filter.is_empty() {
                w.containers.iter().map(|(id, c)| Fake::container(id, c)).collect()
            } else {
                w.containers
                    .get(&filter)
                    .map(|c| Fake::container(&filter, c))
                    .into_iter()
                    .collect()
            };
            drop(w);
            Ok(Response::new(api::ListContainersResponse { containers }))
        }

        async fn pod_sandbox_status(
            &self,
            r: Request<api::PodSandboxStatusRequest>,
        ) -> Result<Response<api::PodSandboxStatusResponse>, Status> {
            self.enter("PodSandboxStatus", false).await;
            let id = r.into_inner().pod_sandbox_id;
            let s = self.world().sandboxes.get(&id).cloned();
            let Some(s) = s else {
                return Err(Status::not_found(format!("sandbox {id:?} not found")));
            };
            let (md, id) = Self::sandbox_md(&id, &s);
            Ok(Response::new(api::PodSandboxStatusResponse {
                status: Some(api::PodSandboxStatus {
                    id,
                    metadata: Some(md),
                    state: api::PodSandboxState::SandboxReady as i32,
                    labels: s.labels,
                    annotations: s.annotations,
                    ..Default::default()
                }),
                ..Default::default()
            }))
        }

        async fn list_pod_sandbox(
            &self,
            _: Request<api::ListPodSandboxRequest>,
        ) -> Result<Response<api::ListPodSandboxResponse>, Status> {
            self.enter("ListPodSandbox", false).await;
            let w = self.world().sandboxes.clone();
            let items = w
                .iter()
                .map(|(id, s)| {
                    let (md, id) = Self::sandbox_md(id, s);
                    api::PodSandbox {
                        id,
                        metadata: Some(md),
                        state: api::PodSandboxState::SandboxReady as i32,
                        labels: s.labels.clone(),
                        annotations: s.annotations.clone(),
                        ..Default::default()
                    }
                })
                .collect();
            Ok(Response::new(api::ListPodSandboxResponse { items }))
        }

        type GetContainerEventsStream = EventStream;

        async fn get_container_events(
            &self,
            _: Request<api::GetEventsRequest>,
        ) -> Result<Response<EventStream>, Status> {
            Err(Status::unimplemented("get_container_events"))
        }
    }
    unimplemented {
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse;
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse;
        create_container(CreateContainerRequest) -> CreateContainerResponse;
        start_container(StartContainerRequest) -> StartContainerResponse;
        stop_container(StopContainerRequest) -> StopContainerResponse;
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse;
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse;
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
        exec_sync(ExecSyncRequest) -> ExecSyncResponse;
        exec(ExecRequest) -> ExecResponse;
        attach(AttachRequest) -> AttachResponse;
        port_forward(PortForwardRequest) -> PortForwardResponse;
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse;
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse;
        status(StatusRequest) -> StatusResponse;
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse;
        runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse;
    }
}

/// A fake runtime serving on a unix socket until stopped (graceful: GOAWAY to its clients).
struct FakeServer {
    path: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl FakeServer {
    fn start(path: &Path, fake: &Fake) -> Self {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).expect("bind the fake CRI socket");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let svc = RuntimeServiceServer::new(fake.clone());
        let task = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let r = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = rx.await;
                })
                .await;
            if let Err(e) = r {
                eprintln!("fake CRI server: {e}");
            }
        });
        Self {
            path: path.to_path_buf(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut *Box::pin(t))
                .await
                .is_err()
            {
                panic!("fake CRI server did not stop within 5 s");
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        if let Some(t) = &self.task {
            t.abort();
        }
    }
}

/// A socket that accepts connections and never reads or writes.
fn hanging_socket(path: &Path) -> tokio::task::JoinHandle<()> {
    let listener = UnixListener::bind(path).expect("bind the hanging socket");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    })
}

/// A socket that answers every connection with bytes that are not HTTP/2 and reads whatever
/// the client sends.
fn garbage_socket(path: &Path) -> tokio::task::JoinHandle<()> {
    let listener = UnixListener::bind(path).expect("bind the garbage socket");
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = s
                    .write_all(
                        b"HTTP/1.1 400 Bad Request\r\n\r\n\x00\xff\x13garbage\x00\x00\x00\x04",
                    )
                    .await;
                let mut buf = [0u8; 4096];
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Helpers

/// Log lines go to the test's output (shown with --nocapture or on failure).
fn init_log() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter("podtrace=debug")
        .try_init();
}

fn cfg(path: &Path) -> CriConfig {
    init_log();
    CriConfig {
        endpoint: Some(format!("unix://{}", path.display())),
        timeout: Duration::from_millis(300),
        retries: vec![Duration::from_millis(10), Duration::from_millis(20)],
        ..CriConfig::default()
    }
}

fn id(c: char) -> String {
    c.to_string().repeat(64)
}

/// The next answer within `within`, or None.
async fn next_within(s: &mut CriService, within: Duration) -> Option<CriAnswer> {
    tokio::time::timeout(within, s.next_answer()).await.ok()
}

/// The next answer within `within` if it is a fact; None for no answer in time, or for the
/// service saying it has none.
async fn answer_within(s: &mut CriService, within: Duration) -> Option<CriFact> {
    match next_within(s, within).await {
        Some(CriAnswer::Fact(f)) => Some(*f),
        _ => None,
    }
}

/// Waits (polling) until `cond(stats)` holds; panics with the stats after `within`.
async fn wait_stats(
    s: &CriService,
    within: Duration,
    what: &str,
    cond: impl Fn(&CriStats) -> bool,
) {
    let end = Instant::now() + within;
    loop {
        let st = s.stats();
        if cond(&st) {
            return;
        }
        assert!(
            Instant::now() < end,
            "timed out waiting for {what}: {st:#?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn world_with_pod(fake: &Fake) {
    fake.add_sandbox(&id('a'), "web-0");
    fake.add_container(&id('b'), &id('a'), "app", 0);
    fake.add_container(&id('c'), &id('a'), "sidecar", 2);
}

fn expected_pod(labels: bool) -> CriPod {
    CriPod {
        sandbox_id: id('a'),
        name: "web-0".into(),
        namespace: "ns1".into(),
        uid: "uid-web-0".into(),
        labels: None,
        annotations: None,
    }
    .with_labels(labels)
}

impl CriPod {
    fn with_labels(mut self, labels: bool) -> Self {
        if labels {
            self.labels = Some([("app".to_string(), "web-0".to_string())].into());
        }
        self
    }
}

// ---------------------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "current_thread")]
async fn initial_request_sandbox_unknown_and_restart_attempt() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("cri.sock");
    let fake = Fake::default();
    world_with_pod(&fake);
    let server = FakeServer::start(&sock, &fake);
    let mut s = CriService::start(cfg(&sock), no_redaction())
        .await
        .expect("start against the fake");
    assert_eq!(s.runtime(), Some("fake 1.0 (CRI v1)"));
    assert_eq!(s.endpoint(), sock.as_path());

    let mut initial = s.initial();
    initial.sort_by(|a, b| a.id.cmp(&b.id));
    let want_app = CriFact {
        id: id('b'),
        sandbox: false,
        name: Some("app".into()),
        attempt: Some(0),
        // ContainerStatus's image name, not the id ListContainers carries.
        image: Some("localhost/busybox:1".into()),
        image_id: Some("sha256:1234".into()),
        pod: Some(expected_pod(false)),
    };
    let want_sandbox = CriFact {
        id: id('a'),
        sandbox: true,
        name: None,
        attempt: Some(0),
        image: None,
        image_id: None,
        pod: Some(expected_pod(false)),
    };
    assert_eq!(initial.len(), 3, "{initial:#?}");
    assert_eq!(initial[0], want_sandbox);
    assert_eq!(initial[1], want_app);
    assert_eq!(initial[2].name.as_deref(), Some("sidecar"));
    assert_eq!(initial[2].attempt, Some(2));
    assert!(s.initial().is_empty(), "initial() is taken once");
    assert_eq!(fake.calls("ListPodSandbox"), 1);
    assert_eq!(
        fake.calls("PodSandboxStatus"),
        0,
        "pods come from the listing"
    );

    // A container started after the service: the pod comes from the sandbox cache.
    fake.add_container(&id('d'), &id('a'), "app", 1);
    s.request(&id('d'));
    let f = answer_within(&mut s, Duration::from_secs(5))
        .await
        .expect("an answer for the new container");
    assert_eq!(f.id, id('d'));
    assert_eq!((f.name.as_deref(), f.attempt), (Some("app"), Some(1)));
    assert_eq!(f.pod, Some(expected_pod(false)));
    assert_eq!(fake.calls("PodSandboxStatus"), 0, "the pod was cached");

    // A sandbox id asked directly (after forgetting what the listing said).
    s.forget(&id('a'));
    s.request(&id('a'));
    let f = answer_within(&mut s, Duration::from_secs(5))
        .await
        .expect("an answer for the sandbox id");
    assert_eq!(f, want_sandbox);
    assert_eq!(fake.calls("PodSandboxStatus"), 1);

    // An id the runtime does not know: asked again after each wait, then an answer that
    // there is none, counted.
    s.request(&id('e'));
    assert_eq!(
        next_within(&mut s, Duration::from_millis(500)).await,
        Some(CriAnswer::Unknown(CriUnknown {
            id: id('e'),
            why: NoAnswer::NotFound
        }))
    );
    let st = s.stats();
    assert_eq!(st.not_found, 3, "the first lookup and two retries: {st:#?}");
    assert_eq!((st.retries, st.unanswered), (2, 1), "{st:#?}");
    assert_eq!(s.pending(), 0, "the unknown id is no longer in flight");
    assert_eq!((st.failures, st.outages, st.up), (0, 0, true), "{st:#?}");
    assert_eq!(
        st.cache_size, 4,
        "3 from the listing - a + d + a again: {st:#?}"
    );
    assert_eq!(
        st.lookups,
        2 + 3 + 2,
        "2 ContainerStatus at start, d, a, e and e's two retries: {st:#?}"
    );
    assert_eq!(st.latency.count, st.lookups, "{st:#?}");
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn dedup_cache_forget_and_full_queue() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("cri.sock");
    let fake = Fake::default();
    let server = FakeServer::start(&sock, &fake);
    let mut c = cfg(&sock);
    c.queue = 2;
    let mut s = CriService::start(c, no_redaction()).await.expect("start");
    assert!(s.initial().is_empty());
    world_with_pod(&fake);
    fake.world().container_delay = Duration::from_millis(100);
    for _ in 0..3 {
        s.request(&id('b'));
    }
    s.request(&id('c'));
    s.request(&id('a')); // queue (2) full: dropped
    let st = s.stats();
    assert_eq!(
        (st.requests, st.deduplicated, st.queue_drops),
        (2, 2, 1),
        "{st:#?}"
    );
    let mut got = vec![
        answer_within(&mut s, Duration::from_secs(5))
            .await
            .expect("answer 1")
            .id,
        answer_within(&mut s, Duration::from_secs(5))
            .await
            .expect("answer 2")
            .id,
    ];
    got.sort();
    assert_eq!(got, vec![id('b'), id('c')]);
    assert_eq!(fake.calls("ContainerStatus"), 2, "one lookup per id");
    assert_eq!(fake.calls("PodSandboxStatus"), 1, "one per pod");
    // Cached: answered at once, no call.
    s.request(&id('b'));
    let f = answer_within(&mut s, Duration::from_millis(1))
        .await
        .expect("cache hit");
    assert_eq!(f.id, id('b'));
    assert_eq!(fake.calls("ContainerStatus"), 2);
    assert_eq!(s.stats().cache_hits, 1);
    // Forgotten: asked again.
    s.forget(&id('b'));
    s.request(&id('b'));
    answer_within(&mut s, Duration::from_secs(5))
        .await
        .expect("asked again");
    assert_eq!(fake.calls("ContainerStatus"), 3);
    // An answer for an id forgotten while in flight is discarded.
    s.request(&id('c'));
    assert_eq!(s.stats().cache_hits, 2, "c is still cached");
    answer_within(&mut s, Duration::from_millis(1))
        .await
        .expect("c cached");
    s.forget(&id('c'));
    s.request(&id('c'));
    s.forget(&id('c'));
    assert_eq!(
        answer_within(&mut s, Duration::from_millis(400)).await,
        None
    );
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn labels_are_redacted_and_cut() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("cri.sock");
    let fake = Fake::default();
    let server = FakeServer::start(&sock, &fake);
    let mut c = cfg(&sock);
    c.labels = true;
    let redactor = crate::redact::Redactor::new(&[], true).expect("default rules");
    let mut s = CriService::start(c, redact_with(Arc::new(redactor)))
        .await
        .expect("start");
    world_with_pod(&fake);
    s.request(&id('b'));
    let f = answer_within(&mut s, Duration::from_secs(5))
        .await
        .expect("answer");
    let pod = f.pod.expect("pod");
    assert_eq!(pod.labels, expected_pod(true).labels);
    let ann = pod.annotations.expect("annotations with --cri-labels");
    assert_eq!(
        ann.get("db-password").map(String::as_str),
        Some("<redacted>")
    );
    let big = ann.get("big").expect("big annotation");
    assert!(big.ends_with(client::CUT_MARK), "long values are cut");
    assert_eq!(big.len(), client::MAX_LABEL_VALUE + client::CUT_MARK.len());
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn configuration_errors_name_the_endpoint() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope.sock");
    let e = CriService::start(cfg(&missing), no_redaction())
        .await
        .expect_err("a missing explicit endpoint is an error");
    assert!(
        matches!(&e, CriError::EndpointMissing { path } if *path == missing),
        "{e:?}"
    );
    assert!(
        e.to_string().contains(&missing.display().to_string()),
        "{e}"
    );
    // The bare path form (crictl convention) is the same endpoint.
    let bare = CriConfig {
        endpoint: Some(missing.display().to_string()),
        ..CriConfig::default()
    };
    assert!(matches!(
        CriService::start(bare, no_redaction()).await,
        Err(CriError::EndpointMissing { .. })
    ));
    let file = dir.path().join("file");
    std::fs::write(&file, "x").expect("write a file");
    assert!(matches!(
        CriService::start(cfg(&file), no_redaction()).await,
        Err(CriError::NotASocket { .. })
    ));
    let tcp = CriConfig {
        endpoint: Some("tcp://127.0.0.1:1".into()),
        ..CriConfig::default()
    };
    assert!(matches!(
        CriService::start(tcp, no_redaction()).await,
        Err(CriError::BadEndpoint { .. })
    ));
    // No endpoint given and no candidate exists.
    let nothing = dir.path().join("none.sock");
    let nothing = nothing.to_string_lossy().into_owned();
    let e = CriService::start_with(CriConfig::default(), no_redaction(), &[nothing.as_str()])
        .await
        .expect_err("no candidate");
    assert!(matches!(e, CriError::NoEndpoint { .. }), "{e:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn default_candidates_first_that_answers() {
    let dir = tempfile::tempdir().expect("temp dir");
    let absent = dir.path().join("absent.sock");
    let hung = dir.path().join("hung.sock");
    let good = dir.path().join("good.sock");
    let _h = hanging_socket(&hung);
    let fake = Fake::default();
    let server = FakeServer::start(&good, &fake);
    let c = CriConfig {
        timeout: Duration::from_millis(200),
        ..CriConfig::default()
    };
    let names: Vec<String> = [&absent, &hung, &good]
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let s = CriService::start_with(c.clone(), no_redaction(), &refs)
        .await
        .expect("start");
    assert_eq!(
        s.endpoint(),
        good.as_path(),
        "the hung socket does not answer"
    );
    assert!(s.stats().up);
    // Only a hung one exists: it is used, and waited for.
    let s = CriService::start_with(c, no_redaction(), &refs[..2])
        .await
        .expect("start on the hung socket");
    assert_eq!(s.endpoint(), hung.as_path());
    assert!(!s.stats().up);
    server.stop().await;
}

/// `probe` (podtrace check): the endpoint `start` would use and the Version answer, or why
/// there is none; nothing listed.
#[tokio::test(flavor = "current_thread")]
async fn probe_names_the_runtime_or_why_not() {
    let dir = tempfile::tempdir().expect("temp dir");
    let absent = dir.path().join("absent.sock");
    let hung = dir.path().join("hung.sock");
    let good = dir.path().join("good.sock");
    let _h = hanging_socket(&hung);
    let fake = Fake::default();
    world_with_pod(&fake);
    let server = FakeServer::start(&good, &fake);
    let c = CriConfig {
        timeout: Duration::from_millis(200),
        ..CriConfig::default()
    };
    let names: Vec<String> = [&absent, &hung, &good]
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let p = CriService::probe_with(&c, &refs).await.expect("probe");
    assert_eq!(p.endpoint, good);
    let runtime = p.runtime.expect("the fake answers Version");
    assert!(runtime.contains("(CRI "), "{runtime}");
    assert_eq!(
        fake.calls("ListContainers") + fake.calls("ContainerStatus"),
        0,
        "a probe lists nothing"
    );
    let t = Instant::now();
    let p = CriService::probe_with(&c, &refs[..2]).await.expect("probe");
    assert_eq!(p.endpoint, hung);
    assert!(p.runtime.is_err(), "{p:?}");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(matches!(
        CriService::probe_with(&c, &refs[..1]).await,
        Err(CriError::NoEndpoint { .. })
    ));
    assert!(matches!(
        CriService::probe(&cfg(&absent)).await,
        Err(CriError::EndpointMissing { .. })
    ));
    server.stop().await;
}

/// Checks the service stays responsive against an endpoint that never gives an answer.
async fn never_answers(sock: &Path, what: &str) {
    let t = Instant::now();
    let mut s = CriService::start(cfg(sock), no_redaction())
        .await
        .unwrap_or_else(|e| panic!("{what}: start must not fail: {e}"));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "{what}: start took {:?}",
        t.elapsed()
    );
    assert_eq!(s.runtime(), None, "{what}");
    assert!(s.initial().is_empty());
    let st = s.stats();
    assert!(
        !st.up && st.failures >= 1 && st.outages == 1,
        "{what}: {st:#?}"
    );
    let t = Instant::now();
    for i in 0..100 {
        s.request(&format!("{i:064}"));
    }
    assert!(
        t.elapsed() < Duration::from_millis(50),
        "{what}: request() blocked"
    );
    assert_eq!(
        answer_within(&mut s, Duration::from_millis(1500)).await,
        None,
        "{what}"
    );
    let st = s.stats();
    assert_eq!(st.requests, 100, "{what}: {st:#?}");
    assert_eq!(
        st.lookups, 0,
        "{what}: lookups wait while it is down: {st:#?}"
    );
    assert_eq!(s.pending(), 100);
    assert!(!st.up, "{what}");
}

#[tokio::test(flavor = "current_thread")]
async fn socket_that_accepts_and_hangs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("hung.sock");
    let _h = hanging_socket(&sock);
    never_answers(&sock, "hanging socket").await;
}

#[tokio::test(flavor = "current_thread")]
async fn socket_that_answers_garbage() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("garbage.sock");
    let _h = garbage_socket(&sock);
    never_answers(&sock, "garbage socket").await;
}

#[tokio::test(flavor = "current_thread")]
async fn slow_lookups_time_out_and_are_given_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("cri.sock");
    let fake = Fake::default();
    let server = FakeServer::start(&sock, &fake);
    let mut s = CriService::start(cfg(&sock), no_redaction())
        .await
        .expect("start");
    world_with_pod(&fake);
    // Version answers at once (so the runtime looks up), container calls take 1 s > 300 ms.
    fake.world().container_delay = Duration::from_secs(1);
    s.request(&id('b'));
    assert_eq!(answer_within(&mut s, Duration::from_secs(4)).await, None);
    wait_stats(&s, Duration::from_secs(6), "the id to be given up", |st| {
        st.gave_up == 1
    })
    .await;
    let st = s.stats();
    assert_eq!(st.timeouts, u64::from(MAX_ATTEMPTS), "{st:#?}");
    assert_eq!(st.lookups, u64::from(MAX_ATTEMPTS), "{st:#?}");
    assert!(st.outages >= 1, "{st:#?}");
    assert!(st.latency.counts.iter().sum::<u64>() == st.latency.count);
    assert_eq!(s.pending(), 0);
    // Fast again: a new request is answered.
    fake.world().container_delay = Duration::ZERO;
    s.request(&id('c'));
    let f = answer_within(&mut s, Duration::from_secs(5))
        .await
        .expect("answered when fast");
    assert_eq!(f.name.as_deref(), Some("sidecar"));
    server.stop().await;
}

#[tokio::test(flavor = "current_thread")]
async fn runtime_restart_retries_what_failed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("cri.sock");
    let fake = Fake::default();
    world_with_pod(&fake);
    let server = FakeServer::start(&sock, &fake);
    let mut s = CriService::start(cfg(&sock), no_redaction())
        .await
        .expect("start");
    assert_eq!(s.initial().len(), 3);
    server.stop().await;
    fake.add_container(&id('d'), &id('a'), "late", 0);
    s.request(&id('d'));
    wait_stats(&s, Duration::from_secs(5), "a failure while down", |st| {
        st.failures >= 1 && !st.up
    })
    .await;
    assert_eq!(
        answer_within(&mut s, Duration::from_millis(700)).await,
        None
    );
    let st = s.stats();
    assert_eq!(st.outages, 1, "{st:#?}");
    assert_eq!(
        st.lookups,
        2 + 1,
        "2 at start, then one attempt, then it waits: {st:#?}"
    );
    // The runtime comes back on the same path: the failed lookup is answered.
    let server = FakeServer::start(&sock, &fake);
    let f = answer_within(&mut s, Duration::from_secs(12))
        .await
        .expect("the lookup that failed while down is answered");
    assert_eq!(
        (f.id.as_str(), f.name.as_deref()),
        (id('d').as_str(), Some("late"))
    );
    assert_eq!(f.pod, Some(expected_pod(false)));
    let st = s.stats();
    assert!(st.up, "{st:#?}");
    assert_eq!(
        (st.lookups, st.answered, st.gave_up),
        (2 + 2, 2 + 1, 0),
        "{st:#?}"
    );
    server.stop().await;
}

/// cri-o answers NotFound for a container until CreateContainer returns, while its conmon
/// and init already run: the lookup is asked again after a wait and answered once the runtime
/// knows the container.
#[tokio::test(flavor = "current_thread")]
async fn an_id_not_known_yet_is_asked_again_and_answered() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("cri.sock");
    let fake = Fake::default();
    world_with_pod(&fake);
    let server = FakeServer::start(&sock, &fake);
    let mut s = CriService::start(
        CriConfig {
            retries: vec![Duration::from_millis(40); 5],
            ..cfg(&sock)
        },
        no_redaction(),
    )
    .await
    .expect("start");
    s.request(&id('f'));
    // Created 60 ms later: after the first lookup and the first retry.
    tokio::time::sleep(Duration::from_millis(60)).await;
    fake.add_container(&id('f'), &id('a'), "late-created", 0);
    let f = answer_within(&mut s, Duration::from_secs(2))
        .await
        .expect("answered once the runtime knows it");
    assert_eq!(f.name.as_deref(), Some("late-created"));
    let st = s.stats();
    assert!(st.retries >= 1 && st.not_found >= 1, "{st:#?}");
    assert_eq!(st.unanswered, 0, "{st:#?}");
    server.stop().await;
}

/// The loop shape the daemon uses: `next_answer` in `select!` against other work, `request` in
/// another branch's handler. A branch that wins does not lose an answer.
#[tokio::test(flavor = "current_thread")]
async fn next_answer_in_select_is_cancel_safe() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("cri.sock");
    let fake = Fake::default();
    let server = FakeServer::start(&sock, &fake);
    let mut s = CriService::start(cfg(&sock), no_redaction())
        .await
        .expect("start");
    for i in 0..50u32 {
        let cid = format!("{i:064x}");
        fake.add_container(&cid, &id('a'), &format!("c{i}"), 0);
    }
    fake.add_sandbox(&id('a'), "web-0");
    fake.world().container_delay = Duration::from_millis(3);
    let mut tick = tokio::time::interval(Duration::from_micros(500));
    let (mut asked, mut got) = (0u32, std::collections::BTreeSet::new());
    let end = Instant::now() + Duration::from_secs(20);
    while got.len() < 50 {
        assert!(Instant::now() < end, "only {} answers", got.len());
        tokio::select! {
            f = s.next_answer() => {
                assert!(got.insert(f.id().to_string()), "answered twice: {}", f.id());
            }
            _ = tick.tick() => {
                if asked < 50 {
                    s.request(&format!("{asked:064x}"));
                    asked += 1;
                }
            }
        }
    }
    assert_eq!(s.stats().answered, 50);
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Memory per cached container, measured with a counting allocator (this thread's net bytes:
// the current-thread runtime runs the service, its worker and the fake server on it).

struct Counting;

thread_local! {
    static NET_BYTES: std::cell::Cell<i64> = const { std::cell::Cell::new(0) };
}

fn count(delta: i64) {
    let _ = NET_BYTES.try_with(|n| n.set(n.get() + delta));
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised thread-local
// Cell (no allocation, no destructor).
unsafe impl std::alloc::GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: std::alloc::Layout) -> *mut u8 {
        count(l.size() as i64);
        // SAFETY: same layout contract as the caller's.
        unsafe { std::alloc::System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: std::alloc::Layout) {
        count(-(l.size() as i64));
        // SAFETY: p was allocated by System with layout l.
        unsafe { std::alloc::System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: std::alloc::Layout, new: usize) -> *mut u8 {
        count(new as i64 - l.size() as i64);
        // SAFETY: as for realloc's contract.
        unsafe { std::alloc::System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

#[tokio::test(flavor = "current_thread")]
async fn memory_per_cached_container() {
    const N: usize = 4000;
    const PODS: usize = 400;
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("cri.sock");
    let fake = Fake::default();
    let server = FakeServer::start(&sock, &fake);
    let mut c = cfg(&sock);
    c.queue = N;
    let mut s = CriService::start(c, no_redaction()).await.expect("start");
    let ids: Vec<String> = (0..N).map(|i| format!("{i:064x}")).collect();
    for p in 0..PODS {
        let sb = format!("{:064x}", 1_000_000 + p);
        fake.add_sandbox(&sb, &format!("deployment-name-7d9f8c6b5-{p:05}"));
        for i in (p..N).step_by(PODS) {
            fake.add_container(&ids[i], &sb, "application-container", 0);
        }
    }
    // Warm up the connection and the channels, then measure.
    s.request(&ids[0]);
    answer_within(&mut s, Duration::from_secs(5))
        .await
        .expect("warm-up answer");
    s.forget(&ids[0]);
    let before = NET_BYTES.with(|n| n.get());
    for id in &ids {
        s.request(id);
    }
    for _ in 0..N {
        drop(
            answer_within(&mut s, Duration::from_secs(30))
                .await
                .expect("answer"),
        );
    }
    let after = NET_BYTES.with(|n| n.get());
    let st = s.stats();
    assert_eq!(
        (st.cache_size, st.pod_cache_size),
        (N as u64, PODS as u64),
        "{st:#?}"
    );
    let per = (after - before) / N as i64;
    eprintln!(
        "CRI cache: {} bytes for {N} containers in {PODS} pods = {per} bytes per container",
        after - before
    );
    // One fact: 64-hex id (twice: key and fact), name, image, image id, pod (sandbox id, name,
    // namespace, uid) and the map slot, plus the pod cache share.
    assert!(per > 300 && per < 2048, "{per} bytes per cached container");
    server.stop().await;
}
