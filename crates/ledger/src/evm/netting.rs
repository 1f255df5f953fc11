//! Pure functions of the EVM backend: fee netting, the contract's transfer
//! words and EIP-712 digests, and the checks a verifier runs before it signs
//! a settlement, a slash (or challenge) or a vault's claim. No I/O.

use std::collections::{BTreeMap, BTreeSet};

use alloy::primitives::{keccak256, Address, B256, U256};
use alloy::sol;
use alloy::sol_types::{eip712_domain, Eip712Domain, SolStruct};
use serde::{Deserialize, Serialize};
use verinfer_log::merkle::{leaf_hash, verify_inclusion};
use verinfer_types::records::{Decision, Receipt, VerificationMode};
use verinfer_types::{Hash, PublicKey, Record, SignedRecord};

use super::{invalid, EvmError, Link};
use crate::tx::Evidence;

sol! {
    /// An optimistic answer's fee held on chain for its window: `result` is
    /// the Result's hash, `payout` keccak256 of the transfer words that pay
    /// it out once the window has closed.
    #[derive(Debug, PartialEq, Eq)]
    struct Hold {
        bytes32 result;
        address payer;
        address node;
        uint128 amount;
        uint64 window;
        bytes32 payout;
    }

    /// What a verifier quorum signs to settle a checkpoint (contracts/README.md).
    #[derive(Debug, PartialEq, Eq)]
    struct Checkpoint {
        uint64 oldSize;
        uint64 newSize;
        bytes32 oldRoot;
        bytes32 newRoot;
        bytes32[] transfers;
        Hold[] holds;
    }

    /// What a verifier quorum signs to move an account's vault to the
    /// address the account linked.
    #[derive(Debug, PartialEq, Eq)]
    struct Claim {
        bytes32 account;
        address to;
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

/// The address holding on chain what settlement pays `account` while it has
/// no linked EVM address: nobody has its key, and the contract's `claim`
/// moves its balance to the address the account links (the contract's
/// `vault`).
pub fn vault(account: &PublicKey) -> Address {
    let tag = keccak256(b"verinfer.vault.v1");
    let h = keccak256([tag.as_slice(), &account.to_bytes()].concat());
    Address::from_slice(&h[12..])
}

/// One receipt of a settlement batch, whole (its certificate names the
/// verifiers to pay, its request the verification mode), and its leaf's
/// inclusion proof in the batch's checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettlementEntry {
    /// The receipt.
    pub receipt: Receipt,
    /// Inclusion proof of its leaf in the new checkpoint.
    pub proof: Vec<Hash>,
}

/// A request to co-sign the move of an account's vault to its linked address.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    /// Chain id of the EIP-712 domain.
    pub chain_id: u64,
    /// The settlement contract.
    pub contract: Address,
    /// The account's signed link.
    pub link: Link,
}

/// The verifier's check of a claim: the account signed the link. Returns the
/// struct to sign.
pub fn check_claim(req: &ClaimRequest) -> Result<Claim, EvmError> {
    req.link.verify()?;
    Ok(Claim {
        account: B256::from(req.link.account.to_bytes()),
        to: req.link.address,
    })
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

/// An optimistic answer's fee the netting holds, with what the settler needs
/// later: the request (the ledger's finality is by request) and the payout
/// words the hold commits to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeldFee {
    /// The request's hash.
    pub request: Hash,
    /// The Result's hash (the hold's key on chain).
    pub result: B256,
    /// The transfer words paying the fee out (keccak256 of them is the
    /// hold's `payout`).
    pub payout: Vec<B256>,
}

/// What a batch's receipts net to: the transfer words and the held fees.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Netting {
    /// One word per account.
    pub transfers: Vec<B256>,
    /// The optimistic answers' holds, in log order.
    pub holds: Vec<Hold>,
    /// Their payouts, in the same order.
    pub held: Vec<HeldFee>,
}

/// A settlement batch as the contract sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The struct verifiers sign.
    pub checkpoint: Checkpoint,
    /// The payouts of its holds.
    pub held: Vec<HeldFee>,
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

/// The netting of `receipts`: each requester pays the total, the model's
/// publisher (when the fees name one), the node, each accepting verifier and
/// the treasury are paid their shares (as the embedded ledger's `Settle`
/// pays them); one word per account, sorted by address, zero deltas left
/// out. An account paid but not linked is paid to its [`vault`]. An
/// optimistic answer's fee is held instead (as the embedded ledger's
/// `Provisional`): the requester pays it into a [`Hold`] whose payout words
/// pay the same shares once its window has closed.
pub fn net(
    receipts: &[Receipt],
    treasury: &PublicKey,
    address: &BTreeMap<PublicKey, Address>,
) -> Result<Netting, EvmError> {
    let linked = |k: &PublicKey| {
        address
            .get(k)
            .copied()
            .ok_or_else(|| EvmError::Unlinked(k.to_string()))
    };
    let paid_to = |k: &PublicKey| address.get(k).copied().unwrap_or_else(|| vault(k));
    let add = |sums: &mut BTreeMap<Address, i128>, a: Address, d: i128| -> Result<(), EvmError> {
        if d != 0 {
            let s = sums.entry(a).or_default();
            *s = s
                .checked_add(d)
                .ok_or_else(|| invalid("transfer sum overflows"))?;
        }
        Ok(())
    };
    let amount = |a: u128| i128::try_from(a).map_err(|_| invalid("fee out of range"));
    let mut sums: BTreeMap<Address, i128> = BTreeMap::new();
    let mut holds = Vec::new();
    let mut held = Vec::new();
    for (i, r) in receipts.iter().enumerate() {
        let (f, cert) = (&r.fees, &r.certificate);
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
        let payer = linked(&r.request.requester)?;
        add(&mut sums, payer, -amount(f.total.0)?)?;
        let mut shares = vec![(r.result.node, f.node.0), (*treasury, f.treasury.0)];
        shares.extend(accepting.iter().map(|v| (*v, per)));
        shares.extend(f.publisher.as_ref().map(|p| (p.account, p.amount.0)));
        let window = match r.request.policy.verification {
            VerificationMode::Optimistic { window_secs } => Some(window_secs),
            _ => None,
        };
        let Some(window) = window else {
            for (k, a) in shares {
                add(&mut sums, paid_to(&k), amount(a)?)?;
            }
            continue;
        };
        let mut payout = BTreeMap::new();
        for (k, a) in shares {
            add(&mut payout, paid_to(&k), amount(a)?)?;
        }
        let payout = words(payout)?;
        let result = b256(&r.result.hash()?);
        holds.push(Hold {
            result,
            payer,
            // The node's address, not a vault: its stake answers for the hold.
            node: linked(&r.result.node)?,
            amount: f.total.0,
            window,
            payout: keccak256(payout.concat()),
        });
        held.push(HeldFee {
            request: r.request.hash()?,
            result,
            payout,
        });
    }
    Ok(Netting {
        transfers: words(sums)?,
        holds,
        held,
    })
}

/// Transfer words of the non-zero sums, in address order.
fn words(sums: BTreeMap<Address, i128>) -> Result<Vec<B256>, EvmError> {
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
    for (k, e) in req.entries.iter().enumerate() {
        let index = req.old_size + k as u64;
        // The leaf commits to the request, result, certificate and fees, so
        // a receipt included by its leaf is the one the log settled.
        let h = leaf_hash(&e.receipt.leaf()?.to_canonical()?);
        verify_inclusion(index, size, &h, &e.proof, root)
            .map_err(|err| invalid(format!("leaf {index} is not in the checkpoint: {err}")))?;
    }
    let receipts: Vec<Receipt> = req.entries.iter().map(|e| e.receipt.clone()).collect();
    let n = net(&receipts, &req.treasury, &link_map(&req.links)?)?;
    Ok(Batch {
        checkpoint: Checkpoint {
            oldSize: req.old_size,
            newSize: size,
            oldRoot: b256(&req.old_root),
            newRoot: b256(root),
            transfers: n.transfers,
            holds: n.holds,
        },
        held: n.held,
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

/// The EIP-712 digest of a vault's claim.
pub fn claim_digest(c: &Claim, domain: &Eip712Domain) -> B256 {
    c.eip712_signing_hash(domain)
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

    use verinfer_types::records::{Amount, PublisherFee};
    use verinfer_types::testing;

    /// The fixture's receipt with 30 of the treasury's share moved to a
    /// publisher (key 40); addresses of keys 1 to 4 (requester, node,
    /// verifiers), the treasury (41) and, if `publisher_linked`, the
    /// publisher.
    fn published(publisher_linked: bool) -> (Receipt, PublicKey, BTreeMap<PublicKey, Address>) {
        let mut r = testing::receipt();
        let publisher = testing::key(40);
        r.fees.treasury = Amount(r.fees.treasury.0 - 30);
        r.fees.publisher = Some(PublisherFee {
            account: publisher.public(),
            amount: Amount(30),
        });
        let treasury = testing::key(41);
        let mut keys = vec![treasury.clone()];
        keys.extend((1..=4).map(testing::key));
        if publisher_linked {
            keys.push(publisher);
        }
        let address = keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.public(), Address::repeat_byte(i as u8 + 1)))
            .collect();
        (r, treasury.public(), address)
    }

    fn deltas(words: &[B256]) -> BTreeMap<Address, i128> {
        words.iter().map(parse_transfer_word).collect()
    }

    /// A receipt's fees with a publisher's share net into a credit to the
    /// publisher's address, and the words still sum to zero.
    #[test]
    fn netting_pays_the_publisher_its_share() {
        let (r, treasury, address) = published(true);
        let publisher = address[&testing::key(40).public()];
        let n = net(std::slice::from_ref(&r), &treasury, &address).expect("nets");
        let d = deltas(&n.transfers);
        assert_eq!(d.get(&publisher), Some(&30));
        assert_eq!(d.values().sum::<i128>(), 0);
        assert!(n.holds.is_empty());
        // Without the publisher's share the parts fall short of the total.
        let mut short = r;
        short.fees.publisher = None;
        assert!(net(&[short], &treasury, &address).is_err());
    }

    /// A publisher that never linked an address does not stall the
    /// settlement: its share waits in its vault, and the words still balance.
    #[test]
    fn an_unlinked_publisher_is_paid_to_its_vault() {
        let (r, treasury, address) = published(false);
        let n = net(&[r], &treasury, &address).expect("nets without the publisher's link");
        let d = deltas(&n.transfers);
        assert_eq!(d.get(&vault(&testing::key(40).public())), Some(&30));
        assert_eq!(d.values().sum::<i128>(), 0);
        // A payer must be linked: its escrow is what pays.
        let (r, treasury, mut address) = published(true);
        address.remove(&r.request.requester);
        assert!(matches!(
            net(&[r], &treasury, &address),
            Err(EvmError::Unlinked(_))
        ));
    }

    /// An optimistic answer's fee leaves the payer into a hold whose payout
    /// words pay the same shares as an ordinary settlement.
    #[test]
    fn an_optimistic_fee_is_held_with_its_payout() {
        let (r, treasury, address) = published(true);
        let plain = net(std::slice::from_ref(&r), &treasury, &address).expect("nets");
        let mut o = r.clone();
        o.request.policy.verification = VerificationMode::Optimistic { window_secs: 60 };
        let n = net(&[o.clone()], &treasury, &address).expect("nets");
        let payer = address[&r.request.requester];
        assert_eq!(
            deltas(&n.transfers),
            BTreeMap::from([(payer, -(r.fees.total.0 as i128))])
        );
        let [hold] = &n.holds[..] else {
            panic!("one hold")
        };
        let [held] = &n.held[..] else {
            panic!("one payout")
        };
        assert_eq!(hold.amount, r.fees.total.0);
        assert_eq!(hold.window, 60);
        assert_eq!(hold.payer, payer);
        assert_eq!(hold.node, address[&r.result.node]);
        assert_eq!(hold.result, b256(&o.result.hash().expect("hash")));
        assert_eq!(hold.payout, keccak256(held.payout.concat()));
        assert_eq!(held.request, o.request.hash().expect("hash"));
        let mut paid = deltas(&plain.transfers);
        paid.remove(&payer);
        assert_eq!(deltas(&held.payout), paid);
    }

    /// The struct verifiers sign is the contract's `CHECKPOINT_TYPEHASH`.
    #[test]
    fn the_checkpoint_type_is_the_contracts() {
        assert_eq!(
            Checkpoint::eip712_encode_type(),
            "Checkpoint(uint64 oldSize,uint64 newSize,bytes32 oldRoot,bytes32 newRoot,bytes32[] transfers,Hold[] holds)\
             Hold(bytes32 result,address payer,address node,uint128 amount,uint64 window,bytes32 payout)"
        );
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
