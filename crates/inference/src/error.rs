//! Error type of the language-model engine.

use std::path::PathBuf;

/// Everything that can go wrong loading a model or running inference.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    /// The model file could not be opened or read.
    #[error("cannot read model file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not a well-formed GGUF file.
    #[error("invalid GGUF file: {0}")]
    Format(String),
    /// The file ends before a structure it declares.
    #[error("truncated GGUF file: {0}")]
    Truncated(String),
    /// The model uses an architecture this engine does not implement.
    #[error("unsupported model architecture {0:?} (supported: llama, gemma3)")]
    UnsupportedArchitecture(String),
    /// A tensor uses a quantisation this engine does not implement.
    #[error("tensor {tensor:?} uses unsupported type {kind} (supported: F32, F16, Q4_0, Q4_1, Q5_0, Q8_0, Q4_K, Q5_K, Q6_K)")]
    UnsupportedTensorType {
        /// Tensor name.
        tensor: String,
        /// GGML type name or number.
        kind: String,
    },
    /// A required metadata key or tensor is missing or has the wrong shape.
    #[error("model is missing or has a malformed {0}")]
    Missing(String),
    /// The tokenizer metadata is unusable or a token id is out of range.
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    /// The chat template failed to parse or render.
    #[error("chat template error: {0}")]
    Template(String),
    /// The prompt does not fit the model's context window.
    #[error("prompt of {prompt} tokens does not fit the context window of {context} tokens")]
    ContextOverflow {
        /// Prompt length in tokens.
        prompt: usize,
        /// Context length of the engine.
        context: usize,
    },
    /// A request parameter is out of range.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Fetching or locating a model failed.
    #[error("{0}")]
    Fetch(String),
}

/// Result alias for the engine.
pub type Result<T> = std::result::Result<T, LlmError>;

impl From<crate::paths::NoDataDir> for LlmError {
    fn from(e: crate::paths::NoDataDir) -> Self {
        LlmError::Fetch(e.to_string())
    }
}
