//! The ledger's rules: a full scenario, and long random sequences of valid
//! and invalid transactions with the invariants checked after every step.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use proptest::prelude::*;
use std::cell::RefCell;
use std::collections::BTreeMap;
use verinfer_ledger::state::{self, split, Effects, ProposalStatus, State, TxError};
use verinfer_ledger::testing::{World, RESERVE_TTL_SECS, TOKEN};
use verinfer_ledger::tx::*;
use verinfer_types::records::{Amount, Decision, Finality, InferenceResult, Request, Verdict};
use verinfer_types::{Hash, Record, SecretKey, SignedRecord};

/// Applies at the state's own time: the clock stands still unless a test
/// moves it with [`state::apply`].
fn apply(s: &mut State, tx: &Transaction) -> Result<Effects, TxError> {
    state::apply(s, tx, s.time_ms)
}

fn setup() -> (World, State) {
    let mut w = World::new();
    let mut s = State::genesis(&w.genesis()).unwrap();
    for tx in w.setup() {
        apply(&mut s, &tx).unwrap();
    }
    s.check_invariants().unwrap();
    (w, s)
}

#[test]
fn reserve_settle_pays_everyone_and_refunds_the_rest() {
    let (mut w, mut s) = setup();
    let user = w.users[0].clone();
    let req = w.request(&user, 1, 2);
    let before = s.balance(&user.public());
    let max = w.max_fee();
    apply(
        &mut s,
        &w.tx(
            &user,
            TxBody::Reserve {
                request: req.hash().unwrap(),
                amount: max,
                ttl_secs: RESERVE_TTL_SECS,
            },
        ),
    )
    .unwrap();
    // The reservation and its deposit (returned when it settles).
    assert_eq!(s.summary().escrow, max.0 + fee(&s));

    let receipt = w.receipt(&s, &req, 2);
    let fees = receipt.fees;
    let node = w.nodes[0].public();
    let node_before = s.balance(&node);
    let treasury_before = s.balance(&w.treasury.public());
    let relayer = w.users[2].clone();
    let effects = apply(
        &mut s,
        &w.tx(
            &relayer,
            TxBody::Settle {
                receipts: vec![receipt.clone()],
            },
        ),
    )
    .unwrap();
    assert_eq!(effects.leaves, vec![receipt.leaf().unwrap()]);
    assert_eq!(s.leaves, 1);
    assert_eq!(s.balance(&user.public()), before - fees.total.0);
    assert_eq!(s.balance(&node) - node_before, fees.node.0);
    assert_eq!(
        s.balance(&w.treasury.public()) - treasury_before,
        fees.treasury.0
    );
    assert_eq!(
        fees.node.0 + fees.verifiers.0 + fees.treasury.0,
        fees.total.0
    );
    assert_eq!(s.summary().escrow, 0);
    s.check_invariants().unwrap();

    // Settling again is refused: the reservation is gone.
    let again = w.tx(
        &relayer,
        TxBody::Settle {
            receipts: vec![receipt],
        },
    );
    let snapshot = s.clone();
    assert!(matches!(
        apply(&mut s, &again),
        Err(TxError::Receipt { index: 0, .. })
    ));
    assert_eq!(s, snapshot);
}

#[test]
fn bad_receipts_are_refused() {
    let (mut w, mut s) = setup();
    let user = w.users[0].clone();
    let relayer = w.users[1].clone();
    let req = w.request(&user, 2, 2);
    let max = w.max_fee();
    apply(
        &mut s,
        &w.tx(
            &user,
            TxBody::Reserve {
                request: req.hash().unwrap(),
                amount: max,
                ttl_secs: RESERVE_TTL_SECS,
            },
        ),
    )
    .unwrap();
    let good = w.receipt(&s, &req, 2);

    let mut too_few = good.clone();
    too_few.certificate.verdicts.pop();
    let mut inflated = good.clone();
    inflated.fees.node.0 += 1;
    let mut forged = good.clone();
    forged.result.output_text = "Lyon".into();
    let mut rejecting = good.clone();
    rejecting.certificate.verdicts[1] = w.verdict(&good.result, 1, Decision::Reject);
    let mut twice = good.clone();
    twice.certificate.verdicts[1] = twice.certificate.verdicts[0].clone();
    for (name, bad, reason) in [
        (
            "too few verdicts",
            too_few,
            "1 accepting verdicts, 2 required",
        ),
        ("inflated fees", inflated, "fees do not match"),
        ("forged output", forged, "signature"),
        (
            "a rejecting verdict",
            rejecting,
            "a verdict rejects the result",
        ),
        ("one verifier twice", twice, "a verifier appears twice"),
    ] {
        let tx = w.tx(
            &relayer,
            TxBody::Settle {
                receipts: vec![bad],
            },
        );
        let snapshot = s.clone();
        match apply(&mut s, &tx) {
            Err(TxError::Receipt {
                index: 0,
                reason: r,
            }) if r.contains(reason) => {}
            other => panic!("a receipt with {name}: {other:?}, want receipt 0 refused: {reason}"),
        }
        assert_eq!(s, snapshot, "{name} changed the state");
        w.unuse_nonce(&relayer.public());
    }
    apply(
        &mut s,
        &w.tx(
            &relayer,
            TxBody::Settle {
                receipts: vec![good],
            },
        ),
    )
    .unwrap();
}

/// Guards the batched signature check: in a settlement of many receipts
/// (split across threads), one forged result or verdict signature refuses the
/// whole transaction and names the receipt that carries it.
#[test]
fn batched_signature_check_names_the_forged_receipt() {
    let (mut w, mut s) = setup();
    let user = w.users[0].clone();
    let relayer = w.users[1].clone();
    let mut receipts = Vec::new();
    for i in 0..70u64 {
        let req = w.request(&user, 100 + i, 1);
        let tx = w.tx(
            &user,
            TxBody::Reserve {
                request: req.hash().unwrap(),
                amount: w.max_fee(),
                ttl_secs: RESERVE_TTL_SECS,
            },
        );
        apply(&mut s, &tx).unwrap();
        receipts.push(w.receipt(&s, &req, 1));
    }
    for (at, in_verdict) in [(0usize, false), (41, true), (69, false)] {
        let mut bad = receipts.clone();
        if in_verdict {
            bad[at].certificate.verdicts[0].signature.0[5] ^= 1;
        } else {
            bad[at].result.signature.0[50] ^= 1;
        }
        let tx = w.tx(&relayer, TxBody::Settle { receipts: bad });
        let snapshot = s.clone();
        match apply(&mut s, &tx) {
            Err(TxError::Receipt { index, reason }) => {
                assert_eq!(index, at);
                assert!(reason.contains("signature"), "{reason}");
            }
            other => panic!("forged signature at {at}: {other:?}"),
        }
        assert_eq!(s, snapshot);
        w.unuse_nonce(&relayer.public());
    }
    let tx = w.tx(&relayer, TxBody::Settle { receipts });
    assert_eq!(apply(&mut s, &tx).unwrap().leaves.len(), 70);
    s.check_invariants().unwrap();
}

#[test]
fn rejected_result_costs_only_the_reservation_deposit() {
    let (mut w, mut s) = setup();
    let user = w.users[0].clone();
    let req = w.request(&user, 3, 1);
    let before = s.balance(&user.public());
    let h = req.hash().unwrap();
    apply(
        &mut s,
        &w.tx(
            &user,
            TxBody::Reserve {
                request: h,
                amount: w.max_fee(),
                ttl_secs: RESERVE_TTL_SECS,
            },
        ),
    )
    .unwrap();
    // Another account cannot release it.
    let other = w.users[1].clone();
    assert!(apply(&mut s, &w.tx(&other, TxBody::Release { request: h })).is_err());
    w.unuse_nonce(&other.public());
    apply(&mut s, &w.tx(&user, TxBody::Release { request: h })).unwrap();
    assert_eq!(s.balance(&user.public()), before - fee(&s));
}

#[test]
fn slashing_needs_a_committee_and_pays_it() {
    let (mut w, mut s) = setup();
    let req = w.request(&w.users[0].clone(), 4, 1);
    let result = w.result(&req, 1);
    apply(&mut s, &w.commit(&result)).unwrap();
    let node = w.nodes[1].public();
    let stake = s.stake(&node);
    let relayer = w.users[2].clone();

    // One rejecting verdict is below the dispute quorum of 2.
    let weak = Evidence::Node {
        request: req.clone(),
        result: result.clone(),
        committee: vec![w.verdict(&result, 0, Decision::Reject)],
    };
    let snapshot = s.clone();
    assert!(matches!(
        apply(
            &mut s,
            &w.tx(
                &relayer,
                TxBody::Slash {
                    evidence: Box::new(weak)
                }
            )
        ),
        Err(TxError::Evidence(_))
    ));
    assert_eq!(s, snapshot);
    w.unuse_nonce(&relayer.public());

    // Accepting verdicts prove nothing.
    let accepting = Evidence::Node {
        request: req.clone(),
        result: result.clone(),
        committee: vec![
            w.verdict(&result, 0, Decision::Accept),
            w.verdict(&result, 1, Decision::Accept),
        ],
    };
    assert!(apply(
        &mut s,
        &w.tx(
            &relayer,
            TxBody::Slash {
                evidence: Box::new(accepting)
            }
        )
    )
    .is_err());
    w.unuse_nonce(&relayer.public());

    // Two of the four registered verifiers meet the dispute quorum but are
    // no majority of the registry.
    let minority = Evidence::Node {
        request: req.clone(),
        result: result.clone(),
        committee: (0..2)
            .map(|v| w.verdict(&result, v, Decision::Reject))
            .collect(),
    };
    assert!(matches!(
        apply(
            &mut s,
            &w.tx(
                &relayer,
                TxBody::Slash {
                    evidence: Box::new(minority)
                }
            )
        ),
        Err(TxError::Evidence(_))
    ));
    w.unuse_nonce(&relayer.public());

    let committee: Vec<_> = (0..3)
        .map(|v| w.verdict(&result, v, Decision::Reject))
        .collect();
    let v0 = w.verifiers[0].public();
    let v0_before = s.balance(&v0);
    let proof = Evidence::Node {
        request: req.clone(),
        result: result.clone(),
        committee: committee.clone(),
    };
    apply(
        &mut s,
        &w.tx(
            &relayer,
            TxBody::Slash {
                evidence: Box::new(proof.clone()),
            },
        ),
    )
    .unwrap();
    let slashed = stake / 2;
    assert_eq!(s.stake(&node), stake - slashed);
    assert_eq!(s.balance(&v0) - v0_before, slashed / 5 / 3);
    // Below the minimum stake now: deregistered.
    assert!(!s.nodes.contains_key(&node));
    s.check_invariants().unwrap();
    // The same fault cannot be slashed twice.
    assert!(apply(
        &mut s,
        &w.tx(
            &relayer,
            TxBody::Slash {
                evidence: Box::new(proof)
            }
        )
    )
    .is_err());
    w.unuse_nonce(&relayer.public());

    // A verifier that accepted the rejected result is slashed too.
    let liar = w.verdict(&result, 3, Decision::Accept);
    let v3 = w.verifiers[3].public();
    let v3_stake = s.stake(&v3);
    apply(
        &mut s,
        &w.tx(
            &relayer,
            TxBody::Slash {
                evidence: Box::new(Evidence::Verifier {
                    request: req,
                    result,
                    verdict: Box::new(liar),
                    committee,
                }),
            },
        ),
    )
    .unwrap();
    assert_eq!(s.stake(&v3), v3_stake - v3_stake / 2);
    s.check_invariants().unwrap();
}

#[test]
fn governance_changes_parameters_and_mints() {
    let (mut w, mut s) = setup();
    let v: Vec<_> = w.verifiers.clone();
    let change = Change::FeeSplit {
        split: FeeSplit {
            node_bps: 6000,
            verifiers_bps: 3000,
            treasury_bps: 1000,
        },
    };
    let id = apply(&mut s, &w.tx(&v[0], TxBody::Propose { change }))
        .unwrap()
        .proposal
        .unwrap();
    // A user without stake cannot vote.
    let user = w.users[0].clone();
    assert!(apply(
        &mut s,
        &w.tx(
            &user,
            TxBody::Vote {
                proposal: id,
                yes: true
            }
        )
    )
    .is_err());
    w.unuse_nonce(&user.public());
    // Six stakers with equal stake: four yes votes pass it (more than half).
    for k in &v[..3] {
        apply(
            &mut s,
            &w.tx(
                k,
                TxBody::Vote {
                    proposal: id,
                    yes: true,
                },
            ),
        )
        .unwrap();
        assert_eq!(s.proposals[&id].status, ProposalStatus::Open);
    }
    assert!(apply(
        &mut s,
        &w.tx(
            &v[0],
            TxBody::Vote {
                proposal: id,
                yes: true
            }
        )
    )
    .is_err());
    w.unuse_nonce(&v[0].public());
    apply(
        &mut s,
        &w.tx(
            &v[3],
            TxBody::Vote {
                proposal: id,
                yes: true,
            },
        ),
    )
    .unwrap();
    assert_eq!(s.proposals[&id].status, ProposalStatus::Passed);
    assert_eq!(s.params.fee_split.node_bps, 6000);

    let before = s.total_supply;
    let mint = Change::Mint {
        to: user.public(),
        amount: Amount(5 * TOKEN),
    };
    let id = apply(&mut s, &w.tx(&v[0], TxBody::Propose { change: mint }))
        .unwrap()
        .proposal
        .unwrap();
    for k in &v {
        apply(
            &mut s,
            &w.tx(
                k,
                TxBody::Vote {
                    proposal: id,
                    yes: true,
                },
            ),
        )
        .unwrap_or_default();
    }
    assert_eq!(s.total_supply, before + 5 * TOKEN);
    s.check_invariants().unwrap();

    let bad = Change::FeeSplit {
        split: FeeSplit {
            node_bps: 6000,
            verifiers_bps: 3000,
            treasury_bps: 2000,
        },
    };
    assert!(apply(&mut s, &w.tx(&v[0], TxBody::Propose { change: bad })).is_err());
}

fn bridged(w: &mut World, s: &mut State, event: u8, movement: Movement) -> Result<(), TxError> {
    let t = w.treasury.clone();
    let tx = w.tx(
        &t,
        TxBody::Bridge {
            event: Hash::of(&[event]),
            movement,
        },
    );
    let r = apply(s, &tx).map(|_| ());
    if r.is_err() {
        w.unuse_nonce(&tx.signer);
    }
    s.check_invariants().unwrap();
    r
}

/// The EVM backend's bridge: deposits credited once from the treasury,
/// withdrawals asked on chain held out of the balance (and out of what is
/// credited meanwhile) until paid or cancelled.
#[test]
fn bridged_chain_escrow_moves_are_applied_once_and_hold_withdrawals() {
    let (mut w, mut s) = setup();
    let user = w.users[0].clone();
    let account = user.public();
    let (t0, b0) = (s.balance(&w.treasury.public()), s.balance(&account));

    let deposit = |amount: u128| Movement::Deposit {
        account,
        amount: Amount(amount),
    };
    bridged(&mut w, &mut s, 1, deposit(7 * TOKEN)).unwrap();
    assert_eq!(s.balance(&account), b0 + 7 * TOKEN);
    assert_eq!(s.balance(&w.treasury.public()), t0 - 7 * TOKEN);
    assert!(
        bridged(&mut w, &mut s, 1, deposit(7 * TOKEN)).is_err(),
        "an event applies once"
    );
    let forged = w.tx(
        &user,
        TxBody::Bridge {
            event: Hash::of(&[2]),
            movement: deposit(TOKEN),
        },
    );
    assert!(apply(&mut s, &forged).is_err(), "only the treasury bridges");
    w.unuse_nonce(&account);
    assert!(bridged(&mut w, &mut s, 3, deposit(u128::MAX)).is_err());

    // Asking more than the balance holds all of it; what comes in next
    // fills the rest first; a reservation cannot spend what is held.
    let all = b0 + 7 * TOKEN;
    let ask = |amount: u128| Movement::WithdrawalRequested {
        account,
        amount: Amount(amount),
    };
    bridged(&mut w, &mut s, 4, ask(all + 2 * TOKEN)).unwrap();
    assert_eq!(s.balance(&account), 0);
    assert_eq!(s.summary().withdrawing, all);
    bridged(&mut w, &mut s, 5, deposit(3 * TOKEN)).unwrap();
    assert_eq!(s.balance(&account), TOKEN);
    assert_eq!(s.withdrawing[&account].held, all + 2 * TOKEN);
    let req = w.request(&user, 1, 2);
    let reserve = w.tx(
        &user,
        TxBody::Reserve {
            request: req.hash().unwrap(),
            amount: Amount(2 * TOKEN),
            ttl_secs: RESERVE_TTL_SECS,
        },
    );
    assert!(
        apply(&mut s, &reserve).is_err(),
        "held funds are not spendable"
    );
    w.unuse_nonce(&account);

    // A smaller request replaces it; cancelling returns what was held.
    bridged(&mut w, &mut s, 6, ask(TOKEN)).unwrap();
    assert_eq!(s.balance(&account), all + 2 * TOKEN);
    bridged(&mut w, &mut s, 7, Movement::WithdrawalCancelled { account }).unwrap();
    assert_eq!(s.balance(&account), all + 3 * TOKEN);
    assert!(s.withdrawing.is_empty());

    // Paid: out of what was held, back to the treasury.
    bridged(&mut w, &mut s, 8, ask(4 * TOKEN)).unwrap();
    let t1 = s.balance(&w.treasury.public());
    bridged(
        &mut w,
        &mut s,
        9,
        Movement::Withdrawn {
            account,
            amount: Amount(4 * TOKEN),
        },
    )
    .unwrap();
    assert_eq!(s.balance(&account), all - TOKEN);
    assert_eq!(s.balance(&w.treasury.public()), t1 + 4 * TOKEN);
    assert!(s.withdrawing.is_empty());
}

#[test]
fn unbonding_waits_for_the_delay() {
    let (mut w, mut s) = setup();
    let user = w.users[0].clone();
    apply(
        &mut s,
        &w.tx(
            &user,
            TxBody::Stake {
                amount: Amount(10 * TOKEN),
            },
        ),
    )
    .unwrap();
    apply(
        &mut s,
        &w.tx(
            &user,
            TxBody::Unstake {
                amount: Amount(4 * TOKEN),
            },
        ),
    )
    .unwrap();
    assert_eq!(s.summary().unbonding, 4 * TOKEN);
    assert!(apply(&mut s, &w.tx(&user, TxBody::Withdraw)).is_err());
    w.unuse_nonce(&user.public());
    // A registered node cannot unstake below the minimum.
    let node = w.nodes[0].clone();
    assert!(apply(
        &mut s,
        &w.tx(
            &node,
            TxBody::Unstake {
                amount: Amount(1_500 * TOKEN)
            }
        )
    )
    .is_err());
    w.unuse_nonce(&node.public());
    // Transactions do not hurry it; only ledger time does.
    for _ in 0..3 {
        apply(&mut s, &w.tx(&node, TxBody::Heartbeat)).unwrap();
    }
    assert!(apply(&mut s, &w.tx(&user, TxBody::Withdraw)).is_err());
    w.unuse_nonce(&user.public());
    let matured = s.unbonding[&user.public()][0].release_ms;
    assert_eq!(matured, s.params.unbonding_delay_secs * 1000);
    let before = s.balance(&user.public());
    state::apply(&mut s, &w.tx(&user, TxBody::Withdraw), matured).unwrap();
    assert_eq!(
        s.balance(&user.public()),
        before + 4 * TOKEN - s.params.tx_fee.0
    );
    assert_eq!(s.summary().unbonding, 0);
}

#[test]
fn replayed_and_forged_transactions_are_refused() {
    let (mut w, mut s) = setup();
    let user = w.users[0].clone();
    let tx = w.tx(
        &user,
        TxBody::Burn {
            amount: Amount(TOKEN),
        },
    );
    apply(&mut s, &tx).unwrap();
    let snapshot = s.clone();
    assert!(matches!(apply(&mut s, &tx), Err(TxError::Nonce { .. })));
    let mut forged = w.tx(
        &user,
        TxBody::Burn {
            amount: Amount(TOKEN),
        },
    );
    forged.body = TxBody::Transfer {
        to: w.users[1].public(),
        amount: Amount(TOKEN),
    };
    assert!(matches!(apply(&mut s, &forged), Err(TxError::Signature(_))));
    assert_eq!(s, snapshot);
    assert_eq!(s.total_supply, 1_000_000 * TOKEN - TOKEN);
}

const SEC: u64 = 1000;

/// Applies `body` by `key` at `now_ms`, or undoes the nonce and returns the
/// refusal (the state then unchanged).
fn at(
    w: &mut World,
    s: &mut State,
    key: &SecretKey,
    body: TxBody,
    now_ms: u64,
) -> Result<Effects, TxError> {
    let tx = w.tx(key, body);
    let before = s.clone();
    let r = state::apply(s, &tx, now_ms);
    if r.is_err() {
        assert_eq!(*s, before, "a refused transaction changed the state");
        w.unuse_nonce(&key.public());
    }
    s.check_invariants().unwrap();
    r
}

fn by(w: &mut World, s: &mut State, key: &SecretKey, body: TxBody) -> Result<Effects, TxError> {
    let now = s.time_ms;
    at(w, s, key, body, now)
}

fn fee(s: &State) -> u128 {
    s.params.tx_fee.0
}

/// Node 1 leaves: deregisters and unstakes everything.
fn leave(w: &mut World, s: &mut State) -> (SecretKey, u128) {
    let node = w.nodes[1].clone();
    let stake = s.stake(&node.public());
    by(w, s, &node, TxBody::Deregister).unwrap();
    by(
        w,
        s,
        &node,
        TxBody::Unstake {
            amount: Amount(stake),
        },
    )
    .unwrap();
    (node, stake)
}

/// A Result of node `n` committed by the gateway (so its committee is
/// anchored now) and three rejections of it.
fn node_fault(
    w: &World,
    s: &mut State,
    n: usize,
    seed: u64,
) -> (Request, InferenceResult, Vec<Verdict>) {
    let request = w.request(&w.users[0], seed, 1);
    let result = w.result(&request, n);
    apply(s, &w.commit(&result)).unwrap();
    let committee = (0..3)
        .map(|v| w.verdict(&result, v, Decision::Reject))
        .collect();
    (request, result, committee)
}

/// Attack: unstake, send many transfers to oneself (which used to advance
/// the height the delay was counted in), withdraw before the slash lands.
/// The delay is ledger time now, and a slash takes unbonding stake too.
#[test]
fn self_transfers_do_not_hurry_unbonding_and_the_slash_takes_unbonding_stake() {
    let (mut w, mut s) = setup();
    let (node, stake) = leave(&mut w, &mut s);
    let me = node.public();
    for _ in 0..100 {
        by(
            &mut w,
            &mut s,
            &node,
            TxBody::Transfer {
                to: me,
                amount: Amount(1),
            },
        )
        .unwrap();
    }
    assert!(
        by(&mut w, &mut s, &node, TxBody::Withdraw).is_err(),
        "withdrew before the delay"
    );
    assert_eq!(s.stake(&me), 0);
    assert_eq!(s.unbonding_of(&me), stake);
    let (request, result, committee) = node_fault(&w, &mut s, 1, 50);
    let relayer = w.users[2].clone();
    let slash = TxBody::Slash {
        evidence: Box::new(Evidence::Node {
            request,
            result,
            committee,
        }),
    };
    let e = by(&mut w, &mut s, &relayer, slash).unwrap();
    assert_eq!(e.slashed, Some((me, stake / 2)));
    assert_eq!(s.unbonding_of(&me), stake - stake / 2);
    // Only ledger time releases what is left.
    let later = s.time_ms + s.params.unbonding_delay_secs * SEC;
    let before = s.balance(&me);
    at(&mut w, &mut s, &node, TxBody::Withdraw, later).unwrap();
    assert_eq!(s.balance(&me), before + stake - stake / 2 - fee(&s));
}

/// Same order and rounding as the contract's `_takeStake`: `slash_bps` of
/// bonded plus unbonding, bonded first, then unbonding entries oldest first;
/// each of `n` committee members gets floor(floor(amount * reward / 10^4) / n).
#[test]
fn slash_takes_bonded_first_then_oldest_unbonding() {
    let (mut w, mut s) = setup();
    let node = w.nodes[1].clone();
    let me = node.public();
    by(&mut w, &mut s, &node, TxBody::Deregister).unwrap();
    by(
        &mut w,
        &mut s,
        &node,
        TxBody::Unstake {
            amount: Amount(300 * TOKEN),
        },
    )
    .unwrap();
    let t = s.time_ms + 5 * SEC;
    at(
        &mut w,
        &mut s,
        &node,
        TxBody::Unstake {
            amount: Amount(900 * TOKEN + 7),
        },
        t,
    )
    .unwrap();
    let bonded = s.stake(&me);
    assert_eq!(bonded, 300 * TOKEN - 7);
    let v = w.verifiers[0].public();
    let v_before = s.balance(&v);
    let (request, result, committee) = node_fault(&w, &mut s, 1, 51);
    let relayer = w.users[2].clone();
    let slash = TxBody::Slash {
        evidence: Box::new(Evidence::Node {
            request,
            result,
            committee,
        }),
    };
    by(&mut w, &mut s, &relayer, slash).unwrap();
    let amount = (1_500 * TOKEN) * u128::from(s.params.slash_bps) / 10_000;
    assert_eq!(s.stake(&me), 0, "bonded first");
    let list = &s.unbonding[&me];
    assert_eq!(list.len(), 1, "the oldest entry went first");
    assert_eq!(list[0].amount, 1_500 * TOKEN - amount);
    let per = amount * u128::from(s.params.slash_reward_bps) / 10_000 / 3;
    assert_eq!(s.balance(&v) - v_before, per);
}

/// One rejecting verdict for a node fault freezes the node's withdrawals
/// until the dispute window passes or a slash lands.
#[test]
fn a_dispute_freezes_withdrawals_until_its_window_or_a_slash() {
    let (mut w, mut s) = setup();
    let (node, stake) = leave(&mut w, &mut s);
    let me = node.public();
    let relayer = w.users[2].clone();
    let req = w.request(&w.users[0], 52, 1);
    let result = w.result(&req, 1);
    apply(&mut s, &w.commit(&result)).unwrap();
    let dispute = |verdict: Verdict| TxBody::Dispute {
        result: Box::new(result.clone()),
        verdict: Box::new(verdict),
    };
    // Not a node fault, not a rejection, or not a registered verifier: refused.
    let schema = w.rejection(&result, 0, "schema: not JSON");
    assert!(by(&mut w, &mut s, &relayer, dispute(schema)).is_err());
    let accept = w.verdict(&result, 0, Decision::Accept);
    assert!(by(&mut w, &mut s, &relayer, dispute(accept)).is_err());
    let mut outsider = w.rejection(&result, 0, "token_mismatch: position 3");
    outsider.verifier = w.users[1].public();
    outsider.sign(&w.users[1]).unwrap();
    assert!(by(&mut w, &mut s, &relayer, dispute(outsider)).is_err());

    let verdict = w.rejection(&result, 0, "token_mismatch: position 3");
    let opened = s.time_ms + s.params.unbonding_delay_secs * SEC;
    at(&mut w, &mut s, &relayer, dispute(verdict.clone()), opened).unwrap();
    assert!(
        by(&mut w, &mut s, &relayer, dispute(verdict)).is_err(),
        "disputed twice"
    );
    // Matured, but frozen.
    assert!(by(&mut w, &mut s, &node, TxBody::Withdraw).is_err());
    let window = s.params.dispute_window_secs * SEC;
    assert!(at(&mut w, &mut s, &node, TxBody::Withdraw, opened + window - 1).is_err());
    // The slash lands: the freeze lifts, what is left can go.
    let committee = (0..3)
        .map(|v| w.verdict(&result, v, Decision::Reject))
        .collect();
    let slash = TxBody::Slash {
        evidence: Box::new(Evidence::Node {
            request: req.clone(),
            result: result.clone(),
            committee,
        }),
    };
    by(&mut w, &mut s, &relayer, slash).unwrap();
    let before = s.balance(&me);
    by(&mut w, &mut s, &node, TxBody::Withdraw).unwrap();
    assert_eq!(s.balance(&me), before + stake - stake / 2 - fee(&s));

    // Without a slash, the window ends the freeze.
    let (mut w, mut s) = setup();
    let (node, _) = leave(&mut w, &mut s);
    let (_, result, _) = node_fault(&w, &mut s, 1, 53);
    let verdict = w.rejection(&result, 1, "text_mismatch: differs");
    let body = TxBody::Dispute {
        result: Box::new(result),
        verdict: Box::new(verdict),
    };
    by(&mut w, &mut s, &relayer, body).unwrap();
    let until = s.time_ms
        + s.params
            .dispute_window_secs
            .max(s.params.unbonding_delay_secs)
            * SEC;
    assert!(at(&mut w, &mut s, &node, TxBody::Withdraw, until - 1).is_err());
    at(&mut w, &mut s, &node, TxBody::Withdraw, until).unwrap();
}

/// Registers `n` more verifiers (funded by the treasury) and returns their
/// indices in `w.verifiers`.
fn register_verifiers(w: &mut World, s: &mut State, n: u64) -> Vec<usize> {
    let treasury = w.treasury.clone();
    (0..n)
        .map(|i| {
            let k = verinfer_types::testing::key(150 + i as u8);
            let to = k.public();
            by(
                w,
                s,
                &treasury,
                TxBody::Transfer {
                    to,
                    amount: Amount(2_000 * TOKEN),
                },
            )
            .unwrap();
            by(
                w,
                s,
                &k,
                TxBody::Stake {
                    amount: Amount(1_500 * TOKEN),
                },
            )
            .unwrap();
            let endpoint = "http://late".into();
            by(
                w,
                s,
                &k,
                TxBody::Register {
                    role: Role::Verifier,
                    endpoint,
                },
            )
            .unwrap();
            w.verifiers.push(k);
            w.verifiers.len() - 1
        })
        .collect()
}

fn slash_by(w: &World, req: &Request, result: &InferenceResult, members: &[usize]) -> TxBody {
    TxBody::Slash {
        evidence: Box::new(Evidence::Node {
            request: req.clone(),
            result: result.clone(),
            committee: members
                .iter()
                .map(|&v| w.verdict(result, v, Decision::Reject))
                .collect(),
        }),
    }
}

/// Attack: once an honest node's Result is known, register enough verifiers
/// to be a majority of the registry and slash it with their rejections. A
/// committee is judged at the Result's commitment: verifiers registered
/// after it never count, and the majority is of those registered then.
#[test]
fn verifiers_registered_after_the_commitment_cannot_slash() {
    let (mut w, mut s) = setup();
    let req = w.request(&w.users[0], 90, 1);
    let result = w.result(&req, 1);
    apply(&mut s, &w.commit(&result)).unwrap();
    let late = register_verifiers(&mut w, &mut s, 5);
    // Five of the nine registered now, and two of the four registered at
    // the commitment with the five: neither counts.
    let relayer = w.users[2].clone();
    let snapshot = s.clone();
    for members in [late.clone(), [&[0, 1][..], &late].concat()] {
        let body = slash_by(&w, &req, &result, &members);
        let err = by(&mut w, &mut s, &relayer, body).unwrap_err();
        assert!(
            err.to_string()
                .contains("registered at the result's commitment"),
            "{err}"
        );
        assert_eq!(s, snapshot);
    }
    // A later commitment of the same Result does not move its anchor.
    assert!(apply(&mut s, &w.commit(&result)).is_err());
    // An uncommitted Result has no committee at all.
    let other = w.result(&w.request(&w.users[0], 91, 1), 1);
    let body = slash_by(&w, &req, &other, &late);
    let err = by(&mut w, &mut s, &relayer, body);
    assert!(err.is_err());
}

/// The members the rule counts slash: three of the four verifiers
/// registered at the commitment, though a minority of the nine registered
/// now; a verifier that left after the commitment still counts then.
#[test]
fn a_majority_of_the_verifiers_registered_at_the_commitment_slashes() {
    let (mut w, mut s) = setup();
    let req = w.request(&w.users[0], 92, 1);
    let result = w.result(&req, 1);
    apply(&mut s, &w.commit(&result)).unwrap();
    register_verifiers(&mut w, &mut s, 5);
    let v2 = w.verifiers[2].clone();
    by(&mut w, &mut s, &v2, TxBody::Deregister).unwrap();
    let node = w.nodes[1].public();
    let stake = s.stake(&node);
    let relayer = w.users[2].clone();
    let body = slash_by(&w, &req, &result, &[0, 1, 2]);
    let effects = by(&mut w, &mut s, &relayer, body).unwrap();
    assert_eq!(effects.slashed, Some((node, stake / 2)));
    s.check_invariants().unwrap();
    // A verifier that left before a commitment is not in its registry.
    let req = w.request(&w.users[0], 93, 1);
    let result = w.result(&req, 0);
    apply(&mut s, &w.commit(&result)).unwrap();
    let anchor = s.commits[&result.hash().unwrap()];
    let eligible = s.verifiers_at(&anchor);
    assert_eq!(eligible.len(), 8);
    assert!(!eligible.contains(&v2.public()));
}

/// An `optimistic(window_secs)` request by user 0, reserved and settled
/// (answered by node 0): returns the request, its settled result and the
/// user's balance before the reservation.
fn optimistic_settled(
    w: &mut World,
    s: &mut State,
    seed: u64,
    window_secs: u64,
) -> (Request, InferenceResult, u128) {
    let user = w.users[0].clone();
    let req = w.optimistic_request(&user, seed, window_secs);
    let before = s.balance(&user.public());
    let reserve = TxBody::Reserve {
        request: req.hash().unwrap(),
        amount: w.max_fee(),
        ttl_secs: RESERVE_TTL_SECS,
    };
    by(w, s, &user, reserve).unwrap();
    let receipt = w.receipt(s, &req, 0);
    let relayer = w.users[2].clone();
    by(
        w,
        s,
        &relayer,
        TxBody::Settle {
            receipts: vec![receipt.clone()],
        },
    )
    .unwrap();
    apply(s, &w.commit(&receipt.result)).unwrap();
    (req, receipt.result, before)
}

fn challenge(request: &Request, result: &InferenceResult, committee: Vec<Verdict>) -> TxBody {
    TxBody::Challenge {
        evidence: Box::new(Evidence::Node {
            request: request.clone(),
            result: result.clone(),
            committee,
        }),
    }
}

fn rejections(w: &World, result: &InferenceResult, members: &[usize]) -> Vec<Verdict> {
    members
        .iter()
        .map(|&v| w.verdict(result, v, Decision::Reject))
        .collect()
}

/// Attack: a node answers an `optimistic` request wrongly and collects the
/// fee. A challenge inside the window with a committee's rejections refunds
/// the whole fee, withholds the node's share and slashes the node.
#[test]
fn a_challenge_inside_the_window_overturns_refunds_and_slashes() {
    let (mut w, mut s) = setup();
    let node = w.nodes[0].public();
    let node_balance = s.balance(&node);
    let stake = s.stake(&node);
    let (req, result, before) = optimistic_settled(&mut w, &mut s, 70, 600);
    let h = req.hash().unwrap();
    let user = w.users[0].public();
    let fee_total = s.provisional[&h].fees.total.0;
    assert!(fee_total > 0);
    // It names its receipt's leaf, where watchers read the Request and Result.
    assert_eq!(s.provisional[&h].leaf, s.leaves - 1);
    // Provisional: the excess came back, the fee waits, the node is unpaid.
    assert_eq!(s.balance(&user), before - fee_total);
    assert_eq!(s.balance(&node), node_balance);
    assert_eq!(s.summary().provisional, fee_total);
    let until = s.time_ms + 600 * SEC;
    assert_eq!(
        s.finality(&h, s.time_ms),
        Some(Finality::Provisional { until_ms: until })
    );
    // Its stake stays while a challenge may come.
    let n = w.nodes[0].clone();
    by(&mut w, &mut s, &n, TxBody::Deregister).unwrap();
    by(
        &mut w,
        &mut s,
        &n,
        TxBody::Unstake {
            amount: Amount(stake),
        },
    )
    .unwrap();
    let matured = s.time_ms + s.params.unbonding_delay_secs * SEC;
    assert!(until < matured);

    // An outsider with the evidence challenges one second before the end.
    let outsider = w.users[1].clone();
    let body = challenge(&req, &result, rejections(&w, &result, &[0, 1, 2]));
    let e = at(&mut w, &mut s, &outsider, body, until - SEC).unwrap();
    assert_eq!(e.slashed, Some((node, stake / 2)));
    assert_eq!(s.balance(&user), before, "the whole fee came back");
    assert_eq!(s.finality(&h, s.time_ms), Some(Finality::Overturned));
    assert_eq!(s.summary().provisional, 0);
    // Once only; and nothing is left to pay out.
    let again = challenge(&req, &result, rejections(&w, &result, &[0, 1, 2]));
    let err = by(&mut w, &mut s, &outsider, again).unwrap_err();
    assert!(err.to_string().contains("already overturned"), "{err}");
    assert!(by(&mut w, &mut s, &outsider, TxBody::Finalize { request: h }).is_err());
    // The node got nothing for the answer.
    assert_eq!(s.balance(&node), node_balance - 2 * fee(&s));
}

/// An honest optimistic answer becomes final when its window passes: the
/// fee is paid out then (not before), and a challenge after it is refused.
#[test]
fn an_unchallenged_answer_becomes_final_and_late_challenges_are_refused() {
    let (mut w, mut s) = setup();
    let node = w.nodes[0].public();
    let node_balance = s.balance(&node);
    let (req, result, _) = optimistic_settled(&mut w, &mut s, 71, 600);
    let h = req.hash().unwrap();
    let fees = s.provisional[&h].fees;
    let until = s.provisional[&h].until_ms;
    let anyone = w.users[1].clone();
    let err = at(
        &mut w,
        &mut s,
        &anyone,
        TxBody::Finalize { request: h },
        until - 1,
    )
    .unwrap_err();
    assert!(err.to_string().contains("window is open"), "{err}");
    assert_eq!(s.finality(&h, until), Some(Finality::Final));
    let late = challenge(&req, &result, rejections(&w, &result, &[0, 1, 2]));
    let err = at(&mut w, &mut s, &anyone, late, until).unwrap_err();
    assert!(err.to_string().contains("window closed"), "{err}");
    at(
        &mut w,
        &mut s,
        &anyone,
        TxBody::Finalize { request: h },
        until,
    )
    .unwrap();
    assert_eq!(s.balance(&node), node_balance + fees.node.0);
    assert_eq!(s.finality(&h, s.time_ms), None);
    assert!(by(&mut w, &mut s, &anyone, TxBody::Finalize { request: h }).is_err());
    let late = challenge(&req, &result, rejections(&w, &result, &[0, 1, 2]));
    let err = by(&mut w, &mut s, &anyone, late).unwrap_err();
    assert!(err.to_string().contains("already final"), "{err}");
}

/// A challenge cannot slash an honest node: evidence a committee majority
/// did not sign for a node fault, about another result than the one
/// settled, or against an answer that is not optimistic, is refused with
/// its reason and changes nothing.
#[test]
fn challenges_with_bad_evidence_are_refused_and_slash_nobody() {
    let (mut w, mut s) = setup();
    let node = w.nodes[0].public();
    let stake = s.stake(&node);
    let (req, result, _) = optimistic_settled(&mut w, &mut s, 72, 600);
    let outsider = w.users[1].clone();
    let refused = |w: &mut World, s: &mut State, body: TxBody, why: &str| {
        let err = by(w, s, &outsider, body).unwrap_err();
        assert!(err.to_string().contains(why), "{err} (wanted {why})");
    };
    // A minority of the registered verifiers.
    let minority = challenge(&req, &result, rejections(&w, &result, &[0, 1]));
    refused(&mut w, &mut s, minority, "strict majority");
    // Rejections for a reason that is not the node's fault.
    let schema = (0..3)
        .map(|v| w.rejection(&result, v, "schema: not an integer"))
        .collect();
    refused(
        &mut w,
        &mut s,
        challenge(&req, &result, schema),
        "node fault",
    );
    // Rejections of another answer the node never settled.
    let mut other = result.clone();
    other.output_text.push_str(" (edited)");
    other.sign(&w.nodes[0]).unwrap();
    let body = challenge(&req, &other, rejections(&w, &other, &[0, 1, 2]));
    refused(&mut w, &mut s, body, "another result");
    // Outsiders' keys as the committee.
    let mut forged = rejections(&w, &result, &[0, 1]);
    let mut v = forged[0].clone();
    v.verifier = w.users[2].public();
    v.sign(&w.users[2]).unwrap();
    forged.push(v);
    refused(
        &mut w,
        &mut s,
        challenge(&req, &result, forged),
        "rejections by 1 other keys count for nothing",
    );
    // A quorum answer is final at settlement: nothing to challenge.
    let user = w.users[0].clone();
    let q = w.request(&user, 73, 1);
    let reserve = TxBody::Reserve {
        request: q.hash().unwrap(),
        amount: w.max_fee(),
        ttl_secs: RESERVE_TTL_SECS,
    };
    by(&mut w, &mut s, &user, reserve).unwrap();
    let receipt = w.receipt(&s, &q, 1);
    let relayer = w.users[2].clone();
    let settle = TxBody::Settle {
        receipts: vec![receipt.clone()],
    };
    by(&mut w, &mut s, &relayer, settle).unwrap();
    let body = challenge(
        &q,
        &receipt.result,
        rejections(&w, &receipt.result, &[0, 1, 2]),
    );
    refused(&mut w, &mut s, body, "no provisional answer");
    assert_eq!(s.stake(&node), stake, "the honest node keeps its stake");
    assert!(s.slashed.is_empty());
}

/// A requester cannot hold a node's stake for long: the window is at most
/// `dispute_window_secs`, and a request answered optimistically once cannot
/// be settled optimistically again.
#[test]
fn optimistic_windows_are_bounded() {
    let (mut w, mut s) = setup();
    let user = w.users[0].clone();
    let relayer = w.users[2].clone();
    for (seed, window) in [(74, 0), (75, s.params.dispute_window_secs + 1)] {
        let req = w.optimistic_request(&user, seed, window);
        let reserve = TxBody::Reserve {
            request: req.hash().unwrap(),
            amount: w.max_fee(),
            ttl_secs: RESERVE_TTL_SECS,
        };
        by(&mut w, &mut s, &user, reserve).unwrap();
        let receipt = w.receipt(&s, &req, 0);
        let err = by(
            &mut w,
            &mut s,
            &relayer,
            TxBody::Settle {
                receipts: vec![receipt],
            },
        )
        .unwrap_err();
        assert!(
            err.to_string().contains("challenge window must be"),
            "{err}"
        );
    }
}

fn propose(w: &mut World, s: &mut State, key: &SecretKey, change: Change) -> u64 {
    by(w, s, key, TxBody::Propose { change })
        .unwrap()
        .proposal
        .unwrap()
}

fn set(name: Param, value: u128) -> Change {
    Change::Set {
        name,
        value: Amount(value),
    }
}

/// Attack: vote, move the stake to another key, vote again. The voter's
/// stake stays bonded until the vote closes, and stake bonded after the
/// proposal weighs nothing in it.
#[test]
fn each_token_votes_once() {
    let (mut w, mut s) = setup();
    let v = w.verifiers.clone();
    let id = propose(&mut w, &mut s, &v[0], set(Param::Quorum, 2));
    by(
        &mut w,
        &mut s,
        &v[0],
        TxBody::Vote {
            proposal: id,
            yes: true,
        },
    )
    .unwrap();
    by(&mut w, &mut s, &v[0], TxBody::Deregister).unwrap();
    let e = by(
        &mut w,
        &mut s,
        &v[0],
        TxBody::Unstake {
            amount: Amount(1_500 * TOKEN),
        },
    );
    assert!(matches!(e, Err(TxError::Rule(r)) if r.contains("voted")));
    // Fresh stake on another key (what an unbonded voter would move there).
    let other = w.users[1].clone();
    by(
        &mut w,
        &mut s,
        &other,
        TxBody::Stake {
            amount: Amount(3_000 * TOKEN),
        },
    )
    .unwrap();
    assert!(by(
        &mut w,
        &mut s,
        &other,
        TxBody::Vote {
            proposal: id,
            yes: true
        }
    )
    .is_err());
    assert_eq!(s.proposals[&id].yes, 1_500 * TOKEN);
    assert_eq!(s.proposals[&id].snapshot_total, 7 * 1_500 * TOKEN);
    // A later stake does not count toward the threshold either: three
    // more of the seven snapshot stakers pass it.
    for k in &v[1..3] {
        by(
            &mut w,
            &mut s,
            k,
            TxBody::Vote {
                proposal: id,
                yes: true,
            },
        )
        .unwrap();
    }
    assert_eq!(s.proposals[&id].status, ProposalStatus::Open);
    by(
        &mut w,
        &mut s,
        &v[3],
        TxBody::Vote {
            proposal: id,
            yes: true,
        },
    )
    .unwrap();
    assert_eq!(s.proposals[&id].status, ProposalStatus::Passed);
    assert_eq!(s.params.quorum, 2);
    // Closed: the voter's stake may leave.
    by(
        &mut w,
        &mut s,
        &v[0],
        TxBody::Unstake {
            amount: Amount(1_500 * TOKEN),
        },
    )
    .unwrap();
}

/// A slash after the snapshot lowers the weight: min(snapshot, now).
#[test]
fn a_slash_after_the_snapshot_lowers_the_weight() {
    let (mut w, mut s) = setup();
    let v0 = w.verifiers[0].clone();
    let id = propose(&mut w, &mut s, &v0, set(Param::Quorum, 2));
    let (request, result, committee) = node_fault(&w, &mut s, 1, 54);
    let relayer = w.users[2].clone();
    let slash = TxBody::Slash {
        evidence: Box::new(Evidence::Node {
            request,
            result,
            committee,
        }),
    };
    by(&mut w, &mut s, &relayer, slash).unwrap();
    let node = w.nodes[1].clone();
    by(
        &mut w,
        &mut s,
        &node,
        TxBody::Vote {
            proposal: id,
            yes: false,
        },
    )
    .unwrap();
    assert_eq!(s.proposals[&id].no, 750 * TOKEN);
}

/// An open proposal expires after the voting period: nothing is enacted,
/// no vote counts, and the voters' stake is free again.
#[test]
fn proposals_expire_after_the_voting_period() {
    let (mut w, mut s) = setup();
    let v = w.verifiers.clone();
    let id = propose(&mut w, &mut s, &v[0], set(Param::Quorum, 2));
    by(
        &mut w,
        &mut s,
        &v[0],
        TxBody::Vote {
            proposal: id,
            yes: true,
        },
    )
    .unwrap();
    by(&mut w, &mut s, &v[0], TxBody::Deregister).unwrap();
    let end = s.proposals[&id].deadline_ms;
    assert_eq!(end, s.time_ms + s.params.voting_period_secs * SEC);
    assert!(at(
        &mut w,
        &mut s,
        &v[1],
        TxBody::Vote {
            proposal: id,
            yes: true
        },
        end
    )
    .is_err());
    at(
        &mut w,
        &mut s,
        &v[0],
        TxBody::Unstake {
            amount: Amount(TOKEN),
        },
        end,
    )
    .unwrap();
    for k in &v[1..4] {
        assert!(by(
            &mut w,
            &mut s,
            k,
            TxBody::Vote {
                proposal: id,
                yes: true
            }
        )
        .is_err());
    }
    assert_eq!(s.params.quorum, 1);
}

/// Every governed number has bounds, from one table; a change outside them
/// is refused with the table's reason, at genesis too.
#[test]
fn out_of_bound_changes_are_refused() {
    let (mut w, mut s) = setup();
    let v0 = w.verifiers[0].clone();
    for b in BOUNDS {
        let mut bad = vec![b.max.saturating_add(1)];
        if b.min > 0 {
            bad.push(b.min - 1);
        }
        for value in bad {
            match by(
                &mut w,
                &mut s,
                &v0,
                TxBody::Propose {
                    change: set(b.param, value),
                },
            ) {
                Err(TxError::Rule(r)) => assert!(
                    r.contains(b.reason) || r.contains("does not fit"),
                    "{:?} = {value}: {r}",
                    b.param
                ),
                other => panic!("{:?} = {value} accepted: {other:?}", b.param),
            }
        }
        let mut g = w.genesis();
        let fits = g.params.field(b.param).set(b.max.saturating_add(1));
        assert!(
            !fits || State::genesis(&g).is_err(),
            "{:?} out of bounds at genesis",
            b.param
        );
    }
    // The attack values: no quorum, no minimum stake, an unbonding delay
    // that overflows every later unstake.
    for change in [
        set(Param::Quorum, 0),
        set(Param::MinStake, 0),
        set(Param::UnbondingDelaySecs, u128::from(u64::MAX)),
        set(Param::TxFee, 0),
    ] {
        assert!(by(&mut w, &mut s, &v0, TxBody::Propose { change }).is_err());
    }
    // Within bounds but against a rule that ties two numbers.
    let long = set(
        Param::VotingPeriodSecs,
        u128::from(s.params.unbonding_delay_secs) + 1,
    );
    assert!(by(&mut w, &mut s, &v0, TxBody::Propose { change: long }).is_err());
    let ok = propose(&mut w, &mut s, &v0, set(Param::DisputeWindowSecs, 7_200));
    assert_eq!(ok, 0);
}

/// Writes outside the settlement path pay a flat fee to the treasury; an
/// account that cannot pay cannot write. Reserve and release stay free.
#[test]
fn writes_pay_the_fee_and_the_settlement_path_is_free() {
    let (mut w, mut s) = setup();
    let f = fee(&s);
    assert!(f > 0, "the default fee is not zero");
    let user = w.users[0].clone();
    let to = w.users[1].public();
    let treasury = w.treasury.public();
    let (u0, u1, t0) = (
        s.balance(&user.public()),
        s.balance(&to),
        s.balance(&treasury),
    );
    by(
        &mut w,
        &mut s,
        &user,
        TxBody::Transfer {
            to,
            amount: Amount(TOKEN),
        },
    )
    .unwrap();
    assert_eq!(s.balance(&user.public()), u0 - TOKEN - f);
    assert_eq!(s.balance(&to), u1 + TOKEN);
    assert_eq!(s.balance(&treasury), t0 + f);
    // The whole balance cannot move: the fee comes first.
    let all = s.balance(&user.public());
    assert!(by(
        &mut w,
        &mut s,
        &user,
        TxBody::Transfer {
            to,
            amount: Amount(all)
        }
    )
    .is_err());
    // Heartbeats pay too; a node without a balance cannot write.
    let node = w.nodes[0].clone();
    let n0 = s.balance(&node.public());
    by(&mut w, &mut s, &node, TxBody::Heartbeat).unwrap();
    assert_eq!(s.balance(&node.public()), n0 - f);
    let rest = s.balance(&node.public()) - f;
    by(
        &mut w,
        &mut s,
        &node,
        TxBody::Burn {
            amount: Amount(rest),
        },
    )
    .unwrap();
    assert_eq!(s.balance(&node.public()), 0);
    let h = s.height;
    for _ in 0..3 {
        assert!(matches!(
            by(&mut w, &mut s, &node, TxBody::Heartbeat),
            Err(TxError::Insufficient { .. })
        ));
    }
    assert_eq!(s.height, h, "no free writes");
    // A reservation released, settling nothing, costs its deposit (a
    // write's fee); cycling them is no free write. A settled one gets it
    // back (`reserve_settle_pays_everyone_and_refunds_the_rest`).
    let b = s.balance(&user.public());
    let t = s.balance(&treasury);
    let h = s.height;
    for i in 0..3u8 {
        let request = Hash::of(&[i]);
        let reserve = TxBody::Reserve {
            request,
            amount: Amount(TOKEN),
            ttl_secs: 60,
        };
        by(&mut w, &mut s, &user, reserve).unwrap();
        assert_eq!(s.escrow[&request].deposit, f);
        by(&mut w, &mut s, &user, TxBody::Release { request }).unwrap();
    }
    assert_eq!(s.balance(&user.public()), b - 3 * f);
    assert_eq!(s.balance(&treasury), t + 3 * f);
    assert_eq!(s.height, h + 6);
    // Without the deposit, no reservation.
    let poor = w.users[1].clone();
    let all = s.balance(&poor.public());
    let reserve = TxBody::Reserve {
        request: Hash::of(b"all"),
        amount: Amount(all),
        ttl_secs: 60,
    };
    assert!(matches!(
        by(&mut w, &mut s, &poor, reserve),
        Err(TxError::Insufficient { .. })
    ));
    // Disputes pay the fee too.
    let relayer = w.users[2].clone();
    let r0 = s.balance(&relayer.public());
    let (_, result, _) = node_fault(&w, &mut s, 1, 60);
    let verdict = w.rejection(&result, 0, "token_mismatch: position 1");
    let dispute = TxBody::Dispute {
        result: Box::new(result),
        verdict: Box::new(verdict),
    };
    by(&mut w, &mut s, &relayer, dispute).unwrap();
    assert_eq!(s.balance(&relayer.public()), r0 - f);
}

/// A reservation carries a deadline: settling after it is refused, and then
/// anyone may release it to its payer.
#[test]
fn reservations_expire() {
    let (mut w, mut s) = setup();
    let user = w.users[0].clone();
    let other = w.users[1].clone();
    let req = w.request(&user, 55, 1);
    let request = req.hash().unwrap();
    let max = s.params.reserve_ttl_max_secs;
    let reserve = |ttl_secs| TxBody::Reserve {
        request,
        amount: w.max_fee(),
        ttl_secs,
    };
    let (too_long, none) = (reserve(max + 1), reserve(0));
    let ok = reserve(120);
    assert!(by(&mut w, &mut s, &user, too_long).is_err());
    assert!(by(&mut w, &mut s, &user, none).is_err());
    let b = s.balance(&user.public());
    by(&mut w, &mut s, &user, ok).unwrap();
    let deadline = s.escrow[&request].deadline_ms;
    assert_eq!(deadline, s.time_ms + 120 * SEC);
    assert!(at(
        &mut w,
        &mut s,
        &other,
        TxBody::Release { request },
        deadline - 1
    )
    .is_err());
    let receipt = w.receipt(&s, &req, 1);
    let relayer = w.users[2].clone();
    let settle = TxBody::Settle {
        receipts: vec![receipt],
    };
    assert!(at(&mut w, &mut s, &relayer, settle, deadline).is_err());
    assert_eq!(s.expired(deadline), vec![request]);
    at(
        &mut w,
        &mut s,
        &other,
        TxBody::Release { request },
        deadline,
    )
    .unwrap();
    assert_eq!(s.balance(&user.public()), b - fee(&s));
    assert_eq!(s.summary().escrow, 0);
}

proptest! {
    /// Fee splits never create or lose a unit.
    #[test]
    fn fee_split_conserves(fee in 0u128..u128::MAX / 10_000, node in 0u32..=10_000, v in 0u32..=10_000, n in 0usize..20) {
        prop_assume!(node + v <= 10_000);
        let s = FeeSplit { node_bps: node, verifiers_bps: v, treasury_bps: 10_000 - node - v };
        let (a, per, t) = split(fee, &s, n).unwrap();
        prop_assert_eq!(a + per * n as u128 + t, fee);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Transfer(usize, usize, u128),
    Stake(usize, u128),
    Unstake(usize, u128),
    Withdraw(usize),
    Register(usize, bool),
    Deregister(usize),
    Reserve(usize, u64, u128),
    Release(usize, u64),
    Settle(u64, usize),
    Slash(usize, usize),
    Propose(usize, u32),
    Vote(usize, u64, bool),
    Heartbeat(usize),
    /// (request seed and node, verifier, reason code)
    Dispute(usize, usize, usize),
    Burn(usize, u128),
    BadSignature(usize),
    WrongNonce(usize),
    /// (movement kind, account, amount, event id, signed by the treasury)
    Bridge(u8, usize, u128, u8, bool),
}

fn amount() -> impl Strategy<Value = u128> {
    prop_oneof![
        0u128..10,
        Just(TOKEN),
        Just(1_000 * TOKEN),
        Just(5_000 * TOKEN),
        Just(u128::MAX)
    ]
}

/// How far the clock moves before a transaction: not at all, a little, or
/// past the reservation, voting, dispute and unbonding periods.
fn step() -> impl Strategy<Value = u64> {
    // Mostly still or a second on: long jumps expire reservations and close
    // votes, so with even weights hardly a settlement or a vote is accepted.
    prop_oneof![
        8 => Just(0u64),
        4 => Just(1_000),
        1 => Just(700_000),
        1 => Just(3_600_000),
        1 => Just(86_400_000)
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let who = 0usize..9;
    // Reservations are mostly by users[0] (actor 0), the requester of the
    // requests `Settle` and `Release` name, so those get accepted too.
    let payer = prop_oneof![Just(0usize), who.clone()];
    // Reserve, Settle and Withdraw come three times each: a receipt settles
    // only after its reservation, a withdrawal only after an unstake has
    // matured, so with uniform weights almost none is accepted.
    let withdraw = who.clone().prop_map(Op::Withdraw).boxed();
    let reserve = (payer.clone(), 0u64..3, amount())
        .prop_map(|(a, r, x)| Op::Reserve(a, r, x))
        .boxed();
    let settle = (0u64..3, 0usize..4)
        .prop_map(|(r, k)| Op::Settle(r, k))
        .boxed();
    prop_oneof![
        (who.clone(), who.clone(), amount()).prop_map(|(a, b, x)| Op::Transfer(a, b, x)),
        (who.clone(), amount()).prop_map(|(a, x)| Op::Stake(a, x)),
        (who.clone(), amount()).prop_map(|(a, x)| Op::Unstake(a, x)),
        withdraw.clone(),
        withdraw.clone(),
        withdraw,
        (who.clone(), any::<bool>()).prop_map(|(a, b)| Op::Register(a, b)),
        who.clone().prop_map(Op::Deregister),
        reserve.clone(),
        reserve.clone(),
        reserve,
        (payer, 0u64..3).prop_map(|(a, r)| Op::Release(a, r)),
        settle.clone(),
        settle.clone(),
        settle,
        (0usize..2, 0usize..4).prop_map(|(n, k)| Op::Slash(n, k)),
        (who.clone(), 0u32..3).prop_map(|(a, q)| Op::Propose(a, q)),
        (who.clone(), 0u64..3, any::<bool>()).prop_map(|(a, p, y)| Op::Vote(a, p, y)),
        who.clone().prop_map(Op::Heartbeat),
        (0usize..4, 0usize..4, 0usize..2).prop_map(|(n, v, c)| Op::Dispute(n, v, c)),
        (who.clone(), amount()).prop_map(|(a, x)| Op::Burn(a, x)),
        (
            0u8..4,
            who.clone(),
            amount(),
            0u8..6,
            prop::bool::weighted(0.9)
        )
            .prop_map(|(k, a, x, e, t)| Op::Bridge(k, a, x, e, t)),
        who.clone().prop_map(Op::BadSignature),
        who.prop_map(Op::WrongNonce),
    ]
}

/// The kind an operation counts as: its variant (the bridge's, per movement).
fn kind(op: &Op) -> String {
    match op {
        Op::Bridge(k, ..) => format!("Bridge{k}"),
        _ => format!("{op:?}")
            .split('(')
            .next()
            .unwrap_or_default()
            .to_string(),
    }
}

/// Kinds that must never be accepted.
const REFUSED: [&str; 2] = ["BadSignature", "WrongNonce"];

/// How often every other kind must be accepted across the run, so the
/// invariants are checked after real transitions and not only after refusals.
const ACCEPTED_FLOOR: usize = 5;

/// Long random sequences, valid and invalid: after every step the
/// conservation law holds, and a refused transaction changes nothing. A
/// failure shrinks to a short failing sequence; across the run, every kind
/// of operation must be accepted at least `ACCEPTED_FLOOR` times.
#[test]
fn invariants_hold_under_random_transactions() {
    // Per kind: (generated, accepted).
    let seen: RefCell<BTreeMap<String, (usize, usize)>> = RefCell::default();
    proptest!(ProptestConfig { cases: 128, ..ProptestConfig::default() }, |(ops in proptest::collection::vec((op(), step()), 1..120))| {
        let (mut w, mut s) = setup();
        let actors: Vec<_> = w.users.iter().chain(&w.nodes).chain(&w.verifiers).cloned().collect();
        let relayer = w.treasury.clone();
        for (op, step) in ops {
            let k = kind(&op);
            let a = |i: usize| actors[i % actors.len()].clone();
            let req = |r: u64| w.request(&w.users[0], r, 1);
            let tx = match op {
                Op::Transfer(x, y, n) => w.tx(&a(x), TxBody::Transfer { to: a(y).public(), amount: Amount(n) }),
                Op::Stake(x, n) => w.tx(&a(x), TxBody::Stake { amount: Amount(n) }),
                Op::Unstake(x, n) => w.tx(&a(x), TxBody::Unstake { amount: Amount(n) }),
                Op::Withdraw(x) => w.tx(&a(x), TxBody::Withdraw),
                Op::Register(x, v) => w.tx(&a(x), TxBody::Register { role: if v { Role::Verifier } else { Role::Inference }, endpoint: "http://x".into() }),
                Op::Deregister(x) => w.tx(&a(x), TxBody::Deregister),
                Op::Reserve(x, r, n) => { let h = req(r).hash().unwrap(); w.tx(&a(x), TxBody::Reserve { request: h, amount: Amount(n), ttl_secs: RESERVE_TTL_SECS }) }
                Op::Release(x, r) => { let h = req(r).hash().unwrap(); w.tx(&a(x), TxBody::Release { request: h }) }
                Op::Settle(r, k) => { let rc = w.receipt(&s, &req(r), k); w.tx(&relayer, TxBody::Settle { receipts: vec![rc] }) }
                Op::Slash(n, k) => {
                    let request = req(0);
                    let result = w.result(&request, n);
                    let _ = apply(&mut s, &w.commit(&result));
                    let committee = (0..k).map(|v| w.verdict(&result, v, Decision::Reject)).collect();
                    w.tx(&relayer, TxBody::Slash { evidence: Box::new(Evidence::Node { request, result, committee }) })
                }
                Op::Propose(x, q) => w.tx(&a(x), TxBody::Propose { change: Change::Set { name: Param::Quorum, value: Amount(u128::from(q)) } }),
                Op::Heartbeat(x) => w.tx(&a(x), TxBody::Heartbeat),
                Op::Dispute(n, v, code) => {
                    let result = w.result(&req(n as u64), n % 2);
                    let verdict = w.rejection(&result, v, ["token_mismatch: 1", "schema: x"][code % 2]);
                    w.tx(&relayer, TxBody::Dispute { result: Box::new(result), verdict: Box::new(verdict) })
                }
                Op::Vote(x, p, y) => w.tx(&a(x), TxBody::Vote { proposal: p, yes: y }),
                Op::Burn(x, n) => w.tx(&a(x), TxBody::Burn { amount: Amount(n) }),
                Op::BadSignature(x) => { let mut t = w.tx(&a(x), TxBody::Burn { amount: Amount(1) }); t.signature.0[0] ^= 1; t }
                Op::WrongNonce(x) => { let mut t = w.tx(&a(x), TxBody::Burn { amount: Amount(1) }); t.nonce += 7; t }
                Op::Bridge(k, x, n, e, by_treasury) => {
                    let account = a(x).public();
                    let movement = match k {
                        0 => Movement::Deposit { account, amount: Amount(n) },
                        1 => Movement::WithdrawalRequested { account, amount: Amount(n) },
                        2 => Movement::WithdrawalCancelled { account },
                        _ => Movement::Withdrawn { account, amount: Amount(n) },
                    };
                    let signer = if by_treasury { relayer.clone() } else { a(x) };
                    w.tx(&signer, TxBody::Bridge { event: Hash::of(&[e]), movement })
                }
            };
            let before = s.clone();
            let now = s.time_ms.saturating_add(step);
            let accepted = match state::apply(&mut s, &tx, now) {
                Ok(_) => {
                    prop_assert!(!REFUSED.contains(&k.as_str()), "accepted {tx:?}");
                    prop_assert_eq!(s.height, before.height + 1);
                    true
                }
                Err(_) => {
                    prop_assert_eq!(&s, &before);
                    w.unuse_nonce(&tx.signer);
                    false
                }
            };
            let mut seen = seen.borrow_mut();
            let count = seen.entry(k).or_default();
            count.0 += 1;
            count.1 += usize::from(accepted);
            if let Err(e) = s.check_invariants() {
                return Err(TestCaseError::fail(format!("after {tx:?}: {e}")));
            }
        }
    });
    let seen = seen.into_inner();
    println!("operations (generated, accepted) by kind: {seen:?}");
    let starved: Vec<_> = seen
        .iter()
        .filter(|(k, &(_, ok))| !REFUSED.contains(&k.as_str()) && ok < ACCEPTED_FLOOR)
        .collect();
    assert!(
        starved.is_empty(),
        "kinds accepted fewer than {ACCEPTED_FLOOR} times across the run: {starved:?}"
    );
}

#[derive(Debug, Clone)]
enum Life {
    /// Reserve enough for optimistic request `r` (user 0).
    Reserve(u64),
    /// Settle it, answered by node 0.
    Settle(u64),
    /// Challenge it with `k` rejecting verifiers; `fault` false gives
    /// rejections for a reason that is not the node's fault.
    Challenge(u64, usize, bool),
    /// Pay it out.
    Finalize(u64),
    /// Node 0 tries to take its stake out.
    Unstake,
    Withdraw,
}

/// The optimistic lifecycle (reserve, settle, challenge, finalize) with the
/// answering node trying to leave, in random order and at random times:
/// after every step the conservation law holds, a refused transaction
/// changes nothing, a challenge succeeds only with a majority's node-fault
/// rejections inside the window, and nobody is paid twice. Every kind must
/// be accepted at least `ACCEPTED_FLOOR` times across the run (a
/// `Finalize` lands only after a settle and a long step: 96 cases accepted
/// 4 to 20 of them, so the run has 256).
#[test]
fn optimistic_answers_settle_once_whatever_the_order() {
    let seen: RefCell<BTreeMap<String, (usize, usize)>> = RefCell::default();
    let life = prop_oneof![
        3 => (0u64..3).prop_map(Life::Reserve),
        3 => (0u64..3).prop_map(Life::Settle),
        3 => (0u64..3, 2usize..5, prop::bool::weighted(0.8)).prop_map(|(r, k, f)| Life::Challenge(r, k, f)),
        2 => (0u64..3).prop_map(Life::Finalize),
        1 => Just(Life::Unstake),
        1 => Just(Life::Withdraw),
    ];
    let step =
        prop_oneof![6 => Just(0u64), 3 => Just(60_000), 1 => Just(700_000), 1 => Just(86_400_000)];
    proptest!(ProptestConfig { cases: 256, ..ProptestConfig::default() }, |(ops in proptest::collection::vec((life, step), 1..40))| {
        let (mut w, mut s) = setup();
        let user = w.users[0].clone();
        let node = w.nodes[0].clone();
        let relayer = w.users[2].clone();
        // Windows of 10 minutes; reservations last as long.
        let req = |w: &World, r: u64| w.optimistic_request(&w.users[0], 80 + r, 600);
        for (op, step) in ops {
            let k = format!("{op:?}").split('(').next().unwrap_or_default().to_string();
            let (signer, body) = match op {
                Life::Reserve(r) => (user.clone(), TxBody::Reserve { request: req(&w, r).hash().unwrap(), amount: w.max_fee(), ttl_secs: RESERVE_TTL_SECS }),
                Life::Settle(r) => (relayer.clone(), TxBody::Settle { receipts: vec![w.receipt(&s, &req(&w, r), 0)] }),
                Life::Challenge(r, k, fault) => {
                    let request = req(&w, r);
                    let result = w.result(&request, 0);
                    let _ = apply(&mut s, &w.commit(&result));
                    let committee = (0..k).map(|v| if fault { w.verdict(&result, v, Decision::Reject) } else { w.rejection(&result, v, "schema: x") }).collect();
                    (relayer.clone(), challenge(&request, &result, committee))
                }
                Life::Finalize(r) => (relayer.clone(), TxBody::Finalize { request: req(&w, r).hash().unwrap() }),
                Life::Unstake => (node.clone(), TxBody::Unstake { amount: Amount(1) }),
                Life::Withdraw => (node.clone(), TxBody::Withdraw),
            };
            let now = s.time_ms.saturating_add(step);
            let before = s.clone();
            let accepted = at(&mut w, &mut s, &signer, body, now).is_ok();
            if accepted && k == "Challenge" {
                // Only a majority of node-fault rejections, inside the window.
                let r = match op { Life::Challenge(r, ..) => r, _ => unreachable!() };
                let h = req(&w, r).hash().unwrap();
                let p = &before.provisional[&h];
                prop_assert!(now < p.until_ms);
                prop_assert!(matches!(op, Life::Challenge(_, 3.., true)));
                prop_assert_eq!(s.finality(&h, now), Some(Finality::Overturned));
            }
            let mut seen = seen.borrow_mut();
            let count = seen.entry(k).or_default();
            count.0 += 1;
            count.1 += usize::from(accepted);
        }
    });
    let seen = seen.into_inner();
    println!("operations (generated, accepted) by kind: {seen:?}");
    let starved: Vec<_> = seen
        .iter()
        .filter(|(_, &(_, ok))| ok < ACCEPTED_FLOOR)
        .collect();
    assert!(
        starved.is_empty(),
        "kinds accepted fewer than {ACCEPTED_FLOOR} times across the run: {starved:?}"
    );
}
