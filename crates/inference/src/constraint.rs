//! Constrained decoding: the token mask of a request's [`Constraint`].
//!
//! A constraint (a JSON schema, or any JSON object) is compiled by
//! `llguidance` into a grammar over bytes and matched against the model's
//! vocabulary. At each output position the mask is the set of tokens that
//! keep the output a valid prefix of a matching document; the end tokens are
//! allowed exactly when the output so far is a complete document (or when no
//! other token is, so generation can always end). The mask is a
//! deterministic function of (vocabulary, output tokens so far, constraint):
//! the inference node applies it before picking each token and a verifier
//! recomputes it at every position, so a token outside it is provable.
//!
//! The schema is compiled from its canonical form (RFC 8785 key order), so
//! the grammar does not depend on how the request travelled: properties are
//! generated in that order, with no whitespace between tokens of the JSON
//! syntax. A keyword the compiler does not implement is an error naming it.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::toktrie::{ApproximateTokEnv, SimpleVob, TokEnv, TokRxInfo, TokTrie};
use llguidance::ParserFactory;
use serde_json::{json, Value};
use verinfer_types::records::{Constraint, ToolCalls, ToolFunction};

use crate::tokenizer::Tokenizer;

/// The `llguidance` version compiled in. It decides the masks, so it is part
/// of the engine version (a test checks it against the pinned dependency).
pub const LLGUIDANCE_VERSION: &str = "1.9.1";

/// Why a constraint cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConstraintError {
    /// The schema uses a keyword the grammar compiler does not implement.
    #[error("unsupported JSON schema keyword `{0}`")]
    Unsupported(String),
    /// The schema is malformed or cannot be satisfied.
    #[error("invalid JSON schema: {0}")]
    Invalid(String),
}

/// The compiler options, fixed: they are part of the decoding rule.
fn options() -> Value {
    json!({
        "whitespace_flexible": false,
        "item_separator": ",",
        "key_separator": ":",
        "lenient": false,
    })
}

/// `schema` in canonical key order (RFC 8785), so the grammar does not
/// depend on how the request travelled.
fn canonical(schema: &Value) -> Result<Value, ConstraintError> {
    let bytes = verinfer_types::canonical::to_canonical(schema).map_err(|e| {
        ConstraintError::Invalid(format!("{e} (numbers in a schema must be integers)"))
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ConstraintError::Invalid(e.to_string()))
}

/// `schema` (canonical) with the fixed compiler options.
fn with_options(mut schema: Value) -> Result<Value, ConstraintError> {
    let obj = match &mut schema {
        Value::Object(o) => o,
        // `true` (anything) and `false` (nothing) are valid schemas, but an
        // answer to a schema is a document; keep to objects.
        _ => {
            return Err(ConstraintError::Invalid(
                "the schema must be a JSON object".into(),
            ))
        }
    };
    if obj.contains_key("x-guidance") {
        return Err(ConstraintError::Unsupported("x-guidance".into()));
    }
    obj.insert("x-guidance".into(), options());
    Ok(schema)
}

/// The schema of one call: `{"name": NAME, "parameters": ARGUMENTS}`
/// (keys in canonical order, so `name` comes first).
fn call_schema(f: &ToolFunction) -> Result<Value, ConstraintError> {
    // Checked on its own first, so an error names the function's schema.
    with_options(canonical(&f.parameters)?)?;
    Ok(json!({
        "type": "object",
        "properties": {"name": {"const": f.name}, "parameters": f.parameters},
        "required": ["name", "parameters"],
        "additionalProperties": false,
    }))
}

/// Free text of a `text` tool constraint: anything whose first character
/// other than whitespace is not `{`, so an answer that starts like a call
/// object is a call and follows its function's schema.
const FREE_TEXT: &str = r"/\s*[^{\s][\s\S]*/";

/// The Lark grammar of a [`Constraint::ToolCalls`]: calls one per line
/// (one when not `parallel`), or free text when `text` allows it, or
/// nothing (an answer that ends at once).
fn tool_grammar(t: &ToolCalls) -> Result<String, ConstraintError> {
    if t.functions.is_empty() {
        return Err(ConstraintError::Invalid("no functions to call".into()));
    }
    let mut names: Vec<&str> = t.functions.iter().map(|f| f.name.as_str()).collect();
    names.sort_unstable();
    if names.windows(2).any(|w| w[0] == w[1]) {
        return Err(ConstraintError::Invalid(
            "a function is listed twice".into(),
        ));
    }
    let calls = t
        .functions
        .iter()
        .map(call_schema)
        .collect::<Result<Vec<_>, _>>()?;
    let one = match calls.len() {
        1 => calls.into_iter().next().unwrap_or_default(),
        _ => json!({ "anyOf": calls }),
    };
    let one = with_options(canonical(&one)?)?;
    let calls = if t.parallel {
        "call (\"\\n\" call)*"
    } else {
        "call"
    };
    let start = if t.text {
        format!("start: (calls | TEXT)?\nTEXT: {FREE_TEXT}\n")
    } else {
        "start: calls\n".to_string()
    };
    Ok(format!("{start}calls: {calls}\ncall: %json {one}\n"))
}

/// The grammar of a constraint: its schema in canonical key order with the
/// fixed compiler options; for tool calls, a Lark grammar around them.
fn grammar(c: &Constraint) -> Result<TopLevelGrammar, ConstraintError> {
    let schema = match c {
        Constraint::JsonObject => json!({"type": "object"}),
        Constraint::JsonSchema(s) => canonical(s)?,
        Constraint::ToolCalls(t) => return Ok(TopLevelGrammar::from_lark(tool_grammar(t)?)),
    };
    Ok(TopLevelGrammar::from_json_schema(with_options(schema)?))
}

/// Maps the compiler's error to one naming the unsupported keyword, when it
/// is one (`Unimplemented keys: ["not"]`).
fn compile_error(msg: String) -> ConstraintError {
    if let Some(rest) = msg.split("Unimplemented keys: [").nth(1) {
        if let Some(k) = rest.split('"').nth(1) {
            return ConstraintError::Unsupported(k.to_string());
        }
    }
    ConstraintError::Invalid(msg)
}

/// The vocabulary prepared for masks: built once per tokenizer.
pub struct Grammars {
    factory: ParserFactory,
    ends: Arc<[u32]>,
}

impl std::fmt::Debug for Grammars {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Grammars")
            .field("ends", &self.ends)
            .finish()
    }
}

impl Grammars {
    /// The vocabulary of `tk`. Control tokens are never allowed by a grammar
    /// (they carry the `0xff` marker no grammar text contains); end tokens
    /// are allowed by the completion rule only.
    pub fn new(tk: &Tokenizer) -> Result<Self, ConstraintError> {
        let n = u32::try_from(tk.vocab_size())
            .map_err(|_| ConstraintError::Invalid("vocabulary too large".into()))?;
        let words = (0..n)
            .map(|id| {
                if tk.is_end(id) || tk.is_control(id) {
                    let mut w = vec![TokTrie::SPECIAL_TOKEN_MARKER];
                    w.extend(format!("<|{id}|>").bytes());
                    w
                } else {
                    tk.token_bytes(id, false).unwrap_or_default()
                }
            })
            .collect::<Vec<_>>();
        Self::from_words(words, (0..n).filter(|&t| tk.is_end(t)).collect())
    }

    /// A vocabulary given as token bytes, with its end tokens (tests use
    /// small ones).
    pub fn from_words(words: Vec<Vec<u8>>, ends: Vec<u32>) -> Result<Self, ConstraintError> {
        let info = TokRxInfo {
            tok_end_of_turn: ends.get(1).copied(),
            ..TokRxInfo::new(words.len() as u32, ends.first().copied().unwrap_or(0))
        };
        let trie = TokTrie::from(&info, &words);
        let env: TokEnv = Arc::new(ApproximateTokEnv::new(trie));
        // The slices only speed up mask computation; the masks are the same.
        let mut factory = ParserFactory::new_simple(&env)
            .map_err(|e| ConstraintError::Invalid(format!("vocabulary: {e}")))?;
        factory.quiet();
        Ok(Grammars {
            factory,
            ends: ends.into(),
        })
    }

    /// A matcher at the start of the output.
    pub fn matcher(&self, c: &Constraint) -> Result<Matcher, ConstraintError> {
        let parser = self
            .factory
            .create_parser(grammar(c)?)
            .map_err(|e| compile_error(format!("{e:#}")))?;
        let inner = llguidance::Matcher::new(Ok(parser));
        if let Some(e) = inner.get_error() {
            return Err(ConstraintError::Invalid(e));
        }
        Ok(Matcher {
            inner,
            ends: self.ends.clone(),
            vocab: self.factory.tok_env().tok_trie().vocab_size(),
        })
    }
}

/// Checks that a constraint compiles (without a model: a byte-level
/// vocabulary decides the same schema errors), for refusing a request before
/// any node runs it.
pub fn validate(c: &Constraint) -> Result<(), ConstraintError> {
    thread_local! {
        static BYTES: Result<Grammars, ConstraintError> = Grammars::from_words(
            (0..=255u8).map(|b| vec![b]).chain([vec![0xff, b'<', b'>']]).collect(),
            vec![256],
        );
    }
    BYTES.with(|g| g.as_ref().map_err(Clone::clone)?.matcher(c).map(|_| ()))
}

/// The tokens allowed at one position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mask(SimpleVob);

impl Mask {
    /// Whether `token` is allowed.
    pub fn allows(&self, token: u32) -> bool {
        (token as usize) < self.0.len() && self.0.is_allowed(token)
    }

    /// `logits` with every disallowed token at negative infinity: the mask
    /// applies before any ranking, so greedy and sampled picks (and the
    /// verifier's margin rule) see only allowed tokens.
    pub fn apply(&self, logits: &[f32]) -> Vec<f32> {
        logits
            .iter()
            .enumerate()
            .map(|(i, &l)| {
                if self.allows(i as u32) {
                    l
                } else {
                    f32::NEG_INFINITY
                }
            })
            .collect()
    }

    /// How many tokens are allowed.
    pub fn count(&self) -> usize {
        self.0.num_set()
    }
}

/// The grammar's state over one output, token by token.
pub struct Matcher {
    inner: llguidance::Matcher,
    ends: Arc<[u32]>,
    vocab: usize,
}

impl std::fmt::Debug for Matcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Matcher")
            .field("stopped", &self.inner.is_stopped())
            .finish()
    }
}

impl Matcher {
    /// The tokens allowed next: those the grammar can extend with, plus the
    /// end tokens when the output is complete, or when nothing else is
    /// allowed (a finished grammar, or a compiler limit reached: generation
    /// then ends, the same way on every machine).
    pub fn allowed(&mut self) -> Mask {
        let mut set = if self.inner.is_stopped() {
            SimpleVob::alloc(self.vocab)
        } else {
            self.inner
                .compute_mask()
                .unwrap_or_else(|_| SimpleVob::alloc(self.vocab))
        };
        for &e in self.ends.iter() {
            set.disallow_token(e);
        }
        let complete = self.inner.is_stopped() || self.inner.is_accepting().unwrap_or(true);
        if complete || set.is_zero() {
            for &e in self.ends.iter() {
                set.allow_token(e);
            }
        }
        Mask(set)
    }

    /// Moves past `token` (which should be in the last [`Matcher::allowed`]).
    pub fn advance(&mut self, token: u32) {
        if !self.ends.contains(&token) && !self.inner.is_stopped() {
            // A token the grammar refuses puts the matcher in its error
            // state, where only end tokens are allowed.
            let _ = self.inner.consume_token(token);
        }
    }
}

/// The mask at each position of `output` (the masks a node applying `c`
/// used), up to and including the first token outside its mask, whose
/// position is returned too.
pub fn masks(
    grammars: &Grammars,
    c: &Constraint,
    output: &[u32],
) -> Result<(Vec<Mask>, Option<usize>), ConstraintError> {
    let mut m = grammars.matcher(c)?;
    let mut out = Vec::with_capacity(output.len());
    for (i, &t) in output.iter().enumerate() {
        let mask = m.allowed();
        let ok = mask.allows(t);
        out.push(mask);
        if !ok {
            return Ok((out, Some(i)));
        }
        m.advance(t);
    }
    Ok((out, None))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Single bytes plus a few multi-byte tokens, and one end token.
    fn toy() -> (Grammars, Vec<Vec<u8>>) {
        let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
        for w in ["{\"", "\":", "true", "false", "null", "\"}", "abc"] {
            words.push(w.as_bytes().to_vec());
        }
        words.push(vec![0xff, b'<', b'e', b'>']);
        let end = words.len() as u32 - 1;
        (
            Grammars::from_words(words.clone(), vec![end]).unwrap(),
            words,
        )
    }

    fn id(words: &[Vec<u8>], s: &str) -> u32 {
        words.iter().position(|w| w == s.as_bytes()).unwrap() as u32
    }

    fn schema(v: Value) -> Constraint {
        Constraint::JsonSchema(v)
    }

    /// Greedy over a fixed preference list: the first allowed token wins.
    fn drive(g: &Grammars, c: &Constraint, prefs: &[u32], end: u32) -> Vec<u32> {
        let mut m = g.matcher(c).unwrap();
        let mut out = Vec::new();
        for _ in 0..64 {
            let mask = m.allowed();
            let t = prefs
                .iter()
                .copied()
                .find(|&t| mask.allows(t))
                .or_else(|| (0..=end).find(|&t| mask.allows(t)))
                .unwrap();
            out.push(t);
            if t == end {
                break;
            }
            m.advance(t);
        }
        out
    }

    #[test]
    fn masks_follow_the_schema_and_allow_end_only_when_complete() {
        let (g, w) = toy();
        let end = w.len() as u32 - 1;
        let c = schema(json!({
            "type": "object",
            "properties": {"ok": {"type": "boolean"}},
            "required": ["ok"],
            "additionalProperties": false
        }));
        let mut m = g.matcher(&c).unwrap();
        let first = m.allowed();
        assert!(first.allows(u32::from(b'{')));
        assert!(!first.allows(u32::from(b'x')));
        assert!(!first.allows(end), "empty output is not a document");
        for t in "{\"ok\":true".bytes() {
            assert!(m.allowed().allows(u32::from(t)), "{}", t as char);
            m.advance(u32::from(t));
        }
        assert!(!m.allowed().allows(end));
        m.advance(u32::from(b'}'));
        let last = m.allowed();
        assert!(last.allows(end));
        assert_eq!(last.count(), 1, "a finished document only ends");
        // A preference for junk still gives the document.
        let out = drive(&g, &c, &[id(&w, "abc"), u32::from(b' ')], end);
        let text: Vec<u8> = out[..out.len() - 1]
            .iter()
            .flat_map(|&t| w[t as usize].clone())
            .collect();
        let v: Value = serde_json::from_slice(&text).unwrap();
        assert!(v["ok"].is_boolean());
    }

    #[test]
    fn masks_replay_and_find_the_first_token_outside() {
        let (g, w) = toy();
        let end = w.len() as u32 - 1;
        let c = Constraint::JsonObject;
        let good = drive(
            &g,
            &c,
            &[
                id(&w, "{\""),
                id(&w, "abc"),
                id(&w, "\":"),
                id(&w, "null"),
                u32::from(b'}'),
            ],
            end,
        );
        let (ms, bad) = masks(&g, &c, &good).unwrap();
        assert_eq!((ms.len(), bad), (good.len(), None));
        let mut forged = good.clone();
        forged[1] = 0x01; // a raw control byte inside a key
        let (_, bad) = masks(&g, &c, &forged).unwrap();
        assert_eq!(bad, Some(1));
        let early_end = vec![id(&w, "{\""), end];
        assert_eq!(masks(&g, &c, &early_end).unwrap().1, Some(1));
    }

    #[test]
    fn apply_hides_disallowed_tokens() {
        let (g, w) = toy();
        let mut m = g.matcher(&Constraint::JsonObject).unwrap();
        let mask = m.allowed();
        let logits: Vec<f32> = (0..w.len()).map(|i| i as f32).collect();
        let masked = mask.apply(&logits);
        assert_eq!(masked[usize::from(b'{')], f32::from(b'{'));
        assert_eq!(masked[usize::from(b'a')], f32::NEG_INFINITY);
    }

    #[test]
    fn unsupported_keywords_are_named() {
        for (s, kw) in [
            (json!({"type": "object", "not": {"type": "null"}}), "not"),
            (json!({"type": "array", "uniqueItems": true}), "uniqueItems"),
            (json!({"type": "object", "x-guidance": {}}), "x-guidance"),
        ] {
            assert_eq!(
                validate(&schema(s)),
                Err(ConstraintError::Unsupported(kw.into()))
            );
        }
        assert!(matches!(
            validate(&schema(json!(3))),
            Err(ConstraintError::Invalid(_))
        ));
        assert!(matches!(
            validate(&schema(json!({"type": "number", "minimum": 0.5}))),
            Err(ConstraintError::Invalid(_))
        ));
        assert_eq!(validate(&Constraint::JsonObject), Ok(()));
    }

    #[test]
    fn key_order_does_not_change_the_grammar() {
        let (g, w) = toy();
        let end = w.len() as u32 - 1;
        let a: Value = serde_json::from_str(
            r#"{"type":"object","required":["b","a"],"properties":{"b":{"type":"null"},"a":{"type":"null"}}}"#,
        )
        .unwrap();
        let b: Value = serde_json::from_str(
            r#"{"properties":{"a":{"type":"null"},"b":{"type":"null"}},"required":["a","b"],"type":"object"}"#,
        )
        .unwrap();
        let prefs = [id(&w, "{\""), id(&w, "\":"), id(&w, "null")];
        assert_eq!(
            drive(&g, &schema(a), &prefs, end),
            drive(&g, &schema(b), &prefs, end)
        );
    }

    fn tools(text: bool, parallel: bool) -> Constraint {
        Constraint::ToolCalls(ToolCalls {
            functions: vec![
                ToolFunction {
                    name: "get_weather".into(),
                    parameters: json!({
                        "type": "object",
                        "properties": {"city": {"type": "string", "maxLength": 8}},
                        "required": ["city"],
                        "additionalProperties": false
                    }),
                },
                ToolFunction {
                    name: "now".into(),
                    parameters: json!({"type": "object", "properties": {}, "additionalProperties": false}),
                },
            ],
            text,
            parallel,
        })
    }

    /// Whether `text` (bytes) then the end token is a path through the masks.
    fn admits(g: &Grammars, c: &Constraint, text: &str, end: u32) -> bool {
        let mut m = g.matcher(c).unwrap();
        for b in text.bytes() {
            if !m.allowed().allows(u32::from(b)) {
                return false;
            }
            m.advance(u32::from(b));
        }
        m.allowed().allows(end)
    }

    #[test]
    fn tool_calls_constrain_arguments_whether_text_is_allowed_or_not() {
        let (g, w) = toy();
        let end = w.len() as u32 - 1;
        let call = r#"{"name":"get_weather","parameters":{"city":"Oslo"}}"#;
        let two = format!("{call}\n{{\"name\":\"now\",\"parameters\":{{}}}}");
        let bad_args = r#"{"name":"get_weather","parameters":{"town":"Oslo"}}"#;
        let unknown = r#"{"name":"rm","parameters":{}}"#;
        // auto: text or calls; a call's arguments follow its schema.
        let auto = tools(true, true);
        for (text, ok) in [
            ("It is sunny.", true),
            ("", true),
            (call, true),
            (two.as_str(), true),
            (bad_args, false),
            (unknown, false),
            ("  {\"name\":1}", false),
            (" \nHi {x}", true),
        ] {
            assert_eq!(admits(&g, &auto, text, end), ok, "auto: {text:?}");
        }
        // required: calls only; not parallel: one call.
        for (c, text, ok) in [
            (tools(false, true), "It is sunny.", false),
            (tools(false, true), "", false),
            (tools(false, true), two.as_str(), true),
            (tools(false, false), call, true),
            (tools(false, false), two.as_str(), false),
            (tools(true, false), two.as_str(), false),
        ] {
            assert_eq!(admits(&g, &c, text, end), ok, "{c:?}: {text:?}");
        }
        assert_eq!(validate(&auto), Ok(()));
        let mut dup = tools(true, true);
        if let Constraint::ToolCalls(t) = &mut dup {
            t.functions[1].name = "get_weather".into();
        }
        assert!(matches!(validate(&dup), Err(ConstraintError::Invalid(_))));
        let mut bad = tools(false, false);
        if let Constraint::ToolCalls(t) = &mut bad {
            t.functions[0].parameters = json!({"type": "object", "not": {}});
        }
        assert_eq!(
            validate(&bad),
            Err(ConstraintError::Unsupported("not".into()))
        );
    }

    #[test]
    fn the_version_is_the_pinned_one() {
        let manifest = include_str!("../Cargo.toml");
        assert!(
            manifest.contains(&format!(
                "llguidance = {{ version = \"={LLGUIDANCE_VERSION}\""
            )),
            "LLGUIDANCE_VERSION must match the pinned dependency"
        );
        assert!(crate::ENGINE_VERSION.contains(&format!("+llguidance.{LLGUIDANCE_VERSION}/")));
    }
}
