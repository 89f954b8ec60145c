//! Which enriched events `run` and `replay` print (`--pod`, `--namespace`, `--container`,
//! `--containers-only`, `--event`). `lost` lines always pass: loss is never filtered away.
use crate::error::Failure;
use crate::output::Event;

#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    pub pod: Option<String>,
    pub namespace: Option<String>,
    /// Container id prefix or container name.
    pub container: Option<String>,
    pub containers_only: bool,
    /// Event types to keep (None: all).
    pub types: Option<Vec<String>>,
}

pub const TYPES: [&str; 4] = ["exec", "fork", "exit", "thread"];

/// Parses `--event exec,fork,exit`.
pub fn parse_types(list: &str) -> Result<Vec<String>, Failure> {
    let mut out = Vec::new();
    for t in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if !TYPES.contains(&t) {
            return Err(Failure::BadInput(format!(
                "--event: unknown event type `{t}` (expected some of {})",
                TYPES.join(",")
            )));
        }
        out.push(t.to_string());
    }
    if out.is_empty() {
        return Err(Failure::BadInput("--event: empty list".into()));
    }
    Ok(out)
}

impl EventFilter {
    pub fn is_noop(&self) -> bool {
        self.pod.is_none()
            && self.namespace.is_none()
            && self.container.is_none()
            && !self.containers_only
            && self.types.is_none()
    }

    pub fn keep(&self, ev: &Event) -> bool {
        let Some(p) = ev.process() else {
            return true;
        };
        if let Some(types) = &self.types {
            if !types.iter().any(|t| t == ev.kind()) {
                return false;
            }
        }
        if (self.containers_only || self.container.is_some()) && p.container.is_none() {
            return false;
        }
        if let Some(want) = &self.container {
            let Some(c) = &p.container else { return false };
            if !(c.id.starts_with(want.as_str()) || c.name.as_deref() == Some(want.as_str())) {
                return false;
            }
        }
        if let Some(want) = &self.pod {
            if p.pod.as_ref().and_then(|x| x.name.as_deref()) != Some(want.as_str()) {
                return false;
            }
        }
        if let Some(want) = &self.namespace {
            if p.pod.as_ref().and_then(|x| x.namespace.as_deref()) != Some(want.as_str()) {
                return false;
            }
        }
        true
    }
}
