//! The verifier's CPU time per request against the inference node's, on the
//! real default model, for 16 to 512 output tokens and 1 and 2 threads.
//!
//! `cargo bench -p verinfer-verify --bench cost` (fetches the model if it is
//! not cached). A bench binary, not a timed test: figures go to
//! docs/benchmarks.md. The node answers a raw-text continuation (sampled,
//! temperature 0.8, top-k 40), which rarely ends before `max_tokens`; the
//! verifier runs the full check (rules plus one `score` pass). Prints the
//! median of three runs of each size.

#![allow(missing_docs, clippy::unwrap_used)]

#[path = "../tests/smol/mod.rs"]
mod smol;

use smol::{decoding, engine, model};
use verinfer_types::fixtures::key;
use verinfer_types::records::{Input, Request};
use verinfer_types::Hash;
use verinfer_verify::checker::Checker;

const PROMPT: &str = "The old lighthouse keeper climbed the spiral stairs every evening, \
    and on the night the storm came he noticed a small boat far out beyond the rocks. ";

fn request(model: Hash, max_tokens: u32, nonce: u8) -> Request {
    let d = decoding(max_tokens, 800, 11 + u64::from(nonce));
    smol::request_for(model, Input::Prompt(PROMPT.into()), d, nonce)
}

fn main() {
    let (path, id) = model();
    println!("| threads | output tokens | node CPU ms | verifier CPU ms | ratio |");
    println!("|---|---|---|---|---|");
    for threads in [1usize, 2] {
        let mut node = engine(&path, threads);
        let mut checker = Checker::new(engine(&path, threads), id, key(30));
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
        }
    }
}
