//! The CRI v1 calls podtrace makes, each bounded by the per-call timeout, and how their errors
//! are told apart: "not found", "the runtime is not answering" (retry later) and "it answered
//! with an error" (give up on that id).
use std::collections::{BTreeMap, HashMap};
use std::error::Error as _;
use std::future::Future;
use std::time::Duration;

use k8s_cri::v1 as api;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;
use tonic::{Code, Status};

use super::fact::{CriFact, CriPod};
use super::Redact;

/// A label or annotation value longer than this is cut (at a character boundary) and marked:
/// annotations such as `kubectl.kubernetes.io/last-applied-configuration` hold whole manifests.
pub const MAX_LABEL_VALUE: usize = 4096;
/// What marks a cut value.
pub const CUT_MARK: &str = "…<cut>";

/// Why a call gave no answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CallError {
    /// The runtime answered NOT_FOUND.
    NotFound(String),
    /// The runtime did not answer: connection refused or broken, not HTTP/2 gRPC, or no
    /// answer within the timeout. Worth retrying once it answers again.
    Down { timeout: bool, msg: String },
    /// The runtime answered with another error: retrying will not help.
    Failed(String),
}

impl CallError {
    pub(crate) fn message(&self) -> &str {
        match self {
            Self::NotFound(m) | Self::Failed(m) | Self::Down { msg: m, .. } => m,
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// Errors made on our side of the socket (connect, HTTP/2, decode) carry their cause as the
/// status's source; a status the runtime sent has none.
fn classify(what: &str, id: &str, s: &Status) -> CallError {
    let mut msg = format!("{}: {:?}: {}", call_name(what, id), s.code(), s.message());
    let mut src = s.source();
    while let Some(e) = src {
        let text = e.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        src = e.source();
    }
    match s.code() {
        Code::NotFound => CallError::NotFound(msg),
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled => CallError::Down {
            timeout: s.code() == Code::DeadlineExceeded,
            msg,
        },
        _ if s.source().is_some() => CallError::Down {
            timeout: false,
            msg,
        },
        _ => CallError::Failed(msg),
    }
}

/// `ContainerStatus <id>`, or just `Version`.
fn call_name(what: &str, id: &str) -> String {
    if id.is_empty() {
        what.to_string()
    } else {
        format!("{what} {id}")
    }
}

fn non_empty(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

/// What ContainerStatus says about a container.
#[derive(Debug, Clone)]
pub(crate) struct ContainerInfo {
    pub name: String,
    pub attempt: u32,
    pub image: Option<String>,
    pub image_id: Option<String>,
}

/// A pod sandbox's metadata (and its attempt).
#[derive(Debug, Clone)]
pub(crate) struct SandboxInfo {
    pub pod: CriPod,
    pub attempt: u32,
}

/// One container or sandbox from the start-up listing.
#[derive(Debug, Clone)]
pub(crate) struct Listed {
    pub containers: Vec<api::Container>,
    pub sandboxes: Vec<api::PodSandbox>,
}

/// A cheap-to-clone CRI v1 client (the channel multiplexes calls on one connection).
#[derive(Clone)]
pub(crate) struct Client {
    rt: RuntimeServiceClient<Channel>,
    timeout: Duration,
    labels: bool,
    redact: Redact,
}

impl Client {
    pub(crate) fn new(channel: Channel, timeout: Duration, labels: bool, redact: Redact) -> Self {
        Self {
            rt: RuntimeServiceClient::new(channel),
            timeout,
            labels,
            redact,
        }
    }

    async fn call<T>(
        &self,
        what: &'static str,
        id: &str,
        fut: impl Future<Output = Result<tonic::Response<T>, Status>>,
    ) -> Result<T, CallError> {
        match tokio::time::timeout(self.timeout, fut).await {
            Err(_) => Err(CallError::Down {
                timeout: true,
                msg: format!(
                    "{}: no answer within {:?}",
                    call_name(what, id),
                    self.timeout
                ),
            }),
            Ok(Err(s)) => Err(classify(what, id, &s)),
            Ok(Ok(r)) => Ok(r.into_inner()),
        }
    }

    /// Version: the runtime's name and version; also the liveness probe.
    pub(crate) async fn version(&self) -> Result<api::VersionResponse, CallError> {
        let mut rt = self.rt.clone();
        let req = api::VersionRequest {
            version: "v1".to_string(),
        };
        self.call("Version", "", rt.version(req)).await
    }

    /// ContainerStatus (not verbose): name, attempt, image as the runtime reports it, image ref.
    pub(crate) async fn container_status(&self, id: &str) -> Result<ContainerInfo, CallError> {
        let mut rt = self.rt.clone();
        let req = api::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        };
        let resp = self
            .call("ContainerStatus", id, rt.container_status(req))
            .await?;
        let st = resp.status.ok_or_else(|| {
            CallError::Failed(format!("ContainerStatus {id}: answer without a status"))
        })?;
        let md = st.metadata.unwrap_or_default();
        Ok(ContainerInfo {
            name: md.name,
            attempt: md.attempt,
            image: st.image.and_then(|i| non_empty(i.image)),
            image_id: non_empty(st.image_ref).or_else(|| non_empty(st.image_id)),
        })
    }

    /// The pod sandbox of a container (ListContainers filtered by id: ContainerStatus does not
    /// carry it unless verbose, and then only in runtime-specific JSON). None if it is gone.
    pub(crate) async fn sandbox_of(&self, id: &str) -> Result<Option<String>, CallError> {
        let mut rt = self.rt.clone();
        let req = api::ListContainersRequest {
            filter: Some(api::ContainerFilter {
                id: id.to_string(),
                ..Default::default()
            }),
        };
        let resp = self
            .call("ListContainers", id, rt.list_containers(req))
            .await?;
        Ok(resp
            .containers
            .into_iter()
            .find(|c| c.id == id)
            .and_then(|c| non_empty(c.pod_sandbox_id)))
    }

    /// PodSandboxStatus (not verbose): the pod's name, namespace, uid (and labels, annotations
    /// if asked).
    pub(crate) async fn sandbox_status(&self, id: &str) -> Result<SandboxInfo, CallError> {
        let mut rt = self.rt.clone();
        let req = api::PodSandboxStatusRequest {
            pod_sandbox_id: id.to_string(),
            verbose: false,
        };
        let resp = self
            .call("PodSandboxStatus", id, rt.pod_sandbox_status(req))
            .await?;
        let st = resp.status.ok_or_else(|| {
            CallError::Failed(format!("PodSandboxStatus {id}: answer without a status"))
        })?;
        let sandbox_id = non_empty(st.id).unwrap_or_else(|| id.to_string());
        Ok(self.sandbox_info(sandbox_id, st.metadata, st.labels, st.annotations))
    }

    /// ListPodSandbox and ListContainers, unfiltered (the start-up listing).
    pub(crate) async fn list(&self) -> Result<Listed, CallError> {
        let mut rt = self.rt.clone();
        let sandboxes = self
            .call(
                "ListPodSandbox",
                "",
                rt.list_pod_sandbox(api::ListPodSandboxRequest { filter: None }),
            )
            .await?
            .items;
        let containers = self
            .call(
                "ListContainers",
                "",
                rt.list_containers(api::ListContainersRequest { filter: None }),
            )
            .await?
            .containers;
        Ok(Listed {
            containers,
            sandboxes,
        })
    }

    /// A sandbox's pod from a PodSandbox or a PodSandboxStatus.
    pub(crate) fn sandbox_info(
        &self,
        sandbox_id: String,
        md: Option<api::PodSandboxMetadata>,
        labels: HashMap<String, String>,
        annotations: HashMap<String, String>,
    ) -> SandboxInfo {
        let md = md.unwrap_or_default();
        let (labels, annotations) = if self.labels {
            (
                Some(self.redacted(labels)),
                Some(self.redacted(annotations)),
            )
        } else {
            (None, None)
        };
        SandboxInfo {
            pod: CriPod {
                sandbox_id,
                name: md.name,
                namespace: md.namespace,
                uid: md.uid,
                labels,
                annotations,
            },
            attempt: md.attempt,
        }
    }

    fn redacted(&self, map: HashMap<String, String>) -> BTreeMap<String, String> {
        map.into_iter()
            .map(|(k, v)| {
                let v = cut((self.redact)(&k, &v));
                (k, v)
            })
            .collect()
    }
}

/// Cuts a value to [`MAX_LABEL_VALUE`] bytes (at a character boundary) plus [`CUT_MARK`].
fn cut(mut v: String) -> String {
    if v.len() <= MAX_LABEL_VALUE {
        return v;
    }
    let mut end = MAX_LABEL_VALUE;
    while !v.is_char_boundary(end) {
        end -= 1;
    }
    v.truncate(end);
    v.push_str(CUT_MARK);
    v
}

/// The fact for a container, from its status and its pod.
pub(crate) fn container_fact(id: &str, c: ContainerInfo, pod: Option<CriPod>) -> CriFact {
    CriFact {
        id: id.to_string(),
        sandbox: false,
        name: non_empty(c.name),
        attempt: Some(c.attempt),
        image: c.image,
        image_id: c.image_id,
        pod,
    }
}

/// The fact for a pod sandbox id.
pub(crate) fn sandbox_fact(s: SandboxInfo) -> CriFact {
    CriFact {
        id: s.pod.sandbox_id.clone(),
        sandbox: true,
        name: None,
        attempt: Some(s.attempt),
        image: None,
        image_id: None,
        pod: Some(s.pod),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cut_keeps_short_values_and_marks_long_ones() {
        assert_eq!(cut("abc".into()), "abc");
        let long = "é".repeat(MAX_LABEL_VALUE); // 2 bytes each
        let c = cut(long);
        assert!(c.ends_with(CUT_MARK));
        assert!(c.len() <= MAX_LABEL_VALUE + CUT_MARK.len());
        assert!(c.trim_end_matches(CUT_MARK).chars().all(|ch| ch == 'é'));
    }

    #[test]
    fn status_codes_are_classified() {
        assert!(matches!(
            classify("X", "i", &Status::not_found("no")),
            CallError::NotFound(_)
        ));
        assert!(matches!(
            classify("X", "i", &Status::unavailable("down")),
            CallError::Down { timeout: false, .. }
        ));
        assert!(matches!(
            classify("X", "i", &Status::invalid_argument("bad")),
            CallError::Failed(_)
        ));
        let transport = Status::from_error(Box::new(std::io::Error::other("broken pipe")));
        assert!(
            matches!(classify("X", "i", &transport), CallError::Down { .. }),
            "{transport:?}"
        );
    }
}
