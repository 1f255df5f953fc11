//! Deterministic elementary functions.
//!
//! The platform `libm` may differ between operating systems and versions, so
//! the engine never calls it: these functions use only IEEE-754 `+ - * /`
//! (never fused) and bit casts, which Rust evaluates identically on every
//! supported target.

/// Round to nearest, ties to even, for |x| < 2^22 (exact, no libm).
#[inline]
pub fn round_even_f32(x: f32) -> f32 {
    const M: f32 = 12_582_912.0; // 1.5 * 2^23
    (x + M) - M
}

/// exp(x) in f32 with relative error below ~2e-7.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    // Computed for every input, then selected, so that loops over `exp_f32`
    // vectorise (the selects keep the results of the special cases).
    let v = exp_f32_core(x);
    if x.is_nan() {
        x
    } else if x < -87.0 {
        0.0
    } else if x > 88.0 {
        f32::INFINITY
    } else {
        v
    }
}

/// The polynomial path of [`exp_f32`], meaningful for `-87 <= x <= 88`.
#[inline(always)]
fn exp_f32_core(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // n = round_even_f32(x * LOG2E), keeping the sum t = n + 1.5 * 2^23,
    // whose low mantissa bits hold n as an integer (for |n| < 2^22).
    const M: f32 = 12_582_912.0;
    let t = x * LOG2E + M;
    let n = t - M;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // Taylor polynomial of degree 7 on |r| <= 0.35.
    let mut p = 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    // The integer n from t's bits (a bit cast, which vectorises, where
    // `n as i32` would not), clamped so that out-of-range inputs (whose
    // result is not used) stay in range; for -87 <= x <= 88, n is within
    // -126..=127 already.
    let e = (t.to_bits() as i32)
        .wrapping_sub(M.to_bits() as i32)
        .clamp(-126, 127);
    // 2^e for e in -126..=127, split in two factors to stay normal.
    let e1 = e / 2;
    let e2 = e - e1;
    let s1 = f32::from_bits(((e1 + 127) as u32) << 23);
    let s2 = f32::from_bits(((e2 + 127) as u32) << 23);
    p * s1 * s2
}

/// exp(x) in f64 (relative error ~1e-16), for |x| < 700.
pub fn exp_f64(x: f64) -> f64 {
    const LN2: f64 = std::f64::consts::LN_2;
    let n = (x / LN2 + 6_755_399_441_055_744.0) - 6_755_399_441_055_744.0;
    let r = x - n * LN2;
    let mut p = 0.0f64;
    let mut fact = [0f64; 16];
    fact[0] = 1.0;
    for i in 1..16 {
        fact[i] = fact[i - 1] * i as f64;
    }
    for i in (0..16).rev() {
        p = p * r + 1.0 / fact[i];
    }
    let e = n as i64;
    p * f64::from_bits(((e + 1023) as u64) << 52)
}

/// Natural logarithm in f64 for x > 0 (finite).
pub fn ln_f64(x: f64) -> f64 {
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & 0x000f_ffff_ffff_ffff) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let s = (m - 1.0) / (m + 1.0);
    let s2 = s * s;
    let mut p = 0.0f64;
    for k in (0..14).rev() {
        p = p * s2 + 1.0 / (2 * k + 1) as f64;
    }
    2.0 * s * p + e as f64 * std::f64::consts::LN_2
}

/// (sin x, cos x) in f64 for |x| < 1e6.
pub fn sin_cos_f64(x: f64) -> (f64, f64) {
    const PIO2_1: f64 = 1.570_796_326_734_125_6;
    const PIO2_1T: f64 = 6.077_100_506_506_192e-11;
    let q = (x * std::f64::consts::FRAC_2_PI + 6_755_399_441_055_744.0) - 6_755_399_441_055_744.0;
    let r = (x - q * PIO2_1) - q * PIO2_1T;
    let r2 = r * r;
    // sin r = r - r^3/3! + ..., cos r = 1 - r^2/2! + ... up to degree 18.
    let mut s = 0.0f64;
    let mut c = 0.0f64;
    let mut fact = [0f64; 20];
    fact[0] = 1.0;
    for i in 1..20 {
        fact[i] = fact[i - 1] * i as f64;
    }
    for k in (0..9).rev() {
        let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
        s = s * r2 + sign / fact[2 * k + 1];
        c = c * r2 + sign / fact[2 * k];
    }
    let s = s * r;
    match (q as i64).rem_euclid(4) {
        0 => (s, c),
        1 => (c, -s),
        2 => (-s, -c),
        _ => (-c, s),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_closely() {
        let mut x = -80.0f32;
        while x < 80.0 {
            let a = exp_f32(x);
            let b = x.exp();
            assert!(((a - b) / b).abs() < 1e-6, "{x}: {a} vs {b}");
            x += 0.0137;
        }
        assert_eq!(exp_f32(-100.0), 0.0);
    }

    #[test]
    fn f64_functions_match_std() {
        for i in 0..2000 {
            let x = i as f64 * 4.1 - 3000.0;
            let (s, c) = sin_cos_f64(x);
            assert!(
                (s - x.sin()).abs() < 1e-12 && (c - x.cos()).abs() < 1e-12,
                "{x}"
            );
        }
        for x in [1e-5, 0.3, 1.0, 2.5, 10000.0, 100000.0] {
            assert!((ln_f64(x) - x.ln()).abs() < 1e-13 * x.ln().abs().max(1.0));
            let y = x.min(600.0) / 7.0;
            assert!(((exp_f64(y) - y.exp()) / y.exp()).abs() < 1e-14);
        }
    }
}
