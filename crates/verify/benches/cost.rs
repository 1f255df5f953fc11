//! The verifier's CPU time per request against the inference node's, on the
//! real default model, for 16 to 512 output tokens and 1 and 2 threads.
//!
//! `cargo bench -p verinfer-verify --bench cost` (fetches the model if it is
//! not cached). A bench binary, not a timed test: figures go to
//! docs/benchmarks.md. The node answers a raw-text continuation (sampled,
//! temperature 0.8, top-k 40), which rarely ends before `max_tokens`; the
//! verifier runs the full check (rules plus one `score` pass). Prints the
//! median of three runs of each size, every run cold (no cached prefix).
//!
//! Then a five-turn chat (64 tokens per answer), each turn's messages
//! holding the earlier turns' questions and answers: per turn, both sides'
//! CPU time cold and with the shared-prefix KV cache, whose engines start
//! after the earlier turns (the answers are asserted equal). Medians of
//! three conversations. `VERINFER_BENCH_CHAT_ONLY=1` runs the chat alone.
//!
//! Both sides run the kernel family `VERINFER_LLM_KERNELS` selects (the
//! fastest the CPU has by default); the output names it, and the ratio column
//! is the verifier's cost as a fraction of generation for that family.

#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../tests/smol/mod.rs"]
mod smol;

use smol::{decoding, engine, model};
use verinfer_inference::{Engine, PrefixLimits};
use verinfer_types::records::{Input, Message, Request};
use verinfer_types::testing::key;
use verinfer_types::Hash;
use verinfer_verify::checker::Checker;

const PROMPT: &str = "The old lighthouse keeper climbed the spiral stairs every evening, \
    and on the night the storm came he noticed a small boat far out beyond the rocks. ";

fn request(model: Hash, max_tokens: u32, nonce: u8) -> Request {
    let d = decoding(max_tokens, 800, 11 + u64::from(nonce));
    smol::request_for(model, Input::Prompt(PROMPT.into()), d, nonce)
}

fn cold(path: &std::path::Path, threads: usize) -> Engine {
    let mut e = engine(path, threads);
    e.set_prefix_limits(PrefixLimits::OFF);
    e
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Node and verifier CPU ms of one request on `node` and `checker`, and the
/// answer's text.
fn timed(node: &mut Engine, checker: &mut Checker<Engine>, req: &Request) -> (f64, f64, String) {
    let t = cpu_time::ProcessTime::now();
    let res = smol::answer(node, req);
    let infer = t.elapsed().as_micros() as f64 / 1e3;
    let outcome = checker.check(req, &res).unwrap();
    assert_eq!(outcome.rejection, None, "an honest answer was rejected");
    (infer, outcome.cost_micros as f64 / 1e3, res.output_text)
}

const QUESTIONS: [&str; 5] = [
    "Tell me about lighthouses.",
    "Why were they built on rocks?",
    "Who kept them running?",
    "What did a keeper do at night?",
    "Are any still in use today?",
];

fn chat(path: &std::path::Path, id: Hash, threads: usize) {
    println!();
    println!("five-turn chat, {threads} thread(s), 64 tokens per answer, CPU ms (median of 3):");
    println!("| turn | prompt tokens | node cold | node cached | verifier cold | verifier cached | verifier cached / turn 1 cold |");
    println!("|---|---|---|---|---|---|---|");
    let mut rows = vec![Vec::new(); QUESTIONS.len()];
    for round in 0..3u8 {
        let (mut node, mut node_c) = (cold(path, threads), engine(path, threads));
        let mut checker = Checker::new(cold(path, threads), id, key(30));
        let mut checker_c = Checker::new(engine(path, threads), id, key(30));
        let mut messages = Vec::new();
        for (turn, q) in QUESTIONS.iter().enumerate() {
            messages.push(Message {
                role: "user".into(),
                content: (*q).into(),
            });
            let d = decoding(64, 700, 5 + u64::from(round));
            let req = smol::request_for(id, Input::Messages(messages.clone()), d, turn as u8);
            let prompt = verinfer_inference::respond::prompt_tokens(&node, &req.input).unwrap();
            let (n0, v0, text) = timed(&mut node, &mut checker, &req);
            let (n1, v1, text_c) = timed(&mut node_c, &mut checker_c, &req);
            assert_eq!(text, text_c, "the cache changed an answer");
            rows[turn].push((prompt.len() as f64, n0, n1, v0, v1));
            messages.push(Message {
                role: "assistant".into(),
                content: text,
            });
        }
    }
    let first = median(rows[0].iter().map(|r| r.3).collect());
    for (turn, r) in rows.iter().enumerate() {
        let m = |f: fn(&(f64, f64, f64, f64, f64)) -> f64| median(r.iter().map(f).collect());
        println!(
            "| {} | {:.0} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} |",
            turn + 1,
            m(|r| r.0),
            m(|r| r.1),
            m(|r| r.2),
            m(|r| r.3),
            m(|r| r.4),
            m(|r| r.4) / first
        );
    }
}

fn main() {
    let (path, id) = model();
    println!(
        "kernel family: {} (VERINFER_LLM_KERNELS selects another)",
        cold(&path, 1).kernels()
    );
    if std::env::var_os("VERINFER_BENCH_CHAT_ONLY").is_none() {
        single(&path, id);
    }
    for threads in [1usize, 2] {
        chat(&path, id, threads);
    }
}

fn single(path: &std::path::Path, id: Hash) {
    println!("| threads | output tokens | node CPU ms | verifier CPU ms | verifier / node |");
    println!("|---|---|---|---|---|");
    let mut at_256 = Vec::new();
    for threads in [1usize, 2] {
        let mut node = cold(path, threads);
        let mut checker = Checker::new(cold(path, threads), id, key(30));
        for n in [16u32, 64, 128, 256, 512] {
            let mut runs = Vec::new();
            for i in 0..3u8 {
                let req = request(id, n, i);
                let t = cpu_time::ProcessTime::now();
                let res = smol::answer(&mut node, &req);
                let infer = t.elapsed().as_micros() as f64;
                let outcome = checker.check(&req, &res).unwrap();
                assert_eq!(outcome.rejection, None, "an honest answer was rejected");
                runs.push((res.output_tokens.len(), infer, outcome.cost_micros as f64));
            }
            runs.sort_by(|a, b| (a.2 / a.1).total_cmp(&(b.2 / b.1)));
            let (tokens, infer, verify) = runs[1];
            println!(
                "| {threads} | {tokens} | {:.0} | {:.0} | {:.3} |",
                infer / 1e3,
                verify / 1e3,
                verify / infer
            );
            if n == 256 {
                at_256.push((threads, verify / infer));
            }
        }
    }
    for (threads, ratio) in at_256 {
        println!(
            "verification / generation at 256 tokens, {threads} thread(s): {:.1} %",
            100.0 * ratio
        );
    }
}
