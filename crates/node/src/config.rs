//! The configuration `verinfer node --role ROLE --config FILE` reads (TOML),
//! and key files. Relative paths are relative to the file's directory.
//!
//! ```toml
//! role = "verifier"                    # ledger | gateway | inference | verifier
//! key = "node.key"                     # this node's Ed25519 key (created if missing)
//! listen = "127.0.0.1:7101"
//! public_url = "http://127.0.0.1:7101" # what others call (default: http://LISTEN)
//! ledger_url = "http://127.0.0.1:7000" # every role but the ledger
//! data_dir = "."                       # ledger directory, witness state
//! models = ["smollm2-135m", "gemma3-270m"] # inference, verifier: known names or GGUF paths
//!                                      # (one engine each; `model = "..."` for one)
//! threads = 1                          # engine threads, per model
//! heartbeat_ms = 2000
//! # fault = "edit-token:1"             # inference: cheat this way (demos and tests)
//! # log_key = "origin+id+base64"       # verifier: pin the log key (default: ask the ledger)
//! # workers = 2                        # verifier: checks at once (one engine each)
//! # queue = 32                         # inference (waiting or running; default 32), verifier (waiting; default 16)
//!
//! [gateway]
//! api_keys = "api-keys.toml"           # [[keys]] api_key_sha256 = "HEX", account = "account.key"
//! quorum = 2
//! rate_per_minute = 600
//! burst = 100
//! max_body_bytes = 1048576
//! liveness_ms = 10000
//!
//! [ledger]
//! witness_quorum = 2
//! checkpoint_interval_ms = 500
//! reporters = ["GATEWAY_PUBLIC_KEY_HEX"] # of the registered gateways, those whose reports count (default: all)
//! # backend = "evm"                    # settle on an EVM chain (default: embedded)
//! # rpc_url = "http://127.0.0.1:8545"   # or https://
//! # rpc_ca_file = "ca.pem"             # https: also trust this CA (default: system roots)
//! # contract = "0x..."                 # the Verinfer contract
//! # evm_key = "sender.key"             # sends the transactions (default: key)
//! # stuck_after_secs = 45              # raise the fees of a transaction unmined this long
//! # max_fee_per_gas_gwei = 500         # never offer more per gas (default: no cap)
//! # bridge_key = "treasury.key"        # mirror the escrow's deposits and withdrawals
//! # bridge_from_block = 0              # the first block to mirror (the deployment's)
//! # confirmations = 12                 # blocks a movement waits before it is mirrored
//! ```

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use verinfer_types::{Hash, SecretKey};

/// A node's configuration file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// The role (the command line's `--role` overrides it).
    pub role: Option<String>,
    /// Node key file.
    pub key: Option<PathBuf>,
    /// Listen address.
    pub listen: Option<String>,
    /// URL other nodes call.
    pub public_url: Option<String>,
    /// The ledger role's URL.
    pub ledger_url: Option<String>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Model name or GGUF path (one model; see `models`).
    pub model: Option<String>,
    /// Model names or GGUF paths: the node runs each (with `model`).
    #[serde(default)]
    pub models: Vec<String>,
    /// Engine threads.
    pub threads: Option<usize>,
    /// Heartbeat period in ms.
    pub heartbeat_ms: Option<u64>,
    /// Inference: cheat this way.
    pub fault: Option<String>,
    /// Verifier: the log's verifier key.
    pub log_key: Option<String>,
    /// Verifier: checkers working at once, each with its own engine.
    pub workers: Option<usize>,
    /// Inference, verifier: requests waiting at most (beyond: 429).
    pub queue: Option<usize>,
    /// Gateway settings.
    #[serde(default)]
    pub gateway: GatewaySection,
    /// Ledger settings.
    #[serde(default)]
    pub ledger: LedgerSection,
}

/// `[gateway]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// API keys file.
    pub api_keys: Option<PathBuf>,
    /// Default `quorum(k)` of requests.
    pub quorum: Option<u32>,
    /// Requests per minute per key.
    pub rate_per_minute: Option<u32>,
    /// Burst per key.
    pub burst: Option<u32>,
    /// Largest body.
    pub max_body_bytes: Option<usize>,
    /// Liveness window in ms.
    pub liveness_ms: Option<u64>,
}

/// `[ledger]`.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerSection {
    /// Cosignatures that make a checkpoint final.
    pub witness_quorum: Option<u32>,
    /// How often the log is checkpointed and cosigned while it grows.
    pub checkpoint_interval_ms: Option<u64>,
    /// Gateway keys (hex) whose reports of rejections and missed verifier
    /// tasks feed the explorer's charts.
    #[serde(default)]
    pub reporters: Vec<String>,
    /// Tests only: the width in ms of the explorer's minute (default
    /// 60000), so that a test sees many minutes in a few seconds.
    pub minute_ms: Option<u64>,
    /// `embedded` (default) or `evm`: value settles on an EVM chain.
    pub backend: Option<String>,
    /// EVM: the chain's JSON-RPC URL (http or https).
    pub rpc_url: Option<String>,
    /// EVM: a CA (PEM) to trust for an https RPC, besides the system's roots.
    pub rpc_ca_file: Option<PathBuf>,
    /// EVM: the settlement contract's address.
    pub contract: Option<String>,
    /// EVM: the key file whose derived EVM key sends the settlement
    /// transactions (default: the node key).
    pub evm_key: Option<PathBuf>,
    /// EVM: seconds a transaction may wait unmined before it is sent again
    /// with higher fees (default 45).
    pub stuck_after_secs: Option<f64>,
    /// EVM: the most to offer per gas, raises included, in gwei (default: no
    /// cap).
    pub max_fee_per_gas_gwei: Option<f64>,
    /// EVM: the treasury's key file; with it, deposits and withdrawals made
    /// on chain are mirrored in the ledger (without it they are not).
    pub bridge_key: Option<PathBuf>,
    /// EVM: the first block whose escrow movements are mirrored (default 0;
    /// on a long chain give the deployment's block, which `verinfer chain
    /// deploy` prints).
    pub bridge_from_block: Option<u64>,
    /// EVM: blocks a movement must be under before it is mirrored (default
    /// 12).
    pub confirmations: Option<u64>,
}

/// The API keys file (mode 0600). It holds the SHA-256 of each API key, not
/// the key: whoever reads it cannot spend from the accounts.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeysFile {
    /// One entry per key.
    #[serde(default)]
    pub keys: Vec<ApiKeyEntry>,
}

/// One API key.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyEntry {
    /// SHA-256 of the bearer token (hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_sha256: Option<Hash>,
    /// The bearer token in plain text, as files written before hashing hold
    /// it: still accepted (hashed when read); the devnet rewrites its file
    /// hashed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// The account's key file.
    pub account: PathBuf,
}

impl ApiKeyEntry {
    /// The entry of `api_key` for the account in `account`; keeps only the
    /// key's hash.
    pub fn new(api_key: &str, account: impl Into<PathBuf>) -> Self {
        ApiKeyEntry {
            api_key_sha256: Some(api_key_hash(api_key)),
            api_key: None,
            account: account.into(),
        }
    }

    /// The key's hash; an error when the entry has neither field.
    pub fn hash(&self) -> anyhow::Result<Hash> {
        match (&self.api_key_sha256, &self.api_key) {
            (Some(h), _) => Ok(*h),
            (None, Some(k)) => Ok(api_key_hash(k)),
            (None, None) => bail!(
                "the API key of account {} has no `api_key_sha256`",
                self.account.display()
            ),
        }
    }
}

/// What the gateway stores and compares for an API key: its SHA-256. (API
/// keys are long random strings, so a plain hash is enough; no password
/// stretching is needed.)
pub fn api_key_hash(api_key: &str) -> Hash {
    Hash::of(api_key.trim().as_bytes())
}

/// Writes `bytes` to `path` readable by its owner only (mode 0600, also
/// when the file existed with wider permissions).
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .and_then(|_| f.write_all(bytes))
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

impl NodeConfig {
    /// Reads `path`; relative paths in it are made relative to its directory.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        let mut c: NodeConfig =
            toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(x) = p.as_mut() {
                if x.is_relative() {
                    *x = base.join(&*x);
                }
            }
        };
        fix(&mut c.key);
        fix(&mut c.gateway.api_keys);
        fix(&mut c.ledger.evm_key);
        fix(&mut c.ledger.bridge_key);
        fix(&mut c.ledger.rpc_ca_file);
        c.data_dir = Some(match c.data_dir.take() {
            Some(d) if d.is_relative() => base.join(d),
            Some(d) => d,
            None => base.to_path_buf(),
        });
        // A model given as a relative path (not a known name) is relative too.
        let fix_model = |m: &mut String| {
            if verinfer_inference::models::known(m).is_none() && Path::new(m).is_relative() {
                *m = base.join(&*m).display().to_string();
            }
        };
        c.model
            .iter_mut()
            .chain(c.models.iter_mut())
            .for_each(fix_model);
        Ok(c)
    }

    /// The models the node runs: `model` then `models`, each once; the
    /// default model when neither is given.
    pub fn model_list(&self) -> Vec<String> {
        let mut list: Vec<String> = Vec::new();
        for m in self.model.iter().chain(&self.models) {
            if !list.contains(m) {
                list.push(m.clone());
            }
        }
        if list.is_empty() {
            list.push(verinfer_inference::models::DEFAULT_MODEL.into());
        }
        list
    }
}

/// Reads the API keys file: each key's hash and the account key it names.
pub fn load_api_keys(path: &Path) -> anyhow::Result<Vec<(Hash, SecretKey)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading API keys {}", path.display()))?;
    let file: ApiKeysFile =
        toml::from_str(&text).with_context(|| format!("parsing API keys {}", path.display()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    file.keys
        .into_iter()
        .map(|e| {
            let p = base.join(&e.account);
            if e.api_key.is_some() && e.api_key_sha256.is_none() {
                tracing::warn!(file = %path.display(), account = %p.display(), "an API key is stored in plain text: store `api_key_sha256` instead");
            }
            Ok((e.hash()?, load_key(&p)?))
        })
        .collect()
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
    SecretKey::from_file_text(&text).with_context(|| format!("parsing key {}", path.display()))
}

/// Reads the key at `path`, creating it first if it does not exist.
pub fn load_or_create_key(path: &Path) -> anyhow::Result<SecretKey> {
    if path.exists() {
        load_key(path)
    } else {
        create_key(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `model` and `models` together name the models a node runs, each
    /// once, relative paths made relative to the file; none names the
    /// default model.
    #[test]
    fn a_node_runs_the_models_its_config_lists() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("node.toml");
        std::fs::write(
            &path,
            "model = \"smollm2-135m\"\nmodels = [\"smollm2-135m\", \"gemma3-270m\", \"mine.gguf\"]\n",
        )?;
        let c = NodeConfig::load(&path)?;
        let mine = dir.path().join("mine.gguf").display().to_string();
        assert_eq!(
            c.model_list(),
            vec!["smollm2-135m".to_string(), "gemma3-270m".into(), mine]
        );
        std::fs::write(&path, "role = \"inference\"\n")?;
        assert_eq!(
            NodeConfig::load(&path)?.model_list(),
            vec![verinfer_inference::models::DEFAULT_MODEL.to_string()]
        );
        Ok(())
    }
}
