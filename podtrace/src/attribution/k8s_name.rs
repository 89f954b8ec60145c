//! Kubernetes identity encoded in names the kubelet hands to the runtime.
//!
//! - CRI container name (cri-o passes it to conmon as `-n`, dockershim used it for docker):
//!   `k8s_<container>_<pod>_<namespace>_<pod uid>_<attempt>`; the pod infra container is
//!   `k8s_POD_<pod>_<namespace>_<pod uid>_<attempt>`.
//! - CRI log path (conmon `-l`): `/var/log/pods/<namespace>_<pod>_<pod uid>/<container>/<attempt>.log`.
//!
//! Pod, container and namespace names are DNS labels / subdomains (letters, digits, `-`, `.`),
//! never `_`, so splitting on `_` is unambiguous; anything else is rejected.

/// A container's Kubernetes identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct K8sName {
    /// Container name (`POD` for the pod infra / sandbox container).
    pub container: String,
    pub pod: String,
    pub namespace: String,
    /// Pod UID as the kubelet writes it (a UUID with dashes, or a static pod's hash).
    pub pod_uid: String,
    /// Restart count of this container in the pod, when the source carries it.
    pub attempt: Option<u32>,
}

/// Name of the container the kubelet creates to hold a pod's namespaces.
pub const POD_INFRA_CONTAINER: &str = "POD";

impl K8sName {
    /// Parses `k8s_<container>_<pod>_<namespace>_<uid>_<attempt>` (the attempt may be absent).
    pub fn from_cri_name(name: &str) -> Option<K8sName> {
        let rest = name.strip_prefix("k8s_")?;
        let parts: Vec<&str> = rest.split('_').collect();
        let (container, pod, namespace, uid, attempt) = match parts.as_slice() {
            [c, p, n, u] => (*c, *p, *n, *u, None),
            [c, p, n, u, a] => (*c, *p, *n, *u, Some(parse_attempt(a)?)),
            _ => return None,
        };
        K8sName::checked(container, pod, namespace, uid, attempt)
    }

    /// Parses a kubelet container log path `.../pods/<ns>_<pod>_<uid>/<container>/<N>.log`.
    pub fn from_log_path(path: &str) -> Option<K8sName> {
        let comps: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
        let [.., pods, pod_dir, container, file] = comps.as_slice() else {
            return None;
        };
        if *pods != "pods" {
            return None;
        }
        let attempt = parse_attempt(file.strip_suffix(".log")?)?;
        let mut it = pod_dir.split('_');
        let (Some(namespace), Some(pod), Some(uid), None) =
            (it.next(), it.next(), it.next(), it.next())
        else {
            return None;
        };
        K8sName::checked(container, pod, namespace, uid, Some(attempt))
    }

    fn checked(
        container: &str,
        pod: &str,
        namespace: &str,
        uid: &str,
        attempt: Option<u32>,
    ) -> Option<K8sName> {
        let ok =
            is_k8s_name(container) && is_k8s_name(pod) && is_k8s_name(namespace) && is_pod_uid(uid);
        ok.then(|| K8sName {
            container: container.to_owned(),
            pod: pod.to_owned(),
            namespace: namespace.to_owned(),
            pod_uid: uid.to_owned(),
            attempt,
        })
    }

    /// Whether this is the pod's infra (sandbox / pause) container.
    pub fn is_pod_infra(&self) -> bool {
        self.container == POD_INFRA_CONTAINER
    }
}

fn parse_attempt(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Object names: letters, digits, `-` and `.` (upper case only appears in the `POD` name).
fn is_k8s_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Pod UIDs: a UUID, or a static pod's 32-hex config hash: hex digits and `-`.
pub(crate) fn is_pod_uid(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const UID: &str = "0a15cd78-757d-4322-9f35-94f7c42860b4";

    #[test]
    fn cri_name_with_dashes_and_dots() {
        let n = K8sName::from_cri_name(&format!(
            "k8s_kube-rbac-proxy.v2_prometheus-k8s-1_openshift-monitoring_{UID}_3"
        ))
        .expect("a valid CRI name");
        assert_eq!(n.container, "kube-rbac-proxy.v2");
        assert_eq!(n.pod, "prometheus-k8s-1");
        assert_eq!(n.namespace, "openshift-monitoring");
        assert_eq!(n.pod_uid, UID);
        assert_eq!(n.attempt, Some(3));
        assert!(!n.is_pod_infra());
    }

    #[test]
    fn cri_name_of_the_pod_infra_container() {
        let n =
            K8sName::from_cri_name(&format!("k8s_POD_web-0_default_{UID}_1")).expect("infra name");
        assert!(n.is_pod_infra());
        assert_eq!(n.pod, "web-0");
        assert_eq!(n.attempt, Some(1));
    }

    #[test]
    fn cri_name_without_attempt() {
        let n = K8sName::from_cri_name(&format!("k8s_c_p_ns_{UID}")).expect("4 fields");
        assert_eq!(n.attempt, None);
    }

    #[test]
    fn malformed_cri_names_are_rejected() {
        for bad in [
            "",
            "k8s_",
            "k8s_a",
            "k8s_a_b",
            "k8s_a_b_c",
            "k8s_a_b_c_u_0_extra",
            "k8s__p_ns_0a1b_0",
            "k8s_c_p_ns_0a1b_x",
            "k8s_c_p_ns_0a1b_-1",
            "k8s_c_p_ns_0a1b_99999999999",
            "k8s_c/x_p_ns_0a1b_0",
            "K8S_c_p_ns_0a1b_0",
            "k8s_c_p_ns_0a:1b_0",
            "k8s_c_p_ns_0a1b_0\n",
            "k8s_c_p_ns_0a1b_\u{0}",
            "k8s_ç_p_ns_0a1b_0",
            "prometheus",
            "k8s_c_p_ns_xyz_0",
        ] {
            assert_eq!(K8sName::from_cri_name(bad), None, "{bad:?}");
        }
        // Control: the same shape with nothing wrong parses.
        assert!(K8sName::from_cri_name("k8s_c_p_ns_0a1b_0").is_some());
    }

    #[test]
    fn log_path_gives_name_and_attempt() {
        let n = K8sName::from_log_path(&format!(
            "/var/log/pods/openshift-monitoring_prometheus-k8s-1_{UID}/thanos-sidecar/2.log"
        ))
        .expect("a kubelet log path");
        assert_eq!(n.container, "thanos-sidecar");
        assert_eq!(n.pod, "prometheus-k8s-1");
        assert_eq!(n.namespace, "openshift-monitoring");
        assert_eq!(n.pod_uid, UID);
        assert_eq!(n.attempt, Some(2));
    }

    #[test]
    fn malformed_log_paths_are_rejected() {
        for bad in [
            "",
            "/",
            "0.log",
            "/var/log/pods/ns_pod_0a1b/c/x.log",
            "/var/log/pods/ns_pod_0a1b/c/0.txt",
            "/var/log/pods/ns_pod/c/0.log",
            "/var/log/pods/ns_pod_0a1b_x/c/0.log",
            "/var/log/other/ns_pod_0a1b/c/0.log",
            "/var/log/pods/ns_pod_0a1b/0.log",
            "/var/lib/containers/storage/overlay-containers/abc/userdata/ctr.log",
            "/var/log/pods/ns_pod_xyz/c/0.log",
        ] {
            assert_eq!(K8sName::from_log_path(bad), None, "{bad:?}");
        }
        assert!(K8sName::from_log_path("/var/log/pods/ns_pod_0a1b/c/0.log").is_some());
    }
}
