//! What the CRI said about one id: the `cri` record of traces (see the interface contract).
use std::collections::BTreeMap;

/// What the CRI said about one container id (a `cri` record in traces).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

/// The CRI has no answer for an id (a `cri_unknown` record in traces): the engine stops
/// waiting for one (events it held for the container go out without its names).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CriUnknown {
    pub id: String,
    pub why: NoAnswer,
}

/// Why an id got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoAnswer {
    /// The runtime did not know the id (neither a container nor a sandbox) at the last retry.
    NotFound,
    /// The runtime answered with an error at the last retry.
    Failed,
    /// The runtime stopped answering for the last attempt.
    Down,
}

/// What the CRI service hands the live loop for an id it was asked about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CriAnswer {
    Fact(Box<CriFact>),
    Unknown(CriUnknown),
}

impl CriAnswer {
    pub fn id(&self) -> &str {
        match self {
            CriAnswer::Fact(f) => &f.id,
            CriAnswer::Unknown(u) => &u.id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_unknown_fields() {
        let f = CriFact {
            id: "a".repeat(64),
            sandbox: false,
            name: Some("app".into()),
            attempt: Some(1),
            image: Some("localhost/busybox:1".into()),
            image_id: Some("sha256:00".into()),
            pod: Some(CriPod {
                sandbox_id: "b".repeat(64),
                name: "web-0".into(),
                namespace: "default".into(),
                uid: "0f2a".into(),
                labels: None,
                annotations: Some(BTreeMap::from([("k".into(), "v".into())])),
            }),
        };
        let text = serde_json::to_string(&f).expect("serialize");
        assert!(
            !text.contains("labels"),
            "None labels are not printed: {text}"
        );
        let back: CriFact = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(back, f);
        // `sandbox` defaults to false; unknown fields are an error (a trace from elsewhere).
        let min =
            r#"{"id":"x","name":null,"attempt":null,"image":null,"image_id":null,"pod":null}"#;
        let m: CriFact = serde_json::from_str(min).expect("minimal fact");
        assert!(!m.sandbox);
        let extra = r#"{"id":"x","name":null,"attempt":null,"image":null,"image_id":null,"pod":null,"x":1}"#;
        assert!(serde_json::from_str::<CriFact>(extra).is_err());
    }
}
