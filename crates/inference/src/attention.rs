//! Causal self-attention over the KV cache, and its arithmetic contract.
//!
//! # Contract (`arith-v2`)
//!
//! For one query head `q` (width `hd`) over the keys and values of positions
//! `lo..n` (`lo` is 0, or in a sliding-window layer of window `w` the first
//! position the query sees, `n - w`):
//!
//! 1. `dot_p`: one f32 accumulator from `+0.0`, `acc = fma(q[d], k_p[d], acc)`
//!    for `d = 0..hd` in order; the score is `s_p = dot_p * scale`.
//! 2. `max`: the largest score (`s > max` replaces it, from −∞; NaN ignored).
//! 3. `e_p = exp_f32(s_p − max)` (the engine's own `exp`, [`crate::math`]).
//! 4. `sum`: sixteen lanes from `+0.0`, lane `l` adding `e_p` for
//!    `p ≡ l (mod 16)` in increasing `p`, reduced by [`hsum16`].
//! 5. `o[d]`: one accumulator per dimension from `+0.0`,
//!    `o = fma(e_p, v_p[d], o)` for `p = lo..n` in order; the output is
//!    `o[d] * (1 / sum)`.
//!
//! Keys are cached transposed in panels of [`KEY_PANEL`] positions
//! ([`KvCache`]), so step 1 runs sixteen positions in the lanes of one
//! register; step 5 runs the dimensions in lanes. Neither reorders any
//! per-value sequence, so every vector width gives the same bits as the
//! scalar reading of the steps (tested).
#![allow(unsafe_code)]

use crate::math::exp_f32;
use crate::model::Config;
use crate::simd::Lanes16;

/// Positions per transposed key panel.
pub const KEY_PANEL: usize = 16;

/// Key/value cache of one sequence.
///
/// Keys: `[layer][kv head][position / 16][dimension][position % 16]`;
/// values: `[layer][kv head][position][dimension]`. Each KV head's keys and
/// values are contiguous, so attention streams them (a position-major value
/// layout would read one head's 256 or 512 bytes per 4 KiB page, which the
/// hardware prefetchers do not follow).
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Vec<f32>,
    v: Vec<f32>,
    cap: usize,
    cap_panels: usize,
    n_kv_head: usize,
    head_dim: usize,
    n_layer: usize,
}

impl KvCache {
    /// A cache for up to `cap` positions.
    pub fn new(config: &Config, cap: usize) -> Self {
        let cap_panels = cap.div_ceil(KEY_PANEL);
        let kv_dim = config.n_kv_head * config.head_dim;
        KvCache {
            k: crate::pages::lazy_zeroed_f32(config.n_layer * cap_panels * KEY_PANEL * kv_dim),
            v: crate::pages::lazy_zeroed_f32(config.n_layer * cap * kv_dim),
            cap,
            cap_panels,
            n_kv_head: config.n_kv_head,
            head_dim: config.head_dim,
            n_layer: config.n_layer,
        }
    }

    /// Capacity in positions.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    fn kv_dim(&self) -> usize {
        self.n_kv_head * self.head_dim
    }

    /// Bytes held (keys and values).
    pub fn bytes(&self) -> usize {
        (self.k.len() + self.v.len()) * std::mem::size_of::<f32>()
    }

    /// The keys and values of positions `0..n` in a cache of capacity `n`
    /// (a shared prefix to keep; `self` is used as is when it already fits).
    pub(crate) fn into_prefix(self, n: usize) -> KvCache {
        if n == self.cap {
            return self;
        }
        let (panels, kv) = (n.div_ceil(KEY_PANEL), self.kv_dim());
        let mut out = KvCache {
            k: vec![0.0; self.n_layer * panels * KEY_PANEL * kv],
            v: vec![0.0; self.n_layer * n * kv],
            cap: n,
            cap_panels: panels,
            n_kv_head: self.n_kv_head,
            head_dim: self.head_dim,
            n_layer: self.n_layer,
        };
        out.copy_prefix(&self, n);
        out
    }

    /// Copy the keys and values of positions `0..n` from `src` (a cache of
    /// the same model; `n` at most both capacities). The values are those a
    /// run over the same tokens would store, so a run continuing at `n`
    /// computes what it would have computed from position 0.
    pub(crate) fn copy_prefix(&mut self, src: &KvCache, n: usize) {
        debug_assert!(n <= self.cap && n <= src.cap && src.kv_dim() == self.kv_dim());
        let hd = self.head_dim;
        let (full, rest) = (n / KEY_PANEL, n % KEY_PANEL);
        for l in 0..self.n_layer {
            for h in 0..self.n_kv_head {
                let (d0, s0) = (self.k_base(l, h), src.k_base(l, h));
                let len = full * KEY_PANEL * hd;
                self.k[d0..d0 + len].copy_from_slice(&src.k[s0..s0 + len]);
                // The last panel's lanes past `n` are the destination's own.
                if rest > 0 {
                    for d in 0..hd {
                        let at = len + d * KEY_PANEL;
                        self.k[d0 + at..d0 + at + rest]
                            .copy_from_slice(&src.k[s0 + at..s0 + at + rest]);
                    }
                }
                let (d0, s0) = (self.v_base(l, h), src.v_base(l, h));
                self.v[d0..d0 + n * hd].copy_from_slice(&src.v[s0..s0 + n * hd]);
            }
        }
    }

    /// Start of the key panels of (`layer`, `kv_head`).
    fn k_base(&self, layer: usize, kv_head: usize) -> usize {
        debug_assert!(layer < self.n_layer && kv_head < self.n_kv_head);
        (layer * self.n_kv_head + kv_head) * self.cap_panels * KEY_PANEL * self.head_dim
    }

    /// Start of the values of (`layer`, `kv_head`).
    fn v_base(&self, layer: usize, kv_head: usize) -> usize {
        debug_assert!(layer < self.n_layer && kv_head < self.n_kv_head);
        (layer * self.n_kv_head + kv_head) * self.cap * self.head_dim
    }

    /// Store the keys and values (`kv_dim` each) of `pos` in `layer`.
    pub(crate) fn store(&mut self, layer: usize, pos: usize, k: &[f32], v: &[f32]) {
        let hd = self.head_dim;
        let (panel, lane) = (pos / KEY_PANEL, pos % KEY_PANEL);
        for h in 0..self.n_kv_head {
            let at = self.k_base(layer, h) + panel * KEY_PANEL * hd + lane;
            for (d, &x) in k[h * hd..(h + 1) * hd].iter().enumerate() {
                self.k[at + d * KEY_PANEL] = x;
            }
            let at = self.v_base(layer, h) + pos * hd;
            self.v[at..at + hd].copy_from_slice(&v[h * hd..(h + 1) * hd]);
        }
    }

    /// The keys and values of `pos` in `layer` (as stored).
    #[cfg(test)]
    pub(crate) fn position(&self, layer: usize, pos: usize) -> (Vec<f32>, Vec<f32>) {
        let hd = self.head_dim;
        let (panel, lane) = (pos / KEY_PANEL, pos % KEY_PANEL);
        let k = (0..self.n_kv_head)
            .flat_map(|h| {
                let at = self.k_base(layer, h) + panel * KEY_PANEL * hd + lane;
                (0..hd).map(move |d| at + d * KEY_PANEL)
            })
            .map(|i| self.k[i])
            .collect();
        let v = (0..self.n_kv_head)
            .flat_map(|h| {
                let at = self.v_base(layer, h) + pos * hd;
                self.v[at..at + hd].iter().copied()
            })
            .collect();
        (k, v)
    }

    /// The keys and values `kv_head` of `layer` attends to, positions `0..n`.
    #[cfg(test)]
    pub(crate) fn span(&self, layer: usize, kv_head: usize, n: usize) -> Span<'_> {
        self.span_from(layer, kv_head, 0, n)
    }

    /// The keys and values `kv_head` of `layer` attends to, positions
    /// `lo..n` (`lo < n`). The span starts at the key panel holding `lo`,
    /// so that a position keeps its lane (`p mod 16`).
    pub(crate) fn span_from(&self, layer: usize, kv_head: usize, lo: usize, n: usize) -> Span<'_> {
        let hd = self.head_dim;
        let base = lo / KEY_PANEL * KEY_PANEL;
        let kb = self.k_base(layer, kv_head);
        let vb = self.v_base(layer, kv_head);
        Span {
            k: &self.k[kb + base * hd..kb + n.div_ceil(KEY_PANEL) * KEY_PANEL * hd],
            v: &self.v[vb + base * hd..vb + n * hd],
            n: n - base,
            skip: lo - base,
            base,
        }
    }
}

/// Keys (transposed panels) and values of one KV head, positions
/// `base..base + n`, of which the first `skip` (fewer than 16) take no part.
#[derive(Clone, Copy)]
pub(crate) struct Span<'a> {
    k: &'a [f32],
    v: &'a [f32],
    n: usize,
    skip: usize,
    base: usize,
}

/// Fixed-order reduction of sixteen lanes: halves added pairwise (8, 4, 2, 1).
#[inline(always)]
pub fn hsum16(mut a: [f32; 16]) -> f32 {
    for w in [8, 4, 2, 1] {
        for i in 0..w {
            a[i] += a[i + w];
        }
    }
    a[0]
}

/// Attention of `Q` consecutive query tokens (token `t` attends to
/// positions `0..n0 + t`) for the `G` query heads that share one KV head:
/// `out[(t * G + h) * hd..]` for `qs[(t * G + h) * hd..]`, head width
/// `hd = 16 * D16`. `span` covers `n0 + Q - 1` positions; `scores` is
/// scratch space. Each (token, head) gets exactly the contract's
/// operations; the tokens and heads only share loads and fill the
/// pipelines.
///
/// # Safety
/// The CPU has the features of `L` (see [`Lanes16`]).
#[inline(always)]
unsafe fn group<L: Lanes16, const D16: usize, const G: usize, const Q: usize>(
    qs: &[f32],
    span: &Span<'_>,
    n0: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    const { assert!(KEY_PANEL == 16) };
    let hd = D16 * 16;
    let n_max = n0 + Q - 1;
    let panels = n_max.div_ceil(KEY_PANEL);
    let width = panels * KEY_PANEL;
    scores.clear();
    scores.resize(Q * G * width, 0.0);
    let q: [[&[f32]; G]; Q] = std::array::from_fn(|t| {
        std::array::from_fn(|h| &qs[(t * G + h) * hd..(t * G + h + 1) * hd])
    });
    let row =
        |s: &[f32], at: usize| -> [f32; 16] { s[at..at + 16].try_into().unwrap_or([0.0; 16]) };
    // SAFETY: for every `L` call below, the caller guarantees L's features.
    unsafe {
        // 1. Scores, sixteen positions per register; two panels at a time
        // for independent chains.
        let vscale = L::splat(scale);
        // Panel i is rows i * hd..(i + 1) * hd of sixteen keys each.
        let krows = span.k.as_chunks::<KEY_PANEL>().0;
        let mut i = 0;
        while i < panels {
            let two = i + 1 < panels;
            let kp = [i, if two { i + 1 } else { i }].map(|j| &krows[j * hd..(j + 1) * hd]);
            let mut acc = [[[L::zero(); 2]; G]; Q];
            for d in 0..hd {
                // Not `map`: a closure does not inherit the target features.
                let kd = [L::load(&kp[0][d]), L::load(&kp[1][d])];
                for (at, qt) in acc.iter_mut().zip(&q) {
                    for (ah, qh) in at.iter_mut().zip(qt) {
                        let qd = L::splat(qh[d]);
                        for j in 0..2 {
                            ah[j] = qd.fma(kd[j], ah[j]);
                        }
                    }
                }
            }
            for (th, a) in acc.iter().flatten().enumerate() {
                for (j, aj) in a.iter().enumerate().take(if two { 2 } else { 1 }) {
                    let at = th * width + (i + j) * KEY_PANEL;
                    if let Ok(dst) = <&mut [f32; 16]>::try_from(&mut scores[at..at + 16]) {
                        aj.mul(vscale).store(dst);
                    }
                }
            }
            i += 2;
        }
    }
    let mut inv = [[0f32; G]; Q];
    for (th, inv) in inv.as_flattened_mut().iter_mut().enumerate() {
        let n = n0 + th / G;
        let s = &mut scores[th * width..(th + 1) * width];
        // 2.-4. Positions past n take no part (their weight is +0.0, which
        // leaves the lane sums unchanged). The maximum is found in sixteen
        // lanes: the largest score is the same value in any order (only the
        // sign of a zero maximum could differ, and `s - max` then rounds to
        // the same value).
        for x in &mut s[n..] {
            *x = f32::NEG_INFINITY;
        }
        // Positions before the window likewise (their weight is +0.0).
        for x in &mut s[..span.skip] {
            *x = f32::NEG_INFINITY;
        }
        // SAFETY: the caller guarantees L's features.
        let max = unsafe {
            let mut m = L::splat(f32::NEG_INFINITY);
            for c in s.chunks_exact(KEY_PANEL) {
                m = L::load(&row(c, 0)).max(m);
            }
            m.to_array()
                .into_iter()
                .fold(f32::NEG_INFINITY, |a, x| if x > a { x } else { a })
        };
        for x in s.iter_mut() {
            *x = exp_f32(*x - max);
        }
        for x in &mut s[n..] {
            *x = 0.0;
        }
        for x in &mut s[..span.skip] {
            *x = 0.0;
        }
        let mut lanes = [0f32; KEY_PANEL];
        for c in s.chunks_exact(KEY_PANEL) {
            for l in 0..KEY_PANEL {
                lanes[l] += c[l];
            }
        }
        *inv = 1.0 / hsum16(lanes);
    }
    // SAFETY: as above.
    unsafe {
        // 5. Weighted values, dimensions in lanes. Every token takes the
        // positions before n0 together; the rest only the tokens that see them.
        let mut o = [[[L::zero(); D16]; G]; Q];
        // A macro, not a closure: a closure does not inherit the target
        // features, and its loads would stay calls.
        macro_rules! vrow {
            ($p:expr) => {{
                let at = $p * hd;
                let v = span.v[at..at + hd].as_chunks::<16>().0;
                let mut r = [L::zero(); D16];
                for (rc, vc) in r.iter_mut().zip(v) {
                    *rc = L::load(vc);
                }
                r
            }};
        }
        for p in span.skip..n0 {
            let vp = vrow!(p);
            for (t, ot) in o.iter_mut().enumerate() {
                for (h, oh) in ot.iter_mut().enumerate() {
                    let w = L::splat(scores[(t * G + h) * width + p]);
                    for (oc, vc) in oh.iter_mut().zip(&vp) {
                        *oc = w.fma(*vc, *oc);
                    }
                }
            }
        }
        for p in n0..n_max {
            let vp = vrow!(p);
            for (t, ot) in o.iter_mut().enumerate().skip(p + 1 - n0) {
                for (h, oh) in ot.iter_mut().enumerate() {
                    let w = L::splat(scores[(t * G + h) * width + p]);
                    for (oc, vc) in oh.iter_mut().zip(&vp) {
                        *oc = w.fma(*vc, *oc);
                    }
                }
            }
        }
        for (th, oh) in o.iter().flatten().enumerate() {
            let vinv = L::splat(inv.as_flattened()[th]);
            for (c, oc) in oh.iter().enumerate() {
                let at = th * hd + 16 * c;
                if let Ok(dst) = <&mut [f32; 16]>::try_from(&mut out[at..at + 16]) {
                    oc.mul(vinv).store(dst);
                }
            }
        }
    }
}

/// The reading of the contract for any head width (and the reference the
/// tests hold the vector code to).
pub(crate) fn head_reference(q: &[f32], span: &Span<'_>, scale: f32, out: &mut [f32]) {
    let hd = q.len();
    let (lo, n) = (span.skip, span.n);
    let key = |p: usize, d: usize| span.k[(p / KEY_PANEL * hd + d) * KEY_PANEL + p % KEY_PANEL];
    let s: Vec<f32> = (lo..n)
        .map(|p| {
            let mut acc = 0f32;
            for (d, &x) in q.iter().enumerate() {
                acc = x.mul_add(key(p, d), acc);
            }
            acc * scale
        })
        .collect();
    let mut max = f32::NEG_INFINITY;
    for &x in &s {
        max = if x > max { x } else { max };
    }
    let e: Vec<f32> = s.iter().map(|&x| exp_f32(x - max)).collect();
    let mut lanes = [0f32; KEY_PANEL];
    for (p, &x) in (lo..n).zip(&e) {
        lanes[p % KEY_PANEL] += x;
    }
    let inv = 1.0 / hsum16(lanes);
    for (d, o) in out.iter_mut().enumerate() {
        let mut acc = 0f32;
        for (p, &w) in (lo..n).zip(&e) {
            acc = w.mul_add(span.v[p * hd + d], acc);
        }
        *o = acc * inv;
    }
}

/// The vectorised shapes: head widths 64 and 128 (one to four query heads
/// per KV head) and 256 (four), one or two tokens; other shapes one head at
/// a time.
///
/// # Safety
/// The CPU has the features of `L`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn dispatch<L: Lanes16>(
    qs: &[f32],
    hd: usize,
    g: usize,
    span: &Span<'_>,
    n0: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let tokens = qs.len() / (g * hd);
    // SAFETY (all calls): forwarded contract.
    macro_rules! go {
        ($d16:literal, $($g:literal)*) => {
            match (g, tokens) {
                $(
                    // SAFETY: the caller guarantees L's features (forwarded contract).
                    ($g, 1) => unsafe { group::<L, $d16, $g, 1>(qs, span, n0, scale, scores, out) },
                    // SAFETY: the caller guarantees L's features (forwarded contract).
                    ($g, 2) => unsafe { group::<L, $d16, $g, 2>(qs, span, n0, scale, scores, out) },
                )*
                // SAFETY: the caller guarantees L's features (forwarded contract).
                _ => unsafe { one_by_one::<L, $d16>(qs, hd, g, span, n0, scale, scores, out) },
            }
        };
    }
    match hd {
        64 => go!(4, 1 2 3 4),
        128 => go!(8, 1 2),
        // Gemma 3 (four query heads on one KV head of 256).
        256 => go!(16, 4),
        _ => {
            for (t, (qt, ot)) in qs
                .chunks_exact(g * hd)
                .zip(out.chunks_exact_mut(g * hd))
                .enumerate()
            {
                let span = Span { n: n0 + t, ..*span };
                for (qh, oh) in qt.chunks_exact(hd).zip(ot.chunks_exact_mut(hd)) {
                    head_reference(qh, &span, scale, oh);
                }
            }
        }
    }
}

/// Each (token, head) of `qs` (`g` heads per token) on its own.
///
/// # Safety
/// The CPU has the features of `L`.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn one_by_one<L: Lanes16, const D16: usize>(
    qs: &[f32],
    hd: usize,
    g: usize,
    span: &Span<'_>,
    n0: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    for (i, (qh, oh)) in qs
        .chunks_exact(hd)
        .zip(out.chunks_exact_mut(hd))
        .enumerate()
    {
        // SAFETY: forwarded contract.
        unsafe { group::<L, D16, 1, 1>(qh, span, n0 + i / g, scale, scores, oh) }
    }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,avx512f")]
fn dispatch_avx512(
    qs: &[f32],
    hd: usize,
    g: usize,
    span: &Span<'_>,
    n0: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    // SAFETY: compiled with, and called only on CPUs with, AVX-512 F.
    unsafe { dispatch::<crate::simd::Zmm16>(qs, hd, g, span, n0, scale, scores, out) }
}

#[cfg(target_arch = "x86_64")]
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
fn dispatch_avx2(
    qs: &[f32],
    hd: usize,
    g: usize,
    span: &Span<'_>,
    n0: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    // SAFETY: compiled with, and called only on CPUs with, AVX2 and FMA.
    unsafe { dispatch::<crate::simd::Ymm2>(qs, hd, g, span, n0, scale, scores, out) }
}

/// Attention of one or two consecutive query tokens (`qs`: token-major,
/// each `g` heads of `hd`, sharing the KV head of `span`; the first token
/// attends to positions `lo..n0`, the second to `lo..n0 + 1`, where `lo` is
/// the span's first position) into `out` (same shape), with the widest code
/// the kernel family allows (identical results).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend(
    kind: crate::simd::KernelKind,
    qs: &[f32],
    hd: usize,
    g: usize,
    span: &Span<'_>,
    n0: usize,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    use crate::simd::KernelKind;
    // The kernels count positions from the span's first panel.
    let n0 = n0 - span.base;
    debug_assert!(span.n + 1 == n0 + qs.len() / (g * hd));
    #[cfg(target_arch = "x86_64")]
    match kind {
        // SAFETY: these kinds exist only when the CPU has the features
        // (`KernelKind::supported`).
        KernelKind::Vnni512 => {
            // SAFETY: a non-scalar kind exists only on a CPU with its features (`KernelKind::supported`).
            return unsafe { dispatch_avx512(qs, hd, g, span, n0, scale, scores, out) };
        }
        KernelKind::Avx2 | KernelKind::AvxVnni => {
            // SAFETY: a non-scalar kind exists only on a CPU with its features (`KernelKind::supported`).
            return unsafe { dispatch_avx2(qs, hd, g, span, n0, scale, scores, out) };
        }
        KernelKind::Scalar => {}
    }
    let _ = kind;
    // SAFETY: the portable lanes need no CPU feature.
    unsafe { dispatch::<[f32; 16]>(qs, hd, g, span, n0, scale, scores, out) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd::KernelKind;

    fn config(hd: usize, n_kv: usize, g: usize) -> Config {
        Config {
            arch: crate::model::Arch::Llama,
            q_dim: hd * n_kv * g,
            rope_base_swa: 10000.0,
            sliding_window: None,
            n_layer: 2,
            dim: hd * n_kv * g,
            n_head: n_kv * g,
            n_kv_head: n_kv,
            head_dim: hd,
            ffn_dim: 32,
            vocab: 10,
            ctx_len: 128,
            rope_base: 10000.0,
            rope_dim: hd,
            eps: 1e-5,
        }
    }

    /// A window (positions `lo..n`) gives every family the reference's
    /// bits, and the reference is softmax attention over those positions
    /// alone (checked in f64).
    #[test]
    fn windows_match_the_reference_and_skip_earlier_positions() {
        let mut seed = 11u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        };
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (hd, g) in [(64, 2), (128, 1), (32, 1)] {
            let cfg = config(hd, 1, g);
            let mut cache = KvCache::new(&cfg, 80);
            let mut keys = Vec::new();
            let mut vals = Vec::new();
            for pos in 0..80 {
                let k: Vec<f32> = (0..hd).map(|_| rnd()).collect();
                let v: Vec<f32> = (0..hd).map(|_| rnd()).collect();
                cache.store(0, pos, &k, &v);
                keys.push(k);
                vals.push(v);
            }
            let qs: Vec<f32> = (0..g * hd).map(|_| rnd()).collect();
            let scale = 1.0 / (hd as f32).sqrt();
            for (lo, n) in [(1, 9), (3, 40), (16, 33), (21, 80), (47, 48)] {
                let span = cache.span_from(0, 0, lo, n);
                let mut want = vec![0f32; g * hd];
                for (qh, oh) in qs.chunks_exact(hd).zip(want.chunks_exact_mut(hd)) {
                    head_reference(qh, &span, scale, oh);
                    let s: Vec<f64> = (lo..n)
                        .map(|p| {
                            let d: f64 = qh
                                .iter()
                                .zip(&keys[p])
                                .map(|(a, b)| *a as f64 * *b as f64)
                                .sum();
                            d * scale as f64
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let e: Vec<f64> = s.iter().map(|x| (x - m).exp()).collect();
                    let sum: f64 = e.iter().sum();
                    for (d, o) in oh.iter().enumerate() {
                        let x: f64 = (lo..n)
                            .zip(&e)
                            .map(|(p, w)| w * vals[p][d] as f64)
                            .sum::<f64>()
                            / sum;
                        assert!(
                            (x - *o as f64).abs() < 1e-4,
                            "hd {hd} lo {lo} n {n}: {x} vs {o}"
                        );
                    }
                }
                for kind in KernelKind::supported() {
                    let mut got = vec![f32::NAN; g * hd];
                    attend(kind, &qs, hd, g, &span, n, scale, &mut Vec::new(), &mut got);
                    assert_eq!(bits(&want), bits(&got), "hd {hd} lo {lo} n {n} {kind:?}");
                }
            }
        }
    }

    #[test]
    fn every_family_matches_the_reference_bit_for_bit() {
        let mut seed = 7u64;
        let mut rnd = || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            ((seed >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        };
        for (hd, g) in [
            (64, 3),
            (64, 1),
            (128, 2),
            (32, 2),
            (64, 5),
            (256, 4),
            (256, 1),
        ] {
            let cfg = config(hd, 2, g);
            let kv_dim = 2 * hd;
            let mut cache = KvCache::new(&cfg, 70);
            for pos in 0..70 {
                let k: Vec<f32> = (0..kv_dim).map(|_| rnd()).collect();
                let v: Vec<f32> = (0..kv_dim).map(|_| rnd()).collect();
                cache.store(1, pos, &k, &v);
            }
            let qs: Vec<f32> = (0..2 * g * hd).map(|_| rnd() * 3.0).collect();
            let scale = 1.0 / (hd as f32).sqrt();
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            for n in [1, 15, 16, 17, 31, 33, 69] {
                // One token attending to 0..n, and two (0..n and 0..n + 1).
                let mut want = vec![0f32; 2 * g * hd];
                for (i, (qh, oh)) in qs
                    .chunks_exact(hd)
                    .zip(want.chunks_exact_mut(hd))
                    .enumerate()
                {
                    head_reference(qh, &cache.span(1, 1, n + i / g), scale, oh);
                }
                for kind in KernelKind::supported() {
                    for tokens in [1, 2] {
                        let len = tokens * g * hd;
                        let mut got = vec![f32::NAN; len];
                        let mut scratch = Vec::new();
                        let span = cache.span(1, 1, n + tokens - 1);
                        attend(
                            kind,
                            &qs[..len],
                            hd,
                            g,
                            &span,
                            n,
                            scale,
                            &mut scratch,
                            &mut got,
                        );
                        assert_eq!(
                            bits(&want[..len]),
                            bits(&got),
                            "hd {hd} g {g} n {n} tokens {tokens} {kind:?}"
                        );
                    }
                }
            }
        }
    }
}
