//! Test fixtures shared by the attribution tests: the seed node listing, the lab captures and a
//! small deterministic generator for fuzz-style tests.

use serde::Deserialize;

/// `ps -ef`, `crictl ps` and `oc get pods` from a real OpenShift 4.12 worker.
pub const SEED_NODE: &str = include_str!("../../tests/fixtures/seed-node.txt");
/// conmon / shim / runc argv and cgroups captured from real podman and containerd on the lab machine.
pub const LAB_RUNTIMES: &str = include_str!("../../tests/fixtures/lab-runtimes.jsonl");
/// Real runc containers whose cgroupsPath had the systemd form, captured on the lab machine.
pub const LAB_LAYOUTS: &str = include_str!("../../tests/fixtures/lab-layouts.jsonl");

/// The lines of a `# Section: <title...>` block of [`SEED_NODE`], without the header line and
/// without blank lines.
pub fn seed_section(title_prefix: &str) -> Vec<&'static str> {
    let mut lines = SEED_NODE.lines();
    let header = format!("# Section: {title_prefix}");
    lines
        .by_ref()
        .find(|l| l.starts_with(&header))
        .unwrap_or_else(|| panic!("seed-node.txt has no section starting {header:?}"));
    lines
        .take_while(|l| !l.starts_with("# Section:"))
        .filter(|l| !l.trim().is_empty())
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct LabTruth {
    pub container_id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub cgroup_parent: Option<String>,
    #[serde(default)]
    pub exec: Option<bool>,
}

#[derive(Debug, Deserialize)]
pub struct LabRecord {
    pub file: String,
    pub role: String,
    #[serde(default)]
    pub pid: Option<u32>,
    pub exe: String,
    #[serde(default)]
    pub comm: Option<String>,
    pub argv: Vec<String>,
    #[serde(default)]
    pub cgroup: Vec<String>,
    pub truth: LabTruth,
}

pub fn lab_records() -> Vec<LabRecord> {
    LAB_RUNTIMES
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("lab-runtimes.jsonl line {l:.80}...: {e}"))
        })
        .collect()
}

#[derive(Debug, Deserialize)]
pub struct LayoutTruth {
    pub container_id: String,
    pub pod_uid: String,
    pub qos: String,
}

/// One container of [`LAB_LAYOUTS`]: the cgroupsPath runc was given and /proc/PID/cgroup.
#[derive(Debug, Deserialize)]
pub struct LayoutRecord {
    pub file: String,
    pub pid: u32,
    pub cgroup: Vec<String>,
    pub cgroups_path: String,
    pub truth: LayoutTruth,
}

pub fn layout_records() -> Vec<LayoutRecord> {
    LAB_LAYOUTS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("lab-layouts.jsonl line {l:.80}...: {e}"))
        })
        .collect()
}

/// xorshift64*: deterministic, dependency-free randomness for fuzz-style tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}
