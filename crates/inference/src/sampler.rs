//! Deterministic token selection: greedy and seeded sampling.
//!
//! Parameters are integers (temperature and top-p in thousandths). Randomness
//! comes from a counter-based generator keyed by `(seed, position)`:
//! `SHA-256("verinfer/sampler/v1" || seed_le || position_le)`, so any position
//! can be recomputed on its own. The arithmetic uses only IEEE `+ - * /` and
//! the engine's own `exp`, never the platform `libm`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::math::exp_f32;

/// How the next token is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Temperature × 1000; 0 means greedy (arg-max).
    pub temperature_milli: u32,
    /// Keep only the `top_k` most likely tokens (0 = no limit).
    pub top_k: u32,
    /// Nucleus threshold × 1000 (1000 = no limit).
    pub top_p_milli: u32,
    /// Seed of the counter-based RNG.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature_milli: 0,
            top_k: 40,
            top_p_milli: 950,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature_milli: 0,
            ..Self::default()
        }
    }
}

/// The random draw for `(seed, position)` as a uniform value in `[0, 1)`.
pub fn uniform(seed: u64, position: u64) -> f64 {
    let mut h = Sha256::new();
    h.update(b"verinfer/sampler/v1");
    h.update(seed.to_le_bytes());
    h.update(position.to_le_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_le_bytes(b) >> 11) as f64 * (1.0 / 9_007_199_254_740_992.0)
}

/// Index of the largest logit (lowest index on ties; NaN never wins).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut bv = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > bv {
            bv = v;
            best = i;
        }
    }
    best as u32
}

/// Order: higher logit first, then lower id (a total order; NaN sorts last).
fn rank(logits: &[f32], a: u32, b: u32) -> std::cmp::Ordering {
    let fa = logits[a as usize];
    let fb = logits[b as usize];
    let key = |f: f32| if f.is_nan() { f32::NEG_INFINITY } else { f };
    key(fb).total_cmp(&key(fa)).then(a.cmp(&b))
}

/// The `n` best token ids, best first.
pub fn top_n(logits: &[f32], n: usize) -> Vec<u32> {
    let n = n.min(logits.len());
    if n == 0 {
        return Vec::new();
    }
    if n <= 256 && n * 8 <= logits.len() {
        return top_n_scan(logits, n);
    }
    let mut ids: Vec<u32> = (0..logits.len() as u32).collect();
    if n < ids.len() {
        ids.select_nth_unstable_by(n - 1, |&a, &b| rank(logits, a, b));
        ids.truncate(n);
    }
    ids.sort_by(|&a, &b| rank(logits, a, b));
    ids
}

/// [`top_n`] for small `n`: one pass keeping the best `n` seen so far, sorted
/// by [`rank`]. `rank` is a total order, so the result is the same list.
fn top_n_scan(logits: &[f32], n: usize) -> Vec<u32> {
    let mut best: Vec<u32> = (0..n as u32).collect();
    best.sort_by(|&a, &b| rank(logits, a, b));
    // Ids are visited in increasing order, so a later id beats the current
    // n-th best exactly when its key is greater under `total_cmp` (on equal
    // keys the lower id, already kept, ranks first).
    let key = |f: f32| if f.is_nan() { f32::NEG_INFINITY } else { f };
    let mut worst = key(logits[best[n - 1] as usize]);
    let mut visit = |i: usize, worst: &mut f32| {
        if key(logits[i]).total_cmp(worst) != std::cmp::Ordering::Greater {
            return;
        }
        let i = i as u32;
        best.pop();
        let at = best.partition_point(|&b| rank(logits, b, i) == std::cmp::Ordering::Less);
        best.insert(at, i);
        *worst = key(logits[best[n - 1] as usize]);
    };
    // Sixteen at a time, visiting a chunk only if one of its values could
    // enter: `v >= worst` holds for every `v` that `total_cmp` ranks above
    // `worst` (it only adds -0.0 against +0.0 and -inf against -inf, which
    // `visit` then skips), and the test vectorises.
    let mut i = n;
    while i < logits.len() && !i.is_multiple_of(16) {
        visit(i, &mut worst);
        i += 1;
    }
    while i + 16 <= logits.len() {
        let hit = logits[i..i + 16]
            .iter()
            .fold(0u32, |h, &v| h | u32::from(v >= worst));
        if hit != 0 {
            for j in i..i + 16 {
                visit(j, &mut worst);
            }
        }
        i += 16;
    }
    for j in i..logits.len() {
        visit(j, &mut worst);
    }
    best
}

/// How many of the best candidates [`sample`] draws from (0 for greedy).
pub fn candidates(p: &SamplingParams, vocab: usize) -> usize {
    match (p.temperature_milli, p.top_k) {
        (0, _) => 0,
        (_, 0) => vocab,
        (_, k) => (k as usize).min(vocab),
    }
}

/// Pick the token at `position` from `logits`.
pub fn sample(logits: &[f32], p: &SamplingParams, position: u64) -> u32 {
    if p.temperature_milli == 0 || logits.is_empty() {
        return argmax(logits);
    }
    let cand = top_n(logits, candidates(p, logits.len()));
    sample_among(logits, &cand, p, position)
}

/// [`sample`] for a non-greedy `p`, given `cand`: the
/// [`candidates`]`(p, vocab)` best token ids in [`top_n`] order.
pub fn sample_among(logits: &[f32], cand: &[u32], p: &SamplingParams, position: u64) -> u32 {
    let max = logits[cand[0] as usize];
    let t = p.temperature_milli as f32;
    let probs: Vec<f64> = cand
        .iter()
        .map(|&i| {
            let l = logits[i as usize];
            let l = if l.is_nan() { f32::NEG_INFINITY } else { l };
            f64::from(exp_f32((l - max) * 1000.0 / t))
        })
        .collect();
    let total: f64 = probs.iter().sum();
    let mut keep = probs.len();
    if p.top_p_milli < 1000 {
        let threshold = total * f64::from(p.top_p_milli) / 1000.0;
        let mut cum = 0.0;
        for (i, &q) in probs.iter().enumerate() {
            cum += q;
            if cum >= threshold {
                keep = i + 1;
                break;
            }
        }
    }
    let kept_total: f64 = probs[..keep].iter().sum();
    let target = uniform(p.seed, position) * kept_total;
    let mut cum = 0.0;
    for (i, &q) in probs[..keep].iter().enumerate() {
        cum += q;
        if target < cum {
            return cand[i];
        }
    }
    cand[keep - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_n_scan_matches_full_sort() {
        let mut x = 12345u64;
        for len in [1usize, 7, 64, 1000, 5000] {
            let logits: Vec<f32> = (0..len)
                .map(|i| {
                    x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                    match (x >> 60) as u8 {
                        0 => f32::NAN,
                        1 => -0.0,
                        2 => 0.0,
                        3 => f32::NEG_INFINITY,
                        4 => 1.5,
                        _ => ((x >> 33) % 200) as f32 * 0.25 - 25.0 + (i % 3) as f32,
                    }
                })
                .collect();
            let mut all: Vec<u32> = (0..len as u32).collect();
            all.sort_by(|&a, &b| rank(&logits, a, b));
            for n in [1usize, 2, 5, 40, 100] {
                let n = n.min(len);
                assert_eq!(top_n(&logits, n), all[..n].to_vec(), "len {len} n {n}");
                assert_eq!(top_n_scan(&logits, n), all[..n].to_vec(), "len {len} n {n}");
            }
        }
    }

    #[test]
    fn greedy_and_ties() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, f32::NAN]), 1);
        assert_eq!(top_n(&[1.0, 3.0, 2.0, 3.0], 3), vec![1, 3, 2]);
    }

    #[test]
    fn sampling_is_keyed_by_seed_and_position() {
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.3).collect();
        let p = SamplingParams {
            temperature_milli: 1000,
            top_k: 0,
            top_p_milli: 1000,
            seed: 42,
        };
        let a: Vec<u32> = (0..50).map(|pos| sample(&logits, &p, pos)).collect();
        let b: Vec<u32> = (0..50).map(|pos| sample(&logits, &p, pos)).collect();
        assert_eq!(a, b);
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(distinct.len() > 5);
        assert_eq!(uniform(1, 2), uniform(1, 2));
        assert_ne!(uniform(1, 2), uniform(2, 1));
    }

    #[test]
    fn top_k_one_is_greedy() {
        let logits = [0.5f32, 2.0, 1.0];
        let p = SamplingParams {
            temperature_milli: 1500,
            top_k: 1,
            top_p_milli: 1000,
            seed: 7,
        };
        for pos in 0..20 {
            assert_eq!(sample(&logits, &p, pos), 1);
        }
    }
}
