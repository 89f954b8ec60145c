//! `podtrace check`'s output, from the [`Report`]: text (one line per item, then a summary)
//! or JSON (the report itself).
use std::fmt::Write;

use super::facts::Load;
use super::verdict::Verdict;
use super::Report;

/// One line per item: verdict, item, what was found, and the fix when there is one; then
/// the summary.
pub fn text(r: &Report) -> String {
    let mut out = String::new();
    for l in &r.lines {
        let _ = write!(
            out,
            "{:<5} {:<14} {}",
            l.verdict.as_str(),
            l.item.as_str(),
            l.what
        );
        if let Some(fix) = &l.fix {
            let _ = write!(out, "; fix: {fix}");
        }
        out.push('\n');
    }
    let count = |v: Verdict| r.lines.iter().filter(|l| l.verdict == v).count();
    let outcome = match (r.verdict, &r.facts.load) {
        (Verdict::Fail, _) => "`podtrace run` would stop on this node as started".to_string(),
        (_, Load::Loaded { path, .. }) => format!("`podtrace run` can start here, as {path}"),
        (_, Load::Failed { .. }) => "`podtrace run` can start here".to_string(),
    };
    let _ = writeln!(
        out,
        "podtrace check: {} ({} ok, {} warn, {} fail): {outcome}",
        r.verdict.as_str(),
        count(Verdict::Ok),
        count(Verdict::Warn),
        count(Verdict::Fail)
    );
    out
}

/// The report as pretty JSON (`--json`).
pub fn json(r: &Report) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(r)
}

#[cfg(test)]
mod tests {
    use super::super::verdict::{Item, Line};
    use super::*;

    #[test]
    fn one_line_per_item_then_the_summary() {
        let facts = super::super::tests_support::facts();
        let lines = vec![
            Line {
                item: Item::Kernel,
                verdict: Verdict::Ok,
                what: "6.1.0 x86_64".into(),
                fix: None,
            },
            Line {
                item: Item::PidNamespace,
                verdict: Verdict::Fail,
                what: "a pid namespace of its own".into(),
                fix: Some("hostPID: true".into()),
            },
        ];
        let r = Report {
            verdict: Verdict::Fail,
            lines,
            facts,
        };
        let t = text(&r);
        let got: Vec<&str> = t.lines().collect();
        assert_eq!(got.len(), 3, "{t}");
        assert_eq!(got[0], "ok    kernel         6.1.0 x86_64");
        assert_eq!(
            got[1],
            "fail  pid-namespace  a pid namespace of its own; fix: hostPID: true"
        );
        assert!(
            got[2].starts_with("podtrace check: fail (1 ok, 0 warn, 1 fail)"),
            "{t}"
        );
        let j: serde_json::Value = serde_json::from_str(&json(&r).expect("json")).expect("parses");
        assert_eq!(j["verdict"], "fail");
        assert_eq!(j["lines"][1]["item"], "pid-namespace");
        assert_eq!(j["lines"][1]["fix"], "hostPID: true");
        assert_eq!(j["facts"]["load"]["state"], "loaded");
        assert_eq!(j["facts"]["load"]["path"]["attach"], "tp-btf");
    }
}
