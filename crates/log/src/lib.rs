//! verinfer transparency log: the record that lasts.
//!
//! An append-only RFC 6962 Merkle tree of entries on disk, with
//!
//! - [`merkle`]: hashing, inclusion and consistency proofs and their
//!   verification (pure functions);
//! - [`checkpoint`]: C2SP `tlog-checkpoint` signed notes;
//! - [`witness`]: C2SP `tlog-cosignature` and the witness rule (cosign only
//!   what is consistent with the last cosigned checkpoint);
//! - [`tiles`]: C2SP `tlog-tiles` paths, hash tiles and entry bundles;
//! - [`store`]: the durable log (group commit, crash recovery);
//! - [`dirlock`]: one writer per data directory (an exclusive lock file);
//! - [`http`]: the log served over HTTP (checkpoint, tiles, JSON proofs).

pub mod checkpoint;
pub mod dirlock;
pub mod http;
pub mod merkle;
pub mod store;
#[cfg(feature = "test-util")]
pub mod testutil;
pub mod tiles;
pub mod witness;

pub use checkpoint::{Checkpoint, SignedCheckpoint};
pub use dirlock::{DirLock, DirLockError};
pub use store::{write_atomic, Log, LogError};
