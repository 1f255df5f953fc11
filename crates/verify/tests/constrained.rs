#![allow(clippy::unwrap_used)]
//! Constrained decoding on the real default model (SmolLM2-135M-Instruct):
//! twenty varied JSON schemas each give a complete document that validates,
//! and verifiers accept it; a node that steps outside the mask is rejected
//! with `outside_mask` at the position it did.

mod smol;

use serde_json::{json, Value};
use smol::*;
use verinfer_inference::respond::Fault;
use verinfer_types::records::{Constraint, Decision, FinishReason, Request};
use verinfer_types::testing::key;
use verinfer_verify::checker::Checker;

/// Schemas covering types, nested objects, arrays with item bounds, enums,
/// const, optional fields, anyOf and patterns, each with a question.
fn schemas() -> Vec<(&'static str, Value)> {
    // Strings and integers bounded: the small model may otherwise repeat a
    // character until `max_tokens` (an honest `length` answer, but not a
    // complete document).
    let name = json!({"type": "string", "maxLength": 24});
    let int = json!({"type": "integer", "minimum": -1000, "maximum": 1000});
    vec![
        (
            "Give a person with a name and an age.",
            json!({
            "type": "object",
            "properties": {"name": name, "age": {"type": "integer", "minimum": 0, "maximum": 120}},
            "required": ["name", "age"], "additionalProperties": false}),
        ),
        (
            "Is the sky blue?",
            json!({
            "type": "object", "properties": {"answer": {"type": "boolean"}},
            "required": ["answer"], "additionalProperties": false}),
        ),
        (
            "Pick a colour.",
            json!({
            "type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]}},
            "required": ["colour"], "additionalProperties": false}),
        ),
        (
            "List three fruits.",
            json!({
            "type": "object",
            "properties": {"fruits": {"type": "array", "items": name, "minItems": 3, "maxItems": 3}},
            "required": ["fruits"], "additionalProperties": false}),
        ),
        (
            "Give a city and its country.",
            json!({
            "type": "object",
            "properties": {"city": {"type": "object",
                "properties": {"name": name, "country": name},
                "required": ["name", "country"], "additionalProperties": false}},
            "required": ["city"], "additionalProperties": false}),
        ),
        (
            "What is 2 + 2?",
            json!({
            "type": "object", "properties": {"result": int},
            "required": ["result"], "additionalProperties": false}),
        ),
        (
            "Describe a book.",
            json!({
            "type": "object",
            "properties": {"title": name, "year": {"type": "integer", "minimum": 1000, "maximum": 2100},
                "subtitle": name},
            "required": ["title", "year"], "additionalProperties": false}),
        ),
        (
            "Classify the sentence 'I love it' as positive or negative.",
            json!({
            "type": "object",
            "properties": {"label": {"enum": ["positive", "negative"]}, "kind": {"const": "sentiment"}},
            "required": ["label", "kind"], "additionalProperties": false}),
        ),
        (
            "Give a number or a word.",
            json!({
            "type": "object",
            "properties": {"value": {"anyOf": [int, name]}},
            "required": ["value"], "additionalProperties": false}),
        ),
        (
            "Give two points with x and y.",
            json!({
            "type": "object",
            "properties": {"points": {"type": "array", "minItems": 2, "maxItems": 2, "items": {
                "type": "object", "properties": {"x": int, "y": int},
                "required": ["x", "y"], "additionalProperties": false}}},
            "required": ["points"], "additionalProperties": false}),
        ),
        (
            "Give a date.",
            json!({
            "type": "object",
            "properties": {"date": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}},
            "required": ["date"], "additionalProperties": false}),
        ),
        (
            "Name an animal and say if it can fly.",
            json!({
            "type": "object",
            "properties": {"animal": name, "flies": {"type": "boolean"}, "legs": {"type": "integer", "minimum": 0, "maximum": 8}},
            "required": ["animal", "flies"], "additionalProperties": false}),
        ),
        (
            "Give a list of up to three tags.",
            json!({
            "type": "object",
            "properties": {"tags": {"type": "array", "items": {"enum": ["news", "sport", "music", "art"]},
                "maxItems": 3}},
            "required": ["tags"], "additionalProperties": false}),
        ),
        (
            "Give a user with an address.",
            json!({
            "type": "object",
            "properties": {"user": {"type": "object", "properties": {
                "name": name,
                "address": {"type": "object", "properties": {"street": name, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}},
                    "required": ["street", "zip"], "additionalProperties": false}},
                "required": ["name", "address"], "additionalProperties": false}},
            "required": ["user"], "additionalProperties": false}),
        ),
        (
            "Answer yes or no, with a reason.",
            json!({
            "type": "object",
            "properties": {"answer": {"enum": ["yes", "no"]}, "reason": {"type": "string", "maxLength": 40}},
            "required": ["answer"], "additionalProperties": false}),
        ),
        (
            "Give a shape.",
            json!({
            "type": "object",
            "properties": {"shape": {"anyOf": [
                {"type": "object", "properties": {"circle": {"type": "integer", "minimum": 1, "maximum": 99}},
                    "required": ["circle"], "additionalProperties": false},
                {"type": "object", "properties": {"square": {"type": "integer", "minimum": 1, "maximum": 99}},
                    "required": ["square"], "additionalProperties": false}]}},
            "required": ["shape"], "additionalProperties": false}),
        ),
        (
            "Give the temperature, or nothing if unknown.",
            json!({
            "type": "object",
            "properties": {"celsius": {"anyOf": [int, {"type": "null"}]}},
            "required": ["celsius"], "additionalProperties": false}),
        ),
        (
            "Rate a film from 1 to 5.",
            json!({
            "type": "object",
            "properties": {"film": name, "stars": {"type": "integer", "minimum": 1, "maximum": 5}},
            "required": ["film", "stars"], "additionalProperties": false}),
        ),
        (
            "Give a matrix of two rows of two numbers.",
            json!({
            "type": "object",
            "properties": {"rows": {"type": "array", "minItems": 2, "maxItems": 2, "items": {
                "type": "array", "minItems": 2, "maxItems": 2, "items": int}}},
            "required": ["rows"], "additionalProperties": false}),
        ),
        (
            "Give any JSON object about the weather.",
            json!({
            "type": "object",
            "properties": {"sunny": {"type": "boolean"}, "wind": {"enum": ["low", "high"]},
                "notes": {"type": "array", "items": name, "maxItems": 2}},
            "required": ["sunny", "wind"], "additionalProperties": false}),
        ),
    ]
}

fn constrained(id: verinfer_types::Hash, q: &str, c: Constraint, t: u32, nonce: u8) -> Request {
    let mut d = decoding(160, t, 7 + u64::from(nonce));
    d.constraint = Some(c);
    request(id, q, d, nonce)
}

/// Twenty schemas, greedy and sampled in turn: each answer ends with an end
/// token, parses, validates against its schema, and is accepted.
#[test]
fn twenty_schemas_give_valid_verified_output() {
    let (path, id) = model();
    let mut node = engine(&path, 2);
    let mut c = Checker::new(engine(&path, 2), id, key(30));
    let started = std::time::Instant::now();
    let all = schemas();
    assert_eq!(all.len(), 20);
    for (i, (q, schema)) in all.into_iter().enumerate() {
        let t = if i % 2 == 0 { 0 } else { 700 };
        let req = constrained(id, q, Constraint::JsonSchema(schema.clone()), t, i as u8);
        let res = answer(&mut node, &req);
        eprintln!(
            "{q} -> {} ({} tokens)",
            res.output_text,
            res.output_tokens.len()
        );
        assert_eq!(
            res.finish_reason,
            FinishReason::Eos,
            "{q}: {}",
            res.output_text
        );
        let v: Value = serde_json::from_str(&res.output_text).unwrap();
        let validator = jsonschema::validator_for(&schema).unwrap();
        assert!(validator.is_valid(&v), "{q}: {v}");
        let verdict = c.verdict(&req, &res).unwrap();
        assert_eq!(
            verdict.decision,
            Decision::Accept,
            "{q}: {:?}",
            verdict.reason
        );
    }
    eprintln!("twenty schemas in {:?}", started.elapsed());
}

/// The fault matrix for constraints: `off-mask` at the first, a middle and
/// the next-to-last position is `outside_mask` there; a JSON-object answer
/// edited outside its mask too; the honest answers are accepted.
#[test]
fn stepping_outside_the_mask_is_caught() {
    let (path, id) = model();
    let mut node = engine(&path, 2);
    let mut c = Checker::new(engine(&path, 2), id, key(30));
    let all = schemas();
    let cases = [
        (all[0].0, Constraint::JsonSchema(all[0].1.clone()), 0),
        (all[0].0, Constraint::JsonObject, 0),
        (all[3].0, Constraint::JsonSchema(all[3].1.clone()), 700),
    ];
    for (i, (q, constraint, t)) in cases.into_iter().enumerate() {
        let req = constrained(id, q, constraint, t, 40 + i as u8);
        let honest = answer(&mut node, &req);
        let v = c.verdict(&req, &honest).unwrap();
        assert_eq!(v.decision, Decision::Accept, "{q}: {:?}", v.reason);
        let n = honest.output_tokens.len() as u32;
        eprintln!("{q} t={t}: {} ({n} tokens)", honest.output_text);
        assert!(n >= 3, "{q}: too short");
        for pos in [0, n / 2, n - 2] {
            let bad = faulty(&mut node, &req, &honest, &Fault::OffMask(pos)).unwrap();
            assert_eq!(
                rejected(&mut c, &req, &bad),
                ("outside_mask".to_string(), Some(pos)),
                "{q} t={t} off-mask:{pos}"
            );
        }
    }
    // An unconstrained request has no mask to step out of.
    let plain = request(id, "Hi", decoding(8, 0, 1), 60);
    let honest = answer(&mut node, &plain);
    assert!(faulty(&mut node, &plain, &honest, &Fault::OffMask(0)).is_err());
}
