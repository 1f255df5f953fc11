//! Where verinfer keeps its files on this machine, one rule for every
//! caller: `$VERINFER_HOME`, else `$XDG_DATA_HOME/verinfer`, else
//! `$HOME/.local/share/verinfer` (empty variables count as unset). Models go
//! to its `models` folder, the devnet and the chat history to their own.

use std::path::PathBuf;

/// No variable names a data directory.
#[derive(Debug, thiserror::Error)]
#[error("cannot find a data directory: set VERINFER_HOME (or XDG_DATA_HOME or HOME)")]
pub struct NoDataDir;

/// The user's verinfer data directory (not created).
pub fn data_dir() -> Result<PathBuf, NoDataDir> {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(home) = var("VERINFER_HOME") {
        Ok(home)
    } else if let Some(data) = var("XDG_DATA_HOME") {
        Ok(data.join("verinfer"))
    } else if let Some(home) = var("HOME") {
        Ok(home.join(".local").join("share").join("verinfer"))
    } else {
        Err(NoDataDir)
    }
}

/// The model cache (not created).
pub fn models_dir() -> Result<PathBuf, NoDataDir> {
    Ok(data_dir()?.join("models"))
}
