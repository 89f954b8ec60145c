//! What `podtrace top` costs beside `podtrace run`: the `top-bench` tool of the tests crate
//! runs both at once (top in a tmux pane) on one exec storm; its JSON becomes a table.
use anyhow::Result;
use serde_json::Value;

use super::names;
use crate::util;

/// Storm processes for the measurement.
pub fn processes(quick: bool) -> usize {
    if quick {
        1_000
    } else {
        20_000
    }
}

/// Builds and runs `top-bench PROCESSES`; its JSON.
pub fn measure(podtrace: &std::path::Path, processes: usize) -> Result<Value> {
    let bin = names::build_tool("top-bench")?;
    util::step(&format!(
        "top beside run: {processes} storm processes, both tracing at once"
    ))?;
    names::run_tool(&bin, &[&processes.to_string()], podtrace)
}

fn num(v: &Value, digits: usize) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |f| format!("{f:.digits$}"))
}

/// The table for BENCHMARKS.md.
pub fn render(r: &Value) -> String {
    let mut t = format!(
        "\n### `podtrace top` beside `podtrace run`\n\n\
         Both at once on one storm of {} × fork+exec+wait of `/bin/true`, flat out ({} \
         processes/s): `podtrace run --output /dev/null` and `podtrace top` in a 160x50 tmux \
         pane (refresh 1 s). CPU from just before the storm to 2 s after it.\n\n\
         | command | CPU ms | CPU µs per storm process | % of a core during the storm | VmHWM MiB | VmRSS MiB at the end |\n\
         |---|---|---|---|---|---|\n",
        r["processes"],
        num(&r["processes_per_s"], 0)
    );
    for name in ["run", "top"] {
        let x = &r[name];
        t.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} |\n",
            num(&x["cpu_ms"], 0),
            num(&x["cpu_us_per_process"], 1),
            num(&x["cpu_percent_of_a_core"], 1),
            num(&x["vm_hwm_mib"], 1),
            num(&x["vm_rss_mib"], 1),
        ));
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_each() {
        let r: Value = serde_json::json!({
            "processes": 100, "processes_per_s": 1500.4,
            "run": {"cpu_ms": 40.0, "cpu_us_per_process": 400.0, "cpu_percent_of_a_core": 6.04,
                    "vm_hwm_mib": 27.01, "vm_rss_mib": 20.0},
            "top": {"cpu_ms": 90.0, "cpu_us_per_process": 900.0, "cpu_percent_of_a_core": 13.5,
                    "vm_hwm_mib": 30.0, "vm_rss_mib": 29.96}
        });
        let t = render(&r);
        assert!(t.contains("100 × fork+exec+wait"), "{t}");
        assert!(t.contains("(1500 processes/s)"), "{t}");
        assert!(
            t.contains("| run | 40 | 400.0 | 6.0 | 27.0 | 20.0 |"),
            "{t}"
        );
        assert!(
            t.contains("| top | 90 | 900.0 | 13.5 | 30.0 | 30.0 |"),
            "{t}"
        );
    }
}
