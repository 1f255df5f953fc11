//! `verinfer ledger ...`: the embedded ledger from the command line.
//!
//! Amounts are integers in base units. A refused transaction exits with
//! status 1 and the reason on stderr, and changes nothing.

use crate::cmd_keys::{load_key, load_or_create_key};
use anyhow::{bail, Context};
use clap::{Args, Subcommand, ValueEnum};
use serde_json::json;
use std::path::{Path, PathBuf};
use verinfer_ledger::tx::{
    Change, Evidence, FeeSplit, Genesis, GenesisTag, ModelEntry, Param, Params, Role,
};
use verinfer_ledger::{Ledger, Transaction, TxBody};
use verinfer_types::records::Amount;
use verinfer_types::{Hash, PublicKey, SecretKey};

/// `verinfer ledger ...`
#[derive(Subcommand)]
pub(crate) enum LedgerCommand {
    /// Create a ledger: the whole supply in the treasury account.
    Init {
        /// Ledger directory.
        #[arg(long)]
        dir: PathBuf,
        /// Treasury key file (created if missing).
        #[arg(long)]
        treasury_key: PathBuf,
        /// Initial supply in base units.
        #[arg(long)]
        supply: u128,
        /// Origin of the receipts log.
        #[arg(long, default_value = "verinfer.local/log")]
        origin: String,
    },
    /// Move tokens to another account.
    Transfer {
        #[command(flatten)]
        tx: TxArgs,
        /// Receiving public key (hex).
        #[arg(long)]
        to: PublicKey,
        /// Amount in base units.
        #[arg(long)]
        amount: u128,
    },
    /// Lock tokens as stake.
    Stake {
        #[command(flatten)]
        tx: TxArgs,
        /// Amount in base units.
        #[arg(long)]
        amount: u128,
    },
    /// Start unbonding stake.
    Unstake {
        #[command(flatten)]
        tx: TxArgs,
        /// Amount in base units.
        #[arg(long)]
        amount: u128,
    },
    /// Withdraw matured unbonding stake.
    Withdraw {
        #[command(flatten)]
        tx: TxArgs,
    },
    /// Register as a node (needs the minimum stake).
    Register {
        #[command(flatten)]
        tx: TxArgs,
        /// Role.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Where the node serves.
        #[arg(long)]
        endpoint: String,
    },
    /// Leave the node registry.
    Deregister {
        #[command(flatten)]
        tx: TxArgs,
    },
    /// Propose a parameter change (stakers only).
    Propose {
        #[command(flatten)]
        tx: TxArgs,
        /// fee_split, admit_model, remove_model, mint, or a governed number:
        /// quorum, dispute_quorum, min_stake, unbonding_delay_secs, slash_bps,
        /// slash_reward_bps, dispute_window_secs, voting_period_secs,
        /// reserve_ttl_max_secs, tx_fee, publish_fee. remove_model delists
        /// a published model for good.
        #[arg(long)]
        param: String,
        /// fee_split: NODE,VERIFIERS,TREASURY (bps);
        /// admit_model: ID,NAME,PRICE_IN,PRICE_OUT; mint: PUBKEY,AMOUNT;
        /// others: one integer or model id.
        #[arg(long)]
        value: String,
    },
    /// Vote on a proposal, weighted by stake.
    Vote {
        #[command(flatten)]
        tx: TxArgs,
        /// Proposal id.
        #[arg(long)]
        proposal: u64,
        /// Vote yes.
        #[arg(long, conflicts_with = "no", required_unless_present = "no")]
        yes: bool,
        /// Vote no.
        #[arg(long)]
        no: bool,
    },
    /// Commit to a Result (gateways only): anchors its committee at the
    /// registry of this moment.
    Commit {
        #[command(flatten)]
        tx: TxArgs,
        /// The Result hash (hex).
        #[arg(long)]
        result: verinfer_types::Hash,
    },
    /// Slash a proven cheater with evidence (JSON) from a dispute.
    Slash {
        #[command(flatten)]
        tx: TxArgs,
        /// Evidence file.
        #[arg(long)]
        evidence: PathBuf,
    },
    /// Print an account as JSON (balance, stake, nonce, unbonding, node).
    Account {
        /// Ledger directory.
        #[arg(long)]
        dir: PathBuf,
        /// Public key (hex).
        pubkey: PublicKey,
    },
    /// Print the supply totals as JSON.
    Summary {
        /// Ledger directory.
        #[arg(long)]
        dir: PathBuf,
    },
}

/// The directory and signing key of a transaction.
#[derive(Args)]
pub(crate) struct TxArgs {
    /// Ledger directory.
    #[arg(long)]
    dir: PathBuf,
    /// Key file of the acting account.
    #[arg(long)]
    key: PathBuf,
}

/// Node role.
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum RoleArg {
    /// Inference node.
    Inference,
    /// Verifier.
    Verifier,
    /// Gateway.
    Gateway,
}

fn open(dir: &Path) -> anyhow::Result<Ledger> {
    Ledger::open(dir).with_context(|| format!("opening ledger {}", dir.display()))
}

/// Signs `body` with the next nonce and submits it; prints the result.
fn submit(args: &TxArgs, body: TxBody) -> anyhow::Result<()> {
    let key = load_key(&args.key)?;
    let ledger = open(&args.dir)?;
    // A commit has no nonce (it applies once per Result).
    let nonce = match body {
        TxBody::Commit { .. } => 0,
        _ => ledger.with_state(|s| s.nonce(&key.public())),
    };
    let tx = Transaction::signed(&key, nonce, body)?;
    let applied = ledger.submit(&tx).context("transaction refused")?;
    let mut out = json!({ "height": applied.height });
    if let Some(p) = applied.effects.proposal {
        out["proposal"] = json!(p);
    }
    println!("{out}");
    Ok(())
}

fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string(v)?);
    Ok(())
}

fn amount(a: u128) -> Amount {
    Amount(a)
}

fn parse_change(param: &str, value: &str) -> anyhow::Result<Change> {
    let parts: Vec<&str> = value.split(',').map(str::trim).collect();
    let int = |s: &str| -> anyhow::Result<u128> {
        s.parse()
            .with_context(|| format!("{s:?} is not a non-negative integer"))
    };
    let small = |s: &str| -> anyhow::Result<u32> {
        s.parse()
            .with_context(|| format!("{s:?} is not a small non-negative integer"))
    };
    let want = |n: usize| -> anyhow::Result<()> {
        if parts.len() != n {
            bail!(
                "{param} takes {n} comma-separated values, got {}",
                parts.len()
            );
        }
        Ok(())
    };
    Ok(match param {
        "fee_split" => {
            want(3)?;
            Change::FeeSplit {
                split: FeeSplit {
                    node_bps: small(parts[0])?,
                    verifiers_bps: small(parts[1])?,
                    treasury_bps: small(parts[2])?,
                },
            }
        }
        "admit_model" => {
            want(4)?;
            Change::AdmitModel {
                model: ModelEntry {
                    id: parts[0].parse::<Hash>().context("model id")?,
                    name: parts[1].to_string(),
                    price_in: amount(int(parts[2])?),
                    price_out: amount(int(parts[3])?),
                    per_tokens: 1,
                    publisher: None,
                },
            }
        }
        "remove_model" => Change::RemoveModel {
            id: value.parse::<Hash>().context("model id")?,
        },
        "mint" => {
            want(2)?;
            Change::Mint {
                to: parts[0].parse().context("public key")?,
                amount: amount(int(parts[1])?),
            }
        }
        other => match serde_json::from_value::<Param>(serde_json::Value::from(other)) {
            Ok(name) => Change::Set {
                name,
                value: amount(int(value)?),
            },
            Err(_) => bail!("unknown parameter {other:?}"),
        },
    })
}

/// Runs a ledger command.
pub(crate) fn run(cmd: LedgerCommand) -> anyhow::Result<()> {
    match cmd {
        LedgerCommand::Init {
            dir,
            treasury_key,
            supply,
            origin,
        } => init(&dir, &treasury_key, supply, &origin)?,
        LedgerCommand::Transfer { tx, to, amount: a } => submit(
            &tx,
            TxBody::Transfer {
                to,
                amount: amount(a),
            },
        )?,
        LedgerCommand::Stake { tx, amount: a } => submit(&tx, TxBody::Stake { amount: amount(a) })?,
        LedgerCommand::Unstake { tx, amount: a } => {
            submit(&tx, TxBody::Unstake { amount: amount(a) })?
        }
        LedgerCommand::Withdraw { tx } => submit(&tx, TxBody::Withdraw)?,
        LedgerCommand::Register { tx, role, endpoint } => {
            let role = match role {
                RoleArg::Inference => Role::Inference,
                RoleArg::Verifier => Role::Verifier,
                RoleArg::Gateway => Role::Gateway,
            };
            submit(&tx, TxBody::Register { role, endpoint })?
        }
        LedgerCommand::Deregister { tx } => submit(&tx, TxBody::Deregister)?,
        LedgerCommand::Propose { tx, param, value } => {
            let change = parse_change(&param, &value)?;
            submit(&tx, TxBody::Propose { change })?
        }
        LedgerCommand::Vote {
            tx,
            proposal,
            yes,
            no: _,
        } => submit(&tx, TxBody::Vote { proposal, yes })?,
        LedgerCommand::Commit { tx, result } => submit(&tx, TxBody::Commit { result })?,
        LedgerCommand::Slash { tx, evidence } => submit(
            &tx,
            TxBody::Slash {
                evidence: Box::new(read_evidence(&evidence)?),
            },
        )?,
        LedgerCommand::Account { dir, pubkey } => account(&dir, &pubkey)?,
        LedgerCommand::Summary { dir } => {
            print_json(&open(&dir)?.with_state(|s| s.summary()))?;
        }
    }
    Ok(())
}

/// Creates a ledger with the default parameters and `supply` in the
/// treasury (its key created if missing); prints the treasury and log key.
fn init(dir: &Path, treasury_key: &Path, supply: u128, origin: &str) -> anyhow::Result<()> {
    let treasury = load_or_create_key(treasury_key)?;
    let genesis = Genesis {
        tag: GenesisTag,
        treasury: treasury.public(),
        supply: Amount(supply),
        params: Params::default(),
        models: Vec::new(),
    };
    let log_key = SecretKey::generate();
    let ledger = Ledger::init(dir, &genesis, origin, &log_key)
        .with_context(|| format!("creating ledger in {}", dir.display()))?;
    #[derive(serde::Serialize)]
    struct InitOut {
        treasury: String,
        total_supply: u128,
        log_key: String,
    }
    print_json(&InitOut {
        treasury: treasury.public().to_hex(),
        total_supply: supply,
        log_key: ledger.receipts().verifier_key().to_string(),
    })
}

fn read_evidence(path: &Path) -> anyhow::Result<Evidence> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("parsing evidence {}", path.display()))
}

/// Prints an account's balances and node record as JSON.
fn account(dir: &Path, pubkey: &PublicKey) -> anyhow::Result<()> {
    let ledger = open(dir)?;
    // Typed, not `json!`: amounts are u128, beyond serde_json::Value.
    #[derive(serde::Serialize)]
    struct AccountOut<'a> {
        public_key: String,
        balance: u128,
        stake: u128,
        nonce: u64,
        unbonding: u128,
        node: Option<&'a verinfer_ledger::state::Node>,
    }
    ledger.with_state(|s| {
        print_json(&AccountOut {
            public_key: pubkey.to_hex(),
            balance: s.balance(pubkey),
            stake: s.stake(pubkey),
            nonce: s.nonce(pubkey),
            unbonding: s
                .unbonding
                .get(pubkey)
                .map_or(0, |u| u.iter().map(|x| x.amount).sum()),
            node: s.nodes.get(pubkey),
        })
    })
}
