//! A small, table-driven command-line scanner that mimics the option parsers of the runtime
//! helpers closely enough to find the values podtrace needs.
//!
//! The point of modelling each parser is to know which tokens are option *values*: conmon's
//! `--runtime-arg --root=/run/runc` must not be read as a `--root` option, and runc's
//! `--bundle /x create` must not take `/x` for the container id.
//!
//! Unknown options never consume a value (their argument, if any, is then seen as a
//! positional); the helpers themselves would reject them, so this only matters for argv from
//! newer releases, and the tables list every option of the releases we model.

/// One option of a program: its names, whether it takes a value, and what it means to us.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OptSpec<K> {
    /// Long name without dashes (`"cid"`); for Go-flag programs the only name.
    pub long: &'static str,
    /// Short name (`'c'`), if any.
    pub short: Option<char>,
    /// Whether the option takes a value (`--cid X`, `--cid=X`).
    pub takes_value: bool,
    pub key: K,
}

/// Shorthand for table rows.
pub(crate) const fn opt<K>(
    long: &'static str,
    short: Option<char>,
    takes_value: bool,
    key: K,
) -> OptSpec<K> {
    OptSpec {
        long,
        short,
        takes_value,
        key,
    }
}

/// How a program reads its command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dialect {
    /// GLib GOption (conmon): `--long`, `--long=V`, `--long V`; `-x` short options, groupable
    /// (`-ti`), whose value is always the *next* argument; options and positionals may be mixed;
    /// `--` ends the options.
    GOption,
    /// Go's `flag` package (containerd shims, runc's global options): `-name` or `--name`, with
    /// `=V` or the next argument as value; scanning stops at the first positional or `--`.
    GoFlag,
    /// runc's (urfave/cli) and crun's (GNU argp) subcommand options: like [`Dialect::GoFlag`] but
    /// options and positionals may be mixed, and argp's attached short value (`-bDIR`) is known.
    Permuting,
    /// Rust's clap with subcommands (conmon-rs): `--long`, `--long=V`, `--long V`; groupable
    /// short options whose value is the rest of the token (`-rV`, `-r=V`) or the next argument;
    /// scanning stops at the first positional (the subcommand) or `--`, like
    /// [`Dialect::GoFlag`].
    Clap,
}

/// What a scan found: option values and flags by key, and the positional arguments in order.
#[derive(Debug)]
pub(crate) struct Scanned<'a, K> {
    pub values: Vec<(K, &'a str)>,
    pub flags: Vec<K>,
    pub positionals: Vec<&'a str>,
    /// [`Dialect::GoFlag`], [`Dialect::Clap`]: index in `args` where the positional tail starts (`args.len()` if
    /// there is none), so a caller can rescan a subcommand's arguments.
    pub tail_start: usize,
}

impl<'a, K: Copy + PartialEq> Scanned<'a, K> {
    /// The last value given for `key` (later options override earlier ones in all three parsers).
    pub fn last(&self, key: K) -> Option<&'a str> {
        self.values
            .iter()
            .rev()
            .find(|(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    /// Every value given for `key`, in order (for repeatable options such as conmon's `-l`).
    pub fn all(&self, key: K) -> impl Iterator<Item = &'a str> + '_ {
        self.values
            .iter()
            .filter(move |(k, _)| *k == key)
            .map(|(_, v)| *v)
    }

    pub fn has_flag(&self, key: K) -> bool {
        self.flags.contains(&key)
    }
}

fn find_long<'t, K>(table: &'t [OptSpec<K>], name: &str) -> Option<&'t OptSpec<K>> {
    table.iter().find(|o| o.long == name)
}

fn find_short<K>(table: &[OptSpec<K>], c: char) -> Option<&OptSpec<K>> {
    table.iter().find(|o| o.short == Some(c))
}

/// Go-flag and urfave/cli accept any name with one or two dashes; a one-character name may be
/// the short alias.
fn find_any<'t, K>(table: &'t [OptSpec<K>], name: &str) -> Option<&'t OptSpec<K>> {
    find_long(table, name).or_else(|| {
        let mut chars = name.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => find_short(table, c),
            _ => None,
        }
    })
}

/// Scans `args` (without argv\[0\]) against `table` in the given dialect.
pub(crate) fn scan<'a, K: Copy>(
    args: &'a [String],
    table: &[OptSpec<K>],
    dialect: Dialect,
) -> Scanned<'a, K> {
    let mut out = Scanned {
        values: Vec::new(),
        flags: Vec::new(),
        positionals: Vec::new(),
        tail_start: args.len(),
    };
    let mut i = 0;
    while i < args.len() {
        let tok = args[i].as_str();
        i += 1;
        if tok == "--" {
            out.tail_start = i;
            out.positionals.extend(args[i..].iter().map(String::as_str));
            break;
        }
        // A lone "-" (stdin by convention) and anything not starting with '-' is positional.
        let Some(body) = tok.strip_prefix('-').filter(|b| !b.is_empty()) else {
            if matches!(dialect, Dialect::GoFlag | Dialect::Clap) {
                out.tail_start = i - 1;
                out.positionals
                    .extend(args[i - 1..].iter().map(String::as_str));
                break;
            }
            out.positionals.push(tok);
            continue;
        };
        match dialect {
            Dialect::GOption => {
                if let Some(long) = body.strip_prefix('-') {
                    let (name, inline) = split_inline(long);
                    if let Some(spec) = find_long(table, name) {
                        take(spec, inline, args, &mut i, &mut out);
                    }
                } else {
                    // A group of short options; the first one that takes a value takes the next
                    // argument (GOption refuses a second one, so we stop there).
                    for c in body.chars() {
                        let Some(spec) = find_short(table, c) else {
                            continue;
                        };
                        if spec.takes_value {
                            take(spec, None, args, &mut i, &mut out);
                            break;
                        }
                        out.flags.push(spec.key);
                    }
                }
            }
            Dialect::Clap => {
                if let Some(long) = body.strip_prefix('-') {
                    let (name, inline) = split_inline(long);
                    if let Some(spec) = find_long(table, name) {
                        take(spec, inline, args, &mut i, &mut out);
                    }
                } else {
                    // A group of short flags; the first one that takes a value takes the rest
                    // of the token (without a leading '='), or the next argument.
                    for (at, c) in body.char_indices() {
                        let Some(spec) = find_short(table, c) else {
                            continue;
                        };
                        if spec.takes_value {
                            let rest = &body[at + c.len_utf8()..];
                            let rest = rest.strip_prefix('=').unwrap_or(rest);
                            take(
                                spec,
                                Some(rest).filter(|r| !r.is_empty()),
                                args,
                                &mut i,
                                &mut out,
                            );
                            break;
                        }
                        out.flags.push(spec.key);
                    }
                }
            }
            Dialect::GoFlag | Dialect::Permuting => {
                let name_eq = body.strip_prefix('-').unwrap_or(body);
                if name_eq.starts_with('-') || name_eq.starts_with('=') {
                    // "---x" and "-=x" are syntax errors for Go's flag package; ignore them.
                    continue;
                }
                let (name, inline) = split_inline(name_eq);
                if let Some(spec) = find_any(table, name) {
                    take(spec, inline, args, &mut i, &mut out);
                } else if dialect == Dialect::Permuting && !body.starts_with('-') {
                    // argp's attached short value: "-bDIR".
                    let mut chars = body.char_indices();
                    if let Some((_, c)) = chars.next() {
                        if let (Some(spec), Some((at, _))) = (find_short(table, c), chars.next()) {
                            if spec.takes_value {
                                out.values.push((spec.key, &body[at..]));
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

fn split_inline(s: &str) -> (&str, Option<&str>) {
    match s.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (s, None),
    }
}

/// Records one recognised option; a value-taking option without an inline value consumes the
/// next argument whatever it looks like (all three parsers do), or nothing if argv ends there.
fn take<'a, K: Copy>(
    spec: &OptSpec<K>,
    inline: Option<&'a str>,
    args: &'a [String],
    i: &mut usize,
    out: &mut Scanned<'a, K>,
) {
    if !spec.takes_value {
        out.flags.push(spec.key);
        return;
    }
    let value = match inline {
        Some(v) => Some(v),
        None => {
            let next = args.get(*i).map(String::as_str);
            if next.is_some() {
                *i += 1;
            }
            next
        }
    };
    if let Some(v) = value {
        out.values.push((spec.key, v));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum K {
        Cid,
        Name,
        Tty,
        Stdin,
        Other,
    }

    const TABLE: &[OptSpec<K>] = &[
        opt("cid", Some('c'), true, K::Cid),
        opt("name", Some('n'), true, K::Name),
        opt("terminal", Some('t'), false, K::Tty),
        opt("stdin", Some('i'), false, K::Stdin),
        opt("runtime-arg", None, true, K::Other),
    ];

    fn argv(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn goption_reads_long_short_inline_and_groups() {
        let a = argv("--cid=A -ti -n N --runtime-arg --cid=B pos");
        let s = scan(&a, TABLE, Dialect::GOption);
        assert_eq!(
            s.last(K::Cid),
            Some("A"),
            "--runtime-arg must swallow --cid=B"
        );
        assert_eq!(s.last(K::Name), Some("N"));
        assert!(s.has_flag(K::Tty) && s.has_flag(K::Stdin), "grouped -ti");
        assert_eq!(s.positionals, vec!["pos"]);
    }

    #[test]
    fn goption_short_value_is_the_next_argument_even_in_a_group() {
        let a = argv("-tc ID");
        let s = scan(&a, TABLE, Dialect::GOption);
        assert_eq!(s.last(K::Cid), Some("ID"));
        assert!(s.has_flag(K::Tty));
    }

    #[test]
    fn goflag_stops_at_first_positional_and_accepts_both_dash_counts() {
        let a = argv("-cid A --name=N start -cid B");
        let s = scan(&a, TABLE, Dialect::GoFlag);
        assert_eq!(s.last(K::Cid), Some("A"));
        assert_eq!(s.last(K::Name), Some("N"));
        assert_eq!(s.positionals, vec!["start", "-cid", "B"]);
        assert_eq!(s.tail_start, 3);
    }

    #[test]
    fn goflag_tail_after_double_dash() {
        let a = argv("-cid A -- -n x");
        let s = scan(&a, TABLE, Dialect::GoFlag);
        assert_eq!((s.tail_start, s.positionals), (3, vec!["-n", "x"]));
        let a = argv("-cid A");
        assert_eq!(scan(&a, TABLE, Dialect::GoFlag).tail_start, 2, "no tail");
    }

    #[test]
    fn permuting_mixes_positionals_and_knows_attached_short_values() {
        let a = argv("ID -cX -- -n");
        let s = scan(&a, TABLE, Dialect::Permuting);
        assert_eq!(s.last(K::Cid), Some("X"));
        assert_eq!(s.positionals, vec!["ID", "-n"]);
    }

    #[test]
    fn clap_attached_short_values_groups_and_subcommand_stop() {
        let a = argv("-tcA --name=N -ic=B -n M sub --cid C");
        let s = scan(&a, TABLE, Dialect::Clap);
        assert_eq!(s.all(K::Cid).collect::<Vec<_>>(), ["A", "B"]);
        assert_eq!(s.last(K::Name), Some("M"));
        assert!(s.has_flag(K::Tty) && s.has_flag(K::Stdin));
        assert_eq!(
            s.positionals,
            vec!["sub", "--cid", "C"],
            "stops at the subcommand"
        );
        assert_eq!(s.tail_start, 5);
        let a = argv("-c X --runtime-arg --cid=Y");
        let s = scan(&a, TABLE, Dialect::Clap);
        assert_eq!(
            s.all(K::Cid).collect::<Vec<_>>(),
            ["X"],
            "values are not options"
        );
    }

    #[test]
    fn missing_value_at_the_end_is_not_invented() {
        let a = argv("--cid");
        for d in [
            Dialect::GOption,
            Dialect::GoFlag,
            Dialect::Permuting,
            Dialect::Clap,
        ] {
            let s = scan(&a, TABLE, d);
            assert_eq!(s.last(K::Cid), None, "{d:?}");
        }
    }

    #[test]
    fn unknown_options_and_odd_tokens_do_not_panic_or_consume() {
        let a: Vec<String> = [
            "---x",
            "-=",
            "-é",
            "--ü=1",
            "-\u{0}",
            "--unknown",
            "v",
            "-",
            "--",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for d in [
            Dialect::GOption,
            Dialect::GoFlag,
            Dialect::Permuting,
            Dialect::Clap,
        ] {
            let s = scan(&a, TABLE, d);
            assert!(s.values.is_empty(), "{d:?}: {:?}", s.values);
        }
    }
}
