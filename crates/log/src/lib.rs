//! verinfer transparency log: the record that lasts.
//!
//! An append-only RFC 6962 Merkle tree of entries on disk. The pure parts
//! (Merkle proofs, checkpoints, cosignatures, tile paths) live in
//! `verinfer-tlog` and are re-exported here as [`merkle`], [`checkpoint`],
//! [`witness`] and [`tiles`]; this crate adds
//!
//! - [`store`]: the durable log (group commit, crash recovery);
//! - [`dirlock`]: one writer per data directory (an exclusive lock file);
//! - [`http`]: the log served over HTTP (checkpoint, tiles, JSON proofs).

pub mod dirlock;
pub mod http;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use verinfer_tlog::{checkpoint, merkle, tiles, witness};

pub use checkpoint::{Checkpoint, SignedCheckpoint};
pub use dirlock::{DirLock, DirLockError};
pub use store::{write_atomic, Log, LogError};
