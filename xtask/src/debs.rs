//! Debian packages from deb.debian.org that must not be installed on the machine: the kernel
//! matrix's kernels, and the arm64 userland pieces of the cross build and the aarch64 guests
//! (`musl-dev:arm64`, `busybox-static:arm64`).
//!
//! A private apt state under `target/kernels/apt` (`-o Dir::Etc::SourceList=... -o
//! Dir::State::Lists=... -o Dir::Cache=...`, `Targets: Packages`, amd64 and arm64): the machine's
//! own sources, lists, caches and dpkg architectures are never used or changed. The lists are
//! refreshed when older than a day (or on request).
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use anyhow::{bail, ensure, Context, Result};

use crate::arch::Arch;
use crate::setup::CannotInstall;
use crate::util;

const SOURCES: &str =
    "# written by `cargo xtask` (podtrace): kernels for the QEMU matrix, arm64 cross-build pieces
Types: deb
URIs: http://deb.debian.org/debian
Suites: bullseye bookworm bookworm-backports
Components: main
Architectures: amd64 arm64
Targets: Packages
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Architectures: amd64 arm64
Targets: Packages
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";

const LIST_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

pub struct Apt {
    root: PathBuf,
}

impl Apt {
    /// The one private apt state of the project (`target/kernels/apt`).
    pub fn private() -> Self {
        Self {
            root: util::workspace_root().join("target/kernels/apt"),
        }
    }

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
        // Both architectures' packages are visible to apt-cache search, whatever the host's
        // dpkg architectures are (this changes nothing outside this apt state).
        for kv in [
            "Acquire::Languages=none",
            "APT::Sandbox::User=root",
            "APT::Architectures::=amd64",
            "APT::Architectures::=arm64",
        ] {
            v.push("-o".to_string());
            v.push(kv.to_string());
        }
        v
    }

    pub fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new(program);
        c.args(self.opts());
        c
    }

    /// Writes the sources list; refreshes the lists unless they are younger than a day and were
    /// made from the same sources. Returns what it did and whether it refreshed.
    pub fn ensure_lists(&self, refresh: bool) -> Result<(String, bool)> {
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
            .context("apt-get update of the private list (deb.debian.org)")?;
        std::fs::write(self.stamp(), SOURCES)
            .with_context(|| format!("writing {}", self.stamp().display()))?;
        Ok(("apt lists refreshed".to_string(), true))
    }

    /// Package names matching an `apt-cache search --names-only` regular expression.
    pub fn search(&self, pattern: &str) -> Result<Vec<String>> {
        let out = self
            .cmd("apt-cache")
            .args(["search", "--names-only", pattern])
            .output()
            .context("cannot run apt-cache")?;
        ensure!(
            out.status.success(),
            "apt-cache search failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(" - ").next())
            .map(|n| n.trim().to_string())
            .filter(|n| !n.is_empty())
            .collect())
    }

    /// The `.deb` file name apt would download for `package` (`name_version_arch.deb`); the
    /// package may name its architecture (`musl-dev:arm64`).
    pub fn deb_name(&self, package: &str) -> Result<String> {
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

    /// `apt-get download package` into `dir`; returns the `.deb`'s path.
    pub fn download(&self, package: &str, dir: &Path) -> Result<PathBuf> {
        let deb = self.deb_name(package)?;
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        eprintln!("    apt-get download {package}");
        let out = self
            .cmd("apt-get")
            .args(["-q", "download", package])
            .current_dir(dir)
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
        let path = dir.join(&deb);
        ensure!(
            path.is_file(),
            "apt-get download did not leave {}",
            path.display()
        );
        Ok(path)
    }
}

/// `name:arch`, how apt names a package of another architecture than the host's.
pub fn qualified(name: &str, arch: Arch) -> String {
    format!("{name}:{}", arch.name())
}

/// `package` (e.g. `musl-dev:arm64`) unpacked with `dpkg-deb -x` into `dest` (never installed).
/// Done once: `dest/.deb` names the package file, and while it exists nothing is fetched.
pub fn unpacked(package: &str, dest: &Path) -> Result<PathBuf> {
    let stamp = dest.join(".deb");
    if let Ok(deb) = std::fs::read_to_string(&stamp) {
        eprintln!("    ok: {package} ({} in {})", deb.trim(), dest.display());
        return Ok(dest.to_path_buf());
    }
    let have = |c: &str| util::output("sh", &["-c", &format!("command -v {c}")]).is_some();
    if !have("apt-get") || !have("dpkg-deb") {
        // Not Debian: say how to get the same files by hand.
        return Err(CannotInstall(format!(
            "# on a Debian machine (any architecture), then copy the directory here:\n\
             apt-get download {package} && dpkg-deb -x {}*.deb {}\n\
             echo {package} > {}",
            package.split(':').next().unwrap_or(package),
            dest.display(),
            stamp.display()
        ))
        .into());
    }
    let apt = Apt::private();
    let (what, _) = apt.ensure_lists(false)?;
    eprintln!("    {what}");
    let work = dest.with_extension("download");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let deb = apt
        .download(package, &work)
        .with_context(|| format!("fetching {package} from deb.debian.org"))?;
    let staging = dest.with_extension("partial");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("removing {}", staging.display()))?;
    }
    util::run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&staging))
        .with_context(|| format!("unpacking {}", deb.display()))?;
    let name = deb
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::fs::write(staging.join(".deb"), format!("{name}\n"))?;
    if dest.exists() {
        std::fs::remove_dir_all(dest).with_context(|| format!("removing {}", dest.display()))?;
    }
    std::fs::rename(&staging, dest)
        .with_context(|| format!("moving {} to {}", staging.display(), dest.display()))?;
    std::fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    eprintln!("    unpacked {name} into {}", dest.display());
    Ok(dest.to_path_buf())
}
