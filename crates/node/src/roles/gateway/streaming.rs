//! How answers are shaped for OpenAI clients: one JSON response, or
//! server-sent events chunk by chunk (text, tool calls, log-probabilities,
//! usage, the `verinfer` block with the receipt).

use super::counters::Counters;
use super::flow::{Answer, Event};
use super::openai::{self, ApiError, Status, VerinferInfo};
use super::state::Gateway;
use super::tools;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::Event as SseEvent;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use verinfer_types::Hash;

/// What every chunk of one answer shares.
#[derive(Clone)]
pub(super) struct Shape {
    pub(super) chat: bool,
    pub(super) model: String,
    pub(super) model_id: Hash,
    pub(super) id: String,
    pub(super) created: u64,
    /// Functions the answer may call: its text is then held back and sent
    /// whole, as a call or as content, once the answer is done.
    pub(super) tools: Option<tools::Tools>,
    /// Prompt and completion tokens of the choices answered so far.
    pub(super) usage: Arc<std::sync::Mutex<Option<(u32, u32)>>>,
}

impl Shape {
    /// The call an answer makes, if it is one (never for a rejected answer).
    fn call(&self, a: &Answer) -> Option<(String, String)> {
        let t = self
            .tools
            .as_ref()
            .filter(|_| a.status != Status::Rejected)?;
        t.call(&a.result.output_text)
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

    /// The choice's log-probabilities in the endpoint's format.
    fn logprobs(&self, a: &Answer) -> Value {
        let entries = match a.status {
            Status::Rejected => None,
            _ => a.result.logprobs.as_deref(),
        };
        if self.chat {
            openai::chat_logprobs(entries)
        } else {
            openai::completion_logprobs(entries)
        }
    }

    /// The whole answer as one JSON response.
    pub(super) fn whole(&self, answers: &[Answer]) -> Response {
        let many = answers.len() > 1;
        let choices: Vec<Value> = answers
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let text = if a.status == Status::Rejected {
                    ""
                } else {
                    a.result.output_text.as_str()
                };
                let finish = openai::finish(a.result.finish_reason);
                let mut choice = if let Some(call) = self.call(a) {
                    let calls = tools::tool_calls(&self.call_id(i), &call);
                    json!({"index": i, "message": {"role": "assistant", "content": null, "tool_calls": calls, "refusal": null}, "logprobs": self.logprobs(a), "finish_reason": "tool_calls"})
                } else if self.chat {
                    json!({"index": i, "message": {"role": "assistant", "content": text, "refusal": null}, "logprobs": self.logprobs(a), "finish_reason": finish})
                } else {
                    json!({"index": i, "text": text, "logprobs": self.logprobs(a), "finish_reason": finish})
                };
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

    /// The server-sent events of one flow event of choice `index`.
    pub(super) fn sse(&self, gw: &Gateway, index: usize, ev: Event) -> Vec<SseEvent> {
        let data = |v: Value| SseEvent::default().data(v.to_string());
        match ev {
            Event::Text(_) if self.tools.is_some() => Vec::new(),
            Event::Text(t) => vec![data(self.chunk(index, Some(&t), None, None))],
            Event::Retract { reason } => vec![data(self.chunk(
                index,
                Some(""),
                None,
                Some((
                    "verinfer",
                    json!({"status": "rejected", "retracted": true, "reason": reason}),
                )),
            ))],
            Event::Done(done) => match *done {
                Ok(a) => {
                    if let Ok(mut u) = self.usage.lock() {
                        let (p, c) = u.unwrap_or((a.result.usage.prompt_tokens, 0));
                        *u = Some((p, c + a.result.usage.completion_tokens));
                    }
                    let mut out = Vec::new();
                    let mut finish = openai::finish(a.result.finish_reason);
                    if let Some(call) = self.call(&a) {
                        // OpenAI's stream of a call: the id and name with the
                        // arguments, then the finish chunk.
                        let mut calls = tools::tool_calls(&self.call_id(index), &call);
                        calls[0]["index"] = json!(0);
                        let mut c = self.chunk(index, None, None, None);
                        c["choices"][0]["delta"] =
                            json!({"role": "assistant", "content": null, "tool_calls": calls});
                        out.push(data(c));
                        finish = "tool_calls";
                    } else if self.tools.is_some() && a.status != Status::Rejected {
                        out.push(data(self.chunk(
                            index,
                            Some(&a.result.output_text),
                            None,
                            None,
                        )));
                    }
                    let info = serde_json::to_value(self.info(&a)).unwrap_or(Value::Null);
                    // The log-probabilities come with the signed Result, so
                    // they arrive with the choice's last chunk.
                    let mut c = self.chunk(index, None, Some(finish), Some(("verinfer", info)));
                    c["choices"][0]["logprobs"] = self.logprobs(&a);
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
    };
    h.insert("x-verinfer-status", HeaderValue::from_static(status));
}
