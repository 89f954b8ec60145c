//! What /proc says about a tracer: CPU time, memory, and its BPF programs' run-time statistics
//! (fdinfo of its bpf-prog descriptors; counted only while kernel.bpf_stats_enabled is on).
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};

/// User + system CPU time of a live process (all its threads, dead ones included), in ns.
pub fn cpu_ns(pid: i32) -> Result<u64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_stat_cpu_ticks(&text)
        .map(|ticks| ticks.saturating_mul(1_000_000_000) / clock_ticks())
        .with_context(|| format!("{path}: no utime/stime fields"))
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(t).ok().filter(|&t| t > 0).unwrap_or(100)
}

/// utime + stime (fields 14 and 15) from a /proc/PID/stat line; the command name in field 2
/// may hold spaces and parentheses, so fields are counted after its last ')'.
fn parse_stat_cpu_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 -> index 11.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// Memory and CPU time of a live process at one instant.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// VmRSS, VmHWM and RssAnon (of VmRSS: anonymous memory, the heap) in KiB.
    pub rss_kb: u64,
    pub hwm_kb: u64,
    pub anon_kb: u64,
    /// utime + stime in ns.
    pub cpu_ns: u64,
}

impl Usage {
    pub fn read(pid: i32) -> Result<Self> {
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        let stat_path = format!("/proc/{pid}/stat");
        let stat =
            std::fs::read_to_string(&stat_path).with_context(|| format!("reading {stat_path}"))?;
        Self::parse(&status, &stat, clock_ticks())
            .with_context(|| format!("{path} or {stat_path}: VmRSS, VmHWM, RssAnon, utime, stime"))
    }

    /// From the texts of /proc/PID/status and /proc/PID/stat, at `ticks` clock ticks a second.
    pub fn parse(status: &str, stat: &str, ticks: u64) -> Option<Self> {
        Some(Self {
            rss_kb: parse_status_kb(status, "VmRSS")?,
            hwm_kb: parse_status_kb(status, "VmHWM")?,
            anon_kb: parse_status_kb(status, "RssAnon")?,
            cpu_ns: parse_stat_cpu_ticks(stat)?.saturating_mul(1_000_000_000) / ticks.max(1),
        })
    }
}

/// A `Vm*` line of /proc/PID/status in KiB (e.g. "VmHWM", "VmRSS").
pub fn status_kb(pid: i32, key: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    parse_status_kb(&text, key).with_context(|| format!("{path}: no {key} line"))
}

fn parse_status_kb(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k != key {
            return None;
        }
        v.split_whitespace().next()?.parse().ok()
    })
}

/// Resident KiB of the mappings whose name contains `name` (e.g. "bpf-map": the ring buffer,
/// which is mapped twice so that records can wrap, and so counts twice in RSS).
pub fn mapped_rss_kb(pid: i32, name: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/smaps");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(parse_mapped_rss_kb(&text, name))
}

fn parse_mapped_rss_kb(smaps: &str, name: &str) -> u64 {
    let mut inside = false;
    let mut total = 0;
    for line in smaps.lines() {
        let mut w = line.split_whitespace();
        let first = w.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping header: "start-end perms offset dev inode [name]".
            inside = line.contains(name);
        } else if inside && first == "Rss:" {
            total += w.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    total
}

/// Run-time statistics of one BPF program.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProgStat {
    pub prog_type: u32,
    pub run_time_ns: u64,
    pub run_cnt: u64,
    /// Its entry function's name (from the kernel, see bpfinfo.rs); empty if unknown.
    pub name: String,
}

/// Program types that run on tracepoints: tracepoint, raw_tracepoint, tracing (tp_btf).
pub fn is_tracepoint_type(t: u32) -> bool {
    matches!(t, 5 | 17 | 26)
}

/// The BPF programs a process holds open, by program id.
pub fn bpf_progs(pid: i32) -> Result<BTreeMap<u32, ProgStat>> {
    let dir = format!("/proc/{pid}/fd");
    let mut out = BTreeMap::new();
    let entries = std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))?;
    for entry in entries.flatten() {
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue; // closed in between
        };
        if target != Path::new("anon_inode:bpf-prog") {
            continue;
        }
        let info = format!("/proc/{pid}/fdinfo/{}", entry.file_name().to_string_lossy());
        let Ok(text) = std::fs::read_to_string(&info) else {
            continue;
        };
        if let Some((id, mut stat)) = parse_prog_fdinfo(&text) {
            stat.name = super::bpfinfo::prog_name(id).unwrap_or_default();
            out.insert(id, stat);
        }
    }
    Ok(out)
}

fn parse_prog_fdinfo(text: &str) -> Option<(u32, ProgStat)> {
    let mut id = None;
    let mut stat = ProgStat::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        match k {
            "prog_id" => id = v.parse().ok(),
            "prog_type" => stat.prog_type = v.parse().ok()?,
            "run_time_ns" => stat.run_time_ns = v.parse().ok()?,
            "run_cnt" => stat.run_cnt = v.parse().ok()?,
            _ => {}
        }
    }
    Some((id?, stat))
}

/// Sum over programs of (after - before): run time and count within a window.
pub fn progs_delta(
    before: &BTreeMap<u32, ProgStat>,
    after: &BTreeMap<u32, ProgStat>,
) -> (u64, u64) {
    let mut time = 0;
    let mut cnt = 0;
    for (id, a) in after {
        let (t, c) = delta(before.get(id), a);
        time += t;
        cnt += c;
    }
    (time, cnt)
}

fn delta(before: Option<&ProgStat>, after: &ProgStat) -> (u64, u64) {
    let (bt, bc) = before.map_or((0, 0), |b| (b.run_time_ns, b.run_cnt));
    (
        after.run_time_ns.saturating_sub(bt),
        after.run_cnt.saturating_sub(bc),
    )
}

/// Per program name, (after - before) within a window: (name, run time, run count), sorted by
/// name; programs that did not run are left out.
pub fn progs_delta_by_name(
    before: &BTreeMap<u32, ProgStat>,
    after: &BTreeMap<u32, ProgStat>,
) -> Vec<(String, u64, u64)> {
    let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (id, a) in after {
        let (t, c) = delta(before.get(id), a);
        let name = if a.name.is_empty() {
            format!("prog {id}")
        } else {
            a.name.clone()
        };
        let e = by.entry(name).or_default();
        e.0 += t;
        e.1 += c;
    }
    by.into_iter()
        .filter(|(_, (_, c))| *c > 0)
        .map(|(n, (t, c))| (n, t, c))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_cpu_counts_fields_after_the_command_name() {
        let stat =
            "4242 (we ird) (x)) S 1 4242 4242 0 -1 4194560 100 0 0 0 7 5 0 0 20 0 1 0 99 1 1";
        assert_eq!(parse_stat_cpu_ticks(stat), Some(12));
    }

    #[test]
    fn stat_cpu_of_this_process_is_readable() {
        let pid = i32::try_from(std::process::id()).expect("pid fits i32");
        cpu_ns(pid).expect("own /proc/self/stat parses");
        let hwm = status_kb(pid, "VmHWM").expect("own VmHWM");
        assert!(hwm > 0, "a running test has resident memory");
    }

    #[test]
    fn usage_reads_memory_and_cpu_of_status_and_stat() {
        let status = "Name:\tpodtrace\nVmHWM:\t   40000 kB\nVmRSS:\t   30000 kB\n\
                      RssAnon:\t   12000 kB\nRssFile:\t  2000 kB\n";
        let stat = "77 (podtrace) S 1 77 77 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 3 0 99 1 1";
        assert_eq!(
            Usage::parse(status, stat, 100),
            Some(Usage {
                rss_kb: 30000,
                hwm_kb: 40000,
                anon_kb: 12000,
                cpu_ns: 3_000_000_000,
            })
        );
        assert_eq!(Usage::parse("VmRSS:\t1 kB\n", stat, 100), None, "no VmHWM");
        let pid = i32::try_from(std::process::id()).expect("pid fits i32");
        let me = Usage::read(pid).expect("own status and stat parse");
        assert!(me.rss_kb > 0 && me.hwm_kb >= me.rss_kb, "{me:?}");
    }

    #[test]
    fn status_kb_picks_the_named_line() {
        let s = "Name:\tx\nVmHWM:\t   12345 kB\nVmRSS:\t  999 kB\n";
        assert_eq!(parse_status_kb(s, "VmHWM"), Some(12345));
        assert_eq!(parse_status_kb(s, "VmRSS"), Some(999));
        assert_eq!(parse_status_kb(s, "VmSwap"), None);
    }

    #[test]
    fn mapped_rss_sums_only_the_named_mappings() {
        let smaps = "55f5ae737000-55f5aed80000 rw-p 00000000 00:00 0          [heap]\n\
                     Size:               6436 kB\nRss:                6436 kB\n\
                     7f0f63cf1000-7f0f64cf2000 r--s 00000000 00:0f 1057       anon_inode:bpf-map\n\
                     Size:              16388 kB\nRss:               16388 kB\n\
                     7f0f64cf2000-7f0f64cf3000 rw-s 00000000 00:0f 1057       anon_inode:bpf-map\n\
                     Rss:                   4 kB\n";
        assert_eq!(parse_mapped_rss_kb(smaps, "bpf-map"), 16392);
        assert_eq!(parse_mapped_rss_kb(smaps, "[heap]"), 6436);
    }

    #[test]
    fn prog_fdinfo_parses_kernel_format() {
        let t =
            "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nprog_type:\t17\nprog_jited:\t1\n\
                 prog_tag:\t0123456789abcdef\nmemlock:\t4096\nprog_id:\t88\nrun_time_ns:\t5000\n\
                 run_cnt:\t20\nrecursion_misses:\t0\nverified_insns:\t300\n";
        let (id, s) = parse_prog_fdinfo(t).expect("fdinfo parses");
        assert_eq!(id, 88);
        assert_eq!(
            s,
            ProgStat {
                prog_type: 17,
                run_time_ns: 5000,
                run_cnt: 20,
                name: String::new(),
            }
        );
        assert!(is_tracepoint_type(s.prog_type));
    }

    #[test]
    fn delta_counts_new_programs_from_zero() {
        let p = |t, c, n: &str| ProgStat {
            prog_type: 5,
            run_time_ns: t,
            run_cnt: c,
            name: n.to_string(),
        };
        let before = BTreeMap::from([(1, p(100, 1, "a")), (3, p(7, 1, "c"))]);
        let after = BTreeMap::from([(1, p(400, 4, "a")), (2, p(50, 2, "")), (3, p(7, 1, "c"))]);
        assert_eq!(progs_delta(&before, &after), (350, 5));
        assert_eq!(
            progs_delta_by_name(&before, &after),
            [("a".to_string(), 300, 3), ("prog 2".to_string(), 50, 2)]
        );
    }
}
