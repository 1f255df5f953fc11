//! The checker: the rules plus one teacher-forced `score` pass, timed and
//! signed into a [`Verdict`].
//!
//! The checker is the thin shell around [`crate::rules`]: it asks its engine
//! (anything implementing [`Recompute`], normally
//! [`verinfer_inference::Engine`]) for the prompt tokens and the scores, runs
//! the rules over them, measures the CPU time spent and signs the verdict
//! with the verifier's key.

use std::time::Instant;

use verinfer_inference::{Engine, PositionScore, ScoreParams};
use verinfer_types::records::{
    Decision, Decoding, InferenceResult, Input, Request, Verdict, VerdictTag,
};
use verinfer_types::{Hash, Record, RecordError, SecretKey, Signature, SignedRecord};

use crate::rules::{self, Context, Detokenizer, MarginRule, Rejection};

/// Best candidates asked of `score` per position (for the margin rule).
pub const DEFAULT_TOP_N: usize = 8;

/// What the checker needs from an inference engine.
pub trait Recompute {
    /// The engine version (`result.engine` must equal it).
    fn engine_version(&self) -> &str;
    /// The model's context window in tokens.
    fn context_len(&self) -> usize;
    /// The tokenizer facts the rules need.
    fn detokenizer(&self) -> &dyn Detokenizer;
    /// The prompt tokens of a request input, exactly as an inference node
    /// builds them (chat template for messages, plain encoding for a prompt,
    /// token ids as they are); `Err` with a reason when the input cannot be
    /// rendered.
    fn prompt_tokens(&self, input: &Input) -> Result<Vec<u32>, String>;
    /// One teacher-forced pass over `prompt ++ output` under the decoding's
    /// logit rule, with log-probabilities when the decoding asks for them
    /// (and those of the tokens `asked[i]` at output position `i`); computed
    /// prefixes are reused only within `scope` (the requester's account).
    fn score(
        &mut self,
        prompt: &[u32],
        output: &[u32],
        decoding: &Decoding,
        top_n: usize,
        asked: &[Vec<u32>],
        scope: [u8; 32],
    ) -> Result<Vec<PositionScore>, String>;
}

impl Recompute for Engine {
    fn engine_version(&self) -> &str {
        verinfer_inference::ENGINE_VERSION
    }

    fn context_len(&self) -> usize {
        self.model().max_seq_len()
    }

    fn detokenizer(&self) -> &dyn Detokenizer {
        &self.model().tokenizer
    }

    fn prompt_tokens(&self, input: &Input) -> Result<Vec<u32>, String> {
        // The same mapping the inference node used (one implementation).
        verinfer_inference::respond::prompt_tokens(self, input).map_err(|e| e.to_string())
    }

    fn score(
        &mut self,
        prompt: &[u32],
        output: &[u32],
        decoding: &Decoding,
        top_n: usize,
        asked: &[Vec<u32>],
        scope: [u8; 32],
    ) -> Result<Vec<PositionScore>, String> {
        // The node's mapping of the decoding, so both sample alike.
        let params = verinfer_inference::respond::generate_params(decoding);
        let score = ScoreParams {
            sampling: &params.sampling,
            logit_rule: &params.logit_rule,
            top_n,
            top_logprobs: params.top_logprobs,
            asked,
            constraint: decoding.constraint.as_ref(),
            cache_scope: Some(scope),
        };
        Engine::score_with(self, prompt, output, &score).map_err(|e| e.to_string())
    }
}

/// Why the checker gave no verdict (the verifier's problem, not the node's).
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The request is for a model this verifier does not run.
    #[error("this verifier runs model {serves}, the request asks for {requested}")]
    ModelNotServed {
        /// The verifier's model id.
        serves: Hash,
        /// The requested model id.
        requested: Hash,
    },
    /// The verifier's engine version has no known margin rule.
    #[error("no margin rule for engine version {0:?}")]
    UnknownEngine(String),
    /// The engine failed on an input the rules had accepted.
    #[error("engine: {0}")]
    Engine(String),
    /// Encoding or signing a record failed.
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// The outcome of one check, before signing.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Hash of the request the result was checked against.
    pub request: Hash,
    /// Hash of the result checked.
    pub result: Hash,
    /// `None` on accept.
    pub rejection: Option<Rejection>,
    /// Output positions compared against the recomputation.
    pub checked_positions: u32,
    /// CPU time spent, in microseconds.
    pub cost_micros: u64,
}

impl Outcome {
    /// The verdict, signed by `verifier`: it names both the request and the
    /// result, so a rejection cannot be moved to another pairing.
    pub fn to_verdict(&self, verifier: &SecretKey) -> Result<Verdict, RecordError> {
        let mut v = Verdict {
            tag: VerdictTag,
            request: self.request,
            result: self.result,
            decision: if self.rejection.is_some() {
                Decision::Reject
            } else {
                Decision::Accept
            },
            reason: self.rejection.as_ref().map(ToString::to_string),
            failed_position: self.rejection.as_ref().and_then(Rejection::position),
            checked_positions: self.checked_positions,
            cost_micros: self.cost_micros,
            verifier: verifier.public(),
            signature: Signature::default(),
        };
        v.sign(verifier)?;
        Ok(v)
    }
}

/// Process CPU time (all threads, so the engine's workers count), with a
/// wall-clock fallback where the platform has no such clock. Other work in
/// the same process during a check is counted too.
struct CpuClock(Option<cpu_time::ProcessTime>, Instant);

impl CpuClock {
    fn start() -> Self {
        CpuClock(cpu_time::ProcessTime::try_now().ok(), Instant::now())
    }

    fn micros(&self) -> u64 {
        let d = match &self.0 {
            Some(t) => t.try_elapsed().unwrap_or_else(|_| self.1.elapsed()),
            None => self.1.elapsed(),
        };
        u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
    }
}

/// A verifier: an engine loaded with one model, and the verifier's key.
pub struct Checker<E> {
    engine: E,
    model_id: Hash,
    key: SecretKey,
    top_n: usize,
}

impl<E> std::fmt::Debug for Checker<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checker")
            .field("model_id", &self.model_id)
            .field("verifier", &self.key.public())
            .field("top_n", &self.top_n)
            .finish()
    }
}

impl<E: Recompute> Checker<E> {
    /// A checker for `engine`, whose model file has id `model_id` (its
    /// SHA-256), signing with `key`.
    pub fn new(engine: E, model_id: Hash, key: SecretKey) -> Self {
        Checker {
            engine,
            model_id,
            key,
            top_n: DEFAULT_TOP_N,
        }
    }

    /// The engine.
    pub fn engine_mut(&mut self) -> &mut E {
        &mut self.engine
    }

    /// The verifier's key.
    pub fn key(&self) -> &SecretKey {
        &self.key
    }

    /// Checks `result` against `request`: all rules, then one score pass.
    pub fn check(
        &mut self,
        request: &Request,
        result: &InferenceResult,
    ) -> Result<Outcome, CheckError> {
        let clock = CpuClock::start();
        if request.model != self.model_id {
            return Err(CheckError::ModelNotServed {
                serves: self.model_id,
                requested: request.model,
            });
        }
        let version = self.engine.engine_version().to_string();
        let margin =
            MarginRule::for_engine(&version).ok_or(CheckError::UnknownEngine(version.clone()))?;
        let request_hash = request.hash()?;
        let result_hash = result.hash()?;
        let (rejection, checked_positions) = match self.run(request, result, &version, margin) {
            Ok(n) => (None, n),
            Err(Ok(r)) => {
                let checked = match &r {
                    Rejection::TokenMismatch { position, .. }
                    | Rejection::OutsideMask { position, .. }
                    | Rejection::Logprobs { position, .. } => position.saturating_add(1),
                    _ => 0,
                };
                (Some(r), checked)
            }
            Err(Err(e)) => return Err(e),
        };
        Ok(Outcome {
            request: request_hash,
            result: result_hash,
            rejection,
            checked_positions,
            cost_micros: clock.micros(),
        })
    }

    /// Checks and signs the verdict.
    pub fn verdict(
        &mut self,
        request: &Request,
        result: &InferenceResult,
    ) -> Result<Verdict, CheckError> {
        let outcome = self.check(request, result)?;
        Ok(outcome.to_verdict(&self.key)?)
    }

    /// The rules in order; `Err(Ok(_))` is a rejection, `Err(Err(_))` a
    /// failure of the verifier itself.
    fn run(
        &mut self,
        request: &Request,
        result: &InferenceResult,
        version: &str,
        margin: MarginRule,
    ) -> Result<u32, Result<Rejection, CheckError>> {
        // Signatures and binding first: nothing else is worth computing for
        // a result that does not answer this request.
        rules::check_signatures(request, result).map_err(Ok)?;
        rules::check_binding(request, result, version).map_err(Ok)?;
        let prompt = self
            .engine
            .prompt_tokens(&request.input)
            .map_err(|detail| Ok(Rejection::BadRequest { detail }))?;
        let context_len = self.engine.context_len();
        let tok = self.engine.detokenizer();
        if prompt.is_empty() || prompt.len() >= context_len {
            return Err(Ok(Rejection::BadRequest {
                detail: format!(
                    "prompt of {} tokens does not fit the context window of {context_len}",
                    prompt.len()
                ),
            }));
        }
        if let Some(t) = prompt.iter().find(|&&t| t as usize >= tok.vocab_size()) {
            return Err(Ok(Rejection::BadRequest {
                detail: format!("prompt token {t} is not in the vocabulary"),
            }));
        }
        let ctx = Context {
            engine_version: version,
            prompt_tokens: u32::try_from(prompt.len()).unwrap_or(u32::MAX),
            context_len: u32::try_from(context_len).unwrap_or(u32::MAX),
        };
        rules::check_output(request, result, &ctx, tok).map_err(Ok)?;
        let scores = self
            .engine
            .score(
                &prompt,
                &result.output_tokens,
                &request.decoding,
                self.top_n,
                &crate::logprobs::asked(result),
                request.requester.to_bytes(),
            )
            .map_err(|e| Err(CheckError::Engine(e)))?;
        let checked =
            rules::check_tokens(&request.decoding, &result.output_tokens, &scores, margin)
                .map_err(Ok)?;
        let tok = self.engine.detokenizer();
        crate::logprobs::check_logprobs(&request.decoding, result, &scores, tok).map_err(Ok)?;
        Ok(checked)
    }
}
