//! The EVM settlement backend: value settles on an Ethereum-compatible chain
//! through the contracts under `contracts/` (see `contracts/README.md`).
//!
//! The embedded ledger still orders the network's transactions (stake,
//! registration, reservations, receipts) and keeps the transparency log; what
//! the chain adds is where the money is. Each final (cosigned) checkpoint of
//! the receipts log is settled on chain in one transaction carrying the netted
//! fee transfers of the receipts it adds, signed by a quorum of verifiers'
//! EVM keys; each slash is repeated on chain with the signatures of a slash
//! quorum. An optimistic answer's fee is held on chain for its window, paid
//! out after it or refunded by a challenge (which takes a slash's
//! signatures); an account paid before it linked an address is paid to its
//! vault, which it claims once linked. Verifiers sign only what they have
//! checked themselves ([`netting::check_settlement`],
//! [`netting::check_slash`], [`netting::check_claim`]).
//!
//! - [`keys`]: the EVM key of every verinfer key, and signed links from an
//!   account (Ed25519) to its EVM address;
//! - [`netting`]: pure functions: fee netting, transfer words, EIP-712
//!   digests, the verifier's checks;
//! - [`anvil`]: a local chain for the devnet and tests;
//! - [`chain`]: the contract bindings and deployment, through alloy, and the
//!   sender that prices transactions and replaces stuck ones;
//! - [`settler`]: the idempotent submitter, and the bridge that mirrors the
//!   escrow's deposits and withdrawals into the ledger.

pub mod anvil;
pub mod chain;
pub mod keys;
pub mod netting;
pub mod settler;

pub use alloy::primitives::{Address, B256};
pub use keys::{evm_signer, Link};

/// What can go wrong in the EVM backend.
#[derive(Debug, thiserror::Error)]
pub enum EvmError {
    /// A record failed to encode, decode or verify.
    #[error(transparent)]
    Record(#[from] verinfer_types::RecordError),
    /// A key or signature is invalid.
    #[error("key: {0}")]
    Key(String),
    /// A settlement or slash request does not hold up.
    #[error("{0}")]
    Invalid(String),
    /// An account has no linked EVM address.
    #[error("account {0} has no linked EVM address")]
    Unlinked(String),
    /// The chain (RPC) failed or refused.
    #[error("chain: {0}")]
    Chain(String),
    /// The local ledger failed.
    #[error(transparent)]
    Ledger(#[from] crate::LedgerError),
}

pub(crate) fn invalid(m: impl Into<String>) -> EvmError {
    EvmError::Invalid(m.into())
}
