//! Which exit code the running kernel's wait reports for a process whose thread-group leader
//! called `exit` (not `exit_group`) before its last thread did: the leader's (Linux 5.10
//! does this) or the last thread's (6.1 and later). podtrace asks the kernel itself at start:
//! it runs itself as a small process that does exactly that, and waits for it.
use std::process::Command;
use std::time::{Duration, Instant};

/// The hidden first argument that runs the probe process.
pub const PROBE_ARG: &str = "__podtrace-exit-code-probe";
const LEADER_CODE: i64 = 3;
const LAST_CODE: i64 = 7;

/// Whose exit code a process that did not `exit_group` ends with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitCodeOf {
    Leader,
    LastThread,
}

/// Asks the kernel; None when the probe could not run or said something else.
pub fn probe() -> Option<ExitCodeOf> {
    let status = Command::new("/proc/self/exe")
        .arg(PROBE_ARG)
        .status()
        .ok()?;
    match status.code().map(i64::from) {
        Some(LEADER_CODE) => Some(ExitCodeOf::Leader),
        Some(LAST_CODE) => Some(ExitCodeOf::LastThread),
        _ => None,
    }
}

/// The probe process: a second thread waits until the leader has exited (a zombie in
/// /proc/self/task), then exits with another code.
pub fn child() -> ! {
    let leader = std::process::id();
    std::thread::spawn(move || {
        let stat = format!("/proc/self/task/{leader}/stat");
        let until = Instant::now() + Duration::from_secs(2);
        while Instant::now() < until {
            let state = std::fs::read_to_string(&stat).ok().and_then(|s| {
                let after = s.rfind(')')?;
                s.get(after + 2..after + 3).map(str::to_string)
            });
            if matches!(state.as_deref(), Some("Z") | Some("X") | None) {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: the exit syscall ends this thread only.
        unsafe { libc::syscall(libc::SYS_exit, LAST_CODE) };
    });
    // SAFETY: the exit syscall ends the leader thread only; the other thread lives on.
    unsafe { libc::syscall(libc::SYS_exit, LEADER_CODE) };
    std::process::exit(1)
}
