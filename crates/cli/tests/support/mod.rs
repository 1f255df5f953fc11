//! Helpers shared by the tests that run `verinfer` as separate processes.

#![allow(dead_code)] // each test binary uses a part

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use verinfer_node::testing::get_json;

/// A child process killed when dropped.
pub(crate) struct Proc {
    pub name: String,
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_verinfer"));
    c.env("VERINFER_LOG", "warn");
    c
}

/// Starts `verinfer node` with `config` and waits for its `ready at URL` line.
pub(crate) fn node(role: &str, config: &Path) -> (Proc, String) {
    let mut cmd = bin();
    cmd.args(["node", "--role", role, "--config"]).arg(config);
    spawn_ready(cmd, &config.display().to_string())
}

/// Starts `cmd` (a `verinfer` command that prints `ready at URL` once it
/// serves) and waits (up to 3 min) for that line; `name` names it in
/// failures.
pub(crate) fn spawn_ready(mut cmd: Command, name: &str) -> (Proc, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn verinfer");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    // Keeps draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(url) = l.split(" ready at ").nth(1) {
                let _ = tx.send(url.trim().to_string());
            }
        }
    });
    let p = Proc {
        name: name.to_string(),
        child,
    };
    match rx.recv_timeout(std::time::Duration::from_secs(180)) {
        Ok(url) => (p, url),
        Err(e) => panic!("{name} not ready: {e}"),
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub(crate) fn write(path: PathBuf, text: String) -> PathBuf {
    std::fs::write(&path, text).expect("write config");
    path
}

/// Runs `verinfer ARGS`, asserting success; returns stdout.
pub(crate) fn run_ok(args: &[&str]) -> String {
    let out = bin().args(args).output().expect("run verinfer");
    assert!(
        out.status.success(),
        "verinfer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

/// `verinfer devnet --init-only` in `d`: the demo's API key and the model.
pub(crate) fn init_devnet(d: &Path) -> (String, PathBuf) {
    run_ok(&[
        "devnet",
        "--init-only",
        "--data-dir",
        d.to_str().expect("path"),
    ]);
    let api_key = std::fs::read_to_string(d.join("api-key"))
        .expect("api key")
        .trim()
        .to_string();
    let model = verinfer_inference::models::resolve("smollm2-135m").expect("model fetched by init");
    (api_key, model)
}

/// The config of inference node or verifier `name` of the devnet in `d`.
pub(crate) fn member_config(d: &Path, name: &str, ledger_url: &str, model: &Path) -> PathBuf {
    write(
        d.join(name).join("node.toml"),
        format!(
            "key = \"node.key\"\nlisten = \"127.0.0.1:0\"\nledger_url = \"{ledger_url}\"\nmodel = \"{}\"\nthreads = 1\nheartbeat_ms = 500\n",
            model.display()
        ),
    )
}

/// Waits (up to 60 s) until the gateway at `url` sees `inference` inference
/// nodes and `verifiers` verifiers.
pub(crate) async fn wait_ready(http: &reqwest::Client, url: &str, inference: u64, verifiers: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let v: serde_json::Value = get_json(http, &format!("{url}/v1/models"))
            .await
            .expect("models");
        let m = &v["data"][0]["verinfer"];
        // Inference nodes and verifiers take work only from a registered
        // gateway: ready once the gateway's own registration is in the ledger.
        let n: serde_json::Value = get_json(http, &format!("{url}/v1/network"))
            .await
            .expect("network");
        let registered = n["nodes"]
            .as_array()
            .is_some_and(|nodes| nodes.iter().any(|x| x["key"] == n["gateway"]));
        if registered && m["inference_nodes"] == inference && m["verifiers"] == verifiers {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "network not ready: {v}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}

/// [`init_devnet`] on a ledger created first as the devnet creates it, but
/// whose reservations last at most `ttl_secs` (`reserve_ttl_max_secs`), so
/// that a test sees the reservations of requests lost in a crash expire.
pub(crate) fn init_devnet_with_ttl(d: &Path, ttl_secs: u64) -> (String, PathBuf) {
    use verinfer_ledger::tx::{Genesis, GenesisTag, ModelEntry, Params};
    use verinfer_node::devnet::{LOG_ORIGIN, PRICE_IN, PRICE_OUT, TOKEN};
    use verinfer_types::records::Amount;
    let model = verinfer_node::devnet::model_path(None).expect("the default model");
    let treasury =
        verinfer_node::config::load_or_create_key(&d.join("treasury.key")).expect("treasury key");
    let genesis = Genesis {
        tag: GenesisTag,
        treasury: treasury.public(),
        supply: Amount(1_000_000_000 * TOKEN),
        params: Params {
            quorum: 2,
            dispute_quorum: 3,
            reserve_ttl_max_secs: ttl_secs,
            ..Params::default()
        },
        models: vec![ModelEntry {
            id: verinfer_node::start::model_id(&model).expect("model id"),
            name: verinfer_inference::models::DEFAULT_MODEL.into(),
            price_in: Amount(PRICE_IN),
            price_out: Amount(PRICE_OUT),
            per_tokens: 1,
            publisher: None,
        }],
    };
    drop(
        verinfer_ledger::Ledger::init(
            &d.join("ledger"),
            &genesis,
            LOG_ORIGIN,
            &verinfer_types::SecretKey::generate(),
        )
        .expect("the ledger"),
    );
    init_devnet(d)
}

/// How one chat ended, as a client sees it.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// 200, settled: its receipt.
    Acked(verinfer_types::Hash),
    /// 200, delivered before it could be certified: the gateway certifies
    /// and settles it later (docs/design.md, "Delivered, then certified").
    Pending,
    /// An HTTP error: status, `Retry-After`, body.
    Refused(u16, Option<String>, String),
    /// No HTTP answer (the gateway was down or its connection broke).
    Unreachable(String),
}

/// One non-streamed chat of `max_tokens` through the gateway at `url`, with
/// the status and `Retry-After` of an error kept.
pub(crate) async fn chat_outcome(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    prompt: &str,
    max_tokens: u32,
) -> Outcome {
    let sent = http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&serde_json::json!({
            "model": "smollm2-135m",
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
        }))
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => return Outcome::Unreachable(e.to_string()),
    };
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = match resp.text().await {
        Ok(b) => b,
        Err(e) => return Outcome::Unreachable(e.to_string()),
    };
    if status != 200 {
        return Outcome::Refused(status, retry_after, body);
    }
    let verinfer = serde_json::from_str::<serde_json::Value>(&body)
        .map(|v| v["verinfer"].clone())
        .unwrap_or_default();
    match verinfer["receipt_id"]
        .as_str()
        .and_then(|id| id.parse().ok())
    {
        Some(id) => Outcome::Acked(id),
        None if verinfer["status"] == "pending" => Outcome::Pending,
        None => Outcome::Refused(status, retry_after, body),
    }
}

/// The ledger summary served by the gateway at `url`.
pub(crate) async fn summary(http: &reqwest::Client, url: &str) -> verinfer_node::wire::SummaryView {
    get_json(http, &format!("{url}/v1/ledger/summary"))
        .await
        .expect("summary")
}

/// Waits (up to `secs`) until the ledger behind the gateway at `url` holds
/// nothing in escrow; returns how long that took.
pub(crate) async fn wait_escrow_zero(
    http: &reqwest::Client,
    url: &str,
    secs: u64,
) -> std::time::Duration {
    let t = std::time::Instant::now();
    loop {
        // The gateway may still be starting: an unanswered read is retried.
        let s: anyhow::Result<verinfer_node::wire::SummaryView> =
            get_json(http, &format!("{url}/v1/ledger/summary")).await;
        if let Ok(s) = s {
            assert!(s.conserved(), "supply conserved: {s:?}");
            if s.escrow == 0 {
                return t.elapsed();
            }
        }
        assert!(
            t.elapsed() < std::time::Duration::from_secs(secs),
            "escrow not back to 0 within {secs} s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// The keys the devnet initialised in `d` published (its receipts log key,
/// its 3 verifiers as witnesses, a witness quorum of 2), read from its data
/// directory, never from a receipt.
pub(crate) fn devnet_trust(d: &Path) -> verinfer_verify::receipt::Trust {
    let log_key = verinfer_ledger::Ledger::open(&d.join("ledger"))
        .expect("the initialised ledger")
        .receipts()
        .verifier_key()
        .clone();
    verinfer_node::testing::pinned_trust(log_key, d, 3, 2).expect("the devnet's keys")
}

/// The official openai client 1.109.1 and its full requirement set (`pip
/// freeze` of a venv where it installed cleanly with Python 3.11).
pub(crate) const OPENAI_1_109_1: &[&str] = &[
    "openai==1.109.1",
    "annotated-types==0.8.0",
    "anyio==4.16.0",
    "certifi==2026.10.19.post1",
    "distro==1.9.0",
    "h11==0.16.0",
    "httpcore==1.0.9",
    "httpx==0.28.1",
    "idna==3.20",
    "jiter==0.19.0",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "sniffio==1.3.1",
    "tqdm==4.70.1",
    "typing-inspection==0.4.5",
    "typing_extensions==4.16.0",
];
