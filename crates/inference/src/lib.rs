//! verinfer inference layer: a deterministic CPU engine for GGUF language
//! models (this module tree) and an ONNX engine ([`onnx`]), both behind one
//! interface ([`interface::ModelEngine`]: model id, engine version, run,
//! recompute) so the verification layer can treat them alike.
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
//! Q4_1, Q8_0 and Q4_K ([`quant`]), AVX2 integer dot-product kernels with a
//! scalar twin, a llama-architecture forward pass with a KV cache and a
//! batched (GEMM-shaped) prefill ([`model`]), a byte-level BPE tokenizer
//! ([`tokenizer`]), Jinja chat templates via `minijinja` ([`chat`]), and a
//! persistent thread pool.
//!
//! # Determinism guarantee
//!
//! The same model bytes, input tokens, parameters and seed give the same
//! output tokens and the same logits (bit for bit) for any thread count, in
//! repeated runs, batched with other requests or alone, and on any x86-64 or
//! other CPU Rust supports, with or without AVX2. This holds because:
//!
//! * Weight × activation products for Q4_0/Q4_1/Q8_0 quantise activations to
//!   8-bit blocks and sum each block's 32 integer products exactly in `i32`;
//!   the float work that follows (block scale × sum, accumulation into eight
//!   lanes, a fixed reduction tree) is a fixed sequence of IEEE-754 operations
//!   without fused multiply-add ([`quant`] documents it). The AVX2 kernels and
//!   the portable scalar kernels perform the same operations in the same
//!   order, so they agree bit for bit (tested); F32/F16/Q4_K weights use a
//!   fixed-order float dot product.
//! * Each output row of a matrix product, and each (token, head) of attention,
//!   is computed by exactly one thread; work is split statically, so the
//!   thread count changes who computes a value, never how.
//! * Every value computed for a token depends only on that token, its position
//!   and its own sequence's cache, so prefill, decode, batching and scoring
//!   produce identical logits.
//! * `exp`, `sin`, `cos`, `ln` are the engine's own ([`math`]), never the
//!   platform `libm`; sampling uses a counter-based RNG keyed by
//!   `(seed, position)` ([`sampler`]).
//!
//! Logits are *not* promised to equal those of llama.cpp or of another engine
//! version; the verification margin rule covers that. [`ENGINE_VERSION`] names
//! the arithmetic.

pub mod chat;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod interface;
pub mod math;
mod mmap;
pub mod model;
pub mod models;
pub mod onnx;
mod pool;
pub mod quant;
pub mod respond;
pub mod sampler;
mod simd;
pub mod tokenizer;

pub use chat::ChatMessage;
pub use engine::{
    BatchRequest, Candidate, Engine, EngineOptions, FinishReason, GenerateParams, Generation,
    PositionScore, Usage, ENGINE_VERSION,
};
pub use error::{LlmError, Result};
pub use model::{Config, Model};
pub use sampler::SamplingParams;
pub use tokenizer::Tokenizer;
#[doc(hidden)]
pub mod testing;
