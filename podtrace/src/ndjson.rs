//! Buffered NDJSON output: one event per line, flushed when idle and on exit.
//!
//! Lines are written by a hand-written encoder ([`Encoder`]) that prints exactly what
//! `serde_json::to_writer` prints for an [`Event`] (the tests compare the two on many events,
//! escapes, nulls and non-ASCII text included), only faster: what repeats from event to event
//! (the cgroup, container and pod objects; the date and time of day of the timestamp) is
//! encoded once and copied afterwards.
//!
//! A file (`--output FILE`) is appended to (what log rotation expects: after a copytruncate
//! the next line goes to the start of the emptied file, never to an offset that leaves a
//! hole), reopened on SIGHUP ([`NdjsonWriter::reopen`]), and a write that fails (a full
//! disk) stops nothing: the lines that could not be written are counted, a line cut by the
//! failure is finished first when writing works again (tried every second), and an
//! `output_lost` line then says how many are missing. stdout stops podtrace on an error, as
//! before (its reader went away).
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::clock::TsFormatter;
use crate::output::{ContainerRef, Event, PodRef, ProcessFields};

/// Output is handed to the writer in pieces of about this size.
const CHUNK: usize = 1 << 16;
/// How often writing to a failing file is tried again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// What `--output FILE` could not write (`--summary`'s `output`, and metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutputStats {
    pub path: String,
    /// Lines not written.
    pub lines_lost: u64,
    /// Times writing failed (each followed by `output_lost` once it worked again).
    pub failures: u64,
    /// Reopened on SIGHUP.
    pub reopens: u64,
    pub last_error: Option<String>,
}

/// Writing failed: what is owed once it works again.
struct Failing {
    error: String,
    /// Lines not written so far.
    lines: u64,
    /// The rest of the line the failure cut (written first, so the file has no half line).
    tail: Vec<u8>,
    last_try: Instant,
}

pub struct NdjsonWriter {
    out: Box<dyn Write + Send>,
    /// Encoded lines not yet written to `out`.
    buf: Vec<u8>,
    enc: Encoder,
    what: String,
    pub lines: u64,
    /// The file written (None: stdout or another writer, where an error stops podtrace).
    path: Option<PathBuf>,
    node: Option<Arc<str>>,
    failing: Option<Failing>,
    pub stats: OutputStats,
}

impl NdjsonWriter {
    pub fn stdout() -> Self {
        Self::new(Box::new(std::io::stdout()), "stdout".into())
    }

    /// Events to a file, appended to (created 0600; a symlink at the path is refused: see
    /// [`crate::outfile`]); `node` goes into its `output_lost` lines as into events.
    pub fn create(path: &Path, node: Option<Arc<str>>) -> Result<Self> {
        let f = crate::outfile::open_output_file(path, true).context("the events' output")?;
        let mut w = Self::new(Box::new(f), path.display().to_string());
        w.path = Some(path.to_path_buf());
        w.node = node;
        w.stats.path = path.display().to_string();
        Ok(w)
    }

    /// Any writer (benchmarks: `std::io::sink()`); `what` names it in errors.
    pub fn new(w: Box<dyn Write + Send>, what: String) -> Self {
        Self {
            out: w,
            buf: Vec::with_capacity(CHUNK + 4096),
            enc: Encoder::default(),
            what,
            lines: 0,
            path: None,
            node: None,
            failing: None,
            stats: OutputStats::default(),
        }
    }

    pub fn write(&mut self, ev: &Event) -> Result<()> {
        if let Some(f) = &mut self.failing {
            // Not written: counted (the `output_lost` line says how many).
            f.lines += 1;
            self.stats.lines_lost += 1;
            return Ok(());
        }
        self.enc.line(ev, &mut self.buf);
        self.lines += 1;
        if self.buf.len() >= CHUNK {
            self.write_out()?;
        }
        Ok(())
    }

    /// Writes `bytes` to the file as far as it goes: Err((written, error)) when it stops.
    fn write_some(out: &mut dyn Write, bytes: &[u8]) -> Result<(), (usize, std::io::Error)> {
        let mut done = 0;
        while done < bytes.len() {
            match out.write(&bytes[done..]) {
                Ok(0) => {
                    return Err((
                        done,
                        std::io::Error::new(std::io::ErrorKind::WriteZero, "wrote nothing"),
                    ))
                }
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err((done, e)),
            }
        }
        Ok(())
    }

    fn write_out(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let r = Self::write_some(&mut *self.out, &self.buf);
        let buf = std::mem::take(&mut self.buf);
        let r = match r {
            Ok(()) => Ok(()),
            Err((_, e)) if self.path.is_none() => {
                Err(anyhow::Error::new(e).context(format!("writing to {}", self.what)))
            }
            Err((done, e)) => {
                self.start_failing(&buf, done, &e);
                Ok(())
            }
        };
        self.buf = buf;
        self.buf.clear();
        r
    }

    /// A write to the file stopped after `done` bytes of `buf`: the rest of that line is
    /// owed, the lines after it are lost.
    fn start_failing(&mut self, buf: &[u8], done: usize, e: &std::io::Error) {
        let rest = buf.get(done..).unwrap_or_default();
        let line_end = memchr::memchr(b'\n', rest).map_or(rest.len(), |i| i + 1);
        // A line not started at all is lost whole; one cut is finished later.
        let cut = done > 0 && buf.get(done - 1) != Some(&b'\n');
        let (tail, lost_from) = if cut {
            (rest[..line_end].to_vec(), line_end)
        } else {
            (Vec::new(), 0)
        };
        let lines = memchr::memchr_iter(b'\n', &rest[lost_from..]).count() as u64;
        let error = format!("{e}");
        tracing::warn!(
            "writing to {}: {error}; events go on, lines are counted until writing works \
             again (tried every second)",
            self.what
        );
        self.stats.failures += 1;
        self.stats.lines_lost += lines;
        self.stats.last_error = Some(error.clone());
        self.failing = Some(Failing {
            error,
            lines,
            tail,
            last_try: Instant::now(),
        });
    }

    /// After a failure, once a second: the cut line's rest, then the `output_lost` line.
    fn retry(&mut self) {
        let Some(f) = &mut self.failing else { return };
        if f.last_try.elapsed() < RETRY_EVERY {
            return;
        }
        f.last_try = Instant::now();
        if !f.tail.is_empty() {
            match Self::write_some(&mut *self.out, &f.tail) {
                Ok(()) => f.tail.clear(),
                Err((done, _)) => {
                    f.tail.drain(..done);
                    return;
                }
            }
        }
        let mut line = Vec::with_capacity(256);
        self.enc.line(
            &Event::OutputLost {
                ts: crate::clock::format_rfc3339(crate::clock::unix_now_ns()),
                lines: f.lines,
                error: f.error.clone(),
                node: self.node.clone(),
            },
            &mut line,
        );
        match Self::write_some(&mut *self.out, &line) {
            Ok(()) => {
                tracing::info!(
                    "writing to {} again ({} lines were not written)",
                    self.what,
                    f.lines
                );
                self.lines += 1;
                self.failing = None;
            }
            // Part of it reached the file: the rest of it is owed now.
            Err((done, _)) if done > 0 => f.tail = line[done..].to_vec(),
            Err(_) => {}
        }
    }

    pub fn flush(&mut self) -> Result<()> {
        if self.failing.is_some() {
            self.retry();
            return Ok(());
        }
        self.write_out()?;
        match self.out.flush() {
            Ok(()) => Ok(()),
            Err(e) if self.path.is_none() => {
                Err(anyhow::Error::new(e).context(format!("flushing {}", self.what)))
            }
            Err(e) => {
                self.start_failing(&[], 0, &e);
                Ok(())
            }
        }
    }

    /// SIGHUP: writes what is buffered to the file open now, then opens the path again (log
    /// rotation moved or removed the file: a new one is made, 0600; one made by the rotation
    /// is appended to as it is). Only for `--output FILE`.
    pub fn reopen(&mut self) -> Result<()> {
        let Some(path) = self.path.clone() else {
            return Ok(());
        };
        self.write_out()?;
        // A line cut by a failure is finished in the file it was started in, if it can be.
        if let Some(f) = &mut self.failing {
            f.last_try = Instant::now() - RETRY_EVERY;
        }
        self.retry();
        let _ = self.out.flush();
        match crate::outfile::open_output_file(&path, true) {
            Ok(f) => {
                self.out = Box::new(f);
                self.stats.reopens += 1;
                if let Some(f) = &mut self.failing {
                    if !f.tail.is_empty() {
                        // Its start stays in the old file: that line is lost.
                        f.tail.clear();
                        f.lines += 1;
                        self.stats.lines_lost += 1;
                    }
                    f.last_try = Instant::now() - RETRY_EVERY;
                }
                self.retry();
                tracing::info!("reopened {} (SIGHUP)", path.display());
            }
            Err(e) => tracing::warn!(
                "SIGHUP: cannot reopen {}: {e}; still writing to the file open before",
                path.display()
            ),
        }
        Ok(())
    }
}

impl Drop for NdjsonWriter {
    /// What was encoded reaches the writer even without a last `flush` (as with a BufWriter).
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let _ = self.out.write_all(&self.buf);
        }
    }
}

/// How many placements (cgroup, hierarchy, container, pod) the encoder keeps encoded.
const PLACEMENTS: usize = 256;

/// The encoded `"cgroup":…,"cgroup_hierarchy":…,"container":…,"pod":…` of one placement,
/// with the values it was encoded from (held, so that an `Arc` seen again is the same value).
struct Placement {
    cgroup: Option<Arc<str>>,
    hierarchy: Option<Arc<str>>,
    container: Option<Arc<ContainerRef>>,
    pod: Option<Arc<PodRef>>,
    json: Vec<u8>,
}

/// Same value: the same `Arc`, or equal contents.
fn same<T: PartialEq + ?Sized>(a: &Option<Arc<T>>, b: &Option<Arc<T>>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => Arc::ptr_eq(a, b) || **a == **b,
        _ => false,
    }
}

impl Placement {
    fn matches(&self, p: &ProcessFields) -> bool {
        same(&self.cgroup, &p.cgroup)
            && same(&self.hierarchy, &p.cgroup_hierarchy)
            && same(&self.container, &p.container)
            && same(&self.pod, &p.pod)
    }
}

/// Encodes events as serde_json would, byte for byte.
pub struct Encoder {
    ts: TsFormatter,
    placements: Vec<Option<Placement>>,
}

impl Default for Encoder {
    fn default() -> Self {
        Self {
            ts: TsFormatter::default(),
            placements: (0..PLACEMENTS).map(|_| None).collect(),
        }
    }
}

/// `"` and `\` as `\"` and `\\`, the control characters with a short form as it, the
/// others as `\u00XX`: what serde_json escapes (0: nothing).
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

const HEX: &[u8; 16] = b"0123456789abcdef";

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `w` that is 0 (the lowest one set is exact: a borrow only
/// flags a byte above a true one).
fn zero_bytes(w: u64) -> u64 {
    w.wrapping_sub(LO) & !w & HI
}

/// The bytes of `w` that a JSON string cannot hold as they are: `"`, `\` and the control
/// characters (the lowest flag set is the first such byte).
fn special(w: u64) -> u64 {
    zero_bytes(w ^ (LO * u64::from(b'"')))
        | zero_bytes(w ^ (LO * u64::from(b'\\')))
        | (w.wrapping_sub(LO * 0x20) & !w & HI)
}

/// How many bytes from the start of `b` a JSON string holds as they are (up to the first
/// `"`, `\` or control character). Shared with the trace reader's fast path.
pub(crate) fn plain_run(b: &[u8]) -> usize {
    let mut i = 0;
    // Eight bytes at a time while there are eight, then byte by byte.
    while let Some(w) = b.get(i..i + 8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(w);
        let hits = special(u64::from_le_bytes(word));
        if hits != 0 {
            return i + (hits.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    while let Some(&c) = b.get(i) {
        if ESCAPE[usize::from(c)] != 0 {
            break;
        }
        i += 1;
    }
    i
}

/// `s` as a JSON string.
fn string(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let mut rest = s.as_bytes();
    loop {
        let n = plain_run(rest);
        let (run, tail) = rest.split_at(n);
        out.extend_from_slice(run);
        let Some((&b, tail)) = tail.split_first() else {
            break;
        };
        match ESCAPE[usize::from(b)] {
            b'u' => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 0xf)]);
            }
            e => {
                out.push(b'\\');
                out.push(e);
            }
        }
        rest = tail;
    }
    out.push(b'"');
}

fn opt_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn int(out: &mut Vec<u8>, n: impl itoa::Integer) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn boolean(out: &mut Vec<u8>, b: bool) {
    out.extend_from_slice(if b { b"true" } else { b"false" });
}

/// `,"key":` then the value, for the fields that follow the first.
macro_rules! key {
    ($out:expr, $k:literal) => {
        $out.extend_from_slice(concat!(",\"", $k, "\":").as_bytes())
    };
}

fn node(out: &mut Vec<u8>, node: &Option<Arc<str>>) {
    if let Some(n) = node {
        key!(out, "node");
        string(out, n);
    }
}

fn container(out: &mut Vec<u8>, c: &ContainerRef) {
    out.extend_from_slice(b"{\"id\":");
    string(out, &c.id);
    key!(out, "name");
    opt_string(out, c.name.as_deref());
    key!(out, "runtime");
    opt_string(out, c.runtime.map(|r| r.as_str()));
    key!(out, "image");
    opt_string(out, c.image.as_deref());
    key!(out, "image_id");
    opt_string(out, c.image_id.as_deref());
    out.push(b'}');
}

fn pod(out: &mut Vec<u8>, p: &PodRef) {
    out.extend_from_slice(b"{\"name\":");
    opt_string(out, p.name.as_deref());
    key!(out, "namespace");
    opt_string(out, p.namespace.as_deref());
    key!(out, "uid");
    opt_string(out, p.uid.as_deref());
    out.push(b'}');
}

/// Where to keep a placement: a hash of what tells placements apart (the slot is only a
/// guess: `Placement::matches` decides).
fn slot(p: &ProcessFields) -> usize {
    use std::hash::{Hash, Hasher};
    let mut h = rustc_hash::FxHasher::default();
    p.cgroup.as_deref().hash(&mut h);
    p.container.as_deref().map(|c| &c.id).hash(&mut h);
    (h.finish() >> 32) as usize % PLACEMENTS
}

impl Encoder {
    /// Appends `ev` as one JSON line (with its newline) to `out`.
    pub fn line(&mut self, ev: &Event, out: &mut Vec<u8>) {
        self.event(ev, out);
        out.push(b'\n');
    }

    /// Appends `ev` as JSON (what `serde_json::to_writer(out, ev)` writes).
    pub fn event(&mut self, ev: &Event, out: &mut Vec<u8>) {
        if matches!(ev, Event::Recording { .. } | Event::OutputLost { .. }) {
            // Rare lines (a recorder or output failing and coming back): serde_json's own
            // text, which cannot fail for these types.
            let _ = serde_json::to_writer(&mut *out, ev);
            return;
        }
        match ev {
            Event::Exec {
                process,
                filename,
                argv,
                argv_truncated,
                filename_truncated,
                trimmed,
            } => {
                self.process(out, b"exec", process);
                key!(out, "filename");
                string(out, filename);
                key!(out, "argv");
                out.push(b'[');
                for (i, a) in argv.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    string(out, a);
                }
                out.push(b']');
                key!(out, "argv_truncated");
                boolean(out, *argv_truncated);
                key!(out, "filename_truncated");
                boolean(out, *filename_truncated);
                key!(out, "trimmed");
                boolean(out, *trimmed);
            }
            Event::Fork { process } => self.process(out, b"fork", process),
            Event::Thread { process } => self.process(out, b"thread", process),
            Event::Exit {
                process,
                exit_code,
                signal,
                core_dumped,
                duration_ns,
                inferred,
            } => {
                self.process(out, b"exit", process);
                key!(out, "exit_code");
                match exit_code {
                    Some(c) => int(out, *c),
                    None => out.extend_from_slice(b"null"),
                }
                key!(out, "signal");
                match signal {
                    Some(s) => int(out, *s),
                    None => out.extend_from_slice(b"null"),
                }
                key!(out, "core_dumped");
                match core_dumped {
                    Some(b) => boolean(out, *b),
                    None => out.extend_from_slice(b"null"),
                }
                key!(out, "duration_ns");
                match duration_ns {
                    Some(d) => int(out, *d),
                    None => out.extend_from_slice(b"null"),
                }
                key!(out, "inferred");
                boolean(out, *inferred);
            }
            Event::Lost {
                ts,
                count,
                kinds,
                node: n,
            } => {
                out.extend_from_slice(b"{\"type\":\"lost\",\"ts\":");
                string(out, ts);
                key!(out, "count");
                int(out, *count);
                key!(out, "kinds");
                out.extend_from_slice(b"{\"exec\":");
                int(out, kinds.exec);
                key!(out, "fork");
                int(out, kinds.fork);
                key!(out, "exit");
                int(out, kinds.exit);
                key!(out, "reap");
                int(out, kinds.reap);
                key!(out, "thread");
                int(out, kinds.thread);
                out.push(b'}');
                node(out, n);
            }
            Event::Malformed {
                ts,
                bytes,
                reason,
                node: n,
            } => {
                out.extend_from_slice(b"{\"type\":\"malformed\",\"ts\":");
                string(out, ts);
                key!(out, "bytes");
                int(out, *bytes);
                key!(out, "reason");
                string(out, reason);
                node(out, n);
            }
            // Written above.
            Event::Recording { .. } | Event::OutputLost { .. } => return,
        }
        out.push(b'}');
    }

    /// `{"type":…` and the process fields, without the closing brace.
    fn process(&mut self, out: &mut Vec<u8>, kind: &[u8], p: &ProcessFields) {
        out.extend_from_slice(b"{\"type\":\"");
        out.extend_from_slice(kind);
        out.extend_from_slice(b"\",\"ts\":\"");
        self.ts.write(p.ts.unix_ns(), out);
        out.push(b'"');
        key!(out, "pid");
        int(out, p.pid);
        key!(out, "tid");
        int(out, p.tid);
        key!(out, "ppid");
        int(out, p.ppid);
        key!(out, "nspid");
        int(out, p.nspid);
        key!(out, "pidns");
        int(out, p.pidns);
        key!(out, "uid");
        int(out, p.uid);
        key!(out, "gid");
        int(out, p.gid);
        key!(out, "comm");
        string(out, &p.comm);
        key!(out, "cgroup_id");
        match p.cgroup_id {
            Some(id) => int(out, id),
            None => out.extend_from_slice(b"null"),
        }
        key!(out, "start_ns");
        int(out, p.start_ns);
        self.placement(out, p);
        key!(out, "role");
        match p.role {
            Some(r) => {
                out.push(b'"');
                out.extend_from_slice(r.as_str().as_bytes());
                out.push(b'"');
            }
            None => out.extend_from_slice(b"null"),
        }
        key!(out, "partial");
        boolean(out, p.partial);
        node(out, &p.node);
    }

    /// `,"cgroup":…,"cgroup_hierarchy":…,"container":…,"pod":…`, encoded once per placement.
    fn placement(&mut self, out: &mut Vec<u8>, p: &ProcessFields) {
        let i = slot(p);
        if let Some(Some(c)) = self.placements.get(i) {
            if c.matches(p) {
                out.extend_from_slice(&c.json);
                return;
            }
        }
        let mut json = Vec::with_capacity(512);
        key!(json, "cgroup");
        opt_string(&mut json, p.cgroup.as_deref());
        key!(json, "cgroup_hierarchy");
        opt_string(&mut json, p.cgroup_hierarchy.as_deref());
        key!(json, "container");
        match &p.container {
            Some(c) => container(&mut json, c),
            None => json.extend_from_slice(b"null"),
        }
        key!(json, "pod");
        match &p.pod {
            Some(x) => pod(&mut json, x),
            None => json.extend_from_slice(b"null"),
        }
        out.extend_from_slice(&json);
        if let Some(s) = self.placements.get_mut(i) {
            *s = Some(Placement {
                cgroup: p.cgroup.clone(),
                hierarchy: p.cgroup_hierarchy.clone(),
                container: p.container.clone(),
                pod: p.pod.clone(),
                json,
            });
        }
    }
}

/// One event as its NDJSON line (with the newline), as `podtrace run` prints it.
pub fn encode_line(ev: &Event) -> Vec<u8> {
    let mut out = Vec::with_capacity(1024);
    Encoder::default().line(ev, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;
    use crate::attribution::Runtime;
    use crate::output::{LostKinds, Role, Timestamp};

    /// Text with what JSON escapes, what it does not, and more than ASCII.
    fn text() -> impl Strategy<Value = String> {
        let c = prop_oneof![
            4 => proptest::char::range('a', 'z'),
            1 => Just('"'),
            1 => Just('\\'),
            1 => Just('/'),
            1 => proptest::char::range('\u{0}', '\u{1f}'),
            1 => Just('\u{7f}'),
            1 => Just('é'),
            1 => Just('\u{2028}'),
            1 => Just('\u{fffd}'),
            1 => Just('😀'),
            1 => any::<char>(),
        ];
        proptest::collection::vec(c, 0..24).prop_map(String::from_iter)
    }

    fn opt_text() -> impl Strategy<Value = Option<String>> {
        proptest::option::of(text())
    }

    fn container() -> impl Strategy<Value = ContainerRef> {
        (
            text(),
            opt_text(),
            proptest::option::of(prop_oneof![
                Just(Runtime::Crio),
                Just(Runtime::Containerd),
                Just(Runtime::Docker),
                Just(Runtime::Podman)
            ]),
            opt_text(),
            opt_text(),
        )
            .prop_map(|(id, name, runtime, image, image_id)| ContainerRef {
                id,
                name,
                runtime,
                image,
                image_id,
            })
    }

    fn pod() -> impl Strategy<Value = PodRef> {
        (opt_text(), opt_text(), opt_text()).prop_map(|(name, namespace, uid)| PodRef {
            name,
            namespace,
            uid,
        })
    }

    fn role() -> impl Strategy<Value = Option<Role>> {
        proptest::option::of(prop_oneof![
            Just(Role::Conmon),
            Just(Role::Shim),
            Just(Role::Runtime),
            Just(Role::ContainerInit)
        ])
    }

    /// Placements drawn from a small pool, so that one encoder sees the same values again
    /// (the same `Arc`s, and equal values in other `Arc`s).
    #[derive(Clone, Debug)]
    struct Pool {
        cgroups: Vec<Option<Arc<str>>>,
        hierarchies: Vec<Option<Arc<str>>>,
        containers: Vec<Option<Arc<ContainerRef>>>,
        pods: Vec<Option<Arc<PodRef>>>,
    }

    fn pool() -> impl Strategy<Value = Pool> {
        (
            proptest::collection::vec(proptest::option::of(text()), 1..4),
            proptest::collection::vec(
                proptest::option::of(prop_oneof![
                    Just("v2".to_string()),
                    Just("v1:cpu,cpuacct".to_string()),
                    text()
                ]),
                1..3,
            ),
            proptest::collection::vec(proptest::option::of(container()), 1..4),
            proptest::collection::vec(proptest::option::of(pod()), 1..3),
        )
            .prop_map(|(c, h, k, p)| Pool {
                cgroups: c.into_iter().map(|x| x.map(Arc::from)).collect(),
                hierarchies: h.into_iter().map(|x| x.map(Arc::from)).collect(),
                containers: k.into_iter().map(|x| x.map(Arc::new)).collect(),
                pods: p.into_iter().map(|x| x.map(Arc::new)).collect(),
            })
    }

    /// Picks from the pool; `copy` makes a new `Arc` of the same value.
    fn pick<T: Clone>(v: &[Option<Arc<T>>], i: usize, copy: bool) -> Option<Arc<T>> {
        let x = v[i % v.len()].clone();
        if copy {
            x.map(|a| Arc::new(T::clone(&a)))
        } else {
            x
        }
    }

    fn pick_str(v: &[Option<Arc<str>>], i: usize, copy: bool) -> Option<Arc<str>> {
        let x = v[i % v.len()].clone();
        if copy {
            x.map(|a| Arc::from(&*a))
        } else {
            x
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn process(
        pool: &Pool,
        picks: [usize; 4],
        copy: bool,
        ts: i64,
        nums: (u32, u32, u32, u32, u32, u32, u32, u64, u64),
        comm: String,
        role: Option<Role>,
        partial: bool,
        node: Option<String>,
    ) -> ProcessFields {
        ProcessFields {
            ts: Timestamp(ts),
            pid: nums.0,
            tid: nums.1,
            ppid: nums.2,
            nspid: nums.3,
            pidns: nums.4,
            uid: nums.5,
            gid: nums.6,
            comm: comm.into(),
            // Unplaced (null) a third of the time.
            cgroup_id: (!nums.7.is_multiple_of(3)).then_some(nums.7),
            start_ns: nums.8,
            cgroup: pick_str(&pool.cgroups, picks[0], copy),
            cgroup_hierarchy: pick_str(&pool.hierarchies, picks[1], copy),
            container: pick(&pool.containers, picks[2], copy),
            pod: pick(&pool.pods, picks[3], copy),
            role,
            partial,
            node: node.map(Arc::from),
        }
    }

    fn timestamp() -> impl Strategy<Value = i64> {
        prop_oneof![
            // A busy second: the cached date is reused.
            3 => (0i64..3_000_000_000).prop_map(|n| 1_795_000_000_000_000_000 + n),
            1 => any::<i64>(),
            1 => Just(i64::MIN),
            1 => Just(i64::MAX),
            1 => -2_000_000_000i64..2_000_000_000,
        ]
    }

    fn event(pool: Pool) -> impl Strategy<Value = Event> {
        let fields = (
            any::<[usize; 4]>(),
            any::<bool>(),
            timestamp(),
            any::<(u32, u32, u32, u32, u32, u32, u32, u64, u64)>(),
            text(),
            role(),
            any::<bool>(),
            opt_text(),
        )
            .prop_map(move |(picks, copy, ts, nums, comm, role, partial, node)| {
                process(&pool, picks, copy, ts, nums, comm, role, partial, node)
            });
        (
            fields,
            0u8..6,
            text(),
            proptest::collection::vec(text(), 0..5),
            any::<[bool; 3]>(),
            any::<(Option<u8>, Option<u8>, u64)>(),
            any::<[u64; 6]>(),
        )
            .prop_map(|(process, kind, s, argv, flags, exit, n)| match kind {
                0 => Event::Exec {
                    process,
                    filename: Arc::from(s.as_str()),
                    argv: argv.into(),
                    argv_truncated: flags[0],
                    filename_truncated: flags[1],
                    trimmed: flags[2],
                },
                1 => Event::Fork { process },
                2 => Event::Thread { process },
                // An inferred exit (flags[1]): everything of its outcome null.
                3 => Event::Exit {
                    process,
                    exit_code: exit.0.filter(|_| !flags[1]),
                    signal: exit.1.filter(|_| !flags[1]),
                    core_dumped: (!flags[1]).then_some(flags[0]),
                    duration_ns: (!flags[1]).then_some(exit.2),
                    inferred: flags[1],
                },
                4 => Event::Lost {
                    ts: s,
                    count: n[0],
                    kinds: LostKinds {
                        exec: n[1],
                        fork: n[2],
                        exit: n[3],
                        reap: n[4],
                        thread: n[5],
                    },
                    node: process.node,
                },
                _ => Event::Malformed {
                    ts: s,
                    bytes: n[0],
                    reason: argv.concat(),
                    node: process.node,
                },
            })
    }

    fn events() -> impl Strategy<Value = Vec<Event>> {
        pool().prop_flat_map(|p| proptest::collection::vec(event(p), 1..40))
    }

    fn serde_line(ev: &Event) -> String {
        let mut v = serde_json::to_vec(ev).expect("serde_json encodes every event");
        v.push(b'\n');
        String::from_utf8(v).expect("UTF-8")
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 600, ..ProptestConfig::default() })]

        /// One encoder over a stream (its caches in play) prints what serde_json prints.
        #[test]
        fn encoder_is_serde_json_byte_for_byte(evs in events()) {
            let mut enc = Encoder::default();
            for ev in &evs {
                let mut out = Vec::new();
                enc.line(ev, &mut out);
                let mine = String::from_utf8(out).expect("UTF-8");
                prop_assert_eq!(mine, serde_line(ev));
            }
        }
    }

    proptest! {
        /// The word scan stops where a byte-by-byte scan stops.
        #[test]
        fn plain_run_stops_at_the_first_byte_to_escape(bytes in proptest::collection::vec(prop_oneof![6 => 0x20u8..0x7f, 1 => Just(b'"'), 1 => Just(b'\\'), 1 => 0u8..0x20, 1 => 0x7fu8.., 1 => Just(0x21u8), 1 => Just(0x5du8)], 0..40)) {
            let first = bytes
                .iter()
                .position(|&c| c == b'"' || c == b'\\' || c < 0x20)
                .unwrap_or(bytes.len());
            prop_assert_eq!(plain_run(&bytes), first, "{:?}", bytes);
        }
    }

    #[test]
    fn a_changed_container_behind_the_same_id_is_printed_changed() {
        let base = ProcessFields {
            ts: Timestamp(1_795_000_000_123_456_789),
            pid: 1,
            tid: 1,
            ppid: 0,
            nspid: 1,
            pidns: 2,
            uid: 0,
            gid: 0,
            comm: "sh".into(),
            cgroup_id: Some(3),
            start_ns: 4,
            cgroup: Some("/kubepods.slice/crio-abc.scope".into()),
            cgroup_hierarchy: Some("v2".into()),
            container: Some(Arc::new(ContainerRef {
                id: "abc".into(),
                name: None,
                runtime: Some(Runtime::Crio),
                image: None,
                image_id: None,
            })),
            pod: None,
            role: Some(Role::ContainerInit),
            partial: false,
            node: None,
        };
        let mut named = base.clone();
        named.container = Some(Arc::new(ContainerRef {
            name: Some("web".into()),
            image: Some("quay.io/x:1".into()),
            ..ContainerRef::clone(base.container.as_deref().expect("container"))
        }));
        named.pod = Some(Arc::new(PodRef {
            name: Some("web-0".into()),
            namespace: Some("shop".into()),
            uid: Some("u".into()),
        }));
        let mut enc = Encoder::default();
        for p in [&base, &named, &base, &named, &named] {
            let ev = Event::Fork { process: p.clone() };
            let mut out = Vec::new();
            enc.line(&ev, &mut out);
            assert_eq!(String::from_utf8(out).expect("UTF-8"), serde_line(&ev));
        }
    }

    /// A replay of a realistic trace prints through the writer what serde_json prints.
    #[test]
    fn replayed_synthetic_trace_is_serde_json_byte_for_byte() {
        use crate::filter::EventFilter;
        use crate::pipeline::{FnSink, Pipeline};
        use crate::replay::{replay, Until};
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("synth.trace");
        let text = crate::trace::synth::to_ndjson(&crate::trace::synth::trace(30_000, 40, 9));
        std::fs::write(&path, text).expect("write trace");
        let mine = Shared::default();
        let mut theirs = Vec::new();
        let pipe = Pipeline::new(EventFilter::default())
            .sink(NdjsonWriter::new(Box::new(mine.clone()), "test".into()))
            .sink(FnSink(|ev: &Event| {
                serde_json::to_writer(&mut theirs, ev)?;
                theirs.push(b'\n');
                Ok(())
            }));
        let (_, summary) = replay(&path, false, Until::End, pipe).expect("replay");
        assert!(summary.printed >= 30_000, "{summary:?}");
        let mine = mine.0.lock().expect("lock").clone();
        assert!(
            mine == theirs,
            "the writer's output differs from serde_json's"
        );
    }

    #[derive(Clone, Default)]
    struct Shared(Arc<std::sync::Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn writer_writes_every_line_flushed_or_dropped() {
        let ev = Event::Lost {
            ts: "t".into(),
            count: 1,
            kinds: LostKinds::default(),
            node: None,
        };
        let line = serde_line(&ev);
        let n = 2 * CHUNK / line.len() + 3;
        let seen = Shared::default();
        let mut w = NdjsonWriter::new(Box::new(seen.clone()), "test".into());
        for _ in 0..n {
            w.write(&ev).expect("write");
        }
        assert!(
            seen.0.lock().expect("lock").len() >= CHUNK,
            "written as it goes"
        );
        drop(w);
        let all = seen.0.lock().expect("lock").clone();
        assert_eq!(String::from_utf8(all).expect("UTF-8"), line.repeat(n));
        assert_eq!(encode_line(&ev), line.as_bytes());
    }
}
