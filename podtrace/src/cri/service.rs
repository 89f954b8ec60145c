//! The CRI service: a handle the run loop owns (requests in, answers out, never blocking) and a
//! worker task that talks to the runtime. See the module documentation of `cri`.
use std::collections::{HashMap, HashSet, VecDeque};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_cri::v1 as api;
use tokio::sync::{mpsc, OnceCell};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use super::cache::BoundedCache;
use super::client::{self, CallError, Client, SandboxInfo};
use super::endpoint;
use super::fact::{CriAnswer, CriFact, CriPod, CriUnknown, NoAnswer};
use super::stats::{bump, Counters, CriStats};
use super::{CriConfig, CriError, Redact};

/// Lookups the worker runs at once (one HTTP/2 connection multiplexes them).
const CONCURRENCY: usize = 4;
/// ContainerStatus calls at once during the start-up listing.
const INITIAL_CONCURRENCY: usize = 8;
/// The start-up listing takes at most this many per-call timeouts in all.
const INITIAL_TIMEOUTS: u32 = 20;
/// Attempts per id that the runtime did not answer (an outage, a timeout); ids that arrive
/// while it is down wait without using one.
pub const MAX_ATTEMPTS: u32 = 3;
/// Probe backoff while the runtime does not answer: doubles from the first to the last.
pub const BACKOFF_MIN: Duration = Duration::from_millis(250);
pub const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// Error answers (not outages) logged at warn level; the rest at debug.
const WARN_FAILURES: u64 = 10;
/// Outages (and recoveries) logged at warn level; the rest at debug.
const WARN_OUTAGES: u64 = 5;

/// What the worker sends back for every id it was given.
enum Done {
    Fact(Box<CriFact>),
    Nothing(String, NoAnswer),
}

enum TaskOut {
    Lookup {
        id: String,
        attempts: u32,
        took: Duration,
        result: Result<Box<CriFact>, CallError>,
    },
    Probe(Result<api::VersionResponse, CallError>),
}

/// State the handle and the worker share.
struct Shared {
    counters: Counters,
    /// Pods by sandbox id: a pod's containers share one PodSandboxStatus (concurrent lookups
    /// of one pod wait for the same call).
    pods: Mutex<BoundedCache<PodCell>>,
}

type PodCell = Arc<OnceCell<SandboxInfo>>;

fn pod_cell(info: SandboxInfo) -> PodCell {
    Arc::new(OnceCell::new_with(Some(info)))
}

impl Shared {
    fn pods(&self) -> MutexGuard<'_, BoundedCache<PodCell>> {
        // A poisoned lock only means a panic elsewhere; the cache itself is consistent.
        self.pods.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Names from the CRI, looked up off the event path. See the `cri` module documentation.
pub struct CriService {
    endpoint: PathBuf,
    runtime: Option<String>,
    requests: mpsc::Sender<String>,
    answers: mpsc::Receiver<Done>,
    inflight: HashSet<String>,
    cache: BoundedCache<CriFact>,
    ready: VecDeque<CriAnswer>,
    initial: Vec<CriFact>,
    queue: usize,
    shared: Arc<Shared>,
    worker: JoinHandle<()>,
}

impl Drop for CriService {
    fn drop(&mut self) {
        self.worker.abort();
    }
}

impl std::fmt::Debug for CriService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriService")
            .field("endpoint", &self.endpoint)
            .field("runtime", &self.runtime)
            .field("inflight", &self.inflight.len())
            .field("cache", &self.cache.len())
            .finish_non_exhaustive()
    }
}

/// The endpoint to use, a client on it, and its Version answer if it gave one.
async fn choose_endpoint(
    cfg: &CriConfig,
    redact: &Redact,
    candidates: &[&str],
) -> Result<(PathBuf, Client, Result<api::VersionResponse, CallError>), CriError> {
    let client_for = |path: &Path| {
        Client::new(
            endpoint::channel(path, cfg.timeout),
            cfg.timeout,
            cfg.labels,
            redact.clone(),
        )
    };
    if let Some(e) = &cfg.endpoint {
        let path = endpoint::parse(e)?;
        match std::fs::metadata(&path) {
            Err(_) => return Err(CriError::EndpointMissing { path }),
            Ok(m) if !m.file_type().is_socket() => return Err(CriError::NotASocket { path }),
            Ok(_) => {}
        }
        let client = client_for(&path);
        let v = client.version().await;
        return Ok((path, client, v));
    }
    let mut first_existing = None;
    for p in candidates {
        let path = PathBuf::from(p);
        if !std::fs::metadata(&path).is_ok_and(|m| m.file_type().is_socket()) {
            continue;
        }
        let client = client_for(&path);
        match client.version().await {
            Ok(v) => return Ok((path, client, Ok(v))),
            Err(e) => {
                tracing::debug!("CRI candidate {}: {e}", path.display());
                if first_existing.is_none() {
                    first_existing = Some((path, client, Err(e)));
                }
            }
        }
    }
    first_existing.ok_or_else(|| CriError::NoEndpoint {
        tried: candidates.iter().map(PathBuf::from).collect(),
    })
}

/// What [`CriService::probe`] found: the socket and the runtime's Version answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CriProbe {
    pub endpoint: PathBuf,
    /// `"<runtime_name> <runtime_version> (CRI <api version>)"`, or why the runtime did not
    /// answer.
    pub runtime: Result<String, String>,
}

fn runtime_text(v: &api::VersionResponse) -> String {
    format!(
        "{} {} (CRI {})",
        v.runtime_name, v.runtime_version, v.runtime_api_version
    )
}

impl CriService {
    /// Finds the endpoint, asks the runtime's Version and, if it answers, lists its pods and
    /// containers (bounded by 20 per-call timeouts in all: `initial`), then starts the worker.
    /// Must run inside a tokio runtime (it spawns the worker there).
    ///
    /// Errors only for configuration: a malformed endpoint, an explicit path that does not exist
    /// or is not a socket, or no endpoint given and none of [`endpoint::DEFAULT_ENDPOINTS`]
    /// exists. A runtime that exists but does not answer is logged (warn) and retried with
    /// backoff; lookups wait for it.
    pub async fn start(cfg: CriConfig, redact: Redact) -> Result<CriService, CriError> {
        Self::start_with(cfg, redact, &endpoint::DEFAULT_ENDPOINTS).await
    }

    /// The endpoint [`CriService::start`] would use and the runtime's Version answer, without
    /// listing anything or starting a worker (`podtrace check`). Errors as `start`.
    pub async fn probe(cfg: &CriConfig) -> Result<CriProbe, CriError> {
        Self::probe_with(cfg, &endpoint::DEFAULT_ENDPOINTS).await
    }

    /// [`CriService::probe`] with other default candidates (tests).
    pub(crate) async fn probe_with(
        cfg: &CriConfig,
        candidates: &[&str],
    ) -> Result<CriProbe, CriError> {
        let (endpoint, _client, version) =
            choose_endpoint(cfg, &super::no_redaction(), candidates).await?;
        Ok(CriProbe {
            endpoint,
            runtime: version.map(|v| runtime_text(&v)).map_err(|e| e.to_string()),
        })
    }

    /// [`CriService::start`] with other default candidates (tests).
    pub(crate) async fn start_with(
        cfg: CriConfig,
        redact: Redact,
        candidates: &[&str],
    ) -> Result<CriService, CriError> {
        let (path, client, version) = choose_endpoint(&cfg, &redact, candidates).await?;
        let shared = Arc::new(Shared {
            counters: Counters::default(),
            pods: Mutex::new(BoundedCache::new(cfg.cache)),
        });
        let mut cache = BoundedCache::new(cfg.cache);
        let (runtime, initial, up) = match version {
            Ok(v) => {
                let runtime = runtime_text(&v);
                tracing::info!("CRI: {runtime} at {}", path.display());
                let deadline = cfg.timeout.saturating_mul(INITIAL_TIMEOUTS);
                let initial = initial_listing(&client, &shared, deadline).await;
                for f in &initial {
                    cache.insert(f.id.clone(), f.clone());
                }
                (Some(runtime), initial, true)
            }
            Err(e) => {
                tracing::warn!(
                    "CRI at {} is not answering ({e}): pod, container and image names from the \
                     CRI wait until it does (retrying with backoff)",
                    path.display()
                );
                bump(&shared.counters.outages);
                bump(&shared.counters.failures);
                if matches!(e, CallError::Down { timeout: true, .. }) {
                    bump(&shared.counters.timeouts);
                }
                (None, Vec::new(), false)
            }
        };
        shared
            .counters
            .up
            .store(up, std::sync::atomic::Ordering::Relaxed);
        let queue = cfg.queue.max(1);
        let (req_tx, req_rx) = mpsc::channel(queue);
        let (ans_tx, ans_rx) = mpsc::channel(queue);
        let worker = Worker {
            client,
            endpoint: path.clone(),
            shared: shared.clone(),
            requests: req_rx,
            answers: ans_tx,
            pending: VecDeque::new(),
            later: std::collections::BTreeMap::new(),
            later_seq: 0,
            retries: cfg.retries.clone(),
            tasks: JoinSet::new(),
            task_ids: HashMap::new(),
            running: 0,
            probing: false,
            down: !up,
            down_since: (!up).then(Instant::now),
            backoff: BACKOFF_MIN,
            probe_at: Instant::now() + BACKOFF_MIN,
        };
        let worker = tokio::spawn(worker.run());
        Ok(CriService {
            endpoint: path,
            runtime,
            requests: req_tx,
            answers: ans_rx,
            inflight: HashSet::new(),
            cache,
            ready: VecDeque::new(),
            initial,
            queue,
            shared,
            worker,
        })
    }

    /// The socket in use.
    pub fn endpoint(&self) -> &Path {
        &self.endpoint
    }

    /// `"<runtime_name> <runtime_version> (CRI <api version>)"` from the Version call at start,
    /// None if the runtime did not answer then.
    pub fn runtime(&self) -> Option<&str> {
        self.runtime.as_deref()
    }

    /// The facts of every sandbox (ready) and container (created or running) the runtime
    /// listed at start. Taken: a second call returns nothing.
    pub fn initial(&mut self) -> Vec<CriFact> {
        std::mem::take(&mut self.initial)
    }

    /// Asks about a container or sandbox id; never blocks. The answer comes from
    /// [`CriService::next_answer`]: at once if cached, else when the worker has it. An id
    /// already asked about and not answered yet is not asked twice; when the queue is full the
    /// request is dropped and counted (`queue_drops`). Ids the runtime does not know, and
    /// lookups that failed for good, get no answer.
    pub fn request(&mut self, id: &str) {
        if id.is_empty() {
            return;
        }
        let c = &self.shared.counters;
        if let Some(f) = self.cache.get(id) {
            bump(&c.cache_hits);
            self.ready.push_back(CriAnswer::Fact(Box::new(f.clone())));
            return;
        }
        if self.inflight.contains(id) {
            bump(&c.deduplicated);
            return;
        }
        if self.inflight.len() >= self.queue {
            bump(&c.queue_drops);
            return;
        }
        match self.requests.try_send(id.to_string()) {
            Ok(()) => {
                bump(&c.requests);
                self.inflight.insert(id.to_string());
            }
            Err(_) => bump(&c.queue_drops),
        }
    }

    /// The container (or sandbox) went away: drop its fact and cached pod; an answer still
    /// on its way for it is discarded.
    pub fn forget(&mut self, id: &str) {
        self.cache.remove(id);
        self.inflight.remove(id);
        self.ready.retain(|a| a.id() != id);
        self.shared.pods().remove(id);
    }

    /// The next answer: a fact, or that an id has none (after its retries). Cancel-safe: use
    /// it in `tokio::select!`; an answer is returned exactly once, and one not returned because
    /// the future was dropped stays for the next call. Pending forever when nothing was asked.
    pub async fn next_answer(&mut self) -> CriAnswer {
        loop {
            if let Some(a) = self.ready.pop_front() {
                return a;
            }
            match self.answers.recv().await {
                Some(Done::Fact(f)) => {
                    if self.inflight.remove(&f.id) {
                        self.cache.insert(f.id.clone(), (*f).clone());
                        return CriAnswer::Fact(f);
                    }
                }
                Some(Done::Nothing(id, why)) => {
                    if self.inflight.remove(&id) {
                        return CriAnswer::Unknown(CriUnknown { id, why });
                    }
                }
                // The worker is gone (it only stops when aborted): nothing will come.
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Ids asked about and not answered yet (queued, running or waiting for the runtime).
    pub fn pending(&self) -> usize {
        self.inflight.len()
    }

    pub fn stats(&self) -> CriStats {
        let pods = self.shared.pods().len();
        self.shared.counters.snapshot(self.cache.len(), pods)
    }
}

/// The pod of sandbox `id`, from the cache or PodSandboxStatus; None if the sandbox is gone.
async fn pod_of(client: &Client, shared: &Shared, id: &str) -> Result<Option<CriPod>, CallError> {
    let cell = {
        let mut pods = shared.pods();
        match pods.get(id) {
            Some(c) => c.clone(),
            None => {
                let c = PodCell::default();
                pods.insert(id.to_string(), c.clone());
                c
            }
        }
    };
    match cell.get_or_try_init(|| client.sandbox_status(id)).await {
        Ok(s) => Ok(Some(s.pod.clone())),
        Err(e) => {
            // Not cached: the next lookup asks again.
            let mut pods = shared.pods();
            if pods.get(id).is_some_and(|c| Arc::ptr_eq(c, &cell)) {
                pods.remove(id);
            }
            match e {
                CallError::NotFound(_) => Ok(None),
                e => Err(e),
            }
        }
    }
}

/// One id: a container (ContainerStatus, its sandbox, the sandbox's pod) or else a sandbox.
async fn lookup(client: &Client, shared: &Shared, id: &str) -> Result<CriFact, CallError> {
    match client.container_status(id).await {
        Ok(info) => {
            let pod = match client.sandbox_of(id).await? {
                Some(sandbox) => pod_of(client, shared, &sandbox).await?,
                None => None,
            };
            Ok(client::container_fact(id, info, pod))
        }
        Err(e @ CallError::Down { .. }) => Err(e),
        // Not a container: the pause process's cgroup is named by its sandbox id.
        Err(e) => match client.sandbox_status(id).await {
            Ok(s) => {
                shared.pods().insert(id.to_string(), pod_cell(s.clone()));
                Ok(client::sandbox_fact(s))
            }
            Err(CallError::NotFound(_)) => Err(e),
            Err(e2) => Err(e2),
        },
    }
}

/// ListPodSandbox + ListContainers, then ContainerStatus for each created or running container
/// (for the image as the runtime names it), within `deadline` in all.
async fn initial_listing(
    client: &Client,
    shared: &Arc<Shared>,
    deadline: Duration,
) -> Vec<CriFact> {
    let c = &shared.counters;
    let started = Instant::now();
    let end = started + deadline;
    let listed = match tokio::time::timeout_at(end, client.list()).await {
        Ok(Ok(l)) => l,
        Ok(Err(e)) => {
            bump(&c.failures);
            tracing::warn!("CRI start-up listing failed ({e}): names come as containers are seen");
            return Vec::new();
        }
        Err(_) => {
            bump(&c.failures);
            bump(&c.timeouts);
            tracing::warn!(
                "CRI start-up listing took over {deadline:?}: names come as containers are seen"
            );
            return Vec::new();
        }
    };
    let mut facts = Vec::new();
    for s in listed.sandboxes {
        let info = client.sandbox_info(s.id.clone(), s.metadata, s.labels, s.annotations);
        shared.pods().insert(s.id.clone(), pod_cell(info.clone()));
        if s.state == api::PodSandboxState::SandboxReady as i32 {
            facts.push(client::sandbox_fact(info));
        }
    }
    let live = [
        api::ContainerState::ContainerCreated as i32,
        api::ContainerState::ContainerRunning as i32,
    ];
    let mut todo: VecDeque<api::Container> = listed
        .containers
        .into_iter()
        .filter(|c| live.contains(&c.state))
        .collect();
    let mut tasks = JoinSet::new();
    let mut missed = 0usize;
    loop {
        while tasks.len() < INITIAL_CONCURRENCY {
            let Some(ctr) = todo.pop_front() else { break };
            let (client, shared) = (client.clone(), shared.clone());
            tasks.spawn(async move {
                let t = Instant::now();
                let status = client.container_status(&ctr.id).await;
                let pod = match status {
                    Ok(_) if !ctr.pod_sandbox_id.is_empty() => {
                        pod_of(&client, &shared, &ctr.pod_sandbox_id).await
                    }
                    _ => Ok(None),
                };
                (ctr.id, status, pod, t.elapsed())
            });
        }
        let next = match tokio::time::timeout_at(end, tasks.join_next()).await {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(_) => {
                missed += tasks.len() + todo.len();
                tasks.abort_all();
                break;
            }
        };
        let Ok((id, status, pod, took)) = next else {
            missed += 1;
            continue;
        };
        bump(&c.lookups);
        c.observe(took);
        match (status, pod) {
            (Ok(info), Ok(pod)) => {
                bump(&c.answered);
                facts.push(client::container_fact(&id, info, pod));
            }
            (Err(e), _) | (_, Err(e)) => {
                bump(&c.failures);
                missed += 1;
                tracing::debug!("CRI start-up: {e}");
            }
        }
    }
    if missed > 0 {
        tracing::warn!(
            "CRI start-up listing: {missed} containers not resolved within {deadline:?}; they are \
             looked up when seen"
        );
    }
    tracing::info!(
        "CRI start-up listing: {} facts in {:?}",
        facts.len(),
        started.elapsed()
    );
    facts
}

struct Worker {
    client: Client,
    endpoint: PathBuf,
    shared: Arc<Shared>,
    requests: mpsc::Receiver<String>,
    answers: mpsc::Sender<Done>,
    /// Ids to look up, with the attempts they used.
    pending: VecDeque<(String, u32)>,
    /// Ids to look up again later (the runtime did not know them yet), by when.
    later: std::collections::BTreeMap<(Instant, u64), (String, u32)>,
    later_seq: u64,
    /// Waits before each retry of an id the runtime did not know (`CriConfig::retries`).
    retries: Vec<Duration>,
    tasks: JoinSet<TaskOut>,
    /// Which id each lookup task has (to answer it even if the task panicked).
    task_ids: HashMap<tokio::task::Id, String>,
    running: usize,
    probing: bool,
    down: bool,
    down_since: Option<Instant>,
    backoff: Duration,
    probe_at: Instant,
}

impl Worker {
    async fn run(mut self) {
        loop {
            self.dispatch();
            let next_retry = self.next_retry();
            tokio::select! {
                r = self.requests.recv() => match r {
                    Some(id) => self.pending.push_back((id, 0)),
                    None => return,
                },
                Some(done) = self.tasks.join_next_with_id(), if !self.tasks.is_empty() => {
                    match done {
                        Ok((tid, out)) => {
                            self.task_ids.remove(&tid);
                            self.finished(out).await;
                        }
                        Err(e) => {
                            // Lookups do not panic; if one did, its id still gets its answer.
                            tracing::error!("CRI lookup task failed: {e}");
                            if let Some(id) = self.task_ids.remove(&e.id()) {
                                self.running = self.running.saturating_sub(1);
                                bump(&self.shared.counters.failures);
                                let _ = self.answers.send(Done::Nothing(id, NoAnswer::Failed)).await;
                            } else {
                                self.probing = false;
                            }
                        }
                    }
                }
                () = tokio::time::sleep_until(next_retry), if !self.later.is_empty() => {
                    let now = Instant::now();
                    while let Some(entry) = self.later.first_entry() {
                        if entry.key().0 > now {
                            break;
                        }
                        let (id, attempts) = entry.remove();
                        self.pending.push_back((id, attempts));
                    }
                }
                () = tokio::time::sleep_until(self.probe_at), if self.down && !self.probing => {
                    self.probing = true;
                    let client = self.client.clone();
                    self.tasks.spawn(async move { TaskOut::Probe(client.version().await) });
                }
            }
        }
    }

    /// When the first id waiting for a retry is due.
    fn next_retry(&self) -> Instant {
        self.later
            .keys()
            .next()
            .map_or_else(Instant::now, |(at, _)| *at)
    }

    /// Asks about `id` again after its next wait; false when its retries are used up.
    fn retry_later(&mut self, id: &str, attempts: u32) -> bool {
        let Some(wait) = self.retries.get(attempts.saturating_sub(1) as usize) else {
            return false;
        };
        bump(&self.shared.counters.retries);
        self.later_seq += 1;
        self.later.insert(
            (Instant::now() + *wait, self.later_seq),
            (id.to_string(), attempts),
        );
        true
    }

    fn dispatch(&mut self) {
        while !self.down && self.running < CONCURRENCY {
            let Some((id, attempts)) = self.pending.pop_front() else {
                return;
            };
            self.running += 1;
            bump(&self.shared.counters.lookups);
            let (client, shared, id2) = (self.client.clone(), self.shared.clone(), id.clone());
            let h = self.tasks.spawn(async move {
                let t = Instant::now();
                let result = lookup(&client, &shared, &id2).await.map(Box::new);
                TaskOut::Lookup {
                    id: id2,
                    attempts: attempts + 1,
                    took: t.elapsed(),
                    result,
                }
            });
            self.task_ids.insert(h.id(), id);
        }
    }

    async fn finished(&mut self, out: TaskOut) {
        let shared = self.shared.clone();
        let c = &shared.counters;
        match out {
            TaskOut::Probe(Ok(v)) => {
                self.probing = false;
                self.down = false;
                self.backoff = BACKOFF_MIN;
                c.up.store(true, std::sync::atomic::Ordering::Relaxed);
                let after = self
                    .down_since
                    .take()
                    .map(|t| t.elapsed())
                    .unwrap_or_default();
                let outages = c.outages.load(std::sync::atomic::Ordering::Relaxed);
                if outages > WARN_OUTAGES {
                    tracing::debug!(
                        "CRI at {} answers again after {after:.1?}",
                        self.endpoint.display()
                    );
                    return;
                }
                tracing::warn!(
                    "CRI at {} answers again ({} {}) after {after:.1?}; {} lookups resume",
                    self.endpoint.display(),
                    v.runtime_name,
                    v.runtime_version,
                    self.pending.len()
                );
            }
            TaskOut::Probe(Err(e)) => {
                self.probing = false;
                self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                self.probe_at = Instant::now() + self.backoff;
                tracing::debug!("CRI probe: {e}; next in {:?}", self.backoff);
            }
            TaskOut::Lookup {
                id,
                attempts,
                took,
                result,
            } => {
                self.running = self.running.saturating_sub(1);
                c.observe(took);
                let done = match result {
                    Ok(f) => {
                        bump(&c.answered);
                        if !self.down {
                            c.up.store(true, std::sync::atomic::Ordering::Relaxed);
                        }
                        Some(Done::Fact(f))
                    }
                    // Not known yet (cri-o answers NotFound until CreateContainer returns):
                    // asked again after a wait, a few times.
                    Err(CallError::NotFound(m)) => {
                        bump(&c.not_found);
                        tracing::debug!("CRI: {m} (attempt {attempts})");
                        if self.retry_later(&id, attempts) {
                            None
                        } else {
                            bump(&c.unanswered);
                            Some(Done::Nothing(id, NoAnswer::NotFound))
                        }
                    }
                    Err(CallError::Failed(m)) => {
                        bump(&c.failures);
                        if self.retry_later(&id, attempts) {
                            tracing::debug!("CRI lookup failed (attempt {attempts}): {m}");
                            None
                        } else {
                            let n = c.failures.load(std::sync::atomic::Ordering::Relaxed);
                            if n <= WARN_FAILURES {
                                tracing::warn!("CRI lookup failed: {m}");
                            } else {
                                tracing::debug!("CRI lookup failed: {m}");
                            }
                            bump(&c.unanswered);
                            Some(Done::Nothing(id, NoAnswer::Failed))
                        }
                    }
                    Err(CallError::Down { timeout, msg }) => {
                        bump(&c.failures);
                        if timeout {
                            bump(&c.timeouts);
                        }
                        self.went_down(&msg);
                        if attempts >= MAX_ATTEMPTS {
                            bump(&c.gave_up);
                            tracing::warn!(
                                "CRI: giving up on {id} after {attempts} attempts: {msg}"
                            );
                            bump(&c.unanswered);
                            Some(Done::Nothing(id, NoAnswer::Down))
                        } else {
                            self.pending.push_back((id, attempts));
                            None
                        }
                    }
                };
                if let Some(d) = done {
                    // Never full for long: the handle holds at most `queue` ids in flight.
                    let _ = self.answers.send(d).await;
                }
            }
        }
    }

    fn went_down(&mut self, msg: &str) {
        if self.down {
            return;
        }
        let c = &self.shared.counters;
        self.down = true;
        self.down_since = Some(Instant::now());
        self.backoff = BACKOFF_MIN;
        self.probe_at = Instant::now() + BACKOFF_MIN;
        c.up.store(false, std::sync::atomic::Ordering::Relaxed);
        bump(&c.outages);
        let outages = c.outages.load(std::sync::atomic::Ordering::Relaxed);
        if outages > WARN_OUTAGES {
            tracing::debug!(
                "CRI at {} stopped answering ({msg})",
                self.endpoint.display()
            );
            return;
        }
        if outages == WARN_OUTAGES {
            tracing::warn!("CRI: outage {outages}; further outages are logged at debug level");
        }
        tracing::warn!(
            "CRI at {} stopped answering ({msg}): names from the CRI wait; retrying with backoff \
             up to {BACKOFF_MAX:?}",
            self.endpoint.display()
        );
    }
}
