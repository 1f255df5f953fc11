//! `verinfer models`: fetch and list language models, and publish one in
//! the ledger's model registry.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use std::path::PathBuf;
use verinfer_inference::models;
use verinfer_ledger::TxBody;

/// `verinfer models ...`
#[derive(Args, Debug)]
pub(crate) struct ModelsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: ModelsCommand,
}

/// Model subcommands.
#[derive(Subcommand, Debug)]
pub(crate) enum ModelsCommand {
    /// Download a known model (pinned version, SHA-256 checked) into the model cache.
    Fetch {
        /// Model name (see `verinfer models list`).
        #[arg(default_value = models::DEFAULT_MODEL)]
        name: String,
    },
    /// Show known models and the files in the model cache, with their model ids.
    List,
    /// Print the file path a model name or path resolves to.
    Path {
        /// Model name or GGUF file path.
        #[arg(default_value = models::DEFAULT_MODEL)]
        name: String,
    },
    /// Register a model in the ledger under your key: you are paid
    /// `--share-bps` of every fee it earns. Costs the ledger's `publish_fee`.
    Publish(PublishArgs),
}

/// `verinfer models publish`.
#[derive(Args, Debug)]
pub(crate) struct PublishArgs {
    /// The GGUF file (or a known model name); its SHA-256 is the model id,
    /// its architecture and context window are read from it.
    file: String,
    /// The model's name in the API (1 to 64 bytes).
    #[arg(long)]
    name: String,
    /// Price per 1,000 prompt tokens, base units.
    #[arg(long)]
    price_in_per_1k: u128,
    /// Price per 1,000 output tokens, base units.
    #[arg(long)]
    price_out_per_1k: u128,
    /// Your share of each fee, 0 to 10000 basis points.
    #[arg(long)]
    share_bps: u32,
    /// Licence (default: the file's `general.license`).
    #[arg(long)]
    licence: Option<String>,
    /// Key file of the publishing account (it pays and is paid).
    #[arg(long)]
    key: PathBuf,
    /// The ledger role's URL (a running network).
    #[arg(long, conflicts_with = "dir", required_unless_present = "dir")]
    ledger: Option<String>,
    /// An embedded ledger's directory (no process holding it).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Runs a models command.
pub(crate) fn run(args: ModelsArgs) -> anyhow::Result<()> {
    match args.command {
        ModelsCommand::Fetch { name } => {
            let path = models::fetch(&name, &mut |msg| eprintln!("{msg}"))
                .with_context(|| format!("fetching model {name:?}"))?;
            println!("{}", path.display());
        }
        ModelsCommand::List => {
            let dir = models::models_dir()?;
            let cached = models::list()?;
            println!("model cache: {}", dir.display());
            println!(
                "{:<14} {:<9} {:<64} PATH",
                "NAME", "STATUS", "MODEL ID (SHA-256)"
            );
            for k in models::KNOWN_MODELS {
                let here = cached.iter().find(|c| c.model_id == k.sha256);
                let (status, path) = match here {
                    Some(c) => ("fetched", c.path.display().to_string()),
                    None => ("known", format!("(run `verinfer models fetch {}`)", k.name)),
                };
                println!("{:<14} {:<9} {:<64} {path}", k.name, status, k.sha256);
            }
            for c in cached.iter().filter(|c| c.name.is_none()) {
                println!(
                    "{:<14} {:<9} {:<64} {}",
                    "-",
                    "file",
                    c.model_id,
                    c.path.display()
                );
            }
        }
        ModelsCommand::Path { name } => {
            println!("{}", models::resolve(&name)?.display());
        }
        ModelsCommand::Publish(args) => publish(args)?,
    }
    Ok(())
}

fn publish(args: PublishArgs) -> anyhow::Result<()> {
    let path = models::resolve(&args.file)?;
    let listing = verinfer_node::start::listing(
        &path,
        &args.name,
        args.price_in_per_1k,
        args.price_out_per_1k,
        args.share_bps,
        args.licence.as_deref(),
    )?;
    let id = listing.id;
    let key = crate::cmd_keys::load_key(&args.key)?;
    let body = TxBody::Publish { model: listing };
    let height = match (&args.ledger, &args.dir) {
        (Some(url), _) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let client = verinfer_node::client::LedgerClient::new(url, key.clone());
            rt.block_on(client.submit_as(&key, body))
                .context("publishing refused")?
                .height
        }
        (None, Some(dir)) => {
            let ledger = verinfer_ledger::Ledger::open(dir)
                .with_context(|| format!("opening ledger {}", dir.display()))?;
            let nonce = ledger.with_state(|s| s.nonce(&key.public()));
            let tx = verinfer_ledger::Transaction::signed(&key, nonce, body)?;
            ledger.submit(&tx).context("publishing refused")?.height
        }
        (None, None) => bail!("pass --ledger URL or --dir DIR"),
    };
    println!(
        "{}",
        serde_json::json!({ "model_id": id, "name": args.name, "height": height })
    );
    Ok(())
}
