//! When names and images reach a new kubelet container's events, on a real cri-o and on
//! containerd's CRI, without and with the hold (`--hold-ms`): the `names-bench` tool of the
//! tests crate (it drives the runtimes as kubelet does, with the labs the integration tests
//! use) run once per runtime; its JSON becomes a table.
use std::fmt::Write;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::util;

/// Pods made per runtime and session.
pub fn pods(quick: bool) -> usize {
    if quick {
        2
    } else {
        20
    }
}

/// Builds the bench tool `name` of the tests crate (release); its path.
pub fn build_tool(name: &str) -> Result<std::path::PathBuf> {
    let root = util::workspace_root();
    util::cargo(
        &root,
        &["build", "--release", "-p", "podtrace-tests", "--bin", name],
        &[],
    )?;
    Ok(root.join("target/release").join(name))
}

/// Runs a bench tool with `args` against `podtrace` ($PODTRACE_BIN); the JSON it prints.
pub fn run_tool(bin: &std::path::Path, args: &[&str], podtrace: &std::path::Path) -> Result<Value> {
    let o = std::process::Command::new(bin)
        .args(args)
        .env("PODTRACE_BIN", podtrace)
        .stderr(std::process::Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", bin.display()))?;
    anyhow::ensure!(
        o.status.success(),
        "{} {} failed ({})",
        bin.display(),
        args.join(" "),
        o.status
    );
    serde_json::from_slice(&o.stdout)
        .with_context(|| format!("{} {} printed no JSON", bin.display(), args.join(" ")))
}

/// Builds and runs `names-bench RUNTIME PODS` for each runtime; their JSON.
pub fn measure(podtrace: &std::path::Path, pods: usize) -> Result<Vec<Value>> {
    let bin = build_tool("names-bench")?;
    let mut out = Vec::new();
    for runtime in ["crio", "containerd"] {
        util::step(&format!(
            "names: {pods} pods on {runtime}, without and with the hold"
        ))?;
        out.push(run_tool(&bin, &[runtime, &pods.to_string()], podtrace)?);
    }
    Ok(out)
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".into(), |f| format!("{f:.0}"))
}

/// The table for BENCHMARKS.md.
pub fn render(runs: &[Value]) -> String {
    let mut t = String::from(
        "\n### Names and images of new containers (kubelet-style pods, one container each)\n\n\
         Without the hold (`--hold-ms 0`): from a container's first event to its first event \
         carrying the image, and how many containers had no such event at all (all their events \
         came before the CRI's answer). With the default hold: the events of those containers \
         that lacked the image (want 0), and the hold's figures (delays from an event to its \
         release, bucket upper bounds; the most events held at once).\n\n\
         | runtime | pods | without: first event to named p50 / p99 / max ms | without: containers with no named event | with: events / unnamed | with: held, delay p50 / p99 ms, max ms | with: most held at once |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for r in runs {
        let w = &r["without_hold"];
        let h = &r["with_hold"];
        let hold = &h["hold"];
        let _ = writeln!(
            t,
            "| {} | {} | {} / {} / {} | {} | {} / {} | {}, {} / {}, {:.0} | {} |",
            r["runtime"].as_str().unwrap_or("?"),
            r["pods"],
            ms(&w["first_event_to_named_ms"]["p50"]),
            ms(&w["first_event_to_named_ms"]["p99"]),
            ms(&w["first_event_to_named_ms"]["max"]),
            w["containers_with_no_event_named"],
            h["events_of_the_containers"],
            h["of_them_unnamed"],
            hold["held"],
            hold["delay_p50_ms"],
            hold["delay_p99_ms"],
            hold["delay_max_ns"].as_f64().unwrap_or(0.0) / 1e6,
            hold["peak"],
        );
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_per_runtime() {
        let r: Value = serde_json::json!({
            "runtime": "cri-o", "pods": 2,
            "without_hold": {"first_event_to_named_ms": {"p50": 50.3, "p99": 80.0, "max": 81.2},
                             "containers_with_no_event_named": 1},
            "with_hold": {"events_of_the_containers": 30, "of_them_unnamed": 0,
                          "hold": {"held": 40, "delay_p50_ms": 50, "delay_p99_ms": 100,
                                   "delay_max_ns": 93000000, "peak": 12}}
        });
        let t = render(&[r]);
        assert!(
            t.contains("| cri-o | 2 | 50 / 80 / 81 | 1 | 30 / 0 | 40, 50 / 100, 93 | 12 |"),
            "{t}"
        );
    }
}
