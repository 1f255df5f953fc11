//! The TOML configuration file. Every field is optional; command-line flags
//! override it, and built-in defaults fill the rest.

use anyhow::Context;
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// `verinfer.toml`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Config {
    /// Data directory of devnet (default: `$VERINFER_HOME` or the user data dir).
    pub data_dir: Option<PathBuf>,
    /// HTTP listen address.
    pub listen: Option<String>,
    /// The log.
    #[serde(default)]
    pub log: LogConfig,
}

/// `[log]` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogConfig {
    /// Origin (and key name) of a new log.
    pub origin: Option<String>,
    /// How often a new checkpoint is signed while the log grows, in ms.
    pub checkpoint_interval_ms: Option<u64>,
}

impl Config {
    /// Reads `path`, or returns the defaults when no file is given.
    pub(crate) fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config {}", path.display()))
    }
}

/// The user's verinfer data directory (see `verinfer_inference::paths`).
pub(crate) fn default_data_dir() -> anyhow::Result<PathBuf> {
    Ok(verinfer_inference::paths::data_dir()?)
}
