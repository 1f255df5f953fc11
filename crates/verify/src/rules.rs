//! The verification rules as pure functions over records.
//!
//! Every function here is deterministic and does no I/O: it looks at a
//! [`Request`], an [`InferenceResult`] and, for the token check, the
//! [`PositionScore`]s of one teacher-forced `score` pass, and either accepts
//! or returns a [`Rejection`] whose [`Rejection::code`] is a stable short
//! string that goes into the signed [`verinfer_types::records::Verdict`].
//!
//! [`check_records`] runs every rule that needs no model computation, in a
//! fixed order (cheap and most specific first), and [`check_tokens`] is the
//! recomputation rule. The order is part of the protocol: two honest
//! verifiers report the same reason for the same dishonest result.
//!
//! # How generation must end
//!
//! These rules mirror the engine's decoding loop ([`verinfer_inference::Engine::generate`]):
//!
//! * Let `limit = min(max_tokens, context - prompt_tokens)`. A result never has
//!   more than `limit` output tokens (`past_max_tokens`).
//! * An end token (EOS or end-of-turn) ends generation: it may only be the last
//!   token (`past_eos`), and `finish_reason = eos` exactly when the last token
//!   is one.
//! * After each token the decoded text so far (its longest valid UTF-8 prefix,
//!   end tokens contributing nothing) is searched for the non-empty stop
//!   sequences. The first token after which one occurs must be the last token
//!   (`past_stop`), and `finish_reason = stop` exactly when it is.
//! * Under a constraint ([`verinfer_types::records::Constraint`]) the end
//!   tokens are allowed only where the mask allows them, so an `eos` answer is
//!   a complete document; the token check enforces that position by position.
//! * Otherwise generation ended because the limit was reached:
//!   `finish_reason = length` exactly when there are `limit` tokens.
//!   Stopping earlier without an end token or stop sequence is a truncation.
//!
//! The output text is the lossy UTF-8 decoding of the output tokens' bytes (a
//! final end token omitted), cut at the earliest occurrence of a stop sequence
//! when `finish_reason = stop`.
//!
//! # The margin rule
//!
//! The claimed token at each position must be the one the declared decoding
//! picks from the recomputed logits: the arg-max for greedy decoding
//! (temperature 0) and the seeded sampler's pick otherwise. Where the claimed
//! token and the expected one have logits closer than the engine version's
//! [`MarginRule::epsilon`] (a near tie, whose order could flip under a
//! different rounding), either is accepted. The engine promises bit-identical
//! logits for one engine version on every supported machine, so the margin is
//! a guard, kept small so that it gives a dishonest node no room beyond
//! near-ties; a sampled pick that would move across a cumulative-probability
//! boundary (rather than between near-tied tokens) is not tolerated, which is
//! sound only because of that bit-exactness.
//!
//! # The constraint mask
//!
//! A request with a `decoding.constraint` (a JSON schema, or any JSON object)
//! is decoded under a mask: at each position only the tokens that keep the
//! output a valid prefix of a matching document are allowed (end tokens once
//! it is complete). The mask is recomputed from the claimed tokens before the
//! position; a claimed token outside it is `outside_mask`, and otherwise the
//! picks above are made over the masked logits (disallowed tokens at negative
//! infinity), so the mask applies before any ranking or near-tie test.

use verinfer_inference::PositionScore;
use verinfer_types::records::{Decoding, FinishReason, InferenceResult, Request};
use verinfer_types::{Hash, Record, RecordError, SignedRecord};

/// Why a result is rejected. [`Rejection::code`] is the stable short code.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Rejection {
    /// A record's signature does not verify.
    #[error("bad_signature: the {record} signature does not verify")]
    BadSignature {
        /// `request` or `result`.
        record: &'static str,
    },
    /// The request itself breaks a rule (out-of-range field, a prompt that
    /// cannot be built, an invalid JSON schema); no result can answer it.
    #[error("bad_request: {detail}")]
    BadRequest {
        /// What is wrong.
        detail: String,
    },
    /// The result names another request (a replay or a mix-up).
    #[error("wrong_request: result answers {claimed}, request hash is {actual}")]
    WrongRequest {
        /// `result.request`.
        claimed: Hash,
        /// The hash of the request checked.
        actual: Hash,
    },
    /// The result names another model than the request.
    #[error("wrong_model: result claims model {claimed}, request asks for {expected}")]
    WrongModel {
        /// `result.model`.
        claimed: Hash,
        /// `request.model`.
        expected: Hash,
    },
    /// The result's engine version is not the verifier's.
    #[error("wrong_engine: result claims engine {claimed:?}, verifier runs {expected:?}")]
    WrongEngine {
        /// `result.engine`.
        claimed: String,
        /// The verifier's engine version.
        expected: String,
    },
    /// `usage` does not count the prompt and output tokens.
    #[error(
        "usage: claimed {claimed_prompt}+{claimed_completion} tokens, actual {prompt}+{completion}"
    )]
    Usage {
        /// Claimed prompt tokens.
        claimed_prompt: u32,
        /// Claimed completion tokens.
        claimed_completion: u32,
        /// Actual prompt tokens.
        prompt: u32,
        /// Actual output tokens.
        completion: u32,
    },
    /// An output token id outside the vocabulary.
    #[error("bad_token: output token {token} at position {position} is not in the vocabulary")]
    BadToken {
        /// Output position.
        position: u32,
        /// The token id.
        token: u32,
    },
    /// More output tokens than `min(max_tokens, context - prompt)`.
    #[error("past_max_tokens: {tokens} output tokens, at most {limit} allowed")]
    PastMaxTokens {
        /// Output tokens claimed.
        tokens: u32,
        /// The limit; also the first position past it.
        limit: u32,
    },
    /// Tokens follow an end-of-sequence token.
    #[error("past_eos: end token at position {eos_at}, output continues at {position}")]
    PastEos {
        /// Position of the end token.
        eos_at: u32,
        /// First position that should not exist.
        position: u32,
    },
    /// Tokens follow the token that completed a stop sequence.
    #[error("past_stop: a stop sequence is complete after position {stop_at}, output continues at {position}")]
    PastStop {
        /// Position of the token that completed the stop sequence.
        stop_at: u32,
        /// First position that should not exist.
        position: u32,
    },
    /// The claimed finish reason does not follow from the output.
    #[error("finish_reason: claimed {claimed:?}: {detail}")]
    FinishReason {
        /// The claimed reason.
        claimed: FinishReason,
        /// Why it does not hold.
        detail: String,
    },
    /// `output_text` is not the decoding of `output_tokens`.
    #[error("text_mismatch: output text differs from the decoded tokens at byte {byte}")]
    TextMismatch {
        /// First differing byte offset.
        byte: u32,
    },
    /// The output does not satisfy the request's JSON schema.
    #[error("schema: {detail}")]
    Schema {
        /// Why.
        detail: String,
    },
    /// An output token is outside the mask of the request's constraint:
    /// no output following the grammar could contain it there.
    #[error("outside_mask: output token {token} at position {position} is outside the constraint's mask")]
    OutsideMask {
        /// Output position.
        position: u32,
        /// The token id.
        token: u32,
    },
    /// An output token is not what the declared decoding picks.
    #[error("token_mismatch: position {position}: claimed {claimed}, decoding picks {expected}")]
    TokenMismatch {
        /// First failing output position.
        position: u32,
        /// The claimed token.
        claimed: u32,
        /// What the decoding picks there.
        expected: u32,
    },
    /// The log-probabilities are not the ones the decoding gives (see
    /// [`crate::logprobs`]).
    #[error("logprobs: position {position}: {detail}")]
    Logprobs {
        /// First failing output position.
        position: u32,
        /// What is wrong.
        detail: String,
    },
}

impl Rejection {
    /// The stable short code (the prefix of the verdict's reason).
    pub fn code(&self) -> &'static str {
        match self {
            Rejection::BadSignature { .. } => "bad_signature",
            Rejection::BadRequest { .. } => "bad_request",
            Rejection::WrongRequest { .. } => "wrong_request",
            Rejection::WrongModel { .. } => "wrong_model",
            Rejection::WrongEngine { .. } => "wrong_engine",
            Rejection::Usage { .. } => "usage",
            Rejection::BadToken { .. } => "bad_token",
            Rejection::PastMaxTokens { .. } => "past_max_tokens",
            Rejection::PastEos { .. } => "past_eos",
            Rejection::PastStop { .. } => "past_stop",
            Rejection::FinishReason { .. } => "finish_reason",
            Rejection::TextMismatch { .. } => "text_mismatch",
            Rejection::Schema { .. } => "schema",
            Rejection::OutsideMask { .. } => "outside_mask",
            Rejection::TokenMismatch { .. } => "token_mismatch",
            Rejection::Logprobs { .. } => "logprobs",
        }
    }

    /// Whether the inference node is answerable for this rejection (its code
    /// is on [`NODE_FAULT_CODES`]).
    pub fn is_node_fault(&self) -> bool {
        is_node_fault(self.code())
    }

    /// The output position the rejection points at, if it is token-level.
    pub fn position(&self) -> Option<u32> {
        match self {
            Rejection::BadToken { position, .. }
            | Rejection::PastEos { position, .. }
            | Rejection::PastStop { position, .. }
            | Rejection::OutsideMask { position, .. }
            | Rejection::TokenMismatch { position, .. }
            | Rejection::Logprobs { position, .. } => Some(*position),
            Rejection::PastMaxTokens { limit, .. } => Some(*limit),
            _ => None,
        }
    }
}

pub use verinfer_types::records::{is_node_fault, reason_code, NODE_FAULT_CODES};

/// The tokenizer facts the rules need. Implemented for the engine's
/// [`verinfer_inference::Tokenizer`].
pub trait Detokenizer {
    /// Number of token ids.
    fn vocab_size(&self) -> usize;
    /// The bytes of a token as generation emits them (control tokens give
    /// none); `None` for an id outside the vocabulary.
    fn token_bytes(&self, id: u32) -> Option<Vec<u8>>;
    /// Whether the token ends generation (EOS or end-of-turn).
    fn is_end(&self, id: u32) -> bool;
}

impl Detokenizer for verinfer_inference::Tokenizer {
    fn vocab_size(&self) -> usize {
        verinfer_inference::Tokenizer::vocab_size(self)
    }
    fn token_bytes(&self, id: u32) -> Option<Vec<u8>> {
        verinfer_inference::Tokenizer::token_bytes(self, id, false).ok()
    }
    fn is_end(&self, id: u32) -> bool {
        verinfer_inference::Tokenizer::is_end(self, id)
    }
}

/// What the verifier knows besides the records: its model and engine, and
/// the prompt as its engine tokenised it.
#[derive(Debug, Clone, Copy)]
pub struct Context<'a> {
    /// Engine version the verifier runs (must equal `result.engine`).
    pub engine_version: &'a str,
    /// Prompt length in tokens, after the chat template.
    pub prompt_tokens: u32,
    /// The model's context window in tokens.
    pub context_len: u32,
}

/// The near-tie tolerance of one engine version.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MarginRule {
    /// Logit distance below which the claimed and the expected token are
    /// both accepted.
    pub epsilon: f32,
}

/// Epsilon of the `arith-v2` and `arith-v3` engines (logit units).
pub const ARITH_V2_EPSILON: f32 = 1.0e-3;

impl MarginRule {
    /// The margin rule of an engine version, or `None` for an engine whose
    /// arithmetic this crate does not know.
    ///
    /// `verinfer-llm/<crate version>/arith-v2` or `.../arith-v3` (the
    /// k-quants on integer kernels): epsilon [`ARITH_V2_EPSILON`].
    pub fn for_engine(version: &str) -> Option<MarginRule> {
        let mut parts = version.split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("verinfer-llm"), Some(v), Some("arith-v2" | "arith-v3"), None)
                if !v.is_empty() =>
            {
                Some(MarginRule {
                    epsilon: ARITH_V2_EPSILON,
                })
            }
            _ => None,
        }
    }

    /// Whether logits `a` and `b` are a near tie under this rule.
    pub fn near_tie(&self, a: f32, b: f32) -> bool {
        (a - b).abs() <= self.epsilon
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The request's signature and field ranges, and the result's signature.
pub fn check_signatures(request: &Request, result: &InferenceResult) -> Result<(), Rejection> {
    match request.validate() {
        Ok(()) => {}
        Err(RecordError::Signature { .. }) => {
            return Err(Rejection::BadSignature { record: "request" })
        }
        Err(e) => {
            return Err(Rejection::BadRequest {
                detail: e.to_string(),
            })
        }
    }
    result
        .verify_signature()
        .map_err(|_| Rejection::BadSignature { record: "result" })
}

/// The result answers this request, with its model, on the verifier's engine.
pub fn check_binding(
    request: &Request,
    result: &InferenceResult,
    engine_version: &str,
) -> Result<(), Rejection> {
    let actual = request.hash().map_err(|e| Rejection::BadRequest {
        detail: e.to_string(),
    })?;
    if result.request != actual {
        return Err(Rejection::WrongRequest {
            claimed: result.request,
            actual,
        });
    }
    if result.model != request.model {
        return Err(Rejection::WrongModel {
            claimed: result.model,
            expected: request.model,
        });
    }
    if result.engine != engine_version {
        return Err(Rejection::WrongEngine {
            claimed: result.engine.clone(),
            expected: engine_version.to_string(),
        });
    }
    Ok(())
}

/// `usage` counts the prompt and the output tokens.
pub fn check_usage(result: &InferenceResult, prompt_tokens: u32) -> Result<(), Rejection> {
    let completion = to_u32(result.output_tokens.len());
    if result.usage.prompt_tokens != prompt_tokens || result.usage.completion_tokens != completion {
        return Err(Rejection::Usage {
            claimed_prompt: result.usage.prompt_tokens,
            claimed_completion: result.usage.completion_tokens,
            prompt: prompt_tokens,
            completion,
        });
    }
    Ok(())
}

/// Every output token is in the vocabulary.
pub fn check_token_range(tokens: &[u32], vocab_size: usize) -> Result<(), Rejection> {
    match tokens.iter().position(|&t| t as usize >= vocab_size) {
        Some(p) => Err(Rejection::BadToken {
            position: to_u32(p),
            token: tokens[p],
        }),
        None => Ok(()),
    }
}

/// The longest valid UTF-8 prefix of `bytes`.
fn valid_prefix(bytes: &[u8]) -> &str {
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    }
}

/// Earliest start of any of `stops` in `text` at or after `from` (moved back
/// to a character boundary).
fn find_stop(text: &str, stops: &[&str], from: usize) -> Option<usize> {
    let mut from = from.min(text.len());
    while !text.is_char_boundary(from) {
        from -= 1;
    }
    stops
        .iter()
        .filter_map(|s| text[from..].find(s).map(|i| from + i))
        .min()
}

/// How the output's decoding ends: its bytes, and the first output position
/// after which a stop sequence occurs (with where it starts in the text).
struct Decoded {
    bytes: Vec<u8>,
    stop: Option<(usize, usize)>,
}

/// Decodes `tokens` as generation does (end tokens contribute no bytes) and
/// finds the first token after which a stop sequence occurs.
fn decode(tokens: &[u32], stop: &[String], tok: &dyn Detokenizer) -> Result<Decoded, Rejection> {
    let stops: Vec<&str> = stop
        .iter()
        .filter(|s| !s.is_empty())
        .map(String::as_str)
        .collect();
    let longest = stops.iter().map(|s| s.len()).max().unwrap_or(0);
    let mut bytes = Vec::new();
    let mut searched = 0usize;
    for (i, &t) in tokens.iter().enumerate() {
        if tok.is_end(t) {
            continue;
        }
        let b = tok.token_bytes(t).ok_or(Rejection::BadToken {
            position: to_u32(i),
            token: t,
        })?;
        bytes.extend_from_slice(&b);
        if stops.is_empty() {
            continue;
        }
        let text = valid_prefix(&bytes);
        if let Some(at) = find_stop(text, &stops, searched.saturating_sub(longest)) {
            return Ok(Decoded {
                bytes,
                stop: Some((i, at)),
            });
        }
        searched = text.len();
    }
    Ok(Decoded { bytes, stop: None })
}

/// The output ends where the rules say, with the finish reason they give
/// (see the module documentation).
pub fn check_termination(
    decoding: &Decoding,
    result: &InferenceResult,
    ctx: &Context<'_>,
    tok: &dyn Detokenizer,
) -> Result<(), Rejection> {
    let tokens = &result.output_tokens;
    let n = to_u32(tokens.len());
    let limit = decoding
        .max_tokens
        .min(ctx.context_len.saturating_sub(ctx.prompt_tokens));
    if n > limit {
        return Err(Rejection::PastMaxTokens { tokens: n, limit });
    }
    if let Some(p) = tokens.iter().position(|&t| tok.is_end(t)) {
        if p + 1 < tokens.len() {
            return Err(Rejection::PastEos {
                eos_at: to_u32(p),
                position: to_u32(p + 1),
            });
        }
    }
    let decoded = decode(tokens, &decoding.stop, tok)?;
    if let Some((i, _)) = decoded.stop {
        if i + 1 < tokens.len() {
            return Err(Rejection::PastStop {
                stop_at: to_u32(i),
                position: to_u32(i + 1),
            });
        }
    }
    let last_is_end = tokens.last().is_some_and(|&t| tok.is_end(t));
    let stopped = decoded.stop.is_some();
    let claimed = result.finish_reason;
    let fail = |detail: &str| {
        Err(Rejection::FinishReason {
            claimed,
            detail: detail.to_string(),
        })
    };
    match claimed {
        FinishReason::Eos if !last_is_end => fail("the last token is not an end token"),
        FinishReason::Stop if !stopped => fail("no stop sequence occurs in the output"),
        FinishReason::Length if last_is_end => fail("the output ends with an end token"),
        FinishReason::Length if stopped => fail("the output ends at a stop sequence"),
        FinishReason::Length if n < limit => fail(&format!(
            "{n} output tokens, generation ends by length only at {limit}"
        )),
        _ => Ok(()),
    }
}

/// The output text generation gives for `tokens`: the lossy UTF-8 decoding of
/// their bytes, cut before the earliest stop sequence when `finish` is
/// [`FinishReason::Stop`].
pub fn expected_text(
    tokens: &[u32],
    finish: FinishReason,
    stop: &[String],
    tok: &dyn Detokenizer,
) -> Result<String, Rejection> {
    let decoded = decode(tokens, stop, tok)?;
    let full = String::from_utf8_lossy(&decoded.bytes).into_owned();
    match (finish, decoded.stop) {
        (FinishReason::Stop, Some((_, at))) if full.is_char_boundary(at) => {
            Ok(full[..at].to_string())
        }
        _ => Ok(full),
    }
}

/// `output_text` is the decoding of `output_tokens`.
pub fn check_text(
    decoding: &Decoding,
    result: &InferenceResult,
    tok: &dyn Detokenizer,
) -> Result<(), Rejection> {
    let want = expected_text(
        &result.output_tokens,
        result.finish_reason,
        &decoding.stop,
        tok,
    )?;
    if want == result.output_text {
        return Ok(());
    }
    let byte = want
        .bytes()
        .zip(result.output_text.bytes())
        .position(|(a, b)| a != b)
        .unwrap_or(want.len().min(result.output_text.len()));
    Err(Rejection::TextMismatch { byte: to_u32(byte) })
}

/// The output text satisfies the request's JSON schema, if it has one.
///
/// The schema is compiled without network access: remote `$ref`s are not
/// fetched and make the request a `bad_request`.
pub fn check_schema(request: &Request, output_text: &str) -> Result<(), Rejection> {
    let Some(schema) = &request.policy.json_schema else {
        return Ok(());
    };
    let validator = jsonschema::validator_for(schema).map_err(|e| Rejection::BadRequest {
        detail: format!("invalid JSON schema: {e}"),
    })?;
    let value: serde_json::Value =
        serde_json::from_str(output_text).map_err(|e| Rejection::Schema {
            detail: format!("output is not JSON: {e}"),
        })?;
    validator.validate(&value).map_err(|e| Rejection::Schema {
        detail: format!("{e} at {}", e.instance_path()),
    })
}

/// The request's constraint compiles (a schema with an unsupported keyword
/// or that cannot be met is the request's fault, `bad_request`).
pub fn check_constraint(request: &Request) -> Result<(), Rejection> {
    match &request.decoding.constraint {
        Some(c) => verinfer_inference::constraint::validate(c).map_err(|e| Rejection::BadRequest {
            detail: e.to_string(),
        }),
        None => Ok(()),
    }
}

/// Every rule that needs no recomputation, in protocol order: signatures,
/// binding (request, model, engine), usage, token ids, termination and
/// finish reason, text, schema, constraint.
pub fn check_records(
    request: &Request,
    result: &InferenceResult,
    ctx: &Context<'_>,
    tok: &dyn Detokenizer,
) -> Result<(), Rejection> {
    check_signatures(request, result)?;
    check_binding(request, result, ctx.engine_version)?;
    check_output(request, result, ctx, tok)
}

/// The rules of [`check_records`] after signatures and binding: usage, token
/// ids, termination and finish reason, text, schema, constraint.
pub fn check_output(
    request: &Request,
    result: &InferenceResult,
    ctx: &Context<'_>,
    tok: &dyn Detokenizer,
) -> Result<(), Rejection> {
    check_usage(result, ctx.prompt_tokens)?;
    check_token_range(&result.output_tokens, tok.vocab_size())?;
    check_termination(&request.decoding, result, ctx, tok)?;
    check_text(&request.decoding, result, tok)?;
    check_schema(request, &result.output_text)?;
    check_constraint(request)
}

/// The token the declared decoding picks at a scored position.
pub fn expected_token(decoding: &Decoding, score: &PositionScore) -> u32 {
    if decoding.temperature_milli == 0 {
        score.argmax
    } else {
        score.sampled
    }
}

/// Checks each claimed token against one score pass over the output, with
/// the margin rule; returns the number of positions checked.
///
/// Under a constraint the scores are of the masked logits: a claimed token
/// outside its position's mask is `outside_mask`, and the picks (and the
/// margin rule) are among the allowed tokens only.
///
/// `scores[i]` must be the score of `claimed[i]` (as `Engine::score` returns
/// them). A score list that does not line up with the claimed tokens is
/// treated as a mismatch at the first position where it does not.
pub fn check_tokens(
    decoding: &Decoding,
    claimed: &[u32],
    scores: &[PositionScore],
    margin: MarginRule,
) -> Result<u32, Rejection> {
    for (i, &c) in claimed.iter().enumerate() {
        let position = to_u32(i);
        let Some(s) = scores.get(i).filter(|s| s.claimed == c) else {
            return Err(Rejection::TokenMismatch {
                position,
                claimed: c,
                expected: scores
                    .get(i)
                    .map_or(u32::MAX, |s| expected_token(decoding, s)),
            });
        };
        if s.outside_mask {
            return Err(Rejection::OutsideMask { position, token: c });
        }
        let expected = expected_token(decoding, s);
        if expected == c {
            continue;
        }
        // The expected token's logit: the arg-max's is claimed + margin; a
        // sampled pick's is looked up among the best candidates.
        let expected_logit = if expected == s.argmax {
            Some(s.claimed_logit + s.claimed_margin)
        } else {
            s.top.iter().find(|t| t.token == expected).map(|t| t.logit)
        };
        if expected_logit.is_some_and(|l| margin.near_tie(l, s.claimed_logit)) {
            continue;
        }
        return Err(Rejection::TokenMismatch {
            position,
            claimed: c,
            expected,
        });
    }
    Ok(to_u32(claimed.len()))
}

#[cfg(test)]
mod tests;
