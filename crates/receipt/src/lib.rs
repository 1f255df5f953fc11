//! A receipt checked with no trust in any node.
//!
//! The gateway serves a [`ReceiptBundle`]: the receipt's log leaf, the
//! receipt itself when its owner asks, a cosigned checkpoint and the
//! inclusion proof of the leaf in it. [`check_receipt`] is a pure function
//! that decides, from the bundle and the keys the caller [`Trust`]s, whether
//! the receipt holds: the leaf opens to the disclosed records, every
//! signature verifies, the certificate meets the request's policy with
//! verdicts of trusted verifiers, and the leaf sits in a checkpoint signed by
//! the log and cosigned by a quorum of witnesses. Verifiers and witnesses are
//! the same keys, so one list of witness keys trusts both.

use std::collections::BTreeSet;
use std::fmt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use verinfer_tlog::checkpoint::{CheckpointError, SignedCheckpoint};
use verinfer_tlog::merkle::{hash_from_slice, leaf_hash, verify_inclusion, ProofError};
use verinfer_tlog::witness::verify_cosignature;
use verinfer_types::note::{VerifierKey, ALG_COSIGNATURE_V1, ALG_ED25519};
use verinfer_types::records::{
    Decision, Fees, Finality, FinishReason, Leaf, Receipt, VerificationMode,
};
use verinfer_types::{Hash, PublicKey, Record, RecordError, SignedRecord};

/// What `GET /v1/receipts/{id}` serves and `verinfer verify` checks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptBundle {
    /// Receipt id: the RFC 6962 leaf hash (SHA-256(0x00 || canonical Leaf)) of the receipt's log leaf.
    pub id: Hash,
    /// Index of the leaf in the receipts log.
    pub index: u64,
    /// The log leaf (salted commitments, fees).
    pub leaf: Leaf,
    /// The full receipt with its text; disclosed to its owner only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
    /// A cosigned checkpoint note covering `index` (log signature plus witness cosignatures), or None while no final checkpoint covers it yet.
    #[serde(default)]
    pub checkpoint: Option<String>,
    /// Inclusion proof of `index` in that checkpoint's tree, standard base64 hashes.
    #[serde(default)]
    pub inclusion_proof: Vec<String>,
    /// The log's verifier key (C2SP vkey, Ed25519 type 0x01).
    pub log_key: String,
    /// The witnesses' verifier keys (C2SP vkeys, tlog-cosignature type 0x04): the network's verifiers.
    pub witnesses: Vec<String>,
    /// Cosignatures a checkpoint needs to be final.
    pub witness_quorum: u32,
    /// For an `optimistic` answer, where it stands as the ledger says:
    /// provisional inside its challenge window, final or overturned. The
    /// log proves the receipt was settled, not this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finality: Option<Finality>,
}

/// The C2SP key name under which the verifier with Ed25519 key `key`
/// cosigns checkpoints.
pub fn witness_name(key: &PublicKey) -> String {
    format!("witness.verinfer/{}", &key.to_hex()[..16])
}

/// The keys a check relies on: the log's key, the witnesses (who are also
/// the verifiers whose verdicts count) and how many cosignatures make a
/// checkpoint final.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trust {
    /// The log's key (Ed25519 note key, type 0x01).
    pub log_key: VerifierKey,
    /// The witnesses' keys (cosignature keys, type 0x04).
    pub witnesses: Vec<VerifierKey>,
    /// Distinct witness cosignatures a checkpoint needs.
    pub witness_quorum: usize,
}

/// The cosignatures a checkpoint needs when the caller pins `witnesses`
/// without a quorum: a strict majority of the distinct pinned keys.
pub fn default_witness_quorum(witnesses: &[VerifierKey]) -> usize {
    let distinct: BTreeSet<&PublicKey> = witnesses.iter().map(|w| &w.key).collect();
    distinct.len() / 2 + 1
}

impl Trust {
    /// Keys the caller pins. The quorum is the caller's (default: a strict
    /// majority of the pinned witnesses, [`default_witness_quorum`]) and
    /// nothing in a receipt lowers it: a receipt edited to say
    /// `witness_quorum: 0` still needs that many cosignatures.
    pub fn pinned(
        log_key: VerifierKey,
        witnesses: Vec<VerifierKey>,
        witness_quorum: Option<usize>,
    ) -> Trust {
        let witness_quorum = witness_quorum.unwrap_or_else(|| default_witness_quorum(&witnesses));
        Trust {
            log_key,
            witnesses,
            witness_quorum,
        }
    }

    /// The keys the bundle itself names. Such a check proves the receipt is
    /// consistent, not that the keys are the network's: pin them for that.
    pub fn from_bundle(bundle: &ReceiptBundle) -> Result<Trust, ReceiptError> {
        Ok(Trust {
            log_key: parse_log_key(&bundle.log_key)?,
            witnesses: bundle
                .witnesses
                .iter()
                .map(|w| parse_witness_key(w))
                .collect::<Result<_, _>>()?,
            witness_quorum: bundle.witness_quorum as usize,
        })
    }
}

/// Parses a log verifier key, which must be an Ed25519 note key (type 0x01).
pub fn parse_log_key(text: &str) -> Result<VerifierKey, ReceiptError> {
    parse_key(
        text,
        ALG_ED25519,
        "log key",
        "an Ed25519 note key (type 0x01)",
    )
}

/// Parses a witness verifier key, which must be a cosignature key (type 0x04).
pub fn parse_witness_key(text: &str) -> Result<VerifierKey, ReceiptError> {
    parse_key(
        text,
        ALG_COSIGNATURE_V1,
        "witness key",
        "a tlog-cosignature key (type 0x04)",
    )
}

fn parse_key(
    text: &str,
    alg: u8,
    what: &'static str,
    want: &str,
) -> Result<VerifierKey, ReceiptError> {
    let bad = |reason: String| ReceiptError::Key {
        what,
        key: text.to_string(),
        reason,
    };
    let key: VerifierKey = text.trim().parse().map_err(|e| bad(format!("{e}")))?;
    if key.alg != alg {
        return Err(bad(format!("not {want}")));
    }
    Ok(key)
}

/// One failed check. The messages say what does not hold.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    /// A verifier key that cannot be used.
    #[error("{what} {key:?}: {reason}")]
    Key {
        /// `log key` or `witness key`.
        what: &'static str,
        /// The key text.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A record that cannot be encoded canonically.
    #[error("cannot encode a record: {0}")]
    Record(#[from] RecordError),
    /// The id is not the hash of the leaf.
    #[error("receipt id {id} is not the leaf hash of its log leaf ({computed})")]
    IdMismatch {
        /// The id given.
        id: Hash,
        /// The leaf hash of the leaf given.
        computed: Hash,
    },
    /// The disclosed receipt does not open the leaf's commitments.
    #[error("the receipt does not match its log leaf: the {0} differs")]
    LeafMismatch(&'static str),
    /// The request's signature does not verify.
    #[error("the request's signature does not verify: {0}")]
    RequestSignature(RecordError),
    /// The result's signature does not verify.
    #[error("the result's signature by its inference node does not verify: {0}")]
    ResultSignature(RecordError),
    /// The result answers another request.
    #[error("the result answers request {answered}, not this request ({request})")]
    ResultNotForRequest {
        /// Hash of the request in the receipt.
        request: Hash,
        /// Request hash named by the result.
        answered: Hash,
    },
    /// The result names another model than the request.
    #[error("the result was produced by model {used}, but the request asks for {requested}")]
    ModelMismatch {
        /// The request's model.
        requested: Hash,
        /// The result's model.
        used: Hash,
    },
    /// The certificate is about another result.
    #[error("the certificate is about result {certified}, not this result ({result})")]
    CertificateNotForResult {
        /// Hash of the result in the receipt.
        result: Hash,
        /// Result hash named by the certificate.
        certified: Hash,
    },
    /// A verdict's signature does not verify.
    #[error("the verdict by verifier {verifier} has a signature that does not verify")]
    VerdictSignature {
        /// Verifier key, hex.
        verifier: String,
    },
    /// A verdict rejects the result.
    #[error("verifier {verifier} rejected the result: {reason}")]
    VerdictRejects {
        /// Verifier key, hex.
        verifier: String,
        /// The verdict's reason.
        reason: String,
    },
    /// A verdict is about another result.
    #[error("the verdict by verifier {verifier} is about another result")]
    VerdictWrongResult {
        /// Verifier key, hex.
        verifier: String,
    },
    /// A verdict checked the result against another request.
    #[error("the verdict by verifier {verifier} checked the result against another request")]
    VerdictWrongRequest {
        /// Verifier key, hex.
        verifier: String,
    },
    /// Two verdicts by one verifier.
    #[error("verifier {verifier} has more than one verdict in the certificate")]
    DuplicateVerifier {
        /// Verifier key, hex.
        verifier: String,
    },
    /// A verdict by a key that is not a trusted witness.
    #[error(
        "the verdict by {verifier} is not from a trusted verifier (not one of the witness keys)"
    )]
    UntrustedVerifier {
        /// Verifier key, hex.
        verifier: String,
    },
    /// Fewer accepting verdicts than the request's policy requires.
    #[error("the certificate has {have} accepting verdict(s); the request's policy needs {need}")]
    TooFewVerdicts {
        /// Accepting verdicts of distinct trusted verifiers.
        have: usize,
        /// Required by the policy.
        need: usize,
    },
    /// No checkpoint in the bundle.
    #[error("no cosigned checkpoint covers this receipt yet")]
    NoCheckpoint,
    /// The checkpoint is malformed or not signed by the trusted log key.
    #[error("the checkpoint is not a checkpoint signed by the trusted log key: {0}")]
    LogSignature(CheckpointError),
    /// The checkpoint's tree is too small to hold the leaf.
    #[error("the checkpoint (size {size}) does not cover log index {index}")]
    NotCovered {
        /// The leaf's index.
        index: u64,
        /// The checkpoint's size.
        size: u64,
    },
    /// An inclusion proof element that is not base64 of 32 bytes.
    #[error("inclusion proof element {position} is not base64 of 32 bytes")]
    ProofEncoding {
        /// Its position in the proof.
        position: usize,
    },
    /// The inclusion proof does not lead to the checkpoint's root.
    #[error("the leaf is not at index {index} of the checkpoint's tree: {source}")]
    Inclusion {
        /// The leaf's index.
        index: u64,
        /// Why the proof fails.
        source: ProofError,
    },
    /// Too few trusted witnesses cosigned the checkpoint.
    #[error("{have} trusted witness cosignature(s) on the checkpoint; {need} needed")]
    TooFewCosignatures {
        /// Distinct trusted witnesses whose cosignature verifies.
        have: usize,
        /// The quorum.
        need: usize,
    },
}

/// How far a receipt that passed every check is established.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Certified by the quorum the request's policy asks for, and in the log.
    Verified,
    /// In the log, but the policy (none, sampled, optimistic) asks for no
    /// verdict, so nothing vouches for the output yet beyond the node.
    Provisional,
    /// In the log; the receipt was not disclosed, so only the leaf (its
    /// commitments and fees) was checked.
    LeafOnly,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Verified => "verified",
            Status::Provisional => "provisional",
            Status::LeafOnly => "leaf-only",
        })
    }
}

/// What was checked about the disclosed receipt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Disclosed {
    /// The inference engine and version the node declared.
    pub engine: String,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Output tokens.
    pub output_tokens: usize,
    /// The request's verification mode.
    pub verification: VerificationMode,
    /// Accepting verdicts of distinct trusted verifiers.
    pub verdicts: usize,
    /// Accepting verdicts the policy requires.
    pub verdicts_required: usize,
    /// Key names of the verifiers whose verdicts counted.
    pub verifiers: Vec<String>,
}

/// What was checked about the checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CheckpointReport {
    /// The log's origin.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
    /// Distinct trusted witnesses whose cosignature verifies.
    pub cosignatures: usize,
    /// Cosignatures required.
    pub witness_quorum: usize,
    /// Key names of those witnesses.
    pub cosigners: Vec<String>,
}

/// The outcome of a receipt that passed every check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Report {
    /// The receipt id (leaf hash).
    pub id: Hash,
    /// Index in the receipts log.
    pub index: u64,
    /// Verified, provisional or leaf-only.
    pub status: Status,
    /// Model id.
    pub model: Hash,
    /// Inference node.
    pub node: PublicKey,
    /// Paying account.
    pub requester: PublicKey,
    /// Fees settled.
    pub fees: Fees,
    /// The receipt's own checks; None when its text was not disclosed.
    pub disclosed: Option<Disclosed>,
    /// The checkpoint that includes the leaf.
    pub checkpoint: CheckpointReport,
    /// For an `optimistic` answer: provisional, final or overturned, as the
    /// bundle's ledger says (the log does not prove it).
    pub finality: Option<Finality>,
}

/// Checks `bundle` against the keys in `trust`, in this order: the id is the
/// leaf's hash; the disclosed receipt (if any) opens the leaf, its signatures
/// verify and its certificate meets the request's policy with verdicts of
/// trusted verifiers; the leaf is included in a checkpoint signed by the log
/// and cosigned by a quorum of trusted witnesses.
pub fn check_receipt(bundle: &ReceiptBundle, trust: &Trust) -> Result<Report, ReceiptError> {
    let computed = leaf_hash(&bundle.leaf.to_canonical()?);
    if computed != bundle.id {
        return Err(ReceiptError::IdMismatch {
            id: bundle.id,
            computed,
        });
    }
    let disclosed = match &bundle.receipt {
        Some(r) => Some(check_disclosed(r, &bundle.leaf, trust)?),
        None => None,
    };
    let checkpoint = check_inclusion(bundle, trust)?;
    let status = match &disclosed {
        None => Status::LeafOnly,
        Some(d) if d.verdicts_required > 0 => Status::Verified,
        Some(_) => Status::Provisional,
    };
    Ok(Report {
        id: bundle.id,
        index: bundle.index,
        status,
        model: bundle.leaf.model,
        node: bundle.leaf.node,
        requester: bundle.leaf.requester,
        fees: bundle.leaf.fees,
        disclosed,
        checkpoint,
        finality: bundle.finality,
    })
}

/// Accepting verdicts the request's verification mode requires.
pub fn required_verdicts(mode: &VerificationMode) -> usize {
    match mode {
        VerificationMode::Quorum { k } => (*k as usize).max(1),
        // These modes certify nothing at settlement: sampled results are
        // mostly unchecked and optimistic ones wait for challenges.
        VerificationMode::None
        | VerificationMode::Sampled { .. }
        | VerificationMode::Optimistic { .. } => 0,
    }
}

fn check_disclosed(r: &Receipt, leaf: &Leaf, trust: &Trust) -> Result<Disclosed, ReceiptError> {
    // The leaf is what the log holds, so it comes first: anything changed in
    // the disclosed text shows as a commitment that no longer opens.
    let opened = r.leaf()?;
    let differs = [
        (opened.request != leaf.request, "request commitment"),
        (opened.result != leaf.result, "result commitment"),
        (opened.certificate != leaf.certificate, "certificate hash"),
        (opened.fees != leaf.fees, "fees"),
        (opened.model != leaf.model, "model"),
        (opened.node != leaf.node, "inference node"),
        (opened.requester != leaf.requester, "requester"),
    ];
    if let Some((_, field)) = differs.iter().find(|(d, _)| *d) {
        return Err(ReceiptError::LeafMismatch(field));
    }

    r.request
        .verify_signature()
        .map_err(ReceiptError::RequestSignature)?;
    r.result
        .verify_signature()
        .map_err(ReceiptError::ResultSignature)?;
    let request = r.request.hash()?;
    if r.result.request != request {
        return Err(ReceiptError::ResultNotForRequest {
            request,
            answered: r.result.request,
        });
    }
    if r.result.model != r.request.model {
        return Err(ReceiptError::ModelMismatch {
            requested: r.request.model,
            used: r.result.model,
        });
    }
    let result = r.result.hash()?;
    if r.certificate.result != result {
        return Err(ReceiptError::CertificateNotForResult {
            result,
            certified: r.certificate.result,
        });
    }

    let mut seen = BTreeSet::new();
    let mut verifiers = Vec::new();
    for v in &r.certificate.verdicts {
        let verifier = v.verifier.to_hex();
        if v.verify_signature().is_err() {
            return Err(ReceiptError::VerdictSignature { verifier });
        }
        if v.decision != Decision::Accept {
            let reason = v.reason.clone().unwrap_or_else(|| "no reason given".into());
            return Err(ReceiptError::VerdictRejects { verifier, reason });
        }
        if v.result != result {
            return Err(ReceiptError::VerdictWrongResult { verifier });
        }
        if v.request != request {
            return Err(ReceiptError::VerdictWrongRequest { verifier });
        }
        if !seen.insert(v.verifier) {
            return Err(ReceiptError::DuplicateVerifier { verifier });
        }
        let Some(w) = trust.witnesses.iter().find(|w| w.key == v.verifier) else {
            return Err(ReceiptError::UntrustedVerifier { verifier });
        };
        verifiers.push(w.name.clone());
    }
    let need = required_verdicts(&r.request.policy.verification);
    if verifiers.len() < need {
        return Err(ReceiptError::TooFewVerdicts {
            have: verifiers.len(),
            need,
        });
    }
    Ok(Disclosed {
        engine: r.result.engine.clone(),
        finish_reason: r.result.finish_reason,
        output_tokens: r.result.output_tokens.len(),
        verification: r.request.policy.verification.clone(),
        verdicts: verifiers.len(),
        verdicts_required: need,
        verifiers,
    })
}

fn check_inclusion(
    bundle: &ReceiptBundle,
    trust: &Trust,
) -> Result<CheckpointReport, ReceiptError> {
    let note = bundle
        .checkpoint
        .as_deref()
        .ok_or(ReceiptError::NoCheckpoint)?;
    let signed =
        SignedCheckpoint::open(note, &trust.log_key).map_err(ReceiptError::LogSignature)?;
    let cp = &signed.checkpoint;
    if bundle.index >= cp.size {
        return Err(ReceiptError::NotCovered {
            index: bundle.index,
            size: cp.size,
        });
    }
    let proof = bundle
        .inclusion_proof
        .iter()
        .enumerate()
        .map(|(position, h)| {
            B64.decode(h)
                .ok()
                .and_then(|b| hash_from_slice(&b).ok())
                .ok_or(ReceiptError::ProofEncoding { position })
        })
        .collect::<Result<Vec<Hash>, _>>()?;
    verify_inclusion(bundle.index, cp.size, &bundle.id, &proof, &cp.root).map_err(|source| {
        ReceiptError::Inclusion {
            index: bundle.index,
            source,
        }
    })?;

    // Count signers, not keys: one Ed25519 key listed under two names is
    // still one witness.
    let mut signers = BTreeSet::new();
    let mut cosigners = Vec::new();
    for w in &trust.witnesses {
        if !signers.contains(&w.key) && verify_cosignature(&signed.note, w).is_ok() {
            signers.insert(w.key);
            cosigners.push(w.name.clone());
        }
    }
    if cosigners.len() < trust.witness_quorum {
        return Err(ReceiptError::TooFewCosignatures {
            have: cosigners.len(),
            need: trust.witness_quorum,
        });
    }
    Ok(CheckpointReport {
        origin: cp.origin.clone(),
        size: cp.size,
        root: cp.root,
        cosignatures: cosigners.len(),
        witness_quorum: trust.witness_quorum,
        cosigners,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use verinfer_types::SecretKey;

    #[test]
    fn witness_name_is_a_valid_key_name_with_the_key_prefix() {
        let k = SecretKey::from_seed(&[9; 32]).public();
        let name = witness_name(&k);
        assert_eq!(name.len(), "witness.verinfer/".len() + 16);
        assert!(k.to_hex().starts_with(&name["witness.verinfer/".len()..]));
        assert!(verinfer_types::note::check_key_name(&name).is_ok());
    }

    #[test]
    fn policy_quorums() {
        assert_eq!(required_verdicts(&VerificationMode::Quorum { k: 3 }), 3);
        assert_eq!(required_verdicts(&VerificationMode::Quorum { k: 0 }), 1);
        assert_eq!(required_verdicts(&VerificationMode::None), 0);
        assert_eq!(
            required_verdicts(&VerificationMode::Sampled { p_milli: 1000 }),
            0
        );
        assert_eq!(
            required_verdicts(&VerificationMode::Optimistic { window_secs: 60 }),
            0
        );
    }

    #[test]
    fn key_types_are_enforced() {
        let k = SecretKey::from_seed(&[9; 32]);
        let log = VerifierKey::new("example.org/log", ALG_ED25519, k.public())
            .expect("valid name")
            .to_string();
        let wit = VerifierKey::new("w", ALG_COSIGNATURE_V1, k.public())
            .expect("valid name")
            .to_string();
        assert!(parse_log_key(&log).is_ok());
        assert!(parse_witness_key(&wit).is_ok());
        assert!(matches!(parse_log_key(&wit), Err(ReceiptError::Key { .. })));
        assert!(matches!(
            parse_witness_key(&log),
            Err(ReceiptError::Key { .. })
        ));
        assert!(parse_log_key("garbage").is_err());
    }
}
