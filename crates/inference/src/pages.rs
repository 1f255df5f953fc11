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
/// pages, the same contents). Every page is written here: for buffers that
/// are filled at once (packed weights).
pub(crate) fn zeroed_vec<T: Copy + Default>(n: usize) -> Vec<T> {
    let mut v: Vec<T> = Vec::with_capacity(n);
    advise_huge(v.as_mut_ptr().cast(), n * std::mem::size_of::<T>());
    v.resize(n, T::default());
    v
}

/// [`zeroed_vec`] of `f32` whose pages are zeroed by the kernel when first
/// touched, not here: a KV cache is sized for the longest answer a request
/// allows and mostly holds far fewer positions, which then cost neither
/// memory nor time.
pub(crate) fn lazy_zeroed_f32(n: usize) -> Vec<f32> {
    // Zero floats come from the allocator's zeroed memory (fresh pages).
    let mut v = vec![0f32; n];
    advise_huge(v.as_mut_ptr().cast(), n * std::mem::size_of::<f32>());
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
            for v in [zeroed_vec::<f32>(n), lazy_zeroed_f32(n)] {
                assert_eq!(v.len(), n);
                assert!(v.iter().all(|&x| x.to_bits() == 0));
            }
        }
    }

    /// Resident memory of this process, in bytes.
    #[cfg(target_os = "linux")]
    fn resident() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
        let pages: usize = statm
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        pages * 4096
    }

    /// A 1 GiB lazily zeroed vector takes memory only where it is written
    /// (other tests run beside this one, hence the wide margin).
    #[cfg(target_os = "linux")]
    #[test]
    fn lazily_zeroed_vectors_take_memory_only_when_touched() {
        let before = resident();
        let mut v = lazy_zeroed_f32(1 << 28);
        v[12345] = 1.0;
        let grown = resident().saturating_sub(before);
        assert!(grown < 256 << 20, "{grown} bytes resident after one write");
        assert_eq!(v.iter().filter(|&&x| x != 0.0).count(), 1);
    }
}
