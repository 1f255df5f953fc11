//! The llama-architecture transformer: weights, KV cache and the batched forward pass.

use std::path::Path;

use crate::error::{LlmError, Result};
use crate::gguf::{ggml_type_name, GgmlType, Gguf, TensorInfo, Value};
use crate::math::{exp_f32, sin_cos_f64};
use crate::pool::{Pool, SharedOut};
use crate::quant::{
    dequantize_row, dot4_f32, dot_f32, hsum8, pack_row, padded_blocks, quantize_row, QCol,
    PACK_SLACK, QK,
};
use crate::simd::{dot_tile, KernelKind, ROW_OVERREAD};
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
    /// Integer formats: rows repacked for the kernels (see `quant::pack_row`).
    packed: Option<std::sync::Arc<Vec<u8>>>,
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
            let src = g.tensor_data(info);
            // Spare bytes at the end: the kernels may read a little past a row.
            let mut dst = vec![0u8; src.len() + PACK_SLACK];
            for (s, d) in src
                .chunks_exact(row_bytes)
                .zip(dst.chunks_exact_mut(row_bytes))
            {
                pack_row(ty, s, d);
            }
            m.packed = Some(std::sync::Arc::new(dst));
        }
        Ok(m)
    }

    /// Row `r` in the file's layout.
    #[inline]
    fn row<'a>(&self, data: &'a [u8], r: usize) -> &'a [u8] {
        let s = self.offset + r * self.row_bytes;
        &data[s..s + self.row_bytes]
    }

    /// Row `r` in the packed layout (integer formats only), followed by the
    /// [`ROW_OVERREAD`] bytes the SIMD kernels may read past it.
    #[inline]
    fn packed_row(&self, r: usize) -> &[u8] {
        match &self.packed {
            Some(p) => &p[r * self.row_bytes..(r + 1) * self.row_bytes + ROW_OVERREAD],
            None => &[],
        }
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

/// Key/value cache of one sequence.
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Vec<f32>,
    v: Vec<f32>,
    cap: usize,
    kv_dim: usize,
    n_layer: usize,
}

impl KvCache {
    /// A cache for up to `cap` positions.
    pub fn new(config: &Config, cap: usize) -> Self {
        let kv_dim = config.n_kv_head * config.head_dim;
        let n = config.n_layer * cap * kv_dim;
        KvCache {
            k: vec![0.0; n],
            v: vec![0.0; n],
            cap,
            kv_dim,
            n_layer: config.n_layer,
        }
    }

    /// Capacity in positions.
    pub fn capacity(&self) -> usize {
        self.cap
    }

    #[inline]
    fn at(&self, layer: usize, pos: usize) -> usize {
        debug_assert!(layer < self.n_layer);
        (layer * self.cap + pos) * self.kv_dim
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
        let nbp = padded_blocks(cols);
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
    fn quantize(&mut self) {
        let nbp = self.nbp;
        for (i, x) in self.f.chunks_exact(self.cols).enumerate() {
            let r = i * nbp..(i + 1) * nbp;
            quantize_row(
                x,
                &mut self.qs[r.clone()],
                &mut self.d[r.clone()],
                &mut self.s[r.clone()],
                &mut self.qsum[r],
            );
        }
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

/// Static split of `0..n` for worker `t` of `threads`.
#[inline]
fn split(n: usize, t: usize, threads: usize) -> std::ops::Range<usize> {
    (n * t / threads)..(n * (t + 1) / threads)
}

/// Rows × columns of the kernel's register tile.
const TILE_R: usize = 4;
const TILE_C: usize = 4;
/// Activation bytes of one column tile (kept in L1 across the rows of a row chunk).
const COL_TILE_BYTES: usize = 24 * 1024;
/// Weight bytes of one row chunk (kept in L2 across the column tiles).
const ROW_CHUNK_BYTES: usize = 192 * 1024;

/// One row block × the columns `c0..c1` (in chunks of `TILE_C`, then singles).
#[inline(always)]
fn row_block<const R: usize>(
    kind: KernelKind,
    m: &Mat,
    r: usize,
    qcols: &[QCol<'_>],
    c0: usize,
    c1: usize,
    out: &SharedOut<'_>,
) {
    let nb = m.cols / QK;
    let rows = m.rows;
    let w: [&[u8]; R] = std::array::from_fn(|k| m.packed_row(r + k));
    let mut c = c0;
    while c + TILE_C <= c1 {
        let a: [QCol<'_>; TILE_C] = std::array::from_fn(|k| qcols[c + k]);
        let v = dot_tile::<R, TILE_C>(kind, m.ty, w, nb, a);
        for (k, vr) in v.iter().enumerate() {
            for (j, val) in vr.iter().enumerate() {
                out.set((c + j) * rows + r + k, *val);
            }
        }
        c += TILE_C;
    }
    while c < c1 {
        let v = dot_tile::<R, 1>(kind, m.ty, w, nb, [qcols[c]]);
        for (k, vr) in v.iter().enumerate() {
            out.set(c * rows + r + k, vr[0]);
        }
        c += 1;
    }
}

/// `out[c][r] = dot(W[r], x[c])` for all rows r and columns c.
fn matmul(kind: KernelKind, pool: &Pool, data: &[u8], m: &Mat, x: &Acts, out: &mut [f32]) {
    debug_assert_eq!(x.cols, m.cols);
    let rows = m.rows;
    let n = x.n;
    let out = SharedOut::new(&mut out[..n * rows]);
    let threads = pool.threads();
    let job = |t: usize| {
        let range = split(rows, t, threads);
        if m.is_integer() {
            // Row chunks small enough to stay in L2 across column tiles, and
            // column tiles small enough to stay in L1 across a chunk's rows;
            // inside, TILE_R × TILE_C register tiles. Each (row, column) value
            // has the same arithmetic whatever tile computes it.
            let col_bytes = x.nbp * (QK + 12);
            let tile = (COL_TILE_BYTES / col_bytes / TILE_C * TILE_C).max(TILE_C);
            let chunk = (ROW_CHUNK_BYTES / m.row_bytes / TILE_R * TILE_R).max(TILE_R);
            let qcols: Vec<QCol<'_>> = (0..n).map(|c| x.qcol(c)).collect();
            let mut r0 = range.start;
            while r0 < range.end {
                let r1 = (r0 + chunk).min(range.end);
                let mut t0 = 0;
                while t0 < n {
                    let t1 = (t0 + tile).min(n);
                    let mut r = r0;
                    while r + TILE_R <= r1 {
                        row_block::<TILE_R>(kind, m, r, &qcols, t0, t1, &out);
                        r += TILE_R;
                    }
                    while r < r1 {
                        row_block::<1>(kind, m, r, &qcols, t0, t1, &out);
                        r += 1;
                    }
                    t0 = t1;
                }
                r0 = r1;
            }
        } else {
            let mut buf = vec![0f32; m.cols];
            for r in range {
                dequantize_row(m.ty, m.row(data, r), &mut buf);
                for c in 0..n {
                    out.set(c * rows + r, dot_f32(&buf, x.frow(c)));
                }
            }
        }
    };
    pool.run(&job);
}

/// The keys and values one attention head reads: position `p` starts at
/// `first + p * stride` in `k` and `v`.
pub(crate) struct HeadSpan<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub first: usize,
    pub stride: usize,
    pub n: usize,
}

/// Attention of one query head over `span` (softmax of scaled dot products,
/// then the weighted sum of values), in a fixed order; writes `out`.
#[inline(always)]
pub(crate) fn attention_head(
    q: &[f32],
    span: &HeadSpan<'_>,
    scale: f32,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) {
    let hd = q.len();
    scores.clear();
    let mut max = f32::NEG_INFINITY;
    let mut p = 0;
    if hd == 64 {
        // The common head width, with fixed-size arrays so the accumulators
        // stay in registers (the same operations as `dot4_f32`).
        let qa: &[f32; 64] = q.try_into().unwrap_or(&[0.0; 64]);
        while p + 4 <= span.n {
            let k = |i: usize| -> &[f32; 64] {
                let at = span.first + (p + i) * span.stride;
                span.k[at..at + 64].try_into().unwrap_or(&[0.0; 64])
            };
            let ks = [k(0), k(1), k(2), k(3)];
            let mut acc = [[0f32; 8]; 4];
            for j in 0..8 {
                for i in 0..4 {
                    for l in 0..8 {
                        acc[i][l] += qa[8 * j + l] * ks[i][8 * j + l];
                    }
                }
            }
            for a in &acc {
                let s = hsum8(a) * scale;
                if s > max {
                    max = s;
                }
                scores.push(s);
            }
            p += 4;
        }
    }
    // Four keys at a time (independent dependency chains); each dot product
    // is exactly `dot_f32`.
    while p + 4 <= span.n {
        let k = |i: usize| {
            let at = span.first + (p + i) * span.stride;
            &span.k[at..at + hd]
        };
        let d = dot4_f32(q, [k(0), k(1), k(2), k(3)]);
        for v in d {
            let s = v * scale;
            if s > max {
                max = s;
            }
            scores.push(s);
        }
        p += 4;
    }
    while p < span.n {
        let at = span.first + p * span.stride;
        let s = dot_f32(q, &span.k[at..at + hd]) * scale;
        if s > max {
            max = s;
        }
        scores.push(s);
        p += 1;
    }
    // Exponentials first (independent, so the compiler may vectorise them),
    // then the sum in order.
    for s in scores.iter_mut() {
        *s = exp_f32(*s - max);
    }
    let mut sum = 0f32;
    for s in scores.iter() {
        sum += *s;
    }
    out.iter_mut().for_each(|a| *a = 0.0);
    if hd == 64 {
        // Same per-element sequence as below, accumulated in registers.
        let mut o = [0f32; 64];
        for (p, &w) in scores.iter().enumerate() {
            let at = span.first + p * span.stride;
            let vv: &[f32; 64] = span.v[at..at + 64].try_into().unwrap_or(&[0.0; 64]);
            for d in 0..64 {
                o[d] += w * vv[d];
            }
        }
        out.copy_from_slice(&o);
    } else {
        for (p, &w) in scores.iter().enumerate() {
            let at = span.first + p * span.stride;
            for (a, &vv) in out.iter_mut().zip(&span.v[at..at + hd]) {
                *a += w * vv;
            }
        }
    }
    let inv = 1.0 / sum;
    for a in out.iter_mut() {
        *a *= inv;
    }
}

fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ss = dot_f32(x, x);
    let mean = ss / x.len() as f32;
    let scale = 1.0 / (mean + eps).sqrt();
    for ((o, &xi), &wi) in out.iter_mut().zip(x).zip(w) {
        *o = (xi * scale) * wi;
    }
}

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
    /// values to the caches, and return the logits of the entries listed in
    /// `logits_for` (`[logits_for.len()][vocab]`).
    ///
    /// Every value computed for an entry depends only on that entry's token,
    /// position and its sequence's earlier cache contents, never on the other
    /// entries or on the thread count.
    pub(crate) fn forward(
        &self,
        kind: KernelKind,
        pool: &Pool,
        entries: &[Entry],
        caches: &mut [KvCache],
        logits_for: &[usize],
    ) -> Result<Vec<f32>> {
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
            if e.pos >= cache.cap {
                return Err(LlmError::ContextOverflow {
                    prompt: e.pos + 1,
                    context: cache.cap,
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
        for (l, layer) in self.layers.iter().enumerate() {
            for (xr, o) in x.chunks_exact(dim).zip(xn.f.chunks_exact_mut(dim)) {
                rms_norm(xr, &layer.attn_norm, cfg.eps, o);
            }
            xn.quantize();
            matmul(kind, pool, data, &layer.wq, &xn, &mut q);
            matmul(kind, pool, data, &layer.wk, &xn, &mut k);
            matmul(kind, pool, data, &layer.wv, &xn, &mut v);
            for (i, e) in entries.iter().enumerate() {
                let table = &self.rope[e.pos * half..(e.pos + 1) * half];
                for h in 0..cfg.n_head {
                    rope(&mut q[i * dim + h * hd..i * dim + h * hd + hd], table);
                }
                for h in 0..cfg.n_kv_head {
                    rope(&mut k[i * kv_dim + h * hd..i * kv_dim + h * hd + hd], table);
                }
                let c = &mut caches[e.seq];
                let at = c.at(l, e.pos);
                c.k[at..at + kv_dim].copy_from_slice(&k[i * kv_dim..(i + 1) * kv_dim]);
                c.v[at..at + kv_dim].copy_from_slice(&v[i * kv_dim..(i + 1) * kv_dim]);
            }
            // Attention: one task per (entry, head), statically split.
            {
                let tasks = n * cfg.n_head;
                let threads = pool.threads();
                let out = SharedOut::new(&mut att.f);
                let caches_ref: &[KvCache] = caches;
                let q_ref = &q;
                let job = |t: usize| {
                    let mut scores = Vec::new();
                    let mut acc = vec![0f32; hd];
                    for task in split(tasks, t, threads) {
                        let (i, h) = (task / cfg.n_head, task % cfg.n_head);
                        let e = entries[i];
                        let c = &caches_ref[e.seq];
                        let qh = &q_ref[i * dim + h * hd..i * dim + h * hd + hd];
                        let kvo = (h / group) * hd;
                        let span = HeadSpan {
                            k: &c.k,
                            v: &c.v,
                            first: c.at(l, 0) + kvo,
                            stride: kv_dim,
                            n: e.pos + 1,
                        };
                        crate::simd::attention_head(kind, qh, &span, scale, &mut scores, &mut acc);
                        for (d, a) in acc.iter().enumerate() {
                            out.set(i * dim + h * hd + d, *a);
                        }
                    }
                };
                pool.run(&job);
            }
            att.quantize();
            matmul(kind, pool, data, &layer.wo, &att, &mut tmp);
            for (a, b) in x.iter_mut().zip(&tmp) {
                *a += b;
            }
            for (xr, o) in x.chunks_exact(dim).zip(xn.f.chunks_exact_mut(dim)) {
                rms_norm(xr, &layer.ffn_norm, cfg.eps, o);
            }
            xn.quantize();
            matmul(kind, pool, data, &layer.w_gate, &xn, &mut gate);
            matmul(kind, pool, data, &layer.w_up, &xn, &mut up);
            for ((h, &g), &u) in hid.f.iter_mut().zip(&gate).zip(&up) {
                *h = g / (1.0 + exp_f32(-g)) * u;
            }
            hid.quantize();
            matmul(kind, pool, data, &layer.w_down, &hid, &mut tmp);
            for (a, b) in x.iter_mut().zip(&tmp) {
                *a += b;
            }
        }
        let m = logits_for.len();
        let mut fin = Acts::new(m, dim);
        for (j, &i) in logits_for.iter().enumerate() {
            if i >= n {
                return Err(LlmError::InvalidRequest("logits index out of range".into()));
            }
            rms_norm(
                &x[i * dim..(i + 1) * dim],
                &self.out_norm,
                cfg.eps,
                &mut fin.f[j * dim..(j + 1) * dim],
            );
        }
        fin.quantize();
        let mut logits = vec![0f32; m * cfg.vocab];
        matmul(kind, pool, data, &self.output, &fin, &mut logits);
        Ok(logits)
    }
}
