//! `verinfer log ...` and `verinfer devnet`.

use crate::config::Config;
use anyhow::Context;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use clap::Subcommand;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use verinfer_log::Log;

const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
const DEFAULT_CHECKPOINT_MS: u64 = 1000;
/// Lines appended per group commit by `verinfer log append`.
const APPEND_BATCH: usize = 4096;

/// `verinfer log ...`
#[derive(Subcommand)]
pub(crate) enum LogCommand {
    /// Create a log and print its verifier key.
    Init {
        /// Log directory.
        #[arg(long)]
        dir: PathBuf,
        /// The log's origin (its name and key name), e.g. `example.com/log`.
        #[arg(long)]
        origin: String,
    },
    /// Append each line of stdin as one entry; print one index per line.
    Append {
        /// Log directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print the current signed checkpoint (signing a new one if the log grew).
    Checkpoint {
        /// Log directory.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Print the inclusion proof of entry INDEX in the tree of SIZE, base64, one hash per line.
    ProveInclusion {
        /// Log directory.
        #[arg(long)]
        dir: PathBuf,
        /// Entry index.
        #[arg(long)]
        index: u64,
        /// Tree size.
        #[arg(long)]
        size: u64,
    },
    /// Print the consistency proof from OLD to NEW, base64, one hash per line.
    ProveConsistency {
        /// Log directory.
        #[arg(long)]
        dir: PathBuf,
        /// Older tree size.
        #[arg(long)]
        old: u64,
        /// Newer tree size.
        #[arg(long)]
        new: u64,
    },
    /// Serve the checkpoint, tiles and JSON proofs over HTTP under /log.
    Serve {
        /// Log directory.
        #[arg(long)]
        dir: PathBuf,
        /// Listen address.
        #[arg(long)]
        listen: Option<String>,
    },
    /// Write the checkpoint and all tiles as static files (C2SP tlog-tiles).
    Tiles {
        /// Log directory.
        #[arg(long)]
        dir: PathBuf,
        /// Output directory (the log prefix).
        #[arg(long)]
        out: PathBuf,
    },
}

fn open(dir: &Path) -> anyhow::Result<Log> {
    Log::open(dir).with_context(|| format!("opening log {}", dir.display()))
}

fn print_hashes(hashes: &[verinfer_types::Hash]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    for h in hashes {
        writeln!(out, "{}", B64.encode(h.0))?;
    }
    Ok(())
}

/// Runs a log command.
pub(crate) fn run(cmd: LogCommand, config: &Config) -> anyhow::Result<()> {
    match cmd {
        LogCommand::Init { dir, origin } => {
            let log = Log::init(&dir, &origin)
                .with_context(|| format!("creating log in {}", dir.display()))?;
            println!("{}", log.verifier_key());
        }
        LogCommand::Append { dir } => append(&open(&dir)?)?,
        LogCommand::Checkpoint { dir } => print!("{}", open(&dir)?.checkpoint()?.note),
        LogCommand::ProveInclusion { dir, index, size } => {
            print_hashes(&open(&dir)?.inclusion_proof(index, size)?)?
        }
        LogCommand::ProveConsistency { dir, old, new } => {
            print_hashes(&open(&dir)?.consistency_proof(old, new)?)?
        }
        LogCommand::Serve { dir, listen } => {
            let listen = listen
                .or_else(|| config.listen.clone())
                .unwrap_or_else(|| DEFAULT_LISTEN.into());
            serve(open(&dir)?, &listen, checkpoint_interval(config))?
        }
        LogCommand::Tiles { dir, out } => {
            let n = open(&dir)?.export_tiles(&out)?;
            eprintln!("wrote the checkpoint and {n} tiles under {}", out.display());
        }
    }
    Ok(())
}

fn checkpoint_interval(config: &Config) -> Duration {
    Duration::from_millis(
        config
            .log
            .checkpoint_interval_ms
            .unwrap_or(DEFAULT_CHECKPOINT_MS),
    )
}

/// Appends stdin lines in batches, printing indices as batches become durable.
fn append(log: &Log) -> anyhow::Result<()> {
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    let mut batch = Vec::with_capacity(APPEND_BATCH);
    let mut eof = false;
    while !eof {
        let mut line = Vec::new();
        if input
            .read_until(b'\n', &mut line)
            .context("reading stdin")?
            == 0
        {
            eof = true;
        } else {
            if line.last() == Some(&b'\n') {
                line.pop();
            }
            batch.push(line);
        }
        if batch.len() == APPEND_BATCH || (eof && !batch.is_empty()) {
            let n = batch.len() as u64;
            let first = log.append_batch(std::mem::take(&mut batch))?;
            for i in first..first + n {
                writeln!(out, "{i}")?;
            }
            out.flush()?;
        }
    }
    Ok(())
}

fn serve(log: Log, listen: &str, interval: Duration) -> anyhow::Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    // Start from a checkpoint of everything already in the log.
    log.checkpoint().context("signing the initial checkpoint")?;
    rt.block_on(async move {
        let log = Arc::new(log);
        let app = axum::Router::new().nest("/log", verinfer_log::http::router(log.clone()));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .with_context(|| format!("listening on {listen}"))?;
        let addr = listener.local_addr()?;
        eprintln!("serving log {} at http://{addr}/log", log.origin());
        eprintln!("verifier key: {}", log.verifier_key());
        let checkpoints = tokio::spawn(verinfer_log::http::checkpoint_loop(log.clone(), interval));
        axum::serve(listener, app)
            .with_graceful_shutdown(async {
                tokio::signal::ctrl_c().await.ok();
            })
            .await
            .context("HTTP server")?;
        checkpoints.abort();
        Ok(())
    })
}
