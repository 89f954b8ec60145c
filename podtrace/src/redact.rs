//! Secrets out of argv before anything keeps them (`--redact-args`, `--no-default-redaction`).
//!
//! `run` and `record` pass every decoded kernel event and every start-up /proc process through
//! a [`Redactor`] before the engine, the NDJSON output or the trace recorder sees it, so a
//! trace file never holds what was redacted and its replay prints the redacted text.
//!
//! Elements keep their number and position (the engine reads runtime helpers' argv by
//! position). What a rule finds is replaced by [`REDACTED`]; flag and variable names stay.
//! The default rules are listed in docs/operations.md.
use anyhow::{Context, Result};
use regex::{Captures, Regex};

use crate::kernel_event::KernelEvent;
use crate::snapshot::ProcInfo;

/// What a secret is replaced by.
pub const REDACTED: &str = "<redacted>";

/// Words that make a flag or variable name secret-bearing (matched case-insensitively).
const SECRET_WORDS: &str =
    r"(?:password|passwd|passphrase|secret|token|api[_-]?key|access[_-]?key|private[_-]?key)";

/// Name endings whose value is a reference to a secret, not the secret (`--token-file=/path`).
const REFERENCE_SUFFIXES: [&str; 5] = ["file", "path", "dir", "name", "ref"];

/// Programs whose `-pVALUE` (value glued to the flag) is a password.
const MYSQL_LIKE: &str = r"^(?:mysql|mariadb)[a-z_-]*$";

/// The built-in rules, compiled once.
struct Defaults {
    /// The whole element is `NAME=VALUE` with a secret-bearing name.
    element_kv: Regex,
    /// `NAME=VALUE` inside a longer element (a shell script, a URL query).
    inner_kv: Regex,
    /// The whole element is a secret-bearing flag; its value is the next element.
    flag_alone: Regex,
    /// `--password VALUE` inside a longer element.
    inner_flag_space: Regex,
    /// `Authorization: Bearer VALUE` and similar HTTP headers.
    header: Regex,
    /// `scheme://user:PASSWORD@host`.
    url_userinfo: Regex,
    /// openssl's `pass:VALUE`.
    openssl_pass: Regex,
    /// argv[0] basename of a mysql-like client.
    mysql_like: Regex,
    /// A script that runs a mysql-like client.
    mysql_word: Regex,
    /// `-pVALUE` inside a script that runs a mysql-like client.
    inner_mysql_p: Regex,
}

fn compile(what: &str, pattern: &str) -> Result<Regex> {
    Regex::new(pattern).with_context(|| format!("built-in redaction rule {what}"))
}

impl Defaults {
    fn new() -> Result<Self> {
        // The secret word ends the name or is followed by a separator: `--db-token`,
        // `AWS_SECRET_ACCESS_KEY`, but not `--tokenizer`.
        let name = format!(r"(?:--?)?[a-z0-9_.-]*{SECRET_WORDS}(?:[_.-][a-z0-9_.-]*)?");
        Ok(Self {
            element_kv: compile(
                "element_kv",
                &format!(r"(?is)^(?P<keep>{name}=)(?P<value>.+)$"),
            )?,
            inner_kv: compile(
                "inner_kv",
                &format!(r#"(?i)(?P<keep>{name}=)(?P<value>"[^"]*"|'[^']*'|[^\s'"&]+)"#),
            )?,
            flag_alone: compile(
                "flag_alone",
                &format!(r"(?i)^--?[a-z0-9_.-]*{SECRET_WORDS}(?:[_.-][a-z0-9_.-]*)?$"),
            )?,
            inner_flag_space: compile(
                "inner_flag_space",
                &format!(
                    r#"(?i)(?P<keep>--?[a-z0-9_.-]*{SECRET_WORDS}(?:[_.-][a-z0-9_.-]*)?\s+)(?P<value>"[^"]*"|'[^']*'|[^\s'"&;|-][^\s'"&;|]*)"#
                ),
            )?,
            header: compile(
                "header",
                r#"(?i)(?P<keep>\b(?:proxy-authorization|authorization|x-auth-token|x-api-key|private-token)\s*:\s*(?:(?:bearer|basic|token|digest|negotiate)\s+)?)(?P<value>[^\s'"]+)"#,
            )?,
            url_userinfo: compile(
                "url_userinfo",
                r#"(?i)(?P<keep>\b(?P<scheme>[a-z][a-z0-9+.-]*)://[^/\s:@'"]+:)(?P<value>[^/\s@'"]+)@"#,
            )?,
            openssl_pass: compile("openssl_pass", r#"(?P<keep>\bpass:)(?P<value>[^\s'"]+)"#)?,
            mysql_like: compile("mysql_like", MYSQL_LIKE)?,
            mysql_word: compile("mysql_word", r"\b(?:mysql|mariadb)[a-z_-]*\b")?,
            inner_mysql_p: compile(
                "inner_mysql_p",
                r#"(?P<keep>(?:^|\s)-p)(?P<value>[^\s'"]+)"#,
            )?,
        })
    }
}

/// Whether a flag or variable name (with its `-`/`--` and `=`, any case) names a reference to
/// a secret (a file, a path) rather than the secret.
fn names_a_reference(name: &str) -> bool {
    let n = name
        .trim_end_matches(|c: char| c == '=' || c.is_whitespace())
        .to_ascii_lowercase();
    REFERENCE_SUFFIXES.iter().any(|s| n.ends_with(s))
}

/// Container image transports: in `docker://alpine:3.18@sha256:...` the `:3.18@` is a tag.
const IMAGE_SCHEMES: [&str; 6] = [
    "docker",
    "docker-archive",
    "docker-daemon",
    "oci",
    "oci-archive",
    "containers-storage",
];

/// Replaces the `value` group of every match whose `keep` group does not name a reference
/// (and whose `scheme`, if any, is not an image transport).
fn replace_values(re: &Regex, text: &str) -> Option<String> {
    if !re.is_match(text) {
        return None;
    }
    let out = re.replace_all(text, |c: &Captures| {
        let keep = c.name("keep").map_or("", |m| m.as_str());
        let value = c.name("value").map_or("", |m| m.as_str());
        let whole = c.get(0).map_or("", |m| m.as_str());
        let image = c
            .name("scheme")
            .is_some_and(|m| IMAGE_SCHEMES.contains(&m.as_str().to_ascii_lowercase().as_str()));
        if image || names_a_reference(keep) || value == REDACTED {
            return whole.to_string();
        }
        // What follows the value inside the match (the `@` of a URL) stays.
        let tail = whole
            .get(keep.len() + value.len()..)
            .unwrap_or_default()
            .to_string();
        format!("{keep}{REDACTED}{tail}")
    });
    (out != text).then(|| out.into_owned())
}

/// A `NAME=` (or `--NAME=`) at the start of an element, kept when a user rule redacts it.
fn leading_name(element: &str) -> Option<&str> {
    let eq = element.find('=')?;
    let name = &element[..eq];
    let bare = name.trim_start_matches('-');
    let ok = name.len() - bare.len() <= 2
        && bare
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && bare
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    ok.then_some(&element[..=eq])
}

/// Redacts secrets from argv; see the module documentation.
pub struct Redactor {
    defaults: Option<Defaults>,
    user: Vec<Regex>,
}

impl Redactor {
    /// `user`: the `--redact-args` patterns; `defaults`: whether the built-in rules apply.
    pub fn new(user: &[String], defaults: bool) -> Result<Self> {
        let user = user
            .iter()
            .map(|p| Regex::new(p).with_context(|| format!("--redact-args `{p}`")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            defaults: if defaults {
                Some(Defaults::new()?)
            } else {
                None
            },
            user,
        })
    }

    /// A redactor that changes nothing.
    pub fn disabled() -> Self {
        Self {
            defaults: None,
            user: Vec::new(),
        }
    }

    pub fn is_disabled(&self) -> bool {
        self.defaults.is_none() && self.user.is_empty()
    }

    /// Redacts argv in place; returns how many elements changed.
    pub fn argv(&self, argv: &mut [String]) -> u64 {
        if self.is_disabled() {
            return 0;
        }
        let mut changed = 0;
        let mysql_like = match (&self.defaults, argv.first()) {
            (Some(d), Some(a0)) => d.mysql_like.is_match(a0.rsplit('/').next().unwrap_or(a0)),
            _ => false,
        };
        let mut value_next = false;
        for (i, element) in argv.iter_mut().enumerate() {
            let redact_whole = std::mem::take(&mut value_next);
            let new = if self.user.iter().any(|re| re.is_match(element)) {
                Some(match leading_name(element) {
                    Some(name) => format!("{name}{REDACTED}"),
                    None => REDACTED.to_string(),
                })
            } else if let Some(d) = &self.defaults {
                if redact_whole && !(element.starts_with('-') && element.len() > 1) {
                    Some(REDACTED.to_string())
                } else {
                    if i > 0 && d.flag_alone.is_match(element) && !names_a_reference(element) {
                        value_next = true;
                    }
                    self.default_rules(d, element, i > 0 && mysql_like)
                }
            } else {
                None
            };
            if let Some(new) = new {
                if new != *element {
                    *element = new;
                    changed += 1;
                }
            }
        }
        changed
    }

    /// The built-in rules on one element; None when nothing matched.
    fn default_rules(&self, d: &Defaults, element: &str, mysql_arg: bool) -> Option<String> {
        if mysql_arg {
            if let Some(rest) = element.strip_prefix("-p") {
                if !rest.is_empty() && rest != REDACTED {
                    return Some(format!("-p{REDACTED}"));
                }
            }
        }
        let mut cur: Option<String> = None;
        let rules: [&Regex; 6] = [
            &d.element_kv,
            &d.inner_kv,
            &d.inner_flag_space,
            &d.header,
            &d.url_userinfo,
            &d.openssl_pass,
        ];
        for re in rules {
            let text = cur.as_deref().unwrap_or(element);
            if let Some(new) = replace_values(re, text) {
                cur = Some(new);
            }
        }
        let text = cur.as_deref().unwrap_or(element);
        if d.mysql_word.is_match(text) {
            if let Some(new) = replace_values(&d.inner_mysql_p, text) {
                cur = Some(new);
            }
        }
        cur
    }

    /// Redacts an exec event's argv (other events carry none).
    pub fn event(&self, ev: &mut KernelEvent) -> u64 {
        match &mut ev.exec {
            Some(exec) => self.argv(&mut exec.argv),
            None => 0,
        }
    }

    /// Redacts a start-up process's argv.
    pub fn process(&self, p: &mut ProcInfo) -> u64 {
        self.argv(&mut p.argv)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Redactor {
        Redactor::new(&[], true).expect("built-in rules compile")
    }

    fn redact(r: &Redactor, argv: &[&str]) -> Vec<String> {
        let mut v: Vec<String> = argv.iter().map(|s| s.to_string()).collect();
        r.argv(&mut v);
        v
    }

    #[track_caller]
    fn check(argv: &[&str], want: &[&str]) {
        assert_eq!(redact(&defaults(), argv), want, "redacting {argv:?}");
    }

    #[test]
    fn flag_equals_value_keeps_the_flag() {
        check(
            &["app", "--password=hunter2", "--db-token=abc", "-secret=x"],
            &[
                "app",
                "--password=<redacted>",
                "--db-token=<redacted>",
                "-secret=<redacted>",
            ],
        );
        check(
            &["app", "--Client-Secret=a b c", "--api-key=k", "--apikey=k"],
            &[
                "app",
                "--Client-Secret=<redacted>",
                "--api-key=<redacted>",
                "--apikey=<redacted>",
            ],
        );
    }

    #[test]
    fn flag_then_value_as_two_elements() {
        check(
            &[
                "app",
                "--password",
                "hunter2",
                "--token",
                "t0k",
                "--verbose",
            ],
            &[
                "app",
                "--password",
                "<redacted>",
                "--token",
                "<redacted>",
                "--verbose",
            ],
        );
        // A flag right after is not taken for the value (mysql's bare --password prompts).
        check(
            &["mysql", "--password", "--user", "root"],
            &["mysql", "--password", "--user", "root"],
        );
        // The flag is the last element: nothing to redact, no panic.
        check(&["app", "--secret"], &["app", "--secret"]);
    }

    #[test]
    fn environment_assignments() {
        check(
            &[
                "env",
                "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG",
                "AWS_ACCESS_KEY_ID=AKIA",
                "GITHUB_TOKEN=ghp_x",
                "HOME=/root",
                "aws",
            ],
            &[
                "env",
                "AWS_SECRET_ACCESS_KEY=<redacted>",
                "AWS_ACCESS_KEY_ID=<redacted>",
                "GITHUB_TOKEN=<redacted>",
                "HOME=/root",
                "aws",
            ],
        );
    }

    #[test]
    fn inside_shell_scripts() {
        check(
            &["sh", "-c", ": --password=hunter2"],
            &["sh", "-c", ": --password=<redacted>"],
        );
        check(
            &[
                "sh",
                "-c",
                "login --token s3cr3t && PGPASSWORD='x y' psql -h db",
            ],
            &[
                "sh",
                "-c",
                "login --token <redacted> && PGPASSWORD=<redacted> psql -h db",
            ],
        );
        check(
            &["sh", "-c", "mysql -uroot -proot123 -P 3306 db"],
            &["sh", "-c", "mysql -uroot -p<redacted> -P 3306 db"],
        );
    }

    #[test]
    fn http_headers_urls_and_openssl() {
        check(
            &[
                "curl",
                "-H",
                "Authorization: Bearer eyJhbGciOi",
                "https://x",
            ],
            &[
                "curl",
                "-H",
                "Authorization: Bearer <redacted>",
                "https://x",
            ],
        );
        check(
            &["curl", "-H", "X-API-Key: abc123"],
            &["curl", "-H", "X-API-Key: <redacted>"],
        );
        check(
            &["git", "clone", "https://bob:pa55@example.com/r.git"],
            &["git", "clone", "https://bob:<redacted>@example.com/r.git"],
        );
        check(
            &["skopeo", "copy", "docker://alpine:3.18@sha256:0a1b"],
            &["skopeo", "copy", "docker://alpine:3.18@sha256:0a1b"],
        );
        check(
            &["curl", "https://example.com/x?access_token=abc&page=2"],
            &[
                "curl",
                "https://example.com/x?access_token=<redacted>&page=2",
            ],
        );
        check(
            &["openssl", "rsa", "-passin", "pass:abc"],
            &["openssl", "rsa", "-passin", "pass:<redacted>"],
        );
    }

    #[test]
    fn mysql_glued_password_only_for_mysql_like_programs() {
        check(
            &["/usr/bin/mysql", "-uroot", "-psecret", "-P", "3306"],
            &["/usr/bin/mysql", "-uroot", "-p<redacted>", "-P", "3306"],
        );
        check(
            &["mariadb-dump", "-pX", "db"],
            &["mariadb-dump", "-p<redacted>", "db"],
        );
        // conmon's -p is its pid file; other programs' -pVALUE is not a password.
        check(
            &["/usr/bin/conmon", "-p", "/run/x/pidfile", "-pfoo"],
            &["/usr/bin/conmon", "-p", "/run/x/pidfile", "-pfoo"],
        );
    }

    #[test]
    fn references_to_secrets_are_kept() {
        let argv = [
            "kubelet",
            "--token-file=/var/run/secrets/token",
            "--password-file",
            "/etc/pw",
            "--tls-private-key-file=/etc/k.pem",
            "--secret-name=db",
            "--secret-dir",
            "/run/s",
        ];
        check(&argv, &argv);
    }

    #[test]
    fn harmless_argv_is_unchanged() {
        let argv = [
            "/bin/sh",
            "-c",
            "exit 7",
            "PWD=/root",
            "--passes=3",
            "-p",
            "8080",
            "--tokenizer",
            "bert",
            "--max-tokens=5",
        ];
        check(&argv, &argv);
    }

    #[test]
    fn runtime_helper_argv_from_the_fixtures_is_unchanged() {
        // The engine attributes containers from conmon / shim / runc argv: no rule may touch it.
        let lab = include_str!("../tests/fixtures/lab-runtimes.jsonl");
        let seed = include_str!("../tests/fixtures/seed-node.txt");
        let mut argvs: Vec<Vec<String>> = lab
            .lines()
            .filter(|l| l.starts_with('{'))
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("fixture line is JSON");
                v["argv"]
                    .as_array()
                    .expect("fixture line has argv")
                    .iter()
                    .map(|a| a.as_str().expect("argv element is a string").to_string())
                    .collect()
            })
            .collect();
        argvs.extend(
            seed.lines()
                .filter(|l| l.starts_with("root "))
                .map(|l| l.split_whitespace().skip(7).map(str::to_string).collect()),
        );
        assert!(argvs.len() > 20, "fixtures read: {}", argvs.len());
        let r = defaults();
        for argv in argvs {
            let mut v = argv.clone();
            assert_eq!(r.argv(&mut v), 0, "changed {argv:?} to {v:?}");
        }
    }

    #[test]
    fn user_patterns_replace_the_element_keeping_a_leading_name() {
        let r = Redactor::new(&["^--db-url=".into(), "hunter[0-9]".into()], false)
            .expect("valid patterns");
        assert_eq!(
            redact(
                &r,
                &["app", "--db-url=postgres://x", "hunter2", "--password=p"]
            ),
            ["app", "--db-url=<redacted>", "<redacted>", "--password=p"],
            "defaults are off"
        );
        assert_eq!(
            redact(&r, &["sh", "-c", "echo hunter2"]),
            ["sh", "-c", "<redacted>"]
        );
        let both = Redactor::new(&["^internal-".into()], true).expect("valid pattern");
        assert_eq!(
            redact(&both, &["app", "internal-id", "--token=x"]),
            ["app", "<redacted>", "--token=<redacted>"]
        );
    }

    #[test]
    fn bad_user_pattern_is_an_error_naming_the_flag() {
        let e = Redactor::new(&["(".into()], true)
            .err()
            .expect("an unclosed group is rejected");
        assert!(format!("{e:#}").starts_with("--redact-args `(`"), "{e:#}");
    }

    #[test]
    fn disabled_and_idempotent() {
        let off = Redactor::new(&[], false).expect("no rules");
        assert!(off.is_disabled());
        assert_eq!(
            redact(&off, &["app", "--password=x"]),
            ["app", "--password=x"]
        );
        let r = defaults();
        let once = redact(
            &r,
            &["sh", "-c", "x --password=a --token b", "--secret", "c"],
        );
        let mut twice = once.clone();
        assert_eq!(
            r.argv(&mut twice),
            0,
            "redacting {once:?} again changes nothing"
        );
    }

    #[test]
    fn events_and_processes() {
        let r = defaults();
        let mut ev = KernelEvent {
            kind: crate::kernel_event::Kind::Exec,
            ts_ns: 1,
            pid: 2,
            tid: 2,
            ppid: 1,
            nspid: 2,
            pidns: 1,
            uid: 0,
            gid: 0,
            comm: "app".into(),
            cgroup_id: 0,
            cgroup_v1_id: 0,
            start_ns: 1,
            partial: false,
            exec: Some(crate::kernel_event::ExecPayload {
                filename: "/bin/app".into(),
                argv: vec!["app".into(), "--password=x".into()],
                argv_truncated: false,
                filename_truncated: false,
                trimmed: false,
            }),
            exit: None,
        };
        assert_eq!(r.event(&mut ev), 1);
        assert_eq!(
            ev.exec.as_ref().map(|e| e.argv.clone()),
            Some(vec!["app".to_string(), "--password=<redacted>".to_string()])
        );
        ev.exec = None;
        assert_eq!(r.event(&mut ev), 0, "fork/exit carry no argv");
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let r = Redactor::new(&["x".into()], true).expect("valid");
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let alphabet: Vec<char> = "-=:@/ 'pP\"&;|abcdsecrettokenpassword\u{fffd}é"
            .chars()
            .collect();
        for _ in 0..2000 {
            let mut argv = Vec::new();
            for _ in 0..(seed % 5) {
                let mut s = String::new();
                for _ in 0..(seed % 17) {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    s.push(alphabet[(seed % alphabet.len() as u64) as usize]);
                }
                argv.push(s);
            }
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            let n = argv.len();
            r.argv(&mut argv);
            assert_eq!(argv.len(), n, "element count is kept");
        }
    }
}
