//! The kernel programs' records, from the BPF ring buffer or from the per-CPU perf buffers
//! (kernels without the ring buffer): one reader with one file descriptor to poll.
//!
//! The ring buffer is one queue in the order records were reserved. Perf buffers are one
//! queue per CPU: a fork on one CPU and its child's exec on another sit in different
//! buffers, so each drain takes what every buffer holds and hands it out in time order
//! (`ts_ns`, stable). Records that arrive in a later drain than a younger record of another
//! CPU stay out of order; the engine takes events in any order (a process first seen by its
//! exec is added then).
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Context, Result};
use aya::maps::perf::{PerfEvent, PerfEventArray, PerfEventArrayBuffer};
use aya::maps::{MapData, RingBuf};

use crate::kernel_event::{record_len, record_ts};

/// How records reach the daemon.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Transport {
    /// The BPF ring buffer (Linux 5.8 and later).
    RingBuffer,
    /// Per-CPU perf buffers (any kernel with BPF).
    PerfBuffer,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::RingBuffer => "ring-buffer",
            Transport::PerfBuffer => "perf-buffer",
        }
    }
}

/// Perf buffer bytes per CPU: the ring buffer's size shared out, within bounds. The upper
/// bound keeps all of them within what the kernel lets a user lock for perf without
/// RLIMIT_MEMLOCK (`kernel.perf_event_mlock_kb`, 516 KiB per CPU by default).
pub fn perf_bytes_per_cpu(ring_buffer_bytes: u32, cpus: usize) -> usize {
    const MIN: usize = 64 << 10;
    const MAX: usize = 256 << 10;
    let share = (ring_buffer_bytes as usize / cpus.max(1)).clamp(MIN, MAX);
    // A power of two (of pages).
    1 << share.ilog2()
}

pub enum Source {
    Ring(RingBuf<MapData>),
    Perf(PerfSource),
}

pub struct PerfSource {
    buffers: Vec<PerfEventArrayBuffer<MapData>>,
    /// One fd for all buffers: readable when any is.
    epoll: OwnedFd,
    /// Records taken from the buffers, oldest last (handed out from the end).
    pending: Vec<Vec<u8>>,
    /// PERF_RECORD_LOST counts (the programs count their failed sends themselves).
    pub lost_records: u64,
    _array: PerfEventArray<MapData>,
}

impl Source {
    /// Opens a perf buffer for every online CPU.
    pub fn perf(mut array: PerfEventArray<MapData>, ring_buffer_bytes: u32) -> Result<Self> {
        let cpus = aya::util::online_cpus()
            .map_err(|(path, e)| anyhow::anyhow!("reading {path}: {e}"))
            .context("listing the online CPUs for the perf buffers")?;
        let page = page_size();
        let pages = perf_bytes_per_cpu(ring_buffer_bytes, cpus.len()) / page;
        // SAFETY: epoll_create1 has no preconditions; the fd is owned below.
        let raw = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if raw < 0 {
            return Err(std::io::Error::last_os_error()).context("epoll_create1");
        }
        // SAFETY: a new fd that nothing else owns.
        let epoll = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut buffers = Vec::with_capacity(cpus.len());
        for cpu in cpus {
            let buf = array
                .open(cpu, Some(pages.max(1).next_power_of_two()))
                .with_context(|| format!("opening the perf buffer of CPU {cpu}"))?;
            let mut ev = libc::epoll_event {
                events: libc::EPOLLIN as u32,
                u64: u64::from(cpu),
            };
            // SAFETY: valid fds and event.
            if unsafe {
                libc::epoll_ctl(
                    epoll.as_raw_fd(),
                    libc::EPOLL_CTL_ADD,
                    buf.as_fd().as_raw_fd(),
                    &mut ev,
                )
            } < 0
            {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("polling the perf buffer of CPU {cpu}"));
            }
            buffers.push(buf);
        }
        Ok(Source::Perf(PerfSource {
            buffers,
            epoll,
            pending: Vec::new(),
            lost_records: 0,
            _array: array,
        }))
    }

    pub fn transport(&self) -> Transport {
        match self {
            Source::Ring(_) => Transport::RingBuffer,
            Source::Perf(_) => Transport::PerfBuffer,
        }
    }

    /// Hands up to `budget` records to `f`, oldest first; returns whether more may wait.
    pub fn drain(&mut self, budget: usize, mut f: impl FnMut(&[u8]) -> Result<()>) -> Result<bool> {
        match self {
            Source::Ring(ring) => {
                let mut n = 0;
                while n < budget {
                    let Some(item) = ring.next() else {
                        return Ok(false);
                    };
                    f(&item)?;
                    drop(item);
                    n += 1;
                }
                Ok(true)
            }
            Source::Perf(p) => {
                if p.pending.is_empty() {
                    p.fill();
                }
                let mut n = 0;
                while n < budget {
                    let Some(rec) = p.pending.pop() else {
                        return Ok(false);
                    };
                    f(&rec)?;
                    n += 1;
                }
                Ok(!p.pending.is_empty())
            }
        }
    }

    /// PERF_RECORD_LOST counts so far (perf buffers only).
    pub fn perf_lost_records(&self) -> u64 {
        match self {
            Source::Perf(p) => p.lost_records,
            Source::Ring(_) => 0,
        }
    }
}

impl PerfSource {
    /// Everything every buffer holds, sorted by time (stable: one CPU's records keep their
    /// order), oldest last in `pending`.
    fn fill(&mut self) {
        let mut lost = 0;
        let mut taken: Vec<Vec<u8>> = Vec::new();
        for buf in &mut self.buffers {
            buf.for_each(|ev| match ev {
                PerfEvent::Sample { head, tail } => {
                    let mut rec = Vec::with_capacity(head.len() + tail.len());
                    rec.extend_from_slice(head);
                    rec.extend_from_slice(tail);
                    trim_padding(&mut rec);
                    taken.push(rec);
                }
                PerfEvent::Lost { count } => lost += count,
            });
        }
        self.lost_records += lost;
        taken.sort_by_key(|r| record_ts(r));
        taken.reverse();
        self.pending = taken;
    }
}

/// Cuts the perf buffer's padding (up to 7 bytes, to keep samples 8-byte aligned) off a
/// record; a record whose own lengths do not fit is left whole for the decoder to refuse.
fn trim_padding(rec: &mut Vec<u8>) {
    if let Some(len) = record_len(rec) {
        if len <= rec.len() && rec.len() - len < 8 {
            rec.truncate(len);
        }
    }
}

impl AsRawFd for Source {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Source::Ring(r) => r.as_raw_fd(),
            Source::Perf(p) => p.epoll.as_raw_fd(),
        }
    }
}

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

#[cfg(test)]
mod tests {
    use super::*;
    use podtrace_common::{kind, EventHeader, HEADER_LEN, REAP_LEN};

    fn header(kind: u16, ts: u64, name: u16, argv: u16) -> Vec<u8> {
        let h = EventHeader {
            kind,
            ts_ns: ts,
            filename_len: name,
            argv_len: argv,
            ..EventHeader::default()
        };
        // SAFETY: plain data.
        let bytes: [u8; HEADER_LEN] = unsafe { std::mem::transmute(h) };
        bytes.to_vec()
    }

    #[test]
    fn padding_is_cut_to_the_record_s_own_length() {
        let mut exec = header(kind::EXEC, 1, 3, 2);
        exec.extend_from_slice(b"/shsh\0");
        assert_eq!(exec.len(), HEADER_LEN + 6);
        exec.extend_from_slice(&[0; 3]);
        trim_padding(&mut exec);
        assert_eq!(exec.len(), HEADER_LEN + 5, "header + 3 + 2");
        let mut reap = vec![0u8; REAP_LEN + 4];
        reap[..2].copy_from_slice(&kind::REAP.to_ne_bytes());
        trim_padding(&mut reap);
        assert_eq!(reap.len(), REAP_LEN);
        // Longer than padding can explain: left for the decoder to call malformed.
        let mut odd = header(kind::FORK, 1, 0, 0);
        odd.extend_from_slice(&[0; 16]);
        trim_padding(&mut odd);
        assert_eq!(odd.len(), HEADER_LEN + 16);
        assert_eq!(record_ts(&header(kind::EXIT, 77, 0, 0)), 77);
    }

    #[test]
    fn perf_buffers_share_the_ring_size_within_bounds() {
        assert_eq!(perf_bytes_per_cpu(1 << 22, 2), 256 << 10);
        assert_eq!(perf_bytes_per_cpu(1 << 22, 64), 64 << 10);
        assert_eq!(perf_bytes_per_cpu(1 << 20, 8), 128 << 10);
        assert_eq!(perf_bytes_per_cpu(4096, 1), 64 << 10);
        for cpus in 1..300 {
            let b = perf_bytes_per_cpu(1 << 22, cpus);
            assert!(b.is_power_of_two() && (64 << 10..=256 << 10).contains(&b));
        }
    }
}
