//! The OpenAI-compatible wire format: request parsing (with errors that name
//! the field), response and stream-chunk shapes, and errors in OpenAI's
//! format.
//!
//! Its own crate, apart from the gateway's server, because request bodies
//! are untrusted input: the coverage-guided fuzzer builds this parser
//! without axum or the engine. Whether the engines can compile a JSON
//! schema is the engine's to say: the gateway passes that check in
//! ([`SchemaCheck`]). The `axum` feature makes [`ApiError`] a response.

use serde::Serialize;
use serde_json::{json, Map, Value};
use verinfer_types::records::{
    Constraint, Decoding, FinishReason, Input, LogitBias, Message, Policy, TokenLogprob,
    VerificationMode, MAX_LOGIT_BIAS_TOKENS, MAX_TOP_LOGPROBS,
};
use verinfer_types::Hash;

mod error;
pub mod tools;

pub use error::{ApiError, RETRY_AFTER_SECS};

/// Why the engines cannot compile a decoding constraint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaRefusal {
    /// The schema uses a keyword the grammar compiler does not implement.
    Unsupported(String),
    /// The schema is malformed or cannot be satisfied.
    Invalid(String),
}

/// The engines' check of a decoding constraint (the gateway passes
/// `verinfer_inference::constraint::validate`), so that a schema no node
/// could compile is refused with a 400 naming the field before any money is
/// reserved or node runs.
pub type SchemaCheck<'a> = &'a dyn Fn(&Constraint) -> Result<(), SchemaRefusal>;

/// A parsed `/v1/chat/completions` or `/v1/completions` body.
#[derive(Debug, Clone)]
pub struct Parsed {
    /// The model name or id as given.
    pub model: String,
    /// Messages or prompt.
    pub input: Input,
    /// Decoding (the seed is 0 when none was given; the gateway draws one
    /// for sampled requests).
    pub decoding: Decoding,
    /// Whether a seed was given.
    pub seeded: bool,
    /// Verification policy.
    pub policy: Option<Policy>,
    /// Stream by server-sent events.
    pub stream: bool,
    /// Send a usage chunk at the end of the stream.
    pub include_usage: bool,
    /// The functions offered, if any.
    pub tools: Option<tools::Tools>,
    /// Choices asked (`n`, 1 to [`MAX_CHOICES`]); each is its own Request.
    pub n: u32,
}

/// Most choices (`n`) one call may ask for.
pub const MAX_CHOICES: u32 = 8;

/// The body fields `/v1/chat/completions` reads; any other is refused with
/// a 400 naming it, so that nothing a client asks for is silently ignored.
/// (`user` only labels the end user for the client's own bookkeeping and
/// changes nothing in the answer.)
pub const CHAT_FIELDS: &[&str] = &[
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "logprobs",
    "top_logprobs",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "verification",
    "user",
];

/// The body fields `/v1/completions` reads (see [`CHAT_FIELDS`]).
pub const COMPLETION_FIELDS: &[&str] = &[
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "n",
    "logprobs",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "response_format",
    "verification",
    "user",
];

/// Most alternatives `/v1/completions` lists per token (`logprobs`).
pub const MAX_COMPLETION_LOGPROBS: u64 = 5;

/// Default `max_tokens` when the request gives none.
pub const DEFAULT_MAX_TOKENS: u32 = 256;

fn number(obj: &Map<String, Value>, field: &str) -> Result<Option<f64>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .map(Some)
            .ok_or_else(|| ApiError::field(field, format!("`{field}` must be a number"))),
        Some(_) => Err(ApiError::field(
            field,
            format!("`{field}` must be a number"),
        )),
    }
}

fn integer(obj: &Map<String, Value>, field: &str, max: u64) -> Result<Option<u64>, ApiError> {
    match obj.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().filter(|n| *n <= max).map(Some).ok_or_else(|| {
            ApiError::field(
                field,
                format!("`{field}` must be an integer from 0 to {max}"),
            )
        }),
    }
}

fn milli(obj: &Map<String, Value>, field: &str, lo: f64, hi: f64) -> Result<Option<u32>, ApiError> {
    match number(obj, field)? {
        None => Ok(None),
        Some(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok(Some((x * 1000.0).round() as u32)),
        Some(_) => Err(ApiError::field(
            field,
            format!("`{field}` must be between {lo} and {hi}"),
        )),
    }
}

/// `field` as thousandths of a number within `lo..=hi` (signed).
fn signed_milli(obj: &Map<String, Value>, field: &str, lo: f64, hi: f64) -> Result<i32, ApiError> {
    match number(obj, field)? {
        None => Ok(0),
        Some(x) if x.is_finite() && (lo..=hi).contains(&x) => Ok((x * 1000.0).round() as i32),
        Some(_) => Err(ApiError::field(
            field,
            format!("`{field}` must be between {lo} and {hi}"),
        )),
    }
}

/// `logit_bias`: an object from token ids (as strings) to a bias from -100
/// to 100, in increasing token order.
fn logit_bias(obj: &Map<String, Value>) -> Result<Vec<LogitBias>, ApiError> {
    let map = match obj.get("logit_bias") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err(ApiError::field(
                "logit_bias",
                "`logit_bias` must be an object from token ids to numbers",
            ))
        }
    };
    if map.len() > MAX_LOGIT_BIAS_TOKENS {
        return Err(ApiError::field(
            "logit_bias",
            format!("`logit_bias` names at most {MAX_LOGIT_BIAS_TOKENS} tokens"),
        ));
    }
    let mut out = Vec::with_capacity(map.len());
    for (k, v) in map {
        let token: u32 = k
            .parse()
            .ok()
            .filter(|_| k.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                ApiError::field(
                    "logit_bias",
                    format!("`logit_bias` key {k:?} is not a token id"),
                )
            })?;
        let bias = v
            .as_f64()
            .filter(|x| x.is_finite() && (-100.0..=100.0).contains(x))
            .ok_or_else(|| {
                ApiError::field(
                    "logit_bias",
                    format!("`logit_bias` value of token {token} must be between -100 and 100"),
                )
            })?;
        out.push(LogitBias {
            token,
            bias_milli: (bias * 1000.0).round() as i32,
        });
    }
    out.sort_by_key(|b| b.token);
    if out.windows(2).any(|w| w[0].token == w[1].token) {
        return Err(ApiError::field(
            "logit_bias",
            "`logit_bias` names a token twice",
        ));
    }
    Ok(out)
}

/// `logprobs` and `top_logprobs` (chat: a boolean and 0 to 20) or `logprobs`
/// (completions: 0 to 5), as the record's `top_logprobs`.
fn logprobs(obj: &Map<String, Value>, chat: bool) -> Result<Option<u32>, ApiError> {
    if !chat {
        return Ok(integer(obj, "logprobs", MAX_COMPLETION_LOGPROBS)?.map(|n| n as u32));
    }
    let wanted = match obj.get("logprobs") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::field("logprobs", "`logprobs` must be a boolean")),
    };
    let top = integer(obj, "top_logprobs", u64::from(MAX_TOP_LOGPROBS))?;
    match (wanted, top) {
        (false, Some(_)) => Err(ApiError::field(
            "top_logprobs",
            "`top_logprobs` needs `logprobs` set to true",
        )),
        (false, None) => Ok(None),
        (true, n) => Ok(Some(n.map_or(0, |n| n as u32))),
    }
}

/// `stream_options`: an object whose only field is `include_usage`.
fn include_usage(obj: &Map<String, Value>) -> Result<bool, ApiError> {
    let o = match obj.get("stream_options") {
        None | Some(Value::Null) => return Ok(false),
        Some(Value::Object(o)) => o,
        Some(_) => {
            return Err(ApiError::field(
                "stream_options",
                "`stream_options` must be an object",
            ))
        }
    };
    if let Some(k) = o.keys().find(|k| k.as_str() != "include_usage") {
        return Err(ApiError::field(
            &format!("stream_options.{k}"),
            format!("`stream_options.{k}` is not supported"),
        ));
    }
    match o.get("include_usage") {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::field(
            "stream_options.include_usage",
            "`stream_options.include_usage` must be a boolean",
        )),
    }
}

fn text_content(v: &Value, field: &str) -> Result<String, ApiError> {
    match v {
        Value::String(s) => Ok(s.clone()),
        // Content parts: only text parts are supported.
        Value::Array(parts) => parts
            .iter()
            .map(
                |p| match (p.get("type").and_then(Value::as_str), p.get("text")) {
                    (Some("text"), Some(Value::String(t))) => Ok(t.as_str()),
                    _ => Err(ApiError::field(
                        field,
                        "only text content parts are supported",
                    )),
                },
            )
            .collect::<Result<Vec<_>, _>>()
            .map(|v| v.concat()),
        _ => Err(ApiError::field(field, "message content must be a string")),
    }
}

fn messages(obj: &Map<String, Value>) -> Result<Vec<Message>, ApiError> {
    let list = match obj.get("messages") {
        Some(Value::Array(a)) if !a.is_empty() => a,
        Some(Value::Array(_)) => {
            return Err(ApiError::field("messages", "`messages` must not be empty"))
        }
        None => return Err(ApiError::field("messages", "`messages` is required")),
        Some(_) => return Err(ApiError::field("messages", "`messages` must be an array")),
    };
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            let field = format!("messages[{i}]");
            let role = m.get("role").and_then(Value::as_str).ok_or_else(|| {
                ApiError::field(&format!("{field}.role"), "each message needs a `role`")
            })?;
            let role = match role {
                "system" | "developer" => "system",
                "user" => "user",
                "assistant" => "assistant",
                "tool" => {
                    tools::tool_result(m, &field)?;
                    "tool"
                }
                other => {
                    return Err(ApiError::field(
                        &format!("{field}.role"),
                        format!("unsupported role `{other}`: use system, user, assistant or tool"),
                    ))
                }
            };
            // Nothing in a message is silently ignored: a field that would
            // change the answer elsewhere (`name`, say) is refused by name.
            // Nulls are what clients send for fields they leave unset.
            let known = |k: &str| match k {
                "role" | "content" => true,
                "tool_calls" => role == "assistant",
                "tool_call_id" => role == "tool",
                _ => false,
            };
            if let Some((k, _)) = m
                .as_object()
                .and_then(|o| o.iter().find(|(k, v)| !v.is_null() && !known(k)))
            {
                return Err(ApiError::field(
                    &format!("{field}.{k}"),
                    format!("`{k}` is not supported in a `{role}` message"),
                ));
            }
            let calls = match role {
                "assistant" => tools::assistant_calls(m, &field)?,
                _ => None,
            };
            let content = match (m.get("content").filter(|c| !c.is_null()), calls) {
                (Some(c), calls) => {
                    let text = text_content(c, &format!("{field}.content"))?;
                    match calls {
                        Some(k) if text.is_empty() => k,
                        Some(k) => format!("{text}\n{k}"),
                        None => text,
                    }
                }
                (None, Some(k)) => k,
                (None, None) => {
                    return Err(ApiError::field(
                        &format!("{field}.content"),
                        "each message needs `content`",
                    ))
                }
            };
            Ok(Message {
                role: role.into(),
                content,
            })
        })
        .collect()
}

fn stops(obj: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let bad = || {
        ApiError::field(
            "stop",
            "`stop` must be a string or an array of up to 4 non-empty strings",
        )
    };
    match obj.get("stop") {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::String(s)) if !s.is_empty() => Ok(vec![s.clone()]),
        Some(Value::Array(a)) if a.len() <= 4 => a
            .iter()
            .map(|s| {
                s.as_str()
                    .filter(|s| !s.is_empty())
                    .map(str::to_string)
                    .ok_or_else(bad)
            })
            .collect(),
        Some(_) => Err(bad()),
    }
}

fn policy(obj: &Map<String, Value>) -> Result<Option<Policy>, ApiError> {
    let mut policy: Option<Policy> = None;
    if let Some(v) = obj.get("verification").filter(|v| !v.is_null()) {
        let mode: VerificationMode = serde_json::from_value(v.clone()).map_err(|e| {
            ApiError::field(
                "verification",
                format!("`verification` must be like {{\"mode\":\"quorum\",\"k\":2}}: {e}"),
            )
        })?;
        policy = Some(Policy {
            verification: mode,
            json_schema: None,
        });
    }
    Ok(policy)
}

/// Parses a request body; `chat` selects `/v1/chat/completions` (messages)
/// over `/v1/completions` (prompt).
pub fn parse(body: &[u8], chat: bool, schemas: SchemaCheck<'_>) -> Result<Parsed, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
    let obj = v
        .as_object()
        .ok_or_else(|| ApiError::bad_request("the body must be a JSON object"))?;
    let known = if chat { CHAT_FIELDS } else { COMPLETION_FIELDS };
    if let Some(k) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(ApiError::field(
            k,
            format!("`{k}` is not supported by this gateway"),
        ));
    }
    let model = obj
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .ok_or_else(|| ApiError::field("model", "`model` is required"))?
        .to_string();
    let tools = tools::parse(obj, schemas)?;
    if tools.is_some() && !chat {
        return Err(ApiError::field("tools", "`tools` is for chat completions"));
    }
    let input = if chat {
        let m = messages(obj)?;
        Input::Messages(match &tools {
            Some(t) => t.render(m),
            None => m,
        })
    } else {
        prompt(obj)?
    };
    let n = integer(obj, "n", u64::from(MAX_CHOICES))?.map_or(1, |n| n as u32);
    if n == 0 {
        return Err(ApiError::field(
            "n",
            format!("`n` must be an integer from 1 to {MAX_CHOICES}"),
        ));
    }
    let (decoding, seeded) = decoding(obj, chat, schemas, tools.as_ref())?;
    let stream = match obj.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(ApiError::field("stream", "`stream` must be a boolean")),
    };
    let include_usage = include_usage(obj)?;
    Ok(Parsed {
        model,
        input,
        decoding,
        seeded,
        policy: policy(obj)?,
        stream,
        include_usage,
        tools,
        n,
    })
}

/// `prompt` of a completion: one string, or one prompt's token ids.
fn prompt(obj: &Map<String, Value>) -> Result<Input, ApiError> {
    Ok(match obj.get("prompt") {
        Some(Value::String(s)) => Input::Prompt(s.clone()),
        Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
            Input::Prompt(a[0].as_str().unwrap_or_default().to_string())
        }
        Some(Value::Array(a))
            if !a.is_empty()
                && a.iter()
                    .all(|t| t.as_u64().is_some_and(|n| n <= u64::from(u32::MAX))) =>
        {
            Input::Tokens(
                a.iter()
                    .filter_map(Value::as_u64)
                    .map(|n| n as u32)
                    .collect(),
            )
        }
        _ => {
            return Err(ApiError::field(
                "prompt",
                "`prompt` must be a string (one prompt per request)",
            ))
        }
    })
}

/// The decoding parameters, and whether the request gave a seed.
fn decoding(
    obj: &Map<String, Value>,
    chat: bool,
    schemas: SchemaCheck<'_>,
    tools: Option<&tools::Tools>,
) -> Result<(Decoding, bool), ApiError> {
    let max_tokens = integer(obj, "max_completion_tokens", u64::from(u32::MAX))?
        .or(integer(obj, "max_tokens", u64::from(u32::MAX))?)
        .map_or(DEFAULT_MAX_TOKENS, |n| n as u32);
    if max_tokens == 0 {
        return Err(ApiError::field(
            "max_tokens",
            "`max_tokens` must be at least 1",
        ));
    }
    let seed = integer(obj, "seed", verinfer_types::canonical::MAX_SAFE_INTEGER)?;
    let top_p = milli(obj, "top_p", 0.0, 1.0)?.unwrap_or(1000);
    if top_p == 0 {
        return Err(ApiError::field("top_p", "`top_p` must be above 0"));
    }
    let decoding = Decoding {
        temperature_milli: milli(obj, "temperature", 0.0, 2.0)?.unwrap_or(0),
        top_k: integer(obj, "top_k", u64::from(u32::MAX))?.map_or(0, |n| n as u32),
        top_p_milli: top_p,
        seed: seed.unwrap_or(0),
        max_tokens,
        stop: stops(obj)?,
        constraint: constraint(obj, schemas, tools)?,
        top_logprobs: logprobs(obj, chat)?,
        frequency_penalty_milli: signed_milli(obj, "frequency_penalty", -2.0, 2.0)?,
        presence_penalty_milli: signed_milli(obj, "presence_penalty", -2.0, 2.0)?,
        logit_bias: logit_bias(obj)?,
    };
    Ok((decoding, seed.is_some()))
}

/// The decoding constraint of `response_format` and the tools.
///
/// A schema is a decoding constraint, not an after-the-fact check: the mask
/// makes the output meet it, so no node answers for a schema the model would
/// not have met by itself.
fn constraint(
    obj: &Map<String, Value>,
    schemas: SchemaCheck<'_>,
    tools: Option<&tools::Tools>,
) -> Result<Option<Constraint>, ApiError> {
    Ok(
        match (
            tools::response_format(obj, schemas)?,
            tools.and_then(tools::Tools::constraint),
        ) {
            // `auto` with a response format: the format is the answer's
            // shape, and the answer is returned as text.
            (Some(rf), Some(_)) if tools.is_some_and(|t| t.choice == tools::Choice::Auto) => {
                Some(rf)
            }
            (Some(_), Some(_)) => {
                return Err(ApiError::field(
                    "tool_choice",
                    "a required tool call cannot also follow `response_format`",
                ))
            }
            (rf, call) => rf.or(call),
        },
    )
}

/// Status of an answer, as the `verinfer` object reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A quorum of verifiers accepted it; it is settled in the log.
    Verified,
    /// Settled without a check yet (`none`, `sampled` not drawn, `optimistic`).
    Provisional,
    /// Verifiers rejected it and no honest answer could be had.
    Rejected,
    /// Delivered, not certified yet: the gateway keeps asking verifiers
    /// until the reservation's deadline; `status_url` tells the outcome.
    Pending,
}

/// The `verinfer` object every answer carries.
#[derive(Debug, Clone, Serialize)]
pub struct VerinferInfo {
    /// Receipt id (hex leaf hash), when settled.
    pub receipt_id: Option<Hash>,
    /// Verification status.
    pub status: Status,
    /// Index of the receipt's leaf in the log, when settled.
    pub log_index: Option<u64>,
    /// Model id (SHA-256 of the model file).
    pub model_id: Hash,
    /// Where the receipt is served.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub receipt_url: Option<String>,
    /// The inference node that produced the answer.
    pub node: verinfer_types::PublicKey,
    /// Verifiers whose verdicts certify it.
    pub verifiers: Vec<verinfer_types::PublicKey>,
    /// Why it was rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Where a pending answer's outcome is served
    /// (`/v1/answers/{request hash}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
}

/// OpenAI's finish reason.
pub fn finish(f: FinishReason) -> &'static str {
    match f {
        FinishReason::Eos | FinishReason::Stop => "stop",
        FinishReason::Length => "length",
    }
}

/// A log-probability in nats, from the record's micro-nats.
fn nats(micro: i64) -> f64 {
    micro as f64 / 1e6
}

/// The text a token shows (its bytes, lossily decoded).
fn token_text(e: &TokenLogprob) -> String {
    String::from_utf8_lossy(&e.bytes.0).into_owned()
}

/// The entries a client sees: end tokens, which add no text, are left out.
fn visible(entries: &[TokenLogprob]) -> impl Iterator<Item = &TokenLogprob> {
    let last = entries.len().saturating_sub(1);
    entries
        .iter()
        .enumerate()
        .filter(move |(i, e)| !(*i == last && e.bytes.0.is_empty()))
        .map(|(_, e)| e)
}

/// Chat's `choices[].logprobs`: `{"content": [{token, logprob, bytes,
/// top_logprobs}], "refusal": null}` (`null` when none were asked).
pub fn chat_logprobs(entries: Option<&[TokenLogprob]>) -> Value {
    let Some(entries) = entries else {
        return Value::Null;
    };
    let one = |e: &TokenLogprob| json!({"token": token_text(e), "logprob": nats(e.logprob_micro), "bytes": e.bytes.0});
    let content: Vec<Value> = visible(entries)
        .map(|e| {
            let mut v = one(e);
            v["top_logprobs"] = e.top.iter().map(one).collect();
            v
        })
        .collect();
    json!({"content": content, "refusal": null})
}

/// Completions' `choices[].logprobs`: `{tokens, token_logprobs,
/// top_logprobs, text_offset}` (`null` when none were asked), the first
/// token's text at `offset` (a stream's chunk after the first).
pub fn completion_logprobs(entries: Option<&[TokenLogprob]>, mut offset: usize) -> Value {
    let Some(entries) = entries else {
        return Value::Null;
    };
    let (mut tokens, mut lps, mut tops, mut offsets) = (vec![], vec![], vec![], vec![]);
    for e in visible(entries) {
        let text = token_text(e);
        offsets.push(offset);
        offset += text.len();
        tokens.push(text);
        lps.push(nats(e.logprob_micro));
        let top: Map<String, Value> = e
            .top
            .iter()
            .map(|c| (token_text(c), json!(nats(c.logprob_micro))))
            .collect();
        tops.push(top);
    }
    json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": tops, "text_offset": offsets})
}

/// The gateway's schema check in the crate's own tests.
#[cfg(test)]
mod testing {
    use super::{ApiError, Parsed, SchemaRefusal};
    use verinfer_inference::constraint::{validate, ConstraintError};
    use verinfer_types::records::Constraint;

    /// The engines' check, as the gateway passes it.
    pub(crate) fn engines(c: &Constraint) -> Result<(), SchemaRefusal> {
        validate(c).map_err(|e| match e {
            ConstraintError::Unsupported(k) => SchemaRefusal::Unsupported(k),
            ConstraintError::Invalid(m) => SchemaRefusal::Invalid(m),
        })
    }

    /// [`super::parse`] with the engines' check.
    pub(crate) fn parse(body: &[u8], chat: bool) -> Result<Parsed, ApiError> {
        super::parse(body, chat, &engines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::parse;
    use verinfer_types::records::HexBytes;

    fn chat(body: Value) -> Result<Parsed, ApiError> {
        parse(body.to_string().as_bytes(), true)
    }

    fn base() -> Value {
        json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    }

    fn with(extra: Value) -> Value {
        let mut b = base();
        for (k, v) in extra.as_object().into_iter().flatten() {
            b[k] = v.clone();
        }
        b
    }

    fn refused(body: Value, chat_: bool) -> (u16, Option<String>) {
        let e = parse(body.to_string().as_bytes(), chat_).expect_err("refused");
        (e.status.as_u16(), e.param)
    }

    #[test]
    fn an_unknown_field_is_refused_naming_it() {
        for f in [
            "function_call",
            "functions",
            "audio",
            "store",
            "best_of",
            "logprobz",
        ] {
            let mut body = base();
            body[f] = json!(true);
            assert_eq!(refused(body, true), (400, Some(f.to_string())), "{f}");
        }
        let mut c = json!({"model": "m", "prompt": "hi"});
        c["echo"] = json!(true);
        assert_eq!(refused(c, false), (400, Some("echo".into())));
        // Chat's `top_logprobs` is not a completions field.
        let c = json!({"model": "m", "prompt": "hi", "top_logprobs": 2});
        assert_eq!(refused(c, false), (400, Some("top_logprobs".into())));
        assert_eq!(
            refused(
                with(json!({"stream_options": {"include_usage": true, "x": 1}})),
                true
            ),
            (400, Some("stream_options.x".into()))
        );
        let p = chat(with(
            json!({"user": "u1", "stream_options": {"include_usage": true}}),
        ))
        .expect("known fields");
        assert!(p.include_usage);
    }

    #[test]
    fn an_unknown_message_field_is_refused_naming_it() {
        let msg =
            |m: Value| json!({"model": "m", "messages": [{"role": "user", "content": "hi"}, m]});
        let cases = [
            (
                json!({"role": "user", "content": "x", "name": "bob"}),
                "messages[1].name",
            ),
            (
                json!({"role": "user", "content": "x", "tool_call_id": "c1"}),
                "messages[1].tool_call_id",
            ),
            (
                json!({"role": "user", "content": "x", "tool_calls": []}),
                "messages[1].tool_calls",
            ),
            (
                json!({"role": "assistant", "content": "x", "audio": {"id": "a"}}),
                "messages[1].audio",
            ),
        ];
        for (m, param) in cases {
            assert_eq!(
                refused(msg(m.clone()), true),
                (400, Some(param.to_string())),
                "{m}"
            );
        }
        // Fields a client leaves unset arrive as nulls and change nothing.
        let ok = msg(json!({"role": "assistant", "content": "x", "refusal": null, "name": null}));
        assert!(chat(ok).is_ok());
    }

    #[test]
    fn sampling_controls_become_the_decoding() {
        let p = chat(with(json!({
            "logprobs": true, "top_logprobs": 5, "n": 3, "seed": 9,
            "frequency_penalty": 0.5, "presence_penalty": -1.25,
            "logit_bias": {"50": -100, "7": 2.5},
            "stop": ["a", "b", "c", "d"],
        })))
        .expect("parses");
        assert_eq!(p.n, 3);
        let d = &p.decoding;
        assert_eq!(d.top_logprobs, Some(5));
        assert_eq!(
            (d.frequency_penalty_milli, d.presence_penalty_milli),
            (500, -1250)
        );
        assert_eq!(
            d.logit_bias,
            vec![
                LogitBias {
                    token: 7,
                    bias_milli: 2500
                },
                LogitBias {
                    token: 50,
                    bias_milli: -100_000
                }
            ]
        );
        assert_eq!(
            chat(with(json!({"logprobs": true})))
                .unwrap()
                .decoding
                .top_logprobs,
            Some(0)
        );
        assert_eq!(chat(base()).unwrap().decoding.top_logprobs, None);
        let c = parse(br#"{"model":"m","prompt":"x","logprobs":3}"#, false).unwrap();
        assert_eq!(c.decoding.top_logprobs, Some(3));
        for (body, field) in [
            (
                json!({"top_logprobs": 21, "logprobs": true}),
                "top_logprobs",
            ),
            (json!({"top_logprobs": 2}), "top_logprobs"),
            (json!({"logprobs": 1}), "logprobs"),
            (json!({"n": 9}), "n"),
            (json!({"n": 0}), "n"),
            (json!({"frequency_penalty": 2.5}), "frequency_penalty"),
            (json!({"presence_penalty": -3}), "presence_penalty"),
            (json!({"logit_bias": {"x": 1}}), "logit_bias"),
            (json!({"logit_bias": {"1": 101}}), "logit_bias"),
            (json!({"logit_bias": [1]}), "logit_bias"),
            (json!({"stop": ["a", "b", "c", "d", "e"]}), "stop"),
        ] {
            assert_eq!(
                refused(with(body.clone()), true),
                (400, Some(field.into())),
                "{body}"
            );
        }
        let c = json!({"model": "m", "prompt": "hi", "logprobs": 6});
        assert_eq!(refused(c, false), (400, Some("logprobs".into())));
    }

    #[test]
    fn log_probabilities_in_openai_format() {
        let e = |t: u32, b: &[u8], lp: i64| TokenLogprob {
            token: t,
            bytes: HexBytes(b.to_vec()),
            logprob_micro: lp,
            top: Vec::new(),
        };
        let mut hi = e(1, b"Hi", -250_000);
        hi.top = vec![e(1, b"Hi", -250_000), e(2, b"Yo", -1_500_000)];
        let mut eos = e(0, b"", -10);
        eos.top = vec![e(0, b"", -10), e(1, b"Hi", -9_000_000)];
        let entries = vec![hi, eos];
        let c = chat_logprobs(Some(&entries));
        assert_eq!(
            c,
            json!({"content": [{"token": "Hi", "logprob": -0.25, "bytes": [72, 105], "top_logprobs": [
                {"token": "Hi", "logprob": -0.25, "bytes": [72, 105]},
                {"token": "Yo", "logprob": -1.5, "bytes": [89, 111]},
            ]}], "refusal": null})
        );
        assert_eq!(chat_logprobs(None), Value::Null);
        let l = completion_logprobs(Some(&entries), 0);
        assert_eq!(
            l,
            json!({"tokens": ["Hi"], "token_logprobs": [-0.25], "top_logprobs": [{"Hi": -0.25, "Yo": -1.5}], "text_offset": [0]})
        );
    }
}
