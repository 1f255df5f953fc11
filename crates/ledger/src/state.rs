//! The ledger's state and its transition rules, as pure functions.
//!
//! [`apply`] takes a state and a transaction and either changes the state
//! and returns what happened, or returns an error and changes nothing.
//! Amounts are `u128` base units with checked arithmetic: no balance can go
//! negative, and the total of balances, escrow, stakes and unbonding stake
//! changes only by mint and burn (slashing moves stake, it does not destroy
//! it). [`State::check_invariants`] states that precisely.
//!
//! Time: every rule that waits (unbonding, disputes, votes, reservations)
//! reads the ledger's time `State::time_ms`, never the height, which any
//! account can advance with transactions of its own.
//!
//! Fee rounding: for a fee `F`, the node gets `floor(F * node_bps / 10^4)`,
//! each of the `n` verifiers `floor(floor(F * verifiers_bps / 10^4) / n)`, and
//! the treasury the rest, so every unit of `F` lands somewhere. For a model
//! a publisher registered, its share `floor(F * share_bps / 10^4)` comes
//! first and the rest is split so. Slashing rounds the same way, with the
//! remainder going to the treasury.

use crate::tx::*;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};
use verinfer_types::keys::{verify_batch, KeyError};
use verinfer_types::records::{
    Amount, Decision, Fees, Finality, InferenceResult, Leaf, PublisherFee, Receipt, Usage, Verdict,
    VerificationMode,
};
use verinfer_types::{Hash, PublicKey, Record, RecordError, SignedRecord};

const BPS: u128 = 10_000;

/// Why a transaction was refused. Nothing changed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TxError {
    /// A signature (of the transaction or of a record inside it) fails.
    #[error("bad signature: {0}")]
    Signature(String),
    /// The nonce is not the signer's next one (replay or gap).
    #[error("wrong nonce: expected {expected}, got {got}")]
    Nonce {
        /// The account's next nonce.
        expected: u64,
        /// The transaction's nonce.
        got: u64,
    },
    /// Not enough funds.
    #[error("insufficient {what}: have {have}, need {need}")]
    Insufficient {
        /// Balance, stake, escrow...
        what: &'static str,
        /// Available.
        have: u128,
        /// Needed.
        need: u128,
    },
    /// Arithmetic overflow.
    #[error("amount overflow")]
    Overflow,
    /// Any other rule.
    #[error("{0}")]
    Rule(String),
    /// A receipt in a settlement is invalid.
    #[error("receipt {index}: {reason}")]
    Receipt {
        /// Position in the batch.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// Evidence that does not prove a fault.
    #[error("invalid evidence: {0}")]
    Evidence(String),
    /// A record could not be encoded.
    #[error(transparent)]
    Record(#[from] RecordError),
}

fn rule(msg: impl Into<String>) -> TxError {
    TxError::Rule(msg.into())
}

/// An account.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Account {
    /// Spendable balance.
    pub balance: u128,
    /// Transactions applied from this account.
    pub nonce: u64,
}

/// Funds reserved for one request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Escrow {
    /// Who pays (the request's requester).
    pub payer: PublicKey,
    /// Amount reserved (the maximum fee).
    pub amount: u128,
    /// The write's deposit (`tx_fee` when reserved): back to the payer when
    /// the request settles, to the treasury when it is released, so a
    /// reservation that pays for nothing costs what any write costs.
    pub deposit: u128,
    /// Ledger time (Unix ms) from which it can no longer be settled and
    /// anyone may release it to its payer.
    pub deadline_ms: u64,
}

/// Stake on its way out.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Unbond {
    /// Amount.
    pub amount: u128,
    /// Ledger time (Unix ms) from which it can be withdrawn.
    pub release_ms: u64,
}

/// A registered node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Node {
    /// Role.
    pub role: Role,
    /// Where it serves.
    pub endpoint: String,
    /// Height of registration.
    pub registered: u64,
    /// Height of the last heartbeat.
    pub last_heartbeat: u64,
    /// The admitted models an inference node declared it serves
    /// ([`TxBody::Serve`]); a delisted model leaves every declaration.
    pub models: BTreeSet<Hash>,
}

/// State of a proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProposalStatus {
    /// Voting.
    Open,
    /// More than half of all stake voted yes; enacted.
    Passed,
    /// Half or more of all stake voted no.
    Rejected,
}

/// A governance proposal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Proposal {
    /// Who proposed.
    pub proposer: PublicKey,
    /// The change.
    pub change: Change,
    /// Stake voting yes.
    pub yes: u128,
    /// Stake voting no.
    pub no: u128,
    /// Who voted.
    pub voters: BTreeSet<PublicKey>,
    /// Status.
    pub status: ProposalStatus,
    /// Ledger time (Unix ms) at which voting ends: still open then, it
    /// expired and enacts nothing.
    pub deadline_ms: u64,
    /// Bonded stakes when it was proposed: a vote weighs at most this.
    pub snapshot: BTreeMap<PublicKey, u128>,
    /// Their total: more than half of it passes the proposal.
    pub snapshot_total: u128,
}

impl Proposal {
    /// Whether it still takes votes at ledger time `now_ms`.
    pub fn is_open(&self, now_ms: u64) -> bool {
        self.status == ProposalStatus::Open && now_ms < self.deadline_ms
    }
}

/// The whole ledger state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// Transactions applied.
    pub height: u64,
    /// The ledger's time: Unix ms of the last applied transaction (0 at
    /// genesis); it never decreases.
    pub time_ms: u64,
    /// The treasury account.
    pub treasury: PublicKey,
    /// All tokens in existence.
    pub total_supply: u128,
    /// Accounts.
    pub accounts: BTreeMap<PublicKey, Account>,
    /// Stakes.
    pub stakes: BTreeMap<PublicKey, u128>,
    /// Unbonding stake.
    pub unbonding: BTreeMap<PublicKey, Vec<Unbond>>,
    /// Reservations by request hash.
    pub escrow: BTreeMap<Hash, Escrow>,
    /// Registered nodes.
    pub nodes: BTreeMap<PublicKey, Node>,
    /// Admitted models, published ones included.
    pub models: BTreeMap<Hash, ModelEntry>,
    /// Published models governance delisted: never registered again.
    pub delisted: BTreeMap<Hash, ModelEntry>,
    /// Parameters.
    pub params: Params,
    /// Proposals by id.
    pub proposals: BTreeMap<u64, Proposal>,
    /// (result hash, accused) pairs already slashed.
    pub slashed: BTreeSet<(Hash, PublicKey)>,
    /// Leaves appended to the receipts log.
    pub leaves: u64,
    /// Chain events bridged ([`TxBody::Bridge`]).
    pub bridged: BTreeSet<Hash>,
    /// Withdrawals asked on chain and not yet paid, by account.
    pub withdrawing: BTreeMap<PublicKey, Withdrawal>,
    /// Nodes under an open dispute: ledger time (Unix ms) until which they
    /// cannot withdraw.
    pub frozen: BTreeMap<PublicKey, u64>,
    /// Results already disputed (each opens one dispute).
    pub disputed: BTreeSet<Hash>,
    /// Optimistic answers settled whose fees wait for their challenge
    /// window, by request hash.
    pub provisional: BTreeMap<Hash, Provisional>,
    /// Optimistic answers a challenge overturned, by request hash.
    pub overturned: BTreeSet<Hash>,
    /// Where each committed Result's committee is anchored, by result hash
    /// ([`TxBody::Commit`]).
    pub commits: BTreeMap<Hash, Anchor>,
    /// Every verifier's terms in the registry, past ones included, so the
    /// registry at any anchor can be told ([`State::verifiers_at`]).
    pub verifier_terms: BTreeMap<PublicKey, Vec<Term>>,
}

/// The point a Result's committee is judged at: the `Commit` that fixed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Anchor {
    /// Transactions applied before the commit.
    pub height: u64,
    /// The ledger's time (Unix ms) of the commit.
    pub time_ms: u64,
}

/// One stay of a verifier in the registry, in heights: registered by the
/// transaction applied at height `from`, deregistered at `until` (none while
/// it stays).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Term {
    /// Height of the `Register`.
    pub from: u64,
    /// Height of the transaction that removed it.
    pub until: Option<u64>,
}

/// An optimistic answer settled inside its challenge window. Its fee stays
/// in the ledger: paid out by [`TxBody::Finalize`] once the window passed,
/// or back to the payer if a [`TxBody::Challenge`] overturns it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Provisional {
    /// Who paid.
    pub payer: PublicKey,
    /// The node that answered.
    pub node: PublicKey,
    /// Hash of the settled Result: a challenge must be about this one.
    pub result: Hash,
    /// The fee breakdown the receipt carries.
    pub fees: Fees,
    /// Verifiers in its certificate, if any, each owed `per_verifier`.
    pub verifiers: Vec<PublicKey>,
    /// Each verifier's share.
    pub per_verifier: u128,
    /// Ledger time (Unix ms) at which the window closes.
    pub until_ms: u64,
}

/// A withdrawal asked on chain, not yet paid.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Withdrawal {
    /// The amount asked.
    pub asked: u128,
    /// How much of it the account's balance has covered so far (held out
    /// of the balance, at most `asked`).
    pub held: u128,
}

/// Supply totals, as `GET /v1/ledger/summary` serves them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Summary {
    /// All tokens; equals the sum of the six others.
    pub total_supply: u128,
    /// Balances of all accounts but the treasury.
    pub balances: u128,
    /// Reserved for in-flight requests.
    pub escrow: u128,
    /// Staked.
    pub stakes: u128,
    /// Unstaked, not yet withdrawn.
    pub unbonding: u128,
    /// The treasury's balance.
    pub treasury: u128,
    /// Held for withdrawals asked on chain.
    pub withdrawing: u128,
    /// Fees of optimistic answers waiting for their challenge window.
    #[serde(default)]
    pub provisional: u128,
}

/// What an applied transaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Effects {
    /// Leaves to append to the receipts log, in order (settlements).
    pub leaves: Vec<Leaf>,
    /// Index the first leaf gets.
    pub first_leaf: u64,
    /// Id of a new proposal.
    pub proposal: Option<u64>,
    /// Who a slash took stake from, and how much.
    pub slashed: Option<(PublicKey, u128)>,
}

impl State {
    /// The state right after `genesis`.
    pub fn genesis(g: &Genesis) -> Result<State, TxError> {
        check_params(&g.params)?;
        let mut accounts = BTreeMap::new();
        accounts.insert(
            g.treasury,
            Account {
                balance: g.supply.0,
                nonce: 0,
            },
        );
        Ok(State {
            height: 0,
            time_ms: 0,
            treasury: g.treasury,
            total_supply: g.supply.0,
            accounts,
            stakes: BTreeMap::new(),
            unbonding: BTreeMap::new(),
            escrow: BTreeMap::new(),
            nodes: BTreeMap::new(),
            models: g.models.iter().map(|m| (m.id, m.clone())).collect(),
            delisted: BTreeMap::new(),
            params: g.params.clone(),
            proposals: BTreeMap::new(),
            slashed: BTreeSet::new(),
            leaves: 0,
            bridged: BTreeSet::new(),
            withdrawing: BTreeMap::new(),
            frozen: BTreeMap::new(),
            disputed: BTreeSet::new(),
            provisional: BTreeMap::new(),
            overturned: BTreeSet::new(),
            commits: BTreeMap::new(),
            verifier_terms: BTreeMap::new(),
        })
    }

    /// The verifiers registered at `anchor`: registered by a transaction
    /// before it and not removed before it. Verifiers registered later never
    /// belong to it.
    pub fn verifiers_at(&self, anchor: &Anchor) -> BTreeSet<PublicKey> {
        self.verifier_terms
            .iter()
            .filter(|(_, terms)| {
                terms
                    .iter()
                    .any(|t| t.from < anchor.height && t.until.is_none_or(|u| u > anchor.height))
            })
            .map(|(k, _)| *k)
            .collect()
    }

    /// Removes `key` from the registry, closing its verifier term.
    fn deregister(&mut self, key: &PublicKey) -> Option<Node> {
        let node = self.nodes.remove(key)?;
        if node.role == Role::Verifier {
            let h = self.height;
            if let Some(t) = self
                .verifier_terms
                .get_mut(key)
                .and_then(|terms| terms.last_mut())
            {
                t.until = Some(h);
            }
        }
        Some(node)
    }

    /// Balance of `key` (0 if unknown).
    pub fn balance(&self, key: &PublicKey) -> u128 {
        self.accounts.get(key).map_or(0, |a| a.balance)
    }

    /// Stake of `key`.
    pub fn stake(&self, key: &PublicKey) -> u128 {
        self.stakes.get(key).copied().unwrap_or(0)
    }

    /// Unbonding stake of `key`.
    pub fn unbonding_of(&self, key: &PublicKey) -> u128 {
        self.unbonding
            .get(key)
            .map_or(0, |l| l.iter().map(|u| u.amount).sum())
    }

    /// Whether `key` voted on a proposal still open: its stake stays bonded.
    pub fn vote_locked(&self, key: &PublicKey) -> bool {
        self.proposals
            .values()
            .any(|p| p.is_open(self.time_ms) && p.voters.contains(key))
    }

    /// Reservations whose deadline has passed at `now_ms`: anyone may
    /// release them to their payers.
    pub fn expired(&self, now_ms: u64) -> Vec<Hash> {
        self.escrow
            .iter()
            .filter(|(_, e)| e.deadline_ms <= now_ms)
            .map(|(h, _)| *h)
            .collect()
    }

    /// Next nonce of `key`.
    pub fn nonce(&self, key: &PublicKey) -> u64 {
        self.accounts.get(key).map_or(0, |a| a.nonce)
    }

    /// Supply totals.
    pub fn summary(&self) -> Summary {
        let treasury = self.balance(&self.treasury);
        let all: u128 = self.accounts.values().map(|a| a.balance).sum();
        Summary {
            total_supply: self.total_supply,
            balances: all - treasury,
            escrow: self.escrow.values().map(|e| e.amount + e.deposit).sum(),
            stakes: self.stakes.values().sum(),
            unbonding: self.unbonding.values().flatten().map(|u| u.amount).sum(),
            treasury,
            withdrawing: self.withdrawing.values().map(|w| w.held).sum(),
            provisional: self.provisional.values().map(|p| p.fees.total.0).sum(),
        }
    }

    /// Where the optimistic answer to `request` stands at ledger time
    /// `now_ms`; None when no optimistic answer to it was settled.
    pub fn finality(&self, request: &Hash, now_ms: u64) -> Option<Finality> {
        if self.overturned.contains(request) {
            return Some(Finality::Overturned);
        }
        self.provisional.get(request).map(|p| {
            if now_ms < p.until_ms {
                Finality::Provisional {
                    until_ms: p.until_ms,
                }
            } else {
                Finality::Final
            }
        })
    }

    /// Optimistic answers whose window has closed at `now_ms` and whose fees
    /// anyone may pay out ([`TxBody::Finalize`]).
    pub fn matured(&self, now_ms: u64) -> Vec<Hash> {
        self.provisional
            .iter()
            .filter(|(_, p)| p.until_ms <= now_ms)
            .map(|(h, _)| *h)
            .collect()
    }

    /// The conservation law: the total supply is exactly what is held.
    pub fn check_invariants(&self) -> Result<(), String> {
        let s = self.summary();
        let held = s
            .balances
            .checked_add(s.escrow)
            .and_then(|x| x.checked_add(s.stakes))
            .and_then(|x| x.checked_add(s.unbonding))
            .and_then(|x| x.checked_add(s.treasury))
            .and_then(|x| x.checked_add(s.withdrawing))
            .and_then(|x| x.checked_add(s.provisional))
            .ok_or("holdings overflow")?;
        if held != s.total_supply {
            return Err(format!("total supply {} but {held} held", s.total_supply));
        }
        if self.stakes.values().any(|&v| v == 0) {
            return Err("zero stake entry".into());
        }
        if self.withdrawing.values().any(|w| w.held > w.asked) {
            return Err("more held than a withdrawal asked".into());
        }
        Ok(())
    }

    /// Computes the fee breakdown a receipt must carry.
    pub fn fees_for(&self, result: &InferenceResult, verifiers: usize) -> Result<Fees, TxError> {
        let model = self
            .models
            .get(&result.model)
            .ok_or_else(|| rule(format!("model {} is not admitted", result.model)))?;
        fees(model, &self.params.fee_split, &result.usage, verifiers)
    }
}

/// The fee breakdown of an inference with `usage` on `model`, certified by
/// `verifiers` verifiers (what [`State::fees_for`] computes, for callers that
/// hold the parameters but not the state).
pub fn fees(
    model: &ModelEntry,
    split_bps: &FeeSplit,
    usage: &Usage,
    verifiers: usize,
) -> Result<Fees, TxError> {
    let fee = model
        .cost(
            u64::from(usage.prompt_tokens),
            u64::from(usage.completion_tokens),
        )
        .ok_or(TxError::Overflow)?;
    let publisher = match &model.publisher {
        Some(p) => Some(PublisherFee {
            account: p.account,
            amount: Amount(
                fee.checked_mul(u128::from(p.share_bps))
                    .ok_or(TxError::Overflow)?
                    / BPS,
            ),
        }),
        None => None,
    };
    let rest = fee - publisher.map_or(0, |p| p.amount.0);
    let (node, per_verifier, treasury) = split(rest, split_bps, verifiers)?;
    Ok(Fees {
        total: Amount(fee),
        node: Amount(node),
        verifiers: Amount(per_verifier * verifiers as u128),
        treasury: Amount(treasury),
        publisher,
    })
}

/// Splits `fee` into (node, each verifier, treasury) per the stated rounding.
pub fn split(fee: u128, s: &FeeSplit, verifiers: usize) -> Result<(u128, u128, u128), TxError> {
    let part = |bps: u32| {
        fee.checked_mul(u128::from(bps))
            .map(|x| x / BPS)
            .ok_or(TxError::Overflow)
    };
    let node = part(s.node_bps)?;
    let pool = part(s.verifiers_bps)?;
    let per = if verifiers == 0 {
        0
    } else {
        pool / verifiers as u128
    };
    let treasury = fee - node - per * verifiers as u128;
    Ok((node, per, treasury))
}

/// Checks parameters against [`BOUNDS`] and the rules that tie them.
pub fn check_params(p: &Params) -> Result<(), TxError> {
    let mut p = p.clone();
    for b in &BOUNDS {
        let v = (b.field)(&mut p).get();
        if v < b.min || v > b.max {
            return Err(rule(format!(
                "{} = {v} is outside [{}, {}]: {}",
                param_name(b.param),
                b.min,
                b.max,
                b.reason
            )));
        }
    }
    let f = &p.fee_split;
    if u64::from(f.node_bps) + u64::from(f.verifiers_bps) + u64::from(f.treasury_bps) != 10_000 {
        return Err(rule("fee split must sum to 10000 basis points"));
    }
    if p.unbonding_delay_secs < p.voting_period_secs {
        return Err(rule(
            "the unbonding delay must not be shorter than the voting period",
        ));
    }
    Ok(())
}

fn param_name(p: Param) -> String {
    serde_json::to_value(p)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{p:?}"))
}

/// Checks every signature a transaction carries: its own, and those of the
/// records inside it. Pure and independent of the state, so callers can run
/// it in parallel before taking the ledger's lock.
pub fn check_signatures(tx: &Transaction) -> Result<(), TxError> {
    let sig = |r: Result<(), RecordError>| r.map_err(|e| TxError::Signature(e.to_string()));
    sig(tx.verify_signature())?;
    match &tx.body {
        TxBody::Settle { receipts } => {
            // Signature checks dominate settlement: batch-verify the results
            // and verdicts of each core's share of the receipts (the batch
            // rule accepts exactly what one-by-one checks accept, and the
            // outcome does not depend on the split).
            let check = |first: usize, part: &[Receipt]| -> Result<(), TxError> {
                // (receipt index, record type, key, signed bytes, signature)
                let mut signed = Vec::new();
                for (i, r) in part.iter().enumerate() {
                    let index = first + i;
                    let bad = |e: RecordError| TxError::Receipt {
                        index,
                        reason: e.to_string(),
                    };
                    // The request's own signature is not needed here: its hash is
                    // bound by the payer's signed Reserve transaction, and any
                    // other request has no escrow to settle against.
                    let res = &r.result;
                    let msg = res.signing_bytes().map_err(bad)?;
                    signed.push((index, InferenceResult::TYPE, &res.node, msg, &res.signature));
                    for v in &r.certificate.verdicts {
                        let msg = v.signing_bytes().map_err(bad)?;
                        signed.push((index, Verdict::TYPE, &v.verifier, msg, &v.signature));
                    }
                }
                let items: Vec<_> = signed
                    .iter()
                    .map(|(_, _, k, m, s)| (*k, &m[..], *s))
                    .collect();
                verify_batch(&items).map_err(|at| TxError::Receipt {
                    index: signed[at].0,
                    reason: format!("{}: {}", signed[at].1, KeyError::BadSignature),
                })
            };
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let chunk = receipts.len().div_ceil(threads).max(32);
            std::thread::scope(|s| {
                let handles: Vec<_> = receipts
                    .chunks(chunk)
                    .enumerate()
                    .map(|(c, part)| s.spawn(move || check(c * chunk, part)))
                    .collect();
                handles.into_iter().try_for_each(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(rule("signature check panicked")))
                })
            })?;
        }
        TxBody::Slash { evidence } | TxBody::Challenge { evidence } => {
            let (result, extra, committee) = evidence.parts();
            let bad = |e: RecordError| TxError::Evidence(e.to_string());
            evidence.request().verify_signature().map_err(bad)?;
            result.verify_signature().map_err(bad)?;
            for v in committee.iter().chain(extra) {
                v.verify_signature().map_err(bad)?;
            }
        }
        TxBody::Dispute { result, verdict } => {
            let bad = |e: RecordError| TxError::Evidence(e.to_string());
            result.verify_signature().map_err(bad)?;
            verdict.verify_signature().map_err(bad)?;
        }
        _ => {}
    }
    Ok(())
}

/// Checks signatures, then applies at `now_ms`. See [`apply_checked`].
pub fn apply(state: &mut State, tx: &Transaction, now_ms: u64) -> Result<Effects, TxError> {
    check_signatures(tx)?;
    apply_checked(state, tx, now_ms)
}

/// Applies a transaction whose signatures [`check_signatures`] accepted, at
/// the ledger time `max(state.time_ms, now_ms)` (time never runs backwards).
/// On error the state is unchanged, its time included.
pub fn apply_checked(state: &mut State, tx: &Transaction, now_ms: u64) -> Result<Effects, TxError> {
    // A commit applies once per Result, so it needs no nonce to be replay
    // safe; without one a gateway commits concurrently.
    let nonced = !matches!(tx.body, TxBody::Commit { .. });
    let expected = if nonced { state.nonce(&tx.signer) } else { 0 };
    if tx.nonce != expected {
        return Err(TxError::Nonce {
            expected,
            got: tx.nonce,
        });
    }
    let before = state.time_ms;
    state.time_ms = before.max(now_ms);
    // The fee is taken first, so the body sees what is left; undone exactly
    // (plain balance moves) if the body is refused.
    let fee = if pays_fee(&tx.body) {
        state.params.tx_fee.0
    } else {
        0
    };
    let treasury = state.treasury;
    let result = match move_balance(state, &tx.signer, &treasury, fee, "balance for the fee") {
        Ok(()) => {
            let r = apply_body(state, &tx.signer, &tx.body);
            if r.is_err() {
                // Cannot fail: it moves back what was just moved.
                let _ = move_balance(state, &treasury, &tx.signer, fee, "fee");
            }
            r
        }
        Err(e) => Err(e),
    };
    let effects = match result {
        Ok(effects) => effects,
        Err(e) => {
            state.time_ms = before;
            return Err(e);
        }
    };
    // Only reached on success: the body applied in full.
    if nonced {
        state.accounts.entry(tx.signer).or_default().nonce += 1;
    }
    state.height += 1;
    Ok(effects)
}

/// Whether a transaction pays the flat `tx_fee` up front. The settlement
/// path (reserve, release, commit, settle, finalize) is paid for by the fees it
/// settles, and a reservation carries a deposit of `tx_fee` that only a
/// settlement gives back; slashes and challenges carry a majority of
/// verifiers' signatures on a node's Result and apply once per Result
/// (evidence that proves nothing is refused and never written); the bridge
/// is the treasury's own. Everything else, disputes included, pays.
pub fn pays_fee(body: &TxBody) -> bool {
    !matches!(
        body,
        TxBody::Reserve { .. }
            | TxBody::Release { .. }
            | TxBody::Settle { .. }
            | TxBody::Finalize { .. }
            | TxBody::Slash { .. }
            | TxBody::Challenge { .. }
            | TxBody::Commit { .. }
            | TxBody::Bridge { .. }
    )
}

/// Moves `amount` of plain balance (no withdrawal holds), all or nothing.
fn move_balance(
    state: &mut State,
    from: &PublicKey,
    to: &PublicKey,
    amount: u128,
    what: &'static str,
) -> Result<(), TxError> {
    if amount == 0 || from == to {
        return Ok(());
    }
    need(what, state.balance(from), amount)?;
    state
        .balance(to)
        .checked_add(amount)
        .ok_or(TxError::Overflow)?;
    debit(state, from, amount);
    let acc = state.accounts.entry(*to).or_default();
    acc.balance += amount;
    Ok(())
}

fn need(what: &'static str, have: u128, amount: u128) -> Result<(), TxError> {
    if have < amount {
        return Err(TxError::Insufficient {
            what,
            have,
            need: amount,
        });
    }
    Ok(())
}

fn positive(a: &Amount) -> Result<u128, TxError> {
    if a.0 == 0 {
        return Err(rule("amount must be positive"));
    }
    Ok(a.0)
}

/// Credits `to`; while it has a withdrawal asked on chain, first to what
/// that withdrawal will take (the chain pays it out of the same escrow).
fn credit(state: &mut State, to: &PublicKey, amount: u128) -> Result<(), TxError> {
    let mut amount = amount;
    if let Some(w) = state.withdrawing.get_mut(to) {
        let fill = w.asked.saturating_sub(w.held).min(amount);
        w.held += fill;
        amount -= fill;
    }
    let acc = state.accounts.entry(*to).or_default();
    acc.balance = acc.balance.checked_add(amount).ok_or(TxError::Overflow)?;
    Ok(())
}

/// Applies a [`Movement`] of the on-chain escrow.
fn bridge(state: &mut State, movement: &Movement) -> Result<(), TxError> {
    let treasury = state.treasury;
    match movement {
        Movement::Deposit { account, amount } => {
            let amount = positive(amount)?;
            need("treasury balance", state.balance(&treasury), amount)?;
            debit(state, &treasury, amount);
            credit(state, account, amount)?;
        }
        Movement::WithdrawalRequested { account, amount } => {
            let asked = positive(amount)?;
            // Replaces any earlier request: hold anew from all it can cover.
            let old = state.withdrawing.remove(account).unwrap_or_default();
            let pool = state.balance(account) + old.held;
            let held = asked.min(pool);
            state.accounts.entry(*account).or_default().balance = pool - held;
            state
                .withdrawing
                .insert(*account, Withdrawal { asked, held });
        }
        Movement::WithdrawalCancelled { account } => {
            let w = state.withdrawing.remove(account).unwrap_or_default();
            credit(state, account, w.held)?;
        }
        Movement::Withdrawn { account, amount } => {
            // Out of what was held first; if the chain paid more (it saw a
            // larger escrow), the rest from the balance, as far as it goes.
            let w = state.withdrawing.remove(account).unwrap_or_default();
            let from_held = amount.0.min(w.held);
            let from_balance = (amount.0 - from_held).min(state.balance(account));
            debit(state, account, from_balance);
            credit(state, account, w.held - from_held)?;
            credit(state, &treasury, from_held + from_balance)?;
        }
    }
    Ok(())
}

/// Debits after the caller has checked the balance.
fn debit(state: &mut State, from: &PublicKey, amount: u128) {
    if let Some(acc) = state.accounts.get_mut(from) {
        acc.balance -= amount;
    }
}

fn apply_body(state: &mut State, signer: &PublicKey, body: &TxBody) -> Result<Effects, TxError> {
    let mut effects = Effects {
        first_leaf: state.leaves,
        ..Effects::default()
    };
    match body {
        TxBody::Transfer { to, amount } => transfer(state, signer, to, amount)?,
        TxBody::Stake { amount } => add_stake(state, signer, amount)?,
        TxBody::Unstake { amount } => unstake(state, signer, amount)?,
        TxBody::Withdraw => withdraw(state, signer)?,
        TxBody::Publish { model } => publish(state, signer, model)?,
        TxBody::Register { role, endpoint } => register(state, signer, *role, endpoint)?,
        TxBody::Serve { models } => serve(state, signer, models)?,
        TxBody::Deregister => {
            state
                .deregister(signer)
                .ok_or_else(|| rule("not registered"))?;
        }
        TxBody::Commit { result } => commit(state, signer, result)?,
        TxBody::Heartbeat => heartbeat(state, signer)?,
        TxBody::Reserve {
            request,
            amount,
            ttl_secs,
        } => reserve(state, signer, request, amount, *ttl_secs)?,
        TxBody::Release { request } => release(state, signer, request)?,
        TxBody::Settle { receipts } => effects.leaves = settle(state, receipts)?,
        TxBody::Slash { evidence } => effects.slashed = Some(slash(state, evidence)?),
        TxBody::Challenge { evidence } => effects.slashed = challenge(state, evidence)?,
        TxBody::Finalize { request } => finalize(state, request)?,
        TxBody::Dispute { result, verdict } => dispute(state, result, verdict)?,
        TxBody::Propose { change } => effects.proposal = Some(propose(state, signer, change)?),
        TxBody::Vote { proposal, yes } => vote(state, signer, *proposal, *yes)?,
        TxBody::Burn { amount } => burn(state, signer, amount)?,
        TxBody::Bridge { event, movement } => bridge_event(state, signer, event, movement)?,
    }
    Ok(effects)
}

fn transfer(
    state: &mut State,
    signer: &PublicKey,
    to: &PublicKey,
    amount: &Amount,
) -> Result<(), TxError> {
    let amount = positive(amount)?;
    need("balance", state.balance(signer), amount)?;
    state
        .balance(to)
        .checked_add(amount)
        .ok_or(TxError::Overflow)?;
    debit(state, signer, amount);
    credit(state, to, amount)
}

fn add_stake(state: &mut State, signer: &PublicKey, amount: &Amount) -> Result<(), TxError> {
    let amount = positive(amount)?;
    need("balance", state.balance(signer), amount)?;
    let new = state
        .stake(signer)
        .checked_add(amount)
        .ok_or(TxError::Overflow)?;
    debit(state, signer, amount);
    state.stakes.insert(*signer, new);
    Ok(())
}

fn unstake(state: &mut State, signer: &PublicKey, amount: &Amount) -> Result<(), TxError> {
    let amount = positive(amount)?;
    let stake = state.stake(signer);
    need("stake", stake, amount)?;
    if state.nodes.contains_key(signer) && stake - amount < state.params.min_stake.0 {
        return Err(rule(
            "a registered node cannot go below the minimum stake; deregister first",
        ));
    }
    if state.vote_locked(signer) {
        return Err(rule("stake that voted stays bonded until the vote closes"));
    }
    let release_ms = after_secs(state.time_ms, state.params.unbonding_delay_secs)?;
    set_stake(state, signer, stake - amount);
    state
        .unbonding
        .entry(*signer)
        .or_default()
        .push(Unbond { amount, release_ms });
    Ok(())
}

fn withdraw(state: &mut State, signer: &PublicKey) -> Result<(), TxError> {
    let now = state.time_ms;
    if let Some(&until) = state.frozen.get(signer) {
        if now < until {
            return Err(rule(format!(
                "a dispute against this node is open: withdrawals are frozen until {until} ms"
            )));
        }
    }
    let list = state.unbonding.get(signer).cloned().unwrap_or_default();
    let (ready, waiting): (Vec<_>, Vec<_>) = list.into_iter().partition(|u| u.release_ms <= now);
    if ready.is_empty() {
        return Err(rule("no unbonding stake has matured"));
    }
    let total = ready
        .iter()
        .try_fold(0u128, |a, u| a.checked_add(u.amount))
        .ok_or(TxError::Overflow)?;
    state
        .balance(signer)
        .checked_add(total)
        .ok_or(TxError::Overflow)?;
    if waiting.is_empty() {
        state.unbonding.remove(signer);
    } else {
        state.unbonding.insert(*signer, waiting);
    }
    credit(state, signer, total)
}

fn register(
    state: &mut State,
    signer: &PublicKey,
    role: Role,
    endpoint: &str,
) -> Result<(), TxError> {
    if state.nodes.contains_key(signer) {
        return Err(rule("already registered"));
    }
    need("stake", state.stake(signer), state.params.min_stake.0)?;
    if endpoint.is_empty() || endpoint.len() > 512 {
        return Err(rule("endpoint must be 1 to 512 bytes"));
    }
    let h = state.height;
    state.nodes.insert(
        *signer,
        Node {
            role,
            endpoint: endpoint.to_owned(),
            registered: h,
            last_heartbeat: h,
            models: BTreeSet::new(),
        },
    );
    if role == Role::Verifier {
        state.verifier_terms.entry(*signer).or_default().push(Term {
            from: h,
            until: None,
        });
    }
    Ok(())
}

fn serve(state: &mut State, signer: &PublicKey, models: &[Hash]) -> Result<(), TxError> {
    if !registered(state, signer, Role::Inference) {
        return Err(rule("only a registered inference node serves models"));
    }
    if models.len() > MAX_SERVED_MODELS {
        return Err(rule(format!("at most {MAX_SERVED_MODELS} models per node")));
    }
    if models.windows(2).any(|w| w[0] >= w[1]) {
        return Err(rule("models must be strictly increasing"));
    }
    if let Some(m) = models.iter().find(|m| !state.models.contains_key(m)) {
        return Err(rule(format!("model {m} is not admitted")));
    }
    if let Some(n) = state.nodes.get_mut(signer) {
        n.models = models.iter().copied().collect();
    }
    Ok(())
}

fn commit(state: &mut State, signer: &PublicKey, result: &Hash) -> Result<(), TxError> {
    if state
        .nodes
        .get(signer)
        .is_none_or(|n| n.role != Role::Gateway)
    {
        return Err(rule("only a registered gateway commits to results"));
    }
    if state.commits.contains_key(result) {
        return Err(rule("this result is already committed"));
    }
    let anchor = Anchor {
        height: state.height,
        time_ms: state.time_ms,
    };
    state.commits.insert(*result, anchor);
    Ok(())
}

fn heartbeat(state: &mut State, signer: &PublicKey) -> Result<(), TxError> {
    let h = state.height;
    state
        .nodes
        .get_mut(signer)
        .ok_or_else(|| rule("not registered"))?
        .last_heartbeat = h;
    Ok(())
}

fn reserve(
    state: &mut State,
    signer: &PublicKey,
    request: &Hash,
    amount: &Amount,
    ttl_secs: u64,
) -> Result<(), TxError> {
    let amount = positive(amount)?;
    let max = state.params.reserve_ttl_max_secs;
    if ttl_secs == 0 || ttl_secs > max {
        return Err(rule(format!(
            "ttl_secs must be 1 to {max} (reserve_ttl_max_secs)"
        )));
    }
    if state.escrow.contains_key(request) {
        return Err(rule("request already has a reservation"));
    }
    let deposit = state.params.tx_fee.0;
    let total = amount.checked_add(deposit).ok_or(TxError::Overflow)?;
    need("balance", state.balance(signer), total)?;
    let deadline_ms = after_secs(state.time_ms, ttl_secs)?;
    debit(state, signer, total);
    state.escrow.insert(
        *request,
        Escrow {
            payer: *signer,
            amount,
            deadline_ms,
            deposit,
        },
    );
    Ok(())
}

fn release(state: &mut State, signer: &PublicKey, request: &Hash) -> Result<(), TxError> {
    match state.escrow.get(request) {
        Some(e) if e.payer == *signer || state.time_ms >= e.deadline_ms => {}
        Some(_) => {
            return Err(rule(
                "only the payer can release a reservation before its deadline",
            ))
        }
        None => return Err(rule("no reservation for this request")),
    }
    if let Some(e) = state.escrow.remove(request) {
        credit(state, &e.payer, e.amount)?;
        let t = state.treasury;
        credit(state, &t, e.deposit)?;
    }
    Ok(())
}

/// Settles a batch of receipts; returns the leaves to log, in order.
fn settle(state: &mut State, receipts: &[Receipt]) -> Result<Vec<Leaf>, TxError> {
    let payouts = receipts
        .iter()
        .enumerate()
        .map(|(index, r)| {
            settlement(state, r).map_err(|e| TxError::Receipt {
                index,
                reason: e.to_string(),
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let distinct: BTreeSet<_> = payouts.iter().map(|p| p.request).collect();
    if distinct.len() != payouts.len() {
        return Err(rule("a request appears twice in one settlement"));
    }
    let mut leaves = Vec::with_capacity(payouts.len());
    for p in payouts {
        state.escrow.remove(&p.request);
        credit(state, &p.payer, p.refund + p.deposit)?;
        match p.until_ms {
            None => pay_out(state, &p.node, &p.verifiers, p.per_verifier, &p.fees)?,
            Some(until_ms) => {
                // An optimistic answer: the fee waits for the window,
                // and the node's stake stays to answer a challenge.
                let frozen = state.frozen.entry(p.node).or_default();
                *frozen = (*frozen).max(until_ms);
                state.provisional.insert(
                    p.request,
                    Provisional {
                        payer: p.payer,
                        node: p.node,
                        result: p.result,
                        fees: p.fees,
                        verifiers: p.verifiers,
                        per_verifier: p.per_verifier,
                        until_ms,
                    },
                );
            }
        }
        leaves.push(p.leaf);
    }
    state.leaves += leaves.len() as u64;
    Ok(leaves)
}

fn finalize(state: &mut State, request: &Hash) -> Result<(), TxError> {
    let p = state
        .provisional
        .get(request)
        .ok_or_else(|| rule("no provisional answer to this request"))?;
    if state.time_ms < p.until_ms {
        return Err(rule(format!(
            "the challenge window is open until {} ms",
            p.until_ms
        )));
    }
    let p = p.clone();
    pay_out(state, &p.node, &p.verifiers, p.per_verifier, &p.fees)?;
    state.provisional.remove(request);
    Ok(())
}

/// Opens a proposal; returns its id.
fn propose(state: &mut State, signer: &PublicKey, change: &Change) -> Result<u64, TxError> {
    if state.stake(signer) == 0 {
        return Err(rule("only stakers can propose"));
    }
    enact(&mut state.clone(), change)?;
    let deadline_ms = after_secs(state.time_ms, state.params.voting_period_secs)?;
    let id = state.proposals.len() as u64;
    state.proposals.insert(
        id,
        Proposal {
            proposer: *signer,
            change: change.clone(),
            yes: 0,
            no: 0,
            voters: BTreeSet::new(),
            status: ProposalStatus::Open,
            deadline_ms,
            snapshot: state.stakes.clone(),
            snapshot_total: state.stakes.values().sum(),
        },
    );
    Ok(id)
}

fn burn(state: &mut State, signer: &PublicKey, amount: &Amount) -> Result<(), TxError> {
    let amount = positive(amount)?;
    need("balance", state.balance(signer), amount)?;
    debit(state, signer, amount);
    state.total_supply -= amount;
    Ok(())
}

fn bridge_event(
    state: &mut State,
    signer: &PublicKey,
    event: &Hash,
    movement: &Movement,
) -> Result<(), TxError> {
    if *signer != state.treasury {
        return Err(rule("only the treasury bridges the chain's escrow"));
    }
    if state.bridged.contains(event) {
        return Err(rule("chain event already bridged"));
    }
    bridge(state, movement)?;
    state.bridged.insert(*event);
    Ok(())
}

fn set_stake(state: &mut State, key: &PublicKey, amount: u128) {
    if amount == 0 {
        state.stakes.remove(key);
    } else {
        state.stakes.insert(*key, amount);
    }
}

struct Payout {
    request: Hash,
    result: Hash,
    /// When the answer is optimistic, the end of its challenge window.
    until_ms: Option<u64>,
    payer: PublicKey,
    refund: u128,
    deposit: u128,
    node: PublicKey,
    verifiers: Vec<PublicKey>,
    per_verifier: u128,
    fees: Fees,
    leaf: Leaf,
}

fn registered(state: &State, key: &PublicKey, role: Role) -> bool {
    state.nodes.get(key).is_some_and(|n| n.role == role)
}

/// Checks one receipt against the state and computes its payout.
fn settlement(state: &State, r: &Receipt) -> Result<Payout, TxError> {
    let request_bytes = r.request.to_canonical()?;
    let result_bytes = r.result.to_canonical()?;
    let request = Hash::of(&request_bytes);
    let escrow = state
        .escrow
        .get(&request)
        .ok_or_else(|| rule("no reservation for this request (unpaid or already settled)"))?;
    if escrow.payer != r.request.requester {
        return Err(rule("reservation payer is not the requester"));
    }
    if state.time_ms >= escrow.deadline_ms {
        return Err(rule(
            "the reservation expired (its deadline passed); release it",
        ));
    }
    let result_hash = Hash::of(&result_bytes);
    if r.result.request != request {
        return Err(rule("result does not answer this request"));
    }
    if r.result.model != r.request.model {
        return Err(rule("result is from another model than requested"));
    }
    if !registered(state, &r.result.node, Role::Inference) {
        return Err(rule("result is not signed by a registered inference node"));
    }
    if r.result.usage.completion_tokens as usize != r.result.output_tokens.len() {
        return Err(rule("usage does not match the output tokens"));
    }
    let until_ms = match r.request.policy.verification {
        VerificationMode::Optimistic { window_secs } => {
            let max = state.params.dispute_window_secs;
            if window_secs == 0 || window_secs > max {
                return Err(rule(format!(
                    "the challenge window must be 1 to {max} s (dispute_window_secs)"
                )));
            }
            if state.provisional.contains_key(&request) || state.overturned.contains(&request) {
                return Err(rule("this request already has an optimistic answer"));
            }
            Some(after_secs(state.time_ms, window_secs)?)
        }
        _ => None,
    };
    let verifiers = certified_by(
        state,
        &r.certificate.verdicts,
        &request,
        &result_hash,
        &r.certificate.result,
    )?;
    let required = match r.request.policy.verification {
        VerificationMode::Quorum { k } => k.max(state.params.quorum),
        VerificationMode::None
        | VerificationMode::Sampled { .. }
        | VerificationMode::Optimistic { .. } => 0,
    };
    if (verifiers.len() as u64) < u64::from(required) {
        return Err(rule(format!(
            "certificate has {} accepting verdicts, {required} required",
            verifiers.len()
        )));
    }
    let fees = state.fees_for(&r.result, verifiers.len())?;
    if fees != r.fees {
        return Err(rule("receipt fees do not match the ledger's computation"));
    }
    need("escrow", escrow.amount, fees.total.0)?;
    let per_verifier = if verifiers.is_empty() {
        0
    } else {
        fees.verifiers.0 / verifiers.len() as u128
    };
    Ok(Payout {
        request,
        result: result_hash,
        until_ms,
        payer: escrow.payer,
        refund: escrow.amount - fees.total.0,
        deposit: escrow.deposit,
        node: r.result.node,
        verifiers,
        per_verifier,
        fees,
        leaf: r.leaf_from(&request_bytes, &result_bytes)?,
    })
}

/// The distinct registered verifiers whose accepting verdicts certify
/// `result` as the answer to `request`.
fn certified_by(
    state: &State,
    verdicts: &[Verdict],
    request: &Hash,
    result: &Hash,
    certificate_result: &Hash,
) -> Result<Vec<PublicKey>, TxError> {
    if certificate_result != result {
        return Err(rule("certificate is for another result"));
    }
    let mut seen = BTreeSet::new();
    for v in verdicts {
        if v.result != *result {
            return Err(rule("a verdict is for another result"));
        }
        if v.request != *request {
            return Err(rule("a verdict checked the result against another request"));
        }
        if v.decision != Decision::Accept {
            return Err(rule("a verdict rejects the result"));
        }
        if !registered(state, &v.verifier, Role::Verifier) {
            return Err(rule("a verdict is not from a registered verifier"));
        }
        if !seen.insert(v.verifier) {
            return Err(rule("a verifier appears twice in the certificate"));
        }
    }
    Ok(seen.into_iter().collect())
}

/// The committee of `evidence` about the Result `result`, judged at the
/// Result's anchor by [`crate::slashing::committee`].
fn judge(
    state: &State,
    evidence: &Evidence,
    result: &Hash,
) -> Result<BTreeSet<PublicKey>, TxError> {
    let bad = |e: crate::slashing::EvidenceError| TxError::Evidence(e.to_string());
    let (_, eligible) = crate::slashing::eligible_verifiers(state, result).map_err(bad)?;
    crate::slashing::committee(evidence, &eligible, state.params.dispute_quorum).map_err(bad)
}

/// Applies a proven fault ([`crate::slashing::committee`]); returns the
/// accused and the amount slashed.
fn slash(state: &mut State, evidence: &Evidence) -> Result<(PublicKey, u128), TxError> {
    let bad = |m: &str| TxError::Evidence(m.to_string());
    let result_hash = evidence.parts().0.hash()?;
    let members = judge(state, evidence, &result_hash)?;
    let accused = evidence.accused();
    if state.slashed.contains(&(result_hash, accused)) {
        return Err(bad("this fault was already slashed"));
    }
    // Bonded and unbonding stake both answer for a fault (as on chain):
    // `slash_bps` of their sum, bonded first.
    let stake = state.stake(&accused);
    let amount = stake
        .checked_add(state.unbonding_of(&accused))
        .and_then(|all| all.checked_mul(u128::from(state.params.slash_bps)))
        .ok_or(TxError::Overflow)?
        / BPS;
    if amount == 0 {
        return Err(bad("the accused has no stake to slash"));
    }
    let pool = amount
        .checked_mul(u128::from(state.params.slash_reward_bps))
        .ok_or(TxError::Overflow)?
        / BPS;
    let per = pool / members.len() as u128;
    let to_treasury = amount - per * members.len() as u128;
    // All checks passed: mutate.
    let from_stake = amount.min(stake);
    set_stake(state, &accused, stake - from_stake);
    take_unbonding(state, &accused, amount - from_stake);
    state.frozen.remove(&accused);
    if state.nodes.contains_key(&accused) && stake - from_stake < state.params.min_stake.0 {
        state.deregister(&accused);
    }
    for m in &members {
        credit(state, m, per)?;
    }
    let t = state.treasury;
    credit(state, &t, to_treasury)?;
    state.slashed.insert((result_hash, accused));
    Ok((accused, amount))
}

/// Pays a settled fee: the publisher's share, the node's, each verifier's,
/// the treasury's rest.
fn pay_out(
    state: &mut State,
    node: &PublicKey,
    verifiers: &[PublicKey],
    per_verifier: u128,
    fees: &Fees,
) -> Result<(), TxError> {
    if let Some(p) = &fees.publisher {
        credit(state, &p.account, p.amount.0)?;
    }
    credit(state, node, fees.node.0)?;
    for v in verifiers {
        credit(state, v, per_verifier)?;
    }
    let t = state.treasury;
    credit(state, &t, fees.treasury.0)
}

/// Overturns an optimistic answer inside its window on evidence against the
/// node that the slash rule accepts ([`crate::slashing::committee`]): the
/// whole fee goes back to the payer and the node is slashed (unless this
/// fault was slashed already, or nothing is left to take). Returns the slash.
fn challenge(state: &mut State, evidence: &Evidence) -> Result<Option<(PublicKey, u128)>, TxError> {
    let bad = |m: String| TxError::Evidence(m);
    if !matches!(evidence, Evidence::Node { .. }) {
        return Err(bad("a challenge accuses the node that answered".into()));
    }
    let request = evidence.request().hash()?;
    let Some(p) = state.provisional.get(&request) else {
        return Err(bad(if state.overturned.contains(&request) {
            "this answer was already overturned".into()
        } else {
            "no provisional answer to this request (not optimistic, or already final)".into()
        }));
    };
    if state.time_ms >= p.until_ms {
        return Err(bad(format!(
            "the challenge window closed at {} ms; the answer is final",
            p.until_ms
        )));
    }
    let (result, _, _) = evidence.parts();
    if result.hash()? != p.result {
        return Err(bad(
            "the evidence is about another result than the one settled".into(),
        ));
    }
    judge(state, evidence, &p.result)?;
    let node = p.node;
    let already = state.slashed.contains(&(p.result, node));
    let stake = state.stake(&node).saturating_add(state.unbonding_of(&node));
    let slashed = if already || stake == 0 {
        None
    } else {
        Some(slash(state, evidence)?)
    };
    // Checks passed (the slash, if any, applied in full): reverse the payment.
    if let Some(p) = state.provisional.remove(&request) {
        credit(state, &p.payer, p.fees.total.0)?;
    }
    state.overturned.insert(request);
    // The slash lifted the node's freeze: its other answers still in their
    // window keep holding what stake is left.
    if let Some(until) = state
        .provisional
        .values()
        .filter(|q| q.node == node)
        .map(|q| q.until_ms)
        .max()
    {
        let frozen = state.frozen.entry(node).or_default();
        *frozen = (*frozen).max(until);
    }
    Ok(slashed)
}

/// Takes `amount` from `key`'s unbonding entries, oldest first.
fn take_unbonding(state: &mut State, key: &PublicKey, amount: u128) {
    let mut left = amount;
    if let Some(list) = state.unbonding.get_mut(key) {
        for u in list.iter_mut() {
            let take = left.min(u.amount);
            u.amount -= take;
            left -= take;
        }
        list.retain(|u| u.amount > 0);
        if list.is_empty() {
            state.unbonding.remove(key);
        }
    }
}

/// `now_ms` plus `secs` seconds.
fn after_secs(now_ms: u64, secs: u64) -> Result<u64, TxError> {
    secs.checked_mul(1000)
        .and_then(|ms| now_ms.checked_add(ms))
        .ok_or(TxError::Overflow)
}

/// Opens a dispute against the node that signed `result` on one rejecting
/// verdict: its withdrawals freeze for `dispute_window_secs`, so it cannot
/// take its stake out before a committee's slash lands.
fn dispute(state: &mut State, result: &InferenceResult, verdict: &Verdict) -> Result<(), TxError> {
    let bad = |m: &str| TxError::Evidence(m.to_string());
    let hash = result.hash()?;
    if verdict.result != hash || verdict.decision != Decision::Reject {
        return Err(bad("the verdict does not reject this result"));
    }
    if !verdict.proves_node_fault() {
        return Err(bad("the verdict's reason is not a node fault"));
    }
    if !registered(state, &verdict.verifier, Role::Verifier) || verdict.verifier == result.node {
        return Err(bad(
            "the verdict is not from a registered verifier other than the node",
        ));
    }
    let node = result.node;
    if state.stake(&node) == 0 && state.unbonding_of(&node) == 0 {
        return Err(bad("the node has no stake to hold"));
    }
    if state.disputed.contains(&hash) {
        return Err(bad("this result is already disputed"));
    }
    let until = after_secs(state.time_ms, state.params.dispute_window_secs)?;
    let frozen = state.frozen.entry(node).or_default();
    *frozen = (*frozen).max(until);
    state.disputed.insert(hash);
    Ok(())
}

/// Enacts `change`: the one rule for both a proposal (applied to a copy of
/// the state, to refuse a change that could never be enacted) and its
/// enactment. On error `state` may be part-changed: callers apply it to a
/// copy and keep the copy only on success.
fn enact(state: &mut State, change: &Change) -> Result<(), TxError> {
    match change {
        Change::FeeSplit { split } => state.params.fee_split = *split,
        Change::Set { name, value } => {
            if !state.params.field(*name).set(value.0) {
                return Err(rule(format!(
                    "{} = {value} does not fit",
                    param_name(*name)
                )));
            }
        }
        Change::Mint { to, amount } => {
            positive(amount)?;
            state.total_supply = state
                .total_supply
                .checked_add(amount.0)
                .ok_or(TxError::Overflow)?;
            credit(state, to, amount.0)?;
        }
        Change::RemoveModel { id } => {
            let model = state
                .models
                .remove(id)
                .ok_or_else(|| rule("no such model"))?;
            if model.publisher.is_some() {
                state.delisted.insert(*id, model);
            }
            for n in state.nodes.values_mut() {
                n.models.remove(id);
            }
        }
        Change::AdmitModel { model } => {
            if model.name.is_empty() {
                return Err(rule("model name must not be empty"));
            }
            if model.per_tokens == 0 {
                return Err(rule("per_tokens must be at least 1"));
            }
            if model.publisher.is_some() {
                return Err(rule("a publisher registers its own model (publish)"));
            }
            if state.delisted.contains_key(&model.id)
                || state
                    .models
                    .get(&model.id)
                    .is_some_and(|m| m.publisher.is_some())
            {
                return Err(rule(
                    "this model was published; governance cannot reprice it",
                ));
            }
            state.models.insert(model.id, model.clone());
        }
    }
    check_params(&state.params)
}

/// Registers a published model under `publisher`'s key, for `publish_fee`
/// to the treasury. A model is registered once: an id already admitted,
/// published or delisted is refused.
fn publish(
    state: &mut State,
    publisher: &PublicKey,
    listing: &ModelListing,
) -> Result<(), TxError> {
    let entry = listing.entry(*publisher).map_err(TxError::Rule)?;
    if state.delisted.contains_key(&listing.id) {
        return Err(rule("this model was delisted by governance"));
    }
    if state.models.contains_key(&listing.id) {
        return Err(rule("this model is already registered"));
    }
    let treasury = state.treasury;
    let fee = state.params.publish_fee.0;
    move_balance(
        state,
        publisher,
        &treasury,
        fee,
        "balance for the publish fee",
    )?;
    state.models.insert(listing.id, entry);
    Ok(())
}

/// A vote weighs the voter's stake at the proposal's snapshot, or less if a
/// slash took some since: stake moved to another key after the snapshot has
/// no weight, so each token votes once. More than half of the snapshot's
/// total passes; half or more against rejects.
fn vote(state: &mut State, signer: &PublicKey, id: u64, yes: bool) -> Result<(), TxError> {
    let now = state.time_ms;
    let p = state
        .proposals
        .get(&id)
        .ok_or_else(|| rule(format!("no proposal {id}")))?;
    if !p.is_open(now) {
        return Err(rule(format!("proposal {id} is closed")));
    }
    if p.voters.contains(signer) {
        return Err(rule("already voted"));
    }
    let weight = p
        .snapshot
        .get(signer)
        .copied()
        .unwrap_or(0)
        .min(state.stake(signer));
    if weight == 0 {
        return Err(rule(
            "only stake bonded when the proposal was made can vote",
        ));
    }
    let total = p.snapshot_total;
    let (mut yes_w, mut no_w) = (p.yes, p.no);
    if yes {
        yes_w += weight;
    } else {
        no_w += weight;
    }
    let status = if yes_w * 2 > total {
        ProposalStatus::Passed
    } else if no_w * 2 >= total {
        ProposalStatus::Rejected
    } else {
        ProposalStatus::Open
    };
    let change = p.change.clone();
    if status == ProposalStatus::Passed {
        // Checked again against the current parameters; an error here
        // leaves everything (including the vote) unrecorded.
        let mut next = state.clone();
        enact(&mut next, &change)?;
        *state = next;
    }
    if let Some(p) = state.proposals.get_mut(&id) {
        p.yes = yes_w;
        p.no = no_w;
        p.voters.insert(*signer);
        p.status = status;
    }
    Ok(())
}
