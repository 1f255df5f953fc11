//! The log-probability rule: a Result's `logprobs` are the ones the declared
//! decoding gives, recomputed from the same score pass as the token rule.
//!
//! When the request asks for log-probabilities (`decoding.top_logprobs =
//! Some(n)`), the Result carries one entry per output token, in order; each
//! names that token, its bytes and its log-probability, and lists the
//! `min(n, vocabulary)` most likely tokens with theirs, best first. A verifier
//! accepts the entries when:
//!
//! * every token's bytes are the tokenizer's, and the list has no repeated
//!   token and is ordered by non-increasing log-probability;
//! * every log-probability is within [`LOGPROB_BOUND_MICRO`] of the
//!   recomputed one;
//! * no token left out of the list is more likely than one listed, beyond the
//!   same bound (a near tie at the list's end may fall either way).
//!
//! A Result that carries log-probabilities the request did not ask for, or
//! lacks the ones it did, is rejected too. Every failure is the node's
//! (code `logprobs`).

use verinfer_inference::PositionScore;
use verinfer_types::records::{Decoding, InferenceResult, TokenLogprob, MAX_TOP_LOGPROBS};

use crate::rules::{Detokenizer, Rejection};

/// Largest accepted |claimed - recomputed| log-probability, in micro-nats,
/// for the `arith-v2` engines. Nodes and verifiers compute log-probabilities
/// bit for bit alike (the largest difference measured on the default model
/// is 0, see docs/benchmarks.md); the bound only absorbs a last-bit drift of
/// the logits (one f32 ulp of a logit below 64 is under 8 micro-nats).
pub const LOGPROB_BOUND_MICRO: i64 = 10;

fn reject(position: usize, detail: String) -> Rejection {
    Rejection::Logprobs {
        position: u32::try_from(position).unwrap_or(u32::MAX),
        detail,
    }
}

/// Checks `result.logprobs` against the request's decoding and the scores
/// of one pass over the output (`scores[i]` for output position `i`, with
/// log-probabilities and the listed tokens' asked, as
/// [`crate::checker::Recompute::score`] gives them).
pub fn check_logprobs(
    decoding: &Decoding,
    result: &InferenceResult,
    scores: &[PositionScore],
    tok: &dyn Detokenizer,
) -> Result<(), Rejection> {
    let (n, entries) = match (decoding.top_logprobs, &result.logprobs) {
        (None, None) => return Ok(()),
        (None, Some(_)) => {
            return Err(reject(
                0,
                "the request asks for no log-probabilities".into(),
            ))
        }
        (Some(_), None) => return Err(reject(0, "the log-probabilities are missing".into())),
        (Some(n), Some(e)) => (n as usize, e),
    };
    if entries.len() != result.output_tokens.len() {
        return Err(reject(
            entries.len().min(result.output_tokens.len()),
            format!(
                "{} entries for {} output tokens",
                entries.len(),
                result.output_tokens.len()
            ),
        ));
    }
    let want_top = n.min(tok.vocab_size());
    for (i, (e, &t)) in entries.iter().zip(&result.output_tokens).enumerate() {
        let fail = |d: String| Err(reject(i, d));
        if e.token != t {
            return fail(format!("entry names token {}, output has {t}", e.token));
        }
        let Some(s) = scores.get(i) else {
            return fail("no score for this position".into());
        };
        let Some(lp) = s.logprobs.as_ref() else {
            return fail("no recomputed log-probabilities".into());
        };
        check_entry(e, tok).or_else(fail)?;
        if (e.logprob_micro - lp.logprob_micro).abs() > LOGPROB_BOUND_MICRO {
            return fail(format!(
                "token {t}: claimed {} micro-nats, recomputed {}",
                e.logprob_micro, lp.logprob_micro
            ));
        }
        if e.top.len() != want_top {
            return fail(format!(
                "{} best tokens listed, {want_top} asked",
                e.top.len()
            ));
        }
        let mut listed_min = i64::MAX;
        for (k, c) in e.top.iter().enumerate() {
            check_entry(c, tok).or_else(fail)?;
            if !c.top.is_empty() {
                return fail(format!("listed token {} has a list of its own", c.token));
            }
            if e.top[..k].iter().any(|p| p.token == c.token) {
                return fail(format!("token {} is listed twice", c.token));
            }
            if k > 0 && c.logprob_micro > e.top[k - 1].logprob_micro {
                return fail("the list is not ordered best first".into());
            }
            let Some(&(_, r)) = s.asked.get(k).filter(|a| a.0 == c.token) else {
                return fail(format!("listed token {} was not recomputed", c.token));
            };
            if (c.logprob_micro - r).abs() > LOGPROB_BOUND_MICRO {
                return fail(format!(
                    "listed token {}: claimed {} micro-nats, recomputed {r}",
                    c.token, c.logprob_micro
                ));
            }
            listed_min = listed_min.min(r);
        }
        if let Some(&(missing, r)) = lp.top.iter().find(|(t, r)| {
            !e.top.iter().any(|c| c.token == *t)
                && *r > listed_min.saturating_add(LOGPROB_BOUND_MICRO)
        }) {
            return fail(format!(
                "token {missing} ({r} micro-nats) is more likely than a listed one and left out"
            ));
        }
    }
    Ok(())
}

/// An entry's bytes are its token's, and its log-probability is one.
fn check_entry(e: &TokenLogprob, tok: &dyn Detokenizer) -> Result<(), String> {
    let bytes = tok
        .token_bytes(e.token)
        .ok_or_else(|| format!("token {} is not in the vocabulary", e.token))?;
    if bytes != e.bytes.0 {
        return Err(format!("token {}: bytes are not the token's", e.token));
    }
    if e.logprob_micro > 0 || e.logprob_micro < verinfer_inference::logprobs::MIN_LOGPROB_MICRO {
        return Err(format!(
            "token {}: {} micro-nats is not a log-probability",
            e.token, e.logprob_micro
        ));
    }
    Ok(())
}

/// The tokens whose log-probabilities the check needs at each position (the
/// listed ones, in order), for the score pass. A list longer than any request
/// may ask for fails the check on its length, so no more are recomputed.
pub fn asked(result: &InferenceResult) -> Vec<Vec<u32>> {
    result.logprobs.as_ref().map_or(Vec::new(), |entries| {
        entries
            .iter()
            .map(|e| {
                e.top
                    .iter()
                    .take(MAX_TOP_LOGPROBS as usize)
                    .map(|c| c.token)
                    .collect()
            })
            .collect()
    })
}
