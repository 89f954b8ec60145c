//! Just enough ELF reading to tell a static binary from a dynamic one.
use anyhow::{bail, Result};

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

/// Whether a 64-bit little-endian ELF file asks for a program interpreter (a dynamic loader).
pub fn has_interpreter(b: &[u8]) -> Result<bool> {
    if b.get(0..4) != Some(b"\x7fELF".as_slice()) {
        bail!("not an ELF file");
    }
    if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
        bail!("not a 64-bit little-endian ELF file");
    }
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
