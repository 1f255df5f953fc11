//! verinfer inference layer: a deterministic CPU engine for GGUF language
//! models (this module tree), which the network serves and verifies, and an
//! ONNX engine ([`onnx`]) with the same model-id scheme and bit-exact digests,
//! not yet served by the network.
//!
//! # What it is for
//!
//! An inference node runs a request with [`Engine::generate`]; a verifier
//! recomputes it with [`Engine::score`], one batched teacher-forced pass that
//! yields at every output position the arg-max, the claimed token's logit, the
//! best candidates with their margins and the seeded sampler's pick. Both
//! must agree bit for bit, on any machine, so the engine is built for
//! determinism first and speed second.
//!
//! # Engine choice
//!
//! The engine has its own kernels rather than using candle or binding
//! llama.cpp. Measured on the target 2-core AVX2 machine, candle 0.11 runs the
//! default model (SmolLM2-135M-Instruct, Q4_1) at 1.5 tokens/s because its
//! Q4_1 path is scalar, and neither it nor llama.cpp promises results that are
//! independent of thread count and CPU. Here the parts are small and explicit:
//! a GGUF reader over `memmap2` ([`gguf`]), block formats F32, F16, Q4_0,
//! Q4_1, Q8_0 and Q4_K ([`quant`]), integer matrix kernels for AVX-512 VNNI,
//! AVX-VNNI and AVX2 with a portable scalar definition, a llama-architecture
//! forward pass with a KV cache and a batched (GEMM-shaped) prefill
//! ([`model`], [`attention`]), byte-level BPE and SentencePiece tokenizers ([`tokenizer`]),
//! Jinja chat templates via `minijinja` ([`chat`]), and a persistent thread
//! pool. `docs/benchmarks.md` compares it with llama.cpp on the same file.
//!
//! # Determinism guarantee
//!
//! The same model bytes, input tokens, parameters and seed give the same
//! output tokens and the same logits (bit for bit) for any thread count, in
//! repeated runs, batched with other requests or alone, and on any x86-64 or
//! other CPU Rust supports, with or without AVX2 or AVX-512. This holds
//! because the arithmetic is a fixed sequence of exactly rounded IEEE-754
//! operations ([`ENGINE_VERSION`] names it, `arith-v3`):
//!
//! * Weight × activation products for Q4_0/Q4_1/Q8_0 quantise activations to
//!   8-bit blocks and sum each block's 32 integer products exactly in `i32`;
//!   each (row, column) then takes its blocks in order with fused
//!   multiply-adds into one f32 accumulator ([`quant`] states the contract).
//!   Attention is stated the same way ([`attention`]). Fused multiply-add is
//!   exactly rounded by IEEE 754, so hardware FMA and `f32::mul_add` agree;
//!   SIMD code runs independent values in its lanes (rows, key positions,
//!   dimensions) and never splits one value's sum across lanes, so every
//!   kernel family gives the bits of the portable code (tested). Q5_0 runs on
//!   the Q8_0 kernels (its values repacked as bytes, the same integer sums);
//!   the k-quants (Q4_K/Q5_K/Q6_K) on their own integer kernels, per block
//!   of 32 as Q4_1 and Q8_0 ([`quant`]). F32/F16 weights are converted row
//!   by row and use a fixed-order float dot product, the same code for
//!   every kernel family.
//! * Each output row of a matrix product, and each (token, head) of attention,
//!   is computed by exactly one thread, with operations that do not depend
//!   on which rows or heads that thread takes with it (workers take chunks
//!   of them as they come free), so the thread count and timing change who
//!   computes a value, never how.
//! * Every value computed for a token depends only on that token, its position
//!   and its own sequence's cache, so prefill, decode, batching and scoring
//!   produce identical logits, and a run that starts after a prefix whose
//!   keys and values another run computed ([`prefix`], the shared-prefix
//!   KV cache) produces those of a cold run.
//! * Element-wise steps (norms, SiLU, residuals) are plain Rust, which never
//!   reassociates or fuses float operations, so compiling them for wider
//!   vectors changes no result. `exp`, `sin`, `cos`, `ln` are the engine's own
//!   ([`math`]), never the platform `libm`; sampling uses a counter-based RNG
//!   keyed by `(seed, position)` ([`sampler`]).
//!
//! Logits are *not* promised to equal those of llama.cpp or of another engine
//! version; the verification margin rule covers that.

pub mod attention;
pub mod chat;
pub mod constraint;
pub mod engine;
pub mod error;
pub mod fetch;
mod kpanel;
mod kquant;
pub mod logprobs;
pub mod math;
pub mod model;
pub mod models;
pub mod onnx;
mod pages;
pub mod paths;
mod pool;
pub mod prefix;
pub mod quant;
pub mod respond;
pub mod sampler;
mod simd;
pub mod tokenizer;

/// The GGUF reader lives in the light `verinfer-gguf` crate (the fuzzer
/// builds it without the engine).
pub use verinfer_gguf as gguf;

pub use chat::ChatMessage;
pub use engine::{
    BatchRequest, Candidate, Engine, EngineOptions, FinishReason, GenerateParams, Generation,
    PositionScore, ScoreParams, Usage, ENGINE_VERSION,
};
pub use error::{LlmError, Result};
pub use model::{Arch, Config, Model};
pub use prefix::{PrefixCache, PrefixLimits, PrefixStats};
pub use sampler::SamplingParams;
pub use tokenizer::Tokenizer;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
