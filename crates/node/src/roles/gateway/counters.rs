//! Counters the gateway keeps, served as Prometheus text at `/metrics`
//! ([`super::metrics`]) and as JSON in `/v1/network`.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// Monotonic counters since the gateway started.
#[derive(Default, Debug)]
pub struct Counters {
    /// API requests answered (any outcome).
    pub requests: AtomicU64,
    /// Answers verified by a quorum.
    pub verified: AtomicU64,
    /// Answers settled without a check.
    pub provisional: AtomicU64,
    /// Results the verifiers rejected.
    pub rejected: AtomicU64,
    /// Requests refused or failed with an error status.
    pub errors: AtomicU64,
    /// Slashes submitted.
    pub slashes: AtomicU64,
    /// Retries on another inference node.
    pub retries: AtomicU64,
    /// Prompt tokens of settled answers.
    pub prompt_tokens: AtomicU64,
    /// Completion tokens of settled answers.
    pub completion_tokens: AtomicU64,
    /// Verdicts received.
    pub verdicts: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// See [`Counters`].
    pub requests: u64,
    /// See [`Counters`].
    pub verified: u64,
    /// See [`Counters`].
    pub provisional: u64,
    /// See [`Counters`].
    pub rejected: u64,
    /// See [`Counters`].
    pub errors: u64,
    /// See [`Counters`].
    pub slashes: u64,
    /// See [`Counters`].
    pub retries: u64,
    /// See [`Counters`].
    pub prompt_tokens: u64,
    /// See [`Counters`].
    pub completion_tokens: u64,
    /// See [`Counters`].
    pub verdicts: u64,
}

impl Counters {
    /// Adds one to `c`.
    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values.
    pub fn snapshot(&self) -> Snapshot {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        Snapshot {
            requests: g(&self.requests),
            verified: g(&self.verified),
            provisional: g(&self.provisional),
            rejected: g(&self.rejected),
            errors: g(&self.errors),
            slashes: g(&self.slashes),
            retries: g(&self.retries),
            prompt_tokens: g(&self.prompt_tokens),
            completion_tokens: g(&self.completion_tokens),
            verdicts: g(&self.verdicts),
        }
    }
}
