//! Test support (used by this crate's and the CLI's tests): a stand-in model
//! for the `swap-model` fault, and signed receipt bundles.
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

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use verinfer_tlog::checkpoint::Checkpoint;
use verinfer_tlog::merkle::{leaf_hash, Tree};
use verinfer_tlog::witness::{add_cosignature, witness_key};
use verinfer_types::note::{VerifierKey, ALG_ED25519};
use verinfer_types::records::{
    Amount, Certificate, CertificateTag, Decision, Decoding, Fees, FinishReason, InferenceResult,
    Input, Message, Nonce, Policy, Receipt, ReceiptTag, Request, RequestTag, ResultTag, Salt,
    Usage, Verdict, VerdictTag, VerificationMode,
};
use verinfer_types::{Hash, Record, SecretKey, SignedRecord};

use crate::receipt::{witness_name, ReceiptBundle};

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

/// Origin (and log key name) of the test bundles' log.
pub const BUNDLE_ORIGIN: &str = "test.verinfer/receipts";

/// Index of the receipt's leaf in the test bundles' log.
pub const BUNDLE_INDEX: u64 = 5;

/// Leaves in the test bundles' log (so the proof has siblings on both sides).
pub const BUNDLE_LOG_SIZE: u64 = 11;

/// The signing key of the test bundles' log.
pub fn bundle_log_secret() -> SecretKey {
    SecretKey::from_seed(&[0x10; 32])
}

/// The key of test witness `i`, which is also a verifier.
pub fn bundle_witness_secret(i: u8) -> SecretKey {
    SecretKey::from_seed(&[0x20 + i; 32])
}

/// The log's verifier key of the test bundles.
pub fn bundle_log_key() -> VerifierKey {
    VerifierKey::new(BUNDLE_ORIGIN, ALG_ED25519, bundle_log_secret().public())
        .expect("the origin is a valid key name")
}

/// The witness verifier key of `key`, under [`witness_name`].
pub fn bundle_witness_key(key: &SecretKey) -> VerifierKey {
    witness_key(&witness_name(&key.public()), key).expect("witness names are valid key names")
}

/// A signed receipt whose request asks for `mode`, answered by a node, with
/// one verdict deciding `decision` by each of `verifiers`.
pub fn test_receipt(
    mode: VerificationMode,
    verifiers: &[SecretKey],
    decision: Decision,
) -> Receipt {
    let requester = SecretKey::from_seed(&[0x01; 32]);
    let node = SecretKey::from_seed(&[0x02; 32]);
    let mut request = Request {
        tag: RequestTag,
        model: Hash::of(b"test model"),
        input: Input::Messages(vec![Message {
            role: "user".into(),
            content: "Name the largest planet.".into(),
        }]),
        decoding: Decoding::default(),
        policy: Policy {
            verification: mode,
            json_schema: None,
        },
        requester: requester.public(),
        nonce: Nonce([0x33; 16]),
        signer: requester.public(),
        signature: Default::default(),
    };
    request.sign(&requester).expect("the requester signs");
    let mut result = InferenceResult {
        tag: ResultTag,
        request: request.hash().expect("the request encodes"),
        model: request.model,
        engine: "verinfer-llm/test".into(),
        output_tokens: vec![504, 6188, 282, 2],
        output_text: "Jupiter is the largest planet.".into(),
        finish_reason: FinishReason::Eos,
        usage: Usage {
            prompt_tokens: 12,
            completion_tokens: 4,
        },
        logprobs: None,
        node: node.public(),
        signature: Default::default(),
    };
    result.sign(&node).expect("the node signs");
    let result_hash = result.hash().expect("the result encodes");
    let mut verdicts: Vec<Verdict> = verifiers
        .iter()
        .map(|k| {
            let mut v = Verdict {
                tag: VerdictTag,
                request: result.request,
                result: result_hash,
                decision,
                reason: (decision == Decision::Reject).then(|| "token_mismatch: test".into()),
                failed_position: None,
                checked_positions: 4,
                cost_micros: 900,
                verifier: k.public(),
                signature: Default::default(),
            };
            v.sign(k).expect("the verifier signs");
            v
        })
        .collect();
    verdicts.sort_by_key(|v| v.verifier);
    Receipt {
        tag: ReceiptTag,
        request,
        result,
        certificate: Certificate {
            tag: CertificateTag,
            result: result_hash,
            verdicts,
        },
        fees: Fees {
            total: Amount(16_000),
            node: Amount(11_200),
            verifiers: Amount(3_200),
            treasury: Amount(1_600),
            publisher: None,
        },
        salt: Salt([0x77; 32]),
    }
}

/// A bundle for `receipt`: its leaf at [`BUNDLE_INDEX`] of an in-memory log
/// of [`BUNDLE_LOG_SIZE`] leaves, a checkpoint signed by
/// [`bundle_log_secret`] and cosigned by `cosigners`, the keys of
/// `witnesses`, and `witness_quorum`.
pub fn bundle_for(
    receipt: &Receipt,
    witnesses: &[SecretKey],
    cosigners: &[SecretKey],
    witness_quorum: u32,
) -> ReceiptBundle {
    let leaf = receipt.leaf().expect("the receipt encodes");
    let id = leaf_hash(&leaf.to_canonical().expect("the leaf encodes"));
    let mut tree = Tree::new();
    for i in 0..BUNDLE_LOG_SIZE {
        tree.push(if i == BUNDLE_INDEX {
            id
        } else {
            leaf_hash(format!("other leaf {i}").as_bytes())
        });
    }
    let size = tree.size();
    let mut signed = Checkpoint {
        origin: BUNDLE_ORIGIN.into(),
        size,
        root: tree.root(size).expect("size is the tree's"),
        extensions: Vec::new(),
    }
    .sign(&bundle_log_secret())
    .expect("the checkpoint signs");
    for (t, k) in cosigners.iter().enumerate() {
        add_cosignature(
            &mut signed.note,
            &witness_name(&k.public()),
            k,
            1_700_000_000 + t as u64,
        )
        .expect("the witness cosigns");
    }
    let proof = tree
        .inclusion_proof(BUNDLE_INDEX, size)
        .expect("index is below size");
    ReceiptBundle {
        id,
        index: BUNDLE_INDEX,
        leaf,
        receipt: Some(receipt.clone()),
        checkpoint: Some(signed.note.to_string()),
        inclusion_proof: proof.iter().map(|h| B64.encode(h.0)).collect(),
        log_key: bundle_log_key().to_string(),
        witnesses: witnesses
            .iter()
            .map(|k| bundle_witness_key(k).to_string())
            .collect(),
        witness_quorum,
        finality: None,
    }
}

/// The honest bundle: a `quorum(2)` request certified by witnesses 0 and 1
/// of three, in a checkpoint cosigned by all three (quorum 2).
pub fn signed_bundle() -> ReceiptBundle {
    let witnesses: Vec<SecretKey> = (0..3).map(bundle_witness_secret).collect();
    let receipt = test_receipt(
        VerificationMode::Quorum { k: 2 },
        &witnesses[..2],
        Decision::Accept,
    );
    bundle_for(&receipt, &witnesses, &witnesses, 2)
}
