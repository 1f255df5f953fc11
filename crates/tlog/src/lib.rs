//! verinfer transparency log, the pure parts: everything a client needs to
//! check what a log serves, and nothing that stores or serves it.
//!
//! - [`merkle`]: RFC 6962 hashing, inclusion and consistency proofs and their
//!   verification, and the in-memory [`merkle::Tree`] that proves them;
//! - [`checkpoint`]: C2SP `tlog-checkpoint` signed notes;
//! - [`witness`]: C2SP `tlog-cosignature` and the witness rule (cosign only
//!   what is consistent with the last cosigned checkpoint);
//! - [`tiles`]: C2SP `tlog-tiles` paths, hash tiles and entry bundles.
//!
//! No I/O and no async runtime: the durable store and the HTTP server are in
//! `verinfer-log`, which re-exports these modules. Light clients (receipt
//! checkers) depend on this crate alone.

pub mod checkpoint;
pub mod merkle;
pub mod tiles;
pub mod witness;

pub use checkpoint::{Checkpoint, SignedCheckpoint};
