//! Why podtrace stops, by kind; the kind decides the exit status (never the message text).
use crate::trace::reader::TraceError;

/// Exit status for bad input (arguments, trace files) and for what the node lacks.
pub const EXIT_BAD_INPUT: u8 = 2;
/// Exit status for everything else that stops podtrace.
pub const EXIT_FAILURE: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// An argument or input podtrace cannot use; the message names it.
    #[error("{0}")]
    BadInput(String),
    /// The node cannot run podtrace as asked: missing privileges, no BTF, no BTF tracepoint,
    /// a forced cgroup mode without its hierarchy. The message names what is missing.
    #[error("{0}")]
    Unsupported(String),
    /// The embedded kernel object does not match this daemon (a stale build).
    #[error("{0}")]
    StaleObject(String),
}

impl Failure {
    pub fn exit_code(&self) -> u8 {
        match self {
            Failure::BadInput(_) | Failure::Unsupported(_) => EXIT_BAD_INPUT,
            Failure::StaleObject(_) => EXIT_FAILURE,
        }
    }
}

/// The exit status for an error: from the first typed cause in its chain.
pub fn exit_code(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if let Some(f) = cause.downcast_ref::<Failure>() {
            return f.exit_code();
        }
        if cause.downcast_ref::<TraceError>().is_some() {
            return EXIT_BAD_INPUT;
        }
    }
    EXIT_FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn the_kind_decides_the_status_through_context() {
        let e = anyhow::Error::new(Failure::BadInput("--event: unknown".into())).context("x");
        assert_eq!(exit_code(&e), EXIT_BAD_INPUT);
        let e: anyhow::Result<()> = Err(Failure::Unsupported("no BTF".into()).into());
        assert_eq!(exit_code(&e.context("loading").expect_err("error")), 2);
        let e = anyhow::anyhow!("--looks like a flag but is an I/O error");
        assert_eq!(exit_code(&e), EXIT_FAILURE, "the text does not matter");
        let trace = TraceError {
            file: "t".into(),
            line: 3,
            reason: "bad".into(),
        };
        assert_eq!(exit_code(&anyhow::Error::new(trace)), EXIT_BAD_INPUT);
        assert_eq!(
            exit_code(&Failure::StaleObject("old".into()).into()),
            EXIT_FAILURE
        );
    }
}
