//! Process lifecycles the kernel makes racy or unusual, for the lifecycle tests:
//!
//! - `exit-group THREADS CODE`: THREADS busy threads, then `exit(CODE)` (exit_group) from
//!   main while they spin on other CPUs;
//! - `threads-sleep THREADS`: THREADS sleeping threads; main sleeps (to be SIGKILLed);
//! - `exec-from-thread PROG ARGS...`: a non-leader thread calls execv (the kernel makes it
//!   the leader);
//! - `leader-exits-first LEADER LAST`: the leader thread calls the `exit` syscall with LEADER
//!   while another thread lives on, then that thread exits with LAST (waitpid says which
//!   the process ended with);
//! - `zombie-parent SECS`: forks a child that exits at once, prints its pid, sleeps SECS
//!   before reaping it, then sleeps SECS again and exits.
// Test code: panics with a message saying what failed.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::CString;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static STOP: AtomicBool = AtomicBool::new(false);

fn arg(args: &[String], i: usize, what: &str) -> u64 {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("argument {i}: {what} (a number)"))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("exit-group") => {
            let n = arg(&args, 2, "threads");
            let code = arg(&args, 3, "exit code") as i32;
            let started = std::sync::Arc::new(std::sync::Barrier::new(n as usize + 1));
            for _ in 0..n {
                let b = started.clone();
                std::thread::spawn(move || {
                    b.wait();
                    let mut x = 0u64;
                    while !STOP.load(Ordering::Relaxed) {
                        x = std::hint::black_box(x.wrapping_add(1));
                    }
                });
            }
            started.wait();
            std::process::exit(code);
        }
        Some("threads-sleep") => {
            let n = arg(&args, 2, "threads");
            for _ in 0..n {
                std::thread::spawn(|| loop {
                    std::thread::sleep(Duration::from_secs(3600));
                });
            }
            println!("ready");
            std::io::stdout().flush().expect("stdout");
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
        Some("exec-from-thread") => {
            let prog = CString::new(args.get(2).expect("program").as_str()).expect("no NUL");
            let argv: Vec<CString> = args[2..]
                .iter()
                .map(|a| CString::new(a.as_str()).expect("no NUL"))
                .collect();
            let t = std::thread::spawn(move || {
                let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
                ptrs.push(std::ptr::null());
                // SAFETY: NUL-terminated strings and a NULL-terminated array that outlive the call.
                unsafe { libc::execv(prog.as_ptr(), ptrs.as_ptr()) };
                panic!("execv failed: {}", std::io::Error::last_os_error());
            });
            let _ = t.join();
            std::process::exit(1);
        }
        Some("leader-exits-first") => {
            let code = arg(&args, 2, "leader's exit code") as libc::c_long;
            let last = arg(&args, 3, "last thread's exit code") as libc::c_long;
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                // SAFETY: the exit syscall ends this thread only.
                unsafe { libc::syscall(libc::SYS_exit, last) };
            });
            // SAFETY: the exit syscall ends the leader thread only; the other lives on.
            unsafe { libc::syscall(libc::SYS_exit, code) };
            unreachable!("SYS_exit returned");
        }
        Some("zombie-parent") => {
            let secs = arg(&args, 2, "seconds");
            // SAFETY: fork in a single-threaded process; the child only calls _exit.
            let child = unsafe { libc::fork() };
            if child == 0 {
                // SAFETY: async-signal-safe exit of the forked child.
                unsafe { libc::_exit(0) };
            }
            assert!(child > 0, "fork: {}", std::io::Error::last_os_error());
            println!("{child}");
            std::io::stdout().flush().expect("stdout");
            std::thread::sleep(Duration::from_secs(secs));
            let mut status = 0;
            // SAFETY: waiting for our own child.
            let r = unsafe { libc::waitpid(child, &mut status, 0) };
            assert_eq!(r, child, "waitpid");
            println!("reaped");
            std::io::stdout().flush().expect("stdout");
            std::thread::sleep(Duration::from_secs(secs));
        }
        other => panic!("unknown subcommand {other:?} (see the module doc)"),
    }
}
