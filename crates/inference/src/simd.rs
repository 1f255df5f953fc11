//! AVX2 kernels for the integer dot products.
//!
//! Each kernel performs exactly the operations of its scalar twin in
//! [`crate::quant`] (same integer lanes, same f32 multiply-then-add per block,
//! same reduction tree), so results are bit-identical; the unit tests check this.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use crate::quant::QBlock;

    /// Whether the running CPU has the features these kernels need.
    pub fn available() -> bool {
        is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c")
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn hsum(acc: __m256) -> f32 {
        let hi = _mm256_extractf128_ps(acc, 1);
        let lo = _mm256_castps256_ps128(acc);
        let t = _mm_add_ps(lo, hi);
        let u = _mm_add_ps(t, _mm_movehl_ps(t, t));
        let r = _mm_add_ss(u, _mm_shuffle_ps(u, u, 1));
        _mm_cvtss_f32(r)
    }

    /// Two consecutive halves at `p` as f32 (exact conversion).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn two_halves(p: *const u8) -> (f32, f32) {
        // SAFETY: caller guarantees 4 readable bytes at `p`.
        let bits = unsafe { (p as *const u32).read_unaligned() };
        let v = _mm_cvtph_ps(_mm_cvtsi32_si128(bits as i32));
        let d = _mm_cvtss_f32(v);
        let m = _mm_cvtss_f32(_mm_shuffle_ps(v, v, 1));
        (d, m)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn load_act(b: &QBlock) -> __m256i {
        // SAFETY: `qs` is 32 contiguous bytes.
        unsafe { _mm256_loadu_si256(b.qs.as_ptr() as *const __m256i) }
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn unpack_q4(p: *const u8) -> __m256i {
        // SAFETY: caller guarantees 16 readable bytes at `p`.
        let q = unsafe { _mm_loadu_si128(p as *const __m128i) };
        let m4 = _mm_set1_epi8(0x0f);
        let lo = _mm_and_si128(q, m4);
        let hi = _mm_and_si128(_mm_srli_epi16(q, 4), m4);
        _mm256_set_m128i(hi, lo)
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn accumulate(acc: __m256, lanes: __m256i, scale: f32) -> __m256 {
        _mm256_add_ps(
            acc,
            _mm256_mul_ps(_mm256_set1_ps(scale), _mm256_cvtepi32_ps(lanes)),
        )
    }

    fn check<const N: usize>(w: &[u8], bs: usize, a: &[&[QBlock]; N]) -> usize {
        let nb = w.len() / bs;
        for col in a {
            assert!(col.len() >= nb, "activation shorter than weight row");
        }
        nb
    }

    /// Q4_1 row × N activation columns.
    ///
    /// # Safety
    /// The CPU must support AVX2 and F16C ([`available`]).
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn dot_q4_1<const N: usize>(w: &[u8], a: [&[QBlock]; N]) -> [f32; N] {
        let nb = check(w, 20, &a);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); N];
        let mut summ = [0f32; N];
        for b in 0..nb {
            // SAFETY: block b lies within `w` (nb = w.len() / 20).
            let (d, m, wv) = unsafe {
                let p = w.as_ptr().add(b * 20);
                let (d, m) = two_halves(p);
                (d, m, unpack_q4(p.add(4)))
            };
            for c in 0..N {
                let ab = &a[c][b];
                // SAFETY: AVX2 is enabled for this function.
                let av = unsafe { load_act(ab) };
                let p = _mm256_madd_epi16(_mm256_maddubs_epi16(wv, av), ones);
                acc[c] = accumulate(acc[c], p, d * ab.d);
                summ[c] += m * ab.s;
            }
        }
        std::array::from_fn(|c| hsum(acc[c]) + summ[c])
    }

    /// Q4_0 row × N activation columns.
    ///
    /// # Safety
    /// The CPU must support AVX2 and F16C ([`available`]).
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn dot_q4_0<const N: usize>(w: &[u8], a: [&[QBlock]; N]) -> [f32; N] {
        let nb = check(w, 18, &a);
        let ones = _mm256_set1_epi16(1);
        let eight = _mm256_set1_epi8(8);
        let mut acc = [_mm256_setzero_ps(); N];
        for b in 0..nb {
            // SAFETY: block b lies within `w`; a half is read as part of 4 bytes
            // starting at the block, which holds 18 bytes.
            let (d, wv) = unsafe {
                let p = w.as_ptr().add(b * 18);
                let (d, _) = two_halves(p);
                (d, _mm256_sub_epi8(unpack_q4(p.add(2)), eight))
            };
            let wabs = _mm256_sign_epi8(wv, wv);
            for c in 0..N {
                let ab = &a[c][b];
                // SAFETY: AVX2 is enabled for this function.
                let av = unsafe { load_act(ab) };
                let p = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(av, wv)),
                    ones,
                );
                acc[c] = accumulate(acc[c], p, d * ab.d);
            }
        }
        std::array::from_fn(|c| hsum(acc[c]))
    }

    /// Q8_0 row × N activation columns.
    ///
    /// # Safety
    /// The CPU must support AVX2 and F16C ([`available`]).
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn dot_q8_0<const N: usize>(w: &[u8], a: [&[QBlock]; N]) -> [f32; N] {
        let nb = check(w, 34, &a);
        let ones = _mm256_set1_epi16(1);
        let mut acc = [_mm256_setzero_ps(); N];
        for b in 0..nb {
            // SAFETY: block b (34 bytes) lies within `w`.
            let (d, wv) = unsafe {
                let p = w.as_ptr().add(b * 34);
                let (d, _) = two_halves(p);
                (d, _mm256_loadu_si256(p.add(2) as *const __m256i))
            };
            let wabs = _mm256_sign_epi8(wv, wv);
            for c in 0..N {
                let ab = &a[c][b];
                // SAFETY: AVX2 is enabled for this function.
                let av = unsafe { load_act(ab) };
                let p = _mm256_madd_epi16(
                    _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(av, wv)),
                    ones,
                );
                acc[c] = accumulate(acc[c], p, d * ab.d);
            }
        }
        std::array::from_fn(|c| hsum(acc[c]))
    }
}

use crate::gguf::GgmlType;
use crate::quant::{self, QBlock};

/// Which kernel family to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KernelKind {
    /// Portable scalar code.
    Scalar,
    /// AVX2 (x86-64 only).
    Avx2,
}

impl KernelKind {
    /// The fastest kernel family the running CPU supports.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            if avx2::available() {
                return KernelKind::Avx2;
            }
        }
        KernelKind::Scalar
    }
}

/// Dot products of one weight row (integer formats) with N quantised columns.
///
/// `ty` must be Q4_0, Q4_1 or Q8_0; returns `None` for other types.
#[inline]
pub(crate) fn dot_quant<const N: usize>(
    kind: KernelKind,
    ty: GgmlType,
    w: &[u8],
    a: [&[QBlock]; N],
) -> Option<[f32; N]> {
    #[cfg(target_arch = "x86_64")]
    if kind == KernelKind::Avx2 {
        // SAFETY: `KernelKind::Avx2` is only constructed after `avx2::available()`
        // (see `detect` and `Engine` construction), so the CPU supports AVX2/F16C.
        return unsafe {
            match ty {
                GgmlType::Q4_1 => Some(avx2::dot_q4_1(w, a)),
                GgmlType::Q4_0 => Some(avx2::dot_q4_0(w, a)),
                GgmlType::Q8_0 => Some(avx2::dot_q8_0(w, a)),
                _ => None,
            }
        };
    }
    let _ = kind;
    let f = match ty {
        GgmlType::Q4_1 => quant::dot_q4_1,
        GgmlType::Q4_0 => quant::dot_q4_0,
        GgmlType::Q8_0 => quant::dot_q8_0,
        _ => return None,
    };
    Some(std::array::from_fn(|c| f(w, a[c])))
}
