//! The four roles, one folder each: its handlers, its EVM duties and its
//! views. Roles sit on the shared plumbing (auth, client, http, wire,
//! membership, chronicle, config) and never import each other; `start` and
//! `devnet` assemble them.

pub mod gateway;
pub mod inference;
pub mod ledger;
pub mod verifier;
