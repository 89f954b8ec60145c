//! Validates deploy/kubernetes and deploy/openshift against the Kubernetes API schemas with
//! kubernetes-validate (PyPI), strictly: unknown fields, wrong types and unknown kinds fail.
//!
//! Each kustomization is rendered with `kubectl kustomize` first, so what is checked is what
//! `kubectl apply -k` would send (patches included). Before that, broken copies of the
//! DaemonSet must be rejected: a validator that accepts everything fails the check.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util;

use super::tools;

/// Kubernetes versions the manifests must be valid for: 1.27 (OpenShift 4.14, the oldest
/// supported here) and the newest the validator bundles.
const VERSIONS: &[&str] = &["1.27.0", "1.37.0"];

/// Kinds outside the Kubernetes API, for which no bundled schema exists: reported, not failed.
const KINDS_WITHOUT_SCHEMA: &[&str] = &["SecurityContextConstraints"];

/// The kustomization directories, relative to the workspace root.
const KUSTOMIZATIONS: &[&str] = &["deploy/kubernetes", "deploy/openshift"];

/// Broken variants of the DaemonSet that must be rejected: (what, text to find, replacement).
const BROKEN: &[(&str, &str, &str)] = &[
    ("a misspelt field", "hostPID: true", "hostPid: true"),
    (
        "a string where a boolean belongs",
        "readOnlyRootFilesystem: true",
        "readOnlyRootFilesystem: \"yes\"",
    ),
    ("a misspelt kind", "kind: DaemonSet", "kind: DaemonSett"),
];

pub fn validate() -> Result<()> {
    util::step("validate deploy/ manifests (kubernetes-validate --strict)")?;
    let kv = tools::ensure_kubernetes_validate()?;
    let root = util::workspace_root();
    let work = root.join("target/tools/manifests");
    if work.exists() {
        std::fs::remove_dir_all(&work).with_context(|| format!("clearing {}", work.display()))?;
    }
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    negative_controls(&kv, &root, &work)?;
    for file in documents(&root, &work)? {
        check(&kv, &file)?;
    }
    Ok(())
}

/// What to validate: each kustomization rendered, or (without kubectl) the base's files.
fn documents(root: &Path, work: &Path) -> Result<Vec<PathBuf>> {
    if util::output("sh", &["-c", "command -v kubectl"]).is_none() {
        eprintln!(
            "    note: kubectl not found: validating deploy/kubernetes/*.yaml one by one; \
             overlays and patches are not rendered"
        );
        let dir = root.join("deploy/kubernetes");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "yaml")
                    && p.file_name().is_some_and(|n| n != "kustomization.yaml")
            })
            .collect();
        files.sort();
        return Ok(files);
    }
    let mut out = Vec::new();
    for dir in KUSTOMIZATIONS {
        let rendered = Command::new("kubectl")
            .arg("kustomize")
            .arg(root.join(dir))
            .output()
            .context("cannot start kubectl")?;
        if !rendered.status.success() {
            bail!(
                "`kubectl kustomize {dir}` failed ({}): {}",
                rendered.status,
                String::from_utf8_lossy(&rendered.stderr).trim()
            );
        }
        let file = work.join(format!("{}.yaml", dir.replace('/', "_")));
        std::fs::write(&file, &rendered.stdout)
            .with_context(|| format!("writing {}", file.display()))?;
        eprintln!("    rendered {dir} -> {}", file.display());
        out.push(file);
    }
    Ok(out)
}

/// `kubernetes-validate --strict` against every version; a kind without a schema fails unless
/// it is one of [`KINDS_WITHOUT_SCHEMA`].
fn check(kv: &Path, file: &Path) -> Result<()> {
    for version in VERSIONS {
        let out = Command::new(kv)
            .args(["--strict", "--kubernetes-version", version])
            .arg(file)
            .output()
            .with_context(|| format!("cannot start {}", kv.display()))?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if !out.status.success() {
            bail!(
                "{} is not valid for Kubernetes {version} ({}):\n{}",
                file.display(),
                out.status,
                text.trim()
            );
        }
        for line in text.lines().filter(|l| l.contains("Couldn't find schema")) {
            let allowed = KINDS_WITHOUT_SCHEMA
                .iter()
                .any(|k| line.contains(&format!("for kind {k} ")));
            if !allowed {
                bail!(
                    "{}: no Kubernetes {version} schema for a kind (misspelt kind or apiVersion?): {line}",
                    file.display()
                );
            }
            eprintln!("    not schema-checked (no schema available): {line}");
        }
        let passed = text.lines().filter(|l| l.contains(" passed ")).count();
        if passed == 0 {
            bail!(
                "{}: kubernetes-validate checked no resource against {version}:\n{}",
                file.display(),
                text.trim()
            );
        }
        eprintln!(
            "    ok: {} ({passed} resources, Kubernetes {version})",
            file.display()
        );
    }
    Ok(())
}

/// Each broken DaemonSet must fail [`check`]; otherwise the validation proves nothing.
fn negative_controls(kv: &Path, root: &Path, work: &Path) -> Result<()> {
    let source = root.join("deploy/kubernetes/daemonset.yaml");
    let text = std::fs::read_to_string(&source)
        .with_context(|| format!("reading {}", source.display()))?;
    for (i, (what, find, replace)) in BROKEN.iter().enumerate() {
        if !text.contains(find) {
            bail!(
                "negative control {what}: {} no longer contains `{find}`: update BROKEN in {}",
                source.display(),
                file!()
            );
        }
        let broken = work.join(format!("broken-{i}.yaml"));
        std::fs::write(&broken, text.replacen(find, replace, 1))
            .with_context(|| format!("writing {}", broken.display()))?;
        match check(kv, &broken) {
            Ok(()) => bail!(
                "kubernetes-validate accepted a DaemonSet with {what} (`{replace}`): the manifest check proves nothing"
            ),
            Err(e) => {
                let first = format!("{e:#}");
                let first = first.lines().last().unwrap_or_default().trim().to_string();
                eprintln!("    ok: rejected {what}: {first}");
            }
        }
    }
    Ok(())
}
