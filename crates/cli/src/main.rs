//! The `verinfer` command-line tool: one binary for every role and tool.
//!
//! Errors are printed as `error: ...` with their causes, and the process exits
//! with status 1 (2 for usage errors, from clap). `verinfer check` exits 1
//! when the verifier rejects, so its errors exit 2 instead.

mod cmd_chain;
mod cmd_chat;
mod cmd_check;
mod cmd_infer;
mod cmd_keys;
mod cmd_ledger;
mod cmd_log;
mod cmd_models;
mod cmd_net;
mod cmd_verify;
mod config;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "verinfer",
    version,
    about = "Verifiable AI inference: every answer a record anyone can check"
)]
struct Cli {
    /// Configuration file (TOML); flags override it.
    #[arg(long, global = true, env = "VERINFER_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the network in one process on one data directory.
    Devnet(cmd_net::DevnetArgs),
    /// Run one role (ledger, gateway, inference, verifier) as its own process.
    Node(cmd_net::NodeArgs),
    /// A transparency log on its own: init, append, checkpoint, proofs, serve.
    #[command(subcommand)]
    Log(cmd_log::LogCommand),
    /// The embedded ledger: genesis, transfers, stake, registration, governance, summary.
    #[command(subcommand)]
    Ledger(cmd_ledger::LedgerCommand),
    /// One inference: stream the answer, or print the signed Request and Result with --json.
    Infer(cmd_infer::InferArgs),
    /// One verifier check of a `verinfer infer --json` output: prints the
    /// signed Verdict; exits 0 on accept, 1 on reject, 2 on error.
    Check(cmd_check::CheckArgs),
    /// Fetch, register and list models.
    Models(cmd_models::ModelsArgs),
    /// The settlement contracts on an EVM chain: deploy, register, deposit,
    /// link, status.
    #[command(subcommand)]
    Chain(cmd_chain::ChainCommand),
    /// Create node and account keys.
    #[command(subcommand)]
    Keys(cmd_keys::KeysCommand),
    /// Check a receipt with no trust in any node: commitments, signatures,
    /// quorum, inclusion in a cosigned checkpoint; exits 0 when it holds, 1
    /// when a check fails, 2 when it cannot check.
    Verify(cmd_verify::VerifyArgs),
    /// Chat from the terminal with a gateway, showing each answer's receipt.
    Chat(cmd_chat::ChatArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VERINFER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only for a terminal: logs written to a file stay plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let config_path = cli.config.clone();
    // `check` rejecting is exit 1, so a failure to check must differ.
    let error_status = match cli.command {
        Command::Check(_) | Command::Verify(_) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    };
    // A node's --config is its own file (verinfer_node::config), not this one.
    let config_file = match cli.command {
        Command::Node(_) => None,
        _ => cli.config.as_deref(),
    };
    let result = config::Config::load(config_file).and_then(|config| match cli.command {
        Command::Devnet(args) => cmd_net::devnet(args, &config).map(|()| true),
        Command::Node(args) => cmd_net::node(args, config_path).map(|()| true),
        Command::Log(cmd) => cmd_log::run(cmd, &config).map(|()| true),
        Command::Ledger(cmd) => cmd_ledger::run(cmd).map(|()| true),
        Command::Keys(cmd) => cmd_keys::run(cmd).map(|()| true),
        Command::Chain(cmd) => cmd_chain::run(cmd).map(|()| true),
        Command::Infer(a) => cmd_infer::run(a).map(|()| true),
        Command::Check(a) => cmd_check::run(a),
        Command::Models(a) => cmd_models::run(a).map(|()| true),
        Command::Verify(a) => cmd_verify::run(a),
        Command::Chat(a) => cmd_chat::run(a, &config).map(|()| true),
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        // A verifier's rejection: already reported on stderr.
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            error_status
        }
    }
}
