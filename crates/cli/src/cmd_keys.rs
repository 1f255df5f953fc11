//! `verinfer keys`: node and account keys.

use clap::Subcommand;
use std::path::PathBuf;

/// `verinfer keys ...`
#[derive(Subcommand)]
pub(crate) enum KeysCommand {
    /// Create a new Ed25519 key file and print its public key (hex).
    New {
        /// Where to write the key (refuses to overwrite).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print the public key (hex) of a key file.
    Show {
        /// The key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Print the EVM address derived from a key file, and its signed link
    /// (JSON, to POST to a ledger's /ledger/evm/link when value settles on
    /// a chain).
    Evm {
        /// The key file.
        #[arg(long)]
        key: PathBuf,
    },
}

/// Runs a keys command.
pub(crate) fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::New { out } => {
            let key = create_key(&out)?;
            println!("{}", key.public());
        }
        KeysCommand::Show { key } => println!("{}", load_key(&key)?.public()),
        KeysCommand::Evm { key } => {
            let link = verinfer_ledger::evm::Link::new(&load_key(&key)?)?;
            eprintln!("EVM address: {}", link.address);
            println!("{}", serde_json::to_string(&link)?);
        }
    }
    Ok(())
}

pub(crate) use verinfer_node::config::{create_key, load_key, load_or_create_key};
