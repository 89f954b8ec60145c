//! The ways each boot runs podtrace, one after the other, each with every scenario and check:
//! the default chain as root; as deployed (the DaemonSet's capabilities only, no_new_privs,
//! a 64 KiB RLIMIT_MEMLOCK); and every forced attach type x transport. The kernel path each
//! run must report is the one it forced (the default chain: the first, tp-btf + ring-buffer,
//! which every kernel of the matrix takes).
use anyhow::{bail, Result};

use crate::daemon::{Launch, CONTAINER_MEMLOCK};

pub struct Config {
    pub name: &'static str,
    pub args: &'static [&'static str],
    /// With the manifest's capabilities and a container's memlock limit.
    pub deployed: bool,
    /// What podtrace must say it attached with (`attached 4 programs (<path>; ...`).
    pub path: &'static str,
}

pub const ALL: &[Config] = &[
    Config {
        name: "root",
        args: &[],
        deployed: false,
        path: "tp-btf + ring-buffer",
    },
    Config {
        name: "deployed",
        args: &[],
        deployed: true,
        path: "tp-btf + ring-buffer",
    },
    Config {
        name: "tp-btf+perf",
        args: &["--transport", "perf-buffer"],
        deployed: false,
        path: "tp-btf + perf-buffer",
    },
    Config {
        name: "raw-tp+ring",
        args: &["--attach", "raw-tp"],
        deployed: false,
        path: "raw-tp + ring-buffer",
    },
    Config {
        name: "raw-tp+perf",
        args: &["--attach", "raw-tp", "--transport", "perf-buffer"],
        deployed: false,
        path: "raw-tp + perf-buffer",
    },
];

/// Capability numbers by the names manifests use (`BPF`, `SYS_PTRACE`, ...).
pub fn cap_number(name: &str) -> Option<u32> {
    let n = name.trim().trim_start_matches("CAP_");
    Some(match n {
        "CHOWN" => 0,
        "DAC_OVERRIDE" => 1,
        "DAC_READ_SEARCH" => 2,
        "FOWNER" => 3,
        "KILL" => 5,
        "SETGID" => 6,
        "SETUID" => 7,
        "NET_ADMIN" => 12,
        "IPC_LOCK" => 14,
        "SYS_CHROOT" => 18,
        "SYS_PTRACE" => 19,
        "SYS_ADMIN" => 21,
        "SYS_RESOURCE" => 24,
        "PERFMON" => 38,
        "BPF" => 39,
        "CHECKPOINT_RESTORE" => 40,
        _ => return None,
    })
}

/// The manifest's capabilities from the kernel command line (`klab_caps=BPF,PERFMON,...`,
/// read by xtask from deploy/kubernetes/daemonset.yaml).
pub fn manifest_caps(cmdline: &str) -> Result<Vec<(String, u32)>> {
    let Some(list) = cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("klab_caps="))
    else {
        bail!(
            "no klab_caps= on the kernel command line (xtask passes the DaemonSet's capabilities)"
        );
    };
    let mut caps = Vec::new();
    for name in list.split(',').filter(|n| !n.is_empty()) {
        match cap_number(name) {
            Some(n) => caps.push((name.to_string(), n)),
            None => bail!("klab_caps: unknown capability {name}"),
        }
    }
    if caps.is_empty() {
        bail!("klab_caps= is empty");
    }
    Ok(caps)
}

impl Config {
    pub fn launch(&self, manifest: &Result<Vec<(String, u32)>, String>) -> Result<Launch> {
        let mut l = Launch {
            args: self.args.iter().map(|a| a.to_string()).collect(),
            ..Launch::default()
        };
        if self.deployed {
            match manifest {
                Ok(caps) => l.caps = Some(caps.iter().map(|(_, n)| *n).collect()),
                Err(e) => bail!("{e}"),
            }
            l.memlock = Some(CONTAINER_MEMLOCK);
        }
        Ok(l)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_from_the_command_line() {
        let caps = manifest_caps("console=ttyS0 klab_caps=BPF,PERFMON,SYS_PTRACE,SYS_RESOURCE q")
            .expect("four");
        assert_eq!(
            caps.iter().map(|(_, n)| *n).collect::<Vec<_>>(),
            [39, 38, 19, 24]
        );
        assert!(manifest_caps("console=ttyS0").is_err());
        assert!(manifest_caps("klab_caps=BPF,NOPE").is_err());
        assert!(manifest_caps("klab_caps=").is_err());
    }

    #[test]
    fn every_path_once_and_the_deployed_run() {
        let paths: std::collections::BTreeSet<_> = ALL.iter().map(|c| c.path).collect();
        assert_eq!(paths.len(), 4, "tp-btf/raw-tp x ring/perf");
        assert_eq!(ALL.iter().filter(|c| c.deployed).count(), 1);
        let manifest = Ok(vec![("BPF".to_string(), 39)]);
        let l = ALL[1].launch(&manifest).expect("deployed launch");
        assert_eq!(l.caps, Some(vec![39]));
        assert_eq!(l.memlock, Some(64 << 10));
        assert!(ALL[1].launch(&Err("none".into())).is_err());
    }
}
