//! Pure functions of the EVM backend: fee netting, the contract's transfer
//! words and EIP-712 digests, and the checks a verifier runs before it signs
//! a settlement or a slash. No I/O.

use std::collections::{BTreeMap, BTreeSet};

use alloy::primitives::{Address, B256, U256};
use alloy::sol;
use alloy::sol_types::{eip712_domain, Eip712Domain, SolStruct};
use serde::{Deserialize, Serialize};
use verinfer_log::merkle::{leaf_hash, verify_inclusion};
use verinfer_types::records::{Certificate, Decision, Leaf};
use verinfer_types::{Hash, PublicKey, Record, SignedRecord};

use super::{invalid, EvmError, Link};
use crate::tx::Evidence;

sol! {
    /// What a verifier quorum signs to settle a checkpoint (contracts/README.md).
    #[derive(Debug, PartialEq, Eq)]
    struct Checkpoint {
        uint64 oldSize;
        uint64 newSize;
        bytes32 oldRoot;
        bytes32 newRoot;
        bytes32[] transfers;
    }

    /// What a slash quorum signs to slash `accused`: `anchor` is the time
    /// (Unix seconds) of the Result's commitment, the registry the
    /// committee is judged at.
    #[derive(Debug, PartialEq, Eq)]
    struct Slash {
        address accused;
        bytes32 resultHash;
        bytes32 reasonHash;
        uint64 anchor;
    }
}

/// The contract's EIP-712 domain.
pub fn domain(chain_id: u64, contract: Address) -> Eip712Domain {
    eip712_domain! {
        name: "verinfer",
        version: "1",
        chain_id: chain_id,
        verifying_contract: contract,
    }
}

/// Largest |delta| of one transfer word (the contract's int96 bound).
const MAX_DELTA: i128 = (1 << 95) - 1;

/// One word of `settle`'s `transfers`: the account in the high 160 bits, the
/// delta as a two's-complement int96 in the low 96.
pub fn transfer_word(account: Address, delta: i128) -> Result<B256, EvmError> {
    if delta == 0 || delta.abs() > MAX_DELTA {
        return Err(invalid(format!(
            "transfer of {delta} to {account} is out of range"
        )));
    }
    let low = U256::from((delta as u128) & ((1u128 << 96) - 1));
    let high = U256::from_be_slice(account.as_slice()) << 96;
    Ok(B256::from(high | low))
}

/// The account and delta of a transfer word (inverse of [`transfer_word`]).
pub fn parse_transfer_word(word: &B256) -> (Address, i128) {
    let account = Address::from_slice(&word[..20]);
    let mut low = [0u8; 16];
    low[4..].copy_from_slice(&word[20..]);
    // Sign-extend from 96 bits.
    let delta = (i128::from_be_bytes(low) << 32) >> 32;
    (account, delta)
}

/// One receipt of a settlement batch: its log leaf, the certificate the leaf
/// commits to (it names the verifiers to pay), and the leaf's inclusion proof
/// in the batch's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementEntry {
    /// The log leaf.
    pub leaf: Leaf,
    /// Its certificate.
    pub certificate: Certificate,
    /// Inclusion proof of the leaf in the new checkpoint.
    pub proof: Vec<Hash>,
}

/// What a verifier is asked to sign: settle the receipts `[old_size,
/// new size)` of a cosigned checkpoint on chain.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementRequest {
    /// Chain id of the EIP-712 domain.
    pub chain_id: u64,
    /// The settlement contract.
    pub contract: Address,
    /// The cosigned checkpoint note being settled.
    pub checkpoint: String,
    /// The size settled on chain so far.
    pub old_size: u64,
    /// The root settled on chain so far.
    pub old_root: Hash,
    /// The treasury account (credited the treasury's share).
    pub treasury: PublicKey,
    /// EVM addresses of every account paid or charged.
    pub links: Vec<Link>,
    /// The receipts in log order, from `old_size`.
    pub entries: Vec<SettlementEntry>,
}

/// A slash to repeat on chain, with the ledger's evidence.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlashRequest {
    /// Chain id of the EIP-712 domain.
    pub chain_id: u64,
    /// The settlement contract.
    pub contract: Address,
    /// The accused's link.
    pub accused: Link,
    /// The signed evidence.
    pub evidence: Evidence,
}

/// A verifier's EVM signature (65 bytes, `r ‖ s ‖ v`, v = 27/28).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmSignature {
    /// The signer's EVM address.
    pub address: Address,
    /// The signature, hex.
    pub signature: alloy::primitives::Bytes,
}

/// A settlement batch as the contract sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The struct verifiers sign.
    pub checkpoint: Checkpoint,
}

impl Batch {
    /// The EIP-712 digest to sign.
    pub fn digest(&self, domain: &Eip712Domain) -> B256 {
        self.checkpoint.eip712_signing_hash(domain)
    }
}

fn b256(h: &Hash) -> B256 {
    B256::from(h.0)
}

/// The verified links as a map; every link must verify.
pub fn link_map(links: &[Link]) -> Result<BTreeMap<PublicKey, Address>, EvmError> {
    links
        .iter()
        .map(|l| l.verify().map(|()| (l.account, l.address)))
        .collect()
}

/// The netted transfer words of `entries`: each requester pays the total, the
/// model's publisher (when the fees name one), the node, each accepting
/// verifier and the treasury are paid their shares (as the embedded ledger's
/// `Settle` pays them); one word per account, sorted by address, zero deltas
/// left out.
pub fn net(
    entries: &[(Leaf, Certificate)],
    treasury: &PublicKey,
    address: &BTreeMap<PublicKey, Address>,
) -> Result<Vec<B256>, EvmError> {
    let addr = |k: &PublicKey| {
        address
            .get(k)
            .copied()
            .ok_or_else(|| EvmError::Unlinked(k.to_string()))
    };
    let mut sums: BTreeMap<Address, i128> = BTreeMap::new();
    let mut add = |k: &PublicKey, d: i128| -> Result<(), EvmError> {
        if d != 0 {
            let s = sums.entry(addr(k)?).or_default();
            *s = s
                .checked_add(d)
                .ok_or_else(|| invalid("transfer sum overflows"))?;
        }
        Ok(())
    };
    let amount = |a: u128| i128::try_from(a).map_err(|_| invalid("fee out of range"));
    for (i, (leaf, cert)) in entries.iter().enumerate() {
        if cert.hash()? != leaf.certificate {
            return Err(invalid(format!(
                "entry {i}: certificate does not match its leaf"
            )));
        }
        let f = &leaf.fees;
        let accepting: Vec<_> = cert
            .verdicts
            .iter()
            .filter(|v| v.decision == Decision::Accept && v.result == cert.result)
            .map(|v| v.verifier)
            .collect();
        let per = match accepting.len() as u128 {
            0 if f.verifiers.0 == 0 => 0,
            0 => return Err(invalid(format!("entry {i}: verifier fees but no verifier"))),
            n if f.verifiers.0 % n == 0 => f.verifiers.0 / n,
            _ => {
                return Err(invalid(format!(
                    "entry {i}: verifier fees do not split evenly"
                )))
            }
        };
        let paid = f
            .node
            .0
            .checked_add(f.verifiers.0)
            .and_then(|x| x.checked_add(f.treasury.0))
            .and_then(|x| x.checked_add(f.publisher_amount()));
        if paid != Some(f.total.0) {
            return Err(invalid(format!(
                "entry {i}: fee parts do not add up to the total"
            )));
        }
        add(&leaf.requester, -amount(f.total.0)?)?;
        add(&leaf.node, amount(f.node.0)?)?;
        for v in &accepting {
            add(v, amount(per)?)?;
        }
        add(treasury, amount(f.treasury.0)?)?;
        if let Some(p) = &f.publisher {
            add(&p.account, amount(p.amount.0)?)?;
        }
    }
    sums.into_iter()
        .filter(|(_, d)| *d != 0)
        .map(|(a, d)| transfer_word(a, d))
        .collect()
}

/// The verifier's check of a settlement request, given the checkpoint
/// `(size, root)` it has verified from the request's note (the log's
/// signature and its own cosignature): the entries are exactly the leaves
/// `[old_size, size)`, each proven included, and the transfers are their
/// netting. Returns the batch to sign.
pub fn check_settlement(
    req: &SettlementRequest,
    size: u64,
    root: &Hash,
) -> Result<Batch, EvmError> {
    if size <= req.old_size {
        return Err(invalid(format!(
            "checkpoint size {size} does not grow past the settled size {}",
            req.old_size
        )));
    }
    if req.entries.len() as u64 != size - req.old_size {
        return Err(invalid(format!(
            "{} entries for the {} receipts between sizes {} and {size}",
            req.entries.len(),
            size - req.old_size,
            req.old_size
        )));
    }
    let mut pairs = Vec::with_capacity(req.entries.len());
    for (k, e) in req.entries.iter().enumerate() {
        let index = req.old_size + k as u64;
        let h = leaf_hash(&e.leaf.to_canonical()?);
        verify_inclusion(index, size, &h, &e.proof, root)
            .map_err(|err| invalid(format!("leaf {index} is not in the checkpoint: {err}")))?;
        pairs.push((e.leaf.clone(), e.certificate.clone()));
    }
    let transfers = net(&pairs, &req.treasury, &link_map(&req.links)?)?;
    Ok(Batch {
        checkpoint: Checkpoint {
            oldSize: req.old_size,
            newSize: size,
            oldRoot: b256(&req.old_root),
            newRoot: b256(root),
            transfers,
        },
    })
}

/// Fewest distinct rejecting committee members a verifier asks of slash
/// evidence before it signs, whatever dispute quorum the request names.
pub const MIN_SLASH_COMMITTEE: u32 = 2;

/// The verifier's check of a slash request against the ledger's registry at
/// the Result's anchor (the `eligible` verifiers, the anchor's ledger time
/// `anchor_ms` and `dispute_quorum`, which the verifier reads itself:
/// nothing in the request says who was registered): every signature in the
/// evidence holds, and the evidence proves a fault by the ledger's rule
/// ([`crate::slashing::committee`]: the Result answers the Request, the
/// accused signed the Result (a node) or accepted the pair (a verifier), and
/// the committee's node-fault rejections come from distinct verifiers
/// registered at the anchor other than the accused, at least the dispute
/// quorum (and [`MIN_SLASH_COMMITTEE`]) of them and a strict majority of
/// those registered then). Returns the struct to sign, anchored at the same
/// moment in seconds, so the contract counts its own registry then.
pub fn check_slash(
    req: &SlashRequest,
    eligible: &BTreeSet<PublicKey>,
    anchor_ms: u64,
    dispute_quorum: u32,
) -> Result<Slash, EvmError> {
    req.accused.verify()?;
    let (result, extra, committee) = req.evidence.parts();
    if req.evidence.accused() != req.accused.account {
        return Err(invalid("the link is not the accused's"));
    }
    req.evidence.request().verify_signature()?;
    result.verify_signature()?;
    for v in committee.iter().chain(extra) {
        v.verify_signature()?;
    }
    crate::slashing::committee(
        &req.evidence,
        eligible,
        dispute_quorum.max(MIN_SLASH_COMMITTEE),
    )
    .map_err(|e| invalid(e.to_string()))?;
    slash_struct(
        req.accused.address,
        &result.hash()?,
        &req.evidence,
        anchor_ms,
    )
}

/// The signed struct of a slash: the accused's address, the result hash,
/// SHA-256 of the canonical evidence and the anchor (the ledger time of the
/// Result's commitment, `anchor_ms`, in whole seconds).
pub fn slash_struct(
    accused: Address,
    result: &Hash,
    evidence: &Evidence,
    anchor_ms: u64,
) -> Result<Slash, EvmError> {
    let bytes = verinfer_types::canonical::to_canonical(evidence)
        .map_err(|e| invalid(format!("evidence: {e}")))?;
    Ok(Slash {
        accused,
        resultHash: b256(result),
        reasonHash: b256(&Hash::of(&bytes)),
        anchor: anchor_ms / 1000,
    })
}

/// The result hash and accused key of evidence.
pub fn evidence_subject(evidence: &Evidence) -> Result<(Hash, PublicKey), EvmError> {
    Ok((evidence.parts().0.hash()?, evidence.accused()))
}

/// The EIP-712 digest of a slash.
pub fn slash_digest(s: &Slash, domain: &Eip712Domain) -> B256 {
    s.eip712_signing_hash(domain)
}

/// Signatures in the order the contract wants (ascending signer address),
/// concatenated.
pub fn pack_signatures(mut sigs: Vec<EvmSignature>) -> alloy::primitives::Bytes {
    sigs.sort_by_key(|s| s.address);
    sigs.dedup_by_key(|s| s.address);
    sigs.iter()
        .flat_map(|s| s.signature.iter().copied())
        .collect::<Vec<u8>>()
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn transfer_words_round_trip(addr in any::<[u8; 20]>(), delta in -MAX_DELTA..=MAX_DELTA) {
            prop_assume!(delta != 0);
            let a = Address::from(addr);
            let w = transfer_word(a, delta).expect("in range");
            prop_assert_eq!(parse_transfer_word(&w), (a, delta));
        }
    }

    /// A receipt's fees with a publisher's share net into a credit to the
    /// publisher's address, and the words still sum to zero.
    #[test]
    fn netting_pays_the_publisher_its_share() {
        use verinfer_types::records::{Amount, PublisherFee};
        use verinfer_types::testing;
        let mut r = testing::receipt();
        let publisher = testing::key(40);
        r.fees.treasury = Amount(r.fees.treasury.0 - 30);
        r.fees.publisher = Some(PublisherFee {
            account: publisher.public(),
            amount: Amount(30),
        });
        let leaf = r.leaf().expect("leaf");
        let treasury = testing::key(41);
        let mut keys = vec![
            publisher,
            treasury.clone(),
            testing::key(1),
            testing::key(2),
        ];
        keys.extend([testing::key(3), testing::key(4)]);
        // Requester, node and verifiers are the fixture's keys 1 to 4.
        let address: BTreeMap<PublicKey, Address> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.public(), Address::repeat_byte(i as u8 + 1)))
            .collect();
        let words = net(&[(leaf, r.certificate)], &treasury.public(), &address).expect("nets");
        let deltas: BTreeMap<Address, i128> = words.iter().map(parse_transfer_word).collect();
        assert_eq!(deltas.get(&Address::repeat_byte(1)), Some(&30));
        assert_eq!(deltas.values().sum::<i128>(), 0);
        // Without the publisher's share the parts fall short of the total.
        let mut short = testing::receipt();
        short.fees.treasury = Amount(short.fees.treasury.0 - 30);
        let leaf = short.leaf().expect("leaf");
        assert!(net(&[(leaf, short.certificate)], &treasury.public(), &address).is_err());
    }

    #[test]
    fn transfer_words_refuse_zero_and_overflow() {
        let a = Address::repeat_byte(9);
        assert!(transfer_word(a, 0).is_err());
        assert!(transfer_word(a, MAX_DELTA + 1).is_err());
        assert!(transfer_word(a, -MAX_DELTA - 1).is_err());
        // The layout the contract reads: address high, int96 low.
        let w = transfer_word(a, -1).expect("word");
        assert_eq!(&w[..20], a.as_slice());
        assert_eq!(&w[20..], &[0xff; 12]);
    }
}
