//! Starting a role: bind, serve, join the network, keep heartbeats going.
//! `verinfer node` starts one role from its [`NodeConfig`]; the devnet
//! starts them all in one process through the same functions.

use crate::auth::Gate;
use crate::client::LedgerClient;
use crate::config::{load_api_keys, load_or_create_key, NodeConfig};
use crate::membership::Registry;
use crate::roles::gateway::{Gateway, GatewayConfig};
use crate::roles::inference::InferenceNode;
use crate::roles::ledger::LedgerNode;
use crate::roles::verifier::VerifierNode;
use crate::{http, membership};
use anyhow::{bail, Context};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;
use verinfer_inference::respond::Fault;
use verinfer_inference::{Engine, EngineOptions, PrefixCache, PrefixLimits};
use verinfer_ledger::tx::Role;
use verinfer_ledger::Ledger;
use verinfer_types::note::VerifierKey;
use verinfer_types::{Hash, SecretKey};
use verinfer_verify::rules::MarginRule;

/// Default heartbeat period.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// How often the ledger role releases expired reservations.
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(30);

/// The four roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleKind {
    /// The ledger and its log.
    Ledger,
    /// The API.
    Gateway,
    /// Runs models.
    Inference,
    /// Checks results, witnesses the log.
    Verifier,
}

impl FromStr for RoleKind {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        Ok(match s {
            "ledger" => RoleKind::Ledger,
            "gateway" => RoleKind::Gateway,
            "inference" => RoleKind::Inference,
            "verifier" => RoleKind::Verifier,
            other => bail!("unknown role {other:?}: use ledger, gateway, inference or verifier"),
        })
    }
}

/// A started role.
pub struct Running {
    /// Its base URL.
    pub url: String,
    /// Its tasks (server, heartbeats, loops); aborted by [`Running::stop`].
    pub tasks: Vec<JoinHandle<()>>,
    /// The gateway, for the gateway role.
    pub gateway: Option<Arc<Gateway>>,
    /// The ledger role's state, for the ledger role.
    pub ledger: Option<Arc<LedgerNode>>,
    /// Closed once the server has shut its port and every connection.
    serving: Serving,
}

impl Running {
    /// Stops every task of the role (the ledger role writes its open
    /// bookkeeping first).
    pub fn stop(&self) {
        self.abort();
        self.flush();
    }

    /// Stops the role as [`Running::stop`] does, but waits until its server
    /// has closed its port and every connection (requests in flight finish
    /// first) before the ledger role writes its bookkeeping: after this,
    /// nothing answers at `url` (regression: a request sent just after
    /// `stop` was still answered on a pooled connection).
    pub async fn shutdown(&self) {
        self.abort();
        let mut serving = self.serving.clone();
        while serving.changed().await.is_ok() {}
        self.flush();
    }

    /// [`Running::shutdown`] until `deadline`; then the role stops at once,
    /// dropping the requests still in flight (a stop takes bounded time).
    pub async fn shutdown_by(&self, deadline: tokio::time::Instant) {
        if tokio::time::timeout_at(deadline, self.shutdown())
            .await
            .is_err()
        {
            tracing::warn!(url = %self.url, "requests still in flight at shutdown: dropped");
            self.stop();
        }
    }

    fn abort(&self) {
        for t in &self.tasks {
            t.abort();
        }
    }

    fn flush(&self) {
        if let Some(l) = &self.ledger {
            if let Err(e) = l.flush() {
                tracing::warn!(error = %e, "cannot write the chronicle at shutdown");
            }
        }
    }
}

/// Watches a server task: the channel closes when the task ends.
type Serving = tokio::sync::watch::Receiver<()>;

/// Serves `router`; aborting the returned handle shuts the server down as
/// an exiting process would: no new connections, and idle keep-alive
/// connections closed (regression: a stopped in-process node kept answering
/// on a gateway's pooled connection). The shutdown itself runs on; the
/// returned [`Serving`] closes when it is over.
fn spawn_server(
    listener: tokio::net::TcpListener,
    router: axum::Router,
) -> (JoinHandle<()>, Serving) {
    let (alive, mut stopped) = tokio::sync::watch::channel(());
    let (serving, watched) = tokio::sync::watch::channel(());
    tokio::spawn(async move {
        let _serving = serving;
        let shutdown = async move {
            // Err once the sender is dropped, with the aborted handle's task.
            while stopped.changed().await.is_ok() {}
        };
        // With each connection's peer address (the gateway serves its demo
        // key to loopback clients only).
        let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
        if let Err(e) = axum::serve(listener, service)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::error!(error = %e, "server stopped");
        }
    });
    let stop = tokio::spawn(async move {
        let _alive = alive;
        std::future::pending::<()>().await
    });
    (stop, watched)
}

/// The model id (SHA-256 of the file) of `path`, computed once per process.
pub fn model_id(path: &Path) -> anyhow::Result<Hash> {
    static IDS: Mutex<Option<HashMap<PathBuf, Hash>>> = Mutex::new(None);
    let mut ids = verinfer_types::sync::lock(&IDS);
    let ids = ids.get_or_insert_with(HashMap::new);
    if let Some(h) = ids.get(path) {
        return Ok(*h);
    }
    let hex = verinfer_inference::models::file_sha256(path)?;
    let h: Hash = hex
        .parse()
        .map_err(|_| anyhow::anyhow!("bad model hash {hex}"))?;
    ids.insert(path.to_path_buf(), h);
    Ok(h)
}

/// The registry listing of the GGUF file at `path`: its id, and the
/// architecture and context window its metadata names; the licence is
/// `licence`, else the file's `general.license`. Checked by the ledger's
/// own rule, so a bad listing fails here with its reason.
pub fn listing(
    path: &Path,
    name: &str,
    price_in_per_1k: u128,
    price_out_per_1k: u128,
    share_bps: u32,
    licence: Option<&str>,
) -> anyhow::Result<verinfer_ledger::tx::ModelListing> {
    let gguf = verinfer_inference::gguf::Gguf::open(path)
        .with_context(|| format!("reading {} as a GGUF model", path.display()))?;
    let architecture = gguf
        .get_str("general.architecture")
        .context("the file names no architecture")?
        .to_string();
    let context = gguf
        .get_u64(&format!("{architecture}.context_length"))
        .context("the file names no context length")?;
    let licence = match licence {
        Some(l) => l.to_string(),
        None => gguf
            .get_str("general.license")
            .map(str::to_string)
            .map_err(|_| anyhow::anyhow!("the file names no licence: give one"))?,
    };
    let listing = verinfer_ledger::tx::ModelListing {
        tag: verinfer_ledger::tx::ModelTag,
        id: model_id(path)?,
        name: name.to_string(),
        architecture,
        context: u32::try_from(context).context("context length out of range")?,
        licence,
        price_in_per_1k: verinfer_types::records::Amount(price_in_per_1k),
        price_out_per_1k: verinfer_types::records::Amount(price_out_per_1k),
        share_bps,
    };
    listing.check().map_err(anyhow::Error::msg)?;
    Ok(listing)
}

/// Loads the engine for `model` (a known name or a path) with `threads`,
/// keeping the prefixes it computes in a cache of its own (under the
/// file's hash).
pub fn load_engine(model: &str, threads: usize) -> anyhow::Result<(Engine, Hash)> {
    let path = verinfer_inference::models::resolve(model)?;
    let id = model_id(&path)?;
    let mut engine = Engine::load(
        &path,
        EngineOptions {
            threads,
            ..Default::default()
        },
    )
    .with_context(|| format!("loading model {}", path.display()))?;
    engine.share_prefix_cache(PrefixCache::new(PrefixLimits::default()), id.0);
    Ok((engine, id))
}

/// Loads `count` engines for `model`, each with `threads` (a verifier's
/// checkers), sharing one cache of computed prefixes: a conversation's
/// next check finds its earlier turns whichever checker runs it.
pub fn load_engines(
    model: &str,
    threads: usize,
    count: usize,
) -> anyhow::Result<(Vec<Engine>, Hash)> {
    let mut engines = Vec::with_capacity(count);
    let mut id = None;
    let cache = PrefixCache::new(PrefixLimits::default());
    for _ in 0..count {
        let (mut e, h) = load_engine(model, threads)?;
        e.share_prefix_cache(cache.clone(), h.0);
        engines.push(e);
        id = Some(h);
    }
    Ok((engines, id.context("no engine to load")?))
}

/// The models of `models` (known names or paths), each model file once:
/// two names of one file load one engine.
fn distinct(models: &[String]) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    let mut out = Vec::new();
    for m in models {
        let id = model_id(&verinfer_inference::models::resolve(m)?)?;
        if !ids.contains(&id) {
            ids.push(id);
            out.push(m.clone());
        }
    }
    Ok(out)
}

/// Loads an engine for each of `models` with `threads` (an inference
/// node's), each model file once.
pub fn load_models(models: &[String], threads: usize) -> anyhow::Result<Vec<(Engine, Hash)>> {
    distinct(models)?
        .iter()
        .map(|m| load_engine(m, threads))
        .collect()
}

/// Loads `workers` engines for each of `models` with `threads` (a
/// verifier's checkers, see [`load_engines`]), each model file once.
pub fn load_checkers(
    models: &[String],
    threads: usize,
    workers: usize,
) -> anyhow::Result<Vec<(Vec<Engine>, Hash)>> {
    distinct(models)?
        .iter()
        .map(|m| load_engines(m, threads, workers))
        .collect()
}

/// Starts the ledger role on an existing ledger directory.
#[allow(clippy::too_many_arguments)] // each is one setting of the role
pub async fn ledger(
    ledger: Arc<Ledger>,
    dir: PathBuf,
    key: SecretKey,
    listen: &str,
    witness_quorum: u32,
    checkpoint_interval: Duration,
    reporters: Vec<verinfer_types::PublicKey>,
    minute_ms: u64,
) -> anyhow::Result<Running> {
    let node = LedgerNode::new(
        ledger,
        dir,
        key.clone(),
        witness_quorum,
        reporters,
        minute_ms,
    )?;
    let (listener, url) = http::bind(listen).await?;
    let (server, serving) = spawn_server(listener, node.router());
    let n = node.clone();
    let cosign = tokio::spawn(async move { n.cosign_loop(checkpoint_interval).await });
    let sweep = tokio::spawn(node.clone().sweep_loop(key, SWEEP_INTERVAL));
    Ok(Running {
        url,
        tasks: vec![server, cosign, sweep],
        gateway: None,
        ledger: Some(node),
        serving,
    })
}

/// Makes a started ledger role settle on an EVM chain: its settler sends
/// with `sender`'s derived EVM key to the contract at `contract` on `rpc`,
/// priced by `fees`, and asks the registered verifiers to sign (calls signed
/// by `node_key`); with `bridge`, it also mirrors the escrow's movements.
pub async fn settle_on_chain(
    running: &mut Running,
    rpc: verinfer_ledger::evm::chain::Rpc,
    contract: verinfer_ledger::evm::Address,
    node_key: SecretKey,
    sender: &SecretKey,
    fees: verinfer_ledger::evm::chain::FeePolicy,
    bridge: Option<verinfer_ledger::evm::settler::BridgeConfig>,
) -> anyhow::Result<Arc<verinfer_ledger::evm::settler::Settler>> {
    let node = running
        .ledger
        .clone()
        .context("only the ledger role settles")?;
    let url = rpc.url.clone();
    let chain = verinfer_ledger::evm::chain::Chain::open(
        rpc,
        Some(verinfer_ledger::evm::evm_signer(sender)?),
        fees,
        contract,
    )
    .await
    .with_context(|| format!("connecting to the settlement contract {contract} at {url}"))?;
    let ledger = node.ledger().clone();
    let cosigners = Arc::new(crate::roles::ledger::evm::HttpCosigners::new(
        ledger.clone(),
        node_key,
    ));
    let mut settler = verinfer_ledger::evm::settler::Settler::new(
        chain,
        ledger,
        cosigners,
        node.dir().to_path_buf(),
    )?;
    if let Some(b) = bridge {
        settler = settler.with_bridge(b)?;
    }
    let settler = Arc::new(settler);
    running
        .tasks
        .push(node.settle_on_chain(settler.clone(), Duration::from_secs(1))?);
    Ok(settler)
}

/// What a gateway, an inference node or a verifier needs to join.
pub struct Member {
    /// Node key.
    pub key: SecretKey,
    /// The ledger's URL.
    pub ledger_url: String,
    /// Listen address.
    pub listen: String,
    /// URL others call (default: the bound address).
    pub public_url: Option<String>,
    /// Heartbeat period.
    pub heartbeat: Duration,
    /// Data directory (the nonces of signed messages; a verifier's witness
    /// state).
    pub dir: PathBuf,
}

impl Member {
    /// The ledger's client with this node's key.
    fn ledger(&self) -> LedgerClient {
        LedgerClient::new(&self.ledger_url, self.key.clone())
    }

    /// The ledger's registry, read again in the background by the returned task.
    async fn registry(&self) -> anyhow::Result<(Arc<Registry>, JoinHandle<()>)> {
        let registry = Registry::connect(self.ledger()).await.with_context(|| {
            format!("reading the registry of the ledger at {}", self.ledger_url)
        })?;
        let refresh = tokio::spawn(registry.clone().refresh_loop());
        Ok((registry, refresh))
    }
}

async fn join_and_beat(
    m: &Member,
    role: Role,
    router: axum::Router,
    models: Vec<Hash>,
) -> anyhow::Result<(String, Vec<JoinHandle<()>>, Serving)> {
    let (listener, bound) = http::bind(&m.listen).await?;
    let url = m.public_url.clone().unwrap_or(bound);
    let (server, serving) = spawn_server(listener, router);
    let ledger = m.ledger();
    if let Err(e) = membership::join(&ledger, &m.key, role, &url, &models).await {
        server.abort();
        return Err(e);
    }
    let beats = tokio::spawn(membership::heartbeats(
        ledger,
        m.key.clone(),
        role,
        url.clone(),
        models,
        m.heartbeat,
    ));
    Ok((url, vec![server, beats], serving))
}

/// Starts an inference node running `engines` (each with its model id),
/// with at most `queue` requests waiting or running; it declares every
/// model when it joins.
pub async fn inference(
    m: Member,
    engines: Vec<(Engine, Hash)>,
    fault: Option<Fault>,
    queue: usize,
) -> anyhow::Result<Running> {
    let (registry, refresh) = m.registry().await?;
    let gate = Gate::open(m.key.public(), &m.dir)
        .with_context(|| format!("opening the nonce file in {}", m.dir.display()))?;
    let mut models: Vec<Hash> = engines.iter().map(|(_, id)| *id).collect();
    // `Serve` lists ids strictly increasing.
    models.sort();
    models.dedup();
    let node = InferenceNode::new(engines, m.key.clone(), fault, gate, registry, queue);
    let (url, mut tasks, serving) =
        match join_and_beat(&m, Role::Inference, node.router(), models).await {
            Ok(started) => started,
            Err(e) => {
                refresh.abort();
                return Err(e);
            }
        };
    tasks.push(refresh);
    Ok(Running {
        url,
        tasks,
        gateway: None,
        ledger: None,
        serving,
    })
}

/// Starts a verifier checking each model of `engines` (its engines: one
/// checker each, at most `queue` more checks waiting), witnessing the log
/// whose key is `log_key`, keeping its state in the member's directory.
pub async fn verifier(
    m: Member,
    engines: Vec<(Vec<Engine>, Hash)>,
    log_key: VerifierKey,
    queue: usize,
) -> anyhow::Result<Running> {
    if MarginRule::for_engine(verinfer_inference::ENGINE_VERSION).is_none() {
        bail!("this build's engine has no margin rule");
    }
    let (registry, refresh) = m.registry().await?;
    let node = VerifierNode::new(
        engines,
        m.key.clone(),
        log_key,
        m.dir.clone(),
        registry,
        queue,
    )?;
    node.set_ledger(LedgerClient::new(&m.ledger_url, m.key.clone()));
    let (url, mut tasks, serving) =
        match join_and_beat(&m, Role::Verifier, node.router(), Vec::new()).await {
            Ok(started) => started,
            Err(e) => {
                refresh.abort();
                return Err(e);
            }
        };
    tasks.push(refresh);
    // Optimistic answers are watched by the verifiers, not only by the
    // gateway that served them.
    tasks.push(tokio::spawn(
        node.watch_loop(crate::roles::verifier::watch::WATCH_INTERVAL),
    ));
    Ok(Running {
        url,
        tasks,
        gateway: None,
        ledger: None,
        serving,
    })
}

/// Starts a gateway that is not registered in the ledger (inference nodes
/// and verifiers do not serve it: it can only read, as the explorer does).
pub async fn gateway(
    key: SecretKey,
    ledger_url: &str,
    listen: &str,
    config: GatewayConfig,
) -> anyhow::Result<Running> {
    let (listener, url) = http::bind(listen).await?;
    let gw = Gateway::start(key, ledger_url, config).await?;
    let (server, serving) = spawn_server(listener, gw.router());
    Ok(Running {
        url,
        tasks: vec![server],
        gateway: Some(gw),
        ledger: None,
        serving,
    })
}

/// Starts a gateway and registers it in the ledger as inference nodes and
/// verifiers register (stake, endpoint, heartbeats): they serve only
/// registered gateways.
pub async fn registered_gateway(m: Member, config: GatewayConfig) -> anyhow::Result<Running> {
    let gw = Gateway::start(m.key.clone(), &m.ledger_url, config).await?;
    let (url, tasks, serving) = join_and_beat(&m, Role::Gateway, gw.router(), Vec::new()).await?;
    Ok(Running {
        url,
        tasks,
        gateway: Some(gw),
        ledger: None,
        serving,
    })
}

/// Starts `role` as `config` says (`verinfer node`).
pub async fn from_config(role: RoleKind, c: &NodeConfig) -> anyhow::Result<Running> {
    let s = Setup::read(c)?;
    match role {
        RoleKind::Ledger => ledger_from_config(c, s).await,
        RoleKind::Gateway => gateway_from_config(c, s).await,
        RoleKind::Inference => inference_from_config(c, s).await,
        RoleKind::Verifier => verifier_from_config(c, s).await,
    }
}

/// What every role reads from its configuration.
struct Setup {
    data_dir: PathBuf,
    key: SecretKey,
    listen: String,
    heartbeat: Duration,
    public_url: Option<String>,
    ledger_url: Option<String>,
}

impl Setup {
    fn read(c: &NodeConfig) -> anyhow::Result<Self> {
        let data_dir = c.data_dir.clone().unwrap_or_else(|| PathBuf::from("."));
        let key_path = c.key.clone().unwrap_or_else(|| data_dir.join("node.key"));
        Ok(Setup {
            key: load_or_create_key(&key_path)?,
            listen: c.listen.clone().unwrap_or_else(|| "127.0.0.1:0".into()),
            heartbeat: Duration::from_millis(
                c.heartbeat_ms.unwrap_or(HEARTBEAT.as_millis() as u64),
            ),
            public_url: c.public_url.clone(),
            ledger_url: c.ledger_url.clone(),
            data_dir,
        })
    }

    fn ledger_url(&self) -> anyhow::Result<String> {
        self.ledger_url
            .clone()
            .context("the config needs `ledger_url` for this role")
    }

    fn member(&self) -> anyhow::Result<Member> {
        Ok(Member {
            key: self.key.clone(),
            ledger_url: self.ledger_url()?,
            listen: self.listen.clone(),
            public_url: self.public_url.clone(),
            heartbeat: self.heartbeat,
            dir: self.data_dir.clone(),
        })
    }
}

/// The EVM settlement a ledger's configuration asks for.
struct EvmSettings {
    rpc: verinfer_ledger::evm::chain::Rpc,
    contract: verinfer_ledger::evm::Address,
    sender: SecretKey,
    fees: verinfer_ledger::evm::chain::FeePolicy,
    bridge: Option<verinfer_ledger::evm::settler::BridgeConfig>,
}

/// `[ledger]`'s EVM settings (None for the embedded backend).
fn evm_settings(c: &NodeConfig, key: &SecretKey) -> anyhow::Result<Option<EvmSettings>> {
    let l = &c.ledger;
    match l.backend.as_deref().unwrap_or("embedded") {
        "embedded" => return Ok(None),
        "evm" => {}
        other => bail!("unknown ledger backend {other:?}: use embedded or evm"),
    }
    let rpc = verinfer_ledger::evm::chain::Rpc {
        url: l
            .rpc_url
            .clone()
            .context("backend = \"evm\" needs rpc_url")?,
        ca_pem: match &l.rpc_ca_file {
            Some(p) => Some(
                std::fs::read(p).with_context(|| format!("reading rpc_ca_file {}", p.display()))?,
            ),
            None => None,
        },
    };
    let contract = l
        .contract
        .as_deref()
        .context("backend = \"evm\" needs contract")?
        .parse()
        .map_err(|e| anyhow::anyhow!("contract: {e}"))?;
    let sender = match &l.evm_key {
        Some(p) => crate::config::load_key(p)?,
        None => key.clone(),
    };
    let bridge = match &l.bridge_key {
        Some(p) => Some(verinfer_ledger::evm::settler::BridgeConfig {
            treasury: crate::config::load_key(p)?,
            from_block: l.bridge_from_block.unwrap_or(0),
            confirmations: l.confirmations.unwrap_or(12),
        }),
        None => {
            tracing::warn!("no bridge_key: deposits and withdrawals made on chain are not mirrored in the ledger");
            None
        }
    };
    Ok(Some(EvmSettings {
        rpc,
        contract,
        sender,
        fees: fee_policy(c)?,
        bridge,
    }))
}

/// `[ledger]`'s fee policy for settlement transactions.
fn fee_policy(c: &NodeConfig) -> anyhow::Result<verinfer_ledger::evm::chain::FeePolicy> {
    let mut fees = verinfer_ledger::evm::chain::FeePolicy::default();
    if let Some(s) = c.ledger.stuck_after_secs {
        fees.stuck_after = Duration::try_from_secs_f64(s)
            .ok()
            .filter(|d| !d.is_zero())
            .with_context(|| format!("stuck_after_secs = {s}: give seconds > 0"))?;
    }
    if let Some(g) = c.ledger.max_fee_per_gas_gwei {
        if !(g.is_finite() && g > 0.0) {
            bail!("max_fee_per_gas_gwei = {g}: give gwei > 0");
        }
        fees.max_fee_per_gas = Some((g * 1e9) as u128);
    }
    Ok(fees)
}

async fn ledger_from_config(c: &NodeConfig, s: Setup) -> anyhow::Result<Running> {
    let dir = s.data_dir.clone();
    let l = tokio::task::spawn_blocking(move || Ledger::open(&dir))
        .await?
        .with_context(|| format!("opening the ledger in {}", s.data_dir.display()))?;
    let evm = evm_settings(c, &s.key)?;
    let reporters = c
        .ledger
        .reporters
        .iter()
        .map(|k| {
            k.parse()
                .map_err(|_| anyhow::anyhow!("reporter {k:?} is not a public key"))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut running = ledger(
        Arc::new(l),
        s.data_dir,
        s.key.clone(),
        &s.listen,
        c.ledger.witness_quorum.unwrap_or(2),
        Duration::from_millis(c.ledger.checkpoint_interval_ms.unwrap_or(500)),
        reporters,
        c.ledger
            .minute_ms
            .unwrap_or(crate::chronicle::MINUTE_MS)
            .max(1),
    )
    .await?;
    if let Some(e) = evm {
        let settled = settle_on_chain(
            &mut running,
            e.rpc,
            e.contract,
            s.key,
            &e.sender,
            e.fees,
            e.bridge,
        )
        .await;
        if let Err(e) = settled {
            running.stop();
            return Err(e);
        }
    }
    Ok(running)
}

async fn gateway_from_config(c: &NodeConfig, s: Setup) -> anyhow::Result<Running> {
    let api_keys = match &c.gateway.api_keys {
        Some(p) => load_api_keys(p)?,
        None => Vec::new(),
    };
    let d = GatewayConfig::default();
    let g = &c.gateway;
    let config = GatewayConfig {
        api_keys,
        default_verification: verinfer_types::records::VerificationMode::Quorum {
            k: g.quorum.unwrap_or(2),
        },
        rate_per_minute: g.rate_per_minute.unwrap_or(d.rate_per_minute),
        burst: g.burst.unwrap_or(d.burst),
        max_body_bytes: g.max_body_bytes.unwrap_or(d.max_body_bytes),
        liveness: g.liveness_ms.map_or(d.liveness, Duration::from_millis),
        demo_api_key: None,
        data_dir: Some(s.data_dir.clone()),
    };
    // Where value settles on a chain, the accounts pay from their EVM
    // addresses: publish each account's link.
    let ledger = LedgerClient::new(&s.ledger_url()?, s.key.clone());
    for (_, account) in &config.api_keys {
        let link = verinfer_ledger::evm::Link::new(account)?;
        ledger
            .link(&link)
            .await
            .with_context(|| format!("publishing the EVM link of {}", account.public()))?;
    }
    registered_gateway(s.member()?, config).await
}

async fn inference_from_config(c: &NodeConfig, s: Setup) -> anyhow::Result<Running> {
    let fault = c
        .fault
        .as_deref()
        .map(Fault::from_str)
        .transpose()
        .map_err(|e| anyhow::anyhow!("fault: {e}"))?;
    let (models, threads) = (c.model_list(), c.threads.unwrap_or(1));
    let engines = tokio::task::spawn_blocking(move || load_models(&models, threads)).await??;
    let queue = c.queue.unwrap_or(crate::roles::inference::DEFAULT_QUEUE);
    inference(s.member()?, engines, fault, queue).await
}

async fn verifier_from_config(c: &NodeConfig, s: Setup) -> anyhow::Result<Running> {
    let log_key = match &c.log_key {
        Some(k) => k.parse()?,
        None => LedgerClient::new(&s.ledger_url()?, s.key.clone())
            .params()
            .await
            .context("asking the ledger for its log key")?
            .log_key
            .parse()?,
    };
    let workers = c
        .workers
        .unwrap_or(crate::roles::verifier::DEFAULT_WORKERS)
        .max(1);
    let (models, threads) = (c.model_list(), c.threads.unwrap_or(1));
    let engines =
        tokio::task::spawn_blocking(move || load_checkers(&models, threads, workers)).await??;
    let queue = c.queue.unwrap_or(crate::roles::verifier::DEFAULT_QUEUE);
    verifier(s.member()?, engines, log_key, queue).await
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").finish_non_exhaustive()
    }
}
impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A verifier's checkers share one cache of computed prefixes, filed
    /// under the model file's hash; an inference node's engine has its own.
    #[test]
    fn a_verifiers_checkers_share_one_prefix_cache() -> anyhow::Result<()> {
        let path = verinfer_inference::models::ensure_default_model()?;
        let model = path.display().to_string();
        let (mut engines, _) = load_engines(&model, 1, 2)?;
        let (node, _) = load_engine(&model, 1)?;
        let prompt = engines[0]
            .model()
            .tokenizer
            .encode("A lighthouse keeper", false);
        engines[0].score(&prompt, &[42, 43], &Default::default(), 1)?;
        let kept = |e: &Engine| e.prefix_cache().stats().entries;
        assert_eq!(
            (kept(&engines[0]), kept(&engines[1]), kept(&node)),
            (1, 1, 0)
        );
        // The other checker starts after what the first computed.
        engines[1].score(&prompt, &[42, 43, 44], &Default::default(), 1)?;
        assert_eq!(
            engines[1].prefix_cache().stats().reused_tokens,
            prompt.len() as u64 - 1
        );
        Ok(())
    }
}
