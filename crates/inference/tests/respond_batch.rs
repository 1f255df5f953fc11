//! Regression guard for batched answering (`respond_batch`, which the
//! inference node uses for requests that wait together): each Result is
//! byte for byte the one `respond` gives alone, streamed text included, and
//! a request that cannot be answered fails alone.

use verinfer_inference::respond::{respond, respond_batch};
use verinfer_inference::{models, Engine, EngineOptions};
use verinfer_types::records::{Decoding, Input, Message, Request};
use verinfer_types::testing;
use verinfer_types::{Hash, SignedRecord};

/// Collects one request's streamed text.
type Sink<'a> = Box<dyn FnMut(u32, &str) + 'a>;

fn request(model: Hash, question: &str, temperature_milli: u32, max_tokens: u32) -> Request {
    let key = testing::key(1);
    let mut r = testing::request(model);
    r.input = Input::Messages(vec![Message {
        role: "user".into(),
        content: question.into(),
    }]);
    r.decoding = Decoding {
        temperature_milli,
        seed: 7,
        max_tokens,
        ..Decoding::default()
    };
    r.sign(&key).expect("sign");
    r
}

#[test]
fn batched_answers_equal_single_answers_and_failures_stay_alone() {
    let path = models::ensure_default_model().expect("the default model is needed");
    let id: Hash = models::file_sha256(&path)
        .expect("hash")
        .parse()
        .expect("hex");
    let mut engine = Engine::load(
        &path,
        EngineOptions {
            threads: 2,
            force_scalar: false,
        },
    )
    .expect("load");
    let node = testing::key(9);
    let requests = vec![
        request(id, "Name a colour.", 0, 12),
        request(id, "Write a line about the sea.", 800, 20),
        request(Hash::of(b"another model"), "Hi", 0, 4),
        request(id, &"word ".repeat(9000), 0, 4),
        request(id, "Count to five.", 0, 6),
    ];
    let mut texts: Vec<String> = vec![String::new(); requests.len()];
    let results = {
        let mut sinks: Vec<Sink<'_>> = texts
            .iter_mut()
            .map(|t| Box::new(move |_: u32, s: &str| t.push_str(s)) as Sink<'_>)
            .collect();
        let callbacks = sinks
            .iter_mut()
            .map(|b| b.as_mut() as &mut dyn FnMut(u32, &str))
            .collect();
        respond_batch(&mut engine, id, &requests, &node, callbacks)
    };
    assert!(results[2].is_err(), "another model's request fails alone");
    assert!(results[3].is_err(), "a prompt over the context fails alone");
    for i in [0, 1, 4] {
        let batched = results[i].as_ref().expect("answered");
        let alone =
            respond(&mut engine, id, &requests[i], &node, &mut |_, _| {}).expect("answered alone");
        assert_eq!(batched, &alone, "request {i}");
        assert_eq!(texts[i], alone.output_text, "streamed text of request {i}");
    }
}
