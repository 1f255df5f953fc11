//! Block formats, activation quantisation and the portable (scalar) kernels.
//!
//! # Arithmetic contract
//!
//! Every dot product between a weight row and an activation vector is defined
//! by the scalar code in this module; the AVX2 kernels in [`crate::simd`]
//! perform exactly the same IEEE-754 operations in the same order, so both give
//! bit-identical results. For the integer formats (Q4_0, Q4_1, Q8_0):
//!
//! * activations are quantised to 8-bit blocks of 32 ([`quantize_row`]) with
//!   an f32 scale `d` and the exact f32 sum `s` of the block's original values;
//! * each block `b` gives an exact `i32` sum of its 32 integer products;
//! * block `b` goes to lane `b % 8` of eight f32 accumulators:
//!   `acc[l] = acc[l] + (dw * da) * (isum as f32)` (two roundings, no fused
//!   multiply-add), and for Q4_1 also `macc[l] = macc[l] + m * s`; lanes past
//!   the last block of the row add `+0.0`;
//! * the lanes are reduced in a fixed tree ([`hsum8`]), `hsum8(acc) + hsum8(macc)`.
//!
//! Integer weight rows are repacked at load time ([`pack_row`]) into a
//! struct-of-arrays layout (all scales, then all minimums, then all quants) of
//! the same size, so eight block scales load as one vector. The quants of each
//! group of eight blocks are interleaved in 4-byte units ("dword transposed",
//! see [`packed_layout`]) and activation quants likewise ([`quantize_row`]),
//! so that 32-bit lane `k` of a vector holds four consecutive bytes of block
//! `k`: a multiply-add of bytes into 32-bit lanes (`vpdpbusd`, or `vpmaddubsw`
//! followed by `vpmaddwd`) then leaves block `k`'s exact integer sum in lane
//! `k` with no horizontal reduction. The layout only changes where bytes live; the integer
//! sums, and so every result, are the same as with the file's layout.

use crate::gguf::GgmlType;

/// Elements per quantisation block.
pub const QK: usize = 32;

/// Blocks of activations are padded to a multiple of this many blocks (zeros).
pub const GROUP: usize = 8;

/// Blocks in a row of `cols` values, padded to a multiple of [`GROUP`].
pub fn padded_blocks(cols: usize) -> usize {
    cols.div_ceil(QK).div_ceil(GROUP) * GROUP
}

/// One quantised activation vector (a column of a matrix product).
#[derive(Debug, Clone, Copy)]
pub struct QCol<'a> {
    /// Quantised blocks (padded with zero blocks to a multiple of [`GROUP`]).
    pub qs: &'a [[i8; QK]],
    /// Block scales (zero in padding).
    pub d: &'a [f32],
    /// Exact block sums of the original values (zero in padding).
    pub s: &'a [f32],
    /// Integer sums of each block's quants (zero in padding).
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

/// Position of element `j` of block `b` in a column's group-interleaved
/// quants (`qs` flattened): group `b / 8`, vector `j / 4`, lane `b % 8`, byte `j % 4`.
#[inline]
pub fn act_index(b: usize, j: usize) -> usize {
    (b / GROUP) * GROUP * QK + (j / 4) * QK + (b % GROUP) * 4 + j % 4
}

/// Quantise activations (length a multiple of 32) into blocks, scales, sums
/// and integer sums. `qs` is laid out group-interleaved ([`act_index`]): entry
/// `8g + v` holds bytes `4v..4v + 4` of blocks `8g..8g + 8`, four bytes each.
/// It must cover whole groups (zero-filled past the last block).
pub fn quantize_row(
    x: &[f32],
    qs: &mut [[i8; QK]],
    d: &mut [f32],
    s: &mut [f32],
    qsum: &mut [i32],
) {
    let flat = qs.as_flattened_mut();
    for (b, (((xb, db), sb), ib)) in x
        .chunks_exact(QK)
        .zip(d.iter_mut())
        .zip(s.iter_mut())
        .zip(qsum.iter_mut())
        .enumerate()
    {
        let mut amax = 0.0f32;
        for &v in xb {
            let a = v.abs();
            if a > amax {
                amax = a;
            }
        }
        let dd = amax / 127.0;
        let id = if dd > 0.0 { 1.0 / dd } else { 0.0 };
        let mut qb = [0i8; QK];
        for (q, &v) in qb.iter_mut().zip(xb) {
            let r = crate::math::round_even_f32(v * id).clamp(-127.0, 127.0);
            // NaN becomes 0 (the cast saturates and maps NaN to 0).
            *q = r as i8;
        }
        let mut isum = 0i32;
        for &q in &qb {
            isum += i32::from(q);
        }
        for (v, quad) in qb.chunks_exact(4).enumerate() {
            let at = act_index(b, 4 * v);
            flat[at..at + 4].copy_from_slice(quad);
        }
        *db = dd;
        *ib = isum;
        // The exact (fixed-order) sum of the block, not d * sum(q): this keeps
        // the minimum term of Q4_1 weights free of activation rounding error.
        let mut lanes = [0f32; 8];
        for c in xb.chunks_exact(8) {
            for l in 0..8 {
                lanes[l] += c[l];
            }
        }
        *sb = hsum8(&lanes);
    }
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

/// Byte offsets inside a packed row of `nb` blocks: (scales, minimums, quants).
///
/// The quants of group `g` (blocks `b0 = 8g .. b0 + n`, `n <= 8`) start at
/// `quants + qlen * b0` ([`quant_bytes`] per block) and hold `qlen / 4`
/// vectors of `4n` bytes: vector `v`, lane `k` = bytes `4v..4v + 4` of block
/// `b0 + k`. For 4-bit formats byte `i` of a block holds weight `i` (low
/// nibble) and weight `i + 16` (high nibble), as in the file. Q8_0 bytes are
/// stored offset by 128 (`w ^ 0x80`, an unsigned byte). A whole 32-byte
/// vector load may read past the last group's `4n` bytes (matrices keep
/// [`PACK_SLACK`] spare bytes at the end); those lanes meet zero activations.
#[inline]
pub fn packed_layout(ty: GgmlType, nb: usize) -> (usize, usize, usize) {
    match ty {
        GgmlType::Q4_1 => (0, 2 * nb, 4 * nb),
        _ => (0, 0, 2 * nb),
    }
}

/// Bytes of quants per block in a packed row.
#[inline]
pub fn quant_bytes(ty: GgmlType) -> usize {
    if ty == GgmlType::Q8_0 {
        32
    } else {
        16
    }
}

/// Spare bytes after the last packed row of a matrix (see [`packed_layout`]).
pub const PACK_SLACK: usize = 64;

/// Offset (from the start of the quants) of quant byte `i` of block `b`.
#[inline]
pub fn packed_quant_index(ty: GgmlType, nb: usize, b: usize, i: usize) -> usize {
    let qlen = quant_bytes(ty);
    let b0 = b / GROUP * GROUP;
    let n = (nb - b0).min(GROUP);
    qlen * b0 + (i / 4) * 4 * n + (b - b0) * 4 + i % 4
}

/// Repack one GGUF row (array of blocks) of an integer type into the
/// layout used by the kernels (same size; see [`packed_layout`]).
pub fn pack_row(ty: GgmlType, src: &[u8], dst: &mut [u8]) {
    let bs = ty.block_bytes();
    let nb = src.len() / bs;
    let (do_, mo, qo) = packed_layout(ty, nb);
    let hdr = if ty == GgmlType::Q4_1 { 4 } else { 2 };
    let qlen = quant_bytes(ty);
    let flip = if ty == GgmlType::Q8_0 { 0x80 } else { 0 };
    for (b, blk) in src.chunks_exact(bs).enumerate() {
        dst[do_ + 2 * b..do_ + 2 * b + 2].copy_from_slice(&blk[0..2]);
        if ty == GgmlType::Q4_1 {
            dst[mo + 2 * b..mo + 2 * b + 2].copy_from_slice(&blk[2..4]);
        }
        for (i, &q) in blk[hdr..hdr + qlen].iter().enumerate() {
            dst[qo + packed_quant_index(ty, nb, b, i)] = q ^ flip;
        }
    }
}

/// Exact integer dot product of block `b` of a packed row's quants `wq` with
/// the group-interleaved activation quants `a` (flattened).
#[inline]
fn block_isum(ty: GgmlType, wq: &[u8], nb: usize, b: usize, a: &[i8]) -> i32 {
    let mut s = 0i32;
    let act = |j: usize| i32::from(a[act_index(b, j)]);
    let w = |i: usize| wq[packed_quant_index(ty, nb, b, i)];
    match ty {
        GgmlType::Q8_0 => {
            for j in 0..QK {
                s += i32::from((w(j) ^ 0x80) as i8) * act(j);
            }
        }
        _ => {
            let off = if ty == GgmlType::Q4_0 { 8 } else { 0 };
            for j in 0..16 {
                s += (i32::from(w(j) & 0x0f) - off) * act(j);
                s += (i32::from(w(j) >> 4) - off) * act(j + 16);
            }
        }
    }
    s
}

/// Portable kernel: packed integer weight row (`nb` blocks) · quantised column.
/// Defines the arithmetic the SIMD kernels reproduce.
pub fn dot_packed(ty: GgmlType, row: &[u8], nb: usize, a: QCol<'_>) -> f32 {
    let (do_, mo, qo) = packed_layout(ty, nb);
    let wq = &row[qo..];
    let aq = a.qs.as_flattened();
    let mut acc = [0f32; 8];
    let mut macc = [0f32; 8];
    for g in 0..nb.div_ceil(GROUP) {
        for l in 0..GROUP {
            let b = g * GROUP + l;
            if b < nb {
                let dw = rd_f16(row, do_ + 2 * b);
                let isum = block_isum(ty, wq, nb, b, aq);
                acc[l] += (dw * a.d[b]) * isum as f32;
                if ty == GgmlType::Q4_1 {
                    macc[l] += rd_f16(row, mo + 2 * b) * a.s[b];
                }
            } else {
                acc[l] += 0.0;
                macc[l] += 0.0;
            }
        }
    }
    if ty == GgmlType::Q4_1 {
        hsum8(&acc) + hsum8(&macc)
    } else {
        hsum8(&acc)
    }
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

fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
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
        GgmlType::F32 => {
            for v in x {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        GgmlType::F16 => {
            for v in x {
                out.extend_from_slice(&f32_to_f16(*v).to_le_bytes());
            }
        }
        GgmlType::Q8_0 => {
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
        GgmlType::Q4_0 => {
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
        GgmlType::Q4_1 => {
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
        GgmlType::Q4K => {
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
    }
    out
}
