//! Answering a [`Request`]: the inference node's job in one function, and the
//! dishonest answers ([`Fault`]) that tests and `verinfer infer --fault` use
//! to show that verifiers catch them.
//!
//! [`respond`] maps the request's [`Input`] to prompt tokens with
//! [`prompt_tokens`] (the one mapping: a verifier recomputes the same prompt
//! through it), its [`Decoding`] to [`GenerateParams`] with
//! [`generate_params`], generates, and signs the [`InferenceResult`].
//!
//! [`respond_with_fault`] answers dishonestly in one of the ways a cheating
//! node might, and still signs the answer properly: a verifier must catch
//! the lie from the records and a recomputation, never from a broken
//! signature. Each fault also keeps everything it does not lie about
//! consistent (the text is the decoding of the claimed tokens, the usage
//! counts them), so that exactly the rule aimed at is the one that fails.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use verinfer_types::records::{
    Decoding, FinishReason, InferenceResult, Input, Request, ResultTag, TokenLogprob, Usage,
};
use verinfer_types::{Hash, Record, RecordError, SecretKey, Signature, SignedRecord};

use crate::engine::{self, Engine, EngineOptions, GenerateParams, Generation, ENGINE_VERSION};
use crate::error::LlmError;
use crate::logprobs::{self, LogitRule};
use crate::sampler::SamplingParams;
use crate::tokenizer::Tokenizer;
use crate::{models, ChatMessage};

/// Why a request could not be answered (or a fault not applied).
#[derive(Debug, thiserror::Error)]
pub enum RespondError {
    /// The request names a model this engine does not run.
    #[error("this node runs model {serves}, the request asks for {requested}")]
    WrongModel {
        /// The id of the model loaded.
        serves: Hash,
        /// The id the request names.
        requested: Hash,
    },
    /// The request is invalid (bad signature, out-of-range field), or a
    /// record could not be encoded or signed.
    #[error("record: {0}")]
    Record(#[from] RecordError),
    /// The engine failed (prompt too long for the context, template error...).
    #[error(transparent)]
    Engine(#[from] LlmError),
    /// The node failed while answering (not the request's fault).
    #[error("the engine failed: {0}")]
    Failed(String),
    /// The request was withdrawn (its client left) before it was answered.
    #[error("cancelled: the client left")]
    Cancelled,
    /// The fault cannot be applied to this request or answer.
    #[error("cannot apply fault {fault}: {reason}")]
    Fault {
        /// The fault, as it is written on the command line.
        fault: String,
        /// Why.
        reason: String,
    },
}

/// What kind of failure a [`RespondError`] is, for the status a node
/// answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    /// The request is wrong (bad field, unknown token, wrong model): 400.
    BadRequest,
    /// The prompt does not fit the model's context: 413.
    TooLarge,
    /// The node failed or gave up: 503, and another node may answer.
    Unavailable,
}

impl RespondError {
    /// Whether the request or the node is at fault. The engine's refusals
    /// of input are the request's; only a failure of the node itself (or a
    /// cancelled job) is `Unavailable`.
    pub fn class(&self) -> ErrorClass {
        match self {
            RespondError::WrongModel { .. } | RespondError::Record(_) => ErrorClass::BadRequest,
            RespondError::Engine(LlmError::ContextOverflow { .. }) => ErrorClass::TooLarge,
            RespondError::Engine(
                LlmError::InvalidRequest(_) | LlmError::Template(_) | LlmError::Tokenizer(_),
            ) => ErrorClass::BadRequest,
            RespondError::Engine(_)
            | RespondError::Failed(_)
            | RespondError::Cancelled
            | RespondError::Fault { .. } => ErrorClass::Unavailable,
        }
    }
}

/// The prompt tokens of a request input: the chat template for messages,
/// plain encoding (no special tokens parsed) for a prompt string, token ids
/// as they are.
///
/// This is the only place that mapping lives: inference nodes build their
/// prompt with it and verifiers recompute through it, so both score the
/// same tokens.
pub fn prompt_tokens(engine: &Engine, input: &Input) -> Result<Vec<u32>, LlmError> {
    match input {
        Input::Messages(m) => {
            let msgs: Vec<ChatMessage> = m
                .iter()
                .map(|m| ChatMessage::new(&m.role, &m.content))
                .collect();
            engine.chat_prompt(&msgs)
        }
        Input::Prompt(p) => Ok(engine.model().tokenizer.encode(p, false)),
        Input::Tokens(t) => Ok(t.clone()),
    }
}

/// The generation parameters of `request`: its decoding, with computed
/// prefixes scoped to its requester (they serve no one else).
pub fn request_params(request: &Request) -> GenerateParams {
    GenerateParams {
        cache_scope: Some(request.requester.to_bytes()),
        ..generate_params(&request.decoding)
    }
}

/// The generation parameters of a request's decoding.
pub fn generate_params(decoding: &Decoding) -> GenerateParams {
    GenerateParams {
        max_tokens: decoding.max_tokens,
        sampling: SamplingParams {
            temperature_milli: decoding.temperature_milli,
            top_k: decoding.top_k,
            top_p_milli: decoding.top_p_milli,
            seed: decoding.seed,
        },
        stop: decoding.stop.clone(),
        constraint: decoding.constraint.clone(),
        logit_rule: LogitRule {
            frequency_milli: decoding.frequency_penalty_milli,
            presence_milli: decoding.presence_penalty_milli,
            bias: decoding
                .logit_bias
                .iter()
                .map(|b| (b.token, b.bias_milli))
                .collect(),
        },
        top_logprobs: decoding.top_logprobs,
        cache_scope: None,
    }
}

fn finish_reason(f: engine::FinishReason) -> FinishReason {
    match f {
        engine::FinishReason::Eos => FinishReason::Eos,
        engine::FinishReason::Stop => FinishReason::Stop,
        engine::FinishReason::Length => FinishReason::Length,
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// Checks what an honest node checks before it spends compute on a request.
fn admit(model_id: Hash, request: &Request) -> Result<(), RespondError> {
    if request.model != model_id {
        return Err(RespondError::WrongModel {
            serves: model_id,
            requested: request.model,
        });
    }
    request.validate()?;
    Ok(())
}

fn signed(
    request: &Request,
    tokens: Vec<u32>,
    text: String,
    finish: FinishReason,
    prompt_len: u32,
    logprobs: Option<Vec<TokenLogprob>>,
    key: &SecretKey,
) -> Result<InferenceResult, RespondError> {
    let mut result = InferenceResult {
        tag: ResultTag,
        request: request.hash()?,
        model: request.model,
        engine: ENGINE_VERSION.to_string(),
        usage: Usage {
            prompt_tokens: prompt_len,
            completion_tokens: to_u32(tokens.len()),
        },
        output_tokens: tokens,
        output_text: text,
        finish_reason: finish,
        logprobs,
        node: key.public(),
        signature: Signature::default(),
    };
    result.sign(key)?;
    Ok(result)
}

/// A generation signed as it is, as the answer to `request`, with its
/// log-probabilities when the request asks for them.
fn signed_generation(
    engine: &Engine,
    request: &Request,
    g: Generation,
    key: &SecretKey,
) -> Result<InferenceResult, RespondError> {
    let finish = finish_reason(g.finish_reason);
    let logprobs = match request.decoding.top_logprobs {
        Some(_) => Some(logprobs::to_records(
            &engine.model().tokenizer,
            &g.logprobs,
        )?),
        None => None,
    };
    signed(
        request,
        g.tokens,
        g.text,
        finish,
        g.usage.prompt_tokens,
        logprobs,
        key,
    )
}

/// Answers `request` honestly on `engine` (whose model file has id
/// `model_id`), signing the Result with `key`. `on_token(token, text)` sees
/// each token as it is generated (see [`engine::TokenCallback`]).
pub fn respond(
    engine: &mut Engine,
    model_id: Hash,
    request: &Request,
    key: &SecretKey,
    on_token: &mut dyn FnMut(u32, &str),
) -> Result<InferenceResult, RespondError> {
    admit(model_id, request)?;
    let prompt = prompt_tokens(engine, &request.input)?;
    let g = engine.generate(&prompt, &request_params(request), on_token)?;
    signed_generation(engine, request, g, key)
}

/// Answers several requests in one batch on `engine`: their decode steps
/// share the weight passes, and each Result is the one [`respond`] gives for
/// its request alone (the engine's batch determinism). `callbacks[i]` sees
/// the tokens of `requests[i]`. A request that cannot be answered (wrong
/// model, bad signature, token id outside the vocabulary, prompt too long)
/// gets its own error and does not hold up the others.
pub fn respond_batch(
    engine: &mut Engine,
    model_id: Hash,
    requests: &[Request],
    key: &SecretKey,
    callbacks: Vec<engine::TokenCallback<'_>>,
) -> Vec<Result<InferenceResult, RespondError>> {
    respond_batch_until(engine, model_id, requests, key, callbacks, &mut |_| false)
}

/// [`respond_batch`], asking `cancelled(i)` before each decode step whether
/// request `i` is still wanted (its client may have left): a cancelled
/// request stops at the next token and gets [`RespondError::Cancelled`].
pub fn respond_batch_until(
    engine: &mut Engine,
    model_id: Hash,
    requests: &[Request],
    key: &SecretKey,
    callbacks: Vec<engine::TokenCallback<'_>>,
    cancelled: &mut dyn FnMut(usize) -> bool,
) -> Vec<Result<InferenceResult, RespondError>> {
    let mut steps: Vec<_> = callbacks
        .into_iter()
        .map(|cb| move |s: engine::Step<'_>| cb(s.token, s.text))
        .collect();
    let steps = steps
        .iter_mut()
        .map(|s| s as engine::StepCallback<'_>)
        .collect();
    respond_batch_steps(engine, model_id, requests, key, steps, cancelled)
}

/// [`respond_batch_until`] with callbacks that also see each token's
/// log-probability record (when the request asks for them), so a stream
/// can carry them with the token's text.
pub fn respond_batch_steps(
    engine: &mut Engine,
    model_id: Hash,
    requests: &[Request],
    key: &SecretKey,
    callbacks: Vec<engine::StepCallback<'_>>,
    cancelled: &mut dyn FnMut(usize) -> bool,
) -> Vec<Result<InferenceResult, RespondError>> {
    let mut out: Vec<Option<Result<InferenceResult, RespondError>>> =
        requests.iter().map(|_| None).collect();
    let (mut batch, mut cbs, mut which) = (Vec::new(), Vec::new(), Vec::new());
    for (i, (request, cb)) in requests.iter().zip(callbacks).enumerate() {
        let prompt = admit(model_id, request)
            .and_then(|()| Ok(prompt_tokens(engine, &request.input)?))
            .and_then(|p| fits(engine, p))
            .and_then(|p| compiles(engine, request).map(|()| p));
        match prompt {
            Ok(prompt) => {
                batch.push(engine::BatchRequest {
                    prompt,
                    params: request_params(request),
                });
                cbs.push(cb);
                which.push(i);
            }
            Err(e) => out[i] = Some(Err(e)),
        }
    }
    if !batch.is_empty() {
        // Every member was checked as the engine checks: what fails now is
        // the node, for all of them.
        match engine.generate_batch_steps(&batch, cbs, &mut |k| cancelled(which[k])) {
            Ok(gens) => {
                for (g, &i) in gens.into_iter().zip(&which) {
                    out[i] = Some(if cancelled(i) {
                        Err(RespondError::Cancelled)
                    } else {
                        signed_generation(engine, &requests[i], g, key)
                    });
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for &i in &which {
                    out[i] = Some(Err(RespondError::Failed(msg.clone())));
                }
            }
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(RespondError::Failed("not answered".into()))))
        .collect()
}

/// Whether the request's constraint compiles on this vocabulary (checked
/// before batching, so one bad schema does not fail its batch).
fn compiles(engine: &Engine, request: &Request) -> Result<(), RespondError> {
    if let Some(c) = &request.decoding.constraint {
        engine
            .grammars()?
            .matcher(c)
            .map_err(|e| LlmError::InvalidRequest(e.to_string()))?;
    }
    Ok(())
}

/// `prompt` if the engine can run it: not empty, every token id within the
/// vocabulary, and room in the context for at least one token (generation
/// stops at the context's end, so a larger `max_tokens` is not an error).
fn fits(engine: &Engine, prompt: Vec<u32>) -> Result<Vec<u32>, RespondError> {
    let context = engine.model().max_seq_len();
    let vocab = engine.model().config.vocab;
    if prompt.is_empty() {
        return Err(LlmError::InvalidRequest("empty prompt".into()).into());
    }
    if let Some(t) = prompt.iter().find(|&&t| t as usize >= vocab) {
        return Err(LlmError::InvalidRequest(format!(
            "token id {t} out of range (vocabulary {vocab})"
        ))
        .into());
    }
    if prompt.len() >= context {
        return Err(LlmError::ContextOverflow {
            prompt: prompt.len(),
            context,
        }
        .into());
    }
    Ok(prompt)
}

/// A way of answering dishonestly, with a properly signed Result.
///
/// Written on the command line as `swap-model:PATH`, `edit-token:POS`,
/// `truncate:N`, `extend:N`, `wrong-seed`, `replay:FILE`, `off-mask:POS` or
/// `edit-logprob:POS`
/// ([`FromStr`] and [`fmt::Display`] round-trip).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with the GGUF model at this path while claiming the requested
    /// one (a cheaper or different model). The prompt is the other model's,
    /// the claimed usage and text are dressed with the requested model's
    /// tokenizer. Caught by the recomputation (`token_mismatch` at the first
    /// position where the models disagree) when the vocabularies agree;
    /// otherwise by the record rules (`usage`, `bad_token`, `text_mismatch`).
    SwapModel(PathBuf),
    /// Lower the reported log-probability of the output token at this
    /// position by [`LOGPROB_EDIT_MICRO`] (the request must ask for
    /// log-probabilities). Caught as `logprobs` at that position.
    EditLogprob(u32),
    /// Replace the output token at this position with another ordinary
    /// token, text re-derived. Caught as `token_mismatch` at that position
    /// (as `finish_reason` when the edited token is the final end token).
    EditToken(u32),
    /// Drop the last N output tokens (all of them if there are fewer) and
    /// claim `length`. Caught as `finish_reason`: generation stops early
    /// only at an end token or a stop sequence.
    Truncate(u32),
    /// Keep decoding N more tokens after generation ended (end token, stop
    /// sequence or `max_tokens`), keeping the finish reason. Caught as
    /// `past_max_tokens`, `past_eos` or `past_stop`, by whichever ending it
    /// runs past first in rule order (`max_tokens` first).
    Extend(u32),
    /// Sample with another seed (the first of `seed ^ 1`, `seed ^ 2`, ...
    /// that changes the output). Caught as `token_mismatch` at the first
    /// position where the outputs differ. A greedy request's output does not
    /// depend on its seed, so this fault refuses greedy requests.
    WrongSeed,
    /// Return, unchanged and with its signature intact, the Result of an
    /// earlier `verinfer infer --json` output stored in this file (a
    /// `{"request", "result"}` object). Caught as `wrong_request`.
    Replay(PathBuf),
    /// Step outside the constraint's mask at this position: replace the
    /// output token there with the next ordinary token (wrapping) that the
    /// request's constraint does not allow there, text re-derived (a node
    /// that skips the mask, or forces output the schema forbids). Caught as
    /// `outside_mask` at that position. Refuses unconstrained requests.
    OffMask(u32),
}

/// A fault string that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad fault {given:?}: {reason} (kinds: swap-model:PATH, edit-token:POS, truncate:N, extend:N, wrong-seed, replay:FILE, off-mask:POS, edit-logprob:POS)")]
pub struct FaultParseError {
    /// The string given.
    pub given: String,
    /// What is wrong with it.
    pub reason: String,
}

impl FromStr for Fault {
    type Err = FaultParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| FaultParseError {
            given: s.to_string(),
            reason: reason.to_string(),
        };
        let (kind, arg) = match s.split_once(':') {
            Some((k, a)) => (k, Some(a)),
            None => (s, None),
        };
        let count = |what: &str, min: u32| -> Result<u32, FaultParseError> {
            let a = arg.ok_or_else(|| err(&format!("{kind} needs :{what}")))?;
            let n: u32 = a
                .parse()
                .map_err(|_| err(&format!("{what} must be a non-negative integer")))?;
            if n < min {
                return Err(err(&format!("{what} must be at least {min}")));
            }
            Ok(n)
        };
        let path = |what: &str| -> Result<PathBuf, FaultParseError> {
            match arg {
                Some(a) if !a.is_empty() => Ok(PathBuf::from(a)),
                _ => Err(err(&format!("{kind} needs :{what}"))),
            }
        };
        match kind {
            "swap-model" => Ok(Fault::SwapModel(path("PATH")?)),
            "edit-token" => Ok(Fault::EditToken(count("POS", 0)?)),
            "edit-logprob" => Ok(Fault::EditLogprob(count("POS", 0)?)),
            // 0 would be the honest answer, not a fault.
            "truncate" => Ok(Fault::Truncate(count("N", 1)?)),
            "extend" => Ok(Fault::Extend(count("N", 1)?)),
            "wrong-seed" if arg.is_none() => Ok(Fault::WrongSeed),
            "wrong-seed" => Err(err("wrong-seed takes no argument")),
            "replay" => Ok(Fault::Replay(path("FILE")?)),
            "off-mask" => Ok(Fault::OffMask(count("POS", 0)?)),
            _ => Err(err("unknown kind")),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::SwapModel(p) => write!(f, "swap-model:{}", p.display()),
            Fault::EditToken(n) => write!(f, "edit-token:{n}"),
            Fault::EditLogprob(n) => write!(f, "edit-logprob:{n}"),
            Fault::Truncate(n) => write!(f, "truncate:{n}"),
            Fault::Extend(n) => write!(f, "extend:{n}"),
            Fault::WrongSeed => f.write_str("wrong-seed"),
            Fault::Replay(p) => write!(f, "replay:{}", p.display()),
            Fault::OffMask(n) => write!(f, "off-mask:{n}"),
        }
    }
}

/// Answers `request` dishonestly as `fault` says, with a Result signed by
/// `key` (see [`Fault`] for what each kind does and what catches it).
pub fn respond_with_fault(
    engine: &mut Engine,
    model_id: Hash,
    request: &Request,
    key: &SecretKey,
    fault: &Fault,
) -> Result<InferenceResult, RespondError> {
    admit(model_id, request)?;
    match fault {
        // Neither needs the honest answer.
        Fault::Replay(path) => replay(path, request, fault),
        Fault::SwapModel(path) => swap_model(engine, model_id, path, request, key, fault),
        _ => {
            let honest = respond(engine, model_id, request, key, &mut |_, _| {})?;
            falsify(engine, request, &honest, fault, key)
        }
    }
}

/// Turns `honest`, the honest answer to `request` from `engine`, into the
/// dishonest one `fault` describes, signed by `key`. The same as
/// [`respond_with_fault`] when the honest answer is already at hand (tests
/// derive every fault from one generation). `honest` is not re-checked.
pub fn falsify(
    engine: &mut Engine,
    request: &Request,
    honest: &InferenceResult,
    fault: &Fault,
    key: &SecretKey,
) -> Result<InferenceResult, RespondError> {
    let cannot = |reason: String| RespondError::Fault {
        fault: fault.to_string(),
        reason,
    };
    let stop = &request.decoding.stop;
    let prompt_len = honest.usage.prompt_tokens;
    let mut tokens = honest.output_tokens.clone();
    let mut finish = honest.finish_reason;
    let mut logprobs = honest.logprobs.clone();
    match fault {
        Fault::Replay(path) => return replay(path, request, fault),
        Fault::SwapModel(path) => {
            return swap_model(engine, request.model, path, request, key, fault)
        }
        Fault::WrongSeed => return wrong_seed(engine, request, honest, key, fault),
        Fault::EditToken(pos) => {
            let n = tokens.len();
            let slot = tokens
                .get_mut(*pos as usize)
                .ok_or_else(|| cannot(format!("the output has {n} tokens, no position {pos}")))?;
            *slot = replacement(&engine.model().tokenizer, *slot)
                .ok_or_else(|| cannot("no other ordinary token in the vocabulary".into()))?;
        }
        Fault::EditLogprob(pos) => {
            let entry = logprobs
                .as_mut()
                .ok_or_else(|| cannot("the request asks for no log-probabilities".into()))?
                .get_mut(*pos as usize)
                .ok_or_else(|| cannot(format!("no log-probability at position {pos}")))?;
            // Less likely by LOGPROB_EDIT_MICRO, still a log-probability.
            entry.logprob_micro = entry
                .logprob_micro
                .saturating_sub(LOGPROB_EDIT_MICRO)
                .max(logprobs::MIN_LOGPROB_MICRO);
        }
        Fault::Truncate(n) => {
            if tokens.is_empty() {
                return Err(cannot("the output is empty".into()));
            }
            tokens.truncate(tokens.len().saturating_sub(*n as usize));
            finish = FinishReason::Length;
        }
        Fault::Extend(n) => {
            let prompt = prompt_tokens(engine, &request.input)?;
            let more = continue_past_end(engine, &request.decoding, &prompt, &tokens, *n)?;
            if more.is_empty() {
                return Err(cannot("the context window is full".into()));
            }
            tokens.extend(more);
            finish = honest.finish_reason;
        }
        Fault::OffMask(pos) => {
            let c = request
                .decoding
                .constraint
                .as_ref()
                .ok_or_else(|| cannot("the request has no constraint".into()))?;
            let at = *pos as usize;
            if at >= tokens.len() {
                let n = tokens.len();
                return Err(cannot(format!(
                    "the output has {n} tokens, no position {pos}"
                )));
            }
            let mut m = engine
                .grammars()?
                .matcher(c)
                .map_err(|e| cannot(e.to_string()))?;
            for &t in &tokens[..at] {
                m.advance(t);
            }
            let mask = m.allowed();
            let tok = &engine.model().tokenizer;
            let vocab = to_u32(tok.vocab_size());
            tokens[at] = (1..vocab)
                .map(|d| tokens[at].wrapping_add(d) % vocab)
                .find(|&t| !tok.is_end(t) && !tok.is_control(t) && !mask.allows(t))
                .ok_or_else(|| cannot("every ordinary token is allowed there".into()))?;
        }
    }
    let text = output_text(&engine.model().tokenizer, &tokens, finish, stop)?;
    signed(request, tokens, text, finish, prompt_len, logprobs, key)
}

/// How much [`Fault::EditLogprob`] lowers a log-probability, in micro-nats
/// (0.01 nat: far beyond the verifiers' bound, yet a plausible value).
pub const LOGPROB_EDIT_MICRO: i64 = 10_000;

/// The next ordinary token after `t` (wrapping): not an end token, not a
/// control token, so the edit changes only the token check's outcome.
fn replacement(tok: &Tokenizer, t: u32) -> Option<u32> {
    let vocab = to_u32(tok.vocab_size());
    (1..vocab)
        .map(|d| t.wrapping_add(d) % vocab)
        .find(|&c| !tok.is_end(c) && !tok.is_control(c))
}

/// Up to `n` tokens the model generates after `output`, ignoring every
/// ending (end token, stop sequence, `max_tokens`), with the request's
/// sampling: positions are absolute, so the seeded sampler draws what it
/// would have drawn had generation never stopped.
fn continue_past_end(
    engine: &mut Engine,
    decoding: &Decoding,
    prompt: &[u32],
    output: &[u32],
    n: u32,
) -> Result<Vec<u32>, LlmError> {
    let context = engine.model().max_seq_len();
    let mut seq: Vec<u32> = prompt.iter().chain(output).copied().collect();
    let mut more = Vec::new();
    // Each call stops at the next end token; start again after it.
    while to_u32(more.len()) < n && seq.len() < context {
        let params = GenerateParams {
            max_tokens: n - to_u32(more.len()),
            stop: Vec::new(),
            ..generate_params(decoding)
        };
        let g = engine.generate(&seq, &params, &mut |_, _| {})?;
        if g.tokens.is_empty() {
            break;
        }
        seq.extend_from_slice(&g.tokens);
        more.extend(g.tokens);
    }
    Ok(more)
}

/// The output text generation gives for `tokens` (as the verifier's rules
/// define it): the lossy UTF-8 decoding of their bytes, end tokens giving
/// none, cut before the earliest stop sequence found at the first token
/// after which one occurs, when `finish` is `stop`.
fn output_text(
    tok: &Tokenizer,
    tokens: &[u32],
    finish: FinishReason,
    stop: &[String],
) -> Result<String, LlmError> {
    let stops: Vec<&str> = stop
        .iter()
        .filter(|s| !s.is_empty())
        .map(String::as_str)
        .collect();
    let mut bytes = Vec::new();
    let mut cut = None;
    for &t in tokens {
        if tok.is_end(t) {
            continue;
        }
        bytes.extend(tok.token_bytes(t, false)?);
        if cut.is_some() || finish != FinishReason::Stop {
            continue;
        }
        let valid = match std::str::from_utf8(&bytes) {
            Ok(s) => s,
            Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
        };
        cut = stops.iter().filter_map(|s| valid.find(s)).min();
    }
    let full = String::from_utf8_lossy(&bytes).into_owned();
    Ok(match cut {
        Some(at) if full.is_char_boundary(at) => full[..at].to_string(),
        _ => full,
    })
}

fn replay(path: &Path, request: &Request, fault: &Fault) -> Result<InferenceResult, RespondError> {
    let cannot = |reason: String| RespondError::Fault {
        fault: fault.to_string(),
        reason,
    };
    let text = std::fs::read_to_string(path)
        .map_err(|e| cannot(format!("reading {}: {e}", path.display())))?;
    #[derive(serde::Deserialize)]
    struct Pair {
        result: InferenceResult,
    }
    let pair: Pair = serde_json::from_str(&text).map_err(|e| {
        cannot(format!(
            "{} is not a verinfer infer --json output: {e}",
            path.display()
        ))
    })?;
    if pair.result.request == request.hash()? {
        return Err(cannot(format!(
            "{} already answers this very request",
            path.display()
        )));
    }
    Ok(pair.result)
}

fn swap_model(
    engine: &Engine,
    model_id: Hash,
    path: &Path,
    request: &Request,
    key: &SecretKey,
    fault: &Fault,
) -> Result<InferenceResult, RespondError> {
    let other_id: Option<Hash> = models::file_sha256(path)?.parse().ok();
    if other_id == Some(model_id) {
        return Err(RespondError::Fault {
            fault: fault.to_string(),
            reason: "that file is the requested model itself".into(),
        });
    }
    let mut other = Engine::load(
        path,
        EngineOptions {
            threads: engine.threads(),
            force_scalar: !engine.uses_simd(),
        },
    )?;
    let prompt = prompt_tokens(&other, &request.input)?;
    let g = other.generate(&prompt, &generate_params(&request.decoding), &mut |_, _| {})?;
    // Dress the answer as the requested model's: its prompt length, and the
    // text its tokenizer gives (the other model's text if a token is not in
    // the requested model's vocabulary; the verifier catches that anyway).
    let claimed_prompt = prompt_tokens(engine, &request.input)?;
    let finish = finish_reason(g.finish_reason);
    let tok = &engine.model().tokenizer;
    let text = output_text(tok, &g.tokens, finish, &request.decoding.stop).unwrap_or(g.text);
    signed(
        request,
        g.tokens,
        text,
        finish,
        to_u32(claimed_prompt.len()),
        None,
        key,
    )
}

fn wrong_seed(
    engine: &mut Engine,
    request: &Request,
    honest: &InferenceResult,
    key: &SecretKey,
    fault: &Fault,
) -> Result<InferenceResult, RespondError> {
    let cannot = |reason: &str| RespondError::Fault {
        fault: fault.to_string(),
        reason: reason.to_string(),
    };
    if request.decoding.temperature_milli == 0 {
        return Err(cannot(
            "a greedy request (temperature 0) gives the same output with any seed",
        ));
    }
    let prompt = prompt_tokens(engine, &request.input)?;
    // Flipping low bits keeps the seed within 2^53 - 1.
    for flip in 1..=16u64 {
        let mut params = generate_params(&request.decoding);
        params.sampling.seed ^= flip;
        let g: Generation = engine.generate(&prompt, &params, &mut |_, _| {})?;
        if g.tokens != honest.output_tokens {
            return signed_generation(engine, request, g, key);
        }
    }
    Err(cannot(
        "16 other seeds give the same output (temperature too low or output too short)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{tiny_model, TinySpec};
    use verinfer_types::testing;

    fn tiny() -> (tempfile::TempDir, Engine, Hash) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("tiny.gguf");
        let bytes = tiny_model(&TinySpec::default());
        std::fs::write(&path, &bytes).expect("write");
        let engine = Engine::load(&path, EngineOptions::default()).expect("load");
        (dir, engine, Hash::of(&bytes))
    }

    fn tokens_request(model: Hash, tokens: Vec<u32>, max_tokens: u32) -> Request {
        let mut r = testing::request(model);
        r.input = Input::Tokens(tokens);
        r.decoding = Decoding {
            temperature_milli: 0,
            max_tokens,
            ..Decoding::default()
        };
        r.sign(&testing::key(1)).expect("sign");
        r
    }

    /// Runs `requests` as one batch, `cancelled` asked as the engine goes.
    fn batch(
        engine: &mut Engine,
        id: Hash,
        requests: &[Request],
        cancelled: &mut dyn FnMut(usize) -> bool,
    ) -> Vec<Result<InferenceResult, RespondError>> {
        type Sink = Box<dyn FnMut(u32, &str)>;
        let mut sinks: Vec<Sink> = requests
            .iter()
            .map(|_| Box::new(|_: u32, _: &str| {}) as Sink)
            .collect();
        let callbacks = sinks
            .iter_mut()
            .map(|b| b.as_mut() as engine::TokenCallback<'_>)
            .collect();
        respond_batch_until(engine, id, requests, &testing::key(9), callbacks, cancelled)
    }

    #[test]
    fn one_bad_member_fails_alone_as_a_bad_request() {
        let (_dir, mut engine, id) = tiny();
        let vocab = engine.model().config.vocab as u32;
        let context = engine.model().max_seq_len();
        let good = tokens_request(id, vec![1, 40, 41, 42], 6);
        let mut bad_schema = tokens_request(id, vec![1, 40], 6);
        bad_schema.decoding.constraint = Some(verinfer_types::records::Constraint::JsonSchema(
            serde_json::json!({"type": "object", "not": {}}),
        ));
        bad_schema.sign(&testing::key(1)).expect("sign");
        let requests = vec![
            good.clone(),
            tokens_request(id, vec![1, vocab + 5], 6),
            tokens_request(id, vec![1; context], 6),
            tokens_request(id, vec![1, 40], 6),
            bad_schema,
        ];
        let results = batch(&mut engine, id, &requests, &mut |_| false);
        let class = |i: usize| results[i].as_ref().map_err(RespondError::class).err();
        assert_eq!(class(1), Some(ErrorClass::BadRequest), "{:?}", results[1]);
        assert_eq!(class(2), Some(ErrorClass::TooLarge), "{:?}", results[2]);
        assert_eq!(class(4), Some(ErrorClass::BadRequest), "{:?}", results[4]);
        let alone = respond(&mut engine, id, &good, &testing::key(9), &mut |_, _| {});
        assert_eq!(results[0].as_ref().ok(), alone.as_ref().ok());
        assert!(results[3].is_ok(), "{:?}", results[3]);
        // The engine alone refuses the same input as a bad request, not as
        // a failure of the node.
        let e = respond(
            &mut engine,
            id,
            &requests[1],
            &testing::key(9),
            &mut |_, _| {},
        );
        assert_eq!(e.err().map(|e| e.class()), Some(ErrorClass::BadRequest));
    }

    #[test]
    fn a_cancelled_member_stops_and_the_others_finish() {
        let (_dir, mut engine, id) = tiny();
        let requests = vec![
            tokens_request(id, vec![1, 40, 41, 42], 40),
            tokens_request(id, vec![1, 43, 44], 40),
        ];
        let mut asked = 0;
        let results = batch(&mut engine, id, &requests, &mut |i| {
            if i == 1 {
                asked += 1;
            }
            i == 1 && asked > 2
        });
        assert!(matches!(results[1], Err(RespondError::Cancelled)));
        let alone = respond(
            &mut engine,
            id,
            &requests[0],
            &testing::key(9),
            &mut |_, _| {},
        );
        assert_eq!(results[0].as_ref().ok(), alone.as_ref().ok());
    }

    #[test]
    fn faults_round_trip_and_bad_ones_are_refused() {
        for s in [
            "swap-model:/tmp/x.gguf",
            "edit-token:0",
            "edit-token:7",
            "edit-logprob:2",
            "truncate:3",
            "extend:5",
            "wrong-seed",
            "replay:out.json",
            "off-mask:3",
        ] {
            let f: Fault = s.parse().unwrap_or_else(|e| panic!("{s}: {e}"));
            assert_eq!(f.to_string(), s);
        }
        for s in [
            "",
            "swap",
            "swap-model",
            "swap-model:",
            "edit-token",
            "edit-token:-1",
            "edit-token:x",
            "edit-logprob",
            "truncate:0",
            "extend:0",
            "wrong-seed:3",
            "replay",
            "off-mask",
        ] {
            assert!(s.parse::<Fault>().is_err(), "{s:?} parsed");
        }
    }
}
