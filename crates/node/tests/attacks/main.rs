//! Attacks mounted against a live in-process devnet (docs/threat-model.md).

mod protocol;
