//! Attacks mounted against a live in-process devnet as an outsider would,
//! each with the defense that stops it (docs/threat-model.md).

mod gateway;
mod protocol;
mod roles;
