//! Decoding the raw wait status the kernel keeps in `task->exit_code`.

/// How a process ended, as `waitpid` would report it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExitOutcome {
    /// `exit(code)` value (0–255), None when killed by a signal.
    pub exit_code: Option<u8>,
    /// Terminating signal, None when it exited normally.
    pub signal: Option<u8>,
    pub core_dumped: bool,
}

pub fn decode(status: u32) -> ExitOutcome {
    let sig = (status & 0x7f) as u8;
    if sig == 0 {
        ExitOutcome {
            exit_code: Some(((status >> 8) & 0xff) as u8),
            signal: None,
            core_dumped: false,
        }
    } else {
        ExitOutcome {
            exit_code: None,
            signal: Some(sig),
            core_dumped: status & 0x80 != 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normal_exit_codes() {
        assert_eq!(decode(0).exit_code, Some(0));
        assert_eq!(decode(7 << 8).exit_code, Some(7));
        assert_eq!(decode(255 << 8).exit_code, Some(255));
        assert_eq!(decode(7 << 8).signal, None);
    }

    #[test]
    fn killed_by_signal() {
        let o = decode(9);
        assert_eq!(
            (o.exit_code, o.signal, o.core_dumped),
            (None, Some(9), false)
        );
        let o = decode(11 | 0x80);
        assert_eq!(
            (o.exit_code, o.signal, o.core_dumped),
            (None, Some(11), true)
        );
    }
}
