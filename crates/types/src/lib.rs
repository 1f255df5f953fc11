//! verinfer records, their canonical encoding, hashes, keys and signed notes.
//!
//! This crate is the shared vocabulary of every layer and does no I/O:
//!
//! - [`canonical`]: RFC 8785 (JCS) JSON restricted to integers, strict decode;
//! - [`envelope`]: the signed envelope of HTTP messages between nodes;
//! - [`hash`]: SHA-256 values;
//! - [`keys`]: Ed25519 keys and signatures;
//! - [`note`]: C2SP signed notes and verifier keys (`name+keyid+base64`);
//! - [`records`]: Request, Result, Verdict, Certificate, Receipt and the log leaf;
//! - [`tx`]: the ledger's records (transactions, genesis, evidence).

pub mod canonical;
pub mod envelope;
pub mod hash;
pub mod keys;
pub mod note;
pub mod records;
pub mod sync;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tx;

pub use hash::Hash;
pub use keys::{PublicKey, SecretKey, Signature};
pub use records::{Record, RecordError, SignedRecord};

#[doc(hidden)]
pub use serde as __serde;
