//! The logit rule (frequency and presence penalties, logit bias) and
//! log-probabilities, both deterministic functions of the model's logits and
//! the output so far, so a verifier recomputes them from one score pass.
//!
//! [`LogitRule::apply`] gives the logits the decoding rule picks from:
//! for each token `t`, `logit[t] + adj / 1000` in f32, where `adj` is the
//! integer `bias(t) - count(t) * frequency - (count(t) > 0) * presence`
//! (thousandths; `count(t)` is how often `t` occurs among the earlier output
//! tokens). One integer sum, one division and one addition per token, so
//! every machine gets the same bits.
//!
//! Log-probabilities are those of the adjusted logits (before temperature,
//! top-k and top-p): `l - max - ln(sum(exp(l_i - max)))`, with the engine's
//! own `exp` and `ln` (never the platform `libm`), the sum in f64 in token
//! order, written as integer micro-nats ([`to_micro`]).

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use verinfer_types::records::{HexBytes, TokenLogprob};

use crate::error::LlmError;
use crate::math::{exp_f32, ln_f64};
use crate::sampler;
use crate::tokenizer::Tokenizer;

/// Lowest log-probability written, in micro-nats (a token whose logit is
/// `-inf` or NaN); keeps every value within JSON's safe integer range.
pub const MIN_LOGPROB_MICRO: i64 = -1_000_000_000_000;

/// Penalties and biases applied to the logits before a token is picked.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogitRule {
    /// Frequency penalty x 1000.
    pub frequency_milli: i32,
    /// Presence penalty x 1000.
    pub presence_milli: i32,
    /// `(token, bias x 1000)`; ids outside the vocabulary are ignored.
    pub bias: Vec<(u32, i32)>,
}

impl LogitRule {
    /// Whether the rule leaves every logit as it is.
    pub fn is_identity(&self) -> bool {
        self.frequency_milli == 0 && self.presence_milli == 0 && self.bias.is_empty()
    }

    /// The logits to pick from at a position after the output tokens
    /// `previous` (borrowed unchanged when the rule is the identity).
    pub fn apply<'a>(&self, logits: &'a [f32], previous: &[u32]) -> Cow<'a, [f32]> {
        if self.is_identity() {
            return Cow::Borrowed(logits);
        }
        let mut adj: BTreeMap<u32, i64> = BTreeMap::new();
        for &(t, b) in &self.bias {
            *adj.entry(t).or_default() += i64::from(b);
        }
        if self.frequency_milli != 0 || self.presence_milli != 0 {
            let mut counts: BTreeMap<u32, i64> = BTreeMap::new();
            for &t in previous {
                *counts.entry(t).or_default() += 1;
            }
            for (t, c) in counts {
                *adj.entry(t).or_default() -=
                    c * i64::from(self.frequency_milli) + i64::from(self.presence_milli);
            }
        }
        let mut out = logits.to_vec();
        for (t, a) in adj {
            if let Some(l) = out.get_mut(t as usize) {
                *l += a as f32 / 1000.0;
            }
        }
        Cow::Owned(out)
    }
}

/// `ln(sum(exp(l - max)))` and `max` over `logits` (NaN counts as `-inf`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Normaliser {
    max: f32,
    log_sum: f64,
}

impl Normaliser {
    /// The normaliser of one position's logits.
    pub fn of(logits: &[f32]) -> Self {
        let max = logits
            .iter()
            .copied()
            .filter(|l| !l.is_nan())
            .fold(f32::NEG_INFINITY, f32::max);
        let sum: f64 = logits
            .iter()
            .filter(|l| !l.is_nan())
            .map(|&l| f64::from(exp_f32(l - max)))
            .sum();
        Normaliser {
            max,
            log_sum: if sum > 0.0 && sum.is_finite() {
                ln_f64(sum)
            } else {
                0.0
            },
        }
    }

    /// The log-probability of a token with logit `l`, in micro-nats.
    pub fn micro(&self, l: f32) -> i64 {
        to_micro(f64::from(l - self.max) - self.log_sum)
    }

    /// The log-probability of token `t` under `logits` (the ones this
    /// normaliser was made of), in micro-nats.
    pub fn token(&self, logits: &[f32], t: u32) -> i64 {
        logits
            .get(t as usize)
            .map_or(MIN_LOGPROB_MICRO, |&l| self.micro(l))
    }
}

/// Natural-log probability to micro-nats: rounded to the nearest integer,
/// clamped to [`MIN_LOGPROB_MICRO`]..=0.
pub fn to_micro(lp: f64) -> i64 {
    if lp.is_nan() {
        return MIN_LOGPROB_MICRO;
    }
    let m = (lp * 1e6).round();
    if m <= MIN_LOGPROB_MICRO as f64 {
        MIN_LOGPROB_MICRO
    } else if m >= 0.0 {
        0
    } else {
        m as i64
    }
}

/// A token's log-probability at one output position, with the most likely
/// tokens' (best first, in the sampler's order: higher logit, then lower id).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PositionLogprobs {
    /// The token.
    pub token: u32,
    /// Its log-probability in micro-nats.
    pub logprob_micro: i64,
    /// The `n` most likely tokens and theirs.
    pub top: Vec<(u32, i64)>,
}

impl PositionLogprobs {
    /// `token`'s log-probability under `logits` (already adjusted by the
    /// logit rule) and the `n` best tokens'.
    pub fn at(logits: &[f32], token: u32, n: usize) -> Self {
        Self::with(logits, &Normaliser::of(logits), token, n)
    }

    /// [`PositionLogprobs::at`] with the normaliser of `logits` at hand.
    pub fn with(logits: &[f32], norm: &Normaliser, token: u32, n: usize) -> Self {
        PositionLogprobs {
            token,
            logprob_micro: norm.token(logits, token),
            top: sampler::top_n(logits, n)
                .into_iter()
                .map(|t| (t, norm.token(logits, t)))
                .collect(),
        }
    }
}

/// The records of a generation's log-probabilities: each token with its
/// bytes as `tok` gives them (end and control tokens: none).
pub fn to_records(
    tok: &Tokenizer,
    positions: &[PositionLogprobs],
) -> Result<Vec<TokenLogprob>, LlmError> {
    let entry = |t: u32, lp: i64, top: Vec<TokenLogprob>| -> Result<TokenLogprob, LlmError> {
        Ok(TokenLogprob {
            token: t,
            bytes: HexBytes(tok.token_bytes(t, false)?),
            logprob_micro: lp,
            top,
        })
    };
    positions
        .iter()
        .map(|p| {
            let top = p
                .top
                .iter()
                .map(|&(t, lp)| entry(t, lp, Vec::new()))
                .collect::<Result<_, _>>()?;
            entry(p.token, p.logprob_micro, top)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_borrows_and_penalties_count_earlier_tokens() {
        let l = [1.0f32, 2.0, 3.0, 4.0];
        assert!(matches!(
            LogitRule::default().apply(&l, &[1, 1]),
            Cow::Borrowed(_)
        ));
        let rule = LogitRule {
            frequency_milli: 500,
            presence_milli: 250,
            bias: vec![(0, 10_000), (3, -1_500), (99, 5_000)],
        };
        let a = rule.apply(&l, &[2, 2, 3]);
        // 0: +10; 1: untouched; 2: -2*0.5-0.25; 3: -1.5-0.5-0.25; 99 ignored.
        assert_eq!(a.as_ref(), &[11.0, 2.0, 1.75, 1.75]);
    }

    #[test]
    fn log_probabilities_are_normalised_and_ordered() {
        let l = [0.0f32, 1.0, 2.0, f32::NAN, f32::NEG_INFINITY];
        let p = PositionLogprobs::at(&l, 1, 3);
        let exact = |x: f64| {
            let z = (0f64.exp() + 1f64.exp() + 2f64.exp()).ln();
            ((x - z) * 1e6).round() as i64
        };
        assert!((p.logprob_micro - exact(1.0)).abs() <= 1, "{p:?}");
        assert_eq!(p.top.iter().map(|t| t.0).collect::<Vec<_>>(), [2, 1, 0]);
        assert!((p.top[0].1 - exact(2.0)).abs() <= 1);
        assert_eq!(
            PositionLogprobs::at(&l, 4, 0).logprob_micro,
            MIN_LOGPROB_MICRO
        );
        assert_eq!(
            PositionLogprobs::at(&l, 3, 0).logprob_micro,
            MIN_LOGPROB_MICRO
        );
        assert_eq!(to_micro(1e-9), 0);
        assert_eq!(to_micro(-1e300), MIN_LOGPROB_MICRO);
    }
}
