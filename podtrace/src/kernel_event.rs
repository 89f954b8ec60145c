//! Kernel events as the daemon holds and records them, and the size-checked ring-buffer decoder.
use podtrace_common::{flags, kind, EventHeader, ARGV_MAX, FILENAME_MAX, HEADER_LEN};
use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Exec,
    Fork,
    Exit,
    Thread,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecPayload {
    pub filename: String,
    pub argv: Vec<String>,
    #[serde(default)]
    pub argv_truncated: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitPayload {
    /// Raw wait status (see `wait_status::decode`).
    pub status: u32,
    pub duration_ns: u64,
}

/// One decoded kernel record. This is also what a trace file stores.
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
    pub cgroup_id: u64,
    pub start_ns: u64,
    /// A kernel read failed; some fields are 0.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<ExecPayload>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit: Option<ExitPayload>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record of {0} bytes is shorter than the {HEADER_LEN}-byte header")]
    Short(usize),
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
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

/// Text of a fixed-size, NUL-padded kernel byte array.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Splits the kernel's argv area (`arg_start..arg_end`: NUL-terminated strings) into arguments.
fn split_argv(bytes: &[u8]) -> Vec<String> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    bytes
        .split(|&b| b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// Decodes one ring-buffer record, checking every length against what the kernel promised.
pub fn decode(bytes: &[u8]) -> Result<KernelEvent, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Short(bytes.len()));
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
        start_ns: h.start_ns,
        partial: h.flags & flags::PARTIAL != 0,
        exec: None,
        exit: None,
    };
    match kind {
        Kind::Exec => {
            if usize::from(h.filename_len) > FILENAME_MAX {
                return Err(DecodeError::FilenameLen(h.filename_len));
            }
            if usize::from(h.argv_len) > ARGV_MAX {
                return Err(DecodeError::ArgvLen(h.argv_len));
            }
            let expected = HEADER_LEN + FILENAME_MAX + usize::from(h.argv_len);
            if bytes.len() != expected {
                return Err(DecodeError::Length {
                    kind: "exec",
                    expected,
                    got: bytes.len(),
                });
            }
            let name_area = &bytes[HEADER_LEN..HEADER_LEN + usize::from(h.filename_len)];
            let argv_area = &bytes[HEADER_LEN + FILENAME_MAX..];
            ev.exec = Some(ExecPayload {
                filename: c_string(name_area),
                argv: split_argv(argv_area),
                argv_truncated: h.flags & flags::ARGV_TRUNCATED != 0,
            });
        }
        Kind::Fork | Kind::Thread | Kind::Exit => {
            if bytes.len() != HEADER_LEN {
                return Err(DecodeError::Length {
                    kind: if kind == Kind::Exit { "exit" } else { "fork" },
                    expected: HEADER_LEN,
                    got: bytes.len(),
                });
            }
            if kind == Kind::Exit {
                ev.exit = Some(ExitPayload {
                    status: h.exit_status,
                    duration_ns: h.duration_ns,
                });
            }
        }
    }
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(kind: u32) -> EventHeader {
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

    fn bytes_of(h: &EventHeader) -> Vec<u8> {
        // SAFETY: test helper viewing a repr(C) value as bytes.
        unsafe { std::slice::from_raw_parts((h as *const EventHeader).cast::<u8>(), HEADER_LEN) }
            .to_vec()
    }

    fn exec_record(filename: &[u8], argv: &[u8], flags: u32) -> Vec<u8> {
        let mut h = header(kind::EXEC);
        h.filename_len = filename.len() as u16;
        h.argv_len = argv.len() as u16;
        h.flags = flags;
        let mut b = bytes_of(&h);
        let mut area = vec![0u8; FILENAME_MAX];
        area[..filename.len()].copy_from_slice(filename);
        b.extend(area);
        b.extend_from_slice(argv);
        b
    }

    #[test]
    fn decodes_exec_with_argv() {
        let ev = decode(&exec_record(b"/bin/sh", b"sh\0-c\0exit 7\0", 0)).expect("valid exec");
        let exec = ev.exec.expect("exec payload");
        assert_eq!(exec.filename, "/bin/sh");
        assert_eq!(exec.argv, ["sh", "-c", "exit 7"]);
        assert!(!exec.argv_truncated);
        assert_eq!(ev.comm, "sh");
        assert_eq!(ev.pid, 42);
    }

    #[test]
    fn keeps_empty_arguments_and_truncation_flag() {
        let ev = decode(&exec_record(b"/x", b"x\0\0y", flags::ARGV_TRUNCATED)).expect("valid");
        let exec = ev.exec.expect("exec payload");
        assert_eq!(exec.argv, ["x", "", "y"]);
        assert!(exec.argv_truncated);
    }

    #[test]
    fn exec_without_argv() {
        let ev = decode(&exec_record(b"/x", b"", 0)).expect("valid");
        assert!(ev.exec.expect("payload").argv.is_empty());
    }

    #[test]
    fn rejects_short_and_inconsistent_records() {
        assert_eq!(decode(&[0u8; 10]), Err(DecodeError::Short(10)));
        let mut rec = exec_record(b"/bin/sh", b"sh\0", 0);
        rec.pop();
        assert!(matches!(decode(&rec), Err(DecodeError::Length { .. })));
        let mut h = header(kind::EXEC);
        h.argv_len = (ARGV_MAX + 1) as u16;
        assert!(matches!(
            decode(&bytes_of(&h)),
            Err(DecodeError::ArgvLen(_))
        ));
        let mut b = bytes_of(&header(kind::FORK));
        b.push(0);
        assert!(matches!(decode(&b), Err(DecodeError::Length { .. })));
        assert_eq!(
            decode(&bytes_of(&header(99))),
            Err(DecodeError::UnknownKind(99))
        );
    }

    #[test]
    fn exit_carries_status() {
        let mut h = header(kind::EXIT);
        h.exit_status = 7 << 8;
        h.duration_ns = 5;
        let ev = decode(&bytes_of(&h)).expect("valid exit");
        assert_eq!(
            ev.exit,
            Some(ExitPayload {
                status: 7 << 8,
                duration_ns: 5
            })
        );
    }

    #[test]
    fn non_utf8_is_replaced_not_rejected() {
        let ev = decode(&exec_record(b"/x\xff", b"a\xfe\0", 0)).expect("valid");
        let exec = ev.exec.expect("payload");
        assert_eq!(exec.filename, "/x\u{fffd}");
        assert_eq!(exec.argv, ["a\u{fffd}"]);
    }
}
