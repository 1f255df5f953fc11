//! The shared-prefix KV cache on tiny synthetic models: runs that start
//! from a cached prefix give the bits of a cold run (every logit, at several
//! split points, thread counts and kernel families), across engines sharing
//! one cache, and never across models.

use verinfer_inference::testing::{tiny_model, TinySpec};
use verinfer_inference::{
    Engine, EngineOptions, GenerateParams, PrefixCache, PrefixLimits, SamplingParams,
};

fn load(bytes: &[u8], threads: usize, force_scalar: bool) -> (tempfile::TempDir, Engine) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, bytes).expect("write temp model");
    let e = Engine::load(
        &path,
        EngineOptions {
            threads,
            force_scalar,
        },
    )
    .expect("load tiny model");
    (dir, e)
}

fn cold(bytes: &[u8]) -> (tempfile::TempDir, Engine) {
    let (dir, mut e) = load(bytes, 1, true);
    e.set_prefix_limits(PrefixLimits::OFF);
    (dir, e)
}

/// Every logit at every scored position, as bits (the scores list the whole
/// vocabulary), with the seeded sampler's picks.
fn all_logits(e: &mut Engine, prompt: &[u32], output: &[u32]) -> Vec<(u32, Vec<(u32, u32)>)> {
    let vocab = e.model().config.vocab;
    let sampling = SamplingParams {
        temperature_milli: 800,
        top_k: 10,
        top_p_milli: 900,
        seed: 5,
    };
    e.score(prompt, output, &sampling, vocab)
        .expect("score")
        .into_iter()
        .map(|p| {
            let top = p.top.iter().map(|c| (c.token, c.logit.to_bits())).collect();
            (p.sampled, top)
        })
        .collect()
}

fn specs() -> Vec<TinySpec> {
    vec![
        TinySpec::default(),
        TinySpec {
            arch: "gemma3".into(),
            n_layer: 6,
            ..TinySpec::default()
        },
    ]
}

/// 60 tokens (the tiny gemma3's window is 64): prompts cross several
/// 16-position key panels.
fn sequence() -> Vec<u32> {
    (0..60).map(|i| 1 + (i * 37 + 11) % 250).collect()
}

#[test]
fn scores_from_a_cached_prefix_equal_a_cold_run_bit_for_bit() {
    let seq = sequence();
    let (prompt, output) = seq.split_at(50);
    for spec in specs() {
        let bytes = tiny_model(&spec);
        let want = all_logits(&mut cold(&bytes).1, prompt, output);
        assert_eq!(want.len(), output.len());
        for (threads, scalar) in [(1, false), (2, false), (3, false), (2, true)] {
            for split in [1, 15, 16, 17, 33, 49, 55, 59] {
                let (_dir, mut e) = load(&bytes, threads, scalar);
                // Warm: a check of a shorter result leaves `seq[..split]`.
                let cut = split.min(49);
                let _ = all_logits(&mut e, &seq[..cut], &seq[cut..=split]);
                let before = e.prefix_cache().stats().reused_tokens;
                let got = all_logits(&mut e, prompt, output);
                let reused = e.prefix_cache().stats().reused_tokens - before;
                let at = format!(
                    "{} threads {threads} scalar {scalar} split {split}",
                    spec.arch
                );
                // At most the prompt but its last token comes from the cache.
                assert_eq!(reused, cut as u64, "{at}");
                assert!(want == got, "{at}: logits differ from a cold run");
            }
        }
    }
}

#[test]
fn a_conversation_continued_from_the_cache_generates_what_a_cold_run_does() {
    let params = GenerateParams {
        max_tokens: 8,
        sampling: SamplingParams {
            temperature_milli: 900,
            top_k: 20,
            top_p_milli: 950,
            seed: 3,
        },
        top_logprobs: Some(3),
        ..GenerateParams::default()
    };
    for spec in specs() {
        let bytes = tiny_model(&spec);
        let (_c, mut cold) = cold(&bytes);
        for threads in [1, 2, 3] {
            let (_d, mut e) = load(&bytes, threads, false);
            // Five turns: each prompt is the last one, its answer and more.
            let mut prompt: Vec<u32> = vec![1, 40, 41, 42, 43, 44];
            let mut held = 0;
            for turn in 0..5u32 {
                let before = e.prefix_cache().stats().reused_tokens;
                let g = e.generate(&prompt, &params, &mut |_, _| {}).expect("warm");
                let reused = e.prefix_cache().stats().reused_tokens - before;
                let want = cold
                    .generate(&prompt, &params, &mut |_, _| {})
                    .expect("cold");
                let at = format!("{} threads {threads} turn {turn}", spec.arch);
                assert_eq!(g, want, "{at}");
                assert_eq!(reused as usize, held, "{at}");
                // The answer's last token never ran: all before it is reused next.
                held = prompt.len() + g.tokens.len() - 1;
                prompt.extend(&g.tokens);
                prompt.extend([2 + turn, 60 + turn, 61]);
            }
        }
    }
}

#[test]
fn engines_share_a_cache_only_for_the_same_model_file() {
    let seq = sequence();
    let (prompt, output) = seq.split_at(50);
    let a = tiny_model(&TinySpec::default());
    let b = tiny_model(&TinySpec {
        seed: 2,
        ..TinySpec::default()
    });
    let shared = PrefixCache::new(PrefixLimits::default());
    let (_a1, mut a1) = load(&a, 1, false);
    let (_a2, mut a2) = load(&a, 3, false);
    let (_b1, mut b1) = load(&b, 2, false);
    a1.share_prefix_cache(shared.clone(), [1; 32]);
    a2.share_prefix_cache(shared.clone(), [1; 32]);
    b1.share_prefix_cache(shared.clone(), [2; 32]);
    let want_a = all_logits(&mut cold(&a).1, prompt, output);
    let want_b = all_logits(&mut cold(&b).1, prompt, output);
    assert!(want_a != want_b);
    assert!(all_logits(&mut a1, prompt, output) == want_a);
    // The other file's engine finds nothing of the first's.
    assert!(all_logits(&mut b1, prompt, output) == want_b);
    assert_eq!(shared.stats().hits, 0);
    // The second engine of the same file starts after the first's prompt.
    assert!(all_logits(&mut a2, prompt, output) == want_a);
    let s = shared.stats();
    assert_eq!((s.hits, s.reused_tokens), (1, 49));
}

#[test]
fn one_requesters_prefixes_never_serve_another() {
    let bytes = tiny_model(&TinySpec::default());
    let (_d, mut e) = load(&bytes, 1, false);
    let scoped = |who: u8| GenerateParams {
        max_tokens: 4,
        cache_scope: Some([who; 32]),
        ..GenerateParams::default()
    };
    let prompt: Vec<u32> = vec![1, 40, 41, 42, 43, 44, 45, 46];
    let reused = |e: &mut Engine, params: &GenerateParams| {
        let before = e.prefix_cache().stats().reused_tokens;
        let g = e
            .generate(&prompt, params, &mut |_, _| {})
            .expect("generate");
        (e.prefix_cache().stats().reused_tokens - before, g)
    };
    let (first, alice) = reused(&mut e, &scoped(1));
    assert_eq!(first, 0);
    // Another requester's identical prompt runs cold (nothing to time) ...
    let (other, bob) = reused(&mut e, &scoped(2));
    assert_eq!((other, &bob), (0, &alice));
    // ... and its own repeat is served from its own entry.
    let (again, _) = reused(&mut e, &scoped(2));
    assert_eq!(again as usize, prompt.len() - 1);
}

#[test]
fn a_warmed_prompt_scores_from_the_cache_as_a_cold_run_does() {
    let seq = sequence();
    let (prompt, output) = seq.split_at(50);
    for spec in specs() {
        let bytes = tiny_model(&spec);
        let want = all_logits(&mut cold(&bytes).1, prompt, output);
        let (_dir, mut e) = load(&bytes, 2, false);
        // Everything but the last prompt token, in chunks.
        assert_eq!(e.warm(prompt, None, &mut || false).expect("warm"), 49);
        // Already held: nothing more to compute.
        assert_eq!(e.warm(prompt, None, &mut || false).expect("warm"), 0);
        let before = e.prefix_cache().stats().reused_tokens;
        assert!(all_logits(&mut e, prompt, output) == want, "{}", spec.arch);
        assert_eq!(e.prefix_cache().stats().reused_tokens - before, 49);
        // Another scope gets nothing from it; a stopped warm-up computes nothing.
        let (_d2, mut f) = load(&bytes, 1, false);
        assert_eq!(
            f.warm(prompt, Some([1; 32]), &mut || true).expect("warm"),
            0
        );
        assert_eq!(f.prefix_cache().stats().entries, 0);
    }
}
