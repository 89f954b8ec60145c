//! A fast path for the records that are most of a trace: `event` and `reap` lines exactly as
//! the trace writer prints them (serde_json's field order, no white space, no escapes),
//! parsed in place into a record whose strings are reused. It reads bytes: what it takes is
//! UTF-8 (its strings are checked, everything else is ASCII it matched).
//!
//! It accepts a subset of what serde_json accepts and gives the same value for it (the tests
//! check both on generated and mutated lines). Anything else (another key order, white
//! space, an escape, a number out of range, bad input of any kind) is not its business: it
//! says no and the reader hands the line to serde_json, whose errors are the reader's.
use crate::kernel_event::{ExecPayload, ExitPayload, KernelEvent, Kind, ReapEvent};
use crate::ndjson::plain_run;

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

const POW10: [u64; 9] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
];

/// How many of the bytes of `w` (the first in memory lowest) are ASCII digits before the first
/// one that is not (0 to 8).
fn leading_digits(w: u64) -> usize {
    let t = w ^ (LO * u64::from(b'0'));
    // Bytes above 9 get their high bit from the addition, bytes with it set already keep it;
    // a carry only leaves a byte that is flagged itself, so the lowest flag is exact.
    let not_digit = (t.wrapping_add(LO * 0x76) | t) & HI;
    (not_digit.trailing_zeros() / 8) as usize
}

/// The value of the first `k` (1 to 8) bytes of `w`, ASCII digits, most significant first.
fn digits_value(w: u64, k: usize) -> u64 {
    // The k digits to the top, zeros (leading zeros) below them; then pairs, quads, eights.
    let v = (w & 0x0f0f_0f0f_0f0f_0f0f) << (8 * (8 - k));
    let v = (v.wrapping_mul(10 * (1 << 8) + 1) >> 8) & 0x00ff_00ff_00ff_00ff;
    let v = (v.wrapping_mul(100 * (1 << 16) + 1) >> 16) & 0x0000_ffff_0000_ffff;
    v.wrapping_mul(10_000 * (1 << 32) + 1) >> 32
}

/// A position in one line.
struct Cursor<'a> {
    line: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.line
    }

    /// Skips `lit` if it comes next.
    #[inline(always)]
    fn eat(&mut self, lit: &[u8]) -> bool {
        let rest = self.bytes().get(self.at..).unwrap_or(&[]);
        if rest.starts_with(lit) {
            self.at += lit.len();
            true
        } else {
            false
        }
    }

    fn lit(&mut self, lit: &[u8]) -> Option<()> {
        self.eat(lit).then_some(())
    }

    /// A JSON integer as serde_json reads one into a u64: digits, no leading zero, no sign,
    /// no fraction or exponent (the caller checks what follows), in range.
    #[inline(always)]
    fn u64(&mut self) -> Option<u64> {
        let b = self.bytes();
        let start = self.at;
        let mut n: u64 = 0;
        let mut i = start;
        let mut done = false;
        // Eight bytes at a time while there are eight, then byte by byte.
        while let Some(w) = b.get(i..i + 8) {
            let mut word = [0u8; 8];
            word.copy_from_slice(w);
            let w = u64::from_le_bytes(word);
            let k = leading_digits(w);
            if k > 0 {
                n = n.checked_mul(POW10[k])?.checked_add(digits_value(w, k))?;
            }
            i += k;
            if k < 8 {
                done = true;
                break;
            }
        }
        while !done {
            match b.get(i).map(|c| c.wrapping_sub(b'0')).filter(|&d| d <= 9) {
                Some(d) => {
                    n = n.checked_mul(10)?.checked_add(u64::from(d))?;
                    i += 1;
                }
                None => done = true,
            }
        }
        let len = i - start;
        if len == 0 || (len > 1 && b.get(start) == Some(&b'0')) {
            return None;
        }
        self.at = i;
        Some(n)
    }

    #[inline(always)]
    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.u64()?).ok()
    }

    fn bool(&mut self) -> Option<bool> {
        if self.eat(b"true") {
            Some(true)
        } else if self.eat(b"false") {
            Some(false)
        } else {
            None
        }
    }

    /// A string without escapes or control characters (those go to serde_json).
    #[inline(always)]
    fn str(&mut self) -> Option<&'a str> {
        self.lit(b"\"")?;
        let b = self.bytes();
        let start = self.at;
        let i = start + plain_run(b.get(start..)?);
        if *b.get(i)? != b'"' {
            return None;
        }
        self.at = i + 1;
        // Strings are the only place for bytes other than ASCII: a line the fast path takes
        // is UTF-8 throughout.
        std::str::from_utf8(b.get(start..i)?).ok()
    }

    fn at_end(&self) -> bool {
        self.at == self.line.len()
    }
}

/// Replaces the text of `s`, keeping its allocation.
fn set(s: &mut String, v: &str) {
    s.clear();
    s.push_str(v);
}

/// A kernel event to parse into when the reader has none to reuse.
pub fn blank_event() -> KernelEvent {
    KernelEvent {
        kind: Kind::Fork,
        ts_ns: 0,
        pid: 0,
        tid: 0,
        ppid: 0,
        nspid: 0,
        pidns: 0,
        uid: 0,
        gid: 0,
        comm: String::new(),
        cgroup_id: 0,
        cgroup_v1_id: 0,
        start_ns: 0,
        partial: false,
        exec: None,
        exit: None,
    }
}

fn blank_exec() -> ExecPayload {
    ExecPayload {
        filename: String::new(),
        argv: Vec::new(),
        argv_truncated: false,
        filename_truncated: false,
        trimmed: false,
    }
}

/// Whether `line` looks like an `event` line (worth trying [`event`] on).
pub fn is_event(line: &[u8]) -> bool {
    line.starts_with(b"{\"event\":{")
}

/// Whether `line` looks like a `reap` line.
pub fn is_reap(line: &[u8]) -> bool {
    line.starts_with(b"{\"reap\":{")
}

/// Parses an `event` line into `ev` (its strings reused; an exec payload no longer needed goes
/// to `spare`, one needed comes from it). False: not in the writer's form, `ev` is garbage and
/// the line is for serde_json.
pub fn event(line: &[u8], ev: &mut KernelEvent, spare: &mut Option<ExecPayload>) -> bool {
    event_inner(line, ev, spare).is_some()
}

fn event_inner(line: &[u8], ev: &mut KernelEvent, spare: &mut Option<ExecPayload>) -> Option<()> {
    let mut c = Cursor { line, at: 0 };
    c.lit(b"{\"event\":{\"kind\":\"")?;
    ev.kind = if c.eat(b"exec\"") {
        Kind::Exec
    } else if c.eat(b"fork\"") {
        Kind::Fork
    } else if c.eat(b"exit\"") {
        Kind::Exit
    } else if c.eat(b"thread\"") {
        Kind::Thread
    } else {
        return None;
    };
    c.lit(b",\"ts_ns\":")?;
    ev.ts_ns = c.u64()?;
    c.lit(b",\"pid\":")?;
    ev.pid = c.u32()?;
    c.lit(b",\"tid\":")?;
    ev.tid = c.u32()?;
    c.lit(b",\"ppid\":")?;
    ev.ppid = c.u32()?;
    c.lit(b",\"nspid\":")?;
    ev.nspid = c.u32()?;
    c.lit(b",\"pidns\":")?;
    ev.pidns = c.u32()?;
    c.lit(b",\"uid\":")?;
    ev.uid = c.u32()?;
    c.lit(b",\"gid\":")?;
    ev.gid = c.u32()?;
    c.lit(b",\"comm\":")?;
    set(&mut ev.comm, c.str()?);
    c.lit(b",\"cgroup_id\":")?;
    ev.cgroup_id = c.u64()?;
    ev.cgroup_v1_id = if c.eat(b",\"cgroup_v1_id\":") {
        c.u64()?
    } else {
        0
    };
    c.lit(b",\"start_ns\":")?;
    ev.start_ns = c.u64()?;
    ev.partial = if c.eat(b",\"partial\":") {
        c.bool()?
    } else {
        false
    };
    if c.eat(b",\"exec\":{\"filename\":") {
        let x = match &mut ev.exec {
            Some(x) => x,
            None => ev.exec.insert(spare.take().unwrap_or_else(blank_exec)),
        };
        set(&mut x.filename, c.str()?);
        c.lit(b",\"argv\":[")?;
        let mut n = 0;
        if !c.eat(b"]") {
            loop {
                let a = c.str()?;
                match x.argv.get_mut(n) {
                    Some(s) => set(s, a),
                    None => x.argv.push(a.to_string()),
                }
                n += 1;
                if c.eat(b"]") {
                    break;
                }
                c.lit(b",")?;
            }
        }
        x.argv.truncate(n);
        let flag = |c: &mut Cursor<'_>, key: &[u8]| -> Option<bool> {
            if c.eat(key) {
                c.bool()
            } else {
                Some(false)
            }
        };
        x.argv_truncated = flag(&mut c, b",\"argv_truncated\":")?;
        x.filename_truncated = flag(&mut c, b",\"filename_truncated\":")?;
        x.trimmed = flag(&mut c, b",\"trimmed\":")?;
        c.lit(b"}")?;
    } else if let Some(x) = ev.exec.take() {
        *spare = Some(x);
    }
    ev.exit = if c.eat(b",\"exit\":{\"status\":") {
        let status = c.u32()?;
        c.lit(b",\"duration_ns\":")?;
        let duration_ns = c.u64()?;
        c.lit(b"}")?;
        Some(ExitPayload {
            status,
            duration_ns,
        })
    } else {
        None
    };
    c.lit(b"}}")?;
    c.at_end().then_some(())
}

/// Parses a `reap` line; None: for serde_json.
pub fn reap(line: &[u8]) -> Option<ReapEvent> {
    let mut c = Cursor { line, at: 0 };
    c.lit(b"{\"reap\":{\"ts_ns\":")?;
    let ts_ns = c.u64()?;
    c.lit(b",\"pid\":")?;
    let pid = c.u32()?;
    c.lit(b",\"start_ns\":")?;
    let start_ns = c.u64()?;
    c.lit(b"}}")?;
    c.at_end().then_some(ReapEvent {
        ts_ns,
        pid,
        start_ns,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::trace::Record;

    /// Mostly text the fast path takes (plain, non-ASCII included), some it leaves to
    /// serde_json (escapes, control characters).
    fn text() -> impl Strategy<Value = String> {
        let plain = prop_oneof![
            8 => proptest::char::range('a', 'z'),
            1 => Just('/'),
            1 => Just(' '),
            1 => Just('\u{7f}'),
            1 => Just('é'),
            1 => Just('😀'),
            1 => any::<char>().prop_filter("no escapes", |c| *c != '"' && *c != '\\' && *c >= ' '),
        ];
        let any_char = prop_oneof![
            6 => proptest::char::range('a', 'z'),
            1 => Just('"'),
            1 => Just('\\'),
            1 => proptest::char::range('\u{0}', '\u{1f}'),
            1 => any::<char>(),
        ];
        // Long enough for the eight-bytes-at-a-time scan.
        prop_oneof![
            4 => proptest::collection::vec(plain, 0..40).prop_map(String::from_iter),
            1 => proptest::collection::vec(any_char, 0..40).prop_map(String::from_iter),
        ]
    }

    fn num() -> impl Strategy<Value = u64> {
        prop_oneof![
            3 => 0u64..100_000,
            1 => Just(0u64),
            1 => Just(u64::from(u32::MAX)),
            1 => Just(u64::from(u32::MAX) + 1),
            1 => Just(u64::MAX),
            1 => any::<u64>(),
        ]
    }

    pub(crate) fn kernel_event() -> impl Strategy<Value = KernelEvent> {
        let exec = proptest::option::of(
            (
                text(),
                proptest::collection::vec(text(), 0..4),
                any::<[bool; 3]>(),
            )
                .prop_map(|(filename, argv, f)| ExecPayload {
                    filename,
                    argv,
                    argv_truncated: f[0],
                    filename_truncated: f[1],
                    trimmed: f[2],
                }),
        );
        let exit = proptest::option::of((any::<u32>(), num()).prop_map(|(status, duration_ns)| {
            ExitPayload {
                status,
                duration_ns,
            }
        }));
        (
            0u8..4,
            proptest::collection::vec(any::<u32>(), 7),
            text(),
            proptest::collection::vec(num(), 4),
            any::<bool>(),
            exec,
            exit,
        )
            .prop_map(|(k, ids, comm, n, partial, exec, exit)| KernelEvent {
                kind: [Kind::Exec, Kind::Fork, Kind::Exit, Kind::Thread][usize::from(k)],
                ts_ns: n[0],
                pid: ids[0],
                tid: ids[1],
                ppid: ids[2],
                nspid: ids[3],
                pidns: ids[4],
                uid: ids[5],
                gid: ids[6],
                comm,
                cgroup_id: n[1],
                cgroup_v1_id: if n[2] % 2 == 0 { 0 } else { n[2] },
                start_ns: n[3],
                partial,
                exec,
                exit,
            })
    }

    /// What the fast path makes of `line`, starting from `reuse` (None: it declined).
    fn fast(
        line: &[u8],
        reuse: &mut KernelEvent,
        spare: &mut Option<ExecPayload>,
    ) -> Option<Record> {
        if is_event(line) {
            event(line, reuse, spare).then(|| Record::Event(reuse.clone()))
        } else if is_reap(line) {
            reap(line).map(Record::Reap)
        } else {
            None
        }
    }

    /// A line changed at a few places: a byte replaced, removed or put in.
    fn mutate(line: &str, edits: &[(usize, u8, u8)]) -> Vec<u8> {
        let mut b = line.as_bytes().to_vec();
        for &(i, op, byte) in edits {
            let i = i % (b.len() + 1);
            match op % 3 {
                0 if i < b.len() => b[i] = byte,
                1 if i < b.len() => {
                    b.remove(i);
                }
                _ => b.insert(i, byte),
            }
        }
        b
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// The word-at-a-time digits agree with a byte-at-a-time count and value.
        #[test]
        fn word_digits_are_byte_digits(bytes in proptest::collection::vec(prop_oneof![4 => b'0'..=b'9', 1 => any::<u8>(), 1 => Just(b'/'), 1 => Just(b':'), 1 => Just(0xb0u8), 1 => Just(0xffu8)], 8)) {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes);
            let w = u64::from_le_bytes(word);
            let k = bytes.iter().position(|c| !c.is_ascii_digit()).unwrap_or(8);
            prop_assert_eq!(leading_digits(w), k, "{:?}", bytes);
            if k > 0 {
                let want = bytes[..k].iter().fold(0u64, |n, c| n * 10 + u64::from(c - b'0'));
                prop_assert_eq!(digits_value(w, k), want, "{:?}", bytes);
            }
        }

        /// The writer's lines: the fast path takes every one without escapes, with the value
        /// serde_json reads, whatever the record it reuses held before.
        #[test]
        fn fast_path_reads_what_serde_json_reads(evs in proptest::collection::vec(kernel_event(), 1..6), reap_at in any::<(u64, u32, u64)>()) {
            let mut reuse = blank_event();
            let mut spare = None;
            let mut lines: Vec<String> = evs
                .into_iter()
                .map(|e| serde_json::to_string(&Record::Event(e)).expect("encodes"))
                .collect();
            lines.push(serde_json::to_string(&Record::Reap(ReapEvent { ts_ns: reap_at.0, pid: reap_at.1, start_ns: reap_at.2 })).expect("encodes"));
            for line in &lines {
                let want: Record = serde_json::from_str(line).expect("the writer's line reads back");
                let escapes = line.contains('\\');
                match fast(line.as_bytes(), &mut reuse, &mut spare) {
                    Some(got) => prop_assert_eq!(got, want, "{}", line),
                    None => prop_assert!(escapes, "declined a line without escapes: {}", line),
                }
            }
        }

        /// Changed lines: whatever the fast path takes, serde_json takes too, as the same value.
        #[test]
        fn fast_path_takes_nothing_serde_json_would_not(e in kernel_event(), edits in proptest::collection::vec((any::<usize>(), any::<u8>(), prop_oneof![any::<u8>(), Just(b'0'), Just(b'1'), Just(b'"'), Just(b','), Just(b' '), Just(b'}'), Just(b'-'), Just(b'.')]), 1..4), reap_line in any::<bool>()) {
            let line = if reap_line {
                serde_json::to_string(&Record::Reap(ReapEvent { ts_ns: e.ts_ns, pid: e.pid, start_ns: e.start_ns })).expect("encodes")
            } else {
                serde_json::to_string(&Record::Event(e)).expect("encodes")
            };
            let bytes = mutate(&line, &edits);
            let mut reuse = blank_event();
            let mut spare = None;
            if let Some(got) = fast(&bytes, &mut reuse, &mut spare) {
                let text = std::str::from_utf8(&bytes);
                prop_assert!(text.is_ok(), "took a line that is not UTF-8: {:?}", bytes);
                let want: Result<Record, _> = serde_json::from_str(text.unwrap_or(""));
                prop_assert_eq!(Some(got), want.ok(), "{:?}", text);
            }
        }
    }

    #[test]
    fn declines_what_is_not_the_writers_form() {
        let line = r#"{"event":{"kind":"fork","ts_ns":1,"pid":2,"tid":2,"ppid":1,"nspid":2,"pidns":3,"uid":0,"gid":0,"comm":"sh","cgroup_id":5,"start_ns":1}}"#;
        let mut ev = blank_event();
        let mut spare = None;
        assert!(
            event(line.as_bytes(), &mut ev, &mut spare),
            "the writer's form"
        );
        assert_eq!(ev.comm, "sh");
        for bad in [
            line.replace("\"pid\":2", "\"pid\": 2"),
            line.replace("\"pid\":2", "\"pid\":02"),
            line.replace("\"pid\":2", "\"pid\":-2"),
            line.replace("\"pid\":2", "\"pid\":2.0"),
            line.replace("\"pid\":2", "\"pid\":4294967296"),
            line.replace("\"sh\"", "\"s\\u0068\""),
            line.replace("\"sh\"", "\"s\th\""),
            line.replace("\"tid\":2,\"ppid\":1", "\"ppid\":1,\"tid\":2"),
            line.replace("}}", "} }"),
            format!("{line} "),
            line.replace("\"start_ns\":1", "\"start_ns\":1,\"exec\":null"),
        ] {
            assert!(!event(bad.as_bytes(), &mut ev, &mut spare), "{bad}");
        }
        let mut not_utf8 = line.as_bytes().to_vec();
        let at = line.find("\"sh\"").expect("comm") + 2;
        not_utf8[at] = 0xff;
        assert!(!event(&not_utf8, &mut ev, &mut spare), "not UTF-8");
    }
}
