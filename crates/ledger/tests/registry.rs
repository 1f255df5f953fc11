//! The model registry: publishers register models under their own keys, are
//! paid their share of every fee those models earn, and governance delists;
//! with random sequences checking that the supply is conserved and every
//! publisher is paid exactly its share.

#![allow(clippy::unwrap_used)] // tests: a panic is the failure report

use proptest::prelude::*;
use std::collections::BTreeMap;
use verinfer_ledger::state::{self, Effects, ProposalStatus, State, TxError};
use verinfer_ledger::testing::{World, RESERVE_TTL_SECS, TOKEN};
use verinfer_ledger::tx::*;
use verinfer_types::records::{Amount, Request, VerificationMode};
use verinfer_types::{Hash, PublicKey, Record, SecretKey, SignedRecord};

fn setup() -> (World, State) {
    let mut w = World::new();
    let mut s = State::genesis(&w.genesis()).unwrap();
    for tx in w.setup() {
        state::apply(&mut s, &tx, 0).unwrap();
    }
    (w, s)
}

/// Applies at the state's time; a refusal must change nothing, and the
/// conservation law must hold either way.
fn by(w: &mut World, s: &mut State, key: &SecretKey, body: TxBody) -> Result<Effects, TxError> {
    let tx = w.tx(key, body);
    let before = s.clone();
    let r = state::apply(s, &tx, s.time_ms);
    if r.is_err() {
        assert_eq!(*s, before, "a refused transaction changed the state");
        w.unuse_nonce(&key.public());
    }
    s.check_invariants().unwrap();
    r
}

fn publisher() -> SecretKey {
    verinfer_types::testing::key(150)
}

/// A request by user 0 for `model`, verified by `k` verifiers.
fn request_for(w: &World, model: Hash, seed: u64, k: u32) -> Request {
    let user = &w.users[0];
    let mut r = w.request(user, seed, k);
    r.model = model;
    r.sign(user).unwrap();
    r
}

/// Reserves and settles `req` with `k` accepting verifiers; returns the
/// settled fees.
fn settle(
    w: &mut World,
    s: &mut State,
    req: &Request,
    k: usize,
) -> Result<verinfer_types::records::Fees, TxError> {
    let user = w.users[0].clone();
    by(
        w,
        s,
        &user,
        TxBody::Reserve {
            request: req.hash().unwrap(),
            amount: Amount(TOKEN),
            ttl_secs: RESERVE_TTL_SECS,
        },
    )?;
    let receipt = w.receipt(s, req, k);
    let fees = receipt.fees;
    let relayer = w.users[2].clone();
    by(
        w,
        s,
        &relayer,
        TxBody::Settle {
            receipts: vec![receipt],
        },
    )?;
    Ok(fees)
}

/// Every staker votes yes on `change` until it passes.
fn pass(w: &mut World, s: &mut State, change: Change) -> Result<(), TxError> {
    let v = w.verifiers.clone();
    let id = by(w, s, &v[0], TxBody::Propose { change })?
        .proposal
        .unwrap();
    for k in w.nodes.clone().iter().chain(&v) {
        if s.proposals[&id].status != ProposalStatus::Open {
            break;
        }
        by(
            w,
            s,
            k,
            TxBody::Vote {
                proposal: id,
                yes: true,
            },
        )?;
    }
    assert_eq!(s.proposals[&id].status, ProposalStatus::Passed);
    Ok(())
}

#[test]
fn a_publisher_registers_a_model_and_is_paid_its_share_of_each_fee() {
    let (mut w, mut s) = setup();
    let p = publisher();
    let listing = World::listing("tiny-chat", 2_500);
    let id = listing.id;
    for tx in w.publish(&p, listing) {
        state::apply(&mut s, &tx, 0).unwrap();
    }
    let entry = &s.models[&id];
    assert_eq!(entry.per_tokens, 1000);
    let meta = entry.publisher.as_ref().unwrap();
    assert_eq!(
        (meta.account, meta.share_bps, meta.context),
        (p.public(), 2_500, 2048)
    );

    let before = s.balance(&p.public());
    let node_before = s.balance(&w.nodes[0].public());
    let treasury_before = s.balance(&w.treasury.public());
    let req = request_for(&w, id, 1, 2);
    let fees = settle(&mut w, &mut s, &req, 2).unwrap();
    // 31 prompt and 8 output tokens at 2 and 5 tokens per 1k.
    let total = (31 * 2 * TOKEN + 8 * 5 * TOKEN) / 1000;
    assert_eq!(fees.total.0, total);
    let share = total * 2_500 / 10_000;
    let publisher_fee = fees.publisher.unwrap();
    assert_eq!(
        (publisher_fee.account, publisher_fee.amount.0),
        (p.public(), share)
    );
    // The governed split applies to what is left.
    let rest = total - share;
    assert_eq!(fees.node.0, rest * 7_000 / 10_000);
    assert_eq!(
        fees.node.0 + fees.verifiers.0 + fees.treasury.0 + share,
        total
    );
    assert_eq!(s.balance(&p.public()), before + share);
    assert_eq!(s.balance(&w.nodes[0].public()), node_before + fees.node.0);
    assert_eq!(
        s.balance(&w.treasury.public()),
        treasury_before + fees.treasury.0
    );
    // The leaf commits to who was paid.
    assert_eq!(s.leaves, 1);

    // A model admitted at genesis pays no publisher and keeps its bytes.
    let plain = request_for(&w, Hash::of(b"test model"), 2, 1);
    w.model = s.models[&Hash::of(b"test model")].clone();
    let fees = settle(&mut w, &mut s, &plain, 1).unwrap();
    assert_eq!(fees.publisher, None);
    let bytes = String::from_utf8(verinfer_types::canonical::to_canonical(&fees).unwrap()).unwrap();
    assert!(!bytes.contains("publisher"), "{bytes}");
}

#[test]
fn publishing_costs_the_publish_fee_and_refuses_bad_or_taken_listings() {
    let (mut w, mut s) = setup();
    let p = publisher();
    let treasury = w.treasury.clone();
    by(
        &mut w,
        &mut s,
        &treasury,
        TxBody::Transfer {
            to: p.public(),
            amount: Amount(100 * TOKEN),
        },
    )
    .unwrap();
    let refused = |w: &mut World, s: &mut State, key: &SecretKey, l: ModelListing, why: &str| {
        let err = by(w, s, key, TxBody::Publish { model: l }).unwrap_err();
        assert!(err.to_string().contains(why), "{err} (wanted {why})");
    };
    let mut bad = World::listing("m", 10_001);
    refused(&mut w, &mut s, &p, bad.clone(), "share_bps");
    bad.share_bps = 0;
    bad.name = String::new();
    refused(&mut w, &mut s, &p, bad.clone(), "name");
    bad.name = "m".into();
    bad.context = 0;
    refused(&mut w, &mut s, &p, bad.clone(), "context");
    bad.context = 1;
    bad.licence = "x".repeat(65);
    refused(&mut w, &mut s, &p, bad, "licence");
    // An id the genesis admitted is not anybody's to publish.
    let mut genesis_model = World::listing("test model", 100);
    genesis_model.id = Hash::of(b"test model");
    refused(&mut w, &mut s, &p, genesis_model, "already registered");

    let before = s.balance(&p.public());
    let treasury_before = s.balance(&treasury.public());
    by(
        &mut w,
        &mut s,
        &p,
        TxBody::Publish {
            model: World::listing("m", 1_000),
        },
    )
    .unwrap();
    let cost = s.params.tx_fee.0 + s.params.publish_fee.0;
    assert_eq!(s.params.publish_fee, DEFAULT_PUBLISH_FEE);
    assert_eq!(s.balance(&p.public()), before - cost);
    assert_eq!(s.balance(&treasury.public()), treasury_before + cost);
    // Registered once: nobody, the publisher included, registers it again
    // (or changes its prices under requests already reserved).
    refused(
        &mut w,
        &mut s,
        &p,
        World::listing("m", 0),
        "already registered",
    );
    let other = w.users[1].clone();
    refused(
        &mut w,
        &mut s,
        &other,
        World::listing("m", 0),
        "already registered",
    );
    // Without the fee, nothing is registered.
    let poor = verinfer_types::testing::key(151);
    by(
        &mut w,
        &mut s,
        &treasury,
        TxBody::Transfer {
            to: poor.public(),
            amount: Amount(TOKEN),
        },
    )
    .unwrap();
    refused(&mut w, &mut s, &poor, World::listing("n", 0), "publish fee");
    // Governance sets the fee within its bounds.
    pass(
        &mut w,
        &mut s,
        Change::Set {
            name: Param::PublishFee,
            value: Amount(TOKEN / 2),
        },
    )
    .unwrap();
    by(
        &mut w,
        &mut s,
        &poor,
        TxBody::Publish {
            model: World::listing("n", 0),
        },
    )
    .unwrap();
    let v0 = w.verifiers[0].clone();
    let too_low = Change::Set {
        name: Param::PublishFee,
        value: Amount(1),
    };
    let err = by(&mut w, &mut s, &v0, TxBody::Propose { change: too_low }).unwrap_err();
    assert!(err.to_string().contains("publish_fee"), "{err}");
}

#[test]
fn governance_delists_a_published_model_for_good() {
    let (mut w, mut s) = setup();
    let p = publisher();
    let listing = World::listing("spam", 5_000);
    let id = listing.id;
    for tx in w.publish(&p, listing.clone()) {
        state::apply(&mut s, &tx, 0).unwrap();
    }
    // Reserved before the delisting: it no longer settles.
    let req = request_for(&w, id, 7, 1);
    let user = w.users[0].clone();
    by(
        &mut w,
        &mut s,
        &user,
        TxBody::Reserve {
            request: req.hash().unwrap(),
            amount: Amount(TOKEN),
            ttl_secs: RESERVE_TTL_SECS,
        },
    )
    .unwrap();
    let receipt = w.receipt(&s, &req, 1);

    pass(&mut w, &mut s, Change::RemoveModel { id }).unwrap();
    assert!(!s.models.contains_key(&id));
    assert_eq!(
        s.delisted[&id].publisher.as_ref().unwrap().account,
        p.public()
    );

    let relayer = w.users[2].clone();
    let err = by(
        &mut w,
        &mut s,
        &relayer,
        TxBody::Settle {
            receipts: vec![receipt],
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("not admitted"), "{err}");
    // The requester gets its reservation back.
    by(
        &mut w,
        &mut s,
        &user,
        TxBody::Release {
            request: req.hash().unwrap(),
        },
    )
    .unwrap();
    // Neither the publisher nor governance brings it back.
    let err = by(&mut w, &mut s, &p, TxBody::Publish { model: listing }).unwrap_err();
    assert!(err.to_string().contains("delisted"), "{err}");
    let v0 = w.verifiers[0].clone();
    let readmit = Change::AdmitModel {
        model: s.delisted[&id].clone(),
    };
    assert!(by(&mut w, &mut s, &v0, TxBody::Propose { change: readmit }).is_err());
    let mut plain = s.delisted[&id].clone();
    plain.publisher = None;
    let err = by(
        &mut w,
        &mut s,
        &v0,
        TxBody::Propose {
            change: Change::AdmitModel { model: plain },
        },
    )
    .unwrap_err();
    assert!(err.to_string().contains("published"), "{err}");
}

#[test]
fn a_receipt_that_leaves_the_publisher_out_or_pays_another_is_refused() {
    let (mut w, mut s) = setup();
    let p = publisher();
    let listing = World::listing("paid", 4_000);
    let id = listing.id;
    for tx in w.publish(&p, listing) {
        state::apply(&mut s, &tx, 0).unwrap();
    }
    let req = request_for(&w, id, 11, 1);
    let user = w.users[0].clone();
    by(
        &mut w,
        &mut s,
        &user,
        TxBody::Reserve {
            request: req.hash().unwrap(),
            amount: Amount(TOKEN),
            ttl_secs: RESERVE_TTL_SECS,
        },
    )
    .unwrap();
    let honest = w.receipt(&s, &req, 1);
    let share = honest.fees.publisher.unwrap();
    let relayer = w.users[2].clone();
    // The publisher's share moved to the node, or paid to another account.
    let mut left_out = honest.clone();
    left_out.fees.publisher = None;
    left_out.fees.node = Amount(left_out.fees.node.0 + share.amount.0);
    let mut redirected = honest.clone();
    redirected.fees.publisher = Some(verinfer_types::records::PublisherFee {
        account: relayer.public(),
        ..share
    });
    for bad in [left_out, redirected] {
        let err = by(
            &mut w,
            &mut s,
            &relayer,
            TxBody::Settle {
                receipts: vec![bad],
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("fees do not match"), "{err}");
    }
    by(
        &mut w,
        &mut s,
        &relayer,
        TxBody::Settle {
            receipts: vec![honest],
        },
    )
    .unwrap();
}

#[test]
fn an_optimistic_answer_pays_its_publisher_only_once_final() {
    let (mut w, mut s) = setup();
    let p = publisher();
    let listing = World::listing("opt", 3_000);
    let id = listing.id;
    for tx in w.publish(&p, listing) {
        state::apply(&mut s, &tx, 0).unwrap();
    }
    let mut req = request_for(&w, id, 9, 1);
    req.policy.verification = VerificationMode::Optimistic { window_secs: 600 };
    req.sign(&w.users[0]).unwrap();
    let before = s.balance(&p.public());
    let fees = settle(&mut w, &mut s, &req, 0).unwrap();
    assert_eq!(s.balance(&p.public()), before, "paid inside the window");
    let relayer = w.users[2].clone();
    let tx = w.tx(
        &relayer,
        TxBody::Finalize {
            request: req.hash().unwrap(),
        },
    );
    let later = s.time_ms + 600_000;
    state::apply(&mut s, &tx, later).unwrap();
    s.check_invariants().unwrap();
    assert_eq!(
        s.balance(&p.public()),
        before + fees.publisher.unwrap().amount.0
    );
}

#[test]
fn parameters_written_before_the_publish_fee_keep_their_bytes() {
    // The default is left out of the encoding, so a genesis written before
    // the parameter existed decodes to the same bytes (and the same hash).
    let w = World::new();
    let g = w.genesis();
    let bytes = g.to_canonical().unwrap();
    assert!(!String::from_utf8_lossy(&bytes).contains("publish_fee"));
    assert_eq!(Genesis::from_canonical(&bytes).unwrap(), g);
    // A changed fee is written, and read back.
    let mut g2 = g.clone();
    g2.params.publish_fee = Amount(TOKEN);
    let bytes = g2.to_canonical().unwrap();
    assert!(String::from_utf8_lossy(&bytes).contains("publish_fee"));
    assert_eq!(Genesis::from_canonical(&bytes).unwrap(), g2);
    // Every governed number is read and written through its row.
    for b in &BOUNDS {
        let mut p = Params::default();
        assert!(p.field(b.param).set(b.min));
        assert_eq!((b.field)(&mut p).get(), b.min);
        assert_eq!(b.param.bound().param, b.param);
    }
}

#[derive(Debug, Clone)]
enum Op {
    /// (publisher, model, share in bps)
    Publish(usize, usize, u32),
    /// (model, verifiers, optimistic)
    Settle(usize, usize, bool),
    /// Pay out the optimistic answers whose window passed.
    Finalize,
    /// Governance delists the model.
    Delist(usize),
    /// Let time pass, in seconds.
    Wait(u64),
}

const MODELS: usize = 3;

fn ops() -> impl Strategy<Value = Vec<Op>> {
    let op = prop_oneof![
        3 => (0usize..3, 0..MODELS, prop_oneof![Just(0u32), 0u32..=10_000, Just(10_000)])
            .prop_map(|(p, m, b)| Op::Publish(p, m, b)),
        6 => (0..MODELS + 1, 0usize..4, prop::bool::weighted(0.3))
            .prop_map(|(m, k, o)| Op::Settle(m, k, o)),
        1 => Just(Op::Finalize),
        1 => (0..MODELS).prop_map(Op::Delist),
        1 => prop_oneof![Just(1u64), Just(700)].prop_map(Op::Wait),
    ];
    proptest::collection::vec(op, 1..40)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random publishing, settling (verified and optimistic), payouts and
    /// delistings across several models: the supply is conserved after
    /// every step, and each publisher's balance grows by exactly the
    /// publisher shares of the fees paid out (less what it paid to publish).
    #[test]
    fn publishers_are_paid_their_share_and_the_supply_is_conserved(ops in ops()) {
        let (mut w, mut s) = setup();
        let genesis_model = w.model.clone();
        let publishers: Vec<SecretKey> =
            (0..3).map(|i| verinfer_types::testing::key(160 + i)).collect();
        let treasury = w.treasury.clone();
        for p in &publishers {
            by(&mut w, &mut s, &treasury, TxBody::Transfer { to: p.public(), amount: Amount(1_000 * TOKEN) }).unwrap();
        }
        let start: BTreeMap<PublicKey, u128> =
            publishers.iter().map(|p| (p.public(), s.balance(&p.public()))).collect();
        // What each publisher is owed so far and what it spent publishing.
        let mut owed: BTreeMap<PublicKey, u128> = BTreeMap::new();
        let mut spent: BTreeMap<PublicKey, u128> = BTreeMap::new();
        let mut pending: Vec<(Hash, Option<verinfer_types::records::PublisherFee>)> = Vec::new();
        let id = |m: usize| Hash::of(format!("model-{m}").as_bytes());
        let mut seed = 1000u64;
        for op in ops {
            match op {
                Op::Publish(p, m, bps) => {
                    let mut l = World::listing(&format!("model-{m}"), bps);
                    l.price_in_per_1k = Amount((m as u128 + 1) * 3 * TOKEN / 7);
                    let cost = s.params.tx_fee.0 + s.params.publish_fee.0;
                    let key = publishers[p].clone();
                    if by(&mut w, &mut s, &key, TxBody::Publish { model: l }).is_ok() {
                        *spent.entry(key.public()).or_default() += cost;
                    }
                }
                Op::Settle(m, k, optimistic) => {
                    let model = if m == MODELS { genesis_model.id } else { id(m) };
                    let Some(entry) = s.models.get(&model).cloned() else { continue };
                    w.model = entry;
                    seed += 1;
                    let mut req = request_for(&w, model, seed, k.max(1) as u32);
                    if optimistic {
                        req.policy.verification = VerificationMode::Optimistic { window_secs: 600 };
                        req.sign(&w.users[0]).unwrap();
                    }
                    let k = if optimistic { 0 } else { k.max(1) };
                    let fees = settle(&mut w, &mut s, &req, k).unwrap();
                    prop_assert_eq!(
                        fees.publisher.map(|p| p.account),
                        w.model.publisher.as_ref().map(|p| p.account)
                    );
                    if optimistic {
                        pending.push((req.hash().unwrap(), fees.publisher));
                    } else if let Some(p) = fees.publisher {
                        *owed.entry(p.account).or_default() += p.amount.0;
                    }
                }
                Op::Finalize => {
                    let now = s.time_ms;
                    let relayer = w.users[2].clone();
                    for (request, publisher) in std::mem::take(&mut pending) {
                        if by(&mut w, &mut s, &relayer, TxBody::Finalize { request }).is_ok() {
                            if let Some(p) = publisher {
                                *owed.entry(p.account).or_default() += p.amount.0;
                            }
                        } else {
                            prop_assert!(s.provisional[&request].until_ms > now);
                            pending.push((request, publisher));
                        }
                    }
                }
                Op::Delist(m) => {
                    let listed = s.models.contains_key(&id(m));
                    prop_assert_eq!(pass(&mut w, &mut s, Change::RemoveModel { id: id(m) }).is_ok(), listed);
                    if listed {
                        prop_assert!(s.delisted.contains_key(&id(m)));
                    }
                }
                Op::Wait(secs) => {
                    // Time passes by a heartbeat.
                    let node = w.nodes[0].clone();
                    let tx = w.tx(&node, TxBody::Heartbeat);
                    let later = s.time_ms + secs * 1000;
                    state::apply(&mut s, &tx, later).unwrap();
                }
            }
            if let Err(e) = s.check_invariants() {
                return Err(TestCaseError::fail(e));
            }
            for p in &publishers {
                let k = p.public();
                let expect = start[&k] + owed.get(&k).copied().unwrap_or(0)
                    - spent.get(&k).copied().unwrap_or(0);
                prop_assert_eq!(s.balance(&k), expect);
            }
        }
    }
}

#[test]
fn inference_nodes_declare_the_registered_models_they_serve() {
    let (mut w, mut s) = setup();
    let p = publisher();
    let listing = World::listing("served", 1_000);
    let id = listing.id;
    for tx in w.publish(&p, listing) {
        state::apply(&mut s, &tx, 0).unwrap();
    }
    let genesis_model = Hash::of(b"test model");
    let node = w.nodes[0].clone();
    let mut both = vec![id, genesis_model];
    both.sort();
    let refused = |w: &mut World, s: &mut State, key: &SecretKey, models: Vec<Hash>, why: &str| {
        let err = by(w, s, key, TxBody::Serve { models }).unwrap_err();
        assert!(err.to_string().contains(why), "{err} (wanted {why})");
    };
    refused(
        &mut w,
        &mut s,
        &node,
        vec![Hash::of(b"nothing")],
        "not admitted",
    );
    refused(
        &mut w,
        &mut s,
        &node,
        vec![both[1], both[0]],
        "strictly increasing",
    );
    refused(&mut w, &mut s, &node, vec![id, id], "strictly increasing");
    let verifier = w.verifiers[0].clone();
    refused(&mut w, &mut s, &verifier, vec![id], "inference node");
    let user = w.users[0].clone();
    refused(&mut w, &mut s, &user, vec![id], "inference node");

    by(
        &mut w,
        &mut s,
        &node,
        TxBody::Serve {
            models: both.clone(),
        },
    )
    .unwrap();
    assert_eq!(
        s.nodes[&node.public()]
            .models
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        both
    );
    // A delisted model leaves every declaration.
    pass(&mut w, &mut s, Change::RemoveModel { id }).unwrap();
    assert_eq!(
        s.nodes[&node.public()]
            .models
            .iter()
            .copied()
            .collect::<Vec<_>>(),
        vec![genesis_model]
    );
}
