//! What deploy/kubernetes/daemonset.yaml grants the podtrace container, read from the file, so
//! that the kernel matrix runs podtrace with exactly those capabilities.
use anyhow::{bail, Context, Result};
use yaml_rust2::{Yaml, YamlLoader};

use crate::util;

pub const DAEMONSET: &str = "deploy/kubernetes/daemonset.yaml";

/// `capabilities.add` of the container named `podtrace`, as written (`BPF`, `PERFMON`, ...).
pub fn capabilities() -> Result<Vec<String>> {
    let path = util::workspace_root().join(DAEMONSET);
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    capabilities_of(&text).with_context(|| format!("in {}", path.display()))
}

fn capabilities_of(text: &str) -> Result<Vec<String>> {
    let docs = YamlLoader::load_from_str(text).context("not YAML")?;
    for doc in &docs {
        if doc["kind"].as_str() != Some("DaemonSet") {
            continue;
        }
        let containers = doc["spec"]["template"]["spec"]["containers"]
            .as_vec()
            .context("no spec.template.spec.containers")?;
        let Some(c) = containers
            .iter()
            .find(|c| c["name"].as_str() == Some("podtrace"))
        else {
            bail!("no container named podtrace");
        };
        let add = match &c["securityContext"]["capabilities"]["add"] {
            Yaml::Array(a) => a,
            _ => bail!("the podtrace container has no securityContext.capabilities.add list"),
        };
        return add
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_string)
                    .context("a capability that is not a string")
            })
            .collect();
    }
    bail!("no DaemonSet")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_podtrace_container_s_added_capabilities() {
        let caps = capabilities().expect("the DaemonSet's capabilities");
        assert!(caps.iter().any(|c| c == "BPF"), "{caps:?}");
        let text = "kind: DaemonSet\nspec:\n  template:\n    spec:\n      containers:\n        - name: other\n          securityContext: {capabilities: {add: [SYS_ADMIN]}}\n        - name: podtrace\n          securityContext:\n            capabilities:\n              drop: [ALL]\n              add: [BPF, PERFMON]\n";
        assert_eq!(capabilities_of(text).expect("two"), ["BPF", "PERFMON"]);
        assert!(capabilities_of("kind: Service\n").is_err());
        assert!(capabilities_of("kind: DaemonSet\nspec: {}\n").is_err());
    }
}
