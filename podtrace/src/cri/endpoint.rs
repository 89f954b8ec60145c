//! Where the CRI listens: an explicit endpoint (`unix:///path` or a bare path, the crictl
//! convention) or the well-known sockets, and a lazy gRPC channel over that unix socket.
use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};

use super::CriError;

/// The sockets tried, in this order, when no endpoint is given: containerd, cri-o, cri-dockerd,
/// k3s's embedded containerd (crictl's list, plus k3s).
pub const DEFAULT_ENDPOINTS: [&str; 4] = [
    "/run/containerd/containerd.sock",
    "/run/crio/crio.sock",
    "/var/run/cri-dockerd.sock",
    "/run/k3s/containerd/containerd.sock",
];

/// The socket path of an endpoint given as `unix:///path`, `unix://path` or a bare path.
/// Other schemes (`tcp://`, `npipe://`, `http://`) are refused: the CRI of a node is a unix
/// socket.
pub fn parse(endpoint: &str) -> Result<PathBuf, CriError> {
    let e = endpoint.trim();
    if e.is_empty() {
        return Err(CriError::BadEndpoint {
            endpoint: endpoint.to_string(),
            why: "empty",
        });
    }
    if let Some(rest) = e.strip_prefix("unix://") {
        if rest.is_empty() {
            return Err(CriError::BadEndpoint {
                endpoint: endpoint.to_string(),
                why: "no path after unix://",
            });
        }
        return Ok(PathBuf::from(rest));
    }
    if e.contains("://") {
        return Err(CriError::BadEndpoint {
            endpoint: endpoint.to_string(),
            why: "only unix:// sockets are supported",
        });
    }
    Ok(PathBuf::from(e))
}

/// A gRPC channel to the unix socket at `path`. It is lazy: it connects on the first call and
/// reconnects (to the same path, so a restarted runtime's new socket) after the connection broke.
/// Must be called inside a tokio runtime.
pub fn channel(path: &Path, connect_timeout: Duration) -> Channel {
    let path = path.to_path_buf();
    // The authority is not used on a unix socket, but the URI must parse.
    Endpoint::from_static("http://cri.invalid")
        .connect_timeout(connect_timeout)
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_crictl_forms() {
        let p = |s: &str| parse(s).expect(s);
        assert_eq!(
            p("unix:///run/containerd/containerd.sock"),
            PathBuf::from("/run/containerd/containerd.sock")
        );
        assert_eq!(
            p("/run/crio/crio.sock"),
            PathBuf::from("/run/crio/crio.sock")
        );
        assert_eq!(p(" unix:///x.sock "), PathBuf::from("/x.sock"));
        for bad in ["", "unix://", "tcp://127.0.0.1:1234", "npipe:////./pipe/x"] {
            assert!(
                matches!(parse(bad), Err(CriError::BadEndpoint { .. })),
                "{bad:?} should be refused"
            );
        }
    }
}
