//! What differs per guest architecture in a boot: the QEMU binary, machine and CPU, the serial
//! console's name, and the Debian package QEMU comes in. boot.rs adds what is common (memory,
//! one vCPU, the serial console on stdio, kernel, initramfs, command line).
//!
//! Debian's `cloud-arm64` vmlinuz is an uncompressed arm64 `Image` (not EFI zboot), which
//! `qemu-system-aarch64 -M virt -kernel` boots directly: nothing to decompress.
use crate::arch::Arch;

use super::boot::Accel;

/// The QEMU system emulator for guests of `arch`.
pub fn qemu(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "qemu-system-x86_64",
        Arch::Arm64 => "qemu-system-aarch64",
    }
}

/// The Debian package that has `qemu(arch)`.
pub fn qemu_package(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "qemu-system-x86",
        Arch::Arm64 => "qemu-system-arm",
    }
}

/// The kernel's name for the first serial port QEMU connects to stdio.
pub fn console(arch: Arch) -> &'static str {
    match arch {
        Arch::Amd64 => "ttyS0",
        // The PL011 UART of the `virt` board.
        Arch::Arm64 => "ttyAMA0",
    }
}

/// Whether `accel` can run a guest of `arch` on this host at all (KVM only for the host's own
/// architecture).
pub fn accel_possible(arch: Arch, accel: Accel) -> bool {
    accel == Accel::Tcg || arch == Arch::host()
}

/// Machine, accelerator and CPU arguments.
pub fn machine_args(arch: Arch, accel: Accel) -> Vec<&'static str> {
    match (arch, accel) {
        // busybox-static uses SSE4.2, which plain qemu64 lacks.
        (Arch::Amd64, Accel::Tcg) => vec!["-accel", "tcg", "-cpu", "Skylake-Server"],
        (Arch::Amd64, Accel::Kvm) => vec!["-accel", "kvm", "-cpu", "host"],
        // cortex-a72: ARMv8.0, the baseline every arm64 node has (no LSE atomics, no pointer
        // authentication), so the binary is checked on the least it may meet. Measured here on
        // 6.12 (boot to /init and power off): cortex-a72 8.8 s, `max` 19.7 s (its pointer
        // authentication is slow to emulate), `max,pauth-impdef=on` 6.7 s.
        (Arch::Arm64, Accel::Tcg) => vec!["-M", "virt", "-accel", "tcg", "-cpu", "cortex-a72"],
        (Arch::Arm64, Accel::Kvm) => vec!["-M", "virt", "-accel", "kvm", "-cpu", "host"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_arch_has_its_emulator_board_and_console() {
        assert_eq!(qemu(Arch::Arm64), "qemu-system-aarch64");
        assert_eq!(console(Arch::Arm64), "ttyAMA0");
        assert_eq!(console(Arch::Amd64), "ttyS0");
        let arm = machine_args(Arch::Arm64, Accel::Tcg);
        assert_eq!(arm[..2], ["-M", "virt"]);
        assert!(arm.contains(&"cortex-a72"));
        assert_eq!(
            machine_args(Arch::Amd64, Accel::Tcg),
            ["-accel", "tcg", "-cpu", "Skylake-Server"]
        );
        // No KVM for a foreign guest: an x86 host can only emulate arm64.
        let foreign = if Arch::host() == Arch::Amd64 {
            Arch::Arm64
        } else {
            Arch::Amd64
        };
        assert!(!accel_possible(foreign, Accel::Kvm));
        assert!(accel_possible(foreign, Accel::Tcg));
        assert!(accel_possible(Arch::host(), Accel::Kvm));
    }
}
