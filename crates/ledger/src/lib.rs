//! verinfer settlement layer: the ledger that records, pays and slashes.
//!
//! - [`tx`]: the ledger's records (transactions, genesis, governance changes,
//!   slashing evidence);
//! - [`state`]: the state machine, pure functions over records;
//! - [`slashing`]: the slash rule (what evidence proves a fault), shared by
//!   the state machine and the EVM backend's verifiers;
//! - [`evm`]: the EVM backend: value settles on an Ethereum-compatible chain;
//! - [`service`]: the embedded ledger, one data directory, crash-safe: a
//!   write-ahead log of transactions and the transparency log of receipts.

pub mod evm;
pub mod service;
pub mod slashing;
pub mod state;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
/// The ledger's records live in `verinfer-types` (parsed without a ledger).
pub use verinfer_types::tx;

pub use service::{system_clock, Clock, FeeTotals, Ledger, LedgerError, Replayed, SlashRecord};
pub use state::{apply, fees, State, Summary, TxError};
pub use tx::{Transaction, TxBody, WalEntry};
