//! The engine: generation (single and batched), streaming, and teacher-forced scoring.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::attention::KvCache;
use crate::chat::{self, ChatMessage};
use crate::constraint::{self, Grammars, Mask, Matcher};
use crate::error::{LlmError, Result};
use crate::logprobs::{LogitRule, Normaliser, PositionLogprobs};
use crate::model::{Entry, Model};
use crate::pool::Pool;
use crate::prefix::{ModelKey, PrefixCache, PrefixLimits};
use crate::sampler::{self, SamplingParams};
use crate::simd::KernelKind;
use verinfer_types::records::{Constraint, TokenLogprob};

/// Engine version string; part of what a verifier must match.
///
/// The middle part names the crate version and, as build metadata, the
/// `llguidance` version that computes constrained-decoding masks
/// ([`crate::constraint::LLGUIDANCE_VERSION`]): both decide output bits.
pub const ENGINE_VERSION: &str = concat!(
    "verinfer-llm/",
    env!("CARGO_PKG_VERSION"),
    "+llguidance.1.9.1/arith-v3"
);

/// Tokens per forward pass during prefill (bounds memory for long prompts).
const PREFILL_CHUNK: usize = 512;
/// Positions [`Engine::warm`] computes between looks at its stop signal
/// (a value depends only on its token, position and the cache before it,
/// never on how positions are grouped).
const WARM_CHUNK: usize = 64;

/// Options for loading an engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct EngineOptions {
    /// Worker threads (0 = number of available CPUs).
    pub threads: usize,
    /// Use the portable scalar kernels even if AVX2 is available (results are identical).
    pub force_scalar: bool,
}

/// Parameters of one generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerateParams {
    /// Maximum new tokens.
    pub max_tokens: u32,
    /// Token selection.
    pub sampling: SamplingParams,
    /// Stop sequences: generation ends as soon as the decoded text contains
    /// one. The text is cut before it; the tokens keep the token that
    /// completed it, and the finish reason is [`FinishReason::Stop`].
    pub stop: Vec<String>,
    /// A grammar the output follows: each token is picked among those its
    /// mask allows ([`crate::constraint`]).
    #[serde(default)]
    pub constraint: Option<Constraint>,
    /// Penalties and biases applied to the logits before each pick.
    #[serde(default)]
    pub logit_rule: LogitRule,
    /// Report log-probabilities with this many alternatives per position.
    #[serde(default)]
    pub top_logprobs: Option<u32>,
    /// Whose computed prefixes the run may reuse and leaves behind
    /// ([`crate::prefix::CacheKey`]); never part of the result.
    #[serde(skip)]
    pub cache_scope: Option<[u8; 32]>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 128,
            sampling: SamplingParams::default(),
            stop: Vec::new(),
            constraint: None,
            logit_rule: LogitRule::default(),
            top_logprobs: None,
            cache_scope: None,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    /// The model produced an end-of-sequence (or end-of-turn) token.
    Eos,
    /// A stop sequence appeared.
    Stop,
    /// `max_tokens` or the context window was reached.
    Length,
}

/// Token counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u32,
    /// Generated tokens.
    pub completion_tokens: u32,
}

/// The outcome of a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    /// Generated token ids (including a final EOS token, if any).
    pub tokens: Vec<u32>,
    /// Generated text (control tokens omitted; cut before a stop sequence).
    pub text: String,
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// Per generated token, when [`GenerateParams::top_logprobs`] asks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub logprobs: Vec<PositionLogprobs>,
}

/// A candidate token at a scored position.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// Token id.
    pub token: u32,
    /// Its logit.
    pub logit: f32,
    /// Logit of the best token minus this one's (>= 0).
    pub margin: f32,
}

/// What the verifier needs at one output position.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PositionScore {
    /// The greedy choice.
    pub argmax: u32,
    /// The claimed token.
    pub claimed: u32,
    /// The claimed token's logit.
    pub claimed_logit: f32,
    /// Logit of the arg-max minus the claimed token's logit (0 when it is the arg-max).
    pub claimed_margin: f32,
    /// Best candidates, best first.
    pub top: Vec<Candidate>,
    /// What the seeded sampler picks here.
    pub sampled: u32,
    /// The claimed token is outside the constraint's mask here (the other
    /// fields then describe the masked logits).
    #[serde(default)]
    pub outside_mask: bool,
    /// The claimed token's log-probability and the best tokens', when asked
    /// ([`ScoreParams::top_logprobs`]).
    #[serde(default)]
    pub logprobs: Option<PositionLogprobs>,
    /// The log-probabilities of the tokens asked about at this position
    /// ([`ScoreParams::asked`]), in the order asked.
    #[serde(default)]
    pub asked: Vec<(u32, i64)>,
}

/// What a teacher-forced [`Engine::score_with`] pass reports.
#[derive(Debug, Clone, Copy)]
pub struct ScoreParams<'a> {
    /// The declared sampling (its seeded pick is reported per position).
    pub sampling: &'a SamplingParams,
    /// The declared logit rule, applied before anything is picked or ranked.
    pub logit_rule: &'a LogitRule,
    /// Best candidates to report per position (for the margin rule).
    pub top_n: usize,
    /// Report log-probabilities with this many best tokens per position.
    pub top_logprobs: Option<u32>,
    /// Per output position, tokens whose log-probabilities to report.
    pub asked: &'a [Vec<u32>],
    /// The declared constraint: each position's logits are masked as
    /// generation masked them (by the claimed tokens before it).
    pub constraint: Option<&'a Constraint>,
    /// Whose computed prefixes the pass may reuse
    /// ([`GenerateParams::cache_scope`]).
    pub cache_scope: Option<[u8; 32]>,
}

/// Text released by the streaming decoder (held back while it could be the
/// start of a stop sequence or an incomplete UTF-8 character).
struct TextState {
    bytes: Vec<u8>,
    emitted: usize,
    stop: Vec<String>,
    cut: Option<usize>,
}

impl TextState {
    fn new(stop: &[String]) -> Self {
        TextState {
            bytes: Vec::new(),
            emitted: 0,
            stop: stop.iter().filter(|s| !s.is_empty()).cloned().collect(),
            cut: None,
        }
    }

    fn valid_prefix(&self) -> &str {
        match std::str::from_utf8(&self.bytes) {
            Ok(s) => s,
            Err(e) => {
                // The valid prefix is valid UTF-8 by construction.
                std::str::from_utf8(&self.bytes[..e.valid_up_to()]).unwrap_or("")
            }
        }
    }

    /// Add bytes; return the newly releasable text and whether a stop matched.
    fn push(&mut self, b: &[u8]) -> (String, bool) {
        self.bytes.extend_from_slice(b);
        let text = self.valid_prefix();
        let search_from = self
            .emitted
            .saturating_sub(self.stop.iter().map(String::len).max().unwrap_or(0));
        let mut found: Option<usize> = None;
        for s in &self.stop {
            let mut from = search_from;
            while !text.is_char_boundary(from) {
                from -= 1;
            }
            if let Some(i) = text[from..].find(s.as_str()) {
                let at = from + i;
                found = Some(found.map_or(at, |f: usize| f.min(at)));
            }
        }
        if let Some(at) = found {
            let at = at.max(self.emitted);
            let out = text[self.emitted..at].to_string();
            self.emitted = at;
            self.cut = Some(at);
            return (out, true);
        }
        let mut hold = 0;
        for s in &self.stop {
            for l in (1..s.len()).rev() {
                if l <= text.len()
                    && text.is_char_boundary(text.len() - l)
                    && s.is_char_boundary(l)
                    && text.ends_with(&s[..l])
                {
                    hold = hold.max(l);
                    break;
                }
            }
        }
        let mut end = text.len() - hold;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let end = end.max(self.emitted);
        let out = text[self.emitted..end].to_string();
        self.emitted = end;
        (out, false)
    }

    /// Release the rest at the end of generation.
    fn finish(&mut self) -> (String, String) {
        let full = String::from_utf8_lossy(&self.bytes).into_owned();
        let end = self.cut.unwrap_or(full.len());
        let rest = if self.emitted <= end
            && full.is_char_boundary(self.emitted)
            && full.is_char_boundary(end)
        {
            full[self.emitted..end].to_string()
        } else {
            String::new()
        };
        let text = if full.is_char_boundary(end) {
            full[..end].to_string()
        } else {
            full
        };
        (rest, text)
    }
}

/// A per-token streaming callback: `(token id, newly released text)`.
///
/// Text is released once it can no longer be part of a stop sequence or of an
/// incomplete UTF-8 character, so a call may carry an empty string; text held
/// back until the end is delivered in one last call with token id `u32::MAX`.
/// The concatenation of all pieces equals [`Generation::text`].
pub type TokenCallback<'a> = &'a mut dyn FnMut(u32, &str);

/// One generated token as a [`StepCallback`] sees it.
#[derive(Debug, Clone, Copy)]
pub struct Step<'s> {
    /// The token (`u32::MAX` for the text held back until the end).
    pub token: u32,
    /// The text it releases (see [`TokenCallback`]).
    pub text: &'s str,
    /// Its log-probability record, when the request asks for them: the
    /// entry the Result will hold at this position.
    pub logprob: Option<&'s TokenLogprob>,
}

/// A per-token streaming callback that also sees each token's
/// log-probabilities, so a stream can carry them with the token's text.
pub type StepCallback<'a> = &'a mut dyn FnMut(Step<'_>);

/// One request of a batch.
#[derive(Debug, Clone)]
pub struct BatchRequest {
    /// Prompt tokens.
    pub prompt: Vec<u32>,
    /// Generation parameters.
    pub params: GenerateParams,
}

/// A loaded model ready to run.
pub struct Engine {
    model: Model,
    pool: Pool,
    kind: KernelKind,
    /// The vocabulary prepared for constraint masks, on first use.
    grammars: std::sync::OnceLock<Grammars>,
    /// Computed prefixes runs start from ([`crate::prefix`]).
    prefix: PrefixCache,
    /// What the cache's entries from this engine are filed under.
    prefix_key: ModelKey,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.model)
            .field("threads", &self.pool.threads())
            .field("kernels", &self.kind)
            .field("prefix", &self.prefix)
            .finish()
    }
}

struct SeqState<'a> {
    prompt_len: usize,
    params: GenerateParams,
    tokens: Vec<u32>,
    text: TextState,
    finish: Option<FinishReason>,
    next: u32,
    callback: Option<StepCallback<'a>>,
    limit: usize,
    matcher: Option<Matcher>,
    logprobs: Vec<PositionLogprobs>,
}

impl Engine {
    /// Load a GGUF model.
    pub fn load(path: &Path, opts: EngineOptions) -> Result<Self> {
        Ok(Self::new(Model::load(path)?, opts))
    }

    /// Wrap a loaded model.
    pub fn new(model: Model, opts: EngineOptions) -> Self {
        let threads = if opts.threads == 0 {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        } else {
            opts.threads
        };
        let kind = if opts.force_scalar {
            KernelKind::Scalar
        } else {
            KernelKind::detect()
        };
        Engine {
            model,
            pool: Pool::new(threads),
            kind,
            grammars: std::sync::OnceLock::new(),
            prefix: PrefixCache::new(PrefixLimits::default()),
            prefix_key: ModelKey::unique(),
        }
    }

    /// Keep computed prefixes in `cache`, shared with the other engines
    /// using it, under `model_file_sha256` (the SHA-256 of the model file
    /// this engine loaded: engines of the same file share entries, engines
    /// of other files never do).
    pub fn share_prefix_cache(&mut self, cache: PrefixCache, model_file_sha256: [u8; 32]) {
        self.prefix = cache;
        self.prefix_key = ModelKey::File(model_file_sha256);
    }

    /// Keep computed prefixes in a cache of this engine's own within
    /// `limits` ([`PrefixLimits::OFF`]: every run is cold).
    pub fn set_prefix_limits(&mut self, limits: PrefixLimits) {
        self.prefix = PrefixCache::new(limits);
        self.prefix_key = ModelKey::unique();
    }

    /// The cache of computed prefixes.
    pub fn prefix_cache(&self) -> &PrefixCache {
        &self.prefix
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The model's vocabulary prepared for constraint masks (built once).
    pub fn grammars(&self) -> Result<&Grammars> {
        if let Some(g) = self.grammars.get() {
            return Ok(g);
        }
        let g = Grammars::new(&self.model.tokenizer).map_err(constraint_error)?;
        Ok(self.grammars.get_or_init(|| g))
    }

    /// Worker threads in use.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Whether the SIMD kernels are in use.
    pub fn uses_simd(&self) -> bool {
        self.kind != KernelKind::Scalar
    }

    /// The kernel family in use, as `VERINFER_LLM_KERNELS` names it
    /// (`scalar`, `avx2`, `avxvnni`, `avx512vnni`).
    pub fn kernels(&self) -> &'static str {
        self.kind.name()
    }

    /// Apply the model's chat template and tokenize (special tokens parsed).
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<Vec<u32>> {
        let tk = &self.model.tokenizer;
        let tok_str = |id: Option<u32>| {
            id.and_then(|i| tk.token_bytes(i, true).ok())
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default()
        };
        let text = chat::render(
            &self.model.chat_template,
            messages,
            true,
            &tok_str(tk.bos),
            &tok_str(tk.eos),
        )?;
        Ok(tk.encode(&text, true))
    }

    /// Generate from prompt tokens, calling `on_token(token, text_delta)` per token.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        params: &GenerateParams,
        on_token: &mut dyn FnMut(u32, &str),
    ) -> Result<Generation> {
        let req = BatchRequest {
            prompt: prompt.to_vec(),
            params: params.clone(),
        };
        let mut step = |s: Step<'_>| on_token(s.token, s.text);
        let mut out = self.run_batch(&[req], vec![Some(&mut step)], &mut |_| false)?;
        out.pop()
            .ok_or_else(|| LlmError::InvalidRequest("empty batch".into()))
    }

    /// Generate several requests together (their decode steps share the
    /// weight passes). Each result is identical to generating it alone.
    pub fn generate_batch(&mut self, reqs: &[BatchRequest]) -> Result<Vec<Generation>> {
        let cbs = reqs.iter().map(|_| None).collect();
        self.run_batch(reqs, cbs, &mut |_| false)
    }

    /// Like [`Engine::generate_batch`], with one callback per request that
    /// sees each of its tokens as it is generated.
    pub fn generate_batch_streaming(
        &mut self,
        reqs: &[BatchRequest],
        callbacks: Vec<TokenCallback<'_>>,
    ) -> Result<Vec<Generation>> {
        self.generate_batch_until(reqs, callbacks, &mut |_| false)
    }

    /// Like [`Engine::generate_batch_streaming`], asking `stop(i)` before
    /// each decode step whether request `i` is still wanted: one that is not
    /// stops there (its generation is cut short, ending `length`), and the
    /// others go on. The serving node uses it for clients that left.
    pub fn generate_batch_until(
        &mut self,
        reqs: &[BatchRequest],
        callbacks: Vec<TokenCallback<'_>>,
        stop: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Vec<Generation>> {
        if callbacks.len() != reqs.len() {
            return Err(LlmError::InvalidRequest(format!(
                "{} callbacks for {} requests",
                callbacks.len(),
                reqs.len()
            )));
        }
        let mut steps: Vec<_> = callbacks
            .into_iter()
            .map(|cb| move |s: Step<'_>| cb(s.token, s.text))
            .collect();
        let steps = steps.iter_mut().map(|s| s as StepCallback<'_>).collect();
        self.generate_batch_steps(reqs, steps, stop)
    }

    /// [`Engine::generate_batch_until`] with callbacks that also see each
    /// token's log-probabilities.
    pub fn generate_batch_steps(
        &mut self,
        reqs: &[BatchRequest],
        callbacks: Vec<StepCallback<'_>>,
        stop: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Vec<Generation>> {
        if callbacks.len() != reqs.len() {
            return Err(LlmError::InvalidRequest(format!(
                "{} callbacks for {} requests",
                callbacks.len(),
                reqs.len()
            )));
        }
        self.run_batch(reqs, callbacks.into_iter().map(Some).collect(), stop)
    }

    fn check_prompt(&self, prompt: &[u32]) -> Result<usize> {
        let ctx = self.model.max_seq_len();
        if prompt.is_empty() {
            return Err(LlmError::InvalidRequest("empty prompt".into()));
        }
        if prompt.len() >= ctx {
            return Err(LlmError::ContextOverflow {
                prompt: prompt.len(),
                context: ctx,
            });
        }
        let vocab = self.model.config.vocab;
        if let Some(t) = prompt.iter().find(|&&t| t as usize >= vocab) {
            return Err(LlmError::InvalidRequest(format!(
                "token id {t} out of range (vocabulary {vocab})"
            )));
        }
        Ok(ctx)
    }

    /// Run each prompt from its position `start` on (the positions before
    /// it are already in its cache) and return each last token's logits.
    fn prefill(
        &self,
        caches: &mut [KvCache],
        seqs: &[(usize, &[u32], usize)],
    ) -> Result<Vec<Vec<f32>>> {
        // Chunks of whole-token entries across sequences; logits for each prompt's last token.
        let mut all: Vec<(Entry, bool)> = Vec::new();
        for &(s, p, start) in seqs {
            for (pos, &t) in p.iter().enumerate().skip(start) {
                all.push((
                    Entry {
                        seq: s,
                        token: t,
                        pos,
                    },
                    pos + 1 == p.len(),
                ));
            }
        }
        let vocab = self.model.config.vocab;
        let mut out = Vec::new();
        for chunk in all.chunks(PREFILL_CHUNK) {
            let entries: Vec<Entry> = chunk.iter().map(|c| c.0).collect();
            let want: Vec<usize> = (0..chunk.len()).filter(|&i| chunk[i].1).collect();
            let logits = self
                .model
                .forward(self.kind, &self.pool, &entries, caches, &want)?;
            out.extend(logits.chunks_exact(vocab).map(<[f32]>::to_vec));
        }
        Ok(out)
    }

    fn run_batch(
        &mut self,
        reqs: &[BatchRequest],
        mut callbacks: Vec<Option<StepCallback<'_>>>,
        stop: &mut dyn FnMut(usize) -> bool,
    ) -> Result<Vec<Generation>> {
        let mut max_len = 0;
        for r in reqs {
            let ctx = self.check_prompt(&r.prompt)?;
            let limit = (r.prompt.len() + r.params.max_tokens as usize).min(ctx);
            max_len = max_len.max(limit);
        }
        self.model.ensure_rope(max_len + 1);
        let mut matchers = Vec::with_capacity(reqs.len());
        for r in reqs {
            matchers.push(match &r.params.constraint {
                Some(c) => Some(self.grammars()?.matcher(c).map_err(constraint_error)?),
                None => None,
            });
        }
        let mut caches: Vec<KvCache> = Vec::new();
        let mut seqs: Vec<SeqState<'_>> = Vec::new();
        for ((r, cb), matcher) in reqs.iter().zip(callbacks.drain(..)).zip(matchers) {
            let limit =
                (r.prompt.len() + r.params.max_tokens as usize).min(self.model.max_seq_len());
            caches.push(KvCache::new(&self.model.config, limit.max(r.prompt.len())));
            seqs.push(SeqState {
                prompt_len: r.prompt.len(),
                params: r.params.clone(),
                tokens: Vec::new(),
                text: TextState::new(&r.params.stop),
                finish: None,
                next: 0,
                callback: cb,
                limit,
                matcher,
                logprobs: Vec::new(),
            });
        }
        // The last prompt token always runs: its logits pick the first token.
        let prompts: Vec<(usize, &[u32], usize)> = reqs
            .iter()
            .zip(caches.iter_mut())
            .enumerate()
            .map(|(i, (r, c))| {
                let p = r.prompt.as_slice();
                (
                    i,
                    p,
                    self.prefix.restore(
                        self.prefix_key.scoped(r.params.cache_scope),
                        p,
                        p.len() - 1,
                        c,
                    ),
                )
            })
            .collect();
        let logits = self.prefill(&mut caches, &prompts)?;
        for (s, l) in seqs.iter_mut().zip(&logits) {
            self.accept(s, l)?;
        }
        loop {
            for (i, s) in seqs.iter_mut().enumerate() {
                if s.finish.is_none() && stop(i) {
                    s.finish = Some(FinishReason::Length);
                }
            }
            let active: Vec<usize> = (0..seqs.len())
                .filter(|&i| seqs[i].finish.is_none())
                .collect();
            if active.is_empty() {
                break;
            }
            let entries: Vec<Entry> = active
                .iter()
                .map(|&i| Entry {
                    seq: i,
                    token: seqs[i].next,
                    pos: seqs[i].prompt_len + seqs[i].tokens.len() - 1,
                })
                .collect();
            let want: Vec<usize> = (0..entries.len()).collect();
            let vocab = self.model.config.vocab;
            // Each row is picked from where the output projection wrote it
            // (no copy of the vocabulary-wide rows per step).
            self.model.forward_with(
                self.kind,
                &self.pool,
                &entries,
                &mut caches,
                &want,
                &mut |j0, rows| {
                    for (&i, l) in active[j0..].iter().zip(rows.chunks_exact(vocab)) {
                        self.accept(&mut seqs[i], l)?;
                    }
                    Ok(())
                },
            )?;
        }
        // Every token but the last picked ran: their keys and values are kept.
        for ((s, r), c) in seqs.iter().zip(reqs).zip(caches) {
            let ran = &s.tokens[..s.tokens.len().saturating_sub(1)];
            let tokens: Vec<u32> = r.prompt.iter().chain(ran).copied().collect();
            self.prefix
                .keep(self.prefix_key.scoped(r.params.cache_scope), tokens, c);
        }
        let mut out = Vec::new();
        for s in seqs.iter_mut() {
            let (rest, text) = s.text.finish();
            if !rest.is_empty() {
                if let Some(cb) = s.callback.as_mut() {
                    cb(Step {
                        token: u32::MAX,
                        text: &rest,
                        logprob: None,
                    });
                }
            }
            out.push(Generation {
                tokens: s.tokens.clone(),
                text,
                finish_reason: s.finish.unwrap_or(FinishReason::Length),
                usage: Usage {
                    prompt_tokens: s.prompt_len as u32,
                    completion_tokens: s.tokens.len() as u32,
                },
                logprobs: std::mem::take(&mut s.logprobs),
            });
        }
        Ok(out)
    }

    /// Choose the next token of `s` from `logits` and update its state.
    fn accept(&self, s: &mut SeqState<'_>, logits: &[f32]) -> Result<()> {
        if s.params.max_tokens == 0 || s.prompt_len >= s.limit {
            s.finish = Some(FinishReason::Length);
            return Ok(());
        }
        let pos = (s.prompt_len + s.tokens.len()) as u64;
        // The logit rule first, then the constraint's mask: the pick and the
        // reported log-probabilities both see the logits the request allows.
        let ruled = s.params.logit_rule.apply(logits, &s.tokens);
        let masked = s.matcher.as_mut().map(|m| m.allowed().apply(&ruled));
        let logits: &[f32] = masked.as_deref().unwrap_or(&ruled);
        let tok = sampler::sample(logits, &s.params.sampling, pos);
        if let Some(m) = s.matcher.as_mut() {
            m.advance(tok);
        }
        if let Some(n) = s.params.top_logprobs {
            s.logprobs
                .push(PositionLogprobs::at(logits, tok, n as usize));
        }
        s.tokens.push(tok);
        s.next = tok;
        let tk = &self.model.tokenizer;
        // The record the Result will hold at this position, for a stream.
        let logprob = match (s.callback.is_some(), s.logprobs.last()) {
            (true, Some(p)) if s.params.top_logprobs.is_some() => {
                crate::logprobs::to_records(tk, std::slice::from_ref(p))?.pop()
            }
            _ => None,
        };
        if tk.is_end(tok) {
            s.finish = Some(FinishReason::Eos);
            if let Some(cb) = s.callback.as_mut() {
                cb(Step {
                    token: tok,
                    text: "",
                    logprob: logprob.as_ref(),
                });
            }
            return Ok(());
        }
        let (delta, stopped) = s.text.push(&tk.token_bytes(tok, false)?);
        if let Some(cb) = s.callback.as_mut() {
            cb(Step {
                token: tok,
                text: &delta,
                logprob: logprob.as_ref(),
            });
        }
        if stopped {
            s.finish = Some(FinishReason::Stop);
        } else if s.prompt_len + s.tokens.len() >= s.limit {
            s.finish = Some(FinishReason::Length);
        }
        Ok(())
    }

    /// Teacher-forced scoring: one batched pass over `prompt ++ output` giving,
    /// at every output position, the arg-max, the claimed token's logit, the
    /// `top_n` best candidates with margins, and the seeded sampler's pick.
    ///
    /// The logits are bit-identical to those seen during generation, so for a
    /// greedy result `argmax == claimed` at every position.
    pub fn score(
        &mut self,
        prompt: &[u32],
        output: &[u32],
        sampling: &SamplingParams,
        top_n: usize,
    ) -> Result<Vec<PositionScore>> {
        let params = ScoreParams {
            sampling,
            logit_rule: &LogitRule::default(),
            top_n,
            top_logprobs: None,
            asked: &[],
            constraint: None,
            cache_scope: None,
        };
        self.score_with(prompt, output, &params)
    }

    /// [`Engine::score`] under a logit rule and a constraint, with
    /// log-probabilities: every figure is computed from the logits the rule
    /// gives at each position, masked as generation masked them. Scores stop
    /// at the first claimed token outside its mask, which is marked
    /// [`PositionScore::outside_mask`].
    pub fn score_with(
        &mut self,
        prompt: &[u32],
        output: &[u32],
        p: &ScoreParams<'_>,
    ) -> Result<Vec<PositionScore>> {
        let sampling = p.sampling;
        let top_n = p.top_n;
        let (masks, outside) = match p.constraint {
            Some(c) => {
                let (m, bad) =
                    constraint::masks(self.grammars()?, c, output).map_err(constraint_error)?;
                (Some(m), bad)
            }
            None => (None, None),
        };
        let output = match outside {
            Some(i) => &output[..=i],
            None => output,
        };
        let ctx = self.check_prompt(prompt)?;
        if output.is_empty() {
            return Ok(Vec::new());
        }
        let total = prompt.len() + output.len() - 1;
        if total >= ctx {
            return Err(LlmError::ContextOverflow {
                prompt: total + 1,
                context: ctx,
            });
        }
        let vocab = self.model.config.vocab;
        if let Some(t) = output.iter().find(|&&t| t as usize >= vocab) {
            return Err(LlmError::InvalidRequest(format!(
                "output token id {t} out of range"
            )));
        }
        self.model.ensure_rope(total + 1);
        let mut caches = vec![KvCache::new(&self.model.config, total)];
        let seq: Vec<u32> = prompt
            .iter()
            .chain(&output[..output.len() - 1])
            .copied()
            .collect();
        let first = prompt.len() - 1;
        // Logits are wanted from `first` on: the positions before it may come
        // from a computed prefix.
        let start = self.prefix.restore(
            self.prefix_key.scoped(p.cache_scope),
            &seq,
            first,
            &mut caches[0],
        );
        let mut result = Vec::with_capacity(output.len());
        for (ci, chunk) in seq[start..].chunks(PREFILL_CHUNK).enumerate() {
            let base = start + ci * PREFILL_CHUNK;
            let entries: Vec<Entry> = chunk
                .iter()
                .enumerate()
                .map(|(i, &t)| Entry {
                    seq: 0,
                    token: t,
                    pos: base + i,
                })
                .collect();
            let want: Vec<usize> = (0..chunk.len()).filter(|&i| base + i >= first).collect();
            let k = sampler::candidates(sampling, vocab);
            let threads = self.pool.threads();
            let pool = &self.pool;
            let mut analyse = |j0: usize, logits: &[f32]| -> Result<()> {
                // Each position's analysis is independent: split across workers.
                let rows = logits.len() / vocab;
                let mut outs: Vec<Vec<PositionScore>> = vec![Vec::new(); threads];
                let parts: Vec<_> = (0..threads)
                    .map(|t| rows * t / threads..rows * (t + 1) / threads)
                    .zip(outs.iter_mut())
                    .collect();
                pool.run_parts(parts, &|(js, out)| {
                    for j in js {
                        let pos = base + want[j0 + j];
                        let l = &logits[j * vocab..(j + 1) * vocab];
                        let at = pos - first;
                        let ruled = p.logit_rule.apply(l, &output[..at]);
                        let mask = masks.as_ref().map(|m| &m[at]);
                        let mut s =
                            position_score(&ruled, output[at], mask, top_n, k, sampling, pos);
                        if let Some(n) = p.top_logprobs {
                            let masked = mask.map(|m| m.apply(&ruled));
                            let l: &[f32] = masked.as_deref().unwrap_or(&ruled);
                            let norm = Normaliser::of(l);
                            let asked = p.asked.get(at).map_or(&[][..], Vec::as_slice);
                            s.asked = asked.iter().map(|&t| (t, norm.token(l, t))).collect();
                            s.logprobs =
                                Some(PositionLogprobs::with(l, &norm, output[at], n as usize));
                        }
                        out.push(s);
                    }
                });
                result.extend(outs.into_iter().flatten());
                Ok(())
            };
            self.model.forward_with(
                self.kind,
                &self.pool,
                &entries,
                &mut caches,
                &want,
                &mut analyse,
            )?;
        }
        if let Some(kv) = caches.pop() {
            self.prefix
                .keep(self.prefix_key.scoped(p.cache_scope), seq, kv);
        }
        Ok(result)
    }

    /// Computes the keys and values of `prompt` but its last token (whose
    /// logits every run computes itself) into the prefix cache within
    /// `scope`, starting after the longest prefix already held, so that a
    /// later run or [`Engine::score_with`] over this prompt starts at its
    /// last token. Checks `stop` before each chunk of `WARM_CHUNK`
    /// positions and keeps what was computed when it says stop. Returns the
    /// positions computed. The cache holds the bits a cold run computes, so
    /// what later runs answer is unchanged.
    pub fn warm(
        &mut self,
        prompt: &[u32],
        scope: Option<[u8; 32]>,
        stop: &mut dyn FnMut() -> bool,
    ) -> Result<usize> {
        self.check_prompt(prompt)?;
        let seq = &prompt[..prompt.len() - 1];
        if seq.is_empty() {
            return Ok(0);
        }
        self.model.ensure_rope(seq.len() + 1);
        let key = self.prefix_key.scoped(scope);
        let mut cache = KvCache::new(&self.model.config, seq.len());
        let start = self.prefix.restore(key, seq, seq.len(), &mut cache);
        let mut done = start;
        for chunk in seq[start..].chunks(WARM_CHUNK) {
            if stop() {
                break;
            }
            let entries: Vec<Entry> = chunk
                .iter()
                .enumerate()
                .map(|(i, &token)| Entry {
                    seq: 0,
                    token,
                    pos: done + i,
                })
                .collect();
            self.model.forward(
                self.kind,
                &self.pool,
                &entries,
                std::slice::from_mut(&mut cache),
                &[],
            )?;
            done += chunk.len();
        }
        if done > start {
            self.prefix.keep(key, seq[..done].to_vec(), cache);
        }
        Ok(done - start)
    }
}

/// What the verifier needs at one output position (`pos` is the position
/// of the logits' token; the claimed token sits at `pos + 1`).
fn position_score(
    l: &[f32],
    claimed: u32,
    mask: Option<&Mask>,
    top_n: usize,
    k: usize,
    sampling: &SamplingParams,
    pos: usize,
) -> PositionScore {
    let masked;
    let l = match mask {
        Some(m) => {
            masked = m.apply(l);
            &masked[..]
        }
        None => l,
    };
    // One pass finds the listed candidates and the sampler's: the first in
    // `top_n` order is also the arg-max.
    let cand = sampler::top_n(l, top_n.max(1).max(k));
    let best = l[cand[0] as usize];
    let claimed_logit = l[claimed as usize];
    PositionScore {
        argmax: cand[0],
        claimed,
        claimed_logit,
        claimed_margin: best - claimed_logit,
        top: cand
            .iter()
            .take(top_n)
            .map(|&t| Candidate {
                token: t,
                logit: l[t as usize],
                margin: best - l[t as usize],
            })
            .collect(),
        sampled: if k == 0 {
            cand[0]
        } else {
            sampler::sample_among(l, &cand[..k], sampling, (pos + 1) as u64)
        },
        outside_mask: mask.is_some_and(|m| !m.allows(claimed)),
        logprobs: None,
        asked: Vec::new(),
    }
}

/// A constraint the engine cannot use is the request's fault.
fn constraint_error(e: constraint::ConstraintError) -> LlmError {
    LlmError::InvalidRequest(e.to_string())
}
