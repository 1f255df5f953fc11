//! The devnet: every role in one process on one data directory.
//!
//! Layout of the data directory:
//!
//! ```text
//! ledger/            the ledger (wal/, receipts/ with the log key), node.key,
//!                    cosigned-checkpoint
//! treasury.key       the genesis treasury, which funds the nodes and the demo account
//! gateway/           node.key, api-keys.toml, demo.key (the demo account),
//!                    auth-nonces
//! api-key            the demo account's API key
//! publisher.key      the first model's publisher (with `publisher_share_bps`)
//! publisher-NAME.key the publisher of each further model
//! inference-N/       node.key, auth-nonces (signed messages seen lately)
//! verifier-N/        node.key, witness-checkpoint, auth-nonces
//! ```
//!
//! The first start creates the ledger (genesis: the supply in the treasury,
//! the first model admitted with its prices) and the demo account; every
//! start creates and funds the node keys it is missing and publishes each
//! further model not yet listed (under a publisher of its own), so a
//! restart with more nodes or models works, and keeps all history. Every
//! inference node and verifier serves every model. The roles talk over HTTP on
//! 127.0.0.1 exactly as separate processes do.

use crate::config::{api_key_hash, load_or_create_key, write_private, ApiKeyEntry};
use crate::roles::gateway::GatewayConfig;
use crate::start::{self, Member, Running};
use anyhow::Context;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use verinfer_inference::respond::Fault;
use verinfer_inference::Engine;
use verinfer_ledger::evm::anvil::{dev_signer, Anvil};
use verinfer_ledger::evm::chain::{
    contract_params, deploy, fund_gas, initial_models, Chain, Deployment,
};
use verinfer_ledger::evm::{evm_signer, Link, B256};
use verinfer_ledger::tx::{Genesis, GenesisTag, ModelEntry, Params, Transaction, TxBody};
use verinfer_ledger::Ledger;
use verinfer_types::note::VerifierKey;
use verinfer_types::records::{Amount, VerificationMode};
use verinfer_types::{Hash, SecretKey};

/// One token in base units (18 decimals).
pub const TOKEN: u128 = 1_000_000_000_000_000_000;
/// Origin of the devnet's receipts log.
pub const LOG_ORIGIN: &str = "verinfer.local/devnet";
/// Price per prompt token (a millionth of a token).
pub const PRICE_IN: u128 = TOKEN / 1_000_000;
/// Price per output token.
pub const PRICE_OUT: u128 = 2 * PRICE_IN;
/// The share of each fee the publisher of a further model takes, unless
/// [`DevnetOptions::publisher_share_bps`] says otherwise.
pub const PUBLISHER_SHARE_BPS: u32 = 1_000;

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
    /// Models: known names or GGUF paths (none: SmolLM2, fetched if
    /// missing). The first is admitted at genesis; each further one is
    /// published by a publisher of its own.
    pub models: Vec<String>,
    /// How many inference nodes cheat.
    pub faulty_inference: usize,
    /// How they cheat.
    pub fault: Fault,
    /// Engine threads per node.
    pub threads: usize,
    /// Checkers (engines) per verifier.
    pub verifier_workers: usize,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Origin of a new receipts log.
    pub log_origin: String,
    /// Where value settles.
    pub settlement: Settlement,
    /// Publish the first model in the registry under a publisher account
    /// (`publisher.key`) taking this share of each fee, instead of
    /// admitting it at genesis; also the share of the further models'
    /// publishers (default [`PUBLISHER_SHARE_BPS`]).
    pub publisher_share_bps: Option<u32>,
}

/// Where the devnet settles value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Settlement {
    /// In the embedded ledger.
    #[default]
    Embedded,
    /// On a local anvil chain, through the contracts (the EVM backend).
    Anvil,
}

/// The devnet's chain: anvil, restarted on its state file when it dies.
pub struct DevChain {
    /// The anvil process.
    pub anvil: Arc<std::sync::Mutex<Anvil>>,
    /// The contracts.
    pub deployment: Deployment,
    /// RPC URL.
    pub url: String,
    /// The first block whose escrow movements the bridge mirrors (the
    /// demo's deposit before it was mirrored at genesis).
    pub bridge_from: u64,
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
            models: Vec::new(),
            faulty_inference: 0,
            fault: Fault::EditToken(1),
            threads: 1,
            verifier_workers: crate::roles::verifier::DEFAULT_WORKERS,
            heartbeat: start::HEARTBEAT,
            log_origin: LOG_ORIGIN.into(),
            settlement: Settlement::Embedded,
            publisher_share_bps: None,
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
    /// The chain, when value settles on one.
    pub chain: Option<DevChain>,
}

impl Devnet {
    /// Stops every role, and the chain (anvil writes its state file and
    /// exits; its supervisor does not start it again).
    pub fn stop(&self) {
        for (_, r) in self.roles.iter().rev() {
            r.stop();
        }
        if let Some(c) = &self.chain {
            verinfer_types::sync::lock(&c.anvil).stop();
        }
    }

    /// Stops as [`Devnet::stop`] does, but role by role, gateway first, each
    /// finishing its requests in flight and closing its port (all within
    /// `limit`, after which the rest stop at once); then anvil, which those
    /// requests may still settle on, is stopped and waited for.
    pub async fn shutdown(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        for (_, r) in self.roles.iter().rev() {
            r.shutdown_by(deadline).await;
        }
        if let Some(c) = &self.chain {
            let anvil = c.anvil.clone();
            let stopped = tokio::task::spawn_blocking(move || {
                verinfer_types::sync::lock(&anvil).stop();
            })
            .await;
            if let Err(e) = stopped {
                tracing::warn!(error = %e, "stopping anvil");
            }
        }
    }

    /// The gateway.
    pub fn gateway(&self) -> Option<&Arc<crate::roles::gateway::Gateway>> {
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

/// The model files of `models` (see [`model_path`]): the default model
/// when there are none.
pub fn model_paths(models: &[String]) -> anyhow::Result<Vec<PathBuf>> {
    if models.is_empty() {
        return Ok(vec![model_path(None)?]);
    }
    models.iter().map(|m| model_path(Some(m))).collect()
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
/// ledger, publishes the further models not listed yet, and creates and
/// funds missing node keys. Blocking.
pub fn prepare(opts: &DevnetOptions, model_path: &Path) -> anyhow::Result<(Arc<Ledger>, String)> {
    let d = &opts.data_dir;
    std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    let treasury = load_or_create_key(&d.join("treasury.key"))?;
    let ledger = open_ledger(opts, model_path, &treasury)?;
    publish_further_models(opts, &ledger, &treasury)?;
    let api_key = demo_account(d, &ledger, &treasury)?;
    fund_nodes(opts, &ledger, &treasury)?;
    load_or_create_key(&d.join("ledger").join("node.key"))?;
    Ok((Arc::new(ledger), api_key))
}

/// Opens the devnet's ledger; on the first start creates it, with the first
/// model admitted at genesis or published (`publisher_share_bps`).
fn open_ledger(
    opts: &DevnetOptions,
    model_path: &Path,
    treasury: &SecretKey,
) -> anyhow::Result<Ledger> {
    let d = &opts.data_dir;
    let ledger_dir = d.join("ledger");
    if ledger_dir.join("wal").exists() {
        return Ledger::open(&ledger_dir)
            .with_context(|| format!("opening the ledger in {}", ledger_dir.display()));
    }
    let name = model_name(opts.models.first().map(String::as_str), model_path);
    let genesis = Genesis {
        tag: GenesisTag,
        treasury: treasury.public(),
        supply: Amount(1_000_000_000 * TOKEN),
        params: Params {
            quorum: opts.quorum,
            dispute_quorum: (opts.verifiers as u32).clamp(1, 3),
            ..Params::default()
        },
        models: match opts.publisher_share_bps {
            Some(_) => Vec::new(),
            None => vec![ModelEntry {
                id: start::model_id(model_path)?,
                name: name.clone(),
                price_in: Amount(PRICE_IN),
                price_out: Amount(PRICE_OUT),
                per_tokens: 1,
                publisher: None,
            }],
        },
    };
    let log_key = SecretKey::generate();
    let ledger = Ledger::init(&ledger_dir, &genesis, &opts.log_origin, &log_key)
        .with_context(|| format!("creating the ledger in {}", ledger_dir.display()))?;
    if let Some(share_bps) = opts.publisher_share_bps {
        let publisher = d.join("publisher.key");
        publish(&ledger, treasury, &publisher, model_path, &name, share_bps)?;
    }
    Ok(ledger)
}

/// The demo account and its API key: the key in plain text only in the
/// `api-key` file (0600) for the newcomer, its hash in the gateway's file;
/// funded once. Returns the key.
fn demo_account(d: &Path, ledger: &Ledger, treasury: &SecretKey) -> anyhow::Result<String> {
    let gw_dir = d.join("gateway");
    let demo = load_or_create_key(&gw_dir.join("demo.key"))?;
    let api_key_path = d.join("api-key");
    let api_key = match std::fs::read_to_string(&api_key_path) {
        Ok(k) => {
            // Devnets from before kept it world-readable.
            std::fs::set_permissions(&api_key_path, std::fs::Permissions::from_mode(0o600))?;
            k.trim().to_string()
        }
        Err(_) => {
            let k = format!("vi-{}", hex::encode(rand::random::<[u8; 24]>()));
            write_private(&api_key_path, format!("{k}\n").as_bytes())?;
            k
        }
    };
    keep_api_key(&gw_dir.join("api-keys.toml"), &api_key)?;
    if ledger.with_state(|s| s.balance(&demo.public())) == 0
        && ledger.with_state(|s| s.nonce(&demo.public())) == 0
    {
        submit(
            ledger,
            treasury,
            TxBody::Transfer {
                to: demo.public(),
                amount: Amount(1_000_000 * TOKEN),
            },
        )?;
    }
    Ok(api_key)
}

/// Keeps the keys added by hand to the gateway's file at `keys_path`;
/// makes sure the demo key is there, and that no key is stored in plain
/// text.
fn keep_api_key(keys_path: &Path, api_key: &str) -> anyhow::Result<()> {
    let mut keys_file: crate::config::ApiKeysFile = match std::fs::read_to_string(keys_path) {
        Ok(t) => toml::from_str(&t).with_context(|| format!("parsing {}", keys_path.display()))?,
        Err(_) => Default::default(),
    };
    let mut changed = !keys_path.exists();
    for k in &mut keys_file.keys {
        if k.api_key.is_some() {
            k.api_key_sha256 = Some(k.hash()?);
            k.api_key = None;
            changed = true;
        }
    }
    let demo_hash = api_key_hash(api_key);
    if !keys_file
        .keys
        .iter()
        .any(|k| k.api_key_sha256 == Some(demo_hash))
    {
        keys_file
            .keys
            .push(ApiKeyEntry::new(api_key, PathBuf::from("demo.key")));
        changed = true;
    }
    if changed {
        write_private(keys_path, toml::to_string(&keys_file)?.as_bytes())?;
    }
    Ok(())
}

/// Node keys (the gateway's too: it registers with a stake like the
/// others): each is created when missing and gets twice the minimum stake
/// when it holds less.
fn fund_nodes(opts: &DevnetOptions, ledger: &Ledger, treasury: &SecretKey) -> anyhow::Result<()> {
    let min = ledger.with_state(|s| s.params.min_stake.0);
    let names = (0..opts.inference)
        .map(|i| format!("inference-{i}"))
        .chain((0..opts.verifiers).map(|i| format!("verifier-{i}")))
        .chain(["gateway".to_string()]);
    for name in names {
        let key = load_or_create_key(&opts.data_dir.join(&name).join("node.key"))?;
        let held = ledger.with_state(|s| s.balance(&key.public()) + s.stake(&key.public()));
        if held < min {
            submit(
                ledger,
                treasury,
                TxBody::Transfer {
                    to: key.public(),
                    amount: Amount(2 * min - held),
                },
            )?;
        }
    }
    Ok(())
}

/// Publishes the model at `path` as `name` with its share of fees
/// `share_bps`, under the publisher account whose key is (or is created) at
/// `publisher`, which the treasury funds for the fees.
fn publish(
    ledger: &Ledger,
    treasury: &SecretKey,
    publisher: &Path,
    path: &Path,
    name: &str,
    share_bps: u32,
) -> anyhow::Result<()> {
    let publisher = load_or_create_key(publisher)?;
    let listing = start::listing(
        path,
        name,
        PRICE_IN * 1000,
        PRICE_OUT * 1000,
        share_bps,
        Some("see the model card"),
    )?;
    submit(
        ledger,
        treasury,
        TxBody::Transfer {
            to: publisher.public(),
            amount: Amount(100 * TOKEN),
        },
    )?;
    submit(ledger, &publisher, TxBody::Publish { model: listing })
        .with_context(|| format!("publishing model {name}"))
}

/// Publishes each model after the first that the ledger does not list yet,
/// each under its own publisher (`publisher-NAME.key`).
fn publish_further_models(
    opts: &DevnetOptions,
    ledger: &Ledger,
    treasury: &SecretKey,
) -> anyhow::Result<()> {
    for m in opts.models.iter().skip(1) {
        let path = model_path(Some(m))?;
        let id = start::model_id(&path)?;
        if ledger.with_state(|s| s.models.contains_key(&id)) {
            continue;
        }
        let name = model_name(Some(m), &path);
        let share = opts.publisher_share_bps.unwrap_or(PUBLISHER_SHARE_BPS);
        let key = opts.data_dir.join(format!("publisher-{name}.key"));
        publish(ledger, treasury, &key, &path, &name, share)?;
    }
    Ok(())
}

/// Starts the devnet and waits until it serves requests.
pub async fn run(opts: DevnetOptions) -> anyhow::Result<Devnet> {
    let models = opts.models.clone();
    let paths = tokio::task::spawn_blocking(move || model_paths(&models)).await??;
    let o = opts.clone();
    let first = paths.first().context("no model")?.clone();
    let (ledger, api_key) = tokio::task::spawn_blocking(move || prepare(&o, &first)).await??;
    let chain = match opts.settlement {
        Settlement::Embedded => None,
        Settlement::Anvil => Some(start_chain(&opts, &ledger).await?),
    };
    let l = start_ledger_role(&opts, &ledger, chain.as_ref()).await?;
    let members = Members {
        opts: &opts,
        ledger_url: l.url.clone(),
        files: paths.iter().map(|p| p.display().to_string()).collect(),
    };
    let mut roles: Vec<(String, Running)> = vec![("ledger".into(), l)];
    let log_key = ledger.receipts().verifier_key().clone();
    if let Err(e) = members.start(&mut roles, log_key, &api_key).await {
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
        chain,
    };
    let ids = paths
        .iter()
        .map(|p| start::model_id(p))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if let Err(e) = wait_ready(&devnet, &ids).await {
        devnet.stop();
        return Err(e);
    }
    Ok(devnet)
}

/// The key of the devnet's node `name`.
fn node_key(d: &Path, name: &str) -> anyhow::Result<SecretKey> {
    crate::config::load_key(&d.join(name).join("node.key"))
}

/// Starts the ledger role, settling on `chain` when there is one.
async fn start_ledger_role(
    opts: &DevnetOptions,
    ledger: &Arc<Ledger>,
    chain: Option<&DevChain>,
) -> anyhow::Result<Running> {
    let d = &opts.data_dir;
    let witness_quorum = (opts.verifiers as u32).min(opts.quorum.max(1));
    let mut l = start::ledger(
        ledger.clone(),
        d.join("ledger"),
        node_key(d, "ledger")?,
        "127.0.0.1:0",
        witness_quorum,
        Duration::from_millis(500),
        vec![node_key(d, "gateway")?.public()],
        crate::chronicle::MINUTE_MS,
    )
    .await?;
    if let Some(c) = chain {
        let ledger_key = node_key(d, "ledger")?;
        let settler = start::settle_on_chain(
            &mut l,
            (&c.url).into(),
            c.deployment.contract,
            ledger_key.clone(),
            &ledger_key,
            // anvil mines at once: a transaction unmined for seconds was
            // lost (anvil restarted), not outbid.
            verinfer_ledger::evm::chain::FeePolicy {
                stuck_after: Duration::from_secs(3),
                ..Default::default()
            },
            Some(verinfer_ledger::evm::settler::BridgeConfig {
                treasury: crate::config::load_key(&d.join("treasury.key"))?,
                from_block: c.bridge_from,
                // anvil mines only on demand: a movement is final at once.
                confirmations: 0,
            }),
        )
        .await?;
        // Every devnet account's link, the treasury's included (the nodes
        // also post theirs when they join).
        for k in accounts(d)? {
            settler.add_link(Link::new(&k)?)?;
        }
        l.tasks.push(supervise(c.anvil.clone()));
    }
    Ok(l)
}

/// What the verifiers, inference nodes and gateway of the devnet start with.
struct Members<'a> {
    opts: &'a DevnetOptions,
    ledger_url: String,
    /// The model files every node runs.
    files: Vec<String>,
}

impl Members<'_> {
    fn member(&self, name: &str) -> anyhow::Result<Member> {
        let d = &self.opts.data_dir;
        Ok(Member {
            key: node_key(d, name)?,
            ledger_url: self.ledger_url.clone(),
            listen: "127.0.0.1:0".into(),
            public_url: None,
            heartbeat: self.opts.heartbeat,
            dir: d.join(name),
        })
    }

    /// `count` engines for each model.
    async fn load(&self, count: usize) -> anyhow::Result<Vec<(Vec<Engine>, Hash)>> {
        let (files, threads) = (self.files.clone(), self.opts.threads);
        tokio::task::spawn_blocking(move || start::load_checkers(&files, threads, count)).await?
    }

    /// Starts the verifiers, the inference nodes and the gateway, in that
    /// order, onto `roles`.
    async fn start(
        &self,
        roles: &mut Vec<(String, Running)>,
        log_key: VerifierKey,
        api_key: &str,
    ) -> anyhow::Result<()> {
        let opts = self.opts;
        for i in 0..opts.verifiers {
            let name = format!("verifier-{i}");
            let engines = self.load(opts.verifier_workers.max(1)).await?;
            let r = start::verifier(
                self.member(&name)?,
                engines,
                log_key.clone(),
                crate::roles::verifier::DEFAULT_QUEUE,
            )
            .await?;
            roles.push((name, r));
        }
        for i in 0..opts.inference {
            let name = format!("inference-{i}");
            let engines = self
                .load(1)
                .await?
                .into_iter()
                .map(|(mut e, id)| Ok((e.pop().context("no engine")?, id)))
                .collect::<anyhow::Result<_>>()?;
            let fault = (i < opts.faulty_inference).then(|| opts.fault.clone());
            let r = start::inference(
                self.member(&name)?,
                engines,
                fault,
                crate::roles::inference::DEFAULT_QUEUE,
            )
            .await?;
            roles.push((name, r));
        }
        let gw_dir = opts.data_dir.join("gateway");
        let api_keys = crate::config::load_api_keys(&gw_dir.join("api-keys.toml"))?;
        let mut gw = self.member("gateway")?;
        gw.listen = opts.listen.clone();
        let g = start::registered_gateway(
            gw,
            GatewayConfig {
                api_keys,
                default_verification: VerificationMode::Quorum { k: opts.quorum },
                demo_api_key: Some(api_key.to_string()),
                data_dir: Some(gw_dir),
                ..GatewayConfig::default()
            },
        )
        .await?;
        roles.push(("gateway".into(), g));
        Ok(())
    }
}

/// Waits until the gateway sees, for every model of `ids`, a live
/// inference node and a quorum of verifiers (60 s at most).
async fn wait_ready(devnet: &Devnet, ids: &[Hash]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let gw = devnet.gateway();
    while !gw.is_some_and(|g| g.ready() && ids.iter().all(|id| g.ready_for(id))) {
        if Instant::now() > deadline {
            anyhow::bail!("the devnet did not become ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Every key of the devnet that pays, is paid or signs on chain.
fn accounts(d: &Path) -> anyhow::Result<Vec<SecretKey>> {
    let mut keys = vec![
        crate::config::load_key(&d.join("treasury.key"))?,
        crate::config::load_key(&d.join("ledger").join("node.key"))?,
    ];
    let gw = d.join("gateway");
    for e in crate::config::load_api_keys(&gw.join("api-keys.toml"))? {
        keys.push(e.1);
    }
    for entry in std::fs::read_dir(d)? {
        let p = entry?.path().join("node.key");
        let name = p
            .parent()
            .and_then(|x| x.file_name())
            .map(|x| x.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.starts_with("inference-") || n.starts_with("verifier-"))
            && p.exists()
        {
            keys.push(crate::config::load_key(&p)?);
        }
    }
    // The publishers of published models are paid on chain too.
    for entry in std::fs::read_dir(d)? {
        let p = entry?.path();
        let name = p.file_name().map(|x| x.to_string_lossy().into_owned());
        if name.is_some_and(|n| n.starts_with("publisher") && n.ends_with(".key")) {
            keys.push(crate::config::load_key(&p)?);
        }
    }
    Ok(keys)
}

/// Starts anvil on `chain/anvil-state.json`; on a new chain deploys the token
/// and the contract (the treasury's EVM key holds the supply) and deposits
/// the demo account's balance; registers on chain, with the minimum stake,
/// every inference node and verifier not yet registered.
async fn start_chain(opts: &DevnetOptions, ledger: &Ledger) -> anyhow::Result<DevChain> {
    let d = opts.data_dir.clone();
    let dir = d.join("chain");
    std::fs::create_dir_all(&dir)?;
    let state = dir.join("anvil-state.json");
    let anvil = tokio::task::spawn_blocking(move || Anvil::start(&state, 0)).await??;
    let url = anvil.url();
    let anvil = Arc::new(std::sync::Mutex::new(anvil));
    let deployment_file = dir.join("deployment.json");
    let treasury = crate::config::load_key(&d.join("treasury.key"))?;
    let gas = verinfer_ledger::evm::chain::U256::from(100 * TOKEN);
    let deployment: Deployment = match std::fs::read(&deployment_file) {
        Ok(b) => serde_json::from_slice(&b)
            .with_context(|| format!("parsing {}", deployment_file.display()))?,
        Err(_) => {
            let t = evm_signer(&treasury)?;
            fund_gas(&url, dev_signer(), &[t.address()], gas).await?;
            let (genesis_params, models, supply) = ledger.with_state(|s| {
                (
                    s.params.clone(),
                    s.models.values().cloned().collect::<Vec<_>>(),
                    s.total_supply,
                )
            });
            let slash_quorum = u16::try_from(opts.verifiers.saturating_sub(1).clamp(1, 3))?;
            let params = contract_params(&genesis_params, slash_quorum, t.address())?;
            let dep = deploy(
                &url,
                t,
                verinfer_ledger::evm::chain::U256::from(supply),
                params,
                initial_models(&models),
            )
            .await?;
            let demo = crate::config::load_key(&d.join("gateway").join("demo.key"))?;
            let c = Chain::at(&url, evm_signer(&treasury)?, dep.contract).await?;
            let balance = ledger.with_state(|s| s.balance(&demo.public()));
            c.deposit(
                evm_signer(&demo)?.address(),
                verinfer_ledger::evm::chain::U256::from(balance),
            )
            .await?;
            let from = c.head().await? + 1;
            std::fs::write(dir.join("bridge-from-block"), format!("{from}\n"))?;
            std::fs::write(&deployment_file, serde_json::to_vec_pretty(&dep)?)?;
            dep
        }
    };

    let treasury_chain = Chain::at(&url, evm_signer(&treasury)?, deployment.contract)
        .await
        .with_context(|| format!("the chain in {} lost its contract: remove {} and the devnet's ledger/ to start over", dir.display(), dir.display()))?;
    let from_file = dir.join("bridge-from-block");
    let bridge_from: u64 = match std::fs::read_to_string(&from_file) {
        Ok(t) => t
            .trim()
            .parse()
            .with_context(|| format!("parsing {}", from_file.display()))?,
        // A devnet from before the bridge: mirror from now on.
        Err(_) => {
            let from = treasury_chain.head().await? + 1;
            std::fs::write(&from_file, format!("{from}\n"))?;
            from
        }
    };
    let min = ledger.with_state(|s| s.params.min_stake.0);
    let mut members = vec![crate::config::load_key(&d.join("ledger").join("node.key"))?];
    let names = (0..opts.inference)
        .map(|i| (1u8, format!("inference-{i}")))
        .chain((0..opts.verifiers).map(|i| (2u8, format!("verifier-{i}"))));
    for (role, name) in names {
        let k = crate::config::load_key(&d.join(&name).join("node.key"))?;
        let signer = evm_signer(&k)?;
        let a = signer.address();
        members.push(k.clone());
        if treasury_chain.stake(a).await? > 0 {
            continue;
        }
        fund_gas(&url, dev_signer(), &[a], gas).await?;
        let stake = verinfer_ledger::evm::chain::U256::from(min);
        treasury_chain.send_tokens(a, stake).await?;
        let c = Chain::at(&url, signer, deployment.contract).await?;
        c.register(role, B256::from(k.public().to_bytes()), &name, stake)
            .await?;
    }
    // The ledger role sends the settlements: it needs gas too.
    let ledger_addr = evm_signer(&members[0])?.address();
    let have = treasury_chain.gas_balance(ledger_addr).await?;
    if have < gas / verinfer_ledger::evm::chain::U256::from(2) {
        fund_gas(&url, dev_signer(), &[ledger_addr], gas).await?;
    }
    Ok(DevChain {
        anvil,
        deployment,
        url,
        bridge_from,
    })
}

/// Restarts anvil on its state file whenever it exits on its own; ends once
/// anvil was stopped (a shutdown is not a crash).
fn supervise(anvil: Arc<std::sync::Mutex<Anvil>>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let a = anvil.clone();
            let r = tokio::task::spawn_blocking(move || {
                let mut a = verinfer_types::sync::lock(&a);
                (!a.stopped()).then(|| a.revive())
            })
            .await;
            match r {
                Ok(None) => return,
                Ok(Some(Ok(true))) => {
                    tracing::warn!("anvil exited: restarted it on its state file")
                }
                Ok(Some(Err(e))) => tracing::warn!(error = %e, "cannot restart anvil"),
                Ok(Some(Ok(false))) | Err(_) => {}
            }
        }
    })
}

impl std::fmt::Debug for Devnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Devnet").finish_non_exhaustive()
    }
}
impl std::fmt::Debug for DevChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevChain").finish_non_exhaustive()
    }
}
