//! Embeds the kernel objects built by `cargo xtask build` when they exist: the ring-buffer
//! object and the perf-buffer one (for kernels without the BPF ring buffer).
//!
//! Without them the daemon still builds (unit tests, replay and tree need no eBPF); `podtrace
//! run` then says how to build the objects instead of failing obscurely.
use std::path::PathBuf;

fn main() {
    println!("cargo::rustc-check-cfg=cfg(podtrace_ebpf)");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let objects = [
        (
            "PODTRACE_EBPF_OBJECT",
            "../target/ebpf/bpfel-unknown-none/release/podtrace",
        ),
        (
            "PODTRACE_EBPF_OBJECT_PERF",
            "../target/ebpf/bpfel-unknown-none/release/podtrace-perf",
        ),
    ];
    let mut found = Vec::new();
    for (var, default) in objects {
        println!("cargo:rerun-if-env-changed={var}");
        let obj = std::env::var_os(var)
            .map(PathBuf::from)
            .unwrap_or_else(|| manifest.join(default));
        println!("cargo:rerun-if-changed={}", obj.display());
        if obj.is_file() {
            found.push((var, obj));
        }
    }
    if found.len() == objects.len() {
        println!("cargo:rustc-cfg=podtrace_ebpf");
        for (var, obj) in found {
            println!("cargo:rustc-env={var}={}", obj.display());
        }
    }
}
