//! Builders for tiny synthetic GGUF models (used by tests and benches).

use crate::gguf::writer::{write, write_narrow, WTensor};
use crate::gguf::{GgmlType, Value};
use crate::quant::quantize_weights;

/// Shape and formats of a synthetic model.
#[derive(Debug, Clone)]
pub struct TinySpec {
    /// Embedding width.
    pub dim: usize,
    /// Heads.
    pub n_head: usize,
    /// KV heads.
    pub n_kv_head: usize,
    /// FFN width.
    pub ffn: usize,
    /// Layers.
    pub n_layer: usize,
    /// Context length.
    pub ctx: usize,
    /// Type of the layer matrices.
    pub weight_type: GgmlType,
    /// Type of the embedding (tied output).
    pub embd_type: GgmlType,
    /// Architecture name to write: `llama`, `qwen2` (query, key and value
    /// biases), `qwen3` (per-head query and key norms, heads of 64 whatever
    /// the width) or `gemma3` (heads of 64, its extra norms, sliding
    /// windows); any other name is written with `llama`'s tensors.
    pub arch: String,
    /// RNG seed for weights.
    pub seed: u64,
    /// Tokens appended to the 269-token vocabulary (never produced by the
    /// tokenizer: a realistic output projection for benchmarks).
    pub extra_vocab: usize,
    /// Window of `gemma3`'s sliding-window layers.
    pub sliding_window: usize,
    /// Head width of `qwen3` and `gemma3` (64 when `None`; other
    /// architectures use `dim / n_head`).
    pub head_dim: Option<usize>,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            dim: 64,
            n_head: 4,
            n_kv_head: 2,
            ffn: 128,
            n_layer: 2,
            ctx: 256,
            weight_type: GgmlType::Q4_1,
            embd_type: GgmlType::Q8_0,
            arch: "llama".into(),
            seed: 1,
            extra_vocab: 0,
            sliding_window: 64,
            head_dim: None,
        }
    }
}

/// The synthetic models llama.cpp's logits were recorded on
/// (`tests/golden/llama_cpp/NAME.json`, written by `examples/tiny_gguf`):
/// `tiny-llama` (the default spec), `tiny-qwen2` (its shape with biases),
/// `tiny-qwen3` (width 256, eight heads of 64, Q4_K layers and a Q6_K
/// embedding) and `tiny-gemma3` (six layers, a window of 8 positions).
pub fn reference_spec(name: &str) -> Option<TinySpec> {
    let d = TinySpec::default();
    Some(match name {
        "tiny-llama" => d,
        "tiny-qwen2" => TinySpec {
            arch: "qwen2".into(),
            ..d
        },
        "tiny-qwen3" => TinySpec {
            arch: "qwen3".into(),
            dim: 256,
            n_head: 8,
            n_kv_head: 4,
            ffn: 512,
            weight_type: GgmlType::Q4K,
            embd_type: GgmlType::Q6K,
            ..d
        },
        "tiny-gemma3" => TinySpec {
            arch: "gemma3".into(),
            dim: 128,
            ffn: 256,
            n_layer: 6,
            weight_type: GgmlType::Q5_0,
            sliding_window: 8,
            ..d
        },
        _ => return None,
    })
}

/// A Qwen3-0.6B-shaped model (28 layers, width 1024, 16 heads of 128, 8 KV
/// heads, feed-forward 3072, a 151,936-token vocabulary, tied embedding;
/// 0.6B parameters) with random weights in `weight_type` and its embedding
/// in `embd_type`, for benchmarks.
pub fn qwen3_06b_spec(weight_type: GgmlType, embd_type: GgmlType) -> TinySpec {
    TinySpec {
        arch: "qwen3".into(),
        dim: 1024,
        n_head: 16,
        n_kv_head: 8,
        head_dim: Some(128),
        ffn: 3072,
        n_layer: 28,
        ctx: 4096,
        weight_type,
        embd_type,
        extra_vocab: 151_936 - 269,
        ..TinySpec::default()
    }
}

/// splitmix64 mapped to `[-1, 1)`: deterministic weights, so a model file
/// (and its id) is the same on every run.
#[derive(Debug)]
pub struct Rng(pub u64);

impl Rng {
    /// The next value in `[-1, 1)`.
    pub fn next_f32(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
}

/// Byte-level vocabulary: specials, 256 byte tokens and a few merges.
pub fn tiny_vocab() -> (Vec<String>, Vec<i64>, Vec<String>) {
    let mut tokens = vec![
        "<|endoftext|>".to_string(),
        "<|im_start|>".to_string(),
        "<|im_end|>".to_string(),
    ];
    let mut types = vec![3i64, 3, 3];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let c = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        tokens.push(char::from_u32(c).map(String::from).unwrap_or_default());
        types.push(1);
    }
    let merges: Vec<String> = [
        "h e", "l l", "he ll", "Ġ t", "Ġt he", "o r", "i n", "Ġ w", "Ġw or", "l d",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for m in &merges {
        tokens.push(m.replace(' ', ""));
        types.push(1);
    }
    (tokens, types, merges)
}

/// Serialise a random tiny llama model as GGUF bytes.
pub fn tiny_model(spec: &TinySpec) -> Vec<u8> {
    let (meta, tensors) = tiny_parts(spec);
    write(&meta, &tensors)
}

/// [`tiny_model`] with its metadata integers as u32 / i32, the widths
/// llama.cpp's loader requires: the same model (same values, same tensor
/// bytes) in a file llama.cpp can load, for the reference test.
pub fn tiny_model_for_llama_cpp(spec: &TinySpec) -> Vec<u8> {
    let (meta, tensors) = tiny_parts(spec);
    write_narrow(&meta, &tensors)
}

fn tiny_parts(spec: &TinySpec) -> (Vec<(String, Value)>, Vec<WTensor>) {
    let (mut tokens, mut types, merges) = tiny_vocab();
    for i in 0..spec.extra_vocab {
        tokens.push(format!("<|unused_{i}|>"));
        types.push(5);
    }
    let vocab = tokens.len();
    let gemma = spec.arch == "gemma3";
    let (qwen2, qwen3) = (spec.arch == "qwen2", spec.arch == "qwen3");
    // Gemma's and Qwen3's heads are wider than dim / heads (Gemma 3 270M:
    // 256, not 160; Qwen3 0.6B: 128, not 64).
    let head_dim = if gemma || qwen3 {
        spec.head_dim.unwrap_or(64)
    } else {
        spec.dim / spec.n_head
    };
    let q_dim = spec.n_head * head_dim;
    let kv_dim = spec.n_kv_head * head_dim;
    let mut rng = Rng(spec.seed);
    let mut rand =
        |n: usize, scale: f32| -> Vec<f32> { (0..n).map(|_| rng.next_f32() * scale).collect() };
    // Keys carry the architecture's prefix (`llama.` for names the engine
    // does not know, so that only the name is wrong).
    let pre = if gemma || qwen2 || qwen3 {
        spec.arch.as_str()
    } else {
        "llama"
    };
    let mut meta: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::Str(spec.arch.clone())),
        (
            format!("{pre}.block_count"),
            Value::UInt(spec.n_layer as u64),
        ),
        (
            format!("{pre}.context_length"),
            Value::UInt(spec.ctx as u64),
        ),
        (
            format!("{pre}.embedding_length"),
            Value::UInt(spec.dim as u64),
        ),
        (
            format!("{pre}.feed_forward_length"),
            Value::UInt(spec.ffn as u64),
        ),
        (
            format!("{pre}.attention.head_count"),
            Value::UInt(spec.n_head as u64),
        ),
        (
            format!("{pre}.attention.head_count_kv"),
            Value::UInt(spec.n_kv_head as u64),
        ),
        (
            format!("{pre}.rope.freq_base"),
            Value::Float(if qwen2 || qwen3 { 1e6 } else { 10000.0 }),
        ),
        (
            format!("{pre}.attention.layer_norm_rms_epsilon"),
            Value::Float(1e-5),
        ),
        ("tokenizer.ggml.model".into(), Value::Str("gpt2".into())),
        (
            "tokenizer.ggml.tokens".into(),
            Value::Array(tokens.into_iter().map(Value::Str).collect()),
        ),
        (
            "tokenizer.ggml.token_type".into(),
            Value::Array(types.into_iter().map(Value::Int).collect()),
        ),
        (
            "tokenizer.ggml.merges".into(),
            Value::Array(merges.into_iter().map(Value::Str).collect()),
        ),
        ("tokenizer.ggml.bos_token_id".into(), Value::UInt(1)),
        ("tokenizer.ggml.eos_token_id".into(), Value::UInt(2)),
    ];
    if gemma {
        // Layer 5 attends globally.
        meta.push((
            "gemma3.attention.sliding_window".into(),
            Value::UInt(spec.sliding_window as u64),
        ));
    }
    if gemma || qwen3 {
        for k in ["key_length", "value_length"] {
            meta.push((format!("{pre}.attention.{k}"), Value::UInt(head_dim as u64)));
        }
    }
    let mut tensors = Vec::new();
    let mut mat = |name: String,
                   rows: usize,
                   cols: usize,
                   ty: GgmlType,
                   scale: f32,
                   tensors: &mut Vec<WTensor>| {
        let x = rand(rows * cols, scale);
        tensors.push(WTensor {
            name,
            dims: vec![cols as u64, rows as u64],
            ty: ty.to_u32(),
            data: quantize_weights(ty, &x),
        });
    };
    mat(
        "token_embd.weight".into(),
        vocab,
        spec.dim,
        spec.embd_type,
        1.0,
        &mut tensors,
    );
    let ws = 1.0 / (spec.dim as f32).sqrt();
    // Gemma's extra norms near 1 (their own stream: the llama files stay as they were).
    let mut norm_rng = Rng(spec.seed ^ 0x9e37);
    // Qwen's biases and norms, their own stream too.
    let mut qwen_rng = Rng(spec.seed ^ 0x5157);
    let mut vector = |name: String, len: usize, center: f32, spread: f32| WTensor {
        name,
        dims: vec![len as u64],
        ty: 0,
        data: quantize_weights(
            GgmlType::F32,
            &(0..len)
                .map(|_| center + spread * qwen_rng.next_f32())
                .collect::<Vec<_>>(),
        ),
    };
    for l in 0..spec.n_layer {
        let p = |s: &str| format!("blk.{l}.{s}.weight");
        mat(
            p("attn_q"),
            q_dim,
            spec.dim,
            spec.weight_type,
            ws,
            &mut tensors,
        );
        mat(
            p("attn_k"),
            kv_dim,
            spec.dim,
            spec.weight_type,
            ws,
            &mut tensors,
        );
        mat(
            p("attn_v"),
            kv_dim,
            spec.dim,
            spec.weight_type,
            ws,
            &mut tensors,
        );
        mat(
            p("attn_output"),
            spec.dim,
            q_dim,
            spec.weight_type,
            ws,
            &mut tensors,
        );
        mat(
            p("ffn_gate"),
            spec.ffn,
            spec.dim,
            spec.weight_type,
            ws,
            &mut tensors,
        );
        mat(
            p("ffn_up"),
            spec.ffn,
            spec.dim,
            spec.weight_type,
            ws,
            &mut tensors,
        );
        mat(
            p("ffn_down"),
            spec.dim,
            spec.ffn,
            spec.weight_type,
            1.0 / (spec.ffn as f32).sqrt(),
            &mut tensors,
        );
        for n in ["attn_norm", "ffn_norm"] {
            tensors.push(WTensor {
                name: p(n),
                dims: vec![spec.dim as u64],
                ty: 0,
                data: quantize_weights(GgmlType::F32, &vec![1.0; spec.dim]),
            });
        }
        if qwen2 {
            for (n, len) in [("attn_q", q_dim), ("attn_k", kv_dim), ("attn_v", kv_dim)] {
                tensors.push(vector(format!("blk.{l}.{n}.bias"), len, 0.0, 0.5));
            }
        }
        if qwen3 {
            for n in ["attn_q_norm", "attn_k_norm"] {
                tensors.push(vector(p(n), head_dim, 1.0, 0.25));
            }
        }
        if gemma {
            let norms = [
                ("attn_q_norm", head_dim),
                ("attn_k_norm", head_dim),
                ("post_attention_norm", spec.dim),
                ("post_ffw_norm", spec.dim),
            ];
            for (n, len) in norms {
                let w: Vec<f32> = (0..len).map(|_| 1.0 + 0.25 * norm_rng.next_f32()).collect();
                tensors.push(WTensor {
                    name: p(n),
                    dims: vec![len as u64],
                    ty: 0,
                    data: quantize_weights(GgmlType::F32, &w),
                });
            }
        }
    }
    tensors.push(WTensor {
        name: "output_norm.weight".into(),
        dims: vec![spec.dim as u64],
        ty: 0,
        data: quantize_weights(GgmlType::F32, &vec![1.0; spec.dim]),
    });
    (meta, tensors)
}
