//! A process whose /proc/PID/cmdline read hangs: `argv-hang FILE FILLER...`.
//!
//! Started with at least two pages of argument bytes, it maps FILE (on a FUSE file system that
//! never answers READ) with MAP_FIXED over one page lying wholly inside its own argument
//! strings, prints `ready ADDR`, and waits on stdin. A reader of /proc/PID/mem at ADDR then
//! faults that page in and waits for the FUSE server, holding this process's mmap lock
//! (/proc/PID/cmdline itself reads anonymous memory only since Linux 4.18: it fails on that
//! page rather than wait). On a line `lock` from stdin it calls mmap(2): a writer waiting for
//! that lock, so every later reader of its mm (/proc/PID/cmdline, environ, ...) queues behind
//! it, in a killable wait.
//! It never touches its own argument strings after the mapping.
//!
//! `argv-hang --read-mem PID ADDR` reads one byte of /proc/PID/mem at ADDR (hex): the reader
//! that faults such a page in from another process, holding that process's mmap lock.
use std::io::{BufRead, Write};
use std::os::fd::AsRawFd;

fn fail(what: &str) -> ! {
    eprintln!("argv-hang: {what}");
    std::process::exit(2)
}

fn read_mem(args: &[String]) -> ! {
    use std::os::unix::fs::FileExt;
    let [pid, addr] = args else {
        fail("usage: argv-hang --read-mem PID ADDR")
    };
    let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16)
        .unwrap_or_else(|e| fail(&format!("address {addr}: {e}")));
    let mem = std::fs::File::open(format!("/proc/{pid}/mem"))
        .unwrap_or_else(|e| fail(&format!("/proc/{pid}/mem: {e}")));
    let mut byte = [0u8; 1];
    match mem.read_at(&mut byte, addr) {
        Ok(_) => std::process::exit(0),
        Err(e) => fail(&format!("reading /proc/{pid}/mem at {addr:#x}: {e}")),
    }
}

fn main() {
    // Everything from argv is copied before the mapping replaces a page of it.
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("--read-mem") {
        read_mem(&args[2..]);
    }
    let Some(path) = args.get(1) else {
        fail("usage: argv-hang FILE FILLER...")
    };
    let stat = std::fs::read_to_string("/proc/self/stat")
        .unwrap_or_else(|e| fail(&format!("/proc/self/stat: {e}")));
    // Fields after the command's `)` start at field 3; arg_start and arg_end are 48 and 49.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .unwrap_or_else(|| fail("/proc/self/stat has no `)`"));
    let fields: Vec<u64> = rest
        .split_whitespace()
        .skip(45)
        .take(2)
        .map(|f| {
            f.parse()
                .unwrap_or_else(|e| fail(&format!("stat field {f}: {e}")))
        })
        .collect();
    let [arg_start, arg_end] = fields[..] else {
        fail("/proc/self/stat has no arg_start/arg_end")
    };
    let page = 4096u64;
    let addr = arg_start.div_ceil(page) * page;
    if addr + page > arg_end {
        fail(&format!(
            "no whole page inside the arguments {arg_start:#x}..{arg_end:#x}: give more filler"
        ));
    }
    let file = std::fs::File::open(path).unwrap_or_else(|e| fail(&format!("open {path}: {e}")));
    // SAFETY: replaces one page of this process's argument strings, which nothing reads again.
    let got = unsafe {
        libc::mmap(
            addr as *mut libc::c_void,
            page as usize,
            libc::PROT_READ,
            libc::MAP_SHARED | libc::MAP_FIXED,
            file.as_raw_fd(),
            0,
        )
    };
    if got == libc::MAP_FAILED || got as u64 != addr {
        fail(&format!(
            "mmap {path} at {addr:#x}: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut out = std::io::stdout();
    if writeln!(out, "ready {addr:#x}")
        .and_then(|()| out.flush())
        .is_err()
    {
        fail("stdout");
    }
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if line == "lock" {
            // SAFETY: an anonymous mapping, only to take the mmap lock for writing.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    page as usize,
                    libc::PROT_READ,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                fail("anonymous mmap");
            }
        }
    }
    // Stdin closed: wait to be killed.
    loop {
        std::thread::park();
    }
}
