//! The matrix table: one column per kernel and mode, one row per check, and every failure's
//! reason below it. Markdown, so a run's table can go into docs/testing.md as printed.
use super::boot::Report;

/// One column: a kernel (or a kernel that could not be fetched) in one mode.
pub struct Column {
    /// e.g. `6.1 v2`
    pub title: String,
    /// `Err(reason)`: the kernel could not be fetched, nothing was booted.
    pub report: Result<Report, String>,
}

pub struct Table {
    pub markdown: String,
    pub failures: usize,
}

enum Cell {
    Pass(String),
    Fail(String),
}

fn cell(c: &Column, check: &str) -> Cell {
    let r = match &c.report {
        Ok(r) => r,
        Err(e) => return Cell::Fail(e.clone()),
    };
    if check == "boot" {
        return match &r.error {
            None => Cell::Pass(format!("{:.0} s", r.secs)),
            Some(e) => Cell::Fail(e.clone()),
        };
    }
    match r.results.iter().find(|(name, _, _)| name == check) {
        Some((_, true, d)) => Cell::Pass(d.clone()),
        Some((_, false, d)) => Cell::Fail(d.clone()),
        None => Cell::Fail(match &r.error {
            Some(e) => format!("not reported: {e}"),
            None => "not reported by the guest".to_string(),
        }),
    }
}

/// `legend`: lines above the table naming each kernel.
pub fn render(legend: &[String], cols: &[Column]) -> Table {
    let mut rows: Vec<String> = vec!["boot".to_string()];
    for c in cols {
        if let Ok(r) = &c.report {
            for name in r.plan.iter().chain(r.results.iter().map(|(n, _, _)| n)) {
                if !rows.contains(name) {
                    rows.push(name.clone());
                }
            }
        }
    }
    let mut md = String::new();
    for l in legend {
        md.push_str(&format!("- {l}\n"));
    }
    md.push('\n');
    md.push_str("| check |");
    for c in cols {
        md.push_str(&format!(" {} |", c.title));
    }
    md.push_str("\n|---|");
    for _ in cols {
        md.push_str("---|");
    }
    md.push('\n');
    let mut fails = Vec::new();
    for row in &rows {
        md.push_str(&format!("| {row} |"));
        for c in cols {
            match cell(c, row) {
                Cell::Pass(d) if row == "boot" => md.push_str(&format!(" pass {d} |")),
                Cell::Pass(_) => md.push_str(" pass |"),
                Cell::Fail(why) => {
                    md.push_str(" **FAIL** |");
                    fails.push(format!("{} {row}: {why}", c.title));
                }
            }
        }
        md.push('\n');
    }
    if !fails.is_empty() {
        md.push_str("\nFailures:\n\n");
        for f in &fails {
            md.push_str(&format!("- {}\n", f.replace('\n', " ")));
        }
    }
    Table {
        markdown: md,
        failures: fails.len(),
    }
}

/// The support table: one row per kernel and cgroup mode, one column per way podtrace ran in
/// it (the part of a check's name before `: `, e.g. `deployed`), plus the boot and the checks
/// made once a boot. A cell passes when every check of its group passed (`pass 15/15`).
pub fn support(cols: &[Column]) -> String {
    let group_of = |check: &str| -> String {
        check
            .split_once(": ")
            .map_or_else(|| check.to_string(), |(g, _)| g.to_string())
    };
    let mut groups: Vec<String> = vec!["boot".to_string()];
    for c in cols {
        if let Ok(r) = &c.report {
            for name in &r.plan {
                let g = group_of(name);
                if !groups.contains(&g) {
                    groups.push(g);
                }
            }
        }
    }
    let mut md = String::from("| kernel, cgroups |");
    for g in &groups {
        md.push_str(&format!(" {g} |"));
    }
    md.push_str("\n|---|");
    for _ in &groups {
        md.push_str("---|");
    }
    md.push('\n');
    for c in cols {
        md.push_str(&format!("| {} |", c.title));
        for g in &groups {
            let cell = match &c.report {
                Err(_) => "**FAIL** (not fetched)".to_string(),
                Ok(r) if g == "boot" => match (&r.error, &r.retried) {
                    (None, None) => format!("pass {:.0} s", r.secs),
                    (None, Some(_)) => format!("pass {:.0} s (retried)", r.secs),
                    (Some(_), _) => "**FAIL**".to_string(),
                },
                Ok(r) => {
                    let planned: Vec<&String> =
                        r.plan.iter().filter(|n| group_of(n) == *g).collect();
                    let passed = planned
                        .iter()
                        .filter(|n| r.results.iter().any(|(m, ok, _)| m == **n && *ok))
                        .count();
                    if planned.is_empty() {
                        "-".to_string()
                    } else if passed == planned.len() {
                        format!("pass {passed}/{}", planned.len())
                    } else {
                        format!("**FAIL** {passed}/{}", planned.len())
                    }
                }
            };
            md.push_str(&format!(" {cell} |"));
        }
        md.push('\n');
    }
    md
}

/// Every check's detail line, passes included (target/kernels/report.md).
pub fn details(cols: &[Column]) -> String {
    let mut s = String::new();
    for c in cols {
        s.push_str(&format!("\n## {}\n\n", c.title));
        match &c.report {
            Err(e) => s.push_str(&format!("- kernel: FAIL {e}\n")),
            Ok(r) => {
                if let Some(k) = &r.kernel {
                    s.push_str(&format!("- guest kernel: {k}\n"));
                }
                s.push_str(&format!(
                    "- boot: {:.1} s{}{}\n",
                    r.secs,
                    r.error
                        .as_ref()
                        .map_or(String::new(), |e| format!(", FAIL {e}")),
                    r.retried
                        .as_ref()
                        .map_or(String::new(), |e| format!(" (booted again: {e})"))
                ));
                for (name, ok, d) in &r.results {
                    s.push_str(&format!(
                        "- {name}: {} {d}\n",
                        if *ok { "pass" } else { "FAIL" }
                    ));
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_and_explained() {
        let ok = Report {
            plan: vec!["a".into(), "b".into()],
            results: vec![("a".into(), true, "fine".into())],
            secs: 12.0,
            ..Report::default()
        };
        let cols = [
            Column {
                title: "6.1 v2".into(),
                report: Ok(ok),
            },
            Column {
                title: "5.10 v2".into(),
                report: Err("download failed".into()),
            },
        ];
        let t = render(&["x".into()], &cols);
        // 6.1: b not reported; 5.10: boot, a, b.
        assert_eq!(t.failures, 4, "{}", t.markdown);
        assert!(t.markdown.contains("| boot | pass 12 s | **FAIL** |"));
        assert!(t.markdown.contains("- 6.1 v2 b: not reported by the guest"));
        assert!(t.markdown.contains("- 5.10 v2 a: download failed"));
    }
}
