//! Validates the kustomizations under deploy/ (Kubernetes, Kubernetes before 1.30, OpenShift,
//! OpenShift 4.12) against the Kubernetes API schemas with kubernetes-validate (PyPI),
//! strictly: unknown fields, wrong types and unknown kinds fail. Each against the versions it
//! is for, and with what its rendering must (not) contain (the AppArmor field, the
//! capabilities of each variant).
//!
//! Each kustomization is rendered with `kubectl kustomize` first, so what is checked is what
//! `kubectl apply -k` would send (patches included). Before that, broken copies of the
//! DaemonSet must be rejected: a validator that accepts everything fails the check; and the
//! base must be refused by a Kubernetes before 1.30 (the reason for the pre-1.30 overlay).
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::util;

use super::tools;

/// Kinds outside the Kubernetes API, for which no bundled schema exists: reported, not failed.
const KINDS_WITHOUT_SCHEMA: &[&str] = &["SecurityContextConstraints"];

/// A kustomization directory (relative to the workspace root), the Kubernetes versions its
/// rendering must be valid for, and what the rendering must and must not contain.
struct Kustomization {
    dir: &'static str,
    versions: &'static [&'static str],
    must_contain: &'static [&'static str],
    must_not_contain: &'static [&'static str],
}

const APPARMOR_FIELD: &str = "appArmorProfile";
const APPARMOR_ANNOTATION: &str =
    "container.apparmor.security.beta.kubernetes.io/podtrace: unconfined";

/// The base needs 1.30 (securityContext.appArmorProfile); the pre-1.30 overlay drops that
/// field and keeps the annotation (1.27: OpenShift 4.14's Kubernetes); OpenShift builds on it
/// (RHCOS has no AppArmor); OpenShift 4.12 is Kubernetes 1.25.
const KUSTOMIZATIONS: &[Kustomization] = &[
    Kustomization {
        dir: "deploy/kubernetes",
        versions: &["1.30.0", "1.37.0"],
        must_contain: &[APPARMOR_FIELD, APPARMOR_ANNOTATION, "- SYS_RESOURCE"],
        must_not_contain: &[],
    },
    Kustomization {
        dir: "deploy/kubernetes-pre-1.30",
        versions: &["1.27.0", "1.29.0"],
        must_contain: &[APPARMOR_ANNOTATION, "- SYS_RESOURCE"],
        must_not_contain: &[APPARMOR_FIELD],
    },
    Kustomization {
        dir: "deploy/openshift",
        versions: &["1.27.0", "1.37.0"],
        must_contain: &["type: spc_t", "- PERFMON", "- SYS_RESOURCE"],
        must_not_contain: &[APPARMOR_FIELD, "SYS_ADMIN"],
    },
    Kustomization {
        dir: "deploy/openshift-4.12",
        versions: &["1.25.0"],
        must_contain: &["- SYS_ADMIN", "- SYS_RESOURCE", "type: spc_t"],
        must_not_contain: &[APPARMOR_FIELD, "- BPF", "- PERFMON"],
    },
];

/// The versions the base's files are checked against when kubectl is missing.
const BASE_VERSIONS: &[&str] = &["1.30.0", "1.37.0"];

/// A version the base must be refused by: it has no securityContext.appArmorProfile (the
/// reason deploy/kubernetes-pre-1.30 exists).
const BEFORE_APPARMOR_FIELD: &str = "1.29.0";

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
    if util::output("sh", &["-c", "command -v kubectl"]).is_none() {
        eprintln!(
            "    note: kubectl not found: validating deploy/kubernetes/*.yaml one by one; \
             overlays and patches are not rendered"
        );
        for file in base_files(&root)? {
            check(&kv, &file, BASE_VERSIONS)?;
        }
        return Ok(());
    }
    for k in KUSTOMIZATIONS {
        let file = render(&root, &work, k.dir)?;
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for needle in k.must_contain {
            if !text.contains(needle) {
                bail!("{}: the rendering lacks `{needle}`", k.dir);
            }
        }
        for needle in k.must_not_contain {
            if text.contains(needle) {
                bail!("{}: the rendering must not contain `{needle}`", k.dir);
            }
        }
        check(&kv, &file, k.versions)?;
        if k.dir == "deploy/kubernetes" {
            // The base carries securityContext.appArmorProfile, which Kubernetes before 1.30
            // refuses: that is why deploy/kubernetes-pre-1.30 exists.
            match check(&kv, &file, &[BEFORE_APPARMOR_FIELD]) {
                Ok(()) => bail!(
                    "{}: Kubernetes {BEFORE_APPARMOR_FIELD} accepted the base, which has \
                     securityContext.appArmorProfile: the validator does not check fields",
                    k.dir
                ),
                Err(e) if format!("{e:#}").contains(APPARMOR_FIELD) => eprintln!(
                    "    ok: Kubernetes {BEFORE_APPARMOR_FIELD} refuses the base \
                     (appArmorProfile): older clusters use deploy/kubernetes-pre-1.30"
                ),
                Err(e) => bail!(
                    "{}: Kubernetes {BEFORE_APPARMOR_FIELD} refuses the base for another \
                     reason than appArmorProfile: {e:#}",
                    k.dir
                ),
            }
        }
    }
    Ok(())
}

/// The base's files one by one (without kubectl).
fn base_files(root: &Path) -> Result<Vec<PathBuf>> {
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
    Ok(files)
}

/// `kubectl kustomize DIR` into `work`.
fn render(root: &Path, work: &Path, dir: &str) -> Result<PathBuf> {
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
    let file = work.join(format!("{}.yaml", dir.replace(['/', '.'], "_")));
    std::fs::write(&file, &rendered.stdout)
        .with_context(|| format!("writing {}", file.display()))?;
    eprintln!("    rendered {dir} -> {}", file.display());
    Ok(file)
}

/// `kubernetes-validate --strict` against each of `versions`; a kind without a schema fails
/// unless it is one of [`KINDS_WITHOUT_SCHEMA`].
fn check(kv: &Path, file: &Path, versions: &[&str]) -> Result<()> {
    for version in versions {
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
        match check(kv, &broken, BASE_VERSIONS) {
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
