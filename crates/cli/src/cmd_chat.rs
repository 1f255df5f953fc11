//! `verinfer chat`: a terminal chat against the gateway's OpenAI-compatible
//! API, showing each answer's receipt and status.
//!
//! Each user line is sent with the conversation so far to
//! `POST /v1/chat/completions` with `"stream": true`; the answer is printed
//! as its server-sent events arrive. The last chunk carries a `verinfer`
//! object (receipt id, status, log index); a chunk with
//! `"verinfer": {"retracted": true}` withdraws the text streamed so far
//! (the verifiers rejected it) before the honest answer is streamed again.
//! With `--verify`, each receipt is fetched and checked as
//! `verinfer verify --url` does.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use crate::cmd_verify::{self, Pins};
use crate::config::Config;

/// `verinfer chat [OPTIONS]`
#[derive(Args, Debug)]
pub(crate) struct ChatArgs {
    /// The gateway.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// API key (default: the devnet's demo key in <data dir>/devnet/api-key).
    #[arg(long, env = "VERINFER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Data directory holding the devnet's demo key (default: the verinfer
    /// data directory).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Model name.
    #[arg(long, default_value = "smollm2-135m")]
    pub model: String,
    /// Most tokens per answer.
    #[arg(long, default_value_t = 256)]
    pub max_tokens: u32,
    /// A system prompt opening the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// After each answer, fetch its receipt and check it with no trust in
    /// the gateway (as `verinfer verify --url` does).
    #[arg(long)]
    pub verify: bool,
}

/// One chat message of the OpenAI API.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
struct ChatMessage {
    role: &'static str,
    content: String,
}

/// Runs `verinfer chat` until `/quit` or end of input.
pub(crate) fn run(args: ChatArgs, config: &Config) -> anyhow::Result<()> {
    let api_key = match &args.api_key {
        Some(k) => k.clone(),
        None => demo_key(args.data_dir.as_ref().or(config.data_dir.as_ref()))?,
    };
    let client = cmd_verify::http_client(None)?;
    let url = args.url.trim_end_matches('/').to_string();
    let tty = std::io::stdin().is_terminal();
    if tty {
        eprintln!(
            "chatting with {} at {url}; /quit or end of input (Ctrl-D) ends",
            args.model
        );
    }
    let mut history = Vec::new();
    if let Some(s) = &args.system {
        history.push(ChatMessage {
            role: "system",
            content: s.clone(),
        });
    }
    let stdin = std::io::stdin();
    let mut lines = stdin.lock();
    loop {
        if tty {
            print!("> ");
            std::io::stdout().flush()?;
        }
        let mut line = String::new();
        if lines.read_line(&mut line).context("reading stdin")? == 0 {
            break;
        }
        let line = line.trim();
        if line == "/quit" {
            break;
        }
        if line.is_empty() {
            continue;
        }
        history.push(ChatMessage {
            role: "user",
            content: line.to_string(),
        });
        match turn(&client, &url, &api_key, &args, &history)? {
            Some(answer) => {
                if args.verify {
                    verify_answer(&url, &api_key, &answer);
                }
                history.push(ChatMessage {
                    role: "assistant",
                    content: answer.text,
                });
            }
            // No answer: drop the question so the history stays a dialogue.
            None => {
                history.pop();
            }
        }
    }
    Ok(())
}

/// The devnet's demo API key, from `<data dir>/devnet/api-key`.
fn demo_key(data_dir: Option<&PathBuf>) -> anyhow::Result<String> {
    let dir = match data_dir {
        Some(d) => d.clone(),
        None => crate::config::default_data_dir()?,
    };
    let path = dir.join("devnet").join("api-key");
    let key = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "no API key: pass --api-key or set VERINFER_API_KEY (or run `verinfer devnet`, which writes {})",
            path.display()
        )
    })?;
    let key = key.trim();
    if key.is_empty() {
        bail!("{} is empty", path.display());
    }
    Ok(key.to_string())
}

/// A finished answer and what the gateway said about it.
#[derive(Debug, Default, PartialEq, Eq)]
struct Answer {
    text: String,
    status: Option<String>,
    receipt_id: Option<String>,
    log_index: Option<u64>,
}

/// One request and its streamed answer. `Ok(None)`: the gateway refused or
/// the stream broke (already reported); `Err`: the chat must end (bad key).
fn turn(
    client: &reqwest::blocking::Client,
    url: &str,
    api_key: &str,
    args: &ChatArgs,
    history: &[ChatMessage],
) -> anyhow::Result<Option<Answer>> {
    let body = serde_json::json!({
        "model": args.model,
        "messages": history,
        "max_tokens": args.max_tokens,
        "stream": true,
    });
    let sent = client
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(api_key)
        .header(reqwest::header::ACCEPT, "text/event-stream")
        .json(&body)
        .send();
    let mut resp = match sent {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot reach {url}: {e}");
            return Ok(None);
        }
    };
    let status = resp.status();
    if !status.is_success() {
        let text = resp.text().unwrap_or_default();
        let msg = cmd_verify::api_error_message(status, &text);
        if status == reqwest::StatusCode::UNAUTHORIZED {
            bail!("{msg}");
        }
        eprintln!("error: {msg}");
        return Ok(None);
    }

    let mut out = std::io::stdout();
    let mut stream = Stream::default();
    let mut parser = SseParser::default();
    let mut buf = [0u8; 4096];
    let mut done = false;
    while !done {
        let n = match resp.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                eprintln!("\nerror: the answer stream broke: {e}");
                return Ok(None);
            }
        };
        for event in parser.feed(&buf[..n]) {
            match stream.apply(&event) {
                Ok(Some(print)) => {
                    out.write_all(print.as_bytes())?;
                    out.flush()?;
                }
                Ok(None) => {}
                Err(msg) => {
                    eprintln!("\nerror: {msg}");
                    return Ok(None);
                }
            }
            done |= event == SseEvent::Done;
        }
    }
    if !done {
        for event in parser.finish() {
            if let Ok(Some(print)) = stream.apply(&event) {
                out.write_all(print.as_bytes())?;
            }
        }
    }
    if !stream.answer.text.ends_with('\n') {
        writeln!(out)?;
    }
    if !stream.finished {
        eprintln!("error: the answer stream ended before its last chunk");
        return Ok(None);
    }
    println!("{}", status_line(&stream.answer));
    Ok(Some(stream.answer))
}

/// The stream's state: the answer gathered so far.
#[derive(Debug, Default)]
struct Stream {
    answer: Answer,
    finished: bool,
}

impl Stream {
    /// Applies one event; returns text to print, or an error message.
    fn apply(&mut self, event: &SseEvent) -> Result<Option<String>, String> {
        let SseEvent::Data(data) = event else {
            return Ok(None);
        };
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| format!("the gateway sent an event that is not JSON: {e}"))?;
        if let Some(err) = chunk.get("error") {
            let msg = err
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("unknown error");
            return Err(msg.to_string());
        }
        let meta = chunk.get("verinfer");
        if meta
            .and_then(|m| m.get("retracted"))
            .and_then(Value::as_bool)
            == Some(true)
        {
            let reason = meta
                .and_then(|m| m.get("reason"))
                .and_then(Value::as_str)
                .unwrap_or("no reason given");
            self.answer.text.clear();
            return Ok(Some(format!(
                "\n[answer rejected by verifiers ({reason}); the network is re-serving it]\n"
            )));
        }
        let choice = chunk.get("choices").and_then(|c| c.get(0));
        let content = choice
            .and_then(|c| c.get("delta"))
            .and_then(|d| d.get("content"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        self.answer.text.push_str(&content);
        let finish = choice.and_then(|c| c.get("finish_reason"));
        if finish.is_some_and(|f| !f.is_null()) {
            self.finished = true;
            if let Some(m) = meta {
                self.answer.status = m.get("status").and_then(Value::as_str).map(String::from);
                self.answer.receipt_id = m
                    .get("receipt_id")
                    .and_then(Value::as_str)
                    .map(String::from);
                self.answer.log_index = m.get("log_index").and_then(Value::as_u64);
            }
        }
        Ok((!content.is_empty()).then_some(content))
    }
}

/// `[verified · receipt 3f2a…c9 · log index 12]`.
fn status_line(a: &Answer) -> String {
    let mut parts = vec![a.status.clone().unwrap_or_else(|| "no status".into())];
    match &a.receipt_id {
        Some(id) if id.len() > 8 => {
            parts.push(format!("receipt {}…{}", &id[..4], &id[id.len() - 2..]))
        }
        Some(id) => parts.push(format!("receipt {id}")),
        None => parts.push("no receipt".into()),
    }
    if let Some(i) = a.log_index {
        parts.push(format!("log index {i}"));
    }
    format!("[{}]", parts.join(" · "))
}

/// Fetches and checks the answer's receipt, printing one line.
fn verify_answer(url: &str, api_key: &str, answer: &Answer) {
    let Some(id) = &answer.receipt_id else {
        println!("[no receipt to check]");
        return;
    };
    let fetched = cmd_verify::parse_id(id).and_then(|id| {
        let client = cmd_verify::http_client(Some(Duration::from_secs(30)))?;
        let bundle =
            cmd_verify::fetch_bundle(&client, url, &id, Some(api_key), Duration::from_secs(30))?;
        Ok((id, bundle))
    });
    let (id, bundle) = match fetched {
        Ok(x) => x,
        Err(e) => {
            println!("[receipt not checked: {e:#}]");
            return;
        }
    };
    match cmd_verify::check_bundle(&bundle, Some(&id), &Pins::default()) {
        Ok(r) => {
            // The certificate covers the node's text: it must be what was shown.
            let shown = bundle
                .receipt
                .as_ref()
                .map(|rc| rc.result.output_text == answer.text);
            let verdicts = r
                .disclosed
                .as_ref()
                .map(|d| format!("{}/{} verdicts · ", d.verdicts, d.verdicts_required))
                .unwrap_or_default();
            match shown {
                Some(false) => println!(
                    "[receipt check FAILED: the certified text is not the text shown above]"
                ),
                _ => println!(
                    "[receipt checked: {} · {verdicts}in checkpoint {} with {} cosignature(s) · keys from the receipt]",
                    r.status, r.checkpoint.size, r.checkpoint.cosignatures
                ),
            }
        }
        Err(e) => println!("[receipt check FAILED: {e}]"),
    }
}

/// One server-sent event as the chat uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SseEvent {
    /// The event's data (its `data:` lines joined with newlines).
    Data(String),
    /// `data: [DONE]`: the stream is over.
    Done,
}

/// An incremental server-sent-events parser: bytes in (split anywhere, even
/// inside a character), events out.
#[derive(Debug, Default)]
pub(crate) struct SseParser {
    partial: Vec<u8>,
    data: Vec<String>,
}

impl SseParser {
    /// Feeds bytes; returns the events they complete.
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> Vec<SseEvent> {
        self.partial.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.partial.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line[..end]);
            let line = line.strip_suffix('\r').unwrap_or(&line);
            events.extend(self.line(line));
        }
        events
    }

    /// Ends the stream: returns the event left without its blank line.
    pub(crate) fn finish(&mut self) -> Vec<SseEvent> {
        let mut events = Vec::new();
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            let line = String::from_utf8_lossy(&rest).into_owned();
            events.extend(self.line(line.strip_suffix('\r').unwrap_or(&line)));
        }
        events.extend(self.line(""));
        events
    }

    fn line(&mut self, line: &str) -> Option<SseEvent> {
        if line.is_empty() {
            if self.data.is_empty() {
                return None;
            }
            let data = std::mem::take(&mut self.data).join("\n");
            return Some(if data == "[DONE]" {
                SseEvent::Done
            } else {
                SseEvent::Data(data)
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        // Only data matters here; event, id and retry are ignored.
        if field == "data" {
            self.data.push(value.to_string());
        }
        None
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::default();
        let mut ev: Vec<SseEvent> = chunks.iter().flat_map(|c| p.feed(c)).collect();
        ev.extend(p.finish());
        ev
    }

    #[test]
    fn events_and_done() {
        let s = b"data: {\"a\":1}\n\ndata: {\"b\":2}\n\ndata: [DONE]\n\n";
        assert_eq!(
            all(&[s]),
            vec![
                SseEvent::Data("{\"a\":1}".into()),
                SseEvent::Data("{\"b\":2}".into()),
                SseEvent::Done
            ]
        );
    }

    #[test]
    fn chunks_split_anywhere_give_the_same_events() {
        let s = "data: {\"t\":\"h\u{e9}llo \u{1f600}\"}\r\n\r\n: keep-alive\n\ndata: [DONE]\n\n";
        let whole = all(&[s.as_bytes()]);
        assert_eq!(whole.len(), 2);
        assert_eq!(
            whole[0],
            SseEvent::Data("{\"t\":\"h\u{e9}llo \u{1f600}\"}".into())
        );
        for cut in 0..s.len() {
            let (a, b) = s.as_bytes().split_at(cut);
            assert_eq!(all(&[a, b]), whole, "cut at {cut}");
        }
        let bytes: Vec<&[u8]> = s.as_bytes().chunks(1).collect();
        assert_eq!(all(&bytes), whole);
    }

    #[test]
    fn comments_and_other_fields_are_ignored() {
        let s = b": comment\nevent: message\nid: 7\nretry: 10\ndata:x\n\n:only a comment\n\n";
        assert_eq!(all(&[s]), vec![SseEvent::Data("x".into())]);
    }

    #[test]
    fn multi_line_data_is_joined() {
        let s = b"data: {\"a\":\ndata: 1}\n\n";
        assert_eq!(all(&[s]), vec![SseEvent::Data("{\"a\":\n1}".into())]);
    }

    #[test]
    fn last_event_without_blank_line_is_flushed() {
        assert_eq!(all(&[b"data: [DONE]"]), vec![SseEvent::Done]);
    }

    fn chunk(content: &str, finish: Option<&str>, meta: Option<Value>) -> SseEvent {
        let mut v = serde_json::json!({
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
        });
        if let Some(m) = meta {
            v["verinfer"] = m;
        }
        SseEvent::Data(v.to_string())
    }

    #[test]
    fn stream_gathers_text_retracts_and_reads_the_receipt() {
        let mut s = Stream::default();
        assert_eq!(
            s.apply(&chunk("Bad", None, None)).unwrap(),
            Some("Bad".into())
        );
        let retract = SseEvent::Data(
            serde_json::json!({"verinfer": {"status": "rejected", "retracted": true, "reason": "token_mismatch"}})
                .to_string(),
        );
        let shown = s.apply(&retract).unwrap().unwrap();
        assert!(shown.contains("rejected by verifiers (token_mismatch)"));
        assert_eq!(s.answer.text, "");
        s.apply(&chunk("Good", None, None)).unwrap();
        let id = "3f2a".to_string() + &"0".repeat(58) + "c9";
        s.apply(&chunk(
            "",
            Some("stop"),
            Some(serde_json::json!({"receipt_id": id, "status": "verified", "log_index": 12, "model_id": "ab"})),
        ))
        .unwrap();
        assert!(s.finished);
        assert_eq!(s.answer.text, "Good");
        assert_eq!(
            status_line(&s.answer),
            "[verified · receipt 3f2a…c9 · log index 12]"
        );
    }

    #[test]
    fn stream_errors_are_reported() {
        let mut s = Stream::default();
        let e = SseEvent::Data(r#"{"error":{"message":"no verifier available"}}"#.into());
        assert_eq!(s.apply(&e).unwrap_err(), "no verifier available");
        assert!(s.apply(&SseEvent::Data("not json".into())).is_err());
    }
}
