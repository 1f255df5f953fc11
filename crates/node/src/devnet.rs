//! The devnet: every role in one process on one data directory.
//!
//! Layout of the data directory:
//!
//! ```text
//! ledger/            the ledger (wal/, receipts/ with the log key), node.key,
//!                    cosigned-checkpoint
//! treasury.key       the genesis treasury, which funds the nodes and the demo account
//! gateway/           node.key, api-keys.toml, demo.key (the demo account)
//! api-key            the demo account's API key
//! inference-N/       node.key
//! verifier-N/        node.key, witness-checkpoint
//! ```
//!
//! The first start creates the ledger (genesis: the supply in the treasury,
//! the model admitted with its prices) and the demo account; every start
//! creates and funds the node keys it is missing, so a restart with more
//! nodes works, and keeps all history. The roles talk over HTTP on
//! 127.0.0.1 exactly as separate processes do.

use crate::config::load_or_create_key;
use crate::gateway::GatewayConfig;
use crate::start::{self, Member, Running};
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use verinfer_inference::respond::Fault;
use verinfer_ledger::tx::{Genesis, GenesisTag, ModelEntry, Params, Transaction, TxBody};
use verinfer_ledger::Ledger;
use verinfer_types::records::{Amount, VerificationMode};
use verinfer_types::SecretKey;

/// One token in base units (18 decimals).
pub const TOKEN: u128 = 1_000_000_000_000_000_000;
/// Origin of the devnet's receipts log.
pub const LOG_ORIGIN: &str = "verinfer.local/devnet";
/// Price per prompt token (a millionth of a token).
pub const PRICE_IN: u128 = TOKEN / 1_000_000;
/// Price per output token.
pub const PRICE_OUT: u128 = 2 * PRICE_IN;

/// Devnet settings.
#[derive(Clone, Debug)]
pub struct DevnetOptions {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Gateway listen address.
    pub listen: String,
    /// Inference nodes.
    pub inference: usize,
    /// Verifiers.
    pub verifiers: usize,
    /// Verdicts a certificate needs.
    pub quorum: u32,
    /// Model: a known name or a GGUF path (default: SmolLM2, fetched if missing).
    pub model: Option<String>,
    /// How many inference nodes cheat.
    pub faulty_inference: usize,
    /// How they cheat.
    pub fault: Fault,
    /// Engine threads per node.
    pub threads: usize,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Origin of a new receipts log.
    pub log_origin: String,
}

impl DevnetOptions {
    /// The defaults of `verinfer devnet` on `data_dir`.
    pub fn new(data_dir: PathBuf) -> Self {
        DevnetOptions {
            data_dir,
            listen: "127.0.0.1:8080".into(),
            inference: 2,
            verifiers: 3,
            quorum: 2,
            model: None,
            faulty_inference: 0,
            fault: Fault::EditToken(1),
            threads: 1,
            heartbeat: start::HEARTBEAT,
            log_origin: LOG_ORIGIN.into(),
        }
    }
}

/// A running devnet.
pub struct Devnet {
    /// The gateway's URL.
    pub url: String,
    /// The demo account's API key.
    pub api_key: String,
    /// Every role, ledger first.
    pub roles: Vec<(String, Running)>,
    /// The ledger.
    pub ledger: Arc<Ledger>,
}

impl Devnet {
    /// Stops every role.
    pub fn stop(&self) {
        for (_, r) in self.roles.iter().rev() {
            r.stop();
        }
    }

    /// The gateway.
    pub fn gateway(&self) -> Option<&Arc<crate::gateway::Gateway>> {
        self.role("gateway").and_then(|r| r.gateway.as_ref())
    }

    /// The role named `name` (`ledger`, `gateway`, `inference-0`, `verifier-2`...).
    pub fn role(&self, name: &str) -> Option<&Running> {
        self.roles.iter().find(|(n, _)| n == name).map(|(_, r)| r)
    }
}

/// The model file the devnet runs: the one given, else the default, fetched
/// when missing.
pub fn model_path(model: Option<&str>) -> anyhow::Result<PathBuf> {
    Ok(match model {
        Some(m) => verinfer_inference::models::resolve(m)?,
        None => verinfer_inference::models::ensure_default_model()?,
    })
}

fn model_name(model: Option<&str>, path: &Path) -> String {
    match model {
        Some(m) if verinfer_inference::models::known(m).is_some() => m.to_string(),
        Some(_) => path
            .file_stem()
            .map_or("model".into(), |s| s.to_string_lossy().into_owned()),
        None => verinfer_inference::models::DEFAULT_MODEL.to_string(),
    }
}

fn submit(ledger: &Ledger, key: &SecretKey, body: TxBody) -> anyhow::Result<()> {
    let nonce = ledger.with_state(|s| s.nonce(&key.public()));
    ledger.submit(&Transaction::signed(key, nonce, body)?)?;
    Ok(())
}

/// Creates the ledger and the demo account on the first start; opens the
/// ledger, and creates and funds missing node keys. Blocking.
pub fn prepare(opts: &DevnetOptions, model_path: &Path) -> anyhow::Result<(Arc<Ledger>, String)> {
    let d = &opts.data_dir;
    std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    let ledger_dir = d.join("ledger");
    let treasury = load_or_create_key(&d.join("treasury.key"))?;
    let fresh = !ledger_dir.join("wal").exists();
    let ledger = if fresh {
        let id = start::model_id(model_path)?;
        let genesis = Genesis {
            tag: GenesisTag,
            treasury: treasury.public(),
            supply: Amount(1_000_000_000 * TOKEN),
            params: Params {
                quorum: opts.quorum,
                dispute_quorum: (opts.verifiers as u32).clamp(1, 3),
                ..Params::default()
            },
            models: vec![ModelEntry {
                id,
                name: model_name(opts.model.as_deref(), model_path),
                price_in: Amount(PRICE_IN),
                price_out: Amount(PRICE_OUT),
            }],
        };
        let log_key = SecretKey::generate();
        Ledger::init(&ledger_dir, &genesis, &opts.log_origin, &log_key)
            .with_context(|| format!("creating the ledger in {}", ledger_dir.display()))?
    } else {
        Ledger::open(&ledger_dir)
            .with_context(|| format!("opening the ledger in {}", ledger_dir.display()))?
    };
    // The demo account and its API key.
    let gw_dir = d.join("gateway");
    let demo = load_or_create_key(&gw_dir.join("demo.key"))?;
    let api_key_path = d.join("api-key");
    let api_key = match std::fs::read_to_string(&api_key_path) {
        Ok(k) => k.trim().to_string(),
        Err(_) => {
            let k = format!("vi-{}", hex::encode(rand::random::<[u8; 24]>()));
            std::fs::write(&api_key_path, format!("{k}\n"))?;
            k
        }
    };
    // Keep keys added by hand; make sure the demo key is there.
    let keys_path = gw_dir.join("api-keys.toml");
    let mut keys_file: crate::config::ApiKeysFile = match std::fs::read_to_string(&keys_path) {
        Ok(t) => toml::from_str(&t).with_context(|| format!("parsing {}", keys_path.display()))?,
        Err(_) => Default::default(),
    };
    if !keys_file.keys.iter().any(|k| k.api_key == api_key) {
        keys_file.keys.push(crate::config::ApiKeyEntry {
            api_key: api_key.clone(),
            account: PathBuf::from("demo.key"),
        });
        std::fs::write(&keys_path, toml::to_string(&keys_file)?)?;
    }
    if ledger.with_state(|s| s.balance(&demo.public())) == 0
        && ledger.with_state(|s| s.nonce(&demo.public())) == 0
    {
        submit(
            &ledger,
            &treasury,
            TxBody::Transfer {
                to: demo.public(),
                amount: Amount(1_000_000 * TOKEN),
            },
        )?;
    }
    // Node keys: each gets twice the minimum stake when it holds less.
    let min = ledger.with_state(|s| s.params.min_stake.0);
    let names = (0..opts.inference)
        .map(|i| format!("inference-{i}"))
        .chain((0..opts.verifiers).map(|i| format!("verifier-{i}")));
    for name in names {
        let key = load_or_create_key(&d.join(&name).join("node.key"))?;
        let held = ledger.with_state(|s| s.balance(&key.public()) + s.stake(&key.public()));
        if held < min {
            submit(
                &ledger,
                &treasury,
                TxBody::Transfer {
                    to: key.public(),
                    amount: Amount(2 * min - held),
                },
            )?;
        }
    }
    load_or_create_key(&d.join("ledger").join("node.key"))?;
    load_or_create_key(&gw_dir.join("node.key"))?;
    Ok((Arc::new(ledger), api_key))
}

/// Starts the devnet and waits until it serves requests.
pub async fn run(opts: DevnetOptions) -> anyhow::Result<Devnet> {
    let model = opts.model.clone();
    let path = tokio::task::spawn_blocking(move || model_path(model.as_deref())).await??;
    let o = opts.clone();
    let p = path.clone();
    let (ledger, api_key) = tokio::task::spawn_blocking(move || prepare(&o, &p)).await??;
    let d = &opts.data_dir;
    let key = |name: &str| crate::config::load_key(&d.join(name).join("node.key"));
    let mut roles: Vec<(String, Running)> = Vec::new();
    let witness_quorum = (opts.verifiers as u32).min(opts.quorum.max(1));
    let l = start::ledger(
        ledger.clone(),
        d.join("ledger"),
        key("ledger")?,
        "127.0.0.1:0",
        witness_quorum,
        Duration::from_millis(500),
        vec![key("gateway")?.public()],
    )
    .await?;
    let ledger_url = l.url.clone();
    let log_key = ledger.receipts().verifier_key().clone();
    roles.push(("ledger".into(), l));
    let member = |name: &str| -> anyhow::Result<Member> {
        Ok(Member {
            key: key(name)?,
            ledger_url: ledger_url.clone(),
            listen: "127.0.0.1:0".into(),
            public_url: None,
            heartbeat: opts.heartbeat,
        })
    };
    let load = |threads: usize| {
        let p = path.clone();
        async move {
            tokio::task::spawn_blocking(move || {
                start::load_engine(&p.display().to_string(), threads)
            })
            .await?
        }
    };
    let result: anyhow::Result<()> = async {
        for i in 0..opts.verifiers {
            let name = format!("verifier-{i}");
            let (engine, id) = load(opts.threads).await?;
            let r =
                start::verifier(member(&name)?, engine, id, log_key.clone(), d.join(&name)).await?;
            roles.push((name, r));
        }
        for i in 0..opts.inference {
            let name = format!("inference-{i}");
            let (engine, id) = load(opts.threads).await?;
            let fault = (i < opts.faulty_inference).then(|| opts.fault.clone());
            let r = start::inference(member(&name)?, engine, id, fault).await?;
            roles.push((name, r));
        }
        let api_keys = crate::config::load_api_keys(&d.join("gateway").join("api-keys.toml"))?;
        let g = start::gateway(
            key("gateway")?,
            &ledger_url,
            &opts.listen,
            GatewayConfig {
                api_keys,
                default_verification: VerificationMode::Quorum { k: opts.quorum },
                demo_api_key: Some(api_key.clone()),
                ..GatewayConfig::default()
            },
        )
        .await?;
        roles.push(("gateway".into(), g));
        Ok(())
    }
    .await;
    if let Err(e) = result {
        for (_, r) in roles.iter().rev() {
            r.stop();
        }
        return Err(e);
    }
    let devnet = Devnet {
        url: roles.last().map(|(_, r)| r.url.clone()).unwrap_or_default(),
        api_key,
        roles,
        ledger,
    };
    // Ready once the gateway sees a live inference node and a quorum of verifiers.
    let deadline = Instant::now() + Duration::from_secs(60);
    let gw = devnet.role("gateway").and_then(|r| r.gateway.clone());
    while !gw.as_ref().is_some_and(|g| g.ready()) {
        if Instant::now() > deadline {
            devnet.stop();
            anyhow::bail!("the devnet did not become ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(devnet)
}
