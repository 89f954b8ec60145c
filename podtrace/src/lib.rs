//! podtrace: process lifecycle of Kubernetes / OpenShift nodes, from the kernel.
pub mod attribution;
