//! What the CRI said about a container: a fact, recorded in traces (`cri` records) so that
//! replay names containers as live did without asking any CRI.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What the CRI said about one container id (a `cri` record in traces).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriFact {
    /// The id podtrace asked about (a container id, or a pod sandbox id: see `sandbox`).
    pub id: String,
    /// The id is a pod sandbox (pause / infra), not a container.
    #[serde(default)]
    pub sandbox: bool,
    /// CRI container metadata.name (None for a sandbox).
    pub name: Option<String>,
    /// metadata.attempt (restart count).
    pub attempt: Option<u32>,
    /// ContainerStatus image.image as the CRI reports it (e.g. "localhost/busybox:1").
    pub image: Option<String>,
    /// ContainerStatus image_ref (e.g. "sha256:…").
    pub image_id: Option<String>,
    pub pod: Option<CriPod>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriPod {
    pub sandbox_id: String,
    pub name: String,
    pub namespace: String,
    pub uid: String,
    /// Only with --cri-labels (after redaction).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}
