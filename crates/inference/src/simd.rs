//! x86-64 kernels for the integer dot products (AVX2, AVX512-VNNI, AVX-VNNI).
//!
//! Each kernel performs exactly the operations of its scalar twin in
//! [`crate::quant`] (same f32 multiply-then-add per block, same lanes, same
//! reduction tree), so results are bit-identical; the unit tests check this.
//! Only the way the exact per-block integer sums are formed differs between
//! kernel families (`vpmaddubsw`/`vpmaddwd` or `vpdpbusd`), which cannot
//! change them. A kernel computes an R-row × C-column tile of a matrix
//! product, so unpacked weights are reused across columns and activations
//! across rows; every (row, column) value is the same whatever the tile shape.
#![allow(unsafe_code)]

#[cfg(target_arch = "x86_64")]
pub(crate) mod avx2 {
    use std::arch::x86_64::*;

    use crate::gguf::GgmlType;
    use crate::quant::{packed_layout, quant_bytes, QCol, GROUP, QK};

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

    const T_Q4_0: u8 = 0;
    const T_Q4_1: u8 = 1;
    const T_Q8_0: u8 = 2;

    /// Integer multiply-add flavour: `vpmaddubsw` + `vpmaddwd` (AVX2),
    /// `vpdpbusd` on 256-bit registers via AVX512-VNNI + AVX512-VL, or via AVX-VNNI.
    pub const M_AVX2: u8 = 0;
    /// See [`M_AVX2`].
    pub const M_VNNI512: u8 = 1;
    /// See [`M_AVX2`].
    pub const M_AVXVNNI: u8 = 2;

    /// Whether the CPU has AVX512-VNNI with AVX512-VL (besides AVX2/F16C).
    pub fn available_vnni512() -> bool {
        available()
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
    }

    /// Whether the CPU has AVX-VNNI (besides AVX2/F16C).
    pub fn available_avxvnni() -> bool {
        available() && is_x86_feature_detected!("avxvnni")
    }

    /// `acc + Σ` of four u8 × i8 products per 32-bit lane (exact).
    #[inline(always)]
    unsafe fn dp<const M: u8>(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
        if M == M_VNNI512 {
            // SAFETY: only reached from `tile_m::<M_VNNI512, ..>`, compiled with
            // AVX512-VNNI/VL enabled and called only when the CPU has them.
            unsafe { _mm256_dpbusd_epi32(acc, w, a) }
        } else {
            // SAFETY: as above, for AVX-VNNI.
            unsafe { _mm256_dpbusd_avx_epi32(acc, w, a) }
        }
    }

    /// R packed weight rows × C quantised columns (see `quant::dot_packed`,
    /// which defines the result of every (row, column) pair).
    ///
    /// # Safety
    /// The CPU must support the features of mode `M` ([`available`],
    /// [`available_vnni512`], [`available_avxvnni`]).
    #[inline(always)]
    pub unsafe fn tile<const M: u8, const R: usize, const C: usize>(
        ty: GgmlType,
        rows: [&[u8]; R],
        nb: usize,
        a: [QCol<'_>; C],
    ) -> [[f32; C]; R] {
        // SAFETY: forwarded contract.
        unsafe {
            match ty {
                GgmlType::Q4_1 => tile_t::<M, T_Q4_1, R, C>(rows, nb, a),
                GgmlType::Q4_0 => tile_t::<M, T_Q4_0, R, C>(rows, nb, a),
                _ => tile_t::<M, T_Q8_0, R, C>(rows, nb, a),
            }
        }
    }

    /// [`tile`] compiled for AVX2.
    ///
    /// # Safety
    /// The CPU must support AVX2 and F16C.
    #[target_feature(enable = "avx2,f16c")]
    pub unsafe fn tile_avx2<const R: usize, const C: usize>(
        ty: GgmlType,
        rows: [&[u8]; R],
        nb: usize,
        a: [QCol<'_>; C],
    ) -> [[f32; C]; R] {
        // SAFETY: forwarded contract.
        unsafe { tile::<M_AVX2, R, C>(ty, rows, nb, a) }
    }

    /// [`tile`] compiled for AVX512-VNNI on 256-bit registers.
    ///
    /// # Safety
    /// [`available_vnni512`] must hold.
    #[target_feature(enable = "avx2,f16c,avx512f,avx512vl,avx512vnni")]
    pub unsafe fn tile_vnni512<const R: usize, const C: usize>(
        ty: GgmlType,
        rows: [&[u8]; R],
        nb: usize,
        a: [QCol<'_>; C],
    ) -> [[f32; C]; R] {
        // SAFETY: forwarded contract.
        unsafe { tile::<M_VNNI512, R, C>(ty, rows, nb, a) }
    }

    /// [`tile`] compiled for AVX-VNNI.
    ///
    /// # Safety
    /// [`available_avxvnni`] must hold.
    #[target_feature(enable = "avx2,f16c,avxvnni")]
    pub unsafe fn tile_avxvnni<const R: usize, const C: usize>(
        ty: GgmlType,
        rows: [&[u8]; R],
        nb: usize,
        a: [QCol<'_>; C],
    ) -> [[f32; C]; R] {
        // SAFETY: forwarded contract.
        unsafe { tile::<M_AVXVNNI, R, C>(ty, rows, nb, a) }
    }

    /// Bytes a SIMD kernel may read past a row's quants (see `quant::packed_layout`).
    pub const OVERREAD: usize = 32;

    // Index loops over the register tile read more plainly than iterators here.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn tile_t<const M: u8, const T: u8, const R: usize, const C: usize>(
        rows: [&[u8]; R],
        nb: usize,
        a: [QCol<'_>; C],
    ) -> [[f32; C]; R] {
        let ty = match T {
            T_Q4_1 => GgmlType::Q4_1,
            T_Q4_0 => GgmlType::Q4_0,
            _ => GgmlType::Q8_0,
        };
        let (do_, mo, qo) = packed_layout(ty, nb);
        let qlen = quant_bytes(ty);
        let groups = nb.div_ceil(GROUP);
        for row in &rows {
            assert!(
                row.len() >= qo + qlen * nb + OVERREAD,
                "weight row too short"
            );
        }
        for c in &a {
            assert!(
                c.qs.len() >= groups * GROUP
                    && c.d.len() >= groups * GROUP
                    && c.s.len() >= groups * GROUP
                    && c.qsum.len() >= groups * GROUP,
                "activation column too short"
            );
        }
        let ones = _mm256_set1_epi16(1);
        let m4 = _mm256_set1_epi8(0x0f);
        let flip = _mm256_set1_epi8(-128);
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let mut macc = [[_mm256_setzero_ps(); C]; R];
        let load = |p: *const u8| {
            // SAFETY: every call site passes a pointer with 32 readable bytes
            // (checked by the assertions above).
            unsafe { _mm256_loadu_si256(p as *const __m256i) }
        };
        for g in 0..groups {
            let b0 = g * GROUP;
            let n = (nb - b0).min(GROUP);
            let stride = 4 * n;
            // SAFETY: blocks b0..b0+n lie within each row (checked above);
            // 16 bytes from a scale or minimum stay inside the row.
            let dw: [__m256; R] =
                std::array::from_fn(|r| unsafe { halves8(rows[r].as_ptr().add(do_ + 2 * b0), n) });
            let mw: [__m256; R] = std::array::from_fn(|r| {
                if T == T_Q4_1 {
                    // SAFETY: as above.
                    unsafe { halves8(rows[r].as_ptr().add(mo + 2 * b0), n) }
                } else {
                    _mm256_setzero_ps()
                }
            });
            // SAFETY: the group's quants start inside the row.
            let wq: [*const u8; R] =
                std::array::from_fn(|r| unsafe { rows[r].as_ptr().add(qo + qlen * b0) });
            // SAFETY: entries 8g..8g+8 exist in every column (checked above).
            let aq: [*const u8; C] =
                std::array::from_fn(|c| unsafe { a[c].qs.as_ptr().add(b0) as *const u8 });
            let mut isum = [[_mm256_setzero_si256(); C]; R];
            if T == T_Q8_0 {
                for v in 0..8 {
                    // SAFETY: vector v of the group plus OVERREAD lies in the row.
                    let raw: [__m256i; R] =
                        std::array::from_fn(|r| load(unsafe { wq[r].add(v * stride) }));
                    let w: [__m256i; R] = std::array::from_fn(|r| _mm256_xor_si256(raw[r], flip));
                    let wabs: [__m256i; R] = std::array::from_fn(|r| _mm256_abs_epi8(w[r]));
                    for c in 0..C {
                        // SAFETY: entry 8g + v of the column.
                        let av = load(unsafe { aq[c].add(v * QK) });
                        for r in 0..R {
                            isum[r][c] = if M == M_AVX2 {
                                // |w| <= 128, |a| <= 127: pair sums fit i16.
                                let p = _mm256_maddubs_epi16(wabs[r], _mm256_sign_epi8(av, w[r]));
                                _mm256_add_epi32(isum[r][c], _mm256_madd_epi16(p, ones))
                            } else {
                                // SAFETY: mode M's features are enabled (contract).
                                unsafe { dp::<M>(isum[r][c], raw[r], av) }
                            };
                        }
                    }
                }
                if M != M_AVX2 {
                    for c in 0..C {
                        // SAFETY: as above.
                        let qs = unsafe {
                            _mm256_loadu_si256(a[c].qsum.as_ptr().add(b0) as *const __m256i)
                        };
                        // Weights were stored as w + 128.
                        let corr = _mm256_slli_epi32(qs, 7);
                        for r in 0..R {
                            isum[r][c] = _mm256_sub_epi32(isum[r][c], corr);
                        }
                    }
                }
            } else {
                // 4-bit: u8 nibbles × i8 activations. With `vpmaddubsw` the
                // sixteen products summed per i16 lane are at most
                // 16 * 15 * 127 = 30480 in magnitude, so i16 is exact.
                let mut s16 = [[_mm256_setzero_si256(); C]; R];
                for v in 0..4 {
                    // SAFETY: vector v of the group plus OVERREAD lies in the row.
                    let raw: [__m256i; R] =
                        std::array::from_fn(|r| load(unsafe { wq[r].add(v * stride) }));
                    let lo: [__m256i; R] = std::array::from_fn(|r| _mm256_and_si256(raw[r], m4));
                    let hi: [__m256i; R] =
                        std::array::from_fn(|r| _mm256_and_si256(_mm256_srli_epi16(raw[r], 4), m4));
                    for c in 0..C {
                        // SAFETY: entries 8g + v and 8g + 4 + v of the column.
                        let alo = load(unsafe { aq[c].add(v * QK) });
                        // SAFETY: as above.
                        let ahi = load(unsafe { aq[c].add((v + 4) * QK) });
                        for r in 0..R {
                            if M == M_AVX2 {
                                let p = _mm256_add_epi16(
                                    _mm256_maddubs_epi16(lo[r], alo),
                                    _mm256_maddubs_epi16(hi[r], ahi),
                                );
                                s16[r][c] = _mm256_add_epi16(s16[r][c], p);
                            } else {
                                // SAFETY: mode M's features are enabled (contract).
                                isum[r][c] =
                                    unsafe { dp::<M>(dp::<M>(isum[r][c], lo[r], alo), hi[r], ahi) };
                            }
                        }
                    }
                }
                if M == M_AVX2 {
                    for r in 0..R {
                        for c in 0..C {
                            isum[r][c] = _mm256_madd_epi16(s16[r][c], ones);
                        }
                    }
                }
                if T == T_Q4_0 {
                    for c in 0..C {
                        // SAFETY: as above.
                        let qs = unsafe {
                            _mm256_loadu_si256(a[c].qsum.as_ptr().add(b0) as *const __m256i)
                        };
                        // Weights were taken as nibble = w + 8.
                        let corr = _mm256_slli_epi32(qs, 3);
                        for r in 0..R {
                            isum[r][c] = _mm256_sub_epi32(isum[r][c], corr);
                        }
                    }
                }
            }
            for c in 0..C {
                // SAFETY: b0 + GROUP <= col.d.len() and col.s.len() (checked above).
                let da = unsafe { _mm256_loadu_ps(a[c].d.as_ptr().add(b0)) };
                let sa = if T == T_Q4_1 {
                    // SAFETY: as above.
                    unsafe { _mm256_loadu_ps(a[c].s.as_ptr().add(b0)) }
                } else {
                    _mm256_setzero_ps()
                };
                for r in 0..R {
                    acc[r][c] = _mm256_add_ps(
                        acc[r][c],
                        _mm256_mul_ps(_mm256_mul_ps(dw[r], da), _mm256_cvtepi32_ps(isum[r][c])),
                    );
                    if T == T_Q4_1 {
                        macc[r][c] = _mm256_add_ps(macc[r][c], _mm256_mul_ps(mw[r], sa));
                    }
                }
            }
        }
        std::array::from_fn(|r| {
            std::array::from_fn(|c| {
                if T == T_Q4_1 {
                    hsum(acc[r][c]) + hsum(macc[r][c])
                } else {
                    hsum(acc[r][c])
                }
            })
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
    if kind != KernelKind::Scalar {
        // SAFETY: every non-scalar kind implies the CPU supports AVX2 (see `detect`).
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
    /// AVX2 + F16C (x86-64 only).
    Avx2,
    /// AVX2 with AVX512-VNNI/VL `vpdpbusd` on 256-bit registers (x86-64 only).
    Vnni512,
    /// AVX2 with AVX-VNNI `vpdpbusd` (x86-64 only).
    AvxVnni,
}

impl KernelKind {
    /// The fastest kernel family the running CPU supports. The environment
    /// variable `VERINFER_LLM_KERNELS` (`scalar`, `avx2`, `avxvnni`,
    /// `avx512vnni`) may select a slower supported family, for testing and
    /// benchmarks; results are identical either way.
    pub fn detect() -> Self {
        let all = Self::supported();
        let best = all.last().copied().unwrap_or(KernelKind::Scalar);
        match std::env::var("VERINFER_LLM_KERNELS").ok().as_deref() {
            Some(name) => all
                .iter()
                .copied()
                .find(|k| k.name() == name)
                .unwrap_or(best),
            None => best,
        }
    }

    /// Every family the running CPU supports, slowest first.
    pub fn supported() -> Vec<Self> {
        #[allow(unused_mut)]
        let mut v = vec![KernelKind::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if avx2::available() {
                v.push(KernelKind::Avx2);
            }
            if avx2::available_avxvnni() {
                v.push(KernelKind::AvxVnni);
            }
            if avx2::available_vnni512() {
                v.push(KernelKind::Vnni512);
            }
        }
        v
    }

    /// Short name (as accepted by `VERINFER_LLM_KERNELS`).
    pub fn name(self) -> &'static str {
        match self {
            KernelKind::Scalar => "scalar",
            KernelKind::Avx2 => "avx2",
            KernelKind::Vnni512 => "avx512vnni",
            KernelKind::AvxVnni => "avxvnni",
        }
    }
}

/// Bytes the SIMD kernels may read past the end of a packed row's data; the
/// row slices passed to [`dot_tile`] must extend this far.
pub(crate) const ROW_OVERREAD: usize = 32;
const _: () = assert!(ROW_OVERREAD <= quant::PACK_SLACK);
#[cfg(target_arch = "x86_64")]
const _: () = assert!(ROW_OVERREAD == avx2::OVERREAD);

/// Dot products of R packed integer weight rows (`nb` blocks of Q4_0, Q4_1
/// or Q8_0; each slice followed by [`ROW_OVERREAD`] readable bytes) with C
/// quantised columns: `out[r][c]` is `quant::dot_packed(rows[r], a[c])`.
#[inline]
pub(crate) fn dot_tile<const R: usize, const C: usize>(
    kind: KernelKind,
    ty: GgmlType,
    rows: [&[u8]; R],
    nb: usize,
    a: [QCol<'_>; C],
) -> [[f32; C]; R] {
    #[cfg(target_arch = "x86_64")]
    match kind {
        // SAFETY (all three): a non-scalar kind is only constructed by
        // `supported` after the matching `available*` check returned true.
        KernelKind::Avx2 => return unsafe { avx2::tile_avx2::<R, C>(ty, rows, nb, a) },
        KernelKind::Vnni512 => return unsafe { avx2::tile_vnni512::<R, C>(ty, rows, nb, a) },
        KernelKind::AvxVnni => return unsafe { avx2::tile_avxvnni::<R, C>(ty, rows, nb, a) },
        KernelKind::Scalar => {}
    }
    let _ = kind;
    std::array::from_fn(|r| std::array::from_fn(|c| quant::dot_packed(ty, rows[r], nb, a[c])))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{dequantize_row, dot_f32, quant_bytes, quantize_row, quantize_weights};

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
        qsum: Vec<i32>,
    }
    impl Col {
        fn new(x: &[f32]) -> Self {
            let nbp = quant::padded_blocks(x.len());
            let mut c = Col {
                qs: vec![[0; 32]; nbp],
                d: vec![0.0; nbp],
                s: vec![0.0; nbp],
                qsum: vec![0; nbp],
            };
            quantize_row(x, &mut c.qs, &mut c.d, &mut c.s, &mut c.qsum);
            c
        }
        fn q(&self) -> QCol<'_> {
            QCol {
                qs: &self.qs,
                d: &self.d,
                s: &self.s,
                qsum: &self.qsum,
            }
        }
        /// Quants of block `b` in natural order.
        fn block(&self, b: usize) -> [i8; 32] {
            std::array::from_fn(|j| self.qs.as_flattened()[quant::act_index(b, j)])
        }
    }

    /// The arithmetic contract evaluated on the file's block layout and the
    /// natural activation order (the pre-interleaving definition).
    fn reference(ty: GgmlType, raw: &[u8], x: &Col) -> f32 {
        let bs = ty.block_bytes();
        let nb = raw.len() / bs;
        let mut acc = [0f32; 8];
        let mut macc = [0f32; 8];
        for g in 0..nb.div_ceil(8) {
            for l in 0..8 {
                let b = 8 * g + l;
                if b >= nb {
                    acc[l] += 0.0;
                    macc[l] += 0.0;
                    continue;
                }
                let blk = &raw[b * bs..(b + 1) * bs];
                let a = x.block(b);
                let mut isum = 0i32;
                match ty {
                    GgmlType::Q8_0 => {
                        for j in 0..32 {
                            isum += i32::from(blk[2 + j] as i8) * i32::from(a[j]);
                        }
                    }
                    _ => {
                        let (h, off) = if ty == GgmlType::Q4_1 { (4, 0) } else { (2, 8) };
                        for j in 0..16 {
                            isum += (i32::from(blk[h + j] & 15) - off) * i32::from(a[j]);
                            isum += (i32::from(blk[h + j] >> 4) - off) * i32::from(a[j + 16]);
                        }
                    }
                }
                acc[l] += (quant::rd_f16(blk, 0) * x.d[b]) * isum as f32;
                if ty == GgmlType::Q4_1 {
                    macc[l] += quant::rd_f16(blk, 2) * x.s[b];
                }
            }
        }
        if ty == GgmlType::Q4_1 {
            quant::hsum8(&acc) + quant::hsum8(&macc)
        } else {
            quant::hsum8(&acc)
        }
    }

    /// Rows × columns through one kernel family and tile shape.
    fn run<const R: usize, const C: usize>(
        kind: KernelKind,
        ty: GgmlType,
        packed: &[u8],
        row_bytes: usize,
        nb: usize,
        xs: &[Col],
    ) -> Vec<Vec<f32>> {
        let rows = (packed.len() - quant::PACK_SLACK) / row_bytes;
        let mut out = vec![vec![f32::NAN; xs.len()]; rows];
        for r0 in (0..rows).step_by(R) {
            for c0 in (0..xs.len()).step_by(C) {
                if r0 + R > rows || c0 + C > xs.len() {
                    let [[v]] = dot_tile::<1, 1>(
                        kind,
                        ty,
                        [&packed[r0 * row_bytes..(r0 + 1) * row_bytes + ROW_OVERREAD]],
                        nb,
                        [xs[c0].q()],
                    );
                    out[r0][c0] = v;
                    // Fill the rest of this corner one by one.
                    for r in r0..rows.min(r0 + R) {
                        for c in c0..xs.len().min(c0 + C) {
                            let w = &packed[r * row_bytes..(r + 1) * row_bytes + ROW_OVERREAD];
                            out[r][c] = dot_tile::<1, 1>(kind, ty, [w], nb, [xs[c].q()])[0][0];
                        }
                    }
                    continue;
                }
                let ws: [&[u8]; R] = std::array::from_fn(|k| {
                    let r = r0 + k;
                    &packed[r * row_bytes..(r + 1) * row_bytes + ROW_OVERREAD]
                });
                let v = dot_tile::<R, C>(kind, ty, ws, nb, std::array::from_fn(|k| xs[c0 + k].q()));
                for r in 0..R {
                    for c in 0..C {
                        out[r0 + r][c0 + c] = v[r][c];
                    }
                }
            }
        }
        out
    }

    fn check_type(ty: GgmlType, cols: usize, extreme: bool) {
        let rows = 9;
        let nb = cols / 32;
        let mut w = quantize_weights(ty, &data(rows * cols, 1));
        let row_bytes = w.len() / rows;
        let mut xs: Vec<Col> = (0..7).map(|c| Col::new(&data(cols, 10 + c))).collect();
        if extreme {
            // Saturation limits: largest nibbles, Q8_0 bytes -128 and 127,
            // activations all +-127.
            let bs = ty.block_bytes();
            for (i, blk) in w.chunks_exact_mut(bs).enumerate() {
                let h = bs - quant_bytes(ty);
                for (j, q) in blk[h..].iter_mut().enumerate() {
                    *q = match ty {
                        GgmlType::Q8_0 if (i + j) % 3 == 0 => 0x80,
                        GgmlType::Q8_0 => 0x7f,
                        _ if i % 2 == 0 => 0xff,
                        _ => 0x00,
                    };
                }
            }
            let pos: Vec<f32> = (0..cols)
                .map(|j| if j % 5 == 0 { -1.0 } else { 1.0 })
                .collect();
            let neg: Vec<f32> = pos.iter().map(|v| -v).collect();
            xs[0] = Col::new(&pos);
            xs[1] = Col::new(&neg);
            xs[2] = Col::new(&vec![1.0; cols]);
            xs[3] = Col::new(&vec![-1.0; cols]);
        }
        let mut packed = vec![0xa5u8; w.len() + quant::PACK_SLACK];
        for r in 0..rows {
            let raw = &w[r * row_bytes..(r + 1) * row_bytes];
            quant::pack_row(ty, raw, &mut packed[r * row_bytes..(r + 1) * row_bytes]);
        }
        let want: Vec<Vec<f32>> = (0..rows)
            .map(|r| {
                let raw = &w[r * row_bytes..(r + 1) * row_bytes];
                xs.iter().map(|x| reference(ty, raw, x)).collect()
            })
            .collect();
        let bits = |m: &Vec<Vec<f32>>| -> Vec<Vec<u32>> {
            m.iter()
                .map(|r| r.iter().map(|v| v.to_bits()).collect())
                .collect()
        };
        for kind in KernelKind::supported() {
            let what = format!("{ty:?} cols {cols} extreme {extreme} {kind:?}");
            let got = [
                run::<1, 1>(kind, ty, &packed, row_bytes, nb, &xs),
                run::<4, 4>(kind, ty, &packed, row_bytes, nb, &xs),
                run::<2, 3>(kind, ty, &packed, row_bytes, nb, &xs),
                run::<4, 1>(kind, ty, &packed, row_bytes, nb, &xs),
                run::<1, 8>(kind, ty, &packed, row_bytes, nb, &xs),
            ];
            for (i, g) in got.iter().enumerate() {
                assert_eq!(bits(&want), bits(g), "{what} shape {i}");
            }
        }
        if !extreme {
            // And close to the float reference.
            let raw = &w[..row_bytes];
            let mut wd = vec![0f32; cols];
            dequantize_row(ty, raw, &mut wd);
            let x0 = data(cols, 10);
            let exact = dot_f32(&wd, &x0);
            let scale: f32 = wd.iter().zip(&x0).map(|(a, b)| (a * b).abs()).sum();
            assert!(
                (exact - want[0][0]).abs() < 0.05 * scale,
                "{exact} vs {}",
                want[0][0]
            );
        }
    }

    #[test]
    fn simd_and_scalar_kernels_are_bit_identical() {
        eprintln!("kernel families: {:?}", KernelKind::supported());
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            for cols in [32, 256, 576, 1536, 96, 160, 320] {
                check_type(ty, cols, false);
                check_type(ty, cols, true);
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
