//! podtrace: process lifecycle of Kubernetes / OpenShift nodes, from the kernel.
//!
//! Kernel programs (podtrace-ebpf) send exec/fork/exit records through a ring buffer; the
//! `engine` attributes them to containers and pods and keeps the process trees; `live` runs
//! it on the node, `replay` runs it on a recorded `trace`.
pub mod attribution;
pub mod btf_offsets;
pub mod cli;
pub mod clock;
pub mod cri;
pub mod engine;
pub mod export;
pub mod facts;
pub mod filter;
pub mod kernel_event;
pub mod live;
pub mod loader;
pub mod metrics;
pub mod ndjson;
pub mod now;
pub mod output;
pub mod redact;
pub mod replay;
pub mod snapshot;
pub mod trace;
pub mod wait_status;
