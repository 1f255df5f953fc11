//! Answers delivered before they could be certified (docs/design.md,
//! "Delivered, then certified").
//!
//! Everything that could refuse a request is checked before its first
//! streamed byte; once the node's signed Result is in hand, its text goes to
//! the client. When no certificate can be had then (the verifiers drawn
//! failed or left, the ledger is unreachable), the answer is not dropped:
//! the gateway keeps the Request and Result here, one file each, written
//! and synced before the client is told the answer is `pending`, and keeps
//! asking live verifiers until the reservation's deadline. A certificate
//! settles the receipt (the node is paid, the requester charged once); a
//! committee proving the node cheated, or the deadline, releases the
//! reservation. A gateway that restarts reads the files back and goes on.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use verinfer_types::records::{InferenceResult, Request};
use verinfer_types::Hash;

/// One delivered answer and what became of it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pending {
    /// The model's id.
    pub model: Hash,
    /// The signed Request.
    pub request: Request,
    /// The node's signed Result, as delivered.
    pub result: InferenceResult,
    /// Until when (Unix ms, the gateway's clock) certifying is tried: a
    /// margin before the reservation's deadline, after which the ledger
    /// refuses to settle it.
    pub until_ms: u64,
    /// The outcome, once there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
}

/// What became of a pending answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "status", deny_unknown_fields)]
pub enum Outcome {
    /// Certified and settled: the receipt's id and log index.
    Verified {
        /// The receipt's id.
        receipt_id: Hash,
        /// Its index in the log.
        log_index: u64,
    },
    /// Settled without a check (its policy drew no verifier).
    Provisional {
        /// The receipt's id.
        receipt_id: Hash,
        /// Its index in the log.
        log_index: u64,
    },
    /// A committee rejected it (a node proven to cheat is slashed): the
    /// reservation was released.
    Rejected {
        /// Why.
        reason: String,
    },
    /// No certificate before the deadline: the reservation was released.
    Expired,
}

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Reading or writing the directory.
    #[error("pending answers in {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// A file that does not parse.
    #[error("pending answer {0}: {1}")]
    Parse(PathBuf, serde_json::Error),
}

/// The pending answers, on disk (one JSON file per request hash) when the
/// gateway has a directory, and in memory.
#[derive(Debug)]
pub struct Store {
    dir: Option<PathBuf>,
    answers: Mutex<HashMap<Hash, Pending>>,
}

impl Store {
    /// Opens `dir` (created if missing) and reads every answer in it; with
    /// no directory, answers live in memory only.
    pub fn open(dir: Option<&Path>) -> Result<Self, StoreError> {
        let mut answers = HashMap::new();
        if let Some(dir) = dir {
            let io = |e| StoreError::Io(dir.to_path_buf(), e);
            std::fs::create_dir_all(dir).map_err(io)?;
            for entry in std::fs::read_dir(dir).map_err(io)? {
                let path = entry.map_err(io)?.path();
                if path.extension().and_then(|e| e.to_str()) != Some("json") {
                    continue;
                }
                let bytes = std::fs::read(&path).map_err(|e| StoreError::Io(path.clone(), e))?;
                let p: Pending = serde_json::from_slice(&bytes)
                    .map_err(|e| StoreError::Parse(path.clone(), e))?;
                answers.insert(p.result.request, p);
            }
        }
        Ok(Store {
            dir: dir.map(Path::to_path_buf),
            answers: Mutex::new(answers),
        })
    }

    /// Records `p` (a new answer, or its outcome), synced before it returns.
    pub fn put(&self, p: &Pending) -> Result<(), StoreError> {
        if let Some(dir) = &self.dir {
            let path = dir.join(format!("{}.json", p.result.request));
            let tmp = path.with_extension("tmp");
            let io = |e| StoreError::Io(tmp.clone(), e);
            let bytes = serde_json::to_vec(p).map_err(|e| StoreError::Parse(path.clone(), e))?;
            let mut f = std::fs::File::create(&tmp).map_err(io)?;
            f.write_all(&bytes).map_err(io)?;
            f.sync_all().map_err(io)?;
            std::fs::rename(&tmp, &path).map_err(io)?;
            // The rename is durable once the directory is synced.
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| StoreError::Io(dir.clone(), e))?;
        }
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(p.result.request, p.clone());
        Ok(())
    }

    /// The answer to request `request`, if it was pending.
    pub fn get(&self, request: &Hash) -> Option<Pending> {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(request)
            .cloned()
    }

    /// The answers with no outcome yet.
    pub fn open_answers(&self) -> Vec<Pending> {
        self.answers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|p| p.outcome.is_none())
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use verinfer_types::testing;

    fn pending() -> Pending {
        let request = testing::request(Hash::default());
        Pending {
            model: Hash::default(),
            result: testing::result(&request),
            request,
            until_ms: 5,
            outcome: None,
        }
    }

    #[test]
    fn answers_and_outcomes_survive_a_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(Some(dir.path())).expect("open");
        let mut p = pending();
        store.put(&p).expect("put");
        let again = Store::open(Some(dir.path())).expect("reopen");
        assert_eq!(again.open_answers().len(), 1);
        p.outcome = Some(Outcome::Expired);
        again.put(&p).expect("outcome");
        let third = Store::open(Some(dir.path())).expect("reopen");
        assert!(third.open_answers().is_empty());
        assert_eq!(
            third.get(&p.result.request).and_then(|p| p.outcome),
            Some(Outcome::Expired)
        );
        // `GET /v1/answers/{request}` shows an outcome's fields as they are.
        let settled = Outcome::Verified {
            receipt_id: Hash::default(),
            log_index: 7,
        };
        let v = serde_json::to_value(settled).expect("json");
        assert_eq!(
            (&v["status"], &v["log_index"]),
            (&"verified".into(), &7.into())
        );
    }
}
