//! Test support (used by this crate's and the CLI's tests): a stand-in model
//! for the `swap-model` fault.
//!
//! A node that swaps models is most dangerous when the swapped model shares
//! the requested one's tokenizer: prompt, usage, token ids and text then all
//! look right, and only the recomputation can tell. So the stand-in is a
//! tiny llama with random weights that copies every `tokenizer.*` key (vocabulary,
//! merges, special tokens, chat template) of a real model file.

use std::path::Path;

use verinfer_inference::gguf::writer::{write, WTensor};
use verinfer_inference::gguf::{GgmlType, Gguf, Value};
use verinfer_inference::quant::quantize_weights;
use verinfer_inference::LlmError;

use verinfer_inference::testing::Rng;

/// The bytes of a tiny random llama (2 layers, width 64) with the tokenizer
/// and context length of the GGUF model at `original`. `seed` picks the
/// weights.
pub fn same_tokenizer_model(original: &Path, seed: u64) -> Result<Vec<u8>, LlmError> {
    let g = Gguf::open(original)?;
    let vocab = g
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .map(<[Value]>::len)
        .ok_or_else(|| LlmError::Missing("tokenizer.ggml.tokens".into()))?;
    let ctx = g.get_u64("llama.context_length").unwrap_or(2048);
    let (dim, n_head, n_kv_head, ffn, n_layer) = (64usize, 4usize, 2usize, 128usize, 2usize);
    let mut meta: Vec<(String, Value)> = g
        .metadata
        .iter()
        .filter(|(k, _)| k.starts_with("tokenizer."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    // Metadata is a hash map: sort it so the file bytes do not vary by run.
    meta.sort_by(|a, b| a.0.cmp(&b.0));
    let u = |k: &str, v: usize| (k.to_string(), Value::UInt(v as u64));
    meta.extend([
        ("general.architecture".into(), Value::Str("llama".into())),
        u("llama.block_count", n_layer),
        ("llama.context_length".into(), Value::UInt(ctx)),
        u("llama.embedding_length", dim),
        u("llama.feed_forward_length", ffn),
        u("llama.attention.head_count", n_head),
        u("llama.attention.head_count_kv", n_kv_head),
        ("llama.rope.freq_base".into(), Value::Float(10000.0)),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::Float(1e-5),
        ),
    ]);
    let mut rng = Rng(seed);
    let mut tensors = Vec::new();
    let mut mat = |name: String, rows: usize, cols: usize, ty: GgmlType, scale: f32| {
        let x: Vec<f32> = (0..rows * cols).map(|_| rng.next_f32() * scale).collect();
        tensors.push(WTensor {
            name,
            dims: vec![cols as u64, rows as u64],
            ty: ty.to_u32(),
            data: quantize_weights(ty, &x),
        });
    };
    let kv_dim = n_kv_head * (dim / n_head);
    let ws = 1.0 / (dim as f32).sqrt();
    // Tied output: the embedding is also the output matrix.
    mat("token_embd.weight".into(), vocab, dim, GgmlType::Q8_0, 1.0);
    for l in 0..n_layer {
        let p = |s: &str| format!("blk.{l}.{s}.weight");
        let q = GgmlType::Q4_1;
        mat(p("attn_q"), dim, dim, q, ws);
        mat(p("attn_k"), kv_dim, dim, q, ws);
        mat(p("attn_v"), kv_dim, dim, q, ws);
        mat(p("attn_output"), dim, dim, q, ws);
        mat(p("ffn_gate"), ffn, dim, q, ws);
        mat(p("ffn_up"), ffn, dim, q, ws);
        mat(p("ffn_down"), dim, ffn, q, 1.0 / (ffn as f32).sqrt());
    }
    let ones = |name: String| WTensor {
        name,
        dims: vec![dim as u64],
        ty: GgmlType::F32.to_u32(),
        data: quantize_weights(GgmlType::F32, &vec![1.0; dim]),
    };
    for l in 0..n_layer {
        tensors.push(ones(format!("blk.{l}.attn_norm.weight")));
        tensors.push(ones(format!("blk.{l}.ffn_norm.weight")));
    }
    tensors.push(ones("output_norm.weight".into()));
    Ok(write(&meta, &tensors))
}
