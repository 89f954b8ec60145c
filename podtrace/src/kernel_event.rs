//! Kernel events as the daemon holds and records them, and the size-checked ring-buffer decoder.
use podtrace_common::{
    flags, kind, EventHeader, ReapRecord, ARGV_MAX, FILENAME_MAX, HEADER_LEN, REAP_LEN,
};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Exec,
    Fork,
    Exit,
    Thread,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Exec => "exec",
            Kind::Fork => "fork",
            Kind::Exit => "exit",
            Kind::Thread => "thread",
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecPayload {
    pub filename: String,
    pub argv: Vec<String>,
    #[serde(default)]
    pub argv_truncated: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub filename_truncated: bool,
    /// The ring buffer had no room for filename and argv: both are empty.
    #[serde(default, skip_serializing_if = "is_false")]
    pub trimmed: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExitPayload {
    /// Raw wait status (see `wait_status::decode`).
    pub status: u32,
    pub duration_ns: u64,
}

/// One decoded exec, fork, thread or exit record. This is also what a trace file stores.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelEvent {
    pub kind: Kind,
    /// Boot-clock nanoseconds.
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub ppid: u32,
    pub nspid: u32,
    pub pidns: u32,
    pub uid: u32,
    pub gid: u32,
    pub comm: String,
    /// Default (v2) hierarchy cgroup id.
    pub cgroup_id: u64,
    /// cgroup id in the v1 hierarchy of the trace header (0: none).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cgroup_v1_id: u64,
    pub start_ns: u64,
    /// A kernel read failed; some fields are 0.
    #[serde(default, skip_serializing_if = "is_false")]
    pub partial: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecPayload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitPayload>,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

/// A process left the kernel's process table (reaped by its parent, or autoreaped).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReapEvent {
    pub ts_ns: u64,
    pub pid: u32,
    pub start_ns: u64,
}

/// What one ring-buffer record holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decoded {
    Event(KernelEvent),
    Reap(ReapEvent),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than its {1}-byte header")]
    Short(usize, usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u16),
    #[error("{kind} record: expected {expected} bytes, got {got}")]
    Length {
        kind: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("exec record: filename_len {0} exceeds {FILENAME_MAX}")]
    FilenameLen(u16),
    #[error("exec record: argv_len {0} exceeds {ARGV_MAX}")]
    ArgvLen(u16),
}

/// Text of a NUL-padded kernel byte array.
fn c_string(bytes: &[u8]) -> String {
    let end = memchr::memchr(0, bytes).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Splits the kernel's argv area (`arg_start..arg_end`: NUL-terminated strings) into arguments.
pub fn split_argv(bytes: &[u8]) -> Vec<String> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// The record's kind, read without decoding (0 for a record too short to say).
pub fn record_kind(bytes: &[u8]) -> u16 {
    bytes
        .get(..2)
        .map(|b| u16::from_ne_bytes([b[0], b[1]]))
        .unwrap_or(0)
}

/// The length a record says it has (a reap's fixed size; an exec's header plus its filename
/// and argv; a header), None when it is too short to say. The perf buffer pads samples to
/// 8 bytes: the reader cuts them to this before decoding.
pub fn record_len(bytes: &[u8]) -> Option<usize> {
    match record_kind(bytes) {
        kind::REAP => Some(REAP_LEN),
        kind::EXEC => {
            let h = bytes.get(..HEADER_LEN)?;
            let at = |o: usize| usize::from(u16::from_ne_bytes([h[o], h[o + 1]]));
            Some(
                HEADER_LEN
                    + at(std::mem::offset_of!(EventHeader, filename_len))
                    + at(std::mem::offset_of!(EventHeader, argv_len)),
            )
        }
        _ => Some(HEADER_LEN),
    }
}

/// The boot-clock time a record was made (`ts_ns` is at the same place in every kind).
pub fn record_ts(bytes: &[u8]) -> u64 {
    const AT: usize = std::mem::offset_of!(EventHeader, ts_ns);
    bytes
        .get(AT..AT + 8)
        .and_then(|b| b.try_into().ok())
        .map(u64::from_ne_bytes)
        .unwrap_or(0)
}

/// Decodes one kernel record, checking every length against what the kernel promised.
pub fn decode(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    if record_kind(bytes) == kind::REAP {
        if bytes.len() != REAP_LEN {
            return Err(DecodeError::Length {
                kind: "reap",
                expected: REAP_LEN,
                got: bytes.len(),
            });
        }
        // SAFETY: REAP_LEN bytes; ReapRecord is plain data valid for any bit pattern.
        let r: ReapRecord = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
        return Ok(Decoded::Reap(ReapEvent {
            ts_ns: r.ts_ns,
            pid: r.pid,
            start_ns: r.start_ns,
        }));
    }
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Short(bytes.len(), HEADER_LEN));
    }
    // SAFETY: at least HEADER_LEN bytes; EventHeader is plain data valid for any bit pattern.
    let h: EventHeader = unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast()) };
    let kind = match h.kind {
        kind::EXEC => Kind::Exec,
        kind::FORK => Kind::Fork,
        kind::EXIT => Kind::Exit,
        kind::THREAD => Kind::Thread,
        other => return Err(DecodeError::UnknownKind(other)),
    };
    let mut ev = KernelEvent {
        kind,
        ts_ns: h.ts_ns,
        pid: h.pid,
        tid: h.tid,
        ppid: h.ppid,
        nspid: h.nspid,
        pidns: h.pidns,
        uid: h.uid,
        gid: h.gid,
        comm: c_string(&h.comm),
        cgroup_id: h.cgroup_id,
        cgroup_v1_id: h.cgroup_v1_id,
        start_ns: h.start_ns,
        partial: h.flags & flags::PARTIAL != 0,
        exec: None,
        exit: None,
    };
    match kind {
        Kind::Exec => {
            let (name_len, argv_len) = (usize::from(h.filename_len), usize::from(h.argv_len));
            if name_len > FILENAME_MAX {
                return Err(DecodeError::FilenameLen(h.filename_len));
            }
            if argv_len > ARGV_MAX {
                return Err(DecodeError::ArgvLen(h.argv_len));
            }
            let expected = HEADER_LEN + name_len + argv_len;
            if bytes.len() != expected {
                return Err(DecodeError::Length {
                    kind: "exec",
                    expected,
                    got: bytes.len(),
                });
            }
            let name = &bytes[HEADER_LEN..HEADER_LEN + name_len];
            ev.exec = Some(ExecPayload {
                filename: c_string(name),
                argv: split_argv(&bytes[HEADER_LEN + name_len..]),
                argv_truncated: h.flags & flags::ARGV_TRUNCATED != 0,
                filename_truncated: h.flags & flags::FILENAME_TRUNCATED != 0,
                trimmed: h.flags & flags::EXEC_TRIMMED != 0,
            });
        }
        Kind::Fork | Kind::Thread | Kind::Exit => {
            if bytes.len() != HEADER_LEN {
                return Err(DecodeError::Length {
                    kind: kind.as_str(),
                    expected: HEADER_LEN,
                    got: bytes.len(),
                });
            }
            if kind == Kind::Exit {
                ev.exit = Some(ExitPayload {
                    status: h.exit_status,
                    duration_ns: h.ts_ns.saturating_sub(h.start_ns),
                });
            }
        }
    }
    Ok(Decoded::Event(ev))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u16) -> EventHeader {
        let mut comm = [0u8; 16];
        comm[..2].copy_from_slice(b"sh");
        EventHeader {
            kind,
            ts_ns: 10,
            start_ns: 5,
            pid: 42,
            tid: 42,
            ppid: 1,
            nspid: 1,
            comm,
            ..EventHeader::default()
        }
    }

    fn bytes_of<T>(h: &T) -> Vec<u8> {
        // SAFETY: test helper viewing a repr(C) value as bytes.
        unsafe {
            std::slice::from_raw_parts((h as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    fn exec_record(filename: &[u8], argv: &[u8], flags: u16) -> Vec<u8> {
        let mut h = header(kind::EXEC);
        h.filename_len = filename.len() as u16;
        h.argv_len = argv.len() as u16;
        h.flags = flags;
        let mut b = bytes_of(&h);
        b.extend_from_slice(filename);
        b.extend_from_slice(argv);
        b
    }

    fn event(d: Decoded) -> KernelEvent {
        match d {
            Decoded::Event(e) => e,
            Decoded::Reap(r) => panic!("expected an event, got {r:?}"),
        }
    }

    #[test]
    fn decodes_exec_with_argv_right_after_the_filename() {
        let ev =
            event(decode(&exec_record(b"/bin/sh", b"sh\0-c\0exit 7\0", 0)).expect("valid exec"));
        let exec = ev.exec.expect("exec payload");
        assert_eq!(exec.filename, "/bin/sh");
        assert_eq!(exec.argv, ["sh", "-c", "exit 7"]);
        assert!(!exec.argv_truncated && !exec.filename_truncated && !exec.trimmed);
        assert_eq!(ev.comm, "sh");
        assert_eq!(ev.pid, 42);
    }

    #[test]
    fn keeps_empty_arguments_and_the_flags() {
        let ev = event(
            decode(&exec_record(
                b"/x",
                b"x\0\0y",
                flags::ARGV_TRUNCATED | flags::FILENAME_TRUNCATED | flags::PARTIAL,
            ))
            .expect("valid"),
        );
        assert!(ev.partial);
        let exec = ev.exec.expect("exec payload");
        assert_eq!(exec.argv, ["x", "", "y"]);
        assert!(exec.argv_truncated && exec.filename_truncated);
    }

    #[test]
    fn a_trimmed_exec_is_a_header_alone() {
        let ev = event(decode(&exec_record(b"", b"", flags::EXEC_TRIMMED)).expect("valid"));
        let exec = ev.exec.expect("payload");
        assert!(exec.trimmed && exec.filename.is_empty() && exec.argv.is_empty());
    }

    #[test]
    fn rejects_short_and_inconsistent_records() {
        assert_eq!(decode(&[0u8; 10]), Err(DecodeError::Short(10, HEADER_LEN)));
        let mut rec = exec_record(b"/bin/sh", b"sh\0", 0);
        rec.pop();
        assert!(matches!(decode(&rec), Err(DecodeError::Length { .. })));
        let mut h = header(kind::EXEC);
        h.argv_len = (ARGV_MAX + 1) as u16;
        assert!(matches!(
            decode(&bytes_of(&h)),
            Err(DecodeError::ArgvLen(_))
        ));
        let mut h = header(kind::EXEC);
        h.filename_len = (FILENAME_MAX + 1) as u16;
        assert!(matches!(
            decode(&bytes_of(&h)),
            Err(DecodeError::FilenameLen(_))
        ));
        let mut b = bytes_of(&header(kind::FORK));
        b.push(0);
        assert!(matches!(decode(&b), Err(DecodeError::Length { .. })));
        assert_eq!(
            decode(&bytes_of(&header(99))),
            Err(DecodeError::UnknownKind(99))
        );
        let reap = ReapRecord {
            kind: kind::REAP,
            ..ReapRecord::default()
        };
        let mut b = bytes_of(&reap);
        b.push(0);
        assert!(matches!(
            decode(&b),
            Err(DecodeError::Length { kind: "reap", .. })
        ));
    }

    #[test]
    fn exit_carries_status_and_duration() {
        let mut h = header(kind::EXIT);
        h.exit_status = 7 << 8;
        h.ts_ns = 105;
        h.start_ns = 5;
        let ev = event(decode(&bytes_of(&h)).expect("valid exit"));
        assert_eq!(
            ev.exit,
            Some(ExitPayload {
                status: 7 << 8,
                duration_ns: 100
            })
        );
    }

    #[test]
    fn reap_carries_identity() {
        let r = ReapRecord {
            kind: kind::REAP,
            flags: 0,
            pid: 7,
            ts_ns: 20,
            start_ns: 3,
        };
        assert_eq!(
            decode(&bytes_of(&r)),
            Ok(Decoded::Reap(ReapEvent {
                ts_ns: 20,
                pid: 7,
                start_ns: 3
            }))
        );
    }

    #[test]
    fn non_utf8_is_replaced_not_rejected() {
        let ev = event(decode(&exec_record(b"/x\xff", b"a\xfe\0", 0)).expect("valid"));
        let exec = ev.exec.expect("payload");
        assert_eq!(exec.filename, "/x\u{fffd}");
        assert_eq!(exec.argv, ["a\u{fffd}"]);
    }
}
