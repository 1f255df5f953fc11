//! Matrix products of the formats the integer kernels do not take: the
//! k-quants (Q4_K, Q5_K, Q6_K), f16 and f32. Each row is dequantised to f32,
//! then multiplied with every column by the fixed-order [`dot_f32`].
//!
//! The arithmetic is that of [`crate::quant::dequantize_row`] and
//! [`dot_f32`], the portable definition: the same operations on the same
//! values in the same order, multiplies and adds never fused (Rust does not
//! contract them), so the vector code compiled for each kernel family gives
//! the same bits (tested). The k-quant blocks are written for the
//! vectoriser: fixed-size arrays, 32 values of one scale per step.

use crate::gguf::GgmlType;
use crate::quant::{dequantize_row, dot4_f32, dot_f32, rd_f16, scale_min_k4};
use crate::simd::Dest;

/// Q4_K: `d`, `dmin` (f16), twelve bytes of 6-bit scales and minimums, 128
/// bytes of nibbles (group `g`: low nibbles are values `64g..64g + 32`, high
/// nibbles the next 32).
#[inline(always)]
fn q4k_block(b: &[u8; 144], y: &mut [f32; 256]) {
    let (d, dmin) = (rd_f16(b, 0), rd_f16(b, 2));
    let scales = &b[4..16];
    let (qs, _) = b[16..144].as_chunks::<32>();
    let (ys, _) = y.as_chunks_mut::<32>();
    for (g, (q, pair)) in qs.iter().zip(ys.chunks_exact_mut(2)).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * g, scales);
        let (sc2, m2) = scale_min_k4(2 * g + 1, scales);
        let (d1, mm1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, mm2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let [lo, hi] = pair else { continue };
        for l in 0..32 {
            lo[l] = d1 * f32::from(q[l] & 0x0f) - mm1;
            hi[l] = d2 * f32::from(q[l] >> 4) - mm2;
        }
    }
}

/// Q5_K: as Q4_K, with 32 bytes of fifth bits after the scales (bit `2g`:
/// the low nibbles of group `g`, bit `2g + 1`: its high nibbles).
#[inline(always)]
fn q5k_block(b: &[u8; 176], y: &mut [f32; 256]) {
    let (d, dmin) = (rd_f16(b, 0), rd_f16(b, 2));
    let scales = &b[4..16];
    let Ok(qh) = <&[u8; 32]>::try_from(&b[16..48]) else {
        return;
    };
    let (qs, _) = b[48..176].as_chunks::<32>();
    let (ys, _) = y.as_chunks_mut::<32>();
    for (g, (q, pair)) in qs.iter().zip(ys.chunks_exact_mut(2)).enumerate() {
        let (sc1, m1) = scale_min_k4(2 * g, scales);
        let (sc2, m2) = scale_min_k4(2 * g + 1, scales);
        let (d1, mm1) = (d * f32::from(sc1), dmin * f32::from(m1));
        let (d2, mm2) = (d * f32::from(sc2), dmin * f32::from(m2));
        let [lo, hi] = pair else { continue };
        for l in 0..32 {
            let h1 = ((qh[l] >> (2 * g)) & 1) << 4;
            let h2 = ((qh[l] >> (2 * g + 1)) & 1) << 4;
            lo[l] = d1 * f32::from((q[l] & 0x0f) | h1) - mm1;
            hi[l] = d2 * f32::from((q[l] >> 4) | h2) - mm2;
        }
    }
}

/// Q6_K: 128 bytes of low nibbles, 64 bytes of high bit pairs, sixteen
/// signed 8-bit scales (one per 16 values), `d` (f16) last. A value is
/// `(d * scale) * (q - 32)`.
#[inline(always)]
fn q6k_block(b: &[u8; 210], y: &mut [f32; 256]) {
    let d = rd_f16(b, 208);
    for (half, yh) in y.as_chunks_mut::<128>().0.iter_mut().enumerate() {
        let (Ok(ql), Ok(qh), Ok(sc)) = (
            <&[u8; 64]>::try_from(&b[64 * half..64 * half + 64]),
            <&[u8; 32]>::try_from(&b[128 + 32 * half..160 + 32 * half]),
            <&[u8; 8]>::try_from(&b[192 + 8 * half..200 + 8 * half]),
        ) else {
            return;
        };
        let ds: [f32; 8] = std::array::from_fn(|i| d * f32::from(sc[i] as i8));
        let (ys, _) = yh.as_chunks_mut::<16>();
        // Sixteen values of one scale per step: `is` is l / 16. (`j` indexes
        // three arrays and four output chunks.)
        #[allow(clippy::needless_range_loop)]
        for is in 0..2 {
            for j in 0..16 {
                let l = 16 * is + j;
                let q = [
                    (ql[l] & 0x0f) | ((qh[l] & 3) << 4),
                    (ql[l + 32] & 0x0f) | (((qh[l] >> 2) & 3) << 4),
                    (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                    (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                ];
                for k in 0..4 {
                    // Value l + 32k: chunk 2k + is of sixteen.
                    ys[2 * k + is][j] = ds[is + 2 * k] * f32::from(q[k] as i8 - 32);
                }
            }
        }
    }
}

/// One row of format `ty` into `out`.
#[inline(always)]
fn dequantize(ty: GgmlType, row: &[u8], out: &mut [f32]) {
    let ys = out.as_chunks_mut::<256>().0;
    match ty {
        GgmlType::Q4K => {
            for (b, y) in row.as_chunks::<144>().0.iter().zip(ys) {
                q4k_block(b, y);
            }
        }
        GgmlType::Q5K => {
            for (b, y) in row.as_chunks::<176>().0.iter().zip(ys) {
                q5k_block(b, y);
            }
        }
        GgmlType::Q6K => {
            for (b, y) in row.as_chunks::<210>().0.iter().zip(ys) {
                q6k_block(b, y);
            }
        }
        _ => dequantize_row(ty, row, out),
    }
}

/// `out[c * dest.rows + r0 + i] = dot(W[i], x[c])` for the rows `W[i]` in
/// `rows` (`row_bytes` each, format `ty`) and the columns `x[c]` of `xs`
/// (`buf.len()` wide each); `buf` is scratch space one row wide.
#[inline(always)]
fn float_rows_impl(
    ty: GgmlType,
    rows: &[u8],
    row_bytes: usize,
    r0: usize,
    xs: &[f32],
    buf: &mut [f32],
    dest: &Dest<'_, '_>,
) {
    let (out, total_rows) = (dest.out, dest.rows);
    let cols = buf.len();
    let cols_of = |c: usize| &xs[c * cols..(c + 1) * cols];
    let n = xs.len() / cols;
    for (i, row) in rows.chunks_exact(row_bytes).enumerate() {
        dequantize(ty, row, buf);
        let r = r0 + i;
        let mut c = 0;
        while c + 4 <= n {
            let d = dot4_f32(
                buf,
                [cols_of(c), cols_of(c + 1), cols_of(c + 2), cols_of(c + 3)],
            );
            for (j, v) in d.into_iter().enumerate() {
                out.set((c + j) * total_rows + r, v);
            }
            c += 4;
        }
        for c in c..n {
            out.set(c * total_rows + r, dot_f32(buf, cols_of(c)));
        }
    }
}
crate::simd::multiversion!(
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn float_rows(
    ty: GgmlType,
    rows: &[u8],
    row_bytes: usize,
    r0: usize,
    xs: &[f32],
    buf: &mut [f32],
    dest: &Dest<'_, '_>,
) => float_rows_impl);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pool::SharedOut;
    use crate::quant::quantize_weights;
    use crate::simd::KernelKind;
    use crate::testing::Rng;

    /// Every kernel family gives the portable definition's bits
    /// (`dequantize_row`, then `dot_f32` per column), for every format this
    /// path takes and column counts around the four-column step.
    #[test]
    fn every_family_matches_the_portable_definition() {
        let mut rng = Rng(5);
        let (rows, cols) = (7, 512);
        for ty in [
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
            GgmlType::F16,
            GgmlType::F32,
        ] {
            let w: Vec<f32> = (0..rows * cols).map(|_| rng.next_f32()).collect();
            let bytes = quantize_weights(ty, &w);
            let row_bytes = bytes.len() / rows;
            for n in [1, 3, 4, 9] {
                let xs: Vec<f32> = (0..n * cols).map(|_| 3.0 * rng.next_f32()).collect();
                let mut want = vec![0f32; n * rows];
                let mut buf = vec![0f32; cols];
                for r in 0..rows {
                    dequantize_row(ty, &bytes[r * row_bytes..(r + 1) * row_bytes], &mut buf);
                    for c in 0..n {
                        want[c * rows + r] = dot_f32(&buf, &xs[c * cols..(c + 1) * cols]);
                    }
                }
                for kind in KernelKind::supported() {
                    let mut got = vec![f32::NAN; n * rows];
                    {
                        let out = SharedOut::new(&mut got);
                        let dest = Dest { out: &out, rows };
                        // Rows 2.. from row 2 on, then rows 0..2: a split as the workers make.
                        float_rows(
                            kind,
                            ty,
                            &bytes[2 * row_bytes..],
                            row_bytes,
                            2,
                            &xs,
                            &mut buf,
                            &dest,
                        );
                        float_rows(
                            kind,
                            ty,
                            &bytes[..2 * row_bytes],
                            row_bytes,
                            0,
                            &xs,
                            &mut buf,
                            &dest,
                        );
                    }
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&want), bits(&got), "{ty:?} n {n} {kind:?}");
                }
            }
        }
    }
}
