//! Tests with the real Gemma 3 270M file (Q4_K_M: Q4_K, Q6_K, Q5_0, Q8_0
//! and f32 tensors; architecture `gemma3`; SentencePiece vocabulary; the
//! pretrained model, not the instruction-tuned one).
//!
//! The tests fetch the model if it is not cached (`models::ensure_model`)
//! and fail with the reason if that is impossible; they never skip.

use verinfer_inference::models;
use verinfer_inference::{ChatMessage, Engine, EngineOptions, GenerateParams, SamplingParams};

fn engine(threads: usize, force_scalar: bool) -> Engine {
    let path = models::ensure_model(models::GEMMA3_MODEL).unwrap_or_else(|e| {
        panic!("the Gemma 3 model is needed for this test and could not be fetched: {e}")
    });
    Engine::load(
        &path,
        EngineOptions {
            threads,
            force_scalar,
        },
    )
    .expect("load Gemma 3")
}

fn greedy(max: u32) -> GenerateParams {
    GenerateParams {
        max_tokens: max,
        sampling: SamplingParams::greedy(),
        stop: Vec::new(),
        ..Default::default()
    }
}

fn chat(e: &Engine, q: &str) -> Vec<u32> {
    e.chat_prompt(&[ChatMessage::new("user", q)])
        .expect("chat prompt")
}

#[test]
fn chat_prompt_uses_gemma_turns() {
    let e = engine(1, false);
    let tok = &e.model().tokenizer;
    let p = chat(&e, "Hi there");
    let text = tok.decode(&p, true).expect("decode");
    assert_eq!(
        text,
        "<bos><start_of_turn>user\nHi there<end_of_turn>\n<start_of_turn>model\n"
    );
    assert_eq!(p[0], 2, "BOS first");
    assert_eq!(p[1], tok.token_id("<start_of_turn>").expect("turn token"));
    // SentencePiece: spaces are `▁`, characters outside the vocabulary are bytes.
    for s in [
        "Hello world, how are you?",
        "naïve café 🦀 ∮ x\ty",
        "  two  spaces ",
    ] {
        let ids = tok.encode(s, false);
        assert_eq!(tok.decode(&ids[1..], false).expect("decode"), s);
    }
    let ids = tok.encode(" world", false);
    assert_eq!(ids[1..], [tok.token_id("\u{2581}world").expect("▁world")]);
}

/// The file holds the pretrained (not instruction-tuned) 270M model, so the
/// prompts are completions. The first token of each is the arg-max of an
/// independent float64 evaluation of the same file
/// (`scripts/gemma3_reference.py`: the ggml block layouts and the Gemma 3
/// graph written out in NumPy), ahead of its runner-up by more than one logit.
#[test]
fn greedy_completions_are_sensible() {
    let mut e = engine(2, false);
    for (prompt, first, want) in [
        (
            "The capital of France is Paris. The capital of Germany is",
            15687,
            "Berlin",
        ),
        ("Monday, Tuesday,", 10119, "Wednesday"),
    ] {
        let p = e.model().tokenizer.encode(prompt, false);
        let g = e
            .generate(&p, &greedy(8), &mut |_, _| {})
            .expect("generate");
        assert_eq!(g.tokens[0], first, "{prompt:?} went on {:?}", g.text);
        assert!(g.text.contains(want), "{prompt:?} went on {:?}", g.text);
    }
}

/// Generation and scoring give the same tokens and logits with the portable
/// kernels on one thread and the widest kernels on two and three.
#[test]
fn bit_identical_across_kernel_families_and_threads() {
    let mut reference = engine(1, true);
    let p = chat(&reference, "Write one sentence about the sea.");
    let want = reference
        .generate(&p, &greedy(12), &mut |_, _| {})
        .expect("generate");
    let scores = reference
        .score(&p, &want.tokens, &SamplingParams::greedy(), 4)
        .expect("score");
    for s in &scores {
        assert_eq!(s.argmax, s.claimed, "greedy output is its own arg-max");
    }
    for threads in [2, 3] {
        let mut e = engine(threads, false);
        let got = e
            .generate(&p, &greedy(12), &mut |_, _| {})
            .expect("generate");
        assert_eq!(want, got, "{threads} threads");
        let s = e
            .score(&p, &want.tokens, &SamplingParams::greedy(), 4)
            .expect("score");
        assert_eq!(scores, s, "{threads} threads");
    }
}
