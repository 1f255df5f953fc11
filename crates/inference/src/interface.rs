//! One interface over both engines, so the layers above treat them alike.
//!
//! Each engine is a deterministic function of (model bytes, input,
//! parameters), bound to one model: the language-model [`Engine`] (GGUF) and
//! the tensor engine [`OnnxModel`] (ONNX via tract). Both name their model by
//! the same id, the SHA-256 of the model file's bytes in lowercase hex, and
//! both state an engine version: the arithmetic that fixes the output bits,
//! which a verifier must match.
//!
//! An inference node calls [`ModelEngine::run`]. A verifier calls
//! [`ModelEngine::recompute`] on the claimed answer and gets [`Evidence`]
//! that the verification rules judge: for a language model, one
//! teacher-forced `score` pass (the token rule with its margin applies to
//! it); for a tensor model, a re-run whose output digest must equal the
//! claimed one bit for bit.

use std::path::Path;

use crate::engine::{Engine, EngineOptions, GenerateParams, Generation, PositionScore};
use crate::error::LlmError;
use crate::models;
use crate::onnx::{output_digest, OnnxError, OnnxModel, Tensor};
use crate::sampler::SamplingParams;

/// What kind of input and output an engine takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    /// Token ids in, generated token ids and text out.
    Text,
    /// Tensors in, tensors out.
    Tensors,
}

impl Modality {
    fn name(self) -> &'static str {
        match self {
            Modality::Text => "text",
            Modality::Tensors => "tensor",
        }
    }
}

/// One unit of work for [`ModelEngine::run`].
#[derive(Debug, Clone, Copy)]
pub enum Work<'a> {
    /// Generate from prompt tokens.
    Generate {
        /// Prompt token ids.
        prompt: &'a [u32],
        /// Decoding parameters.
        params: &'a GenerateParams,
    },
    /// Run a tensor model on its inputs (one per model input, in order).
    Tensors(&'a [Tensor]),
}

impl Work<'_> {
    fn modality(&self) -> Modality {
        match self {
            Work::Generate { .. } => Modality::Text,
            Work::Tensors(_) => Modality::Tensors,
        }
    }
}

/// What [`ModelEngine::run`] produced.
#[derive(Debug, Clone)]
pub enum Output {
    /// A generation.
    Text(Generation),
    /// Output tensors and their digest (`onnx::output_digest`).
    Tensors {
        /// The outputs, in model order.
        outputs: Vec<Tensor>,
        /// Their digest, lowercase hex.
        digest: String,
    },
}

/// A claimed answer for [`ModelEngine::recompute`].
#[derive(Debug, Clone, Copy)]
pub enum Claim<'a> {
    /// Output tokens claimed for a prompt, with the sampling they claim.
    Text {
        /// Prompt token ids.
        prompt: &'a [u32],
        /// Claimed output token ids.
        output: &'a [u32],
        /// The declared sampling (its seeded pick is reported per position).
        sampling: &'a SamplingParams,
        /// Best candidates to report per position (for the margin rule).
        top_n: usize,
    },
    /// An output digest claimed for input tensors.
    Tensors {
        /// The inputs.
        inputs: &'a [Tensor],
        /// The claimed output digest, lowercase hex.
        digest: &'a str,
    },
}

impl Claim<'_> {
    fn modality(&self) -> Modality {
        match self {
            Claim::Text { .. } => Modality::Text,
            Claim::Tensors { .. } => Modality::Tensors,
        }
    }
}

/// What a recomputation found, for the verification rules to judge.
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// Per output position: arg-max, claimed logit, candidates, sampler pick.
    Scores(Vec<PositionScore>),
    /// The digest of a re-run and whether it equals the claimed one.
    Tensors {
        /// Recomputed output digest.
        digest: String,
        /// Whether it is the claimed digest.
        matches: bool,
    },
}

/// Why an engine could not run or recompute.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Work of the other modality.
    #[error("this engine runs {engine} models, not {work} work")]
    Modality {
        /// What the engine runs.
        engine: &'static str,
        /// What it was given.
        work: &'static str,
    },
    /// The language-model engine failed.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// The tensor engine failed.
    #[error(transparent)]
    Onnx(#[from] OnnxError),
}

fn modality_error(engine: Modality, work: Modality) -> EngineError {
    EngineError::Modality {
        engine: engine.name(),
        work: work.name(),
    }
}

/// A deterministic engine bound to one model.
pub trait ModelEngine {
    /// Text or tensors.
    fn modality(&self) -> Modality;
    /// The model id: SHA-256 of the model file, lowercase hex.
    fn model_id(&self) -> &str;
    /// The engine version, which fixes the output bits.
    fn engine_version(&self) -> String;
    /// The inference node's job.
    fn run(&mut self, work: Work<'_>) -> Result<Output, EngineError>;
    /// The verifier's job: recompute what the claim is about.
    fn recompute(&mut self, claim: Claim<'_>) -> Result<Evidence, EngineError>;
}

/// The language-model engine bound to the id of the file it loaded.
pub struct LanguageModel {
    engine: Engine,
    model_id: String,
}

impl LanguageModel {
    /// Loads a GGUF file and hashes it for its model id.
    pub fn load(path: &Path, opts: EngineOptions) -> Result<Self, LlmError> {
        let model_id = models::file_sha256(path)?;
        Ok(LanguageModel {
            engine: Engine::load(path, opts)?,
            model_id,
        })
    }

    /// The engine, for what only language models do (chat templates, streaming).
    pub fn engine(&mut self) -> &mut Engine {
        &mut self.engine
    }
}

impl ModelEngine for LanguageModel {
    fn modality(&self) -> Modality {
        Modality::Text
    }

    fn model_id(&self) -> &str {
        &self.model_id
    }

    fn engine_version(&self) -> String {
        crate::ENGINE_VERSION.to_string()
    }

    fn run(&mut self, work: Work<'_>) -> Result<Output, EngineError> {
        match work {
            Work::Generate { prompt, params } => Ok(Output::Text(self.engine.generate(
                prompt,
                params,
                &mut |_, _| {},
            )?)),
            other => Err(modality_error(Modality::Text, other.modality())),
        }
    }

    fn recompute(&mut self, claim: Claim<'_>) -> Result<Evidence, EngineError> {
        match claim {
            Claim::Text {
                prompt,
                output,
                sampling,
                top_n,
            } => Ok(Evidence::Scores(
                self.engine.score(prompt, output, sampling, top_n)?,
            )),
            other => Err(modality_error(Modality::Text, other.modality())),
        }
    }
}

impl ModelEngine for OnnxModel {
    fn modality(&self) -> Modality {
        Modality::Tensors
    }

    fn model_id(&self) -> &str {
        OnnxModel::model_id(self)
    }

    fn engine_version(&self) -> String {
        crate::onnx::engine_info().version_string()
    }

    fn run(&mut self, work: Work<'_>) -> Result<Output, EngineError> {
        match work {
            Work::Tensors(inputs) => {
                let outputs = OnnxModel::run(self, inputs)?;
                let digest = output_digest(&outputs);
                Ok(Output::Tensors { outputs, digest })
            }
            other => Err(modality_error(Modality::Tensors, other.modality())),
        }
    }

    fn recompute(&mut self, claim: Claim<'_>) -> Result<Evidence, EngineError> {
        match claim {
            Claim::Tensors { inputs, digest } => {
                let recomputed = output_digest(&OnnxModel::run(self, inputs)?);
                let matches = recomputed == digest;
                Ok(Evidence::Tensors {
                    digest: recomputed,
                    matches,
                })
            }
            other => Err(modality_error(Modality::Tensors, other.modality())),
        }
    }
}
