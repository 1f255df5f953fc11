//! `verinfer chat` against a minimal stand-in gateway: the streamed answer,
//! a retraction, the status line, `--verify` on the answer's receipt, and an
//! invalid API key ending the chat with exit 1.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};

use verinfer_verify::receipt::ReceiptBundle;
use verinfer_verify::testing::signed_bundle;

/// A gateway answering every chat request with a retracted answer, then the
/// receipt's own text; `GET /v1/receipts/..` serves `bundle`. With `deny`,
/// every request gets 401. Records the chat request bodies.
fn gateway(bundle: ReceiptBundle, deny: bool) -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let mut stream = stream.unwrap();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let (mut head, mut len) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                if let Some(v) = line.to_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                head.push_str(&line);
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            let (status, ctype, reply) = if deny {
                (
                    401,
                    "application/json",
                    r#"{"error":{"message":"invalid API key","type":"authentication_error","param":null,"code":"invalid_api_key"}}"#.to_string(),
                )
            } else if head.starts_with("GET /v1/receipts/") {
                (
                    200,
                    "application/json",
                    serde_json::to_string(&bundle).unwrap(),
                )
            } else {
                log.lock().unwrap().push(String::from_utf8(body).unwrap());
                let text = &bundle.receipt.as_ref().unwrap().result.output_text;
                let (first, rest) = text.split_at(8);
                let chunk = |content: &str| {
                    serde_json::json!({"object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]})
                };
                let events = [
                    chunk("Saturn"),
                    serde_json::json!({"verinfer": {"status": "rejected", "retracted": true, "reason": "token_mismatch"}}),
                    chunk(first),
                    chunk(rest),
                    serde_json::json!({"object": "chat.completion.chunk",
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                        "verinfer": {"receipt_id": bundle.id.to_hex(), "status": "verified",
                                     "log_index": bundle.index, "model_id": bundle.leaf.model.to_hex()}}),
                ];
                let mut sse = String::from(": keep-alive\n\n");
                for e in events {
                    sse.push_str(&format!("data: {e}\n\n"));
                }
                sse.push_str("data: [DONE]\n\n");
                (200, "text/event-stream", sse)
            };
            write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{reply}",
                reply.len()
            )
            .unwrap();
        }
    });
    (url, seen)
}

fn chat(url: &str, extra: &[&str], input: &str) -> Output {
    let mut args = vec!["chat", "--url", url, "--api-key", "sk-test"];
    args.extend_from_slice(extra);
    let mut child = Command::new(env!("CARGO_BIN_EXE_verinfer"))
        .args(&args)
        .env("VERINFER_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn streams_retracts_keeps_history_and_verifies() {
    let b = signed_bundle();
    let (url, seen) = gateway(b.clone(), false);
    let out = chat(
        &url,
        &["--verify", "--system", "Be brief."],
        "Largest planet?\nAnd again?\n",
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout
        .contains("[answer rejected by verifiers (token_mismatch); the network is re-serving it]"));
    assert!(
        stdout.contains("Jupiter is the largest planet.\n"),
        "{stdout}"
    );
    let id = b.id.to_hex();
    let status = format!(
        "[verified · receipt {}…{} · log index 5]",
        &id[..4],
        &id[62..]
    );
    assert!(stdout.contains(&status), "{stdout}");
    assert!(
        stdout.contains("[receipt checked: verified · 2/2 verdicts"),
        "{stdout}"
    );

    let bodies = seen.lock().unwrap().clone();
    assert_eq!(bodies.len(), 2);
    let second: serde_json::Value = serde_json::from_str(&bodies[1]).unwrap();
    assert_eq!(second["stream"], true);
    // The retracted text is not in the history; the honest answer is.
    assert_eq!(
        second["messages"],
        serde_json::json!([
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Largest planet?"},
            {"role": "assistant", "content": "Jupiter is the largest planet."},
            {"role": "user", "content": "And again?"},
        ])
    );
}

#[test]
fn invalid_api_key_exits_1() {
    let (url, _) = gateway(signed_bundle(), true);
    let out = chat(&url, &[], "hello\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("error: invalid API key"));
}
