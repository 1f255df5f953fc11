//! The gateway role: the network's front door.
//!
//! It serves the OpenAI-compatible API (`/v1/chat/completions` and
//! `/v1/completions` to API-key holders, each key mapped to a ledger account
//! whose key the gateway holds and signs for; `/v1/models` to anyone); routes every
//! request through inference, verification and settlement ([`flow`]); and
//! serves receipts, the log, the network's state and metrics.
//!
//! By concern: `state` (settings, accounts, the directory), `routes`,
//! `completions` (the OpenAI endpoints up to the first event), `streaming`
//! (JSON and server-sent event shapes), `views` (JSON reads), `metrics`
//! (Prometheus text of `counters`), `proxy` (the ledger's public reads);
//! the request's way through the network in `flow`, `watch`, `settle`,
//! `report`; the API's formats in `openai`, `tools`, `guard`, `limits`; the
//! static pages in `pages`.

mod completions;
mod counters;
pub mod directory;
mod error;
pub mod flow;
pub mod guard;
pub mod limits;
pub mod metrics;
pub mod openai;
pub mod pages;
mod proxy;
mod report;
mod routes;
pub mod settle;
mod state;
mod streaming;
pub mod tools;
mod views;
mod watch;

pub use state::{Account, Gateway, GatewayConfig};
