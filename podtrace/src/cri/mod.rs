//! Names from the CRI: what the container runtime's CRI v1 API says about a container or pod
//! sandbox id (issue 11). On containerd nodes (EKS, GKE, AKS, kind, k3s) nothing in argv or
//! cgroup paths names the pod, the container or the image; the runtime does.
//!
//! # Shape
//!
//! ```text
//! CriService::start(CriConfig, Redact) -> Result<CriService, CriError>   (async)
//!   .initial()      -> Vec<CriFact>   every ready sandbox and created/running container at start
//!   .request(&id)                     never blocks: cache hit, dedup, or queued (full: dropped)
//!   .next_answer()  -> CriFact        async, cancel-safe, for tokio::select!
//!   .forget(&id)                      the container / sandbox went away: evict it
//!   .stats()        -> CriStats       counters, cache sizes, latency histogram
//! ```
//!
//! The handle lives in the run loop and never waits for the runtime. A worker task (spawned on
//! the caller's runtime, aborted when the handle is dropped) takes ids from a bounded queue and
//! runs up to 4 lookups at once on one HTTP/2 connection to the unix socket; each call has the
//! per-call timeout (`CriConfig::timeout`, default 500 ms).
//!
//! A lookup of id X: `ContainerStatus(X)` (name, attempt, `image.image`, `image_ref`), then
//! `ListContainers(filter id=X)` for its pod sandbox id (ContainerStatus carries it only in
//! runtime-specific verbose JSON), then `PodSandboxStatus` of that sandbox (pod name, namespace,
//! uid; cached per sandbox). If X is not a container it is tried as a sandbox (the pause
//! process's cgroup is named by the sandbox id): the answer then has `sandbox: true`. With
//! `CriConfig::labels` the pod's labels and annotations come too, each value passed through the
//! [`Redact`] hook and cut at [`client::MAX_LABEL_VALUE`] bytes.
//!
//! # Failures
//!
//! Nothing here stalls or panics on a bad runtime. An id the runtime does not know gets no
//! answer (`not_found`). A call the runtime did not answer (refused, broken connection, bytes
//! that are not HTTP/2 gRPC, no answer within the timeout) counts a failure and marks the
//! runtime down: one warn line, lookups wait (without using attempts), a Version probe is
//! retried with backoff from 250 ms to 8 s, and when it answers (one warn line) the waiting
//! lookups run again; an id whose lookup went unanswered 3 times is given up (`gave_up`). An
//! error answer (not NOT_FOUND) counts a failure and gets no answer.
//!
//! Errors from [`CriService::start`] are configuration errors only (see [`CriError`]).
pub mod cache;
pub mod client;
pub mod endpoint;
pub mod fact;
pub mod service;
pub mod stats;

#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use fact::{CriAnswer, CriFact, CriPod, CriUnknown, NoAnswer};
pub use service::{CriProbe, CriService};
pub use stats::{CriStats, LatencyHistogram};

use crate::redact::Redactor;

/// Redacts one label or annotation value: `(key, value) -> value to keep`.
pub type Redact = Arc<dyn Fn(&str, &str) -> String + Send + Sync>;

/// Keeps values as they are.
pub fn no_redaction() -> Redact {
    Arc::new(|_, v| v.to_string())
}

/// The argv rules of `redactor` (`--redact-args` and the defaults) applied to `key=value` as if
/// it were one argv element: `db-password=x` and `example.com/api-token=x` lose their value.
pub fn redact_with(redactor: Arc<Redactor>) -> Redact {
    Arc::new(move |k, v| {
        let mut element = [format!("{k}={v}")];
        if redactor.argv(&mut element) == 0 {
            return v.to_string();
        }
        let [e] = element;
        match e.strip_prefix(k).and_then(|r| r.strip_prefix('=')) {
            Some(value) => value.to_string(),
            None => crate::redact::REDACTED.to_string(),
        }
    })
}

/// How to reach the CRI and what to keep.
#[derive(Debug, Clone)]
pub struct CriConfig {
    /// `unix:///path` or a bare path (`--cri-endpoint`, env CONTAINER_RUNTIME_ENDPOINT); None:
    /// the first of [`endpoint::DEFAULT_ENDPOINTS`] that answers.
    pub endpoint: Option<String>,
    /// Keep the pod's labels and annotations (`--cri-labels`).
    pub labels: bool,
    /// Per-call timeout.
    pub timeout: Duration,
    /// Ids in flight at most (queued, running, or waiting for the runtime).
    pub queue: usize,
    /// Facts cached at most (and pods, separately).
    pub cache: usize,
    /// Waits before asking again about an id the runtime does not know yet (NotFound) or
    /// answered with an error: cri-o answers NotFound until CreateContainer returns, while
    /// the container's monitor and init already run. One retry per entry; then no answer.
    pub retries: Vec<Duration>,
}

impl Default for CriConfig {
    fn default() -> Self {
        Self {
            endpoint: None,
            labels: false,
            timeout: Duration::from_millis(500),
            queue: 1024,
            cache: 16384,
            retries: RETRIES_MS
                .iter()
                .map(|&ms| Duration::from_millis(ms))
                .collect(),
        }
    }
}

/// The default waits between lookups of an id the runtime does not know yet: 2.5 s in all,
/// past what cri-o and containerd take to create a container here (docs/events.md).
pub const RETRIES_MS: [u64; 7] = [20, 40, 80, 160, 320, 640, 1280];

/// Configuration errors of [`CriService::start`]. The daemon exits 2 on the first three and
/// runs without the CRI (a warning) on `NoEndpoint`.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("CRI endpoint {endpoint:?}: {why}")]
    BadEndpoint { endpoint: String, why: &'static str },
    #[error("CRI endpoint {}: no such file", path.display())]
    EndpointMissing { path: PathBuf },
    #[error("CRI endpoint {}: not a unix socket", path.display())]
    NotASocket { path: PathBuf },
    #[error("no CRI socket found (tried {})", tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "))]
    NoEndpoint { tried: Vec<PathBuf> },
}
