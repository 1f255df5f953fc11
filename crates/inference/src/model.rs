//! The llama-architecture transformer: weights, KV cache and the batched forward pass.

use std::path::Path;

use crate::attention::{attend, KvCache};
use crate::error::{LlmError, Result};
use crate::gguf::{ggml_type_name, GgmlType, Gguf, TensorInfo, Value};
use crate::math::{exp_f32, sin_cos_f64};
use crate::pool::{Pool, SharedOut};
use crate::quant::{dequantize_row, dot_f32, pack_matrix, quantize_row, QCol, PANEL, QK};
use crate::simd::{matmul_panels, widens, Dest, KernelKind, Panels, Widened};
use crate::tokenizer::Tokenizer;

/// Hyper-parameters of a llama-family model.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Transformer blocks.
    pub n_layer: usize,
    /// Embedding width.
    pub dim: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Key/value heads (grouped-query attention).
    pub n_kv_head: usize,
    /// Width of one head.
    pub head_dim: usize,
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
}

/// A weight matrix stored in the GGUF file (rows × cols, row-major).
#[derive(Debug, Clone)]
pub(crate) struct Mat {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    offset: usize,
    row_bytes: usize,
    /// Integer formats: panels repacked for the kernels (see `quant::pack_matrix`).
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
        }
        Ok(m)
    }

    /// Row `r` in the file's layout.
    #[inline]
    fn row<'a>(&self, data: &'a [u8], r: usize) -> &'a [u8] {
        let s = self.offset + r * self.row_bytes;
        &data[s..s + self.row_bytes]
    }

    fn is_integer(&self) -> bool {
        matches!(self.ty, GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0)
    }
}

#[derive(Debug)]
struct Layer {
    attn_norm: Vec<f32>,
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
        let arch = gguf.get_str("general.architecture")?.to_string();
        if arch != "llama" {
            return Err(LlmError::UnsupportedArchitecture(arch));
        }
        let u = |k: &str| -> Result<usize> {
            let v = gguf.get_u64(&format!("llama.{k}"))?;
            usize::try_from(v)
                .ok()
                .filter(|&v| v > 0 && v < (1 << 24))
                .ok_or_else(|| LlmError::Format(format!("llama.{k} = {v} is out of range")))
        };
        let n_layer = u("block_count")?;
        let dim = u("embedding_length")?;
        let n_head = u("attention.head_count")?;
        let n_kv_head = gguf
            .get("llama.attention.head_count_kv")
            .and_then(Value::as_u64)
            .map_or(n_head, |v| v as usize);
        let ffn_dim = u("feed_forward_length")?;
        let ctx_len = u("context_length")?;
        if n_kv_head == 0 || n_head % n_kv_head != 0 || dim % n_head != 0 {
            return Err(LlmError::Format(format!(
                "inconsistent head counts: dim {dim}, heads {n_head}, kv heads {n_kv_head}"
            )));
        }
        let head_dim = dim / n_head;
        let rope_dim = gguf
            .get("llama.rope.dimension_count")
            .and_then(Value::as_u64)
            .map_or(head_dim, |v| v as usize);
        if rope_dim > head_dim || !rope_dim.is_multiple_of(2) {
            return Err(LlmError::Format(format!("bad rope dimension {rope_dim}")));
        }
        let rope_base = gguf
            .get("llama.rope.freq_base")
            .and_then(Value::as_f64)
            .unwrap_or(10000.0);
        let eps = gguf
            .get("llama.attention.layer_norm_rms_epsilon")
            .and_then(Value::as_f64)
            .unwrap_or(1e-5) as f32;
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
            layers.push(Layer {
                attn_norm: norm_vec(&gguf, &p("attn_norm"), dim)?,
                wq: mat(&p("attn_q"), dim, dim)?,
                wk: mat(&p("attn_k"), kv_dim, dim)?,
                wv: mat(&p("attn_v"), kv_dim, dim)?,
                wo: mat(&p("attn_output"), dim, dim)?,
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
            .unwrap_or(crate::chat::CHATML_TEMPLATE)
            .to_string();
        let config = Config {
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
        })
    }

    /// Maximum sequence length the engine accepts (the model's context length,
    /// capped at 32768).
    pub fn max_seq_len(&self) -> usize {
        self.config.ctx_len.min(32768)
    }

    /// Make sure the RoPE table covers positions `0..n`.
    pub(crate) fn ensure_rope(&mut self, n: usize) {
        let half = self.config.rope_dim / 2;
        let have = self.rope.len() / half.max(1);
        if n <= have || half == 0 {
            return;
        }
        let n = n.max(have * 2).min(self.max_seq_len().max(n));
        let ln_base = crate::math::ln_f64(self.config.rope_base);
        let inv: Vec<f64> = (0..half)
            .map(|i| {
                crate::math::exp_f64(-((2 * i) as f64) / self.config.rope_dim as f64 * ln_base)
            })
            .collect();
        self.rope.reserve((n - have) * half);
        for p in have..n {
            for f in &inv {
                let (s, c) = sin_cos_f64(p as f64 * f);
                self.rope.push((c as f32, s as f32));
            }
        }
    }

    fn data(&self) -> &[u8] {
        self.gguf.tensor_bytes_all()
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
    fn frow(&self, i: usize) -> &[f32] {
        &self.f[i * self.cols..(i + 1) * self.cols]
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

/// `hid = silu(gate) * up`, quantised; the rows split by `bounds`.
fn silu_quantize(
    kind: KernelKind,
    pool: &Pool,
    bounds: &[usize],
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
        silu_mul(kind, &gate[r.clone()], &up[r], p.f);
        p.quantize(kind);
    });
}

/// `acts` quantised; the rows split by `bounds`.
fn quantize_par(kind: KernelKind, pool: &Pool, bounds: &[usize], acts: &mut Acts) {
    pool.run_parts(acts.parts(bounds), &|mut p| p.quantize(kind));
}

/// Static split of `0..n` for worker `t` of `threads`.
#[inline]
fn split(n: usize, t: usize, threads: usize) -> std::ops::Range<usize> {
    (n * t / threads)..(n * (t + 1) / threads)
}

/// Weight bytes of one chunk of panels (kept in L2 across the column tiles).
const PANEL_CHUNK_BYTES: usize = 256 * 1024;
/// Activation bytes of one column tile (kept in L1 across a chunk's panels).
const COL_TILE_BYTES: usize = 16 * 1024;

/// One worker's panels of an integer matrix product: chunks of panels small
/// enough to stay in L2 across column tiles, column tiles small enough to
/// stay in L1 across a chunk's panels.
fn int_matmul_part(
    kind: KernelKind,
    m: &Mat,
    x: &Acts,
    (p0, p1): (usize, usize),
    dest: &Dest<'_, '_>,
) {
    let Some(packed) = m.packed.as_deref() else {
        return;
    };
    let n = x.n;
    let nb = m.cols / QK;
    let qcols: Vec<QCol<'_>> = (0..n).map(|c| x.qcol(c)).collect();
    if n == 1 {
        let src = Panels::Packed(packed);
        return matmul_panels(kind, m.ty, src, nb, (p0, p1), &qcols, 0, dest);
    }
    let widen = n >= WIDEN_MIN_COLS && widens(kind, m.ty);
    let col_bytes = x.nbp * (QK + 12);
    // Whole 2 x 6 (512-bit) and 1 x 4 / 1 x 2 (256-bit) tiles per column tile.
    let tile = (COL_TILE_BYTES / col_bytes / 12 * 12).max(12);
    let chunk = (PANEL_CHUNK_BYTES / (m.row_bytes * PANEL) / 4 * 4).max(4);
    WIDENED.with_borrow_mut(|wide| {
        let mut q0 = p0;
        while q0 < p1 {
            let q1 = (q0 + chunk).min(p1);
            let src = if widen {
                wide.fill(kind, m.ty, packed, nb, (q0, q1));
                Panels::Wide(wide)
            } else {
                Panels::Packed(packed)
            };
            let mut t0 = 0;
            while t0 < n {
                let t1 = (t0 + tile).min(n);
                matmul_panels(kind, m.ty, src, nb, (q0, q1), &qcols[t0..t1], t0, dest);
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
    let outs: Vec<(&Mat, SharedOut<'_>)> = mats
        .iter_mut()
        .map(|(m, out)| {
            debug_assert_eq!(x.cols, m.cols);
            (*m, SharedOut::new(&mut out[..n * m.rows]))
        })
        .collect();
    let job = |t: usize| {
        for (m, out) in &outs {
            let rows = m.rows;
            if m.is_integer() {
                let r = split(rows.div_ceil(PANEL), t, threads);
                int_matmul_part(kind, m, x, (r.start, r.end), &Dest { out, rows });
            } else {
                let mut buf = vec![0f32; m.cols];
                for r in split(rows, t, threads) {
                    dequantize_row(m.ty, m.row(data, r), &mut buf);
                    for c in 0..n {
                        out.set(c * rows + r, dot_f32(&buf, x.frow(c)));
                    }
                }
            }
        }
    };
    pool.run(&job);
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
fn add_assign_impl(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}
crate::simd::multiversion!(fn add_assign(x: &mut [f32], y: &[f32]) => add_assign_impl);

fn rope(v: &mut [f32], table: &[(f32, f32)]) {
    for (i, &(c, s)) in table.iter().enumerate() {
        let a = v[2 * i];
        let b = v[2 * i + 1];
        v[2 * i] = a * c - b * s;
        v[2 * i + 1] = a * s + b * c;
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
    #[allow(unsafe_code)]
    pub(crate) fn forward_with(
        &self,
        kind: KernelKind,
        pool: &Pool,
        entries: &[Entry],
        caches: &mut [KvCache],
        logits_for: &[usize],
        on_logits: &mut dyn FnMut(usize, &[f32]) -> Result<()>,
    ) -> Result<()> {
        let cfg = &self.config;
        let n = entries.len();
        let dim = cfg.dim;
        let hd = cfg.head_dim;
        let kv_dim = cfg.n_kv_head * hd;
        let data = self.data();
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
        let mut x = vec![0f32; n * dim];
        for (e, xr) in entries.iter().zip(x.chunks_exact_mut(dim)) {
            dequantize_row(
                self.tok_embd.ty,
                self.tok_embd.row(data, e.token as usize),
                xr,
            );
        }
        let mut xn = Acts::new(n, dim);
        let mut q = vec![0f32; n * dim];
        let mut k = vec![0f32; n * kv_dim];
        let mut v = vec![0f32; n * kv_dim];
        let mut att = Acts::new(n, dim);
        let mut tmp = vec![0f32; n * dim];
        let mut gate = vec![0f32; n * cfg.ffn_dim];
        let mut up = vec![0f32; n * cfg.ffn_dim];
        let mut hid = Acts::new(n, cfg.ffn_dim);
        let half = cfg.rope_dim / 2;
        let group = cfg.n_head / cfg.n_kv_head;
        let scale = 1.0 / (hd as f32).sqrt();
        // Attention query tiles: (first entry, count).
        let mut tiles: Vec<(usize, usize)> = Vec::with_capacity(n);
        let mut i = 0;
        while i < n {
            let pair = i + 1 < n
                && entries[i + 1].seq == entries[i].seq
                && entries[i + 1].pos == entries[i].pos + 1;
            let count = if pair { 2 } else { 1 };
            tiles.push((i, count));
            i += count;
        }
        let bounds = row_bounds(n, pool.threads());
        for (l, layer) in self.layers.iter().enumerate() {
            // The residual of the previous layer's feed-forward joins here.
            let add = (l > 0).then_some(&tmp[..]);
            pre_norm(
                kind,
                pool,
                &bounds,
                &mut x,
                add,
                &layer.attn_norm,
                cfg.eps,
                &mut xn,
            );
            matmul(
                kind,
                pool,
                data,
                &xn,
                &mut [
                    (&layer.wq, &mut q),
                    (&layer.wk, &mut k),
                    (&layer.wv, &mut v),
                ],
            );
            // Keys are rotated here, queries in the attention tasks.
            for (i, e) in entries.iter().enumerate() {
                let table = &self.rope[e.pos * half..(e.pos + 1) * half];
                for h in 0..cfg.n_kv_head {
                    rope(&mut k[i * kv_dim + h * hd..i * kv_dim + h * hd + hd], table);
                }
                caches[e.seq].store(
                    l,
                    e.pos,
                    &k[i * kv_dim..(i + 1) * kv_dim],
                    &v[i * kv_dim..(i + 1) * kv_dim],
                );
            }
            // Attention: one task per (query tile, KV head), dealt round-robin
            // (later positions cost more); a tile is one entry, or two
            // consecutive positions of one sequence.
            {
                let tasks = tiles.len() * cfg.n_kv_head;
                let threads = pool.threads();
                let out = SharedOut::new(&mut att.f);
                let caches_ref: &[KvCache] = caches;
                let q_ref = &q;
                let job = |t: usize| {
                    let mut scores = Vec::new();
                    let mut qbuf = vec![0f32; 2 * group * hd];
                    let mut obuf = vec![0f32; 2 * group * hd];
                    for task in (t..tasks).step_by(threads) {
                        let ((i, count), g) = (tiles[task / cfg.n_kv_head], task % cfg.n_kv_head);
                        let width = group * hd;
                        for k in 0..count {
                            let at = (i + k) * dim + g * width;
                            let qk = &mut qbuf[k * width..(k + 1) * width];
                            qk.copy_from_slice(&q_ref[at..at + width]);
                            let pos = entries[i + k].pos;
                            let table = &self.rope[pos * half..(pos + 1) * half];
                            for qh in qk.chunks_exact_mut(hd) {
                                rope(qh, table);
                            }
                        }
                        let (first, last) = (entries[i], entries[i + count - 1]);
                        let span = caches_ref[first.seq].span(l, g, last.pos + 1);
                        let (qs, os) = (&qbuf[..count * width], &mut obuf[..count * width]);
                        attend(
                            kind,
                            qs,
                            hd,
                            group,
                            &span,
                            first.pos + 1,
                            scale,
                            &mut scores,
                            os,
                        );
                        for k in 0..count {
                            let at = (i + k) * dim + g * width;
                            // SAFETY: the heads of KV head g of entry i + k belong
                            // to this task alone.
                            unsafe {
                                let dst = out.ptr(at, width);
                                std::ptr::copy_nonoverlapping(os[k * width..].as_ptr(), dst, width);
                            }
                        }
                    }
                };
                pool.run(&job);
            }
            quantize_par(kind, pool, &bounds, &mut att);
            matmul(kind, pool, data, &att, &mut [(&layer.wo, &mut tmp)]);
            pre_norm(
                kind,
                pool,
                &bounds,
                &mut x,
                Some(&tmp),
                &layer.ffn_norm,
                cfg.eps,
                &mut xn,
            );
            matmul(
                kind,
                pool,
                data,
                &xn,
                &mut [(&layer.w_gate, &mut gate), (&layer.w_up, &mut up)],
            );
            silu_quantize(kind, pool, &bounds, &gate, &up, &mut hid);
            matmul(kind, pool, data, &hid, &mut [(&layer.w_down, &mut tmp)]);
        }
        // The last residual, the output norm and the output projection, for
        // the entries whose logits are wanted, a slice of rows at a time so
        // that the logits stay in cache for `on_logits`.
        let vocab = cfg.vocab;
        let mut logits = vec![0f32; logits_for.len().min(LOGIT_ROWS) * vocab];
        for (c, rows) in logits_for.chunks(LOGIT_ROWS).enumerate() {
            let m = rows.len();
            let (mut xl, mut tl) = (vec![0f32; m * dim], vec![0f32; m * dim]);
            for (j, &i) in rows.iter().enumerate() {
                if i >= n {
                    return Err(LlmError::InvalidRequest("logits index out of range".into()));
                }
                xl[j * dim..(j + 1) * dim].copy_from_slice(&x[i * dim..(i + 1) * dim]);
                tl[j * dim..(j + 1) * dim].copy_from_slice(&tmp[i * dim..(i + 1) * dim]);
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
