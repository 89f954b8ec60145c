//! podtrace: process lifecycle of Kubernetes / OpenShift nodes, from the kernel.
//!
//! Kernel programs (podtrace-ebpf) send exec/fork/exit/reap records through a ring buffer;
//! a source (`live`: the ring buffer with the facts resolved for it; `replay`: a trace)
//! pushes them as [`trace::Record`]s through one [`pipeline`]: the recorder, the pure
//! [`engine`] that attributes processes to containers and pods and keeps the process
//! trees, and the sinks.
pub mod attribution;
pub mod btf_offsets;
pub mod cgroups;
pub mod check;
pub mod cli;
pub mod clock;
pub mod cri;
pub mod engine;
pub mod error;
pub mod exit_probe;
pub mod export;
pub mod filter;
pub mod health;
pub mod kernel_event;
pub mod live;
pub mod loader;
pub mod metrics;
pub mod ndjson;
pub mod now;
pub mod outfile;
pub mod output;
pub mod pipeline;
pub mod privileges;
pub mod redact;
pub mod replay;
pub mod resync;
pub mod snapshot;
pub mod top;
pub mod trace;
pub mod transport;
pub mod view;
pub mod wait_status;
