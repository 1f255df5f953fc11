//! `verinfer chain ...`: the settlement contracts on an EVM chain, for the
//! operators of a network whose ledger settles there (`[ledger] backend =
//! "evm"`): deploy them for a ledger, register nodes with their stake,
//! deposit for requesters, link accounts, and read what is settled.
//!
//! Transactions are sent with the EVM key derived from a verinfer key file
//! (`verinfer keys evm` prints its address; it needs the chain's currency
//! for gas). Amounts are integers in base units of the settlement token.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use verinfer_ledger::evm::chain::{
    contract_params, deploy_over, initial_models, Chain, Rpc, Token, U256,
};
use verinfer_ledger::evm::{evm_signer, Address, Link, B256};
use verinfer_ledger::Ledger;

use crate::cmd_keys::load_key;

/// Where the chain and the contract are.
#[derive(Args)]
pub(crate) struct At {
    /// The chain's JSON-RPC URL (http or https).
    #[arg(long)]
    rpc: String,
    /// For https: also trust this CA (PEM file), besides the system's roots.
    #[arg(long)]
    rpc_ca: Option<PathBuf>,
    /// The settlement contract's address.
    #[arg(long)]
    contract: Address,
}

/// The RPC endpoint at `url`, also trusting the CA in `ca` (a PEM file).
pub(crate) fn rpc(url: &str, ca: Option<&Path>) -> anyhow::Result<Rpc> {
    Ok(Rpc {
        url: url.to_string(),
        ca_pem: match ca {
            Some(p) => Some(std::fs::read(p).with_context(|| format!("reading {}", p.display()))?),
            None => None,
        },
    })
}

/// A node's role on chain.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ChainRole {
    /// Runs models.
    Inference,
    /// Checks answers and signs settlements.
    Verifier,
}

/// `verinfer chain ...`
#[derive(Subcommand)]
pub(crate) enum ChainCommand {
    /// Deploy the settlement contract for a ledger (its fee split, quorum,
    /// slashing and models), over an existing ERC-20 (`--token`) or a new
    /// plain one whose whole `--supply` goes to the deployer. Prints the
    /// deployment (JSON).
    Deploy(DeployArgs),
    /// Register the key's node on chain, staking `--stake` of its tokens.
    Register {
        #[command(flatten)]
        at: At,
        /// The node's key file.
        #[arg(long)]
        key: PathBuf,
        /// Its role.
        #[arg(long, value_enum)]
        role: ChainRole,
        /// Stake in base units (at least the contract's minimum).
        #[arg(long)]
        stake: u128,
        /// Where the node serves.
        #[arg(long)]
        endpoint: String,
    },
    /// Deposit tokens of `--key` into the escrow of `--account` (a key file:
    /// the requester whose fees it pays; default: `--key` itself).
    Deposit {
        #[command(flatten)]
        at: At,
        /// Key file of the payer of the deposit.
        #[arg(long)]
        key: PathBuf,
        /// Key file of the account credited.
        #[arg(long)]
        account: Option<PathBuf>,
        /// Amount in base units.
        #[arg(long)]
        amount: u128,
    },
    /// Withdraw from the key's own escrow: ask for `--amount` (paid after the
    /// contract's delay; the ledger holds it at once), `--cancel` the
    /// request, or `--complete` it once the delay is over.
    Withdraw {
        #[command(flatten)]
        at: At,
        /// The account's key file.
        #[arg(long)]
        key: PathBuf,
        /// Amount to ask for, in base units.
        #[arg(long, required_unless_present_any = ["cancel", "complete"])]
        amount: Option<u128>,
        /// Cancel the request.
        #[arg(long, conflicts_with_all = ["amount", "complete"])]
        cancel: bool,
        /// Complete the request (after the delay).
        #[arg(long, conflicts_with = "amount")]
        complete: bool,
    },
    /// Tell a ledger role the EVM address of an account (its signed link),
    /// so its fees settle on chain.
    Link {
        /// The account's key file.
        #[arg(long)]
        key: PathBuf,
        /// The ledger role's URL.
        #[arg(long)]
        ledger_url: String,
    },
    /// Print what the contract holds (JSON): the settled checkpoint, the
    /// totals, and with `--address` that account's escrow and stake.
    Status {
        #[command(flatten)]
        at: At,
        /// An account or node address.
        #[arg(long)]
        address: Option<Address>,
    },
}

// The arguments of `verinfer chain deploy` (its help text is the variant's).
#[derive(Args)]
pub(crate) struct DeployArgs {
    /// The chain's JSON-RPC URL (http or https).
    #[arg(long)]
    rpc: String,
    /// For https: also trust this CA (PEM file).
    #[arg(long)]
    rpc_ca: Option<PathBuf>,
    /// Key file of the deployer.
    #[arg(long)]
    key: PathBuf,
    /// The ledger directory whose parameters and models the contract takes
    /// (not in use by a running ledger role).
    #[arg(long)]
    ledger: PathBuf,
    /// Settle in this ERC-20.
    #[arg(long, conflicts_with = "supply")]
    token: Option<Address>,
    /// Deploy a new token with this supply instead.
    #[arg(long, required_unless_present = "token")]
    supply: Option<u128>,
    /// The fee treasury's address (default: the deployer's).
    #[arg(long)]
    treasury: Option<Address>,
    /// Verifier signatures a slash needs.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u16).range(1..))]
    slash_quorum: u16,
    /// Also write the deployment to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

async fn sender(at: &At, key: &Path) -> anyhow::Result<Chain> {
    Chain::at(
        rpc(&at.rpc, at.rpc_ca.as_deref())?,
        evm_signer(&load_key(key)?)?,
        at.contract,
    )
    .await
    .with_context(|| format!("connecting to {} at {}", at.contract, at.rpc))
}

/// Runs a chain command.
pub(crate) fn run(cmd: ChainCommand) -> anyhow::Result<()> {
    let rt = runtime()?;
    match cmd {
        ChainCommand::Deploy(args) => deploy(&rt, args),
        ChainCommand::Register {
            at,
            key,
            role,
            stake,
            endpoint,
        } => register(&rt, &at, &key, role, stake, &endpoint),
        ChainCommand::Deposit {
            at,
            key,
            account,
            amount,
        } => deposit(&rt, &at, &key, account.as_deref(), amount),
        ChainCommand::Withdraw {
            at,
            key,
            amount,
            cancel,
            complete,
        } => withdraw(&rt, &at, &key, amount, cancel, complete),
        ChainCommand::Link { key, ledger_url } => link(&rt, &key, &ledger_url),
        ChainCommand::Status { at, address } => status(&rt, &at, address),
    }
}

fn deploy(rt: &tokio::runtime::Runtime, args: DeployArgs) -> anyhow::Result<()> {
    let DeployArgs {
        rpc: url,
        rpc_ca,
        key,
        ledger,
        token,
        supply,
        treasury,
        slash_quorum,
        out,
    } = args;
    let signer = evm_signer(&load_key(&key)?)?;
    let l = Ledger::open(&ledger)
        .with_context(|| format!("opening the ledger in {}", ledger.display()))?;
    let (params, models) = l.with_state(|s| {
        (
            s.params.clone(),
            s.models.values().cloned().collect::<Vec<_>>(),
        )
    });
    drop(l);
    let params = contract_params(&params, slash_quorum, treasury.unwrap_or(signer.address()))?;
    let token = match (token, supply) {
        (Some(t), _) => Token::Existing(t),
        (None, Some(s)) => Token::New(U256::from(s)),
        (None, None) => bail!("give --token or --supply"),
    };
    let d = rt
        .block_on(deploy_over(
            rpc(&url, rpc_ca.as_deref())?,
            signer,
            token,
            params,
            initial_models(&models),
        ))
        .with_context(|| format!("deploying on {url}"))?;
    let json = serde_json::to_string_pretty(&d)?;
    if let Some(out) = out {
        std::fs::write(&out, &json).with_context(|| format!("writing {}", out.display()))?;
    }
    println!("{json}");
    Ok(())
}

fn register(
    rt: &tokio::runtime::Runtime,
    at: &At,
    key: &Path,
    role: ChainRole,
    stake: u128,
    endpoint: &str,
) -> anyhow::Result<()> {
    let node = load_key(key)?;
    let role = match role {
        ChainRole::Inference => 1,
        ChainRole::Verifier => 2,
    };
    let m = rt.block_on(async {
        sender(at, key)
            .await?
            .register(
                role,
                B256::from(node.public().to_bytes()),
                endpoint,
                U256::from(stake),
            )
            .await
            .context("registering")
    })?;
    println!("registered in transaction {} (block {})", m.tx, m.block);
    Ok(())
}

fn deposit(
    rt: &tokio::runtime::Runtime,
    at: &At,
    key: &Path,
    account: Option<&Path>,
    amount: u128,
) -> anyhow::Result<()> {
    let to = evm_signer(&load_key(account.unwrap_or(key))?)?.address();
    let m = rt.block_on(async {
        sender(at, key)
            .await?
            .deposit(to, U256::from(amount))
            .await
            .context("depositing")
    })?;
    println!(
        "deposited {amount} for {to} in transaction {} (block {})",
        m.tx, m.block
    );
    Ok(())
}

fn withdraw(
    rt: &tokio::runtime::Runtime,
    at: &At,
    key: &Path,
    amount: Option<u128>,
    cancel: bool,
    complete: bool,
) -> anyhow::Result<()> {
    let (what, m) = rt.block_on(async {
        let c = sender(at, key).await?;
        let r = match (amount, cancel, complete) {
            (Some(a), _, _) => ("asked", c.request_withdrawal(U256::from(a)).await),
            (None, true, _) => ("cancelled", c.cancel_withdrawal().await),
            _ => ("completed", c.withdraw().await),
        };
        anyhow::Ok((r.0, r.1.context("withdrawing")?))
    })?;
    println!(
        "withdrawal {what} in transaction {} (block {})",
        m.tx, m.block
    );
    Ok(())
}

fn link(rt: &tokio::runtime::Runtime, key: &Path, ledger_url: &str) -> anyhow::Result<()> {
    let link = Link::new(&load_key(key)?)?;
    let url = format!("{}/ledger/evm/link", ledger_url.trim_end_matches('/'));
    let r = rt.block_on(async {
        reqwest::Client::new()
            .post(&url)
            .json(&link)
            .send()
            .await?
            .error_for_status()
    });
    r.with_context(|| format!("posting the link to {url}"))?;
    println!("{} is {}", link.account, link.address);
    Ok(())
}

fn status(rt: &tokio::runtime::Runtime, at: &At, address: Option<Address>) -> anyhow::Result<()> {
    let v = rt.block_on(async {
        let c = Chain::reader(rpc(&at.rpc, at.rpc_ca.as_deref())?, at.contract)
            .await
            .with_context(|| format!("connecting to {} at {}", at.contract, at.rpc))?;
        let (size, root) = c.checkpoint().await?;
        let (escrow, staked, unbonding) = c.totals().await?;
        let mut v = serde_json::json!({
            "chain_id": c.chain_id,
            "contract": c.contract,
            "token": c.token().await?,
            "settled": { "size": size, "root": root },
            "escrow": escrow.to_string(),
            "staked": staked.to_string(),
            "unbonding": unbonding.to_string(),
        });
        if let Some(a) = address {
            let (balance, pending, unlock_at) = c.account(a).await?;
            v["account"] = serde_json::json!({
                "address": a,
                "balance": balance.to_string(),
                "pending_withdrawal": pending.to_string(),
                "unlock_at": unlock_at,
                "stake": c.stake(a).await?.to_string(),
                "tokens": c.token_balance(a).await?.to_string(),
            });
        }
        anyhow::Ok(v)
    })?;
    println!("{}", serde_json::to_string_pretty(&v)?);
    Ok(())
}
