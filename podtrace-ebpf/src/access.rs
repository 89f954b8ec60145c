//! How the programs read kernel memory: one trait, two ways, chosen per program at compile
//! time.
//!
//! - [`Typed`]: BTF tracepoints (tp_btf) hand over BTF-typed pointers; a field at a constant
//!   offset is a plain load that the verifier checks against the kernel's BTF and the JIT
//!   guards (a bad pointer reads 0): no helper call.
//! - [`Probed`]: raw tracepoints hand over plain numbers, which the verifier does not let a
//!   program dereference; every field is a `bpf_probe_read_kernel` (0 when it faults).
//!
//! The program bodies are written once, generic over this trait.

use aya_ebpf::helpers::generated::bpf_probe_read_kernel;

pub trait Access {
    /// The `T` at `addr`; all zeroes when it cannot be read.
    fn read<T: Copy + Default>(addr: u64) -> T;
}

/// Plain loads through BTF-typed pointers (tp_btf programs).
pub struct Typed;

/// `bpf_probe_read_kernel` (raw tracepoint programs).
pub struct Probed;

impl Access for Typed {
    #[inline(always)]
    fn read<T: Copy + Default>(addr: u64) -> T {
        // SAFETY: `addr` is a BTF pointer plus a BTF-derived field offset; the BPF JIT turns
        // this into a fault-tolerant load (a bad address reads as 0).
        unsafe { core::ptr::read(addr as *const T) }
    }
}

impl Access for Probed {
    /// The helper zeroes the destination when the read faults, so its result is not looked
    /// at: no branch per field (with one, 5.10's verifier explored over a million
    /// instructions of the exec program and refused it).
    #[inline(always)]
    fn read<T: Copy + Default>(addr: u64) -> T {
        let mut v = T::default();
        // SAFETY: `v` is valid for size_of::<T>() bytes of writes; the helper copes with any
        // source address.
        unsafe {
            bpf_probe_read_kernel(
                (&raw mut v).cast(),
                core::mem::size_of::<T>() as u32,
                addr as *const core::ffi::c_void,
            )
        };
        v
    }
}
