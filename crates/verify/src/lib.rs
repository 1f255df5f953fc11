//! verinfer verification layer: the rules that decide whether an inference
//! result is honest, the verifier that applies them, and the committee logic
//! around verifiers.
//!
//! # What it is for
//!
//! An inference node answers a [`Request`](verinfer_types::records::Request)
//! with a signed [`InferenceResult`](verinfer_types::records::InferenceResult).
//! A verifier decides, with no trust in the node, whether that result is what
//! the declared model, on the declared input with the declared decoding,
//! produces, and whether the request's policy (length, stop sequences, JSON
//! schema) holds; it signs a [`Verdict`](verinfer_types::records::Verdict).
//! A quorum of accepting verdicts is a certificate; disagreement escalates to
//! a larger committee, whose outcome names who was wrong.
//!
//! # Layout
//!
//! - [`rules`]: the rules as pure functions over records (no I/O), each
//!   returning a typed [`Rejection`] with a stable code;
//!   the token rule works over the output of one teacher-forced `score` pass
//!   and applies the engine version's margin rule for near-ties.
//! - [`logprobs`]: the log-probability rule over the same score pass (the
//!   reported values within a bound of the recomputed ones, the list of best
//!   tokens complete).
//! - [`checker`]: the verifier shell: builds the prompt, runs the rules and
//!   one `score` pass on a [`Recompute`] engine (the
//!   inference [`Engine`](verinfer_inference::Engine)), measures the CPU
//!   time and signs the verdict.
//! - [`committee`]: committee selection from randomness fixed after the
//!   result, verification-mode plans, certificate assembly and checking, and
//!   dispute outcomes with their signed evidence.
//! - [`receipt`]: a receipt checked with no trust in any node: its commitments,
//!   signatures and certificate, and its inclusion in a cosigned checkpoint
//!   (the `verinfer-receipt` crate, which apps can use alone).

pub mod checker;
pub mod committee;
pub mod logprobs;
pub mod rules;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// Receipt checking lives in the light `verinfer-receipt` crate (no engine,
/// no I/O); re-exported so the verification layer has one face.
pub use verinfer_receipt as receipt;

pub use checker::{CheckError, Checker, Outcome, Recompute};
pub use rules::{MarginRule, Rejection};
