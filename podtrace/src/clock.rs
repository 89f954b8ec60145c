//! Boot-clock nanoseconds (what the kernel stamps) to wall-clock RFC 3339 text.
use anyhow::{bail, Context, Result};

/// Nanoseconds of the boot clock (CLOCK_BOOTTIME) now: the kernel's records' clock.
pub fn boot_now_ns() -> u64 {
    now_ns(libc::CLOCK_BOOTTIME).map_or(0, |n| n.max(0) as u64)
}

/// Unix nanoseconds now (CLOCK_REALTIME).
pub fn unix_now_ns() -> i64 {
    now_ns(libc::CLOCK_REALTIME).unwrap_or(0)
}

/// `wall = boot + offset`, where offset = CLOCK_REALTIME - CLOCK_BOOTTIME taken once at start.
/// Recorded in trace headers so replay prints the same timestamps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootClock {
    pub offset_ns: i64,
}

fn now_ns(clock: libc::clockid_t) -> Result<i64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid clock id and a valid out pointer.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return Err(std::io::Error::last_os_error()).context("clock_gettime");
    }
    Ok(ts.tv_sec * 1_000_000_000 + ts.tv_nsec)
}

impl BootClock {
    pub fn from_system() -> Result<Self> {
        let boot = now_ns(libc::CLOCK_BOOTTIME)?;
        let real = now_ns(libc::CLOCK_REALTIME)?;
        Ok(Self {
            offset_ns: real - boot,
        })
    }

    /// Unix nanoseconds of a boot-clock timestamp.
    pub fn unix_ns(&self, boot_ns: u64) -> i64 {
        (boot_ns as i64).saturating_add(self.offset_ns)
    }

    pub fn rfc3339(&self, boot_ns: u64) -> String {
        format_rfc3339(self.unix_ns(boot_ns))
    }

    /// Boot-clock nanoseconds of a unix time (inverse of `unix_ns`).
    pub fn boot_ns(&self, unix_ns: i64) -> u64 {
        unix_ns.saturating_sub(self.offset_ns).max(0) as u64
    }
}

/// Formats timestamps, reusing the date and time of day while the second does not change
/// (events come thousands per second: only the nanoseconds differ). Same text as
/// [`format_rfc3339`].
#[derive(Clone, Debug, Default)]
pub struct TsFormatter {
    second: Option<i64>,
    /// "YYYY-MM-DDTHH:MM:SS." of `second`; empty when that second has no such form (out of
    /// range: `format_rfc3339`'s fallback text is used).
    prefix: String,
}

impl TsFormatter {
    /// Points the cache at the second of `unix_ns`; false when it has no cached form.
    fn load(&mut self, secs: i64) -> bool {
        if self.second != Some(secs) {
            self.second = Some(secs);
            self.prefix.clear();
            if let Some(ns) = secs.checked_mul(1_000_000_000) {
                let full = format_rfc3339(ns);
                if let Some(p) = full.strip_suffix("000000000Z") {
                    self.prefix.push_str(p);
                }
            }
        }
        !self.prefix.is_empty()
    }

    pub fn format(&mut self, unix_ns: i64) -> String {
        let mut out = Vec::with_capacity(32);
        self.write(unix_ns, &mut out);
        String::from_utf8(out).unwrap_or_else(|_| format_rfc3339(unix_ns))
    }

    /// Appends the text of `unix_ns` to `out`.
    pub fn write(&mut self, unix_ns: i64, out: &mut Vec<u8>) {
        let secs = unix_ns.div_euclid(1_000_000_000);
        let nanos = unix_ns.rem_euclid(1_000_000_000) as u32;
        if !self.load(secs) {
            out.extend_from_slice(format_rfc3339(unix_ns).as_bytes());
            return;
        }
        out.extend_from_slice(self.prefix.as_bytes());
        let mut digits = [b'0', b'0', b'0', b'0', b'0', b'0', b'0', b'0', b'0', b'Z'];
        let mut n = nanos;
        for d in digits[..9].iter_mut().rev() {
            *d = b'0' + (n % 10) as u8;
            n /= 10;
        }
        out.extend_from_slice(&digits);
    }
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` (UTC, always nine fractional digits).
pub fn format_rfc3339(unix_ns: i64) -> String {
    let secs = unix_ns.div_euclid(1_000_000_000);
    let nanos = unix_ns.rem_euclid(1_000_000_000);
    match time::OffsetDateTime::from_unix_timestamp(secs) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:09}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second(),
            nanos
        ),
        Err(_) => format!("@{unix_ns}ns"),
    }
}

/// The unix nanoseconds [`format_rfc3339`] printed as `text` (its fallback form too); None
/// for any other text.
pub fn parse_printed(text: &str) -> Option<i64> {
    if let Some(n) = text.strip_prefix('@').and_then(|t| t.strip_suffix("ns")) {
        return n.parse().ok();
    }
    let t =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

/// Parses RFC 3339 text to unix nanoseconds.
pub fn parse_rfc3339(text: &str) -> Result<i64> {
    let t = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("`{text}` is not an RFC 3339 time"))?;
    let ns = t.unix_timestamp_nanos();
    if ns > i128::from(i64::MAX) || ns < 0 {
        bail!("`{text}` is out of range");
    }
    Ok(ns as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_nanoseconds() {
        assert_eq!(format_rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            format_rfc3339(1_795_734_349_123_456_789),
            "2026-11-26T23:05:49.123456789Z"
        );
    }

    #[test]
    fn printed_times_read_back_to_the_same_number() {
        for ns in [
            0i64,
            1,
            -1,
            1_795_734_349_123_456_789,
            -62_135_596_800_000_000,
            i64::MAX,
            i64::MIN,
        ] {
            assert_eq!(parse_printed(&format_rfc3339(ns)), Some(ns), "{ns}");
        }
        assert_eq!(parse_printed("yesterday"), None);
        assert_eq!(parse_printed("@12xns"), None);
    }

    #[test]
    fn cached_formatter_agrees_with_the_plain_one() {
        let mut f = TsFormatter::default();
        for ns in [
            0i64,
            1,
            999_999_999,
            1_000_000_000,
            1_795_734_349_123_456_789,
            1_795_734_349_999_999_999,
            1_795_734_350_000_000_001,
            1_795_734_349_000_000_007,
            -1,
            -999_999_999,
            -1_000_000_001,
            i64::MIN,
            i64::MIN + 1,
            i64::MAX,
            i64::MAX - 1,
        ] {
            assert_eq!(f.format(ns), format_rfc3339(ns), "{ns}");
            // Twice: the second call is served from the cache.
            assert_eq!(f.format(ns), format_rfc3339(ns), "{ns} again");
        }
    }

    #[test]
    fn parse_round_trips() {
        let ns = parse_rfc3339("2026-11-26T23:05:49.123456789Z").expect("valid time");
        assert_eq!(format_rfc3339(ns), "2026-11-26T23:05:49.123456789Z");
        assert!(parse_rfc3339("yesterday").is_err());
    }

    #[test]
    fn system_clock_agrees_with_date() {
        let c = BootClock::from_system().expect("clocks");
        let boot = now_ns(libc::CLOCK_BOOTTIME).expect("boot clock") as u64;
        let real = now_ns(libc::CLOCK_REALTIME).expect("real clock");
        assert!(
            (c.unix_ns(boot) - real).abs() < 50_000_000,
            "boot->wall off by more than 50 ms"
        );
    }
}
