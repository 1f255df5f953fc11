//! AVX2 kernels for the integer dot products.
//!
//! Each kernel performs exactly the operations of its scalar twin in
//! [`crate::quant`] (same integer lanes, same f32 multiply-then-add per block,
//! same reduction tree), so results are bit-identical; the unit tests check this.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use crate::gguf::GgmlType;
    use crate::quant::{packed_layout, QCol, GROUP, QK};

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

    /// Eight f16 values at `p` as f32, lanes `n..8` zeroed.
    ///
    /// # Safety
    /// 16 bytes must be readable at `p` (the packed row layout guarantees this:
    /// the scales and minimums are followed by at least 16 bytes of quants).
    #[inline]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn halves8(p: *const u8, n: usize) -> __m256 {
        // SAFETY: see the function contract.
        let v = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(p as *const __m128i) });
        if n >= GROUP {
            v
        } else {
            let idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), idx);
            _mm256_and_ps(v, _mm256_castsi256_ps(mask))
        }
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

    const T_Q4_0: u8 = 0;
    const T_Q4_1: u8 = 1;
    const T_Q8_0: u8 = 2;

    /// Packed integer weight row × N quantised columns (see `quant::dot_packed`).
    ///
    /// # Safety
    /// The CPU must support AVX2 and F16C ([`available`]).
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn dot_packed<const N: usize>(
        ty: GgmlType,
        row: &[u8],
        nb: usize,
        a: [QCol<'_>; N],
    ) -> [f32; N] {
        // SAFETY: forwarded contract.
        unsafe {
            match ty {
                GgmlType::Q4_1 => dot_t::<T_Q4_1, N>(row, nb, a),
                GgmlType::Q4_0 => dot_t::<T_Q4_0, N>(row, nb, a),
                _ => dot_t::<T_Q8_0, N>(row, nb, a),
            }
        }
    }

    /// Integer products of one block as sixteen i16 lanes (two products each).
    #[inline(always)]
    unsafe fn block_prod<const T: u8>(w: __m256i, wabs: __m256i, ap: *const [i8; QK]) -> __m256i {
        // SAFETY: caller guarantees 32 readable bytes at `ap`.
        let av = unsafe { _mm256_loadu_si256(ap as *const __m256i) };
        if T == T_Q4_1 {
            _mm256_maddubs_epi16(w, av)
        } else {
            _mm256_maddubs_epi16(wabs, _mm256_sign_epi8(av, w))
        }
    }

    /// Exact totals of the eight blocks of a group, lane k = block k.
    ///
    /// For 4-bit weights every product is at most 15 * 127 (Q4_1) or
    /// 8 * 127 (Q4_0) in magnitude, so partial sums of up to 16 products fit
    /// in i16 and the reduction runs on i16 lanes (no second multiply); Q8_0
    /// products need `vpmaddwd` to widen first. All of it is exact.
    #[inline(always)]
    unsafe fn group_isum<const T: u8>(
        w: &[__m256i; GROUP],
        wabs: &[__m256i; GROUP],
        ap: *const [i8; QK],
        ones: __m256i,
    ) -> __m256i {
        // SAFETY: caller guarantees GROUP blocks readable at `ap`.
        unsafe {
            let prod = |k: usize| block_prod::<T>(w[k], wabs[k], ap.add(k));
            if T == T_Q8_0 {
                let p = |k: usize| _mm256_madd_epi16(prod(k), ones);
                let pair = |x: __m256i, y: __m256i| {
                    _mm256_add_epi32(_mm256_unpacklo_epi32(x, y), _mm256_unpackhi_epi32(x, y))
                };
                let quad = |x: __m256i, y: __m256i| {
                    _mm256_add_epi32(_mm256_unpacklo_epi64(x, y), _mm256_unpackhi_epi64(x, y))
                };
                let x = quad(pair(p(0), p(1)), pair(p(2), p(3)));
                let y = quad(pair(p(4), p(5)), pair(p(6), p(7)));
                let lo = _mm256_permute2x128_si256(x, y, 0x20);
                let hi = _mm256_permute2x128_si256(x, y, 0x31);
                _mm256_add_epi32(lo, hi)
            } else {
                let pair16 = |x: __m256i, y: __m256i| {
                    _mm256_add_epi16(_mm256_unpacklo_epi16(x, y), _mm256_unpackhi_epi16(x, y))
                };
                let pair32 = |x: __m256i, y: __m256i| {
                    _mm256_add_epi16(_mm256_unpacklo_epi32(x, y), _mm256_unpackhi_epi32(x, y))
                };
                let pair64 = |x: __m256i, y: __m256i| {
                    _mm256_add_epi16(_mm256_unpacklo_epi64(x, y), _mm256_unpackhi_epi64(x, y))
                };
                let x = pair32(pair16(prod(0), prod(1)), pair16(prod(2), prod(3)));
                let y = pair32(pair16(prod(4), prod(5)), pair16(prod(6), prod(7)));
                // Each 128-bit half: lane k = block k's total over that half.
                let z = pair64(x, y);
                let lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(z));
                let hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(z, 1));
                _mm256_add_epi32(lo, hi)
            }
        }
    }

    #[target_feature(enable = "avx2,f16c")]
    unsafe fn dot_t<const T: u8, const N: usize>(
        row: &[u8],
        nb: usize,
        a: [QCol<'_>; N],
    ) -> [f32; N] {
        let ty = match T {
            T_Q4_1 => GgmlType::Q4_1,
            T_Q4_0 => GgmlType::Q4_0,
            _ => GgmlType::Q8_0,
        };
        let (do_, mo, qo) = packed_layout(ty, nb);
        let qlen = if T == T_Q8_0 { 32 } else { 16 };
        let groups = nb.div_ceil(GROUP);
        assert!(row.len() >= qo + qlen * nb, "weight row too short");
        for c in &a {
            assert!(
                c.qs.len() >= groups * GROUP
                    && c.d.len() >= groups * GROUP
                    && c.s.len() >= groups * GROUP,
                "activation column too short"
            );
        }
        let ones = _mm256_set1_epi16(1);
        let eight = _mm256_set1_epi8(8);
        let mut acc = [_mm256_setzero_ps(); N];
        let mut macc = [_mm256_setzero_ps(); N];
        let base = row.as_ptr();
        for g in 0..groups {
            let b0 = g * GROUP;
            let n = (nb - b0).min(GROUP);
            // SAFETY: blocks b0..b0+n lie within the row (checked above).
            let dw = unsafe { halves8(base.add(do_ + 2 * b0), n) };
            let mw = if T == T_Q4_1 {
                // SAFETY: as above.
                unsafe { halves8(base.add(mo + 2 * b0), n) }
            } else {
                _mm256_setzero_ps()
            };
            let mut w = [_mm256_setzero_si256(); GROUP];
            for (k, wk) in w.iter_mut().enumerate().take(n) {
                // SAFETY: block b0 + k < nb lies within the row.
                let p = unsafe { base.add(qo + qlen * (b0 + k)) };
                *wk = if T == T_Q8_0 {
                    // SAFETY: 32 bytes per Q8_0 block.
                    unsafe { _mm256_loadu_si256(p as *const __m256i) }
                } else if T == T_Q4_0 {
                    // SAFETY: 16 bytes per 4-bit block.
                    _mm256_sub_epi8(unsafe { unpack_q4(p) }, eight)
                } else {
                    // SAFETY: 16 bytes per 4-bit block.
                    unsafe { unpack_q4(p) }
                };
            }
            let wabs: [__m256i; GROUP] = if T == T_Q4_1 {
                w
            } else {
                std::array::from_fn(|k| _mm256_sign_epi8(w[k], w[k]))
            };
            for c in 0..N {
                let col = &a[c];
                // SAFETY: b0 + GROUP <= col.qs.len() (checked above).
                let isum = unsafe { group_isum::<T>(&w, &wabs, col.qs.as_ptr().add(b0), ones) };
                // SAFETY: b0 + GROUP <= col.d.len() and col.s.len().
                let da = unsafe { _mm256_loadu_ps(col.d.as_ptr().add(b0)) };
                acc[c] = _mm256_add_ps(
                    acc[c],
                    _mm256_mul_ps(_mm256_mul_ps(dw, da), _mm256_cvtepi32_ps(isum)),
                );
                if T == T_Q4_1 {
                    // SAFETY: as above.
                    let sa = unsafe { _mm256_loadu_ps(col.s.as_ptr().add(b0)) };
                    macc[c] = _mm256_add_ps(macc[c], _mm256_mul_ps(mw, sa));
                }
            }
        }
        std::array::from_fn(|c| {
            if T == T_Q4_1 {
                hsum(acc[c]) + hsum(macc[c])
            } else {
                hsum(acc[c])
            }
        })
    }

    const _: () = assert!(QK == 32);

    /// [`crate::model::attention_head`] compiled for AVX2 (same operations,
    /// wider registers; Rust never reassociates or fuses float operations).
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn attention_head(
        q: &[f32],
        span: &crate::model::HeadSpan<'_>,
        scale: f32,
        scores: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        crate::model::attention_head(q, span, scale, scores, out);
    }
}

/// One attention head, with the fastest code the CPU supports (identical results).
pub(crate) fn attention_head(
    kind: KernelKind,
    q: &[f32],
    span: &crate::model::HeadSpan<'_>,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if kind == KernelKind::Avx2 {
        // SAFETY: `KernelKind::Avx2` implies the CPU supports AVX2 (see `detect`).
        return unsafe { avx2::attention_head(q, span, scale, scores, out) };
    }
    let _ = kind;
    crate::model::attention_head(q, span, scale, scores, out);
}

use crate::gguf::GgmlType;
use crate::quant::{self, QCol};

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

/// Dot products of one packed integer weight row (`nb` blocks of Q4_0, Q4_1
/// or Q8_0) with N quantised columns.
#[inline]
pub(crate) fn dot_quant<const N: usize>(
    kind: KernelKind,
    ty: GgmlType,
    w: &[u8],
    nb: usize,
    a: [QCol<'_>; N],
) -> [f32; N] {
    #[cfg(target_arch = "x86_64")]
    if kind == KernelKind::Avx2 {
        // SAFETY: `KernelKind::Avx2` is only constructed by `detect` after
        // `avx2::available()` returned true, so the CPU supports AVX2/F16C.
        return unsafe { avx2::dot_packed(ty, w, nb, a) };
    }
    let _ = kind;
    std::array::from_fn(|c| quant::dot_packed(ty, w, nb, a[c]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize_row, dot_f32, quantize_row, quantize_weights};

    fn data(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed;
        (0..n)
            .map(|i| {
                s = s
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                let v = ((s >> 33) as f32 / (1u64 << 31) as f32) * 2.0 - 1.0;
                // A few outliers, as in real activations.
                if i % 97 == 0 {
                    v * 40.0
                } else {
                    v
                }
            })
            .collect()
    }

    struct Col {
        qs: Vec<[i8; 32]>,
        d: Vec<f32>,
        s: Vec<f32>,
    }
    impl Col {
        fn new(x: &[f32]) -> Self {
            let nbp = quant::padded_blocks(x.len());
            let mut c = Col {
                qs: vec![[0; 32]; nbp],
                d: vec![0.0; nbp],
                s: vec![0.0; nbp],
            };
            quantize_row(x, &mut c.qs, &mut c.d, &mut c.s);
            c
        }
        fn q(&self) -> QCol<'_> {
            QCol {
                qs: &self.qs,
                d: &self.d,
                s: &self.s,
            }
        }
    }

    fn check_type(ty: GgmlType, cols: usize) {
        let rows = 5;
        let nb = cols / 32;
        let w = quantize_weights(ty, &data(rows * cols, 1));
        let row_bytes = w.len() / rows;
        let xs: Vec<Col> = (0..4).map(|c| Col::new(&data(cols, 10 + c))).collect();
        let fast = KernelKind::detect();
        for r in 0..rows {
            let raw = &w[r * row_bytes..(r + 1) * row_bytes];
            let mut wr = vec![0u8; row_bytes];
            quant::pack_row(ty, raw, &mut wr);
            let s1: Vec<f32> = xs
                .iter()
                .map(|x| dot_quant::<1>(KernelKind::Scalar, ty, &wr, nb, [x.q()])[0])
                .collect();
            let f4 = dot_quant::<4>(
                fast,
                ty,
                &wr,
                nb,
                [xs[0].q(), xs[1].q(), xs[2].q(), xs[3].q()],
            );
            let f1: Vec<f32> = xs
                .iter()
                .map(|x| dot_quant::<1>(fast, ty, &wr, nb, [x.q()])[0])
                .collect();
            for c in 0..4 {
                assert_eq!(
                    s1[c].to_bits(),
                    f4[c].to_bits(),
                    "{ty:?} {cols} row {r} col {c}"
                );
                assert_eq!(
                    s1[c].to_bits(),
                    f1[c].to_bits(),
                    "{ty:?} {cols} row {r} col {c}"
                );
            }
            // And close to the float reference.
            let mut wd = vec![0f32; cols];
            dequantize_row(ty, raw, &mut wd);
            let x0 = data(cols, 10);
            let exact = dot_f32(&wd, &x0);
            let scale: f32 = wd.iter().zip(&x0).map(|(a, b)| (a * b).abs()).sum();
            assert!((exact - s1[0]).abs() < 0.05 * scale, "{exact} vs {}", s1[0]);
        }
    }

    #[test]
    fn simd_and_scalar_kernels_are_bit_identical() {
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            for cols in [32, 256, 576, 1536, 96] {
                check_type(ty, cols);
            }
        }
    }

    #[test]
    fn dequantize_round_trips_approximately() {
        let x = data(512, 3);
        for ty in [
            GgmlType::F32,
            GgmlType::F16,
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q8_0,
            GgmlType::Q4K,
        ] {
            let b = quantize_weights(ty, &x);
            assert_eq!(b.len(), 512 / ty.block_elems() * ty.block_bytes());
            let mut y = vec![0f32; 512];
            dequantize_row(ty, &b, &mut y);
            let err: f32 = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).sum::<f32>() / 512.0;
            assert!(err < 1.5, "{ty:?} mean abs error {err}");
            if ty == GgmlType::F32 {
                assert_eq!(x, y);
            }
        }
    }
}
