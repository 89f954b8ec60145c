//! Debian's `cloud-amd64` and `cloud-arm64` kernels from deb.debian.org, with the private apt
//! state of `crate::debs` under `target/kernels/apt` (the machine's own sources, lists and caches
//! are never touched).
//!
//! The newest package of each series is picked from the private lists with `apt-cache search`
//! and a version sort (no pinned names). The lists are refreshed when older than a day (or with
//! `--refresh`); a kernel is downloaded once (`apt-get download`), and only its `boot/vmlinuz-*`
//! and `boot/config-*` are kept, in `target/kernels/cache/<deb name>/`. A second run within the
//! day uses the network not at all.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, ensure, Context, Result};

use crate::arch::Arch;
use crate::debs::{self, Apt};
use crate::util;

/// One kernel series: the suites that carry it and the package names that belong to it.
#[derive(Debug)]
pub struct Series {
    pub name: &'static str,
    /// The kernel's (and the guest's) architecture.
    pub arch: Arch,
    pub suites: &'static str,
    /// An `apt-cache search --names-only` regular expression.
    pub pattern: &'static str,
}

impl Series {
    /// How tables and logs name it: `6.1` (amd64), `6.1 arm64`.
    pub fn label(&self) -> String {
        match self.arch {
            Arch::Amd64 => self.name.to_string(),
            arch => format!("{} {arch}", self.name),
        }
    }

    /// `6.1`, `6.1-arm64`: file names (serial logs, the cache's `series` mark).
    pub fn slug(&self) -> String {
        self.label().replace(' ', "-")
    }
}

/// bullseye-security is left out: its index names newer 5.10 packages than bullseye, but the
/// archive answers 404 for them (checked 2026-12-01), so the newest would never download.
/// arm64: bookworm's `cloud-arm64` flavour, 6.1 and (backports) 6.12; an uncompressed `Image`
/// that qemu-system-aarch64 boots as it is.
pub const SERIES: &[Series] = &[
    Series {
        name: "5.10",
        arch: Arch::Amd64,
        suites: "bullseye",
        pattern: r"^linux-image-5\.10\.0-[0-9]+-cloud-amd64-unsigned$",
    },
    Series {
        name: "6.1",
        arch: Arch::Amd64,
        suites: "bookworm, bookworm-security",
        pattern: r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64-unsigned$",
    },
    Series {
        name: "6.12",
        arch: Arch::Amd64,
        suites: "bookworm-backports, bookworm-security",
        pattern: r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-amd64-unsigned$",
    },
    Series {
        name: "6.1",
        arch: Arch::Arm64,
        suites: "bookworm, bookworm-security",
        pattern: r"^linux-image-6\.1\.0-[0-9]+-cloud-arm64-unsigned$",
    },
    Series {
        name: "6.12",
        arch: Arch::Arm64,
        suites: "bookworm-backports, bookworm-security",
        pattern: r"^linux-image-6\.12\.[0-9]+\+deb12-cloud-arm64-unsigned$",
    },
];

/// The series of `archs` (all when empty) named in `names` (all when empty), in SERIES order.
pub fn select(names: &[String], archs: &[Arch]) -> Result<Vec<&'static Series>> {
    let of_arch: Vec<&'static Series> = SERIES
        .iter()
        .filter(|s| archs.is_empty() || archs.contains(&s.arch))
        .collect();
    for n in names {
        ensure!(
            of_arch.iter().any(|s| s.name == n),
            "--series {n}: want one of {:?}",
            of_arch.iter().map(|s| s.label()).collect::<Vec<_>>()
        );
    }
    Ok(of_arch
        .into_iter()
        .filter(|s| names.is_empty() || names.iter().any(|n| n == s.name))
        .collect())
}

/// The newest of the package names (numeric version sort).
fn newest_of(mut names: Vec<String>) -> Option<String> {
    names.sort_by(|a, b| version_cmp(a, b));
    names.pop()
}

/// A kernel ready to boot.
#[derive(Clone, Debug)]
pub struct Kernel {
    /// The series' slug (`6.1`, `6.1-arm64`).
    pub series: String,
    pub arch: Arch,
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
    let apt = Apt::private();
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
                s.label()
            );
            refreshed = true;
            r = apt.ensure_lists(true).and_then(|_| kernel(&apt, s));
        }
        match &r {
            Ok(k) => eprintln!(
                "    {}: {} {} ({})",
                s.label(),
                k.package,
                k.version,
                if k.downloaded { "downloaded" } else { "cached" }
            ),
            Err(e) => eprintln!("    {}: FAILED: {e:#}", s.label()),
        }
        out.push((*s, r));
    }
    out
}

fn kernel(apt: &Apt, s: &'static Series) -> Result<Kernel> {
    let package = newest_of(apt.search(s.pattern)?).with_context(|| {
        format!(
            "no package matches {} in {} (deb.debian.org)",
            s.pattern, s.suites
        )
    })?;
    let deb = apt.deb_name(&debs::qualified(&package, s.arch))?;
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
        series: s.slug(),
        arch: s.arch,
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
    let deb_path = apt.download(&debs::qualified(package, s.arch), &work)?;
    ensure!(
        deb_path.file_name().is_some_and(|f| f == deb),
        "apt-get download left {}, not {deb}",
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
    std::fs::write(staging.join("series"), format!("{}\n", s.slug()))?;
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
            .map(|x| x.trim() == s.slug())
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

    fn picked(names: &[&str], archs: &[Arch]) -> Vec<String> {
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        select(&names, archs)
            .expect("a valid selection")
            .iter()
            .map(|s| s.label())
            .collect()
    }

    #[test]
    fn series_by_name_and_arch() {
        assert_eq!(
            picked(&[], &[]),
            ["5.10", "6.1", "6.12", "6.1 arm64", "6.12 arm64"]
        );
        assert_eq!(picked(&[], &[Arch::Arm64]), ["6.1 arm64", "6.12 arm64"]);
        assert_eq!(picked(&["6.1"], &[]), ["6.1", "6.1 arm64"]);
        assert_eq!(picked(&["6.12"], &[Arch::Arm64]), ["6.12 arm64"]);
        assert_eq!(picked(&["5.10"], &[Arch::Amd64]), ["5.10"]);
        let e = select(&["5.10".to_string()], &[Arch::Arm64]).expect_err("no arm64 5.10");
        assert!(e.to_string().contains("6.1 arm64"), "{e}");
        // Slugs name log files and the cache's series mark: unique per series.
        let slugs: std::collections::BTreeSet<String> = SERIES.iter().map(|s| s.slug()).collect();
        assert_eq!(slugs.len(), SERIES.len());
        assert!(slugs.contains("6.1-arm64") && slugs.contains("6.1"));
        // Each pattern names its own architecture's flavour.
        for s in SERIES {
            assert!(s.pattern.contains(&format!("-cloud-{}-unsigned", s.arch)));
        }
    }

    #[test]
    fn newest_is_numeric() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            newest_of(v(&[
                "linux-image-6.12.95+deb12-cloud-arm64-unsigned",
                "linux-image-6.12.118+deb12-cloud-arm64-unsigned",
                "linux-image-6.12.117+deb12-cloud-arm64-unsigned",
            ]))
            .as_deref(),
            Some("linux-image-6.12.118+deb12-cloud-arm64-unsigned")
        );
        assert_eq!(newest_of(Vec::new()), None);
    }

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
