//! `memcmp` and `bcmp` for the static (musl) build, what the image ships.
//!
//! musl's are a byte-at-a-time C loop; glibc's are vectorised. The engine compares container
//! ids (64 hex bytes) on most events of a container (map keys, a process's container against
//! the one it is placed in): in the static build these were 21% of the instructions of a
//! replay, which ran ~30% slower than the glibc build's (BENCHMARKS.md). Defined here, the
//! linker takes these instead of libc.a's (an archive member is pulled only for a symbol not
//! defined yet). Sixteen bytes at a time, then the tail; same results as the C functions.
//!
//! Only in the musl build: glibc's are better than these.

/// Compares 16 bytes at a time; the first differing block's bytes decide (in memory order).
///
/// # Safety
/// `a` and `b` must be readable for `n` bytes.
#[inline(always)]
unsafe fn compare(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i + 16 <= n {
        // SAFETY: within the caller's `n` readable bytes; unaligned reads are fine.
        let (x, y) = unsafe {
            (
                core::ptr::read_unaligned(a.add(i).cast::<u128>()),
                core::ptr::read_unaligned(b.add(i).cast::<u128>()),
            )
        };
        if x != y {
            // SAFETY: these 16 bytes are readable.
            return unsafe { first_difference(a.add(i), b.add(i), 16) };
        }
        i += 16;
    }
    // SAFETY: as above, for the tail.
    unsafe { first_difference(a.add(i), b.add(i), n - i) }
}

/// The sign of the first differing byte (as unsigned chars), 0 when equal.
///
/// # Safety
/// `a` and `b` must be readable for `n` bytes.
#[inline(always)]
unsafe fn first_difference(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: i < n.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// # Safety
/// As C's `memcmp`: `a` and `b` readable for `n` bytes.
#[cfg(target_env = "musl")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's promise.
    unsafe { compare(a, b, n) }
}

/// # Safety
/// As C's `bcmp`: `a` and `b` readable for `n` bytes.
#[cfg(target_env = "musl")]
#[unsafe(no_mangle)]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: the caller's promise.
    unsafe { compare(a, b, n) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Against the slices' own ordering (the libc of the test build), every length and every
    /// place of a first difference up to 70 bytes.
    #[test]
    fn orders_as_memcmp_does() {
        let sign = |v: i32| v.signum();
        for n in 0..70usize {
            let a: Vec<u8> = (0..n).map(|i| (i * 7 % 251) as u8).collect();
            // SAFETY: both are n bytes.
            assert_eq!(unsafe { compare(a.as_ptr(), a.as_ptr(), n) }, 0, "{n}");
            for at in 0..n {
                for delta in [1u8, 128, 255] {
                    let mut b = a.clone();
                    b[at] = b[at].wrapping_add(delta);
                    let want = a.cmp(&b) as i32;
                    // SAFETY: both are n bytes.
                    let got = unsafe { compare(a.as_ptr(), b.as_ptr(), n) };
                    assert_eq!(sign(got), want, "n {n}, at {at}, +{delta}");
                    let got = unsafe { compare(b.as_ptr(), a.as_ptr(), n) };
                    assert_eq!(sign(got), -want, "n {n}, at {at}, +{delta} reversed");
                }
            }
        }
    }
}
