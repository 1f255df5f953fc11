//! Block formats, activation quantisation and the portable (scalar) kernels.
//!
//! # Arithmetic contract (`arith-v3`)
//!
//! Every dot product between an integer weight row (Q4_0, Q4_1, Q8_0, and
//! Q5_0 repacked as Q8_0: [`panel_type`]) and an activation vector is defined by the scalar code in this module
//! ([`dot_panel`]); the SIMD kernels in [`crate::simd`] perform exactly the
//! same IEEE-754 operations in the same order, so all give identical bits:
//!
//! * activations are quantised to 8-bit blocks of 32 ([`quantize_row`]) with
//!   an f32 scale `d`, the exact f32 sum `s` of the block's original values
//!   (fixed order) and the integer sum of its quants;
//! * each block `b` gives an exact `i32` sum `isum` of its 32 integer
//!   products (weights at their true value: Q4_0 nibble − 8, Q4_1 nibble,
//!   Q8_0 signed byte);
//! * one f32 accumulator starts at `+0.0` and takes the blocks in order:
//!   `acc = fma(dw * da, isum as f32, acc)` (one rounding for the product of
//!   the scales, one for the fused multiply-add), and for Q4_1 then
//!   `acc = fma(m, s, acc)`; the result is `acc`.
//!
//! The k-quants (`arith-v3`; `arith-v2` multiplied them in f32) follow the
//! same scheme, defined by [`crate::kpanel::dot_kpanel`]: the row is cut
//! into the activation's blocks of 32, block `b` lying in super-block `b /
//! 8` (f16 `d`, and `dmin` for Q4_K/Q5_K) as its sub-block `j = b % 8`:
//!
//! * Q4_K, Q5_K (value `d·sc_j·q − dmin·m_j`, 6-bit `sc_j` and `m_j`,
//!   `q` in 0..15 or 0..31): `isum = Σ q·a` exactly; `dw = d·sc_j` and
//!   `mn = dmin·m_j` are exact in f32 (11-bit by 6-bit mantissas); then
//!   `acc = fma(dw·da, isum, acc)` and `acc = fma(−(mn·da), qsum, acc)`
//!   with the block's integer sum `qsum`: the product with the quantised
//!   activations, as for Q6_K. (Not Q4_1's exact sum `s`: a k-quant's
//!   minimum is often most of `dw·q`, whose activation error the exact
//!   minimum term then no longer cancels; measured on Gemma 3's matrices it
//!   doubles the error.)
//! * Q6_K (value `d·sc·(q − 32)`, a signed 8-bit `sc` per 16 values):
//!   `lo` and `hi`, the exact sums of `(q − 32)·a` over the block's two
//!   halves, give `isum = sc_2j·lo + sc_2j+1·hi`, exact in `i32` and in
//!   f32 (below 2^24 in magnitude); then `acc = fma(d·da, isum, acc)`.
//!
//! Fused multiply-add is exactly specified by IEEE 754 (one rounding), so
//! every CPU computes the same value: hardware FMA where it exists, the
//! correctly rounded `f32::mul_add` otherwise. Vectorisation runs across
//! *rows*, never across the blocks of one row, so no reduction tree enters
//! the result and the vector width does not matter.
//!
//! Integer matrices are repacked at load time ([`pack_matrix`]) into panels
//! of [`PANEL`] rows: per block, the sixteen rows' scales (f16; Q4_0 and
//! Q8_0 put a pair of blocks' scales on one line), then for Q4_1 their
//! minimums, then their quants in 64-byte chunks of four bytes per row
//! ([`block_at`]), so one vector load holds the same four weights of
//! sixteen rows and one broadcast activation dword multiplies all of them
//! (`vpdpbusd`, or `vpmaddubsw` + `vpmaddwd`). The layout only changes where
//! bytes live, not the integer sums, so results equal the file's layout.

use crate::gguf::GgmlType;

/// Elements per quantisation block.
pub const QK: usize = 32;

/// Rows per panel of a packed integer matrix (the f32 lanes of a 512-bit register).
pub const PANEL: usize = 16;

/// One quantised activation vector (a column of a matrix product).
#[derive(Debug, Clone, Copy)]
pub struct QCol<'a> {
    /// Quantised blocks, elements in natural order.
    pub qs: &'a [[i8; QK]],
    /// Block scales.
    pub d: &'a [f32],
    /// Exact block sums of the original values.
    pub s: &'a [f32],
    /// Integer sums of each block's quants.
    pub qsum: &'a [i32],
}

/// Convert an IEEE half (bits) to f32 exactly.
#[inline]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h >> 15) << 31;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let bits = if exp == 0 {
        if man == 0 {
            sign
        } else {
            // Subnormal half: normalise.
            let mut e = 127 - 15 + 1;
            let mut m = man;
            while m & 0x400 == 0 {
                m <<= 1;
                e -= 1;
            }
            sign | ((e as u32) << 23) | ((m & 0x3ff) << 13)
        }
    } else if exp == 31 {
        sign | 0x7f80_0000 | (man << 13)
    } else {
        sign | ((exp + 127 - 15) << 23) | (man << 13)
    };
    f32::from_bits(bits)
}

/// Convert f32 to IEEE half bits (round to nearest even). Used to build test models.
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32;
    let man = b & 0x7f_ffff;
    if exp == 255 {
        return sign | 0x7c00 | if man != 0 { 0x200 } else { 0 };
    }
    let e = exp - 127 + 15;
    if e >= 31 {
        return sign | 0x7c00;
    }
    if e <= 0 {
        if e < -10 {
            return sign;
        }
        let m = man | 0x80_0000;
        let shift = (14 - e) as u32;
        let half = 1u32 << (shift - 1);
        let mut r = m >> shift;
        let rem = m & ((1 << shift) - 1);
        if rem > half || (rem == half && r & 1 == 1) {
            r += 1;
        }
        return sign | r as u16;
    }
    let mut r = ((e as u32) << 10) | (man >> 13);
    let rem = man & 0x1fff;
    if rem > 0x1000 || (rem == 0x1000 && r & 1 == 1) {
        r += 1;
    }
    sign | r as u16
}

#[inline]
pub(crate) fn rd_f16(b: &[u8], at: usize) -> f32 {
    f16_to_f32(u16::from_le_bytes([b[at], b[at + 1]]))
}

/// Quantise activations (length a multiple of 32) into blocks (natural
/// element order), scales, exact sums and integer sums.
///
/// Per block: `amax` = largest |x|; `d = amax / 127`; `q = round_even(x * (1 / d))`
/// clamped to ±127 (NaN gives 0; `d == 0` gives all zeros); `s` = the block's
/// values summed in eight lanes (lane `l` takes elements `8c + l` in order)
/// reduced by [`hsum8`]; `qsum` = the sum of the quants.
#[inline(always)]
pub fn quantize_row(
    x: &[f32],
    qs: &mut [[i8; QK]],
    d: &mut [f32],
    s: &mut [f32],
    qsum: &mut [i32],
) {
    for ((((xb, qb), db), sb), ib) in x
        .chunks_exact(QK)
        .zip(qs.iter_mut())
        .zip(d.iter_mut())
        .zip(s.iter_mut())
        .zip(qsum.iter_mut())
    {
        let xb: &[f32; QK] = xb.try_into().unwrap_or(&[0.0; QK]);
        (*db, *sb, *ib) = quantize_block(xb, qb);
    }
}

/// One block of [`quantize_row`]: returns `(d, s, qsum)`. Written so that
/// its loops vectorise (see `simd::multiversion`) with the same results.
#[inline(always)]
pub(crate) fn quantize_block(xb: &[f32; QK], qb: &mut [i8; QK]) -> (f32, f32, i32) {
    // The largest |x|, NaN ignored: magnitudes that are not NaN order as
    // their bits do, so an integer maximum (in any order) finds it.
    let mut mbits = 0u32;
    for &v in xb {
        let b = v.to_bits() & 0x7fff_ffff;
        mbits = mbits.max(if b > 0x7f80_0000 { 0 } else { b });
    }
    let amax = f32::from_bits(mbits);
    let dd = amax / 127.0;
    let id = if dd > 0.0 { 1.0 / dd } else { 0.0 };
    let mut isum = 0i32;
    for (q, &v) in qb.iter_mut().zip(xb) {
        let r = crate::math::round_even_f32(v * id);
        // NaN becomes 0; the rest is clamped to ±127 (an integer already).
        let r = if r.is_nan() {
            0.0
        } else {
            r.clamp(-127.0, 127.0)
        };
        *q = r as i32 as i8;
        isum += i32::from(*q);
    }
    // The exact (fixed-order) sum of the block, not d * sum(q): this keeps
    // the minimum term of Q4_1 weights free of activation rounding error.
    let mut lanes = [0f32; 8];
    for c in xb.chunks_exact(8) {
        for l in 0..8 {
            lanes[l] += c[l];
        }
    }
    (dd, hsum8(&lanes), isum)
}

/// Fixed-order reduction of eight lanes (the AVX2 horizontal-sum order).
#[inline]
pub fn hsum8(a: &[f32; 8]) -> f32 {
    let t0 = a[0] + a[4];
    let t1 = a[1] + a[5];
    let t2 = a[2] + a[6];
    let t3 = a[3] + a[7];
    let u0 = t0 + t2;
    let u1 = t1 + t3;
    u0 + u1
}

/// Unpack a 4-bit block (16 bytes) into 32 values in weight order.
#[inline]
fn unpack_q4(qs: &[u8]) -> [u8; QK] {
    let mut w = [0u8; QK];
    for j in 0..16 {
        w[j] = qs[j] & 0x0f;
        w[j + 16] = qs[j] >> 4;
    }
    w
}

/// The 32 signed values (−16..15) of a Q5_0 block (ggml: f16 scale, 32
/// fifth bits little-endian, 16 bytes of nibbles as in Q4_0).
#[inline]
fn q5_0_values(blk: &[u8]) -> [i8; QK] {
    let qh = u32::from_le_bytes([blk[2], blk[3], blk[4], blk[5]]);
    let u = unpack_q4(&blk[6..22]);
    std::array::from_fn(|j| {
        let hi = ((qh >> j) & 1) as u8;
        ((u[j] | (hi << 4)) as i8) - 16
    })
}

/// The format whose panels and kernels an integer matrix of type `ty` uses:
/// Q5_0 is repacked as Q8_0 (its values are small bytes, the scale is the
/// same f16), so it runs on the Q8_0 kernels with the same integer sums.
#[inline]
pub const fn panel_type(ty: GgmlType) -> GgmlType {
    match ty {
        GgmlType::Q5_0 => GgmlType::Q8_0,
        t => t,
    }
}

/// Bytes of the quants of one panel block: [`PANEL`] rows of 32 weights,
/// 256 for the 4-bit formats, 512 for Q8_0.
#[inline]
pub const fn quant_bytes(ty: GgmlType) -> usize {
    match ty {
        GgmlType::Q8_0 => 512,
        _ => 256,
    }
}

/// Offset of the minimums from the scales in a Q4_1 panel block.
pub const MINS: usize = 32;

/// Byte offsets of block `b` inside a panel (the [`PANEL`] rows' share of
/// `nb` quantisation blocks): `(scales, quants)`.
///
/// Scales and minimums are [`PANEL`] f16 values, row `r` at `2r`. The quants
/// are 64-byte chunks, row `r` at `4r..4r + 4` of each: for 4-bit formats
/// chunk `v` (of 4) holds the file's quant bytes `4v..4v + 4` of the row's
/// block (low nibbles: weights `4v..4v + 4`, high nibbles: weights
/// `16 + 4v..`); for Q8_0 chunk `v` (of 8) holds weights `4v..4v + 4`, each
/// stored plus 128 (`w ^ 0x80`, an unsigned byte).
///
/// Q4_1 blocks are 64 bytes of scales and minimums ([`MINS`] after the
/// scales), then the quants. Q4_0 and Q8_0 blocks go in pairs: the two
/// blocks' scales share one 64-byte line, then the quants of the first and
/// of the second (a last unpaired block has 32 bytes of padding after its
/// scales). Every block's quants thus start on a line, so with [`Packed`]'s
/// alignment no vector load straddles two cache lines, and the panels are
/// as many bytes as the file's blocks.
#[inline]
pub const fn block_at(ty: GgmlType, b: usize) -> (usize, usize) {
    let q = quant_bytes(ty);
    match ty {
        GgmlType::Q4_1 => (b * (64 + q), b * (64 + q) + 64),
        _ => {
            let (pair, odd) = (b / 2 * (64 + 2 * q), b % 2);
            (pair + 32 * odd, pair + 64 + q * odd)
        }
    }
}

/// The bytes `start..end` of a panel that belong to block `b` alone (for a
/// paired block, the first also holds the pair's scales): consecutive
/// blocks' spans tile the panel.
#[inline]
pub const fn block_span(ty: GgmlType, b: usize) -> (usize, usize) {
    let (s, qo) = block_at(ty, b);
    let q = quant_bytes(ty);
    match ty {
        GgmlType::Q4_1 => (s, qo + q),
        _ if b % 2 == 1 => (qo, qo + q),
        _ => (s, qo + q),
    }
}

/// Bytes of one panel of `nb` blocks ([`block_at`]).
#[inline]
pub const fn panel_bytes(ty: GgmlType, nb: usize) -> usize {
    match ty {
        GgmlType::Q4_1 => nb * (64 + quant_bytes(ty)),
        _ => nb.div_ceil(2) * 64 + nb * quant_bytes(ty),
    }
}

/// Bytes of a packed integer matrix of `rows` rows of `nb` blocks.
pub fn packed_bytes(ty: GgmlType, rows: usize, nb: usize) -> usize {
    rows.div_ceil(PANEL) * panel_bytes(ty, nb)
}

/// 64 bytes aligned to 64: a cache line, and one 512-bit load.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u8; 64]);

impl Default for Line {
    fn default() -> Self {
        Line([0; 64])
    }
}

/// The bytes of a packed matrix, aligned to 64 (with the panel layout of
/// [`block_at`], no vector load of a kernel straddles two cache lines).
pub struct Packed {
    lines: Vec<Line>,
    len: usize,
}

impl Packed {
    pub(crate) fn zeroed(len: usize) -> Self {
        Packed {
            lines: crate::pages::zeroed_vec(len.div_ceil(64)),
            len,
        }
    }

    #[allow(unsafe_code)]
    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `Line` is 64 plain bytes without padding, and `len` is at
        // most 64 per line.
        unsafe { std::slice::from_raw_parts_mut(self.lines.as_mut_ptr().cast(), self.len) }
    }
}

impl std::ops::Deref for Packed {
    type Target = [u8];
    #[allow(unsafe_code)]
    fn deref(&self) -> &[u8] {
        // SAFETY: as in `bytes_mut`.
        unsafe { std::slice::from_raw_parts(self.lines.as_ptr().cast(), self.len) }
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({} bytes)", self.len)
    }
}

/// Repack an integer matrix (`rows` rows of `nb` blocks, in the file's
/// layout) into panels ([`block_at`]). Rows past `rows` in the last
/// panel are zero (scale 0, quants 0).
///
/// Q5_0 is packed as Q8_0 ([`panel_type`]).
pub fn pack_matrix(ty: GgmlType, src: &[u8], rows: usize, nb: usize) -> Packed {
    if ty == GgmlType::Q5_0 {
        let mut q8 = Vec::with_capacity(rows * nb * 34);
        for blk in src.chunks_exact(22).take(rows * nb) {
            q8.extend_from_slice(&blk[0..2]);
            q8.extend(q5_0_values(blk).iter().map(|&v| v as u8));
        }
        return pack_matrix(GgmlType::Q8_0, &q8, rows, nb);
    }
    let bs = ty.block_bytes();
    let stride = panel_bytes(ty, nb);
    let hdr = if ty == GgmlType::Q4_1 { 4 } else { 2 };
    let qlen = bs - hdr;
    let flip = if ty == GgmlType::Q8_0 { 0x80 } else { 0 };
    let mut packed = Packed::zeroed(packed_bytes(ty, rows, nb));
    let dst = packed.bytes_mut();
    for (r, row) in src.chunks_exact(nb * bs).take(rows).enumerate() {
        let (p, lane) = (r / PANEL, r % PANEL);
        for (b, blk) in row.chunks_exact(bs).enumerate() {
            let (so, qo) = block_at(ty, b);
            let (so, qo) = (p * stride + so, p * stride + qo);
            dst[so + 2 * lane..so + 2 * lane + 2].copy_from_slice(&blk[0..2]);
            if ty == GgmlType::Q4_1 {
                dst[so + MINS + 2 * lane..so + MINS + 2 * lane + 2].copy_from_slice(&blk[2..4]);
            }
            for (i, &q) in blk[hdr..hdr + qlen].iter().enumerate() {
                dst[qo + 64 * (i / 4) + 4 * lane + i % 4] = q ^ flip;
            }
        }
    }
    packed
}

/// Exact integer dot product of row `lane` of a panel block's quants with a
/// block of activation quants.
#[inline]
fn block_isum(ty: GgmlType, quants: &[u8], lane: usize, a: &[i8; QK]) -> i32 {
    let byte = |i: usize| quants[64 * (i / 4) + 4 * lane + i % 4];
    let mut s = 0i32;
    match ty {
        GgmlType::Q8_0 => {
            for (j, &x) in a.iter().enumerate() {
                s += i32::from((byte(j) ^ 0x80) as i8) * i32::from(x);
            }
        }
        _ => {
            let off = if ty == GgmlType::Q4_0 { 8 } else { 0 };
            for j in 0..16 {
                s += (i32::from(byte(j) & 0x0f) - off) * i32::from(a[j]);
                s += (i32::from(byte(j) >> 4) - off) * i32::from(a[j + 16]);
            }
        }
    }
    s
}

/// Portable kernel: one packed panel (`nb` blocks) · one quantised column,
/// all [`PANEL`] rows. Defines the arithmetic the SIMD kernels reproduce.
pub fn dot_panel(ty: GgmlType, panel: &[u8], nb: usize, a: QCol<'_>) -> [f32; PANEL] {
    std::array::from_fn(|lane| {
        let mut acc = 0f32;
        for b in 0..nb {
            let (so, qo) = block_at(ty, b);
            let dw = rd_f16(panel, so + 2 * lane);
            let isum = block_isum(ty, &panel[qo..qo + quant_bytes(ty)], lane, &a.qs[b]);
            acc = (dw * a.d[b]).mul_add(isum as f32, acc);
            if ty == GgmlType::Q4_1 {
                acc = rd_f16(panel, so + MINS + 2 * lane).mul_add(a.s[b], acc);
            }
        }
        acc
    })
}

/// Fixed-order f32 dot product (eight interleaved accumulators, then [`hsum8`]).
#[inline(always)]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let n8 = a.len() / 8 * 8;
    for (ca, cb) in a[..n8].chunks_exact(8).zip(b[..n8].chunks_exact(8)) {
        for l in 0..8 {
            acc[l] += ca[l] * cb[l];
        }
    }
    for (j, (x, y)) in a[n8..].iter().zip(&b[n8..]).enumerate() {
        acc[j] += x * y;
    }
    hsum8(&acc)
}

/// Four [`dot_f32`] products of `a` with `bs[i]` at once (identical results;
/// the interleaving only shortens dependency chains). Requires equal lengths.
#[inline(always)]
pub fn dot4_f32(a: &[f32], bs: [&[f32]; 4]) -> [f32; 4] {
    if !a.len().is_multiple_of(8) || bs.iter().any(|b| b.len() != a.len()) {
        return bs.map(|b| dot_f32(a, b));
    }
    let mut acc = [[0f32; 8]; 4];
    for (j, ca) in a.chunks_exact(8).enumerate() {
        for i in 0..4 {
            let cb = &bs[i][8 * j..8 * j + 8];
            for l in 0..8 {
                acc[i][l] += ca[l] * cb[l];
            }
        }
    }
    acc.map(|x| hsum8(&x))
}

pub(crate) fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0x0f) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// Dequantise one row of a tensor of type `ty` into `out` (`out.len()` elements).
pub fn dequantize_row(ty: GgmlType, src: &[u8], out: &mut [f32]) {
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16_to_f32(u16::from_le_bytes([c[0], c[1]]));
            }
        }
        GgmlType::Q4_0 => {
            for (ob, wb) in out.chunks_exact_mut(QK).zip(src.chunks_exact(18)) {
                let d = rd_f16(wb, 0);
                let u = unpack_q4(&wb[2..18]);
                for (o, &q) in ob.iter_mut().zip(&u) {
                    *o = d * f32::from(i8::try_from(q).unwrap_or(0) - 8);
                }
            }
        }
        GgmlType::Q4_1 => {
            for (ob, wb) in out.chunks_exact_mut(QK).zip(src.chunks_exact(20)) {
                let d = rd_f16(wb, 0);
                let m = rd_f16(wb, 2);
                let u = unpack_q4(&wb[4..20]);
                for (o, &q) in ob.iter_mut().zip(&u) {
                    *o = d * f32::from(q) + m;
                }
            }
        }
        GgmlType::Q8_0 => {
            for (ob, wb) in out.chunks_exact_mut(QK).zip(src.chunks_exact(34)) {
                let d = rd_f16(wb, 0);
                for (o, &q) in ob.iter_mut().zip(&wb[2..34]) {
                    *o = d * f32::from(q as i8);
                }
            }
        }
        GgmlType::Q5_0 => {
            for (ob, wb) in out.chunks_exact_mut(QK).zip(src.chunks_exact(22)) {
                let d = rd_f16(wb, 0);
                for (o, q) in ob.iter_mut().zip(q5_0_values(wb)) {
                    *o = d * f32::from(q);
                }
            }
        }
        GgmlType::Q5K => {
            // ggml: d, dmin (f16), 12 bytes of 6-bit scales and minimums,
            // 32 bytes of fifth bits (bit 2g: low nibbles of group g, bit
            // 2g + 1: its high nibbles), 128 bytes of nibbles.
            for (ob, wb) in out.chunks_exact_mut(256).zip(src.chunks_exact(176)) {
                let d = rd_f16(wb, 0);
                let dmin = rd_f16(wb, 2);
                let scales = &wb[4..16];
                let qh = &wb[16..48];
                let qs = &wb[48..176];
                for g in 0..4 {
                    let (sc1, m1) = scale_min_k4(2 * g, scales);
                    let (sc2, m2) = scale_min_k4(2 * g + 1, scales);
                    let (d1, mm1) = (d * f32::from(sc1), dmin * f32::from(m1));
                    let (d2, mm2) = (d * f32::from(sc2), dmin * f32::from(m2));
                    let q = &qs[32 * g..32 * g + 32];
                    for l in 0..32 {
                        let h1 = ((qh[l] >> (2 * g)) & 1) << 4;
                        let h2 = ((qh[l] >> (2 * g + 1)) & 1) << 4;
                        ob[64 * g + l] = d1 * f32::from((q[l] & 0x0f) | h1) - mm1;
                        ob[64 * g + 32 + l] = d2 * f32::from((q[l] >> 4) | h2) - mm2;
                    }
                }
            }
        }
        GgmlType::Q6K => {
            // ggml: 128 bytes of low nibbles, 64 bytes of high bit pairs,
            // 16 signed 8-bit scales (one per 16 values), d (f16) last.
            for (ob, wb) in out.chunks_exact_mut(256).zip(src.chunks_exact(210)) {
                let d = rd_f16(wb, 208);
                for half in 0..2 {
                    let ql = &wb[64 * half..64 * half + 64];
                    let qh = &wb[128 + 32 * half..128 + 32 * half + 32];
                    let sc = &wb[192 + 8 * half..192 + 8 * half + 8];
                    let y = &mut ob[128 * half..128 * half + 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q = [
                            (ql[l] & 0x0f) | ((qh[l] & 3) << 4),
                            (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4),
                            (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                            (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                        ];
                        for (k, &qk) in q.iter().enumerate() {
                            let s = f32::from(sc[is + 2 * k] as i8);
                            y[l + 32 * k] = d * s * f32::from(i8::try_from(qk).unwrap_or(0) - 32);
                        }
                    }
                }
            }
        }
        GgmlType::Q4K => {
            for (ob, wb) in out.chunks_exact_mut(256).zip(src.chunks_exact(144)) {
                let d = rd_f16(wb, 0);
                let dmin = rd_f16(wb, 2);
                let scales = &wb[4..16];
                let qs = &wb[16..144];
                for g in 0..4 {
                    let (sc1, m1) = scale_min_k4(2 * g, scales);
                    let (sc2, m2) = scale_min_k4(2 * g + 1, scales);
                    let d1 = d * f32::from(sc1);
                    let mm1 = dmin * f32::from(m1);
                    let d2 = d * f32::from(sc2);
                    let mm2 = dmin * f32::from(m2);
                    let q = &qs[32 * g..32 * g + 32];
                    for l in 0..32 {
                        ob[64 * g + l] = d1 * f32::from(q[l] & 0x0f) - mm1;
                        ob[64 * g + 32 + l] = d2 * f32::from(q[l] >> 4) - mm2;
                    }
                }
            }
        }
    }
}

/// Quantise f32 values to a weight format (for building test models).
pub fn quantize_weights(ty: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut out = Vec::new();
    match ty {
        GgmlType::F32 => quantize_f32(x, &mut out),
        GgmlType::F16 => quantize_f16(x, &mut out),
        GgmlType::Q8_0 => quantize_q8_0(x, &mut out),
        GgmlType::Q4_0 => quantize_q4_0(x, &mut out),
        GgmlType::Q4_1 => quantize_q4_1(x, &mut out),
        GgmlType::Q5_0 => quantize_q5_0(x, &mut out),
        GgmlType::Q5K => quantize_q5_k(x, &mut out),
        GgmlType::Q6K => quantize_q6_k(x, &mut out),
        GgmlType::Q4K => quantize_q4_k(x, &mut out),
    }
    out
}

fn quantize_f32(x: &[f32], out: &mut Vec<u8>) {
    for v in x {
        out.extend_from_slice(&v.to_le_bytes());
    }
}

fn quantize_f16(x: &[f32], out: &mut Vec<u8>) {
    for v in x {
        out.extend_from_slice(&f32_to_f16(*v).to_le_bytes());
    }
}

fn quantize_q8_0(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(QK) {
        let amax = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
        for v in b {
            out.push(((v * id).round() as i8) as u8);
        }
    }
}

fn quantize_q4_0(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(QK) {
        let mut max = 0f32;
        for &v in b {
            if v.abs() > max.abs() {
                max = v;
            }
        }
        let d = max / -8.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
        let q: Vec<u8> = b
            .iter()
            .map(|v| ((v * id + 8.5) as i32).clamp(0, 15) as u8)
            .collect();
        for j in 0..16 {
            out.push(q[j] | (q[j + 16] << 4));
        }
    }
}

fn quantize_q4_1(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(QK) {
        let min = b.iter().copied().fold(f32::INFINITY, f32::min);
        let max = b.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = (max - min) / 15.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
        out.extend_from_slice(&f32_to_f16(min).to_le_bytes());
        let q: Vec<u8> = b
            .iter()
            .map(|v| (((v - min) * id + 0.5) as i32).clamp(0, 15) as u8)
            .collect();
        for j in 0..16 {
            out.push(q[j] | (q[j + 16] << 4));
        }
    }
}

fn quantize_q5_0(x: &[f32], out: &mut Vec<u8>) {
    for b in x.chunks_exact(QK) {
        let mut max = 0f32;
        for &v in b {
            if v.abs() > max.abs() {
                max = v;
            }
        }
        let d = max / -16.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        let q: Vec<u8> = b
            .iter()
            .map(|v| ((v * id + 16.5) as i32).clamp(0, 31) as u8)
            .collect();
        let qh = q
            .iter()
            .enumerate()
            .fold(0u32, |h, (j, &v)| h | (u32::from(v >> 4) << j));
        out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
        out.extend_from_slice(&qh.to_le_bytes());
        for j in 0..16 {
            out.push((q[j] & 0x0f) | ((q[j + 16] & 0x0f) << 4));
        }
    }
}

fn quantize_q5_k(x: &[f32], out: &mut Vec<u8>) {
    // Through Q4_K's encoder at twice the resolution: the same
    // scales and minimums, 5-bit values.
    for sb in x.chunks_exact(256) {
        let q4 = quantize_weights(GgmlType::Q4K, sb);
        let (d, dmin) = (rd_f16(&q4, 0), rd_f16(&q4, 2));
        let scales: [u8; 12] = q4[4..16].try_into().unwrap_or([0; 12]);
        let mut q = [0u8; 256];
        for (i, c) in sb.chunks_exact(32).enumerate() {
            let (sc, m) = scale_min_k4(i, &scales);
            // Half the 4-bit step: the sub-block spans 31 steps.
            let dd = d * f32::from(sc) / 2.0;
            let mm = dmin * f32::from(m);
            for (l, v) in c.iter().enumerate() {
                q[32 * i + l] = if dd > 0.0 {
                    (((v + mm) / dd).round() as i32).clamp(0, 31) as u8
                } else {
                    0
                };
            }
        }
        // The stored scale must then be halved: use d / 2.
        out.extend_from_slice(&f32_to_f16(d / 2.0).to_le_bytes());
        out.extend_from_slice(&q4[2..16]);
        let mut qh = [0u8; 32];
        for g in 0..4 {
            for l in 0..32 {
                qh[l] |= (q[64 * g + l] >> 4) << (2 * g);
                qh[l] |= (q[64 * g + 32 + l] >> 4) << (2 * g + 1);
            }
        }
        out.extend_from_slice(&qh);
        for g in 0..4 {
            for l in 0..32 {
                out.push((q[64 * g + l] & 0x0f) | ((q[64 * g + 32 + l] & 0x0f) << 4));
            }
        }
    }
}

fn quantize_q6_k(x: &[f32], out: &mut Vec<u8>) {
    for sb in x.chunks_exact(256) {
        let amax: Vec<f32> = sb
            .chunks_exact(16)
            .map(|c| c.iter().fold(0f32, |m, v| m.max(v.abs())) / 31.0)
            .collect();
        let d = amax.iter().fold(0f32, |m, &v| m.max(v)) / 127.0;
        let dh = f16_to_f32(f32_to_f16(d));
        let sc: Vec<i8> = amax
            .iter()
            .map(|&a| {
                if dh > 0.0 {
                    (a / dh).round().clamp(0.0, 127.0) as i8
                } else {
                    0
                }
            })
            .collect();
        let q: Vec<u8> = sb
            .iter()
            .enumerate()
            .map(|(j, v)| {
                let step = dh * f32::from(sc[j / 16]);
                let r = if step > 0.0 {
                    (v / step).round() as i32
                } else {
                    0
                };
                (r.clamp(-32, 31) + 32) as u8
            })
            .collect();
        let (mut ql, mut qh) = ([0u8; 128], [0u8; 64]);
        for half in 0..2 {
            for l in 0..32 {
                let at = |k: usize| q[128 * half + l + 32 * k];
                ql[64 * half + l] = (at(0) & 0x0f) | ((at(2) & 0x0f) << 4);
                ql[64 * half + l + 32] = (at(1) & 0x0f) | ((at(3) & 0x0f) << 4);
                qh[32 * half + l] =
                    (at(0) >> 4) | ((at(1) >> 4) << 2) | ((at(2) >> 4) << 4) | ((at(3) >> 4) << 6);
            }
        }
        out.extend_from_slice(&ql);
        out.extend_from_slice(&qh);
        out.extend(sc.iter().map(|&v| v as u8));
        out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
    }
}

fn quantize_q4_k(x: &[f32], out: &mut Vec<u8>) {
    // Simple encoder: one scale per 32-wide sub-block (6-bit), minimum 0 offset.
    for sb in x.chunks_exact(256) {
        let mut subs = [(0f32, 0f32); 8];
        for (i, c) in sb.chunks_exact(32).enumerate() {
            let min = c.iter().copied().fold(f32::INFINITY, f32::min).min(0.0);
            let max = c.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            subs[i] = ((max - min) / 15.0, -min);
        }
        let dmax = subs.iter().fold(0f32, |m, s| m.max(s.0));
        let mmax = subs.iter().fold(0f32, |m, s| m.max(s.1));
        let d = dmax / 63.0;
        let dmin = mmax / 63.0;
        let mut sc = [0u8; 8];
        let mut mn = [0u8; 8];
        for i in 0..8 {
            sc[i] = if d > 0.0 {
                ((subs[i].0 / d).round() as i32).clamp(0, 63) as u8
            } else {
                0
            };
            mn[i] = if dmin > 0.0 {
                ((subs[i].1 / dmin).round() as i32).clamp(0, 63) as u8
            } else {
                0
            };
        }
        let mut scales = [0u8; 12];
        for j in 0..4 {
            scales[j] = sc[j] | ((sc[j + 4] >> 4) << 6);
            scales[j + 4] = mn[j] | ((mn[j + 4] >> 4) << 6);
            scales[j + 8] = (sc[j + 4] & 0x0f) | ((mn[j + 4] & 0x0f) << 4);
        }
        out.extend_from_slice(&f32_to_f16(d).to_le_bytes());
        out.extend_from_slice(&f32_to_f16(dmin).to_le_bytes());
        out.extend_from_slice(&scales);
        let dh = f16_to_f32(f32_to_f16(d));
        let dminh = f16_to_f32(f32_to_f16(dmin));
        let mut q = [0u8; 256];
        for i in 0..8 {
            let (s, m) = scale_min_k4(i, &scales);
            let dd = dh * f32::from(s);
            let mm = dminh * f32::from(m);
            for l in 0..32 {
                let v = sb[32 * i + l];
                q[32 * i + l] = if dd > 0.0 {
                    (((v + mm) / dd).round() as i32).clamp(0, 15) as u8
                } else {
                    0
                };
            }
        }
        for g in 0..4 {
            for l in 0..32 {
                out.push(q[64 * g + l] | (q[64 * g + 32 + l] << 4));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every panel block's scales, minimums and quants lie inside the panel
    /// without overlapping another's, the quants on a cache line; the
    /// blocks' spans tile the panel in order; and a panel is as many bytes
    /// as the file's blocks (but for an unpaired last Q4_0 or Q8_0 block).
    #[test]
    fn panel_blocks_tile_the_panel_on_cache_lines() {
        for ty in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            let q = quant_bytes(ty);
            let heads = if ty == GgmlType::Q4_1 { 64 } else { 32 };
            for nb in 1..=9 {
                let len = panel_bytes(ty, nb);
                let padding = if ty != GgmlType::Q4_1 && nb % 2 == 1 {
                    32
                } else {
                    0
                };
                assert_eq!(len, PANEL * nb * ty.block_bytes() + padding, "{ty:?} {nb}");
                let mut owner = vec![usize::MAX; len];
                let mut end = 0;
                for b in 0..nb {
                    let (s, qo) = block_at(ty, b);
                    assert_eq!(qo % 64, 0, "{ty:?} {nb} {b}");
                    for i in (s..s + heads).chain(qo..qo + q) {
                        assert_eq!(owner[i], usize::MAX, "{ty:?} {nb} {b} byte {i}");
                        owner[i] = b;
                    }
                    let (s0, s1) = block_span(ty, b);
                    assert_eq!(s0, end, "{ty:?} {nb} {b}");
                    assert!(s0 <= qo && qo + q <= s1, "{ty:?} {nb} {b}");
                    end = s1;
                }
                assert_eq!(end, len, "{ty:?} {nb}");
                let unused = owner.iter().filter(|&&o| o == usize::MAX).count();
                assert_eq!(unused, padding, "{ty:?} {nb}");
            }
        }
    }

    /// The 12 bytes of 6-bit scales and minimums used below, written from
    /// the ggml layout: bytes 0..4 hold scales 0..3 (and in their top two
    /// bits the high bits of scales 4..7), bytes 4..8 minimums 0..3 (top
    /// bits: high bits of minimums 4..7), bytes 8..12 the low nibbles of
    /// scale (low) and minimum (high) 4..7. Decodes to scales
    /// [1, 2, 3, 4, 17, 3, 5, 7] and minimums [5, 6, 7, 8, 2, 4, 6, 8].
    const K_SCALES: [u8; 12] = [1 | 1 << 6, 2, 3, 4, 5, 6, 7, 8, 0x21, 0x43, 0x65, 0x87];

    fn dequant(ty: GgmlType, blk: &[u8], n: usize) -> Vec<f32> {
        let mut y = vec![f32::NAN; n];
        dequantize_row(ty, blk, &mut y);
        y
    }

    #[test]
    fn q4_k_block_built_by_hand() {
        // d = 1, dmin = 0.5; every quant byte 0x93 (low nibble 3, high 9).
        let mut blk = vec![0x00, 0x3c, 0x00, 0x38];
        blk.extend_from_slice(&K_SCALES);
        blk.extend_from_slice(&[0x93; 128]);
        let y = dequant(GgmlType::Q4K, &blk, 256);
        let want = [0.5, 15.0, 5.5, 32.0, 50.0, 25.0, 12.0, 59.0];
        for (i, v) in y.iter().enumerate() {
            assert_eq!(*v, want[i / 32], "element {i}");
        }
    }

    #[test]
    fn q5_k_block_built_by_hand() {
        // As Q4_K, plus fifth bits 0x55: set for the low nibbles (even
        // sub-blocks), clear for the high ones.
        let mut blk = vec![0x00, 0x3c, 0x00, 0x38];
        blk.extend_from_slice(&K_SCALES);
        blk.extend_from_slice(&[0x55; 32]);
        blk.extend_from_slice(&[0x93; 128]);
        let y = dequant(GgmlType::Q5K, &blk, 256);
        let want = [16.5, 15.0, 53.5, 32.0, 322.0, 25.0, 92.0, 59.0];
        for (i, v) in y.iter().enumerate() {
            assert_eq!(*v, want[i / 32], "element {i}");
        }
    }

    #[test]
    fn q6_k_block_built_by_hand() {
        // Low nibbles 1, high nibbles 2; high bit pairs 0, 1, 2, 3 for the
        // four 32-value quarters of each half; scales 1..=16; d = 1.
        let mut blk = vec![0x21; 128];
        blk.extend_from_slice(&[0xe4; 64]);
        blk.extend(1..=16u8);
        blk.extend_from_slice(&[0x00, 0x3c]);
        let y = dequant(GgmlType::Q6K, &blk, 256);
        let q = [-31.0, -15.0, 2.0, 18.0];
        for (i, v) in y.iter().enumerate() {
            let want = (i / 16 + 1) as f32 * q[i % 128 / 32];
            assert_eq!(*v, want, "element {i}");
        }
    }

    #[test]
    fn q5_0_block_built_by_hand_and_packed_as_q8_0() {
        // d = 0.5; fifth bits set for values 16..32; nibbles 2 (low), 5 (high).
        let mut blk = vec![0x00, 0x38];
        blk.extend_from_slice(&0xffff_0000u32.to_le_bytes());
        blk.extend_from_slice(&[0x52; 16]);
        let y = dequant(GgmlType::Q5_0, &blk, 32);
        for (j, v) in y.iter().enumerate() {
            assert_eq!(*v, if j < 16 { -7.0 } else { 2.5 }, "element {j}");
        }
        // The same values as a Q8_0 block pack to the same panels.
        let mut q8 = vec![0x00, 0x38];
        q8.extend((0..32).map(|j| if j < 16 { -14i8 as u8 } else { 5 }));
        assert_eq!(
            &*pack_matrix(GgmlType::Q5_0, &blk, 1, 1),
            &*pack_matrix(GgmlType::Q8_0, &q8, 1, 1)
        );
    }

    #[test]
    fn k_quant_encoders_round_trip() {
        let mut rng = crate::testing::Rng(7);
        let x: Vec<f32> = (0..512).map(|_| rng.next_f32()).collect();
        for (ty, tol) in [
            (GgmlType::Q5_0, 0.04),
            (GgmlType::Q4K, 0.08),
            (GgmlType::Q5K, 0.04),
            (GgmlType::Q6K, 0.02),
        ] {
            let b = quantize_weights(ty, &x);
            assert_eq!(b.len(), 512 / ty.block_elems() * ty.block_bytes());
            let y = dequant(ty, &b, 512);
            let err = x.iter().zip(&y).map(|(a, b)| (a - b).abs()).sum::<f32>() / 512.0;
            assert!(err < tol, "{ty:?} mean abs error {err}");
        }
    }
}
