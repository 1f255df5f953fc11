#![allow(clippy::unwrap_used)]
//! The verifier's CPU cost against the inference node's on the real default
//! model. Alone in its test binary, so process CPU time counts only this.

mod smol;

use smol::*;
use verinfer_types::fixtures::key;
use verinfer_verify::checker::Checker;

/// A 256-token honest answer is accepted; the verifier's CPU time against
/// the node's is printed, not asserted (figures belong in benchmarks, not in
/// timed tests: see docs/benchmarks.md).
#[test]
fn verifier_costs_a_fraction_of_inference() {
    let (path, id) = model();
    let mut node = engine(&path, 2);
    let mut c = Checker::new(engine(&path, 2), id, key(30));
    let mut d = decoding(256, 800, 5);
    d.top_k = 40;
    let req = request(id, "Tell me a long story about a lighthouse keeper.", d, 9);
    let t = cpu_time::ProcessTime::now();
    let res = answer(&mut node, &req);
    let infer = t.elapsed().as_micros() as u64;
    let outcome = c.check(&req, &res).unwrap();
    assert_eq!(outcome.rejection, None);
    let ratio = outcome.cost_micros as f64 / infer as f64;
    eprintln!(
        "{} tokens: inference {} us CPU, verification {} us CPU, ratio {:.3}",
        res.output_tokens.len(),
        infer,
        outcome.cost_micros,
        ratio
    );
}

/// Where the verifier's time goes: the score pass against the whole check.
#[test]
#[ignore = "diagnostic"]
fn score_pass_share_of_the_check() {
    use verinfer_verify::checker::Recompute;
    let (path, id) = model();
    let mut node = engine(&path, 2);
    let mut e = engine(&path, 2);
    let req = request(
        id,
        "Tell me a long story about a lighthouse keeper.",
        decoding(256, 800, 5),
        9,
    );
    let res = answer(&mut node, &req);
    let prompt = e.prompt_tokens(&req.input).unwrap();
    for top_n in [1, 8] {
        let t = cpu_time::ProcessTime::now();
        let w = std::time::Instant::now();
        let s =
            Recompute::score(&mut e, &prompt, &res.output_tokens, &req.decoding, top_n).unwrap();
        eprintln!(
            "score top_n {top_n}: {} positions, {} us CPU, {} us wall",
            s.len(),
            t.elapsed().as_micros(),
            w.elapsed().as_micros()
        );
    }
    let t = cpu_time::ProcessTime::now();
    let w = std::time::Instant::now();
    let g = e
        .generate(
            &prompt,
            &verinfer_inference::GenerateParams {
                max_tokens: 1,
                ..Default::default()
            },
            &mut |_, _| {},
        )
        .unwrap();
    eprintln!(
        "prefill of {} prompt tokens + 1: {} us CPU, {} us wall",
        g.usage.prompt_tokens,
        t.elapsed().as_micros(),
        w.elapsed().as_micros()
    );
}
