//! The CPU architectures podtrace ships for: the names each tool spells them by.
//!
//! amd64 is the host here (and the tests' image); arm64 (Graviton, Ampere) is cross-built: a
//! static musl binary for the image and for the kernel matrix's aarch64 guests.
use anyhow::{bail, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Arch {
    Amd64,
    Arm64,
}

pub const ALL: &[Arch] = &[Arch::Amd64, Arch::Arm64];

impl Arch {
    /// Debian's and Kubernetes' (`kubernetes.io/arch`) and OCI's name: `amd64`, `arm64`.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Amd64 => "amd64",
            Arch::Arm64 => "arm64",
        }
    }

    /// `--arch amd64|arm64` (also `x86_64`, `aarch64`).
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "amd64" | "x86_64" => Ok(Arch::Amd64),
            "arm64" | "aarch64" => Ok(Arch::Arm64),
            other => bail!("unknown architecture {other:?}: want amd64 or arm64"),
        }
    }

    /// The architecture xtask itself was built for (the machine's).
    pub fn host() -> Self {
        if cfg!(target_arch = "aarch64") {
            Arch::Arm64
        } else {
            Arch::Amd64
        }
    }

    /// The Rust target of the static (musl) builds.
    pub fn musl_target(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-unknown-linux-musl",
            Arch::Arm64 => "aarch64-unknown-linux-musl",
        }
    }

    /// ELF `e_machine`: EM_X86_64, EM_AARCH64.
    pub fn elf_machine(self) -> u16 {
        match self {
            Arch::Amd64 => 62,
            Arch::Arm64 => 183,
        }
    }

    /// The GNU triplet of Debian's cross tools (`aarch64-linux-gnu-gcc`, `-strip`, `-ar`).
    pub fn gnu_triplet(self) -> &'static str {
        match self {
            Arch::Amd64 => "x86_64-linux-gnu",
            Arch::Arm64 => "aarch64-linux-gnu",
        }
    }
}

impl std::fmt::Display for Arch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_aliases_parse() {
        for a in ALL {
            assert_eq!(Arch::parse(a.name()).ok(), Some(*a));
        }
        assert_eq!(Arch::parse("aarch64").ok(), Some(Arch::Arm64));
        assert_eq!(Arch::parse("x86_64").ok(), Some(Arch::Amd64));
        assert!(Arch::parse("s390x").is_err());
        assert_eq!(Arch::Arm64.musl_target(), "aarch64-unknown-linux-musl");
        assert_eq!(
            Arch::host().musl_target().split('-').next(),
            Some(std::env::consts::ARCH)
        );
    }
}
