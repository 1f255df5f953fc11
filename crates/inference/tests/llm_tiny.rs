//! Fast tests of the language-model engine on tiny synthetic GGUF models.

use std::path::PathBuf;

use verinfer_inference::gguf::writer::{write, WTensor};
use verinfer_inference::gguf::{GgmlType, Value};
use verinfer_inference::testing::{tiny_model, TinySpec};
use verinfer_inference::{
    BatchRequest, Engine, EngineOptions, FinishReason, GenerateParams, LlmError, SamplingParams,
};

fn write_tmp(dir: &tempfile::TempDir, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, bytes).expect("write temp model");
    p
}

fn engine(path: &std::path::Path, threads: usize, scalar: bool) -> Engine {
    Engine::load(
        path,
        EngineOptions {
            threads,
            force_scalar: scalar,
        },
    )
    .expect("load tiny model")
}

fn params(max: u32, sampling: SamplingParams) -> GenerateParams {
    GenerateParams {
        max_tokens: max,
        sampling,
        stop: Vec::new(),
        ..Default::default()
    }
}

fn seeded(seed: u64) -> SamplingParams {
    SamplingParams {
        temperature_milli: 900,
        top_k: 20,
        top_p_milli: 950,
        seed,
    }
}

#[test]
fn same_tokens_for_any_thread_count_kernel_and_run() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_tmp(&dir, "tiny.gguf", &tiny_model(&TinySpec::default()));
    let prompt: Vec<u32> = vec![1, 40, 41, 42, 43, 44, 45, 46];
    let mut reference: Option<(Vec<u32>, Vec<u32>)> = None;
    for (threads, scalar) in [
        (1, false),
        (2, false),
        (4, false),
        (1, true),
        (3, true),
        (2, false),
    ] {
        let mut e = engine(&path, threads, scalar);
        let g = e
            .generate(
                &prompt,
                &params(40, SamplingParams::greedy()),
                &mut |_, _| {},
            )
            .expect("greedy");
        let s = e
            .generate(&prompt, &params(40, seeded(7)), &mut |_, _| {})
            .expect("seeded");
        let got = (g.tokens, s.tokens);
        match &reference {
            None => reference = Some(got),
            Some(r) => assert_eq!(r, &got, "threads {threads} scalar {scalar}"),
        }
    }
}

#[test]
fn score_agrees_with_generation() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_tmp(&dir, "tiny.gguf", &tiny_model(&TinySpec::default()));
    let mut e = engine(&path, 2, false);
    let prompt: Vec<u32> = (1..30).collect();
    let g = e
        .generate(
            &prompt,
            &params(50, SamplingParams::greedy()),
            &mut |_, _| {},
        )
        .expect("generate");
    let sc = e
        .score(&prompt, &g.tokens, &SamplingParams::greedy(), 5)
        .expect("score");
    assert_eq!(sc.len(), g.tokens.len());
    for (p, &t) in sc.iter().zip(&g.tokens) {
        assert_eq!(p.argmax, t);
        assert_eq!(p.sampled, t);
        assert_eq!(p.claimed_margin, 0.0);
        assert_eq!(p.top[0].token, t);
        assert!(p.top.windows(2).all(|w| w[0].logit >= w[1].logit));
    }
    let sp = seeded(99);
    let s = e
        .generate(&prompt, &params(50, sp), &mut |_, _| {})
        .expect("generate seeded");
    let sc = e.score(&prompt, &s.tokens, &sp, 3).expect("score seeded");
    for (p, &t) in sc.iter().zip(&s.tokens) {
        assert_eq!(
            p.sampled, t,
            "the seeded sampler's pick must be recomputable"
        );
        assert_eq!(p.claimed, t);
        assert!(p.claimed_margin >= 0.0);
    }
}

#[test]
fn batch_gives_the_same_results_as_alone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_tmp(&dir, "tiny.gguf", &tiny_model(&TinySpec::default()));
    let mut e = engine(&path, 2, false);
    let reqs = vec![
        BatchRequest {
            prompt: vec![1, 50, 51, 52],
            params: params(30, SamplingParams::greedy()),
        },
        BatchRequest {
            prompt: (1..40).collect(),
            params: params(12, seeded(3)),
        },
        BatchRequest {
            prompt: vec![1, 9],
            params: params(25, seeded(4)),
        },
    ];
    let batch = e.generate_batch(&reqs).expect("batch");
    for (r, b) in reqs.iter().zip(&batch) {
        let alone = e
            .generate(&r.prompt, &r.params, &mut |_, _| {})
            .expect("alone");
        assert_eq!(&alone, b);
    }
}

#[test]
fn every_weight_format_runs_deterministically() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (wt, et, dim, ffn) in [
        (GgmlType::F32, GgmlType::F32, 64, 128),
        (GgmlType::F16, GgmlType::F16, 64, 128),
        (GgmlType::Q4_0, GgmlType::Q4_0, 64, 128),
        (GgmlType::Q8_0, GgmlType::Q8_0, 64, 128),
        (GgmlType::Q5_0, GgmlType::Q5_0, 64, 128),
        (GgmlType::Q4K, GgmlType::Q4_1, 256, 256),
        (GgmlType::Q5K, GgmlType::Q6K, 256, 256),
        (GgmlType::Q6K, GgmlType::Q4K, 256, 256),
    ] {
        let spec = TinySpec {
            weight_type: wt,
            embd_type: et,
            dim,
            ffn,
            n_head: 4,
            n_kv_head: 4,
            ..TinySpec::default()
        };
        let path = write_tmp(&dir, &format!("{wt:?}.gguf"), &tiny_model(&spec));
        let prompt = vec![1, 60, 61, 62];
        let a = engine(&path, 1, true)
            .generate(
                &prompt,
                &params(10, SamplingParams::greedy()),
                &mut |_, _| {},
            )
            .expect("scalar");
        let b = engine(&path, 2, false)
            .generate(
                &prompt,
                &params(10, SamplingParams::greedy()),
                &mut |_, _| {},
            )
            .expect("simd");
        assert_eq!(a, b, "{wt:?}");
        assert_eq!(a.tokens.len(), 10.min(a.tokens.len()));
    }
}

#[test]
fn streaming_stop_sequences_and_limits() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_tmp(&dir, "tiny.gguf", &tiny_model(&TinySpec::default()));
    let mut e = engine(&path, 1, false);
    let prompt = vec![1, 70, 71];
    let mut streamed = String::new();
    let mut calls = 0;
    let full = e
        .generate(
            &prompt,
            &params(30, SamplingParams::greedy()),
            &mut |_, s| {
                streamed.push_str(s);
                calls += 1;
            },
        )
        .expect("generate");
    assert_eq!(streamed, full.text);
    assert_eq!(calls, full.tokens.len());
    assert_eq!(full.usage.prompt_tokens, 3);
    assert_eq!(full.usage.completion_tokens as usize, full.tokens.len());
    if full.finish_reason == FinishReason::Length {
        assert_eq!(full.tokens.len(), 30);
    }
    // Stop at a substring of the greedy text.
    let chars: Vec<char> = full.text.chars().collect();
    if chars.len() >= 6 {
        let stop: String = chars[3..5].iter().collect();
        let mut p = params(30, SamplingParams::greedy());
        p.stop = vec![stop.clone()];
        let mut streamed = String::new();
        let g = e
            .generate(&prompt, &p, &mut |_, s| streamed.push_str(s))
            .expect("generate with stop");
        assert_eq!(g.finish_reason, FinishReason::Stop);
        let cut = full.text.find(&stop).expect("stop occurs");
        assert_eq!(g.text, full.text[..cut]);
        assert_eq!(streamed, g.text);
    }
    let zero = e
        .generate(
            &prompt,
            &params(0, SamplingParams::greedy()),
            &mut |_, _| {},
        )
        .expect("zero tokens");
    assert!(zero.tokens.is_empty());
    assert_eq!(zero.finish_reason, FinishReason::Length);
}

#[test]
fn prompt_longer_than_context_is_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = TinySpec {
        ctx: 32,
        ..TinySpec::default()
    };
    let path = write_tmp(&dir, "tiny.gguf", &tiny_model(&spec));
    let mut e = engine(&path, 1, false);
    let long: Vec<u32> = vec![5; 40];
    let err = e
        .generate(&long, &params(4, SamplingParams::greedy()), &mut |_, _| {})
        .expect_err("too long");
    assert!(
        matches!(
            err,
            LlmError::ContextOverflow {
                prompt: 40,
                context: 32
            }
        ),
        "{err}"
    );
    assert!(e.score(&long, &[1], &SamplingParams::greedy(), 1).is_err());
    // A prompt that fits but leaves little room stops at the context end.
    let g = e
        .generate(
            &[5; 28],
            &params(100, SamplingParams::greedy()),
            &mut |_, _| {},
        )
        .expect("fits");
    assert!(g.tokens.len() <= 4);
    let bad = e.generate(
        &[1, 99_999],
        &params(1, SamplingParams::greedy()),
        &mut |_, _| {},
    );
    assert!(matches!(bad, Err(LlmError::InvalidRequest(_))));
}

#[test]
fn missing_truncated_and_corrupt_files_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("nope.gguf");
    assert!(matches!(
        Engine::load(&missing, EngineOptions::default()),
        Err(LlmError::Io { .. })
    ));
    let bytes = tiny_model(&TinySpec::default());
    // Truncated at many points (header, metadata, tensor directory, data).
    let mut cut = 0;
    while cut < bytes.len() {
        let p = write_tmp(&dir, "cut.gguf", &bytes[..cut]);
        let r = Engine::load(&p, EngineOptions::default());
        assert!(
            matches!(r, Err(LlmError::Truncated(_) | LlmError::Format(_))),
            "truncated at {cut} of {}: {:?}",
            bytes.len(),
            r.err()
        );
        cut += 1 + cut / 3;
    }
    let mut bad = bytes.clone();
    bad[0] = b'X';
    let p = write_tmp(&dir, "magic.gguf", &bad);
    assert!(matches!(
        Engine::load(&p, EngineOptions::default()),
        Err(LlmError::Format(_))
    ));
    // Corrupt length fields: flip bytes in the header area. Each loads (a
    // flipped byte inside a value can still make a valid model) or is
    // refused as a malformed model, never a panic nor an I/O error.
    for i in 8..200.min(bytes.len()) {
        let mut c = bytes.clone();
        c[i] ^= 0xff;
        let p = write_tmp(&dir, "flip.gguf", &c);
        match Engine::load(&p, EngineOptions::default()) {
            Ok(_) => {}
            Err(e) => assert!(
                matches!(
                    e,
                    LlmError::Format(_)
                        | LlmError::Truncated(_)
                        | LlmError::Missing(_)
                        | LlmError::UnsupportedArchitecture(_)
                        | LlmError::UnsupportedTensorType { .. }
                        | LlmError::Tokenizer(_)
                        | LlmError::Template(_)
                ),
                "byte {i} flipped: {e:?}"
            ),
        }
    }
}

#[test]
fn unsupported_architecture_and_quantisation_are_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = TinySpec {
        arch: "mamba".into(),
        ..TinySpec::default()
    };
    let p = write_tmp(&dir, "arch.gguf", &tiny_model(&spec));
    let err = Engine::load(&p, EngineOptions::default()).expect_err("arch");
    assert!(
        matches!(err, LlmError::UnsupportedArchitecture(ref a) if a == "mamba"),
        "{err}"
    );

    // A Q5_0 (type 6) tensor.
    let meta = vec![(
        "general.architecture".to_string(),
        Value::Str("llama".into()),
    )];
    let t = WTensor {
        name: "token_embd.weight".into(),
        dims: vec![32, 2],
        ty: 6,
        data: vec![0; 44],
    };
    let p = write_tmp(&dir, "q5.gguf", &write(&meta, &[t]));
    let g = verinfer_inference::gguf::Gguf::open(&p).expect("directory parses");
    assert_eq!(g.tensors["token_embd.weight"].raw_type, 6);
    // The full model build reports the first problem it meets; build a model whose
    // only defect is the tensor type.
    let mut bytes = tiny_model(&TinySpec::default());
    let needle = b"blk.0.attn_q.weight";
    let at = bytes
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("tensor name present");
    // name, then u32 n_dims, 2 x u64 dims, then the u32 type.
    let ty_at = at + needle.len() + 4 + 16;
    bytes[ty_at..ty_at + 4].copy_from_slice(&11u32.to_le_bytes());
    let p = write_tmp(&dir, "q3k.gguf", &bytes);
    let err = Engine::load(&p, EngineOptions::default()).expect_err("quant");
    assert!(
        matches!(err, LlmError::UnsupportedTensorType { ref kind, .. } if kind == "Q3_K"),
        "{err}"
    );
    assert!(err.to_string().contains("Q3_K"));
}

#[test]
fn tiny_tokenizer_round_trips() {
    let dir = tempfile::tempdir().expect("tempdir");
    let p = write_tmp(&dir, "tiny.gguf", &tiny_model(&TinySpec::default()));
    let e = engine(&p, 1, false);
    let tk = &e.model().tokenizer;
    for s in [
        "hello world",
        "the  world\n\n\tok",
        "naïve café 日本 🎉",
        "fn f(x: u8) -> u8 { x << 2 }",
    ] {
        let ids = tk.encode(s, false);
        assert_eq!(tk.decode(&ids, false).expect("decode"), s);
    }
    let ids = tk.encode("<|im_start|>hello<|im_end|>", true);
    assert_eq!(ids.first(), Some(&1));
    assert_eq!(ids.last(), Some(&2));
    let he = tk.token_id("hell").expect("merged token");
    assert_eq!(tk.encode("hell", false), vec![he]);
}

#[test]
fn engine_can_move_between_threads() {
    fn assert_send<T: Send>() {}
    assert_send::<Engine>();
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write_tmp(&dir, "tiny.gguf", &tiny_model(&TinySpec::default()));
    let mut e = engine(&path, 2, false);
    let out = std::thread::spawn(move || {
        e.generate(
            &[1, 2, 3],
            &params(5, SamplingParams::greedy()),
            &mut |_, _| {},
        )
        .map(|g| g.tokens.len())
    })
    .join()
    .expect("thread");
    assert!(out.expect("generate") <= 5);
}
