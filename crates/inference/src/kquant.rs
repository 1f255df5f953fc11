//! Matrix products of the formats the integer kernels do not take: f16
//! and f32 (the k-quants have their own, [`crate::kpanel`]). Each row is
//! converted to f32, then multiplied with every column by the fixed-order
//! [`dot_f32`].
//!
//! The arithmetic is that of [`crate::quant::dequantize_row`] and
//! [`dot_f32`], the portable definition: the same operations on the same
//! values in the same order, multiplies and adds never fused (Rust does not
//! contract them), so the vector code compiled for each kernel family gives
//! the same bits (tested).

use crate::gguf::GgmlType;
use crate::quant::{dequantize_row, dot4_f32, dot_f32};
use crate::simd::Dest;

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
        dequantize_row(ty, row, buf);
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
        for ty in [GgmlType::F16, GgmlType::F32] {
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
