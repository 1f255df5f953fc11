//! Integer matrix products of the k-quants (Q4_K, Q5_K, Q6_K): their
//! panels ([`pack_kmatrix`]), the portable definition ([`dot_kpanel`]) and
//! the kernels of every family ([`matmul_kpanels`]), which give its bits.
//!
//! The arithmetic is the contract of [`crate::quant`] (`arith-v3`): exact
//! integer sums per block of 32 values, then fused multiply-adds in block
//! order, one row per lane. A k-quant row is cut into the activation's
//! blocks of 32; the per-block weight scales are products of the
//! super-block's f16 `d` (or `dmin`) and a 6- or 8-bit integer scale, exact
//! in f32, formed in the kernel from the bytes of the panel.
//!
//! A panel super-block holds [`PANEL`] rows × 256 values ([`kpanel_block`]):
//! the rows' f16 `d` at 0, their f16 `dmin` at 32 (Q4_K, Q5_K), the integer
//! scales as bytes at 64 (scale `g`'s sixteen rows at `64 + 16g`: eight
//! 6-bit scales, one per 32 values, or Q6_K's sixteen signed ones, one per
//! 16), the Q4_K/Q5_K minimums at 192 likewise, and the quants from 320 in
//! 64-byte chunks of four bytes per row (row `r` at `4r`):
//! * Q4_K: group `g` (values `64g..64g + 64`) at `320 + 512g`, chunk `v` the
//!   file's quant bytes `32g + 4v..+4`: low nibbles are values `4v..4v + 4`
//!   of sub-block `2g`, high nibbles those of sub-block `2g + 1`;
//! * Q5_K: sub-block `j` at `320 + 512j`, chunk `v` its values `4v..4v + 4`
//!   as bytes 0..31 (1.45 times the file's bytes: simple, and no model this
//!   engine targets has many Q5_K matrices);
//! * Q6_K: half `h` (values `128h..`) at `320 + 1536h`, per `v` three chunks
//!   of the file's bytes `4v..4v + 4`: low quants `ql[l]`, `ql[32 + l]` and
//!   high bits `qh[l]` (the file's layout, so sub-block `4h + k` reads its
//!   dword `v` from one nibble of a quant chunk and two bits of the third).
//!
//! The compact Q4_K and Q6_K chunks keep decode (which streams the weights
//! once per token) at the file's size plus 3 % and 0 %; the kernels unpack
//! them in registers.
#![allow(unsafe_code)]

use crate::gguf::GgmlType;
use crate::quant::{rd_f16, scale_min_k4, Packed, QCol, PANEL, QK};
use crate::simd::{assert_cols_cover, Dest, KernelKind, COL_TILE_BYTES, PANEL_CHUNK_BYTES};

/// Values per k-quant super-block.
pub(crate) const QK_K: usize = 256;

/// Offsets of the integer scales, the minimums and the quants in a panel
/// super-block.
const SCALES: usize = 64;
const MINS: usize = 192;
const QUANTS: usize = 320;

/// Whether `ty` is a k-quant (runs on these kernels).
pub(crate) const fn is_kquant(ty: GgmlType) -> bool {
    matches!(ty, GgmlType::Q4K | GgmlType::Q5K | GgmlType::Q6K)
}

/// Bytes of one panel super-block of `ty` (a multiple of 64: with
/// [`Packed`]'s alignment every chunk is one cache line).
pub(crate) const fn kpanel_block(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q4K => QUANTS + 2048,
        GgmlType::Q5K => QUANTS + 4096,
        _ => QUANTS + 3072,
    }
}

/// Repack a k-quant matrix (`rows` rows of `nsb` super-blocks, in the
/// file's layout) into panels (module docs). Rows past `rows` in the last
/// panel are zero (scales 0, so their products are 0).
pub(crate) fn pack_kmatrix(ty: GgmlType, src: &[u8], rows: usize, nsb: usize) -> Packed {
    let (bs, kb) = (ty.block_bytes(), kpanel_block(ty));
    let mut packed = Packed::zeroed(rows.div_ceil(PANEL) * nsb * kb);
    let dst = packed.bytes_mut();
    for (r, row) in src.chunks_exact(nsb * bs).take(rows).enumerate() {
        let (p, lane) = (r / PANEL, r % PANEL);
        for (k, blk) in row.chunks_exact(bs).enumerate() {
            let o = &mut dst[(p * nsb + k) * kb..(p * nsb + k + 1) * kb];
            let q = |i: usize| QUANTS + 64 * (i / 4) + 4 * lane + i % 4;
            match ty {
                GgmlType::Q6K => {
                    o[2 * lane..2 * lane + 2].copy_from_slice(&blk[208..210]);
                    for g in 0..16 {
                        o[SCALES + 16 * g + lane] = blk[192 + g];
                    }
                    for h in 0..2 {
                        for i in 0..32 {
                            let at = q(i) + 1536 * h + 128 * (i / 4);
                            o[at] = blk[64 * h + i];
                            o[at + 64] = blk[64 * h + 32 + i];
                            o[at + 128] = blk[128 + 32 * h + i];
                        }
                    }
                }
                _ => {
                    o[2 * lane..2 * lane + 2].copy_from_slice(&blk[0..2]);
                    o[32 + 2 * lane..32 + 2 * lane + 2].copy_from_slice(&blk[2..4]);
                    for j in 0..8 {
                        let (sc, m) = scale_min_k4(j, &blk[4..16]);
                        o[SCALES + 16 * j + lane] = sc;
                        o[MINS + 16 * j + lane] = m;
                    }
                    if ty == GgmlType::Q4K {
                        for (i, &b) in blk[16..144].iter().enumerate() {
                            o[q(i % 32) + 512 * (i / 32)] = b;
                        }
                    } else {
                        let (qh, qs) = (&blk[16..48], &blk[48..176]);
                        for j in 0..8 {
                            for l in 0..32 {
                                let nib = qs[32 * (j / 2) + l] >> (4 * (j % 2)) & 0x0f;
                                let hi = (qh[l] >> j) & 1;
                                o[q(l) + 512 * j] = nib | hi << 4;
                            }
                        }
                    }
                }
            }
        }
    }
    packed
}

/// Quant `i` (0..32) of sub-block `j` (0..8) of row `lane` in the panel
/// super-block `sb`, as stored (Q6_K: plus 32).
#[inline]
fn quant(ty: GgmlType, sb: &[u8], lane: usize, j: usize, i: usize) -> i32 {
    let at = 64 * (i / 4) + 4 * lane + i % 4;
    i32::from(match ty {
        GgmlType::Q4K => sb[QUANTS + 512 * (j / 2) + at] >> (4 * (j % 2)) & 0x0f,
        GgmlType::Q5K => sb[QUANTS + 512 * j + at],
        _ => {
            let base = QUANTS + 1536 * (j / 4) + 128 * (i / 4) + at;
            let (a, b, h) = (sb[base], sb[base + 64], sb[base + 128]);
            match j % 4 {
                0 => a & 0x0f | (h & 3) << 4,
                1 => b & 0x0f | (h >> 2 & 3) << 4,
                2 => a >> 4 | (h >> 4 & 3) << 4,
                _ => b >> 4 | (h >> 6) << 4,
            }
        }
    })
}

/// Portable kernel: one k-quant panel (`nsb` super-blocks) · one quantised
/// column, all [`PANEL`] rows. Defines the arithmetic the SIMD kernels
/// reproduce: for row `r` and block `b` (super-block `b / 8`, sub-block
/// `j = b % 8`), with `a` the column's quants, `da` its scale and `s` its
/// exact sum,
/// * Q4_K, Q5_K: `isum = Σ q·a` (q unsigned), `dw = d·sc_j`, `mn = dmin·m_j`
///   (exact), `acc = fma(dw·da, isum, acc)`, then
///   `acc = fma(−(mn·da), qsum, acc)` with `qsum = Σ a`;
/// * Q6_K: `lo`, `hi` = `Σ (q − 32)·a` over the block's two halves of 16,
///   `isum = sc_2j·lo + sc_2j+1·hi` (exact, below 2^24),
///   `acc = fma(d·da, isum, acc)`.
pub(crate) fn dot_kpanel(ty: GgmlType, panel: &[u8], nsb: usize, a: QCol<'_>) -> [f32; PANEL] {
    let kb = kpanel_block(ty);
    std::array::from_fn(|lane| {
        let mut acc = 0f32;
        for (k, sb) in panel.chunks_exact(kb).take(nsb).enumerate() {
            let d = rd_f16(sb, 2 * lane);
            for j in 0..8 {
                let b = 8 * k + j;
                let x = &a.qs[b];
                let off = if ty == GgmlType::Q6K { 32 } else { 0 };
                let half = |h: usize| -> i32 {
                    (16 * h..16 * h + 16)
                        .map(|i| (quant(ty, sb, lane, j, i) - off) * i32::from(x[i]))
                        .sum()
                };
                if ty == GgmlType::Q6K {
                    let sc = |g: usize| i32::from(sb[SCALES + 16 * g + lane] as i8);
                    let isum = sc(2 * j) * half(0) + sc(2 * j + 1) * half(1);
                    acc = (d * a.d[b]).mul_add(isum as f32, acc);
                } else {
                    let dw = d * f32::from(sb[SCALES + 16 * j + lane]);
                    let mn = rd_f16(sb, 32 + 2 * lane) * f32::from(sb[MINS + 16 * j + lane]);
                    acc = (dw * a.d[b]).mul_add((half(0) + half(1)) as f32, acc);
                    acc = (-(mn * a.d[b])).mul_add(a.qsum[b] as f32, acc);
                }
            }
        }
        acc
    })
}

/// Integer matrix product of panels `p0..p1` of a packed k-quant matrix
/// (`nsb` super-blocks per row) with the quantised columns `cols`, results
/// to `dest`: every value is [`dot_kpanel`]'s. The rows of these panels
/// must be written by this caller alone.
///
/// # Panics
/// If the matrix, a column or `dest` is too short.
pub(crate) fn matmul_kpanels(
    kind: KernelKind,
    ty: GgmlType,
    packed: &[u8],
    nsb: usize,
    (p0, p1): (usize, usize),
    cols: &[QCol<'_>],
    dest: &Dest<'_, '_>,
) {
    assert!(is_kquant(ty), "{ty:?} is not a k-quant");
    let kb = kpanel_block(ty);
    assert!(packed.len() >= p1 * nsb * kb, "packed matrix too short");
    assert!(p1 <= dest.rows.div_ceil(PANEL), "panel out of range");
    let nb = nsb * QK_K / QK;
    assert_cols_cover(cols, nb);
    let chunk = (PANEL_CHUNK_BYTES / (nsb * kb).max(1)).max(1);
    let tile = (COL_TILE_BYTES / (nb * (QK + 12)).max(1) / 4 * 4).max(4);
    let mut q0 = p0;
    while q0 < p1 {
        let q1 = (q0 + chunk).min(p1);
        let mut t0 = 0;
        while t0 < cols.len() {
            let t1 = (t0 + tile).min(cols.len());
            run(kind, ty, packed, nsb, (q0, q1), &cols[t0..t1], t0, dest);
            t0 = t1;
        }
        q0 = q1;
    }
}

/// One chunk of panels × one tile of columns (from column `c0`) in the
/// family `kind`; the lengths were checked by [`matmul_kpanels`].
#[allow(clippy::too_many_arguments)]
fn run(
    kind: KernelKind,
    ty: GgmlType,
    packed: &[u8],
    nsb: usize,
    (p0, p1): (usize, usize),
    cols: &[QCol<'_>],
    c0: usize,
    dest: &Dest<'_, '_>,
) {
    #[cfg(target_arch = "x86_64")]
    match kind {
        // SAFETY (all three): a non-scalar kind exists only on a CPU with
        // its features (`KernelKind::supported`); the lengths were checked.
        KernelKind::Vnni512 => {
            // SAFETY: see above.
            return unsafe { x86::run_zmm(ty, packed, nsb, (p0, p1), cols, c0, dest) };
        }
        KernelKind::AvxVnni => {
            // SAFETY: see above.
            return unsafe { x86::run_avxvnni(ty, packed, nsb, (p0, p1), cols, c0, dest) };
        }
        KernelKind::Avx2 => {
            // SAFETY: see above.
            return unsafe { x86::run_avx2(ty, packed, nsb, (p0, p1), cols, c0, dest) };
        }
        KernelKind::Scalar => {}
    }
    let _ = kind;
    let stride = nsb * kpanel_block(ty);
    for p in p0..p1 {
        let panel = &packed[p * stride..(p + 1) * stride];
        for (j, col) in cols.iter().enumerate() {
            let v = dot_kpanel(ty, panel, nsb, *col);
            // SAFETY: the rows are this caller's.
            unsafe { dest.put(p, c0 + j, &v) };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{kpanel_block, Dest, GgmlType, QCol, MINS, PANEL, QUANTS, SCALES};

    /// The vector operations of a kernel family on sixteen 32-bit lanes
    /// (one row of a panel each): one 512-bit register or two 256-bit
    /// ones. Every operation is exact or one IEEE rounding per lane, so
    /// every implementation gives the same bits.
    ///
    /// # Safety
    /// Every method needs the CPU features of its family, and pointers to
    /// the bytes it reads (64 for a chunk, 32 for halves, 16 for bytes).
    trait Family {
        type I: Copy;
        type F: Copy;
        unsafe fn izero() -> Self::I;
        unsafe fn fzero() -> Self::F;
        /// The low nibbles of a chunk.
        unsafe fn lo4(p: *const u8) -> Self::I;
        /// The high nibbles of a chunk.
        unsafe fn hi4(p: *const u8) -> Self::I;
        /// A chunk of bytes.
        unsafe fn bytes(p: *const u8) -> Self::I;
        /// Q6_K sub-block `K` (of four in a half): the nibbles of the
        /// quant chunk `q` (low for `K` 0 and 1, high for 2 and 3) and bits
        /// `2K..2K + 2` of the high-bit chunk `h` above them.
        unsafe fn q6<const K: u32>(q: *const u8, h: *const u8) -> Self::I;
        /// `acc` plus, per lane, the four products of the unsigned bytes
        /// of `w` with the signed bytes of `a`.
        unsafe fn dot(acc: Self::I, w: Self::I, a: i32) -> Self::I;
        unsafe fn add(a: Self::I, b: Self::I) -> Self::I;
        /// `(i - corr) * sc` with `sc` sixteen signed bytes.
        unsafe fn scale(i: Self::I, corr: i32, sc: *const u8) -> Self::I;
        unsafe fn cvt(i: Self::I) -> Self::F;
        /// Sixteen halves.
        unsafe fn f16(p: *const u8) -> Self::F;
        /// Sixteen unsigned bytes.
        unsafe fn u8f(p: *const u8) -> Self::F;
        unsafe fn splat(x: f32) -> Self::F;
        unsafe fn mul(a: Self::F, b: Self::F) -> Self::F;
        /// `a * b + c`, one rounding.
        unsafe fn fma(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
        /// `c - a * b`, one rounding.
        unsafe fn fnma(a: Self::F, b: Self::F, c: Self::F) -> Self::F;
        /// The first `len` (at most 16) lanes to `p`.
        unsafe fn store(x: Self::F, p: *mut f32, len: usize);
    }

    /// AVX-512 with VNNI.
    struct Zmm;

    // SAFETY (all methods): forwarded trait contract.
    impl Family for Zmm {
        type I = __m512i;
        type F = __m512;
        #[inline(always)]
        unsafe fn izero() -> __m512i {
            _mm512_setzero_si512()
        }
        #[inline(always)]
        unsafe fn fzero() -> __m512 {
            _mm512_setzero_ps()
        }
        #[inline(always)]
        unsafe fn lo4(p: *const u8) -> __m512i {
            // SAFETY: trait contract.
            unsafe { _mm512_and_si512(_mm512_loadu_si512(p.cast()), _mm512_set1_epi8(0x0f)) }
        }
        #[inline(always)]
        unsafe fn hi4(p: *const u8) -> __m512i {
            // SAFETY: trait contract.
            unsafe {
                let raw = _mm512_loadu_si512(p.cast());
                _mm512_and_si512(_mm512_srli_epi16::<4>(raw), _mm512_set1_epi8(0x0f))
            }
        }
        #[inline(always)]
        unsafe fn bytes(p: *const u8) -> __m512i {
            // SAFETY: trait contract.
            unsafe { _mm512_loadu_si512(p.cast()) }
        }
        #[inline(always)]
        unsafe fn q6<const K: u32>(q: *const u8, h: *const u8) -> __m512i {
            // SAFETY: trait contract.
            unsafe {
                let q = if K < 2 { Self::lo4(q) } else { Self::hi4(q) };
                let h = _mm512_loadu_si512(h.cast());
                // Bits 2K, 2K + 1 of each byte to bits 4, 5 (16-bit shifts:
                // the mask drops what crosses between bytes).
                let h = match K {
                    0 => _mm512_slli_epi16::<4>(h),
                    1 => _mm512_slli_epi16::<2>(h),
                    2 => h,
                    _ => _mm512_srli_epi16::<2>(h),
                };
                _mm512_or_si512(q, _mm512_and_si512(h, _mm512_set1_epi8(0x30)))
            }
        }
        #[inline(always)]
        unsafe fn dot(acc: __m512i, w: __m512i, a: i32) -> __m512i {
            _mm512_dpbusd_epi32(acc, w, _mm512_set1_epi32(a))
        }
        #[inline(always)]
        unsafe fn add(a: __m512i, b: __m512i) -> __m512i {
            _mm512_add_epi32(a, b)
        }
        #[inline(always)]
        unsafe fn scale(i: __m512i, corr: i32, sc: *const u8) -> __m512i {
            // SAFETY: trait contract.
            unsafe {
                let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(sc.cast()));
                _mm512_mullo_epi32(_mm512_sub_epi32(i, _mm512_set1_epi32(corr)), sc)
            }
        }
        #[inline(always)]
        unsafe fn cvt(i: __m512i) -> __m512 {
            _mm512_cvtepi32_ps(i)
        }
        #[inline(always)]
        unsafe fn f16(p: *const u8) -> __m512 {
            // SAFETY: trait contract.
            unsafe { _mm512_cvtph_ps(_mm256_loadu_si256(p.cast())) }
        }
        #[inline(always)]
        unsafe fn u8f(p: *const u8) -> __m512 {
            // SAFETY: trait contract.
            unsafe { _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128(p.cast()))) }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> __m512 {
            _mm512_set1_ps(x)
        }
        #[inline(always)]
        unsafe fn mul(a: __m512, b: __m512) -> __m512 {
            _mm512_mul_ps(a, b)
        }
        #[inline(always)]
        unsafe fn fma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn fnma(a: __m512, b: __m512, c: __m512) -> __m512 {
            _mm512_fnmadd_ps(a, b, c)
        }
        #[inline(always)]
        unsafe fn store(x: __m512, p: *mut f32, len: usize) {
            // SAFETY: trait contract.
            unsafe {
                if len == PANEL {
                    _mm512_storeu_ps(p, x);
                } else {
                    _mm512_mask_storeu_ps(p, (1u16 << len) - 1, x);
                }
            }
        }
    }

    /// Two 256-bit registers (rows 0..8 and 8..16): AVX-VNNI `vpdpbusd`
    /// when `VNNI`, else AVX2 `vpmaddubsw` + `vpmaddwd` (exact here: a
    /// pair of products is at most 2 · 63 · 127 in magnitude).
    struct Ymm<const VNNI: bool>;

    // SAFETY (all methods): forwarded trait contract.
    impl<const VNNI: bool> Family for Ymm<VNNI> {
        type I = [__m256i; 2];
        type F = [__m256; 2];
        #[inline(always)]
        unsafe fn izero() -> [__m256i; 2] {
            [_mm256_setzero_si256(); 2]
        }
        #[inline(always)]
        unsafe fn fzero() -> [__m256; 2] {
            [_mm256_setzero_ps(); 2]
        }
        #[inline(always)]
        unsafe fn lo4(p: *const u8) -> [__m256i; 2] {
            // SAFETY: trait contract.
            unsafe {
                let m = _mm256_set1_epi8(0x0f);
                let r = Self::bytes(p);
                [_mm256_and_si256(r[0], m), _mm256_and_si256(r[1], m)]
            }
        }
        #[inline(always)]
        unsafe fn hi4(p: *const u8) -> [__m256i; 2] {
            // SAFETY: trait contract.
            unsafe {
                let m = _mm256_set1_epi8(0x0f);
                let r = Self::bytes(p);
                [
                    _mm256_and_si256(_mm256_srli_epi16::<4>(r[0]), m),
                    _mm256_and_si256(_mm256_srli_epi16::<4>(r[1]), m),
                ]
            }
        }
        #[inline(always)]
        unsafe fn bytes(p: *const u8) -> [__m256i; 2] {
            // SAFETY: trait contract.
            unsafe {
                [
                    _mm256_loadu_si256(p.cast()),
                    _mm256_loadu_si256(p.add(32).cast()),
                ]
            }
        }
        #[inline(always)]
        unsafe fn q6<const K: u32>(q: *const u8, h: *const u8) -> [__m256i; 2] {
            // SAFETY: trait contract.
            unsafe {
                let q = if K < 2 { Self::lo4(q) } else { Self::hi4(q) };
                let h = Self::bytes(h);
                let m = _mm256_set1_epi8(0x30);
                // As for `Zmm::q6`. (No closures in these kernels: a
                // closure does not inherit the target features.)
                let h = match K {
                    0 => [_mm256_slli_epi16::<4>(h[0]), _mm256_slli_epi16::<4>(h[1])],
                    1 => [_mm256_slli_epi16::<2>(h[0]), _mm256_slli_epi16::<2>(h[1])],
                    2 => h,
                    _ => [_mm256_srli_epi16::<2>(h[0]), _mm256_srli_epi16::<2>(h[1])],
                };
                [
                    _mm256_or_si256(q[0], _mm256_and_si256(h[0], m)),
                    _mm256_or_si256(q[1], _mm256_and_si256(h[1], m)),
                ]
            }
        }
        #[inline(always)]
        unsafe fn dot(acc: [__m256i; 2], w: [__m256i; 2], a: i32) -> [__m256i; 2] {
            let a = _mm256_set1_epi32(a);
            if VNNI {
                [
                    _mm256_dpbusd_avx_epi32(acc[0], w[0], a),
                    _mm256_dpbusd_avx_epi32(acc[1], w[1], a),
                ]
            } else {
                let ones = _mm256_set1_epi16(1);
                let d0 = _mm256_madd_epi16(_mm256_maddubs_epi16(w[0], a), ones);
                let d1 = _mm256_madd_epi16(_mm256_maddubs_epi16(w[1], a), ones);
                [_mm256_add_epi32(acc[0], d0), _mm256_add_epi32(acc[1], d1)]
            }
        }
        #[inline(always)]
        unsafe fn add(a: [__m256i; 2], b: [__m256i; 2]) -> [__m256i; 2] {
            [_mm256_add_epi32(a[0], b[0]), _mm256_add_epi32(a[1], b[1])]
        }
        #[inline(always)]
        unsafe fn scale(i: [__m256i; 2], corr: i32, sc: *const u8) -> [__m256i; 2] {
            // SAFETY: trait contract.
            unsafe {
                let c = _mm256_set1_epi32(corr);
                let s0 = _mm256_cvtepi8_epi32(_mm_loadl_epi64(sc.cast()));
                let s1 = _mm256_cvtepi8_epi32(_mm_loadl_epi64(sc.add(8).cast()));
                [
                    _mm256_mullo_epi32(_mm256_sub_epi32(i[0], c), s0),
                    _mm256_mullo_epi32(_mm256_sub_epi32(i[1], c), s1),
                ]
            }
        }
        #[inline(always)]
        unsafe fn cvt(i: [__m256i; 2]) -> [__m256; 2] {
            [_mm256_cvtepi32_ps(i[0]), _mm256_cvtepi32_ps(i[1])]
        }
        #[inline(always)]
        unsafe fn f16(p: *const u8) -> [__m256; 2] {
            // SAFETY: trait contract.
            unsafe {
                [
                    _mm256_cvtph_ps(_mm_loadu_si128(p.cast())),
                    _mm256_cvtph_ps(_mm_loadu_si128(p.add(16).cast())),
                ]
            }
        }
        #[inline(always)]
        unsafe fn u8f(p: *const u8) -> [__m256; 2] {
            // SAFETY: trait contract.
            unsafe {
                let b0 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.cast()));
                let b1 = _mm256_cvtepu8_epi32(_mm_loadl_epi64(p.add(8).cast()));
                [_mm256_cvtepi32_ps(b0), _mm256_cvtepi32_ps(b1)]
            }
        }
        #[inline(always)]
        unsafe fn splat(x: f32) -> [__m256; 2] {
            [_mm256_set1_ps(x); 2]
        }
        #[inline(always)]
        unsafe fn mul(a: [__m256; 2], b: [__m256; 2]) -> [__m256; 2] {
            [_mm256_mul_ps(a[0], b[0]), _mm256_mul_ps(a[1], b[1])]
        }
        #[inline(always)]
        unsafe fn fma(a: [__m256; 2], b: [__m256; 2], c: [__m256; 2]) -> [__m256; 2] {
            [
                _mm256_fmadd_ps(a[0], b[0], c[0]),
                _mm256_fmadd_ps(a[1], b[1], c[1]),
            ]
        }
        #[inline(always)]
        unsafe fn fnma(a: [__m256; 2], b: [__m256; 2], c: [__m256; 2]) -> [__m256; 2] {
            [
                _mm256_fnmadd_ps(a[0], b[0], c[0]),
                _mm256_fnmadd_ps(a[1], b[1], c[1]),
            ]
        }
        #[inline(always)]
        unsafe fn store(x: [__m256; 2], p: *mut f32, len: usize) {
            // SAFETY: trait contract.
            unsafe {
                if len == PANEL {
                    _mm256_storeu_ps(p, x[0]);
                    _mm256_storeu_ps(p.add(8), x[1]);
                } else {
                    let mut o = [0f32; PANEL];
                    _mm256_storeu_ps(o.as_mut_ptr(), x[0]);
                    _mm256_storeu_ps(o.as_mut_ptr().add(8), x[1]);
                    std::ptr::copy_nonoverlapping(o.as_ptr(), p, len);
                }
            }
        }
    }

    const T_Q4K: u8 = 0;
    const T_Q5K: u8 = 1;
    const T_Q6K: u8 = 2;

    /// The format of the kernel constant `t`.
    const fn type_of(t: u8) -> GgmlType {
        match t {
            T_Q4K => GgmlType::Q4K,
            T_Q5K => GgmlType::Q5K,
            _ => GgmlType::Q6K,
        }
    }

    /// Activation dword `v` (bytes `4v..4v + 4`) of block `b` of column `a`.
    ///
    /// # Safety
    /// `b < a.qs.len()` and `v < 8`.
    #[inline(always)]
    unsafe fn act_dword(a: &QCol<'_>, b: usize, v: usize) -> i32 {
        // SAFETY: block b exists (contract), and 4v + 4 <= 32.
        unsafe { std::ptr::read_unaligned(a.qs.as_ptr().add(b).cast::<i32>().add(v)) }
    }

    /// One panel × `C` columns: [`super::dot_kpanel`]'s operations, the
    /// integer sums of each block split in two halves (dwords 0..4 and
    /// 4..8: Q6_K's two scales, and two shorter dependency chains).
    ///
    /// # Safety
    /// The family's features; `panel` holds `nsb` super-blocks, every
    /// column `8 nsb` blocks, and each `dst` pointer room for its count.
    #[allow(clippy::needless_range_loop)]
    #[inline(always)]
    unsafe fn tile<V: Family, const T: u8, const C: usize>(
        panel: *const u8,
        nsb: usize,
        a: [&QCol<'_>; C],
        dst: [(*mut f32, usize); C],
    ) {
        let kb = kpanel_block(type_of(T));
        // SAFETY: every offset below lies in super-block k of the panel,
        // and every block b in the columns (contract).
        unsafe {
            let mut acc = [V::fzero(); C];
            for k in 0..nsb {
                let sb = panel.add(k * kb);
                let d = V::f16(sb);
                let dmin = if T == T_Q6K { d } else { V::f16(sb.add(32)) };
                for j in 0..8 {
                    let b = 8 * k + j;
                    let mut sums = [[V::izero(); 2]; C];
                    for v in 0..8 {
                        let w = match T {
                            T_Q4K => {
                                let p = sb.add(QUANTS + 512 * (j / 2) + 64 * v);
                                if j % 2 == 0 {
                                    V::lo4(p)
                                } else {
                                    V::hi4(p)
                                }
                            }
                            T_Q5K => V::bytes(sb.add(QUANTS + 512 * j + 64 * v)),
                            _ => {
                                let p = sb.add(QUANTS + 1536 * (j / 4) + 192 * v);
                                let h = p.add(128);
                                match j % 4 {
                                    0 => V::q6::<0>(p, h),
                                    1 => V::q6::<1>(p.add(64), h),
                                    2 => V::q6::<2>(p, h),
                                    _ => V::q6::<3>(p.add(64), h),
                                }
                            }
                        };
                        for c in 0..C {
                            sums[c][v / 4] = V::dot(sums[c][v / 4], w, act_dword(a[c], b, v));
                        }
                    }
                    if T == T_Q6K {
                        let sc = sb.add(SCALES + 32 * j);
                        for c in 0..C {
                            // The stored quants are q + 32: take 32 times
                            // each half's activation sum off.
                            let q = a[c].qs.get_unchecked(b);
                            let lo: i32 = q[..16].iter().map(|&x| i32::from(x)).sum();
                            let hi = *a[c].qsum.get_unchecked(b) - lo;
                            let i = V::add(
                                V::scale(sums[c][0], 32 * lo, sc),
                                V::scale(sums[c][1], 32 * hi, sc.add(16)),
                            );
                            let da = V::splat(*a[c].d.get_unchecked(b));
                            acc[c] = V::fma(V::mul(d, da), V::cvt(i), acc[c]);
                        }
                    } else {
                        let dw = V::mul(d, V::u8f(sb.add(SCALES + 16 * j)));
                        let mn = V::mul(dmin, V::u8f(sb.add(MINS + 16 * j)));
                        for c in 0..C {
                            let i = V::add(sums[c][0], sums[c][1]);
                            let da = V::splat(*a[c].d.get_unchecked(b));
                            let x = V::fma(V::mul(dw, da), V::cvt(i), acc[c]);
                            let qsum = V::splat(*a[c].qsum.get_unchecked(b) as f32);
                            acc[c] = V::fnma(V::mul(mn, da), qsum, x);
                        }
                    }
                }
            }
            for c in 0..C {
                V::store(acc[c], dst[c].0, dst[c].1);
            }
        }
    }

    /// Panels `p0..p1` × `cols` in tiles of `C` columns, then single ones.
    ///
    /// # Safety
    /// As for [`tile`]; the lengths were checked by `matmul_kpanels`.
    #[inline(always)]
    unsafe fn drive<V: Family, const T: u8, const C: usize>(
        packed: &[u8],
        nsb: usize,
        (p0, p1): (usize, usize),
        cols: &[QCol<'_>],
        c0: usize,
        dest: &Dest<'_, '_>,
    ) {
        let stride = nsb * kpanel_block(type_of(T));
        // SAFETY: forwarded contract; `Dest::at` gives each tile its rows.
        unsafe {
            for p in p0..p1 {
                let panel = packed.as_ptr().add(p * stride);
                let mut c = 0;
                while c + C <= cols.len() {
                    let cs: [usize; C] = std::array::from_fn(|k| c + k);
                    let dst = cs.map(|k| dest.at(p, c0 + k));
                    tile::<V, T, C>(panel, nsb, cs.map(|k| &cols[k]), dst);
                    c += C;
                }
                for (k, col) in cols.iter().enumerate().skip(c) {
                    tile::<V, T, 1>(panel, nsb, [col], [dest.at(p, c0 + k)]);
                }
            }
        }
    }

    macro_rules! families {
        ($($name:ident, $feat:literal, $v:ty, $c:literal;)*) => {$(
            /// [`super::run`] in one family.
            ///
            /// # Safety
            /// The CPU has the features; `matmul_kpanels` checked the lengths.
            #[allow(clippy::too_many_arguments)]
            #[target_feature(enable = $feat)]
            pub(super) unsafe fn $name(
                ty: GgmlType,
                packed: &[u8],
                nsb: usize,
                panels: (usize, usize),
                cols: &[QCol<'_>],
                c0: usize,
                dest: &Dest<'_, '_>,
            ) {
                // SAFETY: forwarded contract.
                unsafe {
                    match ty {
                        GgmlType::Q4K => drive::<$v, T_Q4K, $c>(packed, nsb, panels, cols, c0, dest),
                        GgmlType::Q5K => drive::<$v, T_Q5K, $c>(packed, nsb, panels, cols, c0, dest),
                        _ => drive::<$v, T_Q6K, $c>(packed, nsb, panels, cols, c0, dest),
                    }
                }
            }
        )*};
    }
    families! {
        run_zmm, "avx2,fma,f16c,avx512f,avx512bw,avx512vl,avx512vnni", Zmm, 4;
        run_avxvnni, "avx2,fma,f16c,avxvnni", Ymm<true>, 2;
        run_avx2, "avx2,fma,f16c", Ymm<false>, 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::SharedOut;
    use crate::quant::{dequantize_row, dot_f32, f32_to_f16, quantize_row, quantize_weights};
    use crate::testing::Rng;

    const KQUANTS: [GgmlType; 3] = [GgmlType::Q4K, GgmlType::Q5K, GgmlType::Q6K];

    struct Col {
        qs: Vec<[i8; QK]>,
        d: Vec<f32>,
        s: Vec<f32>,
        qsum: Vec<i32>,
    }
    impl Col {
        fn new(x: &[f32]) -> Self {
            let nb = x.len() / QK;
            let mut c = Col {
                qs: vec![[0; QK]; nb],
                d: vec![0.0; nb],
                s: vec![0.0; nb],
                qsum: vec![0; nb],
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
    }

    /// The contract evaluated on the file's block layout (the definition
    /// before repacking): value `i` of a super-block and its sub-block's
    /// integer scale (and minimum), decoded straight from the file.
    fn reference(ty: GgmlType, row: &[u8], x: &Col) -> f32 {
        let mut acc = 0f32;
        for (k, blk) in row.chunks_exact(ty.block_bytes()).enumerate() {
            for j in 0..8 {
                let b = 8 * k + j;
                let a = &x.qs[b];
                if ty == GgmlType::Q6K {
                    let mut half = [0i32; 2];
                    for l in 0..32 {
                        let i = 32 * j + l;
                        let (h, kk) = (i / 128, i % 128 / 32);
                        let ql = blk[64 * h + 32 * (kk % 2) + l] >> (4 * (kk / 2)) & 0x0f;
                        let qh = blk[128 + 32 * h + l] >> (2 * kk) & 3;
                        let q = i32::from(ql | qh << 4) - 32;
                        half[l / 16] += q * i32::from(a[l]);
                    }
                    let sc = |g: usize| i32::from(blk[192 + g] as i8);
                    let isum = sc(2 * j) * half[0] + sc(2 * j + 1) * half[1];
                    acc = (rd_f16(blk, 208) * x.d[b]).mul_add(isum as f32, acc);
                } else {
                    let (sc, m) = scale_min_k4(j, &blk[4..16]);
                    let mut isum = 0i32;
                    for l in 0..32 {
                        let q = if ty == GgmlType::Q4K {
                            blk[16 + 32 * (j / 2) + l] >> (4 * (j % 2)) & 0x0f
                        } else {
                            let hi = (blk[16 + l] >> j & 1) << 4;
                            (blk[48 + 32 * (j / 2) + l] >> (4 * (j % 2)) & 0x0f) | hi
                        };
                        isum += i32::from(q) * i32::from(a[l]);
                    }
                    let dw = rd_f16(blk, 0) * f32::from(sc);
                    let mn = rd_f16(blk, 2) * f32::from(m);
                    acc = (dw * x.d[b]).mul_add(isum as f32, acc);
                    acc = (-(mn * x.d[b])).mul_add(x.qsum[b] as f32, acc);
                }
            }
        }
        acc
    }

    /// Activations with a few outliers, as real ones have.
    fn acts(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| rng.next_f32() * if i % 97 == 0 { 40.0 } else { 1.0 })
            .collect()
    }

    /// Every kernel family on all rows × columns, the panels cut at `pcut`
    /// and the columns at `ccut` (as workers and tiles cut them).
    fn run_all(
        kind: KernelKind,
        ty: GgmlType,
        packed: &[u8],
        rows: usize,
        nsb: usize,
        xs: &[Col],
        (pcut, ccut): (usize, usize),
    ) -> Vec<u32> {
        let cols: Vec<QCol<'_>> = xs.iter().map(Col::q).collect();
        let panels = rows.div_ceil(PANEL);
        let (pcut, ccut) = (pcut.min(panels), ccut.min(cols.len()));
        let mut out = vec![f32::NAN; rows * cols.len()];
        {
            let so = SharedOut::new(&mut out);
            let dest = Dest { out: &so, rows };
            for ps in [(0, pcut), (pcut, panels)] {
                // Column tiles end where the caller's do: split the columns
                // by writing the second part through a shifted `Dest`.
                matmul_kpanels(kind, ty, packed, nsb, ps, &cols[..ccut], &dest);
                let rest = &cols[ccut..];
                if !rest.is_empty() {
                    // SAFETY: the columns from `ccut` on are this call's alone.
                    let tail = unsafe {
                        std::slice::from_raw_parts_mut(
                            so.ptr(ccut * rows, rest.len() * rows),
                            rest.len() * rows,
                        )
                    };
                    let so2 = SharedOut::new(tail);
                    let dest2 = Dest { out: &so2, rows };
                    matmul_kpanels(kind, ty, packed, nsb, ps, rest, &dest2);
                }
            }
        }
        out.iter().map(|v| v.to_bits()).collect()
    }

    /// `w` (rows of format `ty`) against `xs` in every family and cut,
    /// bit for bit against [`reference`].
    fn check(ty: GgmlType, w: &[u8], rows: usize, xs: &[Col], what: &str) {
        let row_bytes = w.len() / rows;
        let nsb = row_bytes / ty.block_bytes();
        let packed = pack_kmatrix(ty, w, rows, nsb);
        let mut want = vec![0u32; rows * xs.len()];
        for r in 0..rows {
            for (c, x) in xs.iter().enumerate() {
                want[c * rows + r] =
                    reference(ty, &w[r * row_bytes..(r + 1) * row_bytes], x).to_bits();
            }
        }
        for kind in KernelKind::supported() {
            for cuts in [(0, 0), (1, 1), (3, 6), (2, 5), (5, 3), (1, 2)] {
                let got = run_all(kind, ty, &packed, rows, nsb, xs, cuts);
                assert_eq!(
                    want, got,
                    "{ty:?} {what} {rows} rows {kind:?} cuts {cuts:?}"
                );
            }
        }
    }

    #[test]
    fn every_family_matches_the_contract_bit_for_bit() {
        let mut rng = Rng(11);
        for ty in KQUANTS {
            // The last shape spans several panel chunks and column tiles.
            for (rows, cols) in [
                (1, 256),
                (16, 512),
                (17, 256),
                (37, 768),
                (50, 512),
                (130, 2048),
            ] {
                let w = quantize_weights(ty, &acts(&mut rng, rows * cols));
                for n in [1, 2, 3, 4, 5, 9] {
                    let xs: Vec<Col> = (0..n).map(|_| Col::new(&acts(&mut rng, cols))).collect();
                    check(ty, &w, rows, &xs, &format!("{cols} cols, {n} columns"));
                }
            }
        }
    }

    /// Arbitrary bytes (every scale, minimum and quant the format can
    /// hold) and the saturation limits: largest quants and scales,
    /// activations all ±127.
    #[test]
    fn every_family_matches_the_contract_on_extreme_blocks() {
        let mut rng = Rng(12);
        let (rows, cols) = (19, 512);
        for ty in KQUANTS {
            let bs = ty.block_bytes();
            let n_blocks = rows * cols / 256;
            let dpos = if ty == GgmlType::Q6K {
                vec![208]
            } else {
                vec![0, 2]
            };
            let set_d = |w: &mut [u8], rng: &mut Rng| {
                for blk in w.chunks_exact_mut(bs) {
                    for &at in &dpos {
                        let v = f32_to_f16(rng.next_f32() * 2.0);
                        blk[at..at + 2].copy_from_slice(&v.to_le_bytes());
                    }
                }
            };
            let mut random: Vec<u8> = (0..n_blocks * bs)
                .map(|_| (rng.next_f32() * 128.0 + 128.0) as u8)
                .collect();
            set_d(&mut random, &mut rng);
            let mut max = vec![0xffu8; n_blocks * bs];
            set_d(&mut max, &mut rng);
            let mut min_scale = vec![0x00u8; n_blocks * bs];
            if ty == GgmlType::Q6K {
                // Scales -128, quants 63 and 0.
                for (i, blk) in min_scale.chunks_exact_mut(bs).enumerate() {
                    blk[192..208].fill(0x80);
                    blk[..128].fill(if i % 2 == 0 { 0xff } else { 0 });
                    blk[128..192].fill(if i % 2 == 0 { 0xff } else { 0 });
                }
            }
            set_d(&mut min_scale, &mut rng);
            let pattern: Vec<f32> = (0..cols)
                .map(|j| if j % 5 == 0 { -1.0 } else { 1.0 })
                .collect();
            let neg: Vec<f32> = pattern.iter().map(|v| -v).collect();
            let xs = vec![
                Col::new(&pattern),
                Col::new(&neg),
                Col::new(&vec![1.0; cols]),
                Col::new(&vec![-1.0; cols]),
                Col::new(&acts(&mut rng, cols)),
            ];
            check(ty, &random, rows, &xs, "random bytes");
            check(ty, &max, rows, &xs, "all ones");
            check(ty, &min_scale, rows, &xs, "smallest scales");
        }
    }

    /// The integer products are close to the float products of the
    /// dequantised rows (the quantised activations' error only).
    #[test]
    fn integer_products_are_close_to_the_float_ones() {
        let mut rng = Rng(13);
        let (rows, cols) = (5, 1024);
        for ty in KQUANTS {
            let w = quantize_weights(ty, &acts(&mut rng, rows * cols));
            let row_bytes = w.len() / rows;
            let x = acts(&mut rng, cols);
            let col = Col::new(&x);
            let mut wd = vec![0f32; cols];
            for r in 0..rows {
                let row = &w[r * row_bytes..(r + 1) * row_bytes];
                dequantize_row(ty, row, &mut wd);
                let exact = dot_f32(&wd, &x);
                let scale: f32 = wd.iter().zip(&x).map(|(a, b)| (a * b).abs()).sum();
                let got = reference(ty, row, &col);
                assert!(
                    (exact - got).abs() < 0.02 * scale,
                    "{ty:?} row {r}: {exact} vs {got}"
                );
            }
        }
    }
}
