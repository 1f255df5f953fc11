//! Test helpers shared by the node's and the CLI's end-to-end tests
//! (feature `testing`): an API client that speaks the gateway's chat
//! API (streaming or not), fetches receipts once a checkpoint covers them,
//! and reads JSON endpoints; the keys a client pins for a devnet; signed
//! messages sent straight to a role, and a gateway of one's own registered in
//! a devnet's ledger (for attack tests).

use anyhow::Context;
use serde_json::{json, Value};
use std::time::{Duration, Instant};
use verinfer_types::note::{VerifierKey, ALG_COSIGNATURE_V1};
use verinfer_types::Hash;
use verinfer_verify::receipt::{witness_name, ReceiptBundle, Trust};

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

/// GETs `url` and parses its JSON body.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> anyhow::Result<T> {
    Ok(http.get(url).send().await?.json().await?)
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

/// POSTs `body` to `base` + `path` signed by `key` for the node whose key
/// is `to`, as any holder of a key can; returns the status and the body.
pub async fn signed_post(
    http: &reqwest::Client,
    key: &verinfer_types::SecretKey,
    to: &verinfer_types::PublicKey,
    base: &str,
    path: &str,
    body: Vec<u8>,
) -> anyhow::Result<(u16, String)> {
    let headers = crate::auth::sign(key, to, "POST", path, &body);
    let resp = http
        .post(format!("{base}{path}"))
        .headers(headers)
        .body(body)
        .send()
        .await?;
    Ok((resp.status().as_u16(), resp.text().await?))
}

/// Gives `key` twice the minimum stake from the treasury of the devnet in
/// `dir` and registers it as a gateway at `endpoint` through the ledger's
/// public API: what anyone who bought tokens can do.
pub async fn register_gateway(
    net: &crate::devnet::Devnet,
    dir: &std::path::Path,
    key: &verinfer_types::SecretKey,
    endpoint: &str,
) -> anyhow::Result<()> {
    use verinfer_ledger::tx::{Role, TxBody};
    let treasury = crate::config::load_key(&dir.join("treasury.key"))?;
    let min = net.ledger.with_state(|s| s.params.min_stake.0);
    let ledger = crate::client::LedgerClient::new(
        &net.role("ledger").context("ledger")?.url,
        treasury.clone(),
    );
    ledger
        .submit_as(
            &treasury,
            TxBody::Transfer {
                to: key.public(),
                amount: verinfer_types::records::Amount(2 * min),
            },
        )
        .await?;
    let ledger = crate::client::LedgerClient::new(&ledger.base, key.clone());
    crate::membership::join(&ledger, key, Role::Gateway, endpoint, &[]).await
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

/// The keys a client pins for the devnet in `dir`, taken from what the
/// network published when it started and never from a receipt: the receipts
/// log's `log_key` (read from the ledger), the cosignature key of each of its
/// `verifiers` (`verifier-{i}/node.key`) and the `witness_quorum` it was
/// started with. A receipt checked against these proves the network's log
/// and witnesses vouch for it, not only that it is consistent.
pub fn pinned_trust(
    log_key: VerifierKey,
    dir: &std::path::Path,
    verifiers: usize,
    witness_quorum: usize,
) -> anyhow::Result<Trust> {
    let witnesses = (0..verifiers)
        .map(|i| {
            let key = crate::config::load_key(&dir.join(format!("verifier-{i}")).join("node.key"))?
                .public();
            Ok(VerifierKey::new(
                &witness_name(&key),
                ALG_COSIGNATURE_V1,
                key,
            )?)
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(Trust {
        log_key,
        witnesses,
        witness_quorum,
    })
}

/// A ledger role and a gateway over a ledger holding `n` settled receipts
/// (signed test records, no model), for the explorer's load figures.
pub struct ExplorerFixture {
    /// The gateway's URL.
    pub url: String,
    /// The roles.
    pub roles: Vec<crate::start::Running>,
    _dir: tempfile::TempDir,
}

impl Drop for ExplorerFixture {
    fn drop(&mut self) {
        for r in &self.roles {
            r.stop();
        }
    }
}

/// Builds the [`ExplorerFixture`]: `n` receipts settled in batches of 256.
pub async fn explorer_fixture(n: usize) -> anyhow::Result<ExplorerFixture> {
    use std::sync::Arc;
    use verinfer_ledger::testing::World;
    use verinfer_ledger::tx::TxBody;
    use verinfer_ledger::{Ledger, Transaction};
    use verinfer_types::records::{Amount, Receipt};
    use verinfer_types::{Record, SecretKey};

    let dir = tempfile::tempdir()?;
    let ledger_dir = dir.path().join("ledger");
    let ledger = tokio::task::spawn_blocking(move || -> anyhow::Result<_> {
        let mut w = World::new();
        let ledger = Arc::new(Ledger::init(
            &ledger_dir,
            &w.genesis(),
            "fixture.verinfer/log",
            &SecretKey::generate(),
        )?);
        for tx in w.setup() {
            ledger.submit(&tx)?;
        }
        // Many payers reserve at once so their appends share fsyncs.
        let payers: Vec<SecretKey> = (0..64).map(|_| SecretKey::generate()).collect();
        for p in &payers {
            let tx = w.tx(
                &w.treasury.clone(),
                TxBody::Transfer {
                    to: p.public(),
                    amount: Amount(1_000 * verinfer_ledger::testing::TOKEN),
                },
            );
            ledger.submit(&tx)?;
        }
        let per = n.div_ceil(payers.len());
        let requests: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = payers
                .iter()
                .enumerate()
                .map(|(u, payer)| {
                    let (ledger, w) = (ledger.clone(), &w);
                    s.spawn(move || -> anyhow::Result<Vec<_>> {
                        let mut out = Vec::new();
                        for i in 0..per.min(n.saturating_sub(u * per)) {
                            let req = w.request(payer, (u * per + i) as u64, 1);
                            let body = TxBody::Reserve {
                                request: req.hash()?,
                                amount: w.max_fee(),
                                ttl_secs: verinfer_ledger::testing::RESERVE_TTL_SECS,
                            };
                            ledger.submit(&Transaction::signed(payer, i as u64, body)?)?;
                            out.push(req);
                        }
                        Ok(out)
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .map_err(|_| anyhow::anyhow!("reserving thread panicked"))?
                })
                .collect::<anyhow::Result<Vec<Vec<_>>>>()
        })?
        .into_iter()
        .flatten()
        .collect();
        let receipts: Vec<Receipt> =
            ledger.with_state(|s| requests.iter().map(|r| w.receipt(s, r, 1)).collect());
        let relayer = w.verifiers[0].clone();
        for chunk in receipts.chunks(256) {
            let nonce = ledger.with_state(|s| s.nonce(&relayer.public()));
            ledger.submit(&Transaction::signed(
                &relayer,
                nonce,
                TxBody::Settle {
                    receipts: chunk.to_vec(),
                },
            )?)?;
        }
        Ok(ledger)
    })
    .await??;
    let ledger_role = crate::start::ledger(
        ledger,
        dir.path().join("ledger"),
        SecretKey::generate(),
        "127.0.0.1:0",
        // The test world's verifiers are not running: checkpoints are final
        // with the log's signature alone.
        0,
        std::time::Duration::from_millis(500),
        Vec::new(),
        crate::chronicle::MINUTE_MS,
    )
    .await?;
    let gateway = crate::start::gateway(
        SecretKey::generate(),
        &ledger_role.url,
        "127.0.0.1:0",
        crate::roles::gateway::GatewayConfig::default(),
    )
    .await?;
    Ok(ExplorerFixture {
        url: gateway.url.clone(),
        roles: vec![ledger_role, gateway],
        _dir: dir,
    })
}

/// Sends `request_line` (e.g. `GET /log/%2e%2e/x HTTP/1.1`) to `url`'s host
/// exactly as written, over a raw TCP socket (no client normalises the
/// path), and returns the response's status and body.
pub async fn raw_request(url: &str, request_line: &str) -> anyhow::Result<(u16, String)> {
    use std::io::{Read, Write};
    let host = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("not an http URL: {url}"))?
        .trim_end_matches('/')
        .to_string();
    let line = request_line.to_string();
    let text = tokio::task::spawn_blocking(move || -> anyhow::Result<String> {
        let mut s = std::net::TcpStream::connect(&host)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(format!("{line}\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())?;
        let mut out = Vec::new();
        s.read_to_end(&mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    })
    .await??;
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_string());
    Ok((status, body))
}

impl std::fmt::Debug for ExplorerFixture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExplorerFixture").finish_non_exhaustive()
    }
}
