//! Just enough ELF reading to tell a static binary from a dynamic one, and for which CPU.
use anyhow::{bail, Result};

use crate::arch::Arch;

const PT_INTERP: u32 = 3;

fn u16_at(b: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(off..off + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(off..off + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], off: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(off..off + 8)?.try_into().ok()?))
}

fn check_header(b: &[u8]) -> Result<()> {
    if b.get(0..4) != Some(b"\x7fELF".as_slice()) {
        bail!("not an ELF file");
    }
    if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        bail!("not a 64-bit little-endian ELF file");
    }
    Ok(())
}

/// `e_machine` of a 64-bit little-endian ELF file (62 x86-64, 183 AArch64).
pub fn machine(b: &[u8]) -> Result<u16> {
    check_header(b)?;
    let Some(m) = u16_at(b, 0x12) else {
        bail!("truncated ELF header");
    };
    Ok(m)
}

/// Fails unless the file is a static (no PT_INTERP) ELF executable for `arch`: what runs on
/// `scratch` and in the kernel matrix's initramfs.
pub fn check_static_for(b: &[u8], arch: Arch) -> Result<()> {
    let m = machine(b)?;
    if m != arch.elf_machine() {
        bail!(
            "built for ELF machine {m}, not {arch} (e_machine {})",
            arch.elf_machine()
        );
    }
    if has_interpreter(b)? {
        bail!("dynamically linked (has PT_INTERP): it cannot run on scratch or in the initramfs");
    }
    Ok(())
}

/// Whether a 64-bit little-endian ELF file asks for a program interpreter (a dynamic loader).
pub fn has_interpreter(b: &[u8]) -> Result<bool> {
    check_header(b)?;
    let (Some(phoff), Some(phentsize), Some(phnum)) =
        (u64_at(b, 0x20), u16_at(b, 0x36), u16_at(b, 0x38))
    else {
        bail!("truncated ELF header");
    };
    let phoff = usize::try_from(phoff)?;
    for i in 0..usize::from(phnum) {
        let Some(p_type) = u32_at(b, phoff + i * usize::from(phentsize)) else {
            bail!("truncated program header {i}");
        };
        if p_type == PT_INTERP {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_running_test_binary_is_dynamic_and_garbage_is_refused() {
        // The test binary itself (glibc target) is dynamically linked.
        let exe = std::env::current_exe().expect("path of the test binary");
        let bytes = std::fs::read(&exe).expect("read the test binary");
        assert!(
            has_interpreter(&bytes).expect("parse the test binary"),
            "{} should have PT_INTERP",
            exe.display()
        );
        assert!(
            has_interpreter(b"#!/bin/sh\n").is_err(),
            "a script is not ELF"
        );
        assert!(
            has_interpreter(&bytes[..0x30]).is_err(),
            "a truncated header must be an error, not a panic"
        );
    }

    /// A minimal ELF64 header (no program headers) for `machine`.
    fn header(machine: u16) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[0..4].copy_from_slice(b"\x7fELF");
        b[4] = 2; // 64-bit
        b[5] = 1; // little-endian
        b[0x12..0x14].copy_from_slice(&machine.to_le_bytes());
        b[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        b[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        b
    }

    #[test]
    fn the_machine_must_match_the_arch() {
        let arm = header(183);
        assert_eq!(machine(&arm).expect("parse"), 183);
        assert!(check_static_for(&arm, Arch::Arm64).is_ok());
        let e = check_static_for(&arm, Arch::Amd64).expect_err("an aarch64 file is not amd64");
        assert!(e.to_string().contains("not amd64"), "{e}");
        assert!(check_static_for(&header(62), Arch::Amd64).is_ok());
        assert!(machine(&arm[..0x13]).is_err(), "truncated");
        // The test binary: the host's machine, but dynamic.
        let exe = std::env::current_exe().expect("path of the test binary");
        let bytes = std::fs::read(&exe).expect("read the test binary");
        assert_eq!(machine(&bytes).expect("parse"), Arch::host().elf_machine());
        let e = check_static_for(&bytes, Arch::host()).expect_err("the test binary is dynamic");
        assert!(e.to_string().contains("PT_INTERP"), "{e}");
    }

    #[test]
    fn a_static_busybox_has_no_interpreter() {
        // busybox-static is installed by `cargo xtask setup --runtimes`.
        let Ok(bytes) = std::fs::read("/bin/busybox") else {
            panic!("/bin/busybox missing: run `cargo xtask setup --runtimes`");
        };
        assert!(
            !has_interpreter(&bytes).expect("parse /bin/busybox"),
            "/bin/busybox (busybox-static) should be static"
        );
    }
}
