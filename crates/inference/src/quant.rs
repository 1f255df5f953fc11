//! Block formats, activation quantisation and the portable (scalar) kernels.
//!
//! # Arithmetic contract
//!
//! Every dot product between a weight row and an activation vector is defined
//! by the scalar code in this module; the AVX2 kernels in [`crate::simd`]
//! perform exactly the same IEEE-754 operations in the same order, so both give
//! bit-identical results. For the integer formats (Q4_0, Q4_1, Q8_0) the
//! activations are quantised to 8-bit blocks ([`QBlock`]) and each block
//! contributes eight exact `i32` partial sums ("lanes", four products each);
//! each lane is converted to `f32`, multiplied by the block scale and added
//! (no fused multiply-add) to one of eight `f32` accumulators, which are
//! finally reduced in a fixed tree order ([`hsum8`]).

use crate::gguf::GgmlType;

/// Elements per quantisation block.
pub const QK: usize = 32;

/// An 8-bit quantised block of 32 activations.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct QBlock {
    /// Quantised values in -127..=127.
    pub qs: [i8; QK],
    /// Scale: value = d * q.
    pub d: f32,
    /// `d * sum(qs)` (used by formats with a minimum term).
    pub s: f32,
}

impl Default for QBlock {
    fn default() -> Self {
        QBlock {
            qs: [0; QK],
            d: 0.0,
            s: 0.0,
        }
    }
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

/// Quantise activations (length a multiple of 32) into `out`.
pub fn quantize_row(x: &[f32], out: &mut [QBlock]) {
    for (xb, ob) in x.chunks_exact(QK).zip(out.iter_mut()) {
        let mut amax = 0.0f32;
        for &v in xb {
            let a = v.abs();
            if a > amax {
                amax = a;
            }
        }
        let d = amax / 127.0;
        let id = if d > 0.0 { 1.0 / d } else { 0.0 };
        let mut sum = 0i32;
        for (q, &v) in ob.qs.iter_mut().zip(xb) {
            let r = (v * id).round_ties_even().clamp(-127.0, 127.0);
            // NaN inputs become 0 (the cast saturates and maps NaN to 0).
            let qi = r as i8;
            *q = qi;
            sum += i32::from(qi);
        }
        ob.d = d;
        ob.s = d * sum as f32;
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

#[inline]
fn lanes_acc(acc: &mut [f32; 8], w: &[i32; QK], a: &[i8; QK], scale: f32) {
    for l in 0..8 {
        let mut s = 0i32;
        for j in 4 * l..4 * l + 4 {
            s += w[j] * i32::from(a[j]);
        }
        acc[l] += scale * s as f32;
    }
}

/// Scalar Q4_0 row dot product.
pub fn dot_q4_0(w: &[u8], a: &[QBlock]) -> f32 {
    let mut acc = [0f32; 8];
    for (wb, ab) in w.chunks_exact(18).zip(a) {
        let d = rd_f16(wb, 0);
        let u = unpack_q4(&wb[2..18]);
        let wi: [i32; QK] = std::array::from_fn(|j| i32::from(u[j]) - 8);
        lanes_acc(&mut acc, &wi, &ab.qs, d * ab.d);
    }
    hsum8(&acc)
}

/// Scalar Q4_1 row dot product.
pub fn dot_q4_1(w: &[u8], a: &[QBlock]) -> f32 {
    let mut acc = [0f32; 8];
    let mut summ = 0f32;
    for (wb, ab) in w.chunks_exact(20).zip(a) {
        let d = rd_f16(wb, 0);
        let m = rd_f16(wb, 2);
        let u = unpack_q4(&wb[4..20]);
        let wi: [i32; QK] = std::array::from_fn(|j| i32::from(u[j]));
        lanes_acc(&mut acc, &wi, &ab.qs, d * ab.d);
        summ += m * ab.s;
    }
    hsum8(&acc) + summ
}

/// Scalar Q8_0 row dot product.
pub fn dot_q8_0(w: &[u8], a: &[QBlock]) -> f32 {
    let mut acc = [0f32; 8];
    for (wb, ab) in w.chunks_exact(34).zip(a) {
        let d = rd_f16(wb, 0);
        let wi: [i32; QK] = std::array::from_fn(|j| i32::from(wb[2 + j] as i8));
        lanes_acc(&mut acc, &wi, &ab.qs, d * ab.d);
    }
    hsum8(&acc)
}

/// Fixed-order f32 dot product (eight interleaved accumulators, then [`hsum8`]).
#[inline]
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
