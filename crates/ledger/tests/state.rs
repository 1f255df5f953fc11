//! The ledger's rules: a full scenario, and long random sequences of valid
//! and invalid transactions with the invariants checked after every step.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use proptest::prelude::*;
use std::cell::RefCell;
use std::collections::BTreeMap;
use verinfer_ledger::state::{apply, split, ProposalStatus, State, TxError};
use verinfer_ledger::testkit::{World, TOKEN};
use verinfer_ledger::tx::*;
use verinfer_types::records::{Amount, Decision};
use verinfer_types::{Hash, Record};

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
            },
        ),
    )
    .unwrap();
    assert_eq!(s.summary().escrow, max.0);

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
fn rejected_result_costs_nothing() {
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
            },
        ),
    )
    .unwrap();
    // Another account cannot release it.
    let other = w.users[1].clone();
    assert!(apply(&mut s, &w.tx(&other, TxBody::Release { request: h })).is_err());
    w.unuse_nonce(&other.public());
    apply(&mut s, &w.tx(&user, TxBody::Release { request: h })).unwrap();
    assert_eq!(s.balance(&user.public()), before);
}

#[test]
fn slashing_needs_a_committee_and_pays_it() {
    let (mut w, mut s) = setup();
    let req = w.request(&w.users[0].clone(), 4, 1);
    let result = w.result(&req, 1);
    let node = w.nodes[1].public();
    let stake = s.stake(&node);
    let relayer = w.users[2].clone();

    // One rejecting verdict is below the dispute quorum of 2.
    let weak = Evidence::Node {
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

    let committee = vec![
        w.verdict(&result, 0, Decision::Reject),
        w.verdict(&result, 1, Decision::Reject),
    ];
    let v0 = w.verifiers[0].public();
    let v0_before = s.balance(&v0);
    let proof = Evidence::Node {
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
    assert_eq!(s.balance(&v0) - v0_before, slashed / 5 / 2);
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
    for _ in 0..3 {
        apply(&mut s, &w.tx(&node, TxBody::Heartbeat)).unwrap();
    }
    let before = s.balance(&user.public());
    apply(&mut s, &w.tx(&user, TxBody::Withdraw)).unwrap();
    assert_eq!(s.balance(&user.public()), before + 4 * TOKEN);
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
    proptest!(ProptestConfig { cases: 64, ..ProptestConfig::default() }, |(ops in proptest::collection::vec(op(), 1..120))| {
        let (mut w, mut s) = setup();
        let actors: Vec<_> = w.users.iter().chain(&w.nodes).chain(&w.verifiers).cloned().collect();
        let relayer = w.treasury.clone();
        for op in ops {
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
                Op::Reserve(x, r, n) => { let h = req(r).hash().unwrap(); w.tx(&a(x), TxBody::Reserve { request: h, amount: Amount(n) }) }
                Op::Release(x, r) => { let h = req(r).hash().unwrap(); w.tx(&a(x), TxBody::Release { request: h }) }
                Op::Settle(r, k) => { let rc = w.receipt(&s, &req(r), k); w.tx(&relayer, TxBody::Settle { receipts: vec![rc] }) }
                Op::Slash(n, k) => {
                    let result = w.result(&req(0), n);
                    let committee = (0..k).map(|v| w.verdict(&result, v, Decision::Reject)).collect();
                    w.tx(&relayer, TxBody::Slash { evidence: Box::new(Evidence::Node { result, committee }) })
                }
                Op::Propose(x, q) => w.tx(&a(x), TxBody::Propose { change: Change::Quorum { value: q } }),
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
            let accepted = match apply(&mut s, &tx) {
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
