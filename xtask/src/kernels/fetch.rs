//! Debian's `cloud-amd64` kernels from deb.debian.org, with a private apt state under
//! `target/kernels/apt` (the machine's own sources, lists and caches are never touched).
//!
//! The newest package of each series is picked from the private lists with `apt-cache search`
//! and a version sort (no pinned names). The lists are refreshed when older than a day (or with
//! `--refresh`); a kernel is downloaded once (`apt-get download`), and only its `boot/vmlinuz-*`
//! and `boot/config-*` are kept, in `target/kernels/cache/<deb name>/`. A second run within the
//! day uses the network not at all.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{bail, ensure, Context, Result};

use crate::util;

/// One kernel series: the suites that carry it and the package names that belong to it.
pub struct Series {
    pub name: &'static str,
    pub suites: &'static str,
    /// An `apt-cache search --names-only` regular expression.
    pub pattern: &'static str,
}

/// bullseye-security is left out: its index names newer 5.10 packages than bullseye, but the
/// archive answers 404 for them (checked 2026-12-01), so the newest would never download.
pub const SERIES: &[Series] = &[
    Series {
        name: "5.10",
        suites: "bullseye",
        pattern: r"^linux-image-5\.10\.0-[0-9]+-cloud-amd64-unsigned$",
    },
    Series {
        name: "6.1",
        suites: "bookworm, bookworm-security",
        pattern: r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
    },
    Series {
        name: "6.12",
        suites: "bookworm-backports, bookworm-security",
        pattern: r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$",
    },
];

const SOURCES: &str =
    "# written by `cargo xtask kernels` (podtrace): kernels for the QEMU matrix only
Types: deb
URIs: http://deb.debian.org/debian
Suites: bullseye bookworm bookworm-backports
Components: main
Architectures: amd64
Targets: Packages
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Architectures: amd64
Targets: Packages
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

const LIST_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    pub series: &'static str,
    pub package: String,
    /// The Debian package version, e.g. `6.1.192-3`.
    pub version: String,
    /// `uname -r`, from the image's file name, e.g. `6.1.0-57-cloud-amd64`.
    pub release: String,
    pub vmlinuz: PathBuf,
    /// Whether this run downloaded it (false: from the cache).
    pub downloaded: bool,
}

pub fn dir() -> PathBuf {
    util::workspace_root().join("target/kernels")
}

struct Apt {
    root: PathBuf,
}

impl Apt {
    fn sources(&self) -> PathBuf {
        self.root.join("debian.sources")
    }

    fn stamp(&self) -> PathBuf {
        self.root.join("updated")
    }

    fn opts(&self) -> Vec<String> {
        let o = |k: &str, v: &Path| format!("{k}={}", v.display());
        let mut v = Vec::new();
        for (k, p) in [
            ("Dir::Etc::SourceList", self.sources()),
            ("Dir::Etc::SourceParts", PathBuf::from("/dev/null")),
            ("Dir::State::Lists", self.root.join("lists")),
            ("Dir::Cache", self.root.join("cache")),
        ] {
            v.push("-o".to_string());
            v.push(o(k, &p));
        }
        for kv in ["Acquire::Languages=none", "APT::Sandbox::User=root"] {
            v.push("-o".to_string());
            v.push(kv.to_string());
        }
        v
    }

    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.args(self.opts());
        c
    }

    /// Writes the sources list; refreshes the lists unless they are younger than a day and were
    /// made from the same sources. Returns what it did and whether it refreshed.
    fn ensure_lists(&self, refresh: bool) -> Result<(String, bool)> {
        for d in ["lists/partial", "cache"] {
            std::fs::create_dir_all(self.root.join(d))
                .with_context(|| format!("creating {}", self.root.join(d).display()))?;
        }
        std::fs::write(self.sources(), SOURCES)
            .with_context(|| format!("writing {}", self.sources().display()))?;
        let age = std::fs::read_to_string(self.stamp())
            .ok()
            .filter(|s| s == SOURCES)
            .and_then(|_| std::fs::metadata(self.stamp()).ok())
            .and_then(|m| m.modified().ok())
            .and_then(|t| SystemTime::now().duration_since(t).ok());
        if let Some(age) = age.filter(|a| !refresh && *a < LIST_MAX_AGE) {
            return Ok((
                format!(
                    "apt lists are {} min old (refreshed after 24 h or with --refresh): no apt-get update",
                    age.as_secs() / 60
                ),
                false,
            ));
        }
        let _ = std::fs::remove_file(self.stamp());
        eprintln!(
            "    apt-get update with the private list {}",
            self.sources().display()
        );
        util::run(self.cmd("apt-get").args(["-qq", "update"]))
            .context("apt-get update of the private kernel list (deb.debian.org)")?;
        std::fs::write(self.stamp(), SOURCES)?;
        Ok(("apt lists refreshed".to_string(), true))
    }

    fn newest(&self, s: &Series) -> Result<String> {
        let out = self
            .cmd("apt-cache")
            .args(["search", "--names-only", s.pattern])
            .output()
            .context("cannot run apt-cache")?;
        ensure!(
            out.status.success(),
            "apt-cache search failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(" - ").next())
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect();
        names.sort_by(|a, b| version_cmp(a, b));
        names.pop().with_context(|| {
            format!(
                "no package matches {} in {} (deb.debian.org)",
                s.pattern, s.suites
            )
        })
    }

    /// The `.deb` file name apt would download for `package` (`name_version_arch.deb`).
    fn deb_name(&self, package: &str) -> Result<String> {
        let out = self
            .cmd("apt-get")
            .args(["--print-uris", "download", package])
            .output()
            .context("cannot run apt-get")?;
        ensure!(
            out.status.success(),
            "apt-get --print-uris download {package}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace()
            .nth(1)
            .filter(|f| f.ends_with(".deb"))
            .map(str::to_string)
            .with_context(|| format!("apt-get --print-uris download {package} printed {text:?}"))
    }
}

/// Compares names like `...-5.10.0-9-...` and `...-5.10.0-32-...`: digit runs as numbers.
pub fn version_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut out = Vec::new();
        let mut start = 0;
        let b = s.as_bytes();
        for i in 1..=b.len() {
            if i == b.len() || b[i].is_ascii_digit() != b[start].is_ascii_digit() {
                out.push((b[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        out
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let o = match (x, y) {
            ((true, x), (true, y)) => {
                let (x, y) = (x.trim_start_matches('0'), y.trim_start_matches('0'));
                x.len().cmp(&y.len()).then_with(|| x.cmp(y))
            }
            ((_, x), (_, y)) => x.cmp(y),
        };
        if o.is_ne() {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

/// Fetches (or finds in the cache) the newest kernel of each series; one result per series.
/// When a download fails from lists this run did not refresh, the lists may be stale (the archive
/// moved on): refresh once and retry.
pub fn kernels(
    series: &[&'static Series],
    refresh: bool,
) -> Vec<(&'static Series, Result<Kernel>)> {
    let apt = Apt {
        root: dir().join("apt"),
    };
    let mut refreshed = match apt.ensure_lists(refresh) {
        Ok((what, refreshed)) => {
            eprintln!("    {what}");
            refreshed
        }
        Err(e) => {
            let msg = format!("{e:#}");
            return series
                .iter()
                .map(|s| (*s, Err(anyhow::anyhow!("{msg}"))))
                .collect();
        }
    };
    let mut out = Vec::new();
    for s in series {
        let mut r = kernel(&apt, s);
        if let (Err(e), false) = (&r, refreshed) {
            eprintln!(
                "    {}: {e:#}; refreshing the apt lists and retrying",
                s.name
            );
            refreshed = true;
            r = apt.ensure_lists(true).and_then(|_| kernel(&apt, s));
        }
        match &r {
            Ok(k) => eprintln!(
                "    {}: {} {} ({})",
                s.name,
                k.package,
                k.version,
                if k.downloaded { "downloaded" } else { "cached" }
            ),
            Err(e) => eprintln!("    {}: FAILED: {e:#}", s.name),
        }
        out.push((*s, r));
    }
    out
}

fn kernel(apt: &Apt, s: &'static Series) -> Result<Kernel> {
    let package = apt.newest(s)?;
    let deb = apt.deb_name(&package)?;
    let stem = deb.trim_end_matches(".deb").to_string();
    let version = stem
        .strip_prefix(&format!("{package}_"))
        .and_then(|v| v.rsplit_once('_').map(|(v, _arch)| v.replace("%3a", ":")))
        .with_context(|| format!("cannot read the version from {deb}"))?;
    let cache = dir().join("cache");
    let entry = cache.join(&stem);
    let downloaded = !entry.join("vmlinuz").is_file();
    if downloaded {
        download(apt, s, &package, &deb, &entry)
            .with_context(|| format!("downloading {package} {version}"))?;
        prune(&cache, s, &stem);
    }
    let release = std::fs::read_to_string(entry.join("release"))
        .with_context(|| format!("reading {}", entry.join("release").display()))?
        .trim()
        .to_string();
    Ok(Kernel {
        series: s.name,
        package,
        version,
        release,
        vmlinuz: entry.join("vmlinuz"),
        downloaded,
    })
}

/// `apt-get download`, then keeps `boot/vmlinuz-*` and `boot/config-*` of the package in `entry`.
fn download(apt: &Apt, s: &Series, package: &str, deb: &str, entry: &Path) -> Result<()> {
    let work = dir().join("download");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    std::fs::create_dir_all(work.join("x"))?;
    eprintln!("    apt-get download {package}");
    let out = apt
        .cmd("apt-get")
        .args(["-q", "download", package])
        .current_dir(&work)
        .output()
        .context("cannot run apt-get")?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let why: Vec<&str> = err.lines().filter(|l| l.starts_with("E:")).collect();
        bail!(
            "apt-get download {package}: {} ({})",
            if why.is_empty() {
                err.trim().to_string()
            } else {
                why.join(" ")
            },
            out.status
        );
    }
    let deb_path = work.join(deb);
    ensure!(
        deb_path.is_file(),
        "apt-get download did not leave {}",
        deb_path.display()
    );
    // dpkg-deb --fsys-tarfile X.deb | tar -x ./boot/vmlinuz-* ./boot/config-*
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb_path)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run dpkg-deb")?;
    let tar_in = dpkg.stdout.take().context("dpkg-deb stdout")?;
    let tar = Command::new("tar")
        .args(["-x", "--wildcards", "-C"])
        .arg(work.join("x"))
        .args(["./boot/vmlinuz-*", "./boot/config-*"])
        .stdin(tar_in)
        .status()
        .context("cannot run tar")?;
    let dpkg_status = dpkg.wait()?;
    ensure!(
        dpkg_status.success() && tar.success(),
        "extracting boot/ from {deb}: dpkg-deb {dpkg_status}, tar {tar}"
    );
    let boot = work.join("x/boot");
    let mut vmlinuz = None;
    let mut config = None;
    for e in std::fs::read_dir(&boot).with_context(|| format!("reading {}", boot.display()))? {
        let p = e?.path();
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(r) = name.strip_prefix("vmlinuz-") {
            vmlinuz = Some((p.clone(), r.to_string()));
        } else if name.starts_with("config-") {
            config = Some(p);
        }
    }
    let Some((vmlinuz, release)) = vmlinuz else {
        bail!("{deb} has no boot/vmlinuz-*");
    };
    let staging = entry.with_extension("partial");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    std::fs::create_dir_all(&staging)?;
    std::fs::rename(&vmlinuz, staging.join("vmlinuz"))?;
    if let Some(c) = config {
        std::fs::rename(c, staging.join("config"))?;
    }
    std::fs::write(staging.join("release"), format!("{release}\n"))?;
    std::fs::write(staging.join("package"), format!("{package}\n"))?;
    std::fs::write(staging.join("series"), format!("{}\n", s.name))?;
    if entry.exists() {
        std::fs::remove_dir_all(entry)?;
    }
    std::fs::rename(&staging, entry)?;
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    Ok(())
}

/// Removes older cached kernels of the same series (the newest one was just stored as `keep`).
fn prune(cache: &Path, s: &Series, keep: &str) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    for e in entries.flatten() {
        let same_series = std::fs::read_to_string(e.path().join("series"))
            .map(|x| x.trim() == s.name)
            .unwrap_or(false);
        if same_series && e.file_name() != keep {
            eprintln!(
                "    removing the older cached {}",
                e.file_name().to_string_lossy()
            );
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_sort_is_numeric() {
        let mut v = [
            "linux-image-5.10.0-9-cloud-amd64-unsigned",
            "linux-image-5.10.0-32-cloud-amd64-unsigned",
            "linux-image-5.10.0-30-cloud-amd64-unsigned",
        ];
        v.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(v[2], "linux-image-5.10.0-32-cloud-amd64-unsigned");
        let mut w = [
            "linux-image-6.12.117+deb12-cloud-amd64-unsigned",
            "linux-image-6.12.95+deb12-cloud-amd64-unsigned",
        ];
        w.sort_by(|a, b| version_cmp(a, b));
        assert_eq!(w[1], "linux-image-6.12.117+deb12-cloud-amd64-unsigned");
    }
}
