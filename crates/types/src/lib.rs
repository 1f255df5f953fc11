//! verinfer records, their canonical encoding, hashes, keys and signed notes.
//!
//! This crate is the shared vocabulary of every layer and does no I/O:
//!
//! - [`canonical`]: RFC 8785 (JCS) JSON restricted to integers, strict decode;
//! - [`hash`]: SHA-256 values;
//! - [`keys`]: Ed25519 keys and signatures;
//! - [`note`]: C2SP signed notes and verifier keys (`name+keyid+base64`);
//! - [`records`]: Request, Result, Verdict, Certificate, Receipt and the log leaf.

pub mod canonical;
#[cfg(any(test, feature = "test-util"))]
pub mod fixtures;
pub mod hash;
pub mod keys;
pub mod note;
pub mod records;
pub mod sync;

pub use hash::Hash;
pub use keys::{PublicKey, SecretKey, Signature};
pub use records::{Record, RecordError, SignedRecord};

#[doc(hidden)]
pub use serde as __serde;
