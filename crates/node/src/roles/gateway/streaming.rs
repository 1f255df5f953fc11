//! How answers are shaped for OpenAI clients: one JSON response, or
//! server-sent events chunk by chunk (text, tool calls, log-probabilities,
//! usage, the `verinfer` block with the receipt).

use super::counters::Counters;
use super::flow::{Answer, Event};
use super::openai::{self, ApiError, Status, VerinferInfo};
use super::state::Gateway;
use super::{stream, tools};
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use verinfer_types::records::TokenLogprob;
use verinfer_types::Hash;

/// One streamed choice: how its text splits, and the log-probability
/// records it carried so far.
pub(super) struct ChoiceStream {
    split: stream::Splitter,
    /// Records received with text not shown yet (held back).
    held: Vec<TokenLogprob>,
    /// Records sent, and the bytes of their tokens (where the next one's
    /// `text_offset` starts).
    sent: usize,
    sent_bytes: usize,
}

/// What every chunk of one answer shares.
#[derive(Clone)]
pub(super) struct Shape {
    pub(super) chat: bool,
    pub(super) model: String,
    pub(super) model_id: Hash,
    pub(super) id: String,
    pub(super) created: u64,
    /// Functions the answer may call (when the tool constraint shapes it).
    pub(super) tools: Option<tools::Tools>,
    /// Prompt and completion tokens of the choices answered so far.
    pub(super) usage: Arc<std::sync::Mutex<Option<(u32, u32)>>>,
}

impl Shape {
    /// The calls an answer makes, if it is calls (never for a rejected
    /// answer), read from its content.
    fn calls(&self, a: &Answer) -> Option<Vec<(String, String)>> {
        let t = self
            .tools
            .as_ref()
            .filter(|_| a.status != Status::Rejected)?;
        t.calls(self.parts(a).1)
    }

    /// `(reasoning, content)` of an answer (chat only: completions show
    /// the text as it is).
    fn parts<'a>(&self, a: &'a Answer) -> (Option<&'a str>, &'a str) {
        let text = a.result.output_text.as_str();
        if self.chat {
            stream::split_reasoning(text)
        } else {
            (None, text)
        }
    }

    /// A streamed choice, at its start.
    pub(super) fn choice_stream(&self) -> ChoiceStream {
        ChoiceStream {
            split: stream::Splitter::new(self.tools.clone()),
            held: Vec::new(),
            sent: 0,
            sent_bytes: 0,
        }
    }

    /// The id tool calls of choice `index` derive from: the completion's
    /// own for the first choice, one per choice after it.
    fn call_id(&self, index: usize) -> String {
        match index {
            0 => self.id.clone(),
            i => format!("{}-{i}", self.id),
        }
    }

    fn info(&self, a: &Answer) -> VerinferInfo {
        VerinferInfo {
            receipt_id: a.settled.map(|(id, _)| id),
            status: a.status,
            log_index: a.settled.map(|(_, i)| i),
            model_id: self.model_id,
            receipt_url: a.settled.map(|(id, _)| format!("/v1/receipts/{id}")),
            node: a.result.node,
            verifiers: a.verifiers.clone(),
            reason: a.reason.clone(),
            status_url: (a.status == Status::Pending)
                .then(|| format!("/v1/answers/{}", a.result.request)),
        }
    }

    /// OpenAI's usage: the prompt counted once, the completions of every
    /// choice summed.
    fn usage_json(prompt: u32, completion: u32) -> Value {
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        })
    }

    /// The choice's log-probabilities in the endpoint's format, from the
    /// record `from` on (its token's text at `offset`).
    fn logprobs(&self, a: &Answer, from: usize, offset: usize) -> Value {
        let entries = match a.status {
            Status::Rejected => None,
            _ => a
                .result
                .logprobs
                .as_deref()
                .map(|e| e.get(from..).unwrap_or_default()),
        };
        self.format_logprobs(entries, offset)
    }

    fn format_logprobs(&self, entries: Option<&[TokenLogprob]>, offset: usize) -> Value {
        if self.chat {
            openai::chat_logprobs(entries)
        } else {
            openai::completion_logprobs(entries, offset)
        }
    }

    /// The whole answer as one JSON response.
    pub(super) fn whole(&self, answers: &[Answer]) -> Response {
        let many = answers.len() > 1;
        let choices: Vec<Value> = answers
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let (reasoning, text) = if a.status == Status::Rejected {
                    (None, "")
                } else {
                    self.parts(a)
                };
                let finish = openai::finish(a.result.finish_reason);
                let mut choice = if let Some(calls) = self.calls(a) {
                    let calls = tools::tool_calls(&self.call_id(i), &calls);
                    json!({"index": i, "message": {"role": "assistant", "content": null, "tool_calls": calls, "refusal": null}, "logprobs": self.logprobs(a, 0, 0), "finish_reason": "tool_calls"})
                } else if self.chat {
                    json!({"index": i, "message": {"role": "assistant", "content": text, "refusal": null}, "logprobs": self.logprobs(a, 0, 0), "finish_reason": finish})
                } else {
                    json!({"index": i, "text": text, "logprobs": self.logprobs(a, 0, 0), "finish_reason": finish})
                };
                if let Some(r) = reasoning {
                    choice["message"]["reasoning_content"] = json!(r);
                }
                if many {
                    // Each choice is its own Request, Result and receipt.
                    choice["verinfer"] = serde_json::to_value(self.info(a)).unwrap_or(Value::Null);
                }
                choice
            })
            .collect();
        let Some(first) = answers.first() else {
            return ApiError::internal("no choice was answered").into_response();
        };
        let completion = answers
            .iter()
            .map(|a| a.result.usage.completion_tokens)
            .sum();
        let body = json!({
            "id": self.id,
            "object": if self.chat { "chat.completion" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "system_fingerprint": first.result.engine,
            "choices": choices,
            "usage": Self::usage_json(first.result.usage.prompt_tokens, completion),
            "verinfer": self.info(first),
        });
        let mut r = Json(body).into_response();
        decorate(r.headers_mut(), first);
        r
    }

    fn chunk(
        &self,
        index: usize,
        content: Option<&str>,
        finish: Option<&str>,
        extra: Option<(&str, Value)>,
    ) -> Value {
        let choice = if self.chat {
            let delta = match content {
                Some(c) => json!({"role": "assistant", "content": c}),
                None => json!({}),
            };
            json!({"index": index, "delta": delta, "logprobs": null, "finish_reason": finish})
        } else {
            json!({"index": index, "text": content.unwrap_or(""), "logprobs": null, "finish_reason": finish})
        };
        let mut c = json!({
            "id": self.id,
            "object": if self.chat { "chat.completion.chunk" } else { "text_completion" },
            "created": self.created,
            "model": self.model,
            "choices": [choice],
        });
        if let (Some((k, v)), Some(obj)) = (extra, c.as_object_mut()) {
            obj.insert(k.to_string(), v);
        }
        c
    }

    /// The chunk of one part of a streamed chat answer.
    fn delta_chunk(&self, index: usize, d: stream::Delta) -> Value {
        let delta = match d {
            stream::Delta::Content(c) => json!({"role": "assistant", "content": c}),
            stream::Delta::Reasoning(r) => {
                json!({"role": "assistant", "reasoning_content": r})
            }
            // OpenAI's stream of calls: each call's index, id and name
            // first, then its arguments in pieces.
            stream::Delta::CallStart { index: call, name } => json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [{
                    "index": call,
                    "id": tools::call_id(&self.call_id(index), call),
                    "type": "function",
                    "function": {"name": name, "arguments": ""},
                }],
            }),
            stream::Delta::CallArgs { index: call, args } => json!({
                "tool_calls": [{"index": call, "function": {"arguments": args}}],
            }),
        };
        let mut c = self.chunk(index, None, None, None);
        c["choices"][0]["delta"] = delta;
        c
    }

    /// The server-sent events of one flow event of choice `index`, whose
    /// stream `split` reads.
    pub(super) fn sse(
        &self,
        gw: &Gateway,
        choice: &mut ChoiceStream,
        index: usize,
        ev: Event,
    ) -> Vec<SseEvent> {
        let data = |v: Value| SseEvent::default().data(v.to_string());
        match ev {
            Event::Text(t, logprobs) => {
                let mut chunks: Vec<Value> = if self.chat {
                    choice
                        .split
                        .push(&t)
                        .into_iter()
                        .map(|d| self.delta_chunk(index, d))
                        .collect()
                } else {
                    vec![self.chunk(index, Some(&t), None, None)]
                };
                // A chunk carries the records of the tokens whose text it
                // shows (held with the text the splitter holds).
                choice.held.extend(logprobs);
                if let (Some(first), false) = (chunks.first_mut(), choice.held.is_empty()) {
                    let held = std::mem::take(&mut choice.held);
                    first["choices"][0]["logprobs"] =
                        self.format_logprobs(Some(&held), choice.sent_bytes);
                    choice.sent += held.len();
                    choice.sent_bytes += held.iter().map(|e| e.bytes.0.len()).sum::<usize>();
                }
                chunks.into_iter().map(data).collect()
            }
            Event::Retract { reason } => {
                // The answer starts again from nothing.
                *choice = self.choice_stream();
                vec![data(self.chunk(
                    index,
                    Some(""),
                    None,
                    Some((
                        "verinfer",
                        json!({"status": "rejected", "retracted": true, "reason": reason}),
                    )),
                ))]
            }
            Event::Done(done) => match *done {
                Ok(a) => {
                    if let Ok(mut u) = self.usage.lock() {
                        let (p, c) = u.unwrap_or((a.result.usage.prompt_tokens, 0));
                        *u = Some((p, c + a.result.usage.completion_tokens));
                    }
                    let mut out: Vec<SseEvent> = choice
                        .split
                        .finish()
                        .into_iter()
                        .map(|d| data(self.delta_chunk(index, d)))
                        .collect();
                    let finish = if self.calls(&a).is_some() {
                        "tool_calls"
                    } else {
                        openai::finish(a.result.finish_reason)
                    };
                    let info = serde_json::to_value(self.info(&a)).unwrap_or(Value::Null);
                    // The records not sent yet come with the last chunk.
                    let mut c = self.chunk(index, None, Some(finish), Some(("verinfer", info)));
                    c["choices"][0]["logprobs"] = self.logprobs(&a, choice.sent, choice.sent_bytes);
                    out.push(data(c));
                    out
                }
                Err(e) => {
                    Counters::inc(&gw.counters.errors);
                    vec![data(e.body())]
                }
            },
        }
    }

    /// The events after every choice ended: the usage chunk when asked, and
    /// `[DONE]`.
    pub(super) fn end(&self, include_usage: bool) -> Vec<SseEvent> {
        let mut out = Vec::new();
        let usage = self.usage.lock().ok().and_then(|u| *u);
        if let (true, Some((p, c))) = (include_usage, usage) {
            let mut u = self.chunk(0, None, None, Some(("usage", Self::usage_json(p, c))));
            u["choices"] = json!([]);
            out.push(SseEvent::default().data(u.to_string()));
        }
        out.push(SseEvent::default().data("[DONE]"));
        out
    }
}

fn decorate(h: &mut HeaderMap, a: &Answer) {
    if let Some((id, _)) = a.settled {
        if let Ok(v) = HeaderValue::from_str(&id.to_hex()) {
            h.insert("x-verinfer-receipt", v);
        }
    }
    let status = match a.status {
        Status::Verified => "verified",
        Status::Provisional => "provisional",
        Status::Rejected => "rejected",
        Status::Pending => "pending",
    };
    h.insert("x-verinfer-status", HeaderValue::from_static(status));
}
