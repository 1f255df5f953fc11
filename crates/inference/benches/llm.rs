//! Throughput of the language-model engine on the default model, or on the
//! GGUF file named by `VERINFER_BENCH_MODEL`.
//!
//! `cargo bench -p verinfer-inference --bench llm` (fetch the model first:
//! `verinfer models fetch smollm2-135m`). `VERINFER_BENCH_ROUNDS` sets the
//! rounds (default 7), `VERINFER_BENCH_THREADS` the thread counts (default
//! `1,2`). Prints decode and prefill tokens/s
//! for 1 and 2 threads, and the cost of `score` over 256 output tokens as a
//! fraction of generating them, and the time per token of JSON-schema
//! constrained decoding against unconstrained (`constrained`). Generation
//! and scoring alternate, once per round, and the medians are reported (this host's memory bandwidth
//! varies from minute to minute, which moves decode most). `bandwidth` measures
//! the streaming read rate of the same thread count and the weight bytes a
//! decode step reads: their ratio is decode's ceiling. Not run in CI.

use std::time::Instant;

use verinfer_inference::{
    models, ChatMessage, Engine, EngineOptions, GenerateParams, SamplingParams,
};
use verinfer_types::records::Constraint;

/// Alternating runs of each measurement, unless `VERINFER_BENCH_ROUNDS` says.
const DEFAULT_ROUNDS: usize = 7;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let chosen = std::env::var_os("VERINFER_BENCH_MODEL").map(std::path::PathBuf::from);
    let path = match chosen.map_or_else(models::default_model_path, Ok) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let want = |name: &str| filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
    let text =
        "The quick brown fox jumps over the lazy dog while the sun sets behind the distant hills, \
                and a gentle breeze carries the scent of pine across the quiet valley. ";
    let rounds: usize = std::env::var("VERINFER_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(DEFAULT_ROUNDS);
    let thread_counts: Vec<usize> = std::env::var("VERINFER_BENCH_THREADS")
        .ok()
        .map(|v| v.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![1, 2]);
    for threads in thread_counts {
        let mut e = match Engine::load(
            &path,
            EngineOptions {
                threads,
                force_scalar: false,
            },
        ) {
            Ok(e) => e,
            Err(err) => {
                eprintln!("cannot load {}: {err}", path.display());
                std::process::exit(2);
            }
        };
        let tk = &e.model().tokenizer;
        let mut long = tk.encode(&text.repeat(40), false);
        long.truncate(512);
        if want("prefill") {
            let params = GenerateParams {
                max_tokens: 1,
                sampling: SamplingParams::greedy(),
                stop: Vec::new(),
                ..Default::default()
            };
            let _ = e.generate(&long[..64], &params, &mut |_, _| {});
            let mut times = Vec::new();
            for _ in 0..rounds {
                // Cold runs: the shared-prefix cache would serve the repeated
                // prompt (its gain is measured by the verification bench).
                e.prefix_cache().clear();
                let t = Instant::now();
                let _ = e.generate(&long, &params, &mut |_, _| {});
                times.push(t.elapsed().as_secs_f64());
            }
            println!(
                "prefill threads={threads}: {:.1} tokens/s (512-token prompt, median of {rounds})",
                512.0 / median(times)
            );
        }
        let prompt = e
            .chat_prompt(&[ChatMessage::new(
                "user",
                "Write a long story about a lighthouse keeper.",
            )])
            .unwrap_or_default();
        let params = GenerateParams {
            max_tokens: 256,
            sampling: SamplingParams {
                temperature_milli: 700,
                top_k: 40,
                top_p_milli: 950,
                seed: 1,
            },
            stop: Vec::new(),
            ..Default::default()
        };
        if want("decode") || want("score") {
            let (mut gens, mut decodes, mut scores) = (Vec::new(), Vec::new(), Vec::new());
            let mut n = 0;
            let mut ok = true;
            for _ in 0..rounds {
                let mut stamps = Vec::new();
                e.prefix_cache().clear();
                let t0 = Instant::now();
                let g = match e.generate(&prompt, &params, &mut |_, _| stamps.push(Instant::now()))
                {
                    Ok(g) => g,
                    Err(err) => {
                        eprintln!("generate failed: {err}");
                        std::process::exit(1);
                    }
                };
                gens.push(t0.elapsed().as_secs_f64());
                n = g.tokens.len();
                if n > 1 {
                    let span = (stamps[stamps.len() - 1] - stamps[0]).as_secs_f64();
                    decodes.push((n - 1) as f64 / span);
                }
                if want("score") {
                    e.prefix_cache().clear();
                    let t = Instant::now();
                    let s = e.score(&prompt, &g.tokens, &params.sampling, 5);
                    scores.push(t.elapsed().as_secs_f64());
                    ok &= s
                        .map(|v| v.iter().all(|p| p.sampled == p.claimed))
                        .unwrap_or(false);
                }
            }
            if want("decode") && !decodes.is_empty() {
                let rate = median(decodes);
                println!(
                    "decode threads={threads}: {rate:.1} tokens/s ({n} tokens after a {}-token prompt, median of {rounds}; weights read {:.1} GB/s)",
                    prompt.len(),
                    rate * e.model().decode_bytes() as f64 / 1e9
                );
            }
            if want("score") {
                let (g, s) = (median(gens), median(scores));
                println!(
                    "score threads={threads}: {n} tokens in {s:.3}s vs generation {g:.3}s = {:.1}% (medians of {rounds}; recomputed: {ok})",
                    100.0 * s / g
                );
            }
        }
        if want("constrained") {
            constrained(&mut e, &prompt, &params, threads, rounds);
        }
        if want("bandwidth") {
            let bytes = e.model().decode_bytes() as f64;
            let bw = read_bandwidth(threads, rounds);
            println!(
                "bandwidth threads={threads}: streaming read {:.1} GB/s; decode reads {:.1} MB of weights per token, so at most {:.1} tokens/s (median of {rounds})",
                bw / 1e9,
                bytes / 1e6,
                bw / bytes
            );
        }
    }
}

/// Bytes per second `threads` threads read from memory, each streaming its
/// share of a 1 GiB buffer (far larger than any cache): decode's ceiling,
/// since every step reads all the weights once.
fn read_bandwidth(threads: usize, rounds: usize) -> f64 {
    let words = (1usize << 30) / 8;
    // Distinct values, so the pages are really backed.
    let buf: Vec<u64> = (0..words as u64).collect();
    let chunk = words.div_ceil(threads);
    let mut rates = Vec::new();
    for _ in 0..rounds.max(3) {
        let t = Instant::now();
        let sum: u64 = std::thread::scope(|s| {
            let parts: Vec<_> = buf
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        // Eight independent sums keep enough loads in flight.
                        let mut acc = [0u64; 8];
                        for c in part.chunks_exact(8) {
                            for (a, &x) in acc.iter_mut().zip(c) {
                                *a = a.wrapping_add(x);
                            }
                        }
                        acc.iter().fold(0u64, |a, &b| a.wrapping_add(b))
                    })
                })
                .collect();
            parts
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0, u64::wrapping_add)
        });
        let dt = t.elapsed().as_secs_f64();
        std::hint::black_box(sum);
        rates.push((words * 8) as f64 / dt);
    }
    median(rates)
}

/// Time per decoded token with and without a JSON-schema constraint, on the
/// same prompt and sampling (the mask computed and applied at every step).
fn constrained(
    e: &mut Engine,
    prompt: &[u32],
    params: &GenerateParams,
    threads: usize,
    rounds: usize,
) {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"title": {"type": "string"}, "story": {"type": "string", "minLength": 2000}},
        "required": ["title", "story"],
        "additionalProperties": false,
    });
    let with = GenerateParams {
        constraint: Some(Constraint::JsonSchema(schema)),
        ..params.clone()
    };
    let per_token = |e: &mut Engine, p: &GenerateParams| -> (f64, usize) {
        let mut stamps = Vec::new();
        let g = e
            .generate(prompt, p, &mut |_, _| stamps.push(Instant::now()))
            .unwrap_or_else(|err| {
                eprintln!("generate failed: {err}");
                std::process::exit(1);
            });
        let n = g.tokens.len();
        let span = (stamps[stamps.len() - 1] - stamps[0]).as_secs_f64();
        (span / (n - 1) as f64, n)
    };
    let (mut free, mut masked, mut n) = (Vec::new(), Vec::new(), (0, 0));
    for _ in 0..rounds {
        let (t, a) = per_token(e, params);
        free.push(t);
        let (t, b) = per_token(e, &with);
        masked.push(t);
        n = (a, b);
    }
    let (f, m) = (median(free), median(masked));
    println!(
        "constrained threads={threads}: {:.3} ms/token vs {:.3} ms/token unconstrained = {:+.1}% ({} and {} tokens, medians of {rounds})",
        m * 1e3,
        f * 1e3,
        100.0 * (m / f - 1.0),
        n.1,
        n.0
    );
}
