//! verinfer network roles over HTTP, and the devnet that runs them all.
//!
//! Four roles exchange signed records over HTTP, with the same protocol
//! whether they share a process or run on different machines:
//!
//! - [`roles::ledger`]: the embedded ledger and its receipts log; gathers the
//!   verifiers' cosignatures on checkpoints;
//! - [`roles::inference`]: runs a model, answers signed Requests with signed
//!   Results, streaming the text;
//! - [`roles::verifier`]: checks Results and signs Verdicts; witnesses the log;
//! - [`roles::gateway`]: the OpenAI-compatible API, routing, verifier draws,
//!   disputes, settlement, receipts, metrics.
//!
//! Gateways, inference nodes and verifiers join by staking and registering
//! their endpoint in the ledger ([`membership`]) and stay live by
//! heartbeats; inference nodes and verifiers take work only from registered
//! gateways, and the ledger's duties only from the ledger's key.
//! Messages between nodes are authenticated ([`auth`]): signed by the
//! sender's node key for the receiver's key, with a timestamp and a nonce
//! against replay (remembered across restarts).
//! With the EVM backend, the ledger role settles every final checkpoint and
//! slash on a chain, signed by the verifiers ([`roles::ledger::evm`]).
//! [`devnet`] lays out a data directory and runs every role in one process;
//! [`config`] is the per-node configuration `verinfer node` reads.

pub mod auth;
pub mod chronicle;
pub mod client;
pub mod config;
pub mod devnet;
pub mod http;
pub mod membership;
pub mod roles;
pub mod start;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod wire;

/// The gateway role, at the path other crates and tests name it by.
pub use roles::gateway;
