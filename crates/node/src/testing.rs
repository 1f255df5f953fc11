//! Test helpers shared by the node's and the CLI's end-to-end tests
//! (feature `test-util`): an API client that speaks the gateway's chat
//! API (streaming or not) and fetches receipts once a checkpoint covers them.

use serde_json::{json, Value};
use std::time::{Duration, Instant};
use verinfer_types::Hash;
use verinfer_verify::receipt::ReceiptBundle;

/// One answer as a client sees it.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// The answer text (the retracted text removed), or the error body.
    pub text: String,
    /// The `verinfer` object (the last chunk's, when streamed).
    pub verinfer: Value,
    /// The `x-verinfer-receipt` header, if any.
    pub header_receipt: Option<String>,
    /// Retractions seen in the stream.
    pub retractions: usize,
}

impl Reply {
    /// The receipt id, if the answer was settled.
    pub fn receipt(&self) -> Option<Hash> {
        self.verinfer.get("receipt_id")?.as_str()?.parse().ok()
    }

    /// The status in the `verinfer` object.
    pub fn verification(&self) -> &str {
        self.verinfer
            .get("status")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// Sends a chat with one user message.
pub async fn chat(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    prompt: &str,
    max_tokens: u32,
    stream: bool,
) -> anyhow::Result<Reply> {
    post(
        http,
        url,
        key,
        json!({
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "stream": stream,
        }),
    )
    .await
}

/// POSTs a body to `/v1/chat/completions` and reads the answer, parsing a
/// server-sent event stream when `body.stream` is true.
pub async fn post(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    body: Value,
) -> anyhow::Result<Reply> {
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let resp = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    let header_receipt = resp
        .headers()
        .get("x-verinfer-receipt")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let raw = resp.text().await?;
    if status != 200 {
        return Ok(Reply {
            status,
            text: raw,
            verinfer: Value::Null,
            header_receipt,
            retractions: 0,
        });
    }
    if !stream {
        let v: Value = serde_json::from_str(&raw)?;
        return Ok(Reply {
            status,
            text: v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            verinfer: v["verinfer"].clone(),
            header_receipt,
            retractions: 0,
        });
    }
    let mut reply = Reply {
        status,
        text: String::new(),
        verinfer: Value::Null,
        header_receipt,
        retractions: 0,
    };
    let mut done = false;
    for line in raw.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            break;
        }
        let v: Value = serde_json::from_str(data)?;
        if v.get("error").is_some() {
            anyhow::bail!("error event in stream: {v}");
        }
        if v["verinfer"]["retracted"].as_bool() == Some(true) {
            reply.retractions += 1;
            reply.text.clear();
        } else if v["verinfer"].is_object() {
            reply.verinfer = v["verinfer"].clone();
        }
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            reply.text.push_str(t);
        }
    }
    anyhow::ensure!(done, "stream ended without [DONE]");
    Ok(reply)
}

/// Fetches receipt `id` until a cosigned checkpoint covers it.
pub async fn bundle(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    id: &Hash,
    wait: Duration,
) -> anyhow::Result<ReceiptBundle> {
    let deadline = Instant::now() + wait;
    loop {
        let resp = http
            .get(format!("{url}/v1/receipts/{id}"))
            .bearer_auth(key)
            .send()
            .await?;
        if resp.status().is_success() {
            let b: ReceiptBundle = resp.json().await?;
            if b.checkpoint.is_some() {
                return Ok(b);
            }
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "receipt {id} not covered by a checkpoint in {wait:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
