//! Huge pages for the buffers a decode step streams from memory.
//!
//! Every decode step reads all the packed weights and the whole KV cache
//! once. On 4 KiB pages that is a TLB miss (and a page walk) every 4 KiB,
//! and the hardware prefetchers stop at every page boundary. Backed by
//! 2 MiB transparent huge pages, decode on the Qwen3-0.6B shape ran 15-20 %
//! faster at 1 thread (docs/benchmarks.md). Linux gives them only to
//! ranges that ask (`MADV_HUGEPAGE`) under its default `madvise` policy.
#![allow(unsafe_code)]

/// A zeroed vector of `n` values whose whole 2 MiB pages are backed by
/// transparent huge pages where the system offers them (elsewhere: plain
/// pages, the same contents).
pub(crate) fn zeroed_vec<T: Copy + Default>(n: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    advise_huge(v.as_mut_ptr().cast(), n * std::mem::size_of::<T>());
    v.resize(n, T::default());
    v
}

/// Ask for huge pages on the whole 2 MiB pages inside `ptr..ptr + len`,
/// before they are first touched. Advice only: if the kernel declines, the
/// pages stay small.
fn advise_huge(ptr: *mut u8, len: usize) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (ptr as usize).next_multiple_of(HUGE);
        let end = (ptr as usize).saturating_add(len) / HUGE * HUGE;
        if end > start {
            // SAFETY: the range lies inside the caller's allocation, and
            // MADV_HUGEPAGE changes only how its pages are backed, never
            // their contents or the mapping.
            unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE);
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (ptr, len);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_vectors_are_zero_and_full_length() {
        for n in [0, 1, 1000, (5 << 20) + 3] {
            let v: Vec<f32> = zeroed_vec(n);
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|&x| x.to_bits() == 0));
        }
    }
}
