//! ONNX engine: runs ONNX models for classic ML (tabular, vision, small
//! sequence models) with [tract](https://github.com/sonos/tract), so that a
//! verifier can recompute an inference and compare outputs bit for bit.
//!
//! ```no_run
//! use verinfer_inference::onnx::{output_digest, OnnxModel, Tensor};
//!
//! let model = OnnxModel::load("classifier.onnx")?;
//! let x = Tensor::from_f32(&[1, 3], &[0.5, 1.0, -2.0])?;
//! let outputs = model.run(&[x])?;
//! println!("model {} outputs {}", model.model_id(), output_digest(&outputs));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Model id
//!
//! As for GGUF models, the model id is the SHA-256 of the model file's bytes,
//! lowercase hex ([`OnnxModel::model_id`]). The file is read once; the id is
//! computed from, and the graph parsed from, the same bytes. Models that keep
//! weights in ONNX *external data* files are refused, because the id would not
//! cover those weights.
//!
//! # Safety against malformed models
//!
//! Loading never panics on bad bytes: the protobuf is decoded by this module,
//! a panic inside tract is caught and returned as
//! [`OnnxError::EnginePanic`], and tree ensembles (`TreeEnsembleClassifier`,
//! the classic-ML operator tract walks with unchecked indexing) are validated
//! first and refused ([`OnnxError::Refused`]) when an index is out of range,
//! a tree has a cycle, or a node uses `BRANCH_GTE` (which tract 0.23.9 parses
//! but evaluates as a leaf).
//!
//! # Records
//!
//! Inputs and outputs are [`Tensor`]s: dtype, shape and raw little-endian
//! bytes, serialised with the bytes as lowercase hex (never as JSON floats).
//! [`output_digest`] hashes a canonical encoding of the outputs (see
//! [`tensors_digest`]), so a verifier compares one SHA-256.
//!
//! # Determinism
//!
//! What this engine guarantees, and tests:
//!
//! * **Same model bytes + same input tensors → bit-identical output tensors**
//!   (hence the same [`output_digest`]) whenever the [`EngineInfo`] is the
//!   same: this crate's record format version, the exact tract version (pinned
//!   with `=` in `Cargo.toml`, since kernels decide output bits) and the set of
//!   instruction sets tract dispatches kernels for ([`EngineInfo::isa`]). This
//!   holds across repeated runs, across threads running one [`OnnxModel`]
//!   concurrently, across separate loads of the same bytes and across
//!   processes.
//! * Every run is single-threaded: the plan is built with tract's
//!   single-thread executor explicitly, whatever the process-wide default is,
//!   so no reduction is ever split across threads. Concurrency comes from
//!   running independent requests side by side, which does not change any
//!   run's arithmetic.
//! * Models with random operators (`RandomNormal`, `RandomUniform`, their
//!   `*Like` forms, `Multinomial`, `Bernoulli`) are refused at load time, seed
//!   or no seed: tract's generator stream is not a stable contract.
//!
//! What can differ across CPUs: tract picks kernels at run time from the
//! CPU's instruction sets (matrix-multiply tiles; `tanh`, `sigmoid`, `exp`
//! approximations; ...). A fused multiply-add rounds once where
//! multiply-then-add rounds twice, and the approximations differ per kernel
//! family, so floating-point outputs may differ in the last bits between
//! instruction-set classes and between architectures. Measured on the test
//! model (a GRU encoder/decoder) on an AVX2 + FMA x86_64 machine: the FMA set
//! and the sets without FMA (AVX only, or SSE2 only) give different bits
//! (same greedy transliterations; log-probabilities within 1e-6), AVX-only
//! and SSE2-only agree bit for bit, and tract's per-vendor kernel cost models
//! (`TRACT_X86_KIND=intel|amd|other`) do not change the bits. On an Intel
//! Xeon the AVX-512 + VNNI set gives bits of its own, and the FMA and SSE2
//! classes forced there give the EPYC's bits exactly. aarch64 was not
//! measured: treat it as a class of its own. Graphs
//! whose outputs are computed by integer or boolean operations only are exact
//! everywhere.
//!
//! For a verifier: compare [`output_digest`]s exactly when the engine info
//! matches the node's. A machine can join a lower class for a whole process
//! with tract's `TRACT_CPU_ISA` knob, which edits the detected set before any
//! kernel is chosen: tract 0.23.9 picks every kernel this engine's models use
//! (matrix products, `tanh`, `sigmoid`, `exp`, `ln`, `max`) from that set
//! alone, never from a CPU probe of its own, so two machines forced to the
//! same set run the same kernels and get the same bits.
//! [`PORTABLE_X86_64_TRACT_CPU_ISA`] removes every x86_64 extension and
//! leaves plain x86_64 (SSE2), which every x86_64 CPU runs; it costs speed
//! (no AVX or FMA kernels): the real-model tests ran about 1.3x slower in it.
//! [`FMA_X86_64_TRACT_CPU_ISA`] removes what lies above FMA, so AVX2 machines
//! and AVX-512 Xeons share the FMA class. The tests pin the golden digests of
//! both classes, each forced in a child process, on whatever x86_64 machine
//! runs them. Otherwise compare decoded values with a tolerance.

mod romanizer;
mod tensor;
mod validate;

use std::collections::HashMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use prost::Message;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tract_onnx::pb;
use tract_onnx::prelude::{
    tract_linalg, tvec, DatumType, Framework, InferenceModelExt, IntoTValue, RunOptions, TDim,
    TValue, TVec, TypedFact, TypedRunnableModel,
};

pub use romanizer::{
    fetch_test_model, RomanizerModel, ROMANIZER_DECODER, ROMANIZER_ENCODER, ROMANIZER_PACKAGE,
    ROMANIZER_VERSION, ROMANIZER_VOCAB,
};
pub use tensor::{
    output_digest, tensors_digest, DType, Tensor, TensorError, TENSORS_DIGEST_DOMAIN,
};

/// The tract version this engine is built and pinned against.
pub const TRACT_VERSION: &str = "0.23.9";

/// A `TRACT_CPU_ISA` value that removes every x86_64 extension tract knows,
/// leaving the plain x86_64 (SSE2) kernels that every x86_64 CPU runs: a
/// portable determinism class (see the module docs). It must be in the
/// environment before the first model is loaded.
pub const PORTABLE_X86_64_TRACT_CPU_ISA: &str =
    "-avx,-avx2,-fma,-f16c,-avx512f,-avx512vnni,-avx512fp16,-avxvnni,-amx-int8,-amx-bf16";

/// A `TRACT_CPU_ISA` value that removes every x86_64 extension above FMA
/// (the AVX-512 family, AVX-VNNI, AMX): on any CPU with AVX2, FMA and F16C,
/// AVX-512 Xeons included, tract then reports `x86_64,avx,avx2,fma,f16c` and
/// dispatches the same kernels, so this class gives the same bits on all of
/// them (see the module docs). It must be in the environment before the
/// first model is loaded.
pub const FMA_X86_64_TRACT_CPU_ISA: &str =
    "-avx512f,-avx512vnni,-avx512fp16,-avxvnni,-amx-int8,-amx-bf16";

/// Version of this engine's record formats (tensor encoding, digest).
pub const ENGINE_FORMAT_VERSION: u32 = 1;

/// ONNX operators refused because their output is random.
pub const RANDOM_OPS: &[&str] = &[
    "RandomNormal",
    "RandomNormalLike",
    "RandomUniform",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
];

/// Errors of the ONNX engine.
#[derive(Debug, thiserror::Error)]
pub enum OnnxError {
    /// The model file could not be read.
    #[error("cannot read ONNX model {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a valid ONNX model protobuf.
    #[error("{origin} is not a valid ONNX model: {reason}")]
    Decode {
        /// Where the bytes came from (a path or `<memory>`).
        origin: String,
        /// What went wrong.
        reason: String,
    },
    /// The model keeps a tensor in an external data file.
    #[error(
        "{origin}: tensor {tensor:?} is stored as ONNX external data; only self-contained \
         models are supported, since the model id (SHA-256 of the file) must cover every weight"
    )]
    ExternalData {
        /// Where the bytes came from.
        origin: String,
        /// Name of the tensor.
        tensor: String,
    },
    /// The model uses a random operator.
    #[error(
        "{origin}: node {node:?} uses the random operator {op}, which cannot be recomputed \
         deterministically; such models are refused"
    )]
    NonDeterministicOp {
        /// Where the bytes came from.
        origin: String,
        /// Node name.
        node: String,
        /// Operator type.
        op: String,
    },
    /// The model is malformed in a way tract does not check itself (e.g. a
    /// tree ensemble with a cycle or an index out of range); refused before
    /// tract sees it.
    #[error("{origin}: node {node:?} ({op}) is refused: {reason}")]
    Refused {
        /// Where the bytes came from.
        origin: String,
        /// Node name.
        node: String,
        /// Operator type.
        op: String,
        /// What is wrong.
        reason: String,
    },
    /// tract could not analyse, optimise or plan the model (unsupported
    /// operator, inconsistent graph, ...).
    #[error("{origin}: tract cannot prepare the model: {reason}")]
    Prepare {
        /// Where the bytes came from.
        origin: String,
        /// tract's explanation.
        reason: String,
    },
    /// A model input or output has a dtype records cannot carry (strings, ...).
    #[error("{origin}: {kind} {name:?} has dtype {dtype}, which this engine does not support")]
    UnsupportedDtype {
        /// Where the bytes came from (or the model id at run time).
        origin: String,
        /// `input` or `output`.
        kind: &'static str,
        /// Name of the input or output.
        name: String,
        /// tract's name for the dtype.
        dtype: String,
    },
    /// Wrong number of inputs.
    #[error("model expects {expected} inputs ({names}), got {got}")]
    InputCount {
        /// Inputs the model takes.
        expected: usize,
        /// Their names, comma-separated.
        names: String,
        /// Inputs given.
        got: usize,
    },
    /// An input has the wrong dtype.
    #[error("input {index} ({name:?}): expected dtype {expected}, got {got}")]
    InputDType {
        /// Position of the input.
        index: usize,
        /// Its name.
        name: String,
        /// Dtype the model expects.
        expected: DType,
        /// Dtype given.
        got: DType,
    },
    /// An input has the wrong shape.
    #[error("input {index} ({name:?}): expected shape {expected}, got {got:?}{detail}")]
    InputShape {
        /// Position of the input.
        index: usize,
        /// Its name.
        name: String,
        /// Shape the model expects, e.g. `[batch, 3]`.
        expected: String,
        /// Shape given.
        got: Vec<u64>,
        /// Extra explanation (may be empty).
        detail: String,
    },
    /// A tensor could not be built or converted.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// tract failed while running the model.
    #[error("running ONNX model {model_id}: {reason}")]
    Run {
        /// Model id.
        model_id: String,
        /// tract's explanation.
        reason: String,
    },
    /// tract panicked; the panic was caught and turned into this error.
    #[error("the ONNX engine panicked while {during}: {message}")]
    EnginePanic {
        /// What the engine was doing.
        during: String,
        /// The panic message.
        message: String,
    },
}

/// One dimension of a declared input or output shape.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Dim {
    /// A fixed size.
    Fixed(u64),
    /// A symbolic size (e.g. `batch`, or an expression such as `2*S`),
    /// resolved from the actual inputs at run time.
    Symbolic(String),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Fixed(n) => write!(f, "{n}"),
            Dim::Symbolic(s) => f.write_str(s),
        }
    }
}

/// Name, dtype and shape of a model input or output.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorFact {
    /// The ONNX name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Declared shape (as tract infers it).
    pub shape: Vec<Dim>,
}

impl TensorFact {
    fn shape_string(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        format!("[{}]", dims.join(", "))
    }
}

/// Identity of the engine that produced an output: outputs are bit-identical
/// between two runs whose `EngineInfo` is equal (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EngineInfo {
    /// Always `"tract-onnx"`.
    pub engine: String,
    /// The tract version (pinned).
    pub tract_version: String,
    /// This crate's ONNX record format version.
    pub format_version: u32,
    /// The instruction sets tract dispatches kernels for, after the
    /// `TRACT_CPU_ISA` knob, e.g. `x86_64,avx,avx2,fma,f16c`. This is what
    /// decides which kernels run, hence part of the engine's identity.
    pub isa: String,
    /// tract's one-word name for the highest ISA level in `isa` (e.g. `fma`);
    /// informative only: two sets with the same level can select different
    /// kernels.
    pub isa_level: String,
}

impl EngineInfo {
    /// A one-line form for a record's engine-version field, e.g.
    /// `tract-onnx/0.23.9+v1 isa=x86_64,avx,avx2,fma,f16c`.
    pub fn version_string(&self) -> String {
        format!(
            "{}/{}+v{} isa={}",
            self.engine, self.tract_version, self.format_version, self.isa
        )
    }
}

/// The engine identity on this machine and process.
pub fn engine_info() -> EngineInfo {
    let set = tract_linalg::isa::native();
    EngineInfo {
        engine: "tract-onnx".into(),
        tract_version: TRACT_VERSION.into(),
        format_version: ENGINE_FORMAT_VERSION,
        isa: format!("{set:?}"),
        isa_level: set.nickname().to_string(),
    }
}

/// A loaded, optimised ONNX model, ready to run. Cheap to share across
/// threads (`Send + Sync`); each [`OnnxModel::run`] uses its own state.
#[derive(Clone)]
pub struct OnnxModel {
    model_id: String,
    size: u64,
    inputs: Vec<TensorFact>,
    outputs: Vec<TensorFact>,
    plan: Arc<TypedRunnableModel>,
}

impl fmt::Debug for OnnxModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OnnxModel")
            .field("model_id", &self.model_id)
            .field("size", &self.size)
            .field("inputs", &self.inputs)
            .field("outputs", &self.outputs)
            .finish_non_exhaustive()
    }
}

impl OnnxModel {
    /// Reads an ONNX file, computes its model id and prepares an optimised,
    /// single-threaded tract plan.
    pub fn load(path: impl AsRef<Path>) -> Result<OnnxModel, OnnxError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| OnnxError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::prepare(&bytes, &path.display().to_string())
    }

    /// Like [`OnnxModel::load`], from the model file's bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<OnnxModel, OnnxError> {
        Self::prepare(bytes, "<memory>")
    }

    fn prepare(bytes: &[u8], origin: &str) -> Result<OnnxModel, OnnxError> {
        let model_id = hex::encode(Sha256::digest(bytes));
        guard(&format!("loading {origin}"), || {
            Self::prepare_inner(bytes, origin, model_id)
        })?
    }

    fn prepare_inner(bytes: &[u8], origin: &str, model_id: String) -> Result<OnnxModel, OnnxError> {
        let proto = pb::ModelProto::decode(bytes).map_err(|e| OnnxError::Decode {
            origin: origin.to_string(),
            reason: e.to_string(),
        })?;
        let graph = proto.graph.as_ref().ok_or_else(|| OnnxError::Decode {
            origin: origin.to_string(),
            reason: "the model holds no graph".into(),
        })?;
        check_graph(graph, origin)?;

        let prepare_err = |e: tract_onnx::prelude::TractError| OnnxError::Prepare {
            origin: origin.to_string(),
            reason: format!("{e:#}"),
        };
        let inference = tract_onnx::onnx()
            .model_for_proto_model(&proto)
            .map_err(prepare_err)?;
        let input_names: Vec<String> = inference
            .input_outlets()
            .map_err(prepare_err)?
            .iter()
            .map(|o| inference.node(o.node).name.clone())
            .collect();
        let output_names: Vec<String> = inference
            .output_outlets()
            .map_err(prepare_err)?
            .iter()
            .map(|o| {
                inference
                    .outlet_label(*o)
                    .map(str::to_string)
                    .unwrap_or_else(|| inference.node(o.node).name.clone())
            })
            .collect();

        let typed = inference.into_optimized().map_err(prepare_err)?;
        let mut inputs = Vec::with_capacity(input_names.len());
        for (ix, name) in input_names.into_iter().enumerate() {
            let fact = typed.input_fact(ix).map_err(prepare_err)?;
            inputs.push(fact_of(name, fact, "input", origin)?);
        }
        let mut outputs = Vec::with_capacity(output_names.len());
        for (ix, name) in output_names.into_iter().enumerate() {
            let fact = typed.output_fact(ix).map_err(prepare_err)?;
            outputs.push(fact_of(name, fact, "output", origin)?);
        }

        let options = RunOptions {
            executor: Some(tract_linalg::multithread::Executor::SingleThread),
            ..RunOptions::default()
        };
        let plan = typed
            .into_runnable_with_options(&options)
            .map_err(prepare_err)?;
        Ok(OnnxModel {
            model_id,
            size: bytes.len() as u64,
            inputs,
            outputs,
            plan,
        })
    }

    /// The model id: SHA-256 of the model file's bytes, lowercase hex.
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Size of the model file in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The model's inputs, in the order [`OnnxModel::run`] takes them.
    pub fn inputs(&self) -> &[TensorFact] {
        &self.inputs
    }

    /// The model's outputs, in the order [`OnnxModel::run`] returns them.
    pub fn outputs(&self) -> &[TensorFact] {
        &self.outputs
    }

    /// Runs the model on `inputs` (one per model input, in order) and
    /// returns its outputs. Dtypes and fixed dimensions are checked first,
    /// and a symbolic dimension must take the same value wherever it appears.
    pub fn run(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, OnnxError> {
        self.check_inputs(inputs)?;
        guard(&format!("running model {}", self.model_id), || {
            self.run_inner(inputs)
        })?
    }

    fn run_inner(&self, inputs: &[Tensor]) -> Result<Vec<Tensor>, OnnxError> {
        let mut values: TVec<TValue> = tvec!();
        for t in inputs {
            values.push(to_tract(t, &self.model_id)?.into_tvalue());
        }
        let outs = self.plan.run(values).map_err(|e| OnnxError::Run {
            model_id: self.model_id.clone(),
            reason: format!("{e:#}"),
        })?;
        outs.iter()
            .zip(&self.outputs)
            .map(|(v, fact)| from_tract(v, &fact.name, &self.model_id))
            .collect()
    }

    fn check_inputs(&self, inputs: &[Tensor]) -> Result<(), OnnxError> {
        if inputs.len() != self.inputs.len() {
            return Err(OnnxError::InputCount {
                expected: self.inputs.len(),
                names: self
                    .inputs
                    .iter()
                    .map(|f| f.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                got: inputs.len(),
            });
        }
        let mut bound: HashMap<&str, (u64, usize)> = HashMap::new();
        for (index, (t, fact)) in inputs.iter().zip(&self.inputs).enumerate() {
            if t.dtype() != fact.dtype {
                return Err(OnnxError::InputDType {
                    index,
                    name: fact.name.clone(),
                    expected: fact.dtype,
                    got: t.dtype(),
                });
            }
            let shape_err = |detail: String| OnnxError::InputShape {
                index,
                name: fact.name.clone(),
                expected: fact.shape_string(),
                got: t.shape().to_vec(),
                detail,
            };
            if t.shape().len() != fact.shape.len() {
                return Err(shape_err(format!(
                    " (rank {} instead of {})",
                    t.shape().len(),
                    fact.shape.len()
                )));
            }
            for (axis, (&got, want)) in t.shape().iter().zip(&fact.shape).enumerate() {
                match want {
                    Dim::Fixed(n) if *n != got => {
                        return Err(shape_err(format!(" (axis {axis} must be {n}, is {got})")));
                    }
                    Dim::Symbolic(sym) if is_plain_symbol(sym) => match bound.get(sym.as_str()) {
                        Some(&(value, first)) if value != got => {
                            return Err(shape_err(format!(
                                " (axis {axis} is dimension {sym}, which input {first} \
                                     sets to {value}, but here it is {got})"
                            )));
                        }
                        Some(_) => {}
                        None => {
                            bound.insert(sym, (got, index));
                        }
                    },
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

fn is_plain_symbol(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || c == '_')
}

/// Runs `f`, turning a panic inside tract into [`OnnxError::EnginePanic`].
fn guard<R>(during: &str, f: impl FnOnce() -> R) -> Result<R, OnnxError> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        let message = if let Some(s) = payload.downcast_ref::<&str>() {
            (*s).to_string()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.clone()
        } else {
            "unknown panic payload".to_string()
        };
        OnnxError::EnginePanic {
            during: during.to_string(),
            message,
        }
    })
}

/// Refuses external data and random operators, recursively (subgraphs of
/// `If`, `Loop`, `Scan`, ... included).
fn check_graph(graph: &pb::GraphProto, origin: &str) -> Result<(), OnnxError> {
    let external = |t: &pb::TensorProto| t.data_location == Some(1) || !t.external_data.is_empty();
    let external_err = |t: &pb::TensorProto| OnnxError::ExternalData {
        origin: origin.to_string(),
        tensor: t.name.clone(),
    };
    for t in &graph.initializer {
        if external(t) {
            return Err(external_err(t));
        }
    }
    for s in &graph.sparse_initializer {
        for t in s.values.iter().chain(s.indices.iter()) {
            if external(t) {
                return Err(external_err(t));
            }
        }
    }
    for node in &graph.node {
        // Whatever the declared domain: tract resolves operators by name.
        if RANDOM_OPS.contains(&node.op_type.as_str()) {
            return Err(OnnxError::NonDeterministicOp {
                origin: origin.to_string(),
                node: node.name.clone(),
                op: node.op_type.clone(),
            });
        }
        if validate::TREE_ENSEMBLE_OPS.contains(&node.op_type.as_str()) {
            validate::check_tree_ensemble(node).map_err(|reason| OnnxError::Refused {
                origin: origin.to_string(),
                node: node.name.clone(),
                op: node.op_type.clone(),
                reason,
            })?;
        }
        for attr in &node.attribute {
            for t in attr.t.iter().chain(attr.tensors.iter()) {
                if external(t) {
                    return Err(external_err(t));
                }
            }
            for g in attr.g.iter().chain(attr.graphs.iter()) {
                check_graph(g, origin)?;
            }
        }
    }
    Ok(())
}

fn dtype_of(dt: DatumType) -> Option<DType> {
    Some(match dt {
        DatumType::F32 => DType::F32,
        DatumType::F64 => DType::F64,
        DatumType::F16 => DType::F16,
        DatumType::I8 | DatumType::QI8(_) => DType::I8,
        DatumType::I16 => DType::I16,
        DatumType::I32 => DType::I32,
        DatumType::I64 => DType::I64,
        DatumType::U8 | DatumType::QU8(_) => DType::U8,
        DatumType::U16 => DType::U16,
        DatumType::U32 => DType::U32,
        DatumType::U64 => DType::U64,
        DatumType::Bool => DType::Bool,
        _ => return None,
    })
}

fn dim_of(d: &TDim) -> Dim {
    match d.to_i64() {
        Ok(n) if n >= 0 => Dim::Fixed(n as u64),
        _ => Dim::Symbolic(d.to_string()),
    }
}

fn fact_of(
    name: String,
    fact: &TypedFact,
    kind: &'static str,
    origin: &str,
) -> Result<TensorFact, OnnxError> {
    let dtype = dtype_of(fact.datum_type).ok_or_else(|| OnnxError::UnsupportedDtype {
        origin: origin.to_string(),
        kind,
        name: name.clone(),
        dtype: format!("{:?}", fact.datum_type),
    })?;
    Ok(TensorFact {
        name,
        dtype,
        shape: fact.shape.iter().map(dim_of).collect(),
    })
}

type TractTensor = tract_onnx::prelude::Tensor;

fn to_tract(t: &Tensor, model_id: &str) -> Result<TractTensor, OnnxError> {
    let shape: Vec<usize> = t
        .shape()
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<_, _>>()
        .map_err(|_| OnnxError::Run {
            model_id: model_id.to_string(),
            reason: format!(
                "shape {:?} does not fit this machine's address space",
                t.shape()
            ),
        })?;
    let converted = match t.dtype() {
        DType::F32 => TractTensor::from_shape(&shape, &t.to_f32_vec()?),
        DType::F64 => TractTensor::from_shape(&shape, &t.to_f64_vec()?),
        DType::F16 => {
            let halves: Vec<tract_onnx::prelude::f16> = t
                .data()
                .chunks_exact(2)
                .map(|c| tract_onnx::prelude::f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
                .collect();
            TractTensor::from_shape(&shape, &halves)
        }
        DType::I8 => TractTensor::from_shape(&shape, &t.to_i8_vec()?),
        DType::I16 => TractTensor::from_shape(&shape, &t.to_i16_vec()?),
        DType::I32 => TractTensor::from_shape(&shape, &t.to_i32_vec()?),
        DType::I64 => TractTensor::from_shape(&shape, &t.to_i64_vec()?),
        DType::U8 => TractTensor::from_shape(&shape, &t.to_u8_vec()?),
        DType::U16 => TractTensor::from_shape(&shape, &t.to_u16_vec()?),
        DType::U32 => TractTensor::from_shape(&shape, &t.to_u32_vec()?),
        DType::U64 => TractTensor::from_shape(&shape, &t.to_u64_vec()?),
        DType::Bool => TractTensor::from_shape(&shape, &t.to_bool_vec()?),
    };
    converted.map_err(|e| OnnxError::Run {
        model_id: model_id.to_string(),
        reason: format!("{e:#}"),
    })
}

fn le_bytes<T: tract_onnx::prelude::Datum, const N: usize>(
    t: &TractTensor,
    f: impl Fn(&T) -> [u8; N],
) -> Result<Vec<u8>, String> {
    let view = t.to_plain_array_view::<T>().map_err(|e| format!("{e:#}"))?;
    let mut out = Vec::with_capacity(view.len() * N);
    for v in view.iter() {
        out.extend_from_slice(&f(v));
    }
    Ok(out)
}

fn from_tract(v: &TValue, name: &str, model_id: &str) -> Result<Tensor, OnnxError> {
    let t: &TractTensor = v;
    let dt = t.datum_type();
    let unsupported = || OnnxError::UnsupportedDtype {
        origin: model_id.to_string(),
        kind: "output",
        name: name.to_string(),
        dtype: format!("{dt:?}"),
    };
    let dtype = dtype_of(dt).ok_or_else(unsupported)?;
    let bytes = match dt {
        DatumType::F32 => le_bytes::<f32, 4>(t, |x| x.to_le_bytes()),
        DatumType::F64 => le_bytes::<f64, 8>(t, |x| x.to_le_bytes()),
        DatumType::F16 => le_bytes::<tract_onnx::prelude::f16, 2>(t, |x| x.to_bits().to_le_bytes()),
        DatumType::I8 => le_bytes::<i8, 1>(t, |x| x.to_le_bytes()),
        DatumType::I16 => le_bytes::<i16, 2>(t, |x| x.to_le_bytes()),
        DatumType::I32 => le_bytes::<i32, 4>(t, |x| x.to_le_bytes()),
        DatumType::I64 => le_bytes::<i64, 8>(t, |x| x.to_le_bytes()),
        DatumType::U8 => le_bytes::<u8, 1>(t, |x| x.to_le_bytes()),
        DatumType::U16 => le_bytes::<u16, 2>(t, |x| x.to_le_bytes()),
        DatumType::U32 => le_bytes::<u32, 4>(t, |x| x.to_le_bytes()),
        DatumType::U64 => le_bytes::<u64, 8>(t, |x| x.to_le_bytes()),
        DatumType::Bool => le_bytes::<bool, 1>(t, |x| [u8::from(*x)]),
        // Quantised 8-bit types: one byte per element, endianness-free.
        DatumType::QI8(_) | DatumType::QU8(_) => Ok(t.as_bytes().to_vec()),
        _ => return Err(unsupported()),
    }
    .map_err(|reason| OnnxError::Run {
        model_id: model_id.to_string(),
        reason,
    })?;
    let shape = t.shape().iter().map(|&d| d as u64).collect();
    Ok(Tensor::new(dtype, shape, bytes)?)
}
