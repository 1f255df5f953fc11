//! The gateway role: the network's front door.
//!
//! It serves the OpenAI-compatible API (`/v1/chat/completions` and
//! `/v1/completions` to API-key holders, each key mapped to a ledger account
//! whose key the gateway holds and signs for; `/v1/models` to anyone); routes every
//! request through inference, verification and settlement ([`flow`]); and
//! serves receipts, the log, the network's state and metrics.
//!
//! By concern: `state` (settings, accounts, the directory), `routes`,
//! `completions` (the OpenAI endpoints up to the first event; `body`
//! reads their bodies within the limit), `streaming`
//! (JSON and server-sent event shapes), `views` (JSON reads), `metrics`
//! (Prometheus text of `counters`), `proxy` (the ledger's public reads);
//! the request's way through the network in `flow`, `watch`, `settle`,
//! `report`; the API's formats in `openai`, `tools` (`verinfer-openai`'s),
//! `guard`, `limits`; the static pages in `pages`.

mod body;
mod completions;
mod counters;
pub mod directory;
pub mod flow;
pub mod guard;
pub mod limits;
pub mod metrics;
pub mod openai;
pub mod pages;
pub mod pending;
mod proxy;
mod report;
mod routes;
pub mod settle;
mod state;
pub mod stream;
mod streaming;
pub mod tools;
mod views;
mod watch;

pub use state::{Account, Gateway, GatewayConfig};
