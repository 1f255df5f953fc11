//! `verinfer devnet` and `verinfer node`: the network, in one process or one
//! role per process.

use crate::config::{default_data_dir, Config};
use anyhow::Context;
use clap::Args;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use verinfer_inference::respond::Fault;
use verinfer_node::config::NodeConfig;
use verinfer_node::devnet::{self, DevnetOptions};
use verinfer_node::start::{self, RoleKind};

/// `verinfer devnet`.
#[derive(Args)]
pub(crate) struct DevnetArgs {
    /// Data directory (default: $VERINFER_HOME/devnet, else the user data dir).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Gateway listen address (default 127.0.0.1:8080).
    #[arg(long)]
    listen: Option<String>,
    /// Inference nodes.
    #[arg(long, default_value_t = 2)]
    inference: usize,
    /// Verifiers.
    #[arg(long, default_value_t = 3)]
    verifiers: usize,
    /// Verdicts a certificate needs (the ledger's quorum, set at genesis).
    #[arg(long, default_value_t = 2)]
    quorum: u32,
    /// Model: a known name or a GGUF path (default: SmolLM2-135M, fetched if
    /// missing). Repeat it to serve several: every node runs each; the first
    /// is admitted at genesis, each further one is published by a publisher
    /// of its own (`publisher-NAME.key`, 10% of its fees).
    #[arg(long)]
    model: Vec<String>,
    /// Make this many inference nodes cheat.
    #[arg(long, default_value_t = 0)]
    faulty_inference: usize,
    /// How they cheat (the kinds of `verinfer infer --fault`).
    #[arg(long, default_value = "edit-token:1")]
    fault: String,
    /// Engine threads per node.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Prepare the data directory (ledger, keys, funding) and exit.
    #[arg(long)]
    init_only: bool,
    /// Where value settles: `embedded` (the ledger) or `anvil` (a local
    /// chain from contracts/node_modules, with the contracts deployed).
    #[arg(long, default_value = "embedded", value_parser = ["embedded", "anvil"])]
    settlement: String,
}

/// `verinfer node`.
#[derive(Args)]
pub(crate) struct NodeArgs {
    /// ledger, gateway, inference or verifier (overrides the config's `role`).
    #[arg(long)]
    role: Option<String>,
    /// Listen address (overrides the config).
    #[arg(long)]
    listen: Option<String>,
    /// The ledger's URL (overrides the config).
    #[arg(long)]
    ledger_url: Option<String>,
    /// Inference, verifier: a model to run (a known name or a GGUF path);
    /// repeat it for several (replaces the config's `model` and `models`).
    #[arg(long)]
    model: Vec<String>,
}

/// How long a stop waits for requests in flight, and then for work left
/// on the runtime's threads (an inference half done), before it exits.
const STOP_GRACE: Duration = Duration::from_secs(10);

/// Runs `main` on a runtime; once it returns, waits at most [`STOP_GRACE`]
/// for blocking work still running, so a stop takes bounded time.
fn run<F: std::future::Future<Output = anyhow::Result<()>>>(main: F) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let r = rt.block_on(main);
    rt.shutdown_timeout(STOP_GRACE);
    r
}

/// The signals that stop a devnet or a node cleanly: SIGINT (Ctrl-C) and
/// SIGTERM (systemd, container runtimes, `kill`). Listening starts when this
/// is called, so a signal during startup is not lost to the default action
/// (which would exit at once and skip the stop).
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn listen() -> anyhow::Result<Self> {
        let on = |kind| signal(kind).context("listening for stop signals");
        Ok(StopSignals {
            interrupt: on(SignalKind::interrupt())?,
            terminate: on(SignalKind::terminate())?,
        })
    }

    /// Waits for one; returns its name.
    async fn recv(&mut self) -> &'static str {
        tokio::select! {
            _ = self.interrupt.recv() => "SIGINT",
            _ = self.terminate.recv() => "SIGTERM",
        }
    }
}

/// Runs the devnet until SIGINT or SIGTERM, then stops every role and anvil.
pub(crate) fn devnet(args: DevnetArgs, config: &Config) -> anyhow::Result<()> {
    let data_dir = match args.data_dir.or_else(|| config.data_dir.clone()) {
        Some(d) => d,
        None => default_data_dir()?.join("devnet"),
    };
    let mut opts = DevnetOptions::new(data_dir.clone());
    if let Some(l) = args.listen.or_else(|| config.listen.clone()) {
        opts.listen = l;
    }
    opts.inference = args.inference;
    opts.verifiers = args.verifiers;
    opts.quorum = args.quorum;
    opts.models = args.model;
    opts.faulty_inference = args.faulty_inference.min(args.inference);
    opts.fault = Fault::from_str(&args.fault).map_err(|e| anyhow::anyhow!("--fault: {e}"))?;
    opts.threads = args.threads;
    if args.settlement == "anvil" {
        opts.settlement = devnet::Settlement::Anvil;
    }
    if let Some(o) = &config.log.origin {
        opts.log_origin = o.clone();
    }
    eprintln!("devnet data directory: {}", data_dir.display());
    if args.init_only {
        let paths = devnet::model_paths(&opts.models)?;
        let first = paths.first().context("no model")?;
        let (_, api_key) = devnet::prepare(&opts, first)?;
        println!("api-key: {api_key}");
        return Ok(());
    }
    run(async move {
        let mut stop = StopSignals::listen()?;
        let net = tokio::select! {
            net = devnet::run(opts) => net?,
            // Whatever had started is stopped as it is dropped (anvil
            // included), or dies with this process.
            s = stop.recv() => {
                eprintln!("{s} during startup: stopping");
                return Ok(());
            }
        };
        println!("api-key: {}", net.api_key);
        if let Some(c) = &net.chain {
            eprintln!(
                "settling on anvil at {} (chain {}): contract {}, token {}",
                c.url, c.deployment.chain_id, c.deployment.contract, c.deployment.token
            );
        }
        if args.faulty_inference > 0 {
            eprintln!(
                "{} inference node(s) cheat with {}; watch the verifiers catch them",
                args.faulty_inference.min(args.inference),
                args.fault
            );
        }
        println!("verinfer devnet ready at {}", net.url);
        let s = stop.recv().await;
        eprintln!("{s}: stopping");
        net.shutdown(STOP_GRACE).await;
        eprintln!("stopped");
        anyhow::Ok(())
    })
}

/// Runs one role until SIGINT or SIGTERM, then stops it.
pub(crate) fn node(args: NodeArgs, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let path = config_path.context("give the node's configuration with --config FILE")?;
    let mut c = NodeConfig::load(&path)?;
    if let Some(l) = args.listen {
        c.listen = Some(l);
    }
    if let Some(u) = args.ledger_url {
        c.ledger_url = Some(u);
    }
    if !args.model.is_empty() {
        c.model = None;
        c.models = args.model;
    }
    let role: RoleKind = args
        .role
        .or(c.role.clone())
        .context("give the role with --role or `role =` in the config")?
        .parse()?;
    run(async move {
        let mut stop = StopSignals::listen()?;
        let running = tokio::select! {
            r = start::from_config(role, &c) => r?,
            s = stop.recv() => {
                eprintln!("{s} during startup: stopping");
                return Ok(());
            }
        };
        println!("verinfer node {role:?} ready at {}", running.url);
        let s = stop.recv().await;
        eprintln!("{s}: stopping");
        running
            .shutdown_by(tokio::time::Instant::now() + STOP_GRACE)
            .await;
        eprintln!("stopped");
        anyhow::Ok(())
    })
}
