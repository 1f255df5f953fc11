//! C2SP `tlog-cosignature` (v1, Ed25519) and the witness rule.
//!
//! A witness cosigns a checkpoint only after checking that it is consistent
//! with the last checkpoint it cosigned for the same log; it refuses anything
//! else. The signed message is `cosignature/v1\ntime <t>\n` followed by the
//! checkpoint's note text; the signature is the big-endian timestamp followed
//! by the Ed25519 signature.

use crate::checkpoint::{Checkpoint, CheckpointError, SignedCheckpoint};
use crate::merkle::{verify_consistency, ProofError};
use verinfer_types::note::{Note, NoteError, VerifierKey, ALG_COSIGNATURE_V1};
use verinfer_types::{Hash, SecretKey, Signature};

/// Errors of cosigning and of checking cosignatures.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WitnessError {
    /// The checkpoint itself is bad (format, log signature, origin).
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// The checkpoint is smaller than the last one cosigned.
    #[error("checkpoint size {new} is smaller than the last cosigned size {old}")]
    Rollback {
        /// Last cosigned size.
        old: u64,
        /// Offered size.
        new: u64,
    },
    /// The consistency proof from the last cosigned checkpoint fails.
    #[error("not consistent with the last cosigned checkpoint: {0}")]
    Inconsistent(ProofError),
    /// A cosignature line that is malformed or does not verify.
    #[error("cosignature by {0} does not verify")]
    BadCosignature(String),
    /// No cosignature by this witness.
    #[error("no cosignature by {0}")]
    Missing(String),
    /// Key problems.
    #[error(transparent)]
    Note(#[from] NoteError),
}

fn message(note_text: &str, timestamp: u64) -> Vec<u8> {
    format!("cosignature/v1\ntime {timestamp}\n{note_text}").into_bytes()
}

/// The verifier key of a witness (signature type 0x04).
pub fn witness_key(name: &str, key: &SecretKey) -> Result<VerifierKey, NoteError> {
    VerifierKey::new(name, ALG_COSIGNATURE_V1, key.public())
}

/// Adds the cosignature of `key` under `name`, timestamped `timestamp`.
pub fn add_cosignature(
    note: &mut Note,
    name: &str,
    key: &SecretKey,
    timestamp: u64,
) -> Result<(), WitnessError> {
    let vk = witness_key(name, key)?;
    let sig = key.sign(&message(&note.text, timestamp));
    let mut bytes = timestamp.to_be_bytes().to_vec();
    bytes.extend_from_slice(&sig.0);
    note.add_signature(&vk, bytes);
    Ok(())
}

/// Checks the cosignature of `witness` on `note`, returning its timestamp.
pub fn verify_cosignature(note: &Note, witness: &VerifierKey) -> Result<u64, WitnessError> {
    if witness.alg != ALG_COSIGNATURE_V1 {
        return Err(NoteError::VerifierKey("witness key must have signature type 0x04").into());
    }
    let bad = || WitnessError::BadCosignature(witness.name.clone());
    let mut found = None;
    for raw in witness.signatures_on(note) {
        if raw.len() != 72 {
            return Err(bad());
        }
        let timestamp = u64::from_be_bytes(raw[..8].try_into().map_err(|_| bad())?);
        if timestamp > i64::MAX as u64 {
            return Err(bad());
        }
        let sig = Signature(raw[8..].try_into().map_err(|_| bad())?);
        witness
            .key
            .verify(&message(&note.text, timestamp), &sig)
            .map_err(|_| bad())?;
        found = Some(timestamp);
    }
    found.ok_or_else(|| WitnessError::Missing(witness.name.clone()))
}

/// Counts the witnesses in `witnesses` whose cosignature on `note` verifies.
pub fn count_cosignatures(note: &Note, witnesses: &[VerifierKey]) -> usize {
    witnesses
        .iter()
        .filter(|w| verify_cosignature(note, w).is_ok())
        .count()
}

/// A witness for one log: its key and the last checkpoint it cosigned.
#[derive(Debug)]
pub struct Witness {
    name: String,
    key: SecretKey,
    log: VerifierKey,
    last: Option<Checkpoint>,
}

impl Witness {
    /// A witness named `name` for the log with key `log`, resuming from the
    /// last checkpoint it cosigned (None for a new witness).
    pub fn new(
        name: &str,
        key: SecretKey,
        log: VerifierKey,
        last: Option<Checkpoint>,
    ) -> Result<Self, WitnessError> {
        witness_key(name, &key)?;
        Ok(Witness {
            name: name.to_string(),
            key,
            log,
            last,
        })
    }

    /// This witness's verifier key.
    pub fn verifier_key(&self) -> Result<VerifierKey, NoteError> {
        witness_key(&self.name, &self.key)
    }

    /// The last checkpoint cosigned.
    pub fn last(&self) -> Option<&Checkpoint> {
        self.last.as_ref()
    }

    /// Checks `note_text` (signed by the log) against the last cosigned
    /// checkpoint with `proof`, and if it holds, returns the note with this
    /// witness's cosignature added and remembers the checkpoint. On any error
    /// nothing changes.
    pub fn cosign(
        &mut self,
        note_text: &str,
        proof: &[Hash],
        timestamp: u64,
    ) -> Result<Note, WitnessError> {
        let SignedCheckpoint {
            checkpoint,
            mut note,
        } = SignedCheckpoint::open(note_text, &self.log)?;
        if let Some(last) = &self.last {
            if checkpoint.size < last.size {
                return Err(WitnessError::Rollback {
                    old: last.size,
                    new: checkpoint.size,
                });
            }
            if last.size > 0 {
                verify_consistency(
                    last.size,
                    checkpoint.size,
                    &last.root,
                    &checkpoint.root,
                    proof,
                )
                .map_err(WitnessError::Inconsistent)?;
            } else if !proof.is_empty() {
                return Err(WitnessError::Inconsistent(ProofError::Length));
            }
        }
        add_cosignature(&mut note, &self.name, &self.key, timestamp)?;
        self.last = Some(checkpoint);
        Ok(note)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{leaf_hash, Tree};
    use verinfer_types::note::ALG_ED25519;

    /// The cosignature example of the C2SP tlog-cosignature specification:
    /// its signed-message layout for timestamp 1679315147.
    #[test]
    fn message_layout_matches_spec() {
        let text =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        assert_eq!(
            String::from_utf8(message(text, 1679315147)).unwrap(),
            format!("cosignature/v1\ntime 1679315147\n{text}")
        );
    }

    #[test]
    fn witness_follows_consistent_log_and_refuses_forks() {
        let log_key = SecretKey::from_seed(&[1; 32]);
        let log_vk = VerifierKey::new("example.org/log", ALG_ED25519, log_key.public()).unwrap();
        let mut tree = Tree::new();
        let sign = |t: &Tree, n: u64| {
            Checkpoint {
                origin: "example.org/log".into(),
                size: n,
                root: t.root(n).unwrap(),
                extensions: vec![],
            }
            .sign(&log_key)
            .unwrap()
            .note
            .to_string()
        };
        for i in 0..10u64 {
            tree.push(leaf_hash(&i.to_be_bytes()));
        }
        let wkey = SecretKey::from_seed(&[2; 32]);
        let mut w = Witness::new("example.org/w1", wkey.clone(), log_vk.clone(), None).unwrap();
        let n1 = w.cosign(&sign(&tree, 5), &[], 100).unwrap();
        let wvk = w.verifier_key().unwrap();
        assert_eq!(verify_cosignature(&n1, &wvk).unwrap(), 100);
        // The log's own signature still verifies with the cosignature added.
        n1.verify(&log_vk).unwrap();

        let proof = tree.consistency_proof(5, 10).unwrap();
        let n2 = w.cosign(&sign(&tree, 10), &proof, 101).unwrap();
        assert_eq!(count_cosignatures(&n2, std::slice::from_ref(&wvk)), 1);

        // A fork: a different tree of size 12 that does not extend the first 10.
        let mut fork = Tree::new();
        for i in 100..112u64 {
            fork.push(leaf_hash(&i.to_be_bytes()));
        }
        let bad_proof = fork.consistency_proof(10, 12).unwrap();
        assert!(matches!(
            w.cosign(&sign(&fork, 12), &bad_proof, 102),
            Err(WitnessError::Inconsistent(_))
        ));
        assert!(matches!(
            w.cosign(&sign(&tree, 4), &[], 103),
            Err(WitnessError::Rollback { .. })
        ));
        assert_eq!(w.last().unwrap().size, 10);

        // Tampered cosignature.
        let tampered = n2
            .to_string()
            .replace("example.org/log\n10", "example.org/log\n11");
        let tampered = Note::parse(&tampered).unwrap();
        assert!(verify_cosignature(&tampered, &wvk).is_err());
    }
}
