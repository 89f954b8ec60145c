//! Embeds the kernel object built by `cargo xtask build` when it exists.
//!
//! Without it the daemon still builds (unit tests, replay and tree need no eBPF); `podtrace run`
//! then says how to build the object instead of failing obscurely.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=PODTRACE_EBPF_OBJECT");
    println!("cargo::rustc-check-cfg=cfg(podtrace_ebpf)");
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let default = manifest.join("../target/ebpf/bpfel-unknown-none/release/podtrace");
    let obj = std::env::var_os("PODTRACE_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or(default);
    println!("cargo:rerun-if-changed={}", obj.display());
    if obj.is_file() {
        println!("cargo:rustc-cfg=podtrace_ebpf");
        println!("cargo:rustc-env=PODTRACE_EBPF_OBJECT={}", obj.display());
    }
}
