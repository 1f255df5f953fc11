//! The transformer: weights, KV cache and the batched forward pass.
//!
//! Four architectures (`general.architecture`) share one pass:
//! - `llama` (SmolLM2 and the llama family): RoPE on adjacent pairs;
//! - `qwen2` (Qwen2, Qwen2.5): biases on the query, key and value
//!   projections, NeoX-style RoPE (pairs `(i, i + d/2)`);
//! - `qwen3`: per-head RMS norms of queries and keys (before RoPE), no
//!   biases, NeoX-style RoPE, heads wider than `dim / heads`;
//! - `gemma3`: an embedding scaled by √dim, per-head query and key norms,
//!   norms after attention and after the feed-forward (before each joins the
//!   residual), a GeGLU feed-forward (gelu-tanh), NeoX-style RoPE, and
//!   sliding-window layers (five of every six: a query at position `p` sees
//!   the keys of `p + 1 - window..=p`, as llama.cpp) with their own RoPE base.

use std::path::Path;

use crate::attention::{attend, KvCache};
use crate::error::{LlmError, Result};
use crate::gguf::{ggml_type_name, GgmlType, Gguf, TensorInfo, Value};
use crate::kpanel::{is_kquant, matmul_kpanels, pack_kmatrix, QK_K};
use crate::kquant::float_rows;
use crate::math::{exp_f32, sin_cos_f64};
use crate::pool::{Chunks, Pool, SharedOut};
use crate::quant::{
    dequantize_row, dot_f32, pack_matrix, panel_type, quantize_row, QCol, PANEL, QK,
};
use crate::simd::{
    matmul_panels, widens, Dest, KernelKind, Panels, Widened, COL_TILE_BYTES, PANEL_CHUNK_BYTES,
};
use crate::tokenizer::Tokenizer;

/// A supported model architecture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// `llama`.
    Llama,
    /// `gemma3`.
    Gemma3,
    /// `qwen2` (also Qwen2.5).
    Qwen2,
    /// `qwen3`.
    Qwen3,
}

impl Arch {
    /// The architecture named by `general.architecture`.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "llama" => Arch::Llama,
            "gemma3" => Arch::Gemma3,
            "qwen2" => Arch::Qwen2,
            "qwen3" => Arch::Qwen3,
            _ => return None,
        })
    }

    /// RoPE on the pairs `(i, i + d/2)` (llama.cpp's NeoX mode) rather than
    /// on adjacent pairs.
    fn neox(self) -> bool {
        self != Arch::Llama
    }

    /// Per-head RMS norms of queries and keys.
    fn qk_norm(self) -> bool {
        matches!(self, Arch::Gemma3 | Arch::Qwen3)
    }
}

/// Hyper-parameters of a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Architecture.
    pub arch: Arch,
    /// Transformer blocks.
    pub n_layer: usize,
    /// Embedding width.
    pub dim: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention).
    pub n_kv_head: usize,
    /// Width of one head (keys, queries and values).
    pub head_dim: usize,
    /// Width of all query heads together (`n_head × head_dim`).
    pub q_dim: usize,
    /// Feed-forward hidden width.
    pub ffn_dim: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Training context length (the engine's maximum sequence length).
    pub ctx_len: usize,
    /// RoPE base frequency.
    pub rope_base: f64,
    /// Number of rotated dimensions per head.
    pub rope_dim: usize,
    /// RMSNorm epsilon.
    pub eps: f32,
    /// RoPE base of the sliding-window layers (`gemma3`).
    pub rope_base_swa: f64,
    /// Window of the sliding-window layers, if there are any.
    pub sliding_window: Option<usize>,
}

/// A weight matrix stored in the GGUF file (rows × cols, row-major).
#[derive(Debug, Clone)]
pub(crate) struct Mat {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    offset: usize,
    row_bytes: usize,
    /// Integer formats and k-quants: panels repacked for the kernels (see
    /// `quant::pack_matrix`, `kpanel::pack_kmatrix`).
    packed: Option<std::sync::Arc<crate::quant::Packed>>,
}

impl Mat {
    fn from_info(g: &Gguf, info: &TensorInfo, rows: usize, cols: usize) -> Result<Self> {
        let ty =
            GgmlType::from_u32(info.raw_type).ok_or_else(|| LlmError::UnsupportedTensorType {
                tensor: info.name.clone(),
                kind: ggml_type_name(info.raw_type),
            })?;
        let dims_ok =
            info.dims.len() == 2 && info.dims[0] == cols as u64 && info.dims[1] == rows as u64;
        if !dims_ok {
            return Err(LlmError::Missing(format!(
                "tensor {:?} with shape [{cols}, {rows}] (found {:?})",
                info.name, info.dims
            )));
        }
        if !cols.is_multiple_of(ty.block_elems())
            || (ty != GgmlType::F32 && ty != GgmlType::F16 && !cols.is_multiple_of(QK))
        {
            return Err(LlmError::Format(format!(
                "tensor {:?}: row length {cols} incompatible with {ty:?}",
                info.name
            )));
        }
        let row_bytes = cols / ty.block_elems() * ty.block_bytes();
        let mut m = Mat {
            ty,
            rows,
            cols,
            offset: info.offset,
            row_bytes,
            packed: None,
        };
        if m.is_integer() {
            let packed = pack_matrix(ty, g.tensor_data(info), rows, cols / QK);
            m.packed = Some(std::sync::Arc::new(packed));
        } else if is_kquant(ty) {
            let packed = pack_kmatrix(ty, g.tensor_data(info), rows, cols / QK_K);
            m.packed = Some(std::sync::Arc::new(packed));
        }
        Ok(m)
    }

    /// Row `r` in the file's layout.
    #[inline]
    fn row<'a>(&self, data: &'a [u8], r: usize) -> &'a [u8] {
        let s = self.offset + r * self.row_bytes;
        &data[s..s + self.row_bytes]
    }

    /// Integer formats run on the W4A8/W8A8 kernels (the k-quants on their
    /// own, [`crate::kpanel`]); f32 and f16 are converted row by row and
    /// multiplied in f32 by the fixed-order [`dot_f32`] ([`crate::kquant`]:
    /// the same bits on every CPU).
    fn is_integer(&self) -> bool {
        matches!(
            self.ty,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q8_0
        )
    }

    /// Bytes one product with a single column reads: the packed panels, or
    /// the file's rows.
    fn bytes(&self) -> usize {
        self.packed
            .as_ref()
            .map_or(self.rows * self.row_bytes, |p| p.len())
    }

    /// The format of the packed panels ([`panel_type`]).
    fn panel_ty(&self) -> GgmlType {
        panel_type(self.ty)
    }
}

#[derive(Debug)]
struct Layer {
    attn_norm: Vec<f32>,
    /// Biases of the query, key and value projections (`qwen2`).
    qkv_bias: Option<[Vec<f32>; 3]>,
    /// Per-head norms of queries and keys (`gemma3`).
    qk_norm: Option<(Vec<f32>, Vec<f32>)>,
    /// Norms of the attention and feed-forward outputs before they join the
    /// residual (`gemma3`).
    post_norms: Option<(Vec<f32>, Vec<f32>)>,
    /// A sliding-window layer (its own RoPE table).
    sliding: bool,
    wq: Mat,
    wk: Mat,
    wv: Mat,
    wo: Mat,
    ffn_norm: Vec<f32>,
    w_gate: Mat,
    w_up: Mat,
    w_down: Mat,
}

/// A loaded model: memory-mapped weights, tokenizer and chat template.
pub struct Model {
    gguf: Gguf,
    /// Hyper-parameters.
    pub config: Config,
    layers: Vec<Layer>,
    tok_embd: Mat,
    out_norm: Vec<f32>,
    output: Mat,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// Jinja chat template (from the file, or ChatML).
    pub chat_template: String,
    /// (cos, sin) per position and rotated pair, `[pos][rope_dim / 2]`.
    rope: Vec<(f32, f32)>,
    /// The same for the sliding-window layers' base (empty without them).
    rope_swa: Vec<(f32, f32)>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("config", &self.config)
            .finish()
    }
}

fn norm_vec(g: &Gguf, name: &str, n: usize) -> Result<Vec<f32>> {
    let info = g
        .tensors
        .get(name)
        .ok_or_else(|| LlmError::Missing(format!("tensor {name:?}")))?;
    let ty = GgmlType::from_u32(info.raw_type).ok_or_else(|| LlmError::UnsupportedTensorType {
        tensor: name.to_string(),
        kind: ggml_type_name(info.raw_type),
    })?;
    if info.elems() != n as u64 || !n.is_multiple_of(ty.block_elems()) {
        return Err(LlmError::Missing(format!("tensor {name:?} of length {n}")));
    }
    let mut out = vec![0f32; n];
    dequantize_row(ty, g.tensor_data(info), &mut out);
    Ok(out)
}

impl Model {
    /// Load a GGUF model file.
    pub fn load(path: &Path) -> Result<Self> {
        let gguf = Gguf::open(path)?;
        Self::from_gguf(gguf)
    }

    /// Build a model from a parsed GGUF file.
    pub fn from_gguf(gguf: Gguf) -> Result<Self> {
        let arch_name = gguf.get_str("general.architecture")?.to_string();
        let Some(arch) = Arch::from_name(&arch_name) else {
            return Err(LlmError::UnsupportedArchitecture(arch_name));
        };
        let gemma = arch == Arch::Gemma3;
        let key = |k: &str| format!("{arch_name}.{k}");
        let opt_u = |k: &str| -> Result<Option<usize>> {
            match gguf.get(&key(k)).map(Value::as_u64) {
                None => Ok(None),
                Some(Some(v)) if v > 0 && v < (1 << 24) => Ok(Some(v as usize)),
                Some(v) => Err(LlmError::Format(format!(
                    "{} = {v:?} is out of range",
                    key(k)
                ))),
            }
        };
        let u = |k: &str| -> Result<usize> {
            opt_u(k)?.ok_or_else(|| LlmError::Missing(format!("metadata {:?}", key(k))))
        };
        let n_layer = u("block_count")?;
        let dim = u("embedding_length")?;
        let n_head = u("attention.head_count")?;
        let n_kv_head = opt_u("attention.head_count_kv")?.unwrap_or(n_head);
        let ffn_dim = u("feed_forward_length")?;
        let ctx_len = u("context_length")?;
        if n_head % n_kv_head != 0
            || (dim % n_head != 0 && opt_u("attention.key_length")?.is_none())
        {
            return Err(LlmError::Format(format!(
                "inconsistent head counts: dim {dim}, heads {n_head}, kv heads {n_kv_head}"
            )));
        }
        let head_dim = opt_u("attention.key_length")?.unwrap_or(dim / n_head);
        if opt_u("attention.value_length")?.is_some_and(|v| v != head_dim) {
            return Err(LlmError::Format("key and value lengths differ".into()));
        }
        let q_dim = n_head * head_dim;
        let rope_dim = opt_u("rope.dimension_count")?.unwrap_or(head_dim);
        if rope_dim > head_dim || !rope_dim.is_multiple_of(2) {
            return Err(LlmError::Format(format!("bad rope dimension {rope_dim}")));
        }
        if arch.neox() && rope_dim != head_dim {
            return Err(LlmError::Format(
                "partial NeoX RoPE is not supported".into(),
            ));
        }
        let f = |k: &str| gguf.get(&key(k)).and_then(Value::as_f64);
        let rope_base = f("rope.freq_base").unwrap_or(10000.0);
        let rope_base_swa = f("rope.freq_base_swa").unwrap_or(10000.0);
        let eps = f("attention.layer_norm_rms_epsilon").unwrap_or(1e-5) as f32;
        if gguf.get(&key("rope.scaling.type")).is_some()
            || f("rope.scaling.factor").is_some_and(|v| v != 1.0)
        {
            return Err(LlmError::Format("RoPE scaling is not supported".into()));
        }
        let sliding_window = if gemma {
            opt_u("attention.sliding_window")?
        } else {
            None
        };
        let tokenizer = Tokenizer::from_gguf(&gguf)?;
        let vocab = tokenizer.vocab_size();
        let kv_dim = n_kv_head * head_dim;
        let mat = |name: &str, rows: usize, cols: usize| -> Result<Mat> {
            let info = gguf
                .tensors
                .get(name)
                .ok_or_else(|| LlmError::Missing(format!("tensor {name:?}")))?;
            Mat::from_info(&gguf, info, rows, cols)
        };
        let mut layers = Vec::with_capacity(n_layer);
        for l in 0..n_layer {
            let p = |s: &str| format!("blk.{l}.{s}.weight");
            let pair = |a: &str, b: &str, n: usize| -> Result<_> {
                Ok((norm_vec(&gguf, &p(a), n)?, norm_vec(&gguf, &p(b), n)?))
            };
            let bias = |s: &str, n: usize| norm_vec(&gguf, &format!("blk.{l}.{s}.bias"), n);
            layers.push(Layer {
                attn_norm: norm_vec(&gguf, &p("attn_norm"), dim)?,
                qkv_bias: if arch == Arch::Qwen2 {
                    Some([
                        bias("attn_q", q_dim)?,
                        bias("attn_k", kv_dim)?,
                        bias("attn_v", kv_dim)?,
                    ])
                } else {
                    None
                },
                qk_norm: if arch.qk_norm() {
                    Some(pair("attn_q_norm", "attn_k_norm", head_dim)?)
                } else {
                    None
                },
                post_norms: if gemma {
                    Some(pair("post_attention_norm", "post_ffw_norm", dim)?)
                } else {
                    None
                },
                // Every sixth layer attends globally, the others within the window.
                sliding: sliding_window.is_some() && l % 6 < 5,
                wq: mat(&p("attn_q"), q_dim, dim)?,
                wk: mat(&p("attn_k"), kv_dim, dim)?,
                wv: mat(&p("attn_v"), kv_dim, dim)?,
                wo: mat(&p("attn_output"), dim, q_dim)?,
                ffn_norm: norm_vec(&gguf, &p("ffn_norm"), dim)?,
                w_gate: mat(&p("ffn_gate"), ffn_dim, dim)?,
                w_up: mat(&p("ffn_up"), ffn_dim, dim)?,
                w_down: mat(&p("ffn_down"), dim, ffn_dim)?,
            });
        }
        let tok_embd = mat("token_embd.weight", vocab, dim)?;
        let output = if gguf.tensors.contains_key("output.weight") {
            mat("output.weight", vocab, dim)?
        } else {
            tok_embd.clone()
        };
        let out_norm = norm_vec(&gguf, "output_norm.weight", dim)?;
        let chat_template = gguf
            .get("tokenizer.chat_template")
            .and_then(Value::as_str)
            .unwrap_or(match arch {
                Arch::Llama | Arch::Qwen2 | Arch::Qwen3 => crate::chat::CHATML_TEMPLATE,
                Arch::Gemma3 => crate::chat::GEMMA_TEMPLATE,
            })
            .to_string();
        let config = Config {
            arch,
            q_dim,
            rope_base_swa,
            sliding_window,
            n_layer,
            dim,
            n_head,
            n_kv_head,
            head_dim,
            ffn_dim,
            vocab,
            ctx_len,
            rope_base,
            rope_dim,
            eps,
        };
        Ok(Model {
            gguf,
            config,
            layers,
            tok_embd,
            out_norm,
            output,
            tokenizer,
            chat_template,
            rope: Vec::new(),
            rope_swa: Vec::new(),
        })
    }

    /// Maximum sequence length the engine accepts (the model's context length,
    /// capped at 32768).
    pub fn max_seq_len(&self) -> usize {
        self.config.ctx_len.min(32768)
    }

    /// Bytes of weights one decode step reads: every layer's matrices and the
    /// output head (one embedding row is negligible). Decode is bound by
    /// memory bandwidth, so this over the bandwidth is its ceiling.
    pub fn decode_bytes(&self) -> usize {
        let layers: usize = self
            .layers
            .iter()
            .flat_map(|l| [&l.wq, &l.wk, &l.wv, &l.wo, &l.w_gate, &l.w_up, &l.w_down])
            .map(Mat::bytes)
            .sum();
        layers + self.output.bytes()
    }

    /// Make sure the RoPE table covers positions `0..n`.
    pub(crate) fn ensure_rope(&mut self, n: usize) {
        let half = self.config.rope_dim / 2;
        let have = self.rope.len() / half.max(1);
        if n <= have || half == 0 {
            return;
        }
        let n = n.max(have * 2).min(self.max_seq_len().max(n));
        let dim = self.config.rope_dim;
        extend_rope(&mut self.rope, self.config.rope_base, dim, have, n);
        if self.layers.iter().any(|l| l.sliding) {
            extend_rope(&mut self.rope_swa, self.config.rope_base_swa, dim, have, n);
        }
    }

    fn data(&self) -> &[u8] {
        self.gguf.tensor_bytes_all()
    }
}

/// Append the (cos, sin) of positions `from..to` for RoPE base `base`.
fn extend_rope(table: &mut Vec<(f32, f32)>, base: f64, rope_dim: usize, from: usize, to: usize) {
    let half = rope_dim / 2;
    let ln_base = crate::math::ln_f64(base);
    let inv: Vec<f64> = (0..half)
        .map(|i| crate::math::exp_f64(-((2 * i) as f64) / rope_dim as f64 * ln_base))
        .collect();
    table.reserve((to - from) * half);
    for p in from..to {
        for f in &inv {
            let (s, c) = sin_cos_f64(p as f64 * f);
            table.push((c as f32, s as f32));
        }
    }
}

/// One token of a forward batch.
#[derive(Debug, Clone, Copy)]
pub struct Entry {
    /// Index of the sequence's cache in the `caches` slice.
    pub seq: usize,
    /// Token id.
    pub token: u32,
    /// Position in the sequence.
    pub pos: usize,
}

/// Activations of a batch: f32 rows and their 8-bit quantisation.
struct Acts {
    n: usize,
    cols: usize,
    nbp: usize,
    f: Vec<f32>,
    qs: Vec<[i8; QK]>,
    d: Vec<f32>,
    s: Vec<f32>,
    qsum: Vec<i32>,
}

impl Acts {
    fn new(n: usize, cols: usize) -> Self {
        let nbp = cols / QK;
        Acts {
            n,
            cols,
            nbp,
            f: vec![0.0; n * cols],
            qs: vec![[0; QK]; n * nbp],
            d: vec![0.0; n * nbp],
            s: vec![0.0; n * nbp],
            qsum: vec![0; n * nbp],
        }
    }
    /// The rows `bounds[t]..bounds[t + 1]` of every array, one part per `t`.
    fn parts(&mut self, bounds: &[usize]) -> Vec<ActsPart<'_>> {
        let (cols, nb) = (self.cols, self.nbp);
        let (mut f, mut qs, mut d, mut s, mut qsum) = (
            &mut self.f[..],
            &mut self.qs[..],
            &mut self.d[..],
            &mut self.s[..],
            &mut self.qsum[..],
        );
        bounds
            .windows(2)
            .map(|w| {
                let rows = w[1] - w[0];
                ActsPart {
                    cols,
                    f: take_front(&mut f, rows * cols),
                    qs: take_front(&mut qs, rows * nb),
                    d: take_front(&mut d, rows * nb),
                    s: take_front(&mut s, rows * nb),
                    qsum: take_front(&mut qsum, rows * nb),
                }
            })
            .collect()
    }
    fn qcol(&self, i: usize) -> QCol<'_> {
        let r = i * self.nbp..(i + 1) * self.nbp;
        QCol {
            qs: &self.qs[r.clone()],
            d: &self.d[r.clone()],
            s: &self.s[r.clone()],
            qsum: &self.qsum[r],
        }
    }
}

/// The first `n` elements of `s`, which keeps the rest (to hand disjoint
/// row ranges to the workers).
fn take_front<'a, T>(s: &mut &'a mut [T], n: usize) -> &'a mut [T] {
    let (front, rest) = std::mem::take(s).split_at_mut(n);
    *s = rest;
    front
}

/// Some rows of an [`Acts`], for one worker.
struct ActsPart<'a> {
    cols: usize,
    f: &'a mut [f32],
    qs: &'a mut [[i8; QK]],
    d: &'a mut [f32],
    s: &'a mut [f32],
    qsum: &'a mut [i32],
}

impl ActsPart<'_> {
    fn quantize(&mut self, kind: KernelKind) {
        quantize_rows(kind, self.cols, self.f, self.qs, self.d, self.s, self.qsum);
    }
}

/// Batches of at least this many tokens split their element-wise work
/// (norms, quantisation, activation) across the workers.
const PAR_ROWS: usize = 8;

/// Rows of logits computed at a time (13.5 MiB for a 49,152-token
/// vocabulary; a multiple of the 512-bit kernel's 6-column tiles).
pub(crate) const LOGIT_ROWS: usize = 72;

/// Row bounds of the element-wise parts of a batch of `n` tokens.
fn row_bounds(n: usize, threads: usize) -> Vec<usize> {
    let parts = if n >= PAR_ROWS { threads } else { 1 };
    (0..=parts).map(|t| n * t / parts).collect()
}

/// `x += add` (when given), then RMS norm with weights `w` into `xn`, then
/// `xn` quantised; the rows split by `bounds` across the workers.
#[allow(clippy::too_many_arguments)]
fn pre_norm(
    kind: KernelKind,
    pool: &Pool,
    bounds: &[usize],
    x: &mut [f32],
    add: Option<&[f32]>,
    w: &[f32],
    eps: f32,
    xn: &mut Acts,
) {
    let dim = w.len();
    let mut rest = x;
    let mut xs = Vec::new();
    for b in bounds.windows(2) {
        xs.push((b[0]..b[1], take_front(&mut rest, (b[1] - b[0]) * dim)));
    }
    let parts: Vec<_> = xs.into_iter().zip(xn.parts(bounds)).collect();
    pool.run_parts(parts, &|((rows, xr), mut p)| {
        if let Some(add) = add {
            add_assign(kind, xr, &add[rows.start * dim..rows.end * dim]);
        }
        norm_rows(kind, xr, w, eps, p.f);
        p.quantize(kind);
    });
}

/// `hid = act(gate) * up` (act: SiLU, or gelu-tanh with `gelu`),
/// quantised; the rows split by `bounds`.
fn act_quantize(
    kind: KernelKind,
    pool: &Pool,
    bounds: &[usize],
    gelu: bool,
    gate: &[f32],
    up: &[f32],
    hid: &mut Acts,
) {
    let ffn = hid.cols;
    let parts: Vec<_> = bounds
        .windows(2)
        .map(|b| b[0]..b[1])
        .zip(hid.parts(bounds))
        .collect();
    pool.run_parts(parts, &|(rows, mut p)| {
        let r = rows.start * ffn..rows.end * ffn;
        if gelu {
            gelu_mul(kind, &gate[r.clone()], &up[r], p.f);
        } else {
            silu_mul(kind, &gate[r.clone()], &up[r], p.f);
        }
        p.quantize(kind);
    });
}

/// `acts` quantised; the rows split by `bounds`.
fn quantize_par(kind: KernelKind, pool: &Pool, bounds: &[usize], acts: &mut Acts) {
    pool.run_parts(acts.parts(bounds), &|mut p| p.quantize(kind));
}

/// Panels `p0..p1` of an integer matrix product (`qcols`: the columns of
/// `x`): chunks of panels small enough to stay in L2 across column tiles,
/// column tiles small enough to stay in L1 across a chunk's panels.
fn int_matmul_part(
    kind: KernelKind,
    m: &Mat,
    x: &Acts,
    qcols: &[QCol<'_>],
    (p0, p1): (usize, usize),
    dest: &Dest<'_, '_>,
) {
    let Some(packed) = m.packed.as_deref() else {
        return;
    };
    let n = x.n;
    let ty = m.panel_ty();
    let nb = m.cols / QK;
    if n == 1 {
        let src = Panels::Packed(packed);
        return matmul_panels(kind, ty, src, nb, (p0, p1), qcols, 0, dest);
    }
    let widen = n >= WIDEN_MIN_COLS && widens(kind, ty);
    let col_bytes = x.nbp * (QK + 12);
    // Whole 2 x 6 (512-bit) and 1 x 4 / 1 x 2 (256-bit) tiles per column tile.
    let tile = (COL_TILE_BYTES / col_bytes / 12 * 12).max(12);
    let chunk = (PANEL_CHUNK_BYTES / (m.row_bytes * PANEL) / 4 * 4).max(4);
    WIDENED.with_borrow_mut(|wide| {
        let mut q0 = p0;
        while q0 < p1 {
            let q1 = (q0 + chunk).min(p1);
            let src = if widen {
                wide.fill(kind, ty, packed, nb, (q0, q1));
                Panels::Wide(wide)
            } else {
                Panels::Packed(packed)
            };
            let mut t0 = 0;
            while t0 < n {
                let t1 = (t0 + tile).min(n);
                matmul_panels(kind, ty, src, nb, (q0, q1), &qcols[t0..t1], t0, dest);
                t0 = t1;
            }
            q0 = q1;
        }
    });
}

/// Columns from which a batched product widens its panels first: widening
/// costs about what one kernel pass over the chunk spends unpacking, so it
/// pays for itself from the second tile of columns.
const WIDEN_MIN_COLS: usize = 8;

thread_local! {
    /// Each worker's widened panel chunk, its allocation reused.
    static WIDENED: std::cell::RefCell<Widened> = std::cell::RefCell::default();
}

/// `out[c][r] = dot(W[r], x[c])` for all rows r and columns c, for each
/// `(W, out)` of `mats` (all sharing the input `x`, in one round of the pool).
fn matmul(kind: KernelKind, pool: &Pool, data: &[u8], x: &Acts, mats: &mut [(&Mat, &mut [f32])]) {
    let n = x.n;
    let threads = pool.threads();
    let outs: Vec<(&Mat, SharedOut<'_>, Chunks)> = mats
        .iter_mut()
        .map(|(m, out)| {
            debug_assert_eq!(x.cols, m.cols);
            let chunks = product_chunks(m, n, threads);
            (*m, SharedOut::new(&mut out[..n * m.rows]), chunks)
        })
        .collect();
    let job = |_| {
        let qcols: Vec<QCol<'_>> = (0..n).map(|c| x.qcol(c)).collect();
        for (m, out, chunks) in &outs {
            let dest = Dest { out, rows: m.rows };
            if m.is_integer() {
                while let Some(r) = chunks.take() {
                    int_matmul_part(kind, m, x, &qcols, (r.start, r.end), &dest);
                }
            } else if let (true, Some(packed)) = (is_kquant(m.ty), m.packed.as_deref()) {
                let nsb = m.cols / QK_K;
                while let Some(r) = chunks.take() {
                    matmul_kpanels(kind, m.ty, packed, nsb, (r.start, r.end), &qcols, &dest);
                }
            } else {
                let mut buf = vec![0f32; m.cols];
                let xs = &x.f[..n * m.cols];
                while let Some(r) = chunks.take() {
                    let at = m.offset + r.start * m.row_bytes;
                    let bytes = &data[at..at + r.len() * m.row_bytes];
                    float_rows(kind, m.ty, bytes, m.row_bytes, r.start, xs, &mut buf, &dest);
                }
            }
        }
    };
    pool.run_chunked(&job);
}

/// Weight bytes a worker takes at least at a time in a one-column product
/// (unless that would leave a worker without any). Each chunk starts a new
/// stream of reads, which the hardware prefetchers take a while to follow:
/// on the Qwen3-0.6B shape at 2 threads, decode ran 12 % faster with 256
/// KiB than with 16 KiB (and 1 MiB, which leaves the workers uneven at the
/// end of a round, slower again).
const MIN_TAKE_BYTES: usize = 256 * 1024;

/// The chunks of a product's units (panels of an integer matrix, rows of
/// the others) that the workers take in turn: each `1 / (4 × threads)` of
/// what is left, down to [`MIN_TAKE_BYTES`] of weights (a batch: groups of
/// four panels, as [`int_matmul_part`] chunks them), so that a worker
/// waits at the end of a round for little more than one small chunk. One
/// worker takes everything at once.
fn product_chunks(m: &Mat, n: usize, threads: usize) -> Chunks {
    let panelled = m.packed.is_some();
    let (units, unit_bytes) = if panelled {
        (m.rows.div_ceil(PANEL), m.row_bytes * PANEL)
    } else {
        (m.rows, m.row_bytes)
    };
    let min = if n > 1 && panelled {
        4
    } else {
        // Never fewer chunks than workers.
        (MIN_TAKE_BYTES / unit_bytes.max(1)).min(units.div_ceil(threads))
    };
    let parts = if threads == 1 { 1 } else { 4 * threads };
    Chunks::new(units, min, parts)
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ss = dot_f32(x, x);
    let mean = ss / x.len() as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &xi), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = (xi * scale) * wi;
    }
}

// Element-wise steps of the forward pass, compiled for the widest vectors
// the kernel family allows (same bits).

#[inline(always)]
fn quantize_rows_impl(
    cols: usize,
    f: &[f32],
    qs: &mut [[i8; QK]],
    d: &mut [f32],
    s: &mut [f32],
    qsum: &mut [i32],
) {
    let nb = cols / QK;
    for (i, x) in f.chunks_exact(cols).enumerate() {
        let r = i * nb..(i + 1) * nb;
        quantize_row(
            x,
            &mut qs[r.clone()],
            &mut d[r.clone()],
            &mut s[r.clone()],
            &mut qsum[r],
        );
    }
}
crate::simd::multiversion!(fn quantize_rows_auto(
    cols: usize,
    f: &[f32],
    qs: &mut [[i8; QK]],
    d: &mut [f32],
    s: &mut [f32],
    qsum: &mut [i32],
) => quantize_rows_impl);

#[allow(unsafe_code)]
fn quantize_rows(
    kind: KernelKind,
    cols: usize,
    f: &[f32],
    qs: &mut [[i8; QK]],
    d: &mut [f32],
    s: &mut [f32],
    qsum: &mut [i32],
) {
    #[cfg(target_arch = "x86_64")]
    if kind == KernelKind::Vnni512 {
        // SAFETY: this kind exists only on CPUs with AVX-512 (`KernelKind::supported`).
        return unsafe { crate::simd::quantize_row_zmm(f, qs, d, s, qsum) };
    }
    quantize_rows_auto(kind, cols, f, qs, d, s, qsum);
}

#[inline(always)]
fn norm_rows_impl(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let dim = w.len();
    for (xr, o) in x.chunks_exact(dim).zip(out.chunks_exact_mut(dim)) {
        rms_norm(xr, w, eps, o);
    }
}
crate::simd::multiversion!(fn norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) => norm_rows_impl);

#[inline(always)]
fn silu_mul_impl(gate: &[f32], up: &[f32], out: &mut [f32]) {
    for ((h, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *h = g / (1.0 + exp_f32(-g)) * u;
    }
}
crate::simd::multiversion!(fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) => silu_mul_impl);

#[inline(always)]
fn gelu_mul_impl(gate: &[f32], up: &[f32], out: &mut [f32]) {
    // gelu-tanh: 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³))), with
    // tanh(u) = 1 − 2 / (e^{2u} + 1) (±1 at the ends, never NaN for finite x).
    const S: f32 = 0.797_884_6;
    for ((h, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        let t = 1.0 - 2.0 / (exp_f32(2.0 * S * (g + 0.044_715 * g * g * g)) + 1.0);
        *h = 0.5 * g * (1.0 + t) * u;
    }
}
crate::simd::multiversion!(fn gelu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) => gelu_mul_impl);

/// RMS norm of each `w.len()`-wide row of `x`, in place.
fn norm_in_place(kind: KernelKind, x: &mut [f32], w: &[f32], eps: f32) {
    let src = x.to_vec();
    norm_rows(kind, &src, w, eps, x);
}

#[inline(always)]
fn add_assign_impl(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
crate::simd::multiversion!(fn add_assign(x: &mut [f32], y: &[f32]) => add_assign_impl);

/// RoPE on adjacent pairs `(2i, 2i + 1)` (llama files, whose query and key
/// rows the converter permuted to this order).
fn rope_pairs(v: &mut [f32], table: &[(f32, f32)]) {
    for (i, &(c, s)) in table.iter().enumerate() {
        let a = v[2 * i];
        let b = v[2 * i + 1];
        v[2 * i] = a * c - b * s;
        v[2 * i + 1] = a * s + b * c;
    }
}

/// RoPE on the pairs `(i, i + d/2)` of the rotated width `d` (NeoX style).
fn rope_neox(v: &mut [f32], table: &[(f32, f32)]) {
    let half = table.len();
    for (i, &(c, s)) in table.iter().enumerate() {
        let a = v[i];
        let b = v[i + half];
        v[i] = a * c - b * s;
        v[i + half] = a * s + b * c;
    }
}

/// A RoPE rotation of one head by a table's `(cos, sin)` pairs.
type Rotate = fn(&mut [f32], &[(f32, f32)]);

/// What the steps of one layer share.
struct Step<'a> {
    kind: KernelKind,
    pool: &'a Pool,
    /// Row bounds of the element-wise work.
    bounds: &'a [usize],
    /// The layer's index.
    l: usize,
    layer: &'a Layer,
}

/// Working buffers of one forward pass (`n` entries).
struct Scratch {
    /// The residual stream.
    x: Vec<f32>,
    /// The normed residual, quantised.
    xn: Acts,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    /// Attention outputs, quantised.
    att: Acts,
    /// A block's output before it joins the residual.
    tmp: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    /// Feed-forward hidden values, quantised.
    hid: Acts,
}

impl Scratch {
    fn new(cfg: &Config, n: usize) -> Self {
        let kv_dim = cfg.n_kv_head * cfg.head_dim;
        Scratch {
            x: vec![0f32; n * cfg.dim],
            xn: Acts::new(n, cfg.dim),
            q: vec![0f32; n * cfg.q_dim],
            k: vec![0f32; n * kv_dim],
            v: vec![0f32; n * kv_dim],
            att: Acts::new(n, cfg.q_dim),
            tmp: vec![0f32; n * cfg.dim],
            gate: vec![0f32; n * cfg.ffn_dim],
            up: vec![0f32; n * cfg.ffn_dim],
            hid: Acts::new(n, cfg.ffn_dim),
        }
    }
}

/// The attention query tiles of a batch, `(first entry, count)`: one entry,
/// or two consecutive positions of one sequence.
fn query_tiles(entries: &[Entry]) -> Vec<(usize, usize)> {
    let n = entries.len();
    let mut tiles = Vec::with_capacity(n);
    let mut i = 0;
    while i < n {
        let pair = i + 1 < n
            && entries[i + 1].seq == entries[i].seq
            && entries[i + 1].pos == entries[i].pos + 1;
        let count = if pair { 2 } else { 1 };
        tiles.push((i, count));
        i += count;
    }
    tiles
}

/// `out[r] += bias[r]` for each `bias.len()`-wide row of `out`.
fn add_bias(kind: KernelKind, out: &mut [f32], bias: &[f32]) {
    for row in out.chunks_exact_mut(bias.len()) {
        add_assign(kind, row, bias);
    }
}

impl Model {
    /// Run the transformer over a batch of tokens, appending their keys and
    /// values to the caches, and pass the logits of the entries listed in
    /// `logits_for` to `on_logits(j, logits)`: `logits` holds the rows of
    /// `logits_for[j..]`, at most [`LOGIT_ROWS`] at a time, each `vocab` long.
    ///
    /// Every value computed for an entry depends only on that entry's token,
    /// position and its sequence's earlier cache contents, never on the other
    /// entries or on the thread count.
    pub(crate) fn forward_with(
        &self,
        kind: KernelKind,
        pool: &Pool,
        entries: &[Entry],
        caches: &mut [KvCache],
        logits_for: &[usize],
        on_logits: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        self.check_entries(entries, caches)?;
        let mut s = Scratch::new(&self.config, entries.len());
        self.embed(entries, &mut s.x);
        let tiles = query_tiles(entries);
        let bounds = row_bounds(entries.len(), pool.threads());
        for (l, layer) in self.layers.iter().enumerate() {
            let step = Step {
                kind,
                pool,
                bounds: &bounds,
                l,
                layer,
            };
            self.attention_block(&step, entries, &tiles, caches, &mut s);
            self.ffn_block(&step, &mut s);
        }
        self.output_logits(kind, pool, &s, logits_for, on_logits)
    }

    /// Refuse entries outside their cache, the vocabulary or the RoPE table.
    fn check_entries(&self, entries: &[Entry], caches: &[KvCache]) -> Result<()> {
        let cfg = &self.config;
        for e in entries {
            let cache = caches
                .get(e.seq)
                .ok_or_else(|| LlmError::InvalidRequest("bad sequence index".into()))?;
            if e.pos >= cache.capacity() {
                return Err(LlmError::ContextOverflow {
                    prompt: e.pos + 1,
                    context: cache.capacity(),
                });
            }
            if e.token as usize >= cfg.vocab {
                return Err(LlmError::InvalidRequest(format!(
                    "token id {} out of range (vocabulary {})",
                    e.token, cfg.vocab
                )));
            }
            if (e.pos + 1) * (cfg.rope_dim / 2) > self.rope.len() {
                return Err(LlmError::InvalidRequest("RoPE table too short".into()));
            }
        }
        Ok(())
    }

    /// The entries' token embeddings into `x` (scaled by √dim for `gemma3`).
    fn embed(&self, entries: &[Entry], x: &mut [f32]) {
        let dim = self.config.dim;
        let data = self.data();
        for (e, xr) in entries.iter().zip(x.chunks_exact_mut(dim)) {
            dequantize_row(
                self.tok_embd.ty,
                self.tok_embd.row(data, e.token as usize),
                xr,
            );
            if self.config.arch == Arch::Gemma3 {
                let scale = (dim as f32).sqrt();
                for v in xr.iter_mut() {
                    *v *= scale;
                }
            }
        }
    }

    /// The attention block of layer `step.l`: the previous feed-forward's
    /// output joins the residual, then norm, projections (biases, query and
    /// key norms), RoPE, the cache, attention and the output projection
    /// (and its norm) into `s.tmp`.
    fn attention_block(
        &self,
        step: &Step<'_>,
        entries: &[Entry],
        tiles: &[(usize, usize)],
        caches: &mut [KvCache],
        s: &mut Scratch,
    ) {
        let (kind, pool, layer) = (step.kind, step.pool, step.layer);
        let cfg = &self.config;
        let data = self.data();
        let add = (step.l > 0).then_some(&s.tmp[..]);
        pre_norm(
            kind,
            pool,
            step.bounds,
            &mut s.x,
            add,
            &layer.attn_norm,
            cfg.eps,
            &mut s.xn,
        );
        matmul(
            kind,
            pool,
            data,
            &s.xn,
            &mut [
                (&layer.wq, &mut s.q),
                (&layer.wk, &mut s.k),
                (&layer.wv, &mut s.v),
            ],
        );
        if let Some([bq, bk, bv]) = &layer.qkv_bias {
            add_bias(kind, &mut s.q, bq);
            add_bias(kind, &mut s.k, bk);
            add_bias(kind, &mut s.v, bv);
        }
        if let Some((qn, kn)) = &layer.qk_norm {
            norm_in_place(kind, &mut s.q, qn, cfg.eps);
            norm_in_place(kind, &mut s.k, kn, cfg.eps);
        }
        self.rope_and_store(step, entries, caches, s);
        self.attend_all(step, entries, tiles, caches, &s.q, &mut s.att.f);
        quantize_par(kind, pool, step.bounds, &mut s.att);
        matmul(kind, pool, data, &s.att, &mut [(&layer.wo, &mut s.tmp)]);
        if let Some((post_attn, _)) = &layer.post_norms {
            norm_in_place(kind, &mut s.tmp, post_attn, cfg.eps);
        }
    }

    /// The RoPE table of a layer and the rotation its architecture uses.
    fn rope_for(&self, layer: &Layer) -> (&[(f32, f32)], Rotate) {
        let table = if layer.sliding {
            &self.rope_swa
        } else {
            &self.rope
        };
        let rotate = if self.config.arch.neox() {
            rope_neox
        } else {
            rope_pairs
        };
        (table, rotate)
    }

    /// Rotate the keys and store keys and values in the caches (queries are
    /// rotated in the attention tasks).
    fn rope_and_store(
        &self,
        step: &Step<'_>,
        entries: &[Entry],
        caches: &mut [KvCache],
        s: &mut Scratch,
    ) {
        let cfg = &self.config;
        let (hd, half) = (cfg.head_dim, cfg.rope_dim / 2);
        let kv_dim = cfg.n_kv_head * hd;
        let (table, rope) = self.rope_for(step.layer);
        for (i, e) in entries.iter().enumerate() {
            let t = &table[e.pos * half..(e.pos + 1) * half];
            for kh in s.k[i * kv_dim..(i + 1) * kv_dim].chunks_exact_mut(hd) {
                rope(kh, t);
            }
            caches[e.seq].store(
                step.l,
                e.pos,
                &s.k[i * kv_dim..(i + 1) * kv_dim],
                &s.v[i * kv_dim..(i + 1) * kv_dim],
            );
        }
    }

    /// Attention of every entry into `out`: one task per (query tile, KV
    /// head), each taken by whichever worker is free (later positions cost
    /// more). In a sliding-window layer, a tile whose window excludes early
    /// positions runs one token at a time (each token has its own first
    /// position).
    #[allow(unsafe_code)]
    fn attend_all(
        &self,
        step: &Step<'_>,
        entries: &[Entry],
        tiles: &[(usize, usize)],
        caches: &[KvCache],
        q: &[f32],
        out: &mut [f32],
    ) {
        let cfg = &self.config;
        let (kind, l) = (step.kind, step.l);
        let (hd, half, q_dim) = (cfg.head_dim, cfg.rope_dim / 2, cfg.q_dim);
        let group = cfg.n_head / cfg.n_kv_head;
        let width = group * hd;
        let scale = 1.0 / (hd as f32).sqrt();
        let window = match cfg.sliding_window {
            Some(w) if step.layer.sliding => w,
            _ => usize::MAX,
        };
        let (table, rope) = self.rope_for(step.layer);
        let n_tasks = tiles.len() * cfg.n_kv_head;
        let tasks = Chunks::new(n_tasks, 1, n_tasks);
        let out = SharedOut::new(out);
        let job = |_| {
            let mut scores = Vec::new();
            let mut qbuf = vec![0f32; 2 * width];
            let mut obuf = vec![0f32; 2 * width];
            while let Some(task) = tasks.take().map(|r| r.start) {
                let ((i, count), g) = (tiles[task / cfg.n_kv_head], task % cfg.n_kv_head);
                for k in 0..count {
                    let at = (i + k) * q_dim + g * width;
                    let qk = &mut qbuf[k * width..(k + 1) * width];
                    qk.copy_from_slice(&q[at..at + width]);
                    let pos = entries[i + k].pos;
                    let t = &table[pos * half..(pos + 1) * half];
                    for qh in qk.chunks_exact_mut(hd) {
                        rope(qh, t);
                    }
                }
                let last = entries[i + count - 1];
                // Runs of tokens sharing their first position: the tile, or
                // each token alone when the window cuts the sequence.
                let runs = if last.pos < window {
                    [(0, count), (count, 0)]
                } else {
                    [(0, 1), (1, count - 1)]
                };
                for (k0, len) in runs {
                    if len == 0 {
                        continue;
                    }
                    let first = entries[i + k0];
                    let end = first.pos + len;
                    let lo = (first.pos + 1).saturating_sub(window);
                    let span = caches[first.seq].span_from(l, g, lo, end);
                    let r = k0 * width..(k0 + len) * width;
                    attend(
                        kind,
                        &qbuf[r.clone()],
                        hd,
                        group,
                        &span,
                        first.pos + 1,
                        scale,
                        &mut scores,
                        &mut obuf[r],
                    );
                }
                for k in 0..count {
                    let at = (i + k) * q_dim + g * width;
                    // SAFETY: the heads of KV head g of entry i + k belong
                    // to this task alone.
                    unsafe {
                        let dst = out.ptr(at, width);
                        std::ptr::copy_nonoverlapping(obuf[k * width..].as_ptr(), dst, width);
                    }
                }
            }
        };
        step.pool.run_chunked(&job);
    }

    /// The feed-forward block of layer `step.l`: the attention output joins
    /// the residual, then norm, gate and up projections, activation, down
    /// projection (and its norm) into `s.tmp`.
    fn ffn_block(&self, step: &Step<'_>, s: &mut Scratch) {
        let (kind, pool, layer) = (step.kind, step.pool, step.layer);
        let cfg = &self.config;
        let data = self.data();
        pre_norm(
            kind,
            pool,
            step.bounds,
            &mut s.x,
            Some(&s.tmp),
            &layer.ffn_norm,
            cfg.eps,
            &mut s.xn,
        );
        matmul(
            kind,
            pool,
            data,
            &s.xn,
            &mut [(&layer.w_gate, &mut s.gate), (&layer.w_up, &mut s.up)],
        );
        let gelu = cfg.arch == Arch::Gemma3;
        act_quantize(kind, pool, step.bounds, gelu, &s.gate, &s.up, &mut s.hid);
        matmul(kind, pool, data, &s.hid, &mut [(&layer.w_down, &mut s.tmp)]);
        if let Some((_, post_ffn)) = &layer.post_norms {
            norm_in_place(kind, &mut s.tmp, post_ffn, cfg.eps);
        }
    }

    /// The last residual, the output norm and the output projection, for
    /// the entries whose logits are wanted, a slice of rows at a time so
    /// that the logits stay in cache for `on_logits`.
    fn output_logits(
        &self,
        kind: KernelKind,
        pool: &Pool,
        s: &Scratch,
        logits_for: &[usize],
        on_logits: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        let cfg = &self.config;
        let (dim, vocab, n) = (cfg.dim, cfg.vocab, s.x.len() / cfg.dim);
        let data = self.data();
        let mut logits = vec![0f32; logits_for.len().min(LOGIT_ROWS) * vocab];
        for (c, rows) in logits_for.chunks(LOGIT_ROWS).enumerate() {
            let m = rows.len();
            let (mut xl, mut tl) = (vec![0f32; m * dim], vec![0f32; m * dim]);
            for (j, &i) in rows.iter().enumerate() {
                if i >= n {
                    return Err(LlmError::InvalidRequest("logits index out of range".into()));
                }
                xl[j * dim..(j + 1) * dim].copy_from_slice(&s.x[i * dim..(i + 1) * dim]);
                tl[j * dim..(j + 1) * dim].copy_from_slice(&s.tmp[i * dim..(i + 1) * dim]);
            }
            let mut fin = Acts::new(m, dim);
            let fb = row_bounds(m, pool.threads());
            pre_norm(
                kind,
                pool,
                &fb,
                &mut xl,
                Some(&tl),
                &self.out_norm,
                cfg.eps,
                &mut fin,
            );
            let out = &mut logits[..m * vocab];
            matmul(kind, pool, data, &fin, &mut [(&self.output, &mut *out)]);
            on_logits(c * LOGIT_ROWS, out)?;
        }
        Ok(())
    }

    /// [`Model::forward_with`], collecting the logits
    /// (`[logits_for.len()][vocab]`).
    pub(crate) fn forward(
        &self,
        kind: KernelKind,
        pool: &Pool,
        entries: &[Entry],
        caches: &mut [KvCache],
        logits_for: &[usize],
    ) -> Result<Vec<f32>> {
        let mut all = Vec::with_capacity(logits_for.len() * self.config.vocab);
        self.forward_with(kind, pool, entries, caches, logits_for, &mut |_, l| {
            all.extend_from_slice(l);
            Ok(())
        })?;
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{tiny_model, Rng, TinySpec};

    /// A one-column product is taken in chunks of at least
    /// `MIN_TAKE_BYTES`, yet never in fewer chunks than there are workers,
    /// however small the matrix.
    #[test]
    fn one_column_products_leave_no_worker_idle() {
        let spec = TinySpec {
            weight_type: GgmlType::Q4_0,
            extra_vocab: 60_000,
            ..TinySpec::default()
        };
        let gguf = Gguf::from_bytes(&tiny_model(&spec)).expect("gguf");
        let model = Model::from_gguf(gguf).expect("model");
        for m in [&model.layers[0].wk, &model.output] {
            let panel_bytes = m.row_bytes * PANEL;
            for threads in [1, 2, 3, 4] {
                let chunks = product_chunks(m, 1, threads);
                let mut sizes = Vec::new();
                while let Some(r) = chunks.take() {
                    sizes.push(r.len());
                }
                let total = m.rows.div_ceil(PANEL);
                assert_eq!(sizes.iter().sum::<usize>(), total);
                let want = if threads == 1 { 1 } else { threads.min(total) };
                assert!(sizes.len() >= want, "{threads}: {sizes:?}");
                let min = (MIN_TAKE_BYTES / panel_bytes).min(total.div_ceil(threads));
                let last = sizes.len() - 1;
                assert!(
                    sizes[..last].iter().all(|&n| n >= min),
                    "{threads}: {sizes:?}"
                );
            }
        }
    }

    /// A product split into chunks that the workers take in turn gives one
    /// worker's bits, for thread counts that divide neither the panels
    /// (integer formats) nor the rows (the others), one column or a batch.
    #[test]
    fn products_taken_in_chunks_match_one_worker() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for et in [GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q6K] {
            let spec = TinySpec {
                embd_type: et,
                dim: 256,
                // 3,269 rows: 205 panels, neither a multiple of 2, 3 nor 4.
                extra_vocab: 3000,
                ..TinySpec::default()
            };
            let gguf = Gguf::from_bytes(&tiny_model(&spec)).expect("gguf");
            let model = Model::from_gguf(gguf).expect("model");
            let m = &model.output;
            assert_eq!(m.rows, 3269);
            let mut rng = Rng(5);
            for n in [1, 9] {
                for kind in KernelKind::supported() {
                    let mut x = Acts::new(n, m.cols);
                    x.f.iter_mut().for_each(|v| *v = rng.next_f32());
                    let mut p = x.parts(&[0, n]);
                    p[0].quantize(kind);
                    drop(p);
                    let run = |threads| {
                        let mut out = vec![f32::NAN; n * m.rows];
                        let pool = Pool::new(threads);
                        matmul(kind, &pool, model.data(), &x, &mut [(m, &mut out)]);
                        out
                    };
                    let want = run(1);
                    assert!(want.iter().all(|v| v.is_finite()));
                    for threads in [2, 3, 4] {
                        assert_eq!(
                            bits(&want),
                            bits(&run(threads)),
                            "{et:?} {n} {kind:?} {threads}"
                        );
                    }
                }
            }
        }
    }

    /// Logits of a short prompt for every weight format, architecture,
    /// kernel family and thread count: bit for bit the same as the portable
    /// kernels on one thread, and the same whether the prompt runs as one
    /// batch or a token at a time (sliding windows shorter than the prompt
    /// included).
    #[test]
    fn logits_agree_across_kernels_and_threads_for_every_format() {
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        for (wt, et, dim, arch, window) in [
            (GgmlType::Q4_1, GgmlType::Q8_0, 64, "llama", 0),
            (GgmlType::Q5_0, GgmlType::Q5_0, 64, "llama", 0),
            (GgmlType::Q4K, GgmlType::Q6K, 256, "llama", 0),
            (GgmlType::Q5K, GgmlType::Q5_0, 256, "llama", 0),
            (GgmlType::Q6K, GgmlType::Q4K, 256, "llama", 0),
            (GgmlType::Q5_0, GgmlType::Q8_0, 128, "gemma3", 64),
            (GgmlType::Q4K, GgmlType::Q8_0, 256, "gemma3", 64),
            (GgmlType::Q8_0, GgmlType::Q8_0, 128, "gemma3", 4),
            (GgmlType::Q4_1, GgmlType::Q8_0, 64, "qwen2", 0),
            (GgmlType::Q6K, GgmlType::Q8_0, 256, "qwen2", 0),
            (GgmlType::Q4_0, GgmlType::Q8_0, 64, "qwen3", 0),
            (GgmlType::Q4K, GgmlType::Q6K, 256, "qwen3", 0),
        ] {
            let gemma = arch == "gemma3";
            let spec = TinySpec {
                weight_type: wt,
                embd_type: et,
                dim,
                ffn: 256,
                arch: arch.into(),
                n_layer: if gemma { 6 } else { 2 },
                sliding_window: window,
                ..TinySpec::default()
            };
            let gguf = Gguf::from_bytes(&tiny_model(&spec)).expect("gguf");
            let mut model = Model::from_gguf(gguf).expect("model");
            assert_eq!(Some(model.config.arch), Arch::from_name(arch));
            assert_eq!(
                model.layers.iter().filter(|l| l.sliding).count(),
                5 * gemma as usize
            );
            assert_eq!(
                model.layers.iter().all(|l| l.qkv_bias.is_some()),
                arch == "qwen2"
            );
            assert_eq!(
                model.layers.iter().all(|l| l.qk_norm.is_some()),
                arch == "qwen3" || gemma
            );
            model.ensure_rope(16);
            let entries: Vec<Entry> = (0..9)
                .map(|p| Entry {
                    seq: 0,
                    token: 20 + 7 * p as u32,
                    pos: p,
                })
                .collect();
            let rows: Vec<usize> = (0..entries.len()).collect();
            let run = |kind, threads| {
                let mut caches = vec![KvCache::new(&model.config, 16)];
                let pool = Pool::new(threads);
                model
                    .forward(kind, &pool, &entries, &mut caches, &rows)
                    .expect("forward")
            };
            let want = run(KernelKind::Scalar, 1);
            assert!(want.iter().all(|v| v.is_finite()), "{wt:?} {arch}");
            for kind in KernelKind::supported() {
                for threads in [1, 2, 3] {
                    let got = run(kind, threads);
                    assert_eq!(bits(&want), bits(&got), "{wt:?} {arch} {kind:?} {threads}");
                }
            }
            let mut caches = vec![KvCache::new(&model.config, 16)];
            let pool = Pool::new(2);
            let one_by_one: Vec<f32> = entries
                .iter()
                .flat_map(|e| {
                    let kind = KernelKind::detect();
                    model
                        .forward(kind, &pool, &[*e], &mut caches, &[0])
                        .expect("forward")
                })
                .collect();
            assert_eq!(
                bits(&want),
                bits(&one_by_one),
                "{wt:?} {arch} token by token"
            );
        }
    }
}
