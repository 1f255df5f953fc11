//! `verinfer keys`: node and account keys.

use anyhow::{bail, Context};
use clap::Subcommand;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use verinfer_types::SecretKey;

/// `verinfer keys ...`
#[derive(Subcommand)]
pub enum KeysCommand {
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
}

/// Runs a keys command.
pub fn run(cmd: KeysCommand) -> anyhow::Result<()> {
    match cmd {
        KeysCommand::New { out } => {
            let key = create_key(&out)?;
            println!("{}", key.public());
        }
        KeysCommand::Show { key } => println!("{}", load_key(&key)?.public()),
    }
    Ok(())
}

/// Writes a fresh key to `path` (mode 0600), refusing to overwrite.
pub fn create_key(path: &Path) -> anyhow::Result<SecretKey> {
    if path.exists() {
        bail!("{} already exists; not overwriting a key", path.display());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let key = SecretKey::generate();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(key.to_file_text().as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(key)
}

/// Reads a key file.
pub fn load_key(path: &Path) -> anyhow::Result<SecretKey> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading key {}", path.display()))?;
    SecretKey::from_file_text(&text).with_context(|| format!("key file {}", path.display()))
}

/// Reads the key at `path`, creating it first if it does not exist.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<SecretKey> {
    if path.exists() {
        load_key(path)
    } else {
        create_key(path)
    }
}
