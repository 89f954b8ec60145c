//! `names-bench RUNTIME PODS`: when names and images reach a new container's events, on a real
//! runtime driven as kubelet drives it (`crio`: the cri-o lab of ../shared/crio; `containerd`:
//! the containerd CRI lab), for `cargo xtask bench` (BENCHMARKS.md). Needs root and the
//! podtrace binary ($PODTRACE_BIN).
//!
//! Twice, each with its own podtrace and PODS new pods of one container (made one after the
//! other, while it runs):
//! - `--hold-ms 0`: events go out at once; for each container, from its first event to its
//!   first event that carries the image (ms): what a reader waited before the hold;
//! - the default hold: every event of each container must carry its image; the summary's hold
//!   figures (events held, delay quantiles, most held at once).
//!
//! Prints one JSON object on stdout.
// A bench tool: it stops with a message on any failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use podtrace_tests::lab::{self, CriLab};
use podtrace_tests::tracer::{self, Run, Tracer};
use serde_json::{json, Value};

const SLEEP: &[&str] = &["/bin/sleep", "600"];

/// Starts podtrace, makes `pods` pods of one container, stops it; the run and the ids.
fn session(cri: &CriLab, pods: usize, hold_ms: Option<&str>) -> (Run, Vec<String>) {
    let endpoint = cri.endpoint();
    let mut args = vec!["--cri-endpoint", endpoint.as_str()];
    if let Some(h) = hold_ms {
        args.extend(["--hold-ms", h]);
    }
    let t = Tracer::start(&args);
    let mut keep = Vec::new();
    let mut ids = Vec::new();
    for i in 0..pods {
        let pod = cri.run_pod(&format!("bench{i}"));
        let c = pod.run("work", SLEEP);
        ids.push(c.id.clone());
        keep.push((pod, c));
    }
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let run = t.stop();
    drop(keep);
    (run, ids)
}

fn quantile(v: &mut [f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1;
    Some(v[i])
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runtime = args.get(1).map(String::as_str).unwrap_or("");
    let pods: usize = args.get(2).and_then(|n| n.parse().ok()).unwrap_or(10);
    lab::require_root();
    let cri = match runtime {
        "crio" => CriLab::crio(),
        "containerd" => CriLab::start(),
        other => {
            eprintln!("usage: names-bench crio|containerd PODS (not {other:?})");
            std::process::exit(2);
        }
    };
    let (unheld, ids) = session(&cri, pods, Some("0"));
    let mut waits = Vec::new();
    let mut never = 0;
    for id in &ids {
        let evs: Vec<&Value> = unheld
            .events
            .iter()
            .filter(|e| e["container"]["id"] == id.as_str())
            .collect();
        let first = evs.first().map(|e| tracer::event_ns(e));
        let named = evs
            .iter()
            .find(|e| e["container"]["image"].is_string())
            .map(|e| tracer::event_ns(e));
        match (first, named) {
            (Some(f), Some(n)) => waits.push(n.saturating_sub(f) as f64 / 1e6),
            _ => never += 1,
        }
    }
    let (held, ids) = session(&cri, pods, None);
    let mut unnamed = 0;
    let mut events = 0;
    for id in &ids {
        for e in held
            .events
            .iter()
            .filter(|e| e["container"]["id"] == id.as_str())
        {
            events += 1;
            if !e["container"]["image"].is_string() {
                unnamed += 1;
            }
        }
    }
    let h = held
        .summary
        .as_ref()
        .map(|s| s["hold"].clone())
        .unwrap_or(Value::Null);
    let out = json!({
        "runtime": cri.runtime_name(),
        "pods": pods,
        "without_hold": {
            "first_event_to_named_ms": {
                "p50": quantile(&mut waits.clone(), 0.5),
                "p99": quantile(&mut waits.clone(), 0.99),
                "max": quantile(&mut waits, 1.0),
            },
            "containers_with_no_event_named": never,
        },
        "with_hold": {
            "events_of_the_containers": events,
            "of_them_unnamed": unnamed,
            "hold": h,
        },
    });
    println!("{out}");
}
